//! Harness for the QEMU integration tests: build the hypervisor once, make a GRUB ISO
//! per test, boot it headless under TCG with a deadline and `-no-reboot`, and return
//! what COM1 printed and how QEMU ended.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
pub use xlhv_core::exit::QemuExit;
pub use xtask::{Module, RunOutput};

/// The line the hypervisor prints when boot has finished and it idles.
pub const BOOT_COMPLETE: &str = "boot complete";

/// The hypervisor ELF, built once per test process.
pub fn hypervisor() -> &'static Path {
    static HV: OnceLock<PathBuf> = OnceLock::new();
    HV.get_or_init(|| match xtask::build_hypervisor() {
        Ok(p) => p,
        Err(e) => panic!("cannot build the hypervisor: {e:#}"),
    })
}

/// A test guest's ELF (built once per test process, all test guests together).
pub fn test_guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if let Err(e) = xtask::build_test_guest("hello") {
            panic!("cannot build the test guests: {e:#}");
        }
    });
    let path = xtask::target_dir()
        .join(xtask::KERNEL_TARGET)
        .join("release")
        .join(name);
    assert!(path.is_file(), "no test guest {name} at {}", path.display());
    path
}

/// Test guest `name` without its debug sections, in `test`'s scratch folder
/// (uploads over COM2 run at tens of KiB/s; the full ELF is mostly DWARF).
/// Falls back to the full ELF when `strip` is missing.
pub fn stripped_guest(test: &str, name: &str) -> PathBuf {
    let full = test_guest(name);
    let small = scratch(test).join(format!("{name}.elf"));
    let ok = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&small)
        .arg(&full)
        .status()
        .is_ok_and(|s| s.success());
    if ok { small } else { full }
}

/// The demo guest kernel's ELF.
pub fn demo_guest() -> PathBuf {
    static DEMO: OnceLock<PathBuf> = OnceLock::new();
    DEMO.get_or_init(|| match xtask::build_demo() {
        Ok(p) => p,
        Err(e) => panic!("cannot build the demo guest: {e:#}"),
    })
    .clone()
}

/// Boots `kernel` as dom0 and waits until the hypervisor ends the machine.
pub fn boot_dom0(name: &str, kernel: &Path) -> Boot0 {
    let mut boot = Boot::new(name);
    boot.modules = vec![Module {
        path: kernel.to_path_buf(),
        cmdline: "dom0".into(),
    }];
    boot.stop_at = None;
    boot.run()
}

/// With `XLHV_TRACE_TIMES` set, prints how long one step of test `name` took
/// (to see where a suite's time goes: `XLHV_TRACE_TIMES=1 cargo test ... --nocapture`).
pub fn trace_time(name: &str, what: &str, took: Duration) {
    if std::env::var_os("XLHV_TRACE_TIMES").is_some() {
        eprintln!("[time] {name}: {:8.2} s  {what}", took.as_secs_f64());
    }
}

/// A scratch directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = xtask::target_dir().join("xlhv-tests").join(test);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// QEMU CPUs for the tests' machines: `XLHV_TEST_SMP`, or 2, so that every test runs
/// with the application processors brought up (docs/smp.md).
pub fn test_smp() -> u32 {
    std::env::var("XLHV_TEST_SMP")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| (1..=8).contains(&n))
        .unwrap_or(2)
}

/// One boot of the GRUB image.
#[derive(Clone, Debug)]
pub struct Boot {
    /// Test name (names the ISO).
    pub name: String,
    /// Hypervisor command line.
    pub cmdline: String,
    /// Modules.
    pub modules: Vec<Module>,
    /// QEMU memory.
    pub mem: String,
    /// QEMU CPUs.
    pub smp: u32,
    /// QEMU machine.
    pub machine: String,
    /// QEMU CPU model.
    pub cpu: String,
    /// Give up after this long.
    pub deadline: Duration,
    /// Stop (kill QEMU) once a line contains this; `None` waits for QEMU to exit.
    pub stop_at: Option<String>,
}

