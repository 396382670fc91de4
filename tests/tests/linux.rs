//! Debian 12's stock Linux kernel (`linux-image-amd64`, `CONFIG_XEN_PV=y`) as a PV
//! dom0, on xen-like-hv and on real Xen 4.17: the same kernel and initramfs
//! (`xtask::linux`: busybox's `/init` prints a marker and `check` lines, then powers
//! off) must reach user space on both, with the same answers. `docs/linux.md`.
//!
//! Our hypervisor and `dom0ctl create` get the package's bzImage (`vmlinuz`, an XZ
//! payload the builders unpack); real Xen gets the ELF taken out of it on the host.

use std::time::Duration;

use xlhv_tests::{Boot, ControlHost, Module, QemuExit};
use xtask::linux::{DOMU_WRITTEN, MARKER, POWEROFF_LINE, checks, domu_initrd, linux_files};
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

/// Boots the bzImage itself as our dom0: the hypervisor unpacks it.
fn on_ours() -> String {
    let f = files();
    let mut boot = Boot::new("linux-dom0");
    boot.modules = vec![
        Module {
            path: f.bzimage.clone(),
            cmdline: CMDLINE.into(),
        },
        Module {
            path: f.initrd.clone(),
            cmdline: "initrd".into(),
        },
    ];
    boot.mem = "512M".into();
    // Two CPUs, as real Xen gets: dom0 gets a vCPU for each (both hypervisors'
    // default), and Linux brings the second up with `VCPUOP_initialise` and `up`.
    boot.smp = 2;
    boot.stop_at = None;
    boot.deadline = Duration::from_secs(240);
    let b = boot.run();
    b.line(MARKER);
    b.line("check done");
    b.no_line("xen-like-hv fault");
    b.line("bzImage (boot protocol");
    b.exited(QemuExit::Poweroff);
    b.out.serial.clone()
}

