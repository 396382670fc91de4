//! `memory_op` driven as a guest drives it (typed wrapper -> registers -> handler), on
//! the fake platform: reservations with their limits, partial counts and continuations,
//! foreign domains, the information sub-ops, the memory maps and the exchange.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::mm::frame_table::PageType;
use crate::mm::page_type::{get_page, get_page_and_type, put_page, put_page_and_type};
use crate::testutil::*;
use crate::traps::Outcome;
use hypercall_abi::hypercall as hc;
use hypercall_abi::memory::{
    E820_RAM, E820_RESERVED, XenForeignMemoryMap, memop_cmd, xenmemf_node,
};
use proptest::prelude::*;
use std::collections::BTreeSet;

/// The extent list (room for 2016 entries before [`ARG`]).
const LIST: u64 = KDATA;
/// The argument structure.
const ARG: u64 = KDATA + 0x3F00;
/// First frame of the default allocator pool.
const POOL: u64 = 0x100;

/// dom`id` with `max_pages` and a pool of 256 frames at [`POOL`].
fn world(id: u16, privileged: bool, max_pages: u64) -> World {
    let mut w = World::new(id, privileged);
    w.dom.max_pages = max_pages;
    w.p.pool.extend(POOL..POOL + 256);
    w
}

fn resv(list: u64, nr: u64, order: u32, flags: u32, domid: DomId) -> XenMemoryReservation {
    XenMemoryReservation {
        extent_start: ptr(list),
        nr_extents: nr,
        extent_order: order,
        mem_flags: flags,
        domid,
        _pad: [0; 3],
    }
}

/// One `memory_op(op | start << 6, arg)` as the guest issues it.
fn call(w: &mut World, op: XenmemOp, start: u64, arg: u64) -> Result<u64, Errno> {
    hc::memory_op(w, memop_cmd(op) | (start << MEMOP_EXTENT_SHIFT), ptr(arg))
}

/// Places `r` at [`ARG`] and calls `op`, following continuations; returns the final
/// result and how many invocations it took.
fn run(w: &mut World, op: XenmemOp, r: &XenMemoryReservation) -> (Result<u64, Errno>, u32) {
    w.p.poke_obj(ARG, r);
    let mut rc = call(w, op, 0, ARG);
    let mut calls = 1;
    while w.outcome == Outcome::RegsReplaced {
        rc = Errno::decode(reissue(w));
        calls += 1;
    }
    (rc, calls)
}

fn put_list(w: &mut World, items: &[u64]) {
    for (i, v) in items.iter().enumerate() {
        w.p.poke_obj(LIST + 8 * i as u64, v);
    }
}

fn list(w: &World, n: usize) -> Vec<u64> {
    w.p.peek_u64s(LIST, n)
}

/// Frames the frame table gives to `dom`.
fn owned(w: &World, dom: u16) -> Vec<u64> {
    w.p.mm
        .ft
        .frames()
        .iter()
        .enumerate()
        .filter(|(_, f)| f.owner() == Owner::Domain(DomId(dom)))
        .map(|(i, _)| i as u64)
        .collect()
}

fn m2p(w: &World, mfn: u64) -> u64 {
    w.p.mm.m2p.get(Mfn(mfn))
}

/// Populates `pfns` (order 0) for the caller; returns the MFNs.
fn populate(w: &mut World, pfns: &[u64]) -> Vec<u64> {
    put_list(w, pfns);
    let r = resv(LIST, pfns.len() as u64, 0, 0, DomId::SELF);
    assert_eq!(
        run(w, XenmemOp::PopulatePhysmap, &r).0,
        Ok(pfns.len() as u64)
    );
    list(w, pfns.len())
}

fn decrease(w: &mut World, mfns: &[u64], order: u32) -> Result<u64, Errno> {
    put_list(w, mfns);
    let r = resv(LIST, mfns.len() as u64, order, 0, DomId::SELF);
    run(w, XenmemOp::DecreaseReservation, &r).0
}

// ---------------------------------------------------------------------------------------
// populate_physmap / increase_reservation
// ---------------------------------------------------------------------------------------

#[test]
fn populate_allocates_assigns_zeroes_and_writes_m2p_and_mfns() {
    let mut w = world(1, false, 16);
    // Stale contents in the frames the allocator will hand out.
    for f in POOL..POOL + 4 {
        w.p.mm.mem.frames.insert(f, Box::new([0xDEAD; 512]));
    }
    let mfns = populate(&mut w, &[10, 11, 200]);
    assert_eq!(w.dom.tot_pages, 3);
    assert_eq!(owned(&w, 1), mfns);
    for (&mfn, pfn) in mfns.iter().zip([10, 11, 200]) {
        assert_eq!(m2p(&w, mfn), pfn);
        assert!(
            w.p.mm.mem.frames[&mfn].iter().all(|&e| e == 0),
            "frame zeroed"
        );
        assert!(!w.p.pool.contains(&mfn));
    }
}

#[test]
fn populate_order_one_gives_aligned_runs_and_consecutive_m2p() {
    let mut w = world(1, false, 16);
    w.p.pool.remove(&POOL); // the first aligned pair is now POOL + 2
    put_list(&mut w, &[40, 60]);
    let r = resv(LIST, 2, 1, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(2));
    let mfns = list(&w, 2);
    assert_eq!(mfns, [POOL + 2, POOL + 4]);
    assert_eq!(w.dom.tot_pages, 4);
    assert_eq!(
        [m2p(&w, mfns[0]), m2p(&w, mfns[0] + 1), m2p(&w, mfns[1] + 1)],
        [40, 41, 61]
    );
}

#[test]
fn max_pages_stops_the_batch_with_a_partial_count() {
    let mut w = world(1, false, 2);
    put_list(&mut w, &[1, 2, 3, 4, 5]);
    let r = resv(LIST, 5, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(2));
    assert_eq!(w.dom.tot_pages, 2);
    assert_eq!(
        list(&w, 5)[2..],
        [3, 4, 5],
        "entries not done stay as they were"
    );
    // An order-1 extent does not fit in what is left either.
    w.dom.max_pages = 3;
    let r = resv(LIST, 1, 1, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
    assert_eq!((w.dom.tot_pages, owned(&w, 1).len()), (2, 2));
}

#[test]
fn running_out_of_memory_stops_the_batch() {
    let mut w = world(1, false, 100);
    w.p.pool = (POOL..POOL + 2).collect();
    put_list(&mut w, &[1, 2, 3]);
    let r = resv(LIST, 3, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(2));
    assert_eq!(w.dom.tot_pages, 2);
}

#[test]
fn increase_reservation_writes_mfns_leaves_m2p_invalid_and_accepts_a_null_list() {
    let mut w = world(1, false, 16);
    put_list(&mut w, &[7, 7]);
    let r = resv(LIST, 2, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::IncreaseReservation, &r).0, Ok(2));
    let mfns = list(&w, 2);
    assert_eq!(owned(&w, 1), mfns);
    assert!(mfns.iter().all(|&m| m2p(&w, m) == INVALID_M2P_ENTRY));
    let r = resv(0, 3, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::IncreaseReservation, &r).0, Ok(3));
    assert_eq!((w.dom.tot_pages, owned(&w, 1).len()), (5, 5));
    // populate_physmap needs its list.
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
}

#[test]
fn an_unwritable_list_entry_gives_the_extent_back() {
    let mut w = world(1, false, 16);
    w.p.map(UNMAPPED, 0x1000, Perm::ReadOnly);
    let r = resv(UNMAPPED, 2, 0, 0, DomId::SELF);
    for op in [XenmemOp::PopulatePhysmap, XenmemOp::IncreaseReservation] {
        assert_eq!(run(&mut w, op, &r).0, Ok(0), "{op:?}");
        assert_eq!(w.dom.tot_pages, 0);
        assert!(owned(&w, 1).is_empty());
        assert_eq!(w.p.pool.len(), 256, "frames back in the allocator");
    }
}

