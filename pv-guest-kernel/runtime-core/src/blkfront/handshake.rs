//! The XenBus handshake of a block front end: which keys it reads and
//! writes, in which order, and what the answers mean.
//!
//! The order is Linux's `xen-blkfront` (`talk_to_blkback`,
//! `blkfront_connect`, `blkfront_gather_backend_features`):
//!
//! 1. **Probe** ([`read_frontend`]), in the device's own directory
//!    (`device/vbd/<vdev>`): `backend-id`, `backend` (what Linux's XenBus
//!    core reads), then `virtual-device` (or `virtual-device-ext`).
//! 2. **Back end in InitWait** ([`negotiate_transport`]), in the back
//!    end's directory: `max-ring-page-order` (only if it is missing, the
//!    older `max-ring-pages`), then `multi-queue-max-queues`.
//! 3. **Publish** ([`publish`]), in one transaction in the device's
//!    directory: `ring-page-order` (more than one ring page only),
//!    `multi-queue-num-queues` (more than one queue only), `ring-ref` or
//!    `ring-ref0..N` and `event-channel` (under `queue-N/` with several
//!    queues), `protocol` = `x86_64-abi`, `feature-persistent`, then
//!    `state` = 3 (Initialised).
//! 4. **Back end Connected** ([`read_connected`]), in the back end's
//!    directory: `sectors`, `info`, `sector-size` (all three required),
//!    `physical-sector-size`, `feature-barrier`, `feature-flush-cache`,
//!    `feature-discard` (and then `discard-granularity`,
//!    `discard-alignment`, `discard-secure`), `feature-persistent` (only
//!    if the front end offered it), `feature-max-indirect-segments`; the
//!    front end then writes `state` = 4 (Connected).
//!
//! Reads go through a closure that returns a key's raw value, `None` when
//! the key is missing, or the store's error; so the same code runs over
//! the real XenStore and over the tests' maps.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::io::blkif::{BLKIF_ENTRY_SIZE, VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE};
use hypercall_abi::io::ring::ring_size;

use super::{MAX_INDIRECT_SEGMENTS, MAX_QUEUES, MAX_RING_PAGE_ORDER, PAGE_SIZE};

/// The key names.
pub mod keys {
    /// Each end's XenBus state.
    pub const STATE: &str = "state";
    /// Front end: the back end's domain id.
    pub const BACKEND_ID: &str = "backend-id";
    /// Front end: the back end's directory.
    pub const BACKEND: &str = "backend";
    /// Front end: the virtual device number.
    pub const VIRTUAL_DEVICE: &str = "virtual-device";
    /// Front end: the virtual device number in the extended scheme.
    pub const VIRTUAL_DEVICE_EXT: &str = "virtual-device-ext";
    /// Back end: largest ring it maps, as an order of pages.
    pub const MAX_RING_PAGE_ORDER: &str = "max-ring-page-order";
    /// Back end (older scheme): largest ring it maps, in pages.
    pub const MAX_RING_PAGES: &str = "max-ring-pages";
    /// Back end: most queues it serves.
    pub const MULTI_QUEUE_MAX_QUEUES: &str = "multi-queue-max-queues";
    /// Front end: the ring's size as an order of pages.
    pub const RING_PAGE_ORDER: &str = "ring-page-order";
    /// Front end (older scheme): the ring's size in pages.
    pub const NUM_RING_PAGES: &str = "num-ring-pages";
    /// Front end: queues in use.
    pub const MULTI_QUEUE_NUM_QUEUES: &str = "multi-queue-num-queues";
    /// Front end: the grant of a one-page ring.
    pub const RING_REF: &str = "ring-ref";
    /// Front end: the event channel of a ring.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Front end: the ring's ABI.
    pub const PROTOCOL: &str = "protocol";
    /// Both ends: persistent grants.
    pub const FEATURE_PERSISTENT: &str = "feature-persistent";
    /// Back end: size in 512-byte sectors.
    pub const SECTORS: &str = "sectors";
    /// Back end: `VDISK_*` flags.
    pub const INFO: &str = "info";
    /// Back end: logical block size in bytes.
    pub const SECTOR_SIZE: &str = "sector-size";
    /// Back end: physical block size in bytes.
    pub const PHYSICAL_SECTOR_SIZE: &str = "physical-sector-size";
    /// Back end: `BLKIF_OP_WRITE_BARRIER` works.
    pub const FEATURE_BARRIER: &str = "feature-barrier";
    /// Back end: `BLKIF_OP_FLUSH_DISKCACHE` works.
    pub const FEATURE_FLUSH_CACHE: &str = "feature-flush-cache";
    /// Back end: `BLKIF_OP_DISCARD` works.
    pub const FEATURE_DISCARD: &str = "feature-discard";
    /// Back end: discard extent size in bytes.
    pub const DISCARD_GRANULARITY: &str = "discard-granularity";
    /// Back end: offset of the first discard extent in bytes.
    pub const DISCARD_ALIGNMENT: &str = "discard-alignment";
    /// Back end: `BLKIF_DISCARD_SECURE` works.
    pub const DISCARD_SECURE: &str = "discard-secure";
    /// Back end: most segments of an indirect request.
    pub const FEATURE_MAX_INDIRECT_SEGMENTS: &str = "feature-max-indirect-segments";
}

