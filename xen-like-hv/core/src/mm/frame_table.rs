//! The frame table: one small record per machine frame, indexed by MFN.
//!
//! Each record holds what Xen keeps in `struct page_info` for a PV domain's page: the
//! owner, a general reference count, a type with a type reference count, and the
//! `validated` and `pinned` flags (plus the signed linear-page-table counter Xen uses
//! to refuse nested linear tables). The rules that move these fields live in
//! [`super::page_type`]; this module only stores them and hands frames out and back.
//!
//! The table is caller-provided storage (`&mut [FrameInfo]`, 16 bytes per frame), so
//! the hypervisor places it once at boot, sized for every frame it manages. A frame
//! number outside the slice is "not RAM": [`super::page_type`] treats it as I/O space.

use hypercall_abi::DomId;

use super::Mfn;
use super::error::MmError;

/// Who a frame belongs to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Owner {
    /// Not allocated.
    #[default]
    Free,
    /// Memory of this domain (Xen's `page_get_owner(page) == d`).
    Domain(DomId),
    /// The hypervisor's own memory (heap, frame table, its page tables): never mapped
    /// by a guest.
    Xen,
    /// A hypervisor page that this domain may map (its `shared_info`, grant frames):
    /// mappable, also writably, by that domain; never a page table or descriptor page.
    XenShared(DomId),
    /// Not RAM (MMIO, holes): mapped only by domains with I/O-memory capability, never
    /// reference counted (Xen's `dom_io`).
    Io,
}

/// The use a frame is currently typed for. A frame's type changes only when its type
/// count is zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum PageType {
    /// Never typed (`PGT_none`).
    #[default]
    None,
    /// Mapped writable by some L1 entry (`PGT_writable_page`).
    Writable,
    /// Level-1 page table (`PGT_l1_page_table`).
    L1,
    /// Level-2 page table.
    L2,
    /// Level-3 page table.
    L3,
    /// Level-4 page table (the root).
    L4,
    /// GDT or LDT frame (`PGT_seg_desc_page`).
    SegDesc,
}

impl PageType {
    /// Whether this is one of the page-table types L1..L4.
    pub const fn is_page_table(self) -> bool {
        matches!(
            self,
            PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4
        )
    }

    /// The page-table type of `level` (1..=4).
    pub const fn table(level: u8) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }

    /// The level (1..=4) of a page-table type.
    pub const fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }
}

/// [`FrameInfo`] flag: the page-table or descriptor contents were checked.
pub(super) const F_VALIDATED: u8 = 1 << 0;
/// [`FrameInfo`] flag: pinned (holds one type and one general reference).
pub(super) const F_PINNED: u8 = 1 << 1;
/// [`FrameInfo`] flag of a free frame: held on a hypervisor list for the duration of
/// one operation ([`FrameTable::hold`]); `count` and `type_count` then hold the link.
const F_HELD: u8 = 1 << 2;

/// The record of one machine frame. `Default` is a free frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    pub(super) owner: Owner,
    /// General references: mappings of the frame, page-table entries pointing at it,
    /// pins and base pointers.
    pub(super) count: u32,
    /// References to the frame in its current type.
    pub(super) type_count: u32,
    pub(super) ty: PageType,
    pub(super) flags: u8,
    /// Xen's `linear_pt_count`: > 0 = linear entries this table holds, < 0 = linear
    /// entries elsewhere pointing at it. Never both, so linear use cannot nest.
    pub(super) linear: i16,
}

const _: () = assert!(core::mem::size_of::<FrameInfo>() <= 16);

impl FrameInfo {
    /// The owner.
    pub const fn owner(&self) -> Owner {
        self.owner
    }

    /// General reference count.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The type (meaningful while [`FrameInfo::type_count`] is non-zero; kept after it
    /// drops to zero so the next type change knows a TLB flush is due).
    pub const fn page_type(&self) -> PageType {
        self.ty
    }

    /// Type reference count.
    pub const fn type_count(&self) -> u32 {
        self.type_count
    }

    /// Whether the contents were validated for the current type.
    pub const fn validated(&self) -> bool {
        self.flags & F_VALIDATED != 0
    }