#[test]
fn an_unreadable_list_stops_populate_and_decrease() {
    let mut w = world(1, false, 16);
    let r = resv(UNMAPPED, 2, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
    assert_eq!(run(&mut w, XenmemOp::DecreaseReservation, &r).0, Ok(0));
    // Half readable: the first entry is the last page's last qword.
    w.p.map(UNMAPPED - 0x1000, 0x1000, Perm::ReadWrite);
    w.p.poke_obj(UNMAPPED - 8, &5u64);
    let r = resv(UNMAPPED - 8, 2, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    assert_eq!(w.dom.tot_pages, 1);
}

#[test]
fn orders_beyond_the_callers_limit_do_nothing() {
    let mut w = world(1, false, 1 << 12);
    w.p.pool.extend(0x400..0x800);
    let r = resv(LIST, 1, DOMU_MAX_ORDER + 1, 0, DomId::SELF);
    for op in [
        XenmemOp::PopulatePhysmap,
        XenmemOp::IncreaseReservation,
        XenmemOp::DecreaseReservation,
    ] {
        assert_eq!(run(&mut w, op, &r).0, Ok(0), "{op:?}");
    }
    assert_eq!(w.dom.tot_pages, 0);
    // The control domain may use order 10 (up to 18).
    let mut w = world(0, true, 1 << 12);
    w.p.pool.extend(0x400..0x800);
    put_list(&mut w, &[0]);
    let r = resv(LIST, 1, 10, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    assert_eq!((list(&w, 1)[0], w.dom.tot_pages), (0x400, 1024));
    let r = resv(LIST, 1, CTLDOM_MAX_ORDER + 1, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
}

#[test]
fn refused_reservations_return_the_start_extent() {
    let mut w = world(1, false, 16);
    put_list(&mut w, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let check = |w: &mut World, r: XenMemoryReservation, what: &str| {
        w.p.poke_obj(ARG, &r);
        for op in [
            XenmemOp::IncreaseReservation,
            XenmemOp::DecreaseReservation,
            XenmemOp::PopulatePhysmap,
        ] {
            assert_eq!(call(w, op, 0, ARG), Ok(0), "{what} {op:?}");
            assert_eq!(call(w, op, 5, ARG), Ok(5), "{what} {op:?} from 5");
            assert_eq!(w.outcome, Outcome::Resume);
        }
        assert_eq!(w.dom.tot_pages, 0, "{what}");
    };
    check(
        &mut w,
        resv(LIST, 1 << 26, 0, 0, DomId::SELF),
        "too many to continue",
    );
    check(&mut w, resv(LIST, 8, 0, 12, DomId::SELF), "address_bits 12");
    check(&mut w, resv(LIST, 8, 0, 1, DomId::SELF), "address_bits 1");
    check(
        &mut w,
        resv(
            LIST,
            8,
            0,
            xenmemf_node(0) | XENMEMF_EXACT_NODE_REQUEST,
            DomId::SELF,
        ),
        "exact node",
    );
    check(&mut w, resv(LIST, 8, 0, 0, DomId(7)), "no such domain");
    check(&mut w, resv(LIST, 8, 0, 0, DomId::XEN), "DOMID_XEN");
    check(
        &mut w,
        resv(NON_GUEST, 8, 0, 0, DomId::SELF),
        "list in the hypervisor's range",
    );
    check(
        &mut w,
        resv(u64::MAX - 8, 8, 0, 0, DomId::SELF),
        "list wraps",
    );
    // Unreadable argument; start extent at or past the end.
    assert_eq!(call(&mut w, XenmemOp::PopulatePhysmap, 3, UNMAPPED), Ok(3));
    w.p.poke_obj(ARG, &resv(LIST, 2, 0, 0, DomId::SELF));
    assert_eq!(call(&mut w, XenmemOp::PopulatePhysmap, 2, ARG), Ok(2));
    assert_eq!(call(&mut w, XenmemOp::PopulatePhysmap, 9, ARG), Ok(9));
    w.p.poke_obj(ARG, &resv(LIST, 0, 0, 0, DomId::SELF));
    assert_eq!(call(&mut w, XenmemOp::PopulatePhysmap, 0, ARG), Ok(0));
    assert_eq!(w.dom.tot_pages, 0);
}

/// Start of the hypervisor's range: never guest memory.
const NON_GUEST: u64 = 0xFFFF_8000_0000_0000;

#[test]
fn a_node_without_exact_request_is_ignored_and_the_privileged_may_name_node_0() {
    let mut w = world(1, false, 16);
    put_list(&mut w, &[1]);
    let r = resv(LIST, 1, 0, xenmemf_node(3), DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    let mut w = world(0, true, 16);
    put_list(&mut w, &[1]);
    let exact = |n| xenmemf_node(n) | XENMEMF_EXACT_NODE_REQUEST;
    let r = resv(LIST, 1, 0, exact(0), DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    for flags in [exact(1), xenmemf_node(64)] {
        let r = resv(LIST, 1, 0, flags, DomId::SELF);
        assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
    }
    // vNUMA flag: no vNUMA, the node is ignored.
    let r = resv(LIST, 1, 0, exact(5) | XENMEMF_VNODE, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
}

#[test]
fn address_bits_limit_the_frames() {
    let mut w = world(1, false, 16);
    w.p.max_page = 1 << 20; // 4 GiB of RAM: 32 address bits
    put_list(&mut w, &[1, 2]);
    // 20 bits = frames below 0x100: the pool starts at 0x100.
    let r = resv(LIST, 2, 0, 20, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(0));
    w.p.pool.insert(0x80);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    assert_eq!(list(&w, 1)[0], 0x80);
    // At or above the width of RAM: no limit.
    let r = resv(LIST, 1, 0, 32, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    assert_eq!(list(&w, 1)[0], POOL);
}

#[test]
fn long_batches_continue_with_the_start_extent_in_cmd() {
    let mut w = world(1, false, 1000);
    w.p.pool.extend(0x200..0x400);
    let pfns: Vec<u64> = (0..600).collect();
    put_list(&mut w, &pfns);
    w.p.poke_obj(ARG, &resv(LIST, 600, 0, 0, DomId::SELF));
    let rax = call(&mut w, XenmemOp::PopulatePhysmap, 0, ARG);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(rax, Ok(u64::from(Hypercall::MemoryOp.nr())));
    assert_eq!(w.regs.rip, KRIP, "rewound onto the syscall");
    let (nr, args) = w.regs.hypercall_args();
    assert_eq!(nr, u64::from(Hypercall::MemoryOp.nr()));
    assert_eq!(
        args[0],
        memop_cmd(XenmemOp::PopulatePhysmap) | (WORK_PER_CALL << 6)
    );
    assert_eq!(args[1], ARG);
    assert_eq!(w.dom.tot_pages, WORK_PER_CALL);
    assert_eq!(Errno::decode(reissue(&mut w)), Ok(600));
    assert_eq!(w.outcome, Outcome::Resume);
    let mfns = list(&w, 600);
    assert_eq!(w.dom.tot_pages, 600);
    assert!(mfns.iter().zip(0..).all(|(&m, p)| m2p(&w, m) == p));
    // decrease continues the same way.
    put_list(&mut w, &mfns);
    let r = resv(LIST, 600, 0, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::DecreaseReservation, &r), (Ok(600), 2));
    assert_eq!(w.dom.tot_pages, 0);
    // A guest restarting from extent 598 by hand redoes only the rest.
    put_list(&mut w, &pfns);
    w.p.poke_obj(ARG, &resv(LIST, 600, 0, 0, DomId::SELF));
    assert_eq!(call(&mut w, XenmemOp::PopulatePhysmap, 598, ARG), Ok(600));
    assert_eq!(w.dom.tot_pages, 2);
}

#[test]
fn a_large_extent_is_one_call_and_then_the_batch_continues() {
    let mut w = world(0, true, 1 << 12);
    w.p.pool.extend(0x400..0xC00);
    put_list(&mut w, &[0, 1024]);
    w.p.poke_obj(ARG, &resv(LIST, 2, 10, 0, DomId::SELF));
    call(&mut w, XenmemOp::PopulatePhysmap, 0, ARG).unwrap();
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(w.dom.tot_pages, 1024);
    assert_eq!(Errno::decode(reissue(&mut w)), Ok(2));
}

// ---------------------------------------------------------------------------------------
// decrease_reservation
// ---------------------------------------------------------------------------------------

#[test]
fn decrease_frees_the_frames_clears_m2p_and_flushes_before_reuse() {
    let mut w = world(1, false, 16);
    let mfns = populate(&mut w, &[1, 2, 3]);
    assert_eq!(decrease(&mut w, &[mfns[0], mfns[2]], 0), Ok(2));
    assert_eq!(w.dom.tot_pages, 1);
    assert_eq!(owned(&w, 1), [mfns[1]]);
    assert_eq!(w.p.freed, [(mfns[0], 1), (mfns[2], 1)]);
    assert!(w.p.pool.contains(&mfns[0]) && w.p.pool.contains(&mfns[2]));
    assert_eq!(m2p(&w, mfns[0]), INVALID_M2P_ENTRY);
    assert_eq!(m2p(&w, mfns[1]), 2);
    // Freed frames come back.
    let again = populate(&mut w, &[9]);
    assert_eq!(again, [mfns[0]]);
}

#[test]
fn decrease_of_an_order_one_extent_is_all_or_nothing() {
    let mut w = world(1, false, 16);
    put_list(&mut w, &[0]);
    let r = resv(LIST, 1, 1, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    let base = list(&w, 1)[0];
    w.p.mm(DomId(1), false, |m| get_page(m, Mfn(base + 1), DomId(1)))
        .unwrap();
    assert_eq!(decrease(&mut w, &[base], 1), Ok(0));
    assert_eq!(owned(&w, 1), [base, base + 1], "neither frame freed");
    w.p.mm(DomId(1), false, |m| put_page(m, Mfn(base + 1)));
    assert_eq!(decrease(&mut w, &[base], 1), Ok(1));
    assert!(owned(&w, 1).is_empty());
    assert_eq!(w.p.freed, [(base, 2)]);
}

#[test]
fn decrease_stops_at_a_frame_still_mapped_typed_or_not_the_domains() {
    let mut w = world(1, false, 16);
    let mfns = populate(&mut w, &[1, 2, 3, 4]);
    let d1 = DomId(1);
    // Mapped (a general reference) and typed as a page table (validated L1).
    w.p.mm(d1, false, |m| get_page(m, Mfn(mfns[1]), d1))
        .unwrap();
    w.p.mm(d1, false, |m| {
        get_page_and_type(m, Mfn(mfns[2]), d1, PageType::L1)
    })
    .unwrap();
    assert_eq!(decrease(&mut w, &[mfns[0], mfns[1], mfns[3]], 0), Ok(1));
    assert_eq!(decrease(&mut w, &[mfns[2]], 0), Ok(0));
    assert_eq!(w.dom.tot_pages, 3);
    assert_eq!(owned(&w, 1), mfns[1..].to_vec());
    // Not the domain's: free, another domain's, the hypervisor's shared_info, outside
    // the frame table, wrapping.
    w.p.mm
        .ft
        .assign(Mfn(0x50), Owner::Domain(DomId(2)))
        .unwrap();
    w.p.mm.ft.assign(Mfn(0x51), Owner::XenShared(d1)).unwrap();
    for bad in [0x40, 0x50, 0x51, 4096, u64::MAX] {
        assert_eq!(decrease(&mut w, &[bad], 0), Ok(0), "{bad:#x}");
    }
    assert_eq!(decrease(&mut w, &[u64::MAX], 1), Ok(0));
    // Once the references are gone the frames go.
    w.p.mm(d1, false, |m| {
        put_page(m, Mfn(mfns[1]));
        put_page_and_type(m, Mfn(mfns[2]));
    });
    assert_eq!(decrease(&mut w, &[mfns[1], mfns[2], mfns[3]], 0), Ok(3));
    assert_eq!((w.dom.tot_pages, owned(&w, 1).len()), (0, 0));
    assert_eq!(w.p.pool.len(), 256);
}

// ---------------------------------------------------------------------------------------
// Foreign domains
// ---------------------------------------------------------------------------------------

/// dom0 (privileged) with dom2 existing (`max_pages` 8).
fn with_dom2() -> World {
    let mut w = world(0, true, 16);
    let mut d2 = Domain::new(DomId(2), false, Mfn(0x98));
    d2.max_pages = 8;
    w.p.others.insert(2, d2);
    w
}

#[test]
fn a_privileged_caller_populates_and_decreases_another_domain() {
    let mut w = with_dom2();
    put_list(&mut w, &[0, 1, 2]);
    let r = resv(LIST, 3, 0, 0, DomId(2));
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(3));
    let mfns = list(&w, 3);
    assert_eq!(owned(&w, 2), mfns);
    assert_eq!(w.p.others[&2].tot_pages, 3);
    assert_eq!(w.dom.tot_pages, 0, "the caller is not charged");
    // Its max_pages applies.
    let r = resv(LIST, 8, 0, 0, DomId(2));
    assert_eq!(run(&mut w, XenmemOp::IncreaseReservation, &r).0, Ok(5));
    assert_eq!(w.p.others[&2].tot_pages, 8);
    // The caller's own frames cannot be freed as dom2's, and vice versa.
    let mine = populate(&mut w, &[0]);
    put_list(&mut w, &[mine[0]]);
    let r = resv(LIST, 1, 0, 0, DomId(2));
    assert_eq!(run(&mut w, XenmemOp::DecreaseReservation, &r).0, Ok(0));
    assert_eq!(decrease(&mut w, &[mfns[0]], 0), Ok(0));
    put_list(&mut w, &mfns);
    let r = resv(LIST, 3, 0, 0, DomId(2));
    assert_eq!(run(&mut w, XenmemOp::DecreaseReservation, &r).0, Ok(3));
    assert_eq!(w.p.others[&2].tot_pages, 5);
    assert_eq!(owned(&w, 2).len(), 5);
}

#[test]
fn an_unprivileged_caller_cannot_name_another_domain() {
    let mut w = with_dom2();
    w.dom.privileged = false;
    put_list(&mut w, &[0]);
    let r = resv(LIST, 1, 0, 0, DomId(2));
    for op in [XenmemOp::PopulatePhysmap, XenmemOp::IncreaseReservation] {
        assert_eq!(run(&mut w, op, &r).0, Ok(0));
    }
    assert_eq!(w.p.others[&2].tot_pages, 0);
    w.p.poke_obj(ARG, &XenMemoryDomain { domid: DomId(2) });
    assert_eq!(
        call(&mut w, XenmemOp::CurrentReservation, 0, ARG),
        Err(Errno::EPERM)
    );
    w.p.poke_obj(ARG, &XenMemoryDomain { domid: DomId(3) });
    assert_eq!(
        call(&mut w, XenmemOp::CurrentReservation, 0, ARG),
        Err(Errno::ESRCH)
    );
}

// ---------------------------------------------------------------------------------------
// Reservation queries, maximum_ram_page, maximum_gpfn
// ---------------------------------------------------------------------------------------

#[test]
fn reservation_queries_answer_for_self_and_permitted_domains() {
    let mut w = with_dom2();
    w.dom.tot_pages = 5;
    w.p.others.get_mut(&2).unwrap().tot_pages = 3;
    let q = |w: &mut World, op, domid| {
        w.p.poke_obj(ARG, &XenMemoryDomain { domid });
        call(w, op, 0, ARG)
    };
    assert_eq!(q(&mut w, XenmemOp::CurrentReservation, DomId::SELF), Ok(5));
    assert_eq!(q(&mut w, XenmemOp::CurrentReservation, DomId(0)), Ok(5));
    assert_eq!(q(&mut w, XenmemOp::MaximumReservation, DomId::SELF), Ok(16));
    assert_eq!(q(&mut w, XenmemOp::CurrentReservation, DomId(2)), Ok(3));
    assert_eq!(q(&mut w, XenmemOp::MaximumReservation, DomId(2)), Ok(8));
    for op in [XenmemOp::CurrentReservation, XenmemOp::MaximumGpfn] {
        assert_eq!(q(&mut w, op, DomId(9)), Err(Errno::ESRCH));
        assert_eq!(q(&mut w, op, DomId::IO), Err(Errno::ESRCH));
        assert_eq!(call(&mut w, op, 0, UNMAPPED), Err(Errno::EFAULT));
        assert_eq!(call(&mut w, op, 1, ARG), Err(Errno::EINVAL));
    }
}

#[test]
fn maximum_gpfn_is_shared_info_max_pfn_minus_one() {
    let mut w = with_dom2();
    let q = |w: &mut World, domid| {
        w.p.poke_obj(ARG, &XenMemoryDomain { domid });
        call(w, XenmemOp::MaximumGpfn, 0, ARG)
    };
    assert_eq!(q(&mut w, DomId::SELF), Ok(0), "max_pfn unset");
    w.p.mm.mem.write_entry(Mfn(0x99), 3088 / 8, 0x4_0000);
    w.p.mm.mem.write_entry(Mfn(0x98), 3088 / 8, 1);
    assert_eq!(q(&mut w, DomId::SELF), Ok(0x3_FFFF));
    assert_eq!(q(&mut w, DomId(2)), Ok(0));
}

#[test]
fn maximum_ram_page_is_max_page() {
    let mut w = world(1, false, 0);
    w.p.max_page = 0x12345;
    assert_eq!(hc::memory_op(&mut w, 2, GuestPtr::NULL), Ok(0x12345));
    assert_eq!(
        hc::memory_op(&mut w, 2 | 1 << 6, GuestPtr::NULL),
        Err(Errno::EINVAL)
    );
}

// ---------------------------------------------------------------------------------------
// M2P information
// ---------------------------------------------------------------------------------------

#[test]
fn machphys_mapping_gives_the_m2p_window_and_dom0_the_highest_ram_mfn() {
    let mut w = world(1, false, 0);
    w.p.max_page = 0x8_0000;
    assert_eq!(call(&mut w, XenmemOp::MachphysMapping, 0, ARG), Ok(0));
    let m: XenMachphysMapping = w.p.peek_obj(ARG);
    assert_eq!(
        (m.v_start, m.v_end, m.max_mfn),
        (0xFFFF_8000_0000_0000, 0xFFFF_8040_0000_0000, (1 << 35) - 1)
    );
    let mut w = world(0, true, 0);
    w.p.max_page = 0x8_0000;
    assert_eq!(call(&mut w, XenmemOp::MachphysMapping, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMachphysMapping>(ARG).max_mfn, 0x7_FFFF);
    assert_eq!(
        call(&mut w, XenmemOp::MachphysMapping, 1, ARG),
        Err(Errno::ENOSYS)
    );
    w.p.protect(ARG, Perm::ReadOnly);
    assert_eq!(
        call(&mut w, XenmemOp::MachphysMapping, 0, ARG),
        Err(Errno::EFAULT)
    );
}

#[test]
fn machphys_mfn_list_writes_up_to_max_extents_chunk_mfns() {
    let mut w = world(1, false, 0);
    w.p.m2p_chunks = vec![0x1000, 0x1200, 0x1400];
    let l = |max| XenMachphysMfnList {
        max_extents: max,
        _pad0: 0,
        extent_start: ptr(LIST),
        nr_extents: 0xAAAA,
        _pad1: 0,
    };
    put_list(&mut w, &[7, 7, 7, 7]);
    w.p.poke_obj(ARG, &l(2));
    assert_eq!(call(&mut w, XenmemOp::MachphysMfnList, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMachphysMfnList>(ARG).nr_extents, 2);
    assert_eq!(list(&w, 4), [0x1000, 0x1200, 7, 7]);
    w.p.poke_obj(ARG, &l(10));
    assert_eq!(call(&mut w, XenmemOp::MachphysMfnList, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMachphysMfnList>(ARG).nr_extents, 3);
    assert_eq!(list(&w, 4), [0x1000, 0x1200, 0x1400, 7]);
    assert_eq!(
        call(&mut w, XenmemOp::MachphysMfnList, 1, ARG),
        Err(Errno::ENOSYS)
    );
    assert_eq!(
        call(&mut w, XenmemOp::MachphysMfnList, 0, UNMAPPED),
        Err(Errno::EFAULT)
    );
    let mut bad = l(10);
    bad.extent_start = ptr(UNMAPPED);
    w.p.poke_obj(ARG, &bad);
    assert_eq!(
        call(&mut w, XenmemOp::MachphysMfnList, 0, ARG),
        Err(Errno::EFAULT)
    );
}

// ---------------------------------------------------------------------------------------
// Memory maps
// ---------------------------------------------------------------------------------------

fn e820(addr: u64, size: u64, type_: u32) -> E820Entry {
    E820Entry { addr, size, type_ }
}

fn map_arg(nr: u32, buffer: u64) -> XenMemoryMap {
    XenMemoryMap {
        nr_entries: nr,
        _pad: 0,
        buffer: ptr(buffer),
    }
}

#[test]
fn memory_map_is_enosys_until_the_toolstack_sets_one() {
    for (id, privileged) in [(1, false), (0, true)] {
        let mut w = world(id, privileged, 0);
        w.p.poke_obj(ARG, &map_arg(8, LIST));
        assert_eq!(
            call(&mut w, XenmemOp::MemoryMap, 0, ARG),
            Err(Errno::ENOSYS)
        );
        w.dom.memory_map = Some(heapless::Vec::new());
        assert_eq!(
            call(&mut w, XenmemOp::MemoryMap, 0, ARG),
            Err(Errno::ENOSYS)
        );
    }
}

#[test]
fn memory_map_copies_at_most_the_capacity() {
    let mut w = world(1, false, 0);
    let entries = [
        e820(0, 0x800_0000, E820_RAM),
        e820(0xFEE0_0000, 0x1000, E820_RESERVED),
    ];
    w.dom.memory_map = Some(heapless::Vec::from_slice(&entries).unwrap());
    w.p.poke_obj(ARG, &map_arg(1, LIST));
    assert_eq!(call(&mut w, XenmemOp::MemoryMap, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMemoryMap>(ARG).nr_entries, 1);
    assert_eq!(w.p.peek_obj::<E820Entry>(LIST), entries[0]);
    assert_eq!(w.p.peek_obj::<E820Entry>(LIST + 20), E820Entry::default());
    w.p.poke_obj(ARG, &map_arg(8, LIST));
    assert_eq!(call(&mut w, XenmemOp::MemoryMap, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMemoryMap>(ARG).nr_entries, 2);
    assert_eq!(w.p.peek_obj::<E820Entry>(LIST + 20), entries[1]);
    assert_eq!(
        call(&mut w, XenmemOp::MemoryMap, 0, UNMAPPED),
        Err(Errno::EFAULT)
    );
    w.p.poke_obj(ARG, &map_arg(8, UNMAPPED));
    assert_eq!(
        call(&mut w, XenmemOp::MemoryMap, 0, ARG),
        Err(Errno::EFAULT)
    );
    assert_eq!(
        call(&mut w, XenmemOp::MemoryMap, 1, ARG),
        Err(Errno::ENOSYS)
    );
}

#[test]
fn machine_memory_map_is_privileged_and_wants_room_for_one_more() {
    let host = vec![
        e820(0, 0x9_F000, E820_RAM),
        e820(0x10_0000, 0x7FF0_0000, E820_RAM),
        e820(0xFEC0_0000, 0x1000, E820_RESERVED),
    ];
    let mut w = world(1, false, 0);
    w.p.host_map = host.clone();
    w.p.poke_obj(ARG, &map_arg(8, LIST));
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 0, ARG),
        Err(Errno::EPERM)
    );
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 0, UNMAPPED),
        Err(Errno::EPERM)
    );
    let mut w = world(0, true, 0);
    w.p.host_map = host.clone();
    w.p.poke_obj(ARG, &map_arg(3, LIST));
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 0, ARG),
        Err(Errno::EINVAL)
    );
    w.p.poke_obj(ARG, &map_arg(4, LIST));
    assert_eq!(call(&mut w, XenmemOp::MachineMemoryMap, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMemoryMap>(ARG).nr_entries, 3);
    for (i, e) in host.iter().enumerate() {
        assert_eq!(w.p.peek_obj::<E820Entry>(LIST + 20 * i as u64), *e);
    }
    // A null buffer asks for the count.
    w.p.poke_obj(ARG, &map_arg(0, 0));
    assert_eq!(call(&mut w, XenmemOp::MachineMemoryMap, 0, ARG), Ok(0));
    assert_eq!(w.p.peek_obj::<XenMemoryMap>(ARG).nr_entries, 3);
    // The whole buffer must be guest memory.
    w.p.poke_obj(ARG, &map_arg(4, NON_GUEST - 20));
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 0, ARG),
        Err(Errno::EFAULT)
    );
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 0, UNMAPPED),
        Err(Errno::EFAULT)
    );
    assert_eq!(
        call(&mut w, XenmemOp::MachineMemoryMap, 2, ARG),
        Err(Errno::ENOSYS)
    );
}

// ---------------------------------------------------------------------------------------
// exchange, add_to_physmap, the rest
// ---------------------------------------------------------------------------------------

fn exch(nr_in: u64, in_list: u64, nr_out: u64, out_list: u64, done: u64) -> XenMemoryExchange {
    XenMemoryExchange {
        in_: resv(in_list, nr_in, 0, 0, DomId::SELF),
        out: resv(out_list, nr_out, 0, 0, DomId::SELF),
        nr_exchanged: done,
    }
}

/// Issues an exchange and checks it changed nothing: memory, frames, accounting.
fn exchange_is(w: &mut World, x: XenMemoryExchange, want: Result<u64, Errno>) {
    w.p.poke_obj(ARG, &x);
    let arg_before = w.p.peek(ARG, 72);
    let list_before = w.p.peek(LIST, 0x1000);
    let owned_before = owned(w, w.dom.id.0);
    let pool_before = w.p.pool.clone();
    let tot_before = w.dom.tot_pages;
    let m2p_before: Vec<u64> = owned_before.iter().map(|&f| m2p(w, f)).collect();
    let ft_before = w.p.mm.ft.frames().to_vec();
    assert_eq!(call(w, XenmemOp::Exchange, 0, ARG), want, "{x:?}");
    assert!(
        w.p.mm.ft.frames() == ft_before.as_slice(),
        "frame records changed"
    );
    assert_eq!(w.p.peek(ARG, 72), arg_before);
    assert_eq!(w.p.peek(LIST, 0x1000), list_before);
    assert_eq!(owned(w, w.dom.id.0), owned_before);
    assert_eq!(w.p.pool, pool_before);
    assert_eq!(w.dom.tot_pages, tot_before);
    let m2p_after: Vec<u64> = owned_before.iter().map(|&f| m2p(w, f)).collect();
    assert_eq!(m2p_after, m2p_before);
    assert!(
        w.p.mm
            .ft
            .frames()
            .iter()
            .all(|f| f.is_unreferenced() || f.owner() != Owner::Free)
    );
}

/// The output list of the exchange tests (room for 256 entries).
const OUT: u64 = LIST + 0x800;

/// An exchange of `nr_in` extents of order `io` at [`LIST`] for extents of order `oo`
/// at [`OUT`], for the caller.
fn exch_orders(nr_in: u64, io: u32, oo: u32) -> XenMemoryExchange {
    let nr_out = (nr_in << io) >> oo;
    let mut x = exch(nr_in, LIST, nr_out, OUT, 0);
    x.in_.extent_order = io;
    x.out.extent_order = oo;
    x
}

/// Runs an exchange from [`ARG`], following continuations: the result, the
/// `nr_exchanged` written back and the number of invocations.
fn run_exchange(w: &mut World, x: &XenMemoryExchange) -> (Result<u64, Errno>, u64, u32) {
    w.p.poke_obj(ARG, x);
    let mut rc = call(w, XenmemOp::Exchange, 0, ARG);
    let mut calls = 1;
    while w.outcome == Outcome::RegsReplaced {
        rc = Errno::decode(reissue(w));
        calls += 1;
    }
    let done: XenMemoryExchange = w.p.peek_obj(ARG);
    (rc, done.nr_exchanged, calls)
}

#[test]
fn exchange_is_validated_in_xens_order_without_touching_anything() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1]);
    put_list(&mut w, &mine);
    // Already done: nothing to do (an empty range checks only its start).
    exchange_is(&mut w, exch(2, LIST, 2, OUT, 2), Ok(0));
    exchange_is(&mut w, exch(0, LIST, 0, OUT, 0), Ok(0));
    // XSA-212: nr_exchanged beyond the input.
    exchange_is(&mut w, exch(2, LIST, 2, OUT, 3), Err(Errno::EINVAL));
    exchange_is(&mut w, exch(2, LIST, 2, OUT, u64::MAX), Err(Errno::EINVAL));
    // XSA-212: huge lists whose part from nr_exchanged on lands in the hypervisor (its
    // IDT, say) or wraps: -EFAULT before any access.
    let idt = 0xFFFF_82D0_8000_0000u64;
    let n = 1u64 << 62;
    let done = (idt - 0x1000) / 8;
    exchange_is(&mut w, exch(n, 0x1000, n, 0x1000, done), Err(Errno::EFAULT));
    let n = 1u64 << 40;
    exchange_is(
        &mut w,
        exch(n, 0x1000, n, idt - 8 * 5, 5),
        Err(Errno::EFAULT),
    );
    exchange_is(
        &mut w,
        exch(4, u64::MAX - 8, 4, LIST, 1),
        Err(Errno::EFAULT),
    );
    exchange_is(
        &mut w,
        exch(4, LIST, 4, NON_GUEST - 8, 1),
        Err(Errno::EFAULT),
    );
    // Sizes that overflow or do not match (order mismatch); domain ids that differ.
    exchange_is(&mut w, exch(2, LIST, 3, LIST, 0), Err(Errno::EINVAL));
    exchange_is(&mut w, exch_orders(2, 0, 2), Err(Errno::EINVAL));
    let mut x = exch_orders(1, 1, 1);
    x.out.nr_extents = 2;
    exchange_is(&mut w, x, Err(Errno::EINVAL));
    let mut x = exch(u64::MAX, LIST, u64::MAX >> 1, LIST, 0);
    x.out.extent_order = 1;
    exchange_is(&mut w, x, Err(Errno::EINVAL));
    let mut x = exch_orders(2, 0, 1);
    x.out.domid = DomId(1);
    exchange_is(&mut w, x, Err(Errno::EINVAL));
    // Orders above the caller's limit (before anything else); foreign domains.
    let mut x = exch(1, LIST, 1, LIST, 3);
    x.in_.extent_order = DOMU_MAX_ORDER + 1;
    x.out.extent_order = DOMU_MAX_ORDER + 1;
    exchange_is(&mut w, x, Err(Errno::EPERM));
    let mut x = exch_orders(1, 0, 0);
    x.in_.domid = DomId(5);
    x.out.domid = DomId(5);
    exchange_is(&mut w, x, Err(Errno::ESRCH));
    // Unreadable argument; start extent.
    assert_eq!(
        call(&mut w, XenmemOp::Exchange, 0, UNMAPPED),
        Err(Errno::EFAULT)
    );
    assert_eq!(call(&mut w, XenmemOp::Exchange, 1, ARG), Err(Errno::EINVAL));
    assert_eq!(w.dom.tot_pages, 2);
}

#[test]
fn exchange_trades_single_frames_for_one_contiguous_extent() {
    let mut w = world(1, false, 16);
    // Scattered frames: the pool's first aligned run of 4 is taken after them.
    w.p.pool.remove(&(POOL + 1));
    let mine = populate(&mut w, &[20, 21, 22, 23]);
    assert_eq!(mine, [POOL, POOL + 2, POOL + 3, POOL + 4]);
    for &f in &mine {
        w.p.mm.mem.frames.insert(f, Box::new([0x5A5A; 512]));
    }
    put_list(&mut w, &mine);
    w.p.poke_obj(OUT, &20u64);
    let (rc, done, calls) = run_exchange(&mut w, &exch_orders(4, 0, 2));
    assert_eq!((rc, done, calls), (Ok(0), 4, 1));
    let first: u64 = w.p.peek_obj(OUT);
    assert_eq!(first, POOL + 8, "the first free aligned run of 4");
    assert_eq!(owned(&w, 1), (first..first + 4).collect::<Vec<_>>());
    assert_eq!(w.dom.tot_pages, 4);
    for k in 0..4 {
        assert_eq!(m2p(&w, first + k), 20 + k);
        assert!(w.p.mm.mem.frames[&(first + k)].iter().all(|&e| e == 0));
    }
    for &f in &mine {
        assert!(w.p.pool.contains(&f));
        assert_eq!(m2p(&w, f), INVALID_M2P_ENTRY);
        assert!(!w.p.mm.ft.is_held(Mfn(f)));
    }
    // The in-list is only read.
    assert_eq!(list(&w, 4), mine);
    // Neighbours are freed together.
    assert_eq!(w.p.freed, [(POOL + 2, 3), (POOL, 1)]);
}

#[test]
fn exchange_splits_an_extent_into_frames_with_consecutive_gpfns_per_entry() {
    let mut w = world(1, false, 16);
    put_list(&mut w, &[30]);
    let r = resv(LIST, 1, 1, 0, DomId::SELF);
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(1));
    let pair = list(&w, 1)[0];
    put_list(&mut w, &[pair]);
    for (j, gpfn) in [7u64, 3].iter().enumerate() {
        w.p.poke_obj(OUT + 8 * j as u64, gpfn);
    }
    let (rc, done, _) = run_exchange(&mut w, &exch_orders(1, 1, 0));
    assert_eq!((rc, done), (Ok(0), 1));
    let out = w.p.peek_u64s(OUT, 2);
    assert_eq!([m2p(&w, out[0]), m2p(&w, out[1])], [7, 3]);
    assert_eq!(owned(&w, 1), {
        let mut v = out.clone();
        v.sort_unstable();
        v
    });
    assert!(w.p.pool.contains(&pair) && w.p.pool.contains(&(pair + 1)));
}

