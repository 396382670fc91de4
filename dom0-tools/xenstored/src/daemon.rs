//! The daemon: connections, the dispatch of every wire operation, watch
//! delivery, domains, `XS_CONTROL`, and the toolstack's direct API.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use hypercall_abi::io::xenstore::{XsdSockmsg, XsdSockmsgType};

use crate::error::Error;
use crate::limits::{PAYLOAD_MAX, Quotas};
use crate::path::{self, atoi};
use crate::perms::{self, Access, Perm, Who};
use crate::ring::RingState;
use crate::store::{self, Fire, Node, Store, Txn, View};

/// `DOMID_SELF`: `XS_IS_DOMAIN_INTRODUCED` answers `T` for it.
pub const DOMID_SELF: u32 = 0x7FF0;
/// First reserved domain id (`DOMID_FIRST_RESERVED`): not a domain.
pub const DOMID_FIRST_RESERVED: u32 = 0x7FF0;

/// The special watch fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// The special watch fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

/// A message to or from a connection: header and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The header; `len` equals `payload.len()`.
    pub hdr: XsdSockmsg,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Message {
    fn new(type_: XsdSockmsgType, req_id: u32, tx_id: u32, payload: Vec<u8>) -> Message {
        Message {
            hdr: XsdSockmsg {
                type_: type_ as u32,
                req_id,
                tx_id,
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
            },
            payload,
        }
    }

    /// Header plus payload as bytes on the ring.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(16 + self.payload.len());
        v.extend_from_slice(zerocopy::IntoBytes::as_bytes(&self.hdr));
        v.extend_from_slice(&self.payload);
        v
    }

    /// Bytes on the ring.
    pub fn wire_len(&self) -> usize {
        16 + self.payload.len()
    }

    /// Whether this is a watch event.
    pub fn is_event(&self) -> bool {
        self.hdr.type_ == XsdSockmsgType::WatchEvent as u32
    }
}

#[derive(Clone, Debug)]
struct Watch {
    /// Absolute path, or an `@` name.
    node: String,
    token: Vec<u8>,
    /// The home directory stripped from event paths of a relative watch.
    relative: Option<String>,
}

/// One connection: a domain's ring or dom0's in-process client.
#[derive(Debug)]
pub(crate) struct Conn {
    pub domid: u32,
    privileged: bool,
    /// Ring frame and event channel given at introduction.
    pub mfn: u64,
    pub port: u32,
    target: Option<u32>,
    shutdown: bool,
    watches: Vec<Watch>,
    txns: BTreeMap<u32, Txn>,
    next_txid: u32,
    /// Replies and events not yet delivered, oldest first.
    pub out: VecDeque<Message>,
    /// Bytes in `out`.
    pub out_bytes: usize,
    /// Replies in `out` (`nboutstanding`).
    pub outstanding: u32,
    pub ring: RingState,
}

impl Conn {
    fn new(domid: u32, privileged: bool, mfn: u64, port: u32) -> Conn {
        Conn {
            domid,
            privileged,
            mfn,
            port,
            target: None,
            shutdown: false,
            watches: Vec::new(),
            txns: BTreeMap::new(),
            next_txid: 1,
            out: VecDeque::new(),
            out_bytes: 0,
            outstanding: 0,
            ring: RingState::default(),
        }
    }

    fn who(&self) -> Who {
        Who {
            domid: self.domid,
            privileged: self.privileged,
            target: self.target,
        }
    }

    fn push(&mut self, m: Message) {
        self.out_bytes += m.wire_len();
        if !m.is_event() {
            self.outstanding += 1;
        }
        self.out.push_back(m);
    }

    /// Drop the oldest queued message (after delivery).
    pub fn pop(&mut self) -> Option<Message> {
        let m = self.out.pop_front()?;
        self.out_bytes = self.out_bytes.saturating_sub(m.wire_len());
        if !m.is_event() {
            self.outstanding = self.outstanding.saturating_sub(1);
        }
        Some(m)
    }

    /// `send_event`: queue a watch event unless it is too long, an identical
    /// one is still queued (not for `@` events), or the queue is full.
    fn queue_event(&mut self, path: &[u8], token: &[u8], cap: usize) {
        let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
        payload.extend_from_slice(path);
        payload.push(0);
        payload.extend_from_slice(token);
        payload.push(0);
        if payload.len() > PAYLOAD_MAX {
            return;
        }
        let partial = self.ring.out_sent > 0;
        if path.first() != Some(&b'@')
            && self
                .out
                .iter()
                .enumerate()
                .any(|(i, m)| !(i == 0 && partial) && m.is_event() && m.payload == payload)
        {
            return;
        }
        if self.out_bytes + 16 + payload.len() > cap {
            return;
        }
        self.push(Message::new(XsdSockmsgType::WatchEvent, 0, 0, payload));
    }

