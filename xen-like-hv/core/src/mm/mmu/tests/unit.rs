//! One test (or a few) per rule.

use std::vec::Vec;

use hypercall_abi::mmu::{
    MmuCmd, MmuUpdate, MmuextCmd, MmuextOp, UVMF_ALL, UVMF_INVLPG, UVMF_TLB_FLUSH, foreigndom,
};
use hypercall_abi::{DomId, Errno};

use super::*;
use crate::mm::error::L1Refusal;
use crate::mm::mmu::{FlushKind, addr_ok, relinquish_domain, update_va_mapping_otherdomain};
use crate::mm::page_type::{
    PgOwner, get_page_and_type, get_page_type, put_page_and_type, put_page_type,
};

const L4: u64 = DOM1_BASE;
const L3: u64 = DOM1_BASE + 1;
const L2: u64 = DOM1_BASE + 2;
const L1: u64 = DOM1_BASE + 3;
const DATA: u64 = DOM1_BASE + 4;
const DATA2: u64 = DOM1_BASE + 5;

/// dom1 with L4 -> L3 -> L2 -> L1 at index 0 of each, L1[0] mapping DATA RW, pinned as
/// L4 and installed as the kernel root of the returned vCPU.
fn booted() -> (World, VcpuMm) {
    let mut w = World::new();
    w.chain(L4, L3, L2, L1, (0, 0, 0));
    w.poke(L1, 0, pte(DATA, P | RW | A));
    w.pin(1, 4, L4).unwrap();
    let mut v = VcpuMm::default();
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4)),
    )
    .unwrap();
    (w, v)
}

fn errno(r: Result<Flush, MmError>) -> Errno {
    r.unwrap_err().errno()
}

#[test]
fn pinning_validates_recursively_and_counts() {
    let (w, v) = booted();
    assert_eq!(v.kernel_root, Some(Mfn(L4)));
    let l4 = w.info(L4);
    assert_eq!(
        (l4.page_type(), l4.type_count(), l4.count(), l4.pinned()),
        (PageType::L4, 2, 2, true)
    );
    for (m, ty) in [(L3, PageType::L3), (L2, PageType::L2), (L1, PageType::L1)] {
        let f = w.info(m);
        assert_eq!((f.page_type(), f.type_count(), f.count()), (ty, 1, 1));
        assert!(f.validated() && !f.pinned());
    }
    let d = w.info(DATA);
    assert_eq!(
        (d.page_type(), d.type_count(), d.count()),
        (PageType::Writable, 1, 1)
    );
    // 64-bit PV adjustments: kernel-only L1e gets U + GUEST_KERNEL, upper get U, L4 A.
    assert_eq!(w.read(L1, 0), pte(DATA, P | RW | A | U | GK));
    assert_eq!(w.read(L2, 0), pte(L1, P | RW | A | D | U));
    assert_eq!(w.read(L4, 0), pte(L3, P | RW | A | D | U));
}

#[test]
fn l1_user_mapping_gets_global() {
    let (mut w, _) = booted();
    w.mmu(1, L1, 1, pte(DATA2, P | U)).unwrap();
    assert_eq!(w.read(L1, 1), pte(DATA2, P | U | G));
    // The guest's own GUEST_KERNEL bit with U suppresses G.
    w.mmu(1, L1, 2, pte(DATA2, P | U | GK)).unwrap();
    assert_eq!(w.read(L1, 2), pte(DATA2, P | U | GK));
}

#[test]
fn l4_slots_are_filled_and_guarded() {
    let mut w = World::new();
    // Garbage in the hypervisor slots before validation is ignored and overwritten.
    for s in HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST {
        w.poke(L4, s, pte(DATA, P | RW));
    }
    w.pin(1, 4, L4).unwrap();
    // Slot 256 (the read-only M2P) waits until the table becomes a kernel base.
    assert_eq!(w.read(L4, HYPERVISOR_L4_FIRST), 0);
    for s in HYPERVISOR_L4_FIRST + 1..=HYPERVISOR_L4_LAST {
        assert_eq!(w.read(L4, s), xen_slot(s));
    }
    let mut v = VcpuMm::default();
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4)),
    )
    .unwrap();
    assert_eq!(
        w.read(L4, HYPERVISOR_L4_FIRST),
        xen_slot(HYPERVISOR_L4_FIRST)
    );
    assert_eq!(w.info(DATA).count(), 0);
    for s in [256, 260, 271] {
        let r = w.mmu(1, L4, s, 0);
        assert_eq!(r, Err(MmError::XenSlot { slot: s }));
        assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
        assert_eq!(w.read(L4, s), xen_slot(s));
    }
    // Slots 255 and 272 are the guest's.
    w.mmu(1, L4, 255, 0).unwrap();
    w.mmu(1, L4, 272, 0).unwrap();
}

#[test]
fn pin_twice_and_unpin_unpinned_are_einval() {
    let mut w = World::new();
    w.pin(1, 1, L1).unwrap();
    assert_eq!(w.pin(1, 1, L1), Err(MmError::AlreadyPinned(Mfn(L1))));
    assert_eq!(w.info(L1).type_count(), 1);
    assert_eq!(w.info(L1).count(), 1);
    w.unpin(1, L1).unwrap();
    assert_eq!(w.unpin(1, L1), Err(MmError::NotPinned(Mfn(L1))));
    assert_eq!(errno(w.unpin(1, L1)), Errno::EINVAL);
    assert!(w.info(L1).is_unreferenced());
    // Pinning as another level while in use as L1 is a type conflict.
    w.pin(1, 1, L1).unwrap();
    assert_eq!(errno(w.pin(1, 2, L1)), Errno::EINVAL);
    // Foreign frames: not ours to pin or unpin.
    assert_eq!(errno(w.pin(1, 1, DOM0_BASE)), Errno::EINVAL);
    assert_eq!(errno(w.unpin(1, DOM0_BASE)), Errno::EINVAL);
    assert_eq!(errno(w.pin(1, 1, 5000)), Errno::EINVAL);
}

