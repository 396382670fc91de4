//! Boot modules: names, sizes, and a first check that each kernel image is a 64-bit
//! x86 ELF. The domain builder (later) refuses the same images with the same words.

use crate::boot::multiboot::BootInfo;
use xlhv_core::boot::module::{self, ModuleRole};

/// Logs one line per module (and one per problem), and never fails: a bad module is
/// reported and left alone.
pub fn report(info: &BootInfo) {
    if info.modules.is_empty() {
        log::info!("modules: none");
    }
    if info.modules_dropped > 0 {
        log::warn!(
            "modules: {} more modules than the {} supported were ignored",
            info.modules_dropped,
            info.modules.len()
        );
    }
    let dom0 = module::find_dom0(info.modules.iter().map(|m| m.cmdline.as_str())).kernel;
    for (i, m) in info.modules.iter().enumerate() {
        // dom0's kernel is read as such even when its first word is not `dom0`, and
        // its command line is logged as dom0 gets it: the whole string.
        let spec = if dom0 == Some(i) {
            module::dom0_spec(&m.cmdline)
        } else {
            module::parse_module_cmdline(&m.cmdline)
        };
        for w in spec.warnings.iter() {
            log::warn!("module {i}: {w}");
        }
        let name = spec.name.as_str();
        let role = match spec.role {
            ModuleRole::Dom0 => "dom0 kernel",
            ModuleRole::DomU => "domU kernel",
            ModuleRole::Other => "data",
        };
        let Some(size) = m.end.checked_sub(m.start).filter(|&s| s > 0) else {
            log::warn!(
                "module {i} '{name}': empty or inverted range [{:#x}, {:#x}); ignored",
                m.start,
                m.end
            );
            continue;
        };
        log::info!(
            "module {i} '{name}': {size} bytes at [{:#x}, {:#x}), {role}",
            m.start,
            m.end
        );
        if matches!(spec.role, ModuleRole::Other) {
            continue;
        }
        let mem = spec.mem.map(|m| m >> 20);
        log::info!(
            "module {i} '{name}': memory {}, command line \"{}\"",
            mem.map_or(
                heapless::String::<24>::try_from("default").unwrap_or_default(),
                |m| {
                    let mut s = heapless::String::new();
                    let _ = core::fmt::Write::write_fmt(&mut s, format_args!("{m} MiB"));
                    s
                }
            ),
            // In full: what the guest gets (bounded by the module string's own limit).
            xlhv_core::boot::text::Escaped(spec.cmdline)
        );
        let Some(bytes) = crate::mm::direct_slice(m.start, size) else {
            log::warn!("module {i} '{name}': lies outside machine memory; ignored");
            continue;
        };
        if pvboot::bzimage::is_bzimage(bytes) {
            // Unpacked when the domain is built (dom0.rs); here only its header.
            match pvboot::BzImage::parse(bytes, u64::MAX) {
                Ok(bz) => log::info!(
                    "module {i} '{name}': bzImage, {} payload, kernel of {} bytes",
                    bz.compression(),
                    bz.decompressed_len()
                ),
                Err(e) => log::warn!("module {i} '{name}': not a usable PV kernel: {e}"),
            }
            continue;
        }
        match pvboot::elf::Elf::parse(bytes) {
            Ok(elf) => log::info!(
                "module {i} '{name}': ELF64 x86-64, entry {:#x}, {} program headers",
                elf.entry(),
                elf.program_headers().count()
            ),
            Err(e) => log::warn!("module {i} '{name}': not a usable PV kernel: {e}"),
        }
    }
}
