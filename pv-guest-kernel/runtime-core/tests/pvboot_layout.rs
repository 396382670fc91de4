//! The runtime's reconstruction of the bootstrap region ([`BootLayout`]) against
//! the builders that make it (`pvboot`, both flavours), from 2 MiB domains (a
//! region ending 512 KiB past the stack) up to Xen's 4 MiB-aligned ones: the heap
//! is always mapped by the builder, free frames never are.

use hypercall_abi::xen::StartInfo;
use pv_runtime_core::layout::{BootLayout, MIN_SLACK, REGION_ALIGN};
use pvboot::elf::Elf;
use pvboot::testimg::Spec;
use pvboot::{Flavour, Layout, XenImageInfo};
use zerocopy::FromZeros;

const PAGE: u64 = 4096;

fn start_info(l: &Layout) -> StartInfo {
    let mut si = StartInfo::new_zeroed();
    si.nr_pages = l.nr_pages();
    si.pt_base = l.pt_base();
    si.nr_pt_frames = l.nr_pt_frames();
    si
}

#[test]
fn runtime_agrees_with_the_builders() {
    let mut small = 0;
    let mut xen = 0;
    // Kernels of 7 pages to 3.5 MiB, at 1 MiB (VIRT_BASE 0) and at 2 MiB past
    // VIRT_BASE 0xffffffff80000000, in domains of 1 to 12 MiB.
    for (base, kernel_pages) in [Spec::small, Spec::high]
        .into_iter()
        .flat_map(|f| (7u64..0x380).step_by(3).map(move |k| (f, k)))
    {
        let mut s = base();
        s.segs[0].memsz = kernel_pages * PAGE;
        s.segs[0].filesz = s.segs[0].filesz.min(s.segs[0].memsz);
        let bytes = s.build();
        let elf = Elf::parse(&bytes).unwrap();
        let info = XenImageInfo::parse(&elf).unwrap();
        for nr_pages in (256u64..3072).step_by(61) {
            for flavour in [Flavour::DomU, Flavour::Dom0] {
                let Ok(l) = Layout::compute(&info, nr_pages, flavour, 0) else {
                    continue;
                };
                let b = BootLayout::new(&start_info(&l), l.virt_base())
                    .unwrap_or_else(|e| panic!("{flavour:?} {kernel_pages} {nr_pages}: {e}"));
                let ctx = format!("{flavour:?} kernel {kernel_pages} pages, {nr_pages} pages");
                assert_eq!(b.boot_stack.end, l.rsp(), "{ctx}");
                // The heap is mapped, and at least 512 KiB.
                assert!(b.slack.end <= l.region_end(), "{ctx}");
                assert!(b.slack.len() >= MIN_SLACK, "{ctx}");
                // Free frames are not mapped.
                assert!(b.free_frames.start >= l.region_pages(), "{ctx}");
                assert_eq!(b.free_frames.end, nr_pages, "{ctx}");
                if l.region_end() % REGION_ALIGN != 0 {
                    // A small domain: nothing lost either way.
                    small += 1;
                    assert_eq!(b.slack.end, l.region_end(), "{ctx}");
                    assert_eq!(b.region.end, l.region_end(), "{ctx}");
                    assert_eq!(b.free_frames.start, l.region_pages(), "{ctx}");
                } else {
                    xen += 1;
                }
            }
        }
    }
    assert!(small > 1000 && xen > 1000, "small {small}, xen {xen}");
}
