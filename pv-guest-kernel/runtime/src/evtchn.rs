//! Event channels (`event_channel_op`, ABI digest §7): the operations, the
//! virtual interrupt flag, and the event upcall's 2-level demultiplexer with
//! per-port handlers.
//!
//! # Delivery
//!
//! Xen bounces to the event callback ([`crate::traps`] registers it) with
//! `evtchn_upcall_mask` set. Unless the guest replaced the callback's
//! handler ([`crate::traps::set_callback_handler`]), the upcall runs
//! [`dispatch`]: clear `evtchn_upcall_pending`, exchange
//! `evtchn_pending_sel` with 0, and for each selected word take
//! `pending & !mask`; for each such port (lowest first) clear its pending
//! bit and call its handler (ports without one are just acknowledged);
//! repeat until the selector stays empty. The upcall returns through the
//! `iret` hypercall, which restores the interrupted upcall mask; Xen checks
//! for pending events on that exit and bounces again if needed.
//!
//! # Handlers
//!
//! [`set_handler`] registers a [`Handler`] per port in a fixed table of
//! [`HANDLER_SLOTS`] entries (no heap). Handlers run in the upcall, with
//! events masked, on the interrupted stack: keep them short, and do not
//! take locks the interrupted code may hold. [`close`] removes the port's
//! handler.
//!
//! # Virtual interrupt flag
//!
//! [`disable_events`] sets the current vCPU's `evtchn_upcall_mask` and returns
//! whether events were enabled; [`restore_events`] puts that back;
//! [`enable_events`] clears the mask and, if an upcall became pending
//! meanwhile, makes a hypercall so Xen delivers it at once.

use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOp, EvtchnSend, EvtchnSetPriority,
    EvtchnStat, EvtchnStatus, EvtchnUnmask, Virq,
};
use hypercall_abi::hypercall::{event_channel_op, xen_version};
use hypercall_abi::version::XenVer;
use hypercall_abi::xen::shared_info::EVTCHN_WORDS;
use hypercall_abi::{DomId, Errno, EvtchnPort, GuestPtr, Mfn, VcpuId};
use pv_runtime_core::events::{HandlerTable, demux, port_word_mask};
use pv_runtime_core::smp::PortVcpus;
use spin::RwLock;

pub use pv_runtime_core::events::{NR_PORTS, TableError};

use crate::hypercall::{handle, handle_mut, hc};
use crate::shared;

/// What runs when a port fires.
#[derive(Clone, Copy)]
pub enum Handler {
    /// A plain function, given the port.
    Fn(fn(EvtchnPort)),
    /// A shared object (a closure in a `static`, or a `&'static` trait
    /// object), given the port.
    Dyn(&'static (dyn Fn(EvtchnPort) + Sync)),
}

impl core::fmt::Debug for Handler {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Handler::Fn(h) => write!(f, "Handler::Fn({:p})", *h as *const ()),
            Handler::Dyn(_) => f.write_str("Handler::Dyn(..)"),
        }
    }
}

impl Handler {
    fn call(self, port: EvtchnPort) {
        match self {
            Handler::Fn(f) => f(port),
            Handler::Dyn(f) => f(port),
        }
    }
}

/// How many ports may have a handler at once.
pub const HANDLER_SLOTS: usize = 128;

/// Read by every vCPU's upcall at once (a reader never waits for another,
/// so a reader Xen preempts holds up nobody); written with events masked.
static HANDLERS: RwLock<HandlerTable<Handler, HANDLER_SLOTS>> = RwLock::new(HandlerTable::new());
static DELIVERED: AtomicU64 = AtomicU64::new(0);
/// Which vCPU each port notifies (for the per-vCPU upcall).
static PORT_VCPUS: PortVcpus = PortVcpus::new();
static UNHANDLED: AtomicU64 = AtomicU64::new(0);

fn op<T>(cmd: EvtchnOp, arg: &mut T) -> Result<(), Errno> {
    event_channel_op(&mut hc(), cmd.nr(), handle_mut(arg).cast()).map(drop)
}

