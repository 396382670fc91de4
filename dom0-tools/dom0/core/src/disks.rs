//! dom0's disks as the agent sees them, as a trait: the kernel implements it
//! with its virtio-blk driver (`dom0-tools/dom0/src/virtio.rs`), host tests
//! with disks in memory ([`MemDisks`]). The volume table and the block back
//! end do all their I/O through it.
//!
//! I/O goes in batches: [`Disks::run`] submits every request of a batch before
//! it waits for any, so a driver can keep them all in flight at once, and
//! fills in each request's result. Requests are in 512-byte sectors.

use alloc::string::String;
use alloc::vec::Vec;

use core::fmt;

/// The sector size of every disk dom0 drives.
pub const SECTOR: usize = 512;

/// What one disk is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// Its name (`scripts/run --disk PATH,name=NAME`, else `vdN`).
    pub name: String,
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Whether the device refuses writes.
    pub readonly: bool,
    /// Whether the device can discard (`VIRTIO_BLK_F_DISCARD`).
    pub discard: bool,
}

/// Why a disk request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskError {
    /// No such disk.
    NoDisk,
    /// Beyond the end of the disk, empty, or not whole sectors.
    Range,
    /// A write or discard to a read-only disk.
    ReadOnly,
    /// The device cannot do this (discard without the feature).
    Unsupported,
    /// The device or its driver failed the request.
    Io,
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskError::NoDisk => "no such disk",
            DiskError::Range => "outside the disk, or not whole sectors",
            DiskError::ReadOnly => "the disk is read-only",
            DiskError::Unsupported => "the disk cannot do that",
            DiskError::Io => "the device failed the request",
        })
    }
}

/// One request of a batch.
#[derive(Debug)]
pub enum DiskOp<'b> {
    /// Read whole sectors into the buffer.
    Read(&'b mut [u8]),
    /// Write whole sectors from the buffer.
    Write(&'b [u8]),
    /// Make every completed write durable (`VIRTIO_BLK_T_FLUSH`).
    Flush,
    /// Discard `sectors` sectors (`VIRTIO_BLK_T_DISCARD`).
    Discard {
        /// How many.
        sectors: u64,
    },
}

/// A request and, after [`Disks::run`], its result.
#[derive(Debug)]
pub struct DiskReq<'b> {
    /// The first sector (ignored by `Flush`).
    pub sector: u64,
    /// What to do.
    pub op: DiskOp<'b>,
    /// Set by [`Disks::run`].
    pub result: Result<(), DiskError>,
}

impl<'b> DiskReq<'b> {
    /// A request not yet run.
    pub fn new(sector: u64, op: DiskOp<'b>) -> Self {
        DiskReq {
            sector,
            op,
            result: Err(DiskError::Io),
        }
    }

    /// The sectors it covers (0 for a flush).
    pub fn sectors(&self) -> u64 {
        match &self.op {
            DiskOp::Read(b) => (b.len() / SECTOR) as u64,
            DiskOp::Write(b) => (b.len() / SECTOR) as u64,
            DiskOp::Flush => 0,
            DiskOp::Discard { sectors } => *sectors,
        }
    }

    /// Whether the request is well-formed for `info`: whole sectors, not empty,
    /// inside the disk, and no write to a read-only disk.
    pub fn check(&self, info: &DiskInfo) -> Result<(), DiskError> {
        let len = match &self.op {
            DiskOp::Read(b) => b.len(),
            DiskOp::Write(b) => b.len(),
            DiskOp::Flush => return Ok(()),
            DiskOp::Discard { .. } if !info.discard => return Err(DiskError::Unsupported),
            DiskOp::Discard { sectors } => {
                usize::try_from(*sectors).map_or(usize::MAX, |s| s.saturating_mul(SECTOR))
            }
        };
        if len == 0 || len % SECTOR != 0 {
            return Err(DiskError::Range);
        }
        let fits = self
            .sector
            .checked_add(self.sectors())
            .is_some_and(|end| end <= info.sectors);
        if !fits {
            return Err(DiskError::Range);
        }
        if info.readonly && !matches!(self.op, DiskOp::Read(_)) {
            return Err(DiskError::ReadOnly);
        }
        Ok(())
    }
}

/// dom0's disks.
pub trait Disks: fmt::Debug {
    /// The disks, in the order the PCI scan found them; a disk's index in this
    /// list names it in every other call.
    fn list(&self) -> Vec<DiskInfo>;

