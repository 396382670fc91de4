//! The errors xenstored answers with, by their `xsd_errors` names.

use hypercall_abi::io::xenstore::XSD_ERRORS;

/// An error reply. Each variant is the errno whose name goes on the wire
/// (`XS_ERROR` carries e.g. `"ENOENT\0"`); the discriminant is the index in
/// [`XSD_ERRORS`], so the name is looked up in exactly one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Error {
    /// Invalid argument, malformed request.
    Inval = 0,
    /// Permission denied (node ACLs, privileged-only operation).
    Acces = 1,
    /// Duplicate watch.
    Exist = 2,
    /// Is a directory (not produced by the daemon; listed for completeness).
    IsDir = 3,
    /// No such node, transaction or domain.
    NoEnt = 4,
    /// Out of memory; also a commit of a transaction that failed internally.
    NoMem = 5,
    /// Quota exceeded: nodes, node size, transactions, permissions.
    NoSpc = 6,
    /// Store inconsistency.
    Io = 7,
    /// Directory not empty (not produced by the daemon).
    NotEmpty = 8,
    /// Unknown operation.
    NoSys = 9,
    /// Read-only connection.
    RoFs = 10,
    /// Nested transaction.
    Busy = 11,
    /// Transaction conflict: retry.
    Again = 12,
    /// Already connected (not produced by the daemon).
    IsConn = 13,
    /// Too many watches, or a reply longer than `XENSTORE_PAYLOAD_MAX`.
    TooBig = 14,
    /// Unprivileged owner change.
    Perm = 15,
}

impl Error {
    /// The errno's name as sent in an `XS_ERROR` reply (without the NUL).
    pub fn name(self) -> &'static str {
        XSD_ERRORS[self as usize]
    }

    /// The error whose wire name is `name` (with or without a trailing NUL).
    pub fn from_name(name: &[u8]) -> Option<Error> {
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        ALL.iter().copied().find(|e| e.name().as_bytes() == name)
    }
}

const ALL: [Error; 16] = [
    Error::Inval,
    Error::Acces,
    Error::Exist,
    Error::IsDir,
    Error::NoEnt,
    Error::NoMem,
    Error::NoSpc,
    Error::Io,
    Error::NotEmpty,
    Error::NoSys,
    Error::RoFs,
    Error::Busy,
    Error::Again,
    Error::IsConn,
    Error::TooBig,
    Error::Perm,
];

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (i, e) in ALL.iter().enumerate() {
            assert_eq!(*e as usize, i);
            assert_eq!(Error::from_name(e.name().as_bytes()), Some(*e));
        }
        assert_eq!(Error::NoEnt.name(), "ENOENT");
        assert_eq!(Error::from_name(b"EAGAIN\0"), Some(Error::Again));
    }
}
