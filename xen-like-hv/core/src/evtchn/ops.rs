//! Operations that span domains, request decoding, and the dispatcher.

use super::table::SendTarget;
use super::twolevel::{self, EventBits};
use super::{Caller, EvtchnError, EvtchnTable, Kick, PortState};
use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu,
    EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOp, EvtchnOpCompat,
    EvtchnReset, EvtchnSend, EvtchnSetPriority, EvtchnStatus, EvtchnUnmask,
};
use hypercall_abi::types::{DomId, EvtchnPort};
use zerocopy::{FromBytes, IntoBytes};

/// One domain's event-channel state, lent out by [`Domains`].
#[derive(Debug)]
pub struct DomainEvtchn<'a, B> {
    /// Its port table.
    pub table: &'a mut EvtchnTable,
    /// Its shared_info bitmaps.
    pub bits: B,
    /// Paused by its controller (`controller_pause_count != 0`): only then may another
    /// domain `reset` its ports.
    pub controller_paused: bool,
}

/// The hypervisor's domains as the event-channel code needs them: one, or two distinct
/// ones at once. Implemented over the domain slot table while its lock is held (two
/// disjoint slots come from [`pair_mut`]); tests implement it over a `Vec`.
pub trait Domains {
    /// The shared_info bitmaps of one domain, borrowed from `self`.
    type Bits<'a>: EventBits
    where
        Self: 'a;

    /// Domain `dom`, if it exists.
    fn get(&mut self, dom: DomId) -> Option<DomainEvtchn<'_, Self::Bits<'_>>>;

    /// Domains `a` and `b` (never called with `a == b`), if both exist.
    #[allow(clippy::type_complexity)]
    fn get_pair(
        &mut self,
        a: DomId,
        b: DomId,
    ) -> Option<(
        DomainEvtchn<'_, Self::Bits<'_>>,
        DomainEvtchn<'_, Self::Bits<'_>>,
    )>;
}

/// Two distinct elements of a slice, mutably: `None` if `a == b` or either is out of
/// range. For implementing [`Domains::get_pair`] over a slot table.
pub fn pair_mut<T>(slice: &mut [T], a: usize, b: usize) -> Option<(&mut T, &mut T)> {
    if a == b || a >= slice.len() || b >= slice.len() {
        return None;
    }
    if a < b {
        let (lo, hi) = slice.split_at_mut(b);
        Some((lo.get_mut(a)?, hi.first_mut()?))
    } else {
        let (lo, hi) = slice.split_at_mut(a);
        let (x, y) = (hi.first_mut()?, lo.get_mut(b)?);
        Some((x, y))
    }
}

fn no_domain(dom: DomId) -> EvtchnError {
    EvtchnError::NoSuchDomain(dom)
}

/// `EVTCHNOP_alloc_unbound`: a new port in `req.dom` (the caller unless privileged)
/// that `req.remote_dom` may connect to. `DOMID_SELF` as the remote is recorded as the
/// caller's real id, so `status` reveals it. Errors in Xen's order: ESRCH, then the
/// allocation (EINVAL dying, ENOSPC), then EPERM.
pub fn alloc_unbound<D: Domains + ?Sized>(
    doms: &mut D,
    caller: &Caller,
    mut req: EvtchnAllocUnbound,
) -> Result<EvtchnAllocUnbound, EvtchnError> {
    let target = caller.resolve(req.dom);
    let d = doms.get(target).ok_or(no_domain(target))?;
    let port = d.table.alloc_port()?;
    if target != caller.dom && !caller.privileged {
        return Err(EvtchnError::NotPermitted(target));
    }
    let remote = caller.resolve(req.remote_dom);
    d.table.set(port, PortState::Unbound { remote }, 0);
    req.port = port;
    Ok(req)
}

fn check_bindable(
    table: &EvtchnTable,
    rdom: DomId,
    rport: EvtchnPort,
    local: DomId,
) -> Result<(), EvtchnError> {
    match table.state(rport) {
        None => Err(EvtchnError::InvalidPort(rport)),
        Some(PortState::Unbound { remote }) if remote == local => Ok(()),
        Some(_) => Err(EvtchnError::NotBindable(rdom, rport)),
    }
}

