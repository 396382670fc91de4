//! The data path: requests onto the rings, responses off them.
//!
//! Data never lives in the caller's memory while the back end can reach
//! it: it goes through a pool of the device's own pages (Linux's bounce
//! mode, which it also uses with persistent grants). A write copies the
//! caller's bytes into pool pages and grants them; a read grants pool pages
//! and the caller copies the bytes out once the request completed. So a
//! back end that misbehaves can only ever touch pool pages, and a page it
//! keeps mapped is taken out of use (quarantined) instead of being handed
//! back to anyone.
//!
//! * **Grants.** With persistent grants (both ends wrote
//!   `feature-persistent` = 1) every pool page is granted once, writable
//!   (the header's note 8), when the data path is made, and stays granted
//!   until [`DataPath::shutdown`]. Otherwise each request grants its pages
//!   (read-only for a write, writable for a read; its indirect pages
//!   read-only) and ends every grant when its response arrives; a grant the
//!   back end still has mapped then is a protocol error (Linux: "backend
//!   has not unmapped grant").
//! * **Requests.** A read or write of `n` pages goes out as
//!   `ceil(n / max)` ring requests (`max` = 11 direct segments, or the
//!   negotiated indirect segments), all on one queue; the caller's [`Tag`]
//!   completes when every part has, with the worst status of its parts.
//!   Pages are taken last-freed-first (the LIFO the header recommends for
//!   persistent grants).
//! * **Responses.** Each response must name a request in flight on its
//!   ring ([`Shadow`]) and carry that request's operation; anything else
//!   (and a producer index that claims more responses than requests) is
//!   [`Hostile`]: the data path stops for good, every request in flight
//!   completes with [`IoError::Protocol`], and grants are ended where the
//!   back end lets go of them.
//! * **Statuses.** `BLKIF_RSP_OKAY` is success, `BLKIF_RSP_EOPNOTSUPP`
//!   [`IoError::NotSupported`], anything else [`IoError::Io`]. As in Linux,
//!   an empty flush that fails (either way) turns flushing off (later
//!   flushes complete at once, as with a back end that offers none) and a
//!   discard answered `EOPNOTSUPP` turns discard off.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::GrantRef;
use hypercall_abi::io::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ,
    BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BlkifFrontRing, BlkifRequest, BlkifRequestSegment,
    BlkifResponse,
};

use super::handshake::{DiskInfo, Features, FlushMode};
use super::request::{self, Status, indirect_pages_for};
use super::segments::{self, runs};
use super::shadow::{Mismatch, Shadow};
use super::{DIRECT_SEGMENTS, PAGE_SIZE, SECTOR_SIZE, SEGS_PER_INDIRECT_FRAME};

/// A page of the device's pool, by index (data pages first, then indirect
/// pages); the [`Env`] knows where each is.
pub type PageIdx = u32;

/// Names a request the caller submitted, until it completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u64);

/// The back end still has the page mapped (`gnttab::end_access`'s answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillInUse;

/// No grant could be made (no free reference, most likely).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantFailed;

impl fmt::Display for GrantFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("granting a page to the back end failed")
    }
}

/// What the data path needs from the machine.
pub trait Env {
    /// Grant the back end access to pool page `page`.
    fn grant(&mut self, page: PageIdx, readonly: bool) -> Result<GrantRef, GrantFailed>;
    /// End a grant; [`StillInUse`] while the back end has it mapped.
    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse>;
    /// Copy `data` into `page` at `offset` (within the page).
    fn write_page(&mut self, page: PageIdx, offset: usize, data: &[u8]);
    /// Copy from `page` at `offset` into `out`.
    fn read_page(&mut self, page: PageIdx, offset: usize, out: &mut [u8]);
    /// Signal queue `queue`'s event channel.
    fn notify(&mut self, queue: usize);
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read sectors.
    Read,
    /// Write sectors.
    Write,
    /// Flush the disk's cache.
    Flush,
    /// Discard sectors.
    Discard {
        /// `BLKIF_DISCARD_SECURE`.
        secure: bool,
    },
}

/// How a completed request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// `BLKIF_RSP_ERROR` (or an unknown status): the back end's I/O failed.
    Io,
    /// `BLKIF_RSP_EOPNOTSUPP`: the back end does not do this.
    NotSupported,
    /// The back end broke the protocol while this request was in flight;
    /// its data cannot be trusted.
    Protocol,
    /// The device was shut down before the back end answered.
    Aborted,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IoError::Io => "the back end reported an I/O error (BLKIF_RSP_ERROR)",
            IoError::NotSupported => "the back end does not support this (BLKIF_RSP_EOPNOTSUPP)",
            IoError::Protocol => "the back end broke the protocol during this request",
            IoError::Aborted => "the device was shut down before the request completed",
        })
    }
}

