//! The control plane end to end: the real GRUB image with the dom0 kernel and
//! its image bundle, COM2 on a unix socket, driven by the real `dom0ctl`.

use std::time::Duration;

use xlhv_tests::{
    ControlHost, LISTENING, Module, QemuExit, dom0_modules, dom0ctl_bin, hypervisor, scratch,
    stripped_guest, test_guest,
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
/// Prints the upload's speed (not asserted: see docs/bench.md on timing). The
/// ELF is stripped of its debug sections (3.7 MB would take minutes on COM2;
/// `fastlink.rs` uploads 32 MiB over the fast link).
#[test]
fn create_from_an_uploaded_image() {
    let h = ControlHost::boot("dom0ctl-upload");
    let kernel = stripped_guest("dom0ctl-upload", "ticker");
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

/// `ramdisk = "PATH"`: the file is uploaded after the kernel and the domU finds
/// it where start_info says (`initrd` test guest, `domu=1`: whole pages, zero
/// tail); a ramdisk too large for the domain is refused and leaves nothing.
#[test]
fn create_with_an_uploaded_ramdisk() {
    let t = "dom0ctl-ramdisk";
    // The fast link: the 5 MiB ramdisk takes a minute over COM2.
    let h = ControlHost::boot_fast(t, "");
    let blob = scratch(t).join("initrd.bin");
    std::fs::write(&blob, vec![0x5Au8; 123_457]).unwrap();
    let cfg = config(
        t,
        "rd.toml",
        &format!(
            "name = \"rd\"\nkernel = \"{}\"\nramdisk = \"{}\"\nmemory = 8\n\
             cmdline = \"len=123457 domu=1\"\non_poweroff = \"preserve\"\n",
            test_guest("initrd").display(),
            blob.display()
        ),
    );
    h.dom0ctl(&["--link", "fast", "--timeout", "120", "create", &cfg])
        .code(0);
    wait_for_console(&h, "rd", "initrd: PASS len=126976");
    h.dom0ctl(&["destroy", "rd"]).code(0);
    let before = free_memory(&h);
    let big = scratch(t).join("big.bin");
    std::fs::write(&big, vec![0u8; 5 << 20]).unwrap();
    let cfg = config(
        t,
        "big.toml",
        &format!(
            "name = \"big\"\nkernel = \"{}\"\nramdisk = \"{}\"\nmemory = 4\n",
            test_guest("initrd").display(),
            big.display()
        ),
    );
    let run = h.dom0ctl(&["--link", "fast", "--timeout", "120", "create", &cfg]);
    assert_ne!(run.code, Some(0), "{}", run.stdout);
    assert!(run.stderr.contains("layout"), "{}", run.stderr);
    assert_eq!(listed(&h, "big"), None);
    assert_eq!(free_memory(&h), before, "nothing leaked");
}

/// dom0's own free frames, from `dom0ctl info`'s `dom0_free_memory` ("N MiB (F frames)").
fn dom0_free_frames(h: &ControlHost) -> u64 {
    let i = h.dom0ctl(&["info"]);
    i.code(0);
    let f = field(&i.stdout, "dom0_free_memory");
    f.split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("dom0_free_memory: {f}"))
}

/// Abandoned uploads give every frame back (issue 22: dom0's frame allocator
/// remembered at most 4096 freed frames, so one abandoned 100 MiB upload cost dom0
/// ~84 MiB for good). `UploadBegin` maps the whole buffer at once, so each round
/// announces 64 MiB (16384 frames, four times the old limit), sends one chunk and
/// abandons it; the next session's `Hello` frees it. Ten rounds, then dom0's free
/// memory must be back to the frame.
#[test]
fn abandoned_large_uploads_give_every_frame_back() {
    use control_proto::{Request, Response};
    let h = ControlHost::boot("dom0ctl-abandon");
    let before = dom0_free_frames(&h);
    // 64 MiB, or as much as dom0 can give (it keeps 1024 frames back) less a margin.
    let frames = (16 * 1024).min(before.saturating_sub(1024 + 256));
    assert!(
        frames > 3 * 4096,
        "dom0 has only {before} free frames: too few to test past the old 4096-frame limit"
    );
    let size = frames * 4096;
    for round in 0..10 {
        let mut c = dom0ctl::client::Client::connect(&h.socket, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let begin = Request::UploadBegin { size, crc32: 0 };
        let upload = match c.call(&begin) {
            Ok(Response::UploadReady { upload, .. }) => upload,
            other => panic!("round {round}: UploadBegin of {size} bytes: {other:?}"),
        };
        let chunk = Request::UploadChunk {
            upload,
            offset: 0,
            data: vec![0x5a; 4096],
        };
        match c.call(&chunk) {
            Ok(Response::UploadAck { received: 4096, .. }) => {}
            other => panic!("round {round}: UploadChunk: {other:?}"),
        }
        // The buffer's frames really are taken (so the test is not vacuous).
        let during = match c.call(&Request::Info) {
            Ok(Response::Info(i)) => i.dom0_free_frames,
            other => panic!("round {round}: Info: {other:?}"),
        };
        assert!(
            during + frames <= before,
            "round {round}: dom0 has {during} free frames with a {frames}-frame upload \
             open (before: {before})"
        );
        // Abandoned: the next session's Hello drops it.
    }
    assert_eq!(
        dom0_free_frames(&h),
        before,
        "dom0's free frames after 10 abandoned {} MiB uploads",
        size >> 20
    );
    let serial = h.serial();
    assert!(!serial.contains("BUG"), "{serial}");
}

/// Polls `dom0ctl console DOM --no-follow` until its output holds `needle`
/// (20 s at most).
fn wait_for_console(h: &ControlHost, dom: &str, needle: &str) -> String {
    h.console_until(dom, needle, None, 20)
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

/// Writes a domain config into the test's scratch folder; returns its path.
fn config(test: &str, file: &str, text: &str) -> String {
    let p = scratch(test).join(file);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

/// `dom0ctl info`'s free memory line.
fn free_memory(h: &ControlHost) -> String {
    let i = h.dom0ctl(&["info"]);
    i.code(0);
    field(&i.stdout, "free_memory").to_string()
}

/// The `list` row of domain `name`, if listed.
fn listed(h: &ControlHost, name: &str) -> Option<String> {
    let l = h.dom0ctl(&["list"]);
    l.code(0);
    l.stdout
        .lines()
        .find(|r| r.split_whitespace().next() == Some(name))
        .map(String::from)
}

/// A crashing domU is reported as crashed (kept with `on_crash = "preserve"`), and
/// `on_crash = "destroy"` (xl's default) cleans it up by itself.
#[test]
fn a_crashed_domu_is_reported_and_on_crash_destroy_cleans_up() {
    let t = "dom0ctl-crash";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let keep = config(
        t,
        "keep.toml",
        "name = \"kept\"\nimage = \"crash\"\nmemory = 8\non_crash = \"preserve\"\n",
    );
    h.dom0ctl(&["create", &keep]).code(0);
    let gone = config(
        t,
        "gone.toml",
        "name = \"gone\"\nimage = \"crash\"\nmemory = 8\n",
    );
    h.dom0ctl(&["create", &gone]).code(0);
    let start = std::time::Instant::now();
    loop {
        let kept = listed(&h, "kept");
        let crashed = kept
            .as_deref()
            .is_some_and(|r| r.contains("--c-") || r.contains("c-"));
        if crashed && listed(&h, "gone").is_none() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "kept: {kept:?}, gone: {:?}",
            listed(&h, "gone")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let state = listed(&h, "kept").unwrap();
    assert_eq!(state.split_whitespace().nth(4), Some("----c-"), "{state}");
    h.dom0ctl(&["destroy", "kept"]).code(0);
    assert_eq!(free_memory(&h), free, "every frame back");
}

/// The smallest domains (issue 21): `hello` runs in 2 MiB (its bootstrap region ends
/// 512 KiB past the boot stack, not at Xen's 4 MiB boundary); in 1 MiB dom0's builder
/// refuses it naming both sizes, before anything is created; 0 MiB never leaves
/// dom0ctl. Nothing leaks.
#[test]
fn hello_runs_in_2_mib_and_a_smaller_domain_is_refused_with_the_sizes() {
    let t = "dom0ctl-mini";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let mini = config(
        t,
        "mini.toml",
        "name = \"mini\"\nimage = \"hello\"\nmemory = 2\non_poweroff = \"preserve\"\n",
    );
    h.dom0ctl(&["create", &mini]).code(0);
    let out = h.console_until("mini", "hello: PASS", Some("panic"), 20);
    assert!(!out.contains("warning"), "{out}");
    let row = listed(&h, "mini").expect("mini is listed");
    assert_eq!(row.split_whitespace().nth(2), Some("2"), "{row}");
    h.dom0ctl(&["destroy", "mini"]).code(0);

    let tiny = config(
        t,
        "tiny.toml",
        "name = \"tiny\"\nimage = \"hello\"\nmemory = 1\n",
    );
    let r = h.dom0ctl(&["create", &tiny]);
    r.code(1);
    assert!(
        r.stderr
            .contains("the domain has 1 MiB (256 pages) but this image's bootstrap layout needs")
            && r.stderr.contains("give it at least 2 MiB"),
        "{}",
        r.stderr
    );
    assert!(listed(&h, "tiny").is_none());
    let r = h.dom0ctl(&["create", &tiny, "memory=0"]);
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr
            .contains("memory: 0 MiB is too little; a domain needs at least 1 MiB"),
        "{}",
        r.stderr
    );
    assert_eq!(free_memory(&h), free, "every frame back");
}

/// 50 create/destroy cycles leave free memory exactly where it was; a domain bigger
/// than free memory fails cleanly and leaks nothing.
#[test]
fn fifty_cycles_and_too_big_leave_memory_to_the_frame() {
    let t = "dom0ctl-cycles";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let cfg = config(
        t,
        "c.toml",
        "name = \"cyc\"\nimage = \"ticker\"\nmemory = 8\ncmdline = \"secs=60\"\n",
    );
    for round in 0..50 {
        let c = h.dom0ctl(&["create", &cfg]);
        assert_eq!(c.code, Some(0), "round {round}: {}", c.stderr);
        let d = h.dom0ctl(&["destroy", "cyc"]);
        assert_eq!(d.code, Some(0), "round {round}: {}", d.stderr);
    }
    assert_eq!(free_memory(&h), free, "after 50 cycles");
    let big = config(
        t,
        "big.toml",
        "name = \"big\"\nimage = \"hello\"\nmemory = 4096\n",
    );
    let r = h.dom0ctl(&["create", &big]);
    r.code(1);
    assert!(r.stderr.contains("out of memory"), "{}", r.stderr);
    assert!(listed(&h, "big").is_none());
    assert_eq!(free_memory(&h), free, "a failed create leaks nothing");
}

/// `cpus =` on two CPUs: a list pins vCPU 0 to CPU 1 and vCPU 1 to CPU 0, as the
/// hypervisor reads the maps back (`vcpu-list`, getvcpuaffinity); one spec pins
/// every vCPU; `cpus = "5"` fails the create with the config's key and the
/// machine's CPUs in the message, and leaves no domain and no frame behind.
#[test]
fn cpus_pin_vcpus_and_a_map_without_a_cpu_of_the_machine_fails_cleanly() {
    let t = "dom0ctl-cpus";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let table = |dom: &str| h.vcpu_rows(dom);
    // (vcpu, hard, soft) of each row.
    let vcpus = |dom: &str| -> Vec<(String, String, String)> {
        table(dom)
            .into_iter()
            .map(|w| (w[2].clone(), w[6].clone(), w[8].clone()))
            .collect()
    };
    let row = |v: &str, hard: &str| (v.to_string(), hard.to_string(), "all".to_string());
    // dom0 is not pinned: one vCPU per CPU, each on every CPU.
    assert_eq!(vcpus("Domain-0"), [row("0", "all"), row("1", "all")]);

    let list = config(
        t,
        "list.toml",
        "name = \"pinned\"\nimage = \"ticker\"\nmemory = 8\nvcpus = 3\n\
         cmdline = \"secs=60\"\ncpus = [\"1\", \"0\"]\n",
    );
    h.dom0ctl(&["create", &list]).code(0);
    assert_eq!(
        vcpus("pinned"),
        [row("0", "1"), row("1", "0"), row("2", "all")],
        "entry i pins vCPU i; vCPUs past the list run anywhere"
    );
    wait_for_console(&h, "pinned", "ticker: tick 1");
    let one = config(
        t,
        "one.toml",
        "name = \"one\"\nimage = \"ticker\"\nmemory = 8\nvcpus = 2\n\
         cmdline = \"secs=60\"\ncpus = \"all,^0\"\n",
    );
    h.dom0ctl(&["create", &one]).code(0);
    assert_eq!(vcpus("one"), [row("0", "1"), row("1", "1")]);
    wait_for_console(&h, "one", "ticker: tick 1");
    // It ran where it was pinned (getvcpuinfo's CPU); vCPU 1 was never brought up.
    let rows = table("one");
    assert_eq!(
        (rows[0][3].as_str(), rows[1][3].as_str()),
        ("1", "-"),
        "{rows:?}"
    );
    assert_eq!(rows[1][4], "--p", "{rows:?}");
    assert!(
        matches!(rows[0][4].as_str(), "r--" | "-b-" | "---"),
        "up: running, blocked or runnable: {rows:?}"
    );
    h.dom0ctl(&["destroy", "pinned"]).code(0);
    h.dom0ctl(&["destroy", "one"]).code(0);
    assert_eq!(free_memory(&h), free);

    let far = config(
        t,
        "far.toml",
        "name = \"far\"\nimage = \"ticker\"\nmemory = 8\nvcpus = 2\ncpus = \"5\"\n",
    );
    let r = h.dom0ctl(&["create", &far]);
    r.code(1);
    assert!(
        r.stderr.contains(
            "building far: cpus: vCPU 0's CPUs (5) include none that runs guests \
             (this machine has 2: 0-1)"
        ),
        "{}",
        r.stderr
    );
    assert!(listed(&h, "far").is_none(), "no domain left behind");
    let l = h.dom0ctl(&["list"]);
    assert_eq!(
        l.stdout.lines().count(),
        2,
        "header and Domain-0:\n{}",
        l.stdout
    );
    assert_eq!(free_memory(&h), free, "a failed create leaks nothing");
    // The name is free again: the same config pinned to a CPU the machine has builds.
    h.dom0ctl(&["create", &far, "cpus=1"]).code(0);
    assert_eq!(vcpus("far"), [row("0", "1"), row("1", "1")]);
}

/// 20 domUs at once: all listed, every console answering.
#[test]
fn twenty_domus_at_once() {
    let t = "dom0ctl-twenty";
    let h = ControlHost::boot(t);
    let free = free_memory(&h);
    let cfg = config(
        t,
        "t.toml",
        "name = \"x\"\nimage = \"ticker\"\nmemory = 8\ncmdline = \"secs=60 period_ms=100\"\n",
    );
    for i in 0..20 {
        let name = format!("name=t{i}");
        h.dom0ctl(&["create", &cfg, &name]).code(0);
    }
    let l = h.dom0ctl(&["list"]);
    for i in 0..20 {
        assert!(
            l.stdout
                .lines()
                .any(|r| r.split_whitespace().next() == Some(&format!("t{i}"))),
            "t{i} missing:\n{}",
            l.stdout
        );
    }
    for i in 0..20 {
        wait_for_console(&h, &format!("t{i}"), "ticker: tick 1");
    }
    for i in 0..20 {
        h.dom0ctl(&["destroy", &format!("t{i}")]).code(0);
    }
    assert_eq!(free_memory(&h), free);
}

/// The control plane is served promptly under load (issue 22): next to 100 domUs
/// that each run a 100 Hz timer, `dom0ctl list` answers within 2 s (it timed out
/// after 30 s with 85). The bound is the requirement, far above the
/// expected answer time, not a benchmark. The link is the fast one, as
/// `scripts/run` gives it: over COM2 the 4.7 KB answer alone is some 5000
/// emulated port accesses, which took 0.3 to 3 s here depending on the host's load.
#[test]
fn list_answers_promptly_next_to_a_hundred_ticking_domus() {
    const N: usize = 100;
    let t = "dom0ctl-loaded";
    let h = ControlHost::boot_fast_mem(t, "1280M");
    let cfg = config(
        t,
        "t.toml",
        "name = \"x\"\nimage = \"ticker\"\nmemory = 4\ncmdline = \"secs=3600 period_ms=10\"\n",
    );
    for i in 0..N {
        let name = format!("name=t{i}");
        let c = h.dom0ctl(&["--timeout", "60", "create", &cfg, &name]);
        assert_eq!(c.code, Some(0), "t{i}: {}", c.stderr);
    }
    // All of them ticking (the last one created has ticked, so all have started).
    wait_for_console(&h, &format!("t{}", N - 1), "ticker: tick 1");
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        let l = h.dom0ctl(&["list"]);
        assert_eq!(l.code, Some(0), "round {round}: {}", l.stderr);
        let running = l.stdout.lines().filter(|r| r.starts_with('t')).count();
        assert_eq!(running, N, "round {round}:\n{}", l.stdout);
        eprintln!("list with {N} ticking domUs: {:?}", l.took);
        worst = worst.max(l.took);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        worst < Duration::from_secs(2),
        "dom0ctl list took {worst:?} next to {N} ticking domUs"
    );
    // And they really were ticking all along: the first one printed its count
    // each second for at least three seconds (the counts themselves depend on
    // the machine's load: "tick 299", not "tick 300", once missed the old
    // substring check).
    let c = h.dom0ctl(&["console", "t0", "--no-follow"]);
    let seconds = c
        .stdout
        .lines()
        .filter(|l| l.starts_with("ticker: tick "))
        .count();
    assert!(seconds >= 3, "{}", c.stdout);
}

/// Free frames, from `dom0ctl info`'s free memory line ("846 MiB (216724 frames)").
fn free_frames(h: &ControlHost) -> u64 {
    let line = free_memory(h);
    line.split('(')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no frame count in {line:?}"))
}

/// Frames the hypervisor's domain table grew by since boot: the first and the last of
/// its "domains: N slots; the table holds F frames" lines. They stay taken when the
/// domains are gone (the slots are reused).
fn table_growth_frames(h: &ControlHost) -> u64 {
    let held: Vec<u64> = h
        .serial()
        .lines()
        .filter_map(|l| {
            l.split("the table holds ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    match (held.first(), held.last()) {
        (Some(a), Some(b)) => b - a,
        _ => panic!("no domain-table line in the log\n{}", h.serial()),
    }
}

/// Creates `n` idle domUs named `{prefix}0..` (`hello stay=1`, 2 MiB each: it prints
/// its line and blocks with no timer until destroyed).
fn create_idle(h: &ControlHost, test: &str, prefix: &str, n: usize) {
    let cfg = config(
        test,
        "idle.toml",
        "name = \"x\"\nimage = \"hello\"\nmemory = 2\ncmdline = \"stay=1\"\n",
    );
    for i in 0..n {
        let name = format!("name={prefix}{i}");
        let c = h.dom0ctl(&["--timeout", "60", "create", &cfg, &name]);
        assert_eq!(c.code, Some(0), "{prefix}{i}: {}", c.stderr);
    }
}

/// More domUs than dom0's old window of 256 foreign pages allowed (two each: the
/// console and the store page, so the 129th failed with ENOSPC), and more than the
/// hypervisor's first 64 domain slots, live at once: each one's console and store
/// answer, and destroying them all gives everything back but what the domain table
/// grew by.
#[test]
fn a_hundred_and_forty_domus_live_at_once() {
    const N: usize = 140;
    let t = "dom0ctl-many";
    let h = ControlHost::boot_fast_mem(t, "1280M");
    let before = free_frames(&h);
    create_idle(&h, t, "q", N);
    let last = format!("q{}", N - 1);
    wait_for_console(&h, &last, "hello: PASS");
    let l = h.dom0ctl(&["list"]);
    let alive = l.stdout.lines().filter(|r| r.starts_with('q')).count();
    assert_eq!(alive, N, "{}", l.stdout);
    // Still there, blocked: they stayed.
    let row = listed(&h, "q0").unwrap();
    assert_eq!(row.split_whitespace().nth(4), Some("-b----"), "{row}");
    // The last domain's store page is served too.
    let id = l
        .stdout
        .lines()
        .find(|r| r.split_whitespace().next() == Some(last.as_str()))
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("{last} in {}", l.stdout))
        .to_string();
    let name = h.dom0ctl(&["xenstore", "read", &format!("/local/domain/{id}/name")]);
    assert_eq!(name.stdout.trim(), last, "{}", name.stderr);
    for i in 0..N {
        h.dom0ctl(&["destroy", &format!("q{i}")]).code(0);
    }
    let log = h.serial();
    assert!(log.contains("domains: 192 slots"), "{log}");
    assert_eq!(before - free_frames(&h), table_growth_frames(&h));
}

/// `max_domains=70` on the hypervisor's command line: dom0 and 69 domUs live at once,
/// past the domain table's first chunk of 64 slots, and the 70th domU is refused
/// cleanly. Destroyed and made again, the domUs reuse the slots: the second round
/// takes no more memory than the first gave back.
#[test]
fn max_domains_caps_the_count_and_slots_are_reused() {
    let t = "dom0ctl-max-domains";
    let h = ControlHost::boot_fast_with_hv_args(t, "1G", "max_domains=70", &[]);
    let before = free_frames(&h);
    create_idle(&h, t, "m", 69);
    let cfg = config(
        t,
        "one.toml",
        "name = \"over\"\nimage = \"hello\"\nmemory = 4\n",
    );
    let r = h.dom0ctl(&["create", &cfg]);
    r.code(1);
    assert!(r.stderr.contains("XEN_DOMCTL_createdomain"), "{}", r.stderr);
    assert!(listed(&h, "over").is_none());
    let log = h.serial();
    assert!(log.contains("domains: at most 70 at once"), "{log}");
    assert!(log.contains("domains: 70 slots"), "{log}");
    assert!(log.contains("no free domain slot (max_domains=70"), "{log}");
    wait_for_console(&h, "m68", "hello: PASS");
    for i in 0..69 {
        h.dom0ctl(&["destroy", &format!("m{i}")]).code(0);
    }
    let first = free_frames(&h);
    assert_eq!(before - first, table_growth_frames(&h));
    create_idle(&h, t, "n", 69);
    wait_for_console(&h, "n68", "hello: PASS");
    for i in 0..69 {
        h.dom0ctl(&["destroy", &format!("n{i}")]).code(0);
    }
    assert_eq!(free_frames(&h), first, "the second round reused the slots");
}

/// A bad config is refused on the host with the file, line and key; an ELF that is
/// not a Xen PV kernel crosses the link and dom0 refuses it, saying why.
#[test]
fn malformed_configs_and_images_give_clear_errors() {
    let t = "dom0ctl-malformed";
    let h = ControlHost::boot(t);
    let bad = config(
        t,
        "bad.toml",
        "name = \"m\"\nimage = \"hello\"\nmemory = \"lots\"\n",
    );
    let r = h.dom0ctl(&["create", &bad]);
    r.code(3);
    assert!(
        r.stderr.contains("bad.toml:3") && r.stderr.contains("memory"),
        "{}",
        r.stderr
    );
    // A minimal ELF64 x86-64 executable with one PT_LOAD and no Xen notes.
    let mut elf = vec![0u8; 0x78 + 16];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&0x40_0078u64.to_le_bytes()); // entry
    elf[32..40].copy_from_slice(&0x40u64.to_le_bytes()); // phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = 0x40;
    let len = elf.len() as u64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    elf[ph + 16..ph + 24].copy_from_slice(&0x40_0000u64.to_le_bytes()); // vaddr
    elf[ph + 24..ph + 32].copy_from_slice(&0x40_0000u64.to_le_bytes()); // paddr
    elf[ph + 32..ph + 40].copy_from_slice(&len.to_le_bytes()); // filesz
    elf[ph + 40..ph + 48].copy_from_slice(&len.to_le_bytes()); // memsz
    let img = scratch(t).join("notpv.elf");
    std::fs::write(&img, &elf).unwrap();
    let cfg = config(
        t,
        "notpv.toml",
        &format!("name = \"np\"\nkernel = \"{}\"\n", img.display()),
    );
    let r = h.dom0ctl(&["create", &cfg]);
    r.code(1);
    assert!(
        r.stderr.to_lowercase().contains("xen") && r.stderr.contains("np"),
        "{}",
        r.stderr
    );
    assert!(listed(&h, "np").is_none());
}

/// What `scripts/run` boots: dom0 starts the demo kernel as a domU (`autostart=demo`),
/// listed by name, its console served by dom0.
#[test]
fn dom0_autostarts_the_demo_domu() {
    let h = ControlHost::boot_full("dom0ctl-autostart", "autostart=demo", Vec::new());
    let row = listed(&h, "demo").expect("demo listed");
    assert_eq!(row.split_whitespace().nth(1), Some("1"), "{row}");
    wait_for_console(&h, "demo", "pv-demo: pv-runtime demo kernel");
}

/// `dom0ctl vcpu-pin` on a running two-vCPU domU (two CPUs): one vCPU's hard
/// map, then every vCPU's soft map with the hard ones left alone (`-`), each read
/// back with `vcpu-list`; a vCPU the domain lacks, a map without a CPU of the
/// machine (the map stays as it was) and an unknown domain fail with exit code 1;
/// the pinned vCPU then runs on its CPU.
#[test]
fn vcpu_pin_changes_a_running_domains_affinity() {
    let t = "dom0ctl-vcpu-pin";
    let h = ControlHost::boot_fast(t, "");
    let cfg = config(
        t,
        "pin.toml",
        "name = \"pin\"\nimage = \"ticker\"\nmemory = 8\nvcpus = 2\ncmdline = \"secs=60\"\n",
    );
    h.dom0ctl(&["create", &cfg]).code(0);
    wait_for_console(&h, "pin", "ticker: tick 1");
    let table = || h.vcpu_rows("pin");
    // (vcpu, hard, soft) of each row.
    let maps = || -> Vec<(String, String, String)> {
        table()
            .into_iter()
            .map(|w| (w[2].clone(), w[6].clone(), w[8].clone()))
            .collect()
    };
    let row = |v: &str, hard: &str, soft: &str| (v.to_string(), hard.into(), soft.into());
    assert_eq!(maps(), [row("0", "all", "all"), row("1", "all", "all")]);

    h.dom0ctl(&["vcpu-pin", "pin", "0", "1"]).code(0);
    assert_eq!(maps(), [row("0", "1", "all"), row("1", "all", "all")]);
    h.dom0ctl(&["vcpu-pin", "pin", "all", "-", "0"]).code(0);
    let pinned = [row("0", "1", "0"), row("1", "all", "0")];
    assert_eq!(maps(), pinned);

    let r = h.dom0ctl(&["vcpu-pin", "pin", "5", "1"]);
    r.code(1);
    assert!(
        r.stderr
            .contains("vcpu-pin pin 5: domain pin has no vCPU 5: it has 2 vCPUs (0 to 1)"),
        "{}",
        r.stderr
    );
    let r = h.dom0ctl(&["vcpu-pin", "pin", "0", "7"]);
    r.code(1);
    assert!(
        r.stderr.contains(
            "vcpu-pin pin 0: vCPU 0's CPUs (7) include none that runs guests \
             (this machine has 2: 0-1)"
        ) && r.stderr.contains("nothing was changed"),
        "{}",
        r.stderr
    );
    assert_eq!(maps(), pinned, "the refused map changed nothing");
    let r = h.dom0ctl(&["vcpu-pin", "nosuchdom", "0", "1"]);
    r.code(1);
    assert!(
        r.stderr.contains("no such domain: nosuchdom"),
        "{}",
        r.stderr
    );

    // vCPU 0 moves to CPU 1 (getvcpuinfo's CPU) at its next schedule.
    let start = std::time::Instant::now();
    loop {
        let rows = table();
        if rows[0][3] == "1" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "vCPU 0 never ran on CPU 1: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for_console(&h, "pin", "ticker: tick 3");
    assert_eq!(table()[0][3], "1", "it stays on CPU 1");
}
