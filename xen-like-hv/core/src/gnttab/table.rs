//! One domain's grant table: limits, version, and the frames behind it.
//!
//! Layout of the frames (all 8-byte words, read and written through
//! [`MachineMemory`] so that the guest's concurrent writes to shared entries are
//! single atomic accesses):
//!
//! * shared v1: entry `r` is word `r % 512` of frame `r / 512` (`flags | domid << 16 |
//!   frame << 32`); v2: words `2(r % 256)` and `+1` of frame `r / 256` (header and
//!   `word1`, then the frame or transitive ref);
//! * status (v2 only): entry `r` is the 16-bit lane `r % 4` of word `(r % 2048) / 4` of
//!   frame `r / 2048`;
//! * active entries: 4 words each, 128 per frame, enough frames for the v1 entry count
//!   of the current size (Xen's `active_grant_entry`);
//! * maptrack: 2 words each, 256 per frame (Xen's `grant_mapping`); the frames are
//!   listed in up to two directory frames of 512 MFNs.
#![allow(
    clippy::cast_possible_truncation,
    reason = "grant entries, active entries and maptrack entries are 64-bit words split into their 16- and 32-bit fields"
)]

use hypercall_abi::types::{DomId, GrantRef};

use super::{FramePool, INITIAL_NR_GRANT_FRAMES, Limits};
use crate::mm::Mfn;
use crate::mm::frame_table::{FrameTable, Owner};
use crate::mm::page_type::MachineMemory;

/// v1 entries per frame.
pub(super) const V1_PER_FRAME: u32 = 512;
/// v2 entries per frame.
pub(super) const V2_PER_FRAME: u32 = 256;
/// v2 status words per frame.
pub(super) const STATUS_PER_FRAME: u32 = 2048;
/// Active entries per frame (32 bytes each).
const ACTIVE_PER_FRAME: u32 = 128;
/// Maptrack entries per frame (16 bytes each, `MAPTRACK_PER_PAGE`).
pub(super) const MAPTRACK_PER_FRAME: u32 = 256;
/// Status frames of the largest table.
const MAX_STATUS_FRAMES: usize = 8;
/// Active frames of the largest table.
const MAX_ACTIVE_FRAMES: usize =
    (super::MAX_GRANT_FRAMES * V1_PER_FRAME / ACTIVE_PER_FRAME) as usize;
/// Directory frames for the largest maptrack.
const MAPTRACK_DIRS: usize = (super::MAX_MAPTRACK_FRAMES / 512) as usize;
/// End of a free list.
pub(super) const NONE: u32 = u32::MAX;

/// Pin-count fields of an active entry (`GNTPIN_*`): writable and read-only host
/// mappings, writable and read-only device mappings, 8 bits each.
pub mod pin {
    /// One writable host mapping.
    pub const HSTW: u32 = 1;
    /// One read-only host mapping.
    pub const HSTR: u32 = 1 << 8;
    /// One writable device mapping.
    pub const DEVW: u32 = 1 << 16;
    /// One read-only device mapping.
    pub const DEVR: u32 = 1 << 24;
    /// Any writable pin.
    pub const WRITABLE: u32 = 0x00FF_00FF;
    /// The top bits of the counts an increment of `incs` (a sum of the one-step
    /// values above) would raise: one of them set means one more could overflow it
    /// (Xen's `GNTPIN_incr2oflow_mask`; only the counts being raised are checked).
    pub const fn overflow_mask(incs: u32) -> u32 {
        incs << 7
    }
}

/// Xen's `active_grant_entry`: how a granted entry is in use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// Pin counts ([`pin`]).
    pub pin: u32,
    /// The domain the grant is pinned for.
    pub domid: DomId,
    /// The frame.
    pub mfn: Mfn,
    /// A sub-page grant (or a transitive one, which is treated as one).
    pub sub_page: bool,
    /// First byte the grant covers.
    pub start: u16,
    /// Bytes it covers.
    pub length: u16,
    /// For a transitive grant: the domain and ref it refers to (else this entry's).
    pub trans_dom: DomId,
    /// See `trans_dom`.
    pub trans_gref: u32,
}

/// Xen's `grant_mapping`: one mapping a domain made of another's grant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaptrackEntry {
    /// The granter's ref.
    pub gref: u32,
    /// `GNTMAP_*` still in effect (0: the handle is free).
    pub flags: u16,
    /// The granter.
    pub domid: DomId,
}

