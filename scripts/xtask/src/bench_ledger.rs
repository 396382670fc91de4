//! `xtask ledger`: the instruction ledger. Boots the bench guest in its `ledger` mode
//! under QEMU with the ledger plugin (`scripts/ledger-plugin`), which counts every
//! instruction each of the guest's sections executes, per address; reports, per
//! hot-path metric, the hypervisor's and the guest's instructions per operation, the
//! instructions that cost far more than others under TCG (MSR and control-register
//! accesses, SWAPGS, SYSRET, IRETQ, locked operations, ...), and where in the
//! hypervisor's source the instructions go. Counts do not depend on how busy the host
//! is, unlike the timings of `xtask bench`. Method: docs/bench.md.

use anyhow::{Context, Result, bail};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::xen::{self, XenEnd};
use crate::{IsoSpec, Module, QemuConfig};

/// The hypervisor's part of the address space: L4 slots 256-271, where both
/// xen-like-hv and Xen live and no PV guest can run.
pub const HV_RANGE: std::ops::Range<u64> = 0xFFFF_8000_0000_0000..0xFFFF_8800_0000_0000;
/// Tag of the guest's section lines (`pv-bench`'s `ledger::SECTION_TAG`).
pub const SECTION_TAG: &str = "ledger-section";

/// Options of `xtask ledger`.
#[derive(clap::Args, Clone, Debug)]
pub struct LedgerArgs {
    /// Measure this xen-like-hv ELF instead of building the workspace's (another
    /// commit's, to compare).
    #[arg(long, value_name = "PATH")]
    pub hypervisor: Option<PathBuf>,
    /// Measure real Xen 4.17 instead (Debian's package, as `xtask bench` fetches it).
    #[arg(long)]
    pub xen: bool,
    /// Name of this ledger: written to bench/raw/ledger/NAME.{json,md}.
    #[arg(long, default_value = "current")]
    pub name: String,
    /// A ledger JSON to compare with (a "before" column and the change).
    #[arg(long, value_name = "JSON")]
    pub baseline: Option<PathBuf>,
    /// Functions and source lines listed per metric.
    #[arg(long, default_value_t = 12)]
    pub top: usize,
    /// QEMU CPU model.
    #[arg(long, default_value = "max")]
    pub cpu: String,
    /// Seconds before the boot is abandoned.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Do not boot: report again from the counts and the log NAME's last run left
    /// (target/ledger/NAME.counts, bench/raw/ledger/NAME.log).
    #[arg(long)]
    pub reuse: bool,
}

/// One address's count in one section run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Guest virtual address.
    pub pc: u64,
    /// Executions in the run.
    pub count: u64,
    /// QEMU's disassembly.
    pub disas: String,
}

/// One run of a section: its instructions, and the hypervisor's data pages with their
/// accesses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SectionRun {
    /// Every address that executed.
    pub insns: Vec<Insn>,
    /// Each 4 KiB data page the hypervisor read or wrote, with the accesses.
    pub pages: Vec<(u64, u64)>,
}

/// Every run of every section, by section id, in the order they ended.
pub type Sections = BTreeMap<u32, Vec<SectionRun>>;

/// Parses the plugin's output file.
pub fn parse_sections(text: &str) -> Result<Sections> {
    let mut out = Sections::new();
    let mut cur: Option<(u32, SectionRun)> = None;
    for (n, line) in text.lines().enumerate() {
        if let Some(id) = line.strip_prefix("section ") {
            cur = Some((id.trim().parse()?, SectionRun::default()));
        } else if let Some(id) = line.strip_prefix("end ") {
            let (open, run) = cur.take().context("'end' without 'section'")?;
            if id.trim().parse::<u32>()? != open {
                bail!("line {}: section {open} ends as {id}", n + 1);
            }
            out.entry(open).or_default().push(run);
        } else if let (Some(p), Some((_, run))) = (line.strip_prefix("page "), cur.as_mut()) {
            let (a, c) = p.split_once(' ').context("page line")?;
            run.pages
                .push((u64::from_str_radix(a, 16)?, c.trim().parse()?));
        } else if let Some((_, run)) = cur.as_mut() {
            let insns = &mut run.insns;
            let mut w = line.splitn(3, ' ');
            let (Some(pc), Some(count)) = (w.next(), w.next()) else {
                bail!("line {}: not 'PC COUNT DISAS': {line:?}", n + 1);
            };
            insns.push(Insn {
                pc: u64::from_str_radix(pc, 16)?,
                count: count.parse()?,
                disas: w.next().unwrap_or("").to_string(),
            });
        }
    }
    Ok(out)
}

