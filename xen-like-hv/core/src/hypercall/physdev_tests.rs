//! `physdev_op`'s PCI device reports (`hypercall::physdev`), as Xen 4.17 answers them.

use super::*;
use crate::pci::Sbdf;
use crate::testutil::*;
use hypercall_abi::hypercall as hc;
use hypercall_abi::physdev::{
    PhysdevManagePci, PhysdevManagePciExt, PhysdevOp, PhysdevOpCompat, PhysdevPciDevice,
    PhysdevPciDeviceAdd, XEN_PCI_DEV_EXTFN, XEN_PCI_DEV_PXM, XEN_PCI_DEV_VIRTFN,
};

fn op(w: &mut World, op: PhysdevOp) -> Result<u64, Errno> {
    hc::physdev_op(w, op.nr(), ptr(KDATA))
}

fn add(seg: u16, bus: u8, devfn: u8, flags: u32) -> PhysdevPciDeviceAdd {
    PhysdevPciDeviceAdd {
        seg,
        bus,
        devfn,
        flags,
        ..Default::default()
    }
}

fn sbdf(seg: u16, bus: u8, devfn: u8) -> Sbdf {
    Sbdf { seg, bus, devfn }
}

#[test]
fn dom0_adds_and_removes_devices() {
    let mut w = World::dom0();
    w.p.poke_obj(KDATA, &add(0, 0, 3 << 3, 0));
    assert_eq!(op(&mut w, PhysdevOp::PciDeviceAdd), Ok(0));
    assert_eq!(op(&mut w, PhysdevOp::PciDeviceAdd), Ok(0), "again: fine");
    assert_eq!(w.p.pci.devices().len(), 1);
    w.p.poke_obj(
        KDATA,
        &PhysdevPciDevice {
            seg: 0,
            bus: 0,
            devfn: 3 << 3,
        },
    );
    assert_eq!(op(&mut w, PhysdevOp::PciDeviceRemove), Ok(0));
    assert_eq!(
        op(&mut w, PhysdevOp::PciDeviceRemove),
        Err(Errno::ENODEV),
        "gone"
    );
    assert!(w.p.pci.devices().is_empty());
}

#[test]
fn flags_extfn_virtfn_and_pxm() {
    let mut w = World::dom0();
    let mut a = add(0, 1, 0x11, XEN_PCI_DEV_VIRTFN | XEN_PCI_DEV_EXTFN);
    a.physfn_bus = 1;
    a.physfn_devfn = 0x10;
    w.p.poke_obj(KDATA, &a);
    assert_eq!(op(&mut w, PhysdevOp::PciDeviceAdd), Ok(0));
    let vf = w.p.pci.device(sbdf(0, 1, 0x11)).copied().unwrap();
    assert!(vf.is_extfn);
    assert_eq!(vf.physfn, Some((1, 0x10)));
    assert!(
        w.p.pci.device(sbdf(0, 1, 0x10)).is_some(),
        "the physical function was added first"
    );
    // PXM: optarr[0] is read and ignored (one NUMA node).
    w.p.poke_obj(KDATA, &add(0, 2, 0, XEN_PCI_DEV_PXM));
    assert_eq!(op(&mut w, PhysdevOp::PciDeviceAdd), Ok(0));
}

#[test]
fn manage_pci_forms() {
    let mut w = World::dom0();
    w.p.poke_obj(KDATA, &PhysdevManagePci { bus: 0, devfn: 8 });
    assert_eq!(op(&mut w, PhysdevOp::ManagePciAdd), Ok(0));
    assert!(w.p.pci.device(sbdf(0, 0, 8)).is_some());
    assert_eq!(op(&mut w, PhysdevOp::ManagePciRemove), Ok(0));
    assert_eq!(op(&mut w, PhysdevOp::ManagePciRemove), Err(Errno::ENODEV));
    let ext = PhysdevManagePciExt {
        bus: 0,
        devfn: 9,
        is_extfn: 2,
        ..Default::default()
    };
    w.p.poke_obj(KDATA, &ext);
    assert_eq!(op(&mut w, PhysdevOp::ManagePciAddExt), Err(Errno::EINVAL));
    w.p.poke_obj(KDATA, &PhysdevManagePciExt { is_extfn: 1, ..ext });
    assert_eq!(op(&mut w, PhysdevOp::ManagePciAddExt), Ok(0));
    assert!(w.p.pci.device(sbdf(0, 0, 9)).is_some_and(|d| d.is_extfn));
    // The compat form takes the union in place.
    let mut u = [0u64; 2];
    u[0] = u64::from(u16::from_le_bytes([0, 10]));
    w.p.poke_obj(
        KDATA,
        &PhysdevOpCompat {
            cmd: PhysdevOp::ManagePciAdd.nr(),
            _pad: 0,
            u,
        },
    );
    assert_eq!(hc::physdev_op_compat(&mut w, ptr(KDATA)), Ok(0));
    assert!(w.p.pci.device(sbdf(0, 0, 10)).is_some());
}

