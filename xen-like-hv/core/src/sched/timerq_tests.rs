//! Tests of [`TimerQueue`]: each operation, the heap and index invariants against
//! a map model, and no allocation within reserved room.
#![allow(clippy::cast_possible_truncation)] // test sizes (1000 slots, 32 vCPUs) fit in u16/u32

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

fn v(slot: u16, vcpu: u16) -> VcpuRef {
    VcpuRef { slot, vcpu }
}

/// The heap order holds, every entry's index cell points at it, and every other
/// index cell is empty.
fn check(q: &TimerQueue) -> Result<(), String> {
    for (i, e) in q.heap.iter().enumerate() {
        if i > 0 {
            let p = &q.heap[(i - 1) / 2];
            if p.deadline > e.deadline {
                return Err(format!("heap order broken at {i}: {p:?} above {e:?}"));
            }
        }
        let cell = TimerQueue::cell(e.v).map_err(|_| format!("{e:?} out of range"))?;
        if q.index.get(cell).copied() != Some(i as u32) {
            return Err(format!("index of {e:?} is not {i}"));
        }
    }
    let used = q.index.iter().filter(|&&p| p != NONE).count();
    if used != q.heap.len() {
        return Err(format!("{used} index cells for {} entries", q.heap.len()));
    }
    Ok(())
}

#[test]
fn new_is_empty_and_allocates_nothing() {
    let q = TimerQueue::new();
    assert!(q.is_empty());
    assert_eq!(q.len(), 0);
    assert_eq!(q.earliest(), None);
    assert_eq!(q.get(v(0, 0)), None);
    assert_eq!(q.allocations(), [0, 0]);
    assert_eq!(TimerQueue::default().len(), 0);
}

#[test]
fn set_inserts_and_earliest_is_the_minimum() {
    let mut q = TimerQueue::new();
    q.set(v(3, 1), Some(300)).unwrap();
    q.set(v(1, 0), Some(100)).unwrap();
    q.set(v(2, 31), Some(200)).unwrap();
    check(&q).unwrap();
    assert_eq!(q.len(), 3);
    assert!(!q.is_empty());
    assert_eq!(q.earliest(), Some((100, v(1, 0))));
    assert_eq!(q.get(v(3, 1)), Some(300));
    assert_eq!(q.get(v(2, 31)), Some(200));
    assert_eq!(q.get(v(2, 30)), None);
    assert_eq!(q.get(v(9, 0)), None);
}

#[test]
fn set_moves_an_entry_earlier_and_later() {
    let mut q = TimerQueue::new();
    for s in 0..10 {
        q.set(v(s, 0), Some(1000 + u64::from(s))).unwrap();
    }
    // Decrease key: the last becomes the earliest.
    q.set(v(9, 0), Some(5)).unwrap();
    check(&q).unwrap();
    assert_eq!(q.earliest(), Some((5, v(9, 0))));
    assert_eq!(q.len(), 10);
    // Increase key: it goes to the back, the next is earliest.
    q.set(v(9, 0), Some(5000)).unwrap();
    check(&q).unwrap();
    assert_eq!(q.earliest(), Some((1000, v(0, 0))));
    assert_eq!(q.get(v(9, 0)), Some(5000));
    // The same deadline again changes nothing.
    q.set(v(0, 0), Some(1000)).unwrap();
    check(&q).unwrap();
    assert_eq!(q.len(), 10);
}

#[test]
fn set_none_removes() {
    let mut q = TimerQueue::new();
    q.set(v(0, 0), Some(10)).unwrap();
    q.set(v(0, 1), Some(20)).unwrap();
    q.set(v(0, 0), None).unwrap();
    check(&q).unwrap();
    assert_eq!(q.get(v(0, 0)), None);
    assert_eq!(q.earliest(), Some((20, v(0, 1))));
    // Removing what is absent, even past the index, is fine.
    q.set(v(0, 0), None).unwrap();
    q.set(v(500, 0), None).unwrap();
    assert_eq!(q.len(), 1);
    q.set(v(0, 1), None).unwrap();
    assert!(q.is_empty());
    assert_eq!(q.earliest(), None);
    check(&q).unwrap();
}

#[test]
fn vcpu_past_the_stride_is_refused() {
    let mut q = TimerQueue::new();
    let bad = v(0, VCPU_STRIDE as u16);
    assert_eq!(q.set(bad, Some(1)), Err(TimerQueueError::VcpuRange));
    assert_eq!(q.set(bad, None), Err(TimerQueueError::VcpuRange));
    assert_eq!(
        q.set(v(1, u16::MAX), Some(1)),
        Err(TimerQueueError::VcpuRange)
    );
    assert!(q.is_empty());
    assert_eq!(q.get(bad), None);
    assert_eq!(q.allocations(), [0, 0]);
    // vCPU 32 of slot 0 does not alias vCPU 0 of slot 1.
    q.set(v(1, 0), Some(7)).unwrap();
    assert_eq!(q.get(bad), None);
    assert!(!TimerQueueError::VcpuRange.to_string().is_empty());
    assert!(!TimerQueueError::OutOfMemory.to_string().is_empty());
}

