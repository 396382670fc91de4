//! Node permissions (`docs/misc/xenstore.txt`): the first entry names the
//! owner and the access everyone else gets; later entries are exceptions
//! for single domains.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use crate::error::Error;
use crate::path::strtol_all;

/// Read access (`XS_PERM_READ`).
pub const READ: u8 = 1;
/// Write access (`XS_PERM_WRITE`).
pub const WRITE: u8 = 2;
/// Ownership (`XS_PERM_OWNER`): may change permissions.
pub const OWNER: u8 = 8;

/// What one permission entry grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// `n`: nothing.
    None,
    /// `r`: read.
    Read,
    /// `w`: write.
    Write,
    /// `b`: both.
    Both,
}

impl Access {
    /// The `XS_PERM_*` bits.
    pub fn bits(self) -> u8 {
        match self {
            Access::None => 0,
            Access::Read => READ,
            Access::Write => WRITE,
            Access::Both => READ | WRITE,
        }
    }

    fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One permission entry, e.g. `r5`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain.
    pub domid: u32,
    /// Its access (for the first entry: everyone else's).
    pub access: Access,
}

impl Perm {
    /// `Perm { domid, access }`.
    pub const fn new(domid: u32, access: Access) -> Perm {
        Perm { domid, access }
    }

    /// Parse one entry as `xs_strings_to_perms` does: a letter `n`/`r`/`w`/`b`
    /// and a domain id (`strtol` base 0) that takes the rest of the string.
    pub fn parse(s: &[u8]) -> Result<Perm, Error> {
        let access = match s.first() {
            Some(b'n') => Access::None,
            Some(b'r') => Access::Read,
            Some(b'w') => Access::Write,
            Some(b'b') => Access::Both,
            _ => return Err(Error::Inval),
        };
        let id = strtol_all(&s[1..]).ok_or(Error::Inval)?;
        // The C daemon stores the `long` in an `unsigned int`.
        let domid = u32::try_from(id & 0xFFFF_FFFF).map_err(|_| Error::Inval)?;
        Ok(Perm { domid, access })
    }

    /// Append the wire form (`%c%i`) and a NUL.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let mut s = String::new();
        // `%i` of the unsigned id prints it as a signed int.
        let _ = write!(
            s,
            "{}{}",
            self.access.letter(),
            i32::from_ne_bytes(self.domid.to_ne_bytes())
        );
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
}

/// Who is asking: the identity permission checks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Who {
    /// The connection's domain.
    pub domid: u32,
    /// dom0 (and the in-process toolstack): bypasses every check.
    pub privileged: bool,
    /// The domain this one acts for (`XS_SET_TARGET`), e.g. a device model.
    pub target: Option<u32>,
}

impl Who {
    /// The privileged toolstack (domid 0).
    pub const DOM0: Who = Who {
        domid: 0,
        privileged: true,
        target: None,
    };

    fn is(&self, domid: u32) -> bool {
        self.domid == domid || self.target == Some(domid)
    }
}

/// `perm_for_conn`: the access bits `who` has on a node with `perms`.
/// Privileged callers and owners (or their device models) get everything;
/// otherwise the first exception naming the caller, else the default.
pub fn perm_for(who: &Who, perms: &[Perm]) -> u8 {
    let Some(first) = perms.first() else {
        return if who.privileged {
            READ | WRITE | OWNER
        } else {
            0
        };
    };
    if who.privileged || who.is(first.domid) {
        return READ | WRITE | OWNER;
    }
    perms[1..]
        .iter()
        .find(|p| who.is(p.domid))
        .unwrap_or(first)
        .access
        .bits()
}

/// The wire form of a permission list: each entry NUL-terminated.
pub fn to_strings(perms: &[Perm]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in perms {
        p.write_to(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_format() {
        assert_eq!(Perm::parse(b"r5"), Ok(Perm::new(5, Access::Read)));
        assert_eq!(Perm::parse(b"b0x10"), Ok(Perm::new(16, Access::Both)));
        assert_eq!(Perm::parse(b"n0"), Ok(Perm::new(0, Access::None)));
        assert_eq!(Perm::parse(b"x1"), Err(Error::Inval));
        assert_eq!(Perm::parse(b"r"), Err(Error::Inval));
        assert_eq!(Perm::parse(b"r1z"), Err(Error::Inval));
        assert_eq!(
            to_strings(&[Perm::new(3, Access::None), Perm::new(0, Access::Both)]),
            b"n3\0b0\0"
        );
    }

    #[test]
    fn access() {
        let perms = [Perm::new(3, Access::Read), Perm::new(4, Access::Write)];
        let dom = |d| Who {
            domid: d,
            privileged: false,
            target: None,
        };
        assert_eq!(perm_for(&dom(3), &perms), READ | WRITE | OWNER);
        assert_eq!(perm_for(&dom(4), &perms), WRITE);
        assert_eq!(perm_for(&dom(5), &perms), READ);
        assert_eq!(perm_for(&Who::DOM0, &perms), READ | WRITE | OWNER);
        let dm = Who {
            domid: 7,
            privileged: false,
            target: Some(3),
        };
        assert_eq!(perm_for(&dm, &perms), READ | WRITE | OWNER);
    }
}