#[test]
fn an_in_frame_that_is_not_the_callers_fails_the_extent_untouched() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1]);
    w.p.mm
        .ft
        .assign(Mfn(0x50), Owner::Domain(DomId(2)))
        .unwrap();
    w.p.mm
        .ft
        .assign(Mfn(0x51), Owner::XenShared(DomId(1)))
        .unwrap();
    // Another domain's, the hypervisor's shared page, free, outside the frame table,
    // wrapping; and a frame listed twice.
    for bad in [0x50, 0x51, 0x40, 4096, u64::MAX] {
        put_list(&mut w, &[mine[0], bad]);
        exchange_is(&mut w, exch_orders(2, 0, 1), Err(Errno::EINVAL));
    }
    put_list(&mut w, &[mine[0], mine[0]]);
    exchange_is(&mut w, exch_orders(2, 0, 1), Err(Errno::EINVAL));
    // An in-extent of order 1 whose second frame is not the caller's.
    put_list(&mut w, &[mine[1]]);
    exchange_is(&mut w, exch_orders(1, 1, 1), Err(Errno::EINVAL));
    // An unreadable in-list entry.
    let mut x = exch_orders(2, 0, 1);
    x.in_.extent_start = ptr(UNMAPPED);
    exchange_is(&mut w, x, Err(Errno::EFAULT));
}

