//! The grant-table operations, one request at a time, in Xen 4.17's order of checks
//! (each function names the Xen function it follows). Per-request failures are
//! `GNTST_*` statuses ([`GntSt`]); whole-hypercall failures are errnos, returned by
//! the hypercall layer.
#![allow(
    clippy::cast_possible_truncation,
    reason = "grant entries, active entries and maptrack entries are 64-bit words split into their 16- and 32-bit fields"
)]

use hypercall_abi::Errno;
use hypercall_abi::gnttab::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTTAB_CACHE_CLEAN, GNTTAB_CACHE_INVAL,
    GNTTAB_NR_RESERVED_ENTRIES, GntMapFlags, GntSt, GnttabCacheFlush, GnttabCopy, GnttabCopyPtr,
    GtfFlags,
};
use hypercall_abi::types::{DomId, GrantRef};

use super::table::{GrantTable, MaptrackEntry, give_back, pin};
use super::{FramePool, GrantTables};
use crate::mm::Mfn;
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::grant_pte::{self, GrantPte, PteAt};
use crate::mm::page_type::{
    HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks, get_page, get_page_type, put_page,
    put_page_and_type, put_page_type,
};

const PAGE: u32 = 4096;
/// How often a shared entry's flags are re-read when the guest keeps changing them
/// (Xen gives up after 5 tries: "Shared grant entry is unstable").
const CMPXCHG_RETRIES: usize = 5;
const READING: u16 = GtfFlags::READING.bits();
const WRITING: u16 = GtfFlags::WRITING.bits();

/// Everything a grant operation works on: the memory model (with the caller as
/// `mm.dom`), every domain's table, the frame pool, and the caller's kernel page
/// tables (where `host_addr`s are looked up).
pub struct Gnt<'a, 'x, 'f, M, H, P, E> {
    /// The memory model; `mm.dom` is the caller.
    pub mm: &'a mut MmCtx<'x, 'f, M, H, P, E>,
    /// Every domain's grant table.
    pub tables: &'a mut dyn GrantTables,
    /// Frames for table growth.
    pub pool: &'a mut dyn FramePool,
    /// The caller's current kernel page-table root.
    pub root: Mfn,
}

impl<M, H, P, E> core::fmt::Debug for Gnt<'_, '_, '_, M, H, P, E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Gnt")
            .field("caller", &self.mm.dom)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// `GNTTABOP_map_grant_ref`'s inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapReq {
    /// Linear address, or L1 entry machine address with `GNTMAP_contains_pte`.
    pub host_addr: u64,
    /// `GNTMAP_*`.
    pub flags: u32,
    /// The granter's ref.
    pub gref: GrantRef,
    /// The granter.
    pub dom: DomId,
}

/// `GNTTABOP_map_grant_ref`'s outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapResult {
    /// Status.
    pub status: GntSt,
    /// The mapping's handle (valid with `Okay`).
    pub handle: u32,
    /// The frame's machine address (valid with `Okay`).
    pub dev_bus_addr: u64,
}

/// `GNTTABOP_unmap_grant_ref`'s and `unmap_and_replace`'s inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapReq {
    /// Where the host mapping is (0: leave it).
    pub host_addr: u64,
    /// The device mapping's address (0: leave it).
    pub dev_bus_addr: u64,
    /// `unmap_and_replace`: the linear address whose entry replaces the grant's.
    pub new_addr: u64,
    /// The handle.
    pub handle: u32,
}

/// The second half of an unmap, run after the caller's TLBs were flushed
/// (`unmap_common_complete`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapDone {
    rd: DomId,
    gref: GrantRef,
    mfn: Mfn,
    /// `GNTMAP_host_map`/`device_map` undone, with `readonly` as it was mapped.
    done: GntMapFlags,
}

/// A frame held for one side of a copy.
#[derive(Clone, Copy, Debug)]
struct CopyBuf {
    dom: DomId,
    mfn: Mfn,
    off: u16,
    len: u16,
    /// Through a grant (else a frame of the caller's own).
    gref: Option<GrantRef>,
    writable_type: bool,
}

/// What a grant entry's header says.
#[derive(Clone, Copy, Debug)]
struct Header {
    flags: u16,
}

fn st<T>(s: GntSt) -> Result<T, GntSt> {
    Err(s)
}

