//! One domain's port table and the operations that touch only that domain.

use super::twolevel::{self, EventBits};
use super::{
    Caller, EvtchnError, GlobalVirqPolicy, Kick, MAX_VCPUS, NR_PORTS, PORTS_PER_BUCKET,
    virq_is_global,
};
use alloc::vec::Vec;
use core::fmt;
use hypercall_abi::evtchn::{
    EVTCHN_2L_NR_CHANNELS, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnSetPriority, EvtchnStat, EvtchnStatus, EvtchnUnmask, NR_VIRQS,
};
use hypercall_abi::sched::SCHEDOP_POLL_MAX_PORTS;
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};

const NR_VIRQ_SLOTS: usize = NR_VIRQS as usize;

/// What a port is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortState {
    /// Not in use (reported as closed).
    Free,
    /// Never usable: port 0 (reported as closed).
    Reserved,
    /// Allocated; domain `remote` may connect to it with `bind_interdomain`.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `port` of domain `remote` (possibly this domain: loopback).
    Interdomain {
        /// The peer domain.
        remote: DomId,
        /// The peer's port, whose state names this port back.
        port: EvtchnPort,
    },
    /// Bound to a physical IRQ.
    Pirq {
        /// The PIRQ.
        pirq: u32,
    },
    /// Bound to a virtual IRQ.
    Virq {
        /// The VIRQ number (< `NR_VIRQS`).
        virq: u32,
    },
    /// An inter-vCPU channel of this domain.
    Ipi,
}

impl PortState {
    /// The `EVTCHNSTAT_*` value reported by `status`.
    pub fn stat(self) -> EvtchnStat {
        match self {
            PortState::Free | PortState::Reserved => EvtchnStat::Closed,
            PortState::Unbound { .. } => EvtchnStat::Unbound,
            PortState::Interdomain { .. } => EvtchnStat::Interdomain,
            PortState::Pirq { .. } => EvtchnStat::Pirq,
            PortState::Virq { .. } => EvtchnStat::Virq,
            PortState::Ipi => EvtchnStat::Ipi,
        }
    }

    /// Bound to something (Xen's `evtchn_usable`: state beyond free/reserved). Only
    /// such ports are delivered to, unmasked and polled.
    pub fn is_bound(self) -> bool {
        !matches!(self, PortState::Free | PortState::Reserved)
    }
}

/// The stored form of a port's state (8 bytes; [`PortState`] is the view).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Free,
    Reserved,
    Unbound,
    Interdomain,
    Pirq,
    Virq,
    Ipi,
}

/// One port: kind, vCPU to notify, and the state's payload (`dom`: remote domain of
/// unbound/interdomain ports; `val`: remote port, PIRQ or VIRQ).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    kind: Kind,
    notify: u8,
    dom: DomId,
    val: u32,
}

const _: () = assert!(core::mem::size_of::<Slot>() == 8);
const _: () = assert!(MAX_VCPUS <= u8::MAX as usize + 1);

impl Slot {
    const FREE: Slot = Slot {
        kind: Kind::Free,
        notify: 0,
        dom: DomId(0),
        val: 0,
    };

    const fn state(self) -> PortState {
        match self.kind {
            Kind::Free => PortState::Free,
            Kind::Reserved => PortState::Reserved,
            Kind::Unbound => PortState::Unbound { remote: self.dom },
            Kind::Interdomain => PortState::Interdomain {
                remote: self.dom,
                port: EvtchnPort(self.val),
            },
            Kind::Pirq => PortState::Pirq { pirq: self.val },
            Kind::Virq => PortState::Virq { virq: self.val },
            Kind::Ipi => PortState::Ipi,
        }
    }

    const fn new(state: PortState, notify: u8) -> Slot {
        let (kind, dom, val) = match state {
            PortState::Free => (Kind::Free, DomId(0), 0),
            PortState::Reserved => (Kind::Reserved, DomId(0), 0),
            PortState::Unbound { remote } => (Kind::Unbound, remote, 0),
            PortState::Interdomain { remote, port } => (Kind::Interdomain, remote, port.0),
            PortState::Pirq { pirq } => (Kind::Pirq, DomId(0), pirq),
            PortState::Virq { virq } => (Kind::Virq, DomId(0), virq),
            PortState::Ipi => (Kind::Ipi, DomId(0), 0),
        };
        Slot {
            kind,
            notify,
            dom,
            val,
        }
    }
}

