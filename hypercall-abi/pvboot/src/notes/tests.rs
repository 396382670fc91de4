//! Tests of the note interpreter.

use std::vec::Vec;

use hypercall_abi::elfnote::XenElfNote;
use hypercall_abi::version::XenFeature;

use super::*;
use crate::elf::{Elf, ElfError};
use crate::testimg::{Spec, num_note, shown, str_note};

fn parse_spec(spec: &Spec) -> Result<(u64, u64, u64), NoteError<'static>> {
    let bytes: &'static [u8] = std::boxed::Box::leak(spec.build().into_boxed_slice());
    let elf = Elf::parse(bytes).unwrap();
    XenImageInfo::parse(&elf).map(|i| (i.kstart, i.kend, i.entry))
}

fn info_of(bytes: &[u8]) -> Result<XenImageInfo<'_>, NoteError<'_>> {
    let elf = Elf::parse(bytes).unwrap();
    XenImageInfo::parse(&elf)
}

#[test]
fn small_image() {
    let bytes = Spec::small().build();
    let i = info_of(&bytes).unwrap();
    assert_eq!(i.entry, 0x10_0000);
    assert_eq!(i.hypercall_page, Some(0x10_6000));
    assert_eq!((i.virt_base, i.paddr_offset, i.virt_offset), (0, 0, 0));
    assert_eq!((i.kstart, i.kend), (0x10_0000, 0x11_1000));
    assert_eq!(i.guest_os.as_bytes(), b"xtest");
    assert_eq!(i.guest_version.as_bytes(), b"0");
    assert_eq!(i.xen_version.to_str(), Some("xen-3.0"));
    assert_eq!(i.loader.as_bytes(), b"generic");
    assert_eq!(i.pae, PaeMode::Yes);
    assert_eq!(i.init_p2m, None);
    assert!(!i.mod_start_pfn && !i.bsd_symtab && !i.suspend_cancel);
    assert_eq!(i.l1_mfn_valid, None);
}

#[test]
fn real_guest_features_are_accepted() {
    let bytes = Spec::small().build();
    let f = info_of(&bytes).unwrap().features;
    assert!(f.supports(XenFeature::WritablePageTables));
    assert!(f.requires(XenFeature::WritablePageTables));
    assert!(f.supports(XenFeature::PaePgdirAbove4gb));
    assert!(!f.requires(XenFeature::PaePgdirAbove4gb));
    assert_eq!(f.supported, 0b1_0001);
    assert_eq!(f.required, 0b1);
    assert!(!f.supported_note);
}

fn with_features(s: &str) -> Spec {
    Spec::small().with_note(str_note(XenElfNote::Features, s))
}

#[test]
fn feature_rules() {
    // Unknown names are ignored, known ones collected, `!` adds to both maps.
    let bytes = with_features("frobnicate|dom0|!hvm_callback_vector||").build();
    let f = info_of(&bytes).unwrap().features;
    assert_eq!(
        f.supported,
        XenFeature::Dom0.bit() | XenFeature::HvmCallbackVector.bit()
    );
    assert_eq!(f.required, XenFeature::HvmCallbackVector.bit());

    // libelf knows seven names only: other XENFEAT names are unknown to it.
    let bytes = with_features("!gnttab_map_avail_bits").build();
    assert!(matches!(
        info_of(&bytes),
        Err(NoteError::UnknownRequiredFeature(n)) if n.as_bytes() == b"!gnttab_map_avail_bits"
    ));
    let bytes = with_features("!frobnicate").build();
    assert!(matches!(
        info_of(&bytes),
        Err(NoteError::UnknownRequiredFeature(_))
    ));
    for (s, f) in [
        (
            "!auto_translated_physmap",
            XenFeature::AutoTranslatedPhysmap,
        ),
        (
            "writable_page_tables|!supervisor_mode_kernel",
            XenFeature::SupervisorModeKernel,
        ),
    ] {
        let bytes = with_features(s).build();
        assert_eq!(
            info_of(&bytes).unwrap_err(),
            NoteError::UnsupportedRequiredFeature(f)
        );
    }
    // Supported but not required is fine.
    let bytes = with_features("auto_translated_physmap|supervisor_mode_kernel").build();
    assert!(info_of(&bytes).is_ok());
}

