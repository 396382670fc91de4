//! The block benchmark (xen-like-hv only; `scripts/bench` runs it with the control
//! plane): on one QEMU with one fresh 256 MiB disk, dom0's own direct throughput on
//! the virtio disk (`disk_bench` on dom0's command line: the physical limit here)
//! against a domU's through the split driver (`blkcheck` on a 64 MiB volume, through
//! blkfront, the ring and dom0's blkback). See docs/bench.md and docs/block.md.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::disk::DiskSpec;
use crate::dom0::{LISTENING, Machine, build_dom0ctl, dom0_modules, prepare_socket};
use crate::{IsoSpec, QemuConfig, make_iso, target_dir};

/// The volume the domU checks (MiB).
pub const VOLUME_MIB: u64 = 64;
/// `disk_bench`'s result line on COM1.
const DIRECT: &str = "dom0: disk_bench: ";

/// Sequential write and read (MiB/s) and random 4 KiB reads (IOPS).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Io {
    /// 1 MiB sequential writes.
    pub write_mib_s: f64,
    /// 1 MiB sequential reads.
    pub read_mib_s: f64,
    /// Random 4 KiB reads per second.
    pub rand4k_iops: f64,
}

/// What the run measured.
#[derive(Clone, Debug, Default)]
pub struct BlockBench {
    /// dom0 directly on its virtio disk.
    pub direct: Io,
    /// A domU through blkfront and blkback.
    pub domu: Io,
    /// blkcheck's line about the agreed features.
    pub features: String,
}

/// `key=value` in `line` as a number.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// dom0's `disk_bench` line.
pub fn parse_direct(line: &str) -> Option<Io> {
    Some(Io {
        write_mib_s: field(line, "seq_write_mib_s")?,
        read_mib_s: field(line, "seq_read_mib_s")?,
        rand4k_iops: field(line, "rand4k_iops")?,
    })
}

/// blkcheck's `ok` line.
pub fn parse_blkcheck(line: &str) -> Option<Io> {
    Some(Io {
        write_mib_s: field(line, "write_mib_s")?,
        read_mib_s: field(line, "read_mib_s")?,
        rand4k_iops: field(line, "rand4k_iops")?,
    })
}

