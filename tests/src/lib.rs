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

/// A scratch directory for one test's files.
pub fn scratch(test: &str) -> PathBuf {
    let dir = xtask::target_dir().join("xlhv-tests").join(test);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
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
    /// A boot with the defaults: 256 MiB, one CPU, `pc`, `-cpu max`, stop at "boot complete".
    pub fn new(name: &str) -> Self {
        Boot {
            name: name.into(),
            cmdline: String::new(),
            modules: Vec::new(),
            mem: "256M".into(),
            smp: 1,
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
