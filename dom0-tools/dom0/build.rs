//! Links the dom0 kernel with pv-runtime's linker script, as a static
//! (non-PIE) image. Emitted here so an outside RUSTFLAGS cannot drop it.

fn main() {
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        let script = std::env::var("DEP_PV_RUNTIME_LINKER_SCRIPT")
            .expect("pv-runtime publishes its linker script");
        println!("cargo::rustc-link-arg=-T{script}");
        println!("cargo::rustc-link-arg=--no-pie");
        println!("cargo::rustc-link-arg=-zmax-page-size=4096");
    }
    println!("cargo::rerun-if-changed=build.rs");
}
