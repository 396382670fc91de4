//! The IO-APIC(s) named by the MADT: each GSI's redirection entry (vector
//! `GSI_VECTOR_BASE + gsi` on the boot CPU's local APIC, masked until a guest binds
//! it). The policy (modes, vectors, entry encoding) is `xlhv_core::ioapic`.

use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use xlhv_core::ioapic::{Polarity, Trigger, gsi_vector, redirection_entry};

const REG_VER: u32 = 0x01;
const REG_RTE0: u32 = 0x10;

/// One IO-APIC: mapped registers, first GSI, pins.
#[derive(Clone, Copy, Debug)]
struct Chip {
    mmio: u64,
    gsi_base: u32,
    pins: u32,
}

/// Up to eight IO-APICs.
static CHIPS: Mutex<heapless::Vec<Chip, 8>> = Mutex::new(heapless::Vec::new());
/// The destination: the boot CPU's APIC id.
static DEST: AtomicU64 = AtomicU64::new(0);

fn read(c: &Chip, reg: u32) -> u32 {
    // SAFETY: `mmio` maps the IO-APIC's register window uncached (ioremap in
    // `init`); IOREGSEL is at 0, IOWIN at 0x10. Callers hold CHIPS, so the
    // select/access pair is not interleaved.
    unsafe {
        core::ptr::write_volatile(c.mmio as *mut u32, reg);
        core::ptr::read_volatile((c.mmio + 0x10) as *const u32)
    }
}

fn write(c: &Chip, reg: u32, v: u32) {
    // SAFETY: as in `read`.
    unsafe {
        core::ptr::write_volatile(c.mmio as *mut u32, reg);
        core::ptr::write_volatile((c.mmio + 0x10) as *mut u32, v);
    }
}

fn chip_of(chips: &[Chip], gsi: u32) -> Option<(Chip, u32)> {
    chips
        .iter()
        .find(|c| gsi >= c.gsi_base && gsi - c.gsi_base < c.pins)
        .map(|c| (*c, gsi - c.gsi_base))
}

fn rte_index(pin: u32) -> u32 {
    REG_RTE0 + pin * 2
}

/// Maps every IO-APIC, masks all of its pins, and returns the number of GSIs
/// (one past the highest).
pub fn init(ioapics: &[(u8, u64, u32)], dest_apic_id: u32) -> u32 {
    DEST.store(u64::from(dest_apic_id), Ordering::Relaxed);
    let mut chips = CHIPS.lock();
    let mut nr = 0;
    for &(id, pa, gsi_base) in ioapics {
        let Some(mmio) = super::paging::ioremap(pa, 0x20) else {
            log::error!("ioapic: cannot map IO-APIC {id} at {pa:#x}");
            continue;
        };
        let mut c = Chip {
            mmio,
            gsi_base,
            pins: 0,
        };
        c.pins = ((read(&c, REG_VER) >> 16) & 0xFF) + 1;
        for pin in 0..c.pins {
            let e = read(&c, rte_index(pin));
            write(&c, rte_index(pin), e | (1 << 16));
        }
        log::info!(
            "ioapic: IO-APIC {id} at {pa:#x}: GSIs {}-{}",
            gsi_base,
            gsi_base + c.pins - 1
        );
        nr = nr.max(gsi_base + c.pins);
        if chips.push(c).is_err() {
            log::warn!("ioapic: more than 8 IO-APICs; the rest are ignored");
        }
    }
    nr
}

/// Writes GSI `gsi`'s redirection entry: its vector, this mode, masked or not.
pub fn program(gsi: u32, trigger: Trigger, polarity: Polarity, masked: bool) {
    let Some(vector) = gsi_vector(gsi) else {
        return;
    };
    let dest = u8::try_from(DEST.load(Ordering::Relaxed)).unwrap_or(0);
    let chips = CHIPS.lock();
    let Some((c, pin)) = chip_of(&chips, gsi) else {
        return;
    };
    let e = redirection_entry(vector, dest, trigger, polarity, masked);
    // High half (destination) first, so that an unmasked low half never pairs with
    // a stale destination.
    let [lo, hi] = [e & 0xFFFF_FFFF, e >> 32].map(|h| u32::try_from(h).unwrap_or(0));
    write(&c, rte_index(pin) + 1, hi);
    write(&c, rte_index(pin), lo);
}

/// Sets or clears the mask bit of GSI `gsi`.
pub fn set_masked(gsi: u32, masked: bool) {
    let chips = CHIPS.lock();
    let Some((c, pin)) = chip_of(&chips, gsi) else {
        return;
    };
    let e = read(&c, rte_index(pin));
    let e = if masked {
        e | (1 << 16)
    } else {
        e & !(1 << 16)
    };
    write(&c, rte_index(pin), e);
}
