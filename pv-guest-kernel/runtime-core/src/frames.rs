//! A frame allocator over the guest's free pseudo-physical frames.
//!
//! The pool is the span of frames after the bootstrap region
//! ([`BootLayout::free_frames`](crate::layout::BootLayout::free_frames)),
//! minus reserved spans. Frames are handed out from a bump pointer; a freed
//! frame gets its bit set in a bitmap over the pool (one bit per frame, sized
//! when the allocator is made), and freed frames are handed out again first.
//! The bitmap cannot overflow, so every frame handed out can come back: a
//! free is refused only for a frame that was never handed out or is already
//! free, and the caller must treat that as the bug it is.
//!
//! Allocation scans the bitmap from a hint (the lowest word that may hold a
//! freed frame), so it is bounded by the pool's size over 64 and usually
//! finds a frame at once. The frames themselves are not mapped, so the
//! allocator keeps all its state in itself and the storage it was given.

use core::fmt;

use crate::layout::Span;

/// Why [`FrameAllocator::free`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame was never handed out by this allocator.
    NotAllocated,
    /// The frame is already free.
    DoubleFree,
}

impl fmt::Display for FreeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FreeError::NotAllocated => "the frame was never handed out by the frame allocator",
            FreeError::DoubleFree => "the frame is already free (double free)",
        })
    }
}

/// `u64` words of bitmap a [`FrameAllocator`] over `frames` frames needs.
pub const fn bitmap_words(frames: u64) -> u64 {
    frames.div_ceil(64)
}

/// Hands out pseudo-physical frame numbers; remembers every freed frame in a
/// bitmap of `'a` storage.
pub struct FrameAllocator<'a> {
    pool: Span,
    next: u64,
    reserved: [Option<Span>; 2],
    /// Bit `i` set: frame `pool.start + i` was handed out and freed since.
    freed: &'a mut [u64],
    nr_freed: u64,
    /// No word below this one has a bit set.
    hint: usize,
    /// Frames cut off the end of the pool because the bitmap was too small.
    dropped: u64,
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("pool", &self.pool)
            .field("next", &self.next)
            .field("reserved", &self.reserved)
            .field("nr_freed", &self.nr_freed)
            .field("dropped", &self.dropped)
            .finish_non_exhaustive()
    }
}

impl<'a> FrameAllocator<'a> {
    /// An allocator with no frames.
    pub const fn empty() -> Self {
        FrameAllocator {
            pool: Span::new(0, 0),
            next: 0,
            reserved: [None, None],
            freed: &mut [],
            nr_freed: 0,
            hint: 0,
            dropped: 0,
        }
    }

    /// An allocator over `pool`, never handing out frames in `reserved`,
    /// remembering freed frames in `bitmap` (cleared here). A bitmap of fewer
    /// than [`bitmap_words`]`(pool.len())` words covers only the start of the
    /// pool: the rest is never handed out, and [`Self::dropped`] says how
    /// many frames that cost (the caller should say so loudly, once).
    pub fn new(pool: Span, reserved: [Option<Span>; 2], bitmap: &'a mut [u64]) -> Self {
        bitmap.fill(0);
        let covered = (bitmap.len() as u64).saturating_mul(64);
        let end = pool.end.min(pool.start.saturating_add(covered));
        FrameAllocator {
            pool: Span::new(pool.start, end),
            next: pool.start,
            reserved,
            freed: bitmap,
            nr_freed: 0,
            hint: 0,
            dropped: pool.end - end,
        }
    }

