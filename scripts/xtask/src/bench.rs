//! `scripts/bench`: the benchmark guest (`pv-guest-kernel/bench`) on xen-like-hv and on
//! real Xen 4.17 under identical QEMU settings, interleaved A/B/A/B, with a report
//! (`bench/results.json`, `bench/results.md`, `bench/ratios.svg`) that is refused when
//! the measurements show the machine was too noisy. Method and limits: `docs/bench.md`.

use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bench_report::{self, CONTROLS, Report};
use crate::xen::{self, XenEnd};
use crate::{Accel, IsoSpec, Module, QemuConfig, run_timed};
use xlhv_core::exit::QemuExit;

/// Tag of the guest's result lines (`pv-bench`'s `stats::RESULT_TAG`).
pub const RESULT_TAG: &str = "bench-result";
/// Tag of the guest's information lines.
pub const INFO_TAG: &str = "bench-info";
/// The guest's first line.
pub const BANNER: &str = "bench: pv-bench";
/// The guest's last line.
pub const DONE: &str = "bench: done:";

/// Options of `xtask bench`.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// One round (one boot on each hypervisor); the spread across rounds is not judged.
    #[arg(long)]
    pub quick: bool,
    /// A/B rounds (xen-like-hv, then Xen); at least 5.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Where results.json, results.md and ratios.svg go, raw logs in OUT/raw/ (default:
    /// `bench`; with --quick, the git-ignored `bench/raw/quick`, so a smoke run never
    /// replaces the published results).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// QEMU accelerator (both hypervisors).
    #[arg(long, value_enum, default_value_t = Accel::Tcg)]
    pub accel: Accel,
    /// QEMU CPU model (both hypervisors).
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// QEMU memory (both hypervisors).
    #[arg(long, default_value = "512M")]
    pub mem: String,
    /// QEMU CPUs (both hypervisors).
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// dom0's memory (both hypervisors' `dom0_mem=`).
    #[arg(long, default_value = "64M")]
    pub dom0_mem: String,
    /// Largest accepted spread of a metric's per-round medians, (max - min) / median.
    #[arg(long, default_value_t = 0.20)]
    pub max_spread: f64,
    /// Largest accepted difference of the guest-only control loop between the two
    /// hypervisors, and between the start and the end of one run (0.10 = 10%).
    #[arg(long, default_value_t = 0.10)]
    pub max_control_skew: f64,
    /// Boot this xen-like-hv ELF instead of building the workspace's.
    #[arg(long, value_name = "PATH")]
    pub hypervisor: Option<PathBuf>,
    /// Boot this Xen image (xen.gz) instead of Debian's xen-hypervisor-4.17-amd64.
    #[arg(long, value_name = "PATH")]
    pub xen: Option<PathBuf>,
    /// More options for Xen's command line (the report records them).
    #[arg(long, default_value = "")]
    pub xen_extra: String,
    /// Seconds before one boot is abandoned.
    #[arg(long, default_value_t = 180)]
    pub timeout: u64,
    /// Skip the control-plane benchmark (dom0ctl create timings, domUs per GiB) and
    /// the block benchmark that runs with it.
    #[arg(long)]
    pub skip_control_plane: bool,
    /// Exit with status 4 when a ratio ours/Xen got more than 10% worse than in the
    /// last published run (`bench/history/`), after writing the report.
    #[arg(long)]
    pub check: bool,
}

impl BenchArgs {
    /// The output folder, resolved against the workspace.
    pub fn out_dir(&self) -> PathBuf {
        let out = self.out.clone().unwrap_or_else(|| {
            PathBuf::from(if self.quick {
                "bench/raw/quick"
            } else {
                "bench"
            })
        });
        if out.is_relative() {
            crate::workspace_root().join(out)
        } else {
            out
        }
    }
}

/// The two hypervisors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// xen-like-hv (A).
    Ours,
    /// Real Xen 4.17 (B).
    Xen,
}

impl Side {
    /// Short name (file names, JSON keys).
    pub fn key(self) -> &'static str {
        match self {
            Side::Ours => "xen_like_hv",
            Side::Xen => "xen",
        }
    }

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Side::Ours => "xen-like-hv",
            Side::Xen => "Xen 4.17",
        }
    }
}

