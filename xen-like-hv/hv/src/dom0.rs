//! Building dom0 from its boot module (digest §2-§3): the layout and contents come from
//! `pvboot`, the code dom0's toolstack also builds domUs with; this file supplies the
//! machine memory, the shared_info page, the M2P entries and the hypervisor's L4 slots.
//!
//! A module that is a Linux bzImage (XZ or gzip payload) is unpacked first, as Xen's
//! `bzimage_parse` does for dom0: into the heap (runs of frames taken before the
//! domain's memory, given back once it is built), then built from the ELF inside.

use crate::arch::x86_64::layout::DIRECTMAP_BASE;
use crate::arch::x86_64::paging;
use crate::boot::multiboot::BootInfo;
use crate::mm;
use alloc::vec::Vec;
use core::fmt;
use hypercall_abi::types::{DomId, EvtchnPort, MachineAddr, Pfn};
use hypercall_abi::xen::start_info::SifFlags;
use pvboot::{
    BuildError, BuildParams, DomainMemory, Flavour, Layout, LayoutError, MemError, XenImageInfo,
};
use xlhv_core::boot::module::{self, ModuleRole, parse_module_cmdline};
use xlhv_core::domain::PvDomain;
use xlhv_core::mm::{Mfn, MfnExt, PAGE_SIZE};

const MIB: u64 = 1 << 20;
/// dom0's memory when `dom0_mem=` does not say: 128 MiB, or half of what is free if
/// that is less.
const DEFAULT_DOM0_MEM: u64 = 128 * MIB;
/// Xen's default `xen_processor_pmbits` (PX and CX control by dom0), reported in
/// start_info's SIF_PM_MASK field.
const DOM0_PM_BITS: u32 = 3;
/// Runs of machine frames a domain's memory may come in.
const MAX_EXTENTS: usize = 4096;
/// The largest kernel a bzImage module may unpack to.
const MAX_BZIMAGE_KERNEL: u64 = 256 * MIB;

/// Why dom0 could not be built. Each says what to do.
#[derive(Debug)]
pub enum BuildFailure {
    /// No module at all.
    NoModule,
    /// The module's memory is not readable.
    Unreadable,
    /// Not a usable ELF image.
    Elf(pvboot::elf::ElfError),
    /// A bzImage that cannot be unpacked.
    BzImage(pvboot::BzError),
    /// No memory to unpack a bzImage into.
    UnpackNoMemory {
        /// Bytes wanted (the kernel and the XZ dictionary).
        bytes: u64,
    },
    /// The Xen notes refuse it (the error's text: the error borrows the image, and
    /// a bzImage's unpacked kernel is freed on return).
    Notes(alloc::string::String),
    /// No layout fits.
    Layout(LayoutError),
    /// Building failed.
    Build(BuildError),
    /// Not enough free memory.
    OutOfMemory {
        /// Pages wanted.
        wanted: u64,
        /// Pages free.
        free: u64,
    },
    /// The domain table is full.
    NoSlot,
    /// The heap cannot hold this many vCPUs.
    NoVcpus(u32),
    /// The memory model refused its page tables.
    PageTables(xlhv_core::mm::error::MmError),
}

impl fmt::Display for BuildFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildFailure::NoModule => write!(
                f,
                "no boot module to build dom0 from (add one named 'dom0')"
            ),
            BuildFailure::Unreadable => write!(f, "the dom0 module lies outside machine memory"),
            BuildFailure::Elf(e) => write!(f, "not a usable PV kernel: {e}"),
            BuildFailure::BzImage(e) => write!(f, "{e}"),
            BuildFailure::UnpackNoMemory { bytes } => write!(
                f,
                "no memory to unpack the bzImage ({bytes} bytes for its kernel and dictionary); give the machine more memory or pass the vmlinux ELF"
            ),
            BuildFailure::Notes(e) => write!(f, "refused by its Xen notes: {e}"),
            BuildFailure::Layout(e) => write!(f, "cannot lay out its memory: {e}"),
            BuildFailure::Build(e) => write!(f, "cannot build it: {e}"),
            BuildFailure::OutOfMemory { wanted, free } => {
                write!(
                    f,
                    "needs {wanted} pages, only {free} are free (lower dom0_mem=)"
                )
            }
            BuildFailure::NoSlot => write!(f, "no free domain slot"),
            BuildFailure::NoVcpus(n) => write!(f, "no memory for {n} vCPUs"),
            BuildFailure::PageTables(e) => write!(f, "its page tables were refused: {e}"),
        }
    }
}

