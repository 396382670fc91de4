//! `grant_table_op` (#20) as a guest issues it: copy-in and copy-out of each sub-op,
//! batches and continuations, per-element status, the errnos of the whole call, and
//! transfer with its reservation accounting.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::gnttab::{GrantTable, GrantTables, Limits};
use crate::mm::Mfn;
use crate::mm::frame_table::Owner;
use crate::mm::mmu::{ForeignDomain, VcpuMm, mmuext_op};
use crate::mm::page_type::{M2p, MachineMemory};
use crate::testutil::*;
use hypercall_abi::gnttab::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTTAB_CACHE_CLEAN, GntMapFlags, GntSt,
    GnttabCacheFlush, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef,
    GnttabTransfer, GnttabUnmapAndReplace, GnttabUnmapGrantRef, GtfFlags,
};
use hypercall_abi::hypercall as hc;
use hypercall_abi::mmu::{MmuextCmd, MmuextOp};
use hypercall_abi::types::{DomId, GrantRef};

const MAP: u32 = 0;
const UNMAP: u32 = 1;
const SETUP: u32 = 2;
const DUMP: u32 = 3;
const TRANSFER: u32 = 4;
const COPY: u32 = 5;
const QUERY: u32 = 6;
const UNMAP_REPLACE: u32 = 7;
const SET_VERSION: u32 = 8;
const GET_STATUS: u32 = 9;
const GET_VERSION: u32 = 10;
const SWAP: u32 = 11;
const CACHE_FLUSH: u32 = 12;

const LIMITS: Limits = Limits {
    max_grant_frames: 4,
    max_maptrack_frames: 2,
    max_version: 2,
};

const HOST: u32 = GntMapFlags::HOST_MAP.bits();
const DEV: u32 = GntMapFlags::DEVICE_MAP.bits();
const RO: u32 = GntMapFlags::READONLY.bits();
const PERMIT: u16 = GtfFlags::PERMIT_ACCESS.bits();

/// Where dom1's L1 maps grant slot `i`.
const fn slot(i: u64) -> u64 {
    i << 12
}

/// dom1 (current, unprivileged) and dom2 (another domain), each with a grant table,
/// dom1 with page tables (L4 -> L3 -> L2 -> L1 at index 0, pinned, its kernel root)
/// and 4 data frames; dom2 with 4 data frames. Returns the world and the frames
/// (dom1's L1, dom1's data, dom2's data).
fn world() -> (World, Mfn, Vec<Mfn>, Vec<Mfn>) {
    let mut w = World::kernel();
    w.p.pool = (0x100..0x300).collect();
    let mut d2 = crate::domain::Domain::new(DomId(2), false, Mfn(0x98));
    d2.max_pages = 100;
    d2.tot_pages = 4;
    w.p.others.insert(2, d2);
    w.dom.max_pages = 100;
    w.dom.tot_pages = 8;
    for id in [1u16, 2] {
        let mut t = GrantTable::new(DomId(id), LIMITS);
        let mut pool = FakePool {
            free: &mut w.p.pool,
            freed: &mut w.p.freed,
        };
        assert!(t.init(&mut w.p.mm.mem, &mut w.p.mm.ft, &mut pool));
        w.p.gnttab.0.insert(id, t);
    }
    let take = |w: &mut World, id: u16, n: usize| -> Vec<Mfn> {
        (0..n)
            .map(|i| {
                let f = *w.p.pool.iter().next().unwrap();
                w.p.pool.remove(&f);
                let f = Mfn(f);
                w.p.mm.ft.assign(f, Owner::Domain(DomId(id))).unwrap();
                w.p.mm.mem.zero_page(f);
                w.p.mm.m2p.set(f, i as u64);
                f
            })
            .collect()
    };
    let pt = take(&mut w, 1, 4);
    let d1 = take(&mut w, 1, 4);
    let d2 = take(&mut w, 2, 4);
    let up = 0x67; // P|RW|U|A|D
    for i in 0..3 {
        w.p.mm.mem.write_entry(pt[i], 0, (pt[i + 1].0 << 12) | up);
    }
    w.p.gnttab(DomId(1), false, |mm, _, _| {
        let own = ForeignDomain::own(mm);
        let _ = mmuext_op(
            mm,
            &mut VcpuMm::default(),
            MmuextOp::on_frame(MmuextCmd::PinL4Table, pt[0]),
            own,
        )
        .unwrap();
    });
    w.vcpu.kernel_root = pt[0];
    (w, pt[3], d1, d2)
}

