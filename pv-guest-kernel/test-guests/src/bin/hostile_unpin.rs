//! `hostile-unpin`: unpinning a table that is not pinned (an L1 in use) is
//! refused with `-EINVAL`. Unpinning the L4 in use as CR3 succeeds, but the
//! table stays validated because the base pointer holds its own reference:
//! the guest keeps running on it and its mappings keep working; unpinning
//! it again is `-EINVAL`, pinning it again succeeds and a second pin is
//! `-EINVAL`.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextCmd, UVMF_INVLPG};
use pv_runtime::{StartInfo, mm};
use pv_test_guests::{SCRATCH_VA, expect, ext1, l1_value, l1e, pass, uvm};

const NAME: &str = "hostile-unpin";

fn main(_si: &'static StartInfo) {
    let l4 = mm::kernel_root();
    let l1 = l1e(NAME, SCRATCH_VA).mfn();
    expect(
        NAME,
        "unpin an unpinned L1",
        ext1(MmuextCmd::UnpinTable, l1),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "unpin the L4 in use",
        ext1(MmuextCmd::UnpinTable, l4),
        Ok(0),
    );
    // Still a working L4: the tables under it can be edited.
    let e = l1_value(SCRATCH_VA);
    expect(
        NAME,
        "update_va_mapping after the unpin",
        uvm(SCRATCH_VA, e, UVMF_INVLPG),
        Ok(0),
    );
    let v: u64 = core::hint::black_box(41) + 1;
    expect(NAME, "still running", v, 42);
    expect(
        NAME,
        "unpin it again",
        ext1(MmuextCmd::UnpinTable, l4),
        Err(Errno::EINVAL),
    );
    expect(NAME, "pin it again", ext1(MmuextCmd::PinL4Table, l4), Ok(0));
    expect(
        NAME,
        "pin it twice",
        ext1(MmuextCmd::PinL4Table, l4),
        Err(Errno::EINVAL),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
