//! Device interrupts: the machine's [`IrqTable`] (pirqs, bindings, in-flight
//! counts) over the IO-APIC driver, the first-level handler that runs on a GSI's
//! vector, and the hand-over of the ports to raise to the domain code. See
//! `docs/devices.md`, "Interrupts".

use crate::arch::x86_64::layout::DIRECTMAP_BASE;
use crate::arch::x86_64::{apic, ioapic};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::ioapic::{MAX_GSIS, Polarity, Trigger, gsi_mode, isa_irq_gsi, vector_gsi};
use xlhv_core::mm::Mfn;
use xlhv_core::pirq::{IrqChip, IrqTable};

/// Every IRQ and pirq. Lock order: the domain table, the port tables, then this.
pub static IRQS: Mutex<IrqTable> = Mutex::new(IrqTable::new());

/// A GSI fired and its ports are still to be raised.
static PENDING: AtomicBool = AtomicBool::new(false);

/// The IO-APIC and the domains' EOI bitmaps, as [`IrqTable`] drives them.
#[derive(Debug)]
pub struct HwChip;

impl IrqChip for HwChip {
    fn program(&mut self, irq: u32, trigger: Trigger, polarity: Polarity) {
        ioapic::program(irq, trigger, polarity, true);
    }
    fn mask(&mut self, irq: u32) {
        ioapic::set_masked(irq, true);
    }
    fn unmask(&mut self, irq: u32) {
        ioapic::set_masked(irq, false);
    }
    fn eoi_bit(&mut self, map: Mfn, pirq: u32, set: bool) {
        if pirq >= 4096 * 8 {
            return;
        }
        let pa = (map.0 << 12) + u64::from(pirq / 64) * 8;
        let m = 1u64 << (pirq % 64);
        // SAFETY: `map` is a frame of the domain on which it holds a writable type
        // reference (taken by PHYSDEVOP_pirq_eoi_gmfn, dropped at its teardown), so
        // it is RAM in the direct map; the word is 8-byte aligned and the guest
        // uses it with atomic bit operations too.
        let w = unsafe { AtomicU64::from_ptr((DIRECTMAP_BASE + pa) as *mut u64) };
        if set {
            w.fetch_or(m, Ordering::SeqCst);
        } else {
            w.fetch_and(!m, Ordering::SeqCst);
        }
    }
}

/// Sets up the IO-APIC(s) from the MADT: every pin masked, then each GSI programmed
/// with its vector and the mode its override (or the ISA/PCI default) gives. The
/// hypervisor keeps COM1's IRQ.
pub fn init(acpi: &crate::boot::acpi::AcpiInfo) {
    if acpi.ioapics.is_empty() {
        log::warn!("ioapic: none in the MADT; no device interrupts for guests");
        return;
    }
    let nr = ioapic::init(&acpi.ioapics, apic::id()).min(MAX_GSIS);
    let overrides = acpi.overrides.clone();
    let com1 = isa_irq_gsi(4, &overrides);
    let cpus = u32::try_from(acpi.apic_ids.len().max(1)).unwrap_or(1);
    let mut t = IRQS.lock();
    t.init(nr, cpus, |g| gsi_mode(g, &overrides), &[com1]);
    for g in 0..nr {
        if let Some((tr, po)) = t.mode(g) {
            ioapic::program(g, tr, po, true);
        }
    }
    log::info!(
        "irq: {} GSIs on vectors {:#x}.., {} overrides, dom0 gets {} pirqs, a domU {}",
        t.nr_gsis(),
        xlhv_core::ioapic::GSI_VECTOR_BASE,
        overrides.len(),
        t.nr_pirqs(true),
        t.nr_pirqs(false)
    );
}

/// The first-level handler: if `vector` is a GSI's, mask it if it is level-triggered
/// and bound, account the guests' in-flight pirqs, EOI the local APIC and note that
/// ports are to be raised. False for any other vector.
#[inline]
pub fn on_vector(vector: u64) -> bool {
    let Some(gsi) = vector_gsi(vector) else {
        return false;
    };
    let deliver = IRQS.lock().on_irq(gsi, &mut HwChip);
    apic::eoi();
    if deliver {
        PENDING.store(true, Ordering::SeqCst);
    }
    true
}

/// Calls `f(domain, port)` for every port to raise since the last call (nothing if
/// no GSI fired). `f` runs without the IRQ lock held.
pub fn take_deliveries(mut f: impl FnMut(DomId, u32)) {
    if !PENDING.swap(false, Ordering::SeqCst) {
        return;
    }
    let mut out: heapless::Vec<(DomId, u32), 256> = heapless::Vec::new();
    IRQS.lock().take_deliveries(|d, p| {
        let _ = out.push((d, p));
    });
    for (d, p) in out {
        f(d, p);
    }
}

/// Domain `dom` is being torn down: its pirqs are unbound and unmapped. Returns its
/// EOI bitmap frame, whose type reference the caller drops.
pub fn domain_destroyed(dom: DomId) -> Option<Mfn> {
    IRQS.lock().domain_destroyed(dom, &mut HwChip)
}

/// Logs how many interrupts each GSI took (at the machine's end).
pub fn report() {
    let t = IRQS.lock();
    for g in 0..t.nr_gsis() {
        let n = t.count(g);
        if n > 0 {
            log::info!("irq: GSI {g}: {n} interrupts");
        }
    }
}
