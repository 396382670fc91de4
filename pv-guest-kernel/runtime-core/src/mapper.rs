//! The mapping engine behind the runtime's page-table API: walk 4-level
//! tables, create missing ones, and turn map/unmap requests into batches of
//! `mmu_update` requests (ABI digest §5.2–§5.6).
//!
//! A PV guest never writes a live page table itself. The [`Mapper`] queues
//! every change as an [`MmuUpdate`] (and every new table as a page to clear)
//! and hands them to its [`Backend`] in batches of up to `N` updates and `C`
//! clears; the runtime's backend sends each batch as one `multicall`
//! (`mmuext_op` CLEAR_PAGE, `mmu_update`, `mmuext_op` TLB flush). Within a
//! batch the clears run first, so a new table is zero before the entry that
//! links it in is validated.
//!
//! A table the mapper created during the current operation is *fresh*: its
//! contents are known (zero except what was queued), so the mapper never
//! reads it. That is what lets it build a whole new address space in frames
//! the guest cannot read yet ([`Root::fresh`]). Every other table is read
//! through [`Backend::read_entry`].
//!
//! Operations walk their range in increasing address order and remember the
//! current table at each level, so each table is looked up once per
//! operation and an entry queued but not yet submitted is never read back.

use core::fmt;

use hypercall_abi::mmu::{MmuCmd, MmuUpdate};
use hypercall_abi::xen::pte::PteFlags;
use hypercall_abi::{Errno, MachineAddr, Mfn};

use crate::pt::{
    ENTRIES, LEAF_FLAGS, PAGE, TABLE_FLAGS, entry_ma, entry_mfn, entry_span, index, is_guest_range,
    is_present, leaf, next_table_boundary,
};

/// One batch for [`Backend::submit`].
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    /// Frames to zero first (`MMUEXT_CLEAR_PAGE`), in order.
    pub clears: &'a [Mfn],
    /// Then these `mmu_update` requests, in order.
    pub updates: &'a [MmuUpdate],
    /// Then flush this vCPU's TLB.
    pub flush_tlb: bool,
}

/// Which part of a batch the hypervisor refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// A clear (`index` into [`Batch::clears`]).
    Clear,
    /// An update (`index` into [`Batch::updates`], from `pdone`).
    Update,
    /// The TLB flush.
    Flush,
    /// The hypercall carrying the batch itself (`multicall`).
    Call,
}

/// A batch the hypervisor refused (partly): everything before `index` of
/// `stage` was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The refused part.
    pub stage: Stage,
    /// Index of the refused item within its part.
    pub index: usize,
    /// The hypervisor's answer.
    pub errno: Errno,
}

/// What the mapper needs from its environment.
pub trait Backend {
    /// Entry `index` of the table in machine frame `table` (a table that is
    /// not fresh: linked into a live address space or left by the builder).
    fn read_entry(&mut self, table: Mfn, index: usize) -> u64;
    /// A frame for a new table. It may hold anything: the mapper clears it.
    fn alloc_table(&mut self) -> Option<Mfn>;
    /// A table the mapper unlinked and no longer needs.
    fn free_table(&mut self, table: Mfn);
    /// Apply a batch (clears, updates, flush, in that order).
    fn submit(&mut self, batch: Batch<'_>) -> Result<(), Rejected>;
}

/// Why a mapping operation failed. Work queued before the failure has been
/// submitted (the tables stay consistent); later pages are untouched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// The range is not page aligned, wraps, or leaves the guest's part of
    /// the address space (non-canonical, or the hypervisor's slots).
    BadRange {
        /// First address.
        va: u64,
        /// Pages.
        pages: u64,
    },
    /// Flags a leaf entry may not carry (outside [`LEAF_FLAGS`]).
    BadFlags(u64),
    /// The frame source ran dry at this page index.
    NoFrame {
        /// Index of the page (0-based) that got no frame.
        page: u64,
    },
    /// No frame for a new page table.
    NoTable,
    /// A large-page entry (PSE) is in the way at this address.
    Superpage {
        /// The address.
        va: u64,
    },
    /// The hypervisor refused a batch.
    Rejected(Rejected),
    /// The address space is not ready for this (the runtime has not taken
    /// over its page tables yet).
    NotReady,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::BadRange { va, pages } => {
                write!(f, "bad range: {pages} pages at {va:#x}")
            }
            MapError::BadFlags(bits) => write!(f, "flags {bits:#x} not allowed in a leaf entry"),
            MapError::NoFrame { page } => write!(f, "no frame for page {page}"),
            MapError::NoTable => f.write_str("no frame for a page table"),
            MapError::Superpage { va } => write!(f, "large page in the way at {va:#x}"),
            MapError::NotReady => f.write_str("the address space has not been taken over"),
            MapError::Rejected(r) => write!(
                f,
                "hypervisor refused {:?} {} of a batch: {}",
                r.stage, r.index, r.errno
            ),
        }
    }
}

