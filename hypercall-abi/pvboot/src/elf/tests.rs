//! Tests of the ELF parser against small synthetic images.

extern crate std;

use super::*;
use proptest::prelude::*;
use std::string::ToString;
use std::vec;
use std::vec::Vec;

const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;

#[derive(Clone, Copy)]
struct Load {
    vaddr: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
    flags: u32,
}

#[derive(Clone, Copy, PartialEq)]
enum NotesIn {
    Nowhere,
    Segment,
    Section,
    Both,
}

/// A note blob in the standard layout: header, name + NUL padded to 4, desc padded to 4.
fn note_blob(notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    for &(name, ty, desc) in notes {
        b.extend_from_slice(&u32::try_from(name.len() + 1).unwrap().to_le_bytes());
        b.extend_from_slice(&u32::try_from(desc.len()).unwrap().to_le_bytes());
        b.extend_from_slice(&ty.to_le_bytes());
        b.extend_from_slice(name);
        b.push(0);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b.extend_from_slice(desc);
        while b.len() % 4 != 0 {
            b.push(0);
        }
    }
    b
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}
fn put16(b: &mut [u8], off: usize, v: u16) {
    put(b, off, &v.to_le_bytes());
}
fn put32(b: &mut [u8], off: usize, v: u32) {
    put(b, off, &v.to_le_bytes());
}
fn put64(b: &mut [u8], off: usize, v: u64) {
    put(b, off, &v.to_le_bytes());
}

/// Offset of field `field` of program header `i` in images built here.
fn ph(i: usize, field: usize) -> usize {
    64 + 56 * i + field
}

struct Image {
    bytes: Vec<u8>,
    /// Index of the PT_NOTE program header, if any.
    note_ph: Option<usize>,
    /// Offset of the section header table, if any.
    shoff: Option<usize>,
}

