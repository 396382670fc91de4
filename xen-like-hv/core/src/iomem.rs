//! I/O-memory permissions (`docs/devices.md`, "Device memory"): per domain, the
//! machine frames outside RAM it may map (Xen's `iomem_caps` rangeset).
//!
//! The hardware domain starts with every frame the CPU can address except the
//! hypervisor's own ranges ([`IoMem::hardware_domain`], Xen's
//! `dom0_setup_permissions`): the local APIC, each IO-APIC, the MSI address window
//! 0xFEE00000-0xFEEFFFFF and the HPET the hypervisor uses. Other domains start with
//! none; the control domain grants or revokes ranges it holds itself with
//! `XEN_DOMCTL_iomem_permission` (`hypercall::domctl`). The memory model asks
//! [`IomemTable::permits`] whenever an L1 entry would map an I/O frame
//! (`MmHooks::iomem_permitted`).

use crate::ioport::TooManyRanges;
use hypercall_abi::types::DomId;

/// An inclusive range of machine frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameRange {
    /// First frame.
    pub first: u64,
    /// Last frame (inclusive).
    pub last: u64,
}

/// Most disjoint ranges one domain's set holds.
pub const MAX_RANGES: usize = 32;

/// The MSI address window (Xen's `MSI_ADDR_BASE_LO` .. `+ MSI_ADDR_DEST_ID_MASK`):
/// writes there are interrupt messages, never memory.
pub const MSI_FRAMES: FrameRange = FrameRange {
    first: 0xFEE00,
    last: 0xFEEFF,
};

/// The frames one domain may map (Xen's `iomem_caps`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoMem {
    ranges: heapless::Vec<FrameRange, MAX_RANGES>,
}

impl IoMem {
    /// No frames.
    pub const fn none() -> Self {
        IoMem {
            ranges: heapless::Vec::new(),
        }
    }

