//! Image bundles: the named PV kernels dom0 holds, packed into one file.
//!
//! `scripts/run` packs a bundle ([`BundleWriter`]) and GRUB hands it to dom0 as
//! its initrd; dom0 reads it in place ([`Bundle::parse`], no copy) and offers
//! the images by name (`dom0ctl images`, `image = "hello"` in a config).
//!
//! ```text
//! offset  size  field (little-endian)
//!      0     8  magic "XLHVIMGS"
//!      8     4  format version (1)
//!     12     4  number of images N (at most MAX_IMAGES)
//!     16  N*56  entries, each:
//!                  0  32  name: UTF-8, NUL-padded, 1 to 32 bytes
//!                 32   8  offset of the image from the start of the bundle
//!                 40   8  length in bytes
//!                 48   4  CRC-32 (IEEE, as `crc32`) of the image's bytes
//!                 52   4  reserved, 0
//!      …        image data, each image at an 8-byte aligned offset after the
//!               entries, zero padding between images
//! ```
//!
//! [`Bundle::parse`] checks everything before it returns: the magic, the
//! version, that the entry table and every image lie inside the bundle, each
//! image's alignment and CRC-32, and that names are valid and distinct. After
//! that, lookups cannot fail.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::crc32::crc32;
use crate::validate::validate_image_name;

/// The first 8 bytes of every bundle.
pub const BUNDLE_MAGIC: [u8; 8] = *b"XLHVIMGS";
/// The format version this module reads and writes.
pub const BUNDLE_VERSION: u32 = 1;
/// Bytes before the entry table.
pub const BUNDLE_HEADER_LEN: usize = 16;
/// Bytes per entry.
pub const BUNDLE_ENTRY_LEN: usize = 56;
/// The longest image name, in bytes.
pub const BUNDLE_NAME_LEN: usize = 32;
/// The most images a bundle may hold.
pub const MAX_IMAGES: usize = 256;
/// Every image starts at a multiple of this.
pub const BUNDLE_ALIGN: usize = 8;

/// Why a bundle could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BundleError {
    /// The file does not start with [`BUNDLE_MAGIC`].
    BadMagic,
    /// The format version is not [`BUNDLE_VERSION`].
    UnsupportedVersion(u32),
    /// The header or entry table runs past the end of the bundle.
    Truncated {
        /// Bytes the header and table need.
        need: u64,
        /// Bytes the bundle has.
        have: u64,
    },
    /// More than [`MAX_IMAGES`] images.
    TooManyImages(u64),
    /// Entry `index` has a name that is not 1 to 32 bytes of UTF-8 without
    /// control characters (NUL padding only at the end).
    BadName {
        /// The entry.
        index: usize,
    },
    /// Entry `index`'s image does not start on an 8-byte boundary.
    Misaligned {
        /// The entry.
        index: usize,
        /// Its offset.
        offset: u64,
    },
    /// Entry `index`'s image is not inside the bundle's data area.
    OutOfBounds {
        /// The entry.
        index: usize,
        /// Its offset.
        offset: u64,
        /// Its length.
        len: u64,
        /// The bundle's length.
        bundle_len: u64,
    },
    /// An image's bytes do not match the CRC-32 in its entry.
    CrcMismatch {
        /// The image's name.
        name: String,
        /// The CRC in the entry.
        expected: u32,
        /// The CRC of the bytes.
        actual: u32,
    },
    /// Two images have this name.
    DuplicateName(String),
    /// Entry `index` has non-zero reserved bytes.
    Reserved {
        /// The entry.
        index: usize,
    },
    /// (writing) The bundle would not fit in 64 bits of offsets.
    TooLarge,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const REBUILD: &str = "rebuild it with scripts/run (xtask packs the bundle)";
        match self {
            BundleError::BadMagic => write!(
                f,
                "not an image bundle (no \"XLHVIMGS\" magic); give dom0 a bundle as its first \
                 data module, or none"
            ),
            BundleError::UnsupportedVersion(v) => write!(
                f,
                "image bundle format version {v}, but this dom0 reads version \
                 {BUNDLE_VERSION}; {REBUILD}"
            ),
            BundleError::Truncated { need, have } => write!(
                f,
                "image bundle truncated: its header and entry table need {need} bytes, \
                 the bundle has {have}; {REBUILD}"
            ),
            BundleError::TooManyImages(n) => {
                write!(
                    f,
                    "image bundle lists {n} images; the limit is {MAX_IMAGES}"
                )
            }
            BundleError::BadName { index } => write!(
                f,
                "image bundle entry {index}: the name is not 1 to {BUNDLE_NAME_LEN} bytes of \
                 UTF-8 without control characters"
            ),
            BundleError::Misaligned { index, offset } => write!(
                f,
                "image bundle entry {index}: offset {offset} is not a multiple of \
                 {BUNDLE_ALIGN}; {REBUILD}"
            ),
            BundleError::OutOfBounds {
                index,
                offset,
                len,
                bundle_len,
            } => write!(
                f,
                "image bundle entry {index}: bytes {offset}..+{len} are outside the data of \
                 a {bundle_len}-byte bundle; {REBUILD}"
            ),
            BundleError::CrcMismatch {
                name,
                expected,
                actual,
            } => write!(
                f,
                "image {name:?} is damaged: CRC-32 {actual:#010x}, its entry says \
                 {expected:#010x}; {REBUILD}"
            ),
            BundleError::DuplicateName(name) => {
                write!(f, "two images are named {name:?}; names must be distinct")
            }
            BundleError::Reserved { index } => write!(
                f,
                "image bundle entry {index}: reserved bytes are not zero; {REBUILD}"
            ),
            BundleError::TooLarge => f.write_str("the image bundle would be over 2^64 bytes"),
        }
    }
}