#[test]
fn type_changes_only_at_zero_and_flushes() {
    let mut w = World::new();
    {
        let mut c = w.ctx(1);
        get_page_type(&mut c, Mfn(DATA), PageType::Writable).unwrap();
        assert_eq!(
            get_page_type(&mut c, Mfn(DATA), PageType::L1),
            Err(MmError::TypeConflict {
                mfn: Mfn(DATA),
                have: PageType::Writable,
                want: PageType::L1
            })
        );
        put_page_type(&mut c, Mfn(DATA));
    }
    // None -> Writable needed no flush; Writable -> L1 does (stale RW TLB entries).
    assert!(w.hooks.flushes.is_empty());
    let mut c = w.ctx(1);
    get_page_type(&mut c, Mfn(DATA), PageType::L1).unwrap();
    assert_eq!(c.hooks.flushes, [(DomId(1), Mfn(DATA))]);
    put_page_type(&mut c, Mfn(DATA));
    // Type kept at count 0 (not validated); back to writable flushes again.
    get_page_type(&mut c, Mfn(DATA), PageType::Writable).unwrap();
    assert_eq!(c.hooks.flushes.len(), 2);
    put_page_type(&mut c, Mfn(DATA));
    // Hypervisor, I/O and shared frames never take page-table types.
    for m in [XEN_FRAME, IO_FRAME, SHARED1] {
        assert_eq!(
            get_page_type(&mut c, Mfn(m), PageType::L1)
                .unwrap_err()
                .errno(),
            Errno::EINVAL
        );
    }
    assert!(get_page_type(&mut c, Mfn(SHARED1), PageType::Writable).is_ok());
    put_page_type(&mut c, Mfn(SHARED1));
    assert!(get_page_type(&mut c, Mfn(DATA), PageType::None).is_err());
}

#[test]
fn page_table_cannot_be_mapped_writable() {
    let (mut w, _) = booted();
    // RW mapping of an in-use L2: EBUSY (Xen's could_not_pin), nothing changed.
    let before = w.counts();
    let r = w.mmu(1, L1, 1, pte(L2, P | RW));
    assert_eq!(
        r,
        Err(MmError::L1NotMappable {
            mfn: Mfn(L2),
            why: L1Refusal::Type(PageType::L2)
        })
    );
    assert_eq!(errno(r), Errno::EBUSY);
    assert_eq!(w.counts(), before);
    assert_eq!(w.read(L1, 1), 0);
    // Read-only is fine.
    w.mmu(1, L1, 1, pte(L2, P)).unwrap();
    assert_eq!(w.info(L2).count(), 2);
    // An L1 that maps itself writable fails validation.
    w.poke(DATA2, 7, pte(DATA2, P | RW));
    assert_eq!(errno(w.pin(1, 1, DATA2)), Errno::EBUSY);
    assert!(w.info(DATA2).is_unreferenced());
}

#[test]
fn writable_frame_cannot_become_page_table() {
    let (mut w, _) = booted();
    // DATA is mapped RW by L1[0].
    assert_eq!(errno(w.pin(1, 1, DATA)), Errno::EINVAL);
    // Nor through an L2 entry.
    let r = w.mmu(1, L2, 1, pte(DATA, P | RW | U));
    assert_eq!(errno(r), Errno::EINVAL);
    // Unmap, then it may.
    w.mmu(1, L1, 0, 0).unwrap();
    assert_eq!(w.info(DATA).type_count(), 0);
    w.mmu(1, L2, 1, pte(DATA, P | RW | U)).unwrap();
    assert_eq!(w.info(DATA).page_type(), PageType::L1);
}

#[test]
fn l1_flag_rules() {
    let (mut w, _) = booted();
    for bad in [GNT, PCD, PWT, 1 << 7] {
        let r = w.mmu(1, L1, 1, pte(DATA2, P | bad));
        assert_eq!(
            r,
            Err(MmError::BadFlags {
                level: 1,
                bits: bad
            })
        );
    }
    // Allowed: G, A, D, avail bits, high avail bits, NX.
    w.mmu(
        1,
        L1,
        1,
        pte(DATA2, P | G | A | D | (1 << 9) | (1 << 55) | NX),
    )
    .unwrap();
    // Not-present entries are not checked (any value may be stored).
    w.mmu(1, L1, 2, GNT | PCD | 0xdead_0000).unwrap();
    assert_eq!(w.read(L1, 2), GNT | PCD | 0xdead_0000);
}

#[test]
fn upper_flag_rules_no_superpages() {
    let (mut w, _) = booted();
    for (table, level) in [(L2, 2u8), (L3, 3), (L4, 4)] {
        for bad in [PSE, G, PCD, PWT] {
            let r = w.mmu(1, table, 5, pte(DATA2, P | bad));
            assert_eq!(r, Err(MmError::BadFlags { level, bits: bad }));
        }
    }
    assert!(w.info(DATA2).is_unreferenced());
}

#[test]
fn plain_writes_to_unused_and_writable_frames() {
    let (mut w, _) = booted();
    // DATA is typed Writable (mapped RW): plain write, no checks.
    assert_eq!(w.mmu(1, DATA, 3, 0x1234_5678), Ok(Flush::None));
    assert_eq!(w.read(DATA, 3), 0x1234_5678);
    // DATA2 has no type references: plain write.
    w.mmu(1, DATA2, 3, pte(L4, P | RW)).unwrap();
    assert_eq!(w.read(DATA2, 3), pte(L4, P | RW));
    assert!(w.info(DATA2).is_unreferenced());
    // Someone else's frame: EINVAL.
    assert_eq!(errno(w.mmu(1, DOM0_BASE, 0, 0)), Errno::EINVAL);
    assert_eq!(errno(w.mmu(1, XEN_FRAME, 0, 0)), Errno::EINVAL);
    assert_eq!(errno(w.mmu(1, 9999, 0, 0)), Errno::EINVAL);
    // A descriptor page in use: EINVAL.
    w.poke(DATA2, 3, 0);
    let mut c = w.ctx(1);
    get_page_and_type(&mut c, Mfn(DATA2), DomId(1), PageType::SegDesc).unwrap();
    let r = w.mmu(1, DATA2, 0, 5);
    assert_eq!(
        r,
        Err(MmError::NotUpdatable {
            mfn: Mfn(DATA2),
            ty: PageType::SegDesc
        })
    );
    // Nor can it be mapped writable.
    assert_eq!(errno(w.mmu(1, L1, 1, pte(DATA2, P | RW))), Errno::EBUSY);
    let mut c = w.ctx(1);
    put_page_and_type(&mut c, Mfn(DATA2));
    assert!(w.info(DATA2).is_unreferenced());
}

#[test]
fn descriptor_audit() {
    let mut w = World::new();
    w.poke(DATA, 10, BAD_DESC);
    let mut c = w.ctx(1);
    assert_eq!(
        get_page_and_type(&mut c, Mfn(DATA), DomId(1), PageType::SegDesc),
        Err(MmError::BadDescriptor(Mfn(DATA)))
    );
    assert!(w.info(DATA).is_unreferenced());
}