#[test]
fn pop_due_returns_due_entries_earliest_first() {
    let mut q = TimerQueue::new();
    q.set(v(0, 0), Some(30)).unwrap();
    q.set(v(1, 0), Some(10)).unwrap();
    q.set(v(2, 0), Some(20)).unwrap();
    q.set(v(3, 0), Some(40)).unwrap();
    assert_eq!(q.pop_due(5), None);
    assert_eq!(q.len(), 4);
    assert_eq!(q.pop_due(30), Some(v(1, 0)));
    assert_eq!(q.pop_due(30), Some(v(2, 0)));
    // A deadline equal to now is due.
    assert_eq!(q.pop_due(30), Some(v(0, 0)));
    assert_eq!(q.pop_due(30), None);
    check(&q).unwrap();
    assert_eq!(q.get(v(1, 0)), None);
    assert_eq!(q.earliest(), Some((40, v(3, 0))));
    assert_eq!(q.pop_due(u64::MAX), Some(v(3, 0)));
    assert_eq!(q.pop_due(u64::MAX), None);
    assert!(q.is_empty());
}

#[test]
fn pop_due_returns_ties_each_once() {
    let mut q = TimerQueue::new();
    let mut all = BTreeSet::new();
    for s in 0..20u16 {
        for k in 0..4u16 {
            q.set(v(s, k), Some(u64::from(s % 3))).unwrap();
            all.insert((s, k));
        }
    }
    q.set(v(50, 0), Some(3)).unwrap();
    let mut seen = BTreeSet::new();
    let mut last = 0;
    while let Some(w) = q.pop_due(2) {
        check(&q).unwrap();
        let d = u64::from(w.slot % 3);
        assert!(d >= last, "popped out of order");
        last = d;
        assert!(seen.insert((w.slot, w.vcpu)), "{w:?} popped twice");
    }
    assert_eq!(seen, all);
    assert_eq!(q.len(), 1);
    assert_eq!(q.earliest(), Some((3, v(50, 0))));
}

#[test]
fn remove_slot_removes_every_vcpu_of_that_slot_only() {
    let mut q = TimerQueue::new();
    for k in 0..VCPU_STRIDE as u16 {
        q.set(v(4, k), Some(u64::from(k) * 3)).unwrap();
        q.set(v(5, k), Some(u64::from(k) * 3 + 1)).unwrap();
    }
    q.set(v(3, 0), Some(1000)).unwrap();
    q.remove_slot(4);
    check(&q).unwrap();
    assert_eq!(q.len(), VCPU_STRIDE + 1);
    assert!((0..VCPU_STRIDE as u16).all(|k| q.get(v(4, k)).is_none()));
    assert_eq!(q.get(v(5, 7)), Some(22));
    assert_eq!(q.earliest(), Some((1, v(5, 0))));
    // Slots absent or past the index: nothing happens.
    q.remove_slot(4);
    q.remove_slot(u16::MAX);
    assert_eq!(q.len(), VCPU_STRIDE + 1);
    check(&q).unwrap();
}

#[test]
fn reserve_slots_then_sets_allocate_nothing() {
    const N: usize = 1000;
    let mut q = TimerQueue::new();
    q.reserve_slots(N).unwrap();
    let before = q.allocations();
    assert!(before[0] >= N * core::mem::size_of::<Entry>());
    assert_eq!(before[1], N * VCPU_STRIDE * core::mem::size_of::<u32>());
    for s in 0..N as u16 {
        // Deadlines that make the heap move entries around.
        q.set(v(s, 0), Some(u64::from(s.wrapping_mul(7919) % 613)))
            .unwrap();
        assert_eq!(q.allocations(), before);
    }
    // Moving, popping and removing allocate nothing either.
    for s in 0..N as u16 {
        q.set(v(s, 0), Some(u64::from(N as u16 - s))).unwrap();
    }
    while q.pop_due(500).is_some() {}
    q.remove_slot(999);
    q.set(v(998, 0), None).unwrap();
    check(&q).unwrap();
    assert_eq!(q.allocations(), before);
    // Filling again to N allocates nothing.
    for s in 0..N as u16 {
        q.set(v(s, 0), Some(1)).unwrap();
    }
    assert_eq!(q.len(), N);
    assert_eq!(q.allocations(), before);
    // Reserving what is there already allocates nothing.
    q.reserve_slots(N).unwrap();
    q.reserve_slots(10).unwrap();
    assert_eq!(q.allocations(), before);
}

#[test]
fn reserve_makes_room_for_more_vcpus_of_reserved_slots() {
    let mut q = TimerQueue::new();
    q.reserve_slots(4).unwrap();
    q.reserve(4 * VCPU_STRIDE).unwrap();
    let before = q.allocations();
    assert!(before[0] >= 4 * VCPU_STRIDE * core::mem::size_of::<Entry>());
    for s in 0..4 {
        for k in 0..VCPU_STRIDE as u16 {
            q.set(v(s, k), Some(u64::from(k ^ s))).unwrap();
        }
    }
    assert_eq!(q.len(), 4 * VCPU_STRIDE);
    assert_eq!(q.allocations(), before);
    check(&q).unwrap();
}

