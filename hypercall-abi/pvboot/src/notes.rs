//! Xen's ELF notes, interpreted: what a PV kernel image asks of its builder.
//!
//! [`XenImageInfo::parse`] reads the `Xen` notes of a parsed [`Elf`] as Xen 4.17's
//! libelf does (`elf_xen_parse`, `elf_xen_note_check`, `elf_xen_addr_calc_check`, ABI
//! digest §2) and adds the checks a builder needs before it trusts the numbers:
//!
//! * there must be Xen notes (a legacy `__xen_guest` section is recognised only to
//!   say that it is not supported);
//! * `LOADER` starts with "generic", unless `GUEST_OS` starts with "linux";
//!   `XEN_VERSION` starts with "xen-3.0";
//! * `PADDR_OFFSET` needs `VIRT_BASE`; `virt_offset = VIRT_BASE - PADDR_OFFSET`, and the
//!   kernel occupies `[kstart, kend)`, the `p_paddr` span of the loadable segments
//!   moved by `virt_offset`. The entry must lie in `[kstart, kend]` (Xen's bound is
//!   inclusive at the top), `VIRT_BASE <= kstart`, and `INIT_P2M` outside the kernel;
//! * stricter than Xen: `VIRT_BASE` page-aligned; the hypercall page page-aligned and
//!   inside `[kstart, kend)`; numeric notes this module uses 1, 2, 4 or 8 bytes long
//!   (Xen silently reads anything else as 0); the kernel at most [`MAX_KERNEL_SPAN`];
//! * `FEATURES` is tokenised as libelf does (names of at most 63 bytes separated by
//!   `|`); only libelf's seven names count, a `!name` is both supported and required,
//!   and an unknown `!name` is refused. `"!writable_page_tables|pae_pgdir_above_4gb"`,
//!   what real guests say, is accepted: it enables nothing. Requiring
//!   `auto_translated_physmap` (impossible for PV) or `supervisor_mode_kernel` is
//!   refused. Whether the image may run as dom0 or domU is checked by
//!   [`layout`](crate::layout), which knows the flavour.
//!
//! When a note appears twice the last one wins, except `FEATURES` and
//! `SUPPORTED_FEATURES`, which accumulate (as in Xen). `BSD_SYMTAB` is reported but the
//! symbol table is not loaded, so `kend` never grows for it.

use core::fmt;

use hypercall_abi::PAGE_SIZE;
use hypercall_abi::elfnote::{
    XEN_ELFNOTE_LOADER_GENERIC, XEN_ELFNOTE_XEN_VERSION_PREFIX, XenElfNote,
};
use hypercall_abi::version::XenFeature;

use crate::elf::{Elf, XEN_NOTE_NAME};

/// Largest kernel accepted, `kend - kstart` (1 GiB). Real PV kernels are tens of MiB;
/// anything near this is a corrupt or hostile image.
pub const MAX_KERNEL_SPAN: u64 = 1 << 30;

/// `GUEST_OS` prefix that lifts the `LOADER` requirement.
// TODO(abi): move to hypercall-abi
const GUEST_OS_LINUX_PREFIX: &[u8] = b"linux";
/// `BSD_SYMTAB` / `PAE_MODE` value meaning yes.
// TODO(abi): move to hypercall-abi
const NOTE_YES: &[u8] = b"yes";
/// Substring of `PAE_MODE` meaning bimodal.
// TODO(abi): move to hypercall-abi
const PAE_BIMODAL: &[u8] = b"bimodal";
/// Name of the legacy (pre-notes) guest-information section.
// TODO(abi): move to hypercall-abi
const LEGACY_XEN_GUEST_SECTION: &[u8] = b"__xen_guest";
/// Longest `FEATURES` token libelf reads in one piece (its buffer is 64 bytes).
const MAX_FEATURE_TOKEN: usize = 63;

