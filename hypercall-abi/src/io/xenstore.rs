//! XenStore wire protocol (`io/xs_wire.h`).
//!
//! The guest talks to xenstored through one page (its MFN is
//! `start_info.store_mfn`, pre-seeded as grant entry 1) holding two byte
//! streams: `req` (guest to xenstored) and `rsp` (replies and watch events).
//! Each message is a [`XsdSockmsg`] header followed by `len` payload bytes
//! (at most [`XENSTORE_PAYLOAD_MAX`]); signal the store event channel
//! (`start_info.store_evtchn`) after every update and never assume the
//! indices start at 0.

use core::mem::offset_of;
use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::ring::RingError;
use super::stream::{StreamConsumer, StreamLayout, StreamProducer};

/// Message types (`enum xsd_sockmsg_type`, Xen 4.17).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XsdSockmsgType {
    /// Tool-specific control (`XS_CONTROL`, formerly `XS_DEBUG`).
    Control = 0,
    /// List children: `path\0` → names, each NUL-terminated.
    Directory = 1,
    /// Read: `path\0` → value (no NUL).
    Read = 2,
    /// Permissions: `path\0` → permission strings.
    GetPerms = 3,
    /// Watch: `path\0token\0` → `OK\0`; fires once immediately.
    Watch = 4,
    /// Unwatch: `path\0token\0`.
    Unwatch = 5,
    /// Start a transaction: `\0` → `<txid>\0`.
    TransactionStart = 6,
    /// End a transaction: `T\0` commit, `F\0` abort (`EAGAIN`: retry).
    TransactionEnd = 7,
    /// Introduce a domain (tools): `<domid>\0<mfn>\0<evtchn>\0`.
    Introduce = 8,
    /// Release a domain (tools): `<domid>\0`.
    Release = 9,
    /// `<domid>\0` → `/local/domain/<domid>\0`.
    GetDomainPath = 10,
    /// Write: `path\0value` (value not NUL-terminated).
    Write = 11,
    /// Make a directory: `path\0`.
    Mkdir = 12,
    /// Remove: `path\0`.
    Rm = 13,
    /// Set permissions: `path\0perm\0perm\0...`.
    SetPerms = 14,
    /// Unsolicited watch event: `path\0token\0` (req_id = tx_id = 0).
    WatchEvent = 15,
    /// Error reply: the errno name, e.g. `ENOENT\0`.
    Error = 16,
    /// `<domid>\0` → `T\0` or `F\0`.
    IsDomainIntroduced = 17,
    /// Resume a domain (tools): `<domid>\0`.
    Resume = 18,
    /// Set a domain's target (tools): `<domid>\0<tdomid>\0`.
    SetTarget = 19,
    /// Remove all watches: `\0`. (20 was the removed `XS_RESTRICT`.)
    ResetWatches = 21,
    /// Partial directory: `path\0offset\0` → `gencnt\0names...`.
    DirectoryPart = 22,
    /// Invalid (`XS_INVALID`).
    Invalid = 0xFFFF,
}

impl XsdSockmsgType {
    /// The type numbered `n`, if defined.
    pub const fn from_raw(n: u32) -> Option<XsdSockmsgType> {
        use XsdSockmsgType::*;
        Some(match n {
            0 => Control,
            1 => Directory,
            2 => Read,
            3 => GetPerms,
            4 => Watch,
            5 => Unwatch,
            6 => TransactionStart,
            7 => TransactionEnd,
            8 => Introduce,
            9 => Release,
            10 => GetDomainPath,
            11 => Write,
            12 => Mkdir,
            13 => Rm,
            14 => SetPerms,
            15 => WatchEvent,
            16 => Error,
            17 => IsDomainIntroduced,
            18 => Resume,
            19 => SetTarget,
            21 => ResetWatches,
            22 => DirectoryPart,
            0xFFFF => Invalid,
            _ => return None,
        })
    }
}

/// Number of message types (`XS_TYPE_COUNT`).
pub const XS_TYPE_COUNT: u32 = 23;

/// Error names xenstored may send in an `XS_ERROR` reply, in `xsd_errors`
/// order.
pub const XSD_ERRORS: [&str; 16] = [
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
];

/// `struct xsd_sockmsg` (16 bytes): every message's header.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XsdSockmsg {
    /// An [`XsdSockmsgType`].
    pub type_: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id, 0 for none.
    pub tx_id: u32,
    /// Payload length.
    pub len: u32,
}

/// Watch event payload field: the path (`XS_WATCH_PATH`).
pub const XS_WATCH_PATH: usize = 0;
/// Watch event payload field: the token (`XS_WATCH_TOKEN`).
pub const XS_WATCH_TOKEN: usize = 1;

