//! The control-plane benchmark (xen-like-hv only; `scripts/bench` runs it after the
//! A/B rounds, `cargo run --release -p xtask -- bench-ctl` alone): in a `-m 6G` QEMU,
//! how long `dom0ctl create` takes until the new domU's first console line reaches
//! the host, for the 1st, 100th, 500th and 1000th of 1000 idle domUs kept alive at
//! once; what each costs in memory; `dom0ctl list` with 1000 domains; and a CPU hog's
//! throughput alone and beside the 1000. See docs/bench.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::dom0::{LISTENING, Machine, build_dom0ctl, dom0_modules, prepare_socket};
use crate::{IsoSpec, QemuConfig, make_iso, target_dir};

/// Domains alive at once in the timing run.
pub const TIMED_DOMAINS: usize = 1000;
/// Which of them are reported (1-based).
pub const REPORTED: [usize; 4] = [1, 100, 500, 1000];
/// Memory of each idle domU (`hello stay=1`), MiB.
pub const IDLE_MIB: u64 = 2;
/// QEMU's memory for the run.
pub const QEMU_MEM: &str = "6G";
/// Seconds the hog spins (measured), after a second of warm-up.
const HOG_SECS: u64 = 5;

/// What the run measured.
#[derive(Clone, Debug, Default)]
pub struct CtlBench {
    /// (n, ms from `create` to the first console line) for the reported domains.
    pub first_line_ms: Vec<(usize, f64)>,
    /// Free frames of the hypervisor and of dom0 (`dom0ctl info`) before the
    /// timed domUs, and with all of them alive.
    pub frames_before: (u64, u64),
    /// As `frames_before`, with the [`TIMED_DOMAINS`] alive.
    pub frames_alive: (u64, u64),
    /// `dom0ctl list` with the timed domUs alive: median ms of 5, and the rows.
    pub list_ms: f64,
    /// Rows `dom0ctl list` printed then.
    pub list_rows: usize,
    /// The hog's loop rounds per second alone: before the idle domUs and after
    /// they are gone (the better one is the reference: right after boot dom0 is
    /// still busy and QEMU's code cache cold).
    pub hog_alone: (f64, f64),
    /// As `hog_alone`, with the timed domUs alive.
    pub hog_beside: f64,
    /// Free memory (dom0ctl info) before the runs.
    pub free_before: String,
    /// Free memory after destroying every domain.
    pub free_after: String,
    /// `dom0ctl create` of a 32 MiB kernel over the fast link (virtio console):
    /// MiB/s of the whole command (upload, CRC check, build).
    pub upload_mib_s: f64,
    /// The same for the ticker's own ELF (2.3 MB) over COM2.
    pub upload_com2_mib_s: f64,
    /// The bench guest as a domU against dom0's xenstored: (metric, median
    /// cycles, p10, p90) for `xenstore_read_rtt` and `xenstore_txn_commit`.
    pub xenstore: Vec<(String, f64, f64, f64)>,
    /// The TSC rate the guest saw (Hz), to give those in µs.
    pub tsc_hz: Option<u64>,
}

struct Host {
    /// QEMU; killed on drop if `shutdown-host` did not end it.
    _machine: Machine,
    socket: PathBuf,
    dom0ctl: PathBuf,
}

impl Host {
    fn boot(work: &Path, hv: &Path) -> Result<Host> {
        let iso = work.join("ctl.iso");
        make_iso(
            &IsoSpec {
                hypervisor: hv.to_path_buf(),
                cmdline: String::new(),
                modules: dom0_modules()?,
            },
            &iso,
        )?;
        let socket = work.join("ctl.sock");
        prepare_socket(&socket)?;
        let fast = dom0ctl::paths::fast_socket_path(&socket);
        prepare_socket(&fast)?;
        let mut cfg = QemuConfig::new(iso);
        cfg.mem = QEMU_MEM.into();
        cfg.control_socket = Some(socket.clone());
        cfg.fast_socket = Some(fast);
        let mut machine = Machine::spawn(&cfg)?;
        machine.wait_for(LISTENING, Duration::from_secs(120))?;
        Ok(Host {
            _machine: machine,
            socket,
            dom0ctl: build_dom0ctl()?,
        })
    }

