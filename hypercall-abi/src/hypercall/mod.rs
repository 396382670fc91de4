//! The hypercall table and everything generated from it.
//!
//! `table.rs` holds one `macro_rules!` invocation with a row per hypercall:
//! number, names, typed arguments and the interface version that introduced
//! it. From that single table come:
//!
//! * [`Hypercall`], the number enum (`from_nr`, `name`, interface-version
//!   filtering);
//! * [`HYPERCALLS`], a constant listing for golden tests and tools;
//! * [`HypercallHandler`], the trait the hypervisor implements: one method
//!   per hypercall, each defaulting to `-ENOSYS`;
//! * [`dispatch`], which decodes the five argument registers, calls the
//!   handler and turns its error into errno, the only place that does so;
//! * typed guest wrappers (one free function per hypercall, generic over
//!   [`Invoke`]) and [`call`], the same calls as data for `multicall`.
//!
//! # Calling convention (64-bit PV)
//!
//! `rax` = number; arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8`
//! ([`ARG_REGS`]); result in `rax`, negative errno on failure. `rcx` and `r11`
//! are destroyed by `syscall` (the hypercall-page stub saves them) and every
//! argument register may be changed. `iret` (#23) takes no register
//! arguments: its frame is on the guest stack and it is *jumped* to.
//!
//! # Interface versions
//!
//! A guest compiles against Xen's headers with some
//! `__XEN_INTERFACE_VERSION__`; a few names map to other numbers for old
//! versions (`sched_op` is `sched_op_compat` before 0x00030101,
//! `event_channel_op` and `physdev_op` are their `_compat` entries before
//! 0x00030202). Each row's `since` is the lowest interface version whose
//! headers give the name that number, and [`Hypercall::for_interface`]
//! performs the headers' redirection. The hypervisor keeps every entry
//! wired, as Xen does: it never learns a guest's interface version.

mod page;
mod table;

pub use page::{HYPERCALL_PAGE_STUBS, HYPERCALL_STUB_SIZE, hypercall_page_image, hypercall_stub};
pub use table::*;

use crate::errno::Errno;
use crate::types::{DomId, GuestPtr, MachineAddr, VcpuId};

/// The newest `__XEN_INTERFACE_VERSION__` Xen 4.17 supports
/// (`__XEN_LATEST_INTERFACE_VERSION__`).
pub const INTERFACE_VERSION: u32 = 0x0004_0E00;

/// Hypercall numbers are below this (`NR_hypercalls`).
pub const NR_HYPERCALLS: u64 = 64;

macro_rules! str_array {
    ($($reg:tt),*) => {
        [$($reg),*]
    };
}

/// The argument registers, in argument order (`rax` holds the number). The
/// `guest` feature's `asm!` is generated from the same declaration, and
/// tests pin the order.
pub const ARG_REGS: [&str; 5] = arg_regs!(str_array);

/// Something that can execute a hypercall: `rax` = `nr`, the five argument
/// registers = `args`; returns the `rax` image.
///
/// Implemented by the `guest` feature's invokers (the real thing), by
/// [`Loopback`] (straight into [`dispatch`], for host tests), and by any
/// test double.
pub trait Invoke {
    /// Execute hypercall `nr` with `args` and return `rax`.
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64;
}

/// How one typed argument travels in a 64-bit register.
///
/// `to_reg` is what the guest loads; `from_reg` is what Xen's C handler sees
/// for a parameter of that type: `unsigned int` and `int` keep the low 32
/// bits, `domid_t` the low 16.
pub trait HypercallArg: Copy {
    /// Decode the register (hypervisor side).
    fn from_reg(reg: u64) -> Self;
    /// Encode into a register (guest side).
    fn to_reg(self) -> u64;
}

impl HypercallArg for u64 {
    fn from_reg(reg: u64) -> Self {
        reg
    }
    fn to_reg(self) -> u64 {
        self
    }
}

