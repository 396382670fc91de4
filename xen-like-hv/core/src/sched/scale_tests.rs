//! The queue at scale: thousands of blocked vCPUs change no decision, the queue
//! grows past the old fixed 1024, and the index stays right through add/remove churn.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

const MS: u64 = 1_000_000;

fn v(slot: u16) -> VcpuRef {
    VcpuRef { slot, vcpu: 0 }
}

/// The blocked vCPUs of [`with_blocked`]: 1250 domains of four vCPUs.
const BLOCKED: usize = 5000;

/// The `n`th blocked vCPU: slots from 100 up, four vCPUs each.
fn blocked(n: usize) -> VcpuRef {
    VcpuRef {
        slot: 100 + u16::try_from(n / 4).unwrap(),
        vcpu: u16::try_from(n % 4).unwrap(),
    }
}

/// Checks the storage: every entity found at its place through the index, the
/// runnable list exactly the runnable entities, each once, with room for all.
fn check(q: &RunQueue) {
    for (i, e) in q.entities.iter().enumerate() {
        assert_eq!(q.find(e.v), Some(i), "{:?}", e.v);
        if e.runnable() {
            assert_eq!(q.run[e.run_pos as usize] as usize, i);
        }
    }
    let indexed = q.index.iter().filter(|&&i| i != NONE).count();
    assert_eq!(indexed, q.entities.len());
    let runnable = q.entities.iter().filter(|e| e.runnable()).count();
    assert_eq!(q.run.len(), runnable);
    for (p, &i) in q.run.iter().enumerate() {
        assert_eq!(q.entities[i as usize].run_pos as usize, p);
    }
    assert!(q.run.capacity() >= q.entities.len());
}

#[test]
fn grows_past_the_old_capacity() {
    let mut q = RunQueue::new();
    q.set_cpus(2);
    for n in 0..3000 {
        q.add(blocked(n), 256, 0).unwrap();
    }
    // Domain slots up to Xen's last domain id, and many vCPUs in one domain.
    q.add(v(32_750), 256, 0).unwrap();
    q.add(VcpuRef { slot: 7, vcpu: 31 }, 256, 0).unwrap();
    // A domain has at most 32 vCPUs: the index has no place for a 33rd.
    let past = VcpuRef { slot: 7, vcpu: 32 };
    assert_eq!(q.add(past, 256, 0), Err(SchedError::VcpuRange(past)));
    assert_eq!(
        SchedError::VcpuRange(past).to_string(),
        "vCPU 7.32 is past the most a domain has (32)"
    );
    check(&q);
    assert_eq!(
        q.add(blocked(2999), 256, 0),
        Err(SchedError::Exists(blocked(2999)))
    );
    assert_eq!(q.wake(v(32_750), 0, 0), Some(0));
    assert_eq!(q.schedule(0, 0).next, Some(v(32_750)));
    assert_eq!(q.wake(blocked(2500), 0, 1), Some(1));
    assert_eq!(q.schedule(1, 0).next, Some(blocked(2500)));
    q.remove(blocked(0));
    check(&q);
    assert_eq!(q.current(1), Some(blocked(2500)));
    assert_eq!(q.weight(VcpuRef { slot: 7, vcpu: 31 }), Some(256));
    assert_eq!(q.weight(blocked(0)), None);
    assert_eq!(
        SchedError::Full.to_string(),
        "out of memory for the run queue"
    );
}

