//! The bootstrap region of a new 64-bit PV domain, laid out exactly as Xen's builders
//! do (ABI digest §3.2, §3.3).
//!
//! The region starts at `VIRT_BASE` and maps PFN `n` at `VIRT_BASE + n * 4096`. In
//! order: padding up to the kernel, the kernel `[kstart, kend)`, the initrd (unless
//! `MOD_START_PFN` lets it stay unmapped), the P2M list (unless `INIT_P2M` moves it),
//! start_info, the xenstore and console rings (domU only), the bootstrap page tables,
//! one boot-stack page, then padding to a 4 MiB boundary with at least 512 KiB mapped
//! after the stack. The two [`Flavour`]s differ where Xen's two builders differ:
//!
//! | | [`Flavour::DomU`] (libxenguest) | [`Flavour::Dom0`] (hypervisor) |
//! |---|---|---|
//! | xenstore, console pages | yes | no |
//! | table order | L4, L3s, L2s, L1s | L4, then per 2 MiB of region: L1, a new L2 at each 1 GiB, a new L3 at each 512 GiB |
//! | table count, region end | `alloc_pgtables_pv`'s loop | `dom0_construct_pv`'s search from `n = 2` |
//! | kernel start | page-aligned | any |
//! | `INIT_P2M` | honoured if page-aligned and below `VIRT_BASE` | honoured (must be page-aligned) |
//! | `mod_len` | whole pages | the initrd's length |
//! | `first_p2m_pfn`/`nr_p2m_frames` | only with `INIT_P2M` | always: the first frame after the region and the unmapped initrd |
//!
//! Both searches are reproduced as written; they settle on the same answer (tested):
//! the fewest tables that map `[VIRT_BASE, end)`, where `end` is the first 4 MiB
//! boundary at least 512 KiB past the stack that follows those tables.
//!
//! Small domains: where that end lies past the domain's last frame, Xen's builders
//! give up (libxenguest's `count_pgtables`: "not enough memory for initial mapping"),
//! so Xen cannot build a domain of less than 4 MiB. Both flavours here instead end
//! the region exactly 512 KiB past the stack (the fewest tables that map that, the
//! stack after them), which keeps every promise of the ABI (all of the image and
//! boot pages mapped, 512 KiB of mapped slack after the stack) but the 4 MiB
//! alignment; the frames after it are populated and unmapped as usual. Only when
//! that too runs past the domain's memory is it [`LayoutError::TooSmall`]. A domain
//! Xen could build gets Xen's layout unchanged. A guest tells the two apart by
//! `nr_pages`: the region is the short one exactly when the 4 MiB-aligned one
//! would not fit.
//!
//! Frames outside the region follow it: the unmapped initrd, then (with `INIT_P2M`) the
//! P2M list and its own page tables (L3s, L2s, L1s, sharing any table the region
//! already has). Xen's dom0 builder places those at `2^order` (its buddy allocation),
//! interleaves tables and data and maps the P2M with superpages; this crate uses the
//! libxenguest arrangement and 4 KiB pages for both flavours, since PV page tables here
//! never carry PSE.
//!
//! Every address computation is checked: a hostile image gets an error, never a panic.

use core::fmt;
use core::mem::size_of;

use hypercall_abi::version::XenFeature;
use hypercall_abi::xen::pte::PTES_PER_PAGE;
use hypercall_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_VIRT_END, MACH2PHYS_NR_ENTRIES};
use hypercall_abi::{Mfn, Pfn};

use crate::notes::{MAX_KERNEL_SPAN, XenImageInfo, page_size};

/// Which builder's layout to reproduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavour {
    /// The hypervisor building dom0 (`xen/arch/x86/pv/dom0_build.c`).
    Dom0,
    /// dom0's toolstack building a domU (`tools/libs/guest/xg_dom_x86.c`).
    DomU,
}

/// Minimum mapped padding after the boot stack.
const MIN_SLACK: u64 = 512 << 10;
/// Alignment of the region's end.
const REGION_ALIGN: u64 = 4 << 20;
/// Bits of a linear address translated by 4-level paging.
const VA_BITS: u32 = 48;
/// The translated bits of an address.
const VA_MASK: u64 = (1 << VA_BITS) - 1;
/// End of the lower canonical half.
const LOWER_HALF_END: u64 = 1 << (VA_BITS - 1);
/// Bits of address each page-table level translates.
const LEVEL_BITS: u32 = PTES_PER_PAGE.trailing_zeros();
/// P2M entries per page.
const P2M_PER_PAGE: u64 = page_size() / size_of::<Mfn>() as u64;
/// Bound on the table-count loops (they settle in two or three rounds).
const MAX_ROUNDS: u32 = 64;

/// A page-table level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PtLevel {
    /// Maps 4 KiB pages.
    L1 = 1,
    /// Points at L1 tables.
    L2 = 2,
    /// Points at L2 tables.
    L3 = 3,
    /// The top level (CR3).
    L4 = 4,
}

impl PtLevel {
    /// log2 of the bytes one entry of a table at this level maps.
    pub const fn entry_shift(self) -> u32 {
        hypercall_abi::PAGE_SHIFT + LEVEL_BITS * (self as u32 - 1)
    }

