//! I/O ports: which ports a domain may reach, and the emulation of `in`/`out` from a
//! PV guest (kernel or user mode).
//!
//! A PV guest runs in ring 3 with the real IOPL 0 and no I/O bitmap in the TSS, so
//! every `in`/`out` it executes raises #GP and comes here, as in Xen
//! (`pv_emulate_privileged_op`). Two checks, in Xen's order:
//!
//! 1. **The vCPU may do I/O at all** (`guest_io_okay`): its virtual IOPL, set with
//!    `PHYSDEVOP_set_iopl` (or by `iret` with `VMASST_TYPE_architectural_iopl`), is at
//!    least its virtual CPL (`emulate::iopl_ok`: 3 in user mode; 1 for a 64-bit PV
//!    kernel, 0 with `architectural_iopl`). If not, the #GP goes to the guest.
//! 2. **The domain may reach these ports** ([`admin_io_okay`]): every port of the access
//!    is in the domain's [`IoPorts`], and it is not a 32-bit access to `CONFIG_ADDRESS`
//!    (0xCF8), which never reaches the hardware. If so, the access is made as it is.
//! 3. **Otherwise it is emulated** ([`guest_io_read`], [`guest_io_write`], Xen's
//!    functions of the same names): the PCI configuration mechanism (`crate::pci`) for
//!    a 32-bit 0xCF8 and for 0xCFC..0xCFF; everything else reads all ones and drops
//!    writes, as on an empty ISA bus.
//!
//! The hardware domain starts with every port but the hypervisor's own devices
//! ([`IoPorts::hardware_domain`]): the PICs, the PIT, the ELCR, the RTC/CMOS, PCI
//! configuration data (0xCFC..0xCFF, emulated instead), QEMU's `isa-debug-exit` and
//! COM1, which carries the hypervisor's console. So dom0 can drive COM2 (its control
//! link to the host, issue #7) but can neither write over the hypervisor's log nor
//! stop the machine behind its back. Other domains start with none; the control domain
//! grants ranges with `XEN_DOMCTL_ioport_permission` ([`IoPorts::permit`]).

/// An inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (inclusive).
    pub last: u16,
}

/// Port ranges the hypervisor keeps for itself, with what is there.
pub const HYPERVISOR_PORTS: [(PortRange, &str); 8] = [
    (range(0x20, 0x21), "master PIC"),
    (range(0x40, 0x43), "PIT"),
    (range(0x70, 0x71), "RTC/CMOS"),
    (range(0xA0, 0xA1), "slave PIC"),
    (range(0xF4, 0xF7), "QEMU isa-debug-exit"),
    (range(0x3F8, 0x3FF), "COM1 (the hypervisor's console)"),
    (range(0x4D0, 0x4D1), "ELCR"),
    (range(0xCFC, 0xCFF), "PCI configuration data (emulated)"),
];

const fn range(first: u16, last: u16) -> PortRange {
    PortRange { first, last }
}

/// A permission set would need more ranges than it holds (Xen's rangesets allocate;
/// this is their `-ENOMEM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooManyRanges;

/// Most disjoint ranges a domain's set holds.
pub const MAX_RANGES: usize = 16;

/// The ports a domain may reach: a small sorted set of disjoint ranges (Xen's
/// `ioport_caps` rangeset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IoPorts {
    ranges: heapless::Vec<PortRange, MAX_RANGES>,
}

impl IoPorts {
    /// No ports (a domU).
    pub const fn none() -> Self {
        IoPorts {
            ranges: heapless::Vec::new(),
        }
    }

    /// Every port but [`HYPERVISOR_PORTS`] (the hardware domain).
    pub fn hardware_domain() -> Self {
        let mut s = IoPorts::none();
        s.ranges.clear();
        let _ = s.ranges.push(range(0, u16::MAX));
        for (r, _) in HYPERVISOR_PORTS {
            s.deny(r);
        }
        s
    }

    /// The ranges, in order.
    pub fn ranges(&self) -> &[PortRange] {
        &self.ranges
    }

    /// Removes `r` from the set (Xen's `ioports_deny_access`).
    pub fn deny(&mut self, r: PortRange) {
        let mut out: heapless::Vec<PortRange, MAX_RANGES> = heapless::Vec::new();
        for &have in &self.ranges {
            if have.last < r.first || have.first > r.last {
                let _ = out.push(have);
                continue;
            }
            if have.first < r.first {
                let _ = out.push(range(have.first, r.first - 1));
            }
            if have.last > r.last {
                let _ = out.push(range(r.last + 1, have.last));
            }
        }
        self.ranges = out;
    }

