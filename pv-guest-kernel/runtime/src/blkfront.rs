//! Block front end: a virtual disk from a Xen block back end (Linux's
//! `xen-blkback`, or dom0's), over `io/blkif.h` as Linux's
//! `xen-blkfront` speaks it. The protocol's decisions are
//! [`pv_runtime_core::blkfront`] (host-tested); this module does the
//! XenStore, grant, event-channel and memory work around them. See
//! `docs/block.md`.
//!
//! ```ignore
//! use pv_runtime::blkfront::{self, Device, Options};
//!
//! let mut disk = Device::open(51712, &Options::DEFAULT)?;   // device/vbd/51712 (xvda)
//! let mut buf = [0u8; 4096];
//! disk.read(0, &mut buf)?;                                 // sector 0, 512-byte units
//! disk.write(8, &buf)?;
//! disk.flush()?;
//! disk.close()?;
//! ```
//!
//! * [`devices`] lists `device/vbd/*`; [`Device::open`] connects to one
//!   (XenBus states Initialising → back end InitWait → publish ring,
//!   event channel, protocol and features with `state` = Initialised in
//!   one transaction → back end Connected → read the disk → Connected).
//! * Blocking calls: [`Device::read`], [`Device::write`], [`Device::flush`],
//!   [`Device::discard`], each pipelined over as many ring requests as fit.
//! * Asynchronous: `submit_*` returns a [`Tag`] at once (or
//!   [`Error::Busy`]); [`Device::poll`] hands out completions without
//!   blocking; [`Device::wait`] sleeps on the event channels
//!   (`SCHEDOP_poll`, with the XenStore port so a closing back end is
//!   noticed) until one is ready.
//! * [`Device::close`] (or dropping the device) goes through Closing and
//!   Closed with the back end, ends every grant and frees the pages; a page
//!   the back end keeps mapped is never freed ([`CloseReport`]).
//!
//! Data goes through the device's own page pool, never the caller's memory,
//! so callers may pass any buffer (sector-aligned lengths and offsets on
//! the disk, any alignment in memory). Needs the runtime's page tables
//! (`Config::OWN_PAGE_TABLES`) and the grant table (set up on first open,
//! grown to [`gnttab::MAX_FRAMES`] frames). Like [`crate::xenbus`], do not
//! call it from event or trap handlers.

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::io::blkif::BlkifFrontRing;
use hypercall_abi::xen::pte::PteFlags;
use hypercall_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn};
use pv_runtime_core::blkfront::datapath::{Completed, Config as DpConfig, DataPath, GrantFailed};
use pv_runtime_core::blkfront::handshake::{self, HandshakeError, RingDetails, keys};
use pv_runtime_core::blkfront::{Env, PAGE_SIZE, PageIdx, StillInUse, SubmitError};
use pv_runtime_core::xenbus::state::frontend_may;
use spin::Mutex;

pub use pv_runtime_core::blkfront::check;
pub use pv_runtime_core::blkfront::datapath::Stats;
pub use pv_runtime_core::blkfront::{
    Discard, DiskInfo, Features, FlushMode, Hostile, IoError, Limits, Op, Tag, Transport,
};
pub use pv_runtime_core::xenbus::XenbusState;

use crate::xenbus::{self, XsError};
use crate::{evtchn, gnttab, mm, sched, time};

/// Where devices' pages are mapped: 64 windows of 1 GiB from here.
pub const WINDOW_BASE: u64 = 0x0000_7200_0000_0000;
const WINDOW_BYTES: u64 = 1 << 30;
const WINDOWS: u32 = 64;

/// How a device is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// What the front end offers: ring size, queues, indirect segments,
    /// persistent grants ([`Limits::DEFAULT`]: 4 ring pages, 1 queue, 32
    /// segments, persistent).
    pub limits: Limits,
    /// Data pages in the pool (default 256: 1 MiB in flight at most);
    /// raised to one full request. Each is a grant reference.
    pub pool_pages: u32,
    /// How long each handshake step waits for the back end (default 20 s).
    pub timeout_ns: u64,
    /// How long a blocking call waits for a response (default 30 s;
    /// `None`: for ever).
    pub io_timeout_ns: Option<u64>,
}

impl Options {
    /// The defaults.
    pub const DEFAULT: Options = Options {
        limits: Limits::DEFAULT,
        pool_pages: 256,
        timeout_ns: 20_000_000_000,
        io_timeout_ns: Some(30_000_000_000),
    };
}

