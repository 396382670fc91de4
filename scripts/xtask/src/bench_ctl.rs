//! The control-plane benchmark (xen-like-hv only; `scripts/bench` runs it after the
//! A/B rounds): how long `dom0ctl create` takes until the new domU's first console
//! line reaches the host, for the 1st, 10th and 50th of 50 domains kept at once; and
//! how many 4 MiB domUs fit in a 1 GiB machine. See docs/bench.md.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::dom0::{LISTENING, Machine, build_dom0ctl, dom0_modules, prepare_socket};
use crate::{IsoSpec, QemuConfig, make_iso, target_dir};

/// Domains alive at once in the timing run.
pub const TIMED_DOMAINS: usize = 50;
/// Which of them are reported (1-based).
pub const REPORTED: [usize; 3] = [1, 10, 50];

/// What the run measured.
#[derive(Clone, Debug, Default)]
pub struct CtlBench {
    /// (n, ms from `create` to the first console line) for the reported domains.
    pub first_line_ms: Vec<(usize, f64)>,
    /// 4 MiB domUs that were created before the first refusal.
    pub max_4mib_domus: usize,
    /// The refusal that ended the count.
    pub stopped_by: String,
    /// Free memory (dom0ctl info) before and after the runs.
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
        cfg.mem = "1G".into();
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
        let start = Instant::now();
        let log = loop {
            let (_, out, _) = self.ctl(&["console", "xsbench", "--no-follow"])?;
            if out.contains(crate::bench::DONE) {
                break out;
            }
            if start.elapsed() > Duration::from_secs(300) {
                bail!("the xenstore bench domU did not finish in 300 s:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(500));
        };
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
    // `hello` prints its line at once and, preserved, stays (with its memory).
    let ticker = work.join("hello.toml");
    std::fs::write(
        &ticker,
        "image = \"hello\"\nname = \"t\"\nmemory = 8\non_poweroff = \"preserve\"\n",
    )?;
    for n in 1..=TIMED_DOMAINS {
        let ms = host.create_until_first_line(&ticker, &format!("t{n}"))?;
        if REPORTED.contains(&n) {
            r.first_line_ms.push((n, ms));
        }
    }
    for n in 1..=TIMED_DOMAINS {
        let (ok, _, err) = host.ctl(&["destroy", &format!("t{n}")])?;
        if !ok {
            bail!("destroy t{n}: {err}");
        }
    }
    let small = work.join("small.toml");
    std::fs::write(
        &small,
        "image = \"ticker\"\nname = \"s\"\nmemory = 4\ncmdline = \"secs=600 period_ms=1000\"\n",
    )?;
    let small_s = small.to_string_lossy().into_owned();
    loop {
        let name = format!("name=s{}", r.max_4mib_domus + 1);
        let (ok, _, err) = host.ctl(&["create", &small_s, &name])?;
        if !ok {
            r.stopped_by = err.trim().to_string();
            break;
        }
        r.max_4mib_domus += 1;
        if r.max_4mib_domus > 1000 {
            break;
        }
    }
    for n in 1..=r.max_4mib_domus {
        let _ = host.ctl(&["destroy", &format!("s{n}")])?;
    }
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
         (TCG, `-m 1G`) booting dom0's toolstack; `dom0ctl` drives it over the fast \
         link (a virtio console) unless a row says COM2.\n\n\
         | what | result |\n|---|---|\n",
    );
    for (n, ms) in &r.first_line_ms {
        s.push_str(&format!(
            "| `dom0ctl create` to the first console line, domain {n} of {TIMED_DOMAINS} alive | {ms:.0} ms |\n"
        ));
    }
    s.push_str(&format!(
        "| 4 MiB domUs alive at once in 1 GiB | {} (then: {}) |\n| free memory before / after destroying them all | {} / {} |\n",
        r.max_4mib_domus, r.stopped_by, r.free_before, r.free_after
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
