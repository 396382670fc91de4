//! The XenStore wire format: encoding requests, reassembling messages from
//! the response stream, and reading the payloads of replies and events.
//!
//! Every message is a 16-byte [`XsdSockmsg`] header (little-endian `type`,
//! `req_id`, `tx_id`, `len`) and `len` payload bytes. Request payloads are
//! NUL-terminated strings, except `XS_WRITE`, whose value follows the path's
//! NUL and is not terminated. Reply payloads are the raw value (`XS_READ`),
//! a list of NUL-terminated strings (`XS_DIRECTORY`, `XS_GET_PERMS`), or one
//! NUL-terminated string (`"OK"`, a transaction id, a path, an errno name).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use hypercall_abi::io::xenstore::{
    XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX, XsdSockmsg, XsdSockmsgType,
};
use hypercall_abi::{DomId, Errno};

use super::XsError;

/// Header length on the wire.
pub const HEADER_LEN: usize = 16;

/// A transaction id; [`TxId::NONE`] (0, Linux's `XBT_NIL`) outside any
/// transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// Who may do what with a node: one entry of a node's permission list.
///
/// The first entry of a list names the node's owner (who may do anything)
/// and, with its access, what every domain not listed may do; the others
/// grant `access` to domain `domid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: DomId,
    /// What it may do.
    pub access: Access,
}

/// Access letters of a permission string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: read and write.
    Both,
}

impl Access {
    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

impl Perm {
    /// Parse one permission string (`r5`, `b0`, ...).
    pub fn parse(s: &[u8]) -> Option<Perm> {
        let (&letter, digits) = s.split_first()?;
        let access = match letter {
            b'n' => Access::None,
            b'r' => Access::Read,
            b'w' => Access::Write,
            b'b' => Access::Both,
            _ => return None,
        };
        let domid = parse_decimal(digits)?;
        Some(Perm {
            domid: DomId(u16::try_from(domid).ok()?),
            access,
        })
    }
}

impl core::fmt::Display for Perm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.access.letter(), self.domid.0)
    }
}