/// Per-domain limits, from the toolstack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvtchnConfig {
    /// Highest port the domain may allocate (`max_evtchn_port`;
    /// [`DEFAULT_DOMU_MAX_PORT`](super::DEFAULT_DOMU_MAX_PORT) for a libxl domU,
    /// [`UNLIMITED_MAX_PORT`](super::UNLIMITED_MAX_PORT) for dom0). Ports above 4095
    /// never exist under the 2-level ABI whatever this says.
    pub max_port: u32,
    /// vCPUs of the domain (`max_vcpus`; at most [`MAX_VCPUS`]).
    pub nr_vcpus: u32,
}

/// Where `send` delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendTarget {
    /// Unbound port: the notification is dropped.
    Drop,
    /// This domain's own port (IPI).
    Local(EvtchnPort, VcpuId),
    /// A peer's port (interdomain; the peer may be this domain).
    Remote(DomId, EvtchnPort),
}

/// One domain's event channels: the VIRQ bindings of up to [`MAX_VCPUS`] vCPUs (3 KiB,
/// inline) and 8 bytes per port up to the domain's limit, on the heap (a domU's 1023
/// ports take 8 KiB, dom0's 4096 take 32 KiB). Port 0 is reserved.
///
/// [`EvtchnTable::unused`] is `const` and allocates nothing; [`reinit`] gives it a
/// domain and its port storage (reusing what a previous domain left).
///
/// [`reinit`]: EvtchnTable::reinit
pub struct EvtchnTable {
    dom: DomId,
    /// One per port up to the limit (rounded up to a bucket): see [`port_storage`].
    slots: Vec<Slot>,
    /// Ports below this are valid (whole buckets; only grows, as in Xen).
    valid: u32,
    max_port: u32,
    nr_vcpus: u32,
    /// `virq_ports[v][virq]`: port bound to `virq` on vCPU `v` (0 = none). Global VIRQs
    /// are recorded under vCPU 0 wherever they deliver.
    virq_ports: [[EvtchnPort; NR_VIRQ_SLOTS]; MAX_VCPUS],
    dying: bool,
}

impl fmt::Debug for EvtchnTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvtchnTable")
            .field("dom", &self.dom)
            .field("valid", &self.valid)
            .field("max_port", &self.max_port)
            .field("nr_vcpus", &self.nr_vcpus)
            .field("bound", &self.ports().count())
            .field("dying", &self.dying)
            .finish()
    }
}

/// [`MAX_VCPUS`] as a `u32` (32).
#[allow(clippy::cast_possible_truncation)] // checked just above
const MAX_VCPUS_U32: u32 = {
    assert!(MAX_VCPUS <= u32::MAX as usize);
    MAX_VCPUS as u32
};

const fn clamp_vcpus(n: u32) -> u32 {
    if n > MAX_VCPUS_U32 { MAX_VCPUS_U32 } else { n }
}

/// The heap could not hold a table's ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory;

/// Ports a table with limit `max_port` stores: every port up to the limit, rounded up
/// to whole buckets (ports become valid a bucket at a time), at most [`NR_PORTS`].
pub fn port_storage(max_port: u32) -> usize {
    let last = max_port.min(EVTCHN_2L_NR_CHANNELS - 1);
    let buckets = last / PORTS_PER_BUCKET + 1;
    usize::try_from(buckets * PORTS_PER_BUCKET)
        .unwrap_or(NR_PORTS)
        .min(NR_PORTS)
}

impl EvtchnTable {
    /// A fresh table: port 0 reserved, the first bucket valid, nothing bound. An
    /// unusable one (no port valid) if the heap cannot hold its ports.
    pub fn new(dom: DomId, config: EvtchnConfig) -> Self {
        let mut t = Self::unused();
        if t.reinit(dom, config).is_err() {
            t.valid = 0;
        }
        t
    }

