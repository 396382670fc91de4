//! MSI and MSI-X: the portable pieces (capability walk, message composition, the
//! capability's register layout and the byte ranges the hypervisor keeps).
//!
//! Facts from Xen 4.17 (`arch/x86/msi.c`, `arch/x86/include/asm/msi.h`) and the PCI
//! Local Bus specification. The hardware is reached through [`MsiHw`] (configuration
//! space, the MSI-X table's MMIO, the read-only frame set), so the procedures that
//! program a device ([`enable_msix`], [`enable_msi`], [`set_mask`], [`disable`]) and
//! the filter of dom0's configuration writes ([`conf_write_intercept`]) are host-tested.
//! See `docs/devices.md`, "MSI and MSI-X".

use crate::pci::Sbdf;

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
/// destination, no redirection hint, fixed delivery, edge, asserted: Xen's
/// `msi_compose_msg` with a physical-mode APIC driver (with the flat or x2APIC
/// cluster driver Xen asks for logical destination and lowest-priority delivery
/// instead; the guest sees no difference).
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

/// The machine address of MSI-X table entry `entry` given the BAR's base.
pub fn msix_entry_addr(bar_base: u64, table_reg: u32, entry: u16) -> Option<u64> {
    let (_, off) = msix_table_loc(table_reg);
    bar_base
        .checked_add(u64::from(off))?
        .checked_add(u64::from(entry) * MSIX_ENTRY_SIZE)
}

/// Configuration space, MMIO and the read-only frame set, as the MSI code needs them.
pub trait MsiHw {
    /// Reads `size` (1, 2, 4) bytes at `reg` of `sbdf`.
    fn cfg_read(&mut self, sbdf: Sbdf, reg: u16, size: u8) -> u32;
    /// Writes `size` bytes at `reg` of `sbdf`.
    fn cfg_write(&mut self, sbdf: Sbdf, reg: u16, size: u8, val: u32);
    /// Reads the dword at machine address `addr` (an MSI-X table entry).
    fn mmio_read32(&mut self, addr: u64) -> u32;
    /// Writes the dword at machine address `addr`.
    fn mmio_write32(&mut self, addr: u64, val: u32);
    /// Frames `first..=last` become (or, `ro` false, stop being) read-only for every
    /// guest mapping (Xen's `mmio_ro_ranges`; counted, so two users may share one).
    fn ro_frames(&mut self, first: u64, last: u64, ro: bool);
}

struct Cfg<'a, H: MsiHw + ?Sized>(&'a mut H, Sbdf);

impl<H: MsiHw + ?Sized> CfgRead for Cfg<'_, H> {
    fn read8(&mut self, reg: u16) -> u8 {
        self.0.cfg_read(self.1, reg, 1).to_le_bytes()[0]
    }
}

/// The command register and its memory-decoding bit.
const PCI_COMMAND: u16 = 0x04;
const PCI_COMMAND_MEMORY: u32 = 1 << 1;

/// Where a bound MSI or MSI-X source is, and how to mask it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiKind {
    /// An MSI capability at `pos` with control `ctrl` (as found).
    Msi {
        /// Capability offset.
        pos: u16,
        /// Its control register when it was set up.
        ctrl: u16,
    },
    /// Entry `entry` of an MSI-X table.
    MsiX {
        /// Capability offset.
        pos: u16,
        /// The entry.
        entry: u16,
        /// Machine address of the entry.
        addr: u64,
        /// The table's frames.
        table: (u64, u64),
        /// The pending-bit array's frames.
        pba: (u64, u64),
    },
}

/// One MSI or MSI-X vector the hypervisor programmed (Xen's `msi_desc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiSource {
    /// The function.
    pub sbdf: Sbdf,
    /// Which capability and entry.
    pub kind: MsiKind,
}

impl MsiSource {
    /// Whether the source can be masked (MSI-X always; MSI with per-vector masking).
    pub fn maskable(&self) -> bool {
        match self.kind {
            MsiKind::MsiX { .. } => true,
            MsiKind::Msi { ctrl, .. } => ctrl & MSI_CTRL_MASKBIT != 0,
        }
    }
}

/// Why a device could not be set up (Xen's answers from `pci_enable_msi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsiError {
    /// No such capability (`-ENODEV`).
    NoDevice,
    /// The MSI-X entry is beyond the table (`-EINVAL`).
    Invalid,
    /// Memory decoding is off or the table's BAR is not set (`-ENXIO`).
    NoDecode,
}

