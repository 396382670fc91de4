//! Run-queue behaviour: every call, fairness by weight, wake-up latency next to hogs,
//! and random sequences that must keep the invariants.
#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_possible_wrap
)]

use super::*;
use proptest::prelude::*;

const MS: u64 = 1_000_000;

fn v(slot: u16) -> VcpuRef {
    VcpuRef { slot, vcpu: 0 }
}

#[test]
fn add_refuses_zero_weight_duplicates_and_overflow() {
    let mut q = RunQueue::new();
    assert_eq!(q.add(v(0), 0, 0), Err(SchedError::ZeroWeight));
    assert_eq!(q.add(v(0), 256, 0), Ok(()));
    assert_eq!(q.add(v(0), 256, 0), Err(SchedError::Exists(v(0))));
    // No fixed capacity: the old limit of 1024 is passed.
    for s in 1..=1024 {
        assert_eq!(q.add(v(s), 1, 0), Ok(()));
    }
    // Room that cannot be had is refused, not aborted on.
    assert_eq!(q.reserve(usize::MAX), Err(SchedError::Full));
    assert_eq!(q.reserve(u32::MAX as usize), Err(SchedError::Full));
    assert_eq!(q.reserve(4096), Ok(()));
    assert!(!q.is_runnable(v(0)), "added vCPUs start not runnable");
}

#[test]
fn idle_until_something_wakes() {
    let mut q = RunQueue::new();
    q.add(v(1), 256, 0).unwrap();
    assert_eq!(q.schedule(0, 0).next, None);
    assert_eq!(
        q.wake(v(1), 5, 0),
        Some(0),
        "waking with nothing current runs at once"
    );
    assert_eq!(q.wake(v(1), 5, 0), None, "already runnable");
    let d = q.schedule(0, 5);
    assert_eq!(
        d,
        Decision {
            next: Some(v(1)),
            slice_end_ns: None,
            kick: None
        }
    );
    assert_eq!(q.current(0), Some(v(1)));
    q.sleep(v(1), 25);
    assert_eq!(q.current(0), Some(v(1)), "current until the next schedule");
    assert_eq!(q.schedule(0, 25).next, None);
    assert_eq!(q.runtime_ns(v(1)), 20);
}

#[test]
fn remove_forgets_the_vcpu_even_when_current() {
    let mut q = RunQueue::new();
    q.add(v(1), 256, 0).unwrap();
    q.add(v(2), 256, 0).unwrap();
    q.wake(v(1), 0, 0);
    q.wake(v(2), 0, 0);
    let first = q.schedule(0, 0).next.unwrap();
    q.remove(first);
    assert_eq!(q.current(0), None);
    assert_eq!(q.wake(first, 1, 0), None);
    for t in 1..10 {
        assert_ne!(q.schedule(0, t * MS).next, Some(first));
    }
}

#[test]
fn weights_can_be_read_and_changed() {
    let mut q = RunQueue::new();
    q.add(v(1), 100, 0).unwrap();
    assert_eq!(q.weight(v(1)), Some(100));
    assert_eq!(q.set_weight(v(1), 0), Err(SchedError::ZeroWeight));
    assert_eq!(q.set_weight(v(2), 5), Err(SchedError::Unknown(v(2))));
    q.set_weight(v(1), 700).unwrap();
    assert_eq!(q.weight(v(1)), Some(700));
}

/// Runs hogs (always runnable) for `total` ns of simulated time; returns CPU time each.
fn run_hogs(weights: &[u16], total: u64) -> Vec<u64> {
    let mut q = RunQueue::new();
    for (i, &w) in weights.iter().enumerate() {
        q.add(v(i as u16), w, 0).unwrap();
        q.wake(v(i as u16), 0, 0);
    }
    let mut now = 0;
    while now < total {
        let d = q.schedule(0, now);
        now = d
            .slice_end_ns
            .unwrap_or(now + DEFAULT_TIMESLICE_NS)
            .min(total);
    }
    q.schedule(0, now);
    (0..weights.len())
        .map(|i| q.runtime_ns(v(i as u16)))
        .collect()
}

#[test]
fn two_to_one_weights_give_a_two_to_one_split() {
    let t = run_hogs(&[512, 256], 10_000 * MS);
    let ratio = t[0] as f64 / t[1] as f64;
    assert!((ratio - 2.0).abs() < 0.04, "ratio {ratio}");
    assert_eq!(t[0] + t[1], 10_000 * MS);
}

