//! Publishes the path of the guest linker script to the build scripts of the
//! kernel crates that depend on this one (`DEP_PV_RUNTIME_LINKER_SCRIPT`).

use std::path::PathBuf;

fn main() {
    let dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    println!(
        "cargo::metadata=linker_script={}",
        dir.join("linker.ld").display()
    );
    println!("cargo::rerun-if-changed=linker.ld");
    println!("cargo::rerun-if-changed=build.rs");
}