impl Default for Options {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// No vbd at all (`None`), or not this one.
    NoDevice(Option<u64>),
    /// The back end did not reach the state in time.
    Timeout {
        /// What the front end waited for.
        waiting_for: &'static str,
        /// The back end's state when it gave up.
        backend: XenbusState,
    },
    /// The back end is closing or closed (or its directory is gone).
    BackendClosed(XenbusState),
    /// A XenStore key the handshake needs is missing or unusable.
    Handshake(String),
    /// The disk is read-only.
    ReadOnly,
    /// The request failed (`BLKIF_RSP_ERROR`, `EOPNOTSUPP`, ...).
    Io(IoError),
    /// The request was refused before it was sent (range, alignment,
    /// size, an operation the back end does not offer).
    Rejected(SubmitError),
    /// No room for a request now (asynchronous calls only).
    Busy,
    /// No response within the I/O timeout; the request stays in flight.
    IoTimeout,
    /// The back end broke the protocol; the device is stopped.
    Broken(Hostile),
    /// XenStore failed.
    Store(XsError),
    /// A grant operation failed.
    Grant(gnttab::Error),
    /// An event-channel operation failed.
    Evtchn(Errno),
    /// Memory for the rings or the pool could not be had.
    Memory(&'static str),
    /// The device is closed.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoDevice(None) => f.write_str("no block device (device/vbd is empty)"),
            Error::NoDevice(Some(v)) => write!(f, "no such block device: device/vbd/{v}"),
            Error::Timeout {
                waiting_for,
                backend,
            } => write!(
                f,
                "the back end never reached {waiting_for} (it is in {backend:?})"
            ),
            Error::BackendClosed(s) => write!(f, "the back end closed the device ({s:?})"),
            Error::Handshake(m) => write!(f, "handshake: {m}"),
            Error::ReadOnly => f.write_str("the device is read-only"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Rejected(e) => write!(f, "request refused: {e}"),
            Error::Busy => f.write_str("no room for another request now"),
            Error::IoTimeout => f.write_str("the back end did not answer in time"),
            Error::Broken(h) => write!(f, "the back end broke the protocol: {h}"),
            Error::Store(e) => write!(f, "xenstore: {e}"),
            Error::Grant(e) => write!(f, "grant table: {e}"),
            Error::Evtchn(e) => write!(f, "event channel: {e}"),
            Error::Memory(m) => write!(f, "out of memory: {m}"),
            Error::Closed => f.write_str("the device is closed"),
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

impl From<HandshakeError<XsError>> for Error {
    fn from(e: HandshakeError<XsError>) -> Self {
        match e {
            HandshakeError::Store(s) => Error::Store(s),
            other => Error::Handshake(other.to_string()),
        }
    }
}

impl From<SubmitError> for Error {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => Error::Busy,
            SubmitError::ReadOnly => Error::ReadOnly,
            SubmitError::Broken(h) => Error::Broken(h),
            SubmitError::Closed => Error::Closed,
            other => Error::Rejected(other),
        }
    }
}

// ---------------------------------------------------------------- xenstore

/// A key's value, `None` if it does not exist.
pub(crate) fn read_opt(path: &str) -> Result<Option<Vec<u8>>, XsError> {
    match xenbus::read(path) {
        Ok(v) => Ok(Some(v)),
        Err(XsError::Errno(e)) if e == Errno::ENOENT => Ok(None),
        Err(e) => Err(e),
    }
}

/// The vbds under `device/vbd`, by number, ascending.
pub fn devices() -> Result<Vec<u64>, Error> {
    let names = match xenbus::directory("device/vbd") {
        Ok(n) => n,
        Err(XsError::Errno(e)) if e == Errno::ENOENT => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut v: Vec<u64> = names
        .iter()
        .filter_map(|n| handshake::parse_int_auto(n.as_bytes()))
        .collect();
    v.sort_unstable();
    Ok(v)
}

static WATCH_SEQ: AtomicU32 = AtomicU32::new(0);

/// A watch on the back end's `state`: counts changes (the net front end's
/// too).
pub(crate) struct BackendWatch {
    token: String,
    changes: Arc<AtomicU64>,
}

impl BackendWatch {
    /// Watches `<backend>/state` under a token `<driver>-<n>`.
    pub(crate) fn new(backend: &str, driver: &str) -> Result<BackendWatch, XsError> {
        let n = WATCH_SEQ.fetch_add(1, Ordering::Relaxed);
        let token = format!("{driver}-{n}");
        let changes = Arc::new(AtomicU64::new(0));
        let c = changes.clone();
        xenbus::watch(
            &format!("{backend}/{}", keys::STATE),
            &token,
            Arc::new(move |_ev: &xenbus::WatchEvent| {
                c.fetch_add(1, Ordering::Release);
            }),
        )?;
        Ok(BackendWatch { token, changes })
    }

    /// Events so far.
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }
}

impl Drop for BackendWatch {
    fn drop(&mut self) {
        let _ = xenbus::unwatch(&self.token);
    }
}

// ---------------------------------------------------------------- memory

static WINDOW_SLOTS: Mutex<u64> = Mutex::new(0);

/// Pages of the domain's own, mapped writable and contiguous in one of the
/// 1 GiB windows from [`WINDOW_BASE`] (the net front end's too).
pub(crate) struct Window {
    slot: u32,
    base: u64,
    pub(crate) frames: Vec<mm::Frame>,
    /// Until released.
    held: bool,
}

impl Window {
    pub(crate) fn new() -> Result<Window, Error> {
        let mut used = WINDOW_SLOTS.lock();
        let slot = (0..WINDOWS)
            .find(|s| *used & (1 << s) == 0)
            .ok_or(Error::Memory("no free blkfront window"))?;
        *used |= 1 << slot;
        Ok(Window {
            slot,
            base: WINDOW_BASE + u64::from(slot) * WINDOW_BYTES,
            frames: Vec::new(),
            held: true,
        })
    }

