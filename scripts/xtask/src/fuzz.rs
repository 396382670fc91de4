//! `scripts/fuzz`: campaigns of the hostile-hypercall fuzzer (the `fuzz` test
//! guest, docs/reliability.md). Each seed boots once as dom0 and, with
//! `--domu`, once more as a boot-time domU beside a `ticker` dom0; COM1 tells
//! the outcome ([`classify`]). Every outcome that is not a pass is reported
//! with the seed and the command that reproduces it, and the run exits
//! non-zero.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{IsoSpec, Module, QemuConfig, RunOutput, run_qemu};
use xlhv_core::exit::QemuExit;

/// `scripts/fuzz` options.
#[derive(clap::Args, Clone, Debug)]
pub struct FuzzArgs {
    /// Seeds to run: `A..B` (inclusive), or one number.
    #[arg(long, default_value = "1..20")]
    pub seeds: String,
    /// Hypercalls per seed.
    #[arg(long, default_value_t = 2000)]
    pub count: u64,
    /// Also run each seed as a boot-time domU beside a ticking dom0.
    #[arg(long)]
    pub domu: bool,
    /// Only the domU runs (implies --domu).
    #[arg(long)]
    pub domu_only: bool,
    /// Give up on one boot after this many seconds (a hang).
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// QEMU memory.
    #[arg(long, default_value = "512M")]
    pub mem: String,
    /// CPU model.
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Where to keep the COM1 log of every run that did not pass.
    #[arg(long, default_value = "target/fuzz")]
    pub out: PathBuf,
}

/// How the fuzzer ran: as dom0 alone, or as domU 1 beside a ticker dom0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The fuzzer is dom0.
    Dom0,
    /// The fuzzer is boot-time domU 1; dom0 is `ticker`.
    Domu,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Dom0 => "dom0",
            Mode::Domu => "domu",
        }
    }
}

/// The outcome of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The fuzzer passed with this many calls, errors and faults, and every
    /// check of the hypervisor's log held.
    Pass {
        /// Hypercalls made.
        calls: u64,
        /// Of those, how many returned an error.
        errors: u64,
        /// Faults the fuzzer took in itself.
        faults: u64,
    },
    /// The fuzzer printed FAIL (an invariant broke): its line.
    GuestFail(String),
    /// The hypervisor panicked or took a fatal fault: the first report line.
    HvPanic(String),
    /// The deadline passed: the last line seen.
    Hang(String),
    /// A domain's frames did not all come back: the line that says so.
    Leak(String),
    /// Anything else (the fuzzer died without its line, the neighbour did not
    /// keep ticking, a wrong exit): what was missing.
    Other(String),
}

impl Outcome {
    /// A pass.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass { .. })
    }

    /// A short name.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Pass { .. } => "PASS",
            Outcome::GuestFail(_) => "guest FAIL",
            Outcome::HvPanic(_) => "hypervisor panic/fatal fault",
            Outcome::Hang(_) => "hang/timeout",
            Outcome::Leak(_) => "frame leak",
            Outcome::Other(_) => "other",
        }
    }
}

fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Classifies one boot from what COM1 printed and how QEMU ended.
pub fn classify(
    serial: &str,
    exit: Option<QemuExit>,
    timed_out: bool,
    mode: Mode,
    seed: u64,
    count: u64,
) -> Outcome {
    let lines: Vec<&str> = serial.lines().collect();
    let find = |needle: &str| lines.iter().copied().find(|l| l.contains(needle));
    if let Some(l) = find("xen-like-hv PANIC") {
        let detail = lines
            .iter()
            .skip_while(|x| !x.contains("xen-like-hv PANIC"))
            .nth(1)
            .unwrap_or(&l);
        return Outcome::HvPanic(detail.to_string());
    }
    if matches!(exit, Some(QemuExit::Panic | QemuExit::Fault)) {
        let l = lines
            .iter()
            .rev()
            .find(|l| l.starts_with("(XEN)"))
            .unwrap_or(&"");
        return Outcome::HvPanic(format!("exit {exit:?}; last hypervisor line: {l}"));
    }
    if let Some(l) = find("fuzz: FAIL") {
        return Outcome::GuestFail(l.to_string());
    }
    if timed_out {
        let last = lines.last().copied().unwrap_or("");
        return Outcome::Hang(format!("no end before the deadline; last line: {last}"));
    }
    // "frames leaked": a domain's frames went missing; "are back; N still
    // referenced": some are held elsewhere after its end.
    if let Some(l) = find("frames leaked").or_else(|| {
        lines
            .iter()
            .copied()
            .find(|l| l.contains(" frames of domain ") && l.contains(" are back;"))
    }) {
        return Outcome::Leak(l.to_string());
    }
    let want = format!("fuzz: PASS seed={seed} count={count} calls={count} ");
    let Some(pass) = find(&want) else {
        return Outcome::Other(format!("no line {want:?}"));
    };
    if mode == Mode::Domu && !pass.starts_with("(d1) ") {
        return Outcome::Other(format!("the PASS line is not domU 1's: {pass}"));
    }
    let (Some(calls), Some(errors), Some(faults)) = (
        field(pass, "calls"),
        field(pass, "errors"),
        field(pass, "faults"),
    ) else {
        return Outcome::Other(format!("cannot read the PASS line: {pass}"));
    };
    if exit != Some(QemuExit::Poweroff) {
        return Outcome::Other(format!("QEMU ended with {exit:?}, not a poweroff"));
    }
    if find("memory: all of dom0's frames are back").is_none() {
        return Outcome::Leak("no line \"memory: all of dom0's frames are back\"".into());
    }
    if mode == Mode::Domu {
        if find("ticker: PASS").is_none() {
            return Outcome::Other("the neighbour did not print \"ticker: PASS\"".into());
        }
        if !lines
            .iter()
            .any(|l| l.contains("memory: all ") && l.contains(" frames of domain 1 are back"))
        {
            return Outcome::Leak("no line \"memory: all N frames of domain 1 are back\"".into());
        }
    }
    Outcome::Pass {
        calls,
        errors,
        faults,
    }
}

/// Parses `A..B` (inclusive) or `A`.
pub fn parse_seeds(s: &str) -> Result<std::ops::RangeInclusive<u64>> {
    let (a, b) = s.split_once("..").unwrap_or((s, s));
    let a: u64 = a.trim().parse().with_context(|| format!("--seeds {s:?}"))?;
    let b: u64 = b
        .trim()
        .trim_start_matches('=')
        .parse()
        .with_context(|| format!("--seeds {s:?}"))?;
    if b < a {
        bail!("--seeds {s:?}: the range is empty");
    }
    Ok(a..=b)
}

/// The ticker's run time for a domU fuzzer of `count` calls: long enough
/// that the fuzzer ends first (about 1000 calls a second under TCG).
pub fn ticker_secs(count: u64) -> u64 {
    3 + count / 500
}

/// The modules for one boot.
pub fn modules(fuzz: &Path, ticker: &Path, mode: Mode, seed: u64, count: u64) -> Vec<Module> {
    match mode {
        Mode::Dom0 => vec![Module {
            path: fuzz.to_path_buf(),
            cmdline: format!("dom0 seed={seed} count={count}"),
        }],
        Mode::Domu => vec![
            Module {
                path: ticker.to_path_buf(),
                cmdline: format!("dom0 secs={}", ticker_secs(count)),
            },
            Module {
                path: fuzz.to_path_buf(),
                cmdline: format!("domu name=fuzz mem=16M \"cmdline=seed={seed} count={count}\""),
            },
        ],
    }
}

/// One boot: the outcome and the log.
pub fn run_one(
    hv: &Path,
    fuzz: &Path,
    ticker: &Path,
    mode: Mode,
    seed: u64,
    count: u64,
    args: &FuzzArgs,
) -> Result<(Outcome, RunOutput)> {
    let dir = crate::target_dir().join("fuzz-iso");
    std::fs::create_dir_all(&dir)?;
    let iso = dir.join(format!("{}.iso", mode.name()));
    let spec = IsoSpec {
        hypervisor: hv.to_path_buf(),
        cmdline: String::new(),
        modules: modules(fuzz, ticker, mode, seed, count),
    };
    crate::make_iso(&spec, &iso)?;
    let mut cfg = QemuConfig::new(iso);
    cfg.mem = args.mem.clone();
    cfg.cpu = args.cpu.clone();
    let out = run_qemu(&cfg, Duration::from_secs(args.timeout), |_| false)?;
    let o = classify(&out.serial, out.exit, out.timed_out, mode, seed, count);
    Ok((o, out))
}

