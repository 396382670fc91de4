//! Tests of the builder over a `Vec`-backed memory: the page tables are walked like a
//! CPU would, from CR3.

use std::collections::{BTreeMap, BTreeSet};
use std::vec;
use std::vec::Vec;

use hypercall_abi::elfnote::XenElfNote;
use hypercall_abi::xen::pte::PTE_ADDR_MASK;
use proptest::prelude::*;
use zerocopy::FromBytes;

use super::*;
use crate::elf::Elf;
use crate::layout::LayoutError;
use crate::notes::NoteError;
use crate::testimg::{POISON, Seg, Spec, VecMem, num_note, seg_byte, shown};

const SHARED_INFO: MachineAddr = MachineAddr(0xABC_D000);

fn params<'a>(module: Option<&'a [u8]>, cmdline: &'a [u8]) -> BuildParams<'a> {
    BuildParams {
        shared_info: SHARED_INFO,
        module,
        cmdline,
        store_evtchn: EvtchnPort(1),
        console_evtchn: EvtchnPort(2),
        extra_flags: SifFlags::empty(),
    }
}

struct Built {
    mem: VecMem,
    dom: BuiltDomain,
    layout: Layout,
    bytes: Vec<u8>,
}

fn run(spec: &Spec, nr_pages: u64, flavour: Flavour, module: Option<&[u8]>) -> Built {
    let bytes = spec.build();
    let elf = Elf::parse(&bytes).unwrap();
    let info = XenImageInfo::parse(&elf).unwrap();
    let len = module.map_or(0, |m| m.len() as u64);
    let layout = Layout::compute(&info, nr_pages, flavour, len).unwrap();
    let mut mem = VecMem::new(nr_pages, 0x1234_5678);
    let dom = build(
        &elf,
        &info,
        &layout,
        &mut mem,
        &params(module, b"console=hvc0 quiet"),
    )
    .unwrap();
    Built {
        mem,
        dom,
        layout,
        bytes,
    }
}

/// What a CPU sees from CR3: every mapped page (VA -> MFN, L1 flags) and every table
/// (MFN -> level). Checks the upper-level flags and the hypervisor's L4 slots on the
/// way.
struct Walk {
    pages: BTreeMap<u64, (u64, u64)>,
    tables: BTreeMap<u64, PtLevel>,
}

fn walk(mem: &VecMem, cr3: Mfn) -> Walk {
    let mut w = Walk {
        pages: BTreeMap::new(),
        tables: BTreeMap::new(),
    };
    visit(mem, cr3.0, PtLevel::L4, 0, &mut w);
    w
}

fn visit(mem: &VecMem, mfn: u64, level: PtLevel, base: u64, w: &mut Walk) {
    assert!(
        w.tables.insert(mfn, level).is_none(),
        "table {mfn:#x} reached twice"
    );
    let frame = mem.frame_of_mfn(mfn).expect("table outside the domain");
    for (i, e) in frame.chunks_exact(8).enumerate() {
        let i = i as u64;
        let e = u64::from_le_bytes(e.try_into().unwrap());
        if e & 1 == 0 {
            assert_eq!(e, 0, "non-present entry with bits");
            continue;
        }
        if level == PtLevel::L4 {
            assert!(!(256..=271).contains(&i), "L4 slot {i} is the hypervisor's");
        }
        let mut va = base + (i << level.entry_shift());
        if level == PtLevel::L4 && i >= 256 {
            va |= 0xFFFF_0000_0000_0000;
        }
        let child = (e & PTE_ADDR_MASK) >> 12;
        let flags = e & !PTE_ADDR_MASK;
        match level.below() {
            Some(lower) => {
                assert_eq!(flags, UPPER_FLAGS.bits(), "{level:?} entry {i} of {mfn:#x}");
                visit(mem, child, lower, va, w);
            }
            None => {
                assert!(w.pages.insert(va, (child, flags)).is_none());
            }
        }
    }
}

/// The mapping the layout promises, per page.
fn expected_pages(b: &Built) -> BTreeMap<u64, (u64, u64)> {
    let l = &b.layout;
    let mut m = BTreeMap::new();
    for pfn in 0..l.region_pages() {
        let p = Pfn(pfn);
        let leaf = Leaf::Region {
            pfn: p,
            page_table: l.page_tables().contains(p),
        };
        m.insert(
            l.virt_base() + pfn * 4096,
            (b.mem.mfn_of(pfn), l1_flags(l.flavour(), leaf).bits()),
        );
    }
    if !l.p2m_in_region() {
        let p2m = l.p2m();
        for j in 0..p2m.pages {
            let pfn = Pfn(p2m.pfn.0 + j);
            m.insert(
                p2m.va.unwrap() + j * 4096,
                (
                    b.mem.mfn_of(pfn.0),
                    l1_flags(l.flavour(), Leaf::P2m(pfn)).bits(),
                ),
            );
        }
    }
    m
}