/// The feature names libelf recognises in a `FEATURES` note; other names are ignored
/// (and refused when required).
const LIBELF_FEATURES: [XenFeature; 7] = [
    XenFeature::WritablePageTables,
    XenFeature::WritableDescriptorTables,
    XenFeature::AutoTranslatedPhysmap,
    XenFeature::SupervisorModeKernel,
    XenFeature::PaePgdirAbove4gb,
    XenFeature::HvmCallbackVector,
    XenFeature::Dom0,
];

/// Required features a 64-bit PV domain cannot have.
const UNSUPPORTED_REQUIRED: [XenFeature; 2] = [
    XenFeature::AutoTranslatedPhysmap,
    XenFeature::SupervisorModeKernel,
];

/// A string note's bytes (up to its first NUL), shown escaped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoteStr<'a>(pub &'a [u8]);

impl<'a> NoteStr<'a> {
    /// The bytes, without the NUL.
    pub const fn as_bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Whether the string starts with `prefix`.
    pub fn starts_with(&self, prefix: &[u8]) -> bool {
        self.0.starts_with(prefix)
    }

    /// The string, if it is UTF-8.
    pub fn to_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.0).ok()
    }

    fn from_desc(desc: &'a [u8]) -> Self {
        NoteStr(desc.split(|&b| b == 0).next().unwrap_or(desc))
    }
}

impl fmt::Display for NoteStr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.escape_ascii())
    }
}

/// `PAE_MODE`, parsed as libelf does. Meaningless for 64-bit guests, except that
/// Xen's dom0 builder appends `p` to the start_info magic when it is not `No`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PaeMode {
    /// No note, or a value other than "yes" / "...bimodal...".
    #[default]
    No,
    /// "yes" (libelf's `XEN_PAE_EXTCR3`).
    Yes,
    /// Contains "bimodal".
    Bimodal,
}

/// XENFEAT bitmaps (submap 0) from `FEATURES` and `SUPPORTED_FEATURES`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Features the kernel supports (bit `XenFeature as u32`).
    pub supported: u32,
    /// Features the kernel requires (`!name`); always a subset of `supported`.
    pub required: u32,
    /// Whether a `SUPPORTED_FEATURES` note was present (then a dom0 kernel must list
    /// `dom0`).
    pub supported_note: bool,
}

impl Features {
    /// Whether the kernel supports `f`.
    pub const fn supports(&self, f: XenFeature) -> bool {
        self.supported & f.bit() != 0
    }

    /// Whether the kernel requires `f`.
    pub const fn requires(&self, f: XenFeature) -> bool {
        self.required & f.bit() != 0
    }
}

/// The raw `L1_MFN_VALID` descriptor: (mask, value) pairs of 64-bit numbers saying
/// which non-present L1 entries still hold MFNs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L1MfnValid<'a>(pub &'a [u8]);

impl<'a> L1MfnValid<'a> {
    /// The complete (mask, value) pairs; trailing bytes that do not make a pair are
    /// ignored.
    pub fn pairs(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.0.chunks_exact(16).filter_map(|c| {
            let mask = u64::from_le_bytes(c.get(..8)?.try_into().ok()?);
            let value = u64::from_le_bytes(c.get(8..16)?.try_into().ok()?);
            Some((mask, value))
        })
    }
}

