//! A first-fit range allocator: the logic behind the runtime's heap.
//!
//! It manages addresses only (plain `u64`s), never touches the memory, and
//! keeps its free list in a fixed array of `N` spans, sorted and coalesced.
//! Sizes are rounded up to [`GRANULE`] and alignments raised to it, so
//! every block starts and ends on a granule boundary. When the free list has
//! no room for a split or a freed block, the bytes concerned are leaked and
//! counted in [`RangeAllocator::leaked`].
//!
//! Besides the region it starts with, the allocator can take an extension
//! that grows at its end ([`RangeAllocator::extend`]): the runtime maps
//! fresh frames there when the first region runs out.

use crate::layout::Span;

/// Allocation granule and minimum alignment (bytes).
pub const GRANULE: u64 = 16;

/// Why [`RangeAllocator::free`] refused a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// The block lies outside the managed region.
    OutOfRange,
    /// The block overlaps free memory (double free).
    DoubleFree,
}

/// A first-fit allocator over one address range (plus an extension that
/// grows upwards), with at most `N` free spans.
#[derive(Clone, Debug)]
pub struct RangeAllocator<const N: usize> {
    region: Span,
    extension: Span,
    free: [Span; N],
    len: usize,
    in_use: u64,
    leaked: u64,
}

fn round_size(size: u64) -> Option<u64> {
    size.max(1).checked_next_multiple_of(GRANULE)
}

impl<const N: usize> RangeAllocator<N> {
    /// An allocator with nothing to give.
    pub const fn empty() -> Self {
        RangeAllocator {
            region: Span::new(0, 0),
            extension: Span::new(0, 0),
            free: [Span::new(0, 0); N],
            len: 0,
            in_use: 0,
            leaked: 0,
        }
    }

    /// An allocator over `region`, trimmed inwards to granule boundaries.
    pub fn new(region: Span) -> Self {
        let mut a = Self::empty();
        let start = region.start.checked_next_multiple_of(GRANULE);
        let end = region.end - region.end % GRANULE;
        if let (Some(start), Some(slot)) = (start, a.free.first_mut())
            && start < end
        {
            *slot = Span::new(start, end);
            a.len = 1;
            a.region = Span::new(start, end);
        }
        a
    }

    /// The managed region.
    pub fn region(&self) -> Span {
        self.region
    }

    /// The extension added by [`RangeAllocator::extend`] (empty if none).
    pub fn extension(&self) -> Span {
        self.extension
    }

    /// Add `span` to the extension: the first span may go anywhere outside
    /// the region, later ones must start where the extension ends. Both
    /// ends must be granule aligned.
    pub fn extend(&mut self, span: Span) -> Result<(), HeapError> {
        let aligned = span.start % GRANULE == 0 && span.end % GRANULE == 0;
        let placed = if self.extension.is_empty() {
            !span.overlaps(&self.region)
        } else {
            span.start == self.extension.end
        };
        if !aligned || !placed || span.is_empty() {
            return Err(HeapError::OutOfRange);
        }
        self.extension = if self.extension.is_empty() {
            span
        } else {
            Span::new(self.extension.start, span.end)
        };
        // Hand it over as a freed block (coalesced with the free tail).
        self.in_use += span.len();
        self.free(span.start, span.len())
    }

    /// Bytes handed out and not yet freed (after rounding).
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Bytes lost because the free list was full.
    pub fn leaked(&self) -> u64 {
        self.leaked
    }

    /// Bytes on the free list.
    pub fn free_bytes(&self) -> u64 {
        self.spans().iter().map(Span::len).sum()
    }

    fn spans(&self) -> &[Span] {
        self.free.get(..self.len).unwrap_or(&[])
    }

    fn insert(&mut self, at: usize, span: Span) -> bool {
        if self.len >= N || at > self.len {
            return false;
        }
        self.free.copy_within(at..self.len, at + 1);
        self.free[at] = span;
        self.len += 1;
        true
    }

    fn remove(&mut self, at: usize) {
        if at < self.len {
            self.free.copy_within(at + 1..self.len, at);
            self.len -= 1;
        }
    }

