//! The builder's bootstrap region, as a guest reconstructs it from
//! `start_info`.
//!
//! Both Xen builders (the hypervisor's for dom0, libxenguest's for a domU) map
//! one virtual region starting at `virt_base`, page `n` of it holding
//! pseudo-physical frame `n`. Its tail is, in order: the bootstrap page tables
//! (`pt_base`, `nr_pt_frames` of them), one boot-stack page, and slack that
//! ends the region on a 4 MiB boundary with at least 512 KiB after the stack
//! (ABI digest §3.2). Frames past the region exist (all `nr_pages` are
//! populated) but are not mapped.
//!
//! The two builders round differently in one case: dom0's region ends at the
//! first 4 MiB boundary at least 512 KiB past the stack, a domU's at the first
//! boundary *more* than 512 KiB past it (libxenguest computes
//! `(stack_end + 512 KiB) | (4 MiB - 1)`, plus one). When the stack ends
//! exactly 512 KiB below a boundary the domU region is 4 MiB longer. A guest
//! cannot always tell which builder made it, so [`BootLayout::new`] is
//! conservative both ways: the slack (the runtime's heap) ends at the shorter
//! end, which is mapped either way, and free frames start after the longer
//! end, which is unmapped either way.
//!
//! A domain too small for a 4 MiB-aligned region (Xen refuses to build one;
//! `pvboot` builds it) gets a region that ends exactly 512 KiB past the stack.
//! A Xen-rule end is taken only if it fits in `nr_pages` and needs exactly
//! `nr_pt_frames` tables (both builders make the fewest tables that map their
//! region, and a small region exists only where no Xen-rule one fits);
//! otherwise the region is the small one.

use core::fmt;

use hypercall_abi::xen::StartInfo;
use hypercall_abi::xen::start_info::SifFlags;
use hypercall_abi::{PAGE_SHIFT, PAGE_SIZE};

/// The bootstrap region ends on a multiple of this (4 MiB).
///
/// Mirrors the builders' rule in ABI digest §3.2; to be taken from the shared
/// PV bootstrap layout once `pvboot` carries it.
pub const REGION_ALIGN: u64 = 4 << 20;

/// The builders leave at least this much mapped slack after the boot stack
/// (512 KiB), extending the region by [`REGION_ALIGN`] if needed (or, in a
/// domain too small for that, ending the region exactly this far past it).
pub const MIN_SLACK: u64 = 512 << 10;

const PAGE: u64 = PAGE_SIZE as u64;

/// A half-open range `[start, end)` of addresses or frame numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    /// First element.
    pub start: u64,
    /// One past the last element.
    pub end: u64,
}

impl Span {
    /// `[start, end)`.
    pub const fn new(start: u64, end: u64) -> Self {
        Span { start, end }
    }

    /// Number of elements (0 if `end <= start`).
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// True if the span holds nothing.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// True if `x` lies in the span.
    pub const fn contains(&self, x: u64) -> bool {
        self.start <= x && x < self.end
    }

    /// True if the two spans share an element.
    pub const fn overlaps(&self, other: &Span) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// What is wrong with a `start_info` that [`BootLayout::new`] rejects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `pt_base` is not page aligned.
    UnalignedPageTables,
    /// `pt_base` lies below `virt_base`.
    BelowVirtBase,
    /// The computed region does not fit in 64 bits.
    Overflow,
    /// The computed region holds more frames than `nr_pages`.
    BeyondMemory,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LayoutError::UnalignedPageTables => "pt_base is not page aligned",
            LayoutError::BelowVirtBase => "pt_base lies below virt_base",
            LayoutError::Overflow => "bootstrap region overflows",
            LayoutError::BeyondMemory => "bootstrap region exceeds nr_pages",
        })
    }
}

/// The bootstrap region and the guest's free memory, derived from
/// `start_info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootLayout {
    /// Virtual address of pseudo-physical frame 0.
    pub virt_base: u64,
    /// Frames the domain owns (`start_info.nr_pages`).
    pub nr_pages: u64,
    /// Virtual addresses of the bootstrap page tables.
    pub page_tables: Span,
    /// Virtual addresses of the builder's boot stack page.
    pub boot_stack: Span,
    /// Virtual addresses the bootstrap region may cover (the longer of the
    /// two builders' ends).
    pub region: Span,
    /// Mapped, unused memory after the boot stack, up to the shorter of the
    /// two builders' ends (mapped whichever built the guest).
    pub slack: Span,
    /// Pseudo-physical frames after the region, up to `nr_pages`.
    pub free_frames: Span,
    /// Frames inside `free_frames` that are in use anyway: an unmapped initrd
    /// (`SIF_MOD_START_PFN`) and a P2M placed by `INIT_P2M`.
    pub reserved: [Option<Span>; 2],
}

