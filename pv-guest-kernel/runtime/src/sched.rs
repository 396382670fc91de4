//! Scheduling and shutdown: `sched_op` (ABI digest §6.9).

use hypercall_abi::hypercall::sched_op;
use hypercall_abi::sched::{SchedOp, SchedShutdown, ShutdownReason};
use hypercall_abi::{Errno, GuestPtr, Invoke};

use crate::hypercall::hc;

/// Ask the hypervisor to shut the domain down for `reason`, through `inv`.
pub(crate) fn request_with<I: Invoke>(inv: &mut I, reason: ShutdownReason) -> Result<u64, Errno> {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    sched_op(
        inv,
        SchedOp::Shutdown.nr(),
        crate::hypercall::handle(&arg).cast(),
    )
}

/// Ask for a shutdown with `reason` and return the hypercall's result. On
/// success the hypervisor normally never runs the vCPU again, so this
/// returns only on failure (or after a cancelled suspend).
pub fn request_shutdown(reason: ShutdownReason) -> Result<u64, Errno> {
    request_with(&mut hc(), reason)
}

/// Shut the domain down with `reason`; never returns.
pub fn shutdown(reason: ShutdownReason) -> ! {
    loop {
        let _ = request_shutdown(reason);
        yield_now();
    }
}

/// Power off: the domain exits normally (`SHUTDOWN_poweroff`).
pub fn poweroff() -> ! {
    shutdown(ShutdownReason::Poweroff)
}

/// Reboot (`SHUTDOWN_reboot`).
pub fn reboot() -> ! {
    shutdown(ShutdownReason::Reboot)
}

/// Report a crash (`SHUTDOWN_crash`).
pub fn crash() -> ! {
    shutdown(ShutdownReason::Crash)
}

/// Give up the CPU (`SCHEDOP_yield`).
pub fn yield_now() {
    let _ = sched_op(&mut hc(), SchedOp::Yield.nr(), GuestPtr::NULL);
}

/// Enable event delivery and sleep until an event is pending
/// (`SCHEDOP_block`).
pub fn block() {
    let _ = sched_op(&mut hc(), SchedOp::Block.nr(), GuestPtr::NULL);
}
