//! Volumes: named pieces of dom0's disks, recorded in a small volume table at
//! the start of each disk that carries them, so that they survive reboots
//! (`dom0ctl volume create|list|rm`, `docs/block.md`). The block back end
//! finds a volume by name ([`Volumes::find`]) and marks it used by a domain
//! ([`Volumes::set_in_use`]); a used volume cannot be removed.
//!
//! # On-disk format
//!
//! All integers little-endian; sectors of 512 bytes. The table lives in the
//! first 32 sectors as two copies, A at sector 0 and B at sector 16, each
//! [`COPY_SECTORS`] long:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `"XLHVVOLS"` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | sectors per copy (16) |
//! | 16 | 8 | generation: one more than the newest copy's at each update |
//! | 24 | 4 | which copy this is (0 = A, 1 = B) |
//! | 28 | 4 | entries in the table (64) |
//! | 32 | 4 | bytes per entry (96) |
//! | 36 | 4 | CRC-32 (IEEE) of the whole copy, 8 KiB, with these 4 bytes zero |
//! | 40 | 8 | first sector a volume may use (2048: 1 MiB) |
//! | 48 | 8 | volume alignment in sectors (2048: 1 MiB) |
//! | 56 | 8 | the disk's size in sectors when the copy was written (informational) |
//! | 64 | 448 | zero |
//! | 512 | 64 × 96 | entries |
//! | 6656 | 1536 | zero |
//!
//! An entry: `name` (64 bytes, NUL-padded, a valid domain name), `u64` start
//! sector (a multiple of 2048, at least 2048), `u64` sector count (at least 1,
//! the volume inside the disk), `u32` flags (bit 0: in use; an unused entry is
//! all zero), 12 bytes zero. Volumes never overlap and names are distinct.
//!
//! **Updates are crash-consistent.** An update writes the whole new table into
//! the copy that does *not* hold the newest valid table, with the generation one
//! higher than any copy's, then flushes the disk; only then is it committed.
//! A reader takes the valid copy (magic, version, CRC, every field and entry
//! checked) with the highest generation. A crash or a torn write during an
//! update can only damage the copy being written, so the previous table
//! survives; once the write is whole the new table is the one read.
//!
//! A disk whose first 128 sectors are zero has no table yet; `volume create`
//! makes one. A disk whose first sectors hold anything else and no valid table
//! is refused ([`VolumeError::HasData`], [`VolumeError::Damaged`]) unless the
//! create is forced on it by name.
//!
//! A volume's contents are what the disk held there: creating one neither
//! zeroes nor discards it (virtio-drivers cannot discard), as `lvcreate`
//! without `--zero`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use control_proto::{
    ErrorCode, ErrorReply, Request, Response, TableState, ValidationError, VolumeDisk, VolumeInfo,
    validate_name, validate_volume_size,
};

use crate::disks::{DiskError, DiskInfo, DiskOp, DiskReq, Disks, SECTOR};

/// The magic at the start of each copy.
pub const MAGIC: [u8; 8] = *b"XLHVVOLS";
/// The format version.
pub const VERSION: u32 = 1;
/// Sectors per copy of the table.
pub const COPY_SECTORS: u64 = 16;
/// Where the two copies start (A, B).
pub const COPIES: [u64; 2] = [0, COPY_SECTORS];
/// Volumes per disk at most.
pub const MAX_VOLUMES: usize = 64;
/// Bytes per entry.
pub const ENTRY_BYTES: usize = 96;
/// Bytes of an entry's name field (the longest domain name).
pub const NAME_BYTES: usize = 64;
/// The first sector a volume may use, and the alignment of every volume (1 MiB).
pub const ALIGN: u64 = 2048;
/// Sectors at the start of a disk that must be zero for it to count as blank.
pub const PROBE_SECTORS: u64 = 128;
/// The in-use flag of an entry.
pub const FLAG_USED: u32 = 1;

const COPY_BYTES: usize = 16 * SECTOR;
/// The header's words for the geometry above.
const COPY_SECTORS_WORD: u32 = 16;
const MAX_VOLUMES_WORD: u32 = 64;
const ENTRY_BYTES_WORD: u32 = 96;
const _: () = assert!(
    COPY_SECTORS_WORD as u64 == COPY_SECTORS
        && COPY_BYTES == COPY_SECTORS_WORD as usize * SECTOR
        && MAX_VOLUMES_WORD as usize == MAX_VOLUMES
        && ENTRY_BYTES_WORD as usize == ENTRY_BYTES
        && HEADER_BYTES + MAX_VOLUMES * ENTRY_BYTES <= COPY_BYTES
);