/// `scripts/fuzz`.
pub fn main(args: FuzzArgs) -> Result<()> {
    let seeds = parse_seeds(&args.seeds)?;
    let hv = crate::build_hypervisor()?;
    let fuzz = crate::build_test_guest("fuzz")?;
    let ticker = crate::target_dir()
        .join(crate::KERNEL_TARGET)
        .join("release")
        .join("ticker");
    let mut modes = Vec::new();
    if !args.domu_only {
        modes.push(Mode::Dom0);
    }
    if args.domu || args.domu_only {
        modes.push(Mode::Domu);
    }
    let out_dir = if args.out.is_absolute() {
        args.out.clone()
    } else {
        crate::workspace_root().join(&args.out)
    };
    std::fs::create_dir_all(&out_dir)?;
    let start = Instant::now();
    let (mut runs, mut calls, mut errors, mut faults) = (0u64, 0u64, 0u64, 0u64);
    let mut bad = Vec::new();
    for seed in seeds.clone() {
        for &mode in &modes {
            let t = Instant::now();
            let (o, out) = run_one(&hv, &fuzz, &ticker, mode, seed, args.count, &args)?;
            runs += 1;
            match &o {
                Outcome::Pass {
                    calls: c,
                    errors: e,
                    faults: f,
                } => {
                    calls += c;
                    errors += e;
                    faults += f;
                    println!(
                        "seed {seed} {}: PASS calls={c} errors={e} faults={f} ({:.1} s)",
                        mode.name(),
                        t.elapsed().as_secs_f64()
                    );
                }
                o => {
                    let log = out_dir.join(format!("seed-{seed}-{}.log", mode.name()));
                    std::fs::write(&log, &out.serial).ok();
                    println!(
                        "seed {seed} {}: {}: {}\n  log: {}",
                        mode.name(),
                        o.kind(),
                        detail(o),
                        log.display()
                    );
                    bad.push((seed, mode, o.clone()));
                }
            }
        }
    }
    println!(
        "fuzz: {runs} boots of seeds {}..={} ({}), {} calls each: {} passed, {} did not; \
         {calls} calls made in passing runs ({errors} errors, {faults} faults in the guest); \
         {:.0} s",
        seeds.start(),
        seeds.end(),
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join("+"),
        args.count,
        runs - bad.len() as u64,
        bad.len(),
        start.elapsed().as_secs_f64()
    );
    if bad.is_empty() {
        return Ok(());
    }
    println!("not passing (reproduce with the command shown):");
    for (seed, mode, o) in &bad {
        let flag = if *mode == Mode::Domu {
            " --domu-only"
        } else {
            ""
        };
        println!(
            "  seed {seed} {}: {} -- scripts/fuzz --seeds {seed} --count {}{flag}",
            mode.name(),
            o.kind(),
            args.count
        );
    }
    bail!("{} of {runs} boots did not pass", bad.len())
}