impl MsiError {
    /// Xen's errno.
    pub fn errno(self) -> hypercall_abi::Errno {
        match self {
            MsiError::NoDevice => hypercall_abi::Errno::ENODEV,
            MsiError::Invalid => hypercall_abi::Errno::EINVAL,
            MsiError::NoDecode => hypercall_abi::Errno::ENXIO,
        }
    }
}

/// The memory address of BAR `bir` (0..=5) as Xen's `read_pci_mem_bar` reads it: 0
/// for an I/O BAR, the upper half of a 64-bit BAR included.
fn mem_bar(hw: &mut (impl MsiHw + ?Sized), sbdf: Sbdf, bir: u8) -> u64 {
    if bir > 5 {
        return 0;
    }
    let reg = 0x10 + 4 * u16::from(bir);
    let lo = hw.cfg_read(sbdf, reg, 4);
    if lo & 1 != 0 {
        return 0;
    }
    let base = u64::from(lo & !0xF);
    if (lo >> 1) & 3 == 2 && bir < 5 {
        base | u64::from(hw.cfg_read(sbdf, reg + 4, 4)) << 32
    } else {
        base
    }
}

/// Xen's `__pci_enable_msix` and `msix_capability_init` for one entry: checks the
/// entry against the table size, sets MSI-X enable and function mask while it works,
/// needs memory decoding, finds the table through its BAR (dom0's `table_base` is
/// only a hint: Xen warns when it differs and uses its own), makes the table's and
/// the PBA's frames read-only, writes the message into the entry and leaves it
/// masked (binding unmasks it), then restores the control register dom0 had.
pub fn enable_msix(
    hw: &mut (impl MsiHw + ?Sized),
    sbdf: Sbdf,
    entry: u16,
    msg: Message,
) -> Result<MsiSource, MsiError> {
    let pos = find_cap(&mut Cfg(hw, sbdf), CAP_ID_MSIX).ok_or(MsiError::NoDevice)?;
    let ctrl = u16::try_from(hw.cfg_read(sbdf, pos + 2, 2) & 0xFFFF).unwrap_or(0);
    let size = msix_table_size(ctrl);
    if entry >= size {
        return Err(MsiError::Invalid);
    }
    let setup = u32::from(ctrl | MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL);
    hw.cfg_write(sbdf, pos + 2, 2, setup);
    if hw.cfg_read(sbdf, PCI_COMMAND, 2) & PCI_COMMAND_MEMORY == 0 {
        hw.cfg_write(sbdf, pos + 2, 2, u32::from(ctrl & !MSIX_CTRL_ENABLE));
        return Err(MsiError::NoDecode);
    }
    let (bir, off) = msix_table_loc(hw.cfg_read(sbdf, pos + 4, 4));
    let (pba_bir, pba_off) = msix_table_loc(hw.cfg_read(sbdf, pos + 8, 4));
    let table = mem_bar(hw, sbdf, bir);
    let pba = mem_bar(hw, sbdf, pba_bir);
    let located = (table != 0 && pba != 0)
        .then(|| {
            let t = table.checked_add(u64::from(off))?;
            let p = pba.checked_add(u64::from(pba_off))?;
            let t_last = t.checked_add(u64::from(size) * MSIX_ENTRY_SIZE - 1)?;
            // Xen's `BITS_TO_LONGS(nr_entries) - 1` bytes past the PBA's start.
            let p_last = p.checked_add(u64::from(size).div_ceil(64).saturating_sub(1))?;
            let addr = t.checked_add(u64::from(entry) * MSIX_ENTRY_SIZE)?;
            Some((addr, (t >> 12, t_last >> 12), (p >> 12, p_last >> 12)))
        })
        .flatten();
    let Some((addr, table, pba)) = located else {
        hw.cfg_write(sbdf, pos + 2, 2, u32::from(ctrl));
        return Err(MsiError::NoDecode);
    };
    hw.ro_frames(table.0, table.1, true);
    hw.ro_frames(pba.0, pba.1, true);
    let vctl = hw.mmio_read32(addr + 12);
    hw.mmio_write32(addr + 12, vctl | MSIX_VECTOR_MASKED);
    hw.mmio_write32(addr, msg.addr_lo);
    hw.mmio_write32(addr + 4, msg.addr_hi);
    hw.mmio_write32(addr + 8, msg.data);
    hw.cfg_write(sbdf, pos + 2, 2, u32::from(ctrl));
    Ok(MsiSource {
        sbdf,
        kind: MsiKind::MsiX {
            pos,
            entry,
            addr,
            table,
            pba,
        },
    })
}