#[test]
fn an_in_frame_in_use_fails_the_extent_untouched() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1, 2]);
    let d1 = DomId(1);
    put_list(&mut w, &mine[..2]);
    // Mapped (a general reference).
    w.p.mm(d1, false, |m| get_page(m, Mfn(mine[1]), d1))
        .unwrap();
    exchange_is(&mut w, exch_orders(2, 0, 1), Err(Errno::EINVAL));
    w.p.mm(d1, false, |m| put_page(m, Mfn(mine[1])));
    // Typed as a page table.
    w.p.mm(d1, false, |m| {
        get_page_and_type(m, Mfn(mine[0]), d1, PageType::L1)
    })
    .unwrap();
    exchange_is(&mut w, exch_orders(2, 0, 1), Err(Errno::EINVAL));
    w.p.mm(d1, false, |m| put_page_and_type(m, Mfn(mine[0])));
    // No reference left, but its last type (L1) is kept: a failing exchange gives it
    // back with that type, so a later type change still flushes.
    let mut x = exch_orders(2, 0, 1);
    x.out.mem_flags = 13;
    exchange_is(&mut w, x, Err(Errno::ENOMEM));
    assert_eq!(
        w.p.mm.ft.info(Mfn(mine[0])).unwrap().page_type(),
        PageType::L1
    );
    // Free of references again: it goes.
    let (rc, done, _) = run_exchange(&mut w, &exch_orders(2, 0, 1));
    assert_eq!((rc, done), (Ok(0), 2));
    assert_eq!(w.dom.tot_pages, 3);
}