/// Writes v1 entry `r` of `granter`'s table.
fn grant(w: &mut World, granter: u16, r: u32, grantee: u16, frame: Mfn, flags: u16) {
    let t = w.p.gnttab.get(DomId(granter)).unwrap();
    let f = t.guest_frames().next().unwrap();
    w.p.mm.mem.write_entry(
        f,
        r as usize,
        u64::from(flags) | u64::from(grantee) << 16 | frame.0 << 32,
    );
}

fn entry(w: &mut World, granter: u16, r: u32) -> u64 {
    let f =
        w.p.gnttab
            .get(DomId(granter))
            .unwrap()
            .guest_frames()
            .next()
            .unwrap();
    w.p.mm.mem.read_entry(f, r as usize)
}

fn map_op(dom: u16, r: u32, flags: u32, host_addr: u64) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr,
        flags,
        ref_: GrantRef(r),
        dom: DomId(dom),
        status: 0x55,
        handle: 0xAAAA,
        dev_bus_addr: 0xBBBB,
    }
}

fn call(w: &mut World, cmd: u32, count: u32) -> Result<u64, Errno> {
    hc::grant_table_op(w, cmd, ptr(KDATA), count)
}

#[test]
fn unknown_and_malformed_commands() {
    let (mut w, ..) = world();
    assert_eq!(call(&mut w, 13, 1), E(Errno::ENOSYS));
    assert_eq!(call(&mut w, DUMP, 1), E(Errno::ENOSYS));
    // Continuation bits above the command are cache_flush's only.
    assert_eq!(call(&mut w, MAP | 1 << 12, 1), E(Errno::EINVAL));
    assert_eq!(call(&mut w, MAP, 0x8000_0000), E(Errno::EINVAL));
    // count 0 does nothing.
    assert_eq!(hc::grant_table_op(&mut w, MAP, ptr(UNMAPPED), 0), Ok(0));
    // An array outside guest space.
    assert_eq!(
        hc::grant_table_op(&mut w, MAP, ptr(0xFFFF_8000_0000_0000), 1),
        E(Errno::EFAULT)
    );
    assert_eq!(
        hc::grant_table_op(&mut w, COPY, ptr(UNMAPPED), 1),
        E(Errno::EFAULT)
    );
}

#[test]
fn setup_table_copies_the_frame_list_and_the_status() {
    let (mut w, ..) = world();
    let list = KDATA + 0x1000;
    let op = GnttabSetupTable {
        dom: DomId::SELF,
        _pad0: 0,
        nr_frames: 2,
        status: 0x55,
        _pad1: [0; 3],
        frame_list: ptr(list),
    };
    w.p.poke_obj(KDATA, &op);
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    let out: GnttabSetupTable = w.p.peek_obj(KDATA);
    assert_eq!(out.status, 0);
    let frames: Vec<u64> =
        w.p.gnttab
            .get(DomId(1))
            .unwrap()
            .guest_frames()
            .map(|f| f.0)
            .collect();
    assert_eq!(w.p.peek_u64s(list, 2), frames);
    // count must be 1.
    assert_eq!(call(&mut w, SETUP, 2), E(Errno::EINVAL));
    assert_eq!(call(&mut w, SETUP, 0), E(Errno::EINVAL));
    // Too many frames: a status, and the call succeeds.
    w.p.poke_obj(KDATA, &GnttabSetupTable { nr_frames: 5, ..op });
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabSetupTable>(KDATA).status,
        GntSt::GeneralError as i16
    );
    // Another domain without privilege.
    w.p.poke_obj(
        KDATA,
        &GnttabSetupTable {
            dom: DomId(2),
            ..op
        },
    );
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabSetupTable>(KDATA).status,
        GntSt::PermissionDenied as i16
    );
    w.p.poke_obj(
        KDATA,
        &GnttabSetupTable {
            dom: DomId(7),
            ..op
        },
    );
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabSetupTable>(KDATA).status,
        GntSt::BadDomain as i16
    );
    // A frame list outside guest space: -EFAULT before anything else.
    w.p.poke_obj(
        KDATA,
        &GnttabSetupTable {
            frame_list: ptr(0xFFFF_8000_0000_0000),
            ..op
        },
    );
    assert_eq!(call(&mut w, SETUP, 1), E(Errno::EFAULT));
    // A frame list in guest space but not mapped: bad_virt_addr, the table grew.
    w.p.poke_obj(
        KDATA,
        &GnttabSetupTable {
            nr_frames: 3,
            frame_list: ptr(UNMAPPED),
            ..op
        },
    );
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabSetupTable>(KDATA).status,
        GntSt::BadVirtAddr as i16
    );
    assert_eq!(w.p.gnttab.get(DomId(1)).unwrap().nr_grant_frames(), 3);
    // An unreadable request.
    assert_eq!(
        hc::grant_table_op(&mut w, SETUP, ptr(UNMAPPED), 1),
        E(Errno::EFAULT)
    );
}