/// Xen's `__pci_enable_msi` and `msi_capability_init` for one vector: the message
/// goes into the capability, the vector is masked when the capability can mask,
/// one vector is asked for (multiple-message enable 0) and MSI is enabled.
pub fn enable_msi(
    hw: &mut (impl MsiHw + ?Sized),
    sbdf: Sbdf,
    msg: Message,
) -> Result<MsiSource, MsiError> {
    let pos = find_cap(&mut Cfg(hw, sbdf), CAP_ID_MSI).ok_or(MsiError::NoDevice)?;
    let ctrl = u16::try_from(hw.cfg_read(sbdf, pos + 2, 2) & 0xFFFF).unwrap_or(0);
    let l = msi_layout(ctrl);
    if let Some(m) = l.mask {
        let bits = hw.cfg_read(sbdf, pos + m, 4);
        hw.cfg_write(sbdf, pos + m, 4, bits | 1);
    }
    hw.cfg_write(sbdf, pos + l.addr_lo, 4, msg.addr_lo);
    if let Some(hi) = l.addr_hi {
        hw.cfg_write(sbdf, pos + hi, 4, msg.addr_hi);
    }
    hw.cfg_write(sbdf, pos + l.data, 2, msg.data & 0xFFFF);
    let on = (ctrl & !(7 << 4)) | MSI_CTRL_ENABLE;
    hw.cfg_write(sbdf, pos + 2, 2, u32::from(on));
    Ok(MsiSource {
        sbdf,
        kind: MsiKind::Msi { pos, ctrl },
    })
}

/// Masks or unmasks the source (Xen's `msi_set_mask_bit`); an MSI without per-vector
/// masking cannot be masked and is left alone.
pub fn set_mask(hw: &mut (impl MsiHw + ?Sized), src: &MsiSource, masked: bool) {
    match src.kind {
        MsiKind::MsiX { addr, .. } => {
            let v = hw.mmio_read32(addr + 12);
            let v = if masked {
                v | MSIX_VECTOR_MASKED
            } else {
                v & !MSIX_VECTOR_MASKED
            };
            hw.mmio_write32(addr + 12, v);
        }
        MsiKind::Msi { pos, ctrl } => {
            if let Some(m) = msi_layout(ctrl).mask {
                let bits = hw.cfg_read(src.sbdf, pos + m, 4);
                let bits = if masked { bits | 1 } else { bits & !1 };
                hw.cfg_write(src.sbdf, pos + m, 4, bits);
            }
        }
    }
}

/// Xen's `pci_disable_msi`: an MSI-X entry is masked and its table's and PBA's frames
/// are released from the read-only set (they stay read-only while another entry of
/// the device is in use); MSI is masked and disabled.
pub fn disable(hw: &mut (impl MsiHw + ?Sized), src: &MsiSource) {
    set_mask(hw, src, true);
    match src.kind {
        MsiKind::MsiX { table, pba, .. } => {
            hw.ro_frames(table.0, table.1, false);
            hw.ro_frames(pba.0, pba.1, false);
        }
        MsiKind::Msi { pos, .. } => {
            let c = hw.cfg_read(src.sbdf, pos + 2, 2);
            hw.cfg_write(src.sbdf, pos + 2, 2, c & !u32::from(MSI_CTRL_ENABLE));
        }
    }
}

/// What the write filter knows of one device's MSI and MSI-X (Xen's `pdev->msix`
/// and the device's MSI `msi_desc`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevMsi {
    /// The MSI-X capability, found when dom0 reported the device.
    pub msix_pos: Option<u16>,
    /// The MSI capability of a bound MSI that can mask: its offset and the mask
    /// register's offset in configuration space.
    pub msi_masked: Option<(u16, u16)>,
}

