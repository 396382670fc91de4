//! Memory: frames, P2M/M2P, the guest's own page tables, and a heap.
//!
//! * Frames: pseudo-physical frames after the bootstrap region up to
//!   `nr_pages`, minus an unmapped initrd or a placed P2M
//!   ([`BootLayout::free_frames`]). [`alloc_frame`] returns the PFN with its
//!   MFN from the P2M (`start_info.mfn_list`). A frame from it is never
//!   mapped writable by the runtime, so it is ready for page-table, GDT or
//!   grant work: before [`take_over`] it is not mapped at all, afterwards it
//!   is mapped read-only at [`Frame::va`].
//! * P2M and M2P: [`pfn_to_mfn`] reads the P2M, [`mfn_to_pfn`] the
//!   hypervisor's read-only M2P at `0xFFFF800000000000` (checked against the
//!   P2M, so only the domain's own frames translate); [`set_m2p`] updates an
//!   M2P entry (`MMU_MACHPHYS_UPDATE`), [`set_p2m`] a P2M entry (after a
//!   `XENMEM_exchange`: [`crate::dma`]).
//! * Address space: [`take_over`] builds new page tables in the domain's own
//!   frames: a direct map of all `nr_pages` frames at VA = PFN × 4096 (the
//!   bootstrap region keeps exactly the mappings and permissions the builder
//!   and the runtime gave it, shared_info included; every other frame,
//!   the new tables among them, is mapped read-only), plus the old L4's other
//!   guest slots. The tables are filled with batched `mmu_update` requests
//!   (each batch one `multicall`), then the new L4 is pinned and loaded with
//!   `NEW_BASEPTR`, and the builder's L4 is unpinned. From then on
//!   [`map`]/[`map_frames`]/[`unmap`] edit the kernel's tables: the
//!   [`pv_runtime_core::mapper`] engine creates and frees tables and batches
//!   every change. [`translate`] and [`entry_address`] read the tables.
//! * Heap: the mapped slack at the end of the bootstrap region (after the
//!   boot stack, up to the region's 4 MiB boundary; at least 512 KiB, and
//!   anything up to 4.5 MiB depending on where the image ends; exactly 512 KiB
//!   in a domain too small for a 4 MiB-aligned region). Once
//!   [`take_over`] has run, a heap that runs out grows: free frames are
//!   mapped writable at [`HEAP_EXTENSION`] in steps of at least 256 KiB, up
//!   to 1 GiB, always leaving [`HEAP_FRAME_RESERVE`] frames to everyone else.
//!   It is the `#[global_allocator]` with feature `global-allocator`, so
//!   guests can `extern crate alloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::hypercall::{call, mmu_update, mmuext_op, multicall};
use hypercall_abi::mmu::{MmuCmd, MmuUpdate, MmuextCmd, MmuextOp};
use hypercall_abi::xen::pte::{PTE_ADDR_MASK, PteFlags};
use hypercall_abi::xen::{MulticallEntry, Pte};
use hypercall_abi::{DomId, Errno, GuestPtr, MachineAddr, Mfn, Pfn};
use pv_runtime_core::frames::{self, FrameAllocator, FreeError};
use pv_runtime_core::heap::RangeAllocator;
use pv_runtime_core::layout::{BootLayout, Span};
use pv_runtime_core::mapper::{
    self, Backend, Batch, MapError, Mapper, Rejected, Root, Stage, Stats,
};
use pv_runtime_core::pt::{self, HYPERVISOR_START, PAGE};
use spin::{Mutex, Once};

use crate::hypercall::{handle, handle_mut, handle_slice, hc};

/// Words of the static bitmap that tracks freed frames when the heap cannot
/// hold one for the whole pool (heap disabled): 32768 frames, 128 MiB.
const FALLBACK_BITMAP_WORDS: usize = 512;
/// Free spans the heap can track (a long-running dom0 service such as xenstored
/// fragments the heap: with 64, 20 domUs doing 1000 transactions each leaked
/// 1.9 MiB of a 2.2 MiB heap into the full free list).
const HEAP_SPANS: usize = 1024;
/// Where the heap grows once the bootstrap slack is used up.
pub const HEAP_EXTENSION: u64 = 0x0000_7300_0000_0000;
/// The most the heap grows by (bytes).
const HEAP_EXTENSION_MAX: u64 = 1 << 30;
/// Pages mapped per growth step, at least.
const HEAP_GROW_PAGES: usize = 64;
/// Free frames the heap never takes (page tables, DMA, rings).
pub const HEAP_FRAME_RESERVE: u64 = 256;
/// `mmu_update` requests per batch.
const BATCH_UPDATES: usize = 512;
/// Pages cleared per batch.
const BATCH_CLEARS: usize = 32;

