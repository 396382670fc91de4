//! `evtchn-errors`: the error numbers of event-channel and related calls,
//! as Xen 4.17 gives them: `SCHEDOP_poll` with a port outside the port
//! space or more than 128 ports (-EINVAL), send on a free port (-EINVAL),
//! closing a port twice (-EINVAL), unmasking a port outside the port space
//! (-EINVAL), binding `VIRQ_TIMER` twice (-EEXIST), a nonexistent vCPU in
//! `bind_virq`, `bind_ipi` and `vcpu_op` (-ENOENT), and `alloc_unbound`
//! until the port space is exhausted (-ENOSPC; the count is printed and
//! must be plausible for the 2-level ABI's 4096 ports).
//!
//! Result line: `evtchn-errors: PASS ports=<allocated before ENOSPC>`.
#![no_std]
#![no_main]

use core::fmt;

use pv_runtime::abi::evtchn::{EVTCHN_2L_NR_CHANNELS, Virq};
use pv_runtime::abi::sched::SCHEDOP_POLL_MAX_PORTS;
use pv_runtime::abi::{DomId, Errno, EvtchnPort, VcpuId};
use pv_runtime::{StartInfo, evtchn, println, sched, time, vcpu};
use pv_test_guests::{check, fail, ok};

const NAME: &str = "evtchn-errors";

/// A vCPU id no domain here has.
const NO_VCPU: VcpuId = VcpuId(100);

fn want<T: fmt::Debug>(what: &str, got: Result<T, Errno>, errno: Errno) {
    match got {
        Err(e) if e == errno => {}
        other => fail(
            NAME,
            format_args!("{what}: got {other:?}, expected {errno:?}"),
        ),
    }
}

fn main(_si: &'static StartInfo) {
    evtchn::disable_events();
    let soon = || time::system_time_ns() + 50_000_000;

    // SCHEDOP_poll: ports outside the port space, and too many ports. (A
    // short timeout keeps a wrong "success" from hanging.)
    want(
        "SCHEDOP_poll on port 4096",
        sched::poll(&[EvtchnPort(EVTCHN_2L_NR_CHANNELS)], soon()),
        Errno::EINVAL,
    );
    want(
        "SCHEDOP_poll on port 0xffffffff",
        sched::poll(&[EvtchnPort(u32::MAX)], soon()),
        Errno::EINVAL,
    );
    let many = [EvtchnPort(u32::MAX); SCHEDOP_POLL_MAX_PORTS as usize + 1];
    want(
        "SCHEDOP_poll on 129 ports",
        sched::poll(&many, soon()),
        Errno::EINVAL,
    );

    // Free ports: send and a second close fail.
    let p = ok(NAME, "alloc_unbound", evtchn::alloc_unbound(DomId::SELF));
    ok(NAME, "close(unbound)", evtchn::close(p));
    want("close of a closed port", evtchn::close(p), Errno::EINVAL);
    want("send on a free port", evtchn::send(p), Errno::EINVAL);
    want(
        "EVTCHNOP_unmask on port 4096",
        evtchn::unmask(EvtchnPort(EVTCHN_2L_NR_CHANNELS)),
        Errno::EINVAL,
    );

    // VIRQ_TIMER twice.
    let tp = ok(NAME, "bind_virq(VIRQ_TIMER)", time::timer_port());
    want(
        "second bind_virq(VIRQ_TIMER)",
        evtchn::bind_virq(Virq::Timer, VcpuId(0)),
        Errno::EEXIST,
    );

    // Nonexistent vCPU.
    want(
        "bind_virq(VIRQ_DEBUG, vcpu 100)",
        evtchn::bind_virq(Virq::Debug, NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "bind_ipi(vcpu 100)",
        evtchn::bind_ipi(NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "VCPUOP_get_runstate_info(vcpu 100)",
        vcpu::runstate(NO_VCPU),
        Errno::ENOENT,
    );

    // Exhaust the port space.
    let mut mine = [0u64; (EVTCHN_2L_NR_CHANNELS / 64) as usize];
    let mut count = 0u32;
    let err = loop {
        match evtchn::alloc_unbound(DomId::SELF) {
            Ok(port) => {
                count += 1;
                match mine.get_mut((port.0 / 64) as usize) {
                    Some(w) => *w |= 1 << (port.0 % 64),
                    None => fail(NAME, format_args!("alloc_unbound gave port {}", port.0)),
                }
                if count > EVTCHN_2L_NR_CHANNELS {
                    fail(NAME, format_args!("more than {count} ports allocated"));
                }
            }
            Err(e) => break e,
        }
    };
    if err != Errno::ENOSPC {
        fail(
            NAME,
            format_args!("alloc_unbound after {count} ports: {err:?}, expected ENOSPC"),
        );
    }
    // Port 0 is reserved; the timer port and the runtime's own are taken.
    check(
        NAME,
        (1000..EVTCHN_2L_NR_CHANNELS - 1).contains(&count),
        format_args!("ENOSPC after {count} ports"),
    );
    for (w, bits) in (0u32..).zip(mine.iter()) {
        for b in (0..64u32).filter(|b| bits & (1 << b) != 0) {
            ok(NAME, "close", evtchn::close(EvtchnPort(w * 64 + b)));
        }
    }
    ok(
        NAME,
        "alloc_unbound after closing all",
        evtchn::alloc_unbound(DomId::SELF),
    );
    let _ = tp;
    println!("{NAME}: PASS ports={count}");
    sched::poweroff()
}

pv_runtime::entry!(main);
