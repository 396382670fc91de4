//! The ACPI `MCFG` table (PCI Express memory-mapped configuration, ECAM): parsing and
//! address arithmetic, portable and host-tested. The hypervisor reads it at boot
//! (`docs/devices.md`, "MMCONFIG").
//!
//! Layout (PCI Firmware specification): the 36-byte ACPI header, 8 reserved bytes, then
//! 16-byte entries: base address (u64), segment (u16), first bus, last bus, 4 reserved.

/// Length of the ACPI header plus the reserved field before the first entry.
pub const MCFG_ENTRIES_OFFSET: usize = 44;
/// Length of one entry.
pub const MCFG_ENTRY_LEN: usize = 16;

/// One ECAM region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McfgRegion {
    /// The address of bus 0's configuration space in this segment (as the table says).
    pub base: u64,
    /// The PCI segment.
    pub segment: u16,
    /// The first bus decoded.
    pub start_bus: u8,
    /// The last bus decoded.
    pub end_bus: u8,
}

impl McfgRegion {
    /// The machine address of register `reg` (0..4096) of `bus:devfn`, if this region
    /// decodes that bus and the register is in range.
    pub fn address(&self, bus: u8, devfn: u8, reg: u16) -> Option<u64> {
        if bus < self.start_bus || bus > self.end_bus || reg >= 4096 {
            return None;
        }
        let off = (u64::from(bus) << 20) | (u64::from(devfn) << 12) | u64::from(reg);
        self.base.checked_add(off)
    }

    /// The machine frames `first..=last` of the region's decoded buses.
    pub fn frames(&self) -> Option<(u64, u64)> {
        let first = self.base.checked_add(u64::from(self.start_bus) << 20)?;
        let last = self
            .base
            .checked_add((u64::from(self.end_bus) + 1) << 20)?
            .checked_sub(1)?;
        Some((first >> 12, last >> 12))
    }
}

/// Why a table was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum McfgError {
    /// Not an `MCFG` signature.
    Signature,
    /// The header's length is shorter than the header or longer than the bytes given.
    Length,
    /// The bytes do not sum to zero.
    Checksum,
}

/// The regions of an `MCFG` table given as its bytes (at least its header's length).
/// Entries with the last bus below the first, or whose base is not 1 MiB aligned, are
/// skipped (our own sanity checks; a partial entry at the end is ignored, as Xen's
/// count of whole entries does). Xen 4.17 also refuses the whole table when an entry
/// lies above 4 GiB on firmware it dates before 2010 (`acpi_mcfg_check_entry`, by
/// DMI), which is not done here.
pub fn parse(table: &[u8]) -> Result<impl Iterator<Item = McfgRegion> + '_, McfgError> {
    if table.get(0..4) != Some(b"MCFG".as_slice()) {
        return Err(McfgError::Signature);
    }
    let len = table
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .and_then(|l| usize::try_from(l).ok())
        .ok_or(McfgError::Length)?;
    if len < MCFG_ENTRIES_OFFSET || len > table.len() {
        return Err(McfgError::Length);
    }
    let body = &table[..len];
    if body.iter().fold(0u8, |a, b| a.wrapping_add(*b)) != 0 {
        return Err(McfgError::Checksum);
    }
    Ok(body[MCFG_ENTRIES_OFFSET..]
        .chunks_exact(MCFG_ENTRY_LEN)
        .map(|e| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&e[0..8]);
            McfgRegion {
                base: u64::from_le_bytes(b),
                segment: u16::from_le_bytes([e[8], e[9]]),
                start_bus: e[10],
                end_bus: e[11],
            }
        })
        .filter(|r| r.end_bus >= r.start_bus && r.base & 0xF_FFFF == 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    fn table(entries: &[(u64, u16, u8, u8)]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(b"MCFG");
        let len = MCFG_ENTRIES_OFFSET + MCFG_ENTRY_LEN * entries.len();
        t.extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
        t.resize(MCFG_ENTRIES_OFFSET, 0);
        for &(base, seg, s, e) in entries {
            t.extend_from_slice(&base.to_le_bytes());
            t.extend_from_slice(&seg.to_le_bytes());
            t.extend_from_slice(&[s, e, 0, 0, 0, 0]);
        }
        let sum = t.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        t[9] = 0u8.wrapping_sub(sum);
        t
    }

    #[test]
    fn q35_like_table() {
        let t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        let r: Vec<_> = parse(&t).unwrap().collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].address(0, 0x18, 0), Some(0xB001_8000));
        assert_eq!(r[0].address(1, 0, 0x100), Some(0xB010_0100));
        assert_eq!(r[0].address(0, 0, 4096), None);
        assert_eq!(r[0].frames(), Some((0xB0000, 0xBFFFF)));
    }

    #[test]
    fn bad_tables_and_entries() {
        let mut t = table(&[(0xB000_0000, 0, 0, 0xFF)]);
        t[20] ^= 1;
        assert_eq!(parse(&t).err(), Some(McfgError::Checksum));
        let t = table(&[]);
        assert_eq!(parse(&t[..40]).err(), Some(McfgError::Length));
        assert_eq!(parse(b"APIC").err(), Some(McfgError::Signature));
        let t = table(&[
            (0xB000_0000, 0, 5, 4),
            (0xB000_1000, 0, 0, 1),
            (0xE000_0000, 1, 2, 3),
        ]);
        let r: Vec<_> = parse(&t).unwrap().collect();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].segment, 1);
        assert_eq!(r[0].address(1, 0, 0), None);
        assert_eq!(r[0].address(2, 0, 0), Some(0xE020_0000));
    }

    #[test]
    fn never_panics_on_truncations() {
        let t = table(&[(0xB000_0000, 0, 0, 0xFF), (!0xF_FFFF_u64, 0, 0, 0xFF)]);
        for n in 0..=t.len() {
            if let Ok(it) = parse(&t[..n]) {
                for r in it {
                    let _ = r.frames();
                    let _ = r.address(0xFF, 0xFF, 0xFFF);
                }
            }
        }
    }
}
