//! Virtual CPUs: `vcpu_op` (#24) (`vcpu.h`).
//!
//! `vcpu_op(cmd, vcpuid, arg)`; a nonexistent `vcpuid` answers `-ENOENT`.
//! The runstate layout lives in [`crate::xen::runstate`] and is re-exported
//! here.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::xen::VcpuGuestContext;
pub use crate::xen::runstate::*;

subops! {
    /// `vcpu_op` commands (`VCPUOP_*`) in Xen 4.17.
    pub enum VcpuOp: "VCPUOP_" {
        /// Load the initial state of a vCPU (once).
        0 => Initialise(VcpuGuestContext) initialise since 0x0000_0000;
        /// Start an initialised vCPU.
        1 => Up(()) up since 0x0000_0000;
        /// Stop a vCPU (the last one going down powers the domain off).
        2 => Down(()) down since 0x0000_0000;
        /// Returns 1 if the vCPU is up, else 0.
        3 => IsUp(()) is_up since 0x0000_0000;
        /// Copy out the runstate.
        4 => GetRunstateInfo(VcpuRunstateInfo) get_runstate_info since 0x0000_0000;
        /// Register a guest area the hypervisor keeps the runstate in.
        5 => RegisterRunstateMemoryArea(VcpuRegisterRunstateMemoryArea)
            register_runstate_memory_area since 0x0000_0000;
        /// Start a periodic VIRQ_TIMER (period >= 1 ms).
        6 => SetPeriodicTimer(VcpuSetPeriodicTimer) set_periodic_timer since 0x0000_0000;
        /// Stop the periodic timer (PV vCPUs start with a 10 ms one).
        7 => StopPeriodicTimer(()) stop_periodic_timer since 0x0000_0000;
        /// Arm the one-shot timer (own vCPU only).
        8 => SetSingleshotTimer(VcpuSetSingleshotTimer) set_singleshot_timer since 0x0000_0000;
        /// Disarm the one-shot timer.
        9 => StopSingleshotTimer(()) stop_singleshot_timer since 0x0000_0000;
        /// Move this vCPU's `vcpu_info` to a guest frame (once).
        10 => RegisterVcpuInfo(VcpuRegisterVcpuInfo) register_vcpu_info since 0x0000_0000;
        /// Send an NMI to the vCPU.
        11 => SendNmi(()) send_nmi since 0x0000_0000;
        /// The physical CPU id (privileged).
        12 => GetPhysid(VcpuGetPhysid) get_physid since 0x0000_0000;
        /// Register a secondary `vcpu_time_info` area.
        13 => RegisterVcpuTimeMemoryArea(VcpuRegisterTimeMemoryArea)
            register_vcpu_time_memory_area since 0x0000_0000;
    }
}

/// `VCPUOP_register_runstate_memory_area` (8 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of a [`VcpuRunstateInfo`].
    pub addr: u64,
}

/// `VCPUOP_set_periodic_timer` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns (at least 1 ms).
    pub period_ns: u64,
}

/// `vcpu_set_singleshot_timer.flags`: fail with `-ETIME` if the timeout is
/// in the past (`VCPU_SSHOTTMR_future`; current Xen ignores it).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `VCPUOP_set_singleshot_timer` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time (ns).
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*` bits.
    pub flags: u32,
    /// Padding (zero).
    pub _pad: u32,
}

/// `VCPUOP_register_vcpu_info` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame holding the new `vcpu_info`.
    pub mfn: u64,
    /// Offset within the frame (the area must not cross the page).
    pub offset: u32,
    /// Reserved (zero).
    pub rsvd: u32,
}

/// `VCPUOP_get_physid` (8 bytes). Written by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuGetPhysid {
    /// APIC id in bits 31:0, ACPI id in bits 63:32.
    pub phys_id: u64,
}

/// `VCPUOP_register_vcpu_time_memory_area` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Guest virtual address of a `vcpu_time_info`.
    pub addr: u64,
}

assert_layout!(VcpuRegisterRunstateMemoryArea, 8, addr = 0);
assert_layout!(VcpuSetPeriodicTimer, 8, period_ns = 0);
assert_layout!(VcpuSetSingleshotTimer, 16, timeout_abs_ns = 0, flags = 8);
assert_layout!(VcpuRegisterVcpuInfo, 16, mfn = 0, offset = 8, rsvd = 12);
assert_layout!(VcpuGetPhysid, 8, phys_id = 0);
assert_layout!(VcpuRegisterTimeMemoryArea, 8, addr = 0);