/// One metric line of one run.
#[derive(Clone, Debug, PartialEq)]
pub enum Measured {
    /// Measured: samples, median, p10, p90 (per operation) and unit.
    Value {
        /// Samples.
        iters: u64,
        /// Median.
        median: f64,
        /// 10th percentile.
        p10: f64,
        /// 90th percentile.
        p90: f64,
        /// Unit (`cycles`, `ms`).
        unit: String,
    },
    /// The hypervisor refused a hypercall the metric needs.
    Unsupported {
        /// Which hypercall.
        hypercall: String,
        /// The error.
        error: String,
    },
}

impl Measured {
    /// The median, if measured.
    pub fn median(&self) -> Option<f64> {
        match self {
            Measured::Value { median, .. } => Some(*median),
            Measured::Unsupported { .. } => None,
        }
    }
}

/// What the guest printed in one run.
#[derive(Clone, Debug, Default)]
pub struct GuestReport {
    /// Metrics in the order printed.
    pub metrics: Vec<(String, Measured)>,
    /// TSC frequency from vcpu_time_info, if the hypervisor publishes one.
    pub tsc_hz: Option<u64>,
    /// The banner was seen.
    pub banner: bool,
    /// The final line was seen.
    pub done: bool,
}

fn fields(rest: &str) -> BTreeMap<&str, &str> {
    rest.split_whitespace()
        .map(|w| w.split_once('=').unwrap_or((w, "")))
        .collect()
}

/// Parses one guest line (the hypervisor's prefix, such as `(d0) `, is skipped).
/// Returns the metric it reports, if it is a result line.
pub fn parse_result(line: &str) -> Option<Result<(String, Measured), String>> {
    let at = line.find(RESULT_TAG)?;
    let f = fields(&line[at + RESULT_TAG.len()..]);
    let Some(name) = f.get("metric").filter(|n| !n.is_empty()) else {
        return Some(Err(format!("result line without a metric: {line:?}")));
    };
    if f.contains_key("unsupported") {
        return Some(Ok((
            name.to_string(),
            Measured::Unsupported {
                hypercall: f.get("hypercall").unwrap_or(&"?").to_string(),
                error: f.get("error").unwrap_or(&"?").to_string(),
            },
        )));
    }
    let num = |k: &str| f.get(k).and_then(|v| v.parse::<f64>().ok());
    match (
        f.get("iters").and_then(|v| v.parse::<u64>().ok()),
        num("median"),
        num("p10"),
        num("p90"),
        f.get("unit"),
    ) {
        (Some(iters), Some(median), Some(p10), Some(p90), Some(unit)) => Some(Ok((
            name.to_string(),
            Measured::Value {
                iters,
                median,
                p10,
                p90,
                unit: unit.to_string(),
            },
        ))),
        _ => Some(Err(format!("malformed result line: {line:?}"))),
    }
}

/// Parses everything the guest printed.
pub fn parse_guest(serial: &str) -> Result<GuestReport> {
    let mut r = GuestReport::default();
    for line in serial.lines() {
        if line.contains(BANNER) {
            r.banner = true;
        }
        if line.contains(DONE) {
            r.done = true;
        }
        if let Some(at) = line.find(INFO_TAG) {
            let f = fields(&line[at + INFO_TAG.len()..]);
            r.tsc_hz = f.get("tsc_hz").and_then(|v| v.parse().ok());
        }
        if let Some(res) = parse_result(line) {
            let (name, m) = res.map_err(anyhow::Error::msg)?;
            r.metrics.push((name, m));
        }
    }
    Ok(r)
}

/// One boot of the bench guest on one hypervisor, parsed.
#[derive(Clone, Debug)]
pub struct Run {
    /// Which hypervisor.
    pub side: Side,
    /// Round number (0-based).
    pub round: u32,
    /// The guest's lines, plus the boot-time metrics.
    pub report: GuestReport,
    /// Wall time of the run (s).
    pub wall_s: f64,
}

