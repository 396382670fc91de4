//! Real Xen 4.17 as the reference: Debian's `xen-hypervisor-4.17-amd64`, fetched with
//! `apt-get download` into a cache folder and unpacked there with `dpkg-deb -x` (never
//! installed), booted through the same GRUB multiboot2 ISO and QEMU settings as
//! xen-like-hv.
//!
//! The cache is `$XLHV_XEN_CACHE`, else `$XDG_CACHE_HOME/xen-like-hv`, else
//! `~/.cache/xen-like-hv`. Xen keeps QEMU running after dom0 stops (it prints "Hardware
//! Dom0 halted" and idles), so callers stop QEMU at the line [`XenEnd::of_line`]
//! recognises.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use crate::{IsoSpec, Module, QemuConfig, RunOutput};

/// The Debian package that holds the hypervisor image.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";

/// Xen's command line for a dom0 with `dom0_mem` (Xen's syntax): COM1 console, no reboot
/// at the end (so the last lines stay readable), then `extra`.
pub fn xen_cmdline(dom0_mem: &str, extra: &str) -> String {
    let mut c = format!("console=com1 com1=115200,8n1 dom0_mem={dom0_mem} noreboot");
    if !extra.trim().is_empty() {
        c.push(' ');
        c.push_str(extra.trim());
    }
    c
}

/// The unpacked hypervisor image.
#[derive(Clone, Debug)]
pub struct XenImage {
    /// `boot/xen-4.17-amd64.gz` inside the cache (GRUB decompresses it).
    pub path: PathBuf,
    /// The package file it came from (`xen-hypervisor-4.17-amd64_<version>_amd64.deb`).
    pub package: String,
}

impl XenImage {
    /// The package version (from the file name), e.g. `4.17.7+13-g2445b30a44-0+deb12u1`.
    pub fn version(&self) -> &str {
        self.package.split('_').nth(1).unwrap_or(&self.package)
    }
}

/// The folder that holds the downloaded package and its unpacked files.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XLHV_XEN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("xen-like-hv");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/xen-like-hv");
    }
    crate::target_dir().join("xen-cache")
}

fn find_image(dir: &Path) -> Option<XenImage> {
    let package = std::fs::read_to_string(dir.join("package")).ok()?;
    let boot = dir.join("root/boot");
    let mut images: Vec<PathBuf> = std::fs::read_dir(&boot)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("xen-4.17") && n.ends_with(".gz"))
        })
        .collect();
    images.sort();
    Some(XenImage {
        path: images.pop()?,
        package: package.trim().to_string(),
    })
}

