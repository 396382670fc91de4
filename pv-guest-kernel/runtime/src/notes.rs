//! The Xen ELF notes of a guest image (ABI digest §2).
//!
//! [`entry!`](crate::entry) places one [`XenNotes`] in section `.note.Xen`,
//! which the linker script loads with the image and describes with a
//! `PT_NOTE` segment. The notes say: a generic loader for a `xen-3.0` guest,
//! entry at `_start`, the hypercall page inside the image, `VIRT_BASE` 0 and
//! `PADDR_OFFSET` 0 (virtual address = pseudo-physical address), and the
//! feature string Xen's own PV test kernels use.
//!
//! Every note is 8-byte aligned and a multiple of 8 bytes long, so the
//! sequence has no gaps (builders step from note to note by the 4-byte
//! padded sizes in each header).

use core::mem::size_of;

use hypercall_abi::elfnote::{
    ElfNoteHeader, XEN_ELFNOTE_LOADER_GENERIC, XEN_ELFNOTE_NAME, XEN_ELFNOTE_XEN_VERSION_PREFIX,
    XenElfNote,
};
use hypercall_abi::version::XenFeature;
use pv_runtime_core::text::concat_nul_padded;

use crate::hypercall::{HYPERCALL_PAGE, HypercallPageStorage};

/// The virtual address of pseudo-physical frame 0 in a guest built on this
/// runtime (the `VIRT_BASE` note).
pub const VIRT_BASE: u64 = 0;
/// Subtracted from `p_paddr` to get pseudo-physical addresses (the
/// `PADDR_OFFSET` note).
pub const PADDR_OFFSET: u64 = 0;

/// Separator of feature names in the `FEATURES` note (digest §2.2).
const FEATURE_SEPARATOR: &[u8] = b"|";
/// Prefix marking a feature in the `FEATURES` note as required.
const FEATURE_REQUIRED: &[u8] = b"!";

/// Capacity of the guest-name and guest-version descriptors.
pub const NAME_CAPACITY: usize = 32;

const fn name() -> [u8; 4] {
    match XEN_ELFNOTE_NAME.first_chunk::<4>() {
        Some(n) => *n,
        None => panic!("the note name is 4 bytes"),
    }
}

#[allow(clippy::cast_possible_truncation)] // descriptor sizes are small
const fn header<D>(kind: XenElfNote) -> ElfNoteHeader {
    ElfNoteHeader {
        namesz: XEN_ELFNOTE_NAME.len() as u32,
        descsz: size_of::<D>() as u32,
        type_: kind as u32,
    }
}

/// One note: header, name `"Xen\0"`, descriptor `D`.
#[derive(Debug)]
#[repr(C, align(8))]
pub struct Note<D> {
    header: ElfNoteHeader,
    name: [u8; 4],
    desc: D,
}

impl<D> Note<D> {
    const fn new(kind: XenElfNote, desc: D) -> Self {
        Note {
            header: header::<D>(kind),
            name: name(),
            desc,
        }
    }
}

/// An 8-byte address descriptor, resolved by the linker.
#[derive(Debug)]
#[repr(transparent)]
pub struct Addr(*const ());

/// The Xen notes of a guest image.
#[derive(Debug)]
#[repr(C)]
pub struct XenNotes {
    guest_os: Note<[u8; NAME_CAPACITY]>,
    guest_version: Note<[u8; NAME_CAPACITY]>,
    loader: Note<[u8; 8]>,
    xen_version: Note<[u8; 8]>,
    features: Note<[u8; 48]>,
    entry: Note<Addr>,
    hypercall_page: Note<Addr>,
    virt_base: Note<u64>,
    paddr_offset: Note<u64>,
}

// SAFETY: the notes are immutable data for the domain builder; the two
// addresses in them are never dereferenced through this type.
unsafe impl Sync for XenNotes {}

unsafe extern "C" {
    /// The runtime's entry point (`start.rs`).
    fn _start() -> !;
}

impl XenNotes {
    /// The notes for a guest called `guest_os`, version `guest_version`
    /// (each at most [`NAME_CAPACITY`] - 1 bytes; longer fails to compile).
    pub const fn new(guest_os: &str, guest_version: &str) -> Self {
        let page: *const HypercallPageStorage = &raw const HYPERCALL_PAGE;
        let entry: unsafe extern "C" fn() -> ! = _start;
        XenNotes {
            guest_os: Note::new(
                XenElfNote::GuestOs,
                concat_nul_padded(&[guest_os.as_bytes()]),
            ),
            guest_version: Note::new(
                XenElfNote::GuestVersion,
                concat_nul_padded(&[guest_version.as_bytes()]),
            ),
            loader: Note::new(
                XenElfNote::Loader,
                concat_nul_padded(&[XEN_ELFNOTE_LOADER_GENERIC.as_bytes()]),
            ),
            xen_version: Note::new(
                XenElfNote::XenVersion,
                concat_nul_padded(&[XEN_ELFNOTE_XEN_VERSION_PREFIX.as_bytes()]),
            ),
            features: Note::new(
                XenElfNote::Features,
                concat_nul_padded(&[
                    FEATURE_REQUIRED,
                    XenFeature::WritablePageTables.name().as_bytes(),
                    FEATURE_SEPARATOR,
                    XenFeature::PaePgdirAbove4gb.name().as_bytes(),
                ]),
            ),
            entry: Note::new(XenElfNote::Entry, Addr(entry as *const ())),
            hypercall_page: Note::new(XenElfNote::HypercallPage, Addr(page.cast())),
            virt_base: Note::new(XenElfNote::VirtBase, VIRT_BASE),
            paddr_offset: Note::new(XenElfNote::PaddrOffset, PADDR_OFFSET),
        }
    }
}

const _: () = {
    // No padding anywhere: each note is a multiple of 8 bytes.
    assert!(size_of::<Note<[u8; NAME_CAPACITY]>>() == 16 + NAME_CAPACITY);
    assert!(size_of::<Note<[u8; 8]>>() == 24);
    assert!(size_of::<Note<[u8; 48]>>() == 64);
    assert!(size_of::<Note<Addr>>() == 24);
    assert!(size_of::<Note<u64>>() == 24);
    assert!(size_of::<XenNotes>() == 2 * 48 + 2 * 24 + 64 + 4 * 24);
};