/// Where the hypervisor maps the read-only M2P (`RO_MPT_VIRT_START`).
pub const M2P_VIRT_START: u64 = HYPERVISOR_START;

static FRAMES: Mutex<FrameAllocator<'static>> = Mutex::new(FrameAllocator::empty());
/// The bitmap used when the heap cannot give one (taken once, by `init`).
static FALLBACK_BITMAP: Mutex<[u64; FALLBACK_BITMAP_WORDS]> =
    Mutex::new([0; FALLBACK_BITMAP_WORDS]);
static HEAP: Mutex<RangeAllocator<HEAP_SPANS>> = Mutex::new(RangeAllocator::empty());
/// The vCPU that holds [`HEAP`] ([`NO_OWNER`]: none), so that the allocator can
/// tell a holder it must wait for (another vCPU) from one it must not (the code an
/// upcall on this vCPU interrupted).
static HEAP_OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);
const NO_OWNER: u32 = u32::MAX;

/// [`HEAP`], held, with its owner recorded until the guard is dropped.
struct HeapGuard(spin::MutexGuard<'static, RangeAllocator<HEAP_SPANS>>);

impl core::ops::Deref for HeapGuard {
    type Target = RangeAllocator<HEAP_SPANS>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for HeapGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for HeapGuard {
    fn drop(&mut self) {
        // Cleared before the lock is let go (the field drops after this).
        HEAP_OWNER.store(NO_OWNER, Ordering::Release);
    }
}

/// Takes [`HEAP`], waiting for it.
fn lock_heap() -> HeapGuard {
    let g = HEAP.lock();
    HEAP_OWNER.store(crate::smp::current().0, Ordering::Release);
    HeapGuard(g)
}

/// Takes [`HEAP`] for the allocator: `None` if this vCPU already holds it (an
/// upcall interrupted its holder: waiting would never end); while another vCPU
/// holds it, waits.
fn heap_for_alloc() -> Option<HeapGuard> {
    let me = crate::smp::current().0;
    loop {
        if let Some(g) = HEAP.try_lock() {
            HEAP_OWNER.store(me, Ordering::Release);
            return Some(HeapGuard(g));
        }
        if HEAP_OWNER.load(Ordering::Acquire) == me {
            return None;
        }
        core::hint::spin_loop();
    }
}
/// The P2M (`start_info.mfn_list`): MFNs as `u64`s, written only by [`set_p2m`].
static P2M: Once<&'static [AtomicU64]> = Once::new();
/// The highest MFN in the P2M: M2P entries up to it are mapped.
static MAX_MFN: AtomicU64 = AtomicU64::new(0);
/// The builder's L4.
static BOOT_ROOT: AtomicU64 = AtomicU64::new(0);
/// The runtime's own L4 once [`take_over`] succeeded (0 before).
static KERNEL_ROOT: AtomicU64 = AtomicU64::new(0);
static MAPPER: Mutex<Mapper<RtBackend, BATCH_UPDATES, BATCH_CLEARS>> =
    Mutex::new(Mapper::new(RtBackend::new()));

/// A pseudo-physical frame and the machine frame backing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Pseudo-physical frame number.
    pub pfn: Pfn,
    /// Machine frame number (what page tables and grants name).
    pub mfn: Mfn,
}

impl Frame {
    /// The frame's address in the direct map (VA = PFN × 4096). Mapped for
    /// every frame after [`take_over`] (read-only outside the bootstrap
    /// region), before it only inside the bootstrap region.
    pub fn va(self) -> u64 {
        direct_va(self.pfn)
    }
}

/// Address of pseudo-physical frame `pfn` in the direct map.
pub fn direct_va(pfn: Pfn) -> u64 {
    crate::notes::VIRT_BASE + pfn.0 * PAGE
}

/// Set up the allocators (boot sequence). `heap` is false when the
/// bootstrap layout could not be confirmed, leaving the heap empty.
pub(crate) fn init(layout: &BootLayout, p2m: &'static [AtomicU64], heap: bool, pt_base: u64) {
    P2M.call_once(|| p2m);
    let max = p2m
        .iter()
        .map(|m| m.load(Ordering::Relaxed))
        .filter(|m| m >> 63 == 0)
        .max()
        .unwrap_or(0);
    MAX_MFN.store(max, Ordering::Relaxed);
    let root_pfn = Pfn((pt_base - crate::notes::VIRT_BASE) / PAGE);
    BOOT_ROOT.store(pfn_to_mfn(root_pfn).map_or(0, |m| m.0), Ordering::Relaxed);
    if heap {
        *lock_heap() = RangeAllocator::new(layout.slack);
    }
    // The whole range's bitmap from the heap; failing that, the largest the heap
    // gives if it beats the static fallback (the rest of the range goes unused, and
    // the boot sequence says so).
    let mut want = frames::bitmap_words(layout.free_frames.len());
    let mut bitmap = None;
    while bitmap.is_none() && want > FALLBACK_BITMAP_WORDS as u64 {
        bitmap = frame_bitmap(want);
        want /= 2;
    }
    let bitmap =
        bitmap.unwrap_or_else(|| spin::MutexGuard::leak(FALLBACK_BITMAP.lock()).as_mut_slice());
    *FRAMES.lock() = FrameAllocator::new(layout.free_frames, layout.reserved, bitmap);
}

/// A bitmap of `words` words from the heap (it is never freed: the frame
/// allocator lives as long as the guest). `None` when the heap is disabled or
/// too small.
fn frame_bitmap(words: u64) -> Option<&'static mut [u64]> {
    let words = usize::try_from(words).ok()?;
    let bytes = u64::try_from(words.checked_mul(8)?).ok()?;
    let addr = lock_heap().alloc(bytes.max(8), 8)?;
    let p: *mut u64 = ptr::with_exposed_provenance_mut(usize::try_from(addr).ok()?);
    // SAFETY: the range allocator handed out `bytes` bytes at `addr`, 8-byte
    // aligned, inside the mapped writable slack, to nobody else; the block is
    // never given back, so a `'static` exclusive slice over it is sound once
    // every word is initialized (zeroed here).
    unsafe {
        p.write_bytes(0, words);
        Some(core::slice::from_raw_parts_mut(p, words))
    }
}

