//! The control ring (netif.h's "Control ring", `feature-ctrl-ring`): a
//! front end that writes `ctrl-ring-ref` and `event-channel-ctrl` sends
//! [`XenNetifCtrlRequest`]s, each answered once, as Linux's
//! `xenvif_ctrl_action` / `process_ctrl_request` answer them ([`answer`]).

use alloc::vec::Vec;

use hypercall_abi::io::netif::{
    XEN_NETIF_CTRL_HASH_ALGORITHM_NONE, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED,
    XEN_NETIF_CTRL_STATUS_SUCCESS, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
    XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
    XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
    XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
    XenNetifCtrlBackRing, XenNetifCtrlRequest, XenNetifCtrlResponse,
};
use hypercall_abi::{DomId, EvtchnPort, GrantRef};

use super::hash::{ALL_TYPES, HashState, MAX_KEY_SIZE, MAX_MAPPING_SIZE};
use crate::hv::{GrantSeg, Hypervisor, RingId};

const PAGE: usize = 4096;

/// A connected control ring.
#[derive(Debug)]
pub(crate) struct Ctrl {
    pub(crate) ring: RingId,
    /// dom0's port.
    pub(crate) port: EvtchnPort,
    /// The front end's ring reference and port.
    pub(crate) ring_ref: u32,
    pub(crate) fe_port: u32,
    /// Private index: every request taken is answered in the same pass,
    /// so `req_cons == rsp_prod_pvt` between passes.
    pub(crate) idx: u32,
    /// What the requests set.
    pub(crate) hash: HashState,
}

/// Why a pass over the control ring stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CtrlPass {
    /// Every published request answered.
    Done,
    /// Requests are left (published while this pass ran): run again.
    More,
    /// The front end published an impossible index: the ring is halted.
    Broken,
}

/// Answers `req` for a front end of domain `dom` with `queues` queues,
/// updating `h`: `(status, data)` as Linux's `process_ctrl_request`. Types
/// it does not know (the GREF_MAPPING ones included: Linux's netback does
/// not implement them) are `XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`.
pub(crate) fn answer<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    queues: u32,
    h: &mut HashState,
    req: &XenNetifCtrlRequest,
) -> (u32, u32) {
    let [d0, d1, d2] = req.data;
    match req.type_ {
        XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM => match d0 {
            XEN_NETIF_CTRL_HASH_ALGORITHM_NONE | XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ => {
                h.alg = d0;
                (XEN_NETIF_CTRL_STATUS_SUCCESS, 0)
            }
            _ => (XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, 0),
        },
        XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS => {
            if h.alg == XEN_NETIF_CTRL_HASH_ALGORITHM_NONE {
                (XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED, 0)
            } else {
                (XEN_NETIF_CTRL_STATUS_SUCCESS, ALL_TYPES)
            }
        }
        XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS => {
            if d0 & !ALL_TYPES != 0 || h.alg == XEN_NETIF_CTRL_HASH_ALGORITHM_NONE {
                (XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, 0)
            } else {
                h.flags = d0;
                (XEN_NETIF_CTRL_STATUS_SUCCESS, 0)
            }
        }
        XEN_NETIF_CTRL_TYPE_SET_HASH_KEY => (set_key(hv, dom, h, d0, d1), 0),
        XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE => {
            (XEN_NETIF_CTRL_STATUS_SUCCESS, MAX_MAPPING_SIZE)
        }
        XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE => {
            if d0 > MAX_MAPPING_SIZE {
                (XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, 0)
            } else {
                h.size = d0;
                h.mapping = [0; MAX_MAPPING_SIZE as usize];
                (XEN_NETIF_CTRL_STATUS_SUCCESS, 0)
            }
        }
        XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING => (set_mapping(hv, dom, queues, h, d0, d1, d2), 0),
        _ => (XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED, 0),
    }
}

