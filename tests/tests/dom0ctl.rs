//! The control plane end to end: the real GRUB image with the dom0 kernel and
//! its image bundle, COM2 on a unix socket, driven by the real `dom0ctl`.

use std::time::Duration;

use xlhv_tests::{
    ControlHost, LISTENING, Module, QemuExit, dom0_modules, dom0ctl_bin, hypervisor, scratch,
    test_guest,
};

/// The number after `key` and spaces and ':' in `dom0ctl info`'s output.
fn field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim())
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn queries_errors_and_shutdown_host() {
    let mut h = ControlHost::boot("dom0ctl-queries");

    let info = h.dom0ctl(&["info"]);
    info.code(0);
    assert_eq!(
        field(&info.stdout, "xen_version"),
        "4.17.7",
        "{}",
        info.stdout
    );
    assert!(field(&info.stdout, "hypervisor").contains("Xen 4.17"));
    assert!(field(&info.stdout, "dom0_agent").starts_with("xlhv-dom0 "));
    let free = field(&info.stdout, "free_memory");
    let mib: u64 = free.split_whitespace().next().unwrap().parse().unwrap();
    assert!((100..512).contains(&mib), "free memory {free}");
    assert_eq!(field(&info.stdout, "domains"), "1");

    let images = h.dom0ctl(&["images"]);
    images.code(0);
    for name in ["hello", "ticker", "hog", "pingpong", "demo"] {
        assert!(
            images
                .stdout
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "no {name} in:\n{}",
            images.stdout
        );
    }

    let list = h.dom0ctl(&["list"]);
    list.code(0);
    let dom0 = list
        .stdout
        .lines()
        .find(|l| l.starts_with("Domain-0"))
        .unwrap_or_else(|| panic!("no Domain-0 in:\n{}", list.stdout));
    assert_eq!(dom0.split_whitespace().nth(1), Some("0"), "{dom0}");

    let dmesg = h.dom0ctl(&["dmesg"]);
    dmesg.code(0);
    assert!(dmesg.stdout.contains("boot complete"), "{}", dmesg.stdout);

    let nosuch = h.dom0ctl(&["pause", "nosuch"]);
    nosuch.code(1);
    assert!(
        nosuch
            .stderr
            .contains("pause nosuch: no such domain: nosuch. List domains with `dom0ctl list`."),
        "{}",
        nosuch.stderr
    );
    let dom0 = h.dom0ctl(&["destroy", "Domain-0"]);
    dom0.code(1);
    assert!(
        dom0.stderr.contains("cannot be destroyed"),
        "{}",
        dom0.stderr
    );
    let id = h.dom0ctl(&["unpause", "4242"]);
    id.code(1);
    assert!(id.stderr.contains("no domain has id 4242"), "{}", id.stderr);

    let bye = h.dom0ctl(&["shutdown-host"]);
    bye.code(0);
    let status = h.machine.wait_exit(Duration::from_secs(60));
    assert!(
        status.is_some(),
        "QEMU still runs after shutdown-host\n{}",
        h.serial()
    );
    assert_eq!(h.machine.exit(), Some(QemuExit::Poweroff), "{}", h.serial());
    let log = h.serial();
    assert!(
        log.contains("(d0) dom0: shutdown-host: powering the machine off"),
        "{log}"
    );
    assert!(log.contains("all of dom0's frames are back"), "{log}");
}

/// The row of domain `id` in `dom0ctl list`, if any.
fn row(list: &str, id: u16) -> Option<String> {
    list.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
        .map(String::from)
}

/// Pause, unpause and destroy a domain the hypervisor built at boot (so dom0
/// has no name for it), by id, through the real domctls.
#[test]
fn pause_unpause_destroy_a_boot_time_domu() {
    let ticker = test_guest("ticker");
    let spec = format!(
        "{},name=tick,mem=16M,cmdline=secs=600 period_ms=100",
        ticker.display()
    );
    let h = ControlHost::boot_with("dom0ctl-domu", vec![Module::domu(&spec).unwrap()]);
    let list = |h: &ControlHost| {
        let l = h.dom0ctl(&["list"]);
        l.code(0);
        l.stdout.clone()
    };
    let before = list(&h);
    let tick = row(&before, 1).unwrap_or_else(|| panic!("no domain 1 in:\n{before}"));
    assert!(tick.starts_with("(unnamed)"), "{tick}");
    assert!(!tick.contains("--p---"), "{tick}");

    h.dom0ctl(&["pause", "1"]).code(0);
    let paused = row(&list(&h), 1).unwrap();
    assert!(paused.contains("--p---"), "{paused}");
    h.dom0ctl(&["unpause", "1"]).code(0);
    let again = row(&list(&h), 1).unwrap();
    assert!(!again.contains("--p---"), "{again}");

    h.dom0ctl(&["destroy", "1"]).code(0);
    let after = list(&h);
    assert!(row(&after, 1).is_none(), "{after}");
    assert!(row(&after, 0).is_some(), "{after}");
    let gone = h.dom0ctl(&["pause", "1"]);
    gone.code(1);
    assert!(
        gone.stderr.contains("no domain has id 1"),
        "{}",
        gone.stderr
    );
}

