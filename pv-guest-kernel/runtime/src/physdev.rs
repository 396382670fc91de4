//! Physical devices: `physdev_op` (ABI digest §6, `physdev.h`) and port I/O.
//!
//! A PV kernel runs in ring 3, so `in`/`out` fault unless the hypervisor lets
//! them through: first raise the virtual IOPL with [`set_iopl`] (Linux sets
//! 1, as Xen expects of a 64-bit PV kernel), then [`inb`]/[`outb`] trap and
//! the hypervisor emulates them on the ports the domain may use (dom0: every
//! port but the hypervisor's own devices; see `docs/mm.md`, "I/O ports").
//! Without the IOPL, an `in`/`out` raises #GP in the guest.

use core::arch::asm;

use hypercall_abi::Errno;
use hypercall_abi::hypercall::physdev_op;
use hypercall_abi::physdev::{PhysdevOp, PhysdevSetIopl};

use crate::hypercall::{handle, hc};

/// `PHYSDEVOP_set_iopl`: the virtual I/O privilege level (0..=3). A 64-bit PV
/// kernel's virtual CPL is 1, so 1 or more lets it do port I/O.
pub fn set_iopl(iopl: u32) -> Result<(), Errno> {
    let arg = PhysdevSetIopl { iopl };
    physdev_op(&mut hc(), PhysdevOp::SetIopl.nr(), handle(&arg).cast()).map(drop)
}

/// `PHYSDEVOP_map_pirq` of GSI `gsi` for this domain as pirq `pirq` (`None`:
/// any free one); returns the pirq. Only the hardware domain may.
pub fn map_pirq_gsi(gsi: u32, pirq: Option<u32>) -> Result<u32, Errno> {
    let mut arg = hypercall_abi::physdev::PhysdevMapPirq {
        domid: hypercall_abi::types::DomId::SELF,
        type_: hypercall_abi::physdev::MAP_PIRQ_TYPE_GSI,
        index: i32::try_from(gsi).unwrap_or(i32::MAX),
        pirq: pirq.map_or(-1, |p| i32::try_from(p).unwrap_or(i32::MAX)),
        ..Default::default()
    };
    physdev_op(
        &mut hc(),
        PhysdevOp::MapPirq.nr(),
        crate::hypercall::handle_mut(&mut arg).cast(),
    )?;
    u32::try_from(arg.pirq).map_err(|_| Errno::EINVAL)
}

/// `PHYSDEVOP_map_pirq` of an MSI-X entry (`table_base` non-zero: the table's
/// machine address, which Xen takes as a hint and checks against the BAR) or
/// of a device's MSI (`table_base` 0), as Linux's `xen_initdom_setup_msi_irqs`
/// asks: a new IRQ (`index` -1) and any free pirq. Returns the pirq.
pub fn map_pirq_msi(bus: u8, devfn: u8, entry_nr: u16, table_base: u64) -> Result<u32, Errno> {
    let mut arg = hypercall_abi::physdev::PhysdevMapPirq {
        domid: hypercall_abi::types::DomId::SELF,
        type_: hypercall_abi::physdev::MAP_PIRQ_TYPE_MSI,
        index: -1,
        pirq: -1,
        bus: i32::from(bus),
        devfn: i32::from(devfn),
        entry_nr: i32::from(entry_nr),
        table_base,
        ..Default::default()
    };
    physdev_op(
        &mut hc(),
        PhysdevOp::MapPirq.nr(),
        crate::hypercall::handle_mut(&mut arg).cast(),
    )?;
    u32::try_from(arg.pirq).map_err(|_| Errno::EINVAL)
}

/// `PHYSDEVOP_unmap_pirq` of this domain's `pirq` (an MSI's vector is freed).
pub fn unmap_pirq(pirq: u32) -> Result<(), Errno> {
    let arg = hypercall_abi::physdev::PhysdevUnmapPirq {
        domid: hypercall_abi::types::DomId::SELF,
        pirq: i32::try_from(pirq).unwrap_or(i32::MAX),
        ..Default::default()
    };
    physdev_op(&mut hc(), PhysdevOp::UnmapPirq.nr(), handle(&arg).cast()).map(drop)
}

/// `PHYSDEVOP_setup_gsi`: GSI `gsi` becomes level-triggered (else edge) and
/// active low (else high). Hardware domain only; -EEXIST once set up or bound.
pub fn setup_gsi(gsi: u32, level: bool, active_low: bool) -> Result<(), Errno> {
    let arg = hypercall_abi::physdev::PhysdevSetupGsi {
        gsi: i32::try_from(gsi).unwrap_or(i32::MAX),
        triggering: u8::from(level),
        polarity: u8::from(active_low),
        _pad: 0,
    };
    physdev_op(&mut hc(), PhysdevOp::SetupGsi.nr(), handle(&arg).cast()).map(drop)
}

/// `PHYSDEVOP_eoi`: end of interrupt for `pirq` (a level-triggered IRQ stays
/// masked until then).
pub fn eoi(pirq: u32) -> Result<(), Errno> {
    let arg = hypercall_abi::physdev::PhysdevEoi { irq: pirq };
    physdev_op(&mut hc(), PhysdevOp::Eoi.nr(), handle(&arg).cast()).map(drop)
}