    /// log2 of the bytes one table at this level maps.
    pub const fn table_shift(self) -> u32 {
        self.entry_shift() + LEVEL_BITS
    }

    /// The level of the tables this level's entries point at.
    pub const fn below(self) -> Option<PtLevel> {
        match self {
            PtLevel::L4 => Some(PtLevel::L3),
            PtLevel::L3 => Some(PtLevel::L2),
            PtLevel::L2 => Some(PtLevel::L1),
            PtLevel::L1 => None,
        }
    }
}

/// A run of frames, and the virtual address of the first if it is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// First frame.
    pub pfn: Pfn,
    /// Number of frames.
    pub pages: u64,
    /// Guest virtual address of the first frame, if mapped.
    pub va: Option<u64>,
}

impl Extent {
    /// One past the last frame.
    pub const fn end(&self) -> Pfn {
        Pfn(self.pfn.0.saturating_add(self.pages))
    }

    /// Whether `pfn` is one of the frames.
    pub const fn contains(&self, pfn: Pfn) -> bool {
        pfn.0 >= self.pfn.0 && pfn.0 - self.pfn.0 < self.pages
    }
}

/// Where the initrd (module) goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleLayout {
    /// Its frames (`va` is `None` when it is left unmapped).
    pub extent: Extent,
    /// Its length in bytes.
    pub len: u64,
}

/// One bootstrap page-table frame, as [`Layout::page_table_frames`] lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtFrame {
    /// The frame.
    pub pfn: Pfn,
    /// Its level.
    pub level: PtLevel,
    /// First virtual address it maps (canonical; 0 for the L4).
    pub va: u64,
}

/// Why no layout could be computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `nr_pages` is 0 or larger than the machine could address.
    BadNrPages(u64),
    /// The image info breaks an invariant [`XenImageInfo::parse`] establishes.
    InconsistentInfo,
    /// A domU build of a kernel whose FEATURES require `dom0`.
    RequiresDom0,
    /// A dom0 build of a kernel whose SUPPORTED_FEATURES lack `dom0`.
    NotDom0Capable,
    /// A domU kernel that does not start on a page boundary.
    KernelUnaligned(u64),
    /// A dom0 `INIT_P2M` that is not page-aligned.
    P2mUnaligned(u64),
    /// An address computation ran past the top of the address space.
    AddressOverflow,
    /// A range is not canonical or overlaps the hypervisor's reserved area.
    BadVirtualRange {
        /// What (the "bootstrap region", the "P2M list").
        what: &'static str,
        /// Its start.
        start: u64,
        /// Its end (exclusive).
        end: u64,
    },
    /// The `INIT_P2M` range overlaps the bootstrap region.
    P2mOverlapsRegion {
        /// P2M start.
        p2m: u64,
        /// Region start.
        start: u64,
        /// Region end.
        end: u64,
    },
    /// The domain has too few pages.
    TooSmall {
        /// Frames the layout needs.
        needed: u64,
        /// Frames the domain has.
        nr_pages: u64,
    },
    /// The page-table count did not settle (cannot happen for a sane region).
    NoFixedPoint,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LayoutError::BadNrPages(n) => write!(
                f,
                "a domain of {n} pages is impossible (1 to {MACH2PHYS_NR_ENTRIES} pages)"
            ),
            LayoutError::InconsistentInfo => write!(
                f,
                "inconsistent image information (VIRT_BASE, kernel range); use \
                 XenImageInfo::parse"
            ),
            LayoutError::RequiresDom0 => write!(
                f,
                "the kernel requires the dom0 feature and cannot run as an unprivileged domain"
            ),
            LayoutError::NotDom0Capable => write!(
                f,
                "the kernel does not support dom0 operation (SUPPORTED_FEATURES lacks dom0)"
            ),
            LayoutError::KernelUnaligned(k) => write!(
                f,
                "the kernel starts at {k:#x}, not on a page boundary; a domU kernel must"
            ),
            LayoutError::P2mUnaligned(p) => {
                write!(f, "INIT_P2M {p:#x} is not page-aligned")
            }
            LayoutError::AddressOverflow => write!(
                f,
                "the bootstrap layout runs past the top of the virtual address space"
            ),
            LayoutError::BadVirtualRange { what, start, end } => write!(
                f,
                "the {what} [{start:#x}, {end:#x}) is not canonical or overlaps the \
                 hypervisor's area"
            ),
            LayoutError::P2mOverlapsRegion { p2m, start, end } => write!(
                f,
                "INIT_P2M {p2m:#x} overlaps the bootstrap region [{start:#x}, {end:#x})"
            ),
            LayoutError::TooSmall { needed, nr_pages } => write!(
                f,
                "the domain has {} ({nr_pages} pages) but this image's bootstrap layout \
                 needs {} ({needed} pages for the kernel, initrd, P2M, start info, page \
                 tables, boot stack and 512 KiB of slack); give it at least {} MiB",
                PagesSize(nr_pages),
                PagesSize(needed),
                needed.div_ceil(PAGES_PER_MIB).max(1)
            ),
            LayoutError::NoFixedPoint => {
                write!(f, "the bootstrap page-table count did not settle")
            }
        }
    }
}