    /// Drop watches, transactions and queued output (`domain_conn_reset`).
    pub fn reset(&mut self) {
        self.watches.clear();
        self.txns.clear();
        self.out.clear();
        self.out_bytes = 0;
        self.outstanding = 0;
        self.ring.clear_partial();
    }
}

/// What one connection's domain looks like to the toolstack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainInfo {
    /// The domain.
    pub domid: u32,
    /// Store ring frame given at introduction.
    pub mfn: u64,
    /// Event channel given at introduction.
    pub port: u32,
    /// Nodes it owns.
    pub nodes: u32,
    /// Watches it holds.
    pub watches: u32,
    /// Open transactions.
    pub transactions: u32,
    /// Replies queued.
    pub outstanding: u32,
    /// Bytes of output queued.
    pub queued_bytes: usize,
}

/// Most lines `XS_CONTROL print` keeps.
const LOG_LINES: usize = 64;

/// The XenStore daemon: the tree, every connection, the quotas.
#[derive(Debug)]
pub struct Xenstored {
    store: Store,
    pub(crate) conns: BTreeMap<u32, Conn>,
    quotas: Quotas,
    /// Permissions of `@introduceDomain` and `@releaseDomain`.
    special: [Vec<Perm>; 2],
    log_on: bool,
    log: VecDeque<String>,
}

impl Default for Xenstored {
    fn default() -> Self {
        Self::new()
    }
}

/// The NUL-terminated strings of a payload (bytes after the last NUL are
/// ignored, as `get_strings` does).
fn strings(payload: &[u8]) -> Vec<&[u8]> {
    let n = payload.iter().filter(|&&c| c == 0).count();
    payload.split(|&c| c == 0).take(n).collect()
}

/// `onearg`: the payload is exactly one NUL-terminated string.
fn onearg(payload: &[u8]) -> Option<&[u8]> {
    match payload.iter().position(|&c| c == 0) {
        Some(i) if i + 1 == payload.len() => Some(&payload[..i]),
        _ => None,
    }
}

fn unsigned(v: i32) -> u32 {
    u32::from_ne_bytes(v.to_ne_bytes())
}

fn ok() -> Vec<u8> {
    b"OK\0".to_vec()
}

