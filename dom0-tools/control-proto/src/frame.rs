//! Framing: one envelope around every message, and the incremental decoder.
//!
//! ```text
//! offset  size  field
//!      0     2  magic "XC" (0x58 0x43)
//!      2     1  protocol version (1)
//!      3     1  kind (see `Kind`)
//!      4     4  request id, little-endian (0 for events)
//!      8     4  payload length N, little-endian, at most MAX_PAYLOAD
//!     12     N  payload
//!   12+N     4  CRC-32 (IEEE) of bytes 0..12+N, little-endian
//! ```
//!
//! The envelope is the same in every protocol version; only the version byte and
//! the payloads change. So a peer can always find, check and skip a frame of a
//! version it does not speak, and answer it.

use alloc::vec::Vec;
use core::fmt;

use crate::PROTOCOL_VERSION;
use crate::crc32::crc32;
use crate::error::{ErrorCode, ErrorReply};
use crate::kind::Kind;

/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"XC";
/// Bytes before the payload.
pub const HEADER_LEN: usize = 12;
/// Bytes after the payload (the CRC-32).
pub const TRAILER_LEN: usize = 4;
/// The largest payload, in bytes (64 KiB).
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// The largest frame, in bytes: also the [`FrameDecoder`]'s buffer size.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// The largest byte string (console data, upload chunk, dmesg text) that fits in
/// one message with room for the message's other fields.
pub const MAX_DATA: usize = MAX_PAYLOAD - 64;

/// One checked frame of this protocol version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The kind byte; [`Kind::from_u8`] says whether this version knows it.
    pub kind: u8,
    /// The request id (0 for events).
    pub id: u32,
    /// The payload, at most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

/// A message whose payload is longer than [`MAX_PAYLOAD`]; it was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTooLong {
    /// The frame's kind.
    pub kind: Kind,
    /// The payload's length.
    pub len: usize,
}

impl fmt::Display for FrameTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a {} payload of {} bytes is over the {MAX_PAYLOAD}-byte frame limit",
            self.kind, self.len
        )
    }
}

/// Appends a frame to `out`: the header, then the payload that `payload` appends,
/// then the CRC. On [`FrameTooLong`], `out` is left as it was.
pub(crate) fn write_frame(
    kind: Kind,
    id: u32,
    out: &mut Vec<u8>,
    payload: impl FnOnce(&mut Vec<u8>),
) -> Result<(), FrameTooLong> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    payload(out);
    let len = out.len() - start - HEADER_LEN;
    let Some(len32) = u32::try_from(len).ok().filter(|_| len <= MAX_PAYLOAD) else {
        out.truncate(start);
        return Err(FrameTooLong { kind, len });
    };
    out[start + 8..start + HEADER_LEN].copy_from_slice(&len32.to_le_bytes());
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// A frame the decoder found but could not deliver. The id and kind are read
/// from the damaged header, so they are a best guess: answer with
/// [`FrameError::reply`] to [`FrameError::id`] (unless it is 0), and expect the
/// peer to ignore answers to ids it never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The CRC-32 does not match: the frame was damaged, or the magic was a
    /// coincidence in garbage. The decoder skipped one byte and resynchronises.
    BadCrc {
        /// The kind byte in the header.
        kind: u8,
        /// The request id in the header.
        id: u32,
    },
    /// A sound frame of a protocol version this side does not speak; skipped whole.
    UnsupportedVersion {
        /// The version byte.
        version: u8,
        /// The kind byte.
        kind: u8,
        /// The request id.
        id: u32,
    },
    /// The length field is over [`MAX_PAYLOAD`]. The decoder skipped one byte and
    /// resynchronises.
    TooLong {
        /// The length field.
        len: u32,
        /// The kind byte in the header.
        kind: u8,
        /// The request id in the header.
        id: u32,
    },
}

impl FrameError {
    /// The request id in the frame's header (0 if none).
    pub const fn id(&self) -> u32 {
        match *self {
            FrameError::BadCrc { id, .. }
            | FrameError::UnsupportedVersion { id, .. }
            | FrameError::TooLong { id, .. } => id,
        }
    }

