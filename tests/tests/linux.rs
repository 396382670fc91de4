//! Debian 12's stock Linux kernel (`linux-image-amd64`, `CONFIG_XEN_PV=y`) as a PV
//! dom0, on xen-like-hv and on real Xen 4.17: the same kernel and initramfs
//! (`xtask::linux`: busybox's `/init` prints a marker and `check` lines, then powers
//! off) must reach user space on both, with the same answers. `docs/linux.md`.

use std::time::Duration;

use xlhv_tests::{Boot, Module, QemuExit};
use xtask::linux::{MARKER, checks, linux_files};
use xtask::xen::{XenBoot, XenEnd, xen_cmdline};

/// dom0's command line on both (the first word is the module's name on GRUB's line).
const CMDLINE: &str = "vmlinux console=hvc0 earlyprintk=xen";

fn files() -> xtask::linux::LinuxFiles {
    linux_files().unwrap_or_else(|e| panic!("fetching Debian's kernel and busybox: {e:#}"))
}

/// The `check` lines of a console, without `memtotal` (the domain's size).
fn comparable(console: &str) -> Vec<(String, String)> {
    checks(console)
        .into_iter()
        .filter(|(k, _)| k != "memtotal")
        .collect()
}

fn value<'a>(c: &'a [(String, String)], key: &str) -> &'a str {
    c.iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn on_ours() -> String {
    let f = files();
    let mut boot = Boot::new("linux-dom0");
    boot.modules = vec![
        Module {
            path: f.vmlinux.clone(),
            cmdline: CMDLINE.into(),
        },
        Module {
            path: f.initrd.clone(),
            cmdline: "initrd".into(),
        },
    ];
    boot.mem = "512M".into();
    // One CPU, as real Xen gets: a PV guest sees the host's HTT bit (Xen passes it
    // through), which QEMU sets with more than one CPU.
    boot.smp = 1;
    boot.stop_at = None;
    boot.deadline = Duration::from_secs(240);
    let b = boot.run();
    b.line(MARKER);
    b.line("check done");
    b.no_line("xen-like-hv fault");
    b.exited(QemuExit::Poweroff);
    b.out.serial.clone()
}

fn on_xen() -> String {
    let f = files();
    let mut boot = XenBoot::new(&f.vmlinux);
    boot.module_cmdline = CMDLINE.into();
    boot.cmdline = xen_cmdline("256M", "loglvl=all guest_loglvl=all");
    boot.mem = "512M".into();
    boot.deadline = Duration::from_secs(240);
    boot.extra = vec![Module {
        path: f.initrd.clone(),
        cmdline: "initrd".into(),
    }];
    let dir = xlhv_tests::scratch("linux-dom0-xen");
    let run = boot
        .run(&dir.join("boot.iso"))
        .unwrap_or_else(|e| panic!("booting real Xen failed: {e:#}"));
    std::fs::write(dir.join("com1.log"), &run.out.serial).ok();
    let serial = run.out.serial.clone();
    assert!(
        serial.contains(MARKER),
        "Linux did not reach user space on real Xen ({}):\n{serial}",
        f.package
    );
    // `poweroff -f` takes Xen through ACPI S5: QEMU ends, Xen prints no halt line.
    assert!(
        serial.contains("Entering ACPI S5 state")
            || serial
                .lines()
                .any(|l| XenEnd::of_line(l) == Some(XenEnd::Halted)),
        "dom0 did not power off on real Xen:\n{serial}"
    );
    serial
}

/// The kernel reaches `/init` as dom0 here, with no BUG, WARNING or Oops in its log,
/// and the same kernel and initramfs on real Xen 4.17 give the same answers (one test,
/// so the kernel boots once on each).
#[test]
fn debian_linux_boots_as_dom0_as_on_real_xen() {
    let serial = on_ours();
    let ours = comparable(&serial);
    assert_eq!(value(&ours, "hypervisor"), "xen", "{serial}");
    assert_eq!(
        value(&ours, "problems"),
        "0",
        "the kernel log has problems:\n{serial}"
    );
    assert_eq!(value(&ours, "cpus"), "1", "{serial}");
    assert!(
        ours.iter().any(|(k, v)| k == "flag" && v == "hypervisor"),
        "{serial}"
    );
    let xen = comparable(&on_xen());
    assert_eq!(
        ours, xen,
        "xen-like-hv (left) and real Xen 4.17 (right) differ"
    );
}