/// `XEN_IO_PROTO_ABI_X86_64`: the value of `protocol`.
pub const PROTOCOL_X86_64: &str = "x86_64-abi";

/// What the front end is willing to use; the back end's offers are cut
/// down to these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest ring, as an order of pages (at most [`MAX_RING_PAGE_ORDER`]).
    pub max_ring_page_order: u32,
    /// Most queues (1..=[`MAX_QUEUES`]).
    pub max_queues: u32,
    /// Most segments of an indirect request (0: no indirect requests; at
    /// most [`MAX_INDIRECT_SEGMENTS`]). Linux's default is 32.
    pub max_indirect_segments: u32,
    /// Offer persistent grants (`feature-persistent` = 1).
    pub persistent: bool,
}

impl Limits {
    /// Four ring pages (128 requests), one queue, 32 indirect segments,
    /// persistent grants.
    pub const DEFAULT: Limits = Limits {
        max_ring_page_order: 2,
        max_queues: 1,
        max_indirect_segments: 32,
        persistent: true,
    };

    /// The limits brought into range.
    pub fn clamped(self) -> Limits {
        Limits {
            max_ring_page_order: self.max_ring_page_order.min(MAX_RING_PAGE_ORDER),
            max_queues: self.max_queues.clamp(1, MAX_QUEUES),
            max_indirect_segments: self.max_indirect_segments.min(MAX_INDIRECT_SEGMENTS),
            persistent: self.persistent,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why the handshake cannot go on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError<E> {
    /// Reading the store failed.
    Store(E),
    /// A key that must be there is not.
    Missing(&'static str),
    /// A key holds something unusable.
    Invalid {
        /// The key.
        key: &'static str,
        /// What it held (lossy UTF-8).
        value: String,
    },
}

impl<E: fmt::Display> fmt::Display for HandshakeError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Store(e) => write!(f, "{e}"),
            HandshakeError::Missing(k) => write!(f, "key {k} is missing"),
            HandshakeError::Invalid { key, value } => write!(f, "key {key} holds {value:?}"),
        }
    }
}

/// A read of one key: its raw value, `None` if it does not exist.
pub type Read<'a, E> = dyn FnMut(&'static str) -> Result<Option<Vec<u8>>, E> + 'a;

fn trimmed(value: &[u8]) -> &[u8] {
    let is_pad = |b: &u8| b.is_ascii_whitespace() || *b == 0;
    let start = value.iter().position(|b| !is_pad(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_pad(b))
        .map_or(start, |i| i + 1);
    value.get(start..end).unwrap_or(&[])
}

/// A decimal number as XenStore holds it (surrounding blanks and NULs
/// ignored), or `None`.
pub fn parse_uint(value: &[u8]) -> Option<u64> {
    let digits = trimmed(value);
    let digits = digits.strip_prefix(b"+").unwrap_or(digits);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        n.checked_mul(10)?.checked_add(d)
    })
}

