//! Serving a domain's store ring: requests reassembled across reads,
//! replies buffered while the response ring is full, per-connection bounds,
//! protocol errors, and reconnection (`docs/misc/xenstore-ring.txt`).

use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::xenstore::{
    XENSTORE_CONNECTED, XENSTORE_ERROR_NONE, XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX,
    XENSTORE_RECONNECT, XENSTORE_SERVER_FEATURE_ERROR, XENSTORE_SERVER_FEATURE_RECONNECTION,
    XenstoreBack, XenstoreDomainInterface as Intf, XsdSockmsg,
};
use zerocopy::FromBytes;

use crate::daemon::Xenstored;
use crate::limits::PAYLOAD_MAX;

/// Header size on the wire.
const HDR: usize = 16;

/// What xenstored advertises in `server_features`.
pub const SERVER_FEATURES: u32 =
    XENSTORE_SERVER_FEATURE_RECONNECTION | XENSTORE_SERVER_FEATURE_ERROR;

/// Per-connection ring state.
#[derive(Debug, Default)]
pub(crate) struct RingState {
    /// The request being reassembled: header, then payload.
    inbuf: Vec<u8>,
    /// Bytes of the oldest queued message already on the ring.
    pub out_sent: usize,
    /// A protocol error stopped the connection until the guest reconnects
    /// or the domain is introduced again (`is_ignored`).
    pub ignored: bool,
    /// Newly introduced: advertise features and set `XENSTORE_CONNECTED`.
    pub announce: bool,
    /// Introduced again: zero the ring indices.
    pub reset_indices: bool,
}

impl RingState {
    /// Forget a partial request and a partially written reply.
    pub fn clear_partial(&mut self) {
        self.inbuf.clear();
        self.out_sent = 0;
    }
}

/// The result of one [`Xenstored::service_ring`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// The ring changed (indices, `connection` or `error`): signal the
    /// domain's store event channel.
    pub notify: bool,
    /// A partial request is waiting for more bytes, or requests are left
    /// unread because the connection's output is over its bound.
    pub pending_input: bool,
    /// Output is queued that the full response ring could not take.
    pub pending_output: bool,
}

fn field(page: &[AtomicU32], off: usize) -> Option<&AtomicU32> {
    page.get(off / 4)
}

fn set(page: &[AtomicU32], off: usize, v: u32) {
    if let Some(w) = field(page, off) {
        w.store(v, Ordering::Release);
    }
}

fn get(page: &[AtomicU32], off: usize) -> u32 {
    field(page, off).map_or(0, |w| w.load(Ordering::Acquire))
}

fn zero_indices(page: &[AtomicU32]) {
    for off in [
        offset_of!(Intf, req_cons),
        offset_of!(Intf, req_prod),
        offset_of!(Intf, rsp_cons),
        offset_of!(Intf, rsp_prod),
    ] {
        set(page, off, 0);
    }
}