/// The copy number's word (0 for A, 1 for B).
fn copy_word(copy: usize) -> u32 {
    u32::from(copy != 0)
}

/// The survey of every disk: what it is, and what its first sectors hold
/// (with the highest generation seen) or why they could not be read.
type Survey = Vec<(DiskInfo, Result<(DiskState, u64), VolumeError>)>;
const HEADER_BYTES: usize = SECTOR;
const CHECKSUM_AT: usize = 36;

/// A volume as a table records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Its first sector.
    pub start: u64,
    /// Its size in sectors.
    pub sectors: u64,
}

impl Entry {
    /// One past its last sector.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }
}

/// One disk's volume table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// Its generation.
    pub generation: u64,
    /// The copy it was read from (0 = A, 1 = B).
    pub copy: usize,
    /// The volumes, by start sector.
    pub entries: Vec<Entry>,
}

/// What the first sectors of a disk hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// Zeros: no table yet.
    Blank,
    /// A volume table.
    Table(Table),
    /// Something else: data a volume table must not overwrite.
    Foreign,
    /// A volume table whose copies both fail their checks (why, for the newer).
    Damaged(String),
}

/// Where a volume is: what the block back end needs to serve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    /// Its name.
    pub name: String,
    /// The disk's index in [`Disks::list`] (for [`Disks::run`]).
    pub disk: usize,
    /// The disk's name.
    pub disk_name: String,
    /// Its first sector on the disk.
    pub start: u64,
    /// Its size in sectors.
    pub sectors: u64,
    /// Whether the disk refuses writes (the volume can then only be used
    /// read-only).
    pub readonly: bool,
}

/// A domain that uses a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User {
    /// The domain.
    pub domid: u16,
    /// Whether it may write.
    pub writable: bool,
}

/// Why a volume operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeError {
    /// dom0 drives no disk at all.
    NoDisks,
    /// No disk has that name.
    UnknownDisk(String),
    /// No volume has that name (on that disk, when one was named).
    UnknownVolume {
        /// The volume.
        name: String,
        /// The disk it was looked for on.
        disk: Option<String>,
    },
    /// The name or the size is not valid.
    Invalid(ValidationError),
    /// A volume of that name exists.
    Exists {
        /// The volume.
        name: String,
        /// Its disk.
        disk: String,
    },
    /// A disk has that name (a config's `target=` names a disk or a volume,
    /// so the two share names).
    DiskName(String),
    /// Volumes of that name are on several disks.
    Ambiguous {
        /// The volume.
        name: String,
        /// The disks.
        disks: Vec<String>,
    },
    /// The disk is read-only.
    ReadOnly(String),
    /// No free extent is large enough.
    NoSpace {
        /// The disk (none: no disk had room).
        disk: Option<String>,
        /// Sectors asked for.
        want: u64,
        /// The largest extent found, in sectors.
        largest: u64,
    },
    /// The disk's table holds [`MAX_VOLUMES`] volumes.
    TableFull(String),
    /// Domains use the volume (or, for [`Volumes::set_in_use`], a user
    /// conflicts: a writer must be the only user).
    InUse {
        /// The volume.
        name: String,
        /// Its users.
        users: Vec<u16>,
    },
    /// The disk holds data that is not a volume table.
    HasData(String),
    /// The disk's volume table is damaged.
    Damaged {
        /// The disk.
        disk: String,
        /// What is wrong with the newer copy.
        why: String,
    },
    /// `force` without a disk named.
    ForceNeedsDisk,
    /// The disk failed a request.
    Io {
        /// The disk.
        disk: String,
        /// How.
        error: DiskError,
    },
}

/// Sizes as people write them: `64M`, `1G`, `1536K`, else bytes.
pub fn size_text(bytes: u64) -> String {
    match bytes {
        0 => String::from("0"),
        b if b % (1 << 40) == 0 => format!("{}T", b >> 40),
        b if b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => format!("{b} bytes"),
    }
}

fn sectors_text(sectors: u64) -> String {
    size_text(sectors.saturating_mul(SECTOR as u64))
}

