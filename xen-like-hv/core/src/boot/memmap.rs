//! Physical memory map arithmetic: byte ranges, a bounded set of them, and hole finding.
//!
//! The hypervisor builds a [`RegionSet`] from the boot loader's usable-RAM entries
//! (which may be unsorted, overlapping, unaligned, empty or wrap around 2^64),
//! [`subtracts`](RegionSet::subtract) what must not be reused (its image, the
//! multiboot2 information, every module), [`aligns`](RegionSet::page_align_inward) the
//! rest to whole pages, and places its own boot structures with [`find_hole`].
//!
//! **Capacity policy.** A set holds at most [`MAX_REGIONS`] regions. When an insertion
//! or a split would need more, the *smallest* region is dropped and
//! [`RegionSet::truncated`] becomes true. The set therefore only ever
//! under-approximates: memory may be lost, but nothing outside the inserted ranges
//! (and nothing subtracted) is ever reported. Use a set for memory that *may* be
//! used, never for memory that must be avoided.

use crate::mm::{Mfn, MfnExt, PAGE_SIZE};

/// Most regions a [`RegionSet`] holds.
pub const MAX_REGIONS: usize = 128;

/// The byte range `[start, end)`. A region with `end <= start` is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Rounds `x` down to a multiple of `align` (a power of two).
fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

impl Region {
    /// The range `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Region { start, end }
    }

    /// `len` bytes from `base`; `None` if the range would wrap past 2^64.
    pub const fn from_base_len(base: u64, len: u64) -> Option<Self> {
        match base.checked_add(len) {
            Some(end) => Some(Region { start: base, end }),
            None => None,
        }
    }

    /// `len` bytes from `base`, clipped at the top of the 64-bit space.
    pub const fn from_base_len_clipped(base: u64, len: u64) -> Self {
        Region {
            start: base,
            end: base.saturating_add(len),
        }
    }

    /// Size in bytes (0 if empty).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether the region holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `addr` lies in the region.
    pub const fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the regions share at least one byte.
    pub const fn overlaps(&self, other: &Region) -> bool {
        !self.is_empty() && !other.is_empty() && self.start < other.end && other.start < self.end
    }

    /// The bytes the two regions share, if any.
    pub fn intersection(&self, other: &Region) -> Option<Region> {
        let r = Region::new(self.start.max(other.start), self.end.min(other.end));
        (!r.is_empty()).then_some(r)
    }

    /// The whole pages inside the region; `None` if there are none.
    pub fn page_align_inward(&self) -> Option<Region> {
        let r = Region::new(
            align_up(self.start, PAGE_SIZE)?,
            align_down(self.end, PAGE_SIZE),
        );
        (!r.is_empty()).then_some(r)
    }

    /// The pages the region touches; `None` if empty or if the last page would end
    /// past 2^64 (its end is not representable).
    pub fn page_align_outward(&self) -> Option<Region> {
        if self.is_empty() {
            return None;
        }
        Some(Region::new(
            align_down(self.start, PAGE_SIZE),
            align_up(self.end, PAGE_SIZE)?,
        ))
    }

    /// The machine frames `[first, end)` wholly inside the region; `None` if none.
    pub fn frames(&self) -> Option<(Mfn, Mfn)> {
        let r = self.page_align_inward()?;
        Some((Mfn::from_addr(r.start), Mfn::from_addr(r.end)))
    }
}

/// A temporary set one region larger than a [`RegionSet`], for an operation that may
/// add one region before the capacity policy is applied.
type Scratch = heapless::Vec<Region, { MAX_REGIONS + 1 }>;

/// A set of disjoint byte ranges: sorted by address, non-empty, and never touching
/// (adjacent or overlapping insertions merge). Bounded; see the
/// [capacity policy](self#capacity-policy).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionSet {
    regions: heapless::Vec<Region, MAX_REGIONS>,
    truncated: bool,
}

