//! `hostile-m2p-write`: the M2P at 0xFFFF800000000000 is readable and
//! read-only. Reads agree with the P2M for the domain's frames (first,
//! middle, last PFN, the L4); a store to it takes a present/write #PF and
//! changes nothing. `MMU_MACHPHYS_UPDATE` is the legitimate way to change
//! an entry of one's own frame (and back).
#![no_std]
#![no_main]

use pv_runtime::abi::types::Pfn;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, mm, probe};
use pv_test_guests::{check, expect, fail, mmu1, pass, read, record, take};

const NAME: &str = "hostile-m2p-write";

fn main(si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    for pfn in [0, 1, si.nr_pages / 2, si.nr_pages - 1] {
        let Some(mfn) = mm::pfn_to_mfn(Pfn(pfn)) else {
            fail(NAME, format_args!("no MFN for PFN {pfn:#x}"))
        };
        let va = mm::M2P_VIRT_START + mfn.0 * 8;
        expect(NAME, "M2P entry", (pfn, read(va)), (pfn, pfn));
        let (caught, _) = take();
        expect(NAME, "reading the M2P faulted", caught.map(|c| c.cr2), None);
        // SAFETY: a store to the read-only M2P: it must fault.
        unsafe { probe::write_u64(va, 0x4242) };
        let (caught, _) = take();
        check(
            NAME,
            caught.is_some_and(|c| {
                c.vector == u64::from(vector::PF) && c.error_code & 3 == 3 && c.cr2 == va
            }),
            format_args!("store to the M2P at {va:#x}: {caught:?}"),
        );
        expect(
            NAME,
            "M2P entry after the store",
            (pfn, read(va)),
            (pfn, pfn),
        );
    }
    let pfn = si.nr_pages - 1;
    let Some(mfn) = mm::pfn_to_mfn(Pfn(pfn)) else {
        fail(NAME, format_args!("no MFN for the last PFN"))
    };
    let va = mm::M2P_VIRT_START + mfn.0 * 8;
    expect(
        NAME,
        "MMU_MACHPHYS_UPDATE",
        mmu1((mfn.0 << 12) | 1, 0x1234),
        (Ok(0), 1),
    );
    expect(NAME, "M2P after MMU_MACHPHYS_UPDATE", read(va), 0x1234);
    expect(
        NAME,
        "MMU_MACHPHYS_UPDATE back",
        mmu1((mfn.0 << 12) | 1, pfn),
        (Ok(0), 1),
    );
    expect(NAME, "M2P restored", mm::mfn_to_pfn(mfn), Some(Pfn(pfn)));
    pass(NAME)
}

pv_runtime::entry!(main);
