//! dom0's PCI bus scan (`docs/devices.md`, "dom0's PCI scan").
//!
//! Over a [`ConfigSpace`] (the kernel's goes through configuration mechanism #1,
//! 0xCF8/0xCFC, which the hypervisor emulates for dom0; tests use a fake), [`scan`]
//! enumerates bus 0 and every bus behind a PCI-to-PCI bridge: each device's function
//! 0, and functions 1..7 when the header says multi-function. For each function it
//! reads the identity (vendor, device, class, revision, header type), the BARs with
//! the sizing dance (decoding off in the command register, all ones written, the
//! size read back, the BAR and the command register restored; a 64-bit BAR takes
//! two slots), the interrupt line and pin, and the capability list (bounded, so a
//! looping list ends).

use alloc::vec::Vec;
use core::fmt;

/// Configuration space of segment 0, one dword at a time.
pub trait ConfigSpace {
    /// The dword at `reg` (a multiple of 4, below 256) of `bus:dev.func`.
    fn read32(&mut self, bus: u8, dev: u8, func: u8, reg: u8) -> u32;
    /// Writes the dword at `reg` of `bus:dev.func`.
    fn write32(&mut self, bus: u8, dev: u8, func: u8, reg: u8, value: u32);
}

/// Register offsets.
pub mod reg {
    /// Vendor (low 16) and device (high 16).
    pub const ID: u8 = 0x00;
    /// Command (low 16) and status (high 16).
    pub const COMMAND: u8 = 0x04;
    /// Revision (byte 0), programming interface, subclass, class (byte 3).
    pub const CLASS: u8 = 0x08;
    /// Cache line, latency, header type (byte 2), BIST.
    pub const HEADER: u8 = 0x0C;
    /// The first BAR.
    pub const BAR0: u8 = 0x10;
    /// A bridge's primary (byte 0), secondary (byte 1) and subordinate bus (byte 2).
    pub const BUSES: u8 = 0x18;
    /// The first capability (byte 0) of a type-0 or type-1 header.
    pub const CAP_PTR: u8 = 0x34;
    /// Interrupt line (byte 0) and pin (byte 1).
    pub const INTERRUPT: u8 = 0x3C;
}

/// Command register: I/O space decoding.
pub const CMD_IO: u32 = 1 << 0;
/// Command register: memory space decoding.
pub const CMD_MEM: u32 = 1 << 1;
/// Status register: the capability list exists.
pub const STATUS_CAP_LIST: u32 = 1 << 4;

/// What a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// Memory below 4 GiB.
    Mem32 {
        /// Prefetchable.
        prefetchable: bool,
    },
    /// Memory anywhere (two BAR slots).
    Mem64 {
        /// Prefetchable.
        prefetchable: bool,
    },
}

/// One implemented BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Its slot (0..=5).
    pub index: u8,
    /// What it decodes.
    pub kind: BarKind,
    /// Where it is now.
    pub base: u64,
    /// How much it decodes (a power of two).
    pub size: u64,
}

/// One PCI function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Bus.
    pub bus: u8,
    /// Device (0..32).
    pub dev: u8,
    /// Function (0..8).
    pub func: u8,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: [u8; 3],
    /// Revision.
    pub revision: u8,
    /// Header type (without the multi-function bit).
    pub header_type: u8,
    /// Implemented BARs.
    pub bars: Vec<Bar>,
    /// Capabilities: (id, offset), in list order.
    pub caps: Vec<(u8, u8)>,
    /// Interrupt line (the firmware's routing) and pin (0 = none, 1..4 = INTA..INTD).
    pub irq: (u8, u8),
    /// A bridge's secondary bus.
    pub secondary_bus: Option<u8>,
}

impl Function {
    /// Device << 3 | function.
    pub fn devfn(&self) -> u8 {
        (self.dev << 3) | (self.func & 7)
    }