/// What the guest said a section is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionName {
    /// Section id.
    pub id: u32,
    /// Metric name.
    pub metric: String,
    /// Operations per run.
    pub ops: u64,
}

/// The guest's `ledger-section` lines.
pub fn parse_names(serial: &str) -> Vec<SectionName> {
    serial
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find(SECTION_TAG)? + SECTION_TAG.len()..];
            let mut f = HashMap::new();
            for w in rest.split_whitespace() {
                if let Some((k, v)) = w.split_once('=') {
                    f.insert(k, v);
                }
            }
            Some(SectionName {
                id: f.get("id")?.parse().ok()?,
                metric: (*f.get("metric")?).to_string(),
                ops: f.get("ops")?.parse().ok()?,
            })
        })
        .collect()
}

/// Instructions that cost far more than a plain one under TCG (a helper call, a
/// translation-block end or a TLB flush), by the class they are reported as.
pub fn costly_class(disas: &str) -> Option<&'static str> {
    let d = disas.trim();
    let mnemonic = d.split_whitespace().next().unwrap_or("");
    let ops = d.get(mnemonic.len()..).unwrap_or("");
    Some(match mnemonic {
        "rdmsr" => "rdmsr",
        "wrmsr" => "wrmsr",
        "swapgs" => "swapgs",
        "sysretq" | "sysretl" | "sysret" => "sysret",
        "iretq" | "iret" => "iretq",
        "syscall" => "syscall",
        "rdtsc" | "rdtscp" => "rdtsc",
        "lfence" | "mfence" | "sfence" => "fence",
        "invlpg" => "invlpg",
        "cpuid" => "cpuid",
        "fxsave64" | "fxrstor64" | "fxsave" | "fxrstor" | "xsave" | "xrstor" => "fxsave/fxrstor",
        "hlt" => "hlt",
        "inb" | "inw" | "inl" | "outb" | "outw" | "outl" | "in" | "out" => "port I/O",
        "lock" => "locked",
        m if m.starts_with("xchg") && ops.contains('(') => "locked",
        m if m.starts_with("mov") && ops.contains("%cr") => {
            if ops.trim_end().ends_with("%cr0")
                || ops.trim_end().ends_with("%cr3")
                || ops.trim_end().ends_with("%cr4")
            {
                "mov to cr"
            } else {
                "mov from cr"
            }
        }
        m if m.starts_with("mov") && (ops.contains("%db") || ops.contains("%dr")) => "debug reg",
        "lgdt" | "lidt" | "lldt" | "ltr" => "descriptor table",
        // Where a translation block ends without a known successor: TCG looks the next
        // one up (a helper call) or leaves its execution loop.
        "retq" | "ret" => "indirect jump",
        m if (m.starts_with("call") || m.starts_with("jmp"))
            && ops.trim_start().starts_with('*') =>
        {
            "indirect jump"
        }
        _ => return None,
    })
}

/// One metric's figures.
#[derive(Clone, Debug, Default)]
pub struct MetricLedger {
    /// Metric name.
    pub metric: String,
    /// Hypervisor instructions per operation (the run with the fewest).
    pub hv: f64,
    /// Guest instructions per operation, in that run.
    pub guest: f64,
    /// Costly hypervisor instructions per operation, by class.
    pub costly: BTreeMap<String, f64>,
    /// Hypervisor instructions per operation, by function (innermost, inlined ones
    /// included).
    pub functions: Vec<(String, f64)>,
    /// Hypervisor instructions per operation, by source line.
    pub lines: Vec<(String, f64)>,
    /// Hypervisor instructions of every run, per operation (the spread shows
    /// interrupts that landed in a run).
    pub runs: Vec<f64>,
    /// Distinct 4 KiB pages of hypervisor code the operation executed.
    pub code_pages: usize,
    /// Distinct 4 KiB data pages the hypervisor read or wrote (each a software-TLB
    /// entry under TCG).
    pub data_pages: usize,
}

