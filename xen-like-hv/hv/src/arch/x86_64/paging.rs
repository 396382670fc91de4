//! The hypervisor's own page tables.
//!
//! At boot, while boot.s's identity map of the first 4 GiB is still active, `build`
//! makes the final tables in frames below 4 GiB: the image mapped with 4 KiB pages and
//! per-section permissions (text RX, rodata R, data RW, never W+X), and the direct map of
//! machine memory with 2 MiB pages. `activate` loads them; from then on the lower half is
//! empty and page-table frames are reached through the direct map.

use super::layout::{DIRECTMAP_BASE, HV_OFFSET, IOREMAP_BASE, IOREMAP_SIZE};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as Flags, PhysFrame,
    Size2MiB, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

const SIZE_2M: u64 = 2 << 20;

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __data_end: u8;
    static hv_boot_stack_guard: u8;
    static hv_cpu0_stack_guard: u8;
}

/// The pages below the stacks, left unmapped so that an overflow faults.
pub fn stack_guard_pages() -> [u64; 2] {
    // SAFETY: only the symbols' addresses are taken.
    unsafe {
        [
            &hv_boot_stack_guard as *const u8 as u64,
            &hv_cpu0_stack_guard as *const u8 as u64,
        ]
    }
}

/// A virtual range of the image with the permissions it gets.
#[derive(Clone, Copy, Debug)]
pub struct Section {
    /// First byte (virtual, page aligned).
    pub start: u64,
    /// One past the last byte (virtual, page aligned).
    pub end: u64,
    /// Leaf flags.
    pub flags: Flags,
}

/// The image's sections, from linker.ld's symbols.
pub fn image_sections() -> [Section; 3] {
    let addr = |s: &u8| s as *const u8 as u64;
    let page_up = |a: u64| (a + 0xFFF) & !0xFFF;
    // SAFETY: only the addresses of the linker-defined symbols are taken, never read.
    let (ts, te, rs, re, ds, de) = unsafe {
        (
            addr(&__text_start),
            addr(&__text_end),
            addr(&__rodata_start),
            addr(&__rodata_end),
            addr(&__data_start),
            addr(&__data_end),
        )
    };
    [
        Section {
            start: ts,
            end: page_up(te),
            flags: Flags::PRESENT,
        },
        Section {
            start: rs,
            end: page_up(re),
            flags: Flags::PRESENT | Flags::NO_EXECUTE,
        },
        Section {
            start: ds,
            end: page_up(de),
            flags: Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE,
        },
    ]
}

/// Frames for the boot page tables, handed out from one block reserved for them.
#[derive(Debug)]
pub struct BumpFrames {
    next: u64,
    end: u64,
}

impl BumpFrames {
    /// Frames from the physical byte range `[start, end)` (page aligned, below 4 GiB).
    pub fn new(start: u64, end: u64) -> Self {
        Self { next: start, end }
    }

    /// Physical range of the frames handed out so far.
    pub fn used(&self, start: u64) -> (u64, u64) {
        (start, self.next)
    }
}

// SAFETY: each frame comes from the block reserved for boot page tables, once.
unsafe impl FrameAllocator<Size4KiB> for BumpFrames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if self.next >= self.end {
            return None;
        }
        let frame = PhysFrame::containing_address(PhysAddr::new(self.next));
        self.next += 4096;
        Some(frame)
    }
}

/// Why the page tables could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// The block reserved for page-table frames ran out.
    OutOfFrames,
    /// The direct map would not fit its virtual window.
    DirectMapTooLarge(u64),
}

impl core::fmt::Display for BuildError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BuildError::OutOfFrames => write!(f, "ran out of frames for the page tables"),
            BuildError::DirectMapTooLarge(end) => {
                write!(
                    f,
                    "machine memory up to {end:#x} does not fit the 5 TiB direct map"
                )
            }
        }
    }
}

fn map_err<S: x86_64::structures::paging::PageSize>(e: MapToError<S>) -> Option<BuildError> {
    match e {
        MapToError::FrameAllocationFailed => Some(BuildError::OutOfFrames),
        // Neighbouring regions rounded to 2 MiB can share a large page: fine.
        MapToError::PageAlreadyMapped(_) | MapToError::ParentEntryHugePage => None,
    }
}

