//! The benchmark report: per-metric medians across rounds, spreads, ratios ours/Xen,
//! the noise verdict, and the three outputs (JSON, Markdown table, SVG bar chart).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use crate::bench::{BOOT_METRIC, Conditions, HV_BOOT_METRIC, Measured, Run, Side};

/// Target ratio (ours / Xen) for the guest metrics.
pub const TARGET: f64 = 0.8;
/// Target ratio for the grant-table metrics (issue 14).
pub const GNTTAB_TARGET: f64 = 0.5;
/// Target ratio for `hv_log_to_dom0`, the part of the boot the hypervisor controls
/// (issue 21); `boot_to_dom0` includes SeaBIOS and GRUB and has no target.
pub const BOOT_TARGET: f64 = 0.25;
/// Target for `null_hypercall / floor` on xen-like-hv (issue 21).
pub const FLOOR_TARGET: f64 = 1.5;
/// Target ratio (ours / Xen) for the scaling rows (issue 17).
pub const SCALING_TARGET: f64 = 0.5;
/// Target for the per-vCPU throughput at two vCPUs against one (issue 17).
pub const PER_VCPU_TARGET: f64 = 0.8;
/// The pairs of scaling rows (one vCPU, two at once) whose per-vCPU throughput is
/// compared, by what they measure.
pub const SCALING_PAIRS: [(&str, &str, &str); 2] = [
    (
        "null_hypercall",
        "scale_null_hypercall_1vcpu",
        "scale_null_hypercall_2vcpus",
    ),
    (
        "mmu_update_b64",
        "scale_mmu_update_b64_1vcpu",
        "scale_mmu_update_b64_2vcpus",
    ),
];

/// Whether `metric` is one of the scaling boot's rows.
pub fn is_scaling(metric: &str) -> bool {
    metric.starts_with("scale_") || metric == "cross_cpu_evtchn_rtt"
}
/// Metrics only xen-like-hv has (no Xen column, no ratio, no target).
pub fn ours_only(metric: &str) -> bool {
    metric == "floor" || metric.starts_with("domu_")
}
/// At most one metric in this many may be unstable; more and the report is refused.
pub const MAX_UNSTABLE_FRACTION: usize = 4;
/// The guest-only noise controls (same code on both sides: ratio ~1 when quiet).
pub const CONTROLS: [&str; 2] = ["control_loop", "control_loop_end"];

/// What one sample of a metric is.
pub fn describe(metric: &str) -> &'static str {
    match metric {
        "control_loop" => {
            "guest-only loop over a 256 KiB buffer, no hypervisor (noise control, start of run)"
        }
        "control_loop_end" => "the same control at the end of the run",
        "local_write" => "one write to a local variable (the timer's own cost; no target)",
        "floor" => {
            "the floor call: syscall into the hypervisor and straight back (sysret), no handler; xen-like-hv only"
        }
        "null_hypercall" => "xen_version(XENVER_version) round trip",
        m if m.starts_with("mmu_update_pte_b") => "mmu_update of N L1 entries, per entry",
        m if m.starts_with("multicall_uvm_pte_b") => {
            "multicall of N update_va_mapping (UVMF_NONE), per entry"
        }
        "mmuext_pin_unpin_l1" => "mmuext_op PIN_L1_TABLE + UNPIN_TABLE of an empty L1",
        "exception_bounce" => "ud2 -> #UD bounce to the guest handler -> iret hypercall",
        "evtchn_notify_self" => "EVTCHNOP_send to an IPI port of vCPU 0 -> upcall -> iret",
        "sched_yield" => "sched_op(SCHEDOP_yield) round trip",
        m if m.starts_with("gnttab_map_unmap_b") => {
            "GNTTABOP_map_grant_ref (host, writable) of N pages of a self-grant, then one unmap of N, per page"
        }
        "gnttab_copy_4k" => "one GNTTABOP_copy of 4 KiB from a self-grant into an own frame",
        "timer_wake" => "lateness of a 1 ms set_timer_op + SCHEDOP_block wake-up, by the pvclock",
        "scale_null_hypercall_1vcpu" => {
            "xen_version on vCPU 0 of a two-vCPU dom0 (-smp 2) while vCPU 1 sleeps"
        }
        "scale_null_hypercall_2vcpus" => "xen_version on both vCPUs at once (samples of both)",
        "scale_mmu_update_b64_1vcpu" => {
            "mmu_update of 64 entries of vCPU 0's own L1, per entry, vCPU 1 asleep"
        }
        "scale_mmu_update_b64_2vcpus" => {
            "mmu_update of 64 entries on both vCPUs at once, each its own L1, per entry"
        }
        "cross_cpu_evtchn_rtt" => {
            "event round trip between two vCPUs on two CPUs (send, IPI, upcall, send back)"
        }
        "domu_evtchn_rtt" => {
            "event-channel round trip between two domUs (send, switch, upcall, reply); xen-like-hv only"
        }
        "domu_switch" => {
            "one switch between two domUs that SCHEDOP_yield to each other; xen-like-hv only"
        }
        BOOT_METRIC => {
            "QEMU start to dom0's first console line (firmware and GRUB included); median of 3 boots per round"
        }
        HV_BOOT_METRIC => {
            "hypervisor's first console line to dom0's first console line; median of 3 boots per round"
        }
        _ => "",
    }
}

/// One hypervisor's numbers for one metric.
#[derive(Clone, Debug, Default)]
pub struct SideStats {
    /// The median of each round, in round order (rounds where it was measured).
    pub rounds: Vec<f64>,
    /// Median of the round medians.
    pub median: Option<f64>,
    /// (max - min) / median of the round medians (needs two rounds).
    pub spread: Option<f64>,
    /// p10 and p90 of the samples, median over the rounds.
    pub p10: Option<f64>,
    /// See `p10`.
    pub p90: Option<f64>,
    /// Samples per run.
    pub iters: u64,
    /// Why it was not measured: (hypercall, error).
    pub unsupported: Option<(String, String)>,
}

