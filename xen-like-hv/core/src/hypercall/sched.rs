//! `sched_op` (#29) and `sched_op_compat` (#6): yield, block, poll, shutdown (own and
//! remote), the shutdown code and watchdogs. Waiting is recorded in [`Vcpu::wait`] and
//! reported as [`Outcome::Block`]; the hypervisor then runs something else until a
//! kick or a timer wakes the vCPU. See `docs/sched.md`.
//!
//! [`Vcpu::wait`]: crate::vcpu::Vcpu::wait

use super::{HvError, HvResult};
use crate::domain::{NR_WATCHDOGS, ShutdownReason};
use crate::evtchn::EvtchnError;
use crate::platform::Platform;
use crate::traps::{GuestCtx, Outcome};
use crate::vcpu::Wait;
use hypercall_abi::Errno;
use hypercall_abi::sched::{
    SCHEDOP_POLL_MAX_PORTS, SchedOp, SchedPoll, SchedRemoteShutdown, SchedShutdown, SchedWatchdog,
};
use hypercall_abi::types::{EvtchnPort, GuestPtr, VcpuId};

/// `SCHEDOP_shutdown` of the caller's own domain.
pub fn shutdown<P: Platform>(ctx: &mut GuestCtx<'_, P>, reason: u32) -> HvResult {
    let reason = ShutdownReason::from_raw(reason).ok_or(Errno::EINVAL)?;
    ctx.outcome = Outcome::Shutdown(reason);
    Ok(0)
}

/// `SCHEDOP_block`: enables events (clears `evtchn_upcall_mask`) and, unless an event
/// already needs delivery, waits for one.
pub fn block<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> HvResult {
    let vid = ctx.vcpu.id;
    ctx.p.set_upcall_mask(vid, 0);
    if !ctx.p.upcall_pending(vid) {
        ctx.vcpu.wait = Wait::Block;
        ctx.outcome = Outcome::Block;
    }
    Ok(0)
}

/// `SCHEDOP_poll`: returns at once if an event needs delivery, a listed port is
/// pending or the timeout has passed; otherwise waits for one of the ports (with
/// events left as they are: the guest polls with events masked).
pub fn poll<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<()>) -> HvResult {
    let req: SchedPoll = ctx.p.read_obj(arg.addr())?;
    if req.nr_ports > SCHEDOP_POLL_MAX_PORTS {
        return Err(EvtchnError::TooManyPollPorts(req.nr_ports as usize).into());
    }
    let n = req.nr_ports as usize;
    let mut raw = [0u32; SCHEDOP_POLL_MAX_PORTS as usize];
    let words = raw.get_mut(..n).ok_or(Errno::EINVAL)?;
    ctx.p
        .read_guest(req.ports.addr(), zerocopy::IntoBytes::as_mut_bytes(words))?;
    let mut ports = [EvtchnPort(0); SCHEDOP_POLL_MAX_PORTS as usize];
    for (p, &w) in ports.iter_mut().zip(words.iter()) {
        *p = EvtchnPort(w);
    }
    let ports = ports.get(..n).unwrap_or(&[]);
    if ctx.p.evtchn_poll(VcpuId(ctx.vcpu.id), ports)? {
        return Ok(0);
    }
    if req.timeout != 0 && req.timeout <= ctx.p.now_ns() {
        return Ok(0);
    }
    let single = match ports {
        [one] => Some(*one),
        _ => None,
    };
    ctx.vcpu.wait = Wait::Poll(single);
    ctx.vcpu.timers.poll_timeout = (req.timeout != 0).then_some(req.timeout);
    ctx.p.timers_changed();
    ctx.outcome = Outcome::Block;
    Ok(0)
}

/// `SCHEDOP_remote_shutdown`: the control domain shuts another domain down.
fn remote_shutdown<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<()>) -> HvResult {
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    let req: SchedRemoteShutdown = ctx.p.read_obj(arg.addr())?;
    let reason = ShutdownReason::from_raw(req.reason).ok_or(Errno::EINVAL)?;
    let target = req.domain_id;
    if target == ctx.dom.id {
        ctx.outcome = Outcome::Shutdown(reason);
        return Ok(0);
    }
    if ctx.p.remote_shutdown(target, reason) {
        Ok(0)
    } else {
        Err(Errno::ESRCH.into())
    }
}

/// `SCHEDOP_watchdog`: id 0 creates a watchdog (returns its id, 1-based; -ENOSPC when
/// both are in use); an existing id with timeout 0 destroys it, otherwise re-arms it.
/// An expired watchdog shuts the domain down with `SHUTDOWN_watchdog`.
fn watchdog<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<()>) -> HvResult {
    let req: SchedWatchdog = ctx.p.read_obj(arg.addr())?;
    let deadline = ctx
        .p
        .now_ns()
        .saturating_add(u64::from(req.timeout).saturating_mul(1_000_000_000));
    let id = req.id as usize;
    if id > NR_WATCHDOGS {
        return Err(Errno::EINVAL.into());
    }
    let slots = &mut ctx.dom.watchdogs;
    if id == 0 {
        let (i, slot) = slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_none())
            .ok_or(Errno::ENOSPC)?;
        *slot = Some(deadline);
        ctx.p.timers_changed();
        return Ok(i as u64 + 1);
    }
    let slot = slots.get_mut(id - 1).ok_or(Errno::EINVAL)?;
    if slot.is_none() {
        return Err(Errno::EINVAL.into());
    }
    *slot = (req.timeout != 0).then_some(deadline);
    ctx.p.timers_changed();
    Ok(0)
}

/// `sched_op(cmd, arg)`.
pub fn sched_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, arg: GuestPtr<()>) -> HvResult {
    match SchedOp::from_nr(cmd) {
        Some(SchedOp::Yield) => {
            ctx.outcome = Outcome::Yield;
            Ok(0)
        }
        Some(SchedOp::Block) => block(ctx),
        Some(SchedOp::Shutdown) => {
            let s: SchedShutdown = ctx.p.read_obj(arg.addr())?;
            shutdown(ctx, s.reason)
        }
        Some(SchedOp::Poll) => poll(ctx, arg),
        Some(SchedOp::RemoteShutdown) => remote_shutdown(ctx, arg),
        Some(SchedOp::ShutdownCode) => {
            let s: SchedShutdown = ctx.p.read_obj(arg.addr())?;
            let reason = ShutdownReason::from_raw(s.reason).ok_or(Errno::EINVAL)?;
            // Only the first code sticks (Xen keeps it until the domain restarts).
            ctx.dom.shutdown_code.get_or_insert(reason);
            Ok(0)
        }
        Some(SchedOp::Watchdog) => watchdog(ctx, arg),
        // Pinning to a physical CPU is for the hardware domain's power management.
        Some(SchedOp::PinOverride) if !ctx.dom.privileged => Err(HvError::NotPrivileged),
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// `sched_op_compat(cmd, arg)`: 0 yield, 1 block, 2 shutdown with reason `arg`.
pub fn sched_op_compat<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, arg: u64) -> HvResult {
    match SchedOp::from_nr(cmd) {
        Some(SchedOp::Yield) => {
            ctx.outcome = Outcome::Yield;
            Ok(0)
        }
        Some(SchedOp::Block) => block(ctx),
        Some(SchedOp::Shutdown) => shutdown(ctx, u32::try_from(arg).map_err(|_| Errno::EINVAL)?),
        _ => Err(Errno::ENOSYS.into()),
    }
}