/// Frames of the free range the frame allocator does not manage because no
/// bitmap large enough for them could be had (0 normally). The boot sequence
/// reports it.
pub fn frames_dropped() -> u64 {
    FRAMES.lock().dropped()
}

/// The MFN backing `pfn`, from the P2M (`None` past `nr_pages` or for an
/// invalid entry).
pub fn pfn_to_mfn(pfn: Pfn) -> Option<Mfn> {
    let index = usize::try_from(pfn.0).ok()?;
    let mfn = P2M.get()?.get(index)?.load(Ordering::Relaxed);
    (mfn >> 63 == 0).then_some(Mfn(mfn))
}

/// Sets the P2M entry of `pfn` to `mfn` (`None`: invalid, all ones), as a PV
/// kernel does after it traded frames with the hypervisor (`XENMEM_exchange`,
/// see [`crate::dma`]; Linux's `set_phys_to_machine`);
/// `false` past `nr_pages`. The P2M is the guest's own: the hypervisor never
/// reads it, but the toolstack and the runtime do ([`pfn_to_mfn`]).
pub fn set_p2m(pfn: Pfn, mfn: Option<Mfn>) -> bool {
    let Some(entry) = usize::try_from(pfn.0).ok().and_then(|i| P2M.get()?.get(i)) else {
        return false;
    };
    let raw = mfn.map_or(u64::MAX, |m| m.0);
    entry.store(raw, Ordering::Relaxed);
    if let Some(m) = mfn {
        MAX_MFN.fetch_max(m.0, Ordering::Relaxed);
    }
    true
}

/// `n` pseudo-physically consecutive free frames (from the allocator's bump
/// pointer, never recycled ones), or `None`.
pub(crate) fn alloc_pfn_span(n: u64) -> Option<Span> {
    FRAMES.lock().alloc_span(n)
}

/// Gives a frame of [`alloc_pfn_span`] or [`alloc_frame`] back by its PFN.
pub(crate) fn free_pfn(pfn: Pfn) -> Result<(), FreeError> {
    FRAMES.lock().free(pfn.0)
}

/// The raw M2P entry for `mfn` (whatever the hypervisor keeps there: a PFN,
/// or an invalid marker with bit 63 set), for MFNs up to the domain's
/// highest one (the M2P is mapped at least that far); `None` above.
pub fn m2p_entry(mfn: Mfn) -> Option<u64> {
    if mfn.0 > MAX_MFN.load(Ordering::Relaxed) {
        return None;
    }
    let addr = M2P_VIRT_START.checked_add(mfn.0.checked_mul(8)?)?;
    let p: *const u64 = ptr::with_exposed_provenance(usize::try_from(addr).ok()?);
    // SAFETY: the hypervisor maps the M2P read-only at M2P_VIRT_START for
    // every guest (digest §3.7), covering at least every RAM frame up to the
    // highest MFN the domain owns; the read is aligned and volatile because
    // the hypervisor changes entries behind the compiler's back.
    Some(unsafe { p.read_volatile() })
}

