//! dom0's portable logic, tested on the host.
//!
//! The dom0 kernel (`dom0-tools/dom0`, crate `xlhv-dom0`) is a thin shell on
//! `pv-runtime` around what lives here:
//!
//! * [`uart`]: a polled 16550 driver over a [`PortIo`](uart::PortIo) trait
//!   (the kernel's ports are COM2's, reached through the hypervisor's I/O-port
//!   emulation);
//! * [`server`]: bytes in, frames out: the control protocol's framing, the
//!   quiet-link rule, one response per request;
//! * [`agent`]: what each request does, against a [`Hypervisor`] trait (the
//!   kernel's implementation makes hypercalls; tests use a fake);
//! * [`uploads`]: upload reception into an [`UploadStore`];
//! * [`domains`]: the toolstack's own records (names) and the translation of
//!   `getdomaininfo` into the protocol's [`DomainInfo`](control_proto::DomainInfo);
//! * [`blkback`]: the block back end (vbds on dom0's disks, `io/blkif.h`);
//! * [`netback`]: the network back end (vifs on learning switches, `io/netif.h`);
//! * [`builder`]: the PV domain builder (`docs/toolstack.md`);
//! * [`conslog`]: bounded per-domain console logs;
//! * [`disks`]: dom0's disks as a [`Disks`](disks::Disks) trait, batched I/O;
//! * [`volumes`]: named volumes carved from those disks, in a crash-consistent
//!   on-disk table;
//! * [`nics`]: dom0's NICs as a [`Nics`](nics::Nics) trait, the uplinks of
//!   the net back end's switches;
//! * [`ether`]: Ethernet and ARP frames (the NIC self-test);
//! * [`pci`]: the PCI bus scan over a [`ConfigSpace`](pci::ConfigSpace) trait.
//! * [`xenstore`]: the nodes the toolstack writes for a domain (as `xl` does), UUIDs.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

pub mod acpi;
pub mod agent;
pub mod blkback;
pub mod builder;
pub mod conslog;
pub mod disks;
pub mod domains;
pub mod ether;
pub mod hv;
pub mod msix;
pub mod netback;
pub mod nics;
pub mod pci;
pub mod server;
#[cfg(test)]
mod testhv;
pub mod uart;
pub mod uploads;
pub mod volumes;
pub mod xenstore;

pub use agent::{After, Agent};
pub use hv::{ConsoleChunk, GrantSeg, Hypervisor, RingId, XenVersion};
pub use server::Server;
pub use uploads::{StoreError, UploadBuf, UploadStore};
