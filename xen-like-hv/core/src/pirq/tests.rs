//! The pirq state machine against a fake IO-APIC: mapping, binding, EOI for level and
//! edge GSIs, sharing, unmapping, teardown, permissions, and the errno of each refusal.

use super::*;
use crate::ioapic::{Polarity, Trigger};

#[derive(Debug)]
struct FakeChip {
    masked: Vec<bool>,
    programmed: Vec<(u32, Trigger, Polarity)>,
    eoi_bits: Vec<(u64, u32, bool)>,
    unmasks: u32,
}

impl FakeChip {
    fn new() -> Self {
        FakeChip {
            masked: vec![true; 256],
            programmed: Vec::new(),
            eoi_bits: Vec::new(),
            unmasks: 0,
        }
    }
}

impl IrqChip for FakeChip {
    fn program(&mut self, irq: u32, t: Trigger, p: Polarity) {
        self.programmed.push((irq, t, p));
        self.masked[irq as usize] = true;
    }
    fn mask(&mut self, irq: u32) {
        self.masked[irq as usize] = true;
    }
    fn unmask(&mut self, irq: u32) {
        self.masked[irq as usize] = false;
        self.unmasks += 1;
    }
    fn eoi_bit(&mut self, map: Mfn, pirq: u32, set: bool) {
        self.eoi_bits.push((map.0, pirq, set));
    }
}

const D0: (DomId, bool) = (DomId(0), true);
const DU: (DomId, bool) = (DomId(1), false);

/// QEMU's `pc`: 24 GSIs, ISA edge/high, 16.. level/low, GSI 4 (COM1) the hypervisor's.
fn table() -> IrqTable {
    let mut t = IrqTable::new();
    t.init(
        24,
        1,
        |g| {
            if g < 16 {
                (Trigger::Edge, Polarity::High)
            } else {
                (Trigger::Level, Polarity::Low)
            }
        },
        &[4],
    );
    t
}

fn deliveries(t: &mut IrqTable) -> Vec<(u16, u32)> {
    let mut v = Vec::new();
    t.take_deliveries(|d, p| v.push((d.0, p)));
    v
}

#[test]
fn nr_pirqs_as_xen() {
    let t = table();
    assert_eq!(t.nr_gsis(), 24);
    assert_eq!(t.nr_irqs(), 192);
    assert_eq!(t.nr_pirqs(true), 192);
    assert_eq!(t.nr_pirqs(false), 56);
}

#[test]
fn edge_map_bind_deliver_no_eoi_needed() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(t.map_gsi(D0, D0, 3, 3), Ok(3));
    assert!(c.masked[3], "mapping does not unmask");
    assert!(t.pirq_permitted(DomId(0), true, 3));
    t.bind(DomId(0), 3, 5, false, &mut c).unwrap();
    assert!(!c.masked[3], "the first guest unmasks");
    assert!(t.on_irq(3, &mut c));
    assert!(!c.masked[3], "edge: never masked for the guest");
    assert_eq!(deliveries(&mut t), vec![(0, 5)]);
    assert_eq!(deliveries(&mut t), vec![], "delivered once");
    assert!(t.on_irq(3, &mut c));
    assert!(t.on_irq(3, &mut c));
    assert_eq!(
        deliveries(&mut t),
        vec![(0, 5)],
        "coalesced like a pending bit"
    );
    assert_eq!(t.eoi(DomId(0), true, 3, &mut c), Ok(None));
    assert!(!c.masked[3]);
    assert_eq!(t.count(3), 3);
}

#[test]
fn level_masked_until_eoi() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(t.map_gsi(D0, D0, 20, -1), Ok(16), "a free pirq from 16 up");
    t.bind(DomId(0), 16, 7, false, &mut c).unwrap();
    assert!(!c.masked[20]);
    assert!(t.on_irq(20, &mut c));
    assert!(c.masked[20], "level: masked until the guest's EOI");
    assert_eq!(deliveries(&mut t), vec![(0, 7)]);
    // A slow guest: nothing more arrives while masked (the chip would not raise it);
    // even if one slipped through it is not counted in flight twice.
    assert!(t.on_irq(20, &mut c));
    assert!(c.masked[20]);
    assert_eq!(t.eoi(DomId(0), true, 16, &mut c), Ok(None));
    assert!(!c.masked[20], "EOI unmasks");
    // A second EOI is harmless.
    let before = c.unmasks;
    assert_eq!(t.eoi(DomId(0), true, 16, &mut c), Ok(None));
    assert_eq!(c.unmasks, before);
}