/// The PFN of `mfn` if it is one of the domain's own frames: the M2P says
/// so and the P2M agrees.
pub fn mfn_to_pfn(mfn: Mfn) -> Option<Pfn> {
    let pfn = Pfn(m2p_entry(mfn)?);
    (pfn_to_mfn(pfn) == Some(mfn)).then_some(pfn)
}

/// Set the M2P entry of `mfn` (one of the domain's frames) to `pfn`
/// (`MMU_MACHPHYS_UPDATE`). The P2M is the guest's own business.
pub fn set_m2p(mfn: Mfn, pfn: Pfn) -> Result<(), Errno> {
    let req = [MmuUpdate::new(MmuCmd::MachphysUpdate, mfn.addr(), pfn.0)];
    mmu_update(&mut hc(), handle_slice(&req), 1, GuestPtr::NULL, self_dom()).map(drop)
}

fn self_dom() -> u32 {
    u32::from(DomId::SELF.0)
}

/// A free frame, or `None` when none is left.
pub fn alloc_frame() -> Option<Frame> {
    let mut frames = FRAMES.lock();
    let pfn = Pfn(frames.alloc()?);
    match pfn_to_mfn(pfn) {
        Some(mfn) => Some(Frame { pfn, mfn }),
        None => {
            // An invalid P2M slot: hand it back and stop; a guest whose P2M
            // has holes in its free range has bigger problems.
            let _ = frames.free(pfn.0);
            None
        }
    }
}

/// Return a frame from [`alloc_frame`]. It must not be mapped writable
/// anywhere or in use as a page table.
///
/// The allocator takes back every frame it handed out; a refusal means the
/// caller freed a frame it did not get from [`alloc_frame`], or freed one
/// twice. That is a bug: it is logged on the console here, and returned.
pub fn free_frame(frame: Frame) -> Result<(), FreeError> {
    let r = FRAMES.lock().free(frame.pfn.0);
    if let Err(e) = r {
        crate::println!(
            "pv-runtime: BUG: free_frame(pfn {:#x}, mfn {:#x}) refused: {e}",
            frame.pfn.0,
            frame.mfn.0
        );
    }
    r
}

/// Frames [`alloc_frame`] can still hand out.
pub fn frames_available() -> u64 {
    FRAMES.lock().available()
}

// ---------------------------------------------------------------------------
// Page tables
// ---------------------------------------------------------------------------

/// The mapper's link to the machine: reads tables through the direct map,
/// takes frames from the frame allocator (or a reserved span during
/// [`take_over`]), and sends each batch as one `multicall`.
#[derive(Debug)]
pub(crate) struct RtBackend {
    /// PFNs to take tables from before the frame allocator.
    reserve: Span,
}

impl RtBackend {
    const fn new() -> Self {
        RtBackend {
            reserve: Span::new(0, 0),
        }
    }
}

/// Read entry `index` of a page table of the domain's through the direct
/// map.
fn read_table_entry(table: Mfn, index: usize) -> u64 {
    let Some(pfn) = mfn_to_pfn(table) else {
        panic!("pv-runtime: page table {table} is not one of the domain's frames");
    };
    assert!(index < pt::ENTRIES, "pv-runtime: table index {index}");
    let addr = direct_va(pfn) + index as u64 * 8;
    let p: *const u64 = ptr::with_exposed_provenance(usize::try_from(addr).unwrap_or(0));
    // SAFETY: the runtime reads only tables it reached from a root it
    // manages; those frames are mapped (read-only) in the direct map: the
    // builder's tables lie in the bootstrap region, every other frame is
    // mapped once the runtime owns the address space (the mapper never
    // reads a table it created before that). Aligned, volatile: the
    // hypervisor writes tables behind the compiler's back.
    unsafe { p.read_volatile() }
}

impl Backend for RtBackend {
    fn read_entry(&mut self, table: Mfn, index: usize) -> u64 {
        read_table_entry(table, index)
    }

    fn alloc_table(&mut self) -> Option<Mfn> {
        if !self.reserve.is_empty() {
            let pfn = Pfn(self.reserve.start);
            self.reserve.start += 1;
            return pfn_to_mfn(pfn);
        }
        alloc_frame().map(|f| f.mfn)
    }

    fn free_table(&mut self, table: Mfn) {
        if let Some(pfn) = mfn_to_pfn(table) {
            // A table the allocator never handed out (one of the
            // builder's) is simply not reused.
            let _ = free_frame(Frame { pfn, mfn: table });
        }
    }

    fn submit(&mut self, batch: Batch<'_>) -> Result<(), Rejected> {
        submit_batch(batch)
    }
}

