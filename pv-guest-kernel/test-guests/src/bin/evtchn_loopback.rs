//! `evtchn-loopback`: event channels inside one domain, checked against
//! Xen 4.17: an unbound port for `DOMID_SELF` and a port bound to it,
//! `count=` sends (default 100) each delivered once to the handler, the
//! status of each state (unbound, interdomain both ways, VIRQ, IPI,
//! closed), a masked port's event re-raised by `EVTCHNOP_unmask`,
//! `SCHEDOP_poll` on a pending port (at once) and with a timeout, an IPI
//! port, and closing one end (the other reverts to unbound, naming this
//! domain, as Xen's `evtchn_close` leaves it).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::evtchn::{EvtchnStat, EvtchnStatus};
use pv_runtime::abi::{DomId, EvtchnPort, VcpuId};
use pv_runtime::evtchn::{self, Handler};
use pv_runtime::{StartInfo, sched, time};
use pv_test_guests::{arg_u64, check, expect, fail, ok, on_port, pass};

const NAME: &str = "evtchn-loopback";

static ON_A: AtomicU64 = AtomicU64::new(0);
static ON_B: AtomicU64 = AtomicU64::new(0);
static ON_IPI: AtomicU64 = AtomicU64::new(0);

fn count_a(_: EvtchnPort) {
    ON_A.fetch_add(1, Ordering::SeqCst);
}

fn count_b(_: EvtchnPort) {
    ON_B.fetch_add(1, Ordering::SeqCst);
}

static COUNT_IPI: &(dyn Fn(EvtchnPort) + Sync) = &|_| {
    ON_IPI.fetch_add(1, Ordering::SeqCst);
};

fn status(port: EvtchnPort) -> EvtchnStatus {
    ok(NAME, "EVTCHNOP_status", evtchn::status(port))
}

fn expect_state(what: &str, port: EvtchnPort, want: EvtchnStat) -> EvtchnStatus {
    let s = status(port);
    expect(NAME, what, s.status, want as u32);
    s
}

/// Wait (blocking, 1 s at most) until `counter` reaches `want`.
fn wait_for(what: &str, counter: &AtomicU64, want: u64) {
    let deadline = time::system_time_ns() + 1_000_000_000;
    let got = ok(
        NAME,
        "wait",
        sched::wait_until(|| counter.load(Ordering::SeqCst) >= want, Some(deadline)),
    );
    let n = counter.load(Ordering::SeqCst);
    check(
        NAME,
        got && n == want,
        format_args!("{what}: handler count {n}, expected {want}"),
    );
}

