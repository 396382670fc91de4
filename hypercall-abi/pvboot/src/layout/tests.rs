//! Tests of the bootstrap layout, against the digest's worked example and against
//! straight transcriptions of Xen's loops.

use std::vec;
use std::vec::Vec;

use hypercall_abi::elfnote::XenElfNote;

use super::*;
use crate::elf::Elf;
use crate::testimg::{Seg, Spec, num_note, shown, str_note};

fn layout_of(
    spec: &Spec,
    nr_pages: u64,
    flavour: Flavour,
    module_len: u64,
) -> Result<Layout, LayoutError> {
    let bytes = spec.build();
    let elf = Elf::parse(&bytes).unwrap();
    let info = XenImageInfo::parse(&elf).unwrap();
    Layout::compute(&info, nr_pages, flavour, module_len)
}

fn ext(pfn: u64, pages: u64, va: u64) -> Extent {
    Extent {
        pfn: Pfn(pfn),
        pages,
        va: Some(va),
    }
}

fn frames(l: &Layout) -> Vec<(u64, PtLevel, u64)> {
    l.page_table_frames()
        .map(|f| (f.pfn.0, f.level, f.va))
        .collect()
}

use PtLevel::{L1, L2, L3, L4};

/// The digest's worked example (§3.2), for a domU.
#[test]
fn golden_small_domu() {
    let l = layout_of(&Spec::small(), 32768, Flavour::DomU, 0).unwrap();
    assert_eq!(l.kernel(), ext(0x100, 0x11, 0x10_0000));
    assert_eq!(l.module(), None);
    assert_eq!(l.p2m(), ext(0x111, 0x40, 0x11_1000));
    assert!(l.p2m_in_region());
    assert_eq!(l.start_info(), ext(0x151, 1, 0x15_1000));
    assert_eq!(l.xenstore(), Some(ext(0x152, 1, 0x15_2000)));
    assert_eq!(l.console(), Some(ext(0x153, 1, 0x15_3000)));
    assert_eq!(l.page_tables(), ext(0x154, 5, 0x15_4000));
    assert_eq!(l.nr_pt_frames(), 5);
    assert_eq!(l.stack(), ext(0x159, 1, 0x15_9000));
    assert_eq!(l.rsp(), 0x15_A000);
    assert_eq!(l.rsi(), 0x15_1000);
    assert_eq!(l.pt_base(), 0x15_4000);
    assert_eq!(l.mfn_list(), 0x11_1000);
    assert_eq!(l.region_end(), 0x40_0000);
    assert_eq!(l.region_pages(), 0x400);
    assert_eq!(l.hypercall_page(), Some(Pfn(0x106)));
    assert_eq!((l.first_p2m_pfn(), l.nr_p2m_frames()), (0, 0));
    assert_eq!((l.mod_start(), l.mod_len()), (0, 0));
    assert_eq!(l.frames_used(), 0x400);
    assert_eq!(
        frames(&l),
        [
            (0x154, L4, 0),
            (0x155, L3, 0),
            (0x156, L2, 0),
            (0x157, L1, 0),
            (0x158, L1, 0x20_0000),
        ]
    );
}

/// The same image for dom0: no xenstore or console page; tables L4, L1, L2, L3, L1.
#[test]
fn golden_small_dom0() {
    let l = layout_of(&Spec::small(), 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.kernel(), ext(0x100, 0x11, 0x10_0000));
    assert_eq!(l.p2m(), ext(0x111, 0x40, 0x11_1000));
    assert_eq!(l.start_info(), ext(0x151, 1, 0x15_1000));
    assert_eq!((l.xenstore(), l.console()), (None, None));
    assert_eq!(l.page_tables(), ext(0x152, 5, 0x15_2000));
    assert_eq!(l.stack(), ext(0x157, 1, 0x15_7000));
    assert_eq!(l.rsp(), 0x15_8000);
    assert_eq!(l.region_end(), 0x40_0000);
    // dom0 always reports where the P2M frames would start.
    assert_eq!((l.first_p2m_pfn(), l.nr_p2m_frames()), (0x400, 0));
    assert_eq!(
        frames(&l),
        [
            (0x152, L4, 0),
            (0x153, L1, 0),
            (0x154, L2, 0),
            (0x155, L3, 0),
            (0x156, L1, 0x20_0000),
        ]
    );
}

