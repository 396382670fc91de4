//! The per-entry semantics of `mmu_update` (#1), `mmuext_op` (#26),
//! `update_va_mapping` (#14/#22), and domain teardown.
//!
//! The hypercall handlers own the batch loops: copy each request in from the guest,
//! call the function here, stop at the first error, report `done`, and perform the
//! returned [`Flush`]. Every function here either succeeds or changes nothing.
//!
//! `foreigndom` is resolved once per hypercall ([`ForeignDomain::for_mmu_update`],
//! [`ForeignDomain::for_mmuext_op`]); as in Xen an unknown domain fails the whole
//! hypercall with `-ESRCH` before any entry runs, while the permission check is
//! reported by the first entry that needs it.

use hypercall_abi::DomId;
use hypercall_abi::mmu::{
    MmuCmd, MmuUpdate, MmuextCmd, MmuextOp, UVMF_ALL, UVMF_FLUSHTYPE_MASK, UVMF_INVLPG, UVMF_LOCAL,
    UVMF_TLB_FLUSH, split_foreigndom,
};
use hypercall_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_VIRT_END};

use super::Mfn;
use super::error::MmError;
use super::frame_table::{FrameInfo, Owner, PageType};
use super::page_type::{
    HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks, PSE, PgOwner, idx9, is_present, pte_mfn,
};

/// End of the canonical lower half (x86-64 with 48-bit virtual addresses).
const LOWER_HALF_END: u64 = 1 << 47;
/// Most LDT entries `MMUEXT_SET_LDT` accepts (Xen: `ents > 8192` is refused).
pub const LDT_MAX_ENTRIES: u32 = 8192;
/// Pages an LDT of [`LDT_MAX_ENTRIES`] 8-byte descriptors spans.
pub const LDT_PAGES: usize = 16;
/// Offset mask within a page.
const PAGE_OFFSET_MASK: u64 = 0xfff;

/// Xen's `__addr_ok`: canonical and outside the hypervisor's range
/// (`HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END`).
pub const fn addr_ok(va: u64) -> bool {
    va < LOWER_HALF_END || va >= HYPERVISOR_VIRT_END
}

/// What a flush covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushKind {
    /// The whole (non-global and global) TLB.
    Tlb,
    /// One linear address (already checked with [`addr_ok`]).
    Invlpg(u64),
}

impl FlushKind {
    fn merge(self, other: FlushKind) -> FlushKind {
        match (self, other) {
            (FlushKind::Invlpg(a), FlushKind::Invlpg(b)) if a == b => FlushKind::Invlpg(a),
            _ => FlushKind::Tlb,
        }
    }
}

/// What the caller must flush after an operation succeeded.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Flush {
    /// Nothing.
    #[default]
    None,
    /// This vCPU's TLB (this physical CPU).
    Local(FlushKind),
    /// The TLBs of every CPU the domain's vCPUs have run on (`d->dirty_cpumask`).
    All(FlushKind),
    /// The vCPUs named by the bitmap of `unsigned long`s at this guest address. If the
    /// bitmap cannot be read, the operation fails with `-EINVAL` (mmuext_op) or
    /// `-EFAULT` (update_va_mapping), as in Xen; the entry itself stays applied.
    Multi(u64, FlushKind),
    /// `WBINVD` on this CPU (`MMUEXT_FLUSH_CACHE`).
    CacheLocal,
    /// `WBINVD` on every physical CPU (`MMUEXT_FLUSH_CACHE_GLOBAL`).
    CacheGlobal,
}

impl Flush {
    /// One flush covering both, or `None` when they cannot be expressed as one (a cache
    /// flush with a TLB flush: perform `self` first, then keep `other`). TLB flushes
    /// widen: different addresses become a full flush, different vCPU sets become
    /// [`Flush::All`].
    pub fn merge(self, other: Flush) -> Option<Flush> {
        match (self, other) {
            (Flush::None, x) | (x, Flush::None) => Some(x),
            (Flush::CacheLocal, Flush::CacheLocal) => Some(Flush::CacheLocal),
            (Flush::CacheLocal | Flush::CacheGlobal, Flush::CacheLocal | Flush::CacheGlobal) => {
                Some(Flush::CacheGlobal)
            }
            (Flush::CacheLocal | Flush::CacheGlobal, _)
            | (_, Flush::CacheLocal | Flush::CacheGlobal) => Option::None,
            (Flush::Local(a), Flush::Local(b)) => Some(Flush::Local(a.merge(b))),
            (Flush::Multi(p, a), Flush::Multi(q, b)) if p == q => Some(Flush::Multi(p, a.merge(b))),
            (
                Flush::Local(a) | Flush::All(a) | Flush::Multi(_, a),
                Flush::Local(b) | Flush::All(b) | Flush::Multi(_, b),
            ) => Some(Flush::All(a.merge(b))),
        }
    }
}