    /// Add `pages` zeroed pages; the index of the first.
    pub(crate) fn grow(&mut self, pages: usize) -> Result<usize, Error> {
        let first = self.frames.len();
        if (first + pages) as u64 * PAGE_SIZE as u64 > WINDOW_BYTES {
            return Err(Error::Memory("more pages than a window holds"));
        }
        let mut got = Vec::with_capacity(pages);
        for _ in 0..pages {
            match mm::alloc_frame() {
                Some(f) => got.push(f),
                None => {
                    for f in got {
                        let _ = mm::free_frame(f);
                    }
                    return Err(Error::Memory("no free frames"));
                }
            }
        }
        let mfns: Vec<Mfn> = got.iter().map(|f| f.mfn).collect();
        let va = self.va(first);
        if mm::map(va, &mfns, PteFlags::RW | PteFlags::NX).is_err() {
            // Part of it may be mapped: free the frames only once it is not.
            if mm::unmap(va, pages as u64).is_ok() {
                for f in got {
                    let _ = mm::free_frame(f);
                }
            }
            return Err(Error::Memory("mapping pages failed"));
        }
        if let Ok(addr) = usize::try_from(va) {
            let p: *mut u8 = core::ptr::with_exposed_provenance_mut(addr);
            // SAFETY: `va..va + pages * 4096` was just mapped writable to
            // frames this window owns; no reference to them exists yet.
            unsafe { p.write_bytes(0, pages * PAGE_SIZE) };
        }
        self.frames.extend(got);
        Ok(first)
    }

    pub(crate) fn va(&self, page: usize) -> u64 {
        self.base + page as u64 * PAGE_SIZE as u64
    }

    /// The words of pages `first..first + n` (rings).
    ///
    /// # Safety
    ///
    /// The pages must stay mapped (the window not freed) while the slice
    /// is used.
    pub(crate) unsafe fn words(&self, first: usize, n: usize) -> Option<&'static [AtomicU32]> {
        if first + n > self.frames.len() {
            return None;
        }
        let addr = usize::try_from(self.va(first)).ok()?;
        let p: *const AtomicU32 = core::ptr::with_exposed_provenance(addr);
        // SAFETY: mapped writable (grow), 4 KiB aligned, shared with the
        // back end and so only ever accessed through atomics; the caller
        // keeps the mapping alive.
        Some(unsafe { core::slice::from_raw_parts(p, n * PAGE_WORDS) })
    }

    /// Unmap everything and free the frames, except the pages in `keep`
    /// (still mapped by someone else: never reused).
    pub(crate) fn free(mut self, keep: &[usize]) -> u32 {
        self.release(keep)
    }

    fn release(&mut self, keep: &[usize]) -> u32 {
        if !self.held {
            return 0;
        }
        self.held = false;
        let frames = core::mem::take(&mut self.frames);
        let unmapped = frames.is_empty() || mm::unmap(self.base, frames.len() as u64).is_ok();
        let mut leaked = 0;
        for (i, f) in frames.into_iter().enumerate() {
            if keep.contains(&i) || !unmapped {
                leaked += 1;
            } else {
                let _ = mm::free_frame(f);
            }
        }
        // A window still mapped (the unmap failed) is never handed out
        // again.
        if unmapped {
            *WINDOW_SLOTS.lock() &= !(1 << self.slot);
        }
        leaked
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        self.release(&[]);
    }
}

/// A buffer of whole pages mapped writable (the heap is small; disk I/O
/// likes megabytes).
pub struct PageBuf {
    window: Window,
    len: usize,
}

