//! Timer wake-up latency, and the metrics between two domUs.
//!
//! `timer_wake` runs in the main benchmark (dom0, on both hypervisors). The
//! domU metrics need two domains, which real Xen only starts through its
//! toolstack, so `scripts/bench` measures them on xen-like-hv alone, with
//! boot-time domUs. Command line `role=ping peer=2` and `role=pong peer=1`
//! make the pair; `role=host` is the dom0 that idles beside them (the
//! harness stops QEMU once ping prints its final line).
//!
//! * `domu_evtchn_rtt`: ping sends on an interdomain channel, pong's upcall
//!   handler sends back, ping's handler counts it; one sample is the round
//!   trip, blocked in `SCHEDOP_block` while it waits (two domain switches,
//!   two sends, two upcalls).
//! * `domu_switch`: both domUs call `SCHEDOP_yield` in a loop, so each yield
//!   switches to the other domain, which yields straight back. One sample is
//!   one of ping's yields: two switches; the line reports half (one switch,
//!   with half of each side's yield hypercall).

use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::{DomId, EvtchnPort};
use pv_runtime::evtchn::{self, Handler};
use pv_runtime::text::{c_str, parse_u64};
use pv_runtime::{StartInfo, println, sched, time};

use crate::guest::{Fail, Iters, Tally, collect, errno, setup_fail, timed};

/// Samples of `timer_wake` (each sleeps 1 ms).
const TIMER_SAMPLES: usize = 300;
/// How far ahead each `timer_wake` sample sets its timer.
const TIMER_AHEAD_NS: u64 = 1_000_000;
/// Round trips of `domu_evtchn_rtt`.
const RTT_SAMPLES: usize = 20_000;
/// Yields of `domu_switch`.
const SWITCH_SAMPLES: usize = 20_000;
/// How long either domU waits for the other before giving up.
const PATIENCE_NS: u64 = 20_000_000_000;

/// How late a timer wakes a blocked vCPU: `set_timer_op(now + 1 ms)`, then
/// block until the pvclock passes the deadline; a sample is the lateness,
/// in TSC cycles (converted with the pvclock's TSC rate).
pub fn timer_wake(t: &mut Tally, it: Iters) -> Result<(), Fail> {
    const WHAT: &str = "set_timer_op + sched_op(SCHEDOP_block)";
    let hz = time::tsc_hz().ok_or(setup_fail(WHAT, "no-tsc-rate"))?;
    let mut err = None;
    let mut s = collect(it.n(TIMER_SAMPLES), || {
        let deadline = time::system_time_ns() + TIMER_AHEAD_NS;
        if let Err(e) = time::sleep_until(deadline) {
            err = Some(e);
        }
        let late = time::system_time_ns().saturating_sub(deadline);
        let cycles = u128::from(late) * u128::from(hz) / 1_000_000_000;
        u32::try_from(cycles).unwrap_or(u32::MAX)
    });
    if let Some(e) = err {
        return Err(errno(WHAT)(e));
    }
    t.result("timer_wake", &mut s, 1);
    Ok(())
}

/// The value of `key=` on the command line.
fn arg<'a>(si: &'a StartInfo, key: &str) -> Option<&'a [u8]> {
    c_str(&si.cmd_line).split(|b| *b == b' ').find_map(|w| {
        w.strip_prefix(key.as_bytes())
            .and_then(|r| r.strip_prefix(b"="))
    })
}

/// Runs the role the command line names, if any; returns false without one.
pub fn role(si: &StartInfo, it: Iters) -> bool {
    let peer = arg(si, "peer")
        .and_then(parse_u64)
        .and_then(|d| u16::try_from(d).ok())
        .map(DomId);
    match (arg(si, "role"), peer) {
        (None, _) => return false,
        (Some(b"host"), _) => host(),
        (Some(b"ping"), Some(peer)) => ping(it, peer),
        (Some(b"pong"), Some(peer)) => pong(it, peer),
        (Some(b"xenstore"), _) => xenstore(it),
        (Some(_), _) => {
            println!(
                "bench: role=ping|pong needs peer=<domid>; role=host and role=xenstore need nothing"
            );
        }
    }
    println!("bench: done: role finished; powering off");
    true
}

/// dom0 beside the domU pair: idle (blocked) until the harness stops QEMU.
fn host() {
    println!("bench: host: idling while the domUs run");
    loop {
        if time::sleep(1_000_000_000).is_err() {
            sched::yield_now();
        }
    }
}

/// Events that reached ping's port.
static PING_GOT: AtomicU64 = AtomicU64::new(0);
/// Events that reached pong's port.
static PONG_GOT: AtomicU64 = AtomicU64::new(0);

fn on_ping(_: EvtchnPort) {
    PING_GOT.fetch_add(1, Ordering::SeqCst);
}