#[test]
fn unused_former_page_table_write_flushes_first() {
    let mut w = World::new();
    w.pin(1, 1, L1).unwrap();
    w.unpin(1, L1).unwrap();
    assert!(w.hooks.flushes.is_empty());
    // Plain write to the old L1 goes through a writable type: type change, flush.
    w.mmu(1, L1, 0, pte(DATA, P | RW)).unwrap();
    assert_eq!(w.hooks.flushes, [(DomId(1), Mfn(L1))]);
    assert_eq!(w.info(L1).page_type(), PageType::Writable);
    assert_eq!(w.info(L1).type_count(), 0);
}

#[test]
fn preserve_ad_ors_existing_bits() {
    let (mut w, _) = booted();
    // The MMU set D on L1[0]; a PRESERVE_AD update keeps A/D.
    let old = w.read(L1, 0);
    w.poke(L1, 0, old | D);
    w.mmu_cmd(
        1,
        fd(DomId::SELF),
        MmuCmd::PtUpdatePreserveAd as u64,
        L1,
        0,
        pte(DATA, P | RW),
    )
    .unwrap();
    assert_eq!(w.read(L1, 0), pte(DATA, P | RW | A | D | U | GK));
    // A normal update does not.
    w.mmu(1, L1, 0, pte(DATA, P | RW)).unwrap();
    assert_eq!(w.read(L1, 0), pte(DATA, P | RW | U | GK));
    assert_eq!(w.info(DATA).type_count(), 1);
    // Upper levels too.
    w.poke(L2, 0, w.read(L2, 0) | D | A);
    w.mmu_cmd(
        1,
        fd(DomId::SELF),
        MmuCmd::PtUpdatePreserveAd as u64,
        L2,
        0,
        pte(L1, P | RW),
    )
    .unwrap();
    assert_eq!(w.read(L2, 0), pte(L1, P | RW | U | A | D));
    assert_eq!(w.info(L1).type_count(), 1);
}

#[test]
fn no_translate_is_normal_for_pv() {
    let (mut w, _) = booted();
    w.mmu_cmd(
        1,
        fd(DomId::SELF),
        MmuCmd::PtUpdateNoTranslate as u64,
        L1,
        4,
        pte(DATA2, P),
    )
    .unwrap();
    assert_eq!(w.info(DATA2).count(), 1);
}

#[test]
fn undefined_commands() {
    let (mut w, mut v) = booted();
    for cmd in 4..8 {
        let r = w.mmu_cmd(1, fd(DomId::SELF), cmd, L1, 0, 0);
        assert_eq!(r, Err(MmError::UnknownCommand(cmd as u32)));
        assert_eq!(errno(r), Errno::ENOSYS);
    }
    for cmd in [14u32, 21, 1000, u32::MAX] {
        let op = MmuextOp {
            cmd,
            ..MmuextOp::default()
        };
        assert_eq!(errno(w.ext(1, &mut v, op)), Errno::ENOSYS);
    }
}

#[test]
fn machphys_update() {
    let (mut w, _) = booted();
    let machphys = MmuCmd::MachphysUpdate as u64;
    w.mmu_cmd(1, fd(DomId::SELF), machphys, DATA, 0, 42)
        .unwrap();
    assert_eq!(w.m2p.0[DATA as usize], 42);
    // Not the caller's (or FD's) frame.
    let r = w.mmu_cmd(1, fd(DomId::SELF), machphys, DOM0_BASE, 0, 1);
    assert_eq!(errno(r), Errno::EINVAL);
    assert_eq!(
        errno(w.mmu_cmd(1, fd(DomId::SELF), machphys, SHARED1, 0, 1)),
        Errno::EINVAL
    );
    // dom0 with FD = dom1 may.
    w.mmu_cmd(0, fd(DomId(1)), machphys, DATA2, 0, 7).unwrap();
    assert_eq!(w.m2p.0[DATA2 as usize], 7);
    // A foreign PFD: EPERM.
    let r = w.mmu_cmd(
        0,
        foreigndom(DomId::SELF, Some(DomId(1))),
        machphys,
        DATA2,
        0,
        7,
    );
    assert_eq!(r, Err(MmError::MachphysForeignPt));
    assert_eq!(errno(r), Errno::EPERM);
}

#[test]
fn foreigndom_resolution() {
    let (mut w, _) = booted();
    // Own numeric id as FD, unknown domains: ESRCH.
    assert_eq!(errno(w.mmu_cmd(1, fd(DomId(1)), 0, L1, 0, 0)), Errno::ESRCH);
    assert_eq!(errno(w.mmu_cmd(1, fd(DomId(9)), 0, L1, 0, 0)), Errno::ESRCH);
    assert_eq!(
        errno(w.mmu_cmd(1, fd(DomId::INVALID), 0, L1, 0, 0)),
        Errno::ESRCH
    );
    let pfd9 = foreigndom(DomId::SELF, Some(DomId(9)));
    assert_eq!(errno(w.mmu_cmd(1, pfd9, 0, L1, 0, 0)), Errno::ESRCH);
    // Own id as PFD is fine.
    let pfd1 = foreigndom(DomId::SELF, Some(DomId(1)));
    w.mmu_cmd(1, pfd1, 0, L1, 5, 0).unwrap();
    // Unprivileged caller naming another domain: EPERM at the entry.
    assert_eq!(errno(w.mmu_cmd(1, fd(DomId(0)), 0, L1, 0, 0)), Errno::EPERM);
    let pfd0 = foreigndom(DomId::SELF, Some(DomId(0)));
    assert_eq!(errno(w.mmu_cmd(1, pfd0, 0, DOM0_BASE, 0, 0)), Errno::EPERM);
    assert_eq!(
        errno(w.mmu_cmd(1, fd(DomId::XEN), 0, L1, 0, 0)),
        Errno::EPERM
    );
    // mmuext_op: IO/XEN are not PV domains; foreign needs privilege.
    let mut v = VcpuMm::default();
    let op = MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0);
    assert_eq!(errno(w.ext_fd(1, fd(DomId::IO), &mut v, op)), Errno::EINVAL);
    assert_eq!(
        errno(w.ext_fd(1, fd(DomId::XEN), &mut v, op)),
        Errno::EINVAL
    );
    assert_eq!(errno(w.ext_fd(1, fd(DomId(0)), &mut v, op)), Errno::EPERM);
    assert_eq!(errno(w.ext_fd(1, fd(DomId(1)), &mut v, op)), Errno::ESRCH);
    assert_eq!(errno(w.ext_fd(1, fd(DomId(3)), &mut v, op)), Errno::ESRCH);
    // dom0 with FD = dom1: vCPU operations are EPERM.
    assert_eq!(w.ext_fd(0, fd(DomId(1)), &mut v, op), Err(MmError::NotSelf));
}