    /// Adds `r` to the set (Xen's `ioports_permit_access`), merging with the ranges it
    /// touches. `Err` (nothing changed) if the set would need more than [`MAX_RANGES`]
    /// ranges.
    pub fn permit(&mut self, r: PortRange) -> Result<(), TooManyRanges> {
        if r.first > r.last {
            return Ok(());
        }
        let (mut first, mut last) = (r.first, r.last);
        let mut out: heapless::Vec<PortRange, MAX_RANGES> = heapless::Vec::new();
        for &have in &self.ranges {
            let touches = u32::from(have.last) + 1 >= u32::from(first)
                && u32::from(last) + 1 >= u32::from(have.first);
            if touches {
                first = first.min(have.first);
                last = last.max(have.last);
            } else {
                out.push(have).map_err(|_| TooManyRanges)?;
            }
        }
        let at = out.iter().position(|h| h.first > last).unwrap_or(out.len());
        out.insert(at, range(first, last))
            .map_err(|_| TooManyRanges)?;
        self.ranges = out;
        Ok(())
    }

    /// Removes `r` (Xen's `ioports_deny_access`); nothing changes on `Err` (a split
    /// that needs more ranges than the set holds).
    pub fn try_deny(&mut self, r: PortRange) -> Result<(), TooManyRanges> {
        let mut out: heapless::Vec<PortRange, MAX_RANGES> = heapless::Vec::new();
        for &have in &self.ranges {
            if have.last < r.first || have.first > r.last {
                out.push(have).map_err(|_| TooManyRanges)?;
                continue;
            }
            if have.first < r.first {
                out.push(range(have.first, r.first - 1))
                    .map_err(|_| TooManyRanges)?;
            }
            if have.last > r.last {
                out.push(range(r.last + 1, have.last))
                    .map_err(|_| TooManyRanges)?;
            }
        }
        self.ranges = out;
        Ok(())
    }

    /// Whether every port of `first..=last` is in the set (Xen's
    /// `ioports_access_permitted` over a range).
    pub fn permits_range(&self, first: u16, last: u16) -> bool {
        first <= last
            && self
                .ranges
                .iter()
                .any(|r| r.first <= first && last <= r.last)
    }

    /// Whether every port of `[port, port + bytes)` is in the set (Xen's
    /// `ioports_access_permitted`). An access that wraps past 0xFFFF is not.
    pub fn permits(&self, port: u16, bytes: u8) -> bool {
        let Some(last) = port.checked_add(u16::from(bytes.max(1)) - 1) else {
            return false;
        };
        self.ranges
            .iter()
            .any(|r| r.first <= port && last <= r.last)
    }
}

/// One decoded `in` or `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortAccess {
    /// `out` (true) or `in`.
    pub write: bool,
    /// The port.
    pub port: u16,
    /// 1, 2 or 4 bytes.
    pub bytes: u8,
    /// Instruction length (prefixes included).
    pub len: u64,
}

/// Decodes `in`/`out` (immediate-port and DX forms; a 0x66 prefix makes the 32-bit
/// forms 16-bit; a REX prefix is allowed and ignored). `dx` is the guest's DX. String
/// forms (`ins`/`outs`) are not emulated, as Xen refuses them for PV kernels too.
pub fn decode(bytes: &[u8], dx: u16) -> Option<PortAccess> {
    let mut i = 0;
    let mut opsize16 = false;
    while let Some(&b) = bytes.get(i) {
        match b {
            0x66 => opsize16 = true,
            0x40..=0x4F => {}
            _ => break,
        }
        i += 1;
        if i > 4 {
            return None;
        }
    }
    let op = *bytes.get(i)?;
    let wide = if opsize16 { 2 } else { 4 };
    let (write, bytes_n, port, op_len) = match op {
        0xE4 => (false, 1, u16::from(*bytes.get(i + 1)?), 2),
        0xE5 => (false, wide, u16::from(*bytes.get(i + 1)?), 2),
        0xE6 => (true, 1, u16::from(*bytes.get(i + 1)?), 2),
        0xE7 => (true, wide, u16::from(*bytes.get(i + 1)?), 2),
        0xEC => (false, 1, dx, 1),
        0xED => (false, wide, dx, 1),
        0xEE => (true, 1, dx, 1),
        0xEF => (true, wide, dx, 1),
        _ => return None,
    };
    Some(PortAccess {
        write,
        port,
        bytes: bytes_n,
        len: (i + op_len) as u64,
    })
}