#[test]
fn equal_hogs_share_evenly() {
    let t = run_hogs(&[256, 256, 256], 9_000 * MS);
    for x in &t {
        assert!(
            (*x as i64 - 3_000 * MS as i64).abs() <= 10 * MS as i64,
            "{t:?}"
        );
    }
}

#[test]
fn a_ticker_wakes_promptly_next_to_hogs() {
    for hogs in 1..=3u16 {
        let mut q = RunQueue::new();
        for h in 0..hogs {
            q.add(v(h), 256, 0).unwrap();
            q.wake(v(h), 0, 0);
        }
        let ticker = v(100);
        q.add(ticker, 256, 0).unwrap();
        let mut now = 0;
        // Ticks start once the hogs run, off the slice boundaries.
        let mut next_tick = 1_005 * MS;
        let mut worst = 0;
        let mut d = q.schedule(0, now);
        while now < 5_000 * MS {
            // The running hog runs until its slice ends or the tick arrives.
            let end = d.slice_end_ns.unwrap_or(u64::MAX).min(next_tick);
            now = end;
            if now == next_tick {
                let preempt = q.wake(ticker, now, 0).is_some();
                if preempt {
                    d = q.schedule(0, now);
                }
                if d.next != Some(ticker) {
                    // Runs at the end of the current slice at the latest.
                    now = d.slice_end_ns.unwrap_or(now);
                    d = q.schedule(0, now);
                }
                assert_eq!(d.next, Some(ticker), "{hogs} hogs at {now}");
                worst = worst.max(now - next_tick);
                now += 50_000;
                q.sleep(ticker, now);
                d = q.schedule(0, now);
                next_tick += 10 * MS;
            } else {
                d = q.schedule(0, now);
            }
        }
        assert!(worst <= MS, "{hogs} hogs: worst wake latency {worst} ns");
    }
}

#[test]
fn yield_goes_behind_the_others() {
    let mut q = RunQueue::new();
    q.add(v(1), 256, 0).unwrap();
    q.add(v(2), 256, 0).unwrap();
    q.wake(v(1), 0, 0);
    q.wake(v(2), 0, 0);
    let a = q.schedule(0, 0).next.unwrap();
    q.yield_now(a, 10);
    assert_ne!(q.schedule(0, 10).next, Some(a));
    // Alone, a yielding vCPU keeps running.
    let mut q = RunQueue::new();
    q.add(v(1), 256, 0).unwrap();
    q.wake(v(1), 0, 0);
    q.schedule(0, 0);
    q.yield_now(v(1), 5);
    assert_eq!(q.schedule(0, 5).next, Some(v(1)));
}

#[derive(Clone, Debug)]
enum Op {
    Add(u16, u16),
    Remove(u16),
    Wake(u16),
    Sleep(u16),
    Yield(u16),
    Weight(u16, u16),
    Schedule(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8u16, any::<u16>()).prop_map(|(s, w)| Op::Add(s, w)),
        (0..8u16).prop_map(Op::Remove),
        (0..8u16).prop_map(Op::Wake),
        (0..8u16).prop_map(Op::Sleep),
        (0..8u16).prop_map(Op::Yield),
        (0..8u16, any::<u16>()).prop_map(|(s, w)| Op::Weight(s, w)),
        (0..20 * MS).prop_map(Op::Schedule),
    ]
}

