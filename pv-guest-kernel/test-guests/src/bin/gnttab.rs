//! `gnttab`: grant tables within one domain (a grant to oneself is legal on
//! Xen), every answer compared with the one Xen 4.17 gives (recorded by
//! running this guest as dom0 on real Xen, tests/tests/xen_fidelity.rs).
//!
//! * table: `query_size` before and after `setup_table`, `get_version`,
//!   `setup_table` with count 2, too many frames, a bad domain; unassigned
//!   sub-ops (`dump_table`) and continuation bits on a plain op;
//! * map: a self-grant mapped with `GNTMAP_host_map` writable and read-only
//!   (the entries the hypervisor writes, `GTF_reading`/`GTF_writing`), a
//!   write through the mapping read back through the original page,
//!   `GNTMAP_device_map` (the bus address), `GNTMAP_contains_pte`;
//! * unmap: wrong bus address, wrong host address, no address at all, a
//!   double unmap, a handle beyond the maptrack table;
//! * refusals: no host/device flag, `DOMID_SELF` and an unknown domain, a
//!   ref beyond the table, an invalid entry, an entry for another domain, a
//!   write map of a read-only grant, an address without an L1, a
//!   `contains_pte` address that is misaligned, in a data page, in the L4,
//!   in a frame not ours; the 129th mapping of one entry (pin overflow); a
//!   writable map of a page-table frame; pinning a frame mapped writable by
//!   a grant as an L1 (XSA-224);
//! * copy: gref to own frame, own frame to gref at offsets, crossing the
//!   page end, a frame not ours, a frame with a domid other than
//!   `DOMID_SELF`, a bad domain, a bad ref, into a read-only grant, into a
//!   page table, zero bytes;
//! * `end_access` while mapped (still in use) and after; `set_version` 3,
//!   2 while a grant is in use (`EBUSY`), 2 and back with
//!   `get_status_frames`; `swap_grant_ref`, `cache_flush`, `transfer` and
//!   `unmap_and_replace` argument errors.
//!
//! Result line: `gnttab: PASS checks=N` or `gnttab: FAIL M of N differ:
//! <what> got <x> want <y>; ...` (every mismatch, not just the first).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;

use pv_runtime::abi::gnttab::{
    GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_SOURCE_GREF, GntMapFlags, GnttabCacheFlush, GnttabOp,
    GnttabSetupTable, GnttabSwapGrantRef, GnttabTransfer, GnttabUnmapAndReplace,
    GnttabUnmapGrantRef,
};
use pv_runtime::abi::hypercall::grant_table_op;
use pv_runtime::abi::mmu::MmuextCmd;
use pv_runtime::abi::xen::pte::PteFlags;
use pv_runtime::abi::{DomId, Errno, GrantRef, GuestPtr, Mfn};
use pv_runtime::gnttab::{self, CopyPtr, EndAccessError, Error, Handle};
use pv_runtime::hypercall::{handle_mut, invoker};
use pv_runtime::{Config, StartInfo, mm, println, sched, xen};
use pv_test_guests::{ext1, fail};

const NAME: &str = "gnttab";

/// The window for host mappings (its L1 tables are prepared).
const WIN: u64 = 0x0000_5000_0000_0000;
/// A region with no page tables at all.
const NO_L1: u64 = 0x0000_4800_0000_0000;
/// A domain id no domain has.
const NO_DOM: DomId = DomId(1234);
/// A machine frame beyond any RAM here.
const NO_FRAME: u64 = 1 << 40;

const GNTST_OKAY: i64 = 0;
const GENERAL: i64 = -1;
const BAD_DOMAIN: i64 = -2;
const BAD_GNTREF: i64 = -3;
const BAD_HANDLE: i64 = -4;
const BAD_DEV_ADDR: i64 = -6;
const PERMISSION: i64 = -8;
const BAD_PAGE: i64 = -9;
const BAD_COPY_ARG: i64 = -10;

/// The mismatches so far.
struct Checks {
    n: u32,
    bad: u32,
    out: String,
}

