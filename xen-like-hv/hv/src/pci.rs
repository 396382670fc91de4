//! PCI configuration mechanism #1 on the machine (Xen's `arch/x86/pci.c`): the latch
//! and the data access made as one, under one lock, for the portable emulation
//! (`xlhv_core::pci`), and the hypervisor's PCI state.

use spin::Mutex;
use x86_64::instructions::port::Port;
use xlhv_core::pci::{CONFIG_ADDRESS, CONFIG_DATA, PciState};

/// The devices dom0 reported, read-only devices, registers the hypervisor owns.
pub static STATE: Mutex<PciState> = Mutex::new(PciState::new());

/// Xen's `acpi_mmcfg_init`: each MMCONFIG region of the `MCFG` is in use from boot
/// and its frames are read-only for every guest (`mmio_ro_ranges`); dom0 maps them
/// and reads configuration space there. Xen first checks that the firmware's memory
/// map reserves the region; that check is not made here.
pub fn init_mmcfg(regions: &[xlhv_core::mcfg::McfgRegion]) {
    let mut s = STATE.lock();
    for r in regions {
        let Some((first, last)) = r.frames() else {
            continue;
        };
        if !s.add_mcfg(*r) {
            log::warn!("PCI: too many MCFG regions; {:#x} ignored", r.base);
            continue;
        }
        crate::mmhw::mmio_ro(first, last, true);
        log::info!(
            "PCI: Using MCFG for segment {:04x} bus {:02x}-{:02x} at {:#x} (frames read-only for guests)",
            r.segment,
            r.start_bus,
            r.end_bus,
            r.base
        );
    }
}

/// ECAM pages the hypervisor mapped for dom0's emulated stores (machine page,
/// virtual address); mapped once and kept.
static ECAM_PAGES: Mutex<heapless::Vec<(u64, u64), 64>> = Mutex::new(heapless::Vec::new());

/// Xen's `pci_mmcfg_write`: `size` bytes at ECAM address `pa` (naturally aligned),
/// through the hypervisor's own uncached mapping of the page.
pub fn mmcfg_write(pa: u64, size: u8, value: u32) {
    let page = pa & !0xFFF;
    let va = {
        let mut pages = ECAM_PAGES.lock();
        match pages.iter().find(|p| p.0 == page) {
            Some(&(_, va)) => va,
            None => {
                let Some(va) = crate::arch::x86_64::paging::ioremap(page, 4096) else {
                    log::warn!("PCI: cannot map ECAM page {page:#x}; store dropped");
                    return;
                };
                if pages.push((page, va)).is_err() {
                    log::warn!("PCI: too many ECAM pages mapped; store dropped");
                    return;
                }
                va
            }
        }
    } + (pa & 0xFFF);
    let b = value.to_le_bytes();
    // SAFETY: `va` maps the ECAM page of an MMCONFIG region in use (ioremap,
    // uncached); the address is naturally aligned for `size` (the emulator checked)
    // and the write passed the configuration write filter. A configuration write
    // touches no memory of the hypervisor's.
    unsafe {
        match size {
            1 => core::ptr::write_volatile(va as *mut u8, b[0]),
            2 => core::ptr::write_volatile(va as *mut u16, u16::from_le_bytes([b[0], b[1]])),
            _ => core::ptr::write_volatile(va as *mut u32, value),
        }
    }
}

/// Serialises latch + data pairs across CPUs (Xen's `pci_config_lock`).
static CONFIG_LOCK: Mutex<()> = Mutex::new(());

/// Xen's `pci_conf_read`: `bytes` (1, 2, 4) at `CONFIG_DATA + offset` with `cf8` in
/// the latch. `offset + bytes` beyond 4 reads all ones (the callers never ask).
pub fn conf_read(cf8: u32, offset: u8, bytes: u8) -> u32 {
    if u32::from(offset) + u32::from(bytes) > 4 {
        return u32::MAX;
    }
    let data = CONFIG_DATA + u16::from(offset);
    let _guard = CONFIG_LOCK.lock();
    // SAFETY: 0xCF8/0xCFC..0xCFF are PCI configuration mechanism #1, which the
    // hypervisor uses for nothing else; the lock keeps the latch and the data access
    // together. A configuration read has no effect on the hypervisor's memory.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(cf8);
        match bytes {
            1 => u32::from(Port::<u8>::new(data).read()),
            2 => u32::from(Port::<u16>::new(data).read()),
            _ => Port::<u32>::new(data).read(),
        }
    }
}

/// Xen's `pci_conf_write`: the same for a write of `value`.
pub fn conf_write(cf8: u32, offset: u8, bytes: u8, value: u32) {
    if u32::from(offset) + u32::from(bytes) > 4 {
        return;
    }
    let data = CONFIG_DATA + u16::from(offset);
    let b = value.to_le_bytes();
    let _guard = CONFIG_LOCK.lock();
    // SAFETY: as in `conf_read`. The portable policy (`xlhv_core::pci::cfg_ok`) let
    // this write through: only the hardware domain's, never to a register the
    // hypervisor keeps; no device the hypervisor drives sits on PCI.
    unsafe {
        Port::<u32>::new(CONFIG_ADDRESS).write(cf8);
        match bytes {
            1 => Port::<u8>::new(data).write(b[0]),
            2 => Port::<u16>::new(data).write(u16::from_le_bytes([b[0], b[1]])),
            _ => Port::<u32>::new(data).write(value),
        }
    }
}