proptest! {
    #[test]
    fn random_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let mut q = RunQueue::new();
        let mut now = 0u64;
        let mut removed = std::collections::BTreeSet::new();
        let mut last_runtime = std::collections::BTreeMap::new();
        for op in ops {
            match op {
                Op::Add(s, w) => { if q.add(v(s), w, now).is_ok() { removed.remove(&s); } }
                Op::Remove(s) => {
                    q.remove(v(s));
                    removed.insert(s);
                    last_runtime.remove(&s);
                }
                Op::Wake(s) => { q.wake(v(s), now, 0); }
                Op::Sleep(s) => q.sleep(v(s), now),
                Op::Yield(s) => q.yield_now(v(s), now),
                Op::Weight(s, w) => { let _ = q.set_weight(v(s), w); }
                Op::Schedule(dt) => {
                    let before: u64 = (0..8).map(|s| q.runtime_ns(v(s))).sum();
                    let running = q.current(0);
                    now += dt;
                    let d = q.schedule(0, now);
                    let after: u64 = (0..8).map(|s| q.runtime_ns(v(s))).sum();
                    // Exactly the elapsed time is charged, to the vCPU that ran.
                    let want = if running.is_some() { dt } else { 0 };
                    prop_assert_eq!(after - before, want);
                    if let Some(n) = d.next {
                        prop_assert!(q.is_runnable(n));
                        prop_assert!(!removed.contains(&n.slot));
                    }
                }
            }
            if let Some(c) = q.current(0) {
                prop_assert!(!removed.contains(&c.slot));
            }
            for s in 0..8u16 {
                let r = q.runtime_ns(v(s));
                let prev = last_runtime.insert(s, r).unwrap_or(0);
                prop_assert!(r >= prev, "runtime of {} went back", s);
            }
        }
    }
}

/// A busy control vCPU of `weight` next to `tickers` vCPUs that each wake every 10 ms
/// and run `work` ns per wake (an overloaded CPU when `tickers * work` > 10 ms: a
/// hundred 100 Hz timers under TCG). Returns the control vCPU's share of the CPU
/// over `total` ns, after a second to settle.
fn control_share_next_to_tickers(weight: u16, tickers: u16, work: u64, total: u64) -> f64 {
    const PERIOD: u64 = 10 * MS;
    let mut q = RunQueue::new();
    let ctl = v(0);
    q.add(ctl, weight, 0).unwrap();
    q.wake(ctl, 0, 0);
    // (next wake, work left; 0 = asleep)
    let mut t: Vec<(u64, u64)> = (0..tickers)
        .map(|i| (MS + u64::from(i) * 97_000 % PERIOD, 0))
        .collect();
    for i in 0..tickers {
        q.add(v(i + 1), DEFAULT_WEIGHT, 0).unwrap();
    }
    let mut now = 0;
    let mut d = q.schedule(0, now);
    let settle = 1_000 * MS;
    let mut at_settle = None;
    while now < total {
        if at_settle.is_none() && now >= settle {
            at_settle = Some((now, q.runtime_ns(ctl)));
        }
        let cur = d.next;
        let ticker = cur.filter(|c| c.slot != 0).map(|c| usize::from(c.slot - 1));
        let wake_at = t
            .iter()
            .filter(|x| x.1 == 0)
            .map(|x| x.0)
            .min()
            .unwrap_or(u64::MAX);
        let done_at = ticker.map_or(u64::MAX, |i| now + t[i].1);
        let end = d
            .slice_end_ns
            .unwrap_or(u64::MAX)
            .min(wake_at)
            .min(done_at)
            .min(total)
            .max(now + 1);
        if let Some(i) = ticker {
            t[i].1 = t[i].1.saturating_sub(end - now);
        }
        now = end;
        let mut resched = d.slice_end_ns.is_some_and(|s| s <= now);
        if let Some(i) = ticker
            && t[i].1 == 0
        {
            q.sleep(v(i as u16 + 1), now);
            // Missed periods coalesce: the next wake is the next point of its grid.
            let phase = t[i].0 % PERIOD;
            t[i].0 = (now - phase) / PERIOD * PERIOD + PERIOD + phase;
            resched = true;
        }
        for (i, x) in t.iter_mut().enumerate() {
            if x.1 == 0 && x.0 <= now && !q.is_runnable(v(i as u16 + 1)) {
                x.1 = work;
                resched |= q.wake(v(i as u16 + 1), now, 0).is_some();
            }
        }
        if resched {
            d = q.schedule(0, now);
        }
    }
    q.schedule(0, now);
    let (t0, r0) = at_settle.unwrap();
    (q.runtime_ns(ctl) - r0) as f64 / (now - t0) as f64
}