#[test]
fn level_shared_needs_every_eoi() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(t.map_gsi(D0, D0, 21, 21), Ok(21));
    assert_eq!(
        t.map_gsi(D0, DU, 21, -1),
        Ok(16),
        "dom0 maps it into a domU"
    );
    t.bind(DomId(0), 21, 9, true, &mut c).unwrap();
    // Not willing to share with a sharer: EBUSY.
    assert_eq!(
        t.bind(DomId(1), 16, 3, false, &mut c)
            .map_err(PirqError::errno),
        Err(Errno::EBUSY)
    );
    t.bind(DomId(1), 16, 3, true, &mut c).unwrap();
    assert_eq!(
        t.status(DomId(0), true, 21),
        Ok(XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED)
    );
    assert!(t.on_irq(21, &mut c));
    let mut d = deliveries(&mut t);
    d.sort();
    assert_eq!(d, vec![(0, 9), (1, 3)]);
    t.eoi(DomId(0), true, 21, &mut c).unwrap();
    assert!(c.masked[21], "still in flight for the domU");
    t.eoi(DomId(1), false, 16, &mut c).unwrap();
    assert!(!c.masked[21]);
    // The domU closing its port while in flight gives its EOI.
    assert!(t.on_irq(21, &mut c));
    t.eoi(DomId(0), true, 21, &mut c).unwrap();
    assert!(c.masked[21]);
    t.port_closed(DomId(1), 3, &mut c);
    assert!(!c.masked[21]);
    assert_eq!(t.status(DomId(0), true, 21), Ok(XENIRQSTAT_NEEDS_EOI));
}

#[test]
fn first_guest_not_sharing_refuses_others() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.map_gsi(D0, D0, 22, 22).unwrap();
    t.map_gsi(D0, DU, 22, 22).unwrap();
    t.bind(DomId(0), 22, 1, false, &mut c).unwrap();
    assert_eq!(t.bind(DomId(1), 22, 1, true, &mut c), Err(PirqError::Busy));
}

#[test]
fn max_guests() {
    let mut t = table();
    let mut c = FakeChip::new();
    for d in 0..8u16 {
        let hw = d == 0;
        t.map_gsi(D0, (DomId(d), hw), 17, 17).unwrap();
    }
    for d in 0..7u16 {
        t.bind(DomId(d), 17, 1, true, &mut c).unwrap();
    }
    assert_eq!(t.bind(DomId(7), 17, 1, true, &mut c), Err(PirqError::Busy));
}

#[test]
fn hypervisor_irq_is_busy() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(t.map_gsi(D0, D0, 4, 4), Ok(4));
    assert_eq!(t.bind(DomId(0), 4, 1, false, &mut c), Err(PirqError::Busy));
    assert!(c.masked[4]);
}

#[test]
fn map_refusals() {
    let mut t = table();
    // Out of range GSI.
    assert_eq!(t.map_gsi(D0, D0, -1, -1), Err(PirqError::Invalid));
    assert_eq!(t.map_gsi(D0, D0, 24, -1), Err(PirqError::Invalid));
    // IRQ 0 (the timer) is not dom0's.
    assert_eq!(t.map_gsi(D0, D0, 0, 0), Err(PirqError::NotPermitted));
    // pirq beyond nr_pirqs.
    assert_eq!(t.map_gsi(D0, D0, 5, 192), Err(PirqError::Invalid));
    // A non-hardware caller naming a GSI it has no pirq for.
    assert_eq!(t.map_gsi(DU, DU, 5, -1), Err(PirqError::Invalid));
    // Already mapped: the same pirq again is fine, another pirq is EEXIST, "any"
    // returns the caller's -1 as the error in 4.17 (EPERM).
    assert_eq!(t.map_gsi(D0, D0, 5, 5), Ok(5));
    assert_eq!(t.map_gsi(D0, D0, 5, 5), Ok(5));
    assert_eq!(t.map_gsi(D0, D0, 5, 6), Err(PirqError::Exists));
    assert_eq!(
        t.map_gsi(D0, D0, 5, -1).map_err(PirqError::errno),
        Err(Errno::EPERM)
    );
    // A pirq already taken by another IRQ: Xen logs and says 0.
    assert_eq!(t.map_gsi(D0, D0, 6, 5), Ok(5));
    assert_eq!(t.pirq_to_irq(DomId(0), 5), Some(5));
    assert_eq!(t.pirq_to_irq(DomId(0), 6), None);
}