/// A domain's memory while it is built: runs of machine frames in pseudo-physical order.
/// The run list of the domain being built. Domains are built one at a time (at boot,
/// before anything runs), and the list is only needed while building.
static BUILD_MEM: spin::Mutex<DomMem> = spin::Mutex::new(DomMem {
    extents: heapless::Vec::new(),
    nr_pages: 0,
});

struct DomMem {
    /// (first pfn, first mfn, frames)
    extents: heapless::Vec<(u64, Mfn, u64), MAX_EXTENTS>,
    nr_pages: u64,
}

impl DomMem {
    /// Allocates `nr_pages` zeroed frames in as few machine-contiguous runs as the free
    /// memory allows, as Xen's `alloc_chunk` gives dom0 its memory: each run is the
    /// largest power of two that fits in what is left (at most the last order that
    /// succeeded, at most [`xlhv_core::mm::MAX_ORDER`], 1 GiB), taken from the top of
    /// memory so that low memory stays for DMA below an address limit; an order no
    /// run is free for is halved. Pseudo-physical frames follow the runs in order, so
    /// each run is also contiguous in the domain's pseudo-physical space.
    ///
    /// Fills `m` in place: the run list is 96 KiB, too big to move around on the boot
    /// stack (it lives in [`BUILD_MEM`]).
    fn allocate(m: &mut DomMem, nr_pages: u64) -> Result<(), BuildFailure> {
        let free = mm::free_frames();
        if nr_pages > free {
            return Err(BuildFailure::OutOfMemory {
                wanted: nr_pages,
                free,
            });
        }
        m.extents.clear();
        m.nr_pages = nr_pages;
        let mut pfn = 0;
        let mut last_order = xlhv_core::mm::MAX_ORDER;
        while pfn < nr_pages {
            let mut order = xlhv_core::mm::frame_alloc::chunk_order(nr_pages - pfn, last_order);
            let mfn = loop {
                if let Some(mfn) = mm::alloc_order_below(order, Mfn(u64::MAX)) {
                    break Some(mfn);
                }
                if order == 0 {
                    break None;
                }
                order -= 1;
            };
            let Some(mfn) = mfn else {
                m.release();
                return Err(BuildFailure::OutOfMemory {
                    wanted: nr_pages,
                    free: mm::free_frames(),
                });
            };
            last_order = order;
            let n = 1u64 << order;
            for i in 0..n {
                mm::zero_frame(Mfn(mfn.0 + i));
                mm::m2p_set(Mfn(mfn.0 + i), pfn + i);
            }
            if m.extents.push((pfn, mfn, n)).is_err() {
                let _ = mm::free_order(mfn, order);
                m.release();
                return Err(BuildFailure::OutOfMemory {
                    wanted: nr_pages,
                    free: mm::free_frames(),
                });
            }
            pfn += n;
        }
        Ok(())
    }

    /// The largest run: (first pfn, first mfn, frames).
    fn largest_run(&self) -> Option<(u64, Mfn, u64)> {
        self.extents.iter().copied().max_by_key(|&(_, _, n)| n)
    }

    /// Gives every frame back (a failed build).
    fn release(&mut self) {
        for &(_, mfn, n) in &self.extents {
            for i in 0..n {
                mm::m2p_set(Mfn(mfn.0 + i), hypercall_abi::xen::INVALID_M2P_ENTRY);
                let _ = mm::free_order(Mfn(mfn.0 + i), 0);
            }
        }
        self.extents.clear();
    }

    fn frame_va(&self, pfn: Pfn) -> Option<u64> {
        Some(DIRECTMAP_BASE + self.mfn(pfn)?.byte_addr()?)
    }
}

