//! Links the hypervisor with its own script as a static (non-PIE) executable, and
//! generates the 256 interrupt entry stubs. Link arguments are emitted here, not in a
//! cargo config, so that an outside RUSTFLAGS cannot drop them.

use std::fmt::Write as _;
use std::path::PathBuf;

/// Vectors for which the CPU pushes an error code.
const HAS_ERROR_CODE: [u32; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let target = std::env::var("TARGET").unwrap_or_default();
    if target == "x86_64-unknown-none" {
        println!("cargo:rustc-link-arg=-T{}", dir.join("linker.ld").display());
        println!("cargo:rustc-link-arg=--no-pie");
        println!("cargo:rustc-link-arg=-zmax-page-size=4096");
    }
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=build.rs");

    // One stub per vector: push a dummy error code where the CPU pushes none, then the
    // vector number, and join the common path in entry.s. `isr_table` lists them.
    let mut s = String::from(".section .text.isr, \"ax\"\n.code64\n");
    for v in 0..256u32 {
        let _ = writeln!(s, ".balign 16\nisr_{v}:");
        if !HAS_ERROR_CODE.contains(&v) {
            s.push_str("    pushq $0\n");
        }
        let _ = writeln!(s, "    pushq ${v}\n    jmp isr_common");
    }
    s.push_str(".section .rodata.isr, \"a\"\n.balign 8\n.global isr_table\nisr_table:\n");
    for v in 0..256u32 {
        let _ = writeln!(s, "    .quad isr_{v}");
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("isr.s"), s).expect("write isr.s");
}