/// What the back end did wrong; the data path stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hostile {
    /// The response producer index claims more responses than requests.
    Overflow {
        /// The queue.
        queue: usize,
    },
    /// A response with an id no request ever had.
    UnknownId {
        /// The queue.
        queue: usize,
        /// The id.
        id: u64,
    },
    /// A response to no request in flight (a duplicate or stale id).
    NotPending {
        /// The queue.
        queue: usize,
        /// The id.
        id: u64,
    },
    /// A response whose operation is not its request's.
    WrongOp {
        /// The queue.
        queue: usize,
        /// The id.
        id: u64,
        /// The response's operation.
        got: u8,
        /// The request's.
        want: u8,
    },
    /// A request completed while the back end kept one of its
    /// non-persistent grants mapped.
    StillMapped {
        /// The grant.
        gref: u32,
    },
}

impl fmt::Display for Hostile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hostile::Overflow { queue } => {
                write!(f, "queue {queue}: more responses than requests")
            }
            Hostile::UnknownId { queue, id } => {
                write!(f, "queue {queue}: response with unknown id {id:#x}")
            }
            Hostile::NotPending { queue, id } => {
                write!(
                    f,
                    "queue {queue}: response {id:#x} answers no request in flight"
                )
            }
            Hostile::WrongOp {
                queue,
                id,
                got,
                want,
            } => write!(
                f,
                "queue {queue}: response {id:#x} has operation {got} instead of {want}"
            ),
            Hostile::StillMapped { gref } => {
                write!(f, "the back end kept grant {gref} mapped after answering")
            }
        }
    }
}

/// Why a request was not submitted (nothing changed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// No room now (ring slots, pool pages or indirect pages): complete
    /// something and try again.
    Busy,
    /// The disk is read-only (`VDISK_READONLY`).
    ReadOnly,
    /// The back end does not offer this (discard, secure discard).
    NotSupported,
    /// Beyond the end of the disk.
    OutOfRange,
    /// The sector or length is not a multiple of the logical block size.
    Misaligned,
    /// No bytes or sectors.
    Empty,
    /// More bytes than the whole pool holds.
    TooBig,
    /// Granting a page failed.
    Grant,
    /// The data path stopped because the back end broke the protocol.
    Broken(Hostile),
    /// The data path was shut down.
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Busy => f.write_str("no room for the request now"),
            SubmitError::ReadOnly => f.write_str("the disk is read-only"),
            SubmitError::NotSupported => f.write_str("the back end does not offer this operation"),
            SubmitError::OutOfRange => f.write_str("beyond the end of the disk"),
            SubmitError::Misaligned => {
                f.write_str("sector or length not a multiple of the disk's sector size")
            }
            SubmitError::Empty => f.write_str("empty request"),
            SubmitError::TooBig => f.write_str("request larger than the page pool"),
            SubmitError::Grant => f.write_str("granting a page to the back end failed"),
            SubmitError::Broken(h) => write!(f, "device stopped: {h}"),
            SubmitError::Closed => f.write_str("the device is closed"),
        }
    }
}

/// What the data path is built on: the disk and the features both ends
/// agreed, and the pool's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The `handle` of every request.
    pub handle: u16,
    /// The disk.
    pub disk: DiskInfo,
    /// The features.
    pub features: Features,
    /// Data pages wanted in the pool (raised to one full request).
    pub pool_pages: u32,
}

/// How many pages the pool has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Data pages: [`PageIdx`] `0..data_pages`.
    pub data_pages: u32,
    /// Indirect pages: [`PageIdx`] `data_pages..data_pages + indirect_pages`.
    pub indirect_pages: u32,
}

impl Layout {
    /// Pages in all.
    pub fn total(&self) -> u32 {
        self.data_pages + self.indirect_pages
    }
}

impl Config {
    /// Segments in one ring request: the indirect maximum, or 11.
    pub fn segs_per_request(&self) -> u32 {
        match self.features.max_indirect_segments {
            0 => DIRECT_SEGMENTS,
            n => n,
        }
    }