fn check_tables(b: &Built) {
    let w = walk(&b.mem, b.dom.cr3_mfn);
    assert_eq!(w.pages, expected_pages(b));
    let walked: BTreeSet<(u64, PtLevel)> = w
        .tables
        .iter()
        .map(|(&mfn, &lvl)| (b.mem.pfn_of_mfn(mfn).unwrap(), lvl))
        .collect();
    let listed: BTreeSet<(u64, PtLevel)> =
        b.dom.page_tables().map(|f| (f.pfn.0, f.level)).collect();
    assert_eq!(walked, listed);
    assert_eq!(b.dom.l4_pfn, b.layout.page_tables().pfn);
    assert_eq!(b.dom.cr3_mfn.0, b.mem.mfn_of(b.dom.l4_pfn.0));
}

fn start_info_of(b: &Built) -> StartInfo {
    let f = b.mem.frame(b.dom.start_info_pfn.0);
    StartInfo::read_from_bytes(&f[..size_of::<StartInfo>()]).unwrap()
}

fn check_p2m(b: &Built) {
    let p2m = b.layout.p2m();
    let n = b.layout.nr_pages();
    for pfn in 0..p2m.pages * 512 {
        let e = b.mem.u64_at(p2m.pfn.0 + pfn / 512, (pfn % 512) as usize);
        let want = if pfn < n { b.mem.mfn_of(pfn) } else { 0 };
        assert_eq!(e, want, "P2M entry {pfn:#x}");
    }
}

fn check_kernel(b: &Built, spec: &Spec) {
    let l = &b.layout;
    let (kstart, _) = l.kernel_range();
    let pstart = spec.segs.iter().map(|s| s.paddr).min().unwrap();
    let hcall = l.hypercall_page().map(|p| p.0 * 4096);
    for (k, s) in spec.segs.iter().enumerate() {
        let dest = kstart - l.virt_base() + (s.paddr - pstart);
        for i in 0..s.memsz {
            let a = dest + i;
            if hcall.is_some_and(|h| a >= h && a < h + 4096) {
                continue;
            }
            let want = if i < s.filesz { seg_byte(k, i) } else { 0 };
            assert_eq!(b.mem.byte(a), want, "segment {k} byte {i:#x}");
        }
    }
    if let Some(h) = l.hypercall_page() {
        assert_eq!(b.mem.frame(h.0), &hypercall_page_image()[..]);
        assert_eq!(b.dom.hypercall_page_pfn, Some(h));
    }
}

fn assert_zero(b: &Built, pfn: u64) {
    assert!(
        b.mem.frame(pfn).iter().all(|&x| x == 0),
        "frame {pfn:#x} not zero"
    );
}

