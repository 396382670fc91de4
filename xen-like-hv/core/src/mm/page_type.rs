//! Page types, type counts and page-table validation: the PV direct-paging model.
//!
//! A PV guest's page tables hold machine frame numbers and are read by the real MMU,
//! so the hypervisor must be sure that no guest can ever write a live page-table
//! entry itself. Xen's answer, restated here:
//!
//! * every frame has a **type** with a **type count**; a frame is used in one way at
//!   a time (writable data, L1, L2, L3, L4, descriptor page) and changes type only when
//!   its type count is zero;
//! * a present L1 entry with RW holds a `Writable` type reference on the frame it maps,
//!   so a frame mapped writable cannot become a page table and a page table cannot be
//!   mapped writable;
//! * taking a page-table type on a count of zero **validates** the frame: every entry
//!   is checked and takes the references it implies (an L2 entry takes an L1 type on
//!   its target, recursively); dropping the last type reference **devalidates** it and
//!   drops what its entries held;
//! * the only way to change a validated table is an update hypercall, which validates
//!   the new entry, commits it, and then drops the old entry's references.
//!
//! Everything in this module is per frame and single-threaded: the caller serialises
//! memory-management operations (a per-domain or global MM lock). Machine memory, the
//! hypervisor's L4 slots, the M2P and a few questions about domains are reached through
//! the small traits below, so the whole model runs on the host against a `Vec`.

use core::fmt;

use hypercall_abi::xen::pte::{PTE_ADDR_MASK, PTES_PER_PAGE, PteFlags};
use hypercall_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_L4_LAST};
use hypercall_abi::{DomId, Errno};

use super::Mfn;
use super::error::{L1Refusal, MmError};
use super::frame_table::{F_PINNED, F_VALIDATED, FrameInfo, FrameTable, Owner, PageType};

/// Access to machine memory, one 8-byte page-table entry at a time. The hypervisor
/// implements it over its direct map; tests over a `Vec`.
///
/// The model only ever passes frames that are in the frame table and owned by a
/// domain (or shared with one), and `index < 512`.
pub trait MachineMemory {
    /// Entry `index` (0..512) of frame `mfn`.
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64;
    /// Write entry `index` of frame `mfn`.
    fn write_entry(&mut self, mfn: Mfn, index: usize, val: u64);
    /// Atomically replace entry `index` with `new` if it still holds `old`; otherwise
    /// return what it holds. The hypervisor must implement this with `lock cmpxchg`
    /// (the MMU may set accessed/dirty bits concurrently); the default suits tests.
    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        let cur = self.read_entry(mfn, index);
        if cur == old {
            self.write_entry(mfn, index, new);
            Ok(())
        } else {
            Err(cur)
        }
    }
    /// Atomically clear in entry `index` the bits not in `keep` (`lock and`): the
    /// guest may write other bits of the same word at the same time, and must neither
    /// lose its write nor be able to stall the hypervisor. The default suits tests.
    fn and_entry(&mut self, mfn: Mfn, index: usize, keep: u64) {
        let cur = self.read_entry(mfn, index);
        self.write_entry(mfn, index, cur & keep);
    }
    /// Copy `len` bytes from byte `src_off` of frame `src` to byte `dst_off` of frame
    /// `dst` (both ranges inside their pages, checked by the caller; the frames may be
    /// the same and the ranges may overlap). The default, word by word, suits tests.
    fn copy_bytes(&mut self, dst: Mfn, dst_off: usize, src: Mfn, src_off: usize, len: usize) {
        let mut tmp = [0u8; 4096];
        for (i, b) in tmp.iter_mut().enumerate().take(len) {
            let at = src_off + i;
            *b = self.read_entry(src, at / 8).to_le_bytes()[at % 8];
        }
        for (i, b) in tmp.iter().enumerate().take(len) {
            let at = dst_off + i;
            let mut w = self.read_entry(dst, at / 8).to_le_bytes();
            w[at % 8] = *b;
            self.write_entry(dst, at / 8, u64::from_le_bytes(w));
        }
    }
    /// Fill frame `mfn` with zeroes.
    fn zero_page(&mut self, mfn: Mfn);
    /// Copy frame `src` to frame `dst`.
    fn copy_page(&mut self, dst: Mfn, src: Mfn);
}

/// The L4 slots 256..=271 the hypervisor fills into every L4 it validates.
pub trait HypervisorSlots {
    /// The entry for `slot` (`HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST`). Slot 256 is
    /// the read-only M2P.
    fn l4_entry(&self, slot: usize) -> u64;
}

/// The writable machine-to-pseudo-physical table (guests see it read-only).
pub trait M2p {
    /// The PFN recorded for `mfn` (`INVALID_M2P_ENTRY` if none).
    fn get(&self, mfn: Mfn) -> u64;
    /// Record `pfn` for `mfn`.
    fn set(&mut self, mfn: Mfn, pfn: u64);
}

