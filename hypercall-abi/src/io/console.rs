//! The PV console page (`io/console.h`).
//!
//! One page, granted by the guest (its MFN is `start_info.console.domU.mfn`,
//! pre-seeded as grant entry 0), with two byte streams: `out` (guest to
//! console back end) and `in` (back end to guest). After producing, signal
//! the console event channel (`start_info.console.domU.evtchn`).

use core::mem::offset_of;
use core::sync::atomic::AtomicU32;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::ring::RingError;
use super::stream::{StreamConsumer, StreamLayout, StreamProducer};

/// Bytes of the `in` buffer.
pub const XENCONS_IN_SIZE: usize = 1024;
/// Bytes of the `out` buffer.
pub const XENCONS_OUT_SIZE: usize = 2048;

/// `struct xencons_interface` (3088 bytes, Xen 4.17).
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenconsInterface {
    /// Input to the guest; written by the back end.
    pub in_: [u8; XENCONS_IN_SIZE],
    /// Output from the guest; written by the guest.
    pub out: [u8; XENCONS_OUT_SIZE],
    /// Guest's consumer index of `in`.
    pub in_cons: u32,
    /// Back end's producer index of `in`.
    pub in_prod: u32,
    /// Back end's consumer index of `out`.
    pub out_cons: u32,
    /// Guest's producer index of `out`.
    pub out_prod: u32,
}

/// The `out` stream (guest to back end).
pub const OUT_STREAM: StreamLayout = StreamLayout {
    data: offset_of!(XenconsInterface, out),
    len: XENCONS_OUT_SIZE,
    cons: offset_of!(XenconsInterface, out_cons),
    prod: offset_of!(XenconsInterface, out_prod),
};

/// The `in` stream (back end to guest).
pub const IN_STREAM: StreamLayout = StreamLayout {
    data: offset_of!(XenconsInterface, in_),
    len: XENCONS_IN_SIZE,
    cons: offset_of!(XenconsInterface, in_cons),
    prod: offset_of!(XenconsInterface, in_prod),
};

/// The guest's end of the console page.
#[derive(Debug)]
pub struct ConsoleFront<'a> {
    /// Produces `out`.
    pub output: StreamProducer<'a>,
    /// Consumes `in`.
    pub input: StreamConsumer<'a>,
}

impl<'a> ConsoleFront<'a> {
    /// Attach to the console page.
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        Ok(ConsoleFront {
            output: StreamProducer::new(page, OUT_STREAM)?,
            input: StreamConsumer::new(page, IN_STREAM)?,
        })
    }
}

/// The console back end's end of the page.
#[derive(Debug)]
pub struct ConsoleBack<'a> {
    /// Consumes `out`.
    pub output: StreamConsumer<'a>,
    /// Produces `in`.
    pub input: StreamProducer<'a>,
}

impl<'a> ConsoleBack<'a> {
    /// Attach to a guest's console page.
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        Ok(ConsoleBack {
            output: StreamConsumer::new(page, OUT_STREAM)?,
            input: StreamProducer::new(page, IN_STREAM)?,
        })
    }
}

assert_layout!(
    XenconsInterface,
    3088,
    in_ = 0,
    out = 1024,
    in_cons = 3072,
    in_prod = 3076,
    out_cons = 3080,
    out_prod = 3084,
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::PAGE_WORDS;

    #[test]
    fn guest_to_backend_and_back() {
        let page: [AtomicU32; PAGE_WORDS] = core::array::from_fn(|_| AtomicU32::new(0));
        let mut front = ConsoleFront::new(&page).unwrap();
        let mut back = ConsoleBack::new(&page).unwrap();
        assert_eq!(front.output.write(b"hello\n").unwrap(), 6);
        let mut buf = [0u8; 16];
        assert_eq!(back.output.read(&mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"hello\n");
        assert_eq!(back.input.write(b"k").unwrap(), 1);
        assert_eq!(front.input.read(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], b'k');
        // The indices are where xencons_interface puts them.
        assert_eq!(
            page[3084 / 4].load(core::sync::atomic::Ordering::Relaxed),
            6
        );
        assert_eq!(
            page[3076 / 4].load(core::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
