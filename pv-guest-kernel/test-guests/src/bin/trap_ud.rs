//! `trap-ud`: `ud2` raises #UD, delivered to our handler with events masked
//! on entry; the handler skips the instruction, and the `iret` back restores
//! the interrupted (unmasked) upcall mask.
#![no_std]
#![no_main]

use pv_runtime::probe::{self, Probe};
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, shared};
use pv_test_guests::{fail, pass, record, take};

const NAME: &str = "trap-ud";

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::UD, record);
    // Unmask events around the trap: entry must mask them, iret must
    // restore the interrupted state.
    shared::set_upcall_mask(0, 0);
    probe::ud2();
    let mask_after = shared::upcall_mask(0);
    shared::set_upcall_mask(0, 1);

    let (caught, count) = take();
    let Some(c) = caught else {
        fail(NAME, format_args!("ud2 returned without a trap"))
    };
    if count != 1 || c.vector != u64::from(vector::UD) {
        fail(
            NAME,
            format_args!("{count} trap(s), last vector {}", c.vector),
        );
    }
    if c.rip != Probe::Ud2.site() || !c.skipped {
        fail(
            NAME,
            format_args!("rip {:#x}, expected {:#x}", c.rip, Probe::Ud2.site()),
        );
    }
    if c.error_code != 0 {
        fail(NAME, format_args!("error code {:#x}", c.error_code));
    }
    if c.mask_in_handler != 1 {
        fail(NAME, format_args!("events not masked in the handler"));
    }
    if mask_after != 0 {
        fail(
            NAME,
            format_args!("iret did not restore the upcall mask (now {mask_after})"),
        );
    }
    pass(NAME)
}

pv_runtime::entry!(main);
