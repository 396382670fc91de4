//! Linux bzImages as PV kernels, as Xen 4.17's two builders take them (the
//! hypervisor's `bzimage_parse`, the toolstack's `xc_dom_probe_bzimage_kernel`): the
//! image's setup header says where the compressed kernel (an ELF) lies; the builder
//! unpacks it and goes on with the ELF.
//!
//! The format (Linux's `Documentation/arch/x86/boot.rst`, `struct setup_header`):
//!
//! * the setup header starts at `0x1F1`: `setup_sects` (u8 at `0x1F1`; 0 means 4),
//!   `boot_flag` (u16 `0xAA55` at `0x1FE`), `header` (`"HdrS"` at `0x202`), `version`
//!   (u16 at `0x206`; the payload fields exist from 2.08 on), `payload_offset` (u32 at
//!   `0x248`) and `payload_length` (u32 at `0x24C`);
//! * the protected-mode code starts at `(setup_sects + 1) * 512`; `payload_offset`
//!   counts from there;
//! * the payload is a compressed stream followed by the decompressed size, a
//!   little-endian u32 in its last 4 bytes (Linux's build appends it).
//!
//! [`BzImage::parse`] checks all of that against the image and a caller-given size
//! limit, [`BzImage::decompress`] unpacks into memory the caller provides (nothing
//! here allocates), and checks that the result is an ELF image of exactly the size
//! announced. Supported compressions: **XZ** (with the x86 BCJ filter, as Linux
//! builds it; CRC32 or no integrity check) and **gzip**. The others a kernel may be
//! built with (bzip2, LZMA, LZO, LZ4, zstd) are recognised and refused by name.
//!
//! ```text
//! if bzimage::is_bzimage(image) {
//!     let bz = BzImage::parse(image, limit)?;
//!     let mut elf = vec![0; bz.decompressed_len()];      // caller's memory
//!     let mut scratch = vec![0; bz.scratch_len()];       // XZ's dictionary
//!     bz.decompress(&mut elf, &mut scratch)?;
//!     let elf = Elf::parse(&elf)?;
//! }
//! ```

use core::fmt;

use crate::elf::{Elf, ElfError};

/// Offset of `setup_sects`.
const SETUP_SECTS: usize = 0x1F1;
/// Offset of `boot_flag`.
const BOOT_FLAG: usize = 0x1FE;
/// The value of `boot_flag`.
const BOOT_FLAG_MAGIC: u16 = 0xAA55;
/// Offset of `header`.
const HEADER: usize = 0x202;
/// The value of `header`.
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of `version`.
const VERSION: usize = 0x206;
/// Offset of `payload_offset`.
const PAYLOAD_OFFSET: usize = 0x248;
/// Offset of `payload_length`.
const PAYLOAD_LENGTH: usize = 0x24C;
/// The first boot protocol version with `payload_offset`/`payload_length`.
pub const MIN_VERSION: u16 = 0x0208;
/// Bytes of the header this module reads (up to the end of `payload_length`).
const HEADER_END: usize = PAYLOAD_LENGTH + 4;
/// The smallest decompressed size that can be an ELF image (its file header).
const MIN_ELF: usize = 64;
/// The largest XZ dictionary accepted (xz's `-9` preset; Linux builds with 32 MiB).
pub const MAX_XZ_DICT: usize = 64 << 20;

/// How a bzImage's payload is compressed (by its magic, as Xen's `decompress` and
/// Linux's `decompress_method` tell them apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`1F 8B`). Supported.
    Gzip,
    /// XZ (`FD 37 7A 58 5A 00`). Supported (LZMA2, x86 BCJ).
    Xz,
    /// bzip2 (`BZh`). Not supported.
    Bzip2,
    /// LZMA "alone" (`5D 00`). Not supported.
    Lzma,
    /// LZO (`89 4C 5A 4F`). Not supported.
    Lzo,
    /// LZ4 legacy frame (`02 21 4C 18`). Not supported.
    Lz4,
    /// zstd (`28 B5 2F FD`). Not supported.
    Zstd,
}

