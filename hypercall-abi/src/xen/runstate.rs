//! `struct vcpu_runstate_info` (`vcpu.h`): where a vCPU's time went.
//!
//! Written by the hypervisor: returned by `VCPUOP_get_runstate_info`, and
//! kept current in a guest area registered with
//! `VCPUOP_register_runstate_memory_area`. Read by the guest.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Running on a physical CPU (`RUNSTATE_running`).
pub const RUNSTATE_RUNNING: i32 = 0;
/// Runnable, waiting for a physical CPU (`RUNSTATE_runnable`).
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// Blocked, e.g. in `SCHEDOP_block` (`RUNSTATE_blocked`).
pub const RUNSTATE_BLOCKED: i32 = 2;
/// Offline or paused by the toolstack (`RUNSTATE_offline`).
pub const RUNSTATE_OFFLINE: i32 = 3;

/// Bit 63 of `state_entry_time`: set while the hypervisor updates the guest
/// copy, with the `runstate_update_flag` assist (`XEN_RUNSTATE_UPDATE`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_runstate_info` (48 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// Current `RUNSTATE_*`.
    pub state: i32,
    /// Padding (zero).
    pub _pad: u32,
    /// System time (ns) when `state` was entered; bit 63 is
    /// [`XEN_RUNSTATE_UPDATE`].
    pub state_entry_time: u64,
    /// Total ns spent in each state, indexed by `RUNSTATE_*`.
    pub time: [u64; 4],
}

assert_layout!(
    VcpuRunstateInfo,
    48,
    state = 0,
    state_entry_time = 8,
    time = 16
);