/// Allocate an unbound port in this domain that domain `remote` may bind
/// to (`DomId::SELF` for a loopback).
pub fn alloc_unbound(remote: DomId) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: remote,
        port: EvtchnPort(0),
    };
    op(EvtchnOp::AllocUnbound, &mut arg)?;
    Ok(arg.port)
}

/// Connect a new local port to `remote_port`, an unbound port of
/// `remote_dom` (`DomId::SELF` for a loopback) that accepts this domain.
/// Xen sets the new local port pending.
pub fn bind_interdomain(remote_dom: DomId, remote_port: EvtchnPort) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnBindInterdomain {
        remote_dom,
        _pad: 0,
        remote_port,
        local_port: EvtchnPort(0),
    };
    op(EvtchnOp::BindInterdomain, &mut arg)?;
    Ok(arg.local_port)
}

/// Bind physical IRQ `pirq` (mapped with `physdev::map_pirq_gsi`) to a new
/// port on vCPU 0; `share`: others may bind the IRQ too (`BIND_PIRQ__WILL_SHARE`).
pub fn bind_pirq(pirq: u32, share: bool) -> Result<EvtchnPort, Errno> {
    let mut arg = hypercall_abi::evtchn::EvtchnBindPirq {
        pirq,
        flags: if share {
            hypercall_abi::evtchn::BIND_PIRQ_WILL_SHARE
        } else {
            0
        },
        port: EvtchnPort(0),
    };
    op(EvtchnOp::BindPirq, &mut arg)?;
    Ok(arg.port)
}

/// Bind `virq` on `vcpu` to a new port.
pub fn bind_virq(virq: Virq, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnBindVirq {
        virq: virq as u32,
        vcpu,
        port: EvtchnPort(0),
    };
    op(EvtchnOp::BindVirq, &mut arg)?;
    PORT_VCPUS.set(arg.port.0, vcpu.0);
    Ok(arg.port)
}

/// A new inter-vCPU port that notifies `vcpu` (sending on it raises it on
/// that vCPU).
pub fn bind_ipi(vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnBindIpi {
        vcpu,
        port: EvtchnPort(0),
    };
    op(EvtchnOp::BindIpi, &mut arg)?;
    PORT_VCPUS.set(arg.port.0, vcpu.0);
    Ok(arg.port)
}

/// Notify the other end of `port` (an interdomain peer, or this domain's
/// own IPI port).
pub fn send(port: EvtchnPort) -> Result<(), Errno> {
    let arg = EvtchnSend { port };
    event_channel_op(&mut hc(), EvtchnOp::Send.nr(), handle(&arg).cast()).map(drop)
}

/// Close a port; on success its handler is removed too.
pub fn close(port: EvtchnPort) -> Result<(), Errno> {
    let arg = EvtchnClose { port };
    event_channel_op(&mut hc(), EvtchnOp::Close.nr(), handle(&arg).cast())?;
    clear_handler(port);
    PORT_VCPUS.set(port.0, 0);
    Ok(())
}

/// `EVTCHNOP_bind_vcpu`: from now on `port` (an interdomain, unbound or
/// global-VIRQ port) notifies `vcpu`, whose upcall runs its handler. Xen
/// refuses IPI and per-vCPU VIRQ ports (`-EINVAL`).
pub fn bind_vcpu(port: EvtchnPort, vcpu: VcpuId) -> Result<(), Errno> {
    let arg = EvtchnBindVcpu { port, vcpu };
    event_channel_op(&mut hc(), EvtchnOp::BindVcpu.nr(), handle(&arg).cast())?;
    PORT_VCPUS.set(port.0, vcpu.0);
    Ok(())
}

/// The vCPU `port` notifies, as this runtime bound it (0 unless bound by
/// [`bind_ipi`], [`bind_virq`] or [`bind_vcpu`]).
pub fn port_vcpu(port: EvtchnPort) -> VcpuId {
    VcpuId(PORT_VCPUS.get(port.0))
}

/// The status of one of this domain's ports.
pub fn status(port: EvtchnPort) -> Result<EvtchnStatus, Errno> {
    let mut arg = EvtchnStatus {
        dom: DomId::SELF,
        port,
        ..EvtchnStatus::default()
    };
    op(EvtchnOp::Status, &mut arg)?;
    Ok(arg)
}

