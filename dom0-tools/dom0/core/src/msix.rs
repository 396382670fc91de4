//! MSI-X for dom0's drivers, the logic part (host-tested): where a function's MSI-X
//! table is, the control-register values Linux's `msix_capability_init` writes, where
//! a virtio-pci device's common configuration is, and the vector layout Linux's
//! `virtio_pci` picks. The kernel (`dom0/src/virtio.rs`) does the writes and the
//! hypercalls. `docs/devices.md`, "MSI and MSI-X".

use crate::pci::{ConfigSpace, Function};

/// Capability id of MSI-X.
pub const CAP_MSIX: u8 = 0x11;
/// Capability id of MSI.
pub const CAP_MSI: u8 = 0x05;
/// Capability id of a vendor-specific capability (virtio's).
pub const CAP_VENDOR: u8 = 0x09;
/// MSI-X control: function mask.
pub const CTRL_MASKALL: u16 = 1 << 14;
/// MSI-X control: enable.
pub const CTRL_ENABLE: u16 = 1 << 15;
/// virtio: "no vector" (`VIRTIO_MSI_NO_VECTOR`).
pub const VIRTIO_MSI_NO_VECTOR: u16 = 0xFFFF;
/// virtio-pci capability type of the common configuration.
pub const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
/// Offset of `msix_config` in the virtio common configuration.
pub const COMMON_MSIX_CONFIG: u64 = 0x10;
/// Offset of `num_queues`.
pub const COMMON_NUM_QUEUES: u64 = 0x12;
/// Offset of `queue_select`.
pub const COMMON_QUEUE_SELECT: u64 = 0x16;
/// Offset of `queue_msix_vector`.
pub const COMMON_QUEUE_MSIX_VECTOR: u64 = 0x1A;

/// A function's MSI-X capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msix {
    /// The capability's offset.
    pub pos: u8,
    /// The control register as read.
    pub ctrl: u16,
    /// Entries in the table.
    pub size: u16,
    /// The table's machine address (its BAR's base plus the offset), what Linux
    /// passes to Xen as `table_base`.
    pub table: u64,
}

/// The MSI-X capability of `f`, read through `cs`; `None` if it has none or its
/// table's BAR is not one the scan found.
pub fn find(f: &Function, cs: &mut impl ConfigSpace) -> Option<Msix> {
    let pos = f.caps.iter().find(|c| c.0 == CAP_MSIX)?.1;
    let head = cs.read32(f.bus, f.dev, f.func, pos);
    let ctrl = (head >> 16) as u16;
    let table_reg = cs.read32(f.bus, f.dev, f.func, pos.checked_add(4)?);
    let bir = (table_reg & 7) as u8;
    let bar = f.bars.iter().find(|b| b.index == bir)?;
    if bar.base == 0 {
        return None;
    }
    Some(Msix {
        pos,
        ctrl,
        size: (ctrl & 0x7FF) + 1,
        table: bar.base.checked_add(u64::from(table_reg & !7))?,
    })
}

/// The control register's offset.
pub fn ctrl_reg(m: &Msix) -> u8 {
    m.pos + 2
}

/// Control while the entries are set up: enabled with the function masked (Linux's
/// `msix_capability_init` first step).
pub fn ctrl_setup(ctrl: u16) -> u16 {
    ctrl | CTRL_ENABLE | CTRL_MASKALL
}

/// Control once the entries are set up: enabled, function unmasked.
pub fn ctrl_running(ctrl: u16) -> u16 {
    (ctrl | CTRL_ENABLE) & !CTRL_MASKALL
}

/// Control with MSI-X off (back to INTx).
pub fn ctrl_off(ctrl: u16) -> u16 {
    ctrl & !(CTRL_ENABLE | CTRL_MASKALL)
}

/// The virtio vectors Linux's `virtio_pci` uses when it cannot give each queue its
/// own (`vp_find_vqs_msix` with shared vectors): `(config, queues)` = (0, 1), or
/// (0, 0) for a table with one entry.
pub fn virtio_vectors(size: u16) -> (u16, u16) {
    if size >= 2 { (0, 1) } else { (0, 0) }
}