#[test]
fn dom0_weight_keeps_the_control_plane_served_next_to_a_hundred_tickers() {
    // 100 tickers, 150 µs per wake: 150 % of the CPU wanted (what 100 domUs with a
    // 100 Hz timer cost under TCG, switches and timer handling included).
    let dom0 = control_share_next_to_tickers(crate::domain::DOM0_WEIGHT, 100, 150_000, 4_000 * MS);
    assert!(
        dom0 > 0.10,
        "dom0 (weight {}) got {dom0:.3} of the CPU",
        crate::domain::DOM0_WEIGHT
    );
    // What issue 22 saw: at a domU's weight dom0 gets about its 1/101 share.
    let equal = control_share_next_to_tickers(DEFAULT_WEIGHT, 100, 150_000, 4_000 * MS);
    assert!(equal < 0.03, "at weight 256 dom0 got {equal:.3}");
    eprintln!(
        "dom0 share: {dom0:.3} at weight {}, {equal:.3} at 256",
        crate::domain::DOM0_WEIGHT
    );
    assert!(dom0 > 4.0 * equal, "{dom0} vs {equal}");
}

/// Runs always-runnable hogs of `weights` on `cpus` CPUs that reschedule in lockstep
/// at each slice end, for `total` ns; returns CPU time each, and checks at every step
/// that no vCPU is current on two CPUs.
fn run_hogs_on(cpus: usize, weights: &[u16], total: u64) -> Vec<u64> {
    let mut q = RunQueue::new();
    q.set_cpus(cpus);
    for (i, &w) in weights.iter().enumerate() {
        q.add(v(i as u16), w, 0).unwrap();
        q.wake(v(i as u16), 0, 0);
    }
    let mut now = 0;
    let mut ends = vec![0u64; cpus];
    while now < total {
        for (c, end) in ends.iter_mut().enumerate() {
            if *end <= now {
                let d = q.schedule(c, now);
                *end = d.slice_end_ns.unwrap_or(now + DEFAULT_TIMESLICE_NS);
            }
        }
        let running: Vec<_> = (0..cpus).filter_map(|c| q.current(c)).collect();
        for (i, a) in running.iter().enumerate() {
            assert!(!running[i + 1..].contains(a), "{a:?} on two CPUs at {now}");
        }
        now = ends.iter().copied().min().unwrap().min(total);
    }
    for c in 0..cpus {
        q.schedule(c, now);
    }
    (0..weights.len())
        .map(|i| q.runtime_ns(v(i as u16)))
        .collect()
}

#[test]
fn two_hogs_on_two_cpus_both_run_all_the_time() {
    let t = run_hogs_on(2, &[256, 256], 1_000 * MS);
    assert_eq!(t, vec![1_000 * MS, 1_000 * MS]);
}

#[test]
fn three_equal_hogs_share_two_cpus_evenly() {
    let t = run_hogs_on(2, &[256, 256, 256], 3_000 * MS);
    for x in &t {
        let share = *x as f64 / (3_000 * MS) as f64;
        assert!((share - 2.0 / 3.0).abs() < 0.05, "shares {t:?}");
    }
}

#[test]
fn weights_hold_across_cpus() {
    // Four hogs on two CPUs, weights 2:1:1:1 of the five parts two CPUs give.
    let t = run_hogs_on(2, &[512, 256, 256, 256], 5_000 * MS);
    let total: u64 = t.iter().sum();
    let heavy = t[0] as f64 / total as f64;
    assert!((heavy - 0.4).abs() < 0.05, "shares {t:?}");
}

#[test]
fn an_idle_cpu_takes_a_woken_vcpu() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    q.add(v(1), 256, 0).unwrap();
    q.add(v(2), 256, 0).unwrap();
    assert_eq!(
        q.wake(v(1), 0, 1),
        Some(1),
        "the asking CPU idles: it runs it"
    );
    q.sleep(v(1), 0);
    assert_eq!(q.wake(v(1), 0, 0), Some(0), "the asking CPU");
    assert_eq!(q.schedule(0, 0).next, Some(v(1)));
    assert_eq!(q.wake(v(2), 1, 0), Some(1), "CPU 1 idles: it takes v2");
    assert_eq!(q.schedule(1, 1).next, Some(v(2)));
    assert_eq!(q.running_on(v(2)), Some(1));
    assert_eq!(
        q.schedule(0, 2).next,
        Some(v(1)),
        "v2 is CPU 1's, not CPU 0's"
    );
    assert_eq!(q.remove(v(2)), Some(1));
    assert_eq!(q.current(1), None);
}