/// `EVTCHNOP_bind_interdomain`: connect a new local port to `req.remote_port` of
/// `req.remote_dom` (`DOMID_SELF`: loopback), which must be unbound for the caller.
/// Both ends then name each other; the peer keeps its vCPU. The local port is set
/// pending, since notifications sent to the unbound remote end were dropped.
pub fn bind_interdomain<D: Domains + ?Sized>(
    doms: &mut D,
    caller: &Caller,
    mut req: EvtchnBindInterdomain,
) -> Result<(EvtchnBindInterdomain, Option<Kick>), EvtchnError> {
    let ld = caller.dom;
    let rd = caller.resolve(req.remote_dom);
    let rport = req.remote_port;
    let kick;
    if rd == ld {
        let mut d = doms.get(ld).ok_or(no_domain(ld))?;
        let lport = d.table.alloc_port()?;
        check_bindable(d.table, rd, rport, ld)?;
        d.table.set(
            lport,
            PortState::Interdomain {
                remote: rd,
                port: rport,
            },
            0,
        );
        d.table.set_keep_vcpu(
            rport,
            PortState::Interdomain {
                remote: ld,
                port: lport,
            },
        );
        kick = d.table.set_pending(&mut d.bits, lport);
        req.local_port = lport;
    } else {
        if doms.get(rd).is_none() {
            return Err(no_domain(rd));
        }
        let (mut l, r) = doms.get_pair(ld, rd).ok_or(no_domain(ld))?;
        let lport = l.table.alloc_port()?;
        check_bindable(r.table, rd, rport, ld)?;
        l.table.set(
            lport,
            PortState::Interdomain {
                remote: rd,
                port: rport,
            },
            0,
        );
        r.table.set_keep_vcpu(
            rport,
            PortState::Interdomain {
                remote: ld,
                port: lport,
            },
        );
        kick = l.table.set_pending(&mut l.bits, lport);
        req.local_port = lport;
    }
    Ok((req, kick))
}

/// `EVTCHNOP_close` (and the closing done by reset and destruction): free `port` of
/// `dom`, clearing its pending bit and any VIRQ binding. An interdomain peer goes
/// back to unbound, bindable again by `dom`. -EINVAL for an invalid, free or reserved
/// port.
pub fn close<D: Domains + ?Sized>(
    doms: &mut D,
    dom: DomId,
    port: EvtchnPort,
) -> Result<(), EvtchnError> {
    let (rdom, rport) = {
        let mut d = doms.get(dom).ok_or(no_domain(dom))?;
        let state = d.table.state(port).ok_or(EvtchnError::InvalidPort(port))?;
        match state {
            PortState::Free | PortState::Reserved => {
                return Err(EvtchnError::WrongState(port, state));
            }
            PortState::Interdomain {
                remote,
                port: rport,
            } if remote != dom => (remote, rport),
            PortState::Interdomain { port: rport, .. } => {
                d.table.free_port(&mut d.bits, port);
                d.table.revert_to_unbound(rport, dom, port);
                return Ok(());
            }
            PortState::Unbound { .. }
            | PortState::Pirq { .. }
            | PortState::Virq { .. }
            | PortState::Ipi => {
                d.table.free_port(&mut d.bits, port);
                return Ok(());
            }
        }
    };
    if let Some((mut l, r)) = doms.get_pair(dom, rdom) {
        l.table.free_port(&mut l.bits, port);
        r.table.revert_to_unbound(rport, dom, port);
    } else if let Some(mut l) = doms.get(dom) {
        // The peer vanished without closing its end: cannot happen while destruction
        // goes through `destroy_domain`. Close our end anyway.
        log::warn!(
            "evtchn: d{} port {} names missing d{}",
            dom.0,
            port.0,
            rdom.0
        );
        l.table.free_port(&mut l.bits, port);
    }
    Ok(())
}