#[test]
fn a_domu_is_refused_after_the_copy_and_the_flag_checks() {
    let mut w = World::kernel();
    for cmd in [
        PhysdevOp::PciDeviceAdd,
        PhysdevOp::PciDeviceRemove,
        PhysdevOp::ManagePciAdd,
        PhysdevOp::ManagePciRemove,
        PhysdevOp::ManagePciAddExt,
        PhysdevOp::PciMmcfgReserved,
    ] {
        assert_eq!(
            hc::physdev_op(&mut w, cmd.nr(), ptr(UNMAPPED)),
            Err(Errno::EFAULT),
            "{cmd:?}"
        );
        w.p.poke_obj(KDATA, &[0u8; 16]);
        assert_eq!(op(&mut w, cmd), Err(Errno::EPERM), "{cmd:?}");
    }
    w.p.poke_obj(
        KDATA,
        &PhysdevManagePciExt {
            is_virtfn: 7,
            ..Default::default()
        },
    );
    assert_eq!(op(&mut w, PhysdevOp::ManagePciAddExt), Err(Errno::EINVAL));
    assert!(w.p.pci.devices().is_empty());
}

#[test]
fn mmcfg_reserved_as_xen_answers() {
    use hypercall_abi::physdev::PhysdevPciMmcfgReserved;
    let mut w = World::dom0();
    let q35 = crate::mcfg::McfgRegion {
        base: 0xB000_0000,
        segment: 0,
        start_bus: 0,
        end_bus: 0xFF,
    };
    let r = |address, end_bus, flags| PhysdevPciMmcfgReserved {
        address,
        segment: 0,
        start_bus: 0,
        end_bus,
        flags,
    };
    // no MCFG (pc): -ENODEV
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0xFF, 1));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Err(Errno::ENODEV));
    assert!(w.p.pci.add_mcfg(q35));
    // unknown flags first, then the region's buses, then its address
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0xFF, 3));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Err(Errno::EINVAL));
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0x7F, 1));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Err(Errno::ENODEV));
    w.p.poke_obj(KDATA, &r(0xC000_0000, 0xFF, 1));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Err(Errno::EIO));
    // in use from boot: reserving it again changes nothing
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0xFF, 1));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Ok(0));
    assert!(w.p.mmio_ro.is_empty());
    // not reserved: the hypervisor stops using it; reserved again: in use, its
    // frames read-only (they stayed so)
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0xFF, 0));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Ok(0));
    assert_eq!(w.p.pci.mcfg(), [(q35, false)]);
    w.p.poke_obj(KDATA, &r(0xB000_0000, 0xFF, 1));
    assert_eq!(op(&mut w, PhysdevOp::PciMmcfgReserved), Ok(0));
    assert_eq!(w.p.pci.mcfg(), [(q35, true)]);
    assert_eq!(w.p.mmio_ro, [(0xB0000, 0xBFFFF, true)]);
}

#[test]
fn msi_map_pirq_refusals_in_xens_order() {
    use crate::ioapic::{Polarity, Trigger};
    use hypercall_abi::physdev::{
        MAP_PIRQ_TYPE_MSI, MAP_PIRQ_TYPE_MSI_SEG, MAP_PIRQ_TYPE_MULTI_MSI, PhysdevMapPirq,
    };
    let map = |type_, table_base| PhysdevMapPirq {
        domid: hypercall_abi::types::DomId::SELF,
        type_,
        index: -1,
        pirq: -1,
        bus: 0,
        devfn: 4 << 3,
        entry_nr: 1,
        table_base,
        ..Default::default()
    };
    let mut w = World::dom0();
    w.p.irqs
        .init(24, 1, |_| (Trigger::Edge, Polarity::High), &[]);
    // a device dom0 did not report: -ENODEV, the pirq left as it was
    for ty in [MAP_PIRQ_TYPE_MSI, MAP_PIRQ_TYPE_MSI_SEG] {
        w.p.poke_obj(KDATA, &map(ty, 0xFEBF_1000));
        assert_eq!(op(&mut w, PhysdevOp::MapPirq), Err(Errno::ENODEV));
        let back: PhysdevMapPirq = w.p.peek_obj(KDATA);
        assert_eq!((back.pirq, back.index), (-1, -1));
    }
    // MULTI_MSI with a table base: -EINVAL before anything; without: not offered
    w.p.poke_obj(KDATA, &map(MAP_PIRQ_TYPE_MULTI_MSI, 0xFEBF_1000));
    assert_eq!(op(&mut w, PhysdevOp::MapPirq), Err(Errno::EINVAL));
    w.p.poke_obj(KDATA, &map(MAP_PIRQ_TYPE_MULTI_MSI, 0));
    assert_eq!(op(&mut w, PhysdevOp::MapPirq), Err(Errno::EOPNOTSUPP));
    // a domU: -EPERM (the control domain only)
    let mut u = World::kernel();
    u.p.irqs
        .init(24, 1, |_| (Trigger::Edge, Polarity::High), &[]);
    u.p.poke_obj(KDATA, &map(MAP_PIRQ_TYPE_MSI, 0xFEBF_1000));
    assert_eq!(op(&mut u, PhysdevOp::MapPirq), Err(Errno::EPERM));
}