/// One domain's grant table.
#[derive(Clone, Debug)]
pub struct GrantTable {
    /// The domain.
    pub dom: DomId,
    /// The domain is being destroyed: no new grants of it can be pinned.
    pub dying: bool,
    pub(super) version: u8,
    pub(super) limits: Limits,
    pub(super) nr_grant_frames: u32,
    pub(super) nr_status_frames: u32,
    pub(super) shared: [Mfn; super::MAX_GRANT_FRAMES as usize],
    pub(super) status: [Mfn; MAX_STATUS_FRAMES],
    pub(super) active: [Mfn; MAX_ACTIVE_FRAMES],
    pub(super) maptrack_dirs: [Mfn; MAPTRACK_DIRS],
    pub(super) nr_maptrack_frames: u32,
    pub(super) mt_head: u32,
    pub(super) mt_tail: u32,
    /// Active entries with a non-zero pin.
    pub(super) busy: u32,
    /// Maptrack entries in use.
    pub(super) mapped: u32,
}

/// Frames of grant-table storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FrameUse {
    /// Guest-visible (shared entries, status words): mappable by the domain.
    Shared(DomId),
    /// The hypervisor's own (active entries, maptrack).
    Private,
}

impl GrantTable {
    /// An empty record (no frames): a free slot.
    pub const EMPTY: GrantTable = GrantTable {
        dom: DomId(0),
        dying: false,
        version: 1,
        limits: Limits::DOM0,
        nr_grant_frames: 0,
        nr_status_frames: 0,
        shared: [Mfn(0); super::MAX_GRANT_FRAMES as usize],
        status: [Mfn(0); MAX_STATUS_FRAMES],
        active: [Mfn(0); MAX_ACTIVE_FRAMES],
        maptrack_dirs: [Mfn(0); MAPTRACK_DIRS],
        nr_maptrack_frames: 0,
        mt_head: NONE,
        mt_tail: NONE,
        busy: 0,
        mapped: 0,
    };

    /// A version-1 table for `dom` with no frames yet ([`super::ops::init`] grows it
    /// to its initial size).
    pub fn new(dom: DomId, limits: Limits) -> Self {
        GrantTable {
            dom,
            limits,
            ..Self::EMPTY
        }
    }

    /// Gives a new table its initial frames; `false` if there were none to have.
    pub fn init<M: MachineMemory>(
        &mut self,
        mem: &mut M,
        ft: &mut FrameTable<'_>,
        pool: &mut dyn FramePool,
    ) -> bool {
        self.grow(mem, ft, pool, INITIAL_NR_GRANT_FRAMES)
    }

    /// The version (1 or 2).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Grant-table frames now.
    pub fn nr_grant_frames(&self) -> u32 {
        self.nr_grant_frames
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The shared frames, then the status frames: the guest-visible frames the table
    /// holds (they are the domain's `XenShared` frames besides its shared_info).
    pub fn guest_frames(&self) -> impl Iterator<Item = Mfn> + '_ {
        let g = self.shared.iter().take(self.nr_grant_frames as usize);
        let s = self.status.iter().take(self.nr_status_frames as usize);
        g.chain(s).copied()
    }

    /// How many guest-visible frames the table holds.
    pub fn nr_guest_frames(&self) -> u32 {
        self.nr_grant_frames + self.nr_status_frames
    }

    /// Whether no active entry is pinned (a dying table may then go).
    pub fn unpinned(&self) -> bool {
        self.busy == 0
    }

    /// Maptrack entries in use (mappings this domain holds of others' grants).
    pub fn mappings(&self) -> u32 {
        self.mapped
    }

    /// Entries the table has (`nr_grant_entries`).
    pub fn nr_entries(&self) -> u32 {
        let per = if self.version == 1 {
            V1_PER_FRAME
        } else {
            V2_PER_FRAME
        };
        self.nr_grant_frames * per
    }

    /// Active frames needed for `frames` grant frames.
    pub(super) const fn active_frames_for(frames: u32) -> u32 {
        frames * V1_PER_FRAME / ACTIVE_PER_FRAME
    }