/// What the memory model asks of the rest of the hypervisor.
pub trait MmHooks {
    /// Whether an ordinary domain with this id exists (Xen: `rcu_lock_domain_by_id`).
    fn domain_exists(&self, dom: DomId) -> bool;
    /// Whether `caller` may act on `target`'s memory (Xen's `XSM_TARGET`: the control
    /// domain, or a device model of the target). Not asked for `caller == target`.
    fn privileged_over(&self, caller: DomId, target: DomId) -> bool;
    /// Whether `dom` has I/O-memory (or I/O-port) capability: it may map non-RAM
    /// frames, use cache-attribute bits in L1 entries and flush caches.
    fn io_caps(&self, dom: DomId) -> bool;
    /// Whether `dom` may map I/O frame `mfn` (Xen's per-domain `iomem_caps`): by
    /// default every I/O frame when it has I/O capability; the hypervisor keeps its
    /// own devices (local APIC, HPET) out of every domain's range.
    fn iomem_permitted(&self, dom: DomId, _mfn: Mfn) -> bool {
        self.io_caps(dom)
    }
    /// Whether I/O frame `mfn` may only be mapped read-only (Xen's `mmio_ro_ranges`:
    /// the HPET under `ro-hpet`). A writable mapping of it is accepted and silently
    /// made read-only.
    fn mmio_read_only(&self, _mfn: Mfn) -> bool {
        false
    }
    /// Called, synchronously, when frame `mfn` of `owner` is about to change type
    /// away from a type it had before (for instance an old L1 becoming writable, or an
    /// old writable frame becoming a page table). Before this returns, no CPU may hold
    /// a TLB or paging-structure-cache entry created from the frame's old use: flush
    /// the TLBs of every CPU `owner` has run on (flushing every CPU is always correct).
    fn flush_for_type_change(&mut self, owner: DomId, mfn: Mfn);
    /// The descriptor audit for GDT/LDT frames (Xen's `check_descriptor`): whether the
    /// 8-byte descriptor `desc`, followed in the page by `next` (0 after the last
    /// one; 64-bit call gates span two slots), is safe for `owner` to load.
    fn check_descriptor(&self, owner: DomId, desc: u64, next: u64) -> bool;
    /// The last reference to `mfn`, a frame of destroyed domain `dom`, went: the frame
    /// table released it; the hypervisor gives it back to its allocator.
    fn frame_orphan_freed(&mut self, _dom: DomId, _mfn: Mfn) {}
}

/// Whose frames a new L1 entry may map: the FD of `mmu_update`, resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgOwner {
    /// An ordinary domain (the caller itself for `DOMID_SELF`).
    Dom(DomId),
    /// `DOMID_IO`: I/O frames only, with the caller's I/O permission.
    Io,
    /// `DOMID_XEN` (privileged callers only): no frame of ours is mappable this way.
    Xen,
}

/// Everything one memory-management operation works on. Build one per hypercall
/// (or per batch) under the MM lock.
pub struct MmCtx<'x, 'f, M, H, P, E> {
    /// The frame table.
    pub ft: &'x mut FrameTable<'f>,
    /// Machine memory.
    pub mem: &'x mut M,
    /// The hypervisor's L4 slots.
    pub slots: &'x H,
    /// The M2P.
    pub m2p: &'x mut P,
    /// Domain lookup, TLB shoot-down and descriptor audit.
    pub hooks: &'x mut E,
    /// The calling domain (the current domain; the dying domain for teardown).
    pub dom: DomId,
    /// Whether the caller is the privileged control domain (may name `DOMID_XEN`).
    pub privileged: bool,
    /// Whether the caller has I/O capability (non-RAM mappings, cache bits, WBINVD).
    pub io_caps: bool,
    /// Xen's `pv-linear-pt` option (default true): read-only linear page tables.
    pub linear_pt: bool,
}

impl<M, H, P, E> fmt::Debug for MmCtx<'_, '_, M, H, P, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmCtx")
            .field("dom", &self.dom)
            .field("privileged", &self.privileged)
            .field("io_caps", &self.io_caps)
            .field("linear_pt", &self.linear_pt)
            .finish_non_exhaustive()
    }
}

// ---- PTE bits (64-bit PV view) ----------------------------------------------------

pub(super) const PRESENT: u64 = PteFlags::PRESENT.bits();
pub(super) const RW: u64 = PteFlags::RW.bits();
pub(super) const USER: u64 = PteFlags::USER.bits();
pub(super) const ACCESSED: u64 = PteFlags::ACCESSED.bits();
pub(super) const DIRTY: u64 = PteFlags::DIRTY.bits();
pub(super) const PSE: u64 = PteFlags::PSE.bits();
pub(super) const GLOBAL: u64 = PteFlags::GLOBAL.bits();
pub(super) const GUEST_KERNEL: u64 = PteFlags::GUEST_KERNEL.bits();
const GNTTAB: u64 = PteFlags::GNTTAB.bits();
const PWT: u64 = PteFlags::PWT.bits();
const PCD: u64 = PteFlags::PCD.bits();
const PAT: u64 = PteFlags::PAT.bits();
/// PTE bits 52..=62, available to software (Xen's `_PAGE_AVAIL_HIGH`).
const AVAIL_HIGH: u64 = (GNTTAB << 1) - GUEST_KERNEL;
/// Every bit of an entry that is not the frame address.
const FLAG_MASK: u64 = !PTE_ADDR_MASK;
/// Cache-attribute bits of an L1 entry.
const CACHE_ATTRS: u64 = PWT | PCD | PAT;
/// Xen's `base_disallow_mask` complement: what any level may use.
const BASE_ALLOWED: u64 = PRESENT
    | RW
    | USER
    | ACCESSED
    | DIRTY
    | PteFlags::AVAIL.bits()
    | AVAIL_HIGH
    | PteFlags::NX.bits();