impl Xenstored {
    /// Serve `domid`'s store ring `page` (the guest's
    /// `xenstore_domain_interface`, mapped by the caller): handle a
    /// reconnection request, write queued output while the response ring
    /// has room, and read and handle requests while the connection's output
    /// is within its bounds. Call it when the domain's event channel fires
    /// and after anything that may have queued output for it (any request
    /// from another connection can fire its watches). Never blocks.
    pub fn service_ring(&mut self, domid: u32, page: &[AtomicU32]) -> Service {
        let mut s = Service::default();
        let Ok(mut back) = XenstoreBack::new(page) else {
            return s;
        };
        let Some(c) = self.conns.get_mut(&domid) else {
            return s;
        };
        if c.ring.announce {
            c.ring.announce = false;
            set(page, offset_of!(Intf, server_features), SERVER_FEATURES);
            set(page, offset_of!(Intf, error), XENSTORE_ERROR_NONE);
            set(page, offset_of!(Intf, connection), XENSTORE_CONNECTED);
            s.notify = true;
        }
        if c.ring.reset_indices {
            c.ring.reset_indices = false;
            zero_indices(page);
            set(page, offset_of!(Intf, server_features), SERVER_FEATURES);
            set(page, offset_of!(Intf, error), XENSTORE_ERROR_NONE);
            s.notify = true;
        }
        if get(page, offset_of!(Intf, connection)) == XENSTORE_RECONNECT {
            // The guest asks for a fresh connection: drop everything it had,
            // zero the indices, then tell it we are connected again.
            c.reset();
            c.ring.ignored = false;
            zero_indices(page);
            set(page, offset_of!(Intf, error), XENSTORE_ERROR_NONE);
            set(page, offset_of!(Intf, connection), XENSTORE_CONNECTED);
            s.notify = true;
        }
        if c.ring.ignored {
            return s;
        }
        let privileged = domid == 0;
        let queue_cap = self.quotas().event_queue_bytes;
        let max_outstanding = self.quotas().req_outstanding;
        loop {
            let Some(c) = self.conns.get_mut(&domid) else {
                return s;
            };
            // Output first, so replies make room for more requests.
            while let Some(m) = c.out.front() {
                let bytes = m.to_bytes();
                let Some(rest) = bytes.get(c.ring.out_sent..) else {
                    c.ring.out_sent = 0;
                    c.pop();
                    continue;
                };
                match back.responses.write(rest) {
                    Err(_) => return self.ignore(domid, page, XENSTORE_ERROR_RINGIDX, s),
                    Ok(n) => {
                        s.notify |= n > 0;
                        c.ring.out_sent += n;
                        if c.ring.out_sent < bytes.len() {
                            break;
                        }
                        c.ring.out_sent = 0;
                        c.pop();
                    }
                }
            }
            s.pending_output = !c.out.is_empty();
            // Input, unless this connection's output is over its bounds.
            let avail = match back.requests.available() {
                Ok(n) => n as usize,
                Err(_) => return self.ignore(domid, page, XENSTORE_ERROR_RINGIDX, s),
            };
            let over =
                c.out_bytes >= queue_cap || (!privileged && c.outstanding >= max_outstanding);
            s.pending_input = !c.ring.inbuf.is_empty() || (over && avail > 0);
            if over || avail == 0 {
                return s;
            }
            let want = if c.ring.inbuf.len() < HDR {
                HDR - c.ring.inbuf.len()
            } else {
                let len = XsdSockmsg::read_from_bytes(&c.ring.inbuf[..HDR]).map_or(0, |h| h.len);
                (HDR + len as usize).saturating_sub(c.ring.inbuf.len())
            };
            let mut buf = [0u8; PAYLOAD_MAX];
            let want = want.min(avail).min(buf.len());
            let n = match back.requests.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(_) => return self.ignore(domid, page, XENSTORE_ERROR_RINGIDX, s),
            };
            s.notify |= n > 0;
            c.ring.inbuf.extend_from_slice(&buf[..n]);
            if c.ring.inbuf.len() < HDR {
                continue;
            }
            let Ok(hdr) = XsdSockmsg::read_from_bytes(&c.ring.inbuf[..HDR]) else {
                continue;
            };
            if hdr.len as usize > PAYLOAD_MAX {
                // 4.17: "Client tried to feed us" too much; stop serving.
                return self.ignore(domid, page, XENSTORE_ERROR_PROTO, s);
            }
            if c.ring.inbuf.len() == HDR + hdr.len as usize {
                let msg = core::mem::take(&mut c.ring.inbuf);
                self.request(domid, &hdr, &msg[HDR..]);
            }
        }
    }

    /// `ignore_connection`: report `err` in the ring's `error` field, drop
    /// the connection's watches, transactions and queued data, and serve it
    /// no more until it reconnects or is introduced again.
    fn ignore(&mut self, domid: u32, page: &[AtomicU32], err: u32, mut s: Service) -> Service {
        if let Some(c) = self.conns.get_mut(&domid) {
            c.reset();
            c.ring.ignored = true;
        }
        set(page, offset_of!(Intf, error), err);
        s.notify = true;
        s.pending_input = false;
        s.pending_output = false;
        s
    }

    /// Whether a protocol error stopped `domid`'s connection.
    pub fn is_ignored(&self, domid: u32) -> bool {
        self.conns.get(&domid).is_some_and(|c| c.ring.ignored)
    }
}