/// Builds: ELF header, program headers (loads, then the note segment), the note blob,
/// each load's file bytes (filled with its index), then section headers (null, note).
fn build(loads: &[Load], notes: &[u8], notes_in: NotesIn) -> Image {
    let seg = matches!(notes_in, NotesIn::Segment | NotesIn::Both);
    let sec = matches!(notes_in, NotesIn::Section | NotesIn::Both);
    let nph = loads.len() + usize::from(seg);
    let note_off = 64 + 56 * nph;
    let mut b = vec![0u8; note_off];
    b.extend_from_slice(notes);
    let mut load_offs = Vec::new();
    for (i, l) in loads.iter().enumerate() {
        while b.len() % 16 != 0 {
            b.push(0);
        }
        load_offs.push(b.len());
        b.extend(std::iter::repeat_n(
            u8::try_from(i).unwrap() + 1,
            usize::try_from(l.filesz).unwrap(),
        ));
    }
    while b.len() % 8 != 0 {
        b.push(0);
    }
    let shoff = b.len();
    if sec {
        b.extend_from_slice(&[0u8; 128]);
        put32(&mut b, shoff + 64 + 4, SHT_NOTE);
        put64(&mut b, shoff + 64 + 24, u64::try_from(note_off).unwrap());
        put64(&mut b, shoff + 64 + 32, u64::try_from(notes.len()).unwrap());
        put64(&mut b, shoff + 64 + 48, 4);
    }
    put(&mut b, 0, &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    put16(&mut b, 16, ET_EXEC);
    put16(&mut b, 18, EM_X86_64);
    put32(&mut b, 20, 1);
    put64(&mut b, 24, KERNEL_BASE + 0x1000);
    put64(&mut b, 32, 64);
    put64(
        &mut b,
        40,
        if sec {
            u64::try_from(shoff).unwrap()
        } else {
            0
        },
    );
    put16(&mut b, 52, 64);
    put16(&mut b, 54, 56);
    put16(&mut b, 56, u16::try_from(nph).unwrap());
    put16(&mut b, 58, 64);
    put16(&mut b, 60, if sec { 2 } else { 0 });
    for (i, l) in loads.iter().enumerate() {
        put32(&mut b, ph(i, 0), PT_LOAD);
        put32(&mut b, ph(i, 4), l.flags);
        put64(&mut b, ph(i, 8), u64::try_from(load_offs[i]).unwrap());
        put64(&mut b, ph(i, 16), l.vaddr);
        put64(&mut b, ph(i, 24), l.paddr);
        put64(&mut b, ph(i, 32), l.filesz);
        put64(&mut b, ph(i, 40), l.memsz);
        put64(&mut b, ph(i, 48), 0x1000);
    }
    let note_ph = seg.then_some(loads.len());
    if let Some(i) = note_ph {
        put32(&mut b, ph(i, 0), PT_NOTE);
        put32(&mut b, ph(i, 4), PF_R);
        put64(&mut b, ph(i, 8), u64::try_from(note_off).unwrap());
        put64(&mut b, ph(i, 32), u64::try_from(notes.len()).unwrap());
        put64(&mut b, ph(i, 40), u64::try_from(notes.len()).unwrap());
        put64(&mut b, ph(i, 48), 4);
    }
    Image {
        bytes: b,
        note_ph,
        shoff: sec.then_some(shoff),
    }
}

fn loads() -> Vec<Load> {
    vec![
        Load {
            vaddr: KERNEL_BASE,
            paddr: 0x20_0000,
            filesz: 0x30,
            memsz: 0x2000,
            flags: PF_R | PF_X,
        },
        Load {
            vaddr: KERNEL_BASE + 0x4000,
            paddr: 0x20_4000,
            filesz: 0x10,
            memsz: 0x10,
            flags: PF_R | PF_W,
        },
    ]
}

const BUILD_ID: [u8; 20] = [7; 20];

fn xen_notes() -> Vec<u8> {
    note_blob(&[
        (b"Xen", 6, b"linux\0"),
        (b"Xen", 1, &(KERNEL_BASE + 0x1000).to_le_bytes()),
        (b"GNU", 3, &BUILD_ID),
        (b"Xen", 10, b""),
    ])
}

fn valid(notes_in: NotesIn) -> Image {
    build(&loads(), &xen_notes(), notes_in)
}

fn check_xen_notes(elf: &Elf<'_>) {
    let notes: Vec<_> = elf.notes().collect();
    assert_eq!(notes.len(), 4);
    assert_eq!(
        notes[0],
        Note {
            name: b"Xen",
            n_type: 6,
            desc: b"linux\0"
        }
    );
    assert_eq!(notes[1].desc, (KERNEL_BASE + 0x1000).to_le_bytes());
    assert_eq!(
        (notes[2].name, notes[2].n_type, notes[2].desc),
        (&b"GNU"[..], 3, &BUILD_ID[..])
    );
    assert_eq!(
        (notes[3].name, notes[3].n_type, notes[3].desc),
        (&b"Xen"[..], 10, &b""[..])
    );
}

#[test]
fn valid_image_parses() {
    let img = valid(NotesIn::Segment);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.entry(), KERNEL_BASE + 0x1000);
    assert_eq!(elf.program_header_count(), 3);
    assert_eq!(elf.program_headers().len(), 3);
    assert_eq!(
        elf.load_span(),
        Span {
            start: KERNEL_BASE,
            end: KERNEL_BASE + 0x4010
        }
    );
    assert_eq!(
        elf.load_paddr_span(),
        Span {
            start: 0x20_0000,
            end: 0x20_4010
        }
    );
    let phs: Vec<_> = elf.program_headers().collect();
    assert!(phs[0].is_loadable() && phs[1].is_loadable() && !phs[2].is_loadable());
    assert_eq!(elf.segment_data(&phs[0]).unwrap(), &[1u8; 0x30][..]);
    assert_eq!(elf.segment_data(&phs[1]).unwrap(), &[2u8; 0x10][..]);
    assert_eq!(elf.note_source(), NoteSource::ProgramHeaders);
    check_xen_notes(&elf);
}

#[test]
fn section_notes_are_the_fallback() {
    let img = valid(NotesIn::Section);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::SectionHeaders);
    check_xen_notes(&elf);

    // Both present: the segments win.
    let elf_bytes = valid(NotesIn::Both).bytes;
    let elf = Elf::parse(&elf_bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::ProgramHeaders);
    check_xen_notes(&elf);
}

#[test]
fn pt_note_at_offset_zero_is_skipped() {
    let mut img = valid(NotesIn::Both);
    let i = img.note_ph.unwrap();
    put64(&mut img.bytes, ph(i, 8), 0);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::SectionHeaders);
    check_xen_notes(&elf);

    // Without sections, there are no notes at all.
    let mut img = valid(NotesIn::Segment);
    put64(&mut img.bytes, ph(img.note_ph.unwrap(), 8), 0);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::None);
    assert_eq!(elf.notes().count(), 0);
}

