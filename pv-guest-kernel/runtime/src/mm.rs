//! Memory: the guest's free frames and a small heap.
//!
//! * Frames: pseudo-physical frames after the bootstrap region up to
//!   `nr_pages`, minus an unmapped initrd or a placed P2M
//!   ([`BootLayout::free_frames`]). They are not mapped; [`alloc_frame`]
//!   returns the PFN with its MFN from the P2M (`start_info.mfn_list`), ready
//!   for page-table or grant work.
//! * Heap: the mapped slack at the end of the bootstrap region (after the
//!   boot stack, up to the region's 4 MiB boundary; at least 512 KiB). It is
//!   the `#[global_allocator]` with feature `global-allocator`, so guests can
//!   `extern crate alloc`.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use hypercall_abi::{Mfn, Pfn};
use pv_runtime_core::frames::{FrameAllocator, FreeError};
use pv_runtime_core::heap::RangeAllocator;
use pv_runtime_core::layout::{BootLayout, Span};
use spin::{Mutex, Once};

/// Freed frames remembered for reuse.
const RECYCLED_FRAMES: usize = 256;
/// Free spans the heap can track.
const HEAP_SPANS: usize = 64;

static FRAMES: Mutex<FrameAllocator<RECYCLED_FRAMES>> = Mutex::new(FrameAllocator::empty());
static HEAP: Mutex<RangeAllocator<HEAP_SPANS>> = Mutex::new(RangeAllocator::empty());
static P2M: Once<&'static [Mfn]> = Once::new();

/// A pseudo-physical frame and the machine frame backing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Pseudo-physical frame number.
    pub pfn: Pfn,
    /// Machine frame number (what page tables and grants name).
    pub mfn: Mfn,
}

/// Set up the allocators (boot sequence). `heap` is false when the
/// bootstrap layout could not be confirmed, leaving the heap empty.
pub(crate) fn init(layout: &BootLayout, p2m: &'static [Mfn], heap: bool) {
    P2M.call_once(|| p2m);
    *FRAMES.lock() = FrameAllocator::new(layout.free_frames, layout.reserved);
    if heap {
        *HEAP.lock() = RangeAllocator::new(layout.slack);
    }
}

/// The MFN backing `pfn`, from the P2M (`None` past `nr_pages` or for an
/// invalid entry).
pub fn pfn_to_mfn(pfn: Pfn) -> Option<Mfn> {
    let index = usize::try_from(pfn.0).ok()?;
    let mfn = *P2M.get()?.get(index)?;
    (mfn.0 >> 63 == 0).then_some(mfn)
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

/// Return a frame from [`alloc_frame`].
pub fn free_frame(frame: Frame) -> Result<(), FreeError> {
    FRAMES.lock().free(frame.pfn.0)
}

/// Frames [`alloc_frame`] can still hand out.
pub fn frames_available() -> u64 {
    FRAMES.lock().available()
}

/// Heap usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapStats {
    /// The heap's address range.
    pub region: Span,
    /// Bytes allocated.
    pub in_use: u64,
    /// Bytes free.
    pub free: u64,
    /// Bytes lost to a full free list.
    pub leaked: u64,
}

/// Current heap usage.
pub fn heap_stats() -> HeapStats {
    let h = HEAP.lock();
    HeapStats {
        region: h.region(),
        in_use: h.in_use(),
        free: h.free_bytes(),
        leaked: h.leaked(),
    }
}

/// The runtime's heap as a [`GlobalAlloc`]. Allocation fails (null) when the
/// heap is exhausted or its lock is held by the code a trap interrupted.
#[derive(Debug)]
pub struct Heap;

// SAFETY: blocks come from the range allocator, which never hands out
// overlapping blocks, only addresses inside the mapped slack of the
// bootstrap region (memory nothing else uses), aligned as requested.
unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(mut heap) = HEAP.try_lock() else {
            return ptr::null_mut();
        };
        heap.alloc(layout.size() as u64, layout.align() as u64)
            .and_then(|addr| usize::try_from(addr).ok())
            .map_or(ptr::null_mut(), ptr::with_exposed_provenance_mut)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // A block freed while the lock is held elsewhere is leaked.
        if let Some(mut heap) = HEAP.try_lock() {
            let _ = heap.free(ptr.addr() as u64, layout.size() as u64);
        }
    }
}

#[cfg(feature = "global-allocator")]
#[global_allocator]
static GLOBAL: Heap = Heap;
