//! Building a domain's initial memory from a [`Layout`].
//!
//! [`build`] writes through a [`DomainMemory`] the caller implements (the hypervisor
//! over its direct map, the toolstack over foreign mappings, tests over a `Vec`):
//!
//! 1. zeroes every frame of the region that is not written in full later (the page
//!    tables, a P2M list inside the region, whole pages of the initrd and kernel pages
//!    filled entirely by one segment's file bytes are not), and the last page of an
//!    unmapped initrd; frames outside the region and the layout are left as given;
//! 2. copies each loadable segment's file bytes to pseudo-physical
//!    `p_paddr - PADDR_OFFSET` (= `VA - VIRT_BASE`), in program-header order, leaving
//!    the bss zero (a bss that overlaps an earlier segment is zeroed explicitly, as
//!    libelf's sequential copy would);
//! 3. copies the initrd; fills the P2M list (`u64 mfn[nr_pages]`, `!0` for a PFN the
//!    caller reports unpopulated, zero padding after `nr_pages`);
//! 4. writes start_info (dom0: magic `"xen-3.0-x86_64"` plus `p` when the image has a
//!    `PAE_MODE` note saying "yes" or "bimodal", exactly as `dom0_construct_pv`'s
//!    `snprintf` does; flags `SIF_PRIVILEGED | SIF_INITDOMAIN`; domU: xenstore and
//!    console MFNs and ports); the xenstore and console pages stay zero (what
//!    libxenguest leaves; the console back end initialises its indexes);
//! 5. writes the page tables with the entries of the flavour's builder *before* Xen's
//!    validation adjusts them (see [`l1_flags`]); L4 slots 256..=271 stay empty;
//! 6. fills the hypercall page (128 stubs, `iret` special, `int3` elsewhere).
//!
//! The command line must fit `cmd_line` with its NUL (at most 1023 bytes) and contain no
//! NUL: a longer one is refused with [`BuildError::CmdlineTooLong`] rather than
//! truncated (Xen truncates silently; a caller who wants that truncates first).

use core::fmt;

use hypercall_abi::hypercall::hypercall_page_image;
use hypercall_abi::xen::FLAT_KERNEL_SS;
use hypercall_abi::xen::pte::{
    BUILDER_L1_FLAGS, BUILDER_UPPER_FLAGS, PTES_PER_PAGE, Pte, PteFlags,
};
use hypercall_abi::xen::start_info::{
    MAX_GUEST_CMDLINE, START_INFO_MAGIC, SifFlags, StartInfo, StartInfoConsole,
};
use hypercall_abi::{EvtchnPort, GuestPtr, MachineAddr, Mfn, PAGE_SIZE, Pfn};
use zerocopy::{FromZeros, IntoBytes};

use crate::elf::{Elf, ProgramHeader};
use crate::layout::{Extent, Flavour, Layout, Leaf, PageTableFrames, PtLevel, hypervisor_l4_slot};
use crate::notes::{PaeMode, XenImageInfo, page_size};

/// A P2M entry for a PFN with no machine frame (Linux's `INVALID_P2M_ENTRY`).
// TODO(abi): move to hypercall-abi
pub const INVALID_P2M_ENTRY: u64 = !0;

/// Suffix `dom0_construct_pv` appends to the start_info magic when the image has a
/// PAE note (`"xen-3.0-x86_%d%s"` with `parms.pae ? "p" : ""`).
// TODO(abi): move to hypercall-abi
const DOM0_PAE_MAGIC_SUFFIX: u8 = b'p';

static ZERO_PAGE: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
static HYPERCALL_PAGE: [u8; PAGE_SIZE] = hypercall_page_image();

const _: () = assert!(size_of::<StartInfo>() <= PAGE_SIZE);

/// L1 entries of the dom0 builder: P|RW|A|U plus `_PAGE_GUEST_KERNEL` (bit 52), which
/// is what Xen's validation makes of a kernel mapping, so it never changes them.
pub const DOM0_L1_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::USER)
    .union(PteFlags::GUEST_KERNEL);

/// L1 entries of the domU builder: P|RW|A (Xen's validation adds U and bit 52).
pub const DOMU_L1_FLAGS: PteFlags = BUILDER_L1_FLAGS;

