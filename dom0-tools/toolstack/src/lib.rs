//! dom0's toolstack, the part that needs no hardware: the domain builder
//! ([`builder`]), which turns a PV ELF image and a configuration into a running
//! domU through the control domain's hypercalls (behind the [`Hypervisor`] trait, so
//! the whole sequence is host-tested against a fake), and bounded console logs
//! ([`conslog`]).
//!
//! The sequence is Xen's libxenguest for a PV domU (`docs/toolstack.md`):
//! `createdomain` → `max_mem` → `populate_physmap` → the start-of-day layout and
//! contents written through foreign mappings ([`pvboot::build`], the same code the
//! hypervisor builds dom0 with) → console and xenstore event channels → pin the L4
//! → `setvcpucontext` → `unpausedomain`. Any failure destroys the half-built domain.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod builder;
pub mod conslog;

pub use builder::{BuildError, BuildRequest, Built, Hypervisor, build};