fn page_up(bytes: u64) -> Option<u64> {
    Some(bytes.checked_add(PAGE - 1)? >> PAGE_SHIFT)
}

impl BootLayout {
    /// Reconstruct the layout the builder used for a guest whose virtual
    /// base is `virt_base`.
    pub fn new(si: &StartInfo, virt_base: u64) -> Result<BootLayout, LayoutError> {
        Self::from_parts(
            virt_base,
            si.nr_pages,
            si.pt_base,
            si.nr_pt_frames,
            Reserved {
                flags: si.sif_flags(),
                mod_start: si.mod_start,
                mod_len: si.mod_len,
                first_p2m_pfn: si.first_p2m_pfn,
                nr_p2m_frames: si.nr_p2m_frames,
            },
        )
    }

    fn from_parts(
        virt_base: u64,
        nr_pages: u64,
        pt_base: u64,
        nr_pt_frames: u64,
        r: Reserved,
    ) -> Result<BootLayout, LayoutError> {
        use LayoutError::Overflow;
        if pt_base % PAGE != 0 {
            return Err(LayoutError::UnalignedPageTables);
        }
        if pt_base < virt_base {
            return Err(LayoutError::BelowVirtBase);
        }
        let pt_end = nr_pt_frames
            .checked_mul(PAGE)
            .and_then(|b| pt_base.checked_add(b))
            .ok_or(Overflow)?;
        let stack_end = pt_end.checked_add(PAGE).ok_or(Overflow)?;
        // dom0 (Xen's builder): round up, add 4 MiB if under 512 KiB is left.
        let mut short_end = stack_end
            .checked_next_multiple_of(REGION_ALIGN)
            .ok_or(Overflow)?;
        if short_end - stack_end < MIN_SLACK {
            short_end = short_end.checked_add(REGION_ALIGN).ok_or(Overflow)?;
        }
        // domU (libxenguest): the next boundary strictly above stack + 512 KiB.
        let long_end = (stack_end.checked_add(MIN_SLACK).ok_or(Overflow)? | (REGION_ALIGN - 1))
            .checked_add(1)
            .ok_or(Overflow)?;
        // A domain too small for either: 512 KiB after the stack (`pvboot`).
        let small_end = stack_end.checked_add(MIN_SLACK).ok_or(Overflow)?;
        let mem_end = virt_base.saturating_add(nr_pages.saturating_mul(PAGE));
        if small_end > mem_end {
            return Err(LayoutError::BeyondMemory);
        }
        // A Xen-rule end is the builder's if it fits and needs exactly the
        // tables the builder made (both builders make the fewest that map
        // their region); if no such end fits the region is the small one.
        let xen =
            |end: u64| end <= mem_end && tables_for_region(virt_base, end) == Some(nr_pt_frames);
        let (slack_end, end) = if xen(long_end) {
            (short_end, long_end)
        } else if xen(short_end) {
            (short_end, short_end)
        } else if long_end <= mem_end {
            // Not a layout either builder makes: only what every layout maps,
            // frames only past where any could end.
            (small_end, long_end)
        } else {
            (small_end, small_end)
        };
        let region_frames = (end - virt_base) >> PAGE_SHIFT;
        let free_frames = Span::new(region_frames, nr_pages);
        let mut reserved = [None, None];
        if r.flags.contains(SifFlags::MOD_START_PFN) && r.mod_len != 0 {
            let pages = page_up(r.mod_len).ok_or(Overflow)?;
            let span = Span::new(r.mod_start, r.mod_start.checked_add(pages).ok_or(Overflow)?);
            reserved[0] = Some(span);
        }
        if r.nr_p2m_frames != 0 {
            let span = Span::new(
                r.first_p2m_pfn,
                r.first_p2m_pfn
                    .checked_add(r.nr_p2m_frames)
                    .ok_or(Overflow)?,
            );
            reserved[1] = Some(span);
        }
        Ok(BootLayout {
            virt_base,
            nr_pages,
            page_tables: Span::new(pt_base, pt_end),
            boot_stack: Span::new(pt_end, stack_end),
            region: Span::new(virt_base, end),
            slack: Span::new(stack_end, slack_end),
            free_frames,
            reserved,
        })
    }

