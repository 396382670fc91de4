//! Error codes carried in [`Response::Error`](crate::Response::Error), and the
//! errors of decoding a payload.

use alloc::string::String;
use core::fmt;

use crate::kind::{Class, Kind};

/// Declares [`ErrorCode`] from one list: name, wire number, kebab name, default message.
macro_rules! error_codes {
    ($( $(#[doc = $doc:literal])* $name:ident = $num:literal, $kebab:literal, $msg:literal; )*) => {
        /// Why dom0 refused or failed a request. The numbers are fixed: never reuse
        /// or renumber one; add new codes at the end (and bump the protocol version).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code with wire number `n`, if there is one.
            pub const fn from_u16(n: u16) -> Option<ErrorCode> {
                match n {
                    $( $num => Some(ErrorCode::$name), )*
                    _ => None,
                }
            }

            /// The code's wire number.
            pub const fn as_u16(self) -> u16 {
                self as u16
            }

            /// A stable lower-case name (`unknown-domain`), for logs and JSON.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $kebab, )*
                }
            }

            /// What the code means, for when a reply carries no message of its own.
            pub const fn default_message(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $msg, )*
                }
            }
        }
    };
}

error_codes! {
    /// No domain has that id or name.
    UnknownDomain = 1, "unknown-domain", "no such domain";
    /// Another domain already has that name.
    NameInUse = 2, "name-in-use", "a domain with that name already exists";
    /// The create request failed validation (name, memory, vcpus, cmdline).
    BadConfig = 3, "bad-config", "the domain configuration is invalid";
    /// The kernel is not a 64-bit Xen PV ELF (bad ELF, no Xen notes, bad layout).
    BadImage = 4, "bad-image", "the kernel is not a 64-bit Xen PV ELF image";
    /// Not enough free memory for the domain or the upload.
    OutOfMemory = 5, "out-of-memory", "not enough free memory";
    /// No image with that name in dom0 (see `Images`).
    UnknownImage = 6, "unknown-image", "no such image";
    /// An upload's bytes do not match the CRC-32 given in `UploadBegin`.
    ChecksumMismatch = 7, "checksum-mismatch", "the uploaded data does not match its CRC-32";
    /// No such upload, a chunk out of order or past the end, or an upload not finished.
    UploadState = 8, "upload-state", "the upload is unknown, incomplete or out of order";
    /// A request dom0 cannot decode or does not know, or a damaged frame.
    BadRequest = 9, "bad-request", "malformed or unknown request";
    /// The peer speaks a protocol version this side does not.
    UnsupportedVersion = 10, "unsupported-version", "unsupported protocol version";
    /// Dom0 cannot take the request now (another upload or client holds it).
    Busy = 11, "busy", "dom0 is busy; try again";
    /// The hypervisor refused the operation; the message names the Xen errno.
    Hypervisor = 12, "hypervisor", "the hypervisor refused the operation";
    /// A bug or broken invariant inside dom0's agent.
    Internal = 13, "internal", "internal error in dom0's control agent";
    /// XenStore refused the request; the message starts with Xen's error name
    /// (`ENOENT`, `EACCES`, ...). Since version 2.
    Xenstore = 14, "xenstore", "XenStore refused the request";
    /// dom0 drives no disk of that name. Version 2, added with volumes: only
    /// answers to the volume requests carry codes 15 to 22.
    UnknownDisk = 15, "unknown-disk", "no such disk";
    /// No volume has that name.
    UnknownVolume = 16, "unknown-volume", "no such volume";
    /// No free extent of the disk (or no disk) is large enough, or the disk's
    /// volume table is full.
    NoSpace = 17, "no-space", "no room on the disk for a volume of that size";
    /// A live domain uses the volume.
    VolumeInUse = 18, "volume-in-use", "a domain uses the volume";
    /// A volume of that name exists (or several do, on different disks).
    VolumeExists = 19, "volume-exists", "a volume with that name already exists";
    /// The disk is read-only.
    DiskReadOnly = 20, "disk-read-only", "the disk is read-only";
    /// The disk holds data but no volume table, or a damaged one.
    DiskHasData = 21, "disk-has-data", "the disk holds data that is not a volume table";
    /// The disk failed a request.
    DiskIo = 22, "disk-io", "the disk failed a request";
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The body of [`Response::Error`](crate::Response::Error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ErrorReply {
    /// What went wrong, as a fixed number.
    pub code: ErrorCode,
    /// Details for a human (may be empty: then [`ErrorCode::default_message`] applies).
    pub message: String,
}

impl ErrorReply {
    /// A reply with its own message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The message to show: the reply's own, else the code's default.
    pub fn text(&self) -> &str {
        if self.message.is_empty() {
            self.code.default_message()
        } else {
            &self.message
        }
    }
}

impl From<ErrorCode> for ErrorReply {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }
}

impl fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Why a payload did not decode into a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload ends before the message does.
    Truncated,
    /// The message ended with this many bytes of the payload left over.
    TrailingBytes(usize),
    /// A string is not UTF-8.
    BadUtf8,
    /// A tag byte has no meaning for this field.
    BadTag {
        /// The field or type.
        what: &'static str,
        /// The byte found.
        value: u8,
    },
    /// The frame kind is not in this protocol version's table.
    UnknownKind(u8),
    /// The kind is known but of the wrong class here (a response where a request
    /// was expected, say).
    UnexpectedKind {
        /// The kind found.
        kind: Kind,
        /// The class expected.
        expected: Class,
    },
    /// An error reply carries a code not in this version's table.
    UnknownErrorCode(u16),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("the payload is shorter than the message"),
            DecodeError::TrailingBytes(n) => {
                write!(f, "{n} unexpected bytes after the end of the message")
            }
            DecodeError::BadUtf8 => f.write_str("a string is not valid UTF-8"),
            DecodeError::BadTag { what, value } => write!(f, "bad {what} tag {value}"),
            DecodeError::UnknownKind(k) => write!(
                f,
                "unknown message kind 0x{k:02x} (this side speaks protocol {})",
                crate::PROTOCOL_VERSION
            ),
            DecodeError::UnexpectedKind { kind, expected } => {
                write!(
                    f,
                    "got {kind}, a {}, where a {expected} was expected",
                    kind.class()
                )
            }
            DecodeError::UnknownErrorCode(c) => write!(f, "unknown error code {c}"),
        }
    }
}

impl From<DecodeError> for ErrorReply {
    /// What dom0 answers to a request it cannot decode.
    fn from(e: DecodeError) -> Self {
        ErrorReply::new(
            ErrorCode::BadRequest,
            alloc::format!("cannot decode request: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_have_messages() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c.as_u16()), Some(c));
            assert!(!c.default_message().is_empty());
            assert!(!c.name().is_empty());
        }
        assert_eq!(ErrorCode::from_u16(0), None);
        assert_eq!(ErrorCode::UnknownDomain.as_u16(), 1);
        assert_eq!(ErrorCode::Internal.as_u16(), 13);
    }

    #[test]
    fn empty_message_falls_back_to_default() {
        let r = ErrorReply::new(ErrorCode::Busy, "");
        assert_eq!(r.text(), ErrorCode::Busy.default_message());
    }
}