/// What a PV kernel image asks of its builder; see the module docs for every rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenImageInfo<'a> {
    /// Virtual entry address (`ENTRY`, default `e_entry`).
    pub entry: u64,
    /// Virtual address of the hypercall page (`HYPERCALL_PAGE`), page-aligned, inside
    /// the kernel.
    pub hypercall_page: Option<u64>,
    /// Where pseudo-physical 0 is mapped (`VIRT_BASE`, default 0), page-aligned.
    pub virt_base: u64,
    /// Subtracted from `p_paddr` to get pseudo-physical (`PADDR_OFFSET`, default 0).
    pub paddr_offset: u64,
    /// `virt_base - paddr_offset` (wrapping): added to `p_paddr` to get a kernel VA.
    pub virt_offset: u64,
    /// First kernel virtual address: lowest `p_paddr` + `virt_offset`.
    pub kstart: u64,
    /// One past the last kernel virtual address.
    pub kend: u64,
    /// `GUEST_OS`.
    pub guest_os: NoteStr<'a>,
    /// `GUEST_VERSION`.
    pub guest_version: NoteStr<'a>,
    /// `XEN_VERSION` (starts with "xen-3.0").
    pub xen_version: NoteStr<'a>,
    /// `LOADER`.
    pub loader: NoteStr<'a>,
    /// `PAE_MODE`.
    pub pae: PaeMode,
    /// Supported and required XENFEATs.
    pub features: Features,
    /// Where the kernel wants the P2M list (`INIT_P2M`), if it said.
    pub init_p2m: Option<u64>,
    /// The initrd may be left unmapped and passed as a PFN (`MOD_START_PFN` non-zero).
    pub mod_start_pfn: bool,
    /// `BSD_SYMTAB` is "yes" (reported only: the symbol table is not loaded).
    pub bsd_symtab: bool,
    /// `SUSPEND_CANCEL` is non-zero.
    pub suspend_cancel: bool,
    /// `L1_MFN_VALID`, if present.
    pub l1_mfn_valid: Option<L1MfnValid<'a>>,
}