    /// A table for no domain, with no port storage; [`EvtchnTable::reinit`] makes it
    /// usable.
    pub const fn unused() -> Self {
        EvtchnTable {
            dom: DomId(0),
            slots: Vec::new(),
            valid: 0,
            max_port: 0,
            nr_vcpus: 0,
            virq_ports: [[EvtchnPort(0); NR_VIRQ_SLOTS]; MAX_VCPUS],
            dying: false,
        }
    }

    /// Makes this table what [`EvtchnTable::new`] returns, in place, with storage for
    /// [`port_storage`]`(config.max_port)` ports. The only step that allocates;
    /// [`OutOfMemory`] (and the table left unusable) if the heap cannot hold them.
    pub fn reinit(&mut self, dom: DomId, config: EvtchnConfig) -> Result<(), OutOfMemory> {
        self.dom = dom;
        self.valid = 0;
        self.dying = false;
        self.slots.clear();
        let n = port_storage(config.max_port);
        self.slots.try_reserve_exact(n).map_err(|_| OutOfMemory)?;
        self.slots.resize(n, Slot::FREE);
        if let Some(s) = self.slots.first_mut() {
            *s = Slot::new(PortState::Reserved, 0);
        }
        self.valid = PORTS_PER_BUCKET;
        self.max_port = config.max_port;
        self.nr_vcpus = clamp_vcpus(config.nr_vcpus);
        for v in &mut self.virq_ports {
            v.fill(EvtchnPort(0));
        }
        Ok(())
    }

    /// The owning domain.
    pub fn domid(&self) -> DomId {
        self.dom
    }

    /// The toolstack's port limit.
    pub fn max_port(&self) -> u32 {
        self.max_port
    }

    /// vCPUs of the domain.
    pub fn nr_vcpus(&self) -> u32 {
        self.nr_vcpus
    }

    /// Changes the number of vCPUs (clamped to [`MAX_VCPUS`]). Bindings of vCPUs that
    /// disappear stay until their ports are closed.
    pub fn set_nr_vcpus(&mut self, n: u32) {
        self.nr_vcpus = clamp_vcpus(n);
    }

    /// Ports below this number are valid (allocated buckets).
    pub fn valid_ports(&self) -> u32 {
        self.valid
    }

    /// Whether [`destroy_domain`](super::destroy_domain) ran: no new ports.
    pub fn is_dying(&self) -> bool {
        self.dying
    }

    fn slot(&self, port: EvtchnPort) -> Option<Slot> {
        if port.0 >= self.valid {
            return None;
        }
        self.slots.get(port.0 as usize).copied()
    }

    fn slot_mut(&mut self, port: EvtchnPort) -> Option<&mut Slot> {
        if port.0 >= self.valid {
            return None;
        }
        self.slots.get_mut(port.0 as usize)
    }

    /// The state of `port`, `None` if it is not a valid port.
    pub fn state(&self, port: EvtchnPort) -> Option<PortState> {
        self.slot(port).map(Slot::state)
    }

    /// The vCPU `port` notifies, `None` if it is not a valid port.
    pub fn notify_vcpu(&self, port: EvtchnPort) -> Option<VcpuId> {
        self.slot(port).map(|s| VcpuId(u32::from(s.notify)))
    }

    /// The port `virq` is bound to for `vcpu` (global VIRQs: pass vCPU 0).
    pub fn virq_port(&self, virq: u32, vcpu: VcpuId) -> Option<EvtchnPort> {
        let p = *self.virq_ports.get(vcpu.0 as usize)?.get(virq as usize)?;
        (p.0 != 0).then_some(p)
    }

