//! Checked ELF64 parsing of PV kernel images.
//!
//! [`Elf::parse`] validates everything later accessors rely on, so they cannot fail:
//!
//! * the identification: magic, 64-bit class (32-bit PV guests are refused),
//!   little-endian, version 1; `e_machine` x86-64 and `e_type` `ET_EXEC`;
//! * the program header table (at most [`MAX_PROGRAM_HEADERS`] entries of 56 bytes)
//!   and the section header table (entries of 64 bytes) lie inside the image;
//! * every `PT_LOAD`: its file bytes lie inside the image, `p_filesz <= p_memsz`, and
//!   neither `p_vaddr + p_memsz` nor `p_paddr + p_memsz` overflows; at least one is
//!   *loadable* (has one of the R, W, X flags, Xen's `elf_phdr_is_loadable`);
//! * the notes: every `PT_NOTE` segment with a non-zero `p_offset` (Xen skips those at
//!   offset 0) lies inside the image and holds well-formed notes. If no such segment
//!   holds a note named `Xen`, the `SHT_NOTE` sections are checked too, and used if
//!   they hold one (Xen's `elf_xen_parse` rule); otherwise the segments' notes (if
//!   any) are kept.
//!
//! An `e_shnum` of 0 means no sections (extended section numbering is not supported);
//! an `e_phnum` of `0xffff` (extended program header numbering) is over the limit.
//! Notes are padded to 4 bytes (Xen's rule, whatever the segment's `p_align`). A note
//! area may end in fewer than 12 zero bytes of padding. The meaning of note types is
//! left to the caller.

use core::fmt;

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// `e_type` of an executable.
pub const ET_EXEC: u16 = 2;
/// `e_type` of a shared object or position-independent executable.
pub const ET_DYN: u16 = 3;
/// `p_type` of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// `p_type` of a note segment.
pub const PT_NOTE: u32 = 4;
/// `sh_type` of a note section.
pub const SHT_NOTE: u32 = 7;
/// Segment flag: executable.
pub const PF_X: u32 = 1;
/// Segment flag: writable.
pub const PF_W: u32 = 2;
/// Segment flag: readable.
pub const PF_R: u32 = 4;
/// Most program headers accepted.
pub const MAX_PROGRAM_HEADERS: u16 = 64;

const MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ELFDATA2MSB: u8 = 2;
const EV_CURRENT: u32 = 1;
/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Size of an ELF64 program header.
const PHDR_SIZE: u16 = 56;
/// Size of an ELF64 section header.
const SHDR_SIZE: u16 = 64;
/// Size of a note header (`namesz`, `descsz`, `type`).
const NOTE_HEADER: usize = 12;

/// Where a note area comes from, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteArea {
    /// A `PT_NOTE` segment: its program header's index.
    Segment(u16),
    /// An `SHT_NOTE` section: its section header's index.
    Section(u16),
}

impl fmt::Display for NoteArea {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoteArea::Segment(i) => write!(f, "note segment (program header {i})"),
            NoteArea::Section(i) => write!(f, "note section {i}"),
        }
    }
}