impl Compression {
    /// The compression of a stream that starts with `data`, if known.
    pub fn detect(data: &[u8]) -> Option<Self> {
        const MAGICS: [(&[u8], Compression); 7] = [
            (&[0xFD, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
            (&[0x1F, 0x8B], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0x5D, 0x00], Compression::Lzma),
            (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
            (&[0x02, 0x21, 0x4C, 0x18], Compression::Lz4),
            (&[0x28, 0xB5, 0x2F, 0xFD], Compression::Zstd),
        ];
        MAGICS
            .iter()
            .find(|(m, _)| data.starts_with(m))
            .map(|&(_, c)| c)
    }

    /// Whether [`BzImage::decompress`] unpacks it.
    pub fn is_supported(self) -> bool {
        matches!(self, Compression::Gzip | Compression::Xz)
    }

    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "XZ",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "LZMA",
            Compression::Lzo => "LZO",
            Compression::Lz4 => "LZ4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a bzImage was refused. `Display` says what is wrong in words a user can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BzError {
    /// No `boot_flag` `0xAA55` and `"HdrS"` header: not a bzImage.
    NotBzImage,
    /// The image ends inside the setup header.
    TruncatedHeader {
        /// The image's size.
        len: usize,
    },
    /// Boot protocol older than 2.08: no payload fields.
    OldProtocol {
        /// `version` (major in the high byte).
        version: u16,
    },
    /// The payload (or the setup code before it) does not lie inside the image.
    PayloadOutside {
        /// Where it starts in the image (`u64::MAX` when that overflows).
        start: u64,
        /// `payload_length`.
        len: u32,
        /// The image's size.
        image_len: usize,
    },
    /// The payload's magic is none of the known compressions.
    UnknownCompression {
        /// Its first bytes (zero-padded).
        magic: [u8; 6],
    },
    /// A known compression this builder does not unpack.
    Unsupported(Compression),
    /// The decompressed size (the payload's last 4 bytes) is too small for an ELF.
    TooSmall {
        /// The size announced.
        len: u32,
    },
    /// The decompressed size, or the XZ dictionary, is over the caller's limit.
    TooLarge {
        /// What is too large: "kernel" or "XZ dictionary".
        what: &'static str,
        /// Its size in bytes.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The XZ stream's headers are malformed or ask for what is not supported.
    BadXzHeader(&'static str),
    /// The caller's buffers are smaller than [`BzImage::decompressed_len`] /
    /// [`BzImage::scratch_len`].
    BufferTooSmall,
    /// The compressed stream is corrupt or truncated.
    Corrupt {
        /// Its compression.
        compression: Compression,
        /// What the decompressor said.
        detail: &'static str,
    },
    /// The stream holds more or less than the size its trailer announces.
    SizeMismatch {
        /// The size announced.
        announced: u32,
        /// Bytes produced (`announced + 1` means more: decoding stops there).
        produced: u64,
    },
    /// The decompressed kernel is not an ELF image we accept.
    NotElf(ElfError),
}

impl fmt::Display for BzError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BzError::NotBzImage => {
                f.write_str("not a bzImage (no boot_flag 0xAA55 and \"HdrS\" setup header)")
            }
            BzError::TruncatedHeader { len } => write!(
                f,
                "bzImage truncated: {len} bytes, the setup header needs {HEADER_END}"
            ),
            BzError::OldProtocol { version } => write!(
                f,
                "bzImage boot protocol {}.{:02} is older than 2.08 (no payload fields)",
                version >> 8,
                version & 0xff
            ),
            BzError::PayloadOutside {
                start,
                len,
                image_len,
            } => write!(
                f,
                "bzImage payload ({len} bytes at offset {start:#x}) lies outside the {image_len}-byte image"
            ),
            BzError::UnknownCompression { magic } => write!(
                f,
                "bzImage payload has an unknown compression (magic {:02x} {:02x} {:02x} {:02x} {:02x} {:02x})",
                magic[0], magic[1], magic[2], magic[3], magic[4], magic[5]
            ),
            BzError::Unsupported(c) => write!(
                f,
                "bzImage payload is {c}-compressed; only XZ and gzip kernels are supported (rebuild with CONFIG_KERNEL_XZ or CONFIG_KERNEL_GZIP, or pass the vmlinux ELF)"
            ),
            BzError::TooSmall { len } => write!(
                f,
                "bzImage announces a {len}-byte kernel, too small for an ELF image"
            ),
            BzError::TooLarge { what, len, limit } => write!(
                f,
                "bzImage {what} of {len} bytes is over the limit of {limit} bytes"
            ),
            BzError::BadXzHeader(why) => write!(f, "bzImage XZ stream: {why}"),
            BzError::BufferTooSmall => {
                f.write_str("bzImage: the buffers given are smaller than the kernel needs")
            }
            BzError::Corrupt {
                compression,
                detail,
            } => write!(f, "bzImage {compression} payload is corrupt: {detail}"),
            BzError::SizeMismatch {
                announced,
                produced,
            } => {
                if *produced > u64::from(*announced) {
                    write!(
                        f,
                        "bzImage payload decompresses to more than the {announced} bytes its trailer announces"
                    )
                } else {
                    write!(
                        f,
                        "bzImage payload decompresses to {produced} bytes, fewer than the {announced} its trailer announces"
                    )
                }
            }
            BzError::NotElf(e) => write!(f, "bzImage payload is not a usable ELF kernel: {e}"),
        }
    }
}

fn u16_at(image: &[u8], at: usize) -> Option<u16> {
    let b = image.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(image: &[u8], at: usize) -> Option<u32> {
    let b = image.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Whether `image` has a bzImage's setup header signature (`boot_flag` and `"HdrS"`).
/// An ELF image never does (its first bytes are `7F 45 4C 46`, and its header is
/// not at `0x1FE`), so a builder can try this first.
pub fn is_bzimage(image: &[u8]) -> bool {
    !image.starts_with(b"\x7fELF")
        && u16_at(image, BOOT_FLAG) == Some(BOOT_FLAG_MAGIC)
        && image.get(HEADER..HEADER + 4) == Some(&HEADER_MAGIC[..])
}

/// A checked bzImage: where its payload is, how it is compressed and how large the
/// kernel inside is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage<'a> {
    version: u16,
    setup_sects: u8,
    payload_start: usize,
    payload: &'a [u8],
    compression: Compression,
    decompressed_len: u32,
    scratch_len: usize,
}

impl<'a> BzImage<'a> {
    /// Checks `image`'s setup header and payload. `limit` bounds the decompressed
    /// kernel and the XZ dictionary (each), so a caller never allocates more than it
    /// chose to on the image's say-so.
    pub fn parse(image: &'a [u8], limit: u64) -> Result<Self, BzError> {
        if image.len() < HEADER_END {
            if is_bzimage(image) {
                return Err(BzError::TruncatedHeader { len: image.len() });
            }
            return Err(BzError::NotBzImage);
        }
        if !is_bzimage(image) {
            return Err(BzError::NotBzImage);
        }
        let err_trunc = BzError::TruncatedHeader { len: image.len() };
        let version = u16_at(image, VERSION).ok_or(err_trunc.clone())?;
        if version < MIN_VERSION {
            return Err(BzError::OldProtocol { version });
        }
        let raw_sects = *image.get(SETUP_SECTS).ok_or(err_trunc.clone())?;
        let setup_sects = if raw_sects == 0 { 4 } else { raw_sects };
        let payload_offset = u32_at(image, PAYLOAD_OFFSET).ok_or(err_trunc.clone())?;
        let len = u32_at(image, PAYLOAD_LENGTH).ok_or(err_trunc)?;
        let start = (u64::from(setup_sects) + 1) * 512 + u64::from(payload_offset);
        let outside = BzError::PayloadOutside {
            start,
            len,
            image_len: image.len(),
        };
        let payload_start = usize::try_from(start).map_err(|_| outside.clone())?;
        let end = payload_start
            .checked_add(usize::try_from(len).map_err(|_| outside.clone())?)
            .ok_or(outside.clone())?;
        let payload = image.get(payload_start..end).ok_or(outside)?;
        let mut magic = [0u8; 6];
        for (m, b) in magic.iter_mut().zip(payload) {
            *m = *b;
        }
        let compression =
            Compression::detect(payload).ok_or(BzError::UnknownCompression { magic })?;
        if !compression.is_supported() {
            return Err(BzError::Unsupported(compression));
        }
        // The size Linux's build appends; a payload too short to hold it and a stream
        // is corrupt.
        let tail = payload
            .len()
            .checked_sub(4)
            .filter(|&t| t >= magic.len())
            .ok_or(BzError::Corrupt {
                compression,
                detail: "the payload is too short",
            })?;
        let decompressed_len = u32_at(payload, tail).ok_or(BzError::Corrupt {
            compression,
            detail: "the payload is too short",
        })?;
        if (decompressed_len as usize) < MIN_ELF {
            return Err(BzError::TooSmall {
                len: decompressed_len,
            });
        }
        if u64::from(decompressed_len) > limit {
            return Err(BzError::TooLarge {
                what: "kernel",
                len: u64::from(decompressed_len),
                limit,
            });
        }
        let scratch_len = match compression {
            Compression::Xz => {
                let dict = xz_dict_size(payload)?;
                if dict > MAX_XZ_DICT as u64 || dict > limit {
                    return Err(BzError::TooLarge {
                        what: "XZ dictionary",
                        len: dict,
                        limit: limit.min(MAX_XZ_DICT as u64),
                    });
                }
                usize::try_from(dict).map_err(|_| BzError::BadXzHeader("dictionary too large"))?
            }
            _ => 0,
        };
        Ok(BzImage {
            version,
            setup_sects,
            payload_start,
            payload,
            compression,
            decompressed_len,
            scratch_len,
        })
    }

    /// The boot protocol version (major in the high byte).
    pub fn version(&self) -> u16 {
        self.version
    }

    /// Sectors of real-mode setup code (`setup_sects`, 0 read as 4).
    pub fn setup_sects(&self) -> u8 {
        self.setup_sects
    }

    /// Where the payload starts in the image.
    pub fn payload_start(&self) -> usize {
        self.payload_start
    }

    /// The compressed payload (with the 4-byte size at its end).
    pub fn payload(&self) -> &'a [u8] {
        self.payload
    }

    /// How the payload is compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The size of the kernel inside: the bytes [`decompress`](Self::decompress)
    /// needs for its output (at most the limit given to [`parse`](Self::parse)).
    pub fn decompressed_len(&self) -> usize {
        self.decompressed_len as usize
    }

    /// The scratch memory [`decompress`](Self::decompress) needs: the XZ stream's
    /// dictionary (0 for gzip, which inflates straight into the output).
    pub fn scratch_len(&self) -> usize {
        self.scratch_len
    }

    /// Unpacks the kernel into `out` (at least [`decompressed_len`] bytes) with
    /// `scratch` (at least [`scratch_len`] bytes) as working memory, checks that it
    /// holds exactly the size announced and that it is an ELF image [`Elf::parse`]
    /// accepts, and returns it (`out`'s first [`decompressed_len`] bytes).
    ///
    /// [`decompressed_len`]: Self::decompressed_len
    /// [`scratch_len`]: Self::scratch_len
    pub fn decompress<'o>(
        &self,
        out: &'o mut [u8],
        scratch: &mut [u8],
    ) -> Result<&'o [u8], BzError> {
        let want = self.decompressed_len();
        if scratch.len() < self.scratch_len {
            return Err(BzError::BufferTooSmall);
        }
        let out = out.get_mut(..want).ok_or(BzError::BufferTooSmall)?;
        let produced = match self.compression {
            Compression::Xz => {
                let mut decoder =
                    xz4rust::XzDecoder::with_fixed_size_dict(&mut scratch[..self.scratch_len]);
                xz_run(&mut decoder, self.payload, out)?
            }
            Compression::Gzip => gzip_decompress(self.payload, out)?,
            c => return Err(BzError::Unsupported(c)),
        };
        self.check_output(out, produced)
    }

    /// Checks that `produced` bytes are the size announced and an ELF; the kernel.
    fn check_output<'o>(&self, out: &'o [u8], produced: usize) -> Result<&'o [u8], BzError> {
        let want = self.decompressed_len();
        if produced != want {
            return Err(BzError::SizeMismatch {
                announced: self.decompressed_len,
                produced: produced as u64,
            });
        }
        let elf = &out[..want];
        Elf::parse(elf).map_err(BzError::NotElf)?;
        Ok(elf)
    }
}