/// 4 KiB pages per MiB.
const PAGES_PER_MIB: u64 = (1 << 20) / page_size();

/// A page count shown as a size: whole MiB, else KiB.
struct PagesSize(u64);

impl fmt::Display for PagesSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kib = u128::from(self.0) * u128::from(page_size() >> 10);
        if kib % 1024 == 0 {
            write!(f, "{} MiB", kib / 1024)
        } else {
            write!(f, "{kib} KiB")
        }
    }
}

/// The translated bits of `va`.
const fn masked(va: u64) -> u64 {
    va & VA_MASK
}

/// The canonical address with translated bits `m`.
const fn canonical(m: u64) -> u64 {
    if m & LOWER_HALF_END != 0 {
        m | !VA_MASK
    } else {
        m
    }
}

/// Checks that `[start, end)` is canonical and clear of the hypervisor's area.
fn check_range(what: &'static str, start: u64, end: u64) -> Result<(), LayoutError> {
    let ok = start < end && (end <= LOWER_HALF_END || start >= HYPERVISOR_VIRT_END);
    if ok {
        Ok(())
    } else {
        Err(LayoutError::BadVirtualRange { what, start, end })
    }
}

fn add(a: u64, b: u64) -> Result<u64, LayoutError> {
    a.checked_add(b).ok_or(LayoutError::AddressOverflow)
}

fn mul(a: u64, b: u64) -> Result<u64, LayoutError> {
    a.checked_mul(b).ok_or(LayoutError::AddressOverflow)
}

/// Virtual address of PFN `pfn` of the region.
fn va_of(virt_base: u64, pfn: u64) -> Result<u64, LayoutError> {
    add(virt_base, mul(pfn, page_size())?)
}

/// A mapped extent of the region.
fn mapped(virt_base: u64, pfn: u64, pages: u64) -> Result<Extent, LayoutError> {
    Ok(Extent {
        pfn: Pfn(pfn),
        pages,
        va: Some(va_of(virt_base, pfn)?),
    })
}

/// An inclusive range of table slots (a slot is `masked va >> level.table_shift()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slots {
    first: u64,
    last: u64,
}

impl Slots {
    /// The slots at `level` covering masked addresses `[from, last]`.
    const fn covering(level: PtLevel, from: u64, last: u64) -> Slots {
        Slots {
            first: from >> level.table_shift(),
            last: last >> level.table_shift(),
        }
    }

    const fn count(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    const fn contains(&self, slot: u64) -> bool {
        slot >= self.first && slot <= self.last
    }

    /// What remains of `self` once `other` is taken away (libxenguest's trimming in
    /// `count_pgtables`: the two ranges never nest strictly).
    fn without(self, other: Slots) -> Option<Slots> {
        if self.first >= other.first && self.last <= other.last {
            return None;
        }
        let mut r = self;
        if other.contains(r.first) {
            r.first = other.last.checked_add(1)?;
        }
        if other.contains(r.last) {
            r.last = other.first.checked_sub(1)?;
        }
        (r.first <= r.last).then_some(r)
    }
}

/// The region's own page tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MainTables {
    flavour: Flavour,
    /// PFN of the L4 (the first table frame).
    base: u64,
    l1: Slots,
    l2: Slots,
    l3: Slots,
}

/// Multiples of `1 << shift` in the open interval `(a, b)`, for `a < b`.
const fn multiples_between(a: u64, b: u64, shift: u32) -> u64 {
    ((b - 1) >> shift) - (a >> shift)
}

impl MainTables {
    /// Tables for masked addresses `[from, last]`, the first at `base`.
    const fn new(flavour: Flavour, base: u64, from: u64, last: u64) -> Self {
        MainTables {
            flavour,
            base,
            l1: Slots::covering(PtLevel::L1, from, last),
            l2: Slots::covering(PtLevel::L2, from, last),
            l3: Slots::covering(PtLevel::L3, from, last),
        }
    }

    /// Number of frames (both builders need the same number for the same range).
    const fn count(&self) -> u64 {
        1 + self.l3.count() + self.l2.count() + self.l1.count()
    }

    const fn slots(&self, level: PtLevel) -> Option<Slots> {
        match level {
            PtLevel::L1 => Some(self.l1),
            PtLevel::L2 => Some(self.l2),
            PtLevel::L3 => Some(self.l3),
            PtLevel::L4 => None,
        }
    }

    /// dom0 order: tables allocated before the walk reaches 2 MiB slot `s`: the L4,
    /// one L1 per earlier slot, an L2 at the first slot and at each 1 GiB boundary
    /// passed, an L3 at the first slot and at each 512 GiB boundary passed.
    const fn dom0_before(&self, s: u64) -> u64 {
        let s0 = self.l1.first;
        if s <= s0 {
            return 1;
        }
        1 + (s - s0)
            + 1
            + multiples_between(s0, s, LEVEL_BITS)
            + 1
            + multiples_between(s0, s, 2 * LEVEL_BITS)
    }

