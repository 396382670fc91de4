//! Page-table arithmetic for 4-level x86_64 paging as a 64-bit PV guest sees
//! it (ABI digest §3.6, §5.1, §5.2).
//!
//! Levels are numbered as Xen numbers them: 1 is the table of leaf entries
//! (L1, one entry per 4 KiB page), 4 is the root (L4, the table `CR3`
//! names). Entries hold machine addresses.

use hypercall_abi::xen::pte::{PTE_ADDR_MASK, PTES_PER_PAGE, PteFlags};
use hypercall_abi::{MachineAddr, Mfn};

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// Entries per table.
pub const ENTRIES: usize = PTES_PER_PAGE;

/// First address of the hypervisor's part of the address space
/// (`HYPERVISOR_VIRT_START`, L4 slot 256; the read-only M2P starts here).
pub const HYPERVISOR_START: u64 = 0xFFFF_8000_0000_0000;
/// End of the hypervisor's part (`HYPERVISOR_VIRT_END`, L4 slot 272).
pub const HYPERVISOR_END: u64 = 0xFFFF_8800_0000_0000;
/// L4 slots the hypervisor owns: writes to them are refused.
pub const HYPERVISOR_L4_SLOTS: core::ops::Range<usize> = 256..272;

/// Flags of an entry that links a table into its parent (L2..L4 entries):
/// present, writable, user, accessed, dirty (what both builders write).
pub const TABLE_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY);

/// Flags a leaf (L1) entry made through the mapping API may carry besides
/// the frame: Xen's per-level rules (digest §5.1) minus the PAT bit and bit
/// 62, reserved to grant mappings. PCD and PWT (uncached device registers)
/// pass here; the hypervisor refuses them (`-EINVAL`) for a domain without
/// I/O memory.
pub const LEAF_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::PWT)
    .union(PteFlags::PCD)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::GLOBAL)
    .union(PteFlags::AVAIL)
    .union(PteFlags::NX);

/// Address bits translated by one entry at `level` (1..=4): 12, 21, 30, 39.
pub const fn shift(level: u8) -> u32 {
    12 + 9 * (level as u32 - 1)
}

/// Bytes one entry at `level` covers (4 KiB, 2 MiB, 1 GiB, 512 GiB).
pub const fn entry_span(level: u8) -> u64 {
    1 << shift(level)
}

/// Index of the entry for `va` in its table at `level`.
pub const fn index(va: u64, level: u8) -> usize {
    #[allow(clippy::cast_possible_truncation)] // masked to 9 bits
    let i = ((va >> shift(level)) & (ENTRIES as u64 - 1)) as usize;
    i
}

/// Whether `va` is canonical (bits 63..47 all equal).
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

/// Whether `va` lies in the hypervisor's range (L4 slots 256..272).
pub const fn in_hypervisor_range(va: u64) -> bool {
    HYPERVISOR_START <= va && va < HYPERVISOR_END
}

/// Whether a guest may map `va`: canonical and outside the hypervisor's
/// range.
pub const fn is_guest_va(va: u64) -> bool {
    is_canonical(va) && !in_hypervisor_range(va)
}

/// Whether the `pages` pages from page-aligned `va` are all guest addresses
/// (and the range does not wrap).
pub fn is_guest_range(va: u64, pages: u64) -> bool {
    if va % PAGE != 0 {
        return false;
    }
    let Some(len) = pages.checked_mul(PAGE) else {
        return false;
    };
    if len == 0 {
        return is_guest_va(va);
    }
    let Some(last) = va.checked_add(len - 1) else {
        return false;
    };
    // Both ends guest addresses, and no non-guest hole between them: the
    // low half, the hole and the hypervisor range are ordered, so checking
    // that both ends fall in the same guest part suffices.
    let part = |a: u64| -> u8 {
        if a < 0x0000_8000_0000_0000 {
            0
        } else if a >= HYPERVISOR_END {
            1
        } else {
            2
        }
    };
    is_guest_va(va) && is_guest_va(last) && part(va) == part(last)
}

/// Machine address of entry `index` of the table in frame `table`.
pub const fn entry_ma(table: Mfn, index: usize) -> MachineAddr {
    MachineAddr(table.0 * PAGE + index as u64 * 8)
}

/// The frame an entry points at.
pub const fn entry_mfn(entry: u64) -> Mfn {
    Mfn((entry & PTE_ADDR_MASK) >> 12)
}

