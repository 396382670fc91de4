//! PCI configuration space through mechanism #1 (0xCF8/0xCFC), which the hypervisor
//! emulates for dom0 as Xen does (`docs/devices.md`).

use dom0_core::pci::ConfigSpace;

/// Configuration mechanism #1.
#[derive(Debug)]
pub struct Cf8 {
    _private: (),
}

impl Cf8 {
    /// The mechanism, once the virtual IOPL allows port I/O.
    pub fn new() -> Self {
        Cf8 { _private: () }
    }
}

impl ConfigSpace for Cf8 {
    fn read32(&mut self, bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
        // SAFETY: 0xCF8 (32-bit) is dom0's emulated latch and 0xCFC its emulated
        // data port; dom0 is the only user of configuration space in this kernel and
        // runs on one vCPU, so the two accesses are not interleaved with another pair.
        unsafe { pv_runtime::physdev::pci_conf_read32(bus, dev, func, reg) }
    }

    fn write32(&mut self, bus: u8, dev: u8, func: u8, reg: u8, value: u32) {
        // SAFETY: as in `read32`; the scan writes only the command register (decoding
        // off, then restored) and BARs (sizing, then restored), before any driver
        // uses the devices.
        unsafe { pv_runtime::physdev::pci_conf_write32(bus, dev, func, reg, value) }
    }
}

/// Scans the buses, prints one line per function and reports each to the
/// hypervisor (`PHYSDEVOP_pci_device_add`, as Linux's Xen PCI notifier does).
pub fn scan_and_report() -> alloc::vec::Vec<dom0_core::pci::Function> {
    let fns = dom0_core::pci::scan(&mut Cf8::new());
    for f in &fns {
        pv_runtime::println!("dom0: pci {f}");
        if let Err(e) = pv_runtime::physdev::pci_device_add(0, f.bus, f.devfn(), 0) {
            pv_runtime::println!(
                "dom0: PHYSDEVOP_pci_device_add {:02x}:{:02x}.{}: {e}",
                f.bus,
                f.dev,
                f.func
            );
        }
    }
    pv_runtime::println!("dom0: pci: {} functions", fns.len());
    fns
}