#[test]
fn foreign_mappings_need_privilege_and_fd() {
    let (mut w, _) = booted();
    let d0 = DOM0_BASE;
    w.pin(0, 1, d0).unwrap();
    // dom0 mapping dom1's frame without FD: EBUSY (owner mismatch).
    let r = w.mmu(0, d0, 0, pte(DATA2, P | RW));
    assert_eq!(
        r,
        Err(MmError::L1NotMappable {
            mfn: Mfn(DATA2),
            why: L1Refusal::Owner(Owner::Domain(DomId(1)))
        })
    );
    // With FD = dom1 it may, writable too.
    w.mmu_cmd(0, fd(DomId(1)), 0, d0, 0, pte(DATA2, P | RW))
        .unwrap();
    assert_eq!(w.info(DATA2).page_type(), PageType::Writable);
    assert_eq!(w.info(DATA2).count(), 1);
    // But FD must own the frame: dom0's own frame via FD = dom1 is refused.
    assert_eq!(
        errno(w.mmu_cmd(0, fd(DomId(1)), 0, d0, 1, pte(d0 + 1, P))),
        Errno::EBUSY
    );
    // L2..L4 updates need FD == PFD.
    w.pin(0, 2, d0 + 2).unwrap();
    let r = w.mmu_cmd(0, fd(DomId(1)), 0, d0 + 2, 0, 0);
    assert_eq!(r, Err(MmError::ForeignUpperUpdate));
    // dom1 can never map dom0's frames, or the hypervisor's, or dom0's shared page.
    for m in [d0 + 3, XEN_FRAME, SHARED0] {
        assert_eq!(errno(w.mmu(1, L1, 1, pte(m, P))), Errno::EBUSY);
    }
    // dom0 edits dom1's tables with PFD = FD = dom1.
    let both = foreigndom(DomId(1), Some(DomId(1)));
    w.mmu_cmd(0, both, 0, L1, 9, pte(DATA2, P)).unwrap();
    assert_eq!(w.info(DATA2).count(), 2);
    w.mmu_cmd(0, both, 0, L2, 9, 0).unwrap();
}

/// A read-only MMIO frame (the HPET under Xen's `ro-hpet`): a writable mapping is
/// accepted and written without RW (and uncached), through `mmu_update` and when an
/// L1 holding one is validated.
#[test]
fn read_only_mmio_frames_lose_rw_silently() {
    let (mut w, _) = booted();
    let d0 = DOM0_BASE;
    w.pin(0, 1, d0).unwrap();
    w.mmu(0, d0, 0, pte(FAR_IO, P | RW)).unwrap();
    assert_eq!(w.read(d0, 0), pte(FAR_IO, P | PWT | PCD | U | GK));
    w.mmu(0, d0, 1, pte(FAR_IO, P)).unwrap();
    assert_eq!(w.read(d0, 1), pte(FAR_IO, P | PWT | PCD | U | GK));
    // Other I/O frames keep RW.
    w.mmu(0, d0, 2, pte(IO_FRAME, P | RW)).unwrap();
    assert_eq!(w.read(d0, 2), pte(IO_FRAME, P | RW | PWT | PCD | U | GK));
    // Validating a whole L1 that asks for RW.
    let l1 = d0 + 2;
    w.poke(l1, 5, pte(FAR_IO, P | RW));
    w.pin(0, 1, l1).unwrap();
    assert_eq!(w.read(l1, 5), pte(FAR_IO, P | PWT | PCD | U | GK));
}

#[test]
fn io_and_shared_frames() {
    let (mut w, _) = booted();
    // Unprivileged: I/O space is EPERM, in and outside the table.
    for m in [IO_FRAME, FAR_IO] {
        let r = w.mmu(1, L1, 1, pte(m, P | RW));
        assert_eq!(r, Err(MmError::IoNotPermitted(Mfn(m))));
        assert_eq!(errno(r), Errno::EPERM);
        assert_eq!(
            errno(w.mmu_cmd(1, fd(DomId::IO), 0, L1, 1, pte(m, P))),
            Errno::EPERM
        );
    }
    // dom0 may; write-back becomes UC, nothing is counted.
    let d0 = DOM0_BASE;
    w.pin(0, 1, d0).unwrap();
    w.mmu(0, d0, 0, pte(IO_FRAME, P | RW)).unwrap();
    assert_eq!(w.read(d0, 0), pte(IO_FRAME, P | RW | PWT | PCD | U | GK));
    w.mmu_cmd(0, fd(DomId::IO), 0, d0, 1, pte(FAR_IO, P | PWT))
        .unwrap();
    assert_eq!(w.read(d0, 1), pte(FAR_IO, P | PWT | PCD | U | GK));
    assert_eq!(w.info(IO_FRAME).count(), 0);
    // dom0 may use cache bits on RAM; dom1 may not.
    w.mmu(0, d0, 2, pte(d0 + 1, P | PCD)).unwrap();
    // Shared hypervisor page: its domain may map it, also writable, not with cache bits.
    w.mmu(1, L1, 2, pte(SHARED1, P | RW)).unwrap();
    assert_eq!(w.info(SHARED1).count(), 1);
    assert_eq!(w.info(SHARED1).page_type(), PageType::Writable);
    assert_eq!(errno(w.mmu(0, d0, 3, pte(SHARED0, P | PCD))), Errno::EACCES);
    // Never a page table.
    assert_eq!(errno(w.mmu(1, L2, 1, pte(SHARED1, P))), Errno::EINVAL);
    assert_eq!(errno(w.pin(1, 1, SHARED1)), Errno::EINVAL);
    // Unmapping drops the shared page's references.
    w.mmu(1, L1, 2, 0).unwrap();
    assert!(w.info(SHARED1).is_unreferenced());
}