#[cfg(any(test, feature = "alloc"))]
impl BzImage<'_> {
    /// [`decompress`](Self::decompress) with the XZ decoder's state (about 30 KB)
    /// on the heap instead of the stack, and `dict` (at least
    /// [`scratch_len`](Self::scratch_len) bytes, allocated by the caller, so that a
    /// failure is the caller's to handle) as its dictionary. For callers whose
    /// stack is small (dom0's is 64 KiB).
    pub fn decompress_boxed<'o>(
        &self,
        out: &'o mut [u8],
        dict: alloc::vec::Vec<u8>,
    ) -> Result<&'o [u8], BzError> {
        let want = self.decompressed_len();
        if dict.len() < self.scratch_len {
            return Err(BzError::BufferTooSmall);
        }
        let out = out.get_mut(..want).ok_or(BzError::BufferTooSmall)?;
        let produced = match self.compression {
            Compression::Xz => {
                // The dictionary is already as large as the stream asks, so the
                // decoder never allocates (a later block asking for more is an error).
                let max = dict.len();
                let mut decoder = xz4rust::XzDecoder::in_heap_with_alloc_dict(dict, max);
                xz_run(&mut decoder, self.payload, out)?
            }
            Compression::Gzip => gzip_decompress(self.payload, out)?,
            c => return Err(BzError::Unsupported(c)),
        };
        self.check_output(out, produced)
    }
}

