//! dom0 with its control link: the dom0 kernel (`xlhv-dom0`), the image bundle
//! it gets as its initrd, the control socket (QEMU's COM2), the `dom0ctl`
//! binary, and QEMU running in the background ([`Machine`], and the detached
//! `scripts/run --detach`).

use anyhow::{Context, Result, bail};
use control_proto::images::BundleWriter;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xlhv_core::exit::QemuExit;

use crate::{Module, QemuConfig, build_kernel, target_dir, workspace_root};

/// What dom0 prints on COM1 once its control agent serves COM2.
pub const LISTENING: &str = "control agent listening on COM2";
/// The module name of dom0's image bundle on the GRUB command line.
pub const IMAGES_MODULE: &str = "images";

/// A kernel packed into the default image bundle.
#[derive(Clone, Copy, Debug)]
pub struct BundledImage {
    /// The name dom0 offers it under.
    pub name: &'static str,
    /// The cargo package that builds it.
    pub package: &'static str,
    /// The binary.
    pub bin: &'static str,
}

/// The images `scripts/run` gives dom0: five test guests and the demo.
pub const IMAGES: &[BundledImage] = &[
    BundledImage {
        name: "hello",
        package: "pv-test-guests",
        bin: "hello",
    },
    BundledImage {
        name: "ticker",
        package: "pv-test-guests",
        bin: "ticker",
    },
    BundledImage {
        name: "hog",
        package: "pv-test-guests",
        bin: "hog",
    },
    BundledImage {
        name: "pingpong",
        package: "pv-test-guests",
        bin: "pingpong",
    },
    BundledImage {
        name: "crash",
        package: "pv-test-guests",
        bin: "shutdown-crash",
    },
    BundledImage {
        name: "xenstore",
        package: "pv-test-guests",
        bin: "xenstore",
    },
    BundledImage {
        name: "demo",
        package: "pv-demo",
        bin: "pv-demo",
    },
];

/// Builds the dom0 kernel and returns its ELF.
pub fn build_dom0() -> Result<PathBuf> {
    build_kernel("xlhv-dom0", "dom0")
}

/// Builds the host's `dom0ctl` (release) and returns the binary's path.
pub fn build_dom0ctl() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--release", "-p", "dom0ctl"])
        .status()
        .context("running cargo to build dom0ctl")?;
    if !status.success() {
        bail!("building dom0ctl failed ({status})");
    }
    let path = target_dir().join("release").join("dom0ctl");
    if !path.is_file() {
        bail!("cargo built dom0ctl but {} is missing", path.display());
    }
    Ok(path)
}

/// Builds [`IMAGES`] and packs them into a bundle at `out`.
pub fn build_image_bundle(out: &Path) -> Result<PathBuf> {
    let mut built: Vec<&str> = Vec::new();
    let mut w = BundleWriter::new();
    for img in IMAGES {
        let path = if built.contains(&img.package) {
            target_dir()
                .join(crate::KERNEL_TARGET)
                .join("release")
                .join(img.bin)
        } else {
            built.push(img.package);
            build_kernel(img.package, img.bin)?
        };
        let bytes = std::fs::read(&path)
            .with_context(|| format!("image {}: reading {}", img.name, path.display()))?;
        w.add(img.name, &bytes)
            .map_err(|e| anyhow::anyhow!("image {}: {e}", img.name))?;
    }
    let bytes = w
        .finish()
        .map_err(|e| anyhow::anyhow!("packing the image bundle: {e}"))?;
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// The default dom0: the dom0 kernel (module `dom0`) and the image bundle as
/// its initrd (module `images`, right after it).
pub fn dom0_modules() -> Result<Vec<Module>> {
    let kernel = build_dom0()?;
    let bundle = build_image_bundle(&target_dir().join("xlhv-images.bin"))?;
    Ok(vec![
        Module {
            path: kernel,
            cmdline: "dom0".into(),
        },
        Module {
            path: bundle,
            cmdline: IMAGES_MODULE.into(),
        },
    ])
}

/// Makes `sock` ready for QEMU to listen on: creates its directory and removes
/// a stale socket. Refuses when something still listens there, or when the
/// path is not a socket.
pub fn prepare_socket(sock: &Path) -> Result<()> {
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the control socket's folder {}", dir.display()))?;
    }
    let Ok(meta) = std::fs::symlink_metadata(sock) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; move it away or set DOM0CTL_SOCKET to another path",
            sock.display()
        );
    }
    if UnixStream::connect(sock).is_ok() {
        bail!(
            "{} is in use: another QEMU listens there. Stop it (`dom0ctl shutdown-host`), or \
             set DOM0CTL_SOCKET to another path for this one",
            sock.display()
        );
    }
    std::fs::remove_file(sock)
        .with_context(|| format!("removing the stale socket {}", sock.display()))
}

/// A QEMU running in the background, COM1 collected line by line; killed
/// when dropped.
#[derive(Debug)]
pub struct Machine {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    started: Instant,
}

