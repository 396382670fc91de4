//! Physical devices: `physdev_op` (#33) and the legacy `physdev_op_compat`
//! (#19) (`physdev.h`).
//!
//! Mostly for the hardware domain (interrupt routing, PCI). A PV guest's
//! common use is `PHYSDEVOP_set_iopl`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, GuestPtr, Mfn};

subops! {
    /// `physdev_op` commands (`PHYSDEVOP_*`).
    pub enum PhysdevOp: "PHYSDEVOP_" {
        /// Legacy unmask-notify (no argument).
        4 => IrqUnmaskNotify(()) IRQ_UNMASK_NOTIFY since 0x0000_0000;
        /// Query an IRQ's `XENIRQSTAT_*` flags.
        5 => IrqStatusQuery(PhysdevIrqStatusQuery) irq_status_query since 0x0000_0000;
        /// Set the virtual I/O privilege level.
        6 => SetIopl(PhysdevSetIopl) set_iopl since 0x0000_0000;
        /// Set the I/O-port permission bitmap.
        7 => SetIobitmap(PhysdevSetIobitmap) set_iobitmap since 0x0000_0000;
        /// Read an I/O APIC register.
        8 => ApicRead(PhysdevApic) apic_read since 0x0000_0000;
        /// Write an I/O APIC register.
        9 => ApicWrite(PhysdevApic) apic_write since 0x0000_0000;
        /// Allocate an IRQ vector.
        10 => AllocIrqVector(PhysdevIrq) alloc_irq_vector since 0x0000_0000;
        /// Free an IRQ vector.
        11 => FreeIrqVector(PhysdevIrq) free_irq_vector since 0x0000_0000;
        /// End of interrupt for a PIRQ.
        12 => Eoi(PhysdevEoi) eoi since 0x0000_0000;
        /// Map a GSI or MSI to a PIRQ.
        13 => MapPirq(PhysdevMapPirq) map_pirq since 0x0000_0000;
        /// Unmap a PIRQ.
        14 => UnmapPirq(PhysdevUnmapPirq) unmap_pirq since 0x0000_0000;
        /// Report a PCI device.
        15 => ManagePciAdd(PhysdevManagePci) manage_pci_add since 0x0000_0000;
        /// Remove a PCI device.
        16 => ManagePciRemove(PhysdevManagePci) manage_pci_remove since 0x0000_0000;
        /// Share a PIRQ EOI bitmap frame (v1 semantics).
        17 => PirqEoiGmfnV1(PhysdevPirqEoiGmfn) pirq_eoi_gmfn_v1 since 0x0000_0000;
        /// Restore MSI state of a device.
        19 => RestoreMsi(PhysdevRestoreMsi) restore_msi since 0x0000_0000;
        /// Report a PCI device with extended information.
        20 => ManagePciAddExt(PhysdevManagePciExt) manage_pci_add_ext since 0x0000_0000;
        /// Configure a GSI's trigger and polarity.
        21 => SetupGsi(PhysdevSetupGsi) setup_gsi since 0x0000_0000;
        /// Allocate a free PIRQ.
        23 => GetFreePirq(PhysdevGetFreePirq) get_free_pirq since 0x0000_0000;
        /// Report a reserved MMCFG region.
        24 => PciMmcfgReserved(PhysdevPciMmcfgReserved) pci_mmcfg_reserved since 0x0000_0000;
        /// Report a PCI device (segment-aware).
        25 => PciDeviceAdd(PhysdevPciDeviceAdd) pci_device_add since 0x0000_0000;
        /// Remove a PCI device (segment-aware).
        26 => PciDeviceRemove(PhysdevPciDevice) pci_device_remove since 0x0000_0000;
        /// Restore MSI state (segment-aware).
        27 => RestoreMsiExt(PhysdevPciDevice) restore_msi_ext since 0x0000_0000;
        /// Share a PIRQ EOI bitmap frame (v2 semantics).
        28 => PirqEoiGmfnV2(PhysdevPirqEoiGmfn) pirq_eoi_gmfn_v2 since 0x0000_0000;
        /// USB debug port operation.
        29 => DbgpOp(PhysdevDbgpOp) dbgp_op since 0x0000_0000;
        /// Prepare MSI-X for a device.
        30 => PrepareMsix(PhysdevPciDevice) prepare_msix since 0x0000_0000;
        /// Release MSI-X of a device.
        31 => ReleaseMsix(PhysdevPciDevice) release_msix since 0x0000_0000;
    }
}

impl PhysdevOp {
    /// What the name `PHYSDEVOP_pirq_eoi_gmfn` means for a guest built
    /// against interface version `iface`.
    pub const fn pirq_eoi_gmfn_for(iface: u32) -> PhysdevOp {
        if iface < 0x0004_0200 {
            PhysdevOp::PirqEoiGmfnV1
        } else {
            PhysdevOp::PirqEoiGmfnV2
        }
    }
}

