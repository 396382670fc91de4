//! Ring requests and response statuses.
//!
//! Every request occupies one ring slot the size of `struct
//! blkif_request` (112 bytes). A discard (`struct blkif_request_discard`,
//! 32 bytes) and an indirect request (`struct blkif_request_indirect`, 64
//! bytes) are laid over the start of the slot, the rest zero; this module
//! builds each kind as a [`BlkifRequest`] holding those bytes, which is
//! what the ring carries.
//!
//! * read/write ([`rw`]): up to [`BLKIF_MAX_SEGMENTS_PER_REQUEST`] (11)
//!   segments in the request itself;
//! * indirect ([`indirect`]): `BLKIF_OP_INDIRECT` with the real operation
//!   in `indirect_op`, the segments listed in up to 8 granted pages of 512
//!   descriptors each ([`indirect_page_bytes`]);
//! * discard ([`discard`]): a sector range, optionally secure;
//! * flush ([`flush`]): `BLKIF_OP_FLUSH_DISKCACHE` or
//!   `BLKIF_OP_WRITE_BARRIER` with no segments, as Linux sends an empty
//!   flush.
//!
//! The response echoes the id and the operation (the real one for an
//! indirect request: [`response_op`]); its status is one of
//! `BLKIF_RSP_*` ([`Status`]).

use alloc::vec::Vec;

use hypercall_abi::GrantRef;
use hypercall_abi::io::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_OKAY, BlkifRequest,
    BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::SEGS_PER_INDIRECT_FRAME;

/// A smaller request laid over the start of a zeroed slot.
fn in_slot<T: IntoBytes + Immutable>(value: &T) -> BlkifRequest {
    let mut slot = BlkifRequest::default();
    let bytes = slot.as_mut_bytes();
    let src = value.as_bytes();
    if let Some(dst) = bytes.get_mut(..src.len()) {
        dst.copy_from_slice(src);
    }
    slot
}

/// A read or write (`operation`) of `segs` (at most 11) from `sector`;
/// `None` for more segments.
pub fn rw(
    operation: u8,
    handle: u16,
    id: u64,
    sector: u64,
    segs: &[BlkifRequestSegment],
) -> Option<BlkifRequest> {
    if segs.len() > BLKIF_MAX_SEGMENTS_PER_REQUEST {
        return None;
    }
    let mut req = BlkifRequest {
        operation,
        nr_segments: u8::try_from(segs.len()).ok()?,
        handle,
        id,
        sector_number: sector,
        ..BlkifRequest::default()
    };
    for (slot, seg) in req.seg.iter_mut().zip(segs) {
        *slot = *seg;
    }
    Some(req)
}

/// An indirect read or write (`indirect_op`) of `nr_segments` segments
/// listed in the pages granted as `indirect_grefs` (at most 8); `None` if
/// the counts do not fit.
pub fn indirect(
    indirect_op: u8,
    handle: u16,
    id: u64,
    sector: u64,
    nr_segments: u16,
    indirect_grefs: &[GrantRef],
) -> Option<BlkifRequest> {
    let pages = indirect_pages_for(u32::from(nr_segments));
    if indirect_grefs.len() > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST
        || indirect_grefs.len() != pages as usize
        || nr_segments == 0
    {
        return None;
    }
    let mut req = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op,
        nr_segments,
        id,
        sector_number: sector,
        handle,
        ..BlkifRequestIndirect::default()
    };
    for (slot, g) in req.indirect_grefs.iter_mut().zip(indirect_grefs) {
        *slot = *g;
    }
    Some(in_slot(&req))
}

/// A discard of `nr_sectors` sectors from `sector` (`secure`:
/// `BLKIF_DISCARD_SECURE`).
pub fn discard(handle: u16, id: u64, sector: u64, nr_sectors: u64, secure: bool) -> BlkifRequest {
    in_slot(&BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        flag: if secure { BLKIF_DISCARD_SECURE } else { 0 },
        handle,
        id,
        sector_number: sector,
        nr_sectors,
        ..BlkifRequestDiscard::default()
    })
}

/// An empty flush or barrier (`operation`), as Linux sends for a flush
/// with no data: no segments, sector 0.
pub fn flush(operation: u8, handle: u16, id: u64) -> BlkifRequest {
    BlkifRequest {
        operation,
        handle,
        id,
        ..BlkifRequest::default()
    }
}

/// The slot read as an indirect request.
pub fn as_indirect(req: &BlkifRequest) -> BlkifRequestIndirect {
    BlkifRequestIndirect::read_from_prefix(req.as_bytes())
        .map(|(r, _)| r)
        .unwrap_or_default()
}

/// The slot read as a discard.
pub fn as_discard(req: &BlkifRequest) -> BlkifRequestDiscard {
    BlkifRequestDiscard::read_from_prefix(req.as_bytes())
        .map(|(r, _)| r)
        .unwrap_or_default()
}

/// The operation a response to `req` carries: `indirect_op` for an
/// indirect request, else `operation`.
pub fn response_op(req: &BlkifRequest) -> u8 {
    if req.operation == BLKIF_OP_INDIRECT {
        as_indirect(req).indirect_op
    } else {
        req.operation
    }
}

/// Indirect pages needed for `nr_segments` segments
/// (`INDIRECT_GREFS`).
pub const fn indirect_pages_for(nr_segments: u32) -> u32 {
    nr_segments.div_ceil(SEGS_PER_INDIRECT_FRAME)
}

/// The bytes of an indirect page listing `segs` (at most 512): 8 bytes
/// per descriptor from offset 0.
pub fn indirect_page_bytes(segs: &[BlkifRequestSegment]) -> Vec<u8> {
    let n = segs.len().min(SEGS_PER_INDIRECT_FRAME as usize);
    segs.get(..n).unwrap_or(&[]).as_bytes().to_vec()
}

/// The descriptors in the first `n` slots of an indirect page's bytes (for
/// back ends and tests).
pub fn parse_indirect_page(bytes: &[u8], n: usize) -> Vec<BlkifRequestSegment> {
    bytes
        .chunks_exact(8)
        .take(n)
        .filter_map(|c| BlkifRequestSegment::read_from_bytes(c).ok())
        .collect()
}

/// What a response status means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// `BLKIF_RSP_OKAY`.
    Okay,
    /// `BLKIF_RSP_EOPNOTSUPP`: the back end does not do this operation.
    NotSupported,
    /// `BLKIF_RSP_ERROR`, or any other value (Linux reads unknown statuses
    /// as errors).
    Error,
}

impl Status {
    /// The status a response carries.
    pub const fn from_raw(status: i16) -> Status {
        match status {
            BLKIF_RSP_OKAY => Status::Okay,
            BLKIF_RSP_EOPNOTSUPP => Status::NotSupported,
            _ => Status::Error,
        }
    }

    /// The worse of two statuses (error over not supported over okay), as
    /// Linux combines the parts of a split request.
    pub const fn worst(self, other: Status) -> Status {
        match (self, other) {
            (Status::Error, _) | (_, Status::Error) => Status::Error,
            (Status::NotSupported, _) | (_, Status::NotSupported) => Status::NotSupported,
            _ => Status::Okay,
        }
    }
}