/// L2, L3 and L4 entries of both builders: P|RW|A|D|U.
pub const UPPER_FLAGS: PteFlags = BUILDER_UPPER_FLAGS;

/// The flags of an L1 entry that maps `leaf` in a `flavour` domain, as the builder
/// writes them: region pages [`DOMU_L1_FLAGS`] (0x23) / [`DOM0_L1_FLAGS`]
/// (0x10000000000027); the region's page-table frames the same without RW (0x21 /
/// 0x10000000000025); `INIT_P2M` data pages 0x23 (domU) or dom0's flags plus D
/// (0x10000000000067, `setup_pv_physmap`).
pub const fn l1_flags(flavour: Flavour, leaf: Leaf) -> PteFlags {
    let base = match flavour {
        Flavour::DomU => DOMU_L1_FLAGS,
        Flavour::Dom0 => DOM0_L1_FLAGS,
    };
    match (leaf, flavour) {
        (
            Leaf::Region {
                page_table: true, ..
            },
            _,
        ) => base.difference(PteFlags::RW),
        (Leaf::P2m(_), Flavour::Dom0) => base.union(PteFlags::DIRTY),
        _ => base,
    }
}

/// Why a frame access failed; returned by a [`DomainMemory`] implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The frame is not populated.
    NotPopulated,
    /// Offset and length run past the frame, or the frame is out of range.
    OutOfRange,
    /// The mapping failed.
    Fault,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemError::NotPopulated => "frame not populated",
            MemError::OutOfRange => "access out of range",
            MemError::Fault => "mapping failed",
        })
    }
}

/// The new domain's memory, as the builder sees it.
pub trait DomainMemory {
    /// Machine frame backing pseudo-physical frame `pfn` (the caller has populated all
    /// nr_pages).
    fn mfn(&self, pfn: Pfn) -> Option<Mfn>;
    /// Writes `bytes` into pseudo-physical frame `pfn` at byte `offset` (offset+len <=
    /// 4096).
    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) -> Result<(), MemError>;
    /// Zeroes the frame.
    fn zero(&mut self, pfn: Pfn) -> Result<(), MemError>;
}

/// What the builder needs besides the image and the layout.
#[derive(Clone, Copy, Debug)]
pub struct BuildParams<'a> {
    /// Machine address of the domain's shared_info page.
    pub shared_info: MachineAddr,
    /// The initrd; its length must be the one the layout was computed with.
    pub module: Option<&'a [u8]>,
    /// Kernel command line, without NUL, at most `MAX_GUEST_CMDLINE - 1` bytes.
    pub cmdline: &'a [u8],
    /// XenStore event channel (domU).
    pub store_evtchn: EvtchnPort,
    /// Console event channel (domU).
    pub console_evtchn: EvtchnPort,
    /// Flags OR-ed into `start_info.flags` (libxl passes none for a domU; e.g.
    /// `SIF_VIRT_P2M_4TOOLS`, or dom0's power-management bits).
    pub extra_flags: SifFlags,
}

/// Why a build failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// A frame write failed.
    Mem {
        /// The frame.
        pfn: Pfn,
        /// What the memory reported.
        error: MemError,
    },
    /// A frame the builder maps or writes has no machine frame.
    Unpopulated(Pfn),
    /// The layout was computed for another image or info.
    LayoutMismatch,
    /// The initrd's length differs from the layout's.
    ModuleLengthMismatch {
        /// Length the layout was computed with.
        layout: u64,
        /// Length given.
        given: u64,
    },
    /// The command line does not fit `cmd_line` with its NUL.
    CmdlineTooLong(usize),
    /// The command line contains a NUL byte.
    CmdlineNul,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BuildError::Mem { pfn, error } => {
                write!(f, "writing the new domain's frame {:#x}: {error}", pfn.0)
            }
            BuildError::Unpopulated(pfn) => write!(
                f,
                "the new domain's frame {:#x} has no machine frame behind it",
                pfn.0
            ),
            BuildError::LayoutMismatch => {
                write!(f, "the layout was computed for a different image")
            }
            BuildError::ModuleLengthMismatch { layout, given } => write!(
                f,
                "the initrd is {given} bytes but the layout was computed for {layout}"
            ),
            BuildError::CmdlineTooLong(len) => write!(
                f,
                "the command line is {len} bytes; at most {} fit",
                MAX_GUEST_CMDLINE - 1
            ),
            BuildError::CmdlineNul => write!(f, "the command line contains a NUL byte"),
        }
    }
}

