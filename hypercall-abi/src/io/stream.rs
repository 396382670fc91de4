//! Byte-stream rings, as used by the console page and the XenStore page.
//!
//! A stream is a power-of-two byte buffer plus two free-running `u32`
//! indices: the producer writes bytes at `prod & (len - 1)` and advances
//! `prod`; the consumer reads at `cons & (len - 1)` and advances `cons`.
//! Each index is written only by its owner. A producer publishes `prod` with
//! release ordering after writing the bytes; a consumer reads `prod` with
//! acquire ordering before reading them, and publishes `cons` after. Signal
//! the other end's event channel after publishing.
//!
//! Bytes are accessed as the 32-bit words that contain them, so a page can
//! be a single `&[AtomicU32]`; only the producer ever writes the data area,
//! so its read-modify-write of a word cannot lose the consumer's data.

use core::sync::atomic::{AtomicU32, Ordering};

use super::ring::RingError;

/// Where one stream lives in a page (all offsets in bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLayout {
    /// Start of the data buffer (a multiple of 4).
    pub data: usize,
    /// Buffer length (a power of two, at least 4).
    pub len: usize,
    /// Offset of the consumer index.
    pub cons: usize,
    /// Offset of the producer index.
    pub prod: usize,
}

/// The parts of a page one stream uses.
#[derive(Clone, Copy)]
struct Stream<'a> {
    data: &'a [AtomicU32],
    mask: u32,
    cons: &'a AtomicU32,
    prod: &'a AtomicU32,
}

impl<'a> Stream<'a> {
    fn new(page: &'a [AtomicU32], l: StreamLayout) -> Result<Self, RingError> {
        let ok = l.len.is_power_of_two()
            && l.len >= 4
            && l.data % 4 == 0
            && l.cons % 4 == 0
            && l.prod % 4 == 0;
        let mask = u32::try_from(l.len - 1).map_err(|_| RingError::PageTooSmall)?;
        let data = page.get(l.data / 4..(l.data + l.len) / 4);
        let cons = page.get(l.cons / 4);
        let prod = page.get(l.prod / 4);
        match (ok, data, cons, prod) {
            (true, Some(data), Some(cons), Some(prod)) => Ok(Stream {
                data,
                mask,
                cons,
                prod,
            }),
            _ => Err(RingError::PageTooSmall),
        }
    }

    fn len(&self) -> u32 {
        self.mask + 1
    }

    fn word(&self, idx: u32) -> (Option<&'a AtomicU32>, u32) {
        let off = idx & self.mask;
        (self.data.get((off / 4) as usize), (off % 4) * 8)
    }
}

/// The producing end of a stream.
pub struct StreamProducer<'a> {
    s: Stream<'a>,
}

impl<'a> StreamProducer<'a> {
    /// The producer of the stream at `layout` in `page`.
    pub fn new(page: &'a [AtomicU32], layout: StreamLayout) -> Result<Self, RingError> {
        Ok(StreamProducer {
            s: Stream::new(page, layout)?,
        })
    }

    /// Bytes that can be written now.
    pub fn space(&self) -> Result<u32, RingError> {
        let cons = self.s.cons.load(Ordering::Acquire);
        let prod = self.s.prod.load(Ordering::Relaxed);
        let used = prod.wrapping_sub(cons);
        if used > self.s.len() {
            return Err(RingError::Overflow);
        }
        Ok(self.s.len() - used)
    }

    /// Write as much of `bytes` as fits and publish it; returns the count.
    pub fn write(&mut self, bytes: &[u8]) -> Result<usize, RingError> {
        let space = self.space()? as usize;
        let mut prod = self.s.prod.load(Ordering::Relaxed);
        let n = bytes.len().min(space);
        for &b in bytes.iter().take(n) {
            let (word, shift) = self.s.word(prod);
            if let Some(w) = word {
                let old = w.load(Ordering::Relaxed);
                w.store(
                    (old & !(0xFF << shift)) | (u32::from(b) << shift),
                    Ordering::Relaxed,
                );
            }
            prod = prod.wrapping_add(1);
        }
        self.s.prod.store(prod, Ordering::Release);
        Ok(n)
    }
}