/// Reads an XZ variable-length integer at `*at` (at most 9 bytes, 7 bits each).
fn vli(data: &[u8], at: &mut usize) -> Result<u64, BzError> {
    let mut v = 0u64;
    for i in 0..9 {
        let b = *data
            .get(*at)
            .ok_or(BzError::BadXzHeader("block header truncated"))?;
        *at += 1;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(BzError::BadXzHeader("non-minimal integer in block header"));
            }
            return Ok(v);
        }
    }
    Err(BzError::BadXzHeader("integer in block header too long"))
}

/// The XZ filter ids this decoder knows.
const XZ_FILTER_X86: u64 = 0x04;
const XZ_FILTER_LZMA2: u64 = 0x21;

/// The LZMA2 dictionary size the stream's first block asks for (the decoder needs a
/// dictionary buffer that large). XZ format 1.0.4: a 12-byte stream header, then the
/// block header: size byte (`(b + 1) * 4` bytes), flags (filter count - 1 in bits
/// 0-1, optional compressed/uncompressed sizes in bits 6/7), the sizes, and each
/// filter's id, properties size and properties; LZMA2's one property byte encodes the
/// dictionary size.
fn xz_dict_size(stream: &[u8]) -> Result<u64, BzError> {
    const STREAM_HEADER: usize = 12;
    let size_byte = *stream.get(STREAM_HEADER).ok_or(BzError::BadXzHeader(
        "stream truncated before its first block",
    ))?;
    if size_byte == 0 {
        return Err(BzError::BadXzHeader("the stream holds no block"));
    }
    let header_len = (usize::from(size_byte) + 1) * 4;
    let header = stream
        .get(STREAM_HEADER..STREAM_HEADER + header_len)
        .ok_or(BzError::BadXzHeader("block header truncated"))?;
    let flags = header[1];
    if flags & 0x3c != 0 {
        return Err(BzError::BadXzHeader("reserved block flags set"));
    }
    let mut at = 2;
    if flags & 0x40 != 0 {
        vli(header, &mut at)?;
    }
    if flags & 0x80 != 0 {
        vli(header, &mut at)?;
    }
    let filters = usize::from(flags & 3) + 1;
    for i in 0..filters {
        let id = vli(header, &mut at)?;
        let props_len = usize::try_from(vli(header, &mut at)?)
            .map_err(|_| BzError::BadXzHeader("filter properties too long"))?;
        let props_end = at
            .checked_add(props_len)
            .filter(|&e| e <= header.len())
            .ok_or(BzError::BadXzHeader(
                "filter properties run past the block header",
            ))?;
        let props = &header[at..props_end];
        at = props_end;
        let last = i + 1 == filters;
        match id {
            XZ_FILTER_LZMA2 if last => {
                let [p] = props else {
                    return Err(BzError::BadXzHeader("LZMA2 properties are not one byte"));
                };
                if *p > 40 {
                    return Err(BzError::BadXzHeader("LZMA2 dictionary size out of range"));
                }
                if *p == 40 {
                    return Ok(u64::from(u32::MAX));
                }
                return Ok((2 | u64::from(*p & 1)) << (*p / 2 + 11));
            }
            XZ_FILTER_X86 if !last => {}
            _ if last => {
                return Err(BzError::BadXzHeader("the last filter is not LZMA2"));
            }
            _ => {
                return Err(BzError::BadXzHeader(
                    "a filter other than x86 BCJ before LZMA2 (only x86 BCJ is supported)",
                ));
            }
        }
    }
    Err(BzError::BadXzHeader("no LZMA2 filter"))
}