/// One metric across both hypervisors.
#[derive(Clone, Debug)]
pub struct Row {
    /// Metric name.
    pub name: String,
    /// Unit of the values (`cycles` or `ms`).
    pub unit: String,
    /// Target ratio, `None` for the controls.
    pub target: Option<f64>,
    /// xen-like-hv.
    pub ours: SideStats,
    /// Xen.
    pub xen: SideStats,
    /// ours / Xen (medians).
    pub ratio: Option<f64>,
    /// Smallest and largest per-round ratio.
    pub ratio_range: Option<(f64, f64)>,
    /// Its per-round medians spread more than the limit on either side.
    pub unstable: bool,
}

impl Row {
    /// Whether the ratio meets the target.
    pub fn met(&self) -> Option<bool> {
        Some(self.ratio? <= self.target?)
    }
}

/// Everything the outputs show.
#[derive(Clone, Debug)]
pub struct Report {
    /// How and where it ran.
    pub cond: Conditions,
    /// Metrics, in the guest's order, boot times last.
    pub rows: Vec<Row>,
    /// TSC frequency used to convert cycles to ns, and whose vcpu_time_info gave it.
    pub tsc: Option<(f64, Side)>,
    /// Why the numbers cannot be published (empty: publishable).
    pub refusals: Vec<String>,
    /// Metrics whose per-round medians spread more than the limit (published, flagged).
    pub unstable: Vec<String>,
    /// Limits of the thresholds, for the outputs.
    pub max_spread: f64,
    /// See `max_spread`.
    pub max_control_skew: f64,
    /// The last published run and each ratio's change since (`bench/history/`).
    pub previous: Option<(
        crate::bench_history::Published,
        Vec<crate::bench_history::Change>,
    )>,
}

/// Median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

/// Relative spread of per-round values: (max - min) / median for two to four values;
/// from five on, the lowest and the highest value are left out first (one disturbed round
/// moves neither the median nor the spread, as it does not move the published number).
pub fn spread(v: &[f64]) -> Option<f64> {
    if v.len() < 2 {
        return None;
    }
    let m = median(v)?;
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let kept = if s.len() >= 5 {
        &s[1..s.len() - 1]
    } else {
        &s[..]
    };
    let (min, max) = (kept[0], kept[kept.len() - 1]);
    (m > 0.0).then(|| (max - min) / m)
}