/// Why an image was refused. `Display` says what is wrong in words a user can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the part of the ELF header needed.
    TooShort {
        /// Size of the image.
        len: usize,
    },
    /// The first four bytes are not `\x7fELF`.
    BadMagic,
    /// A 32-bit (ELFCLASS32) image.
    Not64Bit,
    /// An `EI_CLASS` that is neither 32- nor 64-bit.
    BadClass(u8),
    /// A big-endian image.
    BigEndian,
    /// An `EI_DATA` that is neither little- nor big-endian.
    BadDataEncoding(u8),
    /// `EI_VERSION` or `e_version` is not 1.
    BadVersion(u32),
    /// Not built for x86-64.
    WrongMachine(u16),
    /// Not an `ET_EXEC` executable.
    NotExecutable(u16),
    /// `e_phentsize` is not 56.
    BadProgramHeaderSize(u16),
    /// More than [`MAX_PROGRAM_HEADERS`] program headers.
    TooManyProgramHeaders(u16),
    /// The program header table runs past the end of the image.
    ProgramHeadersOutOfBounds {
        /// `e_phoff`.
        offset: u64,
        /// Size of the table in bytes.
        size: u64,
        /// Size of the image.
        len: usize,
    },
    /// A segment's file bytes run past the end of the image.
    SegmentOutOfBounds {
        /// Index of the program header.
        index: u16,
        /// `p_offset`.
        offset: u64,
        /// `p_filesz`.
        size: u64,
        /// Size of the image.
        len: usize,
    },
    /// A `PT_LOAD` has more bytes in the file than in memory.
    FileSizeExceedsMemSize {
        /// Index of the program header.
        index: u16,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A `PT_LOAD`'s address plus its memory size overflows 64 bits.
    AddressOverflow {
        /// Index of the program header.
        index: u16,
    },
    /// No loadable `PT_LOAD` segment.
    NoLoadSegment,
    /// `e_shentsize` is not 64.
    BadSectionHeaderSize(u16),
    /// The section header table runs past the end of the image.
    SectionHeadersOutOfBounds {
        /// `e_shoff`.
        offset: u64,
        /// Size of the table in bytes.
        size: u64,
        /// Size of the image.
        len: usize,
    },
    /// An `SHT_NOTE` section runs past the end of the image.
    SectionOutOfBounds {
        /// Index of the section header.
        index: u16,
        /// `sh_offset`.
        offset: u64,
        /// `sh_size`.
        size: u64,
        /// Size of the image.
        len: usize,
    },
    /// A note's header, name or description runs past the end of its area.
    MalformedNote {
        /// The segment or section holding it.
        area: NoteArea,
        /// File offset of the note.
        offset: u64,
    },
}

/// Writes "ends at 0x..., past the end of the N-byte image" without overflowing.
fn past_end(f: &mut fmt::Formatter<'_>, offset: u64, size: u64, len: usize) -> fmt::Result {
    let end = u128::from(offset) + u128::from(size);
    write!(f, "ends at {end:#x}, past the end of the {len}-byte image")
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ElfError::TooShort { len } => write!(
                f,
                "truncated: the image is {len} bytes, too short for a 64-byte ELF header"
            ),
            ElfError::BadMagic => write!(f, "not an ELF image (bad magic)"),
            ElfError::Not64Bit => write!(
                f,
                "32-bit ELF image: xen-like-hv runs only 64-bit PV guests"
            ),
            ElfError::BadClass(c) => write!(f, "not an ELF image (unknown ELF class {c})"),
            ElfError::BigEndian => write!(
                f,
                "big-endian ELF image: x86-64 PV guests are little-endian"
            ),
            ElfError::BadDataEncoding(d) => {
                write!(f, "not an ELF image (unknown data encoding {d})")
            }
            ElfError::BadVersion(v) => write!(f, "unsupported ELF version {v} (expected 1)"),
            ElfError::WrongMachine(m) => write!(f, "not an x86-64 image (e_machine {m})"),
            ElfError::NotExecutable(t) => {
                let kind = match t {
                    0 => "no file type",
                    1 => "a relocatable object",
                    ET_DYN => "a shared object or position-independent executable",
                    4 => "a core dump",
                    _ => "an unknown file type",
                };
                write!(
                    f,
                    "not an executable (e_type {t}, {kind}): PV kernels must be linked \
                     as ET_EXEC at a fixed address"
                )
            }
            ElfError::BadProgramHeaderSize(s) => write!(
                f,
                "corrupt ELF header: program headers are {s} bytes, expected {PHDR_SIZE}"
            ),
            ElfError::TooManyProgramHeaders(n) => write!(
                f,
                "{n} program headers, more than the limit of {MAX_PROGRAM_HEADERS}"
            ),
            ElfError::ProgramHeadersOutOfBounds { offset, size, len } => {
                write!(f, "truncated: the program header table ")?;
                past_end(f, offset, size, len)
            }
            ElfError::SegmentOutOfBounds {
                index,
                offset,
                size,
                len,
            } => {
                write!(f, "truncated: program header {index}'s segment ")?;
                past_end(f, offset, size, len)
            }
            ElfError::FileSizeExceedsMemSize {
                index,
                filesz,
                memsz,
            } => write!(
                f,
                "corrupt program header {index}: file size {filesz:#x} is larger than \
                 memory size {memsz:#x}"
            ),
            ElfError::AddressOverflow { index } => write!(
                f,
                "corrupt program header {index}: address plus memory size overflows 64 bits"
            ),
            ElfError::NoLoadSegment => {
                write!(f, "no loadable segment (PT_LOAD): there is nothing to run")
            }
            ElfError::BadSectionHeaderSize(s) => write!(
                f,
                "corrupt ELF header: section headers are {s} bytes, expected {SHDR_SIZE}"
            ),
            ElfError::SectionHeadersOutOfBounds { offset, size, len } => {
                write!(f, "truncated: the section header table ")?;
                past_end(f, offset, size, len)
            }
            ElfError::SectionOutOfBounds {
                index,
                offset,
                size,
                len,
            } => {
                write!(f, "truncated: note section {index} ")?;
                past_end(f, offset, size, len)
            }
            ElfError::MalformedNote { area, offset } => write!(
                f,
                "corrupt ELF note at offset {offset:#x} in the {area}: it runs past \
                 the end of the area"
            ),
        }
    }
}