/// `EVTCHNOP_send` on `port` of `dom`: an interdomain port flags the peer's port
/// (loopback: our own), an IPI flags itself, an unbound port drops the notification
/// (success); anything else is -EINVAL. A domain can only ever reach the port its own
/// port is linked to.
pub fn send<D: Domains + ?Sized>(
    doms: &mut D,
    dom: DomId,
    port: EvtchnPort,
) -> Result<Option<Kick>, EvtchnError> {
    let (rdom, rport) = {
        let mut d = doms.get(dom).ok_or(no_domain(dom))?;
        match d.table.send_target(port)? {
            SendTarget::Drop => return Ok(None),
            SendTarget::Local(p, vcpu) => {
                return Ok(twolevel::set_pending(&mut d.bits, dom, p, vcpu));
            }
            SendTarget::Remote(r, rp) if r == dom => {
                return Ok(d.table.set_pending(&mut d.bits, rp));
            }
            SendTarget::Remote(r, rp) => (r, rp),
        }
    };
    let mut r = doms.get(rdom).ok_or(EvtchnError::BrokenLink(rdom, port))?;
    Ok(r.table.set_pending(&mut r.bits, rport))
}

/// `EVTCHNOP_status`: the state of a port of `req.dom` (another domain's only for a
/// privileged caller). Errors in Xen's order: ESRCH, EINVAL (invalid port), EPERM.
pub fn status<D: Domains + ?Sized>(
    doms: &mut D,
    caller: &Caller,
    mut req: EvtchnStatus,
) -> Result<EvtchnStatus, EvtchnError> {
    let target = caller.resolve(req.dom);
    let d = doms.get(target).ok_or(no_domain(target))?;
    let port = req.port;
    d.table.state(port).ok_or(EvtchnError::InvalidPort(port))?;
    if target != caller.dom && !caller.privileged {
        return Err(EvtchnError::NotPermitted(target));
    }
    d.table.fill_status(&mut req, port);
    Ok(req)
}

/// `EVTCHNOP_reset` (`cont`: `EVTCHNOP_reset_cont`): close every port of `req.dom`.
/// Another domain's ports only for a privileged caller (EPERM) and only while its
/// controller has it paused (EINVAL). The reset runs to completion here, so a
/// `reset_cont` never has a reset to continue (EBUSY, as Xen answers one issued out of
/// the blue).
pub fn reset<D: Domains + ?Sized>(
    doms: &mut D,
    caller: &Caller,
    req: EvtchnReset,
    cont: bool,
) -> Result<(), EvtchnError> {
    let target = caller.resolve(req.dom);
    let (paused, valid) = {
        let d = doms.get(target).ok_or(no_domain(target))?;
        (d.controller_paused, d.table.valid_ports())
    };
    if target != caller.dom && !caller.privileged {
        return Err(EvtchnError::NotPermitted(target));
    }
    if target != caller.dom && !paused {
        return Err(EvtchnError::NotPaused(target));
    }
    if cont {
        return Err(EvtchnError::NoResetInProgress);
    }
    for p in 1..valid {
        let _ = close(doms, target, EvtchnPort(p));
    }
    Ok(())
}

/// Domain destruction: no new ports from now on, every port closed (peers of
/// interdomain ports go back to unbound, naming the dead domain). The caller also
/// drops the domain from its [`GlobalVirqHandlers`](super::GlobalVirqHandlers).
pub fn destroy_domain<D: Domains + ?Sized>(doms: &mut D, dom: DomId) {
    let valid = match doms.get(dom) {
        Some(d) => {
            d.table.set_dying();
            d.table.valid_ports()
        }
        None => return,
    };
    for p in (1..valid).rev() {
        let _ = close(doms, dom, EvtchnPort(p));
    }
}

/// One decoded `event_channel_op` request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnRequest {
    /// `bind_interdomain`.
    BindInterdomain(EvtchnBindInterdomain),
    /// `bind_virq`.
    BindVirq(EvtchnBindVirq),
    /// `bind_pirq`.
    BindPirq(EvtchnBindPirq),
    /// `close`.
    Close(EvtchnClose),
    /// `send`.
    Send(EvtchnSend),
    /// `status`.
    Status(EvtchnStatus),
    /// `alloc_unbound`.
    AllocUnbound(EvtchnAllocUnbound),
    /// `bind_ipi`.
    BindIpi(EvtchnBindIpi),
    /// `bind_vcpu`.
    BindVcpu(EvtchnBindVcpu),
    /// `unmask`.
    Unmask(EvtchnUnmask),
    /// `reset`.
    Reset(EvtchnReset),
    /// `init_control` (FIFO).
    InitControl(EvtchnInitControl),
    /// `expand_array` (FIFO).
    ExpandArray(EvtchnExpandArray),
    /// `set_priority` (FIFO).
    SetPriority(EvtchnSetPriority),
    /// `reset_cont`.
    ResetCont(EvtchnReset),
}