impl DomainMemory for DomMem {
    fn mfn(&self, pfn: Pfn) -> Option<Mfn> {
        if pfn.0 >= self.nr_pages {
            return None;
        }
        let i = self
            .extents
            .partition_point(|&(start, _, _)| start <= pfn.0)
            .checked_sub(1)?;
        let &(start, mfn, n) = self.extents.get(i)?;
        (pfn.0 - start < n).then(|| Mfn(mfn.0 + (pfn.0 - start)))
    }

    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) -> Result<(), MemError> {
        let va = self.frame_va(pfn).ok_or(MemError::NotPopulated)?;
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > crate::mm::PAGE_BYTES)
        {
            return Err(MemError::OutOfRange);
        }
        // SAFETY: the frame belongs to the domain being built (nobody else maps it yet)
        // and the range was checked to lie inside it.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), (va as *mut u8).add(offset), bytes.len())
        };
        Ok(())
    }

    fn zero(&mut self, pfn: Pfn) -> Result<(), MemError> {
        let mfn = self.mfn(pfn).ok_or(MemError::NotPopulated)?;
        mm::zero_frame(mfn);
        Ok(())
    }
}

/// dom0's kernel and initrd modules (`module::find_dom0`: the module named `dom0`,
/// else the first that is not a `domu`).
fn dom0_modules(info: &BootInfo) -> module::Dom0Modules {
    module::find_dom0(info.modules.iter().map(|m| m.cmdline.as_str()))
}

/// The dom0 kernel module.
fn find_module(info: &BootInfo) -> Option<(usize, &crate::boot::multiboot::Module)> {
    let i = dom0_modules(info).kernel?;
    Some((i, info.modules.get(i)?))
}

/// What to build: the parts of a domain that differ between dom0 and a boot-time domU.
struct Spec<'a> {
    id: DomId,
    privileged: bool,
    name: &'a str,
    pages: u64,
    cmdline: &'a [u8],
    flavour: Flavour,
    weight: u16,
    /// vCPUs it has (vCPU 0 up, the others down until it brings them up).
    vcpus: u32,
    extra_flags: SifFlags,
    /// The initrd (`start_info.mod_start`/`mod_len`), if any.
    initrd: Option<&'a [u8]>,
}

/// Builds dom0 and adds it to the domain table (paused); returns its slot.
pub fn build(
    info: &BootInfo,
    dom0_mem: Option<u64>,
    dom0_weight: Option<u16>,
    dom0_vcpus: u32,
) -> Result<usize, BuildFailure> {
    let (index, module) = find_module(info).ok_or(BuildFailure::NoModule)?;
    let bytes = match dom0_mem {
        Some(b) => b,
        None => DEFAULT_DOM0_MEM.min(mm::free_frames() * PAGE_SIZE / 2),
    };
    let spec = Spec {
        id: DomId(0),
        privileged: true,
        name: "dom0",
        pages: bytes / PAGE_SIZE,
        // As Xen with GRUB 2: dom0 gets the module's whole string, first word included.
        cmdline: module::dom0_cmdline(&module.cmdline).as_bytes(),
        flavour: Flavour::Dom0,
        weight: dom0_weight.unwrap_or(xlhv_core::domain::DOM0_WEIGHT),
        vcpus: dom0_vcpus,
        // Xen's default dom0 power-management bits (`xen_processor_pmbits` = 3) sit in
        // SIF_PM_MASK: dom0's flags read 0x303 on Xen 4.17.
        extra_flags: SifFlags::from_bits_retain(DOM0_PM_BITS << 8),
        initrd: dom0_initrd(info),
    };
    build_domain(index, module, &spec)
}

/// dom0's initrd: the first module other than dom0's kernel that is neither `dom0`
/// nor `domu` (Xen takes the module after dom0's kernel). dom0's toolstack keeps its
/// named images there.
fn dom0_initrd(info: &BootInfo) -> Option<&'static [u8]> {
    let index = dom0_modules(info).initrd?;
    let m = info.modules.get(index)?;
    let size = m.end.checked_sub(m.start)?;
    let bytes = mm::direct_slice(m.start, size);
    match bytes {
        Some(_) => log::info!("dom0: module {index} is its initrd ({size} bytes)"),
        None => log::error!("dom0: module {index} (the initrd) is unreadable; none given"),
    }
    bytes
}

