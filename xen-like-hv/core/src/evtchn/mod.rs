//! Event channels (`event_channel_op` #32, legacy #16) with 2-level delivery, after
//! Xen 4.17's `common/event_channel.c` and `common/event_2l.c`. See `docs/evtchn.md`.
//!
//! * [`EvtchnTable`] is one domain's port table (fixed storage, no allocation).
//! * [`EventBits`] is the guest-visible half: the pending/mask bitmaps and per-vCPU
//!   selector and upcall flags of the domain's shared_info. [`set_pending`] and
//!   [`unmask`](twolevel::unmask) are the 2-level algorithms over it; they return a
//!   [`Kick`] telling the hypervisor whom to wake.
//! * [`Domains`] hands out one or two domains' tables at once, for the operations that
//!   span domains (bind_interdomain, send, close, status, reset, destruction).
//! * [`dispatch`] runs one decoded [`EvtchnRequest`] for a [`Caller`]; the hypercall
//!   layer copies the argument in ([`EvtchnRequest::decode`] /
//!   [`EvtchnRequest::decode_compat`]) and the [`EvtchnOut`] back, and acts on the kick.
//!
//! Errors are [`EvtchnError`]s; `Errno::from` gives the errno Xen returns.

pub mod fifo;
mod ops;
mod table;
pub mod twolevel;

#[cfg(test)]
mod tests;

pub use ops::{
    DomainEvtchn, Domains, EvtchnOut, EvtchnReply, EvtchnRequest, alloc_unbound, bind_interdomain,
    close, destroy_domain, dispatch, pair_mut, reset, send, status,
};
pub use table::{EvtchnConfig, EvtchnTable, OutOfMemory, PortState, port_storage};
pub use twolevel::{EventBits, set_pending};

use core::fmt;
use hypercall_abi::Errno;
use hypercall_abi::evtchn::{EVTCHN_2L_NR_CHANNELS, NR_VIRQS, Virq};
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};

/// Ports of a 64-bit guest under the 2-level ABI (`EVTCHN_2L_NR_CHANNELS`).
pub const NR_PORTS: usize = EVTCHN_2L_NR_CHANNELS as usize;

/// vCPUs per domain the table keeps VIRQ bindings for (the legacy `vcpu_info` slots).
pub const MAX_VCPUS: usize = hypercall_abi::xen::LEGACY_MAX_VCPUS;

/// Default highest port of a domain built by libxl (`max_event_channels` = 1023).
pub const DEFAULT_DOMU_MAX_PORT: u32 = 1023;

/// No toolstack limit (dom0: `max_evtchn_port = -1`); the ABI's 4095 still applies.
pub const UNLIMITED_MAX_PORT: u32 = u32::MAX;

/// Ports come into existence in buckets of this many (Xen's `EVTCHNS_PER_BUCKET`: a
/// page of 64-byte `struct evtchn`). A port is *valid* once its bucket exists; only
/// then do `status`, `unmask`, `send`, `poll` treat it as a port at all (else -EINVAL).
pub const PORTS_PER_BUCKET: u32 = 64;

/// Whether `virq` (< `NR_VIRQS`) is global: bound once, on vCPU 0, movable. The
/// per-vCPU ones are TIMER, DEBUG, XENOPROF and XENPMU; numbers without a name are
/// global, as in Xen (x86's arch VIRQs are all global).
pub fn virq_is_global(virq: u32) -> bool {
    Virq::from_nr(virq).is_none_or(|v| !v.is_per_vcpu())
}

/// What the hypervisor must do after an event was flagged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub struct Kick {
    /// The domain the event was flagged in.
    pub dom: DomId,
    /// The port.
    pub port: EvtchnPort,
    /// `evtchn_upcall_pending` of this vCPU went from 0 to 1: kick it (wake it if it is
    /// blocked in `SCHEDOP_block`; if it runs on another CPU, interrupt it so that it
    /// sees the upcall on its way back to the guest).
    pub upcall: Option<VcpuId>,
    /// The port newly became pending: wake the domain's vCPUs blocked in
    /// `SCHEDOP_poll` on this port (or on a list of ports).
    pub pollers: bool,
}

