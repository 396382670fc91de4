//! Grant tables: `grant_table_op` (#20) (`grant_table.h`).
//!
//! A domain grants another access to one of its frames by filling a grant
//! entry ([`GrantEntryV1`]) in its grant table; the grantee maps or copies
//! the frame with `GNTTABOP_*` operations naming the granter's domain and
//! the [`GrantRef`]. `grant_table_op(cmd, args, count)` takes an array of
//! `count` op structs; each reports its own result in a `status` field
//! ([`GntSt`]) while the hypercall itself usually returns 0.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, GrantRef, GuestPtr, Mfn};

subops! {
    /// `grant_table_op` commands (`GNTTABOP_*`).
    pub enum GnttabOp: "GNTTABOP_" {
        /// Map granted frames.
        0 => MapGrantRef(GnttabMapGrantRef) map_grant_ref since 0x0000_0000;
        /// Unmap them.
        1 => UnmapGrantRef(GnttabUnmapGrantRef) unmap_grant_ref since 0x0000_0000;
        /// Size the caller's table and learn its frames (MFNs for PV).
        2 => SetupTable(GnttabSetupTable) setup_table since 0x0000_0000;
        /// Dump a table to the hypervisor console.
        3 => DumpTable(GnttabDumpTable) dump_table since 0x0000_0000;
        /// Transfer a page to another domain (PV only).
        4 => Transfer(GnttabTransfer) transfer since 0x0000_0000;
        /// Copy between granted frames.
        5 => Copy(GnttabCopy) copy since 0x0000_0000;
        /// Query a table's size.
        6 => QuerySize(GnttabQuerySize) query_size since 0x0000_0000;
        /// Unmap and put another mapping in its place.
        7 => UnmapAndReplace(GnttabUnmapAndReplace) unmap_and_replace since 0x0000_0000;
        /// Select grant-table version 1 or 2.
        8 => SetVersion(GnttabSetVersion) set_version since 0x0003_020A;
        /// Learn the v2 status frames.
        9 => GetStatusFrames(GnttabGetStatusFrames) get_status_frames since 0x0003_020A;
        /// Query the table version.
        10 => GetVersion(GnttabGetVersion) get_version since 0x0003_020A;
        /// Swap two grant entries.
        11 => SwapGrantRef(GnttabSwapGrantRef) swap_grant_ref since 0x0003_020A;
        /// Cache maintenance on a granted frame.
        12 => CacheFlush(GnttabCacheFlush) cache_flush since 0x0003_020A;
    }
}

/// Entries 0..8 are reserved for the toolstack (`GNTTAB_NR_RESERVED_ENTRIES`).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// Entry the builder seeds for the console ring (`GNTTAB_RESERVED_CONSOLE`).
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = GrantRef(0);
/// Entry the builder seeds for the XenStore ring (`GNTTAB_RESERVED_XENSTORE`).
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = GrantRef(1);
/// v1 entries per 4 KiB grant-table frame.
pub const GRANT_ENTRIES_V1_PER_FRAME: usize = 512;

bitflags! {
    /// Grant entry flags (`GTF_*`). The type occupies bits 1:0
    /// ([`GtfFlags::TYPE_MASK`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GtfFlags: u16 {
        /// Type: grantee may map or copy (`GTF_permit_access`).
        const PERMIT_ACCESS = 1;
        /// Type: grantee may transfer a page in (`GTF_accept_transfer`).
        const ACCEPT_TRANSFER = 2;
        /// Type: transitive grant (`GTF_transitive`).
        const TRANSITIVE = 3;
        /// Mask of the type field (`GTF_type_mask`).
        const TYPE_MASK = 3;
        /// Granter: read-only access only (`GTF_readonly`).
        const READONLY = 1 << 2;
        /// Hypervisor: the frame is being read (`GTF_reading`).
        const READING = 1 << 3;
        /// Hypervisor: the frame is being written (`GTF_writing`).
        const WRITING = 1 << 4;
        /// Cache attribute PWT (`GTF_PWT`).
        const PWT = 1 << 5;
        /// Cache attribute PCD (`GTF_PCD`).
        const PCD = 1 << 6;
        /// Cache attribute PAT (`GTF_PAT`).
        const PAT = 1 << 7;
        /// v2 sub-page grant (`GTF_sub_page`).
        const SUB_PAGE = 1 << 8;
    }
}

