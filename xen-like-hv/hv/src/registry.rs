//! Which domain each slot of the domain table holds, kept in step with the table
//! (`domains`) and readable in constant time without its lock: the slot of a domain
//! id, a slot's shared_info frame, whether an id exists, the control domain, and
//! where each vCPU's `vcpu_info` is. The hot paths (event channels,
//! the memory model's hooks, timers) ask these instead of scanning every slot of the
//! table.
//!
//! Slots exist in chunks of [`CHUNK`], made when the domain table grows
//! (`domains::Domains::grow`, at domain creation), up to [`LIMIT`]; a chunk's records
//! are on the heap and are kept for the slots' next domains.

use core::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use hypercall_abi::types::DomId;
use hypercall_abi::xen::LEGACY_MAX_VCPUS;
use spin::Once;
use xlhv_core::mm::Mfn;

/// Ordinary domain ids: `0..DomId::FIRST_RESERVED`.
const IDS: usize = DomId::FIRST_RESERVED.0 as usize;
/// The most slots: one per ordinary domain id.
pub const LIMIT: usize = IDS;
/// Slots made at a time.
pub const CHUNK: usize = 64;
const CHUNKS: usize = LIMIT.div_ceil(CHUNK);
/// A slot without a domain.
const EMPTY: u64 = u64::MAX;

/// What is kept of one slot outside the domain lock.
#[derive(Debug)]
pub struct SlotInfo {
    /// The shared_info frame, [`EMPTY`] when the slot holds no domain.
    shared_info: AtomicU64,
    /// Where `VCPUOP_register_vcpu_info` put each vCPU's `vcpu_info`: a machine
    /// address, 0 = still in shared_info.
    pub vcpu_info_at: [AtomicU64; LEGACY_MAX_VCPUS],
}

impl SlotInfo {
    fn empty() -> SlotInfo {
        SlotInfo {
            shared_info: AtomicU64::new(EMPTY),
            vcpu_info_at: [const { AtomicU64::new(0) }; LEGACY_MAX_VCPUS],
        }
    }
}

/// The chunks of slot records made so far.
static INFO: [Once<&'static [SlotInfo]>; CHUNKS] = [const { Once::new() }; CHUNKS];
/// Slots made so far (a multiple of [`CHUNK`]).
static MADE: AtomicUsize = AtomicUsize::new(0);
/// Each domain id's slot plus one (0: no such domain).
static SLOT_OF: [AtomicU16; IDS] = [const { AtomicU16::new(0) }; IDS];
/// The privileged (control) domain, [`DomId::INVALID`] while there is none.
static CONTROL: AtomicU16 = AtomicU16::new(DomId::INVALID.0);

/// The heap could not hold another chunk of slot records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoMemory;

/// Makes the records of slots `made()..made() + CHUNK` (nothing if that is past
/// [`LIMIT`]); returns the slots made now. Callers serialize (the domain lock).
pub fn grow() -> Result<usize, NoMemory> {
    let made = MADE.load(Ordering::Acquire);
    let Some(cell) = INFO.get(made / CHUNK) else {
        return Ok(made);
    };
    cell.try_call_once(|| {
        let mut chunk = alloc::vec::Vec::new();
        chunk.try_reserve_exact(CHUNK).map_err(|_| NoMemory)?;
        chunk.resize_with(CHUNK, SlotInfo::empty);
        Ok::<_, NoMemory>(&*alloc::boxed::Box::leak(chunk.into_boxed_slice()))
    })?;
    let now = made + CHUNK;
    MADE.store(now, Ordering::Release);
    Ok(now)
}

/// Slots made so far.
pub fn made() -> usize {
    MADE.load(Ordering::Acquire)
}

/// Frames the slot records made so far hold (they are never given back).
pub fn frames() -> u64 {
    (made() / CHUNK) as u64 * crate::mm::heap_frames(CHUNK * core::mem::size_of::<SlotInfo>())
}

/// The records of `slot`, if it was made.
pub fn info(slot: usize) -> Option<&'static SlotInfo> {
    INFO.get(slot / CHUNK)?.get()?.get(slot % CHUNK)
}

/// Records that `slot` now holds domain `id`.
pub fn fill(slot: usize, id: DomId, shared_info: Mfn, privileged: bool) {
    let (Some(si), Some(by_id), Ok(plus_one)) = (
        info(slot).map(|i| &i.shared_info),
        SLOT_OF.get(usize::from(id.0)),
        u16::try_from(slot + 1),
    ) else {
        return;
    };
    si.store(shared_info.0, Ordering::Relaxed);
    by_id.store(plus_one, Ordering::Relaxed);
    if privileged {
        CONTROL.store(id.0, Ordering::Relaxed);
    }
}

/// Records that `slot` (which held domain `id`) is empty now.
pub fn clear(slot: usize, id: DomId) {
    if let Some(i) = info(slot) {
        i.shared_info.store(EMPTY, Ordering::Relaxed);
    }
    if let Some(by_id) = SLOT_OF.get(usize::from(id.0))
        && usize::from(by_id.load(Ordering::Relaxed)) == slot + 1
    {
        by_id.store(0, Ordering::Relaxed);
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
    let v = info(slot)?.shared_info.load(Ordering::Relaxed);
    (v != EMPTY).then_some(Mfn(v))
}

/// The privileged (control) domain, [`DomId::INVALID`] while there is none.
pub fn control() -> DomId {
    DomId(CONTROL.load(Ordering::Relaxed))
}
