//! x86_64 CPU state in the PV ABI (`arch-x86/xen.h`, `arch-x86/xen-x86_64.h`).
//!
//! * [`TrapInfo`]: one entry of the guest's virtual IDT (`set_trap_table`).
//! * [`CpuUserRegs`] and [`VcpuGuestContext`]: a vCPU's full state, written
//!   by the builder or guest for `VCPUOP_initialise` / `setvcpucontext`.
//! * [`IretContext`]: what the guest leaves on its stack for `iret` (#23).
//! * [`BounceFrame`], [`BounceFrameWithError`] and [`FailsafeFrame`]: what the
//!   hypervisor pushes on the guest kernel stack when it delivers an
//!   exception, event or syscall to the guest.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `trap_info.flags` bits 1:0: the DPL that software `INT n` needs.
pub const TI_DPL_MASK: u8 = 3;
/// `trap_info.flags` bit 2: mask events on entry, like an interrupt gate.
pub const TI_DISABLE_EVENTS: u8 = 1 << 2;

/// `struct trap_info` (16 bytes): one virtual IDT entry.
///
/// Written by the guest (an array for `set_trap_table`, ended by an entry
/// with `address == 0`; or inside `vcpu_guest_context.trap_ctxt`), read by
/// the hypervisor when it bounces vector `vector`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception vector.
    pub vector: u8,
    /// DPL in bits 1:0 ([`TI_DPL_MASK`]), [`TI_DISABLE_EVENTS`] in bit 2.
    pub flags: u8,
    /// Code selector; its RPL is forced to 3 and handlers run on
    /// `FLAT_KERNEL_CS`.
    pub cs: u16,
    /// Padding (zero).
    pub _pad: u32,
    /// Handler address; 0 ends a `set_trap_table` list.
    pub address: u64,
}

impl TrapInfo {
    /// An entry for `vector` with the given DPL (0..=3) and event masking.
    pub const fn new(vector: u8, dpl: u8, disable_events: bool, cs: u16, address: u64) -> Self {
        let ev = if disable_events { TI_DISABLE_EVENTS } else { 0 };
        TrapInfo {
            vector,
            flags: (dpl & TI_DPL_MASK) | ev,
            cs,
            _pad: 0,
            address,
        }
    }

    /// The DPL (`TI_GET_DPL`).
    pub const fn dpl(&self) -> u8 {
        self.flags & TI_DPL_MASK
    }

    /// Whether delivery masks events (`TI_GET_IF`).
    pub const fn disables_events(&self) -> bool {
        self.flags & TI_DISABLE_EVENTS != 0
    }
}

/// `struct cpu_user_regs` (x86_64, 200 bytes): the general registers.
///
/// Inside [`VcpuGuestContext`] it is written by whoever initialises the vCPU
/// (builder, or the guest for a secondary vCPU) and read by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Hypervisor-private.
    pub error_code: u32,
    /// Hypervisor-private.
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub _pad0: u16,
    /// Saved `evtchn_upcall_mask`; `rflags.IF == !saved_upcall_mask`.
    pub saved_upcall_mask: u8,
    pub _pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub _pad2: [u16; 3],
    pub es: u16,
    pub _pad3: [u16; 3],
    pub ds: u16,
    pub _pad4: [u16; 3],
    pub fs: u16,
    pub _pad5: [u16; 3],
    pub gs: u16,
    pub _pad6: [u16; 3],
}

bitflags! {
    /// `vcpu_guest_context.flags` (`VGCF_*`), and the `flags` word of an
    /// [`IretContext`] ([`VgcfFlags::IN_SYSCALL`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VgcfFlags: u64 {
        /// `fpu_ctxt` is valid (`VGCF_i387_valid`).
        const I387_VALID = 1 << 0;
        /// The vCPU starts in virtual kernel mode (`VGCF_in_kernel`).
        const IN_KERNEL = 1 << 2;
        /// The failsafe callback masks events (`VGCF_failsafe_disables_events`).
        const FAILSAFE_DISABLES_EVENTS = 1 << 3;
        /// The syscall callback masks events (`VGCF_syscall_disables_events`).
        const SYSCALL_DISABLES_EVENTS = 1 << 4;
        /// The vCPU is online (`VGCF_online`).
        const ONLINE = 1 << 5;
        /// `iret`: return with SYSRET (`VGCF_in_syscall`).
        const IN_SYSCALL = 1 << 8;
    }
}