impl fmt::Display for VolumeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeError::NoDisks => f.write_str(
                "dom0 drives no disk; give QEMU one with `scripts/run --disk PATH` \
                 (or --disk new:PATH:SIZE)",
            ),
            VolumeError::UnknownDisk(d) => write!(f, "dom0 has no disk named {d}"),
            VolumeError::UnknownVolume { name, disk: None } => {
                write!(f, "no volume named {name}")
            }
            VolumeError::UnknownVolume {
                name,
                disk: Some(d),
            } => write!(f, "no volume named {name} on disk {d}"),
            VolumeError::Invalid(e) => write!(f, "{}: {e}", e.key()),
            VolumeError::Exists { name, disk } => {
                write!(f, "a volume named {name} exists already (on disk {disk})")
            }
            VolumeError::DiskName(n) => write!(
                f,
                "{n} is a disk's name; a volume needs another (a config's target= names \
                 either)"
            ),
            VolumeError::Ambiguous { name, disks } => write!(
                f,
                "volumes named {name} are on several disks ({}); name one with --on DISK",
                disks.join(", ")
            ),
            VolumeError::ReadOnly(d) => write!(f, "disk {d} is read-only"),
            VolumeError::NoSpace {
                disk: Some(d),
                want,
                largest,
            } => write!(
                f,
                "no room for {} on disk {d}: its largest free extent is {}",
                sectors_text(*want),
                sectors_text(*largest)
            ),
            VolumeError::NoSpace {
                disk: None,
                want,
                largest,
            } => write!(
                f,
                "no disk has room for {}: the largest free extent is {}",
                sectors_text(*want),
                sectors_text(*largest)
            ),
            VolumeError::TableFull(d) => write!(
                f,
                "the volume table of disk {d} is full ({MAX_VOLUMES} volumes)"
            ),
            VolumeError::InUse { name, users } => {
                write!(f, "volume {name} is in use by domain")?;
                if users.len() > 1 {
                    f.write_str("s")?;
                }
                for (i, u) in users.iter().enumerate() {
                    write!(f, "{}{u}", if i == 0 { " " } else { ", " })?;
                }
                Ok(())
            }
            VolumeError::HasData(d) => write!(
                f,
                "disk {d} holds data and no volume table; `--on {d} --force` puts a volume \
                 table on it (what its first sectors hold is lost)"
            ),
            VolumeError::Damaged { disk, why } => write!(
                f,
                "the volume table of disk {disk} is damaged ({why}); `--on {disk} --force` \
                 starts a new, empty one"
            ),
            VolumeError::ForceNeedsDisk => {
                f.write_str("--force needs the disk named with --on DISK")
            }
            VolumeError::Io { disk, error } => write!(f, "disk {disk}: {error}"),
        }
    }
}

