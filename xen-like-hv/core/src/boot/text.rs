//! Text helpers shared by the command-line and module parsers: bounded quotes of bad
//! input ([`Snippet`]), a bounded warning list ([`Warnings`]), a quote-aware
//! whitespace tokenizer ([`Tokens`]) and Xen's size syntax ([`parse_size`]).

use core::fmt::{self, Write as _};

/// Longest piece of offending input (in bytes) kept in a warning.
pub const SNIPPET_MAX: usize = 48;

/// A copy of at most [`SNIPPET_MAX`] bytes of offending input, cut at a character
/// boundary, so an absurd command line cannot flood the log. Its `Display` escapes
/// control characters and marks a cut with `...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snippet {
    text: heapless::String<SNIPPET_MAX>,
    truncated: bool,
}

impl Snippet {
    /// Copies the start of `s`.
    pub fn new(s: &str) -> Self {
        let mut text = heapless::String::new();
        let mut truncated = false;
        for c in s.chars() {
            if text.push(c).is_err() {
                truncated = true;
                break;
            }
        }
        Snippet { text, truncated }
    }

    /// The kept text (without the `...` marker).
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// Whether the input was longer than what was kept.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }
}

/// Displays a whole string with its control characters escaped (`\n`, `\u{1b}`), so
/// that a logged command line shows exactly what a guest gets, on one line.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Snippet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Escaped(self.text.as_str()).fmt(f)?;
        if self.truncated {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// At most `N` warnings, plus a count of those that did not fit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warnings<W, const N: usize> {
    list: heapless::Vec<W, N>,
    dropped: u32,
}

impl<W, const N: usize> Default for Warnings<W, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W, const N: usize> Warnings<W, N> {
    /// No warnings.
    pub const fn new() -> Self {
        Warnings {
            list: heapless::Vec::new(),
            dropped: 0,
        }
    }

    /// Records `w`, or counts it as dropped if the list is full.
    pub fn push(&mut self, w: W) {
        if self.list.push(w).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// The kept warnings, oldest first.
    pub fn as_slice(&self) -> &[W] {
        &self.list
    }

    /// Iterates over the kept warnings, oldest first.
    pub fn iter(&self) -> core::slice::Iter<'_, W> {
        self.list.iter()
    }

    /// Number of kept warnings.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if there was nothing to warn about (none kept, none dropped).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty() && self.dropped == 0
    }

    /// How many warnings were dropped because the list was full.
    pub fn dropped(&self) -> u32 {
        self.dropped
    }
}

impl<'a, W, const N: usize> IntoIterator for &'a Warnings<W, N> {
    type Item = &'a W;
    type IntoIter = core::slice::Iter<'a, W>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One whitespace-separated word of a command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token<'a> {
    /// The word as written, quotes included.
    pub text: &'a str,
    /// The word opened a `"` that the line never closed; it runs to the end of the line.
    pub unbalanced_quote: bool,
}

impl<'a> Token<'a> {
    /// Splits `key=value` at the first `=`; the value has one level of surrounding
    /// double quotes removed. A word without `=` is a key with no value. A word that is
    /// quoted as a whole, `"key=a b"`, is how GRUB passes a word that contains spaces
    /// (it rebuilds command lines Linux-style), and means `key=a b`.
    pub fn key_value(&self) -> (&'a str, Option<&'a str>) {
        let text = match self
            .text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
        {
            Some(inner) if inner.contains('=') && !inner.contains('"') => inner,
            _ => self.text,
        };
        match text.split_once('=') {
            Some((k, v)) => (k, Some(unquote(v))),
            None => (self.text, None),
        }
    }
}

/// Removes a leading `"` and, if present, a trailing `"`.
pub fn unquote(v: &str) -> &str {
    match v.strip_prefix('"') {
        Some(inner) => inner.strip_suffix('"').unwrap_or(inner),
        None => v,
    }
}

/// Splits a line into words at ASCII whitespace (space, tab, CR, LF, FF); whitespace
/// between double quotes does not split.
#[derive(Clone, Debug)]
pub struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    /// Words of `line`.
    pub fn new(line: &'a str) -> Self {
        Tokens { rest: line }
    }

    /// What has not been tokenized yet, leading whitespace removed.
    pub fn remainder(&self) -> &'a str {
        self.rest.trim_start_matches(is_space)
    }
}

/// The separators of [`Tokens`].
pub fn is_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let s = self.rest.trim_start_matches(is_space);
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let mut in_quote = false;
        let mut end = s.len();
        for (i, c) in s.char_indices() {
            if c == '"' {
                in_quote = !in_quote;
            } else if !in_quote && is_space(c) {
                end = i;
                break;
            }
        }
        let (text, rest) = s.split_at_checked(end)?;
        self.rest = rest;
        Some(Token {
            text,
            unbalanced_quote: in_quote,
        })
    }
}

/// Compares option names as Xen does: `-` and `_` are the same character.
pub fn name_eq(a: &str, b: &str) -> bool {
    let norm = |c: u8| if c == b'-' { b'_' } else { c };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| norm(x) == norm(y))
}

/// Why a size did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Not of the form `NUMBER[UNIT]`.
    Syntax,
    /// Does not fit in 64 bits of bytes.
    Overflow,
}