/// The built domain: what the caller needs to start vCPU 0 and to type its frames.
#[derive(Clone, Copy, Debug)]
pub struct BuiltDomain {
    /// Initial `rip`.
    pub rip: u64,
    /// Initial `rsp`.
    pub rsp: u64,
    /// Initial `rsi` (start_info's address).
    pub rsi: u64,
    /// `kernel_ss` of the initial context: `FLAT_KERNEL_SS` for a domU (libxenguest),
    /// 0 for dom0 (Xen leaves it; the kernel calls `stack_switch`).
    pub kernel_ss: u16,
    /// `kernel_sp`: `rsp` for a domU, 0 for dom0.
    pub kernel_sp: u64,
    /// Frame of the L4 (`pt_base`).
    pub l4_pfn: Pfn,
    /// Machine frame of the L4: CR3 is `cr3_mfn << 12`.
    pub cr3_mfn: Mfn,
    /// start_info's frame.
    pub start_info_pfn: Pfn,
    /// The hypercall page's frame, if the image has one.
    pub hypercall_page_pfn: Option<Pfn>,
    /// The P2M list's data frames.
    pub p2m: Extent,
    /// The xenstore ring (domU): frame and machine frame.
    pub xenstore: Option<(Pfn, Mfn)>,
    /// The console ring (domU): frame and machine frame.
    pub console: Option<(Pfn, Mfn)>,
    /// The layout built.
    pub layout: Layout,
}

impl BuiltDomain {
    /// Every bootstrap page-table frame with its level (the caller types them, and
    /// pins the L4).
    pub fn page_tables(&self) -> PageTableFrames {
        self.layout.page_table_frames()
    }
}

fn mem_err(pfn: u64) -> impl Fn(MemError) -> BuildError {
    move |error| BuildError::Mem {
        pfn: Pfn(pfn),
        error,
    }
}

/// The machine frame of `pfn`, or [`BuildError::Unpopulated`].
fn mfn_of<M: DomainMemory + ?Sized>(mem: &M, pfn: Pfn) -> Result<Mfn, BuildError> {
    mem.mfn(pfn).ok_or(BuildError::Unpopulated(pfn))
}

/// Writes `data` at pseudo-physical byte `addr`, page by page.
fn write_at<M: DomainMemory + ?Sized>(
    mem: &mut M,
    addr: u64,
    data: &[u8],
) -> Result<(), BuildError> {
    let mut addr = addr;
    let mut rest = data;
    while !rest.is_empty() {
        let pfn = addr / page_size();
        let off = usize::try_from(addr % page_size()).map_err(|_| BuildError::LayoutMismatch)?;
        let n = rest.len().min(PAGE_SIZE.saturating_sub(off));
        let (chunk, tail) = rest.split_at_checked(n).ok_or(BuildError::LayoutMismatch)?;
        mem.write(Pfn(pfn), off, chunk).map_err(mem_err(pfn))?;
        addr = addr
            .checked_add(u64::try_from(n).map_err(|_| BuildError::LayoutMismatch)?)
            .ok_or(BuildError::LayoutMismatch)?;
        rest = tail;
    }
    Ok(())
}

/// Writes `len` zero bytes at pseudo-physical byte `addr`.
fn zero_at<M: DomainMemory + ?Sized>(mem: &mut M, addr: u64, len: u64) -> Result<(), BuildError> {
    let mut addr = addr;
    let mut len = len;
    while len > 0 {
        let off = addr % page_size();
        let n = len.min(page_size() - off);
        let pfn = addr / page_size();
        if n == page_size() {
            mem.zero(Pfn(pfn)).map_err(mem_err(pfn))?;
        } else {
            let (o, k) = (usize::try_from(off), usize::try_from(n));
            let (Ok(o), Ok(k)) = (o, k) else {
                return Err(BuildError::LayoutMismatch);
            };
            let zeros = ZERO_PAGE.get(..k).ok_or(BuildError::LayoutMismatch)?;
            mem.write(Pfn(pfn), o, zeros).map_err(mem_err(pfn))?;
        }
        addr = addr.checked_add(n).ok_or(BuildError::LayoutMismatch)?;
        len -= n;
    }
    Ok(())
}

