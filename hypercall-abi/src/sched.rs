//! Scheduling: `sched_op` (#29) and the legacy `sched_op_compat` (#6)
//! (`sched.h`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, EvtchnPort, GuestPtr};

subops! {
    /// `sched_op` commands (`SCHEDOP_*`). `sched_op_compat` accepts the
    /// first three with an integer argument instead of a struct.
    pub enum SchedOp: "SCHEDOP_" {
        /// Give up the CPU (no argument).
        0 => Yield(()) r#yield since 0x0000_0000;
        /// Clear `evtchn_upcall_mask` and sleep until an event is pending.
        1 => Block(()) block since 0x0000_0000;
        /// Stop the whole domain with a reason.
        2 => Shutdown(SchedShutdown) shutdown since 0x0000_0000;
        /// Sleep until a listed port is pending or the timeout passes.
        3 => Poll(SchedPoll) poll since 0x0000_0000;
        /// Shut another domain down (privileged).
        4 => RemoteShutdown(SchedRemoteShutdown) remote_shutdown since 0x0000_0000;
        /// Latch a reason for a later shutdown.
        5 => ShutdownCode(SchedShutdown) shutdown_code since 0x0000_0000;
        /// Create, refresh or destroy a watchdog.
        6 => Watchdog(SchedWatchdog) watchdog since 0x0000_0000;
        /// Pin to a physical CPU (hardware domain only).
        7 => PinOverride(SchedPinOverride) pin_override since 0x0000_0000;
    }
}

/// Shutdown reasons (`SHUTDOWN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// Exited normally: clean up and destroy.
    Poweroff = 0,
    /// Clean up, destroy and restart.
    Reboot = 1,
    /// Clean up and save suspend information.
    Suspend = 2,
    /// The guest crashed.
    Crash = 3,
    /// The watchdog expired.
    Watchdog = 4,
    /// Soft reset: keep the domain, reset its state.
    SoftReset = 5,
}

impl ShutdownReason {
    /// The reason numbered `n`, if defined (`n <= SHUTDOWN_MAX`).
    pub const fn from_raw(n: u32) -> Option<ShutdownReason> {
        Some(match n {
            0 => ShutdownReason::Poweroff,
            1 => ShutdownReason::Reboot,
            2 => ShutdownReason::Suspend,
            3 => ShutdownReason::Crash,
            4 => ShutdownReason::Watchdog,
            5 => ShutdownReason::SoftReset,
            _ => return None,
        })
    }
}

/// Highest defined shutdown reason (`SHUTDOWN_MAX`).
pub const SHUTDOWN_MAX: u32 = 5;

/// Most ports `SCHEDOP_poll` accepts.
pub const SCHEDOP_POLL_MAX_PORTS: u32 = 128;

/// `SCHEDOP_shutdown` / `SCHEDOP_shutdown_code` (4 bytes). Written by the
/// guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedShutdown {
    /// A [`ShutdownReason`].
    pub reason: u32,
}

/// `SCHEDOP_poll` (24 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedPoll {
    /// Array of ports to wait on.
    pub ports: GuestPtr<EvtchnPort>,
    /// Number of ports (at most [`SCHEDOP_POLL_MAX_PORTS`]).
    pub nr_ports: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// Absolute system time (ns) to give up at; 0 = never.
    pub timeout: u64,
}

/// `SCHEDOP_remote_shutdown` (8 bytes). Written by the privileged caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// The domain to shut down.
    pub domain_id: DomId,
    /// Padding (zero).
    pub _pad: u16,
    /// A [`ShutdownReason`].
    pub reason: u32,
}

/// `SCHEDOP_watchdog` (8 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedWatchdog {
    /// 0 creates a watchdog (its id is returned); otherwise the watchdog.
    pub id: u32,
    /// Seconds until expiry; 0 destroys the watchdog.
    pub timeout: u32,
}

/// `SCHEDOP_pin_override` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SchedPinOverride {
    /// Physical CPU, or negative to undo.
    pub pcpu: i32,
}

assert_layout!(SchedShutdown, 4, reason = 0);
assert_layout!(SchedPoll, 24, ports = 0, nr_ports = 8, timeout = 16);
assert_layout!(SchedRemoteShutdown, 8, domain_id = 0, reason = 4);
assert_layout!(SchedWatchdog, 8, id = 0, timeout = 4);
assert_layout!(SchedPinOverride, 4, pcpu = 0);