/// The state of `port` (`EVTCHNSTAT_*`) as an enum, from [`status`].
pub fn state(port: EvtchnPort) -> Result<EvtchnStat, Errno> {
    let s = status(port)?;
    Ok(match s.status {
        1 => EvtchnStat::Unbound,
        2 => EvtchnStat::Interdomain,
        3 => EvtchnStat::Pirq,
        4 => EvtchnStat::Virq,
        5 => EvtchnStat::Ipi,
        _ => EvtchnStat::Closed,
    })
}

/// Set `port`'s mask bit: it stays pending but raises no upcall.
pub fn mask(port: EvtchnPort) {
    if let Some((w, bit)) = port_word_mask(port.0) {
        shared::evtchn_mask(w).fetch_or(bit, Ordering::SeqCst);
    }
}

/// Unmask `port` with `EVTCHNOP_unmask`: Xen clears the mask bit and, if
/// the port is pending, raises the upcall, so an event that arrived while
/// masked is delivered (clearing the bit locally would lose it).
pub fn unmask(port: EvtchnPort) -> Result<(), Errno> {
    let arg = EvtchnUnmask { port };
    event_channel_op(&mut hc(), EvtchnOp::Unmask.nr(), handle(&arg).cast()).map(drop)
}

/// `EVTCHNOP_init_control` (FIFO ABI): register the control block of
/// `vcpu` at `offset` in frame `control`; returns the event link's width.
/// Success switches the domain to FIFO delivery, which this runtime does
/// not speak (it demultiplexes the 2-level bitmaps only): meant for tests
/// of the call itself.
pub fn init_control(control: Mfn, offset: u32, vcpu: VcpuId) -> Result<u8, Errno> {
    let mut arg = EvtchnInitControl {
        control_gfn: control.0,
        offset,
        vcpu,
        ..Default::default()
    };
    op(EvtchnOp::InitControl, &mut arg)?;
    Ok(arg.link_bits)
}

/// `EVTCHNOP_expand_array` (FIFO ABI): add frame `array` to the event array.
pub fn expand_array(array: Mfn) -> Result<(), Errno> {
    let arg = EvtchnExpandArray { array_gfn: array.0 };
    event_channel_op(&mut hc(), EvtchnOp::ExpandArray.nr(), handle(&arg).cast()).map(drop)
}

/// `EVTCHNOP_set_priority` (FIFO ABI): `port`'s queue, 0 (highest) to 15.
pub fn set_priority(port: EvtchnPort, priority: u32) -> Result<(), Errno> {
    let arg = EvtchnSetPriority { port, priority };
    event_channel_op(&mut hc(), EvtchnOp::SetPriority.nr(), handle(&arg).cast()).map(drop)
}

/// Whether `port`'s mask bit is set.
pub fn is_masked(port: EvtchnPort) -> bool {
    port_word_mask(port.0)
        .is_some_and(|(w, bit)| shared::evtchn_mask(w).load(Ordering::SeqCst) & bit != 0)
}

/// Whether `port`'s pending bit is set.
pub fn is_pending(port: EvtchnPort) -> bool {
    port_word_mask(port.0)
        .is_some_and(|(w, bit)| shared::evtchn_pending(w).load(Ordering::SeqCst) & bit != 0)
}

/// Clear `port`'s pending bit; returns whether it was set.
pub fn clear_pending(port: EvtchnPort) -> bool {
    port_word_mask(port.0).is_some_and(|(w, bit)| {
        shared::evtchn_pending(w).fetch_and(!bit, Ordering::SeqCst) & bit != 0
    })
}

/// Run `f` with events disabled, restoring the previous state after.
pub fn without_events<R>(f: impl FnOnce() -> R) -> R {
    let was = disable_events();
    let r = f();
    restore_events(was);
    r
}

/// Handle events on `port` with `handler` (replacing and returning any
/// previous one).
pub fn set_handler(port: EvtchnPort, handler: Handler) -> Result<Option<Handler>, TableError> {
    // Events are off while the table is locked, so the upcall (same vCPU)
    // never finds it locked.
    without_events(|| HANDLERS.write().set(port.0, handler))
}