/// Memory of a boot-time domU whose module line has no `mem=`.
const DEFAULT_DOMU_MEM: u64 = 16 * MIB;

/// Builds every module named `domu` (`domu name=NAME [mem=SIZE] [weight=N]
/// [cmdline=...]`) as an unprivileged domain, with ids from 1 in module order, like
/// Xen's hyperlaunch. A module that cannot be built is reported and skipped. Returns
/// how many were built.
pub fn build_domus(info: &BootInfo) -> usize {
    let mut next_id = 1u16;
    let mut built = 0;
    for (index, module) in info.modules.iter().enumerate() {
        let m = parse_module_cmdline(&module.cmdline);
        if m.role != ModuleRole::DomU {
            continue;
        }
        let name = if m.name.is_empty() {
            "domu"
        } else {
            m.name.as_str()
        };
        let spec = Spec {
            id: DomId(next_id),
            privileged: false,
            name,
            pages: m.mem.unwrap_or(DEFAULT_DOMU_MEM) / PAGE_SIZE,
            cmdline: m.cmdline.as_bytes(),
            flavour: Flavour::DomU,
            weight: m.weight.unwrap_or(xlhv_core::domain::DEFAULT_WEIGHT),
            vcpus: 1,
            extra_flags: SifFlags::empty(),
            initrd: None,
        };
        match build_domain(index, module, &spec) {
            Ok(_) => {
                built += 1;
                next_id += 1;
            }
            Err(e) => log::error!("domU '{name}' (module {index}): {e}"),
        }
    }
    built
}

/// If `image` (module `index`) is a bzImage, the kernel ELF it holds, unpacked into
/// the heap; `None` for anything else (built as it is). The kernel and the XZ
/// dictionary are bounded by [`MAX_BZIMAGE_KERNEL`] and by free memory; the
/// dictionary is freed on return, the kernel once the domain is built.
fn unpack_bzimage(index: usize, image: &[u8]) -> Result<Option<Vec<u8>>, BuildFailure> {
    if !pvboot::bzimage::is_bzimage(image) {
        return Ok(None);
    }
    let bz = pvboot::BzImage::parse(image, MAX_BZIMAGE_KERNEL).map_err(BuildFailure::BzImage)?;
    let (len, scratch) = (bz.decompressed_len(), bz.scratch_len());
    let mut out = Vec::new();
    let mut dict = Vec::new();
    if out.try_reserve_exact(len).is_err() || dict.try_reserve_exact(scratch).is_err() {
        return Err(BuildFailure::UnpackNoMemory {
            bytes: len as u64 + scratch as u64,
        });
    }
    out.resize(len, 0);
    dict.resize(scratch, 0);
    log::info!(
        "module {index}: bzImage (boot protocol {}.{:02}), {} payload of {} bytes; unpacking its {len}-byte kernel",
        bz.version() >> 8,
        bz.version() & 0xff,
        bz.compression(),
        bz.payload().len(),
    );
    bz.decompress(&mut out, &mut dict)
        .map_err(BuildFailure::BzImage)?;
    Ok(Some(out))
}