impl PageBuf {
    /// `len` zeroed bytes (rounded up to pages).
    pub fn new(len: usize) -> Result<PageBuf, Error> {
        let mut window = Window::new()?;
        window.grow(len.div_ceil(PAGE_SIZE))?;
        Ok(PageBuf { window, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        let p: *const u8 =
            core::ptr::with_exposed_provenance(usize::try_from(self.window.base).unwrap_or(0));
        // SAFETY: `len` bytes from the window's base are mapped (grow) for
        // as long as `self` lives; only this buffer's borrows reach them.
        unsafe { core::slice::from_raw_parts(p, self.len) }
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let p: *mut u8 =
            core::ptr::with_exposed_provenance_mut(usize::try_from(self.window.base).unwrap_or(0));
        // SAFETY: as in `as_slice`, mapped writable; `&mut self` makes the
        // borrow unique.
        unsafe { core::slice::from_raw_parts_mut(p, self.len) }
    }

    /// Bytes in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageBuf({} bytes at {:#x})", self.len, self.window.base)
    }
}

// ---------------------------------------------------------------- the machine

static EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_ring_event(_port: EvtchnPort) {
    // Waiters poll the ports and look at the rings themselves.
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// Ring events the upcall saw (all devices).
pub fn events_seen() -> u64 {
    EVENTS.load(Ordering::Relaxed)
}

/// The data path's view of the machine: the pool's pages, grants to the
/// back end, its event channels.
struct RtEnv {
    backend: DomId,
    /// Address of pool page 0.
    base: u64,
    mfns: Vec<Mfn>,
    ports: Vec<EvtchnPort>,
}

impl RtEnv {
    fn page_ptr(&self, page: PageIdx, offset: usize, len: usize) -> Option<usize> {
        if (page as usize) >= self.mfns.len() || offset.checked_add(len)? > PAGE_SIZE {
            return None;
        }
        let va = self.base + u64::from(page) * PAGE_SIZE as u64 + offset as u64;
        usize::try_from(va).ok()
    }
}

impl Env for RtEnv {
    fn grant(&mut self, page: PageIdx, readonly: bool) -> Result<GrantRef, GrantFailed> {
        let mfn = *self.mfns.get(page as usize).ok_or(GrantFailed)?;
        gnttab::grant_access(self.backend, mfn, readonly).map_err(|_| GrantFailed)
    }

    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse> {
        match gnttab::end_access(gref) {
            Err(gnttab::EndAccessError::StillInUse) => Err(StillInUse),
            _ => Ok(()),
        }
    }

    fn write_page(&mut self, page: PageIdx, offset: usize, data: &[u8]) {
        if let Some(addr) = self.page_ptr(page, offset, data.len()) {
            let dst: *mut u8 = core::ptr::with_exposed_provenance_mut(addr);
            // SAFETY: the range lies in a pool page, mapped writable for the
            // device's life (the window); the page is the data path's now
            // (not on the ring), so nothing else writes it.
            unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        }
    }

    fn read_page(&mut self, page: PageIdx, offset: usize, out: &mut [u8]) {
        if let Some(addr) = self.page_ptr(page, offset, out.len()) {
            let src: *const u8 = core::ptr::with_exposed_provenance(addr);
            // SAFETY: as in `write_page`; the request that filled it has
            // completed, so the back end is done with it.
            unsafe { core::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
        }
    }

    fn notify(&mut self, queue: usize) {
        if let Some(p) = self.ports.get(queue) {
            let _ = evtchn::send(*p);
        }
    }
}

/// Set the grant table up (all [`gnttab::MAX_FRAMES`] frames) if it is
/// smaller.
pub(crate) fn ensure_gnttab() -> Result<(), Error> {
    let (_, frames) = gnttab::table_frames();
    if (frames as usize) < gnttab::MAX_FRAMES {
        #[allow(clippy::cast_possible_truncation)] // 4
        gnttab::init(gnttab::MAX_FRAMES as u32)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- the device

/// What [`Device::close`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseReport {
    /// The back end's state at the end (Closed when it let go).
    pub backend: XenbusState,
    /// Requests still in flight that were given up.
    pub aborted: usize,
    /// Pages the back end still had mapped: never freed.
    pub leaked_pages: u32,
}

/// A connected virtual disk.
pub struct Device {
    vdev: u64,
    dir: String,
    backend: String,
    backend_id: DomId,
    opts: Options,
    transport: Transport,
    state: XenbusState,
    watch: BackendWatch,
    seen_changes: u64,
    gone: Option<XenbusState>,
    published: bool,
    ring_refs: Vec<GrantRef>,
    ports: Vec<EvtchnPort>,
    /// Borrows ring pages of `window`: dropped first.
    dp: Option<DataPath<'static>>,
    env: RtEnv,
    window: Option<Window>,
    closed: bool,
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Device")
            .field("vdev", &self.vdev)
            .field("backend", &self.backend)
            .field("state", &self.state)
            .field("dp", &self.dp)
            .finish()
    }
}

/// A completed request, while [`Device::poll`]'s callback runs.
pub struct Completion<'a> {
    /// The request.
    pub tag: Tag,
    /// What it did.
    pub op: Op,
    /// Its first sector.
    pub sector: u64,
    /// Its bytes (reads and writes).
    pub len: usize,
    /// How it ended.
    pub result: Result<(), Error>,
    c: &'a Completed,
    dp: &'a DataPath<'static>,
    env: &'a mut RtEnv,
}

impl Completion<'_> {
    /// Copy a read's data into `out`; returns the bytes copied (0 if the
    /// read failed).
    pub fn read_into(&mut self, out: &mut [u8]) -> usize {
        if self.result.is_err() || self.op != Op::Read {
            return 0;
        }
        self.dp.copy_out(self.env, self.c, 0, out)
    }
}

impl fmt::Debug for Completion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completion")
            .field("tag", &self.tag)
            .field("op", &self.op)
            .field("sector", &self.sector)
            .field("len", &self.len)
            .field("result", &self.result)
            .finish()
    }
}

fn state_str(s: XenbusState) -> &'static str {
    s.as_str()
}

impl Device {
    /// Connect to `device/vbd/<vdev>` (see the module's list of steps).
    pub fn open(vdev: u64, opts: &Options) -> Result<Device, Error> {
        xenbus::connect()?;
        let dir = format!("device/vbd/{vdev}");
        let name = vdev.to_string();
        let front = match handshake::read_frontend(&name, &mut |k| read_opt(&format!("{dir}/{k}")))
        {
            Ok(f) => f,
            Err(HandshakeError::Missing(_)) if read_opt(&dir)?.is_none() => {
                return Err(Error::NoDevice(Some(vdev)));
            }
            Err(e) => return Err(e.into()),
        };
        ensure_gnttab()?;
        let watch = BackendWatch::new(&front.backend, "blkfront")?;
        let mut dev = Device {
            vdev,
            dir,
            backend: front.backend,
            backend_id: DomId(front.backend_id),
            opts: *opts,
            transport: Transport {
                ring_page_order: 0,
                legacy_ring_pages: false,
                queues: 1,
            },
            state: XenbusState::Initialising,
            watch,
            seen_changes: 0,
            gone: None,
            published: false,
            ring_refs: Vec::new(),
            ports: Vec::new(),
            dp: None,
            env: RtEnv {
                backend: DomId(front.backend_id),
                base: 0,
                mfns: Vec::new(),
                ports: Vec::new(),
            },
            window: None,
            closed: false,
        };
        dev.connect(front.handle)?;
        Ok(dev)
    }