/// A kernel ending at PFN 0x338 leaves too little slack in 4 MiB: the region grows
/// to 8 MiB and needs two more L1s.
#[test]
fn golden_extended_region() {
    let mut s = Spec::small();
    s.segs[0].memsz = 0x23_8000;
    let l = layout_of(&s, 32768, Flavour::DomU, 0).unwrap();
    assert_eq!(l.kernel(), ext(0x100, 0x238, 0x10_0000));
    assert_eq!(l.p2m(), ext(0x338, 0x40, 0x33_8000));
    assert_eq!(l.start_info().pfn, Pfn(0x378));
    assert_eq!(l.console().map(|c| c.pfn), Some(Pfn(0x37A)));
    assert_eq!(l.page_tables(), ext(0x37B, 7, 0x37_B000));
    assert_eq!(l.stack().pfn, Pfn(0x382));
    assert_eq!(l.rsp(), 0x38_3000);
    assert_eq!(l.region_end(), 0x80_0000);

    // dom0, same image: no xenstore/console pages, so 4 MiB still leaves 129 pages
    // after the stack.
    let l = layout_of(&s, 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x379, 5, 0x37_9000));
    assert_eq!(l.rsp(), 0x37_F000);
    assert_eq!(l.region_end(), 0x40_0000);
    // Two pages more and dom0 needs 8 MiB too: L4, L1, L2, L3, then three L1s.
    s.segs[0].memsz = 0x23_A000;
    let l = layout_of(&s, 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x37B, 7, 0x37_B000));
    assert_eq!(l.stack().pfn, Pfn(0x382));
    assert_eq!(l.region_end(), 0x80_0000);
    assert_eq!(
        frames(&l).iter().map(|f| f.1).collect::<Vec<_>>(),
        [L4, L1, L2, L3, L1, L1, L1]
    );

    // dom0 with exactly 512 KiB left after the stack keeps 4 MiB.
    let mut s = Spec::small();
    s.segs[0].memsz = 0x23_9000; // kernel ends at PFN 0x339
    let l = layout_of(&s, 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x37A, 5, 0x37_A000));
    assert_eq!(l.rsp(), 0x38_0000);
    assert_eq!(l.region_end(), 0x40_0000);
}