/// One request, with its arguments. [`Request::encode`] lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `XS_DIRECTORY`: the children of `path`.
    Directory(&'a str),
    /// `XS_DIRECTORY_PART`: children from byte `offset` of the list.
    DirectoryPart {
        /// The node.
        path: &'a str,
        /// Where to continue.
        offset: u32,
    },
    /// `XS_READ`: the value of `path`.
    Read(&'a str),
    /// `XS_GET_PERMS`: the permissions of `path`.
    GetPerms(&'a str),
    /// `XS_SET_PERMS`: replace the permissions of `path`.
    SetPerms {
        /// The node.
        path: &'a str,
        /// Owner first.
        perms: &'a [Perm],
    },
    /// `XS_WATCH`: watch `path` (and below); events carry `token`.
    Watch {
        /// What to watch.
        path: &'a str,
        /// Echoed in every event.
        token: &'a str,
    },
    /// `XS_UNWATCH`: remove the watch registered with this path and token.
    Unwatch {
        /// As registered.
        path: &'a str,
        /// As registered.
        token: &'a str,
    },
    /// `XS_TRANSACTION_START`.
    TransactionStart,
    /// `XS_TRANSACTION_END`: commit (`T`) or abort (`F`); the transaction
    /// id goes in the header.
    TransactionEnd {
        /// Commit rather than abort.
        commit: bool,
    },
    /// `XS_GET_DOMAIN_PATH`: `/local/domain/<domid>`.
    GetDomainPath(DomId),
    /// `XS_WRITE`: set `path` to `value` (creating missing parents).
    Write {
        /// The node.
        path: &'a str,
        /// The value, any bytes.
        value: &'a [u8],
    },
    /// `XS_MKDIR`: create `path` with an empty value.
    Mkdir(&'a str),
    /// `XS_RM`: remove `path` and everything below.
    Rm(&'a str),
    /// `XS_RESET_WATCHES`: remove every watch of this connection.
    ResetWatches,
    /// `XS_IS_DOMAIN_INTRODUCED` (tools).
    IsDomainIntroduced(DomId),
    /// `XS_INTRODUCE` (tools): a domain's store page and port.
    Introduce {
        /// The domain.
        domid: DomId,
        /// Its store page's frame.
        gfn: u64,
        /// Its store event channel.
        port: u32,
    },
    /// `XS_RELEASE` (tools).
    Release(DomId),
    /// `XS_RESUME` (tools).
    Resume(DomId),
    /// `XS_SET_TARGET` (tools): `domid` may act on `target`'s nodes.
    SetTarget {
        /// The privileged domain.
        domid: DomId,
        /// Its target.
        target: DomId,
    },
}

impl Request<'_> {
    /// The message type.
    pub const fn kind(&self) -> XsdSockmsgType {
        use XsdSockmsgType as T;
        match self {
            Request::Directory(_) => T::Directory,
            Request::DirectoryPart { .. } => T::DirectoryPart,
            Request::Read(_) => T::Read,
            Request::GetPerms(_) => T::GetPerms,
            Request::SetPerms { .. } => T::SetPerms,
            Request::Watch { .. } => T::Watch,
            Request::Unwatch { .. } => T::Unwatch,
            Request::TransactionStart => T::TransactionStart,
            Request::TransactionEnd { .. } => T::TransactionEnd,
            Request::GetDomainPath(_) => T::GetDomainPath,
            Request::Write { .. } => T::Write,
            Request::Mkdir(_) => T::Mkdir,
            Request::Rm(_) => T::Rm,
            Request::ResetWatches => T::ResetWatches,
            Request::IsDomainIntroduced(_) => T::IsDomainIntroduced,
            Request::Introduce { .. } => T::Introduce,
            Request::Release(_) => T::Release,
            Request::Resume(_) => T::Resume,
            Request::SetTarget { .. } => T::SetTarget,
        }
    }

    /// Append the whole message (header and payload) to `out`. Nothing is
    /// appended on error: a path or token with a NUL byte, a path longer
    /// than xenstored accepts ([`XsError::Invalid`]), or a payload over
    /// `XENSTORE_PAYLOAD_MAX` ([`XsError::TooBig`]).
    pub fn encode(&self, req_id: u32, tx: TxId, out: &mut Vec<u8>) -> Result<(), XsError> {
        let mut body = Vec::new();
        match *self {
            Request::Directory(p)
            | Request::Read(p)
            | Request::GetPerms(p)
            | Request::Mkdir(p)
            | Request::Rm(p) => path_arg(&mut body, p)?,
            Request::DirectoryPart { path, offset } => {
                path_arg(&mut body, path)?;
                number_arg(&mut body, offset);
            }
            Request::SetPerms { path, perms } => {
                path_arg(&mut body, path)?;
                for p in perms {
                    let mut s = String::new();
                    let _ = write!(s, "{p}");
                    string_arg(&mut body, &s)?;
                }
            }
            Request::Watch { path, token } | Request::Unwatch { path, token } => {
                path_arg(&mut body, path)?;
                string_arg(&mut body, token)?;
            }
            Request::TransactionStart | Request::ResetWatches => body.push(0),
            Request::TransactionEnd { commit } => {
                string_arg(&mut body, if commit { "T" } else { "F" })?;
            }
            Request::GetDomainPath(d)
            | Request::IsDomainIntroduced(d)
            | Request::Release(d)
            | Request::Resume(d) => number_arg(&mut body, d.0),
            Request::Write { path, value } => {
                path_arg(&mut body, path)?;
                body.extend_from_slice(value);
            }
            Request::Introduce { domid, gfn, port } => {
                number_arg(&mut body, domid.0);
                number_arg(&mut body, gfn);
                number_arg(&mut body, port);
            }
            Request::SetTarget { domid, target } => {
                number_arg(&mut body, domid.0);
                number_arg(&mut body, target.0);
            }
        }
        let len = u32::try_from(body.len()).map_err(|_| XsError::TooBig)?;
        if len > XENSTORE_PAYLOAD_MAX {
            return Err(XsError::TooBig);
        }
        let header = XsdSockmsg {
            type_: self.kind() as u32,
            req_id,
            tx_id: tx.0,
            len,
        };
        out.extend_from_slice(&header_bytes(&header));
        out.extend_from_slice(&body);
        Ok(())
    }
}

/// A header as its 16 wire bytes.
pub fn header_bytes(h: &XsdSockmsg) -> [u8; HEADER_LEN] {
    let mut b = [0; HEADER_LEN];
    for (chunk, v) in b
        .chunks_exact_mut(4)
        .zip([h.type_, h.req_id, h.tx_id, h.len])
    {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    b
}

fn header_from(b: &[u8; HEADER_LEN]) -> XsdSockmsg {
    let word = |i: usize| {
        let mut w = [0; 4];
        if let Some(s) = b.get(i * 4..i * 4 + 4) {
            w.copy_from_slice(s);
        }
        u32::from_le_bytes(w)
    };
    XsdSockmsg {
        type_: word(0),
        req_id: word(1),
        tx_id: word(2),
        len: word(3),
    }
}

fn path_arg(body: &mut Vec<u8>, path: &str) -> Result<(), XsError> {
    let max = if path.starts_with('/') {
        XENSTORE_ABS_PATH_MAX
    } else {
        XENSTORE_REL_PATH_MAX
    };
    if path.is_empty() || path.len() > max {
        return Err(XsError::Invalid);
    }
    string_arg(body, path)
}

fn string_arg(body: &mut Vec<u8>, s: &str) -> Result<(), XsError> {
    if s.as_bytes().contains(&0) {
        return Err(XsError::Invalid);
    }
    body.extend_from_slice(s.as_bytes());
    body.push(0);
    Ok(())
}

fn number_arg(body: &mut Vec<u8>, n: impl core::fmt::Display) {
    let mut s = String::new();
    let _ = write!(s, "{n}");
    body.extend_from_slice(s.as_bytes());
    body.push(0);
}

/// A whole message from xenstored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The raw type (a reply has its request's type, or `XS_ERROR`).
    pub type_: u32,
    /// The request id it answers (0 in a watch event).
    pub req_id: u32,
    /// The transaction id.
    pub tx_id: u32,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    /// The type, if it is one this crate knows.
    pub fn kind(&self) -> Option<XsdSockmsgType> {
        XsdSockmsgType::from_raw(self.type_)
    }

    /// For a reply to a request of type `kind`: the payload, or the error
    /// the reply carries (`XS_ERROR`), or [`XsError::Protocol`] if the
    /// reply is of another type.
    pub fn into_reply(self, kind: XsdSockmsgType) -> Result<Vec<u8>, XsError> {
        if self.type_ == XsdSockmsgType::Error as u32 {
            return Err(XsError::Errno(parse_error(&self.payload)));
        }
        if self.type_ != kind as u32 {
            return Err(XsError::Protocol);
        }
        Ok(self.payload)
    }
}

/// The errno an `XS_ERROR` payload names (`"EAGAIN\0"` → `EAGAIN`). A name
/// this crate does not know counts as `EINVAL`, as in Linux.
pub fn parse_error(payload: &[u8]) -> Errno {
    let name = first_string(payload);
    Errno::ALL
        .iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map_or(Errno::EINVAL, |&(_, e)| e)
}

/// The bytes before the first NUL (all of them if there is none).
pub fn first_string(payload: &[u8]) -> &[u8] {
    payload.split(|&b| b == 0).next().unwrap_or(&[])
}

/// The NUL-terminated strings of a payload, in order. As in Linux, only
/// terminated strings count: a trailing piece without its NUL is ignored,
/// and `"\0"` is one empty string.
pub fn strings(payload: &[u8]) -> impl Iterator<Item = &[u8]> {
    let n = payload.iter().filter(|&&b| b == 0).count();
    payload.split(|&b| b == 0).take(n)
}

/// Strings of a payload as owned UTF-8 (lossy).
pub fn string_list(payload: &[u8]) -> Vec<String> {
    strings(payload)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// A decimal number, all of `s` (no sign, no spaces).
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The transaction id in an `XS_TRANSACTION_START` reply (`"<id>\0"`).
pub fn parse_tx_id(payload: &[u8]) -> Result<TxId, XsError> {
    let n = parse_decimal(first_string(payload)).ok_or(XsError::Protocol)?;
    match u32::try_from(n) {
        Ok(id) if id != 0 => Ok(TxId(id)),
        _ => Err(XsError::Protocol),
    }
}

/// The permission list in an `XS_GET_PERMS` reply.
pub fn parse_perms(payload: &[u8]) -> Result<Vec<Perm>, XsError> {
    strings(payload)
        .map(|s| Perm::parse(s).ok_or(XsError::Protocol))
        .collect()
}

/// A watch event: the path that changed (or the watched path, for the
/// event every new watch fires once) and the watch's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The node.
    pub path: String,
    /// The token the watch was registered with.
    pub token: String,
}

impl WatchEvent {
    /// Parse an `XS_WATCH_EVENT` payload (`path\0token\0`).
    pub fn parse(payload: &[u8]) -> Result<WatchEvent, XsError> {
        let mut it = strings(payload);
        let path = it.next().ok_or(XsError::Protocol)?;
        let token = it.next().ok_or(XsError::Protocol)?;
        let s = |b: &[u8]| {
            core::str::from_utf8(b)
                .map(String::from)
                .map_err(|_| XsError::Protocol)
        };
        Ok(WatchEvent {
            path: s(path)?,
            token: s(token)?,
        })
    }
}

/// Reassembles messages from the response stream, which may arrive in
/// pieces of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    have: usize,
    /// The header once complete, and the payload so far.
    body: Option<(XsdSockmsg, Vec<u8>)>,
}

impl Decoder {
    /// A decoder at a message boundary.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether it is between messages (nothing half-read).
    pub fn at_boundary(&self) -> bool {
        self.have == 0 && self.body.is_none()
    }

    /// Forget a half-read message (after a ring reset).
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    /// Take bytes from the front of `input` until one message is complete
    /// or `input` is used up; returns how many bytes were taken and the
    /// message, if one completed. A header announcing more than
    /// `XENSTORE_PAYLOAD_MAX` bytes is [`XsError::Protocol`]: the stream
    /// cannot be trusted after it.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), XsError> {
        let mut used = 0;
        if self.body.is_none() {
            let want = HEADER_LEN - self.have;
            let n = want.min(input.len());
            if let (Some(dst), Some(src)) = (
                self.header.get_mut(self.have..self.have + n),
                input.get(..n),
            ) {
                dst.copy_from_slice(src);
            }
            self.have += n;
            used += n;
            if self.have < HEADER_LEN {
                return Ok((used, None));
            }
            let h = header_from(&self.header);
            self.have = 0;
            if h.len > XENSTORE_PAYLOAD_MAX {
                return Err(XsError::Protocol);
            }
            self.body = Some((h, Vec::with_capacity(h.len as usize)));
        }
        let rest = input.get(used..).unwrap_or(&[]);
        let Some((h, payload)) = self.body.as_mut() else {
            return Ok((used, None));
        };
        let want = (h.len as usize).saturating_sub(payload.len());
        let n = want.min(rest.len());
        payload.extend_from_slice(rest.get(..n).unwrap_or(&[]));
        used += n;
        if payload.len() < h.len as usize {
            return Ok((used, None));
        }
        let Some((h, payload)) = self.body.take() else {
            return Ok((used, None));
        };
        Ok((
            used,
            Some(Message {
                type_: h.type_,
                req_id: h.req_id,
                tx_id: h.tx_id,
                payload,
            }),
        ))
    }
}
