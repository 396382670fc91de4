//! Why a PV memory-management operation was refused, and the errno Xen gives for it.
//!
//! Every variant is a refusal that changed nothing (the operation validated before it
//! committed, or rolled its own partial work back). The dispatcher turns it into the
//! guest-visible number with [`MmError::errno`] (or `Errno::from`), in one place. Each
//! variant's documentation names the Xen 4.17 source of its errno (`xen/arch/x86/mm.c`
//! unless said otherwise).

use hypercall_abi::{DomId, Errno, Mfn};

use super::frame_table::{Owner, PageType};

/// Why an L1 entry could not take its reference on the frame it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L1Refusal {
    /// The frame's owner is not the page owner (FD) and not a hypervisor page shared
    /// with it (another domain's frame, a hypervisor frame, a free frame).
    Owner(Owner),
    /// A writable mapping needs the writable type, but the frame is in use with this
    /// type (a page table or descriptor page).
    Type(PageType),
    /// The frame's reference count would overflow.
    Overflow,
}

/// The MFN field of a PTE with every bit set (bits 12-51): Xen's
/// `PADDR_MASK >> PAGE_SHIFT`, which it treats as INVALID_MFN.
pub const ALL_ONES_MFN: u64 = (1 << 40) - 1;

/// A refused memory-management request. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmError {
    /// The frame is outside the frame table (not RAM the hypervisor tracks).
    /// `-EINVAL` (`get_page_from_mfn` fails: "Could not get page").
    BadFrame(Mfn),
    /// The frame is not owned by the domain the operation needs.
    /// `-EINVAL` (`get_page_and_type_from_mfn`, `get_page_from_gfn` in
    /// `do_mmu_update`/`do_mmuext_op`).
    WrongOwner {
        /// The frame.
        mfn: Mfn,
        /// Its actual owner.
        owner: Owner,
    },
    /// `assign` of a frame that is not free. `-EBUSY` (hypervisor-internal).
    NotFree(Mfn),
    /// `assign` given [`Owner::Free`]. `-EINVAL` (hypervisor-internal).
    BadOwner,
    /// `release` of a frame that still holds references, a type or a pin.
    /// `-EBUSY` (hypervisor-internal; Xen's `steal_page` answers `-EINVAL`).
    FrameBusy(Mfn),
    /// A general or type reference count would overflow.
    /// `-EINVAL` (`_get_page_type`: "Type count overflow").
    CountOverflow(Mfn),
    /// The frame is in use with another type (`have`), so it cannot take `want`.
    /// `-EINVAL` (`_get_page_type`: "Bad type").
    TypeConflict {
        /// The frame.
        mfn: Mfn,
        /// Its current type (type count > 0).
        have: PageType,
        /// The type asked for.
        want: PageType,
    },
    /// This kind of frame can never take this type (a hypervisor or I/O frame, a
    /// shared hypervisor page as anything but writable, or the type `None`).
    /// `-EINVAL` (Xen's shared pages hold a permanent writable type, so `_get_page_type`
    /// refuses with "Bad type").
    NotTypeable {
        /// The frame.
        mfn: Mfn,
        /// The type asked for.
        want: PageType,
    },
    /// The frame is referenced with the right type but is not validated (only seen
    /// while a domain is being torn down). `-EINVAL` (linear-table check, `page_lock`).
    NotValidated(Mfn),
    /// A present entry of a level-`level` table uses flag bits that level forbids.
    /// `-EINVAL` ("Bad L1 flags" ... "Bad L4 flags").
    BadFlags {
        /// 1..=4.
        level: u8,
        /// The forbidden bits that were set.
        bits: u64,
    },
    /// A guest write to one of the hypervisor's L4 slots (256..=271).
    /// `-EINVAL` (`mod_l4_entry`: "L4 update in Xen-private area").
    XenSlot {
        /// The slot.
        slot: usize,
    },
    /// An L1 entry maps a frame it may not reference.
    /// `-EBUSY` (`get_page_from_l1e`: `could_not_pin`).
    L1NotMappable {
        /// The frame the entry maps.
        mfn: Mfn,
        /// Why.
        why: L1Refusal,
    },
    /// An L1 entry maps an I/O (non-RAM) frame without I/O-memory permission.
    /// `-EPERM` (`get_page_from_l1e`: "non-privileged attempt to map MMIO space"), or
    /// `-EINVAL` for the all-ones MFN ([`ALL_ONES_MFN`]).
    IoNotPermitted(Mfn),
    /// An L1 entry asks for non-write-back caching of a hypervisor page.
    /// `-EACCES` (`get_page_from_l1e`: "Attempt to change cache attributes of Xen heap
    /// page").
    CacheAttrOnXenPage(Mfn),
    /// `mmu_update` on a frame that is not a page table the request may edit: a
    /// descriptor page, or a frame whose type cannot be changed.
    /// `-EINVAL` (`do_mmu_update`: `rc` stays `-EINVAL` for other types).
    NotUpdatable {
        /// The frame holding the entry.
        mfn: Mfn,
        /// Its type.
        ty: PageType,
    },
    /// An L2..L4 update with a page owner (FD) different from the table owner (PFD).
    /// `-EINVAL` (`do_mmu_update`: `pg_owner != pt_owner`).
    ForeignUpperUpdate,
    /// The entry changed under the update in more than its accessed/dirty bits.
    /// `-EBUSY` for L1/L2, `-EFAULT` for L3/L4 (`mod_l*_entry`, `UPDATE_ENTRY` failure).
    EntryRace {
        /// 1..=4.
        level: u8,
    },
    /// Pinning a frame that is already pinned.
    /// `-EINVAL` (`do_mmuext_op`: "already pinned").
    AlreadyPinned(Mfn),
    /// Unpinning a frame that is not pinned. `-EINVAL` ("not pinned").
    NotPinned(Mfn),
    /// `foreigndom` (or a PFD) names a domain that does not exist, or the caller's own
    /// numeric id. `-ESRCH` (`get_pg_owner`, `rcu_lock_domain_by_id`).
    NoSuchDomain(DomId),
    /// The caller may not act on that domain's memory.
    /// `-EPERM` (XSM `XSM_TARGET` checks: `xsm_mmu_update`, `xsm_mmuext_op`).
    NotPermitted(DomId),
    /// An operation on the caller's own vCPU (flush, base pointer, LDT, cache flush)
    /// was given a foreign domain. `-EPERM` (`do_mmuext_op`: `currd != pg_owner`).
    NotSelf,
    /// `MMU_MACHPHYS_UPDATE` with a foreign page-table owner (PFD).
    /// `-EPERM` (`do_mmu_update`: `d != pt_owner`).
    MachphysForeignPt,
    /// `mmuext_op` with `DOMID_IO` or `DOMID_XEN` as foreign domain.
    /// `-EINVAL` (`do_mmuext_op`: `!is_pv_domain(pg_owner)`).
    NotPvDomain(DomId),
    /// An undefined `mmu_update` command (4..=7) or `mmuext_op` command.
    /// `-ENOSYS` (`default:` of both switches).
    UnknownCommand(u32),
    /// `MMUEXT_MARK_SUPER` / `MMUEXT_UNMARK_SUPER`. `-EOPNOTSUPP`.
    NotSupported,
    /// `MMUEXT_FLUSH_CACHE` without cache-flush permission. `-EACCES`.
    CacheFlushDenied,
    /// `MMUEXT_FLUSH_CACHE_GLOBAL` without cache-flush permission. `-EINVAL`.
    CacheFlushGlobalDenied,
    /// A virtual address that is non-canonical or inside the hypervisor's range.
    /// `-EINVAL` (`map_guest_l1e`: `!__addr_ok`).
    BadAddress(u64),
    /// No L1 entry for the address: a level of the walk is not present, is a large
    /// page, or the L1 is not a validated L1 of the caller.
    /// `-EINVAL` (`__do_update_va_mapping`).
    NoL1(u64),
    /// `MMUEXT_SET_LDT` with an unaligned or bad base, or more than 8192 entries.
    /// `-EINVAL` ("Bad args to SET_LDT").
    BadLdt {
        /// The base asked for.
        base: u64,
        /// The entry count asked for.
        ents: u32,
    },
    /// A descriptor page failed the descriptor audit.
    /// `-EINVAL` (`validate_segdesc_page`).
    BadDescriptor(Mfn),
}