/// A domain smaller than the 4 MiB-aligned region (Xen: "not enough memory for
/// initial mapping"): the region ends 512 KiB after the stack, with the fewest
/// tables for that, in each builder's order; the rest of memory follows unmapped.
#[test]
fn small_domains() {
    // 2 MiB: P2M one page; start info, xenstore, console; L4, L3, L2, one L1.
    let l = layout_of(&Spec::small(), 512, Flavour::DomU, 0).unwrap();
    assert_eq!(l.kernel(), ext(0x100, 0x11, 0x10_0000));
    assert_eq!(l.p2m(), ext(0x111, 1, 0x11_1000));
    assert_eq!(l.start_info(), ext(0x112, 1, 0x11_2000));
    assert_eq!(l.console(), Some(ext(0x114, 1, 0x11_4000)));
    assert_eq!(l.page_tables(), ext(0x115, 4, 0x11_5000));
    assert_eq!(l.stack(), ext(0x119, 1, 0x11_9000));
    assert_eq!(l.rsp(), 0x11_A000);
    assert_eq!(l.region_end(), 0x11_A000 + MIN_SLACK);
    assert_eq!(l.region_pages(), 0x19A);
    assert_eq!(l.frames_used(), 0x19A);
    assert_eq!(
        frames(&l),
        [
            (0x115, L4, 0),
            (0x116, L3, 0),
            (0x117, L2, 0),
            (0x118, L1, 0)
        ]
    );
    assert_eq!(
        l.leaf(0x19_9000),
        Some(Leaf::Region {
            pfn: Pfn(0x199),
            page_table: false
        })
    );
    assert_eq!(l.leaf(0x19_A000), None);
    // dom0's builder, same rule, its own order.
    let l = layout_of(&Spec::small(), 512, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x113, 4, 0x11_3000));
    assert_eq!(l.region_end(), 0x11_8000 + MIN_SLACK);
    assert_eq!((l.first_p2m_pfn(), l.nr_p2m_frames()), (0x198, 0));
    assert_eq!(
        frames(&l),
        [
            (0x113, L4, 0),
            (0x114, L1, 0),
            (0x115, L2, 0),
            (0x116, L3, 0)
        ]
    );
    // Just under 4 MiB: a region past 2 MiB needs a second L1.
    let mut s = Spec::small();
    s.segs[0].memsz = 0x18_0000; // kernel to PFN 0x280
    let l = layout_of(&s, 0x3FF, Flavour::DomU, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x285, 5, 0x28_5000));
    assert_eq!(l.region_end(), 0x28_B000 + MIN_SLACK);
    // With 4 MiB and more, Xen's layout is unchanged.
    let l = layout_of(&s, 0x400, Flavour::DomU, 0).unwrap();
    assert_eq!(l.region_end(), 0x40_0000);
    assert_eq!(l.page_tables(), ext(0x285, 5, 0x28_5000));
    // The error names both sizes and the MiB to ask for.
    let e = layout_of(&s, 0x200, Flavour::DomU, 0).unwrap_err();
    assert_eq!(
        e,
        LayoutError::TooSmall {
            needed: 0x30A,
            nr_pages: 0x200
        }
    );
    let msg = shown(e);
    assert!(msg.contains("the domain has 2 MiB (512 pages)"), "{msg}");
    assert!(msg.contains("needs 3112 KiB (778 pages"), "{msg}");
    assert!(msg.ends_with("give it at least 4 MiB"), "{msg}");
}

/// The small-domain rule against its statement: the fewest tables that map up to
/// 512 KiB past the stack that follows them.
#[test]
fn small_table_count_rule() {
    for vb in [0u64, 0x3FE0_0000, 0xFFFF_FFFF_8000_0000] {
        for pages in (0x100u64..0x2400).step_by(7) {
            let alloc_end = vb + pages * 4096;
            for flavour in [Flavour::DomU, Flavour::Dom0] {
                let (n, e) = small_tables(flavour, vb, alloc_end).unwrap();
                assert_eq!(e, alloc_end + (n + 1) * 4096 + MIN_SLACK);
                let need = MainTables::new(flavour, 0, masked(vb), masked(e - 1)).count();
                assert_eq!(n, need, "vb {vb:#x} alloc_end {alloc_end:#x}");
                // Never more than Xen's rule needs.
                let (xn, xe) = domu_tables(vb, alloc_end).unwrap();
                assert!(n <= xn && e <= xe);
            }
        }
    }
}

