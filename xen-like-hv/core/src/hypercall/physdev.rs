//! `physdev_op`'s PCI device reports (`docs/devices.md`): `PHYSDEVOP_manage_pci_add`,
//! `_remove`, `_add_ext`, `PHYSDEVOP_pci_device_add` and `_remove`, as Xen 4.17's
//! `do_physdev_op` and `pci_add_device`/`pci_remove_device` answer them.
//!
//! Order of the checks, as Xen's: the argument is copied (`-EFAULT`), the flags of
//! `manage_pci_add_ext` are checked (`-EINVAL`), then the caller's privilege (Xen's
//! `xsm_resource_plug_pci`/`unplug_pci`, `XSM_PRIV`: `-EPERM` for a domU). Adding a
//! device already known succeeds and updates it; adding a virtual function adds its
//! physical function first when that is unknown; removing an unknown device is
//! `-ENODEV`. Xen does not check that the device answers in configuration space, and
//! neither does this. The records (`crate::pci::PciState`) are what the interrupt
//! code consults for MSI; the hypervisor has no IOMMU to program.

use super::{HvError, HvResult};
use crate::pci::{PciDevice, Sbdf};
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::Errno;
use hypercall_abi::physdev::{
    PhysdevManagePci, PhysdevManagePciExt, PhysdevOp, PhysdevPciDevice, PhysdevPciDeviceAdd,
    PhysdevPciMmcfgReserved, XEN_PCI_DEV_EXTFN, XEN_PCI_DEV_PXM, XEN_PCI_DEV_VIRTFN,
};

/// One of the PCI report commands, argument at guest address `arg`.
pub fn pci_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, op: PhysdevOp, arg: u64) -> HvResult {
    let dev = |seg, bus, devfn| Sbdf { seg, bus, devfn };
    match op {
        PhysdevOp::ManagePciAdd => {
            let m: PhysdevManagePci = ctx.p.read_obj(arg)?;
            add_device(ctx, dev(0, m.bus, m.devfn), false, None)
        }
        PhysdevOp::ManagePciRemove => {
            let m: PhysdevManagePci = ctx.p.read_obj(arg)?;
            remove_device(ctx, dev(0, m.bus, m.devfn))
        }
        PhysdevOp::ManagePciAddExt => {
            let m: PhysdevManagePciExt = ctx.p.read_obj(arg)?;
            if m.is_extfn > 1 || m.is_virtfn > 1 {
                return Err(Errno::EINVAL.into());
            }
            let physfn = (m.is_virtfn != 0).then_some((m.physfn_bus, m.physfn_devfn));
            add_device(ctx, dev(0, m.bus, m.devfn), m.is_extfn != 0, physfn)
        }
        PhysdevOp::PciDeviceAdd => {
            let a: PhysdevPciDeviceAdd = ctx.p.read_obj(arg)?;
            if a.flags & XEN_PCI_DEV_PXM != 0 {
                // optarr[0], the proximity domain: read (it must be readable), and
                // ignored, as on a machine with one NUMA node.
                let _pxm: u32 = ctx.p.read_obj(arg.wrapping_add(12))?;
            }
            let physfn =
                (a.flags & XEN_PCI_DEV_VIRTFN != 0).then_some((a.physfn_bus, a.physfn_devfn));
            add_device(
                ctx,
                dev(a.seg, a.bus, a.devfn),
                a.flags & XEN_PCI_DEV_EXTFN != 0,
                physfn,
            )
        }
        PhysdevOp::PciDeviceRemove => {
            let d: PhysdevPciDevice = ctx.p.read_obj(arg)?;
            remove_device(ctx, dev(d.seg, d.bus, d.devfn))
        }
        PhysdevOp::PciMmcfgReserved => {
            let r: PhysdevPciMmcfgReserved = ctx.p.read_obj(arg)?;
            // xsm_resource_setup_misc (XSM_PRIV).
            if !ctx.dom.privileged {
                return Err(HvError::NotPrivileged);
            }
            let (a, seg, sb, eb, fl) = (r.address, r.segment, r.start_bus, r.end_bus, r.flags);
            let newly = ctx.p.pci(|s| s.mmcfg_reserved(a, seg, sb, eb, fl))?;
            if let Some((first, last)) = newly {
                ctx.p.mmio_ro(first, last, true);
            }
            log::info!(
                "PCI: MMCONFIG segment {seg:04x} bus {sb:02x}-{eb:02x} at {a:#x}: {}",
                if fl != 0 {
                    "reserved, in use"
                } else {
                    "not used"
                }
            );
            Ok(0)
        }
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// Xen's `pci_add_device`.
fn add_device<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    sbdf: Sbdf,
    is_extfn: bool,
    physfn: Option<(u8, u8)>,
) -> HvResult {
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    // Xen's `alloc_pdev` looks for the MSI-X capability (`pdev->msix`).
    let msix = msix_cap(ctx.p, sbdf);
    let pf_msix = physfn.and_then(|(bus, devfn)| {
        msix_cap(
            ctx.p,
            Sbdf {
                seg: sbdf.seg,
                bus,
                devfn,
            },
        )
    });
    let msi_of = |msix_pos| crate::msi::DevMsi {
        msix_pos,
        msi_masked: None,
    };
    let r = ctx.p.pci(|s| {
        if let Some((bus, devfn)) = physfn {
            let pf = Sbdf {
                seg: sbdf.seg,
                bus,
                devfn,
            };
            if s.device(pf).is_none() {
                s.add_device(PciDevice {
                    sbdf: pf,
                    is_extfn: false,
                    physfn: None,
                    msi: msi_of(pf_msix),
                })?;
            }
        }
        s.add_device(PciDevice {
            sbdf,
            is_extfn,
            physfn,
            msi: msi_of(msix),
        })
    });
    r.map_err(Errno::from)?;
    log::debug!("PCI add device {sbdf}");
    Ok(0)
}

/// Configuration space of one function through the platform (segment 0 only).
pub(crate) struct PlatformCfg<'a, P: Platform>(pub &'a mut P, pub Sbdf);

impl<P: Platform> crate::msi::CfgRead for PlatformCfg<'_, P> {
    fn read8(&mut self, reg: u16) -> u8 {
        if self.1.seg != 0 || reg >= 256 {
            return 0xFF;
        }
        let cf8 = crate::pci::cf8_of(self.1.bus, self.1.devfn, reg);
        let b = self.0.pci_conf_read(cf8, (reg & 3) as u8, 1);
        b.to_le_bytes()[0]
    }
}

/// The MSI-X capability of `sbdf`, if it has one.
fn msix_cap<P: Platform>(p: &mut P, sbdf: Sbdf) -> Option<u16> {
    crate::msi::find_cap(&mut PlatformCfg(p, sbdf), crate::msi::CAP_ID_MSIX)
}

/// Xen's `pci_remove_device`.
fn remove_device<P: Platform>(ctx: &mut GuestCtx<'_, P>, sbdf: Sbdf) -> HvResult {
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    ctx.p.pci(|s| s.remove_device(sbdf)).map_err(Errno::from)?;
    log::debug!("PCI remove device {sbdf}");
    Ok(0)
}