impl Run {
    /// The run's median of `metric`, if it measured it.
    pub fn median(&self, metric: &str) -> Option<f64> {
        self.report
            .metrics
            .iter()
            .find(|(m, _)| m == metric)
            .and_then(|(_, m)| m.median())
    }
}

/// Boot-time metric: QEMU start to dom0's first console line.
pub const BOOT_METRIC: &str = "boot_to_dom0";
/// Boot-time metric: the hypervisor's first console line to dom0's first line.
pub const HV_BOOT_METRIC: &str = "hv_log_to_dom0";

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Extra boots per hypervisor and round that only time the boot (the guest's
/// `boot-only` mode), so each round's boot time is a median of `1 + BOOT_SAMPLES`.
pub const BOOT_SAMPLES: usize = 2;

/// A boot that ended cleanly: COM1, and the two boot times (ms).
struct Booted {
    serial: String,
    boot_ms: f64,
    hv_boot_ms: f64,
    wall_s: f64,
}

fn boot_checked(side: Side, cfg: &QemuConfig, args: &BenchArgs, label: &str) -> Result<Booted> {
    let deadline = Duration::from_secs(args.timeout);
    let r = match side {
        Side::Ours => run_timed(cfg, deadline, |_| false)?,
        Side::Xen => run_timed(cfg, deadline, |l| XenEnd::of_line(l).is_some())?,
    };
    let serial = r.serial();
    let raw = args.out_dir().join("raw");
    std::fs::create_dir_all(&raw).ok();
    let log = raw.join(format!("{label}-{}.log", side.key()));
    std::fs::write(&log, &serial).ok();
    let fail = |why: &str| -> anyhow::Error {
        anyhow::anyhow!(
            "{} ({label}): {why} (log: {})\n--- last lines ---\n{}\n--- QEMU stderr ---\n{}",
            side.name(),
            log.display(),
            tail(&serial, 25),
            r.stderr.trim()
        )
    };
    if r.timed_out {
        return Err(fail(&format!("no end within {} s", args.timeout)));
    }
    match side {
        Side::Ours => {
            let exit = r.status.and_then(QemuExit::from_status);
            if exit != Some(QemuExit::Poweroff) {
                return Err(fail(&format!(
                    "the hypervisor did not power off cleanly (QEMU status {:?}, {exit:?})",
                    r.status
                )));
            }
        }
        Side::Xen => {
            let end = r.lines.iter().find_map(|(_, l)| XenEnd::of_line(l));
            if end != Some(XenEnd::Halted) {
                return Err(fail(&format!("Xen did not report dom0 halted ({end:?})")));
            }
        }
    }
    let (Some(dom0), Some(_)) = (r.first(BANNER), r.first(DONE)) else {
        return Err(fail("the guest's banner or final line is missing"));
    };
    let hv = r.lines.first().map_or(dom0, |(t, _)| *t);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(Booted {
        serial,
        boot_ms: ms(dom0),
        hv_boot_ms: ms(dom0.saturating_sub(hv)),
        wall_s: r.wall.as_secs_f64(),
    })
}

fn boot_metric(samples: &[f64]) -> Measured {
    let min = samples.iter().copied().fold(f64::MAX, f64::min);
    let max = samples.iter().copied().fold(f64::MIN, f64::max);
    Measured::Value {
        iters: samples.len() as u64,
        median: bench_report::median(samples).unwrap_or(0.0),
        p10: min,
        p90: max,
        unit: "ms".into(),
    }
}

/// The line that ends the domU boot: ping (domain 1) is done.
const DOMUS_DONE: &str = "(d1) bench: done:";
/// Metrics the domU boot must report.
pub const DOMU_METRICS: [&str; 2] = ["domu_evtchn_rtt", "domu_switch"];

/// The domU boot (xen-like-hv only): dom0 idles beside the `ping`/`pong` pair; QEMU
/// is stopped once ping is done. Returns its metrics and wall time.
fn domus_boot(cfg: &QemuConfig, args: &BenchArgs, label: &str) -> Result<(GuestReport, f64)> {
    let r = run_timed(cfg, Duration::from_secs(args.timeout), |l| {
        l.contains(DOMUS_DONE)
    })?;
    let serial = r.serial();
    let raw = args.out_dir().join("raw");
    std::fs::create_dir_all(&raw).ok();
    let log = raw.join(format!("{label}-domus.log"));
    std::fs::write(&log, &serial).ok();
    let report = parse_guest(&serial)?;
    let missing: Vec<&str> = DOMU_METRICS
        .iter()
        .copied()
        .filter(|m| !report.metrics.iter().any(|(n, _)| n == m))
        .collect();
    if r.timed_out || !r.stopped || !missing.is_empty() {
        bail!(
            "{} ({label}, domUs): {} (log: {})\n--- last lines ---\n{}",
            Side::Ours.name(),
            if r.timed_out {
                format!("ping was not done within {} s", args.timeout)
            } else {
                format!("missing {}", missing.join(", "))
            },
            log.display(),
            tail(&serial, 25)
        );
    }
    Ok((report, r.wall.as_secs_f64()))
}

/// CPUs of the scaling boot (`-smp`), and what both hypervisors' command lines get for
/// it: a dom0 with that many vCPUs.
pub const SCALING_CPUS: u32 = 2;
/// See [`SCALING_CPUS`].
pub const SCALING_CMDLINE: &str = "dom0_max_vcpus=2";
/// Metrics the scaling boot must report (the bench guest's `scaling` word).
pub const SCALING_METRICS: [&str; 5] = [
    "scale_null_hypercall_1vcpu",
    "scale_null_hypercall_2vcpus",
    "scale_mmu_update_b64_1vcpu",
    "scale_mmu_update_b64_2vcpus",
    "cross_cpu_evtchn_rtt",
];

/// The boots of one round on one hypervisor.
struct RoundConfigs<'a> {
    full: &'a QemuConfig,
    boot_only: &'a QemuConfig,
    /// The two-vCPU boot that measures [`SCALING_METRICS`].
    scaling: &'a QemuConfig,
    /// The domU boot (xen-like-hv only).
    domus: Option<&'a QemuConfig>,
}