/// VIRT_BASE 0xffffffff80000000: the region sits in L4 slot 511, L3 slot 510.
#[test]
fn golden_high_virt_base() {
    let vb = 0xffff_ffff_8000_0000u64;
    let l = layout_of(&Spec::high(), 32768, Flavour::DomU, 0).unwrap();
    assert_eq!(l.virt_base(), vb);
    assert_eq!(l.kernel(), ext(0x200, 0x80, vb + 0x20_0000));
    assert_eq!(l.p2m(), ext(0x280, 0x40, vb + 0x28_0000));
    assert_eq!(l.start_info(), ext(0x2C0, 1, vb + 0x2C_0000));
    assert_eq!(l.page_tables(), ext(0x2C3, 5, vb + 0x2C_3000));
    assert_eq!(l.rsp(), vb + 0x2C_9000);
    assert_eq!(l.region_end(), vb + 0x40_0000);
    assert_eq!(l.hypercall_page(), Some(Pfn(0x201)));
    assert_eq!(
        frames(&l),
        [
            (0x2C3, L4, 0),
            (0x2C4, L3, 0xffff_ff80_0000_0000),
            (0x2C5, L2, vb),
            (0x2C6, L1, vb),
            (0x2C7, L1, vb + 0x20_0000),
        ]
    );
    assert_eq!(l.table_for(L4, vb), Some(Pfn(0x2C3)));
    assert_eq!(l.table_for(L3, vb), Some(Pfn(0x2C4)));
    assert_eq!(l.table_for(L1, vb + 0x3F_F000), Some(Pfn(0x2C7)));
    assert_eq!(l.table_for(L1, vb + 0x40_0000), None);
    assert_eq!(
        l.leaf(vb + 0x2C_4000),
        Some(Leaf::Region {
            pfn: Pfn(0x2C4),
            page_table: true
        })
    );
    assert_eq!(l.leaf(vb - 0x1000), None);

    let l = layout_of(&Spec::high(), 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.page_tables(), ext(0x2C1, 5, vb + 0x2C_1000));
    assert_eq!(l.rsp(), vb + 0x2C_7000);
    assert_eq!(l.region_end(), vb + 0x40_0000);
}

#[test]
fn modules() {
    // Mapped after the kernel; domU reports whole pages, dom0 the length.
    let l = layout_of(&Spec::small(), 32768, Flavour::DomU, 0x1801).unwrap();
    let m = l.module().unwrap();
    assert_eq!(m.extent, ext(0x111, 2, 0x11_1000));
    assert_eq!(l.p2m().pfn, Pfn(0x113));
    assert_eq!((l.mod_start(), l.mod_len()), (0x11_1000, 0x2000));
    assert!(!l.module_unmapped());
    let l = layout_of(&Spec::small(), 32768, Flavour::Dom0, 0x1801).unwrap();
    assert_eq!((l.mod_start(), l.mod_len()), (0x11_1000, 0x1801));

    // MOD_START_PFN: after the region, passed as a PFN.
    let s = Spec::small().with_note(num_note(XenElfNote::ModStartPfn, 1));
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        let l = layout_of(&s, 32768, flavour, 0x1801).unwrap();
        assert!(l.module_unmapped());
        assert_eq!(l.p2m().pfn, Pfn(0x111));
        assert_eq!(
            l.module().unwrap().extent,
            Extent {
                pfn: Pfn(0x400),
                pages: 2,
                va: None
            }
        );
        assert_eq!(l.mod_start(), 0x400);
        assert_eq!(l.frames_used(), 0x402);
    }
    let l = layout_of(&s, 32768, Flavour::Dom0, 0x1801).unwrap();
    assert_eq!((l.first_p2m_pfn(), l.nr_p2m_frames()), (0x402, 0));
}