/// Why an image's notes were refused. `Display` says what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteError<'a> {
    /// No `Xen` note anywhere.
    NoXenNotes,
    /// No notes, only a legacy `__xen_guest` section.
    LegacyXenGuestSection,
    /// Neither `LOADER` "generic..." nor `GUEST_OS` "linux...".
    WrongLoader {
        /// `LOADER`.
        loader: NoteStr<'a>,
        /// `GUEST_OS`.
        guest_os: NoteStr<'a>,
    },
    /// `XEN_VERSION` missing or not "xen-3.0...".
    WrongXenVersion(NoteStr<'a>),
    /// A numeric note with a descriptor size other than 1, 2, 4 or 8.
    BadNumericNote {
        /// Which note.
        note: XenElfNote,
        /// Its descriptor size.
        size: usize,
    },
    /// `PADDR_OFFSET` without `VIRT_BASE`.
    PaddrOffsetWithoutVirtBase,
    /// `VIRT_BASE` not page-aligned.
    VirtBaseUnaligned(u64),
    /// `kend` below `kstart` (the `p_paddr` span moved by `virt_offset` wraps).
    KernelRangeWraps {
        /// `kstart`.
        kstart: u64,
        /// `kend`.
        kend: u64,
    },
    /// The kernel is larger than [`MAX_KERNEL_SPAN`].
    KernelTooLarge(u64),
    /// `VIRT_BASE` above the kernel's start.
    VirtBaseAboveKernel {
        /// `VIRT_BASE`.
        virt_base: u64,
        /// `kstart`.
        kstart: u64,
    },
    /// Entry point outside `[kstart, kend]`.
    EntryOutsideKernel {
        /// Entry.
        entry: u64,
        /// `kstart`.
        kstart: u64,
        /// `kend`.
        kend: u64,
    },
    /// Hypercall page not page-aligned.
    HypercallPageUnaligned(u64),
    /// Hypercall page outside `[kstart, kend)`.
    HypercallPageOutsideKernel {
        /// Its address.
        va: u64,
        /// `kstart`.
        kstart: u64,
        /// `kend`.
        kend: u64,
    },
    /// `INIT_P2M` inside the kernel.
    P2mInsideKernel(u64),
    /// A `!name` feature libelf does not know.
    UnknownRequiredFeature(NoteStr<'a>),
    /// A required feature a PV domain cannot have.
    UnsupportedRequiredFeature(XenFeature),
}

impl fmt::Display for NoteError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NoteError::NoXenNotes => write!(
                f,
                "not a Xen PV kernel: the image has no Xen ELF notes (and no legacy \
                 __xen_guest section)"
            ),
            NoteError::LegacyXenGuestSection => write!(
                f,
                "the image describes itself with a legacy __xen_guest section instead of \
                 Xen ELF notes; only ELF notes are supported"
            ),
            NoteError::WrongLoader { loader, guest_os } => write!(
                f,
                "refusing the image: LOADER is \"{loader}\" and GUEST_OS is \"{guest_os}\"; \
                 only images for the \"{XEN_ELFNOTE_LOADER_GENERIC}\" loader or Linux \
                 images are loaded"
            ),
            NoteError::WrongXenVersion(v) => write!(
                f,
                "refusing the image: XEN_VERSION is \"{v}\", expected one starting with \
                 \"{XEN_ELFNOTE_XEN_VERSION_PREFIX}\""
            ),
            NoteError::BadNumericNote { note, size } => write!(
                f,
                "corrupt Xen ELF note {note:?}: a number must be 1, 2, 4 or 8 bytes, this \
                 one is {size}"
            ),
            NoteError::PaddrOffsetWithoutVirtBase => {
                write!(f, "the image sets PADDR_OFFSET without VIRT_BASE")
            }
            NoteError::VirtBaseUnaligned(v) => {
                write!(f, "VIRT_BASE {v:#x} is not page-aligned")
            }
            NoteError::KernelRangeWraps { kstart, kend } => write!(
                f,
                "the kernel's virtual range wraps around: start {kstart:#x}, end {kend:#x} \
                 (check VIRT_BASE, PADDR_OFFSET and the segments' p_paddr)"
            ),
            NoteError::KernelTooLarge(size) => write!(
                f,
                "the kernel spans {size:#x} bytes of memory, more than the limit of \
                 {MAX_KERNEL_SPAN:#x}"
            ),
            NoteError::VirtBaseAboveKernel { virt_base, kstart } => write!(
                f,
                "VIRT_BASE {virt_base:#x} lies above the kernel's start {kstart:#x}"
            ),
            NoteError::EntryOutsideKernel {
                entry,
                kstart,
                kend,
            } => write!(
                f,
                "the entry point {entry:#x} lies outside the kernel [{kstart:#x}, {kend:#x})"
            ),
            NoteError::HypercallPageUnaligned(va) => {
                write!(f, "the hypercall page {va:#x} is not page-aligned")
            }
            NoteError::HypercallPageOutsideKernel { va, kstart, kend } => write!(
                f,
                "the hypercall page {va:#x} lies outside the kernel [{kstart:#x}, {kend:#x})"
            ),
            NoteError::P2mInsideKernel(va) => {
                write!(f, "INIT_P2M {va:#x} lies inside the kernel image")
            }
            NoteError::UnknownRequiredFeature(name) => write!(
                f,
                "the kernel requires the unknown feature \"{name}\" (FEATURES note)"
            ),
            NoteError::UnsupportedRequiredFeature(feat) => write!(
                f,
                "the kernel requires the feature \"{}\", which a 64-bit PV domain cannot have",
                feat.name()
            ),
        }
    }
}

/// A little-endian number of 1, 2, 4 or 8 bytes (libelf's `elf_note_numeric`).
fn numeric(note: XenElfNote, desc: &[u8]) -> Result<u64, NoteError<'static>> {
    let bad = NoteError::BadNumericNote {
        note,
        size: desc.len(),
    };
    let mut buf = [0u8; 8];
    match desc.len() {
        1 | 2 | 4 | 8 => {
            buf.get_mut(..desc.len()).ok_or(bad)?.copy_from_slice(desc);
            Ok(u64::from_le_bytes(buf))
        }
        _ => Err(bad),
    }
}

