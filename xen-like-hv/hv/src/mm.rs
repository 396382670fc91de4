//! Machine memory: the boot-time plan (what is RAM, what must be kept), the switch to
//! the final page tables, and the global frame allocator.

use crate::arch::x86_64::layout::{DIRECTMAP_BASE, HV_OFFSET, HV_PHYS_BASE};
use crate::arch::x86_64::paging::{self, BumpFrames};
use crate::boot::multiboot::{AreaKind, BootInfo};
use spin::{Mutex, Once};
use x86_64::structures::paging::{PhysFrame, Size4KiB};
use xlhv_core::boot::memmap::{Region, RegionSet, find_hole};
use xlhv_core::mm::frame_alloc::{FrameAllocator, bitmap_words};
use xlhv_core::mm::{Mfn, MfnExt, PAGE_SIZE};

const MIB: u64 = 1 << 20;
/// A page, as a byte count for slices and copies.
pub const PAGE_BYTES: usize = 4096;
const GIB: u64 = 1 << 30;

static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);
/// Machine memory covered by the direct map (before rounding to 2 MiB).
static DIRECT: Once<RegionSet> = Once::new();

unsafe extern "C" {
    static __data_end: u8;
}

/// Machine range of the hypervisor image, from its load address to the end of .bss.
fn image_region() -> Region {
    // SAFETY: only the symbol's address is taken.
    let end_virt = unsafe { &__data_end as *const u8 as u64 };
    Region::new(HV_PHYS_BASE, end_virt - HV_OFFSET)
}

/// Page-table frames needed to map the image with 4 KiB pages and `[0, max_phys)` with
/// 2 MiB pages, plus slack for regions that straddle table boundaries.
fn table_frames_needed(max_phys: u64, image_bytes: u64) -> u64 {
    let pds = max_phys.div_ceil(GIB) + 1;
    let pdpts = max_phys.div_ceil(512 * GIB) + 1;
    let image_pts = image_bytes.div_ceil(2 * MIB) + 2;
    1 + pdpts + pds + 2 + image_pts + 16
}