#[test]
fn init_p2m() {
    let vb = 0xffff_ffff_8000_0000u64;
    let p2m_va = 0x80_0000_0000u64; // Linux's choice.
    let s = Spec::high().with_note(num_note(XenElfNote::InitP2m, p2m_va));
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        let l = layout_of(&s, 32768, flavour, 0).unwrap();
        assert!(!l.p2m_in_region());
        assert_eq!(l.start_info().pfn, Pfn(0x280));
        assert_eq!(l.p2m(), ext(0x400, 0x40, p2m_va));
        assert_eq!(l.mfn_list(), p2m_va);
        assert_eq!(
            l.p2m_table_frames(),
            Some(Extent {
                pfn: Pfn(0x440),
                pages: 3,
                va: None
            })
        );
        assert_eq!((l.first_p2m_pfn(), l.nr_p2m_frames()), (0x400, 0x43));
        assert_eq!(l.frames_used(), 0x443);
        let f = frames(&l);
        assert_eq!(
            &f[f.len() - 3..],
            [
                (0x440, L3, p2m_va),
                (0x441, L2, p2m_va),
                (0x442, L1, p2m_va)
            ]
        );
        assert_eq!(l.table_for(L3, p2m_va), Some(Pfn(0x440)));
        assert_eq!(l.leaf(p2m_va + 0x3F000), Some(Leaf::P2m(Pfn(0x43F))));
        assert_eq!(l.leaf(p2m_va + 0x40000), None);
        assert!(l.region_end() == vb + 0x40_0000);
    }
    // Too few pages for the P2M outside the region.
    assert_eq!(
        layout_of(&s, 0x402, Flavour::DomU, 0).unwrap_err(),
        LayoutError::TooSmall {
            needed: 0x406,
            nr_pages: 0x402
        }
    );

    // domU ignores an INIT_P2M above VIRT_BASE or unaligned; dom0 refuses the latter.
    let s = Spec::small().with_note(num_note(XenElfNote::InitP2m, 0x4000_0000));
    let l = layout_of(&s, 32768, Flavour::DomU, 0).unwrap();
    assert!(l.p2m_in_region());
    let s = Spec::high().with_note(num_note(XenElfNote::InitP2m, p2m_va + 8));
    let l = layout_of(&s, 32768, Flavour::DomU, 0).unwrap();
    assert!(l.p2m_in_region());
    assert_eq!(
        layout_of(&s, 32768, Flavour::Dom0, 0).unwrap_err(),
        LayoutError::P2mUnaligned(p2m_va + 8)
    );
    // dom0 honours one above VIRT_BASE, unless it overlaps the region.
    let s = Spec::small().with_note(num_note(XenElfNote::InitP2m, 0x4000_0000));
    let l = layout_of(&s, 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.p2m(), ext(0x400, 0x40, 0x4000_0000));
    let s = Spec::small().with_note(num_note(XenElfNote::InitP2m, 0x20_0000));
    assert!(matches!(
        layout_of(&s, 32768, Flavour::Dom0, 0),
        Err(LayoutError::P2mOverlapsRegion { .. })
    ));
    // domU: below VIRT_BASE but running into the region.
    let s = Spec::high().with_note(num_note(XenElfNote::InitP2m, vb - 0x1000));
    assert!(matches!(
        layout_of(&s, 32768, Flavour::DomU, 0),
        Err(LayoutError::P2mOverlapsRegion { .. })
    ));
    // In the hypervisor's hole.
    let s = Spec::high().with_note(num_note(XenElfNote::InitP2m, 0xFFFF_8100_0000_0000));
    assert!(matches!(
        layout_of(&s, 32768, Flavour::DomU, 0),
        Err(LayoutError::BadVirtualRange { .. })
    ));
}

/// An image with its region at `vb` (kernel 1 MiB in, VA = PA) and `INIT_P2M`.
fn low_with_p2m(vb: u64, p2m: u64) -> Spec {
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, vb))
        .with_note(num_note(XenElfNote::PaddrOffset, vb))
        .with_note(num_note(XenElfNote::InitP2m, p2m))
        .with_note(num_note(XenElfNote::HypercallPage, vb + 0x10_6000));
    s.segs[0].vaddr = vb + 0x10_0000;
    s.segs[0].paddr = vb + 0x10_0000;
    s.entry = vb + 0x10_0000;
    s
}