#[test]
fn long_feature_tokens_split_like_libelf() {
    // libelf reads at most 63 bytes per token; the rest is a token of its own.
    let mut s = std::string::String::new();
    s.extend(core::iter::repeat_n('x', 63));
    s.push_str("dom0");
    let bytes = with_features(&s).build();
    assert!(info_of(&bytes).unwrap().features.supports(XenFeature::Dom0));
}

#[test]
fn features_accumulate_and_supported_features() {
    let bytes = Spec::small()
        .with_note(str_note(XenElfNote::Features, "dom0"))
        .build();
    // with_note replaced the standard FEATURES note; add a second one by hand.
    let mut spec = Spec::small();
    spec.notes
        .push(str_note(XenElfNote::Features, "writable_descriptor_tables"));
    spec.notes.push((
        XenElfNote::SupportedFeatures as u32,
        (1u32 << 11 | 1 << 5).to_le_bytes().to_vec(),
    ));
    let b2 = spec.build();
    let f = info_of(&b2).unwrap().features;
    assert!(f.supported_note);
    assert!(f.supports(XenFeature::WritablePageTables));
    assert!(f.supports(XenFeature::WritableDescriptorTables));
    assert!(f.supports(XenFeature::Dom0));
    assert!(f.supports(XenFeature::MmuPtUpdatePreserveAd));
    assert!(info_of(&bytes).unwrap().features.supports(XenFeature::Dom0));
    // A SUPPORTED_FEATURES descriptor that is not whole words counts as 0.
    let b3 = Spec::small()
        .with_note((
            XenElfNote::SupportedFeatures as u32,
            Vec::from([0xFF, 0xFF, 0xFF]),
        ))
        .build();
    let f = info_of(&b3).unwrap().features;
    assert!(f.supported_note);
    assert_eq!(f.supported, 0b1_0001);
}

#[test]
fn loader_and_version_rules() {
    let s = Spec::small().with_note(str_note(XenElfNote::Loader, "generic-v2"));
    assert!(parse_spec(&s).is_ok());
    let s = Spec::small()
        .with_note(str_note(XenElfNote::Loader, "elf"))
        .with_note(str_note(XenElfNote::GuestOs, "linux-6.1"));
    assert!(parse_spec(&s).is_ok());
    let s = Spec::small().with_note(str_note(XenElfNote::Loader, "elf"));
    let e = parse_spec(&s).unwrap_err();
    assert!(matches!(e, NoteError::WrongLoader { .. }));
    assert!(shown(e).contains("\"elf\""));
    let s = Spec::small().without_note(XenElfNote::Loader);
    assert!(matches!(parse_spec(&s), Err(NoteError::WrongLoader { .. })));

    let s = Spec::small().with_note(str_note(XenElfNote::XenVersion, "xen-3.0-unstable"));
    assert!(parse_spec(&s).is_ok());
    let s = Spec::small().with_note(str_note(XenElfNote::XenVersion, "xen-4.17"));
    assert!(matches!(
        parse_spec(&s),
        Err(NoteError::WrongXenVersion(v)) if v.as_bytes() == b"xen-4.17"
    ));
    let s = Spec::small().without_note(XenElfNote::XenVersion);
    assert!(matches!(parse_spec(&s), Err(NoteError::WrongXenVersion(_))));
}

#[test]
fn no_notes_and_legacy_section() {
    let mut s = Spec::small();
    s.notes.clear();
    assert_eq!(parse_spec(&s).unwrap_err(), NoteError::NoXenNotes);
    s.xen_guest_section = true;
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::LegacyXenGuestSection
    );
}

#[test]
fn notes_in_a_section_are_used() {
    let mut s = Spec::small();
    s.notes_in_section = true;
    assert_eq!(parse_spec(&s).unwrap(), (0x10_0000, 0x11_1000, 0x10_0000));
}