    /// Every bound port with its state.
    pub fn ports(&self) -> impl Iterator<Item = (EvtchnPort, PortState)> + '_ {
        self.slots
            .iter()
            .take(self.valid as usize)
            .enumerate()
            .filter_map(|(i, s)| {
                let st = s.state();
                let port = EvtchnPort(u32::try_from(i).ok()?);
                st.is_bound().then_some((port, st))
            })
    }

    fn vcpu_slot(&self, vcpu: VcpuId) -> Result<u8, EvtchnError> {
        if vcpu.0 >= self.nr_vcpus {
            return Err(EvtchnError::NoSuchVcpu(vcpu));
        }
        u8::try_from(vcpu.0).map_err(|_| EvtchnError::NoSuchVcpu(vcpu))
    }

    /// Xen's `get_free_port`: the lowest free port up to the limit. Making a port in a
    /// new bucket valid is a side effect that stays even if the caller then fails.
    pub(super) fn alloc_port(&mut self) -> Result<EvtchnPort, EvtchnError> {
        if self.dying {
            return Err(EvtchnError::Dying(self.dom));
        }
        let last = self.max_port.min(EVTCHN_2L_NR_CHANNELS - 1);
        for p in 0..=last {
            if p >= self.valid {
                let end = (p / PORTS_PER_BUCKET + 1) * PORTS_PER_BUCKET;
                self.valid = end.min(EVTCHN_2L_NR_CHANNELS);
                return Ok(EvtchnPort(p));
            }
            if self.slots.get(p as usize).map(|s| s.kind) == Some(Kind::Free) {
                return Ok(EvtchnPort(p));
            }
        }
        Err(EvtchnError::NoFreePort)
    }

    /// Commits a state (the port was validated by the caller).
    pub(super) fn set(&mut self, port: EvtchnPort, state: PortState, notify: u8) {
        if let Some(s) = self.slot_mut(port) {
            *s = Slot::new(state, notify);
        }
    }

    /// Keeps the vCPU, changes the state.
    pub(super) fn set_keep_vcpu(&mut self, port: EvtchnPort, state: PortState) {
        if let Some(s) = self.slot_mut(port) {
            *s = Slot::new(state, s.notify);
        }
    }

    /// Xen's `evtchn_free` plus the VIRQ unbinding of `evtchn_close`: clear the pending
    /// bit, forget the VIRQ binding, back to free on vCPU 0.
    pub(super) fn free_port<B: EventBits + ?Sized>(&mut self, bits: &mut B, port: EvtchnPort) {
        let Some(slot) = self.slot(port) else {
            return;
        };
        if let PortState::Virq { virq } = slot.state() {
            let v = if virq_is_global(virq) {
                0
            } else {
                usize::from(slot.notify)
            };
            if let Some(p) = self
                .virq_ports
                .get_mut(v)
                .and_then(|row| row.get_mut(virq as usize))
            {
                if *p == port {
                    *p = EvtchnPort(0);
                }
            }
        }
        bits.clear_pending(port);
        self.set(port, PortState::Free, 0);
    }

    /// The peer side of a close: `port` goes back to unbound for `peer`, if it still
    /// names `peer`/`peer_port` (it always does while the links are symmetric).
    pub(super) fn revert_to_unbound(
        &mut self,
        port: EvtchnPort,
        peer: DomId,
        peer_port: EvtchnPort,
    ) {
        if self.state(port)
            == Some(PortState::Interdomain {
                remote: peer,
                port: peer_port,
            })
        {
            self.set_keep_vcpu(port, PortState::Unbound { remote: peer });
        }
    }

    /// Marks the table dying (no more allocations).
    pub(super) fn set_dying(&mut self) {
        self.dying = true;
    }

    /// `EVTCHNOP_bind_virq` for this domain.
    pub fn bind_virq(
        &mut self,
        mut req: EvtchnBindVirq,
        policy: GlobalVirqPolicy,
    ) -> Result<EvtchnBindVirq, EvtchnError> {
        let virq = req.virq;
        if virq >= NR_VIRQS {
            return Err(EvtchnError::InvalidVirq(virq));
        }
        let global = virq_is_global(virq);
        if global && req.vcpu.0 != 0 {
            return Err(EvtchnError::GlobalVirqVcpu(req.vcpu));
        }
        let notify = self.vcpu_slot(req.vcpu)?;
        if global && !policy.allows(virq) {
            return Err(EvtchnError::NotVirqHandler(virq));
        }
        if let Some(p) = self.virq_port(virq, req.vcpu) {
            return Err(EvtchnError::VirqBound(virq, p));
        }
        let port = self.alloc_port()?;
        self.set(port, PortState::Virq { virq }, notify);
        if let Some(p) = self
            .virq_ports
            .get_mut(usize::from(notify))
            .and_then(|row| row.get_mut(virq as usize))
        {
            *p = port;
        }
        req.port = port;
        Ok(req)
    }

    /// `EVTCHNOP_bind_ipi` for this domain.
    pub fn bind_ipi(&mut self, mut req: EvtchnBindIpi) -> Result<EvtchnBindIpi, EvtchnError> {
        let notify = self.vcpu_slot(req.vcpu)?;
        let port = self.alloc_port()?;
        self.set(port, PortState::Ipi, notify);
        req.port = port;
        Ok(req)
    }

    /// `EVTCHNOP_bind_pirq` for this domain: the port only; routing the physical IRQ
    /// is the hypervisor's (this model has no device pass-through).
    pub fn bind_pirq(
        &mut self,
        mut req: EvtchnBindPirq,
        caller: &Caller,
    ) -> Result<EvtchnBindPirq, EvtchnError> {
        let pirq = req.pirq;
        if pirq >= caller.pirqs.nr_pirqs {
            return Err(EvtchnError::InvalidPirq(pirq));
        }
        if !caller.pirqs.permitted {
            return Err(EvtchnError::PirqNotPermitted(pirq));
        }
        if self.ports().any(|(_, s)| s == PortState::Pirq { pirq }) {
            return Err(EvtchnError::PirqBound(pirq));
        }
        let port = self.alloc_port()?;
        self.set(port, PortState::Pirq { pirq }, 0);
        req.port = port;
        Ok(req)
    }

    /// `EVTCHNOP_bind_vcpu`: move delivery of an unbound, interdomain, PIRQ or global
    /// VIRQ port. IPIs and per-vCPU VIRQs stay where they are.
    pub fn bind_vcpu(&mut self, req: EvtchnBindVcpu) -> Result<(), EvtchnError> {
        let notify = self.vcpu_slot(req.vcpu)?;
        let slot = self
            .slot(req.port)
            .ok_or(EvtchnError::InvalidPort(req.port))?;
        let state = slot.state();
        let movable = match state {
            PortState::Virq { virq } => virq_is_global(virq),
            PortState::Unbound { .. } | PortState::Interdomain { .. } | PortState::Pirq { .. } => {
                true
            }
            PortState::Free | PortState::Reserved | PortState::Ipi => false,
        };
        if !movable {
            return Err(EvtchnError::WrongState(req.port, state));
        }
        self.set(req.port, state, notify);
        Ok(())
    }

    /// `EVTCHNOP_unmask`: on a bound port, clear the mask bit and re-raise the event
    /// if it was masked and is pending ([`twolevel::unmask`]). A valid port that is not
    /// bound is left alone (success, mask untouched), as Xen does.
    pub fn unmask<B: EventBits + ?Sized>(
        &self,
        bits: &mut B,
        req: EvtchnUnmask,
    ) -> Result<Option<Kick>, EvtchnError> {
        let slot = self
            .slot(req.port)
            .ok_or(EvtchnError::InvalidPort(req.port))?;
        if !slot.state().is_bound() {
            return Ok(None);
        }
        Ok(twolevel::unmask(
            bits,
            self.dom,
            req.port,
            VcpuId(u32::from(slot.notify)),
        ))
    }

    /// `EVTCHNOP_set_priority`: FIFO only; the 2-level ABI answers -ENOSYS for any
    /// valid port.
    pub fn set_priority(&self, req: EvtchnSetPriority) -> Result<(), EvtchnError> {
        self.slot(req.port)
            .ok_or(EvtchnError::InvalidPort(req.port))?;
        Err(EvtchnError::NoPriorities)
    }

    /// Where `send` on `port` goes.
    pub(super) fn send_target(&self, port: EvtchnPort) -> Result<SendTarget, EvtchnError> {
        let slot = self.slot(port).ok_or(EvtchnError::InvalidPort(port))?;
        match slot.state() {
            PortState::Interdomain {
                remote,
                port: rport,
            } => Ok(SendTarget::Remote(remote, rport)),
            PortState::Ipi => Ok(SendTarget::Local(port, VcpuId(u32::from(slot.notify)))),
            PortState::Unbound { .. } => Ok(SendTarget::Drop),
            state => Err(EvtchnError::WrongState(port, state)),
        }
    }

    /// Flags `port` pending for its vCPU if it is bound (Xen's
    /// `evtchn_port_set_pending`).
    pub fn set_pending<B: EventBits + ?Sized>(
        &self,
        bits: &mut B,
        port: EvtchnPort,
    ) -> Option<Kick> {
        let slot = self.slot(port)?;
        if !slot.state().is_bound() {
            return None;
        }
        twolevel::set_pending(bits, self.dom, port, VcpuId(u32::from(slot.notify)))
    }

    /// Raises `virq` for the hypervisor (timer expiry, console input, a domain's
    /// death...). Per-vCPU VIRQs go to their binding on `vcpu`; for a global VIRQ
    /// `vcpu` is ignored and the event goes to whichever vCPU the port was moved to.
    /// Nothing happens if the VIRQ is not bound. The hypervisor picks the domain: for
    /// a global VIRQ, [`GlobalVirqHandlers::handler`](super::GlobalVirqHandlers::handler).
    pub fn raise_virq<B: EventBits + ?Sized>(
        &self,
        bits: &mut B,
        virq: u32,
        vcpu: VcpuId,
    ) -> Option<Kick> {
        if virq >= NR_VIRQS {
            return None;
        }
        if virq_is_global(virq) {
            let port = self.virq_port(virq, VcpuId(0))?;
            self.set_pending(bits, port)
        } else {
            if vcpu.0 >= self.nr_vcpus {
                return None;
            }
            let port = self.virq_port(virq, vcpu)?;
            twolevel::set_pending(bits, self.dom, port, vcpu)
        }
    }

    /// Raises the port bound to physical IRQ `pirq`, if any.
    pub fn raise_pirq<B: EventBits + ?Sized>(&self, bits: &mut B, pirq: u32) -> Option<Kick> {
        let (port, _) = self.ports().find(|&(_, s)| s == PortState::Pirq { pirq })?;
        self.set_pending(bits, port)
    }

    /// The port test of `SCHEDOP_poll` for `vcpu` polling `ports` (copied in by the
    /// hypercall layer, which should refuse more than 128 before copying, see
    /// [`check_poll_count`](Self::check_poll_count)).
    ///
    /// `Ok(true)`: return 0 at once (events already need delivery to the vCPU, or a
    /// listed port is pending). `Ok(false)`: block until a [`Kick`] with `pollers`
    /// names one of the ports (or the timeout). -EINVAL for a port that is not valid
    /// or not bound, unless a pending port comes before it in the list.
    pub fn poll<B: EventBits + ?Sized>(
        &self,
        bits: &B,
        vcpu: VcpuId,
        ports: &[EvtchnPort],
    ) -> Result<bool, EvtchnError> {
        Self::check_poll_count(ports.len())?;
        if bits.upcall_pending(vcpu) && !bits.upcall_masked(vcpu) {
            return Ok(true);
        }
        for &port in ports {
            let slot = self.slot(port).ok_or(EvtchnError::InvalidPort(port))?;
            let state = slot.state();
            if !state.is_bound() {
                return Err(EvtchnError::WrongState(port, state));
            }
            if bits.is_pending(port) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// -EINVAL for a poll on more than `SCHEDOP_POLL_MAX_PORTS` (128) ports.
    pub fn check_poll_count(nr_ports: usize) -> Result<(), EvtchnError> {
        if nr_ports > SCHEDOP_POLL_MAX_PORTS as usize {
            return Err(EvtchnError::TooManyPollPorts(nr_ports));
        }
        Ok(())
    }

    /// Fills the `out` fields of `status` for `port` (validated): Xen writes only the
    /// union member of the state, so the rest of the guest's bytes come back as given.
    pub(super) fn fill_status(&self, status: &mut EvtchnStatus, port: EvtchnPort) {
        let Some(slot) = self.slot(port) else {
            return;
        };
        let state = slot.state();
        status.status = state.stat() as u32;
        match state {
            PortState::Unbound { remote } => {
                status.u[0] = (status.u[0] & 0xFFFF_0000) | u32::from(remote.0);
            }
            PortState::Interdomain { remote, port } => {
                status.u[0] = (status.u[0] & 0xFFFF_0000) | u32::from(remote.0);
                status.u[1] = port.0;
            }
            PortState::Pirq { pirq: n } | PortState::Virq { virq: n } => status.u[0] = n,
            PortState::Free | PortState::Reserved | PortState::Ipi => {}
        }
        status.vcpu = VcpuId(u32::from(slot.notify));
    }
}