/// An INIT_P2M just below VIRT_BASE shares the region's L3 and L2, and its L1 when
/// they fall in the same 2 MiB.
#[test]
fn init_p2m_shares_tables_with_the_region() {
    let vb = 0x60_0000u64;
    let l = layout_of(&low_with_p2m(vb, 0x40_0000), 32768, Flavour::DomU, 0).unwrap();
    // Region [0x600000, 0x800000): one L1 (slot 3); P2M [0x400000, 0x440000): slot 2.
    assert_eq!(l.region_end(), 0x80_0000);
    assert_eq!(l.nr_pt_frames(), 4);
    assert_eq!(
        l.p2m_table_frames(),
        Some(Extent {
            pfn: Pfn(0x240),
            pages: 1,
            va: None
        })
    );
    assert_eq!(frames(&l).last(), Some(&(0x240, L1, 0x40_0000)));
    assert_eq!(l.table_for(L2, 0x40_0000), l.table_for(L2, vb));
    assert_eq!(l.table_for(L1, 0x40_0000), Some(Pfn(0x240)));

    let vb = 0x68_0000u64;
    let l = layout_of(&low_with_p2m(vb, 0x60_0000), 32768, Flavour::DomU, 0).unwrap();
    assert_eq!(l.region_end(), 0xC0_0000);
    assert_eq!(l.nr_pt_frames(), 6);
    assert_eq!(l.p2m_table_frames().map(|e| e.pages), Some(0));
    assert_eq!(l.table_for(L1, 0x60_0000), l.table_for(L1, vb));
    assert_eq!(l.leaf(0x60_0000), Some(Leaf::P2m(Pfn(0x580))));
    assert_eq!(l.page_table_frames().count(), 6);
}

#[test]
fn errors() {
    let s = Spec::small();
    assert_eq!(
        layout_of(&s, 0, Flavour::DomU, 0).unwrap_err(),
        LayoutError::BadNrPages(0)
    );
    // Under 4 MiB the region ends 512 KiB after the stack (`small_domains`); with
    // less memory than that the domain is too small.
    assert_eq!(
        layout_of(&s, 0x199, Flavour::DomU, 0).unwrap_err(),
        LayoutError::TooSmall {
            needed: 0x19A,
            nr_pages: 0x199
        }
    );
    assert!(layout_of(&s, 0x19A, Flavour::DomU, 0).is_ok());
    assert!(layout_of(&s, 0x400, Flavour::DomU, 0).is_ok());
    assert!(matches!(
        layout_of(&s, 0x400, Flavour::DomU, 0x30_0000),
        Err(LayoutError::TooSmall { .. })
    ));
    assert!(matches!(
        layout_of(&s, 32768, Flavour::DomU, u64::MAX),
        Err(LayoutError::AddressOverflow | LayoutError::BadVirtualRange { .. })
    ));

    let s = Spec::small().with_note(str_note(XenElfNote::Features, "!dom0"));
    assert_eq!(
        layout_of(&s, 32768, Flavour::DomU, 0).unwrap_err(),
        LayoutError::RequiresDom0
    );
    assert!(layout_of(&s, 32768, Flavour::Dom0, 0).is_ok());
    let s = Spec::small().with_note((XenElfNote::SupportedFeatures as u32, vec![0, 0, 0, 0]));
    assert_eq!(
        layout_of(&s, 32768, Flavour::Dom0, 0).unwrap_err(),
        LayoutError::NotDom0Capable
    );
    assert!(layout_of(&s, 32768, Flavour::DomU, 0).is_ok());

    // A kernel not on a page boundary: refused for a domU, fine for dom0.
    let mut s = Spec::small();
    s.segs[0].vaddr = 0x10_0800;
    s.segs[0].paddr = 0x10_0800;
    s.entry = 0x10_0800;
    s = s.with_note(num_note(XenElfNote::HypercallPage, 0x10_6000));
    assert_eq!(
        layout_of(&s, 32768, Flavour::DomU, 0).unwrap_err(),
        LayoutError::KernelUnaligned(0x10_0800)
    );
    let l = layout_of(&s, 32768, Flavour::Dom0, 0).unwrap();
    assert_eq!(l.kernel(), ext(0x100, 0x12, 0x10_0000));

    // A region running out of the lower half (1 MiB below its end is too little) or
    // into the hypervisor's hole.
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, 0x7FFF_FFF0_0000))
        .with_note(num_note(XenElfNote::PaddrOffset, 0));
    s.segs[0].paddr = 0;
    s.segs[0].vaddr = 0x7FFF_FFF0_0000;
    s.segs[0].memsz = 0x8_0000;
    s.entry = 0x7FFF_FFF0_0000;
    s = s.without_note(XenElfNote::HypercallPage);
    assert!(matches!(
        layout_of(&s, 32768, Flavour::DomU, 0),
        Err(LayoutError::BadVirtualRange { .. })
    ));
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, 0xFFFF_8400_0000_0000))
        .without_note(XenElfNote::HypercallPage);
    s.segs[0].vaddr = 0xFFFF_8400_0010_0000;
    s.entry = 0xFFFF_8400_0010_0000;
    assert!(matches!(
        layout_of(&s, 32768, Flavour::Dom0, 0),
        Err(LayoutError::BadVirtualRange { .. })
    ));
    // At the very top: the region end does not fit in 64 bits.
    let vb = 0xFFFF_FFFF_FFE0_0000u64;
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, vb))
        .without_note(XenElfNote::HypercallPage);
    s.segs[0].paddr = 0;
    s.segs[0].filesz = 0x1000;
    s.segs[0].memsz = 0x1000;
    s.entry = vb;
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        assert_eq!(
            layout_of(&s, 32768, flavour, 0).unwrap_err(),
            LayoutError::AddressOverflow
        );
    }
}