/// Xen's `admin_io_okay`: whether the access goes to the hardware as it is. A 32-bit
/// access to `CONFIG_ADDRESS` never does (it is the domain's latch).
pub fn admin_io_okay(dom: &crate::domain::Domain, port: u16, bytes: u8) -> bool {
    if port == crate::pci::CONFIG_ADDRESS && bytes == 4 {
        return false;
    }
    dom.ioports.permits(port, bytes)
}

/// The size of the piece of an access at `port` (`bytes` left) that one
/// `CONFIG_DATA` register access makes: up to the end of the dword, 3 as 2.
fn cfg_piece(port: u16, bytes: u8) -> u8 {
    let room = 4 - (port & 3) as u8;
    match bytes.min(room) {
        3 => 2,
        n => n,
    }
}

/// Xen's `guest_io_read`: an `in` of `bytes` (1, 2, 4) at `port` by the current
/// domain, whose vCPU passed the IOPL check.
pub fn guest_io_read<P: crate::platform::Platform>(
    p: &mut P,
    dom: &crate::domain::Domain,
    port: u16,
    bytes: u8,
) -> u32 {
    if admin_io_okay(dom, port, bytes) {
        return p.port_in(port, bytes);
    }
    let (mut port, mut left) = (port, bytes.min(4));
    let (mut data, mut shift) = (0u32, 0u32);
    while left != 0 {
        let mut size = 1u8;
        let mut sub = u32::MAX;
        if port == crate::pci::CONFIG_ADDRESS && left == 4 {
            size = 4;
            sub = dom.pci_cf8;
        } else if port & 0xFFFC == crate::pci::CONFIG_DATA {
            size = cfg_piece(port, left);
            let offset = (port & 3) as u8;
            let hardware = dom.privileged;
            let cf8 = dom.pci_cf8;
            if p.pci(|s| crate::pci::cfg_ok(s, hardware, cf8, offset, size, None)) {
                sub = p.pci_conf_read(cf8, offset, size);
            }
        }
        if size == 4 {
            return sub;
        }
        let mask = all_ones(size);
        data |= (sub & mask) << shift;
        shift += u32::from(size) * 8;
        port = port.wrapping_add(u16::from(size));
        left -= size;
    }
    data
}

/// Xen's `guest_io_write`: an `out` of `bytes` (1, 2, 4) of `data` at `port` by the
/// current domain, whose vCPU passed the IOPL check.
pub fn guest_io_write<P: crate::platform::Platform>(
    p: &mut P,
    dom: &mut crate::domain::Domain,
    port: u16,
    bytes: u8,
    data: u32,
) {
    if admin_io_okay(dom, port, bytes) {
        p.port_out(port, bytes, data & all_ones(bytes));
        return;
    }
    let (mut port, mut left, mut data) = (port, bytes.min(4), data);
    while left != 0 {
        let mut size = 1u8;
        if port == crate::pci::CONFIG_ADDRESS && left == 4 {
            size = 4;
            dom.pci_cf8 = data;
        } else if port & 0xFFFC == crate::pci::CONFIG_DATA {
            size = cfg_piece(port, left);
            let offset = (port & 3) as u8;
            let (hardware, cf8) = (dom.privileged, dom.pci_cf8);
            let mut value = data & all_ones(size);
            if p.pci(|s| crate::pci::cfg_ok(s, hardware, cf8, offset, size, Some(&mut value))) {
                p.pci_conf_write(cf8, offset, size, value & all_ones(size));
            }
        }
        if size == 4 {
            return;
        }
        port = port.wrapping_add(u16::from(size));
        left -= size;
        data = data.checked_shr(u32::from(size) * 8).unwrap_or(0);
    }
}

