//! Machine memory management: machine frame numbers and the boot-time frame allocator.

pub mod frame_alloc;

pub use frame_alloc::{AllocError, FrameAllocator, MAX_ORDER, bitmap_words};

use core::fmt;

/// Size of a machine page in bytes.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A machine frame number: a physical address shifted right by [`PAGE_SHIFT`].
///
/// This will become a re-export of `hypercall_abi::Mfn`, which has the same shape.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mfn(pub u64);

impl Mfn {
    /// The frame that contains byte address `addr` (rounds down).
    pub const fn from_addr(addr: u64) -> Self {
        Mfn(addr >> PAGE_SHIFT)
    }

    /// The first frame that starts at or above `addr` (rounds up); `None` only for
    /// addresses in the last, partial page of the 64-bit space.
    pub const fn from_addr_up(addr: u64) -> Option<Self> {
        match addr.checked_add(PAGE_SIZE - 1) {
            Some(a) => Some(Mfn(a >> PAGE_SHIFT)),
            None => None,
        }
    }

    /// The byte address of the frame's first byte; `None` if it does not fit in 64 bits.
    pub const fn addr(self) -> Option<u64> {
        self.0.checked_mul(PAGE_SIZE)
    }

    /// The frame `n` frames above this one; `None` on overflow.
    pub const fn checked_add(self, n: u64) -> Option<Self> {
        match self.0.checked_add(n) {
            Some(v) => Some(Mfn(v)),
            None => None,
        }
    }

    /// Whether the frame number is a multiple of `2^order` (false for `order >= 64`).
    pub const fn is_aligned(self, order: u32) -> bool {
        if order >= 64 {
            return false;
        }
        self.0 & ((1u64 << order) - 1) == 0
    }
}

impl fmt::Display for Mfn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mfn {:#x}", self.0)
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
        assert_eq!(Mfn(3).addr(), Some(0x3000));
        assert_eq!(Mfn(u64::MAX).addr(), None);
        assert_eq!(Mfn(u64::MAX).checked_add(1), None);
        assert!(Mfn(8).is_aligned(3));
        assert!(!Mfn(8).is_aligned(4));
        assert!(!Mfn(0).is_aligned(64));
        assert_eq!(Mfn(0x10).to_string(), "mfn 0x10");
    }
}