#[test]
fn setup_table_writes_back_only_the_status() {
    let (mut w, ..) = world();
    let op = GnttabSetupTable {
        dom: DomId::SELF,
        _pad0: 0x1234,
        nr_frames: 1,
        status: 0x55,
        _pad1: [0x7777; 3],
        frame_list: ptr(KDATA + 0x1000),
    };
    w.p.poke_obj(KDATA, &op);
    assert_eq!(call(&mut w, SETUP, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabSetupTable>(KDATA),
        GnttabSetupTable { status: 0, ..op }
    );
}

#[test]
fn query_size_get_and_set_version_and_status_frames() {
    let (mut w, ..) = world();
    w.p.poke_obj(
        KDATA,
        &GnttabQuerySize {
            dom: DomId::SELF,
            ..Default::default()
        },
    );
    assert_eq!(call(&mut w, QUERY, 1), Ok(0));
    let q: GnttabQuerySize = w.p.peek_obj(KDATA);
    assert_eq!((q.nr_frames, q.max_nr_frames, q.status), (1, 4, 0));
    assert_eq!(call(&mut w, QUERY, 2), E(Errno::EINVAL));
    w.p.poke_obj(
        KDATA,
        &GnttabQuerySize {
            dom: DomId(2),
            ..Default::default()
        },
    );
    assert_eq!(call(&mut w, QUERY, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabQuerySize>(KDATA).status,
        GntSt::PermissionDenied as i16
    );

    let getv = |w: &mut World, dom: DomId| {
        w.p.poke_obj(
            KDATA,
            &GnttabGetVersion {
                dom,
                pad: 0,
                version: 99,
            },
        );
        call(w, GET_VERSION, 1).map(|_| w.p.peek_obj::<GnttabGetVersion>(KDATA).version)
    };
    assert_eq!(getv(&mut w, DomId::SELF), Ok(1));
    assert_eq!(getv(&mut w, DomId(2)), Err(Errno::EPERM));
    assert_eq!(getv(&mut w, DomId(9)), Err(Errno::ESRCH));

    let setv = |w: &mut World, v: u32| {
        w.p.poke_obj(KDATA, &GnttabSetVersion { version: v });
        let r = call(w, SET_VERSION, 1);
        (r, w.p.peek_obj::<GnttabSetVersion>(KDATA).version)
    };
    assert_eq!(setv(&mut w, 3), (E(Errno::EINVAL), 1));
    assert_eq!(setv(&mut w, 2), (Ok(0), 2));
    assert_eq!(getv(&mut w, DomId::SELF), Ok(2));

    let list = KDATA + 0x1000;
    let gs = GnttabGetStatusFrames {
        nr_frames: 1,
        dom: DomId::SELF,
        status: 0x55,
        frame_list: ptr(list),
    };
    w.p.poke_obj(KDATA, &gs);
    assert_eq!(call(&mut w, GET_STATUS, 1), Ok(0));
    assert_eq!(w.p.peek_obj::<GnttabGetStatusFrames>(KDATA).status, 0);
    let t = w.p.gnttab.get(DomId(1)).unwrap();
    let sf = t.guest_frames().nth(1).unwrap();
    assert_eq!(w.p.peek_u64s(list, 1), vec![sf.0]);
    assert_eq!(call(&mut w, GET_STATUS, 2), E(Errno::EINVAL));
    w.p.poke_obj(KDATA, &GnttabGetStatusFrames { nr_frames: 2, ..gs });
    assert_eq!(call(&mut w, GET_STATUS, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabGetStatusFrames>(KDATA).status,
        GntSt::GeneralError as i16
    );
    w.p.poke_obj(
        KDATA,
        &GnttabGetStatusFrames {
            frame_list: ptr(UNMAPPED),
            ..gs
        },
    );
    assert_eq!(call(&mut w, GET_STATUS, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabGetStatusFrames>(KDATA).status,
        GntSt::BadVirtAddr as i16
    );
    assert_eq!(setv(&mut w, 1), (Ok(0), 1));
}

#[test]
fn map_and_unmap_batches_report_per_element_and_flush_once() {
    let (mut w, l1, _, d2) = world();
    grant(&mut w, 2, 10, 1, d2[0], PERMIT);
    grant(&mut w, 2, 11, 1, d2[1], PERMIT);
    let ops = [
        map_op(2, 10, HOST, slot(1)),
        map_op(2, 11, HOST | RO, slot(2)),
        map_op(2, 12, HOST, slot(3)), // not granted
        map_op(2, 10, DEV, 0),
    ];
    for (i, op) in ops.iter().enumerate() {
        w.p.poke_obj(KDATA + 32 * i as u64, op);
    }
    assert_eq!(call(&mut w, MAP, 4), Ok(0));
    let out: Vec<GnttabMapGrantRef> = (0..4).map(|i| w.p.peek_obj(KDATA + 32 * i)).collect();
    assert_eq!(out[0].status, 0);
    assert_eq!(out[0].dev_bus_addr, d2[0].0 << 12);
    assert_eq!(out[1].status, 0);
    assert_eq!(out[2].status, GntSt::GeneralError as i16);
    assert_eq!(
        (out[2].handle, out[2].dev_bus_addr),
        (0xAAAA, 0xBBBB),
        "a failed map writes only its status"
    );
    assert_eq!(out[3].status, 0);
    assert_eq!(w.p.mm.mem.read_entry(l1, 1) >> 12 & 0xF_FFFF_FFFF, d2[0].0);
    assert_eq!(w.p.mm.mem.read_entry(l1, 2) & 3, 1);
    // GTF_reading|GTF_writing in the granter's entries.
    assert_eq!(entry(&mut w, 2, 10) as u16, PERMIT | 0x18);
    assert_eq!(entry(&mut w, 2, 11) as u16, PERMIT | 0x08);

    let unmaps = [
        GnttabUnmapGrantRef {
            host_addr: slot(1),
            dev_bus_addr: 0,
            handle: out[0].handle,
            status: 0x55,
            _pad: 0,
        },
        GnttabUnmapGrantRef {
            host_addr: slot(2),
            dev_bus_addr: 0,
            handle: out[1].handle,
            status: 0x55,
            _pad: 0,
        },
        GnttabUnmapGrantRef {
            host_addr: 0,
            dev_bus_addr: d2[0].0 << 12,
            handle: out[3].handle,
            status: 0x55,
            _pad: 0,
        },
        GnttabUnmapGrantRef {
            host_addr: slot(1),
            dev_bus_addr: 0,
            handle: out[0].handle,
            status: 0x55,
            _pad: 0,
        },
    ];
    for (i, op) in unmaps.iter().enumerate() {
        w.p.poke_obj(KDATA + 24 * i as u64, op);
    }
    w.p.tlb_flushes.clear();
    assert_eq!(call(&mut w, UNMAP, 4), Ok(0));
    let st: Vec<i16> = (0..4)
        .map(|i| w.p.peek_obj::<GnttabUnmapGrantRef>(KDATA + 24 * i).status)
        .collect();
    assert_eq!(st, vec![0, 0, 0, GntSt::BadHandle as i16]);
    assert_eq!(w.p.tlb_flushes.len(), 1, "one flush for the batch");
    assert_eq!(w.p.mm.mem.read_entry(l1, 1), 0);
    assert_eq!(entry(&mut w, 2, 10) as u16, PERMIT);
    assert_eq!(entry(&mut w, 2, 11) as u16, PERMIT);
    for f in &d2[..2] {
        let i = w.p.mm.ft.info(*f).unwrap();
        assert_eq!((i.count(), i.type_count()), (0, 0));
    }
}

#[test]
fn a_long_map_batch_continues() {
    let (mut w, _, _, d2) = world();
    grant(&mut w, 2, 10, 1, d2[0], PERMIT);
    let n = 300u32;
    for i in 0..u64::from(n) {
        // Most fail cheaply (bad ref); every 50th maps read-only by device.
        let op = if i % 50 == 0 {
            map_op(2, 10, DEV | RO, 0)
        } else {
            map_op(2, 9999, DEV | RO, 0)
        };
        w.p.poke_obj(KDATA + 32 * i, &op);
    }
    call(&mut w, MAP, n).unwrap();
    assert!(w.regs.rip == KRIP, "preempted after a batch: continuation");
    let rax = reissue(&mut w);
    assert_eq!(rax, 0);
    let ok = (0..u64::from(n))
        .filter(|&i| w.p.peek_obj::<GnttabMapGrantRef>(KDATA + 32 * i).status == 0)
        .count();
    assert_eq!(ok, 6);
    for i in 0..u64::from(n) {
        let st = w.p.peek_obj::<GnttabMapGrantRef>(KDATA + 32 * i).status;
        let want = if i % 50 == 0 {
            0
        } else {
            GntSt::BadGntref as i16
        };
        assert_eq!(st, want, "element {i}");
    }
}

#[test]
fn unmap_stops_at_an_unreadable_element_after_completing_the_earlier_ones() {
    let (mut w, _, _, d2) = world();
    grant(&mut w, 2, 10, 1, d2[0], PERMIT);
    w.p.poke_obj(KDATA, &map_op(2, 10, DEV, 0));
    call(&mut w, MAP, 1).unwrap();
    let h = w.p.peek_obj::<GnttabMapGrantRef>(KDATA).handle;
    let at = KDATA + 0x4000 - 24;
    w.p.poke_obj(
        at,
        &GnttabUnmapGrantRef {
            host_addr: 0,
            dev_bus_addr: d2[0].0 << 12,
            handle: h,
            status: 0x55,
            _pad: 0,
        },
    );
    // The second element lies on an unmapped page.
    assert_eq!(
        hc::grant_table_op(&mut w, UNMAP, ptr(at), 2),
        E(Errno::EFAULT)
    );
    assert_eq!(w.p.peek_obj::<GnttabUnmapGrantRef>(at).status, 0);
    let i = w.p.mm.ft.info(d2[0]).unwrap();
    assert_eq!((i.count(), i.type_count()), (0, 0));
    assert_eq!(entry(&mut w, 2, 10) as u16, PERMIT);
}

#[test]
fn unmap_and_replace_by_hypercall() {
    let (mut w, l1, d1, d2) = world();
    grant(&mut w, 2, 10, 1, d2[0], PERMIT);
    w.p.gnttab(DomId(1), false, |mm, _, _| {
        let own = ForeignDomain::own(mm);
        let req = hypercall_abi::mmu::MmuUpdate {
            ptr: (l1.0 << 12) | (5 * 8),
            val: (d1[0].0 << 12) | 0x23,
        };
        let _ = crate::mm::mmu::mmu_update_entry(mm, req, own).unwrap();
    });
    w.p.poke_obj(KDATA, &map_op(2, 10, HOST, slot(1)));
    call(&mut w, MAP, 1).unwrap();
    let h = w.p.peek_obj::<GnttabMapGrantRef>(KDATA).handle;
    w.p.poke_obj(
        KDATA,
        &GnttabUnmapAndReplace {
            host_addr: slot(1),
            new_addr: slot(5),
            handle: h,
            status: 0x55,
            _pad: 0,
        },
    );
    assert_eq!(call(&mut w, UNMAP_REPLACE, 1), Ok(0));
    assert_eq!(w.p.peek_obj::<GnttabUnmapAndReplace>(KDATA).status, 0);
    assert_eq!(w.p.mm.mem.read_entry(l1, 1) >> 12 & 0xF_FFFF_FFFF, d1[0].0);
    assert_eq!(w.p.mm.mem.read_entry(l1, 5), 0);
}

#[test]
fn copy_by_hypercall() {
    let (mut w, _, d1, d2) = world();
    grant(&mut w, 2, 10, 1, d2[0], PERMIT);
    w.p.mm.mem.write_entry(d2[0], 1, 0x1122_3344_5566_7788);
    let c = |src: GnttabCopyPtr, dest: GnttabCopyPtr, len, flags| GnttabCopy {
        source: src,
        dest,
        len,
        flags,
        status: 0x55,
        _pad: 0,
    };
    let g = GnttabCopyPtr {
        u: 10,
        domid: DomId(2),
        offset: 8,
        _pad: 0,
    };
    let own = GnttabCopyPtr {
        u: d1[0].0,
        domid: DomId::SELF,
        offset: 16,
        _pad: 0,
    };
    w.p.poke_obj(KDATA, &c(g, own, 8, GNTCOPY_SOURCE_GREF));
    w.p.poke_obj(KDATA + 40, &c(own, g, 8, GNTCOPY_SOURCE_GREF)); // dest a frame of dom2's id
    w.p.poke_obj(KDATA + 80, &c(g, own, 4090, GNTCOPY_SOURCE_GREF));
    w.p.poke_obj(KDATA + 120, &c(own, g, 2, GNTCOPY_DEST_GREF));
    assert_eq!(call(&mut w, COPY, 4), Ok(0));
    let st: Vec<i16> = (0..4)
        .map(|i| w.p.peek_obj::<GnttabCopy>(KDATA + 40 * i).status)
        .collect();
    assert_eq!(
        st,
        vec![
            0,
            GntSt::PermissionDenied as i16,
            GntSt::BadCopyArg as i16,
            0
        ]
    );
    assert_eq!(w.p.mm.mem.read_entry(d1[0], 2), 0x1122_3344_5566_7788);
    assert_eq!(w.p.mm.mem.read_entry(d2[0], 1), 0x1122_3344_5566_7788);
    assert_eq!(entry(&mut w, 2, 10) as u16, PERMIT);
}

#[test]
fn swap_and_cache_flush_by_hypercall() {
    let (mut w, _, d1, d2) = world();
    grant(&mut w, 1, 10, 2, d1[0], PERMIT);
    grant(&mut w, 1, 11, 2, d1[1], PERMIT | 4);
    let (a, b) = (entry(&mut w, 1, 10), entry(&mut w, 1, 11));
    w.p.poke_obj(
        KDATA,
        &GnttabSwapGrantRef {
            ref_a: GrantRef(10),
            ref_b: GrantRef(11),
            status: 0x55,
            _pad: 0,
        },
    );
    w.p.poke_obj(
        KDATA + 12,
        &GnttabSwapGrantRef {
            ref_a: GrantRef(10),
            ref_b: GrantRef(5000),
            status: 0x55,
            _pad: 0,
        },
    );
    assert_eq!(call(&mut w, SWAP, 2), Ok(0));
    assert_eq!(w.p.peek_obj::<GnttabSwapGrantRef>(KDATA).status, 0);
    assert_eq!(
        w.p.peek_obj::<GnttabSwapGrantRef>(KDATA + 12).status,
        GntSt::BadGntref as i16
    );
    assert_eq!((entry(&mut w, 1, 10), entry(&mut w, 1, 11)), (b, a));

    let cf = |a: u64, length: u16| GnttabCacheFlush {
        a,
        offset: 0,
        length,
        op: GNTTAB_CACHE_CLEAN,
    };
    w.p.poke_obj(KDATA, &cf(d1[0].0 << 12, 64));
    w.p.poke_obj(KDATA + 16, &cf(d1[0].0 << 12, 64));
    assert_eq!(call(&mut w, CACHE_FLUSH, 2), Ok(0));
    w.p.poke_obj(KDATA + 16, &cf(d2[0].0 << 12, 64));
    assert_eq!(call(&mut w, CACHE_FLUSH, 2), E(Errno::EINVAL));
    assert_eq!(
        hc::grant_table_op(&mut w, CACHE_FLUSH, ptr(UNMAPPED), 1),
        E(Errno::EFAULT)
    );
}

fn transfer_op(mfn: Mfn, domid: u16, r: u32) -> GnttabTransfer {
    GnttabTransfer {
        mfn: hypercall_abi::types::Mfn(mfn.0),
        domid: DomId(domid),
        _pad0: 0,
        ref_: GrantRef(r),
        status: 0x55,
        _pad1: [0; 3],
    }
}

#[test]
fn transfer_moves_a_frame_and_its_reservation() {
    let (mut w, _, d1, _) = world();
    let acc = GtfFlags::ACCEPT_TRANSFER.bits();
    grant(&mut w, 2, 12, 1, Mfn(0x42), acc);
    w.p.poke_obj(KDATA, &transfer_op(d1[3], 2, 12));
    assert_eq!(call(&mut w, TRANSFER, 1), Ok(0));
    assert_eq!(w.p.peek_obj::<GnttabTransfer>(KDATA).status, 0);
    assert_eq!(w.p.mm.ft.owner(d1[3]), Some(Owner::Domain(DomId(2))));
    assert_eq!(w.p.mm.m2p.get(d1[3]), 0x42);
    let e = entry(&mut w, 2, 12);
    let done = GtfFlags::TRANSFER_COMMITTED.bits() | GtfFlags::TRANSFER_COMPLETED.bits();
    assert_eq!(e as u16, acc | done);
    assert_eq!(e >> 32, d1[3].0);
    assert_eq!(w.dom.tot_pages, 7);
    assert_eq!(w.p.others[&2].tot_pages, 5);
}

#[test]
fn transfer_failures() {
    let (mut w, l1, d1, d2) = world();
    let acc = GtfFlags::ACCEPT_TRANSFER.bits();
    grant(&mut w, 2, 12, 1, Mfn(0x42), acc);
    // A frame the caller does not own, a page table, a mapped frame: bad_page, and
    // nothing changes.
    grant(&mut w, 2, 10, 1, d2[1], PERMIT);
    w.p.poke_obj(KDATA, &map_op(2, 10, DEV | RO, 0));
    call(&mut w, MAP, 1).unwrap();
    grant(&mut w, 1, 20, 1, d1[0], PERMIT);
    w.p.poke_obj(KDATA, &map_op(1, 20, HOST, slot(1)));
    call(&mut w, MAP, 1).unwrap();
    for bad in [d2[0], l1, d1[0], Mfn(0x5000)] {
        w.p.poke_obj(KDATA, &transfer_op(bad, 2, 12));
        assert_eq!(call(&mut w, TRANSFER, 1), Ok(0));
        assert_eq!(
            w.p.peek_obj::<GnttabTransfer>(KDATA).status,
            GntSt::BadPage as i16,
            "{bad}"
        );
    }
    assert_eq!(w.dom.tot_pages, 8);
    // The receiver has no headroom: the frame leaves the caller and is freed.
    w.p.others.get_mut(&2).unwrap().max_pages = 4;
    w.p.freed.clear();
    w.p.poke_obj(KDATA, &transfer_op(d1[2], 2, 12));
    assert_eq!(call(&mut w, TRANSFER, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabTransfer>(KDATA).status,
        GntSt::GeneralError as i16
    );
    assert_eq!(w.p.mm.ft.owner(d1[2]), Some(Owner::Free));
    assert_eq!(w.p.freed, vec![(d1[2].0, 1)]);
    assert_eq!(w.dom.tot_pages, 7);
    assert_eq!(w.p.others[&2].tot_pages, 4);
    assert_eq!(entry(&mut w, 2, 12) as u16, acc);
    // The entry does not accept a transfer: freed too, the receiver's count undone.
    w.p.others.get_mut(&2).unwrap().max_pages = 100;
    w.p.poke_obj(KDATA, &transfer_op(d1[1], 2, 10));
    assert_eq!(call(&mut w, TRANSFER, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabTransfer>(KDATA).status,
        GntSt::GeneralError as i16
    );
    assert_eq!(w.p.mm.ft.owner(d1[1]), Some(Owner::Free));
    assert_eq!(w.p.others[&2].tot_pages, 4);
    // An unknown receiver.
    w.p.poke_obj(KDATA, &transfer_op(d1[3], 9, 12));
    assert_eq!(call(&mut w, TRANSFER, 1), Ok(0));
    assert_eq!(
        w.p.peek_obj::<GnttabTransfer>(KDATA).status,
        GntSt::BadDomain as i16
    );
}
