//! Running PV guests: SYSCALL setup, the checked guest-memory copy, the hardware state
//! a vCPU carries (page tables, FS/GS bases, CR0.TS, debug registers), and the
//! `Platform` that the portable handlers in `xlhv-core` run against.

use super::cpu;
use super::layout::DIRECTMAP_BASE;
use super::percpu::{self, MAX_CPUS};
use super::trap::TrapFrame;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hypercall_abi::types::DomId;
use hypercall_abi::xen::FLAT_RING3_CS32;
use hypercall_abi::xen::shared_info::VcpuInfo;
use xlhv_core::mm::Mfn;
use xlhv_core::platform::{GuestFault, Platform};
use xlhv_core::vcpu::Vcpu;

const IA32_EFER: u32 = 0xC000_0080;
const IA32_STAR: u32 = 0xC000_0081;
const IA32_LSTAR: u32 = 0xC000_0082;
const IA32_CSTAR: u32 = 0xC000_0083;
const IA32_FMASK: u32 = 0xC000_0084;
const IA32_FS_BASE: u32 = 0xC000_0100;
const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;
const IA32_TSC_AUX: u32 = 0xC000_0103;
const EFER_SCE: u64 = 1 << 0;
/// RFLAGS cleared on SYSCALL: IF (nothing interrupts the entry before the stack switch),
/// TF, DF, AC, NT.
const FMASK: u64 = (1 << 9) | (1 << 8) | (1 << 10) | (1 << 18) | (1 << 14);

unsafe extern "C" {
    fn syscall_entry();
    fn copy_guest(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static copy_guest_insn: u8;
    static copy_guest_fixup: u8;
    static exit_iretq: u8;
}

/// Enables SYSCALL: 64-bit entry at `syscall_entry` on the hypervisor's code segment;
/// SYSRET's base is Xen's FLAT_RING3_CS32 so that 64-bit SYSRET lands on 0xE033/0xE02B.
pub fn init_syscall() {
    let star = (u64::from(FLAT_RING3_CS32) << 48) | (u64::from(super::gdt::HV_CS) << 32);
    // SAFETY: STAR/LSTAR/CSTAR/FMASK only take effect on SYSCALL from ring 3, and
    // `syscall_entry` is written for exactly that entry (entry.s).
    unsafe {
        cpu::wrmsr(IA32_STAR, star);
        cpu::wrmsr(IA32_LSTAR, syscall_entry as *const () as u64);
        // 32-bit SYSCALL (compat user mode) takes the same path; the handler sees it as
        // a user-mode SYSCALL.
        cpu::wrmsr(IA32_CSTAR, syscall_entry as *const () as u64);
        cpu::wrmsr(IA32_FMASK, FMASK);
        cpu::wrmsr(IA32_EFER, cpu::rdmsr(IA32_EFER) | EFER_SCE);
    }
}

/// If a hypervisor-context page fault hit the guest-copy instruction, redirects it to
/// the fixup and returns true.
pub fn fixup_copy_fault(frame: &mut TrapFrame) -> bool {
    // SAFETY: only the symbols' addresses are taken.
    let (insn, fixup) = unsafe {
        (
            &copy_guest_insn as *const u8 as u64,
            &copy_guest_fixup as *const u8 as u64,
        )
    };
    if frame.rip == insn {
        frame.rip = fixup;
        return true;
    }
    false
}

/// True if a hypervisor-context fault happened on the IRETQ that returns to a guest
/// (the guest's frame was unusable).
pub fn is_exit_fault(frame: &TrapFrame) -> bool {
    // SAFETY: only the symbol's address is taken.
    frame.rip == unsafe { &exit_iretq as *const u8 as u64 }
}

/// The hardware state loaded for the vCPU now running on this CPU
/// ([`percpu::Loaded`]).
#[inline(always)]
fn loaded() -> &'static percpu::Loaded {
    &percpu::this().loaded
}

/// Real CR4 bits that are on exactly while a vCPU that set them in its virtual CR4
/// runs (Xen's `pv_make_cr4`): FSGSBASE (the guest's `rd/wr{fs,gs}base`) and TSD (its
/// `rdtsc` faults outside its kernel, which the hypervisor then emulates). The virtual
/// CR4 only takes a bit the CPU has (`emulate::fixup_guest_cr4`).
const CR4_PER_VCPU: u64 = xlhv_core::emulate::cr4::FSGSBASE | xlhv_core::emulate::cr4::TSD;

/// Whether `loaded().fs`/`loaded().gs` are what the CPU holds: false from every entry
/// from a guest (which may have changed them) until they are read back.
#[inline(always)]
fn bases_fresh() -> &'static AtomicBool {
    &loaded().bases_fresh
}