/// `xenvif_set_hash_key`: `len` bytes at the start of grant `gref`, the
/// rest of the key zero. A key that is too long or cannot be copied is
/// refused and the old one stays.
fn set_key<H: Hypervisor>(hv: &mut H, dom: DomId, h: &mut HashState, gref: u32, len: u32) -> u32 {
    let Ok(len) = usize::try_from(len) else {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    };
    if len > MAX_KEY_SIZE {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    let mut key = [0u8; MAX_KEY_SIZE];
    if len != 0 && !copy_in(hv, dom, gref, &mut key[..len]) {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    h.key = key;
    XEN_NETIF_CTRL_STATUS_SUCCESS
}

/// `xenvif_set_hash_mapping` (Linux 6.1's): `len` entries at the start of
/// grant `gref` become entries `off..off + len` of the table, if they fit
/// the table's size and each names a queue the front end has. On any
/// failure the table is left as it was.
fn set_mapping<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    queues: u32,
    h: &mut HashState,
    gref: u32,
    len: u32,
    off: u32,
) -> u32 {
    let Some(end) = off.checked_add(len) else {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    };
    if end > h.size || len as usize > PAGE / 4 {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    let (off, len) = (off as usize, len as usize);
    let mut bytes = alloc::vec![0u8; len * 4];
    if len != 0 && !copy_in(hv, dom, gref, &mut bytes) {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    let entries: Vec<u32> = bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if entries.iter().any(|q| *q >= queues) {
        return XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
    }
    h.mapping[off..off + len].copy_from_slice(&entries);
    XEN_NETIF_CTRL_STATUS_SUCCESS
}

/// Copies `buf.len()` (at most a page) bytes from the start of grant `gref`
/// of `dom`; whether the copy succeeded.
fn copy_in<H: Hypervisor>(hv: &mut H, dom: DomId, gref: u32, buf: &mut [u8]) -> bool {
    let Ok(len) = u16::try_from(buf.len()) else {
        return false;
    };
    if buf.len() > PAGE {
        return false;
    }
    let seg = GrantSeg {
        gref: GrantRef(gref),
        offset: 0,
        len,
        buf_off: 0,
    };
    let mut st = [0i16; 1];
    hv.grant_copy(dom, false, buf, &[seg], &mut st).is_ok() && st[0] == 0
}

/// Answers every request published on `c`'s ring (at most a ring's worth
/// per pass), then publishes the responses and notifies the front end if
/// it asked.
pub(crate) fn serve<H: Hypervisor>(hv: &mut H, dom: DomId, queues: u32, c: &mut Ctrl) -> CtrlPass {
    let mut reqs: Vec<XenNetifCtrlRequest> = Vec::new();
    {
        let Some(page) = hv.ring(c.ring) else {
            return CtrlPass::Done;
        };
        let Ok(mut back) = XenNetifCtrlBackRing::resume(page, c.idx, c.idx) else {
            return CtrlPass::Done;
        };
        loop {
            match back.take_request() {
                Ok(Some(q)) => reqs.push(q),
                Ok(None) => break,
                Err(_) => return CtrlPass::Broken,
            }
        }
    }
    let rsps: Vec<XenNetifCtrlResponse> = reqs
        .iter()
        .map(|q| {
            let (status, data) = answer(hv, dom, queues, &mut c.hash, q);
            XenNetifCtrlResponse {
                id: q.id,
                type_: q.type_,
                status,
                data,
            }
        })
        .collect();
    let Some(page) = hv.ring(c.ring) else {
        return CtrlPass::Done;
    };
    let n = u32::try_from(reqs.len()).unwrap_or(u32::MAX);
    let Ok(mut back) = XenNetifCtrlBackRing::resume(page, c.idx, c.idx.wrapping_add(n)) else {
        return CtrlPass::Done;
    };
    for r in &rsps {
        let _ = back.put_response(r);
    }
    c.idx = back.rsp_prod_pvt();
    let notify = back.push_responses();
    let pass = match back.final_check_for_requests() {
        Ok(true) => CtrlPass::More,
        Ok(false) => CtrlPass::Done,
        Err(_) => CtrlPass::Broken,
    };
    if notify {
        hv.notify(c.port);
    }
    pass
}