/// `PHYSDEVOP_eoi` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevEoi {
    /// The PIRQ.
    pub irq: u32,
}

/// `PHYSDEVOP_pirq_eoi_gmfn_v1`/`_v2` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPirqEoiGmfn {
    /// Frame of the EOI bitmap.
    pub gmfn: Mfn,
}

/// `irq_status_query.flags`: the IRQ needs an EOI (`XENIRQSTAT_needs_eoi`).
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// `irq_status_query.flags`: the IRQ is shared (`XENIRQSTAT_shared`).
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// `PHYSDEVOP_irq_status_query` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevIrqStatusQuery {
    /// In: the IRQ.
    pub irq: u32,
    /// Out: `XENIRQSTAT_*`.
    pub flags: u32,
}

/// `PHYSDEVOP_set_iopl` (4 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevSetIopl {
    /// The new virtual IOPL (0..=3).
    pub iopl: u32,
}

/// `PHYSDEVOP_set_iobitmap` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevSetIobitmap {
    /// The bitmap.
    pub bitmap: GuestPtr<u8>,
    /// Ports it covers.
    pub nr_ports: u32,
    /// Padding (zero).
    pub _pad: u32,
}

/// `PHYSDEVOP_apic_read`/`apic_write` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevApic {
    /// I/O APIC physical base.
    pub apic_physbase: u64,
    /// Register.
    pub reg: u32,
    /// Value read or to write.
    pub value: u32,
}

/// `PHYSDEVOP_alloc_irq_vector`/`free_irq_vector` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevIrq {
    /// The IRQ.
    pub irq: u32,
    /// The vector.
    pub vector: u32,
}

/// `physdev_map_pirq.type`: MSI (`MAP_PIRQ_TYPE_MSI`).
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
/// `physdev_map_pirq.type`: GSI (`MAP_PIRQ_TYPE_GSI`).
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
/// `physdev_map_pirq.type`: unknown (`MAP_PIRQ_TYPE_UNKNOWN`).
pub const MAP_PIRQ_TYPE_UNKNOWN: i32 = 2;
/// `physdev_map_pirq.type`: MSI with segment (`MAP_PIRQ_TYPE_MSI_SEG`).
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
/// `physdev_map_pirq.type`: multi-vector MSI (`MAP_PIRQ_TYPE_MULTI_MSI`).
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `PHYSDEVOP_map_pirq` (40 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevMapPirq {
    /// The domain.
    pub domid: DomId,
    /// Padding (zero).
    pub _pad0: u16,
    /// `MAP_PIRQ_TYPE_*`.
    pub type_: i32,
    /// GSI or MSI index.
    pub index: i32,
    /// In/out: the PIRQ.
    pub pirq: i32,
    /// PCI bus.
    pub bus: i32,
    /// PCI device/function.
    pub devfn: i32,
    /// MSI-X entry or vector count.
    pub entry_nr: i32,
    /// Padding (zero).
    pub _pad1: u32,
    /// MSI-X table base.
    pub table_base: u64,
}

/// `PHYSDEVOP_unmap_pirq` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevUnmapPirq {
    /// The domain.
    pub domid: DomId,
    /// Padding (zero).
    pub _pad: u16,
    /// The PIRQ.
    pub pirq: i32,
}

/// `PHYSDEVOP_manage_pci_add`/`remove` (2 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevManagePci {
    /// PCI bus.
    pub bus: u8,
    /// PCI device/function.
    pub devfn: u8,
}

/// `PHYSDEVOP_restore_msi` (2 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevRestoreMsi {
    /// PCI bus.
    pub bus: u8,
    /// PCI device/function.
    pub devfn: u8,
}

/// `PHYSDEVOP_manage_pci_add_ext` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevManagePciExt {
    /// PCI bus.
    pub bus: u8,
    /// PCI device/function.
    pub devfn: u8,
    /// Padding (zero).
    pub _pad0: u16,
    /// Is an extended function.
    pub is_extfn: u32,
    /// Is a virtual function.
    pub is_virtfn: u32,
    /// Physical function's bus.
    pub physfn_bus: u8,
    /// Physical function's device/function.
    pub physfn_devfn: u8,
    /// Padding (zero).
    pub _pad1: u16,
}

/// `PHYSDEVOP_setup_gsi` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevSetupGsi {
    /// The GSI.
    pub gsi: i32,
    /// Trigger mode.
    pub triggering: u8,
    /// Polarity.
    pub polarity: u8,
    /// Padding (zero).
    pub _pad: u16,
}

/// `PHYSDEVOP_get_free_pirq` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevGetFreePirq {
    /// In: `MAP_PIRQ_TYPE_*`.
    pub type_: i32,
    /// Out: the PIRQ.
    pub pirq: u32,
}

