//! Event channels: the few operations the runtime needs so far
//! (`event_channel_op`, ABI digest §7), and the default event upcall.

use core::sync::atomic::Ordering;

use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindVirq, EvtchnClose, EvtchnOp, EvtchnStatus, Virq,
};
use hypercall_abi::hypercall::event_channel_op;
use hypercall_abi::xen::shared_info::EVTCHN_WORDS;
use hypercall_abi::{DomId, Errno, EvtchnPort, VcpuId};

use crate::hypercall::{handle, handle_mut, hc};
use crate::shared;

/// Allocate an unbound port in this domain that domain `remote` may bind
/// to.
pub fn alloc_unbound(remote: DomId) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: remote,
        port: EvtchnPort(0),
    };
    event_channel_op(
        &mut hc(),
        EvtchnOp::AllocUnbound.nr(),
        handle_mut(&mut arg).cast(),
    )?;
    Ok(arg.port)
}

/// The status of one of this domain's ports.
pub fn status(port: EvtchnPort) -> Result<EvtchnStatus, Errno> {
    let mut arg = EvtchnStatus {
        dom: DomId::SELF,
        port,
        ..EvtchnStatus::default()
    };
    event_channel_op(
        &mut hc(),
        EvtchnOp::Status.nr(),
        handle_mut(&mut arg).cast(),
    )?;
    Ok(arg)
}

/// Bind `virq` on `vcpu` to a new port.
pub fn bind_virq(virq: Virq, vcpu: VcpuId) -> Result<EvtchnPort, Errno> {
    let mut arg = EvtchnBindVirq {
        virq: virq as u32,
        vcpu,
        port: EvtchnPort(0),
    };
    event_channel_op(
        &mut hc(),
        EvtchnOp::BindVirq.nr(),
        handle_mut(&mut arg).cast(),
    )?;
    Ok(arg.port)
}

/// Close a port.
pub fn close(port: EvtchnPort) -> Result<(), Errno> {
    let arg = EvtchnClose { port };
    event_channel_op(&mut hc(), EvtchnOp::Close.nr(), handle(&arg).cast())?;
    Ok(())
}

/// Acknowledge everything pending on vCPU 0: clear
/// `evtchn_upcall_pending`, the selector, and every pending port that is not
/// masked. The default event upcall does exactly this.
pub fn acknowledge_all() {
    shared::clear_upcall_pending(0);
    let sel = shared::pending_sel(0).swap(0, Ordering::AcqRel);
    for word in (0..EVTCHN_WORDS).filter(|w| sel & (1 << w) != 0) {
        let mask = shared::evtchn_mask(word).load(Ordering::Acquire);
        shared::evtchn_pending(word).fetch_and(mask, Ordering::AcqRel);
    }
}
