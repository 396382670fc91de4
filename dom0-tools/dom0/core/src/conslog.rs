//! A bounded console log per domain: the last [`ConsoleLog::capacity`] bytes a
//! domain wrote, with a running total so readers can ask for "everything after byte
//! N" and learn what they missed.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// The last bytes of one domain's console.
#[derive(Clone, Debug)]
pub struct ConsoleLog {
    buf: VecDeque<u8>,
    cap: usize,
    /// Bytes written since the domain started.
    total: u64,
}

impl ConsoleLog {
    /// An empty log keeping at most `cap` bytes (at least 1).
    pub fn new(cap: usize) -> Self {
        ConsoleLog {
            buf: VecDeque::new(),
            cap: cap.max(1),
            total: 0,
        }
    }

    /// Most bytes kept.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes written since the start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Appends `bytes`, dropping the oldest beyond the capacity.
    pub fn push(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        let keep = bytes.len().min(self.cap);
        let bytes = &bytes[bytes.len() - keep..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow.min(self.buf.len()));
        self.buf.extend(bytes.iter().copied());
    }

    /// Everything kept, oldest first.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// The bytes after position `from` (a `total()` seen earlier), as far as they
    /// are still kept, and the position after them.
    pub fn since(&self, from: u64) -> (Vec<u8>, u64) {
        let first_kept = self.total - self.buf.len() as u64;
        let start = from.clamp(first_kept, self.total);
        let skip = usize::try_from(start - first_kept).unwrap_or(usize::MAX);
        (self.buf.iter().skip(skip).copied().collect(), self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_the_newest_bytes() {
        let mut l = ConsoleLog::new(8);
        l.push(b"hello ");
        l.push(b"world");
        assert_eq!(l.contents(), b"lo world");
        assert_eq!(l.total(), 11);
        assert_eq!(l.since(6), (b"world".to_vec(), 11));
        assert_eq!(
            l.since(0).0,
            b"lo world",
            "older than kept: from the oldest"
        );
        assert_eq!(l.since(11).0, b"");
        l.push(&[b'x'; 20]);
        assert_eq!(l.contents(), [b'x'; 8]);
    }

    proptest! {
        #[test]
        fn is_the_tail_of_everything(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..20), cap in 1usize..64) {
            let mut l = ConsoleLog::new(cap);
            let mut all = Vec::new();
            for c in &chunks {
                l.push(c);
                all.extend_from_slice(c);
            }
            prop_assert_eq!(l.contents(), all[all.len().saturating_sub(cap)..].to_vec());
            prop_assert_eq!(l.total(), all.len() as u64);
        }
    }
}