#[test]
fn failed_validation_rolls_back() {
    let mut w = World::new();
    // L2 with two good L1s then a bad entry: everything taken is given back.
    let (l2, l1a, l1b) = (DOM1_BASE + 10, DOM1_BASE + 11, DOM1_BASE + 12);
    w.poke(l1a, 0, pte(DATA, P | RW));
    w.poke(l1b, 3, pte(DATA2, P));
    w.poke(l2, 0, pte(l1a, P | RW));
    w.poke(l2, 1, pte(l1b, P | RW));
    w.poke(l2, 2, pte(DATA, P | PSE));
    let before = w.counts();
    let r = w.pin(1, 2, l2);
    assert_eq!(
        r,
        Err(MmError::BadFlags {
            level: 2,
            bits: PSE
        })
    );
    assert_eq!(w.counts(), before);
    // The guest's entries are untouched (no adjustment written on failure).
    assert_eq!(w.read(l2, 0), pte(l1a, P | RW));
    // Entry points at a dom0 frame: EINVAL, rolled back.
    w.poke(l2, 2, pte(DOM0_BASE, P | RW));
    assert_eq!(errno(w.pin(1, 2, l2)), Errno::EINVAL);
    assert_eq!(w.counts(), before);
    // Fixed: pin works.
    w.poke(l2, 2, 0);
    w.pin(1, 2, l2).unwrap();
    assert_eq!(w.info(l1a).type_count(), 1);
    assert_eq!(w.info(DATA).page_type(), PageType::Writable);
}

#[test]
fn fast_path_keeps_references() {
    let (mut w, _) = booted();
    let before = w.counts();
    // Only A/D/U/G/NX/avail change: no re-validation, same references.
    w.mmu(1, L1, 0, pte(DATA, P | RW | A | D | NX | U)).unwrap();
    assert_eq!(w.counts(), before);
    assert_eq!(w.read(L1, 0), pte(DATA, P | RW | A | D | NX | U | G));
    // Clearing RW is a real change: the writable reference goes.
    w.mmu(1, L1, 0, pte(DATA, P)).unwrap();
    assert_eq!(w.info(DATA).type_count(), 0);
    assert_eq!(w.info(DATA).count(), 1);
}

#[test]
fn upper_update_flushes_only_when_a_present_entry_changes() {
    let (mut w, _) = booted();
    let l1b = DOM1_BASE + 8;
    assert_eq!(w.mmu(1, L2, 1, pte(l1b, P | RW)), Ok(Flush::None));
    assert_eq!(
        w.mmu(1, L2, 1, pte(l1b, P | RW | NX)),
        Ok(Flush::All(FlushKind::Tlb))
    );
    assert_eq!(w.mmu(1, L2, 1, 0), Ok(Flush::All(FlushKind::Tlb)));
    assert!(w.info(l1b).is_unreferenced());
    assert_eq!(w.mmu(1, L1, 1, pte(DATA2, P)), Ok(Flush::None));
}

#[test]
fn linear_page_tables() {
    let (mut w, _) = booted();
    let other = DOM1_BASE + 9;
    // RO self-map of the L4: allowed, no references taken.
    let before = w.counts();
    w.mmu(1, L4, 300, pte(L4, P)).unwrap();
    assert_eq!(w.counts(), before);
    // RW: refused.
    assert_eq!(errno(w.mmu(1, L4, 301, pte(L4, P | RW))), Errno::EINVAL);
    // RO linear to another validated L4: one type reference, counters set.
    w.pin(1, 4, other).unwrap();
    w.mmu(1, L4, 302, pte(other, P)).unwrap();
    assert_eq!(w.info(other).type_count(), 2);
    assert_eq!(w.info(other).linear_count(), -1);
    assert_eq!(w.info(L4).linear_count(), 1);
    // Not nested: `other` is used linearly, so it may not hold linear entries...
    assert_eq!(errno(w.mmu(1, other, 0, pte(L4, P))), Errno::EINVAL);
    // ...and L4, which holds one, may not be used linearly.
    let third = DOM1_BASE + 10;
    w.pin(1, 4, third).unwrap();
    assert_eq!(errno(w.mmu(1, third, 0, pte(L4, P))), Errno::EINVAL);
    // Another domain's L4 is refused.
    w.pin(0, 4, DOM0_BASE).unwrap();
    assert_eq!(errno(w.mmu(1, L4, 303, pte(DOM0_BASE, P))), Errno::EINVAL);
    // Removing the entry unwinds everything.
    w.mmu(1, L4, 302, 0).unwrap();
    assert_eq!(w.info(other).type_count(), 1);
    assert_eq!(w.info(other).linear_count(), 0);
    assert_eq!(w.info(L4).linear_count(), 0);
    // Disabled (pv-linear-pt=0): even the RO self-map is refused.
    w.linear_pt = false;
    assert_eq!(errno(w.mmu(1, L4, 304, pte(L4, P))), Errno::EINVAL);
    // L2 linear entries work the same way.
    w.linear_pt = true;
    w.mmu(1, L2, 7, pte(L2, P)).unwrap();
    assert_eq!(errno(w.mmu(1, L2, 8, pte(L2, P | RW))), Errno::EINVAL);
}

#[test]
fn new_baseptr_moves_the_root_reference() {
    let (mut w, mut v) = booted();
    let other = DOM1_BASE + 9;
    let op = |m: u64| MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(m));
    // Same root: no-op (reload CR3).
    assert_eq!(w.ext(1, &mut v, op(L4)), Ok(Flush::Local(FlushKind::Tlb)));
    assert_eq!(w.info(L4).type_count(), 2);
    w.ext(1, &mut v, op(other)).unwrap();
    assert_eq!(v.kernel_root, Some(Mfn(other)));
    assert_eq!(w.info(other).type_count(), 1);
    assert_eq!(w.info(L4).type_count(), 1); // the pin
    // Refused roots change nothing.
    assert_eq!(errno(w.ext(1, &mut v, op(L1))), Errno::EINVAL);
    assert_eq!(errno(w.ext(1, &mut v, op(DATA))), Errno::EINVAL);
    assert_eq!(errno(w.ext(1, &mut v, op(DOM0_BASE))), Errno::EINVAL);
    assert_eq!(v.kernel_root, Some(Mfn(other)));
    // User base pointer: 0 clears.
    let uop = |m: u64| MmuextOp::on_frame(MmuextCmd::NewUserBaseptr, Mfn(m));
    w.ext(1, &mut v, uop(L4)).unwrap();
    assert_eq!(v.user_root, Some(Mfn(L4)));
    assert_eq!(w.info(L4).type_count(), 2);
    w.ext(1, &mut v, uop(0)).unwrap();
    assert_eq!(v.user_root, None);
    assert_eq!(w.info(L4).type_count(), 1);
    assert_eq!(errno(w.ext(1, &mut v, uop(L3))), Errno::EINVAL);
}

