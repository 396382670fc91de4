//! The guest's XenStore client (XenBus), without I/O: host-tested here,
//! driven over the real store page by `pv_runtime::xenbus`.
//!
//! * [`wire`]: requests ([`Request`]) encoded as `xs_wire.h` lays them out;
//!   the [`Decoder`] that reassembles replies and watch events from the
//!   response stream whatever the pieces it arrives in; payload parsers.
//! * [`client`]: request ids, matching replies to requests, watch
//!   registrations and the queue of their events.
//! * [`conn`]: the [`Connection`] of a client to a store page
//!   ([`XenstoreFront`](hypercall_abi::io::xenstore::XenstoreFront)):
//!   pumping bytes, blocking requests through a [`Channel`] (notify and
//!   wait), typed operations, ring reset (the reconnection feature).
//! * [`transaction`]: run a transaction, retrying on `EAGAIN`.
//! * [`state`]: the front-end XenBus state machine.
//! * [`control`]: what `control/shutdown` requests mean.
//!
//! Errors are [`XsError`]: xenstored's own (`XS_ERROR` replies carry an
//! errno *name*, turned into [`Errno`]) or the client's.

pub mod client;
pub mod conn;
pub mod control;
pub mod state;
pub mod wire;

#[cfg(test)]
mod tests;

use hypercall_abi::Errno;

pub use client::{Client, ReqId};
pub use conn::{Channel, Connection};
pub use state::{Frontend, FrontendAction, IllegalTransition, XenbusState};
pub use wire::{Access, Decoder, Message, Perm, Request, TxId, WatchEvent};

/// Why a XenStore operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored refused: its `XS_ERROR` reply, e.g. `ENOENT` for a missing
    /// node, `EAGAIN` for a transaction that must be retried, `EACCES`.
    Errno(Errno),
    /// The request cannot be sent: an empty path, a path over
    /// `XENSTORE_ABS_PATH_MAX`/`XENSTORE_REL_PATH_MAX`, or a NUL in a path
    /// or token.
    Invalid,
    /// The payload would exceed `XENSTORE_PAYLOAD_MAX`.
    TooBig,
    /// xenstored sent something that cannot be parsed (a length over the
    /// maximum, a reply of the wrong type, a malformed payload). After a
    /// stream error the connection is unusable until reset.
    Protocol,
    /// The page's indices are impossible (the other end is broken or
    /// hostile); the connection is unusable until reset.
    Ring,
    /// No reply before the deadline.
    Timeout,
    /// The ring was reset while the request waited.
    Reset,
    /// The domain has no store page or event channel (dom0, a boot-time
    /// domU), or it could not be mapped.
    NoStore,
    /// xenstored does not offer what was asked (ring reconnection).
    Unsupported,
    /// The wait itself failed (a hypercall error).
    Wait(Errno),
}

impl XsError {
    /// The errno for this error, for callers that speak errno (Linux's
    /// choices where it has one).
    pub fn errno(&self) -> Errno {
        match self {
            XsError::Errno(e) | XsError::Wait(e) => *e,
            XsError::Invalid => Errno::EINVAL,
            XsError::TooBig => Errno::E2BIG,
            XsError::Protocol | XsError::Ring => Errno::EIO,
            XsError::Timeout => Errno::ETIMEDOUT,
            XsError::Reset => Errno::ENOTCONN,
            XsError::NoStore => Errno::ENODEV,
            XsError::Unsupported => Errno::EOPNOTSUPP,
        }
    }

    /// Whether this is xenstored's `EAGAIN` (retry the transaction).
    pub fn is_again(&self) -> bool {
        *self == XsError::Errno(Errno::EAGAIN)
    }
}

impl core::fmt::Display for XsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            XsError::Errno(e) => write!(f, "xenstored: {e}"),
            XsError::Invalid => f.write_str("invalid path or token"),
            XsError::TooBig => f.write_str("request too big"),
            XsError::Protocol => f.write_str("xenstore protocol error"),
            XsError::Ring => f.write_str("xenstore ring indices inconsistent"),
            XsError::Timeout => f.write_str("no reply from xenstored in time"),
            XsError::Reset => f.write_str("xenstore connection reset"),
            XsError::NoStore => f.write_str("no xenstore page or event channel"),
            XsError::Unsupported => f.write_str("not supported by xenstored"),
            XsError::Wait(e) => write!(f, "waiting for xenstored: {e}"),
        }
    }
}

/// How often [`transaction`] runs a transaction that keeps ending in
/// `EAGAIN` before it gives up (with `EAGAIN`). Linux retries without
/// bound; a bound keeps a livelocked guest visible.
pub const MAX_TRANSACTION_ATTEMPTS: u32 = 64;

/// Starting and ending transactions: what [`transaction`] needs.
pub trait Transact {
    /// `XS_TRANSACTION_START`.
    fn transaction_start(&mut self) -> Result<TxId, XsError>;
    /// `XS_TRANSACTION_END`, commit or abort.
    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError>;
}

/// Run `body` in a transaction and commit it; when the commit (or an
/// operation in the body) fails with `EAGAIN`, run it again in a new
/// transaction, up to [`MAX_TRANSACTION_ATTEMPTS`] times. Any other error
/// from the body aborts the transaction and is returned. `body` must be
/// safe to run more than once (it should only read and write the store).
pub fn transaction<S: Transact + ?Sized, T>(
    store: &mut S,
    mut body: impl FnMut(&mut S, TxId) -> Result<T, XsError>,
) -> Result<T, XsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let tx = store.transaction_start()?;
        match body(store, tx) {
            Ok(v) => match store.transaction_end(tx, true) {
                Ok(()) => return Ok(v),
                Err(e) if e.is_again() && attempt < MAX_TRANSACTION_ATTEMPTS => {}
                Err(e) => return Err(e),
            },
            Err(e) => {
                // xenstored forgets a transaction it failed; aborting one it
                // still holds frees it. Either way the body's error wins.
                let _ = store.transaction_end(tx, false);
                if !(e.is_again() && attempt < MAX_TRANSACTION_ATTEMPTS) {
                    return Err(e);
                }
            }
        }
    }
}
