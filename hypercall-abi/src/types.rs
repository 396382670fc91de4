//! Newtypes for identifiers and addresses.
//!
//! Every identifier that crosses the ABI has its own type, so a frame number
//! cannot be passed where a domain id is expected. All are
//! `#[repr(transparent)]` over the C type Xen uses (`domid_t` is `u16`,
//! `evtchn_port_t` and `grant_ref_t` are `u32`, `xen_pfn_t` is `u64`), and
//! derive the zerocopy traits so they can sit inside `#[repr(C)]` layouts.
//!
//! For a PV guest a "GFN"/"GMFN" in Xen's headers **is** the machine frame
//! number: PV guests are not auto-translated. [`Pfn`] is the guest's own
//! pseudo-physical numbering, translated by the guest's P2M list.

use core::fmt;
use core::hash::{Hash, Hasher};
use core::marker::PhantomData;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::PAGE_SHIFT;

/// A domain id (`domid_t`).
///
/// Ordinary domains are `0..=0x7FEF`; ids from [`DomId::FIRST_RESERVED`] up
/// have special meanings.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct DomId(pub u16);

impl DomId {
    /// The first id that is not an ordinary domain (`DOMID_FIRST_RESERVED`).
    pub const FIRST_RESERVED: DomId = DomId(0x7FF0);
    /// The caller itself (`DOMID_SELF`).
    pub const SELF: DomId = DomId(0x7FF0);
    /// Owner of I/O (non-RAM) frames; `foreigndom` for I/O-only mappings
    /// (`DOMID_IO`).
    pub const IO: DomId = DomId(0x7FF1);
    /// The hypervisor itself, owner of Xen-heap frames (`DOMID_XEN`).
    pub const XEN: DomId = DomId(0x7FF2);
    /// Owner of copy-on-write shared frames (`DOMID_COW`).
    pub const COW: DomId = DomId(0x7FF3);
    /// Unknown owner (`DOMID_INVALID`).
    pub const INVALID: DomId = DomId(0x7FF4);
    /// The idle domain (`DOMID_IDLE`).
    pub const IDLE: DomId = DomId(0x7FFF);
    /// Mask of valid domain id bits (`DOMID_MASK`).
    pub const MASK: u16 = 0x7FFF;
    /// The initial control domain.
    pub const DOM0: DomId = DomId(0);

    /// True for an id an ordinary domain can have (`< DOMID_FIRST_RESERVED`).
    pub const fn is_ordinary(self) -> bool {
        self.0 < Self::FIRST_RESERVED.0
    }
}

/// A machine frame number (MFN; `xen_pfn_t` when it names machine memory).
///
/// Page-table entries, `start_info.store_mfn`, grant frames and M2P indices
/// are MFNs.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct Mfn(pub u64);

impl core::fmt::Display for Mfn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mfn {:#x}", self.0)
    }
}

impl core::fmt::Display for Pfn {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "pfn {:#x}", self.0)
    }
}

impl Mfn {
    /// The machine address of the first byte of this frame.
    pub const fn addr(self) -> MachineAddr {
        MachineAddr(self.0 << PAGE_SHIFT)
    }
}

/// A guest pseudo-physical frame number (PFN), an index into the guest's P2M.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct Pfn(pub u64);

/// A machine address: `MFN << 12 | offset`.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct MachineAddr(pub u64);

impl MachineAddr {
    /// The frame containing this address.
    pub const fn mfn(self) -> Mfn {
        Mfn(self.0 >> PAGE_SHIFT)
    }

    /// The byte offset within the frame.
    pub const fn page_offset(self) -> u64 {
        self.0 & ((1 << PAGE_SHIFT) - 1)
    }
}

/// A grant reference (`grant_ref_t`): an index into a domain's grant table.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct GrantRef(pub u32);

/// An event-channel port (`evtchn_port_t`). Port 0 is reserved and never
/// allocated.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct EvtchnPort(pub u32);

/// A virtual CPU index within a domain.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct VcpuId(pub u32);

