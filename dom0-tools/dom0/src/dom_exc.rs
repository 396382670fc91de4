//! `VIRQ_DOM_EXC`: the hypervisor tells dom0 that a domain shut down or crashed. dom0
//! binds it at start; its handler only raises a flag that the agent takes
//! (`Hypervisor::take_dom_exc`) before it looks at its domains.

use core::sync::atomic::{AtomicBool, Ordering};

use pv_runtime::abi::evtchn::Virq;
use pv_runtime::abi::{EvtchnPort, VcpuId};
use pv_runtime::evtchn::{self, Handler};

/// Raised by the upcall; starts raised so the first look happens at once.
static FIRED: AtomicBool = AtomicBool::new(true);

fn on_dom_exc(_: EvtchnPort) {
    FIRED.store(true, Ordering::SeqCst);
}

/// Binds `VIRQ_DOM_EXC` to a handler; on failure dom0 falls back to looking once a
/// second.
pub fn bind() -> Result<EvtchnPort, pv_runtime::abi::Errno> {
    let port = evtchn::bind_virq(Virq::DomExc, VcpuId(0))?;
    let _ = evtchn::set_handler(port, Handler::Fn(on_dom_exc));
    let _ = evtchn::unmask(port);
    Ok(port)
}

/// Whether the event fired since the last call (and clears it).
pub fn take() -> bool {
    FIRED.swap(false, Ordering::SeqCst)
}
