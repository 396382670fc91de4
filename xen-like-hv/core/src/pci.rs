//! PCI configuration space for the hardware domain, mediated as Xen 4.17 mediates it
//! for a PV dom0 (`docs/devices.md`, "PCI configuration space").
//!
//! A PV dom0 reaches configuration space through configuration mechanism #1: it writes
//! an address to `CONFIG_ADDRESS` (0xCF8, a 32-bit access) and then reads or writes
//! `CONFIG_DATA` (0xCFC..0xCFF, 1, 2 or 4 bytes). Both are emulated
//! (`ioport::guest_io_read`/`guest_io_write`, Xen's functions of the same names):
//!
//! - a 32-bit access to 0xCF8 never reaches the hardware; it reads or writes the
//!   domain's own latch (`Domain::pci_cf8`, Xen's `d->arch.pci_cf8`). Every domain has
//!   one, so a domU with I/O privilege level reads back what it wrote, as on Xen;
//! - an access to 0xCFC..0xCFF is split into the pieces a data register gives (at most
//!   to the end of the dword, and a 3-byte piece as 2 + 1), and each piece is made on
//!   the hardware (`Platform::pci_conf_read`/`pci_conf_write`: latch, then data, under
//!   one lock) if [`cfg_ok`] says so, else it reads all ones and writes are dropped.
//!
//! [`cfg_ok`] is Xen's `pci_cfg_ok`: only the hardware domain; a latch without the
//! enable bit passes through as it is; writes to a device the hypervisor marked
//! read-only (Xen's `pci_ro_map`, for devices it drives itself) are dropped, and so is
//! a write that [`PciState::write_intercept`] refuses (Xen's `pci_conf_write_intercept`:
//! the registers of a device that the hypervisor owns, such as the MSI or MSI-X
//! capability of a device whose interrupts are bound to pirqs). Reads are never
//! filtered (Xen's default XSM policy allows them all).
//!
//! [`PciState`] also records the devices dom0 reported with
//! `PHYSDEVOP_pci_device_add` and friends (`hypercall::physdev`).

use core::fmt;

/// `CONFIG_ADDRESS`.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// `CONFIG_DATA` (the first of its four ports).
pub const CONFIG_DATA: u16 = 0xCFC;
/// The enable bit of a `CONFIG_ADDRESS` value.
pub const CF8_ENABLE: u32 = 1 << 31;

/// Whether the latch has its enable bit (Xen's `CF8_ENABLED`).
pub const fn cf8_enabled(cf8: u32) -> bool {
    cf8 & CF8_ENABLE != 0
}

/// Bus, device and function of a latch (Xen's `CF8_BDF`).
pub const fn cf8_bdf(cf8: u32) -> u16 {
    let b = cf8.to_le_bytes();
    u16::from_le_bytes([b[1], b[2]])
}

/// The dword-aligned register of a latch (Xen's `CF8_ADDR_LO`).
pub const fn cf8_reg(cf8: u32) -> u16 {
    (cf8.to_le_bytes()[0] & 0xFC) as u16
}

/// The latch value that addresses `reg` (dword-aligned) of `bus:devfn`.
pub const fn cf8_of(bus: u8, devfn: u8, reg: u16) -> u32 {
    CF8_ENABLE | (bus as u32) << 16 | (devfn as u32) << 8 | (reg as u32 & 0xFC)
}

/// A PCI function: segment, bus, device and function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sbdf {
    /// PCI segment.
    pub seg: u16,
    /// Bus.
    pub bus: u8,
    /// Device (bits 7..3) and function (bits 2..0).
    pub devfn: u8,
}

impl Sbdf {
    /// Segment 0, `bdf` = bus << 8 | devfn.
    pub const fn from_bdf(bdf: u16) -> Self {
        Sbdf {
            seg: 0,
            bus: bdf.to_be_bytes()[0],
            devfn: bdf.to_be_bytes()[1],
        }
    }