/// The ledger's JSON (the workspace has no serde): written by [`json::write`], read
/// back by [`json::read`] for comparisons.
pub mod json {
    use super::MetricLedger;
    use anyhow::{Context, Result};
    use std::collections::BTreeMap;

    fn esc(s: &str) -> String {
        let mut o = String::new();
        for c in s.chars() {
            match c {
                '"' => o.push_str("\\\""),
                '\\' => o.push_str("\\\\"),
                c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
                c => o.push(c),
            }
        }
        o
    }

    /// The ledger as JSON: `{"name": .., "metrics": [{"metric", "hv", "guest",
    /// "costly": {..}, "functions": [[name, n], ..], "lines": [..], "runs": [..]}]}`.
    pub fn write(name: &str, hypervisor: &str, metrics: &[MetricLedger]) -> String {
        let pairs = |v: &[(String, f64)]| {
            v.iter()
                .map(|(k, n)| format!("[\"{}\", {n:.2}]", esc(k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "{{\n  \"name\": \"{}\",\n  \"hypervisor\": \"{}\",\n  \"metrics\": [\n",
            esc(name),
            esc(hypervisor)
        );
        for (i, m) in metrics.iter().enumerate() {
            let costly = m
                .costly
                .iter()
                .map(|(k, n)| format!("\"{}\": {n:.2}", esc(k)))
                .collect::<Vec<_>>()
                .join(", ");
            let runs = m
                .runs
                .iter()
                .map(|n| format!("{n:.2}"))
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(
                "    {{\"metric\": \"{}\", \"hv\": {:.2}, \"guest\": {:.2}, \"code_pages\": {}, \"data_pages\": {}, \"costly\": {{{costly}}}, \"runs\": [{runs}],\n     \"functions\": [{}],\n     \"lines\": [{}]}}{}\n",
                esc(&m.metric),
                m.hv,
                m.guest,
                m.code_pages,
                m.data_pages,
                pairs(&m.functions),
                pairs(&m.lines),
                if i + 1 < metrics.len() { "," } else { "" }
            ));
        }
        s.push_str("  ]\n}\n");
        s
    }

    /// Reads back what [`write`] wrote: metric, hv, guest and the costly classes (all
    /// a comparison needs).
    pub fn read(text: &str) -> Result<Vec<MetricLedger>> {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.trim_start().starts_with("{\"metric\""))
        {
            let field = |key: &str| -> Option<&str> {
                let at = line.find(&format!("\"{key}\": "))? + key.len() + 4;
                let rest = &line[at..];
                let end = rest.find([',', '}']).unwrap_or(rest.len());
                Some(rest[..end].trim())
            };
            let metric = field("metric")
                .context("metric")?
                .trim_matches('"')
                .to_string();
            let hv = field("hv").context("hv")?.parse()?;
            let guest = field("guest").context("guest")?.parse()?;
            let pages = |k: &str| field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut costly = BTreeMap::new();
            if let Some(at) = line.find("\"costly\": {") {
                let rest = &line[at + 11..];
                let body = &rest[..rest.find('}').unwrap_or(0)];
                for kv in body.split(", ").filter(|s| !s.is_empty()) {
                    if let Some((k, v)) = kv.split_once(": ") {
                        costly.insert(k.trim_matches('"').to_string(), v.parse()?);
                    }
                }
            }
            out.push(MetricLedger {
                metric,
                hv,
                guest,
                costly,
                code_pages: pages("code_pages"),
                data_pages: pages("data_pages"),
                ..Default::default()
            });
        }
        Ok(out)
    }
}

/// Source function and line of each hypervisor address (`addr2line -f -i -C`): the
/// innermost frame that is the hypervisor's own code, so that inlined library code
/// (iterators, `Option`, atomics) is charged to the line of ours that used it.
fn symbolize(elf: &Path, pcs: &[u64]) -> HashMap<u64, (String, String)> {
    let mut out = HashMap::new();
    if pcs.is_empty() {
        return out;
    }
    let mut cmd = Command::new("addr2line");
    cmd.args(["-a", "-f", "-i", "-C", "-e"]).arg(elf);
    for pc in pcs {
        cmd.arg(format!("{pc:#x}"));
    }
    let Ok(o) = cmd.output() else {
        eprintln!("ledger: addr2line (binutils) not found: no function names");
        return out;
    };
    let text = String::from_utf8_lossy(&o.stdout);
    let mut lines = text.lines().peekable();
    while let Some(addr) = lines.next() {
        let Some(pc) = addr
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        // Frames, innermost first: (function, file:line) pairs until the next address.
        let mut frames = Vec::new();
        while lines.peek().is_some_and(|l| !l.starts_with("0x")) {
            let func = lines.next().unwrap_or("?");
            let file = lines.next().unwrap_or("?");
            frames.push((func, file));
        }
        let own =
            |f: &str| !f.starts_with("/rustc/") && !f.contains("/.cargo/") && !f.starts_with("??");
        let pick = frames
            .iter()
            .find(|(_, f)| own(f))
            .or(frames.last())
            .copied()
            .unwrap_or(("?", "?"));
        out.insert(pc, (short_fn(pick.0), short_file(pick.1)));
    }
    out
}

/// A function name without its crate path's hash and generics noise.
fn short_fn(f: &str) -> String {
    let f = f.split(" (discriminator").next().unwrap_or(f);
    let f = match f.rfind("::h") {
        Some(i) if f[i + 3..].len() == 16 => &f[..i],
        _ => f,
    };
    f.replace("xlhv_core::", "").replace("xen_like_hv::", "")
}

/// A source position relative to the workspace.
fn short_file(f: &str) -> String {
    let f = f.split(" (discriminator").next().unwrap_or(f);
    let root = crate::workspace_root();
    let root = root.to_string_lossy();
    f.strip_prefix(&*root)
        .map(|s| s.trim_start_matches('/').to_string())
        .unwrap_or_else(|| {
            // Library code: keep the crate and file.
            match f.find("/src/") {
                Some(i) => {
                    let head = &f[..i];
                    let krate = head.rsplit('/').next().unwrap_or(head);
                    format!("{krate}/{}", &f[i + 5..])
                }
                None => f.to_string(),
            }
        })
}

/// Sums one run's counts: (hypervisor, guest) instructions.
fn totals(run: &SectionRun) -> (u64, u64) {
    run.insns.iter().fold((0, 0), |(h, g), i| {
        if HV_RANGE.contains(&i.pc) {
            (h + i.count, g)
        } else {
            (h, g + i.count)
        }
    })
}

/// Builds each metric's ledger from the sections and their names.
pub fn ledgers(
    sections: &Sections,
    names: &[SectionName],
    symbols: &HashMap<u64, (String, String)>,
    top: usize,
) -> Vec<MetricLedger> {
    let mut out = Vec::new();
    for n in names {
        let Some(runs) = sections.get(&n.id) else {
            continue;
        };
        let ops = n.ops.max(1) as f64;
        let Some(best) = runs.iter().min_by_key(|r| totals(r)) else {
            continue;
        };
        let (hv, guest) = totals(best);
        let mut costly = BTreeMap::new();
        let mut functions: HashMap<String, u64> = HashMap::new();
        let mut lines: HashMap<String, u64> = HashMap::new();
        let mut code: Vec<u64> = best
            .insns
            .iter()
            .filter(|i| HV_RANGE.contains(&i.pc))
            .map(|i| i.pc >> 12)
            .collect();
        code.sort_unstable();
        code.dedup();
        for i in best.insns.iter().filter(|i| HV_RANGE.contains(&i.pc)) {
            if let Some(c) = costly_class(&i.disas) {
                *costly.entry(c.to_string()).or_insert(0.0) += i.count as f64 / ops;
            }
            let (f, l) = symbols
                .get(&i.pc)
                .cloned()
                .unwrap_or_else(|| (format!("{:#x}", i.pc), "?".into()));
            *functions.entry(f).or_default() += i.count;
            *lines.entry(l).or_default() += i.count;
        }
        let ranked = |m: HashMap<String, u64>| {
            let mut v: Vec<(String, f64)> =
                m.into_iter().map(|(k, c)| (k, c as f64 / ops)).collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            v.truncate(top);
            v
        };
        out.push(MetricLedger {
            metric: n.metric.clone(),
            hv: hv as f64 / ops,
            guest: guest as f64 / ops,
            costly,
            functions: ranked(functions),
            lines: ranked(lines),
            runs: runs.iter().map(|r| totals(r).0 as f64 / ops).collect(),
            code_pages: code.len(),
            data_pages: best.pages.len(),
        });
    }
    out
}

fn costly_text(c: &BTreeMap<String, f64>) -> String {
    let v: Vec<String> = c
        .iter()
        .filter(|(_, n)| **n >= 0.05)
        .map(|(k, n)| format!("{} {k}", trim(*n)))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(", ")
    }
}