#[test]
fn flush_ops() {
    let (mut w, mut v) = booted();
    let mut f = |cmd, a1: u64, a2: u64, w: &mut World| w.ext(1, &mut v, MmuextOp::new(cmd, a1, a2));
    let k = 0xffff_8880_0000_1000u64;
    assert_eq!(
        f(MmuextCmd::TlbFlushLocal, 0, 0, &mut w),
        Ok(Flush::Local(FlushKind::Tlb))
    );
    assert_eq!(
        f(MmuextCmd::InvlpgLocal, 0x4000, 0, &mut w),
        Ok(Flush::Local(FlushKind::Invlpg(0x4000)))
    );
    assert_eq!(
        f(MmuextCmd::InvlpgLocal, 1 << 63, 0, &mut w),
        Ok(Flush::None)
    );
    assert_eq!(
        f(MmuextCmd::InvlpgAll, 0xffff_8000_0000_0000, 0, &mut w),
        Ok(Flush::None)
    );
    assert_eq!(
        f(MmuextCmd::InvlpgAll, k, 0, &mut w),
        Ok(Flush::All(FlushKind::Invlpg(k)))
    );
    assert_eq!(
        f(MmuextCmd::TlbFlushMulti, 0, 0x9000, &mut w),
        Ok(Flush::Multi(0x9000, FlushKind::Tlb))
    );
    assert_eq!(
        f(MmuextCmd::InvlpgMulti, 0x5000, 0x9000, &mut w),
        Ok(Flush::Multi(0x9000, FlushKind::Invlpg(0x5000)))
    );
    assert_eq!(
        f(MmuextCmd::TlbFlushAll, 0, 0, &mut w),
        Ok(Flush::All(FlushKind::Tlb))
    );
    // Cache flushes need I/O capability.
    assert_eq!(errno(f(MmuextCmd::FlushCache, 0, 0, &mut w)), Errno::EACCES);
    assert_eq!(
        errno(f(MmuextCmd::FlushCacheGlobal, 0, 0, &mut w)),
        Errno::EINVAL
    );
    let mut v0 = VcpuMm::default();
    assert_eq!(
        w.ext(0, &mut v0, MmuextOp::new(MmuextCmd::FlushCache, 0, 0)),
        Ok(Flush::CacheLocal)
    );
    assert_eq!(
        w.ext(0, &mut v0, MmuextOp::new(MmuextCmd::FlushCacheGlobal, 0, 0)),
        Ok(Flush::CacheGlobal)
    );
}

#[test]
fn set_ldt() {
    let (mut w, mut v) = booted();
    let op = |base, ents| MmuextOp::set_ldt(base, ents);
    // Nothing to flush: the caller reloads its LDT mappings itself.
    assert_eq!(w.ext(1, &mut v, op(0x10_0000, 16)), Ok(Flush::None));
    assert_eq!((v.ldt_base, v.ldt_ents), (0x10_0000, 16));
    assert_eq!(w.ext(1, &mut v, op(0x10_0000, 16)), Ok(Flush::None));
    for (base, ents) in [
        (0x10_0008, 16),
        (0x10_0000, 8193),
        (0xffff_8000_0000_0000, 1),
        (0x8000_0000_0000_0000, 1),
    ] {
        assert_eq!(
            w.ext(1, &mut v, op(base, ents)),
            Err(MmError::BadLdt { base, ents })
        );
    }
    // Zero entries: no LDT, the base is ignored.
    w.ext(1, &mut v, op(0x1234, 0)).unwrap();
    assert_eq!((v.ldt_base, v.ldt_ents), (0, 0));
    w.ext(1, &mut v, op(0, 8192)).unwrap();
}

#[test]
fn clear_and_copy_page() {
    let (mut w, mut v) = booted();
    w.poke(DATA2, 5, 77);
    let dst = DOM1_BASE + 9;
    w.ext(1, &mut v, MmuextOp::copy_page(Mfn(dst), Mfn(DATA2)))
        .unwrap();
    assert_eq!(w.read(dst, 5), 77);
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::ClearPage, Mfn(dst)),
    )
    .unwrap();
    assert_eq!(w.read(dst, 5), 0);
    assert!(w.info(dst).is_unreferenced());
    // Page tables are not writable-typeable; copying from one is fine.
    let clear_l1 = MmuextOp::on_frame(MmuextCmd::ClearPage, Mfn(L1));
    assert_eq!(errno(w.ext(1, &mut v, clear_l1)), Errno::EINVAL);
    assert_eq!(
        errno(w.ext(1, &mut v, MmuextOp::copy_page(Mfn(L2), Mfn(DATA2)))),
        Errno::EINVAL
    );
    w.ext(1, &mut v, MmuextOp::copy_page(Mfn(dst), Mfn(L1)))
        .unwrap();
    // Foreign frames: EINVAL.
    let clear_d0 = MmuextOp::on_frame(MmuextCmd::ClearPage, Mfn(DOM0_BASE));
    assert_eq!(errno(w.ext(1, &mut v, clear_d0)), Errno::EINVAL);
    assert_eq!(
        errno(w.ext(1, &mut v, MmuextOp::copy_page(Mfn(dst), Mfn(DOM0_BASE)))),
        Errno::EINVAL
    );
    // dom0 may clear dom1's page with FD = dom1.
    let mut v0 = VcpuMm::default();
    w.poke(dst, 1, 5);
    w.ext_fd(
        0,
        fd(DomId(1)),
        &mut v0,
        MmuextOp::on_frame(MmuextCmd::ClearPage, Mfn(dst)),
    )
    .unwrap();
    assert_eq!(w.read(dst, 1), 0);
}

