//! A buffer cut into page-sized segments.
//!
//! A request names its data as segments: one granted page each, and the
//! 512-byte sectors `first_sect..=last_sect` of that page it uses. A
//! buffer that starts `start` bytes into its first page (a multiple of
//! 512) and is `len` bytes long (a multiple of 512) covers
//! `ceil((start + len) / 4096)` pages; only the first segment may start
//! inside its page and only the last may end inside its page.

use core::ops::Range;

use super::{PAGE_SIZE, SECTOR_BYTES};

/// One segment of a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Index of the page within the buffer's pages.
    pub page: usize,
    /// First 512-byte sector of the page used (0..=7).
    pub first_sect: u8,
    /// Last sector used, inclusive (`first_sect..=7`).
    pub last_sect: u8,
    /// Where the segment's bytes start within the buffer.
    pub offset: usize,
    /// Bytes in the segment (a multiple of 512, at most 4096).
    pub len: usize,
}

/// Why a buffer cannot be cut into segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentError {
    /// No bytes.
    Empty,
    /// The start or the length is not a multiple of 512, or the start is
    /// not inside the first page.
    Misaligned,
}

/// The segments of `len` bytes starting `start` bytes into the first page.
#[derive(Clone, Debug)]
pub struct Segments {
    start: usize,
    len: usize,
    done: usize,
    page: usize,
}

/// Cut `len` bytes starting `start` bytes into their first page into
/// segments.
pub fn split(start: usize, len: usize) -> Result<Segments, SegmentError> {
    let sector = SECTOR_BYTES;
    if len == 0 {
        return Err(SegmentError::Empty);
    }
    if start >= PAGE_SIZE || start % sector != 0 || len % sector != 0 {
        return Err(SegmentError::Misaligned);
    }
    Ok(Segments {
        start,
        len,
        done: 0,
        page: 0,
    })
}

/// Pages `len` bytes starting `start` bytes into the first page touch.
pub fn pages_for(start: usize, len: usize) -> usize {
    (start % PAGE_SIZE).saturating_add(len).div_ceil(PAGE_SIZE)
}

impl Iterator for Segments {
    type Item = Segment;

    fn next(&mut self) -> Option<Segment> {
        if self.done >= self.len {
            return None;
        }
        let in_page = if self.page == 0 { self.start } else { 0 };
        let len = (PAGE_SIZE - in_page).min(self.len - self.done);
        let sector = SECTOR_BYTES;
        let first = in_page / sector;
        let last = first + len / sector - 1;
        let seg = Segment {
            page: self.page,
            first_sect: u8::try_from(first).ok()?,
            last_sect: u8::try_from(last).ok()?,
            offset: self.done,
            len,
        };
        self.done += len;
        self.page += 1;
        Some(seg)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = pages_for(self.start, self.len).saturating_sub(self.page);
        (n, Some(n))
    }
}

impl ExactSizeIterator for Segments {}

/// `n` items cut into consecutive runs of at most `max` (`max` ≥ 1): how
/// the segments of a large buffer are spread over several requests.
pub fn runs(n: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    let max = max.max(1);
    (0..n.div_ceil(max)).map(move |i| i * max..((i + 1) * max).min(n))
}