fn bytes_at<const N: usize>(b: &[u8], off: usize) -> Option<[u8; N]> {
    b.get(off..off.checked_add(N)?)?.try_into().ok()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    bytes_at(b, off).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    bytes_at(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    bytes_at(b, off).map(u64::from_le_bytes)
}

/// The sub-slice `[offset, offset + size)` of `b`, if it lies inside.
fn range(b: &[u8], offset: u64, size: u64) -> Option<&[u8]> {
    let start = usize::try_from(offset).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    b.get(start..end)
}

/// Reads a 16-bit ELF header field at `off`.
fn header_u16(b: &[u8], off: usize, len: usize) -> Result<u16, ElfError> {
    u16_at(b, off).ok_or(ElfError::TooShort { len })
}

/// A byte range of addresses `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Lowest address.
    pub start: u64,
    /// One past the highest address.
    pub end: u64,
}

impl Span {
    /// Grows the span to cover `[start, end)`.
    fn cover(self, start: u64, end: u64) -> Span {
        Span {
            start: self.start.min(start),
            end: self.end.max(end),
        }
    }
}

/// One program header, fields as in `Elf64_Phdr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    /// Index in the program header table.
    pub index: u16,
    /// `p_type` (e.g. [`PT_LOAD`], [`PT_NOTE`]).
    pub p_type: u32,
    /// `p_flags` ([`PF_R`], [`PF_W`], [`PF_X`]).
    pub flags: u32,
    /// `p_offset`: where the segment's bytes start in the file.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

impl ProgramHeader {
    /// A `PT_LOAD` with at least one of R, W, X: what Xen loads.
    pub const fn is_loadable(&self) -> bool {
        self.p_type == PT_LOAD && self.flags & (PF_R | PF_W | PF_X) != 0
    }

    /// One past the last virtual address (`None` on overflow; never for a `PT_LOAD`
    /// of a parsed image).
    pub const fn vaddr_end(&self) -> Option<u64> {
        self.vaddr.checked_add(self.memsz)
    }

    /// One past the last physical address (`None` on overflow; never for a `PT_LOAD`
    /// of a parsed image).
    pub const fn paddr_end(&self) -> Option<u64> {
        self.paddr.checked_add(self.memsz)
    }

    fn read(b: &[u8], index: u16) -> Option<ProgramHeader> {
        Some(ProgramHeader {
            index,
            p_type: u32_at(b, 0)?,
            flags: u32_at(b, 4)?,
            offset: u64_at(b, 8)?,
            vaddr: u64_at(b, 16)?,
            paddr: u64_at(b, 24)?,
            filesz: u64_at(b, 32)?,
            memsz: u64_at(b, 40)?,
            align: u64_at(b, 48)?,
        })
    }
}

/// The fields of a section header this module uses.
struct SectionHeader {
    name: u32,
    sh_type: u32,
    offset: u64,
    size: u64,
}

