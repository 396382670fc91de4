//! Ring tests: sizes, a single-threaded model check over random interleavings
//! (with wrapping indices), and a two-thread producer/consumer over one page.

use core::sync::atomic::{AtomicU32, Ordering};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use std::vec::Vec;

use proptest::prelude::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::*;
use crate::io::PAGE_WORDS;

#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Req {
    id: u32,
    payload: [u32; 5],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Rsp {
    id: u32,
    status: u32,
}

fn page() -> [AtomicU32; PAGE_WORDS] {
    core::array::from_fn(|_| AtomicU32::new(0xA5A5_A5A5))
}

/// Move an initialised header to index `start`, as a resumed ring would be.
fn set_indices(p: &[AtomicU32], start: u32) {
    let next = start.wrapping_add(1);
    for (w, v) in p.iter().zip([start, next, start, next]) {
        w.store(v, Ordering::Relaxed);
    }
}

fn request(id: u32) -> Req {
    Req {
        id,
        payload: [id ^ 1, id ^ 2, id ^ 3, id ^ 4, id ^ 5],
    }
}

fn response(id: u32) -> Rsp {
    Rsp { id, status: !id }
}

#[test]
fn sizes() {
    assert_eq!(entry_size::<Req, Rsp>(), 24);
    assert_eq!(ring_size(4096, 112), 32);
    assert_eq!(ring_size(4096, 12), 256);
    assert_eq!(ring_size(4096, 8), 256);
    assert_eq!(ring_size(4096, 24), 128);
    assert_eq!(ring_size(8192, 112), 64);
    assert_eq!(ring_size(64, 8), 0);
    assert_eq!(ring_size(100, 8), 4);
}

#[test]
fn init_writes_header() {
    let p = page();
    let f = FrontRing::<Req, Rsp>::init(&p).unwrap();
    assert_eq!(f.size(), 128);
    let words: Vec<u32> = p[..16].iter().map(|w| w.load(Ordering::Relaxed)).collect();
    assert_eq!(&words[..4], &[0, 1, 0, 1]);
    assert!(words[4..].iter().all(|&w| w == 0));
}

#[test]
fn page_too_small() {
    let p: [AtomicU32; 16] = Default::default();
    assert!(matches!(
        FrontRing::<Req, Rsp>::init(&p),
        Err(RingError::PageTooSmall)
    ));
    assert!(matches!(
        BackRing::<Req, Rsp>::new(&p[..3]),
        Err(RingError::PageTooSmall)
    ));
}

#[test]
fn hostile_indices_are_errors() {
    let p = page();
    let mut f = FrontRing::<Req, Rsp>::init(&p).unwrap();
    let mut b = BackRing::<Req, Rsp>::new(&p).unwrap();
    // A back end claiming responses to requests never made.
    p[2].store(5, Ordering::Relaxed);
    assert_eq!(f.take_response(), Err(RingError::Overflow));
    assert_eq!(f.final_check_for_responses(), Err(RingError::Overflow));
    // A front end claiming more requests than the ring holds.
    p[0].store(129, Ordering::Relaxed);
    assert_eq!(b.take_request(), Err(RingError::Overflow));
    // Answering nothing is refused.
    assert_eq!(b.put_response(&response(0)), Err(RingError::NoRequest));
}

#[derive(Clone, Debug)]
enum Op {
    FrontPut(u8),
    FrontPush,
    FrontTake(u8),
    FrontFinalCheck,
    BackTake(u8),
    BackRespond(u8),
    BackPush,
    BackFinalCheck,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..40).prop_map(Op::FrontPut),
        Just(Op::FrontPush),
        (0u8..40).prop_map(Op::FrontTake),
        Just(Op::FrontFinalCheck),
        (0u8..40).prop_map(Op::BackTake),
        (0u8..40).prop_map(Op::BackRespond),
        Just(Op::BackPush),
        Just(Op::BackFinalCheck),
    ]
}

/// What each side has done, as counts from the start index, plus the event
/// indices the model expects in the shared header.
struct Model {
    put: u32,
    pushed_reqs: u32,
    taken_reqs: u32,
    responded: u32,
    pushed_rsps: u32,
    taken_rsps: u32,
    req_event: u32,
    rsp_event: u32,
    back_waiting: bool,
    front_waiting: bool,
}