impl GtfFlags {
    /// Type "invalid" (`GTF_invalid`): no access.
    pub const INVALID: GtfFlags = GtfFlags::empty();
    /// Transfer entries: the transfer is committed (`GTF_transfer_committed`).
    pub const TRANSFER_COMMITTED: GtfFlags = GtfFlags::READONLY;
    /// Transfer entries: the transfer completed (`GTF_transfer_completed`).
    pub const TRANSFER_COMPLETED: GtfFlags = GtfFlags::READING;
}

/// `struct grant_entry_v1` (8 bytes).
///
/// Written by the granter: `domid` and `frame` first, then (after a write
/// barrier) `flags`. The hypervisor sets and clears `GTF_reading`/
/// `GTF_writing` while a mapping or copy is in progress; the granter revokes
/// by compare-and-swapping `flags` to 0 when those are clear.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// [`GtfFlags`] bits.
    pub flags: u16,
    /// The grantee.
    pub domid: DomId,
    /// The granted frame (the MFN, for a PV granter).
    pub frame: u32,
}

/// `struct grant_entry_header` (4 bytes), the start of every v2 entry.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryHeader {
    /// [`GtfFlags`] bits.
    pub flags: u16,
    /// The grantee.
    pub domid: DomId,
}

/// `union grant_entry_v2` (16 bytes). Written by the granter.
///
/// `full_page`: `pad0 @4`, `frame u64 @8`. `sub_page`: `page_off u16 @4`,
/// `length u16 @6`, `frame u64 @8`. `transitive`: `trans_domid u16 @4`,
/// `pad u16 @6`, `gref u32 @8`. Status lives in separate status frames.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV2 {
    /// Common header.
    pub hdr: GrantEntryHeader,
    /// `sub_page.page_off` | `sub_page.length << 16`, or
    /// `transitive.trans_domid`, or padding.
    pub word1: u32,
    /// `full_page.frame`/`sub_page.frame`, or `transitive.gref` (low half).
    pub frame: u64,
}

bitflags! {
    /// `gnttab_map_grant_ref.flags` (`GNTMAP_*`).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GntMapFlags: u32 {
        /// Map for device access; `dev_bus_addr` is returned
        /// (`GNTMAP_device_map`).
        const DEVICE_MAP = 1 << 0;
        /// Map into the caller's page tables (`GNTMAP_host_map`).
        const HOST_MAP = 1 << 1;
        /// Read-only mapping (`GNTMAP_readonly`).
        const READONLY = 1 << 2;
        /// User-accessible mapping (`GNTMAP_application_map`).
        const APPLICATION_MAP = 1 << 3;
        /// `host_addr` is the machine address of the L1 entry
        /// (`GNTMAP_contains_pte`).
        const CONTAINS_PTE = 1 << 4;
        /// Guest-available bits 31:16 (`GNTMAP_guest_avail_mask`).
        const GUEST_AVAIL_MASK = 0xFFFF_0000;
    }
}

/// Grant status codes (`GNTST_*`), in the `status` field of each op.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(i16)]
pub enum GntSt {
    /// Success.
    Okay = 0,
    /// Undefined error.
    GeneralError = -1,
    /// Unrecognised domain id.
    BadDomain = -2,
    /// Invalid grant reference.
    BadGntref = -3,
    /// Invalid mapping handle.
    BadHandle = -4,
    /// Invalid virtual address.
    BadVirtAddr = -5,
    /// Invalid device address.
    BadDevAddr = -6,
    /// No spare translation slot in the I/O MMU.
    NoDeviceSpace = -7,
    /// Permission denied.
    PermissionDenied = -8,
    /// Bad page.
    BadPage = -9,
    /// Copy arguments cross a page boundary.
    BadCopyArg = -10,
    /// Page address too large.
    AddressTooBig = -11,
    /// Operation not done; try again.
    Eagain = -12,
    /// Out of space.
    NoSpace = -13,
}

