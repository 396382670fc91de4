//! A PV vCPU: what the hypervisor keeps for it between entries.

use crate::mm::Mfn;
use crate::regs::{Regs, rflags};
use hypercall_abi::vcpu::{RUNSTATE_OFFLINE, VcpuRunstateInfo};
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, TrapInfo};

/// A registered guest entry point (`callback_op`, `set_callbacks`, `nmi_op`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    /// Guest virtual address; 0 = none.
    pub address: u64,
    /// Mask events (set `evtchn_upcall_mask`) on entry.
    pub mask_events: bool,
}

/// The callbacks a 64-bit PV guest can register.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callbacks {
    /// Event upcall (always masks events).
    pub event: Callback,
    /// Segment-reload failure.
    pub failsafe: Callback,
    /// 64-bit SYSCALL from guest user mode.
    pub syscall: Callback,
    /// 32-bit SYSCALL from guest user mode.
    pub syscall32: Callback,
    /// SYSENTER from guest user mode.
    pub sysenter: Callback,
    /// NMI (always masks events).
    pub nmi: Callback,
}

pub use crate::debugreg::DebugRegs;

/// One virtual CPU of a PV domain.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Index within the domain.
    pub id: u32,
    /// Up: not `VCPUOP_down` (Xen's `_VPF_down` clear). vCPU 0 comes up when its
    /// domain is built; the others with `VCPUOP_up`, or with `VGCF_online` in the
    /// context they are given.
    pub online: bool,
    /// Has a context (Xen's `is_initialised`): from the domain builder,
    /// `XEN_DOMCTL_setvcpucontext` or `VCPUOP_initialise`. Only such a vCPU comes up.
    pub initialised: bool,
    /// The physical CPU it last ran on (Xen's `v->processor`): that CPU keeps its
    /// timers armed.
    pub processor: u16,
    /// The CPUs it may run on, as last set (`XEN_DOMCTL_setvcpuaffinity`, hard; bit
    /// n: CPU n); the scheduler uses this with the CPUs that run guests.
    pub affinity_hard: u64,
    /// The CPUs it prefers, as last set (soft affinity: kept and reported, not used
    /// by the scheduler).
    pub affinity_soft: u64,
    /// Registers while the vCPU is not on a CPU.
    pub regs: Regs,
    /// Virtual kernel mode (the guest kernel and guest user both run in ring 3).
    pub kernel_mode: bool,
    /// Stack selector for bounces from user mode (`stack_switch`).
    pub kernel_ss: u16,
    /// Stack pointer for bounces from user mode (`stack_switch`); 0 = not set.
    pub kernel_sp: u64,
    /// The virtual IDT (`set_trap_table`).
    pub traps: [TrapInfo; 256],
    /// Registered callbacks.
    pub callbacks: Callbacks,
    /// Virtual CR0.TS (`fpu_taskswitch`, `clts`).
    pub fpu_ts: bool,
    /// FS base.
    pub fs_base: u64,
    /// GS base while in kernel mode.
    pub gs_base_kernel: u64,
    /// GS base while in user mode.
    pub gs_base_user: u64,
    /// Its MSRs beyond the segment bases (TSC_AUX, the vMCE banks, ...: `crate::msr`).
    pub msrs: crate::msr::VcpuMsrs,
    /// User GS selector (`SEGBASE_GS_USER_SEL`).
    pub gs_sel_user: u16,
    /// Data selectors %ds, %es, %fs, %gs while the vCPU is off the CPU (Xen's
    /// `save_segments`/`load_segments`); the CPU holds them while it runs.
    pub sels: [u16; 4],
    /// A selector of `sels` did not load when the vCPU was switched in: the failsafe
    /// callback is due before it runs again.
    pub failsafe_due: bool,
    /// An NMI waits for delivery (`VCPUOP_send_nmi`; Xen's `nmi_pending`).
    pub nmi_pending: bool,
    /// An NMI was delivered and the guest has not yet returned with `iret` (Xen's
    /// NMI bit of `async_exception_mask`): further NMIs wait.
    pub nmi_masked: bool,
    /// Debug registers.
    pub debug: DebugRegs,
    /// Virtual IOPL (`PHYSDEVOP_set_iopl`), 0-3.
    pub iopl: u8,
    /// The guest-controlled bits of its virtual CR4 (TSD, DE, FSGSBASE, OSXSAVE, each
    /// only if the CPUID policy has the feature: `emulate::fixup_guest_cr4`); the
    /// rest of what `mov %cr4` reads comes from the real CR4 (`emulate::guest_cr4`).
    /// While the vCPU runs, the real CR4.FSGSBASE and CR4.TSD follow these bits.
    pub cr4: u64,
    /// Virtual CR2: the last page-fault address bounced to the guest.
    pub cr2: u64,
    /// Kernel page-table root (L4).
    pub kernel_root: Mfn,
    /// User page-table root (`MMUEXT_NEW_USER_BASEPTR`); `None` = no user mode yet.
    pub user_root: Option<Mfn>,
    /// LDT linear address (`MMUEXT_SET_LDT`); 0 = none.
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u32,
    /// The LDT's pages mapped for the CPU so far (on the CPU's first read of each),
    /// each holding a `SegDesc` type reference (`crate::mm::mmu::map_ldt_page`).
    pub ldt_frames: [Option<Mfn>; crate::mm::mmu::LDT_PAGES],
    /// The guest's GDT frames (`set_gdt`), each holding a `SegDesc` type reference.
    pub gdt_frames: heapless::Vec<Mfn, 14>,
    /// Entries of the guest's GDT.
    pub gdt_ents: u32,
    /// Its timers (`set_timer_op`, `VCPUOP_*_timer`, `SCHEDOP_poll` timeout).
    pub timers: Timers,
    /// What it waits for while it does not run by choice.
    pub wait: Wait,
    /// Where its time went (`VCPUOP_get_runstate_info`).
    pub runstate: VcpuRunstateInfo,
    /// Guest virtual address of its registered runstate copy; 0 = none.
    pub runstate_area: u64,
    /// Guest virtual address of its secondary `vcpu_time_info` copy
    /// (`VCPUOP_register_vcpu_time_memory_area`); 0 = none.
    pub time_area: u64,
    /// The clock changed since `time_area` was last written: the hypervisor writes
    /// it when it next puts the vCPU on a CPU in kernel mode (Xen's
    /// `pending_system_time`).
    pub time_area_pending: bool,
    /// Where `VCPUOP_register_vcpu_info` moved its `vcpu_info` (frame, byte offset);
    /// `None` = in shared_info. The frame holds a writable type reference until the
    /// domain is destroyed.
    pub vcpu_info_at: Option<(Mfn, u32)>,
    /// FPU/SSE/AVX registers while it is off the CPU (an `XSAVE` image, or
    /// `FXSAVE`'s legacy region alone on a CPU without XSAVE).
    pub fpu: FpuArea,
    /// Its XCR0 (`xsetbv`); 0 = never set, which runs with x87 and SSE. Its state
    /// is saved and restored with every component the hypervisor manages, so one
    /// it turned off keeps its values (Xen's `xcr0_accum`) and one it never used
    /// starts in its initial state, never another vCPU's.
    pub xcr0: u64,
}

