//! The state machine and every sub-op with its error paths, in Xen 4.17's order of
//! checks (`xen/common/grant_table.c`, `xen/arch/x86/pv/grant_table.c`).

use hypercall_abi::Errno;
use hypercall_abi::gnttab::{GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL, GnttabCacheFlush};

use super::*;
use crate::mm::frame_table::PageType;

// ---- setup_table, query_size, get_version ---------------------------------------------

#[test]
fn setup_table_grows_and_lists_the_shared_frames() {
    let mut s = Sys::with(&[1]);
    assert_eq!(s.table(1).nr_grant_frames(), 1);
    let frames = s.gnt(1, |g| g.setup_table(DomId::SELF, 3)).unwrap();
    assert_eq!(frames.len(), 3);
    let t = s.table(1);
    assert_eq!(t.nr_grant_frames(), 3);
    assert_eq!(t.nr_entries(), 3 * 512);
    let listed: Vec<Mfn> = t.guest_frames().collect();
    assert_eq!(frames.as_slice(), listed.as_slice());
    for f in frames {
        assert_eq!(s.ft.owner(f), Some(Owner::XenShared(DomId(1))));
    }
    // Asking for fewer lists the first ones and shrinks nothing.
    let two = s.gnt(1, |g| g.setup_table(DomId(1), 2)).unwrap();
    assert_eq!(two.as_slice(), &listed[..2]);
    assert_eq!(s.table(1).nr_grant_frames(), 3);
    // 0 frames: nothing listed, OK.
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId::SELF, 0)).unwrap().len(),
        0
    );
}

#[test]
fn setup_table_limit_domain_and_permission() {
    let mut s = Sys::with(&[1, 2]);
    // Beyond max_grant_frames: general error, nothing grows.
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId::SELF, 5)),
        Err(GntSt::GeneralError)
    );
    assert_eq!(s.table(1).nr_grant_frames(), 1);
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId::SELF, 4)).unwrap().len(),
        4
    );
    // Unknown domain first, then the permission check.
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId(9), 1)),
        Err(GntSt::BadDomain)
    );
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId(2), 1)),
        Err(GntSt::PermissionDenied)
    );
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId(9), 99)),
        Err(GntSt::BadDomain)
    );
    s.privilege(1);
    assert_eq!(s.gnt(1, |g| g.setup_table(DomId(2), 2)).unwrap().len(), 2);
    assert_eq!(s.table(2).nr_grant_frames(), 2);
}

#[test]
fn setup_table_out_of_memory_is_a_general_error_and_keeps_what_was_added() {
    let mut s = Sys::with(&[1]);
    let keep: Vec<u64> = s.pool.iter().copied().take(5).collect();
    s.pool = keep.into_iter().collect();
    // One grant frame needs 4 active frames and the shared frame: the first grows,
    // the second cannot.
    assert_eq!(
        s.gnt(1, |g| g.setup_table(DomId::SELF, 3)),
        Err(GntSt::GeneralError)
    );
    assert_eq!(s.table(1).nr_grant_frames(), 2);
}

#[test]
fn query_size_and_get_version() {
    let mut s = Sys::with(&[1, 2]);
    assert_eq!(s.gnt(1, |g| g.query_size(DomId::SELF)), Ok((1, 4)));
    s.gnt(1, |g| g.setup_table(DomId::SELF, 3)).unwrap();
    assert_eq!(s.gnt(1, |g| g.query_size(DomId(1))), Ok((3, 4)));
    assert_eq!(s.gnt(1, |g| g.query_size(DomId(7))), Err(GntSt::BadDomain));
    assert_eq!(
        s.gnt(1, |g| g.query_size(DomId(2))),
        Err(GntSt::PermissionDenied)
    );
    assert_eq!(s.gnt(1, |g| g.get_version(DomId::SELF)), Ok(1));
    assert_eq!(s.gnt(1, |g| g.get_version(DomId(7))), Err(Errno::ESRCH));
    assert_eq!(s.gnt(1, |g| g.get_version(DomId(2))), Err(Errno::EPERM));
    s.privilege(1);
    assert_eq!(s.gnt(1, |g| g.query_size(DomId(2))), Ok((1, 4)));
    assert_eq!(s.gnt(2, |g| g.set_version(2)).0, Ok(()));
    assert_eq!(s.gnt(1, |g| g.get_version(DomId(2))), Ok(2));
}

// ---- set_version and get_status_frames -----------------------------------------------

#[test]
fn set_version_switches_and_status_frames_follow() {
    let mut s = Sys::with(&[1]);
    s.gnt(1, |g| g.setup_table(DomId::SELF, 2)).unwrap();
    assert_eq!(s.gnt(1, |g| g.set_version(3)), (Err(Errno::EINVAL), 1));
    assert_eq!(s.gnt(1, |g| g.set_version(0)), (Err(Errno::EINVAL), 1));
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(
        s.gnt(1, |g| g.get_status_frames(DomId::SELF, 1)),
        Err(GntSt::GeneralError),
        "no status frames in v1"
    );
    let free = s.pool.len();
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Ok(()), 2));
    // 2 grant frames of 256 v2 entries: one status frame.
    assert_eq!(s.pool.len(), free - 1);
    assert_eq!(s.table(1).nr_entries(), 512);
    assert_eq!(s.table(1).nr_guest_frames(), 3);
    let st = s.gnt(1, |g| g.get_status_frames(DomId::SELF, 1)).unwrap();
    assert_eq!(st.len(), 1);
    assert_eq!(s.ft.owner(st[0]), Some(Owner::XenShared(DomId(1))));
    assert_eq!(
        s.gnt(1, |g| g.get_status_frames(DomId::SELF, 2)),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        s.gnt(1, |g| g.get_status_frames(DomId(5), 1)),
        Err(GntSt::BadDomain)
    );
    // Same version again: nothing happens.
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Ok(()), 2));
    assert_eq!(s.pool.len(), free - 1);
    // Back to v1: the status frame goes back.
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(s.pool.len(), free);
    assert_eq!(s.table(1).nr_guest_frames(), 2);
    assert_eq!(s.ft.owner(st[0]), Some(Owner::Free));
}

#[test]
fn get_status_frames_of_another_domain_needs_privilege() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(2, |g| g.set_version(2)).0.unwrap();
    assert_eq!(
        s.gnt(1, |g| g.get_status_frames(DomId(2), 1)),
        Err(GntSt::PermissionDenied)
    );
    s.privilege(1);
    assert_eq!(
        s.gnt(1, |g| g.get_status_frames(DomId(2), 1))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn setup_table_in_v2_grows_the_status_frames_too() {
    let mut s = Sys::with(&[1]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    assert_eq!(s.table(1).nr_guest_frames(), 2);
    s.gnt(1, |g| g.setup_table(DomId::SELF, 4)).unwrap();
    // 4 * 256 entries fit one status frame (2048 each).
    assert_eq!(s.table(1).nr_guest_frames(), 5);
    assert_eq!(s.table(1).nr_entries(), 1024);
}

#[test]
fn set_version_two_is_enosys_when_the_domain_is_limited_to_v1() {
    let mut s = Sys::new();
    s.add_dom(
        1,
        Limits {
            max_version: 1,
            ..SMALL
        },
        2,
    );
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Err(Errno::ENOSYS), 1));
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(s.gnt(1, |g| g.set_version(7)), (Err(Errno::EINVAL), 1));
}