#[derive(Clone, Debug)]
enum Op {
    Add(u16, u16),
    Remove(u16),
    Wake(u16, usize),
    Sleep(u16),
    Yield(u16),
    Weight(u16, u16),
    Pin(u16, u64),
    Soft(u16, u64),
    Schedule(usize, u64),
    /// Only on the queue with the blocked vCPUs: remove one and add it again.
    Churn(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..8u16, 1..1024u16).prop_map(|(s, w)| Op::Add(s, w)),
        1 => (0..8u16).prop_map(Op::Remove),
        4 => (0..8u16, 0..4usize).prop_map(|(s, c)| Op::Wake(s, c)),
        3 => (0..8u16).prop_map(Op::Sleep),
        1 => (0..8u16).prop_map(Op::Yield),
        1 => (0..8u16, 0..1024u16).prop_map(|(s, w)| Op::Weight(s, w)),
        1 => (0..8u16, 0..16u64).prop_map(|(s, m)| Op::Pin(s, m)),
        1 => (0..8u16, prop_oneof![Just(ALL_CPUS), 0..16u64]).prop_map(|(s, m)| Op::Soft(s, m)),
        6 => (0..4usize, 0..20 * MS).prop_map(|(c, dt)| Op::Schedule(c, dt)),
        1 => (0..BLOCKED).prop_map(Op::Churn),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// 5000 blocked vCPUs next to a few runnable ones: every answer is the one the
    /// queue without them gives.
    #[test]
    fn blocked_vcpus_change_no_decision(ops in proptest::collection::vec(op(), 1..300)) {
        let mut big = RunQueue::new();
        let mut small = RunQueue::new();
        big.set_cpus(4);
        small.set_cpus(4);
        for n in 0..BLOCKED / 2 {
            big.add(blocked(n), 256, 0).unwrap();
        }
        for s in 0..8u16 {
            prop_assert_eq!(big.add(v(s), 64 * (s + 1), 0), small.add(v(s), 64 * (s + 1), 0));
        }
        for n in BLOCKED / 2..BLOCKED {
            big.add(blocked(n), 256, 0).unwrap();
        }
        let mut now = 0u64;
        for op in ops {
            match op {
                Op::Add(s, w) => prop_assert_eq!(big.add(v(s), w, now), small.add(v(s), w, now)),
                Op::Remove(s) => prop_assert_eq!(big.remove(v(s)), small.remove(v(s))),
                Op::Wake(s, here) => {
                    prop_assert_eq!(big.wake(v(s), now, here), small.wake(v(s), now, here));
                }
                Op::Sleep(s) => {
                    big.sleep(v(s), now);
                    small.sleep(v(s), now);
                }
                Op::Yield(s) => {
                    big.yield_now(v(s), now);
                    small.yield_now(v(s), now);
                }
                Op::Weight(s, w) => prop_assert_eq!(big.set_weight(v(s), w), small.set_weight(v(s), w)),
                Op::Pin(s, m) => prop_assert_eq!(big.set_affinity(v(s), m), small.set_affinity(v(s), m)),
                Op::Soft(s, m) => {
                    prop_assert_eq!(big.set_soft_affinity(v(s), m), small.set_soft_affinity(v(s), m));
                }
                Op::Schedule(c, dt) => {
                    now += dt;
                    prop_assert_eq!(big.schedule(c, now), small.schedule(c, now));
                }
                Op::Churn(n) => {
                    prop_assert_eq!(big.remove(blocked(n)), None);
                    big.sleep(blocked(n), now);
                    big.add(blocked(n), 256, now).unwrap();
                }
            }
            for c in 0..4 {
                prop_assert_eq!(big.current(c), small.current(c));
            }
            for s in 0..8u16 {
                prop_assert_eq!(big.runtime_ns(v(s)), small.runtime_ns(v(s)));
                prop_assert_eq!(big.is_runnable(v(s)), small.is_runnable(v(s)));
                prop_assert_eq!(big.running_on(v(s)), small.running_on(v(s)));
            }
        }
        prop_assert_eq!(big.entities.len() - small.entities.len(), BLOCKED);
        prop_assert_eq!(big.run.len(), small.run.len());
        check(&big);
        check(&small);
    }
}

/// vCPUs of a few domains, one with a far slot and one with a high vCPU number.
fn any_vcpu() -> impl Strategy<Value = VcpuRef> {
    (
        prop_oneof![0..4u16, Just(200u16)],
        prop_oneof![0..4u16, Just(31u16)],
    )
        .prop_map(|(slot, vcpu)| VcpuRef { slot, vcpu })
}

