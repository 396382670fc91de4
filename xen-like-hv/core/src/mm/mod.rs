//! Machine memory management: machine frame numbers and the boot-time frame allocator.

pub mod error;
pub mod frame_alloc;
pub mod frame_table;
pub mod grant_pte;
pub mod mmu;
pub mod page_type;

pub use frame_alloc::{AllocError, FrameAllocator, MAX_ORDER, bitmap_words};

/// Size of a machine page in bytes.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

pub use hypercall_abi::Mfn;

/// Checked arithmetic on machine frame numbers, for addresses from boot loaders and
/// guests (the ABI type itself stays a plain number).
pub trait MfnExt: Sized {
    /// The frame that contains byte address `addr` (rounds down).
    fn from_addr(addr: u64) -> Self;
    /// The first frame that starts at or above `addr` (rounds up); `None` only for
    /// addresses in the last, partial page of the 64-bit space.
    fn from_addr_up(addr: u64) -> Option<Self>;
    /// The byte address of the frame's first byte; `None` if it does not fit in 64 bits.
    fn byte_addr(self) -> Option<u64>;
    /// The frame `n` frames above this one; `None` on overflow.
    fn checked_add(self, n: u64) -> Option<Self>;
    /// Whether the frame number is a multiple of `2^order` (false for `order >= 64`).
    fn is_aligned(&self, order: u32) -> bool;
}

impl MfnExt for Mfn {
    fn from_addr(addr: u64) -> Self {
        Mfn(addr >> PAGE_SHIFT)
    }

    fn from_addr_up(addr: u64) -> Option<Self> {
        addr.checked_add(PAGE_SIZE - 1)
            .map(|a| Mfn(a >> PAGE_SHIFT))
    }

    fn byte_addr(self) -> Option<u64> {
        self.0.checked_mul(PAGE_SIZE)
    }

    fn checked_add(self, n: u64) -> Option<Self> {
        self.0.checked_add(n).map(Mfn)
    }

    fn is_aligned(&self, order: u32) -> bool {
        order < 64 && self.0 & ((1u64 << order) - 1) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfn_conversions() {
        assert_eq!(Mfn::from_addr(0x1fff), Mfn(1));
        assert_eq!(Mfn::from_addr_up(0x1001), Some(Mfn(2)));
        assert_eq!(Mfn::from_addr_up(0x1000), Some(Mfn(1)));
        assert_eq!(Mfn::from_addr_up(u64::MAX), None);
        assert_eq!(Mfn(3).byte_addr(), Some(0x3000));
        assert_eq!(Mfn(u64::MAX).byte_addr(), None);
        assert_eq!(Mfn(u64::MAX).checked_add(1), None);
        assert!(Mfn(8).is_aligned(3));
        assert!(!Mfn(8).is_aligned(4));
        assert!(!Mfn(0).is_aligned(64));
    }
}