fn side_stats(runs: &[&Run], name: &str) -> (SideStats, Option<String>) {
    let mut st = SideStats::default();
    let mut unit = None;
    let (mut p10s, mut p90s) = (Vec::new(), Vec::new());
    for run in runs {
        match run.report.metrics.iter().find(|(n, _)| n == name) {
            Some((
                _,
                Measured::Value {
                    iters,
                    median,
                    p10,
                    p90,
                    unit: u,
                },
            )) => {
                st.rounds.push(*median);
                p10s.push(*p10);
                p90s.push(*p90);
                st.iters = *iters;
                unit = Some(u.clone());
            }
            Some((_, Measured::Unsupported { hypercall, error })) => {
                st.unsupported = Some((hypercall.clone(), error.clone()));
            }
            None => {}
        }
    }
    st.median = median(&st.rounds);
    st.spread = spread(&st.rounds);
    st.p10 = median(&p10s);
    st.p90 = median(&p90s);
    (st, unit)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

impl Report {
    /// Aggregates the runs and judges the noise.
    pub fn new(cond: Conditions, runs: &[Run], max_spread: f64, max_control_skew: f64) -> Report {
        let of = |side| runs.iter().filter(|r| r.side == side).collect::<Vec<_>>();
        let (ours_runs, xen_runs) = (of(Side::Ours), of(Side::Xen));
        let mut names: Vec<String> = Vec::new();
        for run in ours_runs.iter().chain(xen_runs.iter()) {
            for (n, _) in &run.report.metrics {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        let mut rows = Vec::new();
        for name in &names {
            let (ours, u1) = side_stats(&ours_runs, name);
            let (xen, u2) = side_stats(&xen_runs, name);
            let ratio = match (ours.median, xen.median) {
                (Some(a), Some(b)) if b > 0.0 && !ours_only(name) => Some(a / b),
                _ => None,
            };
            let per_round: Vec<f64> = ours_runs
                .iter()
                .filter_map(|a| {
                    let b = xen_runs.iter().find(|b| b.round == a.round)?;
                    let (x, y) = (a.median(name)?, b.median(name)?);
                    (y > 0.0).then(|| x / y)
                })
                .collect();
            let ratio_range = (!per_round.is_empty() && !ours_only(name)).then(|| {
                (
                    per_round.iter().copied().fold(f64::MAX, f64::min),
                    per_round.iter().copied().fold(f64::MIN, f64::max),
                )
            });
            let target = if CONTROLS.contains(&name.as_str())
                || ours_only(name)
                || name == "local_write"
                || name == BOOT_METRIC
            {
                None
            } else if name == HV_BOOT_METRIC {
                Some(BOOT_TARGET)
            } else if name.starts_with("gnttab_") {
                Some(GNTTAB_TARGET)
            } else if is_scaling(name) {
                Some(SCALING_TARGET)
            } else {
                Some(TARGET)
            };
            rows.push(Row {
                name: name.clone(),
                unit: u1.or(u2).unwrap_or_else(|| "cycles".into()),
                target,
                ours,
                xen,
                ratio,
                ratio_range,
                unstable: false,
            });
        }

        let hz = |runs: &[&Run]| {
            let v: Vec<f64> = runs
                .iter()
                .filter_map(|r| r.report.tsc_hz.map(|h| h as f64))
                .collect();
            median(&v)
        };
        let tsc = hz(&xen_runs)
            .map(|h| (h, Side::Xen))
            .or_else(|| hz(&ours_runs).map(|h| (h, Side::Ours)));

        let mut refusals = Vec::new();
        for row in rows.iter().filter(|r| CONTROLS.contains(&r.name.as_str())) {
            if let Some(ratio) = row.ratio
                && (ratio - 1.0).abs() > max_control_skew
            {
                refusals.push(format!(
                    "{}: the same guest-only code took {:.0} cycles under xen-like-hv and {:.0} \
                     under Xen ({} apart, limit {}): the machine ran at different speeds \
                     during the two hypervisors' runs",
                    row.name,
                    row.ours.median.unwrap_or(0.0),
                    row.xen.median.unwrap_or(0.0),
                    pct((ratio - 1.0).abs()),
                    pct(max_control_skew)
                ));
            }
        }
        for run in runs {
            if let (Some(a), Some(b)) = (run.median(CONTROLS[0]), run.median(CONTROLS[1]))
                && a > 0.0
                && (b / a - 1.0).abs() > max_control_skew
            {
                refusals.push(format!(
                    "{} round {}: the control loop went from {a:.0} to {b:.0} cycles between the \
                     start and the end of the run ({} change, limit {}): the machine's speed \
                     changed during the run",
                    run.side.name(),
                    run.round + 1,
                    pct((b / a - 1.0).abs()),
                    pct(max_control_skew)
                ));
            }
        }
        // The controls' spread across rounds is the machine's own speed variation.
        for row in rows.iter().filter(|r| CONTROLS.contains(&r.name.as_str())) {
            for (side, st) in [(Side::Ours, &row.ours), (Side::Xen, &row.xen)] {
                if let Some(s) = st.spread
                    && s > max_control_skew
                {
                    refusals.push(format!(
                        "{} on {}: the guest-only control varied by {} across rounds (limit {}): \
                         the machine's speed changed between runs",
                        row.name,
                        side.name(),
                        pct(s),
                        pct(max_control_skew)
                    ));
                }
            }
        }
        // A metric whose per-round medians spread too far is unstable. One or two unstable
        // metrics with steady controls are that hypervisor's own run-to-run variation
        // (shown, flagged); many at once mean the machine was noisy.
        let mut unstable = Vec::new();
        for row in rows.iter_mut() {
            for (side, st) in [(Side::Ours, &row.ours), (Side::Xen, &row.xen)] {
                if let Some(s) = st.spread
                    && s > max_spread
                {
                    let list: Vec<String> = st.rounds.iter().map(|v| format!("{v:.0}")).collect();
                    unstable.push(format!(
                        "{} on {}: per-round medians [{}] {}, spread {} (limit {})",
                        row.name,
                        side.name(),
                        list.join(", "),
                        row.unit,
                        pct(s),
                        pct(max_spread)
                    ));
                    row.unstable = true;
                }
            }
        }
        let n_unstable = rows.iter().filter(|r| r.unstable).count();
        let allowed = rows.len() / MAX_UNSTABLE_FRACTION;
        if n_unstable > allowed {
            refusals.push(format!(
                "{n_unstable} of {} metrics spread more than {} across rounds (at most {allowed} \
                 may): {}",
                rows.len(),
                pct(max_spread),
                unstable.join("; ")
            ));
        }
        // Boot times last, in a fixed order.
        rows.sort_by_key(|r| match r.name.as_str() {
            BOOT_METRIC => 1,
            HV_BOOT_METRIC => 2,
            _ => 0,
        });
        Report {
            cond,
            rows,
            tsc,
            refusals,
            unstable,
            max_spread,
            max_control_skew,
            previous: None,
        }
    }

    /// xen-like-hv's `null_hypercall / floor`: how far the dispatcher is from the
    /// cheapest trip into the hypervisor and back.
    pub fn floor_ratio(&self) -> Option<f64> {
        let m = |n: &str| self.rows.iter().find(|r| r.name == n)?.ours.median;
        let (null, floor) = (m("null_hypercall")?, m("floor")?);
        (floor > 0.0).then(|| null / floor)
    }

    /// Per-vCPU throughput at two vCPUs against one on `side`, for each of
    /// [`SCALING_PAIRS`] measured: the one-vCPU median over the two-vCPU one (cycles
    /// per operation, so this is the throughput ratio).
    pub fn per_vcpu_scaling(&self, side: Side) -> Vec<(&'static str, f64)> {
        let m = |n: &str| {
            let row = self.rows.iter().find(|r| r.name == n)?;
            match side {
                Side::Ours => row.ours.median,
                Side::Xen => row.xen.median,
            }
        };
        SCALING_PAIRS
            .iter()
            .filter_map(|&(what, one, two)| {
                let (a, b) = (m(one)?, m(two)?);
                (b > 0.0).then_some((what, a / b))
            })
            .collect()
    }

    /// The metrics whose ratio got more than 10% worse since the last published run.
    pub fn regressions(&self) -> Vec<&crate::bench_history::Change> {
        self.previous
            .iter()
            .flat_map(|(_, c)| c.iter())
            .filter(|c| c.regressed())
            .collect()
    }

    fn ns(&self, cycles: f64) -> Option<f64> {
        self.tsc.map(|(hz, _)| cycles / hz * 1e9)
    }

    fn cell(&self, row: &Row, st: &SideStats) -> String {
        if ours_only(&row.name) && std::ptr::eq(st, &row.xen) {
            return "-".into();
        }
        match (st.median, &st.unsupported) {
            (Some(v), _) if row.unit == "cycles" => match self.ns(v) {
                Some(ns) => format!("{v:.0} cyc ({})", human_ns(ns)),
                None => format!("{v:.0} cyc"),
            },
            (Some(v), _) => format!("{v:.0} {}", row.unit),
            (None, Some((h, e))) => format!("unsupported: {h} -> {e}"),
            (None, None) => "-".into(),
        }
    }
}

fn human_ns(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

// ---------------------------------------------------------------------------
// JSON (no dependencies: a small value type with an escaping printer).

/// A JSON value.
#[derive(Clone, Debug)]
pub enum Json {
    /// `null`.
    Null,
    /// `true`/`false`.
    Bool(bool),
    /// A number (non-finite values print as `null`).
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn obj(items: Vec<(&str, Json)>) -> Json {
        Json::Obj(items.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    fn opt(v: Option<f64>) -> Json {
        v.map_or(Json::Null, Json::Num)
    }

    fn s(v: &str) -> Json {
        Json::Str(v.to_string())
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, indent: usize) -> fmt::Result {
        let pad = |n: usize| "  ".repeat(n);
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) if !n.is_finite() => f.write_str("null"),
            Json::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => write!(f, "{n:.0}"),
            Json::Num(n) => write!(f, "{}", (n * 1e4).round() / 1e4),
            Json::Str(s) => {
                f.write_char('"')?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
                        c => f.write_char(c)?,
                    }
                }
                f.write_char('"')
            }
            Json::Arr(v) if v.is_empty() => f.write_str("[]"),
            Json::Arr(v) => {
                f.write_str("[\n")?;
                for (i, x) in v.iter().enumerate() {
                    f.write_str(&pad(indent + 1))?;
                    x.write(f, indent + 1)?;
                    f.write_str(if i + 1 < v.len() { ",\n" } else { "\n" })?;
                }
                write!(f, "{}]", pad(indent))
            }
            Json::Obj(v) if v.is_empty() => f.write_str("{}"),
            Json::Obj(v) => {
                f.write_str("{\n")?;
                for (i, (k, x)) in v.iter().enumerate() {
                    write!(f, "{}", pad(indent + 1))?;
                    Json::Str(k.clone()).write(f, indent + 1)?;
                    f.write_str(": ")?;
                    x.write(f, indent + 1)?;
                    f.write_str(if i + 1 < v.len() { ",\n" } else { "\n" })?;
                }
                write!(f, "{}}}", pad(indent))
            }
        }
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)?;
        f.write_char('\n')
    }
}

fn side_json(st: &SideStats) -> Json {
    Json::obj(vec![
        ("median", Json::opt(st.median)),
        ("p10", Json::opt(st.p10)),
        ("p90", Json::opt(st.p90)),
        ("spread", Json::opt(st.spread)),
        ("iters", Json::Num(st.iters as f64)),
        (
            "round_medians",
            Json::Arr(st.rounds.iter().map(|v| Json::Num(*v)).collect()),
        ),
        (
            "unsupported",
            st.unsupported.as_ref().map_or(Json::Null, |(h, e)| {
                Json::obj(vec![("hypercall", Json::s(h)), ("error", Json::s(e))])
            }),
        ),
    ])
}

/// results.json.
pub fn json(r: &Report) -> Json {
    let c = &r.cond;
    let metrics = r
        .rows
        .iter()
        .map(|row| {
            Json::obj(vec![
                ("name", Json::s(&row.name)),
                ("what", Json::s(describe(&row.name))),
                ("unit", Json::s(&row.unit)),
                ("xen_like_hv", side_json(&row.ours)),
                ("xen", side_json(&row.xen)),
                ("ratio", Json::opt(row.ratio)),
                ("ratio_min", Json::opt(row.ratio_range.map(|x| x.0))),
                ("ratio_max", Json::opt(row.ratio_range.map(|x| x.1))),
                ("target", Json::opt(row.target)),
                ("met", row.met().map_or(Json::Null, Json::Bool)),
                ("unstable", Json::Bool(row.unstable)),
            ])
        })
        .collect();
    Json::obj(vec![
        ("schema", Json::s("xen-like-hv bench results v1")),
        ("date", Json::s(&c.date)),
        ("commit", Json::s(&c.commit)),
        ("rounds", Json::Num(f64::from(c.rounds))),
        (
            "discarded_rounds",
            Json::Arr(c.discarded.iter().map(|d| Json::s(d)).collect()),
        ),
        ("quick", Json::Bool(c.quick)),
        (
            "qemu",
            Json::obj(vec![
                ("version", Json::s(&c.qemu)),
                ("accel", Json::s(&c.accel)),
                ("cpu", Json::s(&c.cpu)),
                ("mem", Json::s(&c.mem)),
                ("smp", Json::Num(f64::from(c.smp))),
            ]),
        ),
        (
            "host",
            Json::obj(vec![
                ("cpu", Json::s(&c.host_cpu)),
                ("cpus", Json::Num(c.host_cpus as f64)),
            ]),
        ),
        (
            "xen_like_hv",
            Json::obj(vec![("cmdline", Json::s(&c.ours_cmdline))]),
        ),
        (
            "xen",
            Json::obj(vec![
                ("package", Json::s(&c.xen_package)),
                ("cmdline", Json::s(&c.xen_cmdline)),
            ]),
        ),
        (
            "tsc_hz",
            Json::obj(vec![
                ("value", Json::opt(r.tsc.map(|t| t.0))),
                ("from", r.tsc.map_or(Json::Null, |t| Json::s(t.1.key()))),
            ]),
        ),
        (
            "noise",
            Json::obj(vec![
                ("max_spread", Json::Num(r.max_spread)),
                ("max_control_skew", Json::Num(r.max_control_skew)),
                (
                    "refusals",
                    Json::Arr(r.refusals.iter().map(|s| Json::s(s)).collect()),
                ),
                (
                    "unstable",
                    Json::Arr(r.unstable.iter().map(|s| Json::s(s)).collect()),
                ),
            ]),
        ),
        ("metrics", Json::Arr(metrics)),
        (
            "floor_ratio",
            Json::obj(vec![
                ("value", Json::opt(r.floor_ratio())),
                ("target", Json::Num(FLOOR_TARGET)),
                (
                    "met",
                    r.floor_ratio()
                        .map_or(Json::Null, |f| Json::Bool(f <= FLOOR_TARGET)),
                ),
            ]),
        ),
        (
            "per_vcpu_scaling",
            Json::obj(vec![
                ("target", Json::Num(PER_VCPU_TARGET)),
                (
                    "ours",
                    Json::obj(
                        r.per_vcpu_scaling(Side::Ours)
                            .into_iter()
                            .map(|(w, x)| (w, Json::Num(x)))
                            .collect(),
                    ),
                ),
                (
                    "xen",
                    Json::obj(
                        r.per_vcpu_scaling(Side::Xen)
                            .into_iter()
                            .map(|(w, x)| (w, Json::Num(x)))
                            .collect(),
                    ),
                ),
            ]),
        ),
        (
            "regressions",
            Json::Arr(r.regressions().iter().map(|c| Json::s(&c.metric)).collect()),
        ),
    ])
}

// ---------------------------------------------------------------------------
// Markdown.

/// results.md: conditions, the table, what is unsupported, and the chart.
pub fn markdown(r: &Report) -> String {
    let c = &r.cond;
    let mut s = String::new();
    let _ = writeln!(s, "# xen-like-hv vs Xen 4.17: benchmark results\n");
    let _ = writeln!(
        s,
        "Measured {} at commit `{}`: {}. QEMU `{}`: `-accel {} -cpu {} -m {} -smp {}` for both; \
         host {} ({} CPUs). xen-like-hv command line `{}`; Xen {} with `{}`.\n",
        c.date,
        c.commit,
        if c.quick {
            "one round (`--quick`): the spread across rounds was not judged".to_string()
        } else {
            format!(
                "{} interleaved rounds (xen-like-hv, then Xen){}",
                c.rounds,
                match c.discarded.len() {
                    0 => String::new(),
                    n => format!(
                        ", after {n} more were set aside because the host's speed moved during                          them (listed at the end)"
                    ),
                }
            )
        },
        c.qemu,
        c.accel,
        c.cpu,
        c.mem,
        c.smp,
        c.host_cpu,
        c.host_cpus,
        c.ours_cmdline,
        c.xen_package,
        c.xen_cmdline
    );
    let _ = writeln!(
        s,
        "Medians across rounds of each run's median; `cyc` are TSC cycles{}. Ratio = \
         xen-like-hv / Xen (lower is faster); targets: ≤ {TARGET} per metric, ≤ {GNTTAB_TARGET} \
         for the grant-table rows, ≤ {BOOT_TARGET} for `{HV_BOOT_METRIC}` (none for `{BOOT_METRIC}`: firmware and GRUB take the same time on both). Spread = (max − min) / median of the per-round medians (limit {}). \
         Method and limits (TCG timing, noise): [docs/bench.md](../docs/bench.md).\n",
        match r.tsc {
            Some((hz, side)) => format!(
                ", converted to time with the TSC frequency {}'s vcpu_time_info gives ({:.0} MHz)",
                side.name(),
                hz / 1e6
            ),
            None => String::new(),
        },
        pct(r.max_spread)
    );
    s.push_str("| metric | xen-like-hv | Xen 4.17 | ours/Xen | per-round ratios | target | met | spread ours / Xen |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|:-:|---:|\n");
    for row in &r.rows {
        let worse = r
            .regressions()
            .into_iter()
            .find(|c| c.metric == row.name)
            .map_or(String::new(), |c| {
                format!(" **▲{:.0}% vs last**", c.relative() * 100.0)
            });
        let ratio = row.ratio.map_or("-".into(), |x| {
            format!("{x:.3}{}{worse}", if row.unstable { " ⚠" } else { "" })
        });
        let range = row
            .ratio_range
            .map_or("-".into(), |(a, b)| format!("{a:.3} – {b:.3}"));
        let target = match row.target {
            Some(t) => format!("≤ {t}"),
            None if ours_only(&row.name) => "(ours only)".into(),
            None if row.name == "local_write" => "(timer's floor)".into(),
            None if row.name == BOOT_METRIC => "(firmware + GRUB)".into(),
            None => "(control ≈ 1)".into(),
        };
        let met = match row.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "-",
        };
        let sp = |st: &SideStats| st.spread.map_or("-".into(), pct);
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.name,
            r.cell(row, &row.ours),
            r.cell(row, &row.xen),
            ratio,
            range,
            target,
            met,
            sp(&row.ours),
            sp(&row.xen)
        );
    }
    s.push_str("\nWhat one sample is:\n\n");
    let mut seen = Vec::new();
    for row in &r.rows {
        let d = describe(&row.name);
        if d.is_empty() || seen.contains(&d) {
            continue;
        }
        seen.push(d);
        let name = if row.name.starts_with("mmu_update_pte_b") {
            "mmu_update_pte_bN".to_string()
        } else if row.name.starts_with("multicall_uvm_pte_b") {
            "multicall_uvm_pte_bN".to_string()
        } else {
            row.name.clone()
        };
        let _ = writeln!(s, "- `{name}`: {d}");
    }
    let unsupported: Vec<String> = r
        .rows
        .iter()
        .filter_map(|row| {
            let (h, e) = row.ours.unsupported.as_ref()?;
            Some(format!("`{}` ({h} → {e})", row.name))
        })
        .collect();
    if !unsupported.is_empty() {
        let _ = writeln!(
            s,
            "\nNot yet supported by xen-like-hv (the guest printed an `unsupported` line): {}.",
            unsupported.join(", ")
        );
    }
    if !r.unstable.is_empty() {
        let _ = writeln!(
            s,
            "\n⚠ Unstable across rounds (too few to mean a noisy machine; see docs/bench.md): {}.",
            r.unstable.join("; ")
        );
    }
    if !r.cond.discarded.is_empty() {
        let _ = writeln!(
            s,
            "\nRounds set aside (the guest-only control moved by more than {} within or \
             between the two runs of a round, or ran at another speed than the rounds kept; \
             raw logs in `raw/`): {}.",
            pct(r.max_control_skew),
            r.cond.discarded.join("; ")
        );
    }
    if let Some(f) = r.floor_ratio() {
        let _ = writeln!(
            s,
            "\n`null_hypercall / floor` on xen-like-hv: **{f:.2}** (target ≤ {FLOOR_TARGET}: {}): how far the \
             hypercall dispatcher is from the cheapest trip into the hypervisor and back.",
            if f <= FLOOR_TARGET {
                "met"
            } else {
                "**missed**"
            }
        );
    }
    let (ours, xen) = (
        r.per_vcpu_scaling(Side::Ours),
        r.per_vcpu_scaling(Side::Xen),
    );
    if !ours.is_empty() || !xen.is_empty() {
        let _ = writeln!(
            s,
            "\nPer-vCPU throughput with two vCPUs at once against one (the `scale_*` rows, a \
             two-vCPU dom0 on `-smp {}`; target ≥ {PER_VCPU_TARGET}):",
            crate::bench::SCALING_CPUS
        );
        for &(what, _, _) in &SCALING_PAIRS {
            let get = |v: &[(&str, f64)]| v.iter().find(|(w, _)| *w == what).map(|x| x.1);
            let show = |x: Option<f64>| match x {
                Some(x) => format!(
                    "{x:.2}{}",
                    if x >= PER_VCPU_TARGET {
                        ""
                    } else {
                        " (**missed**)"
                    }
                ),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "- `{what}`: xen-like-hv {}, Xen {}",
                show(get(&ours)),
                show(get(&xen))
            );
        }
    }
    if let Some((last, changes)) = &r.previous {
        s.push_str(&crate::bench_history::markdown(changes, last));
    }
    let met = r.rows.iter().filter(|x| x.met() == Some(true)).count();
    let judged = r.rows.iter().filter(|x| x.met().is_some()).count();
    let _ = writeln!(
        s,
        "\nTargets met: {met} of {judged} compared metrics.\n\n![ratio xen-like-hv / Xen per metric](ratios.svg)"
    );
    s
}