/// The value a read of `bytes` bytes gives where nothing answers: all ones.
pub const fn all_ones(bytes: u8) -> u32 {
    match bytes {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => 0xFFFF_FFFF,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_hardware_domain_gets_com2_but_not_the_hypervisors_devices() {
        let p = IoPorts::hardware_domain();
        assert!(p.permits(0x2F8, 1) && p.permits(0x2FF, 1), "COM2");
        assert!(p.permits(0x2F8, 4));
        for (r, what) in HYPERVISOR_PORTS {
            assert!(!p.permits(r.first, 1), "{what}");
            assert!(!p.permits(r.last, 1), "{what}");
        }
        assert!(!p.permits(0x3F6, 4), "an access reaching into COM1");
        assert!(p.permits(0x3F0, 4));
        assert!(p.permits(0x80, 1) && p.permits(0x61, 1));
        assert!(p.permits(0xFFFC, 4));
        assert!(!p.permits(0xFFFE, 4), "wraps past 0xFFFF");
        assert!(!IoPorts::none().permits(0x2F8, 1));
    }

    #[test]
    fn deny_splits_and_trims_ranges() {
        let mut p = IoPorts::none();
        let _ = p.ranges.push(range(10, 20));
        p.deny(range(12, 13));
        assert_eq!(p.ranges(), [range(10, 11), range(14, 20)]);
        p.deny(range(0, 10));
        assert_eq!(p.ranges(), [range(11, 11), range(14, 20)]);
        p.deny(range(15, 100));
        assert_eq!(p.ranges(), [range(11, 11), range(14, 14)]);
        p.deny(range(0, u16::MAX));
        assert!(p.ranges().is_empty());
    }

    #[test]
    fn permit_merges_and_is_bounded() {
        let mut p = IoPorts::none();
        assert_eq!(p.permit(range(0x2F8, 0x2FF)), Ok(()));
        assert_eq!(p.permit(range(0x300, 0x30F)), Ok(()), "adjacent: merged");
        assert_eq!(p.ranges(), [range(0x2F8, 0x30F)]);
        assert_eq!(p.permit(range(0x100, 0x101)), Ok(()));
        assert_eq!(p.permit(range(0x2F0, 0x2F9)), Ok(()));
        assert_eq!(p.ranges(), [range(0x100, 0x101), range(0x2F0, 0x30F)]);
        assert!(p.permits_range(0x2F0, 0x30F) && !p.permits_range(0x101, 0x102));
        assert!(!p.permits_range(3, 2));
        p.deny(range(0x2F0, 0x30F));
        assert_eq!(p.ranges(), [range(0x100, 0x101)]);
        let mut q = IoPorts::none();
        for i in 0..16u16 {
            assert_eq!(q.permit(range(i * 4, i * 4)), Ok(()));
        }
        let before = q.clone();
        assert_eq!(q.permit(range(0x1000, 0x1000)), Err(TooManyRanges));
        assert_eq!(q, before, "a refused permit changes nothing");
        assert_eq!(q.permit(range(0, 0x1000)), Ok(()), "merging frees room");
        assert_eq!(q.ranges(), [range(0, 0x1000)]);
        let mut full = IoPorts::none();
        assert_eq!(full.permit(range(0, u16::MAX)), Ok(()));
        assert!(full.permits(0xFFFC, 4));
    }

    #[test]
    fn decodes_every_form() {
        let d = |b: &[u8]| decode(b, 0x2FD);
        let acc = |write, port, bytes, len| {
            Some(PortAccess {
                write,
                port,
                bytes,
                len,
            })
        };
        assert_eq!(d(&[0xE4, 0x61]), acc(false, 0x61, 1, 2));
        assert_eq!(d(&[0xE5, 0x61]), acc(false, 0x61, 4, 2));
        assert_eq!(d(&[0x66, 0xE5, 0x61]), acc(false, 0x61, 2, 3));
        assert_eq!(d(&[0xE6, 0x80]), acc(true, 0x80, 1, 2));
        assert_eq!(d(&[0xE7, 0x80]), acc(true, 0x80, 4, 2));
        assert_eq!(d(&[0xEC]), acc(false, 0x2FD, 1, 1));
        assert_eq!(d(&[0x66, 0xED]), acc(false, 0x2FD, 2, 2));
        assert_eq!(d(&[0x48, 0xEE]), acc(true, 0x2FD, 1, 2));
        assert_eq!(d(&[0xEF]), acc(true, 0x2FD, 4, 1));
        assert_eq!(d(&[0xE4]), None, "truncated");
        assert_eq!(d(&[0x6C]), None, "insb is not emulated");
        assert_eq!(d(&[0x66, 0x66, 0x66, 0x66, 0x66, 0xEC]), None);
        assert_eq!(d(&[]), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_stays_in_bounds(b in proptest::collection::vec(any::<u8>(), 0..16), dx: u16) {
            if let Some(a) = decode(&b, dx) {
                prop_assert!(a.len <= b.len() as u64);
                prop_assert!(matches!(a.bytes, 1 | 2 | 4));
            }
        }

        #[test]
        fn permits_matches_a_port_by_port_check(first: u16, len in 1u8..=4) {
            let p = IoPorts::hardware_domain();
            let want = (0..u32::from(len)).all(|k| {
                let port = u32::from(first) + k;
                port <= 0xFFFF
                    && !HYPERVISOR_PORTS.iter().any(|(r, _)| {
                        (u32::from(r.first)..=u32::from(r.last)).contains(&port)
                    })
            });
            prop_assert_eq!(p.permits(first, len), want);
        }
    }
}