impl From<Rejected> for MapError {
    fn from(r: Rejected) -> Self {
        MapError::Rejected(r)
    }
}

/// The root (L4) of the address space an operation works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Root {
    /// Its frame.
    pub mfn: Mfn,
    /// Whether it is a fresh table (cleared by the caller in an earlier
    /// batch or about to be: queued with [`Mapper::queue_clear`]) whose
    /// entries are known to be zero and must not be read.
    pub fresh: bool,
}

impl Root {
    /// A root in use (readable through the backend).
    pub const fn live(mfn: Mfn) -> Self {
        Root { mfn, fresh: false }
    }

    /// A new, zero root that cannot be read yet.
    pub const fn fresh(mfn: Mfn) -> Self {
        Root { mfn, fresh: true }
    }
}

/// Counters of what the mapper sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Batches submitted.
    pub batches: u64,
    /// `mmu_update` requests submitted.
    pub updates: u64,
    /// Pages cleared.
    pub clears: u64,
    /// TLB flushes requested.
    pub flushes: u64,
    /// Tables created.
    pub tables_created: u64,
    /// Tables unlinked and freed.
    pub tables_freed: u64,
}

/// The table at one level the current operation is in.
#[derive(Clone, Copy, Debug)]
struct Cursor {
    /// `va >> shift(level + 1)`: which table of that level.
    key: u64,
    mfn: Mfn,
    fresh: bool,
}

enum Walk {
    Found(Mfn, bool),
    /// The table at this level does not exist.
    Missing(u8),
}

/// Tables freed per reclaim round before the round is submitted.
const FREE_BATCH: usize = 32;

/// The leaf entry for `va` in the tables under `root` (read through
/// `backend`), if present.
pub fn translate<B: Backend + ?Sized>(backend: &mut B, root: Mfn, va: u64) -> Option<u64> {
    let (table, idx) = find_entry(backend, root, va, 1)?;
    let e = backend.read_entry(table, idx);
    is_present(e).then_some(e)
}

/// The table at `level` that holds the entry for `va`, and that entry's
/// index, if the tables above it exist.
pub fn find_entry<B: Backend + ?Sized>(
    backend: &mut B,
    root: Mfn,
    va: u64,
    level: u8,
) -> Option<(Mfn, usize)> {
    let mut table = root;
    let mut l = 4;
    while l > level {
        let e = backend.read_entry(table, index(va, l));
        if !is_present(e) || e & PteFlags::PSE.bits() != 0 {
            return None;
        }
        table = entry_mfn(e);
        l -= 1;
    }
    Some((table, index(va, level)))
}

/// Builds batches of page-table updates; see the module documentation.
#[derive(Debug)]
pub struct Mapper<B, const N: usize, const C: usize> {
    backend: B,
    updates: [MmuUpdate; N],
    n_updates: usize,
    clears: [Mfn; C],
    n_clears: usize,
    flush: bool,
    stats: Stats,
}

impl<B: Backend, const N: usize, const C: usize> Mapper<B, N, C> {
    /// A mapper with empty queues.
    pub const fn new(backend: B) -> Self {
        const { assert!(N > 0 && C > 0, "the queues need room") };
        Mapper {
            backend,
            updates: [MmuUpdate { ptr: 0, val: 0 }; N],
            n_updates: 0,
            clears: [Mfn(0); C],
            n_clears: 0,
            flush: false,
            stats: Stats {
                batches: 0,
                updates: 0,
                clears: 0,
                flushes: 0,
                tables_created: 0,
                tables_freed: 0,
            },
        }
    }

    /// The backend.
    pub fn backend(&mut self) -> &mut B {
        &mut self.backend
    }

    /// What was sent so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Queue `*ma = val` (`MMU_NORMAL_PT_UPDATE`), submitting the queue
    /// first if it is full.
    pub fn queue_update(&mut self, ma: MachineAddr, val: u64) -> Result<(), MapError> {
        if self.n_updates == N {
            self.submit()?;
        }
        if let Some(slot) = self.updates.get_mut(self.n_updates) {
            *slot = MmuUpdate::new(MmuCmd::NormalPtUpdate, ma, val);
            self.n_updates += 1;
        }
        Ok(())
    }