impl Boot {
    /// A boot with the defaults: 256 MiB, [`test_smp`] CPUs, `pc`, `-cpu max`, stop at
    /// "boot complete".
    pub fn new(name: &str) -> Self {
        Boot {
            name: name.into(),
            cmdline: String::new(),
            modules: Vec::new(),
            mem: "256M".into(),
            smp: test_smp(),
            machine: "pc".into(),
            cpu: "max".into(),
            deadline: Duration::from_secs(120),
            stop_at: Some(BOOT_COMPLETE.into()),
        }
    }

    /// The same boot with `-m mem`.
    pub fn with_mem(mut self, mem: &str) -> Self {
        self.mem = mem.into();
        self
    }

    /// Makes the ISO and boots it.
    pub fn run(&self) -> Boot0 {
        let dir = scratch(&self.name);
        let iso = dir.join("boot.iso");
        let spec = xtask::IsoSpec {
            hypervisor: hypervisor().to_path_buf(),
            cmdline: self.cmdline.clone(),
            modules: self.modules.clone(),
        };
        if let Err(e) = xtask::make_iso(&spec, &iso) {
            panic!("{}: making the ISO failed: {e:#}", self.name);
        }
        let mut cfg = xtask::QemuConfig::new(iso);
        cfg.mem = self.mem.clone();
        cfg.smp = self.smp;
        cfg.machine = self.machine.clone();
        cfg.cpu = self.cpu.clone();
        let stop = self.stop_at.clone();
        let out = xtask::run_qemu(&cfg, self.deadline, |line| {
            stop.as_deref().is_some_and(|s| line.contains(s))
        })
        .unwrap_or_else(|e| panic!("{}: running QEMU failed: {e:#}", self.name));
        std::fs::write(dir.join("com1.log"), &out.serial).ok();
        Boot0 {
            name: self.name.clone(),
            out,
        }
    }
}

/// The result of a boot, with assertions that print the whole log when they fail.
#[derive(Debug)]
pub struct Boot0 {
    /// Test name.
    pub name: String,
    /// QEMU's output.
    pub out: RunOutput,
}

impl Boot0 {
    fn fail(&self, why: &str) -> ! {
        panic!(
            "{}: {why}\n--- COM1 ---\n{}\n--- QEMU stderr ---\n{}\n--- status {:?}, timed out {} ---",
            self.name, self.out.serial, self.out.stderr, self.out.status, self.out.timed_out
        )
    }

    /// Asserts that some line contains `needle`; returns the first such line.
    pub fn line(&self, needle: &str) -> &str {
        match self.out.serial.lines().find(|l| l.contains(needle)) {
            Some(l) => l,
            None => self.fail(&format!("no line contains {needle:?}")),
        }
    }

    /// Asserts that no line contains `needle`.
    pub fn no_line(&self, needle: &str) {
        if let Some(l) = self.out.serial.lines().find(|l| l.contains(needle)) {
            self.fail(&format!("unexpected line {l:?}"));
        }
    }

    /// Asserts that the boot reached "boot complete" in time.
    pub fn completed(&self) -> &Self {
        if !self.out.stopped {
            self.fail("the hypervisor did not reach 'boot complete'");
        }
        self
    }

    /// Asserts that the hypervisor itself ended QEMU with `exit`.
    pub fn exited(&self, exit: QemuExit) -> &Self {
        if self.out.exit != Some(exit) {
            self.fail(&format!("expected the hypervisor to exit with {exit:?}"));
        }
        self
    }

    /// The number right after `after` in the first line containing `after`.
    pub fn number_after(&self, after: &str) -> u64 {
        let line = self.line(after);
        let rest = &line[line.find(after).map_or(0, |i| i + after.len())..];
        let digits: String = rest
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| self.fail(&format!("no number after {after:?} in {line:?}")))
    }
}