#[test]
fn small_domu() {
    let spec = Spec::small();
    let b = run(&spec, 32768, Flavour::DomU, None);
    check_tables(&b);
    check_p2m(&b);
    check_kernel(&b, &spec);

    let d = &b.dom;
    assert_eq!((d.rip, d.rsp, d.rsi), (0x10_0000, 0x15_A000, 0x15_1000));
    assert_eq!((d.kernel_ss, d.kernel_sp), (FLAT_KERNEL_SS, 0x15_A000));
    assert_eq!(d.start_info_pfn, Pfn(0x151));
    assert_eq!(d.xenstore, Some((Pfn(0x152), Mfn(b.mem.mfn_of(0x152)))));
    assert_eq!(d.console, Some((Pfn(0x153), Mfn(b.mem.mfn_of(0x153)))));
    assert_eq!(
        d.page_tables()
            .map(|f| (f.pfn.0, f.level))
            .collect::<Vec<_>>(),
        [
            (0x154, PtLevel::L4),
            (0x155, PtLevel::L3),
            (0x156, PtLevel::L2),
            (0x157, PtLevel::L1),
            (0x158, PtLevel::L1),
        ]
    );

    let si = start_info_of(&b);
    assert_eq!(&si.magic[..15], b"xen-3.0-x86_64\0");
    assert!(si.magic[14..].iter().all(|&x| x == 0));
    assert_eq!(si.nr_pages, 32768);
    assert_eq!(si.shared_info, SHARED_INFO);
    assert_eq!(si.flags, 0);
    assert_eq!(si.store_mfn, Mfn(b.mem.mfn_of(0x152)));
    assert_eq!(si.store_evtchn, EvtchnPort(1));
    assert_eq!(si.console.mfn, Mfn(b.mem.mfn_of(0x153)));
    assert_eq!(si.console.evtchn, EvtchnPort(2));
    assert_eq!((si.pt_base, si.nr_pt_frames), (0x15_4000, 5));
    assert_eq!(si.mfn_list.addr(), 0x11_1000);
    assert_eq!((si.mod_start, si.mod_len), (0, 0));
    assert_eq!(&si.cmd_line[..19], b"console=hvc0 quiet\0");
    assert!(si.cmd_line[18..].iter().all(|&x| x == 0));
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0, 0));

    // The exact entry values of the digest's §3.3.
    let l1 = b.mem.frame(0x157);
    let e = |f: &[u8], i: usize| u64::from_le_bytes(f[i * 8..i * 8 + 8].try_into().unwrap());
    assert_eq!(e(l1, 0x100), b.mem.mfn_of(0x100) << 12 | 0x23);
    assert_eq!(e(l1, 0x154), b.mem.mfn_of(0x154) << 12 | 0x21);
    assert_eq!(e(b.mem.frame(0x154), 0), b.mem.mfn_of(0x155) << 12 | 0x67);

    // Everything else in the region is zero; frames after it are untouched.
    for pfn in (0..0x100).chain(0x152..0x154).chain(0x159..0x400) {
        assert_zero(&b, pfn);
    }
    for pfn in [0x400, 0x1000, 32767] {
        assert!(b.mem.frame(pfn).iter().all(|&x| x == POISON));
    }
}

#[test]
fn small_dom0() {
    let spec = Spec::small();
    let b = run(&spec, 32768, Flavour::Dom0, None);
    check_tables(&b);
    check_p2m(&b);
    check_kernel(&b, &spec);
    let d = &b.dom;
    assert_eq!((d.rip, d.rsp, d.rsi), (0x10_0000, 0x15_8000, 0x15_1000));
    assert_eq!((d.kernel_ss, d.kernel_sp), (0, 0));
    assert_eq!((d.xenstore, d.console), (None, None));

    let si = start_info_of(&b);
    // dom0_construct_pv: "xen-3.0-x86_%d%s" with "p" for an image with a PAE note.
    assert_eq!(&si.magic[..16], b"xen-3.0-x86_64p\0");
    assert_eq!(
        si.flags,
        (SifFlags::PRIVILEGED | SifFlags::INITDOMAIN).bits()
    );
    assert_eq!((si.store_mfn, si.console.mfn), (Mfn(0), Mfn(0)));
    assert_eq!((si.pt_base, si.nr_pt_frames), (0x15_2000, 5));
    assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0x400, 0));

    let l1 = b.mem.frame(0x153);
    let e = u64::from_le_bytes(l1[0x100 * 8..0x100 * 8 + 8].try_into().unwrap());
    assert_eq!(e, b.mem.mfn_of(0x100) << 12 | 1 << 52 | 0x27);
    let e = u64::from_le_bytes(l1[0x152 * 8..0x152 * 8 + 8].try_into().unwrap());
    assert_eq!(e, b.mem.mfn_of(0x152) << 12 | 1 << 52 | 0x25);

    // Without a PAE note the magic is plain.
    let spec = Spec::small().without_note(XenElfNote::PaeMode);
    let b = run(&spec, 32768, Flavour::Dom0, None);
    assert_eq!(&start_info_of(&b).magic[..15], b"xen-3.0-x86_64\0");
}

#[test]
fn high_virt_base_and_init_p2m() {
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        let spec = Spec::high();
        let b = run(&spec, 32768, flavour, None);
        check_tables(&b);
        check_p2m(&b);
        check_kernel(&b, &spec);
        assert_eq!(b.dom.rip, 0xffff_ffff_8020_0000);

        let spec = Spec::high().with_note(num_note(XenElfNote::InitP2m, 0x80_0000_0000));
        let b = run(&spec, 32768, flavour, None);
        check_tables(&b);
        check_p2m(&b);
        check_kernel(&b, &spec);
        let si = start_info_of(&b);
        assert_eq!(si.mfn_list.addr(), 0x80_0000_0000);
        assert_eq!((si.first_p2m_pfn, si.nr_p2m_frames), (0x400, 0x43));
        if flavour == Flavour::Dom0 {
            // setup_pv_physmap maps the list with D set.
            let w = walk(&b.mem, b.dom.cr3_mfn);
            let (_, flags) = w.pages[&0x80_0000_0000];
            assert_eq!(flags, 1 << 52 | 0x67);
        }
    }
}