/// L1: also Global; never the grant bit (62); cache bits only with I/O capability.
const L1_ALLOWED: u64 = (BASE_ALLOWED | GLOBAL) & !GNTTAB;
/// Flags a guest may change in a present entry without re-validation
/// (`FASTPATH_FLAG_WHITELIST`).
const FASTPATH_WHITELIST: u64 =
    PteFlags::NX.bits() | AVAIL_HIGH | PteFlags::AVAIL.bits() | GLOBAL | DIRTY | ACCESSED | USER;
/// How often a PRESERVE_AD update retries when the MMU sets A/D bits under it.
const MAX_AD_RETRIES: usize = 64;

/// Whether the entry is present.
pub(super) const fn is_present(e: u64) -> bool {
    e & PRESENT != 0
}

/// The frame an entry points at.
pub(super) const fn pte_mfn(e: u64) -> Mfn {
    Mfn((e & PTE_ADDR_MASK) >> 12)
}

/// Whether L4 slot `i` belongs to the guest.
pub(super) const fn is_guest_l4_slot(i: usize) -> bool {
    i < HYPERVISOR_L4_FIRST || i > HYPERVISOR_L4_LAST
}

/// Forbidden flag bits set in a present L1 entry.
pub(super) const fn l1_disallowed(e: u64, io_caps: bool) -> u64 {
    let allowed = if io_caps {
        L1_ALLOWED | CACHE_ATTRS
    } else {
        L1_ALLOWED
    };
    e & FLAG_MASK & !allowed
}

/// Forbidden flag bits set in a present L2/L3/L4 entry (PSE, G, cache bits).
pub(super) const fn upper_disallowed(e: u64) -> u64 {
    e & FLAG_MASK & !BASE_ALLOWED
}

/// Whether `new` differs from `old` in more than the fast-path flags
/// (`l1e_has_changed(old, new, ~FASTPATH_FLAG_WHITELIST)`).
pub(super) const fn has_changed(old: u64, new: u64) -> bool {
    (old ^ new) & (PTE_ADDR_MASK | (FLAG_MASK & !FASTPATH_WHITELIST)) != 0
}

/// The 64-bit PV adjustment of a present L1 entry (`adjust_guest_l1e`): a kernel-only
/// mapping (U clear) becomes U + `_PAGE_GUEST_KERNEL`; a user mapping also gets G.
pub(super) const fn adjust_l1(e: u64) -> u64 {
    if !is_present(e) {
        return e;
    }
    let mut e = e;
    if e & USER == 0 {
        e |= GUEST_KERNEL | USER;
    }
    if e & GUEST_KERNEL == 0 {
        e |= GLOBAL | USER;
    }
    e
}

/// The 64-bit PV adjustment of a present L2..L4 entry: U everywhere, and A on L4
/// entries (`adjust_guest_l2e`..`adjust_guest_l4e`).
pub(super) const fn adjust_upper(level: u8, e: u64) -> u64 {
    if !is_present(e) {
        e
    } else if level == 4 {
        e | USER | ACCESSED
    } else {
        e | USER
    }
}

/// The cache bits Xen flips in an L1 entry mapping I/O space, so write-back and
/// write-through/protect requests become uncacheable (`get_page_from_l1e`).
pub(super) const fn io_cache_flip(e: u64) -> u64 {
    let cache = e & CACHE_ATTRS;
    if cache == 0 {
        PWT | PCD
    } else if cache == PWT || cache == PWT | PAT {
        PCD | (e & PAT)
    } else {
        0
    }
}

/// `x & 511` as an index.
pub(super) const fn idx9(x: u64) -> usize {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "masked to 9 bits, always fits"
    )]
    let i = (x & 0x1ff) as usize;
    i
}

// ---- the engine -------------------------------------------------------------------