/// Which global VIRQs a caller may bind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobalVirqPolicy {
    /// Xen 4.17: any domain may bind any global VIRQ (only the designated handler, by
    /// default the hardware domain, ever receives it).
    Any,
    /// Newer Xen: only the designated handler may bind it; others get -EBUSY. Bit `n`
    /// set = the caller is the handler of VIRQ `n` ([`GlobalVirqHandlers::handled_by`]).
    HandlerOnly(u32),
}

impl GlobalVirqPolicy {
    fn allows(self, virq: u32) -> bool {
        match self {
            GlobalVirqPolicy::Any => true,
            GlobalVirqPolicy::HandlerOnly(mask) => {
                virq < 32 && mask & (1u32.checked_shl(virq).unwrap_or(0)) != 0
            }
        }
    }
}

/// Physical-IRQ access of the caller (`bind_pirq`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqAccess {
    /// PIRQs the domain has (`d->nr_pirqs`); larger numbers are -EINVAL.
    pub nr_pirqs: u32,
    /// Whether the domain may use them (`pirq_access_permitted`); else -EPERM.
    pub permitted: bool,
}

impl PirqAccess {
    /// No physical IRQs: every `bind_pirq` fails with -EINVAL.
    pub const NONE: PirqAccess = PirqAccess {
        nr_pirqs: 0,
        permitted: false,
    };
}

/// The domain issuing an operation, with what its permissions are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its real id (never `DOMID_SELF`).
    pub dom: DomId,
    /// May act on other domains' ports (`alloc_unbound`/`status`/`reset` with a
    /// foreign `dom`): Xen's XSM `XSM_TARGET` check, i.e. the control domain.
    pub privileged: bool,
    /// Which global VIRQs it may bind.
    pub global_virqs: GlobalVirqPolicy,
    /// Its physical IRQs.
    pub pirqs: PirqAccess,
}

impl Caller {
    /// An unprivileged domain without physical IRQs, under Xen 4.17's VIRQ rule.
    pub const fn domu(dom: DomId) -> Self {
        Caller {
            dom,
            privileged: false,
            global_virqs: GlobalVirqPolicy::Any,
            pirqs: PirqAccess::NONE,
        }
    }

    /// `dom` with `DOMID_SELF` replaced by the caller's id.
    pub fn resolve(&self, dom: DomId) -> DomId {
        if dom == DomId::SELF { self.dom } else { dom }
    }
}

/// The designated receiver of each global VIRQ (Xen's `global_virq_handlers[]`, set by
/// `XEN_DOMCTL_set_virq_handler`; unset = the hardware domain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalVirqHandlers {
    handler: [Option<DomId>; NR_VIRQS as usize],
}

impl Default for GlobalVirqHandlers {
    fn default() -> Self {
        Self::new()
    }
}

impl GlobalVirqHandlers {
    /// Every global VIRQ goes to the hardware domain.
    pub const fn new() -> Self {
        GlobalVirqHandlers {
            handler: [None; NR_VIRQS as usize],
        }
    }

    /// Makes `dom` the handler of `virq`. -EINVAL for a per-vCPU or unknown number.
    pub fn set(&mut self, virq: u32, dom: DomId) -> Result<(), EvtchnError> {
        if !virq_is_global(virq) {
            return Err(EvtchnError::InvalidVirq(virq));
        }
        let slot = self
            .handler
            .get_mut(virq as usize)
            .ok_or(EvtchnError::InvalidVirq(virq))?;
        *slot = Some(dom);
        Ok(())
    }

    /// Who receives global `virq` (`None` for a per-vCPU or unknown number).
    pub fn handler(&self, virq: u32, hardware_domain: DomId) -> Option<DomId> {
        if !virq_is_global(virq) {
            return None;
        }
        let set = self.handler.get(virq as usize)?;
        Some(set.unwrap_or(hardware_domain))
    }