impl From<VolumeError> for ErrorReply {
    fn from(e: VolumeError) -> Self {
        let code = match &e {
            VolumeError::NoDisks | VolumeError::UnknownDisk(_) => ErrorCode::UnknownDisk,
            VolumeError::UnknownVolume { .. } => ErrorCode::UnknownVolume,
            VolumeError::Invalid(_) | VolumeError::ForceNeedsDisk => ErrorCode::BadConfig,
            VolumeError::Exists { .. }
            | VolumeError::DiskName(_)
            | VolumeError::Ambiguous { .. } => ErrorCode::VolumeExists,
            VolumeError::ReadOnly(_) => ErrorCode::DiskReadOnly,
            VolumeError::NoSpace { .. } | VolumeError::TableFull(_) => ErrorCode::NoSpace,
            VolumeError::InUse { .. } => ErrorCode::VolumeInUse,
            VolumeError::HasData(_) | VolumeError::Damaged { .. } => ErrorCode::DiskHasData,
            VolumeError::Io { .. } => ErrorCode::DiskIo,
        };
        ErrorReply::new(code, e.to_string())
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// The CRC-32 of a copy with its checksum field taken as zero.
fn copy_crc(copy: &[u8]) -> u32 {
    let mut c = control_proto::Crc32::new();
    c.update(&copy[..CHECKSUM_AT]);
    c.update(&[0; 4]);
    c.update(&copy[CHECKSUM_AT + 4..]);
    c.finish()
}

/// Copy `copy` (0 = A, 1 = B) of a table with `entries`, as it is written.
pub fn encode(entries: &[Entry], generation: u64, copy: usize, disk_sectors: u64) -> Vec<u8> {
    let mut b = vec![0u8; COPY_BYTES];
    b[..8].copy_from_slice(&MAGIC);
    put32(&mut b, 8, VERSION);
    put32(&mut b, 12, COPY_SECTORS_WORD);
    put64(&mut b, 16, generation);
    put32(&mut b, 24, copy_word(copy));
    put32(&mut b, 28, MAX_VOLUMES_WORD);
    put32(&mut b, 32, ENTRY_BYTES_WORD);
    put64(&mut b, 40, ALIGN);
    put64(&mut b, 48, ALIGN);
    put64(&mut b, 56, disk_sectors);
    for (i, e) in entries.iter().take(MAX_VOLUMES).enumerate() {
        let at = HEADER_BYTES + i * ENTRY_BYTES;
        let n = e.name.len().min(NAME_BYTES);
        b[at..at + n].copy_from_slice(&e.name.as_bytes()[..n]);
        put64(&mut b, at + NAME_BYTES, e.start);
        put64(&mut b, at + NAME_BYTES + 8, e.sectors);
        put32(&mut b, at + NAME_BYTES + 16, FLAG_USED);
    }
    let crc = copy_crc(&b);
    put32(&mut b, CHECKSUM_AT, crc);
    b
}

/// What one copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Copy {
    /// Not a table (no magic).
    Absent,
    /// Our magic, but unusable; the generation when its CRC is right.
    Bad {
        generation: Option<u64>,
        why: String,
    },
    /// A valid table.
    Valid(Table),
}

/// Reads copy `copy` from its bytes, checking everything: magic, CRC,
/// version and geometry, and each entry against the disk of `disk_sectors`.
fn decode(b: &[u8], copy: usize, disk_sectors: u64) -> Copy {
    if b.len() < COPY_BYTES || b[..8] != MAGIC {
        return Copy::Absent;
    }
    let bad = |generation, why: &str| Copy::Bad {
        generation,
        why: String::from(why),
    };
    if le32(b, CHECKSUM_AT) != copy_crc(&b[..COPY_BYTES]) {
        return bad(None, "checksum mismatch");
    }
    let generation = le64(b, 16);
    let g = Some(generation);
    if le32(b, 8) != VERSION {
        return bad(g, "unknown format version");
    }
    let geometry = le32(b, 12) == COPY_SECTORS_WORD
        && le32(b, 24) == copy_word(copy)
        && copy < 2
        && le32(b, 28) == MAX_VOLUMES_WORD
        && le32(b, 32) == ENTRY_BYTES_WORD
        && le64(b, 40) == ALIGN
        && le64(b, 48) == ALIGN;
    if !geometry {
        return bad(g, "unexpected geometry");
    }
    let entries_end = HEADER_BYTES + MAX_VOLUMES * ENTRY_BYTES;
    if b[64..HEADER_BYTES].iter().any(|x| *x != 0)
        || b[entries_end..COPY_BYTES].iter().any(|x| *x != 0)
    {
        return bad(g, "reserved bytes are not zero");
    }
    let mut entries = Vec::new();
    for i in 0..MAX_VOLUMES {
        let e = &b[HEADER_BYTES + i * ENTRY_BYTES..HEADER_BYTES + (i + 1) * ENTRY_BYTES];
        let flags = le32(e, NAME_BYTES + 16);
        if flags == 0 {
            if e.iter().any(|x| *x != 0) {
                return bad(g, "an unused entry is not zero");
            }
            continue;
        }
        if flags != FLAG_USED || e[NAME_BYTES + 20..].iter().any(|x| *x != 0) {
            return bad(g, "an entry has unknown flags");
        }
        let raw = &e[..NAME_BYTES];
        let len = raw.iter().position(|x| *x == 0).unwrap_or(NAME_BYTES);
        if raw[len..].iter().any(|x| *x != 0) {
            return bad(g, "an entry's name is not NUL-padded");
        }
        let Ok(name) = core::str::from_utf8(&raw[..len]) else {
            return bad(g, "an entry's name is not UTF-8");
        };
        if validate_name(name).is_err() {
            return bad(g, "an entry's name is not valid");
        }
        let entry = Entry {
            name: String::from(name),
            start: le64(e, NAME_BYTES),
            sectors: le64(e, NAME_BYTES + 8),
        };
        let inside = entry
            .start
            .checked_add(entry.sectors)
            .is_some_and(|end| end <= disk_sectors);
        if entry.start < ALIGN || entry.start % ALIGN != 0 || entry.sectors == 0 || !inside {
            return bad(g, "a volume lies outside the disk's data area");
        }
        entries.push(entry);
    }
    entries.sort_by_key(|e| e.start);
    if entries.windows(2).any(|w| w[0].end() > w[1].start) {
        return bad(g, "two volumes overlap");
    }
    let mut names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return bad(g, "two volumes have one name");
    }
    Copy::Valid(Table {
        generation,
        copy,
        entries,
    })
}