    /// The error to answer with.
    pub fn reply(&self) -> ErrorReply {
        let code = match self {
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            FrameError::BadCrc { .. } | FrameError::TooLong { .. } => ErrorCode::BadRequest,
        };
        ErrorReply::new(code, alloc::format!("{self}"))
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadCrc { kind, id } => write!(
                f,
                "frame (kind 0x{kind:02x}, id {id}) failed its CRC-32 check: damaged in transit"
            ),
            FrameError::UnsupportedVersion { version, kind, id } => write!(
                f,
                "frame (kind 0x{kind:02x}, id {id}) is protocol version {version}, \
                 but this side speaks version {PROTOCOL_VERSION}"
            ),
            FrameError::TooLong { len, kind, id } => write!(
                f,
                "frame (kind 0x{kind:02x}, id {id}) claims a {len}-byte payload; \
                 the limit is {MAX_PAYLOAD}"
            ),
        }
    }
}

/// Turns a byte stream into frames, whatever the stream holds.
///
/// Feed bytes with [`push`](Self::push) and take frames with
/// [`next_frame`](Self::next_frame) until it returns `None`. The buffer never
/// holds more than [`MAX_FRAME`] bytes; it is allocated once. Bytes that do not
/// start a frame are skipped until the magic; a bad CRC or an impossible length
/// skips one byte and searches again, so a frame after garbage is always found.
///
/// ```
/// use control_proto::{FrameDecoder, Request};
///
/// let mut wire = b"noise".to_vec();
/// Request::List.write_frame(7, &mut wire).unwrap();
/// let mut dec = FrameDecoder::new();
/// let mut rest = &wire[..];
/// while !rest.is_empty() {
///     let n = dec.push(rest);
///     rest = &rest[n..];
///     while let Some(frame) = dec.next_frame() {
///         let frame = frame.unwrap();
///         assert_eq!(frame.id, 7);
///         assert_eq!(Request::from_frame(&frame), Ok(Request::List));
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    skipped: u64,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder (allocates its [`MAX_FRAME`]-byte buffer).
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(MAX_FRAME),
            skipped: 0,
        }
    }

    /// Takes as many bytes of `data` as fit and returns how many it took. After
    /// [`next_frame`](Self::next_frame) has returned `None` there is always room
    /// for at least one byte.
    pub fn push(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(MAX_FRAME - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        n
    }

    /// The next frame or frame error, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        self.skip_to_magic();
        if self.buf.len() < HEADER_LEN {
            return None;
        }
        let version = self.buf[2];
        let kind = self.buf[3];
        let id = u32::from_le_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]);
        let len = u32::from_le_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        let Some(plen) = usize::try_from(len).ok().filter(|&l| l <= MAX_PAYLOAD) else {
            self.skip(1);
            return Some(Err(FrameError::TooLong { len, kind, id }));
        };
        let end = HEADER_LEN + plen;
        if self.buf.len() < end + TRAILER_LEN {
            return None;
        }
        let t = &self.buf[end..end + TRAILER_LEN];
        let want = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        if crc32(&self.buf[..end]) != want {
            self.skip(1);
            return Some(Err(FrameError::BadCrc { kind, id }));
        }
        if version != PROTOCOL_VERSION {
            self.buf.drain(..end + TRAILER_LEN);
            return Some(Err(FrameError::UnsupportedVersion { version, kind, id }));
        }
        let payload = self.buf[HEADER_LEN..end].to_vec();
        self.buf.drain(..end + TRAILER_LEN);
        Some(Ok(Frame { kind, id, payload }))
    }

    /// Gives up on a frame that started but has not finished, as garbage: skips
    /// its first byte and searches the rest again. A sender writes a frame in one
    /// go, so call this when the link has been quiet for a while (say 500 ms) with
    /// [`buffered`](Self::buffered) not 0: the partial frame is then the tail of a
    /// dead connection, and a frame inside it is found again.
    pub fn abandon_partial(&mut self) {
        if !self.buf.is_empty() {
            self.skip(1);
        }
    }

    /// Drops everything buffered.
    pub fn reset(&mut self) {
        self.skipped += self.buf.len() as u64;
        self.buf.clear();
    }

    /// Bytes held that are not yet a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes skipped as garbage since the decoder was made.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    fn skip(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.skipped += n as u64;
    }

    /// Drops bytes up to the first magic (or a last byte that may begin one).
    fn skip_to_magic(&mut self) {
        let start = self
            .buf
            .windows(2)
            .position(|w| w == MAGIC)
            .unwrap_or_else(|| {
                if self.buf.last() == Some(&MAGIC[0]) {
                    self.buf.len() - 1
                } else {
                    self.buf.len()
                }
            });
        self.skip(start);
    }
}
