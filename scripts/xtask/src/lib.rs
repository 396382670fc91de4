//! Builds xen-like-hv and its guests, makes the GRUB ISO, and runs QEMU.
//!
//! `scripts/run` drives this through the `xtask` binary; the integration tests in
//! `tests/` call it directly, so both boot exactly the same way.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use xlhv_core::exit::QemuExit;

pub mod bench;
pub mod bench_block;
pub mod bench_ctl;
pub mod bench_history;
pub mod bench_ledger;
pub mod bench_net;
pub mod bench_report;
pub mod disk;
pub mod dom0;
pub mod fuzz;
pub mod linux;
pub mod nic;
pub mod xen;

pub use dom0::{
    Machine, build_dom0, build_dom0ctl, build_image_bundle, dom0_modules, prepare_socket,
};

/// Rust target of the hypervisor and every PV kernel.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Environment variable naming the workspace's top directory; `scripts/run` and
/// `scripts/bench` set it to the checkout they belong to.
pub const ROOT_ENV: &str = "XLHV_ROOT";

/// The workspace's top directory, found at run time, so that a copy of the checkout
/// (with its `target/` and a prebuilt `xtask`) builds and writes into itself: the
/// directory in `$XLHV_ROOT`; else the nearest directory at or above the current one
/// that is this workspace ([`is_workspace_root`]); else the one above the running
/// executable (`target/*/xtask` of a checkout); only then the directory this crate was
/// compiled in.
pub fn workspace_root() -> PathBuf {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let cwd = std::env::current_dir().ok();
        let exe = std::env::current_exe().ok();
        locate_root(
            std::env::var_os(ROOT_ENV).map(PathBuf::from),
            cwd.as_deref(),
            exe.as_deref(),
        )
        .unwrap_or_else(|| {
            let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
            built.canonicalize().unwrap_or(built)
        })
    })
    .clone()
}

/// Whether `dir` is the top of an xen-like-hv workspace: a `Cargo.toml` with a
/// `[workspace]` table, and this crate at `scripts/xtask`.
pub fn is_workspace_root(dir: &Path) -> bool {
    dir.join("scripts/xtask/Cargo.toml").is_file()
        && std::fs::read_to_string(dir.join("Cargo.toml"))
            .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
}

/// The nearest workspace top at or above `start`.
pub fn find_root_above(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| is_workspace_root(d))
        .map(Path::to_path_buf)
}

/// [`workspace_root`]'s choice among the explicit directory (`$XLHV_ROOT`, which must
/// be a workspace top), the current directory and the executable's path.
pub fn locate_root(
    explicit: Option<PathBuf>,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> Option<PathBuf> {
    let canon = |p: PathBuf| p.canonicalize().unwrap_or(p);
    if let Some(dir) = explicit.filter(|d| is_workspace_root(d)) {
        return Some(canon(dir));
    }
    cwd.and_then(find_root_above)
        .or_else(|| exe.and_then(find_root_above))
        .map(canon)
}

/// Cargo's target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => workspace_root().join("target"),
    }
}

/// Builds a kernel-target package in release mode and returns the path of its binary.
pub fn build_kernel(package: &str, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            package,
            "--target",
            KERNEL_TARGET,
        ])
        .status()
        .with_context(|| format!("running cargo to build {package}"))?;
    if !status.success() {
        bail!("building {package} for {KERNEL_TARGET} failed ({status})");
    }
    let path = target_dir().join(KERNEL_TARGET).join("release").join(bin);
    if !path.is_file() {
        bail!("cargo built {package} but {} is missing", path.display());
    }
    Ok(path)
}

/// Builds a single-purpose test guest (`pv-guest-kernel/test-guests`) and returns its ELF.
pub fn build_test_guest(name: &str) -> Result<PathBuf> {
    build_kernel("pv-test-guests", name)
}

/// Builds the demo guest kernel and returns its ELF.
pub fn build_demo() -> Result<PathBuf> {
    build_kernel("pv-demo", "pv-demo")
}

/// Builds the hypervisor and returns its ELF image.
pub fn build_hypervisor() -> Result<PathBuf> {
    build_kernel("xen-like-hv", "xen-like-hv")
}

/// A module for the ISO: a file and the command line GRUB passes with it. The first
/// word of the command line is the module's name (`dom0`, `domu`, ...).
#[derive(Clone, Debug)]
pub struct Module {
    /// File to put on the ISO.
    pub path: PathBuf,
    /// Command line, first word = name.
    pub cmdline: String,
}

