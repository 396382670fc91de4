//! `hpet-ro`: the HPET is mappable read-only by dom0, as Xen 4.17's default
//! `ro-hpet` allows (its frame is in `mmio_ro_ranges`): a writable mapping is
//! accepted and written without RW (and uncached), and the registers read (the
//! capabilities word has a vendor and a revision). ACPI code in a Linux dom0
//! reads the HPET this way. A naturally aligned store through the mapping is
//! emulated and dropped (Xen's `mmio_ro_do_page_fault`): no fault, the register
//! unchanged; a misaligned one is the #PF it was. The scratch entry is restored
//! afterwards.
//!
//! Result line: `hpet-ro: PASS`.
#![no_std]
#![no_main]

use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::Mfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, probe, pt};
use pv_test_guests::{SCRATCH_VA, expect, l1_value, pass, read, record, take, uvm};

const NAME: &str = "hpet-ro";
/// The HPET's registers on QEMU's `pc` and `q35` (its ACPI table's address).
const HPET: Mfn = Mfn(0xF_ED00);
const RW: u64 = 1 << 1;
const PWT: u64 = 1 << 3;
const PCD: u64 = 1 << 4;

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let before = l1_value(SCRATCH_VA);
    expect(
        NAME,
        "map the HPET writable",
        uvm(SCRATCH_VA, pt::leaf(HPET, PteFlags::RW), UVMF_INVLPG),
        Ok(0),
    );
    let e = l1_value(SCRATCH_VA);
    expect(NAME, "the entry's frame", e >> 12 & 0xff_ffff_ffff, HPET.0);
    expect(NAME, "the entry's RW", e & RW, 0);
    expect(
        NAME,
        "the entry's cache bits (UC)",
        e & (PWT | PCD),
        PWT | PCD,
    );
    let caps = read(SCRATCH_VA);
    let (caught, _) = take();
    expect(
        NAME,
        "reading the HPET faulted",
        caught.map(|c| c.vector),
        None,
    );
    // General capabilities: revision (bits 0-7) and vendor (bits 16-31) are set.
    expect(NAME, "HPET revision", caps & 0xff != 0, true);
    expect(NAME, "HPET vendor", (caps >> 16) & 0xffff != 0, true);
    // The general configuration register (offset 0x10): an aligned store of its
    // value with ENABLE_CNF flipped is dropped without a fault.
    let cfg = SCRATCH_VA + 0x10;
    let before_cfg = read(cfg);
    // SAFETY: `cfg` is device memory mapped read-only; the hypervisor drops the
    // store (or it faults and `record` skips it); nothing of Rust's lives there.
    unsafe { probe::write_u64(cfg, before_cfg ^ 1) };
    let (caught, _) = take();
    expect(
        NAME,
        "an aligned store to the HPET faulted",
        caught.map(|c| c.vector),
        None,
    );
    expect(
        NAME,
        "the HPET's configuration after the store",
        read(cfg),
        before_cfg,
    );
    // A misaligned store is not emulated: #PF (present, write) at its address.
    // SAFETY: as above.
    unsafe { probe::write_u64(cfg + 1, 0) };
    let (caught, _) = take();
    expect(
        NAME,
        "a misaligned store to the HPET",
        caught.map(|c| (c.vector, c.error_code & 3, c.cr2)),
        Some((u64::from(vector::PF), 3, cfg + 1)),
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