    /// PFN of the `level` table mapping masked address `va`, if this set has one.
    fn table(&self, level: PtLevel, va: u64) -> Option<u64> {
        let Some(slots) = self.slots(level) else {
            return Some(self.base);
        };
        let slot = va >> level.table_shift();
        if !slots.contains(slot) {
            return None;
        }
        let pfn = match self.flavour {
            Flavour::DomU => {
                let before_level = match level {
                    PtLevel::L3 | PtLevel::L4 => 0,
                    PtLevel::L2 => self.l3.count(),
                    PtLevel::L1 => self.l3.count() + self.l2.count(),
                };
                self.base + 1 + before_level + (slot - slots.first)
            }
            Flavour::Dom0 => {
                // The walk event (2 MiB slot) that allocated this table, and the
                // table's position among the ones allocated there (L1, L2, L3).
                let first_l1 = slot << (level.table_shift() - PtLevel::L1.table_shift());
                let event = if first_l1 > self.l1.first {
                    first_l1
                } else {
                    self.l1.first
                };
                self.base + self.dom0_before(event) + (level as u64 - 1)
            }
        };
        Some(pfn)
    }
}

/// Page tables of the `INIT_P2M` mapping, after its data pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct P2mTables {
    /// Masked address of the list.
    va: u64,
    /// First data frame.
    data: u64,
    /// Data frames.
    pages: u64,
    /// First table frame.
    base: u64,
    l3: Option<Slots>,
    l2: Option<Slots>,
    l1: Option<Slots>,
}

fn slots_count(s: Option<Slots>) -> u64 {
    s.map_or(0, |s| s.count())
}

impl P2mTables {
    fn new(va: u64, pages: u64, data: u64, main: &MainTables) -> Result<Self, LayoutError> {
        let last = add(va, mul(pages, page_size())?)?.saturating_sub(1);
        let own = |level| Slots::covering(level, va, last).without(main.slots(level)?);
        Ok(P2mTables {
            va,
            data,
            pages,
            base: add(data, pages)?,
            l3: own(PtLevel::L3),
            l2: own(PtLevel::L2),
            l1: own(PtLevel::L1),
        })
    }

    fn slots(&self, level: PtLevel) -> Option<Slots> {
        match level {
            PtLevel::L1 => self.l1,
            PtLevel::L2 => self.l2,
            PtLevel::L3 => self.l3,
            PtLevel::L4 => None,
        }
    }

    fn count(&self) -> u64 {
        slots_count(self.l3) + slots_count(self.l2) + slots_count(self.l1)
    }

    fn table(&self, level: PtLevel, va: u64) -> Option<u64> {
        let slots = self.slots(level)?;
        let slot = va >> level.table_shift();
        if !slots.contains(slot) {
            return None;
        }
        let before_level = match level {
            PtLevel::L3 | PtLevel::L4 => 0,
            PtLevel::L2 => slots_count(self.l3),
            PtLevel::L1 => slots_count(self.l3) + slots_count(self.l2),
        };
        Some(self.base + before_level + (slot - slots.first))
    }

    /// Data frame mapped at masked address `va`, if any.
    fn leaf(&self, va: u64) -> Option<u64> {
        let off = va.checked_sub(self.va)? >> hypercall_abi::PAGE_SHIFT;
        (off < self.pages).then(|| self.data + off)
    }
}

/// What an L1 entry of the bootstrap tables maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaf {
    /// A frame of the region (`page_table`: one of the region's page-table frames,
    /// which are mapped read-only).
    Region {
        /// The frame.
        pfn: Pfn,
        /// Whether it is a bootstrap page-table frame.
        page_table: bool,
    },
    /// A data frame of the `INIT_P2M` list.
    P2m(Pfn),
}

/// The complete bootstrap layout of a domain; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    flavour: Flavour,
    nr_pages: u64,
    virt_base: u64,
    entry: u64,
    kstart: u64,
    kend: u64,
    hypercall_page: Option<u64>,
    kernel: Extent,
    module: Option<ModuleLayout>,
    p2m: Extent,
    start_info: Extent,
    xenstore: Option<Extent>,
    console: Option<Extent>,
    page_tables: Extent,
    stack: Extent,
    region_end: u64,
    main: MainTables,
    p2m_tables: Option<P2mTables>,
    first_p2m_pfn: u64,
    nr_p2m_frames: u64,
    frames_used: u64,
}

