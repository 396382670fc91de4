//! A client attached to a store page: moves bytes between the [`Client`]
//! and the page's two streams, and does blocking requests with the help of
//! a [`Channel`] (the runtime's event channel and wait, or a test's fake
//! daemon).

use alloc::string::String;
use alloc::vec::Vec;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::io::xenstore::{
    XENSTORE_RECONNECT, XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_RECONNECTION,
    XenstoreDomainInterface, XenstoreFront,
};
use hypercall_abi::{DomId, Errno};

use super::XsError;
use super::client::{Client, ReqId};
use super::wire::{self, Perm, Request, TxId};

/// What a blocking request needs from its surroundings.
pub trait Channel {
    /// Tell xenstored the page changed (send on the store event channel).
    fn notify(&mut self);
    /// Sleep until `ready()` holds; `Ok(false)` if the deadline passed
    /// first. `ready` only reads the page; call it with events masked so
    /// that an event between the check and the sleep is not lost.
    fn wait(&mut self, ready: &mut dyn FnMut() -> bool) -> Result<bool, XsError>;
}

/// The store page and the client state.
#[derive(Debug)]
pub struct Connection<'a> {
    page: &'a [AtomicU32],
    front: XenstoreFront<'a>,
    client: Client,
}

fn word(page: &[AtomicU32], byte_offset: usize) -> Option<&AtomicU32> {
    page.get(byte_offset / 4)
}

impl<'a> Connection<'a> {
    /// Attach to a store page (a whole page of words).
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, XsError> {
        if page.len() < PAGE_WORDS {
            return Err(XsError::Ring);
        }
        let front = XenstoreFront::new(page).map_err(|_| XsError::Ring)?;
        Ok(Connection {
            page,
            front,
            client: Client::new(),
        })
    }

    /// The client state.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn load(&self, off: usize) -> u32 {
        word(self.page, off).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// `server_features` (`XENSTORE_SERVER_FEATURE_*`).
    pub fn server_features(&self) -> u32 {
        self.load(offset_of!(XenstoreDomainInterface, server_features))
    }

    /// `connection` (`XENSTORE_CONNECTED` or `XENSTORE_RECONNECT`).
    pub fn connection_state(&self) -> u32 {
        self.load(offset_of!(XenstoreDomainInterface, connection))
    }

    /// `error` (`XENSTORE_ERROR_*`; meaningful when xenstored advertises
    /// `XENSTORE_SERVER_FEATURE_ERROR`).
    pub fn server_error(&self) -> u32 {
        self.load(offset_of!(XenstoreDomainInterface, error))
    }

    /// Whether xenstored advertises ring reconnection.
    pub fn can_reconnect(&self) -> bool {
        self.server_features() & XENSTORE_SERVER_FEATURE_RECONNECTION != 0
    }

    /// Whether a reset is in progress: only meaningful (and only checked)
    /// when xenstored advertises reconnection.
    pub fn reconnecting(&self) -> bool {
        self.can_reconnect() && self.connection_state() == XENSTORE_RECONNECT
    }

    /// Whether [`pump`](Self::pump) could move something now: bytes to
    /// read, or output and room for it (or a broken index, which pump
    /// reports).
    pub fn ready(&self) -> bool {
        if self.reconnecting() {
            return false;
        }
        let readable = self.front.responses.available().map_or(true, |n| n > 0);
        let writable =
            self.client.has_output() && self.front.requests.space().map_or(true, |n| n > 0);
        readable || writable
    }

    /// Write queued output into the request stream and read the response
    /// stream into the client; returns whether xenstored must be told: it
    /// has new requests, or the responses were read from a full ring (it
    /// may be waiting for room). Reading from a ring that was not full
    /// tells it nothing, as in Linux's `xb_read`: xenstored writes all it
    /// has while there is room, so it cannot be waiting. Does nothing while
    /// a reset is in progress. An impossible index marks the connection
    /// broken ([`XsError::Ring`]).
    pub fn pump(&mut self) -> Result<bool, XsError> {
        if let Some(e) = self.client.broken() {
            return Err(e.clone());
        }
        if self.reconnecting() {
            return Ok(false);
        }
        let mut moved = false;
        loop {
            let (a, b) = self.client.output();
            let chunk = if a.is_empty() { b } else { a };
            if chunk.is_empty() {
                break;
            }
            let n = match self.front.requests.write(chunk) {
                Ok(n) => n,
                Err(_) => return Err(self.broken(XsError::Ring)),
            };
            if n == 0 {
                break;
            }
            self.client.consume_output(n);
            moved = true;
        }
        let mut buf = [0u8; XENSTORE_RING_SIZE];
        loop {
            let full = self
                .front
                .responses
                .available()
                .is_ok_and(|n| n as usize >= XENSTORE_RING_SIZE);
            let n = match self.front.responses.read(&mut buf) {
                Ok(n) => n,
                Err(_) => return Err(self.broken(XsError::Ring)),
            };
            if n == 0 {
                break;
            }
            moved |= full;
            self.client.receive(buf.get(..n).unwrap_or(&[]))?;
        }
        Ok(moved)
    }

