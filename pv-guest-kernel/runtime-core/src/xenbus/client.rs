//! The client's bookkeeping, without I/O: request ids, requests waiting for
//! their replies, bytes not yet written to the ring, registered watches and
//! the watch events received for them.
//!
//! Replies are matched to requests by the `req_id` xenstored echoes; watch
//! events (`req_id` 0, type `XS_WATCH_EVENT`) can arrive between any two
//! replies and are queued for the watch whose token they carry.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::Errno;
use hypercall_abi::io::xenstore::XsdSockmsgType;

use super::XsError;
use super::wire::{Decoder, Message, Request, TxId, WatchEvent};

/// Watch events kept for delivery at most; later ones are dropped (and
/// counted) until the queue drains.
pub const MAX_QUEUED_EVENTS: usize = 256;

/// A request's id (echoed by xenstored in its reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u32);

#[derive(Debug)]
enum Pending {
    /// Someone waits for it.
    Waiting(XsdSockmsgType),
    /// The reply came and nobody took it yet.
    Done(XsdSockmsgType, Result<Message, XsError>),
    /// Nobody waits: the reply is dropped when it comes; an error reply to
    /// a watch removes the watch (`token`).
    Detached {
        kind: XsdSockmsgType,
        token: Option<String>,
    },
}

/// An error reply to a request nobody waited for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachedError {
    /// The request's type.
    pub kind: XsdSockmsgType,
    /// The error.
    pub error: XsError,
    /// For a watch: its token (the watch was removed).
    pub token: Option<String>,
}

/// Counters for messages the client could not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Replies whose `req_id` matches no request.
    pub stray_replies: u64,
    /// Watch events for no registered token.
    pub stray_events: u64,
    /// Watch events dropped because the queue was full.
    pub dropped_events: u64,
}

/// The client's state (see the module documentation).
#[derive(Debug, Default)]
pub struct Client {
    next_id: u32,
    pending: BTreeMap<u32, Pending>,
    out: VecDeque<u8>,
    decoder: Decoder,
    /// token -> path
    watches: BTreeMap<String, String>,
    events: VecDeque<WatchEvent>,
    detached_errors: VecDeque<DetachedError>,
    broken: Option<XsError>,
    stats: Stats,
}