/// A guest virtual address of a `T` (or of an array of `T`): Xen's
/// `XEN_GUEST_HANDLE(T)`.
///
/// It is only a number. The guest creates one from its own pointers; the
/// hypervisor never dereferences it directly but copies through its checked
/// guest-memory path. `GuestPtr<()>` stands for `void *`.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(transparent)]
pub struct GuestPtr<T> {
    addr: u64,
    _pointee: PhantomData<T>,
}

impl<T> GuestPtr<T> {
    /// The null handle.
    pub const NULL: GuestPtr<T> = GuestPtr::new(0);

    /// A handle to the guest virtual address `addr`.
    pub const fn new(addr: u64) -> Self {
        GuestPtr {
            addr,
            _pointee: PhantomData,
        }
    }

    /// A handle to the object behind a guest pointer (guest side: guest
    /// virtual addresses are pointer values).
    pub fn from_ptr(ptr: *const T) -> Self {
        Self::new(ptr.addr() as u64)
    }

    /// A handle to `obj` (guest side).
    pub fn from_ref(obj: &T) -> Self {
        Self::from_ptr(obj)
    }

    /// A handle to the first element of `items` (guest side).
    pub fn from_slice(items: &[T]) -> Self {
        Self::from_ptr(items.as_ptr())
    }

    /// The guest virtual address.
    pub const fn addr(self) -> u64 {
        self.addr
    }

    /// True for the null handle.
    pub const fn is_null(self) -> bool {
        self.addr == 0
    }

    /// The same address, viewed as a handle to `U`.
    pub const fn cast<U>(self) -> GuestPtr<U> {
        GuestPtr::new(self.addr)
    }

    /// The address of element `index` of the array at this address, or
    /// `None` on overflow. For a hypervisor walking a guest array.
    pub const fn element(self, index: u64) -> Option<GuestPtr<T>> {
        let Some(bytes) = index.checked_mul(size_of::<T>() as u64) else {
            return None;
        };
        match self.addr.checked_add(bytes) {
            Some(a) => Some(GuestPtr::new(a)),
            None => None,
        }
    }
}

impl<T> Clone for GuestPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for GuestPtr<T> {}

impl<T> PartialEq for GuestPtr<T> {
    fn eq(&self, other: &Self) -> bool {
        self.addr == other.addr
    }
}

impl<T> Eq for GuestPtr<T> {}

impl<T> Hash for GuestPtr<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.addr.hash(state);
    }
}

impl<T> Default for GuestPtr<T> {
    fn default() -> Self {
        Self::NULL
    }
}

impl<T> fmt::Debug for GuestPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GuestPtr({:#x})", self.addr)
    }
}

assert_layout!(DomId, 2);
assert_layout!(Mfn, 8);
assert_layout!(Pfn, 8);
assert_layout!(MachineAddr, 8);
assert_layout!(GrantRef, 4);
assert_layout!(EvtchnPort, 4);
assert_layout!(VcpuId, 4);
assert_layout!(GuestPtr<u8>, 8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domid_values() {
        assert_eq!(DomId::SELF.0, 0x7FF0);
        assert_eq!(DomId::IO.0, 0x7FF1);
        assert_eq!(DomId::XEN.0, 0x7FF2);
        assert_eq!(DomId::COW.0, 0x7FF3);
        assert_eq!(DomId::INVALID.0, 0x7FF4);
        assert_eq!(DomId::IDLE.0, 0x7FFF);
        assert!(DomId(0x7FEF).is_ordinary());
        assert!(!DomId::SELF.is_ordinary());
    }

    #[test]
    fn frames_and_addresses() {
        let ma = Mfn(0x1234).addr();
        assert_eq!(ma, MachineAddr(0x123_4000));
        assert_eq!(MachineAddr(0x123_4567).mfn(), Mfn(0x1234));
        assert_eq!(MachineAddr(0x123_4567).page_offset(), 0x567);
    }

    #[test]
    fn guest_ptr_arithmetic() {
        let p = GuestPtr::<u64>::new(0x1000);
        assert_eq!(p.element(3).unwrap().addr(), 0x1018);
        assert!(GuestPtr::<u64>::new(u64::MAX).element(1).is_none());
        assert!(p.element(u64::MAX).is_none());
        assert!(GuestPtr::<u8>::NULL.is_null());
    }
}