    /// Bit `n` set for each global VIRQ `n` that `dom` handles (for
    /// [`GlobalVirqPolicy::HandlerOnly`]).
    pub fn handled_by(&self, dom: DomId, hardware_domain: DomId) -> u32 {
        (0..NR_VIRQS)
            .filter(|&v| self.handler(v, hardware_domain) == Some(dom))
            .fold(0, |m, v| m | (1 << v))
    }

    /// Forgets `dom` as a handler (domain destruction).
    pub fn clear_domain(&mut self, dom: DomId) {
        for h in &mut self.handler {
            if *h == Some(dom) {
                *h = None;
            }
        }
    }
}

/// Why an event-channel operation was refused. `Errno::from` gives Xen's errno.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnError {
    /// No such domain (ESRCH).
    NoSuchDomain(DomId),
    /// Not a port of the domain: beyond the ports it has buckets for (EINVAL).
    InvalidPort(EvtchnPort),
    /// The port's state does not allow the operation, e.g. closing a free port,
    /// sending on a VIRQ, moving an IPI (EINVAL).
    WrongState(EvtchnPort, PortState),
    /// `bind_interdomain`: the remote port is not unbound for the caller (EINVAL).
    NotBindable(DomId, EvtchnPort),
    /// VIRQ number `>= NR_VIRQS` (EINVAL).
    InvalidVirq(u32),
    /// A global VIRQ bound on a vCPU other than 0 (EINVAL).
    GlobalVirqVcpu(VcpuId),
    /// No such vCPU (ENOENT).
    NoSuchVcpu(VcpuId),
    /// The VIRQ is already bound on that vCPU (EEXIST).
    VirqBound(u32, EvtchnPort),
    /// A global VIRQ bound by a domain that is not its handler (EBUSY).
    NotVirqHandler(u32),
    /// No free port below the domain's limit (ENOSPC).
    NoFreePort,
    /// The domain is being destroyed; no new ports (EINVAL).
    Dying(DomId),
    /// The caller may not act on that domain (EPERM).
    NotPermitted(DomId),
    /// `reset` of another domain that its controller has not paused (EINVAL).
    NotPaused(DomId),
    /// `reset_cont` without a reset in progress (EBUSY).
    NoResetInProgress,
    /// FIFO ABI operations (`init_control`, `expand_array`): not offered (EOPNOTSUPP).
    /// `init_control` gets it only once every argument has passed Xen's checks.
    FifoUnsupported,
    /// `init_control`: the control block would cross the end of its page (EINVAL).
    FifoControlOffset(u32),
    /// `init_control`: the control block's offset is not 8-byte aligned (EINVAL).
    FifoControlMisaligned(u32),
    /// `init_control`: the control frame is not the domain's, or cannot be writable
    /// memory (a page table, a descriptor page) (EINVAL).
    FifoControlFrame(u64),
    /// `init_control` passed every check the port table can make; the hypercall layer
    /// must still check this control frame ([`fifo::finish_init_control`]). Should it
    /// reach the errno conversion unchecked, it reads as the refusal (EOPNOTSUPP).
    FifoFrameUnchecked(u64),
    /// `set_priority` under the 2-level ABI (ENOSYS).
    NoPriorities,
    /// Unknown command (ENOSYS).
    UnknownOp(u32),
    /// `SCHEDOP_poll` with more than 128 ports (EINVAL).
    TooManyPollPorts(usize),
    /// PIRQ number out of range (EINVAL).
    InvalidPirq(u32),
    /// The domain may not use that PIRQ (EPERM).
    PirqNotPermitted(u32),
    /// The PIRQ is already bound (EEXIST).
    PirqBound(u32),
    /// The physical IRQ could not be bound to the new port (`pirq_guest_bind`).
    Pirq(crate::pirq::PirqError),
    /// The argument given to [`EvtchnRequest::decode`] is shorter than the op's
    /// structure (EFAULT: the hypercall layer read too little).
    ShortArgument,
    /// An interdomain port whose peer domain is gone (an inconsistency the module
    /// never creates itself; EINVAL).
    BrokenLink(DomId, EvtchnPort),
}