    /// Whether the frame is pinned.
    pub const fn pinned(&self) -> bool {
        self.flags & F_PINNED != 0
    }

    /// Linear page-table counter (> 0: linear entries held; < 0: linear uses).
    pub const fn linear_count(&self) -> i16 {
        self.linear
    }

    /// Whether no reference, type reference or pin remains.
    pub const fn is_unreferenced(&self) -> bool {
        self.count == 0 && self.type_count == 0 && self.flags & F_PINNED == 0
    }

    pub(super) fn set_flag(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }
}

/// A held list's link (`None`: the end) as the two 32-bit halves kept in a held
/// frame's `count` and `type_count`.
fn split_link(next: Option<Mfn>) -> (u32, u32) {
    let link = next.map_or(u64::MAX, |m| m.0);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the link is split into its two 32-bit halves on purpose"
    )]
    (link as u32, (link >> 32) as u32)
}

/// The link [`split_link`] split.
fn join_link(lo: u32, hi: u32) -> Option<Mfn> {
    let link = u64::from(lo) | u64::from(hi) << 32;
    (link != u64::MAX).then_some(Mfn(link))
}

/// The frame table over caller-provided storage; index = MFN.
#[derive(Debug)]
pub struct FrameTable<'a> {
    frames: &'a mut [FrameInfo],
}

/// The slice index of a frame, if it fits in `usize`.
fn index(mfn: Mfn) -> Option<usize> {
    usize::try_from(mfn.0).ok()
}

impl<'a> FrameTable<'a> {
    /// A table over `frames`, every frame free.
    pub fn new(frames: &'a mut [FrameInfo]) -> Self {
        frames.fill(FrameInfo::default());
        FrameTable { frames }
    }

    /// Number of frames covered.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the table covers no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Every record, index = MFN (for audits and tests).
    pub fn frames(&self) -> &[FrameInfo] {
        self.frames
    }

    /// The record of `mfn`, or `None` outside the table.
    pub fn info(&self, mfn: Mfn) -> Option<&FrameInfo> {
        self.frames.get(index(mfn)?)
    }

    /// The owner of `mfn`, or `None` outside the table.
    pub fn owner(&self, mfn: Mfn) -> Option<Owner> {
        self.info(mfn).map(|f| f.owner)
    }

    pub(super) fn info_mut(&mut self, mfn: Mfn) -> Option<&mut FrameInfo> {
        self.frames.get_mut(index(mfn)?)
    }

    /// Hand a free frame to `owner` (allocation). The M2P entry is the caller's.
    pub fn assign(&mut self, mfn: Mfn, owner: Owner) -> Result<(), MmError> {
        if owner == Owner::Free {
            return Err(MmError::BadOwner);
        }
        let f = self.info_mut(mfn).ok_or(MmError::BadFrame(mfn))?;
        if f.owner != Owner::Free || f.flags & F_HELD != 0 {
            return Err(MmError::NotFree(mfn));
        }
        *f = FrameInfo {
            owner,
            ..FrameInfo::default()
        };
        Ok(())
    }

    /// Take a frame back from its owner (free). Refused while any reference, type
    /// reference or pin remains. The type is forgotten.
    ///
    /// Before the frame is assigned again, the caller must make sure no CPU still holds
    /// a TLB entry through which the old owner could reach it (Xen's TLB-flush
    /// timestamp check at allocation).
    pub fn release(&mut self, mfn: Mfn) -> Result<(), MmError> {
        let f = self.info_mut(mfn).ok_or(MmError::BadFrame(mfn))?;
        if f.owner == Owner::Free {
            return Ok(());
        }
        if !f.is_unreferenced() {
            return Err(MmError::FrameBusy(mfn));
        }
        *f = FrameInfo::default();
        Ok(())
    }

