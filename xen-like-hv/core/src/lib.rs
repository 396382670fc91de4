//! xen-like-hv's portable core: the policy of the hypervisor, written without `unsafe`
//! and tested on the host. The no_std binary in `xen-like-hv/hv` wires it onto hardware.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod boot;
pub mod conring;
pub mod cpuid;
pub mod debugreg;
pub mod descriptor;
pub mod domain;
pub mod emulate;
pub mod evtchn;
pub mod exit;
pub mod gnttab;
pub mod hypercall;
pub mod ioapic;
pub mod iomem;
pub mod ioport;
pub mod mcfg;
pub mod mm;
pub mod msi;
pub mod msr;
pub mod pci;
pub mod pirq;
pub mod platform;
pub mod regs;
pub mod sched;
pub mod time;
pub mod traps;
pub mod vcpu;
pub mod xstate;

#[cfg(test)]
mod testutil;