impl SectionHeader {
    fn read(b: &[u8]) -> Option<SectionHeader> {
        Some(SectionHeader {
            name: u32_at(b, 0)?,
            sh_type: u32_at(b, 4)?,
            offset: u64_at(b, 24)?,
            size: u64_at(b, 32)?,
        })
    }
}

/// One ELF note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// The owner's name without its terminating NUL (e.g. `b"Xen"`).
    pub name: &'a [u8],
    /// `n_type`; its meaning depends on the name.
    pub n_type: u32,
    /// The descriptor bytes.
    pub desc: &'a [u8],
}

/// Why [`next_note`] stopped; the offset is relative to the area's start.
struct BadNote(usize);

/// Rounds `x` up to a multiple of 4.
fn align4(x: usize) -> Option<usize> {
    Some(x.checked_add(3)? & !3)
}

/// Parses the note at the start of `area`: `Ok(None)` at the end of the area (empty,
/// or fewer than 12 bytes of zero padding left), otherwise the note and the rest.
fn next_note(area: &[u8]) -> Result<Option<(Note<'_>, &[u8])>, BadNote> {
    if area.is_empty() {
        return Ok(None);
    }
    if area.len() < NOTE_HEADER {
        return if area.iter().all(|&b| b == 0) {
            Ok(None)
        } else {
            Err(BadNote(0))
        };
    }
    let field = |off| {
        u32_at(area, off)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or(BadNote(0))
    };
    let namesz = field(0)?;
    let descsz = field(4)?;
    let n_type = u32_at(area, 8).ok_or(BadNote(0))?;
    let name_end = NOTE_HEADER.checked_add(namesz).ok_or(BadNote(0))?;
    let name = area.get(NOTE_HEADER..name_end).ok_or(BadNote(0))?;
    let name = name.strip_suffix(&[0]).unwrap_or(name);
    let desc_start = align4(name_end).ok_or(BadNote(0))?;
    let (desc, desc_end) = if descsz == 0 {
        (&[][..], desc_start)
    } else {
        let desc_end = desc_start.checked_add(descsz).ok_or(BadNote(0))?;
        (area.get(desc_start..desc_end).ok_or(BadNote(0))?, desc_end)
    };
    // The last note's padding may be missing.
    let next = align4(desc_end).unwrap_or(usize::MAX).min(area.len());
    let rest = area.get(next..).unwrap_or(&[]);
    Ok(Some((Note { name, n_type, desc }, rest)))
}

/// The owner name of Xen's notes.
pub const XEN_NOTE_NAME: &[u8] = b"Xen";

/// Notes found by [`Elf::check_notes`].
struct NoteCount {
    all: usize,
    xen: usize,
}

/// Where [`Elf::notes`] reads notes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteSource {
    /// The image has no notes.
    None,
    /// `PT_NOTE` segments.
    ProgramHeaders,
    /// `SHT_NOTE` sections (no `PT_NOTE` segment held a Xen note, and either some
    /// section does or no segment holds any note).
    SectionHeaders,
}

/// A parsed, validated ELF64 x86-64 executable borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct Elf<'a> {
    bytes: &'a [u8],
    entry: u64,
    phoff: usize,
    phnum: u16,
    shoff: usize,
    shnum: u16,
    note_source: NoteSource,
    vspan: Span,
    pspan: Span,
}