    /// Status frames needed for `frames` grant frames (`grant_to_status_frames`).
    pub(super) const fn status_frames_for(frames: u32) -> u32 {
        (frames * V2_PER_FRAME).div_ceil(STATUS_PER_FRAME)
    }

    /// Maptrack entries that exist (`maptrack_limit`).
    pub(super) fn maptrack_limit(&self) -> u32 {
        self.nr_maptrack_frames * MAPTRACK_PER_FRAME
    }

    // ---- shared entries ------------------------------------------------------------

    /// Frame and word of the header of entry `r` (< `nr_entries`).
    pub(super) fn hdr_at(&self, r: GrantRef) -> (Mfn, usize) {
        let r = r.0;
        if self.version == 1 {
            (
                self.shared[(r / V1_PER_FRAME) as usize],
                (r % V1_PER_FRAME) as usize,
            )
        } else {
            (
                self.shared[(r / V2_PER_FRAME) as usize],
                (2 * (r % V2_PER_FRAME)) as usize,
            )
        }
    }

    /// The v2 status lane of entry `r`: frame, word, shift.
    pub(super) fn status_at(&self, r: GrantRef) -> (Mfn, usize, u32) {
        let r = r.0;
        (
            self.status[(r / STATUS_PER_FRAME) as usize],
            ((r % STATUS_PER_FRAME) / 4) as usize,
            (r % 4) * 16,
        )
    }

    /// The flags the hypervisor keeps in entry `r` (v1: in the header; v2: status).
    pub(super) fn status_flags<M: MachineMemory>(&self, mem: &M, r: GrantRef) -> u16 {
        if self.version == 1 {
            let (f, w) = self.hdr_at(r);
            mem.read_entry(f, w) as u16
        } else {
            let (f, w, sh) = self.status_at(r);
            (mem.read_entry(f, w) >> sh) as u16
        }
    }

    /// Clears `mask` (`GTF_reading`/`GTF_writing`) in entry `r`'s status
    /// (`gnttab_clear_flags`).
    /// A dying table's shared frames may already be someone else's: nothing is
    /// written there any more.
    pub(super) fn clear_flags<M: MachineMemory>(&self, mem: &mut M, r: GrantRef, mask: u16) {
        if mask == 0 || self.dying {
            return;
        }
        if self.version == 1 {
            let (f, w) = self.hdr_at(r);
            mem.and_entry(f, w, !u64::from(mask));
        } else {
            let (f, w, sh) = self.status_at(r);
            mem.and_entry(f, w, !(u64::from(mask) << sh));
        }
    }

    // ---- active entries --------------------------------------------------------------

    fn active_at(&self, r: GrantRef) -> (Mfn, usize) {
        (
            self.active[(r.0 / ACTIVE_PER_FRAME) as usize],
            ((r.0 % ACTIVE_PER_FRAME) * 4) as usize,
        )
    }

    /// Active entry `r` (< `nr_entries`).
    pub fn act<M: MachineMemory>(&self, mem: &M, r: GrantRef) -> Active {
        let (f, w) = self.active_at(r);
        let w0 = mem.read_entry(f, w);
        let w2 = mem.read_entry(f, w + 2);
        Active {
            pin: w0 as u32,
            domid: DomId((w0 >> 32) as u16),
            sub_page: (w0 >> 48) & 1 != 0,
            mfn: Mfn(mem.read_entry(f, w + 1)),
            start: w2 as u16,
            length: (w2 >> 16) as u16,
            trans_dom: DomId((w2 >> 32) as u16),
            trans_gref: mem.read_entry(f, w + 3) as u32,
        }
    }

    /// Stores active entry `r`, keeping the count of pinned entries.
    pub(super) fn set_act<M: MachineMemory>(&mut self, mem: &mut M, r: GrantRef, a: &Active) {
        let (f, w) = self.active_at(r);
        let was = mem.read_entry(f, w) as u32;
        match (was == 0, a.pin == 0) {
            (true, false) => self.busy += 1,
            (false, true) => self.busy = self.busy.saturating_sub(1),
            _ => {}
        }
        let w0 = u64::from(a.pin) | u64::from(a.domid.0) << 32 | u64::from(a.sub_page) << 48;
        let w2 = u64::from(a.start) | u64::from(a.length) << 16 | u64::from(a.trans_dom.0) << 32;
        mem.write_entry(f, w, w0);
        mem.write_entry(f, w + 1, a.mfn.0);
        mem.write_entry(f, w + 2, w2);
        mem.write_entry(f, w + 3, u64::from(a.trans_gref));
    }