#[test]
fn set_version_is_ebusy_while_a_non_reserved_grant_is_pinned() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 8, 2, 0);
    let h = s.map_ok(2, 1, 8, DEV, 0);
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Err(Errno::EBUSY), 1));
    let f = s.data(1, 0);
    assert_eq!(s.unmap(2, h, 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Ok(()), 2));
}

#[test]
fn set_version_keeps_and_converts_the_reserved_entries() {
    let mut s = Sys::with(&[1, 2]);
    let f0 = s.data(1, 0);
    let f1 = s.data(1, 1);
    s.grant(1, 0, 2, f0, PERMIT);
    s.grant(1, 1, 2, f1, PERMIT | RO);
    s.grant_rw(1, 8, 2, 2); // not reserved: cleared
    // A reserved entry stays mapped across the switch.
    let h = s.map_ok(2, 1, 0, HOST, va(1));
    assert_eq!(s.busy_flags(1, 0), READING | WRITING);
    assert_eq!(s.gnt(1, |g| g.set_version(2)), (Ok(()), 2));
    assert_eq!(s.flags(1, 0), PERMIT, "v2 header has no status bits");
    assert_eq!(s.raw(1, 0) >> 16 & 0xFFFF, 2);
    assert_eq!(s.raw2(1, 0), f0.0);
    assert_eq!(s.status(1, 0), READING | WRITING);
    assert_eq!(s.flags(1, 1), PERMIT | RO);
    assert_eq!(s.raw2(1, 1), f1.0);
    assert_eq!(s.raw(1, 8), 0);
    assert_eq!(s.raw2(1, 8), 0);
    // The mapping still unmaps cleanly; the status word clears.
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.status(1, 0), 0);
    // Map again in v2, switch back to v1: the status bits return into the flags.
    let h = s.map_ok(2, 1, 1, HOST | MRO, va(2));
    assert_eq!(s.status(1, 1), READING);
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(s.flags(1, 1), PERMIT | RO | READING);
    assert_eq!(s.raw(1, 1) >> 32, f1.0);
    assert_eq!(s.raw(1, 0) >> 32, f0.0);
    assert_eq!(s.unmap(2, h, va(2), 0), GntSt::Okay);
    assert_eq!(s.flags(1, 1), PERMIT | RO);
}

#[test]
fn set_version_one_is_erange_for_a_reserved_v2_entry_v1_cannot_hold() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    s.grant(1, 3, 2, Mfn(1 << 32), PERMIT);
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Err(Errno::ERANGE), 2));
    assert_eq!(s.raw2(1, 3), 1 << 32, "nothing changed");
    s.grant(1, 3, 2, Mfn(5), PERMIT);
    s.grant_trans(1, 4, 2, 2, 9);
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Err(Errno::ERANGE), 2));
    s.set_flags(1, 4, 0);
    // A transitive entry beyond the reserved ones does not matter.
    s.grant_trans(1, 20, 2, 2, 9);
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(s.raw(1, 3), u64::from(PERMIT) | 2 << 16 | 5 << 32);
    assert_eq!(s.raw(1, 20), 0);
}

#[test]
fn status_frames_cannot_go_while_the_guest_maps_them() {
    let mut s = Sys::with(&[1]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    let sf = s.gnt(1, |g| g.get_status_frames(DomId::SELF, 1)).unwrap()[0];
    let l1 = s.dom(1).l1;
    s.mmu(1, l1, 5, (sf.0 << 12) | P | A).unwrap();
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Err(Errno::EBUSY), 2));
    assert_eq!(s.table(1).version(), 2);
    assert_eq!(s.ft.owner(sf), Some(Owner::XenShared(DomId(1))));
    s.mmu(1, l1, 5, 0).unwrap();
    assert_eq!(s.gnt(1, |g| g.set_version(1)), (Ok(()), 1));
    assert_eq!(s.ft.owner(sf), Some(Owner::Free));
}

// ---- map ------------------------------------------------------------------------------

#[test]
fn host_map_writes_a_writable_l1_entry_and_takes_references() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let m = s.map(2, 1, 10, HOST, va(3));
    assert_eq!(m.status, GntSt::Okay);
    assert_eq!(m.dev_bus_addr, f.0 << 12);
    let e = s.l1e(2, 3);
    assert_eq!(e >> 12 & 0xF_FFFF_FFFF, f.0);
    assert_eq!(e & (P | RW | A | D), P | RW | A | D);
    assert_ne!(e & NX, 0);
    assert_eq!(e & U, U, "64-bit PV kernel mappings are user pages");
    assert_eq!(s.counts(f), (1, 1));
    assert_eq!(s.info(f).page_type(), PageType::Writable);
    assert_eq!(s.busy_flags(1, 10), READING | WRITING);
    let a = s.act(1, 10);
    assert_eq!(a.pin, super::super::table::pin::HSTW);
    assert_eq!(a.domid, DomId(2));
    assert_eq!(s.table(2).mappings(), 1);
    assert_eq!(s.unmap(2, m.handle, va(3), 0), GntSt::Okay);
    assert_eq!(s.l1e(2, 3), 0);
    assert_eq!(s.counts(f), (0, 0));
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.pin(1, 10), 0);
    assert_eq!(s.table(2).mappings(), 0);
}

#[test]
fn readonly_host_map_and_readonly_grant() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_ro(1, 10, 2, 0);
    let f = s.data(1, 0);
    // Writable map of a read-only grant: refused, nothing left behind.
    assert_eq!(s.map(2, 1, 10, HOST, va(3)).status, GntSt::GeneralError);
    assert_eq!(s.l1e(2, 3), 0);
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.counts(f), (0, 0));
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(3));
    let e = s.l1e(2, 3);
    assert_eq!(e & (P | RW), P);
    assert_eq!(s.counts(f), (1, 0));
    assert_eq!(s.busy_flags(1, 10), READING);
    // A second, writable, map is still refused while the read-only one stands.
    assert_eq!(s.map(2, 1, 10, HOST, va(4)).status, GntSt::GeneralError);
    assert_eq!(s.busy_flags(1, 10), READING);
    assert_eq!(s.unmap(2, h, va(3), 0), GntSt::Okay);
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn device_map_returns_the_bus_address_and_holds_the_writable_type() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let m = s.map(2, 1, 10, DEV, 0);
    assert_eq!((m.status, m.dev_bus_addr), (GntSt::Okay, f.0 << 12));
    assert_eq!(s.counts(f), (1, 1));
    // Host and device at once: two references, two writable types.
    let m2 = s.map(2, 1, 10, DEV | HOST, va(1));
    assert_eq!(m2.status, GntSt::Okay);
    assert_eq!(s.counts(f), (3, 3));
    // A wrong bus address: bad_dev_addr (Xen 4.17, measured), nothing changes.
    assert_eq!(s.unmap(2, m.handle, 0, (f.0 + 1) << 12), GntSt::BadDevAddr);
    assert_eq!(s.counts(f), (3, 3));
    assert_eq!(s.unmap(2, m.handle, 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.counts(f), (2, 2));
    // Partial unmap of the combined mapping: host first, then device.
    assert_eq!(s.unmap(2, m2.handle, va(1), 0), GntSt::Okay);
    assert_eq!(s.counts(f), (1, 1));
    assert_eq!(s.l1e(2, 1), 0);
    assert_eq!(s.busy_flags(1, 10), READING | WRITING);
    assert_eq!(s.table(2).mappings(), 1);
    assert_eq!(s.unmap(2, m2.handle, 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.counts(f), (0, 0));
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.table(2).mappings(), 0);
    // Everything unmapped: the handle is free now.
    assert_eq!(s.unmap(2, m2.handle, 0, f.0 << 12), GntSt::BadHandle);
}

