//! MSI and MSI-X: the portable pieces (capability walk, message composition, the
//! capability's register layout and the byte ranges the hypervisor keeps).
//!
//! Facts from Xen 4.17 (`arch/x86/msi.c`, `include/asm-x86/msi.h`) and the PCI Local
//! Bus specification. The ring-0 glue that programs a device is not written yet
//! (`docs/devices.md`, "Not yet").

/// Capability id of MSI.
pub const CAP_ID_MSI: u8 = 0x05;
/// Capability id of MSI-X.
pub const CAP_ID_MSIX: u8 = 0x11;
/// The status register, whose bit 4 says a capability list exists.
pub const PCI_STATUS: u16 = 0x06;
/// Status bit: the function has a capability list.
pub const PCI_STATUS_CAP_LIST: u16 = 1 << 4;
/// The capability pointer of a type 0 or type 1 header.
pub const PCI_CAPABILITY_LIST: u16 = 0x34;
/// At most this many capabilities are walked, so a looping list ends (Xen's TTL).
pub const CAP_TTL: usize = 48;

/// The base of the message address (the local APIC's window).
pub const MSI_ADDR_BASE: u32 = 0xFEE0_0000;
/// Message data: level "assert" (Xen's `MSI_DATA_LEVEL_ASSERT`).
pub const MSI_DATA_LEVEL_ASSERT: u32 = 1 << 14;

/// MSI control: enable.
pub const MSI_CTRL_ENABLE: u16 = 1 << 0;
/// MSI control: 64-bit address capable.
pub const MSI_CTRL_64BIT: u16 = 1 << 7;
/// MSI control: per-vector masking capable.
pub const MSI_CTRL_MASKBIT: u16 = 1 << 8;
/// MSI-X control: function mask.
pub const MSIX_CTRL_MASKALL: u16 = 1 << 14;
/// MSI-X control: enable.
pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;
/// Size of one MSI-X table entry.
pub const MSIX_ENTRY_SIZE: u64 = 16;
/// MSI-X entry vector control: masked.
pub const MSIX_VECTOR_MASKED: u32 = 1;

/// Byte-wide read access to one function's configuration space.
pub trait CfgRead {
    /// The byte at `reg`.
    fn read8(&mut self, reg: u16) -> u8;
    /// The little-endian word at `reg`.
    fn read16(&mut self, reg: u16) -> u16 {
        u16::from_le_bytes([self.read8(reg), self.read8(reg + 1)])
    }
    /// The little-endian dword at `reg`.
    fn read32(&mut self, reg: u16) -> u32 {
        u32::from(self.read16(reg)) | u32::from(self.read16(reg + 2)) << 16
    }
}

/// The offset of the first capability with id `id`, if any (Xen's
/// `pci_find_cap_offset`): the list must be announced by the status register, pointers
/// have their low two bits cleared, a pointer below 0x40 ends the walk, and at most
/// [`CAP_TTL`] entries are visited.
pub fn find_cap(cfg: &mut impl CfgRead, id: u8) -> Option<u16> {
    if cfg.read16(PCI_STATUS) & PCI_STATUS_CAP_LIST == 0 {
        return None;
    }
    let mut pos = u16::from(cfg.read8(PCI_CAPABILITY_LIST) & 0xFC);
    for _ in 0..CAP_TTL {
        if pos < 0x40 {
            return None;
        }
        let cap = cfg.read8(pos);
        if cap == 0xFF {
            return None;
        }
        if cap == id {
            return Some(pos);
        }
        pos = u16::from(cfg.read8(pos + 1) & 0xFC);
    }
    None
}

/// A message: what the device writes, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    /// Low 32 bits of the address.
    pub addr_lo: u32,
    /// High 32 bits of the address (always 0 for the local APIC window).
    pub addr_hi: u32,
    /// The data.
    pub data: u32,
}

/// The message for `vector` delivered to the local APIC `apic_id`: physical
/// destination, no redirection hint, fixed delivery, edge, asserted (as Xen's
/// `msi_compose_msg` composes it for an xAPIC id below 256).
pub const fn compose(apic_id: u8, vector: u8) -> Message {
    Message {
        addr_lo: MSI_ADDR_BASE | (apic_id as u32) << 12,
        addr_hi: 0,
        data: MSI_DATA_LEVEL_ASSERT | vector as u32,
    }
}