/// The memory-management state of one vCPU that the model owns references for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMm {
    /// Kernel page-table base (CR3 in guest kernel mode); holds an L4 type reference.
    pub kernel_root: Option<Mfn>,
    /// User page-table base (`MMUEXT_NEW_USER_BASEPTR`); holds an L4 type reference.
    pub user_root: Option<Mfn>,
    /// LDT linear address (0 = none).
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u32,
    /// The LDT's pages mapped for the CPU so far (on first use, [`map_ldt_page`]),
    /// each holding a general and a `SegDesc` type reference.
    pub ldt_frames: [Option<Mfn>; LDT_PAGES],
}

/// `foreigndom` resolved: whose tables are edited and whose frames may be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignDomain {
    /// Owner of the page tables being edited (PFD, or the caller).
    pub pt_owner: DomId,
    /// Owner of the frames new L1 entries map (FD).
    pub pg_owner: PgOwner,
    /// I/O capability behind an I/O mapping made for `pg_owner` (the caller's for
    /// `DOMID_IO`).
    pub pg_io_caps: bool,
    /// I/O capability of `pt_owner`.
    pub pt_io_caps: bool,
    /// The caller may edit `pt_owner`'s tables.
    pub pt_permitted: bool,
    /// The caller may map `pg_owner`'s frames.
    pub pg_permitted: bool,
}

impl ForeignDomain {
    /// The caller acting on itself (`DOMID_SELF`).
    pub fn own<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>) -> Self {
        ForeignDomain {
            pt_owner: ctx.dom,
            pg_owner: PgOwner::Dom(ctx.dom),
            pg_io_caps: ctx.io_caps,
            pt_io_caps: ctx.io_caps,
            pt_permitted: true,
            pg_permitted: true,
        }
    }

    /// Resolve the FD part of `foreigndom` (Xen's `get_pg_owner`): `DOMID_SELF`, an
    /// existing other domain, `DOMID_IO` or `DOMID_XEN`. The caller's own numeric id
    /// and unknown domains are `-ESRCH`.
    fn pg_owner<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>, fd: DomId) -> Result<PgOwner, MmError>
    where
        E: MmHooks,
    {
        if fd == DomId::SELF {
            Ok(PgOwner::Dom(ctx.dom))
        } else if fd == ctx.dom {
            Err(MmError::NoSuchDomain(fd))
        } else if fd == DomId::IO {
            Ok(PgOwner::Io)
        } else if fd == DomId::XEN {
            Ok(PgOwner::Xen)
        } else if fd.is_ordinary() && ctx.hooks.domain_exists(fd) {
            Ok(PgOwner::Dom(fd))
        } else {
            Err(MmError::NoSuchDomain(fd))
        }
    }

    fn with_owners<M, H, P, E>(
        ctx: &MmCtx<'_, '_, M, H, P, E>,
        pt_owner: DomId,
        pg_owner: PgOwner,
    ) -> Self
    where
        E: MmHooks,
    {
        let caps = |d: DomId| {
            if d == ctx.dom {
                ctx.io_caps
            } else {
                ctx.hooks.io_caps(d)
            }
        };
        let may = |d: DomId| d == ctx.dom || ctx.hooks.privileged_over(ctx.dom, d);
        let (pg_io_caps, pg_permitted) = match pg_owner {
            PgOwner::Dom(d) => (caps(d), may(d)),
            PgOwner::Io => (ctx.io_caps, true),
            PgOwner::Xen => (false, ctx.privileged),
        };
        ForeignDomain {
            pt_owner,
            pg_owner,
            pg_io_caps,
            pt_io_caps: caps(pt_owner),
            pt_permitted: may(pt_owner),
            pg_permitted,
        }
    }

    /// Resolve `mmu_update`'s `foreigndom` (FD in bits 15:0, PFD+1 in bits 31:16).
    pub fn for_mmu_update<M, H, P, E>(
        ctx: &MmCtx<'_, '_, M, H, P, E>,
        foreigndom: u32,
    ) -> Result<Self, MmError>
    where
        E: MmHooks,
    {
        let (fd, pfd) = split_foreigndom(foreigndom);
        let pt_owner = match pfd {
            None => ctx.dom,
            Some(p) if p == ctx.dom => ctx.dom,
            Some(p) if p.is_ordinary() && ctx.hooks.domain_exists(p) => p,
            Some(p) => return Err(MmError::NoSuchDomain(p)),
        };
        let pg_owner = Self::pg_owner(ctx, fd)?;
        Ok(Self::with_owners(ctx, pt_owner, pg_owner))
    }

    /// Resolve `mmuext_op`'s `foreigndom` (the domain whose frames pin/unpin and
    /// clear/copy act on). `-ESRCH` for unknown domains, `-EINVAL` for `DOMID_IO` and
    /// `DOMID_XEN`, `-EPERM` if the caller may not act on the domain.
    pub fn for_mmuext_op<M, H, P, E>(
        ctx: &MmCtx<'_, '_, M, H, P, E>,
        foreigndom: u32,
    ) -> Result<Self, MmError>
    where
        E: MmHooks,
    {
        let (fd, _) = split_foreigndom(foreigndom);
        let pg_owner = Self::pg_owner(ctx, fd)?;
        let PgOwner::Dom(d) = pg_owner else {
            return Err(MmError::NotPvDomain(fd));
        };
        let this = Self::with_owners(ctx, ctx.dom, pg_owner);
        if !this.pg_permitted {
            return Err(MmError::NotPermitted(d));
        }
        Ok(this)
    }

    /// Resolve `update_va_mapping_otherdomain`'s `domid` (FD; the tables are the
    /// caller's).
    pub fn for_update_va_mapping<M, H, P, E>(
        ctx: &MmCtx<'_, '_, M, H, P, E>,
        domid: DomId,
    ) -> Result<Self, MmError>
    where
        E: MmHooks,
    {
        let pg_owner = Self::pg_owner(ctx, domid)?;
        Ok(Self::with_owners(ctx, ctx.dom, pg_owner))
    }

    fn pg_dom(&self) -> Option<DomId> {
        match self.pg_owner {
            PgOwner::Dom(d) => Some(d),
            PgOwner::Io | PgOwner::Xen => None,
        }
    }
}