#[test]
fn running_out_of_memory_is_enomem_with_the_extent_untouched() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1]);
    put_list(&mut w, &mine);
    let mut y = exch_orders(2, 0, 1);
    // Only single frames left: no aligned pair.
    let keep: BTreeSet<u64> = w.p.pool.iter().copied().filter(|f| f % 2 == 1).collect();
    w.p.pool = keep;
    exchange_is(&mut w, y, Err(Errno::ENOMEM));
    // address_bits 1..=13 can never be satisfied (Xen's zone limit is 0).
    y = exch_orders(2, 0, 0);
    for bits in [1, 12, 13] {
        y.out.mem_flags = bits;
        exchange_is(&mut w, y, Err(Errno::ENOMEM));
    }
}

#[test]
fn address_bits_put_the_output_below_the_limit() {
    let mut w = world(0, true, 64);
    // High frames first in the pool's order would be taken without a limit.
    let low: Vec<u64> = (0x10..0x20).collect();
    w.p.pool.extend(low.iter().copied());
    w.p.pool.retain(|&f| !(0x20..0x180).contains(&f));
    let mine = populate(&mut w, &[0, 1, 2, 3]);
    assert!(mine.iter().all(|&f| f < 0x20), "{mine:x?}");
    put_list(&mut w, &mine);
    // Only high frames are free now.
    w.p.pool.retain(|&f| f >= 0x180);
    let x = exch_orders(4, 0, 2);
    let (rc, _, _) = run_exchange(&mut w, &x);
    assert_eq!(rc, Ok(0));
    let high: u64 = w.p.peek_obj(OUT);
    assert!(high >= 0x180);
    // Back for a run below 2^(17 + 12) bytes = frame 0x20.
    put_list(&mut w, &[high]);
    let mut back = exch_orders(1, 2, 2);
    back.out.mem_flags = 17;
    w.p.poke_obj(OUT, &0u64);
    let (rc, done, _) = run_exchange(&mut w, &back);
    assert_eq!((rc, done), (Ok(0), 1));
    let low_run: u64 = w.p.peek_obj(OUT);
    assert!(low_run + 4 <= 0x20, "{low_run:#x}");
    // Nothing left below 0x20: -ENOMEM, the extent stays.
    w.p.pool.retain(|&f| f >= 0x20);
    put_list(&mut w, &[low_run]);
    back.out.mem_flags = 17;
    exchange_is(&mut w, back, Err(Errno::ENOMEM));
    // address_bits at or above the width of RAM impose nothing.
    back.out.mem_flags = 64;
    let (rc, _, _) = run_exchange(&mut w, &back);
    assert_eq!(rc, Ok(0));
}

