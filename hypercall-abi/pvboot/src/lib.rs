//! PV bootstrap, shared by the hypervisor (building dom0) and dom0's toolstack
//! (building domUs), following Xen 4.17's two builders:
//!
//! * [`elf`]: checked parsing of ELF64 images and their notes;
//! * [`notes`]: what the image's Xen notes ask for ([`XenImageInfo`]);
//! * [`layout`]: the bootstrap region, PFN by PFN ([`Layout`]);
//! * [`build`](mod@build): writing it through a [`DomainMemory`] ([`build()`]).
//!
//! ```text
//! let elf = Elf::parse(image)?;
//! let info = XenImageInfo::parse(&elf)?;
//! let layout = Layout::compute(&info, nr_pages, Flavour::DomU, initrd.len() as u64)?;
//! let built = build(&elf, &info, &layout, &mut memory, &params)?;
//! ```
//!
//! Every input is an image from a boot loader or a guest's owner: possibly truncated,
//! corrupt or hostile. Nothing here panics, indexes unchecked or overflows on it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

#[cfg(any(test, feature = "testimg"))]
extern crate std;

#[cfg(any(test, feature = "alloc"))]
extern crate alloc;

pub mod build;
pub mod bzimage;
pub mod elf;
pub mod layout;
pub mod notes;

/// Synthetic PV images and a `Vec`-backed [`DomainMemory`] for tests (feature
/// `testimg`; the toolstack's host tests use them).
#[cfg(any(test, feature = "testimg"))]
#[allow(missing_docs, missing_debug_implementations)]
pub mod testimg;

pub use build::{BuildError, BuildParams, BuiltDomain, DomainMemory, MemError, build};
pub use bzimage::{BzError, BzImage, Compression};
pub use layout::{Flavour, Layout, LayoutError};
pub use notes::{NoteError, XenImageInfo};
