//! Optional hypervisor assists: `vm_assist` (#21) (`xen.h`).
//!
//! `vm_assist(cmd, type)` enables or disables an assist; an assist not valid
//! for the guest answers `-EINVAL`. vCPU 0's `vcpu_guest_context.vm_assist`
//! can set the initial bitmap.

subops! {
    /// `vm_assist` commands (`VMASST_CMD_*`).
    pub enum VmAssistCmd: "VMASST_CMD_" {
        /// Turn the assist on.
        0 => Enable(()) enable since 0x0000_0000;
        /// Turn the assist off.
        1 => Disable(()) disable since 0x0000_0000;
    }
}

/// Assist types (`VMASST_TYPE_*`), also bit numbers of the assist bitmap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum VmAssistType {
    /// x86/32: simulate 4 GiB segment limits.
    FourGbSegments = 0,
    /// x86/32: trap when that assist is used.
    FourGbSegmentsNotify = 1,
    /// Emulate writes to read-only L1 page tables.
    WritablePagetables = 2,
    /// Page directories above 4 GiB.
    PaeExtendedCr3 = 3,
    /// Virtual IOPL updated by `iret` and reported in bounce frames.
    ArchitecturalIopl = 4,
    /// `XEN_RUNSTATE_UPDATE` in the runstate area.
    RunstateUpdateFlag = 5,
    /// Strict M2P visibility for user page tables.
    M2pStrict = 32,
}

impl VmAssistType {
    /// The assist numbered `n`, if defined.
    pub const fn from_raw(n: u32) -> Option<VmAssistType> {
        Some(match n {
            0 => VmAssistType::FourGbSegments,
            1 => VmAssistType::FourGbSegmentsNotify,
            2 => VmAssistType::WritablePagetables,
            3 => VmAssistType::PaeExtendedCr3,
            4 => VmAssistType::ArchitecturalIopl,
            5 => VmAssistType::RunstateUpdateFlag,
            32 => VmAssistType::M2pStrict,
            _ => return None,
        })
    }

    /// The assist's bit in the assist bitmap.
    pub const fn bit(self) -> u64 {
        1 << self as u32
    }
}
