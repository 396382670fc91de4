//! `ticker`: binds `VIRQ_TIMER`, starts a periodic timer of `period_ms=`
//! (default 10) with `VCPUOP_set_periodic_timer`, and counts timer events
//! for `secs=` seconds of system time (default 2), idling in
//! `SCHEDOP_block` between events. Prints `ticker: tick <n>` after each
//! second (so a paused domain's output visibly stops), then one line
//! `ticker: rate_hz=<x> ticks=<n> secs=<s>`, then its result line,
//! `ticker: PASS rate_hz=<x> ticks=<n> secs=<s>` if the rate is within 20 %
//! of 1000/period_ms, else `ticker: FAIL rate_hz=...`.
//!
//! Xen stops a vCPU's periodic timer while the vCPU is descheduled and
//! catches up with one event when it runs again, so a blocked vCPU is not
//! woken by the periodic tick alone (checked on Xen 4.17: a ticker that
//! only blocks never wakes). `mode=block` (the default) therefore also
//! arms the one-shot timer at the next point of the period grid before
//! blocking, as a tickless kernel would (the two events coalesce on the
//! `VIRQ_TIMER` port); `mode=spin` spins with events enabled instead and
//! counts the periodic timer's events alone.
#![no_std]
#![no_main]

use pv_runtime::events::{Milli, rate_mhz, within_percent};
use pv_runtime::{StartInfo, evtchn, println, sched, time};
use pv_test_guests::{arg, arg_u64, fail, ok};

const NAME: &str = "ticker";

fn main(_si: &'static StartInfo) {
    let period_ms = arg_u64(NAME, "period_ms", 10);
    let secs = arg_u64(NAME, "secs", 2);
    let spin = match arg("mode") {
        None | Some(b"block") => false,
        Some(b"spin") => true,
        Some(_) => fail(NAME, format_args!("mode= is block or spin")),
    };
    if period_ms == 0 || secs == 0 {
        fail(NAME, format_args!("period_ms and secs must be positive"));
    }
    let period = period_ms * 1_000_000;
    evtchn::disable_events();
    ok(NAME, "bind VIRQ_TIMER", time::timer_port());
    ok(
        NAME,
        "VCPUOP_set_periodic_timer",
        time::set_periodic_timer(period),
    );
    let start = time::system_time_ns();
    let ticks0 = time::timer_events();
    let end = start + secs * 1_000_000_000;
    let mut next_second = start + 1_000_000_000;
    let mut second = 0;
    evtchn::enable_events();
    loop {
        let now = time::system_time_ns();
        if now >= next_second {
            second += 1;
            next_second += 1_000_000_000;
            println!("{NAME}: tick {}", time::timer_events() - ticks0);
        }
        if now >= end || second >= secs {
            break;
        }
        if spin {
            core::hint::spin_loop();
        } else {
            // The next point of the period grid after now: a wakeup there
            // lets the periodic timer's own event in (they coalesce).
            let k = (now - start) / period + 1;
            evtchn::disable_events();
            ok(NAME, "set_timer_op", time::set_timer(start + k * period));
            sched::idle();
        }
    }
    let elapsed = time::system_time_ns() - start;
    let ticks = time::timer_events() - ticks0;
    ok(
        NAME,
        "VCPUOP_stop_periodic_timer",
        time::stop_periodic_timer(),
    );
    let rate = rate_mhz(ticks, elapsed);
    let want = 1_000_000_000 / period;
    println!("{NAME}: rate_hz={} ticks={ticks} secs={secs}", Milli(rate));
    let verdict = if within_percent(rate, want * 1000, 20) {
        "PASS"
    } else {
        "FAIL"
    };
    println!(
        "{NAME}: {verdict} rate_hz={} ticks={ticks} secs={secs}",
        Milli(rate)
    );
    if verdict == "PASS" {
        sched::poweroff()
    }
    sched::crash()
}

pv_runtime::entry!(main);