/// Builds one domain from `module` and adds it to the domain table, paused.
fn build_domain(
    index: usize,
    module: &crate::boot::multiboot::Module,
    spec: &Spec<'_>,
) -> Result<usize, BuildFailure> {
    let size = module
        .end
        .checked_sub(module.start)
        .ok_or(BuildFailure::Unreadable)?;
    let module_bytes = mm::direct_slice(module.start, size).ok_or(BuildFailure::Unreadable)?;
    let unpacked = unpack_bzimage(index, module_bytes)?;
    let image: &[u8] = unpacked.as_deref().unwrap_or(module_bytes);
    let elf = pvboot::elf::Elf::parse(image).map_err(BuildFailure::Elf)?;
    let xinfo =
        XenImageInfo::parse(&elf).map_err(|e| BuildFailure::Notes(alloc::format!("{e}")))?;

    let nr_pages = spec.pages;
    let initrd_len = spec.initrd.map_or(0, |i| i.len() as u64);
    let layout = Layout::compute(&xinfo, nr_pages, spec.flavour, initrd_len)
        .map_err(BuildFailure::Layout)?;
    let mut mem = BUILD_MEM.lock();
    let mem = &mut *mem;
    DomMem::allocate(mem, nr_pages)?;

    let Some(shared_info) = mm::alloc_frame() else {
        mem.release();
        return Err(BuildFailure::OutOfMemory { wanted: 1, free: 0 });
    };
    init_shared_info(shared_info);
    let params = BuildParams {
        shared_info: MachineAddr(shared_info.0 << 12),
        module: spec.initrd,
        cmdline: spec.cmdline,
        store_evtchn: EvtchnPort(0),
        console_evtchn: EvtchnPort(0),
        extra_flags: spec.extra_flags,
    };
    let built = match pvboot::build(&elf, &xinfo, &layout, mem, &params) {
        Ok(b) => b,
        Err(e) => {
            mem.release();
            let _ = mm::free_order(shared_info, 0);
            return Err(BuildFailure::Build(e));
        }
    };
    install_hypervisor_slots(built.cr3_mfn);
    // The frames are the domain's; its tables are validated and pinned now, as Xen's
    // builder does, so the vCPU starts on page tables the memory model vouches for.
    type_and_pin(spec.id, spec.privileged, mem, shared_info, built.cr3_mfn)
        .map_err(BuildFailure::PageTables)?;

    let Some(mut pv) = PvDomain::new(
        spec.id,
        spec.privileged,
        shared_info,
        built.cr3_mfn,
        spec.vcpus,
    ) else {
        return Err(BuildFailure::NoVcpus(spec.vcpus));
    };
    pv.dom.tot_pages = nr_pages;
    pv.dom.max_pages = nr_pages;
    pv.dom.weight = spec.weight;
    if let Some(v) = pv.vcpus.get_mut(0) {
        v.initialised = true;
        v.regs.rip = built.rip;
        v.regs.rsp = built.rsp;
        v.regs.rsi = built.rsi;
        v.kernel_ss = built.kernel_ss;
        v.kernel_sp = built.kernel_sp;
    }
    let (big_pfn, big_mfn, big_n) = mem.largest_run().unwrap_or((0, Mfn(0), 0));
    log::info!(
        "d{} '{}': module {index} ({} {}), {} MiB, {} pages in {} machine-contiguous runs (largest {} pages: pfn {:#x} = mfn {:#x}), weight {}, {} vCPU(s); entry {:#x}, start_info {:#x}, {} page-table frames",
        spec.id.0,
        spec.name,
        xinfo.guest_os,
        xinfo.guest_version,
        nr_pages * PAGE_SIZE / MIB,
        nr_pages,
        mem.extents.len(),
        big_n,
        big_pfn,
        big_mfn.0,
        spec.weight,
        spec.vcpus,
        built.rip,
        built.rsi,
        built.page_tables().count()
    );
    crate::domains::add(pv).ok_or(BuildFailure::NoSlot)
}

/// shared_info at start of day: zero, every vCPU's events masked (digest §3.8).
pub(crate) fn init_shared_info(mfn: Mfn) {
    use hypercall_abi::xen::shared_info::SharedInfo;
    mm::zero_frame(mfn);
    let si = (DIRECTMAP_BASE + (mfn.0 << 12)) as *mut SharedInfo;
    for i in 0..hypercall_abi::xen::LEGACY_MAX_VCPUS {
        // SAFETY: a fresh hypervisor frame in the direct map, laid out as shared_info.
        unsafe {
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*si).vcpu_info[i].evtchn_upcall_mask),
                1,
            )
        };
    }
    fill_time(si);
}

/// The low 32 bits.
fn lo32(v: u64) -> u32 {
    u32::try_from(v & 0xFFFF_FFFF).unwrap_or(0)
}