/// What the disk's first sectors hold, from those bytes (the first
/// [`PROBE_SECTORS`] sectors, or the whole disk if smaller), and the highest
/// generation of any copy whose checksum is right.
fn classify(probe: &[u8], disk_sectors: u64) -> (DiskState, u64) {
    let copies: Vec<Copy> = [0, COPY_BYTES]
        .iter()
        .enumerate()
        .map(|(i, &at)| {
            probe
                .get(at..at + COPY_BYTES)
                .map_or(Copy::Absent, |b| decode(b, i, disk_sectors))
        })
        .collect();
    let top = copies
        .iter()
        .filter_map(|c| match c {
            Copy::Valid(t) => Some(t.generation),
            Copy::Bad { generation, .. } => *generation,
            Copy::Absent => None,
        })
        .max()
        .unwrap_or(0);
    let newest = copies
        .iter()
        .filter_map(|c| match c {
            Copy::Valid(t) => Some(t),
            _ => None,
        })
        .max_by_key(|t| t.generation);
    let state = if let Some(t) = newest {
        DiskState::Table(t.clone())
    } else if let Some(why) = copies.iter().find_map(|c| match c {
        Copy::Bad { why, .. } => Some(why.clone()),
        _ => None,
    }) {
        DiskState::Damaged(why)
    } else if probe.iter().all(|b| *b == 0) {
        DiskState::Blank
    } else {
        DiskState::Foreign
    };
    (state, top)
}

/// The first free sector at or after `cursor` that a volume may start at.
fn align_up(cursor: u64) -> Option<u64> {
    cursor.max(ALIGN).checked_next_multiple_of(ALIGN)
}

/// First fit: where a volume of `sectors` goes among `entries` (by start) on
/// a disk of `disk_sectors`.
pub fn place(entries: &[Entry], sectors: u64, disk_sectors: u64) -> Option<u64> {
    gaps(entries, disk_sectors).find_map(|(start, len)| (len >= sectors).then_some(start))
}

/// The largest volume that fits among `entries` on a disk of `disk_sectors`.
pub fn largest_free(entries: &[Entry], disk_sectors: u64) -> u64 {
    gaps(entries, disk_sectors)
        .map(|(_, len)| len)
        .max()
        .unwrap_or(0)
}

/// The free extents, each as (aligned start, sectors from there to the next
/// volume or the end of the disk).
fn gaps(entries: &[Entry], disk_sectors: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
    let ends = entries
        .iter()
        .map(|e| e.start)
        .chain(core::iter::once(disk_sectors));
    let starts = core::iter::once(0).chain(entries.iter().map(Entry::end));
    starts.zip(ends).filter_map(|(from, to)| {
        let start = align_up(from)?;
        Some((start, to.checked_sub(start)?))
    })
}

/// Runs one request on `disk`.
fn io<D: Disks + ?Sized>(
    disks: &mut D,
    disk: usize,
    sector: u64,
    op: DiskOp<'_>,
) -> Result<(), DiskError> {
    let mut r = [DiskReq::new(sector, op)];
    disks.run(disk, &mut r);
    r[0].result
}

/// dom0's volumes: the tables live on the disks (read afresh by each call, so
/// they are never stale); which domains use which volume lives here.
#[derive(Debug, Default)]
pub struct Volumes {
    users: BTreeMap<String, Vec<User>>,
}

impl Volumes {
    /// No volume in use yet.
    pub fn new() -> Self {
        Volumes::default()
    }

    /// What the first sectors of disk `disk` hold.
    pub fn state<D: Disks + ?Sized>(
        disks: &mut D,
        disk: usize,
        info: &DiskInfo,
    ) -> Result<DiskState, VolumeError> {
        Self::read(disks, disk, info).map(|(s, _)| s)
    }

    fn read<D: Disks + ?Sized>(
        disks: &mut D,
        disk: usize,
        info: &DiskInfo,
    ) -> Result<(DiskState, u64), VolumeError> {
        let sectors = info.sectors.min(PROBE_SECTORS);
        let mut probe = vec![0u8; usize::try_from(sectors).unwrap_or(0) * SECTOR];
        if !probe.is_empty() {
            io(disks, disk, 0, DiskOp::Read(&mut probe)).map_err(|error| VolumeError::Io {
                disk: info.name.clone(),
                error,
            })?;
        }
        Ok(classify(&probe, info.sectors))
    }

    /// Writes `entries` as disk `disk`'s new table (the copy `old` was not
    /// read from, generation above `top`) and flushes: committed once this
    /// returns `Ok`.
    fn commit<D: Disks + ?Sized>(
        disks: &mut D,
        disk: usize,
        info: &DiskInfo,
        old: Option<&Table>,
        top: u64,
        mut entries: Vec<Entry>,
    ) -> Result<Table, VolumeError> {
        entries.sort_by_key(|e| e.start);
        let copy = old.map_or(0, |t| 1 - t.copy);
        let generation = top.saturating_add(1);
        let bytes = encode(&entries, generation, copy, info.sectors);
        let err = |error| VolumeError::Io {
            disk: info.name.clone(),
            error,
        };
        io(disks, disk, COPIES[copy], DiskOp::Write(&bytes)).map_err(err)?;
        io(disks, disk, 0, DiskOp::Flush).map_err(err)?;
        Ok(Table {
            generation,
            copy,
            entries,
        })
    }