/// One `mmu_update` request. `MMU_NORMAL_PT_UPDATE`, `MMU_PT_UPDATE_PRESERVE_AD` and
/// `MMU_PT_UPDATE_NO_TRANSLATE` (the same for PV) act according to the current type of
/// the frame holding the entry: a validated L1 validates the new L1 entry; a validated
/// L2..L4 validates the new entry (FD must equal PFD); a `Writable` frame, or one with
/// no type references, is written as is; anything else is `-EINVAL`.
/// `MMU_MACHPHYS_UPDATE` records `val` as the PFN of the frame (owned by FD) in the
/// M2P. Commands 4..=7 are `-ENOSYS`.
///
/// Returns [`Flush::All`] when a present L2..L4 entry changed.
pub fn mmu_update_entry<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    req: MmuUpdate,
    foreign: ForeignDomain,
) -> Result<Flush, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let Some(cmd) = req.cmd() else {
        #[allow(clippy::cast_possible_truncation, reason = "masked to 3 bits")]
        let nr = (req.ptr & 7) as u32;
        return Err(MmError::UnknownCommand(nr));
    };
    match cmd {
        MmuCmd::NormalPtUpdate | MmuCmd::PtUpdatePreserveAd | MmuCmd::PtUpdateNoTranslate => {
            if !foreign.pt_permitted {
                return Err(MmError::NotPermitted(foreign.pt_owner));
            }
            if !foreign.pg_permitted {
                return Err(MmError::NotPermitted(
                    foreign.pg_dom().unwrap_or(DomId::XEN),
                ));
            }
            let entry = req.entry();
            let table = entry.mfn();
            let idx = idx9(entry.page_offset() >> 3);
            let fi = ctx.info(table)?;
            let owned =
                matches!(fi.owner, Owner::Domain(d) | Owner::XenShared(d) if d == foreign.pt_owner);
            if !owned {
                return Err(MmError::WrongOwner {
                    mfn: table,
                    owner: fi.owner,
                });
            }
            let preserve_ad = cmd == MmuCmd::PtUpdatePreserveAd;
            if fi.type_count > 0 && fi.validated() {
                match fi.page_type() {
                    PageType::L1 => {
                        ctx.mod_l1_entry(
                            table,
                            idx,
                            req.val,
                            preserve_ad,
                            foreign.pg_owner,
                            foreign.pg_io_caps,
                            foreign.pt_io_caps,
                        )?;
                        Ok(Flush::None)
                    }
                    ty @ (PageType::L2 | PageType::L3 | PageType::L4) => {
                        if foreign.pg_owner != PgOwner::Dom(foreign.pt_owner) {
                            return Err(MmError::ForeignUpperUpdate);
                        }
                        let level = ty.level().unwrap_or(4);
                        let changed = ctx.mod_upper_entry(
                            level,
                            table,
                            idx,
                            req.val,
                            preserve_ad,
                            foreign.pt_owner,
                        )?;
                        Ok(if changed {
                            Flush::All(FlushKind::Tlb)
                        } else {
                            Flush::None
                        })
                    }
                    PageType::Writable => {
                        ctx.mem.write_entry(table, idx, req.val);
                        Ok(Flush::None)
                    }
                    ty @ (PageType::None | PageType::SegDesc) => {
                        Err(MmError::NotUpdatable { mfn: table, ty })
                    }
                }
            } else {
                // Not in use: a plain write under a transient writable type (so a stale
                // page-table use is flushed first, as in Xen).
                ctx.get_type(table, PageType::Writable)
                    .map_err(|_| MmError::NotUpdatable {
                        mfn: table,
                        ty: fi.page_type(),
                    })?;
                ctx.mem.write_entry(table, idx, req.val);
                ctx.put_type(table, None);
                Ok(Flush::None)
            }
        }
        MmuCmd::MachphysUpdate => {
            if foreign.pt_owner != ctx.dom {
                return Err(MmError::MachphysForeignPt);
            }
            if !foreign.pg_permitted {
                return Err(MmError::NotPermitted(
                    foreign.pg_dom().unwrap_or(DomId::XEN),
                ));
            }
            let mfn = req.entry().mfn();
            let fi = ctx.info(mfn)?;
            match (foreign.pg_owner, fi.owner) {
                (PgOwner::Dom(p), Owner::Domain(o)) if p == o => {
                    ctx.m2p.set(mfn, req.val);
                    Ok(Flush::None)
                }
                _ => Err(MmError::WrongOwner {
                    mfn,
                    owner: fi.owner,
                }),
            }
        }
    }
}