fn xz_error(e: &xz4rust::XzError) -> &'static str {
    use xz4rust::XzError as E;
    match e {
        E::ContentCrc32Mismatch(..) => "CRC32 of the content does not match",
        E::StreamHeaderMagicNumberMismatch => "bad stream header magic",
        E::StreamHeaderCrc32Mismatch(..) => "CRC32 of the stream header does not match",
        E::BlockHeaderCrc32Mismatch(..) => "CRC32 of a block header does not match",
        E::IndexCrc32Mismatch(..) | E::CorruptedDataInBlockIndex => "the index is corrupt",
        E::FooterMagicNumberMismatch
        | E::FooterCheckTypeMismatch(..)
        | E::FooterCrc32Mismatch(..)
        | E::FooterDecoderIndexMismatch(..) => "the stream footer is corrupt",
        E::DictionaryTooLarge(_) => "a block needs a larger dictionary than the first",
        E::UnsupportedCheckType(_) => {
            "unsupported integrity check (CRC32 or none are supported; Linux uses CRC32)"
        }
        E::Crc64NotSupported | E::Sha256NotSupported => {
            "unsupported integrity check (CRC32 or none are supported; Linux uses CRC32)"
        }
        E::DeltaFilterUnsupported | E::UnsupportedBcjFilter(_) => {
            "unsupported filter (only x86 BCJ and LZMA2 are supported)"
        }
        E::UnsupportedStreamHeaderOption | E::UnsupportedBlockHeaderOption => {
            "unsupported header option"
        }
        E::MoreDataInBlockBodyThanHeaderIndicated | E::LessDataInBlockBodyThanHeaderIndicated => {
            "a block's size does not match its header"
        }
        _ => "corrupt LZMA2 data",
    }
}