    /// Queue clearing `mfn`, submitting the queue first if it is full.
    pub fn queue_clear(&mut self, mfn: Mfn) -> Result<(), MapError> {
        if self.n_clears == C {
            self.submit()?;
        }
        if let Some(slot) = self.clears.get_mut(self.n_clears) {
            *slot = mfn;
            self.n_clears += 1;
        }
        Ok(())
    }

    /// Ask for a TLB flush with the next batch.
    pub fn queue_flush(&mut self) {
        self.flush = true;
    }

    /// Submit whatever is queued (nothing happens if the queue is empty).
    pub fn submit(&mut self) -> Result<(), MapError> {
        if self.n_updates == 0 && self.n_clears == 0 && !self.flush {
            return Ok(());
        }
        let batch = Batch {
            clears: self.clears.get(..self.n_clears).unwrap_or(&[]),
            updates: self.updates.get(..self.n_updates).unwrap_or(&[]),
            flush_tlb: self.flush,
        };
        self.stats.batches += 1;
        self.stats.updates += batch.updates.len() as u64;
        self.stats.clears += batch.clears.len() as u64;
        self.stats.flushes += u64::from(batch.flush_tlb);
        let result = self.backend.submit(batch);
        self.n_updates = 0;
        self.n_clears = 0;
        self.flush = false;
        result.map_err(MapError::from)
    }

    fn walk(
        &mut self,
        root: Root,
        cur: &mut [Option<Cursor>; 4],
        va: u64,
        level: u8,
        create: bool,
    ) -> Result<Walk, MapError> {
        if level >= 4 {
            return Ok(Walk::Found(root.mfn, root.fresh));
        }
        let key = va >> crate::pt::shift(level + 1);
        if let Some(c) = cur.get(usize::from(level)).copied().flatten()
            && c.key == key
        {
            return Ok(Walk::Found(c.mfn, c.fresh));
        }
        let (parent, parent_fresh) = match self.walk(root, cur, va, level + 1, create)? {
            Walk::Found(m, f) => (m, f),
            missing @ Walk::Missing(_) => return Ok(missing),
        };
        let idx = index(va, level + 1);
        let e = if parent_fresh {
            0
        } else {
            self.backend.read_entry(parent, idx)
        };
        let (mfn, fresh) = if is_present(e) {
            if e & PteFlags::PSE.bits() != 0 {
                return Err(MapError::Superpage { va });
            }
            (entry_mfn(e), false)
        } else if create {
            let t = self.backend.alloc_table().ok_or(MapError::NoTable)?;
            self.stats.tables_created += 1;
            self.queue_clear(t)?;
            self.queue_update(entry_ma(parent, idx), leaf(t, TABLE_FLAGS))?;
            (t, true)
        } else {
            return Ok(Walk::Missing(level));
        };
        if let Some(slot) = cur.get_mut(usize::from(level)) {
            *slot = Some(Cursor { key, mfn, fresh });
        }
        Ok(Walk::Found(mfn, fresh))
    }

    /// Map `pages` pages from `va` under `root`: page `i` gets the entry
    /// `entry(backend, i)` returns (`None`: leave that page alone). Missing
    /// tables are created. Replacing a present entry flushes the TLB.
    pub fn map_with<F>(&mut self, root: Root, va: u64, pages: u64, entry: F) -> Result<(), MapError>
    where
        F: FnMut(&mut B, u64) -> Result<Option<u64>, MapError>,
    {
        if !is_guest_range(va, pages) {
            return Err(MapError::BadRange { va, pages });
        }
        let looped = self.map_loop(root, va, pages, entry);
        let submitted = self.submit();
        looped.and(submitted)
    }

    fn map_loop<F>(&mut self, root: Root, va: u64, pages: u64, mut entry: F) -> Result<(), MapError>
    where
        F: FnMut(&mut B, u64) -> Result<Option<u64>, MapError>,
    {
        let mut cur = [None; 4];
        for i in 0..pages {
            let va_i = va + i * PAGE;
            let Walk::Found(l1, fresh) = self.walk(root, &mut cur, va_i, 1, true)? else {
                return Err(MapError::NoTable);
            };
            let Some(val) = entry(&mut self.backend, i)? else {
                continue;
            };
            let idx = index(va_i, 1);
            if !fresh && is_present(self.backend.read_entry(l1, idx)) {
                self.flush = true;
            }
            self.queue_update(entry_ma(l1, idx), val)?;
        }
        Ok(())
    }

