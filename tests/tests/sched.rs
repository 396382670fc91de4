//! Many domains at once: boot-time domUs next to dom0, scheduling, events between
//! domains, timers, and domain destruction with its leak check (docs/sched.md,
//! docs/evtchn.md).

use xlhv_tests::{Boot, Boot0, Module, QemuExit, demo_guest, test_guest};

/// A `domu` module line for `guest`.
fn domu(guest: &str, name: &str, extra: &str) -> Module {
    Module {
        path: test_guest(guest),
        cmdline: format!("domu name={name} mem=8M {extra}"),
    }
}

/// Boots dom0 `dom0` with `domus`, until dom0 powers the machine off.
fn boot(test: &str, dom0: Module, domus: Vec<Module>) -> Boot0 {
    let mut b = Boot::new(test);
    b.modules = vec![dom0];
    b.modules.extend(domus);
    b.stop_at = None;
    b.run()
}

fn dom0(path: std::path::PathBuf, cmdline: &str) -> Module {
    Module {
        path,
        cmdline: format!("dom0 {cmdline}").trim_end().into(),
    }
}

#[test]
fn boot_time_domus_run_beside_dom0_and_give_every_frame_back() {
    let b = boot(
        "domus-hello",
        dom0(demo_guest(), ""),
        vec![domu("hello", "one", ""), domu("hello", "two", "")],
    );
    b.exited(QemuExit::Poweroff);
    b.line("boot-time domU(s)");
    b.line("d1 'one'");
    b.line("d2 'two'");
    b.line("(d1) hello: PASS");
    b.line("(d2) hello: PASS");
    b.line("memory: all 2049 frames of domain 1 are back");
    b.line("memory: all 2049 frames of domain 2 are back");
    b.no_line("frames leaked");
    b.line("memory: all of dom0's frames are back");
}

#[test]
fn a_crashing_domu_does_not_disturb_dom0_or_its_neighbour() {
    let b = boot(
        "domus-crash",
        dom0(demo_guest(), ""),
        vec![domu("shutdown-crash", "bad", ""), domu("hello", "good", "")],
    );
    b.exited(QemuExit::Poweroff);
    b.line("domain 1 shut down: Crash");
    b.line("(d2) hello: PASS");
    b.line("memory: all 2049 frames of domain 1 are back");
    b.no_line("frames leaked");
}

#[test]
fn malformed_domu_modules_are_reported_and_skipped() {
    let junk = xlhv_tests::scratch("domu-junk").join("junk.elf");
    std::fs::write(&junk, b"\x7fELF not really").unwrap();
    let b = boot(
        "domus-malformed",
        dom0(demo_guest(), ""),
        vec![
            Module {
                path: junk,
                cmdline: "domu name=junk".into(),
            },
            Module {
                path: test_guest("hello"),
                cmdline: "domu name=huge mem=100G".into(),
            },
            domu("hello", "fine", ""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    b.line("domU 'junk' (module 1): not a usable PV kernel");
    b.line("domU 'huge' (module 2): needs");
    b.line("(d1) hello: PASS");
}

/// Passes as dom0 alone (every single-domain event and timer guest).
fn passes_as_dom0(name: &str) -> Boot0 {
    let b = xlhv_tests::boot_dom0(name, &test_guest(name));
    b.line(&format!("{name}: PASS"));
    b.exited(QemuExit::Poweroff);
    b
}

#[test]
fn event_channels_work_within_one_domain() {
    passes_as_dom0("evtchn-loopback");
}