    /// The pool for rings of `ring_slots` requests in all: `pool_pages`
    /// data pages (at least one full request), and enough indirect pages
    /// for every indirect request those pages and slots allow at once.
    pub fn layout(&self, ring_slots: u32) -> Layout {
        let data_pages = self.pool_pages.max(self.segs_per_request());
        let indirect_pages = match self.features.max_indirect_segments {
            0 => 0,
            n => {
                let direct = DIRECT_SEGMENTS;
                let requests = (data_pages / (direct + 1)).clamp(1, ring_slots.max(1));
                requests * indirect_pages_for(n)
            }
        };
        Layout {
            data_pages,
            indirect_pages,
        }
    }
}

/// A request that completed (or failed). Its pages stay the caller's
/// until [`DataPath::release`]: read data is copied out with
/// [`DataPath::copy_out`] first.
#[derive(Debug, PartialEq, Eq)]
pub struct Completed {
    /// The request.
    pub tag: Tag,
    /// What it did.
    pub op: Op,
    /// First sector.
    pub sector: u64,
    /// Bytes (reads and writes; 0 otherwise).
    pub len: usize,
    /// How it ended.
    pub result: Result<(), IoError>,
    pages: Vec<PageIdx>,
}

impl Completed {
    /// The pool pages holding its data, in order.
    pub fn pages(&self) -> &[PageIdx] {
        &self.pages
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Ring requests sent.
    pub requests: u64,
    /// Responses taken.
    pub responses: u64,
    /// Event-channel notifications sent.
    pub notifications: u64,
    /// Indirect requests among `requests`.
    pub indirect: u64,
    /// Caller requests completed.
    pub completed: u64,
}

/// One ring request in flight.
#[derive(Debug)]
struct Part {
    tag: u64,
    /// The operation its response must carry.
    op: u8,
    /// Data pages and their per-request grants (none when persistent).
    data: Vec<(PageIdx, Option<GrantRef>)>,
    /// Indirect pages and their per-request grants.
    indirect: Vec<(PageIdx, Option<GrantRef>)>,
    nr_segments: u32,
}

/// One caller request in flight.
#[derive(Debug)]
struct Job {
    op: Op,
    sector: u64,
    len: usize,
    pages: Vec<PageIdx>,
    parts_left: u32,
    status: Status,
    protocol: bool,
}

/// One ring and its requests in flight.
struct Queue<'a> {
    ring: BlkifFrontRing<'a>,
    shadow: Shadow<Part>,
}

impl Queue<'_> {
    fn room(&self) -> usize {
        (self.ring.free_requests() as usize).min(self.shadow.available())
    }
}

/// A ring request ready to go.
struct Prepared {
    queue: usize,
    id: u64,
    req: BlkifRequest,
}

/// The data path of one connected device.
pub struct DataPath<'a> {
    handle: u16,
    disk: DiskInfo,
    features: Features,
    layout: Layout,
    queues: Vec<Queue<'a>>,
    free_data: Vec<PageIdx>,
    free_indirect: Vec<PageIdx>,
    /// Per page, its persistent grant.
    persistent: Vec<Option<GrantRef>>,
    /// Pages the back end kept mapped: never reused.
    quarantine: Vec<(PageIdx, GrantRef)>,
    jobs: BTreeMap<u64, Job>,
    next_tag: u64,
    done: VecDeque<Completed>,
    broken: Option<Hostile>,
    closed: bool,
    stats: Stats,
}

impl fmt::Debug for DataPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPath")
            .field("disk", &self.disk)
            .field("features", &self.features)
            .field("layout", &self.layout)
            .field("queues", &self.queues.len())
            .field("in_flight", &self.jobs.len())
            .field("broken", &self.broken)
            .field("stats", &self.stats)
            .finish()
    }
}

fn op_code(op: Op, flush: FlushMode) -> u8 {
    match op {
        Op::Read => BLKIF_OP_READ,
        Op::Write => BLKIF_OP_WRITE,
        Op::Flush => match flush {
            FlushMode::Barrier => BLKIF_OP_WRITE_BARRIER,
            _ => BLKIF_OP_FLUSH_DISKCACHE,
        },
        Op::Discard { .. } => BLKIF_OP_DISCARD,
    }
}