#[test]
fn huge_reservations_fail_without_panicking() {
    let mut q = TimerQueue::new();
    q.set(v(0, 0), Some(1)).unwrap();
    assert_eq!(q.reserve(usize::MAX), Err(TimerQueueError::OutOfMemory));
    assert_eq!(
        q.reserve(u32::MAX as usize),
        Err(TimerQueueError::OutOfMemory)
    );
    // Slots are capped at what a u16 names.
    q.reserve_slots(usize::MAX).unwrap();
    assert_eq!(
        q.allocations()[1],
        (u16::MAX as usize + 1) * VCPU_STRIDE * core::mem::size_of::<u32>()
    );
    assert_eq!(q.len(), 1);
    assert_eq!(q.earliest(), Some((1, v(0, 0))));
    q.set(v(u16::MAX, 31), Some(0)).unwrap();
    assert_eq!(q.pop_due(0), Some(v(u16::MAX, 31)));
    check(&q).unwrap();
}

#[test]
fn set_grows_the_index_for_a_new_slot() {
    let mut q = TimerQueue::new();
    q.set(v(10, 3), Some(1)).unwrap();
    assert_eq!(
        q.allocations()[1],
        11 * VCPU_STRIDE * core::mem::size_of::<u32>()
    );
    q.set(v(2, 0), Some(0)).unwrap();
    assert_eq!(q.earliest(), Some((0, v(2, 0))));
    check(&q).unwrap();
}

#[derive(Clone, Debug)]
enum Op {
    Set(VcpuRef, Option<u64>),
    PopDue(u64),
    RemoveSlot(u16),
}

fn op() -> impl Strategy<Value = Op> {
    // Few slots, vCPU numbers past the stride now and then, few deadlines (ties).
    let vcpu = (0u16..10, prop_oneof![8 => 0u16..4, 1 => 4u16..34])
        .prop_map(|(slot, vcpu)| VcpuRef { slot, vcpu });
    prop_oneof![
        6 => (vcpu, proptest::option::weighted(0.85, 0u64..64)).prop_map(|(v, d)| Op::Set(v, d)),
        3 => (0u64..80).prop_map(Op::PopDue),
        1 => (0u16..12).prop_map(Op::RemoveSlot),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Random set/remove/pop_due/remove_slot against a map: the same answers, and
    /// the heap and index invariants after every step.
    #[test]
    fn matches_a_map_model(ops in proptest::collection::vec(op(), 1..300)) {
        let mut q = TimerQueue::new();
        let mut model: BTreeMap<(u16, u16), u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Set(w, d) => {
                    let r = q.set(w, d);
                    if usize::from(w.vcpu) >= VCPU_STRIDE {
                        prop_assert_eq!(r, Err(TimerQueueError::VcpuRange));
                    } else {
                        prop_assert_eq!(r, Ok(()));
                        match d {
                            Some(d) => model.insert((w.slot, w.vcpu), d),
                            None => model.remove(&(w.slot, w.vcpu)),
                        };
                    }
                }
                Op::PopDue(now) => {
                    let min = model.values().copied().min();
                    match q.pop_due(now) {
                        Some(w) => {
                            let d = model.remove(&(w.slot, w.vcpu));
                            prop_assert!(d.is_some(), "{:?} popped but absent", w);
                            prop_assert_eq!(d, min);
                            prop_assert!(d.is_some_and(|d| d <= now));
                        }
                        None => prop_assert!(min.is_none_or(|m| m > now)),
                    }
                }
                Op::RemoveSlot(s) => {
                    q.remove_slot(s);
                    model.retain(|&(slot, _), _| slot != s);
                }
            }
            if let Err(e) = check(&q) {
                prop_assert!(false, "{}", e);
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
            match q.earliest() {
                Some((d, w)) => {
                    prop_assert_eq!(Some(d), model.values().copied().min());
                    prop_assert_eq!(model.get(&(w.slot, w.vcpu)), Some(&d));
                }
                None => prop_assert!(model.is_empty()),
            }
            for slot in 0..11u16 {
                for vcpu in 0..5u16 {
                    prop_assert_eq!(
                        q.get(VcpuRef { slot, vcpu }),
                        model.get(&(slot, vcpu)).copied()
                    );
                }
            }
        }
        // Draining pops every entry exactly once, in deadline order.
        let mut last = 0;
        while let Some(w) = q.pop_due(u64::MAX) {
            let d = model.remove(&(w.slot, w.vcpu));
            prop_assert!(d.is_some(), "{:?} popped twice or absent", w);
            let d = d.unwrap_or(0);
            prop_assert!(d >= last);
            last = d;
        }
        prop_assert!(model.is_empty());
        prop_assert!(q.is_empty());
    }
}