/// Xen 4.17's `pci_msi_conf_write_intercept` for a hardware-domain write of `size`
/// bytes at `reg` with value `data`: true lets it through (perhaps with `data`
/// changed), false drops it. Only registers 64..256 are looked at. For a device with
/// an MSI-X capability, bound or not, every write to the capability's 12 bytes is
/// dropped except a 2-byte write of the control register. For a bound MSI that can
/// mask, writes from the capability to the end of the pending bits are dropped except
/// a 2-byte write of the control register and a 4-byte write of the mask bits (Xen
/// then ORs in the bits it keeps masked itself; dom0's value goes through as it is
/// here: see `docs/xen-differences.md`). An MSI that cannot mask is not filtered, as
/// in Xen. The MSI-X control word goes through as written: the hypervisor keeps
/// the function mask only while it programs an entry, under its own lock.
pub fn conf_write_intercept(dev: &DevMsi, reg: u16, size: u8, _data: &mut u32) -> bool {
    if !(64..256).contains(&reg) {
        return true;
    }
    if let Some(pos) = dev.msix_pos
        && reg >= pos
        && reg < pos + 12
    {
        return reg == pos + 2 && size == 2;
    }
    if let Some((pos, mpos)) = dev.msi_masked {
        if reg < pos || reg >= mpos + 8 {
            return true;
        }
        if reg == pos + 2 {
            return size == 2;
        }
        return reg == mpos && size == 4;
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    extern crate std;

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
        assert_eq!(msi_max_vectors(0), 1);
        assert_eq!(msi_max_vectors(5 << 1), 32);
        assert_eq!(msi_max_vectors(7 << 1), 32);
    }

    /// A function with an MSI-X capability at 0x98 (`entries` entries, table at
    /// BAR 1 offset 0, PBA at offset 0x800) and an MSI capability at 0x50 (64-bit,
    /// per-vector masking), and its table's MMIO.
    pub(crate) struct FakeDev {
        pub(crate) cfg: [u8; 256],
        pub(crate) table: std::collections::BTreeMap<u64, u32>,
        pub(crate) ro: std::vec::Vec<(u64, u64, bool)>,
        pub(crate) writes: std::vec::Vec<(u16, u8, u32)>,
    }

    pub(crate) const BAR1: u64 = 0xFEBF_1000;

    impl FakeDev {
        pub(crate) fn new(entries: u16) -> Self {
            let mut cfg = [0u8; 256];
            cfg[4] = 0x06; // memory decoding, bus master
            cfg[6] = PCI_STATUS_CAP_LIST.to_le_bytes()[0];
            cfg[0x14..0x18].copy_from_slice(&u32::try_from(BAR1).unwrap().to_le_bytes());
            cfg[0x34] = 0x98;
            cfg[0x98] = CAP_ID_MSIX;
            cfg[0x99] = 0x50;
            cfg[0x9A..0x9C].copy_from_slice(&(entries - 1).to_le_bytes());
            cfg[0x9C..0xA0].copy_from_slice(&1u32.to_le_bytes());
            cfg[0xA0..0xA4].copy_from_slice(&0x801u32.to_le_bytes());
            cfg[0x50] = CAP_ID_MSI;
            cfg[0x51] = 0;
            cfg[0x52..0x54].copy_from_slice(&(MSI_CTRL_64BIT | MSI_CTRL_MASKBIT | 2).to_le_bytes());
            FakeDev {
                cfg,
                table: std::collections::BTreeMap::new(),
                ro: std::vec::Vec::new(),
                writes: std::vec::Vec::new(),
            }
        }
        pub(crate) fn cfg16(&self, reg: u16) -> u16 {
            u16::from_le_bytes([self.cfg[usize::from(reg)], self.cfg[usize::from(reg) + 1]])
        }
        pub(crate) fn cfg32(&self, reg: u16) -> u32 {
            u32::from(self.cfg16(reg)) | u32::from(self.cfg16(reg + 2)) << 16
        }
    }

    impl MsiHw for FakeDev {
        fn cfg_read(&mut self, _sbdf: Sbdf, reg: u16, size: u8) -> u32 {
            let mut v = 0u32;
            for i in 0..u16::from(size) {
                let b = self.cfg.get(usize::from(reg + i)).copied().unwrap_or(0xFF);
                v |= u32::from(b) << (8 * i);
            }
            v
        }
        fn cfg_write(&mut self, _sbdf: Sbdf, reg: u16, size: u8, val: u32) {
            self.writes.push((reg, size, val));
            for i in 0..u16::from(size) {
                if let Some(b) = self.cfg.get_mut(usize::from(reg + i)) {
                    *b = val.to_le_bytes()[usize::from(i)];
                }
            }
        }
        fn mmio_read32(&mut self, addr: u64) -> u32 {
            self.table.get(&addr).copied().unwrap_or(0)
        }
        fn mmio_write32(&mut self, addr: u64, val: u32) {
            self.table.insert(addr, val);
        }
        fn ro_frames(&mut self, first: u64, last: u64, ro: bool) {
            self.ro.push((first, last, ro));
        }
    }

    const DEV: Sbdf = Sbdf {
        seg: 0,
        bus: 0,
        devfn: 4 << 3,
    };

    #[test]
    fn msix_entry_is_programmed_masked_and_the_table_made_read_only() {
        let mut d = FakeDev::new(3);
        let msg = compose(0, 0x91);
        let src = enable_msix(&mut d, DEV, 2, msg).unwrap();
        let e = BAR1 + 2 * 16;
        assert_eq!(
            src.kind,
            MsiKind::MsiX {
                pos: 0x98,
                entry: 2,
                addr: e,
                table: (BAR1 >> 12, BAR1 >> 12),
                pba: ((BAR1 + 0x800) >> 12, (BAR1 + 0x800) >> 12),
            }
        );
        assert_eq!(d.table[&e], msg.addr_lo);
        assert_eq!(d.table[&(e + 4)], 0);
        assert_eq!(d.table[&(e + 8)], msg.data);
        assert_eq!(d.table[&(e + 12)], MSIX_VECTOR_MASKED);
        // enabled with the function masked while it worked, then dom0's value back
        assert!(
            d.writes
                .contains(&(0x9A, 2, u32::from(2 | MSIX_CTRL_ENABLE | MSIX_CTRL_MASKALL)))
        );
        assert_eq!(d.cfg16(0x9A), 2);
        assert_eq!(
            d.ro,
            [
                (BAR1 >> 12, BAR1 >> 12, true),
                ((BAR1 + 0x800) >> 12, (BAR1 + 0x800) >> 12, true)
            ]
        );
        set_mask(&mut d, &src, false);
        assert_eq!(d.table[&(e + 12)], 0);
        set_mask(&mut d, &src, true);
        assert_eq!(d.table[&(e + 12)], MSIX_VECTOR_MASKED);
        set_mask(&mut d, &src, false);
        disable(&mut d, &src);
        assert_eq!(d.table[&(e + 12)], MSIX_VECTOR_MASKED);
        assert_eq!(d.ro.len(), 4);
        assert!(d.ro[2..].iter().all(|r| !r.2));
    }

    #[test]
    fn msix_refusals_are_xens() {
        let mut d = FakeDev::new(2);
        assert_eq!(
            enable_msix(&mut d, DEV, 2, compose(0, 0x90)),
            Err(MsiError::Invalid)
        );
        // no memory decoding: -ENXIO, MSI-X left disabled
        d.cfg[4] = 0;
        assert_eq!(
            enable_msix(&mut d, DEV, 0, compose(0, 0x90)),
            Err(MsiError::NoDecode)
        );
        assert_eq!(d.cfg16(0x9A) & MSIX_CTRL_ENABLE, 0);
        // a BAR that is not set: -ENXIO
        d.cfg[4] = 2;
        d.cfg[0x14..0x18].fill(0);
        assert_eq!(
            enable_msix(&mut d, DEV, 0, compose(0, 0x90)),
            Err(MsiError::NoDecode)
        );
        assert!(d.ro.is_empty() && d.table.is_empty());
        // no capability: -ENODEV
        let mut n = FakeDev::new(1);
        n.cfg[0x34] = 0x50;
        assert_eq!(
            enable_msix(&mut n, DEV, 0, compose(0, 0x90)),
            Err(MsiError::NoDevice)
        );
        assert_eq!(MsiError::NoDecode.errno(), hypercall_abi::Errno::ENXIO);
    }

    #[test]
    fn msix_table_in_a_64bit_bar() {
        let mut d = FakeDev::new(1);
        d.cfg[0x14..0x18].copy_from_slice(&0xE000_0004u32.to_le_bytes());
        d.cfg[0x18..0x1C].copy_from_slice(&1u32.to_le_bytes());
        let src = enable_msix(&mut d, DEV, 0, compose(0, 0x90)).unwrap();
        assert!(matches!(
            src.kind,
            MsiKind::MsiX {
                addr: 0x1_E000_0000,
                ..
            }
        ));
    }

    #[test]
    fn msi_is_programmed_and_enabled_with_one_vector() {
        let mut d = FakeDev::new(1);
        d.cfg[0x34] = 0x50;
        let msg = compose(1, 0x95);
        let src = enable_msi(&mut d, DEV, msg).unwrap();
        assert!(src.maskable());
        assert_eq!(d.cfg32(0x54), msg.addr_lo);
        assert_eq!(d.cfg32(0x58), 0);
        assert_eq!(u32::from(d.cfg16(0x5C)), msg.data);
        assert_eq!(d.cfg32(0x60) & 1, 1, "masked until bound");
        let ctrl = d.cfg16(0x52);
        assert_eq!(ctrl & MSI_CTRL_ENABLE, 1);
        assert_eq!((ctrl >> 4) & 7, 0, "one vector");
        set_mask(&mut d, &src, false);
        assert_eq!(d.cfg32(0x60) & 1, 0);
        disable(&mut d, &src);
        assert_eq!(d.cfg32(0x60) & 1, 1);
        assert_eq!(d.cfg16(0x52) & MSI_CTRL_ENABLE, 0);
        assert!(d.ro.is_empty());
    }

    #[test]
    fn dom0_writes_to_msi_registers_are_filtered_as_xen_does() {
        let mut v = 0u32;
        let msix = DevMsi {
            msix_pos: Some(0x98),
            msi_masked: None,
        };
        // the control word, 2 bytes: through; anything else in the 12 bytes: dropped
        assert!(conf_write_intercept(&msix, 0x9A, 2, &mut v));
        assert!(!conf_write_intercept(&msix, 0x98, 4, &mut v));
        assert!(!conf_write_intercept(&msix, 0x9B, 1, &mut v));
        assert!(!conf_write_intercept(&msix, 0x9C, 4, &mut v));
        assert!(!conf_write_intercept(&msix, 0xA0, 4, &mut v));
        assert!(conf_write_intercept(&msix, 0xA4, 4, &mut v));
        assert!(conf_write_intercept(&msix, 0x94, 4, &mut v));
        // below 64 and from 256 on: never looked at
        assert!(conf_write_intercept(
            &DevMsi {
                msix_pos: Some(0x20),
                msi_masked: None
            },
            0x20,
            4,
            &mut v
        ));
        // a bound MSI that can mask (capability 0x50, mask bits at 0x60)
        let msi = DevMsi {
            msix_pos: None,
            msi_masked: Some((0x50, 0x60)),
        };
        assert!(conf_write_intercept(&msi, 0x52, 2, &mut v));
        assert!(!conf_write_intercept(&msi, 0x50, 4, &mut v));
        assert!(!conf_write_intercept(&msi, 0x54, 4, &mut v), "address");
        assert!(!conf_write_intercept(&msi, 0x5C, 2, &mut v), "data");
        assert!(conf_write_intercept(&msi, 0x60, 4, &mut v), "mask bits");
        assert!(!conf_write_intercept(&msi, 0x60, 2, &mut v));
        assert!(!conf_write_intercept(&msi, 0x64, 4, &mut v), "pending bits");
        assert!(conf_write_intercept(&msi, 0x68, 4, &mut v));
        assert!(conf_write_intercept(&msi, 0x4C, 4, &mut v));
        // nothing bound, no MSI-X: nothing filtered
        assert!(conf_write_intercept(&DevMsi::default(), 0x54, 4, &mut v));
    }

    #[test]
    fn msix_table() {
        assert_eq!(msix_table_size(0), 1);
        assert_eq!(msix_table_size(0x7FF | MSIX_CTRL_ENABLE), 2048);
        assert_eq!(msix_table_loc(0x2004), (4, 0x2000));
        assert_eq!(msix_entry_addr(0xFE00_0000, 0x1001, 3), Some(0xFE00_1030));
        assert_eq!(msix_entry_addr(u64::MAX, 0x1000, 0), None);
    }
}