impl HypercallArg for i64 {
    fn from_reg(reg: u64) -> Self {
        // The same 64 bits, read as two's complement.
        i64::from_ne_bytes(reg.to_ne_bytes())
    }
    fn to_reg(self) -> u64 {
        u64::from_ne_bytes(self.to_ne_bytes())
    }
}

impl HypercallArg for u32 {
    #[allow(clippy::cast_possible_truncation)] // C `unsigned int` parameter
    fn from_reg(reg: u64) -> Self {
        reg as u32
    }
    fn to_reg(self) -> u64 {
        u64::from(self)
    }
}

impl HypercallArg for i32 {
    #[allow(clippy::cast_possible_truncation)] // C `int` parameter
    fn from_reg(reg: u64) -> Self {
        i32::from_ne_bytes((reg as u32).to_ne_bytes())
    }
    fn to_reg(self) -> u64 {
        // Sign-extended, as a C caller's `(long)` cast does.
        u64::from_ne_bytes(i64::from(self).to_ne_bytes())
    }
}

impl HypercallArg for DomId {
    #[allow(clippy::cast_possible_truncation)] // C `domid_t` parameter
    fn from_reg(reg: u64) -> Self {
        DomId(reg as u16)
    }
    fn to_reg(self) -> u64 {
        u64::from(self.0)
    }
}

impl HypercallArg for VcpuId {
    fn from_reg(reg: u64) -> Self {
        VcpuId(u32::from_reg(reg))
    }
    fn to_reg(self) -> u64 {
        u64::from(self.0)
    }
}

impl HypercallArg for MachineAddr {
    fn from_reg(reg: u64) -> Self {
        MachineAddr(reg)
    }
    fn to_reg(self) -> u64 {
        self.0
    }
}

impl<T> HypercallArg for GuestPtr<T> {
    fn from_reg(reg: u64) -> Self {
        GuestPtr::new(reg)
    }
    fn to_reg(self) -> u64 {
        self.addr()
    }
}

/// One row of the hypercall table, for golden tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HypercallDesc {
    /// The number (`__HYPERVISOR_<name>`).
    pub nr: u32,
    /// Xen's name without `__HYPERVISOR_`.
    pub name: &'static str,
    /// Argument names, in register order.
    pub args: &'static [&'static str],
    /// Rust argument types, in register order.
    pub arg_types: &'static [&'static str],
    /// Lowest `__XEN_INTERFACE_VERSION__` whose headers give `name` this
    /// number.
    pub since: u32,
    /// The legacy number the same name meant before `since`.
    pub replaces: Option<u32>,
}

/// A hypercall with its argument images, ready to invoke or to put in a
/// `multicall` batch ([`crate::xen::MulticallEntry::new`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// The number.
    pub nr: u32,
    /// The five argument registers (unused ones are 0).
    pub args: [u64; 5],
}

impl Call {
    /// Execute it and decode the result.
    pub fn invoke<I: Invoke + ?Sized>(self, inv: &mut I) -> Result<u64, Errno> {
        Errno::decode(inv.invoke(u64::from(self.nr), self.args))
    }
}

/// Place up to five argument images in the five registers.
const fn pack<const N: usize>(vals: [u64; N]) -> [u64; 5] {
    const { assert!(N <= 5, "a hypercall has at most five register arguments") };
    let mut regs = [0u64; 5];
    let mut k = 0;
    while k < N {
        regs[k] = vals[k];
        k += 1;
    }
    regs
}

/// An [`Invoke`] that calls [`dispatch`] directly: guest wrappers drive a
/// hypervisor handler with no CPU in between. For host tests.
#[derive(Debug, Default)]
pub struct Loopback<H> {
    /// The hypervisor side.
    pub handler: H,
}

impl<H: HypercallHandler> Invoke for Loopback<H> {
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64 {
        dispatch(&mut self.handler, nr, args)
    }
}

#[cfg(test)]
mod tests;
