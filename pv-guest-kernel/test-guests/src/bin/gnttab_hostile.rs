//! `gnttab-hostile`: the grant-table abuses behind Xen's advisories, each
//! answered as Xen 4.17 answers it (recorded on real Xen as dom0,
//! tests/tests/xen_fidelity.rs), as a domU beside a neighbour
//! (tests/tests/gnttab.rs) or as dom0:
//!
//! * unmap by a stale handle (already unmapped), a forged one (never handed
//!   out, beyond the maptrack table), and handle 0 when this domain has no
//!   mapping (a number valid only in some other domain's table);
//! * `GNTMAP_contains_pte` naming a data frame, the L4, a frame not ours;
//! * the granter rewriting a mapped entry: read-only flags, another frame,
//!   then flags 0 (invalid); the mapping and its unmap are unaffected, a
//!   further writable map rides on the existing pin, and after the unmap the
//!   entry is invalid for new maps;
//! * v2 status frames mapped by the guest, then a switch back to v1 (XSA-255:
//!   `EBUSY` while mapped, fine once unmapped);
//! * copies crossing a page end or naming a frame not ours;
//! * `flood=1` (default): device maps until the maptrack table is full
//!   (`GNTST_no_space` on Xen 4.17), all unmapped again, then a map works.
//!
//! Result line: `gnttab-hostile: PASS maps=<mappings before the table was
//! full>` or `gnttab-hostile: FAIL <n> of <m> differ: ...`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::string::String;
use core::fmt::Write;

use pv_runtime::abi::gnttab::{GntMapFlags, GnttabUnmapGrantRef, GtfFlags};
use pv_runtime::abi::xen::pte::PteFlags;
use pv_runtime::abi::{DomId, Errno, GrantRef, Mfn};
use pv_runtime::gnttab::{self, CopyPtr, Error};
use pv_runtime::{Config, StartInfo, mm, println, sched, xen};
use pv_test_guests::{arg_u64, fail};

const NAME: &str = "gnttab-hostile";
const WIN: u64 = 0x0000_5000_0000_0000;
const STATUS_VA: u64 = 0x0000_5100_0000_0000;
const NO_FRAME: u64 = 1 << 40;

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

fn rc(r: Result<u64, Errno>) -> i64 {
    match r {
        Ok(v) => i64::try_from(v).unwrap_or(i64::MAX),
        Err(e) => -i64::from(e.get()),
    }
}

fn st(r: Result<(), Error>) -> i64 {
    match r {
        Ok(()) => 0,
        Err(Error::Status(s)) => i64::from(s as i16),
        Err(Error::UnknownStatus(s)) => i64::from(s),
        Err(Error::Hypercall(e)) => -1000 - i64::from(e.get()),
        Err(_) => -2000,
    }
}

