//! Which domain each slot of the domain table holds, kept in step with the table
//! (`domains`) and readable in constant time without its lock: the slot of a domain
//! id, a slot's shared_info frame, whether an id exists, the control domain, and the
//! filled slots. The hot paths (event channels, the memory model's hooks, timers)
//! ask these instead of scanning every slot of the table.

use crate::domains::MAX_DOMAINS;
use core::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use hypercall_abi::types::DomId;
use xlhv_core::mm::Mfn;

/// Ordinary domain ids: `0..DomId::FIRST_RESERVED`.
const IDS: usize = DomId::FIRST_RESERVED.0 as usize;
/// A slot without a domain.
const EMPTY: u64 = u64::MAX;

/// Each slot's shared_info frame, [`EMPTY`] when the slot holds no domain.
static SHARED_INFO: [AtomicU64; MAX_DOMAINS] = [const { AtomicU64::new(EMPTY) }; MAX_DOMAINS];
/// Each domain id's slot plus one (0: no such domain).
static SLOT_OF: [AtomicU16; IDS] = [const { AtomicU16::new(0) }; IDS];
/// The filled slots, one bit each.
static FILLED: [AtomicU64; MAX_DOMAINS.div_ceil(64)] =
    [const { AtomicU64::new(0) }; MAX_DOMAINS.div_ceil(64)];
/// The privileged (control) domain, [`DomId::INVALID`] while there is none.
static CONTROL: AtomicU16 = AtomicU16::new(DomId::INVALID.0);

/// Records that `slot` now holds domain `id`.
pub fn fill(slot: usize, id: DomId, shared_info: Mfn, privileged: bool) {
    let (Some(si), Some(by_id), Ok(plus_one)) = (
        SHARED_INFO.get(slot),
        SLOT_OF.get(usize::from(id.0)),
        u16::try_from(slot + 1),
    ) else {
        return;
    };
    si.store(shared_info.0, Ordering::Relaxed);
    by_id.store(plus_one, Ordering::Relaxed);
    if let Some(w) = FILLED.get(slot / 64) {
        w.fetch_or(1 << (slot % 64), Ordering::Relaxed);
    }
    if privileged {
        CONTROL.store(id.0, Ordering::Relaxed);
    }
}

/// Records that `slot` (which held domain `id`) is empty now.
pub fn clear(slot: usize, id: DomId) {
    if let Some(si) = SHARED_INFO.get(slot) {
        si.store(EMPTY, Ordering::Relaxed);
    }
    if let Some(by_id) = SLOT_OF.get(usize::from(id.0))
        && usize::from(by_id.load(Ordering::Relaxed)) == slot + 1
    {
        by_id.store(0, Ordering::Relaxed);
    }
    if let Some(w) = FILLED.get(slot / 64) {
        w.fetch_and(!(1 << (slot % 64)), Ordering::Relaxed);
    }
    let _ = CONTROL.compare_exchange(id.0, DomId::INVALID.0, Ordering::Relaxed, Ordering::Relaxed);
}

/// The slot of domain `id`.
pub fn slot_of(id: DomId) -> Option<usize> {
    let s = SLOT_OF.get(usize::from(id.0))?.load(Ordering::Relaxed);
    usize::from(s).checked_sub(1)
}

/// Whether domain `id` exists.
pub fn exists(id: DomId) -> bool {
    slot_of(id).is_some()
}

/// The shared_info frame of the domain in `slot`.
pub fn shared_info(slot: usize) -> Option<Mfn> {
    let v = SHARED_INFO.get(slot)?.load(Ordering::Relaxed);
    (v != EMPTY).then_some(Mfn(v))
}

/// The privileged (control) domain, [`DomId::INVALID`] while there is none.
pub fn control() -> DomId {
    DomId(CONTROL.load(Ordering::Relaxed))
}

/// The filled slots, in order.
pub fn filled() -> impl Iterator<Item = usize> {
    FILLED.iter().enumerate().flat_map(|(w, bits)| {
        let mut b = bits.load(Ordering::Relaxed);
        core::iter::from_fn(move || {
            if b == 0 {
                return None;
            }
            let i = b.trailing_zeros() as usize;
            b &= b - 1;
            Some(w * 64 + i)
        })
    })
}