    fn broken(&mut self, e: XsError) -> XsError {
        self.client.fail(e.clone());
        e
    }

    /// Pump, notifying xenstored when it must be told ([`pump`](Self::pump)).
    pub fn poll(&mut self, ch: &mut impl Channel) -> Result<(), XsError> {
        if self.pump()? {
            ch.notify();
        }
        Ok(())
    }

    /// Wait for the reply to `id`, pumping and sleeping; on timeout the
    /// request is abandoned ([`Client::abandon`]).
    pub fn wait_reply(&mut self, ch: &mut impl Channel, id: ReqId) -> Result<Vec<u8>, XsError> {
        loop {
            let polled = self.poll(ch);
            if let Some(r) = self.client.take_reply(id) {
                return r;
            }
            polled?;
            let me = &*self;
            let mut ready = || me.ready();
            match ch.wait(&mut ready) {
                Ok(true) => {}
                Ok(false) => {
                    self.client.abandon(id);
                    return Err(XsError::Timeout);
                }
                Err(e) => {
                    self.client.abandon(id);
                    return Err(e);
                }
            }
        }
    }

    /// Send `req` in `tx` and wait for its reply's payload.
    pub fn call(
        &mut self,
        ch: &mut impl Channel,
        req: &Request<'_>,
        tx: TxId,
    ) -> Result<Vec<u8>, XsError> {
        let id = self.client.submit(req, tx)?;
        self.wait_reply(ch, id)
    }

    /// Send `req` without waiting for the reply ([`Client::submit_detached`]).
    pub fn send_detached(
        &mut self,
        ch: &mut impl Channel,
        req: &Request<'_>,
        tx: TxId,
    ) -> Result<(), XsError> {
        self.client.submit_detached(req, tx)?;
        self.poll(ch)
    }

    /// Ask xenstored to reset the ring (the reconnection feature): set
    /// `connection` to `XENSTORE_RECONNECT`, notify, and wait until
    /// xenstored sets it back to `XENSTORE_CONNECTED`; then the client
    /// starts afresh ([`Client::reset`]). Fails with `ENOTSUP`-like
    /// [`XsError::Unsupported`] if xenstored does not advertise the feature.
    pub fn request_reset(&mut self, ch: &mut impl Channel) -> Result<(), XsError> {
        if !self.can_reconnect() {
            return Err(XsError::Unsupported);
        }
        if let Some(w) = word(self.page, offset_of!(XenstoreDomainInterface, connection)) {
            w.store(XENSTORE_RECONNECT, Ordering::Release);
        }
        ch.notify();
        self.wait_connected(ch)?;
        self.client.reset();
        Ok(())
    }

    /// Wait while a reset is in progress (someone else may have asked for
    /// one before this client attached, e.g. a dom0less setup).
    pub fn wait_connected(&mut self, ch: &mut impl Channel) -> Result<(), XsError> {
        let me = &*self;
        let mut done = || !me.reconnecting();
        if done() {
            return Ok(());
        }
        match ch.wait(&mut done) {
            Ok(true) => Ok(()),
            Ok(false) => Err(XsError::Timeout),
            Err(e) => Err(e),
        }
    }

