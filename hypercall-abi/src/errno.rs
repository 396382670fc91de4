//! Error numbers (`xen/include/public/errno.h`).
//!
//! Xen reports failure by returning the *negative* error number in `rax`.
//! Xen's values are the Linux x86 values. This module owns the single
//! conversion in each direction:
//!
//! * [`Errno::encode`]: the hypervisor turns an error into the `rax` image.
//!   The hypervisor calls it in exactly one place, the dispatcher
//!   ([`crate::hypercall::dispatch`]).
//! * [`Errno::decode`]: a guest turns an `rax` image into `Result`. The typed
//!   guest wrappers in [`crate::hypercall`] call it.
//!
//! [`Errno`] is a newtype rather than an enum, so a value this crate does not
//! name (another hypervisor, a newer Xen) still decodes, without panicking.

use core::fmt;

/// The largest error number a result can carry.
///
/// A result `r` is an error when `-MAX_ERRNO <= r as i64 <= -1`, the
/// convention Xen's guests (Linux's `IS_ERR_VALUE`) use. Any other value is a
/// success, including large "negative" values such as a kernel address
/// returned by `get_debugreg`.
pub const MAX_ERRNO: u16 = 4095;

/// A Xen error number (positive, `1..=MAX_ERRNO`).
///
/// Written by the hypervisor (as `-errno` in `rax`), read by the guest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Errno(u16);

macro_rules! errnos {
    ($( $(#[$doc:meta])* $name:ident = $val:literal; )*) => {
        impl Errno {
            $( $(#[$doc])* pub const $name: Errno = Errno($val); )*

            /// Every error number this crate names, with its name, in
            /// `errno.h` order (aliases excluded).
            pub const ALL: &'static [(&'static str, Errno)] = &[
                $( (stringify!($name), Errno::$name), )*
            ];
        }
    };
}

errnos! {
    /// Operation not permitted.
    EPERM = 1;
    /// No such file or directory (no such vCPU, grant or key).
    ENOENT = 2;
    /// No such process (no such domain).
    ESRCH = 3;
    /// Interrupted. Hypervisor-internal in Xen; never returned to a guest.
    EINTR = 4;
    /// I/O error.
    EIO = 5;
    /// No such device or address.
    ENXIO = 6;
    /// Argument list too long.
    E2BIG = 7;
    /// Exec format error.
    ENOEXEC = 8;
    /// Bad file number.
    EBADF = 9;
    /// No child processes.
    ECHILD = 10;
    /// Try again (also `EWOULDBLOCK`).
    EAGAIN = 11;
    /// Out of memory.
    ENOMEM = 12;
    /// Permission denied.
    EACCES = 13;
    /// Bad address: a guest buffer could not be read or written.
    EFAULT = 14;
    /// Device or resource busy.
    EBUSY = 16;
    /// Already exists.
    EEXIST = 17;
    /// Cross-device link.
    EXDEV = 18;
    /// No such device.
    ENODEV = 19;
    /// Not a directory.
    ENOTDIR = 20;
    /// Is a directory.
    EISDIR = 21;
    /// Invalid argument.
    EINVAL = 22;
    /// File table overflow.
    ENFILE = 23;
    /// Too many open files.
    EMFILE = 24;
    /// No space left.
    ENOSPC = 28;
    /// Read-only file system.
    EROFS = 30;
    /// Too many links.
    EMLINK = 31;
    /// Argument out of domain.
    EDOM = 33;
    /// Result out of range.
    ERANGE = 34;
    /// Deadlock would occur (also `EDEADLOCK`).
    EDEADLK = 35;
    /// Name too long.
    ENAMETOOLONG = 36;
    /// No record locks available.
    ENOLCK = 37;
    /// Function not implemented: unknown or unwired hypercall or sub-op.
    ENOSYS = 38;
    /// Directory not empty.
    ENOTEMPTY = 39;
    /// No data available.
    ENODATA = 61;
    /// Timer expired.
    ETIME = 62;
    /// Not a data message.
    EBADMSG = 74;
    /// Value too large for defined data type.
    EOVERFLOW = 75;
    /// Illegal byte sequence.
    EILSEQ = 84;
    /// Restart the call (continuation). Hypervisor-internal in Xen; never
    /// returned to a guest.
    ERESTART = 85;
    /// Socket operation on non-socket.
    ENOTSOCK = 88;
    /// Message too long.
    EMSGSIZE = 90;
    /// Operation not supported.
    EOPNOTSUPP = 95;
    /// Address already in use.
    EADDRINUSE = 98;
    /// Cannot assign requested address.
    EADDRNOTAVAIL = 99;
    /// No buffer space available.
    ENOBUFS = 105;
    /// Already connected.
    EISCONN = 106;
    /// Not connected.
    ENOTCONN = 107;
    /// Timed out.
    ETIMEDOUT = 110;
    /// Connection refused.
    ECONNREFUSED = 111;
}

impl Errno {
    /// Alias of [`Errno::EAGAIN`].
    pub const EWOULDBLOCK: Errno = Errno::EAGAIN;
    /// Alias of [`Errno::EDEADLK`].
    pub const EDEADLOCK: Errno = Errno::EDEADLK;

    /// The error number `n`, if `1 <= n <= MAX_ERRNO`.
    pub const fn new(n: u16) -> Option<Errno> {
        if n >= 1 && n <= MAX_ERRNO {
            Some(Errno(n))
        } else {
            None
        }
    }

    /// The positive error number.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// The C name (`"EINVAL"`), or `None` for a number this crate does not
    /// name.
    pub fn name(self) -> Option<&'static str> {
        Self::ALL.iter().find(|(_, e)| *e == self).map(|(n, _)| *n)
    }

    /// The `rax` image of this error: `-errno` as a 64-bit two's-complement
    /// value. The hypervisor's one encoder (called only by the dispatcher).
    pub const fn encode(self) -> u64 {
        0u64.wrapping_sub(self.0 as u64)
    }

    /// Interpret a hypercall's `rax`. The guest's one decoder.
    ///
    /// Values in `-MAX_ERRNO..=-1` are errors; every other value is the
    /// successful result, unchanged. Unknown error numbers decode to an
    /// [`Errno`] whose [`name`](Errno::name) is `None`.
    pub const fn decode(rax: u64) -> Result<u64, Errno> {
        let neg = 0u64.wrapping_sub(rax);
        if neg >= 1 && neg <= MAX_ERRNO as u64 {
            #[allow(clippy::cast_possible_truncation)] // neg <= MAX_ERRNO < 2^16
            Err(Errno(neg as u16))
        } else {
            Ok(rax)
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Errno({})", self.0),
        }
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        for n in 1..=MAX_ERRNO {
            let e = Errno::new(n).unwrap();
            assert_eq!(Errno::decode(e.encode()), Err(e));
        }
    }

    #[test]
    fn successes_pass_through() {
        for v in [
            0u64,
            1,
            4096,
            0x4_0011,
            u64::MAX - 4095,
            0xffff_8000_0000_0000,
        ] {
            assert_eq!(Errno::decode(v), Ok(v));
        }
    }

    #[test]
    fn unknown_negative_is_catch_all() {
        let e = Errno::decode(0u64.wrapping_sub(4000)).unwrap_err();
        assert_eq!(e.get(), 4000);
        assert_eq!(e.name(), None);
    }

    #[test]
    fn encode_image() {
        assert_eq!(Errno::ENOSYS.encode(), (-38i64).cast_unsigned());
        assert_eq!(Errno::new(0), None);
        assert_eq!(Errno::new(MAX_ERRNO + 1), None);
    }
}