#[test]
fn virt_base_and_paddr_offset() {
    let bytes = Spec::high().build();
    let i = info_of(&bytes).unwrap();
    let vb = 0xffff_ffff_8000_0000;
    assert_eq!((i.virt_base, i.paddr_offset, i.virt_offset), (vb, 0, vb));
    assert_eq!((i.kstart, i.kend), (vb + 0x20_0000, vb + 0x28_0000));

    // Old-style: p_paddr = p_vaddr and PADDR_OFFSET = VIRT_BASE.
    let mut s = Spec::high().with_note(num_note(XenElfNote::PaddrOffset, vb));
    s.segs[0].paddr = s.segs[0].vaddr;
    let bytes = s.build();
    let i = info_of(&bytes).unwrap();
    assert_eq!(i.virt_offset, 0);
    assert_eq!((i.kstart, i.kend), (vb + 0x20_0000, vb + 0x28_0000));

    let s = Spec::small().with_note(num_note(XenElfNote::PaddrOffset, 0));
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::PaddrOffsetWithoutVirtBase
    );
    let s = Spec::small().with_note(num_note(XenElfNote::VirtBase, 0x1000_0800));
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::VirtBaseUnaligned(0x1000_0800)
    );
    let s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, 0x20_0000))
        .with_note(num_note(XenElfNote::PaddrOffset, 0x20_0000));
    assert!(matches!(
        parse_spec(&s),
        Err(NoteError::VirtBaseAboveKernel { .. })
    ));
    // kstart + virt_offset wrapping below kend.
    let s = Spec::small()
        .with_note(num_note(XenElfNote::VirtBase, 0))
        .with_note(num_note(XenElfNote::PaddrOffset, 0x10_8000));
    assert!(matches!(
        parse_spec(&s),
        Err(NoteError::KernelRangeWraps { .. })
    ));
}

#[test]
fn entry_rules() {
    let s = Spec::small().with_note(num_note(XenElfNote::Entry, 0x10_0040));
    assert_eq!(parse_spec(&s).unwrap().2, 0x10_0040);
    // Xen's bound is inclusive at the top.
    let s = Spec::small().with_note(num_note(XenElfNote::Entry, 0x11_1000));
    assert!(parse_spec(&s).is_ok());
    for bad in [0xF_FFFF, 0x11_1001] {
        let s = Spec::small().with_note(num_note(XenElfNote::Entry, bad));
        assert!(matches!(
            parse_spec(&s),
            Err(NoteError::EntryOutsideKernel { entry, .. }) if entry == bad
        ));
    }
    let mut s = Spec::small();
    s.entry = 0x20_0000;
    assert!(matches!(
        parse_spec(&s),
        Err(NoteError::EntryOutsideKernel { .. })
    ));
}

#[test]
fn hypercall_page_rules() {
    let s = Spec::small().without_note(XenElfNote::HypercallPage);
    let bytes = s.build();
    assert_eq!(info_of(&bytes).unwrap().hypercall_page, None);
    let s = Spec::small().with_note(num_note(XenElfNote::HypercallPage, 0x10_6800));
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::HypercallPageUnaligned(0x10_6800)
    );
    for bad in [0xF_F000, 0x11_1000, 0x20_0000] {
        let s = Spec::small().with_note(num_note(XenElfNote::HypercallPage, bad));
        assert!(matches!(
            parse_spec(&s),
            Err(NoteError::HypercallPageOutsideKernel { va, .. }) if va == bad
        ));
    }
    // 4-byte numbers are numbers too.
    let s = Spec::small().with_note((
        XenElfNote::HypercallPage as u32,
        0x10_2000u32.to_le_bytes().to_vec(),
    ));
    let bytes = s.build();
    assert_eq!(info_of(&bytes).unwrap().hypercall_page, Some(0x10_2000));
}