#[test]
fn a_failing_chunk_reports_the_chunks_done_before_it() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1, 2, 3, 4, 5]);
    let d1 = DomId(1);
    // Chunks of two in-frames: the third chunk has a mapped frame.
    w.p.mm(d1, false, |m| get_page(m, Mfn(mine[5]), d1))
        .unwrap();
    put_list(&mut w, &mine);
    for j in 0..3u64 {
        w.p.poke_obj(OUT + 8 * j, &(100 + 2 * j));
    }
    let (rc, done, _) = run_exchange(&mut w, &exch_orders(6, 0, 1));
    assert_eq!((rc, done), (Err(Errno::EINVAL), 4));
    assert_eq!(w.dom.tot_pages, 6);
    let out = w.p.peek_u64s(OUT, 3);
    assert_eq!([m2p(&w, out[0]), m2p(&w, out[1] + 1)], [100, 103]);
    assert_eq!(out[2], 104, "the failed chunk's entry is untouched");
    let mut want: Vec<u64> = vec![out[0], out[0] + 1, out[1], out[1] + 1, mine[4], mine[5]];
    want.sort_unstable();
    assert_eq!(owned(&w, 1), want);
    assert_eq!([m2p(&w, mine[4]), m2p(&w, mine[5])], [4, 5]);
    // The caller fixes the frame and goes on from nr_exchanged.
    w.p.mm(d1, false, |m| put_page(m, Mfn(mine[5])));
    let mut x = exch_orders(6, 0, 1);
    x.nr_exchanged = 4;
    let (rc, done, _) = run_exchange(&mut w, &x);
    assert_eq!((rc, done), (Ok(0), 6));
    assert_eq!(m2p(&w, w.p.peek_u64s(OUT, 3)[2]), 104);
}