fn map1(dom: DomId, r: GrantRef, addr: u64, flags: GntMapFlags) -> (i64, u32) {
    let mut op = [gnttab::map_op(dom, r, addr, flags)];
    if let Err(e) = gnttab::map_batch(&mut op) {
        return (-1000 - i64::from(e.get()), 0);
    }
    (i64::from(op[0].status), op[0].handle)
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

fn frame() -> mm::Frame {
    mm::alloc_frame().unwrap_or_else(|| fail(NAME, format_args!("no free frame")))
}

fn read(va: u64) -> u64 {
    // SAFETY: the caller names a mapped, readable address.
    unsafe { (va as *const u64).read_volatile() }
}

/// Device maps (read-only and writable) of `refs` until the maptrack table
/// is full; returns how many succeeded and the status that stopped them.
fn flood(c: &mut Checks, me: DomId, refs: &[GrantRef], bus: u64) -> u64 {
    const BATCH: usize = 256;
    let mut done = 0u64;
    let mut stop = 0i64;
    'refs: for r in refs {
        for ro in [true, false] {
            let mut flags = GntMapFlags::DEVICE_MAP;
            if ro {
                flags |= GntMapFlags::READONLY;
            }
            // 128 maps of one kind fill its pin counter.
            let mut ops = [gnttab::map_op(me, *r, 0, flags); 128];
            if let Err(e) = gnttab::map_batch(&mut ops) {
                fail(NAME, format_args!("flood map: {e:?}"));
            }
            for o in ops {
                if o.status != 0 {
                    stop = o.status.into();
                    break 'refs;
                }
                done += 1;
            }
        }
    }
    c.want(
        "flood: the status once the maptrack table is full",
        stop,
        -13,
    );
    // The table is full: its handles are ours but for the one Xen keeps free,
    // all of the same frame.
    let handles = done + 1;
    let mut h = 0u64;
    let mut ok = 0u64;
    while h < handles {
        let mut ops = [GnttabUnmapGrantRef::default(); BATCH];
        let n = usize::try_from((handles - h).min(BATCH as u64)).unwrap_or(0);
        for (i, o) in ops.iter_mut().enumerate().take(n) {
            o.handle = u32::try_from(h + i as u64).unwrap_or(u32::MAX);
            o.dev_bus_addr = bus;
        }
        let slice = ops.get_mut(..n).unwrap_or(&mut []);
        if let Err(e) = gnttab::unmap_batch(slice) {
            fail(NAME, format_args!("flood unmap: {e:?}"));
        }
        ok += slice.iter().filter(|o| o.status == 0).count() as u64;
        h += n as u64;
    }
    c.want("flood: every handle unmapped", i64::from(ok == done), 1);
    done
}