#[test]
fn domu_has_nothing_until_granted() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert!(!t.pirq_permitted(DomId(1), false, 3));
    assert!(!t.irq_permitted(DomId(1), false, 3));
    // irq_permission: dom0's pirq must be mapped first.
    assert_eq!(
        t.irq_permission(D0, DU, 3, true),
        Err(PirqError::NotPermitted)
    );
    assert_eq!(t.irq_permission(D0, DU, 192, true), Err(PirqError::Invalid));
    t.map_gsi(D0, D0, 3, 3).unwrap();
    t.irq_permission(D0, DU, 3, true).unwrap();
    assert!(t.irq_permitted(DomId(1), false, 3));
    // Permission alone gives no pirq: a mapping is still needed.
    assert!(!t.pirq_permitted(DomId(1), false, 3));
    t.irq_permission(D0, DU, 3, false).unwrap();
    assert!(!t.irq_permitted(DomId(1), false, 3));
    assert_eq!(
        t.bind(DomId(1), 3, 1, false, &mut c),
        Err(PirqError::Invalid)
    );
}

#[test]
fn unmap_and_zombie() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(
        t.unmap(D0, 3, &mut c),
        Err(PirqError::Invalid),
        "not mapped"
    );
    assert_eq!(t.unmap(D0, -1, &mut c), Err(PirqError::Invalid));
    assert_eq!(t.unmap(D0, 192, &mut c), Err(PirqError::Invalid));
    t.map_gsi(D0, D0, 3, 3).unwrap();
    t.unmap(D0, 3, &mut c).unwrap();
    assert_eq!(t.pirq_to_irq(DomId(0), 3), None);
    // Xen takes the IRQ away from the domain on unmap (even dom0).
    assert!(!t.irq_permitted(DomId(0), true, 3));
    assert_eq!(t.map_gsi(D0, D0, 3, 3), Err(PirqError::NotPermitted));

    // Unmapping a bound level pirq in flight: forced unbind, the pin is masked,
    // the port stays a pirq port (zombie) until closed.
    t.map_gsi(D0, D0, 18, 18).unwrap();
    t.bind(DomId(0), 18, 4, false, &mut c).unwrap();
    assert!(t.on_irq(18, &mut c));
    t.unmap(D0, 18, &mut c).unwrap();
    assert!(c.masked[18]);
    assert_eq!(t.port_of(DomId(0), 18), None);
    assert_eq!(
        t.eoi(DomId(0), true, 18, &mut c),
        Ok(None),
        "pirq info left"
    );
    assert_eq!(t.unmap(D0, 18, &mut c), Err(PirqError::Invalid));
    assert!(!t.on_irq(18, &mut c));
    assert_eq!(deliveries(&mut t), vec![]);
}

#[test]
fn zombie_blocks_remap_until_closed() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.map_gsi(D0, DU, 19, 16).unwrap();
    t.bind(DomId(1), 16, 2, false, &mut c).unwrap();
    t.unmap(DU, 16, &mut c).unwrap();
    // The IRQ still names the zombie pirq: any-pirq is EBUSY, another pirq EEXIST.
    assert_eq!(t.map_gsi(D0, DU, 19, -1), Err(PirqError::Busy));
    assert_eq!(t.map_gsi(D0, DU, 19, 17), Err(PirqError::Exists));
    // The port is still there (bind_pirq's EEXIST check, the close to come).
    assert_eq!(t.bound_ports(DomId(1)).collect::<Vec<_>>(), vec![(2, 16)]);
    t.port_closed(DomId(1), 2, &mut c);
    assert_eq!(t.map_gsi(D0, DU, 19, -1), Ok(16));
}

#[test]
fn eoi_and_status_refusals() {
    let mut t = table();
    let mut c = FakeChip::new();
    assert_eq!(t.eoi(DomId(0), true, 192, &mut c), Err(PirqError::Invalid));
    assert_eq!(t.eoi(DomId(0), true, 3, &mut c), Err(PirqError::Invalid));
    assert_eq!(t.status(DomId(0), true, 192), Err(PirqError::Invalid));
    assert_eq!(t.status(DomId(0), true, 3), Ok(XENIRQSTAT_NEEDS_EOI));
    assert_eq!(t.status(DomId(1), false, 55), Ok(XENIRQSTAT_NEEDS_EOI));
    assert_eq!(t.status(DomId(1), false, 56), Err(PirqError::Invalid));
}