/// Runs `cmd`, returning its combined output if it fails.
fn run_quiet(cmd: &mut Command) -> std::result::Result<(), String> {
    match cmd.output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn fetch_into(dir: &Path) -> Result<()> {
    download_debs(dir, &[XEN_PACKAGE])?;
    let deb = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("apt-get download left no .deb")?;
    unpack_deb(&deb, &dir.join("root"))?;
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(dir.join("package"), format!("{name}\n"))?;
    Ok(())
}

/// `apt-get download` of `packages` into `dir` (created), after one `apt-get update`
/// if the first try fails (a fresh machine has no package lists). Never installs.
pub fn download_debs(dir: &Path, packages: &[&str]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let download = || {
        run_quiet(
            Command::new("apt-get")
                .args(["download", "-q"])
                .args(packages)
                .current_dir(dir),
        )
    };
    if download().is_err() {
        // The package lists may be missing (fresh machine, container): update once.
        let mut update = if is_root() {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("-n").arg("apt-get");
            c
        };
        let _ = run_quiet(update.args(["update", "-q"]));
        if let Err(e) = download() {
            bail!(
                "`apt-get download {}` failed (it needs Debian 12's package lists \
                 and the network to a Debian mirror):\n{e}",
                packages.join(" ")
            );
        }
    }
    Ok(())
}

/// `dpkg-deb -x deb into`.
pub fn unpack_deb(deb: &Path, into: &Path) -> Result<()> {
    run_quiet(Command::new("dpkg-deb").arg("-x").arg(deb).arg(into))
        .map_err(|e| anyhow::anyhow!("dpkg-deb -x {} failed: {e}", deb.display()))
}

fn fetch() -> Result<XenImage> {
    let cache = cache_dir();
    let dir = cache.join("xen-4.17");
    if let Some(img) = find_image(&dir) {
        return Ok(img);
    }
    // Fetch into a private folder and rename it into place, so concurrent fetches
    // (parallel tests, two processes) never see a half-unpacked tree.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = cache.join(format!("xen-4.17.tmp.{}.{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let fetched = fetch_into(&tmp);
    if let Err(e) = fetched {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Someone else won the race (or a stale, broken folder is in the way).
        if find_image(&dir).is_none() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)
                .with_context(|| format!("moving {} into place", dir.display()))?;
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    find_image(&dir).with_context(|| {
        format!(
            "{XEN_PACKAGE} unpacked into {} but holds no boot/xen-4.17*.gz",
            dir.display()
        )
    })
}

/// Real Xen's hypervisor image, downloaded and unpacked on first use (once per
/// process).
pub fn xen_image() -> Result<XenImage> {
    static IMAGE: OnceLock<std::result::Result<XenImage, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| fetch().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// How a Xen run ended, from Xen's own console line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenEnd {
    /// dom0 powered off: "Hardware Dom0 halted: halting machine".
    Halted,
    /// dom0 asked for a reboot: "Hardware Dom0 shutdown: rebooting machine".
    Rebooting,
    /// dom0 crashed: "Hardware Dom0 crashed".
    Crashed,
    /// Xen itself panicked ("Panic on CPU"; the line that ends the report).
    Panic,
}

impl XenEnd {
    /// The end a console line announces, if any. Stop reading after it.
    pub fn of_line(line: &str) -> Option<XenEnd> {
        if line.contains("Hardware Dom0 halted") {
            Some(XenEnd::Halted)
        } else if line.contains("Hardware Dom0 shutdown") {
            Some(XenEnd::Rebooting)
        } else if line.contains("Hardware Dom0 crashed") {
            Some(XenEnd::Crashed)
        } else if line.contains("Manual reset required") || line.contains("Reboot in five seconds")
        {
            Some(XenEnd::Panic)
        } else {
            None
        }
    }
}

/// One boot of a guest as dom0 on real Xen.
#[derive(Clone, Debug)]
pub struct XenBoot {
    /// The guest kernel.
    pub kernel: PathBuf,
    /// Its module string (dom0's whole command line on Xen: first word included).
    pub module_cmdline: String,
    /// Xen's command line.
    pub cmdline: String,
    /// QEMU memory.
    pub mem: String,
    /// Give up after this long.
    pub deadline: Duration,
    /// Modules after the guest (dom0's initrd first, as Xen takes it).
    pub extra: Vec<Module>,
    /// QEMU CPUs.
    pub smp: u32,
}

impl XenBoot {
    /// A boot of `kernel` with the fidelity tests' settings: 64 MiB dom0, Xen's full
    /// log (`loglvl=all guest_loglvl=all`), 512 MiB, 180 s (a guest that takes 18 s
    /// on a quiet machine took over 60 s on a loaded one).
    pub fn new(kernel: &Path) -> Self {
        XenBoot {
            kernel: kernel.to_path_buf(),
            module_cmdline: "dom0".into(),
            cmdline: xen_cmdline("64M", "loglvl=all guest_loglvl=all"),
            mem: "512M".into(),
            deadline: Duration::from_secs(180),
            extra: Vec::new(),
            smp: 1,
        }
    }

    /// Makes the ISO at `iso` (Xen as the multiboot2 kernel, the guest as module2).
    pub fn make_iso(&self, xen: &XenImage, iso: &Path) -> Result<()> {
        crate::make_iso(
            &IsoSpec {
                hypervisor: xen.path.clone(),
                cmdline: self.cmdline.clone(),
                modules: std::iter::once(Module {
                    path: self.kernel.clone(),
                    cmdline: self.module_cmdline.clone(),
                })
                .chain(self.extra.iter().cloned())
                .collect(),
            },
            iso,
        )
    }

    /// Fetches Xen if needed, makes the ISO at `iso`, boots it headless under TCG
    /// (`-cpu max`, `smp` CPUs) and stops QEMU at Xen's end-of-dom0 line or the
    /// deadline.
    pub fn run(&self, iso: &Path) -> Result<XenRun> {
        let xen = xen_image()?;
        self.make_iso(&xen, iso)?;
        let mut cfg = QemuConfig::new(iso.to_path_buf());
        cfg.mem = self.mem.clone();
        cfg.smp = self.smp;
        let out = crate::run_qemu(&cfg, self.deadline, |l| XenEnd::of_line(l).is_some())?;
        let end = out.serial.lines().find_map(XenEnd::of_line);
        Ok(XenRun { out, end, xen })
    }
}

/// What a Xen boot printed and how dom0 ended.
#[derive(Debug)]
pub struct XenRun {
    /// QEMU's output (COM1 carries Xen's log and dom0's console).
    pub out: RunOutput,
    /// Xen's verdict, if it printed one before the deadline.
    pub end: Option<XenEnd>,
    /// The image that ran.
    pub xen: XenImage,
}

impl XenRun {
    /// dom0's own lines: everything Xen did not print (Xen's lines start with `(XEN)`).
    pub fn guest_lines(&self) -> impl Iterator<Item = &str> {
        self.out
            .serial
            .lines()
            .filter(|l| !l.starts_with("(XEN)") && !l.trim().is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_recognised() {
        assert_eq!(
            XenEnd::of_line("(XEN) Hardware Dom0 halted: halting machine"),
            Some(XenEnd::Halted)
        );
        assert_eq!(
            XenEnd::of_line("(XEN) Hardware Dom0 crashed: 'noreboot' set - not rebooting."),
            Some(XenEnd::Crashed)
        );
        assert_eq!(
            XenEnd::of_line("(XEN) Hardware Dom0 shutdown: rebooting machine"),
            Some(XenEnd::Rebooting)
        );
        assert_eq!(
            XenEnd::of_line("(XEN) Manual reset required ('noreboot' specified)"),
            Some(XenEnd::Panic)
        );
        assert_eq!(
            XenEnd::of_line("(XEN) Domain 0 (vcpu#0) crashed on cpu#0:"),
            None
        );
    }

    #[test]
    fn cmdline_and_version() {
        assert_eq!(
            xen_cmdline("64M", ""),
            "console=com1 com1=115200,8n1 dom0_mem=64M noreboot"
        );
        assert!(xen_cmdline("64M", " loglvl=all ").ends_with("noreboot loglvl=all"));
        let img = XenImage {
            path: PathBuf::from("x"),
            package: "xen-hypervisor-4.17-amd64_4.17.7+13-g2445b30a44-0+deb12u1_amd64.deb".into(),
        };
        assert_eq!(img.version(), "4.17.7+13-g2445b30a44-0+deb12u1");
    }
}
