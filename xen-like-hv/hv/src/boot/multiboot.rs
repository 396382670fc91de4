//! Reads the multiboot2 boot information into bounded, owned structures while the boot
//! identity map is still active, so nothing later points into the lower half.

use core::fmt::Write;
use heapless::{String, Vec};
use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

/// EAX value a multiboot2 loader passes.
pub const BOOT_MAGIC: u32 = 0x36d7_6289;
/// Most memory-map entries kept.
pub const MAX_AREAS: usize = 128;
/// Most modules kept.
pub const MAX_MODULES: usize = 32;
/// Longest hypervisor command line kept (longer ones are cut, with a warning).
pub const MAX_CMDLINE: usize = 2048;
/// Longest module command line kept.
pub const MAX_MODULE_CMDLINE: usize = 1100;

/// Kind of a memory-map entry (the e820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AreaKind {
    /// Usable RAM.
    Usable,
    /// ACPI tables (reclaimable).
    Acpi,
    /// ACPI non-volatile storage.
    Nvs,
    /// Faulty RAM.
    Defective,
    /// Anything else: reserved.
    Reserved,
}

/// One memory-map entry: `[start, end)`.
#[derive(Clone, Copy, Debug)]
pub struct Area {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Type.
    pub kind: AreaKind,
}

/// One boot module: `[start, end)` in machine memory and its command line.
#[derive(Debug)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Command line as GRUB passed it (first word is the module's name here).
    pub cmdline: String<MAX_MODULE_CMDLINE>,
}

/// Where the ACPI root tables are.
#[derive(Clone, Copy, Debug)]
pub struct AcpiRoot {
    /// RSDP revision (0: ACPI 1.0, RSDT; 2: XSDT).
    pub revision: u8,
    /// Physical address of the RSDT (revision 0) or XSDT.
    pub table: usize,
}

/// Everything the hypervisor keeps from the boot information.
#[derive(Debug)]
pub struct BootInfo {
    /// Machine range of the boot information itself.
    pub mbi: (u64, u64),
    /// Hypervisor command line (possibly cut to [`MAX_CMDLINE`]).
    pub cmdline: String<MAX_CMDLINE>,
    /// Length of the command line GRUB passed, before any cut.
    pub cmdline_len: usize,
    /// Boot loader name.
    pub loader: String<64>,
    /// Memory map.
    pub areas: Vec<Area, MAX_AREAS>,
    /// Entries dropped because the map had more than [`MAX_AREAS`].
    pub areas_dropped: usize,
    /// Modules in the order GRUB lists them.
    pub modules: Vec<Module, MAX_MODULES>,
    /// Modules dropped because there were more than [`MAX_MODULES`].
    pub modules_dropped: usize,
    /// ACPI root, if the loader passed an RSDP.
    pub acpi: Option<AcpiRoot>,
}

/// Why the boot information could not be used.
#[derive(Debug)]
pub enum Error {
    /// EAX did not hold the multiboot2 magic.
    BadMagic(u32),
    /// The information structure is malformed.
    Malformed(multiboot2::LoadError),
    /// No memory map.
    NoMemoryMap,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::BadMagic(m) => {
                write!(f, "boot magic {m:#x} is not multiboot2's {BOOT_MAGIC:#x}")
            }
            Error::Malformed(e) => write!(f, "malformed multiboot2 information: {e:?}"),
            Error::NoMemoryMap => write!(f, "the boot loader passed no memory map"),
        }
    }
}

/// Copies `s` into `out`, cutting it at a character boundary if it does not fit.
fn copy_cut<const N: usize>(s: &str, out: &mut String<N>) {
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let _ = out.push_str(&s[..end]);
}

/// The boot information, kept for the whole run (it is tens of KiB, so it lives here
/// rather than on the boot stack).
pub static BOOT_INFO: spin::Once<BootInfo> = spin::Once::new();

/// Entry `index` of the host's memory map as an E820 entry (`XENMEM_machine_memory_map`).
pub fn host_e820(index: usize) -> Option<hypercall_abi::memory::E820Entry> {
    let a = BOOT_INFO.get()?.areas.get(index)?;
    let type_ = match a.kind {
        AreaKind::Usable => 1,
        AreaKind::Reserved => 2,
        AreaKind::Acpi => 3,
        AreaKind::Nvs => 4,
        AreaKind::Defective => 5,
    };
    Some(hypercall_abi::memory::E820Entry {
        addr: a.start,
        size: a.end.saturating_sub(a.start),
        type_,
    })
}

/// Reads the boot information at machine address `mbi` (identity-mapped).
pub fn read(magic: u32, mbi: u32) -> Result<BootInfo, Error> {
    if magic != BOOT_MAGIC {
        return Err(Error::BadMagic(magic));
    }
    // SAFETY: a multiboot2 loader (magic checked) passed `mbi`; the boot page tables map
    // the first 4 GiB, where the loader places it, and nothing writes it.
    let info = unsafe { BootInformation::load(mbi as usize as *const BootInformationHeader) }
        .map_err(Error::Malformed)?;

    let mut out = BootInfo {
        mbi: (info.start_address() as u64, info.end_address() as u64),
        cmdline: String::new(),
        cmdline_len: 0,
        loader: String::new(),
        areas: Vec::new(),
        areas_dropped: 0,
        modules: Vec::new(),
        modules_dropped: 0,
        acpi: None,
    };
    if let Some(Ok(cmd)) = info.command_line_tag().map(|t| t.cmdline()) {
        out.cmdline_len = cmd.len();
        copy_cut(cmd, &mut out.cmdline);
    }
    if let Some(Ok(name)) = info.boot_loader_name_tag().map(|t| t.name()) {
        copy_cut(name, &mut out.loader);
    }
    let map = info.memory_map_tag().ok_or(Error::NoMemoryMap)?;
    for a in map.memory_areas() {
        let kind = match a.typ() {
            MemoryAreaType::Available => AreaKind::Usable,
            MemoryAreaType::AcpiAvailable => AreaKind::Acpi,
            MemoryAreaType::ReservedHibernate => AreaKind::Nvs,
            MemoryAreaType::Defective => AreaKind::Defective,
            _ => AreaKind::Reserved,
        };
        let area = Area {
            start: a.start_address(),
            end: a.start_address().saturating_add(a.size()),
            kind,
        };
        if out.areas.push(area).is_err() {
            out.areas_dropped += 1;
        }
    }
    for m in info.module_tags() {
        let mut cmdline = String::new();
        match m.cmdline() {
            Ok(s) => copy_cut(s, &mut cmdline),
            Err(_) => {
                let _ = write!(cmdline, "<unreadable command line>");
            }
        }
        let module = Module {
            start: u64::from(m.start_address()),
            end: u64::from(m.end_address()),
            cmdline,
        };
        if out.modules.push(module).is_err() {
            out.modules_dropped += 1;
        }
    }
    if let Some(t) = info.rsdp_v2_tag() {
        out.acpi = Some(AcpiRoot {
            revision: t.revision(),
            table: t.xsdt_address(),
        });
    } else if let Some(t) = info.rsdp_v1_tag() {
        out.acpi = Some(AcpiRoot {
            revision: t.revision(),
            table: t.rsdt_address(),
        });
    }
    Ok(out)
}