/// One round on one hypervisor: the full benchmark boot, the scaling boot, the domU
/// boot (xen-like-hv only), then the boot-only boots.
fn run_round(side: Side, round: u32, cfgs: RoundConfigs<'_>, args: &BenchArgs) -> Result<Run> {
    let label = format!("round{}", round + 1);
    let main = boot_checked(side, cfgs.full, args, &label)?;
    let mut report = parse_guest(&main.serial)
        .with_context(|| format!("{} round {}", side.name(), round + 1))?;
    let scaling = boot_checked(side, cfgs.scaling, args, &format!("{label}-scaling"))?;
    let s = parse_guest(&scaling.serial)
        .with_context(|| format!("{} round {} (scaling)", side.name(), round + 1))?;
    report.metrics.extend(
        s.metrics
            .into_iter()
            .filter(|(n, _)| SCALING_METRICS.contains(&n.as_str())),
    );
    let mut extra_wall = scaling.wall_s;
    if let Some(cfg) = cfgs.domus {
        let (d, wall) = domus_boot(cfg, args, &label)?;
        report.metrics.extend(d.metrics);
        extra_wall += wall;
    }
    let (mut boot, mut hv_boot) = (vec![main.boot_ms], vec![main.hv_boot_ms]);
    let mut wall_s = main.wall_s + extra_wall;
    for k in 0..BOOT_SAMPLES {
        let b = boot_checked(
            side,
            cfgs.boot_only,
            args,
            &format!("round{}-boot{}", round + 1, k + 1),
        )?;
        boot.push(b.boot_ms);
        hv_boot.push(b.hv_boot_ms);
        wall_s += b.wall_s;
    }
    report
        .metrics
        .push((BOOT_METRIC.to_string(), boot_metric(&boot)));
    report
        .metrics
        .push((HV_BOOT_METRIC.to_string(), boot_metric(&hv_boot)));
    Ok(Run {
        side,
        round,
        report,
        wall_s,
    })
}