/// Builds the final tables: the image and a direct map of `[start, end)` byte ranges.
/// Runs under the boot identity map, so every frame of `frames` must lie below 4 GiB.
pub fn build(
    direct: impl Iterator<Item = (u64, u64)>,
    frames: &mut BumpFrames,
) -> Result<PhysFrame, BuildError> {
    let root = frames.allocate_frame().ok_or(BuildError::OutOfFrames)?;
    let root_ptr = root.start_address().as_u64() as *mut PageTable;
    // SAFETY: the frame is fresh, below 4 GiB and so identity-mapped; nothing else uses it.
    let root_table = unsafe { &mut *root_ptr };
    root_table.zero();
    // SAFETY: with offset 0, every physical frame used below (all < 4 GiB) is reached
    // through the boot identity map.
    let mut mapper = unsafe { OffsetPageTable::new(root_table, VirtAddr::new(0)) };
    let parent = Flags::PRESENT | Flags::WRITABLE;

    let guards = stack_guard_pages();
    let is_guard = |va: &u64| guards.contains(va) || super::ap_stack_guards().any(|g| g == *va);
    for s in image_sections() {
        for va in (s.start..s.end).step_by(4096).filter(|va| !is_guard(va)) {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
            let frame = PhysFrame::containing_address(PhysAddr::new(va - HV_OFFSET));
            // SAFETY: maps the image's own frames at its link address, in tables that are
            // not live yet.
            match unsafe { mapper.map_to_with_table_flags(page, frame, s.flags, parent, frames) } {
                Ok(flush) => flush.ignore(),
                Err(e) => {
                    if let Some(err) = map_err(e) {
                        return Err(err);
                    }
                }
            }
        }
    }

    let leaf = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
    for (start, end) in direct {
        let start = start & !(SIZE_2M - 1);
        let end = end
            .checked_add(SIZE_2M - 1)
            .ok_or(BuildError::DirectMapTooLarge(end))?
            & !(SIZE_2M - 1);
        if end > super::layout::DIRECTMAP_SIZE {
            return Err(BuildError::DirectMapTooLarge(end));
        }
        for pa in (start..end).step_by(1 << 21) {
            let page = Page::<Size2MiB>::containing_address(VirtAddr::new(DIRECTMAP_BASE + pa));
            let frame = PhysFrame::<Size2MiB>::containing_address(PhysAddr::new(pa));
            // SAFETY: the direct map aliases machine memory in the hypervisor's own range;
            // the tables are not live yet.
            match unsafe { mapper.map_to_with_table_flags(page, frame, leaf, parent, frames) } {
                Ok(flush) => flush.ignore(),
                Err(e) => {
                    if let Some(err) = map_err(e) {
                        return Err(err);
                    }
                }
            }
        }
    }
    Ok(root)
}

static LIVE: Mutex<Option<OffsetPageTable<'static>>> = Mutex::new(None);
/// Machine address of the hypervisor's own L4 (what idle CPUs run on).
static ROOT: AtomicU64 = AtomicU64::new(0);
static NEXT_IOREMAP: AtomicU64 = AtomicU64::new(IOREMAP_BASE);

/// Loads `root` into CR3. Afterwards only the hypervisor's own range is mapped.
///
/// # Safety
/// `root` must come from `build` with a direct map covering every frame it uses, and
/// the caller must hold nothing that points into the lower half.
pub unsafe fn activate(root: PhysFrame) {
    // SAFETY: the new tables map the image (code, stacks, statics) at the same virtual
    // addresses as the boot tables, so execution continues; the caller guarantees the rest.
    unsafe {
        x86_64::registers::control::Cr3::write(root, x86_64::registers::control::Cr3Flags::empty())
    };
    ROOT.store(root.start_address().as_u64(), Ordering::Relaxed);
    let root_virt = DIRECTMAP_BASE + root.start_address().as_u64();
    // SAFETY: the root table is reached through the direct map, which the new tables
    // contain; the mapper is kept behind the LIVE lock as the only writer.
    let table = unsafe { &mut *(root_virt as *mut PageTable) };
    // SAFETY: DIRECTMAP_BASE maps all of machine memory that page tables can live in.
    let mapper = unsafe { OffsetPageTable::new(table, VirtAddr::new(DIRECTMAP_BASE)) };
    *LIVE.lock() = Some(mapper);
}

