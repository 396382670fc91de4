//! Kernels given as Linux bzImages (`pvboot::bzimage`, docs/linux.md#bzimage): a small
//! PV guest (`ticker`) wrapped in a bzImage with an XZ payload the way Linux builds
//! one (x86 BCJ, LZMA2 with a 32 MiB dictionary, CRC32), or a gzip one, built by
//! dom0's toolstack (`dom0ctl create` over the fast link) and by the hypervisor (a
//! boot-time `domu` module). Debian's own bzImage boots in `linux.rs`.

use std::path::PathBuf;
use std::time::Duration;

use pvboot::testimg::{GZIP_ARGS, bzimage, compress_with};
use xlhv_tests::{ControlHost, Module, scratch, stripped_guest};

/// `xz` as Linux's `scripts/xz_wrap.sh` runs it on x86.
const LINUX_XZ: &[&str] = &[
    "--format=xz",
    "--check=crc32",
    "--x86",
    "--lzma2=dict=32MiB",
    "-c",
];

/// The stripped `ticker` guest as a bzImage compressed with `tool` `args`.
fn ticker_bzimage(test: &str, tool: &str, args: &[&str], file: &str) -> PathBuf {
    let elf = std::fs::read(stripped_guest(test, "ticker")).unwrap();
    let stream = compress_with(tool, args, &elf)
        .unwrap_or_else(|| panic!("{tool} is needed to make a bzImage"));
    let img = bzimage(&stream, u32::try_from(elf.len()).unwrap());
    let path = scratch(test).join(file);
    std::fs::write(&path, img).unwrap();
    path
}

fn wait_for_console(h: &ControlHost, dom: &str, needle: &str) -> String {
    h.console_until(dom, needle, None, 120)
}

fn config(test: &str, name: &str, kernel: &std::path::Path) -> PathBuf {
    let cfg = scratch(test).join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = 16\ncmdline = \"secs=30\"\n",
            kernel.display()
        ),
    )
    .unwrap();
    cfg
}

/// dom0's toolstack unpacks an uploaded XZ bzImage (a 32 MiB dictionary, as
/// Linux's) and a gzip one, and builds the ELF inside; a corrupt one is refused with
/// the reason and dom0 goes on serving.
#[test]
fn dom0ctl_creates_domus_from_bzimages() {
    let t = "bzimage-create";
    let h = ControlHost::boot_fast_with_hv_args(t, "512M", "dom0_mem=192M", &[]);
    let xz = ticker_bzimage(t, "xz", LINUX_XZ, "ticker-xz.bzImage");
    let run = h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "300",
        "create",
        config(t, "bzxz", &xz).to_str().unwrap(),
    ]);
    eprintln!("create (XZ bzImage): {:.1} s", run.took.as_secs_f64());
    run.code(0);
    wait_for_console(&h, "bzxz", "ticker: tick 1");

    let gz = ticker_bzimage(t, "gzip", GZIP_ARGS, "ticker-gz.bzImage");
    let run = h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "300",
        "create",
        config(t, "bzgz", &gz).to_str().unwrap(),
    ]);
    run.code(0);
    wait_for_console(&h, "bzgz", "ticker: tick 1");

    // A flipped byte deep in the XZ payload: dom0 says why and creates nothing.
    let mut bad = std::fs::read(&xz).unwrap();
    let at = bad.len() / 2;
    bad[at] ^= 0x5A;
    let bad_path = scratch(t).join("bad.bzImage");
    std::fs::write(&bad_path, bad).unwrap();
    let run = h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "300",
        "create",
        config(t, "bzbad", &bad_path).to_str().unwrap(),
    ]);
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stderr.contains("bzImage"), "{}", run.stderr);
    let l = h.dom0ctl(&["list"]);
    l.code(0);
    assert!(
        l.stdout.contains("bzxz") && !l.stdout.contains("bzbad"),
        "{}",
        l.stdout
    );
    assert!(!h.serial().contains("xen-like-hv fault"));
}

/// The hypervisor builds a boot-time domU from a bzImage module (unpacked into its
/// heap first, as it does for dom0).
#[test]
fn the_hypervisor_builds_a_bzimage_module() {
    let t = "bzimage-module";
    let xz = ticker_bzimage(t, "xz", LINUX_XZ, "ticker-xz.bzImage");
    let h = ControlHost::boot_with(
        t,
        vec![Module {
            path: xz,
            cmdline: "domu name=bzmod cmdline=secs=30".into(),
        }],
    );
    // A boot-time domU's console is the hypervisor's (COM1, `(d1)` lines).
    let start = std::time::Instant::now();
    let serial = loop {
        let serial = h.serial();
        if serial.contains("(d1) ticker: tick") {
            break serial;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the bzImage domU never ticked:\n{serial}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        serial.contains("module 2: bzImage (boot protocol 2.15), XZ payload")
            && serial.contains("d1 'bzmod': module 2 (ticker"),
        "{serial}"
    );
    assert!(!serial.contains("xen-like-hv fault"), "{serial}");
}
