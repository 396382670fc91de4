//! dom0's fast control link (`docs/devices.md`, "The fast control link"): with a
//! virtio console beside COM2, `dom0ctl` talks over it by itself, a 32 MiB kernel
//! uploads through it, and COM2 still answers.

use std::time::{Duration, Instant};

use xlhv_tests::{ControlHost, QemuExit, scratch, test_guest};

#[test]
fn dom0ctl_uses_the_virtio_console_and_uploads_32_mib() {
    let t = "fastlink";
    let h = ControlHost::boot_fast(t, "");
    assert!(
        h.serial()
            .contains("dom0: control link: virtio-console 00:0"),
        "{}",
        h.serial()
    );
    // A ticker padded to 32 MiB (the ELF loader reads only its segments).
    let mut kernel = std::fs::read(test_guest("ticker")).unwrap();
    kernel.resize(32 << 20, 0);
    let dir = scratch(t);
    let path = dir.join("big-ticker");
    std::fs::write(&path, &kernel).unwrap();
    let cfg = dir.join("big.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"big\"\nkernel = \"{}\"\nmemory = 16\ncmdline = \"secs=30\"\n",
            path.display()
        ),
    )
    .unwrap();
    let start = Instant::now();
    let c = h.dom0ctl(&["--timeout", "120", "create", &cfg.to_string_lossy()]);
    let took = start.elapsed();
    assert_eq!(c.code, Some(0), "{}", c.stderr);
    eprintln!(
        "fast link: 32 MiB upload and create in {:.2} s = {:.1} MiB/s (TCG)",
        took.as_secs_f64(),
        32.0 / took.as_secs_f64()
    );
    h.dom0ctl(&["list"]).code(0);
    // COM2 still answers, and `--link fast` insists on the fast link.
    let l = h.dom0ctl(&["--link", "com2", "list"]);
    assert_eq!(l.code, Some(0), "{}", l.stderr);
    assert!(l.stdout.contains("big"), "{}", l.stdout);
    h.dom0ctl(&["--link", "fast", "info"]).code(0);
    h.dom0ctl(&["shutdown-host"]).code(0);
    let mut h = h;
    assert!(h.machine.wait_exit(Duration::from_secs(60)).is_some());
    assert_eq!(h.machine.exit(), Some(QemuExit::Poweroff));
    let log = h.serial();
    let line = log
        .lines()
        .find(|l| l.contains("dom0: virtio console: "))
        .unwrap_or_else(|| panic!("{log}"));
    let bytes_in: u64 = line
        .split("console: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(bytes_in >= 32 << 20, "the upload went over COM2? {line}");
}