    /// Puts the free frame `mfn` on a hypervisor-side list whose next element is
    /// `next`: the list runs through the records themselves, as Xen's `page_list`
    /// runs through `struct page_info`, so an operation can hold any number of frames
    /// without storage of its own. A held frame stays [`Owner::Free`] but
    /// [`assign`](Self::assign) refuses it until [`unhold`](Self::unhold). `NotFree`
    /// if the frame is owned or already held.
    pub fn hold(&mut self, mfn: Mfn, next: Option<Mfn>) -> Result<(), MmError> {
        let f = self.info_mut(mfn).ok_or(MmError::BadFrame(mfn))?;
        if f.owner != Owner::Free || f.flags & F_HELD != 0 {
            return Err(MmError::NotFree(mfn));
        }
        let (lo, hi) = split_link(next);
        *f = FrameInfo {
            count: lo,
            type_count: hi,
            flags: F_HELD,
            ..FrameInfo::default()
        };
        Ok(())
    }

    /// Xen's `steal_page`: takes `mfn` from domain `owner` if it is that domain's and
    /// holds no reference, type reference or pin, and holds it (as
    /// [`hold`](Self::hold)) with link `next`. The record keeps the frame's last type
    /// and validation, so [`restore`](Self::restore) gives it back exactly as it was
    /// (a later type change still knows a TLB flush is due). Nothing changes on
    /// failure: `BadFrame` outside the table, `WrongOwner` for a frame that is not
    /// `owner`'s, `FrameBusy` for one in use.
    pub fn steal(&mut self, mfn: Mfn, owner: DomId, next: Option<Mfn>) -> Result<(), MmError> {
        let f = self.info_mut(mfn).ok_or(MmError::BadFrame(mfn))?;
        if f.owner != Owner::Domain(owner) {
            return Err(MmError::WrongOwner {
                mfn,
                owner: f.owner,
            });
        }
        if !f.is_unreferenced() || f.flags & F_HELD != 0 {
            return Err(MmError::FrameBusy(mfn));
        }
        let (lo, hi) = split_link(next);
        f.owner = Owner::Free;
        f.count = lo;
        f.type_count = hi;
        f.flags |= F_HELD;
        Ok(())
    }

    /// Gives a frame [`steal`](Self::steal) took back to domain `owner`, as it was,
    /// and returns the next element of its list (as [`unhold`](Self::unhold));
    /// `None` if `mfn` is not held.
    pub fn restore(&mut self, mfn: Mfn, owner: DomId) -> Option<Option<Mfn>> {
        let f = self.info_mut(mfn)?;
        if f.flags & F_HELD == 0 {
            return None;
        }
        let link = join_link(f.count, f.type_count);
        f.owner = Owner::Domain(owner);
        f.count = 0;
        f.type_count = 0;
        f.flags &= !F_HELD;
        Some(link)
    }

    /// Takes a held frame off its list (it becomes an ordinary free frame) and returns
    /// the next element: `Some(next)` (`None` at the end of the list), or `None` if
    /// `mfn` is not held.
    pub fn unhold(&mut self, mfn: Mfn) -> Option<Option<Mfn>> {
        let f = self.info_mut(mfn)?;
        if f.flags & F_HELD == 0 {
            return None;
        }
        let link = join_link(f.count, f.type_count);
        *f = FrameInfo::default();
        Some(link)
    }

