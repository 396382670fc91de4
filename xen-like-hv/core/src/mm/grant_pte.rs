//! The page-table half of a PV grant mapping (Xen's `create_grant_pv_mapping` and
//! `replace_grant_pv_mapping`, `xen/arch/x86/pv/grant_table.c`).
//!
//! A host mapping of a granted frame is an ordinary L1 entry of the mapper that the
//! grant code writes itself: the grant code takes the general (and, when writable, the
//! writable type) reference the entry stands for, so the entry holds exactly what an
//! entry made by `mmu_update` would hold. That keeps teardown uniform: destroying the
//! mapper's page tables drops a grant entry's references like any other entry's.
//!
//! The L1 frame is found either through the caller's kernel page tables (`host_addr`
//! is a linear address) or, with `GNTMAP_contains_pte`, directly (`host_addr` is the
//! machine address of the entry). Either way it must be a validated L1 of the caller.

use hypercall_abi::DomId;
use hypercall_abi::xen::pte::PteFlags;

use super::Mfn;
use super::error::MmError;
use super::frame_table::{Owner, PageType};
use super::mmu::{addr_ok, walk_to_l1};
use super::page_type::{
    ACCESSED, DIRTY, GLOBAL, GUEST_KERNEL, HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks,
    PRESENT, RW, USER, adjust_l1, idx9, pte_mfn,
};

const NX: u64 = PteFlags::NX.bits();
/// The three software-available bits 9..=11 (`_PAGE_AVAIL`).
const AVAIL: u64 = PteFlags::AVAIL.bits();

/// Where the entry to write is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteAt {
    /// The L1 entry mapping this linear address in the caller's kernel tables.
    Linear(u64),
    /// The L1 entry at this machine address (`GNTMAP_contains_pte`).
    Machine(u64),
}

/// How a grant mapping looks in the PTE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrantPte {
    /// Writable mapping (not `GNTMAP_readonly`).
    pub writable: bool,
    /// User-accessible (`GNTMAP_application_map`).
    pub user: bool,
    /// `GNTMAP_guest_avail0..`: the flags' bits 16.. go into `_PAGE_AVAIL`.
    pub avail: u32,
    /// Cache-attribute bits (`GTF_PWT`/`GTF_PCD`/`GTF_PAT` shifted down: PWT, PCD, PAT).
    pub cache: u8,
}

impl GrantPte {
    /// The entry's flag bits before the 64-bit PV adjustment (`grant_to_pte_flags`).
    const fn flags(self) -> u64 {
        let mut f = PRESENT | ACCESSED | DIRTY | NX;
        if self.user {
            f |= USER;
        }
        if self.writable {
            f |= RW;
        }
        f |= ((self.avail as u64) << 9) & AVAIL;
        if self.cache & 1 != 0 {
            f |= PteFlags::PWT.bits();
        }
        if self.cache & 2 != 0 {
            f |= PteFlags::PCD.bits();
        }
        if self.cache & 4 != 0 {
            f |= PteFlags::PAT.bits();
        }
        f
    }

    /// The entry mapping `frame` as written.
    pub const fn entry(self, frame: Mfn) -> u64 {
        adjust_l1((frame.0 << 12) | self.flags())
    }

    /// The flags an existing grant entry must show to be this mapping's
    /// (`replace_grant_pv_mapping`'s check: PRESENT and RW must match).
    const fn check_flags(self) -> u64 {
        let f = self.flags();
        if f & USER != 0 {
            f | GLOBAL
        } else {
            f | GUEST_KERNEL | USER
        }
    }
}

/// The validated L1 of `ctx.dom` and the index in it of the entry `at` names.
fn locate<M, H, P, E>(
    ctx: &MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    at: PteAt,
) -> Result<(Mfn, usize), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    match at {
        PteAt::Linear(va) => {
            if !addr_ok(va) {
                return Err(MmError::BadAddress(va));
            }
            Ok((walk_to_l1(ctx, root, va)?, idx9(va >> 12)))
        }
        PteAt::Machine(ma) => {
            if ma % 8 != 0 {
                return Err(MmError::BadAddress(ma));
            }
            let l1 = Mfn(ma >> 12);
            let fi = ctx.info(l1)?;
            if fi.owner() != Owner::Domain(ctx.dom)
                || fi.page_type() != PageType::L1
                || fi.type_count() == 0
                || !fi.validated()
            {
                return Err(MmError::NoL1(ma));
            }
            let i = usize::try_from((ma & 0xfff) / 8).unwrap_or(0);
            Ok((l1, i))
        }
    }
}

/// Xen's `create_grant_pv_mapping`: writes the grant entry for `frame` at `at`, whose
/// references the caller already holds, and drops what the old entry held.
pub fn create_grant_mapping<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    at: PteAt,
    frame: Mfn,
    pte: GrantPte,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    let (l1, i) = locate(ctx, root, at)?;
    let old = ctx.mem.read_entry(l1, i);
    ctx.update_entry(l1, i, old, pte.entry(frame), false, 1)?;
    ctx.put_page_from_l1e(old);
    Ok(())
}

/// Xen's `replace_grant_pv_mapping`: the entry at `at` must map `frame` with the
/// present and RW bits of `pte`; it is cleared, or, with `new_addr` (only for a linear
/// `at`), replaced by the entry mapping `new_addr`, which is cleared in turn. The grant
/// entry's references are the caller's to drop; on failure nothing changed.
pub fn replace_grant_mapping<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    root: Mfn,
    at: PteAt,
    frame: Mfn,
    pte: GrantPte,
    new_addr: u64,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    if new_addr != 0 && matches!(at, PteAt::Machine(_)) {
        return Err(MmError::BadAddress(new_addr));
    }
    let (l1, i) = locate(ctx, root, at)?;
    let old = ctx.mem.read_entry(l1, i);
    let want = pte.check_flags();
    if pte_mfn(old) != frame || (old ^ want) & (PRESENT | RW) != 0 {
        return Err(MmError::NoL1(match at {
            PteAt::Linear(a) | PteAt::Machine(a) => a,
        }));
    }
    // Steal the entry at `new_addr` (unmap_and_replace): it moves to `at`.
    let mut moved = 0;
    if new_addr != 0 {
        let (nl1, ni) = locate(ctx, root, PteAt::Linear(new_addr))?;
        let stolen = ctx.mem.read_entry(nl1, ni);
        ctx.update_entry(nl1, ni, stolen, 0, false, 1)?;
        moved = stolen;
    }
    if let Err(e) = ctx.update_entry(l1, i, old, moved, false, 1) {
        ctx.put_page_from_l1e(moved);
        return Err(e);
    }
    Ok(())
}

/// Whether `frame` may be granted by `dom` (a frame it owns, or a hypervisor page
/// shared with it, such as its grant-table frames): Xen's `get_paged_frame` for a PV
/// granter, without the reference.
pub fn grantable<M, H, P, E>(ctx: &MmCtx<'_, '_, M, H, P, E>, frame: Mfn, dom: DomId) -> bool
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    matches!(ctx.ft.owner(frame), Some(Owner::Domain(d) | Owner::XenShared(d)) if d == dom)
}