impl Machine {
    /// Starts QEMU as `cfg` says.
    pub fn spawn(cfg: &QemuConfig) -> Result<Machine> {
        let mut cmd = cfg.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context("starting qemu-system-x86_64 (scripts/setup installs it)")?;
        let stdout = child.stdout.take().context("qemu stdout")?;
        let mut err = child.stderr.take().context("qemu stderr")?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&lines);
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            while let Ok(n) = r.read_until(b'\n', &mut buf) {
                if n == 0 {
                    break;
                }
                let line = String::from_utf8_lossy(&buf)
                    .replace('\r', "")
                    .trim_end_matches('\n')
                    .to_string();
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                }
                buf.clear();
            }
        });
        let err_sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            if let Ok(mut e) = err_sink.lock() {
                *e = s;
            }
        });
        Ok(Machine {
            child,
            lines,
            stderr,
            status: None,
            started: Instant::now(),
        })
    }

    /// Everything COM1 printed so far.
    pub fn serial(&self) -> String {
        let lines = self.lines.lock().map(|l| l.clone()).unwrap_or_default();
        let mut s = lines.join("\n");
        s.push('\n');
        s
    }

    /// What QEMU wrote to stderr (complete once it exited).
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Time since QEMU started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn has_line(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .is_ok_and(|l| l.iter().any(|x| x.contains(needle)))
    }

    /// QEMU's exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until a COM1 line contains `needle`. Fails if QEMU exits first
    /// or `timeout` passes.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let end = Instant::now() + timeout;
        loop {
            if self.has_line(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_status() {
                // The reader may still hold the last lines.
                std::thread::sleep(Duration::from_millis(100));
                if self.has_line(needle) {
                    return Ok(());
                }
                bail!(
                    "QEMU ended ({st}) before COM1 showed {needle:?}\n--- COM1 ---\n{}--- stderr ---\n{}",
                    self.serial(),
                    self.stderr()
                );
            }
            if Instant::now() >= end {
                bail!(
                    "COM1 did not show {needle:?} within {} s\n--- COM1 ---\n{}",
                    timeout.as_secs(),
                    self.serial()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for QEMU to exit by itself; its status, if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(st) = self.try_status() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// How the hypervisor ended QEMU, if it has.
    pub fn exit(&mut self) -> Option<QemuExit> {
        self.try_status()
            .and_then(|s| s.code())
            .and_then(QemuExit::from_status)
    }

    /// Kills QEMU (if still running) and reaps it.
    pub fn kill(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            self.status = self.child.wait().ok();
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `scripts/run --detach` keeps its files: the COM1 log, QEMU's stderr
/// and the pid file.
pub fn run_dir() -> PathBuf {
    target_dir().join("xlhv-run")
}

/// A QEMU started by [`spawn_detached`].
#[derive(Debug)]
pub struct Detached {
    /// QEMU's process id.
    pub pid: u32,
    /// COM1's log.
    pub com1_log: PathBuf,
    /// The pid file.
    pub pid_file: PathBuf,
}

/// Starts QEMU in its own process group with COM1 going to `com1.log` in
/// `dir` (`scripts/run` uses [`run_dir`]), writes `qemu.pid` there, and returns
/// once COM1 shows `ready`. QEMU keeps running after this process exits. On
/// failure QEMU is stopped and the log's tail is in the error.
pub fn spawn_detached(
    cfg: &QemuConfig,
    dir: &Path,
    ready: &str,
    timeout: Duration,
) -> Result<Detached> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let com1_log = dir.join("com1.log");
    let err_log = dir.join("qemu-stderr.log");
    let pid_file = dir.join("qemu.pid");
    let out =
        File::create(&com1_log).with_context(|| format!("creating {}", com1_log.display()))?;
    let err = File::create(&err_log).with_context(|| format!("creating {}", err_log.display()))?;
    let mut cmd = cfg.command();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .context("starting qemu-system-x86_64 (scripts/setup installs it)")?;
    let pid = child.id();
    std::fs::write(&pid_file, format!("{pid}\n"))
        .with_context(|| format!("writing {}", pid_file.display()))?;
    let end = Instant::now() + timeout;
    let tail = |path: &Path| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    loop {
        let log = std::fs::read_to_string(&com1_log).unwrap_or_default();
        if log.lines().any(|l| l.contains(ready)) {
            return Ok(Detached {
                pid,
                com1_log,
                pid_file,
            });
        }
        if let Some(st) = child.try_wait()? {
            let _ = std::fs::remove_file(&pid_file);
            bail!(
                "QEMU ended ({st}) before COM1 showed {ready:?}. Last lines of {}:\n{}\n{}",
                com1_log.display(),
                tail(&com1_log),
                tail(&err_log)
            );
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&pid_file);
            bail!(
                "COM1 did not show {ready:?} within {} s; QEMU stopped. Last lines of {}:\n{}",
                timeout.as_secs(),
                com1_log.display(),
                tail(&com1_log)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_are_distinct_and_valid() {
        let mut w = BundleWriter::new();
        for img in IMAGES {
            w.add(img.name, b"").unwrap();
        }
        assert!(IMAGES.iter().any(|i| i.name == "hello"));
        assert!(IMAGES.iter().any(|i| i.name == "demo"));
    }

    #[test]
    fn stale_sockets_go_live_ones_stay() {
        let dir = std::env::temp_dir().join(format!("xtask-sock-{}", std::process::id()));
        let sock = dir.join("sub/dom0.sock");
        prepare_socket(&sock).unwrap();
        assert!(sock.parent().unwrap().is_dir(), "the folder is made");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let e = prepare_socket(&sock).unwrap_err().to_string();
        assert!(e.contains("in use"), "{e}");
        drop(listener);
        prepare_socket(&sock).unwrap();
        assert!(!sock.exists(), "a stale socket is removed");
        std::fs::write(&sock, b"data").unwrap();
        let e = prepare_socket(&sock).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
