//! Time from the pvclock in shared_info (ABI digest §4.2, §4.3).
//!
//! [`system_time_ns`] is nanoseconds since the hypervisor booted: it reads
//! the current vCPU's `vcpu_info[n].time` with the seqlock protocol, takes the TSC inside the
//! same consistent window and scales the delta with Xen's formula. It never
//! goes backwards, even across the hypervisor's periodic recalibrations.
//! [`wallclock`] adds the `wc_*` base.
//!
//! Timers (ABI digest §6.8, §6.10) raise `VIRQ_TIMER`. [`timer_port`] binds
//! it once (lazily) to a runtime handler that counts [`timer_events`];
//! [`set_timer`] arms the one-shot timer (`set_timer_op`),
//! [`set_singleshot_timer`] does the same with `VCPUOP_set_singleshot_timer`,
//! and [`set_periodic_timer`] / [`stop_periodic_timer`] control the periodic
//! tick (a PV vCPU starts with a 10 ms one). [`sleep`] and [`sleep_until`]
//! block (`SCHEDOP_block`) until the pvclock says the deadline passed,
//! re-arming the timer after any early wakeup.
//!
//! With secondary vCPUs ([`crate::smp`]) every timer, `VIRQ_TIMER` port,
//! armed deadline and event count is per vCPU: each call acts on the vCPU
//! it runs on.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::evtchn::Virq;
use hypercall_abi::hypercall::{set_timer_op, vcpu_op};
use hypercall_abi::vcpu::{VcpuOp, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
use hypercall_abi::xen::VcpuTimeInfo;
use hypercall_abi::{Errno, EvtchnPort, GuestPtr, VcpuId};
use pv_runtime_core::events::{deadline_after, expired, timer_op_arg};
use pv_runtime_core::smp::MAX_VCPUS;
use pv_runtime_core::time::{WallClock, seqlock_read};
use spin::Mutex;

use crate::evtchn::{self, Handler};
use crate::hypercall::{handle, hc};
use crate::{sched, shared};

static LAST: AtomicU64 = AtomicU64::new(0);
static BEHIND: AtomicU64 = AtomicU64::new(0);

/// How often [`system_time_ns`] read a TSC behind its pvclock snapshot's
/// stamp (and counted no time past the stamp).
pub fn tsc_behind_count() -> u64 {
    BEHIND.load(Ordering::Relaxed)
}

fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no memory effects; PV guests may execute it.
    #[allow(unused_unsafe)]
    unsafe {
        _rdtsc()
    }
}

/// A consistent snapshot of the current vCPU's `vcpu_time_info` and the
/// TSC read inside it.
pub fn snapshot() -> (VcpuTimeInfo, u64) {
    let vcpu = crate::smp::index();
    seqlock_read(
        || shared::vcpu_time_version(vcpu),
        || (shared::vcpu_time(vcpu), rdtsc()),
    )
}

/// Monotonic nanoseconds since the hypervisor booted (0 before shared_info
/// is mapped).
pub fn system_time_ns() -> u64 {
    if !shared::is_mapped() {
        return 0;
    }
    let (t, tsc) = snapshot();
    // A TSC read behind the snapshot's stamp (another CPU's clock, with
    // several vCPUs) would wrap the delta into centuries and poison LAST:
    // count no time past the stamp instead.
    let now = if tsc < t.tsc_timestamp {
        BEHIND.fetch_add(1, Ordering::Relaxed);
        t.system_time
    } else {
        t.system_time_at(tsc)
    };
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// The TSC frequency implied by the pvclock scale, in Hz.
pub fn tsc_hz() -> Option<u64> {
    let (t, _) = snapshot();
    if t.tsc_to_system_mul == 0 {
        return None;
    }
    let hz = (1_000_000_000u64 << 32) / u64::from(t.tsc_to_system_mul);
    let shift = u32::from(t.tsc_shift.unsigned_abs());
    Some(if t.tsc_shift >= 0 {
        hz >> shift
    } else {
        hz << shift
    })
}

/// The wall clock now.
pub fn wallclock() -> WallClock {
    let (_, sec, sec_hi, nsec) = seqlock_read(shared::wc_version, shared::wallclock_fields);
    WallClock::from_shared_info(sec, sec_hi, nsec, system_time_ns())
}

/// Arm the one-shot timer (`set_timer_op`): `VIRQ_TIMER` fires at system
/// time `deadline_ns` (at once if it has passed); 0 cancels.
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    let arg = if deadline_ns == 0 {
        0
    } else {
        timer_op_arg(deadline_ns)
    };
    // Recorded before the call, so an expiry delivered as the call returns
    // clears it.
    armed().store(deadline_ns, Ordering::SeqCst);
    set_timer_op(&mut hc(), arg).map(drop).inspect_err(|_| {
        armed().store(0, Ordering::SeqCst);
    })
}