    /// Bus << 8 | devfn.
    pub const fn bdf(self) -> u16 {
        (self.bus as u16) << 8 | self.devfn as u16
    }
}

impl fmt::Display for Sbdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{}",
            self.seg,
            self.bus,
            self.devfn >> 3,
            self.devfn & 7
        )
    }
}

/// A device dom0 reported (Xen's `struct pci_dev` with its `pci_dev_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciDevice {
    /// Where it is.
    pub sbdf: Sbdf,
    /// An extended function (ARI).
    pub is_extfn: bool,
    /// An SR-IOV virtual function of `physfn`.
    pub physfn: Option<(u8, u8)>,
    /// Its MSI-X capability and bound MSI, for the write filter.
    pub msi: crate::msi::DevMsi,
}

/// Configuration registers the hypervisor keeps for itself on one device: writes by
/// the hardware domain that touch any byte of `first..=last` are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protected {
    /// The device.
    pub sbdf: Sbdf,
    /// First register byte.
    pub first: u16,
    /// Last register byte (inclusive).
    pub last: u16,
}

/// Most devices recorded (Xen allocates; past this, `-ENOMEM`).
pub const MAX_DEVICES: usize = 256;
/// Most read-only devices.
pub const MAX_READ_ONLY: usize = 16;
/// Most protected register ranges.
pub const MAX_PROTECTED: usize = 64;

/// Why a device operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PciError {
    /// No room for another device (`-ENOMEM`).
    Full,
    /// No such device (`-ENODEV`).
    NoDevice,
}

impl From<PciError> for hypercall_abi::Errno {
    fn from(e: PciError) -> Self {
        match e {
            PciError::Full => hypercall_abi::Errno::ENOMEM,
            PciError::NoDevice => hypercall_abi::Errno::ENODEV,
        }
    }
}

/// The hypervisor's PCI state: the devices dom0 reported, the devices it must not
/// write, and the registers the hypervisor owns.
#[derive(Clone, Debug, Default)]
pub struct PciState {
    devices: heapless::Vec<PciDevice, MAX_DEVICES>,
    read_only: heapless::Vec<Sbdf, MAX_READ_ONLY>,
    protected: heapless::Vec<Protected, MAX_PROTECTED>,
    /// MMCONFIG regions from the ACPI `MCFG`, and whether each is in use (Xen's
    /// `pci_mmcfg_config` and `pci_mmcfg_virt`).
    mcfg: heapless::Vec<(crate::mcfg::McfgRegion, bool), 8>,
}

impl PciState {
    /// Nothing recorded.
    pub const fn new() -> Self {
        PciState {
            devices: heapless::Vec::new(),
            read_only: heapless::Vec::new(),
            protected: heapless::Vec::new(),
            mcfg: heapless::Vec::new(),
        }
    }

    /// Records an MMCONFIG region found at boot, in use from then on (Xen enables
    /// each one at boot). False if there is no room.
    pub fn add_mcfg(&mut self, r: crate::mcfg::McfgRegion) -> bool {
        self.mcfg.push((r, true)).is_ok()
    }

    /// The function whose ECAM page is machine frame `frame`, in a region in use:
    /// the page's machine address and the function.
    pub fn mcfg_locate(&self, frame: u64) -> Option<(u64, Sbdf)> {
        let pa = frame.checked_mul(4096)?;
        self.mcfg.iter().filter(|(_, on)| *on).find_map(|(r, _)| {
            let off = pa.checked_sub(r.base)?;
            let bus = u8::try_from(off >> 20).ok()?;
            (bus >= r.start_bus && bus <= r.end_bus).then(|| {
                let devfn = ((off >> 12) & 0xFF) as u8;
                (
                    pa,
                    Sbdf {
                        seg: r.segment,
                        bus,
                        devfn,
                    },
                )
            })
        })
    }

    /// The MMCONFIG regions and whether each is in use.
    pub fn mcfg(&self) -> &[(crate::mcfg::McfgRegion, bool)] {
        &self.mcfg
    }