    /// Map `pages` pages from `va` under `root` to the frames `frame(i)`
    /// returns, with `flags` (PRESENT is implied).
    pub fn map<F>(
        &mut self,
        root: Root,
        va: u64,
        pages: u64,
        flags: PteFlags,
        mut frame: F,
    ) -> Result<(), MapError>
    where
        F: FnMut(u64) -> Option<Mfn>,
    {
        if !LEAF_FLAGS.contains(flags) {
            return Err(MapError::BadFlags(flags.difference(LEAF_FLAGS).bits()));
        }
        self.map_with(root, va, pages, |_, i| {
            frame(i)
                .map(|mfn| Some(leaf(mfn, flags)))
                .ok_or(MapError::NoFrame { page: i })
        })
    }

    /// Unmap `pages` pages from `va` under the live `root`; returns how
    /// many were mapped. With `reclaim`, tables left empty are unlinked and
    /// given back to the backend (never the root).
    pub fn unmap(
        &mut self,
        root: Mfn,
        va: u64,
        pages: u64,
        reclaim: bool,
    ) -> Result<u64, MapError> {
        if !is_guest_range(va, pages) {
            return Err(MapError::BadRange { va, pages });
        }
        let looped = self.unmap_loop(Root::live(root), va, pages);
        self.submit()?;
        let unmapped = looped?;
        if reclaim && pages > 0 {
            self.reclaim(root, va, pages)?;
        }
        Ok(unmapped)
    }

    fn unmap_loop(&mut self, root: Root, va: u64, pages: u64) -> Result<u64, MapError> {
        let mut cur = [None; 4];
        let mut unmapped = 0;
        let mut i = 0;
        while i < pages {
            let va_i = va + i * PAGE;
            match self.walk(root, &mut cur, va_i, 1, false)? {
                Walk::Missing(level) => {
                    i = match next_table_boundary(va_i, level) {
                        Some(next) => ((next - va) / PAGE).min(pages),
                        None => pages,
                    };
                }
                Walk::Found(l1, _) => {
                    let idx = index(va_i, 1);
                    if is_present(self.backend.read_entry(l1, idx)) {
                        self.queue_update(entry_ma(l1, idx), 0)?;
                        self.flush = true;
                        unmapped += 1;
                    }
                    i += 1;
                }
            }
        }
        Ok(unmapped)
    }

    /// Unlink and free the tables below `root` that cover part of the range
    /// and are empty, level by level from L1 up.
    fn reclaim(&mut self, root: Mfn, va: u64, pages: u64) -> Result<(), MapError> {
        let last = va + (pages - 1) * PAGE;
        for level in 1..=3u8 {
            let span = entry_span(level + 1);
            let mut region = va & !(span - 1);
            let mut freed = [Mfn(0); FREE_BATCH];
            let mut n_freed = 0;
            loop {
                if let Some((parent, idx)) = find_entry(&mut self.backend, root, region, level + 1)
                {
                    let e = self.backend.read_entry(parent, idx);
                    if is_present(e) && e & PteFlags::PSE.bits() == 0 {
                        let table = entry_mfn(e);
                        if (0..ENTRIES).all(|k| self.backend.read_entry(table, k) == 0) {
                            self.queue_update(entry_ma(parent, idx), 0)?;
                            if let Some(slot) = freed.get_mut(n_freed) {
                                *slot = table;
                                n_freed += 1;
                            }
                        }
                    }
                }
                if n_freed == FREE_BATCH {
                    self.release(&freed)?;
                    n_freed = 0;
                }
                match region.checked_add(span) {
                    Some(next) if next <= last => region = next,
                    _ => break,
                }
            }
            self.release(freed.get(..n_freed).unwrap_or(&[]))?;
        }
        Ok(())
    }

    /// Submit the unlinking of `tables`, then free them.
    fn release(&mut self, tables: &[Mfn]) -> Result<(), MapError> {
        self.submit()?;
        for t in tables {
            self.backend.free_table(*t);
            self.stats.tables_freed += 1;
        }
        Ok(())
    }

    /// The leaf entry for `va` under `root`, if present.
    pub fn translate(&mut self, root: Mfn, va: u64) -> Option<u64> {
        translate(&mut self.backend, root, va)
    }
}

#[cfg(test)]
mod tests;
