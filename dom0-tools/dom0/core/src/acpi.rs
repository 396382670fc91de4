//! The little of ACPI dom0 reads itself, as Linux does: the RSDP (in the BIOS
//! area), the root table (RSDT or XSDT) and the `MCFG`, whose
//! regions dom0 reports with `PHYSDEVOP_pci_mmcfg_reserved` and then reads PCI
//! configuration space through (ECAM). Host-tested over [`PhysMem`]; the kernel maps
//! the frames (`dom0/src/pcicfg.rs`). `docs/devices.md`, "MMCONFIG".

use alloc::vec::Vec;

/// Reads machine memory.
pub trait PhysMem {
    /// Fills `buf` from machine address `pa`; false if it cannot.
    fn read(&mut self, pa: u64, buf: &mut [u8]) -> bool;
}

/// One ECAM region of the `MCFG`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mcfg {
    /// Bus 0's configuration space in the segment.
    pub base: u64,
    /// The PCI segment.
    pub segment: u16,
    /// First bus.
    pub start_bus: u8,
    /// Last bus.
    pub end_bus: u8,
}

impl Mcfg {
    /// The machine address of register `reg` (below 4096) of `bus:dev.func`.
    pub fn address(&self, bus: u8, dev: u8, func: u8, reg: u16) -> Option<u64> {
        if bus < self.start_bus || bus > self.end_bus || reg >= 4096 || dev >= 32 || func >= 8 {
            return None;
        }
        let off = u64::from(bus) << 20 | u64::from(dev) << 15 | u64::from(func) << 12;
        self.base.checked_add(off | u64::from(reg))
    }
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn le64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The RSDP: (revision, root table address, whether it is the XSDT: for revision
/// 2 and up when it has one, else the RSDT). Searched in 0xE0000..0x100000 on
/// 16-byte boundaries, a KiB at a time (no large buffer: dom0's heap is small);
/// the first 20 bytes must sum to zero. The EBDA, where the specification also
/// allows it, is not searched (QEMU's firmware puts it in the BIOS area).
pub fn find_rsdp(mem: &mut impl PhysMem) -> Option<(u8, u64, bool)> {
    let mut buf = [0u8; 1024];
    for start in (0xE0000u64..0x100000).step_by(1024) {
        if !mem.read(start, &mut buf) {
            return None;
        }
        for at in (0..buf.len()).step_by(16) {
            if buf.get(at..at + 8) != Some(b"RSD PTR ".as_slice()) {
                continue;
            }
            let mut r = [0u8; 36];
            if !mem.read(start + at as u64, &mut r) || sum(&r[..20]) != 0 {
                continue;
            }
            let rev = r[15];
            let rsdt = u64::from(le32(&r, 16)?);
            let xsdt = if rev >= 2 && sum(&r) == 0 {
                le64(&r, 24).filter(|&x| x != 0)
            } else {
                None
            };
            return Some(match xsdt {
                Some(x) => (rev, x, true),
                None => (rev, rsdt, false),
            });
        }
    }
    None
}

/// Reads the whole table at `pa` (its header's length, at most 64 KiB) and checks
/// its checksum.
fn read_table(mem: &mut impl PhysMem, pa: u64) -> Option<Vec<u8>> {
    let mut head = [0u8; 36];
    if !mem.read(pa, &mut head) {
        return None;
    }
    let len = le32(&head, 4)? as usize;
    if !(36..=65536).contains(&len) {
        return None;
    }
    let mut t = alloc::vec![0u8; len];
    (mem.read(pa, &mut t) && sum(&t) == 0).then_some(t)
}

/// The table with signature `sig`, read whole and checksummed, through the RSDP.
pub fn find_table(mem: &mut impl PhysMem, sig: &[u8; 4]) -> Option<Vec<u8>> {
    let (_, root, x) = find_rsdp(mem)?;
    let t = read_table(mem, root)?;
    let width = if x { 8 } else { 4 };
    let mut at = 36;
    while at + width <= t.len() {
        let pa = if x {
            le64(&t, at)?
        } else {
            u64::from(le32(&t, at)?)
        };
        at += width;
        let mut s = [0u8; 4];
        if mem.read(pa, &mut s) && &s == sig {
            return read_table(mem, pa);
        }
    }
    None
}

/// The regions of an `MCFG` table (its bytes): 16-byte entries after 44 bytes;
/// an entry whose last bus is below its first is skipped.
pub fn mcfg_regions(t: &[u8]) -> Vec<Mcfg> {
    if t.get(..4) != Some(b"MCFG".as_slice()) {
        return Vec::new();
    }
    t.get(44..)
        .unwrap_or(&[])
        .chunks_exact(16)
        .filter_map(|e| {
            Some(Mcfg {
                base: le64(e, 0)?,
                segment: u16::from_le_bytes([e[8], e[9]]),
                start_bus: e[10],
                end_bus: e[11],
            })
        })
        .filter(|r| r.end_bus >= r.start_bus)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    #[derive(Default)]
    struct Mem(BTreeMap<u64, u8>);
    impl Mem {
        fn put(&mut self, pa: u64, b: &[u8]) {
            for (i, x) in b.iter().enumerate() {
                self.0.insert(pa + i as u64, *x);
            }
        }
    }
    impl PhysMem for Mem {
        fn read(&mut self, pa: u64, buf: &mut [u8]) -> bool {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.0.get(&(pa + i as u64)).copied().unwrap_or(0);
            }
            true
        }
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut t = Vec::new();
        t.extend_from_slice(sig);
        t.extend_from_slice(&(36 + u32::try_from(body.len()).unwrap()).to_le_bytes());
        t.extend_from_slice(&[1; 28]);
        t.extend_from_slice(body);
        let s = sum(&t);
        t[9] = t[9].wrapping_sub(s);
        t
    }

    /// QEMU q35's layout: RSDP (revision 0) at 0xF5A00, RSDT naming a FACP and
    /// the MCFG (one region, 0xB0000000, buses 0-255).
    fn q35() -> Mem {
        let mut m = Mem::default();
        let mut mcfg_body = alloc::vec![0u8; 8];
        mcfg_body.extend_from_slice(&0xB000_0000u64.to_le_bytes());
        mcfg_body.extend_from_slice(&[0, 0, 0, 0xFF, 0, 0, 0, 0]);
        // a broken entry: last bus below the first
        mcfg_body.extend_from_slice(&0xC000_0000u64.to_le_bytes());
        mcfg_body.extend_from_slice(&[1, 0, 9, 3, 0, 0, 0, 0]);
        m.put(0x7FE0_0000, &table(b"FACP", &[0; 8]));
        m.put(0x7FE0_1000, &table(b"MCFG", &mcfg_body));
        let mut rsdt_body = Vec::new();
        rsdt_body.extend_from_slice(&0x7FE0_0000u32.to_le_bytes());
        rsdt_body.extend_from_slice(&0x7FE0_1000u32.to_le_bytes());
        m.put(0x7FE0_2000, &table(b"RSDT", &rsdt_body));
        let mut rsdp = Vec::new();
        rsdp.extend_from_slice(b"RSD PTR ");
        rsdp.push(0);
        rsdp.extend_from_slice(b"BOCHS ");
        rsdp.push(0);
        rsdp.extend_from_slice(&0x7FE0_2000u32.to_le_bytes());
        let s = sum(&rsdp);
        rsdp[8] = rsdp[8].wrapping_sub(s);
        m.put(0xF5A00, &rsdp);
        m
    }

    #[test]
    fn finds_the_mcfg_through_the_rsdt() {
        let mut m = q35();
        assert_eq!(find_rsdp(&mut m), Some((0, 0x7FE0_2000, false)));
        let t = find_table(&mut m, b"MCFG").unwrap();
        let r = mcfg_regions(&t);
        assert_eq!(
            r,
            [Mcfg {
                base: 0xB000_0000,
                segment: 0,
                start_bus: 0,
                end_bus: 0xFF
            }]
        );
        assert_eq!(r[0].address(0, 3, 0, 0x100), Some(0xB001_8100));
        assert_eq!(r[0].address(0, 32, 0, 0), None);
        assert_eq!(r[0].address(0, 3, 0, 4096), None);
        assert!(find_table(&mut m, b"HPET").is_none());
    }

    #[test]
    fn bad_checksums_are_refused() {
        let mut m = q35();
        // the MCFG's checksum broken: not found
        let b = m.0[&(0x7FE0_1000 + 40)];
        m.put(0x7FE0_1000 + 40, &[b ^ 1]);
        assert!(find_table(&mut m, b"MCFG").is_none());
        // the RSDP's broken: nothing
        let b = m.0[&0xF5A10];
        m.put(0xF5A10, &[b ^ 1]);
        assert_eq!(find_rsdp(&mut m), None);
        assert!(mcfg_regions(b"XXXX").is_empty());
    }
}