/// The machine address of a virtio-pci device's common configuration (its
/// `VIRTIO_PCI_CAP_COMMON_CFG` capability: BAR and offset).
pub fn virtio_common_cfg(f: &Function, cs: &mut impl ConfigSpace) -> Option<u64> {
    for &(id, pos) in &f.caps {
        if id != CAP_VENDOR {
            continue;
        }
        let head = cs.read32(f.bus, f.dev, f.func, pos);
        if (head >> 24) as u8 != VIRTIO_PCI_CAP_COMMON_CFG {
            continue;
        }
        let bar = (cs.read32(f.bus, f.dev, f.func, pos.checked_add(4)?) & 0xFF) as u8;
        let off = cs.read32(f.bus, f.dev, f.func, pos.checked_add(8)?);
        let b = f.bars.iter().find(|b| b.index == bar)?;
        return b.base.checked_add(u64::from(off));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::{Bar, BarKind};
    use alloc::vec;

    struct Space([u32; 64]);
    impl ConfigSpace for Space {
        fn read32(&mut self, _b: u8, _d: u8, _f: u8, reg: u8) -> u32 {
            self.0
                .get(usize::from(reg / 4))
                .copied()
                .unwrap_or(u32::MAX)
        }
        fn write32(&mut self, _b: u8, _d: u8, _f: u8, _reg: u8, _v: u32) {}
    }

    /// QEMU's virtio-blk-pci, modern: MSI-X at 0x98 (2 entries, table in BAR 1),
    /// virtio capabilities at 0x84 (common cfg in BAR 4 at 0) and 0x70.
    fn virtio_blk() -> (Function, Space) {
        let mut s = [0u32; 64];
        s[0x98 / 4] = 0x0001_8411; // id 0x11, next 0x84, ctrl: 2 entries
        s[0x9C / 4] = 0x0000_0001; // table: BIR 1, offset 0
        s[0xA0 / 4] = 0x0000_0801; // PBA: BIR 1, offset 0x800
        s[0x84 / 4] = 0x0210_7009; // vendor cap, next 0x70, len 0x10, type 2 (notify)
        s[0x70 / 4] = 0x0110_0009; // vendor cap, type 1 (common)
        s[0x74 / 4] = 4; // BAR 4
        s[0x78 / 4] = 0; // offset 0
        let bar = |index, base| Bar {
            index,
            kind: BarKind::Mem32 {
                prefetchable: false,
            },
            base,
            size: 4096,
        };
        let f = Function {
            bus: 0,
            dev: 4,
            func: 0,
            vendor: 0x1AF4,
            device: 0x1001,
            class: [1, 0, 0],
            revision: 0,
            header_type: 0,
            bars: vec![bar(1, 0xFEBD_1000), bar(4, 0xFE00_0000)],
            caps: vec![(0x11, 0x98), (0x09, 0x84), (0x09, 0x70)],
            irq: (11, 1),
            secondary_bus: None,
        };
        (f, Space(s))
    }

    #[test]
    fn finds_the_table_through_its_bar() {
        let (f, mut s) = virtio_blk();
        let m = find(&f, &mut s).unwrap();
        assert_eq!(m.pos, 0x98);
        assert_eq!(m.size, 2);
        assert_eq!(m.table, 0xFEBD_1000);
        assert_eq!(ctrl_reg(&m), 0x9A);
        // a table in a BAR the scan did not find: no MSI-X
        s.0[0x9C / 4] = 2;
        assert_eq!(find(&f, &mut s), None);
        let mut g = f.clone();
        g.caps.retain(|c| c.0 != CAP_MSIX);
        assert_eq!(find(&g, &mut s), None);
    }

    #[test]
    fn pci_express_is_a_pcie_capability_or_q35s_host_bridge() {
        let (f, _) = virtio_blk();
        assert!(!crate::pci::has_pcie(core::slice::from_ref(&f)));
        let mut e = f.clone();
        e.caps.push((0x10, 0xA0));
        assert!(crate::pci::has_pcie(&[f.clone(), e]));
        let mut mch = f.clone();
        (mch.vendor, mch.device) = (0x8086, 0x29C0);
        assert!(crate::pci::has_pcie(&[mch]));
    }

    #[test]
    fn control_values_follow_linux() {
        let c = 1u16; // two entries
        assert_eq!(ctrl_setup(c), 0xC001);
        assert_eq!(ctrl_running(ctrl_setup(c)), 0x8001);
        assert_eq!(ctrl_off(ctrl_running(c)), 1);
        assert_eq!(virtio_vectors(1), (0, 0));
        assert_eq!(virtio_vectors(2), (0, 1));
        assert_eq!(virtio_vectors(3), (0, 1));
    }

    #[test]
    fn finds_virtio_common_cfg() {
        let (f, mut s) = virtio_blk();
        assert_eq!(virtio_common_cfg(&f, &mut s), Some(0xFE00_0000));
        s.0[0x78 / 4] = 0x3000;
        assert_eq!(virtio_common_cfg(&f, &mut s), Some(0xFE00_3000));
        s.0[0x70 / 4] = 0x0310_0009; // no common cfg left
        assert_eq!(virtio_common_cfg(&f, &mut s), None);
    }
}