    /// Whether `mfn` is held on a hypervisor list.
    pub fn is_held(&self, mfn: Mfn) -> bool {
        self.info(mfn).is_some_and(|f| f.flags & F_HELD != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_frames_form_a_list_and_cannot_be_assigned() {
        let mut store = [FrameInfo::default(); 8];
        let mut ft = FrameTable::new(&mut store);
        let d = DomId(3);
        ft.assign(Mfn(2), Owner::Domain(d)).unwrap();
        ft.assign(Mfn(3), Owner::Domain(d)).unwrap();
        ft.info_mut(Mfn(3)).unwrap().count = 1;
        ft.steal(Mfn(2), d, None).unwrap();
        assert!(ft.is_held(Mfn(2)));
        assert_eq!(ft.owner(Mfn(2)), Some(Owner::Free));
        assert_eq!(
            ft.assign(Mfn(2), Owner::Domain(d)),
            Err(MmError::NotFree(Mfn(2)))
        );
        // In use, another domain's, free, outside: refused, unchanged.
        assert_eq!(ft.steal(Mfn(3), d, None), Err(MmError::FrameBusy(Mfn(3))));
        assert!(matches!(
            ft.steal(Mfn(3), DomId(4), None),
            Err(MmError::WrongOwner { .. })
        ));
        assert!(ft.steal(Mfn(5), d, None).is_err());
        assert_eq!(ft.steal(Mfn(9), d, None), Err(MmError::BadFrame(Mfn(9))));
        assert_eq!(ft.info(Mfn(3)).unwrap().count(), 1);
        ft.hold(Mfn(5), Some(Mfn(2))).unwrap();
        assert_eq!(ft.hold(Mfn(5), None), Err(MmError::NotFree(Mfn(5))));
        ft.hold(Mfn(7), Some(Mfn(0x0012_3456_789A))).unwrap();
        assert_eq!(ft.unhold(Mfn(7)), Some(Some(Mfn(0x0012_3456_789A))));
        assert_eq!(ft.unhold(Mfn(5)), Some(Some(Mfn(2))));
        assert_eq!(ft.unhold(Mfn(2)), Some(None));
        assert_eq!(ft.unhold(Mfn(2)), None);
        assert_eq!(ft.info(Mfn(2)), Some(&FrameInfo::default()));
        ft.assign(Mfn(2), Owner::Domain(d)).unwrap();
        // A stolen frame comes back with its last type and validation.
        let f = ft.info_mut(Mfn(2)).unwrap();
        f.ty = PageType::L1;
        f.flags |= F_VALIDATED;
        ft.steal(Mfn(2), d, Some(Mfn(6))).unwrap();
        assert_eq!(ft.restore(Mfn(2), DomId(9)), Some(Some(Mfn(6))));
        let f = ft.info(Mfn(2)).unwrap();
        assert_eq!(
            (
                f.owner(),
                f.page_type(),
                f.validated(),
                f.count(),
                f.type_count()
            ),
            (Owner::Domain(DomId(9)), PageType::L1, true, 0, 0)
        );
        assert!(!ft.is_held(Mfn(2)));
        assert_eq!(ft.restore(Mfn(2), d), None);
    }

    #[test]
    fn assign_and_release() {
        let mut store = [FrameInfo {
            count: 7,
            ..FrameInfo::default()
        }; 4];
        let mut ft = FrameTable::new(&mut store);
        assert_eq!(ft.len(), 4);
        assert_eq!(ft.owner(Mfn(1)), Some(Owner::Free));
        assert_eq!(ft.info(Mfn(1)).map(|f| f.count()), Some(0));
        assert_eq!(ft.owner(Mfn(4)), None);
        assert_eq!(ft.assign(Mfn(1), Owner::Free), Err(MmError::BadOwner));
        assert_eq!(
            ft.assign(Mfn(4), Owner::Xen),
            Err(MmError::BadFrame(Mfn(4)))
        );
        ft.assign(Mfn(1), Owner::Domain(DomId(3))).unwrap();
        assert_eq!(
            ft.assign(Mfn(1), Owner::Domain(DomId(3))),
            Err(MmError::NotFree(Mfn(1)))
        );
        if let Some(f) = ft.info_mut(Mfn(1)) {
            f.count = 1;
        }
        assert_eq!(ft.release(Mfn(1)), Err(MmError::FrameBusy(Mfn(1))));
        if let Some(f) = ft.info_mut(Mfn(1)) {
            f.count = 0;
            f.set_flag(F_PINNED, true);
        }
        assert_eq!(ft.release(Mfn(1)), Err(MmError::FrameBusy(Mfn(1))));
        if let Some(f) = ft.info_mut(Mfn(1)) {
            f.set_flag(F_PINNED, false);
            f.ty = PageType::L1;
        }
        ft.release(Mfn(1)).unwrap();
        assert_eq!(ft.info(Mfn(1)), Some(&FrameInfo::default()));
        assert_eq!(
            ft.release(Mfn(u64::MAX)),
            Err(MmError::BadFrame(Mfn(u64::MAX)))
        );
    }

    #[test]
    fn record_is_small() {
        assert!(core::mem::size_of::<FrameInfo>() <= 16);
        assert_eq!(PageType::table(3), Some(PageType::L3));
        assert_eq!(PageType::L2.level(), Some(2));
        assert_eq!(PageType::SegDesc.level(), None);
        assert!(!PageType::Writable.is_page_table());
    }
}