impl From<EvtchnError> for Errno {
    fn from(e: EvtchnError) -> Errno {
        use EvtchnError::*;
        match e {
            NoSuchDomain(_) => Errno::ESRCH,
            InvalidPort(_)
            | WrongState(..)
            | NotBindable(..)
            | InvalidVirq(_)
            | GlobalVirqVcpu(_)
            | Dying(_)
            | NotPaused(_)
            | TooManyPollPorts(_)
            | InvalidPirq(_)
            | BrokenLink(..)
            | FifoControlOffset(_)
            | FifoControlMisaligned(_)
            | FifoControlFrame(_) => Errno::EINVAL,
            NoSuchVcpu(_) => Errno::ENOENT,
            VirqBound(..) | PirqBound(_) => Errno::EEXIST,
            NotVirqHandler(_) | NoResetInProgress => Errno::EBUSY,
            NoFreePort => Errno::ENOSPC,
            NotPermitted(_) | PirqNotPermitted(_) => Errno::EPERM,
            FifoUnsupported | FifoFrameUnchecked(_) => Errno::EOPNOTSUPP,
            NoPriorities | UnknownOp(_) => Errno::ENOSYS,
            ShortArgument => Errno::EFAULT,
            Pirq(e) => e.errno(),
        }
    }
}

impl fmt::Display for EvtchnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EvtchnError::*;
        match self {
            NoSuchDomain(d) => write!(f, "no domain {}", d.0),
            InvalidPort(p) => write!(f, "port {} is not valid", p.0),
            WrongState(p, s) => write!(f, "port {} is {:?}", p.0, s),
            NotBindable(d, p) => write!(f, "port {} of domain {} is not unbound for us", p.0, d.0),
            InvalidVirq(v) => write!(f, "no VIRQ {v}"),
            GlobalVirqVcpu(v) => write!(f, "global VIRQ on vCPU {}", v.0),
            NoSuchVcpu(v) => write!(f, "no vCPU {}", v.0),
            VirqBound(v, p) => write!(f, "VIRQ {v} already bound to port {}", p.0),
            NotVirqHandler(v) => write!(f, "not the handler of VIRQ {v}"),
            NoFreePort => write!(f, "no free port"),
            Dying(d) => write!(f, "domain {} is dying", d.0),
            NotPermitted(d) => write!(f, "no permission over domain {}", d.0),
            NotPaused(d) => write!(f, "domain {} is not paused", d.0),
            NoResetInProgress => write!(f, "no reset in progress"),
            FifoUnsupported => write!(f, "FIFO event channels not supported"),
            FifoControlOffset(o) => write!(f, "FIFO control block at {o} crosses the page"),
            FifoControlMisaligned(o) => write!(f, "FIFO control block at {o} is misaligned"),
            FifoControlFrame(g) => write!(f, "frame {g:#x} cannot hold a FIFO control block"),
            FifoFrameUnchecked(g) => write!(f, "FIFO control frame {g:#x} not checked yet"),
            NoPriorities => write!(f, "2-level event channels have no priorities"),
            UnknownOp(c) => write!(f, "unknown event channel op {c}"),
            TooManyPollPorts(n) => write!(f, "poll on {n} ports"),
            InvalidPirq(p) => write!(f, "no PIRQ {p}"),
            PirqNotPermitted(p) => write!(f, "PIRQ {p} not permitted"),
            PirqBound(p) => write!(f, "PIRQ {p} already bound"),
            Pirq(e) => write!(f, "binding the IRQ: {e:?}"),
            ShortArgument => write!(f, "argument too short"),
            BrokenLink(d, p) => write!(f, "peer domain {} of port {} is gone", d.0, p.0),
        }
    }
}
