//! Bringing up the application processors (docs/smp.md).
//!
//! The boot CPU starts each CPU the MADT lists, one at a time, as Intel's MP
//! protocol has it: INIT, then STARTUP (twice if the first is not taken) with the
//! page of the real-mode trampoline (`ap_trampoline.s`). The trampoline takes the CPU
//! to long mode on small page tables of its own and into [`ap_entry`], which gives the
//! CPU its own GDT, TSS, IST stacks, per-CPU data, SYSCALL entry, control registers
//! and local APIC, switches it to the hypervisor's page tables and reports it online.
//!
//! A started CPU waits until the boot CPU has built the boot-time domains
//! ([`release_aps`]), then schedules guests like the boot CPU (`domains::run_first`).
//! CPUs signal each other with two IPIs: event check (work for the CPU) and stop.

use super::layout::DIRECTMAP_BASE;
use super::percpu::MAX_CPUS;
use super::{apic, cpu, gdt, guest, idt, paging, percpu};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Where the trampoline runs: page 8 (STARTUP vector 0x08), in the first MiB, which
/// the frame allocator never hands out.
const AP_TRAMP: u64 = 0x8000;
/// The STARTUP IPI's vector: the trampoline's page.
const AP_TRAMP_PAGE: u8 = 0x08;
const _: () = assert!(AP_TRAMP == (AP_TRAMP_PAGE as u64) << 12);
/// The trampoline's L4, L3 and L2 (three pages after it).
const TRAMP_TABLES: u64 = AP_TRAMP + 0x1000;

core::arch::global_asm!(
    include_str!("ap_trampoline.s"),
    ap_tramp = const AP_TRAMP,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_tramp_start: u8;
    static ap_tramp_data: u8;
    static ap_tramp_end: u8;
}

/// The data block at the trampoline's end (`ap_tramp_data`).
#[derive(Clone, Copy)]
#[repr(C)]
struct TrampolineData {
    cr3: u64,
    efer: u64,
    stack: u64,
    cpu: u64,
    entry: u64,
}

/// CPUs that finished [`ap_entry`].
static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// How many CPUs are online (the boot CPU included).
static ONLINE_COUNT: AtomicUsize = AtomicUsize::new(1);
/// The boot CPU's CR0 and CR4, which every other CPU copies.
static BSP_CR0: AtomicU64 = AtomicU64::new(0);
static BSP_CR4: AtomicU64 = AtomicU64::new(0);

/// Each CPU's APIC id, by index.
static APIC_IDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];
/// Each started CPU's ACPI processor id (`u32::MAX`: unknown).
static ACPI_UIDS: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(u32::MAX) }; MAX_CPUS];

