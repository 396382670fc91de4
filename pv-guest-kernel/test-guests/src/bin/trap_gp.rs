//! `trap-gp`: `hlt` is privileged and Xen does not emulate it for PV
//! kernels (`emul-priv-op.c` accepts only I/O, clts, wbinvd, CR/DR moves,
//! MSRs, rdtsc(p), cpuid, xsetbv, cli/sti), so it is reflected as #GP(0).
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::probe::{self, Probe};
use pv_runtime::traps::{self, vector};
use pv_test_guests::{fail, pass, record, take};

const NAME: &str = "trap-gp";

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::GP, record);
    probe::hlt();
    let (caught, count) = take();
    let Some(c) = caught else {
        fail(NAME, format_args!("hlt returned without a trap"))
    };
    if count != 1 || c.vector != u64::from(vector::GP) {
        fail(
            NAME,
            format_args!("{count} trap(s), last vector {}", c.vector),
        );
    }
    if c.rip != Probe::Hlt.site() || !c.skipped {
        fail(
            NAME,
            format_args!("rip {:#x}, expected {:#x}", c.rip, Probe::Hlt.site()),
        );
    }
    if c.error_code != 0 {
        fail(
            NAME,
            format_args!("error code {:#x}, expected 0", c.error_code),
        );
    }
    pass(NAME)
}

pv_runtime::entry!(main);