// ---------------------------------------------------------------------------
// SVG.

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// ratios.svg: one horizontal bar per metric (log scale), whiskers for the per-round
/// ratios, a line at parity and a tick at each metric's target.
pub fn svg(r: &Report) -> String {
    let rows: Vec<&Row> = r.rows.iter().collect();
    let (w, left, right, top, row_h) = (820.0, 210.0, 90.0, 72.0, 24.0);
    let h = top + row_h * rows.len() as f64 + 70.0;
    let mut lo = f64::MAX;
    let mut hi: f64 = 2.0;
    for row in &rows {
        for v in [
            row.ratio,
            row.ratio_range.map(|x| x.0),
            row.ratio_range.map(|x| x.1),
        ]
        .into_iter()
        .flatten()
        {
            if v > 0.0 {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    if lo == f64::MAX {
        lo = 0.1;
    }
    let lo = 10f64.powf((lo.min(BOOT_TARGET)).log10().floor());
    let hi = {
        let d = 10f64.powf(hi.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * d)
            .find(|v| *v >= hi)
            .unwrap_or(10.0 * d)
    };
    let plot_w = w - left - right;
    let x = |v: f64| {
        left + (v.max(lo).min(hi).log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_w
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="15" font-weight="bold">xen-like-hv / Xen 4.17 (median time ratio, log scale; lower is faster)</text>"#
    );
    let sub = format!(
        "{} · QEMU -accel {} -cpu {} · {} · {}",
        r.cond.date,
        r.cond.accel,
        r.cond.cpu,
        if r.cond.quick {
            "1 round (--quick)".to_string()
        } else {
            format!("{} rounds", r.cond.rounds)
        },
        r.cond.commit
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="38" fill="#555">{}</text>"##,
        esc(&sub)
    );
    // Grid and ticks.
    let bottom = top + row_h * rows.len() as f64;
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if v < lo * 0.9999 || v > hi * 1.0001 {
                continue;
            }
            let xv = x(v);
            let _ = writeln!(
                s,
                r##"<line x1="{xv:.1}" y1="{top}" x2="{xv:.1}" y2="{bottom}" stroke="#ddd"/><text x="{xv:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                bottom + 16.0,
                trim_num(v)
            );
        }
        decade *= 10.0;
    }
    let x1 = x(1.0);
    let _ = writeln!(
        s,
        r##"<line x1="{x1:.1}" y1="{:.1}" x2="{x1:.1}" y2="{bottom}" stroke="#333" stroke-width="1.5"/><text x="{x1:.1}" y="{:.1}" text-anchor="middle" fill="#333">Xen = 1</text>"##,
        top - 6.0,
        top - 9.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        let cy = y + row_h / 2.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 8.0,
            cy + 4.0,
            esc(&row.name)
        );
        let Some(ratio) = row.ratio else {
            let why = match &row.ours.unsupported {
                Some((hc, e)) => format!("not supported by xen-like-hv yet ({hc} → {e})"),
                None => "not measured on both".into(),
            };
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" fill="#888" font-style="italic">{}</text>"##,
                left + 6.0,
                cy + 4.0,
                esc(&why)
            );
            continue;
        };
        let color = match row.met() {
            None => "#9e9e9e",
            Some(true) => "#2e7d32",
            Some(false) => "#c62828",
        };
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}" opacity="0.85"/>"#,
            y + 4.0,
            (x(ratio) - left).max(1.0),
            row_h - 8.0
        );
        if let Some((a, b)) = row.ratio_range {
            let _ = writeln!(
                s,
                r##"<line x1="{:.1}" y1="{cy:.1}" x2="{:.1}" y2="{cy:.1}" stroke="#111"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#111"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#111"/>"##,
                x(a),
                x(b),
                x(a),
                cy - 4.0,
                x(a),
                cy + 4.0,
                x(b),
                cy - 4.0,
                x(b),
                cy + 4.0
            );
        }
        if let Some(t) = row.target {
            let xt = x(t);
            let _ = writeln!(
                s,
                r##"<line x1="{xt:.1}" y1="{:.1}" x2="{xt:.1}" y2="{:.1}" stroke="#1565c0" stroke-width="2" stroke-dasharray="3,2"/>"##,
                y + 1.0,
                y + row_h - 1.0
            );
        }
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{ratio:.3}×{}</text>"#,
            w - right + 8.0,
            cy + 4.0,
            if row.unstable { " ⚠" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{:.1}" fill="#555">bars: median ratio (green: meets its target, red: misses it, grey: guest-only control)</text>"##,
        bottom + 38.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="{:.1}" fill="#555">whiskers: smallest and largest per-round ratio · blue dashes: the metric's target</text>"##,
        bottom + 54.0
    );
    s.push_str("</svg>\n");
    s
}