#[test]
fn readonly_device_map_takes_no_type() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_ro(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, DEV | MRO, 0);
    assert_eq!(s.counts(f), (1, 0));
    assert_eq!(s.busy_flags(1, 10), READING);
    assert_eq!(s.unmap(2, h, 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn contains_pte_writes_the_named_entry_of_an_l1_of_the_caller() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let ma = s.l1e_ma(2, 7);
    let h = s.map_ok(2, 1, 10, HOST | PTE, ma);
    assert_eq!(s.l1e(2, 7) >> 12 & 0xF_FFFF_FFFF, f.0);
    // Unmap by the same machine address.
    assert_eq!(s.unmap(2, h, ma, 0), GntSt::Okay);
    assert_eq!(s.l1e(2, 7), 0);
    // Not an L1 (the L2, a data frame, someone else's L1), misaligned: refused.
    let l2 = s.dom(2).l2;
    let data = s.data(2, 0);
    let other = s.l1e_ma(1, 7);
    for bad in [l2.0 << 12, data.0 << 12, other, ma + 1] {
        assert_eq!(
            s.map(2, 1, 10, HOST | PTE, bad).status,
            GntSt::GeneralError,
            "{bad:#x}"
        );
        assert_eq!(s.busy_flags(1, 10), 0);
        assert_eq!(s.counts(f), (0, 0));
    }
    assert_eq!(s.table(2).mappings(), 0);
}

#[test]
fn application_map_and_guest_avail_bits_reach_the_pte() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let h = s.map_ok(2, 1, 10, HOST | APP | (5 << 16), va(2));
    let e = s.l1e(2, 2);
    assert_eq!(e & U, U);
    assert_eq!(
        e >> 9 & 7,
        5,
        "GNTMAP_guest_avail0.. in the PTE's bits 9..11"
    );
    assert_eq!(s.unmap(2, h, va(2), 0), GntSt::Okay);
    // Without application_map the entry is a kernel mapping (user bit set by the
    // 64-bit PV adjustment, global not).
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(2));
    let e = s.l1e(2, 2);
    assert_eq!(e & (P | RW), P);
    assert_eq!(s.unmap(2, h, va(2), 0), GntSt::Okay);
}

#[test]
fn map_checks_in_xens_order() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    // No host/device flag: bad_gntref before anything else, even a bad domain.
    assert_eq!(s.map(2, 9, 10, 0, va(1)).status, GntSt::BadGntref);
    assert_eq!(s.map(2, 1, 10, MRO | APP, va(1)).status, GntSt::BadGntref);
    // Unknown domain, DOMID_SELF (rcu_lock_domain_by_id does not know it).
    assert_eq!(s.map(2, 9, 10, HOST, va(1)).status, GntSt::BadDomain);
    assert_eq!(
        s.map(2, DomId::SELF.0, 10, HOST, va(1)).status,
        GntSt::BadDomain
    );
    // Bad ref.
    assert_eq!(s.map(2, 1, 512, HOST, va(1)).status, GntSt::BadGntref);
    assert_eq!(s.map(2, 1, u32::MAX, HOST, va(1)).status, GntSt::BadGntref);
    // Wrong grantee, invalid type, accept_transfer type.
    assert_eq!(s.map(3, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    s.set_flags(1, 10, 0);
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    s.set_flags(1, 10, GtfFlags::ACCEPT_TRANSFER.bits());
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    // A frame that is not the granter's: bad_page.
    let theirs = s.data(3, 0);
    s.grant(1, 11, 2, theirs, PERMIT);
    assert_eq!(s.map(2, 1, 11, HOST, va(1)).status, GntSt::BadPage);
    s.grant(1, 11, 2, Mfn(N + 5), PERMIT);
    assert_eq!(s.map(2, 1, 11, HOST, va(1)).status, GntSt::BadPage);
    assert_eq!(s.busy_flags(1, 11), 0);
    // Bad host address (no L1 there, non-canonical): general error.
    s.grant_rw(1, 10, 2, 0);
    for bad in [1u64 << 39, 0x8000_0000_0000, 0xFFFF_8000_0000_0000] {
        assert_eq!(s.map(2, 1, 10, HOST, bad).status, GntSt::GeneralError);
    }
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.counts(s.data(1, 0)), (0, 0));
    assert_eq!(s.pin(1, 10), 0);
    assert_eq!(s.table(2).mappings(), 0);
}

#[test]
fn a_grant_to_oneself_maps() {
    let mut s = Sys::with(&[1]);
    s.grant_rw(1, 10, 1, 3);
    let f = s.data(1, 3);
    let h = s.map_ok(1, 1, 10, HOST, va(9));
    assert_eq!(s.l1e(1, 9) >> 12 & 0xF_FFFF_FFFF, f.0);
    assert_eq!(s.unmap(1, h, va(9), 0), GntSt::Okay);
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn a_pinned_grant_maps_again_only_for_the_same_grantee() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    // The granter re-targets the entry while pinned: the active entry still names 2.
    s.grant_rw(1, 10, 3, 0);
    assert_eq!(s.map(3, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    let h2 = s.map_ok(2, 1, 10, HOST, va(2));
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.unmap(2, h2, va(2), 0), GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    let h3 = s.map_ok(3, 1, 10, HOST, va(1));
    assert_eq!(s.unmap(3, h3, va(1), 0), GntSt::Okay);
}

#[test]
fn a_sub_page_grant_cannot_be_mapped() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    let f = s.data(1, 0);
    s.grant_sub(1, 10, 2, f, 0, 4096);
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::GeneralError);
    assert_eq!(s.status(1, 10), 0);
    s.grant_rw(1, 11, 2, 1);
    // Xen's map reads a v2 transitive entry as a full-page one (`_set_status_v2`
    // accepts GTF_transitive; the frame is `full_page.frame`, where the transitive
    // gref lies): it never follows the chain, and the frame must be the granter's.
    let foreign = s.data(2, 3);
    s.grant_trans(1, 12, 2, 3, foreign.0 as u32);
    assert_eq!(s.map(2, 1, 12, HOST, va(1)).status, GntSt::BadPage);
    assert_eq!(s.status(1, 12), 0);
    assert_eq!(s.pin(1, 12), 0);
    let own = s.data(1, 2);
    s.grant_trans(1, 12, 2, 3, own.0 as u32);
    let h = s.map_ok(2, 1, 12, HOST | MRO, va(1));
    assert_eq!(s.l1e(2, 1) >> 12 & 0xF_FFFF_FFFF, own.0);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.counts(own), (0, 0));
    // A full-page v2 grant maps; its status word shows it.
    let h = s.map_ok(2, 1, 11, HOST, va(1));
    assert_eq!(s.status(1, 11), READING | WRITING);
    assert_eq!(
        s.flags(1, 11),
        PERMIT,
        "the v2 header is the granter's alone"
    );
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.status(1, 11), 0);
}

