//! The memory model (`xlhv_core::mm`) on this machine: the frame table's storage,
//! page-table entries through the direct map, the M2P, TLB flushes, and what the model
//! asks of the rest of the hypervisor.

use crate::arch::x86_64::layout::DIRECTMAP_BASE;
use crate::arch::x86_64::paging;
use crate::mm;
use core::sync::atomic::{AtomicU64, Ordering};
use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::mm::frame_table::{FrameInfo, FrameTable};
use xlhv_core::mm::mmu::FlushKind;
use xlhv_core::mm::page_type::{HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks};
use xlhv_core::mm::{Mfn, MfnExt, PAGE_SIZE};

/// The frame table, one entry per machine frame.
pub static FRAME_TABLE: Mutex<Option<FrameTable<'static>>> = Mutex::new(None);

/// Allocates and initialises the frame table (every frame free).
pub fn init_frame_table(nframes: u64) {
    let bytes = nframes.saturating_mul(size_of::<FrameInfo>() as u64);
    let pages = bytes.div_ceil(PAGE_SIZE).max(1);
    let order = 64 - (pages - 1).leading_zeros();
    let Some(mfn) = mm::alloc_order(order) else {
        panic!("memory: no run of 2^{order} frames for the frame table");
    };
    let Some(base) = mfn
        .byte_addr()
        .and_then(|pa| mm::direct(pa, pages * PAGE_SIZE))
    else {
        panic!("memory: the frame table is outside the direct map");
    };
    let Ok(n) = usize::try_from(nframes) else {
        panic!("memory: {nframes} frames")
    };
    let ptr = base as *mut FrameInfo;
    for i in 0..n {
        // SAFETY: `ptr` points at a fresh run of `pages` frames, large enough for `n`
        // entries (computed above); each entry is initialised before the slice exists.
        unsafe { ptr.add(i).write(FrameInfo::default()) };
    }
    // SAFETY: initialised just above; the run is never freed and only the frame table
    // (behind FRAME_TABLE's lock) uses it.
    let frames = unsafe { core::slice::from_raw_parts_mut(ptr, n) };
    *FRAME_TABLE.lock() = Some(FrameTable::new(frames));
    log::info!(
        "memory: frame table for {nframes} frames ({} KiB)",
        pages * 4
    );
}

/// Page-table entries through the direct map.
#[derive(Debug)]
pub struct DirectMem;

fn entry_ptr(mfn: Mfn, index: usize) -> Option<*mut u64> {
    let va = DIRECTMAP_BASE
        .checked_add(mfn.byte_addr()?)?
        .checked_add((index as u64 % 512) * 8)?;
    Some(va as *mut u64)
}