#[test]
fn an_unwritable_out_entry_is_efault_after_the_trade() {
    let mut w = world(1, false, 16);
    let mine = populate(&mut w, &[0, 1]);
    put_list(&mut w, &mine);
    let ro = 0xFFFF_FFFF_8040_0000u64;
    w.p.map(ro, 0x1000, Perm::ReadOnly);
    let mut x = exch_orders(2, 0, 0);
    x.out.extent_start = ptr(ro);
    let (rc, done, _) = run_exchange(&mut w, &x);
    // Xen: the chunk's frames are traded, but it is not counted.
    assert_eq!((rc, done), (Err(Errno::EFAULT), 0));
    assert_eq!(w.dom.tot_pages, 2);
    let now = owned(&w, 1);
    assert_eq!(now.len(), 2);
    assert_ne!(now, mine, "traded");
    // An argument that reads but does not write: the trade is done, the answer is
    // -EFAULT (nr_exchanged cannot be written back), as in Xen; the same for an
    // early refusal.
    put_list(&mut w, &now);
    let x = exch_orders(2, 0, 0);
    let arg = ro + 0x100;
    w.p.map(ro, 0x1000, Perm::ReadWrite);
    w.p.poke_obj(arg, &x);
    w.p.map(ro, 0x1000, Perm::ReadOnly);
    assert_eq!(call(&mut w, XenmemOp::Exchange, 0, arg), Err(Errno::EFAULT));
    let after = owned(&w, 1);
    assert_eq!(after.len(), 2);
    assert_ne!(after, now, "traded");
    let mut bad = x;
    bad.out.domid = DomId(7);
    w.p.map(ro, 0x1000, Perm::ReadWrite);
    w.p.poke_obj(arg, &bad);
    w.p.map(ro, 0x1000, Perm::ReadOnly);
    assert_eq!(call(&mut w, XenmemOp::Exchange, 0, arg), Err(Errno::EFAULT));
}

#[test]
fn long_exchanges_continue_through_nr_exchanged() {
    let mut w = world(1, false, 1200);
    w.p.pool.extend(0x200..0x800);
    let pfns: Vec<u64> = (0..600).collect();
    let mine = populate(&mut w, &pfns);
    // The list spans LIST..LIST+600*8 and the out list after it.
    let out = LIST + 0x1400;
    put_list(&mut w, &mine);
    for j in 0..600u64 {
        w.p.poke_obj(out + 8 * j, &(1000 + j));
    }
    let mut x = exch(600, LIST, 600, out, 0);
    w.p.poke_obj(ARG, &x);
    assert_eq!(
        call(&mut w, XenmemOp::Exchange, 0, ARG),
        Ok(u64::from(Hypercall::MemoryOp.nr()))
    );
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    let mid: XenMemoryExchange = w.p.peek_obj(ARG);
    assert_eq!(mid.nr_exchanged, WORK_PER_CALL);
    assert_eq!(Errno::decode(reissue(&mut w)), Ok(0));
    let end: XenMemoryExchange = w.p.peek_obj(ARG);
    assert_eq!(end.nr_exchanged, 600);
    assert_eq!(w.dom.tot_pages, 600);
    let got = w.p.peek_u64s(out, 600);
    for (j, &f) in got.iter().enumerate() {
        assert_eq!(m2p(&w, f), 1000 + j as u64);
    }
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(owned(&w, 1), sorted);
    assert_ne!(sorted, mine);
    x.nr_exchanged = 600;
    w.p.poke_obj(ARG, &x);
    assert_eq!(call(&mut w, XenmemOp::Exchange, 0, ARG), Ok(0));
}

#[test]
fn an_exchange_continues_inside_a_multicall() {
    use hypercall_abi::xen::MulticallEntry;
    let mut w = world(1, false, 1200);
    w.p.pool.extend(0x200..0x800);
    let mine = populate(&mut w, &(0..600).collect::<Vec<u64>>());
    put_list(&mut w, &mine);
    let out = LIST + 0x1400;
    w.p.poke_obj(ARG, &exch(600, LIST, 600, out, 0));
    let mc = KDATA + 0x3E00;
    let mut args = [0u64; 6];
    args[0] = memop_cmd(XenmemOp::Exchange);
    args[1] = ARG;
    let e = MulticallEntry {
        op: u64::from(Hypercall::MemoryOp.nr()),
        args,
        ..MulticallEntry::default()
    };
    w.p.poke_obj(mc, &e);
    assert_eq!(
        hc::multicall(&mut w, ptr(mc), 1),
        Ok(u64::from(Hypercall::Multicall.nr()))
    );
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(Errno::decode(reissue(&mut w)), Ok(0));
    let done: MulticallEntry = w.p.peek_obj(mc);
    assert_eq!(done.result, 0);
    let x: XenMemoryExchange = w.p.peek_obj(ARG);
    assert_eq!(x.nr_exchanged, 600);
    assert_eq!(w.dom.tot_pages, 600);
}

#[test]
fn a_privileged_caller_exchanges_another_domains_frames() {
    let mut w = with_dom2();
    put_list(&mut w, &[0, 1]);
    let r = resv(LIST, 2, 0, 0, DomId(2));
    assert_eq!(run(&mut w, XenmemOp::PopulatePhysmap, &r).0, Ok(2));
    let theirs = list(&w, 2);
    put_list(&mut w, &theirs);
    w.p.poke_obj(OUT, &0u64);
    let mut x = exch_orders(2, 0, 1);
    x.in_.domid = DomId(2);
    x.out.domid = DomId(2);
    let (rc, done, _) = run_exchange(&mut w, &x);
    assert_eq!((rc, done), (Ok(0), 2));
    let first: u64 = w.p.peek_obj(OUT);
    assert_eq!(owned(&w, 2), [first, first + 1]);
    assert_eq!(w.p.others[&2].tot_pages, 2);
    // dom0's own frames are not dom2's.
    let mine = populate(&mut w, &[9]);
    put_list(&mut w, &[mine[0], mine[0]]);
    x = exch_orders(2, 0, 1);
    x.in_.domid = DomId(2);
    x.out.domid = DomId(2);
    exchange_is(&mut w, x, Err(Errno::EINVAL));
}

#[test]
fn an_unprivileged_caller_cannot_exchange_for_another_domain() {
    let mut w = world(1, false, 16);
    w.p.others
        .insert(2, Domain::new(DomId(2), false, Mfn(0x98)));
    let mut x = exch_orders(1, 0, 0);
    x.in_.domid = DomId(2);
    x.out.domid = DomId(2);
    exchange_is(&mut w, x, Err(Errno::EPERM));
}

#[test]
fn add_to_physmap_is_eacces_for_pv() {
    let mut w = world(1, false, 0);
    let x = |space: XenMapSpace, domid| XenAddToPhysmap {
        domid,
        size: 1,
        space: space as u32,
        idx: 0,
        gpfn: 0x1000,
    };
    w.p.poke_obj(ARG, &x(XenMapSpace::SharedInfo, DomId::SELF));
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0, ARG),
        Err(Errno::EACCES)
    );
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0xFFFF, ARG),
        Err(Errno::EACCES)
    );
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0x1_0000, ARG),
        Err(Errno::EDOM)
    );
    w.p.poke_obj(ARG, &x(XenMapSpace::GmfnForeign, DomId::SELF));
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0, ARG),
        Err(Errno::ENOSYS)
    );
    w.p.poke_obj(ARG, &x(XenMapSpace::Gmfn, DomId(4)));
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0, ARG),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        call(&mut w, XenmemOp::AddToPhysmap, 0, UNMAPPED),
        Err(Errno::EFAULT)
    );
}