/// Plans machine memory, moves to the final page tables and starts the frame allocator.
/// Stops the machine with a clear message if there is no memory to run in.
pub fn init(info: &BootInfo) {
    let mut usable = RegionSet::new();
    let mut direct = RegionSet::new();
    for a in &info.areas {
        let r = Region::new(a.start, a.end);
        log::debug!("e820: [{:#014x}, {:#014x}) {:?}", a.start, a.end, a.kind);
        match a.kind {
            AreaKind::Usable => {
                usable.insert(r);
                direct.insert(r);
            }
            AreaKind::Acpi | AreaKind::Nvs => direct.insert(r),
            AreaKind::Defective | AreaKind::Reserved => {}
        }
    }
    if info.areas_dropped > 0 {
        log::warn!(
            "memory: {} memory-map entries beyond {} ignored",
            info.areas_dropped,
            info.areas.len()
        );
    }
    direct.insert(Region::new(0, MIB));
    let ram = usable.total_bytes();
    TOTAL_FRAMES.store(ram / PAGE_SIZE, core::sync::atomic::Ordering::Relaxed);
    let top = direct.highest_end().unwrap_or(0);
    log::info!(
        "memory: {} MiB usable RAM ({ram} bytes) in {} regions; highest address {top:#x}",
        ram / MIB,
        usable.len()
    );

    // Keep: the first MiB (firmware), the image, the boot information, every module.
    let image = image_region();
    let mut free = usable.clone();
    free.subtract(Region::new(0, MIB));
    free.subtract(image);
    free.subtract(Region::new(info.mbi.0, info.mbi.1));
    for m in &info.modules {
        free.subtract(Region::new(m.start, m.end));
    }
    free.page_align_inward();

    // Frames for the final page tables: below 4 GiB, reached through the boot identity map.
    let pt_bytes = table_frames_needed(top, image.len()) * PAGE_SIZE;
    let Some(pt_at) = find_hole(&free, pt_bytes, PAGE_SIZE, MIB, 4 * GIB) else {
        panic!("memory: no {pt_bytes} bytes below 4 GiB for the hypervisor's page tables");
    };
    free.subtract(Region::new(pt_at, pt_at + pt_bytes));

    // The frame allocator's bitmap: anywhere, it is used through the direct map.
    let nframes = usable.highest_end().unwrap_or(0) / PAGE_SIZE;
    let words = bitmap_words(nframes);
    let bm_bytes = (words as u64 * 8).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let Some(bm_at) = find_hole(&free, bm_bytes, PAGE_SIZE, MIB, u64::MAX) else {
        panic!("memory: no {bm_bytes} bytes for the frame allocator's bitmap");
    };
    free.subtract(Region::new(bm_at, bm_at + bm_bytes));

    let mut tables = BumpFrames::new(pt_at, pt_at + pt_bytes);
    let root = match paging::build(direct.iter().map(|r| (r.start, r.end)), &mut tables) {
        Ok(root) => root,
        Err(e) => panic!("memory: cannot build the page tables: {e}"),
    };
    // SAFETY: `root` maps the image and the direct map of every region in `direct`, which
    // holds all page-table frames; `info` has been copied out of the lower half already.
    unsafe { paging::activate(root) };
    DIRECT.call_once(|| direct);

    // SAFETY: `[bm_at, bm_at + bm_bytes)` was removed from `free`, so nothing else uses
    // it; it is usable RAM, hence in the direct map; it lives for the rest of the run.
    let bitmap =
        unsafe { core::slice::from_raw_parts_mut((DIRECTMAP_BASE + bm_at) as *mut u64, words) };
    let mut frames = match FrameAllocator::new(bitmap, nframes) {
        Ok(f) => f,
        Err(e) => panic!("memory: frame allocator: {e:?}"),
    };
    for r in free.iter() {
        frames.add_free(Mfn::from_addr(r.start), Mfn::from_addr(r.end));
    }
    // Give back the part of the page-table block that `build` did not use.
    let (_, used_end) = tables.used(pt_at);
    let returned = frames.add_free(Mfn::from_addr(used_end), Mfn::from_addr(pt_at + pt_bytes));
    log::info!(
        "memory: image [{:#x}, {:#x}), boot info [{:#x}, {:#x}), {} page-table frames, {} KiB bitmap",
        image.start,
        image.end,
        info.mbi.0,
        info.mbi.1,
        pt_bytes / PAGE_SIZE - returned,
        bm_bytes / 1024
    );
    log::info!(
        "memory: {} frames ({} MiB) free for domains; the lower half is unmapped",
        frames.free_frames(),
        frames.free_frames() * PAGE_SIZE / MIB
    );
    *FRAMES.lock() = Some(frames);
}

/// Zeroes a machine frame through the direct map.
pub fn zero_frame(mfn: Mfn) {
    if let Some(va) = mfn.byte_addr().and_then(|pa| direct(pa, PAGE_SIZE)) {
        // SAFETY: the frame is in the direct map and owned by the caller (just allocated).
        unsafe { core::ptr::write_bytes(va as *mut u8, 0, PAGE_BYTES) }
    }
}

/// The 2 MiB runs backing the M2P, in order (`XENMEM_machphys_mfn_list`).
static M2P_CHUNKS: Mutex<heapless::Vec<Mfn, 2048>> = Mutex::new(heapless::Vec::new());

/// The first frame of M2P chunk `index`.
pub fn m2p_chunk(index: u64) -> Option<Mfn> {
    M2P_CHUNKS.lock().get(usize::try_from(index).ok()?).copied()
}