/// One `mmuext_op` operation for the calling vCPU. `foreign` comes from
/// [`ForeignDomain::for_mmuext_op`]; operations on the caller's own vCPU refuse a
/// foreign domain with `-EPERM`.
///
/// The caller, after success: loads CR3 from `vcpu.kernel_root` after `NEW_BASEPTR`
/// (and uses `vcpu.user_root` on the next switch to user mode), reloads the LDT after
/// `SET_LDT`, and performs the returned [`Flush`] before the next operation (reading
/// the vCPU bitmap of `Multi`, `-EINVAL` if unreadable).
pub fn mmuext_op<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    vcpu: &mut VcpuMm,
    op: MmuextOp,
    foreign: ForeignDomain,
) -> Result<Flush, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let Some(cmd) = op.command() else {
        return Err(MmError::UnknownCommand(op.cmd));
    };
    let pg = foreign.pg_dom().ok_or(MmError::NotPvDomain(DomId::IO))?;
    let is_self = pg == ctx.dom;
    let need_self = || {
        if is_self {
            Ok(())
        } else {
            Err(MmError::NotSelf)
        }
    };
    let invlpg = |va: u64| addr_ok(va).then_some(FlushKind::Invlpg(va));
    match cmd {
        MmuextCmd::PinL1Table => pin(ctx, Mfn(op.arg1), PageType::L1, pg),
        MmuextCmd::PinL2Table => pin(ctx, Mfn(op.arg1), PageType::L2, pg),
        MmuextCmd::PinL3Table => pin(ctx, Mfn(op.arg1), PageType::L3, pg),
        MmuextCmd::PinL4Table => pin(ctx, Mfn(op.arg1), PageType::L4, pg),
        MmuextCmd::UnpinTable => {
            let mfn = Mfn(op.arg1);
            let fi = ctx.info(mfn)?;
            if fi.owner() != Owner::Domain(pg) {
                return Err(MmError::WrongOwner {
                    mfn,
                    owner: fi.owner(),
                });
            }
            if !ctx.drop_pin(mfn) {
                return Err(MmError::NotPinned(mfn));
            }
            Ok(Flush::None)
        }
        MmuextCmd::NewBaseptr => {
            need_self()?;
            let mfn = Mfn(op.arg1);
            if vcpu.kernel_root != Some(mfn) {
                ctx.get_ref_and_type(mfn, ctx.dom, PageType::L4)?;
                if let Some(old) = vcpu.kernel_root.replace(mfn) {
                    ctx.put_ref_and_type(old);
                }
                // The LDT's pages were found through the old tables (Xen's
                // new_guest_cr3): they are looked up again on next use.
                destroy_ldt(ctx, vcpu);
            }
            // A kernel base shows the read-only M2P (Xen's fill_ro_mpt). The
            // m2p_strict assist (also zapping it from user bases) is not modelled.
            let ro_mpt = ctx.slots.l4_entry(HYPERVISOR_L4_FIRST);
            ctx.mem.write_entry(mfn, HYPERVISOR_L4_FIRST, ro_mpt);
            Ok(Flush::Local(FlushKind::Tlb))
        }
        MmuextCmd::NewUserBaseptr => {
            need_self()?;
            let old = vcpu.user_root.map_or(0, |m| m.0);
            if old == op.arg1 {
                return Ok(Flush::None);
            }
            let new = (op.arg1 != 0).then_some(Mfn(op.arg1));
            if let Some(m) = new {
                ctx.get_ref_and_type(m, ctx.dom, PageType::L4)?;
            }
            if let Some(o) = core::mem::replace(&mut vcpu.user_root, new) {
                ctx.put_ref_and_type(o);
            }
            Ok(Flush::None)
        }
        MmuextCmd::TlbFlushLocal => need_self().map(|()| Flush::Local(FlushKind::Tlb)),
        MmuextCmd::InvlpgLocal => {
            need_self()?;
            Ok(invlpg(op.arg1).map_or(Flush::None, Flush::Local))
        }
        MmuextCmd::TlbFlushMulti => need_self().map(|()| Flush::Multi(op.arg2, FlushKind::Tlb)),
        MmuextCmd::InvlpgMulti => {
            need_self()?;
            Ok(invlpg(op.arg1).map_or(Flush::None, |k| Flush::Multi(op.arg2, k)))
        }
        MmuextCmd::TlbFlushAll => need_self().map(|()| Flush::All(FlushKind::Tlb)),
        MmuextCmd::InvlpgAll => {
            need_self()?;
            Ok(invlpg(op.arg1).map_or(Flush::None, Flush::All))
        }
        MmuextCmd::FlushCache => {
            need_self()?;
            if ctx.io_caps {
                Ok(Flush::CacheLocal)
            } else {
                Err(MmError::CacheFlushDenied)
            }
        }
        MmuextCmd::FlushCacheGlobal => {
            need_self()?;
            if ctx.io_caps {
                Ok(Flush::CacheGlobal)
            } else {
                Err(MmError::CacheFlushGlobalDenied)
            }
        }
        MmuextCmd::SetLdt => {
            need_self()?;
            let ents = op.nr_ents();
            let base = if ents != 0 { op.arg1 } else { 0 };
            if base & PAGE_OFFSET_MASK != 0 || !addr_ok(base) || ents > LDT_MAX_ENTRIES {
                return Err(MmError::BadLdt { base, ents });
            }
            if vcpu.ldt_base == base && vcpu.ldt_ents == ents {
                return Ok(Flush::None);
            }
            // The pages of the old LDT stop being descriptor pages; those of the new
            // one become descriptor pages when the CPU first reads them
            // ([`map_ldt_page`]). The caller reloads LDTR and its LDT mappings.
            destroy_ldt(ctx, vcpu);
            vcpu.ldt_base = base;
            vcpu.ldt_ents = ents;
            Ok(Flush::None)
        }
        MmuextCmd::ClearPage => {
            let mfn = Mfn(op.arg1);
            writable_page(ctx, mfn, pg)?;
            ctx.mem.zero_page(mfn);
            ctx.put_ref_and_type(mfn);
            Ok(Flush::None)
        }
        MmuextCmd::CopyPage => {
            let (dst, src) = (Mfn(op.arg1), Mfn(op.arg2));
            ctx.get_ref(src, pg, true)?;
            if let Err(e) = writable_page(ctx, dst, pg) {
                ctx.put_ref(src);
                return Err(e);
            }
            ctx.mem.copy_page(dst, src);
            ctx.put_ref_and_type(dst);
            ctx.put_ref(src);
            Ok(Flush::None)
        }
        MmuextCmd::MarkSuper | MmuextCmd::UnmarkSuper => Err(MmError::NotSupported),
    }
}