impl<M, H, P, E> Gnt<'_, '_, '_, M, H, P, E>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    fn caller(&self) -> DomId {
        self.mm.dom
    }

    /// `rcu_lock_domain_by_any_id`: `DOMID_SELF` is the caller.
    fn any_id(&self, d: DomId) -> DomId {
        if d == DomId::SELF { self.caller() } else { d }
    }

    fn exists(&mut self, d: DomId) -> bool {
        self.tables.get(d).is_some()
    }

    /// Xen's `XSM_TARGET`: the domain itself, or one privileged over it.
    fn may_target(&self, d: DomId) -> bool {
        d == self.caller() || self.mm.hooks.privileged_over(self.caller(), d)
    }

    fn header(&mut self, gt: DomId, r: GrantRef) -> Option<Header> {
        let t = self.tables.get(gt)?;
        let (f, w) = t.hdr_at(r);
        let v = self.mm.mem.read_entry(f, w);
        Some(Header { flags: v as u16 })
    }

    /// Xen's `_set_status`: sets `GTF_reading` (and `GTF_writing` unless `ro`) in
    /// entry `r` of `rd`'s table for `ldom`, after checking its type and grantee
    /// (unless it is pinned already). `map` also refuses sub-page grants.
    fn set_status(
        &mut self,
        rd: DomId,
        r: GrantRef,
        ro: bool,
        map: bool,
        ldom: DomId,
        pinned: bool,
    ) -> Result<(), GntSt> {
        let Some(t) = self.tables.get(rd) else {
            return st(GntSt::GeneralError);
        };
        let mut mask = GtfFlags::TYPE_MASK.bits();
        if map {
            mask |= GtfFlags::SUB_PAGE.bits();
        }
        let permit = GtfFlags::PERMIT_ACCESS.bits();
        let readonly = GtfFlags::READONLY.bits();
        let (f, w) = t.hdr_at(r);
        if t.version() == 1 {
            let mut cur = self.mm.mem.read_entry(f, w);
            for _ in 0..CMPXCHG_RETRIES {
                let flags = cur as u16;
                let domid = (cur >> 16) as u16;
                if !pinned && ((flags & mask) != permit || domid != ldom.0) {
                    return st(GntSt::GeneralError);
                }
                let mut new = flags | READING;
                if !ro {
                    if flags & readonly != 0 {
                        return st(GntSt::GeneralError);
                    }
                    new |= WRITING;
                }
                let nv = (cur & !0xFFFF) | u64::from(new);
                match self.mm.mem.cmpxchg_entry(f, w, cur, nv) {
                    Ok(()) => return Ok(()),
                    Err(seen) => cur = seen,
                }
            }
            return st(GntSt::GeneralError);
        }
        // Version 2: the hypervisor's flags live in the status word.
        let transitive = GtfFlags::TRANSITIVE.bits();
        let (sf, sw, sh) = t.status_at(r);
        let ok_type = |flags: u16| (flags & mask) == permit || (flags & mask) == transitive;
        let cur = self.mm.mem.read_entry(f, w);
        let (flags, domid) = (cur as u16, (cur >> 16) as u16);
        if !pinned && (!ok_type(flags) || domid != ldom.0) {
            return st(GntSt::GeneralError);
        }
        let set = if ro {
            READING
        } else {
            if flags & readonly != 0 {
                return st(GntSt::GeneralError);
            }
            READING | WRITING
        };
        let mut s = self.mm.mem.read_entry(sf, sw);
        for _ in 0..64 {
            match self
                .mm
                .mem
                .cmpxchg_entry(sf, sw, s, s | (u64::from(set) << sh))
            {
                Ok(()) => break,
                Err(seen) => s = seen,
            }
        }
        // The granter may have changed the entry meanwhile: look again.
        let cur = self.mm.mem.read_entry(f, w);
        let (flags, domid) = (cur as u16, (cur >> 16) as u16);
        let t = self.tables.get(rd).ok_or(GntSt::GeneralError)?;
        if !pinned {
            if !ok_type(flags) || domid != ldom.0 || (!ro && flags & readonly != 0) {
                t.clear_flags(self.mm.mem, r, READING | WRITING);
                return st(GntSt::GeneralError);
            }
        } else if flags & readonly != 0 {
            t.clear_flags(self.mm.mem, r, WRITING);
            return st(GntSt::GeneralError);
        }
        Ok(())
    }

    /// Clears the status flags an entry no longer needs after pins went away.
    fn settle_flags(&mut self, rd: DomId, r: GrantRef, ro: bool) {
        let mem = &mut *self.mm.mem;
        if let Some(t) = self.tables.get(rd) {
            let a = t.act(mem, r);
            let mut clear = 0;
            if !ro && a.pin & pin::WRITABLE == 0 {
                clear |= WRITING;
            }
            if a.pin == 0 {
                clear |= READING;
            }
            t.clear_flags(mem, r, clear);
        }
    }

    /// A dying domain's table whose last pin just went is destroyed.
    fn reap(&mut self, rd: DomId) {
        let mem = &*self.mm.mem;
        let gone = match self.tables.get(rd) {
            Some(t) if t.dying && t.unpinned() => {
                t.destroy_private(mem, self.mm.ft, self.pool);
                true
            }
            _ => false,
        };
        if gone {
            self.tables.forget(rd);
        }
    }

    // ---- table size and version ----------------------------------------------------

    /// `GNTTABOP_setup_table` (`gnttab_setup_table`): grows `dom`'s table to
    /// `nr_frames` and returns its first `nr_frames` frames.
    pub fn setup_table(
        &mut self,
        dom: DomId,
        nr_frames: u32,
    ) -> Result<heapless::Vec<Mfn, { super::MAX_GRANT_FRAMES as usize }>, GntSt> {
        let d = self.any_id(dom);
        if !self.exists(d) {
            return st(GntSt::BadDomain);
        }
        if !self.may_target(d) {
            return st(GntSt::PermissionDenied);
        }
        let t = self.tables.get(d).ok_or(GntSt::BadDomain)?;
        if nr_frames > t.limits().max_grant_frames {
            return st(GntSt::GeneralError);
        }
        let needs_status =
            t.version() > 1 && GrantTable::status_frames_for(nr_frames) > t.nr_status_frames;
        if (nr_frames > t.nr_grant_frames() || needs_status)
            && !t.grow(self.mm.mem, self.mm.ft, self.pool, nr_frames)
        {
            return st(GntSt::GeneralError);
        }
        let mut out = heapless::Vec::new();
        for i in 0..nr_frames as usize {
            let _ = out.push(t.shared[i]);
        }
        Ok(out)
    }

    /// `GNTTABOP_query_size`: (frames now, most frames).
    pub fn query_size(&mut self, dom: DomId) -> Result<(u32, u32), GntSt> {
        let d = self.any_id(dom);
        if !self.exists(d) {
            return st(GntSt::BadDomain);
        }
        if !self.may_target(d) {
            return st(GntSt::PermissionDenied);
        }
        let t = self.tables.get(d).ok_or(GntSt::BadDomain)?;
        Ok((t.nr_grant_frames(), t.limits().max_grant_frames))
    }

    /// `GNTTABOP_get_version`.
    pub fn get_version(&mut self, dom: DomId) -> Result<u32, Errno> {
        let d = self.any_id(dom);
        if !self.exists(d) {
            return Err(Errno::ESRCH);
        }
        if !self.may_target(d) {
            return Err(Errno::EPERM);
        }
        Ok(self.tables.get(d).map_or(1, |t| u32::from(t.version())))
    }

    /// `GNTTABOP_get_status_frames`: the first `nr` status frames of `dom` (v2).
    pub fn get_status_frames(
        &mut self,
        dom: DomId,
        nr: u32,
    ) -> Result<heapless::Vec<Mfn, 8>, GntSt> {
        let d = self.any_id(dom);
        if !self.exists(d) {
            return st(GntSt::BadDomain);
        }
        if !self.may_target(d) {
            return st(GntSt::PermissionDenied);
        }
        let t = self.tables.get(d).ok_or(GntSt::BadDomain)?;
        if nr > t.nr_status_frames {
            return st(GntSt::GeneralError);
        }
        Ok(t.status.iter().take(nr as usize).copied().collect())
    }

    /// `GNTTABOP_set_version` (`gnttab_set_version`) for the caller's own table;
    /// returns the result and the version in force afterwards.
    pub fn set_version(&mut self, version: u32) -> (Result<(), Errno>, u32) {
        let me = self.caller();
        let res = self.set_version_inner(version);
        let now = self.tables.get(me).map_or(1, |t| u32::from(t.version()));
        (res, now)
    }

    fn set_version_inner(&mut self, version: u32) -> Result<(), Errno> {
        let me = self.caller();
        if version != 1 && version != 2 {
            return Err(Errno::EINVAL);
        }
        let mem = &mut *self.mm.mem;
        let t = self.tables.get(me).ok_or(Errno::ESRCH)?;
        if version == 2 && t.limits().max_version < 2 {
            return Err(Errno::ENOSYS);
        }
        if u32::from(t.version()) == version {
            return Ok(());
        }
        // Entries 0..8 may stay in use (the toolstack's console and store grants).
        for r in GNTTAB_NR_RESERVED_ENTRIES..t.nr_entries() {
            if t.act(mem, GrantRef(r)).pin != 0 {
                return Err(Errno::EBUSY);
            }
        }
        let permit = GtfFlags::PERMIT_ACCESS.bits();
        let type_mask = GtfFlags::TYPE_MASK.bits();
        // The reserved entries in v1 form: (flags, domid, frame).
        let mut reserved = [(0u16, 0u16, 0u64); GNTTAB_NR_RESERVED_ENTRIES as usize];
        if t.version() == 1 {
            if !t.grow_status(mem, self.mm.ft, self.pool) {
                return Err(Errno::ENOMEM);
            }
            for (i, e) in reserved.iter_mut().enumerate() {
                let (f, w) = t.hdr_at(GrantRef(i as u32));
                let v = mem.read_entry(f, w);
                *e = (v as u16, (v >> 16) as u16, v >> 32);
            }
        } else {
            for (i, e) in reserved.iter_mut().enumerate() {
                let r = GrantRef(i as u32);
                let (f, w) = t.hdr_at(r);
                let hdr = mem.read_entry(f, w);
                let frame = mem.read_entry(f, w + 1);
                let flags = hdr as u16;
                match flags & type_mask {
                    x if x == permit => {
                        if frame >> 32 != 0 {
                            return Err(Errno::ERANGE);
                        }
                        let status = t.status_flags(mem, r);
                        *e = (flags | status, (hdr >> 16) as u16, frame);
                    }
                    x if x == GtfFlags::TRANSITIVE.bits() => return Err(Errno::ERANGE),
                    _ => {}
                }
            }
            // The status frames go; the guest must have unmapped them.
            let n = t.nr_status_frames as usize;
            if t.status[..n]
                .iter()
                .any(|&f| self.mm.ft.info(f).is_some_and(|i| i.count() > 0))
            {
                return Err(Errno::EBUSY);
            }
            for &f in &t.status[..n] {
                give_back(self.mm.ft, self.pool, f);
            }
            t.nr_status_frames = 0;
        }
        for i in 0..t.nr_grant_frames() as usize {
            mem.zero_page(t.shared[i]);
        }
        t.version = version as u8;
        for (i, &(flags, domid, frame)) in reserved.iter().enumerate() {
            let r = GrantRef(i as u32);
            let (f, w) = t.hdr_at(r);
            if version == 1 {
                let v = u64::from(flags) | u64::from(domid) << 16 | (frame & 0xFFFF_FFFF) << 32;
                mem.write_entry(f, w, v);
            } else {
                let keep = !(READING | WRITING);
                mem.write_entry(f, w, u64::from(flags & keep) | u64::from(domid) << 16);
                mem.write_entry(f, w + 1, frame);
                let (sf, sw, sh) = t.status_at(r);
                let s = mem.read_entry(sf, sw) & !(0xFFFF << sh);
                let bits = u64::from(flags & (READING | WRITING)) << sh;
                mem.write_entry(sf, sw, s | bits);
            }
        }
        Ok(())
    }

    // ---- map and unmap ---------------------------------------------------------------

    /// `GNTTABOP_map_grant_ref` (`map_grant_ref`).
    pub fn map(&mut self, req: &MapReq) -> MapResult {
        let fail = |status| MapResult {
            status,
            handle: 0,
            dev_bus_addr: 0,
        };
        let flags = GntMapFlags::from_bits_retain(req.flags);
        if !flags.intersects(GntMapFlags::DEVICE_MAP | GntMapFlags::HOST_MAP) {
            return fail(GntSt::BadGntref);
        }
        let ld = self.caller();
        if req.dom == DomId::SELF || !self.exists(req.dom) {
            return fail(GntSt::BadDomain);
        }
        let mem = &mut *self.mm.mem;
        let Some(lgt) = self.tables.get(ld) else {
            return fail(GntSt::GeneralError);
        };
        let Some(handle) = lgt.get_handle(mem, self.mm.ft, self.pool) else {
            // Xen 4.17 answers GNTST_no_space (measured on real Xen).
            return fail(GntSt::NoSpace);
        };
        match self.map_pin(req, flags) {
            Ok(mfn) => {
                let mem = &mut *self.mm.mem;
                if let Some(lgt) = self.tables.get(ld) {
                    let e = MaptrackEntry {
                        gref: req.gref.0,
                        flags: req.flags as u16,
                        domid: req.dom,
                    };
                    lgt.set_maptrack(mem, handle, e);
                }
                MapResult {
                    status: GntSt::Okay,
                    handle,
                    dev_bus_addr: mfn.0 << 12,
                }
            }
            Err(s) => {
                let mem = &mut *self.mm.mem;
                if let Some(lgt) = self.tables.get(ld) {
                    lgt.put_handle(mem, handle);
                }
                fail(s)
            }
        }
    }

    /// The granter's side of a map: pin the active entry, take the references, write
    /// the host entry. On failure everything is undone.
    fn map_pin(&mut self, req: &MapReq, flags: GntMapFlags) -> Result<Mfn, GntSt> {
        let ld = self.caller();
        let rd = req.dom;
        let r = req.gref;
        let ro = flags.contains(GntMapFlags::READONLY);
        let device = flags.contains(GntMapFlags::DEVICE_MAP);
        let host = flags.contains(GntMapFlags::HOST_MAP);
        let mem = &mut *self.mm.mem;
        let rgt = self.tables.get(rd).ok_or(GntSt::BadDomain)?;
        if r.0 >= rgt.nr_entries() {
            return st(GntSt::BadGntref);
        }
        let mut act = rgt.act(mem, r);
        let incs = (if device {
            if ro { pin::DEVR } else { pin::DEVW }
        } else {
            0
        }) + (if host {
            if ro { pin::HSTR } else { pin::HSTW }
        } else {
            0
        });
        if act.pin != 0
            && (act.domid != ld || act.pin & pin::overflow_mask(incs) != 0 || act.sub_page)
        {
            return st(GntSt::GeneralError);
        }
        let dying = rgt.dying;
        let version = rgt.version();
        let mut have_ref = false;
        if act.pin == 0 || (!ro && act.pin & pin::WRITABLE == 0) {
            if dying {
                return st(GntSt::GeneralError);
            }
            self.set_status(rd, r, ro, true, ld, act.pin != 0)?;
            if act.pin == 0 {
                let frame = self.entry_frame(rd, r, version);
                if get_page(self.mm, frame, rd).is_err() {
                    self.settle_flags(rd, r, ro);
                    return st(GntSt::BadPage);
                }
                have_ref = true;
                act.domid = ld;
                act.mfn = frame;
                act.start = 0;
                act.length = PAGE as u16;
                act.sub_page = false;
                act.trans_dom = rd;
                act.trans_gref = r.0;
            }
        }
        act.pin += incs;
        let mfn = act.mfn;
        let mem = &mut *self.mm.mem;
        if let Some(t) = self.tables.get(rd) {
            t.set_act(mem, r, &act);
        }
        // The references the mappings stand for.
        let mut refs = u32::from(have_ref);
        let mut types = 0u32;
        let outcome = (|| {
            if refs == 0 {
                get_page(self.mm, mfn, rd).map_err(|_| GntSt::GeneralError)?;
                refs += 1;
            }
            if device && !ro {
                get_page_type(self.mm, mfn, PageType::Writable).map_err(|_| GntSt::GeneralError)?;
                types += 1;
            }
            if host {
                if device {
                    get_page(self.mm, mfn, rd).map_err(|_| GntSt::GeneralError)?;
                    refs += 1;
                }
                if !ro {
                    get_page_type(self.mm, mfn, PageType::Writable)
                        .map_err(|_| GntSt::GeneralError)?;
                    types += 1;
                }
                let at = if flags.contains(GntMapFlags::CONTAINS_PTE) {
                    PteAt::Machine(req.host_addr)
                } else {
                    PteAt::Linear(req.host_addr)
                };
                grant_pte::create_grant_mapping(self.mm, self.root, at, mfn, pte_of(flags))
                    .map_err(|_| GntSt::GeneralError)?;
            }
            Ok(())
        })();
        if let Err(s) = outcome {
            for _ in 0..types {
                put_page_type(self.mm, mfn);
            }
            for _ in 0..refs {
                put_page(self.mm, mfn);
            }
            let mem = &mut *self.mm.mem;
            if let Some(t) = self.tables.get(rd) {
                let mut a = t.act(mem, r);
                a.pin -= incs;
                t.set_act(mem, r, &a);
            }
            self.settle_flags(rd, r, ro);
            return Err(s);
        }
        Ok(mfn)
    }

    /// The frame entry `r` of `rd` names (v1 `frame`, v2 `full_page.frame`).
    fn entry_frame(&mut self, rd: DomId, r: GrantRef, version: u8) -> Mfn {
        let Some(t) = self.tables.get(rd) else {
            return Mfn(u64::MAX);
        };
        let (f, w) = t.hdr_at(r);
        if version == 1 {
            Mfn(self.mm.mem.read_entry(f, w) >> 32)
        } else {
            Mfn(self.mm.mem.read_entry(f, w + 1))
        }
    }

    /// The first half of `GNTTABOP_unmap_grant_ref` / `unmap_and_replace`
    /// (`unmap_common`): checks the handle and removes the mappings the request names.
    /// The caller flushes its TLBs and then runs [`Gnt::unmap_complete`] on the
    /// returned record.
    pub fn unmap(&mut self, req: &UnmapReq) -> (GntSt, Option<UnmapDone>) {
        let ld = self.caller();
        let mem = &mut *self.mm.mem;
        let Some(lgt) = self.tables.get(ld) else {
            return (GntSt::BadHandle, None);
        };
        if req.handle >= lgt.maptrack_limit() {
            return (GntSt::BadHandle, None);
        }
        let mut map = lgt.maptrack(mem, req.handle);
        if map.flags == 0 {
            return (GntSt::BadHandle, None);
        }
        let rd = map.domid;
        let r = GrantRef(map.gref);
        let Some(rgt) = self.tables.get(rd) else {
            // Xen crashes the caller here; the table of a domain with pinned grants
            // outlives the domain, so this cannot happen.
            return (GntSt::GeneralError, None);
        };
        if r.0 >= rgt.nr_entries() {
            return (GntSt::BadHandle, None);
        }
        let act = rgt.act(mem, r);
        // Xen 4.17 answers GNTST_bad_dev_addr here (measured on real Xen; older
        // releases said GNTST_general_error).
        if req.dev_bus_addr != 0 && req.dev_bus_addr != act.mfn.0 << 12 {
            return (GntSt::BadDevAddr, None);
        }
        let flags = GntMapFlags::from_bits_retain(u32::from(map.flags));
        let ro = flags & GntMapFlags::READONLY;
        let mut done = GntMapFlags::empty();
        if req.host_addr != 0 && flags.contains(GntMapFlags::HOST_MAP) {
            let at = if flags.contains(GntMapFlags::CONTAINS_PTE) {
                PteAt::Machine(req.host_addr)
            } else {
                PteAt::Linear(req.host_addr)
            };
            if grant_pte::replace_grant_mapping(
                self.mm,
                self.root,
                at,
                act.mfn,
                pte_of(flags),
                req.new_addr,
            )
            .is_err()
            {
                return (GntSt::GeneralError, None);
            }
            map.flags &= !(GntMapFlags::HOST_MAP.bits() as u16);
            done |= GntMapFlags::HOST_MAP | ro;
        }
        if req.dev_bus_addr != 0 && flags.contains(GntMapFlags::DEVICE_MAP) {
            map.flags &= !(GntMapFlags::DEVICE_MAP.bits() as u16);
            done |= GntMapFlags::DEVICE_MAP | ro;
        }
        let both = (GntMapFlags::HOST_MAP | GntMapFlags::DEVICE_MAP).bits() as u16;
        let mem = &mut *self.mm.mem;
        if let Some(lgt) = self.tables.get(ld) {
            if map.flags & both == 0 {
                map.flags = 0;
                lgt.set_maptrack(mem, req.handle, map);
                lgt.put_handle(mem, req.handle);
            } else {
                lgt.set_maptrack(mem, req.handle, map);
            }
        }
        let rec = (!done.is_empty()).then_some(UnmapDone {
            rd,
            gref: r,
            mfn: act.mfn,
            done,
        });
        (GntSt::Okay, rec)
    }

    /// `unmap_common_complete`: drops the references and pins of what
    /// [`Gnt::unmap`] undid, once no TLB may still hold the old mapping.
    pub fn unmap_complete(&mut self, d: &UnmapDone) {
        let ro = d.done.contains(GntMapFlags::READONLY);
        let mut dec = 0;
        if d.done.contains(GntMapFlags::DEVICE_MAP) {
            if ro {
                put_page(self.mm, d.mfn);
            } else {
                put_page_and_type(self.mm, d.mfn);
            }
            dec += if ro { pin::DEVR } else { pin::DEVW };
        }
        if d.done.contains(GntMapFlags::HOST_MAP) {
            if !ro {
                put_page_type(self.mm, d.mfn);
            }
            put_page(self.mm, d.mfn);
            dec += if ro { pin::HSTR } else { pin::HSTW };
        }
        let mem = &mut *self.mm.mem;
        if let Some(t) = self.tables.get(d.rd) {
            let mut a = t.act(mem, d.gref);
            a.pin = a.pin.saturating_sub(dec);
            t.set_act(mem, d.gref, &a);
        }
        self.settle_flags(d.rd, d.gref, ro);
        self.reap(d.rd);
    }

    // ---- copy -------------------------------------------------------------------------

    /// Xen's `acquire_grant_for_copy`: pins entry `r` of `rd` for a copy by `ldom`
    /// and takes a general reference on its frame. Returns (frame, first byte, bytes).
    fn acquire_for_copy(
        &mut self,
        rd: DomId,
        r: GrantRef,
        ldom: DomId,
        ro: bool,
        allow_transitive: bool,
    ) -> Result<(Mfn, u16, u16), GntSt> {
        let mem = &mut *self.mm.mem;
        let rgt = self.tables.get(rd).ok_or(GntSt::BadDomain)?;
        if r.0 >= rgt.nr_entries() {
            return st(GntSt::BadGntref);
        }
        let mut act = rgt.act(mem, r);
        let inc = if ro { pin::HSTR } else { pin::HSTW };
        if act.pin != 0 && (act.domid != ldom || act.pin & pin::overflow_mask(inc) != 0) {
            return st(GntSt::GeneralError);
        }
        let version = rgt.version();
        let dying = rgt.dying;
        let old_pin = act.pin;
        let needs_status = old_pin == 0 || (!ro && old_pin & pin::WRITABLE == 0);
        // A dying granter's shared frames may be someone else's already: its entries
        // are not read again. Nothing new is pinned; a pinned entry answers as in
        // Xen's already-pinned path for a dying owner.
        if dying {
            return st(if needs_status {
                GntSt::GeneralError
            } else {
                GntSt::BadDomain
            });
        }
        let hdr = self.header(rd, r).ok_or(GntSt::GeneralError)?;
        let type_bits = hdr.flags & GtfFlags::TYPE_MASK.bits();
        if version == 2 && type_bits == GtfFlags::TRANSITIVE.bits() {
            if needs_status {
                if dying {
                    return st(GntSt::GeneralError);
                }
                self.set_status(rd, r, ro, false, ldom, old_pin != 0)?;
            }
            let fail = |g: &mut Self, s| {
                g.settle_flags(rd, r, ro);
                Err(s)
            };
            if !allow_transitive {
                return fail(self, GntSt::GeneralError);
            }
            let (f, w) = match self.tables.get(rd) {
                Some(t) => t.hdr_at(r),
                None => return st(GntSt::GeneralError),
            };
            let td = DomId((self.mm.mem.read_entry(f, w) >> 32) as u16);
            let tref = GrantRef(self.mm.mem.read_entry(f, w + 1) as u32);
            if td == rd || td == DomId::SELF || !self.exists(td) {
                return fail(self, GntSt::GeneralError);
            }
            let (mfn, off, len) = match self.acquire_for_copy(td, tref, rd, ro, false) {
                Ok(x) => x,
                Err(s) => return fail(self, s),
            };
            // Pinned already (by a map, which reads the entry as a full page): the
            // pin must be this same transitive use, else the chain just acquired
            // is dropped again (Xen's re-check, which returns ERESTART).
            if old_pin != 0
                && (act.mfn != mfn
                    || act.start != off
                    || act.length != len
                    || act.trans_dom != td
                    || act.trans_gref != tref.0
                    || !act.sub_page)
            {
                self.release_for_copy(td, tref, ro);
                put_page(self.mm, mfn);
                return fail(self, GntSt::GeneralError);
            }
            if old_pin == 0 {
                act.domid = ldom;
                act.start = off;
                act.length = len;
                act.trans_dom = td;
                act.trans_gref = tref.0;
                act.mfn = mfn;
                act.sub_page = true;
            }
        } else if needs_status {
            if dying {
                return st(GntSt::GeneralError);
            }
            self.set_status(rd, r, ro, false, ldom, old_pin != 0)?;
            let (frame, sub, off, len) = if version == 1 {
                (self.entry_frame(rd, r, 1), false, 0, PAGE as u16)
            } else {
                let (f, w) = match self.tables.get(rd) {
                    Some(t) => t.hdr_at(r),
                    None => return st(GntSt::GeneralError),
                };
                let w0 = self.mm.mem.read_entry(f, w);
                let frame = Mfn(self.mm.mem.read_entry(f, w + 1));
                if hdr.flags & GtfFlags::SUB_PAGE.bits() != 0 {
                    (frame, true, (w0 >> 32) as u16, (w0 >> 48) as u16)
                } else {
                    (frame, false, 0, PAGE as u16)
                }
            };
            // An entry pinned already (a read-only pin gaining a writer) keeps its
            // frame: the copy uses `act.mfn`, so that is the frame to reference,
            // whatever the granter has written into the entry since.
            let frame = if old_pin == 0 { frame } else { act.mfn };
            if get_page(self.mm, frame, rd).is_err() {
                self.settle_flags(rd, r, ro);
                return st(GntSt::BadPage);
            }
            if old_pin == 0 {
                act.domid = ldom;
                act.sub_page = sub;
                act.start = off;
                act.length = len;
                act.trans_dom = rd;
                act.trans_gref = r.0;
                act.mfn = frame;
            }
        } else {
            let owner_ok = matches!(
                self.mm.ft.owner(act.mfn),
                Some(Owner::Domain(d) | Owner::XenShared(d)) if d == rd
            );
            if !owner_ok || dying || get_page(self.mm, act.mfn, rd).is_err() {
                self.settle_flags(rd, r, ro);
                return st(GntSt::BadDomain);
            }
        }
        act.pin += if ro { pin::HSTR } else { pin::HSTW };
        let mem = &mut *self.mm.mem;
        let t = self.tables.get(rd).ok_or(GntSt::GeneralError)?;
        t.set_act(mem, r, &act);
        Ok((act.mfn, act.start, act.length))
    }

    /// Xen's `release_grant_for_copy`: unpins what [`Gnt::acquire_for_copy`] pinned
    /// (the frame reference is the caller's to drop).
    fn release_for_copy(&mut self, rd: DomId, r: GrantRef, ro: bool) {
        let mem = &mut *self.mm.mem;
        let Some(t) = self.tables.get(rd) else { return };
        let mut a = t.act(mem, r);
        let (td, tref) = if t.version() == 1 {
            (rd, r)
        } else {
            (a.trans_dom, GrantRef(a.trans_gref))
        };
        a.pin = a.pin.saturating_sub(if ro { pin::HSTR } else { pin::HSTW });
        t.set_act(mem, r, &a);
        self.settle_flags(rd, r, ro);
        if td != rd {
            self.release_for_copy(td, tref, ro);
        }
        self.reap(rd);
    }

    /// One side of a copy (`gnttab_copy_claim_buf`).
    fn claim(&mut self, p: &GnttabCopyPtr, by_gref: bool, ro: bool) -> Result<CopyBuf, GntSt> {
        let dom = self.any_id(p.domid);
        let mut buf = if by_gref {
            let r = GrantRef(p.u as u32);
            let (mfn, off, len) = self.acquire_for_copy(dom, r, self.caller(), ro, true)?;
            CopyBuf {
                dom,
                mfn,
                off,
                len,
                gref: Some(r),
                writable_type: false,
            }
        } else {
            let mfn = Mfn(p.u);
            get_page(self.mm, mfn, dom).map_err(|_| GntSt::BadPage)?;
            CopyBuf {
                dom,
                mfn,
                off: 0,
                len: PAGE as u16,
                gref: None,
                writable_type: false,
            }
        };
        if !ro {
            if get_page_type(self.mm, buf.mfn, PageType::Writable).is_err() {
                self.release(&buf, ro);
                return st(GntSt::GeneralError);
            }
            buf.writable_type = true;
        }
        Ok(buf)
    }

    /// `gnttab_copy_release_buf`.
    fn release(&mut self, b: &CopyBuf, ro: bool) {
        if let Some(r) = b.gref {
            self.release_for_copy(b.dom, r, ro);
        }
        if b.writable_type {
            put_page_type(self.mm, b.mfn);
        }
        put_page(self.mm, b.mfn);
    }

    /// `GNTTABOP_copy`, one request (`gnttab_copy_one`).
    pub fn copy(&mut self, op: &GnttabCopy) -> GntSt {
        let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
        let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
        for (p, by_gref) in [(&op.source, src_gref), (&op.dest, dst_gref)] {
            if p.domid != DomId::SELF && !by_gref {
                return GntSt::PermissionDenied;
            }
            let d = self.any_id(p.domid);
            if !self.exists(d) {
                return GntSt::BadDomain;
            }
        }
        let src = match self.claim(&op.source, src_gref, true) {
            Ok(b) => b,
            Err(s) => return s,
        };
        let dst = match self.claim(&op.dest, dst_gref, false) {
            Ok(b) => b,
            Err(s) => {
                self.release(&src, true);
                return s;
            }
        };
        let len = u32::from(op.len);
        let (so, dso) = (u32::from(op.source.offset), u32::from(op.dest.offset));
        let within = |o: u32, b: &CopyBuf| {
            o >= u32::from(b.off) && o + len <= u32::from(b.off) + u32::from(b.len)
        };
        let status = if so + len > PAGE || dso + len > PAGE {
            GntSt::BadCopyArg
        } else if !within(so, &src) || !within(dso, &dst) {
            GntSt::GeneralError
        } else {
            self.mm
                .mem
                .copy_bytes(dst.mfn, dso as usize, src.mfn, so as usize, len as usize);
            GntSt::Okay
        };
        self.release(&dst, false);
        self.release(&src, true);
        status
    }

    // ---- the rest -------------------------------------------------------------------

    /// `GNTTABOP_swap_grant_ref` (`swap_grant_ref`) in the caller's table.
    pub fn swap(&mut self, a: GrantRef, b: GrantRef) -> GntSt {
        let me = self.caller();
        let mem = &mut *self.mm.mem;
        let Some(t) = self.tables.get(me) else {
            return GntSt::GeneralError;
        };
        if a.0 >= t.nr_entries() || b.0 >= t.nr_entries() {
            return GntSt::BadGntref;
        }
        if a == b {
            return GntSt::Okay;
        }
        if t.act(mem, a).pin != 0 || t.act(mem, b).pin != 0 {
            return GntSt::Eagain;
        }
        let (fa, wa) = t.hdr_at(a);
        let (fb, wb) = t.hdr_at(b);
        let words = if t.version() == 1 { 1 } else { 2 };
        for i in 0..words {
            let x = mem.read_entry(fa, wa + i);
            let y = mem.read_entry(fb, wb + i);
            mem.write_entry(fa, wa + i, y);
            mem.write_entry(fb, wb + i, x);
        }
        if t.version() == 2 {
            let sa = t.status_flags(mem, a);
            let sb = t.status_flags(mem, b);
            for (r, v) in [(a, sb), (b, sa)] {
                let (sf, sw, sh) = t.status_at(r);
                let w = mem.read_entry(sf, sw) & !(0xFFFF << sh);
                mem.write_entry(sf, sw, w | u64::from(v) << sh);
            }
        }
        GntSt::Okay
    }

    /// `GNTTABOP_cache_flush`, one request (`cache_flush`). The caches of x86 are
    /// coherent with every access the grant could have made, so after Xen's checks
    /// there is nothing to flush.
    pub fn cache_flush(&mut self, op: &GnttabCacheFlush) -> Result<(), Errno> {
        let (off, len) = (u32::from(op.offset), u32::from(op.length));
        if off >= PAGE
            || len > PAGE
            || off + len > PAGE
            || op.op & !(GNTTAB_CACHE_INVAL | GNTTAB_CACHE_CLEAN) != 0
        {
            return Err(Errno::EINVAL);
        }
        if len == 0 || op.op == 0 {
            return Ok(());
        }
        let mfn = Mfn(op.a >> 12);
        let owner = match self.mm.ft.owner(mfn) {
            None => return Err(Errno::EINVAL),
            Some(Owner::Domain(d) | Owner::XenShared(d)) if self.exists(d) => d,
            Some(_) => return Err(Errno::EPERM),
        };
        let me = self.caller();
        if owner != me {
            let mem = &*self.mm.mem;
            let t = self.tables.get(owner).ok_or(Errno::EPERM)?;
            let found = (0..t.nr_entries()).any(|r| {
                let a = t.act(mem, GrantRef(r));
                a.pin != 0 && a.domid == me && a.mfn == mfn
            });
            if !found {
                return Err(Errno::EINVAL);
            }
        }
        Ok(())
    }

    /// `gnttab_release_mappings` for the dying caller: every grant it still has
    /// mapped is unpinned; device mappings drop their references here, host mappings
    /// with the page tables that hold them (as in Xen for PV).
    pub fn release_mappings(&mut self) {
        let me = self.caller();
        let Some(limit) = self.tables.get(me).map(|t| t.maptrack_limit()) else {
            return;
        };
        for h in 0..limit {
            let mem = &mut *self.mm.mem;
            let Some(t) = self.tables.get(me) else { return };
            let map = t.maptrack(mem, h);
            let flags = GntMapFlags::from_bits_retain(u32::from(map.flags));
            if !flags.intersects(GntMapFlags::DEVICE_MAP | GntMapFlags::HOST_MAP) {
                continue;
            }
            t.set_maptrack(mem, h, MaptrackEntry::default());
            let rd = map.domid;
            let r = GrantRef(map.gref);
            let Some(rgt) = self.tables.get(rd) else {
                continue;
            };
            if r.0 >= rgt.nr_entries() {
                continue;
            }
            let mut a = rgt.act(mem, r);
            let ro = flags.contains(GntMapFlags::READONLY);
            if flags.contains(GntMapFlags::DEVICE_MAP) {
                a.pin = a.pin.saturating_sub(if ro { pin::DEVR } else { pin::DEVW });
            }
            if flags.contains(GntMapFlags::HOST_MAP) {
                a.pin = a.pin.saturating_sub(if ro { pin::HSTR } else { pin::HSTW });
            }
            rgt.set_act(mem, r, &a);
            if flags.contains(GntMapFlags::DEVICE_MAP) {
                if ro {
                    put_page(self.mm, a.mfn);
                } else {
                    put_page_and_type(self.mm, a.mfn);
                }
            }
            self.settle_flags(rd, r, ro);
            if rd != me {
                self.reap(rd);
            }
        }
    }
}

