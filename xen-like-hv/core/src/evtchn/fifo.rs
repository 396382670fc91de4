//! The FIFO event-channel ABI (`EVTCHNOP_init_control`, `expand_array`,
//! `set_priority`) as a hypervisor that does not offer it answers: every argument is
//! checked as Xen 4.17 checks it, in the same order and with the same errno, and only
//! a request Xen would have carried out is refused, with -EOPNOTSUPP. A guest so
//! learns about its own mistakes exactly as on Xen, and a correct guest falls back to
//! the 2-level ABI (Linux's `xen_evtchn_fifo_init` does on any error). See
//! `docs/evtchn.md`.
//!
//! Xen 4.17's `evtchn_fifo_init_control` checks, in this order:
//! 1. the vCPU exists (-ENOENT);
//! 2. the control block lies inside the page: `offset <= 4096 - 72` (-EINVAL);
//! 3. the offset is 8-byte aligned (-EINVAL);
//! 4. the control frame is the domain's and can be writable memory: a general and a
//!    writable type reference can be taken (-EINVAL). For a PV guest the "gfn" is a
//!    machine frame number.
//!
//! Steps 1-3 need only the argument and the port table ([`check_init_control`],
//! called by [`dispatch`](super::dispatch)); step 4 needs the memory model, which the
//! hypercall layer holds ([`EvtchnError::FifoFrameUnchecked`] hands the frame over).
//! `expand_array` checks nothing before its "FIFO not set up" refusal, and
//! `set_priority` only the port (the priority is the FIFO port op's business, which a
//! 2-level domain does not have).

use super::{EvtchnError, EvtchnTable};
use hypercall_abi::evtchn::{EvtchnFifoControlBlock, EvtchnInitControl};

/// Largest offset of the control block in its frame: it must not cross the page
/// (`PAGE_SIZE - sizeof(evtchn_fifo_control_block_t)` = 4024).
pub const MAX_CONTROL_OFFSET: u32 = 4024;
const _: () = assert!(
    MAX_CONTROL_OFFSET as u64 + core::mem::size_of::<EvtchnFifoControlBlock>() as u64
        == crate::mm::PAGE_SIZE
);

/// Alignment Xen 4.17 demands of the control block's offset. (The structure itself
/// needs only 4; 4.17 still tests the low three bits.)
pub const CONTROL_ALIGN: u32 = 8;

/// Steps 1-3 of `init_control` (see the module docs) against the caller's port
/// table. `Ok` carries the control frame, which must be checked next.
pub fn check_init_control(
    table: &EvtchnTable,
    req: &EvtchnInitControl,
) -> Result<u64, EvtchnError> {
    if req.vcpu.0 >= table.nr_vcpus() {
        return Err(EvtchnError::NoSuchVcpu(req.vcpu));
    }
    if req.offset > MAX_CONTROL_OFFSET {
        return Err(EvtchnError::FifoControlOffset(req.offset));
    }
    if req.offset % CONTROL_ALIGN != 0 {
        return Err(EvtchnError::FifoControlMisaligned(req.offset));
    }
    Ok(req.control_gfn)
}

/// Step 4 and the end of `init_control`: `frame_usable` tells whether the control
/// frame passed (the caller took a general and a writable type reference on it and
/// dropped both again). A bad frame is -EINVAL; a good one gets the refusal Xen gives
/// when FIFO is not available ([`EvtchnError::FifoUnsupported`], -EOPNOTSUPP).
pub fn finish_init_control(control_gfn: u64, frame_usable: bool) -> EvtchnError {
    if frame_usable {
        EvtchnError::FifoUnsupported
    } else {
        EvtchnError::FifoControlFrame(control_gfn)
    }
}