/// Send one batch: `mmuext_op` CLEAR_PAGE for each clear, `mmu_update` with
/// the updates, `mmuext_op` TLB_FLUSH_LOCAL; all that is present, as one
/// `multicall` when there is more than one part.
fn submit_batch(batch: Batch<'_>) -> Result<(), Rejected> {
    let mut clears = [MmuextOp::default(); BATCH_CLEARS];
    for (op, mfn) in clears.iter_mut().zip(batch.clears) {
        *op = MmuextOp::on_frame(MmuextCmd::ClearPage, *mfn);
    }
    let n_clears = batch.clears.len().min(BATCH_CLEARS);
    let flush = [MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0)];
    let mut clears_done = 0u32;
    let mut updates_done = 0u32;
    let mut parts = [(Stage::Call, call::xen_version(0, GuestPtr::NULL)); 3];
    let mut n = 0;
    if n_clears > 0 {
        parts[n] = (
            Stage::Clear,
            call::mmuext_op(
                handle_slice(&clears),
                count(n_clears),
                handle_mut(&mut clears_done),
                self_dom(),
            ),
        );
        n += 1;
    }
    if !batch.updates.is_empty() {
        parts[n] = (
            Stage::Update,
            call::mmu_update(
                handle_slice(batch.updates),
                count(batch.updates.len()),
                handle_mut(&mut updates_done),
                self_dom(),
            ),
        );
        n += 1;
    }
    if batch.flush_tlb {
        parts[n] = (
            Stage::Flush,
            call::mmuext_op(handle_slice(&flush), 1, GuestPtr::NULL, self_dom()),
        );
        n += 1;
    }
    let parts = parts.get(..n).unwrap_or(&[]);
    let mut results = [Ok(0); 3];
    match parts {
        [] => return Ok(()),
        [(_, c)] => results[0] = c.invoke(&mut hc()),
        _ => {
            let mut entries = [MulticallEntry::default(); 3];
            for (e, (_, c)) in entries.iter_mut().zip(parts) {
                *e = MulticallEntry::new(*c);
            }
            let list = entries.get_mut(..n).unwrap_or(&mut []);
            if let Err(errno) = multicall(
                &mut hc(),
                GuestPtr::new(list.as_mut_ptr().expose_provenance() as u64),
                count(n),
            ) {
                return Err(Rejected {
                    stage: Stage::Call,
                    index: 0,
                    errno,
                });
            }
            for (r, e) in results.iter_mut().zip(list.iter()) {
                *r = Errno::decode(e.result);
            }
        }
    }
    for ((stage, _), result) in parts.iter().zip(results) {
        if let Err(errno) = result {
            let index = match stage {
                Stage::Clear => clears_done as usize,
                Stage::Update => updates_done as usize,
                Stage::Flush | Stage::Call => 0,
            };
            return Err(Rejected {
                stage: *stage,
                index,
                errno,
            });
        }
    }
    Ok(())
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Run `f` with the mapper (for the user-space tables).
pub(crate) fn with_mapper<R>(
    f: impl FnOnce(&mut Mapper<RtBackend, BATCH_UPDATES, BATCH_CLEARS>) -> R,
) -> R {
    f(&mut MAPPER.lock())
}

/// The L4 the builder started the domain on.
pub fn bootstrap_root() -> Mfn {
    Mfn(BOOT_ROOT.load(Ordering::Relaxed))
}

/// Whether [`take_over`] succeeded.
pub fn taken_over() -> bool {
    KERNEL_ROOT.load(Ordering::Acquire) != 0
}

/// The kernel's L4: the runtime's own after [`take_over`], the builder's
/// before.
pub fn kernel_root() -> Mfn {
    match KERNEL_ROOT.load(Ordering::Acquire) {
        0 => bootstrap_root(),
        m => Mfn(m),
    }
}

/// What [`take_over`] built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The builder's L4.
    pub old_root: Mfn,
    /// The new L4 (pinned, loaded with `NEW_BASEPTR`).
    pub new_root: Mfn,
    /// The PFNs of the new tables (the L4 first).
    pub tables: Span,
    /// Pages in the direct map (`nr_pages`).
    pub pages: u64,
    /// The answer to unpinning the builder's L4 (Xen's dom0 builder pins
    /// it; a builder that did not makes this `EINVAL`).
    pub old_unpinned: Result<(), Errno>,
    /// What building the tables sent.
    pub stats: Stats,
}

/// Why [`take_over`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeoverError {
    /// It already happened.
    AlreadyDone,
    /// Not enough consecutive free frames for the tables (needed).
    NoFrames(u64),
    /// Building the tables failed.
    Build(MapError),
    /// Pinning the new L4 or loading it was refused (index 0: pin, 1:
    /// `NEW_BASEPTR`).
    Switch(usize, Errno),
}