    /// Frames of the pool this allocator does not manage (its bitmap was too
    /// small); 0 normally.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn reserved_at(&self, pfn: u64) -> Option<Span> {
        self.reserved
            .iter()
            .flatten()
            .find(|r| r.contains(pfn))
            .copied()
    }

    /// The bitmap word and bit of `pfn` (which must be in the pool).
    fn slot(&self, pfn: u64) -> Option<(usize, u64)> {
        let i = pfn.checked_sub(self.pool.start)?;
        Some((usize::try_from(i / 64).ok()?, 1 << (i % 64)))
    }

    /// The lowest freed frame, taken out of the bitmap.
    fn take_freed(&mut self) -> Option<u64> {
        if self.nr_freed == 0 {
            return None;
        }
        let start = self.hint;
        let (i, word) = self
            .freed
            .get_mut(start..)?
            .iter_mut()
            .enumerate()
            .find(|(_, w)| **w != 0)?;
        let bit = word.trailing_zeros();
        *word &= !(1u64 << bit);
        let index = start + i;
        self.hint = index;
        self.nr_freed -= 1;
        Some(self.pool.start + index as u64 * 64 + u64::from(bit))
    }

    /// A free frame, or `None` when the pool is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        if let Some(pfn) = self.take_freed() {
            return Some(pfn);
        }
        while self.next < self.pool.end {
            if let Some(r) = self.reserved_at(self.next) {
                self.next = r.end;
                continue;
            }
            let pfn = self.next;
            self.next += 1;
            return Some(pfn);
        }
        None
    }

    /// `n` consecutive free frames from the bump pointer (never recycled
    /// ones), skipping reserved spans; `None` if the pool has no such run.
    /// Used where frames must form one known range (the page tables of an
    /// address-space takeover). Frames the run jumps over (before a reserved
    /// span it would cross) count as freed, so none is lost.
    pub fn alloc_span(&mut self, n: u64) -> Option<Span> {
        let mut start = self.next;
        loop {
            let end = start.checked_add(n)?;
            if end > self.pool.end {
                return None;
            }
            let want = Span::new(start, end);
            match self.reserved.iter().flatten().find(|r| r.overlaps(&want)) {
                Some(r) => start = r.end,
                None => {
                    let skipped = Span::new(self.next, start);
                    self.next = end;
                    for pfn in skipped.start..skipped.end {
                        // Cannot fail: below `next`, not reserved, never handed out.
                        if self.reserved_at(pfn).is_none() {
                            let _ = self.free(pfn);
                        }
                    }
                    return Some(want);
                }
            }
        }
    }

    /// Give `pfn` back. Every frame this allocator handed out is taken back;
    /// an error means the caller has a bug (a frame it did not get from here,
    /// or freed twice), and nothing changed.
    pub fn free(&mut self, pfn: u64) -> Result<(), FreeError> {
        if !(self.pool.start <= pfn && pfn < self.next) || self.reserved_at(pfn).is_some() {
            return Err(FreeError::NotAllocated);
        }
        let (index, bit) = self.slot(pfn).ok_or(FreeError::NotAllocated)?;
        let word = self.freed.get_mut(index).ok_or(FreeError::NotAllocated)?;
        if *word & bit != 0 {
            return Err(FreeError::DoubleFree);
        }
        *word |= bit;
        self.nr_freed += 1;
        self.hint = self.hint.min(index);
        Ok(())
    }

    /// Frames still available.
    pub fn available(&self) -> u64 {
        let rest = Span::new(self.next, self.pool.end);
        let mut n = rest.len();
        for r in self.reserved.iter().flatten() {
            let lo = r.start.max(rest.start);
            let hi = r.end.min(rest.end);
            n -= hi.saturating_sub(lo);
        }
        n + self.nr_freed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    fn bitmap(pool: Span) -> Vec<u64> {
        vec![u64::MAX; usize::try_from(bitmap_words(pool.len())).unwrap()] // `new` must clear it
    }

    #[test]
    fn bump_skips_reserved() {
        let pool = Span::new(10, 20);
        let mut bm = bitmap(pool);
        let mut a = FrameAllocator::new(
            pool,
            [Some(Span::new(12, 14)), Some(Span::new(18, 30))],
            &mut bm,
        );
        assert_eq!(a.available(), 6);
        let got: Vec<u64> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got, [10, 11, 14, 15, 16, 17]);
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn free_recycles_and_checks() {
        let pool = Span::new(0, 8);
        let mut bm = bitmap(pool);
        let mut a = FrameAllocator::new(pool, [Some(Span::new(5, 6)), None], &mut bm);
        let f0 = a.alloc().unwrap();
        let f1 = a.alloc().unwrap();
        let f2 = a.alloc().unwrap();
        assert_eq!(a.free(7), Err(FreeError::NotAllocated));
        assert_eq!(a.free(5), Err(FreeError::NotAllocated));
        assert_eq!(a.free(u64::MAX), Err(FreeError::NotAllocated));
        a.free(f1).unwrap();
        assert_eq!(a.free(f1), Err(FreeError::DoubleFree));
        a.free(f0).unwrap();
        a.free(f2).unwrap();
        assert_eq!(a.available(), 7);
        assert_eq!(a.alloc(), Some(f0));
        assert_eq!(a.alloc(), Some(f1));
        assert_eq!(a.alloc(), Some(f2));
        assert_eq!(a.alloc(), Some(3));
    }

    #[test]
    fn more_frees_than_the_old_recycle_stack_held_all_come_back() {
        // The old allocator remembered 4096 freed frames and leaked the rest:
        // one abandoned 100 MiB upload lost dom0 ~84 MiB. Every frame comes back.
        let pool = Span::new(1000, 1000 + 30_000);
        let mut bm = bitmap(pool);
        let mut a = FrameAllocator::new(pool, [Some(Span::new(5000, 5100)), None], &mut bm);
        let before = a.available();
        let got: Vec<u64> = (0..25_600).map(|_| a.alloc().unwrap()).collect();
        for &p in got.iter().rev() {
            a.free(p).unwrap();
        }
        assert_eq!(a.available(), before);
        let again: BTreeSet<u64> = (0..25_600).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(again, got.iter().copied().collect());
    }

    #[test]
    fn a_short_bitmap_drops_the_pool_end_up_front() {
        let mut bm = [0u64; 2];
        let mut a = FrameAllocator::new(Span::new(0, 200), [None, None], &mut bm);
        assert_eq!(a.dropped(), 72);
        assert_eq!(a.available(), 128);
        let got: Vec<u64> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got, (0..128).collect::<Vec<_>>());
        let mut a = FrameAllocator::empty();
        assert_eq!((a.alloc(), a.available(), a.dropped()), (None, 0, 0));
    }

    #[test]
    fn span_is_contiguous_and_skips_reserved() {
        let pool = Span::new(10, 40);
        let mut bm = bitmap(pool);
        let mut a = FrameAllocator::new(pool, [Some(Span::new(14, 16)), None], &mut bm);
        assert_eq!(a.alloc(), Some(10));
        // 11..16 would cross the reserved 14..16: start after it.
        assert_eq!(a.alloc_span(5), Some(Span::new(16, 21)));
        // The frames jumped over are not lost.
        assert_eq!(a.available(), 3 + 19);
        assert_eq!(a.alloc(), Some(11));
        assert_eq!(a.alloc(), Some(12));
        assert_eq!(a.alloc(), Some(13));
        assert_eq!(a.alloc(), Some(21));
        assert_eq!(a.alloc_span(19), None);
        assert_eq!(a.alloc_span(18), Some(Span::new(22, 40)));
        assert_eq!(a.available(), 0);
        // Frames of a span can be freed one by one.
        assert_eq!(a.free(30), Ok(()));
        assert_eq!(a.alloc(), Some(30));
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc,
        Span(u8),
        /// Free the n-th live frame.
        Free(u16),
        /// Free any frame number (maybe not handed out, maybe free already).
        FreeAny(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Alloc),
            1 => (1u8..8).prop_map(Op::Span),
            4 => any::<u16>().prop_map(Op::Free),
            1 => (0u16..400).prop_map(Op::FreeAny),
        ]
    }

    proptest! {
        /// Any sequence of alloc/free: frames come from the pool (never reserved,
        /// never one that is live), every free of a live frame succeeds, a free of
        /// anything else fails with the right error and changes nothing, and at the
        /// end freeing every live frame gives back exactly what the pool had.
        #[test]
        fn takes_back_exactly_the_frames_it_handed_out(
            ops in proptest::collection::vec(op(), 0..600),
            start in 0u64..100,
            len in 0u64..300,
        ) {
            let pool = Span::new(start, start + len);
            let reserved = [Some(Span::new(start + 20, start + 30)), Some(Span::new(start + 200, start + 1000))];
            let is_reserved = |p: u64| reserved.iter().flatten().any(|r| r.contains(p));
            let mut bm = bitmap(pool);
            let mut a = FrameAllocator::new(pool, reserved, &mut bm);
            let total = a.available();
            let mut live = BTreeSet::new();
            let mut ever = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Alloc => match a.alloc() {
                        Some(p) => {
                            prop_assert!(pool.contains(p) && !is_reserved(p), "{} outside the pool", p);
                            prop_assert!(live.insert(p), "frame {} handed out twice", p);
                            ever.insert(p);
                        }
                        None => prop_assert_eq!(a.available(), 0),
                    },
                    Op::Span(n) => {
                        if let Some(s) = a.alloc_span(u64::from(n)) {
                            prop_assert_eq!(s.len(), u64::from(n));
                            for p in s.start..s.end {
                                prop_assert!(pool.contains(p) && !is_reserved(p));
                                prop_assert!(live.insert(p), "frame {} handed out twice", p);
                                ever.insert(p);
                            }
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let p = *live.iter().nth(usize::from(i) % live.len()).unwrap();
                        prop_assert_eq!(a.free(p), Ok(()));
                        live.remove(&p);
                    }
                    Op::Free(_) => {}
                    Op::FreeAny(p) => {
                        let p = u64::from(p);
                        let avail = a.available();
                        let got = a.free(p);
                        if live.contains(&p) {
                            prop_assert_eq!(got, Ok(()));
                            live.remove(&p);
                        } else {
                            if ever.contains(&p) {
                                prop_assert_eq!(got, Err(FreeError::DoubleFree));
                            } else if !pool.contains(p) || is_reserved(p) {
                                prop_assert_eq!(got, Err(FreeError::NotAllocated));
                            } else {
                                // Never handed out: past the bump pointer, or jumped
                                // over by a span (and so already free).
                                prop_assert!(got.is_err(), "free of unallocated {} accepted", p);
                            }
                            prop_assert_eq!(a.available(), avail, "a refused free changed nothing");
                        }
                    }
                }
                prop_assert_eq!(a.available() + live.len() as u64, total);
            }
            for p in core::mem::take(&mut live) {
                prop_assert_eq!(a.free(p), Ok(()));
            }
            prop_assert_eq!(a.available(), total);
            // And all of them can be handed out again, each once.
            let again: BTreeSet<u64> = core::iter::from_fn(|| a.alloc()).collect();
            prop_assert_eq!(again.len() as u64, total);
        }
    }
}
