//! TLB shoot-downs between CPUs (Xen's `flush_area_mask`): before a frame changes
//! type or goes back to the allocator, and when a guest asks for a flush on other
//! vCPUs, every CPU that may hold a stale translation flushes before the operation
//! is reported done. `docs/smp.md` argues which CPUs that is.
//!
//! Global pages are off, so reloading CR3 empties the TLB (and paging-structure
//! caches) of every guest translation. A CPU on the hypervisor's own page tables
//! holds none, and loads a guest's tables only under the domain lock, which every
//! flusher holds: it is skipped.
//!
//! An idle CPU keeps the tables of the vCPU it ran last (Xen's lazy context switch,
//! [`idle_keeping`]), so that vCPU, woken on the same CPU with nothing run there in
//! between, goes on without a CR3 load (under TCG a CR3 load empties QEMU's whole
//! software TLB, and the guest and the hypervisor refill it afterwards). Asked to
//! flush, such a CPU moves to the hypervisor's tables instead, so no idle CPU points
//! at a page table that is about to change type or be freed. A vCPU that ran on
//! another CPU since, or whose domain asked for a flush that names it, is marked
//! stale where it is kept ([`take_lazy`], [`forget_lazy`]), and gets a CR3 load.
//!
//! The asked CPU flushes in the IPI's handler, without any lock. A CPU that spins on
//! the domain lock with interrupts off flushes from its spin loop
//! ([`crate::domains`]' lock), so a flusher that holds the lock never waits for a
//! CPU that waits for it.

use super::percpu::{self, MAX_CPUS};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// CPU n has been asked to flush and has not yet.
static ASKED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// The vCPU (`slot << 16 | vcpu`) whose page tables idle CPU n kept in CR3, or
/// [`NOT_LAZY`], or [`STALE`].
static LAZY: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(NOT_LAZY) }; MAX_CPUS];
/// [`LAZY`]: the CPU is not idling on a guest's tables.
const NOT_LAZY: u32 = u32::MAX;
/// [`LAZY`]: the CPU idles on a guest's tables that no vCPU may reuse unflushed.
const STALE: u32 = u32::MAX - 1;

/// This CPU goes idle keeping the page tables of vCPU `v` (`slot << 16 | vcpu`),
/// the vCPU it ran last and whose tables are in CR3.
pub fn idle_keeping(v: u32) {
    percpu::mine(&LAZY).store(v, Ordering::Release);
}

/// Called as vCPU `v` is loaded on this CPU: marks the copies of its tables that
/// other idle CPUs keep stale (it runs here now, and may change them), and returns
/// whether this CPU kept exactly its translations, so that CR3 need not be loaded.
pub fn take_lazy(v: u32) -> bool {
    let me = percpu::index();
    for (cpu, lazy) in LAZY.iter().enumerate() {
        if cpu != me {
            let _ = lazy.compare_exchange(v, STALE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
    percpu::mine(&LAZY).swap(NOT_LAZY, Ordering::AcqRel) == v
}

/// The domain in `slot` asked for a flush on its vCPUs in `vcpus` (bit n: vCPU n):
/// idle CPUs that keep one of their tables must load CR3 before running it again.
/// (They run no guest code meanwhile, so they need no IPI now.)
pub fn forget_lazy(slot: usize, vcpus: u64) {
    for lazy in &LAZY {
        let v = lazy.load(Ordering::Acquire);
        if v < STALE && (v >> 16) as usize == slot && vcpus & (1u64 << (v & 0x3F)) != 0 {
            let _ = lazy.compare_exchange(v, STALE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

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
/// from lock spins. An idle CPU that kept a guest's tables moves to the
/// hypervisor's own instead (the asker may be about to free those tables).
pub fn service() {
    if percpu::mine(&ASKED).swap(false, Ordering::AcqRel) {
        if percpu::mine(&LAZY).swap(NOT_LAZY, Ordering::AcqRel) != NOT_LAZY {
            super::guest::enter_idle_tables();
        } else {
            flush_local();
        }
    }
}