    /// A short name for the class (Linux's `pci_class` names, shortened).
    pub fn class_name(&self) -> &'static str {
        match (self.class[0], self.class[1]) {
            (0x01, 0x01) => "ide",
            (0x01, 0x06) => "sata",
            (0x01, 0x08) => "nvme",
            (0x01, _) => "storage",
            (0x02, _) => "net",
            (0x03, _) => "display",
            (0x04, _) => "multimedia",
            (0x05, _) => "memory",
            (0x06, 0x00) => "host-bridge",
            (0x06, 0x01) => "isa-bridge",
            (0x06, 0x04) => "pci-bridge",
            (0x06, _) => "bridge",
            (0x07, _) => "comm",
            (0x08, _) => "system",
            (0x0C, 0x03) => "usb",
            (0x0C, 0x05) => "smbus",
            (0x0C, _) => "serial-bus",
            (0x00, 0xFF) | (0xFF, _) => "other",
            (0x00, _) => "unclassified",
            _ => "other",
        }
    }
}

/// Sizes in K/M/G.
struct Size(u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s >= 1 << 30 && s % (1 << 30) == 0 {
            write!(f, "{}G", s >> 30)
        } else if s >= 1 << 20 && s % (1 << 20) == 0 {
            write!(f, "{}M", s >> 20)
        } else if s >= 1 << 10 && s % (1 << 10) == 0 {
            write!(f, "{}K", s >> 10)
        } else {
            write!(f, "{s}")
        }
    }
}

impl fmt::Display for Bar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            BarKind::Io => "io",
            BarKind::Mem32 {
                prefetchable: false,
            } => "mem32",
            BarKind::Mem32 { prefetchable: true } => "mem32p",
            BarKind::Mem64 {
                prefetchable: false,
            } => "mem64",
            BarKind::Mem64 { prefetchable: true } => "mem64p",
        };
        write!(
            f,
            "bar{}={kind}:{:#x}+{}",
            self.index,
            self.base,
            Size(self.size)
        )
    }
}

/// `00:03.0 1af4:1000 net class 020000 bar0=io:0xc000+32 ... caps=11,09 irq=11/A`:
/// the line dom0 prints for a function.
impl Function {
    /// `bus:device.function`, as `00:04.0`.
    pub fn bdf(&self) -> alloc::string::String {
        alloc::format!("{:02x}:{:02x}.{}", self.bus, self.dev, self.func)
    }

    /// Its row for `dom0ctl devices`, with what dom0 does with it (`driver`).
    pub fn row(&self, driver: &str) -> control_proto::DeviceRow {
        let text = alloc::format!("{self}");
        // The display without "bdf vendor:device ".
        let detail = text.splitn(3, ' ').nth(2).unwrap_or_default().into();
        control_proto::DeviceRow {
            bdf: self.bdf(),
            vendor: self.vendor,
            device: self.device,
            class: u32::from(self.class[0]) << 16
                | u32::from(self.class[1]) << 8
                | u32::from(self.class[2]),
            driver: driver.into(),
            detail,
        }
    }
}

/// Vendor and device of the Q35 host bridge (QEMU's `-machine q35`).
const Q35_MCH: (u16, u16) = (0x8086, 0x29C0);

/// Whether the machine has PCI Express: a function with a PCI Express capability
/// (id 0x10), or QEMU's q35 host bridge (whose root-bus devices may have none).
pub fn has_pcie(fns: &[Function]) -> bool {
    fns.iter()
        .any(|f| (f.vendor, f.device) == Q35_MCH || f.caps.iter().any(|c| c.0 == 0x10))
}