/// Entries in the M2P table (one per machine frame up to the highest RAM address).
static M2P_ENTRIES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Allocates the machine-to-phys table (2 MiB chunks, every entry INVALID_M2P_ENTRY),
/// maps it for the hypervisor and, read-only, for guests (digest §3.7).
pub fn init_m2p() {
    use crate::arch::x86_64::layout::M2P_WINDOW;
    let nframes = FRAMES.lock().as_ref().map_or(0, FrameAllocator::nframes);
    let bytes = nframes.saturating_mul(8).min(M2P_WINDOW);
    let chunks = bytes.div_ceil(2 * MIB);
    for i in 0..chunks {
        let Some(mfn) = FRAMES.lock().as_mut().and_then(|f| f.alloc_order(9)) else {
            panic!("memory: no 2 MiB run for M2P chunk {i}");
        };
        if let Some(va) = mfn.byte_addr().and_then(|pa| direct(pa, 2 * MIB)) {
            // SAFETY: a fresh 2 MiB run in the direct map; all-ones is INVALID_M2P_ENTRY.
            unsafe { core::ptr::write_bytes(va as *mut u8, 0xFF, 2 << 20) }
        }
        if crate::arch::x86_64::paging::map_m2p_chunk(i, mfn).is_none() {
            panic!("memory: cannot map M2P chunk {i}");
        }
        if M2P_CHUNKS.lock().push(mfn).is_err() {
            panic!("memory: more than 2048 M2P chunks");
        }
    }
    M2P_ENTRIES.store(bytes / 8, core::sync::atomic::Ordering::Relaxed);
    log::info!(
        "memory: M2P table for {} frames ({} KiB) mapped read-only at {:#x}",
        bytes / 8,
        chunks * 2048,
        hypercall_abi::xen::MACH2PHYS_VIRT_START
    );
}

/// Records that machine frame `mfn` holds pseudo-physical frame `pfn`.
pub fn m2p_set(mfn: Mfn, pfn: u64) {
    if mfn.0 < M2P_ENTRIES.load(core::sync::atomic::Ordering::Relaxed) {
        let va = crate::arch::x86_64::layout::RDWR_M2P_BASE + mfn.0 * 8;
        // SAFETY: the entry lies inside the mapped M2P table (checked above).
        unsafe { core::ptr::write_volatile(va as *mut u64, pfn) }
    }
}

/// The pseudo-physical frame recorded for `mfn`.
pub fn m2p_get(mfn: Mfn) -> u64 {
    if mfn.0 < M2P_ENTRIES.load(core::sync::atomic::Ordering::Relaxed) {
        let va = crate::arch::x86_64::layout::RDWR_M2P_BASE + mfn.0 * 8;
        // SAFETY: as in `m2p_set`.
        return unsafe { core::ptr::read_volatile(va as *const u64) };
    }
    hypercall_abi::xen::INVALID_M2P_ENTRY
}

/// Frames the allocator spans (every frame below the highest usable address).
pub fn managed_frames_span() -> u64 {
    FRAMES.lock().as_ref().map_or(0, FrameAllocator::nframes)
}

/// Frames of usable RAM (`XEN_SYSCTL_physinfo.total_pages`).
static TOTAL_FRAMES: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Frames of usable RAM the machine has.
pub fn total_frames() -> u64 {
    TOTAL_FRAMES.load(core::sync::atomic::Ordering::Relaxed)
}

/// The highest machine frame number the allocator knows.
pub fn max_mfn() -> u64 {
    managed_frames_span().saturating_sub(1)
}

/// Free machine frames.
pub fn free_frames() -> u64 {
    FRAMES
        .lock()
        .as_ref()
        .map_or(0, FrameAllocator::free_frames)
}

/// One machine frame, or `None` when memory is exhausted.
pub fn alloc_frame() -> Option<Mfn> {
    FRAMES.lock().as_mut()?.alloc()
}

/// A run of `2^order` machine frames, aligned to its size.
pub fn alloc_order(order: u32) -> Option<Mfn> {
    FRAMES.lock().as_mut()?.alloc_order(order)
}

/// A run of `2^order` machine frames, aligned to its size, every frame below `limit`
/// (the highest such run: low memory stays for narrower limits).
pub fn alloc_order_below(order: u32, limit: Mfn) -> Option<Mfn> {
    FRAMES.lock().as_mut()?.alloc_order_below(order, limit)
}

