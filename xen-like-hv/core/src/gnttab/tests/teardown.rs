//! Destruction orders: every frame comes back, whoever dies first.

use super::*;

/// dom1 grants data frame 0 (ref 10) and frame 1 (ref 11) to dom2, which maps them
/// host-writable, host-read-only and by device; dom2 also maps dom3's ref 30.
fn mapped() -> (Sys, Vec<u32>) {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    s.grant_ro(1, 11, 2, 1);
    s.grant_rw(3, 30, 2, 0);
    let hs = vec![
        s.map_ok(2, 1, 10, HOST, va(1)),
        s.map_ok(2, 1, 11, HOST | MRO, va(2)),
        s.map_ok(2, 1, 10, DEV, 0),
        s.map_ok(2, 3, 30, HOST | DEV, va(3)),
    ];
    (s, hs)
}

#[test]
fn mapper_dies_first_everything_comes_back() {
    let (mut s, _) = mapped();
    let f0 = s.data(1, 0);
    let f1 = s.data(1, 1);
    let x = s.data(3, 0);
    let (gone, busy) = s.destroy(2);
    assert!(gone);
    assert_eq!(busy, 0);
    // The granters' pins, flags and references are all released.
    for (d, r) in [(1, 10), (1, 11), (3, 30)] {
        assert_eq!(s.pin(d, r), 0, "d{d} ref {r}");
        assert_eq!(s.busy_flags(d, r), 0, "d{d} ref {r}");
    }
    for f in [f0, f1, x] {
        assert_eq!(s.counts(f), (0, 0), "{f}");
    }
    assert!(s.end_access(1, 10));
    s.destroy(1);
    s.destroy(3);
    s.assert_all_free();
}

#[test]
fn granter_dies_first_its_table_and_frames_stay_until_the_mapper_unmaps() {
    let (mut s, hs) = mapped();
    let f0 = s.data(1, 0);
    let f1 = s.data(1, 1);
    let (gone, busy) = s.destroy(1);
    assert!(!gone, "dom1's grants are pinned: its table stays");
    // The two granted frames are still referenced by dom2's mappings.
    assert_eq!(busy, 2);
    assert!(s.tables.0.contains_key(&1));
    assert!(s.table(1).dying);
    assert_eq!(s.ft.owner(f0), Some(Owner::Domain(DomId(1))));
    // No new pin of a dying domain's grant; a pinned entry still maps (Xen finds
    // the zombie domain and its still-referenced frame), but a copy is refused
    // (`acquire_grant_for_copy`: bad_domain for a dying granter).
    assert_eq!(
        s.map(2, 1, 12, HOST | MRO, va(4)).status,
        GntSt::GeneralError
    );
    assert_eq!(s.map(2, 1, 11, HOST, va(4)).status, GntSt::GeneralError);
    let h4 = s.map_ok(2, 1, 10, HOST | MRO, va(4));
    let mine = s.data(2, 0);
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 11, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::BadDomain
    );
    assert_eq!(s.unmap(2, h4, va(4), 0), GntSt::Okay);
    // dom2 unmaps one by one; the last unmap reaps the table and frees the frames.
    assert_eq!(s.unmap(2, hs[0], va(1), 0), GntSt::Okay);
    assert_eq!(s.unmap(2, hs[1], va(2), 0), GntSt::Okay);
    assert_eq!(
        s.ft.owner(f1),
        Some(Owner::Free),
        "orphan freed on its last reference"
    );
    assert!(s.pool.contains(&f1.0));
    assert!(s.tables.0.contains_key(&1));
    assert_eq!(s.unmap(2, hs[2], 0, f0.0 << 12), GntSt::Okay);
    assert_eq!(s.ft.owner(f0), Some(Owner::Free));
    assert!(
        !s.tables.0.contains_key(&1),
        "reaped through GrantTables::forget"
    );
    s.destroy(2);
    s.destroy(3);
    s.assert_all_free();
}

#[test]
fn granter_dies_then_mapper_dies_without_unmapping() {
    let (mut s, _) = mapped();
    s.destroy(1);
    assert!(s.tables.0.contains_key(&1));
    let (gone, busy) = s.destroy(2);
    assert!(gone);
    assert_eq!(busy, 0);
    assert!(!s.tables.0.contains_key(&1));
    s.destroy(3);
    s.assert_all_free();
}

#[test]
fn mutual_grants_both_die_in_either_order() {
    for first in [1u16, 2] {
        let mut s = Sys::with(&[1, 2]);
        s.gnt(2, |g| g.set_version(2)).0.unwrap();
        s.grant_rw(1, 10, 2, 0);
        s.grant_rw(2, 20, 1, 0);
        s.grant_rw(1, 11, 1, 1); // to itself
        s.map_ok(2, 1, 10, HOST, va(1));
        s.map_ok(1, 2, 20, HOST | DEV, va(1));
        s.map_ok(1, 1, 11, HOST, va(2));
        let second = 3 - first;
        s.destroy(first);
        s.destroy(second);
        s.assert_all_free();
    }
}

#[test]
fn a_dying_granter_with_a_contains_pte_mapping_and_grant_table_frames() {
    // dom2 maps dom1's shared grant-table frame itself (granted by dom1), by
    // machine address of the PTE; dom1 dies first.
    let mut s = Sys::with(&[1, 2]);
    let gframe = s.table(1).guest_frames().next().unwrap();
    s.grant(1, 10, 2, gframe, PERMIT);
    let ma = s.l1e_ma(2, 9);
    s.map_ok(2, 1, 10, HOST | PTE, ma);
    assert_eq!(s.counts(gframe), (1, 1));
    let (gone, busy) = s.destroy(1);
    assert!(!gone);
    assert_eq!(busy, 1);
    s.destroy(2);
    s.assert_all_free();
}

#[test]
fn destroying_a_domain_with_status_frames_and_a_grown_maptrack() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    s.gnt(1, |g| g.setup_table(DomId::SELF, 4)).unwrap();
    s.grant_rw(1, 900, 2, 0);
    for _ in 0..300 {
        s.map_ok(2, 1, 900, DEV | MRO, 0);
        if s.pin(1, 900) >> 24 == 100 {
            break;
        }
    }
    s.grant_ro(1, 901, 2, 1);
    for _ in 0..120 {
        s.map_ok(2, 1, 901, DEV | MRO, 0);
    }
    s.destroy(1);
    s.destroy(2);
    s.assert_all_free();
}