/// The vector a message composed by [`compose`] carries, if it is one.
pub const fn vector_of(msg: Message) -> Option<u8> {
    if msg.addr_lo & 0xFFF0_0000 != MSI_ADDR_BASE || msg.addr_hi != 0 {
        return None;
    }
    Some(msg.data.to_le_bytes()[0])
}

/// Register offsets (from the capability) of an MSI capability with control `ctrl`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiLayout {
    /// Message address (low dword).
    pub addr_lo: u16,
    /// Message address high dword, with a 64-bit capability.
    pub addr_hi: Option<u16>,
    /// Message data (a word).
    pub data: u16,
    /// Mask bits, with per-vector masking.
    pub mask: Option<u16>,
    /// The capability's last byte (offset).
    pub last: u16,
}

/// The layout of an MSI capability whose control register reads `ctrl`.
pub const fn msi_layout(ctrl: u16) -> MsiLayout {
    let is64 = ctrl & MSI_CTRL_64BIT != 0;
    let data = if is64 { 12 } else { 8 };
    let mask = if ctrl & MSI_CTRL_MASKBIT != 0 {
        Some(data + 4)
    } else {
        None
    };
    let last = match mask {
        Some(m) => m + 8 - 1,
        None => data + 2 - 1,
    };
    MsiLayout {
        addr_lo: 4,
        addr_hi: if is64 { Some(8) } else { None },
        data,
        mask,
        last,
    }
}

/// Vectors an MSI capability may request (`ctrl` bits 1..3: a power of two, at most 32).
pub const fn msi_max_vectors(ctrl: u16) -> u32 {
    let mmc = (ctrl >> 1) & 7;
    if mmc > 5 { 32 } else { 1 << mmc }
}

/// Number of entries of an MSI-X table whose capability control reads `ctrl`.
pub const fn msix_table_size(ctrl: u16) -> u16 {
    (ctrl & 0x7FF) + 1
}

/// Where an MSI-X table lies: the BAR's index (BIR) and the offset in it.
pub const fn msix_table_loc(table_reg: u32) -> (u8, u32) {
    ((table_reg & 7) as u8, table_reg & !7)
}

/// The configuration-space bytes `first..=last` of a device the hypervisor keeps when it
/// owns the device's MSI (capability at `pos`, control `ctrl`): the whole capability
/// from its control register on, as Xen's `pci_msi_conf_write_intercept` drops any
/// write that touches them.
pub const fn msi_protected(pos: u16, ctrl: u16) -> (u16, u16) {
    (pos + 2, pos + msi_layout(ctrl).last)
}

/// The bytes of an MSI-X capability at `pos` the hypervisor keeps: its control word.
/// (The table and PBA offsets are read-only in hardware.)
pub const fn msix_protected(pos: u16) -> (u16, u16) {
    (pos + 2, pos + 3)
}