fn detail(o: &Outcome) -> &str {
    match o {
        Outcome::Pass { .. } => "",
        Outcome::GuestFail(s)
        | Outcome::HvPanic(s)
        | Outcome::Hang(s)
        | Outcome::Leak(s)
        | Outcome::Other(s) => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASS0: &str = "(d0) fuzz: PASS seed=7 count=100 calls=100 errors=80 faults=9 multicall_entries=3\n\
        (XEN) domain 0 shut down: Poweroff\n\
        (XEN) memory: all of dom0's frames are back (1 free, as before it was built)\n";

    #[test]
    fn a_clean_dom0_run_passes_with_its_figures() {
        let o = classify(PASS0, Some(QemuExit::Poweroff), false, Mode::Dom0, 7, 100);
        assert_eq!(
            o,
            Outcome::Pass {
                calls: 100,
                errors: 80,
                faults: 9
            }
        );
    }

    #[test]
    fn a_pass_for_another_seed_or_count_does_not_count() {
        let o = classify(PASS0, Some(QemuExit::Poweroff), false, Mode::Dom0, 8, 100);
        assert!(matches!(o, Outcome::Other(_)), "{o:?}");
        let o = classify(PASS0, Some(QemuExit::Poweroff), false, Mode::Dom0, 7, 200);
        assert!(matches!(o, Outcome::Other(_)), "{o:?}");
    }

    #[test]
    fn panics_fails_hangs_and_leaks_are_told_apart() {
        let panic = "(XEN) ----[ xen-like-hv PANIC ]----\n(XEN) panic at mm.rs:1:2: boom\n";
        assert_eq!(
            classify(panic, Some(QemuExit::Panic), false, Mode::Dom0, 1, 1),
            Outcome::HvPanic("(XEN) panic at mm.rs:1:2: boom".into())
        );
        assert!(matches!(
            classify("(XEN) x\n", Some(QemuExit::Fault), false, Mode::Dom0, 1, 1),
            Outcome::HvPanic(_)
        ));
        let fail = "(d0) fuzz: FAIL seed=1 sentinel\n";
        assert_eq!(
            classify(fail, Some(QemuExit::Dom0Crash), false, Mode::Dom0, 1, 1),
            Outcome::GuestFail(fail.trim_end().into())
        );
        assert!(matches!(
            classify("(d0) fuzz: seed=1\n", None, true, Mode::Dom0, 1, 1),
            Outcome::Hang(_)
        ));
        let leak = PASS0.replace(
            "all of dom0's frames are back (1 free, as before it was built)",
            "domain 0 destroyed: 5 frames returned, 2 still referenced; 9 frames free",
        );
        assert!(matches!(
            classify(&leak, Some(QemuExit::Poweroff), false, Mode::Dom0, 7, 100),
            Outcome::Leak(_)
        ));
        let no_back = PASS0.replace("memory: all of dom0's frames are back", "x");
        assert!(matches!(
            classify(
                &no_back,
                Some(QemuExit::Poweroff),
                false,
                Mode::Dom0,
                7,
                100
            ),
            Outcome::Leak(_)
        ));
    }

    #[test]
    fn a_domu_run_needs_the_ticker_and_its_frames_back() {
        let ok = "(d1) fuzz: PASS seed=3 count=10 calls=10 errors=1 faults=0 x=1\n\
            (XEN) memory: all 4097 frames of domain 1 are back\n\
            (d0) ticker: PASS rate_hz=100 ticks=300 secs=3\n\
            (XEN) memory: all of dom0's frames are back (1 free)\n";
        assert!(classify(ok, Some(QemuExit::Poweroff), false, Mode::Domu, 3, 10).passed());
        let no_tick = ok.replace("ticker: PASS", "ticker: FAIL");
        assert!(matches!(
            classify(&no_tick, Some(QemuExit::Poweroff), false, Mode::Domu, 3, 10),
            Outcome::Other(_)
        ));
        let leak = ok.replace(
            "all 4097 frames of domain 1 are back",
            "4000 frames of domain 1 are back; 97 still referenced",
        );
        assert!(matches!(
            classify(&leak, Some(QemuExit::Poweroff), false, Mode::Domu, 3, 10),
            Outcome::Leak(_)
        ));
        let as_dom0 = ok.replace("(d1) fuzz", "(d0) fuzz");
        assert!(matches!(
            classify(&as_dom0, Some(QemuExit::Poweroff), false, Mode::Domu, 3, 10),
            Outcome::Other(_)
        ));
    }

    #[test]
    fn seeds_parse_as_inclusive_ranges() {
        assert_eq!(parse_seeds("1..20").unwrap(), 1..=20);
        assert_eq!(parse_seeds("5").unwrap(), 5..=5);
        assert_eq!(parse_seeds("3..=4").unwrap(), 3..=4);
        assert!(parse_seeds("4..3").is_err());
        assert!(parse_seeds("x").is_err());
    }
}