    /// Every frame below `frames` (2^(MAXPHYADDR-12)) but `denied` and the MSI
    /// window. A denial that would need more ranges than the set holds is dropped
    /// with the rest of the range it splits, so the set only ever shrinks.
    pub fn hardware_domain(frames: u64, denied: &[FrameRange]) -> Self {
        let mut s = IoMem::none();
        if frames > 0 {
            let _ = s.ranges.push(FrameRange {
                first: 0,
                last: frames - 1,
            });
        }
        for r in denied.iter().chain(core::iter::once(&MSI_FRAMES)) {
            if s.deny(r.first, r.last).is_err() {
                s.ranges.retain(|h| h.last < r.first || h.first > r.last);
            }
        }
        s
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[FrameRange] {
        &self.ranges
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether every frame of `first..=last` is in the set (Xen's
    /// `iomem_access_permitted`).
    pub fn permits(&self, first: u64, last: u64) -> bool {
        first <= last
            && self
                .ranges
                .iter()
                .any(|r| r.first <= first && last <= r.last)
    }

    /// Adds `first..=last` (Xen's `iomem_permit_access`), merging what it touches;
    /// nothing changes on `Err`.
    pub fn permit(&mut self, first: u64, last: u64) -> Result<(), TooManyRanges> {
        if first > last {
            return Ok(());
        }
        let (mut first, mut last) = (first, last);
        let mut out: heapless::Vec<FrameRange, MAX_RANGES> = heapless::Vec::new();
        for &h in &self.ranges {
            let touches = h.last.saturating_add(1) >= first && last.saturating_add(1) >= h.first;
            if touches {
                first = first.min(h.first);
                last = last.max(h.last);
            } else {
                out.push(h).map_err(|_| TooManyRanges)?;
            }
        }
        let at = out.iter().position(|h| h.first > last).unwrap_or(out.len());
        out.insert(at, FrameRange { first, last })
            .map_err(|_| TooManyRanges)?;
        self.ranges = out;
        Ok(())
    }

    /// Removes `first..=last` (Xen's `iomem_deny_access`); nothing changes on `Err`
    /// (a split that needs more ranges than the set holds).
    pub fn deny(&mut self, first: u64, last: u64) -> Result<(), TooManyRanges> {
        if first > last {
            return Ok(());
        }
        let mut out: heapless::Vec<FrameRange, MAX_RANGES> = heapless::Vec::new();
        for &h in &self.ranges {
            if h.last < first || h.first > last {
                out.push(h).map_err(|_| TooManyRanges)?;
                continue;
            }
            if h.first < first {
                out.push(FrameRange {
                    first: h.first,
                    last: first - 1,
                })
                .map_err(|_| TooManyRanges)?;
            }
            if h.last > last {
                out.push(FrameRange {
                    first: last + 1,
                    last: h.last,
                })
                .map_err(|_| TooManyRanges)?;
            }
        }
        self.ranges = out;
        Ok(())
    }
}

/// Most domains with a non-empty set at once.
pub const MAX_DOMAINS: usize = 32;

/// Every domain's set; a domain not listed has none.
#[derive(Clone, Debug, Default)]
pub struct IomemTable {
    sets: heapless::Vec<(DomId, IoMem), MAX_DOMAINS>,
}

impl IomemTable {
    /// Nobody has any.
    pub const fn new() -> Self {
        IomemTable {
            sets: heapless::Vec::new(),
        }
    }

    /// `dom`'s set, if not empty.
    pub fn get(&self, dom: DomId) -> Option<&IoMem> {
        self.sets.iter().find(|(d, _)| *d == dom).map(|(_, s)| s)
    }

    /// Whether `dom` may map every frame of `first..=last`.
    pub fn permits(&self, dom: DomId, first: u64, last: u64) -> bool {
        self.get(dom).is_some_and(|s| s.permits(first, last))
    }

    /// Whether `dom` has any I/O memory (Xen's `cache_flush_permitted`, for memory).
    pub fn has_any(&self, dom: DomId) -> bool {
        self.get(dom).is_some_and(|s| !s.is_empty())
    }

    /// Gives `dom` the set `set` (the hardware domain at boot).
    pub fn set(&mut self, dom: DomId, set: IoMem) -> Result<(), TooManyRanges> {
        self.forget(dom);
        if set.is_empty() {
            return Ok(());
        }
        self.sets.push((dom, set)).map_err(|_| TooManyRanges)
    }

    /// Grants (`allow`) or revokes `first..=last` for `dom`.
    pub fn change(
        &mut self,
        dom: DomId,
        first: u64,
        last: u64,
        allow: bool,
    ) -> Result<(), TooManyRanges> {
        let mut s = self.get(dom).cloned().unwrap_or_default();
        if allow {
            s.permit(first, last)?;
        } else {
            s.deny(first, last)?;
        }
        self.set(dom, s)
    }

    /// `dom` is gone: its set goes too.
    pub fn forget(&mut self, dom: DomId) {
        self.sets.retain(|(d, _)| *d != dom);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAPIC: FrameRange = FrameRange {
        first: 0xFEE00,
        last: 0xFEE00,
    };
    const IOAPIC: FrameRange = FrameRange {
        first: 0xFEC00,
        last: 0xFEC00,
    };
    const HPET: FrameRange = FrameRange {
        first: 0xFED00,
        last: 0xFED00,
    };

    #[test]
    fn the_hardware_domain_gets_everything_but_the_hypervisors_ranges() {
        let s = IoMem::hardware_domain(1 << 28, &[LAPIC, IOAPIC, HPET]);
        assert!(s.permits(0, 0), "frame 0 (the first MiB is I/O memory)");
        assert!(s.permits(0xFD000, 0xFDFFF), "a BAR");
        assert!(s.permits(0xC0000, 0xFEBFF));
        for r in [LAPIC, IOAPIC, HPET, MSI_FRAMES] {
            assert!(!s.permits(r.first, r.first), "{r:?}");
            assert!(!s.permits(r.last, r.last), "{r:?}");
        }
        assert!(!s.permits(0xFEEFF, 0xFEF00), "reaching into the MSI window");
        assert!(s.permits(0xFEF00, (1 << 28) - 1));
        assert!(!s.permits(1 << 28, 1 << 28), "beyond MAXPHYADDR");
        assert!(!s.permits(5, 4));
    }

    #[test]
    fn permit_and_deny_merge_split_and_refuse_when_full() {
        let mut s = IoMem::none();
        assert_eq!(s.permit(10, 20), Ok(()));
        assert_eq!(s.permit(21, 30), Ok(()));
        assert_eq!(
            s.ranges(),
            [FrameRange {
                first: 10,
                last: 30
            }]
        );
        assert_eq!(s.deny(15, 16), Ok(()));
        assert!(s.permits(10, 14) && !s.permits(14, 15) && s.permits(17, 30));
        assert_eq!(s.deny(0, 100), Ok(()));
        assert!(s.is_empty());
        for i in 0..MAX_RANGES as u64 {
            assert_eq!(s.permit(i * 10, i * 10), Ok(()));
        }
        let before = s.clone();
        assert_eq!(s.permit(1000, 1000), Err(TooManyRanges));
        assert_eq!(s.deny(0, 0), Ok(()), "removing a whole range needs no room");
        assert_eq!(s.permit(1000, 1000), Ok(()));
        let mut t = before.clone();
        t.ranges.clear();
        assert_eq!(t.permit(0, 1000), Ok(()));
        for i in 0..MAX_RANGES as u64 - 1 {
            assert_eq!(t.deny(i * 10 + 5, i * 10 + 5), Ok(()));
        }
        let full = t.clone();
        assert_eq!(t.deny(999, 999), Err(TooManyRanges));
        assert_eq!(t, full, "a refused deny changes nothing");
        let mut top = IoMem::none();
        assert_eq!(top.permit(u64::MAX - 1, u64::MAX), Ok(()));
        assert_eq!(
            top.permit(u64::MAX - 5, u64::MAX - 2),
            Ok(()),
            "merged at the top"
        );
        assert!(top.permits(u64::MAX - 5, u64::MAX));
        assert_eq!(top.deny(u64::MAX, u64::MAX), Ok(()));
        assert!(!top.permits(u64::MAX, u64::MAX));
    }

    #[test]
    fn the_table_grants_revokes_and_forgets() {
        let mut t = IomemTable::new();
        let d1 = DomId(1);
        assert!(!t.permits(d1, 0xFD000, 0xFD000) && !t.has_any(d1));
        assert_eq!(t.change(d1, 0xFD000, 0xFDFFF, true), Ok(()));
        assert!(t.permits(d1, 0xFD000, 0xFDFFF) && t.has_any(d1));
        assert!(!t.permits(DomId(2), 0xFD000, 0xFD000));
        assert_eq!(t.change(d1, 0xFD000, 0xFDFFF, false), Ok(()));
        assert!(!t.has_any(d1), "an emptied set is dropped");
        assert_eq!(t.change(d1, 1, 1, true), Ok(()));
        t.forget(d1);
        assert!(t.get(d1).is_none());
        for d in 0..32u16 {
            assert_eq!(t.change(DomId(d), 1, 1, true), Ok(()));
        }
        assert_eq!(t.change(DomId(999), 1, 1, true), Err(TooManyRanges));
    }
}