/// General reference plus writable type on a frame of `pg`, refused with `-EINVAL`
/// (`MMUEXT_CLEAR_PAGE`, `MMUEXT_COPY_PAGE` destination).
fn writable_page<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    pg: DomId,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.get_ref_and_type(mfn, pg, PageType::Writable)
}

/// `MMUEXT_PIN_Ln_TABLE`: take a general and an Ln type reference (validating on
/// first use) and keep them under the `pinned` flag.
fn pin<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    ty: PageType,
    pg: DomId,
) -> Result<Flush, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.get_ref_and_type(mfn, pg, ty)?;
    if ctx.ft.info(mfn).is_some_and(FrameInfo::pinned) {
        ctx.put_ref_and_type(mfn);
        return Err(MmError::AlreadyPinned(mfn));
    }
    ctx.set_pinned(mfn);
    Ok(Flush::None)
}

/// The L1 that maps `va` in the tables rooted at `root`, found the way the MMU would
/// (every level present, no large pages), and only if it is a validated L1 of the
/// caller. Reads machine memory directly, never a linear mapping (XSA-286).
pub(super) fn walk_to_l1<M, H, P, E>(
    ctx: &MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    va: u64,
) -> Result<Mfn, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let mine = Owner::Domain(ctx.dom);
    let no_l1 = MmError::NoL1(va);
    let mut table = root;
    for shift in [39u32, 30, 21] {
        if ctx.ft.owner(table) != Some(mine) {
            return Err(no_l1);
        }
        let e = ctx.mem.read_entry(table, idx9(va >> shift));
        if !is_present(e) || (shift != 39 && e & PSE != 0) {
            return Err(no_l1);
        }
        table = pte_mfn(e);
    }
    let fi = ctx.info(table).map_err(|_| no_l1)?;
    if fi.owner() != mine
        || fi.page_type() != PageType::L1
        || !fi.validated()
        || fi.type_count() == 0
    {
        return Err(no_l1);
    }
    Ok(table)
}