#[test]
fn maptrack_exhaustion_is_no_device_space_at_exactly_the_limit() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    // Two maptrack frames: 2 * 256 - 1 handles (the free list keeps one entry back).
    // A map through a device mapping: 127 per ref before the pin guard, so use refs.
    let limit = 2 * 256 - 1;
    let mut handles = Vec::new();
    for i in 0..limit {
        let r = 10 + (i / 100) as u32;
        if i % 100 == 0 {
            s.grant_ro(1, r, 2, 0);
        }
        let m = s.map(2, 1, r, DEV | MRO, 0);
        assert_eq!(m.status, GntSt::Okay, "map {i}");
        handles.push(m.handle);
    }
    let mut sorted = handles.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), limit);
    assert!(sorted.iter().all(|&h| h < 512));
    let free = s.pool.len();
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::NoSpace);
    assert_eq!(s.pool.len(), free, "no frame taken beyond the limit");
    assert_eq!(s.table(2).mappings(), limit as u32);
    // One unmap frees one handle: one more map fits, then none again.
    let f = s.data(1, 0);
    assert_eq!(s.unmap(2, handles[5], 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::NoSpace);
}

#[test]
fn no_maptrack_frames_means_no_mappings() {
    let mut s = Sys::with(&[1]);
    s.add_dom(
        2,
        Limits {
            max_maptrack_frames: 0,
            ..SMALL
        },
        1,
    );
    s.grant_rw(1, 10, 2, 0);
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::NoSpace);
    // Copy needs no handle.
    let mine = s.data(2, 0);
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::Okay
    );
}

#[test]
fn pin_count_overflow_refuses_the_129th_map_of_one_kind_only() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let mut hs = Vec::new();
    for i in 0..128 {
        let m = s.map(2, 1, 10, DEV | MRO, 0);
        assert_eq!(m.status, GntSt::Okay, "map {i}");
        hs.push(m.handle);
    }
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::GeneralError);
    assert_eq!(s.counts(f), (128, 0));
    // Only the counts a map raises are checked (Xen 4.17's GNTPIN_incr2oflow_mask):
    // a writable host map, and a writable device map, still fit.
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, DEV, 0).status, GntSt::Okay);
    assert_eq!(s.unmap(2, hs[0], 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::Okay);
    assert_eq!(s.map(2, 1, 10, DEV | MRO, 0).status, GntSt::GeneralError);
}

// ---- page types ---------------------------------------------------------------------

#[test]
fn a_write_mapped_granted_frame_cannot_become_a_page_table() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    // The granter tries to pin it as an L1, or to use it as an L1 of its own tables.
    assert!(s.ext(1, MmuextCmd::PinL1Table, f).is_err());
    let l2 = s.dom(1).l2;
    assert!(s.mmu(1, l2, 1, (f.0 << 12) | P | RW | A | U).is_err());
    assert_eq!(s.info(f).page_type(), PageType::Writable);
    // A device mapping holds the writable type the same way.
    let hd = s.map_ok(2, 1, 10, DEV, 0);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert!(s.ext(1, MmuextCmd::PinL1Table, f).is_err());
    assert_eq!(s.unmap(2, hd, 0, f.0 << 12), GntSt::Okay);
    // Unmapped: now it may.
    s.ext(1, MmuextCmd::PinL1Table, f).unwrap();
    assert_eq!(s.info(f).page_type(), PageType::L1);
    s.ext(1, MmuextCmd::UnpinTable, f).unwrap();
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn a_page_table_cannot_be_write_mapped_through_a_grant() {
    let mut s = Sys::with(&[1, 2]);
    let l1 = s.dom(1).l1;
    s.grant(1, 10, 2, l1, PERMIT);
    let before = s.counts(l1);
    assert_eq!(s.map(2, 1, 10, HOST, va(1)).status, GntSt::GeneralError);
    assert_eq!(s.map(2, 1, 10, DEV, 0).status, GntSt::GeneralError);
    assert_eq!(s.counts(l1), before);
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.l1e(2, 1), 0);
    // Read-only is fine, as a read-only mmu_update mapping would be.
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.counts(l1), (before.0 + 1, before.1));
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.counts(l1), before);
    // A pinned L1 frame that is not in use by a table is still refused writable.
    let f = s.data(1, 1);
    s.ext(1, MmuextCmd::PinL1Table, f).unwrap();
    s.grant(1, 11, 2, f, PERMIT);
    assert_eq!(s.map(2, 1, 11, HOST, va(1)).status, GntSt::GeneralError);
    assert_eq!(s.map(2, 1, 11, DEV, 0).status, GntSt::GeneralError);
}

#[test]
fn a_writable_copy_destination_cannot_be_a_page_table() {
    let mut s = Sys::with(&[1, 2]);
    let l1 = s.dom(1).l1;
    s.grant(1, 10, 2, l1, PERMIT);
    let mine = s.data(2, 0);
    let before = s.counts(l1);
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 0), 8),
        GntSt::GeneralError
    );
    assert_eq!(s.counts(l1), before);
    assert_eq!(s.busy_flags(1, 10), 0);
    // Its own L1 as the destination: refused too.
    let own_l1 = s.dom(2).l1;
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 0), CopyEnd::frame(own_l1, 0), 8),
        GntSt::GeneralError
    );
}

// ---- status flags while in use ------------------------------------------------------

#[test]
fn the_granter_changing_flags_while_mapped_keeps_the_map_and_refuses_new_writers() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.flags(1, 10), PERMIT | READING);
    // End of access is refused while mapped (GTF_reading).
    assert!(!s.end_access(1, 10));
    // The granter makes the entry read-only (keeping the hypervisor's bit).
    s.set_flags(1, 10, PERMIT | RO | READING);
    assert_eq!(s.map(2, 1, 10, HOST, va(2)).status, GntSt::GeneralError);
    assert_eq!(s.flags(1, 10), PERMIT | RO | READING);
    // A further read-only map is fine: the entry is pinned.
    let h2 = s.map_ok(2, 1, 10, HOST | MRO, va(2));
    // The granter even invalidates the entry: existing mappings stay, and a pinned
    // entry keeps mapping (Xen does not re-check a pinned entry's type).
    s.set_flags(1, 10, READING);
    assert_eq!(s.l1e(2, 1) >> 12 & 0xF_FFFF_FFFF, f.0);
    let h3 = s.map_ok(2, 1, 10, HOST | MRO, va(3));
    for (h, i) in [(h, 1), (h2, 2), (h3, 3)] {
        assert_eq!(s.unmap(2, h, va(i), 0), GntSt::Okay);
    }
    assert_eq!(s.flags(1, 10), 0);
    assert_eq!(s.counts(f), (0, 0));
    // Unpinned and invalid: refused.
    assert_eq!(
        s.map(2, 1, 10, HOST | MRO, va(1)).status,
        GntSt::GeneralError
    );
}