proptest! {
    #[test]
    fn single_thread_interleavings(
        start in prop_oneof![Just(0u32), Just(u32::MAX - 40), any::<u32>()],
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        let p = page();
        // Start anywhere, to exercise index wrap-around.
        FrontRing::<Req, Rsp>::init(&p).unwrap();
        set_indices(&p, start);
        let mut f = FrontRing::<Req, Rsp>::attach(&p, start).unwrap();
        let mut b = BackRing::<Req, Rsp>::attach(&p, start).unwrap();
        let size = f.size();
        let mut m = Model {
            put: 0, pushed_reqs: 0, taken_reqs: 0, responded: 0, pushed_rsps: 0, taken_rsps: 0,
            req_event: start.wrapping_add(1), rsp_event: start.wrapping_add(1),
            back_waiting: false, front_waiting: false,
        };
        let mut in_flight: VecDeque<u32> = VecDeque::new();
        for op in ops {
            match op {
                Op::FrontPut(n) => {
                    for _ in 0..n {
                        let outstanding = m.put - m.taken_rsps;
                        let id = start.wrapping_add(m.put);
                        let r = f.put_request(&request(id));
                        if outstanding == size {
                            prop_assert_eq!(r, Err(RingError::Full));
                            prop_assert!(f.is_full());
                        } else {
                            prop_assert_eq!(r, Ok(()));
                            m.put += 1;
                        }
                        prop_assert_eq!(f.free_requests(), size - (m.put - m.taken_rsps));
                    }
                }
                Op::FrontPush => {
                    let old = start.wrapping_add(m.pushed_reqs);
                    let new = start.wrapping_add(m.put);
                    let notify = f.push_requests();
                    let expect = new.wrapping_sub(m.req_event) < new.wrapping_sub(old);
                    prop_assert_eq!(notify, expect);
                    if m.back_waiting && new != old {
                        prop_assert!(notify, "a waiting back end must be woken");
                        m.back_waiting = false;
                    }
                    m.pushed_reqs = m.put;
                }
                Op::BackTake(n) => {
                    for _ in 0..n {
                        let got = b.take_request().unwrap();
                        if m.taken_reqs == m.pushed_reqs {
                            prop_assert_eq!(got, None);
                        } else {
                            let id = start.wrapping_add(m.taken_reqs);
                            prop_assert_eq!(got, Some(request(id)));
                            in_flight.push_back(id);
                            m.taken_reqs += 1;
                            m.back_waiting = false;
                        }
                    }
                }
                Op::BackRespond(n) => {
                    for _ in 0..n {
                        let r = b.put_response(&response(start.wrapping_add(m.responded)));
                        match in_flight.pop_front() {
                            Some(id) => {
                                prop_assert_eq!(id, start.wrapping_add(m.responded));
                                prop_assert_eq!(r, Ok(()));
                                m.responded += 1;
                            }
                            None => prop_assert_eq!(r, Err(RingError::NoRequest)),
                        }
                    }
                }
                Op::BackPush => {
                    let old = start.wrapping_add(m.pushed_rsps);
                    let new = start.wrapping_add(m.responded);
                    let notify = b.push_responses();
                    let expect = new.wrapping_sub(m.rsp_event) < new.wrapping_sub(old);
                    prop_assert_eq!(notify, expect);
                    if m.front_waiting && new != old {
                        prop_assert!(notify, "a waiting front end must be woken");
                        m.front_waiting = false;
                    }
                    m.pushed_rsps = m.responded;
                }
                Op::FrontTake(n) => {
                    for _ in 0..n {
                        let got = f.take_response().unwrap();
                        if m.taken_rsps == m.pushed_rsps {
                            prop_assert_eq!(got, None);
                        } else {
                            prop_assert_eq!(got, Some(response(start.wrapping_add(m.taken_rsps))));
                            m.taken_rsps += 1;
                            m.front_waiting = false;
                        }
                    }
                }
                Op::FrontFinalCheck => {
                    let work = f.final_check_for_responses().unwrap();
                    prop_assert_eq!(work, m.pushed_rsps != m.taken_rsps);
                    if !work {
                        m.rsp_event = start.wrapping_add(m.taken_rsps).wrapping_add(1);
                        m.front_waiting = true;
                    }
                }
                Op::BackFinalCheck => {
                    let work = b.final_check_for_requests().unwrap();
                    prop_assert_eq!(work, m.pushed_reqs != m.taken_reqs);
                    if !work {
                        m.req_event = start.wrapping_add(m.taken_reqs).wrapping_add(1);
                        m.back_waiting = true;
                    }
                }
            }
            // The shared header always matches the model.
            prop_assert_eq!(p[0].load(Ordering::Relaxed), start.wrapping_add(m.pushed_reqs));
            prop_assert_eq!(p[1].load(Ordering::Relaxed), m.req_event);
            prop_assert_eq!(p[2].load(Ordering::Relaxed), start.wrapping_add(m.pushed_rsps));
            prop_assert_eq!(p[3].load(Ordering::Relaxed), m.rsp_event);
            prop_assert_eq!(b.unconsumed_requests().unwrap(), m.pushed_reqs - m.taken_reqs);
            prop_assert_eq!(f.unconsumed_responses().unwrap(), m.pushed_rsps - m.taken_rsps);
        }
    }
}