/// Runs the block benchmark on hypervisor `hv`.
pub fn run(hv: &Path) -> Result<BlockBench> {
    let work = target_dir().join("bench").join("block");
    std::fs::create_dir_all(&work)?;
    let img = work.join("data.img");
    let _ = std::fs::remove_file(&img);
    let disk = DiskSpec::parse(&format!("new:{}:256M,name=data", img.display()), 0)?;
    disk.prepare()?;
    let iso = work.join("block.iso");
    let mut modules = dom0_modules()?;
    if let Some(d0) = modules.first_mut() {
        d0.cmdline.push_str(" disk_bench");
    }
    make_iso(
        &IsoSpec {
            hypervisor: hv.to_path_buf(),
            cmdline: String::new(),
            modules,
        },
        &iso,
    )?;
    let socket = work.join("blk.sock");
    prepare_socket(&socket)?;
    let fast = dom0ctl::paths::fast_socket_path(&socket);
    prepare_socket(&fast)?;
    let mut cfg = QemuConfig::new(iso);
    cfg.mem = "1G".into();
    cfg.control_socket = Some(socket.clone());
    cfg.fast_socket = Some(fast);
    cfg.disks = vec![disk];
    let mut machine = Machine::spawn(&cfg)?;
    machine.wait_for(LISTENING, Duration::from_secs(300))?;
    let serial = machine.serial();
    let direct = serial
        .lines()
        .find_map(|l| l.split_once(DIRECT).and_then(|(_, r)| parse_direct(r)))
        .with_context(|| format!("no disk_bench result on COM1:\n{serial}"))?;

    let dom0ctl = build_dom0ctl()?;
    let ctl = |args: &[&str]| -> Result<(bool, String, String)> {
        let out = Command::new(&dom0ctl)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .output()
            .context("running dom0ctl")?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (ok, _, err) = ctl(&["volume", "create", "bench", &format!("{VOLUME_MIB}M")])?;
    if !ok {
        bail!("volume create: {err}");
    }
    let guest = crate::build_test_guest("blkcheck")?;
    // More blkcheck words for experiments (`indirect=256 pool=512`); none in
    // `scripts/bench`.
    let extra = std::env::var("XLHV_BLKCHECK_ARGS").unwrap_or_default();
    let conf = work.join("blkbench.toml");
    std::fs::write(
        &conf,
        format!(
            "name = \"blkbench\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"seed=7 ops=4096 {extra}\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\n\
             disk = [\"target=bench, vdev=xvda\"]\n",
            guest.display()
        ),
    )?;
    let (ok, _, err) = ctl(&["--timeout", "300", "create", &conf.to_string_lossy()])?;
    if !ok {
        bail!("creating the blkcheck domU: {err}");
    }
    let start = Instant::now();
    let log = loop {
        let (_, out, _) = ctl(&["console", "blkbench", "--no-follow"])?;
        if out.contains("blkcheck: ok") || out.contains("blkcheck: FAIL") {
            break out;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("blkcheck did not finish in 600 s:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let result = log.lines().find(|l| l.contains("blkcheck: ok"));
    let domu = result
        .and_then(parse_blkcheck)
        .with_context(|| format!("blkcheck failed:\n{log}"))?;
    let features = log
        .lines()
        .find(|l| l.contains("blkcheck: vbd"))
        .map(|l| l.trim_start_matches("blkcheck: ").to_string())
        .unwrap_or_default();
    let _ = ctl(&["destroy", "blkbench"]);
    let _ = ctl(&["shutdown-host"]);
    let _ = machine.wait_exit(Duration::from_secs(60));
    let _ = std::fs::remove_file(&img);
    Ok(BlockBench {
        direct,
        domu,
        features,
    })
}

/// The Markdown section (appended to `bench/control-plane.md`).
pub fn markdown(r: &BlockBench) -> String {
    let mut s = format!(
        "\n## Block devices (xen-like-hv only)\n\nOne QEMU (TCG, `-m 1G`) with one fresh \
         256 MiB raw disk on the host's page cache: dom0 directly on the virtio disk \
         (`disk_bench`: 1 MiB requests 16 per batch, random 4 KiB reads 64 per batch, \
         DMA memory, the physical limit here) against a domU through the split driver \
         (`blkcheck` on a {VOLUME_MIB} MiB volume: 1 MiB blocking writes then a flush, \
         1 MiB blocking reads, 4096 random 4 KiB reads with 32 in flight). Target: the \
         domU at 0.8× dom0 or better.\n\n\
         | metric | dom0 direct | domU via blkfront/blkback | domU / dom0 |\n|---|---|---|---|\n"
    );
    for (name, unit, d, u) in [
        (
            "1 MiB sequential write",
            "MiB/s",
            r.direct.write_mib_s,
            r.domu.write_mib_s,
        ),
        (
            "1 MiB sequential read",
            "MiB/s",
            r.direct.read_mib_s,
            r.domu.read_mib_s,
        ),
        (
            "4 KiB random read",
            "IOPS",
            r.direct.rand4k_iops,
            r.domu.rand4k_iops,
        ),
    ] {
        let ratio = if d > 0.0 {
            format!("{:.3}", u / d)
        } else {
            "-".into()
        };
        s.push_str(&format!(
            "| {name} | {d:.1} {unit} | {u:.1} {unit} | {ratio} |\n"
        ));
    }
    if !r.features.is_empty() {
        s.push_str(&format!("\nThe domU's disk: {}\n", r.features));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_result_lines() {
        assert_eq!(
            parse_direct("seq_write_mib_s=2375.7 seq_read_mib_s=3348.9 rand4k_iops=12275"),
            Some(Io {
                write_mib_s: 2375.7,
                read_mib_s: 3348.9,
                rand4k_iops: 12275.0
            })
        );
        let ok =
            "blkcheck: ok sectors=131072 write_mib_s=117.45 read_mib_s=131.00 rand4k_iops=5534";
        assert_eq!(
            parse_blkcheck(ok),
            Some(Io {
                write_mib_s: 117.45,
                read_mib_s: 131.0,
                rand4k_iops: 5534.0
            })
        );
        assert_eq!(parse_blkcheck("blkcheck: FAIL read at sector 8"), None);
        // `seq_write_mib_s` must not be read as `write_mib_s`.
        assert_eq!(
            parse_blkcheck("seq_write_mib_s=1 read_mib_s=2 rand4k_iops=3"),
            None
        );
    }

    #[test]
    fn markdown_has_the_ratios() {
        let r = BlockBench {
            direct: Io {
                write_mib_s: 200.0,
                read_mib_s: 400.0,
                rand4k_iops: 1000.0,
            },
            domu: Io {
                write_mib_s: 100.0,
                read_mib_s: 400.0,
                rand4k_iops: 0.0,
            },
            features: String::new(),
        };
        let md = markdown(&r);
        assert!(md.contains("| 1 MiB sequential write | 200.0 MiB/s | 100.0 MiB/s | 0.500 |"));
        assert!(md.contains("| 1 MiB sequential read | 400.0 MiB/s | 400.0 MiB/s | 1.000 |"));
        assert!(md.contains("| 4 KiB random read | 1000.0 IOPS | 0.0 IOPS | 0.000 |"));
    }
}