/// Bytes in each stream of the page (`XENSTORE_RING_SIZE`).
pub const XENSTORE_RING_SIZE: usize = 1024;
/// Largest payload (`XENSTORE_PAYLOAD_MAX`).
pub const XENSTORE_PAYLOAD_MAX: u32 = 4096;
/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// Longest relative path (`XENSTORE_REL_PATH_MAX`).
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `server_features`: reconnection supported
/// (`XENSTORE_SERVER_FEATURE_RECONNECTION`).
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `server_features`: the `error` field is used (`XENSTORE_SERVER_FEATURE_ERROR`).
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;
/// `connection`: connected (`XENSTORE_CONNECTED`).
pub const XENSTORE_CONNECTED: u32 = 0;
/// `connection`: reconnection in progress (`XENSTORE_RECONNECT`).
pub const XENSTORE_RECONNECT: u32 = 1;
/// `error`: none (`XENSTORE_ERROR_NONE`).
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `error`: communication problem (`XENSTORE_ERROR_COMM`).
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `error`: invalid ring index (`XENSTORE_ERROR_RINGIDX`).
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `error`: protocol violation, e.g. a message too long (`XENSTORE_ERROR_PROTO`).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// `struct xenstore_domain_interface` (2076 bytes, Xen 4.17).
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests; written by the guest.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and watch events; written by xenstored.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// xenstored's consumer index of `req`.
    pub req_cons: u32,
    /// Guest's producer index of `req`.
    pub req_prod: u32,
    /// Guest's consumer index of `rsp`.
    pub rsp_cons: u32,
    /// xenstored's producer index of `rsp`.
    pub rsp_prod: u32,
    /// Written by xenstored: `XENSTORE_SERVER_FEATURE_*`.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// Written by xenstored: `XENSTORE_ERROR_*`.
    pub error: u32,
}

/// The request stream (guest to xenstored).
pub const REQ_STREAM: StreamLayout = StreamLayout {
    data: offset_of!(XenstoreDomainInterface, req),
    len: XENSTORE_RING_SIZE,
    cons: offset_of!(XenstoreDomainInterface, req_cons),
    prod: offset_of!(XenstoreDomainInterface, req_prod),
};

/// The response stream (xenstored to guest).
pub const RSP_STREAM: StreamLayout = StreamLayout {
    data: offset_of!(XenstoreDomainInterface, rsp),
    len: XENSTORE_RING_SIZE,
    cons: offset_of!(XenstoreDomainInterface, rsp_cons),
    prod: offset_of!(XenstoreDomainInterface, rsp_prod),
};

/// The guest's end of the XenStore page.
#[derive(Debug)]
pub struct XenstoreFront<'a> {
    /// Produces `req`.
    pub requests: StreamProducer<'a>,
    /// Consumes `rsp`.
    pub responses: StreamConsumer<'a>,
}

impl<'a> XenstoreFront<'a> {
    /// Attach to the store page.
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        Ok(XenstoreFront {
            requests: StreamProducer::new(page, REQ_STREAM)?,
            responses: StreamConsumer::new(page, RSP_STREAM)?,
        })
    }
}

/// xenstored's end of a guest's store page.
#[derive(Debug)]
pub struct XenstoreBack<'a> {
    /// Consumes `req`.
    pub requests: StreamConsumer<'a>,
    /// Produces `rsp`.
    pub responses: StreamProducer<'a>,
}

impl<'a> XenstoreBack<'a> {
    /// Attach to a guest's store page.
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        Ok(XenstoreBack {
            requests: StreamConsumer::new(page, REQ_STREAM)?,
            responses: StreamProducer::new(page, RSP_STREAM)?,
        })
    }
}

assert_layout!(XsdSockmsg, 16, type_ = 0, req_id = 4, tx_id = 8, len = 12);
assert_layout!(
    XenstoreDomainInterface,
    2076,
    req = 0,
    rsp = 1024,
    req_cons = 2048,
    req_prod = 2052,
    rsp_cons = 2056,
    rsp_prod = 2060,
    server_features = 2064,
    connection = 2068,
    error = 2072,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::PAGE_WORDS;

    #[test]
    fn message_round_trip() {
        let page: [AtomicU32; PAGE_WORDS] = core::array::from_fn(|_| AtomicU32::new(0));
        let mut front = XenstoreFront::new(&page).unwrap();
        let mut back = XenstoreBack::new(&page).unwrap();
        let hdr = XsdSockmsg {
            type_: XsdSockmsgType::Read as u32,
            req_id: 7,
            tx_id: 0,
            len: 6,
        };
        front.requests.write(hdr.as_bytes()).unwrap();
        front.requests.write(b"domid\0").unwrap();
        let mut buf = [0u8; 22];
        assert_eq!(back.requests.read(&mut buf).unwrap(), 22);
        let got = XsdSockmsg::read_from_bytes(&buf[..16]).unwrap();
        assert_eq!(got, hdr);
        assert_eq!(&buf[16..], b"domid\0");
    }
}