#[test]
fn other_sub_ops_are_enosys() {
    let mut w = world(0, true, 16);
    let fmap = XenForeignMemoryMap {
        domid: DomId::SELF,
        _pad: [0; 3],
        map: map_arg(1, LIST),
    };
    w.p.poke_obj(ARG, &fmap);
    for op in [8, 13, 15, 16, 17, 18, 22, 23, 24, 25, 26, 27, 28, 29, 63] {
        assert_eq!(
            hc::memory_op(&mut w, op, ptr(ARG)),
            Err(Errno::ENOSYS),
            "{op}"
        );
    }
    assert!(w.dom.memory_map.is_none());
}

#[test]
fn memory_op_continues_inside_a_multicall() {
    use hypercall_abi::xen::MulticallEntry;
    let mut w = world(1, false, 1000);
    w.p.pool.extend(0x200..0x400);
    put_list(&mut w, &(0..600).collect::<Vec<u64>>());
    w.p.poke_obj(ARG, &resv(LIST, 600, 0, 0, DomId::SELF));
    let mc = KDATA + 0x3E00;
    let mut args = [0u64; 6];
    args[0] = memop_cmd(XenmemOp::PopulatePhysmap);
    args[1] = ARG;
    let e = MulticallEntry {
        op: u64::from(Hypercall::MemoryOp.nr()),
        args,
        ..MulticallEntry::default()
    };
    w.p.poke_obj(mc, &e);
    assert_eq!(
        hc::multicall(&mut w, ptr(mc), 1),
        Ok(u64::from(Hypercall::Multicall.nr()))
    );
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(Errno::decode(reissue(&mut w)), Ok(0));
    let done: MulticallEntry = w.p.peek_obj(mc);
    assert_eq!(done.result, 600);
    assert_eq!(w.dom.tot_pages, 600);
}

// ---------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Step {
    Populate {
        dom2: bool,
        n: u64,
        order: u32,
    },
    Increase {
        dom2: bool,
        n: u64,
    },
    Decrease {
        dom2: bool,
        picks: Vec<usize>,
        order: u32,
        junk: u64,
    },
    Ref {
        pick: usize,
    },
    Exchange {
        dom2: bool,
        picks: Vec<usize>,
        io: u32,
        oo: u32,
        bits: u32,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (any::<bool>(), 0..12u64, 0..3u32).prop_map(|(dom2, n, order)| Step::Populate {
            dom2,
            n,
            order
        }),
        (any::<bool>(), 0..6u64).prop_map(|(dom2, n)| Step::Increase { dom2, n }),
        (
            any::<bool>(),
            prop::collection::vec(0..64usize, 0..8),
            0..2u32,
            0..0x300u64
        )
            .prop_map(|(dom2, picks, order, junk)| Step::Decrease {
                dom2,
                picks,
                order,
                junk
            }),
        (0..64usize).prop_map(|pick| Step::Ref { pick }),
        (
            any::<bool>(),
            prop::collection::vec(0..64usize, 0..6),
            0..3u32,
            0..3u32,
            prop_oneof![Just(0u32), 13..22u32],
        )
            .prop_map(|(dom2, picks, io, oo, bits)| Step::Exchange {
                dom2,
                picks,
                io,
                oo,
                bits
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever dom0 does to itself and to dom2: each domain's `tot_pages` equals the
    /// frames it owns, no frame is both owned and in the allocator, and no frame is lost.
    #[test]
    fn reservations_keep_accounting_and_ownership_exact(steps in prop::collection::vec(step(), 1..24)) {
        let mut w = with_dom2();
        w.dom.max_pages = 40;
        w.p.others.get_mut(&2).unwrap().max_pages = 30;
        let pool: BTreeSet<u64> = w.p.pool.clone();
        let mut seen: Vec<u64> = Vec::new();
        let mut refs: BTreeSet<u64> = BTreeSet::new();
        for s in steps {
            match s {
                Step::Populate { dom2, n, order } => {
                    let pfns: Vec<u64> = (0..n).map(|i| i * 4).collect();
                    put_list(&mut w, &pfns);
                    let domid = if dom2 { DomId(2) } else { DomId::SELF };
                    let done = run(&mut w, XenmemOp::PopulatePhysmap, &resv(LIST, n, order, 0, domid)).0.unwrap();
                    prop_assert!(done <= n);
                    seen.extend(list(&w, done as usize));
                }
                Step::Increase { dom2, n } => {
                    let domid = if dom2 { DomId(2) } else { DomId::SELF };
                    let done = run(&mut w, XenmemOp::IncreaseReservation, &resv(LIST, n, 0, 0, domid)).0.unwrap();
                    seen.extend(list(&w, done as usize));
                }
                Step::Decrease { dom2, picks, order, junk } => {
                    let mut l: Vec<u64> = picks.iter().filter_map(|&p| seen.get(p).copied()).collect();
                    l.push(junk);
                    put_list(&mut w, &l);
                    let domid = if dom2 { DomId(2) } else { DomId::SELF };
                    let r = resv(LIST, l.len() as u64, order, 0, domid);
                    let done = run(&mut w, XenmemOp::DecreaseReservation, &r).0.unwrap();
                    prop_assert!(done <= l.len() as u64);
                }
                Step::Exchange { dom2, picks, io, oo, bits } => {
                    let l: Vec<u64> = picks.iter().filter_map(|&p| seen.get(p).copied()).collect();
                    put_list(&mut w, &l);
                    let nr_in = l.len() as u64;
                    let nr_out = (nr_in << io) >> oo;
                    let domid = if dom2 { DomId(2) } else { DomId::SELF };
                    let mut x = exch(nr_in, LIST, nr_out, OUT, 0);
                    x.in_.extent_order = io;
                    x.out.extent_order = oo;
                    x.in_.domid = domid;
                    x.out.domid = domid;
                    x.out.mem_flags = bits;
                    let (rc, done, _) = run_exchange(&mut w, &x);
                    prop_assert!(done <= nr_in);
                    if rc.is_ok() {
                        prop_assert_eq!(done, nr_in);
                    }
                    let got = (done << io) >> oo;
                    seen.extend(w.p.peek_u64s(OUT, got as usize));
                }
                Step::Ref { pick } => {
                    if let Some(&f) = seen.get(pick) {
                        if let Some(Owner::Domain(d)) = w.p.mm.ft.owner(Mfn(f)) {
                            if refs.remove(&f) {
                                w.p.mm(d, false, |m| put_page(m, Mfn(f)));
                            } else {
                                w.p.mm(d, false, |m| get_page(m, Mfn(f), d)).unwrap();
                                refs.insert(f);
                            }
                        }
                    }
                }
            }
            let mine = owned(&w, 0);
            let theirs = owned(&w, 2);
            prop_assert_eq!(w.dom.tot_pages, mine.len() as u64);
            prop_assert_eq!(w.p.others[&2].tot_pages, theirs.len() as u64);
            prop_assert!(w.dom.tot_pages <= 40 && w.p.others[&2].tot_pages <= 30);
            let owned_all: BTreeSet<u64> = mine.iter().chain(&theirs).copied().collect();
            prop_assert!(owned_all.is_disjoint(&w.p.pool), "owned and free at once");
            let total: BTreeSet<u64> = owned_all.union(&w.p.pool).copied().collect();
            prop_assert_eq!(&total, &pool, "frames lost or invented");
            for &f in &refs {
                prop_assert!(owned_all.contains(&f), "referenced frame {:#x} freed", f);
            }
            for &f in &owned_all {
                prop_assert!(w.p.mm.ft.info(Mfn(f)).is_some());
            }
            prop_assert!(w.p.mm.ft.frames().iter().enumerate().all(|(i, _)| !w.p.mm.ft.is_held(Mfn(i as u64))));
        }
    }
}