/// A size parsed by [`parse_size`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// The size in bytes.
    pub bytes: u64,
    /// Whether a unit letter was written (without one the number counts KiB).
    pub unit_given: bool,
}

/// Parses Xen's size syntax (`parse_size_and_unit` in Xen's `xen/lib/parse-size.c`):
/// a number in C notation (decimal, `0x` hex, or `0`-prefixed octal) followed by an
/// optional unit `B`, `K`, `M`, `G` or `T` (any case, powers of 1024). As in Xen, a
/// number without a unit counts KiB. Unlike Xen, anything after the unit is an error
/// and overflow is detected.
pub fn parse_size(s: &str) -> Result<Size, SizeError> {
    let (radix, digits) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (16, h)
    } else if s.len() > 1
        && s.starts_with('0')
        && s.as_bytes().get(1).is_some_and(u8::is_ascii_digit)
    {
        (8, s.get(1..).unwrap_or(""))
    } else {
        (10, s)
    };
    let mut value: u64 = 0;
    let mut ndigits = 0usize;
    let mut unit = None;
    for c in digits.chars() {
        if unit.is_some() {
            return Err(SizeError::Syntax);
        }
        if let Some(d) = c.to_digit(radix) {
            value = value
                .checked_mul(u64::from(radix))
                .and_then(|v| v.checked_add(u64::from(d)))
                .ok_or(SizeError::Overflow)?;
            ndigits += 1;
        } else {
            unit = Some(c);
        }
    }
    if ndigits == 0 {
        return Err(SizeError::Syntax);
    }
    let shift = match unit {
        None => 10,
        Some('b' | 'B') => 0,
        Some('k' | 'K') => 10,
        Some('m' | 'M') => 20,
        Some('g' | 'G') => 30,
        Some('t' | 'T') => 40,
        Some(_) => return Err(SizeError::Syntax),
    };
    let bytes = value
        .checked_mul(1u64 << shift)
        .ok_or(SizeError::Overflow)?;
    Ok(Size {
        bytes,
        unit_given: unit.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;
    use std::vec::Vec;

    #[test]
    fn snippet_truncates_at_char_boundary_and_escapes() {
        let long = "é".repeat(40);
        let s = Snippet::new(&long);
        assert!(s.is_truncated());
        assert_eq!(s.as_str().len(), 48);
        assert!(s.to_string().ends_with("..."));
        assert_eq!(Snippet::new("a\u{1b}[2Jb").to_string(), "a\\u{1b}[2Jb");
    }

    #[test]
    fn escaped_keeps_everything_and_escapes_control_characters() {
        let long = "x=1 ".repeat(100);
        assert_eq!(Escaped(&long).to_string(), long);
        assert_eq!(
            Escaped("a\nb\u{1b}c \"d e\"").to_string(),
            "a\\nb\\u{1b}c \"d e\""
        );
    }

    #[test]
    fn warnings_are_bounded() {
        let mut w: Warnings<u8, 2> = Warnings::new();
        assert!(w.is_empty());
        for i in 0..5 {
            w.push(i);
        }
        assert_eq!(w.as_slice(), &[0, 1]);
        assert_eq!(w.dropped(), 3);
    }

    #[test]
    fn tokens_respect_quotes() {
        let t: Vec<_> = Tokens::new("  a\tb=\"x y\"  c=\"open z").collect();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].text, "a");
        assert_eq!(t[1].key_value(), ("b", Some("x y")));
        assert!(!t[1].unbalanced_quote);
        assert!(t[2].unbalanced_quote);
        assert_eq!(t[2].key_value(), ("c", Some("open z")));
        assert_eq!(Tokens::new(" \t\r\n").count(), 0);
    }

    #[test]
    fn sizes_follow_xen() {
        let b = |s| parse_size(s).map(|z| z.bytes);
        assert_eq!(b("512M"), Ok(512 << 20));
        assert_eq!(b("512m"), Ok(512 << 20));
        assert_eq!(b("2G"), Ok(2 << 30));
        assert_eq!(b("1t"), Ok(1 << 40));
        assert_eq!(b("4096b"), Ok(4096));
        assert_eq!(b("64k"), Ok(64 << 10));
        assert_eq!(b("1024"), Ok(1024 << 10));
        assert_eq!(b("0x10M"), Ok(16 << 20));
        assert_eq!(b("010M"), Ok(8 << 20));
        assert_eq!(b("0"), Ok(0));
        assert_eq!(b(""), Err(SizeError::Syntax));
        assert_eq!(b("M"), Err(SizeError::Syntax));
        assert_eq!(b("0x"), Err(SizeError::Syntax));
        assert_eq!(b("08"), Err(SizeError::Syntax));
        assert_eq!(b("12MB"), Err(SizeError::Syntax));
        assert_eq!(b("1.5G"), Err(SizeError::Syntax));
        assert_eq!(b("-1G"), Err(SizeError::Syntax));
        assert_eq!(b("16777216T"), Err(SizeError::Overflow));
        assert_eq!(b("99999999999999999999"), Err(SizeError::Overflow));
        assert!(!parse_size("12").unwrap().unit_given);
        assert!(parse_size("12K").unwrap().unit_given);
    }

    #[test]
    fn option_names_treat_dash_and_underscore_alike() {
        assert!(name_eq("sync-console", "sync_console"));
        assert!(!name_eq("sync", "sync_console"));
    }
}
