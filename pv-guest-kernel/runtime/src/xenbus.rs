//! XenBus: the guest's XenStore client over the store page the builder
//! gave it (`start_info.store_mfn`, event channel `start_info.store_evtchn`).
//! The protocol logic is [`pv_runtime_core::xenbus`]; this module maps the
//! page, waits on the event channel and runs watch callbacks. See
//! `docs/xenbus.md`.
//!
//! * [`connect`] attaches (also done by the first operation): the page is
//!   one of the domain's frames in the bootstrap region, reached through
//!   the direct map (M2P lookup of the MFN, as the console ring is).
//!   Replies left in the ring by an earlier user are dropped. dom0 and
//!   boot-time domUs have no store page: [`XsError::NoStore`].
//! * Operations block until xenstored answers or the timeout
//!   ([`set_timeout`], default [`DEFAULT_TIMEOUT_NS`]) passes:
//!   [`XsError::Timeout`], the request is abandoned and its late reply
//!   dropped. Waiting masks events, clears the store port's pending bit,
//!   re-checks the ring and sleeps in `SCHEDOP_poll` on that port with the
//!   deadline, so it never spins and needs no timer port. Other events
//!   stay pending and are delivered when the operation returns.
//! * Watches: [`watch`] (waits for xenstored's `OK`) and [`watch_async`]
//!   (does not) register a callback per token. Callbacks run in thread
//!   context, never in the event upcall: after any operation returns, and
//!   in [`poll`] and [`wait_for_events`], with no runtime lock held, so a
//!   callback may itself read and write the store (watch callbacks are not
//!   nested: events that arrive meanwhile are run by the outer loop). A
//!   guest that wants its watches served calls [`poll`] from its main loop.
//! * [`watch_control_shutdown`]: serve `xl shutdown`/`reboot`.
//!
//! Do not call into this module from trap or event handlers: it takes a
//! lock that the interrupted code may hold.

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::{DomId, Errno, EvtchnPort};
use pv_runtime_core::xenbus::control::{
    FEATURE_NODES, SHUTDOWN_NODE, SHUTDOWN_TOKEN, ShutdownRequest,
};
use pv_runtime_core::xenbus::{self as core_xb, Channel, Connection, Transact};
use spin::Mutex;

pub use pv_runtime_core::xenbus::{
    Access, Frontend, FrontendAction, Perm, TxId, WatchEvent, XenbusState, XsError,
};

use crate::{evtchn, mm, sched, time};

/// How long an operation waits for xenstored by default: 5 s.
pub const DEFAULT_TIMEOUT_NS: u64 = 5_000_000_000;

/// A watch callback: runs in thread context with the event.
pub type WatchFn = Arc<dyn Fn(&WatchEvent) + Send + Sync>;

/// The connection once attached.
static CONN: Mutex<Option<Connection<'static>>> = Mutex::new(None);
/// The store port (0 until attached).
static PORT: AtomicU32 = AtomicU32::new(0);
/// Set once attaching failed for good (no store page).
static NO_STORE: AtomicBool = AtomicBool::new(false);
/// Timeout in ns; `u64::MAX` = none.
static TIMEOUT_NS: AtomicU64 = AtomicU64::new(DEFAULT_TIMEOUT_NS);
/// Store events the upcall saw.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Callbacks by token.
static WATCHES: Mutex<BTreeMap<String, WatchFn>> = Mutex::new(BTreeMap::new());
/// Set while watch callbacks run (they are not nested).
static RUNNING_WATCHES: AtomicBool = AtomicBool::new(false);