/// Records the ACPI processor id of each started CPU, from the MADT's pairs of APIC
/// id and processor id.
pub fn note_processor_uids(apic_ids: &[u32], uids: &[u32]) {
    for (apic, uid) in APIC_IDS.iter().zip(&ACPI_UIDS) {
        let id = apic.load(Ordering::Relaxed);
        if let Some(i) = apic_ids.iter().position(|&a| a == id) {
            uid.store(uids.get(i).copied().unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }
}

/// CPU `cpu`'s APIC id, with its ACPI processor id in the high half; all ones for
/// what is not known (Xen's `BAD_APICID` and `INVALID_ACPIID`).
pub fn physid(cpu: usize) -> u64 {
    let online = cpu < online();
    let get = |t: &[AtomicU32; MAX_CPUS]| {
        t.get(cpu)
            .filter(|_| online)
            .map_or(u32::MAX, |a| a.load(Ordering::Relaxed))
    };
    u64::from(get(&APIC_IDS)) | (u64::from(get(&ACPI_UIDS)) << 32)
}
/// The boot CPU has built the boot-time domains: started CPUs may schedule.
static GO: AtomicBool = AtomicBool::new(false);
/// CPUs parked by the stop IPI.
static STOPPED: AtomicUsize = AtomicUsize::new(0);

/// How many CPUs are online.
pub fn online() -> usize {
    ONLINE_COUNT.load(Ordering::Acquire)
}

const EFER: u32 = 0xC000_0080;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;
const CR0_TS: u64 = 1 << 3;

/// Starts every CPU in `apic_ids` but this one, up to [`MAX_CPUS`] in all; returns
/// how many CPUs are online afterwards. A CPU that does not answer within a second
/// stops the bring-up there (it might still start later on the trampoline that is
/// left for it), with a warning.
pub fn start_aps(apic_ids: &[u32]) -> usize {
    let me = apic::id();
    APIC_IDS[0].store(me, Ordering::Relaxed);
    let others: heapless::Vec<u32, MAX_CPUS> = apic_ids
        .iter()
        .copied()
        .filter(|&id| id != me)
        .take(MAX_CPUS - 1)
        .collect();
    if apic_ids.len() > MAX_CPUS {
        log::warn!(
            "smp: {} CPUs listed; only {MAX_CPUS} are started",
            apic_ids.len()
        );
    }
    if others.is_empty() {
        return online();
    }
    if paging::build_trampoline_tables(TRAMP_TABLES).is_none() {
        log::warn!("smp: cannot build the trampoline's page tables; one CPU only");
        return online();
    }
    copy_trampoline();
    let c = cpu::control_regs();
    BSP_CR0.store(c.cr0 & !CR0_TS, Ordering::Relaxed);
    BSP_CR4.store(c.cr4, Ordering::Relaxed);
    let efer = cpu::rdmsr(EFER) & (EFER_SCE | EFER_LME | EFER_NXE);
    let mut all = true;
    for (n, &id) in others.iter().enumerate() {
        let index = n + 1;
        write_data(TrampolineData {
            cr3: TRAMP_TABLES,
            efer,
            // Below the frame `domains::run_first` builds at the top.
            stack: super::entry_stack_top(index) - 1024,
            cpu: index as u64,
            entry: ap_entry as *const () as u64,
        });
        APIC_IDS[index].store(id, Ordering::Relaxed);
        if !start_one(index, id) {
            log::warn!("smp: CPU {index} (APIC id {id}) did not start; stopping the bring-up");
            all = false;
            break;
        }
    }
    if all {
        // Nothing will run the trampoline again: wipe it and its tables (which hold
        // the hypervisor's L4 entries) from the first MiB, which dom0 may read.
        // SAFETY: the four pages at AP_TRAMP belong to the bring-up alone, and every
        // CPU that used them has left them (it is online, on the hypervisor's tables).
        unsafe { core::ptr::write_bytes((DIRECTMAP_BASE + AP_TRAMP) as *mut u8, 0, 4 * 4096) };
    }
    online()
}

/// INIT, STARTUP, and a second STARTUP if the first was not taken, with the MP
/// specification's waits; then waits up to a second for the CPU to come online.
fn start_one(index: usize, apic_id: u32) -> bool {
    let page = AP_TRAMP_PAGE;
    if !apic::send_init(apic_id) {
        return false;
    }
    spin_ns(10_000_000);
    for _ in 0..2 {
        if !apic::send_startup(apic_id, page) {
            return false;
        }
        spin_ns(200_000);
        if is_online(index) {
            return true;
        }
    }
    let deadline = crate::time::now_ns() + 1_000_000_000;
    while crate::time::now_ns() < deadline {
        if is_online(index) {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

fn is_online(index: usize) -> bool {
    ONLINE.get(index).is_some_and(|o| o.load(Ordering::Acquire))
}

fn spin_ns(ns: u64) {
    let end = crate::time::now_ns() + ns;
    while crate::time::now_ns() < end {
        core::hint::spin_loop();
    }
}

/// Copies the trampoline's code and data to [`AP_TRAMP`].
fn copy_trampoline() {
    // SAFETY: only the symbols' addresses are taken; the bytes between them are the
    // trampoline (read-only data in the image).
    let (start, end) = unsafe {
        (
            &ap_tramp_start as *const u8,
            &ap_tramp_end as *const u8 as usize,
        )
    };
    let len = end - start as usize;
    assert!(len <= 0x1000, "smp: trampoline of {len} bytes");
    // SAFETY: the source is `len` bytes of the image; the destination is the page at
    // AP_TRAMP in the direct map, in the first MiB that nothing else uses while the
    // CPUs start (the allocator never hands it out, and no domain exists yet).
    unsafe {
        core::ptr::copy_nonoverlapping(start, (DIRECTMAP_BASE + AP_TRAMP) as *mut u8, len);
    }
}

/// Writes the data block of the copied trampoline.
fn write_data(d: TrampolineData) {
    // SAFETY: only the symbols' addresses are taken.
    let offset =
        unsafe { &ap_tramp_data as *const u8 as u64 - &ap_tramp_start as *const u8 as u64 };
    let at = (DIRECTMAP_BASE + AP_TRAMP + offset) as *mut TrampolineData;
    // SAFETY: the data block lies in the trampoline page copied by `copy_trampoline`
    // (8-byte aligned, `TrampolineData`'s layout); no CPU reads it until the STARTUP
    // IPI that follows.
    unsafe { core::ptr::write_volatile(at, d) };
}

/// Where a started CPU enters Rust: on its entry stack, interrupts off, on the
/// trampoline's page tables and GDT.
extern "C" fn ap_entry(index: u64) -> ! {
    let index = usize::try_from(index).unwrap_or(usize::MAX);
    let stack = super::entry_stack_top(index);
    gdt::init(index, stack);
    // SAFETY: the hypervisor's L4 maps the image, this stack and the direct map at
    // the same addresses as the trampoline's tables, which nothing needs from now on.
    unsafe {
        x86_64::registers::control::Cr3::write(
            x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(
                paging::root(),
            )),
            x86_64::registers::control::Cr3Flags::empty(),
        )
    };
    idt::load();
    percpu::init(index, stack);
    // SAFETY: the boot CPU's CR0 and CR4 (PE, PG, WP, caches on, PAE, SSE and XSAVE
    // enabled, machine checks) suit this CPU too: `start_aps` runs on identical CPUs
    // as QEMU and the MADT present them; TS is cleared.
    unsafe {
        core::arch::asm!("mov cr4, {}", in(reg) BSP_CR4.load(Ordering::Relaxed), options(nostack, preserves_flags));
        core::arch::asm!("mov cr0, {}", in(reg) BSP_CR0.load(Ordering::Relaxed), options(nostack, preserves_flags));
    }
    guest::init_syscall();
    cpu::enable_xsave();
    cpu::enable_cpuid_faulting();
    apic::init_ap();
    log::info!("smp: CPU {index} (APIC id {}) online", apic::id());
    if let Some(flag) = ONLINE.get(index) {
        ONLINE_COUNT.fetch_add(1, Ordering::AcqRel);
        flag.store(true, Ordering::Release);
    }
    while !GO.load(Ordering::Acquire) {
        // The event-check IPI of `release_aps` ends the hlt (its handler only EOIs).
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    crate::domains::run_first()
}

/// Lets the started CPUs schedule guests.
pub fn release_aps() {
    GO.store(true, Ordering::Release);
    for cpu in 1..online() {
        kick(cpu);
    }
}

/// The most an idle CPU polls for a wake-up before it halts (`idle_poll=`).
static IDLE_POLL_MAX_NS: AtomicU64 = AtomicU64::new(xlhv_core::sched::haltpoll::DEFAULT_MAX_NS);
/// Each CPU's polling window (`xlhv_core::sched::haltpoll`).
static POLL_WINDOW_NS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Sets the most an idle CPU polls (`idle_poll=`, 0 = never).
pub fn set_idle_poll(max_ns: u64) {
    IDLE_POLL_MAX_NS.store(max_ns, Ordering::Relaxed);
}

/// Waits, interrupts off before and after, until this idle CPU has something to
/// look at: a wake-up (`preempt`) or an interrupt. It polls first, for a window that
/// adapts to how soon its wake-ups come (`xlhv_core::sched::haltpoll`, KVM's halt
/// polling): a wake-up caught then needs no IPI (`domains::resched` sees `polling`)
/// and no halt, whose wake-up under TCG is a trip through QEMU's thread wake-up.
/// Then it halts.
pub fn idle_wait() {
    let p = percpu::this();
    let irqs = p.interrupts.load(Ordering::Relaxed);
    let woke = || p.preempt.load(Ordering::SeqCst) || p.interrupts.load(Ordering::Relaxed) != irqs;
    let window = percpu::mine(&POLL_WINDOW_NS);
    let mut poll =
        xlhv_core::sched::haltpoll::HaltPoll::with_window(window.load(Ordering::Relaxed));
    let start = crate::time::now_ns();
    let mut caught = false;
    if poll.window_ns() != 0 {
        p.polling.store(true, Ordering::SeqCst);
        x86_64::instructions::interrupts::enable();
        let until = start.saturating_add(poll.window_ns());
        while !woke() && crate::time::now_ns() < until {
            core::hint::spin_loop();
        }
        x86_64::instructions::interrupts::disable();
        // A waker that saw `polling` set sent no IPI: look once more after clearing it.
        p.polling.store(false, Ordering::SeqCst);
        caught = woke();
    }
    if !caught {
        x86_64::instructions::interrupts::enable_and_hlt();
        x86_64::instructions::interrupts::disable();
    }
    let waited = crate::time::now_ns().saturating_sub(start);
    poll.update(IDLE_POLL_MAX_NS.load(Ordering::Relaxed), waited, caught);
    window.store(poll.window_ns(), Ordering::Relaxed);
}

/// Sends CPU `cpu` the event-check IPI: it looks for work at its next chance (a
/// running guest is interrupted into the hypervisor; an idle CPU wakes).
pub fn kick(cpu: usize) {
    send(cpu, idt::EVENT_CHECK_VECTOR);
}

/// Sends CPU `cpu` an IPI on `vector`.
pub fn send(cpu: usize, vector: u8) {
    if let Some(id) = APIC_IDS.get(cpu).map(|a| a.load(Ordering::Relaxed)) {
        if id != u32::MAX {
            apic::send_fixed(id, vector);
        }
    }
}

/// Parks every other CPU for good (the machine is stopping), waiting up to 100 ms
/// for them to stop. A CPU that spins on a lock this one holds parks only when it
/// gets the lock, which it will not: the machine stops first.
pub fn stop_others() {
    let me = percpu::index();
    let n = online();
    for cpu in (0..n).filter(|&c| c != me) {
        if let Some(id) = APIC_IDS.get(cpu).map(|a| a.load(Ordering::Relaxed)) {
            apic::send_fixed(id, idt::STOP_VECTOR);
        }
    }
    let deadline = crate::time::now_ns() + 100_000_000;
    while STOPPED.load(Ordering::Acquire) + 1 < n && crate::time::now_ns() < deadline {
        core::hint::spin_loop();
    }
}

/// The stop IPI's handler: this CPU parks with interrupts off.
pub fn stopped() -> ! {
    apic::eoi();
    // On the hypervisor's own tables, so that no TLB shoot-down of the teardown that
    // follows waits for this CPU (`tlb`), which will not answer.
    super::guest::enter_idle_tables();
    STOPPED.fetch_add(1, Ordering::AcqRel);
    loop {
        // SAFETY: with interrupts off, `hlt` only ends on an NMI, SMI or INIT; the
        // loop halts again.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