/// The consuming end of a stream.
pub struct StreamConsumer<'a> {
    s: Stream<'a>,
}

impl<'a> StreamConsumer<'a> {
    /// The consumer of the stream at `layout` in `page`.
    pub fn new(page: &'a [AtomicU32], layout: StreamLayout) -> Result<Self, RingError> {
        Ok(StreamConsumer {
            s: Stream::new(page, layout)?,
        })
    }

    /// Bytes that can be read now.
    pub fn available(&self) -> Result<u32, RingError> {
        let prod = self.s.prod.load(Ordering::Acquire);
        let cons = self.s.cons.load(Ordering::Relaxed);
        let n = prod.wrapping_sub(cons);
        if n > self.s.len() {
            return Err(RingError::Overflow);
        }
        Ok(n)
    }

    /// Read up to `buf.len()` bytes and release their space; returns the
    /// count.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingError> {
        let avail = self.available()? as usize;
        let mut cons = self.s.cons.load(Ordering::Relaxed);
        let n = buf.len().min(avail);
        for b in buf.iter_mut().take(n) {
            let (word, shift) = self.s.word(cons);
            #[allow(clippy::cast_possible_truncation)] // one byte of the word
            if let Some(w) = word {
                *b = (w.load(Ordering::Relaxed) >> shift) as u8;
            }
            cons = cons.wrapping_add(1);
        }
        self.s.cons.store(cons, Ordering::Release);
        Ok(n)
    }
}

impl core::fmt::Debug for StreamProducer<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamProducer")
            .field("len", &self.s.len())
            .finish()
    }
}

impl core::fmt::Debug for StreamConsumer<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("StreamConsumer")
            .field("len", &self.s.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LAYOUT: StreamLayout = StreamLayout {
        data: 0,
        len: 16,
        cons: 16,
        prod: 20,
    };

    proptest! {
        #[test]
        fn bytes_arrive_in_order(chunks in proptest::collection::vec((0usize..20, 0usize..20), 1..50),
                                 start in any::<u32>()) {
            let page: [AtomicU32; 8] = Default::default();
            page[4].store(start, Ordering::Relaxed);
            page[5].store(start, Ordering::Relaxed);
            let mut p = StreamProducer::new(&page, LAYOUT).unwrap();
            let mut c = StreamConsumer::new(&page, LAYOUT).unwrap();
            let mut sent = std::vec::Vec::new();
            let mut got = std::vec::Vec::new();
            let mut next = 0u8;
            for (w, r) in chunks {
                let data: std::vec::Vec<u8> = (0..w).map(|i| next.wrapping_add(u8::try_from(i).unwrap())).collect();
                let n = p.write(&data).unwrap();
                prop_assert!(n <= 16);
                sent.extend_from_slice(&data[..n]);
                next = next.wrapping_add(u8::try_from(n).unwrap());
                let mut buf = [0u8; 20];
                let m = c.read(&mut buf[..r]).unwrap();
                got.extend_from_slice(&buf[..m]);
            }
            let mut buf = [0u8; 16];
            let m = c.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..m]);
            prop_assert_eq!(sent, got);
        }
    }

    #[test]
    fn hostile_index_is_reported() {
        let page: [AtomicU32; 8] = Default::default();
        page[5].store(100, Ordering::Relaxed); // prod far beyond cons + len
        let c = StreamConsumer::new(&page, LAYOUT).unwrap();
        assert_eq!(c.available(), Err(RingError::Overflow));
        let p = StreamProducer::new(&page, LAYOUT).unwrap();
        assert_eq!(p.space(), Err(RingError::Overflow));
    }
}
