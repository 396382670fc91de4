//! `hostile-pt-writable`: a guest may not map its own page tables writable.
//! `update_va_mapping` of the L4 (in use as CR3) or of an L1 with RW, and an
//! `mmu_update` writing such an entry, are refused with `-EBUSY` (the frame
//! cannot take the writable type while it is a page table; Xen's
//! `get_page_from_l1e`), the entry is left as it was; a read-only mapping of
//! the L4 is fine, and a store through it (or through the builder's
//! read-only mapping at `pt_base`) takes a present/write #PF and changes
//! nothing.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::MachineAddr;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, mm, probe, pt};
use pv_test_guests::{
    SCRATCH_VA, check, expect, l1_value, l1e, mmu1, pass, read, record, take, uvm,
};

const NAME: &str = "hostile-pt-writable";

fn expect_write_fault(what: &str, va: u64) {
    let before = read(va);
    // SAFETY: `va` is mapped read-only (a page table); the store must fault.
    unsafe { probe::write_u64(va, 0x4141_4141) };
    let (caught, _) = take();
    check(
        NAME,
        caught.is_some_and(|c| {
            c.vector == u64::from(vector::PF) && c.error_code & 3 == 3 && c.cr2 == va
        }),
        format_args!("{what}: store gave {caught:?}"),
    );
    expect(NAME, what, read(va), before);
}

fn main(si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let l4 = mm::kernel_root();
    let l1 = l1e(NAME, SCRATCH_VA).mfn();
    let scratch = l1_value(SCRATCH_VA);
    let rw = PteFlags::RW;

    expect(
        NAME,
        "update_va_mapping L4 RW",
        uvm(SCRATCH_VA, pt::leaf(l4, rw), UVMF_INVLPG),
        Err(Errno::EBUSY),
    );
    expect(
        NAME,
        "update_va_mapping L1 RW",
        uvm(SCRATCH_VA, pt::leaf(l1, rw), UVMF_INVLPG),
        Err(Errno::EBUSY),
    );
    let ma: MachineAddr = l1e(NAME, SCRATCH_VA);
    expect(
        NAME,
        "mmu_update L1e = L4 RW",
        mmu1(ma.0, pt::leaf(l4, rw)),
        (Err(Errno::EBUSY), 0),
    );
    expect(
        NAME,
        "scratch entry unchanged",
        l1_value(SCRATCH_VA),
        scratch,
    );

    // Read-only is allowed; writing through it is not.
    expect(
        NAME,
        "update_va_mapping L4 RO",
        uvm(SCRATCH_VA, pt::leaf(l4, PteFlags::empty()), UVMF_INVLPG),
        Ok(0),
    );
    // The builder's L4, mapped read-only at pt_base.
    let l4_va = si.pt_base;
    expect(
        NAME,
        "L4 through the RO alias",
        read(SCRATCH_VA),
        read(l4_va),
    );
    expect_write_fault("store through the RO alias", SCRATCH_VA + 8);
    expect_write_fault("store to pt_base", l4_va + 16);
    expect(
        NAME,
        "restoring the scratch entry",
        uvm(SCRATCH_VA, scratch, UVMF_INVLPG),
        Ok(0),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
