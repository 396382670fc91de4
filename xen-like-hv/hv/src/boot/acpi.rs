//! ACPI, read with the `acpi` crate: CPUs and APIC ids from the MADT, and the HPET.

use super::multiboot::AcpiRoot;
use crate::arch::x86_64::paging;
use acpi::madt::{Madt, MadtEntry};
use acpi::{AcpiHandler, AcpiTables, HpetInfo, PhysicalMapping};
use core::ptr::NonNull;
use heapless::Vec;

/// Most CPUs the hypervisor tracks.
pub const MAX_CPUS: usize = 256;

/// What the hypervisor learned from ACPI.
#[derive(Debug, Default)]
pub struct AcpiInfo {
    /// APIC ids of the usable CPUs, in MADT order (the boot CPU first on QEMU).
    pub apic_ids: Vec<u32, MAX_CPUS>,
    /// The ACPI processor id (UID) of each of `apic_ids`, in the same order.
    pub processor_uids: Vec<u32, MAX_CPUS>,
    /// HPET registers (physical) and number of comparators, if present.
    pub hpet: Option<(u64, u8)>,
    /// Frames from the HPET's base that its table says are protected (its page
    /// protection: 4 KiB = 1, 64 KiB = 16), 0 if it says nothing.
    pub hpet_protected_frames: u64,
    /// Physical addresses of the IO-APICs (MADT).
    pub io_apics: Vec<u64, 8>,
    /// IO-APICs: (id, registers (physical), first GSI).
    pub ioapics: Vec<(u8, u64, u32), 8>,
    /// Interrupt source overrides (ISA).
    pub overrides: Vec<xlhv_core::ioapic::SourceOverride, 16>,
    /// MMCONFIG regions (the `MCFG`; none on QEMU's `pc`).
    pub mcfg: Vec<xlhv_core::mcfg::McfgRegion, 8>,
}

/// Maps ACPI tables through the direct map, or the ioremap window if a table lies in
/// memory the direct map does not cover.
#[derive(Clone, Copy, Debug)]
struct Mapper;

impl AcpiHandler for Mapper {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let pa = physical_address as u64;
        let va = crate::mm::direct(pa, size as u64).or_else(|| paging::ioremap(pa, size as u64));
        let Some(ptr) = va.and_then(|va| NonNull::new(va as *mut T)) else {
            // The trait has no way to fail. Only broken firmware names such an address.
            panic!("acpi: cannot map table at {physical_address:#x} ({size} bytes)");
        };
        // SAFETY: `ptr` maps `size` bytes at `physical_address` (direct map or ioremap),
        // and the mapping is never removed.
        unsafe { PhysicalMapping::new(physical_address, ptr, size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// How many tables the RSDT or XSDT at `root` lists (its length past the header, in
/// 4- or 8-byte entries). Not `AcpiTables::headers`: that checksums each whole table
/// through a mapping of its header alone, which faults when a table crosses a page
/// boundary that the header does not.
fn root_entries(root: AcpiRoot) -> Option<u64> {
    const HEADER: u64 = 36;
    let pa = u64::try_from(root.table).ok()?;
    let va = crate::mm::direct(pa, HEADER).or_else(|| paging::ioremap(pa, HEADER))?;
    // SAFETY: `va` maps the 36-byte header of the root table (direct map or ioremap,
    // permanent); its length field is the 4 bytes at offset 4, read unaligned.
    let len = unsafe { core::ptr::read_unaligned((va + 4) as *const u32) };
    let entry = if root.revision == 0 { 4 } else { 8 };
    Some(u64::from(len).saturating_sub(HEADER) / entry)
}

/// Reads the MADT and HPET tables. Problems are logged; the result may be partial.
pub fn read(root: AcpiRoot) -> AcpiInfo {
    let mut info = AcpiInfo::default();
    // SAFETY: the address comes from the RSDP the boot loader copied into the boot
    // information; the crate validates the signature and checksum of what it maps.
    let tables = match unsafe { AcpiTables::from_rsdt(Mapper, root.revision, root.table) } {
        Ok(t) => t,
        Err(e) => {
            log::warn!(
                "acpi: cannot read the root table at {:#x}: {e:?}",
                root.table
            );
            return info;
        }
    };
    log::info!(
        "acpi: RSDP revision {}, {} at {:#x}, {} tables",
        root.revision,
        if root.revision == 0 { "RSDT" } else { "XSDT" },
        root.table,
        root_entries(root).unwrap_or(0)
    );
    match tables.find_table::<Madt>() {
        Ok(madt) => {
            for entry in madt.get().entries() {
                // Bit 0: enabled; bit 1: online capable (hot-pluggable, not present now).
                match entry {
                    MadtEntry::IoApic(e) => {
                        let _ = info.io_apics.push(u64::from(e.io_apic_address));
                        let _ = info.ioapics.push((
                            e.io_apic_id,
                            u64::from(e.io_apic_address),
                            e.global_system_interrupt_base,
                        ));
                    }
                    MadtEntry::InterruptSourceOverride(e) if e.bus == 0 => {
                        let _ = info.overrides.push(xlhv_core::ioapic::SourceOverride {
                            irq: e.irq,
                            gsi: e.global_system_interrupt,
                            flags: e.flags,
                        });
                    }
                    _ => {}
                }
                let id = match entry {
                    MadtEntry::LocalApic(e) if e.flags & 1 != 0 => {
                        Some((u32::from(e.apic_id), u32::from(e.processor_id)))
                    }
                    MadtEntry::LocalX2Apic(e) if e.flags & 1 != 0 => {
                        Some((e.x2apic_id, e.processor_uid))
                    }
                    _ => None,
                };
                if let Some((id, uid)) = id {
                    if info.apic_ids.push(id).is_err() {
                        log::warn!("acpi: more than {MAX_CPUS} CPUs; the rest are ignored");
                        break;
                    }
                    let _ = info.processor_uids.push(uid);
                }
            }
        }
        Err(e) => log::warn!("acpi: no usable MADT ({e:?}); assuming one CPU"),
    }
    if let Ok(m) = tables.find_table::<acpi::mcfg::Mcfg>() {
        let pa = m.physical_start() as u64;
        let len = u64::from(acpi::AcpiTable::header(&*m).length);
        let bytes = crate::mm::direct_slice(pa, len).or_else(|| {
            let va = paging::ioremap(pa, len)?;
            // SAFETY: `va` maps `len` bytes of the table (ioremap, permanent); the
            // firmware's tables are not written by anyone while they are read.
            Some(unsafe {
                core::slice::from_raw_parts(va as *const u8, usize::try_from(len).ok()?)
            })
        });
        match bytes.map(xlhv_core::mcfg::parse) {
            Some(Ok(regions)) => {
                for r in regions {
                    let _ = info.mcfg.push(r);
                }
            }
            Some(Err(e)) => log::warn!("acpi: MCFG at {pa:#x} refused: {e:?}"),
            None => log::warn!("acpi: cannot map the MCFG at {pa:#x}"),
        }
    }
    if let Ok(h) = HpetInfo::new(&tables) {
        info.hpet = Some((h.base_address as u64, h.num_comparators()));
        info.hpet_protected_frames = match h.page_protection {
            acpi::hpet::PageProtection::Protected4K => 1,
            acpi::hpet::PageProtection::Protected64K => 16,
            _ => 0,
        };
    }
    info
}