impl<'a> Elf<'a> {
    /// Validates `bytes` as a 64-bit x86-64 `ET_EXEC` image; see the module docs for
    /// every check.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        let len = bytes.len();
        match bytes.get(..4) {
            Some(m) if m == MAGIC => {}
            None if MAGIC.starts_with(bytes) => return Err(ElfError::TooShort { len }),
            _ => return Err(ElfError::BadMagic),
        }
        match bytes.get(4).copied() {
            Some(ELFCLASS64) => {}
            Some(ELFCLASS32) => return Err(ElfError::Not64Bit),
            Some(c) => return Err(ElfError::BadClass(c)),
            None => return Err(ElfError::TooShort { len }),
        }
        match bytes.get(5).copied() {
            Some(ELFDATA2LSB) => {}
            Some(ELFDATA2MSB) => return Err(ElfError::BigEndian),
            Some(d) => return Err(ElfError::BadDataEncoding(d)),
            None => return Err(ElfError::TooShort { len }),
        }
        match bytes.get(6).copied() {
            Some(1) => {}
            Some(v) => return Err(ElfError::BadVersion(u32::from(v))),
            None => return Err(ElfError::TooShort { len }),
        }
        if len < EHDR_SIZE {
            return Err(ElfError::TooShort { len });
        }
        let e_version = u32_at(bytes, 20).ok_or(ElfError::TooShort { len })?;
        if e_version != EV_CURRENT {
            return Err(ElfError::BadVersion(e_version));
        }
        let machine = header_u16(bytes, 18, len)?;
        if machine != EM_X86_64 {
            return Err(ElfError::WrongMachine(machine));
        }
        let e_type = header_u16(bytes, 16, len)?;
        if e_type != ET_EXEC {
            return Err(ElfError::NotExecutable(e_type));
        }
        let entry = u64_at(bytes, 24).ok_or(ElfError::TooShort { len })?;
        let e_phoff = u64_at(bytes, 32).ok_or(ElfError::TooShort { len })?;
        let e_shoff = u64_at(bytes, 40).ok_or(ElfError::TooShort { len })?;
        let phentsize = header_u16(bytes, 54, len)?;
        let phnum = header_u16(bytes, 56, len)?;
        let shentsize = header_u16(bytes, 58, len)?;
        let shnum = header_u16(bytes, 60, len)?;

        if phnum == 0 {
            return Err(ElfError::NoLoadSegment);
        }
        if phnum > MAX_PROGRAM_HEADERS {
            return Err(ElfError::TooManyProgramHeaders(phnum));
        }
        if phentsize != PHDR_SIZE {
            return Err(ElfError::BadProgramHeaderSize(phentsize));
        }
        let phsize = u64::from(phnum) * u64::from(PHDR_SIZE);
        let phoff = range(bytes, e_phoff, phsize)
            .and_then(|_| usize::try_from(e_phoff).ok())
            .ok_or(ElfError::ProgramHeadersOutOfBounds {
                offset: e_phoff,
                size: phsize,
                len,
            })?;

        let (shoff, shnum) = if shnum == 0 {
            (0, 0)
        } else {
            if shentsize != SHDR_SIZE {
                return Err(ElfError::BadSectionHeaderSize(shentsize));
            }
            let shsize = u64::from(shnum) * u64::from(SHDR_SIZE);
            let shoff = range(bytes, e_shoff, shsize)
                .and_then(|_| usize::try_from(e_shoff).ok())
                .ok_or(ElfError::SectionHeadersOutOfBounds {
                    offset: e_shoff,
                    size: shsize,
                    len,
                })?;
            (shoff, shnum)
        };

        let mut elf = Elf {
            bytes,
            entry,
            phoff,
            phnum,
            shoff,
            shnum,
            note_source: NoteSource::None,
            vspan: Span { start: 0, end: 0 },
            pspan: Span { start: 0, end: 0 },
        };

        let mut spans: Option<(Span, Span)> = None;
        for ph in elf.program_headers() {
            let index = ph.index;
            if ph.p_type == PT_LOAD {
                if range(bytes, ph.offset, ph.filesz).is_none() {
                    return Err(ElfError::SegmentOutOfBounds {
                        index,
                        offset: ph.offset,
                        size: ph.filesz,
                        len,
                    });
                }
                if ph.filesz > ph.memsz {
                    return Err(ElfError::FileSizeExceedsMemSize {
                        index,
                        filesz: ph.filesz,
                        memsz: ph.memsz,
                    });
                }
                let (Some(vend), Some(pend)) = (ph.vaddr_end(), ph.paddr_end()) else {
                    return Err(ElfError::AddressOverflow { index });
                };
                if ph.is_loadable() {
                    let v = Span {
                        start: ph.vaddr,
                        end: vend,
                    };
                    let p = Span {
                        start: ph.paddr,
                        end: pend,
                    };
                    spans = Some(match spans {
                        None => (v, p),
                        Some((sv, sp)) => (sv.cover(v.start, v.end), sp.cover(p.start, p.end)),
                    });
                }
            }
        }
        let Some((vspan, pspan)) = spans else {
            return Err(ElfError::NoLoadSegment);
        };
        elf.vspan = vspan;
        elf.pspan = pspan;

