//! Regression tests modelled on Xen's PV-MMU security advisories (digest §5.9) that
//! apply to this model.

use hypercall_abi::Errno;
use hypercall_abi::mmu::{MmuextCmd, MmuextOp, UVMF_ALL, UVMF_INVLPG, UVMF_TLB_FLUSH};

use super::*;

const L4: u64 = DOM1_BASE;
const L3: u64 = DOM1_BASE + 1;
const L2: u64 = DOM1_BASE + 2;
const L1: u64 = DOM1_BASE + 3;

fn booted() -> (World, VcpuMm) {
    let mut w = World::new();
    w.chain(L4, L3, L2, L1, (0, 0, 0));
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

/// XSA-182: a read-only self-referencing L4 entry is allowed; flipping only its RW
/// bit must be refused (a writable self-map would give the guest its own PTEs).
#[test]
fn xsa_182_writable_self_map_refused() {
    let (mut w, _) = booted();
    // Map the L4 read-only at VA 4K.
    w.mmu(1, L1, 1, pte(L4, P)).unwrap();
    // RO self-reference: allowed.
    w.mmu(1, L4, 1, pte(L4, P | A)).unwrap();
    let before = w.counts();
    let entry = w.read(L4, 1);
    // Flip RW only: refused, entry and counts unchanged.
    let r = w.mmu(1, L4, 1, entry | RW);
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(w.read(L4, 1), entry);
    assert_eq!(w.counts(), before);
    // The same through an L3/L2 self-map, and through validation of a fresh table.
    w.mmu(1, L2, 1, pte(L2, P)).unwrap();
    assert!(w.mmu(1, L2, 1, pte(L2, P | RW)).is_err());
    let fresh = DOM1_BASE + 20;
    w.poke(fresh, 3, pte(fresh, P | RW));
    assert_eq!(w.pin(1, 4, fresh).unwrap_err().errno(), Errno::EINVAL);
    // A RW mapping of the L4 through the L1 is refused as well.
    assert_eq!(
        w.mmu(1, L1, 1, pte(L4, P | RW)).unwrap_err().errno(),
        Errno::EBUSY
    );
}

/// XSA-148 (and the superpage rule): PSE in an L2 or L3 entry is refused, by update
/// and by validation.
#[test]
fn xsa_148_superpages_refused() {
    let (mut w, _) = booted();
    let data = DOM1_BASE + 10;
    let r = w.mmu(1, L2, 1, pte(data, P | RW | PSE));
    assert_eq!(
        r,
        Err(MmError::BadFlags {
            level: 2,
            bits: PSE
        })
    );
    let r = w.mmu(1, L3, 1, pte(data, P | RW | PSE));
    assert_eq!(
        r,
        Err(MmError::BadFlags {
            level: 3,
            bits: PSE
        })
    );
    let fresh = DOM1_BASE + 11;
    w.poke(fresh, 0, pte(data, P | RW | PSE));
    assert_eq!(w.pin(1, 2, fresh).unwrap_err().errno(), Errno::EINVAL);
    assert!(w.info(data).is_unreferenced());
    assert!(w.info(fresh).is_unreferenced());
}

/// XSA-167: MMUEXT_MARK_SUPER / UNMARK_SUPER are not supported (on any MFN).
#[test]
fn xsa_167_mark_super_unsupported() {
    let (mut w, mut v) = booted();
    for mfn in [L1, u64::MAX, 1 << 40] {
        for cmd in [MmuextCmd::MarkSuper, MmuextCmd::UnmarkSuper] {
            let r = w.ext(1, &mut v, MmuextOp::on_frame(cmd, Mfn(mfn)));
            assert_eq!(r, Err(MmError::NotSupported));
            assert_eq!(r.unwrap_err().errno(), Errno::EOPNOTSUPP);
        }
    }
}

/// XSA-224 / XSA-234 accounting: a frame still mapped writable cannot be pinned as a
/// page table (-EINVAL); once the writable mapping goes, it can.
#[test]
fn xsa_224_pin_of_writable_frame_refused() {
    let (mut w, _) = booted();
    let page = DOM1_BASE + 10;
    w.mmu(1, L1, 2, pte(page, P | RW)).unwrap();
    assert_eq!(w.pin(1, 1, page).unwrap_err().errno(), Errno::EINVAL);
    // Read-only mapping keeps no writable reference.
    w.mmu(1, L1, 2, pte(page, P)).unwrap();
    w.pin(1, 1, page).unwrap();
}

/// XSA-279: update_va_mapping on a non-canonical address must fail cleanly; so must
/// addresses in the hypervisor's range and at the edges.
#[test]
fn xsa_279_non_canonical_va_no_crash() {
    let (mut w, v) = booted();
    let root = v.kernel_root.unwrap().0;
    for bad in [
        1u64 << 63,
        1 << 47,
        0x0000_8000_0000_0000,
        0x7fff_ffff_ffff_ffff,
        0xffff_7fff_ffff_f000,
        0xffff_8000_0000_0000,
        0xffff_8000_0000_1000,
        0xffff_87ff_ffff_f000,
    ] {
        for flags in [
            0,
            UVMF_INVLPG | UVMF_ALL,
            UVMF_TLB_FLUSH,
            UVMF_INVLPG | 0xdead_0000,
        ] {
            let r = w.uvm(1, root, bad, 0, flags);
            assert_eq!(r, Err(MmError::BadAddress(bad)));
        }
    }
    // First guest address above the hypervisor's range: a normal (unmapped) address.
    let top = 0xffff_8800_0000_0000;
    assert_eq!(w.uvm(1, root, top, 0, 0), Err(MmError::NoL1(top)));
}

/// XSA-286: after an L3 entry is switched to another L2 in the same batch, the next
/// update_va_mapping must edit the L1 under the *new* L2 (no stale linear mapping).
#[test]
fn xsa_286_no_stale_linear_mapping() {
    let (mut w, v) = booted();
    let root = v.kernel_root.unwrap().0;
    let (l2b, l1b) = (DOM1_BASE + 10, DOM1_BASE + 11);
    let data = DOM1_BASE + 12;
    w.poke(l2b, 0, pte(l1b, P | RW | U));
    w.pin(1, 2, l2b).unwrap();
    w.pin(1, 2, L2).unwrap();
    let addr = va(0, 0, 0, 5);
    // The "multicall": zap, switch L3e to the second L2, map.
    w.uvm(1, root, addr, 0, 0).unwrap();
    let flush = w.mmu(1, L3, 0, pte(l2b, P | RW | U)).unwrap();
    assert_eq!(flush, Flush::All(super::super::FlushKind::Tlb));
    w.uvm(1, root, addr, pte(data, P | RW), UVMF_INVLPG)
        .unwrap();
    assert_eq!(w.read(l1b, 5), pte(data, P | RW | U | GK));
    assert_eq!(w.read(L1, 5), 0);
}