/// Gives back frames from [`alloc_frame`]/[`alloc_order`].
pub fn free_order(mfn: Mfn, order: u32) -> Result<(), xlhv_core::mm::AllocError> {
    match FRAMES.lock().as_mut() {
        Some(f) => f.free_order(mfn, order),
        None => Ok(()),
    }
}

/// The direct-map address of machine range `[pa, pa + len)`, if the direct map covers it.
pub fn direct(pa: u64, len: u64) -> Option<u64> {
    let r = Region::new(pa, pa.checked_add(len)?);
    DIRECT
        .get()?
        .contains_region(&r)
        .then_some(DIRECTMAP_BASE + pa)
}

/// Machine memory as bytes, through the direct map. Used for boot modules, whose frames
/// stay reserved for the whole run.
pub fn direct_slice(pa: u64, len: u64) -> Option<&'static [u8]> {
    let va = direct(pa, len)?;
    let len = usize::try_from(len).ok()?;
    // SAFETY: `direct` checked that the whole range is mapped; module memory is reserved
    // at boot and never handed out, so no one writes it while this slice lives.
    Some(unsafe { core::slice::from_raw_parts(va as *const u8, len) })
}

/// Frames for page tables the hypervisor creates after boot (x86_64 crate's allocator
/// trait over the global frame allocator).
#[derive(Debug)]
pub struct TableFrames;

// SAFETY: every frame comes from the global allocator, which hands each out once.
unsafe impl x86_64::structures::paging::FrameAllocator<Size4KiB> for TableFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let mfn = alloc_frame()?;
        PhysFrame::from_start_address(x86_64::PhysAddr::new(mfn.byte_addr()?)).ok()
    }
}

/// The hypervisor's heap (Xen's `xmalloc`): whole runs of frames from the frame
/// allocator, reached through the direct map. It serves the few structures a domain
/// gets when it is created and whose size depends on the domain (its vCPUs), never a
/// hypercall's hot path. An allocation takes the smallest power-of-two run of frames
/// that holds it; one that cannot be met returns null, which callers see through
/// `try_reserve` (nothing here panics on exhaustion). The frame allocator's lock is
/// taken inside: nothing may allocate or free while holding it.
struct FrameHeap;

impl FrameHeap {
    /// The order of the run of frames that holds `layout` (`None`: alignment over a
    /// page, which no caller asks for).
    fn order(layout: core::alloc::Layout) -> Option<u32> {
        if layout.align() > 4096 {
            return None;
        }
        let pages = layout.size().div_ceil(4096).max(1);
        Some(pages.next_power_of_two().trailing_zeros())
    }
}

/// Frames the heap takes for a block of `bytes` (a power of two, as
/// [`FrameHeap::order`]; none for 0: nothing is allocated).
pub fn heap_frames(bytes: usize) -> u64 {
    match bytes {
        0 => 0,
        b => b.div_ceil(4096).next_power_of_two() as u64,
    }
}

// SAFETY: every block is a run of frames that the frame allocator hands out once, is
// at least as large and as aligned as asked (page-aligned, alignments up to a page),
// and goes back with the same order it was taken with.
unsafe impl core::alloc::GlobalAlloc for FrameHeap {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        let Some(order) = Self::order(layout) else {
            return core::ptr::null_mut();
        };
        let Some(mfn) = alloc_order(order) else {
            return core::ptr::null_mut();
        };
        match mfn.byte_addr().and_then(|pa| direct(pa, 4096 << order)) {
            Some(va) => va as *mut u8,
            None => {
                let _ = free_order(mfn, order);
                core::ptr::null_mut()
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        let mfn = Mfn((ptr as u64 - DIRECTMAP_BASE) >> 12);
        if let Some(order) = Self::order(layout) {
            if free_order(mfn, order).is_err() {
                log::error!("heap: block at {ptr:p} was not the allocator's");
            }
        }
    }
}

#[global_allocator]
static HEAP: FrameHeap = FrameHeap;
