//! Device interrupts: the machine's [`IrqTable`] (pirqs, bindings, in-flight
//! counts) over the IO-APIC driver and the MSI/MSI-X hardware access, the
//! first-level handler that runs on a GSI's or an MSI IRQ's vector, and the
//! hand-over of the ports to raise to the domain code. See `docs/devices.md`,
//! "Interrupts" and "MSI and MSI-X".

use crate::arch::x86_64::layout::DIRECTMAP_BASE;
use crate::arch::x86_64::{apic, ioapic};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::ioapic::{MAX_GSIS, Polarity, Trigger, gsi_mode, isa_irq_gsi, vector_gsi};
use xlhv_core::mm::Mfn;
use xlhv_core::msi::MsiHw;
use xlhv_core::pci::{Sbdf, cf8_of};
use xlhv_core::pirq::{IrqChip, IrqTable, MSI_VECTOR_BASE, MSI_VECTORS};

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
    fn msi_hw(&mut self) -> Option<&mut dyn MsiHw> {
        Some(self)
    }
    fn apic_id(&self) -> u8 {
        u8::try_from(apic::id()).unwrap_or(0)
    }
}

/// MSI-X table pages the hypervisor mapped (machine page, virtual address); mapped
/// once and kept, as `ioremap` mappings are permanent.
static MSIX_PAGES: Mutex<heapless::Vec<(u64, u64), 64>> = Mutex::new(heapless::Vec::new());

/// The hypervisor's address of the MSI-X table dword at machine address `addr`.
fn msix_va(addr: u64) -> Option<u64> {
    if addr % 4 != 0 {
        return None;
    }
    let page = addr & !0xFFF;
    // A BAR that points into RAM (dom0 programs BARs) gets no writes from here.
    if crate::mm::direct(page, 4096).is_some() {
        return None;
    }
    let mut pages = MSIX_PAGES.lock();
    let va = match pages.iter().find(|p| p.0 == page) {
        Some(&(_, va)) => va,
        None => {
            let va = crate::arch::x86_64::paging::ioremap(page, 4096)?;
            pages.push((page, va)).ok()?;
            va
        }
    };
    Some(va + (addr & 0xFFF))
}

impl MsiHw for HwChip {
    fn cfg_read(&mut self, sbdf: Sbdf, reg: u16, size: u8) -> u32 {
        if sbdf.seg != 0 || reg >= 256 {
            return u32::MAX;
        }
        crate::pci::conf_read(cf8_of(sbdf.bus, sbdf.devfn, reg), (reg & 3) as u8, size)
    }
    fn cfg_write(&mut self, sbdf: Sbdf, reg: u16, size: u8, val: u32) {
        if sbdf.seg != 0 || reg >= 256 {
            return;
        }
        crate::pci::conf_write(
            cf8_of(sbdf.bus, sbdf.devfn, reg),
            (reg & 3) as u8,
            size,
            val,
        );
    }
    fn mmio_read32(&mut self, addr: u64) -> u32 {
        match msix_va(addr) {
            // SAFETY: `va` maps the device's MSI-X table page uncached (ioremap), the
            // dword is aligned; reading an MSI-X table has no side effects.
            Some(va) => unsafe { core::ptr::read_volatile(va as *const u32) },
            None => u32::MAX,
        }
    }
    fn mmio_write32(&mut self, addr: u64, val: u32) {
        if let Some(va) = msix_va(addr) {
            // SAFETY: as in `mmio_read32`; the address is an entry of a table the
            // MSI code located through the device's own BAR and capability, so the
            // write programs that device's interrupt and touches no memory.
            unsafe { core::ptr::write_volatile(va as *mut u32, val) };
        }
    }
    fn ro_frames(&mut self, first: u64, last: u64, ro: bool) {
        crate::mmhw::mmio_ro(first, last, ro);
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

/// The first-level handler: if `vector` is a GSI's or an MSI IRQ's, mask it if it is
/// level-triggered and bound, account the guests' in-flight pirqs, EOI the local APIC
/// and note that ports are to be raised. False for any other vector, at the cost of
/// one compare for an exception (below 0x30) and two more for other vectors.
#[inline]
pub fn on_vector(vector: u64) -> bool {
    if vector < u64::from(xlhv_core::ioapic::GSI_VECTOR_BASE) {
        return false;
    }
    let deliver = match vector_gsi(vector) {
        Some(gsi) => IRQS.lock().on_irq(gsi, &mut HwChip),
        None => {
            let msi = u64::from(MSI_VECTOR_BASE);
            if !(msi..msi + u64::from(MSI_VECTORS)).contains(&vector) {
                return false;
            }
            let mut t = IRQS.lock();
            let Some(irq) = t.vector_msi_irq(vector) else {
                return false;
            };
            t.on_irq(irq, &mut HwChip)
        }
    };
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
    let mut freed: heapless::Vec<Sbdf, 32> = heapless::Vec::new();
    let map = IRQS.lock().domain_destroyed(dom, &mut HwChip, |src| {
        let _ = freed.push(src.sbdf);
    });
    let mut pci = crate::pci::STATE.lock();
    for sbdf in freed {
        pci.set_msi_bound(sbdf, None);
    }
    map
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
    if t.msi_count() > 0 {
        log::info!("irq: MSI and MSI-X: {} interrupts", t.msi_count());
    }
}