impl Module {
    /// Parses `PATH[:NAME]` (`scripts/run --module`). Without a name the module is
    /// called after its file.
    pub fn parse(spec: &str) -> Result<Module> {
        let (path, name) = match spec.rsplit_once(':') {
            Some((p, n)) if !n.is_empty() && !n.contains('/') => (p, n.to_string()),
            _ => {
                let name = Path::new(spec)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "module".into());
                (spec, name)
            }
        };
        Ok(Module {
            path: PathBuf::from(path),
            cmdline: name,
        })
    }
}

impl Module {
    /// dom0's kernel for `scripts/run`: module string `dom0`, or `cmdline` whole
    /// (`--dom0-cmdline`), which then is dom0's entire command line. The hypervisor
    /// takes the module named `dom0` as dom0's kernel, else the first module that is
    /// not a `domu` (docs/boot.md), so a string whose first word is not `dom0` works as
    /// long as this module comes first; one starting with `domu` would make it a domU
    /// and is refused.
    pub fn dom0(path: PathBuf, cmdline: Option<&str>) -> Result<Module> {
        let cmdline = cmdline.unwrap_or("dom0");
        if cmdline
            .split_whitespace()
            .next()
            .is_some_and(|w| w.trim_matches('"').eq_ignore_ascii_case("domu"))
        {
            bail!(
                "--dom0-cmdline {cmdline:?}: a module string starting with `domu` names a \
                 boot-time domU, not dom0"
            );
        }
        Ok(Module {
            path,
            cmdline: cmdline.to_string(),
        })
    }

    /// Parses `PATH[,name=NAME][,mem=SIZE][,weight=N][,cmdline=TEXT]`
    /// (`scripts/run --domu`): a boot-time domU module. The name defaults to the file's
    /// stem; `cmdline=` takes the rest of the string, commas included.
    pub fn domu(spec: &str) -> Result<Module> {
        let (path, mut rest) = match spec.split_once(',') {
            Some((p, r)) => (p, r),
            None => (spec, ""),
        };
        if path.is_empty() {
            bail!("--domu {spec:?}: no kernel path (write --domu PATH[,mem=16M,name=NAME])");
        }
        let mut name = Path::new(path)
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "domu".into());
        let (mut mem, mut weight, mut cmdline) = (None, None, None);
        while !rest.is_empty() {
            if let Some(c) = rest.strip_prefix("cmdline=") {
                cmdline = Some(c.to_string());
                break;
            }
            let (item, tail) = rest.split_once(',').unwrap_or((rest, ""));
            rest = tail;
            match item.split_once('=') {
                Some(("name", v)) if !v.is_empty() => name = v.to_string(),
                Some(("mem", v)) if !v.is_empty() => mem = Some(v.to_string()),
                Some(("weight", v)) if v.parse::<u16>().is_ok_and(|w| w > 0) => {
                    weight = Some(v.to_string());
                }
                _ => bail!(
                    "--domu {spec:?}: cannot use {item:?} \
                     (settings are name=NAME, mem=SIZE, weight=1..65535, cmdline=TEXT)"
                ),
            }
        }
        let mut line = format!("domu name={name}");
        if let Some(m) = mem {
            line.push_str(&format!(" mem={m}"));
        }
        if let Some(w) = weight {
            line.push_str(&format!(" weight={w}"));
        }
        if let Some(c) = cmdline {
            line.push_str(&format!(" \"cmdline={c}\""));
        }
        Ok(Module {
            path: PathBuf::from(path),
            cmdline: line,
        })
    }
}

/// What goes on a GRUB ISO.
#[derive(Clone, Debug, Default)]
pub struct IsoSpec {
    /// The hypervisor ELF.
    pub hypervisor: PathBuf,
    /// The hypervisor's command line.
    pub cmdline: String,
    /// Modules, in order.
    pub modules: Vec<Module>,
}