    /// Allocate `size` bytes aligned to `align` (a power of two); returns
    /// the address.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        if !align.is_power_of_two() {
            return None;
        }
        let size = round_size(size)?;
        let align = align.max(GRANULE);
        let (i, span, start) = self.spans().iter().enumerate().find_map(|(i, s)| {
            let start = s.start.checked_next_multiple_of(align)?;
            (start.checked_add(size)? <= s.end).then_some((i, *s, start))
        })?;
        let prefix = Span::new(span.start, start);
        let suffix = Span::new(start + size, span.end);
        match (prefix.is_empty(), suffix.is_empty()) {
            (true, true) => self.remove(i),
            (true, false) => self.free[i] = suffix,
            (false, true) => self.free[i] = prefix,
            (false, false) => {
                self.free[i] = suffix;
                if !self.insert(i, prefix) {
                    self.leaked += prefix.len();
                }
            }
        }
        self.in_use += size;
        Some(start)
    }

    /// Free the block of `size` bytes at `addr` (the size it was allocated
    /// with).
    pub fn free(&mut self, addr: u64, size: u64) -> Result<(), HeapError> {
        let size = round_size(size).ok_or(HeapError::OutOfRange)?;
        let end = addr.checked_add(size).ok_or(HeapError::OutOfRange)?;
        let block = Span::new(addr, end);
        let inside = |r: Span| addr >= r.start && end <= r.end;
        if addr % GRANULE != 0 || !(inside(self.region) || inside(self.extension)) {
            return Err(HeapError::OutOfRange);
        }
        // First free span that starts after the block.
        let i = self.spans().partition_point(|s| s.start < addr);
        let prev = i.checked_sub(1).and_then(|p| self.free.get(p).copied());
        let next = self.spans().get(i).copied();
        if prev.is_some_and(|p| p.overlaps(&block)) || next.is_some_and(|n| n.overlaps(&block)) {
            return Err(HeapError::DoubleFree);
        }
        self.in_use -= size.min(self.in_use);
        let joins_prev = prev.is_some_and(|p| p.end == addr);
        let joins_next = next.is_some_and(|n| n.start == end);
        match (joins_prev, joins_next, prev, next) {
            (true, true, Some(p), Some(n)) => {
                self.free[i - 1] = Span::new(p.start, n.end);
                self.remove(i);
            }
            (true, _, Some(p), _) => self.free[i - 1] = Span::new(p.start, end),
            (_, true, _, Some(n)) => self.free[i] = Span::new(addr, n.end),
            _ => {
                if !self.insert(i, block) {
                    self.leaked += size;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    #[test]
    fn trims_to_granules() {
        let a = RangeAllocator::<4>::new(Span::new(0x1003, 0x2008));
        assert_eq!(a.region(), Span::new(0x1010, 0x2000));
        assert_eq!(RangeAllocator::<4>::new(Span::new(5, 9)).free_bytes(), 0);
    }

    #[test]
    fn alloc_aligns_and_coalesces() {
        let mut a = RangeAllocator::<8>::new(Span::new(0x1000, 0x3000));
        let x = a.alloc(1, 1).unwrap();
        assert_eq!(x, 0x1000);
        let y = a.alloc(0x100, 0x1000).unwrap();
        assert_eq!(y, 0x2000);
        assert_eq!(a.in_use(), 0x110);
        let z = a.alloc(0x20, 8).unwrap();
        assert_eq!(z, 0x1010);
        assert_eq!(a.alloc(0x2000, 16), None);
        assert_eq!(a.free(y, 0x100), Ok(()));
        assert_eq!(a.free(y, 0x100), Err(HeapError::DoubleFree));
        a.free(x, 1).unwrap();
        a.free(z, 0x20).unwrap();
        assert_eq!(a.free_bytes(), 0x2000);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.alloc(0x2000, 16), Some(0x1000));
        assert_eq!(a.free(0x3000, 16), Err(HeapError::OutOfRange));
        assert_eq!(a.alloc(1, 3), None);
    }

    #[test]
    fn full_free_list_leaks_instead_of_failing() {
        let mut a = RangeAllocator::<2>::new(Span::new(0, 0x1000));
        let blocks: Vec<u64> = (0..8).map(|_| a.alloc(16, 16).unwrap()).collect();
        // Free every other block: the list fills after two entries.
        for b in blocks.iter().step_by(2) {
            a.free(*b, 16).unwrap();
        }
        assert!(a.leaked() > 0);
        assert_eq!(a.free_bytes() + a.in_use() + a.leaked(), 0x1000);
    }

    #[test]
    fn extension_grows_at_its_end_and_coalesces() {
        let mut a = RangeAllocator::<8>::new(Span::new(0x1000, 0x2000));
        assert_eq!(a.alloc(0x1000, 16), Some(0x1000));
        assert_eq!(a.alloc(16, 16), None);
        // Overlapping the region, unaligned or empty: refused.
        assert_eq!(
            a.extend(Span::new(0x1800, 0x9000)),
            Err(HeapError::OutOfRange)
        );
        assert_eq!(
            a.extend(Span::new(0x9008, 0xA000)),
            Err(HeapError::OutOfRange)
        );
        assert_eq!(
            a.extend(Span::new(0x9000, 0x9000)),
            Err(HeapError::OutOfRange)
        );
        a.extend(Span::new(0x9000, 0xA000)).unwrap();
        // Not at the extension's end: refused.
        assert_eq!(
            a.extend(Span::new(0xB000, 0xC000)),
            Err(HeapError::OutOfRange)
        );
        a.extend(Span::new(0xA000, 0xB000)).unwrap();
        assert_eq!(a.extension(), Span::new(0x9000, 0xB000));
        assert_eq!(a.in_use(), 0x1000);
        // The two pieces are one span: a block across their seam fits.
        assert_eq!(a.alloc(0x2000, 16), Some(0x9000));
        a.free(0x9000, 0x2000).unwrap();
        a.free(0x1000, 0x1000).unwrap();
        assert_eq!(a.free_bytes(), 0x3000);
        assert_eq!(a.free(0xB000, 16), Err(HeapError::OutOfRange));
    }

    proptest! {
        #[test]
        fn blocks_never_overlap(ops in proptest::collection::vec((any::<bool>(), 1u64..300, 0u32..7, any::<u8>()), 0..200)) {
            let mut a = RangeAllocator::<16>::new(Span::new(0x10_0000, 0x10_4000));
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (alloc, size, align_log, pick) in ops {
                if alloc || live.is_empty() {
                    let align = 1u64 << align_log;
                    if let Some(p) = a.alloc(size, align) {
                        prop_assert_eq!(p % align, 0);
                        prop_assert!(p >= 0x10_0000 && p + size <= 0x10_4000);
                        for &(q, qs) in &live {
                            prop_assert!(p + size <= q || q + qs <= p, "overlap");
                        }
                        live.push((p, size));
                    }
                } else {
                    let (p, s) = live.swap_remove(usize::from(pick) % live.len());
                    prop_assert_eq!(a.free(p, s), Ok(()));
                }
                prop_assert_eq!(a.free_bytes() + a.in_use() + a.leaked(), 0x4000);
            }
        }
    }
}