    // ---- maptrack ----------------------------------------------------------------------

    fn maptrack_at<M: MachineMemory>(&self, mem: &M, h: u32) -> (Mfn, usize) {
        let frame = h / MAPTRACK_PER_FRAME;
        let dir = self.maptrack_dirs[(frame / 512) as usize];
        (
            Mfn(mem.read_entry(dir, (frame % 512) as usize)),
            ((h % MAPTRACK_PER_FRAME) * 2) as usize,
        )
    }

    /// Maptrack entry `h` (< `maptrack_limit`).
    pub fn maptrack<M: MachineMemory>(&self, mem: &M, h: u32) -> MaptrackEntry {
        let (f, w) = self.maptrack_at(mem, h);
        let w0 = mem.read_entry(f, w);
        MaptrackEntry {
            gref: w0 as u32,
            flags: (w0 >> 32) as u16,
            domid: DomId((w0 >> 48) as u16),
        }
    }

    /// Stores maptrack entry `h`.
    pub(super) fn set_maptrack<M: MachineMemory>(&mut self, mem: &mut M, h: u32, e: MaptrackEntry) {
        let (f, w) = self.maptrack_at(mem, h);
        let was = (mem.read_entry(f, w) >> 32) as u16;
        match (was == 0, e.flags == 0) {
            (true, false) => self.mapped += 1,
            (false, true) => self.mapped = self.mapped.saturating_sub(1),
            _ => {}
        }
        let w0 = u64::from(e.gref) | u64::from(e.flags) << 32 | u64::from(e.domid.0) << 48;
        mem.write_entry(f, w, w0);
    }

    fn mt_next<M: MachineMemory>(&self, mem: &M, h: u32) -> u32 {
        let (f, w) = self.maptrack_at(mem, h);
        mem.read_entry(f, w + 1) as u32
    }

    fn set_mt_next<M: MachineMemory>(&self, mem: &mut M, h: u32, next: u32) {
        let (f, w) = self.maptrack_at(mem, h);
        mem.write_entry(f, w + 1, u64::from(next));
    }

    /// A free maptrack handle (`get_maptrack_handle`): from the free list, which
    /// always keeps one entry, else from a new maptrack frame while the limit allows;
    /// `None` when the domain has all it may have.
    pub(super) fn get_handle<M: MachineMemory>(
        &mut self,
        mem: &mut M,
        ft: &mut FrameTable<'_>,
        pool: &mut dyn FramePool,
    ) -> Option<u32> {
        if self.mt_head != NONE {
            let next = self.mt_next(mem, self.mt_head);
            if next != NONE {
                let h = self.mt_head;
                self.mt_head = next;
                return Some(h);
            }
        }
        if self.nr_maptrack_frames >= self.limits.max_maptrack_frames {
            return None;
        }
        let n = self.nr_maptrack_frames;
        let dir_i = (n / 512) as usize;
        if self.maptrack_dirs[dir_i].0 == 0 {
            let dir = take_frame(mem, ft, pool, FrameUse::Private)?;
            self.maptrack_dirs[dir_i] = dir;
        }
        // (A directory frame taken just now stays if this fails: freed at destruction.)
        let frame = take_frame(mem, ft, pool, FrameUse::Private)?;
        mem.write_entry(self.maptrack_dirs[dir_i], (n % 512) as usize, frame.0);
        self.nr_maptrack_frames = n + 1;
        let first = n * MAPTRACK_PER_FRAME;
        let last = first + MAPTRACK_PER_FRAME - 1;
        // `first` is used now; first+1..=last join the head of the free list.
        for h in first + 1..last {
            self.set_mt_next(mem, h, h + 1);
        }
        self.set_mt_next(mem, last, self.mt_head);
        if self.mt_tail == NONE {
            self.mt_tail = last;
        }
        self.mt_head = first + 1;
        Some(first)
    }

    /// Returns handle `h` to the tail of the free list (`put_maptrack_handle`).
    pub(super) fn put_handle<M: MachineMemory>(&mut self, mem: &mut M, h: u32) {
        self.set_mt_next(mem, h, NONE);
        if self.mt_tail == NONE {
            self.mt_head = h;
        } else {
            self.set_mt_next(mem, self.mt_tail, h);
        }
        self.mt_tail = h;
    }

