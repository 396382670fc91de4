//! Network front end: a virtual network interface (vif) from a Xen net back
//! end (Linux's `xen-netback`, or dom0's), over `io/netif.h` as Linux's
//! `xen-netfront` speaks it, one queue, one slot per frame. The protocol's
//! decisions are [`pv_runtime_core::netfront`] (host-tested); this module
//! does the XenStore, grant, event-channel and memory work. `docs/net.md`.
//!
//! ```ignore
//! use pv_runtime::netfront::Device;
//! let mut nic = Device::open(0, 20_000_000_000)?;   // device/vif/0
//! nic.send(&frame)?;                               // a whole Ethernet frame
//! let mut buf = [0u8; 1514];
//! if nic.wait(Some(1_000_000_000))? {
//!     while let Some(n) = nic.recv(&mut buf)? { /* buf[..n] */ }
//! }
//! ```
//!
//! Handshake: read `backend`, `backend-id`, `mac`; wait for the back end's
//! InitWait; read its features (`feature-rx-copy` required); set up a TX
//! and an RX ring and [`BUFFERS`] buffer pages for each, all granted once
//! (TX buffers read-only), one event channel; write the keys
//! ([`handshake::publish`]) and `state` = Connected in one transaction (as
//! Linux's netfront, which never says Initialised); wait for the back
//! end's Connected. Every RX buffer is posted at once and posted again as
//! soon as its frame is read. Waiting is `SCHEDOP_poll` on the channel
//! (with `rsp_event` re-armed first), so the guest sleeps until the back end
//! answers. A back end whose responses break the protocol
//! ([`rx::Hostile`]) stops the device (`Error::Broken`).
//!
//! Once connected, a XenStore watch on the back end's `state` counts its
//! changes; waiting also polls the XenStore port, serves the watch, and
//! looks at the back end when the count moved
//! ([`pv_runtime_core::netfront::backend`]). A back end that goes Closing or
//! Closed (hot-unplug) or whose directory goes is answered Closed, as
//! Linux's netfront does, and from then on `send`, `recv` and `wait` return
//! [`Error::BackendClosed`].

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::io::netif::{
    NetifRxFrontRing, NetifRxRequest, NetifTxFrontRing, NetifTxRequest,
};
use hypercall_abi::{DomId, Errno, EvtchnPort, GrantRef};
use pv_runtime_core::blkfront::handshake::HandshakeError;
use pv_runtime_core::netfront::backend::Monitor;
use pv_runtime_core::netfront::handshake::{self, keys};
use pv_runtime_core::netfront::rx::{self, Hostile, Ids, RxResult};
use pv_runtime_core::xenbus::XenbusState;

pub use pv_runtime_core::netfront::frames;

use crate::blkfront::{BackendWatch, Window, ensure_gnttab, read_opt};
use crate::xenbus::{self, XsError};
use crate::{evtchn, gnttab, sched, time};

/// TX buffers and RX buffers (pages each).
pub const BUFFERS: usize = 64;
/// The largest frame sent or received (one page).
pub const MAX_FRAME: usize = 4096;
/// Pages: TX ring, RX ring, TX buffers, RX buffers.
const TX_RING: usize = 0;
const RX_RING: usize = 1;
const TX_BUF: usize = 2;
const RX_BUF: usize = 2 + BUFFERS;

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No `device/vif/<n>`.
    NoDevice(u32),
    /// The back end did not reach the state in time.
    Timeout {
        /// What the front end waited for.
        waiting_for: &'static str,
        /// The back end's state then.
        backend: XenbusState,
    },
    /// The back end is closing or closed, or its directory is gone
    /// (`Unknown`): the device is unusable.
    BackendClosed(XenbusState),
    /// A key is missing or unusable.
    Handshake(String),
    /// A frame larger than [`MAX_FRAME`] or empty.
    BadLength(usize),
    /// No TX buffer came back in time.
    Busy,
    /// The back end broke the protocol; the device is stopped.
    Broken(Hostile),
    /// XenStore failed.
    Store(XsError),
    /// The grant table failed.
    Grant(gnttab::Error),
    /// An event channel operation failed.
    Evtchn(Errno),
    /// Memory for rings or buffers.
    Memory(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice(n) => write!(f, "no device/vif/{n}"),
            Error::Timeout {
                waiting_for,
                backend,
            } => write!(
                f,
                "timed out waiting for the back end to be {waiting_for} (it is {backend:?})"
            ),
            Error::BackendClosed(s) => write!(f, "the back end is {s:?}"),
            Error::Handshake(why) => write!(f, "handshake: {why}"),
            Error::BadLength(n) => write!(f, "a frame of {n} bytes (1 to {MAX_FRAME})"),
            Error::Busy => f.write_str("no TX buffer came back"),
            Error::Broken(h) => write!(f, "the back end broke the protocol: {h:?}"),
            Error::Store(e) => write!(f, "xenstore: {e:?}"),
            Error::Grant(e) => write!(f, "grant table: {e:?}"),
            Error::Evtchn(e) => write!(f, "event channel: {e:?}"),
            Error::Memory(what) => write!(f, "memory: {what}"),
        }
    }
}

