//! PV guests as dom0: each single-purpose test guest prints one result line and
//! powers off (or is expected to stop in a given way); malformed kernels are refused.

use xlhv_tests::{Boot, Module, QemuExit, boot_dom0, demo_guest, scratch, test_guest};

fn passes(name: &str) {
    let b = boot_dom0(name, &test_guest(name));
    b.line(&format!("(d0) {name}: PASS"));
    b.no_line(&format!("{name}: FAIL"));
    b.exited(QemuExit::Poweroff);
    no_leak(&b);
}

/// dom0's teardown gave back every frame it had (the leak check).
fn no_leak(b: &xlhv_tests::Boot0) {
    b.line("domain 0 destroyed: ");
    b.line("all of dom0's frames are back");
    b.no_line("frames leaked");
}

#[test]
fn hello() {
    passes("hello");
}

#[test]
fn trap_ud_is_bounced_to_the_guest() {
    passes("trap-ud");
}

#[test]
fn trap_pf_is_bounced_with_cr2() {
    passes("trap-pf");
}

#[test]
fn privileged_instruction_gives_gp() {
    passes("trap-gp");
}

/// Debug registers: set_debugreg's checks, a data breakpoint and single steps
/// delivered as #DB with Xen's DR6, a breakpoint hit by the hypervisor ignored (the
/// same guest passes on real Xen 4.17, tests/tests/xen_fidelity.rs).
#[test]
fn debug_registers_breakpoints_and_single_step() {
    passes("debugregs");
}

#[test]
fn user_mode_cli_sti_and_port_io_follow_the_virtual_iopl() {
    passes("user-iopl");
}

#[test]
fn guest_cr4_fsgsbase_enables_rd_wr_fs_gs_base() {
    passes("fsgsbase");
}

/// CPUID policy, CR4 masking, MSR answers and FS/GS bases after a null selector, as
/// Xen 4.17 gives them to a PV dom0 (the same guest passes on real Xen 4.17).
#[test]
fn cpu_policy_cr4_msrs_and_segment_bases_as_xen() {
    passes("cpu-policy");
}

/// XSAVE as Xen 4.17 gives it: CR4.OSXSAVE, `xsetbv` (legal values taken, others
/// #GP, #UD before OSXSAVE), leaf 0xD, and YMM state across yields (the same guest
/// passes on real Xen 4.17).
#[test]
fn xsave_xsetbv_and_avx_state_as_xen() {
    passes("xsave");
}

/// `SEGBASE_GS_USER_SEL` loads %gs; data selectors survive yields (the same guest
/// passes on real Xen 4.17).
#[test]
fn segsel_gs_user_sel_and_selectors_across_yields() {
    passes("segsel");
}

/// Prints what the `cpu-policy` guest reads here, to compare with
/// `xen_fidelity::cpu_policy_dump_on_real_xen`.
#[test]
#[ignore = "a diagnostic dump, not a check"]
fn cpu_policy_dump() {
    let mut boot = Boot::new("cpu-policy-dump");
    boot.modules = vec![Module {
        path: test_guest("cpu-policy"),
        cmdline: "dom0 dump".into(),
    }];
    boot.stop_at = None;
    let b = boot.run();
    for l in b.out.serial.lines().filter(|l| l.contains("cpu-policy:")) {
        println!("{l}");
    }
}

#[test]
fn unknown_hypercalls_give_enosys() {
    passes("enosys");
}

#[test]
fn xen_version_answers_like_xen_4_17() {
    passes("xen-version");
}

#[test]
fn descriptor_tables_are_audited() {
    passes("gdt");
}

#[test]
fn ldt_is_null_until_set_and_its_pages_are_audited_on_first_use() {
    passes("ldt");
}

#[test]
fn a_guest_without_handlers_is_crashed_and_reported() {
    let b = boot_dom0("no-handler", &test_guest("no-handler"));
    b.line("(d0) no-handler: START");
    b.line("domain 0 crashed: no handler for #UD (vector 6)");
    b.exited(QemuExit::Dom0Crash);
    no_leak(&b);
}

#[test]
fn shutdown_reasons_reach_the_exit_code() {
    boot_dom0("shutdown-reboot", &test_guest("shutdown-reboot")).exited(QemuExit::Reboot);
    boot_dom0("shutdown-crash", &test_guest("shutdown-crash")).exited(QemuExit::Dom0Crash);
}

#[test]
fn demo_kernel_boots_checks_itself_and_powers_off() {
    let b = boot_dom0("demo", &demo_guest());
    b.line("(d0) ");
    b.line("domid 0");
    b.line("page tables: its own");
    b.line("Xen 4.17");
    b.no_line("FAIL");
    b.exited(QemuExit::Poweroff);
    no_leak(&b);
}

/// A variant of a good kernel image, as a refused dom0 must never crash the hypervisor.
fn refused(name: &str, bytes: &[u8], expect: &str) {
    let dir = scratch(name);
    let path = dir.join("kernel.elf");
    std::fs::write(&path, bytes).unwrap();
    let mut boot = Boot::new(name);
    boot.modules = vec![Module {
        path,
        cmdline: "dom0".into(),
    }];
    boot.stop_at = Some("no domain to run".into());
    let b = boot.run();
    b.completed();
    let line = b.line("dom0: ");
    assert!(
        line.contains(expect),
        "{name}: expected {expect:?} in {line:?}"
    );
}

#[test]
fn malformed_dom0_images_are_refused_clearly() {
    let good = std::fs::read(test_guest("hello")).unwrap();
    let mut bad_magic = good.clone();
    bad_magic[0] = b'X';
    refused("elf-bad-magic", &bad_magic, "not an ELF image");
    let mut class32 = good.clone();
    class32[4] = 1; // ELFCLASS32
    refused("elf-32bit", &class32, "32-bit");
    let mut arm = good.clone();
    arm[18] = 40; // e_machine = EM_ARM
    refused("elf-machine", &arm, "x86-64");
    refused("elf-truncated", &good[..good.len() / 3], "truncated");
    refused("elf-empty", b"", "too short for a 64-byte ELF header");
    // A valid ELF without Xen notes: the hypervisor itself.
    let hv = std::fs::read(xlhv_tests::hypervisor()).unwrap();
    refused("elf-no-notes", &hv, "Xen notes");
}
