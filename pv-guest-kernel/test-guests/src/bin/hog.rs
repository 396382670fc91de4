//! `hog`: spins for `secs=` seconds of system time (default 3), then
//! reports how much of that its vCPU really ran (`VCPUOP_get_runstate_info`)
//! against the wall (pvclock) time, so a scheduler test can compare domains
//! by `name=` (default `hog`). With `warmup=` seconds (default 0) it spins
//! that long first, unmeasured, so that domains started one after another
//! are all running when their measured windows begin.
//!
//! Result line: `hog: PASS name=<name> running_ns=<runstate running>
//! wall_ns=<elapsed> spins=<loop rounds>` (the rounds measure its throughput).
#![no_std]
#![no_main]

use pv_runtime::abi::VcpuId;
use pv_runtime::text::Ascii;
use pv_runtime::{StartInfo, println, sched, time, vcpu};
use pv_test_guests::{arg, arg_u64, ok};

const NAME: &str = "hog";

fn main(_si: &'static StartInfo) {
    let secs = arg_u64(NAME, "secs", 3);
    let name = arg("name").unwrap_or(b"hog");
    let warm_end = time::system_time_ns() + arg_u64(NAME, "warmup", 0) * 1_000_000_000;
    while time::system_time_ns() < warm_end {
        core::hint::spin_loop();
    }
    let before = ok(NAME, "VCPUOP_get_runstate_info", vcpu::runstate(VcpuId(0)));
    let start = time::system_time_ns();
    let end = start + secs * 1_000_000_000;
    let mut spins = 0u64;
    while time::system_time_ns() < end {
        spins = spins.wrapping_add(1);
        core::hint::spin_loop();
    }
    let wall = time::system_time_ns() - start;
    let after = ok(NAME, "VCPUOP_get_runstate_info", vcpu::runstate(VcpuId(0)));
    let running = after.running_ns - before.running_ns;
    println!(
        "{NAME}: PASS name={} running_ns={running} wall_ns={wall} spins={}",
        Ascii(name),
        core::hint::black_box(spins)
    );
    sched::poweroff()
}

pv_runtime::entry!(main);