impl<M, H, P, E> MmCtx<'_, '_, M, H, P, E>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    /// A copy of the record of `mfn`.
    pub(super) fn info(&self, mfn: Mfn) -> Result<FrameInfo, MmError> {
        self.ft.info(mfn).copied().ok_or(MmError::BadFrame(mfn))
    }

    fn with_frame(&mut self, mfn: Mfn, f: impl FnOnce(&mut FrameInfo)) {
        if let Some(fi) = self.ft.info_mut(mfn) {
            f(fi);
        }
    }

    /// Whether `mfn` is I/O space (outside the frame table, or owned by `DOMID_IO`).
    pub(super) fn is_io_frame(&self, mfn: Mfn) -> bool {
        self.ft.owner(mfn).is_none_or(|o| o == Owner::Io)
    }

    /// I/O capability of `dom`.
    pub(super) fn io_caps_of(&self, dom: DomId) -> bool {
        if dom == self.dom {
            self.io_caps
        } else {
            self.hooks.io_caps(dom)
        }
    }

    /// Take a general reference on a frame owned by `dom` (or, with `allow_shared`, a
    /// hypervisor page shared with `dom`).
    pub(super) fn get_ref(
        &mut self,
        mfn: Mfn,
        dom: DomId,
        allow_shared: bool,
    ) -> Result<(), MmError> {
        let fi = self.ft.info_mut(mfn).ok_or(MmError::BadFrame(mfn))?;
        let ok = match fi.owner {
            Owner::Domain(d) => d == dom,
            Owner::XenShared(d) => allow_shared && d == dom,
            Owner::Free | Owner::Xen | Owner::Io => false,
        };
        if !ok {
            return Err(MmError::WrongOwner {
                mfn,
                owner: fi.owner,
            });
        }
        fi.count = fi.count.checked_add(1).ok_or(MmError::CountOverflow(mfn))?;
        Ok(())
    }

    /// Drop a general reference.
    pub(super) fn put_ref(&mut self, mfn: Mfn) {
        let mut last_of = None;
        self.with_frame(mfn, |fi| {
            if fi.count == 0 {
                log::warn!("mm: put_page on {mfn} with no reference");
            }
            fi.count = fi.count.saturating_sub(1);
            if fi.is_unreferenced() {
                last_of = match fi.owner {
                    Owner::Domain(d) | Owner::XenShared(d) => Some(d),
                    _ => None,
                };
            }
        });
        // The last reference to a frame of a destroyed domain (another domain still
        // mapped it at teardown): it goes back now, as in Xen.
        if let Some(d) = last_of
            && !self.hooks.domain_exists(d)
            && self.ft.release(mfn).is_ok()
        {
            self.m2p.set(mfn, hypercall_abi::xen::INVALID_M2P_ENTRY);
            self.hooks.frame_orphan_freed(d, mfn);
        }
    }

    /// Take a type reference (Xen's `get_page_type`): validates on the 0 -> 1
    /// transition of a page-table or descriptor type. On error nothing changed (a
    /// partial validation is rolled back).
    pub(super) fn get_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), MmError> {
        let fi = self.info(mfn)?;
        let owner = match (fi.owner, ty) {
            (_, PageType::None) => return Err(MmError::NotTypeable { mfn, want: ty }),
            (Owner::Domain(d), _) | (Owner::XenShared(d), PageType::Writable) => d,
            _ => return Err(MmError::NotTypeable { mfn, want: ty }),
        };
        if fi.type_count > 0 {
            if fi.ty != ty {
                return Err(MmError::TypeConflict {
                    mfn,
                    have: fi.ty,
                    want: ty,
                });
            }
            if !fi.validated() {
                return Err(MmError::NotValidated(mfn));
            }
            let n = fi
                .type_count
                .checked_add(1)
                .ok_or(MmError::CountOverflow(mfn))?;
            self.with_frame(mfn, |f| f.type_count = n);
            return Ok(());
        }
        // Type count is zero: the frame may change type.
        if fi.ty != ty {
            if fi.ty != PageType::None {
                self.hooks.flush_for_type_change(owner, mfn);
            }
            self.with_frame(mfn, |f| {
                f.ty = ty;
                f.set_flag(F_VALIDATED, ty == PageType::Writable);
            });
        }
        let mut needs_validation = false;
        self.with_frame(mfn, |f| {
            f.type_count = 1;
            if !f.validated() {
                f.linear = 0;
                needs_validation = true;
            }
        });
        if needs_validation {
            if let Err(e) = self.validate(mfn, ty, owner) {
                self.with_frame(mfn, |f| {
                    f.type_count = 0;
                    f.ty = PageType::None;
                    f.linear = 0;
                    f.set_flag(F_VALIDATED, false);
                });
                return Err(e);
            }
            self.with_frame(mfn, |f| f.set_flag(F_VALIDATED, true));
        }
        Ok(())
    }

    /// Drop a type reference (Xen's `_put_page_type`). `ptpg` is the page table whose
    /// entry held the reference; when it has the same type as the frame, the reference
    /// was a linear one and the linear counters are unwound. Dropping the last reference
    /// of a validated page table devalidates it.
    pub(super) fn put_type(&mut self, mfn: Mfn, ptpg: Option<Mfn>) {
        let Some(fi) = self.ft.info(mfn).copied() else {
            return;
        };
        if fi.type_count == 0 {
            log::warn!("mm: put_page_type on {mfn} with no type reference");
            return;
        }
        let linear = ptpg
            .and_then(|p| self.ft.info(p))
            .is_some_and(|t| t.ty == fi.ty);
        if fi.type_count == 1 && fi.ty.is_page_table() && fi.validated() {
            self.with_frame(mfn, |f| f.set_flag(F_VALIDATED, false));
            self.devalidate(mfn, fi.ty);
        }
        if linear && let Some(p) = ptpg {
            self.with_frame(mfn, |f| f.linear = f.linear.saturating_add(1).min(0));
            self.with_frame(p, |t| t.linear = t.linear.saturating_sub(1).max(0));
        }
        self.with_frame(mfn, |f| f.type_count = f.type_count.saturating_sub(1));
    }

    /// General reference plus type reference, both or neither.
    pub(super) fn get_ref_and_type(
        &mut self,
        mfn: Mfn,
        dom: DomId,
        ty: PageType,
    ) -> Result<(), MmError> {
        self.get_ref(mfn, dom, ty == PageType::Writable)?;
        if let Err(e) = self.get_type(mfn, ty) {
            self.put_ref(mfn);
            return Err(e);
        }
        Ok(())
    }

    /// Drop a type reference and then a general reference.
    pub(super) fn put_ref_and_type(&mut self, mfn: Mfn) {
        self.put_type(mfn, None);
        self.put_ref(mfn);
    }

    fn validate(&mut self, mfn: Mfn, ty: PageType, owner: DomId) -> Result<(), MmError> {
        match ty {
            PageType::None | PageType::Writable => Ok(()),
            PageType::SegDesc => self.validate_segdesc(mfn, owner),
            PageType::L1 => self.promote_l1(mfn, owner),
            PageType::L2 => self.promote_upper(mfn, 2, owner),
            PageType::L3 => self.promote_upper(mfn, 3, owner),
            PageType::L4 => self.promote_upper(mfn, 4, owner),
        }
    }

    fn validate_segdesc(&mut self, mfn: Mfn, owner: DomId) -> Result<(), MmError> {
        for i in 0..PTES_PER_PAGE {
            let desc = self.mem.read_entry(mfn, i);
            let next = if i + 1 < PTES_PER_PAGE {
                self.mem.read_entry(mfn, i + 1)
            } else {
                0
            };
            if !self.hooks.check_descriptor(owner, desc, next) {
                return Err(MmError::BadDescriptor(mfn));
            }
        }
        Ok(())
    }

    /// Validate every entry of an L1 (`promote_l1_table`), then write the adjusted
    /// entries. On failure the references taken so far are dropped and nothing is
    /// written.
    fn promote_l1(&mut self, mfn: Mfn, owner: DomId) -> Result<(), MmError> {
        let io = self.io_caps_of(owner);
        for i in 0..PTES_PER_PAGE {
            let e = self.mem.read_entry(mfn, i);
            if !is_present(e) {
                continue;
            }
            if let Err(err) = self.get_page_from_l1e(e, PgOwner::Dom(owner), io, io) {
                for j in 0..i {
                    let e = self.mem.read_entry(mfn, j);
                    self.put_page_from_l1e(e);
                }
                return Err(err);
            }
        }
        for i in 0..PTES_PER_PAGE {
            let e = self.mem.read_entry(mfn, i);
            if is_present(e) {
                let flip = self.io_flip(e);
                self.mem.write_entry(mfn, i, adjust_l1(e ^ flip));
            }
        }
        Ok(())
    }

    /// Validate an L2/L3/L4 (`promote_l2_table`..`promote_l4_table`). L4 slots
    /// 256..=271 are skipped and then overwritten with the hypervisor's entries.
    fn promote_upper(&mut self, mfn: Mfn, level: u8, owner: DomId) -> Result<(), MmError> {
        let guest_slot = |i: usize| level != 4 || is_guest_l4_slot(i);
        for i in 0..PTES_PER_PAGE {
            if !guest_slot(i) {
                continue;
            }
            let e = self.mem.read_entry(mfn, i);
            if !is_present(e) {
                continue;
            }
            if let Err(err) = self.get_page_from_upper(level, e, mfn, owner) {
                for j in (0..i).filter(|&j| guest_slot(j)) {
                    let e = self.mem.read_entry(mfn, j);
                    self.put_page_from_upper(e, mfn);
                }
                return Err(err);
            }
        }
        for i in (0..PTES_PER_PAGE).filter(|&i| guest_slot(i)) {
            let e = self.mem.read_entry(mfn, i);
            if is_present(e) {
                self.mem.write_entry(mfn, i, adjust_upper(level, e));
            }
        }
        if level == 4 {
            // Slot 256, the read-only M2P, goes in only when the table becomes a kernel
            // base (`MMUEXT_NEW_BASEPTR`), as in Xen without `m2p_strict`: an L4 used
            // only for user mode never shows the M2P.
            self.mem.write_entry(mfn, HYPERVISOR_L4_FIRST, 0);
            for slot in HYPERVISOR_L4_FIRST + 1..=HYPERVISOR_L4_LAST {
                let v = self.slots.l4_entry(slot);
                self.mem.write_entry(mfn, slot, v);
            }
        }
        Ok(())
    }

    /// Drop everything the entries of a table held (`demote_l*_table`).
    fn devalidate(&mut self, mfn: Mfn, ty: PageType) {
        match ty {
            PageType::L1 => {
                for i in 0..PTES_PER_PAGE {
                    let e = self.mem.read_entry(mfn, i);
                    self.put_page_from_l1e(e);
                }
            }
            PageType::L2 | PageType::L3 | PageType::L4 => {
                for i in 0..PTES_PER_PAGE {
                    if ty == PageType::L4 && !is_guest_l4_slot(i) {
                        continue;
                    }
                    let e = self.mem.read_entry(mfn, i);
                    self.put_page_from_upper(e, mfn);
                }
            }
            PageType::None | PageType::Writable | PageType::SegDesc => {}
        }
    }

    /// The bits Xen flips in a validated L1 entry that maps I/O space
    /// (`get_page_from_l1e`'s return): RW off for a read-only MMIO frame, and the
    /// cache bits of [`io_cache_flip`]. 0 for RAM.
    fn io_flip(&self, e: u64) -> u64 {
        let target = pte_mfn(e);
        if !self.is_io_frame(target) {
            return 0;
        }
        let ro = if e & RW != 0 && self.hooks.mmio_read_only(target) {
            RW
        } else {
            0
        };
        ro | io_cache_flip(e)
    }

    /// The references a present L1 entry takes (`get_page_from_l1e`). `pg` owns the
    /// frames the entry may map; `pg_io`/`l1_io` are the I/O capabilities of the page
    /// owner and of the L1's owner (both are needed for an I/O mapping).
    pub(super) fn get_page_from_l1e(
        &mut self,
        e: u64,
        pg: PgOwner,
        pg_io: bool,
        l1_io: bool,
    ) -> Result<(), MmError> {
        let bad = l1_disallowed(e, l1_io);
        if bad != 0 {
            return Err(MmError::BadFlags {
                level: 1,
                bits: bad,
            });
        }
        let target = pte_mfn(e);
        let Some(fi) = self
            .ft
            .info(target)
            .copied()
            .filter(|f| f.owner != Owner::Io)
        else {
            // I/O space: no reference counting, permission from both sides.
            return if pg_io && l1_io && self.hooks.iomem_permitted(self.dom, target) {
                Ok(())
            } else {
                Err(MmError::IoNotPermitted(target))
            };
        };
        let mappable = match (pg, fi.owner) {
            (PgOwner::Dom(p), Owner::Domain(r) | Owner::XenShared(r)) => p == r,
            _ => false,
        };
        if !mappable {
            return Err(MmError::L1NotMappable {
                mfn: target,
                why: L1Refusal::Owner(fi.owner),
            });
        }
        if matches!(fi.owner, Owner::XenShared(_)) && e & CACHE_ATTRS != 0 {
            return Err(MmError::CacheAttrOnXenPage(target));
        }
        let Some(count) = fi.count.checked_add(1) else {
            return Err(MmError::L1NotMappable {
                mfn: target,
                why: L1Refusal::Overflow,
            });
        };
        self.with_frame(target, |f| f.count = count);
        if e & RW != 0
            && let Err(err) = self.get_type(target, PageType::Writable)
        {
            self.put_ref(target);
            let why = match err {
                MmError::CountOverflow(_) => L1Refusal::Overflow,
                _ => L1Refusal::Type(fi.ty),
            };
            return Err(MmError::L1NotMappable { mfn: target, why });
        }
        Ok(())
    }

    /// Drop what a (possibly not present) L1 entry held (`put_page_from_l1e`).
    pub(super) fn put_page_from_l1e(&mut self, e: u64) {
        if !is_present(e) || self.is_io_frame(pte_mfn(e)) {
            return;
        }
        // A grant mapping's entry holds exactly what a normal entry mapping the frame
        // with the same RW bit holds (`gnttab`), so overwriting it drops those, as in a
        // release build of Xen 4.17 (where `_PAGE_GNTTAB` is 0): the grant's handle
        // then no longer matches a PTE and its unmap fails, but nothing leaks.
        let target = pte_mfn(e);
        if e & RW != 0 {
            self.put_type(target, None);
        }
        self.put_ref(target);
    }

    /// The references a present L2..L4 entry of table `table` (owned by `owner`) takes:
    /// an L(n-1) type on its target, or, failing that with `-EINVAL`, a linear
    /// reference (`get_page_from_l2e`..`get_page_from_l4e`).
    pub(super) fn get_page_from_upper(
        &mut self,
        level: u8,
        e: u64,
        table: Mfn,
        owner: DomId,
    ) -> Result<(), MmError> {
        let bad = upper_disallowed(e);
        if bad != 0 {
            return Err(MmError::BadFlags { level, bits: bad });
        }
        let target = pte_mfn(e);
        let want = match level {
            2 => PageType::L1,
            3 => PageType::L2,
            _ => PageType::L3,
        };
        match self.get_ref_and_type(target, owner, want) {
            Ok(()) => Ok(()),
            Err(err) if err.errno() == Errno::EINVAL && self.get_linear(level, e, table, owner) => {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }

    /// A linear (recursive) entry: read-only, to an already validated table of the same
    /// level owned by the same domain, and not nested (`get_lN_linear_pagetable`).
    /// A self-reference takes no reference at all.
    fn get_linear(&mut self, level: u8, e: u64, table: Mfn, owner: DomId) -> bool {
        if !self.linear_pt || e & RW != 0 {
            return false;
        }
        let target = pte_mfn(e);
        if target == table {
            return true;
        }
        let (Ok(t), Ok(x)) = (self.info(table), self.info(target)) else {
            return false;
        };
        let mine = Owner::Domain(owner);
        if t.owner != mine
            || x.owner != mine
            || t.linear < 0
            || t.linear == i16::MAX
            || x.linear > 0
            || x.linear == i16::MIN
            || PageType::table(level) != Some(x.ty)
            || !x.validated()
            || x.type_count == 0
        {
            return false;
        }
        let (Some(count), Some(type_count)) = (x.count.checked_add(1), x.type_count.checked_add(1))
        else {
            return false;
        };
        self.with_frame(target, |f| {
            f.count = count;
            f.type_count = type_count;
            f.linear -= 1;
        });
        self.with_frame(table, |f| f.linear += 1);
        true
    }

    /// Drop what a (possibly not present) entry of L2..L4 `table` held.
    pub(super) fn put_page_from_upper(&mut self, e: u64, table: Mfn) {
        if !is_present(e) {
            return;
        }
        let target = pte_mfn(e);
        if target == table {
            return;
        }
        self.put_type(target, Some(table));
        self.put_ref(target);
    }

    /// Store `new` over `old` (`UPDATE_ENTRY`); with `preserve_ad`, keep the A/D bits
    /// the entry holds, retrying while the MMU sets them. Returns the value written.
    pub(super) fn update_entry(
        &mut self,
        mfn: Mfn,
        idx: usize,
        old: u64,
        new: u64,
        preserve_ad: bool,
        level: u8,
    ) -> Result<u64, MmError> {
        if !preserve_ad {
            self.mem.write_entry(mfn, idx, new);
            return Ok(new);
        }
        let mut cur = old;
        for _ in 0..MAX_AD_RETRIES {
            let val = new | (cur & (ACCESSED | DIRTY));
            match self.mem.cmpxchg_entry(mfn, idx, cur, val) {
                Ok(()) => return Ok(val),
                Err(seen) if (seen ^ cur) & !(ACCESSED | DIRTY) == 0 => cur = seen,
                Err(_) => break,
            }
        }
        Err(MmError::EntryRace { level })
    }

    /// Replace entry `idx` of validated L1 `l1` (`mod_l1_entry`).
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors Xen's mod_l1_entry inputs"
    )]
    pub(super) fn mod_l1_entry(
        &mut self,
        l1: Mfn,
        idx: usize,
        new: u64,
        preserve_ad: bool,
        pg: PgOwner,
        pg_io: bool,
        pt_io: bool,
    ) -> Result<(), MmError> {
        let old = self.mem.read_entry(l1, idx);
        if is_present(new) {
            let bad = l1_disallowed(new, pt_io);
            if bad != 0 {
                return Err(MmError::BadFlags {
                    level: 1,
                    bits: bad,
                });
            }
            if !has_changed(old, new) {
                // Same frame, same RW and cache bits: the references stay as they are.
                self.update_entry(l1, idx, old, adjust_l1(new), preserve_ad, 1)?;
                return Ok(());
            }
            self.get_page_from_l1e(new, pg, pg_io, pt_io)?;
            let flip = self.io_flip(new);
            let nv = adjust_l1(new ^ flip);
            if let Err(err) = self.update_entry(l1, idx, old, nv, preserve_ad, 1) {
                self.put_page_from_l1e(nv);
                return Err(err);
            }
        } else {
            self.update_entry(l1, idx, old, new, preserve_ad, 1)?;
        }
        self.put_page_from_l1e(old);
        Ok(())
    }

    /// Replace entry `idx` of validated L2..L4 `table` owned by `owner`
    /// (`mod_l2_entry`..`mod_l4_entry`). Returns whether a previously present entry
    /// changed (the caller then flushes the domain's TLBs).
    pub(super) fn mod_upper_entry(
        &mut self,
        level: u8,
        table: Mfn,
        idx: usize,
        new: u64,
        preserve_ad: bool,
        owner: DomId,
    ) -> Result<bool, MmError> {
        if level == 4 && !is_guest_l4_slot(idx) {
            return Err(MmError::XenSlot { slot: idx });
        }
        let old = self.mem.read_entry(table, idx);
        if is_present(new) {
            let bad = upper_disallowed(new);
            if bad != 0 {
                return Err(MmError::BadFlags { level, bits: bad });
            }
            if !has_changed(old, new) {
                let w = self.update_entry(
                    table,
                    idx,
                    old,
                    adjust_upper(level, new),
                    preserve_ad,
                    level,
                )?;
                return Ok(w != old);
            }
            self.get_page_from_upper(level, new, table, owner)?;
            let nv = adjust_upper(level, new);
            if let Err(err) = self.update_entry(table, idx, old, nv, preserve_ad, level) {
                self.put_page_from_upper(nv, table);
                return Err(err);
            }
        } else {
            self.update_entry(table, idx, old, new, preserve_ad, level)?;
        }
        self.put_page_from_upper(old, table);
        Ok(is_present(old))
    }

    /// Clear `pinned` and drop the pin's references, if the frame is pinned.
    pub(super) fn drop_pin(&mut self, mfn: Mfn) -> bool {
        let pinned = self.ft.info(mfn).is_some_and(FrameInfo::pinned);
        if pinned {
            self.with_frame(mfn, |f| f.set_flag(F_PINNED, false));
            self.put_ref_and_type(mfn);
        }
        pinned
    }

    /// Set `pinned` (the caller holds the references the pin keeps).
    pub(super) fn set_pinned(&mut self, mfn: Mfn) {
        self.with_frame(mfn, |f| f.set_flag(F_PINNED, true));
    }

    /// Teardown: drop what a still-validated table's entries hold, leaving its own
    /// (foreign-held) type count in place (Xen's forced invalidation in
    /// `relinquish_memory`).
    pub(super) fn force_devalidate(&mut self, mfn: Mfn) {
        let Some(fi) = self.ft.info(mfn).copied() else {
            return;
        };
        if fi.ty.is_page_table() && fi.validated() && fi.type_count > 0 {
            self.with_frame(mfn, |f| f.set_flag(F_VALIDATED, false));
            self.devalidate(mfn, fi.ty);
        }
    }
}