        // Xen's rule (`elf_xen_parse`): the sections are consulted only when the
        // segments hold no note named "Xen".
        let segments = elf.check_notes(NoteSource::ProgramHeaders)?;
        elf.note_source = if segments.xen > 0 {
            NoteSource::ProgramHeaders
        } else {
            let sections = elf.check_notes(NoteSource::SectionHeaders)?;
            if sections.xen > 0 {
                NoteSource::SectionHeaders
            } else if segments.all > 0 {
                NoteSource::ProgramHeaders
            } else if sections.all > 0 {
                NoteSource::SectionHeaders
            } else {
                NoteSource::None
            }
        };
        Ok(elf)
    }

    /// Validates every note area of `source`; returns how many notes they hold.
    fn check_notes(&self, source: NoteSource) -> Result<NoteCount, ElfError> {
        let mut count = NoteCount { all: 0, xen: 0 };
        for i in 0..self.area_count(source) {
            let Some((area_offset, mut area)) = self.note_area(source, i)? else {
                continue;
            };
            let mut pos = 0usize;
            loop {
                match next_note(area) {
                    Ok(None) => break,
                    Ok(Some((note, rest))) => {
                        pos = pos.saturating_add(area.len().saturating_sub(rest.len()));
                        area = rest;
                        count.all = count.all.saturating_add(1);
                        if note.name == XEN_NOTE_NAME {
                            count.xen = count.xen.saturating_add(1);
                        }
                    }
                    Err(BadNote(at)) => {
                        let offset = area_offset.saturating_add(
                            u64::try_from(pos.saturating_add(at)).unwrap_or(u64::MAX),
                        );
                        let area = match source {
                            NoteSource::SectionHeaders => NoteArea::Section(i),
                            _ => NoteArea::Segment(i),
                        };
                        return Err(ElfError::MalformedNote { area, offset });
                    }
                }
            }
        }
        Ok(count)
    }

    fn area_count(&self, source: NoteSource) -> u16 {
        match source {
            NoteSource::None => 0,
            NoteSource::ProgramHeaders => self.phnum,
            NoteSource::SectionHeaders => self.shnum,
        }
    }

    /// The file offset and bytes of note area `index` of `source`; `Ok(None)` if that
    /// header is not a note area (or is a `PT_NOTE` at offset 0, which Xen skips).
    fn note_area(
        &self,
        source: NoteSource,
        index: u16,
    ) -> Result<Option<(u64, &'a [u8])>, ElfError> {
        let len = self.bytes.len();
        match source {
            NoteSource::None => Ok(None),
            NoteSource::ProgramHeaders => {
                let Some(ph) = self.program_header(index) else {
                    return Ok(None);
                };
                if ph.p_type != PT_NOTE || ph.offset == 0 {
                    return Ok(None);
                }
                range(self.bytes, ph.offset, ph.filesz)
                    .map(|b| Some((ph.offset, b)))
                    .ok_or(ElfError::SegmentOutOfBounds {
                        index,
                        offset: ph.offset,
                        size: ph.filesz,
                        len,
                    })
            }
            NoteSource::SectionHeaders => {
                let Some(sh) = self.section_header(index) else {
                    return Ok(None);
                };
                if sh.sh_type != SHT_NOTE {
                    return Ok(None);
                }
                range(self.bytes, sh.offset, sh.size)
                    .map(|b| Some((sh.offset, b)))
                    .ok_or(ElfError::SectionOutOfBounds {
                        index,
                        offset: sh.offset,
                        size: sh.size,
                        len,
                    })
            }
        }
    }

    fn section_header(&self, index: u16) -> Option<SectionHeader> {
        if index >= self.shnum {
            return None;
        }
        let off = usize::from(index)
            .checked_mul(usize::from(SHDR_SIZE))?
            .checked_add(self.shoff)?;
        SectionHeader::read(self.bytes.get(off..)?)
    }

    /// Whether some section is named `name` (looked up in the section-name string
    /// table `e_shstrndx` names). A missing or corrupt string table, or a name that
    /// runs past its end, simply does not match.
    pub fn has_section(&self, name: &[u8]) -> bool {
        let Some(strndx) = u16_at(self.bytes, 62) else {
            return false;
        };
        let Some(strtab) = self.section_header(strndx) else {
            return false;
        };
        let Some(strings) = range(self.bytes, strtab.offset, strtab.size) else {
            return false;
        };
        (0..self.shnum).any(|i| {
            self.section_header(i).is_some_and(|sh| {
                usize::try_from(sh.name)
                    .ok()
                    .and_then(|start| strings.get(start..))
                    .and_then(|rest| rest.split(|&b| b == 0).next().filter(|_| rest.contains(&0)))
                    == Some(name)
            })
        })
    }

    /// The image's bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The entry point (`e_entry`), a virtual address.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// Number of program headers.
    pub fn program_header_count(&self) -> u16 {
        self.phnum
    }

    /// Program header `index`, if it exists.
    pub fn program_header(&self, index: u16) -> Option<ProgramHeader> {
        if index >= self.phnum {
            return None;
        }
        let off = usize::from(index)
            .checked_mul(usize::from(PHDR_SIZE))?
            .checked_add(self.phoff)?;
        ProgramHeader::read(self.bytes.get(off..)?, index)
    }

    /// Iterates over all program headers, in table order.
    pub fn program_headers(&self) -> ProgramHeaders<'a> {
        ProgramHeaders {
            elf: *self,
            next: 0,
        }
    }

    /// The file bytes of a segment (`p_filesz` bytes at `p_offset`); always `Some` for
    /// a `PT_LOAD` of this image.
    pub fn segment_data(&self, ph: &ProgramHeader) -> Option<&'a [u8]> {
        range(self.bytes, ph.offset, ph.filesz)
    }

    /// Virtual addresses covered by the loadable segments: lowest `p_vaddr` to highest
    /// `p_vaddr + p_memsz`.
    pub fn load_span(&self) -> Span {
        self.vspan
    }

    /// Physical addresses covered by the loadable segments (`p_paddr` based).
    pub fn load_paddr_span(&self) -> Span {
        self.pspan
    }

    /// Where the notes come from.
    pub fn note_source(&self) -> NoteSource {
        self.note_source
    }

    /// Iterates over the image's notes, from the areas [`note_source`](Self::note_source)
    /// names: the `PT_NOTE` segments, or the `SHT_NOTE` sections if only they hold
    /// Xen notes.
    pub fn notes(&self) -> Notes<'a> {
        Notes {
            elf: *self,
            next_area: 0,
            current: &[],
        }
    }
}

