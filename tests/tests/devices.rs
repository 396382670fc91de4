//! dom0 drives the machine's devices (`docs/devices.md`): it reaches PCI
//! configuration space through the hypervisor's 0xCF8/0xCFC emulation, enumerates
//! QEMU's devices on `pc` and `q35` (bridges, multi-function devices, BAR sizes,
//! capabilities) and reports each with `PHYSDEVOP_pci_device_add`; a domU that
//! touches 0xCF8 or maps a BAR frame is refused, as on Xen.

use xlhv_tests::{ControlHost, Module, test_guest};

/// dom0's line for the function at `bdf` (`00:03.0`), which must contain each of
/// `want`.
fn device<'a>(serial: &'a str, bdf: &str, want: &[&str]) -> &'a str {
    let line = serial
        .lines()
        .find(|l| l.contains(&format!("dom0: pci {bdf} ")))
        .unwrap_or_else(|| panic!("no PCI function {bdf} in:\n{serial}"));
    for w in want {
        assert!(line.contains(w), "{bdf}: no {w:?} in {line:?}");
    }
    line
}

fn no_failures(serial: &str) {
    assert!(
        !serial.contains("PHYSDEVOP_pci_device_add"),
        "a device report failed:\n{serial}"
    );
    assert!(!serial.contains("hostile-pci: FAIL"), "{serial}");
}

/// The domU that tries to reach PCI configuration space and a BAR frame.
fn hostile_domu() -> Module {
    let spec = format!(
        "{},name=hostile,mem=16M",
        test_guest("hostile-pci").display()
    );
    Module::domu(&spec).unwrap()
}

