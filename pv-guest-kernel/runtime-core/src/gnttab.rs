//! The pure logic of the runtime's grant API: which grant references are
//! free, and how a v1 grant entry's flags are built and revoked.
//!
//! A domain's grant table holds 512 v1 entries per frame; entries 0..8 are
//! the toolstack's (`GNTTAB_NR_RESERVED_ENTRIES`: 0 the console ring, 1 the
//! XenStore ring) and are never handed out. [`RefAllocator`] hands out the
//! others, round-robin from just after the last one it gave, so a reference
//! that was just ended is the last to be reused (a late access by the old
//! peer then meets an invalid entry, not a new grant).
//!
//! Entry protocol (`grant_table.h`, Linux `drivers/xen/grant-table.c`): the
//! granter writes `domid` and `frame`, a write barrier, then `flags`
//! ([`access_flags`]). To end access it compare-and-swaps `flags` to 0, but
//! only while the hypervisor's `GTF_reading`/`GTF_writing` are clear
//! ([`revoke`]); otherwise the grantee still has the frame mapped or is
//! copying it.

use core::fmt;

use hypercall_abi::gnttab::{GNTTAB_NR_RESERVED_ENTRIES, GRANT_ENTRIES_V1_PER_FRAME, GtfFlags};

/// The flags word that grants access, read-only or writable
/// (`GTF_permit_access`, plus `GTF_readonly`).
pub const fn access_flags(readonly: bool) -> u16 {
    let base = GtfFlags::PERMIT_ACCESS.bits();
    if readonly {
        base | GtfFlags::READONLY.bits()
    } else {
        base
    }
}

/// What ending access to an entry whose flags word reads `flags` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Revoke {
    /// The hypervisor has the frame pinned (`GTF_reading` or `GTF_writing`):
    /// leave the entry alone and try again later.
    Busy,
    /// Compare-and-swap `flags` to 0; if the word changed meanwhile, read it
    /// again and ask again.
    Clear,
}

/// The next step of ending access, given the current flags word.
pub const fn revoke(flags: u16) -> Revoke {
    if flags & (GtfFlags::READING.bits() | GtfFlags::WRITING.bits()) != 0 {
        Revoke::Busy
    } else {
        Revoke::Clear
    }
}

/// v1 entries in `frames` grant-table frames.
pub const fn entries_for(frames: u32) -> u32 {
    #[allow(clippy::cast_possible_truncation)] // 512
    const PER_FRAME: u32 = GRANT_ENTRIES_V1_PER_FRAME as u32;
    frames.saturating_mul(PER_FRAME)
}

/// Why [`RefAllocator::free`] refused a reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefError {
    /// One of the toolstack's reserved entries (0..8).
    Reserved(u32),
    /// Beyond the table.
    OutOfRange(u32),
    /// Not handed out (freed twice, or never allocated).
    NotAllocated(u32),
}

impl fmt::Display for RefError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefError::Reserved(r) => write!(f, "grant ref {r} is reserved for the toolstack"),
            RefError::OutOfRange(r) => write!(f, "grant ref {r} is beyond the table"),
            RefError::NotAllocated(r) => write!(f, "grant ref {r} is not allocated"),
        }
    }
}

/// Free grant references of a table of up to `WORDS * 64` entries, as a
/// bitmap (a set bit is an allocated entry). The reserved entries 0..8 are
/// never handed out.
#[derive(Clone, Debug)]
pub struct RefAllocator<const WORDS: usize> {
    used: [u64; WORDS],
    /// Entries managed (the table's size, capped at `WORDS * 64`).
    limit: u32,
    /// Where the next search starts.
    cursor: u32,
    /// Allocated entries (reserved ones not counted).
    in_use: u32,
}

impl<const WORDS: usize> Default for RefAllocator<WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const WORDS: usize> RefAllocator<WORDS> {
    /// Most entries this allocator can manage.
    #[allow(clippy::cast_possible_truncation)] // tables of at most 2^32 entries
    pub const CAPACITY: u32 = (WORDS * 64) as u32;

    /// An allocator of an empty table.
    pub const fn new() -> Self {
        RefAllocator {
            used: [0; WORDS],
            limit: 0,
            cursor: GNTTAB_NR_RESERVED_ENTRIES,
            in_use: 0,
        }
    }

    /// Manage `entries` entries (a table that grew); capped at
    /// [`Self::CAPACITY`]. Shrinking is ignored: allocated references stay
    /// valid.
    pub fn grow(&mut self, entries: u32) {
        self.limit = self.limit.max(entries.min(Self::CAPACITY));
    }

    /// Entries managed.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// References that can still be handed out.
    pub fn available(&self) -> u32 {
        self.limit
            .saturating_sub(GNTTAB_NR_RESERVED_ENTRIES)
            .saturating_sub(self.in_use)
    }

    /// References handed out and not freed.
    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    fn bit(&self, r: u32) -> bool {
        self.used
            .get((r / 64) as usize)
            .is_some_and(|w| w & (1 << (r % 64)) != 0)
    }