/// Arm the one-shot timer at `deadline_ns` unless it is already armed there
/// and no `VIRQ_TIMER` event has arrived since (any timer event counts as
/// possibly this one, so it is then re-armed): saves a hypercall per wait in
/// loops that wait for the same deadline again and again.
pub fn arm_timer(deadline_ns: u64) -> Result<(), Errno> {
    if deadline_ns != 0 && armed().load(Ordering::SeqCst) == deadline_ns {
        return Ok(());
    }
    set_timer(deadline_ns)
}

/// Cancel the one-shot timer (`set_timer_op(0)`).
pub fn cancel_timer() -> Result<(), Errno> {
    set_timer(0)
}

/// Arm the one-shot timer with `VCPUOP_set_singleshot_timer` (this vCPU,
/// no flags): `VIRQ_TIMER` at `deadline_ns`.
pub fn set_singleshot_timer(deadline_ns: u64) -> Result<(), Errno> {
    let arg = VcpuSetSingleshotTimer {
        timeout_abs_ns: deadline_ns,
        flags: 0,
        _pad: 0,
    };
    armed().store(deadline_ns, Ordering::SeqCst);
    vcpu_op(
        &mut hc(),
        VcpuOp::SetSingleshotTimer.nr(),
        crate::smp::current(),
        handle(&arg).cast(),
    )
    .map(drop)
    .inspect_err(|_| armed().store(0, Ordering::SeqCst))
}

/// Disarm the one-shot timer (`VCPUOP_stop_singleshot_timer`).
pub fn stop_singleshot_timer() -> Result<(), Errno> {
    vcpu_op(
        &mut hc(),
        VcpuOp::StopSingleshotTimer.nr(),
        crate::smp::current(),
        GuestPtr::NULL,
    )
    .map(drop)
}

/// Start a periodic `VIRQ_TIMER` every `period_ns` (at least 1 ms, else
/// `-EINVAL`) with `VCPUOP_set_periodic_timer`.
pub fn set_periodic_timer(period_ns: u64) -> Result<(), Errno> {
    let arg = VcpuSetPeriodicTimer { period_ns };
    vcpu_op(
        &mut hc(),
        VcpuOp::SetPeriodicTimer.nr(),
        crate::smp::current(),
        handle(&arg).cast(),
    )
    .map(drop)
}

/// Stop the periodic tick (`VCPUOP_stop_periodic_timer`), including the
/// 10 ms one a PV vCPU starts with.
pub fn stop_periodic_timer() -> Result<(), Errno> {
    vcpu_op(
        &mut hc(),
        VcpuOp::StopPeriodicTimer.nr(),
        crate::smp::current(),
        GuestPtr::NULL,
    )
    .map(drop)
}

/// The runtime's `VIRQ_TIMER` port (0 = not bound yet).
static TIMER_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static TIMER_BIND: Mutex<()> = Mutex::new(());
static TIMER_EVENTS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// The one-shot deadline last armed, 0 once any timer event arrived.
static ARMED: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

