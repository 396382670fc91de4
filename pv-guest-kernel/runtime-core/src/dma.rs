//! The arithmetic of DMA buffers without an IOMMU (used by `pv_runtime::dma`).
//!
//! A device sees machine addresses. A buffer it reads or writes across a page
//! boundary must be machine-contiguous, and a device that only drives `n`
//! address lines needs it below `2^n`. A PV guest gets such memory as Linux's
//! `xen_create_contiguous_region` does: it trades `2^order` of its own frames
//! for one extent of order `order` with `XENMEM_exchange`, asking for
//! `address_bits` in the output's `mem_flags`. These helpers size the request
//! and check the answer; they touch no memory.

/// Largest buffer order `pv_runtime::dma` asks for: 512 pages (2 MiB), the
/// largest extent order Xen lets an unprivileged domain exchange for
/// (`CONFIG_DOMU_MAX_ORDER`).
pub const MAX_ORDER: u32 = 9;

/// The smallest order whose `2^order` pages hold `pages` pages (`pages` 0
/// counts as 1), or `None` above [`MAX_ORDER`].
pub const fn order_for_pages(pages: u64) -> Option<u32> {
    let order = if pages <= 1 {
        0
    } else {
        64 - (pages - 1).leading_zeros()
    };
    if order > MAX_ORDER { None } else { Some(order) }
}

/// The `address_bits` value (`XENMEMF_address_bits`) that keeps every byte
/// of a buffer at or below `max_addr` (a device's highest reachable address,
/// e.g. `0xFFFF_FFFF` for a 32-bit DMA mask): the number of bits needed to
/// write `max_addr + 1`, less one if that is a power of two. 0 (no limit) for
/// `u64::MAX`; `None` for a limit so low no page fits under it
/// (`max_addr < 0xFFF`).
pub const fn address_bits_for(max_addr: u64) -> Option<u32> {
    if max_addr == u64::MAX {
        return Some(0);
    }
    if max_addr < 0xFFF {
        return None;
    }
    // Largest n with 2^n - 1 <= max_addr.
    Some(64 - (max_addr + 1).leading_zeros() - 1)
}

/// Whether the machine frames `mfns` follow one another (`mfns[i] ==
/// mfns[0] + i`): a buffer over them is one machine-contiguous range.
pub fn is_contiguous(mfns: impl IntoIterator<Item = u64>) -> bool {
    let mut it = mfns.into_iter();
    let Some(mut prev) = it.next() else {
        return true;
    };
    for m in it {
        if prev.checked_add(1) != Some(m) {
            return false;
        }
        prev = m;
    }
    true
}

/// Whether `pages` pages from machine frame `first` lie entirely below
/// `2^address_bits` bytes (0 = no limit).
pub const fn below_address_bits(first: u64, pages: u64, address_bits: u32) -> bool {
    if address_bits == 0 || address_bits >= 64 {
        return true;
    }
    let Some(end) = first.checked_add(pages) else {
        return false;
    };
    match end.checked_mul(4096) {
        Some(bytes) => bytes <= 1 << address_bits,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders() {
        assert_eq!(order_for_pages(0), Some(0));
        assert_eq!(order_for_pages(1), Some(0));
        assert_eq!(order_for_pages(2), Some(1));
        assert_eq!(order_for_pages(3), Some(2));
        assert_eq!(order_for_pages(512), Some(9));
        assert_eq!(order_for_pages(513), None);
        assert_eq!(order_for_pages(u64::MAX), None);
    }

    #[test]
    fn address_bits_from_a_highest_address() {
        assert_eq!(address_bits_for(0xFFFF_FFFF), Some(32));
        assert_eq!(address_bits_for(0xFF_FFFF), Some(24));
        assert_eq!(address_bits_for(0x100_0000), Some(24));
        assert_eq!(address_bits_for(0x1FF_FFFE), Some(24));
        assert_eq!(address_bits_for(u64::MAX), Some(0));
        assert_eq!(address_bits_for(u64::MAX - 1), Some(63));
        assert_eq!(address_bits_for(0xFFF), Some(12));
        assert_eq!(address_bits_for(0xFFE), None);
    }

    #[test]
    fn contiguity_and_limits() {
        assert!(is_contiguous([]));
        assert!(is_contiguous([7]));
        assert!(is_contiguous([7, 8, 9]));
        assert!(!is_contiguous([7, 9]));
        assert!(!is_contiguous([8, 7]));
        assert!(!is_contiguous([u64::MAX, 0]));
        assert!(below_address_bits(0xFFF, 1, 24));
        assert!(!below_address_bits(0xFFF, 2, 24));
        assert!(below_address_bits(0xFFFF_FFF0, 16, 44));
        assert!(below_address_bits(0xF_FFFF, 1, 32));
        assert!(!below_address_bits(0x10_0000, 1, 32));
        assert!(below_address_bits(0xF_FFFF, 1, 0));
        assert!(!below_address_bits(u64::MAX, 1, 40));
    }
}
