//! Foreign mappings: dom0's window onto other domains' frames, as Xen's toolstack
//! maps them (`update_va_mapping_otherdomain`).
//!
//! A range of dom0's address space holds one write slot (the domain builder writes a
//! new domain's memory through it, one frame at a time, and gives it back at once, so
//! no frame about to become a page table stays mapped writable) and [`MAX_RINGS`]
//! ring slots (each a console or store page mapped while its domain lives). A slot not in use
//! maps one frame of dom0's own, so its page tables exist and a stale access reads
//! harmless zeroes.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use dom0_core::RingId;
use pv_runtime::abi::hypercall::{update_va_mapping, update_va_mapping_otherdomain};
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::xen::pte::PteFlags;
use pv_runtime::abi::{DomId, Errno, Mfn};
use pv_runtime::mm;

/// The window: 48 TiB up, below the upload buffers (`store.rs`).
const BASE: u64 = 0x0000_3000_0000_0000;
/// Ring slots: pages of other domains mapped at once. Each domU takes two (its
/// console and its store page), so this is room for 4096 domUs, more than dom0's
/// 4096 event channels serve (two per domU as well). The slots' page tables take
/// 32 KiB of dom0's memory.
pub const MAX_RINGS: usize = 8192;
const PAGE: u64 = 4096;
/// Flags of a slot's entry.
const FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::NX);

/// dom0's own frame that idle slots map (0 until [`init`]).
static IDLE_MFN: AtomicU64 = AtomicU64::new(0);
/// Which ring slots are mapped (slot `i + 1` is ring `i + 1`).
static USED: [AtomicBool; MAX_RINGS] = [const { AtomicBool::new(false) }; MAX_RINGS];

fn va(slot: usize) -> u64 {
    BASE + slot as u64 * PAGE
}

/// A slot's address as a pointer-sized integer (the window is below 2^47).
fn addr(slot: usize) -> usize {
    usize::try_from(va(slot)).unwrap_or(0)
}

fn inv() -> pv_runtime::abi::guest::HypercallPage {
    // SAFETY: the calls below only replace entries of this module's window, whose
    // page tables the runtime made (`init`); nothing else maps those addresses.
    unsafe { pv_runtime::hypercall::invoker() }
}

/// Sets the window up (idempotent): every slot maps one zeroed frame of dom0's.
fn init() -> Result<Mfn, Errno> {
    match IDLE_MFN.load(Ordering::Acquire) {
        0 => {}
        m => return Ok(Mfn(m)),
    }
    let idle = mm::alloc_frame().ok_or(Errno::ENOMEM)?;
    mm::map_frames(va(0), MAX_RINGS as u64 + 1, FLAGS - PteFlags::RW, |_| {
        Some(idle.mfn)
    })
    .map_err(|_| Errno::ENOMEM)?;
    IDLE_MFN.store(idle.mfn.0, Ordering::Release);
    Ok(idle.mfn)
}

/// Points slot `slot` at `dom`'s frame `mfn`.
fn map(slot: usize, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
    init()?;
    let pte = (mfn.0 << 12) | FLAGS.bits();
    update_va_mapping_otherdomain(&mut inv(), va(slot), pte, UVMF_INVLPG, dom).map(drop)
}

/// Points slot `slot` back at the idle frame (read-only).
fn unmap(slot: usize) {
    let idle = IDLE_MFN.load(Ordering::Acquire);
    let pte = (idle << 12) | (FLAGS - PteFlags::RW).bits();
    let _ = update_va_mapping(&mut inv(), va(slot), pte, UVMF_INVLPG);
}

/// Runs `f` on `dom`'s frame `mfn`, mapped writable for the call only.
pub fn with_frame(dom: DomId, mfn: Mfn, f: impl FnOnce(&mut [u8; 4096])) -> Result<(), Errno> {
    map(0, dom, mfn)?;
    let p: *mut [u8; 4096] = core::ptr::with_exposed_provenance_mut(addr(0));
    // SAFETY: slot 0 maps `mfn` writable now; the new domain is paused while it is
    // built, so nothing else writes the frame during `f`; the mapping goes right
    // after, and no reference escapes `f`.
    f(unsafe { &mut *p });
    unmap(0);
    Ok(())
}

/// Maps `dom`'s console page `mfn` into a free ring slot.
pub fn map_ring(dom: DomId, mfn: Mfn) -> Result<RingId, Errno> {
    let i = USED
        .iter()
        .position(|u| {
            u.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        })
        .ok_or(Errno::ENOSPC)?;
    if let Err(e) = map(i + 1, dom, mfn) {
        USED[i].store(false, Ordering::Release);
        return Err(e);
    }
    Ok(RingId(u32::try_from(i + 1).unwrap_or(0)))
}

/// The words of a mapped console page.
pub fn ring(id: RingId) -> Option<&'static [AtomicU32]> {
    let slot = usize::try_from(id.0)
        .ok()
        .filter(|&s| (1..=MAX_RINGS).contains(&s))?;
    if !USED[slot - 1].load(Ordering::Acquire) {
        return None;
    }
    let p: *const AtomicU32 = core::ptr::with_exposed_provenance(addr(slot));
    // SAFETY: the slot maps a console page (4 KiB, aligned) until `unmap_ring`; it is
    // shared with its guest, so it is only ever accessed through atomics; the agent
    // unmaps a ring only after dropping every slice of it (`close_console`).
    Some(unsafe { core::slice::from_raw_parts(p, 1024) })
}

/// Unmaps a ring slot.
pub fn unmap_ring(id: RingId) {
    let Some(slot) = usize::try_from(id.0)
        .ok()
        .filter(|&s| (1..=MAX_RINGS).contains(&s))
    else {
        return;
    };
    unmap(slot);
    USED[slot - 1].store(false, Ordering::Release);
}