/// Called on every entry from a guest: its FS and GS bases may differ from what the
/// hypervisor last loaded or read (see [`read_back_bases`]). A store, no MSR access.
pub fn guest_ran() {
    bases_fresh().store(false, Ordering::Relaxed);
}

/// Reads back the FS base and the active GS base of the vCPU that was running when
/// the hypervisor was entered (Xen's `save_segments` / `read_fs_base`), once per
/// entry and only when needed. The guest changes them behind the hypervisor's back:
/// every load of `%fs` or `%gs` (a null selector clears the base on most CPUs, a
/// GDT/LDT selector sets it from the descriptor), and `wr{fs,gs}base` with
/// CR4.FSGSBASE. None of these traps, so after a guest ran, the vCPU's copies and
/// `loaded()` may be stale; they stay stale *together* (`sync` compares one with the
/// other and writes nothing, leaving the CPU's live values), until something needs
/// them: `set_segment_base` (of the value it "already has": Linux loads a null `%gs`
/// and then sets `SEGBASE_GS_KERNEL` to the base it had before), the emulated
/// `rdmsr`/`wrmsr` of the bases, a mode switch, a context switch. Each calls this
/// first (`Platform::live_bases`, [`crate::domains`]'s `save`). While the hypervisor
/// runs, the guest's GS base is in MSR_KERNEL_GS_BASE (entry.s's SWAPGS).
pub fn read_back_bases(vcpu: &mut Vcpu) {
    if bases_fresh().swap(true, Ordering::Relaxed) {
        return;
    }
    let fs = cpu::rdmsr(IA32_FS_BASE);
    let gs = cpu::rdmsr(IA32_KERNEL_GS_BASE);
    loaded().fs.store(fs, Ordering::Relaxed);
    loaded().gs.store(gs, Ordering::Relaxed);
    // The CPU checks WRFSBASE/WRGSBASE values for canonical form (an emulator may
    // not); keep only canonical ones, so that loading them back can never fault.
    let sane = |v: u64| {
        if xlhv_core::regs::is_canonical(v) {
            v
        } else {
            0
        }
    };
    vcpu.set_live_bases(sane(fs), sane(gs));
}

/// Makes `loaded()`'s FS and GS bases the CPU's again without changing any vCPU (before
/// loading another vCPU when the one that ran was not saved: it crashed).
pub fn refresh_loaded_bases() {
    if bases_fresh().swap(true, Ordering::Relaxed) {
        return;
    }
    loaded()
        .fs
        .store(cpu::rdmsr(IA32_FS_BASE), Ordering::Relaxed);
    loaded()
        .gs
        .store(cpu::rdmsr(IA32_KERNEL_GS_BASE), Ordering::Relaxed);
}

/// After loading a vCPU's %fs/%gs selectors (which set the bases from their
/// descriptors): makes the next `sync` write both bases whatever `loaded()` held.
pub fn forget_loaded_bases() {
    bases_fresh().store(true, Ordering::Relaxed);
    // Non-canonical: never a base a vCPU has.
    loaded().fs.store(u64::MAX, Ordering::Relaxed);
    loaded().gs.store(u64::MAX, Ordering::Relaxed);
}

/// Writes `value` with `write` unless `slot` says the hardware already has it. The
/// slots are this CPU's alone, so a plain load and store do (an atomic swap, a locked
/// `xchg`, costs far more on every exit, under TCG especially).
fn load_if_changed(slot: &AtomicU64, value: u64, write: impl FnOnce(u64)) {
    if slot.load(Ordering::Relaxed) != value {
        slot.store(value, Ordering::Relaxed);
        write(value);
    }
}

