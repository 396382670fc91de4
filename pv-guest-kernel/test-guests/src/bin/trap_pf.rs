//! `trap-pf`: a load from an unmapped address raises #PF; the handler sees
//! the faulting address as CR2 (from `vcpu_info.arch.cr2`) and a
//! not-present, read, kernel-mode error code.
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::probe::{self, Probe};
use pv_runtime::traps::{self, vector};
use pv_test_guests::{fail, pass, record, take};

const NAME: &str = "trap-pf";

/// Canonical, and outside every mapping a PV guest starts with (L4 slot
/// 128: neither the bootstrap region nor the hypervisor's slots).
const UNMAPPED: u64 = 0x0000_4000_0000_0000 + 0x1238;

/// Page-fault error code bits (Intel SDM vol. 3 §4.7).
const PFEC_PRESENT: u64 = 1 << 0;
const PFEC_WRITE: u64 = 1 << 1;
const PFEC_USER: u64 = 1 << 2;

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let value = probe::read_u64(UNMAPPED);
    let (caught, count) = take();
    let Some(c) = caught else {
        fail(
            NAME,
            format_args!("read of {UNMAPPED:#x} returned {value:#x} without a trap"),
        )
    };
    if count != 1 || c.vector != u64::from(vector::PF) {
        fail(
            NAME,
            format_args!("{count} trap(s), last vector {}", c.vector),
        );
    }
    if c.cr2 != UNMAPPED {
        fail(
            NAME,
            format_args!("cr2 {:#x}, expected {UNMAPPED:#x}", c.cr2),
        );
    }
    if c.rip != Probe::Read.site() || !c.skipped {
        fail(
            NAME,
            format_args!("rip {:#x}, expected {:#x}", c.rip, Probe::Read.site()),
        );
    }
    if c.error_code & (PFEC_PRESENT | PFEC_WRITE | PFEC_USER) != 0 {
        fail(
            NAME,
            format_args!(
                "error code {:#x}, expected not-present kernel read",
                c.error_code
            ),
        );
    }
    pass(NAME)
}

pv_runtime::entry!(main);