fn on_pong(port: EvtchnPort) {
    PONG_GOT.fetch_add(1, Ordering::SeqCst);
    let _ = evtchn::send(port);
}

/// Blocks until `counter` reaches `want`; false after [`PATIENCE_NS`].
fn wait_for(counter: &AtomicU64, want: u64) -> bool {
    let deadline = time::system_time_ns() + PATIENCE_NS;
    sched::wait_until(|| counter.load(Ordering::SeqCst) >= want, Some(deadline)) == Ok(true)
}

/// Samples `collect` takes for `n` (its warm-up included).
fn with_warmup(n: usize) -> usize {
    n + (n / 20).clamp(2, 1000)
}

fn ping(it: Iters, peer: DomId) {
    let mut t = Tally::default();
    let port = match evtchn::alloc_unbound(peer) {
        Ok(p) => p,
        Err(e) => return println!("bench: ping: alloc_unbound({}): {e}", peer.0),
    };
    let _ = evtchn::set_handler(port, Handler::Fn(on_ping));
    let _ = evtchn::unmask(port);
    if !wait_for(&PING_GOT, 1) {
        return println!("bench: ping: domain {} never connected", peer.0);
    }
    let mut lost = false;
    let mut s = collect(it.n(RTT_SAMPLES), || {
        let want = PING_GOT.load(Ordering::SeqCst) + 1;
        timed(|| {
            lost |= evtchn::send(port).is_err() || !wait_for(&PING_GOT, want);
        })
    });
    if lost {
        return println!("bench: ping: a round trip got no reply");
    }
    t.result("domu_evtchn_rtt", &mut s, 1);
    // Tell pong to start yielding, then yield with it.
    let _ = evtchn::send(port);
    let mut s = collect(it.n(SWITCH_SAMPLES), || timed(sched::yield_now));
    t.result("domu_switch", &mut s, 2);
}

fn pong(it: Iters, peer: DomId) {
    let deadline = time::system_time_ns() + PATIENCE_NS;
    let port = loop {
        if let Some(p) = (1..=64).find_map(|p| evtchn::bind_interdomain(peer, EvtchnPort(p)).ok()) {
            break p;
        }
        if time::system_time_ns() >= deadline {
            return println!("bench: pong: domain {} offered no port", peer.0);
        }
        let _ = time::sleep(1_000_000);
    };
    evtchn::clear_pending(port);
    let _ = evtchn::set_handler(port, Handler::Fn(on_pong));
    let _ = evtchn::unmask(port);
    let _ = evtchn::send(port);
    // Every round trip, then ping's "start yielding" event.
    let rtts = u64::try_from(with_warmup(it.n(RTT_SAMPLES))).unwrap_or(u64::MAX);
    if !wait_for(&PONG_GOT, rtts + 1) {
        return println!("bench: pong: ping stopped early");
    }
    for _ in 0..with_warmup(it.n(SWITCH_SAMPLES)) {
        sched::yield_now();
    }
}

/// Reads of `xenstore_read_rtt`.
const XS_READS: usize = 2_000;
/// Transactions of `xenstore_txn_commit`.
const XS_TXNS: usize = 500;

/// `role=xenstore`: a domU built by dom0's toolstack, talking to dom0's
/// xenstored over its store ring (`scripts/bench`'s control-plane run):
///
/// * `xenstore_read_rtt`: one `XS_READ` of the domain's own `name`, request to
///   reply (the ring, two event-channel notifications, xenstored's lookup);
/// * `xenstore_txn_commit`: `XS_TRANSACTION_START`, three `XS_WRITE`s in it,
///   `XS_TRANSACTION_END` committing it: a whole small transaction.
fn xenstore(it: Iters) {
    use pv_runtime::xenbus;
    let mut t = Tally::default();
    if let Err(e) = xenbus::connect() {
        return println!("bench: xenstore: no store ({e})");
    }
    let mut failed = None;
    let mut s = collect(it.n(XS_READS), || {
        timed(|| {
            if let Err(e) = xenbus::read("name") {
                failed.get_or_insert(e);
            }
        })
    });
    if let Some(e) = failed {
        return println!("bench: xenstore: XS_READ name: {e}");
    }
    t.result("xenstore_read_rtt", &mut s, 1);
    let mut i = 0u64;
    let mut s = collect(it.n(XS_TXNS), || {
        i += 1;
        let value = alloc::format!("{i}");
        timed(|| {
            let r = xenbus::transaction_start().and_then(|tx| {
                for node in ["data/bench/a", "data/bench/b", "data/bench/c"] {
                    tx.write(node, &value)?;
                }
                xenbus::transaction_end(tx, true)
            });
            if let Err(e) = r {
                failed.get_or_insert(e);
            }
        })
    });
    if let Some(e) = failed {
        return println!("bench: xenstore: a transaction: {e}");
    }
    t.result("xenstore_txn_commit", &mut s, 1);
}
