//! `hostile-foreign-frame`: a RAM frame outside the domain's P2M (the frame
//! just below its lowest MFN: free memory or the hypervisor's) cannot be
//! mapped, writable or read-only, by `update_va_mapping` or `mmu_update`:
//! `-EBUSY` (Xen's `get_page_from_l1e`: the frame's owner is not the
//! domain), and the entry stays as it was.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::{Mfn, Pfn};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{SCRATCH_VA, expect, fail, l1_value, l1e, mmu1, pass, uvm};

const NAME: &str = "hostile-foreign-frame";

fn main(si: &'static StartInfo) {
    let lowest = (0..si.nr_pages)
        .filter_map(|p| mm::pfn_to_mfn(Pfn(p)))
        .map(|m| m.0)
        .min()
        .unwrap_or(0);
    if lowest == 0 {
        fail(NAME, format_args!("no frame below the lowest MFN"));
    }
    let foreign = Mfn(lowest - 1);
    expect(NAME, "the frame is not ours", mm::mfn_to_pfn(foreign), None);
    let before = l1_value(SCRATCH_VA);
    for (what, flags) in [("RW", PteFlags::RW), ("RO", PteFlags::empty())] {
        let e = pt::leaf(foreign, flags);
        expect(
            NAME,
            what,
            uvm(SCRATCH_VA, e, UVMF_INVLPG),
            Err(Errno::EBUSY),
        );
        expect(
            NAME,
            what,
            mmu1(l1e(NAME, SCRATCH_VA).0, e),
            (Err(Errno::EBUSY), 0),
        );
    }
    expect(
        NAME,
        "scratch entry unchanged",
        l1_value(SCRATCH_VA),
        before,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
