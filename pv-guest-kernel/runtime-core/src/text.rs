//! Text helpers: a line-buffered [`fmt::Write`] sink for the console, views
//! of the NUL-terminated buffers that hypercalls fill, and compile-time
//! string assembly for ELF note descriptors.

use core::fmt;

use hypercall_abi::version::XenFeature;

/// A [`fmt::Write`] that collects bytes in an `N`-byte buffer and hands
/// them to `sink` at every newline, when the buffer is full, and on
/// [`LineWriter::finish`].
#[derive(Debug)]
pub struct LineWriter<const N: usize, F: FnMut(&[u8])> {
    buf: [u8; N],
    len: usize,
    sink: F,
}

impl<const N: usize, F: FnMut(&[u8])> LineWriter<N, F> {
    /// An empty writer that flushes into `sink`.
    pub const fn new(sink: F) -> Self {
        LineWriter {
            buf: [0; N],
            len: 0,
            sink,
        }
    }

    /// Hand any buffered bytes to the sink.
    pub fn flush(&mut self) {
        if let Some(pending) = self.buf.get(..self.len)
            && !pending.is_empty()
        {
            (self.sink)(pending);
        }
        self.len = 0;
    }

    /// Flush and return the sink.
    pub fn finish(mut self) -> F {
        self.flush();
        self.sink
    }

    /// Append bytes, flushing as needed.
    pub fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = b;
                self.len += 1;
            }
            if b == b'\n' || self.len >= N {
                self.flush();
            }
        }
    }
}

impl<const N: usize, F: FnMut(&[u8])> fmt::Write for LineWriter<N, F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// The bytes of `buf` before its first NUL (all of it if there is none).
pub fn c_str(buf: &[u8]) -> &[u8] {
    match buf.iter().position(|&b| b == 0) {
        Some(n) => buf.get(..n).unwrap_or(buf),
        None => buf,
    }
}

/// True if `buf` holds a NUL and every byte after the first NUL is zero,
/// as Xen leaves its fixed-size string buffers (no stale data behind the
/// string).
pub fn is_nul_padded(buf: &[u8]) -> bool {
    match buf.iter().position(|&b| b == 0) {
        Some(n) => buf.iter().skip(n).all(|&b| b == 0),
        None => false,
    }
}

/// True if `needle` occurs in `hay` (an empty needle always does).
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

/// Displays bytes as ASCII, printable characters as they are and anything
/// else as `?`.
#[derive(Clone, Copy, Debug)]
pub struct Ascii<'a>(pub &'a [u8]);

impl fmt::Display for Ascii<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use fmt::Write as _;
        for &b in self.0 {
            f.write_char(if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            })?;
        }
        Ok(())
    }
}

/// Displays a `XENFEAT` submap 0 as feature names joined by `|` (bits this
/// crate cannot name as `bitN`), or `none`.
#[derive(Clone, Copy, Debug)]
pub struct FeatureList(pub u32);

impl fmt::Display for FeatureList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let mut sep = "";
        for bit in 0..32 {
            if self.0 & (1 << bit) == 0 {
                continue;
            }
            match XenFeature::ALL.iter().find(|x| **x as u32 == bit) {
                Some(feat) => write!(f, "{sep}{}", feat.name())?,
                None => write!(f, "{sep}bit{bit}")?,
            }
            sep = "|";
        }
        Ok(())
    }
}

/// Concatenate `parts` into an `N`-byte array, zero-padded; evaluation
/// fails (at compile time in a constant) if they do not fit with at least
/// one trailing NUL.
pub const fn concat_nul_padded<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut p = 0;
    while p < parts.len() {
        let part = parts[p];
        let mut i = 0;
        while i < part.len() {
            assert!(at + 1 < N, "string does not fit its note");
            out[at] = part[i];
            at += 1;
            i += 1;
        }
        p += 1;
    }
    out
}

/// The value of the first `key=value` word of a command line (words are
/// separated by ASCII whitespace; the line ends at its first NUL). A bare
/// `key` without `=` does not match.
pub fn cmdline_value<'a>(cmdline: &'a [u8], key: &str) -> Option<&'a [u8]> {
    c_str(cmdline)
        .split(|b| b.is_ascii_whitespace())
        .find_map(|word| {
            let rest = word.strip_prefix(key.as_bytes())?;
            rest.strip_prefix(b"=")
        })
}

/// A decimal `u64` (no sign, no spaces), or `None`.
pub fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = u64::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        n.checked_mul(10)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;
    use std::format;
    use std::vec::Vec;

    #[test]
    fn line_writer_flushes_on_newline_full_and_finish() {
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        let mut w = LineWriter::<4, _>::new(|b: &[u8]| chunks.push(b.to_vec()));
        write!(w, "ab\ncdefg").unwrap();
        let _ = w.finish();
        assert_eq!(chunks, [b"ab\n".to_vec(), b"cdef".to_vec(), b"g".to_vec()]);
    }

    #[test]
    fn c_strings() {
        assert_eq!(c_str(b".7\0\0\0"), b".7");
        assert_eq!(c_str(b"abc"), b"abc");
        assert!(is_nul_padded(b".7\0\0\0"));
        assert!(!is_nul_padded(b".7\0x\0"));
        assert!(!is_nul_padded(b"abc"));
        assert!(contains(
            b"xen-3.0-x86_64 hvm-3.0-x86_32 ",
            b"xen-3.0-x86_64"
        ));
        assert!(!contains(b"xen-3.0-x86_32p", b"xen-3.0-x86_64"));
        assert_eq!(format!("{}", Ascii(b"a\x01b")), "a?b");
    }

    #[test]
    fn feature_lists() {
        assert_eq!(format!("{}", FeatureList(0)), "none");
        assert_eq!(
            format!("{}", FeatureList((1 << 5) | (1 << 11) | (1 << 30))),
            "mmu_pt_update_preserve_ad|dom0|bit30"
        );
    }

    #[test]
    fn command_lines() {
        let line = b"dom0 role=ping peer=3 count=100 rolex=1 flag\0role=pong";
        assert_eq!(cmdline_value(line, "role"), Some(&b"ping"[..]));
        assert_eq!(cmdline_value(line, "peer"), Some(&b"3"[..]));
        assert_eq!(cmdline_value(line, "flag"), None);
        assert_eq!(cmdline_value(line, "missing"), None);
        assert_eq!(cmdline_value(b"a=1\tb=2", "b"), Some(&b"2"[..]));
        assert_eq!(parse_u64(b"10000"), Some(10000));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1x"), None);
        assert_eq!(parse_u64(b"-1"), None);
        assert_eq!(parse_u64(b"18446744073709551616"), None);
    }

    #[test]
    fn concat() {
        const S: [u8; 8] = concat_nul_padded(&[b"ab", b"|", b"cd"]);
        assert_eq!(&S, b"ab|cd\0\0\0");
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn concat_overflow() {
        let _ = concat_nul_padded::<3>(&[b"abc"]);
    }
}
