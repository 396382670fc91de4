//! The boot-time machine frame allocator: a bitmap over frames `[0, nframes)`.
//!
//! Storage is a caller-provided `&mut [u64]` holding two bitmaps of one bit per frame:
//!
//! * the *used* map (bit set = the frame cannot be handed out: allocated, reserved,
//!   not RAM, or past the end), and
//! * the *managed* map (bit set = the frame is RAM that this allocator owns, either
//!   free or allocated by it).
//!
//! The second map is what lets [`FrameAllocator::free`] refuse a frame it never handed
//! out (the hypervisor image, a module, an MMIO hole) instead of silently turning it
//! into free memory. Use [`bitmap_words`] to size the storage.
//!
//! Everything starts used and unmanaged. [`FrameAllocator::add_free`] brings usable RAM
//! in, [`FrameAllocator::reserve`] takes ranges back out (image, boot info, modules,
//! the bitmap itself). Frame 0 is never handed out.
//!
//! Single-frame allocation is next-fit from a remembered word index, skipping full
//! words with one compare, so repeated allocations are O(1) amortized. Runs of
//! `2^order` frames are aligned to `2^order`; for `order >= 6` whole words are checked.

use core::fmt;

use super::{Mfn, MfnExt};

/// Largest order [`FrameAllocator::alloc_order`] and [`FrameAllocator::free_order`]
/// accept: `2^18` frames, 1 GiB.
pub const MAX_ORDER: u32 = 18;

/// The order of the next run when a domain's memory is built from large runs (Xen's
/// `alloc_chunk` for dom0): the largest power of two that fits in the `left` pages
/// still wanted, at most `last` (the order that succeeded last: a larger one will not
/// succeed now either) and at most [`MAX_ORDER`]. 0 when nothing is left.
pub const fn chunk_order(left: u64, last: u32) -> u32 {
    if left == 0 {
        return 0;
    }
    let fits = 63 - left.leading_zeros();
    let cap = if last < MAX_ORDER { last } else { MAX_ORDER };
    if fits < cap { fits } else { cap }
}

/// Bits per bitmap word.
const BITS: u64 = u64::BITS as u64;

/// Number of `u64` words of storage a [`FrameAllocator`] over `nframes` frames needs
/// (two bits per frame, rounded up to whole words per map). Saturates at `usize::MAX`,
/// which no slice can satisfy.
pub const fn bitmap_words(nframes: u64) -> usize {
    let total = nframes.div_ceil(BITS).saturating_mul(2);
    if total > usize::MAX as u64 {
        usize::MAX
    } else {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "checked against usize::MAX just above; try_from is not const"
        )]
        let words = total as usize;
        words
    }
}

/// Why the frame allocator refused a request. Nothing changes when one is returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocError {
    /// The storage slice is shorter than [`bitmap_words`] says it must be.
    BitmapTooSmall {
        /// Words needed.
        needed: usize,
        /// Words given.
        given: usize,
    },
    /// The order is above [`MAX_ORDER`].
    OrderTooLarge {
        /// The order asked for.
        order: u32,
    },
    /// The frame is not a multiple of `2^order`.
    Misaligned {
        /// First frame of the run.
        mfn: Mfn,
        /// The run's order.
        order: u32,
    },
    /// The run does not lie inside `[0, nframes)`.
    OutOfRange {
        /// First frame of the run.
        mfn: Mfn,
        /// The run's order.
        order: u32,
    },
    /// The frame is not RAM this allocator manages (reserved, a hole, or frame 0).
    NotManaged {
        /// The first offending frame.
        mfn: Mfn,
    },
    /// The frame is already free.
    DoubleFree {
        /// The first offending frame.
        mfn: Mfn,
    },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::BitmapTooSmall { needed, given } => write!(
                f,
                "frame allocator: bitmap has {given} words, {needed} are needed"
            ),
            AllocError::OrderTooLarge { order } => write!(
                f,
                "frame allocator: order {order} is above the maximum {MAX_ORDER}"
            ),
            AllocError::Misaligned { mfn, order } => write!(
                f,
                "frame allocator: {mfn} is not aligned to 2^{order} frames"
            ),
            AllocError::OutOfRange { mfn, order } => write!(
                f,
                "frame allocator: 2^{order} frames at {mfn} lie outside managed memory"
            ),
            AllocError::NotManaged { mfn } => write!(
                f,
                "frame allocator: {mfn} was never handed out (reserved or not RAM)"
            ),
            AllocError::DoubleFree { mfn } => {
                write!(f, "frame allocator: {mfn} is already free (double free)")
            }
        }
    }
}