impl Client {
    /// A client with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    fn alloc_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1);
            if self.next_id != 0 && !self.pending.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }

    fn check_usable(&self) -> Result<(), XsError> {
        match &self.broken {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn queue(&mut self, req: &Request<'_>, tx: TxId, pending: Pending) -> Result<ReqId, XsError> {
        self.check_usable()?;
        let mut bytes = Vec::new();
        let id = self.alloc_id();
        req.encode(id, tx, &mut bytes)?;
        self.out.extend(bytes);
        self.pending.insert(id, pending);
        Ok(ReqId(id))
    }

    /// Queue `req` (in transaction `tx`) and return the id its reply will
    /// carry; take the reply with [`take_reply`](Self::take_reply).
    pub fn submit(&mut self, req: &Request<'_>, tx: TxId) -> Result<ReqId, XsError> {
        self.queue(req, tx, Pending::Waiting(req.kind()))
    }

    /// Queue `req` without waiting for its reply: the reply is dropped when
    /// it comes (an error reply is kept for
    /// [`take_detached_error`](Self::take_detached_error)).
    pub fn submit_detached(&mut self, req: &Request<'_>, tx: TxId) -> Result<ReqId, XsError> {
        let token = match req {
            Request::Watch { token, .. } => Some(String::from(*token)),
            _ => None,
        };
        self.queue(
            req,
            tx,
            Pending::Detached {
                kind: req.kind(),
                token,
            },
        )
    }

    /// The reply to `id` if it came: its payload, or the error it carries.
    /// `None` while it has not come (or for an unknown id).
    pub fn take_reply(&mut self, id: ReqId) -> Option<Result<Vec<u8>, XsError>> {
        if !matches!(self.pending.get(&id.0), Some(Pending::Done(..))) {
            return None;
        }
        match self.pending.remove(&id.0) {
            Some(Pending::Done(kind, r)) => Some(r.and_then(|m| m.into_reply(kind))),
            _ => None,
        }
    }

    /// Stop waiting for `id` (a timeout): its reply is dropped when it
    /// comes. The request's bytes are still sent, so the stream stays in
    /// step with xenstored.
    pub fn abandon(&mut self, id: ReqId) {
        match self.pending.get(&id.0) {
            Some(&Pending::Waiting(kind)) => {
                self.pending
                    .insert(id.0, Pending::Detached { kind, token: None });
            }
            Some(Pending::Done(..)) => {
                self.pending.remove(&id.0);
            }
            _ => {}
        }
    }

    /// Whether a reply to `id` is still expected or not yet taken.
    pub fn is_pending(&self, id: ReqId) -> bool {
        self.pending.contains_key(&id.0)
    }

    /// Requests sent whose replies have not come.
    pub fn in_flight(&self) -> usize {
        self.pending
            .values()
            .filter(|p| !matches!(p, Pending::Done(..)))
            .count()
    }

    /// Register a watch locally, so that its events are queued. Fails with
    /// `EEXIST` if the token is taken.
    pub fn add_watch(&mut self, path: &str, token: &str) -> Result<(), XsError> {
        if self.watches.contains_key(token) {
            return Err(XsError::Errno(Errno::EEXIST));
        }
        self.watches.insert(String::from(token), String::from(path));
        Ok(())
    }

    /// Forget a watch; returns its path. Events already queued for it stay
    /// queued; later ones are dropped.
    pub fn remove_watch(&mut self, token: &str) -> Option<String> {
        self.watches.remove(token)
    }

    /// The path watched with `token`.
    pub fn watch_path(&self, token: &str) -> Option<&str> {
        self.watches.get(token).map(String::as_str)
    }

    /// Every registered watch as (path, token).
    pub fn watches(&self) -> impl Iterator<Item = (&str, &str)> {
        self.watches.iter().map(|(t, p)| (p.as_str(), t.as_str()))
    }

    /// The next queued watch event.
    pub fn next_event(&mut self) -> Option<WatchEvent> {
        self.events.pop_front()
    }

    /// Whether watch events are queued.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// The next error reply to a detached request (the latest
    /// [`MAX_QUEUED_EVENTS`] are kept).
    pub fn take_detached_error(&mut self) -> Option<DetachedError> {
        self.detached_errors.pop_front()
    }

    /// Counters of unusable messages.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Bytes waiting to be written to the request stream, as two slices
    /// (in order).
    pub fn output(&self) -> (&[u8], &[u8]) {
        self.out.as_slices()
    }

    /// Whether bytes wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// `n` bytes of [`output`](Self::output) were written.
    pub fn consume_output(&mut self, n: usize) {
        let n = n.min(self.out.len());
        self.out.drain(..n);
    }

    /// Why the connection is unusable, if it is: a protocol error from
    /// xenstored, or a reset.
    pub fn broken(&self) -> Option<&XsError> {
        self.broken.as_ref()
    }

    /// Mark the connection unusable: every waiting request fails with
    /// `why`, and so do new ones until [`reset`](Self::reset).
    pub fn fail(&mut self, why: XsError) {
        for p in self.pending.values_mut() {
            if let Pending::Waiting(kind) = *p {
                *p = Pending::Done(kind, Err(why.clone()));
            }
        }
        self.pending.retain(|_, p| matches!(p, Pending::Done(..)));
        self.broken = Some(why);
    }

    /// Start afresh after the ring was reset (xenstored dropped every
    /// request, watch and transaction): waiting requests fail with
    /// [`XsError::Reset`], queued output and half-read input are dropped.
    /// Registered watches are kept so that their owner can register them
    /// again ([`watches`](Self::watches)).
    pub fn reset(&mut self) {
        self.fail(XsError::Reset);
        self.broken = None;
        self.out.clear();
        self.decoder.reset();
    }

    /// Take bytes read from the response stream. Complete replies are
    /// matched to their requests, watch events queued. A stream that
    /// cannot be parsed marks the connection broken ([`Client::fail`]) and
    /// returns the error.
    pub fn receive(&mut self, mut bytes: &[u8]) -> Result<(), XsError> {
        self.check_usable()?;
        while !bytes.is_empty() {
            let (used, msg) = match self.decoder.feed(bytes) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(e.clone());
                    return Err(e);
                }
            };
            bytes = bytes.get(used..).unwrap_or(&[]);
            if let Some(m) = msg {
                self.route(m);
            }
        }
        Ok(())
    }

    fn route(&mut self, m: Message) {
        if m.type_ == XsdSockmsgType::WatchEvent as u32 {
            match WatchEvent::parse(&m.payload) {
                Ok(ev) if self.watches.contains_key(&ev.token) => {
                    if self.events.len() < MAX_QUEUED_EVENTS {
                        self.events.push_back(ev);
                    } else {
                        self.stats.dropped_events += 1;
                    }
                }
                _ => self.stats.stray_events += 1,
            }
            return;
        }
        match self.pending.remove(&m.req_id) {
            Some(Pending::Waiting(kind)) => {
                self.pending.insert(m.req_id, Pending::Done(kind, Ok(m)));
            }
            Some(Pending::Detached { kind, token }) => {
                if let Err(error) = m.into_reply(kind) {
                    if let Some(t) = &token {
                        self.watches.remove(t);
                    }
                    self.detached_errors
                        .push_back(DetachedError { kind, error, token });
                }
            }
            Some(done @ Pending::Done(..)) => {
                // A second reply with an id already answered: keep the first.
                self.pending.insert(m.req_id, done);
                self.stats.stray_replies += 1;
            }
            None => self.stats.stray_replies += 1,
        }
    }
}