/// Whether `va` is mapped, in the tables rooted at `root`, by a present read-only
/// entry of a validated L1 to an I/O frame that may only be mapped read-only (the
/// HPET: `MmHooks::mmio_read_only`). Xen's `pv_ro_page_fault` asks this of the
/// kernel's tables before it emulates (and discards) a hardware domain's store.
pub fn maps_read_only_mmio<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>, root: Mfn, va: u64) -> bool
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    read_only_mmio_frame(ctx, root, va).is_some()
}

/// The frame behind `va` when [`maps_read_only_mmio`] holds.
pub fn read_only_mmio_frame<M, H, P, E>(
    ctx: &MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    va: u64,
) -> Option<Mfn>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let l1 = walk_to_l1(ctx, root, va).ok()?;
    let e = ctx.mem.read_entry(l1, idx9(va >> 12));
    let target = pte_mfn(e);
    (is_present(e)
        && e & super::page_type::RW == 0
        && ctx.is_io_frame(target)
        && ctx.hooks.mmio_read_only(target))
    .then_some(target)
}

/// Writable page tables (Xen's `ptwr_do_page_fault`): the frame `va` maps, in the
/// kernel tables rooted at `root`, if the mapping is a present read-only entry of a
/// validated L1 and the frame is one of the domain's own in-use L1 tables. Stores the
/// guest's kernel makes to it are emulated through [`ptwr_write`].
pub fn ptwr_target<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>, root: Mfn, va: u64) -> Option<Mfn>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let l1 = walk_to_l1(ctx, root, va).ok()?;
    let e = ctx.mem.read_entry(l1, idx9(va >> 12));
    if !is_present(e) || e & super::page_type::RW != 0 {
        return None;
    }
    let target = pte_mfn(e);
    let fi = ctx.info(target).ok()?;
    (fi.owner() == Owner::Domain(ctx.dom)
        && fi.page_type() == PageType::L1
        && fi.validated()
        && fi.type_count() > 0)
        .then_some(target)
}

