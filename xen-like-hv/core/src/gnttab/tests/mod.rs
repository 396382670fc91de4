//! Host tests of the grant tables: a small machine with several domains, each with
//! its own page tables (L4 -> L3 -> L2 -> L1 at index 0, pinned) and data frames, every
//! grant-table frame taken from (and counted back into) one frame pool.
//!
//! * `unit`: the state machine, every sub-op and its error paths in Xen 4.17's order.
//! * `teardown`: the destruction orders, with every frame counted back.
//! * `props`: random operation sequences between three domains.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test frame numbers and indices are small"
)]
#![allow(
    unused_must_use,
    reason = "successful memory operations return a flush the tests do not need"
)]

mod props;
mod teardown;
mod unit;

use std::collections::{BTreeMap, BTreeSet};
use std::vec::Vec;

use hypercall_abi::gnttab::{GntMapFlags, GntSt, GnttabCopy, GnttabCopyPtr, GtfFlags};
use hypercall_abi::mmu::{MmuextCmd, MmuextOp};
use hypercall_abi::types::{DomId, GrantRef};

use super::{Gnt, GrantTable, GrantTables, Limits, MapReq, MapResult, UnmapReq};
use crate::mm::Mfn;
use crate::mm::frame_table::{FrameInfo, FrameTable, Owner};
use crate::mm::mmu::{ForeignDomain, VcpuMm, mmuext_op, relinquish_domain};
use crate::mm::page_type::{MachineMemory, MmCtx, MmHooks};
use crate::testutil::{FakeGnttab, FakeM2p, FakeMem, FakePool, NoSlots};

/// Frames in the test machine (frame 0 is never handed out: tables use MFN 0 as
/// "none").
pub(super) const N: u64 = 1024;

pub(super) const P: u64 = 1;
pub(super) const RW: u64 = 2;
pub(super) const U: u64 = 4;
pub(super) const A: u64 = 0x20;
pub(super) const D: u64 = 0x40;
pub(super) const NX: u64 = 1 << 63;

pub(super) const READING: u16 = GtfFlags::READING.bits();
pub(super) const WRITING: u16 = GtfFlags::WRITING.bits();
pub(super) const PERMIT: u16 = GtfFlags::PERMIT_ACCESS.bits();
pub(super) const RO: u16 = GtfFlags::READONLY.bits();

pub(super) const HOST: u32 = GntMapFlags::HOST_MAP.bits();
pub(super) const DEV: u32 = GntMapFlags::DEVICE_MAP.bits();
pub(super) const MRO: u32 = GntMapFlags::READONLY.bits();
pub(super) const APP: u32 = GntMapFlags::APPLICATION_MAP.bits();
pub(super) const PTE: u32 = GntMapFlags::CONTAINS_PTE.bits();

/// The linear address of L1 slot `i` (l4, l3, l2 index 0). Slot 0 is never used: a
/// `host_addr` of 0 means "none" to unmap.
pub(super) const fn va(i: u64) -> u64 {
    i << 12
}

/// Small limits (2 grant frames, 2 maptrack frames, v2 allowed).
pub(super) const SMALL: Limits = Limits {
    max_grant_frames: 4,
    max_maptrack_frames: 2,
    max_version: 2,
};

/// Hooks: the live domains exist; privileged ones are privileged over all; frames of
/// destroyed domains freed on their last reference are collected.
pub(super) struct Hooks {
    pub live: BTreeSet<u16>,
    pub privileged: BTreeSet<u16>,
    pub orphans: Vec<(DomId, Mfn)>,
}

impl MmHooks for Hooks {
    fn domain_exists(&self, dom: DomId) -> bool {
        self.live.contains(&dom.0)
    }
    fn privileged_over(&self, caller: DomId, _target: DomId) -> bool {
        self.privileged.contains(&caller.0)
    }
    fn io_caps(&self, _dom: DomId) -> bool {
        false
    }
    fn flush_for_type_change(&mut self, _owner: DomId, _mfn: Mfn) {}
    fn check_descriptor(&self, _owner: DomId, desc: u64, _next: u64) -> bool {
        crate::descriptor::is_audited(desc)
    }
    fn frame_orphan_freed(&mut self, dom: DomId, mfn: Mfn) {
        self.orphans.push((dom, mfn));
    }
}

pub(super) type Ctx<'x> = MmCtx<'x, 'static, FakeMem, NoSlots, FakeM2p, Hooks>;
pub(super) type G<'a, 'x> = Gnt<'a, 'x, 'static, FakeMem, NoSlots, FakeM2p, Hooks>;