/// Xen's default periodic timer of a PV vCPU: 10 ms (100 Hz), armed at creation.
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;
/// Shortest period `VCPUOP_set_periodic_timer` accepts (1 ms).
pub const MIN_PERIOD_NS: u64 = 1_000_000;

/// A vCPU's timers, as absolute system times (ns since boot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timers {
    /// The one-shot timer (`set_timer_op`, `VCPUOP_set_singleshot_timer`).
    pub singleshot: Option<u64>,
    /// Period of the periodic timer; 0 = stopped.
    pub period: u64,
    /// Next expiry of the periodic timer.
    pub periodic_next: u64,
    /// Timeout of a `SCHEDOP_poll` in progress (wakes without an event).
    pub poll_timeout: Option<u64>,
}

impl Timers {
    /// Xen's start of day: the 10 ms periodic timer running from `now`.
    pub fn start_of_day(now: u64) -> Self {
        Timers {
            singleshot: None,
            period: DEFAULT_PERIOD_NS,
            periodic_next: now.saturating_add(DEFAULT_PERIOD_NS),
            poll_timeout: None,
        }
    }

    /// The earliest expiry of any armed timer. `periodic_live` is false while the
    /// vCPU waits: Xen stops the periodic timer of a descheduled vCPU (it fires, if
    /// due, when the vCPU is next switched in: [`Timers::catch_up_periodic`]).
    pub fn next_deadline(&self, periodic_live: bool) -> Option<u64> {
        let periodic = (self.period != 0 && periodic_live).then_some(self.periodic_next);
        [self.singleshot, periodic, self.poll_timeout]
            .into_iter()
            .flatten()
            .min()
    }