fn armed() -> &'static AtomicU64 {
    &ARMED[crate::smp::index()]
}
static TICK_HOOK: Mutex<Option<fn()>> = Mutex::new(None);

fn on_timer(_port: EvtchnPort) {
    TIMER_EVENTS[crate::smp::index()].fetch_add(1, Ordering::SeqCst);
    armed().store(0, Ordering::SeqCst);
    if let Some(hook) = TICK_HOOK.try_lock().and_then(|h| *h) {
        hook();
    }
}

/// The port `VIRQ_TIMER` of the current vCPU is bound to, binding it and installing
/// the runtime's handler on first use. Fails with `bind_virq`'s error
/// (`-EEXIST` if the guest bound `VIRQ_TIMER` itself and still holds it).
pub fn timer_port() -> Result<EvtchnPort, Errno> {
    let _guard = TIMER_BIND.lock();
    let slot = &TIMER_PORT[crate::smp::index()];
    let cached = slot.load(Ordering::SeqCst);
    if cached != 0 {
        return Ok(EvtchnPort(cached));
    }
    let port = evtchn::bind_virq(Virq::Timer, crate::smp::current())?;
    if evtchn::set_handler(port, Handler::Fn(on_timer)).is_err() {
        let _ = evtchn::close(port);
        return Err(Errno::ENOSPC);
    }
    slot.store(port.0, Ordering::SeqCst);
    Ok(port)
}

/// Close the runtime's `VIRQ_TIMER` port, if bound.
pub fn release_timer_port() -> Result<(), Errno> {
    let _guard = TIMER_BIND.lock();
    match TIMER_PORT[crate::smp::index()].swap(0, Ordering::SeqCst) {
        0 => Ok(()),
        p => evtchn::close(EvtchnPort(p)),
    }
}

/// `VIRQ_TIMER` events the runtime's handler has seen (one-shot and
/// periodic alike; coalesced events count once).
pub fn timer_events() -> u64 {
    timer_events_of(crate::smp::current())
}

/// `VIRQ_TIMER` events the runtime's handler has seen on `vcpu`.
pub fn timer_events_of(vcpu: VcpuId) -> u64 {
    usize::try_from(vcpu.0)
        .ok()
        .and_then(|v| TIMER_EVENTS.get(v))
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// Also call `hook` (in the upcall, events masked) on every `VIRQ_TIMER`
/// event; `None` removes it.
pub fn set_tick_hook(hook: Option<fn()>) {
    evtchn::without_events(|| *TICK_HOOK.lock() = hook);
}

/// Sleep until system time `deadline_ns`: bind `VIRQ_TIMER` if needed, then
/// loop { arm `set_timer_op(deadline)` ([`arm_timer`]), `SCHEDOP_block` } until the pvclock
/// says the deadline passed (other events and early timer expiry wake the
/// loop, which just blocks again). Events are masked while checking the
/// clock, so an expiry between the check and the block is never lost (Xen's
/// block returns at once if an event is pending); the upcalls run during the
/// block. The previous event state is restored; the one-shot timer is left
/// expired.
pub fn sleep_until(deadline_ns: u64) -> Result<(), Errno> {
    timer_port()?;
    let was = evtchn::disable_events();
    let r = loop {
        if expired(system_time_ns(), deadline_ns) {
            break Ok(());
        }
        if let Err(e) = arm_timer(deadline_ns) {
            break Err(e);
        }
        if let Err(e) = sched::block_checked() {
            break Err(e);
        }
        evtchn::disable_events();
    };
    evtchn::restore_events(was);
    r
}

/// Sleep for `ns` nanoseconds of system time (see [`sleep_until`]).
pub fn sleep(ns: u64) -> Result<(), Errno> {
    sleep_until(deadline_after(system_time_ns(), ns))
}
