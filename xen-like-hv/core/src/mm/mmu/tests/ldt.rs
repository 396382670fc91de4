//! The LDT (Xen's `MMUEXT_SET_LDT`, `pv_map_ldt_shadow_page`, `pv_destroy_ldt`): pages
//! become descriptor pages when the CPU first reads them, stay so while the LDT is in
//! use, and go back to ordinary memory when it changes or the domain goes.

use hypercall_abi::mmu::{MmuextCmd, MmuextOp};

use super::*;
use crate::mm::mmu::{LDT_PAGES, destroy_ldt, map_ldt_page, relinquish_domain};

const L4: u64 = DOM1_BASE;
const L3: u64 = DOM1_BASE + 1;
const L2: u64 = DOM1_BASE + 2;
const L1: u64 = DOM1_BASE + 3;
/// Two pages of LDT, mapped read-only at linear 0x1000 and 0x2000.
const LDT0: u64 = DOM1_BASE + 4;
const LDT1: u64 = DOM1_BASE + 5;
/// A second set of tables (another L4 for NEW_BASEPTR).
const L4B: u64 = DOM1_BASE + 6;
const L3B: u64 = DOM1_BASE + 7;
const L2B: u64 = DOM1_BASE + 8;
const L1B: u64 = DOM1_BASE + 9;
/// A dom0 frame.
const FOREIGN: u64 = DOM0_BASE + 10;

const DATA_DPL0: u64 = 0x00CF_9200_0000_FFFF;
const DATA_DPL3: u64 = 0x00CF_F200_0000_FFFF;
/// A DPL-3 call gate naming the hypervisor's code selector 0xE008.
const GATE_TO_HV: u64 = (1 << 47) | (0xC << 40) | (3 << 45) | (0xE008 << 16);

/// dom1 with its kernel tables at L4, linear 0x1000 -> LDT0 and 0x2000 -> LDT1, both
/// read-only; LDT0 holds a DPL-0 data descriptor at entry 1.
fn booted() -> (World, VcpuMm) {
    let mut w = World::new();
    w.chain(L4, L3, L2, L1, (0, 0, 0));
    w.poke(LDT0, 1, DATA_DPL0);
    w.poke(L1, 1, pte(LDT0, P | A));
    w.poke(L1, 2, pte(LDT1, P | A));
    w.pin(1, 4, L4).unwrap();
    let mut v = VcpuMm::default();
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4)),
    )
    .unwrap();
    w.ext(1, &mut v, MmuextOp::set_ldt(0x1000, 1024)).unwrap();
    (w, v)
}

fn map(w: &mut World, v: &mut VcpuMm, offset: u64) -> Result<Mfn, MmError> {
    map_ldt_page(&mut w.ctx(1), v, offset)
}

#[test]
fn set_ldt_maps_nothing_by_itself() {
    let (w, v) = booted();
    assert_eq!((v.ldt_base, v.ldt_ents), (0x1000, 1024));
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
    assert_eq!(w.info(LDT0).page_type(), PageType::None);
    assert_eq!(
        w.info(LDT0).count(),
        1,
        "only the guest's read-only mapping"
    );
}

#[test]
fn first_read_makes_the_page_a_descriptor_page_with_its_descriptors_fixed_up() {
    let (mut w, mut v) = booted();
    assert_eq!(map(&mut w, &mut v, 8), Ok(Mfn(LDT0)));
    assert_eq!(v.ldt_frames[0], Some(Mfn(LDT0)));
    let f = w.info(LDT0);
    assert_eq!(
        (f.page_type(), f.type_count(), f.count()),
        (PageType::SegDesc, 1, 2)
    );
    assert_eq!(w.read(LDT0, 1), DATA_DPL3, "DPL raised to 3 in place");
    // Again (another CPU, or after a context switch): nothing more is taken.
    assert_eq!(map(&mut w, &mut v, 0xFF8), Ok(Mfn(LDT0)));
    assert_eq!(w.info(LDT0).type_count(), 1);
    // The second page is its own.
    assert_eq!(map(&mut w, &mut v, 0x1000), Ok(Mfn(LDT1)));
    assert_eq!(v.ldt_frames[1], Some(Mfn(LDT1)));
}