impl fmt::Display for TakeoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeoverError::AlreadyDone => f.write_str("the address space was already taken over"),
            TakeoverError::NoFrames(n) => {
                write!(f, "no {n} consecutive free frames for the tables")
            }
            TakeoverError::Build(e) => write!(f, "building the tables: {e}"),
            TakeoverError::Switch(0, e) => write!(f, "pinning the new L4: {e}"),
            TakeoverError::Switch(_, e) => write!(f, "NEW_BASEPTR: {e}"),
        }
    }
}

/// Flags kept when a bootstrap-region mapping is copied into the new tables
/// (the hypervisor's own additions, U and bit 52, are dropped).
const KEPT_FLAGS: u64 = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::NX)
    .bits();

/// Build the runtime's own page tables and switch to them (see the module
/// documentation). Call it early: mappings the guest made outside the
/// bootstrap region in L4 slot 0 are not carried over.
pub fn take_over() -> Result<Takeover, TakeoverError> {
    let mut m = MAPPER.lock();
    if taken_over() {
        return Err(TakeoverError::AlreadyDone);
    }
    let si = crate::start_info();
    let layout = crate::layout();
    let pages = si.nr_pages;
    let old_root = bootstrap_root();
    let [l1, l2, l3] = pt::tables_for(0, pages);
    let need = l1 + l2 + l3 + 1;
    let tables = FRAMES
        .lock()
        .alloc_span(need)
        .ok_or(TakeoverError::NoFrames(need))?;
    let root = pfn_to_mfn(Pfn(tables.start)).ok_or(TakeoverError::NoFrames(need))?;
    let before = m.stats();
    m.backend().reserve = Span::new(tables.start + 1, tables.end);
    let region_pages = (layout.region.end - crate::notes::VIRT_BASE) / PAGE;

    let built = build(&mut m, root, old_root, pages, region_pages);
    m.backend().reserve = Span::new(0, 0);
    built.map_err(TakeoverError::Build)?;

    let ops = [
        MmuextOp::on_frame(MmuextCmd::PinL4Table, root),
        MmuextOp::on_frame(MmuextCmd::NewBaseptr, root),
    ];
    let mut done = 0u32;
    if let Err(e) = mmuext_op(
        &mut hc(),
        handle_slice(&ops),
        2,
        handle_mut(&mut done),
        self_dom(),
    ) {
        return Err(TakeoverError::Switch(done as usize, e));
    }
    KERNEL_ROOT.store(root.0, Ordering::Release);
    let unpin = MmuextOp::on_frame(MmuextCmd::UnpinTable, old_root);
    let old_unpinned =
        mmuext_op(&mut hc(), handle(&unpin), 1, GuestPtr::NULL, self_dom()).map(drop);
    let after = m.stats();
    Ok(Takeover {
        old_root,
        new_root: root,
        tables,
        pages,
        old_unpinned,
        stats: Stats {
            batches: after.batches - before.batches,
            updates: after.updates - before.updates,
            clears: after.clears - before.clears,
            flushes: after.flushes - before.flushes,
            tables_created: after.tables_created - before.tables_created,
            tables_freed: after.tables_freed - before.tables_freed,
        },
    })
}

/// Fill the fresh L4 `root`: the direct map, then the old L4's other guest
/// slots.
fn build(
    m: &mut Mapper<RtBackend, BATCH_UPDATES, BATCH_CLEARS>,
    root: Mfn,
    old_root: Mfn,
    pages: u64,
    region_pages: u64,
) -> Result<(), MapError> {
    m.queue_clear(root)?;
    m.map_with(
        Root::fresh(root),
        crate::notes::VIRT_BASE,
        pages,
        |b, pfn| {
            let va = direct_va(Pfn(pfn));
            if pfn < region_pages
                && let Some(e) = mapper::translate(b, old_root, va)
            {
                return Ok(Some(e & (PTE_ADDR_MASK | KEPT_FLAGS)));
            }
            Ok(pfn_to_mfn(Pfn(pfn)).map(|mfn| pt::leaf(mfn, PteFlags::ACCESSED)))
        },
    )?;
    let own = pt::index(crate::notes::VIRT_BASE, 4);
    for slot in (0..pt::ENTRIES).filter(|s| *s != own && !pt::HYPERVISOR_L4_SLOTS.contains(s)) {
        let e = read_table_entry(old_root, slot);
        if pt::is_present(e) {
            m.queue_update(pt::entry_ma(root, slot), e)?;
        }
    }
    m.submit()
}