fn main(_si: &'static StartInfo) {
    let mut c = Checks {
        n: 0,
        bad: 0,
        out: String::new(),
    };
    let me = xen::domid().unwrap_or_else(|| fail(NAME, format_args!("no domid")));
    if let Err(e) = gnttab::init(3) {
        fail(NAME, format_args!("gnttab::init: {e}"));
    }
    if let Err(e) = gnttab::prepare(WIN, 16) {
        fail(NAME, format_args!("prepare: {e}"));
    }
    let p = frame();
    let r = gnttab::grant_access(me, p.mfn, false)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));

    // Handles that are not ours.
    c.want("unmap handle 0 with nothing mapped", unmap1(0, WIN, 0), -4);
    c.want(
        "unmap forged handle 0x7fffffff",
        unmap1(0x7FFF_FFFF, WIN, 0),
        -4,
    );
    let (s, h) = map1(me, r, WIN, GntMapFlags::HOST_MAP);
    c.want("map", s, 0);
    c.want("unmap", unmap1(h, WIN, 0), 0);
    c.want("unmap the stale handle", unmap1(h, WIN, 0), -4);
    c.want("unmap a handle next to it", unmap1(h + 1, WIN, 0), -4);

    // contains_pte at frames that are not an L1 of ours.
    let pte = GntMapFlags::HOST_MAP | GntMapFlags::CONTAINS_PTE;
    c.want(
        "contains_pte in a data frame",
        map1(me, r, p.mfn.0 << 12, pte).0,
        -1,
    );
    c.want(
        "contains_pte in the L4",
        map1(me, r, mm::kernel_root().0 << 12, pte).0,
        -1,
    );
    c.want("contains_pte at MFN 0", map1(me, r, 8, pte).0, -1);
    c.want(
        "contains_pte beyond RAM",
        map1(me, r, NO_FRAME << 12, pte).0,
        -1,
    );

    // The granter rewrites the entry while it is mapped.
    let q = frame();
    let (s, h) = map1(me, r, WIN, GntMapFlags::HOST_MAP);
    c.want("map before the rewrite", s, 0);
    let frame32 = |f: Mfn| u32::try_from(f.0).unwrap_or(0);
    let ro = GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY;
    let _ = gnttab::write_entry(r, me, frame32(q.mfn), ro.bits());
    c.want(
        "mapping unchanged after the rewrite",
        i64::from(mm::translate(WIN).is_some_and(|e| {
            e.0 >> 12 & 0xF_FFFF_FFFF == p.mfn.0 && e.0 & PteFlags::RW.bits() != 0
        })),
        1,
    );
    let (s, h2) = map1(me, r, WIN + 4096, GntMapFlags::HOST_MAP);
    c.want("second rw map of the rewritten (read-only) entry", s, 0);
    c.want(
        "it maps the pinned frame",
        i64::from(read(WIN + 4096) == read(p.va())),
        1,
    );
    let _ = gnttab::write_entry(r, me, frame32(q.mfn), 0);
    let (s, h3) = map1(
        me,
        r,
        WIN + 2 * 4096,
        GntMapFlags::HOST_MAP | GntMapFlags::READONLY,
    );
    c.want("ro map of the now invalid but pinned entry", s, 0);
    c.want("unmap 1", unmap1(h, WIN, 0), 0);
    c.want("unmap 2", unmap1(h2, WIN + 4096, 0), 0);
    c.want("unmap 3", unmap1(h3, WIN + 2 * 4096, 0), 0);
    c.want(
        "entry flags after the unmaps",
        gnttab::entry_flags(r).map_or(-1, i64::from),
        0,
    );
    c.want(
        "map of the invalid entry once unpinned",
        map1(me, r, WIN, GntMapFlags::HOST_MAP).0,
        -1,
    );
    let _ = gnttab::write_entry(r, me, frame32(p.mfn), GtfFlags::PERMIT_ACCESS.bits());

    // Copies out of bounds.
    c.want(
        "copy crossing the page end",
        st(gnttab::copy(
            CopyPtr::frame(q.mfn, 4090),
            CopyPtr::gref(me, r, 0),
            8,
        )),
        -10,
    );
    c.want(
        "copy naming a frame not ours",
        st(gnttab::copy(
            CopyPtr::frame(Mfn(NO_FRAME - 1), 0),
            CopyPtr::gref(me, r, 0),
            8,
        )),
        -9,
    );
    c.want(
        "copy into a frame not ours",
        st(gnttab::copy(
            CopyPtr::gref(me, r, 0),
            CopyPtr::frame(Mfn(0), 0),
            8,
        )),
        -9,
    );

    // XSA-255: v2 status frames outliving the switch back to v1.
    let _ = gnttab::end_access(r);
    c.want(
        "set_version 2",
        rc(gnttab::set_version(2).map(u64::from)),
        2,
    );
    let mut sf = [0u64; 1];
    c.want(
        "get_status_frames",
        st(gnttab::get_status_frames(&mut sf)),
        0,
    );
    let mapped = mm::map(STATUS_VA, &[Mfn(sf[0])], PteFlags::RW | PteFlags::NX);
    c.want("status frame mapped", i64::from(mapped.is_ok()), 1);
    c.want(
        "set_version 1 while the status frame is mapped",
        rc(gnttab::set_version(1).map(u64::from)),
        -16,
    );
    c.want(
        "still version 2",
        rc(gnttab::get_version(DomId::SELF).map(u64::from)),
        2,
    );
    let _ = mm::unmap(STATUS_VA, 1);
    c.want(
        "set_version 1 once unmapped",
        rc(gnttab::set_version(1).map(u64::from)),
        1,
    );

    // The maptrack flood.
    let mut maps = 0;
    if arg_u64(NAME, "flood", 1) == 1 {
        let mut refs = [GrantRef(0); 1400];
        for x in refs.iter_mut() {
            *x = gnttab::grant_access(me, p.mfn, false)
                .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")));
        }
        maps = flood(&mut c, me, &refs, p.mfn.0 << 12);
        let (s, h) = map1(me, refs[0], WIN, GntMapFlags::HOST_MAP);
        c.want("a map after the flood", s, 0);
        c.want("its unmap", unmap1(h, WIN, 0), 0);
    }

    if c.bad == 0 {
        println!("{NAME}: PASS maps={maps} checks={}", c.n);
        sched::poweroff()
    }
    println!(
        "{NAME}: FAIL {} of {} differ: {}maps={maps}",
        c.bad, c.n, c.out
    );
    sched::crash()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