    /// Expires what is due at `now`: returns (raise `VIRQ_TIMER`, poll timed out).
    /// The one-shot and poll timers disarm; the periodic timer moves to its first
    /// expiry after `now` (missed periods are not replayed, as in Xen).
    pub fn expire(&mut self, now: u64, periodic_live: bool) -> (bool, bool) {
        let mut virq = false;
        if self.singleshot.is_some_and(|t| t <= now) {
            self.singleshot = None;
            virq = true;
        }
        if periodic_live {
            virq |= self.catch_up_periodic(now);
        }
        let poll = self.poll_timeout.is_some_and(|t| t <= now);
        if poll {
            self.poll_timeout = None;
        }
        (virq, poll)
    }

    /// The periodic timer, if due at `now`: moves it to its first expiry after `now`
    /// (missed periods are not replayed) and returns true (raise `VIRQ_TIMER`).
    pub fn catch_up_periodic(&mut self, now: u64) -> bool {
        if self.period == 0 || self.periodic_next > now {
            return false;
        }
        let behind = now - self.periodic_next;
        let skip = behind / self.period + 1;
        self.periodic_next = self
            .periodic_next
            .saturating_add(skip.saturating_mul(self.period));
        true
    }
}

/// Why a vCPU is not running of its own accord.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Wait {
    /// Not waiting.
    #[default]
    None,
    /// `SCHEDOP_block`: until an event needs delivery.
    Block,
    /// `SCHEDOP_poll`: until one of its ports becomes pending (`Some` when it polls
    /// exactly one port, as Xen's `poll_evtchn`; `None` = any newly pending port of
    /// the domain wakes it), or the poll timeout.
    Poll(Option<hypercall_abi::types::EvtchnPort>),
}

/// Bytes of a vCPU's XSAVE area. The hypervisor has no heap, so the area is part of
/// the vCPU (made with it, never on a hot path); the boot code enables only the XCR0
/// components whose standard-form layout (CPUID 0xD) fits (`xstate::hypervisor_mask`):
/// x87, SSE, AVX, MPX and AVX-512 need at most 2,688 bytes.
pub const FPU_AREA_SIZE: usize = 3072;

/// Size of the legacy (`FXSAVE`) region at the start of the area.
pub const FPU_LEGACY_SIZE: usize = 512;

/// An `XSAVE` area (standard form, 64-byte aligned): the `FXSAVE` legacy region (x87,
/// MMX, SSE), the XSAVE header, then the extended components.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct FpuArea(pub [u8; FPU_AREA_SIZE]);

impl Default for FpuArea {
    /// The state after `FNINIT` with SSE reset: FCW 0x037F, MXCSR 0x1F80; an empty
    /// XSAVE header (every component in its initial state).
    fn default() -> Self {
        let mut a = [0u8; FPU_AREA_SIZE];
        a[0] = 0x7F;
        a[1] = 0x03;
        a[24] = 0x80;
        a[25] = 0x1F;
        FpuArea(a)
    }
}