fn read<T: FromBytes>(arg: &[u8]) -> Result<T, EvtchnError> {
    T::read_from_prefix(arg)
        .map(|(t, _)| t)
        .map_err(|_| EvtchnError::ShortArgument)
}

impl EvtchnRequest {
    /// Bytes the hypercall layer copies in for command `cmd` (`None`: unknown command,
    /// answer -ENOSYS without reading anything).
    pub fn arg_size(cmd: u32) -> Option<usize> {
        EvtchnOp::ALL
            .iter()
            .find(|d| d.nr == cmd)
            .map(|d| d.arg_size)
    }

    /// Decodes command `cmd` of `event_channel_op` (#32) from the argument's bytes.
    pub fn decode(cmd: u32, arg: &[u8]) -> Result<Self, EvtchnError> {
        let op = EvtchnOp::from_nr(cmd).ok_or(EvtchnError::UnknownOp(cmd))?;
        Ok(match op {
            EvtchnOp::BindInterdomain => Self::BindInterdomain(read(arg)?),
            EvtchnOp::BindVirq => Self::BindVirq(read(arg)?),
            EvtchnOp::BindPirq => Self::BindPirq(read(arg)?),
            EvtchnOp::Close => Self::Close(read(arg)?),
            EvtchnOp::Send => Self::Send(read(arg)?),
            EvtchnOp::Status => Self::Status(read(arg)?),
            EvtchnOp::AllocUnbound => Self::AllocUnbound(read(arg)?),
            EvtchnOp::BindIpi => Self::BindIpi(read(arg)?),
            EvtchnOp::BindVcpu => Self::BindVcpu(read(arg)?),
            EvtchnOp::Unmask => Self::Unmask(read(arg)?),
            EvtchnOp::Reset => Self::Reset(read(arg)?),
            EvtchnOp::InitControl => Self::InitControl(read(arg)?),
            EvtchnOp::ExpandArray => Self::ExpandArray(read(arg)?),
            EvtchnOp::SetPriority => Self::SetPriority(read(arg)?),
            EvtchnOp::ResetCont => Self::ResetCont(read(arg)?),
        })
    }

    /// Decodes the legacy `event_channel_op_compat` (#16) argument. Like Xen, it only
    /// knows the ten original commands (`bind_interdomain` .. `unmask`); the rest are
    /// -ENOSYS. Out fields go back into `op.u` ([`EvtchnOut::write_compat`]).
    pub fn decode_compat(op: &EvtchnOpCompat) -> Result<Self, EvtchnError> {
        let known = matches!(
            EvtchnOp::from_nr(op.cmd),
            Some(
                EvtchnOp::BindInterdomain
                    | EvtchnOp::BindVirq
                    | EvtchnOp::BindPirq
                    | EvtchnOp::Close
                    | EvtchnOp::Send
                    | EvtchnOp::Status
                    | EvtchnOp::AllocUnbound
                    | EvtchnOp::BindIpi
                    | EvtchnOp::BindVcpu
                    | EvtchnOp::Unmask
            )
        );
        if !known {
            return Err(EvtchnError::UnknownOp(op.cmd));
        }
        Self::decode(op.cmd, op.u.as_bytes())
    }
}

/// The argument structure written back to the guest after a successful op (Xen
/// copies back only for these ops, and only on success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvtchnOut {
    /// `alloc_unbound` with `port`.
    AllocUnbound(EvtchnAllocUnbound),
    /// `bind_interdomain` with `local_port`.
    BindInterdomain(EvtchnBindInterdomain),
    /// `bind_virq` with `port`.
    BindVirq(EvtchnBindVirq),
    /// `bind_pirq` with `port`.
    BindPirq(EvtchnBindPirq),
    /// `bind_ipi` with `port`.
    BindIpi(EvtchnBindIpi),
    /// `status` filled in.
    Status(EvtchnStatus),
}