#[test]
fn every_error_displays() {
    for e in [
        LayoutError::BadNrPages(0),
        LayoutError::InconsistentInfo,
        LayoutError::RequiresDom0,
        LayoutError::NotDom0Capable,
        LayoutError::KernelUnaligned(1),
        LayoutError::P2mUnaligned(1),
        LayoutError::AddressOverflow,
        LayoutError::BadVirtualRange {
            what: "x",
            start: 0,
            end: 1,
        },
        LayoutError::P2mOverlapsRegion {
            p2m: 0,
            start: 0,
            end: 1,
        },
        LayoutError::TooSmall {
            needed: 2,
            nr_pages: 1,
        },
        LayoutError::NoFixedPoint,
    ] {
        assert!(shown(e).len() > 10);
    }
}

/// Xen's dom0 table walk (`dom0_construct_pv`), transcribed with table positions for
/// pointers: the levels and first addresses of the tables in allocation order.
fn xen_dom0_walk(v_start: u64, v_end: u64) -> Vec<(PtLevel, u64)> {
    let idx = |va: u64, shift: u32| ((va >> shift) & 511) as usize;
    let mut out = vec![(L4, 0)];
    // Positions within the current table; 512 (or "no table yet") means aligned.
    let (mut l1, mut l2, mut l3) = (512usize, 512usize, 512usize);
    let mut have_l3 = false;
    let pages = (v_end - v_start) >> 12;
    for count in 0..pages {
        let va = v_start + (count << 12);
        if l1 % 512 == 0 {
            out.push((L1, va & !0x1F_FFFF));
            l1 = if count == 0 { idx(v_start, 12) } else { 0 };
            if l2 % 512 == 0 {
                out.push((L2, va & !0x3FFF_FFFF));
                l2 = if count == 0 { idx(v_start, 21) } else { 0 };
                if l3 % 512 == 0 {
                    if count != 0 || !have_l3 {
                        out.push((L3, va & !0x7F_FFFF_FFFF));
                        have_l3 = true;
                    }
                    l3 = if count == 0 { idx(v_start, 30) } else { 0 };
                }
                l3 += 1;
            }
            l2 += 1;
        }
        l1 += 1;
    }
    out
}

/// libxenguest's `count_pgtables` for one mapping: level-sorted.
fn xen_domu_order(from: u64, to_incl: u64) -> Vec<(PtLevel, u64)> {
    let mut out = vec![(L4, 0)];
    for (level, bits) in [(L3, 39), (L2, 30), (L1, 21)] {
        let mask = (1u64 << bits) - 1;
        let mut t = (from & VA_MASK) & !mask;
        while t <= ((to_incl & VA_MASK) | mask) {
            out.push((level, canonical(t)));
            t += mask + 1;
        }
    }
    out
}