    fn ctl(&self, args: &[&str]) -> Result<(bool, String, String)> {
        let out = Command::new(&self.dom0ctl)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .context("running dom0ctl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// `dom0ctl create CFG name=NAME --console`: ms until its first non-empty
    /// output line.
    fn create_until_first_line(&self, cfg: &Path, name: &str) -> Result<f64> {
        let start = Instant::now();
        let mut child = Command::new(&self.dom0ctl)
            .arg("--socket")
            .arg(&self.socket)
            .arg("create")
            .arg(cfg)
            .arg(format!("name={name}"))
            .arg("--console")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running dom0ctl create --console")?;
        let stdout = child.stdout.take().context("dom0ctl stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let got = loop {
            match rx.recv_timeout(Duration::from_secs(60)) {
                // The first line is the domid `create` prints; the next is the guest's.
                Ok(l) if l.trim().is_empty() => {}
                Ok(l) => {
                    seen.push(l);
                    if seen.len() == 2 {
                        break Some(start.elapsed());
                    }
                }
                Err(_) => break None,
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        match got {
            Some(d) => Ok(d.as_secs_f64() * 1000.0),
            None => bail!("{name}: no console line within 60 s (saw {seen:?})"),
        }
    }

    /// MiB/s of `dom0ctl --link LINK create` of `kernel` (then destroyed).
    fn upload(&self, work: &Path, kernel: &[u8], link: &str, name: &str) -> Result<f64> {
        let path = work.join(format!("{name}.elf"));
        std::fs::write(&path, kernel)?;
        let cfg = work.join(format!("{name}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{name}\"\nkernel = \"{}\"\nmemory = 8\ncmdline = \"secs=1\"\n",
                path.display()
            ),
        )?;
        let start = Instant::now();
        let (ok, _, err) = self.ctl(&[
            "--timeout",
            "300",
            "--link",
            link,
            "create",
            &cfg.to_string_lossy(),
        ])?;
        let secs = start.elapsed().as_secs_f64();
        if !ok {
            bail!("upload over {link}: {err}");
        }
        let _ = self.ctl(&["destroy", name])?;
        Ok(kernel.len() as f64 / (1024.0 * 1024.0) / secs)
    }

    /// Creates the bench guest as a domU with `role=xenstore`, waits for its
    /// final line and returns its metrics.
    #[allow(clippy::type_complexity)]
    fn xenstore(&self, work: &Path) -> Result<(Vec<(String, f64, f64, f64)>, Option<u64>)> {
        let guest = crate::build_kernel("pv-bench", "bench")?;
        let cfg = work.join("xs.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"xsbench\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"role=xenstore\"\n\
                 on_poweroff = \"preserve\"\n",
                guest.display()
            ),
        )?;
        let (ok, _, err) = self.ctl(&["--timeout", "120", "create", &cfg.to_string_lossy()])?;
        if !ok {
            bail!("creating the xenstore bench domU: {err}");
        }
        let log = self.console_until("xsbench", crate::bench::DONE, 300)?;
        let _ = self.ctl(&["destroy", "xsbench"])?;
        let report = crate::bench::parse_guest(&log)?;
        let mut rows = Vec::new();
        for (name, m) in report.metrics {
            if let crate::bench::Measured::Value {
                median, p10, p90, ..
            } = m
            {
                rows.push((name, median, p10, p90));
            }
        }
        if rows.len() != 2 {
            bail!("the xenstore bench domU reported {rows:?}:\n{log}");
        }
        Ok((rows, report.tsc_hz))
    }

    /// Domain `name`'s console once it holds `needle` (polled every 0.5 s, at most
    /// `secs`).
    fn console_until(&self, name: &str, needle: &str, secs: u64) -> Result<String> {
        let start = Instant::now();
        loop {
            let (_, out, _) = self.ctl(&["console", name, "--no-follow"])?;
            if out.contains(needle) {
                return Ok(out);
            }
            if start.elapsed() > Duration::from_secs(secs) {
                bail!("{name} did not print {needle:?} in {secs} s:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Runs a `hog` domU (`secs`, a second of warm-up) and returns its loop rounds
    /// per second of wall time.
    fn hog(&self, work: &Path, name: &str) -> Result<f64> {
        let cfg = work.join("hog.toml");
        std::fs::write(
            &cfg,
            format!(
                "image = \"hog\"\nname = \"{name}\"\nmemory = 4\non_poweroff = \"preserve\"\n\
                 cmdline = \"secs={HOG_SECS} warmup=1 name={name}\"\n"
            ),
        )?;
        let (ok, _, err) = self.ctl(&["create", &cfg.to_string_lossy()])?;
        if !ok {
            bail!("creating the hog: {err}");
        }
        let out = self.console_until(name, "hog: PASS", 120)?;
        let _ = self.ctl(&["destroy", name])?;
        let line = out
            .lines()
            .find(|l| l.contains("hog: PASS"))
            .context("no hog line")?;
        let field = |k: &str| -> Result<f64> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("no {k} in {line:?}"))
        };
        Ok(field("spins=")? / (field("wall_ns=")? / 1e9))
    }

    /// Free frames of the hypervisor and of dom0 (`dom0ctl info`).
    fn frames(&self) -> Result<(u64, u64)> {
        let (ok, out, err) = self.ctl(&["info"])?;
        if !ok {
            bail!("dom0ctl info: {err}");
        }
        let get = |key: &str| -> Result<u64> {
            out.lines()
                .find(|l| l.trim_start().starts_with(key))
                .and_then(|l| l.split('(').nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("no {key} frames in dom0ctl info:\n{out}"))
        };
        Ok((get("free_memory")?, get("dom0_free_memory")?))
    }

    fn free(&self) -> Result<String> {
        let (ok, out, err) = self.ctl(&["info"])?;
        if !ok {
            bail!("dom0ctl info: {err}");
        }
        out.lines()
            .find(|l| l.trim_start().starts_with("free_memory"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .context("no free_memory in dom0ctl info")
    }
}

/// Runs the control-plane benchmark on hypervisor `hv`.
pub fn run(hv: &Path) -> Result<CtlBench> {
    let work = target_dir().join("bench").join("ctl");
    std::fs::create_dir_all(&work)?;
    let host = Host::boot(&work, hv)?;
    let mut r = CtlBench {
        free_before: host.free()?,
        ..CtlBench::default()
    };
    r.hog_alone.0 = host.hog(&work, "hog1")?;
    eprintln!("bench-ctl: hog alone: {:.0} rounds/s", r.hog_alone.0);
    r.frames_before = host.frames()?;
    // `hello stay=1` prints its line at once and then blocks with no timer.
    let idle = work.join("idle.toml");
    std::fs::write(
        &idle,
        format!("image = \"hello\"\nname = \"t\"\nmemory = {IDLE_MIB}\ncmdline = \"stay=1\"\n"),
    )?;
    for n in 1..=TIMED_DOMAINS {
        let ms = host.create_until_first_line(&idle, &format!("t{n}"))?;
        if REPORTED.contains(&n) {
            eprintln!("bench-ctl: domain {n}: first console line after {ms:.0} ms");
            r.first_line_ms.push((n, ms));
        }
    }
    r.frames_alive = host.frames()?;
    eprintln!(
        "bench-ctl: free frames (hypervisor, dom0) before {:?}, with {TIMED_DOMAINS} alive {:?}",
        r.frames_before, r.frames_alive
    );
    let mut list = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let (ok, out, err) = host.ctl(&["list"])?;
        list.push(start.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            bail!("dom0ctl list: {err}");
        }
        r.list_rows = out.lines().filter(|l| l.starts_with('t')).count();
    }
    list.sort_by(f64::total_cmp);
    r.list_ms = list[list.len() / 2];
    eprintln!("bench-ctl: list: {:.0} ms, {} rows", r.list_ms, r.list_rows);
    r.hog_beside = host.hog(&work, "hog2")?;
    eprintln!("bench-ctl: hog beside them: {:.0} rounds/s", r.hog_beside);
    for n in 1..=TIMED_DOMAINS {
        let (ok, _, err) = host.ctl(&["destroy", &format!("t{n}")])?;
        if !ok {
            bail!("destroy t{n}: {err}");
        }
    }
    r.hog_alone.1 = host.hog(&work, "hog3")?;
    eprintln!("bench-ctl: hog alone again: {:.0} rounds/s", r.hog_alone.1);
    let ticker = std::fs::read(crate::build_test_guest("ticker")?)?;
    r.upload_com2_mib_s = host.upload(&work, &ticker, "com2", "up-com2")?;
    let mut big = ticker;
    big.resize(32 << 20, 0);
    r.upload_mib_s = host.upload(&work, &big, "fast", "up-fast")?;
    (r.xenstore, r.tsc_hz) = host.xenstore(&work)?;
    r.free_after = host.free()?;
    let _ = host.ctl(&["shutdown-host"]);
    drop(host);
    Ok(r)
}

/// The Markdown section for `bench/control-plane.md`.
pub fn markdown(r: &CtlBench) -> String {
    let mut s = String::from(
        "# Control plane (xen-like-hv only)\n\nMeasured by `scripts/bench` on one QEMU \
         (TCG, `-m 6G`) booting dom0's toolstack; `dom0ctl` drives it over the fast \
         link (a virtio console) unless a row says COM2.\n\n\
         | what | result |\n|---|---|\n",
    );
    for (n, ms) in &r.first_line_ms {
        s.push_str(&format!(
            "| `dom0ctl create` to the first console line, domain {n} of {TIMED_DOMAINS} idle domUs alive | {ms:.0} ms |\n"
        ));
    }
    let first = r.first_line_ms.first().map_or(0.0, |f| f.1);
    let last = r.first_line_ms.last().map_or(0.0, |l| l.1);
    if first > 0.0 {
        s.push_str(&format!(
            "| the {TIMED_DOMAINS}th against the 1st (target: at most 2) | {:.2} |\n",
            last / first
        ));
    }
    let n = TIMED_DOMAINS as f64;
    let kib = |frames: u64| frames as f64 * 4.0 / n;
    let hv = kib(r.frames_before.0.saturating_sub(r.frames_alive.0));
    let dom0 = kib(r.frames_before.1.saturating_sub(r.frames_alive.1));
    let guest = (IDLE_MIB * 1024) as f64;
    s.push_str(&format!(
        "| memory each idle domU ({IDLE_MIB} MiB) costs: the hypervisor's free memory / dom0's | {hv:.0} KiB / {dom0:.0} KiB |\n\
         | of which outside the guest's own memory (target: at most 256 KiB) | {:.0} KiB |\n\
         | `dom0ctl list` with {} domUs listed | {:.0} ms (median of 5) |\n",
        hv - guest + dom0,
        r.list_rows,
        r.list_ms
    ));
    let alone = r.hog_alone.0.max(r.hog_alone.1);
    if alone > 0.0 {
        s.push_str(&format!(
            "| a CPU hog's loop rounds per second beside {TIMED_DOMAINS} idle domUs / alone, the better of before and after them (target: at least 0.95) | {:.3} ({:.0} / {:.0}; before {:.0}, after {:.0}) |\n",
            r.hog_beside / alone,
            r.hog_beside,
            alone,
            r.hog_alone.0,
            r.hog_alone.1
        ));
    }
    s.push_str(&format!(
        "| free memory before / after destroying them all (the domain table keeps what it grew by) | {} / {} |\n",
        r.free_before, r.free_after
    ));
    s.push_str(&format!(
        "| `upload_mib_s`: `dom0ctl create` of a 32 MiB kernel over the fast link | {:.1} MiB/s |\n\
         | the same for a 2.3 MB kernel over COM2 | {:.2} MiB/s |\n",
        r.upload_mib_s, r.upload_com2_mib_s
    ));
    for (name, median, p10, p90) in &r.xenstore {
        let us = r
            .tsc_hz
            .filter(|hz| *hz > 0)
            .map(|hz| format!(" = {:.1} µs", median / hz as f64 * 1e6))
            .unwrap_or_default();
        s.push_str(&format!(
            "| `{name}`: the bench guest as a domU against dom0's xenstored | {median:.0} cycles{us} (p10 {p10:.0}, p90 {p90:.0}) |\n"
        ));
    }
    s
}

/// Replaces the control-plane section of `bench/control-plane.md` (everything before
/// its first `## ` heading) with `md`, keeping the sections after it.
pub fn replace_section(root: &Path, md: &str) -> Result<()> {
    let path = root.join("bench").join("control-plane.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let rest = old.find("\n## ").map_or("", |i| &old[i + 1..]);
    let mut new = md.trim_end().to_string();
    new.push_str("\n\n");
    new.push_str(rest);
    std::fs::write(&path, new).with_context(|| format!("writing {}", path.display()))
}