    /// Runs a batch on disk `disk`: every request is checked
    /// ([`DiskReq::check`]), the valid ones are submitted together and waited
    /// for, and each request's `result` is set. Requests of one batch may
    /// complete in any order; a `Flush` covers the writes completed before
    /// the batch started, so a caller that needs "these writes, then a flush"
    /// runs two batches.
    fn run(&mut self, disk: usize, reqs: &mut [DiskReq<'_>]);
}

/// Disks in memory, for host tests: every sector starts zero; discarded
/// sectors read as zero. Counts flushes and batches.
#[derive(Debug, Default, Clone)]
pub struct MemDisks {
    /// The disks and their bytes.
    pub disks: Vec<(DiskInfo, Vec<u8>)>,
    /// Flushes run.
    pub flushes: u64,
    /// Batches run.
    pub batches: u64,
    /// When set, every request fails with this error (a dying device).
    pub fail: Option<DiskError>,
}

impl MemDisks {
    /// Adds a zeroed disk of `sectors` sectors and returns its index.
    pub fn add(&mut self, name: &str, sectors: u64, readonly: bool) -> usize {
        let bytes = usize::try_from(sectors).unwrap_or(0) * SECTOR;
        self.disks.push((
            DiskInfo {
                name: String::from(name),
                sectors,
                readonly,
                discard: true,
            },
            alloc::vec![0; bytes],
        ));
        self.disks.len() - 1
    }
}

impl Disks for MemDisks {
    fn list(&self) -> Vec<DiskInfo> {
        self.disks.iter().map(|(i, _)| i.clone()).collect()
    }

    fn run(&mut self, disk: usize, reqs: &mut [DiskReq<'_>]) {
        self.batches += 1;
        for r in reqs.iter_mut() {
            let Some((info, bytes)) = self.disks.get_mut(disk) else {
                r.result = Err(DiskError::NoDisk);
                continue;
            };
            if let Err(e) = r.check(info) {
                r.result = Err(e);
                continue;
            }
            if let Some(e) = self.fail {
                r.result = Err(e);
                continue;
            }
            let at = usize::try_from(r.sector).unwrap_or(usize::MAX) * SECTOR;
            let n = usize::try_from(r.sectors()).unwrap_or(usize::MAX) * SECTOR;
            match &mut r.op {
                DiskOp::Read(b) => b.copy_from_slice(&bytes[at..at + n]),
                DiskOp::Write(b) => bytes[at..at + n].copy_from_slice(b),
                DiskOp::Flush => self.flushes += 1,
                DiskOp::Discard { .. } => bytes[at..at + n].fill(0),
            }
            r.result = Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked_against_the_disk() {
        let mut d = MemDisks::default();
        let i = d.add("a", 8, false);
        let r = d.add("ro", 8, true);
        let mut buf = [7u8; 1024];
        let mut small = [0u8; 100];
        let mut reqs = [
            DiskReq::new(6, DiskOp::Write(&buf)),
            DiskReq::new(7, DiskOp::Write(&buf)),
            DiskReq::new(0, DiskOp::Read(&mut small)),
            DiskReq::new(0, DiskOp::Flush),
            DiskReq::new(u64::MAX, DiskOp::Discard { sectors: 2 }),
        ];
        d.run(i, &mut reqs);
        let results: Vec<_> = reqs.iter().map(|r| r.result).collect();
        assert_eq!(
            results,
            [
                Ok(()),
                Err(DiskError::Range),
                Err(DiskError::Range),
                Ok(()),
                Err(DiskError::Range)
            ]
        );
        let mut reqs = [DiskReq::new(0, DiskOp::Read(&mut buf))];
        d.run(i, &mut reqs);
        assert!(reqs[0].result.is_ok());
        let mut back = [0u8; 1024];
        d.run(i, &mut [DiskReq::new(6, DiskOp::Read(&mut back))]);
        assert!(back.iter().all(|b| *b == 7));
        let mut reqs = [DiskReq::new(0, DiskOp::Write(&back))];
        d.run(r, &mut reqs);
        assert_eq!(reqs[0].result, Err(DiskError::ReadOnly));
        let mut reqs = [DiskReq::new(0, DiskOp::Flush)];
        d.run(9, &mut reqs);
        assert_eq!(reqs[0].result, Err(DiskError::NoDisk));
        assert_eq!(d.flushes, 1);
    }
}
