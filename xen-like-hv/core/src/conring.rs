//! The hypervisor's console ring (Xen's `conring`): the last bytes of the log, kept
//! for `XEN_SYSCTL_readconsole` (`dom0ctl dmesg`).
//!
//! Positions are free-running `u32` byte counts since boot, like Xen's
//! `conringp`/`conringc`: a reader passes back the position it got to read on from
//! there (`incremental`), and a position older than the oldest byte kept reads from
//! the oldest byte.

/// A ring of the last `N` bytes written.
#[derive(Debug)]
pub struct ConRing<const N: usize> {
    buf: [u8; N],
    /// Bytes written since boot (wrapping).
    prod: u32,
    /// Oldest position a reader may get (moved on by `clear`).
    cons: u32,
}

impl<const N: usize> Default for ConRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> ConRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        ConRing {
            buf: [0; N],
            prod: 0,
            cons: 0,
        }
    }

    fn cap() -> u32 {
        u32::try_from(N).unwrap_or(u32::MAX)
    }

    /// Appends `bytes`; the oldest ones fall out when the ring is full.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.prod as usize % N.max(1)) {
                *slot = b;
            }
            self.prod = self.prod.wrapping_add(1);
        }
        if self.prod.wrapping_sub(self.cons) > Self::cap() {
            self.cons = self.prod.wrapping_sub(Self::cap());
        }
    }

    /// The oldest position kept.
    pub fn oldest(&self) -> u32 {
        self.cons
    }

    /// The position the next byte will get.
    pub fn end(&self) -> u32 {
        self.prod
    }

    /// Copies bytes from position `from` (`None` or a position no longer kept: the
    /// oldest kept) into `out`; returns (bytes copied, the position after them).
    pub fn read(&self, from: Option<u32>, out: &mut [u8]) -> (usize, u32) {
        let kept = self.prod.wrapping_sub(self.cons);
        let start = match from {
            Some(f) if self.prod.wrapping_sub(f) <= kept => f,
            _ => self.cons,
        };
        let avail = self.prod.wrapping_sub(start) as usize;
        let n = avail.min(out.len());
        for (k, o) in out.iter_mut().take(n).enumerate() {
            let pos = start.wrapping_add(u32::try_from(k).unwrap_or(0));
            *o = self.buf.get(pos as usize % N.max(1)).copied().unwrap_or(0);
        }
        (n, start.wrapping_add(u32::try_from(n).unwrap_or(0)))
    }

    /// Forgets everything written so far (`readconsole` with `clear`).
    pub fn clear(&mut self) {
        self.cons = self.prod;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_the_last_bytes_and_reads_on_from_a_position() {
        let mut r = ConRing::<8>::new();
        r.write(b"hello");
        let mut out = [0u8; 16];
        assert_eq!(r.read(None, &mut out), (5, 5));
        assert_eq!(&out[..5], b"hello");
        r.write(b" world");
        assert_eq!(r.oldest(), 3, "the first three fell out");
        assert_eq!(r.read(None, &mut out), (8, 11));
        assert_eq!(&out[..8], b"lo world");
        assert_eq!(r.read(Some(5), &mut out), (6, 11));
        assert_eq!(&out[..6], b" world");
        assert_eq!(
            r.read(Some(0), &mut out).0,
            8,
            "too old: from the oldest kept"
        );
        assert_eq!(r.read(Some(11), &mut out), (0, 11), "nothing new");
        let mut small = [0u8; 3];
        assert_eq!(r.read(Some(5), &mut small), (3, 8));
        r.clear();
        assert_eq!(r.read(None, &mut out), (0, 11));
        r.write(b"!");
        assert_eq!(r.read(None, &mut out), (1, 12));
    }

    proptest! {
        #[test]
        fn reads_the_tail_of_everything_written(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let mut r = ConRing::<64>::new();
            let mut all = Vec::new();
            for c in &chunks {
                r.write(c);
                all.extend_from_slice(c);
            }
            let mut out = [0u8; 100];
            let (n, end) = r.read(None, &mut out);
            let tail = &all[all.len().saturating_sub(64)..];
            prop_assert_eq!(&out[..n], tail);
            prop_assert_eq!(end as usize, all.len());
        }
    }
}