#[test]
fn a_woken_vcpu_that_preempts_nobody_still_gets_a_slice_end() {
    // v1 runs alone with no slice end; v2 wakes far ahead of it: v2 must not wait
    // for v1 to block, so CPU 0 is told to reschedule and arm a slice end.
    let mut q = RunQueue::new();
    q.add(v(1), 256, 0).unwrap();
    q.add(v(2), 1, 0).unwrap();
    q.wake(v(2), 0, 0);
    q.schedule(0, 0);
    q.sleep(v(2), 50 * MS);
    q.wake(v(1), 50 * MS, 0);
    assert_eq!(q.schedule(0, 50 * MS).next, Some(v(1)));
    assert_eq!(q.schedule(0, 50 * MS).slice_end_ns, None, "alone");
    assert_eq!(q.wake(v(2), 51 * MS, 0), Some(0));
    let d = q.schedule(0, 51 * MS);
    assert_eq!(d.next, Some(v(1)));
    assert!(d.slice_end_ns.is_some(), "v2 waits: a slice end is armed");
}

#[derive(Clone, Debug)]
enum SmpOp {
    Wake(u16, usize),
    Sleep(u16),
    Yield(u16),
    Remove(u16),
    Schedule(usize, u64),
    Pin(u16, u64),
    Soft(u16, u64),
}

fn smp_op() -> impl Strategy<Value = SmpOp> {
    prop_oneof![
        (0..8u16, 0..4usize).prop_map(|(s, c)| SmpOp::Wake(s, c)),
        (0..8u16).prop_map(SmpOp::Sleep),
        (0..8u16).prop_map(SmpOp::Yield),
        (0..8u16).prop_map(SmpOp::Remove),
        (0..4usize, 0..20 * MS).prop_map(|(c, dt)| SmpOp::Schedule(c, dt)),
        (0..8u16, 0..16u64).prop_map(|(s, m)| SmpOp::Pin(s, m)),
        (0..8u16, 0..16u64).prop_map(|(s, m)| SmpOp::Soft(s, m)),
    ]
}

proptest! {
    #[test]
    fn random_sequences_on_four_cpus_keep_the_invariants(
        ops in proptest::collection::vec(smp_op(), 1..300)
    ) {
        let mut q = RunQueue::new();
        q.set_cpus(4);
        for s in 0..8u16 {
            q.add(v(s), 64 * (s + 1), 0).unwrap();
        }
        let mut now = 0u64;
        for op in ops {
            match op {
                SmpOp::Wake(s, here) => {
                    if let Some(c) = q.wake(v(s), now, here) {
                        prop_assert!(c < 4);
                    }
                }
                SmpOp::Sleep(s) => q.sleep(v(s), now),
                SmpOp::Yield(s) => q.yield_now(v(s), now),
                SmpOp::Remove(s) => {
                    q.remove(v(s));
                    prop_assert_eq!(q.running_on(v(s)), None);
                }
                SmpOp::Pin(s, m) => match q.set_affinity(v(s), m) {
                    Ok(_) => prop_assert_eq!(q.affinity(v(s)), Some(m)),
                    Err(SchedError::NoCpu) => prop_assert_eq!(m, 0),
                    Err(e) => prop_assert_eq!(e, SchedError::Unknown(v(s))),
                },
                SmpOp::Soft(s, m) => match q.set_soft_affinity(v(s), m) {
                    Ok(()) => prop_assert_eq!(q.soft_affinity(v(s)), Some(m)),
                    Err(e) => prop_assert_eq!(e, SchedError::Unknown(v(s))),
                },
                SmpOp::Schedule(c, dt) => {
                    let before: u64 = (0..8).map(|s| q.runtime_ns(v(s))).sum();
                    now += dt;
                    let d = q.schedule(c, now);
                    if let Some(k) = d.kick {
                        prop_assert!(k < 4 && k != c, "kick {}", k);
                    }
                    if let Some(n) = d.next {
                        prop_assert!(q.is_runnable(n));
                        prop_assert_eq!(q.running_on(n), Some(c));
                        let a = q.affinity(n).unwrap();
                        prop_assert!(a & (1 << c) != 0, "{:?} on CPU {} outside {:#x}", n, c, a);
                    }
                    let after: u64 = (0..8).map(|s| q.runtime_ns(v(s))).sum();
                    prop_assert!(after >= before);
                    // Never more time charged than four CPUs had since the start
                    // (removed vCPUs take theirs with them).
                    prop_assert!(after <= 4 * now, "{} ns charged by {}", after, now);
                }
            }
            let running: Vec<_> = (0..4).filter_map(|c| q.current(c)).collect();
            for (i, a) in running.iter().enumerate() {
                prop_assert!(!running[i + 1..].contains(a), "{:?} on two CPUs", a);
            }
        }
    }
}