#[test]
fn sections_win_only_with_xen_notes() {
    // Segments hold only a GNU note; sections hold Xen notes: Xen uses the sections.
    let gnu = note_blob(&[(b"GNU", 3, &BUILD_ID)]);
    let mut img = build(&loads(), &gnu, NotesIn::Segment);
    let seg_notes = img.bytes.len();
    let xen = xen_notes();
    img.bytes.extend_from_slice(&xen);
    let shoff = img.bytes.len();
    img.bytes.extend_from_slice(&[0u8; 128]);
    put32(&mut img.bytes, shoff + 64 + 4, SHT_NOTE);
    put64(
        &mut img.bytes,
        shoff + 64 + 24,
        u64::try_from(seg_notes).unwrap(),
    );
    put64(
        &mut img.bytes,
        shoff + 64 + 32,
        u64::try_from(xen.len()).unwrap(),
    );
    put64(&mut img.bytes, 40, u64::try_from(shoff).unwrap());
    put16(&mut img.bytes, 60, 2);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::SectionHeaders);
    check_xen_notes(&elf);

    // Both hold only non-Xen notes: the segments' notes are kept.
    let img = build(&loads(), &gnu, NotesIn::Both);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::ProgramHeaders);
    assert_eq!(elf.notes().count(), 1);
}

#[test]
fn images_without_notes() {
    let img = build(&loads(), &[], NotesIn::Nowhere);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.note_source(), NoteSource::None);
    assert_eq!(elf.notes().count(), 0);
    // An empty note segment, then empty note sections: still nothing.
    let img = build(&loads(), &[], NotesIn::Both);
    assert_eq!(Elf::parse(&img.bytes).unwrap().notes().count(), 0);
}

#[test]
fn note_padding_rules() {
    // Trailing zero padding shorter than a note header is fine.
    let mut notes = xen_notes();
    notes.extend_from_slice(&[0; 8]);
    let img = build(&loads(), &notes, NotesIn::Segment);
    check_xen_notes(&Elf::parse(&img.bytes).unwrap());
    // Trailing junk is not.
    let mut notes = xen_notes();
    notes.extend_from_slice(&[1, 0, 0]);
    let img = build(&loads(), &notes, NotesIn::Segment);
    let note_off = 64 + 56 * 3;
    assert_eq!(
        Elf::parse(&img.bytes).err(),
        Some(ElfError::MalformedNote {
            area: NoteArea::Segment(2),
            offset: u64::try_from(note_off + xen_notes().len()).unwrap(),
        })
    );
    // The last note's description may lack its padding.
    let notes = note_blob(&[(b"Xen", 6, b"linux")]);
    let img = build(&loads(), &notes[..notes.len() - 3], NotesIn::Segment);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(elf.notes().next().unwrap().desc, b"linux");
    // A zero-sized name.
    let mut n = vec![0u8; 12];
    n[8] = 5;
    let img = build(&loads(), &n, NotesIn::Segment);
    let elf = Elf::parse(&img.bytes).unwrap();
    assert_eq!(
        elf.notes().next(),
        Some(Note {
            name: b"",
            n_type: 5,
            desc: b""
        })
    );
}

fn err(bytes: &[u8]) -> ElfError {
    Elf::parse(bytes).unwrap_err()
}

fn patched(f: impl FnOnce(&mut Image)) -> ElfError {
    let mut img = valid(NotesIn::Both);
    f(&mut img);
    err(&img.bytes)
}

#[test]
fn identification_errors() {
    let good = valid(NotesIn::Segment).bytes;
    assert_eq!(err(&[]), ElfError::TooShort { len: 0 });
    assert_eq!(err(b"\x7fEL"), ElfError::TooShort { len: 3 });
    assert_eq!(err(b"MZ\x90\x00 not elf"), ElfError::BadMagic);
    assert_eq!(err(&good[..5]), ElfError::TooShort { len: 5 });
    assert_eq!(err(&good[..40]), ElfError::TooShort { len: 40 });
    assert_eq!(patched(|i| i.bytes[4] = 1), ElfError::Not64Bit);
    assert_eq!(patched(|i| i.bytes[4] = 9), ElfError::BadClass(9));
    assert_eq!(patched(|i| i.bytes[5] = 2), ElfError::BigEndian);
    assert_eq!(patched(|i| i.bytes[5] = 0), ElfError::BadDataEncoding(0));
    assert_eq!(patched(|i| i.bytes[6] = 0), ElfError::BadVersion(0));
    assert_eq!(
        patched(|i| put32(&mut i.bytes, 20, 2)),
        ElfError::BadVersion(2)
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 18, 40)),
        ElfError::WrongMachine(40)
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 16, ET_DYN)),
        ElfError::NotExecutable(3)
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 16, 1)),
        ElfError::NotExecutable(1)
    );
}