/// Entry `idx` of the L1 table `l1` (a [`ptwr_target`]).
pub fn ptwr_read<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>, l1: Mfn, idx: usize) -> u64
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.mem.read_entry(l1, idx)
}

/// Writes `val` to entry `idx` of the domain's in-use L1 table `l1` (a
/// [`ptwr_target`]) with the checks and reference counting of an `mmu_update` of
/// the domain's own frames, as Xen's `ptwr_emulated_update`. Nothing is flushed (a
/// native kernel flushes after writing a PTE; so does a PV one).
pub fn ptwr_write<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    l1: Mfn,
    idx: usize,
    val: u64,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let own = ForeignDomain::own(ctx);
    ctx.mod_l1_entry(
        l1,
        idx,
        val,
        false,
        own.pg_owner,
        own.pg_io_caps,
        own.pt_io_caps,
    )
}

/// The flush `update_va_mapping`'s `flags` ask for.
fn uvmf_flush(va: u64, flags: u64) -> Flush {
    let kind = match flags & UVMF_FLUSHTYPE_MASK {
        UVMF_TLB_FLUSH => FlushKind::Tlb,
        UVMF_INVLPG => FlushKind::Invlpg(va),
        _ => return Flush::None,
    };
    match flags & !UVMF_FLUSHTYPE_MASK {
        UVMF_LOCAL => Flush::Local(kind),
        UVMF_ALL => Flush::All(kind),
        bitmap => Flush::Multi(bitmap, kind),
    }
}

/// `update_va_mapping(va, val, flags)`: find the L1 entry for `va` through the
/// caller's current kernel tables `root`, apply `MMU_NORMAL_PT_UPDATE` semantics to it
/// and return the flush `flags` ask for. A non-canonical or hypervisor-range `va`, or
/// one without a validated L1, is `-EINVAL` (and nothing is flushed).
pub fn update_va_mapping<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    va: u64,
    val: u64,
    flags: u64,
) -> Result<Flush, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let own = ForeignDomain::own(ctx);
    update_va_mapping_otherdomain(ctx, root, va, val, flags, own)
}

/// `update_va_mapping_otherdomain`: as [`update_va_mapping`], mapping frames of
/// `foreign.pg_owner` ([`ForeignDomain::for_update_va_mapping`]).
pub fn update_va_mapping_otherdomain<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    va: u64,
    val: u64,
    flags: u64,
    foreign: ForeignDomain,
) -> Result<Flush, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    if is_present(val) && !foreign.pg_permitted {
        return Err(MmError::NotPermitted(
            foreign.pg_dom().unwrap_or(DomId::XEN),
        ));
    }
    if !addr_ok(va) {
        return Err(MmError::BadAddress(va));
    }
    let l1 = walk_to_l1(ctx, root, va)?;
    ctx.mod_l1_entry(
        l1,
        idx9(va >> 12),
        val,
        false,
        foreign.pg_owner,
        foreign.pg_io_caps,
        ctx.io_caps,
    )?;
    Ok(uvmf_flush(va, flags))
}

/// Xen's `pv_destroy_ldt`: drops the references of every LDT page mapped so far.
/// Returns whether there were any (so the caller's LDT mappings changed).
pub fn destroy_ldt<M, H, P, E>(ctx: &mut MmCtx<'_, '_, M, H, P, E>, vcpu: &mut VcpuMm) -> bool
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let mut dropped = false;
    for slot in vcpu.ldt_frames.iter_mut() {
        if let Some(mfn) = slot.take() {
            ctx.put_ref_and_type(mfn);
            dropped = true;
        }
    }
    dropped
}

/// Makes `mfn`, a frame of `dom`, a descriptor page (`set_gdt`, an LDT page): while no
/// type reference is held, every descriptor is fixed up in place as
/// [`crate::descriptor::audit`] says (Xen's `check_descriptor` writes its fix-ups back);
/// then a general and a `SegDesc` type reference are taken, which audits them all
/// again. A frame of someone else, a frame typed otherwise (writable mappings, a page
/// table) or a descriptor the audit refuses: nothing is changed.
pub fn get_seg_desc_page<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    dom: DomId,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    if ctx.ft.owner(mfn) != Some(Owner::Domain(dom)) {
        return Err(MmError::BadFrame(mfn));
    }
    if ctx.ft.info(mfn).is_some_and(|f| f.type_count() == 0) {
        // Audit all first, so that a refused page is left as it was.
        if (0..512).any(|i| crate::descriptor::audit(ctx.mem.read_entry(mfn, i)).is_none()) {
            return Err(MmError::BadDescriptor(mfn));
        }
        for i in 0..512 {
            let d = ctx.mem.read_entry(mfn, i);
            match crate::descriptor::audit(d) {
                Some(f) if f != d => ctx.mem.write_entry(mfn, i, f),
                _ => {}
            }
        }
    }
    ctx.get_ref_and_type(mfn, dom, PageType::SegDesc)
}