impl FpuArea {
    /// An area holding `legacy` as its x87/SSE state (`setvcpucontext`): as Xen's
    /// `arch_set_info_guest`, the header says x87 and SSE are in use, the rest is
    /// initial.
    pub fn from_legacy(legacy: [u8; FPU_LEGACY_SIZE]) -> Self {
        let mut a = FpuArea::default();
        if let Some(l) = a.0.get_mut(..FPU_LEGACY_SIZE) {
            l.copy_from_slice(&legacy);
        }
        a.set_xstate_bv(crate::xstate::FP_SSE);
        a
    }

    /// The legacy (`FXSAVE`) region (`getvcpucontext`'s `fpu_ctxt`).
    pub fn legacy(&self) -> [u8; FPU_LEGACY_SIZE] {
        let mut l = [0u8; FPU_LEGACY_SIZE];
        if let Some(src) = self.0.get(..FPU_LEGACY_SIZE) {
            l.copy_from_slice(src);
        }
        l
    }

    /// Sets the header's XSTATE_BV (which components the image holds).
    fn set_xstate_bv(&mut self, bv: u64) {
        if let Some(h) = self.0.get_mut(FPU_LEGACY_SIZE..FPU_LEGACY_SIZE + 8) {
            h.copy_from_slice(&bv.to_le_bytes());
        }
    }

    /// The header's XSTATE_BV.
    pub fn xstate_bv(&self) -> u64 {
        let mut b = [0u8; 8];
        if let Some(h) = self.0.get(FPU_LEGACY_SIZE..FPU_LEGACY_SIZE + 8) {
            b.copy_from_slice(h);
        }
        u64::from_le_bytes(b)
    }
}

impl Vcpu {
    /// A vCPU at Xen's start-of-day state (digest §3.1): kernel mode, flat kernel
    /// selectors, IF set, everything else zero or reset.
    pub fn new(id: u32, kernel_root: Mfn) -> Self {
        Vcpu {
            id,
            online: false,
            initialised: false,
            processor: 0,
            affinity_hard: u64::MAX,
            affinity_soft: u64::MAX,
            regs: Regs {
                cs: u64::from(FLAT_KERNEL_CS),
                ss: u64::from(FLAT_KERNEL_SS),
                rflags: rflags::IF | rflags::FIXED,
                ..Regs::default()
            },
            kernel_mode: true,
            kernel_ss: 0,
            kernel_sp: 0,
            traps: [TrapInfo::default(); 256],
            callbacks: Callbacks::default(),
            fpu_ts: false,
            fs_base: 0,
            msrs: crate::msr::VcpuMsrs::default(),
            gs_base_kernel: 0,
            gs_base_user: 0,
            gs_sel_user: 0,
            sels: [0; 4],
            failsafe_due: false,
            nmi_pending: false,
            nmi_masked: false,
            debug: DebugRegs::default(),
            iopl: 0,
            cr4: 0,
            cr2: 0,
            kernel_root,
            user_root: None,
            ldt_base: 0,
            ldt_ents: 0,
            ldt_frames: [None; crate::mm::mmu::LDT_PAGES],
            gdt_frames: heapless::Vec::new(),
            gdt_ents: 0,
            timers: Timers::default(),
            wait: Wait::None,
            runstate: VcpuRunstateInfo {
                state: RUNSTATE_OFFLINE,
                ..VcpuRunstateInfo::default()
            },
            runstate_area: 0,
            time_area: 0,
            time_area_pending: false,
            vcpu_info_at: None,
            fpu: FpuArea::default(),
            xcr0: 0,
        }
    }