    /// [`open`](Self::open) xvda (51712) if there is one, else the first
    /// vbd.
    pub fn open_default(opts: &Options) -> Result<Device, Error> {
        let all = devices()?;
        let vdev = if all.contains(&pv_runtime_core::blkfront::check::XVDA) {
            pv_runtime_core::blkfront::check::XVDA
        } else {
            *all.first().ok_or(Error::NoDevice(None))?
        };
        Self::open(vdev, opts)
    }

    fn deadline(&self) -> u64 {
        time::system_time_ns().saturating_add(self.opts.timeout_ns)
    }

    fn write_state(&mut self, s: XenbusState) -> Result<(), Error> {
        if !frontend_may(self.state, s) {
            return Err(Error::Handshake(format!(
                "illegal front-end transition {:?} -> {s:?}",
                self.state
            )));
        }
        xenbus::write(&format!("{}/{}", self.dir, keys::STATE), state_str(s))?;
        self.state = s;
        Ok(())
    }

    fn backend_state(&self) -> Result<XenbusState, Error> {
        Ok(
            match read_opt(&format!("{}/{}", self.backend, keys::STATE))? {
                Some(v) => XenbusState::parse(&v).unwrap_or(XenbusState::Unknown),
                None => XenbusState::Unknown,
            },
        )
    }

