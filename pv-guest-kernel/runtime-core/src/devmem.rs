//! Device-visible memory for drivers in a PV domain (the logic behind
//! `pv_runtime::virtio`'s HAL).
//!
//! Without an IOMMU a device sees machine addresses, and a PV guest's
//! pseudo-physical pages are not machine-contiguous in general. A buffer a
//! driver hands to a device is therefore either passed straight through, when
//! its pages happen to be machine-contiguous ([`bus_address`]), or *bounced*
//! through a machine-contiguous buffer ([`BounceTable`] remembers which), as
//! Linux's swiotlb-xen does. Device registers (PCI BARs) are mapped once per
//! range into a window of virtual addresses ([`MmioWindow`]).

use hypercall_abi::Mfn;

/// Bytes per page.
pub const PAGE: u64 = 4096;

/// Why a buffer cannot be handed to a device as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotDirect {
    /// The buffer is empty or its end overflows.
    BadRange,
    /// A page of the buffer is not mapped.
    Unmapped {
        /// The virtual address of that page.
        page_va: u64,
    },
    /// Two neighbouring pages are not machine-contiguous.
    Scattered,
}

/// The machine address of `[va, va + len)` if the device can use it directly:
/// `mfn_of(page_va)` gives the frame mapped at each page of the buffer, and
/// every page's frame must follow the previous one.
pub fn bus_address(
    va: u64,
    len: u64,
    mut mfn_of: impl FnMut(u64) -> Option<Mfn>,
) -> Result<u64, NotDirect> {
    let last = va
        .checked_add(len)
        .and_then(|end| end.checked_sub(1))
        .filter(|_| len > 0)
        .ok_or(NotDirect::BadRange)?;
    let first_page = va & !(PAGE - 1);
    let first = mfn_of(first_page).ok_or(NotDirect::Unmapped {
        page_va: first_page,
    })?;
    let pages = (last >> 12) - (va >> 12) + 1;
    for i in 1..pages {
        let page_va = first_page + i * PAGE;
        let mfn = mfn_of(page_va).ok_or(NotDirect::Unmapped { page_va })?;
        if first.0.checked_add(i) != Some(mfn.0) {
            return Err(NotDirect::Scattered);
        }
    }
    Ok((first.0 << 12) | (va & (PAGE - 1)))
}

/// Pages that `len` bytes need.
pub fn pages_for(len: u64) -> u64 {
    len.div_ceil(PAGE)
}

/// One buffer that is being bounced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounce {
    /// The bus (machine) address the device was given.
    pub bus: u64,
    /// Where the bounce buffer is mapped.
    pub va: u64,
    /// Its size in pages.
    pub pages: u64,
}

/// The table is full: too many buffers are being bounced at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableFull;

/// The buffers that are bounced right now, found again by the bus address the
/// device was given.
#[derive(Debug)]
pub struct BounceTable<const N: usize> {
    slots: [Option<Bounce>; N],
}

impl<const N: usize> Default for BounceTable<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> BounceTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        BounceTable { slots: [None; N] }
    }

    /// Records `b`; a bus address that is already recorded is a caller bug and
    /// replaces nothing (returns `TableFull` only when no slot is free).
    pub fn insert(&mut self, b: Bounce) -> Result<(), TableFull> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(TableFull)?;
        *slot = Some(b);
        Ok(())
    }

    /// Removes and returns the bounce the device knew as `bus`.
    pub fn take(&mut self, bus: u64) -> Option<Bounce> {
        self.slots
            .iter_mut()
            .find(|s| s.is_some_and(|b| b.bus == bus))
            .and_then(Option::take)
    }

    /// How many buffers are bounced now.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether nothing is bounced.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A device-register range mapped in the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmioMapping {
    /// First machine frame.
    pub mfn: u64,
    /// Frames mapped.
    pub frames: u64,
    /// Where the first frame is mapped.
    pub va: u64,
}

/// Why a device-register range cannot be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// Empty, or the end overflows.
    BadRange,
    /// The window has no room left.
    WindowFull,
    /// Too many distinct ranges.
    TooManyRanges,
}

/// A window of virtual addresses where device registers get mapped, each
/// range once: asking again for (part of) a mapped range returns the same
/// mapping.
#[derive(Debug)]
pub struct MmioWindow<const N: usize> {
    next_va: u64,
    end_va: u64,
    maps: [Option<MmioMapping>; N],
}

/// What [`MmioWindow::place`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Already mapped: the virtual address of `paddr`.
    Mapped(u64),
    /// Map `frames` frames from `mfn` at `va`, then call
    /// [`MmioWindow::commit`]; the virtual address of `paddr` is
    /// `va + (paddr & 0xFFF)`.
    New(MmioMapping),
}

impl<const N: usize> MmioWindow<N> {
    /// A window `[start, end)` (page aligned) with nothing mapped.
    pub const fn new(start: u64, end: u64) -> Self {
        MmioWindow {
            next_va: start,
            end_va: end,
            maps: [None; N],
        }
    }