fn with_nul(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

impl Xenstored {
    /// A daemon with the initial tree, dom0's in-process connection and
    /// Xen's default quotas.
    pub fn new() -> Xenstored {
        Self::with_quotas(Quotas::default())
    }

    /// A daemon with other quotas.
    pub fn with_quotas(quotas: Quotas) -> Xenstored {
        let mut conns = BTreeMap::new();
        conns.insert(0, Conn::new(0, true, 0, 0));
        let none = alloc::vec![Perm::new(0, Access::None)];
        Xenstored {
            store: Store::new(),
            conns,
            quotas,
            special: [none.clone(), none],
            log_on: true,
            log: VecDeque::new(),
        }
    }

    /// The quotas in force.
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Change the quotas.
    pub fn quotas_mut(&mut self) -> &mut Quotas {
        &mut self.quotas
    }

    /// Whether `domid` has a connection (dom0 always has).
    pub fn is_introduced(&self, domid: u32) -> bool {
        self.conns.contains_key(&domid)
    }

    /// Domains with a connection, dom0 first.
    pub fn domains(&self) -> impl Iterator<Item = u32> + '_ {
        self.conns.keys().copied()
    }

    /// A connection's state.
    pub fn domain_info(&self, domid: u32) -> Option<DomainInfo> {
        let c = self.conns.get(&domid)?;
        Some(DomainInfo {
            domid,
            mfn: c.mfn,
            port: c.port,
            nodes: self.store.owned(domid),
            watches: u32::try_from(c.watches.len()).unwrap_or(u32::MAX),
            transactions: u32::try_from(c.txns.len()).unwrap_or(u32::MAX),
            outstanding: c.outstanding,
            queued_bytes: c.out_bytes,
        })
    }

    /// Lines written with `XS_CONTROL print` (and `log`), oldest first.
    pub fn drain_log(&mut self) -> impl Iterator<Item = String> + '_ {
        self.log.drain(..)
    }

    fn log_line(&mut self, s: String) {
        if self.log_on {
            if self.log.len() >= LOG_LINES {
                self.log.pop_front();
            }
            self.log.push_back(s);
        }
    }

    /// Every committed path, sorted (for tests and debugging).
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.store.paths()
    }

    /// The generation count of the last committed change: it moves whenever any
    /// node changes, so an in-process client can skip re-reading an unchanged store.
    pub fn generation(&self) -> u64 {
        self.store.generation()
    }

    /// A committed node, bypassing permissions (for tests and debugging).
    pub fn node(&self, path: &str) -> Option<&Node> {
        self.store.get(path)
    }

    // ----- domains ---------------------------------------------------------

    /// `XS_INTRODUCE`: give `domid` a connection on its store ring (frame
    /// `mfn`, event channel `port`) and fire `@introduceDomain`. For a domain
    /// already introduced, take the new port and reset the connection (its
    /// watches, transactions, queued output and ring indices), as 4.17 does.
    pub fn introduce_domain(&mut self, domid: u32, mfn: u64, port: u32) -> Result<(), Error> {
        if domid >= DOMID_FIRST_RESERVED || port == 0 {
            return Err(Error::Inval);
        }
        if let Some(c) = self.conns.get_mut(&domid) {
            c.mfn = mfn;
            c.port = port;
            c.reset();
            c.ring.reset_indices = true;
            c.ring.ignored = false;
            return Ok(());
        }
        let mut c = Conn::new(domid, false, mfn, port);
        c.ring.announce = true;
        self.conns.insert(domid, c);
        self.fire_special(INTRODUCE_DOMAIN);
        Ok(())
    }

    /// `XS_RELEASE`: drop `domid`'s connection (watches first, so it sees no
    /// events), remove the nodes it owns and its entries in other nodes'
    /// permissions, and fire `@releaseDomain`.
    pub fn release_domain(&mut self, domid: u32) -> Result<(), Error> {
        if domid == 0 {
            return Err(Error::Inval);
        }
        if self.conns.remove(&domid).is_none() {
            return Err(Error::NoEnt);
        }
        for c in self.conns.values_mut() {
            if c.target == Some(domid) {
                c.target = None;
            }
        }
        let owned: Vec<String> = self
            .store
            .paths()
            .filter(|p| self.store.get(p).is_some_and(|n| n.owner() == domid))
            .map(ToString::to_string)
            .collect();
        let mut fires = Vec::new();
        for p in owned {
            if p == "/" || self.store.get(&p).is_none() {
                continue;
            }
            let mut v = self.view_dom0();
            let _ = v.rm_tree(&p);
            fires.append(&mut v.fires);
        }
        self.deliver(fires);
        self.forget_perms(domid);
        self.fire_special(RELEASE_DOMAIN);
        Ok(())
    }

    /// Remove permission exceptions naming a released domain, so a later
    /// domain with the same id does not inherit them (4.17 marks them
    /// ignored through generation counts; the effect is the same).
    fn forget_perms(&mut self, domid: u32) {
        let paths: Vec<String> = self
            .store
            .paths()
            .filter(|p| {
                self.store
                    .get(p)
                    .is_some_and(|n| n.perms.iter().skip(1).any(|q| q.domid == domid))
            })
            .map(ToString::to_string)
            .collect();
        for p in paths {
            let mut v = self.view_dom0();
            if let Ok(Some(mut n)) = v.read(&p) {
                let first = n.perms[0];
                n.perms.retain(|q| q.domid != domid);
                n.perms.insert(0, first);
                n.perms.dedup_by(|a, b| a == b && a.domid == first.domid);
                let _ = v.set_perms_raw(&p, n);
            }
        }
        for s in &mut self.special {
            let first = s[0];
            s.retain(|q| q.domid != domid);
            if s.first() != Some(&first) {
                s.insert(0, first);
            }
        }
    }

    /// `XS_SET_TARGET`: `domid` (e.g. a device model) acts for `target`.
    pub fn set_target(&mut self, domid: u32, target: u32) -> Result<(), Error> {
        if !self.conns.contains_key(&target) {
            return Err(Error::NoEnt);
        }
        let c = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        c.target = Some(target);
        Ok(())
    }

    fn view_dom0(&mut self) -> View<'_> {
        View {
            store: &mut self.store,
            txn: None,
            who: Who::DOM0,
            quotas: &self.quotas,
            fires: Vec::new(),
        }
    }

    // ----- watches ---------------------------------------------------------

    fn fire_special(&mut self, name: &str) {
        self.deliver(alloc::vec![Fire {
            path: name.to_string(),
            exact: true,
            perm_sets: Vec::new(),
        }]);
    }

    fn special_perms(special: &[Vec<Perm>; 2], name: &str) -> Option<usize> {
        let _ = special;
        match name {
            INTRODUCE_DOMAIN => Some(0),
            RELEASE_DOMAIN => Some(1),
            _ => None,
        }
    }

    /// `fire_watches`: queue events on every connection with a matching
    /// watch that may read the node (or its parent, or its old permissions);
    /// `@` events go to those who may read the special node.
    pub(crate) fn deliver(&mut self, fires: Vec<Fire>) {
        let cap = self.quotas.event_queue_bytes;
        for f in fires {
            let special = f.path.starts_with('@');
            for c in self.conns.values_mut() {
                if c.watches.is_empty() {
                    continue;
                }
                let who = c.who();
                let allowed = if special {
                    Self::special_perms(&self.special, &f.path)
                        .is_some_and(|i| perms::perm_for(&who, &self.special[i]) & perms::READ != 0)
                } else {
                    f.perm_sets
                        .iter()
                        .any(|ps| perms::perm_for(&who, ps) & perms::READ != 0)
                };
                if !allowed {
                    continue;
                }
                let hits: Vec<(Vec<u8>, Vec<u8>)> = c
                    .watches
                    .iter()
                    .filter(|w| {
                        if f.exact {
                            w.node == f.path
                        } else {
                            path::is_child(&f.path, &w.node)
                        }
                    })
                    .map(|w| (event_path(w, &f.path).to_vec(), w.token.clone()))
                    .collect();
                for (p, t) in hits {
                    c.queue_event(&p, &t, cap);
                }
            }
        }
    }

    // ----- requests --------------------------------------------------------

    /// Handle one request from `domid`'s connection and queue the reply (and
    /// any watch events) on the connections' output queues. The reply echoes
    /// the request's `req_id` and `tx_id`; errors are `XS_ERROR` replies.
    pub fn request(&mut self, domid: u32, hdr: &XsdSockmsg, payload: &[u8]) {
        if !self.conns.contains_key(&domid) {
            return;
        }
        let mut post = Vec::new();
        let result = self.process(domid, hdr, payload, &mut post);
        let msg = match result {
            Ok((ty, body)) if body.len() <= PAYLOAD_MAX => {
                Message::new(ty, hdr.req_id, hdr.tx_id, body)
            }
            Ok(_) => error_msg(Error::TooBig, hdr),
            Err(e) => error_msg(e, hdr),
        };
        let cap = self.quotas.event_queue_bytes;
        if let Some(c) = self.conns.get_mut(&domid) {
            c.push(msg);
            for (p, t) in post {
                c.queue_event(&p, &t, cap);
            }
        }
    }

    /// The next message queued for `domid` (replies and watch events), for
    /// connections not served through a ring (dom0's own).
    pub fn pop_output(&mut self, domid: u32) -> Option<Message> {
        let c = self.conns.get_mut(&domid)?;
        c.ring.out_sent = 0;
        c.pop()
    }

    /// Whether `domid` has output queued.
    pub fn has_output(&self, domid: u32) -> bool {
        self.conns.get(&domid).is_some_and(|c| !c.out.is_empty())
    }

    fn who(&self, domid: u32) -> Who {
        self.conns.get(&domid).map_or(
            Who {
                domid,
                privileged: false,
                target: None,
            },
            Conn::who,
        )
    }

    /// `process_message`.
    fn process(
        &mut self,
        domid: u32,
        hdr: &XsdSockmsg,
        payload: &[u8],
        post: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(XsdSockmsgType, Vec<u8>), Error> {
        use XsdSockmsgType as T;
        let ty = match XsdSockmsgType::from_raw(hdr.type_) {
            None | Some(T::WatchEvent | T::Error | T::Invalid) => return Err(Error::NoSys),
            Some(t) => t,
        };
        let who = self.who(domid);
        let privileged_only = matches!(
            ty,
            T::Control
                | T::Introduce
                | T::Release
                | T::IsDomainIntroduced
                | T::Resume
                | T::SetTarget
        );
        if privileged_only && !who.privileged {
            return Err(Error::Acces);
        }
        let txid = if matches!(ty, T::Watch | T::Unwatch) {
            0
        } else {
            hdr.tx_id
        };
        if txid != 0
            && !self
                .conns
                .get(&domid)
                .is_some_and(|c| c.txns.contains_key(&txid))
        {
            return Err(Error::NoEnt);
        }
        let body = match ty {
            T::Read => {
                let p = self.canon(&who, onearg(payload))?;
                self.with_view(domid, txid, |v| v.get_node(&p, perms::READ))?
                    .value
            }
            T::Directory => {
                let p = self.canon(&who, onearg(payload))?;
                self.with_view(domid, txid, |v| v.get_node(&p, perms::READ))?
                    .children
            }
            T::DirectoryPart => self.directory_part(domid, txid, &who, payload)?,
            T::GetPerms => {
                let p = self.canon(&who, onearg(payload))?;
                let n = self.with_view(domid, txid, |v| v.get_node(&p, perms::READ))?;
                perms::to_strings(&n.perms)
            }
            T::Write => {
                let Some(&first) = strings(payload).first() else {
                    return Err(Error::Inval);
                };
                let value = &payload[first.len() + 1..];
                let p = self.canon(&who, Some(first))?;
                self.with_view(domid, txid, |v| v.write(&p, value))?;
                ok()
            }
            T::Mkdir => {
                let p = self.canon(&who, onearg(payload))?;
                self.with_view(domid, txid, |v| v.mkdir(&p))?;
                ok()
            }
            T::Rm => {
                let p = self.canon(&who, onearg(payload))?;
                self.with_view(domid, txid, |v| v.rm(&p))?;
                ok()
            }
            T::SetPerms => {
                self.set_perms_op(domid, txid, &who, payload)?;
                ok()
            }
            T::Watch => {
                self.watch(domid, &who, payload, post)?;
                ok()
            }
            T::Unwatch => {
                self.unwatch(domid, &who, payload)?;
                ok()
            }
            T::TransactionStart => {
                with_nul(&self.transaction_start(domid, &who, txid)?.to_string())
            }
            T::TransactionEnd => {
                self.transaction_end(domid, &who, txid, payload)?;
                ok()
            }
            T::Introduce => {
                let v = strings(payload);
                if v.len() < 3 {
                    return Err(Error::Inval);
                }
                let dom = unsigned(atoi(v[0]));
                let mfn = path::strtol_all(v[1]).map_or(0, |m| u64::from_ne_bytes(m.to_ne_bytes()));
                let port = atoi(v[2]);
                if port <= 0 {
                    return Err(Error::Inval);
                }
                self.introduce_domain(dom, mfn, unsigned(port))?;
                ok()
            }
            T::Release => {
                let dom = onearg(payload).ok_or(Error::Inval)?;
                self.release_domain(unsigned(atoi(dom)))?;
                ok()
            }
            T::Resume => {
                let dom = unsigned(atoi(onearg(payload).ok_or(Error::Inval)?));
                if dom == 0 {
                    return Err(Error::Inval);
                }
                self.conns.get_mut(&dom).ok_or(Error::NoEnt)?.shutdown = false;
                ok()
            }
            T::SetTarget => {
                let v = strings(payload);
                if v.len() < 2 {
                    return Err(Error::Inval);
                }
                self.set_target(unsigned(atoi(v[0])), unsigned(atoi(v[1])))?;
                ok()
            }
            T::GetDomainPath => {
                let dom = unsigned(atoi(onearg(payload).ok_or(Error::Inval)?));
                with_nul(&path::domain_path(dom))
            }
            T::IsDomainIntroduced => {
                let dom = unsigned(atoi(onearg(payload).ok_or(Error::Inval)?));
                let yes = dom == DOMID_SELF || self.conns.contains_key(&dom);
                (if yes { b"T\0" } else { b"F\0" }).to_vec()
            }
            T::ResetWatches => {
                if let Some(c) = self.conns.get_mut(&domid) {
                    c.watches.clear();
                    c.txns.clear();
                }
                ok()
            }
            T::Control => self.control(payload)?,
            T::WatchEvent | T::Error | T::Invalid => return Err(Error::NoSys),
        };
        Ok((ty, body))
    }

    /// Canonicalize (relative paths are below `/local/domain/<id>`) and
    /// validate a node name.
    fn canon(&self, who: &Who, raw: Option<&[u8]>) -> Result<String, Error> {
        let raw = raw.ok_or(Error::Inval)?;
        let full = if matches!(raw.first(), Some(b'/' | b'@')) {
            raw.to_vec()
        } else {
            let mut f = path::domain_path(who.domid).into_bytes();
            f.push(b'/');
            f.extend_from_slice(raw);
            f
        };
        if !path::is_valid_nodename(&full) {
            return Err(Error::Inval);
        }
        let s = String::from_utf8(full).map_err(|_| Error::Inval)?;
        if !who.privileged && path::quota_len(&s) > self.quotas.max_path_len {
            return Err(Error::Inval);
        }
        Ok(s)
    }

    fn with_view<R>(
        &mut self,
        domid: u32,
        txid: u32,
        f: impl FnOnce(&mut View<'_>) -> Result<R, Error>,
    ) -> Result<R, Error> {
        let who = self.who(domid);
        let conn = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        let txn = match txid {
            0 => None,
            id => Some(conn.txns.get_mut(&id).ok_or(Error::NoEnt)?),
        };
        let mut v = View {
            store: &mut self.store,
            txn,
            who,
            quotas: &self.quotas,
            fires: Vec::new(),
        };
        let r = f(&mut v);
        let fires = core::mem::take(&mut v.fires);
        self.deliver(fires);
        r
    }

    /// `send_directory_part`: `path\0offset\0` → `generation\0` then as many
    /// child names as fit from byte `offset` of the child list, and a final
    /// empty string once the list is complete.
    fn directory_part(
        &mut self,
        domid: u32,
        txid: u32,
        who: &Who,
        payload: &[u8],
    ) -> Result<Vec<u8>, Error> {
        let v = strings(payload);
        if v.len() != 2 {
            return Err(Error::Inval);
        }
        let p = self.canon(who, Some(v[0]))?;
        let n = self.with_view(domid, txid, |view| view.get_node(&p, perms::READ))?;
        let off = unsigned(atoi(v[1])) as usize;
        let mut out = with_nul(&n.generation.to_string());
        let children = &n.children;
        if off >= children.len() {
            out.push(0);
            return Ok(out);
        }
        let maxlen = PAYLOAD_MAX - out.len() - 1;
        let rest = &children[off..];
        let mut len = 0;
        while len < rest.len() {
            let s = rest[len..]
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(rest.len() - len);
            if len + s >= maxlen {
                break;
            }
            len = (len + s + 1).min(rest.len());
        }
        out.extend_from_slice(&rest[..len]);
        if len == rest.len() {
            out.push(0);
        }
        Ok(out)
    }

    fn set_perms_op(
        &mut self,
        domid: u32,
        txid: u32,
        who: &Who,
        payload: &[u8],
    ) -> Result<(), Error> {
        let v = strings(payload);
        if v.len() < 2 {
            return Err(Error::Inval);
        }
        let n = v.len() - 1;
        if !who.privileged && n > self.quotas.nb_perms_per_node {
            return Err(Error::NoSpc);
        }
        let perms = v[1..]
            .iter()
            .map(|s| Perm::parse(s))
            .collect::<Result<Vec<_>, _>>()?;
        if v[0].first() == Some(&b'@') {
            let name = core::str::from_utf8(v[0]).map_err(|_| Error::NoEnt)?;
            let i = Self::special_perms(&self.special, name).ok_or(Error::NoEnt)?;
            let need = perms::WRITE | perms::OWNER;
            if perms::perm_for(who, &self.special[i]) & need != need {
                return Err(Error::Acces);
            }
            self.special[i] = perms;
            return Ok(());
        }
        let p = self.canon(who, Some(v[0]))?;
        self.with_view(domid, txid, |view| view.set_perms(&p, perms))
    }

    fn watch(
        &mut self,
        domid: u32,
        who: &Who,
        payload: &[u8],
        post: &mut Vec<(Vec<u8>, Vec<u8>)>,
    ) -> Result<(), Error> {
        let v = strings(payload);
        if v.len() != 2 {
            return Err(Error::Inval);
        }
        let (node, relative) = if v[0].first() == Some(&b'@') {
            if v[0].len() > hypercall_abi::io::xenstore::XENSTORE_REL_PATH_MAX {
                return Err(Error::Inval);
            }
            (
                String::from_utf8(v[0].to_vec()).map_err(|_| Error::Inval)?,
                None,
            )
        } else {
            let rel = v[0].first() != Some(&b'/');
            let p = self.canon(who, Some(v[0]))?;
            (p, rel.then(|| path::domain_path(who.domid)))
        };
        let token = v[1].to_vec();
        let quota = self.quotas.nb_watch_per_domain;
        let c = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        if c.watches.iter().any(|w| w.node == node && w.token == token) {
            return Err(Error::Exist);
        }
        if !who.privileged && c.watches.len() > quota as usize {
            return Err(Error::TooBig);
        }
        let w = Watch {
            node,
            token,
            relative,
        };
        post.push((event_path(&w, &w.node).to_vec(), w.token.clone()));
        c.watches.push(w);
        Ok(())
    }

    fn unwatch(&mut self, domid: u32, who: &Who, payload: &[u8]) -> Result<(), Error> {
        let v = strings(payload);
        if v.len() != 2 {
            return Err(Error::Inval);
        }
        let mut node = v[0].to_vec();
        if !matches!(node.first(), Some(b'/' | b'@')) {
            let mut f = path::domain_path(who.domid).into_bytes();
            f.push(b'/');
            f.extend_from_slice(&node);
            node = f;
        }
        let c = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        let i = c
            .watches
            .iter()
            .position(|w| w.node.as_bytes() == node.as_slice() && w.token == v[1])
            .ok_or(Error::NoEnt)?;
        c.watches.remove(i);
        Ok(())
    }

    fn transaction_start(&mut self, domid: u32, who: &Who, txid: u32) -> Result<u32, Error> {
        if txid != 0 {
            return Err(Error::Busy);
        }
        let quota = self.quotas.max_transaction;
        let c = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        if !who.privileged && c.txns.len() > quota as usize {
            return Err(Error::NoSpc);
        }
        // Bounded: at most a few transactions exist per connection.
        let mut id = c.next_txid;
        while id == 0 || c.txns.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        c.next_txid = id.wrapping_add(1);
        c.txns.insert(id, Txn::new());
        Ok(id)
    }

    fn transaction_end(
        &mut self,
        domid: u32,
        who: &Who,
        txid: u32,
        payload: &[u8],
    ) -> Result<(), Error> {
        let commit = match onearg(payload) {
            Some(b"T") => true,
            Some(b"F") => false,
            _ => return Err(Error::Inval),
        };
        let c = self.conns.get_mut(&domid).ok_or(Error::NoEnt)?;
        let txn = c.txns.remove(&txid).ok_or(Error::NoEnt)?;
        if commit {
            let fires = store::commit(&mut self.store, txn, who, &self.quotas)?;
            self.deliver(fires);
        }
        Ok(())
    }

    // ----- XS_CONTROL ------------------------------------------------------

    fn quota_table(&mut self) -> [(&'static str, &'static str, &mut dyn QuotaValue); 9] {
        let q = &mut self.quotas;
        [
            ("nodes", "Nodes per domain", &mut q.nb_entry_per_domain),
            ("watches", "Watches per domain", &mut q.nb_watch_per_domain),
            (
                "transactions",
                "Transactions per domain",
                &mut q.max_transaction,
            ),
            ("node-size", "Max. size of a node", &mut q.max_entry_size),
            (
                "permissions",
                "Max. number of permissions per node",
                &mut q.nb_perms_per_node,
            ),
            (
                "transaction-nodes",
                "Max. number of accessed nodes per transaction",
                &mut q.trans_nodes,
            ),
            (
                "path-max",
                "Max. length of a node path",
                &mut q.max_path_len,
            ),
            (
                "outstanding",
                "Max. number of outstanding requests",
                &mut q.req_outstanding,
            ),
            (
                "output",
                "Max. bytes of queued output per connection",
                &mut q.event_queue_bytes,
            ),
        ]
    }

    /// `XS_CONTROL` (formerly `XS_DEBUG`): `check`, `log on|off`,
    /// `print <text>`, `quota [<domid> | <name> <value>]`, `help`.
    fn control(&mut self, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let v = strings(payload);
        let Some((&cmd, args)) = v.split_first() else {
            return Err(Error::Inval);
        };
        match (cmd, args) {
            (b"check", []) => {
                self.check_store();
                Ok(ok())
            }
            (b"log", [b"on"]) => {
                self.log_on = true;
                Ok(ok())
            }
            (b"log", [b"off"]) => {
                self.log_on = false;
                Ok(ok())
            }
            (b"print", [text]) => {
                self.log_line(String::from_utf8_lossy(text).into_owned());
                Ok(ok())
            }
            (b"quota", []) => {
                let mut s = String::from("Quota settings:\n");
                for (name, descr, val) in self.quota_table() {
                    let _ = writeln!(s, "{name:<17}: {:8} {descr}", val.get());
                }
                Ok(with_nul(&s))
            }
            (b"quota", [dom]) if dom.first().is_some_and(u8::is_ascii_digit) => {
                let info = self.domain_info(unsigned(atoi(dom))).ok_or(Error::NoEnt)?;
                let mut s = format!("Domain {}:\n", info.domid);
                for (name, val) in [
                    ("nodes", info.nodes as usize),
                    ("watches", info.watches as usize),
                    ("transactions", info.transactions as usize),
                    ("outstanding", info.outstanding as usize),
                    ("memory", info.queued_bytes),
                ] {
                    let _ = writeln!(s, "{name:<16}: {val:8}");
                }
                Ok(with_nul(&s))
            }
            (b"quota", [name, val]) => {
                let val = atoi(val);
                let val = usize::try_from(val).map_err(|_| Error::Inval)?;
                if val < 1 {
                    return Err(Error::Inval);
                }
                for (n, _, q) in self.quota_table() {
                    if n.as_bytes() == *name {
                        q.set(val);
                        return Ok(ok());
                    }
                }
                Err(Error::Inval)
            }
            (b"help", []) => {
                let mut s = String::new();
                for (c, p) in [
                    ("check", ""),
                    ("log", "on|off"),
                    ("print", "<string>"),
                    ("quota", "[<domid>|<quota> <value>]"),
                    ("help", ""),
                ] {
                    let _ = writeln!(s, "{c:<8}{p}");
                }
                Ok(with_nul(&s))
            }
            _ => Err(Error::Inval),
        }
    }

    /// `check`: verify the tree's invariants (every listed child exists and
    /// every node but the root is listed by its parent); log what is wrong.
    fn check_store(&mut self) {
        let mut problems = Vec::new();
        for p in self.store.paths() {
            let Some(n) = self.store.get(p) else { continue };
            for c in n.child_names() {
                let name = String::from_utf8_lossy(c);
                if self.store.get(&path::child(p, &name)).is_none() {
                    problems.push(format!("check: {p} lists missing child {name}"));
                }
            }
            if p != "/" {
                let listed = self.store.get(path::parent(p)).is_some_and(|par| {
                    par.child_names().any(|c| c == path::basename(p).as_bytes())
                });
                if !listed {
                    problems.push(format!("check: {p} is not listed by its parent"));
                }
            }
        }
        for s in problems {
            self.log_line(s);
        }
    }

    // ----- the toolstack's direct API (as dom0, outside transactions) --------

    fn call(&mut self, ty: XsdSockmsgType, payload: &[u8]) -> Result<Vec<u8>, Error> {
        let hdr = XsdSockmsg {
            type_: ty as u32,
            req_id: 0,
            tx_id: 0,
            len: u32::try_from(payload.len()).map_err(|_| Error::Inval)?,
        };
        let mut post = Vec::new();
        let r = self.process(0, &hdr, payload, &mut post).map(|(_, b)| b);
        let cap = self.quotas.event_queue_bytes;
        if let Some(c) = self.conns.get_mut(&0) {
            for (p, t) in post {
                c.queue_event(&p, &t, cap);
            }
        }
        r
    }

    /// Read a node's value as dom0.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        self.call(XsdSockmsgType::Read, &with_nul(path))
    }

    /// Write a node as dom0 (creating it and missing parents); fires watches.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), Error> {
        let mut p = with_nul(path);
        p.extend_from_slice(value);
        self.call(XsdSockmsgType::Write, &p).map(|_| ())
    }

    /// Create a node as dom0 if it does not exist; fires watches.
    pub fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        self.call(XsdSockmsgType::Mkdir, &with_nul(path))
            .map(|_| ())
    }

    /// Remove a node and everything below it as dom0; fires watches.
    pub fn rm(&mut self, path: &str) -> Result<(), Error> {
        self.call(XsdSockmsgType::Rm, &with_nul(path)).map(|_| ())
    }

    /// A node's child names as dom0.
    pub fn directory(&mut self, path: &str) -> Result<Vec<String>, Error> {
        let b = self.call(XsdSockmsgType::Directory, &with_nul(path))?;
        Ok(strings(&b)
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }

    /// A node's permissions as dom0.
    pub fn get_perms(&mut self, path: &str) -> Result<Vec<Perm>, Error> {
        let b = self.call(XsdSockmsgType::GetPerms, &with_nul(path))?;
        strings(&b).iter().map(|s| Perm::parse(s)).collect()
    }

    /// Set a node's permissions as dom0 (also `@introduceDomain` and
    /// `@releaseDomain`); fires watches.
    pub fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), Error> {
        let mut p = with_nul(path);
        p.extend_from_slice(&perms::to_strings(perms));
        self.call(XsdSockmsgType::SetPerms, &p).map(|_| ())
    }
}

trait QuotaValue {
    fn get(&self) -> usize;
    fn set(&mut self, v: usize);
}

impl QuotaValue for u32 {
    fn get(&self) -> usize {
        *self as usize
    }
    fn set(&mut self, v: usize) {
        *self = u32::try_from(v).unwrap_or(u32::MAX);
    }
}

impl QuotaValue for usize {
    fn get(&self) -> usize {
        *self
    }
    fn set(&mut self, v: usize) {
        *self = v;
    }
}

/// The path an event reports: relative to the home directory for watches
/// set with a relative path (`get_watch_path`).
fn event_path<'a>(w: &Watch, name: &'a str) -> &'a [u8] {
    let mut p = name;
    if let Some(home) = &w.relative {
        p = p.strip_prefix(home.as_str()).unwrap_or(p);
        p = p.strip_prefix('/').unwrap_or(p);
    }
    p.as_bytes()
}

fn error_msg(e: Error, hdr: &XsdSockmsg) -> Message {
    Message::new(
        XsdSockmsgType::Error,
        hdr.req_id,
        hdr.tx_id,
        with_nul(e.name()),
    )
}