/// Decodes the XZ stream at the start of `payload` into `out` with `decoder`; bytes
/// produced (`out.len() + 1` when the stream holds more).
fn xz_run(
    decoder: &mut xz4rust::XzDecoder<'_>,
    payload: &[u8],
    out: &mut [u8],
) -> Result<usize, BzError> {
    let corrupt = |detail| BzError::Corrupt {
        compression: Compression::Xz,
        detail,
    };
    // Once `out` is full, the decoder goes on (index, footer, checks) with a 1-byte
    // spare: a byte landing there means the stream holds more than announced.
    let mut spare = [0u8; 1];
    let (mut i, mut o) = (0usize, 0usize);
    loop {
        let input = payload.get(i..).unwrap_or_default();
        let full = o >= out.len();
        let output = match out.get_mut(o..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => &mut spare[..],
        };
        match decoder.decode(input, output) {
            Ok(r) => {
                if full && r.output_produced() > 0 {
                    return Ok(o.saturating_add(1));
                }
                i = i.saturating_add(r.input_consumed());
                o = o.saturating_add(r.output_produced());
                if r.is_end_of_stream() {
                    return Ok(o);
                }
                if !r.made_progress() {
                    return Err(corrupt("the stream is truncated"));
                }
            }
            Err(xz4rust::XzError::NeedsLargerInputBuffer) => {
                return Err(corrupt("the stream is truncated"));
            }
            Err(e) => return Err(corrupt(xz_error(&e))),
        }
    }
}

