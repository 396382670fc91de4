//! Page-table entries as a 64-bit PV guest writes them.
//!
//! PV guests use direct paging: entries hold **machine** addresses. The
//! guest writes entries only through `mmu_update`, `update_va_mapping` or
//! `mmuext_op`; the hypervisor validates each one and adjusts a few bits
//! (U on present entries, [`PteFlags::GUEST_KERNEL`] on kernel-only L1
//! entries). Entries carrying [`PteFlags::GNTTAB`] are created only by
//! grant mapping.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::Mfn;

bitflags! {
    /// Page-table entry flag bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// Present (bit 0).
        const PRESENT = 1 << 0;
        /// Writable (bit 1).
        const RW = 1 << 1;
        /// User accessible (bit 2).
        const USER = 1 << 2;
        /// Write-through (bit 3).
        const PWT = 1 << 3;
        /// Cache disable (bit 4).
        const PCD = 1 << 4;
        /// Accessed (bit 5).
        const ACCESSED = 1 << 5;
        /// Dirty (bit 6).
        const DIRTY = 1 << 6;
        /// PAT in an L1 entry; PSE (large page, refused for PV) in L2/L3.
        const PAT = 1 << 7;
        /// Global (bit 8).
        const GLOBAL = 1 << 8;
        /// Available to software (bit 9).
        const AVAIL0 = 1 << 9;
        /// Available to software (bit 10).
        const AVAIL1 = 1 << 10;
        /// Available to software (bit 11).
        const AVAIL2 = 1 << 11;
        /// Hypervisor marker for a kernel-only L1 mapping (bit 52,
        /// `_PAGE_GUEST_KERNEL`).
        const GUEST_KERNEL = 1 << 52;
        /// Reserved to the hypervisor for grant mappings (bit 62,
        /// `_PAGE_GNTTAB`).
        const GNTTAB = 1 << 62;
        /// No execute (bit 63).
        const NX = 1 << 63;
    }
}

impl PteFlags {
    /// Large page in an L2/L3 entry (same bit as [`PteFlags::PAT`]).
    pub const PSE: PteFlags = PteFlags::PAT;
    /// The software-available bits 11:9.
    pub const AVAIL: PteFlags = PteFlags::AVAIL0
        .union(PteFlags::AVAIL1)
        .union(PteFlags::AVAIL2);
}

/// Mask of the frame address bits 51:12 of an entry.
pub const PTE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Entries per page-table page.
pub const PTES_PER_PAGE: usize = 512;

/// L1 entries the domU builder writes for the bootstrap region: P|RW|A.
pub const BUILDER_L1_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED);
/// L2..L4 entries the domU builder writes: P|RW|U|A|D.
pub const BUILDER_UPPER_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY);

/// A 64-bit page-table entry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(transparent)]
pub struct Pte(pub u64);

impl Pte {
    /// An entry mapping frame `mfn` with `flags`.
    pub const fn new(mfn: Mfn, flags: PteFlags) -> Self {
        Pte(((mfn.0 << 12) & PTE_ADDR_MASK) | flags.bits())
    }

    /// The frame the entry points at.
    pub const fn mfn(self) -> Mfn {
        Mfn((self.0 & PTE_ADDR_MASK) >> 12)
    }

    /// The flag bits (everything outside [`PTE_ADDR_MASK`]).
    pub const fn flags(self) -> PteFlags {
        PteFlags::from_bits_retain(self.0 & !PTE_ADDR_MASK)
    }

    /// Whether [`PteFlags::PRESENT`] is set.
    pub const fn is_present(self) -> bool {
        self.0 & PteFlags::PRESENT.bits() != 0
    }
}

assert_layout!(Pte, 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_flags() {
        assert_eq!(BUILDER_L1_FLAGS.bits(), 0x23);
        assert_eq!(BUILDER_UPPER_FLAGS.bits(), 0x67);
    }

    #[test]
    fn pte_round_trip() {
        let p = Pte::new(Mfn(0xABCDE), PteFlags::PRESENT | PteFlags::NX);
        assert_eq!(p.mfn(), Mfn(0xABCDE));
        assert_eq!(p.flags(), PteFlags::PRESENT | PteFlags::NX);
        assert!(p.is_present());
    }
}