fn ready() -> Result<Mfn, MapError> {
    match KERNEL_ROOT.load(Ordering::Acquire) {
        0 => Err(MapError::NotReady),
        m => Ok(Mfn(m)),
    }
}

/// Map `frames` at `va` (page aligned) in the kernel's address space with
/// `flags` (PRESENT implied; RW for writable, NX for no-execute, ...).
/// Replaces what was mapped there (flushing the TLB). Needs [`take_over`].
pub fn map(va: u64, frames: &[Mfn], flags: PteFlags) -> Result<(), MapError> {
    let pages = frames.len() as u64;
    map_frames(va, pages, flags, |i| {
        usize::try_from(i).ok().and_then(|i| frames.get(i)).copied()
    })
}

/// Map `pages` pages from `va`: page `i` gets the frame `frame(i)` returns
/// (`None` stops the operation with [`MapError::NoFrame`]). The updates go
/// out in batches of up to 512, each one `multicall`.
pub fn map_frames(
    va: u64,
    pages: u64,
    flags: PteFlags,
    frame: impl FnMut(u64) -> Option<Mfn>,
) -> Result<(), MapError> {
    let root = ready()?;
    MAPPER.lock().map(Root::live(root), va, pages, flags, frame)
}

/// Unmap `pages` pages from `va` in the kernel's address space; page tables
/// left empty are freed. Returns how many pages were mapped.
pub fn unmap(va: u64, pages: u64) -> Result<u64, MapError> {
    let root = ready()?;
    MAPPER.lock().unmap(root, va, pages, true)
}

/// The present leaf entry that maps `va` in the kernel's address space.
pub fn translate(va: u64) -> Option<Pte> {
    let root = kernel_root();
    mapper::translate(&mut RtBackend::new(), root, va).map(Pte)
}

/// The machine address of the level-`level` entry (1..=4) for `va` in the
/// kernel's tables, if the tables above it exist: what an `mmu_update`
/// request names.
pub fn entry_address(va: u64, level: u8) -> Option<MachineAddr> {
    if !(1..=4).contains(&level) {
        return None;
    }
    let (table, index) = mapper::find_entry(&mut RtBackend::new(), kernel_root(), va, level)?;
    Some(pt::entry_ma(table, index))
}

/// What the mapping engine sent so far.
pub fn map_stats() -> Stats {
    MAPPER.lock().stats()
}

/// Run `f` on the contents of `frame`, one of the domain's frames that is
/// not a page table or descriptor page: if its direct-map entry is
/// read-only it is made writable for the call and restored after. Needs
/// [`take_over`].
pub fn with_writable<R>(frame: Frame, f: impl FnOnce(&mut [u8; 4096]) -> R) -> Result<R, MapError> {
    ready()?;
    let va = frame.va();
    let Some(old) = translate(va) else {
        return Err(MapError::NoFrame { page: 0 });
    };
    let kept = PteFlags::from_bits_retain(old.flags().bits() & KEPT_FLAGS) - PteFlags::PRESENT;
    let writable = kept.contains(PteFlags::RW);
    if !writable {
        map(va, &[frame.mfn], kept | PteFlags::RW | PteFlags::DIRTY)?;
    }
    let Ok(addr) = usize::try_from(va) else {
        return Err(MapError::BadRange { va, pages: 1 });
    };
    let p: *mut [u8; 4096] = ptr::with_exposed_provenance_mut(addr);
    // SAFETY: `va` is the frame's direct-map address, mapped writable now;
    // the caller owns the frame (no Rust object of anyone else lives
    // there), and the reference ends with the call.
    let result = f(unsafe { &mut *p });
    if !writable {
        map(va, &[frame.mfn], kept)?;
    }
    Ok(result)
}

// ---------------------------------------------------------------------------
// Heap
// ---------------------------------------------------------------------------

/// Heap usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// The heap's first address range (the bootstrap slack).
    pub region: Span,
    /// The range it grew into ([`HEAP_EXTENSION`]; empty if it never grew).
    pub extension: Span,
    /// Bytes allocated.
    pub in_use: u64,
    /// Bytes free.
    pub free: u64,
    /// Bytes lost to a full free list.
    pub leaked: u64,
}

/// Current heap usage.
pub fn heap_stats() -> HeapStats {
    let h = lock_heap();
    HeapStats {
        region: h.region(),
        extension: h.extension(),
        in_use: h.in_use(),
        free: h.free_bytes(),
        leaked: h.leaked(),
    }
}

