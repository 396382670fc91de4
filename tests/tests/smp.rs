//! Domains with several vCPUs (docs/smp.md): the runtime's `smp` guest as a
//! four-vCPU dom0 on two CPUs (IPIs, per-vCPU timers, page-table updates from every
//! vCPU, racing `VCPUOP`s; the same guest passes on real Xen 4.17 in
//! `xen_fidelity::smp_on_real_xen`), and the TLB shoot-down that keeps a stale
//! writable translation of another vCPU out of a new page table.

use std::time::{Duration, Instant};
use xlhv_tests::{Boot, Boot0, ControlHost, Module, QemuExit, scratch, stripped_guest, test_guest};

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

/// `dom0ctl info`'s free memory line.
fn free_memory(h: &ControlHost) -> String {
    let i = h.dom0ctl(&["info"]);
    i.code(0);
    i.stdout
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "free_memory")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no free_memory in {}", i.stdout))
}

/// Four CPUs, four domUs of four vCPUs each (`vcpus = 4` in their configs, the
/// kernel uploaded by `dom0ctl`), all running the `smp` guest at once: IPIs, per-vCPU
/// timers, `mmu_update`/`mmuext` on private and shared tables from every vCPU, and
/// raced `VCPUOP`s, so up to four vCPUs of different domains update page tables on
/// different CPUs while dom0 maps their frames to build and serve them. Each domU
/// must pass (its tables end with no page-table type left) and, once all are
/// destroyed, free memory must be back to the frame.
#[test]
fn four_domus_of_four_vcpus_each_on_four_cpus() {
    let t = "smp-4x4";
    let h = ControlHost::boot_fast_cpus(t, "768M", 4, "");
    let free = free_memory(&h);
    let cfg = scratch(t).join("smp.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"s\"\nkernel = \"{}\"\nmemory = 32\nvcpus = 4\n\
             cmdline = \"ipis=2000 race=300 mmu_iters=300\"\non_poweroff = \"preserve\"\n",
            test_guest("smp").display()
        ),
    )
    .unwrap();
    let cfg = cfg.to_string_lossy().into_owned();
    for i in 0..4 {
        let name = format!("name=s{i}");
        h.dom0ctl(&["--link", "fast", "--timeout", "120", "create", &cfg, &name])
            .code(0);
    }
    // Under TCG on a two-core host the 16 vCPUs share two real cores.
    let start = Instant::now();
    let mut pending: Vec<usize> = (0..4).collect();
    while !pending.is_empty() {
        pending.retain(|&i| {
            let c = h.dom0ctl(&["console", &format!("s{i}"), "--no-follow"]);
            assert!(!c.stdout.contains("smp: FAIL"), "s{i}: {}", c.stdout);
            if let Some(line) = c.stdout.lines().find(|l| l.contains("smp: PASS")) {
                assert!(line.contains("vcpus=4 ipis=2000 timers=4"), "s{i}: {line}");
                eprintln!("s{i}: {line}");
                false
            } else {
                true
            }
        });
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "still running: {pending:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for i in 0..4 {
        h.dom0ctl(&["destroy", &format!("s{i}")]).code(0);
    }
    assert_eq!(free_memory(&h), free, "every frame back");
    let log = h.serial();
    assert!(!log.contains("frames leaked"), "a leak:\n{log}");
    assert!(!log.contains("xen-like-hv fault"), "a fault:\n{log}");
    for d in 1..=4 {
        let back = format!("memory: all 8194 frames of domain {d} are back");
        assert!(log.contains(&back), "no {back:?}:\n{log}");
    }
}