    /// Frames in [`BootLayout::free_frames`] that are really free: the span
    /// minus the reserved spans.
    pub fn free_frame_count(&self) -> u64 {
        let mut n = self.free_frames.len();
        for r in self.reserved.iter().flatten() {
            let lo = r.start.max(self.free_frames.start);
            let hi = r.end.min(self.free_frames.end);
            n -= hi.saturating_sub(lo);
        }
        n
    }
}

/// Page-table frames that map `[virt_base, end)` (an L4 and the L3s, L2s and
/// L1s the range touches), as both builders count them; `None` for an empty
/// range.
fn tables_for_region(virt_base: u64, end: u64) -> Option<u64> {
    let pages = end.checked_sub(virt_base)? >> PAGE_SHIFT;
    (pages != 0).then(|| 1 + crate::pt::tables_for(virt_base, pages).iter().sum::<u64>())
}

#[derive(Clone, Copy)]
struct Reserved {
    flags: SifFlags,
    mod_start: u64,
    mod_len: u64,
    first_p2m_pfn: u64,
    nr_p2m_frames: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Reserved = Reserved {
        flags: SifFlags::empty(),
        mod_start: 0,
        mod_len: 0,
        first_p2m_pfn: 0,
        nr_p2m_frames: 0,
    };

    #[test]
    fn digest_worked_example() {
        // §3.2: page tables 0x154000..0x159000, stack 0x159000, region 0..4 MiB.
        let l = BootLayout::from_parts(0, 32768, 0x154000, 5, NONE).unwrap();
        assert_eq!(l.page_tables, Span::new(0x154000, 0x159000));
        assert_eq!(l.boot_stack, Span::new(0x159000, 0x15A000));
        assert_eq!(l.region, Span::new(0, 0x40_0000));
        assert_eq!(l.slack, Span::new(0x15A000, 0x40_0000));
        assert_eq!(l.free_frames, Span::new(0x400, 32768));
        assert_eq!(l.free_frame_count(), 32768 - 0x400);
    }

    #[test]
    fn short_slack_adds_four_mib() {
        // Stack ends 256 KiB before a 4 MiB boundary: region grows by 4 MiB
        // (and needs 7 tables: L4, L3, L2, four L1s).
        let stack_end = 0x40_0000 - 0x4_0000;
        let l = BootLayout::from_parts(0, 1 << 20, stack_end - 8 * PAGE, 7, NONE).unwrap();
        assert_eq!(l.region.end, 0x80_0000);
        assert!(l.slack.len() >= MIN_SLACK);
        // Exactly 512 KiB of slack is enough for dom0's builder (5 tables for
        // 4 MiB), not for a domU's (7 for 8 MiB); the table count tells them
        // apart. With 7 the heap stops at the first boundary anyway (mapped by
        // either), free frames start after the second.
        let stack_end = 0x40_0000 - MIN_SLACK;
        let l = BootLayout::from_parts(0, 1 << 20, stack_end - 6 * PAGE, 5, NONE).unwrap();
        assert_eq!(l.slack, Span::new(stack_end, 0x40_0000));
        assert_eq!(l.region.end, 0x40_0000);
        assert_eq!(l.free_frames.start, 0x400);
        let l = BootLayout::from_parts(0, 1 << 20, stack_end - 8 * PAGE, 7, NONE).unwrap();
        assert_eq!(l.slack, Span::new(stack_end, 0x40_0000));
        assert_eq!(l.region.end, 0x80_0000);
        assert_eq!(l.free_frames.start, 0x800);
        // One page less of slack: both builders add 4 MiB.
        let l = BootLayout::from_parts(0, 1 << 20, stack_end + PAGE - 8 * PAGE, 7, NONE).unwrap();
        assert_eq!(l.slack.end, 0x80_0000);
        assert_eq!(l.region.end, 0x80_0000);
        // A table count no builder makes for any end that fits: only the
        // 512 KiB every builder maps is heap, free frames after the long end.
        let l = BootLayout::from_parts(0, 1 << 20, stack_end - 2 * PAGE, 1, NONE).unwrap();
        assert_eq!(l.slack, Span::new(stack_end, stack_end + MIN_SLACK));
        assert_eq!(l.free_frames.start, 0x800);
    }

