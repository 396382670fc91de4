//! The block split driver (`docs/block.md`): domUs created with `disk = [...]`
//! get their volumes through dom0's blkback, and the `blkcheck` guest
//! (blkfront) writes, reads back and verifies a pattern over them. The data
//! is on the host file: a second boot of the machine reads it back. Two
//! domUs on two volumes of one disk never see each other's data; sharing
//! rules, unknown targets, `block-list`, hot-plug and unplug.

use std::time::{Duration, Instant};

use xlhv_tests::{ControlHost, scratch, stripped_guest, test_guest};
use xtask::disk::DiskSpec;

/// The QEMU arguments for `specs`, each prepared (a `new:` image created).
fn disks(specs: &[String]) -> Vec<String> {
    let mut args = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let d = DiskSpec::parse(s, i).unwrap();
        d.prepare().unwrap();
        args.extend(d.qemu_args(i));
    }
    args
}

/// The `blkcheck` ELF without debug sections (smaller uploads).
fn kernel(test: &str) -> std::path::PathBuf {
    stripped_guest(test, "blkcheck")
}

/// Writes a config for a `blkcheck` domU with `disks` and `cmdline`.
fn config(test: &str, name: &str, cmdline: &str, disks: &[&str]) -> String {
    let p = scratch(test).join(format!("{name}.toml"));
    let list: Vec<String> = disks.iter().map(|d| format!("\"{d}\"")).collect();
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"{cmdline}\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\ndisk = [{}]\n",
            kernel(test).display(),
            list.join(", ")
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Writes a config for a `blkhostile` domU with `disks`.
fn hostile_config(test: &str, name: &str, disks: &[&str]) -> String {
    let p = scratch(test).join(format!("{name}.toml"));
    let list: Vec<String> = disks.iter().map(|d| format!("\"{d}\"")).collect();
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = 32\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\ndisk = [{}]\n",
            test_guest("blkhostile").display(),
            list.join(", ")
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Waits for `dom`'s `blkcheck:` result line (180 s at most) and returns it.
fn result(h: &ControlHost, dom: &str) -> String {
    wait_line(h, dom, &["blkcheck: ok", "blkcheck: FAIL"])
}

/// Waits for a line of `dom`'s console that holds one of `needles` (180 s at
/// most) and returns it.
fn wait_line(h: &ControlHost, dom: &str, needles: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let c = h.dom0ctl(&["console", dom, "--no-follow"]);
        if let Some(l) = c
            .stdout
            .lines()
            .find(|l| needles.iter().any(|n| l.contains(n)))
        {
            eprintln!("{dom}:\n{}", c.stdout);
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "{dom} never finished:\n{}\n{}\n{}",
            c.stdout,
            c.stderr,
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[track_caller]
fn ok(line: &str) {
    assert!(line.contains("blkcheck: ok sectors=32768"), "{line}");
}

#[test]
fn domus_keep_their_data_across_a_reboot() {
    let test = "block";
    let dir = scratch(test);
    let img = dir.join("data.img");
    let _ = std::fs::remove_file(&img);
    let args = disks(&[format!("new:{}:64M,name=data", img.display())]);
    let mut h = ControlHost::boot_fast_with_args(test, "512M", &args);
    h.dom0ctl(&["volume", "create", "v1", "16M"]).code(0);
    h.dom0ctl(&["volume", "create", "v2", "16M"]).code(0);

    // Errors first: an unknown target, the whole disk that holds volumes.
    let bad = config(test, "bad", "", &["target=nope, vdev=xvda"]);
    let r = h.dom0ctl(&["--timeout", "120", "create", &bad]);
    r.code(1);
    assert!(
        r.stderr.contains("no disk or volume named nope"),
        "{}",
        r.stderr
    );
    let bad = config(test, "bad", "", &["target=data, vdev=xvda"]);
    let r = h.dom0ctl(&["--timeout", "120", "create", &bad]);
    r.code(1);
    assert!(r.stderr.contains("holds volumes"), "{}", r.stderr);

    let a = config(test, "a", "seed=1", &["target=v1, vdev=xvda"]);
    let b = config(test, "b", "seed=2", &["vdev=xvda, access=rw, target=v2"]);
    h.dom0ctl(&["--timeout", "120", "create", &a]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &b]).code(0);
    // v1 is a's, read-write: nobody else may have it, not even read-only.
    let c = config(test, "c", "", &["target=v1, vdev=xvda, access=ro"]);
    let r = h.dom0ctl(&["--timeout", "120", "create", &c]);
    r.code(1);
    assert!(r.stderr.contains("in use"), "{}", r.stderr);
    ok(&result(&h, "a"));
    ok(&result(&h, "b"));
    let list = h.dom0ctl(&["block-list", "a"]);
    list.code(0);
    eprintln!("{}", list.stdout);
    assert!(list.stdout.contains("51712"), "{}", list.stdout);
    assert!(
        list.stdout.contains("/local/domain/0/backend/vbd/"),
        "{}",
        list.stdout
    );
    // A volume in use cannot go.
    h.dom0ctl(&["volume", "rm", "v1"]).code(1);
    h.dom0ctl(&["destroy", "a"]).code(0);
    h.dom0ctl(&["destroy", "b"]).code(0);
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(Duration::from_secs(60));
    drop(h);

    // The second boot reads each pattern back from its own volume.
    let args = disks(&[format!("{},name=data", img.display())]);
    let h = ControlHost::boot_fast_with_args("block-again", "512M", &args);
    let a = config(test, "a2", "seed=1 verify-only", &["target=v1, vdev=xvda"]);
    let b = config(
        test,
        "b2",
        "seed=2 verify-only",
        &["target=v2, vdev=xvda, access=ro"],
    );
    h.dom0ctl(&["--timeout", "120", "create", &a]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &b]).code(0);
    ok(&result(&h, "a2"));
    ok(&result(&h, "b2"));
    h.dom0ctl(&["destroy", "a2"]).code(0);
    h.dom0ctl(&["destroy", "b2"]).code(0);
    // The volumes are free again.
    h.dom0ctl(&["volume", "rm", "v1"]).code(0);
}

/// A domain destroyed in the middle of its I/O, and a hostile front end (bad
/// grants, sectors, segments, operations, a ring overrun), leave dom0 serving
/// the other domU and give their volumes back; a disk hot-plugged into a running domain is
/// found by its front end, and hot-unplugged once the front end closed it.
#[test]
fn destroy_mid_io_and_hot_plug() {
    let test = "block-live";
    let dir = scratch(test);
    let img = dir.join("data.img");
    let _ = std::fs::remove_file(&img);
    let args = disks(&[format!("new:{}:64M,name=data", img.display())]);
    let h = ControlHost::boot_fast_with_args(test, "512M", &args);
    for (v, size) in [("v1", "16M"), ("v2", "16M"), ("v3", "4M"), ("v4", "4M")] {
        h.dom0ctl(&["volume", "create", v, size]).code(0);
    }
    let m = config(test, "m", "seed=3 repeat=100000", &["target=v1, vdev=xvda"]);
    h.dom0ctl(&["--timeout", "120", "create", &m]).code(0);
    wait_line(&h, "m", &["blkcheck: pass 1 done"]);
    let b = config(test, "b", "seed=2 repeat=3", &["target=v2, vdev=xvda"]);
    h.dom0ctl(&["--timeout", "120", "create", &b]).code(0);
    wait_line(&h, "b", &["blkcheck: pass 1 done"]);
    // A hostile front end next to b: bad grants, sectors, segments and
    // operations, then a ring overrun.
    let x = hostile_config(test, "x", &["target=v4, vdev=xvda"]);
    h.dom0ctl(&["--timeout", "120", "create", &x]).code(0);
    // m is writing or reading now: destroy it under way.
    h.dom0ctl(&["destroy", "m"]).code(0);
    let line = wait_line(&h, "x", &["blkhostile: PASS", "blkhostile: FAIL"]);
    assert!(line.contains("blkhostile: PASS"), "{line}");
    let err = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/error/backend/vbd"]);
    assert!(
        err.stdout.contains("impossible ring index"),
        "{}",
        err.stdout
    );
    ok(&result(&h, "b"));
    h.dom0ctl(&["destroy", "x"]).code(0);
    h.dom0ctl(&["volume", "rm", "v4"]).code(0);
    // m's volume is free: nothing of m's is left in the back end.
    h.dom0ctl(&["volume", "rm", "v1"]).code(0);

    // Hot-plug: a domain with no disk waits for xvdb.
    let p = config(test, "p", "vdev=51728 wait=120 limit=4", &[]);
    h.dom0ctl(&["--timeout", "120", "create", &p]).code(0);
    let list = h.dom0ctl(&["block-list", "p"]);
    list.code(0);
    assert_eq!(list.stdout.lines().count(), 1, "{}", list.stdout);
    h.dom0ctl(&["block-attach", "p", "target=v3, vdev=xvdb"])
        .code(0);
    // v3 is p's now, read-write.
    h.dom0ctl(&["volume", "rm", "v3"]).code(1);
    let line = result(&h, "p");
    assert!(line.contains("blkcheck: ok sectors=8192"), "{line}");
    // blkcheck closed the device: the detach completes and v3 is free.
    h.dom0ctl(&["block-detach", "p", "xvdb"]).code(0);
    let start = Instant::now();
    loop {
        let list = h.dom0ctl(&["block-list", "p"]);
        if list.stdout.lines().count() == 1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "xvdb never went:\n{}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    h.dom0ctl(&["volume", "rm", "v3"]).code(0);
    assert!(!h.serial().contains("xen-like-hv fault"), "{}", h.serial());
    h.dom0ctl(&["destroy", "p"]).code(0);
    h.dom0ctl(&["destroy", "b"]).code(0);
}
