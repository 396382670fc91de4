//! `sleep`: `time::sleep` (one-shot `set_timer_op` + `SCHEDOP_block`,
//! `VIRQ_TIMER` bound) sleeps `ms=` milliseconds (default 100) as measured
//! by the pvclock: at least that long and less than 10 % more. First it
//! checks that `SCHEDOP_block` returns at once when an event is already
//! pending at the call (an IPI sent with events masked; no timer armed and
//! the periodic tick stopped, so a block that slept would never return
//! before the 1 s safety timer).
//!
//! Result line: `sleep: PASS elapsed_ms=<x.yyy>` or `sleep: FAIL ...`.
#![no_std]
#![no_main]

use pv_runtime::abi::VcpuId;
use pv_runtime::events::Millis;
use pv_runtime::{StartInfo, evtchn, println, sched, time};
use pv_test_guests::{arg_u64, check, fail, ok};

const NAME: &str = "sleep";

fn main(_si: &'static StartInfo) {
    let ms = arg_u64(NAME, "ms", 100);
    evtchn::disable_events();
    ok(NAME, "bind VIRQ_TIMER", time::timer_port());
    ok(
        NAME,
        "VCPUOP_stop_periodic_timer",
        time::stop_periodic_timer(),
    );

    // Block with an event already pending returns at once.
    let ipi = ok(NAME, "bind_ipi", evtchn::bind_ipi(VcpuId(0)));
    ok(NAME, "unmask", evtchn::unmask(ipi));
    ok(NAME, "send(ipi)", evtchn::send(ipi));
    check(
        NAME,
        evtchn::is_pending(ipi),
        format_args!("the IPI is not pending"),
    );
    let t0 = time::system_time_ns();
    ok(NAME, "safety timer", time::set_timer(t0 + 1_000_000_000));
    ok(NAME, "SCHEDOP_block", sched::block_checked());
    let t1 = time::system_time_ns();
    ok(NAME, "cancel timer", time::cancel_timer());
    let (handled, unhandled) = evtchn::counters();
    check(
        NAME,
        t1 - t0 < 50_000_000 && !evtchn::is_pending(ipi) && handled + unhandled >= 1,
        format_args!(
            "SCHEDOP_block with an event pending returned after {} ms (ipi pending {})",
            Millis(t1 - t0),
            evtchn::is_pending(ipi)
        ),
    );
    ok(NAME, "close(ipi)", evtchn::close(ipi));

    // The sleep itself.
    evtchn::disable_events();
    let start = time::system_time_ns();
    ok(NAME, "sleep", time::sleep(ms * 1_000_000));
    let elapsed = time::system_time_ns() - start;
    let lo = ms * 1_000_000;
    let hi = lo + lo / 10;
    if !(lo..hi).contains(&elapsed) {
        fail(NAME, format_args!("elapsed_ms={}", Millis(elapsed)));
    }
    println!("{NAME}: PASS elapsed_ms={}", Millis(elapsed));
    sched::poweroff()
}

pv_runtime::entry!(main);
