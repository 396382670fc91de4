//! The one error type of `dom0ctl`, and its exit codes.

use std::fmt;

use control_proto::{ErrorCode, ErrorReply};

/// Exit codes, as documented in `--help` and `docs/control-protocol.md`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Dom0 reported an error: the operation failed.
    pub const DOM0: u8 = 1;
    /// Usage error (bad arguments; clap's own code).
    pub const USAGE: u8 = 2;
    /// A bad local input: the config file or the kernel image.
    pub const INPUT: u8 = 3;
    /// Dom0 not reachable, or the link failed (timeout, EOF, garbage).
    pub const LINK: u8 = 4;
}

/// Everything that can make a command fail.
#[derive(Debug)]
pub enum Error {
    /// Dom0 answered with an error. Exit code 1.
    Dom0 {
        /// What was being done ("destroy hello").
        context: String,
        /// Dom0's answer.
        reply: ErrorReply,
    },
    /// A config file or kernel image is wrong. Exit code 3.
    Input(String),
    /// Arguments that parse but do not go together (found before connecting).
    /// Exit code 2, as clap's own usage errors.
    Usage(String),
    /// Dom0 cannot be reached or the link failed. Exit code 4.
    Link(String),
    /// Dom0 closed the link (QEMU exited). Exit code 4.
    Closed(String),
    /// The operation did not complete (a domain that did not shut down when
    /// asked). Exit code 1.
    Failed(String),
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Dom0 { .. } | Error::Failed(_) => exit::DOM0,
            Error::Input(_) => exit::INPUT,
            Error::Usage(_) => exit::USAGE,
            Error::Link(_) | Error::Closed(_) => exit::LINK,
        }
    }

    /// Names what was being done, for a dom0 error that has no context yet.
    pub fn context(self, what: impl fmt::Display) -> Self {
        match self {
            Error::Dom0 { context, reply } if context.is_empty() => Error::Dom0 {
                context: what.to_string(),
                reply,
            },
            e => e,
        }
    }
}

/// What to try next after a dom0 error, if there is something useful to say.
pub fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::UnknownDomain => "List domains with `dom0ctl list`.",
        ErrorCode::NameInUse => {
            "Pick another name (`dom0ctl create CONFIG name=other`) or destroy the old domain."
        }
        ErrorCode::UnknownImage => "List the images dom0 has with `dom0ctl images`.",
        ErrorCode::OutOfMemory => {
            "Lower `memory`, or free memory by destroying a domain (`dom0ctl list`)."
        }
        ErrorCode::BadImage => "Build the kernel as a 64-bit Xen PV ELF (with Xen ELF notes).",
        ErrorCode::UnsupportedVersion => "Rebuild dom0ctl and dom0 from the same tree.",
        ErrorCode::Busy => "Try again in a moment.",
        ErrorCode::Xenstore => "See `dom0ctl xenstore ls` for what is there.",
        ErrorCode::UnknownDisk => "List dom0's disks with `dom0ctl volume list`.",
        ErrorCode::UnknownVolume => "List volumes with `dom0ctl volume list`.",
        ErrorCode::NoSpace => {
            "Pick a smaller size or another disk (--on), or remove a volume (`dom0ctl volume rm`)."
        }
        ErrorCode::VolumeInUse => "Destroy the domains that use it first (`dom0ctl list`).",
        ErrorCode::VolumeExists => "Pick another name, or see `dom0ctl volume list`.",
        ErrorCode::DiskReadOnly => {
            "Give dom0 the disk writable (`scripts/run --disk PATH` without `,ro`)."
        }
        _ => return None,
    })
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Dom0 { context, reply } => {
                if !context.is_empty() {
                    write!(f, "{context}: ")?;
                }
                write!(f, "{}", reply.text())?;
                if let Some(h) = hint(reply.code) {
                    write!(f, ". {h}")?;
                }
                Ok(())
            }
            Error::Input(m)
            | Error::Usage(m)
            | Error::Link(m)
            | Error::Closed(m)
            | Error::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Error {}