#[test]
fn update_va_mapping_walks_and_flushes() {
    let (mut w, v) = booted();
    let root = v.kernel_root.unwrap().0;
    let va0 = va(0, 0, 0, 1);
    assert_eq!(w.uvm(1, root, va0, pte(DATA2, P | RW), 0), Ok(Flush::None));
    assert_eq!(w.read(L1, 1), pte(DATA2, P | RW | U | GK));
    assert_eq!(w.info(DATA2).type_count(), 1);
    let flags = [
        (UVMF_TLB_FLUSH, Flush::Local(FlushKind::Tlb)),
        (UVMF_INVLPG, Flush::Local(FlushKind::Invlpg(va0))),
        (UVMF_TLB_FLUSH | UVMF_ALL, Flush::All(FlushKind::Tlb)),
        (UVMF_INVLPG | UVMF_ALL, Flush::All(FlushKind::Invlpg(va0))),
        (
            UVMF_INVLPG | 0x8000,
            Flush::Multi(0x8000, FlushKind::Invlpg(va0)),
        ),
        (3, Flush::None),
        (UVMF_ALL, Flush::None),
    ];
    for (fl, want) in flags {
        assert_eq!(w.uvm(1, root, va0, pte(DATA2, P), fl), Ok(want));
    }
    // Unmapped addresses: EINVAL, no flush.
    for bad in [
        va(1, 0, 0, 0),
        va(0, 1, 0, 0),
        va(0, 0, 1, 0),
        va(300, 0, 0, 0),
    ] {
        assert_eq!(
            w.uvm(1, root, bad, 0, UVMF_TLB_FLUSH),
            Err(MmError::NoL1(bad))
        );
    }
    // A large-page entry on the way is never walked through, even when it leads to a
    // validated L1 (here a hand-made, unvalidated tree whose "L2" entry has PSE).
    let (x, y, z) = (DOM1_BASE + 20, DOM1_BASE + 21, DOM1_BASE + 22);
    w.poke(x, 0, pte(y, P));
    w.poke(y, 0, pte(z, P));
    w.poke(z, 0, pte(L1, P | PSE));
    assert_eq!(errno(w.uvm(1, x, va0, 0, 0)), Errno::EINVAL);
    w.poke(z, 0, pte(L1, P));
    w.uvm(1, x, va0, 0, 0).unwrap();
    // ... but the final table must be a validated L1 of the caller.
    w.poke(z, 0, pte(DATA2, P));
    assert_eq!(errno(w.uvm(1, x, va0, 0, 0)), Errno::EINVAL);
    // Another domain's root: EINVAL.
    assert_eq!(errno(w.uvm(0, root, va0, 0, 0)), Errno::EINVAL);
    assert!(addr_ok(va0) && !addr_ok(1 << 47) && addr_ok(0xffff_8800_0000_0000));
}

#[test]
fn update_va_mapping_otherdomain_maps_foreign_frames() {
    let mut w = World::new();
    let (l4, l3, l2, l1) = (DOM0_BASE, DOM0_BASE + 1, DOM0_BASE + 2, DOM0_BASE + 3);
    w.chain(l4, l3, l2, l1, (0, 0, 0));
    w.pin(0, 4, l4).unwrap();
    let mut c = w.ctx(0);
    let foreign = ForeignDomain::for_update_va_mapping(&c, DomId(1)).unwrap();
    update_va_mapping_otherdomain(
        &mut c,
        Mfn(l4),
        va(0, 0, 0, 4),
        pte(DATA, P | RW),
        0,
        foreign,
    )
    .unwrap();
    assert_eq!(w.info(DATA).page_type(), PageType::Writable);
    assert_eq!(w.info(DATA).count(), 1);
    // Unprivileged: EPERM.
    let mut c = w.ctx(1);
    let foreign = ForeignDomain::for_update_va_mapping(&c, DomId(0)).unwrap();
    assert_eq!(foreign.pg_owner, PgOwner::Dom(DomId(0)));
    let r = update_va_mapping_otherdomain(&mut c, Mfn(l4), 0, pte(l4, P), 0, foreign);
    assert_eq!(r.unwrap_err().errno(), Errno::EPERM);
}

#[test]
fn relinquish_releases_everything() {
    let (mut w, mut v) = booted();
    // A second pinned table tree and a user root, plus a foreign mapping by dom0.
    let l2b = DOM1_BASE + 10;
    w.poke(l2b, 4, pte(DOM1_BASE + 11, P | RW));
    w.pin(1, 2, l2b).unwrap();
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewUserBaseptr, Mfn(L4)),
    )
    .unwrap();
    w.mmu(1, L4, 9, pte(L4, P)).unwrap();
    w.pin(0, 1, DOM0_BASE).unwrap();
    w.mmu_cmd(0, fd(DomId(1)), 0, DOM0_BASE, 0, pte(DATA2, P | RW))
        .unwrap();
    let mut vs = [v, VcpuMm::default()];
    let mut c = w.ctx(1);
    let out = relinquish_domain(&mut c, &mut vs);
    // DATA2 is still mapped by dom0.
    assert_eq!(out.busy_frames, 1);
    assert_eq!(vs[0], VcpuMm::default());
    assert_eq!(w.info(DATA2).count(), 1);
    for m in DOM1_BASE..N {
        if m != DATA2 {
            assert!(w.info(m).is_unreferenced(), "frame {m}: {:?}", w.info(m));
        }
    }
    let mut c = w.ctx(0);
    assert_eq!(relinquish_domain(&mut c, &mut []).busy_frames, 0);
    for m in 0..N {
        assert!(w.info(m).is_unreferenced(), "frame {m}: {:?}", w.info(m));
        w.ft.release(Mfn(m)).unwrap();
    }
}

#[test]
fn relinquish_forces_devalidation_of_unknown_holders() {
    let (mut w, v) = booted();
    // The caller "forgot" the vCPU: the root's reference is unknown to teardown.
    let mut c = w.ctx(1);
    let out = relinquish_domain(&mut c, &mut []);
    assert_eq!(out.busy_frames, 1);
    assert_eq!(w.info(L4).type_count(), 1);
    assert!(!w.info(L4).validated());
    for m in [L3, L2, L1, DATA] {
        assert!(w.info(m).is_unreferenced());
    }
    // Dropping it later finishes cleanly, without a second devalidation.
    let mut c = w.ctx(1);
    put_page_and_type(&mut c, v.kernel_root.unwrap());
    assert!(w.info(L4).is_unreferenced());
}

#[test]
fn merge_flushes() {
    let t = Flush::Local(FlushKind::Tlb);
    let i = |a| FlushKind::Invlpg(a);
    assert_eq!(Flush::None.merge(t), Some(t));
    assert_eq!(
        Flush::Local(i(1)).merge(Flush::Local(i(1))),
        Some(Flush::Local(i(1)))
    );
    assert_eq!(Flush::Local(i(1)).merge(Flush::Local(i(2))), Some(t));
    assert_eq!(
        Flush::Local(i(1)).merge(Flush::Multi(8, i(1))),
        Some(Flush::All(i(1)))
    );
    assert_eq!(
        Flush::Multi(8, i(1)).merge(Flush::Multi(8, FlushKind::Tlb)),
        Some(Flush::Multi(8, FlushKind::Tlb))
    );
    assert_eq!(
        Flush::Multi(8, i(1)).merge(Flush::Multi(16, i(1))),
        Some(Flush::All(i(1)))
    );
    assert_eq!(Flush::CacheLocal.merge(t), None);
    assert_eq!(
        Flush::CacheLocal.merge(Flush::CacheGlobal),
        Some(Flush::CacheGlobal)
    );
}