/// Host facts for the report.
#[derive(Clone, Debug, Default)]
pub struct Conditions {
    /// UTC time the run started.
    pub date: String,
    /// Host CPU model.
    pub host_cpu: String,
    /// Host CPUs online.
    pub host_cpus: usize,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu: String,
    /// Accelerator, CPU model, memory, CPUs.
    pub accel: String,
    /// QEMU `-cpu`.
    pub cpu: String,
    /// QEMU `-m`.
    pub mem: String,
    /// QEMU `-smp`.
    pub smp: u32,
    /// xen-like-hv's command line.
    pub ours_cmdline: String,
    /// Xen's command line.
    pub xen_cmdline: String,
    /// The Xen package (or image path).
    pub xen_package: String,
    /// The workspace's git commit (`-dirty` with local changes).
    pub commit: String,
    /// Rounds run.
    pub rounds: u32,
    /// `--quick`.
    pub quick: bool,
    /// Rounds run and set aside because the host's speed moved during them (why).
    pub discarded: Vec<String>,
}

fn output_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .current_dir(crate::workspace_root())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn conditions(
    args: &BenchArgs,
    ours_cmdline: &str,
    xen_cmdline: &str,
    xen_pkg: &str,
) -> Conditions {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let host_cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut commit = output_of("git", &["rev-parse", "--short=12", "HEAD"]);
    if !output_of("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty() {
        commit.push_str("-dirty");
    }
    Conditions {
        date: output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        host_cpu,
        host_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        qemu: output_of("qemu-system-x86_64", &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        accel: format!("{:?}", args.accel).to_lowercase(),
        cpu: args.cpu.clone(),
        mem: args.mem.clone(),
        smp: args.smp,
        ours_cmdline: ours_cmdline.into(),
        xen_cmdline: xen_cmdline.into(),
        xen_package: xen_pkg.into(),
        commit,
        rounds: if args.quick { 1 } else { args.rounds },
        quick: args.quick,
        discarded: Vec::new(),
    }
}

/// Rounds at most run per round wanted, when the host's speed keeps moving.
pub const ATTEMPTS_PER_ROUND: u32 = 3;

/// The guest-only control of a run at its start and its end (median cycles).
fn controls(run: &Run) -> Option<(f64, f64)> {
    Some((run.median(CONTROLS[0])?, run.median(CONTROLS[1])?))
}

/// Why a round (xen-like-hv's run, then Xen's) does not measure the hypervisors alone:
/// the guest-only control moved by more than `skew` within a run, or differed by more
/// than `skew` between the two. `None` for a steady round.
pub fn disturbed(pair: &[Run; 2], skew: f64) -> Option<String> {
    let mut starts = Vec::new();
    for run in pair {
        let Some((a, b)) = controls(run) else {
            return Some(format!("{} reported no control", run.side.name()));
        };
        if a <= 0.0 || (b / a - 1.0).abs() > skew {
            return Some(format!(
                "on {} the control went from {a:.0} to {b:.0} cycles",
                run.side.name()
            ));
        }
        starts.push((a + b) / 2.0);
    }
    let (o, x) = (starts[0], starts[1]);
    ((x / o - 1.0).abs() > skew)
        .then(|| format!("the control took {o:.0} cycles on xen-like-hv and {x:.0} on Xen"))
}

/// The steady rounds (see [`disturbed`]) to report: the largest group whose control
/// levels lie within `skew` of each other (so the machine ran at one speed), its first
/// `want` in round order. Fewer than `want` when there are not enough yet.
pub fn steady_rounds(pairs: &[[Run; 2]], skew: f64, want: usize) -> Vec<usize> {
    let level = |p: &[Run; 2]| {
        let v: Vec<f64> = p
            .iter()
            .filter_map(controls)
            .flat_map(|(a, b)| [a, b])
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    };
    let steady: Vec<(usize, f64)> = pairs
        .iter()
        .enumerate()
        .filter(|(_, p)| disturbed(p, skew).is_none())
        .map(|(i, p)| (i, level(p)))
        .collect();
    let mut best: Vec<usize> = Vec::new();
    for &(_, lo) in &steady {
        let group: Vec<usize> = steady
            .iter()
            .filter(|&&(_, l)| l >= lo && l <= lo * (1.0 + skew))
            .map(|&(i, _)| i)
            .collect();
        if group.len() > best.len() {
            best = group;
        }
    }
    best.truncate(want);
    best
}

/// `xtask bench`.
pub fn main(args: BenchArgs) -> Result<()> {
    if !args.quick && args.rounds < 5 {
        bail!("--rounds must be at least 5 (interleaved A/B); --quick runs one round");
    }
    if args.accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
        bail!("--accel kvm: this machine has no /dev/kvm");
    }
    let rounds = if args.quick { 1 } else { args.rounds };

    eprintln!("bench: building xen-like-hv and the bench guest");
    let hv = match &args.hypervisor {
        Some(p) => p.clone(),
        None => crate::build_hypervisor()?,
    };
    let guest = crate::build_kernel("pv-bench", "bench")?;
    let (xen_path, xen_pkg) = match &args.xen {
        Some(p) => (p.clone(), p.display().to_string()),
        None => {
            eprintln!(
                "bench: fetching {} (cache: {})",
                xen::XEN_PACKAGE,
                xen::cache_dir().display()
            );
            let img = xen::xen_image()?;
            (img.path.clone(), img.package.clone())
        }
    };

    // Raw logs of this run only.
    if let Ok(dir) = std::fs::read_dir(args.out_dir().join("raw")) {
        for e in dir.flatten() {
            if e.path().extension().is_some_and(|x| x == "log") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let work = crate::target_dir().join("bench");
    std::fs::create_dir_all(&work)?;
    let module = |cmdline: &str| {
        vec![Module {
            path: guest.clone(),
            cmdline: cmdline.into(),
        }]
    };
    let ours_cmdline = format!("dom0_mem={}", args.dom0_mem);
    let xen_cmdline = xen::xen_cmdline(&args.dom0_mem, &args.xen_extra);
    let mut cfgs = BTreeMap::new();
    let cfgs_hv = hv.clone();
    for (side, hypervisor, cmdline) in [
        (Side::Ours, hv, ours_cmdline.clone()),
        (Side::Xen, xen_path, xen_cmdline.clone()),
    ] {
        let scaling_module = format!("dom0 scaling{}", if args.quick { " quick" } else { "" });
        for (mode, module_cmdline) in [
            ("full", "dom0"),
            ("boot", "dom0 boot-only"),
            ("scaling", scaling_module.as_str()),
        ] {
            let iso = work.join(format!("{}-{mode}.iso", side.key()));
            // The scaling boot: a two-vCPU dom0 on two CPUs, on both sides.
            let scaling = mode == "scaling";
            let cmdline = if scaling {
                format!("{cmdline} {SCALING_CMDLINE}")
            } else {
                cmdline.clone()
            };
            crate::make_iso(
                &IsoSpec {
                    hypervisor: hypervisor.clone(),
                    cmdline,
                    modules: module(module_cmdline),
                },
                &iso,
            )?;
            let mut cfg = QemuConfig::new(iso);
            cfg.accel = args.accel;
            cfg.cpu = args.cpu.clone();
            cfg.mem = args.mem.clone();
            cfg.smp = if scaling { SCALING_CPUS } else { args.smp };
            cfg.headless = true;
            cfgs.insert((side, mode), cfg);
        }
    }
    let domus_iso = work.join("ours-domus.iso");
    let quick = if args.quick { " quick" } else { "" };
    let domu = |name: &str, role: &str, peer: u16| Module {
        path: guest.clone(),
        cmdline: format!("domu name={name} mem=16M \"cmdline=role={role} peer={peer}{quick}\""),
    };
    crate::make_iso(
        &IsoSpec {
            hypervisor: cfgs_hv.clone(),
            cmdline: ours_cmdline.clone(),
            modules: vec![
                Module {
                    path: guest.clone(),
                    cmdline: "dom0 role=host".into(),
                },
                domu("ping", "ping", 2),
                domu("pong", "pong", 1),
            ],
        },
        &domus_iso,
    )?;
    let mut domus_cfg = cfgs[&(Side::Ours, "full")].clone();
    domus_cfg.iso = domus_iso;
    let mut cond = conditions(&args, &ours_cmdline, &xen_cmdline, &xen_pkg);

    // Rounds run until `rounds` of them are steady, at one speed (`steady_rounds`), or
    // the attempts run out; the report then judges the rounds kept.
    let attempts = if args.quick {
        1
    } else {
        rounds * ATTEMPTS_PER_ROUND
    };
    let want_rounds = usize::try_from(rounds).unwrap_or(usize::MAX);
    let mut pairs: Vec<[Run; 2]> = Vec::new();
    let mut kept = Vec::new();
    for round in 0..attempts {
        let mut pair = Vec::new();
        for side in [Side::Ours, Side::Xen] {
            let run = run_round(
                side,
                round,
                RoundConfigs {
                    full: &cfgs[&(side, "full")],
                    boot_only: &cfgs[&(side, "boot")],
                    scaling: &cfgs[&(side, "scaling")],
                    domus: (side == Side::Ours).then_some(&domus_cfg),
                },
                &args,
            )?;
            let unsupported = run
                .report
                .metrics
                .iter()
                .filter(|(_, m)| matches!(m, Measured::Unsupported { .. }))
                .count();
            eprintln!(
                "bench: round {} ({} steady of {rounds} so far) {:<12} {} metrics ({unsupported} unsupported), dom0 up at {:.0} ms (median of {} boots), {:.1} s",
                round + 1,
                kept.len(),
                side.name(),
                run.report.metrics.len(),
                run.median(BOOT_METRIC).unwrap_or(0.0),
                1 + BOOT_SAMPLES,
                run.wall_s
            );
            pair.push(run);
        }
        let Ok(pair) = <[Run; 2]>::try_from(pair) else {
            unreachable!("two sides per round");
        };
        pairs.push(pair);
        if args.quick {
            kept = vec![0];
            break;
        }
        kept = steady_rounds(&pairs, args.max_control_skew, want_rounds);
        if kept.len() >= want_rounds {
            break;
        }
    }
    if !args.quick && kept.len() < want_rounds {
        // Not enough steady rounds: report all of them, and the noise checks refuse.
        kept = (0..pairs.len()).collect();
    }
    for (i, p) in pairs.iter().enumerate() {
        if !kept.contains(&i) {
            let why = disturbed(p, args.max_control_skew)
                .unwrap_or_else(|| "its controls ran at another speed than the rounds kept".into());
            eprintln!("bench: round {} set aside: {why}", i + 1);
            cond.discarded.push(format!("round {}: {why}", i + 1));
        }
    }
    cond.rounds = u32::try_from(kept.len()).unwrap_or(u32::MAX);
    let runs: Vec<Run> = pairs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| kept.contains(i))
        .flat_map(|(_, p)| p)
        .collect();

    let control_plane = if args.skip_control_plane {
        None
    } else {
        eprintln!(
            "bench: control plane: 1000 idle domUs through dom0ctl in a -m 6G QEMU, a hog beside them"
        );
        let ctl = crate::bench_ctl::markdown(&crate::bench_ctl::run(&cfgs_hv)?);
        eprintln!("bench: block: dom0 directly on its disk, then a domU through blkfront/blkback");
        let block = crate::bench_block::markdown(&crate::bench_block::run(&cfgs_hv)?);
        eprintln!("bench: network: dom0's TCP to the host, then domUs through netfront/netback");
        let net = crate::bench_net::markdown(&crate::bench_net::run(&cfgs_hv)?);
        Some(ctl + &block + &net)
    };

    let mut report = Report::new(cond, &runs, args.max_spread, args.max_control_skew);
    let history = crate::workspace_root().join(crate::bench_history::HISTORY_DIR);
    if let Some(last) = crate::bench_history::last_published(&history)? {
        let changes = crate::bench_history::compare(&bench_report::ratios(&report), &last);
        report.previous = Some((last, changes));
    }
    std::fs::create_dir_all(args.out_dir().join("raw"))?;
    // Kept with the raw data whether or not the report is published.
    if let Some(md) = &control_plane {
        std::fs::write(args.out_dir().join("raw/control-plane.md"), md)?;
    }
    std::fs::write(
        args.out_dir().join("raw/last-run.json"),
        bench_report::json(&report).to_string(),
    )?;
    for u in &report.unstable {
        eprintln!("bench: unstable across rounds (flagged in the report): {u}");
    }
    if !report.refusals.is_empty() {
        eprintln!(
            "\nbench: REFUSING TO REPORT: the machine was too noisy for these numbers to mean anything:"
        );
        for r in &report.refusals {
            eprintln!("  - {r}");
        }
        eprintln!(
            "bench: nothing published; raw data in {}. Retry on a quieter machine (no other load, \
             performance governor), or see docs/bench.md.",
            args.out_dir().join("raw").display()
        );
        // Not an error of the tool: a verdict. Exit 3 without a backtrace.
        std::process::exit(3);
    }
    let results_json = bench_report::json(&report).to_string();
    std::fs::write(args.out_dir().join("results.json"), &results_json)?;
    // A full run into the published folder is a published run: it joins the history
    // (the baseline of the next run's comparison) and the README shows it.
    let published = !args.quick && args.out_dir() == crate::workspace_root().join("bench");
    if published {
        let h = crate::bench_history::record(&history, &results_json)?;
        eprintln!("bench: recorded in {}", h.display());
        if crate::bench_history::readme_sync(&crate::workspace_root(), false)? {
            eprintln!("bench: README.md's performance table regenerated");
        }
    }
    // Published with the rest only (the same quiet machine).
    if let Some(md) = &control_plane {
        std::fs::write(args.out_dir().join("control-plane.md"), md)?;
        println!("{md}");
    }
    let md = bench_report::markdown(&report);
    std::fs::write(args.out_dir().join("results.md"), &md)?;
    std::fs::write(
        args.out_dir().join("ratios.svg"),
        bench_report::svg(&report),
    )?;
    println!("{md}");
    eprintln!(
        "bench: wrote {}, results.md and ratios.svg",
        args.out_dir().join("results.json").display()
    );
    let worse = report.regressions();
    if !worse.is_empty() {
        eprintln!(
            "bench: {} ratio(s) ours/Xen more than 10% worse than the last published run: {}",
            worse.len(),
            worse
                .iter()
                .map(|c| format!("{} {:.3} -> {:.3}", c.metric, c.before, c.after))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if args.check {
            std::process::exit(4);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_parse() {
        let (n, m) = parse_result(
            "(d0) bench-result metric=null_hypercall iters=100000 median=1234 p10=1200 p90=1302 unit=cycles",
        )
        .unwrap()
        .unwrap();
        assert_eq!(n, "null_hypercall");
        assert_eq!(
            m,
            Measured::Value {
                iters: 100_000,
                median: 1234.0,
                p10: 1200.0,
                p90: 1302.0,
                unit: "cycles".into()
            }
        );
        let (n, m) = parse_result(
            "bench-result metric=evtchn_notify_self unsupported hypercall=event_channel_op(EVTCHNOP_bind_ipi) error=ENOSYS",
        )
        .unwrap()
        .unwrap();
        assert_eq!(n, "evtchn_notify_self");
        assert_eq!(
            m,
            Measured::Unsupported {
                hypercall: "event_channel_op(EVTCHNOP_bind_ipi)".into(),
                error: "ENOSYS".into()
            }
        );
        assert!(parse_result("(XEN) nothing here").is_none());
        assert!(
            parse_result("bench-result metric=x iters=1")
                .unwrap()
                .is_err()
        );
    }

    #[test]
    fn guest_output_parses() {
        let g = parse_guest(
            "(d0) bench: pv-bench 0.1.0 benchmark guest\n(d0) bench-info tsc_hz=2596094720 source=pvclock\n\
             (d0) bench-result metric=control_loop iters=10 median=884 p10=884 p90=910 unit=cycles\n\
             (d0) bench: done: 1 metrics measured, 0 unsupported; powering off\n",
        )
        .unwrap();
        assert!(g.banner && g.done);
        assert_eq!(g.tsc_hz, Some(2_596_094_720));
        assert_eq!(g.metrics.len(), 1);
        let g = parse_guest("bench-info tsc_hz=unknown source=none\n").unwrap();
        assert_eq!(g.tsc_hz, None);
    }
}