#[test]
fn v2_read_only_flip_while_pinned_refuses_a_writer_and_clears_writing() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    s.grant_rw(1, 10, 2, 0);
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.status(1, 10), READING);
    s.set_flags(1, 10, PERMIT | RO);
    assert_eq!(s.map(2, 1, 10, HOST, va(2)).status, GntSt::GeneralError);
    assert_eq!(s.status(1, 10), READING);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.status(1, 10), 0);
}

#[test]
fn reading_and_writing_follow_the_pins_per_kind() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let hr = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.busy_flags(1, 10), READING);
    let hw = s.map_ok(2, 1, 10, HOST, va(2));
    assert_eq!(s.busy_flags(1, 10), READING | WRITING);
    assert_eq!(s.unmap(2, hw, va(2), 0), GntSt::Okay);
    assert_eq!(s.busy_flags(1, 10), READING);
    let hw = s.map_ok(2, 1, 10, HOST, va(2));
    assert_eq!(s.unmap(2, hr, va(1), 0), GntSt::Okay);
    assert_eq!(s.busy_flags(1, 10), READING | WRITING);
    assert!(!s.end_access(1, 10));
    assert_eq!(s.unmap(2, hw, va(2), 0), GntSt::Okay);
    assert_eq!(s.busy_flags(1, 10), 0);
    assert!(s.end_access(1, 10));
}

// ---- unmap ----------------------------------------------------------------------------

#[test]
fn unmap_refuses_bad_stale_and_forged_handles() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    // Nothing mapped yet: no maptrack at all.
    assert_eq!(s.unmap(2, 0, va(1), 0), GntSt::BadHandle);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    // Beyond the maptrack, a free handle, another domain's handle.
    assert_eq!(s.unmap(2, 256, va(1), 0), GntSt::BadHandle);
    assert_eq!(s.unmap(2, u32::MAX, va(1), 0), GntSt::BadHandle);
    assert_eq!(s.unmap(2, h + 1, va(1), 0), GntSt::BadHandle);
    assert_eq!(s.unmap(3, h, va(1), 0), GntSt::BadHandle);
    assert_eq!(s.unmap(1, h, va(1), 0), GntSt::BadHandle);
    // Wrong address: general error, mapping intact.
    assert_eq!(s.unmap(2, h, va(2), 0), GntSt::GeneralError);
    assert_eq!(s.unmap(2, h, 1 << 39, 0), GntSt::GeneralError);
    assert_eq!(s.counts(f), (1, 1));
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    // Double unmap: stale.
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::BadHandle);
    assert_eq!(s.counts(f), (0, 0));
    // A handle reused for another grant does not unmap the first one's address.
    s.grant_rw(1, 11, 2, 1);
    let h2 = s.map_ok(2, 1, 11, HOST, va(2));
    let h3 = s.map_ok(2, 1, 10, HOST, va(1));
    assert_eq!(s.unmap(2, h2, va(1), 0), GntSt::GeneralError);
    assert_eq!(s.unmap(2, h3, va(2), 0), GntSt::GeneralError);
    assert_eq!(s.unmap(2, h2, va(2), 0), GntSt::Okay);
    assert_eq!(s.unmap(2, h3, va(1), 0), GntSt::Okay);
}

#[test]
fn unmap_without_address_or_flags_does_nothing_but_succeeds() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    // host_addr 0 and dev_bus_addr 0: okay, nothing undone.
    assert_eq!(s.unmap(2, h, 0, 0), GntSt::Okay);
    assert_eq!(s.counts(f), (1, 1));
    // A device address for a host-only mapping: matches the frame, nothing undone.
    assert_eq!(s.unmap(2, h, 0, f.0 << 12), GntSt::Okay);
    assert_eq!(s.counts(f), (1, 1));
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn a_pte_changed_behind_the_grant_fails_the_unmap_without_leaking() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    // The mapper overwrites the grant PTE through mmu_update: its references go
    // with it (as in a release build of Xen).
    let l1 = s.dom(2).l1;
    s.mmu(2, l1, 1, 0).unwrap();
    assert_eq!(s.counts(f), (0, 0));
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::GeneralError);
    // The pin stays until the mapper's teardown releases it.
    assert_eq!(s.busy_flags(1, 10), READING | WRITING);
    s.destroy(2);
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.pin(1, 10), 0);
}

#[test]
fn unmap_and_replace_moves_the_other_entry_in() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let own = s.data(2, 0);
    let l1 = s.dom(2).l1;
    s.mmu(2, l1, 5, (own.0 << 12) | P | RW | A).unwrap();
    let own_before = s.counts(own);
    let h = s.map_ok(2, 1, 10, HOST, va(1));
    assert_eq!(s.unmap_replace(2, h, va(1), 0, va(5)), GntSt::Okay);
    assert_eq!(s.l1e(2, 1) >> 12 & 0xF_FFFF_FFFF, own.0);
    assert_eq!(s.l1e(2, 5), 0);
    assert_eq!(s.counts(own), own_before);
    assert_eq!(s.counts(f), (0, 0));
    assert_eq!(s.busy_flags(1, 10), 0);
    // With contains_pte, a new_addr is refused.
    let ma = s.l1e_ma(2, 7);
    let h = s.map_ok(2, 1, 10, HOST | PTE, ma);
    assert_eq!(s.unmap_replace(2, h, ma, 0, va(1)), GntSt::GeneralError);
    assert_eq!(s.unmap_replace(2, h, ma, 0, 0), GntSt::Okay);
    assert_eq!(s.counts(f), (0, 0));
}

// ---- copy -----------------------------------------------------------------------------

#[test]
fn copy_between_a_grant_and_an_own_frame_with_offsets() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let theirs = s.data(1, 0);
    let mine = s.data(2, 0);
    s.fill(theirs, 100, b"hello grant");
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 100), CopyEnd::frame(mine, 4000), 11),
        GntSt::Okay
    );
    let got: Vec<u8> = (4000..4011).map(|i| s.byte(mine, i)).collect();
    assert_eq!(got, b"hello grant");
    s.fill(mine, 0, b"back");
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 4092), 4),
        GntSt::Okay
    );
    assert_eq!(
        (4092..4096).map(|i| s.byte(theirs, i)).collect::<Vec<_>>(),
        b"back"
    );
    // Whole page, zero length.
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 0), CopyEnd::frame(mine, 0), 4096),
        GntSt::Okay
    );
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 4096), CopyEnd::frame(mine, 4096), 0),
        GntSt::Okay
    );
    // Both sides pinned only for the copy.
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.counts(theirs), (0, 0));
    assert_eq!(s.counts(mine), (0, 0));
    assert_eq!(s.pin(1, 10), 0);
}