    /// `PHYSDEVOP_pci_mmcfg_reserved` after the privilege check (Xen's
    /// `pci_mmcfg_reserved`): flags other than `XEN_PCI_MMCFG_RESERVED` are -EINVAL;
    /// the region must be one of the table's (segment and buses, else -ENODEV) at the
    /// same address (else -EIO). With the flag the region is in use (Xen's
    /// `pci_mmcfg_arch_enable`: its frames read-only for guests, returned here when
    /// that is new); without, the hypervisor stops using it (its frames stay
    /// read-only, as in Xen).
    pub fn mmcfg_reserved(
        &mut self,
        address: u64,
        segment: u16,
        start_bus: u8,
        end_bus: u8,
        flags: u32,
    ) -> Result<Option<(u64, u64)>, hypercall_abi::Errno> {
        use hypercall_abi::Errno;
        if flags & !hypercall_abi::physdev::XEN_PCI_MMCFG_RESERVED != 0 {
            return Err(Errno::EINVAL);
        }
        let (r, on) = self
            .mcfg
            .iter_mut()
            .find(|(r, _)| r.segment == segment && r.start_bus == start_bus && r.end_bus == end_bus)
            .ok_or(Errno::ENODEV)?;
        if r.base != address {
            return Err(Errno::EIO);
        }
        let enable = flags != 0;
        let newly = enable && !*on;
        *on = enable;
        Ok(if newly { r.frames() } else { None })
    }

    /// Records `dev` (Xen's `pci_add_device`): a device already known keeps its place
    /// and takes the new information, as Xen's `alloc_pdev` returns the existing one.
    /// A bound MSI stays recorded.
    pub fn add_device(&mut self, dev: PciDevice) -> Result<(), PciError> {
        if let Some(have) = self.devices.iter_mut().find(|d| d.sbdf == dev.sbdf) {
            let msi_masked = have.msi.msi_masked;
            *have = dev;
            have.msi.msi_masked = msi_masked;
            return Ok(());
        }
        self.devices.push(dev).map_err(|_| PciError::Full)
    }

    /// Forgets the device at `sbdf` and the registers protected on it (Xen's
    /// `pci_remove_device`, which also cleans up its MSI state).
    pub fn remove_device(&mut self, sbdf: Sbdf) -> Result<(), PciError> {
        let i = self
            .devices
            .iter()
            .position(|d| d.sbdf == sbdf)
            .ok_or(PciError::NoDevice)?;
        self.devices.remove(i);
        self.protected.retain(|p| p.sbdf != sbdf);
        Ok(())
    }

    /// The devices recorded, in the order they came.
    pub fn devices(&self) -> &[PciDevice] {
        &self.devices
    }

    /// The device at `sbdf`, if recorded.
    pub fn device(&self, sbdf: Sbdf) -> Option<&PciDevice> {
        self.devices.iter().find(|d| d.sbdf == sbdf)
    }

    /// Records (or forgets, `None`) the bound MSI of `sbdf` that can mask: its
    /// capability and mask register offsets, which the write filter guards.
    pub fn set_msi_bound(&mut self, sbdf: Sbdf, bound: Option<(u16, u16)>) {
        if let Some(d) = self.devices.iter_mut().find(|d| d.sbdf == sbdf) {
            d.msi.msi_masked = bound;
        }
    }

    /// Marks `sbdf` read-only for the hardware domain (Xen's `pci_ro_device`); false
    /// if there is no room.
    pub fn set_read_only(&mut self, sbdf: Sbdf) -> bool {
        self.read_only.contains(&sbdf) || self.read_only.push(sbdf).is_ok()
    }

    /// Whether `sbdf` is read-only for the hardware domain.
    pub fn is_read_only(&self, sbdf: Sbdf) -> bool {
        self.read_only.contains(&sbdf)
    }