fn trim_num(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Per-metric ratios, for callers that want them as a map.
pub fn ratios(r: &Report) -> BTreeMap<String, f64> {
    r.rows
        .iter()
        .filter_map(|row| Some((row.name.clone(), row.ratio?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::GuestReport;

    fn run(side: Side, round: u32, vals: &[(&str, f64)]) -> Run {
        let metrics = vals
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    Measured::Value {
                        iters: 10,
                        median: *v,
                        p10: *v,
                        p90: *v,
                        unit: "cycles".into(),
                    },
                )
            })
            .collect();
        Run {
            side,
            round,
            report: GuestReport {
                metrics,
                tsc_hz: (side == Side::Xen).then_some(2_000_000_000),
                banner: true,
                done: true,
            },
            wall_s: 1.0,
        }
    }

    /// One round: xen-like-hv's run, then Xen's, with controls (start, end) each.
    fn pair(round: u32, ours: (f64, f64), xen: (f64, f64)) -> [Run; 2] {
        let r = |side, (a, b)| run(side, round, &[(CONTROLS[0], a), (CONTROLS[1], b)]);
        [r(Side::Ours, ours), r(Side::Xen, xen)]
    }

    #[test]
    fn disturbed_rounds_are_told_apart_from_steady_ones() {
        use crate::bench::disturbed;
        assert_eq!(
            disturbed(&pair(0, (8000.0, 8100.0), (8050.0, 8000.0)), 0.1),
            None
        );
        let moved = disturbed(&pair(0, (8000.0, 17000.0), (8000.0, 8000.0)), 0.1).unwrap();
        assert!(
            moved.contains("xen-like-hv") && moved.contains("17000"),
            "{moved}"
        );
        let apart = disturbed(&pair(0, (8000.0, 8000.0), (13000.0, 13000.0)), 0.1).unwrap();
        assert!(apart.contains("13000"), "{apart}");
        let none = [run(Side::Ours, 0, &[]), run(Side::Xen, 0, &[])];
        assert!(disturbed(&none, 0.1).unwrap().contains("no control"));
    }

    #[test]
    fn steady_rounds_keep_one_speed_and_skip_disturbed_ones() {
        use crate::bench::steady_rounds;
        let pairs = vec![
            pair(0, (8000.0, 8100.0), (8000.0, 8050.0)),
            pair(1, (8000.0, 15000.0), (8000.0, 8000.0)), // moved within a run
            pair(2, (13000.0, 13100.0), (13000.0, 13050.0)), // steady, but slower
            pair(3, (8100.0, 8000.0), (8050.0, 8000.0)),
            pair(4, (8000.0, 8000.0), (12000.0, 12000.0)), // sides apart
            pair(5, (8200.0, 8100.0), (8150.0, 8200.0)),
            pair(6, (7990.0, 8000.0), (8000.0, 8010.0)),
            pair(7, (8000.0, 8000.0), (8000.0, 8000.0)),
        ];
        assert_eq!(steady_rounds(&pairs, 0.1, 5), vec![0, 3, 5, 6, 7]);
        assert_eq!(steady_rounds(&pairs[..4], 0.1, 5), vec![0, 3]);
        // A slower level wins when more rounds ran at it.
        let slow: Vec<[Run; 2]> = (0..3)
            .map(|i| pair(i, (13000.0, 13000.0), (13000.0, 13000.0)))
            .chain([pair(3, (8000.0, 8000.0), (8000.0, 8000.0))])
            .collect();
        assert_eq!(steady_rounds(&slow, 0.1, 5), vec![0, 1, 2]);
    }

    fn quiet_runs(xen_hyper: f64) -> Vec<Run> {
        let mut runs = Vec::new();
        for r in 0..5 {
            runs.push(run(
                Side::Ours,
                r,
                &[
                    ("control_loop", 100.0),
                    ("null_hypercall", 50.0),
                    ("control_loop_end", 100.0),
                ],
            ));
            runs.push(run(
                Side::Xen,
                r,
                &[
                    ("control_loop", 101.0),
                    ("null_hypercall", xen_hyper + f64::from(r)),
                    ("control_loop_end", 100.0),
                ],
            ));
        }
        runs
    }

    #[test]
    fn scaling_rows_get_their_target_and_the_per_vcpu_throughput() {
        let mut runs = quiet_runs(100.0);
        for r in runs.iter_mut() {
            // Ours: 400 alone, 500 at two (0.80); Xen: 1000 and 2000 (0.50).
            let (one, two) = if r.side == Side::Ours {
                (400.0, 500.0)
            } else {
                (1000.0, 2000.0)
            };
            for (n, x) in [
                ("scale_null_hypercall_1vcpu", one),
                ("scale_null_hypercall_2vcpus", two),
                ("cross_cpu_evtchn_rtt", one),
            ] {
                r.report.metrics.push((
                    n.to_string(),
                    Measured::Value {
                        iters: 10,
                        median: x,
                        p10: x,
                        p90: x,
                        unit: "cycles".into(),
                    },
                ));
            }
        }
        let rep = Report::new(Conditions::default(), &runs, 0.2, 0.1);
        let row = |n: &str| rep.rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(
            row("scale_null_hypercall_2vcpus").target,
            Some(SCALING_TARGET)
        );
        assert_eq!(row("cross_cpu_evtchn_rtt").ratio, Some(0.4));
        assert_eq!(
            rep.per_vcpu_scaling(Side::Ours),
            [("null_hypercall", 0.8)],
            "mmu_update was not measured"
        );
        assert_eq!(rep.per_vcpu_scaling(Side::Xen), [("null_hypercall", 0.5)]);
        let md = markdown(&rep);
        assert!(
            md.contains("- `null_hypercall`: xen-like-hv 0.80, Xen 0.50 (**missed**)"),
            "{md}"
        );
        assert!(
            md.contains("- `mmu_update_b64`: xen-like-hv -, Xen -"),
            "{md}"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&rep).to_string()).unwrap();
        assert_eq!(j["per_vcpu_scaling"]["ours"]["null_hypercall"], 0.8);
        assert_eq!(j["per_vcpu_scaling"]["target"], 0.8);
    }

    #[test]
    fn floor_ratio_ours_only_rows_and_the_guard_show_in_the_report() {
        let mut runs = quiet_runs(100.0);
        for r in runs.iter_mut() {
            let v = if r.side == Side::Ours { 20.0 } else { 26.0 };
            for (n, x) in [("floor", 25.0), ("local_write", v)] {
                r.report.metrics.push((
                    n.to_string(),
                    Measured::Value {
                        iters: 10,
                        median: x,
                        p10: x,
                        p90: x,
                        unit: "cycles".into(),
                    },
                ));
            }
        }
        let mut rep = Report::new(Conditions::default(), &runs, 0.2, 0.1);
        assert_eq!(rep.floor_ratio(), Some(2.0));
        let row = |n: &str| rep.rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(row("floor").target, None);
        assert_eq!(row("local_write").target, None);
        let md = markdown(&rep);
        assert!(
            md.contains("| `floor` | 25 cyc (12 ns) | - | - | - | (ours only) |"),
            "{md}"
        );
        assert!(md.contains(
            "`null_hypercall / floor` on xen-like-hv: **2.00** (target ≤ 1.5: **missed**)"
        ));
        let j: serde_json::Value = serde_json::from_str(&json(&rep).to_string()).unwrap();
        assert_eq!(j["floor_ratio"]["value"], 2.0);
        let last = crate::bench_history::Published {
            file: "x.json".into(),
            date: "d".into(),
            commit: "c".into(),
            ratios: [("null_hypercall".to_string(), 0.4)].into_iter().collect(),
        };
        let changes = crate::bench_history::compare(&ratios(&rep), &last);
        rep.previous = Some((last, changes));
        assert_eq!(rep.regressions().len(), 1);
        let md = markdown(&rep);
        assert!(md.contains("**▲23% vs last**"), "{md}");
        assert!(md.contains("1 regression"));
        let j: serde_json::Value = serde_json::from_str(&json(&rep).to_string()).unwrap();
        assert_eq!(j["regressions"][0], "null_hypercall");
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(spread(&[1.0]), None);
        assert!((spread(&[90.0, 100.0, 110.0]).unwrap() - 0.2).abs() < 1e-9);
        // Five or more: the extremes are left out.
        assert!((spread(&[10.0, 90.0, 100.0, 110.0, 500.0]).unwrap() - 0.2).abs() < 1e-9);
    }

    #[test]
    fn a_quiet_run_is_reported_with_ratios() {
        let rep = Report::new(Conditions::default(), &quiet_runs(100.0), 0.2, 0.1);
        assert!(rep.refusals.is_empty(), "{:?}", rep.refusals);
        let row = rep
            .rows
            .iter()
            .find(|r| r.name == "null_hypercall")
            .unwrap();
        assert_eq!(row.xen.median, Some(102.0));
        assert!((row.ratio.unwrap() - 50.0 / 102.0).abs() < 1e-9);
        assert_eq!(row.met(), Some(true));
        assert_eq!(rep.tsc.map(|t| t.1), Some(Side::Xen));
        let md = markdown(&rep);
        assert!(md.contains("| `null_hypercall` | 50 cyc (25 ns) | 102 cyc (51 ns) | 0.490"));
        let svg = svg(&rep);
        assert!(svg.starts_with("<svg") && svg.contains("0.490×"));
        let j = json(&rep).to_string();
        assert!(j.contains("\"name\": \"null_hypercall\""));
        assert_eq!(ratios(&rep).len(), 3);
    }

    #[test]
    fn noise_is_refused_with_reasons() {
        // One round's Xen median far off: spread too large.
        let mut runs = quiet_runs(100.0);
        for (i, round) in [(1, 0), (3, 1)] {
            runs[i] = run(
                Side::Xen,
                round,
                &[
                    ("control_loop", 101.0),
                    ("null_hypercall", 200.0),
                    ("control_loop_end", 100.0),
                ],
            );
        }
        let rep = Report::new(Conditions::default(), &runs, 0.2, 0.1);
        assert!(
            rep.refusals
                .iter()
                .any(|r| r.contains("null_hypercall on Xen 4.17"))
        );
        // With enough steady metrics, one unstable metric is flagged, not refused.
        for r in runs.iter_mut() {
            for k in 0..8 {
                r.report.metrics.push((
                    format!("steady{k}"),
                    Measured::Value {
                        iters: 1,
                        median: 10.0,
                        p10: 10.0,
                        p90: 10.0,
                        unit: "cycles".into(),
                    },
                ));
            }
        }
        let rep = Report::new(Conditions::default(), &runs, 0.2, 0.1);
        assert!(rep.refusals.is_empty(), "{:?}", rep.refusals);
        assert_eq!(rep.unstable.len(), 1);
        assert!(markdown(&rep).contains("⚠ Unstable across rounds"));
        // The control differs between the hypervisors.
        let mut runs = quiet_runs(100.0);
        for r in runs.iter_mut().filter(|r| r.side == Side::Ours) {
            r.report.metrics[0].1 = Measured::Value {
                iters: 10,
                median: 130.0,
                p10: 130.0,
                p90: 130.0,
                unit: "cycles".into(),
            };
        }
        let rep = Report::new(Conditions::default(), &runs, 0.2, 0.1);
        assert!(rep.refusals.iter().any(|r| r.starts_with("control_loop:")));
        assert!(
            rep.refusals
                .iter()
                .any(|r| r.contains("changed during the run"))
        );
    }

    #[test]
    fn json_escapes() {
        let j = Json::obj(vec![("a\"b", Json::s("x\\y\n")), ("n", Json::Num(1.5))]);
        assert_eq!(
            j.to_string(),
            "{\n  \"a\\\"b\": \"x\\\\y\\n\",\n  \"n\": 1.5\n}\n"
        );
    }
}