#[test]
fn a_live_ldt_page_cannot_be_mapped_writable_until_the_ldt_changes() {
    let (mut w, mut v) = booted();
    map(&mut w, &mut v, 0).unwrap();
    let writable = pte(LDT0, P | RW | A);
    let r = w.mmu(1, L1, 3, writable);
    assert_eq!(
        r,
        Err(MmError::L1NotMappable {
            mfn: Mfn(LDT0),
            why: crate::mm::error::L1Refusal::Type(PageType::SegDesc)
        })
    );
    assert_eq!(r.unwrap_err().errno(), hypercall_abi::Errno::EBUSY);
    // A new LDT drops the old one's pages: now they are ordinary memory again.
    w.ext(1, &mut v, MmuextOp::set_ldt(0x2000, 8)).unwrap();
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
    assert_eq!(w.info(LDT0).type_count(), 0);
    assert_eq!(w.info(LDT0).count(), 1);
    w.mmu(1, L1, 3, writable).unwrap();
    // And a page mapped writable cannot become an LDT page.
    w.ext(1, &mut v, MmuextOp::set_ldt(0x1000, 16)).unwrap();
    assert!(matches!(
        map(&mut w, &mut v, 0),
        Err(MmError::TypeConflict { .. })
    ));
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
}

#[test]
fn a_page_with_a_gate_into_the_hypervisor_is_refused_and_left_as_it_was() {
    let (mut w, mut v) = booted();
    w.poke(LDT1, 7, GATE_TO_HV);
    w.poke(LDT1, 3, DATA_DPL0);
    assert_eq!(
        map(&mut w, &mut v, 0x1000),
        Err(MmError::BadDescriptor(Mfn(LDT1)))
    );
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
    let f = w.info(LDT1);
    assert_eq!(
        (f.page_type(), f.type_count(), f.count()),
        (PageType::None, 0, 1)
    );
    assert_eq!(w.read(LDT1, 3), DATA_DPL0, "nothing fixed up on refusal");
}

#[test]
fn offsets_past_the_limit_unmapped_pages_and_foreign_frames_fail() {
    let (mut w, mut v) = booted();
    // Entry 1024 is past ldt_ents.
    assert!(matches!(
        map(&mut w, &mut v, 1024 * 8),
        Err(MmError::BadLdt { .. })
    ));
    // Linear 0x3000 is not mapped.
    w.ext(1, &mut v, MmuextOp::set_ldt(0x3000, 16)).unwrap();
    assert_eq!(map(&mut w, &mut v, 0), Err(MmError::NoL1(0x3000)));
    // Linear 0x4000 maps a frame of dom0 (dom1 may not, but the table is poked).
    w.poke(L1, 4, pte(FOREIGN, P | A | U));
    w.ext(1, &mut v, MmuextOp::set_ldt(0x4000, 16)).unwrap();
    assert_eq!(map(&mut w, &mut v, 0), Err(MmError::BadFrame(Mfn(FOREIGN))));
    // A base whose pages run into the non-canonical hole.
    w.ext(1, &mut v, MmuextOp::set_ldt((1 << 47) - 0x1000, 8192))
        .unwrap();
    assert!(map(&mut w, &mut v, 0x1000).is_err());
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
}

#[test]
fn new_baseptr_drops_the_pages_found_through_the_old_tables() {
    let (mut w, mut v) = booted();
    map(&mut w, &mut v, 0).unwrap();
    w.chain(L4B, L3B, L2B, L1B, (0, 0, 0));
    w.poke(L1B, 1, pte(LDT1, P | A));
    w.pin(1, 4, L4B).unwrap();
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4B)),
    )
    .unwrap();
    assert_eq!(v.ldt_frames, [None; LDT_PAGES]);
    assert_eq!(w.info(LDT0).type_count(), 0);
    // The same linear address now finds the page the new tables map there.
    assert_eq!(map(&mut w, &mut v, 0), Ok(Mfn(LDT1)));
    // The same base again changes nothing.
    w.ext(
        1,
        &mut v,
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4B)),
    )
    .unwrap();
    assert_eq!(v.ldt_frames[0], Some(Mfn(LDT1)));
}

#[test]
fn destroy_and_teardown_give_every_reference_back() {
    let (mut w, mut v) = booted();
    map(&mut w, &mut v, 0).unwrap();
    map(&mut w, &mut v, 0x1000).unwrap();
    assert!(destroy_ldt(&mut w.ctx(1), &mut v));
    assert!(!destroy_ldt(&mut w.ctx(1), &mut v));
    map(&mut w, &mut v, 0).unwrap();
    let mut vs = [v];
    let _ = relinquish_domain(&mut w.ctx(1), &mut vs);
    assert_eq!(vs[0].ldt_frames, [None; LDT_PAGES]);
    assert_eq!((vs[0].ldt_base, vs[0].ldt_ents), (0, 0));
    for m in [LDT0, LDT1] {
        assert_eq!(w.info(m).type_count(), 0, "{m}");
    }
}