/// The dom0 kernel (control agent) and the default image bundle, built once
/// per test process: the modules `scripts/run` boots by default.
pub fn dom0_modules() -> Vec<Module> {
    static MODS: OnceLock<Vec<Module>> = OnceLock::new();
    MODS.get_or_init(|| match xtask::dom0_modules() {
        Ok(m) => m,
        Err(e) => panic!("cannot build the dom0 kernel and its images: {e:#}"),
    })
    .clone()
}

/// The host's `dom0ctl` binary, built once per test process.
pub fn dom0ctl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match xtask::build_dom0ctl() {
        Ok(p) => p,
        Err(e) => panic!("cannot build dom0ctl: {e:#}"),
    })
}

/// What one `dom0ctl` run did.
#[derive(Debug)]
pub struct CtlRun {
    /// The arguments (after `--socket`).
    pub args: Vec<String>,
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall time.
    pub took: Duration,
}

impl CtlRun {
    /// Asserts the exit code, printing everything when it differs.
    #[track_caller]
    pub fn code(&self, want: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(want),
            "dom0ctl {:?}: exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.args,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// A running machine whose dom0 is the control agent, with COM2 on a unix
/// socket in the test's scratch folder; QEMU is killed when it is dropped.
#[derive(Debug)]
pub struct ControlHost {
    /// Test name.
    pub name: String,
    /// QEMU.
    pub machine: xtask::Machine,
    /// The control socket.
    pub socket: PathBuf,
}

/// What dom0 prints on COM1 when its agent serves COM2.
pub const LISTENING: &str = xtask::dom0::LISTENING;

impl ControlHost {
    /// Boots the hypervisor with the dom0 kernel and its image bundle, and
    /// waits until dom0's agent listens.
    pub fn boot(name: &str) -> ControlHost {
        Self::boot_with(name, Vec::new())
    }

    /// [`ControlHost::boot`] with further modules (boot-time domUs, say) after
    /// dom0's.
    pub fn boot_with(name: &str, extra: Vec<Module>) -> ControlHost {
        Self::boot_full(name, "", extra)
    }

    /// [`ControlHost::boot_with`] with `dom0_args` added to dom0's command line
    /// (`autostart=demo`, say).
    pub fn boot_full(name: &str, dom0_args: &str, extra: Vec<Module>) -> ControlHost {
        Self::boot_machine(name, dom0_args, extra, "512M")
    }

    /// [`ControlHost::boot`] on a machine with `qemu_mem` of RAM (`"1536M"`, say)
    /// instead of 512 MiB, for tests that run many domUs. dom0 keeps its default
    /// memory (128 MiB); the rest is the hypervisor's, for domUs.
    pub fn boot_mem(name: &str, qemu_mem: &str) -> ControlHost {
        Self::boot_machine(name, "", Vec::new(), qemu_mem)
    }

    /// [`ControlHost::boot_with`] on QEMU machine type `machine` (`"pc"`, `"q35"`)
    /// with `qemu_args` added to QEMU's command line (devices for dom0, say).
    pub fn boot_on(
        name: &str,
        machine: &str,
        qemu_args: &[&str],
        extra: Vec<Module>,
    ) -> ControlHost {
        Self::boot_qemu(name, "", extra, "512M", machine, qemu_args, false)
    }

    /// [`ControlHost::boot_full`] with dom0's fast control link (a virtio console
    /// on `ctl.fast.sock` beside the COM2 socket, which `dom0ctl` then prefers).
    pub fn boot_fast(name: &str, dom0_args: &str) -> ControlHost {
        Self::boot_qemu(name, dom0_args, Vec::new(), "512M", "pc", &[], true)
    }

    /// [`ControlHost::boot_fast`] on a machine with `qemu_mem` of RAM.
    pub fn boot_fast_mem(name: &str, qemu_mem: &str) -> ControlHost {
        Self::boot_qemu(name, "", Vec::new(), qemu_mem, "pc", &[], true)
    }

    /// [`ControlHost::boot_full`] with `qemu_args` added to QEMU's command line
    /// (dom0's disks, say: `xtask::disk::DiskSpec::qemu_args`).
    pub fn boot_with_args(name: &str, dom0_args: &str, qemu_args: &[String]) -> ControlHost {
        Self::boot_on_with(name, "pc", dom0_args, qemu_args)
    }

    /// [`ControlHost::boot_with_args`] on QEMU machine type `machine`.
    pub fn boot_on_with(
        name: &str,
        machine: &str,
        dom0_args: &str,
        qemu_args: &[String],
    ) -> ControlHost {
        let args: Vec<&str> = qemu_args.iter().map(String::as_str).collect();
        Self::boot_qemu(name, dom0_args, Vec::new(), "512M", machine, &args, false)
    }

    /// [`ControlHost::boot_fast_mem`] with `qemu_args` added to QEMU's command line.
    pub fn boot_fast_with_args(name: &str, qemu_mem: &str, qemu_args: &[String]) -> ControlHost {
        let args: Vec<&str> = qemu_args.iter().map(String::as_str).collect();
        Self::boot_qemu(name, "", Vec::new(), qemu_mem, "pc", &args, true)
    }

    fn boot_machine(name: &str, dom0_args: &str, extra: Vec<Module>, mem: &str) -> ControlHost {
        Self::boot_qemu(name, dom0_args, extra, mem, "pc", &[], false)
    }

    /// [`ControlHost::boot_fast_mem`] on `cpus` CPUs instead of [`test_smp`]'s,
    /// with `hv_cmdline` on the hypervisor's command line.
    pub fn boot_fast_cpus(name: &str, qemu_mem: &str, cpus: u32, hv_cmdline: &str) -> ControlHost {
        Self::boot_qemu_on(
            name,
            "",
            Vec::new(),
            qemu_mem,
            "pc",
            &[],
            true,
            cpus,
            hv_cmdline,
        )
    }

    /// [`ControlHost::boot_fast_with_args`] with `hv_cmdline` on the hypervisor's
    /// command line (`dom0_mem=256M`).
    pub fn boot_fast_with_hv_args(
        name: &str,
        qemu_mem: &str,
        hv_cmdline: &str,
        qemu_args: &[String],
    ) -> ControlHost {
        let args: Vec<&str> = qemu_args.iter().map(String::as_str).collect();
        Self::boot_qemu_on(
            name,
            "",
            Vec::new(),
            qemu_mem,
            "pc",
            &args,
            true,
            test_smp(),
            hv_cmdline,
        )
    }

    fn boot_qemu(
        name: &str,
        dom0_args: &str,
        extra: Vec<Module>,
        mem: &str,
        machine_type: &str,
        qemu_args: &[&str],
        fast: bool,
    ) -> ControlHost {
        let cpus = test_smp();
        Self::boot_qemu_on(
            name,
            dom0_args,
            extra,
            mem,
            machine_type,
            qemu_args,
            fast,
            cpus,
            "",
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn boot_qemu_on(
        name: &str,
        dom0_args: &str,
        extra: Vec<Module>,
        mem: &str,
        machine_type: &str,
        qemu_args: &[&str],
        fast: bool,
        cpus: u32,
        hv_cmdline: &str,
    ) -> ControlHost {
        let started = std::time::Instant::now();
        let dir = scratch(name);
        let mut modules = dom0_modules();
        if let Some(d0) = modules.first_mut()
            && !dom0_args.is_empty()
        {
            d0.cmdline = format!("{} {dom0_args}", d0.cmdline);
        }
        let iso = dir.join("boot.iso");
        let socket = dir.join("ctl.sock");
        assert!(
            socket.as_os_str().len() < 100,
            "{}: unix socket paths must be under 108 bytes; use a shorter CARGO_TARGET_DIR",
            socket.display()
        );
        let spec = xtask::IsoSpec {
            hypervisor: hypervisor().to_path_buf(),
            cmdline: hv_cmdline.into(),
            modules: modules.into_iter().chain(extra).collect(),
        };
        if let Err(e) = xtask::make_iso(&spec, &iso) {
            panic!("{name}: making the ISO failed: {e:#}");
        }
        if let Err(e) = xtask::prepare_socket(&socket) {
            panic!("{name}: {e:#}");
        }
        let mut cfg = xtask::QemuConfig::new(iso);
        cfg.mem = mem.into();
        cfg.smp = cpus;
        cfg.machine = machine_type.into();
        if fast {
            let fast = dom0ctl::paths::fast_socket_path(&socket);
            if let Err(e) = xtask::prepare_socket(&fast) {
                panic!("{name}: {e:#}");
            }
            cfg.fast_socket = Some(fast);
        }
        cfg.extra = qemu_args.iter().map(|a| a.to_string()).collect();
        cfg.control_socket = Some(socket.clone());
        let mut machine = xtask::Machine::spawn(&cfg)
            .unwrap_or_else(|e| panic!("{name}: starting QEMU failed: {e:#}"));
        if let Err(e) = machine.wait_for(LISTENING, Duration::from_secs(120)) {
            panic!("{name}: {e:#}");
        }
        trace_time(name, "boot", started.elapsed());
        ControlHost {
            name: name.into(),
            machine,
            socket,
        }
    }

    /// Runs `dom0ctl --socket SOCK ARGS...`.
    pub fn dom0ctl(&self, args: &[&str]) -> CtlRun {
        let start = std::time::Instant::now();
        let out = std::process::Command::new(dom0ctl_bin())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{}: running dom0ctl: {e}", self.name));
        let took = start.elapsed();
        trace_time(&self.name, &args.join(" "), took);
        CtlRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            took,
        }
    }

    /// `dom0ctl vcpu-list DOM`'s rows, split into words: Name ID VCPU CPU State
    /// Time(s) hard / soft (asserts the command succeeds and each row has them).
    pub fn vcpu_rows(&self, dom: &str) -> Vec<Vec<String>> {
        let v = self.dom0ctl(&["vcpu-list", dom]);
        v.code(0);
        v.stdout
            .lines()
            .skip(1)
            .map(|l| {
                let w: Vec<String> = l.split_whitespace().map(String::from).collect();
                assert_eq!(
                    (w.len(), w.get(7).map(String::as_str)),
                    (9, Some("/")),
                    "{}",
                    v.stdout
                );
                w
            })
            .collect()
    }

    /// Everything COM1 printed so far.
    pub fn serial(&self) -> String {
        self.machine.serial()
    }

    /// `dom`'s console once it shows `needle`, polled with `dom0ctl console
    /// --no-follow`; panics with the console and COM1 after `secs` seconds, or at once
    /// when the console shows `fail` (a guest's FAIL line, say; `None`: no check).
    pub fn console_until(&self, dom: &str, needle: &str, fail: Option<&str>, secs: u64) -> String {
        let start = std::time::Instant::now();
        loop {
            let c = self.dom0ctl(&["console", dom, "--no-follow"]);
            if c.stdout.contains(needle) {
                return c.stdout;
            }
            assert!(
                !fail.is_some_and(|f| c.stdout.contains(f)),
                "{dom} failed:\n{}",
                c.stdout
            );
            assert!(
                start.elapsed() < std::time::Duration::from_secs(secs),
                "{dom}'s console never showed {needle:?}:\n{}\n{}\n--- COM1 ---\n{}",
                c.stdout,
                c.stderr,
                self.serial()
            );
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
    }

    /// [`ControlHost::console_until`], but only the first line that shows `needle`.
    pub fn console_line(&self, dom: &str, needle: &str, fail: Option<&str>, secs: u64) -> String {
        let out = self.console_until(dom, needle, fail, secs);
        out.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for ControlHost {
    fn drop(&mut self) {
        std::fs::write(scratch(&self.name).join("com1.log"), self.machine.serial()).ok();
    }
}
