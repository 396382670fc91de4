//! `hostile-linear-pt` (XSA-182): a read-only self-referencing L4 entry
//! (a "linear" page table) is allowed, and reading through it shows the L4;
//! turning on RW in that entry, or writing a writable self-reference
//! directly, is refused with `-EINVAL` (a writable linear mapping would let
//! the guest write its own page tables).
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::{StartInfo, mm};
use pv_test_guests::{expect, fail, mmu1, pass, read};

const NAME: &str = "hostile-linear-pt";
const SLOT: u64 = 300;

/// The address at which a self-map in `SLOT` shows the L4 itself.
const fn self_va() -> u64 {
    let va = (SLOT << 39) | (SLOT << 30) | (SLOT << 21) | (SLOT << 12);
    // Sign-extend bit 47.
    va | 0xFFFF_0000_0000_0000
}

fn main(_si: &'static StartInfo) {
    let l4 = mm::kernel_root();
    let Some(pfn) = mm::mfn_to_pfn(l4) else {
        fail(NAME, format_args!("L4 not in the M2P"))
    };
    let l4_va = mm::direct_va(pfn);
    let entry = (l4.0 << 12) + SLOT * 8;
    expect(NAME, "slot free", read(l4_va + SLOT * 8), 0);
    expect(
        NAME,
        "read-only self map",
        mmu1(entry, (l4.0 << 12) | 1),
        (Ok(0), 1),
    );
    expect(
        NAME,
        "L4 through the self map",
        read(self_va()),
        read(l4_va),
    );
    expect(
        NAME,
        "flip RW on",
        mmu1(entry, (l4.0 << 12) | 3),
        (Err(Errno::EINVAL), 0),
    );
    expect(NAME, "entry still read-only", read(l4_va + SLOT * 8) & 2, 0);
    expect(NAME, "clear", mmu1(entry, 0), (Ok(0), 1));
    expect(
        NAME,
        "writable self map",
        mmu1(entry, (l4.0 << 12) | 3),
        (Err(Errno::EINVAL), 0),
    );
    expect(NAME, "slot empty", read(l4_va + SLOT * 8), 0);
    pass(NAME)
}

pv_runtime::entry!(main);