/// Iterator over the bitmap words covered by frames `[next, end)`: yields the word
/// index and the mask of the covered bits in that word.
struct Chunks {
    next: u64,
    end: u64,
}

impl Iterator for Chunks {
    type Item = (usize, u64);

    fn next(&mut self) -> Option<(usize, u64)> {
        if self.next >= self.end {
            return None;
        }
        let bit = self.next % BITS;
        let n = (BITS - bit).min(self.end - self.next);
        let mask = if n >= BITS {
            !0
        } else {
            ((1u64 << n) - 1) << bit
        };
        let idx = usize::try_from(self.next / BITS).ok()?;
        // `n <= end - next`, so this cannot overflow.
        self.next += n;
        Some((idx, mask))
    }
}

/// The frame number of bit `bit` of word `word`.
fn frame_of(word: usize, bit: u64) -> Option<u64> {
    u64::try_from(word)
        .ok()?
        .checked_mul(BITS)?
        .checked_add(bit)
}

/// Bitmap allocator of machine frames; see the [module documentation](self).
pub struct FrameAllocator<'a> {
    used: &'a mut [u64],
    managed: &'a mut [u64],
    nframes: u64,
    free: u64,
    managed_count: u64,
    /// Word index where the next search starts (next-fit).
    hint: usize,
}

impl fmt::Debug for FrameAllocator<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameAllocator")
            .field("nframes", &self.nframes)
            .field("free", &self.free)
            .field("managed", &self.managed_count)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

impl<'a> FrameAllocator<'a> {
    /// An allocator over frames `[0, nframes)` using `bitmap` (at least
    /// [`bitmap_words`]`(nframes)` words; extra words are left untouched) as storage.
    /// Every frame starts used and unmanaged: nothing is allocatable until
    /// [`add_free`](Self::add_free) brings RAM in.
    pub fn new(bitmap: &'a mut [u64], nframes: u64) -> Result<Self, AllocError> {
        let needed = bitmap_words(nframes);
        let given = bitmap.len();
        let words = bitmap
            .get_mut(..needed)
            .ok_or(AllocError::BitmapTooSmall { needed, given })?;
        let (used, managed) = words.split_at_mut(needed / 2);
        used.fill(!0);
        managed.fill(0);
        Ok(FrameAllocator {
            used,
            managed,
            nframes,
            free: 0,
            managed_count: 0,
            hint: 0,
        })
    }

    /// Marks frames `[start, end)` as usable RAM, free for allocation. The range is
    /// clamped to `[1, nframes)` (frame 0 is never handed out). Frames already managed,
    /// free or allocated, are left as they are, so this is safe to call at any time
    /// (for example to give a module's memory back after dom0 is built).
    /// Returns how many frames became newly available.
    pub fn add_free(&mut self, start: Mfn, end: Mfn) -> u64 {
        let s = start.0.max(1);
        let e = end.0.min(self.nframes);
        let mut added = 0u64;
        for (i, mask) in (Chunks { next: s, end: e }) {
            let (Some(u), Some(m)) = (self.used.get_mut(i), self.managed.get_mut(i)) else {
                break;
            };
            let new = mask & !*m;
            *m |= new;
            *u &= !new;
            added += u64::from(new.count_ones());
        }
        self.free = self.free.saturating_add(added);
        self.managed_count = self.managed_count.saturating_add(added);
        added
    }