#[test]
fn dom0_enumerates_pci_on_pc_and_a_domu_is_refused() {
    let h = ControlHost::boot_on(
        "devices-pc",
        "pc",
        &[
            "-device",
            "pci-bridge,id=br1,chassis_nr=1",
            "-device",
            "virtio-rng-pci,bus=br1,addr=0x1",
        ],
        vec![hostile_domu()],
    );
    let s = h.serial();
    device(&s, "00:00.0", &["8086:1237", "host-bridge"]);
    device(&s, "00:01.0", &["8086:7000", "isa-bridge"]);
    device(&s, "00:01.1", &["8086:7010", "ide", "bar4=io:"]);
    device(&s, "00:01.3", &["8086:7113"]);
    device(
        &s,
        "00:02.0",
        &["1234:1111", "display", "bar0=mem32p:0xfd000000+16M"],
    );
    device(&s, "00:03.0", &["8086:100e", "net", "bar0=mem32:", "+128K"]);
    let bridge = device(&s, "00:04.0", &["1b36:0001", "pci-bridge"]);
    assert!(bridge.contains("secondary=01"), "{bridge}");
    // Behind the bridge: the transitional virtio device, with its legacy I/O BAR,
    // its MSI-X table BAR and its 64-bit modern BAR, and its capability list
    // (MSI-X 11, vendor-specific 09).
    device(
        &s,
        "01:01.0",
        &[
            "1af4:1005",
            "bar0=io:",
            "bar1=mem32:",
            "bar4=mem64p:",
            "+16K",
            "caps=11,09",
        ],
    );
    no_failures(&s);
    let wait = std::time::Instant::now();
    while !h.serial().contains("hostile-pci: PASS") {
        assert!(
            wait.elapsed() < std::time::Duration::from_secs(60),
            "the domU did not pass:\n{}",
            h.serial()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    no_failures(&h.serial());
}

#[test]
fn dom0_enumerates_pci_on_q35() {
    let h = ControlHost::boot_on("devices-q35", "q35", &["-device", "virtio-rng-pci"], vec![]);
    let s = h.serial();
    device(&s, "00:00.0", &["8086:29c0", "host-bridge"]);
    device(&s, "00:01.0", &["1234:1111", "display"]);
    device(&s, "00:02.0", &["8086:10d3", "net"]);
    device(&s, "00:1f.0", &["8086:2918", "isa-bridge"]);
    device(&s, "00:1f.2", &["8086:2922", "sata", "bar5=mem32:"]);
    device(&s, "00:1f.3", &["8086:2930", "smbus"]);
    device(&s, "00:03.0", &["1af4:1005", "bar4=mem64p:", "caps="]);
    no_failures(&s);
}

/// The self-test's byte `i` of the run that starts at sector `first` (dom0's
/// `virtio::pattern`).
fn disk_pattern(first: u64, i: usize) -> u8 {
    let i = i as u64;
    let x = first.wrapping_mul(31).wrapping_add(i.wrapping_mul(7));
    (x ^ (i >> 9)).to_le_bytes()[0]
}

#[test]
fn dom0_writes_and_reads_a_virtio_disk() {
    // A 4 MiB sparse image attached with --disk's QEMU arguments: dom0 finds the
    // virtio-blk device, names it by its serial, writes a pattern over its last 8
    // sectors through an unaligned buffer, reads it back, and the host file holds
    // it once QEMU has stopped. A second, read-only disk is found and left alone.
    let dir = xlhv_tests::scratch("virtio-disk");
    let img = dir.join("data.img");
    let ro = dir.join("ro.img");
    let _ = std::fs::remove_file(&img);
    let _ = std::fs::remove_file(&ro);
    std::fs::write(&ro, vec![0xA5u8; 1 << 20]).unwrap();
    let disks = [
        xtask::disk::DiskSpec::parse(&format!("new:{}:4M,name=data", img.display()), 0).unwrap(),
        xtask::disk::DiskSpec::parse(&format!("{},name=golden,ro", ro.display()), 1).unwrap(),
    ];
    let mut args = Vec::new();
    for (i, d) in disks.iter().enumerate() {
        d.prepare().unwrap();
        args.extend(d.qemu_args(i));
    }
    let mut h = ControlHost::boot_with_args("virtio-disk", "disk_selftest", &args);
    let d = h.dom0ctl(&["devices"]);
    assert_eq!(d.code, Some(0), "{}", d.stderr);
    eprintln!("{}", d.stdout);
    assert!(
        d.stdout.contains("1af4:1001 virtio-blk: disk data (4 MiB)"),
        "{}",
        d.stdout
    );
    assert!(
        d.stdout
            .contains("virtio-blk: disk golden (1 MiB, read-only)"),
        "{}",
        d.stdout
    );
    assert!(d.stdout.contains("00:00.0 8086:1237 -"), "{}", d.stdout);
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
    let log = h.serial();
    for l in log.lines().filter(|l| l.contains("dom0: disk ")) {
        eprintln!("{l}");
    }
    let line = log
        .lines()
        .find(|l| l.contains("dom0: disk data: virtio-blk"))
        .unwrap_or_else(|| panic!("no disk line:\n{log}"));
    assert!(line.contains("8192 sectors (4 MiB)"), "{line}");
    assert!(line.contains("irq MSI-X 1 -> pirq "), "MSI-X on pc: {line}");
    assert!(msi_interrupts(&log) > 0, "{log}");
    assert!(
        log.contains("dom0: pci: no PCI Express"),
        "pc has no MMCONFIG: {log}"
    );
    assert!(
        log.contains("dom0: disk golden: virtio-blk")
            && log.contains("2048 sectors (1 MiB), read-only"),
        "{log}"
    );
    assert!(
        log.contains("dom0: disk data: self-test PASS: wrote and read back sectors 8184..8192"),
        "{log}"
    );
    // The write's buffer is two pages whose frames are not neighbours.
    assert!(log.contains(", 1 buffers bounced,"), "{log}");
    // 1 MiB from scattered pages in one request; 32 reads and a flush in one
    // batch, more than the queue holds at once.
    assert!(
        log.contains("dom0: disk data: large self-test PASS: 1 MiB from 256 scattered pages"),
        "{log}"
    );
    assert!(
        log.contains("dom0: disk golden: self-test skipped"),
        "{log}"
    );
    let data = std::fs::read(&img).unwrap();
    assert_eq!(data.len(), 4 << 20);
    let tail = &data[data.len() - 8 * 512..];
    for (i, b) in tail.iter().enumerate() {
        assert_eq!(*b, disk_pattern(8184, i), "byte {i} of the written run");
    }
    assert!(data[..data.len() - 8 * 512].iter().all(|b| *b == 0));
    assert!(std::fs::read(&ro).unwrap().iter().all(|b| *b == 0xA5));
}

#[test]
fn dom0_gets_an_arp_reply_through_a_virtio_nic() {
    // QEMU's user network behind a virtio-net NIC (--nic user): dom0 asks who has
    // the gateway 10.0.2.2 and QEMU's slirp answers with its MAC, interrupt-driven.
    let nic = xtask::nic::NicSpec::parse("user").unwrap();
    let mut h = ControlHost::boot_with_args("virtio-nic", "nic_selftest", &nic.qemu_args(0));
    let d = h.dom0ctl(&["devices"]);
    assert!(
        d.stdout.contains("virtio-net: eth0 52:54:00:12:34:56"),
        "{}",
        d.stdout
    );
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
    let log = h.serial();
    for l in log.lines().filter(|l| l.contains("dom0: nic ")) {
        eprintln!("{l}");
    }
    assert!(log.contains("dom0: nic eth0: virtio-net 00:0"), "{log}");
    assert!(
        log.contains("dom0: nic eth0: self-test PASS: 10.0.2.2 is at 52:55:0a:00:02:02"),
        "{log}"
    );
}

#[test]
fn dom0_drives_a_disk_and_a_nic_on_q35_through_intx_with_pci_nomsi() {
    // With `pci=nomsi` dom0 leaves MSI-X off and uses INTx, as Linux does. On q35
    // PCI INTx reach GSIs 16-23 through the ICH9's PIRQ routing, not the firmware's
    // interrupt line: both devices must still be interrupt-driven.
    let dir = xlhv_tests::scratch("virtio-q35");
    let img = dir.join("q35.img");
    let _ = std::fs::remove_file(&img);
    let disk =
        xtask::disk::DiskSpec::parse(&format!("new:{}:1M,name=q35disk", img.display()), 0).unwrap();
    disk.prepare().unwrap();
    let mut args = disk.qemu_args(0);
    args.extend(xtask::nic::NicSpec::parse("user").unwrap().qemu_args(0));
    let mut h = ControlHost::boot_on_with(
        "virtio-q35",
        "q35",
        "disk_selftest nic_selftest pci=nomsi",
        &args,
    );
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
    let log = h.serial();
    for l in log
        .lines()
        .filter(|l| l.contains("dom0: disk ") || l.contains("dom0: nic "))
    {
        eprintln!("{l}");
    }
    let gsi_of = |needle: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}:\n{log}"));
        let at = line.find("irq GSI ").unwrap_or_else(|| panic!("{line}")) + 8;
        line[at..]
            .split(' ')
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert!(
        (20..24).contains(&gsi_of("dom0: disk q35disk: virtio-blk")),
        "{log}"
    );
    assert!(
        (20..24).contains(&gsi_of("dom0: nic eth0: virtio-net")),
        "{log}"
    );
    assert!(log.contains("dom0: disk q35disk: self-test PASS"), "{log}");
    assert!(
        log.contains("dom0: nic eth0: self-test PASS: 10.0.2.2 is at 52:55:0a:00:02:02"),
        "{log}"
    );
    // Interrupt-driven: the disk's two requests each took an interrupt.
    assert!(!log.contains(", 0 interrupts,"), "{log}");
}

/// The interrupts the hypervisor counted on MSI IRQs at the machine's end.
fn msi_interrupts(log: &str) -> u64 {
    log.lines()
        .find_map(|l| l.split("irq: MSI and MSI-X: ").nth(1))
        .and_then(|r| r.split(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0)
}

#[test]
fn dom0_uses_msix_and_mmconfig_on_q35() {
    // q35's virtio devices get MSI-X: the hypervisor programs their table entries
    // and delivers the vectors to dom0's event channels; both self-tests pass on
    // them. The hypervisor found the MCFG, and dom0 reads configuration space
    // through MMCONFIG too.
    let dir = xlhv_tests::scratch("msix-q35");
    let img = dir.join("q35.img");
    let _ = std::fs::remove_file(&img);
    let disk =
        xtask::disk::DiskSpec::parse(&format!("new:{}:1M,name=msidisk", img.display()), 0).unwrap();
    disk.prepare().unwrap();
    let mut args = disk.qemu_args(0);
    args.extend(xtask::nic::NicSpec::parse("user").unwrap().qemu_args(0));
    let mut h = ControlHost::boot_on_with(
        "msix-q35",
        "q35",
        "disk_selftest nic_selftest msix_check",
        &args,
    );
    h.dom0ctl(&["shutdown-host"]).code(0);
    h.machine.wait_exit(std::time::Duration::from_secs(60));
    let log = h.serial();
    for l in log.lines().filter(|l| {
        l.contains("dom0: disk ")
            || l.contains("dom0: nic ")
            || l.contains("MMCONFIG")
            || l.contains("MCFG")
            || l.contains("irq: MSI")
    }) {
        eprintln!("{l}");
    }
    for needle in [
        "dom0: disk msidisk: virtio-blk",
        "dom0: nic eth0: virtio-net",
    ] {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?}:\n{log}"));
        assert!(line.contains("irq MSI-X 1 -> pirq "), "{line}");
    }
    assert!(log.contains("dom0: disk msidisk: self-test PASS"), "{log}");
    assert!(
        log.contains("dom0: nic eth0: self-test PASS: 10.0.2.2 is at 52:55:0a:00:02:02"),
        "{log}"
    );
    assert!(!log.contains(", 0 interrupts,"), "{log}");
    assert!(msi_interrupts(&log) > 0, "{log}");
    assert!(!log.contains("using INTx"), "{log}");
    // dom0's mapping of an MSI-X table is read-only: its store was dropped.
    assert!(
        log.contains("after dom0's store: the table is read-only"),
        "{log}"
    );
    // MMCONFIG: the hypervisor's MCFG, dom0's report and its reads.
    assert!(
        log.contains("PCI: Using MCFG for segment 0000 bus 00-ff at 0xb0000000"),
        "{log}"
    );
    let mm = log
        .lines()
        .find(|l| {
            l.contains("dom0: pci: MMCONFIG segment 0000 buses 00-ff at 0xb0000000 (reserved): ")
        })
        .unwrap_or_else(|| panic!("{log}"));
    assert!(mm.contains(" 0 differ;"), "{mm}");
    // A store through dom0's read-only ECAM mapping is made by the hypervisor.
    assert!(mm.contains("reached the device"), "{mm}");
    assert!(!mm.contains(": 0 functions read"), "{mm}");
}
