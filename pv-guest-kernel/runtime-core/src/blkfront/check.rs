//! The `blkcheck` test guest's logic: its command line, the data pattern
//! it writes and verifies, random sectors, and rates.
//!
//! The pattern is a function of (seed, 512-byte sector number, word), so a
//! second boot with the same seed can verify what the first wrote
//! (`verify-only`), and a sector written at the wrong place, or a stale
//! one, does not verify.

use core::fmt;

use super::{SECTOR_BYTES, SECTOR_SIZE};
use crate::text::c_str;

/// The vbd `blkcheck` looks for first: `xvda` (major 202, minor 0).
pub const XVDA: u64 = 51712;

/// What the command line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Args {
    /// `seed=N` (default 1): the pattern's seed.
    pub seed: u64,
    /// `limit=MiB`: check at most this much of the disk (default: all).
    pub limit_mib: Option<u64>,
    /// `verify-only`: read and verify, write nothing.
    pub verify_only: bool,
    /// `vdev=N`: this vbd instead of xvda or the first one.
    pub vdev: Option<u64>,
    /// `qd=N` (default 32, 1..=256): requests in flight for random reads.
    pub queue_depth: u32,
    /// `ops=N` (default 2048): random 4 KiB reads to time.
    pub random_ops: u32,
    /// `order=N`: largest ring page order to offer (default: the runtime's).
    pub ring_order: Option<u32>,
    /// `queues=N`: most queues to use.
    pub queues: Option<u32>,
    /// `indirect=N`: most indirect segments (0: none).
    pub indirect: Option<u32>,
    /// `persistent=0|1`: offer persistent grants.
    pub persistent: Option<bool>,
    /// `pool=N`: data pages in the pool.
    pub pool_pages: Option<u32>,
    /// `wait=S` (default 0): seconds to wait for the vbd to appear (a disk
    /// hot-plugged after the guest started).
    pub wait_s: u32,
    /// `repeat=N` (default 1, 1..=100000): write and read passes, each
    /// announced when done (a long run to destroy mid-I/O).
    pub repeat: u32,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            seed: 1,
            limit_mib: None,
            verify_only: false,
            vdev: None,
            queue_depth: 32,
            random_ops: 2048,
            ring_order: None,
            queues: None,
            indirect: None,
            persistent: None,
            pool_pages: None,
            wait_s: 0,
            repeat: 1,
        }
    }
}

/// A word of the command line that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgError(pub alloc::string::String);

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad command line word {:?}", self.0)
    }
}

fn number(word: &[u8], value: &[u8]) -> Result<u64, ArgError> {
    crate::text::parse_u64(value)
        .ok_or_else(|| ArgError(alloc::string::String::from_utf8_lossy(word).into_owned()))
}

fn small(
    word: &[u8],
    value: &[u8],
    range: core::ops::RangeInclusive<u32>,
) -> Result<u32, ArgError> {
    u32::try_from(number(word, value)?)
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ArgError(alloc::string::String::from_utf8_lossy(word).into_owned()))
}

/// Parse `start_info.cmd_line`: `seed=N`, `limit=MiB`, `verify-only`,
/// `vdev=N`, `qd=N`, `ops=N`, and the front end's limits `order=N`,
/// `queues=N`, `indirect=N`, `persistent=0|1`, `pool=N`, `wait=S`,
/// `repeat=N`; other words are
/// someone else's and ignored.
pub fn parse_args(cmdline: &[u8]) -> Result<Args, ArgError> {
    let mut args = Args::default();
    for word in c_str(cmdline).split(|b| b.is_ascii_whitespace()) {
        let bad = || ArgError(alloc::string::String::from_utf8_lossy(word).into_owned());
        if word == b"verify-only" {
            args.verify_only = true;
            continue;
        }
        let Some(eq) = word.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (key, value) = (&word[..eq], &word[eq + 1..]);
        match key {
            b"seed" => args.seed = number(word, value)?,
            b"limit" => args.limit_mib = Some(number(word, value)?).filter(|m| *m > 0),
            b"vdev" => args.vdev = Some(number(word, value)?),
            b"qd" => {
                args.queue_depth = u32::try_from(number(word, value)?)
                    .ok()
                    .filter(|n| (1..=256).contains(n))
                    .ok_or_else(bad)?;
            }
            b"ops" => {
                args.random_ops = u32::try_from(number(word, value)?).map_err(|_| bad())?;
            }
            b"order" => args.ring_order = Some(small(word, value, 0..=4)?),
            b"queues" => args.queues = Some(small(word, value, 1..=16)?),
            b"indirect" => args.indirect = Some(small(word, value, 0..=4096)?),
            b"persistent" => args.persistent = Some(small(word, value, 0..=1)? == 1),
            b"pool" => args.pool_pages = Some(small(word, value, 1..=1024)?),
            b"wait" => args.wait_s = small(word, value, 0..=3600)?,
            b"repeat" => args.repeat = small(word, value, 1..=100_000)?,
            _ => {}
        }
    }
    Ok(args)
}