/// A number as C's `%i` reads it: `0x` hexadecimal, a leading `0` octal,
/// else decimal (`virtual-device`, `backend-id`, the device's directory
/// name).
pub fn parse_int_auto(value: &[u8]) -> Option<u64> {
    let s = trimmed(value);
    let (digits, radix) = if let Some(h) = s.strip_prefix(b"0x").or(s.strip_prefix(b"0X")) {
        (h, 16)
    } else if s.len() > 1 && s.first() == Some(&b'0') {
        (s.get(1..).unwrap_or(&[]), 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = u64::from(char::from(b).to_digit(radix)?);
        n.checked_mul(u64::from(radix))?.checked_add(d)
    })
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn get<E>(read: &mut Read<'_, E>, key: &'static str) -> Result<Option<Vec<u8>>, HandshakeError<E>> {
    read(key).map_err(HandshakeError::Store)
}

/// `xenbus_read_unsigned`: the key's number, or `default` when it is
/// missing or not a number.
fn unsigned<E>(
    read: &mut Read<'_, E>,
    key: &'static str,
    default: u64,
) -> Result<u64, HandshakeError<E>> {
    Ok(get(read, key)?
        .and_then(|v| parse_uint(&v))
        .unwrap_or(default))
}

/// A key that must hold a number.
fn required<E>(read: &mut Read<'_, E>, key: &'static str) -> Result<u64, HandshakeError<E>> {
    let v = get(read, key)?.ok_or(HandshakeError::Missing(key))?;
    parse_uint(&v).ok_or_else(|| HandshakeError::Invalid {
        key,
        value: lossy(&v),
    })
}

/// What the device's own directory says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendDetails {
    /// The back end's directory (`/local/domain/0/backend/vbd/D/V`).
    pub backend: String,
    /// The back end's domain.
    pub backend_id: u16,
    /// `virtual-device` (or `virtual-device-ext`).
    pub virtual_device: u64,
    /// The `handle` of every request: the directory's name, as a number,
    /// cut to 16 bits (Linux's `info->handle`).
    pub handle: u16,
}

/// Read the device's directory (`dir_name` is its last component, e.g.
/// `51712`): `backend-id`, `backend`, `virtual-device` (or
/// `virtual-device-ext`).
pub fn read_frontend<E>(
    dir_name: &str,
    read: &mut Read<'_, E>,
) -> Result<FrontendDetails, HandshakeError<E>> {
    let id = get(read, keys::BACKEND_ID)?.ok_or(HandshakeError::Missing(keys::BACKEND_ID))?;
    let backend_id = parse_int_auto(&id)
        .filter(|d| *d < u64::from(hypercall_abi::DomId::FIRST_RESERVED.0))
        .and_then(|d| u16::try_from(d).ok())
        .ok_or_else(|| HandshakeError::Invalid {
            key: keys::BACKEND_ID,
            value: lossy(&id),
        })?;
    let path = get(read, keys::BACKEND)?.ok_or(HandshakeError::Missing(keys::BACKEND))?;
    let backend = lossy(trimmed(&path));
    if backend.is_empty() || backend.contains('\0') {
        return Err(HandshakeError::Invalid {
            key: keys::BACKEND,
            value: backend,
        });
    }
    let (key, vd) = match get(read, keys::VIRTUAL_DEVICE)? {
        Some(v) => (keys::VIRTUAL_DEVICE, v),
        None => (
            keys::VIRTUAL_DEVICE_EXT,
            get(read, keys::VIRTUAL_DEVICE_EXT)?
                .ok_or(HandshakeError::Missing(keys::VIRTUAL_DEVICE))?,
        ),
    };
    let virtual_device = parse_int_auto(&vd).ok_or_else(|| HandshakeError::Invalid {
        key,
        value: lossy(&vd),
    })?;
    let handle = parse_int_auto(dir_name.as_bytes()).unwrap_or(virtual_device);
    Ok(FrontendDetails {
        backend,
        backend_id,
        virtual_device,
        #[allow(clippy::cast_possible_truncation)] // blkif_vdev_t is 16 bits, as in C
        handle: (handle & 0xFFFF) as u16,
    })
}

/// The ring and queues both ends will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transport {
    /// The ring's size as an order of pages.
    pub ring_page_order: u32,
    /// The back end spoke only the older `max-ring-pages`: write
    /// `num-ring-pages` too.
    pub legacy_ring_pages: bool,
    /// Queues (rings), at least 1.
    pub queues: u32,
}

impl Transport {
    /// Pages of each ring.
    pub fn ring_pages(&self) -> u32 {
        1 << self.ring_page_order.min(MAX_RING_PAGE_ORDER)
    }