impl Layout {
    /// Lays out a domain of `nr_pages` pages running `info`'s kernel, with an initrd
    /// of `module_len` bytes (0: none), as `flavour`'s builder does.
    pub fn compute(
        info: &XenImageInfo<'_>,
        nr_pages: u64,
        flavour: Flavour,
        module_len: u64,
    ) -> Result<Layout, LayoutError> {
        let ps = page_size();
        if nr_pages == 0 || nr_pages > MACH2PHYS_NR_ENTRIES {
            return Err(LayoutError::BadNrPages(nr_pages));
        }
        match flavour {
            Flavour::DomU if info.features.requires(XenFeature::Dom0) => {
                return Err(LayoutError::RequiresDom0);
            }
            Flavour::Dom0
                if info.features.supported_note && !info.features.supports(XenFeature::Dom0) =>
            {
                return Err(LayoutError::NotDom0Capable);
            }
            _ => {}
        }
        let vb = info.virt_base;
        if vb % ps != 0
            || info.kstart < vb
            || info.kend < info.kstart
            || info.kend - info.kstart > MAX_KERNEL_SPAN
            || info.entry < info.kstart
            || info.entry > info.kend
            || info
                .hypercall_page
                .is_some_and(|h| h % ps != 0 || h < info.kstart || h >= info.kend)
        {
            return Err(LayoutError::InconsistentInfo);
        }
        let koff = info.kstart - vb;
        if flavour == Flavour::DomU && koff % ps != 0 {
            return Err(LayoutError::KernelUnaligned(info.kstart));
        }
        let k0 = koff / ps;
        let k1 = (info.kend - vb).div_ceil(ps);
        let kernel = mapped(vb, k0, k1 - k0)?;
        let mut cur = k1;

        let module_pages = module_len.div_ceil(ps);
        let mut module = None;
        if module_len > 0 && !info.mod_start_pfn {
            module = Some(ModuleLayout {
                extent: mapped(vb, cur, module_pages)?,
                len: module_len,
            });
            cur = add(cur, module_pages)?;
        }

        let p2m_pages = nr_pages.div_ceil(P2M_PER_PAGE);
        let init_p2m = match flavour {
            Flavour::DomU => info.init_p2m.filter(|&p| p < vb && p % ps == 0),
            Flavour::Dom0 => match info.init_p2m {
                Some(p) if p % ps != 0 => return Err(LayoutError::P2mUnaligned(p)),
                p => p,
            },
        };
        let mut p2m = None;
        if init_p2m.is_none() {
            p2m = Some(mapped(vb, cur, p2m_pages)?);
            cur = add(cur, p2m_pages)?;
        }

        let start_info = mapped(vb, cur, 1)?;
        cur = add(cur, 1)?;
        let (xenstore, console) = match flavour {
            Flavour::DomU => {
                let x = mapped(vb, cur, 1)?;
                let c = mapped(vb, add(cur, 1)?, 1)?;
                cur = add(cur, 2)?;
                (Some(x), Some(c))
            }
            Flavour::Dom0 => (None, None),
        };

        let pt_pfn = cur;
        let pt_va = va_of(vb, pt_pfn)?;
        let (mut nr_pt, mut region_end) = match flavour {
            Flavour::DomU => domu_tables(vb, pt_va)?,
            Flavour::Dom0 => dom0_tables(vb, pt_va)?,
        };
        check_range("bootstrap region", vb, region_end)?;
        if (region_end - vb) / ps > nr_pages {
            // A domain smaller than Xen's 4 MiB-aligned region: end it 512 KiB
            // after the stack instead (see the module docs).
            (nr_pt, region_end) = small_tables(flavour, vb, pt_va)?;
            check_range("bootstrap region", vb, region_end)?;
        }
        let page_tables = mapped(vb, pt_pfn, nr_pt)?;
        let stack = mapped(vb, add(pt_pfn, nr_pt)?, 1)?;
        let region_pages = (region_end - vb) / ps;
        if region_pages > nr_pages {
            return Err(LayoutError::TooSmall {
                needed: region_pages,
                nr_pages,
            });
        }
        let main = MainTables::new(flavour, pt_pfn, masked(vb), masked(region_end - 1));

        let mut next = region_pages;
        if module_len > 0 && info.mod_start_pfn {
            module = Some(ModuleLayout {
                extent: Extent {
                    pfn: Pfn(next),
                    pages: module_pages,
                    va: None,
                },
                len: module_len,
            });
            next = add(next, module_pages)?;
        }
        let after_region = next;

        let (p2m, p2m_tables) = match (p2m, init_p2m) {
            (Some(p2m), _) => (p2m, None),
            (None, None) => return Err(LayoutError::InconsistentInfo),
            (None, Some(va)) => {
                let end = add(va, mul(p2m_pages, ps)?)?;
                check_range("P2M list", va, end)?;
                let overlaps = match flavour {
                    Flavour::DomU => end > vb,
                    // dom0_build.c's test, with the unrounded list end.
                    Flavour::Dom0 => {
                        va <= region_end && vb <= add(va, mul(nr_pages, P2M_ENTRY_BYTES)?)?
                    }
                };
                if overlaps {
                    return Err(LayoutError::P2mOverlapsRegion {
                        p2m: va,
                        start: vb,
                        end: region_end,
                    });
                }
                let tables = P2mTables::new(masked(va), p2m_pages, next, &main)?;
                next = add(add(next, p2m_pages)?, tables.count())?;
                let extent = Extent {
                    pfn: Pfn(tables.data),
                    pages: p2m_pages,
                    va: Some(va),
                };
                (extent, Some(tables))
            }
        };
        if next > nr_pages {
            return Err(LayoutError::TooSmall {
                needed: next,
                nr_pages,
            });
        }
        let (first_p2m_pfn, nr_p2m_frames) = match (flavour, p2m_tables) {
            (Flavour::Dom0, _) => (after_region, next - after_region),
            (Flavour::DomU, Some(t)) => (t.data, t.pages + t.count()),
            (Flavour::DomU, None) => (0, 0),
        };

        Ok(Layout {
            flavour,
            nr_pages,
            virt_base: vb,
            entry: info.entry,
            kstart: info.kstart,
            kend: info.kend,
            hypercall_page: info.hypercall_page,
            kernel,
            module,
            p2m,
            start_info,
            xenstore,
            console,
            page_tables,
            stack,
            region_end,
            main,
            p2m_tables,
            first_p2m_pfn,
            nr_p2m_frames,
            frames_used: next,
        })
    }