impl RegionSet {
    /// The empty set.
    pub const fn new() -> Self {
        RegionSet {
            regions: heapless::Vec::new(),
            truncated: false,
        }
    }

    /// The union of `regions` (empty ones are ignored), byte-precise: call
    /// [`page_align_inward`](Self::page_align_inward) once everything is in.
    pub fn from_regions(regions: impl IntoIterator<Item = Region>) -> Self {
        let mut set = RegionSet::new();
        for r in regions {
            set.insert(r);
        }
        set
    }

    /// Adds `r` to the set, merging it with every region it overlaps or touches.
    pub fn insert(&mut self, r: Region) {
        if r.is_empty() {
            return;
        }
        let mut out = Scratch::new();
        let mut merged = r;
        let mut placed = false;
        for &x in &self.regions {
            if x.end < merged.start {
                push_scratch(&mut out, x);
            } else if merged.end < x.start {
                if !placed {
                    push_scratch(&mut out, merged);
                    placed = true;
                }
                push_scratch(&mut out, x);
            } else {
                merged = Region::new(merged.start.min(x.start), merged.end.max(x.end));
            }
        }
        if !placed {
            push_scratch(&mut out, merged);
        }
        self.commit(out);
    }

    /// Adds `len` bytes from `base`, clipped at the top of the 64-bit space (a
    /// boot-loader entry that wraps around keeps the part below 2^64).
    pub fn insert_base_len(&mut self, base: u64, len: u64) {
        self.insert(Region::from_base_len_clipped(base, len));
    }

    /// Removes every byte of `reserved` from the set; may split a region in two.
    pub fn subtract(&mut self, reserved: Region) {
        if reserved.is_empty() {
            return;
        }
        let mut out = Scratch::new();
        for &x in &self.regions {
            if !x.overlaps(&reserved) {
                push_scratch(&mut out, x);
                continue;
            }
            let left = Region::new(x.start, reserved.start);
            let right = Region::new(reserved.end, x.end);
            if !left.is_empty() {
                push_scratch(&mut out, left);
            }
            if !right.is_empty() {
                push_scratch(&mut out, right);
            }
        }
        self.commit(out);
    }

    /// Shrinks every region to the whole pages it contains, dropping regions that
    /// contain none. The result stays sorted and disjoint.
    pub fn page_align_inward(&mut self) {
        let mut out = heapless::Vec::new();
        for r in self.regions.iter().filter_map(Region::page_align_inward) {
            // Never full: at most as many regions as before.
            if out.push(r).is_err() {
                self.truncated = true;
            }
        }
        self.regions = out;
    }

    /// Installs `out`, dropping its smallest region if it is over capacity.
    fn commit(&mut self, mut out: Scratch) {
        while out.len() > MAX_REGIONS {
            let smallest = out
                .iter()
                .enumerate()
                .min_by_key(|(_, r)| r.len())
                .map(|(i, _)| i);
            let mut kept = Scratch::new();
            for (i, &r) in out.iter().enumerate() {
                if Some(i) != smallest {
                    push_scratch(&mut kept, r);
                }
            }
            out = kept;
            self.truncated = true;
        }
        let mut regions = heapless::Vec::new();
        for r in out {
            if regions.push(r).is_err() {
                self.truncated = true;
            }
        }
        self.regions = regions;
    }

    /// The regions, sorted by address.
    pub fn as_slice(&self) -> &[Region] {
        &self.regions
    }