    /// Requests each ring holds (`__CONST_RING_SIZE(blkif, pages * 4096)`).
    pub fn ring_slots(&self) -> u32 {
        ring_size(self.ring_pages() as usize * PAGE_SIZE, BLKIF_ENTRY_SIZE)
    }
}

/// What the back end offers in InitWait, cut to `limits`: reads
/// `max-ring-page-order` (else `max-ring-pages`), then
/// `multi-queue-max-queues`.
pub fn negotiate_transport<E>(
    limits: &Limits,
    read: &mut Read<'_, E>,
) -> Result<Transport, HandshakeError<E>> {
    let limits = limits.clamped();
    let (backend_order, legacy) = match get(read, keys::MAX_RING_PAGE_ORDER)? {
        Some(v) => (parse_uint(&v).unwrap_or(0), false),
        None => match get(read, keys::MAX_RING_PAGES)?.and_then(|v| parse_uint(&v)) {
            // ffs(pages) - 1, as the header computes it.
            Some(pages) if pages > 0 => (u64::from(pages.trailing_zeros()), true),
            _ => (0, false),
        },
    };
    let order = u32::try_from(backend_order)
        .unwrap_or(u32::MAX)
        .min(limits.max_ring_page_order);
    let backend_queues = unsigned(read, keys::MULTI_QUEUE_MAX_QUEUES, 1)?;
    let queues = u32::try_from(backend_queues)
        .unwrap_or(u32::MAX)
        .min(limits.max_queues)
        .max(1);
    Ok(Transport {
        ring_page_order: order,
        legacy_ring_pages: legacy && order > 0,
        queues,
    })
}

/// One ring as the front end set it up: the grants of its pages and its
/// event channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingDetails {
    /// Grant reference of each ring page, in order.
    pub refs: Vec<u32>,
    /// The event channel (an unbound port the back end binds).
    pub port: u32,
}

/// The rings given do not match the transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingMismatch;

impl fmt::Display for RingMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rings do not match the negotiated queues and ring pages")
    }
}

/// The writes that publish the front end's transport, in order, as
/// `(key relative to the device's directory, value)`; the last one is
/// `state` = Initialised. Written in one transaction.
pub fn publish(
    transport: &Transport,
    rings: &[RingDetails],
    persistent: bool,
) -> Result<Vec<(String, String)>, RingMismatch> {
    let pages = transport.ring_pages() as usize;
    if rings.len() != transport.queues.max(1) as usize
        || rings.iter().any(|r| r.refs.len() != pages)
    {
        return Err(RingMismatch);
    }
    let mut out = Vec::new();
    if pages > 1 {
        out.push((
            keys::RING_PAGE_ORDER.to_string(),
            transport.ring_page_order.to_string(),
        ));
        if transport.legacy_ring_pages {
            out.push((keys::NUM_RING_PAGES.to_string(), pages.to_string()));
        }
    }
    let per_ring = |out: &mut Vec<(String, String)>, prefix: &str, ring: &RingDetails| {
        if let [only] = ring.refs.as_slice() {
            out.push((format!("{prefix}{}", keys::RING_REF), only.to_string()));
        } else {
            for (i, r) in ring.refs.iter().enumerate() {
                out.push((format!("{prefix}{}{i}", keys::RING_REF), r.to_string()));
            }
        }
        out.push((
            format!("{prefix}{}", keys::EVENT_CHANNEL),
            ring.port.to_string(),
        ));
    };
    match rings {
        [only] => per_ring(&mut out, "", only),
        _ => {
            out.push((
                keys::MULTI_QUEUE_NUM_QUEUES.to_string(),
                rings.len().to_string(),
            ));
            for (q, ring) in rings.iter().enumerate() {
                per_ring(&mut out, &format!("queue-{q}/"), ring);
            }
        }
    }
    out.push((keys::PROTOCOL.to_string(), PROTOCOL_X86_64.to_string()));
    out.push((
        keys::FEATURE_PERSISTENT.to_string(),
        if persistent { "1" } else { "0" }.to_string(),
    ));
    out.push((keys::STATE.to_string(), "3".to_string()));
    Ok(out)
}

/// The disk, as the connected back end describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes (a power of two, 512..=65536): every
    /// offset and length is a multiple of it.
    pub sector_size: u32,
    /// Physical block size in bytes (a power of two, at least
    /// `sector_size`).
    pub physical_sector_size: u32,
    /// The `info` key: `VDISK_*` flags.
    pub info: u32,
}