#[test]
fn hard_affinity_keeps_a_vcpu_on_its_cpus() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    for s in 0..3 {
        q.add(v(s), 256, 0).unwrap();
    }
    assert_eq!(q.set_affinity(v(0), 0), Err(SchedError::NoCpu));
    assert_eq!(
        q.set_affinity(v(0), 1 << 5),
        Err(SchedError::NoCpu),
        "no such CPU"
    );
    assert_eq!(q.set_affinity(v(9), 1), Err(SchedError::Unknown(v(9))));
    assert_eq!(q.affinity(v(0)), Some(ALL_CPUS));
    // v0 and v1 may use CPU 1 only; v2 anything.
    assert_eq!(q.set_affinity(v(0), 0b10), Ok(None));
    assert_eq!(q.set_affinity(v(1), 0b10), Ok(None));
    // Woken while CPU 0 asks and idles: CPU 1 is told, not CPU 0.
    assert_eq!(q.wake(v(0), 0, 0), Some(1));
    assert_eq!(q.schedule(0, 0).next, None, "CPU 0 may not run it");
    assert_eq!(q.schedule(1, 0).next, Some(v(0)));
    // Two pinned hogs share CPU 1; v2 gets CPU 0 to itself.
    q.wake(v(1), 0, 0);
    q.wake(v(2), 0, 0);
    let mut now = 0;
    while now < 2_000 * MS {
        now += DEFAULT_TIMESLICE_NS;
        q.schedule(0, now);
        q.schedule(1, now);
        assert_ne!(q.current(0), Some(v(0)));
        assert_ne!(q.current(0), Some(v(1)));
    }
    let share = |s| q.runtime_ns(v(s)) as f64 / now as f64;
    assert!((share(0) - 0.5).abs() < 0.05 && (share(1) - 0.5).abs() < 0.05);
    assert!(share(2) > 0.95, "v2 alone on CPU 0: {}", share(2));
    // Moving v2 off the CPU it runs on asks that CPU to reschedule.
    let on = q.running_on(v(2)).unwrap();
    assert_eq!(q.set_affinity(v(2), 1 << (1 - on)), Ok(Some(on)));
}

/// The monotonic minimum virtual runtime: X runs alone for a second while Y sleeps,
/// then X blocks and Y wakes with nothing else runnable; when X wakes 1 ms later the
/// two share the CPU. Without the monotonic minimum Y kept its old virtual runtime and
/// ran alone for about a second before X got the CPU back.
#[test]
fn a_sleeper_that_wakes_alone_gains_nothing_from_the_empty_queue() {
    let (x, y) = (v(1), v(2));
    let mut q = RunQueue::new();
    q.add(x, 256, 0).unwrap();
    q.add(y, 256, 0).unwrap();
    q.wake(x, 0, 0);
    assert_eq!(q.schedule(0, 0).next, Some(x));
    // X alone for a second (no one waits: no slice end).
    q.sleep(x, 1000 * MS);
    assert_eq!(q.schedule(0, 1000 * MS).next, None);
    // Y wakes with nothing runnable, runs; X wakes a millisecond later.
    q.wake(y, 1000 * MS, 0);
    assert_eq!(q.schedule(0, 1000 * MS).next, Some(y));
    q.wake(x, 1001 * MS, 0);
    // Run 100 ms in slice-sized steps: each gets a fair part of it.
    let mut now = 1001 * MS;
    let mut ran = [0u64; 2];
    while now < 1101 * MS {
        let next = q.schedule(0, now);
        let until = next
            .slice_end_ns
            .unwrap_or(now + DEFAULT_TIMESLICE_NS)
            .min(1101 * MS);
        match next.next {
            Some(c) if c == x => ran[0] += until - now,
            Some(c) if c == y => ran[1] += until - now,
            _ => {}
        }
        now = until;
    }
    assert!(
        ran[0] >= 30 * MS && ran[1] >= 30 * MS,
        "X ran {} ms and Y {} ms of 100",
        ran[0] / MS,
        ran[1] / MS
    );
}