    /// The builder reproduced.
    pub const fn flavour(&self) -> Flavour {
        self.flavour
    }

    /// Total pages of the domain.
    pub const fn nr_pages(&self) -> u64 {
        self.nr_pages
    }

    /// `VIRT_BASE`: where PFN 0 is mapped.
    pub const fn virt_base(&self) -> u64 {
        self.virt_base
    }

    /// Entry point (`rip`).
    pub const fn entry(&self) -> u64 {
        self.entry
    }

    /// The kernel's virtual range `[kstart, kend)`.
    pub const fn kernel_range(&self) -> (u64, u64) {
        (self.kstart, self.kend)
    }

    /// The kernel's frames.
    pub const fn kernel(&self) -> Extent {
        self.kernel
    }

    /// The initrd, if any.
    pub const fn module(&self) -> Option<ModuleLayout> {
        self.module
    }

    /// The P2M list's data frames (`va` is `mfn_list`).
    pub const fn p2m(&self) -> Extent {
        self.p2m
    }

    /// Whether the P2M list lies inside the region (no `INIT_P2M`).
    pub const fn p2m_in_region(&self) -> bool {
        self.p2m_tables.is_none()
    }

    /// The frames of the `INIT_P2M` mapping's own page tables, if any.
    pub fn p2m_table_frames(&self) -> Option<Extent> {
        self.p2m_tables.map(|t| Extent {
            pfn: Pfn(t.base),
            pages: t.count(),
            va: None,
        })
    }

    /// The start_info page (`rsi` is its address).
    pub const fn start_info(&self) -> Extent {
        self.start_info
    }

    /// The xenstore ring page (domU only).
    pub const fn xenstore(&self) -> Option<Extent> {
        self.xenstore
    }

    /// The console ring page (domU only).
    pub const fn console(&self) -> Option<Extent> {
        self.console
    }

    /// The region's page-table frames: `pages` is `nr_pt_frames`, `va` is `pt_base`.
    pub const fn page_tables(&self) -> Extent {
        self.page_tables
    }

    /// `start_info.nr_pt_frames`.
    pub const fn nr_pt_frames(&self) -> u64 {
        self.page_tables.pages
    }

    /// The boot stack page.
    pub const fn stack(&self) -> Extent {
        self.stack
    }

    /// One past the last mapped address of the region (4 MiB aligned, unless the
    /// domain is too small for that: then 512 KiB past the boot stack).
    pub const fn region_end(&self) -> u64 {
        self.region_end
    }

    /// Frames of the region (PFNs `0..region_pages`).
    pub const fn region_pages(&self) -> u64 {
        self.region_end.wrapping_sub(self.virt_base) >> hypercall_abi::PAGE_SHIFT
    }

    /// Frames used in all, region and what follows it (`<= nr_pages`).
    pub const fn frames_used(&self) -> u64 {
        self.frames_used
    }

    /// Initial `rsp`: the top of the boot-stack page.
    pub const fn rsp(&self) -> u64 {
        self.virt_base
            .wrapping_add(self.stack.pfn.0.wrapping_add(1).wrapping_mul(page_size()))
    }

    /// Initial `rsi`: the start_info page's address.
    pub const fn rsi(&self) -> u64 {
        self.virt_base
            .wrapping_add(self.start_info.pfn.0.wrapping_mul(page_size()))
    }

    /// `start_info.pt_base`: the L4's address.
    pub const fn pt_base(&self) -> u64 {
        self.virt_base
            .wrapping_add(self.page_tables.pfn.0.wrapping_mul(page_size()))
    }

    /// `start_info.mfn_list`: the P2M list's address.
    pub const fn mfn_list(&self) -> u64 {
        match self.p2m.va {
            Some(va) => va,
            None => 0,
        }
    }

    /// Frame of the hypercall page, if the image has one.
    pub const fn hypercall_page(&self) -> Option<Pfn> {
        match self.hypercall_page {
            Some(va) if va >= self.virt_base => {
                Some(Pfn((va - self.virt_base) >> hypercall_abi::PAGE_SHIFT))
            }
            _ => None,
        }
    }

    /// `start_info.mod_start`: the initrd's address, or its PFN when unmapped; 0 if
    /// none.
    pub const fn mod_start(&self) -> u64 {
        match self.module {
            Some(ModuleLayout {
                extent: Extent { va: Some(va), .. },
                ..
            }) => va,
            Some(ModuleLayout { extent, .. }) => extent.pfn.0,
            None => 0,
        }
    }