impl MachineMemory for DirectMem {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        let Some(p) = entry_ptr(mfn, index) else {
            return 0;
        };
        // SAFETY: the model passes only frames it tracks (RAM, in the direct map), and
        // entries are 8-byte aligned.
        let entry = unsafe { AtomicU64::from_ptr(p) };
        entry.load(Ordering::Relaxed)
    }
    fn write_entry(&mut self, mfn: Mfn, index: usize, val: u64) {
        if let Some(p) = entry_ptr(mfn, index) {
            // SAFETY: as above; page-table entries are written atomically.
            let entry = unsafe { AtomicU64::from_ptr(p) };
            entry.store(val, Ordering::Release);
        }
    }
    fn cmpxchg_entry(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> Result<(), u64> {
        let Some(p) = entry_ptr(mfn, index) else {
            return Err(0);
        };
        // SAFETY: as above; `lock cmpxchg`, since the MMU may set A/D bits concurrently.
        unsafe { AtomicU64::from_ptr(p) }
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
    fn and_entry(&mut self, mfn: Mfn, index: usize, keep: u64) {
        if let Some(p) = entry_ptr(mfn, index) {
            // SAFETY: as above; `lock and`, since the guest may write the same word.
            unsafe { AtomicU64::from_ptr(p) }.fetch_and(keep, Ordering::AcqRel);
        }
    }
    fn copy_bytes(&mut self, dst: Mfn, dst_off: usize, src: Mfn, src_off: usize, len: usize) {
        let in_page = |off: usize| {
            off.checked_add(len)
                .is_some_and(|end| end <= mm::PAGE_BYTES)
        };
        if !in_page(dst_off) || !in_page(src_off) {
            return;
        }
        let (Some(d), Some(s)) = (entry_ptr(dst, 0), entry_ptr(src, 0)) else {
            return;
        };
        // SAFETY: both are RAM frames in the direct map and both ranges lie inside
        // their page (checked above); `copy` is a memmove, so a copy within one frame
        // may overlap. Guests may write the frames meanwhile, as with Xen's memcpy.
        unsafe {
            core::ptr::copy(
                (s as *const u8).add(src_off),
                (d as *mut u8).add(dst_off),
                len,
            );
        }
    }
    fn zero_page(&mut self, mfn: Mfn) {
        mm::zero_frame(mfn);
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        let (Some(d), Some(s)) = (entry_ptr(dst, 0), entry_ptr(src, 0)) else {
            return;
        };
        if d != s {
            // SAFETY: both are whole RAM frames in the direct map; distinct frames do
            // not overlap, and copying a frame onto itself is excluded.
            unsafe {
                core::ptr::copy_nonoverlapping(s as *const u8, d as *mut u8, crate::mm::PAGE_BYTES)
            };
        }
    }
}

/// The hypervisor's L4 slots, read once.
#[derive(Debug)]
pub struct Slots([u64; 16]);

impl Slots {
    /// The current slot entries.
    pub fn now() -> Self {
        Slots(paging::hypervisor_slots())
    }
}

impl HypervisorSlots for Slots {
    fn l4_entry(&self, slot: usize) -> u64 {
        slot.checked_sub(*paging::HV_SLOTS.start())
            .and_then(|i| self.0.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// The M2P table.
#[derive(Debug)]
pub struct HwM2p;

impl M2p for HwM2p {
    fn get(&self, mfn: Mfn) -> u64 {
        mm::m2p_get(mfn)
    }
    fn set(&mut self, mfn: Mfn, pfn: u64) {
        mm::m2p_set(mfn, pfn)
    }
}

/// What the model asks: which domains exist, who is privileged, TLB shoot-downs,
/// descriptor audit.
#[derive(Debug)]
pub struct Hooks {
    /// The domains of the domain table exist (`crate::registry`); false while a
    /// domain is built or given its first frames, when only `also` does.
    pub table: bool,
    /// A domain that exists though the table may not hold it (yet).
    pub also: Option<DomId>,
    /// The privileged (control) domain.
    pub control: DomId,
}

impl Hooks {
    /// Only `dom` exists, and it is the control domain (building it).
    pub fn only(dom: DomId) -> Hooks {
        Hooks {
            table: false,
            also: Some(dom),
            control: dom,
        }
    }

    /// The table's domains exist, and `also`; `control` controls.
    pub fn table(control: DomId, also: Option<DomId>) -> Hooks {
        Hooks {
            table: true,
            also,
            control,
        }
    }
}

/// Destroyed domains whose frames someone still referenced at teardown, with how
/// many: their ids are not handed out again until every frame came back (Xen keeps
/// such a domain as a zombie).
static ZOMBIES: spin::Mutex<heapless::Vec<(DomId, u64), 64>> =
    spin::Mutex::new(heapless::Vec::new());

/// Records that `frames` frames of destroyed domain `dom` are still referenced.
pub fn add_zombie(dom: DomId, frames: u64) {
    if frames > 0 && ZOMBIES.lock().push((dom, frames)).is_err() {
        log::warn!(
            "domain {}: too many zombie domains to track; its id may be reused",
            dom.0
        );
    }
}

/// Whether `dom` still has frames out (its id must not be reused yet).
pub fn is_zombie(dom: DomId) -> bool {
    ZOMBIES.lock().iter().any(|&(d, _)| d == dom)
}

impl MmHooks for Hooks {
    fn domain_exists(&self, dom: DomId) -> bool {
        self.also == Some(dom) || (self.table && crate::registry::exists(dom))
    }
    fn frame_orphan_freed(&mut self, dom: DomId, mfn: Mfn) {
        let _ = mm::free_order(mfn, 0);
        let mut z = ZOMBIES.lock();
        if let Some(i) = z.iter().position(|&(d, _)| d == dom) {
            z[i].1 = z[i].1.saturating_sub(1);
            if z[i].1 == 0 {
                z.swap_remove(i);
                log::info!(
                    "memory: the last frame of destroyed domain {} is back",
                    dom.0
                );
            }
        }
    }
    fn privileged_over(&self, caller: DomId, target: DomId) -> bool {
        caller == self.control && target != DomId::XEN
    }
    fn io_caps(&self, dom: DomId) -> bool {
        // The hardware domain drives the devices, and a domain given I/O memory with
        // XEN_DOMCTL_iomem_permission may map it (Xen's `cache_flush_permitted`).
        (dom == DomId(0) && self.control == DomId(0)) || IOMEM.lock().has_any(dom)
    }
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        IOMEM.lock().permits(dom, mfn.0, mfn.0)
    }
    fn mmio_read_only(&self, mfn: Mfn) -> bool {
        mfn.0 == MMIO_RO_FRAME.load(core::sync::atomic::Ordering::Relaxed)
            || MMIO_RO.lock().iter().any(|r| r.0 <= mfn.0 && mfn.0 <= r.1)
    }
    fn flush_for_type_change(&mut self, _owner: DomId, _mfn: Mfn) {
        // Every CPU that runs a guest: the frame's old mappings may be in the TLB of
        // any domain that mapped it (its owner's vCPUs, a foreign or grant mapper).
        crate::arch::x86_64::tlb::flush_everywhere();
    }
    fn check_descriptor(&self, _owner: DomId, desc: u64, _next: u64) -> bool {
        audit_descriptor(desc)
    }
}

/// Xen's descriptor audit, as far as 64-bit PV guests need it: not-present and
/// DPL-3 code/data descriptors pass; system descriptors other than a 64-bit call gate
/// do not.
pub fn audit_descriptor(desc: u64) -> bool {
    let present = desc & (1 << 47) != 0;
    let s = desc & (1 << 44) != 0;
    let dpl = (desc >> 45) & 3;
    let ty = (desc >> 40) & 0xF;
    !present || (s && dpl == 3) || (!s && ty == 0xC)
}

/// Runs `f` with the memory model of this machine for `dom`.
pub fn with_mm<R>(
    dom: DomId,
    privileged: bool,
    hooks: &mut Hooks,
    f: impl FnOnce(&mut MmCtx<'_, '_, DirectMem, Slots, HwM2p, Hooks>) -> R,
) -> R {
    let mut ft = FRAME_TABLE.lock();
    let Some(ft) = ft.as_mut() else {
        panic!("memory model used before the frame table exists")
    };
    let slots = Slots::now();
    let mut ctx = MmCtx {
        ft,
        mem: &mut DirectMem,
        slots: &slots,
        m2p: &mut HwM2p,
        hooks,
        dom,
        privileged,
        io_caps: privileged || IOMEM.lock().has_any(dom),
        linear_pt: true,
    };
    f(&mut ctx)
}

/// Every domain's I/O-memory permissions (Xen's `iomem_caps`, `xlhv_core::iomem`).
/// A leaf lock: taken under the memory lock, never the other way round.
pub static IOMEM: Mutex<xlhv_core::iomem::IomemTable> =
    Mutex::new(xlhv_core::iomem::IomemTable::new());

/// The one I/O frame every domain may map only read-only (Xen's `mmio_ro_ranges`,
/// which holds the HPET under `ro-hpet`); `u64::MAX` if none.
static MMIO_RO_FRAME: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(u64::MAX);

/// The other read-only I/O ranges (Xen's `mmio_ro_ranges`): MSI-X tables and PBAs
/// in use, MMCONFIG regions. `(first, last, users)`. A leaf lock.
static MMIO_RO: Mutex<heapless::Vec<(u64, u64, u32), 32>> = Mutex::new(heapless::Vec::new());

/// Frames `first..=last` become read-only for every guest mapping made from now on
/// (`ro`), or one user fewer keeps them so. Mappings that exist stay as they are, as
/// in Xen.
pub fn mmio_ro(first: u64, last: u64, ro: bool) {
    let mut set = MMIO_RO.lock();
    let i = set.iter().position(|r| r.0 == first && r.1 == last);
    match (i, ro) {
        (Some(i), true) => {
            if let Some(r) = set.get_mut(i) {
                r.2 += 1;
            }
        }
        (None, true) => {
            if set.push((first, last, 1)).is_err() {
                log::error!("iomem: no room to make frames {first:#x}-{last:#x} read-only");
            }
        }
        (Some(i), false) => {
            if let Some(r) = set.get_mut(i) {
                r.2 -= 1;
                if r.2 == 0 {
                    set.swap_remove(i);
                }
            }
        }
        (None, false) => {}
    }
}

/// dom0's I/O memory (Xen's `dom0_setup_permissions`): every frame the CPU can
/// address but the devices the hypervisor drives itself: the local APIC, the
/// IO-APICs, the MSI window. The HPET (`(base, protected frames)`) is denied when its
/// ACPI table asks for page protection (4 KiB or 64 KiB), and otherwise mapped
/// read-only, as Xen's default `ro-hpet` does: ACPI code in dom0 reads it.
pub fn setup_dom0_iomem(io_apics: &[u64], hpet: Option<(u64, u64)>) {
    use xlhv_core::iomem::{FrameRange, IoMem};
    let one = |pa: u64| FrameRange {
        first: pa >> 12,
        last: pa >> 12,
    };
    let mut denied = heapless::Vec::<FrameRange, 12>::new();
    let _ = denied.push(one(crate::arch::x86_64::apic::phys_base()));
    for &a in io_apics {
        let _ = denied.push(one(a));
    }
    match hpet {
        Some((h, protected)) if protected > 0 => {
            let _ = denied.push(FrameRange {
                first: h >> 12,
                last: (h >> 12) + protected - 1,
            });
        }
        Some((h, _)) => {
            MMIO_RO_FRAME.store(h >> 12, core::sync::atomic::Ordering::Relaxed);
            log::info!(
                "iomem: the HPET's frame {:#x} is read-only for dom0",
                h >> 12
            );
        }
        None => {}
    }
    let set = IoMem::hardware_domain(phys_frames(), &denied);
    for r in set.ranges() {
        log::info!("iomem: dom0 may map frames {:#x}-{:#x}", r.first, r.last);
    }
    if IOMEM.lock().set(DomId(0), set).is_err() {
        log::error!("iomem: no room for dom0's I/O memory");
    }
}

/// A domain is gone: so are its I/O-memory permissions.
pub fn forget_iomem(dom: DomId) {
    IOMEM.lock().forget(dom);
}

/// Frames the CPU can address (`2^(MAXPHYADDR - 12)`, CPUID 0x80000008): dom0's I/O
/// range ends there, as Xen's does.
fn phys_frames() -> u64 {
    static BITS: spin::Once<u32> = spin::Once::new();
    let bits = *BITS.call_once(|| {
        let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
        if max_ext >= 0x8000_0008 {
            core::arch::x86_64::__cpuid(0x8000_0008).eax & 0xFF
        } else {
            36
        }
    });
    1u64 << bits.clamp(32, 52).saturating_sub(12)
}

/// Marks the frames the domains may reach as I/O memory (`Owner::Io`, Xen's
/// `DOMID_IO`): the first MiB (firmware, VGA, BIOS) and every frame below the frame
/// table's end that the firmware does not report as usable RAM. The allocator never
/// hands these out.
pub fn mark_io_frames() {
    use xlhv_core::mm::frame_table::Owner;
    let mut guard = FRAME_TABLE.lock();
    let Some(ft) = guard.as_mut() else { return };
    let n = ft.len() as u64;
    let mut ram_ranges = heapless::Vec::<(u64, u64), 64>::new();
    for e in (0..).map_while(crate::boot::multiboot::host_e820) {
        if e.type_ == hypercall_abi::memory::E820_RAM {
            let _ = ram_ranges.push((e.addr, e.addr.saturating_add(e.size)));
        }
    }
    let mut marked = 0u64;
    for mfn in 0..n {
        let pa = mfn << 12;
        let low = pa < 1 << 20;
        let ram = ram_ranges
            .iter()
            .any(|&(start, end)| start <= pa && pa + 4096 <= end);
        if (low || !ram) && ft.assign(Mfn(mfn), Owner::Io).is_ok() {
            marked += 1;
        }
    }
    log::info!("memory: {marked} frames of I/O memory (first MiB and non-RAM) for dom0");
}

/// Flushes this CPU's TLB (`arch::x86_64::tlb` flushes other CPUs).
pub fn flush_tlb(kind: FlushKind) {
    match kind {
        FlushKind::Invlpg(va) => {
            x86_64::instructions::tlb::flush(x86_64::VirtAddr::new_truncate(va))
        }
        FlushKind::Tlb => x86_64::instructions::tlb::flush_all(),
    }
}

/// `WBINVD`.
pub fn flush_cache() {
    // SAFETY: write-back and invalidate has no effect on memory contents.
    unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) }
}
