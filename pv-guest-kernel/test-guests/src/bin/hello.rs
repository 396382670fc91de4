//! `hello`: the smallest guest. Prints `hello: PASS` and powers off; with `stay=1`
//! on its command line it stays instead, blocked with no timer until it is
//! destroyed (an idle domain for the scale benchmarks: it costs no CPU).
#![no_std]
#![no_main]

use pv_runtime::{StartInfo, println, sched, time};
use pv_test_guests::arg_u64;

fn main(_si: &'static StartInfo) {
    println!("hello: PASS");
    if arg_u64("hello", "stay", 0) != 0 {
        // No periodic tick and no one-shot timer: nothing wakes it.
        let _ = time::stop_periodic_timer();
        loop {
            sched::idle();
        }
    }
}

pv_runtime::entry!(main);