/// The GSI that function `f`'s INTx reaches, among `fns` (the whole scan):
///
/// * on QEMU's `pc` (i440FX), the firmware's interrupt line: PIIX3 routes INTx to
///   ISA IRQs and the MADT's overrides make those GSIs level-triggered;
/// * on QEMU's `q35`, the ICH9 in APIC mode routes PIRQ A-H to GSIs 16-23, and
///   QEMU wires INTx *p* of a device in slot *s* of bus 0 (below the chipset's own
///   slots 25-31) to PIRQ E-H: GSI 20 + (s + p) mod 4; a device behind a bridge
///   is first swizzled to the bridge's slot (the PCI-to-PCI bridge rule). This is
///   what the ACPI `_PRT` of QEMU's tables says; dom0 does not read the `_PRT`
///   itself. The chipset's own functions keep the firmware's line.
///
/// `None` without a pin, or with a line of 0 or 0xFF (not routed).
pub fn intx_gsi(f: &Function, fns: &[Function]) -> Option<u32> {
    let (line, pin) = f.irq;
    if !(1..=4).contains(&pin) {
        return None;
    }
    let q35 = fns.iter().any(|h| (h.vendor, h.device) == Q35_MCH);
    if q35 {
        // Walk up to bus 0, swizzling the pin at each bridge.
        let (mut bus, mut dev, mut p) = (f.bus, f.dev, pin - 1);
        for _ in 0..=255 {
            if bus == 0 {
                break;
            }
            let bridge = fns.iter().find(|b| b.secondary_bus == Some(bus))?;
            p = (p + dev) % 4;
            (bus, dev) = (bridge.bus, bridge.dev);
        }
        if bus == 0 && dev < 25 {
            return Some(20 + u32::from((dev + p) % 4));
        }
    }
    (line != 0 && line != 0xFF).then_some(u32::from(line))
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{} {:04x}:{:04x} {} class {:02x}{:02x}{:02x}",
            self.bus,
            self.dev,
            self.func,
            self.vendor,
            self.device,
            self.class_name(),
            self.class[0],
            self.class[1],
            self.class[2]
        )?;
        for b in &self.bars {
            write!(f, " {b}")?;
        }
        if !self.caps.is_empty() {
            f.write_str(" caps=")?;
            for (i, (id, _)) in self.caps.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{id:02x}")?;
            }
        }
        if let Some(s) = self.secondary_bus {
            write!(f, " secondary={s:02x}")?;
        }
        if self.irq.1 != 0 {
            let pin = char::from(b'A' + (self.irq.1.clamp(1, 4) - 1));
            write!(f, " irq={}/{pin}", self.irq.0)?;
        }
        Ok(())
    }
}

/// Most functions one scan reports.
pub const MAX_FUNCTIONS: usize = 256;
/// Most capabilities followed per function (a looping list ends here).
pub const MAX_CAPS: usize = 48;

/// Every function on bus 0 and behind its bridges, in scan order (depth first: a
/// bridge's bus right after the bridge).
pub fn scan(cs: &mut impl ConfigSpace) -> Vec<Function> {
    let mut out = Vec::new();
    let mut seen = [false; 256];
    scan_bus(cs, 0, &mut seen, &mut out);
    out
}

