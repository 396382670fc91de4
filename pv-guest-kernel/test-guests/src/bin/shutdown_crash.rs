//! `shutdown-crash`: requests `SHUTDOWN_crash`. Prints
//! `shutdown-crash: START`; the harness checks the hypervisor's report.
#![no_std]
#![no_main]

use pv_runtime::abi::sched::ShutdownReason;
use pv_runtime::{StartInfo, sched};
use pv_test_guests::{fail, start};

const NAME: &str = "shutdown-crash";

fn main(_si: &'static StartInfo) {
    start(NAME);
    let r = sched::request_shutdown(ShutdownReason::Crash);
    fail(NAME, format_args!("SCHEDOP_shutdown(crash) returned {r:?}"))
}

pv_runtime::entry!(main);