/// Adds the names of a `FEATURES` string to `features` (libelf's
/// `elf_xen_parse_features`).
fn parse_features<'a>(s: &'a [u8], features: &mut Features) -> Result<(), NoteError<'a>> {
    let mut rest = s;
    while !rest.is_empty() {
        let limit = rest.len().min(MAX_FEATURE_TOKEN);
        let head = rest.get(..limit).unwrap_or(rest);
        let (token, advance) = match head.iter().position(|&b| b == b'|') {
            Some(i) => (head.get(..i).unwrap_or(head), i.saturating_add(1)),
            None => (head, limit),
        };
        rest = rest.get(advance..).unwrap_or(&[]);
        let (name, required) = match token.strip_prefix(b"!") {
            Some(name) => (name, true),
            None => (token, false),
        };
        match LIBELF_FEATURES.iter().find(|f| f.name().as_bytes() == name) {
            Some(f) => {
                features.supported |= f.bit();
                if required {
                    features.required |= f.bit();
                }
            }
            None if required => return Err(NoteError::UnknownRequiredFeature(NoteStr(token))),
            None => {}
        }
    }
    Ok(())
}

impl<'a> XenImageInfo<'a> {
    /// Interprets the Xen notes of `elf`; see the module docs for every rule.
    pub fn parse(elf: &Elf<'a>) -> Result<Self, NoteError<'a>> {
        let mut n = RawNotes::default();
        let mut xen_notes = 0usize;
        for note in elf.notes().filter(|n| n.name == XEN_NOTE_NAME) {
            xen_notes = xen_notes.saturating_add(1);
            n.apply(note.n_type, note.desc)?;
        }
        if xen_notes == 0 {
            return Err(if elf.has_section(LEGACY_XEN_GUEST_SECTION) {
                NoteError::LegacyXenGuestSection
            } else {
                NoteError::NoXenNotes
            });
        }

        if !n.loader.starts_with(XEN_ELFNOTE_LOADER_GENERIC.as_bytes())
            && !n.guest_os.starts_with(GUEST_OS_LINUX_PREFIX)
        {
            return Err(NoteError::WrongLoader {
                loader: n.loader,
                guest_os: n.guest_os,
            });
        }
        if !n
            .xen_version
            .starts_with(XEN_ELFNOTE_XEN_VERSION_PREFIX.as_bytes())
        {
            return Err(NoteError::WrongXenVersion(n.xen_version));
        }

        if n.paddr_offset.is_some() && n.virt_base.is_none() {
            return Err(NoteError::PaddrOffsetWithoutVirtBase);
        }
        let virt_base = n.virt_base.unwrap_or(0);
        let paddr_offset = n.paddr_offset.unwrap_or(0);
        if virt_base % page_size() != 0 {
            return Err(NoteError::VirtBaseUnaligned(virt_base));
        }
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        let pspan = elf.load_paddr_span();
        let kstart = pspan.start.wrapping_add(virt_offset);
        let kend = pspan.end.wrapping_add(virt_offset);
        if kstart > kend {
            return Err(NoteError::KernelRangeWraps { kstart, kend });
        }
        let span = kend.wrapping_sub(kstart);
        if span > MAX_KERNEL_SPAN {
            return Err(NoteError::KernelTooLarge(span));
        }
        if virt_base > kstart {
            return Err(NoteError::VirtBaseAboveKernel { virt_base, kstart });
        }
        let entry = n.entry.unwrap_or(elf.entry());
        if entry < kstart || entry > kend {
            return Err(NoteError::EntryOutsideKernel {
                entry,
                kstart,
                kend,
            });
        }
        if let Some(p) = n.init_p2m
            && p >= kstart
            && p < kend
        {
            return Err(NoteError::P2mInsideKernel(p));
        }
        if let Some(va) = n.hypercall_page {
            if va % page_size() != 0 {
                return Err(NoteError::HypercallPageUnaligned(va));
            }
            if va < kstart || va >= kend {
                return Err(NoteError::HypercallPageOutsideKernel { va, kstart, kend });
            }
        }
        if let Some(&f) = UNSUPPORTED_REQUIRED
            .iter()
            .find(|f| n.features.requires(**f))
        {
            return Err(NoteError::UnsupportedRequiredFeature(f));
        }

        Ok(XenImageInfo {
            entry,
            hypercall_page: n.hypercall_page,
            virt_base,
            paddr_offset,
            virt_offset,
            kstart,
            kend,
            guest_os: n.guest_os,
            guest_version: n.guest_version,
            xen_version: n.xen_version,
            loader: n.loader,
            pae: n.pae,
            features: n.features,
            init_p2m: n.init_p2m,
            mod_start_pfn: n.mod_start_pfn,
            bsd_symtab: n.bsd_symtab,
            suspend_cancel: n.suspend_cancel,
            l1_mfn_valid: n.l1_mfn_valid,
        })
    }
}

/// [`PAGE_SIZE`] as a `u64`.
pub(crate) const fn page_size() -> u64 {
    PAGE_SIZE as u64
}

/// The notes as read, before the checks.
#[derive(Default)]
struct RawNotes<'a> {
    entry: Option<u64>,
    hypercall_page: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    init_p2m: Option<u64>,
    mod_start_pfn: bool,
    suspend_cancel: bool,
    bsd_symtab: bool,
    guest_os: NoteStr<'a>,
    guest_version: NoteStr<'a>,
    xen_version: NoteStr<'a>,
    loader: NoteStr<'a>,
    pae: PaeMode,
    features: Features,
    l1_mfn_valid: Option<L1MfnValid<'a>>,
}

