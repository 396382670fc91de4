//! XenStore end to end: dom0's xenstored serving real domUs built by its
//! toolstack, driven with the real `dom0ctl` (docs/xenstore.md, "In dom0").

use std::time::{Duration, Instant};

use xlhv_tests::{ControlHost, scratch};

/// A config file in the test's scratch folder; returns its path.
fn config(test: &str, file: &str, text: &str) -> String {
    let p = scratch(test).join(file);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// Waits until `dom`'s console shows `needle` (or fails after `secs`).
fn wait_for_console(h: &ControlHost, dom: &str, needle: &str, secs: u64) -> String {
    h.console_until(dom, needle, Some("xenstore: FAIL"), secs)
}

/// Creates a `xenstore` guest named `name` with `cmdline`; returns its id.
fn create(h: &ControlHost, cfg: &str, name: &str, cmdline: &str) -> u16 {
    create_with(
        h,
        &[cfg, &format!("name={name}"), &format!("cmdline={cmdline}")],
    )
}

/// `dom0ctl create ARGS...` (a config and its overrides); the new domain's id.
fn create_with(h: &ControlHost, args: &[&str]) -> u16 {
    let mut all = vec!["--timeout", "120", "create"];
    all.extend_from_slice(args);
    let c = h.dom0ctl(&all);
    c.code(0);
    c.stdout.trim().parse().unwrap()
}

#[test]
fn domus_read_watch_are_isolated_and_quota_bound() {
    let t = "xenstore-basics";
    let h = ControlHost::boot_full(t, "autostart=demo", Vec::new());
    let cfg = config(
        t,
        "xs.toml",
        "name = \"x\"\nimage = \"xenstore\"\nmemory = 16\non_poweroff = \"preserve\"\n",
    );

    // The toolstack's nodes for the autostarted demo (domain 1) and dom0.
    let r = h.dom0ctl(&["xenstore", "read", "/local/domain/1/name"]);
    r.code(0);
    assert_eq!(r.stdout.trim(), "demo");
    let r = h.dom0ctl(&["xenstore", "read", "/local/domain/0/name"]);
    r.code(0);
    assert_eq!(r.stdout.trim(), "Domain-0");
    let ls = h.dom0ctl(&["xenstore", "ls", "-p", "/local/domain/1"]);
    ls.code(0);
    for want in [
        "/local/domain/1/domid = \"1\"  (n0,r1)",
        "/local/domain/1/control/shutdown = \"\"  (n1)",
        "/local/domain/1/console/type = \"xenconsoled\"",
        "/local/domain/1/memory/target = \"32768\"",
        "/local/domain/1/cpu/0/availability = \"online\"",
        "/local/domain/1/store/port",
    ] {
        assert!(ls.stdout.contains(want), "no {want:?} in:\n{}", ls.stdout);
    }
    let vm = h.dom0ctl(&["xenstore", "read", "/local/domain/1/vm"]);
    vm.code(0);
    let name = h.dom0ctl(&["xenstore", "read", &format!("{}/name", vm.stdout.trim())]);
    name.code(0);
    assert_eq!(name.stdout.trim(), "demo");
    let json = h.dom0ctl(&["xenstore", "read", "--json", "/local/domain/1/domid"]);
    json.code(0);
    assert_eq!(
        json.stdout.trim(),
        "{\"path\": \"/local/domain/1/domid\", \"value\": \"1\"}"
    );

    // Limits refused before anything is sent; errors from the store named.
    let long = format!("/{}", "a".repeat(3072));
    let e = h.dom0ctl(&["xenstore", "read", &long]);
    e.code(3);
    assert!(e.stderr.contains("at most 3072"), "{}", e.stderr);
    let e = h.dom0ctl(&["xenstore", "write", "/x", &"v".repeat(4097)]);
    e.code(3);
    assert!(e.stderr.contains("at most 4096"), "{}", e.stderr);
    let e = h.dom0ctl(&["xenstore", "read", "/no/such/node"]);
    e.code(1);
    assert!(e.stderr.contains("ENOENT"), "{}", e.stderr);

    // A domU reads its own name and domid.
    let id = create(&h, &cfg, "self", "mode=self");
    wait_for_console(
        &h,
        "self",
        &format!("xenstore: PASS name=self domid={id}"),
        60,
    );

    // A domU cannot read or write another domU's nodes.
    create(&h, &cfg, "peer", "mode=peer peer=1");
    wait_for_console(
        &h,
        "peer",
        "xenstore: PASS peer=1 read=EACCES write=EACCES",
        60,
    );

    // A watch fires when dom0 writes.
    let w = create(&h, &cfg, "watcher", "mode=watch secs=60");
    wait_for_console(&h, "watcher", "xenstore: watching data/poke", 60);
    h.dom0ctl(&[
        "xenstore",
        "write",
        &format!("/local/domain/{w}/data/poke"),
        "go",
    ])
    .code(0);
    wait_for_console(&h, "watcher", "xenstore: PASS watch fired data/poke=go", 60);

    // A flooding domU hits its quota; another domU keeps working meanwhile.
    create(&h, &cfg, "flood", "mode=flood");
    create(&h, &cfg, "bystander", "mode=txn count=200");
    wait_for_console(&h, "flood", "xenstore: PASS flood quota after", 120);
    wait_for_console(&h, "bystander", "xenstore: PASS txns=200 counter=200", 120);

    // Destroy releases the domain: its nodes are gone.
    h.dom0ctl(&["destroy", "self"]).code(0);
    let gone = h.dom0ctl(&["xenstore", "read", &format!("/local/domain/{id}/name")]);
    gone.code(1);
    assert!(gone.stderr.contains("ENOENT"), "{}", gone.stderr);
}

/// `dom0ctl reboot demo` brings the demo back under a new id; `dom0ctl shutdown
/// demo` powers it off cooperatively; `on_poweroff = "restart"` builds a domain
/// again and `on_reboot = "destroy"` ends it; a domain that does not listen is
/// reported unresponsive, and `--force` still works.
#[test]
fn cooperative_reboot_and_shutdown_of_the_demo() {
    let t = "xenstore-shutdown";
    let h = ControlHost::boot_fast(t, "");
    // The demo serves control/shutdown once it has connected, and with `linger=` it
    // keeps serving after its three-second uptime (else a slow host could miss it).
    let cfg = config(
        t,
        "demo.toml",
        "name = \"demo\"\nimage = \"demo\"\nmemory = 32\ncmdline = \"linger=600\"\n\
         on_poweroff = \"preserve\"\n",
    );
    let first: u16 = create_with(&h, &[&cfg]);
    let start = Instant::now();
    loop {
        let c = h.dom0ctl(&["console", "demo", "--no-follow"]);
        if c.stdout.contains("serving control/shutdown") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the demo never served control/shutdown:\n{}\n{}",
            c.stdout,
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = h.dom0ctl(&["--timeout", "60", "reboot", "demo"]);
    r.code(0);
    let new_id: u16 =
        r.stdout.trim().parse().unwrap_or_else(|e| {
            panic!("reboot printed no id ({e}): {:?} {:?}", r.stdout, r.stderr)
        });
    assert_ne!(new_id, first);
    let name = h.dom0ctl(&["xenstore", "read", &format!("/local/domain/{new_id}/name")]);
    name.code(0);
    assert_eq!(name.stdout.trim(), "demo");
    let old = h.dom0ctl(&["xenstore", "read", &format!("/local/domain/{first}/name")]);
    old.code(1);

    wait_for_console(&h, "demo", "serving control/shutdown", 60);
    let s = h.dom0ctl(&["--timeout", "60", "shutdown", "demo"]);
    s.code(0);
    let list = h.dom0ctl(&["list"]);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with("demo"))
        .unwrap_or_else(|| panic!("{}", list.stdout));
    assert!(row.contains("---s--"), "{row}");

    // The demo uploaded from the host (not an image of dom0's) reboots too: dom0
    // kept the uploaded kernel.
    let up = config(
        t,
        "up.toml",
        &format!(
            "name = \"updemo\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"linger=600\"\n",
            xtask::build_demo().unwrap().display()
        ),
    );
    let created: u16 = create_with(&h, &[&up]);
    wait_for_console(&h, "updemo", "serving control/shutdown", 60);
    let r = h.dom0ctl(&["--timeout", "60", "reboot", "updemo"]);
    r.code(0);
    let again: u16 = r.stdout.trim().parse().unwrap();
    assert_ne!(again, created);
    wait_for_console(&h, "updemo", "serving control/shutdown", 60);
    h.dom0ctl(&["destroy", "updemo"]).code(0);

    // on_reboot = "destroy": the reboot ends the domain; on_poweroff = "restart":
    // a poweroff brings it back under a new id.
    let cfg = config(
        t,
        "once.toml",
        "name = \"once\"\nimage = \"demo\"\nmemory = 32\ncmdline = \"linger=600\"\n\
         on_reboot = \"destroy\"\non_poweroff = \"restart\"\n",
    );
    let once: u16 = create_with(&h, &[&cfg]);
    wait_for_console(&h, "once", "serving control/shutdown", 60);
    h.dom0ctl(&["--timeout", "60", "shutdown", "once"]).code(0);
    let back = wait_for_domain(&h, "once", 30);
    assert_ne!(back, once, "on_poweroff = \"restart\" builds it again");
    wait_for_console(&h, "once", "serving control/shutdown", 60);
    let r = h.dom0ctl(&["--timeout", "60", "reboot", "once"]);
    r.code(0);
    assert!(r.stderr.contains("destroyed"), "{}", r.stderr);
    let list = h.dom0ctl(&["list"]);
    assert!(
        !list.stdout.lines().any(|l| l.starts_with("once")),
        "on_reboot = \"destroy\":\n{}",
        list.stdout
    );

    // A guest that never reads the store: unresponsive after the timeout.
    let cfg = config(
        t,
        "tick.toml",
        "name = \"tick\"\nimage = \"ticker\"\nmemory = 8\ncmdline = \"secs=600 period_ms=100\"\n",
    );
    h.dom0ctl(&["create", &cfg]).code(0);
    let u = h.dom0ctl(&["--timeout", "3", "shutdown", "tick"]);
    u.code(1);
    assert!(u.stderr.contains("unresponsive"), "{}", u.stderr);
    h.dom0ctl(&["shutdown", "--force", "tick"]).code(0);
}

/// Waits until a domain named `name` runs, and returns its id.
fn wait_for_domain(h: &ControlHost, name: &str, secs: u64) -> u16 {
    let start = Instant::now();
    loop {
        let list = h.dom0ctl(&["list"]);
        if let Some(id) = list
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|id| id.parse().ok())
        {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{name} never came back:\n{}",
            list.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// 20 domUs, each running 1000 transactions (read, write three nodes, commit)
/// at once: all complete with the right final values.
#[test]
fn twenty_domus_thousand_transactions_each() {
    let t = "xenstore-txns";
    let h = ControlHost::boot_mem(t, "1024M");
    let cfg = config(
        t,
        "txn.toml",
        "name = \"x\"\nimage = \"xenstore\"\nmemory = 8\ncmdline = \"mode=txn count=1000\"\non_poweroff = \"preserve\"\n",
    );
    let start = Instant::now();
    for i in 0..20 {
        h.dom0ctl(&["--timeout", "60", "create", &cfg, &format!("name=x{i}")])
            .code(0);
    }
    for i in 0..20 {
        wait_for_console(
            &h,
            &format!("x{i}"),
            "xenstore: PASS txns=1000 counter=1000",
            600,
        );
    }
    eprintln!(
        "20 domUs x 1000 transactions: {:.1} s (TCG)",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn the_bench_guest_measures_xenstore_as_a_domu() {
    // What scripts/bench's control-plane run does, in quick mode: the bench guest
    // uploaded as a domU with role=xenstore reads its name and commits small
    // transactions against dom0's xenstored, and prints both metrics.
    let t = "xenstore-bench";
    let h = ControlHost::boot_fast(t, "");
    let guest = xtask::build_kernel("pv-bench", "bench").unwrap();
    let cfg = config(
        t,
        "xs.toml",
        &format!(
            "name = \"xsbench\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"role=xenstore quick\"\non_poweroff = \"preserve\"\n",
            guest.display()
        ),
    );
    h.dom0ctl(&["--timeout", "120", "create", &cfg]).code(0);
    let log = wait_for_console(&h, "xsbench", "bench: done:", 120);
    // The figures, for whoever runs this with --nocapture (never asserted).
    for l in log.lines().filter(|l| l.contains("bench-result")) {
        println!("{l}");
    }
    for m in ["xenstore_read_rtt", "xenstore_txn_commit"] {
        assert!(
            log.lines()
                .any(|l| l.contains("bench-result") && l.contains(m)),
            "no {m}:\n{log}"
        );
    }
}