fn trim(n: f64) -> String {
    if (n - n.round()).abs() < 0.05 {
        format!("{}", n.round())
    } else {
        format!("{n:.1}")
    }
}

/// The ledger as Markdown: the summary table (with a "before" column when a baseline
/// is given), then each metric's functions and lines.
pub fn markdown(
    name: &str,
    hypervisor: &str,
    metrics: &[MetricLedger],
    baseline: Option<&[MetricLedger]>,
) -> String {
    let mut s = format!(
        "# Instruction ledger: {name}\n\nHypervisor: `{hypervisor}`. Per operation, the run with the fewest hypervisor instructions of each section (docs/bench.md, \"The instruction ledger\").\n\n"
    );
    let before = |m: &str| baseline.and_then(|b| b.iter().find(|x| x.metric == m));
    let pages = |m: &MetricLedger| format!("{} / {}", m.code_pages, m.data_pages);
    if baseline.is_some() {
        s.push_str("| metric | hypervisor insns | before | change | guest insns | hypervisor pages code / data | before | costly (hypervisor) | before |\n|---|---:|---:|---:|---:|---:|---:|---|---|\n");
    } else {
        s.push_str("| metric | hypervisor insns | guest insns | hypervisor pages code / data | costly (hypervisor) |\n|---|---:|---:|---:|---|\n");
    }
    for m in metrics {
        match (baseline, before(&m.metric)) {
            (Some(_), Some(b)) => {
                let change = if b.hv > 0.0 {
                    format!("{:+.1}%", (m.hv / b.hv - 1.0) * 100.0)
                } else {
                    "-".into()
                };
                s.push_str(&format!(
                    "| `{}` | {} | {} | {change} | {} | {} | {} | {} | {} |\n",
                    m.metric,
                    trim(m.hv),
                    trim(b.hv),
                    trim(m.guest),
                    pages(m),
                    pages(b),
                    costly_text(&m.costly),
                    costly_text(&b.costly)
                ));
            }
            (Some(_), None) => s.push_str(&format!(
                "| `{}` | {} | - | - | {} | {} | - | {} | - |\n",
                m.metric,
                trim(m.hv),
                trim(m.guest),
                pages(m),
                costly_text(&m.costly)
            )),
            (None, _) => s.push_str(&format!(
                "| `{}` | {} | {} | {} | {} |\n",
                m.metric,
                trim(m.hv),
                trim(m.guest),
                pages(m),
                costly_text(&m.costly)
            )),
        }
    }
    for m in metrics.iter().filter(|m| !m.functions.is_empty()) {
        let runs: Vec<String> = m.runs.iter().map(|r| trim(*r)).collect();
        s.push_str(&format!(
            "\n## `{}`: {} hypervisor instructions per operation (runs: {})\n\n| function (innermost) | insns | | source line | insns |\n|---|---:|---|---|---:|\n",
            m.metric,
            trim(m.hv),
            runs.join(", ")
        ));
        let rows = m.functions.len().max(m.lines.len());
        for i in 0..rows {
            let (f, fc) = m
                .functions
                .get(i)
                .map_or((String::new(), String::new()), |(f, c)| {
                    (format!("`{f}`"), trim(*c))
                });
            let (l, lc) = m
                .lines
                .get(i)
                .map_or((String::new(), String::new()), |(l, c)| {
                    (format!("`{l}`"), trim(*c))
                });
            s.push_str(&format!("| {f} | {fc} | | {l} | {lc} |\n"));
        }
    }
    s
}