#[test]
fn header_table_errors() {
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 54, 32)),
        ElfError::BadProgramHeaderSize(32)
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 56, 65)),
        ElfError::TooManyProgramHeaders(65)
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 56, 0)),
        ElfError::NoLoadSegment
    );
    let len = valid(NotesIn::Both).bytes.len();
    assert_eq!(
        patched(|i| put64(&mut i.bytes, 32, u64::MAX - 8)),
        ElfError::ProgramHeadersOutOfBounds {
            offset: u64::MAX - 8,
            size: 168,
            len
        }
    );
    assert_eq!(
        patched(|i| put64(&mut i.bytes, 32, u64::try_from(len).unwrap() - 100)),
        ElfError::ProgramHeadersOutOfBounds {
            offset: u64::try_from(len).unwrap() - 100,
            size: 168,
            len
        }
    );
    assert_eq!(
        patched(|i| put16(&mut i.bytes, 58, 40)),
        ElfError::BadSectionHeaderSize(40)
    );
    assert_eq!(
        patched(|i| put64(&mut i.bytes, 40, u64::try_from(len).unwrap())),
        ElfError::SectionHeadersOutOfBounds {
            offset: u64::try_from(len).unwrap(),
            size: 128,
            len
        }
    );
    // With no sections, e_shoff and e_shentsize do not matter.
    let mut img = valid(NotesIn::Segment);
    put64(&mut img.bytes, 40, u64::MAX);
    put16(&mut img.bytes, 58, 0);
    assert!(Elf::parse(&img.bytes).is_ok());
}

#[test]
fn segment_errors() {
    let len = valid(NotesIn::Both).bytes.len();
    assert_eq!(
        patched(|i| put64(&mut i.bytes, ph(1, 32), 0x10_0000)),
        ElfError::SegmentOutOfBounds {
            index: 1,
            offset: segment_offset(1),
            size: 0x10_0000,
            len
        }
    );
    assert!(matches!(
        patched(|i| put64(&mut i.bytes, ph(0, 8), u64::MAX)),
        ElfError::SegmentOutOfBounds { index: 0, .. }
    ));
    assert_eq!(
        patched(|i| put64(&mut i.bytes, ph(1, 40), 0x8)),
        ElfError::FileSizeExceedsMemSize {
            index: 1,
            filesz: 0x10,
            memsz: 0x8
        }
    );
    assert_eq!(
        patched(|i| put64(&mut i.bytes, ph(0, 40), u64::MAX)),
        ElfError::AddressOverflow { index: 0 }
    );
    assert_eq!(
        patched(|i| put64(&mut i.bytes, ph(1, 24), u64::MAX - 4)),
        ElfError::AddressOverflow { index: 1 }
    );
    // Loads without R/W/X flags are not loadable.
    assert_eq!(
        patched(|i| {
            put32(&mut i.bytes, ph(0, 4), 0);
            put32(&mut i.bytes, ph(1, 4), 0);
        }),
        ElfError::NoLoadSegment
    );
    // ...and do not count in the span.
    let mut img = valid(NotesIn::Segment);
    put32(&mut img.bytes, ph(1, 4), 0);
    assert_eq!(
        Elf::parse(&img.bytes).unwrap().load_span().end,
        KERNEL_BASE + 0x2000
    );
}

/// File offset of load `i`'s bytes in [`valid`] images.
fn segment_offset(i: u16) -> u64 {
    let img = valid(NotesIn::Both);
    let elf = Elf::parse(&img.bytes).unwrap();
    elf.program_header(i).unwrap().offset
}