#[derive(Clone, Debug)]
enum ChurnOp {
    Add(VcpuRef, u16),
    Remove(VcpuRef),
    Wake(VcpuRef),
    Sleep(VcpuRef),
    Weight(VcpuRef, u16),
    Schedule(u64),
}

fn churn_op() -> impl Strategy<Value = ChurnOp> {
    prop_oneof![
        3 => (any_vcpu(), 1..1024u16).prop_map(|(v, w)| ChurnOp::Add(v, w)),
        2 => any_vcpu().prop_map(ChurnOp::Remove),
        2 => any_vcpu().prop_map(ChurnOp::Wake),
        1 => any_vcpu().prop_map(ChurnOp::Sleep),
        1 => (any_vcpu(), 1..1024u16).prop_map(|(v, w)| ChurnOp::Weight(v, w)),
        1 => (0..20 * MS).prop_map(ChurnOp::Schedule),
    ]
}

proptest! {
    /// Add/remove churn against a map of (weight, runnable): the index finds each
    /// vCPU and only those present.
    #[test]
    fn churn_keeps_the_index_right(ops in proptest::collection::vec(churn_op(), 1..400)) {
        let mut q = RunQueue::new();
        q.set_cpus(2);
        let mut model: BTreeMap<(u16, u16), (u16, bool)> = BTreeMap::new();
        let mut now = 0;
        for op in ops {
            match op {
                ChurnOp::Add(v, w) => {
                    let r = q.add(v, w, now);
                    if let Entry::Vacant(e) = model.entry((v.slot, v.vcpu)) {
                        prop_assert_eq!(r, Ok(()));
                        e.insert((w, false));
                    } else {
                        prop_assert_eq!(r, Err(SchedError::Exists(v)));
                    }
                }
                ChurnOp::Remove(v) => {
                    q.remove(v);
                    model.remove(&(v.slot, v.vcpu));
                }
                ChurnOp::Wake(v) => {
                    q.wake(v, now, 0);
                    if let Some(m) = model.get_mut(&(v.slot, v.vcpu)) {
                        m.1 = true;
                    }
                }
                ChurnOp::Sleep(v) => {
                    q.sleep(v, now);
                    if let Some(m) = model.get_mut(&(v.slot, v.vcpu)) {
                        m.1 = false;
                    }
                }
                ChurnOp::Weight(v, w) => {
                    let r = q.set_weight(v, w);
                    match model.get_mut(&(v.slot, v.vcpu)) {
                        Some(m) => {
                            prop_assert_eq!(r, Ok(()));
                            m.0 = w;
                        }
                        None => prop_assert_eq!(r, Err(SchedError::Unknown(v))),
                    }
                }
                ChurnOp::Schedule(dt) => {
                    now += dt;
                    for c in 0..2 {
                        if let Some(n) = q.schedule(c, now).next {
                            prop_assert_eq!(model.get(&(n.slot, n.vcpu)).map(|m| m.1), Some(true));
                        }
                    }
                }
            }
            check(&q);
            prop_assert_eq!(q.entities.len(), model.len());
            for slot in [0, 1, 2, 3, 200] {
                for vcpu in [0, 1, 2, 3, 127] {
                    let v = VcpuRef { slot, vcpu };
                    let m = model.get(&(slot, vcpu));
                    prop_assert_eq!(q.weight(v), m.map(|m| m.0));
                    prop_assert_eq!(q.is_runnable(v), m.is_some_and(|m| m.1));
                }
            }
        }
    }
}

#[test]
fn reserved_slots_take_one_vcpu_each_without_allocating() {
    let mut q = RunQueue::new();
    q.set_cpus(1);
    q.reserve_slots(100).unwrap();
    let before = q.allocations();
    for s in 0..100u16 {
        q.add(v(s), 256, 0).unwrap();
    }
    assert_eq!(q.allocations(), before);
    check(&q);
    assert_eq!(q.reserve_slots(usize::MAX), Err(SchedError::Full));
}