/// Maps `len` bytes of device registers at physical `phys` uncached and returns the
/// virtual address of `phys`. Mappings are permanent (devices are found once, at boot).
pub fn ioremap(phys: u64, len: u64) -> Option<u64> {
    let first = phys & !0xFFF;
    let last = phys.checked_add(len.max(1))?.checked_add(0xFFF)? & !0xFFF;
    let size = last - first;
    let va = NEXT_IOREMAP.fetch_add(size, Ordering::Relaxed);
    if va.checked_add(size)? > IOREMAP_BASE + IOREMAP_SIZE {
        return None;
    }
    let mut live = LIVE.lock();
    let mapper = live.as_mut()?;
    let flags = Flags::PRESENT
        | Flags::WRITABLE
        | Flags::NO_EXECUTE
        | Flags::NO_CACHE
        | Flags::WRITE_THROUGH;
    for off in (0..size).step_by(4096) {
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va + off));
        let frame = PhysFrame::containing_address(PhysAddr::new(first + off));
        // SAFETY: the ioremap window is used for nothing else and each page is mapped once.
        let flush = unsafe {
            mapper.map_to_with_table_flags(
                page,
                frame,
                flags,
                Flags::PRESENT | Flags::WRITABLE,
                &mut crate::mm::TableFrames,
            )
        }
        .ok()?;
        flush.flush();
    }
    Some(va + (phys - first))
}

/// Machine address of the hypervisor's own L4, for CPUs that start later.
pub fn root() -> u64 {
    ROOT.load(Ordering::Relaxed)
}

/// Builds, in the three low frames at `l4`, `l4 + 4K` and `l4 + 8K` (all below
/// 1 MiB, in the direct map), the tables an application processor enters long mode
/// on: the first 2 MiB mapped 1:1 (where its trampoline runs) and the hypervisor's
/// upper-half L4 entries, so it can jump into the image.
pub fn build_trampoline_tables(l4: u64) -> Option<()> {
    if l4 % 4096 != 0 || l4 + 3 * 4096 > 1 << 20 {
        return None;
    }
    let (l3, l2) = (l4 + 4096, l4 + 2 * 4096);
    let live = LIVE.lock();
    let top = live.as_ref()?.level_4_table();
    let table = |pa: u64| {
        // SAFETY: `pa` is one of the three low frames the caller set aside for this
        // (below 1 MiB, which the direct map always covers); nothing else uses them.
        unsafe { &mut *((DIRECTMAP_BASE + pa) as *mut PageTable) }
    };
    let parent = Flags::PRESENT | Flags::WRITABLE;
    let t4 = table(l4);
    t4.zero();
    for slot in 256..512 {
        t4[slot] = top[slot].clone();
    }
    t4[0].set_addr(PhysAddr::new(l3), parent);
    let t3 = table(l3);
    t3.zero();
    t3[0].set_addr(PhysAddr::new(l2), parent);
    let t2 = table(l2);
    t2.zero();
    t2[0].set_addr(PhysAddr::new(0), parent | Flags::HUGE_PAGE);
    Some(())
}

/// L4 slots the hypervisor owns in every address space.
pub const HV_SLOTS: core::ops::RangeInclusive<usize> = 256..=271;

/// Gives every hypervisor L4 slot a table, so that copying slots 256-271 into a guest's
/// L4 shares everything the hypervisor will ever map there. Slot 256 (the guest-visible
/// M2P) is user-accessible; the others are not.
pub fn prepare_hypervisor_slots() -> Option<()> {
    let mut live = LIVE.lock();
    let mapper = live.as_mut()?;
    let l4 = mapper.level_4_table_mut();
    for slot in HV_SLOTS {
        let entry = &mut l4[slot];
        if entry.is_unused() {
            let mfn = crate::mm::alloc_frame()?;
            let pa = xlhv_core::mm::MfnExt::byte_addr(mfn)?;
            crate::mm::zero_frame(mfn);
            let mut flags = Flags::PRESENT | Flags::WRITABLE;
            if slot == 256 {
                flags |= Flags::USER_ACCESSIBLE;
            }
            entry.set_addr(PhysAddr::new(pa), flags);
        }
    }
    Some(())
}

/// The hypervisor's L4 entries for slots 256-271, to copy into guest L4s.
pub fn hypervisor_slots() -> [u64; 16] {
    let mut out = [0u64; 16];
    if let Some(mapper) = LIVE.lock().as_mut() {
        let l4 = mapper.level_4_table();
        for (o, slot) in out.iter_mut().zip(HV_SLOTS) {
            *o = l4[slot].addr().as_u64() | l4[slot].flags().bits();
        }
    }
    out
}