/// An image whose region starts at `vb` (kernel 1 MiB in, `kernel` bytes long).
fn at(vb: u64, kernel: u64) -> Spec {
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, vb))
        .without_note(XenElfNote::HypercallPage);
    s.segs = vec![Seg {
        vaddr: vb + 0x10_0000,
        paddr: 0x10_0000,
        filesz: kernel.min(0x9000),
        memsz: kernel,
    }];
    s.entry = vb + 0x10_0000;
    s
}

#[test]
fn table_order_matches_xen_loops() {
    let bases = [
        0,
        0x3FE0_0000,    // 2 MiB below 1 GiB: crosses an L2 boundary
        0x7F_FFE0_0000, // 2 MiB below 512 GiB: crosses an L3 boundary
        0x7F_BFE0_0000, // and a 1 GiB one elsewhere
        0xFFFF_FFFF_8000_0000,
        0xFFFF_8800_0000_0000,
        0x3FF0_0000, // not 2 MiB aligned
        0x12_3000,   // only page-aligned
    ];
    let mut checked = 0;
    for &vb in &bases {
        for kernel in [
            0x1000,
            0x11000,
            0x23_8000,
            0x90_0000,
            0x4000_0000 - 0x20_0000,
        ] {
            for flavour in [Flavour::DomU, Flavour::Dom0] {
                let l = layout_of(&at(vb, kernel), 1 << 20, flavour, 0).unwrap();
                let got: Vec<_> = l.page_table_frames().map(|f| (f.level, f.va)).collect();
                let want = match flavour {
                    Flavour::Dom0 => xen_dom0_walk(vb, l.region_end()),
                    Flavour::DomU => xen_domu_order(vb, l.region_end() - 1),
                };
                assert_eq!(got, want, "{flavour:?} vb {vb:#x} kernel {kernel:#x}");
                assert_eq!(got.len() as u64, l.nr_pt_frames());
                checked += got.len();
                // PFNs are consecutive from pt_base and the lookups agree.
                for (i, f) in l.page_table_frames().enumerate() {
                    assert_eq!(f.pfn.0, l.page_tables().pfn.0 + i as u64);
                    assert_eq!(l.table_for(f.level, f.va), Some(f.pfn), "{f:?}");
                }
            }
        }
    }
    // The 1 GiB kernels need over 500 L1s each.
    assert!(checked > 8 * 2 * 500, "{checked}");
}

/// The two table-count searches, on the same allocation end, agree with a direct
/// statement of the rule: the smallest 4 MiB-aligned end leaving 512 KiB after the
/// stack, for a table count that covers it.
#[test]
fn table_count_rules() {
    for vb in [0u64, 0x3FE0_0000, 0xFFFF_FFFF_8000_0000] {
        for pages in (0x100u64..0x2400).step_by(7) {
            let alloc_end = vb + pages * 4096;
            let (nu, eu) = domu_tables(vb, alloc_end).unwrap();
            let (n0, e0) = dom0_tables(vb, alloc_end).unwrap();
            for (n, e) in [(nu, eu), (n0, e0)] {
                assert_eq!(e % REGION_ALIGN, 0);
                assert!(alloc_end + (n + 1) * 4096 + MIN_SLACK <= e);
                let need = MainTables::new(Flavour::DomU, 0, masked(vb), masked(e - 1)).count();
                assert_eq!(n, need);
            }
            assert_eq!((nu, eu), (n0, e0), "alloc_end {alloc_end:#x}");
        }
    }
}

#[test]
fn trimming() {
    let s = |first, last| Slots { first, last };
    assert_eq!(s(2, 5).without(s(0, 1)), Some(s(2, 5)));
    assert_eq!(s(2, 5).without(s(5, 9)), Some(s(2, 4)));
    assert_eq!(s(2, 5).without(s(0, 2)), Some(s(3, 5)));
    assert_eq!(s(2, 5).without(s(0, 9)), None);
    assert_eq!(s(0, 0).without(s(0, 3)), None);
    assert_eq!(s(0, 3).without(s(3, 3)), Some(s(0, 2)));
}
