//! A frame allocator over the guest's free pseudo-physical frames.
//!
//! The pool is the span of frames after the bootstrap region
//! ([`BootLayout::free_frames`](crate::layout::BootLayout::free_frames)),
//! minus reserved spans. Frames are handed out from a bump pointer; freed
//! frames go onto a bounded stack and are handed out again first. The frames
//! themselves are not mapped, so the allocator keeps all its state in itself.

use crate::layout::Span;

/// Why [`FrameAllocator::free`] refused a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The frame was never handed out by this allocator.
    NotAllocated,
    /// The frame is already free.
    DoubleFree,
    /// The recycle stack is full; the frame is leaked.
    Full,
}

/// Hands out pseudo-physical frame numbers; `N` bounds how many freed frames
/// it remembers.
#[derive(Clone, Debug)]
pub struct FrameAllocator<const N: usize> {
    pool: Span,
    next: u64,
    reserved: [Option<Span>; 2],
    recycled: [u64; N],
    nr_recycled: usize,
}

impl<const N: usize> FrameAllocator<N> {
    /// An allocator with no frames.
    pub const fn empty() -> Self {
        FrameAllocator {
            pool: Span::new(0, 0),
            next: 0,
            reserved: [None, None],
            recycled: [0; N],
            nr_recycled: 0,
        }
    }

    /// An allocator over `pool`, never handing out frames in `reserved`.
    pub fn new(pool: Span, reserved: [Option<Span>; 2]) -> Self {
        FrameAllocator {
            pool,
            next: pool.start,
            reserved,
            ..Self::empty()
        }
    }

    fn reserved_at(&self, pfn: u64) -> Option<Span> {
        self.reserved
            .iter()
            .flatten()
            .find(|r| r.contains(pfn))
            .copied()
    }

    /// A free frame, or `None` when the pool is exhausted.
    pub fn alloc(&mut self) -> Option<u64> {
        if let Some(n) = self.nr_recycled.checked_sub(1) {
            self.nr_recycled = n;
            return self.recycled.get(n).copied();
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
    /// address-space takeover).
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
                    self.next = end;
                    return Some(want);
                }
            }
        }
    }

    /// Give `pfn` back.
    pub fn free(&mut self, pfn: u64) -> Result<(), FreeError> {
        if !(self.pool.start <= pfn && pfn < self.next) || self.reserved_at(pfn).is_some() {
            return Err(FreeError::NotAllocated);
        }
        let recycled = self.recycled.get(..self.nr_recycled).unwrap_or(&[]);
        if recycled.contains(&pfn) {
            return Err(FreeError::DoubleFree);
        }
        let slot = self
            .recycled
            .get_mut(self.nr_recycled)
            .ok_or(FreeError::Full)?;
        *slot = pfn;
        self.nr_recycled += 1;
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
        n + self.nr_recycled as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[test]
    fn bump_skips_reserved() {
        let mut a = FrameAllocator::<4>::new(
            Span::new(10, 20),
            [Some(Span::new(12, 14)), Some(Span::new(18, 30))],
        );
        assert_eq!(a.available(), 6);
        let got: Vec<u64> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(got, [10, 11, 14, 15, 16, 17]);
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn free_recycles_and_checks() {
        let mut a = FrameAllocator::<2>::new(Span::new(0, 8), [Some(Span::new(5, 6)), None]);
        let f0 = a.alloc().unwrap();
        let f1 = a.alloc().unwrap();
        let f2 = a.alloc().unwrap();
        assert_eq!(a.free(7), Err(FreeError::NotAllocated));
        assert_eq!(a.free(5), Err(FreeError::NotAllocated));
        a.free(f1).unwrap();
        assert_eq!(a.free(f1), Err(FreeError::DoubleFree));
        a.free(f0).unwrap();
        assert_eq!(a.free(f2), Err(FreeError::Full));
        assert_eq!(a.alloc(), Some(f0));
        assert_eq!(a.alloc(), Some(f1));
        assert_eq!(a.alloc(), Some(3));
    }

    #[test]
    fn span_is_contiguous_and_skips_reserved() {
        let mut a = FrameAllocator::<4>::new(Span::new(10, 40), [Some(Span::new(14, 16)), None]);
        assert_eq!(a.alloc(), Some(10));
        // 11..16 would cross the reserved 14..16: start after it.
        assert_eq!(a.alloc_span(5), Some(Span::new(16, 21)));
        assert_eq!(a.alloc(), Some(21));
        assert_eq!(a.alloc_span(19), None);
        assert_eq!(a.alloc_span(18), Some(Span::new(22, 40)));
        assert_eq!(a.available(), 0);
        // Frames of a span can be freed one by one.
        assert_eq!(a.free(30), Ok(()));
        assert_eq!(a.alloc(), Some(30));
    }

    proptest! {
        #[test]
        fn never_hands_out_a_frame_twice(ops in proptest::collection::vec(any::<(bool, u8)>(), 0..200)) {
            let mut a = FrameAllocator::<8>::new(Span::new(100, 160), [Some(Span::new(120, 130)), None]);
            let mut live = BTreeSet::new();
            for (alloc, pick) in ops {
                if alloc || live.is_empty() {
                    if let Some(p) = a.alloc() {
                        prop_assert!((100..160).contains(&p) && !(120..130).contains(&p));
                        prop_assert!(live.insert(p), "frame {} handed out twice", p);
                    } else {
                        prop_assert_eq!(a.available(), 0);
                    }
                } else {
                    let p = *live.iter().nth(usize::from(pick) % live.len()).unwrap();
                    match a.free(p) {
                        Ok(()) => { live.remove(&p); }
                        Err(FreeError::Full) => { live.remove(&p); } // leaked, never reused
                        Err(e) => prop_assert!(false, "free({}) failed: {:?}", p, e),
                    }
                }
            }
        }
    }
}