    /// Drop replies left in the response stream by an earlier user of the
    /// page (as Linux does when it attaches): they answer requests this
    /// client never made. Returns how many bytes were dropped.
    pub fn discard_stale(&mut self) -> Result<usize, XsError> {
        let mut buf = [0u8; XENSTORE_RING_SIZE];
        let mut total = 0;
        loop {
            match self.front.responses.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(_) => return Err(XsError::Ring),
            }
        }
    }

    // Typed operations. Each blocks through `ch` (which carries the
    // deadline) and returns the reply decoded.

    /// `XS_READ`: the value of `path`.
    pub fn read(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        path: &str,
    ) -> Result<Vec<u8>, XsError> {
        self.call(ch, &Request::Read(path), tx)
    }

    /// `XS_WRITE`: set `path` to `value`.
    pub fn write(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        path: &str,
        value: &[u8],
    ) -> Result<(), XsError> {
        self.call(ch, &Request::Write { path, value }, tx).map(drop)
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&mut self, ch: &mut impl Channel, tx: TxId, path: &str) -> Result<(), XsError> {
        self.call(ch, &Request::Mkdir(path), tx).map(drop)
    }

    /// `XS_RM`.
    pub fn rm(&mut self, ch: &mut impl Channel, tx: TxId, path: &str) -> Result<(), XsError> {
        self.call(ch, &Request::Rm(path), tx).map(drop)
    }

    /// `XS_DIRECTORY`: the names of `path`'s children.
    pub fn directory(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        path: &str,
    ) -> Result<Vec<String>, XsError> {
        let p = self.call(ch, &Request::Directory(path), tx)?;
        Ok(wire::string_list(&p))
    }

    /// `XS_GET_PERMS`.
    pub fn get_perms(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        path: &str,
    ) -> Result<Vec<Perm>, XsError> {
        let p = self.call(ch, &Request::GetPerms(path), tx)?;
        wire::parse_perms(&p)
    }

    /// `XS_SET_PERMS`.
    pub fn set_perms(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        path: &str,
        perms: &[Perm],
    ) -> Result<(), XsError> {
        self.call(ch, &Request::SetPerms { path, perms }, tx)
            .map(drop)
    }

    /// `XS_WATCH`: register locally, then with xenstored (which fires the
    /// watch once at once). On failure the local registration is undone.
    pub fn watch(&mut self, ch: &mut impl Channel, path: &str, token: &str) -> Result<(), XsError> {
        self.client.add_watch(path, token)?;
        let r = self.call(ch, &Request::Watch { path, token }, TxId::NONE);
        if r.is_err() {
            self.client.remove_watch(token);
        }
        r.map(drop)
    }

    /// `XS_WATCH` without waiting for the reply: events are queued once
    /// xenstored answers; an error reply removes the watch and is kept as
    /// a [`DetachedError`](super::client::DetachedError).
    pub fn watch_detached(
        &mut self,
        ch: &mut impl Channel,
        path: &str,
        token: &str,
    ) -> Result<(), XsError> {
        self.client.add_watch(path, token)?;
        let r = self.send_detached(ch, &Request::Watch { path, token }, TxId::NONE);
        if r.is_err() {
            self.client.remove_watch(token);
        }
        r
    }

    /// `XS_UNWATCH` of the watch registered with `token`; the local
    /// registration goes first, so no event for it is queued afterwards.
    pub fn unwatch(&mut self, ch: &mut impl Channel, token: &str) -> Result<(), XsError> {
        let path = self
            .client
            .remove_watch(token)
            .ok_or(XsError::Errno(Errno::ENOENT))?;
        self.call(ch, &Request::Unwatch { path: &path, token }, TxId::NONE)
            .map(drop)
    }

    /// `XS_TRANSACTION_START`.
    pub fn transaction_start(&mut self, ch: &mut impl Channel) -> Result<TxId, XsError> {
        let p = self.call(ch, &Request::TransactionStart, TxId::NONE)?;
        wire::parse_tx_id(&p)
    }

    /// `XS_TRANSACTION_END`: commit or abort. `Errno(EAGAIN)` on commit
    /// means another writer got in first: run the transaction again.
    pub fn transaction_end(
        &mut self,
        ch: &mut impl Channel,
        tx: TxId,
        commit: bool,
    ) -> Result<(), XsError> {
        self.call(ch, &Request::TransactionEnd { commit }, tx)
            .map(drop)
    }

    /// `XS_GET_DOMAIN_PATH`.
    pub fn get_domain_path(
        &mut self,
        ch: &mut impl Channel,
        domid: DomId,
    ) -> Result<String, XsError> {
        let p = self.call(ch, &Request::GetDomainPath(domid), TxId::NONE)?;
        Ok(String::from_utf8_lossy(wire::first_string(&p)).into_owned())
    }

    /// `XS_RESET_WATCHES`: drop every watch (here and in xenstored).
    pub fn reset_watches(&mut self, ch: &mut impl Channel) -> Result<(), XsError> {
        self.call(ch, &Request::ResetWatches, TxId::NONE)?;
        let tokens: Vec<String> = self
            .client
            .watches()
            .map(|(_, t)| String::from(t))
            .collect();
        for t in tokens {
            self.client.remove_watch(&t);
        }
        Ok(())
    }
}
