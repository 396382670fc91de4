//! Grant tables on xen-like-hv (docs/gnttab.md): the `gnttab` guest as dom0 (the
//! same guest passes on real Xen 4.17, tests/tests/xen_fidelity.rs), two domUs
//! created with dom0ctl sharing pages and copying 1 MiB, torn down in both orders
//! with every frame back, and a hostile domU beside a neighbour.

use std::time::{Duration, Instant};

use xlhv_tests::{Boot, Boot0, ControlHost, Module, QemuExit, boot_dom0, scratch, test_guest};

/// Every answer of the `gnttab` guest is Xen 4.17's.
#[test]
fn gnttab_guest_gets_xens_answers() {
    let b = boot_dom0("gnttab", &test_guest("gnttab"));
    b.line("(d0) gnttab: PASS");
    b.no_line("gnttab: FAIL");
    b.exited(QemuExit::Poweroff);
    b.line("all of dom0's frames are back");
    b.no_line("frames leaked");
}

/// The number after `key` and ':' in `dom0ctl info`'s output.
fn field(out: &str, key: &str) -> String {
    out.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

fn free_memory(h: &ControlHost) -> String {
    let i = h.dom0ctl(&["info"]);
    i.code(0);
    field(&i.stdout, "free_memory")
}

/// The `gnttab-peer` ELF without its debug sections (a sixteenth of the size), so
/// the upload over COM2 takes seconds; the ELF itself when `strip` is missing.
fn peer_kernel(test: &str) -> std::path::PathBuf {
    let full = test_guest("gnttab-peer");
    let small = scratch(test).join("gnttab-peer.elf");
    let stripped = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&small)
        .arg(&full)
        .status()
        .is_ok_and(|s| s.success());
    if stripped { small } else { full }
}

/// Writes a config for the `gnttab-peer` guest (uploaded from the host).
fn peer_config(test: &str, name: &str, cmdline: &str) -> String {
    peer_config_with(test, name, cmdline, "")
}

/// [`peer_config`] with further config lines.
fn peer_config_with(test: &str, name: &str, cmdline: &str, extra: &str) -> String {
    let p = scratch(test).join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = 16\ncmdline = \"{cmdline}\"\n{extra}",
            peer_kernel(test).display()
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

fn create(h: &ControlHost, cfg: &str) -> u16 {
    let c = h.dom0ctl(&["--timeout", "120", "create", cfg]);
    c.code(0);
    c.stdout
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("domid {:?}: {e}", c.stdout))
}

/// Waits until domain `dom`'s console (`dom0ctl console --no-follow`) has a line
/// containing `needle` (90 s at most); returns that line.
fn wait_console(h: &ControlHost, dom: &str, needle: &str) -> String {
    h.console_line(dom, needle, Some("gnttab-peer: FAIL"), 90)
}