    // ---- growth and teardown ---------------------------------------------------------

    /// Grows the table to `frames` grant frames (and, for v2, the status frames they
    /// need) (`gnttab_grow_table`). `false` if a frame could not be had; what was added
    /// stays (it is within the limits and is freed at destruction).
    pub(super) fn grow<M: MachineMemory>(
        &mut self,
        mem: &mut M,
        ft: &mut FrameTable<'_>,
        pool: &mut dyn FramePool,
        frames: u32,
    ) -> bool {
        let frames = frames.max(INITIAL_NR_GRANT_FRAMES);
        while self.nr_grant_frames < frames {
            let n = self.nr_grant_frames;
            let have = Self::active_frames_for(n);
            let need = Self::active_frames_for(n + 1);
            for i in have..need {
                let Some(f) = take_frame(mem, ft, pool, FrameUse::Private) else {
                    // Frames taken for this step so far are dropped again.
                    for j in have..i {
                        give_back(ft, pool, self.active[j as usize]);
                    }
                    return false;
                };
                self.active[i as usize] = f;
            }
            let Some(f) = take_frame(mem, ft, pool, FrameUse::Shared(self.dom)) else {
                for j in have..need {
                    give_back(ft, pool, self.active[j as usize]);
                }
                return false;
            };
            self.shared[n as usize] = f;
            self.nr_grant_frames = n + 1;
        }
        self.version != 2 || self.grow_status(mem, ft, pool)
    }

    /// Status frames for the current size (v2).
    pub(super) fn grow_status<M: MachineMemory>(
        &mut self,
        mem: &mut M,
        ft: &mut FrameTable<'_>,
        pool: &mut dyn FramePool,
    ) -> bool {
        let want = Self::status_frames_for(self.nr_grant_frames);
        while self.nr_status_frames < want {
            let Some(f) = take_frame(mem, ft, pool, FrameUse::Shared(self.dom)) else {
                return false;
            };
            self.status[self.nr_status_frames as usize] = f;
            self.nr_status_frames += 1;
        }
        true
    }
}

/// A frame from `alloc`, zeroed and assigned in the frame table for `use_`.
fn take_frame<M: MachineMemory>(
    mem: &mut M,
    ft: &mut FrameTable<'_>,
    pool: &mut dyn FramePool,
    use_: FrameUse,
) -> Option<Mfn> {
    let f = pool.alloc_frame()?;
    let owner = match use_ {
        FrameUse::Shared(d) => Owner::XenShared(d),
        FrameUse::Private => Owner::Xen,
    };
    if ft.assign(f, owner).is_err() {
        return None;
    }
    mem.zero_page(f);
    Some(f)
}

/// Releases a frame [`take_frame`] assigned (unreferenced) and gives it back to
/// the pool. A frame something still references stays (it is freed when the last
/// reference goes, as an orphan); returns whether it went back now.
pub(super) fn give_back(ft: &mut FrameTable<'_>, pool: &mut dyn FramePool, f: Mfn) -> bool {
    if ft.release(f).is_ok() {
        pool.free_frame(f);
        true
    } else {
        false
    }
}

impl GrantTable {
    /// Frees the hypervisor-private frames (active entries, maptrack) of a table whose
    /// domain is gone and whose grants nobody pins any more (`grant_table_destroy`).
    /// The guest-visible frames are the domain's `XenShared` frames; the domain's
    /// teardown gives those back.
    pub fn destroy_private<M: MachineMemory>(
        &mut self,
        mem: &M,
        ft: &mut FrameTable<'_>,
        pool: &mut dyn FramePool,
    ) {
        let active = Self::active_frames_for(self.nr_grant_frames) as usize;
        for &f in self.active.iter().take(active) {
            give_back(ft, pool, f);
        }
        for i in 0..self.nr_maptrack_frames {
            let dir = self.maptrack_dirs[(i / 512) as usize];
            give_back(ft, pool, Mfn(mem.read_entry(dir, (i % 512) as usize)));
        }
        for &d in self.maptrack_dirs.iter().filter(|d| d.0 != 0) {
            give_back(ft, pool, d);
        }
        *self = Self::EMPTY;
    }
}