/// One domain's page tables and memory.
#[derive(Clone, Debug)]
pub(super) struct Dom {
    pub l4: Mfn,
    pub l2: Mfn,
    pub l1: Mfn,
    pub data: Vec<Mfn>,
}

/// The machine.
pub(super) struct Sys {
    pub ft: FrameTable<'static>,
    pub mem: FakeMem,
    pub m2p: FakeM2p,
    pub tables: FakeGnttab,
    pub pool: BTreeSet<u64>,
    pub freed: Vec<(u64, u64)>,
    pub hooks: Hooks,
    pub doms: BTreeMap<u16, Dom>,
}

impl Sys {
    pub fn new() -> Sys {
        let store: &'static mut [FrameInfo] =
            Box::leak(vec![FrameInfo::default(); N as usize].into_boxed_slice());
        Sys {
            ft: FrameTable::new(store),
            mem: FakeMem::default(),
            m2p: FakeM2p::default(),
            tables: FakeGnttab::default(),
            pool: (1..N).collect(),
            freed: Vec::new(),
            hooks: Hooks {
                live: BTreeSet::new(),
                privileged: BTreeSet::new(),
                orphans: Vec::new(),
            },
            doms: BTreeMap::new(),
        }
    }

    /// `dom1`..`domN` (unprivileged) with `SMALL` limits and 8 data frames each.
    pub fn with(ids: &[u16]) -> Sys {
        let mut s = Sys::new();
        for &d in ids {
            s.add_dom(d, SMALL, 8);
        }
        s
    }

    fn take(&mut self) -> Mfn {
        let f = *self.pool.iter().next().expect("test machine out of frames");
        self.pool.remove(&f);
        Mfn(f)
    }

    /// A domain `id`: its grant table (`limits`), 4 page-table frames chained at index
    /// 0 and pinned as an L4, and `ndata` data frames (M2P = their index).
    pub fn add_dom(&mut self, id: u16, limits: Limits, ndata: usize) {
        self.hooks.live.insert(id);
        let mut t = GrantTable::new(DomId(id), limits);
        let mut pool = FakePool {
            free: &mut self.pool,
            freed: &mut self.freed,
        };
        assert!(t.init(&mut self.mem, &mut self.ft, &mut pool));
        self.tables.0.insert(id, t);
        let mut frames = Vec::new();
        for i in 0..4 + ndata {
            let f = self.take();
            self.ft.assign(f, Owner::Domain(DomId(id))).unwrap();
            self.mem.zero_page(f);
            crate::mm::page_type::M2p::set(&mut self.m2p, f, i as u64);
            frames.push(f);
        }
        let up = P | RW | A | D | U;
        self.mem.write_entry(frames[0], 0, (frames[1].0 << 12) | up);
        self.mem.write_entry(frames[1], 0, (frames[2].0 << 12) | up);
        self.mem.write_entry(frames[2], 0, (frames[3].0 << 12) | up);
        let dom = Dom {
            l4: frames[0],
            l2: frames[2],
            l1: frames[3],
            data: frames[4..].to_vec(),
        };
        let l4 = dom.l4;
        self.doms.insert(id, dom);
        self.ext(id, MmuextCmd::PinL4Table, l4).unwrap();
    }

    /// Makes `id` privileged (over every domain).
    pub fn privilege(&mut self, id: u16) {
        self.hooks.privileged.insert(id);
    }

