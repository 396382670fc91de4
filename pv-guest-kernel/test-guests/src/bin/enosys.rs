//! `enosys`: hypercall numbers Xen leaves unassigned (60, through the
//! hypercall page) and out of range (200, past the page's 128 stubs, by a
//! direct `syscall`) answer -ENOSYS.
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::abi::Errno;
use pv_runtime::hypercall::call_unassigned;
use pv_test_guests::{fail, pass};

const NAME: &str = "enosys";

fn main(_si: &'static StartInfo) {
    for nr in [60, 200] {
        match call_unassigned(nr) {
            Some(Err(Errno::ENOSYS)) => {}
            Some(other) => fail(NAME, format_args!("hypercall {nr} returned {other:?}")),
            None => fail(NAME, format_args!("hypercall {nr} is assigned")),
        }
    }
    pass(NAME)
}

pv_runtime::entry!(main);