fn pages_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl<'a> DataPath<'a> {
    /// The data path over `rings` (one per queue, initialised by the front
    /// end) and the pool `cfg.layout(..)` describes, which the caller has
    /// set up in `env`. With persistent grants every pool page is granted
    /// now; if that fails, the grants made are ended again.
    pub fn new<E: Env + ?Sized>(
        cfg: Config,
        rings: Vec<BlkifFrontRing<'a>>,
        env: &mut E,
    ) -> Result<Self, GrantFailed> {
        let slots: u32 = rings.iter().map(|r| r.size()).sum();
        let layout = cfg.layout(slots);
        let mut persistent = Vec::new();
        if cfg.features.persistent {
            for page in 0..layout.total() {
                match env.grant(page, false) {
                    Ok(g) => persistent.push(Some(g)),
                    Err(e) => {
                        for g in persistent.into_iter().flatten() {
                            let _ = env.end_access(g);
                        }
                        return Err(e);
                    }
                }
            }
        }
        let queues = rings
            .into_iter()
            .map(|ring| Queue {
                shadow: Shadow::new(ring.size()),
                ring,
            })
            .collect();
        Ok(DataPath {
            handle: cfg.handle,
            disk: cfg.disk,
            features: cfg.features,
            layout,
            queues,
            // Popped from the end: page 0 first.
            free_data: (0..layout.data_pages).rev().collect(),
            free_indirect: (layout.data_pages..layout.total()).rev().collect(),
            persistent,
            quarantine: Vec::new(),
            jobs: BTreeMap::new(),
            next_tag: 1,
            done: VecDeque::new(),
            broken: None,
            closed: false,
            stats: Stats::default(),
        })
    }

    /// The disk.
    pub fn disk(&self) -> &DiskInfo {
        &self.disk
    }

    /// The features in force (flush and discard may have been turned off
    /// since connecting).
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The pool.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Segments in one ring request.
    pub fn segs_per_request(&self) -> u32 {
        match self.features.max_indirect_segments {
            0 => DIRECT_SEGMENTS,
            n => n,
        }
    }

    /// Bytes one ring request carries at most.
    pub fn request_bytes(&self) -> usize {
        self.segs_per_request() as usize * PAGE_SIZE
    }

    /// Bytes the pool holds (the largest single request).
    pub fn pool_bytes(&self) -> usize {
        self.layout.data_pages as usize * PAGE_SIZE
    }

    /// Caller requests in flight (not yet completed).
    pub fn in_flight(&self) -> usize {
        self.jobs.len()
    }

    /// Why the data path stopped, if it did.
    pub fn broken(&self) -> Option<Hostile> {
        self.broken
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Free data pages now.
    pub fn free_pages(&self) -> usize {
        self.free_data.len()
    }

    /// Free indirect pages now.
    pub fn free_indirect_pages(&self) -> usize {
        self.free_indirect.len()
    }

    /// Pages taken out of use because the back end kept them mapped.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Whether any ring has responses to take (or an impossible producer
    /// index, which [`poll`](Self::poll) will report).
    pub fn responses_waiting(&self) -> bool {
        self.broken.is_none()
            && self
                .queues
                .iter()
                .any(|q| q.ring.unconsumed_responses() != Ok(0))
    }

    /// Whether completions wait to be taken.
    pub fn has_completions(&self) -> bool {
        !self.done.is_empty()
    }

    /// Submit a read of `len` bytes from `sector` (512-byte units).
    pub fn submit_read<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        sector: u64,
        len: usize,
    ) -> Result<Tag, SubmitError> {
        self.submit(env, Op::Read, sector, len as u64, None)
    }

    /// Submit a write of `data` at `sector`; the bytes are copied now.
    pub fn submit_write<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        sector: u64,
        data: &[u8],
    ) -> Result<Tag, SubmitError> {
        self.submit(env, Op::Write, sector, data.len() as u64, Some(data))
    }

    /// Submit a flush (completes at once when the back end offers none).
    pub fn submit_flush<E: Env + ?Sized>(&mut self, env: &mut E) -> Result<Tag, SubmitError> {
        self.submit(env, Op::Flush, 0, 0, None)
    }

    /// Submit a discard of `nr_sectors` from `sector`.
    pub fn submit_discard<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        sector: u64,
        nr_sectors: u64,
        secure: bool,
    ) -> Result<Tag, SubmitError> {
        let bytes = nr_sectors
            .checked_mul(SECTOR_SIZE)
            .ok_or(SubmitError::OutOfRange)?;
        self.submit(env, Op::Discard { secure }, sector, bytes, None)
    }

    fn new_tag(&mut self) -> u64 {
        let t = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1).max(1);
        t
    }

    /// Check a sector range: within the disk, aligned to the sector size.
    fn check_range(&self, sector: u64, bytes: u64) -> Result<(), SubmitError> {
        if bytes == 0 {
            return Err(SubmitError::Empty);
        }
        let size = u64::from(self.disk.sector_size);
        let start = sector
            .checked_mul(SECTOR_SIZE)
            .ok_or(SubmitError::OutOfRange)?;
        if start % size != 0 || bytes % size != 0 {
            return Err(SubmitError::Misaligned);
        }
        let end = start.checked_add(bytes).ok_or(SubmitError::OutOfRange)?;
        if end > self.disk.bytes() {
            return Err(SubmitError::OutOfRange);
        }
        Ok(())
    }

    /// The queue with the most room, if it has `parts` slots free.
    fn pick_queue(&self, parts: usize) -> Option<usize> {
        self.queues
            .iter()
            .enumerate()
            .max_by_key(|(i, q)| (q.room(), core::cmp::Reverse(*i)))
            .filter(|(_, q)| q.room() >= parts)
            .map(|(i, _)| i)
    }

    fn submit<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        op: Op,
        sector: u64,
        len: u64,
        data: Option<&[u8]>,
    ) -> Result<Tag, SubmitError> {
        if self.closed {
            return Err(SubmitError::Closed);
        }
        if let Some(h) = self.broken {
            return Err(SubmitError::Broken(h));
        }
        let writes = matches!(op, Op::Write | Op::Discard { .. });
        if writes && self.disk.readonly() {
            return Err(SubmitError::ReadOnly);
        }
        match op {
            Op::Flush => {
                if self.features.flush == FlushMode::None {
                    let tag = self.new_tag();
                    self.finish(Completed {
                        tag: Tag(tag),
                        op,
                        sector: 0,
                        len: 0,
                        result: Ok(()),
                        pages: Vec::new(),
                    });
                    return Ok(Tag(tag));
                }
                self.submit_empty(env, op, sector, 0)
            }
            Op::Discard { secure } => {
                let discard = self.features.discard.ok_or(SubmitError::NotSupported)?;
                if secure && !discard.secure {
                    return Err(SubmitError::NotSupported);
                }
                self.check_range(sector, len)?;
                self.submit_empty(env, op, sector, len / SECTOR_SIZE)
            }
            Op::Read | Op::Write => {
                self.check_range(sector, len)?;
                let len = usize::try_from(len).map_err(|_| SubmitError::TooBig)?;
                self.submit_data(env, op, sector, len, data)
            }
        }
    }

    /// A flush or discard: one ring request with no segments.
    fn submit_empty<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        op: Op,
        sector: u64,
        nr_sectors: u64,
    ) -> Result<Tag, SubmitError> {
        let q = self.pick_queue(1).ok_or(SubmitError::Busy)?;
        let tag = self.new_tag();
        let code = op_code(op, self.features.flush);
        let part = Part {
            tag,
            op: code,
            data: Vec::new(),
            indirect: Vec::new(),
            nr_segments: 0,
        };
        let queue = self.queues.get_mut(q).ok_or(SubmitError::Busy)?;
        let id = queue.shadow.alloc(part).map_err(|_| SubmitError::Busy)?;
        let req = match op {
            Op::Discard { secure } => request::discard(self.handle, id, sector, nr_sectors, secure),
            _ => request::flush(code, self.handle, id),
        };
        self.jobs.insert(
            tag,
            Job {
                op,
                sector,
                len: 0,
                pages: Vec::new(),
                parts_left: 1,
                status: Status::Okay,
                protocol: false,
            },
        );
        self.send(env, &[Prepared { queue: q, id, req }]);
        Ok(Tag(tag))
    }

    /// A read or write: pages from the pool, one or more ring requests.
    fn submit_data<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        op: Op,
        sector: u64,
        len: usize,
        data: Option<&[u8]>,
    ) -> Result<Tag, SubmitError> {
        let npages = segments::pages_for(0, len);
        if npages > self.layout.data_pages as usize {
            return Err(SubmitError::TooBig);
        }
        let max = self.segs_per_request() as usize;
        let direct = BLKIF_MAX_SEGMENTS_PER_REQUEST;
        let parts: Vec<_> = runs(npages, max).collect();
        let indirect_needed: usize = parts
            .iter()
            .filter(|r| r.len() > direct)
            .map(|r| indirect_pages_for(pages_u32(r.len())) as usize)
            .sum();
        if npages > self.free_data.len() || indirect_needed > self.free_indirect.len() {
            return Err(SubmitError::Busy);
        }
        let q = self.pick_queue(parts.len()).ok_or(SubmitError::Busy)?;
        let tag = self.new_tag();
        let split_at = self.free_data.len() - npages;
        let mut pages = self.free_data.split_off(split_at);
        pages.reverse();
        if let Some(data) = data {
            for (page, chunk) in pages.iter().zip(data.chunks(PAGE_SIZE)) {
                env.write_page(*page, 0, chunk);
            }
        }
        let code = op_code(op, self.features.flush);
        let mut prepared: Vec<Prepared> = Vec::with_capacity(parts.len());
        let mut failed = false;
        for run in &parts {
            let start = run.start * PAGE_SIZE;
            let part_len = (len - start).min(run.len() * PAGE_SIZE);
            let part_sector = sector + (start as u64) / SECTOR_SIZE;
            match self.prepare(
                env,
                q,
                tag,
                code,
                part_sector,
                &pages[run.clone()],
                part_len,
            ) {
                Ok(p) => prepared.push(p),
                Err(()) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            // Undo: nothing reached the ring.
            for p in prepared {
                if let Some(queue) = self.queues.get_mut(p.queue)
                    && let Ok(part) = queue.shadow.take(p.id)
                {
                    let _ = self.release_part(env, part, None);
                }
            }
            let kept: Vec<_> = pages
                .into_iter()
                .filter(|p| !self.quarantine.iter().any(|(q, _)| q == p))
                .collect();
            self.free_data.extend(kept.into_iter().rev());
            return Err(SubmitError::Grant);
        }
        self.jobs.insert(
            tag,
            Job {
                op,
                sector,
                len,
                pages,
                parts_left: pages_u32(prepared.len()),
                status: Status::Okay,
                protocol: false,
            },
        );
        self.send(env, &prepared);
        Ok(Tag(tag))
    }

    /// Grants and the ring request for the pages `pages` of one part.
    #[allow(clippy::too_many_arguments)]
    fn prepare<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        q: usize,
        tag: u64,
        code: u8,
        sector: u64,
        pages: &[PageIdx],
        len: usize,
    ) -> Result<Prepared, ()> {
        let readonly = code == BLKIF_OP_WRITE;
        let mut part = Part {
            tag,
            op: code,
            data: Vec::with_capacity(pages.len()),
            indirect: Vec::new(),
            nr_segments: 0,
        };
        let mut segs = Vec::with_capacity(pages.len());
        let Ok(split) = segments::split(0, len) else {
            return Err(());
        };
        for (seg, page) in split.zip(pages) {
            let (gref, own) = match self.persistent.get(*page as usize).copied().flatten() {
                Some(g) => (g, None),
                None => match env.grant(*page, readonly) {
                    Ok(g) => (g, Some(g)),
                    Err(_) => {
                        let _ = self.release_part(env, part, None);
                        return Err(());
                    }
                },
            };
            part.data.push((*page, own));
            segs.push(BlkifRequestSegment {
                gref,
                first_sect: seg.first_sect,
                last_sect: seg.last_sect,
                _pad: 0,
            });
        }
        part.nr_segments = pages_u32(segs.len());
        let mut indirect_grefs = Vec::new();
        if segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            for chunk in segs.chunks(SEGS_PER_INDIRECT_FRAME as usize) {
                let Some(page) = self.free_indirect.pop() else {
                    let _ = self.release_part(env, part, None);
                    return Err(());
                };
                env.write_page(page, 0, &request::indirect_page_bytes(chunk));
                let (gref, own) = match self.persistent.get(page as usize).copied().flatten() {
                    Some(g) => (g, None),
                    None => match env.grant(page, true) {
                        Ok(g) => (g, Some(g)),
                        Err(_) => {
                            self.free_indirect.push(page);
                            let _ = self.release_part(env, part, None);
                            return Err(());
                        }
                    },
                };
                part.indirect.push((page, own));
                indirect_grefs.push(gref);
            }
        }
        let handle = self.handle;
        let nr = part.nr_segments;
        let Some(queue) = self.queues.get_mut(q) else {
            let _ = self.release_part(env, part, None);
            return Err(());
        };
        let id = match queue.shadow.alloc(part) {
            Ok(id) => id,
            Err(part) => {
                let _ = self.release_part(env, part, None);
                return Err(());
            }
        };
        let req = if indirect_grefs.is_empty() {
            request::rw(code, handle, id, sector, &segs)
        } else {
            u16::try_from(nr)
                .ok()
                .and_then(|n| request::indirect(code, handle, id, sector, n, &indirect_grefs))
        };
        if let Some(req) = req {
            return Ok(Prepared { queue: q, id, req });
        }
        let taken = self.queues.get_mut(q).map(|queue| queue.shadow.take(id));
        if let Some(Ok(part)) = taken {
            let _ = self.release_part(env, part, None);
        }
        Err(())
    }

    /// Put prepared requests on their rings, publish, notify.
    fn send<E: Env + ?Sized>(&mut self, env: &mut E, prepared: &[Prepared]) {
        let mut touched: Vec<usize> = Vec::new();
        let mut overflow = None;
        for p in prepared {
            let Some(queue) = self.queues.get_mut(p.queue) else {
                continue;
            };
            if queue.ring.put_request(&p.req).is_err() {
                // Cannot happen: room was checked. Treat it as the ring
                // being unusable.
                overflow = Some(p.queue);
                continue;
            }
            self.stats.requests += 1;
            if p.req.operation == hypercall_abi::io::blkif::BLKIF_OP_INDIRECT {
                self.stats.indirect += 1;
            }
            if !touched.contains(&p.queue) {
                touched.push(p.queue);
            }
        }
        for q in touched {
            if let Some(queue) = self.queues.get_mut(q)
                && queue.ring.push_requests()
            {
                self.stats.notifications += 1;
                env.notify(q);
            }
        }
        if let Some(queue) = overflow {
            self.break_down(env, Hostile::Overflow { queue });
        }
    }

    /// End a part's own grants and give its indirect pages back. Pages
    /// whose grant the back end still holds go to quarantine (and, for
    /// data pages, out of `job`); the first such grant is returned.
    fn release_part<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        part: Part,
        mut job: Option<&mut Job>,
    ) -> Option<GrantRef> {
        let mut kept = None;
        for (page, gref) in part.data {
            if let Some(g) = gref
                && env.end_access(g).is_err()
            {
                self.quarantine.push((page, g));
                if let Some(job) = job.as_deref_mut() {
                    job.pages.retain(|p| *p != page);
                }
                kept.get_or_insert(g);
            }
        }
        for (page, gref) in part.indirect {
            match gref {
                Some(g) if env.end_access(g).is_err() => {
                    self.quarantine.push((page, g));
                    kept.get_or_insert(g);
                }
                _ => self.free_indirect.push(page),
            }
        }
        kept
    }

    /// A caller request is complete.
    fn finish(&mut self, c: Completed) {
        self.stats.completed += 1;
        self.done.push_back(c);
    }

    /// One part of job `tag` ended with `status`.
    fn part_done(&mut self, tag: u64, status: Status, protocol: bool) {
        let Some(job) = self.jobs.get_mut(&tag) else {
            return;
        };
        job.status = job.status.worst(status);
        job.protocol |= protocol;
        job.parts_left = job.parts_left.saturating_sub(1);
        if job.parts_left > 0 {
            return;
        }
        if let Some(job) = self.jobs.remove(&tag) {
            let result = if job.protocol {
                Err(IoError::Protocol)
            } else {
                match job.status {
                    Status::Okay => Ok(()),
                    Status::NotSupported => Err(IoError::NotSupported),
                    Status::Error => Err(IoError::Io),
                }
            };
            self.finish(Completed {
                tag: Tag(tag),
                op: job.op,
                sector: job.sector,
                len: job.len,
                result,
                pages: job.pages,
            });
        }
    }

    /// Take every response the rings hold, and re-arm the rings' response
    /// events. Returns how many caller requests completed. A hostile
    /// response stops the data path (see [`broken`](Self::broken)).
    pub fn poll<E: Env + ?Sized>(&mut self, env: &mut E) -> usize {
        let before = self.done.len();
        let mut q = 0;
        while q < self.queues.len() && self.broken.is_none() {
            let next = match self.queues.get_mut(q) {
                Some(queue) => match queue.ring.take_response() {
                    Ok(Some(rsp)) => Ok(Some(rsp)),
                    Ok(None) => match queue.ring.final_check_for_responses() {
                        Ok(true) => continue,
                        Ok(false) => Ok(None),
                        Err(_) => Err(Hostile::Overflow { queue: q }),
                    },
                    Err(_) => Err(Hostile::Overflow { queue: q }),
                },
                None => Ok(None),
            };
            match next {
                Ok(Some(rsp)) => {
                    self.stats.responses += 1;
                    if let Err(h) = self.on_response(env, q, &rsp) {
                        self.break_down(env, h);
                    }
                }
                Ok(None) => q += 1,
                Err(h) => self.break_down(env, h),
            }
        }
        self.done.len().saturating_sub(before)
    }

    fn on_response<E: Env + ?Sized>(
        &mut self,
        env: &mut E,
        q: usize,
        rsp: &BlkifResponse,
    ) -> Result<(), Hostile> {
        let id = rsp.id;
        let queue = self
            .queues
            .get_mut(q)
            .ok_or(Hostile::UnknownId { queue: q, id })?;
        let want = match queue.shadow.get(id) {
            Ok(part) => part.op,
            Err(Mismatch::Unknown) => return Err(Hostile::UnknownId { queue: q, id }),
            Err(Mismatch::NotPending) => return Err(Hostile::NotPending { queue: q, id }),
        };
        if rsp.operation != want {
            return Err(Hostile::WrongOp {
                queue: q,
                id,
                got: rsp.operation,
                want,
            });
        }
        let part = queue
            .shadow
            .take(id)
            .map_err(|_| Hostile::NotPending { queue: q, id })?;
        let mut status = Status::from_raw(rsp.status);
        let tag = part.tag;
        let empty = part.nr_segments == 0;
        let mut job = self.jobs.remove(&tag);
        let kept = self.release_part(env, part, job.as_mut());
        if let Some(job) = job {
            self.jobs.insert(tag, job);
        }
        match want {
            BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER if empty => {
                if status == Status::Error {
                    status = Status::NotSupported;
                }
                if status == Status::NotSupported {
                    self.features.flush = FlushMode::None;
                }
            }
            BLKIF_OP_DISCARD if status == Status::NotSupported => self.features.discard = None,
            _ => {}
        }
        self.part_done(tag, status, kept.is_some());
        match kept {
            Some(g) => Err(Hostile::StillMapped { gref: g.0 }),
            None => Ok(()),
        }
    }

    /// Stop for good: every request in flight completes with
    /// [`IoError::Protocol`].
    fn break_down<E: Env + ?Sized>(&mut self, env: &mut E, h: Hostile) {
        if self.broken.is_none() {
            self.broken = Some(h);
        }
        self.drain(env, true);
    }

    fn drain<E: Env + ?Sized>(&mut self, env: &mut E, protocol: bool) {
        let mut parts = Vec::new();
        for queue in &mut self.queues {
            parts.extend(queue.shadow.drain().into_iter().map(|(_, p)| p));
        }
        for part in parts {
            let tag = part.tag;
            let mut job = self.jobs.remove(&tag);
            let _ = self.release_part(env, part, job.as_mut());
            if let Some(job) = job {
                self.jobs.insert(tag, job);
            }
            self.part_done(tag, Status::Error, protocol);
        }
    }

    /// The next completed request, oldest first.
    pub fn next_completion(&mut self) -> Option<Completed> {
        self.done.pop_front()
    }

    /// The completion of `tag`, if it is there.
    pub fn take_completion(&mut self, tag: Tag) -> Option<Completed> {
        let i = self.done.iter().position(|c| c.tag == tag)?;
        self.done.remove(i)
    }

    /// Copy a completed request's data from `offset` into `out`; returns
    /// the bytes copied.
    pub fn copy_out<E: Env + ?Sized>(
        &self,
        env: &mut E,
        c: &Completed,
        offset: usize,
        out: &mut [u8],
    ) -> usize {
        let mut copied = 0;
        let end = c.len.min(offset.saturating_add(out.len()));
        let mut at = offset;
        while at < end {
            let page_no = at / PAGE_SIZE;
            let in_page = at % PAGE_SIZE;
            let n = (PAGE_SIZE - in_page).min(end - at);
            let Some(page) = c.pages.get(page_no) else {
                break;
            };
            let Some(dst) = out.get_mut(copied..copied + n) else {
                break;
            };
            env.read_page(*page, in_page, dst);
            copied += n;
            at += n;
        }
        copied
    }

    /// Give a completed request's pages back to the pool.
    pub fn release(&mut self, c: Completed) {
        self.free_data.extend(c.pages.into_iter().rev());
    }

    /// Stop and give up every grant (the back end should have closed):
    /// requests still in flight complete with [`IoError::Aborted`],
    /// persistent and quarantined grants are ended. Returns the pages the
    /// back end still has mapped: they must never be reused or freed.
    pub fn shutdown<E: Env + ?Sized>(&mut self, env: &mut E) -> Vec<PageIdx> {
        self.closed = true;
        let in_flight: Vec<u64> = self.jobs.keys().copied().collect();
        self.drain(env, false);
        for c in self.done.iter_mut() {
            if in_flight.contains(&c.tag.0) {
                c.result = Err(IoError::Aborted);
            }
        }
        let mut leaked = Vec::new();
        for (page, gref) in core::mem::take(&mut self.persistent)
            .into_iter()
            .enumerate()
        {
            if let Some(g) = gref
                && env.end_access(g).is_err()
            {
                leaked.push(pages_u32(page));
            }
        }
        for (page, g) in core::mem::take(&mut self.quarantine) {
            if env.end_access(g).is_err() && !leaked.contains(&page) {
                leaked.push(page);
            }
        }
        leaked
    }
}