impl Checks {
    fn want(&mut self, what: &str, got: i64, want: i64) {
        self.n += 1;
        if got != want {
            self.bad += 1;
            let _ = write!(self.out, "{what} got {got} want {want}; ");
        }
    }
}

/// An errno result as a number: the value, or minus the errno.
fn rc(r: Result<u64, Errno>) -> i64 {
    match r {
        Ok(v) => i64::try_from(v).unwrap_or(i64::MAX),
        Err(e) => -i64::from(e.get()),
    }
}

/// A status as a number (0 for success).
fn st(r: Result<(), Error>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(Error::Status(s)) => i64::from(s as i16),
        Err(Error::UnknownStatus(s)) => i64::from(s),
        Err(Error::Hypercall(e)) => -1000 - i64::from(e.get()),
        Err(_) => -2000,
    }
}

fn raw_op(cmd: u32, arg: u64, count: u32) -> Result<u64, Errno> {
    // SAFETY: the argument is either a live local of the caller's or an
    // address the hypervisor must refuse before writing anything.
    let mut inv = unsafe { invoker() };
    grant_table_op(&mut inv, cmd, GuestPtr::new(arg), count)
}

fn map1(dom: DomId, r: GrantRef, addr: u64, flags: GntMapFlags) -> (i64, u32, u64) {
    let mut op = [gnttab::map_op(dom, r, addr, flags)];
    if let Err(e) = gnttab::map_batch(&mut op) {
        return (-1000 - i64::from(e.get()), 0, 0);
    }
    (i64::from(op[0].status), op[0].handle, op[0].dev_bus_addr)
}

fn unmap1(handle: u32, host_addr: u64, dev_bus_addr: u64) -> i64 {
    let mut op = [GnttabUnmapGrantRef {
        host_addr,
        dev_bus_addr,
        handle,
        ..Default::default()
    }];
    if let Err(e) = gnttab::unmap_batch(&mut op) {
        return -1000 - i64::from(e.get());
    }
    i64::from(op[0].status)
}

fn copy1(src: CopyPtr, dst: CopyPtr, len: u16) -> i64 {
    st(gnttab::copy(src, dst, len))
}

fn page(i: u64) -> u64 {
    WIN + i * 4096
}

fn read(va: u64) -> u64 {
    // SAFETY: the caller names a mapped, readable address of its own.
    unsafe { (va as *const u64).read_volatile() }
}

fn pte_flags(va: u64) -> i64 {
    let mask = PteFlags::PRESENT | PteFlags::RW | PteFlags::NX | PteFlags::GNTTAB;
    mm::translate(va).map_or(0, |p| (p.0 & mask.bits()) as i64)
}

fn frame_byte(f: mm::Frame, off: usize) -> u8 {
    // SAFETY: every frame of the domain is mapped (read-only) in the direct
    // map after the takeover.
    unsafe { ((f.va() + off as u64) as *const u8).read_volatile() }
}

fn fill(f: mm::Frame, seed: u8) {
    let r = mm::with_writable(f, |b| {
        for (i, x) in b.iter_mut().enumerate() {
            *x = seed.wrapping_add(i.to_le_bytes()[0]).wrapping_mul(7);
        }
    });
    if let Err(e) = r {
        fail(NAME, format_args!("filling a frame: {e}"));
    }
}

fn frame() -> mm::Frame {
    mm::alloc_frame().unwrap_or_else(|| fail(NAME, format_args!("no free frame")))
}

