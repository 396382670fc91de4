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