    /// Where `[paddr, paddr + size)` is, or where it should go.
    pub fn place(&self, paddr: u64, size: u64) -> Result<Placement, MmioError> {
        let last = paddr
            .checked_add(size)
            .and_then(|e| e.checked_sub(1))
            .filter(|_| size > 0)
            .ok_or(MmioError::BadRange)?;
        let (first_mfn, last_mfn) = (paddr >> 12, last >> 12);
        for m in self.maps.iter().flatten() {
            if first_mfn >= m.mfn && last_mfn < m.mfn + m.frames {
                return Ok(Placement::Mapped(
                    m.va + ((first_mfn - m.mfn) << 12) + (paddr & (PAGE - 1)),
                ));
            }
        }
        if self.maps.iter().all(Option::is_some) {
            return Err(MmioError::TooManyRanges);
        }
        let frames = last_mfn - first_mfn + 1;
        let end = frames
            .checked_mul(PAGE)
            .and_then(|b| self.next_va.checked_add(b))
            .filter(|e| *e <= self.end_va)
            .ok_or(MmioError::WindowFull)?;
        debug_assert!(end > self.next_va);
        Ok(Placement::New(MmioMapping {
            mfn: first_mfn,
            frames,
            va: self.next_va,
        }))
    }

    /// Records a mapping [`MmioWindow::place`] proposed, once it is mapped.
    pub fn commit(&mut self, m: MmioMapping) -> Result<(), MmioError> {
        let slot = self
            .maps
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(MmioError::TooManyRanges)?;
        *slot = Some(m);
        self.next_va = m.va + m.frames * PAGE;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn linear(base: u64) -> impl FnMut(u64) -> Option<Mfn> {
        move |va| Some(Mfn(base + (va >> 12)))
    }

    #[test]
    fn a_contiguous_buffer_goes_straight_through() {
        // Pages at VA 0x10000.. map to MFN 0x500 + page index.
        assert_eq!(bus_address(0x10010, 0x3000, linear(0x4F0)), Ok(0x500_010));
        assert_eq!(bus_address(0x10FFF, 1, linear(0x4F0)), Ok(0x500_FFF));
    }

    #[test]
    fn a_scattered_or_unmapped_buffer_is_refused() {
        let scattered = |va: u64| Some(Mfn(if va == 0x11000 { 0x900 } else { 0x500 }));
        assert_eq!(
            bus_address(0x10800, 0x1000, scattered),
            Err(NotDirect::Scattered)
        );
        let hole = |va: u64| (va != 0x11000).then_some(Mfn(0x500 + (va >> 12)));
        assert_eq!(
            bus_address(0x10000, 0x2000, hole),
            Err(NotDirect::Unmapped { page_va: 0x11000 })
        );
        assert_eq!(bus_address(0x1000, 0, linear(0)), Err(NotDirect::BadRange));
        assert_eq!(
            bus_address(u64::MAX - 10, 20, linear(0)),
            Err(NotDirect::BadRange)
        );
        // A frame number that would wrap is not "the next one".
        let wraps = |va: u64| Some(Mfn(if va == 0 { u64::MAX } else { 0 }));
        assert_eq!(bus_address(0, 0x2000, wraps), Err(NotDirect::Scattered));
    }

    #[test]
    fn bounces_are_found_by_bus_address() {
        let mut t = BounceTable::<2>::new();
        let a = Bounce {
            bus: 0x1000,
            va: 0xA000,
            pages: 1,
        };
        let b = Bounce {
            bus: 0x5000,
            va: 0xB000,
            pages: 2,
        };
        t.insert(a).unwrap();
        t.insert(b).unwrap();
        assert_eq!(t.insert(a), Err(TableFull));
        assert_eq!(t.len(), 2);
        assert_eq!(t.take(0x5000), Some(b));
        assert_eq!(t.take(0x5000), None);
        assert_eq!(t.take(0x1000), Some(a));
        assert!(t.is_empty());
    }

    #[test]
    fn mmio_ranges_are_mapped_once() {
        let mut w = MmioWindow::<2>::new(0x7000_0000, 0x7000_4000);
        let Ok(Placement::New(m)) = w.place(0xFEBC_0010, 0x20) else {
            panic!()
        };
        assert_eq!(
            m,
            MmioMapping {
                mfn: 0xFEBC0,
                frames: 1,
                va: 0x7000_0000
            }
        );
        w.commit(m).unwrap();
        assert_eq!(w.place(0xFEBC_0100, 4), Ok(Placement::Mapped(0x7000_0100)));
        // Spilling past the mapped frame needs a new mapping.
        let Ok(Placement::New(m2)) = w.place(0xFEBC_0F00, 0x200) else {
            panic!()
        };
        assert_eq!((m2.mfn, m2.frames, m2.va), (0xFEBC0, 2, 0x7000_1000));
        w.commit(m2).unwrap();
        assert_eq!(w.place(0xFE00_0000, 0x2000), Err(MmioError::TooManyRanges));
        assert_eq!(w.place(0, 0), Err(MmioError::BadRange));
        let w = MmioWindow::<2>::new(0x7000_0000, 0x7000_1000);
        assert_eq!(w.place(0x1000, 0x1001), Err(MmioError::WindowFull));
    }

    proptest! {
        #[test]
        fn bus_address_keeps_the_offset(base in 0u64..1 << 40, va in 0u64..1 << 47, len in 1u64..1 << 20) {
            let r = bus_address(va, len, linear(base));
            let first = base + (va >> 12);
            prop_assert_eq!(r, Ok((first << 12) | (va & 0xFFF)));
        }
    }
}