/// One image of a bundle, borrowed from the bundle's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image<'a> {
    /// The image's name.
    pub name: &'a str,
    /// The image's bytes.
    pub data: &'a [u8],
    /// Their CRC-32 (checked by [`Bundle::parse`]).
    pub crc32: u32,
}

/// A checked bundle, read in place.
#[derive(Debug, Clone, Copy)]
pub struct Bundle<'a> {
    bytes: &'a [u8],
    count: usize,
}

/// An entry as stored, before its checks.
struct RawEntry<'a> {
    name: &'a [u8; BUNDLE_NAME_LEN],
    offset: u64,
    len: u64,
    crc32: u32,
    reserved: u32,
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The name stored in a NUL-padded field, if it is valid.
fn entry_name(field: &[u8; BUNDLE_NAME_LEN]) -> Option<&str> {
    let len = field
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(BUNDLE_NAME_LEN);
    if field[len..].iter().any(|&b| b != 0) {
        return None;
    }
    let name = core::str::from_utf8(&field[..len]).ok()?;
    validate_image_name(name).ok()?;
    Some(name)
}

/// The end of the entry table for `count` entries.
fn table_end(count: usize) -> usize {
    BUNDLE_HEADER_LEN + count * BUNDLE_ENTRY_LEN
}

impl<'a> Bundle<'a> {
    /// Checks `bytes` as a bundle (see the module docs for every check).
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        if bytes.len() < BUNDLE_MAGIC.len() || bytes[..BUNDLE_MAGIC.len()] != BUNDLE_MAGIC {
            return Err(BundleError::BadMagic);
        }
        if bytes.len() < BUNDLE_HEADER_LEN {
            return Err(BundleError::Truncated {
                need: BUNDLE_HEADER_LEN as u64,
                have: bytes.len() as u64,
            });
        }
        let version = le_u32(bytes, 8);
        if version != BUNDLE_VERSION {
            return Err(BundleError::UnsupportedVersion(version));
        }
        let count = le_u32(bytes, 12);
        let count = match usize::try_from(count) {
            Ok(n) if n <= MAX_IMAGES => n,
            _ => return Err(BundleError::TooManyImages(u64::from(count))),
        };
        let data_start = table_end(count);
        if bytes.len() < data_start {
            return Err(BundleError::Truncated {
                need: data_start as u64,
                have: bytes.len() as u64,
            });
        }
        let bundle = Bundle { bytes, count };
        for index in 0..count {
            let e = bundle.raw(index);
            let name = entry_name(e.name).ok_or(BundleError::BadName { index })?;
            if e.reserved != 0 {
                return Err(BundleError::Reserved { index });
            }
            if e.offset % BUNDLE_ALIGN as u64 != 0 {
                return Err(BundleError::Misaligned {
                    index,
                    offset: e.offset,
                });
            }
            let data = bundle.span(&e).ok_or(BundleError::OutOfBounds {
                index,
                offset: e.offset,
                len: e.len,
                bundle_len: bytes.len() as u64,
            })?;
            let actual = crc32(data);
            if actual != e.crc32 {
                return Err(BundleError::CrcMismatch {
                    name: name.to_string(),
                    expected: e.crc32,
                    actual,
                });
            }
            for earlier in 0..index {
                if entry_name(bundle.raw(earlier).name) == Some(name) {
                    return Err(BundleError::DuplicateName(name.to_string()));
                }
            }
        }
        Ok(bundle)
    }

    fn raw(&self, index: usize) -> RawEntry<'a> {
        let at = BUNDLE_HEADER_LEN + index * BUNDLE_ENTRY_LEN;
        let e = &self.bytes[at..at + BUNDLE_ENTRY_LEN];
        let name = e[..BUNDLE_NAME_LEN]
            .try_into()
            .unwrap_or(&[0; BUNDLE_NAME_LEN]);
        RawEntry {
            name,
            offset: le_u64(e, 32),
            len: le_u64(e, 40),
            crc32: le_u32(e, 48),
            reserved: le_u32(e, 52),
        }
    }

    /// The entry's bytes, if they lie inside the data area.
    fn span(&self, e: &RawEntry<'_>) -> Option<&'a [u8]> {
        let start = usize::try_from(e.offset).ok()?;
        let len = usize::try_from(e.len).ok()?;
        let end = start.checked_add(len)?;
        if start < table_end(self.count) {
            return None;
        }
        self.bytes.get(start..end)
    }

    /// How many images the bundle holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the bundle holds no image.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Image `index` (in the bundle's order).
    pub fn image(&self, index: usize) -> Option<Image<'a>> {
        if index >= self.count {
            return None;
        }
        let e = self.raw(index);
        Some(Image {
            name: entry_name(e.name)?,
            data: self.span(&e)?,
            crc32: e.crc32,
        })
    }

    /// The images, in the bundle's order.
    pub fn iter(&self) -> impl Iterator<Item = Image<'a>> + '_ {
        (0..self.count).filter_map(|i| self.image(i))
    }

    /// The image called `name`.
    pub fn get(&self, name: &str) -> Option<Image<'a>> {
        self.iter().find(|i| i.name == name)
    }
}