/// Loads the vCPU's page tables (for its current mode), FS base, guest GS base,
/// CR0.TS and the CR4 bits that follow its virtual CR4, each only if it differs from
/// what the CPU has (no control register or MSR is read here). While the hypervisor
/// runs, the guest's GS base lives in MSR_KERNEL_GS_BASE (entry.s swaps it in on the
/// way out). Also tells entry.s whether the floor call may return at once.
#[inline(always)]
pub fn sync(vcpu: &Vcpu) {
    let loaded = loaded();
    super::percpu::set_floor_ok(vcpu.kernel_mode);
    load_debugregs(&vcpu.debug);
    load_if_changed(&loaded.cr3, vcpu.active_root().0 << 12, |cr3| {
        // SAFETY: the root is a validated L4 of this vCPU's domain whose slots 256-271
        // map the hypervisor exactly as every other address space does.
        unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) }
    });
    load_if_changed(&loaded.fs, vcpu.fs_base, |v| {
        // SAFETY: the FS base only affects the guest's FS-relative accesses.
        unsafe { cpu::wrmsr(IA32_FS_BASE, v) }
    });
    load_if_changed(&loaded.gs, vcpu.active_gs_base(), |v| {
        // SAFETY: this is the guest's GS base, swapped in by SWAPGS on the way out.
        unsafe { cpu::wrmsr(IA32_KERNEL_GS_BASE, v) }
    });
    load_if_changed(&loaded.tsc_aux, u64::from(vcpu.msrs.tsc_aux), |v| {
        // SAFETY: TSC_AUX only changes what `rdtscp`/`rdpid` return; it is written
        // only once a guest set a non-zero value, which the MSR policy allows only
        // when the CPU has RDTSCP or RDPID (so the MSR exists).
        unsafe { cpu::wrmsr(IA32_TSC_AUX, v) }
    });
    cpu::set_cr0_ts(vcpu.fpu_ts);
    load_if_changed(&loaded.cr4, vcpu.cr4 & CR4_PER_VCPU, |bits| {
        let cr4 = (cpu::control_regs().cr4 & !CR4_PER_VCPU) | bits;
        // SAFETY: FSGSBASE and TSD only change which instructions fault in ring 3; the
        // virtual CR4 holds them only if the CPU has the features (CPUID policy), so
        // the write cannot fault.
        unsafe { core::arch::asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) }
    });
}

/// Puts this CPU on the hypervisor's own page tables (what Xen's idle vCPU runs
/// on): before it idles after a vCPU that left no tables to keep, and when an idle
/// CPU that kept a vCPU's tables is asked to flush (`tlb::service`), so that no idle
/// CPU points at a page table that another CPU is about to free or retype. The next
/// `sync` loads a guest's tables again.
pub fn enter_idle_tables() {
    load_if_changed(&loaded().cr3, super::paging::root(), |cr3| {
        // SAFETY: the hypervisor's own L4 maps exactly its slots 256-271, as every
        // guest L4 does, and nothing in the lower half is in use here.
        unsafe { core::arch::asm!("mov cr3, {}", in(reg) cr3, options(nostack, preserves_flags)) }
    });
}

/// Makes the next `sync` load CR3 whatever this CPU holds: the vCPU about to run
/// may not reuse the translations in the TLB (`tlb::take_lazy`).
pub fn forget_loaded_cr3() {
    loaded().cr3.store(u64::MAX, Ordering::Relaxed);
}

/// `SPEC_CTRL` as this CPU has it (0 at reset; only a guest with IBRSB or IBRS in its
/// policy can make it anything else).
static LOADED_SPEC_CTRL: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Loads a vCPU's `SPEC_CTRL` (Xen virtualises it for PV): on a context switch and
/// when the running vCPU writes it, never on other entries (the hypervisor does not
/// change it for itself), and only when it differs from the CPU's.
pub fn load_spec_ctrl(value: u64) {
    load_if_changed(percpu::mine(&LOADED_SPEC_CTRL), value, |v| {
        // SAFETY: a value other than the reset 0 comes only from `msr::write`, which
        // takes it only when the policy (so the CPU) has the MSR and only bits the
        // policy allows; it changes speculation behaviour, not the hypervisor's state.
        unsafe { cpu::wrmsr(xlhv_core::msr::nr::SPEC_CTRL, v) }
    });
}

/// Puts the vCPU's debug registers in the hardware, lazily as Xen does
/// (`activate_debugregs` on a switch to a vCPU whose DR7 enables a breakpoint): with
/// a breakpoint enabled, DR0-DR3 and DR7 are loaded (DR7 last, so no breakpoint is
/// armed on a stale address); with none, DR7 is cleared if the hardware still has
/// another vCPU's breakpoints. DR6 stays at its default (the guest's lives in
/// `DebugRegs::dr6`). Called on every way back into a guest.
pub fn load_debugregs(d: &xlhv_core::debugreg::DebugRegs) {
    use xlhv_core::debugreg::{DR7_ACTIVE_MASK, DR7_DEFAULT};
    let loaded_debug = loaded();
    let loaded7 = loaded_debug.dr7.load(Ordering::Relaxed);
    // The usual case, one test: no breakpoint wanted and none in the hardware.
    if (d.dr7 | loaded7) & DR7_ACTIVE_MASK == 0 {
        return;
    }
    if d.active() {
        let moved = (0..4).any(|i| loaded_debug.dr_addr[i].load(Ordering::Relaxed) != d.addr[i]);
        if moved && loaded7 & DR7_ACTIVE_MASK != 0 {
            loaded_debug.dr7.store(DR7_DEFAULT, Ordering::Relaxed);
            cpu::write_dr7(DR7_DEFAULT);
        }
        for (i, slot) in loaded_debug.dr_addr.iter().enumerate() {
            load_if_changed(slot, d.addr[i], |v| cpu::write_dr_addr(i, v));
        }
        load_if_changed(&loaded_debug.dr7, d.dr7, cpu::write_dr7);
    } else if loaded7 & DR7_ACTIVE_MASK != 0 {
        loaded_debug.dr7.store(DR7_DEFAULT, Ordering::Relaxed);
        cpu::write_dr7(DR7_DEFAULT);
    }
}