    /// Wait until the back end's state satisfies `ok`; fail at once if it
    /// satisfies `fail`, or at `deadline`.
    fn wait_backend(
        &mut self,
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
            xenbus::wait_for_events(deadline - now)?;
        }
    }

    /// Go Closing then Closed with the back end, as far as it follows.
    fn close_handshake(&mut self) -> XenbusState {
        use XenbusState::*;
        let deadline = self.deadline();
        if self.state != Closed {
            let _ = self.write_state(Closing);
            let _ = self.wait_backend(
                "Closing",
                |s| matches!(s, Closing | Closed | Unknown),
                |_| false,
                deadline,
            );
            let _ = self.write_state(Closed);
        }
        match self.wait_backend(
            "Closed",
            |s| matches!(s, Closed | Unknown),
            |_| false,
            deadline,
        ) {
            Ok(s) => s,
            Err(Error::Timeout { backend, .. }) => backend,
            Err(_) => Unknown,
        }
    }

    fn connect(&mut self, handle: u16) -> Result<(), Error> {
        use XenbusState::*;
        // A front end left Initialised, Connected or Closing by an earlier
        // driver: close that connection first, so the back end starts
        // again (Linux's blkback reconnects from Closed on Initialising).
        let own = read_opt(&format!("{}/{}", self.dir, keys::STATE))?
            .and_then(|v| XenbusState::parse(&v))
            .unwrap_or(Unknown);
        if matches!(
            own,
            Initialised | Connected | Closing | Reconfiguring | Reconfigured
        ) {
            self.state = own;
            self.close_handshake();
        }
        self.write_state(Initialising)?;
        let deadline = self.deadline();
        self.wait_backend(
            "InitWait",
            |s| matches!(s, InitWait | Initialised | Connected),
            |_| false,
            deadline,
        )?;
        let backend = self.backend.clone();
        self.transport = handshake::negotiate_transport(&self.opts.limits, &mut |k| {
            read_opt(&format!("{backend}/{k}"))
        })?;
        let rings = self.setup_rings()?;
        let details: Vec<RingDetails> = self
            .ring_refs
            .chunks(self.transport.ring_pages() as usize)
            .zip(&self.ports)
            .map(|(refs, port)| RingDetails {
                refs: refs.iter().map(|r| r.0).collect(),
                port: port.0,
            })
            .collect();
        let writes = handshake::publish(&self.transport, &details, self.opts.limits.persistent)
            .map_err(|e| Error::Handshake(e.to_string()))?;
        let dir = self.dir.clone();
        self.published = true;
        xenbus::transaction(|tx| {
            for (k, v) in &writes {
                tx.write(&format!("{dir}/{k}"), v)?;
            }
            Ok(())
        })?;
        self.state = Initialised;
        let deadline = self.deadline();
        self.wait_backend(
            "Connected",
            |s| s == Connected,
            |s| matches!(s, Closing | Closed),
            deadline,
        )?;
        let (disk, features) = handshake::read_connected(&self.opts.limits, &mut |k| {
            read_opt(&format!("{backend}/{k}"))
        })?;
        let cfg = DpConfig {
            handle,
            disk,
            features,
            pool_pages: self.opts.pool_pages,
        };
        let slots: u32 = rings.iter().map(|r| r.size()).sum();
        let layout = cfg.layout(slots);
        let window = self.window.as_mut().ok_or(Error::Closed)?;
        let first = window.grow(layout.total() as usize)?;
        self.env.base = window.va(first);
        self.env.mfns = window.frames[first..].iter().map(|f| f.mfn).collect();
        self.env.ports = self.ports.clone();
        let dp = DataPath::new(cfg, rings, &mut self.env)
            .map_err(|_| Error::Grant(gnttab::Error::NoRefs))?;
        self.dp = Some(dp);
        self.write_state(Connected)?;
        Ok(())
    }

    /// Allocate, initialise and grant the rings; allocate their ports.
    fn setup_rings(&mut self) -> Result<Vec<BlkifFrontRing<'static>>, Error> {
        let pages = self.transport.ring_pages() as usize;
        let queues = self.transport.queues.max(1) as usize;
        let mut window = Window::new()?;
        window.grow(pages * queues)?;
        let mut rings = Vec::with_capacity(queues);
        for q in 0..queues {
            // SAFETY: the window lives in `self.window` until `shutdown`,
            // which drops the data path (and these rings) first.
            let words =
                unsafe { window.words(q * pages, pages) }.ok_or(Error::Memory("ring pages"))?;
            rings.push(BlkifFrontRing::init(words).map_err(|_| Error::Memory("ring too small"))?);
        }
        let mfns: Vec<Mfn> = window.frames.iter().map(|f| f.mfn).collect();
        self.window = Some(window);
        for mfn in mfns {
            let r = gnttab::grant_access(self.backend_id, mfn, false)?;
            self.ring_refs.push(r);
        }
        for _ in 0..queues {
            let port = evtchn::alloc_unbound(self.backend_id).map_err(Error::Evtchn)?;
            self.ports.push(port);
            if evtchn::set_handler(port, evtchn::Handler::Fn(on_ring_event)).is_err() {
                return Err(Error::Evtchn(Errno::ENOSPC));
            }
            evtchn::unmask(port).map_err(Error::Evtchn)?;
        }
        Ok(rings)
    }

    // ------------------------------------------------------------ queries

    /// The vbd's number.
    pub fn vdev(&self) -> u64 {
        self.vdev
    }

    /// The back end's directory.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// The back end's domain.
    pub fn backend_id(&self) -> DomId {
        self.backend_id
    }

    fn dp(&self) -> Result<&DataPath<'static>, Error> {
        self.dp.as_ref().ok_or(Error::Closed)
    }

    /// The disk: size (512-byte sectors), sector sizes, `info` flags.
    pub fn info(&self) -> DiskInfo {
        self.dp().map(|d| *d.disk()).unwrap_or(DiskInfo {
            sectors: 0,
            sector_size: 512,
            physical_sector_size: 512,
            info: 0,
        })
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.info().sectors
    }

    /// Whether writes and discards are refused (`VDISK_READONLY`).
    pub fn readonly(&self) -> bool {
        self.info().readonly()
    }

    /// The features in force.
    pub fn features(&self) -> Option<Features> {
        self.dp().ok().map(|d| *d.features())
    }

    /// The ring and queues in use.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Counters of the data path.
    pub fn stats(&self) -> Stats {
        self.dp().map(|d| d.stats()).unwrap_or_default()
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.dp().map_or(0, |d| d.in_flight())
    }

    /// Bytes one ring request carries (the blocking calls' pipelining
    /// unit).
    pub fn request_bytes(&self) -> usize {
        self.dp().map_or(PAGE_SIZE, |d| d.request_bytes())
    }

    /// Bytes the pool holds: the largest single request.
    pub fn pool_bytes(&self) -> usize {
        self.dp().map_or(0, |d| d.pool_bytes())
    }

    // ------------------------------------------------------------ asynchronous

    fn ready(&mut self) -> Result<&mut DataPath<'static>, Error> {
        if let Some(s) = self.gone {
            return Err(Error::BackendClosed(s));
        }
        self.dp.as_mut().ok_or(Error::Closed)
    }

    /// Queue a read of `len` bytes from `sector`.
    pub fn submit_read(&mut self, sector: u64, len: usize) -> Result<Tag, Error> {
        self.ready()?;
        let (dp, env) = (self.dp.as_mut().ok_or(Error::Closed)?, &mut self.env);
        Ok(dp.submit_read(env, sector, len)?)
    }

    /// Queue a write of `data` at `sector` (copied now).
    pub fn submit_write(&mut self, sector: u64, data: &[u8]) -> Result<Tag, Error> {
        self.ready()?;
        let (dp, env) = (self.dp.as_mut().ok_or(Error::Closed)?, &mut self.env);
        Ok(dp.submit_write(env, sector, data)?)
    }

    /// Queue a flush (completes at once if the back end offers none).
    pub fn submit_flush(&mut self) -> Result<Tag, Error> {
        self.ready()?;
        let (dp, env) = (self.dp.as_mut().ok_or(Error::Closed)?, &mut self.env);
        Ok(dp.submit_flush(env)?)
    }

    /// Queue a discard of `nr_sectors` from `sector`.
    pub fn submit_discard(
        &mut self,
        sector: u64,
        nr_sectors: u64,
        secure: bool,
    ) -> Result<Tag, Error> {
        self.ready()?;
        let (dp, env) = (self.dp.as_mut().ok_or(Error::Closed)?, &mut self.env);
        Ok(dp.submit_discard(env, sector, nr_sectors, secure)?)
    }

    /// Take the responses that arrived and run `f` on each completed
    /// request (copy a read's data out with [`Completion::read_into`]);
    /// never blocks. Returns how many completed.
    pub fn poll(&mut self, mut f: impl FnMut(Completion<'_>)) -> Result<usize, Error> {
        let dp = self.dp.as_mut().ok_or(Error::Closed)?;
        dp.poll(&mut self.env);
        let mut n = 0;
        while let Some(c) = dp.next_completion() {
            f(Completion {
                tag: c.tag,
                op: c.op,
                sector: c.sector,
                len: c.len,
                result: c.result.map_err(Error::Io),
                c: &c,
                dp: &*dp,
                env: &mut self.env,
            });
            dp.release(c);
            n += 1;
        }
        Ok(n)
    }

    /// Sleep until a request completes (then [`poll`](Self::poll) it) or
    /// `timeout_ns` passes (`None`: for ever); returns whether one is
    /// ready. Returns `false` at once when nothing is in flight and
    /// nothing waits to be polled. Sleeps in
    /// `SCHEDOP_poll` on the rings' ports and the XenStore port; a back end
    /// that closes meanwhile ends the wait with
    /// [`Error::BackendClosed`].
    pub fn wait(&mut self, timeout_ns: Option<u64>) -> Result<bool, Error> {
        let deadline = timeout_ns.map(|t| time::system_time_ns().saturating_add(t));
        if self.dp()?.has_completions() {
            return Ok(true);
        }
        self.wait_until(deadline)
    }

    /// Sleep until new requests complete (completions already queued do
    /// not count) or `deadline`; whether some did. `false` at once when
    /// nothing is in flight.
    fn wait_until(&mut self, deadline: Option<u64>) -> Result<bool, Error> {
        let store = crate::start_info().store_evtchn;
        let mut ports = self.ports.clone();
        if store.0 != 0 {
            ports.push(store);
        }
        let was = evtchn::disable_events();
        let r = self.wait_loop(&ports, store, deadline);
        evtchn::restore_events(was);
        r
    }

    fn wait_loop(
        &mut self,
        ports: &[EvtchnPort],
        store: EvtchnPort,
        deadline: Option<u64>,
    ) -> Result<bool, Error> {
        loop {
            {
                let dp = self.dp.as_mut().ok_or(Error::Closed)?;
                if dp.poll(&mut self.env) > 0 {
                    return Ok(true);
                }
                if dp.in_flight() == 0 {
                    return Ok(false);
                }
            }
            if let Some(s @ (XenbusState::Closed | XenbusState::Unknown)) = self.gone {
                return Err(Error::BackendClosed(s));
            }
            if deadline.is_some_and(|d| time::system_time_ns() >= d) {
                return Ok(false);
            }
            for p in &self.ports {
                evtchn::clear_pending(*p);
            }
            if store.0 != 0 && evtchn::clear_pending(store) {
                // Serve XenStore (watch callbacks run), then look at the
                // back end if its state changed.
                let _ = xenbus::poll();
                self.check_backend()?;
                continue;
            }
            if self.dp.as_ref().is_some_and(|d| d.responses_waiting()) {
                continue;
            }
            sched::poll(ports, deadline.unwrap_or(0)).map_err(Error::Evtchn)?;
        }
    }

    /// Notice a back end that is closing: stop submitting, and answer as
    /// Linux's `blkfront_closing` does (our state goes Closed, so the back
    /// end disconnects once its requests in flight are done).
    fn check_backend(&mut self) -> Result<(), Error> {
        let n = self.watch.changes();
        if n == self.seen_changes {
            return Ok(());
        }
        self.seen_changes = n;
        let st = self.backend_state()?;
        if matches!(
            st,
            XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
        ) {
            self.gone = Some(st);
            if self.state != XenbusState::Closed {
                let _ = self.write_state(XenbusState::Closed);
            }
        }
        Ok(())
    }

    /// Whether the back end went away (Closing, Closed, or its directory
    /// removed); serves XenStore to find out.
    pub fn backend_gone(&mut self) -> Result<Option<XenbusState>, Error> {
        let _ = xenbus::poll();
        self.check_backend()?;
        Ok(self.gone)
    }

    // ------------------------------------------------------------ blocking

    fn io_deadline(&self) -> Option<u64> {
        self.opts
            .io_timeout_ns
            .map(|t| time::system_time_ns().saturating_add(t))
    }

    /// Wait for `tag`; other completions stay queued for
    /// [`poll`](Self::poll).
    fn wait_for(&mut self, tag: Tag) -> Result<Completed, Error> {
        let deadline = self.io_deadline();
        loop {
            let dp = self.dp.as_mut().ok_or(Error::Closed)?;
            dp.poll(&mut self.env);
            if let Some(c) = dp.take_completion(tag) {
                return Ok(c);
            }
            if !self.wait_until(deadline)? {
                return Err(Error::IoTimeout);
            }
        }
    }

    /// Submit with `make` until it is not busy (waiting for completions
    /// meanwhile).
    fn submit_blocking(
        &mut self,
        mut make: impl FnMut(&mut Device) -> Result<Tag, Error>,
    ) -> Result<Tag, Error> {
        let deadline = self.io_deadline();
        loop {
            match make(self) {
                Err(Error::Busy) => {
                    if !self.wait_until(deadline)? {
                        // Nothing in flight: the pool is held by
                        // completions nobody polled.
                        return Err(if self.in_flight() == 0 {
                            Error::Busy
                        } else {
                            Error::IoTimeout
                        });
                    }
                }
                other => return other,
            }
        }
    }

    /// The pipelining unit: one ring request's bytes, whole sectors.
    fn chunk(&self) -> usize {
        let size = self.info().sector_size.max(512) as usize;
        let req = self.request_bytes();
        (req - req % size).max(size)
    }

    /// Run `bytes` of I/O from `sector` in chunks, many in flight:
    /// `start(dev, sector, offset, len)` submits one, `done(dev, c, offset)`
    /// takes its completion.
    fn pipeline(
        &mut self,
        sector: u64,
        bytes: usize,
        mut start: impl FnMut(&mut Device, u64, usize, usize) -> Result<Tag, Error>,
        mut done: impl FnMut(&mut Device, &Completed, usize),
    ) -> Result<(), Error> {
        let chunk = self.chunk();
        let deadline = self.io_deadline();
        let mut next = 0usize;
        let mut flying: Vec<(Tag, usize)> = Vec::new();
        let mut first_err: Option<Error> = None;
        while (next < bytes && first_err.is_none()) || !flying.is_empty() {
            while next < bytes && first_err.is_none() {
                let n = chunk.min(bytes - next);
                match start(self, sector + (next / 512) as u64, next, n) {
                    Ok(tag) => {
                        flying.push((tag, next));
                        next += n;
                    }
                    Err(Error::Busy) if !flying.is_empty() => break,
                    Err(Error::Busy) => {
                        if !self.wait_until(deadline)? {
                            return Err(if self.in_flight() == 0 {
                                Error::Busy
                            } else {
                                Error::IoTimeout
                            });
                        }
                    }
                    Err(e) => first_err = Some(e),
                }
            }
            if flying.is_empty() {
                break;
            }
            let dp = self.dp.as_mut().ok_or(Error::Closed)?;
            dp.poll(&mut self.env);
            let mut progressed = false;
            let mut i = 0;
            while i < flying.len() {
                let (tag, offset) = flying[i];
                let c = self.dp.as_mut().and_then(|d| d.take_completion(tag));
                match c {
                    Some(c) => {
                        flying.swap_remove(i);
                        progressed = true;
                        match c.result {
                            Ok(()) => done(self, &c, offset),
                            Err(e) => {
                                first_err.get_or_insert(Error::Io(e));
                            }
                        }
                        if let Some(d) = self.dp.as_mut() {
                            d.release(c);
                        }
                    }
                    None => i += 1,
                }
            }
            if !progressed && !self.wait_until(deadline)? {
                return Err(Error::IoTimeout);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Read `buf.len()` bytes (a multiple of the sector size) from
    /// `sector` (512-byte units).
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        self.ready()?;
        let len = buf.len();
        self.pipeline(
            sector,
            len,
            |dev, s, _, n| dev.submit_read(s, n),
            |dev, c, offset| {
                if let (Some(dp), Some(dst)) =
                    (dev.dp.as_ref(), buf.get_mut(offset..offset + c.len))
                {
                    dp.copy_out(&mut dev.env, c, 0, dst);
                }
            },
        )
    }

    /// Write `data` (a multiple of the sector size) at `sector`.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), Error> {
        self.ready()?;
        self.pipeline(
            sector,
            data.len(),
            |dev, s, offset, n| dev.submit_write(s, &data[offset..offset + n]),
            |_, _, _| {},
        )
    }

    /// Flush the disk's write cache: what completed before is on stable
    /// storage when this returns. Completes at once when the back end
    /// offers neither flush nor barrier (it then writes synchronously).
    pub fn flush(&mut self) -> Result<(), Error> {
        let tag = self.submit_blocking(|d| d.submit_flush())?;
        let c = self.wait_for(tag)?;
        let r = c.result;
        if let Some(dp) = self.dp.as_mut() {
            dp.release(c);
        }
        r.map_err(Error::Io)
    }

    /// Discard `nr_sectors` from `sector` (`secure`: `BLKIF_DISCARD_SECURE`).
    pub fn discard(&mut self, sector: u64, nr_sectors: u64, secure: bool) -> Result<(), Error> {
        let tag = self.submit_blocking(|d| d.submit_discard(sector, nr_sectors, secure))?;
        let c = self.wait_for(tag)?;
        let r = c.result;
        if let Some(dp) = self.dp.as_mut() {
            dp.release(c);
        }
        r.map_err(Error::Io)
    }

    // ------------------------------------------------------------ closing

    /// Close: wait (up to the handshake timeout) for requests in flight,
    /// go Closing and Closed with the back end, end every grant, close the
    /// event channels and free the pages (but those the back end keeps).
    pub fn close(mut self) -> Result<CloseReport, Error> {
        Ok(self.shutdown())
    }

    fn shutdown(&mut self) -> CloseReport {
        if self.closed {
            return CloseReport {
                backend: XenbusState::Unknown,
                aborted: 0,
                leaked_pages: 0,
            };
        }
        self.closed = true;
        let mut report = CloseReport {
            backend: XenbusState::Unknown,
            aborted: 0,
            leaked_pages: 0,
        };
        if self.published {
            // Let what is in flight finish while the back end still serves.
            let deadline = Some(self.deadline());
            while self.in_flight() > 0 && self.gone.is_none() {
                match self.wait_until(deadline) {
                    Ok(true) => {
                        let _ = self.poll(|_| {});
                    }
                    _ => break,
                }
            }
            report.backend = self.close_handshake();
        }
        let ring_pages = self.ring_refs.len();
        let mut keep: Vec<usize> = Vec::new();
        if let Some(mut dp) = self.dp.take() {
            report.aborted = dp.in_flight();
            for page in dp.shutdown(&mut self.env) {
                keep.push(ring_pages + page as usize);
            }
            while let Some(c) = dp.next_completion() {
                dp.release(c);
            }
        }
        for (i, r) in self.ring_refs.drain(..).enumerate() {
            if gnttab::end_access(r) == Err(gnttab::EndAccessError::StillInUse) {
                keep.push(i);
            }
        }
        for p in self.ports.drain(..) {
            let _ = evtchn::close(p);
        }
        if let Some(w) = self.window.take() {
            report.leaked_pages = w.free(&keep);
        }
        report
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.shutdown();
    }
}