    /// The hook for the interrupt code: from now on the hardware domain's writes that
    /// touch registers `first..=last` of `sbdf` are dropped (for instance the MSI or
    /// MSI-X capability of a device whose interrupt the hypervisor set up for a pirq).
    /// False if there is no room or the range is empty.
    pub fn protect(&mut self, sbdf: Sbdf, first: u16, last: u16) -> bool {
        if first > last {
            return false;
        }
        let p = Protected { sbdf, first, last };
        self.protected.contains(&p) || self.protected.push(p).is_ok()
    }

    /// Undoes [`PciState::protect`] for exactly that range.
    pub fn unprotect(&mut self, sbdf: Sbdf, first: u16, last: u16) {
        self.protected
            .retain(|p| !(p.sbdf == sbdf && p.first == first && p.last == last));
    }

    /// Whether a hardware-domain write of `size` bytes at register `reg` of `sbdf` may
    /// go to the device (Xen's `pci_conf_write_intercept`): not if it touches a
    /// protected range, and for a reported device as Xen's MSI filter says
    /// ([`crate::msi::conf_write_intercept`], which may change `data`).
    pub fn write_intercept(&self, sbdf: Sbdf, reg: u16, size: u8, data: &mut u32) -> bool {
        let last = reg.saturating_add(u16::from(size.max(1)) - 1);
        if self
            .protected
            .iter()
            .any(|p| p.sbdf == sbdf && p.first <= last && reg <= p.last)
        {
            return false;
        }
        self.device(sbdf)
            .is_none_or(|d| crate::msi::conf_write_intercept(&d.msi, reg, size, data))
    }
}