#[test]
fn eoi_bitmap() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.set_eoi_map(DomId(0), true, Mfn(0x1234), false).unwrap();
    assert_eq!(
        t.set_eoi_map(DomId(0), true, Mfn(0x1235), true),
        Err(PirqError::Busy)
    );
    t.map_gsi(D0, D0, 3, 3).unwrap();
    t.map_gsi(D0, D0, 16, 16).unwrap();
    t.bind(DomId(0), 3, 1, false, &mut c).unwrap();
    t.bind(DomId(0), 16, 2, false, &mut c).unwrap();
    assert_eq!(c.eoi_bits, vec![(0x1234, 3, false), (0x1234, 16, true)]);
    // v2: EOI does not unmask the port.
    assert_eq!(t.eoi(DomId(0), true, 16, &mut c), Ok(None));
    // Teardown returns the frame for its reference to be dropped.
    assert_eq!(
        t.domain_destroyed(DomId(0), &mut c, |_| {}),
        Some(Mfn(0x1234))
    );
}

#[test]
fn eoi_bitmap_v1_auto_unmasks() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.set_eoi_map(DomId(0), true, Mfn(7), true).unwrap();
    t.map_gsi(D0, D0, 16, 16).unwrap();
    t.bind(DomId(0), 16, 9, false, &mut c).unwrap();
    assert_eq!(t.eoi(DomId(0), true, 16, &mut c), Ok(Some(9)));
}

#[test]
fn teardown_releases_everything() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.map_gsi(D0, DU, 20, 20).unwrap();
    t.map_gsi(D0, D0, 20, 20).unwrap();
    t.bind(DomId(0), 20, 1, true, &mut c).unwrap();
    t.bind(DomId(1), 20, 1, true, &mut c).unwrap();
    assert!(t.on_irq(20, &mut c));
    t.eoi(DomId(0), true, 20, &mut c).unwrap();
    assert!(c.masked[20], "the domU owes an EOI");
    assert_eq!(t.domain_destroyed(DomId(1), &mut c, |_| {}), None);
    assert!(!c.masked[20], "its death gives it");
    assert!(!t.irq_permitted(DomId(1), false, 20));
    assert_eq!(t.pirq_to_irq(DomId(1), 20), None);
    assert_eq!(t.status(DomId(0), true, 20), Ok(XENIRQSTAT_NEEDS_EOI));
    assert_eq!(t.domain_destroyed(DomId(0), &mut c, |_| {}), None);
    assert!(c.masked[20], "no guest left: masked");
    assert!(!t.on_irq(20, &mut c));
    // Every mapping slot is free again.
    assert!(t.maps.iter().all(Option::is_none));
}

#[test]
fn unbound_irq_is_masked_when_it_fires() {
    let mut t = table();
    let mut c = FakeChip::new();
    c.masked[9] = false;
    assert!(!t.on_irq(9, &mut c));
    assert!(c.masked[9]);
}

#[test]
fn setup_gsi_as_mp_register_gsi() {
    let mut t = table();
    let mut c = FakeChip::new();
    t.setup_gsi(16, 0, 0, &mut c).unwrap();
    assert_eq!(c.programmed, vec![(16, Trigger::Edge, Polarity::High)]);
    assert_eq!(t.mode(16), Some((Trigger::Edge, Polarity::High)));
    assert_eq!(t.setup_gsi(16, 1, 1, &mut c), Err(PirqError::Exists));
    t.map_gsi(D0, D0, 17, 17).unwrap();
    t.bind(DomId(0), 17, 1, false, &mut c).unwrap();
    assert_eq!(t.setup_gsi(17, 1, 1, &mut c), Err(PirqError::Exists));
    // An edge GSI set up as level is then masked until EOI.
    t.setup_gsi(3, 1, 1, &mut c).unwrap();
    t.map_gsi(D0, D0, 3, 3).unwrap();
    t.bind(DomId(0), 3, 2, false, &mut c).unwrap();
    assert!(t.on_irq(3, &mut c));
    assert!(c.masked[3]);
}

#[test]
fn free_pirq_order() {
    let mut t = table();
    for i in 16..24u32 {
        assert_eq!(t.map_gsi(D0, D0, i as i32, -1), Ok(i));
    }
    // The GSI range is used up: from the top of nr_pirqs down.
    assert_eq!(t.map_gsi(D0, D0, 1, -1), Ok(191));
    assert_eq!(t.map_gsi(D0, D0, 2, -1), Ok(190));
}

