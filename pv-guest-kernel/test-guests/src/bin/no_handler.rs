//! `no-handler`: with no trap table at all, `ud2` has nowhere to go and the
//! hypervisor must crash the domain. Prints `no-handler: START`; the harness
//! checks the hypervisor's report. Never prints PASS.
#![no_std]
#![no_main]

use pv_runtime::{Config, StartInfo, probe};
use pv_test_guests::{fail, start};

const NAME: &str = "no-handler";

fn main(_si: &'static StartInfo) {
    start(NAME);
    probe::ud2();
    fail(NAME, format_args!("ud2 without a trap table returned"))
}

pv_runtime::entry!(main, config = Config::NO_TRAPS);