fn on_xen() -> String {
    let f = files();
    let mut boot = XenBoot::new(&f.vmlinux);
    boot.module_cmdline = CMDLINE.into();
    boot.cmdline = xen_cmdline("256M", "loglvl=all guest_loglvl=all");
    boot.mem = "512M".into();
    boot.smp = 2;
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
    assert_eq!(value(&ours, "cpus"), "2", "both vCPUs came up:\n{serial}");
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

/// Polls `dom0ctl console NAME --no-follow` until it holds `needle` (at most
/// `secs`); the console so far.
fn console_until(h: &ControlHost, name: &str, needle: &str, secs: u64) -> String {
    let start = std::time::Instant::now();
    loop {
        let c = h.dom0ctl(&["console", name, "--no-follow"]);
        if c.stdout.contains(needle) {
            return c.stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{name}'s console never showed {needle:?} in {secs} s:\n{}\n{}\n--- COM1 ---\n{}",
            c.stdout,
            c.stderr,
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What the host writes at [`DISK_SECTOR`] of the domU's disk.
const DISK_PATTERN: &[u8; 24] = b"XLHV-DISK-PATTERN-012345";
/// Where (a 512-byte sector of the 16 MiB disk).
const DISK_SECTOR: u64 = 16384;

/// The peer's `netcheck` config (a vif on `xenbr0`, 5 pings each way).
fn peer_config(t: &str) -> std::path::PathBuf {
    let full = xlhv_tests::test_guest("netcheck");
    let small = xlhv_tests::scratch(t).join("netcheck.elf");
    let stripped = std::process::Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&small)
        .arg(&full)
        .status()
        .is_ok_and(|s| s.success());
    let kernel = if stripped { small } else { full };
    let cfg = xlhv_tests::scratch(t).join("peer.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"peer\"\nkernel = \"{}\"\nmemory = 32\n\
             cmdline = \"ip=10.0.0.1 peer=10.0.0.2 count=5 timeout=240\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\n\
             vif = [\"mac=00:16:3e:00:00:11, bridge=xenbr0\"]\n",
            kernel.display()
        ),
    )
    .unwrap();
    cfg
}

/// The `tcpcheck` server Linux sends its 1 MiB to (`xlhv_tcp=`): `smoltcp` on our
/// runtime's netfront, which takes no GSO, so Linux's TSO packets reach it cut
/// into segments by dom0's netback, every checksum checked.
fn tcp_server_config(t: &str) -> std::path::PathBuf {
    let full = xlhv_tests::test_guest("tcpcheck");
    let small = xlhv_tests::scratch(t).join("tcpcheck.elf");
    let stripped = std::process::Command::new("strip")
        .args(["--strip-debug", "-o"])
        .arg(&small)
        .arg(&full)
        .status()
        .is_ok_and(|s| s.success());
    let kernel = if stripped { small } else { full };
    let cfg = xlhv_tests::scratch(t).join("tcpsrv.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"tcpsrv\"\nkernel = \"{}\"\nmemory = 32\n\
             cmdline = \"ip=10.0.0.3 role=server mib=1 timeout=400\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\n\
             vif = [\"mac=00:16:3e:00:00:33, bridge=xenbr0\"]\n",
            kernel.display()
        ),
    )
    .unwrap();
    cfg
}

/// The same kernel as a domU of our own dom0: `dom0ctl create` uploads its bzImage
/// (dom0 unpacks it) and its initramfs (`ramdisk =`) over the fast link, its
/// console is our console back end
/// (`hvc0`), its `xen-blkfront` reads and writes a disk of dom0's through our
/// blkback, its `xen-netfront` pings a `netcheck` domU through our netback and
/// sends 1 MiB over TCP (with GSO: our netback offers it) to a `tcpcheck` domU, and
/// `dom0ctl shutdown` (xenstore `control/shutdown`, which Linux's xenbus watches)
/// powers it off.
#[test]
fn debian_linux_boots_as_a_domu() {
    let f = files();
    let initrd = domu_initrd(&f).unwrap_or_else(|e| panic!("the domU initramfs: {e:#}"));
    let t = "linux-domu";
    let dir = xlhv_tests::scratch(t);
    let img = dir.join("data.img");
    let mut disk = vec![0u8; 16 << 20];
    let at = usize::try_from(DISK_SECTOR * 512).unwrap();
    disk[at..at + DISK_PATTERN.len()].copy_from_slice(DISK_PATTERN);
    std::fs::write(&img, &disk).unwrap();
    let spec = xtask::disk::DiskSpec::parse(&format!("{},name=data", img.display()), 0).unwrap();
    // dom0 unpacks the bzImage (66 MB of ELF and a 32 MiB XZ dictionary beside the
    // uploads): it gets 256 MiB.
    let h = ControlHost::boot_fast_with_hv_args(t, "1024M", "dom0_mem=256M", &spec.qemu_args(0));
    h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "120",
        "create",
        peer_config(t).to_str().unwrap(),
    ])
    .code(0);
    h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "120",
        "create",
        tcp_server_config(t).to_str().unwrap(),
    ])
    .code(0);
    let cfg = dir.join("linux.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"linux\"\nkernel = \"{}\"\nramdisk = \"{}\"\nmemory = 256\nvcpus = 2\n\
             cmdline = \"console=hvc0 xlhv_disk={DISK_SECTOR} xlhv_net=10.0.0.2/24,10.0.0.1 \
             xlhv_tcp=10.0.0.3,5001\"\n\
             on_poweroff = \"preserve\"\n\
             disk = [\"target=data, vdev=xvda, access=rw\"]\n\
             vif = [\"mac=00:16:3e:00:00:22, bridge=xenbr0\"]\n",
            f.bzimage.display(),
            initrd.display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    // The fast link: `auto` falls back to COM2 (95 KiB/s) when dom0 greets late.
    let run = h.dom0ctl(&[
        "--link",
        "fast",
        "--timeout",
        "600",
        "create",
        cfg.to_str().unwrap(),
    ]);
    run.code(0);
    eprintln!("create (uploads included): {:.1} s", run.took.as_secs_f64());
    let console = console_until(&h, "linux", "check devices-done", 300);
    eprintln!(
        "create to the last check line: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(console.contains(MARKER), "{console}");
    let c = checks(&console);
    for key in [
        "xvda-sectors",
        "xvda-read",
        "xvda-written",
        "eth0-mac",
        "ping",
        "tcp-sent",
        "eth0-tx",
    ] {
        eprintln!("check {key} {}", value(&c, key));
    }
    // What Linux's netfront negotiated: its keys (`request-multicast-control`,
    // `ctrl-ring-ref` if it took them up) next to what the back end offers.
    let l = h.dom0ctl(&["list"]);
    let id = l
        .stdout
        .lines()
        .find(|r| r.split_whitespace().next() == Some("linux"))
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string();
    let fe = h.dom0ctl(&[
        "xenstore",
        "ls",
        &format!("/local/domain/{id}/device/vif/0"),
    ]);
    eprintln!("netfront's keys:\n{}", fe.stdout);
    let be = h.dom0ctl(&[
        "xenstore",
        "ls",
        &format!("/local/domain/0/backend/vif/{id}/0"),
    ]);
    eprintln!("netback's keys:\n{}", be.stdout);
    assert!(be.stdout.contains("feature-ctrl-ring"), "{}", be.stdout);
    assert_eq!(value(&c, "hypervisor"), "xen", "{console}");
    assert_eq!(value(&c, "cpus"), "2", "both vCPUs came up:\n{console}");
    assert_eq!(
        value(&c, "vclock-refused"),
        "0",
        "Linux could not register its vDSO time area:\n{console}"
    );
    assert_eq!(
        value(&c, "problems"),
        "0",
        "the kernel log has problems:\n{console}"
    );
    // xen-blkfront on our blkback: the size, the host's pattern, a write read back.
    assert_eq!(value(&c, "xvda-sectors"), "32768", "{console}");
    assert_eq!(value(&c, "xvda-read").as_bytes(), DISK_PATTERN, "{console}");
    assert_eq!(value(&c, "xvda-written"), DOMU_WRITTEN, "{console}");
    // xen-netfront on our netback: its MAC, and pings both ways with the peer.
    assert_eq!(value(&c, "eth0-mac"), "00:16:3e:00:00:22", "{console}");
    if value(&c, "ping") != "5 packets received" {
        let peer = h.dom0ctl(&["console", "peer", "--no-follow"]);
        eprintln!(
            "--- PEER ---\n{}\n--- COM1 ---\n{}",
            peer.stdout,
            h.serial()
        );
    }
    assert_eq!(value(&c, "ping"), "5 packets received", "{console}");
    let peer = console_until(&h, "peer", "netcheck: ", 120);
    assert!(
        peer.contains("netcheck: ok") && peer.contains("pings=5 answered=5"),
        "{peer}"
    );
    // TCP from Linux: the server got every byte in order, checksums checked.
    assert_eq!(value(&c, "tcp-sent"), "0", "{console}");
    let srv = console_until(&h, "tcpsrv", "tcpcheck: ", 120);
    assert!(
        srv.contains("tcpcheck: ok role=server bytes=1048576"),
        "{srv}"
    );
    // Whether Linux sent GSO packets: fewer TX packets than 1 MiB makes in
    // 1460-byte segments (reported, not required: TSO is Linux's choice).
    let tx: Vec<u64> = value(&c, "eth0-tx")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    eprintln!(
        "eth0 sent {tx:?} (packets, bytes): GSO {}",
        if tx.first().is_some_and(|p| *p < (1 << 20) / 1460) {
            "seen"
        } else {
            "not seen"
        }
    );
    let nl = h.dom0ctl(&["network-list", "linux"]);
    eprintln!("{}", nl.stdout);

    let down = h.dom0ctl(&["--timeout", "120", "shutdown", "linux"]);
    down.code(0);
    // Kept (`on_poweroff = "preserve"`) with its console, then destroyed.
    console_until(&h, "linux", POWEROFF_LINE, 60);
    let l = h.dom0ctl(&["list"]);
    let row = l
        .stdout
        .lines()
        .find(|r| r.split_whitespace().next() == Some("linux"))
        .unwrap_or_default()
        .to_string();
    assert!(row.contains("---s--"), "shut down: {}", l.stdout);
    h.dom0ctl(&["destroy", "linux"]).code(0);
    h.dom0ctl(&["destroy", "peer"]).code(0);
    h.dom0ctl(&["destroy", "tcpsrv"]).code(0);
    let l = h.dom0ctl(&["list"]);
    assert!(
        !l.stdout.lines().any(|r| r.starts_with("linux ")),
        "{}",
        l.stdout
    );
    let serial = h.serial();
    assert!(!serial.contains("xen-like-hv fault"), "{serial}");
    // What Linux wrote reached the disk image.
    let back = std::fs::read(&img).unwrap();
    let w = at + 512;
    assert_eq!(
        &back[w..w + DOMU_WRITTEN.len()],
        DOMU_WRITTEN.as_bytes(),
        "the write did not reach the image"
    );
}
