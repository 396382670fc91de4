//! TLB shoot-downs between CPUs (Xen's `flush_area_mask`): before a frame changes
//! type or goes back to the allocator, and when a guest asks for a flush on other
//! vCPUs, every CPU that may hold a stale translation flushes before the operation
//! is reported done. `docs/smp.md` argues which CPUs that is.
//!
//! Global pages are off, so reloading CR3 empties the TLB (and paging-structure
//! caches) of every guest translation. A CPU on the hypervisor's own page tables (an
//! idle CPU) holds none, and loads a guest's tables only under the domain lock,
//! which every flusher holds: it is skipped.
//!
//! The asked CPU flushes in the IPI's handler, without any lock. A CPU that spins on
//! the domain lock with interrupts off flushes from its spin loop
//! ([`crate::domains`]' lock), so a flusher that holds the lock never waits for a
//! CPU that waits for it.

use super::percpu::{self, MAX_CPUS};
use core::sync::atomic::{AtomicBool, Ordering};

/// CPU n has been asked to flush and has not yet.
static ASKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Every CPU that is online, as a mask.
pub fn all_cpus() -> u64 {
    let n = super::smp::online().min(MAX_CPUS);
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

/// Flushes this CPU's TLB: every guest translation goes (global pages are off).
pub fn flush_local() {
    x86_64::instructions::tlb::flush_all();
}

/// Whether CPU `cpu` may hold translations of a guest: it is not on the
/// hypervisor's own page tables.
fn may_cache(cpu: usize) -> bool {
    percpu::of(cpu).is_some_and(|p| p.loaded.cr3.load(Ordering::Relaxed) != super::paging::root())
}

/// Flushes the TLB of every CPU in `cpus` (bit n: CPU n) that may hold guest
/// translations, this one included if it is in the mask, and returns when all have.
pub fn flush_cpus(cpus: u64) {
    let me = percpu::index();
    if cpus & (1 << me) != 0 {
        flush_local();
    }
    let mut waiting = 0u64;
    for cpu in 0..super::smp::online().min(MAX_CPUS) {
        if cpu == me || cpus & (1 << cpu) == 0 || !may_cache(cpu) {
            continue;
        }
        if let Some(a) = ASKED.get(cpu) {
            a.store(true, Ordering::Release);
            super::smp::send(cpu, super::idt::INVALIDATE_TLB_VECTOR);
            waiting |= 1 << cpu;
        }
    }
    let mut warn_at = crate::time::now_ns().saturating_add(1_000_000_000);
    while waiting != 0 {
        for (cpu, asked) in ASKED.iter().enumerate() {
            if waiting & (1 << cpu) != 0 && !asked.load(Ordering::Acquire) {
                waiting &= !(1 << cpu);
            }
        }
        // Another CPU may be flushing at the same time and wait for this one.
        service();
        core::hint::spin_loop();
        if waiting != 0 && crate::time::now_ns() > warn_at {
            // Not expected: the flush cannot be skipped, so say who holds it up.
            log::warn!("tlb: CPUs {waiting:#x} have not flushed for a second; waiting");
            warn_at = u64::MAX;
        }
    }
}

/// Flushes every CPU that may hold guest translations (this one too).
pub fn flush_everywhere() {
    flush_cpus(all_cpus());
}

/// Does the flush another CPU asked of this one, if any: from the IPI's handler and
/// from lock spins.
pub fn service() {
    if percpu::mine(&ASKED).swap(false, Ordering::AcqRel) {
        flush_local();
    }
}