/// Whether an entry is present.
pub const fn is_present(entry: u64) -> bool {
    entry & PteFlags::PRESENT.bits() != 0
}

/// A leaf entry mapping `mfn` with `flags` (PRESENT added).
pub const fn leaf(mfn: Mfn, flags: PteFlags) -> u64 {
    ((mfn.0 << 12) & PTE_ADDR_MASK) | flags.bits() | PteFlags::PRESENT.bits()
}

/// How many tables below the root map `pages` pages from `va` when none
/// exist yet: `[L1, L2, L3]` counts.
pub fn tables_for(va: u64, pages: u64) -> [u64; 3] {
    if pages == 0 {
        return [0; 3];
    }
    let last = va.wrapping_add((pages - 1).wrapping_mul(PAGE));
    let count = |level: u8| (last >> shift(level + 1)) - (va >> shift(level + 1)) + 1;
    [count(1), count(2), count(3)]
}

/// The first address after `va` that starts a new table at `level`
/// (a multiple of the span of one entry at `level + 1`); `None` past the
/// top of the address space.
pub const fn next_table_boundary(va: u64, level: u8) -> Option<u64> {
    let span = entry_span(level + 1);
    (va & !(span - 1)).checked_add(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_and_spans() {
        let va = 0x0000_7F12_3456_7000;
        assert_eq!(index(va, 4), 0xFE);
        assert_eq!(index(va, 3), 0x48);
        assert_eq!(index(va, 2), 0x1A2);
        assert_eq!(index(va, 1), 0x167);
        assert_eq!(entry_span(1), 4096);
        assert_eq!(entry_span(2), 2 << 20);
        assert_eq!(entry_span(3), 1 << 30);
        assert_eq!(entry_span(4), 512 << 30);
        assert_eq!(index(HYPERVISOR_START, 4), 256);
        assert_eq!(index(HYPERVISOR_END, 4), 272);
    }

    #[test]
    fn canonical_and_guest_ranges() {
        assert!(is_canonical(0x0000_7FFF_FFFF_F000));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(!is_canonical(1 << 63));
        assert!(is_canonical(0xFFFF_8000_0000_0000));
        assert!(!is_guest_va(0xFFFF_8000_0000_0000));
        assert!(!is_guest_va(0xFFFF_87FF_FFFF_F000));
        assert!(is_guest_va(0xFFFF_8800_0000_0000));
        assert!(is_guest_range(0, 1 << 20));
        assert!(is_guest_range(0x0000_7FFF_FFFF_F000, 1));
        assert!(!is_guest_range(0x0000_7FFF_FFFF_F000, 2));
        assert!(!is_guest_range(0xFFFF_87FF_FFFF_F000, 1));
        assert!(!is_guest_range(0xFFFF_FFFF_FFFF_F000, 2));
        assert!(is_guest_range(0xFFFF_FFFF_FFFF_F000, 1));
        assert!(!is_guest_range(0x1001, 1));
        assert!(!is_guest_range(0, u64::MAX));
    }

    #[test]
    fn table_counts() {
        assert_eq!(tables_for(0, 0), [0, 0, 0]);
        assert_eq!(tables_for(0, 1), [1, 1, 1]);
        assert_eq!(tables_for(0, 512), [1, 1, 1]);
        assert_eq!(tables_for(0, 513), [2, 1, 1]);
        // 128 MiB from 0: 64 L1s, one L2, one L3.
        assert_eq!(tables_for(0, 32768), [64, 1, 1]);
        // 64 MiB straddling a 1 GiB boundary.
        assert_eq!(tables_for((1 << 30) - (32 << 20), 16384), [32, 2, 1]);
        // One page on each side of a 512 GiB boundary.
        assert_eq!(tables_for((512 << 30) - 4096, 2), [2, 2, 2]);
    }

    #[test]
    fn entries() {
        let e = leaf(Mfn(0x1234), PteFlags::RW);
        assert_eq!(e, 0x0123_4003);
        assert_eq!(entry_mfn(e | (1 << 63)), Mfn(0x1234));
        assert!(is_present(e));
        assert_eq!(entry_ma(Mfn(2), 3), MachineAddr(0x2018));
        assert_eq!(next_table_boundary(0x1000, 1), Some(2 << 20));
        assert_eq!(next_table_boundary(2 << 20, 1), Some(4 << 20));
        assert_eq!(next_table_boundary(u64::MAX, 1), None);
    }
}