#[test]
fn copy_crossing_a_page_end_is_bad_copy_arg() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let mine = s.data(2, 0);
    for (so, dof, len) in [
        (4095, 0, 2),
        (0, 4095, 2),
        (1, 0, 4096),
        (4096, 0, 1),
        (0, 0, 4097),
    ] {
        assert_eq!(
            s.copy(2, CopyEnd::gref(1, 10, so), CopyEnd::frame(mine, dof), len),
            GntSt::BadCopyArg,
            "{so} {dof} {len}"
        );
    }
    assert_eq!(s.busy_flags(1, 10), 0);
    assert_eq!(s.counts(s.data(1, 0)), (0, 0));
    assert_eq!(s.counts(mine), (0, 0));
}

#[test]
fn copy_domain_and_frame_checks() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    let mine = s.data(2, 0);
    let theirs = s.data(1, 1);
    // A frame with a domain other than DOMID_SELF: permission denied (even dom2's
    // own id, and before the domain lookup).
    let named = |f: Mfn, d: u16| CopyEnd {
        gref: false,
        u: f.0,
        dom: DomId(d),
        off: 0,
    };
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 0), named(mine, 2), 8),
        GntSt::PermissionDenied
    );
    assert_eq!(
        s.copy(2, named(theirs, 1), CopyEnd::frame(mine, 0), 8),
        GntSt::PermissionDenied
    );
    assert_eq!(
        s.copy(2, named(theirs, 9), CopyEnd::frame(mine, 0), 8),
        GntSt::PermissionDenied
    );
    // A frame the caller does not own: bad page.
    assert_eq!(
        s.copy(2, CopyEnd::frame(theirs, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::BadPage
    );
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 0), CopyEnd::frame(theirs, 0), 8),
        GntSt::BadPage
    );
    assert_eq!(
        s.copy(2, CopyEnd::frame(Mfn(N + 1), 0), CopyEnd::frame(mine, 0), 8),
        GntSt::BadPage
    );
    // A grant of an unknown domain, a bad ref, a grant for someone else.
    assert_eq!(
        s.copy(2, CopyEnd::gref(9, 10, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::BadDomain
    );
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 600, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::BadGntref
    );
    let m3 = s.data(3, 0);
    assert_eq!(
        s.copy(3, CopyEnd::gref(1, 10, 0), CopyEnd::frame(m3, 0), 8),
        GntSt::GeneralError
    );
    // Read-only grant as a destination.
    s.grant_ro(1, 11, 2, 1);
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 11, 0), 8),
        GntSt::GeneralError
    );
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 11, 0), CopyEnd::frame(mine, 0), 8),
        GntSt::Okay
    );
    for r in [10, 11] {
        assert_eq!(s.busy_flags(1, r), 0);
    }
    for f in [mine, theirs, s.data(1, 0)] {
        assert_eq!(s.counts(f), (0, 0));
    }
}

#[test]
fn copy_grant_to_grant_and_own_to_own() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.grant_rw(1, 10, 2, 0);
    s.grant_rw(3, 20, 2, 0);
    let a = s.data(1, 0);
    let b = s.data(3, 0);
    s.fill(a, 8, b"abc");
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 8), CopyEnd::gref(3, 20, 16), 3),
        GntSt::Okay
    );
    assert_eq!((16..19).map(|i| s.byte(b, i)).collect::<Vec<_>>(), b"abc");
    let m0 = s.data(2, 0);
    let m1 = s.data(2, 1);
    s.fill(m0, 0, b"xy");
    assert_eq!(
        s.copy(2, CopyEnd::frame(m0, 0), CopyEnd::frame(m1, 2), 2),
        GntSt::Okay
    );
    assert_eq!((2..4).map(|i| s.byte(m1, i)).collect::<Vec<_>>(), b"xy");
    // The same frame, overlapping.
    assert_eq!(
        s.copy(2, CopyEnd::frame(m1, 2), CopyEnd::frame(m1, 3), 2),
        GntSt::Okay
    );
    assert_eq!((2..5).map(|i| s.byte(m1, i)).collect::<Vec<_>>(), b"xxy");
}

#[test]
fn copy_sets_the_flags_while_a_map_of_the_same_grant_stands() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let mine = s.data(2, 0);
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.busy_flags(1, 10), READING);
    // A writing copy into a read-mapped grant adds and then clears GTF_writing only.
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 0), 8),
        GntSt::Okay
    );
    assert_eq!(s.busy_flags(1, 10), READING);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.busy_flags(1, 10), 0);
}

#[test]
fn sub_page_grants_copy_only_inside_their_window() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    let f = s.data(1, 0);
    let mine = s.data(2, 0);
    s.grant_sub(1, 10, 2, f, 512, 256);
    s.fill(f, 512, &[7; 256]);
    assert_eq!(
        s.copy(2, CopyEnd::gref(1, 10, 512), CopyEnd::frame(mine, 0), 256),
        GntSt::Okay
    );
    assert_eq!(s.byte(mine, 255), 7);
    for (off, len) in [(511, 1), (512, 257), (700, 100), (0, 8), (768, 1)] {
        assert_eq!(
            s.copy(2, CopyEnd::gref(1, 10, off), CopyEnd::frame(mine, 0), len),
            GntSt::GeneralError,
            "{off}+{len}"
        );
    }
    // Writing into the window.
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 600), 10),
        GntSt::Okay
    );
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 760), 10),
        GntSt::GeneralError
    );
    assert_eq!(s.status(1, 10), 0);
    assert_eq!(s.counts(f), (0, 0));
}

#[test]
fn transitive_grants_copy_through_one_level() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.gnt(2, |g| g.set_version(2)).0.unwrap();
    // dom1 grants its frame to dom2 (v1); dom2 passes it on to dom3 transitively.
    s.grant_rw(1, 10, 2, 0);
    s.grant_trans(2, 20, 3, 1, 10);
    let f = s.data(1, 0);
    let m3 = s.data(3, 0);
    s.fill(f, 0, b"transitive");
    assert_eq!(
        s.copy(3, CopyEnd::gref(2, 20, 0), CopyEnd::frame(m3, 0), 10),
        GntSt::Okay
    );
    assert_eq!(
        (0..10).map(|i| s.byte(m3, i)).collect::<Vec<_>>(),
        b"transitive"
    );
    // Written through the transitive grant too.
    s.fill(m3, 100, b"W");
    assert_eq!(
        s.copy(3, CopyEnd::frame(m3, 100), CopyEnd::gref(2, 20, 50), 1),
        GntSt::Okay
    );
    assert_eq!(s.byte(f, 50), b'W');
    // Everything released afterwards, on both levels.
    assert_eq!(s.flags(1, 10) & (READING | WRITING), 0);
    assert_eq!(s.status(2, 20), 0);
    assert_eq!(s.pin(1, 10), 0);
    assert_eq!(s.pin(2, 20), 0);
    assert_eq!(s.counts(f), (0, 0));
    // dom2 cannot use dom3's access; dom1's entry is for dom2 only.
    let m2 = s.data(2, 0);
    assert_eq!(
        s.copy(2, CopyEnd::gref(2, 20, 0), CopyEnd::frame(m2, 0), 1),
        GntSt::GeneralError
    );
}