/// Splits a command line into words (double quotes group: `cmdline="a b"` is one word
/// and loses its quotes) and quotes each for grub.cfg. GRUB rebuilds the line from
/// these words, wrapping a word that contains spaces in double quotes
/// (`"cmdline=a b"`), which the hypervisor's tokenizer understands.
fn grub_words(line: &str) -> String {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .iter()
        .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The grub.cfg for an ISO.
pub fn grub_cfg(spec: &IsoSpec) -> String {
    let mut cfg = String::from(
        "set timeout=0\nset default=0\n# GRUB stays off the serial port: COM1 carries only the hypervisor's log.\n\
         terminal_output console\nmenuentry \"xen-like-hv\" {\n",
    );
    cfg.push_str(&format!(
        "    multiboot2 /boot/xen-like-hv {}\n",
        grub_words(&spec.cmdline)
    ));
    for (i, m) in spec.modules.iter().enumerate() {
        cfg.push_str(&format!(
            "    module2 /boot/mod{i} {}\n",
            grub_words(&m.cmdline)
        ));
    }
    cfg.push_str("    boot\n}\n");
    cfg
}

/// Makes a bootable ISO at `out` with grub-mkrescue.
pub fn make_iso(spec: &IsoSpec, out: &Path) -> Result<()> {
    let stage = out.with_extension("d");
    let _ = std::fs::remove_dir_all(&stage);
    let boot = stage.join("boot");
    std::fs::create_dir_all(boot.join("grub"))
        .with_context(|| format!("creating {}", boot.display()))?;
    std::fs::copy(&spec.hypervisor, boot.join("xen-like-hv"))
        .with_context(|| format!("copying {}", spec.hypervisor.display()))?;
    for (i, m) in spec.modules.iter().enumerate() {
        std::fs::copy(&m.path, boot.join(format!("mod{i}")))
            .with_context(|| format!("module {}: cannot read {}", i, m.path.display()))?;
    }
    std::fs::write(boot.join("grub/grub.cfg"), grub_cfg(spec))?;
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&stage)
        .output()
        .context("running grub-mkrescue (install grub-common, grub-pc-bin, xorriso, mtools: scripts/setup)")?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

/// QEMU's accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Software emulation (the default: see DESIGN.md, section 5).
    Tcg,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
}

/// How to run QEMU.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// The ISO to boot.
    pub iso: PathBuf,
    /// Accelerator.
    pub accel: Accel,
    /// CPU model.
    pub cpu: String,
    /// Machine type (`pc` or `q35`).
    pub machine: String,
    /// Memory, in QEMU's syntax (`256M`, `2G`).
    pub mem: String,
    /// Number of CPUs.
    pub smp: u32,
    /// No window; serial on stdio.
    pub headless: bool,
    /// dom0's control link: COM2 as a unix socket QEMU listens on (no COM2
    /// when `None`).
    pub control_socket: Option<PathBuf>,
    /// dom0's fast control link: a virtio console on a unix socket QEMU
    /// listens on (none when `None`).
    pub fast_socket: Option<PathBuf>,
    /// dom0's virtio-blk disks (`--disk`).
    pub disks: Vec<disk::DiskSpec>,
    /// dom0's virtio-net NICs (`--nic`).
    pub nics: Vec<nic::NicSpec>,
    /// Further arguments.
    pub extra: Vec<String>,
}