fn main(_si: &'static StartInfo) {
    let mut c = Checks {
        n: 0,
        bad: 0,
        out: String::new(),
    };
    let me = xen::domid().unwrap_or_else(|| fail(NAME, format_args!("no domid")));

    // --- The table ------------------------------------------------------
    match gnttab::query_size(DomId::SELF) {
        Ok(s) => {
            c.want("query_size before setup: nr_frames", s.nr_frames.into(), 1);
            c.want("query_size: max_nr_frames", s.max_nr_frames.into(), 64);
        }
        Err(e) => c.want("query_size before setup", st(Err(e)), 0),
    }
    c.want(
        "get_version",
        rc(gnttab::get_version(DomId::SELF).map(u64::from)),
        1,
    );
    let mut list = [Mfn(0); 65];
    let mut op = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames: 1,
        frame_list: GuestPtr::new(list.as_mut_ptr() as u64),
        ..Default::default()
    };
    let arg = handle_mut(&mut op).addr();
    c.want(
        "setup_table count 2",
        rc(raw_op(GnttabOp::SetupTable.nr(), arg, 2)),
        -22,
    );
    op.nr_frames = 65;
    c.want(
        "setup_table 65 frames: rc",
        rc(raw_op(GnttabOp::SetupTable.nr(), arg, 1)),
        0,
    );
    c.want("setup_table 65 frames: status", op.status.into(), GENERAL);
    op.nr_frames = 1;
    op.dom = NO_DOM;
    op.status = 99;
    let _ = raw_op(GnttabOp::SetupTable.nr(), arg, 1);
    c.want("setup_table unknown domain", op.status.into(), BAD_DOMAIN);
    c.want(
        "dump_table (3)",
        rc(raw_op(GnttabOp::DumpTable.nr(), arg, 1)),
        -38,
    );
    c.want("op 13", rc(raw_op(13, arg, 1)), -38);
    c.want(
        "query_size with continuation bits",
        rc(raw_op(GnttabOp::QuerySize.nr() | 1 << 12, arg, 1)),
        -22,
    );
    let table = match gnttab::init(2) {
        Ok(t) => t,
        Err(e) => fail(NAME, format_args!("gnttab::init(2): {e}")),
    };
    c.want("init: entries", table.entries.into(), 1024);
    match gnttab::query_size(DomId::SELF) {
        Ok(s) => c.want("query_size after setup", s.nr_frames.into(), 2),
        Err(e) => c.want("query_size after setup", st(Err(e)), 0),
    }
    c.want(
        "query_size unknown domain",
        st(gnttab::query_size(NO_DOM).map(drop)),
        BAD_DOMAIN,
    );
    c.want(
        "get_version unknown domain",
        rc(gnttab::get_version(NO_DOM).map(u64::from)),
        -3,
    );

    // --- Grant to self, map, write, read back -----------------------------
    if let Err(e) = gnttab::prepare(WIN, 64) {
        fail(NAME, format_args!("prepare: {e}"));
    }
    let p = frame();
    fill(p, 1);
    let r1 = gnttab::grant_access(me, p.mfn, false)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));
    c.want("first ref", r1.0.into(), 8);
    c.want(
        "entry flags after grant",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        1,
    );
    let (s, h1, _) = map1(me, r1, page(0), GntMapFlags::HOST_MAP);
    c.want("map rw", s, GNTST_OKAY);
    c.want(
        "map rw: PTE flags (P RW NX, bit 62 clear)",
        pte_flags(page(0)),
        (PteFlags::PRESENT | PteFlags::RW | PteFlags::NX).bits() as i64,
    );
    c.want(
        "entry flags while mapped rw",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        0x19,
    );
    c.want(
        "read through the mapping",
        i64::from(read(page(0)) == read(p.va())),
        1,
    );
    // SAFETY: page 0 of the window maps the granted frame writable.
    unsafe { (page(0) as *mut u64).write_volatile(0x0123_4567_89ab_cdef) };
    c.want(
        "write through the mapping, read in the page",
        i64::from(read(p.va()) == 0x0123_4567_89ab_cdef),
        1,
    );
    c.want(
        "end_access while mapped",
        i64::from(gnttab::end_access(r1) == Err(EndAccessError::StillInUse)),
        1,
    );
    c.want(
        "set_version 2 with a grant mapped",
        rc(gnttab::set_version(2).map(u64::from)),
        -16,
    );
    c.want(
        "version after the refused switch",
        rc(gnttab::get_version(DomId::SELF).map(u64::from)),
        1,
    );
    let (s, h2, _) = map1(
        me,
        r1,
        page(1),
        GntMapFlags::HOST_MAP | GntMapFlags::READONLY,
    );
    c.want("map ro beside rw", s, GNTST_OKAY);
    c.want(
        "map ro: PTE flags (P NX, bit 62 clear)",
        pte_flags(page(1)),
        (PteFlags::PRESENT | PteFlags::NX).bits() as i64,
    );
    c.want(
        "read through the ro mapping",
        i64::from(read(page(1)) == 0x0123_4567_89ab_cdef),
        1,
    );
    let (s, h3, bus) = map1(me, r1, 0, GntMapFlags::DEVICE_MAP);
    c.want("device map", s, GNTST_OKAY);
    c.want(
        "device map: dev_bus_addr is the frame's address",
        i64::from(bus == p.mfn.0 << 12),
        1,
    );
    c.want(
        "unmap device with a wrong bus address",
        unmap1(h3, 0, (p.mfn.0 + 1) << 12),
        BAD_DEV_ADDR,
    );
    c.want("unmap device", unmap1(h3, 0, bus), GNTST_OKAY);
    c.want(
        "unmap at an address mapping nothing",
        unmap1(h1, page(2), 0),
        GENERAL,
    );
    c.want(
        "unmap rw handle at the ro mapping's address",
        unmap1(h1, page(1), 0),
        GENERAL,
    );
    c.want(
        "unmap with no address: nothing",
        unmap1(h1, 0, 0),
        GNTST_OKAY,
    );
    c.want(
        "still mapped after that",
        i64::from(mm::translate(page(0)).is_some()),
        1,
    );
    c.want("unmap rw", st(gnttab::unmap(Handle(h1), page(0))), 0);
    c.want(
        "unmapped: no PTE",
        i64::from(mm::translate(page(0)).is_none()),
        1,
    );
    c.want("double unmap", unmap1(h1, page(0), 0), BAD_HANDLE);
    c.want(
        "entry flags with only a ro mapping",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        0x09,
    );
    c.want(
        "unmap handle 0xffffff",
        unmap1(0xFF_FFFF, page(1), 0),
        BAD_HANDLE,
    );
    c.want("unmap ro", unmap1(h2, page(1), 0), GNTST_OKAY);
    c.want(
        "entry flags unmapped",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        1,
    );

    // --- Refused maps -------------------------------------------------------
    c.want(
        "map without host/device flag",
        map1(me, r1, page(0), GntMapFlags::READONLY).0,
        BAD_GNTREF,
    );
    c.want(
        "map from DOMID_SELF",
        map1(DomId::SELF, r1, page(0), GntMapFlags::HOST_MAP).0,
        BAD_DOMAIN,
    );
    c.want(
        "map from an unknown domain",
        map1(NO_DOM, r1, page(0), GntMapFlags::HOST_MAP).0,
        BAD_DOMAIN,
    );
    c.want(
        "map ref 1024 (beyond the table)",
        map1(me, GrantRef(1024), page(0), GntMapFlags::HOST_MAP).0,
        BAD_GNTREF,
    );
    c.want(
        "map an invalid entry",
        map1(me, GrantRef(500), page(0), GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    let q = frame();
    fill(q, 9);
    let other = gnttab::grant_access(DomId(5), q.mfn, false)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));
    c.want(
        "map an entry granted to another domain",
        map1(me, other, page(0), GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    let ro = gnttab::grant_access(me, q.mfn, true)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));
    c.want(
        "write map of a read-only grant",
        map1(me, ro, page(0), GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    c.want(
        "device write map of a read-only grant",
        map1(me, ro, 0, GntMapFlags::DEVICE_MAP).0,
        GENERAL,
    );
    let (s, h, _) = map1(
        me,
        ro,
        page(0),
        GntMapFlags::HOST_MAP | GntMapFlags::READONLY,
    );
    c.want("ro map of a read-only grant", s, GNTST_OKAY);
    c.want("its unmap", unmap1(h, page(0), 0), GNTST_OKAY);
    c.want(
        "map at an address without an L1",
        map1(me, r1, NO_L1, GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    let pte3 = mm::entry_address(page(3), 1).map_or(0, |a| a.0);
    let (s, h, _) = map1(
        me,
        r1,
        pte3,
        GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE,
    );
    c.want("contains_pte at an L1 entry", s, GNTST_OKAY);
    c.want(
        "contains_pte: mapped at that entry's address",
        i64::from(read(page(3)) == read(p.va())),
        1,
    );
    c.want("contains_pte unmap", unmap1(h, pte3, 0), GNTST_OKAY);
    c.want(
        "contains_pte misaligned",
        map1(
            me,
            r1,
            pte3 + 4,
            GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE,
        )
        .0,
        GENERAL,
    );
    c.want(
        "contains_pte in a data frame",
        map1(
            me,
            r1,
            q.mfn.0 << 12,
            GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE,
        )
        .0,
        GENERAL,
    );
    c.want(
        "contains_pte in the L4",
        map1(
            me,
            r1,
            (mm::kernel_root().0 << 12) + 8 * 100,
            GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE,
        )
        .0,
        GENERAL,
    );
    c.want(
        "contains_pte in a frame not ours",
        map1(
            me,
            r1,
            NO_FRAME << 12,
            GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE,
        )
        .0,
        GENERAL,
    );
    // 129 device read-only maps of one entry in one call: the pin count
    // stops at 128.
    let mut many =
        [gnttab::map_op(me, r1, 0, GntMapFlags::DEVICE_MAP | GntMapFlags::READONLY); 129];
    let r = gnttab::map_batch(&mut many);
    c.want("129 maps: rc", rc(r.map(|()| 0)), 0);
    c.want(
        "129 maps: the first 128",
        many.iter().take(128).filter(|o| o.status == 0).count() as i64,
        128,
    );
    c.want("129 maps: the 129th", many[128].status.into(), GENERAL);
    // The read-only device counter is full; a writable device map counts in
    // its own counter.
    let (s, hw, busw) = map1(me, r1, 0, GntMapFlags::DEVICE_MAP);
    c.want(
        "a writable device map beside 128 read-only ones",
        s,
        GNTST_OKAY,
    );
    if s == GNTST_OKAY {
        c.want("its unmap", unmap1(hw, 0, busw), GNTST_OKAY);
    }
    let mut unmaps = [GnttabUnmapGrantRef::default(); 128];
    for (u, m) in unmaps.iter_mut().zip(many.iter()) {
        u.dev_bus_addr = m.dev_bus_addr;
        u.handle = m.handle;
    }
    let r = gnttab::unmap_batch(&mut unmaps);
    c.want("128 unmaps: rc", rc(r.map(|()| 0)), 0);
    c.want(
        "128 unmaps",
        unmaps.iter().filter(|o| o.status == 0).count() as i64,
        128,
    );
    c.want(
        "entry flags after the device maps",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        1,
    );
    // A page table of ours, granted: a writable map needs a writable type.
    let l1 = mm::entry_address(page(0), 1).map_or(Mfn(0), |a| a.mfn());
    let pt = gnttab::grant_access(me, l1, false)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));
    c.want(
        "write map of a page-table frame",
        map1(me, pt, page(5), GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    let (s, h, _) = map1(
        me,
        pt,
        page(5),
        GntMapFlags::HOST_MAP | GntMapFlags::READONLY,
    );
    c.want("read-only map of a page-table frame", s, GNTST_OKAY);
    c.want("its unmap", unmap1(h, page(5), 0), GNTST_OKAY);
    // XSA-224: a frame mapped writable through a grant cannot become an L1.
    let (s, h, _) = map1(me, r1, page(0), GntMapFlags::HOST_MAP);
    c.want("map rw again", s, GNTST_OKAY);
    c.want(
        "pin as L1 a frame mapped rw by a grant",
        rc(ext1(MmuextCmd::PinL1Table, p.mfn)),
        -22,
    );
    c.want("unmap rw again", unmap1(h, page(0), 0), GNTST_OKAY);

    // --- Copy ---------------------------------------------------------------
    let d = frame();
    c.want(
        "copy gref -> own frame, 4096",
        copy1(
            CopyPtr::gref(DomId::SELF, r1, 0),
            CopyPtr::frame(d.mfn, 0),
            4096,
        ),
        GNTST_OKAY,
    );
    c.want(
        "copied page equal",
        i64::from((0..4096).all(|i| frame_byte(d, i) == frame_byte(p, i))),
        1,
    );
    let e = frame();
    fill(e, 77);
    c.want(
        "copy own frame @100 -> gref @200, 50",
        copy1(CopyPtr::frame(e.mfn, 100), CopyPtr::gref(me, r1, 200), 50),
        GNTST_OKAY,
    );
    c.want(
        "sub-range copied, rest untouched",
        i64::from(
            (0..50).all(|i| frame_byte(p, 200 + i) == frame_byte(e, 100 + i))
                && frame_byte(p, 199) == frame_byte(d, 199)
                && frame_byte(p, 250) == frame_byte(d, 250),
        ),
        1,
    );
    c.want(
        "entry flags after copies",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        1,
    );
    c.want(
        "copy crossing the page end",
        copy1(
            CopyPtr::gref(DomId::SELF, r1, 4000),
            CopyPtr::frame(d.mfn, 0),
            200,
        ),
        BAD_COPY_ARG,
    );
    c.want(
        "copy to a frame crossing the page end",
        copy1(
            CopyPtr::gref(DomId::SELF, r1, 0),
            CopyPtr::frame(d.mfn, 4095),
            2,
        ),
        BAD_COPY_ARG,
    );
    c.want(
        "copy from a frame that does not exist",
        copy1(
            CopyPtr::frame(Mfn(NO_FRAME), 0),
            CopyPtr::frame(d.mfn, 0),
            8,
        ),
        BAD_PAGE,
    );
    c.want(
        "copy from MFN 0 (not ours)",
        copy1(CopyPtr::frame(Mfn(0), 0), CopyPtr::frame(d.mfn, 0), 8),
        BAD_PAGE,
    );
    let mut named = gnttab::copy_op(CopyPtr::frame(e.mfn, 0), CopyPtr::frame(d.mfn, 0), 8);
    named.source.domid = me;
    let r = gnttab::copy_batch(core::slice::from_mut(&mut named));
    c.want("copy: frame named with a domid", rc(r.map(|()| 0)), 0);
    c.want(
        "copy: frame named with a domid: status",
        named.status.into(),
        PERMISSION,
    );
    c.want(
        "copy from an unknown domain's gref",
        copy1(CopyPtr::gref(NO_DOM, r1, 0), CopyPtr::frame(d.mfn, 0), 8),
        BAD_DOMAIN,
    );
    c.want(
        "copy from ref 5000",
        copy1(
            CopyPtr::gref(DomId::SELF, GrantRef(5000), 0),
            CopyPtr::frame(d.mfn, 0),
            8,
        ),
        BAD_GNTREF,
    );
    c.want(
        "copy into a read-only grant",
        copy1(
            CopyPtr::frame(e.mfn, 0),
            CopyPtr::gref(DomId::SELF, ro, 0),
            8,
        ),
        GENERAL,
    );
    c.want(
        "copy from a read-only grant",
        copy1(
            CopyPtr::gref(DomId::SELF, ro, 0),
            CopyPtr::frame(d.mfn, 0),
            8,
        ),
        GNTST_OKAY,
    );
    c.want(
        "copy into our L4",
        copy1(
            CopyPtr::frame(e.mfn, 0),
            CopyPtr::frame(mm::kernel_root(), 0),
            8,
        ),
        GENERAL,
    );
    c.want(
        "copy of 0 bytes",
        copy1(
            CopyPtr::gref(DomId::SELF, r1, 0),
            CopyPtr::frame(d.mfn, 0),
            0,
        ),
        GNTST_OKAY,
    );

    // --- Other ops' argument errors ----------------------------------------
    let mut sw = [GnttabSwapGrantRef {
        ref_a: r1,
        ref_b: GrantRef(4096),
        ..Default::default()
    }];
    let _ = gnttab::batch(&mut sw);
    c.want("swap with a bad ref", sw[0].status.into(), BAD_GNTREF);
    let mut sw = [GnttabSwapGrantRef {
        ref_a: GrantRef(600),
        ref_b: GrantRef(601),
        ..Default::default()
    }];
    let _ = gnttab::batch(&mut sw);
    c.want("swap two idle refs", sw[0].status.into(), GNTST_OKAY);
    let flush = |a: u64, offset: u16, length: u16, op: u32| {
        let mut f = [GnttabCacheFlush {
            a,
            offset,
            length,
            op,
        }];
        rc(gnttab::batch(&mut f))
    };
    c.want(
        "cache_flush SOURCE_GREF",
        flush(
            u64::from(r1.0),
            0,
            64,
            GNTTAB_CACHE_CLEAN | GNTTAB_CACHE_SOURCE_GREF,
        ),
        -22,
    );
    c.want(
        "cache_flush offset 4096",
        flush(d.mfn.0 << 12, 4096, 1, GNTTAB_CACHE_CLEAN),
        -22,
    );
    c.want(
        "cache_flush length 0",
        flush(d.mfn.0 << 12, 0, 0, GNTTAB_CACHE_CLEAN),
        0,
    );
    c.want(
        "cache_flush of a frame that does not exist",
        flush(NO_FRAME << 12, 0, 64, GNTTAB_CACHE_CLEAN),
        -22,
    );
    let mut t = [GnttabTransfer {
        mfn: Mfn(NO_FRAME),
        domid: me,
        ref_: r1,
        ..Default::default()
    }];
    let _ = gnttab::batch(&mut t);
    c.want(
        "transfer of a frame that does not exist",
        t[0].status.into(),
        BAD_PAGE,
    );
    let mut u = [GnttabUnmapAndReplace {
        host_addr: page(0),
        new_addr: 0,
        handle: 0xFF_FFFF,
        ..Default::default()
    }];
    let _ = gnttab::batch(&mut u);
    c.want(
        "unmap_and_replace bad handle",
        u[0].status.into(),
        BAD_HANDLE,
    );

    // --- Revoke and versions -------------------------------------------------
    c.want(
        "end_access after unmap",
        i64::from(gnttab::end_access(r1).is_ok()),
        1,
    );
    c.want(
        "entry flags after end_access",
        gnttab::entry_flags(r1).map_or(-1, i64::from),
        0,
    );
    c.want(
        "end_access twice",
        i64::from(gnttab::end_access(r1) == Err(EndAccessError::NotGranted)),
        1,
    );
    c.want(
        "map after end_access",
        map1(me, r1, page(0), GntMapFlags::HOST_MAP).0,
        GENERAL,
    );
    c.want(
        "set_version 3",
        rc(gnttab::set_version(3).map(u64::from)),
        -22,
    );
    c.want(
        "set_version 2",
        rc(gnttab::set_version(2).map(u64::from)),
        2,
    );
    c.want(
        "get_version after",
        rc(gnttab::get_version(DomId::SELF).map(u64::from)),
        2,
    );
    let mut sf = [0u64; 1];
    c.want(
        "get_status_frames 1",
        st(gnttab::get_status_frames(&mut sf)),
        0,
    );
    c.want("status frame named", i64::from(sf[0] != 0), 1);
    let mut sf = [0u64; 100];
    c.want(
        "get_status_frames 100",
        st(gnttab::get_status_frames(&mut sf)),
        GENERAL,
    );
    c.want(
        "grant_access refuses in v2",
        i64::from(matches!(
            gnttab::grant_access(me, p.mfn, false),
            Err(Error::Version(2))
        )),
        1,
    );
    c.want(
        "set_version 1",
        rc(gnttab::set_version(1).map(u64::from)),
        1,
    );
    c.want(
        "entry of ro cleared by the switch",
        gnttab::entry_flags(ro).map_or(-1, i64::from),
        0,
    );

    if c.bad == 0 {
        println!("{NAME}: PASS checks={}", c.n);
        sched::poweroff()
    }
    println!("{NAME}: FAIL {} of {} differ: {}", c.bad, c.n, c.out);
    sched::crash()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