/// Grow the heap by at least `bytes`: map free frames writable at the end of
/// its extension. Every lock is only tried (an upcall may have interrupted
/// their holder), so this never blocks; `false` when nothing was added.
fn grow_heap(bytes: u64) -> bool {
    static GROWING: Mutex<()> = Mutex::new(());
    let Some(_growing) = GROWING.try_lock() else {
        return false;
    };
    let Ok(root) = ready() else {
        return false;
    };
    // One vCPU: a lock held now is held by the code an upcall interrupted,
    // and stays held until we return. Growing needs all three.
    if FRAMES.is_locked() || MAPPER.is_locked() || HEAP.is_locked() {
        return false;
    }
    let end = {
        let e = lock_heap().extension();
        if e.is_empty() { HEAP_EXTENSION } else { e.end }
    };
    let want = usize::try_from(bytes.div_ceil(PAGE))
        .unwrap_or(usize::MAX)
        .max(HEAP_GROW_PAGES);
    let mut added = 0usize;
    let mut chunk = [Mfn(0); HEAP_GROW_PAGES];
    while added < want {
        let va = end + added as u64 * PAGE;
        let n = (want - added).min(HEAP_GROW_PAGES);
        if va + n as u64 * PAGE > HEAP_EXTENSION + HEAP_EXTENSION_MAX {
            break;
        }
        // Frames first (none left above the reserve: stop).
        let mut frames = [None; HEAP_GROW_PAGES];
        let mut got = 0;
        {
            let mut f = FRAMES.lock();
            while got < n && f.available() > HEAP_FRAME_RESERVE {
                let Some(pfn) = f.alloc() else { break };
                match pfn_to_mfn(Pfn(pfn)) {
                    Some(mfn) => {
                        frames[got] = Some(Frame { pfn: Pfn(pfn), mfn });
                        chunk[got] = mfn;
                        got += 1;
                    }
                    None => {
                        let _ = f.free(pfn);
                        break;
                    }
                }
            }
        }
        let give_back = |frames: &[Option<Frame>]| {
            let mut f = FRAMES.lock();
            for fr in frames.iter().flatten() {
                let _ = f.free(fr.pfn.0);
            }
        };
        if got < n {
            give_back(&frames[..got]);
            break;
        }
        let mut m = MAPPER.lock();
        let flags = PteFlags::RW | PteFlags::NX;
        let done = m.map(Root::live(root), va, n as u64, flags, |i| {
            chunk.get(usize::try_from(i).ok()?).copied()
        });
        if done.is_err() {
            // A partial mapping is undone before its frames go back; frames
            // that stay mapped somewhere are never reused.
            if m.unmap(root, va, n as u64, true).is_ok() {
                drop(m);
                give_back(&frames[..n]);
            }
            break;
        }
        added += n;
    }
    if added == 0 {
        return false;
    }
    // Only this function extends the heap, and GROWING is held: the
    // extension still ends at `end`.
    lock_heap()
        .extend(Span::new(end, end + added as u64 * PAGE))
        .is_ok()
}

/// How many times an allocation that found the heap exhausted tries to grow it.
const GROW_TRIES: usize = 10_000;

/// The runtime's heap as a [`GlobalAlloc`]. Allocation fails (null) when the
/// heap is exhausted and cannot grow, or its lock is held by the code a trap
/// interrupted on this vCPU; another vCPU's hold is waited for.
#[derive(Debug)]
pub struct Heap;

// SAFETY: blocks come from the range allocator, which never hands out
// overlapping blocks, only addresses inside the mapped slack of the
// bootstrap region or the extension `grow_heap` mapped writable to frames
// it took for the heap alone (memory nothing else uses), aligned as
// requested.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size() as u64, layout.align() as u64);
        let try_alloc = || heap_for_alloc().map(|mut h| h.alloc(size, align));
        let mut addr = try_alloc();
        // Out of heap (not merely held by the code an upcall interrupted): grow and
        // try again. Growing may fail only because another vCPU holds a lock it
        // needs (or grows the heap itself), so a few more rounds are tried.
        for _ in 0..GROW_TRIES {
            if !matches!(addr, Some(None)) {
                break;
            }
            if !grow_heap(size.saturating_add(align)) {
                core::hint::spin_loop();
            }
            addr = try_alloc();
        }
        addr.flatten()
            .and_then(|addr| usize::try_from(addr).ok())
            .map_or(ptr::null_mut(), ptr::with_exposed_provenance_mut)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // A block freed while this vCPU's interrupted code holds the lock is leaked.
        if let Some(mut heap) = heap_for_alloc() {
            let _ = heap.free(ptr.addr() as u64, layout.size() as u64);
        }
    }
}

#[cfg(feature = "global-allocator")]
#[global_allocator]
static GLOBAL: Heap = Heap;
