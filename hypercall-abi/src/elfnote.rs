//! Xen ELF notes (`elfnote.h`): how a PV kernel image describes itself.
//!
//! Notes have the standard ELF note layout ([`ElfNoteHeader`], then the
//! name, then the descriptor, each padded to 4 bytes) with the name
//! [`XEN_ELFNOTE_NAME`]. The builder reads them; the kernel's linker script
//! or assembler emits them. Parsing lives in the `pvboot` crate; the numbers
//! live here.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The note name, with its NUL.
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen\0";

/// The value the `XEN_VERSION` note must start with.
pub const XEN_ELFNOTE_XEN_VERSION_PREFIX: &str = "xen-3.0";

/// The `LOADER` value required unless `GUEST_OS` starts with "linux".
pub const XEN_ELFNOTE_LOADER_GENERIC: &str = "generic";

/// Xen note types (`XEN_ELFNOTE_*`) in Xen 4.17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenElfNote {
    /// String `NAME=VALUE` (legacy).
    Info = 0,
    /// Number: virtual entry address.
    Entry = 1,
    /// Number: virtual address of the hypercall page.
    HypercallPage = 2,
    /// Number: virtual address where pseudo-physical 0 is mapped.
    VirtBase = 3,
    /// Number: subtracted from `p_paddr` to get pseudo-physical.
    PaddrOffset = 4,
    /// String: must start with "xen-3.0".
    XenVersion = 5,
    /// String: guest OS name.
    GuestOs = 6,
    /// String: guest version.
    GuestVersion = 7,
    /// String: loader ("generic").
    Loader = 8,
    /// String: PAE mode (32-bit only).
    PaeMode = 9,
    /// String: `|`-separated XENFEAT names, `!` = required.
    Features = 10,
    /// String: "yes" to load the symbol table.
    BsdSymtab = 11,
    /// Number: 32-bit PV hypervisor start.
    HvStartLow = 12,
    /// Mask/value pairs recognising L1 entries that hold MFNs.
    L1MfnValid = 13,
    /// Number: supports suspend cancellation.
    SuspendCancel = 14,
    /// Number: where to place the P2M list.
    InitP2m = 15,
    /// Number: the initrd may be passed unmapped, as a PFN.
    ModStartPfn = 16,
    /// Number array: XENFEAT bitmaps.
    SupportedFeatures = 17,
    /// Number: PVH 32-bit entry (ignored for PV).
    Phys32Entry = 18,
    /// Crash dump information (kdump).
    CrashInfo = 0x100_0001,
    /// Crash registers (kdump).
    CrashRegs = 0x100_0002,
    /// Core file: no dump.
    DumpcoreNone = 0x200_0000,
    /// Core file header.
    DumpcoreHeader = 0x200_0001,
    /// Core file: hypervisor version.
    DumpcoreXenVersion = 0x200_0002,
    /// Core file: format version.
    DumpcoreFormatVersion = 0x200_0003,
}

/// Highest note type a PV/PVH image uses (`XEN_ELFNOTE_MAX`).
pub const XEN_ELFNOTE_MAX: u32 = XenElfNote::Phys32Entry as u32;

impl XenElfNote {
    /// The note type numbered `n`, if defined.
    pub const fn from_raw(n: u32) -> Option<XenElfNote> {
        use XenElfNote::*;
        Some(match n {
            0 => Info,
            1 => Entry,
            2 => HypercallPage,
            3 => VirtBase,
            4 => PaddrOffset,
            5 => XenVersion,
            6 => GuestOs,
            7 => GuestVersion,
            8 => Loader,
            9 => PaeMode,
            10 => Features,
            11 => BsdSymtab,
            12 => HvStartLow,
            13 => L1MfnValid,
            14 => SuspendCancel,
            15 => InitP2m,
            16 => ModStartPfn,
            17 => SupportedFeatures,
            18 => Phys32Entry,
            0x100_0001 => CrashInfo,
            0x100_0002 => CrashRegs,
            0x200_0000 => DumpcoreNone,
            0x200_0001 => DumpcoreHeader,
            0x200_0002 => DumpcoreXenVersion,
            0x200_0003 => DumpcoreFormatVersion,
            _ => return None,
        })
    }
}

/// An ELF note header (`Elf64_Nhdr`, 12 bytes). Written by the image's
/// producer, read by the builder.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ElfNoteHeader {
    /// Name length including the NUL (4 for "Xen").
    pub namesz: u32,
    /// Descriptor length.
    pub descsz: u32,
    /// A [`XenElfNote`] number.
    pub type_: u32,
}

assert_layout!(ElfNoteHeader, 12, namesz = 0, descsz = 4, type_ = 8);
