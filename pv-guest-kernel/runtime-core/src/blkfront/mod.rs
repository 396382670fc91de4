//! The block front end (`xen/include/public/io/blkif.h`), without I/O.
//!
//! A guest reaches a virtual disk the way Linux's `xen-blkfront` does: it
//! finds the device under `device/vbd/<vdev>` in XenStore, follows the
//! XenBus state machine with the back end (`blkback` in dom0), shares a
//! ring of requests and an event channel, and moves data through pages it
//! grants to the back end. This module holds every decision of that
//! protocol as plain code that the host tests drive; `pv_runtime::blkfront`
//! does the XenStore, grant, event-channel and memory I/O around it.
//!
//! * [`handshake`]: which XenStore keys are read and written, in which
//!   order, and what the back end's answers mean (ring pages, queues,
//!   persistent grants, indirect segments, flush, discard, sector sizes,
//!   `info`).
//! * [`segments`]: a byte range cut into page-sized segments
//!   (`first_sect..=last_sect` in 512-byte units).
//! * [`request`]: ring requests (direct with up to 11 segments, indirect,
//!   discard, flush) and what a response status means.
//! * [`shadow`]: request ids, in-flight slots and response matching.
//! * [`datapath`]: the data path over an [`Env`](datapath::Env) (grants,
//!   page copies, notifications): pages from a pool (granted once and kept
//!   when persistent grants are negotiated), requests split to fit the
//!   ring, many in flight, responses matched and checked, errors mapped.
//! * [`check`]: the `blkcheck` test guest's pattern, arguments and
//!   arithmetic.
//!
//! Units, as Linux's front and back ends use them (Xen 4.17's header
//! describes a `feature-large-sector-size` scheme that Linux never
//! implemented and later Xen headers deprecate): the back end's `sectors`
//! key, request `sector_number` and segment `first_sect`/`last_sect` are
//! always 512-byte sectors; `sector-size` is the logical block size, to
//! which every offset and length must be aligned. The front end does not
//! write `feature-large-sector-size`.
//!
//! The back end is not trusted: its XenStore values are parsed with
//! defaults as Linux's `xenbus_read_unsigned` does, and a response whose
//! id matches no request in flight, repeats one, names the wrong operation
//! or overflows the ring turns the device off for good (Linux's
//! `BLKIF_STATE_ERROR`); every request in flight then completes with an
//! error, and no page or grant is lost or reused while the back end may
//! still touch it.

pub mod check;
pub mod datapath;
pub mod handshake;
pub mod request;
pub mod segments;
pub mod shadow;

#[cfg(test)]
mod tests;

pub use datapath::{
    Completed, DataPath, Env, GrantFailed, Hostile, IoError, Op, PageIdx, StillInUse, SubmitError,
    Tag,
};
pub use handshake::{Discard, DiskInfo, Features, FlushMode, Limits, Transport};

/// Bytes in a page (and in a grant).
pub const PAGE_SIZE: usize = 4096;
/// Bytes in a blkif sector: the unit of every sector number on the wire.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes in a blkif sector, as a length.
pub const SECTOR_BYTES: usize = 512;
/// Segments in a direct request (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const DIRECT_SEGMENTS: u32 = 11;
const _: () =
    assert!(DIRECT_SEGMENTS as usize == hypercall_abi::io::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST);
/// 512-byte sectors in a page.
pub const SECTORS_PER_PAGE: usize = PAGE_SIZE / 512;
/// Segment descriptors in one indirect page (`GRANTS_PER_INDIRECT_FRAME`).
pub const SEGS_PER_INDIRECT_FRAME: u32 = 512;
/// Largest ring a front end may ask for, as an order of pages
/// (`XENBUS_MAX_RING_GRANT_ORDER`: 16 pages).
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Most queues this front end handles (one ring and event channel each).
pub const MAX_QUEUES: u32 = 16;
/// Most segments of an indirect request (8 indirect pages of 512).
pub const MAX_INDIRECT_SEGMENTS: u32 = 4096;
