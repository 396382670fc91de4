//! Domains with several vCPUs (docs/smp.md): the runtime's `smp` guest as a
//! four-vCPU dom0 on two CPUs (IPIs, per-vCPU timers, page-table updates from every
//! vCPU, racing `VCPUOP`s; the same guest passes on real Xen 4.17 in
//! `xen_fidelity::smp_on_real_xen`), and the TLB shoot-down that keeps a stale
//! writable translation of another vCPU out of a new page table.

use xlhv_tests::{Boot, Boot0, Module, QemuExit, test_guest};

/// Boots test guest `guest` as dom0 with `cmdline` for the hypervisor, until dom0
/// powers the machine off (at most `secs` seconds).
fn run(test: &str, guest: &str, cmdline: &str, dom0_args: &str, secs: u64) -> Boot0 {
    let mut b = Boot::new(test);
    b.cmdline = cmdline.into();
    b.modules = vec![Module {
        path: test_guest(guest),
        cmdline: format!("dom0 {dom0_args}").trim_end().into(),
    }];
    b.stop_at = None;
    b.deadline = std::time::Duration::from_secs(secs);
    b.run()
}

/// Four vCPUs of one domain on two CPUs: 100,000 IPIs between them, each vCPU's own
/// timer, `mmu_update`/`mmuext` on private and shared tables from every vCPU with
/// `*_MULTI` flushes, and `VCPUOP_initialise`/`up`/`down`/`is_up` raced on each
/// other; every answer as Xen's, no page-table type left, no frame leaked.
#[test]
fn four_vcpus_of_one_domain_share_two_cpus() {
    // The IPI phase waits for the host to run the other CPU's QEMU thread at every
    // wake-up: about 20 s on a quiet host, minutes on a loaded one.
    let b = run("smp-guest", "smp", "dom0_max_vcpus=4", "", 900);
    b.exited(QemuExit::Poweroff);
    b.line("4 vCPU(s)");
    let line = b.line("smp: PASS");
    assert!(
        line.contains("vcpus=4 ipis=100000 timers=4"),
        "smp guest: {line}"
    );
    b.no_line("xen-like-hv fault");
    b.no_line("frames leaked");
    b.line("memory: all of dom0's frames are back");
}

/// dom0 gets one vCPU per CPU by default, as on Xen.
#[test]
fn dom0_gets_a_vcpu_per_cpu_by_default() {
    let mut b = Boot::new("smp-dom0-default");
    b.smp = 4;
    b.modules = vec![Module {
        path: test_guest("hello"),
        cmdline: "dom0".into(),
    }];
    let b = b.run();
    b.line("weight 4096, 4 vCPU(s)");
}

/// A vCPU that keeps storing through a writable mapping while another vCPU of its
/// domain unmaps the frame (asking no flush) and pins it as an L1 table: once the pin
/// returns, the table never changes and the store faults, because every CPU that may
/// hold the translation flushed before the type changed.
#[test]
fn a_stale_writable_translation_never_reaches_a_new_page_table() {
    let b = run(
        "stale-tlb",
        "stale-tlb",
        "dom0_max_vcpus=2",
        "rounds=20",
        300,
    );
    b.exited(QemuExit::Poweroff);
    let line = b.line("stale-tlb: PASS");
    eprintln!("{line}");
    b.no_line("stale-tlb: FAIL");
}

/// `VCPUOP_send_nmi` to itself, to a blocked, a spinning and a down vCPU of its domain,
/// one NMI at a time and never nested; `get_physid` refused for a vCPU that is not
/// pinned. The same guest passes on real Xen 4.17 (`xen_fidelity::nmi_on_real_xen`).
#[test]
fn nmis_reach_every_vcpu_as_on_xen() {
    let b = run("nmi", "nmi", "dom0_max_vcpus=2", "rounds=300", 300);
    b.exited(QemuExit::Poweroff);
    let line = b.line("nmi: PASS");
    assert!(
        line.contains("self=4 blocked=300 spinning=300 to0=300 down=1 physid=einval"),
        "{line}"
    );
    b.no_line("xen-like-hv fault");
}

/// `dom0_vcpus_pin`: dom0's vCPU n runs on CPU n only, and `VCPUOP_get_physid`
/// reports that CPU's APIC and ACPI ids.
#[test]
fn dom0_vcpus_pin_pins_and_get_physid_reports_the_cpu() {
    let b = run(
        "nmi-pinned",
        "nmi",
        "dom0_max_vcpus=2 dom0_vcpus_pin",
        "rounds=50 pinned=1",
        300,
    );
    b.exited(QemuExit::Poweroff);
    let line = b.line("nmi: PASS");
    assert!(line.contains("physid=0,1"), "{line}");
}