/// Xen's clock in shared_info (digest §4.2): vCPU 0's pvclock from the clock's
/// current anchor, and the wall clock at system time 0.
fn fill_time(si: *mut hypercall_abi::xen::shared_info::SharedInfo) {
    // Every vCPU's pvclock (each reads the one in its own vcpu_info).
    for i in 0..hypercall_abi::xen::LEGACY_MAX_VCPUS {
        // SAFETY: `si` is the domain's fresh shared_info frame in the direct map.
        publish_pvclock(unsafe { core::ptr::addr_of_mut!((*si).vcpu_info[i].time) });
    }
    let (sec, nsec) = crate::time::wall_at_boot();
    // SAFETY: as above; the guest is not running yet, so plain volatile writes do.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*si).wc_sec), lo32(sec));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*si).wc_sec_hi), lo32(sec >> 32));
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*si).wc_nsec), nsec);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*si).wc_version), 2);
    }
}

/// Writes the clock's current anchor into a `vcpu_time_info` in the direct map, with
/// the version odd while it changes as Xen's `update_vcpu_system_time` does. The TSC
/// runs at one constant rate on every CPU (it is invariant and the CPUs share it), so
/// one anchor serves every vCPU and the values stay exact until the clock is refined
/// (`time::refine`), which publishes them again in every vCPU's `vcpu_info`.
pub(crate) fn publish_pvclock(t: *mut hypercall_abi::xen::shared_info::VcpuTimeInfo) {
    use core::sync::atomic::{Ordering, fence};
    use hypercall_abi::xen::shared_info::PVCLOCK_TSC_STABLE_BIT;
    let a = crate::time::anchor();
    if a.mul == 0 {
        return;
    }
    // SAFETY: the caller passes a `vcpu_time_info` of a live domain in the direct map;
    // a vCPU that reads it on another CPU meanwhile retries a read that saw an odd or
    // changed version (the writes are ordered by the fences).
    unsafe {
        let version = core::ptr::addr_of_mut!((*t).version);
        let odd = core::ptr::read_volatile(version).wrapping_add(1) | 1;
        core::ptr::write_volatile(version, odd);
        fence(Ordering::Release);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*t).tsc_timestamp), a.tsc);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*t).system_time), a.ns);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*t).tsc_to_system_mul), a.mul);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*t).tsc_shift), a.shift);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*t).flags), PVCLOCK_TSC_STABLE_BIT);
        fence(Ordering::Release);
        core::ptr::write_volatile(version, odd.wrapping_add(1));
    }
}

/// Writes the hypervisor's L4 slots 256-271 into a guest L4.
fn install_hypervisor_slots(l4: Mfn) {
    let table = (DIRECTMAP_BASE + (l4.0 << 12)) as *mut u64;
    for (i, e) in paging::hypervisor_slots().into_iter().enumerate() {
        // SAFETY: `l4` is the new domain's top-level table, in the direct map; the
        // index stays within its 512 entries.
        unsafe { core::ptr::write_volatile(table.add(*paging::HV_SLOTS.start() + i), e) };
    }
}

/// Gives the domain its frames (and shared_info, which it may map but never type) in the
/// frame table, then pins its L4 (validating every table below it) and makes it vCPU 0's
/// kernel base.
fn type_and_pin(
    d0: DomId,
    privileged: bool,
    mem: &DomMem,
    shared_info: Mfn,
    l4: Mfn,
) -> Result<(), xlhv_core::mm::error::MmError> {
    use hypercall_abi::mmu::{MmuextCmd, MmuextOp};
    use xlhv_core::mm::frame_table::Owner;
    use xlhv_core::mm::mmu::{self, ForeignDomain, VcpuMm};
    let mut hooks = crate::mmhw::Hooks::only(d0);
    crate::mmhw::with_mm(d0, privileged, &mut hooks, |m| {
        for &(_, mfn, n) in &mem.extents {
            for i in 0..n {
                m.ft.assign(Mfn(mfn.0 + i), Owner::Domain(d0))?;
            }
        }
        m.ft.assign(shared_info, Owner::XenShared(d0))?;
        let own = ForeignDomain::own(m);
        let mut vm = VcpuMm::default();
        let _ = mmu::mmuext_op(
            m,
            &mut vm,
            MmuextOp::on_frame(MmuextCmd::PinL4Table, l4),
            own,
        )?;
        let _ = mmu::mmuext_op(
            m,
            &mut vm,
            MmuextOp::on_frame(MmuextCmd::NewBaseptr, l4),
            own,
        )?;
        Ok(())
    })
}
