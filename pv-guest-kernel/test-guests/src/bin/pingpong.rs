//! `pingpong`: event-channel round trips between two domains, or within
//! one (`role=loop`).
//!
//! Command line: `role=ping|pong|survivor|loop peer=<domid> count=<N>`
//! (count default 10000; `peer` is required but for loop).
//!
//! * ping: `alloc_unbound(remote=peer)`, prints `pingpong: port=<p>`, waits
//!   (blocking, 10 s at most) for pong's "ready" event, then `count` times
//!   sends and blocks until the reply's handler ran.
//! * pong: finds ping's port by trying `bind_interdomain(peer, p)` for
//!   p = 1..=64, retrying every 10 ms until it succeeds (FAIL after 10 s),
//!   clears the pending bit Xen sets on bind, sends "ready", then replies
//!   from its handler to each event until `count` arrived (FAIL after 10 s
//!   without progress).
//! * survivor: binds like pong (no `count`), sends "ready", then watches
//!   its port with `EVTCHNOP_status` every 10 ms until the peer's death
//!   leaves it unbound, as Xen leaves it (`EVTCHNSTAT_unbound`, remote =
//!   the dead domain). Pair it with a short `role=ping count=..`: ping's
//!   replies go unanswered, so give ping `count=0`.
//! * loop: both ends in this domain (ping's port unbound for `DOMID_SELF`,
//!   pong's bound to it), so it runs on a single-domain Xen.
//!
//! Result line: `pingpong: PASS role=<r> count=<N> rtt_ns=<avg>`; pong
//! prints the count it received, and as `rtt_ns` the average time between
//! receptions.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::evtchn::EvtchnStat;
use pv_runtime::abi::{DomId, EvtchnPort};
use pv_runtime::evtchn::{self, Handler};
use pv_runtime::text::{Ascii, parse_u64};
use pv_runtime::{StartInfo, println, sched, time};
use pv_test_guests::{arg, arg_u64, fail, ok, on_port};

const NAME: &str = "pingpong";
const PATIENCE_NS: u64 = 10_000_000_000;

/// Events that reached ping's port (ready + replies).
static PING_GOT: AtomicU64 = AtomicU64::new(0);
/// Events that reached pong's port.
static PONG_GOT: AtomicU64 = AtomicU64::new(0);
static PONG_FIRST: AtomicU64 = AtomicU64::new(0);
static PONG_LAST: AtomicU64 = AtomicU64::new(0);

fn on_ping(_: EvtchnPort) {
    PING_GOT.fetch_add(1, Ordering::SeqCst);
}

fn on_pong(port: EvtchnPort) {
    let now = time::system_time_ns();
    if PONG_GOT.fetch_add(1, Ordering::SeqCst) == 0 {
        PONG_FIRST.store(now, Ordering::SeqCst);
    }
    PONG_LAST.store(now, Ordering::SeqCst);
    let _ = evtchn::send(port);
}

fn wait_count(counter: &AtomicU64, want: u64, deadline: u64) -> bool {
    ok(
        NAME,
        "wait",
        sched::wait_until(|| counter.load(Ordering::SeqCst) >= want, Some(deadline)),
    )
}

fn peer() -> DomId {
    match arg("peer")
        .and_then(parse_u64)
        .and_then(|d| u16::try_from(d).ok())
    {
        Some(d) => DomId(d),
        None => fail(
            NAME,
            format_args!("peer=<domid> is required for ping and pong"),
        ),
    }
}

/// Ping's side: a port for `remote`, then wait for ready.
fn ping_open(remote: DomId) -> EvtchnPort {
    let port = ok(NAME, "alloc_unbound", evtchn::alloc_unbound(remote));
    on_port(NAME, port, Handler::Fn(on_ping));
    ok(NAME, "unmask", evtchn::unmask(port));
    port
}

/// Pong's and the survivor's side: the first port of `remote` that binds,
/// trying every 10 ms (FAIL after 10 s).
fn bind_peer(remote: DomId) -> EvtchnPort {
    let give_up = time::system_time_ns() + PATIENCE_NS;
    loop {
        for p in 1..=64 {
            if let Ok(local) = evtchn::bind_interdomain(remote, EvtchnPort(p)) {
                return local;
            }
        }
        if time::system_time_ns() >= give_up {
            fail(
                NAME,
                format_args!("no unbound port of domain {} to bind", remote.0),
            );
        }
        ok(NAME, "sleep", time::sleep(10_000_000));
    }
}