/// Packs images into a bundle.
///
/// ```
/// use control_proto::images::{Bundle, BundleWriter};
///
/// let mut w = BundleWriter::new();
/// w.add("hello", b"\x7fELF...").unwrap();
/// let bytes = w.finish().unwrap();
/// let bundle = Bundle::parse(&bytes).unwrap();
/// assert_eq!(bundle.get("hello").unwrap().data, b"\x7fELF...");
/// ```
#[derive(Debug, Clone, Default)]
pub struct BundleWriter {
    images: Vec<(String, Vec<u8>)>,
}

impl BundleWriter {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an image (copied) under `name`, which must be valid and new.
    pub fn add(&mut self, name: &str, data: &[u8]) -> Result<(), BundleError> {
        let index = self.images.len();
        if name.len() > BUNDLE_NAME_LEN || validate_image_name(name).is_err() {
            return Err(BundleError::BadName { index });
        }
        if self.images.iter().any(|(n, _)| n == name) {
            return Err(BundleError::DuplicateName(name.to_string()));
        }
        if index >= MAX_IMAGES {
            return Err(BundleError::TooManyImages(index as u64 + 1));
        }
        self.images.push((name.to_string(), data.to_vec()));
        Ok(())
    }

    /// The bundle's bytes.
    pub fn finish(&self) -> Result<Vec<u8>, BundleError> {
        let mut offset = table_end(self.images.len());
        let mut table = Vec::with_capacity(offset);
        table.extend_from_slice(&BUNDLE_MAGIC);
        table.extend_from_slice(&BUNDLE_VERSION.to_le_bytes());
        let count = u32::try_from(self.images.len())
            .map_err(|_| BundleError::TooManyImages(self.images.len() as u64))?;
        table.extend_from_slice(&count.to_le_bytes());
        for (name, data) in &self.images {
            offset = offset
                .checked_next_multiple_of(BUNDLE_ALIGN)
                .ok_or(BundleError::TooLarge)?;
            let mut field = [0u8; BUNDLE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            table.extend_from_slice(&field);
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(data.len() as u64).to_le_bytes());
            table.extend_from_slice(&crc32(data).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            offset = offset
                .checked_add(data.len())
                .ok_or(BundleError::TooLarge)?;
        }
        let mut out = table;
        out.reserve(offset.saturating_sub(out.len()));
        for (_, data) in &self.images {
            out.resize(out.len().next_multiple_of(BUNDLE_ALIGN), 0);
            out.extend_from_slice(data);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = BundleWriter::new();
        w.add("hello", b"hello image").unwrap();
        w.add("demo", &[7u8; 1001]).unwrap();
        w.add("e", b"").unwrap();
        w.finish().unwrap()
    }

    /// Rewrites entry `index`'s field at `at` (within the entry) with `v`.
    fn patch(bytes: &mut [u8], index: usize, at: usize, v: &[u8]) {
        let base = BUNDLE_HEADER_LEN + index * BUNDLE_ENTRY_LEN + at;
        bytes[base..base + v.len()].copy_from_slice(v);
    }

    #[test]
    fn round_trip_in_place_and_aligned() {
        let bytes = sample();
        let b = Bundle::parse(&bytes).unwrap();
        assert_eq!(b.len(), 3);
        let names: Vec<&str> = b.iter().map(|i| i.name).collect();
        assert_eq!(names, ["hello", "demo", "e"]);
        assert_eq!(b.get("demo").unwrap().data, &[7u8; 1001][..]);
        assert_eq!(b.get("e").unwrap().data, b"");
        assert!(b.get("nope").is_none());
        for i in b.iter() {
            let off = i.data.as_ptr() as usize - bytes.as_ptr() as usize;
            assert_eq!(off % BUNDLE_ALIGN, 0, "{} at {off}", i.name);
            assert_eq!(i.crc32, crc32(i.data));
        }
    }

    #[test]
    fn known_layout() {
        let mut w = BundleWriter::new();
        w.add("ab", b"xyz").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(&bytes[..8], b"XLHVIMGS");
        assert_eq!(le_u32(&bytes, 8), 1);
        assert_eq!(le_u32(&bytes, 12), 1);
        assert_eq!(&bytes[16..18], b"ab");
        assert_eq!(
            le_u64(&bytes, 16 + 32),
            72,
            "data right after a 16+56 table"
        );
        assert_eq!(le_u64(&bytes, 16 + 40), 3);
        assert_eq!(le_u32(&bytes, 16 + 48), crc32(b"xyz"));
        assert_eq!(&bytes[72..], b"xyz");
    }

    #[test]
    fn empty_bundle() {
        let bytes = BundleWriter::new().finish().unwrap();
        let b = Bundle::parse(&bytes).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.iter().count(), 0);
    }

    #[test]
    fn each_error() {
        let good = sample();
        assert_eq!(Bundle::parse(b"").unwrap_err(), BundleError::BadMagic);
        assert_eq!(
            Bundle::parse(b"XLHVIMGX\x01\0\0\0\0\0\0\0").unwrap_err(),
            BundleError::BadMagic
        );
        assert_eq!(
            Bundle::parse(&good[..12]).unwrap_err(),
            BundleError::Truncated { need: 16, have: 12 }
        );
        assert_eq!(
            Bundle::parse(&good[..100]).unwrap_err(),
            BundleError::Truncated {
                need: 16 + 3 * 56,
                have: 100
            }
        );
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::UnsupportedVersion(2)
        );
        let mut b = good.clone();
        b[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::TooManyImages(1000)
        );
        let mut b = good.clone();
        patch(&mut b, 1, 0, b"\0demo");
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::BadName { index: 1 }
        );
        let mut b = good.clone();
        patch(&mut b, 0, 0, b"\xff\xfe");
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::BadName { index: 0 }
        );
        let mut b = good.clone();
        patch(&mut b, 0, 0, &[b'x'; 32]);
        let full = Bundle::parse(&b).expect("a 32-byte name fills its field without a NUL");
        assert!(full.get(&"x".repeat(32)).is_some());
        let mut b = good.clone();
        let off = le_u64(&b, 16 + 32);
        patch(&mut b, 0, 32, &(off + 1).to_le_bytes());
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::Misaligned {
                index: 0,
                offset: off + 1
            }
        );
        let mut b = good.clone();
        patch(&mut b, 1, 40, &u64::MAX.to_le_bytes());
        assert!(matches!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::OutOfBounds { index: 1, .. }
        ));
        let mut b = good.clone();
        patch(&mut b, 2, 32, &8u64.to_le_bytes());
        assert!(
            matches!(
                Bundle::parse(&b).unwrap_err(),
                BundleError::OutOfBounds { index: 2, .. }
            ),
            "an image may not overlap the entry table"
        );
        let mut b = good.clone();
        let demo_end = usize::try_from(le_u64(&b, 16 + 56 + 32) + 1001).unwrap();
        b[demo_end - 1] ^= 1;
        assert!(matches!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::CrcMismatch { ref name, .. } if name == "demo"
        ));
        let mut b = good.clone();
        patch(&mut b, 2, 0, b"demo");
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::DuplicateName("demo".into())
        );
        let mut b = good;
        patch(&mut b, 1, 52, &[1]);
        assert_eq!(
            Bundle::parse(&b).unwrap_err(),
            BundleError::Reserved { index: 1 }
        );
    }

    #[test]
    fn writer_refuses_bad_names_and_duplicates() {
        let mut w = BundleWriter::new();
        assert_eq!(w.add("", b""), Err(BundleError::BadName { index: 0 }));
        assert_eq!(
            w.add(&"n".repeat(33), b""),
            Err(BundleError::BadName { index: 0 })
        );
        assert_eq!(w.add("a\nb", b""), Err(BundleError::BadName { index: 0 }));
        w.add(&"n".repeat(32), b"x").unwrap();
        assert_eq!(
            w.add(&"n".repeat(32), b"y"),
            Err(BundleError::DuplicateName("n".repeat(32)))
        );
        let bytes = w.finish().unwrap();
        assert_eq!(
            Bundle::parse(&bytes)
                .unwrap()
                .get(&"n".repeat(32))
                .unwrap()
                .data,
            b"x"
        );
    }

    #[test]
    fn messages_say_what_to_do() {
        let e = BundleError::CrcMismatch {
            name: "hello".into(),
            expected: 1,
            actual: 2,
        };
        let s = e.to_string();
        assert!(s.contains("hello") && s.contains("rebuild"), "{s}");
        assert!(BundleError::BadMagic.to_string().contains("XLHVIMGS"));
    }
}
