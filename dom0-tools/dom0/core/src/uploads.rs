//! Upload reception: `UploadBegin`, `UploadChunk`, `UploadEnd` (see
//! `docs/control-protocol.md`, "Uploads").
//!
//! The bytes go into buffers from an [`UploadStore`]. The kernel's store maps
//! free frames (the heap is far too small for a kernel image); tests use
//! vectors. A buffer is freed when its [`Upload`] is dropped: when the CRC
//! fails, at the next `Hello`, or once a domain is built from it.

use alloc::format;
use alloc::vec::Vec;
use core::fmt;

use control_proto::{Crc32, ErrorCode, ErrorReply, MAX_DATA};

/// Unfinished or finished uploads one session may hold at once.
pub const MAX_UPLOADS: usize = 4;
/// The largest upload, in bytes: the protocol's limit, which dom0ctl checks too.
pub use control_proto::MAX_UPLOAD_BYTES;
/// The `chunk_max` offered in `UploadReady`.
#[allow(clippy::cast_possible_truncation)] // MAX_DATA < 2^17 (asserted below)
pub const CHUNK_MAX: u32 = MAX_DATA as u32;
const _: () = assert!(MAX_DATA < 1 << 17);

/// Why a store cannot hold an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Not enough free memory; this many bytes are available.
    OutOfMemory {
        /// Bytes the store could still give.
        available: u64,
    },
    /// The store cannot map another buffer now.
    Exhausted,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::OutOfMemory { available } => {
                write!(f, "dom0 has only {available} bytes free for uploads")
            }
            StoreError::Exhausted => f.write_str("dom0 cannot map another upload buffer"),
        }
    }
}

/// Room for one upload's bytes.
pub trait UploadBuf {
    /// Copies `data` to `offset`. The agent only writes inside the size the
    /// buffer was allocated with.
    fn write(&mut self, offset: usize, data: &[u8]);
    /// The first `len` bytes written.
    fn bytes(&self, len: usize) -> &[u8];
    /// The first `len` bytes (at most the size allocated), to write in place: a
    /// bzImage's kernel is unpacked straight into a buffer of the store.
    fn bytes_mut(&mut self, len: usize) -> &mut [u8];
}

/// Where upload buffers come from.
pub trait UploadStore {
    /// A buffer.
    type Buf: UploadBuf;
    /// A buffer of `size` bytes, or why not.
    fn alloc(&mut self, size: u64) -> Result<Self::Buf, StoreError>;
    /// Frames dom0 can still give (its free memory), for `Info`.
    fn free_frames(&self) -> u64;
}

/// One upload.
#[derive(Debug)]
pub struct Upload<B> {
    /// Its id.
    pub id: u32,
    /// The total size announced.
    pub size: u64,
    /// The CRC-32 announced.
    pub crc32: u32,
    /// Bytes received.
    pub received: u64,
    /// Whether `UploadEnd` checked it.
    pub complete: bool,
    running: Crc32,
    buf: B,
}

impl<B: UploadBuf> Upload<B> {
    /// The bytes of a complete upload.
    pub fn bytes(&self) -> Option<&[u8]> {
        let len = usize::try_from(self.size).ok()?;
        self.complete.then(|| self.buf.bytes(len))
    }
}

/// The uploads of a session.
#[derive(Debug)]
pub struct Uploads<B> {
    list: Vec<Upload<B>>,
    next_id: u32,
}

impl<B> Default for Uploads<B> {
    fn default() -> Self {
        Uploads {
            list: Vec::new(),
            next_id: 1,
        }
    }
}

fn state(msg: alloc::string::String) -> ErrorReply {
    ErrorReply::new(ErrorCode::UploadState, msg)
}

impl<B: UploadBuf> Uploads<B> {
    /// No uploads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops every upload (a new session).
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// How many uploads are held.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Upload `id`.
    pub fn get(&self, id: u32) -> Option<&Upload<B>> {
        self.list.iter().find(|u| u.id == id)
    }

    /// Takes upload `id` out (a domain was built from it).
    pub fn take(&mut self, id: u32) -> Option<Upload<B>> {
        let i = self.list.iter().position(|u| u.id == id)?;
        Some(self.list.remove(i))
    }