fn scan_bus(cs: &mut impl ConfigSpace, bus: u8, seen: &mut [bool; 256], out: &mut Vec<Function>) {
    if core::mem::replace(&mut seen[usize::from(bus)], true) {
        return;
    }
    for dev in 0..32 {
        for func in 0..8 {
            if out.len() >= MAX_FUNCTIONS {
                return;
            }
            let id = cs.read32(bus, dev, func, reg::ID);
            if !present(id) {
                if func == 0 {
                    break;
                }
                continue;
            }
            let header = cs.read32(bus, dev, func, reg::HEADER).to_le_bytes()[2];
            let f = function(cs, bus, dev, func, id, header);
            let secondary = f.secondary_bus;
            out.push(f);
            if let Some(s) = secondary
                && s != 0
            {
                scan_bus(cs, s, seen, out);
            }
            if func == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
}

/// Whether a vendor/device dword names a function (Xen's `pci_device_detect`: some
/// boards answer 0 or half-ones for an empty slot).
pub fn present(id: u32) -> bool {
    !matches!(id, 0xFFFF_FFFF | 0 | 0x0000_FFFF | 0xFFFF_0000)
}

fn function(
    cs: &mut impl ConfigSpace,
    bus: u8,
    dev: u8,
    func: u8,
    id: u32,
    header: u8,
) -> Function {
    let class = cs.read32(bus, dev, func, reg::CLASS).to_le_bytes();
    let header_type = header & 0x7F;
    let nbars = match header_type {
        0 => 6,
        1 => 2,
        _ => 0,
    };
    let bars = size_bars(cs, bus, dev, func, nbars);
    let status = cs.read32(bus, dev, func, reg::COMMAND) >> 16;
    let caps = if status & STATUS_CAP_LIST != 0 && header_type <= 1 {
        capabilities(cs, bus, dev, func)
    } else {
        Vec::new()
    };
    let irq = cs.read32(bus, dev, func, reg::INTERRUPT).to_le_bytes();
    let secondary_bus =
        (header_type == 1).then(|| cs.read32(bus, dev, func, reg::BUSES).to_le_bytes()[1]);
    Function {
        bus,
        dev,
        func,
        vendor: (id & 0xFFFF) as u16,
        device: (id >> 16) as u16,
        class: [class[3], class[2], class[1]],
        revision: class[0],
        header_type,
        bars,
        caps,
        irq: (irq[0], irq[1]),
        secondary_bus,
    }
}

/// The BAR sizing dance over `nbars` slots, with decoding off while it runs.
fn size_bars(cs: &mut impl ConfigSpace, bus: u8, dev: u8, func: u8, nbars: u8) -> Vec<Bar> {
    let mut bars = Vec::new();
    if nbars == 0 {
        return bars;
    }
    let cmd = cs.read32(bus, dev, func, reg::COMMAND);
    // Only the command half: writing the status half back would clear its RW1C bits.
    let cmd16 = cmd & 0xFFFF;
    cs.write32(bus, dev, func, reg::COMMAND, cmd16 & !(CMD_IO | CMD_MEM));
    let mut i = 0u8;
    while i < nbars {
        let at = reg::BAR0 + 4 * i;
        let orig = cs.read32(bus, dev, func, at);
        cs.write32(bus, dev, func, at, u32::MAX);
        let probe = cs.read32(bus, dev, func, at);
        cs.write32(bus, dev, func, at, orig);
        let index = i;
        i += 1;
        if orig & 1 == 1 {
            let mask = probe & !3 & 0xFFFF;
            if mask != 0 {
                bars.push(Bar {
                    index,
                    kind: BarKind::Io,
                    base: u64::from(orig & !3),
                    size: u64::from((!mask & 0xFFFF) + 1),
                });
            }
            continue;
        }
        let prefetchable = orig & 8 != 0;
        let is64 = (orig >> 1) & 3 == 2 && i < nbars;
        let (base, mask) = if is64 {
            let at_hi = at + 4;
            let orig_hi = cs.read32(bus, dev, func, at_hi);
            cs.write32(bus, dev, func, at_hi, u32::MAX);
            let probe_hi = cs.read32(bus, dev, func, at_hi);
            cs.write32(bus, dev, func, at_hi, orig_hi);
            i += 1;
            (
                u64::from(orig_hi) << 32 | u64::from(orig & !0xF),
                u64::from(probe_hi) << 32 | u64::from(probe & !0xF),
            )
        } else {
            (
                u64::from(orig & !0xF),
                0xFFFF_FFFF_0000_0000 | u64::from(probe & !0xF),
            )
        };
        // An unimplemented BAR keeps reading 0.
        if mask & 0xFFFF_FFFF == 0 && (!is64 || mask == 0) {
            continue;
        }
        let size = (!mask).wrapping_add(1);
        let kind = if is64 {
            BarKind::Mem64 { prefetchable }
        } else {
            BarKind::Mem32 { prefetchable }
        };
        bars.push(Bar {
            index,
            kind,
            base,
            size,
        });
    }
    cs.write32(bus, dev, func, reg::COMMAND, cmd16);
    bars
}

/// The capability list: (id, offset) pairs, at most [`MAX_CAPS`].
fn capabilities(cs: &mut impl ConfigSpace, bus: u8, dev: u8, func: u8) -> Vec<(u8, u8)> {
    let mut caps = Vec::new();
    let mut at = cs.read32(bus, dev, func, reg::CAP_PTR).to_le_bytes()[0] & 0xFC;
    while at >= 0x40 && caps.len() < MAX_CAPS {
        let v = cs.read32(bus, dev, func, at).to_le_bytes();
        caps.push((v[0], at));
        at = v[1] & 0xFC;
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use alloc::string::ToString;

    /// A fake bus: per function, 64 dwords and a mask of writable bits per dword
    /// (BARs answer the sizing write with their size mask).
    /// A function's 64 dwords and their writable bits.
    type Regs = ([u32; 64], [u32; 64]);

    #[derive(Default)]
    struct Fake {
        fns: BTreeMap<(u8, u8, u8), Regs>,
        writes: usize,
    }

    impl Fake {
        fn add(&mut self, bdf: (u8, u8, u8), id: u32, class: u32, header: u8) -> &mut [u32; 64] {
            let e = self.fns.entry(bdf).or_insert(([0; 64], [0; 64]));
            e.0[0] = id;
            e.0[2] = class;
            e.0[3] = u32::from(header) << 16;
            e.1[1] = 0xFFFF; // command
            &mut e.0
        }
        fn bar(&mut self, bdf: (u8, u8, u8), slot: usize, value: u32, writable: u32) {
            let e = self.fns.get_mut(&bdf).unwrap();
            e.0[4 + slot] = value;
            e.1[4 + slot] = writable;
        }
    }

    impl ConfigSpace for Fake {
        fn read32(&mut self, bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
            self.fns
                .get(&(bus, dev, func))
                .map_or(u32::MAX, |e| e.0[usize::from(reg / 4)])
        }
        fn write32(&mut self, bus: u8, dev: u8, func: u8, reg: u8, value: u32) {
            self.writes += 1;
            if let Some(e) = self.fns.get_mut(&(bus, dev, func)) {
                let i = usize::from(reg / 4);
                e.0[i] = (e.0[i] & !e.1[i]) | (value & e.1[i]);
            }
        }
    }

    /// QEMU's `pc` with a virtio device behind a PCI bridge.
    fn machine() -> Fake {
        let mut m = Fake::default();
        m.add((0, 0, 0), 0x1237_8086, 0x0600_0002, 0);
        m.add((0, 1, 0), 0x7000_8086, 0x0601_0000, 0x80); // multi-function
        m.add((0, 1, 1), 0x7010_8086, 0x0101_8000, 0);
        m.bar((0, 1, 1), 4, 0xC041, 0xFFF0);
        m.add((0, 1, 3), 0x7113_8086, 0x0680_0003, 0);
        let nic = m.add((0, 3, 0), 0x1000_1AF4, 0x0200_0000, 0);
        nic[1] = 0x0010_0007; // caps, decoding on
        nic[13] = 0x98; // cap pointer
        nic[0x98 / 4] = 0x0000_8411; // MSI-X, next 0x84
        nic[0x84 / 4] = 0x0000_7009; // vendor, next 0x70
        nic[0x70 / 4] = 0x0000_0009; // vendor, end
        nic[15] = 0x0000_010B; // irq 11, INTA
        m.bar((0, 3, 0), 0, 0xC001, 0xFFE0); // io, 32 bytes
        m.bar((0, 3, 0), 1, 0xFEBD_1000, 0xFFFF_F000); // mem32, 4K
        m.bar((0, 3, 0), 4, 0xFE00_000C, 0xFFFF_C000); // mem64 pref, 16K
        m.bar((0, 3, 0), 5, 0, 0xFFFF_FFFF);
        let br = m.add((0, 5, 0), 0x0001_1B36, 0x0604_0000, 1);
        br[6] = 0x0000_0100; // secondary bus 1
        m.add((1, 1, 0), 0x1005_1AF4, 0x00FF_0000, 0);
        // A loop back to bus 0 must not recurse forever.
        let br2 = m.add((1, 2, 0), 0x0001_1B36, 0x0604_0000, 1);
        br2[6] = 0x0000_0000;
        m
    }

    #[test]
    fn enumerates_functions_bridges_and_multifunction() {
        let mut m = machine();
        let fns = scan(&mut m);
        let ids: Vec<_> = fns
            .iter()
            .map(|f| (f.bus, f.dev, f.func, f.vendor, f.device))
            .collect();
        assert_eq!(
            ids,
            [
                (0, 0, 0, 0x8086, 0x1237),
                (0, 1, 0, 0x8086, 0x7000),
                (0, 1, 1, 0x8086, 0x7010),
                (0, 1, 3, 0x8086, 0x7113),
                (0, 3, 0, 0x1AF4, 0x1000),
                (0, 5, 0, 0x1B36, 0x0001),
                (1, 1, 0, 0x1AF4, 0x1005),
                (1, 2, 0, 0x1B36, 0x0001),
            ]
        );
        assert_eq!(fns[5].secondary_bus, Some(1));
        assert_eq!(fns[0].class_name(), "host-bridge");
        assert_eq!(fns[2].class_name(), "ide");
        assert_eq!(fns[5].class_name(), "pci-bridge");
    }

    #[test]
    fn sizes_bars_and_restores_them() {
        let mut m = machine();
        let before = m.fns[&(0, 3, 0)].0;
        let fns = scan(&mut m);
        let nic = &fns[4];
        assert_eq!(
            nic.bars,
            [
                Bar {
                    index: 0,
                    kind: BarKind::Io,
                    base: 0xC000,
                    size: 32
                },
                Bar {
                    index: 1,
                    kind: BarKind::Mem32 {
                        prefetchable: false
                    },
                    base: 0xFEBD_1000,
                    size: 4096
                },
                Bar {
                    index: 4,
                    kind: BarKind::Mem64 { prefetchable: true },
                    base: 0xFE00_0000,
                    size: 16384
                },
            ]
        );
        assert_eq!(m.fns[&(0, 3, 0)].0, before, "every register restored");
        assert_eq!(nic.caps, [(0x11, 0x98), (0x09, 0x84), (0x09, 0x70)]);
        assert_eq!(
            nic.to_string(),
            "00:03.0 1af4:1000 net class 020000 bar0=io:0xc000+32 \
             bar1=mem32:0xfebd1000+4K bar4=mem64p:0xfe000000+16K caps=11,09,09 irq=11/A"
        );
        assert_eq!(fns[2].bars[0].to_string(), "bar4=io:0xc040+16");
        let row = nic.row("virtio-net eth0");
        assert_eq!(
            (row.bdf.as_str(), row.vendor, row.device, row.class),
            ("00:03.0", 0x1af4, 0x1000, 0x020000)
        );
        assert_eq!(row.driver, "virtio-net eth0");
        assert!(
            row.detail.starts_with("net class 020000 bar0=io:0xc000+32"),
            "{}",
            row.detail
        );
    }

    fn func(bus: u8, dev: u8, ids: (u16, u16), irq: (u8, u8), secondary: Option<u8>) -> Function {
        Function {
            bus,
            dev,
            func: 0,
            vendor: ids.0,
            device: ids.1,
            class: [0; 3],
            revision: 0,
            header_type: 0,
            bars: Vec::new(),
            caps: Vec::new(),
            irq,
            secondary_bus: secondary,
        }
    }

    #[test]
    fn intx_reaches_the_gsi_the_platform_wires() {
        // pc: the firmware's line.
        let pc = [
            func(0, 0, (0x8086, 0x1237), (0, 0), None),
            func(0, 4, (0x1af4, 0x1001), (11, 1), None),
        ];
        assert_eq!(intx_gsi(&pc[1], &pc), Some(11));
        assert_eq!(intx_gsi(&pc[0], &pc), None, "no pin");
        let unrouted = func(0, 5, (0x1af4, 0x1001), (0xFF, 1), None);
        assert_eq!(intx_gsi(&unrouted, &pc), None);
        // q35: slot 3 INTA -> PIRQ (3 + 0) % 4 + 4 = H -> GSI 23; slot 4 INTB -> (4+1)%4 -> F -> 21.
        let q35 = [
            func(0, 0, (0x8086, 0x29c0), (0, 0), None),
            func(0, 3, (0x1af4, 0x1001), (10, 1), None),
            func(0, 4, (0x1af4, 0x1000), (11, 2), None),
            func(0, 5, (0x1b36, 0x0001), (10, 1), Some(1)),
            func(1, 2, (0x1af4, 0x1001), (11, 1), None),
            func(0, 31, (0x8086, 0x2918), (10, 1), None),
        ];
        assert_eq!(intx_gsi(&q35[1], &q35), Some(23));
        assert_eq!(intx_gsi(&q35[2], &q35), Some(21));
        // Behind the bridge in slot 5: INTA of device 2 -> INTC at the bridge -> (5+2)%4=3 -> GSI 23.
        assert_eq!(intx_gsi(&q35[4], &q35), Some(23));
        // The chipset's own functions keep the firmware's line.
        assert_eq!(intx_gsi(&q35[5], &q35), Some(10));
    }

    #[test]
    fn a_looping_capability_list_ends() {
        let mut m = Fake::default();
        let f = m.add((0, 2, 0), 0x1111_2222, 0x0200_0000, 0);
        f[1] = 0x0010_0000;
        f[13] = 0x40;
        f[0x40 / 4] = 0x0000_4005; // points at itself
        let fns = scan(&mut m);
        assert_eq!(fns[0].caps.len(), MAX_CAPS);
    }

    #[test]
    fn nothing_there_is_an_empty_scan() {
        assert!(scan(&mut Fake::default()).is_empty());
        for id in [0, u32::MAX, 0xFFFF, 0xFFFF_0000] {
            assert!(!present(id));
        }
    }
}
