//! `hostile-mfn0`: frames that are not the domain's RAM but I/O memory.
//! On Xen, MFN 0 (the first MiB belongs to `DOMID_IO`) and frames in the
//! PCI hole (3 GiB) are I/O memory the hardware domain holds I/O-memory
//! permission for, so as dom0 Xen 4.17 lets the guest map them, writable,
//! read-only and uncached (PCD|PWT: a domain with I/O permission may choose
//! cache attributes), and read them (MFN 0 holds the real-mode interrupt
//! vector table); only the frames Xen keeps for itself, such as the local
//! APIC, are refused (`-EPERM`). A domain without I/O permission would get
//! `-EPERM` for all of them. The scratch entry is restored afterwards.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::Mfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{SCRATCH_VA, expect, l1_value, pass, read, record, take, uvm};

const NAME: &str = "hostile-mfn0";
const PCI_HOLE: Mfn = Mfn(0xC_0000);
const LAPIC: Mfn = Mfn(0xF_EE00);

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let before = l1_value(SCRATCH_VA);
    let uc = PteFlags::PCD | PteFlags::PWT;
    for (what, flags) in [("RW", PteFlags::RW), ("RO", PteFlags::empty()), ("UC", uc)] {
        expect(
            NAME,
            "map MFN 0",
            (what, uvm(SCRATCH_VA, pt::leaf(Mfn(0), flags), UVMF_INVLPG)),
            (what, Ok(0)),
        );
    }
    expect(
        NAME,
        "entry",
        mm::translate(SCRATCH_VA).map(|p| p.mfn()),
        Some(Mfn(0)),
    );
    let ivt = read(SCRATCH_VA);
    let (caught, _) = take();
    expect(NAME, "reading MFN 0 faulted", caught, None);
    expect(
        NAME,
        "reading MFN 0 returned the IVT (not zero)",
        ivt != 0,
        true,
    );
    expect(
        NAME,
        "map a PCI-hole frame UC",
        uvm(SCRATCH_VA, pt::leaf(PCI_HOLE, uc), UVMF_INVLPG),
        Ok(0),
    );
    expect(
        NAME,
        "map the local APIC",
        uvm(SCRATCH_VA, pt::leaf(LAPIC, uc), UVMF_INVLPG),
        Err(Errno::EPERM),
    );
    expect(
        NAME,
        "restoring the scratch entry",
        uvm(SCRATCH_VA, before, UVMF_INVLPG),
        Ok(0),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
