//! Xen 4.17's x86_64 PV ABI, declared once.
//!
//! This crate is the contract between the hypervisor, every PV guest and the
//! dom0 tools. Everything a guest can observe lives here: hypercall numbers and
//! argument lists ([`hypercall`]), sub-operation numbers (one module per
//! hypercall family, named after Xen's public header), `#[repr(C)]` layouts
//! with compile-time size and offset checks, [`errno`] values, identifier
//! newtypes ([`types`]) and the split-driver wire formats ([`io`]).
//!
//! Xen 4.17's public headers (`xen/include/public/`, installed by Debian's
//! `libxen-dev` under `/usr/include/xen`) are the authority; the C probe test
//! (`tests/c_layout.rs`) compares every layout here with them.
//!
//! # Who writes what
//!
//! Every shared structure documents, per field, which side writes it (the
//! hypervisor, the guest, the domain builder, the front or back end) and when.
//! "Builder" means whoever constructs the domain: the hypervisor for dom0,
//! dom0's toolstack for every other domain. In hypercall argument structs,
//! fields marked "In" are written by the caller before the hypercall and
//! fields marked "Out" by the hypervisor before it returns.
//!
//! # Features
//!
//! * `guest`: the `guest` module, the only code that executes a hypercall (`asm!`),
//!   through the hypercall page or a direct `syscall`. It is the only `unsafe`
//!   code in the crate.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

/// The hypercall argument registers, in argument order, declared once:
/// `arg_regs!(m)` expands to `m!("rdi", "rsi", "rdx", "r10", "r8")`. Both
/// [`hypercall::ARG_REGS`] and the `guest` feature's `asm!` are generated
/// from it.
macro_rules! arg_regs {
    ($m:ident) => {
        $m!("rdi", "rsi", "rdx", "r10", "r8")
    };
}

#[macro_use]
mod layout;
#[macro_use]
pub mod subop;

pub mod callback;
pub mod console;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod evtchn;
pub mod gnttab;
pub mod hypercall;
pub mod io;
pub mod memory;
pub mod mmu;
pub mod physdev;
pub mod sched;
pub mod types;
pub mod vcpu;
pub mod version;
pub mod vm_assist;
pub mod xen;
pub mod xlhv;

#[cfg(all(feature = "guest", target_arch = "x86_64"))]
#[allow(unsafe_code)]
pub mod guest;

pub use errno::Errno;
pub use hypercall::{Hypercall, HypercallHandler, Invoke, dispatch};
pub use types::{DomId, EvtchnPort, GrantRef, GuestPtr, MachineAddr, Mfn, Pfn, VcpuId};

/// Version of this crate's ABI description (semantic versioning).
///
/// Bumped whenever a number, layout or rule in this crate changes; every
/// change is recorded in `CHANGELOG.md`. This is *our* version, distinct from
/// Xen's [`hypercall::INTERFACE_VERSION`].
pub const ABI_VERSION: &str = "1.1.0";

/// Size of a guest page (and of a machine frame) in bytes.
pub const PAGE_SIZE: usize = 4096;

/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