impl DiskInfo {
    /// Size in bytes.
    pub fn bytes(&self) -> u64 {
        self.sectors.saturating_mul(super::SECTOR_SIZE)
    }

    /// `VDISK_READONLY`: writes and discards are refused.
    pub fn readonly(&self) -> bool {
        self.info & VDISK_READONLY != 0
    }

    /// `VDISK_REMOVABLE`.
    pub fn removable(&self) -> bool {
        self.info & VDISK_REMOVABLE != 0
    }

    /// `VDISK_CDROM`.
    pub fn cdrom(&self) -> bool {
        self.info & VDISK_CDROM != 0
    }
}

/// How a flush reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// The back end offers neither: it writes synchronously (Linux's
    /// reading), so a flush completes at once.
    None,
    /// `BLKIF_OP_FLUSH_DISKCACHE` with no segments (`feature-flush-cache`).
    FlushCache,
    /// `BLKIF_OP_WRITE_BARRIER` with no segments (`feature-barrier` without
    /// `feature-flush-cache`).
    Barrier,
}

/// Discard, as the back end offers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Discard {
    /// `discard-granularity` in bytes (default: the sector size).
    pub granularity: u32,
    /// `discard-alignment` in bytes (default 0).
    pub alignment: u32,
    /// `discard-secure`: `BLKIF_DISCARD_SECURE` works.
    pub secure: bool,
}

/// What the connected back end offers, cut to the front end's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// How to flush.
    pub flush: FlushMode,
    /// Discard, if offered.
    pub discard: Option<Discard>,
    /// Both ends do persistent grants.
    pub persistent: bool,
    /// Segments of an indirect request (0: direct requests only, 11
    /// segments).
    pub max_indirect_segments: u32,
}

fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Read what the connected back end says about the disk and its features
/// (see the module's list for the keys and their order).
pub fn read_connected<E>(
    limits: &Limits,
    read: &mut Read<'_, E>,
) -> Result<(DiskInfo, Features), HandshakeError<E>> {
    let limits = limits.clamped();
    let sectors = required(read, keys::SECTORS)?;
    let info = u32_of(required(read, keys::INFO)?);
    let raw_size = required(read, keys::SECTOR_SIZE)?;
    let sector_size = u32::try_from(raw_size)
        .ok()
        .filter(|s| s.is_power_of_two() && (512..=65536).contains(s))
        .ok_or_else(|| HandshakeError::Invalid {
            key: keys::SECTOR_SIZE,
            value: raw_size.to_string(),
        })?;
    let physical = u32_of(unsigned(
        read,
        keys::PHYSICAL_SECTOR_SIZE,
        u64::from(sector_size),
    )?);
    let physical_sector_size = if physical.is_power_of_two() && physical >= sector_size {
        physical
    } else {
        sector_size
    };
    let mut flush = FlushMode::None;
    if unsigned(read, keys::FEATURE_BARRIER, 0)? != 0 {
        flush = FlushMode::Barrier;
    }
    if unsigned(read, keys::FEATURE_FLUSH_CACHE, 0)? != 0 {
        flush = FlushMode::FlushCache;
    }
    let discard = if unsigned(read, keys::FEATURE_DISCARD, 0)? != 0 {
        Some(Discard {
            granularity: u32_of(unsigned(
                read,
                keys::DISCARD_GRANULARITY,
                u64::from(sector_size),
            )?),
            alignment: u32_of(unsigned(read, keys::DISCARD_ALIGNMENT, 0)?),
            secure: unsigned(read, keys::DISCARD_SECURE, 0)? != 0,
        })
    } else {
        None
    };
    let persistent = limits.persistent && unsigned(read, keys::FEATURE_PERSISTENT, 0)? != 0;
    let indirect = u32_of(unsigned(read, keys::FEATURE_MAX_INDIRECT_SEGMENTS, 0)?)
        .min(limits.max_indirect_segments);
    let max_indirect_segments =
        if indirect as usize <= hypercall_abi::io::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST {
            0
        } else {
            indirect
        };
    Ok((
        DiskInfo {
            sectors,
            sector_size,
            physical_sector_size,
            info,
        },
        Features {
            flush,
            discard,
            persistent,
            max_indirect_segments,
        },
    ))
}