#[test]
fn dom0_maps_by_its_own_pirq() {
    let mut t = table();
    // dom0 mapped GSI 21 as pirq 3; a map of "index 3" then means IRQ 21.
    t.map_gsi(D0, D0, 21, 3).unwrap();
    assert_eq!(t.pirq_to_irq(DomId(0), 3), Some(21));
    assert_eq!(t.map_gsi(D0, DU, 3, -1), Ok(16));
    assert_eq!(t.pirq_to_irq(DomId(1), 16), Some(21));
}

/// A chip with a device behind it (`crate::msi`'s fake: MSI-X with 2 entries at
/// 0x98, MSI at 0x50).
struct MsiChip {
    io: FakeChip,
    dev: crate::msi::tests::FakeDev,
}

impl IrqChip for MsiChip {
    fn program(&mut self, irq: u32, t: Trigger, p: Polarity) {
        self.io.program(irq, t, p);
    }
    fn mask(&mut self, irq: u32) {
        self.io.mask(irq);
    }
    fn unmask(&mut self, irq: u32) {
        self.io.unmask(irq);
    }
    fn eoi_bit(&mut self, map: Mfn, pirq: u32, set: bool) {
        self.io.eoi_bit(map, pirq, set);
    }
    fn msi_hw(&mut self) -> Option<&mut dyn MsiHw> {
        Some(&mut self.dev)
    }
    fn apic_id(&self) -> u8 {
        0
    }
}

fn msi_chip() -> MsiChip {
    MsiChip {
        io: FakeChip::new(),
        dev: crate::msi::tests::FakeDev::new(2),
    }
}

const DEV: Sbdf = Sbdf {
    seg: 0,
    bus: 0,
    devfn: 4 << 3,
};

fn vctl(c: &MsiChip, entry: u64) -> u32 {
    c.dev.table[&(crate::msi::tests::BAR1 + entry * 16 + 12)]
}

#[test]
fn msix_map_bind_deliver_unmap() {
    let mut t = table();
    let mut c = msi_chip();
    let (pirq, src) = t
        .map_msi(D0, D0, -1, -1, DEV, true, Some(1), &mut c)
        .unwrap();
    // MSI pirqs from the top of dom0's range down, IRQs from nr_irqs_gsi up.
    assert_eq!(pirq, 191);
    let irq = t.pirq_to_irq(DomId(0), pirq).unwrap();
    assert_eq!(irq, 24);
    assert_eq!(t.msi_vector(irq), Some(MSI_VECTOR_BASE));
    assert_eq!(t.vector_msi_irq(u64::from(MSI_VECTOR_BASE)), Some(24));
    assert_eq!(t.vector_msi_irq(u64::from(MSI_VECTOR_BASE) - 1), None);
    assert_eq!(t.msi_source(DomId(0), pirq), Some(src));
    assert!(t.irq_permitted(DomId(0), true, irq));
    // the entry carries the vector, masked until bound
    let e = crate::msi::tests::BAR1 + 16;
    assert_eq!(c.dev.table[&(e + 8)] & 0xFF, u32::from(MSI_VECTOR_BASE));
    assert_eq!(vctl(&c, 1), 1);
    t.bind(DomId(0), pirq, 5, false, &mut c).unwrap();
    assert_eq!(vctl(&c, 1), 0, "bound: unmasked");
    // edge: delivered, never masked, the EOI does nothing
    assert!(t.on_irq(irq, &mut c));
    assert_eq!(deliveries(&mut t), vec![(0, 5)]);
    assert_eq!(vctl(&c, 1), 0);
    assert_eq!(t.eoi(DomId(0), true, pirq, &mut c), Ok(None));
    assert!(t.on_irq(irq, &mut c));
    assert_eq!(deliveries(&mut t), vec![(0, 5)]);
    assert_eq!((t.count(irq), t.msi_count()), (2, 2));
    // a second map of the same entry is refused; another entry gets the next IRQ
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, true, Some(1), &mut c),
        Err(PirqError::Busy)
    );
    let (p2, _) = t
        .map_msi(D0, D0, -1, -1, DEV, true, Some(0), &mut c)
        .unwrap();
    assert_eq!((p2, t.pirq_to_irq(DomId(0), p2)), (190, Some(24 + 1)));
    // the port closes (unbound: masked), then unmap destroys the IRQ and frees
    // its vector
    t.port_closed(DomId(0), 5, &mut c);
    assert_eq!(vctl(&c, 1), 1);
    let freed = t.unmap(D0, pirq as i32, &mut c).unwrap();
    assert_eq!(freed, Some(src));
    assert_eq!(vctl(&c, 1), 1);
    assert!(!t.irq_permitted(DomId(0), true, irq));
    assert!(!t.on_irq(irq, &mut c));
    let (p3, _) = t
        .map_msi(D0, D0, -1, -1, DEV, true, Some(1), &mut c)
        .unwrap();
    assert_eq!(t.pirq_to_irq(DomId(0), p3), Some(24), "IRQ 24 reused");
    // teardown frees the rest
    let mut released = Vec::new();
    t.domain_destroyed(DomId(0), &mut c, |s| released.push(s));
    assert_eq!(released.len(), 2);
    assert_eq!((vctl(&c, 0), vctl(&c, 1)), (1, 1));
    let ro_now: i32 = c.dev.ro.iter().map(|r| if r.2 { 1 } else { -1 }).sum();
    assert_eq!(ro_now, 0, "every read-only range given back");
}