#[test]
fn note_errors() {
    let len = valid(NotesIn::Both).bytes.len();
    let note_off = u64::try_from(64 + 56 * 3).unwrap();
    assert_eq!(
        patched(|i| put64(&mut i.bytes, ph(i.note_ph.unwrap(), 32), 0x10_0000)),
        ElfError::SegmentOutOfBounds {
            index: 2,
            offset: note_off,
            size: 0x10_0000,
            len
        }
    );
    // The second note's descsz runs past the segment.
    let second = usize::try_from(note_off).unwrap() + 12 + 4 + 8;
    assert_eq!(
        patched(|i| put32(&mut i.bytes, second + 4, 0xffff_fff0)),
        ElfError::MalformedNote {
            area: NoteArea::Segment(2),
            offset: u64::try_from(second).unwrap()
        }
    );
    // namesz too.
    assert_eq!(
        patched(|i| put32(&mut i.bytes, second, 0x1000)),
        ElfError::MalformedNote {
            area: NoteArea::Segment(2),
            offset: u64::try_from(second).unwrap()
        }
    );
    // Fallback to sections: a bad note section is refused.
    let mut img = valid(NotesIn::Section);
    let shoff = img.shoff.unwrap();
    put64(&mut img.bytes, shoff + 64 + 32, 0x10_0000);
    assert_eq!(
        err(&img.bytes),
        ElfError::SectionOutOfBounds {
            index: 1,
            offset: note_off - 56,
            size: 0x10_0000,
            len: img.bytes.len()
        }
    );
    let mut img = valid(NotesIn::Section);
    put32(
        &mut img.bytes,
        usize::try_from(note_off).unwrap() - 56 + 4,
        0xffff,
    );
    assert_eq!(
        err(&img.bytes),
        ElfError::MalformedNote {
            area: NoteArea::Section(1),
            offset: note_off - 56
        }
    );
}

#[test]
fn messages_read_like_refusals() {
    assert_eq!(
        ElfError::BadMagic.to_string(),
        "not an ELF image (bad magic)"
    );
    assert_eq!(
        ElfError::Not64Bit.to_string(),
        "32-bit ELF image: xen-like-hv runs only 64-bit PV guests"
    );
    assert_eq!(
        ElfError::WrongMachine(40).to_string(),
        "not an x86-64 image (e_machine 40)"
    );
    assert_eq!(
        ElfError::SegmentOutOfBounds {
            index: 3,
            offset: 0x2000,
            size: 0x40,
            len: 4096
        }
        .to_string(),
        "truncated: program header 3's segment ends at 0x2040, past the end of the 4096-byte image"
    );
    assert_eq!(
        ElfError::ProgramHeadersOutOfBounds {
            offset: u64::MAX,
            size: 56,
            len: 100
        }
        .to_string(),
        "truncated: the program header table ends at 0x10000000000000037, \
         past the end of the 100-byte image"
    );
    assert!(ElfError::NotExecutable(3).to_string().contains("ET_EXEC"));
    assert!(
        ElfError::MalformedNote {
            area: NoteArea::Segment(2),
            offset: 0x100
        }
        .to_string()
        .contains("note segment (program header 2)")
    );
}

/// Exercises every accessor of a parsed image.
fn use_all(elf: &Elf<'_>) {
    let span = elf.load_span();
    assert!(span.start <= span.end);
    let pspan = elf.load_paddr_span();
    assert!(pspan.start <= pspan.end);
    for ph in elf.program_headers() {
        if ph.p_type == PT_LOAD {
            assert!(elf.segment_data(&ph).is_some());
            assert!(ph.vaddr_end().is_some() && ph.paddr_end().is_some());
        }
    }
    let len = elf.bytes().len();
    for n in elf.notes().take(10_000) {
        assert!(n.name.len() <= len && n.desc.len() <= len);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(elf) = Elf::parse(&bytes) {
            use_all(&elf);
        }
    }

    #[test]
    fn random_headers_never_panic(mut tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = valid(NotesIn::Both).bytes[..64].to_vec();
        bytes.append(&mut tail);
        if let Ok(elf) = Elf::parse(&bytes) {
            use_all(&elf);
        }
    }

    #[test]
    fn truncations_never_panic(cut in any::<prop::sample::Index>(), both in any::<bool>()) {
        let img = valid(if both { NotesIn::Both } else { NotesIn::Segment });
        let n = cut.index(img.bytes.len());
        match Elf::parse(&img.bytes[..n]) {
            Ok(elf) => use_all(&elf),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn bit_flips_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..8),
        where_ in 0u8..4,
    ) {
        let notes_in = [NotesIn::Nowhere, NotesIn::Segment, NotesIn::Section, NotesIn::Both];
        let mut bytes = valid(notes_in[usize::from(where_)]).bytes;
        for (i, bit) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
        match Elf::parse(&bytes) {
            Ok(elf) => use_all(&elf),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn field_overwrites_never_panic(
        writes in proptest::collection::vec((0usize..(64 + 56 * 3), any::<u64>()), 1..6),
    ) {
        let mut bytes = valid(NotesIn::Both).bytes;
        for (off, v) in writes {
            let end = (off + 8).min(bytes.len());
            let n = end - off;
            bytes[off..end].copy_from_slice(&v.to_le_bytes()[..n]);
        }
        if let Ok(elf) = Elf::parse(&bytes) {
            use_all(&elf);
        }
    }
}