/// gzip member header flags (RFC 1952).
const GZ_FHCRC: u8 = 0x02;
const GZ_FEXTRA: u8 = 0x04;
const GZ_FNAME: u8 = 0x08;
const GZ_FCOMMENT: u8 = 0x10;

/// Inflates the gzip member at the start of `payload` into `out`, checks its CRC-32
/// and size trailer; bytes produced.
fn gzip_decompress(payload: &[u8], out: &mut [u8]) -> Result<usize, BzError> {
    let corrupt = |detail| BzError::Corrupt {
        compression: Compression::Gzip,
        detail,
    };
    let trunc = corrupt("the header is truncated");
    let head = payload.get(..10).ok_or(trunc.clone())?;
    if head[2] != 8 {
        return Err(corrupt("compression method is not deflate"));
    }
    let flags = head[3];
    if flags & 0xE0 != 0 {
        return Err(corrupt("reserved header flags set"));
    }
    let mut at = 10usize;
    if flags & GZ_FEXTRA != 0 {
        let xlen = u16_at(payload, at).ok_or(trunc.clone())?;
        at = at.checked_add(2 + usize::from(xlen)).ok_or(trunc.clone())?;
    }
    for flag in [GZ_FNAME, GZ_FCOMMENT] {
        if flags & flag != 0 {
            let rest = payload.get(at..).ok_or(trunc.clone())?;
            let nul = rest.iter().position(|&b| b == 0).ok_or(trunc.clone())?;
            at += nul + 1;
        }
    }
    if flags & GZ_FHCRC != 0 {
        at += 2;
    }
    let deflate = payload.get(at..).ok_or(trunc)?;
    // Inflate into the whole output; it stops at the end of the deflate stream.
    let n = match miniz_oxide::inflate::decompress_slice_iter_to_slice(
        out,
        core::iter::once(deflate),
        false,
        true,
    ) {
        Ok(n) => n,
        // More than announced.
        Err(miniz_oxide::inflate::TINFLStatus::HasMoreOutput) => {
            return Ok(out.len().saturating_add(1));
        }
        Err(_) => return Err(corrupt("bad deflate data")),
    };
    // The member's trailer: CRC-32 and size of the data. Where the deflate stream
    // ended is not reported, so it is found from the payload's end: Linux appends
    // 4 bytes (the size) after the member, so the trailer is the 8 bytes before them.
    let end = payload.len().saturating_sub(4);
    let crc = end
        .checked_sub(8)
        .and_then(|t| u32_at(payload, t))
        .ok_or(corrupt("the trailer is missing"))?;
    let data = out.get(..n).unwrap_or_default();
    if crc32(data) != crc {
        return Err(corrupt("CRC-32 of the content does not match"));
    }
    Ok(n)
}

/// CRC-32 (IEEE 802.3, reflected, as gzip uses), table-driven.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0u32;
        while i < 256 {
            let mut c = i;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i as usize] = c;
            i += 1;
        }
        t
    };
    let mut c = !0u32;
    for &b in data {
        c = TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests;