impl From<XsError> for Error {
    fn from(e: XsError) -> Self {
        Error::Store(e)
    }
}

impl From<gnttab::Error> for Error {
    fn from(e: gnttab::Error) -> Self {
        Error::Grant(e)
    }
}

impl From<crate::blkfront::Error> for Error {
    fn from(e: crate::blkfront::Error) -> Self {
        match e {
            crate::blkfront::Error::Grant(g) => Error::Grant(g),
            crate::blkfront::Error::Store(s) => Error::Store(s),
            _ => Error::Memory("pages for the rings and buffers"),
        }
    }
}

impl From<HandshakeError<XsError>> for Error {
    fn from(e: HandshakeError<XsError>) -> Self {
        match e {
            HandshakeError::Store(s) => Error::Store(s),
            HandshakeError::Missing(k) => Error::Handshake(format!("{k} is missing")),
            HandshakeError::Invalid { key, value } => {
                Error::Handshake(format!("{key} = {value:?} is unusable"))
            }
        }
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames sent (answered OKAY).
    pub tx: u64,
    /// Frames the back end refused.
    pub tx_errors: u64,
    /// Frames received.
    pub rx: u64,
    /// RX buffers returned without a frame.
    pub rx_errors: u64,
    /// Notifications sent to the back end.
    pub notifies: u64,
}

static EVENTS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

fn on_event(_port: EvtchnPort) {
    // Waiters poll the port and look at the rings themselves.
    EVENTS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
}

/// Events the upcall saw on net front ends' channels.
pub fn events_seen() -> u64 {
    EVENTS.load(core::sync::atomic::Ordering::Relaxed)
}

/// The vifs under `device/vif`, by number, ascending.
pub fn devices() -> Result<Vec<u32>, Error> {
    xenbus::connect()?;
    let names = match xenbus::directory("device/vif") {
        Ok(n) => n,
        Err(XsError::Errno(e)) if e == Errno::ENOENT => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut v: Vec<u32> = names.iter().filter_map(|n| n.parse().ok()).collect();
    v.sort_unstable();
    Ok(v)
}

/// A connected vif.
pub struct Device {
    dir: String,
    backend: String,
    backend_id: DomId,
    mac: [u8; 6],
    window: Option<Window>,
    /// Grants of every page, in window order.
    refs: Vec<GrantRef>,
    port: EvtchnPort,
    /// Private ring indices: (TX req_prod_pvt, TX rsp_cons, RX req_prod_pvt, RX rsp_cons).
    idx: [u32; 4],
    tx_ids: Ids,
    rx_ids: Ids,
    /// Frames received and not yet read: (buffer id, offset, length).
    ready: VecDeque<(u16, u16, usize)>,
    broken: Option<Hostile>,
    state: XenbusState,
    stats: Stats,
    /// The watch on the back end's `state` (from Connected on).
    watch: Option<BackendWatch>,
    monitor: Monitor,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("dir", &self.dir)
            .field("backend", &self.backend)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Device {
    /// Connects to `device/vif/<n>` (the module's steps), waiting up to
    /// `timeout_ns` for each of the back end's steps.
    pub fn open(n: u32, timeout_ns: u64) -> Result<Device, Error> {
        xenbus::connect()?;
        let dir = format!("device/vif/{n}");
        if read_opt(&dir)?.is_none() {
            return Err(Error::NoDevice(n));
        }
        let front = handshake::read_frontend(&mut |k| read_opt(&format!("{dir}/{k}")))?;
        ensure_gnttab()?;
        let mut window = Window::new()?;
        window.grow(2 + 2 * BUFFERS)?;
        let mut dev = Device {
            dir,
            backend: front.backend,
            backend_id: DomId(front.backend_id),
            mac: front.mac,
            window: None,
            refs: Vec::new(),
            port: EvtchnPort(0),
            idx: [0; 4],
            tx_ids: Ids::new(BUFFERS),
            rx_ids: Ids::new(BUFFERS),
            ready: VecDeque::new(),
            broken: None,
            state: XenbusState::Initialising,
            stats: Stats::default(),
            watch: None,
            monitor: Monitor::new(0),
        };
        for (i, f) in window.frames.iter().enumerate() {
            let readonly = (TX_BUF..RX_BUF).contains(&i);
            let r = gnttab::grant_access(dev.backend_id, f.mfn, readonly);
            match r {
                Ok(r) => dev.refs.push(r),
                Err(e) => {
                    dev.window = Some(window);
                    dev.shutdown();
                    return Err(e.into());
                }
            }
        }
        dev.window = Some(window);
        if let Err(e) = dev.connect(timeout_ns) {
            dev.shutdown();
            return Err(e);
        }
        match BackendWatch::new(&dev.backend, "netfront") {
            Ok(w) => dev.watch = Some(w),
            Err(e) => {
                dev.shutdown();
                return Err(e.into());
            }
        }
        Ok(dev)
    }

    /// The vif's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The back end's directory.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    fn backend_state(&self) -> Result<XenbusState, Error> {
        Ok(
            match read_opt(&format!("{}/{}", self.backend, keys::STATE))? {
                Some(v) => XenbusState::parse(&v).unwrap_or(XenbusState::Unknown),
                None => XenbusState::Unknown,
            },
        )
    }

    fn wait_backend(
        &self,
        what: &'static str,
        ok: impl Fn(XenbusState) -> bool,
        fail: impl Fn(XenbusState) -> bool,
        deadline: u64,
    ) -> Result<XenbusState, Error> {
        loop {
            let st = self.backend_state()?;
            if ok(st) {
                return Ok(st);
            }
            if fail(st) {
                return Err(Error::BackendClosed(st));
            }
            let now = time::system_time_ns();
            if now >= deadline {
                return Err(Error::Timeout {
                    waiting_for: what,
                    backend: st,
                });
            }
            // No watch: look again every 20 ms (the handshake runs once).
            let _ = time::sleep((deadline - now).min(20_000_000));
        }
    }

    fn write_state(&mut self, s: XenbusState) -> Result<(), Error> {
        xenbus::write(&format!("{}/{}", self.dir, keys::STATE), s.as_str())?;
        self.state = s;
        Ok(())
    }

    fn words(&self, page: usize) -> Result<&'static [core::sync::atomic::AtomicU32], Error> {
        let w = self.window.as_ref().ok_or(Error::Memory("closed"))?;
        // SAFETY: the window lives in `self.window` until `shutdown`, and
        // every ring made from these words is dropped before that (rings
        // are made per call and never kept).
        unsafe { w.words(page, 1) }.ok_or(Error::Memory("ring page"))
    }

    fn connect(&mut self, timeout_ns: u64) -> Result<(), Error> {
        use XenbusState::*;
        let deadline = time::system_time_ns().saturating_add(timeout_ns);
        // A state left by an earlier driver: close it first, so the back
        // end starts over.
        let own = read_opt(&format!("{}/{}", self.dir, keys::STATE))?
            .and_then(|v| XenbusState::parse(&v))
            .unwrap_or(Unknown);
        if matches!(own, Initialised | Connected | Closing) {
            self.write_state(Closing)?;
            let _ = self.wait_backend(
                "Closing",
                |s| matches!(s, Closing | Closed),
                |_| false,
                deadline,
            );
            self.write_state(Closed)?;
            let _ = self.wait_backend("Closed", |s| s == Closed, |_| false, deadline);
        }
        if own != Initialising {
            self.write_state(Initialising)?;
        }
        self.wait_backend(
            "InitWait",
            |s| matches!(s, InitWait | Connected),
            |s| matches!(s, Closing | Closed),
            deadline,
        )?;
        let backend = self.backend.clone();
        let features = handshake::read_backend(&mut |k| read_opt(&format!("{backend}/{k}")))?;
        NetifTxFrontRing::init(self.words(TX_RING)?).map_err(|_| Error::Memory("TX ring"))?;
        NetifRxFrontRing::init(self.words(RX_RING)?).map_err(|_| Error::Memory("RX ring"))?;
        let port = evtchn::alloc_unbound(self.backend_id).map_err(Error::Evtchn)?;
        self.port = port;
        if evtchn::set_handler(port, evtchn::Handler::Fn(on_event)).is_err() {
            return Err(Error::Evtchn(Errno::ENOSPC));
        }
        evtchn::unmask(port).map_err(Error::Evtchn)?;
        let writes = handshake::publish(
            self.refs[TX_RING].0,
            self.refs[RX_RING].0,
            port.0,
            &features,
        );
        // Post every RX buffer before the back end can look.
        self.post_all()?;
        let dir = self.dir.clone();
        xenbus::transaction(|tx| {
            for (k, v) in &writes {
                tx.write(&format!("{dir}/{k}"), v)?;
            }
            tx.write(&format!("{dir}/{}", keys::STATE), Connected.as_str())?;
            Ok(())
        })?;
        self.state = Connected;
        self.wait_backend(
            "Connected",
            |s| s == Connected,
            |s| matches!(s, Closing | Closed),
            deadline,
        )?;
        Ok(())
    }

    /// Posts every free RX buffer.
    fn post_all(&mut self) -> Result<(), Error> {
        let page = self.words(RX_RING)?;
        let mut r = NetifRxFrontRing::resume(page, self.idx[2], self.idx[3])
            .map_err(|_| Error::Memory("RX ring"))?;
        let mut posted = false;
        while r.free_requests() > 0 {
            let Some(id) = self.rx_ids.take() else {
                break;
            };
            let gref = self.refs[RX_BUF + usize::from(id)];
            let _ = r.put_request(&NetifRxRequest { id, pad: 0, gref });
            posted = true;
        }
        if posted && r.push_requests() {
            let _ = evtchn::send(self.port);
            self.stats.notifies += 1;
        }
        self.idx[2] = r.req_prod_pvt();
        Ok(())
    }

    fn check(&self) -> Result<(), Error> {
        if let Some(h) = self.broken {
            return Err(Error::Broken(h));
        }
        match self.monitor.gone() {
            Some(s) => Err(Error::BackendClosed(s)),
            None => Ok(()),
        }
    }

    /// Looks at the back end if its watch fired since the last look; a
    /// back end going away is answered Closed and ends the device
    /// ([`Error::BackendClosed`]).
    fn check_backend(&mut self) -> Result<(), Error> {
        let Some(n) = self.watch.as_ref().map(BackendWatch::changes) else {
            return Ok(());
        };
        let mut m = self.monitor;
        let r = m.check(n, || self.backend_state());
        self.monitor = m;
        if r?.is_some() && self.state != XenbusState::Closed {
            let _ = self.write_state(XenbusState::Closed);
        }
        self.check()
    }

    /// Whether the back end went away (Closing, Closed, or its directory
    /// removed): serves XenStore and looks.
    pub fn backend_gone(&mut self) -> Result<Option<XenbusState>, Error> {
        let _ = xenbus::poll();
        match self.check_backend() {
            Ok(()) | Err(Error::BackendClosed(_)) => Ok(self.monitor.gone()),
            Err(e) => Err(e),
        }
    }

    fn stop(&mut self, h: Hostile) -> Error {
        self.broken = Some(h);
        Error::Broken(h)
    }

    /// Takes the TX responses waiting.
    fn reap_tx(&mut self) -> Result<(), Error> {
        let page = self.words(TX_RING)?;
        let mut r = NetifTxFrontRing::resume(page, self.idx[0], self.idx[1])
            .map_err(|_| Error::Memory("TX ring"))?;
        loop {
            match r.take_response() {
                Ok(Some(rsp)) => match rx::tx_response(&rsp, &mut self.tx_ids) {
                    Ok(true) => self.stats.tx += 1,
                    Ok(false) => self.stats.tx_errors += 1,
                    Err(h) => return Err(self.stop(h)),
                },
                Ok(None) => break,
                Err(_) => return Err(self.stop(Hostile::Ring)),
            }
        }
        self.idx[1] = r.rsp_cons();
        Ok(())
    }

    /// Takes the RX responses waiting into `ready`.
    fn reap_rx(&mut self) -> Result<(), Error> {
        let page = self.words(RX_RING)?;
        let mut r = NetifRxFrontRing::resume(page, self.idx[2], self.idx[3])
            .map_err(|_| Error::Memory("RX ring"))?;
        let mut empty = false;
        loop {
            match r.take_response() {
                Ok(Some(rsp)) => match rx::rx_response(&rsp, &mut self.rx_ids) {
                    Ok(RxResult::Frame { id, offset, len }) => {
                        self.ready.push_back((id, offset, len))
                    }
                    Ok(RxResult::Empty(_)) => {
                        self.stats.rx_errors += 1;
                        empty = true;
                    }
                    Err(h) => return Err(self.stop(h)),
                },
                Ok(None) => break,
                Err(_) => return Err(self.stop(Hostile::Ring)),
            }
        }
        self.idx[3] = r.rsp_cons();
        if empty {
            self.post_all()?;
        }
        Ok(())
    }

    /// Sends one Ethernet frame (1 to [`MAX_FRAME`] bytes, checksums done),
    /// waiting up to a second for a TX buffer.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        self.check()?;
        if frame.is_empty() || frame.len() > MAX_FRAME {
            return Err(Error::BadLength(frame.len()));
        }
        self.reap_tx()?;
        let deadline = time::system_time_ns().saturating_add(1_000_000_000);
        let id = loop {
            if let Some(id) = self.tx_ids.take() {
                break id;
            }
            if time::system_time_ns() >= deadline {
                return Err(Error::Busy);
            }
            self.sleep(Some(deadline))?;
            self.reap_tx()?;
        };
        let page = TX_BUF + usize::from(id);
        let w = self.window.as_ref().ok_or(Error::Memory("closed"))?;
        let addr = usize::try_from(w.va(page)).map_err(|_| Error::Memory("address"))?;
        let dst: *mut u8 = core::ptr::with_exposed_provenance_mut(addr);
        // SAFETY: TX buffer page `id` is mapped writable in the window for
        // the device's life; its id was free, so the back end is not reading
        // it (it only reads it once the request below is on the ring), and
        // `frame.len()` ≤ one page.
        unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), dst, frame.len()) };
        let ring = self.words(TX_RING)?;
        let mut r = NetifTxFrontRing::resume(ring, self.idx[0], self.idx[1])
            .map_err(|_| Error::Memory("TX ring"))?;
        let req = NetifTxRequest {
            gref: self.refs[page],
            offset: 0,
            flags: 0,
            id,
            #[allow(clippy::cast_possible_truncation)] // ≤ 4096
            size: frame.len() as u16,
        };
        if r.put_request(&req).is_err() {
            // Cannot happen: there are fewer ids than slots.
            let _ = self.tx_ids.put(id);
            return Err(Error::Busy);
        }
        if r.push_requests() {
            let _ = evtchn::send(self.port);
            self.stats.notifies += 1;
        }
        self.idx[0] = r.req_prod_pvt();
        Ok(())
    }

    /// The next frame received, copied into `buf` (truncated to it); its
    /// length, or `None` when none is waiting. Never blocks.
    pub fn recv(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        self.check()?;
        if self.ready.is_empty() {
            self.reap_rx()?;
        }
        let Some((id, offset, len)) = self.ready.pop_front() else {
            return Ok(None);
        };
        let w = self.window.as_ref().ok_or(Error::Memory("closed"))?;
        let addr = usize::try_from(w.va(RX_BUF + usize::from(id)) + u64::from(offset))
            .map_err(|_| Error::Memory("address"))?;
        let n = len.min(buf.len());
        let src: *const u8 = core::ptr::with_exposed_provenance(addr);
        // SAFETY: RX buffer `id` is mapped for the device's life; the back end
        // answered it (it is not posted), and offset + len ≤ one page
        // (checked by `rx_response`).
        unsafe { core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), n) };
        self.stats.rx += 1;
        self.post_all()?;
        Ok(Some(len))
    }

    /// Sleeps until a frame is waiting or `timeout_ns` passes (`None`: no
    /// limit); whether one is. A back end that goes away meanwhile ends
    /// the wait with [`Error::BackendClosed`].
    pub fn wait(&mut self, timeout_ns: Option<u64>) -> Result<bool, Error> {
        let deadline = timeout_ns.map(|t| time::system_time_ns().saturating_add(t));
        loop {
            self.check()?;
            if self.ready.is_empty() {
                self.reap_rx()?;
            }
            if !self.ready.is_empty() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| time::system_time_ns() >= d) {
                return Ok(false);
            }
            self.sleep(deadline)?;
        }
    }

    /// One `SCHEDOP_poll` on the channel and the XenStore port, after
    /// re-arming both rings' `rsp_event` (so a response after the check
    /// wakes us). A XenStore event is served first (the back end watch).
    fn sleep(&mut self, deadline: Option<u64>) -> Result<(), Error> {
        let store = crate::start_info().store_evtchn;
        let watched = self.watch.is_some() && store.0 != 0;
        let was = evtchn::disable_events();
        evtchn::clear_pending(self.port);
        if watched && evtchn::clear_pending(store) {
            evtchn::restore_events(was);
            let _ = xenbus::poll();
            return self.check_backend();
        }
        let waiting = {
            let tx = self.words(TX_RING)?;
            let rxp = self.words(RX_RING)?;
            let mut t = NetifTxFrontRing::resume(tx, self.idx[0], self.idx[1])
                .map_err(|_| Error::Memory("TX ring"))?;
            let mut r = NetifRxFrontRing::resume(rxp, self.idx[2], self.idx[3])
                .map_err(|_| Error::Memory("RX ring"))?;
            let a = t.final_check_for_responses().unwrap_or(true);
            let b = r.final_check_for_responses().unwrap_or(true);
            a || b
        };
        let r = if waiting {
            Ok(())
        } else {
            let both = [self.port, store];
            let ports = if watched { &both[..] } else { &both[..1] };
            sched::poll(ports, deadline.unwrap_or(0)).map_err(Error::Evtchn)
        };
        evtchn::restore_events(was);
        r
    }

    /// Closes the device (Closing, then Closed with the back end), ends
    /// the grants and frees the pages (a page the back end still maps is
    /// kept out of use for good).
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.watch = None;
        if self.state == XenbusState::Connected {
            let deadline = time::system_time_ns().saturating_add(5_000_000_000);
            let _ = self.write_state(XenbusState::Closing);
            let _ = self.wait_backend(
                "Closing",
                |s| {
                    matches!(
                        s,
                        XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
                    )
                },
                |_| false,
                deadline,
            );
            let _ = self.write_state(XenbusState::Closed);
            let _ = self.wait_backend(
                "Closed",
                |s| matches!(s, XenbusState::Closed | XenbusState::Unknown),
                |_| false,
                deadline,
            );
        }
        let mut keep = Vec::new();
        for (i, r) in self.refs.drain(..).enumerate() {
            if gnttab::end_access(r) == Err(gnttab::EndAccessError::StillInUse) {
                keep.push(i);
            }
        }
        if self.port.0 != 0 {
            evtchn::clear_handler(self.port);
            let _ = evtchn::close(self.port);
            self.port = EvtchnPort(0);
        }
        if let Some(w) = self.window.take() {
            let _ = w.free(&keep);
        }
        self.state = XenbusState::Closed;
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if self.window.is_some() {
            self.shutdown();
        }
    }
}