    #[test]
    fn virt_base_offsets_frames() {
        let vb = 0xFFFF_FFFF_8000_0000;
        let l = BootLayout::from_parts(vb, 4096, vb + 0x20_0000, 5, NONE).unwrap();
        assert_eq!(l.region, Span::new(vb, vb + 0x40_0000));
        assert_eq!(l.slack.end, vb + 0x40_0000);
        assert_eq!(l.free_frames.start, 0x400);
    }

    /// Domains smaller than a 4 MiB-aligned region (built by `pvboot`, which
    /// Xen refuses): the region, and the heap, end 512 KiB past the stack.
    #[test]
    fn small_domains() {
        // `hello` in 2 MiB: tables at 0x12A000 (L4, L3, L2, L1), stack to
        // 0x12F000.
        let l = BootLayout::from_parts(0, 512, 0x12_A000, 4, NONE).unwrap();
        assert_eq!(l.boot_stack, Span::new(0x12_E000, 0x12_F000));
        assert_eq!(l.region, Span::new(0, 0x1A_F000));
        assert_eq!(l.slack, Span::new(0x12_F000, 0x1A_F000));
        assert_eq!(l.free_frames, Span::new(0x1AF, 512));
        // Exactly enough memory, then a page too little.
        let l = BootLayout::from_parts(0, 0x1AF, 0x12_A000, 4, NONE).unwrap();
        assert!(l.free_frames.is_empty());
        assert_eq!(
            BootLayout::from_parts(0, 0x1AE, 0x12_A000, 4, NONE),
            Err(LayoutError::BeyondMemory)
        );
        // One page short of the 4 MiB Xen would map: small, although the
        // table count would fit that region too.
        let stack_end = 0x40_0000 - MIN_SLACK - PAGE;
        let l = BootLayout::from_parts(0, 0x3FF, stack_end - 6 * PAGE, 5, NONE).unwrap();
        assert_eq!(l.region.end, 0x3F_F000);
        assert_eq!(l.slack, Span::new(stack_end, 0x3F_F000));
        // With 4 MiB it is Xen's layout.
        let l = BootLayout::from_parts(0, 0x400, stack_end - 6 * PAGE, 5, NONE).unwrap();
        assert_eq!(l.region.end, 0x40_0000);
        assert_eq!(l.slack.end, 0x40_0000);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(
            BootLayout::from_parts(0, 4096, 0x1001, 1, NONE),
            Err(LayoutError::UnalignedPageTables)
        );
        assert_eq!(
            BootLayout::from_parts(0x10_0000, 4096, 0x1000, 1, NONE),
            Err(LayoutError::BelowVirtBase)
        );
        // Not even 512 KiB after the stack.
        assert_eq!(
            BootLayout::from_parts(0, 130, 0x1000, 1, NONE),
            Err(LayoutError::BeyondMemory)
        );
        assert_eq!(
            BootLayout::from_parts(0, u64::MAX, 0x1000, u64::MAX, NONE),
            Err(LayoutError::Overflow)
        );
        assert_eq!(
            BootLayout::from_parts(0, u64::MAX, !0xFFF, 1, NONE),
            Err(LayoutError::Overflow)
        );
    }

    #[test]
    fn reserved_spans() {
        let r = Reserved {
            flags: SifFlags::MOD_START_PFN,
            mod_start: 0x500,
            mod_len: 0x1001,
            first_p2m_pfn: 0x600,
            nr_p2m_frames: 3,
        };
        let l = BootLayout::from_parts(0, 0x1000, 0x100000, 4, r).unwrap();
        assert_eq!(
            l.reserved,
            [Some(Span::new(0x500, 0x502)), Some(Span::new(0x600, 0x603))]
        );
        assert_eq!(l.free_frame_count(), 0x1000 - 0x400 - 2 - 3);
        // Without the flag, mod_start is a mapped virtual address: nothing reserved.
        let r = Reserved {
            flags: SifFlags::empty(),
            nr_p2m_frames: 0,
            ..r
        };
        let l = BootLayout::from_parts(0, 0x1000, 0x100000, 4, r).unwrap();
        assert_eq!(l.reserved, [None, None]);
    }
}
