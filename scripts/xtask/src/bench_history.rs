//! The benchmark's memory: every published run in `bench/history/` (one JSON each, a
//! copy of that run's `bench/results.json`), the regression guard that compares a new
//! run's ratios with the last published one, and the README's performance table, which
//! is generated from `bench/results.json` and never typed by hand (`xtask
//! readme-table`). Method: docs/bench.md.

use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::bench_report::CONTROLS;

/// Where the published runs are kept, relative to the workspace.
pub const HISTORY_DIR: &str = "bench/history";
/// A ratio ours/Xen more than this much above the last published one is a regression.
pub const REGRESSION: f64 = 0.10;

/// A published run, as the guard reads it back.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// Its file in [`HISTORY_DIR`].
    pub file: String,
    /// When it was measured.
    pub date: String,
    /// At which commit.
    pub commit: String,
    /// Ratio ours/Xen of each metric that has one.
    pub ratios: BTreeMap<String, f64>,
}

/// Reads a results JSON (`bench/results.json` or a history entry).
pub fn read_published(text: &str, file: &str) -> Result<Published> {
    let v: Value = serde_json::from_str(text).with_context(|| format!("parsing {file}"))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let mut ratios = BTreeMap::new();
    for m in v
        .get("metrics")
        .and_then(Value::as_array)
        .with_context(|| format!("{file}: no metrics"))?
    {
        if let (Some(name), Some(r)) = (
            m.get("name").and_then(Value::as_str),
            m.get("ratio").and_then(Value::as_f64),
        ) {
            ratios.insert(name.to_string(), r);
        }
    }
    Ok(Published {
        file: file.to_string(),
        date: s("date"),
        commit: s("commit"),
        ratios,
    })
}

/// The history file name of a run measured at `date` ("2026-11-24 10:55 UTC") at
/// `commit`: names sort in time order.
pub fn history_name(date: &str, commit: &str) -> String {
    let stamp: String = date
        .trim_end_matches(" UTC")
        .chars()
        .map(|c| match c {
            ' ' => 'T',
            ':' => '-',
            c => c,
        })
        .collect();
    let commit: String = commit
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    format!("{stamp}Z-{commit}.json")
}

/// The published runs in `dir`, oldest first.
pub fn history_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    v.sort();
    Ok(v)
}

/// The last published run in `dir`, if any.
pub fn last_published(dir: &Path) -> Result<Option<Published>> {
    let Some(p) = history_files(dir)?.pop() else {
        return Ok(None);
    };
    let name = p
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    read_published(&text, &name).map(Some)
}

/// Records a published run (the text of its results.json) in `dir`; returns the file.
pub fn record(dir: &Path, results_json: &str) -> Result<PathBuf> {
    let p = read_published(results_json, "results.json")?;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(history_name(&p.date, &p.commit));
    std::fs::write(&path, results_json)?;
    Ok(path)
}

/// One metric's ratio now against the last published run.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Metric name.
    pub metric: String,
    /// Ratio in the last published run.
    pub before: f64,
    /// Ratio now.
    pub after: f64,
}

impl Change {
    /// after / before − 1 (positive: worse).
    pub fn relative(&self) -> f64 {
        self.after / self.before - 1.0
    }

    /// More than [`REGRESSION`] worse.
    pub fn regressed(&self) -> bool {
        self.before > 0.0 && self.relative() > REGRESSION
    }
}

/// Every metric with a ratio now and in `last` (the noise controls left out).
pub fn compare(now: &BTreeMap<String, f64>, last: &Published) -> Vec<Change> {
    now.iter()
        .filter(|(m, _)| !CONTROLS.contains(&m.as_str()))
        .filter_map(|(m, &after)| {
            let before = *last.ratios.get(m)?;
            Some(Change {
                metric: m.clone(),
                before,
                after,
            })
        })
        .collect()
}