    /// A memory-model context for `dom`.
    pub fn ctx(&mut self, dom: u16) -> Ctx<'_> {
        MmCtx {
            ft: &mut self.ft,
            mem: &mut self.mem,
            slots: &NoSlots,
            m2p: &mut self.m2p,
            hooks: &mut self.hooks,
            dom: DomId(dom),
            privileged: false,
            io_caps: false,
            linear_pt: true,
        }
    }

    /// An `mmuext_op` of `dom` on its own frame.
    pub fn ext(
        &mut self,
        dom: u16,
        cmd: MmuextCmd,
        mfn: Mfn,
    ) -> Result<crate::mm::mmu::Flush, crate::mm::error::MmError> {
        let mut ctx = self.ctx(dom);
        let own = ForeignDomain::own(&ctx);
        let r = mmuext_op(
            &mut ctx,
            &mut VcpuMm::default(),
            MmuextOp::on_frame(cmd, mfn),
            own,
        );
        self.settle_orphans();
        r
    }

    /// `mmu_update` (normal) of entry `idx` of `dom`'s frame `table`.
    pub fn mmu(
        &mut self,
        dom: u16,
        table: Mfn,
        idx: usize,
        val: u64,
    ) -> Result<crate::mm::mmu::Flush, crate::mm::error::MmError> {
        let mut ctx = self.ctx(dom);
        let own = ForeignDomain::own(&ctx);
        let req = hypercall_abi::mmu::MmuUpdate {
            ptr: (table.0 << 12) | ((idx as u64) << 3),
            val,
        };
        let r = crate::mm::mmu::mmu_update_entry(&mut ctx, req, own);
        self.settle_orphans();
        r
    }

    /// Frames of destroyed domains freed on their last reference go back to the pool.
    fn settle_orphans(&mut self) {
        for (_, f) in self.hooks.orphans.drain(..) {
            assert!(self.pool.insert(f.0), "orphan {f} freed twice");
        }
    }

    /// Runs `f` as a grant operation of `caller`.
    pub fn gnt<R>(&mut self, caller: u16, f: impl FnOnce(&mut G<'_, '_>) -> R) -> R {
        let root = self.doms.get(&caller).map_or(Mfn(0), |d| d.l4);
        let privileged = self.hooks.privileged.contains(&caller);
        let mut ctx = MmCtx {
            ft: &mut self.ft,
            mem: &mut self.mem,
            slots: &NoSlots,
            m2p: &mut self.m2p,
            hooks: &mut self.hooks,
            dom: DomId(caller),
            privileged,
            io_caps: false,
            linear_pt: true,
        };
        let mut pool = FakePool {
            free: &mut self.pool,
            freed: &mut self.freed,
        };
        let mut g = Gnt {
            mm: &mut ctx,
            tables: &mut self.tables,
            pool: &mut pool,
            root,
        };
        let r = f(&mut g);
        self.settle_orphans();
        r
    }

    pub fn table(&mut self, d: u16) -> &mut GrantTable {
        self.tables.get(DomId(d)).expect("no table")
    }

    /// Active entry `r` of `d`.
    pub fn act(&self, d: u16, r: u32) -> super::Active {
        self.tables.0[&d].act(&self.mem, GrantRef(r))
    }

    /// Its pin count.
    pub fn pin(&self, d: u16, r: u32) -> u32 {
        self.act(d, r).pin
    }

    pub fn dom(&self, d: u16) -> &Dom {
        &self.doms[&d]
    }

    pub fn data(&self, d: u16, i: usize) -> Mfn {
        self.doms[&d].data[i]
    }

    pub fn info(&self, f: Mfn) -> FrameInfo {
        *self.ft.info(f).unwrap()
    }

    /// (general count, type count) of `f`.
    pub fn counts(&self, f: Mfn) -> (u32, u32) {
        let i = self.info(f);
        (i.count(), i.type_count())
    }

    // ---- the granter's side: writing its shared entries as a guest does ---------

    /// Word `w` of the header of entry `r` of `d` (frame, word).
    fn hdr(&mut self, d: u16, r: u32) -> (Mfn, usize) {
        let t = self.table(d);
        let frames: Vec<Mfn> = t.guest_frames().collect();
        if t.version() == 1 {
            (frames[(r / 512) as usize], (r % 512) as usize)
        } else {
            (frames[(r / 256) as usize], (2 * (r % 256)) as usize)
        }
    }

    /// A v1 entry: `flags`, grantee, frame.
    pub fn grant(&mut self, d: u16, r: u32, grantee: u16, frame: Mfn, flags: u16) {
        let v2 = self.table(d).version() == 2;
        let (f, w) = self.hdr(d, r);
        if v2 {
            self.mem.write_entry(f, w + 1, frame.0);
            self.mem
                .write_entry(f, w, u64::from(flags) | u64::from(grantee) << 16);
        } else {
            self.mem.write_entry(
                f,
                w,
                u64::from(flags) | u64::from(grantee) << 16 | (frame.0 << 32),
            );
        }
    }

    /// A read/write grant of `d`'s data frame `i` to `grantee` in entry `r`.
    pub fn grant_rw(&mut self, d: u16, r: u32, grantee: u16, i: usize) {
        let f = self.data(d, i);
        self.grant(d, r, grantee, f, PERMIT);
    }

    /// A read-only grant.
    pub fn grant_ro(&mut self, d: u16, r: u32, grantee: u16, i: usize) {
        let f = self.data(d, i);
        self.grant(d, r, grantee, f, PERMIT | RO);
    }

    /// A v2 sub-page grant of `frame[off..off+len]`.
    pub fn grant_sub(&mut self, d: u16, r: u32, grantee: u16, frame: Mfn, off: u16, len: u16) {
        let (f, w) = self.hdr(d, r);
        self.mem.write_entry(f, w + 1, frame.0);
        let flags = PERMIT | GtfFlags::SUB_PAGE.bits();
        self.mem.write_entry(
            f,
            w,
            u64::from(flags)
                | u64::from(grantee) << 16
                | u64::from(off) << 32
                | u64::from(len) << 48,
        );
    }

    /// A v2 transitive grant: `grantee` may use entry `tref` of `tdom` through `d`.
    pub fn grant_trans(&mut self, d: u16, r: u32, grantee: u16, tdom: u16, tref: u32) {
        let (f, w) = self.hdr(d, r);
        self.mem.write_entry(f, w + 1, u64::from(tref));
        let flags = GtfFlags::TRANSITIVE.bits();
        self.mem.write_entry(
            f,
            w,
            u64::from(flags) | u64::from(grantee) << 16 | u64::from(tdom) << 32,
        );
    }

    /// The raw header word of entry `r` (v1: the whole entry).
    pub fn raw(&mut self, d: u16, r: u32) -> u64 {
        let (f, w) = self.hdr(d, r);
        self.mem.read_entry(f, w)
    }

    /// Word 1 of a v2 entry (the frame).
    pub fn raw2(&mut self, d: u16, r: u32) -> u64 {
        let (f, w) = self.hdr(d, r);
        self.mem.read_entry(f, w + 1)
    }

    /// The entry's flags (v1) or header flags (v2).
    pub fn flags(&mut self, d: u16, r: u32) -> u16 {
        self.raw(d, r) as u16
    }

    /// Rewrites only the flags of entry `r`.
    pub fn set_flags(&mut self, d: u16, r: u32, flags: u16) {
        let (f, w) = self.hdr(d, r);
        let v = self.mem.read_entry(f, w);
        self.mem.write_entry(f, w, (v & !0xFFFF) | u64::from(flags));
    }

    /// The v2 status word of entry `r`.
    pub fn status(&mut self, d: u16, r: u32) -> u16 {
        let t = self.table(d);
        let n = t.nr_grant_frames() as usize;
        let frames: Vec<Mfn> = t.guest_frames().collect();
        let sf = frames[n + (r / 2048) as usize];
        (self.mem.read_entry(sf, ((r % 2048) / 4) as usize) >> ((r % 4) * 16)) as u16
    }

    /// `GTF_reading|GTF_writing` as the granter sees them (v1: entry; v2: status).
    pub fn busy_flags(&mut self, d: u16, r: u32) -> u16 {
        let s = if self.table(d).version() == 1 {
            self.flags(d, r)
        } else {
            self.status(d, r)
        };
        s & (READING | WRITING)
    }

    /// The guest's `gnttab_end_foreign_access_ref`: clears the entry unless the
    /// hypervisor has it in use; whether it did.
    pub fn end_access(&mut self, d: u16, r: u32) -> bool {
        if self.busy_flags(d, r) != 0 {
            return false;
        }
        self.set_flags(d, r, 0);
        true
    }

    // ---- the grantee's side -------------------------------------------------------

    pub fn map(&mut self, d: u16, rd: u16, r: u32, flags: u32, host_addr: u64) -> MapResult {
        let req = MapReq {
            host_addr,
            flags,
            gref: GrantRef(r),
            dom: DomId(rd),
        };
        self.gnt(d, |g| g.map(&req))
    }

    /// A successful map's handle.
    pub fn map_ok(&mut self, d: u16, rd: u16, r: u32, flags: u32, host_addr: u64) -> u32 {
        let m = self.map(d, rd, r, flags, host_addr);
        assert_eq!(
            m.status,
            GntSt::Okay,
            "map d{d} <- d{rd} ref {r} flags {flags:#x}"
        );
        m.handle
    }

    /// `unmap_grant_ref` (both halves, as the hypercall layer runs them).
    pub fn unmap(&mut self, d: u16, handle: u32, host_addr: u64, dev_bus_addr: u64) -> GntSt {
        self.unmap_replace(d, handle, host_addr, dev_bus_addr, 0)
    }

    pub fn unmap_replace(
        &mut self,
        d: u16,
        handle: u32,
        host_addr: u64,
        dev_bus_addr: u64,
        new_addr: u64,
    ) -> GntSt {
        let req = UnmapReq {
            host_addr,
            dev_bus_addr,
            new_addr,
            handle,
        };
        self.gnt(d, |g| {
            let (s, done) = g.unmap(&req);
            if let Some(done) = done {
                g.unmap_complete(&done);
            }
            s
        })
    }

    /// The caller's L1 entry at slot `i`.
    pub fn l1e(&self, d: u16, i: usize) -> u64 {
        self.mem.read_entry(self.doms[&d].l1, i)
    }

    /// The machine address of `d`'s L1 entry at slot `i` (`GNTMAP_contains_pte`).
    pub fn l1e_ma(&self, d: u16, i: usize) -> u64 {
        (self.doms[&d].l1.0 << 12) | ((i as u64) * 8)
    }

    // ---- copy ---------------------------------------------------------------------

    pub fn copy(&mut self, d: u16, src: CopyEnd, dst: CopyEnd, len: u16) -> GntSt {
        let mut flags = 0;
        if src.gref {
            flags |= hypercall_abi::gnttab::GNTCOPY_SOURCE_GREF;
        }
        if dst.gref {
            flags |= hypercall_abi::gnttab::GNTCOPY_DEST_GREF;
        }
        let op = GnttabCopy {
            source: src.ptr(),
            dest: dst.ptr(),
            len,
            flags,
            status: 0,
            _pad: 0,
        };
        self.gnt(d, |g| g.copy(&op))
    }

    /// Byte `at` of frame `f`.
    pub fn byte(&self, f: Mfn, at: usize) -> u8 {
        self.mem.read_entry(f, at / 8).to_le_bytes()[at % 8]
    }

    pub fn fill(&mut self, f: Mfn, at: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let a = at + i;
            let mut w = self.mem.read_entry(f, a / 8).to_le_bytes();
            w[a % 8] = *b;
            self.mem.write_entry(f, a / 8, u64::from_le_bytes(w));
        }
    }

    // ---- teardown -------------------------------------------------------------------

    /// Destroys `d` as the hypervisor does: its grant mappings go
    /// (`domain_dying`), it stops existing, its page tables are relinquished, and
    /// every frame it owns (or shares) that nothing references goes back. Returns
    /// (whether its table went at once, frames still referenced by others).
    pub fn destroy(&mut self, d: u16) -> (bool, u64) {
        let gone = self.gnt(d, |g| g.domain_dying());
        self.hooks.live.remove(&d);
        let mut ctx = self.ctx(d);
        let _ = relinquish_domain(&mut ctx, &mut [VcpuMm::default()]);
        self.settle_orphans();
        let mut busy = 0;
        for m in 0..N {
            let f = Mfn(m);
            let mine = matches!(self.ft.owner(f),
                Some(Owner::Domain(x) | Owner::XenShared(x)) if x.0 == d);
            if !mine {
                continue;
            }
            if self.ft.release(f).is_ok() {
                assert!(self.pool.insert(m), "frame {m:#x} freed twice");
            } else {
                busy += 1;
            }
        }
        self.doms.remove(&d);
        (gone, busy)
    }

    /// Every frame is back in the pool, unreferenced, and no table remains.
    pub fn assert_all_free(&self) {
        let missing: Vec<u64> = (1..N).filter(|m| !self.pool.contains(m)).collect();
        assert!(missing.is_empty(), "frames not returned: {missing:x?}");
        for (m, fi) in self.ft.frames().iter().enumerate() {
            assert_eq!(fi.owner(), Owner::Free, "frame {m:#x} owner");
            assert_eq!((fi.count(), fi.type_count()), (0, 0), "frame {m:#x} counts");
        }
        assert!(
            self.tables.0.is_empty(),
            "tables left: {:?}",
            self.tables.0.keys()
        );
    }
}

/// One side of a copy.
#[derive(Clone, Copy, Debug)]
pub(super) struct CopyEnd {
    pub gref: bool,
    pub u: u64,
    pub dom: DomId,
    pub off: u16,
}

impl CopyEnd {
    /// Entry `r` of `dom`.
    pub fn gref(dom: u16, r: u32, off: u16) -> CopyEnd {
        CopyEnd {
            gref: true,
            u: u64::from(r),
            dom: DomId(dom),
            off,
        }
    }
    /// A frame of the caller's own (`DOMID_SELF`).
    pub fn frame(f: Mfn, off: u16) -> CopyEnd {
        CopyEnd {
            gref: false,
            u: f.0,
            dom: DomId::SELF,
            off,
        }
    }
    fn ptr(self) -> GnttabCopyPtr {
        GnttabCopyPtr {
            u: self.u,
            domid: self.dom,
            offset: self.off,
            _pad: 0,
        }
    }
}