/// Waits (10 s at most) until `port` is no longer connected, and checks it is
/// left unbound for the dead `peer`, as Xen leaves it.
fn survive(port: EvtchnPort, peer: DomId) {
    let give_up = time::system_time_ns() + PATIENCE_NS;
    loop {
        let s = ok(NAME, "EVTCHNOP_status", evtchn::status(port));
        let interdomain = EvtchnStat::Interdomain as u32;
        match s.status {
            st if st == interdomain && time::system_time_ns() < give_up => {
                ok(NAME, "sleep", time::sleep(10_000_000));
            }
            st if st == interdomain => fail(
                NAME,
                format_args!("role=survivor: port {} still connected after 10 s", port.0),
            ),
            st if st == EvtchnStat::Unbound as u32 && s.unbound_dom() == peer => {
                println!(
                    "{NAME}: PASS role=survivor port={} state=unbound remote={}",
                    port.0, peer.0
                );
                return;
            }
            other => fail(
                NAME,
                format_args!(
                    "role=survivor: port {} became status {other} (remote {}), want unbound ({}) for {}",
                    port.0,
                    s.unbound_dom().0,
                    EvtchnStat::Unbound as u32,
                    peer.0
                ),
            ),
        }
    }
}

/// Pong's side: bind `port` of `remote`, then send ready.
fn pong_ready(local: EvtchnPort) {
    evtchn::clear_pending(local);
    on_port(NAME, local, Handler::Fn(on_pong));
    ok(NAME, "unmask", evtchn::unmask(local));
    ok(NAME, "send(ready)", evtchn::send(local));
}

/// `count` round trips from ping's `port`; the average round trip in ns.
fn ping_run(port: EvtchnPort, count: u64) -> u64 {
    if !wait_count(&PING_GOT, 1, time::system_time_ns() + PATIENCE_NS) {
        fail(
            NAME,
            format_args!("role=ping: pong never connected to port {}", port.0),
        );
    }
    let base = PING_GOT.load(Ordering::SeqCst);
    let start = time::system_time_ns();
    for i in 1..=count {
        ok(NAME, "send", evtchn::send(port));
        if !wait_count(&PING_GOT, base + i, time::system_time_ns() + PATIENCE_NS) {
            fail(
                NAME,
                format_args!("role=ping: no reply to ping {i} of {count}"),
            );
        }
    }
    (time::system_time_ns() - start) / count.max(1)
}

fn pong_avg(received: u64) -> u64 {
    let span = PONG_LAST.load(Ordering::SeqCst) - PONG_FIRST.load(Ordering::SeqCst);
    span / received.saturating_sub(1).max(1)
}

fn main(_si: &'static StartInfo) {
    let count = arg_u64(NAME, "count", 10_000);
    evtchn::disable_events();
    match arg("role") {
        Some(b"ping") => {
            let port = ping_open(peer());
            println!("{NAME}: port={}", port.0);
            let rtt = ping_run(port, count);
            println!("{NAME}: PASS role=ping count={count} rtt_ns={rtt}");
        }
        Some(b"survivor") => {
            let remote = peer();
            let local = bind_peer(remote);
            evtchn::clear_pending(local);
            ok(NAME, "send(ready)", evtchn::send(local));
            survive(local, remote);
        }
        Some(b"pong") => {
            let local = bind_peer(peer());
            pong_ready(local);
            let mut seen = 0;
            while seen < count {
                if !wait_count(&PONG_GOT, seen + 1, time::system_time_ns() + PATIENCE_NS) {
                    fail(
                        NAME,
                        format_args!(
                            "role=pong: received {seen} of {count}, then nothing for 10 s"
                        ),
                    );
                }
                seen = PONG_GOT.load(Ordering::SeqCst);
            }
            println!(
                "{NAME}: PASS role=pong count={seen} rtt_ns={}",
                pong_avg(seen)
            );
        }
        Some(b"loop") => {
            let a = ping_open(DomId::SELF);
            let b = ok(
                NAME,
                "bind_interdomain(DOMID_SELF)",
                evtchn::bind_interdomain(DomId::SELF, a),
            );
            pong_ready(b);
            let rtt = ping_run(a, count);
            let got = PONG_GOT.load(Ordering::SeqCst);
            if got != count {
                fail(
                    NAME,
                    format_args!("role=loop: pong received {got} of {count}"),
                );
            }
            println!("{NAME}: PASS role=loop count={count} rtt_ns={rtt}");
        }
        Some(r) => fail(
            NAME,
            format_args!(
                "role=\"{}\": expected ping, pong, survivor or loop",
                Ascii(r)
            ),
        ),
        None => fail(
            NAME,
            format_args!("role=ping|pong|survivor|loop is required"),
        ),
    }
    sched::poweroff()
}

pv_runtime::entry!(main);