    /// Withdraws frames `[start, end)` (clamped to `[0, nframes)`) from the allocator:
    /// they become used and unmanaged, and will never be handed out. Meant for the
    /// hypervisor image, boot information, modules and the bitmap itself, before
    /// the first allocation. A frame that is currently allocated stays used, and a
    /// later [`free`](Self::free) of it fails with [`AllocError::NotManaged`].
    /// Returns how many managed frames were withdrawn.
    pub fn reserve(&mut self, start: Mfn, end: Mfn) -> u64 {
        let e = end.0.min(self.nframes);
        let mut withdrawn = 0u64;
        let mut free_lost = 0u64;
        for (i, mask) in (Chunks {
            next: start.0,
            end: e,
        }) {
            let (Some(u), Some(m)) = (self.used.get_mut(i), self.managed.get_mut(i)) else {
                break;
            };
            let was_managed = mask & *m;
            let was_free = was_managed & !*u;
            *u |= mask;
            *m &= !mask;
            withdrawn += u64::from(was_managed.count_ones());
            free_lost += u64::from(was_free.count_ones());
        }
        self.free = self.free.saturating_sub(free_lost);
        self.managed_count = self.managed_count.saturating_sub(withdrawn);
        withdrawn
    }

    /// Allocates one frame, or `None` if no frame is free.
    pub fn alloc(&mut self) -> Option<Mfn> {
        if self.free == 0 {
            return None;
        }
        let n = self.used.len();
        let start = if self.hint < n { self.hint } else { 0 };
        for i in (start..n).chain(0..start) {
            let Some(w) = self.used.get_mut(i) else {
                continue;
            };
            if *w == !0 {
                continue;
            }
            let bit = (!*w).trailing_zeros();
            let mfn = frame_of(i, u64::from(bit))?;
            *w |= 1u64 << bit;
            self.free = self.free.saturating_sub(1);
            self.hint = i;
            return Some(Mfn(mfn));
        }
        None
    }

    /// Allocates `2^order` contiguous frames aligned to `2^order` and returns the
    /// first; `None` if `order > MAX_ORDER` or no such run is free.
    pub fn alloc_order(&mut self, order: u32) -> Option<Mfn> {
        if order > MAX_ORDER {
            return None;
        }
        if order == 0 {
            return self.alloc();
        }
        if self.free < (1u64 << order) {
            return None;
        }
        if order < 6 {
            self.alloc_in_word(order)
        } else {
            self.alloc_whole_words(order)
        }
    }