    /// Moves the vCPU to runstate `state` (`RUNSTATE_*`) at system time `now`,
    /// charging the time since the last change to the state it leaves.
    pub fn set_runstate(&mut self, state: i32, now: u64) {
        let r = &mut self.runstate;
        let since = now.saturating_sub(r.state_entry_time);
        if let Some(t) = usize::try_from(r.state)
            .ok()
            .and_then(|i| r.time.get_mut(i))
        {
            *t = t.saturating_add(since);
        }
        r.state = state;
        r.state_entry_time = now;
    }

    /// The runstate as of `now` (the current state's time counted up to `now`).
    pub fn runstate_at(&self, now: u64) -> VcpuRunstateInfo {
        let mut r = self.runstate;
        let since = now.saturating_sub(r.state_entry_time);
        if let Some(t) = usize::try_from(r.state)
            .ok()
            .and_then(|i| r.time.get_mut(i))
        {
            *t = t.saturating_add(since);
        }
        r
    }

    /// The GS base the guest sees now (kernel or user, by mode).
    #[inline]
    pub fn active_gs_base(&self) -> u64 {
        if self.kernel_mode {
            self.gs_base_kernel
        } else {
            self.gs_base_user
        }
    }

    /// The FS base and the active GS base as the CPU holds them while the vCPU runs:
    /// with CR4.FSGSBASE the guest may have changed them itself (`wrfsbase`,
    /// `wrgsbase`), so the hypervisor reads them back and records them here (Xen's
    /// `save_segments`). The GS base goes to the current mode's slot.
    pub fn set_live_bases(&mut self, fs: u64, gs: u64) {
        self.fs_base = fs;
        if self.kernel_mode {
            self.gs_base_kernel = gs;
        } else {
            self.gs_base_user = gs;
        }
    }

    /// Whether the guest can change its FS/GS bases without the hypervisor
    /// (`rd/wr{fs,gs}base` enabled in its virtual CR4).
    #[inline]
    pub fn owns_bases(&self) -> bool {
        self.cr4 & crate::emulate::cr4::FSGSBASE != 0
    }

    /// The page-table root for the current mode.
    #[inline]
    pub fn active_root(&self) -> Mfn {
        if self.kernel_mode {
            self.kernel_root
        } else {
            self.user_root.unwrap_or(self.kernel_root)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_context_fpu_image_is_x87_and_sse_in_use() {
        let mut l = [0u8; FPU_LEGACY_SIZE];
        l[0] = 0x7f;
        l[160] = 0xab;
        let a = FpuArea::from_legacy(l);
        assert_eq!(a.legacy(), l);
        assert_eq!(a.xstate_bv(), 3);
        assert!(
            a.0[520..].iter().all(|&b| b == 0),
            "rest of header, components"
        );
        assert_eq!(FpuArea::default().xstate_bv(), 0);
        assert_eq!(core::mem::align_of::<FpuArea>(), 64, "XSAVE needs 64");
    }

    #[test]
    fn live_bases_go_to_the_current_modes_gs_slot() {
        let mut v = Vcpu::new(0, Mfn(1));
        v.gs_base_user = 0x1000;
        v.set_live_bases(0x2000, 0x3000);
        assert_eq!(
            (v.fs_base, v.gs_base_kernel, v.gs_base_user),
            (0x2000, 0x3000, 0x1000)
        );
        v.kernel_mode = false;
        v.set_live_bases(0x4000, 0x5000);
        assert_eq!(
            (v.fs_base, v.gs_base_kernel, v.gs_base_user),
            (0x4000, 0x3000, 0x5000)
        );
        assert_eq!(v.active_gs_base(), 0x5000);
    }

    #[test]
    fn only_a_vcpu_with_cr4_fsgsbase_owns_its_bases() {
        let mut v = Vcpu::new(0, Mfn(1));
        assert!(!v.owns_bases());
        v.cr4 = crate::emulate::cr4::TSD;
        assert!(!v.owns_bases());
        v.cr4 |= crate::emulate::cr4::FSGSBASE;
        assert!(v.owns_bases());
    }
}