#[test]
fn msi_map_refusals() {
    let mut t = table();
    let mut c = msi_chip();
    // an unknown device: -ENODEV, and the IRQ it created is gone again
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, false, Some(0), &mut c),
        Err(PirqError::NoDevice)
    );
    // an entry beyond the table: -EINVAL from the device code
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, true, Some(2), &mut c)
            .map_err(PirqError::errno),
        Err(Errno::EINVAL)
    );
    // an index that is not an MSI IRQ (a GSI, or one never created): -EINVAL
    assert_eq!(
        t.map_msi(D0, D0, 11, -1, DEV, true, Some(0), &mut c),
        Err(PirqError::Invalid)
    );
    assert_eq!(
        t.map_msi(D0, D0, 30, -1, DEV, true, Some(0), &mut c),
        Err(PirqError::Invalid)
    );
    // a pirq beyond the domain's: -EINVAL
    assert_eq!(
        t.map_msi(D0, D0, -1, 192, DEV, true, Some(0), &mut c),
        Err(PirqError::Invalid)
    );
    // a domU's own map (the hypercall layer refuses it first; the table needs the
    // IRQ to be the caller's, which create_irq grants)
    assert!(
        c.dev.table.is_empty() && c.dev.ro.is_empty(),
        "nothing programmed"
    );
    // every refusal left the IRQs free: the first success gets IRQ 24
    let (p, _) = t.map_msi(D0, D0, -1, -1, DEV, true, None, &mut c).unwrap();
    assert_eq!(t.pirq_to_irq(DomId(0), p), Some(24));
    // the MSI capability: one map per device
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, true, None, &mut c),
        Err(PirqError::Busy)
    );
    // the MSI vectors run out: -EINVAL, as Xen's create_irq failing
    let mut t = table();
    for i in 0..MSI_VECTORS {
        let mut c = msi_chip();
        let dev = Sbdf {
            devfn: u8::try_from(i).unwrap(),
            ..DEV
        };
        t.map_msi(D0, D0, -1, -1, dev, true, Some(0), &mut c)
            .unwrap_or_else(|e| panic!("{i}: {e:?}"));
    }
    let mut c = msi_chip();
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, true, Some(0), &mut c),
        Err(PirqError::Invalid)
    );
}

#[test]
fn a_bound_msi_survives_until_its_port_closes() {
    let mut t = table();
    let mut c = msi_chip();
    let (pirq, _) = t
        .map_msi(D0, D0, -1, -1, DEV, true, Some(0), &mut c)
        .unwrap();
    t.bind(DomId(0), pirq, 7, false, &mut c).unwrap();
    assert_eq!(vctl(&c, 0), 0);
    // unmapped while bound: a zombie until the port closes; the vector is masked
    // and freed at once
    t.unmap(D0, pirq as i32, &mut c).unwrap();
    assert_eq!(vctl(&c, 0), 1);
    assert_eq!(t.pirq_to_irq(DomId(0), pirq), None);
    assert!(t.bound_ports(DomId(0)).any(|(p, _)| p == 7));
    // as in Xen, the IRQ number still names the zombie's pirq: the same IRQ,
    // created again, cannot get a new pirq until the port closes (-EBUSY)
    assert_eq!(
        t.map_msi(D0, D0, -1, -1, DEV, true, Some(0), &mut c),
        Err(PirqError::Busy)
    );
    t.port_closed(DomId(0), 7, &mut c);
    assert!(t.bound_ports(DomId(0)).next().is_none());
    assert!(
        t.map_msi(D0, D0, -1, -1, DEV, true, Some(0), &mut c)
            .is_ok()
    );
}