    /// Allocates `2^order` contiguous frames aligned to `2^order`, all below frame
    /// `limit` (an address-width limit: `XENMEMF_address_bits`, a device's DMA mask),
    /// and returns the first; `None` if `order > MAX_ORDER` or no such run is free.
    /// The search goes from the limit downward, as Xen's allocator takes the highest
    /// zone that fits, so the lowest memory stays for the narrowest limits.
    pub fn alloc_order_below(&mut self, order: u32, limit: Mfn) -> Option<Mfn> {
        if order > MAX_ORDER {
            return None;
        }
        let n = 1u64 << order;
        if self.free < n {
            return None;
        }
        let lim = limit.0.min(self.nframes);
        let found = if order < 6 {
            let run = 1u32 << order;
            let mask = (1u64 << run) - 1;
            let words = usize::try_from(lim.div_ceil(BITS))
                .ok()?
                .min(self.used.len());
            let mut hit = None;
            'words: for i in (0..words).rev() {
                let w = *self.used.get(i)?;
                if (!w).count_ones() < run {
                    continue;
                }
                let mut b = u64::BITS - run;
                loop {
                    let f = frame_of(i, u64::from(b))?;
                    if f + n <= lim && (w >> b) & mask == 0 {
                        hit = Some((i, mask << b, f));
                        break 'words;
                    }
                    if b == 0 {
                        break;
                    }
                    b -= run;
                }
            }
            hit.map(|(i, m, f)| (i, 1usize, m, f))
        } else {
            let per_group = 1usize << (order - 6);
            let groups = usize::try_from(lim / n).ok()?;
            (0..groups).rev().find_map(|g| {
                let lo = g * per_group;
                let ws = self.used.get(lo..lo + per_group)?;
                ws.iter()
                    .all(|&w| w == 0)
                    .then(|| frame_of(lo, 0).map(|f| (lo, per_group, !0u64, f)))
                    .flatten()
            })
        };
        let (lo, words, mask, first) = found?;
        for w in self.used.get_mut(lo..lo + words)? {
            *w |= mask;
        }
        self.free = self.free.saturating_sub(n);
        Some(Mfn(first))
    }

    /// Runs of 2..=32 frames: aligned runs never straddle a word.
    fn alloc_in_word(&mut self, order: u32) -> Option<Mfn> {
        let run = 1u32 << order;
        let mask = (1u64 << run) - 1;
        let n = self.used.len();
        let start = if self.hint < n { self.hint } else { 0 };
        for i in (start..n).chain(0..start) {
            let Some(w) = self.used.get_mut(i) else {
                continue;
            };
            if (!*w).count_ones() < run {
                continue;
            }
            let mut b = 0u32;
            while b < u64::BITS {
                if (*w >> b) & mask == 0 {
                    let mfn = frame_of(i, u64::from(b))?;
                    *w |= mask << b;
                    self.free = self.free.saturating_sub(u64::from(run));
                    self.hint = i;
                    return Some(Mfn(mfn));
                }
                b += run;
            }
        }
        None
    }

    /// Runs of 64 frames or more: aligned groups of whole, entirely free words.
    fn alloc_whole_words(&mut self, order: u32) -> Option<Mfn> {
        let per_group = 1usize << (order - 6);
        let n = self.used.len();
        let groups = n / per_group;
        let start = if self.hint < n {
            (self.hint / per_group).min(groups)
        } else {
            0
        };
        for g in (start..groups).chain(0..start) {
            let lo = g * per_group;
            let Some(ws) = self.used.get_mut(lo..lo + per_group) else {
                continue;
            };
            if ws.iter().all(|&w| w == 0) {
                let mfn = frame_of(lo, 0)?;
                ws.fill(!0);
                self.free = self.free.saturating_sub(1u64 << order);
                self.hint = lo;
                return Some(Mfn(mfn));
            }
        }
        None
    }

    /// Frees one frame previously returned by [`alloc`](Self::alloc) (or part of a run).
    pub fn free(&mut self, mfn: Mfn) -> Result<(), AllocError> {
        self.free_order(mfn, 0)
    }

    /// Frees `2^order` frames starting at `mfn`. Refuses, changing nothing, a run that
    /// is misaligned, outside `[0, nframes)`, contains a frame the allocator does not
    /// manage, or contains a frame that is already free.
    pub fn free_order(&mut self, mfn: Mfn, order: u32) -> Result<(), AllocError> {
        if order > MAX_ORDER {
            return Err(AllocError::OrderTooLarge { order });
        }
        if !mfn.is_aligned(order) {
            return Err(AllocError::Misaligned { mfn, order });
        }
        let count = 1u64 << order;
        let end = mfn
            .0
            .checked_add(count)
            .filter(|&e| e <= self.nframes)
            .ok_or(AllocError::OutOfRange { mfn, order })?;
        // Decode: check every frame first, change nothing.
        for (i, mask) in (Chunks { next: mfn.0, end }) {
            let (Some(&u), Some(&m)) = (self.used.get(i), self.managed.get(i)) else {
                return Err(AllocError::OutOfRange { mfn, order });
            };
            let unmanaged = mask & !m;
            if unmanaged != 0 {
                let bad = frame_of(i, u64::from(unmanaged.trailing_zeros())).unwrap_or(mfn.0);
                return Err(AllocError::NotManaged { mfn: Mfn(bad) });
            }
            let already_free = mask & !u;
            if already_free != 0 {
                let bad = frame_of(i, u64::from(already_free.trailing_zeros())).unwrap_or(mfn.0);
                return Err(AllocError::DoubleFree { mfn: Mfn(bad) });
            }
        }
        // Apply: cannot fail.
        for (i, mask) in (Chunks { next: mfn.0, end }) {
            if let Some(u) = self.used.get_mut(i) {
                *u &= !mask;
            }
        }
        self.free = self.free.saturating_add(count);
        Ok(())
    }

    /// Number of frames currently free.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Number of frames the allocator manages: added as usable RAM and not reserved
    /// since. Equals free plus allocated frames.
    pub fn managed_frames(&self) -> u64 {
        self.managed_count
    }

    /// Number of managed frames currently allocated.
    pub fn allocated_frames(&self) -> u64 {
        self.managed_count.saturating_sub(self.free)
    }

    /// Size of the frame range, as given to [`new`](Self::new).
    pub fn nframes(&self) -> u64 {
        self.nframes
    }

    /// Whether `mfn` is free (false for frames out of range).
    pub fn is_free(&self, mfn: Mfn) -> bool {
        self.bit(self.used, mfn) == Some(false)
    }

    /// Whether `mfn` is managed RAM, free or allocated (false for frames out of range).
    pub fn is_managed(&self, mfn: Mfn) -> bool {
        self.bit(self.managed, mfn) == Some(true)
    }

    fn bit(&self, map: &[u64], mfn: Mfn) -> Option<bool> {
        if mfn.0 >= self.nframes {
            return None;
        }
        let w = map.get(usize::try_from(mfn.0 / BITS).ok()?)?;
        Some(w & (1u64 << (mfn.0 % BITS)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    fn storage(nframes: u64) -> Vec<u64> {
        vec![0xdead_beef; bitmap_words(nframes)]
    }

    #[test]
    fn runs_below_a_limit_come_from_the_top_of_the_range() {
        let mut s = storage(4096);
        let mut a = FrameAllocator::new(&mut s, 4096).unwrap();
        a.add_free(Mfn(0), Mfn(4096));
        assert_eq!(a.alloc_order_below(0, Mfn(100)), Some(Mfn(99)));
        assert_eq!(
            a.alloc_order_below(2, Mfn(100)),
            Some(Mfn(92)),
            "96..100 holds 99"
        );
        assert_eq!(a.alloc_order_below(2, Mfn(100)), Some(Mfn(88)));
        assert_eq!(a.alloc_order_below(6, Mfn(200)), Some(Mfn(128)));
        // 64..128 holds 88..96 and 99, 0..64 frame 0.
        assert_eq!(a.alloc_order_below(6, Mfn(200)), None);
        assert_eq!(a.alloc_order_below(7, Mfn(1 << 20)), Some(Mfn(3968)));
        assert_eq!(a.alloc_order_below(MAX_ORDER + 1, Mfn(1 << 20)), None);
        // Frame 0 is never handed out; a limit of 1 leaves nothing.
        assert_eq!(a.alloc_order_below(0, Mfn(1)), None);
        for _ in 1..64 {
            let f = a.alloc_order_below(0, Mfn(64)).unwrap();
            assert!(f.0 < 64 && f.0 != 0);
        }
        assert_eq!(a.alloc_order_below(0, Mfn(64)), None);
        assert_eq!(a.free_frames(), 4096 - 1 - 63 - 1 - 8 - 64 - 128);
        a.free_order(Mfn(128), 6).unwrap();
        assert_eq!(a.alloc_order_below(6, Mfn(192)), Some(Mfn(128)));
    }

    #[test]
    fn chunk_orders_follow_xens_alloc_chunk() {
        assert_eq!(chunk_order(0, MAX_ORDER), 0);
        assert_eq!(chunk_order(1, MAX_ORDER), 0);
        assert_eq!(chunk_order(32768, MAX_ORDER), 15);
        assert_eq!(chunk_order(30351, MAX_ORDER), 14);
        assert_eq!(chunk_order(30351 - 16384, 14), 13);
        assert_eq!(chunk_order(1 << 30, MAX_ORDER), MAX_ORDER);
        assert_eq!(chunk_order(1 << 30, 40), MAX_ORDER);
        assert_eq!(chunk_order(1000, 3), 3);
        // A dom0 of n pages is covered by runs of these orders, largest first.
        let (mut left, mut last, mut runs) = (30351u64, MAX_ORDER, 0);
        while left > 0 {
            last = chunk_order(left, last);
            left -= 1 << last;
            runs += 1;
        }
        assert_eq!(runs, 30351u64.count_ones());
    }

    #[test]
    fn sizes() {
        assert_eq!(bitmap_words(0), 0);
        assert_eq!(bitmap_words(1), 2);
        assert_eq!(bitmap_words(64), 2);
        assert_eq!(bitmap_words(65), 4);
        assert_eq!(bitmap_words(u64::MAX), 1 << 59);
    }

    #[test]
    fn too_small_bitmap_is_refused() {
        let mut s = [0u64; 3];
        assert_eq!(
            FrameAllocator::new(&mut s, 100).err(),
            Some(AllocError::BitmapTooSmall {
                needed: 4,
                given: 3
            })
        );
    }

    #[test]
    fn starts_empty_and_never_hands_out_frame_zero() {
        let mut s = storage(128);
        let mut a = FrameAllocator::new(&mut s, 128).unwrap();
        assert_eq!(a.alloc(), None);
        assert_eq!(a.add_free(Mfn(0), Mfn(4)), 3);
        assert_eq!(a.free_frames(), 3);
        let got: Vec<_> = (0..3).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(got, [Mfn(1), Mfn(2), Mfn(3)]);
        assert_eq!(a.alloc(), None);
        assert_eq!(a.free(Mfn(0)), Err(AllocError::NotManaged { mfn: Mfn(0) }));
    }

    #[test]
    fn add_free_clamps_and_is_idempotent() {
        let mut s = storage(100);
        let mut a = FrameAllocator::new(&mut s, 100).unwrap();
        assert_eq!(a.add_free(Mfn(50), Mfn(u64::MAX)), 50);
        assert_eq!(a.add_free(Mfn(40), Mfn(60)), 10);
        assert_eq!(a.add_free(Mfn(200), Mfn(100)), 0);
        assert_eq!(a.free_frames(), 60);
        assert_eq!(a.managed_frames(), 60);
        assert!(a.is_free(Mfn(99)));
        assert!(!a.is_free(Mfn(100)));
        assert!(!a.is_managed(Mfn(100)));
    }

    #[test]
    fn reserve_withdraws_and_blocks_free() {
        let mut s = storage(256);
        let mut a = FrameAllocator::new(&mut s, 256).unwrap();
        a.add_free(Mfn(0), Mfn(256));
        assert_eq!(a.reserve(Mfn(10), Mfn(20)), 10);
        assert_eq!(a.free_frames(), 245);
        assert_eq!(a.managed_frames(), 245);
        assert_eq!(
            a.free(Mfn(15)),
            Err(AllocError::NotManaged { mfn: Mfn(15) })
        );
        // Reserving an allocated frame: its later free is refused.
        let f = a.alloc().unwrap();
        assert_eq!(a.reserve(f, Mfn(f.0 + 1)), 1);
        assert_eq!(a.free_frames(), 244);
        assert_eq!(a.allocated_frames(), 0);
        assert_eq!(a.free(f), Err(AllocError::NotManaged { mfn: f }));
    }

    #[test]
    fn free_errors_change_nothing() {
        let mut s = storage(1024);
        let mut a = FrameAllocator::new(&mut s, 1024).unwrap();
        a.add_free(Mfn(0), Mfn(1024));
        let r = a.alloc_order(4).unwrap();
        assert_eq!(r.0 % 16, 0);
        let before = a.free_frames();
        assert_eq!(
            a.free_order(Mfn(r.0 + 1), 4),
            Err(AllocError::Misaligned {
                mfn: Mfn(r.0 + 1),
                order: 4
            })
        );
        assert_eq!(
            a.free_order(Mfn(1024), 0),
            Err(AllocError::OutOfRange {
                mfn: Mfn(1024),
                order: 0
            })
        );
        assert_eq!(
            a.free_order(Mfn(0), 19),
            Err(AllocError::OrderTooLarge { order: 19 })
        );
        // A run that is only partly allocated, and one that includes frame 0.
        assert_eq!(
            a.free_order(Mfn(r.0 & !31), 5),
            Err(AllocError::NotManaged { mfn: Mfn(0) })
        );
        let big = a.alloc_order(6).unwrap();
        a.free_order(big, 0).unwrap();
        assert_eq!(
            a.free_order(big, 6),
            Err(AllocError::DoubleFree { mfn: big })
        );
        a.free_order(Mfn(big.0 + 1), 0).unwrap();
        a.free_order(Mfn(big.0 + 2), 1).unwrap();
        a.free_order(Mfn(big.0 + 4), 2).unwrap();
        a.free_order(Mfn(big.0 + 8), 3).unwrap();
        a.free_order(Mfn(big.0 + 16), 4).unwrap();
        a.free_order(Mfn(big.0 + 32), 5).unwrap();
        assert_eq!(a.free_frames(), before);
        a.free_order(r, 4).unwrap();
        assert_eq!(a.free_order(r, 4), Err(AllocError::DoubleFree { mfn: r }));
        assert_eq!(a.free_frames(), before + 16);
    }

    #[test]
    fn big_orders_use_whole_words() {
        let nframes = 1u64 << 12;
        let mut s = storage(nframes);
        let mut a = FrameAllocator::new(&mut s, nframes).unwrap();
        a.add_free(Mfn(0), Mfn(nframes));
        // Frame 0 is never free, so the first 2^10 run is at 1024.
        let r = a.alloc_order(10).unwrap();
        assert_eq!(r, Mfn(1024));
        assert_eq!(a.free_frames(), nframes - 1 - 1024);
        assert_eq!(a.alloc_order(12), None);
        assert_eq!(a.alloc_order(MAX_ORDER + 1), None);
        a.free_order(r, 10).unwrap();
        assert_eq!(a.free_frames(), nframes - 1);
    }

    #[test]
    fn next_fit_skips_full_words() {
        let nframes = 64 * 64;
        let mut s = storage(nframes);
        let mut a = FrameAllocator::new(&mut s, nframes).unwrap();
        a.add_free(Mfn(0), Mfn(nframes));
        let mut last = 0;
        for _ in 0..(nframes - 1) {
            let f = a.alloc().unwrap();
            assert!(f.0 > last);
            last = f.0;
        }
        assert_eq!(a.alloc(), None);
        a.free(Mfn(7)).unwrap();
        assert_eq!(a.alloc(), Some(Mfn(7)));
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AllocError::DoubleFree { mfn: Mfn(0x42) }.to_string(),
            "frame allocator: mfn 0x42 is already free (double free)"
        );
    }

    #[derive(Clone, Debug)]
    enum Op {
        Alloc,
        AllocOrder(u32),
        Free(usize),
        FreeFrameOfRun(usize),
        Refree(usize),
        Bogus(u64, u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => Just(Op::Alloc),
            3 => (0u32..=8).prop_map(Op::AllocOrder),
            1 => prop_oneof![Just(10u32), Just(18), Just(19), Just(40)].prop_map(Op::AllocOrder),
            4 => any::<usize>().prop_map(Op::Free),
            1 => any::<usize>().prop_map(Op::FreeFrameOfRun),
            1 => any::<usize>().prop_map(Op::Refree),
            1 => (any::<u64>(), 0u32..24).prop_map(|(m, o)| Op::Bogus(m, o)),
        ]
    }

    /// What the model says a free of `2^order` frames at `mfn` must do.
    fn model_free_ok(
        nframes: u64,
        managed: &BTreeSet<u64>,
        free: &BTreeSet<u64>,
        mfn: u64,
        order: u32,
    ) -> bool {
        if order > MAX_ORDER || !Mfn(mfn).is_aligned(order) {
            return false;
        }
        let Some(end) = mfn.checked_add(1 << order) else {
            return false;
        };
        end <= nframes && (mfn..end).all(|f| managed.contains(&f) && !free.contains(&f))
    }

    fn model_has_run(free: &BTreeSet<u64>, nframes: u64, order: u32) -> bool {
        let n = 1u64 << order;
        let mut start = 0;
        while start + n <= nframes {
            if (start..start + n).all(|f| free.contains(&f)) {
                return true;
            }
            start += n;
        }
        false
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn behaves_like_the_model(
            nframes in 1u64..2500,
            usable in proptest::collection::vec((0u64..2600, 0u64..1200), 0..6),
            reserved in proptest::collection::vec((0u64..2600, 0u64..300), 0..6),
            ops in proptest::collection::vec(op(), 0..250),
        ) {
            let mut s = storage(nframes);
            let mut a = FrameAllocator::new(&mut s, nframes).unwrap();
            let mut managed = BTreeSet::new();
            for &(st, len) in &usable {
                a.add_free(Mfn(st), Mfn(st + len));
                managed.extend((st.max(1)..(st + len).min(nframes)).collect::<Vec<_>>());
            }
            let mut reserved_set = BTreeSet::new();
            for &(st, len) in &reserved {
                a.reserve(Mfn(st), Mfn(st + len));
                for f in st..st + len {
                    managed.remove(&f);
                    reserved_set.insert(f);
                }
            }
            let mut free: BTreeSet<u64> = managed.clone();
            prop_assert_eq!(a.free_frames(), free.len() as u64);
            prop_assert_eq!(a.managed_frames(), managed.len() as u64);
            let start_free = a.free_frames();

            let mut live: Vec<(u64, u32)> = Vec::new();
            let mut freed: Vec<(u64, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc | Op::AllocOrder(_) => {
                        let order = if let Op::AllocOrder(o) = op { o } else { 0 };
                        let got = if order == 0 && matches!(op, Op::Alloc) {
                            a.alloc()
                        } else {
                            a.alloc_order(order)
                        };
                        match got {
                            Some(m) => {
                                prop_assert!(order <= MAX_ORDER);
                                prop_assert!(m.is_aligned(order));
                                prop_assert_ne!(m.0, 0);
                                for f in m.0..m.0 + (1 << order) {
                                    prop_assert!(free.remove(&f), "frame {} not free in model", f);
                                    prop_assert!(!reserved_set.contains(&f));
                                }
                                live.push((m.0, order));
                            }
                            None => {
                                prop_assert!(
                                    order > MAX_ORDER || !model_has_run(&free, nframes, order),
                                    "allocator failed but model has a run of order {}", order
                                );
                            }
                        }
                    }
                    Op::Free(i) if !live.is_empty() => {
                        let (m, o) = live.swap_remove(i % live.len());
                        prop_assert_eq!(a.free_order(Mfn(m), o), Ok(()));
                        free.extend(m..m + (1 << o));
                        freed.push((m, o));
                    }
                    Op::FreeFrameOfRun(i) if !live.is_empty() => {
                        // Free a run frame by frame, in reverse.
                        let (m, o) = live.swap_remove(i % live.len());
                        for f in (m..m + (1 << o)).rev() {
                            prop_assert_eq!(a.free(Mfn(f)), Ok(()));
                            free.insert(f);
                        }
                        freed.push((m, o));
                    }
                    Op::Refree(i) if !freed.is_empty() => {
                        let (m, o) = freed[i % freed.len()];
                        let expect = model_free_ok(nframes, &managed, &free, m, o);
                        let before = a.free_frames();
                        let r = a.free_order(Mfn(m), o);
                        prop_assert_eq!(r.is_ok(), expect);
                        if r.is_ok() {
                            // The frames had been reallocated by someone else: the
                            // allocator cannot know; keep the model in sync.
                            free.extend(m..m + (1 << o));
                            live.retain(|&(lm, lo)| lm + (1 << lo) <= m || m + (1 << o) <= lm);
                        } else {
                            prop_assert_eq!(a.free_frames(), before);
                        }
                    }
                    Op::Bogus(m, o) => {
                        let m = m % (nframes + 8);
                        let expect = model_free_ok(nframes, &managed, &free, m, o);
                        let before = a.free_frames();
                        let r = a.free_order(Mfn(m), o);
                        prop_assert_eq!(r.is_ok(), expect);
                        if r.is_ok() {
                            free.extend(m..m + (1 << o));
                            live.retain(|&(lm, lo)| lm + (1 << lo) <= m || m + (1 << o) <= lm);
                        } else {
                            prop_assert_eq!(a.free_frames(), before);
                        }
                    }
                    _ => {}
                }
                prop_assert_eq!(a.free_frames(), free.len() as u64);
                prop_assert_eq!(a.managed_frames(), managed.len() as u64);
            }
            for f in 0..nframes.min(3000) {
                prop_assert_eq!(a.is_free(Mfn(f)), free.contains(&f));
                prop_assert_eq!(a.is_managed(Mfn(f)), managed.contains(&f));
            }
            for (m, o) in live.drain(..) {
                prop_assert_eq!(a.free_order(Mfn(m), o), Ok(()));
                free.extend(m..m + (1 << o));
            }
            // Frames left allocated by partial bogus frees of a run.
            for &f in managed.difference(&free.clone()) {
                prop_assert_eq!(a.free(Mfn(f)), Ok(()));
                free.insert(f);
            }
            prop_assert_eq!(a.free_frames(), start_free);
        }
    }
}