/// `PHYSDEVOP_irq_status_query`: the `XENIRQSTAT_*` flags of `pirq`.
pub fn irq_status_query(pirq: u32) -> Result<u32, Errno> {
    let mut arg = hypercall_abi::physdev::PhysdevIrqStatusQuery {
        irq: pirq,
        flags: 0,
    };
    physdev_op(
        &mut hc(),
        PhysdevOp::IrqStatusQuery.nr(),
        crate::hypercall::handle_mut(&mut arg).cast(),
    )?;
    Ok(arg.flags)
}

/// Reads a byte from I/O port `port`.
///
/// # Safety
///
/// The guest must own the device behind `port` and the read must be one the
/// device's driver expects (reads can have side effects, such as taking a
/// byte out of a UART's FIFO). The virtual IOPL must allow port I/O
/// ([`set_iopl`]), or the instruction raises #GP.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller guarantees the device at `port` may be read; the
    // instruction touches no memory and no stack.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes a byte to I/O port `port`.
///
/// # Safety
///
/// The guest must own the device behind `port`, and the write must not make
/// it touch memory the guest does not mean it to (a DMA engine, say). The
/// virtual IOPL must allow port I/O ([`set_iopl`]), or the instruction raises
/// #GP.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the write is what the device expects;
    // the instruction touches no memory and no stack.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags));
    }
}

/// Reads 16 bits from I/O port `port`.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in ax, dx", out("ax") value, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Reads 32 bits from I/O port `port`.
///
/// # Safety
///
/// As for [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: as for `inb`.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Writes 16 bits to I/O port `port`.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags));
    }
}

/// Writes 32 bits to I/O port `port`.
///
/// # Safety
///
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags));
    }
}

/// The configuration-mechanism-#1 address (the value for port 0xCF8) of
/// register `reg` (dword-aligned) of PCI function `bus:dev.func`.
pub fn cf8_address(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    1 << 31
        | u32::from(bus) << 16
        | u32::from(dev & 31) << 11
        | u32::from(func & 7) << 8
        | u32::from(reg & 0xFC)
}

/// Reads a dword of PCI configuration space through ports 0xCF8/0xCFC, which
/// the hypervisor emulates for the domain that owns PCI (dom0).
///
/// # Safety
///
/// As for [`inb`]; and the caller is the only user of 0xCF8/0xCFC on this
/// vCPU (the latch write and the data read must not interleave with another
/// pair).
pub unsafe fn pci_conf_read32(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    // SAFETY: as the caller promised.
    unsafe {
        outl(0xCF8, cf8_address(bus, dev, func, reg));
        inl(0xCFC)
    }
}

/// Writes a dword of PCI configuration space through ports 0xCF8/0xCFC.
///
/// # Safety
///
/// As for [`pci_conf_read32`]; and the write must not break a device another
/// driver uses.
pub unsafe fn pci_conf_write32(bus: u8, dev: u8, func: u8, reg: u8, value: u32) {
    // SAFETY: as the caller promised.
    unsafe {
        outl(0xCF8, cf8_address(bus, dev, func, reg));
        outl(0xCFC, value);
    }
}

/// Writes the 16-bit register `reg` (even) of PCI configuration space through
/// ports 0xCF8/0xCFC+(reg & 2): the only width the hypervisor lets through to an
/// MSI-X control register, as Xen's.
///
/// # Safety
///
/// As for [`pci_conf_write32`].
pub unsafe fn pci_conf_write16(bus: u8, dev: u8, func: u8, reg: u8, value: u16) {
    // SAFETY: as the caller promised.
    unsafe {
        outl(0xCF8, cf8_address(bus, dev, func, reg));
        outw(0xCFC + u16::from(reg & 2), value);
    }
}

/// `PHYSDEVOP_pci_mmcfg_reserved`: tells the hypervisor that the MMCONFIG region
/// at `address` (segment, buses) is reserved by the firmware (`reserved`), as
/// Linux's `xen_mcfg_late` does for each `MCFG` entry. dom0 only.
pub fn pci_mmcfg_reserved(
    address: u64,
    segment: u16,
    start_bus: u8,
    end_bus: u8,
    reserved: bool,
) -> Result<(), Errno> {
    let arg = hypercall_abi::physdev::PhysdevPciMmcfgReserved {
        address,
        segment,
        start_bus,
        end_bus,
        flags: if reserved {
            hypercall_abi::physdev::XEN_PCI_MMCFG_RESERVED
        } else {
            0
        },
    };
    physdev_op(
        &mut hc(),
        PhysdevOp::PciMmcfgReserved.nr(),
        handle(&arg).cast(),
    )
    .map(drop)
}

/// `PHYSDEVOP_pci_device_add`: tells the hypervisor about PCI function
/// `seg:bus:devfn` (`XEN_PCI_DEV_*` `flags`), as Linux's Xen PCI notifier does
/// for every device it finds. dom0 only (`-EPERM` otherwise).
pub fn pci_device_add(seg: u16, bus: u8, devfn: u8, flags: u32) -> Result<(), Errno> {
    let arg = hypercall_abi::physdev::PhysdevPciDeviceAdd {
        seg,
        bus,
        devfn,
        flags,
        ..Default::default()
    };
    physdev_op(&mut hc(), PhysdevOp::PciDeviceAdd.nr(), handle(&arg).cast()).map(drop)
}