/// Maps 2 MiB chunk `index` of the M2P table (machine frames from `mfn`) read-write for
/// the hypervisor and read-only, user-accessible for guests.
pub fn map_m2p_chunk(index: u64, mfn: xlhv_core::mm::Mfn) -> Option<()> {
    use super::layout::RDWR_M2P_BASE;
    use hypercall_abi::xen::MACH2PHYS_VIRT_START;
    let mut live = LIVE.lock();
    let mapper = live.as_mut()?;
    let frame = PhysFrame::<Size2MiB>::from_start_address(PhysAddr::new(
        xlhv_core::mm::MfnExt::byte_addr(mfn)?,
    ))
    .ok()?;
    let off = index.checked_mul(SIZE_2M)?;
    let views = [
        (
            RDWR_M2P_BASE,
            Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE,
            Flags::PRESENT | Flags::WRITABLE,
        ),
        (
            MACH2PHYS_VIRT_START,
            Flags::PRESENT | Flags::USER_ACCESSIBLE | Flags::NO_EXECUTE,
            Flags::PRESENT | Flags::WRITABLE | Flags::USER_ACCESSIBLE,
        ),
    ];
    for (base, leaf, parent) in views {
        let page = Page::<Size2MiB>::containing_address(VirtAddr::new(base + off));
        // SAFETY: the chunk is a fresh, hypervisor-owned 2 MiB run; both windows are
        // used for nothing else.
        let flush = unsafe {
            mapper.map_to_with_table_flags(page, frame, leaf, parent, &mut crate::mm::TableFrames)
        }
        .ok()?;
        flush.flush();
    }
    Some(())
}

/// Points the 4 KiB image page at `va` to machine frame `pa` (read-write for the
/// hypervisor, never user or executable), or back to the image's own frame when
/// `pa` is `None`. Used for the guest pages of the GDT.
pub fn remap_image_page(va: u64, pa: Option<u64>) -> Option<()> {
    let mut live = LIVE.lock();
    let mapper = live.as_mut()?;
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
    let frame = PhysFrame::containing_address(PhysAddr::new(pa.unwrap_or(va - HV_OFFSET)));
    if let Ok((_, flush)) = mapper.unmap(page) {
        flush.ignore();
    }
    let flags = Flags::PRESENT | Flags::WRITABLE | Flags::NO_EXECUTE;
    // SAFETY: the page belongs to the GDT's guest part, which only the CPU reads and
    // only this function maps; the frame is a validated descriptor page of the guest
    // (type SegDesc, so the guest itself cannot write it) or the image's own frame.
    let flush = unsafe {
        mapper.map_to_with_table_flags(
            page,
            frame,
            flags,
            Flags::PRESENT | Flags::WRITABLE,
            &mut crate::mm::TableFrames,
        )
    }
    .ok()?;
    flush.flush();
    Some(())
}

/// Makes sure the 4 KiB mappings of `va`'s 2 MiB region have an L1 table, and returns
/// that table's address in the direct map. Used once per CPU for its LDT area, whose
/// entries are then written directly (`arch::x86_64::ldt`).
pub fn l1_table_for(va: u64) -> Option<u64> {
    let mut live = LIVE.lock();
    let mapper = live.as_mut()?;
    let page = Page::<Size4KiB>::containing_address(VirtAddr::new(va));
    // Map the page (to frame 0, never accessed) so that every level exists, then take
    // the mapping away again; the tables stay.
    let flags = Flags::PRESENT | Flags::NO_EXECUTE;
    // SAFETY: the page is in a window the hypervisor uses for nothing else, and the
    // mapping is removed again below before anything could use it.
    let flush = unsafe {
        mapper.map_to_with_table_flags(
            page,
            PhysFrame::containing_address(PhysAddr::new(0)),
            flags,
            Flags::PRESENT | Flags::WRITABLE,
            &mut crate::mm::TableFrames,
        )
    }
    .ok()?;
    flush.ignore();
    let (_, flush) = mapper.unmap(page).ok()?;
    flush.flush();
    let mut table: &PageTable = mapper.level_4_table();
    for index in [page.p4_index(), page.p3_index(), page.p2_index()] {
        let entry = &table[index];
        if entry.is_unused() || entry.flags().contains(Flags::HUGE_PAGE) {
            return None;
        }
        let next = DIRECTMAP_BASE + entry.addr().as_u64();
        // SAFETY: a present, non-huge entry of the live tables points at the next
        // table, which the direct map shows.
        table = unsafe { &*(next as *const PageTable) };
    }
    Some(table as *const PageTable as u64)
}
