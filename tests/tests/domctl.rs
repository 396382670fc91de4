//! The control domain's interface (`domctl`, `sysctl`) on the machine:
//! docs/domains.md, "Domain control".

use xlhv_tests::{Boot, Module, QemuExit, test_guest};

fn boot(name: &str, modules: Vec<Module>) -> xlhv_tests::Boot0 {
    let mut b = Boot::new(name);
    b.modules = modules;
    b.stop_at = None;
    b.run()
}

/// dom0 creates, inspects, pauses and destroys 50 domains: ids move on, and free
/// memory is back to the frame afterwards; one left behind is torn down with dom0.
#[test]
fn dom0_creates_and_destroys_domains_without_leaking() {
    let b = boot(
        "domctl",
        vec![Module {
            path: test_guest("domctl"),
            cmdline: "dom0 count=50 leave=1".into(),
        }],
    );
    b.line("domctl: PASS rounds=50");
    b.line("d1 created by the control domain");
    b.line("d50 created by the control domain");
    b.line("domain 50: destroyed by the control domain");
    // Domain 1 got frames, the hypercall page and a context on an empty L4: once
    // unpaused it runs and faults at its first instruction; it is kept, as Xen keeps
    // a crashed domain for the toolstack, until dom0 destroys it.
    b.line("domain 1 crashed: no handler for #PF (vector 14) at rip 0xffff800000100000");
    b.line("domain 1 kept until the toolstack destroys it");
    b.line("domain 1: destroyed by the control domain");
    // Counts include the shared_info frame and the grant table's first frame.
    b.line("memory: all 4 frames of domain 1 are back");
    b.line("memory: all 2 frames of domain 50 are back");
    // A frame dom0 still mapped at destroy comes back when dom0 unmaps it.
    b.line("still referenced elsewhere come back when released");
    b.line("the last frame of destroyed domain 51 is back");
    b.line("d52 created by the control domain");
    b.line("memory: all 2 frames of domain 52 are back");
    b.no_line("frames leaked");
    b.exited(QemuExit::Poweroff);
}

/// Only the control domain may use domctl and sysctl.
#[test]
fn a_domu_gets_eperm() {
    let b = boot(
        "domctl-domu",
        vec![
            Module {
                path: xlhv_tests::demo_guest(),
                cmdline: "dom0".into(),
            },
            Module {
                path: test_guest("domctl"),
                cmdline: "domu name=probe mem=8M \"cmdline=role=domu\"".into(),
            },
        ],
    );
    b.line("(d1) domctl: PASS role=domu");
    b.exited(QemuExit::Poweroff);
}