/// `PHYSDEVOP_pci_mmcfg_reserved` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPciMmcfgReserved {
    /// Region address.
    pub address: u64,
    /// PCI segment.
    pub segment: u16,
    /// First bus.
    pub start_bus: u8,
    /// Last bus.
    pub end_bus: u8,
    /// `XEN_PCI_MMCFG_RESERVED`.
    pub flags: u32,
}

/// `PHYSDEVOP_pci_device_add` fixed part (12 bytes; optional `u32`s follow).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPciDeviceAdd {
    /// PCI segment.
    pub seg: u16,
    /// PCI bus.
    pub bus: u8,
    /// PCI device/function.
    pub devfn: u8,
    /// `XEN_PCI_DEV_*`.
    pub flags: u32,
    /// Physical function's bus.
    pub physfn_bus: u8,
    /// Physical function's device/function.
    pub physfn_devfn: u8,
    /// Padding (zero).
    pub _pad: u16,
}

/// `physdev_pci_device_add.flags`: an extended function (`XEN_PCI_DEV_EXTFN`).
pub const XEN_PCI_DEV_EXTFN: u32 = 0x1;
/// `physdev_pci_device_add.flags`: a virtual function (`XEN_PCI_DEV_VIRTFN`).
pub const XEN_PCI_DEV_VIRTFN: u32 = 0x2;
/// `physdev_pci_device_add.flags`: `optarr[0]` is the proximity domain
/// (`XEN_PCI_DEV_PXM`).
pub const XEN_PCI_DEV_PXM: u32 = 0x4;

/// `physdev_pci_mmcfg_reserved.flags`: the region is reserved in the firmware's
/// memory map (`XEN_PCI_MMCFG_RESERVED`).
pub const XEN_PCI_MMCFG_RESERVED: u32 = 0x1;

/// `struct physdev_pci_device` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPciDevice {
    /// PCI segment.
    pub seg: u16,
    /// PCI bus.
    pub bus: u8,
    /// PCI device/function.
    pub devfn: u8,
}

/// `PHYSDEVOP_dbgp_op` (6 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevDbgpOp {
    /// `PHYSDEVOP_DBGP_RESET_*`.
    pub op: u8,
    /// `PHYSDEVOP_DBGP_BUS_*`.
    pub bus: u8,
    /// The PCI device (union `u.pci`).
    pub pci: PhysdevPciDevice,
}

/// `struct physdev_op` (24 bytes): the legacy `physdev_op_compat` (#19)
/// argument, a command plus the op struct in a union.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevOpCompat {
    /// A [`PhysdevOp`] number.
    pub cmd: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// The op struct's bytes (the largest member is 16).
    pub u: [u64; 2],
}

assert_layout!(PhysdevEoi, 4, irq = 0);
assert_layout!(PhysdevPirqEoiGmfn, 8, gmfn = 0);
assert_layout!(PhysdevIrqStatusQuery, 8, irq = 0, flags = 4);
assert_layout!(PhysdevSetIopl, 4, iopl = 0);
assert_layout!(PhysdevSetIobitmap, 16, bitmap = 0, nr_ports = 8);
assert_layout!(PhysdevApic, 16, apic_physbase = 0, reg = 8, value = 12);
assert_layout!(PhysdevIrq, 8, irq = 0, vector = 4);
assert_layout!(
    PhysdevMapPirq,
    40,
    domid = 0,
    type_ = 4,
    index = 8,
    pirq = 12,
    bus = 16,
    devfn = 20,
    entry_nr = 24,
    table_base = 32,
);
assert_layout!(PhysdevUnmapPirq, 8, domid = 0, pirq = 4);
assert_layout!(PhysdevManagePci, 2, bus = 0, devfn = 1);
assert_layout!(PhysdevRestoreMsi, 2, bus = 0, devfn = 1);
assert_layout!(
    PhysdevManagePciExt,
    16,
    bus = 0,
    devfn = 1,
    is_extfn = 4,
    is_virtfn = 8,
    physfn_bus = 12,
    physfn_devfn = 13,
);
assert_layout!(PhysdevSetupGsi, 8, gsi = 0, triggering = 4, polarity = 5);
assert_layout!(PhysdevGetFreePirq, 8, type_ = 0, pirq = 4);
assert_layout!(
    PhysdevPciMmcfgReserved,
    16,
    address = 0,
    segment = 8,
    start_bus = 10,
    end_bus = 11,
    flags = 12
);
assert_layout!(
    PhysdevPciDeviceAdd,
    12,
    seg = 0,
    bus = 2,
    devfn = 3,
    flags = 4,
    physfn_bus = 8,
    physfn_devfn = 9
);
assert_layout!(PhysdevPciDevice, 4, seg = 0, bus = 2, devfn = 3);
assert_layout!(PhysdevDbgpOp, 6, op = 0, bus = 1, pci = 2);
assert_layout!(PhysdevOpCompat, 24, cmd = 0, u = 8);