/// splitmix64's finaliser.
const fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Word `word` (0..64) of sector `sector` under `seed`.
pub const fn pattern_word(seed: u64, sector: u64, word: u64) -> u64 {
    mix(mix(seed ^ 0x626c_6b63_6865_636b).wrapping_add(sector.wrapping_mul(64).wrapping_add(word)))
}

const WORDS_PER_SECTOR: usize = (SECTOR_SIZE / 8) as usize;

/// Fill `buf` (whole sectors) with the pattern of the sectors from
/// `first_sector`.
pub fn fill(seed: u64, first_sector: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let sector = first_sector + (i / WORDS_PER_SECTOR) as u64;
        let w = pattern_word(seed, sector, (i % WORDS_PER_SECTOR) as u64);
        chunk.copy_from_slice(&w.to_le_bytes());
    }
}

/// The first word of a buffer that does not hold the pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Its sector.
    pub sector: u64,
    /// Its byte offset in the sector.
    pub offset: usize,
    /// What was read.
    pub got: u64,
    /// What the pattern says.
    pub want: u64,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sector {} byte {}: read {:#018x}, expected {:#018x}",
            self.sector, self.offset, self.got, self.want
        )
    }
}

/// Check that `buf` holds the pattern of the sectors from `first_sector`.
pub fn verify(seed: u64, first_sector: u64, buf: &[u8]) -> Result<(), Mismatch> {
    for (i, chunk) in buf.chunks_exact(8).enumerate() {
        let sector = first_sector + (i / WORDS_PER_SECTOR) as u64;
        let want = pattern_word(seed, sector, (i % WORDS_PER_SECTOR) as u64);
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        let got = u64::from_le_bytes(b);
        if got != want {
            return Err(Mismatch {
                sector,
                offset: (i % WORDS_PER_SECTOR) * 8,
                got,
                want,
            });
        }
    }
    Ok(())
}

/// Check only the first word of each sector of `buf` (cheap enough to
/// run inside a timed loop): catches a sector from the wrong place or
/// seed, not a torn one.
pub fn verify_sampled(seed: u64, first_sector: u64, buf: &[u8]) -> Result<(), Mismatch> {
    for (i, sector) in buf.chunks_exact(SECTOR_BYTES).enumerate() {
        let s = first_sector + i as u64;
        let want = pattern_word(seed, s, 0);
        let mut b = [0u8; 8];
        b.copy_from_slice(sector.get(..8).unwrap_or(&[0; 8]));
        let got = u64::from_le_bytes(b);
        if got != want {
            return Err(Mismatch {
                sector: s,
                offset: 0,
                got,
                want,
            });
        }
    }
    Ok(())
}

/// A small deterministic generator (xorshift64*) for random offsets.
#[derive(Clone, Copy, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded (a zero seed is replaced).
    pub const fn new(seed: u64) -> Rng {
        Rng(mix(seed) | 1)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 for `n` = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}

/// A rate with two decimals, from integers (no floating point in the
/// guest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate(pub u64);

impl Rate {
    /// MiB per second for `bytes` moved in `ns` (0 when `ns` is 0).
    pub fn mib_per_s(bytes: u64, ns: u64) -> Rate {
        if ns == 0 {
            return Rate(0);
        }
        let v = u128::from(bytes) * 100 * 1_000_000_000 / (u128::from(ns) * 1024 * 1024);
        Rate(u64::try_from(v).unwrap_or(u64::MAX))
    }

    /// Operations per second for `ops` done in `ns`.
    pub fn per_s(ops: u64, ns: u64) -> Rate {
        if ns == 0 {
            return Rate(0);
        }
        let v = u128::from(ops) * 100 * 1_000_000_000 / u128::from(ns);
        Rate(u64::try_from(v).unwrap_or(u64::MAX))
    }

    /// The whole part.
    pub fn whole(self) -> u64 {
        self.0 / 100
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Bytes to check on a disk of `disk_bytes`: all of it, or `limit_mib`,
/// rounded down to whole `sector_size` blocks.
pub fn span(disk_bytes: u64, limit_mib: Option<u64>, sector_size: u32) -> u64 {
    let limit = limit_mib.map_or(u64::MAX, |m| m.saturating_mul(1024 * 1024));
    let bytes = disk_bytes.min(limit);
    let size = u64::from(sector_size.max(512));
    bytes - bytes % size
}