#[test]
fn init_p2m_sharing_an_l1() {
    let vb = 0x68_0000u64;
    let mut s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, vb))
        .with_note(num_note(XenElfNote::PaddrOffset, vb))
        .with_note(num_note(XenElfNote::InitP2m, 0x60_0000))
        .with_note(num_note(XenElfNote::HypercallPage, vb + 0x10_6000));
    s.segs[0].vaddr = vb + 0x10_0000;
    s.segs[0].paddr = vb + 0x10_0000;
    s.entry = vb + 0x10_0000;
    let b = run(&s, 32768, Flavour::DomU, None);
    check_tables(&b);
    check_p2m(&b);
    check_kernel(&b, &s);
}

#[test]
fn modules() {
    let module: Vec<u8> = (0..0x2345u32).map(|i| (i % 253) as u8 + 1).collect();
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        // Mapped after the kernel.
        let b = run(&Spec::small(), 32768, flavour, Some(&module));
        check_tables(&b);
        check_p2m(&b);
        let m = b.layout.module().unwrap();
        for (i, &x) in module.iter().enumerate() {
            assert_eq!(b.mem.byte(m.extent.pfn.0 * 4096 + i as u64), x);
        }
        for i in module.len() as u64..m.extent.pages * 4096 {
            assert_eq!(b.mem.byte(m.extent.pfn.0 * 4096 + i), 0);
        }
        let si = start_info_of(&b);
        assert_eq!(si.mod_start, 0x11_1000);
        let want_len = match flavour {
            Flavour::Dom0 => 0x2345,
            Flavour::DomU => 0x3000,
        };
        assert_eq!(si.mod_len, want_len);
        assert_eq!(si.flags & SifFlags::MOD_START_PFN.bits(), 0);

        // Unmapped, after the region.
        let spec = Spec::small().with_note(num_note(XenElfNote::ModStartPfn, 1));
        let b = run(&spec, 32768, flavour, Some(&module));
        check_tables(&b);
        let si = start_info_of(&b);
        assert_eq!(si.mod_start, 0x400);
        assert_ne!(si.flags & SifFlags::MOD_START_PFN.bits(), 0);
        for (i, &x) in module.iter().enumerate() {
            assert_eq!(b.mem.byte(0x400 * 4096 + i as u64), x);
        }
        for i in module.len() as u64..0x3000 {
            assert_eq!(b.mem.byte(0x400 * 4096 + i), 0);
        }
        assert!(b.mem.frame(0x403).iter().all(|&x| x == POISON));
    }
}

/// Segments with a gap, and a bss that runs over an earlier segment's bytes (libelf
/// copies in order, so those bytes end up zero).
#[test]
fn segments_in_order() {
    let mut spec = Spec::small();
    spec.segs = vec![
        Seg {
            vaddr: 0x10_0000,
            paddr: 0x10_0000,
            filesz: 0x3800,
            memsz: 0x3800,
        },
        Seg {
            vaddr: 0x10_5000,
            paddr: 0x10_5000,
            filesz: 0x2000,
            memsz: 0xC000,
        },
        Seg {
            vaddr: 0x10_1000,
            paddr: 0x10_1000,
            filesz: 0x800,
            memsz: 0x1800,
        },
    ];
    let bytes = spec.build();
    let elf = Elf::parse(&bytes).unwrap();
    let info = XenImageInfo::parse(&elf).unwrap();
    let layout = Layout::compute(&info, 32768, Flavour::DomU, 0).unwrap();
    let mut mem = VecMem::new(32768, 7);
    build(&elf, &info, &layout, &mut mem, &params(None, b"")).unwrap();
    let byte = |a: u64| mem.byte(a);
    // Segment 0 survives outside segment 2's range.
    assert_eq!(byte(0x10_0000), seg_byte(0, 0));
    assert_eq!(byte(0x10_2800), seg_byte(0, 0x2800));
    // Segment 2's file bytes, then its bss zeroing segment 0's bytes.
    assert_eq!(byte(0x10_1000), seg_byte(2, 0));
    assert_eq!(byte(0x10_17FF), seg_byte(2, 0x7FF));
    assert!((0x10_1800..0x10_2800).all(|a| byte(a) == 0));
    // The gap and the last page's tail are zero.
    assert!((0x10_3800..0x10_5000).all(|a| byte(a) == 0));
    assert!(
        (0x10_7000..0x11_1000)
            .filter(|a| a / 4096 != 0x106)
            .all(|a| byte(a) == 0)
    );
}