/// Builds the plugin (a host cdylib) and returns its path.
pub fn build_plugin() -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["build", "--quiet", "--release", "-p", "xlhv-ledger-plugin"])
        .status()
        .context("running cargo to build the ledger plugin")?;
    if !status.success() {
        bail!("building xlhv-ledger-plugin failed ({status})");
    }
    let path = crate::target_dir()
        .join("release")
        .join("libxlhv_ledger_plugin.so");
    if !path.is_file() {
        bail!("cargo built the plugin but {} is missing", path.display());
    }
    Ok(path)
}

/// `xtask ledger`.
pub fn main(args: LedgerArgs) -> Result<()> {
    let plugin = build_plugin()?;
    let guest = crate::build_kernel("pv-bench", "bench")?;
    let work = crate::target_dir().join("ledger");
    std::fs::create_dir_all(&work)?;
    let iso = work.join(format!("{}.iso", args.name));
    let (hv_elf, label) = if args.xen {
        let img = xen::xen_image()?;
        let label = img.package.clone();
        crate::make_iso(
            &IsoSpec {
                hypervisor: img.path.clone(),
                cmdline: xen::xen_cmdline("64M", ""),
                modules: vec![Module {
                    path: guest.clone(),
                    cmdline: "dom0 ledger".into(),
                }],
            },
            &iso,
        )?;
        (None, label)
    } else {
        let hv = match &args.hypervisor {
            Some(p) => p.clone(),
            None => crate::build_hypervisor()?,
        };
        crate::make_iso(
            &IsoSpec {
                hypervisor: hv.clone(),
                cmdline: "dom0_mem=64M".into(),
                modules: vec![Module {
                    path: guest.clone(),
                    cmdline: "dom0 ledger".into(),
                }],
            },
            &iso,
        )?;
        let label = hv.display().to_string();
        (Some(hv), label)
    };
    let counts = work.join(format!("{}.counts", args.name));
    let out_dir = crate::workspace_root().join("bench/raw/ledger");
    std::fs::create_dir_all(&out_dir)?;
    let log = out_dir.join(format!("{}.log", args.name));
    let serial = if args.reuse {
        std::fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?
    } else {
        let _ = std::fs::remove_file(&counts);
        let mut cfg = QemuConfig::new(iso);
        cfg.cpu = args.cpu.clone();
        cfg.extra = vec![
            "-plugin".into(),
            format!(
                "{},out={}",
                plugin.display(),
                counts.display().to_string().replace(',', ",,")
            ),
        ];
        eprintln!("ledger: booting {label} with the ledger plugin");
        let run = crate::run_qemu(&cfg, Duration::from_secs(args.timeout), |l| {
            l.contains("bench: done:") || XenEnd::of_line(l).is_some()
        })?;
        std::fs::write(&log, &run.serial)?;
        if !run.serial.contains("ledger-done") {
            bail!(
                "the guest did not finish its ledger sections (log: {})\n{}",
                log.display(),
                run.stderr.trim()
            );
        }
        run.serial
    };
    if let Some(f) = serial
        .lines()
        .find(|l| l.contains("ledger-done") && !l.contains("failed=0"))
    {
        eprintln!("ledger: warning: some operations failed: {f}");
    }
    let text = std::fs::read_to_string(&counts)
        .with_context(|| format!("reading {}", counts.display()))?;
    let sections = parse_sections(&text)?;
    let names = parse_names(&serial);
    let mut pcs: Vec<u64> = sections
        .values()
        .flatten()
        .flat_map(|r| r.insns.iter())
        .map(|i| i.pc)
        .filter(|pc| HV_RANGE.contains(pc))
        .collect();
    pcs.sort_unstable();
    pcs.dedup();
    let symbols = match &hv_elf {
        Some(elf) => symbolize(elf, &pcs),
        None => HashMap::new(),
    };
    let metrics = ledgers(&sections, &names, &symbols, args.top);
    let baseline = match &args.baseline {
        Some(p) => Some(json::read(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let md = markdown(&args.name, &label, &metrics, baseline.as_deref());
    std::fs::write(
        out_dir.join(format!("{}.json", args.name)),
        json::write(&args.name, &label, &metrics),
    )?;
    std::fs::write(out_dir.join(format!("{}.md", args.name)), &md)?;
    println!("{md}");
    eprintln!(
        "ledger: written to {}/{}.{{md,json}}",
        out_dir.display(),
        args.name
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_parse_and_the_fewest_run_wins() {
        let text = "section 3\nffff82d080001000 400 swapgs\nffff82d080001004 200 rdmsr\n4000 600 syscall\npage ffff830000002000 7\nend 3\n\
                    section 3\nffff82d080001000 700 swapgs\n4000 600 syscall\nend 3\n";
        let s = parse_sections(text).unwrap();
        assert_eq!(s[&3].len(), 2);
        let names = parse_names(
            "(d0) ledger-section id=3 metric=null_hypercall ops=200 repeats=2\nother\n",
        );
        assert_eq!(
            names,
            vec![SectionName {
                id: 3,
                metric: "null_hypercall".into(),
                ops: 200
            }]
        );
        let m = ledgers(&s, &names, &HashMap::new(), 5);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].hv, 3.0);
        assert_eq!(m[0].guest, 3.0);
        assert_eq!(m[0].costly["swapgs"], 2.0);
        assert_eq!(m[0].costly["rdmsr"], 1.0);
        assert_eq!(m[0].runs, vec![3.0, 3.5]);
        assert_eq!((m[0].code_pages, m[0].data_pages), (1, 1));
        let back = json::read(&json::write("x", "hv", &m)).unwrap();
        assert_eq!(back[0].metric, "null_hypercall");
        assert_eq!(back[0].hv, 3.0);
        assert_eq!(back[0].costly["rdmsr"], 1.0);
        assert_eq!(back[0].data_pages, 1);
        assert!(markdown("x", "hv", &m, Some(&back)).contains("+0.0%"));
    }

    #[test]
    fn bad_sections_are_refused() {
        assert!(parse_sections("section 1\nend 2\n").is_err());
        assert!(parse_sections("end 2\n").is_err());
        assert!(parse_sections("section 1\nzz 1 nop\nend 1\n").is_err());
    }

    #[test]
    fn costly_instructions_are_classed() {
        assert_eq!(costly_class("rdmsr"), Some("rdmsr"));
        assert_eq!(costly_class("movq %rax, %cr3"), Some("mov to cr"));
        assert_eq!(costly_class("movq %cr2, %rax"), Some("mov from cr"));
        assert_eq!(costly_class("lock xaddq %rax, (%rcx)"), Some("locked"));
        assert_eq!(costly_class("xchgq %rax, (%rcx)"), Some("locked"));
        assert_eq!(costly_class("xchgq %rax, %rcx"), None);
        assert_eq!(costly_class("movq %rax, %rcx"), None);
        assert_eq!(costly_class("sysretq"), Some("sysret"));
        assert_eq!(costly_class("retq"), Some("indirect jump"));
        assert_eq!(costly_class("callq *%r14"), Some("indirect jump"));
        assert_eq!(costly_class("callq 0x1234"), None);
    }
}
