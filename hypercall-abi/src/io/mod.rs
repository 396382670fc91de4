//! Split-driver wire formats (`xen/include/public/io/`).
//!
//! A front end (in the guest using a device) and a back end (in the domain
//! that owns it) share pages granted by the front end and signal each other
//! through an event channel.
//!
//! * [`ring`]: the generic request/response ring (`ring.h`), as
//!   [`FrontRing`](ring::FrontRing) and [`BackRing`](ring::BackRing) over a
//!   borrowed page of atomics. No `unsafe`.
//! * [`stream`]: the byte-stream rings that the console and XenStore pages
//!   use.
//! * [`console`]: the PV console page (`console.h`).
//! * [`xenstore`]: the XenStore page, message header and types
//!   (`xs_wire.h`).
//! * [`xenbus`]: device connection states (`xenbus.h`).
//! * [`blkif`]: block requests and responses (`blkif.h`).
//! * [`netif`]: network requests and responses (`netif.h`).
//!
//! Shared pages are passed as `&[AtomicU32]`: whoever maps the page (the
//! guest runtime, or the hypervisor for a grant mapping) turns its address
//! into that slice once; everything after is safe code.

pub mod blkif;
pub mod console;
pub mod netif;
pub mod ring;
pub mod stream;
pub mod xenbus;
pub mod xenstore;

/// Words in a 4 KiB page.
pub const PAGE_WORDS: usize = crate::PAGE_SIZE / 4;