#[test]
fn errors() {
    let bytes = Spec::small().build();
    let elf = Elf::parse(&bytes).unwrap();
    let info = XenImageInfo::parse(&elf).unwrap();
    let layout = Layout::compute(&info, 32768, Flavour::DomU, 0).unwrap();
    let mut mem = VecMem::new(32768, 1);

    let long = vec![b'a'; MAX_GUEST_CMDLINE];
    assert_eq!(
        build(&elf, &info, &layout, &mut mem, &params(None, &long)).unwrap_err(),
        BuildError::CmdlineTooLong(MAX_GUEST_CMDLINE)
    );
    let fits = &long[..MAX_GUEST_CMDLINE - 1];
    let mut m2 = VecMem::new(32768, 1);
    let d = build(&elf, &info, &layout, &mut m2, &params(None, fits)).unwrap();
    let f = m2.frame(d.start_info_pfn.0);
    assert_eq!(&f[128..128 + 1023], fits);
    assert_eq!(f[128 + 1023], 0);
    assert_eq!(
        build(&elf, &info, &layout, &mut mem, &params(None, b"a\0b")).unwrap_err(),
        BuildError::CmdlineNul
    );
    assert_eq!(
        build(&elf, &info, &layout, &mut mem, &params(Some(b"x"), b"")).unwrap_err(),
        BuildError::ModuleLengthMismatch {
            layout: 0,
            given: 1
        }
    );

    // A layout for another image.
    let other = Spec::high().build();
    let oelf = Elf::parse(&other).unwrap();
    let oinfo = XenImageInfo::parse(&oelf).unwrap();
    let olayout = Layout::compute(&oinfo, 32768, Flavour::DomU, 0).unwrap();
    assert_eq!(
        build(&elf, &info, &olayout, &mut mem, &params(None, b"")).unwrap_err(),
        BuildError::LayoutMismatch
    );
    assert_eq!(
        build(&oelf, &info, &layout, &mut mem, &params(None, b"")).unwrap_err(),
        BuildError::LayoutMismatch
    );

    // Memory failures are reported with the frame.
    let mut bad = VecMem::new(32768, 1);
    bad.fail_on = Some(0x155);
    assert_eq!(
        build(&elf, &info, &layout, &mut bad, &params(None, b"")).unwrap_err(),
        BuildError::Mem {
            pfn: Pfn(0x155),
            error: MemError::Fault
        }
    );
    // A region frame without a machine frame...
    let mut holes = VecMem::new(32768, 1);
    holes.mfns[0x20] = None;
    assert_eq!(
        build(&elf, &info, &layout, &mut holes, &params(None, b"")).unwrap_err(),
        BuildError::Unpopulated(Pfn(0x20))
    );
    // ...and one outside it, which the P2M marks invalid.
    let mut holes = VecMem::new(32768, 1);
    holes.mfns[0x500] = None;
    build(&elf, &info, &layout, &mut holes, &params(None, b"")).unwrap();
    assert_eq!(
        holes.u64_at(0x111 + 0x500 / 512, 0x500 % 512),
        INVALID_P2M_ENTRY
    );

    for e in [
        BuildError::Mem {
            pfn: Pfn(1),
            error: MemError::NotPopulated,
        },
        BuildError::Mem {
            pfn: Pfn(1),
            error: MemError::OutOfRange,
        },
        BuildError::Unpopulated(Pfn(1)),
        BuildError::LayoutMismatch,
        BuildError::ModuleLengthMismatch {
            layout: 0,
            given: 1,
        },
        BuildError::CmdlineTooLong(2000),
        BuildError::CmdlineNul,
    ] {
        assert!(shown(e).len() > 10);
    }
}

