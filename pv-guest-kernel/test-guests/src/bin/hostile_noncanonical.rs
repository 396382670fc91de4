//! `hostile-noncanonical` (XSA-279 and friends): non-canonical addresses.
//! `update_va_mapping(1 << 63, 0, UVMF_INVLPG | UVMF_ALL)` (the XSA-279
//! reproducer) and `update_va_mapping` of the first non-canonical address
//! are refused with `-EINVAL` without harming the hypervisor;
//! `MMUEXT_INVLPG_LOCAL`/`_ALL` of a non-canonical address succeed (Xen
//! skips the flush); an `mmu_update` whose entry address has bit 63 set is
//! `-EINVAL`. The domain keeps running.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp, UVMF_ALL, UVMF_INVLPG, UVMF_TLB_FLUSH};
use pv_runtime::abi::types::Pfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{expect, ext_op, fail, mmu1, pass, read};

const NAME: &str = "hostile-noncanonical";

fn main(_si: &'static StartInfo) {
    expect(
        NAME,
        "XSA-279",
        pv_test_guests::uvm(1 << 63, 0, UVMF_INVLPG | UVMF_ALL),
        Err(Errno::EINVAL),
    );
    let Some(own) = mm::pfn_to_mfn(Pfn(3)) else {
        fail(NAME, format_args!("no PFN 3"))
    };
    let e = pt::leaf(own, PteFlags::empty());
    for va in [1u64 << 63, 0x0000_8000_0000_0000, 0xFFFF_7FFF_FFFF_F000] {
        expect(
            NAME,
            "map a non-canonical address",
            (va, pv_test_guests::uvm(va, e, UVMF_TLB_FLUSH)),
            (va, Err(Errno::EINVAL)),
        );
    }
    expect(
        NAME,
        "INVLPG_LOCAL",
        ext_op(MmuextOp::new(MmuextCmd::InvlpgLocal, 1 << 63, 0)),
        Ok(0),
    );
    expect(
        NAME,
        "INVLPG_ALL",
        ext_op(MmuextOp::new(
            MmuextCmd::InvlpgAll,
            0x0000_8000_0000_0000,
            0,
        )),
        Ok(0),
    );
    expect(
        NAME,
        "mmu_update at 1 << 63",
        mmu1(1 << 63, 0),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "still running",
        read(mm::direct_va(Pfn(3))) == read(mm::direct_va(Pfn(3))),
        true,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