/// The Markdown paragraph on the comparison with `last`.
pub fn markdown(changes: &[Change], last: &Published) -> String {
    let mut s = format!(
        "\nCompared with the last published run ({}, commit `{}`, `bench/history/{}`): ",
        last.date, last.commit, last.file
    );
    let worse: Vec<&Change> = changes.iter().filter(|c| c.regressed()).collect();
    if worse.is_empty() {
        let _ = writeln!(
            s,
            "no ratio ours/Xen got more than {:.0}% worse.",
            REGRESSION * 100.0
        );
    } else {
        let _ = writeln!(
            s,
            "**⚠ {} regression{}** (ratio ours/Xen more than {:.0}% worse): {}.",
            worse.len(),
            if worse.len() == 1 { "" } else { "s" },
            REGRESSION * 100.0,
            worse
                .iter()
                .map(|c| format!(
                    "`{}` {:.3} → {:.3} ({:+.0}%)",
                    c.metric,
                    c.before,
                    c.after,
                    c.relative() * 100.0
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    s
}

// ---------------------------------------------------------------------------
// The README's performance table.

/// The line before the generated table in README.md.
pub const TABLE_BEGIN: &str =
    "<!-- bench-table: generated from bench/results.json by `xtask readme-table`; do not edit -->";
/// The line after it.
pub const TABLE_END: &str = "<!-- bench-table end -->";

/// A number of cycles or milliseconds as the table shows it.
fn value(v: &Value, unit: &str) -> String {
    match v.get("median").and_then(Value::as_f64) {
        Some(x) => format!("{x:.0} {}", if unit == "ms" { "ms" } else { "cycles" }),
        None => match v.get("unsupported") {
            Some(u) if !u.is_null() => "not supported".into(),
            _ => "-".into(),
        },
    }
}

/// The README's table for a results JSON: when and where it was measured, then one
/// row per metric (the noise controls left out), with the target where there is one.
pub fn readme_table(results: &str) -> Result<String> {
    let v: Value = serde_json::from_str(results).context("parsing bench/results.json")?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let mut t = format!(
        "Measured {} at commit `{}` ({} rounds, TCG, `-cpu {}`); ratio = ours / Xen, lower is faster. \
         Every row, with spreads and per-round ratios: [bench/results.md](bench/results.md).\n\n\
         | metric | what one sample is | xen-like-hv | Xen 4.17 | ours/Xen | target |\n\
         |---|---|---:|---:|---:|---|\n",
        s("date"),
        s("commit"),
        v.get("rounds").and_then(Value::as_u64).unwrap_or(0),
        v.pointer("/qemu/cpu")
            .and_then(Value::as_str)
            .unwrap_or("?"),
    );
    let metrics = v
        .get("metrics")
        .and_then(Value::as_array)
        .context("bench/results.json has no metrics")?;
    for m in metrics {
        let name = m.get("name").and_then(Value::as_str).unwrap_or("?");
        if CONTROLS.contains(&name) {
            continue;
        }
        let unit = m.get("unit").and_then(Value::as_str).unwrap_or("cycles");
        let ratio = m
            .get("ratio")
            .and_then(Value::as_f64)
            .map_or("-".into(), |r| format!("{r:.3}"));
        let target = match (
            m.get("target").and_then(Value::as_f64),
            m.get("met").and_then(Value::as_bool),
        ) {
            (Some(t), Some(true)) => format!("≤ {t}: met"),
            (Some(t), Some(false)) => format!("≤ {t}: **missed**"),
            (Some(t), None) => format!("≤ {t}"),
            (None, _) => "-".into(),
        };
        let what = m
            .get("what")
            .and_then(Value::as_str)
            .unwrap_or("")
            .replace('|', "/");
        let _ = writeln!(
            t,
            "| `{name}` | {what} | {} | {} | {ratio} | {target} |",
            m.get("xen_like_hv").map_or("-".into(), |x| value(x, unit)),
            m.get("xen").map_or("-".into(), |x| value(x, unit)),
        );
    }
    if let Some(f) = v
        .get("floor_ratio")
        .and_then(|f| f.get("value"))
        .and_then(Value::as_f64)
    {
        let _ = writeln!(
            t,
            "\n`null_hypercall / floor` (xen-like-hv): {f:.2} (target ≤ {}).",
            crate::bench_report::FLOOR_TARGET
        );
    }
    Ok(t)
}

/// `readme` with the text between [`TABLE_BEGIN`] and [`TABLE_END`] replaced by
/// `table`.
pub fn rewrite_readme(readme: &str, table: &str) -> Result<String> {
    let (Some(b), Some(e)) = (readme.find(TABLE_BEGIN), readme.find(TABLE_END)) else {
        bail!("README.md lacks the bench-table markers ({TABLE_BEGIN:?} ... {TABLE_END:?})");
    };
    if e < b {
        bail!("README.md's bench-table markers are out of order");
    }
    let start = b + TABLE_BEGIN.len();
    Ok(format!("{}\n{}{}", &readme[..start], table, &readme[e..]))
}

/// Regenerates README.md's table from bench/results.json under `root`; with `check`,
/// only says whether it is up to date (an error if not). Returns whether it changed.
pub fn readme_sync(root: &Path, check: bool) -> Result<bool> {
    let results = std::fs::read_to_string(root.join("bench/results.json"))
        .context("reading bench/results.json")?;
    let readme_path = root.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).context("reading README.md")?;
    let new = rewrite_readme(&readme, &readme_table(&results)?)?;
    if new == readme {
        return Ok(false);
    }
    if check {
        bail!(
            "README.md's performance table does not match bench/results.json: run \
             `cargo run -p xtask -- readme-table`"
        );
    }
    std::fs::write(&readme_path, new)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RESULTS: &str = r#"{"date": "2026-11-24 10:55 UTC", "commit": "329fe27e9ef9", "rounds": 5,
      "qemu": {"cpu": "max"},
      "metrics": [
        {"name": "control_loop", "unit": "cycles", "ratio": 1.0,
         "xen_like_hv": {"median": 5824}, "xen": {"median": 5772}},
        {"name": "null_hypercall", "what": "xen_version round trip", "unit": "cycles", "ratio": 0.237,
         "target": 0.8, "met": true, "xen_like_hv": {"median": 3926}, "xen": {"median": 16562}},
        {"name": "floor", "what": "the floor call", "unit": "cycles", "ratio": null, "target": null,
         "met": null, "xen_like_hv": {"median": 900}, "xen": {"median": null, "unsupported": null}},
        {"name": "boot_to_dom0", "what": "boot", "unit": "ms", "ratio": 0.857, "target": null,
         "met": null, "xen_like_hv": {"median": 925}, "xen": {"median": 1080}}
      ]}"#;

    #[test]
    fn published_runs_read_back_and_sort_in_time() {
        let p = read_published(RESULTS, "x.json").unwrap();
        assert_eq!(p.commit, "329fe27e9ef9");
        assert_eq!(p.ratios["null_hypercall"], 0.237);
        assert!(!p.ratios.contains_key("floor"));
        assert_eq!(
            history_name(&p.date, &p.commit),
            "2026-11-24T10-55Z-329fe27e9ef9.json"
        );
        assert!(
            history_name("2026-11-24 10:55 UTC", "a") < history_name("2026-12-01 09:00 UTC", "a")
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last_published(dir.path()).unwrap(), None);
        record(dir.path(), RESULTS).unwrap();
        let later = RESULTS.replace("2026-11-24 10:55", "2026-12-24 10:55");
        record(dir.path(), &later.replace("0.237", "0.3")).unwrap();
        let last = last_published(dir.path()).unwrap().unwrap();
        assert_eq!(last.ratios["null_hypercall"], 0.3);
    }

    #[test]
    fn a_ratio_more_than_ten_percent_worse_is_a_regression() {
        let last = read_published(RESULTS, "x.json").unwrap();
        let mut now = BTreeMap::new();
        now.insert("null_hypercall".to_string(), 0.237 * 1.09);
        now.insert("control_loop".to_string(), 2.0);
        let c = compare(&now, &last);
        assert_eq!(c.len(), 1, "controls are not compared");
        assert!(!c[0].regressed());
        assert!(markdown(&c, &last).contains("no ratio"));
        now.insert("null_hypercall".to_string(), 0.237 * 1.11);
        let c = compare(&now, &last);
        assert!(c[0].regressed());
        assert!(markdown(&c, &last).contains("1 regression"));
    }

    #[test]
    fn the_readme_table_is_rewritten_between_its_markers() {
        let table = readme_table(RESULTS).unwrap();
        assert!(table.contains("| `null_hypercall` | xen_version round trip | 3926 cycles | 16562 cycles | 0.237 | ≤ 0.8: met |"));
        assert!(table.contains("| `floor` | the floor call | 900 cycles | - | - | - |"));
        assert!(table.contains("| `boot_to_dom0` | boot | 925 ms | 1080 ms | 0.857 | - |"));
        assert!(!table.contains("control_loop"));
        let readme = format!("# x\n\n{TABLE_BEGIN}\nold\n{TABLE_END}\n\nmore\n");
        let new = rewrite_readme(&readme, &table).unwrap();
        assert!(new.contains(&format!("{TABLE_BEGIN}\nMeasured")));
        assert!(new.contains(&table));
        assert!(new.ends_with(&format!("{TABLE_END}\n\nmore\n")));
        assert_eq!(rewrite_readme(&new, &table).unwrap(), new);
        assert!(rewrite_readme("no markers", &table).is_err());
    }

    /// The README in the repository shows what bench/results.json says.
    #[test]
    fn the_readme_matches_bench_results_json() {
        let root = crate::workspace_root();
        readme_sync(&root, true).unwrap();
    }
}