/// The machine address of MSI-X table entry `entry` given the BAR's base.
pub fn msix_entry_addr(bar_base: u64, table_reg: u32, entry: u16) -> Option<u64> {
    let (_, off) = msix_table_loc(table_reg);
    bar_base
        .checked_add(u64::from(off))?
        .checked_add(u64::from(entry) * MSIX_ENTRY_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Space([u8; 256]);
    impl CfgRead for Space {
        fn read8(&mut self, reg: u16) -> u8 {
            self.0.get(usize::from(reg)).copied().unwrap_or(0xFF)
        }
    }

    fn space(caps: &[(u8, u8, u8)]) -> Space {
        // (pos, id, next)
        let mut s = [0u8; 256];
        s[6] = PCI_STATUS_CAP_LIST.to_le_bytes()[0];
        s[0x34] = caps.first().map_or(0, |c| c.0);
        for &(pos, id, next) in caps {
            s[usize::from(pos)] = id;
            s[usize::from(pos) + 1] = next;
        }
        Space(s)
    }

    #[test]
    fn walk_finds_msix_after_vendor_caps() {
        let mut s = space(&[(0x98, 0x09, 0x84), (0x84, 0x09, 0x40), (0x40, 0x11, 0)]);
        assert_eq!(find_cap(&mut s, CAP_ID_MSIX), Some(0x40));
        assert_eq!(find_cap(&mut s, CAP_ID_MSI), None);
    }

    #[test]
    fn walk_needs_the_status_bit_and_ends_on_loops() {
        let mut s = space(&[(0x40, 0x11, 0)]);
        s.0[6] = 0;
        assert_eq!(find_cap(&mut s, CAP_ID_MSIX), None);
        let mut l = space(&[(0x40, 0x09, 0x50), (0x50, 0x09, 0x40)]);
        assert_eq!(find_cap(&mut l, CAP_ID_MSI), None);
        // low bits of pointers are ignored
        let mut m = space(&[(0x40, 0x09, 0x53)]);
        m.0[0x50] = CAP_ID_MSI;
        assert_eq!(find_cap(&mut m, CAP_ID_MSI), Some(0x50));
    }

    #[test]
    fn walk_never_panics_on_any_space() {
        // a cheap deterministic fuzz over arbitrary bytes
        let mut seed = 0x1234_5678_u32;
        for _ in 0..2000 {
            let mut s = [0u8; 256];
            for b in s.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                *b = seed.to_le_bytes()[0];
            }
            let mut sp = Space(s);
            if let Some(p) = find_cap(&mut sp, CAP_ID_MSIX) {
                assert!(p >= 0x40 && p & 3 == 0);
                assert_eq!(sp.read8(p), CAP_ID_MSIX);
            }
        }
    }

    #[test]
    fn message_round_trips() {
        for apic in [0u8, 1, 7, 255] {
            for v in 0x20..=0xFFu8 {
                let m = compose(apic, v);
                assert_eq!(m.addr_lo >> 20, 0xFEE);
                assert_eq!((m.addr_lo >> 12) & 0xFF, u32::from(apic));
                assert_eq!(m.addr_lo & 0xC, 0, "physical, no redirection hint");
                assert_eq!(m.data & (1 << 15), 0, "edge");
                assert_eq!((m.data >> 8) & 7, 0, "fixed delivery");
                assert_eq!(vector_of(m), Some(v));
            }
        }
        assert_eq!(
            vector_of(Message {
                addr_lo: 0xFED0_0000,
                addr_hi: 0,
                data: 0x30
            }),
            None
        );
    }

    #[test]
    fn msi_layouts() {
        let l = msi_layout(0);
        assert_eq!((l.addr_hi, l.data, l.mask, l.last), (None, 8, None, 9));
        let l = msi_layout(MSI_CTRL_64BIT);
        assert_eq!((l.addr_hi, l.data, l.mask, l.last), (Some(8), 12, None, 13));
        let l = msi_layout(MSI_CTRL_64BIT | MSI_CTRL_MASKBIT);
        assert_eq!((l.data, l.mask, l.last), (12, Some(16), 23));
        let l = msi_layout(MSI_CTRL_MASKBIT);
        assert_eq!((l.data, l.mask, l.last), (8, Some(12), 19));
        assert_eq!(msi_protected(0x50, MSI_CTRL_64BIT), (0x52, 0x5D));
        assert_eq!(msi_max_vectors(0), 1);
        assert_eq!(msi_max_vectors(5 << 1), 32);
        assert_eq!(msi_max_vectors(7 << 1), 32);
    }

    #[test]
    fn msix_table() {
        assert_eq!(msix_table_size(0), 1);
        assert_eq!(msix_table_size(0x7FF | MSIX_CTRL_ENABLE), 2048);
        assert_eq!(msix_table_loc(0x2004), (4, 0x2000));
        assert_eq!(msix_entry_addr(0xFE00_0000, 0x1001, 3), Some(0xFE00_1030));
        assert_eq!(msix_entry_addr(u64::MAX, 0x1000, 0), None);
        assert_eq!(msix_protected(0x98), (0x9A, 0x9B));
    }
}
