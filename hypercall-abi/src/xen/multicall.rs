//! `struct multicall_entry` (`xen.h`): one call of a `multicall` batch.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::hypercall::Call;

/// `struct multicall_entry` (64 bytes).
///
/// The guest writes `op` and `args`; the hypervisor runs the entries in order
/// and writes each call's `rax` image into `result`. A failing entry does not
/// stop the batch, so the guest must check every `result`. Only `result` may
/// be relied on afterwards (a debug Xen poisons the rest). Only `args[0..5]`
/// are used.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MulticallEntry {
    /// Hypercall number.
    pub op: u64,
    /// Result (`rax` image), written by the hypervisor.
    pub result: u64,
    /// Arguments; `args[5]` is unused.
    pub args: [u64; 6],
}

impl MulticallEntry {
    /// An entry for a prepared call (see [`crate::hypercall::call`]).
    pub const fn new(call: Call) -> Self {
        let a = call.args;
        MulticallEntry {
            op: call.nr as u64,
            result: 0,
            args: [a[0], a[1], a[2], a[3], a[4], 0],
        }
    }

    /// The five argument registers the dispatcher decodes.
    pub const fn regs(&self) -> [u64; 5] {
        let a = self.args;
        [a[0], a[1], a[2], a[3], a[4]]
    }
}

assert_layout!(MulticallEntry, 64, op = 0, result = 8, args = 16);
