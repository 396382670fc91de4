//! The LDT of the vCPU a CPU runs, as Xen keeps it for PV guests.
//!
//! A guest names its LDT by linear address (`MMUEXT_SET_LDT`); the CPU must never read
//! descriptors through the guest's own mappings, which the guest can change. So each
//! CPU has an LDT area in the hypervisor's range (`layout::LDT_AREA_BASE`) and LDTR
//! points there, with the guest's limit. The area's pages start absent: the CPU's
//! first read of one faults, the portable code finds the guest page behind it, makes it
//! a descriptor page (audited, type `SegDesc`, so it can no longer be mapped writable)
//! and records it in the vCPU (`ldt_frames`), and [`load`] maps it here. The area
//! always shows exactly the running vCPU's recorded pages; with no LDT, LDTR is null.

use super::layout::{LDT_AREA_BASE, LDT_AREA_SIZE};
use super::percpu::MAX_CPUS;
use spin::Mutex;
use xlhv_core::mm::Mfn;
use xlhv_core::mm::mmu::LDT_PAGES;
use xlhv_core::vcpu::Vcpu;

/// Leaf flags of an LDT page: present, writable (the CPU sets accessed bits in
/// descriptors), not executable, supervisor only.
const PTE_FLAGS: u64 = 1 | 2 | (1 << 63);

/// This CPU's LDT area and what is loaded in it.
struct Area {
    /// The L1 table of the area, in the direct map (0 until [`init`]).
    l1: u64,
    /// The entries written there, to write only what changes.
    ptes: [u64; LDT_PAGES],
    /// LDTR's entries now (0 = null LDTR).
    ents: u32,
    /// Where the area is (`area_base` of its CPU).
    base: u64,
}

static AREAS: [Mutex<Area>; MAX_CPUS] = [const {
    Mutex::new(Area {
        l1: 0,
        ptes: [0; LDT_PAGES],
        ents: 0,
        base: 0,
    })
}; MAX_CPUS];

/// CPU `cpu`'s LDT area.
const fn area_base(cpu: usize) -> u64 {
    LDT_AREA_BASE + cpu as u64 * LDT_AREA_SIZE
}

/// Gives every CPU's LDT area its page table (at boot, before any other CPU starts);
/// LDTR stays null (`gdt::init`).
pub fn init() -> Option<()> {
    for (cpu, area) in AREAS.iter().enumerate() {
        let base = area_base(cpu);
        let l1 = super::paging::l1_table_for(base)?;
        let index = (base >> 12) & 511;
        let mut a = area.lock();
        a.l1 = l1 + index * 8;
        a.base = base;
    }
    Some(())
}

/// The offset into the LDT of `va`, if it lies in this CPU's LDT area.
pub fn area_offset(va: u64) -> Option<u64> {
    let off = va.checked_sub(area_base(super::percpu::index()))?;
    (off < LDT_AREA_SIZE).then_some(off)
}

impl Area {
    /// Writes entry `i` of the area if it changes, and drops its old translation.
    fn set(&mut self, i: usize, pte: u64) {
        let Some(cur) = self.ptes.get_mut(i) else {
            return;
        };
        if *cur == pte || self.l1 == 0 {
            return;
        }
        *cur = pte;
        let at = (self.l1 + 8 * i as u64) as *mut u64;
        // SAFETY: `l1` is this area's slice of an L1 table of the hypervisor's own
        // range (set up by `init`) and `i` < 16 lies within it; only this module
        // writes these entries.
        unsafe { core::ptr::write_volatile(at, pte) };
        let va = self.base + 4096 * i as u64;
        x86_64::instructions::tlb::flush(x86_64::VirtAddr::new(va));
    }
}

/// Makes the CPU's LDT the vCPU's: its recorded pages mapped, the others absent, and
/// LDTR loaded with its limit (null without an LDT).
pub fn load(v: &Vcpu) {
    let mut area = super::percpu::mine(&AREAS).lock();
    for i in 0..LDT_PAGES {
        let pte = v
            .ldt_frames
            .get(i)
            .copied()
            .flatten()
            .map_or(0, |m| (m.0 << 12) | PTE_FLAGS);
        area.set(i, pte);
    }
    if area.ents != v.ldt_ents {
        area.ents = v.ldt_ents;
        super::gdt::load_ldt(area.base, v.ldt_ents);
    }
}

/// Takes `frames` out of every CPU's area that maps them (their domain is going away
/// and was the last to run there). Such a CPU runs no vCPU of that domain (teardown
/// waits for that), so nothing reads the entries; the translation its TLB may keep
/// goes at its next CR3 load, which comes before it runs anything else (global pages
/// are off).
pub fn unmap_frames(frames: &[Mfn]) {
    for area in &AREAS {
        let mut area = area.lock();
        for i in 0..LDT_PAGES {
            let mapped = area.ptes.get(i).copied().unwrap_or(0);
            if mapped != 0 && frames.iter().any(|m| (m.0 << 12) | PTE_FLAGS == mapped) {
                area.set(i, 0);
            }
        }
    }
}