    /// Iterates over the regions in address order.
    pub fn iter(&self) -> core::slice::Iter<'_, Region> {
        self.regions.iter()
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether the set holds no byte.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// True if a region was ever dropped for lack of room (see the capacity policy).
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Total bytes in the set (saturating; disjoint regions below 2^64 cannot overflow).
    pub fn total_bytes(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.len()))
    }

    /// One past the highest byte in the set.
    pub fn highest_end(&self) -> Option<u64> {
        self.regions.last().map(|r| r.end)
    }

    /// Whether `addr` is in the set.
    pub fn contains(&self, addr: u64) -> bool {
        self.regions.iter().any(|r| r.contains(addr))
    }

    /// Whether every byte of `r` is in the set (true for an empty `r`).
    pub fn contains_region(&self, r: &Region) -> bool {
        r.is_empty()
            || self
                .regions
                .iter()
                .any(|x| x.start <= r.start && r.end <= x.end)
    }

    /// How many bytes of `r` are in the set.
    pub fn overlap_bytes(&self, r: &Region) -> u64 {
        self.regions
            .iter()
            .filter_map(|x| x.intersection(r))
            .fold(0u64, |acc, i| acc.saturating_add(i.len()))
    }
}

impl<'a> IntoIterator for &'a RegionSet {
    type Item = &'a Region;
    type IntoIter = core::slice::Iter<'a, Region>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Pushes onto a scratch set; it has room for one more than any committed set, and each
/// operation adds at most one region, so a failure here cannot happen. It is ignored
/// rather than allowed to panic, which can only lose memory (see the capacity policy).
fn push_scratch(out: &mut Scratch, r: Region) {
    let _ = out.push(r);
}

/// The lowest address `a`, a multiple of `align`, such that `[a, a + size)` lies inside
/// one region of `free` and inside `[min_addr, max_addr)`. `None` if there is no such
/// block, if `size` is 0, or if `align` is not a power of two.
pub fn find_hole(
    free: &RegionSet,
    size: u64,
    align: u64,
    min_addr: u64,
    max_addr: u64,
) -> Option<u64> {
    if size == 0 || !align.is_power_of_two() {
        return None;
    }
    free.iter().find_map(|r| {
        let lo = r.start.max(min_addr);
        let hi = r.end.min(max_addr);
        let a = align_up(lo, align)?;
        let end = a.checked_add(size)?;
        (end <= hi).then_some(a)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn r(s: u64, e: u64) -> Region {
        Region::new(s, e)
    }

    #[test]
    fn region_helpers() {
        assert_eq!(r(10, 5).len(), 0);
        assert!(r(10, 5).is_empty());
        assert!(r(0, 10).overlaps(&r(9, 20)));
        assert!(!r(0, 10).overlaps(&r(10, 20)));
        assert!(!r(0, 10).overlaps(&r(5, 5)));
        assert_eq!(Region::from_base_len(u64::MAX, 2), None);
        assert_eq!(
            Region::from_base_len_clipped(u64::MAX - 1, 5),
            r(u64::MAX - 1, u64::MAX)
        );
        assert_eq!(r(1, 0x3001).page_align_inward(), Some(r(0x1000, 0x3000)));
        assert_eq!(r(1, 0xfff).page_align_inward(), None);
        assert_eq!(r(u64::MAX - 5, u64::MAX).page_align_inward(), None);
        assert_eq!(r(1, 0x3001).page_align_outward(), Some(r(0, 0x4000)));
        assert_eq!(r(0, u64::MAX).page_align_outward(), None);
        assert_eq!(r(5, 5).page_align_outward(), None);
        assert_eq!(r(0x1000, 0x3800).frames(), Some((Mfn(1), Mfn(3))));
    }

    #[test]
    fn insert_sorts_and_merges() {
        let s = RegionSet::from_regions([
            r(0x5000, 0x6000),
            r(0x1000, 0x2000),
            r(0x2000, 0x3000), // adjacent: merges
            r(0x1800, 0x1900), // inside
            r(7, 3),           // empty
            r(0x8000, 0x9000),
            r(0x5800, 0x8000), // bridges two
        ]);
        assert_eq!(s.as_slice(), &[r(0x1000, 0x3000), r(0x5000, 0x9000)]);
        assert_eq!(s.total_bytes(), 0x6000);
        assert_eq!(s.highest_end(), Some(0x9000));
        assert!(!s.truncated());
    }

    #[test]
    fn merge_then_align_keeps_pages_split_across_entries() {
        let mut s = RegionSet::from_regions([r(0, 0x1800), r(0x1800, 0x3000)]);
        s.page_align_inward();
        assert_eq!(s.as_slice(), &[r(0, 0x3000)]);
    }

    #[test]
    fn subtract_splits() {
        let mut s = RegionSet::from_regions([r(0, 0x10000)]);
        s.subtract(r(0x1100, 0x1200));
        s.subtract(r(0xf000, 0x20000));
        assert_eq!(s.as_slice(), &[r(0, 0x1100), r(0x1200, 0xf000)]);
        s.page_align_inward();
        assert_eq!(s.as_slice(), &[r(0, 0x1000), r(0x2000, 0xf000)]);
    }

    #[test]
    fn wrapping_entries_are_clipped() {
        let mut s = RegionSet::new();
        s.insert_base_len(u64::MAX - 0x2000, 0x10000);
        assert_eq!(s.as_slice(), &[r(u64::MAX - 0x2000, u64::MAX)]);
        s.page_align_inward();
        assert_eq!(s.as_slice(), &[r(u64::MAX - 0x2000 + 1, u64::MAX - 0xfff)]);
    }

    #[test]
    fn overflow_drops_the_smallest() {
        let mut s = RegionSet::new();
        // 200 disjoint regions of growing size.
        for i in 0..200u64 {
            s.insert_base_len(i * 0x100_0000, 0x1000 + i);
        }
        assert_eq!(s.len(), MAX_REGIONS);
        assert!(s.truncated());
        // The survivors are the 128 largest, in order.
        assert_eq!(s.as_slice()[0].start, 72 * 0x100_0000);
        // Splitting a full set also drops the smallest piece: here the lower half.
        let base = 199 * 0x100_0000;
        s.subtract(r(base + 0x800, base + 0x801));
        assert_eq!(s.len(), MAX_REGIONS);
        assert_eq!(s.as_slice()[0].start, 72 * 0x100_0000);
        assert!(!s.contains(base));
        assert!(s.contains(base + 0x801));
    }

    #[test]
    fn find_hole_basics() {
        let s = RegionSet::from_regions([r(0x1000, 0x3000), r(0x10_0000, 0x40_0000)]);
        assert_eq!(find_hole(&s, 0x1000, 0x1000, 0, u64::MAX), Some(0x1000));
        assert_eq!(find_hole(&s, 0x3000, 0x1000, 0, u64::MAX), Some(0x10_0000));
        assert_eq!(
            find_hole(&s, 0x1000, 0x20_0000, 0, u64::MAX),
            Some(0x20_0000)
        );
        assert_eq!(
            find_hole(&s, 0x1000, 0x1000, 0x2800, u64::MAX),
            Some(0x10_0000)
        );
        assert_eq!(find_hole(&s, 0x1000, 0x1000, 0x10_0000, 0x10_0fff), None);
        assert_eq!(find_hole(&s, 0, 0x1000, 0, u64::MAX), None);
        assert_eq!(find_hole(&s, 0x1000, 3, 0, u64::MAX), None);
        assert_eq!(find_hole(&s, u64::MAX, 1, 0, u64::MAX), None);
        let top = RegionSet::from_regions([r(u64::MAX - 0x1000, u64::MAX)]);
        assert_eq!(find_hole(&top, 0x10, 1 << 63, 0, u64::MAX), None);
    }

    /// Bytes of a small address space, as a model.
    const SPACE: u64 = 1 << 16;
    const SPACE_BYTES: usize = 1 << 16;

    fn small_region() -> impl Strategy<Value = Region> {
        (0..SPACE, 0..SPACE / 4).prop_map(|(s, l)| Region::new(s, (s + l).min(SPACE)))
    }

    fn model(regions: &[Region]) -> Vec<bool> {
        let mut m = std::vec![false; SPACE_BYTES];
        for r in regions {
            for b in r.start..r.end {
                m[usize::try_from(b).unwrap()] = true;
            }
        }
        m
    }

    proptest! {
        #[test]
        fn subtract_conserves_and_avoids_reserved(
            usable in proptest::collection::vec(small_region(), 0..12),
            reserved in proptest::collection::vec(small_region(), 0..6),
        ) {
            let set = RegionSet::from_regions(usable.iter().copied());
            let mut free = set.clone();
            for &x in &reserved {
                free.subtract(x);
            }
            // Invariant: sorted, disjoint, non-touching, non-empty.
            for w in free.as_slice().windows(2) {
                prop_assert!(w[0].end < w[1].start);
            }
            for x in free.iter() {
                prop_assert!(!x.is_empty());
                for res in &reserved {
                    prop_assert!(!x.overlaps(res));
                }
            }
            let u = model(&usable);
            let rm = model(&reserved);
            let usable_and_reserved = (0..SPACE_BYTES).filter(|&i| u[i] && rm[i]).count() as u64;
            prop_assert_eq!(set.total_bytes(), u.iter().filter(|&&b| b).count() as u64);
            prop_assert_eq!(set.total_bytes(), free.total_bytes() + usable_and_reserved);

            let mut aligned = free.clone();
            aligned.page_align_inward();
            for x in aligned.iter() {
                prop_assert_eq!(x.start % PAGE_SIZE, 0);
                prop_assert_eq!(x.end % PAGE_SIZE, 0);
                prop_assert!(free.contains_region(x));
            }
        }

        #[test]
        fn find_hole_is_sound_and_lowest(
            usable in proptest::collection::vec(small_region(), 0..8),
            reserved in proptest::collection::vec(small_region(), 0..4),
            size in 1u64..0x3000,
            align_shift in 0u32..14,
            min_addr in 0..SPACE,
            max_len in 0..SPACE,
        ) {
            let align = 1u64 << align_shift;
            let max_addr = min_addr + max_len;
            let mut free = RegionSet::from_regions(usable.iter().copied());
            for &x in &reserved {
                free.subtract(x);
            }
            let got = find_hole(&free, size, align, min_addr, max_addr);
            let fits = |a: u64| {
                a >= min_addr && a + size <= max_addr && free.contains_region(&Region::new(a, a + size))
            };
            let mut expect = None;
            let mut a = 0;
            while a + size <= SPACE {
                if fits(a) {
                    expect = Some(a);
                    break;
                }
                a += align;
            }
            prop_assert_eq!(got, expect);
            if let Some(a) = got {
                prop_assert_eq!(a % align, 0);
                for res in &reserved {
                    prop_assert!(!Region::new(a, a + size).overlaps(res));
                }
            }
        }

        #[test]
        fn arbitrary_entries_never_panic(
            entries in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..300),
            reserved in proptest::collection::vec((any::<u64>(), any::<u64>()), 0..20),
            size in any::<u64>(),
            align in any::<u64>(),
            lo in any::<u64>(),
            hi in any::<u64>(),
        ) {
            let mut s = RegionSet::new();
            for &(b, l) in &entries {
                s.insert_base_len(b, l);
            }
            prop_assert!(s.len() <= MAX_REGIONS);
            for &(b, l) in &reserved {
                let r = Region::from_base_len_clipped(b, l);
                s.subtract(r);
                prop_assert_eq!(s.overlap_bytes(&r), 0);
            }
            s.page_align_inward();
            let _ = s.total_bytes();
            let _ = s.highest_end();
            if let Some(a) = find_hole(&s, size, align, lo, hi) {
                prop_assert!(s.contains_region(&Region::new(a, a + size)));
                prop_assert!(a >= lo && a + size <= hi);
            }
        }
    }
}