/// A doorbell standing in for an event channel.
struct Bell(AtomicU32);

impl Bell {
    fn ring(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }

    fn seen(&self) -> u32 {
        self.0.load(Ordering::SeqCst)
    }

    /// Wait until the bell rings after `seen`; a lost notification hangs,
    /// so give up loudly.
    fn wait(&self, seen: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.load(Ordering::SeqCst) == seen {
            assert!(
                Instant::now() < deadline,
                "lost wakeup: slept with work pending"
            );
            std::thread::yield_now();
        }
    }
}

fn run_two_threads(total: u32, batch: u32, start: u32) {
    let p = page();
    FrontRing::<Req, Rsp>::init(&p).unwrap();
    set_indices(&p, start);
    let mut f = FrontRing::<Req, Rsp>::attach(&p, start).unwrap();
    let to_back = Bell(AtomicU32::new(0));
    let to_front = Bell(AtomicU32::new(0));

    std::thread::scope(|s| {
        let back = s.spawn(|| {
            let mut b = BackRing::<Req, Rsp>::attach(&p, start).unwrap();
            let mut answered = 0u32;
            while answered < total {
                let seen = to_back.seen();
                let mut did = false;
                while let Some(req) = b.take_request().unwrap() {
                    assert_eq!(
                        req,
                        request(start.wrapping_add(answered)),
                        "request lost or duplicated"
                    );
                    b.put_response(&response(req.id)).unwrap();
                    answered += 1;
                    did = true;
                }
                if did {
                    if b.push_responses() {
                        to_front.ring();
                    }
                } else if !b.final_check_for_requests().unwrap() {
                    to_back.wait(seen);
                }
            }
            answered
        });

        let mut sent = 0u32;
        let mut received = 0u32;
        while received < total {
            let seen = to_front.seen();
            let mut progress = false;
            let mut queued = 0;
            while sent < total && queued < batch && !f.is_full() {
                f.put_request(&request(start.wrapping_add(sent))).unwrap();
                sent += 1;
                queued += 1;
            }
            if queued > 0 {
                progress = true;
                if f.push_requests() {
                    to_back.ring();
                }
            }
            while let Some(rsp) = f.take_response().unwrap() {
                assert_eq!(
                    rsp,
                    response(start.wrapping_add(received)),
                    "response lost or duplicated"
                );
                received += 1;
                progress = true;
            }
            if !progress && !f.final_check_for_responses().unwrap() {
                to_front.wait(seen);
            }
        }
        assert_eq!(back.join().unwrap(), total);
    });
}

#[test]
fn two_threads_full_ring() {
    // Batches larger than the ring force the full path.
    run_two_threads(20_000, 1000, 0);
}

#[test]
fn two_threads_wrapping() {
    run_two_threads(5_000, 7, u32::MAX - 2_000);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    #[test]
    fn two_threads(total in 1u32..4000, batch in 1u32..300, start in any::<u32>()) {
        run_two_threads(total, batch, start);
    }
}