#[test]
fn extra_flags_and_flag_values() {
    let bytes = Spec::small().build();
    let elf = Elf::parse(&bytes).unwrap();
    let info = XenImageInfo::parse(&elf).unwrap();
    let layout = Layout::compute(&info, 32768, Flavour::DomU, 0).unwrap();
    let mut mem = VecMem::new(32768, 3);
    let mut p = params(None, b"");
    p.extra_flags = SifFlags::VIRT_P2M_4TOOLS;
    let d = build(&elf, &info, &layout, &mut mem, &p).unwrap();
    let f = mem.frame(d.start_info_pfn.0);
    assert_eq!(u32::from_le_bytes(f[48..52].try_into().unwrap()), 1 << 4);

    assert_eq!(DOMU_L1_FLAGS.bits(), 0x23);
    assert_eq!(DOM0_L1_FLAGS.bits(), 0x0010_0000_0000_0027);
    assert_eq!(UPPER_FLAGS.bits(), 0x67);
    let pt = Leaf::Region {
        pfn: Pfn(0),
        page_table: true,
    };
    assert_eq!(l1_flags(Flavour::DomU, pt).bits(), 0x21);
    assert_eq!(l1_flags(Flavour::Dom0, pt).bits(), 0x0010_0000_0000_0025);
    assert_eq!(
        l1_flags(Flavour::Dom0, Leaf::P2m(Pfn(0))).bits(),
        0x0010_0000_0000_0067
    );
    assert_eq!(l1_flags(Flavour::DomU, Leaf::P2m(Pfn(0))).bits(), 0x23);
}

/// Either error of the pipeline, for the fuzz test.
#[derive(Debug)]
#[allow(dead_code)]
enum AnyError<'a> {
    Elf(crate::elf::ElfError),
    Note(NoteError<'a>),
    Layout(LayoutError),
    Build(BuildError),
}

fn pipeline(bytes: &[u8], flavour: Flavour, nr_pages: u64) -> Result<(), AnyError<'_>> {
    let elf = Elf::parse(bytes).map_err(AnyError::Elf)?;
    let info = XenImageInfo::parse(&elf).map_err(AnyError::Note)?;
    let layout = Layout::compute(&info, nr_pages, flavour, 0).map_err(AnyError::Layout)?;
    let mut mem = VecMem::new(nr_pages, 99);
    let dom =
        build(&elf, &info, &layout, &mut mem, &params(None, b"fuzz")).map_err(AnyError::Build)?;
    // Whatever was built is self-consistent.
    let b = Built {
        mem,
        dom,
        layout,
        bytes: Vec::new(),
    };
    check_tables(&b);
    check_p2m(&b);
    Ok(())
}

fn fuzz_base() -> Vec<u8> {
    Spec::small()
        .with_note(num_note(XenElfNote::InitP2m, 0x80_0000_0000))
        .build()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn truncated_images_never_panic(cut in 0usize..0x1200, dom0 in any::<bool>()) {
        let bytes = fuzz_base();
        let cut = cut.min(bytes.len());
        let flavour = if dom0 { Flavour::Dom0 } else { Flavour::DomU };
        let _ = pipeline(&bytes[..cut], flavour, 2048);
    }

    #[test]
    fn corrupted_images_never_panic(
        flips in proptest::collection::vec((0usize..0x400, 0u8..8), 1..6),
        dom0 in any::<bool>(),
        nr_pages in prop_oneof![Just(1100u64), Just(2048u64)],
    ) {
        let mut bytes = fuzz_base();
        for (at, bit) in flips {
            // The headers, program headers and notes live in the first 0x400 bytes.
            bytes[at] ^= 1 << bit;
        }
        let flavour = if dom0 { Flavour::Dom0 } else { Flavour::DomU };
        let _ = pipeline(&bytes, flavour, nr_pages);
    }
}

#[test]
fn the_fuzz_base_builds() {
    let bytes = fuzz_base();
    for flavour in [Flavour::DomU, Flavour::Dom0] {
        pipeline(&bytes, flavour, 2048).unwrap();
    }
    let b = run(&Spec::small(), 32768, Flavour::DomU, None);
    assert!(!b.bytes.is_empty());
}

/// Regions that start off 2 MiB (and 1 GiB) boundaries, and cross them.
#[test]
fn unaligned_virt_bases() {
    for vb in [0x12_3000u64, 0x3FF0_0000, 0x7F_FFF0_0000] {
        let mut spec = Spec::small()
            .with_note(num_note(XenElfNote::VirtBase, vb))
            .with_note(num_note(XenElfNote::HypercallPage, vb + 0x10_6000));
        spec.segs[0].vaddr = vb + 0x10_0000;
        spec.entry = vb + 0x10_0000;
        for flavour in [Flavour::DomU, Flavour::Dom0] {
            let b = run(&spec, 32768, flavour, None);
            check_tables(&b);
            check_p2m(&b);
            check_kernel(&b, &spec);
        }
    }
}