impl<M, H, P, E> Gnt<'_, '_, '_, M, H, P, E>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    /// The first half of `GNTTABOP_transfer` (`steal_page` and the physmap removal):
    /// the caller's frame `mfn`, which nothing references, is released in the frame
    /// table and its M2P entry invalidated. The caller adjusts the reservation and
    /// frees the frame if the transfer then fails.
    pub fn steal(&mut self, mfn: Mfn) -> Result<(), GntSt> {
        let me = self.caller();
        let fi = self.mm.ft.info(mfn).copied().ok_or(GntSt::BadPage)?;
        if fi.owner() != Owner::Domain(me) || !fi.is_unreferenced() {
            return st(GntSt::BadPage);
        }
        self.mm.ft.release(mfn).map_err(|_| GntSt::BadPage)?;
        self.mm.m2p.set(mfn, hypercall_abi::xen::INVALID_M2P_ENTRY);
        Ok(())
    }

    /// The second half (`gnttab_prepare_for_transfer` and the entry update): entry
    /// `r` of `e`'s table must accept a transfer from the caller; `mfn` becomes `e`'s,
    /// recorded in the entry and in the M2P at the frame number the entry held.
    pub fn accept_transfer(&mut self, e: DomId, r: GrantRef, mfn: Mfn) -> Result<(), GntSt> {
        let me = self.caller();
        let mem = &mut *self.mm.mem;
        let t = self.tables.get(e).ok_or(GntSt::BadDomain)?;
        if t.dying || r.0 >= t.nr_entries() {
            return st(GntSt::GeneralError);
        }
        let (f, w) = t.hdr_at(r);
        let accept = GtfFlags::ACCEPT_TRANSFER.bits();
        let committed = GtfFlags::TRANSFER_COMMITTED.bits();
        let mut cur = mem.read_entry(f, w);
        let mut ok = false;
        for _ in 0..CMPXCHG_RETRIES {
            if cur as u16 != accept || (cur >> 16) as u16 != me.0 {
                return st(GntSt::GeneralError);
            }
            match mem.cmpxchg_entry(f, w, cur, cur | u64::from(committed)) {
                Ok(()) => {
                    ok = true;
                    break;
                }
                Err(seen) => cur = seen,
            }
        }
        if !ok {
            return st(GntSt::GeneralError);
        }
        self.mm
            .ft
            .assign(mfn, Owner::Domain(e))
            .map_err(|_| GntSt::GeneralError)?;
        let (f, w) = t.hdr_at(r);
        let gfn = if t.version() == 1 {
            let v = mem.read_entry(f, w);
            mem.write_entry(f, w, (v & 0xFFFF_FFFF) | (mfn.0 & 0xFFFF_FFFF) << 32);
            v >> 32
        } else {
            let g = mem.read_entry(f, w + 1);
            mem.write_entry(f, w + 1, mfn.0);
            g
        };
        self.mm.m2p.set(mfn, gfn);
        let completed = GtfFlags::TRANSFER_COMPLETED.bits();
        let v = mem.read_entry(f, w);
        let _ = mem.cmpxchg_entry(f, w, v, v | u64::from(completed));
        Ok(())
    }

    /// Start of a domain's destruction: it drops the grants it has mapped
    /// ([`Gnt::release_mappings`]) and no grant of its own can be pinned any more.
    /// Returns whether its table could go at once (nothing of it is pinned); if not,
    /// it stays until the last pin goes.
    pub fn domain_dying(&mut self) -> bool {
        self.release_mappings();
        let me = self.caller();
        let Some(t) = self.tables.get(me) else {
            return true;
        };
        t.dying = true;
        let unpinned = t.unpinned();
        self.reap(me);
        unpinned
    }
}

/// The PTE of a host mapping made with `flags`.
fn pte_of(flags: GntMapFlags) -> GrantPte {
    GrantPte {
        writable: !flags.contains(GntMapFlags::READONLY),
        user: flags.contains(GntMapFlags::APPLICATION_MAP),
        avail: flags.bits() >> 16,
        cache: 0,
    }
}
