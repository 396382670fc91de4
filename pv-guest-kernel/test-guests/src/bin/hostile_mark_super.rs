//! `hostile-mark-super`: superpage marking is gone from Xen (XSA-167 era):
//! `MMUEXT_MARK_SUPER` and `MMUEXT_UNMARK_SUPER` answer `-EOPNOTSUPP`, for
//! one of the domain's frames and for an out-of-range one alike.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::MmuextCmd;
use pv_runtime::abi::types::{Mfn, Pfn};
use pv_runtime::{StartInfo, mm};
use pv_test_guests::{expect, ext1, fail, pass};

const NAME: &str = "hostile-mark-super";

fn main(_si: &'static StartInfo) {
    let Some(own) = mm::pfn_to_mfn(Pfn(0x200)) else {
        fail(NAME, format_args!("no PFN 0x200"))
    };
    for mfn in [own, Mfn((1 << 40) - 1)] {
        expect(
            NAME,
            "MARK_SUPER",
            (mfn, ext1(MmuextCmd::MarkSuper, mfn)),
            (mfn, Err(Errno::EOPNOTSUPP)),
        );
        expect(
            NAME,
            "UNMARK_SUPER",
            (mfn, ext1(MmuextCmd::UnmarkSuper, mfn)),
            (mfn, Err(Errno::EOPNOTSUPP)),
        );
    }
    pass(NAME)
}

pv_runtime::entry!(main);