impl EvtchnOut {
    /// The whole structure, to copy to the argument address.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            EvtchnOut::AllocUnbound(s) => s.as_bytes(),
            EvtchnOut::BindInterdomain(s) => s.as_bytes(),
            EvtchnOut::BindVirq(s) => s.as_bytes(),
            EvtchnOut::BindPirq(s) => s.as_bytes(),
            EvtchnOut::BindIpi(s) => s.as_bytes(),
            EvtchnOut::Status(s) => s.as_bytes(),
        }
    }

    /// Writes the structure into the union of a legacy `evtchn_op` (offset 4), as Xen
    /// does when the compat call forwards to the op with a handle into it.
    pub fn write_compat(&self, op: &mut EvtchnOpCompat) {
        let src = self.as_bytes();
        let dst = op.u.as_mut_bytes();
        let n = src.len().min(dst.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
            d.copy_from_slice(s);
        }
    }
}

/// The result of a successful op: what to copy back and whom to wake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct EvtchnReply {
    /// Copy back to the guest's argument.
    pub out: Option<EvtchnOut>,
    /// Act on this (see [`Kick`]).
    pub kick: Option<Kick>,
}

#[allow(clippy::type_complexity)]
fn own<'a, D: Domains + ?Sized>(
    doms: &'a mut D,
    caller: &Caller,
) -> Result<DomainEvtchn<'a, D::Bits<'a>>, EvtchnError> {
    doms.get(caller.dom).ok_or(no_domain(caller.dom))
}

/// Runs one `event_channel_op` request for `caller`. FIFO is not offered (the guest
/// stays on 2-level): `init_control` checks its vCPU and offset as Xen does and then
/// hands its control frame to the hypercall layer ([`EvtchnError::FifoFrameUnchecked`];
/// see [`super::fifo`]), `expand_array` is -EOPNOTSUPP, `set_priority` is -ENOSYS
/// (-EINVAL for an invalid port).
pub fn dispatch<D: Domains + ?Sized>(
    doms: &mut D,
    caller: &Caller,
    req: EvtchnRequest,
) -> Result<EvtchnReply, EvtchnError> {
    let mut reply = EvtchnReply::default();
    match req {
        EvtchnRequest::AllocUnbound(a) => {
            reply.out = Some(EvtchnOut::AllocUnbound(alloc_unbound(doms, caller, a)?));
        }
        EvtchnRequest::BindInterdomain(b) => {
            let (out, kick) = bind_interdomain(doms, caller, b)?;
            reply.out = Some(EvtchnOut::BindInterdomain(out));
            reply.kick = kick;
        }
        EvtchnRequest::BindVirq(b) => {
            let d = own(doms, caller)?;
            reply.out = Some(EvtchnOut::BindVirq(
                d.table.bind_virq(b, caller.global_virqs)?,
            ));
        }
        EvtchnRequest::BindPirq(b) => {
            let d = own(doms, caller)?;
            reply.out = Some(EvtchnOut::BindPirq(d.table.bind_pirq(b, caller)?));
        }
        EvtchnRequest::BindIpi(b) => {
            let d = own(doms, caller)?;
            reply.out = Some(EvtchnOut::BindIpi(d.table.bind_ipi(b)?));
        }
        EvtchnRequest::Close(c) => close(doms, caller.dom, c.port)?,
        EvtchnRequest::Send(s) => reply.kick = send(doms, caller.dom, s.port)?,
        EvtchnRequest::Status(s) => reply.out = Some(EvtchnOut::Status(status(doms, caller, s)?)),
        EvtchnRequest::BindVcpu(b) => own(doms, caller)?.table.bind_vcpu(b)?,
        EvtchnRequest::Unmask(u) => {
            let mut d = own(doms, caller)?;
            reply.kick = d.table.unmask(&mut d.bits, u)?;
        }
        EvtchnRequest::Reset(r) => reset(doms, caller, r, false)?,
        EvtchnRequest::ResetCont(r) => reset(doms, caller, r, true)?,
        EvtchnRequest::InitControl(c) => {
            let gfn = super::fifo::check_init_control(own(doms, caller)?.table, &c)?;
            return Err(EvtchnError::FifoFrameUnchecked(gfn));
        }
        // Xen refuses before looking at the frame while the domain has no FIFO
        // control block, which here is always.
        EvtchnRequest::ExpandArray(_) => return Err(EvtchnError::FifoUnsupported),
        EvtchnRequest::SetPriority(p) => own(doms, caller)?.table.set_priority(p)?,
    }
    Ok(reply)
}