/// A vCPU added while nothing is runnable starts at the monotonic minimum, not at 0:
/// it does not run ahead of one that ran before the queue emptied.
#[test]
fn a_vcpu_added_to_an_empty_queue_starts_at_the_minimum() {
    let (x, z) = (v(1), v(3));
    let mut q = RunQueue::new();
    q.add(x, 256, 0).unwrap();
    q.wake(x, 0, 0);
    q.schedule(0, 0);
    q.sleep(x, 500 * MS);
    q.schedule(0, 500 * MS);
    q.add(z, 256, 500 * MS).unwrap();
    q.wake(z, 500 * MS, 0);
    q.wake(x, 500 * MS, 0);
    // Both within a slice of each other: the next few slices alternate.
    let mut picks = Vec::new();
    let mut now = 500 * MS;
    for _ in 0..6 {
        let d = q.schedule(0, now);
        picks.push(d.next);
        now = d.slice_end_ns.unwrap_or(now + DEFAULT_TIMESLICE_NS);
    }
    assert!(
        picks.contains(&Some(x)) && picks.contains(&Some(z)),
        "{picks:?}"
    );
}

/// Soft affinity places a woken vCPU: an idle CPU it prefers first, then any idle
/// CPU it may use; a map with none of its CPUs, or all of them, is no preference,
/// and hard affinity wins over soft.
#[test]
fn a_woken_vcpu_goes_to_an_idle_cpu_it_prefers() {
    let mut q = RunQueue::new();
    q.set_cpus(4);
    q.add(v(0), 256, 0).unwrap();
    assert_eq!(q.set_soft_affinity(v(9), 1), Err(SchedError::Unknown(v(9))));
    assert_eq!(q.soft_affinity(v(0)), Some(ALL_CPUS));
    let woken_at = |q: &mut RunQueue, soft: u64, here: usize| {
        q.set_soft_affinity(v(0), soft).unwrap();
        let c = q.wake(v(0), 0, here);
        q.schedule(c.unwrap(), 0);
        q.sleep(v(0), 0);
        q.schedule(c.unwrap(), 0);
        c
    };
    assert_eq!(woken_at(&mut q, 1 << 2, 0), Some(2), "prefers CPU 2");
    assert_eq!(
        woken_at(&mut q, 0b1100, 3),
        Some(3),
        "the asking CPU, preferred"
    );
    assert_eq!(woken_at(&mut q, 0, 1), Some(1), "no CPU: no preference");
    assert_eq!(woken_at(&mut q, 0b1111, 1), Some(1), "every CPU: none");
    assert_eq!(woken_at(&mut q, 1 << 7, 1), Some(1), "no such CPU: none");
    // Hard affinity {0}, soft {2}: the preference names no CPU it may use.
    q.set_affinity(v(0), 1).unwrap();
    assert_eq!(woken_at(&mut q, 1 << 2, 3), Some(0), "hard wins");
}

/// A vCPU that had to start outside its soft affinity (its CPU was busy) gets a
/// slice end, and at that schedule moves to the CPU it prefers once that idles;
/// the CPU it leaves does not take it back meanwhile.
#[test]
fn a_vcpu_outside_its_soft_affinity_moves_when_a_preferred_cpu_idles() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    let (busy, moving) = (v(1), v(2));
    q.add(busy, 256, 0).unwrap();
    q.add(moving, 256, 0).unwrap();
    assert_eq!(q.wake(busy, 0, 1), Some(1));
    assert_eq!(q.schedule(1, 0).next, Some(busy));
    q.set_soft_affinity(moving, 0b10).unwrap();
    assert_eq!(q.wake(moving, 0, 0), Some(0), "CPU 1 is busy: CPU 0 idles");
    let d = q.schedule(0, 0);
    assert_eq!(d.next, Some(moving));
    assert!(d.slice_end_ns.is_some(), "astray: a slice end comes");
    assert_eq!(d.kick, None, "CPU 1 is busy");
    // busy blocks; CPU 1 idles (moving is CPU 0's now).
    q.sleep(busy, MS);
    assert_eq!(q.schedule(1, MS).next, None);
    // At CPU 0's slice end, moving leaves for CPU 1 and CPU 1 is kicked.
    let d = q.schedule(0, 10 * MS);
    assert_eq!((d.next, d.kick), (None, Some(1)));
    assert_eq!(q.schedule(0, 10 * MS).next, None, "left to CPU 1");
    let d = q.schedule(1, 10 * MS);
    assert_eq!(d.next, Some(moving));
    assert_eq!(d.slice_end_ns, None, "where it prefers, alone");
    // Where it prefers, it stays even when CPU 0 idles.
    let d = q.schedule(1, 20 * MS);
    assert_eq!((d.next, d.kick), (Some(moving), None));
}

