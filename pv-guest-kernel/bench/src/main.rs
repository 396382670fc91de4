//! `bench`: the benchmark PV guest kernel (crate `pv-bench`).
//!
//! Boots as dom0 on xen-like-hv or on real Xen 4.17 (the same ELF), times a
//! set of hypervisor round trips with the TSC and prints one
//! machine-readable line per metric (see [`stats`] for the format), then
//! powers off. `scripts/bench` boots it on both hypervisors and compares.
//!
//! Metrics (each sample is one `lfence; rdtsc` pair around the operation;
//! the line reports nearest-rank median, p10 and p90 per operation):
//!
//! | metric | one sample |
//! |---|---|
//! | `control_loop`, `control_loop_end` | 1024 xorshift rounds with a read-modify-write each in a 256 KiB buffer, no hypervisor involved (the noise control, at the start and the end) |
//! | `local_write` | one write to a local variable: the timer's own cost |
//! | `floor` | xen-like-hv's floor call: `syscall` answered at once by `sysret` (unsupported on Xen) |
//! | `null_hypercall` | `xen_version(XENVER_version, NULL)` |
//! | `mmu_update_pte_bN` | `mmu_update` of N L1 entries (N = 1, 8, 64, 512), per entry |
//! | `multicall_uvm_pte_bN` | `multicall` of N `update_va_mapping(.., UVMF_NONE)`, per entry |
//! | `mmuext_pin_unpin_l1` | `mmuext_op(PIN_L1_TABLE)` then `mmuext_op(UNPIN_TABLE)` of an empty L1 |
//! | `exception_bounce` | `ud2` -> #UD bounced to the guest handler -> `iret` hypercall back |
//! | `evtchn_notify_self` | `EVTCHNOP_send` on an IPI port bound to vCPU 0 -> upcall -> handler -> `iret` |
//! | `sched_yield` | `sched_op(SCHEDOP_yield)` |
//! | `timer_wake` | how late `set_timer_op(now + 1 ms)` + `SCHEDOP_block` wakes, by the pvclock |
//! | `gnttab_map_unmap_bN` | `GNTTABOP_map_grant_ref` of N writable host mappings (N = 1, 32) of a self-grant, then one unmap of the N, per page (last: the guest takes over its address space first) |
//! | `gnttab_copy_4k` | one `GNTTABOP_copy` of 4 KiB from a self-grant into an own frame |
//!
//! With `role=ping|pong peer=<domid>` it runs as one of two domUs instead
//! (xen-like-hv's boot-time domUs; see [`domus`]) and measures
//! `domu_evtchn_rtt` and `domu_switch`; `role=host` is the dom0 beside them.
//! With `role=xenstore` it is a domU of dom0's toolstack and measures
//! `xenstore_read_rtt` and `xenstore_txn_commit` against dom0's xenstored.
//! With `scaling` (a two-vCPU dom0 on two CPUs) it measures the scaling
//! metrics instead (see [`scaling`]).
//!
//! A metric whose hypercalls the hypervisor refuses prints an `unsupported`
//! line naming the hypercall and the error instead of failing the run.
//!
//! Command-line words: `quick` divides every iteration count by ten (the
//! fidelity tests use it); `boot-only` prints the banner and the final line
//! and powers off (`scripts/bench` times extra boots with it); `ledger` runs
//! the instruction ledger's sections instead of the timed metrics (see
//! [`ledger`], `xtask ledger`). On the host
//! this binary is a stub; the statistics are unit-tested there.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod domus;
#[cfg(target_os = "none")]
mod guest;
#[cfg(target_os = "none")]
mod ledger;
#[cfg(target_os = "none")]
mod scaling;
#[cfg_attr(not(target_os = "none"), allow(dead_code))]
mod stats;

#[cfg(target_os = "none")]
pv_runtime::entry!(guest::main);

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "bench is a Xen PV guest kernel: build it with --target x86_64-unknown-none \
         and boot it as dom0 (scripts/bench does both)"
    );
    std::process::exit(2);
}
