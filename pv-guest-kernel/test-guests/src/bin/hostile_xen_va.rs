//! `hostile-xen-va`: the hypervisor's address range (L4 slots 256..=271,
//! 0xFFFF800000000000..0xFFFF87FFFFFFFFFF) is not the guest's. Mapping a
//! page there with `update_va_mapping` (start, RO M2P, middle, last page)
//! is refused with `-EINVAL`, and so is an `mmu_update` of L4 slots 256,
//! 261 (even with its current value) and 271; slot 272, the first guest
//! slot above, takes an entry.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::Pfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{expect, fail, mmu1, pass, read, uvm};

const NAME: &str = "hostile-xen-va";

fn main(_si: &'static StartInfo) {
    let Some(own) = mm::pfn_to_mfn(Pfn(3)) else {
        fail(NAME, format_args!("no PFN 3"))
    };
    let e = pt::leaf(own, PteFlags::empty());
    for va in [
        0xFFFF_8000_0000_0000,
        0xFFFF_8000_0010_0000,
        0xFFFF_8300_0000_0000,
        0xFFFF_87FF_FFFF_F000,
    ] {
        expect(
            NAME,
            "update_va_mapping in the hypervisor range",
            (va, uvm(va, e, UVMF_INVLPG)),
            (va, Err(Errno::EINVAL)),
        );
    }
    let l4 = mm::kernel_root();
    let Some(l4_pfn) = mm::mfn_to_pfn(l4) else {
        fail(NAME, format_args!("L4 not in the M2P"))
    };
    let l4_va = mm::direct_va(l4_pfn);
    for slot in [256u64, 261, 271] {
        let current = read(l4_va + slot * 8);
        expect(
            NAME,
            "L4 slot",
            (slot, mmu1((l4.0 << 12) + slot * 8, 0)),
            (slot, (Err(Errno::EINVAL), 0)),
        );
        expect(
            NAME,
            "L4 slot, same value",
            (slot, mmu1((l4.0 << 12) + slot * 8, current)),
            (slot, (Err(Errno::EINVAL), 0)),
        );
        expect(
            NAME,
            "L4 slot unchanged",
            (slot, read(l4_va + slot * 8)),
            (slot, current),
        );
    }
    // Slot 272 is the guest's: link the L3 of slot 0 there read-only, then
    // take it out again.
    let l3 = read(l4_va) & 0x000F_FFFF_FFFF_F000;
    expect(
        NAME,
        "L4 slot 272",
        mmu1((l4.0 << 12) + 272 * 8, l3 | 1),
        (Ok(0), 1),
    );
    expect(
        NAME,
        "L4 slot 272 cleared",
        mmu1((l4.0 << 12) + 272 * 8, 0),
        (Ok(0), 1),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