/// A woken vCPU that must preempt prefers a CPU of its soft affinity whose vCPU
/// has no preference for it over a CPU whose vCPU is further ahead but prefers its
/// CPU (credit2's `tickle_score` classes).
#[test]
fn a_preempting_wake_prefers_a_cpu_of_its_soft_affinity() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    let (a, b, w) = (v(1), v(2), v(3));
    for x in [a, b, w] {
        q.add(x, 256, 0).unwrap();
    }
    q.set_soft_affinity(a, 0b01).unwrap();
    assert_eq!(q.wake(a, 0, 0), Some(0));
    assert_eq!(q.wake(b, 0, 1), Some(1));
    q.schedule(0, 0);
    q.schedule(1, 0);
    // a ran 30 ms on CPU 0, b 20 ms on CPU 1: a is further ahead.
    q.schedule(0, 30 * MS);
    q.schedule(1, 20 * MS);
    assert_eq!((q.current(0), q.current(1)), (Some(a), Some(b)));
    q.set_soft_affinity(w, 0b10).unwrap();
    assert_eq!(q.wake(w, 30 * MS, 0), Some(1), "CPU 1: w prefers it");
    assert_eq!(q.schedule(0, 30 * MS).next, Some(a), "w is CPU 1's");
    assert_eq!(q.schedule(1, 30 * MS).next, Some(w));
}

/// Two vCPUs each on the CPU the other prefers swap at the next schedule of
/// either (neither CPU idles, so no idle CPU would draw them); and a CPU that
/// picks among waiting vCPUs takes the one that prefers it when it is within a
/// timeslice of the first, so two vCPUs preempted at once come back each to its
/// own CPU.
#[test]
fn vcpus_on_each_others_preferred_cpu_swap() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    let (a, b) = (v(1), v(2));
    // a's virtual time runs at half speed: it is behind b below.
    q.add(a, 512, 0).unwrap();
    q.add(b, 256, 0).unwrap();
    assert_eq!(q.wake(a, 0, 0), Some(0));
    assert_eq!(q.schedule(0, 0).next, Some(a));
    assert_eq!(q.wake(b, 0, 0), Some(1));
    assert_eq!(q.schedule(1, 0).next, Some(b));
    q.set_soft_affinity(a, 0b10).unwrap();
    q.set_soft_affinity(b, 0b01).unwrap();
    let d = q.schedule(0, 10 * MS);
    assert_eq!((d.next, d.kick), (None, Some(1)), "a leaves for CPU 1");
    let d = q.schedule(1, 10 * MS);
    assert_eq!((d.next, d.kick), (Some(a), Some(0)), "b leaves for CPU 0");
    assert_eq!(q.schedule(0, 10 * MS).next, Some(b));
    assert_eq!((q.current(0), q.current(1)), (Some(b), Some(a)));

    // Both preempted (say by dom0's vCPUs), then CPU 0 schedules first: it takes
    // b, which prefers it, though a is behind (within a timeslice).
    let (c0, c1) = (v(3), v(4));
    for x in [c0, c1] {
        q.add(x, 256, 0).unwrap();
    }
    q.schedule(0, 20 * MS);
    q.schedule(1, 19 * MS);
    q.wake(c0, 20 * MS, 0);
    q.wake(c1, 20 * MS, 1);
    q.schedule(0, 20 * MS);
    q.schedule(1, 20 * MS);
    assert_eq!((q.current(0), q.current(1)), (Some(c0), Some(c1)));
    q.sleep(c0, 21 * MS);
    q.sleep(c1, 21 * MS);
    assert_eq!(q.schedule(0, 21 * MS).next, Some(b));
    assert_eq!(q.schedule(1, 21 * MS).next, Some(a));
}