/// `#DB` taken by the hypervisor itself: a guest data breakpoint on guest memory the
/// hypervisor read or wrote for it (a bounce frame, a hypercall argument). As in
/// Xen's `do_debug`, this is never fatal and never reaches the guest: DR6 goes back
/// to its default, an instruction breakpoint (which would fault again at once) gets
/// every breakpoint disabled until the next entry, and the event is logged (rate
/// limited, never blocking on the console lock).
pub fn debug_in_hypervisor(frame: &mut TrapFrame) {
    use xlhv_core::debugreg::{DR6_BP_MASK, DR6_DEFAULT, DR7_DEFAULT};
    use xlhv_core::regs::rflags;
    let loaded_debug = loaded();
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let dr6 = cpu::read_dr6();
    cpu::write_dr6(DR6_DEFAULT);
    // SYSCALL masks TF and every exit to a guest lands in ring 3 first, so TF cannot
    // be set here; clear it rather than trap forever.
    let tf = frame.rflags & rflags::TF != 0;
    frame.rflags &= !rflags::TF;
    let dr7 = cpu::read_dr7();
    let insn_bp = (0..4).any(|bp| {
        dr6 & DR6_BP_MASK & (1 << bp) != 0
            && dr7 & (3 << (2 * bp)) != 0
            && (dr7 >> (16 + 4 * bp)) & 3 == 0
    });
    if insn_bp {
        loaded_debug.dr7.store(DR7_DEFAULT, Ordering::Relaxed);
        cpu::write_dr7(DR7_DEFAULT);
    }
    let n = SEEN.fetch_add(1, Ordering::Relaxed);
    if n < 8 || n.is_power_of_two() {
        crate::console::try_log(format_args!(
            "warning: #DB in hypervisor context at {:#x} (dr6 {dr6:#x}, dr7 {dr7:#x}{}{}), #{}; ignored",
            frame.rip,
            if tf { ", TF" } else { "" },
            if insn_bp {
                ", instruction breakpoint: disabled"
            } else {
                ""
            },
            n + 1
        ));
    }
}

/// The platform for a guest entry of domain `dom`.
#[derive(Debug)]
pub struct HwPlatform<'a> {
    /// The domain's shared_info frame.
    pub shared_info: Mfn,
    /// Every other domain (for operations on a named domain).
    pub others: crate::domains::Others<'a>,
    /// The current domain's slot.
    pub slot: usize,
    /// The current domain's id.
    pub id: hypercall_abi::types::DomId,
    /// The current vCPU's id.
    pub vcpu: u32,
    /// The current domain has no other vCPU.
    pub lone: bool,
    /// What the handlers asked for beyond their results.
    pub effects: crate::domains::EntryEffects,
}

/// Writes `bytes` at guest address `va` of the address space loaded now, through the
/// guest's own mappings; false if the range is not the guest's or faults.
pub fn write_current(va: u64, bytes: &[u8]) -> bool {
    if !xlhv_core::regs::is_guest_range(va, bytes.len() as u64) {
        return false;
    }
    // SAFETY: the range is guest address space (never the hypervisor's); faults on it
    // are fixed up and reported as a short copy.
    unsafe { copy_guest(va as *mut u8, bytes.as_ptr(), bytes.len()) == 0 }
}

impl HwPlatform<'_> {
    /// The current domain's `vcpu_info` of `vcpu` (registered, or in shared_info).
    fn vcpu_info(&self, vcpu: u32) -> Option<*mut VcpuInfo> {
        crate::events::SharedBits::of(self.slot, self.shared_info)
            .vcpu(hypercall_abi::types::VcpuId(vcpu))
    }
}

impl HwPlatform<'_> {
    /// The table slot of domain `dom` (this one or another): -ESRCH if none.
    fn slot_of(&mut self, dom: DomId) -> Result<usize, hypercall_abi::Errno> {
        if dom == self.id {
            Ok(self.slot)
        } else {
            self.others
                .slot_by_id(dom)
                .ok_or(hypercall_abi::Errno::ESRCH)
        }
    }
}