impl MmError {
    /// The errno Xen returns for this refusal.
    pub const fn errno(self) -> Errno {
        match self {
            MmError::BadFrame(_)
            | MmError::WrongOwner { .. }
            | MmError::BadOwner
            | MmError::CountOverflow(_)
            | MmError::TypeConflict { .. }
            | MmError::NotTypeable { .. }
            | MmError::NotValidated(_)
            | MmError::BadFlags { .. }
            | MmError::XenSlot { .. }
            | MmError::NotUpdatable { .. }
            | MmError::ForeignUpperUpdate
            | MmError::AlreadyPinned(_)
            | MmError::NotPinned(_)
            | MmError::NotPvDomain(_)
            | MmError::CacheFlushGlobalDenied
            | MmError::BadAddress(_)
            | MmError::NoL1(_)
            | MmError::BadLdt { .. }
            | MmError::BadDescriptor(_) => Errno::EINVAL,
            MmError::NotFree(_) | MmError::FrameBusy(_) | MmError::L1NotMappable { .. } => {
                Errno::EBUSY
            }
            MmError::EntryRace { level } => {
                if level >= 3 {
                    Errno::EFAULT
                } else {
                    Errno::EBUSY
                }
            }
            // Xen treats the all-ones MFN field (`PADDR_MASK >> PAGE_SHIFT`) as an
            // INVALID_MFN and answers -EINVAL for it (get_page_from_l1e).
            MmError::IoNotPermitted(m) if m.0 == ALL_ONES_MFN => Errno::EINVAL,
            MmError::IoNotPermitted(_)
            | MmError::NotPermitted(_)
            | MmError::NotSelf
            | MmError::MachphysForeignPt => Errno::EPERM,
            MmError::CacheAttrOnXenPage(_) | MmError::CacheFlushDenied => Errno::EACCES,
            MmError::NoSuchDomain(_) => Errno::ESRCH,
            MmError::UnknownCommand(_) => Errno::ENOSYS,
            MmError::NotSupported => Errno::EOPNOTSUPP,
        }
    }
}

impl From<MmError> for Errno {
    fn from(e: MmError) -> Errno {
        e.errno()
    }
}

impl core::fmt::Display for MmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{self:?} ({})", self.errno())
    }
}

#[cfg(test)]
mod all_ones_tests {
    use super::*;

    #[test]
    fn io_refusal_of_the_all_ones_mfn_is_einval_as_in_xen() {
        assert_eq!(
            Errno::from(MmError::IoNotPermitted(Mfn(ALL_ONES_MFN))),
            Errno::EINVAL
        );
        assert_eq!(
            Errno::from(MmError::IoNotPermitted(Mfn(ALL_ONES_MFN - 1))),
            Errno::EPERM
        );
        assert_eq!(
            Errno::from(MmError::IoNotPermitted(Mfn((1 << 36) - 1))),
            Errno::EPERM
        );
    }
}