impl QemuConfig {
    /// Defaults: TCG, `-cpu max`, `pc`, 512 MiB, one CPU, headless.
    pub fn new(iso: PathBuf) -> Self {
        QemuConfig {
            iso,
            accel: Accel::Tcg,
            cpu: "max".into(),
            machine: "pc".into(),
            mem: "512M".into(),
            smp: 1,
            headless: true,
            control_socket: None,
            fast_socket: None,
            disks: Vec::new(),
            nics: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// The QEMU command line. COM1 goes to stdout.
    pub fn command(&self) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let accel = match self.accel {
            Accel::Tcg => "tcg",
            Accel::Kvm => "kvm",
        };
        c.args([
            "-machine",
            &self.machine,
            "-accel",
            accel,
            "-cpu",
            &self.cpu,
        ]);
        c.args(["-m", &self.mem, "-smp", &self.smp.to_string()]);
        c.arg("-cdrom").arg(&self.iso).args(["-boot", "d"]);
        c.args([
            "-no-reboot",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
        ]);
        if self.headless || std::env::var_os("DISPLAY").is_none() {
            c.args(["-display", "none"]);
        }
        c.args(["-serial", "mon:stdio"]);
        if let Some(sock) = &self.control_socket {
            // QEMU's option syntax doubles a comma inside a value.
            let path = sock.to_string_lossy().replace(',', ",,");
            c.arg("-chardev")
                .arg(format!("socket,id=ctl,path={path},server=on,wait=off"));
            c.args(["-device", "isa-serial,chardev=ctl,index=1"]);
        }
        if let Some(sock) = &self.fast_socket {
            let path = sock.to_string_lossy().replace(',', ",,");
            c.args(["-device", "virtio-serial-pci,id=vser0"]);
            c.arg("-chardev")
                .arg(format!("socket,id=fast,path={path},server=on,wait=off"));
            c.args(["-device", "virtconsole,chardev=fast,bus=vser0.0"]);
        }
        for (i, d) in self.disks.iter().enumerate() {
            c.args(d.qemu_args(i));
        }
        for (i, n) in self.nics.iter().enumerate() {
            c.args(n.qemu_args(i));
        }
        c.args(&self.extra);
        c
    }
}

/// What a QEMU run printed and how it ended.
#[derive(Debug)]
pub struct RunOutput {
    /// Everything COM1 printed (CRs removed).
    pub serial: String,
    /// QEMU's exit status, if it exited by itself.
    pub status: Option<i32>,
    /// The hypervisor's reason, decoded from the status.
    pub exit: Option<QemuExit>,
    /// The deadline passed before QEMU exited or the stop line appeared.
    pub timed_out: bool,
    /// The stop condition matched (QEMU was then killed).
    pub stopped: bool,
    /// QEMU's stderr.
    pub stderr: String,
}

/// A QEMU run with the time each COM1 line arrived.
#[derive(Debug)]
pub struct TimedRun {
    /// Lines (CRs removed) with their arrival time since QEMU was started.
    pub lines: Vec<(Duration, String)>,
    /// QEMU's exit status, if it exited by itself.
    pub status: Option<i32>,
    /// The deadline passed.
    pub timed_out: bool,
    /// The stop condition matched (QEMU was then killed).
    pub stopped: bool,
    /// QEMU's stderr.
    pub stderr: String,
    /// Wall time of the whole run.
    pub wall: Duration,
}

impl TimedRun {
    /// Everything COM1 printed.
    pub fn serial(&self) -> String {
        let mut s = String::new();
        for (_, l) in &self.lines {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// When the first line containing `needle` arrived.
    pub fn first(&self, needle: &str) -> Option<Duration> {
        self.lines
            .iter()
            .find(|(_, l)| l.contains(needle))
            .map(|(t, _)| *t)
    }
}

/// Runs QEMU until it exits, `stop` matches a line (QEMU is then killed) or `deadline`,
/// timestamping every COM1 line.
pub fn run_timed(
    cfg: &QemuConfig,
    deadline: Duration,
    stop: impl Fn(&str) -> bool,
) -> Result<TimedRun> {
    let mut cmd = cfg.command();
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (scripts/setup installs it)")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let mut stderr = child.stderr.take().context("qemu stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let at = start.elapsed();
            let line = String::from_utf8_lossy(&buf)
                .replace('\r', "")
                .trim_end_matches('\n')
                .to_string();
            if tx.send((at, line)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut lines = Vec::new();
    let (mut timed_out, mut stopped) = (false, false);
    loop {
        let left = deadline.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(200))) {
            Ok((at, line)) => {
                let hit = stop(&line);
                lines.push((at, line));
                if hit {
                    stopped = true;
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out || stopped {
        let _ = child.kill();
    }
    let status = child
        .wait()
        .ok()
        .and_then(|s| if stopped || timed_out { None } else { s.code() });
    let wall = start.elapsed();
    while let Ok(l) = rx.try_recv() {
        lines.push(l);
    }
    Ok(TimedRun {
        lines,
        status,
        timed_out,
        stopped,
        stderr: err_thread.join().unwrap_or_default(),
        wall,
    })
}

/// Runs QEMU headless until it exits, `stop` returns true for a line, or `deadline`.
pub fn run_qemu(
    cfg: &QemuConfig,
    deadline: Duration,
    stop: impl Fn(&str) -> bool,
) -> Result<RunOutput> {
    let run = run_timed(cfg, deadline, stop)?;
    Ok(RunOutput {
        serial: run.serial(),
        status: run.status,
        exit: run.status.and_then(QemuExit::from_status),
        timed_out: run.timed_out,
        stopped: run.stopped,
        stderr: run.stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_words_quote_for_grub_and_keep_double_quotes() {
        assert_eq!(grub_words("dom0"), "'dom0'");
        assert_eq!(grub_words("  a  b "), "'a' 'b'");
        assert_eq!(grub_words(r#"domu cmdline="x y""#), "'domu' 'cmdline=x y'");
        assert_eq!(grub_words("it's"), r"'it'\''s'");
    }

    #[test]
    fn dom0_module_string_is_dom0_or_the_whole_given_line() {
        let k = PathBuf::from("k.elf");
        assert_eq!(Module::dom0(k.clone(), None).unwrap().cmdline, "dom0");
        for line in ["console=hvc0 quiet", "", "dom0 x=1", "linux root=/dev/xvda"] {
            assert_eq!(Module::dom0(k.clone(), Some(line)).unwrap().cmdline, line);
        }
        for bad in ["domu name=x", " DomU", "\"domu\" a"] {
            assert!(Module::dom0(k.clone(), Some(bad)).is_err(), "{bad:?}");
        }
    }

    /// A fake checkout: a workspace `Cargo.toml` and `scripts/xtask/Cargo.toml`.
    fn fake_checkout(dir: &Path) {
        std::fs::create_dir_all(dir.join("scripts/xtask/src")).unwrap();
        std::fs::create_dir_all(dir.join("target/release")).unwrap();
        std::fs::create_dir_all(dir.join("tests/tests")).unwrap();
        std::fs::write(
            dir.join("Cargo.toml"),
            "[workspace]\nmembers = [\"scripts/xtask\"]\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("scripts/xtask/Cargo.toml"),
            "[package]\nname = \"xtask\"\n",
        )
        .unwrap();
    }

    #[test]
    fn the_workspace_is_found_from_where_we_run_not_where_we_were_built() {
        let t = tempfile::tempdir().unwrap();
        let (orig, copy) = (t.path().join("orig"), t.path().join("copy"));
        fake_checkout(&orig);
        fake_checkout(&copy);
        let canon = |p: &Path| p.canonicalize().unwrap();
        // From anywhere inside the copy: the copy.
        for cwd in ["", "tests/tests", "scripts/xtask/src", "target/release"] {
            assert_eq!(
                locate_root(
                    None,
                    Some(&copy.join(cwd)),
                    Some(&orig.join("target/release/xtask"))
                ),
                Some(canon(&copy)),
                "cwd {cwd:?}"
            );
        }
        // Outside any checkout: the one holding the executable.
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        assert_eq!(
            locate_root(
                None,
                Some(&elsewhere),
                Some(&copy.join("target/release/xtask"))
            ),
            Some(canon(&copy))
        );
        // $XLHV_ROOT wins, when it is a checkout.
        assert_eq!(
            locate_root(Some(orig.clone()), Some(&copy), None),
            Some(canon(&orig))
        );
        assert_eq!(
            locate_root(Some(elsewhere.clone()), Some(&copy), None),
            Some(canon(&copy)),
            "a bogus $XLHV_ROOT is ignored"
        );
        // A directory with a Cargo.toml that is not this workspace does not count.
        let crate_only = copy.join("scripts/xtask");
        assert!(!is_workspace_root(&crate_only));
        std::fs::write(t.path().join("Cargo.toml"), "[package]\nname = \"x\"\n").unwrap();
        assert!(!is_workspace_root(t.path()));
        assert_eq!(locate_root(None, Some(&elsewhere), None), None);
    }

    #[test]
    fn this_checkout_is_found_from_the_test_s_own_directory() {
        // cargo runs tests in the package directory: scripts/xtask of this checkout.
        let here = std::env::current_dir().unwrap();
        let root = find_root_above(&here).unwrap();
        assert!(is_workspace_root(&root));
        assert!(here.starts_with(&root));
        assert_eq!(workspace_root(), root.canonicalize().unwrap());
    }

    #[test]
    fn module_specs() {
        let m = Module::parse("a/b/guest.elf:dom0").unwrap();
        assert_eq!(m.path, PathBuf::from("a/b/guest.elf"));
        assert_eq!(m.cmdline, "dom0");
        let m = Module::parse("a/b/guest.elf").unwrap();
        assert_eq!(m.cmdline, "guest.elf");
    }

    #[test]
    fn qemu_command_has_the_safety_switches() {
        let c = QemuConfig::new(PathBuf::from("x.iso")).command();
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.contains(&"-no-reboot".to_string()));
        assert!(args.iter().any(|a| a.starts_with("isa-debug-exit")));
        assert!(args.contains(&"tcg".to_string()));
        assert!(
            !args.iter().any(|a| a.contains("chardev")),
            "no COM2 unless asked"
        );
    }

    #[test]
    fn control_socket_is_com2() {
        let mut cfg = QemuConfig::new(PathBuf::from("x.iso"));
        cfg.control_socket = Some(PathBuf::from("/tmp/a,b/dom0.sock"));
        let args: Vec<String> = cfg
            .command()
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let i = args.iter().position(|a| a == "-chardev").unwrap();
        assert_eq!(
            args[i + 1],
            "socket,id=ctl,path=/tmp/a,,b/dom0.sock,server=on,wait=off"
        );
        assert_eq!(
            args[i + 2..i + 4],
            ["-device", "isa-serial,chardev=ctl,index=1"]
        );
        let com1 = args.iter().position(|a| a == "mon:stdio").unwrap();
        assert!(com1 < i, "COM1 stays the first serial port");
    }
}