/// Waits until COM1 has a line containing `needle` (30 s at most).
fn wait_log(h: &ControlHost, needle: &str) {
    let start = Instant::now();
    while !h.serial().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {needle:?} in:\n{}",
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value of `key=` in `line`.
fn value<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// A granter domU and a mapper domU (created with dom0ctl; they learn each other's
/// domid from their command lines): the mapper maps the granter's page and writes a
/// pattern the granter reads back, and copies 1 MiB of granted frames in 4 KiB
/// pieces with the same checksum the granter computed; the granter's `end_access`
/// says "still in use" while the mapper holds the mapping. Then both are destroyed,
/// `first` first, and free memory is back to the frame.
fn share_and_destroy(test: &str, granter_first: bool) {
    let h = ControlHost::boot(test);
    let free = free_memory(&h);
    // A fresh machine hands out ids in order: the granter gets 1, the mapper 2.
    let next = 1;
    let g = create(
        &h,
        &peer_config(
            test,
            "granter",
            &format!("role=granter peer={} hold=1", next + 1),
        ),
    );
    assert_eq!(g, next, "the granter's id");
    wait_console(&h, "granter", "gnttab-peer: granter ready ref=8");
    let m = create(
        &h,
        &peer_config(
            test,
            "mapper",
            &format!("role=mapper peer={g} ref=8 hold=1"),
        ),
    );
    assert_eq!(m, next + 1, "the mapper's id");
    let mapped = wait_console(&h, "mapper", "gnttab-peer: mapper PASS");
    let granted = wait_console(&h, "granter", "gnttab-peer: granter PASS");
    assert_eq!(value(&mapped, "checksum="), value(&granted, "checksum="));
    assert_eq!(value(&mapped, "pages="), "256", "{mapped}");
    assert_eq!(value(&granted, "busy="), "1", "{granted}");
    let (first, second) = if granter_first {
        ("granter", "mapper")
    } else {
        ("mapper", "granter")
    };
    h.dom0ctl(&["destroy", first]).code(0);
    h.dom0ctl(&["destroy", second]).code(0);
    let start = Instant::now();
    while free_memory(&h) != free && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(free_memory(&h), free, "every frame back\n{}", h.serial());
    let log = h.serial();
    for d in [g, m] {
        assert!(
            log.contains(&format!("frames of domain {d} are back")),
            "no 'frames of domain {d} are back' in:\n{log}"
        );
    }
    assert!(!log.contains("frames leaked"), "{log}");
    assert!(!log.contains("gnttab-peer: FAIL"), "{log}");
}

#[test]
fn two_domus_share_a_page_and_the_granter_goes_first() {
    share_and_destroy("gnttab-granter-first", true);
}

#[test]
fn two_domus_share_a_page_and_the_mapper_goes_first() {
    share_and_destroy("gnttab-mapper-first", false);
}

/// Without `hold`, the mapper unmaps and powers off, the granter revokes every
/// grant (`end_access` succeeds once the mapping is gone) and powers off.
#[test]
fn two_domus_share_a_page_and_clean_up_themselves() {
    let t = "gnttab-clean";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let keep = "on_poweroff = \"preserve\"\n";
    let g = create(
        &h,
        &peer_config_with(t, "granter", "role=granter peer=2", keep),
    );
    assert_eq!(g, 1);
    wait_console(&h, "granter", "gnttab-peer: granter ready ref=8");
    let m = create(
        &h,
        &peer_config_with(t, "mapper", "role=mapper peer=1 ref=8", keep),
    );
    assert_eq!(m, 2);
    wait_console(&h, "mapper", "gnttab-peer: mapper PASS");
    wait_console(&h, "granter", "gnttab-peer: granter PASS");
    h.dom0ctl(&["destroy", "mapper"]).code(0);
    h.dom0ctl(&["destroy", "granter"]).code(0);
    wait_log(&h, "frames of domain 1 are back");
    wait_log(&h, "frames of domain 2 are back");
    assert_eq!(free_memory(&h), free, "every frame back");
}

/// Boots a `ticker` dom0 (`secs` seconds) with boot-time domUs built by the
/// hypervisor (`(name, guest, cmdline)`), until dom0 powers the machine off.
fn beside_ticker(test: &str, secs: u32, domus: &[(&str, &str, &str)]) -> Boot0 {
    let mut b = Boot::new(test);
    b.modules = vec![Module {
        path: test_guest("ticker"),
        cmdline: format!("dom0 secs={secs}"),
    }];
    for (name, guest, cmdline) in domus {
        b.modules.push(Module {
            path: test_guest(guest),
            cmdline: format!("domu name={name} mem=16M \"cmdline={cmdline}\""),
        });
    }
    b.stop_at = None;
    b.deadline = Duration::from_secs(240);
    b.run()
}

/// The same exchange between two boot-time domUs (ids 1 and 2), which print on
/// COM1: the mapper writes, the granter reads back, 1 MiB copied, both clean up;
/// the ticker dom0 keeps its rate; every frame comes back.
#[test]
fn boot_time_domus_share_a_page() {
    let b = beside_ticker(
        "gnttab-boot-domus",
        6,
        &[
            ("granter", "gnttab-peer", "role=granter peer=2"),
            ("mapper", "gnttab-peer", "role=mapper peer=1 ref=8"),
        ],
    );
    b.exited(QemuExit::Poweroff);
    let m = b.line("(d2) gnttab-peer: mapper PASS").to_string();
    let g = b.line("(d1) gnttab-peer: granter PASS").to_string();
    assert_eq!(value(&m, "checksum="), value(&g, "checksum="));
    b.line("ticker: PASS");
    b.line("frames of domain 1 are back");
    b.line("frames of domain 2 are back");
    b.no_line("frames leaked");
}

/// `gnttab-hostile` as a domU beside a ticker dom0: every abuse gets Xen 4.17's
/// answer (the guest passes on real Xen as dom0, xen_fidelity.rs), the maptrack
/// flood stops at Xen's limit with `GNTST_no_space`, the ticker keeps its rate and
/// every frame comes back.
#[test]
fn hostile_domu_gets_xens_answers_beside_a_ticker() {
    let b = beside_ticker(
        "gnttab-hostile-domu",
        8,
        &[("hostile", "gnttab-hostile", "flood=1")],
    );
    b.exited(QemuExit::Poweroff);
    b.no_line("gnttab-hostile: FAIL");
    let pass = b.line("(d1) gnttab-hostile: PASS").to_string();
    assert_eq!(
        value(&pass, "maps="),
        "262143",
        "Xen 4.17's maptrack limit: {pass}"
    );
    b.line("ticker: PASS");
    b.line("frames of domain 1 are back");
    b.no_line("frames leaked");
}