impl GntSt {
    /// The status with value `v`, if defined.
    pub const fn from_raw(v: i16) -> Option<GntSt> {
        Some(match v {
            0 => GntSt::Okay,
            -1 => GntSt::GeneralError,
            -2 => GntSt::BadDomain,
            -3 => GntSt::BadGntref,
            -4 => GntSt::BadHandle,
            -5 => GntSt::BadVirtAddr,
            -6 => GntSt::BadDevAddr,
            -7 => GntSt::NoDeviceSpace,
            -8 => GntSt::PermissionDenied,
            -9 => GntSt::BadPage,
            -10 => GntSt::BadCopyArg,
            -11 => GntSt::AddressTooBig,
            -12 => GntSt::Eagain,
            -13 => GntSt::NoSpace,
            _ => return None,
        })
    }
}

/// `GNTTABOP_map_grant_ref` (32 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// In: virtual address to map at, or L1 entry machine address with
    /// `CONTAINS_PTE`.
    pub host_addr: u64,
    /// In: [`GntMapFlags`] bits.
    pub flags: u32,
    /// In: the grant.
    pub ref_: GrantRef,
    /// In: the granting domain.
    pub dom: DomId,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Out: handle for unmapping.
    pub handle: u32,
    /// Out: bus address with `DEVICE_MAP`.
    pub dev_bus_addr: u64,
}

/// `GNTTABOP_unmap_grant_ref` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// In: host address (0 = ignore).
    pub host_addr: u64,
    /// In: device bus address (0 = ignore).
    pub dev_bus_addr: u64,
    /// In: the handle from the map.
    pub handle: u32,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad: u16,
}

/// `GNTTABOP_setup_table` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// In: the domain (`DOMID_SELF`).
    pub dom: DomId,
    /// Padding (zero).
    pub _pad0: u16,
    /// In: frames wanted.
    pub nr_frames: u32,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad1: [u16; 3],
    /// In: where the hypervisor writes the frame numbers (MFNs for PV).
    pub frame_list: GuestPtr<Mfn>,
}

/// `GNTTABOP_dump_table` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabDumpTable {
    /// In: the domain.
    pub dom: DomId,
    /// Out: a [`GntSt`].
    pub status: i16,
}

/// `GNTTABOP_transfer` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabTransfer {
    /// In: the frame to give away.
    pub mfn: Mfn,
    /// In: the receiving domain.
    pub domid: DomId,
    /// Padding (zero).
    pub _pad0: u16,
    /// In: the receiver's accept-transfer grant.
    pub ref_: GrantRef,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad1: [u16; 3],
}

/// `GNTCOPY_source_gref`: the source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// `struct gnttab_copy_ptr` (16 bytes): one side of a copy.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// Union `u`: a grant reference (low 32 bits) or a frame.
    pub u: u64,
    /// The domain owning the frame.
    pub domid: DomId,
    /// Byte offset in the frame.
    pub offset: u16,
    /// Padding (zero).
    pub _pad: u32,
}

/// `GNTTABOP_copy` (40 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// In: source.
    pub source: GnttabCopyPtr,
    /// In: destination.
    pub dest: GnttabCopyPtr,
    /// In: bytes to copy (must not cross a page).
    pub len: u16,
    /// In: `GNTCOPY_*` bits.
    pub flags: u16,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad: u16,
}

/// `GNTTABOP_query_size` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// In: the domain.
    pub dom: DomId,
    /// Padding (zero).
    pub _pad0: u16,
    /// Out: current frames.
    pub nr_frames: u32,
    /// Out: maximum frames.
    pub max_nr_frames: u32,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad1: u16,
}

/// `GNTTABOP_unmap_and_replace` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    /// In: the mapped address.
    pub host_addr: u64,
    /// In: the address whose mapping replaces it.
    pub new_addr: u64,
    /// In: the handle from the map.
    pub handle: u32,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad: u16,
}

/// `GNTTABOP_set_version` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// In: 1 or 2; out: the version in force.
    pub version: u32,
}

