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
    boot_cmdline(test, "", dom0, domus)
}

/// [`boot`] with the hypervisor command line `cmdline`.
fn boot_cmdline(test: &str, cmdline: &str, dom0: Module, domus: Vec<Module>) -> Boot0 {
    boot_on(test, xlhv_tests::test_smp(), cmdline, dom0, domus)
}

/// [`boot_cmdline`] on `cpus` CPUs.
fn boot_on(test: &str, cpus: u32, cmdline: &str, dom0: Module, domus: Vec<Module>) -> Boot0 {
    let mut b = Boot::new(test);
    b.smp = cpus;
    b.cmdline = cmdline.into();
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
    b.line("memory: all 2050 frames of domain 1 are back");
    b.line("memory: all 2050 frames of domain 2 are back");
    b.no_line("frames leaked");
    b.line("memory: all of dom0's frames are back");
}

/// The least memory `hello` runs in (issue 21), to the page: its bootstrap region
/// alone (the image, P2M, start info, xenstore and console pages, page tables, the
/// boot stack and 512 KiB of slack, no frame after it), as `pvboot` lays it out for
/// this build of the image; a page less is refused with both sizes named. (The
/// hypervisor's `mem=` takes KiB; dom0ctl speaks MiB, and `dom0ctl.rs` runs `hello`
/// in 2 MiB.)
#[test]
fn hello_runs_in_its_bootstrap_region_alone_and_a_page_less_is_refused() {
    let image = std::fs::read(test_guest("hello")).unwrap();
    let elf = pvboot::elf::Elf::parse(&image).unwrap();
    let info = pvboot::XenImageInfo::parse(&elf).unwrap();
    let least = (1..1024)
        .find(|&n| pvboot::Layout::compute(&info, n, pvboot::Flavour::DomU, 0).is_ok())
        .unwrap();
    assert!(least <= 512, "hello needs {least} pages, over 2 MiB");
    let module = |name: &str, pages: u64| Module {
        path: test_guest("hello"),
        cmdline: format!("domu name={name} mem={}K", pages * 4),
    };
    let b = boot(
        "domus-mini",
        dom0(demo_guest(), ""),
        vec![module("less", least - 1), module("least", least)],
    );
    b.exited(QemuExit::Poweroff);
    b.line(&format!(
        "domU 'less' (module 1): cannot lay out its memory: the domain has {} KiB ({} pages) \
         but this image's bootstrap layout needs {} KiB ({least} pages",
        (least - 1) * 4,
        least - 1,
        least * 4
    ));
    b.line("d1 'least'");
    b.line("(d1) hello: PASS");
    b.no_line("(d1) pv-runtime: warning");
    b.line(&format!(
        "memory: all {} frames of domain 1 are back",
        least + 2
    ));
    b.no_line("frames leaked");
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
    b.line("memory: all 2050 frames of domain 1 are back");
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

#[test]
fn sleep_wakes_on_time() {
    passes_as_dom0("sleep");
}

/// The pvclock keeps the HPET's rate and never goes back while the hypervisor refines
/// its TSC rate a second after boot and publishes every pvclock again, and a
/// registered time area gets the new record too.
#[test]
fn pvclock_survives_the_clock_refinement() {
    let b = passes_as_dom0("clock");
    b.line("time: refined against the HPET");
    // The registered second copy (VCPUOP_register_vcpu_time_memory_area) followed.
    b.line(" area=same");
}

#[test]
fn event_channel_errors_match_xen() {
    let b = passes_as_dom0("evtchn-errors");
    // 4096 ports minus the reserved port 0 and the timer port, as on Xen 4.17; a
    // valid FIFO init_control is refused (Xen 4.17 accepts it: xen_fidelity.rs).
    b.line("evtchn-errors: PASS ports=4094 fifo=EOPNOTSUPP");
}

/// The number after `key=` in the first line containing `needle`.
fn field(b: &Boot0, needle: &str, key: &str) -> f64 {
    let line = b.line(needle);
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"));
    v.parse()
        .unwrap_or_else(|e| panic!("{key}={v} in {line:?}: {e}"))
}

#[test]
fn a_ticker_keeps_its_rate_next_to_a_cpu_hog() {
    let b = boot(
        "ticker-hog",
        dom0(test_guest("ticker"), "secs=2"),
        vec![domu("hog", "hog", "\"cmdline=secs=4 name=hog\"")],
    );
    b.exited(QemuExit::Poweroff);
    b.line("ticker: PASS");
}

/// Two domUs keep different patterns in YMM0-15 across 5,000 yields each, on one CPU
/// so that each yield switches domains (some 10,000 switches, dom0 ticking beside
/// them): each vCPU's AVX state is its own (XSAVE/XRSTOR on every switch).
#[test]
fn avx_state_is_per_domain_across_switches() {
    let b = boot_on(
        "xsave-domus",
        1,
        "",
        dom0(test_guest("ticker"), "secs=4"),
        vec![
            domu("xsave", "xa", "\"cmdline=seed=1 rounds=5000\""),
            domu("xsave", "xb", "\"cmdline=seed=2 rounds=5000\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    b.line("(d1) xsave: PASS");
    b.line("(d2) xsave: PASS");
    b.no_line("xsave: FAIL");
    b.line("ticker: PASS");
}

/// Two domUs load different data selectors (%ds, %es, %fs, %gs) before each of a few
/// hundred yields, with a dom0 between them: each vCPU finds its own (Xen's
/// `save_segments`/`load_segments`).
#[test]
fn data_selectors_are_per_domain_across_switches() {
    let b = boot(
        "segsel-domus",
        dom0(test_guest("ticker"), "secs=2"),
        vec![
            domu("segsel", "sa", "\"cmdline=seed=1 rounds=300\""),
            domu("segsel", "sb", "\"cmdline=seed=2 rounds=300\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    b.line("(d1) segsel: PASS");
    b.line("(d2) segsel: PASS");
    b.no_line("segsel: FAIL");
    b.line("ticker: PASS");
}

/// A domU whose %fs selector stops loading while it is switched out (it loaded it
/// from its LDT, then dropped the LDT) gets Xen's failsafe callback when switched back
/// in, with %fs NULL; its neighbours are undisturbed.
#[test]
fn a_selector_that_no_longer_loads_gets_the_failsafe_callback() {
    let b = boot(
        "segsel-failsafe",
        dom0(test_guest("ticker"), "secs=2"),
        vec![
            domu("segsel", "sf", "\"cmdline=failsafe=1\""),
            domu("segsel", "sb", "\"cmdline=seed=3 rounds=100\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    b.line("(d1) segsel: PASS");
    b.line("(d2) segsel: PASS");
    b.no_line("segsel: FAIL");
    b.line("ticker: PASS");
}

/// A domU trying every LDT attack (a gate at linear 0x1000 with no LDT, a gate into the
/// hypervisor in its LDT, a writable mapping of a live LDT page, a non-canonical LDT)
/// gets Xen's answers while a ticker dom0 keeps its rate; every frame comes back.
#[test]
fn a_hostile_ldt_domu_does_not_disturb_a_ticker() {
    let b = boot(
        "ldt-domu",
        dom0(test_guest("ticker"), "secs=2"),
        vec![domu("ldt", "ldt", "")],
    );
    b.exited(QemuExit::Poweroff);
    b.line("(d1) ldt: PASS");
    b.line("ticker: PASS");
    b.line("frames of domain 1 are back");
    b.no_line("frames leaked");
}

#[test]
fn weights_two_to_one_split_the_cpu_two_to_one() {
    // dom0 at a domU's weight (its default is 16 times that, docs/sched.md), so the
    // three hogs share the CPU 2:1:2 and dom0's share says whether it ran alone. One
    // CPU: on two, the heavy one's share (a CPU of its own) is capped, not weighed.
    let b = boot_on(
        "weights",
        1,
        "dom0_weight=256",
        dom0(test_guest("hog"), "secs=4 name=dom0"),
        vec![
            domu("hog", "heavy", "weight=512 \"cmdline=secs=2 name=heavy\""),
            domu("hog", "light", "weight=256 \"cmdline=secs=2 name=light\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    let heavy = field(&b, "hog: PASS name=heavy", "running_ns");
    let light = field(&b, "hog: PASS name=light", "running_ns");
    let ratio = heavy / light;
    assert!(
        (1.8..=2.2).contains(&ratio),
        "heavy/light = {ratio:.3} ({heavy} / {light} ns), want 2 within 10%"
    );
    // dom0 (weight 256) shares the CPU with them from the start: a quarter of it while
    // both run. It must not have run alone first.
    let dom0_share = field(&b, "hog: PASS name=dom0", "running_ns")
        / field(&b, "hog: PASS name=dom0", "wall_ns");
    assert!(
        dom0_share < 0.8,
        "dom0 ran {:.0}% of its wall time: the domUs did not run beside it",
        dom0_share * 100.0
    );
}

/// Three hogs (dom0 and two domUs, equal weights) on `cpus` CPUs: the share of its
/// wall time each domU ran, by its own runstate (which counts while it is on a CPU,
/// however the host schedules QEMU's threads).
fn hog_shares(cpus: u32) -> [f64; 2] {
    let b = boot_on(
        &format!("hogs-smp{cpus}"),
        cpus,
        "dom0_weight=256",
        dom0(test_guest("hog"), "secs=5 name=dom0"),
        vec![
            domu("hog", "a", "\"cmdline=secs=3 name=a\""),
            domu("hog", "b", "\"cmdline=secs=3 name=b\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    ["a", "b"].map(|n| {
        let needle = format!("hog: PASS name={n} ");
        field(&b, &needle, "running_ns") / field(&b, &needle, "wall_ns")
    })
}

/// On two CPUs three equal hogs each run about two thirds of the time (one CPU
/// could give each a third at most).
#[test]
fn three_hogs_share_two_cpus() {
    for (i, share) in hog_shares(2).into_iter().enumerate() {
        assert!(
            (0.5..=0.85).contains(&share),
            "domU {i} ran {:.0}% of its wall time on two CPUs, want about 67%",
            share * 100.0
        );
    }
}

/// On four CPUs each of three hogs has a CPU of its own.
#[test]
fn three_hogs_on_four_cpus_each_run_all_the_time() {
    for (i, share) in hog_shares(4).into_iter().enumerate() {
        assert!(
            share >= 0.85,
            "domU {i} ran {:.0}% of its wall time on four CPUs, want all of it",
            share * 100.0
        );
    }
}

/// Two domUs beside a CPU-hog dom0: the hog must not starve them (it once did, when
/// the first one-shot timer was taken by the hypervisor before dom0 first ran).
#[test]
fn two_domus_ping_pong_ten_thousand_events() {
    // dom0 at a domU's weight: at its default (16 times that, docs/sched.md) a dom0
    // that hogs leaves the pair 1/17 of the CPU, too little for 10000 round trips in
    // its 8 s. What this checks is that they run beside the hog at all.
    let b = boot_cmdline(
        "pingpong",
        "dom0_weight=256",
        dom0(test_guest("hog"), "secs=8 name=dom0"),
        vec![
            domu(
                "pingpong",
                "ping",
                "\"cmdline=role=ping peer=2 count=10000\"",
            ),
            domu(
                "pingpong",
                "pong",
                "\"cmdline=role=pong peer=1 count=10000\"",
            ),
        ],
    );
    b.line("(d1) pingpong: PASS role=ping count=10000");
    b.line("(d2) pingpong: PASS role=pong count=10000");
    b.line("memory: all 2050 frames of domain 1 are back");
    b.line("memory: all 2050 frames of domain 2 are back");
}

/// The benchmark's domU pair (`scripts/bench`, docs/bench.md), in quick mode: both
/// metrics between two domUs come out, with dom0 idling beside them.
#[test]
fn bench_domu_pair_reports_round_trip_and_switch() {
    let bench = xtask::build_kernel("pv-bench", "bench").expect("building the bench guest");
    let module = |kind: &str| Module {
        path: bench.clone(),
        cmdline: kind.into(),
    };
    let mut b = Boot::new("bench-domus");
    b.modules = vec![
        module("dom0 role=host"),
        module("domu name=ping mem=16M \"cmdline=role=ping peer=2 quick\""),
        module("domu name=pong mem=16M \"cmdline=role=pong peer=1 quick\""),
    ];
    b.stop_at = Some("(d1) bench: done:".into());
    let b = b.run();
    for metric in ["domu_evtchn_rtt", "domu_switch"] {
        b.line(&format!("(d1) bench-result metric={metric} "));
    }
    b.no_line("bench: ping:");
    b.no_line("bench: pong:");
}

/// Xen's rule for a dead peer: destroying a domain closes its ports, and the other
/// end of each interdomain channel is left unbound, still naming the dead domain.
#[test]
fn a_destroyed_domains_peer_sees_its_channel_unbound() {
    let b = boot(
        "peer-destroyed",
        dom0(demo_guest(), ""),
        vec![
            domu("pingpong", "short", "\"cmdline=role=ping peer=2 count=0\""),
            domu("pingpong", "survivor", "\"cmdline=role=survivor peer=1\""),
        ],
    );
    b.exited(QemuExit::Poweroff);
    b.line("(d1) pingpong: PASS role=ping count=0");
    b.line("domain 1 destroyed");
    // The survivor's port number depends on whether it bound its timer first.
    let l = b.line("(d2) pingpong: PASS role=survivor port=");
    assert!(l.ends_with("state=unbound remote=1"), "{l}");
    b.line("memory: all 2050 frames of domain 2 are back");
}

/// `VCPUOP_register_vcpu_info`: refusals, the copy, and events flagged in the new
/// place (the same guest passes on real Xen 4.17, tests/tests/xen_fidelity.rs).
#[test]
fn register_vcpu_info_moves_the_vcpu_info() {
    passes_as_dom0("vcpu-info");
}
