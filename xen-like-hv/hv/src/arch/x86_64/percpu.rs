//! Per-CPU data, reached through GS while the hypervisor runs (see entry.s for the
//! SWAPGS discipline).

use super::cpu;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

const IA32_GS_BASE: u32 = 0xC000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// CPUs the hypervisor can bring up (the boot CPU and up to 7 more, as the ACPI MADT
/// lists them); any beyond are reported and left in their wait-for-SIPI state.
pub const MAX_CPUS: usize = 8;

/// The part of a CPU's data that entry.s reads. Field offsets are fixed: entry.s uses
/// them (`PERCPU_STACK_TOP`, `PERCPU_SCRATCH`, `PERCPU_FLOOR_OK`).
#[derive(Debug)]
#[repr(C)]
pub struct PerCpu {
    /// Points at itself.
    pub self_ptr: AtomicU64,
    /// Top of this CPU's hypervisor stack: where SYSCALL entries build their frame
    /// (also the TSS's RSP0).
    pub stack_top: AtomicU64,
    /// The guest's RSP during a SYSCALL entry.
    pub scratch: AtomicU64,
    /// Index of this CPU (0 = boot CPU).
    pub index: AtomicU64,
    /// Non-zero while the vCPU this CPU runs is in guest kernel mode: the floor call
    /// (entry.s) may return at once.
    pub floor_ok: AtomicU64,
    /// The vCPU this CPU runs as the run queue last said (`slot << 16 | vcpu`, or
    /// `u32::MAX`), read on every entry without the queue's lock (`domains`).
    pub current: AtomicU32,
    /// A wake-up asked this CPU to reschedule at its next exit to a guest.
    pub preempt: AtomicBool,
    /// The hardware state loaded for the vCPU this CPU runs (`guest::sync`).
    pub loaded: Loaded,
    /// The CPU idles polling `preempt` (`smp::idle_wait`): a wake-up need not
    /// send it an IPI.
    pub polling: AtomicBool,
    /// Interrupts this CPU took in hypervisor context (`trap::hv_trap`).
    pub interrupts: AtomicU64,
}

/// What `guest::sync` and `cpu::set_cr0_ts` last put in this CPU's registers, so
/// that they write only what changed (CR, MSR and debug-register writes are slow,
/// under TCG especially). Read on every exit to a guest, hence here, one GS load
/// away, rather than in arrays indexed by CPU.
#[derive(Debug)]
pub struct Loaded {
    /// CR3.
    pub cr3: AtomicU64,
    /// FS base.
    pub fs: AtomicU64,
    /// The guest's GS base (MSR_KERNEL_GS_BASE while the hypervisor runs).
    pub gs: AtomicU64,
    /// The CR4 bits that follow the vCPU's virtual CR4.
    pub cr4: AtomicU64,
    /// TSC_AUX.
    pub tsc_aux: AtomicU64,
    /// Whether `fs`/`gs` are what the CPU holds (false from every guest entry until
    /// read back).
    pub bases_fresh: AtomicBool,
    /// CR0.TS.
    pub cr0_ts: AtomicBool,
    /// DR0-DR3.
    pub dr_addr: [AtomicU64; 4],
    /// DR7.
    pub dr7: AtomicU64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, stack_top) == 8);
const _: () = assert!(core::mem::offset_of!(PerCpu, scratch) == 16);
const _: () = assert!(core::mem::offset_of!(PerCpu, floor_ok) == 32);

static CPUS: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        self_ptr: AtomicU64::new(0),
        stack_top: AtomicU64::new(0),
        scratch: AtomicU64::new(0),
        index: AtomicU64::new(0),
        floor_ok: AtomicU64::new(0),
        current: AtomicU32::new(u32::MAX),
        preempt: AtomicBool::new(false),
        loaded: Loaded {
            cr3: AtomicU64::new(0),
            fs: AtomicU64::new(0),
            gs: AtomicU64::new(0),
            cr4: AtomicU64::new(0),
            tsc_aux: AtomicU64::new(0),
            bases_fresh: AtomicBool::new(true),
            cr0_ts: AtomicBool::new(false),
            dr_addr: [const { AtomicU64::new(0) }; 4],
            dr7: AtomicU64::new(xlhv_core::debugreg::DR7_DEFAULT),
        },
        polling: AtomicBool::new(false),
        interrupts: AtomicU64::new(0),
    }
}; MAX_CPUS];

const _: () = assert!(core::mem::offset_of!(PerCpu, index) == 24);

/// This CPU's data (through GS.base, which `init` pointed at it): one load.
#[inline(always)]
pub fn this() -> &'static PerCpu {
    let ptr: u64;
    // SAFETY: while the hypervisor runs, GS.base is this CPU's `PerCpu` (set by `init`
    // before anything calls this; entry.s swaps it in on every entry from ring 3), and
    // its first field holds its own address.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) ptr, options(nostack, readonly, preserves_flags));
        &*(ptr as *const PerCpu)
    }
}

/// Index of the CPU this runs on (0 = the boot CPU): one load through GS.
#[inline(always)]
pub fn index() -> usize {
    let i: u64;
    // SAFETY: as in `this`: GS.base is this CPU's `PerCpu`, whose `index` field is at
    // offset 24 (asserted above).
    unsafe {
        core::arch::asm!("mov {}, gs:[24]", out(reg) i, options(nostack, readonly, preserves_flags));
    }
    usize::try_from(i).unwrap_or(usize::MAX)
}

/// CPU `cpu`'s data.
pub fn of(cpu: usize) -> Option<&'static PerCpu> {
    CPUS.get(cpu)
}

/// This CPU's element of a per-CPU array.
#[inline(always)]
pub fn mine<T>(all: &'static [T; MAX_CPUS]) -> &'static T {
    match all.get(index()) {
        Some(t) => t,
        None => panic!("percpu: CPU index beyond {MAX_CPUS}"),
    }
}

/// Records whether the vCPU about to run on this CPU is in guest kernel mode (for
/// the floor call's fast path in entry.s).
pub fn set_floor_ok(kernel_mode: bool) {
    this()
        .floor_ok
        .store(u64::from(kernel_mode), Ordering::Relaxed);
}

/// Sets up CPU `cpu`'s data, on that CPU: GS.base points at it while in the
/// hypervisor, and entries from guests build their frames at `stack_top`.
pub fn init(cpu: usize, stack_top: u64) {
    let Some(me) = CPUS.get(cpu) else {
        panic!("percpu: CPU index {cpu} beyond {MAX_CPUS}");
    };
    let ptr = me as *const PerCpu as u64;
    me.self_ptr.store(ptr, Ordering::Relaxed);
    me.stack_top.store(stack_top, Ordering::Relaxed);
    me.index.store(cpu as u64, Ordering::Relaxed);
    // SAFETY: GS.base is not used by anything else in the hypervisor; the guest's GS
    // base starts at 0 (MSR_KERNEL_GS_BASE) until a guest sets it.
    unsafe {
        cpu::wrmsr(IA32_GS_BASE, ptr);
        cpu::wrmsr(IA32_KERNEL_GS_BASE, 0);
    }
}