    /// Every disk with its state (an unreadable disk as its error).
    fn survey<D: Disks + ?Sized>(disks: &mut D) -> Survey {
        let list = disks.list();
        list.into_iter()
            .enumerate()
            .map(|(i, info)| {
                let s = Self::read(disks, i, &info);
                (info, s)
            })
            .collect()
    }

    /// The volume `name` (on disk `on`, when given), with its disk's table.
    fn locate<D: Disks + ?Sized>(
        disks: &mut D,
        name: &str,
        on: Option<&str>,
    ) -> Result<(Volume, Table, u64), VolumeError> {
        let survey = Self::survey(disks);
        if survey.is_empty() {
            return Err(VolumeError::NoDisks);
        }
        if let Some(d) = on
            && !survey.iter().any(|(i, _)| i.name == d)
        {
            return Err(VolumeError::UnknownDisk(String::from(d)));
        }
        let mut found = Vec::new();
        for (i, (info, state)) in survey.into_iter().enumerate() {
            if on.is_some_and(|d| d != info.name) {
                continue;
            }
            let (table, top) = match state {
                Ok((DiskState::Table(t), top)) => (t, top),
                // An unreadable disk named by --on is an error; others are
                // passed over.
                Err(e) if on.is_some() => return Err(e),
                _ => continue,
            };
            if let Some(e) = table.entries.iter().find(|e| e.name == name) {
                let v = Volume {
                    name: e.name.clone(),
                    disk: i,
                    disk_name: info.name.clone(),
                    start: e.start,
                    sectors: e.sectors,
                    readonly: info.readonly,
                };
                found.push((v, table, top));
            }
        }
        match found.len() {
            0 => Err(VolumeError::UnknownVolume {
                name: String::from(name),
                disk: on.map(String::from),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(VolumeError::Ambiguous {
                name: String::from(name),
                disks: found.into_iter().map(|(v, ..)| v.disk_name).collect(),
            }),
        }
    }

    /// Where volume `name` is: what the block back end serves. Volumes of one
    /// name on two disks (a disk image copied) are [`VolumeError::Ambiguous`].
    pub fn find<D: Disks + ?Sized>(disks: &mut D, name: &str) -> Result<Volume, VolumeError> {
        Self::locate(disks, name, None).map(|(v, ..)| v)
    }

    /// Every volume (by disk, then by start) and every disk's summary.
    pub fn list<D: Disks + ?Sized>(&self, disks: &mut D) -> (Vec<VolumeInfo>, Vec<VolumeDisk>) {
        let mut volumes = Vec::new();
        let mut rows = Vec::new();
        for (info, state) in Self::survey(disks) {
            let (table, free) = match &state {
                Ok((DiskState::Blank, _)) => (TableState::Blank, largest_free(&[], info.sectors)),
                Ok((DiskState::Table(t), _)) => {
                    for e in &t.entries {
                        volumes.push(VolumeInfo {
                            name: e.name.clone(),
                            disk: info.name.clone(),
                            start: e.start,
                            sectors: e.sectors,
                            users: self.users(&e.name).iter().map(|u| u.domid).collect(),
                        });
                    }
                    let free = if t.entries.len() < MAX_VOLUMES {
                        largest_free(&t.entries, info.sectors)
                    } else {
                        0
                    };
                    (TableState::Volumes, free)
                }
                Ok((DiskState::Foreign, _)) => (TableState::Data, 0),
                Ok((DiskState::Damaged(_), _)) => (TableState::Damaged, 0),
                Err(_) => (TableState::Unreadable, 0),
            };
            rows.push(VolumeDisk {
                name: info.name,
                sectors: info.sectors,
                readonly: info.readonly,
                table,
                free_sectors: free,
            });
        }
        (volumes, rows)
    }

    /// Makes volume `name` of `bytes` (whole sectors) on disk `on`, or on the
    /// first writable disk with a table and room, else the first writable
    /// blank disk (which gets a table). A disk that holds other data, or a
    /// damaged table, gets a new empty table only with `force` (and `on`).
    /// The name must be free on every disk dom0 can read, and no disk's.
    pub fn create<D: Disks + ?Sized>(
        &mut self,
        disks: &mut D,
        name: &str,
        bytes: u64,
        on: Option<&str>,
        force: bool,
    ) -> Result<Volume, VolumeError> {
        validate_name(name).map_err(VolumeError::Invalid)?;
        validate_volume_size(bytes).map_err(VolumeError::Invalid)?;
        if force && on.is_none() {
            return Err(VolumeError::ForceNeedsDisk);
        }
        let want = bytes / SECTOR as u64;
        let survey = Self::survey(disks);
        if survey.is_empty() {
            return Err(VolumeError::NoDisks);
        }
        if survey.iter().any(|(info, _)| info.name == name) {
            return Err(VolumeError::DiskName(String::from(name)));
        }
        for (info, state) in &survey {
            if let Ok((DiskState::Table(t), _)) = state
                && t.entries.iter().any(|e| e.name == name)
            {
                return Err(VolumeError::Exists {
                    name: String::from(name),
                    disk: info.name.clone(),
                });
            }
        }
        let target = match on {
            Some(d) => {
                let i = survey
                    .iter()
                    .position(|(info, _)| info.name == d)
                    .ok_or_else(|| VolumeError::UnknownDisk(String::from(d)))?;
                let info = &survey[i].0;
                if info.readonly {
                    return Err(VolumeError::ReadOnly(info.name.clone()));
                }
                match &survey[i].1 {
                    Err(e) => return Err(e.clone()),
                    Ok((DiskState::Foreign, _)) if !force => {
                        return Err(VolumeError::HasData(info.name.clone()));
                    }
                    Ok((DiskState::Damaged(why), _)) if !force => {
                        return Err(VolumeError::Damaged {
                            disk: info.name.clone(),
                            why: why.clone(),
                        });
                    }
                    Ok(_) => i,
                }
            }
            None => Self::pick(&survey, want)?,
        };
        let (info, state) = &survey[target];
        let Ok((state, top)) = state else {
            return Err(VolumeError::Io {
                disk: info.name.clone(),
                error: DiskError::Io,
            });
        };
        let (old, mut entries) = match state {
            DiskState::Table(t) => (Some(t), t.entries.clone()),
            _ => (None, Vec::new()),
        };
        if entries.len() >= MAX_VOLUMES {
            return Err(VolumeError::TableFull(info.name.clone()));
        }
        let start = place(&entries, want, info.sectors).ok_or_else(|| VolumeError::NoSpace {
            disk: Some(info.name.clone()),
            want,
            largest: largest_free(&entries, info.sectors),
        })?;
        entries.push(Entry {
            name: String::from(name),
            start,
            sectors: want,
        });
        Self::commit(disks, target, info, old, *top, entries)?;
        Ok(Volume {
            name: String::from(name),
            disk: target,
            disk_name: info.name.clone(),
            start,
            sectors: want,
            readonly: false,
        })
    }

    /// The disk a create without `--on` uses: the first writable one with a
    /// table and room for `want` sectors, else the first writable blank one
    /// with room.
    fn pick(survey: &Survey, want: u64) -> Result<usize, VolumeError> {
        let fits = |info: &DiskInfo, state: &DiskState| match state {
            DiskState::Table(t) => {
                t.entries.len() < MAX_VOLUMES && place(&t.entries, want, info.sectors).is_some()
            }
            DiskState::Blank => place(&[], want, info.sectors).is_some(),
            _ => false,
        };
        let writable = || {
            survey
                .iter()
                .enumerate()
                .filter(|(_, (info, _))| !info.readonly)
        };
        let with = |table: bool| {
            writable().find_map(|(i, (info, s))| match s {
                Ok((st @ DiskState::Table(_), _)) if table && fits(info, st) => Some(i),
                Ok((st @ DiskState::Blank, _)) if !table && fits(info, st) => Some(i),
                _ => None,
            })
        };
        if let Some(i) = with(true).or_else(|| with(false)) {
            return Ok(i);
        }
        if let Some((info, _)) = survey.first()
            && writable().next().is_none()
        {
            return Err(VolumeError::ReadOnly(info.name.clone()));
        }
        let usable = |s: &Result<(DiskState, u64), VolumeError>| {
            matches!(s, Ok((DiskState::Table(_) | DiskState::Blank, _)))
        };
        // Every writable disk holds other data (or is unreadable): say why
        // the first one cannot be used.
        if !writable().any(|(_, (_, s))| usable(s))
            && let Some((_, (info, s))) = writable().next()
        {
            return Err(match s {
                Ok((DiskState::Damaged(why), _)) => VolumeError::Damaged {
                    disk: info.name.clone(),
                    why: why.clone(),
                },
                Err(e) => e.clone(),
                _ => VolumeError::HasData(info.name.clone()),
            });
        }
        let largest = writable()
            .filter_map(|(_, (info, s))| match s {
                Ok((DiskState::Table(t), _)) if t.entries.len() < MAX_VOLUMES => {
                    Some(largest_free(&t.entries, info.sectors))
                }
                Ok((DiskState::Blank, _)) => Some(largest_free(&[], info.sectors)),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        Err(VolumeError::NoSpace {
            disk: None,
            want,
            largest,
        })
    }

    /// Removes volume `name` (on disk `on`, when given): its sectors become
    /// free (their contents stay). Refused while a domain uses it.
    pub fn remove<D: Disks + ?Sized>(
        &mut self,
        disks: &mut D,
        name: &str,
        on: Option<&str>,
    ) -> Result<Volume, VolumeError> {
        let (v, table, top) = Self::locate(disks, name, on)?;
        let users = self.users(name);
        if !users.is_empty() {
            return Err(VolumeError::InUse {
                name: String::from(name),
                users: users.iter().map(|u| u.domid).collect(),
            });
        }
        if v.readonly {
            return Err(VolumeError::ReadOnly(v.disk_name));
        }
        let info = DiskInfo {
            name: v.disk_name.clone(),
            sectors: disks.list().get(v.disk).map_or(0, |i| i.sectors),
            readonly: false,
            discard: false,
        };
        let entries = table
            .entries
            .iter()
            .filter(|e| e.name != name)
            .cloned()
            .collect();
        Self::commit(disks, v.disk, &info, Some(&table), top, entries)?;
        Ok(v)
    }

    /// Records that domain `domid` uses volume `name`, writable or not. A
    /// writer must be the only user (as `xl` refuses a second writable user of
    /// a disk): a writer while anyone else uses it, or anyone while a writer
    /// does, is [`VolumeError::InUse`] and nothing changes. Call it once the
    /// volume was found ([`Volumes::find`]).
    pub fn set_in_use(
        &mut self,
        name: &str,
        domid: u16,
        writable: bool,
    ) -> Result<(), VolumeError> {
        let users = self.users.entry(String::from(name)).or_default();
        if !users.is_empty() && (writable || users.iter().any(|u| u.writable)) {
            return Err(VolumeError::InUse {
                name: String::from(name),
                users: users.iter().map(|u| u.domid).collect(),
            });
        }
        users.push(User { domid, writable });
        Ok(())
    }

    /// Domain `domid` stops using volume `name` once (a detach).
    pub fn release(&mut self, name: &str, domid: u16) {
        if let Some(users) = self.users.get_mut(name) {
            if let Some(i) = users.iter().position(|u| u.domid == domid) {
                users.remove(i);
            }
            if users.is_empty() {
                self.users.remove(name);
            }
        }
    }

    /// Domain `domid` uses no volume any more (it is gone).
    pub fn clear_in_use(&mut self, domid: u16) {
        self.users.retain(|_, users| {
            users.retain(|u| u.domid != domid);
            !users.is_empty()
        });
    }

    /// The domains that use volume `name`.
    pub fn users(&self, name: &str) -> &[User] {
        self.users.get(name).map_or(&[], Vec::as_slice)
    }

    /// Answers the volume requests (`VolumeCreate`, `VolumeList`, `VolumeRm`)
    /// on dom0's disks, if it has any; anything else is `bad-request`.
    pub fn serve<D: Disks + ?Sized>(
        &mut self,
        disks: Option<&mut D>,
        req: Request,
    ) -> Result<Response, ErrorReply> {
        let Some(disks) = disks else {
            return match req {
                Request::VolumeList => Ok(Response::Volumes {
                    volumes: Vec::new(),
                    disks: Vec::new(),
                }),
                _ => Err(VolumeError::NoDisks.into()),
            };
        };
        match req {
            Request::VolumeCreate {
                name,
                size,
                disk,
                force,
            } => {
                let v = self.create(disks, &name, size, disk.as_deref(), force)?;
                let (volumes, rows) = self.list(disks);
                Ok(Response::Volumes {
                    volumes: volumes.into_iter().filter(|x| x.name == v.name).collect(),
                    disks: rows.into_iter().filter(|d| d.name == v.disk_name).collect(),
                })
            }
            Request::VolumeList => {
                let (volumes, disks) = self.list(disks);
                Ok(Response::Volumes { volumes, disks })
            }
            Request::VolumeRm { name, disk } => {
                self.remove(disks, &name, disk.as_deref())?;
                Ok(Response::Ok)
            }
            other => Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("{} is not a volume request", other.kind()),
            )),
        }
    }
}

#[cfg(test)]
mod tests;
