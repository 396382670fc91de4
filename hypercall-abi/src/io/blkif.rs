//! Block devices (`io/blkif.h`).
//!
//! The front end (the guest using the disk) puts [`BlkifRequest`]s on a
//! one-page ring and the back end answers each with a [`BlkifResponse`]
//! carrying the same `id`. Data moves through granted frames listed in the
//! request's segments: sectors `first_sect..=last_sect` (of 512 bytes) of
//! each frame.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::ring::{BackRing, FrontRing, entry_size, ring_size};
use crate::types::GrantRef;

/// Read sectors.
pub const BLKIF_OP_READ: u8 = 0;
/// Write sectors.
pub const BLKIF_OP_WRITE: u8 = 1;
/// Write with a barrier (`feature-barrier`).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// Flush the disk cache (`feature-flush-cache`).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// Reserved (was a vendor extension).
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// Discard sectors (`feature-discard`), [`BlkifRequestDiscard`].
pub const BLKIF_OP_DISCARD: u8 = 5;
/// Indirect request (`feature-max-indirect-segments`), [`BlkifRequestIndirect`].
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// Segments in a direct request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Grant pages in an indirect request (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Sector size unless `feature-large-sector-size` says otherwise.
pub const BLKIF_SECTOR_SIZE: u64 = 512;

/// `discard` flag: secure erase (`BLKIF_DISCARD_SECURE`).
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// Response status: success (`BLKIF_RSP_OKAY`).
pub const BLKIF_RSP_OKAY: i16 = 0;
/// Response status: error (`BLKIF_RSP_ERROR`).
pub const BLKIF_RSP_ERROR: i16 = -1;
/// Response status: operation not supported (`BLKIF_RSP_EOPNOTSUPP`).
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// Back-end `info` key bit: CD-ROM (`VDISK_CDROM`).
pub const VDISK_CDROM: u32 = 0x1;
/// Back-end `info` key bit: removable (`VDISK_REMOVABLE`).
pub const VDISK_REMOVABLE: u32 = 0x2;
/// Back-end `info` key bit: read-only (`VDISK_READONLY`).
pub const VDISK_READONLY: u32 = 0x4;

/// `struct blkif_request_segment` (8 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// The granted frame.
    pub gref: GrantRef,
    /// First sector of the frame used (0..=7).
    pub first_sect: u8,
    /// Last sector used, inclusive.
    pub last_sect: u8,
    /// Padding (zero).
    pub _pad: u16,
}

/// `struct blkif_request` (112 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// A `BLKIF_OP_*`.
    pub operation: u8,
    /// Segments used (1..=11 for read/write).
    pub nr_segments: u8,
    /// The virtual device (`blkif_vdev_t`).
    pub handle: u16,
    /// Padding (zero).
    pub _pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: u64,
    /// The segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_request_discard` (32 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    /// [`BLKIF_OP_DISCARD`].
    pub operation: u8,
    /// [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// The virtual device.
    pub handle: u16,
    /// Padding (zero).
    pub _pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: u64,
    /// Sectors to discard.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect` (64 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    /// [`BLKIF_OP_INDIRECT`].
    pub operation: u8,
    /// The real operation (read or write).
    pub indirect_op: u8,
    /// Segments, listed in the indirect pages.
    pub nr_segments: u16,
    /// Padding (zero).
    pub _pad0: u32,
    /// Echoed in the response.
    pub id: u64,
    /// Starting sector.
    pub sector_number: u64,
    /// The virtual device.
    pub handle: u16,
    /// Padding (zero).
    pub _pad1: u16,
    /// Grants of the pages holding the segment lists.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Padding (zero).
    pub _pad2: u32,
}

/// `struct blkif_response` (16 bytes). Written by the back end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    /// Padding (zero).
    pub _pad0: u8,
    /// A `BLKIF_RSP_*`.
    pub status: i16,
    /// Padding (zero).
    pub _pad1: u32,
}

/// Bytes per slot of the blkif ring.
pub const BLKIF_ENTRY_SIZE: usize = entry_size::<BlkifRequest, BlkifResponse>();
/// Slots in a one-page blkif ring (32).
pub const BLKIF_RING_SIZE: u32 = ring_size(crate::PAGE_SIZE, BLKIF_ENTRY_SIZE);

/// The front end's blkif ring.
pub type BlkifFrontRing<'a> = FrontRing<'a, BlkifRequest, BlkifResponse>;
/// The back end's blkif ring.
pub type BlkifBackRing<'a> = BackRing<'a, BlkifRequest, BlkifResponse>;

assert_layout!(
    BlkifRequestSegment,
    8,
    gref = 0,
    first_sect = 4,
    last_sect = 5
);
assert_layout!(
    BlkifRequest,
    112,
    operation = 0,
    nr_segments = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    seg = 24,
);
assert_layout!(
    BlkifRequestDiscard,
    32,
    operation = 0,
    flag = 1,
    handle = 2,
    id = 8,
    sector_number = 16,
    nr_sectors = 24,
);
assert_layout!(
    BlkifRequestIndirect,
    64,
    operation = 0,
    indirect_op = 1,
    nr_segments = 2,
    id = 8,
    sector_number = 16,
    handle = 24,
    indirect_grefs = 28,
);
assert_layout!(BlkifResponse, 16, id = 0, operation = 8, status = 10);
const _: () = assert!(BLKIF_ENTRY_SIZE == 112 && BLKIF_RING_SIZE == 32);