/// `GNTTABOP_get_status_frames` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    /// In: frames wanted.
    pub nr_frames: u32,
    /// In: the domain.
    pub dom: DomId,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// In: where the hypervisor writes the frame numbers.
    pub frame_list: GuestPtr<u64>,
}

/// `GNTTABOP_get_version` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// In: the domain.
    pub dom: DomId,
    /// Padding (zero).
    pub pad: u16,
    /// Out: the version.
    pub version: u32,
}

/// `GNTTABOP_swap_grant_ref` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    /// In: first entry.
    pub ref_a: GrantRef,
    /// In: second entry.
    pub ref_b: GrantRef,
    /// Out: a [`GntSt`].
    pub status: i16,
    /// Padding (zero).
    pub _pad: u16,
}

/// `gnttab_cache_flush.op`: clean (`GNTTAB_CACHE_CLEAN`).
pub const GNTTAB_CACHE_CLEAN: u32 = 1 << 0;
/// `gnttab_cache_flush.op`: invalidate (`GNTTAB_CACHE_INVAL`).
pub const GNTTAB_CACHE_INVAL: u32 = 1 << 1;
/// `gnttab_cache_flush.op`: `a` is a grant reference
/// (`GNTTAB_CACHE_SOURCE_GREF`).
pub const GNTTAB_CACHE_SOURCE_GREF: u32 = 1 << 31;

/// `GNTTABOP_cache_flush` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCacheFlush {
    /// In: union `a`: bus address, or grant reference (low 32 bits).
    pub a: u64,
    /// In: offset in the page.
    pub offset: u16,
    /// In: length.
    pub length: u16,
    /// In: `GNTTAB_CACHE_*` bits.
    pub op: u32,
}

assert_layout!(GrantEntryV1, 8, flags = 0, domid = 2, frame = 4);
assert_layout!(GrantEntryHeader, 4, flags = 0, domid = 2);
assert_layout!(GrantEntryV2, 16, hdr = 0, word1 = 4, frame = 8);
assert_layout!(
    GnttabMapGrantRef,
    32,
    host_addr = 0,
    flags = 8,
    ref_ = 12,
    dom = 16,
    status = 18,
    handle = 20,
    dev_bus_addr = 24,
);
assert_layout!(
    GnttabUnmapGrantRef,
    24,
    host_addr = 0,
    dev_bus_addr = 8,
    handle = 16,
    status = 20
);
assert_layout!(
    GnttabSetupTable,
    24,
    dom = 0,
    nr_frames = 4,
    status = 8,
    frame_list = 16
);
assert_layout!(GnttabDumpTable, 4, dom = 0, status = 2);
assert_layout!(
    GnttabTransfer,
    24,
    mfn = 0,
    domid = 8,
    ref_ = 12,
    status = 16
);
assert_layout!(GnttabCopyPtr, 16, u = 0, domid = 8, offset = 10);
assert_layout!(
    GnttabCopy,
    40,
    source.u = 0,
    source.domid = 8,
    source.offset = 10,
    dest.u = 16,
    dest.domid = 24,
    dest.offset = 26,
    len = 32,
    flags = 34,
    status = 36,
);
assert_layout!(
    GnttabQuerySize,
    16,
    dom = 0,
    nr_frames = 4,
    max_nr_frames = 8,
    status = 12
);
assert_layout!(
    GnttabUnmapAndReplace,
    24,
    host_addr = 0,
    new_addr = 8,
    handle = 16,
    status = 20
);
assert_layout!(GnttabSetVersion, 4, version = 0);
assert_layout!(
    GnttabGetStatusFrames,
    16,
    nr_frames = 0,
    dom = 4,
    status = 6,
    frame_list = 8
);
assert_layout!(GnttabGetVersion, 8, dom = 0, version = 4);
assert_layout!(GnttabSwapGrantRef, 12, ref_a = 0, ref_b = 4, status = 8);
assert_layout!(
    GnttabCacheFlush,
    16,
    a = 0,
    offset = 8,
    length = 10,
    op = 12
);