    fn set(&mut self, r: u32, on: bool) {
        if let Some(w) = self.used.get_mut((r / 64) as usize) {
            if on {
                *w |= 1 << (r % 64);
            } else {
                *w &= !(1 << (r % 64));
            }
        }
    }

    /// A free reference, or `None` when every one is taken.
    pub fn alloc(&mut self) -> Option<u32> {
        if self.available() == 0 {
            return None;
        }
        let span = self.limit - GNTTAB_NR_RESERVED_ENTRIES;
        let start = self
            .cursor
            .clamp(GNTTAB_NR_RESERVED_ENTRIES, self.limit - 1);
        for i in 0..span {
            let r = GNTTAB_NR_RESERVED_ENTRIES + (start - GNTTAB_NR_RESERVED_ENTRIES + i) % span;
            if !self.bit(r) {
                self.set(r, true);
                self.in_use += 1;
                self.cursor = r + 1;
                if self.cursor >= self.limit {
                    self.cursor = GNTTAB_NR_RESERVED_ENTRIES;
                }
                return Some(r);
            }
        }
        None
    }

    /// Give back `r`.
    pub fn free(&mut self, r: u32) -> Result<(), RefError> {
        if r < GNTTAB_NR_RESERVED_ENTRIES {
            return Err(RefError::Reserved(r));
        }
        if r >= self.limit {
            return Err(RefError::OutOfRange(r));
        }
        if !self.bit(r) {
            return Err(RefError::NotAllocated(r));
        }
        self.set(r, false);
        self.in_use -= 1;
        Ok(())
    }

    /// Whether `r` is handed out.
    pub fn is_allocated(&self, r: u32) -> bool {
        r >= GNTTAB_NR_RESERVED_ENTRIES && r < self.limit && self.bit(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    #[test]
    fn flags_and_revoke() {
        assert_eq!(access_flags(false), 1);
        assert_eq!(access_flags(true), 1 | 4);
        assert_eq!(revoke(1), Revoke::Clear);
        assert_eq!(revoke(1 | 4), Revoke::Clear);
        assert_eq!(revoke(1 | 8), Revoke::Busy);
        assert_eq!(revoke(1 | 16), Revoke::Busy);
        assert_eq!(revoke(0), Revoke::Clear);
        assert_eq!(entries_for(1), 512);
        assert_eq!(entries_for(u32::MAX), u32::MAX);
    }

    #[test]
    fn empty_table_gives_nothing() {
        let mut a = RefAllocator::<8>::new();
        assert_eq!(a.alloc(), None);
        a.grow(8);
        assert_eq!(a.available(), 0);
        assert_eq!(a.alloc(), None);
    }

    #[test]
    fn skips_reserved_and_hands_out_every_other_ref_once() {
        let mut a = RefAllocator::<8>::new();
        a.grow(512);
        let mut seen = BTreeSet::new();
        while let Some(r) = a.alloc() {
            assert!((8..512).contains(&r), "{r}");
            assert!(seen.insert(r), "{r} twice");
        }
        assert_eq!(seen.len(), 504);
        assert_eq!(a.in_use(), 504);
        assert_eq!(a.available(), 0);
    }

    #[test]
    fn free_checks_and_round_robin_reuse() {
        let mut a = RefAllocator::<8>::new();
        a.grow(64);
        assert_eq!(a.alloc(), Some(8));
        assert_eq!(a.alloc(), Some(9));
        assert_eq!(a.free(8), Ok(()));
        assert_eq!(a.free(8), Err(RefError::NotAllocated(8)));
        assert_eq!(a.free(3), Err(RefError::Reserved(3)));
        assert_eq!(a.free(64), Err(RefError::OutOfRange(64)));
        // 8 was freed last: the next ones come after 9 first.
        assert_eq!(a.alloc(), Some(10));
        let rest: Vec<u32> = core::iter::from_fn(|| a.alloc()).collect();
        assert_eq!(rest.last(), Some(&8), "the freed ref comes back last");
        assert!(a.is_allocated(8) && !a.is_allocated(2));
    }

    #[test]
    fn grow_is_capped_and_never_shrinks() {
        let mut a = RefAllocator::<2>::new();
        a.grow(4096);
        assert_eq!(a.limit(), 128);
        a.grow(16);
        assert_eq!(a.limit(), 128);
        assert_eq!(a.available(), 120);
    }

    #[test]
    fn random_alloc_free_keeps_counts() {
        // A small deterministic generator: no dependency needed.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut a = RefAllocator::<4>::new();
        a.grow(200);
        let mut held = BTreeSet::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 3 != 0 {
                if let Some(r) = a.alloc() {
                    assert!((8..200).contains(&r));
                    assert!(held.insert(r));
                } else {
                    assert_eq!(held.len(), 192);
                }
            } else if let Some(&r) = held.iter().nth((x >> 8) as usize % held.len().max(1)) {
                held.remove(&r);
                assert_eq!(a.free(r), Ok(()));
            }
            assert_eq!(a.in_use() as usize, held.len());
        }
    }
}