impl Platform for HwPlatform<'_> {
    type Mem = crate::mmhw::DirectMem;
    type Slots = crate::mmhw::Slots;
    type M2pTable = crate::mmhw::HwM2p;
    type Hooks = crate::mmhw::Hooks;

    fn mm<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(
            &mut xlhv_core::mm::page_type::MmCtx<
                '_,
                '_,
                Self::Mem,
                Self::Slots,
                Self::M2pTable,
                Self::Hooks,
            >,
        ) -> R,
    ) -> R {
        // The caller exists too when it acts on another domain's memory (it is in
        // the table).
        let mut hooks = self.others.hooks(dom, privileged);
        crate::mmhw::with_mm(dom, privileged, &mut hooks, f)
    }

    fn gnttab<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(
            &mut xlhv_core::mm::page_type::MmCtx<
                '_,
                '_,
                Self::Mem,
                Self::Slots,
                Self::M2pTable,
                Self::Hooks,
            >,
            &mut dyn xlhv_core::gnttab::GrantTables,
            &mut dyn xlhv_core::gnttab::FramePool,
        ) -> R,
    ) -> R {
        let mut hooks = self.others.hooks(dom, privileged);
        let mut tables = crate::gnttab::GNTTAB.lock();
        crate::mmhw::with_mm(dom, privileged, &mut hooks, |m| {
            f(m, &mut *tables, &mut crate::gnttab::Pool)
        })
    }

    fn flush_tlb(&mut self, kind: xlhv_core::mm::mmu::FlushKind, all_cpus: bool) {
        crate::mmhw::flush_tlb(kind);
        if all_cpus {
            // The other CPUs that run a vCPU of this domain. An idle CPU that kept
            // one's tables loads CR3 before running it again; no other CPU holds its
            // translations (a CPU reloads CR3 whenever it switches vCPUs).
            let me = 1 << super::percpu::index();
            super::tlb::forget_lazy(self.slot, u64::MAX);
            super::tlb::flush_cpus(crate::domains::cpus_running(self.slot, u64::MAX) & !me);
        }
    }

    fn flush_tlb_siblings(&mut self, _kind: xlhv_core::mm::mmu::FlushKind, vcpus: u64) {
        // A whole flush there: one IPI either way, and simpler than passing the page.
        let me = 1 << super::percpu::index();
        super::tlb::forget_lazy(self.slot, vcpus);
        super::tlb::flush_cpus(crate::domains::cpus_running(self.slot, vcpus) & !me);
    }

    fn flush_cache(&mut self, _all_cpus: bool) {
        crate::mmhw::flush_cache();
    }

    fn load_gdt(&mut self, vcpu: &Vcpu) {
        super::gdt::load_guest_frames(&vcpu.gdt_frames);
    }

    fn load_ldt(&mut self, vcpu: &Vcpu) {
        super::ldt::load(vcpu);
    }

    fn ldt_area_offset(&self, va: u64) -> Option<u64> {
        super::ldt::area_offset(va)
    }

    fn alloc_frames(&mut self, order: u32, below: Option<Mfn>) -> Option<Mfn> {
        match below {
            Some(limit) => crate::mm::alloc_order_below(order, limit),
            None => crate::mm::alloc_order(order),
        }
    }

    fn free_frames(&mut self, first: Mfn, count: u64) {
        // A guest may have dropped its last mapping without flushing: no CPU may keep
        // a translation to these frames once they can be handed out again.
        super::tlb::flush_everywhere();
        for i in 0..count {
            let _ = crate::mm::free_order(Mfn(first.0 + i), 0);
        }
    }

    fn max_page(&self) -> u64 {
        crate::mm::managed_frames_span()
    }

    fn m2p_chunk(&self, index: u64) -> Option<Mfn> {
        crate::mm::m2p_chunk(index)
    }

    fn host_e820(&self, index: usize) -> Option<hypercall_abi::memory::E820Entry> {
        crate::boot::multiboot::host_e820(index)
    }

    fn with_domain<R>(
        &mut self,
        id: DomId,
        f: impl FnOnce(&mut xlhv_core::domain::Domain) -> R,
    ) -> Option<R> {
        self.others.find(id).map(f)
    }

    fn read_guest_raw(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        // SAFETY: the caller checked `va..va+len` is guest address space (never the
        // hypervisor's); faults on it are fixed up and reported as a short copy.
        let left = unsafe { copy_guest(buf.as_mut_ptr(), va as *const u8, buf.len()) };
        if left == 0 {
            Ok(())
        } else {
            Err(GuestFault {
                va: va + (buf.len() - left) as u64,
            })
        }
    }

    fn write_guest_raw(&mut self, va: u64, buf: &[u8]) -> Result<(), GuestFault> {
        // SAFETY: as above; CR0.WP makes the guest's read-only mappings refuse the write.
        let left = unsafe { copy_guest(va as *mut u8, buf.as_ptr(), buf.len()) };
        if left == 0 {
            Ok(())
        } else {
            Err(GuestFault {
                va: va + (buf.len() - left) as u64,
            })
        }
    }

    fn console_line(&mut self, dom: DomId, line: &[u8]) {
        crate::console::guest_line(dom, line);
    }

    fn upcall_mask(&self, vcpu: u32) -> u8 {
        // SAFETY: `vcpu_info` points into the mapped shared_info page.
        self.vcpu_info(vcpu).map_or(1, |vi| unsafe {
            core::ptr::read_volatile(core::ptr::addr_of!((*vi).evtchn_upcall_mask))
        })
    }

    fn set_upcall_mask(&mut self, vcpu: u32, mask: u8) {
        if let Some(vi) = self.vcpu_info(vcpu) {
            // SAFETY: as above.
            unsafe {
                core::ptr::write_volatile(core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask), mask)
            }
        }
    }

    fn upcall_pending(&self, vcpu: u32) -> bool {
        crate::events::SharedBits::of(self.slot, self.shared_info)
            .upcall_pending_of(hypercall_abi::types::VcpuId(vcpu))
    }

    fn evtchn_op(
        &mut self,
        caller: &xlhv_core::evtchn::Caller,
        req: xlhv_core::evtchn::EvtchnRequest,
    ) -> Result<xlhv_core::evtchn::EvtchnReply, xlhv_core::evtchn::EvtchnError> {
        let mut tables = crate::events::TABLES.lock();
        let mut ev = crate::events::HwEvtchn {
            tables: &mut tables,
        };
        xlhv_core::evtchn::dispatch(&mut ev, caller, req)
    }

    fn evtchn_poll(
        &mut self,
        vcpu: hypercall_abi::types::VcpuId,
        ports: &[hypercall_abi::types::EvtchnPort],
    ) -> Result<bool, xlhv_core::evtchn::EvtchnError> {
        let tables = crate::events::TABLES.lock();
        let bits = crate::events::SharedBits::of(self.slot, self.shared_info);
        match tables.get(self.slot) {
            Some(t) => t.poll(&bits, vcpu, ports),
            None => Ok(true),
        }
    }

    fn irqs<R>(
        &mut self,
        f: impl FnOnce(&mut xlhv_core::pirq::IrqTable, &mut dyn xlhv_core::pirq::IrqChip) -> R,
    ) -> R {
        f(&mut crate::irq::IRQS.lock(), &mut crate::irq::HwChip)
    }

    fn kick(&mut self, kick: xlhv_core::evtchn::Kick) {
        if kick.dom != self.id {
            self.others.kick(&kick);
            return;
        }
        // The current vCPU's own event is delivered on the way out; another vCPU of
        // this domain is woken when the entry ends.
        if self.lone {
            return;
        }
        if let Some(v) = kick.upcall.filter(|v| v.0 != self.vcpu && v.0 < 32) {
            self.effects.upcalls |= 1 << v.0;
        }
        self.effects.poll_kick |= kick.pollers;
    }

    fn timers_changed(&mut self) {
        self.effects.timers_changed = true;
    }

    fn set_hard_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<u64, hypercall_abi::Errno> {
        let slot = self.slot_of(dom)?;
        crate::domains::set_hard_affinity(slot, vcpu, cpus)
    }

    fn set_soft_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<(), hypercall_abi::Errno> {
        let slot = self.slot_of(dom)?;
        crate::domains::set_soft_affinity(slot, vcpu, cpus)
    }

    fn sibling_changed(&mut self, vcpu: u32) {
        if vcpu < 32 {
            self.effects.siblings |= 1 << vcpu;
        }
    }

    fn remote_shutdown(&mut self, id: DomId, reason: xlhv_core::domain::ShutdownReason) -> bool {
        self.others.shut_down(id, reason)
    }

    fn create_domain(
        &mut self,
        spec: &xlhv_core::hypercall::domctl::CreateSpec,
    ) -> Result<DomId, xlhv_core::hypercall::HvError> {
        Ok(self.others.create(spec, self.id)?)
    }

    fn domain_summary(&mut self, at: DomId) -> Option<xlhv_core::hypercall::domctl::DomainSummary> {
        self.others.summary(at)
    }

    fn destroy_domain(
        &mut self,
        id: DomId,
    ) -> Result<xlhv_core::platform::Progress, xlhv_core::hypercall::HvError> {
        Ok(self.others.request_destroy(id)?)
    }

    fn pause_domain(
        &mut self,
        id: DomId,
    ) -> Result<xlhv_core::platform::Progress, xlhv_core::hypercall::HvError> {
        Ok(self.others.pause(id)?)
    }

    fn unpause_domain(&mut self, id: DomId) -> Result<(), xlhv_core::hypercall::HvError> {
        Ok(self.others.unpause(id)?)
    }

    fn set_max_pages(
        &mut self,
        id: DomId,
        pages: u64,
    ) -> Result<(), xlhv_core::hypercall::HvError> {
        let d = self.others.find(id).ok_or(hypercall_abi::Errno::ESRCH)?;
        d.max_pages = pages;
        Ok(())
    }

    fn with_vcpu<R>(
        &mut self,
        id: DomId,
        vcpu: u32,
        f: impl FnOnce(&mut xlhv_core::domain::Domain, &mut xlhv_core::vcpu::Vcpu) -> R,
    ) -> Option<R> {
        self.others.with_vcpu(id, vcpu, f)
    }

    fn write_frame(&mut self, mfn: Mfn, offset: usize, bytes: &[u8]) {
        let end = offset.saturating_add(bytes.len());
        if end > 4096 {
            return;
        }
        let va = DIRECTMAP_BASE + (mfn.0 << 12) + offset as u64;
        // SAFETY: `mfn` is RAM in the direct map (a frame of a domain, which the
        // caller holds a writable type reference on); the range lies within it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), va as *mut u8, bytes.len()) };
    }

    fn cpu_physid(&self, cpu: u32) -> u64 {
        super::smp::physid(cpu as usize)
    }

    fn physinfo(&self) -> hypercall_abi::domctl::SysctlPhysinfo {
        let total = crate::mm::total_frames();
        hypercall_abi::domctl::SysctlPhysinfo {
            threads_per_core: 1,
            cores_per_socket: 1,
            nr_cpus: u32::try_from(super::smp::online()).unwrap_or(1),
            max_cpu_id: 0,
            nr_nodes: 1,
            max_node_id: 0,
            cpu_khz: u32::try_from(crate::time::tsc_hz() / 1000).unwrap_or(u32::MAX),
            total_pages: total,
            free_pages: crate::mm::free_frames(),
            max_mfn: crate::mm::max_mfn(),
            ..Default::default()
        }
    }

    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> (usize, u32) {
        crate::console::RING.lock().read(from, buf)
    }

    fn clear_console(&mut self) {
        crate::console::RING.lock().clear();
    }

    fn port_in(&mut self, port: u16, bytes: u8) -> u32 {
        // SAFETY: the portable emulation calls this only for ports the current domain
        // may reach, none of which the hypervisor uses (xlhv_core::ioport); a read of
        // such a port has no effect on the hypervisor's state.
        unsafe {
            match bytes {
                1 => u32::from(x86_64::instructions::port::PortReadOnly::<u8>::new(port).read()),
                2 => u32::from(x86_64::instructions::port::PortReadOnly::<u16>::new(port).read()),
                _ => x86_64::instructions::port::PortReadOnly::<u32>::new(port).read(),
            }
        }
    }

    fn port_out(&mut self, port: u16, bytes: u8, value: u32) {
        // SAFETY: as in `port_in`: a port of the domain's, not the hypervisor's.
        unsafe {
            match bytes {
                1 => x86_64::instructions::port::PortWriteOnly::<u8>::new(port)
                    .write(value.to_le_bytes()[0]),
                2 => x86_64::instructions::port::PortWriteOnly::<u16>::new(port).write(
                    u16::from_le_bytes([value.to_le_bytes()[0], value.to_le_bytes()[1]]),
                ),
                _ => x86_64::instructions::port::PortWriteOnly::<u32>::new(port).write(value),
            }
        }
    }

    fn pci_conf_read(&mut self, cf8: u32, offset: u8, bytes: u8) -> u32 {
        crate::pci::conf_read(cf8, offset, bytes)
    }

    fn pci_conf_write(&mut self, cf8: u32, offset: u8, bytes: u8, data: u32) {
        crate::pci::conf_write(cf8, offset, bytes, data)
    }

    fn pci<R>(&mut self, f: impl FnOnce(&mut xlhv_core::pci::PciState) -> R) -> R {
        f(&mut crate::pci::STATE.lock())
    }

    fn mmio_ro(&mut self, first: u64, last: u64, ro: bool) {
        crate::mmhw::mmio_ro(first, last, ro);
    }

    fn mmcfg_write(&mut self, pa: u64, size: u8, value: u32) {
        crate::pci::mmcfg_write(pa, size, value);
    }

    fn iomem_permitted(&mut self, dom: DomId, first: u64, last: u64) -> bool {
        crate::mmhw::IOMEM.lock().permits(dom, first, last)
    }

    fn iomem_permission(
        &mut self,
        dom: DomId,
        first: u64,
        last: u64,
        allow: bool,
    ) -> Result<(), xlhv_core::ioport::TooManyRanges> {
        crate::mmhw::IOMEM.lock().change(dom, first, last, allow)
    }

    fn move_vcpu_info(&mut self, vcpu: u32, mfn: xlhv_core::mm::Mfn, offset: u32) {
        let Some(old) = self.vcpu_info(vcpu) else {
            return;
        };
        let at = (mfn.0 << 12) + u64::from(offset);
        let new = (DIRECTMAP_BASE + at) as *mut VcpuInfo;
        // SAFETY: `old` is the live vcpu_info; `new` lies inside a frame of this
        // domain that the caller holds a writable reference to, within the page
        // (checked), in the direct map. The two may overlap only if the guest chose
        // shared_info itself, which is not its frame.
        unsafe { core::ptr::copy(old.cast::<u8>(), new.cast::<u8>(), size_of::<VcpuInfo>()) };
        crate::events::set_vcpu_info_at(self.slot, Some(vcpu), Some(at));
        // SAFETY: `new` is the vcpu_info now; the flag and selector are accessed
        // atomically, as the guest accesses them.
        unsafe {
            core::sync::atomic::AtomicU64::from_ptr(core::ptr::addr_of_mut!(
                (*new).evtchn_pending_sel
            ))
            .store(u64::MAX, core::sync::atomic::Ordering::SeqCst);
            core::sync::atomic::AtomicU8::from_ptr(core::ptr::addr_of_mut!(
                (*new).evtchn_upcall_pending
            ))
            .store(1, core::sync::atomic::Ordering::SeqCst);
        }
    }

    fn set_shared_cr2(&mut self, vcpu: u32, cr2: u64) {
        if let Some(vi) = self.vcpu_info(vcpu) {
            // SAFETY: as above.
            unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*vi).arch.cr2), cr2) }
        }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        let mut l = [r.eax, r.ebx, r.ecx, r.edx];
        // XSAVE is the hypervisor's to give: without it enabled (`enable_xsave`),
        // the policy must not show it (Xen clears the capability too).
        if leaf == 1 && cpu::xfeature_mask() == 0 {
            l[2] &= !(1 << 26);
        }
        l
    }

    fn control_regs(&self) -> (u64, u64) {
        let c = cpu::control_regs();
        (c.cr0, c.cr4)
    }

    fn xfeature_mask(&self) -> u64 {
        cpu::xfeature_mask()
    }

    fn set_xcr0(&mut self, xcr0: u64) {
        cpu::set_xcr0(xcr0);
    }

    fn take_debug_status(&mut self) -> u64 {
        let dr6 = cpu::read_dr6();
        cpu::write_dr6(xlhv_core::debugreg::DR6_DEFAULT);
        dr6
    }

    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }

    fn tsc(&self) -> u64 {
        cpu::rdtsc()
    }

    fn rdmsr_safe(&self, msr: u32) -> Option<u64> {
        cpu::rdmsr_checked(msr)
    }

    fn load_user_gs_sel(&mut self, sel: u16) -> (u16, u64) {
        super::segs::load_user_gs(sel)
    }

    fn msr_command(&self, msr: u32, value: u64) {
        use xlhv_core::msr::nr;
        match msr {
            nr::SPEC_CTRL => load_spec_ctrl(value),
            nr::PRED_CMD | nr::FLUSH_CMD => {
                // SAFETY: `msr::write` asks only when the policy (so the CPU) has
                // the command and the value is its one defined bit (or 0); a
                // barrier or flush has no effect on the hypervisor's state.
                unsafe { cpu::wrmsr(msr, value) }
            }
            _ => {}
        }
    }

    fn hv_cmdline(&self) -> &str {
        crate::domains::cmdline()
    }

    fn load_mode(&mut self, vcpu: &Vcpu) {
        sync(vcpu);
    }

    fn live_bases(&mut self, vcpu: &mut Vcpu) {
        read_back_bases(vcpu);
    }
}