/// `struct vcpu_guest_context` (x86_64, 5168 bytes).
///
/// Written by the builder (vCPU 0, through `XEN_DOMCTL_setvcpucontext`) or
/// by the guest (`VCPUOP_initialise` for a secondary vCPU); the hypervisor
/// validates it and loads it. `XEN_DOMCTL_getvcpucontext` has the hypervisor
/// write it.
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuGuestContext {
    /// FXSAVE image, used if [`VgcfFlags::I387_VALID`].
    pub fpu_ctxt: [u8; 512],
    /// [`VgcfFlags`] bits.
    pub flags: u64,
    /// General registers.
    pub user_regs: CpuUserRegs,
    /// The virtual IDT.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear address (page aligned).
    pub ldt_base: u64,
    /// LDT entries (at most 8192).
    pub ldt_ents: u64,
    /// GDT frames (MFNs).
    pub gdt_frames: [u64; 16],
    /// GDT entries.
    pub gdt_ents: u64,
    /// Kernel stack selector for user-to-kernel bounces.
    pub kernel_ss: u64,
    /// Kernel stack pointer for user-to-kernel bounces.
    pub kernel_sp: u64,
    /// CR0..CR7; `[3]` = kernel CR3 (MFN << 12), `[1]` = user CR3.
    pub ctrlreg: [u64; 8],
    /// DR0..DR7.
    pub debugreg: [u64; 8],
    /// Event callback entry.
    pub event_callback_eip: u64,
    /// Failsafe callback entry.
    pub failsafe_callback_eip: u64,
    /// 64-bit syscall callback entry.
    pub syscall_callback_eip: u64,
    /// Initial `VMASST_TYPE_*` bitmap (honoured for vCPU 0).
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// Kernel GS base (active in kernel mode).
    pub gs_base_kernel: u64,
    /// User GS base.
    pub gs_base_user: u64,
}

/// `struct iret_context` (72 bytes): the frame `iret` (#23) consumes.
///
/// The guest pushes `ss, rsp, rflags, cs, rip, flags` and jumps to the
/// `iret` stub, which pushes `rcx, r11, rax`; so at the `syscall` this
/// struct lies at `rsp`. Written by the guest, read by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct IretContext {
    pub rax: u64,
    pub r11: u64,
    pub rcx: u64,
    /// [`VgcfFlags::IN_SYSCALL`] or 0.
    pub flags: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Bit position of the saved upcall mask inside a bounce frame's `cs` slot.
/// Only bits 39:32 are the mask; bits 63:40 are unspecified.
pub const BOUNCE_SAVED_MASK_SHIFT: u32 = 32;

/// The frame the hypervisor pushes for an exception without an error code,
/// an event upcall, an NMI or the syscall callback (56 bytes, at the new
/// guest `rsp`). Written by the hypervisor; the guest handler pops `rcx`
/// and `r11` first.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct BounceFrame {
    pub rcx: u64,
    pub r11: u64,
    pub rip: u64,
    /// Interrupted CS in bits 15:0 (RPL cleared if it was kernel mode),
    /// saved upcall mask in bits 39:32.
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// As [`BounceFrame`], for exceptions that carry an error code (64 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct BounceFrameWithError {
    pub rcx: u64,
    pub r11: u64,
    /// Zero-extended error code.
    pub error_code: u64,
    pub rip: u64,
    /// As [`BounceFrame::cs`].
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// The frame for the failsafe callback (88 bytes): the hypervisor could not
/// reload a guest data segment on return.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct FailsafeFrame {
    pub rcx: u64,
    pub r11: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub rip: u64,
    /// As [`BounceFrame::cs`].
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Whether the hypervisor pushes an error code when it bounces exception
/// `vector` (#DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP, #VC, #SX).
pub const fn exception_has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

assert_layout!(TrapInfo, 16, vector = 0, flags = 1, cs = 2, address = 8);
assert_layout!(
    CpuUserRegs,
    200,
    r15 = 0,
    r14 = 8,
    r13 = 16,
    r12 = 24,
    rbp = 32,
    rbx = 40,
    r11 = 48,
    r10 = 56,
    r9 = 64,
    r8 = 72,
    rax = 80,
    rcx = 88,
    rdx = 96,
    rsi = 104,
    rdi = 112,
    error_code = 120,
    entry_vector = 124,
    rip = 128,
    cs = 136,
    saved_upcall_mask = 140,
    rflags = 144,
    rsp = 152,
    ss = 160,
    es = 168,
    ds = 176,
    fs = 184,
    gs = 192,
);
assert_layout!(
    VcpuGuestContext,
    5168,
    fpu_ctxt = 0,
    flags = 512,
    user_regs = 520,
    trap_ctxt = 720,
    ldt_base = 4816,
    ldt_ents = 4824,
    gdt_frames = 4832,
    gdt_ents = 4960,
    kernel_ss = 4968,
    kernel_sp = 4976,
    ctrlreg = 4984,
    debugreg = 5048,
    event_callback_eip = 5112,
    failsafe_callback_eip = 5120,
    syscall_callback_eip = 5128,
    vm_assist = 5136,
    fs_base = 5144,
    gs_base_kernel = 5152,
    gs_base_user = 5160,
);
assert_layout!(
    IretContext,
    72,
    rax = 0,
    r11 = 8,
    rcx = 16,
    flags = 24,
    rip = 32,
    cs = 40,
    rflags = 48,
    rsp = 56,
    ss = 64,
);
assert_layout!(
    BounceFrame,
    56,
    rcx = 0,
    r11 = 8,
    rip = 16,
    cs = 24,
    rflags = 32,
    rsp = 40,
    ss = 48
);
assert_layout!(
    BounceFrameWithError,
    64,
    rcx = 0,
    r11 = 8,
    error_code = 16,
    rip = 24,
    cs = 32,
    rflags = 40,
    rsp = 48,
    ss = 56,
);
assert_layout!(
    FailsafeFrame,
    88,
    rcx = 0,
    r11 = 8,
    ds = 16,
    es = 24,
    fs = 32,
    gs = 40,
    rip = 48,
    cs = 56,
    rflags = 64,
    rsp = 72,
    ss = 80,
);