#[test]
fn errno_of_every_refusal() {
    let m = Mfn(1);
    let cases: Vec<(MmError, Errno)> = vec![
        (MmError::BadFrame(m), Errno::EINVAL),
        (
            MmError::WrongOwner {
                mfn: m,
                owner: Owner::Xen,
            },
            Errno::EINVAL,
        ),
        (MmError::NotFree(m), Errno::EBUSY),
        (MmError::BadOwner, Errno::EINVAL),
        (MmError::FrameBusy(m), Errno::EBUSY),
        (MmError::CountOverflow(m), Errno::EINVAL),
        (
            MmError::TypeConflict {
                mfn: m,
                have: PageType::L1,
                want: PageType::L2,
            },
            Errno::EINVAL,
        ),
        (
            MmError::NotTypeable {
                mfn: m,
                want: PageType::L1,
            },
            Errno::EINVAL,
        ),
        (MmError::NotValidated(m), Errno::EINVAL),
        (
            MmError::BadFlags {
                level: 2,
                bits: PSE,
            },
            Errno::EINVAL,
        ),
        (MmError::XenSlot { slot: 256 }, Errno::EINVAL),
        (
            MmError::L1NotMappable {
                mfn: m,
                why: L1Refusal::Overflow,
            },
            Errno::EBUSY,
        ),
        (MmError::IoNotPermitted(m), Errno::EPERM),
        (MmError::CacheAttrOnXenPage(m), Errno::EACCES),
        (
            MmError::NotUpdatable {
                mfn: m,
                ty: PageType::SegDesc,
            },
            Errno::EINVAL,
        ),
        (MmError::ForeignUpperUpdate, Errno::EINVAL),
        (MmError::EntryRace { level: 1 }, Errno::EBUSY),
        (MmError::EntryRace { level: 4 }, Errno::EFAULT),
        (MmError::AlreadyPinned(m), Errno::EINVAL),
        (MmError::NotPinned(m), Errno::EINVAL),
        (MmError::NoSuchDomain(DomId(9)), Errno::ESRCH),
        (MmError::NotPermitted(DomId(0)), Errno::EPERM),
        (MmError::NotSelf, Errno::EPERM),
        (MmError::MachphysForeignPt, Errno::EPERM),
        (MmError::NotPvDomain(DomId::IO), Errno::EINVAL),
        (MmError::UnknownCommand(4), Errno::ENOSYS),
        (MmError::NotSupported, Errno::EOPNOTSUPP),
        (MmError::CacheFlushDenied, Errno::EACCES),
        (MmError::CacheFlushGlobalDenied, Errno::EINVAL),
        (MmError::BadAddress(0), Errno::EINVAL),
        (MmError::NoL1(0), Errno::EINVAL),
        (MmError::BadLdt { base: 1, ents: 0 }, Errno::EINVAL),
        (MmError::BadDescriptor(m), Errno::EINVAL),
    ];
    for (e, want) in cases {
        assert_eq!(Errno::from(e), want, "{e}");
    }
}

#[test]
fn preserve_ad_race_is_refused() {
    // A machine whose cmpxchg always sees a different frame address.
    struct Racy(Mem);
    impl MachineMemory for Racy {
        fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
            self.0.read_entry(mfn, index)
        }
        fn write_entry(&mut self, mfn: Mfn, index: usize, val: u64) {
            self.0.write_entry(mfn, index, val);
        }
        fn cmpxchg_entry(&mut self, _: Mfn, _: usize, old: u64, _: u64) -> Result<(), u64> {
            Err(old ^ 0x1000)
        }
        fn zero_page(&mut self, mfn: Mfn) {
            self.0.zero_page(mfn);
        }
        fn copy_page(&mut self, dst: Mfn, src: Mfn) {
            self.0.copy_page(dst, src);
        }
    }
    let (mut w, _) = booted();
    let before = w.counts();
    let mem = core::mem::replace(&mut w.mem, Mem { pages: Vec::new() });
    let mut racy = Racy(mem);
    let mut c = MmCtx {
        ft: &mut w.ft,
        mem: &mut racy,
        slots: &w.slots,
        m2p: &mut w.m2p,
        hooks: &mut w.hooks,
        dom: DomId(1),
        privileged: false,
        io_caps: false,
        linear_pt: true,
    };
    let foreign = ForeignDomain::own(&c);
    let req = MmuUpdate::new(MmuCmd::PtUpdatePreserveAd, ma(L1, 1), pte(DATA2, P | RW));
    let r = mmu_update_entry(&mut c, req, foreign);
    assert_eq!(r, Err(MmError::EntryRace { level: 1 }));
    w.mem = racy.0;
    assert_eq!(w.counts(), before);
}

#[test]
fn the_last_reference_to_a_destroyed_domains_frame_gives_it_back() {
    use crate::mm::page_type::{get_page, put_page};
    let mut w = World::new();
    // Domain 1 owns frame 40; dom0 holds two references to it (it maps it twice).
    let f = Mfn(40);
    w.m2p.0[40] = 7;
    {
        let mut c = w.ctx(0);
        get_page(&mut c, f, DomId(1)).unwrap();
        get_page(&mut c, f, DomId(1)).unwrap();
    }
    // Domain 1 is destroyed (the hooks say only 0 and 1 exist: pretend it is 2 now).
    w.ft.info_mut(f).unwrap().owner = Owner::Domain(DomId(2));
    put_page(&mut w.ctx(0), f);
    assert_eq!(
        w.ft.owner(f),
        Some(Owner::Domain(DomId(2))),
        "one reference left"
    );
    assert!(w.hooks.orphans.is_empty());
    put_page(&mut w.ctx(0), f);
    assert_eq!(w.ft.owner(f), Some(Owner::Free), "released");
    assert_eq!(w.hooks.orphans, vec![(DomId(2), f)]);
    assert_eq!(w.m2p.0[40], !0, "its M2P entry invalidated");
    // A live domain's frame is never freed this way.
    let g = Mfn(41);
    get_page(&mut w.ctx(0), g, DomId(1)).unwrap();
    put_page(&mut w.ctx(0), g);
    assert_eq!(w.ft.owner(g), Some(Owner::Domain(DomId(1))));
}