/// `dom0ctl create` with an uploaded kernel: the image crosses COM2 in chunks
/// with its CRC, dom0's builder makes a domain of it, and its console answers.
/// Prints the upload's speed (not asserted: see docs/bench.md on timing).
#[test]
fn create_from_an_uploaded_image() {
    let h = ControlHost::boot("dom0ctl-upload");
    let kernel = test_guest("ticker");
    let size = std::fs::metadata(&kernel).unwrap().len();
    let cfg = scratch("dom0ctl-upload").join("up.toml");
    std::fs::write(
        &cfg,
        format!(
            "name = \"up\"\nkernel = \"{}\"\nmemory = 16\ncmdline = \"secs=30\"\n",
            kernel.display()
        ),
    )
    .unwrap();
    let run = h.dom0ctl(&["--timeout", "120", "create", cfg.to_str().unwrap()]);
    run.code(0);
    assert_eq!(run.stdout.trim(), "1", "the new domid: {}", run.stdout);
    let kib_s = size as f64 / 1024.0 / run.took.as_secs_f64();
    eprintln!(
        "upload: {size} bytes in {:.2} s = {kib_s:.0} KiB/s (TCG, one QEMU)",
        run.took.as_secs_f64()
    );
    wait_for_console(&h, "up", "ticker: tick 1");
    h.dom0ctl(&["destroy", "up"]).code(0);
}

/// Polls `dom0ctl console DOM --no-follow` until its output holds `needle`
/// (20 s at most).
fn wait_for_console(h: &ControlHost, dom: &str, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let c = h.dom0ctl(&["console", dom, "--no-follow"]);
        if c.stdout.contains(needle) {
            return c.stdout;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{dom}'s console never showed {needle:?}:\n{}\n{}",
            c.stdout,
            c.stderr
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The README's walk: create from a named image, list, console, pause (ticks
/// stop), unpause (they go on), destroy (gone from the list, every frame back).
#[test]
fn create_list_console_pause_unpause_destroy() {
    let h = ControlHost::boot("dom0ctl-lifecycle");
    let free_before = {
        let i = h.dom0ctl(&["info"]);
        i.code(0);
        field(&i.stdout, "free_memory").to_string()
    };
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/ticker.toml");
    let run = h.dom0ctl(&["create", cfg, "cmdline=secs=60"]);
    run.code(0);
    let id = run.stdout.trim().to_string();
    let list = h.dom0ctl(&["list"]);
    list.code(0);
    let row = list
        .stdout
        .lines()
        .find(|l| l.starts_with("ticker "))
        .unwrap_or_else(|| panic!("no ticker in:\n{}", list.stdout));
    assert_eq!(row.split_whitespace().nth(1), Some(id.as_str()), "{row}");
    let out = wait_for_console(&h, "ticker", "ticker: tick 1");
    assert!(out.contains("ticker"), "{out}");

    h.dom0ctl(&["pause", "ticker"]).code(0);
    std::thread::sleep(Duration::from_millis(300));
    let before = h.dom0ctl(&["console", "ticker", "--no-follow"]).stdout;
    std::thread::sleep(Duration::from_millis(2500));
    let after = h.dom0ctl(&["console", "ticker", "--no-follow"]).stdout;
    assert_eq!(before, after, "a paused domain's ticks stop");
    h.dom0ctl(&["unpause", "ticker"]).code(0);
    let ticks = before.matches("ticker: tick").count();
    wait_for_console(&h, "ticker", &format!("ticker: tick {}", ticks + 1));

    h.dom0ctl(&["destroy", "ticker"]).code(0);
    let list = h.dom0ctl(&["list"]).stdout;
    assert!(!list.contains("ticker"), "{list}");
    let i = h.dom0ctl(&["info"]);
    assert_eq!(
        field(&i.stdout, "free_memory"),
        free_before,
        "every frame back"
    );
}

/// `scripts/run --detach`'s mechanism: QEMU in its own process group, COM1 in
/// a log file, a pid file, ready once dom0 listens; it outlives the handle and
/// `shutdown-host` ends it.
#[test]
fn detached_qemu_serves_until_shutdown_host() {
    let dir = scratch("dom0ctl-detach");
    let iso = dir.join("boot.iso");
    let socket = dir.join("ctl.sock");
    let spec = xtask::IsoSpec {
        hypervisor: hypervisor().to_path_buf(),
        cmdline: String::new(),
        modules: dom0_modules(),
    };
    xtask::make_iso(&spec, &iso).unwrap();
    xtask::prepare_socket(&socket).unwrap();
    let mut cfg = xtask::QemuConfig::new(iso);
    cfg.control_socket = Some(socket.clone());
    let d = xtask::dom0::spawn_detached(&cfg, &dir, LISTENING, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let pid: u32 = std::fs::read_to_string(&d.pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, d.pid);
    let _reaper = KillOnDrop(pid);
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(alive());
    let run = |args: &[&str]| {
        std::process::Command::new(dom0ctl_bin())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let list = run(&["list"]);
    assert!(list.status.success(), "{list:?}");
    assert!(String::from_utf8_lossy(&list.stdout).contains("Domain-0"));
    assert!(
        xtask::prepare_socket(&socket)
            .unwrap_err()
            .to_string()
            .contains("in use"),
        "a second QEMU may not take a socket that is served"
    );
    let bye = run(&["shutdown-host"]);
    assert!(bye.status.success(), "{bye:?}");
    let end = std::time::Instant::now() + Duration::from_secs(60);
    // QEMU is not our child any more than a detached one would be: wait for it
    // to become a zombie or vanish.
    while alive() && !is_zombie(pid) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive() || is_zombie(pid), "QEMU {pid} still runs");
    let log = std::fs::read_to_string(&d.com1_log).unwrap();
    assert!(log.contains("dom0 stopped (Poweroff)"), "{log}");
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}

/// Kills a detached QEMU if the test fails before `shutdown-host` ended it.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if std::path::Path::new(&format!("/proc/{}", self.0)).exists() && !is_zombie(self.0) {
            let _ = std::process::Command::new("kill")
                .arg(self.0.to_string())
                .status();
        }
    }
}
