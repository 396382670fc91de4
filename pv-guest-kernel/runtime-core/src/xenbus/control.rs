//! The toolstack's requests to the guest under `control/` (what Linux's
//! `drivers/xen/manage.c` serves): `xl shutdown`, `xl reboot`, ... write a
//! word to `control/shutdown`; the guest clears the node (writes `""`) in
//! the transaction that read it, then shuts down with the matching reason.

use hypercall_abi::sched::ShutdownReason;

/// The node the toolstack writes (relative to the domain's home).
pub const SHUTDOWN_NODE: &str = "control/shutdown";
/// The token the runtime watches it with.
pub const SHUTDOWN_TOKEN: &str = "control/shutdown";
/// Nodes a guest writes `1` to so that the toolstack knows it may ask for
/// these (the toolstack falls back to destroying a guest without them).
pub const FEATURE_NODES: [&str; 2] = ["control/feature-poweroff", "control/feature-reboot"];

/// A request found in `control/shutdown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// `poweroff`, or `halt` (Linux powers off for both).
    Poweroff,
    /// `reboot`.
    Reboot,
    /// `suspend`.
    Suspend,
}

impl ShutdownRequest {
    /// The request a node value names; `None` for an empty value (already
    /// handled) or one this guest does not serve (left in place, as Linux
    /// does). A trailing NUL is tolerated.
    pub fn parse(value: &[u8]) -> Option<ShutdownRequest> {
        let v = value.strip_suffix(&[0]).unwrap_or(value);
        match v {
            b"poweroff" | b"halt" => Some(ShutdownRequest::Poweroff),
            b"reboot" => Some(ShutdownRequest::Reboot),
            b"suspend" => Some(ShutdownRequest::Suspend),
            _ => None,
        }
    }

    /// The `SCHEDOP_shutdown` reason.
    pub const fn reason(self) -> ShutdownReason {
        match self {
            ShutdownRequest::Poweroff => ShutdownReason::Poweroff,
            ShutdownRequest::Reboot => ShutdownReason::Reboot,
            ShutdownRequest::Suspend => ShutdownReason::Suspend,
        }
    }
}
