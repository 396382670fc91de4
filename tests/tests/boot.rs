//! The hypervisor boots from GRUB (multiboot2) in QEMU and reports the machine.

use xlhv_tests::{Boot, Module, QemuExit, hypervisor, scratch, test_guest};

#[test]
fn banner_and_idle() {
    let mut boot = Boot::new("banner");
    // Idle until the clock has been refined against the HPET (a second after boot).
    boot.stop_at = Some("time: refined against the HPET".into());
    let b = boot.run();
    b.completed();
    let banner = b.line("xen-like-hv ");
    assert!(
        banner.contains(env!("CARGO_PKG_VERSION")),
        "banner without version: {banner}"
    );
    assert!(banner.contains("Xen 4.17"), "{banner}");
    b.line("boot loader: GRUB");
    b.line("the lower half is unmapped");
    b.line("time: TSC ");
    b.line("no domain to run; idling");
    // The boot-time rate (5 ms of the HPET) is within 0.5% of the rate over a whole
    // second (tens of ppm when the host is quiet; the bound leaves room for a loaded
    // one).
    let refined = b.line("time: refined against the HPET");
    let ppm: i64 = refined
        .split(" MHz (")
        .nth(1)
        .and_then(|r| r.split(" ppm)").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ppm figure in {refined:?}"));
    assert!(
        ppm.abs() <= 5_000,
        "boot calibration {ppm} ppm off: {refined}"
    );
    // The APIC timer ticked at about 100 Hz meanwhile.
    let ticks: u64 = refined
        .split(" timer interrupts so far")
        .next()
        .and_then(|r| r.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no tick count in {refined:?}"));
    assert!(
        (50..=150).contains(&ticks),
        "{ticks} ticks in a second: {refined}"
    );
    b.no_line("warning:");
    b.no_line("error:");
}

fn ram_within_2_percent(mem: &str, mib: u64) {
    let b = Boot::new(&format!("ram-{mem}")).with_mem(mem).run();
    b.completed();
    let bytes = b.number_after("RAM (");
    let expected = mib << 20;
    let diff = expected.abs_diff(bytes);
    assert!(
        diff * 50 <= expected,
        "-m {mem}: reported {bytes} bytes, expected {expected} +/- 2%"
    );
}

#[test]
fn ram_256m() {
    ram_within_2_percent("256M", 256);
}

#[test]
fn ram_2g() {
    ram_within_2_percent("2G", 2048);
}

/// dom0's memory comes in Xen's large machine-contiguous runs from the top of memory:
/// on a 2 GiB machine the default 128 MiB dom0 is one run (PFN p = MFN base + p), and
/// on 256 MiB (118 MiB for dom0) it is one run per bit of its page count.
#[test]
fn dom0_memory_is_machine_contiguous() {
    let boot = |name: &str, mem: &str| {
        let mut boot = Boot::new(name).with_mem(mem);
        boot.modules = vec![Module {
            path: test_guest("hello"),
            cmdline: "dom0".into(),
        }];
        boot.run()
    };
    let b = boot("dom0-runs-2g", "2G");
    let l = b.line("d0 'dom0'");
    assert!(
        l.contains("32768 pages in 1 machine-contiguous runs (largest 32768 pages: pfn 0x0"),
        "{l}"
    );
    let b = boot("dom0-runs-256m", "256M");
    let l = b.line("d0 'dom0'");
    let after = |key: &str| -> u64 {
        let rest = &l[l.find(key).unwrap_or_else(|| panic!("no {key:?} in {l}")) + key.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("no number after {key:?} in {l}"))
    };
    let (pages, runs) = (after("MiB, "), after("pages in "));
    assert_eq!(runs, u64::from(pages.count_ones()), "{l}");
}

/// `-smp n`: the MADT lists `n` CPUs and every one of them comes online.
fn cpus(n: u32) {
    let mut boot = Boot::new(&format!("smp-{n}"));
    boot.smp = n;
    let b = boot.run();
    b.completed();
    // QEMU's `-cpu max` has x2APIC, and the hypervisor uses it as Xen does.
    b.line("x2APIC mode");
    assert_eq!(b.number_after("cpus:"), u64::from(n), "{}", b.line("cpus:"));
    for i in 1..n {
        b.line(&format!("smp: CPU {i} (APIC id {i}) online"));
    }
    b.line(&format!("smp: {n} of {n} CPUs online"));
    b.no_line("did not start");
}

#[test]
fn cpus_1() {
    cpus(1);
}

#[test]
fn cpus_2() {
    cpus(2);
}

#[test]
fn cpus_4() {
    cpus(4);
}

#[test]
fn cpus_8() {
    cpus(8);
}

/// xAPIC mode (memory-mapped registers) when the CPU has no x2APIC, or when
/// `x2apic=0` asks for it: every CPU still starts, and guests run on them.
#[test]
fn cpus_in_xapic_mode() {
    for (name, cpu, cmdline) in [
        ("xapic-cpu", "max,-x2apic", ""),
        ("xapic-cmdline", "max", "x2apic=0"),
    ] {
        let mut boot = Boot::new(name);
        boot.smp = 4;
        boot.cpu = cpu.into();
        boot.cmdline = cmdline.into();
        let b = boot.run();
        b.completed();
        b.line("xAPIC mode");
        b.no_line("x2APIC mode");
        b.line("smp: 4 of 4 CPUs online");
        b.no_line("warning:");
    }
}

/// Without an HPET the TSC is measured against the PIT, and not refined.
#[test]
fn no_hpet_calibrates_against_the_pit() {
    let mut boot = Boot::new("no-hpet");
    boot.machine = "pc,hpet=off".into();
    let b = boot.run();
    b.completed();
    let line = b.line("time: TSC ");
    assert!(line.contains("from the PIT"), "{line}");
    b.line("time: no HPET: the boot-time rate stays");
    b.no_line("warning:");
}

#[test]
fn q35_and_skylake() {
    let mut boot = Boot::new("q35-skylake");
    boot.machine = "q35".into();
    boot.cpu = "Skylake-Client-v4".into();
    boot.smp = 2;
    let b = boot.run();
    b.completed();
    assert_eq!(b.number_after("cpus:"), 2);
}

#[test]
fn modules_listed_with_names_and_sizes() {
    let dir = scratch("modules");
    let blob = dir.join("blob.bin");
    std::fs::write(&blob, vec![0x5Au8; 12345]).unwrap();
    let hv_size = std::fs::metadata(hypervisor()).unwrap().len();
    let mut boot = Boot::new("modules");
    boot.modules = vec![
        Module {
            path: hypervisor().to_path_buf(),
            cmdline: "dom0 console=hvc0".into(),
        },
        Module {
            path: blob,
            cmdline: "initrd".into(),
        },
        Module {
            path: hypervisor().to_path_buf(),
            cmdline: r#"domu name=web mem=64M cmdline="console=hvc0 loglevel=3""#.into(),
        },
    ];
    let b = boot.run();
    b.completed();
    let m0 = b.line("module 0 'dom0'");
    assert!(m0.contains(&format!("{hv_size} bytes")), "{m0}");
    assert!(m0.contains("dom0 kernel"), "{m0}");
    b.line("module 0 'dom0': ELF64 x86-64, entry");
    let m1 = b.line("module 1 'initrd'");
    assert!(m1.contains("12345 bytes"), "{m1}");
    // Logged as dom0 gets it: the whole string.
    b.line(r#"module 0 'dom0': memory default, command line "dom0 console=hvc0""#);
    b.line("module 2 'web': ");
    b.line(r#"module 2 'web': memory 64 MiB, command line "console=hvc0 loglevel=3""#);
    b.no_line("warning:");
}

#[test]
fn corrupt_and_truncated_modules_are_refused_without_a_crash() {
    let dir = scratch("bad-modules");
    let junk = dir.join("junk.bin");
    let bytes: Vec<u8> = (0..20_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    std::fs::write(&junk, &bytes).unwrap();
    let elf = std::fs::read(hypervisor()).unwrap();
    let truncated = dir.join("truncated.elf");
    std::fs::write(&truncated, &elf[..100]).unwrap();
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let mut boot = Boot::new("bad-modules");
    boot.modules = vec![
        Module {
            path: junk,
            cmdline: "dom0".into(),
        },
        Module {
            path: truncated,
            cmdline: "domu name=t".into(),
        },
        Module {
            path: empty,
            cmdline: "domu name=e".into(),
        },
    ];
    let b = boot.run();
    b.completed();
    b.line("module 0 'dom0': not a usable PV kernel: not an ELF image");
    let t = b.line("module 1 't': not a usable PV kernel:");
    assert!(t.contains("truncated"), "{t}");
    b.line("module 2 'e': empty");
}

#[test]
fn absurd_command_line_gives_warnings_and_boots() {
    let mut boot = Boot::new("absurd-cmdline");
    let junk = "A".repeat(3000);
    boot.cmdline = format!(
        "loglvl=banana dom0_mem=12Q hvtest=nonsense =x loglvl= \u{e9}t\u{e9} {junk} dropped=1"
    );
    let b = boot.run();
    b.completed();
    b.line("loglvl=banana");
    b.line("dom0_mem=12Q");
    b.line("hvtest=nonsense");
    b.line("command line is");
    b.line("unknown option '\u{e9}t\u{e9}'");
    b.no_line("dropped=1");
    let longest = b.out.serial.lines().map(str::len).max().unwrap_or(0);
    assert!(
        longest < 400,
        "a log line of {longest} bytes: the junk was not cut"
    );
}

fn fault(hook: &str, expect: &str, exit: QemuExit) {
    let mut boot = Boot::new(&format!("fault-{hook}"));
    boot.cmdline = format!("hvtest={hook}");
    boot.stop_at = None;
    let b = boot.run();
    b.exited(exit);
    b.line(expect);
    b.no_line(xlhv_tests::BOOT_COMPLETE);
}

#[test]
fn page_fault_in_hypervisor_dumps_registers_and_fails() {
    fault(
        "fault-pf",
        "xen-like-hv fault: #PF page fault, vector 14",
        QemuExit::Fault,
    );
    let b = {
        let mut boot = Boot::new("fault-pf-regs");
        boot.cmdline = "hvtest=fault-pf".into();
        boot.stop_at = None;
        boot.run()
    };
    // The lower half is unmapped: the read of 0x1000 faults with CR2 = 0x1000.
    let rip = b.line("RIP: e008:");
    assert!(rip.contains("CR2: 0000000000001000"), "{rip}");
    b.line("rax: ");
    b.line("r15: ");
    b.line("cr3: ");
}

#[test]
fn invalid_opcode_in_hypervisor() {
    fault("fault-ud", "#UD invalid opcode, vector 6", QemuExit::Fault);
}

#[test]
fn general_protection_in_hypervisor() {
    fault(
        "fault-gp",
        "#GP general protection, vector 13",
        QemuExit::Fault,
    );
}

#[test]
fn divide_error_in_hypervisor() {
    fault("fault-de", "#DE divide error, vector 0", QemuExit::Fault);
}

#[test]
fn panic_reports_and_fails() {
    fault("panic", "panic at", QemuExit::Panic);
}

#[test]
fn loglvl_selects_what_is_printed() {
    let mut boot = Boot::new("loglvl-debug");
    boot.cmdline = "loglvl=debug".into();
    let b = boot.run();
    b.completed();
    b.line("debug: e820: [");

    let mut boot = Boot::new("loglvl-warning");
    boot.cmdline = "loglvl=warning hvtest=bogus".into();
    // Nothing marks the end at this level: run for a fixed time, long enough for GRUB
    // and the whole boot on a loaded machine (8 s was not).
    boot.stop_at = None;
    boot.deadline = std::time::Duration::from_secs(20);
    let b = boot.run();
    b.line("hvtest=bogus");
    b.no_line("memory:");
    b.no_line("debug:");
}

/// The first module that is neither `dom0` nor `domu` is dom0's initrd, as Xen hands
/// over the module after dom0's kernel: mapped at `mod_start`, `mod_len` bytes.
#[test]
fn dom0_gets_the_next_module_as_its_initrd() {
    let dir = scratch("initrd");
    let blob = dir.join("initrd.bin");
    std::fs::write(&blob, vec![0x5Au8; 123_457]).unwrap();
    let mut boot = Boot::new("initrd");
    boot.modules = vec![
        Module {
            path: test_guest("initrd"),
            cmdline: "dom0 len=123457".into(),
        },
        Module {
            path: blob,
            cmdline: "images".into(),
        },
    ];
    boot.stop_at = None;
    let b = boot.run();
    b.line("dom0: module 1 is its initrd (123457 bytes)");
    b.line("initrd: PASS len=123457");
    b.exited(QemuExit::Poweroff);
}

/// dom0's whole command line is its module's string (`scripts/run --dom0-cmdline`),
/// whatever its first word: with no module named `dom0`, the first module is dom0, as
/// on Xen; the guest sees exactly the string, the log shows the same, and the next
/// module is still its initrd.
#[test]
fn dom0_gets_a_whole_custom_command_line_without_the_dom0_word() {
    let dir = scratch("dom0-cmdline");
    let blob = dir.join("images.bin");
    std::fs::write(&blob, vec![0xA5u8; 4321]).unwrap();
    let line = r#"console=hvc0 root=/dev/xvda1 "init=/bin/sh -x" quiet"#;
    let mut boot = Boot::new("dom0-cmdline");
    boot.modules = vec![
        xtask::Module::dom0(test_guest("cmdline"), Some(line)).unwrap(),
        Module {
            path: blob,
            cmdline: "images".into(),
        },
    ];
    boot.stop_at = None;
    let b = boot.run();
    b.line(&format!("cmdline: PASS len={} [{line}]", line.len()));
    b.line(&format!(
        "module 0 'dom0': memory default, command line \"{line}\""
    ));
    b.line("module 0 'dom0': ELF64 x86-64, entry");
    b.line("dom0: module 1 is its initrd (4321 bytes)");
    b.no_line("warning:");
    b.exited(QemuExit::Poweroff);
}

/// A module named `dom0` is dom0 wherever it is, and its string, `dom0` included, is
/// the command line.
#[test]
fn a_named_dom0_gets_its_whole_string_too() {
    let line = "dom0 loglevel=3 x=y";
    let mut boot = Boot::new("dom0-named-cmdline");
    boot.modules = vec![
        Module {
            path: hypervisor().to_path_buf(),
            cmdline: "other-data".into(),
        },
        xtask::Module::dom0(test_guest("cmdline"), Some(line)).unwrap(),
    ];
    boot.stop_at = None;
    let b = boot.run();
    b.line(&format!("cmdline: PASS len={} [{line}]", line.len()));
    b.line(&format!(
        "module 1 'dom0': memory default, command line \"{line}\""
    ));
    b.line("dom0: module 0 is its initrd");
    b.exited(QemuExit::Poweroff);
}