    /// `UploadBegin`: an id for `size` bytes with CRC `crc32`.
    pub fn begin<S: UploadStore<Buf = B>>(
        &mut self,
        store: &mut S,
        size: u64,
        crc32: u32,
    ) -> Result<(u32, u32), ErrorReply> {
        if size == 0 {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                "an upload of 0 bytes: there is nothing to send",
            ));
        }
        if size > MAX_UPLOAD_BYTES {
            return Err(ErrorReply::new(
                ErrorCode::OutOfMemory,
                format!(
                    "an upload of {size} bytes is over dom0's limit of {MAX_UPLOAD_BYTES} bytes"
                ),
            ));
        }
        if self.list.len() >= MAX_UPLOADS {
            return Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "this session already holds {MAX_UPLOADS} uploads (a new session drops \
                     them)"
                ),
            ));
        }
        let buf = store.alloc(size).map_err(|e| match e {
            StoreError::OutOfMemory { .. } => ErrorReply::new(
                ErrorCode::OutOfMemory,
                format!("cannot take an upload of {size} bytes: {e}"),
            ),
            StoreError::Exhausted => ErrorReply::new(ErrorCode::Busy, format!("{e}")),
        })?;
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.list.push(Upload {
            id,
            size,
            crc32,
            received: 0,
            complete: false,
            running: Crc32::new(),
            buf,
        });
        Ok((id, CHUNK_MAX))
    }

    fn open(&mut self, id: u32) -> Result<&mut Upload<B>, ErrorReply> {
        self.list.iter_mut().find(|u| u.id == id).ok_or_else(|| {
            state(format!(
                "no upload {id} in this session (uploads end with the session; start again \
                 with UploadBegin)"
            ))
        })
    }

    /// `UploadChunk`: `data` at `offset`; returns the bytes received so far.
    pub fn chunk(&mut self, id: u32, offset: u64, data: &[u8]) -> Result<u64, ErrorReply> {
        let u = self.open(id)?;
        if u.complete {
            return Err(state(format!("upload {id} is already complete")));
        }
        if data.len() > MAX_DATA {
            return Err(state(format!(
                "a chunk of {} bytes is over chunk_max {CHUNK_MAX}",
                data.len()
            )));
        }
        if offset != u.received {
            return Err(state(format!(
                "upload {id}: a chunk at offset {offset}, but {} bytes have arrived; send \
                 chunks in order",
                u.received
            )));
        }
        let end = offset.saturating_add(data.len() as u64);
        if end > u.size {
            return Err(state(format!(
                "upload {id}: a chunk ending at {end} is past its size of {} bytes",
                u.size
            )));
        }
        let at = usize::try_from(offset).map_err(|_| state(format!("offset {offset}")))?;
        u.buf.write(at, data);
        u.running.update(data);
        u.received = end;
        Ok(end)
    }

    /// `UploadEnd`: checks the size and CRC. A CRC mismatch drops the upload.
    pub fn end(&mut self, id: u32) -> Result<(), ErrorReply> {
        let u = self.open(id)?;
        if u.complete {
            return Ok(());
        }
        if u.received != u.size {
            return Err(state(format!(
                "upload {id} has {} of its {} bytes; send the rest before UploadEnd",
                u.received, u.size
            )));
        }
        let actual = u.running.finish();
        if actual != u.crc32 {
            let want = u.crc32;
            self.take(id);
            return Err(ErrorReply::new(
                ErrorCode::ChecksumMismatch,
                format!(
                    "upload {id}: the bytes have CRC-32 {actual:#010x}, UploadBegin said \
                     {want:#010x}; the upload was dropped, send it again"
                ),
            ));
        }
        u.complete = true;
        Ok(())
    }
}

/// A store on the heap, for tests and hosts: at most `limit` bytes in all.
#[derive(Debug, Default)]
pub struct VecStore {
    /// Bytes it may still hand out.
    pub available: u64,
}

impl UploadBuf for Vec<u8> {
    fn write(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = offset
            .checked_add(data.len())
            .and_then(|end| self.get_mut(offset..end))
        {
            dst.copy_from_slice(data);
        }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        &self[..len.min(self.len())]
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        let n = len.min(self.len());
        &mut self[..n]
    }
}