#[test]
fn transitive_grants_refuse_self_reference_chains_and_mapping() {
    let mut s = Sys::with(&[1, 2, 3]);
    s.gnt(2, |g| g.set_version(2)).0.unwrap();
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    let m3 = s.data(3, 0);
    // A transitive grant naming its own domain.
    s.grant_rw(2, 11, 2, 0);
    s.grant_trans(2, 20, 3, 2, 11);
    assert_eq!(
        s.copy(3, CopyEnd::gref(2, 20, 0), CopyEnd::frame(m3, 0), 1),
        GntSt::GeneralError
    );
    // DOMID_SELF as the target, an unknown target.
    s.grant_trans(2, 21, 3, DomId::SELF.0, 11);
    s.grant_trans(2, 22, 3, 9, 11);
    for r in [21, 22] {
        assert_eq!(
            s.copy(3, CopyEnd::gref(2, r, 0), CopyEnd::frame(m3, 0), 1),
            GntSt::GeneralError,
            "ref {r}"
        );
    }
    // A transitive grant pointing at a transitive grant.
    s.grant_rw(3, 30, 1, 1);
    s.grant_trans(1, 12, 2, 3, 30);
    s.grant_trans(2, 23, 3, 1, 12);
    assert_eq!(
        s.copy(3, CopyEnd::gref(2, 23, 0), CopyEnd::frame(m3, 0), 1),
        GntSt::GeneralError
    );
    // The target entry is not for the transitive granter.
    s.grant_rw(1, 13, 3, 0);
    s.grant_trans(2, 24, 3, 1, 13);
    assert_eq!(
        s.copy(3, CopyEnd::gref(2, 24, 0), CopyEnd::frame(m3, 0), 1),
        GntSt::GeneralError
    );
    for (d, r) in [
        (2, 20),
        (2, 21),
        (2, 22),
        (2, 23),
        (2, 24),
        (1, 12),
        (1, 13),
    ] {
        assert_eq!(s.status(d, r), 0, "d{d} ref {r}");
        assert_eq!(s.pin(d, r), 0, "d{d} ref {r}");
    }
    assert!(s.table(2).unpinned());
    assert!(s.table(1).unpinned());
}

// ---- swap, cache_flush ---------------------------------------------------------------

#[test]
fn swap_exchanges_entries_and_is_eagain_while_either_is_pinned() {
    let mut s = Sys::with(&[1, 2]);
    let f0 = s.data(1, 0);
    let f1 = s.data(1, 1);
    s.grant(1, 10, 2, f0, PERMIT);
    s.grant(1, 11, 2, f1, PERMIT | RO);
    let (a, b) = (s.raw(1, 10), s.raw(1, 11));
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(10), GrantRef(11))),
        GntSt::Okay
    );
    assert_eq!((s.raw(1, 10), s.raw(1, 11)), (b, a));
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(10), GrantRef(10))),
        GntSt::Okay
    );
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(10), GrantRef(512))),
        GntSt::BadGntref
    );
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(600), GrantRef(10))),
        GntSt::BadGntref
    );
    let h = s.map_ok(2, 1, 11, HOST, va(1));
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(10), GrantRef(11))),
        GntSt::Eagain
    );
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(11), GrantRef(12))),
        GntSt::Eagain
    );
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    // v2: both words and the status move.
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    s.grant(1, 10, 2, f0, PERMIT);
    s.grant(1, 11, 2, f1, PERMIT | RO);
    assert_eq!(
        s.gnt(1, |g| g.swap(GrantRef(10), GrantRef(11))),
        GntSt::Okay
    );
    assert_eq!((s.raw2(1, 10), s.raw2(1, 11)), (f1.0, f0.0));
    assert_eq!(s.flags(1, 10), PERMIT | RO);
}

