//! Scheduling and shutdown: `sched_op` (ABI digest §6.9): shutdown,
//! yield, block, poll, and the idle and wait loops built on them.

use hypercall_abi::hypercall::sched_op;
use hypercall_abi::sched::{
    SCHEDOP_POLL_MAX_PORTS, SchedOp, SchedPoll, SchedShutdown, ShutdownReason,
};
use hypercall_abi::{Errno, EvtchnPort, GuestPtr, Invoke};

use crate::evtchn;
use crate::hypercall::{handle, handle_slice, hc};

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
/// (`SCHEDOP_block`). Returns at once if one already is. Pending upcalls
/// run before it returns; events stay enabled.
pub fn block() {
    let _ = block_checked();
}

/// [`block`], with the hypercall's result.
pub fn block_checked() -> Result<(), Errno> {
    sched_op(&mut hc(), SchedOp::Block.nr(), GuestPtr::NULL).map(drop)
}

/// Idle until an event arrives: `SCHEDOP_block` (which enables events
/// atomically with going to sleep, and returns at once if an upcall is
/// already pending), run the upcalls, then restore the caller's event
/// state.
pub fn idle() {
    let was = evtchn::disable_events();
    block();
    evtchn::restore_events(was);
}

/// Wait until `done()` holds or, with `deadline_ns` (system time), until
/// the deadline passes; returns whether `done()` held. `done` is checked
/// with events masked and the vCPU blocks between checks, so an event that
/// makes it true (its handler runs in the upcall) is never missed. With a
/// deadline, the one-shot timer is armed (binding `VIRQ_TIMER` if needed)
/// with [`crate::time::arm_timer`], so it is re-armed only after a timer
/// event.
pub fn wait_until(mut done: impl FnMut() -> bool, deadline_ns: Option<u64>) -> Result<bool, Errno> {
    if deadline_ns.is_some() {
        crate::time::timer_port()?;
    }
    let was = evtchn::disable_events();
    let r = loop {
        if done() {
            break Ok(true);
        }
        if let Some(d) = deadline_ns {
            if crate::time::system_time_ns() >= d {
                break Ok(false);
            }
            if let Err(e) = crate::time::arm_timer(d) {
                break Err(e);
            }
        }
        if let Err(e) = block_checked() {
            break Err(e);
        }
        evtchn::disable_events();
    };
    evtchn::restore_events(was);
    r
}

/// `SCHEDOP_poll`: sleep until one of `ports` is pending or system time
/// `timeout_ns` passes (0: no timeout). Returns at once if a listed port is
/// already pending. Meant to be called with events masked: the ports'
/// pending bits are left for the caller. More than
/// `SCHEDOP_POLL_MAX_PORTS` ports, or a port outside the domain's port
/// space, fail with `-EINVAL`.
pub fn poll(ports: &[EvtchnPort], timeout_ns: u64) -> Result<(), Errno> {
    let nr_ports = u32::try_from(ports.len()).unwrap_or(SCHEDOP_POLL_MAX_PORTS + 1);
    let arg = SchedPoll {
        ports: handle_slice(ports),
        nr_ports,
        _pad: 0,
        timeout: timeout_ns,
    };
    sched_op(&mut hc(), SchedOp::Poll.nr(), handle(&arg).cast()).map(drop)
}