/// The `hog: PASS` line of domain `name`'s console: its running share of the wall
/// time it measured.
fn hog_share(h: &ControlHost, name: &str) -> f64 {
    let start = Instant::now();
    loop {
        let c = h.dom0ctl(&["console", name, "--no-follow"]);
        if let Some(line) = c.stdout.lines().find(|l| l.contains("hog: PASS")) {
            let field = |k: &str| -> f64 {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{name}: no {k} in {line:?}"))
            };
            return field("running_ns=") / field("wall_ns=");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "{name} never passed:\n{}",
            c.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Hard affinity holds: on two CPUs, two hogs pinned to CPU 1 (`cpus = "1"`) share
/// it, about half each, while a third pinned to CPU 0 has that CPU nearly to itself
/// (dom0's toolstack idles). Unpinned, three hogs on two CPUs get about two thirds
/// each, so the test tells the difference.
#[test]
fn pinned_hogs_share_their_cpu_and_leave_the_other_alone() {
    let t = "smp-affinity";
    let h = ControlHost::boot_fast_cpus(t, "512M", 2, "");
    for (name, cpus) in [("a", "1"), ("b", "1"), ("c", "0")] {
        let cfg = scratch(t).join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\nimage = \"hog\"\nmemory = 8\ncpus = \"{cpus}\"\n\
                 cmdline = \"warmup=4 secs=4 name={name}\"\non_poweroff = \"preserve\"\n"
            ),
        )
        .unwrap();
        h.dom0ctl(&["create", &cfg.to_string_lossy()]).code(0);
    }
    let (a, b, c) = (hog_share(&h, "a"), hog_share(&h, "b"), hog_share(&h, "c"));
    eprintln!("shares: a {a:.3}, b {b:.3} (CPU 1), c {c:.3} (CPU 0)");
    for (name, share) in [("a", a), ("b", b)] {
        assert!(
            (0.4..=0.6).contains(&share),
            "{name} ran {:.0}% of its time on CPU 1 beside another hog, want about 50%",
            share * 100.0
        );
    }
    assert!(
        c >= 0.85,
        "c ran {:.0}% of its time alone on CPU 0, want nearly all",
        c * 100.0
    );
    for n in ["a", "b", "c"] {
        h.dom0ctl(&["destroy", n]).code(0);
    }
}

/// Soft affinity places vCPUs (`cpus_soft =`, credit2's rules): a hog that prefers
/// CPU 1 and one that prefers CPU 0 each run on the CPU they prefer, whichever CPU
/// each was created from. Two rounds with the preferences swapped, so that the
/// placement the scheduler would pick anyway cannot pass both; the soft maps read
/// back with `vcpu-list`. Three CPUs: dom0, which answers each `vcpu-list`, finds
/// CPU 2 idle instead of preempting a hog (on two CPUs the sampling itself moves
/// them: a hog that dom0 preempted and that fell a timeslice behind is taken by
/// the other CPU, for fairness, until the next slice end swaps them back).
#[test]
fn soft_affinity_puts_each_hog_on_the_cpu_it_prefers() {
    let t = "smp-soft";
    let h = ControlHost::boot_fast_cpus(t, "512M", 3, "");
    // (CPU, soft map) of `dom`'s vCPU 0, from `vcpu-list`.
    let where_is = |dom: &str| -> (String, String) {
        let rows = h.vcpu_rows(dom);
        let w = rows
            .first()
            .unwrap_or_else(|| panic!("{dom}: no vCPU rows"));
        (w[3].clone(), w[8].clone())
    };
    for (round, pair) in [[("a", "1"), ("b", "0")], [("c", "0"), ("d", "1")]]
        .iter()
        .enumerate()
    {
        for (name, soft) in pair {
            let cfg = scratch(t).join(format!("{name}.toml"));
            std::fs::write(
                &cfg,
                format!(
                    "name = \"{name}\"\nimage = \"hog\"\nmemory = 8\ncpus_soft = \"{soft}\"\n\
                     cmdline = \"secs=60 name={name}\"\n"
                ),
            )
            .unwrap();
            h.dom0ctl(&["create", &cfg.to_string_lossy()]).code(0);
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut on = [0u32; 2];
        let mut seen = String::new();
        for _ in 0..12 {
            for (i, (name, soft)) in pair.iter().enumerate() {
                let (cpu, map) = where_is(name);
                assert_eq!(&map, soft, "round {round}: {name}'s soft map");
                on[i] += u32::from(cpu == *soft);
                seen.push_str(&cpu);
            }
            seen.push(' ');
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("round {round}: on the preferred CPU in {on:?} of 12 samples (CPUs: {seen})");
        for (i, (name, soft)) in pair.iter().enumerate() {
            assert!(
                on[i] >= 10,
                "round {round}: {name} (cpus_soft = \"{soft}\") ran on CPU {soft} in {} of 12 samples",
                on[i]
            );
        }
        for (name, _) in pair {
            h.dom0ctl(&["destroy", name]).code(0);
        }
    }
}

/// An idle CPU keeps the page tables of the vCPU it ran last, so that vCPU goes on
/// without a CR3 load when it wakes there (docs/smp.md, "Lazy idle"). A `lazy-tlb`
/// domU remaps one address between two frames with local flushes only and sleeps
/// after each read, while the test moves its vCPU between CPUs 1 and 2 (dom0 has
/// CPU 0 to itself, so nothing else runs there). A CPU that went on with what it
/// kept from the vCPU's earlier run there would read the frame mapped then; the test
/// fails that way when `tlb::take_lazy` always answers yes.
#[test]
fn a_vcpu_back_on_a_cpu_it_left_never_reuses_what_that_cpu_kept() {
    let t = "smp-lazy-tlb";
    let h = ControlHost::boot_fast_cpus(t, "512M", 3, "dom0_max_vcpus=1 dom0_vcpus_pin");
    let cfg = scratch(t).join("lazy.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"lazy\"\nkernel = \"{}\"\nmemory = 8\ncpus = \"1\"\ncmdline = \"secs=15\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\n",
            stripped_guest(t, "lazy-tlb").display()
        ),
    )
    .unwrap();
    h.dom0ctl(&["create", &cfg.to_string_lossy()]).code(0);
    let mut moves = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        let cpu = if moves % 2 == 0 { "2" } else { "1" };
        let r = h.dom0ctl(&["vcpu-pin", "lazy", "0", cpu]);
        if r.code != Some(0) {
            // It finished early: its console says why.
            break;
        }
        moves += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let out = h.console_until("lazy", "lazy-tlb: PASS", Some("lazy-tlb: FAIL"), 120);
    eprintln!("{moves} moves; {}", out.trim());
    assert!(moves >= 10, "only {moves} moves in 12 s");
}