    /// `start_info.mod_len`: dom0 gets the initrd's length, a domU whole pages (as
    /// libxenguest reports its segment).
    pub const fn mod_len(&self) -> u64 {
        match (self.module, self.flavour) {
            (Some(m), Flavour::Dom0) => m.len,
            (Some(m), Flavour::DomU) => m.extent.pages.saturating_mul(page_size()),
            (None, _) => 0,
        }
    }

    /// Whether the initrd is passed unmapped (`SIF_MOD_START_PFN`).
    pub const fn module_unmapped(&self) -> bool {
        matches!(
            self.module,
            Some(ModuleLayout {
                extent: Extent { va: None, .. },
                ..
            })
        )
    }

    /// `start_info.first_p2m_pfn`.
    pub const fn first_p2m_pfn(&self) -> u64 {
        self.first_p2m_pfn
    }

    /// `start_info.nr_p2m_frames`.
    pub const fn nr_p2m_frames(&self) -> u64 {
        self.nr_p2m_frames
    }

    /// Every bootstrap page-table frame with its level, in PFN order: the region's
    /// tables, then the `INIT_P2M` mapping's. The hypervisor types (and, for the L4,
    /// pins) exactly these.
    pub fn page_table_frames(&self) -> PageTableFrames {
        PageTableFrames {
            main: self.main,
            p2m: self.p2m_tables,
            pfn: self.main.base,
            state: FrameState::L4,
        }
    }

    /// The page-table frame of `level` that maps `va`, if the bootstrap tables have
    /// one.
    pub fn table_for(&self, level: PtLevel, va: u64) -> Option<Pfn> {
        let m = masked(va);
        self.main
            .table(level, m)
            .or_else(|| self.p2m_tables.and_then(|t| t.table(level, m)))
            .map(Pfn)
    }

    /// What the bootstrap tables map at page `va`, if anything.
    pub fn leaf(&self, va: u64) -> Option<Leaf> {
        let m = masked(va);
        let start = masked(self.virt_base);
        let region_bytes = self.region_end.wrapping_sub(self.virt_base);
        if let Some(off) = m.checked_sub(start)
            && off < region_bytes
        {
            let pfn = Pfn(off >> hypercall_abi::PAGE_SHIFT);
            return Some(Leaf::Region {
                pfn,
                page_table: self.page_tables.contains(pfn),
            });
        }
        self.p2m_tables
            .and_then(|t| t.leaf(m))
            .map(|pfn| Leaf::P2m(Pfn(pfn)))
    }
}

/// Bytes of P2M per domain page.
const P2M_ENTRY_BYTES: u64 = size_of::<Mfn>() as u64;

/// libxenguest's `alloc_pgtables_pv`: returns the table count and the region end.
fn domu_tables(vb: u64, alloc_end: u64) -> Result<(u64, u64), LayoutError> {
    let ps = page_size();
    // One boot-stack page plus 512 KiB of padding.
    let extra = 1 + MIN_SLACK / ps;
    let mut pages = extra;
    for _ in 0..MAX_ROUNDS {
        let try_last = add(alloc_end, mul(pages, ps)?)? | (REGION_ALIGN - 1);
        let end = add(try_last, 1)?;
        check_range("bootstrap region", vb, end)?;
        let n = MainTables::new(Flavour::DomU, 0, masked(vb), masked(try_last)).count();
        pages = add(n, extra)?;
        if add(alloc_end, mul(pages, ps)?)? <= end {
            return Ok((n, end));
        }
    }
    Err(LayoutError::NoFixedPoint)
}

/// `dom0_construct_pv`'s search: the smallest `n >= 2` whose region needs at most `n`
/// tables. (Iterating `n = tables(n)` from 2 reaches that `n`: the count only grows
/// with `n`.)
fn dom0_tables(vb: u64, vpt_start: u64) -> Result<(u64, u64), LayoutError> {
    let ps = page_size();
    let mut n: u64 = 2;
    for _ in 0..MAX_ROUNDS {
        let vstack_end = add(vpt_start, mul(add(n, 1)?, ps)?)?;
        let mut v_end = add(vstack_end, REGION_ALIGN - 1)? & !(REGION_ALIGN - 1);
        if v_end - vstack_end < MIN_SLACK {
            v_end = add(v_end, REGION_ALIGN)?;
        }
        check_range("bootstrap region", vb, v_end)?;
        let need = MainTables::new(Flavour::Dom0, 0, masked(vb), masked(v_end - 1)).count();
        if need <= n {
            return Ok((n, v_end));
        }
        n = need;
    }
    Err(LayoutError::NoFixedPoint)
}