// ---- public per-frame operations -------------------------------------------------

/// Take a type reference on `mfn` (Xen's `get_page_type`). The 0 -> 1 transition of
/// L1..L4 validates the frame (recursively taking L(n-1) types, filling the L4's
/// hypervisor slots); of `SegDesc` audits every descriptor through
/// [`MmHooks::check_descriptor`]. No general reference is taken; see
/// [`get_page_and_type`]. On error nothing changed.
pub fn get_page_type<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    ty: PageType,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.get_type(mfn, ty)
}

/// Drop a type reference (Xen's `put_page_type`); the last reference of a page table
/// devalidates it, dropping everything its entries held.
pub fn put_page_type<M, H, P, E>(ctx: &mut MmCtx<'_, '_, M, H, P, E>, mfn: Mfn)
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.put_type(mfn, None);
}

/// Take a general reference on a frame owned by `owner` (a hypervisor page shared with
/// `owner` counts as owned) (Xen's `get_page`).
pub fn get_page<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    owner: DomId,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.get_ref(mfn, owner, true)
}

/// Drop a general reference (Xen's `put_page`). Freeing is the caller's
/// ([`FrameTable::release`]).
pub fn put_page<M, H, P, E>(ctx: &mut MmCtx<'_, '_, M, H, P, E>, mfn: Mfn)
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.put_ref(mfn);
}

