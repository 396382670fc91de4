//! `hostile-xen-frame`: the hypervisor's frames are out of reach. The frame
//! the domain's own L4 slot 261 points at (a hypervisor page table) cannot
//! be mapped (`-EBUSY`), written as a page table by `mmu_update`, have its
//! M2P entry set, be pinned, cleared, unpinned or copied from (`-EINVAL`).
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp, UVMF_INVLPG};
use pv_runtime::abi::types::Pfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{
    SCRATCH_VA, expect, ext_op, ext1, fail, l1_value, l1e, mmu1, pass, read, uvm,
};

const NAME: &str = "hostile-xen-frame";

fn main(_si: &'static StartInfo) {
    let l4 = mm::kernel_root();
    let Some(l4_pfn) = mm::mfn_to_pfn(l4) else {
        fail(NAME, format_args!("L4 {l4} not in the M2P"))
    };
    let e261 = read(mm::direct_va(l4_pfn) + 261 * 8);
    if !pt::is_present(e261) {
        fail(NAME, format_args!("L4 slot 261 is empty"));
    }
    let xen = pt::entry_mfn(e261);
    expect(
        NAME,
        "slot 261 target is not ours",
        mm::mfn_to_pfn(xen),
        None,
    );
    let before = l1_value(SCRATCH_VA);
    expect(
        NAME,
        "map RW",
        uvm(SCRATCH_VA, pt::leaf(xen, PteFlags::RW), UVMF_INVLPG),
        Err(Errno::EBUSY),
    );
    expect(
        NAME,
        "map RO",
        uvm(SCRATCH_VA, pt::leaf(xen, PteFlags::empty()), UVMF_INVLPG),
        Err(Errno::EBUSY),
    );
    expect(
        NAME,
        "mmu_update map",
        mmu1(l1e(NAME, SCRATCH_VA).0, pt::leaf(xen, PteFlags::RW)),
        (Err(Errno::EBUSY), 0),
    );
    expect(
        NAME,
        "scratch entry unchanged",
        l1_value(SCRATCH_VA),
        before,
    );
    expect(
        NAME,
        "mmu_update into it",
        mmu1(xen.0 << 12, 0),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "M2P update of it",
        mmu1((xen.0 << 12) | 1, 5),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "pin as L1",
        ext1(MmuextCmd::PinL1Table, xen),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "clear",
        ext1(MmuextCmd::ClearPage, xen),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "unpin",
        ext1(MmuextCmd::UnpinTable, xen),
        Err(Errno::EINVAL),
    );
    let Some(own) = mm::pfn_to_mfn(Pfn(2)) else {
        fail(NAME, format_args!("no PFN 2"))
    };
    expect(
        NAME,
        "copy from it",
        ext_op(MmuextOp::copy_page(own, xen)),
        Err(Errno::EINVAL),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
