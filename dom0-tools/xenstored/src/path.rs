//! Node names: validation, parents, and the C library's number parsing.

use alloc::format;
use alloc::string::String;

use crate::limits::ABS_PATH_MAX;

/// The home directory of `domid`: `/local/domain/<domid>`.
pub fn domain_path(domid: u32) -> String {
    format!("/local/domain/{domid}")
}

/// Characters allowed in a node name (`valid_chars`).
pub fn valid_chars(p: &[u8]) -> bool {
    p.iter()
        .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@'))
}

/// `is_valid_nodename`: absolute, no trailing `/` (except the root), no
/// `//`, at most `XENSTORE_ABS_PATH_MAX` bytes, allowed characters only.
pub fn is_valid_nodename(p: &[u8]) -> bool {
    p.first() == Some(&b'/')
        && !(p.len() > 1 && p.last() == Some(&b'/'))
        && !p.windows(2).any(|w| w == b"//")
        && p.len() <= ABS_PATH_MAX
        && valid_chars(p)
}

/// Length of a path as the path-length quota counts it: without a leading
/// `/local/domain/<n>/` (the C daemon's `sscanf("/local/domain/%5u/%n")`).
pub fn quota_len(p: &str) -> usize {
    let Some(rest) = p.strip_prefix("/local/domain/") else {
        return p.len();
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if (1..=5).contains(&digits) && rest.as_bytes().get(digits) == Some(&b'/') {
        rest.len() - digits - 1
    } else {
        p.len()
    }
}

/// Parent of a valid absolute path (the root is its own parent).
pub fn parent(p: &str) -> &str {
    match p.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &p[..i],
    }
}

/// Last component of a valid absolute path other than the root.
pub fn basename(p: &str) -> &str {
    p.rfind('/').map_or(p, |i| &p[i + 1..])
}

/// `parent/name`, for a valid absolute `parent`.
pub fn child(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `child` is `parent` or below it (`is_child`; `/` contains all).
pub fn is_child(child: &str, parent: &str) -> bool {
    if parent == "/" {
        return true;
    }
    match child.strip_prefix(parent) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// C's `atoi`: leading white space, an optional sign, decimal digits; stops
/// at the first other byte; 0 if there are no digits. Overflow wraps.
pub fn atoi(s: &[u8]) -> i32 {
    let s = trim_start(s);
    let (neg, s) = sign(s);
    let mut v: i32 = 0;
    for &c in s.iter().take_while(|c| c.is_ascii_digit()) {
        v = v.wrapping_mul(10).wrapping_add(i32::from(c - b'0'));
    }
    if neg { v.wrapping_neg() } else { v }
}

/// C's `strtol(s, &end, 0)` that must consume all of `s` and at least one
/// digit: decimal, `0x` hexadecimal or `0` octal. Saturates like `strtol`.
pub fn strtol_all(s: &[u8]) -> Option<i64> {
    let s = trim_start(s);
    let (neg, s) = sign(s);
    let (radix, digits) = if let Some(h) = s.strip_prefix(b"0x").or(s.strip_prefix(b"0X")) {
        (16, h)
    } else if s.len() > 1 && s[0] == b'0' {
        (8, &s[1..])
    } else {
        (10, s)
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &c in digits {
        let d = char::from(c).to_digit(radix)?;
        v = v
            .saturating_mul(i64::from(radix))
            .saturating_add(i64::from(d));
    }
    Some(if neg { -v } else { v })
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .count();
    &s[n..]
}

fn sign(s: &[u8]) -> (bool, &[u8]) {
    match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        assert!(is_valid_nodename(b"/"));
        assert!(is_valid_nodename(b"/local/domain/1/a-b_c@d"));
        assert!(!is_valid_nodename(b"local"));
        assert!(!is_valid_nodename(b"/a/"));
        assert!(!is_valid_nodename(b"/a//b"));
        assert!(!is_valid_nodename(b"/a b"));
        assert!(!is_valid_nodename(b"/a.b"));
        assert!(!is_valid_nodename(b""));
        let mut long = alloc::vec![b'a'; ABS_PATH_MAX];
        long[0] = b'/';
        assert!(is_valid_nodename(&long));
        long.push(b'a');
        assert!(!is_valid_nodename(&long));
    }

    #[test]
    fn structure() {
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/"), "/");
        assert_eq!(basename("/a/b"), "b");
        assert_eq!(child("/", "a"), "/a");
        assert_eq!(child("/a", "b"), "/a/b");
        assert!(is_child("/a/b", "/a"));
        assert!(is_child("/a", "/a"));
        assert!(!is_child("/ab", "/a"));
        assert!(is_child("/x", "/"));
        assert_eq!(quota_len("/local/domain/12/abc"), 3);
        assert_eq!(quota_len("/local/domain/123456/abc"), 24);
        assert_eq!(quota_len("/tool"), 5);
    }

    #[test]
    fn numbers() {
        assert_eq!(atoi(b"12"), 12);
        assert_eq!(atoi(b" -3x"), -3);
        assert_eq!(atoi(b"abc"), 0);
        assert_eq!(atoi(b"99999999999"), 1_215_752_191);
        assert_eq!(strtol_all(b"12"), Some(12));
        assert_eq!(strtol_all(b"0x10"), Some(16));
        assert_eq!(strtol_all(b"010"), Some(8));
        assert_eq!(strtol_all(b"0"), Some(0));
        assert_eq!(strtol_all(b""), None);
        assert_eq!(strtol_all(b"1a"), None);
        assert_eq!(strtol_all(b"-1"), Some(-1));
    }
}
