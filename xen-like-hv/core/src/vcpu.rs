//! A PV vCPU: what the hypervisor keeps for it between entries.

use crate::mm::Mfn;
use crate::regs::{Regs, rflags};
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

/// Debug register state as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3: breakpoint addresses.
    pub addr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7.
    pub dr7: u64,
}

impl Default for DebugRegs {
    fn default() -> Self {
        // Architectural reset values (digest §3.1).
        DebugRegs {
            addr: [0; 4],
            dr6: 0xFFFF_0FF0,
            dr7: 0x0000_0400,
        }
    }
}

/// One virtual CPU of a PV domain.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Index within the domain.
    pub id: u32,
    /// Brought up (vCPU 0 at build; others by `VCPUOP_up`).
    pub online: bool,
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
    /// User GS selector (`SEGBASE_GS_USER_SEL`).
    pub gs_sel_user: u16,
    /// Debug registers.
    pub debug: DebugRegs,
    /// Virtual IOPL (`PHYSDEVOP_set_iopl`), 0-3.
    pub iopl: u8,
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
    /// The guest's GDT frames (`set_gdt`), each holding a `SegDesc` type reference.
    pub gdt_frames: heapless::Vec<Mfn, 14>,
    /// Entries of the guest's GDT.
    pub gdt_ents: u32,
}

impl Vcpu {
    /// A vCPU at Xen's start-of-day state (digest §3.1): kernel mode, flat kernel
    /// selectors, IF set, everything else zero or reset.
    pub fn new(id: u32, kernel_root: Mfn) -> Self {
        Vcpu {
            id,
            online: false,
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
            gs_base_kernel: 0,
            gs_base_user: 0,
            gs_sel_user: 0,
            debug: DebugRegs::default(),
            iopl: 0,
            cr2: 0,
            kernel_root,
            user_root: None,
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: heapless::Vec::new(),
            gdt_ents: 0,
        }
    }

    /// The GS base the guest sees now (kernel or user, by mode).
    pub fn active_gs_base(&self) -> u64 {
        if self.kernel_mode {
            self.gs_base_kernel
        } else {
            self.gs_base_user
        }
    }

    /// The page-table root for the current mode.
    pub fn active_root(&self) -> Mfn {
        if self.kernel_mode {
            self.kernel_root
        } else {
            self.user_root.unwrap_or(self.kernel_root)
        }
    }
}
