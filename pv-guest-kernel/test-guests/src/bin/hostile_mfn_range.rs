//! `hostile-mfn-range`: out-of-range machine frames. A leaf entry naming
//! MFN 2^40-1 (the largest a PTE can hold) is refused with `-EINVAL` and
//! MFN 2^36-1 (above RAM, not I/O memory the hardware domain may map) with
//! `-EPERM`; `mmu_update` on an entry in frame 2^40-1, an M2P update of it,
//! and pinning it are refused with `-EINVAL`.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextCmd, UVMF_INVLPG};
use pv_runtime::abi::types::Mfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, pt};
use pv_test_guests::{SCRATCH_VA, expect, ext1, l1_value, l1e, mmu1, pass, uvm};

const NAME: &str = "hostile-mfn-range";
const TOP: Mfn = Mfn((1 << 40) - 1);
const HIGH: Mfn = Mfn((1 << 36) - 1);

fn main(_si: &'static StartInfo) {
    let before = l1_value(SCRATCH_VA);
    for (what, flags) in [("RW", PteFlags::RW), ("RO", PteFlags::empty())] {
        expect(
            NAME,
            what,
            uvm(SCRATCH_VA, pt::leaf(TOP, flags), UVMF_INVLPG),
            Err(Errno::EINVAL),
        );
        expect(
            NAME,
            what,
            uvm(SCRATCH_VA, pt::leaf(HIGH, flags), UVMF_INVLPG),
            Err(Errno::EPERM),
        );
    }
    expect(
        NAME,
        "mmu_update of MFN 2^40-1",
        mmu1(l1e(NAME, SCRATCH_VA).0, pt::leaf(TOP, PteFlags::empty())),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "scratch entry unchanged",
        l1_value(SCRATCH_VA),
        before,
    );
    expect(
        NAME,
        "mmu_update into frame 2^40-1",
        mmu1(TOP.0 << 12, 0),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "M2P update of 2^40-1",
        mmu1((TOP.0 << 12) | 1, 5),
        (Err(Errno::EINVAL), 0),
    );
    expect(
        NAME,
        "pin 2^40-1",
        ext1(MmuextCmd::PinL1Table, TOP),
        Err(Errno::EINVAL),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
