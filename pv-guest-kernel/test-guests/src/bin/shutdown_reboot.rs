//! `shutdown-reboot`: requests `SHUTDOWN_reboot`. Prints
//! `shutdown-reboot: START`; the harness checks the hypervisor's report.
#![no_std]
#![no_main]

use pv_runtime::abi::sched::ShutdownReason;
use pv_runtime::{StartInfo, sched};
use pv_test_guests::{fail, start};

const NAME: &str = "shutdown-reboot";

fn main(_si: &'static StartInfo) {
    start(NAME);
    let r = sched::request_shutdown(ShutdownReason::Reboot);
    fail(
        NAME,
        format_args!("SCHEDOP_shutdown(reboot) returned {r:?}"),
    )
}

pv_runtime::entry!(main);