#[test]
fn numeric_note_sizes() {
    let s = Spec::small().with_note((XenElfNote::HypercallPage as u32, Vec::from([0, 0x60, 0x10])));
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::BadNumericNote {
            note: XenElfNote::HypercallPage,
            size: 3
        }
    );
    let s = Spec::small().with_note((XenElfNote::VirtBase as u32, Vec::new()));
    assert!(matches!(
        parse_spec(&s),
        Err(NoteError::BadNumericNote { size: 0, .. })
    ));
}

#[test]
fn p2m_and_flags() {
    let bytes = Spec::small()
        .with_note(num_note(XenElfNote::InitP2m, 0x80_0000_0000))
        .with_note(num_note(XenElfNote::ModStartPfn, 1))
        .with_note(num_note(XenElfNote::SuspendCancel, 1))
        .with_note(str_note(XenElfNote::BsdSymtab, "yes"))
        .with_note((
            XenElfNote::L1MfnValid as u32,
            [1u64, 1, 0x80, 0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ))
        .build();
    let i = info_of(&bytes).unwrap();
    assert_eq!(i.init_p2m, Some(0x80_0000_0000));
    assert!(i.mod_start_pfn && i.suspend_cancel && i.bsd_symtab);
    let pairs: Vec<_> = i.l1_mfn_valid.unwrap().pairs().collect();
    assert_eq!(pairs, [(1, 1), (0x80, 0)]);

    let s = Spec::small().with_note(num_note(XenElfNote::InitP2m, 0x10_8000));
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::P2mInsideKernel(0x10_8000)
    );
}

#[test]
fn pae_mode_values() {
    for (v, want) in [
        ("yes", PaeMode::Yes),
        ("no", PaeMode::No),
        ("bimodal", PaeMode::Bimodal),
        ("yes,bimodal", PaeMode::Bimodal),
    ] {
        let bytes = Spec::small()
            .with_note(str_note(XenElfNote::PaeMode, v))
            .build();
        assert_eq!(info_of(&bytes).unwrap().pae, want, "{v}");
    }
}

#[test]
fn kernel_size_limit() {
    let mut s = Spec::small();
    s.segs[0].memsz = MAX_KERNEL_SPAN + 0x1000;
    assert_eq!(
        parse_spec(&s).unwrap_err(),
        NoteError::KernelTooLarge(MAX_KERNEL_SPAN + 0x1000)
    );
}

#[test]
fn thirty_two_bit_images_are_refused_by_the_parser() {
    let mut b = Spec::small().build();
    b[4] = 1;
    assert_eq!(Elf::parse(&b).unwrap_err(), ElfError::Not64Bit);
}

#[test]
fn every_error_displays() {
    let errors = [
        NoteError::NoXenNotes,
        NoteError::LegacyXenGuestSection,
        NoteError::WrongLoader {
            loader: NoteStr(b"\xff"),
            guest_os: NoteStr(b""),
        },
        NoteError::WrongXenVersion(NoteStr(b"x")),
        NoteError::BadNumericNote {
            note: XenElfNote::Entry,
            size: 3,
        },
        NoteError::PaddrOffsetWithoutVirtBase,
        NoteError::VirtBaseUnaligned(1),
        NoteError::KernelRangeWraps { kstart: 2, kend: 1 },
        NoteError::KernelTooLarge(1),
        NoteError::VirtBaseAboveKernel {
            virt_base: 1,
            kstart: 0,
        },
        NoteError::EntryOutsideKernel {
            entry: 0,
            kstart: 1,
            kend: 2,
        },
        NoteError::HypercallPageUnaligned(1),
        NoteError::HypercallPageOutsideKernel {
            va: 0,
            kstart: 1,
            kend: 2,
        },
        NoteError::P2mInsideKernel(1),
        NoteError::UnknownRequiredFeature(NoteStr(b"!x")),
        NoteError::UnsupportedRequiredFeature(XenFeature::AutoTranslatedPhysmap),
    ];
    for e in errors {
        assert!(shown(e).len() > 10, "{e:?}");
    }
    assert_eq!(shown(NoteStr(b"a\xffb")), "a\\xffb");
}