impl<'a> RawNotes<'a> {
    fn apply(&mut self, n_type: u32, desc: &'a [u8]) -> Result<(), NoteError<'a>> {
        let Some(note) = XenElfNote::from_raw(n_type) else {
            return Ok(()); // Unknown types are ignored, as libelf does.
        };
        let s = NoteStr::from_desc(desc);
        match note {
            XenElfNote::Entry => self.entry = Some(numeric(note, desc)?),
            XenElfNote::HypercallPage => self.hypercall_page = Some(numeric(note, desc)?),
            XenElfNote::VirtBase => self.virt_base = Some(numeric(note, desc)?),
            XenElfNote::PaddrOffset => self.paddr_offset = Some(numeric(note, desc)?),
            XenElfNote::InitP2m => self.init_p2m = Some(numeric(note, desc)?),
            XenElfNote::ModStartPfn => self.mod_start_pfn = numeric(note, desc)? != 0,
            XenElfNote::SuspendCancel => self.suspend_cancel = numeric(note, desc)? != 0,
            XenElfNote::XenVersion => self.xen_version = s,
            XenElfNote::GuestOs => self.guest_os = s,
            XenElfNote::GuestVersion => self.guest_version = s,
            XenElfNote::Loader => self.loader = s,
            XenElfNote::PaeMode => {
                if s.as_bytes() == NOTE_YES {
                    self.pae = PaeMode::Yes;
                }
                if s.as_bytes()
                    .windows(PAE_BIMODAL.len())
                    .any(|w| w == PAE_BIMODAL)
                {
                    self.pae = PaeMode::Bimodal;
                }
            }
            XenElfNote::BsdSymtab if s.as_bytes() == NOTE_YES => self.bsd_symtab = true,
            XenElfNote::Features => parse_features(s.as_bytes(), &mut self.features)?,
            XenElfNote::SupportedFeatures => {
                // libelf's elf_note_numeric_array(note, 4, 0): submap 0, if the
                // descriptor is a whole number of 32-bit words.
                self.features.supported_note = true;
                if desc.len() % 4 == 0
                    && let Some(w) = desc.get(..4).and_then(|w| <[u8; 4]>::try_from(w).ok())
                {
                    self.features.supported |= u32::from_le_bytes(w);
                }
            }
            XenElfNote::L1MfnValid => self.l1_mfn_valid = Some(L1MfnValid(desc)),
            // INFO (legacy), HV_START_LOW (32-bit only), PHYS32_ENTRY (PVH only), crash
            // and core-file notes: nothing for a 64-bit PV builder.
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