/// General plus type reference on a frame owned by `owner` (Xen's
/// `get_page_and_type`), e.g. for GDT frames (`SegDesc`). Both or neither.
pub fn get_page_and_type<M, H, P, E>(
    ctx: &mut MmCtx<'_, '_, M, H, P, E>,
    mfn: Mfn,
    owner: DomId,
    ty: PageType,
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.get_ref_and_type(mfn, owner, ty)
}

/// Drop what [`get_page_and_type`] took.
pub fn put_page_and_type<M, H, P, E>(ctx: &mut MmCtx<'_, '_, M, H, P, E>, mfn: Mfn)
where
    M: MachineMemory,
    H: HypervisorSlots,
    P: M2p,
    E: MmHooks,
{
    ctx.put_ref_and_type(mfn);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_masks() {
        assert_eq!(AVAIL_HIGH, 0x7ff << 52);
        // L1: PCD only with I/O capability; bit 62 never; G allowed.
        assert_eq!(l1_disallowed(PRESENT | PCD, false), PCD);
        assert_eq!(l1_disallowed(PRESENT | PCD, true), 0);
        assert_eq!(l1_disallowed(PRESENT | GNTTAB, true), GNTTAB);
        assert_eq!(
            l1_disallowed(PRESENT | GLOBAL | (1 << 63) | (1 << 52), false),
            0
        );
        // Upper levels: no PSE, no G, no cache bits; bit 62 allowed.
        assert_eq!(upper_disallowed(PRESENT | PSE), PSE);
        assert_eq!(upper_disallowed(PRESENT | GLOBAL | PWT), GLOBAL | PWT);
        assert_eq!(upper_disallowed(PRESENT | RW | GNTTAB), 0);
    }

    #[test]
    fn adjustments() {
        // Kernel-only mapping: U + GUEST_KERNEL, no G.
        assert_eq!(
            adjust_l1(0x1000 | PRESENT),
            0x1000 | PRESENT | USER | GUEST_KERNEL
        );
        // User mapping: G added.
        assert_eq!(
            adjust_l1(0x1000 | PRESENT | USER),
            0x1000 | PRESENT | USER | GLOBAL
        );
        assert_eq!(adjust_l1(0x1000), 0x1000);
        assert_eq!(adjust_upper(2, 0x1000 | PRESENT), 0x1000 | PRESENT | USER);
        assert_eq!(
            adjust_upper(4, 0x1000 | PRESENT),
            0x1000 | PRESENT | USER | ACCESSED
        );
        assert_eq!(adjust_upper(4, 0x1000), 0x1000);
    }

    #[test]
    fn fast_path_and_io_flip() {
        assert!(!has_changed(
            0x1000 | PRESENT,
            0x1000 | PRESENT | ACCESSED | USER
        ));
        assert!(has_changed(0x1000 | PRESENT, 0x1000 | PRESENT | RW));
        assert!(has_changed(0x1000 | PRESENT, 0x2000 | PRESENT));
        assert_eq!(io_cache_flip(PRESENT), PWT | PCD);
        assert_eq!(io_cache_flip(PRESENT | PWT), PCD);
        assert_eq!(io_cache_flip(PRESENT | PWT | PAT), PCD | PAT);
        assert_eq!(io_cache_flip(PRESENT | PCD), 0);
        assert_eq!(idx9(0x3ff), 0x1ff);
    }
}