fn on_store_event(_port: EvtchnPort) {
    // Waiters poll the port and re-check the ring themselves; the upcall
    // only acknowledges.
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// Attach to the store page and event channel, once; later calls return
/// at once. Does not talk to xenstored, so it does not wait.
pub fn connect() -> Result<(), XsError> {
    if NO_STORE.load(Ordering::Acquire) {
        return Err(XsError::NoStore);
    }
    let mut guard = CONN.lock();
    if guard.is_some() {
        return Ok(());
    }
    let si = crate::start_info();
    let port = si.store_evtchn;
    let page_va = (si.store_mfn.0 != 0 && port.0 != 0)
        .then(|| mm::mfn_to_pfn(si.store_mfn))
        .flatten()
        .map(mm::direct_va)
        .filter(|&va| {
            let region = crate::layout().region;
            region.contains(va) && region.contains(va + 4095)
        });
    let Some(va) = page_va.and_then(|va| usize::try_from(va).ok()) else {
        NO_STORE.store(true, Ordering::Release);
        return Err(XsError::NoStore);
    };
    let words: *const AtomicU32 = core::ptr::with_exposed_provenance(va);
    // SAFETY: `va` is the store page's address in the direct map: the M2P
    // and the P2M agree that `store_mfn` is this domain's frame, and it
    // lies in the bootstrap region, which the builder maps writable for
    // the domain's lifetime (and `mm::take_over` keeps so). xenstored
    // shares the page, so it is only ever accessed through atomics.
    let page: &'static [AtomicU32] = unsafe { core::slice::from_raw_parts(words, PAGE_WORDS) };
    let mut conn = Connection::new(page)?;
    if !conn.reconnecting() {
        conn.discard_stale()?;
    }
    if evtchn::set_handler(port, evtchn::Handler::Fn(on_store_event)).is_err() {
        return Err(XsError::Wait(Errno::ENOSPC));
    }
    let _ = evtchn::unmask(port);
    PORT.store(port.0, Ordering::Release);
    *guard = Some(conn);
    Ok(())
}

/// Whether [`connect`] succeeded (xenstored may still not be there).
pub fn is_connected() -> bool {
    CONN.lock().is_some()
}

/// Wait at most `ns` for each reply (`None`: wait as long as it takes).
pub fn set_timeout(ns: Option<u64>) {
    TIMEOUT_NS.store(ns.unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// The current timeout.
pub fn timeout() -> Option<u64> {
    match TIMEOUT_NS.load(Ordering::Relaxed) {
        u64::MAX => None,
        ns => Some(ns),
    }
}

/// Store events delivered through the upcall so far.
pub fn events_seen() -> u64 {
    EVENTS.load(Ordering::Relaxed)
}

/// The runtime's [`Channel`]: send on the store port; wait with
/// `SCHEDOP_poll` on it until the ring is ready or the deadline passes.
/// Used with events masked.
struct Wait {
    port: EvtchnPort,
    deadline: Option<u64>,
}

impl Channel for Wait {
    fn notify(&mut self) {
        let _ = evtchn::send(self.port);
    }

    fn wait(&mut self, ready: &mut dyn FnMut() -> bool) -> Result<bool, XsError> {
        loop {
            if ready() {
                return Ok(true);
            }
            if let Some(d) = self.deadline
                && time::system_time_ns() >= d
            {
                return Ok(false);
            }
            // Clear, then look again: an update after the look sets the
            // bit again and the poll returns at once.
            evtchn::clear_pending(self.port);
            if ready() {
                return Ok(true);
            }
            // A deadline is never 0 here (it is in the future); 0 means
            // no timeout to SCHEDOP_poll.
            sched::poll(&[self.port], self.deadline.unwrap_or(0)).map_err(XsError::Wait)?;
        }
    }
}

/// Run `f` on the connection, events masked, with a [`Wait`] carrying the
/// deadline `timeout` from now; then run any watch callbacks.
fn with_conn_timeout<T>(
    timeout_ns: Option<u64>,
    f: impl FnOnce(&mut Connection<'static>, &mut Wait) -> Result<T, XsError>,
) -> Result<T, XsError> {
    connect()?;
    let deadline = timeout_ns.map(|t| time::system_time_ns().saturating_add(t));
    let r = {
        let mut guard = CONN.lock();
        let conn = guard.as_mut().ok_or(XsError::NoStore)?;
        let mut ch = Wait {
            port: EvtchnPort(PORT.load(Ordering::Acquire)),
            deadline,
        };
        let was = evtchn::disable_events();
        let r = f(conn, &mut ch);
        evtchn::restore_events(was);
        r
    };
    run_watches();
    r
}

fn with_conn<T>(
    f: impl FnOnce(&mut Connection<'static>, &mut Wait) -> Result<T, XsError>,
) -> Result<T, XsError> {
    with_conn_timeout(timeout(), f)
}

// ---------------------------------------------------------------- operations

/// The value of `path` (relative paths are under `/local/domain/<domid>`).
pub fn read(path: &str) -> Result<Vec<u8>, XsError> {
    with_conn(|c, ch| c.read(ch, TxId::NONE, path))
}

/// The value of `path` as UTF-8 (lossy).
pub fn read_string(path: &str) -> Result<String, XsError> {
    read(path).map(|v| String::from_utf8_lossy(&v).into_owned())
}

/// Set `path` to `value`, creating missing parents.
pub fn write(path: &str, value: impl AsRef<[u8]>) -> Result<(), XsError> {
    with_conn(|c, ch| c.write(ch, TxId::NONE, path, value.as_ref()))
}

/// Create `path` (empty value).
pub fn mkdir(path: &str) -> Result<(), XsError> {
    with_conn(|c, ch| c.mkdir(ch, TxId::NONE, path))
}

/// Remove `path` and everything below it.
pub fn rm(path: &str) -> Result<(), XsError> {
    with_conn(|c, ch| c.rm(ch, TxId::NONE, path))
}

/// The names of `path`'s children.
pub fn directory(path: &str) -> Result<Vec<String>, XsError> {
    with_conn(|c, ch| c.directory(ch, TxId::NONE, path))
}

/// `path`'s permissions (owner first).
pub fn get_perms(path: &str) -> Result<Vec<Perm>, XsError> {
    with_conn(|c, ch| c.get_perms(ch, TxId::NONE, path))
}

/// Replace `path`'s permissions (owner first).
pub fn set_perms(path: &str, perms: &[Perm]) -> Result<(), XsError> {
    with_conn(|c, ch| c.set_perms(ch, TxId::NONE, path, perms))
}

/// `/local/domain/<domid>`, as xenstored names it.
pub fn get_domain_path(domid: DomId) -> Result<String, XsError> {
    with_conn(|c, ch| c.get_domain_path(ch, domid))
}

/// Whether a daemon serves this domain: send a cheap request
/// (`XS_GET_DOMAIN_PATH` of domain 0) and wait at most `timeout_ns` for
/// any answer (an error reply counts as an answer).
pub fn probe(timeout_ns: u64) -> Result<(), XsError> {
    with_conn_timeout(Some(timeout_ns), |c, ch| {
        match c.get_domain_path(ch, DomId(0)) {
            Ok(_) | Err(XsError::Errno(_)) => Ok(()),
            Err(e) => Err(e),
        }
    })
}

// ---------------------------------------------------------------- watches

/// Watch `path` (and everything below it): `callback` runs for each event
/// carrying `token`, starting with the one xenstored fires at once. Waits
/// for xenstored's answer. A token already in use is `EEXIST`.
pub fn watch(path: &str, token: &str, callback: WatchFn) -> Result<(), XsError> {
    add_callback(token, callback)?;
    let r = with_conn(|c, ch| c.watch(ch, path, token));
    if r.is_err() {
        WATCHES.lock().remove(token);
    }
    r
}

/// [`watch`] without waiting for xenstored: the request is queued (and
/// written to the ring); the callback runs once xenstored answers and
/// fires. An error answer removes the watch (see [`poll`]).
pub fn watch_async(path: &str, token: &str, callback: WatchFn) -> Result<(), XsError> {
    add_callback(token, callback)?;
    let r = with_conn(|c, ch| c.watch_detached(ch, path, token));
    if r.is_err() {
        WATCHES.lock().remove(token);
    }
    r
}

fn add_callback(token: &str, callback: WatchFn) -> Result<(), XsError> {
    let mut w = WATCHES.lock();
    if w.contains_key(token) {
        return Err(XsError::Errno(Errno::EEXIST));
    }
    w.insert(String::from(token), callback);
    Ok(())
}

/// Remove the watch registered with `token`; its callback is not run
/// again.
pub fn unwatch(token: &str) -> Result<(), XsError> {
    WATCHES.lock().remove(token);
    with_conn(|c, ch| c.unwatch(ch, token))
}

/// Serve the ring without blocking: send queued requests, take in replies
/// and events, and run the callbacks of watch events received so far.
/// Returns the first error reply to an asynchronous request, if any came
/// (e.g. a refused [`watch_async`], whose watch is then gone).
pub fn poll() -> Result<(), XsError> {
    let r = with_conn(|c, ch| {
        c.poll(ch)?;
        Ok(c.client().take_detached_error())
    });
    match r {
        Ok(Some(e)) => {
            if let Some(t) = &e.token {
                WATCHES.lock().remove(t);
            }
            Err(e.error)
        }
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Block until at least one watch event arrived (and run the callbacks)
/// or `timeout_ns` passed; returns whether an event came.
pub fn wait_for_events(timeout_ns: u64) -> Result<bool, XsError> {
    with_conn_timeout(Some(timeout_ns), |c, ch| {
        loop {
            c.poll(ch)?;
            if c.client().has_events() {
                return Ok(true);
            }
            let me = &*c;
            if !ch.wait(&mut || me.ready())? {
                return Ok(false);
            }
        }
    })
}

/// Run the callbacks of queued watch events (thread context, no lock held).
fn run_watches() {
    if RUNNING_WATCHES.swap(true, Ordering::Acquire) {
        return;
    }
    loop {
        let ev = match CONN.lock().as_mut() {
            Some(c) => c.client().next_event(),
            None => None,
        };
        let Some(ev) = ev else { break };
        let cb = WATCHES.lock().get(&ev.token).cloned();
        if let Some(cb) = cb {
            cb(&ev);
        }
    }
    RUNNING_WATCHES.store(false, Ordering::Release);
}

// ---------------------------------------------------------------- transactions

/// A transaction in progress: operations on it see a snapshot and commit
/// together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transaction {
    id: TxId,
}

impl Transaction {
    /// Its id.
    pub fn id(&self) -> TxId {
        self.id
    }

    /// [`read`] in the transaction.
    pub fn read(&self, path: &str) -> Result<Vec<u8>, XsError> {
        with_conn(|c, ch| c.read(ch, self.id, path))
    }

    /// [`write`] in the transaction.
    pub fn write(&self, path: &str, value: impl AsRef<[u8]>) -> Result<(), XsError> {
        with_conn(|c, ch| c.write(ch, self.id, path, value.as_ref()))
    }

    /// [`mkdir`] in the transaction.
    pub fn mkdir(&self, path: &str) -> Result<(), XsError> {
        with_conn(|c, ch| c.mkdir(ch, self.id, path))
    }

    /// [`rm`] in the transaction.
    pub fn rm(&self, path: &str) -> Result<(), XsError> {
        with_conn(|c, ch| c.rm(ch, self.id, path))
    }

    /// [`directory`] in the transaction.
    pub fn directory(&self, path: &str) -> Result<Vec<String>, XsError> {
        with_conn(|c, ch| c.directory(ch, self.id, path))
    }
}

/// Start a transaction (end it with [`transaction_end`]; prefer
/// [`transaction`]).
pub fn transaction_start() -> Result<Transaction, XsError> {
    with_conn(|c, ch| c.transaction_start(ch)).map(|id| Transaction { id })
}

/// Commit (`commit`) or abort a transaction. Committing fails with
/// `Errno(EAGAIN)` when another writer got in first.
pub fn transaction_end(tx: Transaction, commit: bool) -> Result<(), XsError> {
    with_conn(|c, ch| c.transaction_end(ch, tx.id, commit))
}

struct Store;

impl Transact for Store {
    fn transaction_start(&mut self) -> Result<TxId, XsError> {
        transaction_start().map(|t| t.id)
    }
    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError> {
        transaction_end(Transaction { id: tx }, commit)
    }
}

/// Run `body` in a transaction and commit, running it again while the
/// commit fails with `EAGAIN` (see [`pv_runtime_core::xenbus::transaction`]).
pub fn transaction<T>(
    mut body: impl FnMut(&Transaction) -> Result<T, XsError>,
) -> Result<T, XsError> {
    core_xb::transaction(&mut Store, |_, id| body(&Transaction { id }))
}

// ---------------------------------------------------------------- ring reset

/// Ask xenstored to reset the ring (only if it advertises reconnection):
/// every request, watch and transaction of this connection is dropped on
/// both sides; the runtime then registers its watches again
/// (asynchronously).
pub fn reset() -> Result<(), XsError> {
    with_conn(|c, ch| {
        c.request_reset(ch)?;
        let watches: Vec<(String, String)> = c
            .client()
            .watches()
            .map(|(p, t)| (String::from(p), String::from(t)))
            .collect();
        for (path, token) in watches {
            c.client().remove_watch(&token);
            c.watch_detached(ch, &path, &token)?;
        }
        Ok(())
    })
}

/// `server_features` of the page (0 before [`connect`]).
pub fn server_features() -> u32 {
    CONN.lock().as_ref().map_or(0, Connection::server_features)
}

// ---------------------------------------------------------------- control/shutdown

static SHUTDOWN_FEATURES_WRITTEN: AtomicBool = AtomicBool::new(false);

/// Serve the toolstack's shutdown requests, as Linux does: watch
/// `control/shutdown` (without waiting for xenstored); on each event read
/// it in a transaction, and if it holds `poweroff`, `halt`, `reboot` or
/// `suspend`, write `""` to it in the same transaction and then call
/// `SCHEDOP_shutdown` with the matching reason (poweroff and reboot do not
/// return; a suspend that returns is treated as cancelled: this runtime
/// keeps no state for a resume). On the first event (xenstored fires every
/// new watch once) it also writes `control/feature-poweroff` and
/// `control/feature-reboot` = `1`. Callbacks run where [`poll`] says.
pub fn watch_control_shutdown() -> Result<(), XsError> {
    watch_async(SHUTDOWN_NODE, SHUTDOWN_TOKEN, Arc::new(on_shutdown_event))
}

fn on_shutdown_event(_ev: &WatchEvent) {
    if !SHUTDOWN_FEATURES_WRITTEN.swap(true, Ordering::Relaxed) {
        for node in FEATURE_NODES {
            let _ = write(node, "1");
        }
    }
    let r = transaction(|tx| {
        let value = match tx.read(SHUTDOWN_NODE) {
            Ok(v) => v,
            Err(XsError::Errno(Errno::ENOENT)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let req = ShutdownRequest::parse(&value);
        if req.is_some() {
            tx.write(SHUTDOWN_NODE, b"")?;
        }
        Ok(req)
    });
    match r {
        Ok(Some(req)) => {
            crate::println!("pv-runtime: xenbus: control/shutdown requests {req:?}");
            match req {
                ShutdownRequest::Suspend => {
                    let _ = sched::request_shutdown(req.reason());
                }
                _ => sched::shutdown(req.reason()),
            }
        }
        Ok(None) => {}
        Err(e) => crate::println!("pv-runtime: xenbus: reading control/shutdown failed: {e}"),
    }
}