/// A loadable segment and where its bytes go (pseudo-physical byte address).
struct Segment<'a> {
    dest: u64,
    file: &'a [u8],
    filesz: u64,
    memsz: u64,
}

fn segments<'a>(
    elf: &Elf<'a>,
    info: &XenImageInfo<'_>,
) -> impl Iterator<Item = Result<Segment<'a>, BuildError>> {
    let pstart = elf.load_paddr_span().start;
    let kernel_off = info.kstart.wrapping_sub(info.virt_base);
    let elf = *elf;
    elf.program_headers()
        .filter(ProgramHeader::is_loadable)
        .map(move |ph| {
            let dest = ph
                .paddr
                .checked_sub(pstart)
                .and_then(|o| o.checked_add(kernel_off))
                .ok_or(BuildError::LayoutMismatch)?;
            let file = elf.segment_data(&ph).ok_or(BuildError::LayoutMismatch)?;
            Ok(Segment {
                dest,
                file,
                filesz: ph.filesz,
                memsz: ph.memsz,
            })
        })
}

/// Whether `[a, a+alen)` and `[b, b+blen)` intersect.
fn overlap(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen > 0 && blen > 0 && a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

/// Whether kernel frame `pfn` is filled entirely by one segment's file bytes.
fn covered_by_file(elf: &Elf<'_>, info: &XenImageInfo<'_>, pfn: u64) -> bool {
    let start = pfn.saturating_mul(page_size());
    let end = start.saturating_add(page_size());
    segments(elf, info)
        .any(|s| s.is_ok_and(|s| s.dest <= start && s.dest.saturating_add(s.filesz) >= end))
}

/// Builds the domain's initial memory; see the module docs. `info` and `layout` must
/// come from `elf` ([`XenImageInfo::parse`], [`Layout::compute`]).
pub fn build<M: DomainMemory + ?Sized>(
    elf: &Elf<'_>,
    info: &XenImageInfo<'_>,
    layout: &Layout,
    mem: &mut M,
    params: &BuildParams<'_>,
) -> Result<BuiltDomain, BuildError> {
    let ps = page_size();
    let module = params.module.unwrap_or(&[]);
    check_inputs(elf, info, layout, module, params.cmdline)?;

    // 1. Zero what will not be written in full.
    let kernel = layout.kernel();
    let module_layout = layout.module();
    let module_full_pages = module_layout.map(|m| (m.extent.pfn.0, m.len / ps));
    for pfn in 0..layout.region_pages() {
        let p = Pfn(pfn);
        let written_in_full = layout.page_tables().contains(p)
            || (layout.p2m_in_region() && layout.p2m().contains(p))
            || module_full_pages.is_some_and(|(first, full)| pfn >= first && pfn - first < full)
            || (kernel.contains(p) && covered_by_file(elf, info, pfn));
        if !written_in_full {
            mem.zero(p).map_err(mem_err(pfn))?;
        }
    }
    if let Some(m) = module_layout
        && m.extent.va.is_none()
        && m.len % ps != 0
    {
        let last = m.extent.pfn.0.saturating_add(m.len / ps);
        mem.zero(Pfn(last)).map_err(mem_err(last))?;
    }

    // 2. The kernel's segments, in order.
    let mut index = 0usize;
    for seg in segments(elf, info) {
        let seg = seg?;
        write_at(mem, seg.dest, seg.file)?;
        let bss = seg.dest.saturating_add(seg.filesz);
        let bss_len = seg.memsz.saturating_sub(seg.filesz);
        let clobbers_earlier = segments(elf, info)
            .take(index)
            .any(|e| e.is_ok_and(|e| overlap(bss, bss_len, e.dest, e.filesz)));
        if clobbers_earlier {
            zero_at(mem, bss, bss_len)?;
        }
        index = index.saturating_add(1);
    }

    // 3. The initrd and the P2M list.
    if let Some(m) = module_layout {
        write_at(mem, m.extent.pfn.0.saturating_mul(ps), module)?;
    }
    write_p2m(mem, layout)?;

    // 4. start_info.
    let si_pfn = layout.start_info().pfn;
    let si = start_info(info, layout, mem, params)?;
    write_at(mem, si_pfn.0.saturating_mul(ps), si.as_bytes())?;

    // 5. Page tables.
    write_page_tables(mem, layout)?;

    // 6. The hypercall page.
    let hypercall_page_pfn = layout.hypercall_page();
    if let Some(pfn) = hypercall_page_pfn {
        mem.write(pfn, 0, &HYPERCALL_PAGE).map_err(mem_err(pfn.0))?;
    }

    let l4_pfn = layout.page_tables().pfn;
    let ring = |e: Option<Extent>| -> Result<Option<(Pfn, Mfn)>, BuildError> {
        e.map(|e| Ok((e.pfn, mfn_of(mem, e.pfn)?))).transpose()
    };
    let (kernel_ss, kernel_sp) = match layout.flavour() {
        Flavour::DomU => (FLAT_KERNEL_SS, layout.rsp()),
        Flavour::Dom0 => (0, 0),
    };
    Ok(BuiltDomain {
        rip: layout.entry(),
        rsp: layout.rsp(),
        rsi: layout.rsi(),
        kernel_ss,
        kernel_sp,
        l4_pfn,
        cr3_mfn: mfn_of(mem, l4_pfn)?,
        start_info_pfn: si_pfn,
        hypercall_page_pfn,
        p2m: layout.p2m(),
        xenstore: ring(layout.xenstore())?,
        console: ring(layout.console())?,
        layout: *layout,
    })
}

fn check_inputs(
    elf: &Elf<'_>,
    info: &XenImageInfo<'_>,
    layout: &Layout,
    module: &[u8],
    cmdline: &[u8],
) -> Result<(), BuildError> {
    let pspan = elf.load_paddr_span();
    let consistent = layout.kernel_range() == (info.kstart, info.kend)
        && layout.virt_base() == info.virt_base
        && layout.entry() == info.entry
        && pspan.start.wrapping_add(info.virt_offset) == info.kstart
        && pspan.end.wrapping_add(info.virt_offset) == info.kend
        && info.virt_base.wrapping_sub(info.paddr_offset) == info.virt_offset
        && layout.hypercall_page()
            == info
                .hypercall_page
                .and_then(|va| va.checked_sub(info.virt_base))
                .map(|o| Pfn(o / page_size()));
    if !consistent {
        return Err(BuildError::LayoutMismatch);
    }
    let layout_len = layout.module().map_or(0, |m| m.len);
    let given = u64::try_from(module.len()).unwrap_or(u64::MAX);
    if layout_len != given {
        return Err(BuildError::ModuleLengthMismatch {
            layout: layout_len,
            given,
        });
    }
    if cmdline.len() >= MAX_GUEST_CMDLINE {
        return Err(BuildError::CmdlineTooLong(cmdline.len()));
    }
    if cmdline.contains(&0) {
        return Err(BuildError::CmdlineNul);
    }
    Ok(())
}

/// Entries per chunk written at once (a 512-byte buffer).
const CHUNK: usize = 64;

fn write_p2m<M: DomainMemory + ?Sized>(mem: &mut M, layout: &Layout) -> Result<(), BuildError> {
    let p2m = layout.p2m();
    let nr_pages = layout.nr_pages();
    let mut buf = [0u8; CHUNK * 8];
    for page in 0..p2m.pages {
        let pfn = p2m.pfn.0.saturating_add(page);
        for chunk in 0..PTES_PER_PAGE / CHUNK {
            let first = page
                .saturating_mul(PTES_PER_PAGE as u64)
                .saturating_add((chunk * CHUNK) as u64);
            for (i, slot) in buf.chunks_exact_mut(8).enumerate() {
                let idx = first.saturating_add(i as u64);
                let entry = if idx < nr_pages {
                    mem.mfn(Pfn(idx)).map_or(INVALID_P2M_ENTRY, |m| m.0)
                } else {
                    0
                };
                slot.copy_from_slice(&entry.to_le_bytes());
            }
            mem.write(Pfn(pfn), chunk * CHUNK * 8, &buf)
                .map_err(mem_err(pfn))?;
        }
    }
    Ok(())
}

fn start_info<M: DomainMemory + ?Sized>(
    info: &XenImageInfo<'_>,
    layout: &Layout,
    mem: &M,
    params: &BuildParams<'_>,
) -> Result<StartInfo, BuildError> {
    let mut si = StartInfo::new_zeroed();
    let magic_len = START_INFO_MAGIC.len();
    if let Some(m) = si.magic.get_mut(..magic_len) {
        m.copy_from_slice(START_INFO_MAGIC);
    }
    let mut flags = params.extra_flags;
    match layout.flavour() {
        Flavour::Dom0 => {
            if info.pae != PaeMode::No
                && let Some(b) = si.magic.get_mut(magic_len)
            {
                *b = DOM0_PAE_MAGIC_SUFFIX;
            }
            flags |= SifFlags::PRIVILEGED | SifFlags::INITDOMAIN;
        }
        Flavour::DomU => {
            if let Some(x) = layout.xenstore() {
                si.store_mfn = mfn_of(mem, x.pfn)?;
                si.store_evtchn = params.store_evtchn;
            }
            if let Some(c) = layout.console() {
                si.console = StartInfoConsole::domu(mfn_of(mem, c.pfn)?, params.console_evtchn);
            }
        }
    }
    if layout.module_unmapped() {
        flags |= SifFlags::MOD_START_PFN;
    }
    si.nr_pages = layout.nr_pages();
    si.shared_info = params.shared_info;
    si.flags = flags.bits();
    si.pt_base = layout.pt_base();
    si.nr_pt_frames = layout.nr_pt_frames();
    si.mfn_list = GuestPtr::new(layout.mfn_list());
    si.mod_start = layout.mod_start();
    si.mod_len = layout.mod_len();
    if let Some(dst) = si.cmd_line.get_mut(..params.cmdline.len()) {
        dst.copy_from_slice(params.cmdline);
    }
    si.first_p2m_pfn = layout.first_p2m_pfn();
    si.nr_p2m_frames = layout.nr_p2m_frames();
    Ok(si)
}

/// The entry `index` of the table `frame` (level, first VA).
fn entry<M: DomainMemory + ?Sized>(
    mem: &M,
    layout: &Layout,
    level: PtLevel,
    table_va: u64,
    index: usize,
) -> Result<Pte, BuildError> {
    if level == PtLevel::L4 && hypervisor_l4_slot(index) {
        return Ok(Pte(0));
    }
    // Lookups use only the translated bits, so the L4's upper half needs no sign
    // extension here.
    let va = table_va.wrapping_add((index as u64) << level.entry_shift());
    match level.below() {
        Some(lower) => match layout.table_for(lower, va) {
            Some(pfn) => Ok(Pte::new(mfn_of(mem, pfn)?, UPPER_FLAGS)),
            None => Ok(Pte(0)),
        },
        None => match layout.leaf(va) {
            Some(leaf) => {
                let pfn = match leaf {
                    Leaf::Region { pfn, .. } | Leaf::P2m(pfn) => pfn,
                };
                Ok(Pte::new(
                    mfn_of(mem, pfn)?,
                    l1_flags(layout.flavour(), leaf),
                ))
            }
            None => Ok(Pte(0)),
        },
    }
}

fn write_page_tables<M: DomainMemory + ?Sized>(
    mem: &mut M,
    layout: &Layout,
) -> Result<(), BuildError> {
    let mut buf = [0u8; CHUNK * 8];
    for frame in layout.page_table_frames() {
        for chunk in 0..PTES_PER_PAGE / CHUNK {
            for (i, slot) in buf.chunks_exact_mut(8).enumerate() {
                let e = entry(mem, layout, frame.level, frame.va, chunk * CHUNK + i)?;
                slot.copy_from_slice(&e.0.to_le_bytes());
            }
            mem.write(frame.pfn, chunk * CHUNK * 8, &buf)
                .map_err(mem_err(frame.pfn.0))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