#[test]
fn cache_flush_checks() {
    let mut s = Sys::with(&[1, 2]);
    let mine = s.data(2, 0);
    let theirs = s.data(1, 0);
    let op = |a: u64, offset: u16, length: u16, op: u32| GnttabCacheFlush {
        a,
        offset,
        length,
        op,
    };
    let cf = |s: &mut Sys, o: GnttabCacheFlush| s.gnt(2, |g| g.cache_flush(&o));
    assert_eq!(
        cf(&mut s, op(mine.0 << 12, 0, 4096, GNTTAB_CACHE_CLEAN)),
        Ok(())
    );
    assert_eq!(
        cf(&mut s, op(mine.0 << 12, 4096, 0, GNTTAB_CACHE_CLEAN)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        cf(&mut s, op(mine.0 << 12, 1, 4096, GNTTAB_CACHE_CLEAN)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        cf(&mut s, op(mine.0 << 12, 0, 4097, GNTTAB_CACHE_INVAL)),
        Err(Errno::EINVAL)
    );
    assert_eq!(cf(&mut s, op(mine.0 << 12, 0, 8, 4)), Err(Errno::EINVAL));
    // Nothing to do: fine even for a frame that is not there.
    assert_eq!(cf(&mut s, op(u64::MAX, 0, 0, GNTTAB_CACHE_CLEAN)), Ok(()));
    assert_eq!(cf(&mut s, op(u64::MAX, 0, 8, 0)), Ok(()));
    // Outside the frame table, a hypervisor frame, another domain's frame not
    // granted to the caller.
    assert_eq!(
        cf(&mut s, op((N + 4) << 12, 0, 8, GNTTAB_CACHE_CLEAN)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        cf(&mut s, op(theirs.0 << 12, 0, 8, GNTTAB_CACHE_CLEAN)),
        Err(Errno::EINVAL)
    );
    let active0 = {
        let t = s.table(1);
        let _ = t;
        // A private grant-table frame of dom1: owned by the hypervisor.
        s.ft.frames()
            .iter()
            .position(|f| f.owner() == Owner::Xen)
            .unwrap() as u64
    };
    assert_eq!(
        cf(&mut s, op(active0 << 12, 0, 8, GNTTAB_CACHE_CLEAN)),
        Err(Errno::EPERM)
    );
    // Granted and mapped: allowed.
    s.grant_rw(1, 10, 2, 0);
    let h = s.map_ok(2, 1, 10, DEV, 0);
    assert_eq!(
        cf(&mut s, op(theirs.0 << 12, 0, 8, GNTTAB_CACHE_INVAL)),
        Ok(())
    );
    assert_eq!(s.unmap(2, h, 0, theirs.0 << 12), GntSt::Okay);
    assert_eq!(
        cf(&mut s, op(theirs.0 << 12, 0, 8, GNTTAB_CACHE_INVAL)),
        Err(Errno::EINVAL)
    );
}

// ---- transfer -------------------------------------------------------------------------

#[test]
fn transfer_steal_refuses_a_referenced_or_foreign_frame() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f = s.data(1, 0);
    let h = s.map_ok(2, 1, 10, DEV, 0);
    assert_eq!(s.gnt(1, |g| g.steal(f)), Err(GntSt::BadPage));
    assert_eq!(s.unmap(2, h, 0, f.0 << 12), GntSt::Okay);
    // Its page tables, someone else's frame, a frame outside the table.
    let l1 = s.dom(1).l1;
    let other = s.data(2, 0);
    for bad in [l1, other, Mfn(N + 3)] {
        assert_eq!(s.gnt(1, |g| g.steal(bad)), Err(GntSt::BadPage), "{bad}");
    }
    // A frame its own L1 maps.
    let g = s.data(1, 1);
    s.mmu(1, l1, 4, (g.0 << 12) | P | A).unwrap();
    assert_eq!(s.gnt(1, |gn| gn.steal(g)), Err(GntSt::BadPage));
    assert_eq!(s.ft.owner(g), Some(Owner::Domain(DomId(1))));
}

#[test]
fn transfer_commits_the_frame_into_the_receivers_entry() {
    let mut s = Sys::with(&[1, 2]);
    let f = s.data(1, 0);
    // dom2 accepts a transfer from dom1 into entry 12 at its pfn 0x77.
    s.grant(2, 12, 1, Mfn(0x77), GtfFlags::ACCEPT_TRANSFER.bits());
    s.gnt(1, |g| g.steal(f)).unwrap();
    assert_eq!(s.ft.owner(f), Some(Owner::Free));
    s.gnt(1, |g| g.accept_transfer(DomId(2), GrantRef(12), f))
        .unwrap();
    assert_eq!(s.ft.owner(f), Some(Owner::Domain(DomId(2))));
    let e = s.raw(2, 12);
    let committed = GtfFlags::TRANSFER_COMMITTED.bits() | GtfFlags::TRANSFER_COMPLETED.bits();
    assert_eq!(e as u16, GtfFlags::ACCEPT_TRANSFER.bits() | committed);
    assert_eq!(e >> 32, f.0);
    assert_eq!(crate::mm::page_type::M2p::get(&s.m2p, f), 0x77);
}

#[test]
fn transfer_into_v2_writes_the_frame_word() {
    let mut s = Sys::with(&[1, 2]);
    s.gnt(2, |g| g.set_version(2)).0.unwrap();
    let f = s.data(1, 0);
    s.grant(2, 12, 1, Mfn(0x55), GtfFlags::ACCEPT_TRANSFER.bits());
    s.gnt(1, |g| g.steal(f)).unwrap();
    s.gnt(1, |g| g.accept_transfer(DomId(2), GrantRef(12), f))
        .unwrap();
    assert_eq!(s.raw2(2, 12), f.0);
    assert_eq!(crate::mm::page_type::M2p::get(&s.m2p, f), 0x55);
}

#[test]
fn transfer_refused_by_the_receivers_entry() {
    let mut s = Sys::with(&[1, 2, 3]);
    let f = s.data(1, 0);
    s.gnt(1, |g| g.steal(f)).unwrap();
    let acc = GtfFlags::ACCEPT_TRANSFER.bits();
    // Not accept_transfer, for another domain, bad ref, unknown domain, already
    // committed.
    s.grant(2, 12, 1, Mfn(1), PERMIT);
    s.grant(2, 13, 3, Mfn(1), acc);
    s.grant(2, 14, 1, Mfn(1), acc | GtfFlags::TRANSFER_COMMITTED.bits());
    for r in [12, 13, 14, 11] {
        assert_eq!(
            s.gnt(1, |g| g.accept_transfer(DomId(2), GrantRef(r), f)),
            Err(GntSt::GeneralError),
            "ref {r}"
        );
    }
    assert_eq!(
        s.gnt(1, |g| g.accept_transfer(DomId(2), GrantRef(512), f)),
        Err(GntSt::GeneralError)
    );
    assert_eq!(
        s.gnt(1, |g| g.accept_transfer(DomId(9), GrantRef(12), f)),
        Err(GntSt::BadDomain)
    );
    assert_eq!(s.ft.owner(f), Some(Owner::Free));
    assert_eq!(s.raw(2, 12) as u16, PERMIT);
}

#[test]
fn a_writable_copy_after_the_granter_moved_a_pinned_entry_keeps_references_balanced() {
    let mut s = Sys::with(&[1, 2]);
    s.grant_rw(1, 10, 2, 0);
    let f0 = s.data(1, 0);
    let f1 = s.data(1, 1);
    let mine = s.data(2, 0);
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    assert_eq!(s.counts(f0), (1, 0));
    // The granter points the pinned entry at another frame of its own.
    s.grant(1, 10, 2, f1, PERMIT | READING);
    s.fill(mine, 0, b"zz");
    // A writable copy upgrades the pin: the frame in use stays the pinned one.
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 0), 2),
        GntSt::Okay
    );
    assert_eq!(s.byte(f0, 1), b'z', "the copy went to the pinned frame");
    assert_eq!(s.counts(f0), (1, 0), "the read-only mapping's reference");
    assert_eq!(
        s.counts(f1),
        (0, 0),
        "nothing left on the entry's new frame"
    );
    // The pinned frame becomes an L1 of the granter (the mapping is read-only):
    // a writable copy must now be refused, and still balance.
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    s.grant_rw(1, 10, 2, 0);
    let h = s.map_ok(2, 1, 10, HOST | MRO, va(1));
    s.ext(1, MmuextCmd::PinL1Table, f0).unwrap();
    s.grant(1, 10, 2, f1, PERMIT | READING);
    let before = s.counts(f0);
    assert_eq!(
        s.copy(2, CopyEnd::frame(mine, 0), CopyEnd::gref(1, 10, 0), 2),
        GntSt::GeneralError
    );
    assert_eq!(s.counts(f0), before);
    assert_eq!(s.counts(f1), (0, 0));
    assert_eq!(s.busy_flags(1, 10), READING);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    s.ext(1, MmuextCmd::UnpinTable, f0).unwrap();
    assert_eq!(s.counts(f0), (0, 0));
}

#[test]
fn a_copy_through_a_transitive_entry_pinned_by_a_map_balances() {
    // dom1's v2 entry 12 is transitive (to dom3's ref `tref`); a map reads it as a
    // full-page entry of frame `tref` (Xen's quirk) and pins it. A copy through the
    // same entry must not mix the map's pin with the transitive chain.
    let mut s = Sys::with(&[1, 2, 3]);
    s.gnt(1, |g| g.set_version(2)).0.unwrap();
    let own = s.data(1, 2);
    let x = s.data(3, 0);
    let tref = own.0 as u32;
    s.gnt(3, |g| g.setup_table(DomId::SELF, 2)).unwrap();
    s.grant(3, tref, 1, x, PERMIT);
    s.grant_trans(1, 12, 2, 3, tref);
    let h = s.map_ok(2, 1, 12, HOST | MRO, va(1));
    assert_eq!(s.counts(own), (1, 0));
    let mine = s.data(2, 0);
    let st = s.copy(2, CopyEnd::gref(1, 12, 0), CopyEnd::frame(mine, 0), 8);
    assert_ne!(st, GntSt::Okay, "Xen restarts this forever; refused here");
    assert_eq!(s.counts(own), (1, 0), "the mapping keeps its reference");
    assert_eq!(s.counts(x), (0, 0));
    assert_eq!(s.pin(3, tref), 0);
    assert_eq!(s.flags(3, tref) & (READING | WRITING), 0);
    assert_eq!(s.unmap(2, h, va(1), 0), GntSt::Okay);
    assert_eq!(s.counts(own), (0, 0));
    assert_eq!(s.pin(1, 12), 0);
}