/// Iterator over an image's program headers; see [`Elf::program_headers`].
#[derive(Clone, Debug)]
pub struct ProgramHeaders<'a> {
    elf: Elf<'a>,
    next: u16,
}

impl Iterator for ProgramHeaders<'_> {
    type Item = ProgramHeader;

    fn next(&mut self) -> Option<ProgramHeader> {
        let ph = self.elf.program_header(self.next)?;
        self.next = self.next.saturating_add(1);
        Some(ph)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::from(self.elf.phnum.saturating_sub(self.next));
        (n, Some(n))
    }
}

impl ExactSizeIterator for ProgramHeaders<'_> {}

/// Iterator over an image's notes; see [`Elf::notes`].
#[derive(Clone, Debug)]
pub struct Notes<'a> {
    elf: Elf<'a>,
    next_area: u16,
    current: &'a [u8],
}

impl<'a> Iterator for Notes<'a> {
    type Item = Note<'a>;

    fn next(&mut self) -> Option<Note<'a>> {
        let source = self.elf.note_source;
        loop {
            if let Ok(Some((note, rest))) = next_note(self.current) {
                self.current = rest;
                return Some(note);
            }
            // This area is done (a malformed note cannot occur: parse checked them).
            loop {
                if self.next_area >= self.elf.area_count(source) {
                    self.current = &[];
                    return None;
                }
                let i = self.next_area;
                self.next_area = self.next_area.saturating_add(1);
                if let Ok(Some((_, area))) = self.elf.note_area(source, i) {
                    self.current = area;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