/// Remove `port`'s handler, returning it.
pub fn clear_handler(port: EvtchnPort) -> Option<Handler> {
    without_events(|| HANDLERS.write().remove(port.0))
}

/// Whether events are enabled (`evtchn_upcall_mask` clear).
pub fn events_enabled() -> bool {
    shared::upcall_mask(crate::smp::index()) == 0
}

/// Mask event delivery (the virtual `cli`); returns whether events were
/// enabled before.
pub fn disable_events() -> bool {
    let vcpu = crate::smp::index();
    let was = shared::upcall_mask(vcpu) == 0;
    shared::set_upcall_mask(vcpu, 1);
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    was
}

/// Unmask event delivery (the virtual `sti`). An upcall that became
/// pending while masked is delivered before this returns: Xen checks on
/// the way out of any hypercall, so one cheap hypercall forces it (as
/// Linux's `xen_force_evtchn_callback`).
pub fn enable_events() {
    let vcpu = crate::smp::index();
    core::sync::atomic::compiler_fence(Ordering::SeqCst);
    shared::set_upcall_mask(vcpu, 0);
    core::sync::atomic::fence(Ordering::SeqCst);
    if shared::upcall_pending(vcpu) != 0 {
        force_callback();
    }
}

/// Re-enable events if `was_enabled` (what [`disable_events`] returned).
pub fn restore_events(was_enabled: bool) {
    if was_enabled {
        enable_events();
    } else {
        shared::set_upcall_mask(crate::smp::index(), 1);
    }
}

/// Make a no-op hypercall so Xen delivers a pending upcall on its way back.
fn force_callback() {
    let _ = xen_version(&mut hc(), XenVer::Version.nr(), GuestPtr::NULL);
}

/// Ports whose events the upcall has handled (handler called) and
/// acknowledged without a handler, since boot.
pub fn counters() -> (u64, u64) {
    (
        DELIVERED.load(Ordering::Relaxed),
        UNHANDLED.load(Ordering::Relaxed),
    )
}

/// The default event upcall: demultiplex the 2-level bitmaps for the
/// current vCPU (its `evtchn_pending_sel`; with secondary vCPUs running,
/// only the ports bound to it) and run each pending, unmasked port's
/// handler (see the module documentation). Call it from a replacement
/// event callback to keep the per-port handlers working.
pub fn dispatch() {
    let vcpu_id = crate::smp::current().0;
    let vcpu = crate::smp::index();
    let smp = crate::smp::active();
    loop {
        shared::clear_upcall_pending(vcpu);
        let sel = shared::pending_sel(vcpu).swap(0, Ordering::AcqRel);
        if sel == 0 {
            break;
        }
        demux(
            sel,
            |w| {
                if w >= EVTCHN_WORDS {
                    return 0;
                }
                let mine = if smp {
                    PORT_VCPUS.word_bits(w, vcpu_id)
                } else {
                    u64::MAX
                };
                shared::evtchn_pending(w).load(Ordering::Acquire)
                    & !shared::evtchn_mask(w).load(Ordering::Acquire)
                    & mine
            },
            |port| {
                let port = EvtchnPort(port);
                if !clear_pending(port) {
                    return;
                }
                // Registration writes only with events masked, so this
                // vCPU's upcall never finds it held by its own vCPU; other
                // upcalls only read.
                let handler = HANDLERS.read().get(port.0);
                match handler {
                    Some(h) => {
                        DELIVERED.fetch_add(1, Ordering::Relaxed);
                        h.call(port);
                    }
                    None => {
                        UNHANDLED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            },
        );
    }
}

/// Acknowledge everything pending on the current vCPU without running
/// handlers: clear its `evtchn_upcall_pending`, its selector, and every
/// pending port that is not masked.
pub fn acknowledge_all() {
    let vcpu = crate::smp::index();
    shared::clear_upcall_pending(vcpu);
    let sel = shared::pending_sel(vcpu).swap(0, Ordering::AcqRel);
    for word in (0..EVTCHN_WORDS).filter(|w| sel & (1 << w) != 0) {
        let mask = shared::evtchn_mask(word).load(Ordering::Acquire);
        shared::evtchn_pending(word).fetch_and(mask, Ordering::AcqRel);
    }
}