fn main(_si: &'static StartInfo) {
    let count = arg_u64(NAME, "count", 100);
    evtchn::disable_events();

    // Unbound, for ourselves: the status names our real domain id.
    let a = ok(
        NAME,
        "alloc_unbound(DOMID_SELF)",
        evtchn::alloc_unbound(DomId::SELF),
    );
    let s = expect_state("status of the unbound port", a, EvtchnStat::Unbound);
    let me = s.unbound_dom();
    check(
        NAME,
        me != DomId::SELF,
        format_args!("unbound status names DOMID_SELF, not the real domain id"),
    );
    on_port(NAME, a, Handler::Fn(count_a));

    // Bind to it: both ends interdomain, naming each other; Xen sets the
    // new local port pending.
    let b = ok(
        NAME,
        "bind_interdomain(DOMID_SELF, a)",
        evtchn::bind_interdomain(DomId::SELF, a),
    );
    let sa = expect_state("status of a after the bind", a, EvtchnStat::Interdomain);
    let sb = expect_state("status of b after the bind", b, EvtchnStat::Interdomain);
    expect(NAME, "a's peer", sa.interdomain(), (me, b));
    expect(NAME, "b's peer", sb.interdomain(), (me, a));
    check(
        NAME,
        evtchn::is_pending(b),
        format_args!("b is not pending after bind_interdomain"),
    );
    evtchn::clear_pending(b);
    on_port(NAME, b, Handler::Fn(count_b));
    ok(NAME, "unmask(a)", evtchn::unmask(a));
    ok(NAME, "unmask(b)", evtchn::unmask(b));
    expect(
        NAME,
        "upcalls before enabling",
        ON_A.load(Ordering::SeqCst) + ON_B.load(Ordering::SeqCst),
        0,
    );

    // N sends on b, each delivered to a's handler exactly once.
    evtchn::enable_events();
    for i in 1..=count {
        ok(NAME, "send(b)", evtchn::send(b));
        wait_for("send on b", &ON_A, i);
    }
    ok(NAME, "send(a)", evtchn::send(a));
    wait_for("send on a", &ON_B, 1);

    // Masked: the event stays pending, no upcall; unmask re-raises it.
    evtchn::mask(a);
    ok(NAME, "send(b) while a is masked", evtchn::send(b));
    check(
        NAME,
        evtchn::is_pending(a),
        format_args!("masked port a is not pending after a send"),
    );
    expect(
        NAME,
        "upcalls while masked",
        ON_A.load(Ordering::SeqCst),
        count,
    );
    ok(NAME, "EVTCHNOP_unmask(a)", evtchn::unmask(a));
    check(
        NAME,
        !evtchn::is_masked(a),
        format_args!("a still masked after EVTCHNOP_unmask"),
    );
    wait_for("pending event after unmask", &ON_A, count + 1);

    // SCHEDOP_poll: returns at once for a pending port; times out otherwise.
    evtchn::disable_events();
    ok(NAME, "send(b) before poll", evtchn::send(b));
    let t0 = time::system_time_ns();
    ok(
        NAME,
        "SCHEDOP_poll on a pending port",
        sched::poll(&[a], t0 + 1_000_000_000),
    );
    let t1 = time::system_time_ns();
    check(
        NAME,
        t1 - t0 < 100_000_000,
        format_args!("poll on a pending port took {} ns", t1 - t0),
    );
    check(
        NAME,
        evtchn::clear_pending(a),
        format_args!("poll consumed a's pending bit"),
    );
    let t0 = time::system_time_ns();
    ok(
        NAME,
        "SCHEDOP_poll with a 20 ms timeout",
        sched::poll(&[a], t0 + 20_000_000),
    );
    let t1 = time::system_time_ns();
    check(
        NAME,
        t1 - t0 >= 20_000_000,
        format_args!("poll timed out after {} ns, before 20 ms", t1 - t0),
    );
    check(
        NAME,
        !evtchn::is_pending(a),
        format_args!("a pending after a poll timeout"),
    );
    evtchn::enable_events();

    // VIRQ status.
    let tp = ok(NAME, "bind VIRQ_TIMER", time::timer_port());
    let st = expect_state("status of the VIRQ_TIMER port", tp, EvtchnStat::Virq);
    expect(NAME, "VIRQ_TIMER port's virq", st.irq(), 0);

    // IPI to ourselves.
    let ipi = ok(NAME, "bind_ipi(0)", evtchn::bind_ipi(VcpuId(0)));
    let si = expect_state("status of the IPI port", ipi, EvtchnStat::Ipi);
    expect(NAME, "IPI port's vcpu", si.vcpu, VcpuId(0));
    on_port(NAME, ipi, Handler::Dyn(COUNT_IPI));
    ok(NAME, "unmask(ipi)", evtchn::unmask(ipi));
    ok(NAME, "send(ipi)", evtchn::send(ipi));
    wait_for("IPI", &ON_IPI, 1);

    // Close b: a reverts to unbound for this domain; b is closed.
    ok(NAME, "close(b)", evtchn::close(b));
    let sa = expect_state("status of a after closing b", a, EvtchnStat::Unbound);
    expect(
        NAME,
        "a's allowed remote after closing b",
        sa.unbound_dom(),
        me,
    );
    expect_state("status of b after close", b, EvtchnStat::Closed);
    // A send on the now unbound end is dropped, not an error.
    ok(NAME, "send on an unbound port", evtchn::send(a));
    ok(NAME, "close(a)", evtchn::close(a));
    ok(NAME, "close(ipi)", evtchn::close(ipi));
    expect_state("status of a after close", a, EvtchnStat::Closed);
    expect_state(
        "status of the IPI port after close",
        ipi,
        EvtchnStat::Closed,
    );
    if ON_B.load(Ordering::SeqCst) != 1 {
        fail(
            NAME,
            format_args!("b's handler ran {} times", ON_B.load(Ordering::SeqCst)),
        );
    }
    pass(NAME)
}

pv_runtime::entry!(main);