/// Xen's `pci_cfg_ok`: whether the access of `size` bytes at byte `start` (0..=3) of
/// `CONFIG_DATA` may go to the hardware for a domain with latch `cf8`; `hardware`
/// says whether the domain is the hardware domain, `write` carries a write's value.
pub fn cfg_ok(
    state: &PciState,
    hardware: bool,
    cf8: u32,
    start: u8,
    size: u8,
    write: Option<&mut u32>,
) -> bool {
    if !hardware {
        return false;
    }
    if !cf8_enabled(cf8) {
        return true;
    }
    let sbdf = Sbdf::from_bdf(cf8_bdf(cf8));
    let reg = cf8_reg(cf8) | u16::from(start & 3);
    match write {
        None => true,
        Some(data) => !state.is_read_only(sbdf) && state.write_intercept(sbdf, reg, size, data),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NIC: Sbdf = Sbdf {
        seg: 0,
        bus: 0,
        devfn: 3 << 3,
    };

    #[test]
    fn latch_fields() {
        let cf8 = cf8_of(0x12, 0x1B, 0x47);
        assert_eq!(cf8, 0x8012_1B44);
        assert!(cf8_enabled(cf8));
        assert_eq!(cf8_bdf(cf8), 0x121B);
        assert_eq!(cf8_reg(cf8), 0x44);
        assert!(!cf8_enabled(0x7FFF_FFFF));
        assert_eq!(Sbdf::from_bdf(0x121B).to_string(), "0000:12:03.3");
        assert_eq!(Sbdf::from_bdf(0x121B).bdf(), 0x121B);
    }

    #[test]
    fn only_the_hardware_domain_reaches_config_space() {
        let s = PciState::new();
        let cf8 = cf8_of(0, 3 << 3, 0);
        assert!(cfg_ok(&s, true, cf8, 0, 4, None));
        assert!(cfg_ok(&s, true, cf8, 0, 4, Some(&mut 0)));
        assert!(!cfg_ok(&s, false, cf8, 0, 4, None));
        assert!(!cfg_ok(&s, false, 0, 0, 4, None), "even without enable");
        assert!(cfg_ok(&s, true, 0, 0, 4, Some(&mut 0)), "no enable: as is");
    }

    #[test]
    fn read_only_devices_take_reads_but_no_writes() {
        let mut s = PciState::new();
        assert!(s.set_read_only(NIC));
        let cf8 = cf8_of(0, NIC.devfn, 4);
        assert!(cfg_ok(&s, true, cf8, 0, 2, None));
        assert!(!cfg_ok(&s, true, cf8, 0, 2, Some(&mut 0)));
        let other = cf8_of(0, 4 << 3, 4);
        assert!(cfg_ok(&s, true, other, 0, 2, Some(&mut 0)));
    }

    #[test]
    fn protected_registers_drop_overlapping_writes_only() {
        let mut s = PciState::new();
        // An MSI capability at 0x50..=0x5F.
        assert!(s.protect(NIC, 0x50, 0x5F));
        let w = |s: &PciState, reg: u16, start: u8, size: u8| {
            cfg_ok(
                s,
                true,
                cf8_of(0, NIC.devfn, reg),
                start,
                size,
                Some(&mut 0),
            )
        };
        assert!(!w(&s, 0x50, 0, 4));
        assert!(!w(&s, 0x5C, 3, 1), "last byte");
        assert!(w(&s, 0x4C, 0, 4));
        assert!(w(&s, 0x4C, 2, 2));
        assert!(w(&s, 0x60, 0, 4));
        assert!(
            cfg_ok(&s, true, cf8_of(0, NIC.devfn, 0x50), 0, 4, None),
            "reads pass"
        );
        s.unprotect(NIC, 0x50, 0x5F);
        assert!(w(&s, 0x50, 0, 4));
        assert!(!s.protect(NIC, 2, 1));
    }

    #[test]
    fn devices_are_added_once_and_removed_with_their_protection() {
        let mut s = PciState::new();
        let d = PciDevice {
            sbdf: NIC,
            is_extfn: false,
            physfn: None,
            msi: crate::msi::DevMsi::default(),
        };
        assert_eq!(s.add_device(d), Ok(()));
        assert_eq!(
            s.add_device(PciDevice {
                is_extfn: true,
                ..d
            }),
            Ok(())
        );
        assert_eq!(s.devices().len(), 1);
        assert!(s.device(NIC).is_some_and(|d| d.is_extfn));
        assert!(s.protect(NIC, 0x50, 0x5F));
        assert_eq!(s.remove_device(NIC), Ok(()));
        assert_eq!(s.remove_device(NIC), Err(PciError::NoDevice));
        assert!(s.write_intercept(NIC, 0x50, 4, &mut 0));
        for i in 0..MAX_DEVICES {
            let sbdf = Sbdf::from_bdf(u16::try_from(i).unwrap());
            assert_eq!(s.add_device(PciDevice { sbdf, ..d }), Ok(()));
        }
        let one_more = Sbdf::from_bdf(0x1000);
        assert_eq!(
            s.add_device(PciDevice {
                sbdf: one_more,
                ..d
            }),
            Err(PciError::Full)
        );
    }

    #[test]
    fn msi_registers_of_reported_devices_are_filtered() {
        let mut s = PciState::new();
        let w = |s: &PciState, reg: u16, start: u8, size: u8| {
            cfg_ok(
                s,
                true,
                cf8_of(0, NIC.devfn, reg),
                start,
                size,
                Some(&mut 0),
            )
        };
        // not reported: nothing known, nothing filtered
        assert!(w(&s, 0x98, 0, 4));
        let dev = PciDevice {
            sbdf: NIC,
            is_extfn: false,
            physfn: None,
            msi: crate::msi::DevMsi {
                msix_pos: Some(0x98),
                msi_masked: None,
            },
        };
        s.add_device(dev).unwrap();
        assert!(!w(&s, 0x98, 0, 4), "MSI-X capability, dword");
        assert!(w(&s, 0x98, 2, 2), "MSI-X control word");
        assert!(!w(&s, 0x9C, 0, 4), "table offset");
        // a bound MSI that masks; re-adding the device keeps it
        s.set_msi_bound(NIC, Some((0x50, 0x60)));
        s.add_device(dev).unwrap();
        assert!(!w(&s, 0x54, 0, 4));
        assert!(w(&s, 0x60, 0, 4));
        s.set_msi_bound(NIC, None);
        assert!(w(&s, 0x54, 0, 4));
    }
}