/// Xen's `pv_map_ldt_shadow_page`: the CPU read byte `offset` of the vCPU's LDT
/// through the hypervisor's LDT mapping and found that page not mapped yet. Looks up
/// the guest page at `ldt_base + offset` in the vCPU's *kernel* page tables (whatever
/// mode it is in), makes it a descriptor page of the caller ([`get_seg_desc_page`]) and
/// records it in `vcpu.ldt_frames`; the caller maps it for the CPU and lets the
/// instruction run again. On failure nothing changes and the caller reflects the
/// fault to the guest (a #PF at `ldt_base + offset`).
pub fn map_ldt_page<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    vcpu: &mut VcpuMm,
    offset: u64,
) -> Result<Mfn, MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let bad = MmError::BadLdt {
        base: vcpu.ldt_base,
        ents: vcpu.ldt_ents,
    };
    let page = usize::try_from(offset >> 12).map_err(|_| bad)?;
    if offset >> 3 >= u64::from(vcpu.ldt_ents) || page >= LDT_PAGES {
        return Err(bad);
    }
    if let Some(Some(mfn)) = vcpu.ldt_frames.get(page) {
        return Ok(*mfn);
    }
    let linear = vcpu.ldt_base.wrapping_add(offset);
    if !addr_ok(linear) || !crate::regs::is_canonical(linear) {
        return Err(MmError::BadAddress(linear));
    }
    let root = vcpu.kernel_root.ok_or(MmError::NoL1(linear))?;
    let l1 = walk_to_l1(ctx, root, linear)?;
    let pte = ctx.mem.read_entry(l1, idx9(linear >> 12));
    if !is_present(pte) {
        return Err(MmError::NoL1(linear));
    }
    let mfn = pte_mfn(pte);
    get_seg_desc_page(ctx, mfn, ctx.dom)?;
    if let Some(slot) = vcpu.ldt_frames.get_mut(page) {
        *slot = Some(mfn);
    }
    Ok(mfn)
}

/// What [`relinquish_domain`] left behind.
#[must_use]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RelinquishOutcome {
    /// Frames owned by (or shared with) the domain that still hold references: mapped
    /// by another domain, or held by references the caller has not dropped yet (GDT,
    /// grants). They can be released once those go.
    pub busy_frames: u64,
}

/// Domain teardown (Xen's `domain_relinquish_resources` for the page tables of a PV
/// domain): drops the base pointers of `vcpus`, unpins every pinned frame of
/// `ctx.dom`, then forcibly devalidates any page table of the domain still validated,
/// so that every reference the domain's own tables held is gone. Drop the domain's
/// other references (GDT frames, grant mappings) first.
pub fn relinquish_domain<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    vcpus: &mut [VcpuMm],
) -> RelinquishOutcome
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    for v in vcpus.iter_mut() {
        for root in [v.kernel_root.take(), v.user_root.take()]
            .into_iter()
            .flatten()
        {
            ctx.put_ref_and_type(root);
        }
        destroy_ldt(ctx, v);
        v.ldt_base = 0;
        v.ldt_ents = 0;
    }
    let mine = Owner::Domain(ctx.dom);
    let n = ctx.ft.len() as u64;
    for mfn in (0..n).map(Mfn) {
        if ctx.ft.owner(mfn) == Some(mine) {
            ctx.drop_pin(mfn);
        }
    }
    for mfn in (0..n).map(Mfn) {
        if ctx.ft.owner(mfn) == Some(mine) {
            ctx.force_devalidate(mfn);
        }
    }
    let busy = ctx
        .ft
        .frames()
        .iter()
        .filter(|f| {
            matches!(f.owner(), Owner::Domain(d) | Owner::XenShared(d) if d == ctx.dom)
                && !f.is_unreferenced()
        })
        .count();
    RelinquishOutcome {
        busy_frames: busy as u64,
    }
}

#[cfg(test)]
mod tests;
