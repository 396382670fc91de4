//! `hostile-retype`: a frame in use as a page table cannot change type.
//! Pinning the L4 as an L1 or L3, pinning an L1 in use as an L2, loading an
//! L1 as CR3 (`NEW_BASEPTR`), clearing it or copying into it
//! (`CLEAR_PAGE`/`COPY_PAGE` need the writable type), using it as a GDT
//! frame, linking the L4 where an L1 belongs (L2 entry) or an L1 where an
//! L2 belongs (L3 entry): all `-EINVAL`. Pinning the L1 as what it is works
//! (and unpins again).
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp};
use pv_runtime::abi::types::Pfn;
use pv_runtime::hypercall::{handle_slice, invoker};
use pv_runtime::{StartInfo, mm};
use pv_test_guests::{SCRATCH_VA, expect, ext_op, ext1, fail, mmu1, pass, read};

const NAME: &str = "hostile-retype";
/// An unused L2 slot (VA 200 MiB) and L3 slot (VA 100 GiB).
const L2_SLOT: u64 = 100;
const L3_SLOT: u64 = 100;

fn main(_si: &'static StartInfo) {
    let l4 = mm::kernel_root();
    let (Some(l3), Some(l2), Some(l1)) = (
        mm::entry_address(SCRATCH_VA, 3),
        mm::entry_address(SCRATCH_VA, 2),
        mm::entry_address(SCRATCH_VA, 1),
    ) else {
        fail(NAME, format_args!("no tables for {SCRATCH_VA:#x}"))
    };
    let (l3, l2, l1) = (l3.mfn(), l2.mfn(), l1.mfn());
    expect(
        NAME,
        "pin L4 as L1",
        ext1(MmuextCmd::PinL1Table, l4),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "pin L4 as L3",
        ext1(MmuextCmd::PinL3Table, l4),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "pin L1 as L2",
        ext1(MmuextCmd::PinL2Table, l1),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "NEW_BASEPTR L1",
        ext1(MmuextCmd::NewBaseptr, l1),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "CLEAR_PAGE L1",
        ext1(MmuextCmd::ClearPage, l1),
        Err(Errno::EINVAL),
    );
    let Some(own) = mm::pfn_to_mfn(Pfn(2)) else {
        fail(NAME, format_args!("no PFN 2"))
    };
    expect(
        NAME,
        "COPY_PAGE into L1",
        ext_op(MmuextOp::copy_page(l1, own)),
        Err(Errno::EINVAL),
    );
    let frames = [l1];
    // SAFETY: the frame list is a live local.
    let mut inv = unsafe { invoker() };
    expect(
        NAME,
        "set_gdt L1",
        hc::set_gdt(&mut inv, handle_slice(&frames), 3),
        Err(Errno::EINVAL),
    );
    let l2_entry = (l2.0 << 12) + L2_SLOT * 8;
    let l3_entry = (l3.0 << 12) + L3_SLOT * 8;
    let Some(l2_va) = mm::mfn_to_pfn(l2).map(mm::direct_va) else {
        fail(NAME, format_args!("L2 not in the M2P"))
    };
    expect(NAME, "L2 slot free", read(l2_va + L2_SLOT * 8), 0);
    expect(
        NAME,
        "L2 entry -> L4 RO",
        mmu1(l2_entry, (l4.0 << 12) | 1),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "L2 entry -> L4 RW",
        mmu1(l2_entry, (l4.0 << 12) | 3),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "L3 entry -> L1 RO",
        mmu1(l3_entry, (l1.0 << 12) | 1),
        (Err(Errno::EINVAL), 0),
    );
    expect(NAME, "L2 slot still free", read(l2_va + L2_SLOT * 8), 0);
    expect(NAME, "pin L1 as L1", ext1(MmuextCmd::PinL1Table, l1), Ok(0));
    expect(NAME, "unpin it", ext1(MmuextCmd::UnpinTable, l1), Ok(0));
    pass(NAME)
}

pv_runtime::entry!(main);