impl UploadStore for VecStore {
    type Buf = Vec<u8>;

    fn alloc(&mut self, size: u64) -> Result<Vec<u8>, StoreError> {
        let n = usize::try_from(size).map_err(|_| StoreError::OutOfMemory {
            available: self.available,
        })?;
        if size > self.available {
            return Err(StoreError::OutOfMemory {
                available: self.available,
            });
        }
        self.available -= size;
        Ok(alloc::vec![0; n])
    }

    fn free_frames(&self) -> u64 {
        self.available / 4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_proto::crc32;

    fn store() -> VecStore {
        VecStore { available: 1 << 20 }
    }

    #[test]
    fn whole_upload() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7).to_le_bytes()[0]).collect();
        let mut s = store();
        let mut up = Uploads::new();
        let (id, max) = up.begin(&mut s, data.len() as u64, crc32(&data)).unwrap();
        assert_eq!(max, CHUNK_MAX);
        let mut off = 0u64;
        for piece in data.chunks(max as usize) {
            off = up.chunk(id, off, piece).unwrap();
        }
        assert_eq!(off, data.len() as u64);
        assert!(up.get(id).unwrap().bytes().is_none(), "not complete yet");
        up.end(id).unwrap();
        assert_eq!(up.get(id).unwrap().bytes().unwrap(), &data[..]);
        up.end(id).unwrap();
        assert_eq!(up.take(id).unwrap().size, data.len() as u64);
        assert!(up.is_empty());
    }

    #[test]
    fn errors() {
        let mut s = store();
        let mut up = Uploads::<Vec<u8>>::new();
        assert_eq!(
            up.begin(&mut s, 0, 0).unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            up.begin(&mut s, MAX_UPLOAD_BYTES + 1, 0).unwrap_err().code,
            ErrorCode::OutOfMemory
        );
        let e = up.begin(&mut s, 2 << 20, 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::OutOfMemory);
        assert!(e.message.contains("1048576 bytes free"), "{}", e.message);
        let (id, _) = up.begin(&mut s, 10, crc32(b"0123456789")).unwrap();
        assert_eq!(
            up.chunk(99, 0, b"x").unwrap_err().code,
            ErrorCode::UploadState
        );
        assert_eq!(
            up.chunk(id, 1, b"x").unwrap_err().code,
            ErrorCode::UploadState
        );
        assert_eq!(
            up.chunk(id, 0, b"0123456789A").unwrap_err().code,
            ErrorCode::UploadState
        );
        assert_eq!(up.chunk(id, 0, b"01234").unwrap(), 5);
        let e = up.end(id).unwrap_err();
        assert_eq!(e.code, ErrorCode::UploadState);
        assert!(e.message.contains("5 of its 10"), "{}", e.message);
        assert_eq!(up.chunk(id, 5, b"56789").unwrap(), 10);
        up.end(id).unwrap();
        assert_eq!(
            up.chunk(id, 10, b"").unwrap_err().code,
            ErrorCode::UploadState,
            "no chunks after the end"
        );
    }

    #[test]
    fn crc_mismatch_drops_the_upload() {
        let mut s = store();
        let mut up = Uploads::new();
        let (id, _) = up.begin(&mut s, 3, crc32(b"abc")).unwrap();
        up.chunk(id, 0, b"abd").unwrap();
        assert_eq!(up.end(id).unwrap_err().code, ErrorCode::ChecksumMismatch);
        assert!(up.get(id).is_none());
    }

    #[test]
    fn session_limit_and_clear() {
        let mut s = store();
        let mut up = Uploads::<Vec<u8>>::new();
        let ids: Vec<u32> = (0..MAX_UPLOADS)
            .map(|_| up.begin(&mut s, 1, 0).unwrap().0)
            .collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert_eq!(up.begin(&mut s, 1, 0).unwrap_err().code, ErrorCode::Busy);
        up.clear();
        assert_eq!(up.begin(&mut s, 1, 0).unwrap().0, 5, "ids are not reused");
    }
}