/// The region of a domain too small for either builder's 4 MiB-aligned end: it ends
/// exactly [`MIN_SLACK`] after the boot stack, with the fewest tables (in
/// `flavour`'s order) that map it. Returns the table count and the region end.
/// (Iterating `n = tables(n)` from 1 reaches the smallest fixed point: the count
/// only grows with `n`.)
fn small_tables(flavour: Flavour, vb: u64, pt_va: u64) -> Result<(u64, u64), LayoutError> {
    let ps = page_size();
    let mut n: u64 = 1;
    for _ in 0..MAX_ROUNDS {
        let end = add(add(pt_va, mul(add(n, 1)?, ps)?)?, MIN_SLACK)?;
        check_range("bootstrap region", vb, end)?;
        let need = MainTables::new(flavour, 0, masked(vb), masked(end - 1)).count();
        if need <= n {
            return Ok((n, end));
        }
        n = need;
    }
    Err(LayoutError::NoFixedPoint)
}

/// Iterator over the bootstrap page-table frames; see [`Layout::page_table_frames`].
#[derive(Clone, Debug)]
pub struct PageTableFrames {
    main: MainTables,
    p2m: Option<P2mTables>,
    pfn: u64,
    state: FrameState,
}

#[derive(Clone, Copy, Debug)]
enum FrameState {
    L4,
    /// Level-sorted tables of the region (domU) or of the P2M mapping.
    Sorted {
        p2m: bool,
        level: PtLevel,
        slot: u64,
    },
    /// dom0's walk: at 2 MiB slot `slot`, stage 0 = L1, 1 = L2, 2 = L3.
    Walk {
        slot: u64,
        stage: u8,
    },
    Done,
}

impl PageTableFrames {
    fn frame(&mut self, level: PtLevel, slot: u64) -> PtFrame {
        let pfn = Pfn(self.pfn);
        self.pfn = self.pfn.saturating_add(1);
        PtFrame {
            pfn,
            level,
            va: canonical((slot << level.table_shift()) & VA_MASK),
        }
    }

    fn slots_of(&self, p2m: bool, level: PtLevel) -> Option<Slots> {
        if p2m {
            self.p2m.and_then(|t| t.slots(level))
        } else {
            self.main.slots(level)
        }
    }

    /// The first non-empty level at or below `level` of the region's (domU) or the
    /// P2M mapping's level-sorted tables; what follows when there is none.
    fn sorted_from(&mut self, p2m: bool, level: PtLevel) -> FrameState {
        let mut level = Some(level);
        while let Some(l) = level {
            if let Some(s) = self.slots_of(p2m, l) {
                return FrameState::Sorted {
                    p2m,
                    level: l,
                    slot: s.first,
                };
            }
            level = l.below();
        }
        if p2m {
            FrameState::Done
        } else {
            self.start_p2m()
        }
    }

    fn start_p2m(&mut self) -> FrameState {
        match self.p2m {
            Some(t) => {
                self.pfn = t.base;
                self.sorted_from(true, PtLevel::L3)
            }
            None => FrameState::Done,
        }
    }
}

impl Iterator for PageTableFrames {
    type Item = PtFrame;

    fn next(&mut self) -> Option<PtFrame> {
        loop {
            match self.state {
                FrameState::Done => return None,
                FrameState::L4 => {
                    self.state = match self.main.flavour {
                        Flavour::DomU => self.sorted_from(false, PtLevel::L3),
                        Flavour::Dom0 => FrameState::Walk {
                            slot: self.main.l1.first,
                            stage: 0,
                        },
                    };
                    return Some(self.frame(PtLevel::L4, 0));
                }
                FrameState::Sorted { p2m, level, slot } => {
                    if let Some(s) = self.slots_of(p2m, level)
                        && s.contains(slot)
                    {
                        self.state = FrameState::Sorted {
                            p2m,
                            level,
                            slot: slot.saturating_add(1),
                        };
                        return Some(self.frame(level, slot));
                    }
                    self.state = match level.below() {
                        Some(lower) => self.sorted_from(p2m, lower),
                        None if p2m => FrameState::Done,
                        None => self.start_p2m(),
                    };
                }
                FrameState::Walk { slot, stage } => {
                    if slot > self.main.l1.last {
                        self.state = self.start_p2m();
                        continue;
                    }
                    let first = slot == self.main.l1.first;
                    let (next, emit) = match stage {
                        0 => (FrameState::Walk { slot, stage: 1 }, Some(PtLevel::L1)),
                        1 => (
                            FrameState::Walk { slot, stage: 2 },
                            (first || slot % (1 << LEVEL_BITS) == 0).then_some(PtLevel::L2),
                        ),
                        _ => (
                            FrameState::Walk {
                                slot: slot.saturating_add(1),
                                stage: 0,
                            },
                            (first || slot % (1 << (2 * LEVEL_BITS)) == 0).then_some(PtLevel::L3),
                        ),
                    };
                    self.state = next;
                    if let Some(level) = emit {
                        let table_slot = slot >> (level.table_shift() - PtLevel::L1.table_shift());
                        return Some(self.frame(level, table_slot));
                    }
                }
            }
        }
    }
}

/// L4 slots the hypervisor owns; the builder never writes them.
pub(crate) const fn hypervisor_l4_slot(i: usize) -> bool {
    i >= HYPERVISOR_L4_FIRST && i <= hypercall_abi::xen::HYPERVISOR_L4_LAST
}

#[cfg(test)]
mod tests;
