//! Volumes (`docs/block.md`, "Volumes"): `dom0ctl volume create|list|rm` carve
//! named volumes out of a disk dom0 drives, in a volume table on the disk that
//! survives a reboot of the machine; errors say what is wrong.

use xlhv_tests::{ControlHost, CtlRun};
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

/// A failed dom0ctl run: exit code 1 and `want` in its message.
#[track_caller]
fn refused(run: &CtlRun, want: &str) {
    run.code(1);
    assert!(run.stderr.contains(want), "{want:?} not in {}", run.stderr);
}

/// The `volume list` table's volume rows as (name, disk, offset, size).
fn volumes(h: &ControlHost) -> Vec<(String, String, String, String)> {
    let out = h.dom0ctl(&["volume", "list"]);
    out.code(0);
    eprintln!("{}", out.stdout);
    out.stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].into(), f[1].into(), f[2].into(), f[3].into())
        })
        .collect()
}

fn vol(name: &str, disk: &str, offset: &str, size: &str) -> (String, String, String, String) {
    (name.into(), disk.into(), offset.into(), size.into())
}

#[test]
fn volumes_survive_a_reboot_and_errors_are_clear() {
    let dir = xlhv_tests::scratch("volumes");
    let img = dir.join("data.img");
    let ro = dir.join("golden.img");
    let _ = std::fs::remove_file(&img);
    std::fs::write(&ro, vec![0xA5u8; 1 << 20]).unwrap();
    let golden = format!("{},name=golden,ro", ro.display());

    // First boot: a fresh 64 MiB disk.
    let args = disks(&[
        format!("new:{}:64M,name=data", img.display()),
        golden.clone(),
    ]);
    let mut h = ControlHost::boot_with_args("volumes", "", &args);
    let out = h.dom0ctl(&["volume", "list"]);
    out.code(0);
    assert!(
        out.stdout.contains("data          64M blank"),
        "{}",
        out.stdout
    );
    let out = h.dom0ctl(&["volume", "create", "web", "16M"]);
    out.code(0);
    assert_eq!(
        out.stdout,
        "volume web: 16M on disk data at 1M (sectors 2048..34816)\n"
    );
    h.dom0ctl(&["volume", "create", "db", "8M", "--on", "data"])
        .code(0);
    assert_eq!(
        volumes(&h),
        [
            vol("web", "data", "1M", "16M"),
            vol("db", "data", "17M", "8M")
        ]
    );
    // The errors.
    refused(
        &h.dom0ctl(&["volume", "create", "x", "1M", "--on", "nope"]),
        "dom0 has no disk named nope",
    );
    refused(
        &h.dom0ctl(&["volume", "create", "web", "1M"]),
        "a volume named web exists already (on disk data)",
    );
    refused(
        &h.dom0ctl(&["volume", "create", "big", "1G"]),
        "no disk has room for 1G: the largest free extent is 39M",
    );
    refused(
        &h.dom0ctl(&["volume", "create", "big", "40M", "--on", "data"]),
        "no room for 40M on disk data: its largest free extent is 39M",
    );
    refused(
        &h.dom0ctl(&["volume", "create", "x", "1M", "--on", "golden"]),
        "disk golden is read-only",
    );
    refused(
        &h.dom0ctl(&["volume", "rm", "nope"]),
        "no volume named nope",
    );
    let bad = h.dom0ctl(&["volume", "create", "x", "1.5G"]);
    bad.code(2);
    assert!(bad.stderr.contains("not a size"), "{}", bad.stderr);
    h.dom0ctl(&["volume", "rm", "web"]).code(0);
    assert_eq!(volumes(&h), [vol("db", "data", "17M", "8M")]);
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
    drop(h);

    // On the host file: the table's two copies, copy A (generation 3, the
    // newest) holding db alone, copy B (generation 2) web and db.
    let data = std::fs::read(&img).unwrap();
    assert_eq!(data.len(), 64 << 20);
    assert_eq!(&data[..8], b"XLHVVOLS");
    assert_eq!(data[16], 3);
    assert_eq!(&data[512..515], b"db\0");
    assert_eq!(&data[8192..8200], b"XLHVVOLS");
    assert_eq!(data[8192 + 16], 2);
    assert_eq!(&data[8192 + 512..8192 + 515], b"web");

    // Second boot on the same file: the volume is there; the hole web left
    // takes the next volume.
    let args = disks(&[format!("{},name=data", img.display()), golden]);
    let mut h = ControlHost::boot_with_args("volumes-again", "", &args);
    assert_eq!(volumes(&h), [vol("db", "data", "17M", "8M")]);
    h.dom0ctl(&["volume", "create", "web2", "4M"]).code(0);
    assert_eq!(
        volumes(&h),
        [
            vol("web2", "data", "1M", "4M"),
            vol("db", "data", "17M", "8M")
        ]
    );
    let out = h.dom0ctl(&["volume", "list", "--json"]);
    out.code(0);
    assert!(
        out.stdout.contains(
            "{\"name\": \"golden\", \"sectors\": 2048, \"readonly\": true, \"table\": \"data\""
        ),
        "{}",
        out.stdout
    );
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
}
