//! `hostile-pci`: a domU reaches no PCI device, as on Xen 4.17. With I/O
//! privilege level 1 it may execute `in`/`out`, but a 32-bit `out` to 0xCF8 only
//! sets its own latch (it reads back what it wrote), configuration data at
//! 0xCFC reads all ones, and `PHYSDEVOP_pci_device_add` is `-EPERM`. Frames
//! outside its RAM, a device's BAR (the VGA framebuffer at 0xFD000000 on
//! QEMU's `pc` and `q35`) or the VGA text buffer in the first MiB, cannot be
//! mapped, by `update_va_mapping` or by `mmu_update` through `DOMID_IO`:
//! `-EPERM` (it has no I/O-memory permission); asked uncached, `-EINVAL`
//! first (Xen's `l1_disallow_mask`: cache attributes need I/O capability).
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuUpdate, UVMF_INVLPG};
use pv_runtime::abi::types::{DomId, Mfn};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::hypercall::{handle_mut, handle_slice, invoker};
use pv_runtime::{StartInfo, physdev, pt};
use pv_test_guests::{SCRATCH_VA, expect, l1_value, l1e, pass, uvm};

const NAME: &str = "hostile-pci";
const FRAMEBUFFER: Mfn = Mfn(0xF_D000);
const VGA_TEXT: Mfn = Mfn(0xB8);

/// One `mmu_update` with foreign domain `fd`.
fn mmu_fd(ptr: u64, val: u64, fd: DomId) -> Result<u64, Errno> {
    let req = [MmuUpdate { ptr, val }];
    let mut done = 0u32;
    // SAFETY: the request and `done` are live locals the hypervisor reads and
    // writes.
    let mut inv = unsafe { invoker() };
    hc::mmu_update(
        &mut inv,
        handle_slice(&req),
        1,
        handle_mut(&mut done),
        u32::from(fd.0),
    )
}

fn main(_si: &'static StartInfo) {
    expect(NAME, "set_iopl(1)", physdev::set_iopl(1), Ok(()));
    let latch = 0x8000_1800u32; // 00:03.0, register 0
    // SAFETY: as a domU these reach no device: the hypervisor emulates the
    // latch per domain and gives configuration data only to the hardware
    // domain.
    let (back, data) = unsafe {
        physdev::outl(0xCF8, latch);
        (physdev::inl(0xCF8), physdev::inl(0xCFC))
    };
    expect(NAME, "the latch reads back", back, latch);
    expect(NAME, "configuration data", data, u32::MAX);
    expect(
        NAME,
        "PHYSDEVOP_pci_device_add",
        physdev::pci_device_add(0, 0, 3 << 3, 0),
        Err(Errno::EPERM),
    );
    let before = l1_value(SCRATCH_VA);
    let uc = PteFlags::PCD | PteFlags::PWT;
    for (what, mfn) in [("framebuffer", FRAMEBUFFER), ("VGA text", VGA_TEXT)] {
        for (flags, err) in [
            (PteFlags::RW, Errno::EPERM),
            (PteFlags::empty(), Errno::EPERM),
            (uc, Errno::EINVAL),
        ] {
            let e = pt::leaf(mfn, flags);
            expect(
                NAME,
                what,
                (what, uvm(SCRATCH_VA, e, UVMF_INVLPG)),
                (what, Err(err)),
            );
            expect(
                NAME,
                what,
                (what, mmu_fd(l1e(NAME, SCRATCH_VA).0, e, DomId::IO)),
                (what, Err(err)),
            );
        }
    }
    expect(
        NAME,
        "scratch entry unchanged",
        l1_value(SCRATCH_VA),
        before,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
