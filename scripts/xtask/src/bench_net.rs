//! The network benchmark (xen-like-hv only; `scripts/bench` runs it with the
//! control plane): on one QEMU whose dom0 has a virtio-net NIC on QEMU's user
//! network, dom0's own TCP to the host over that NIC (`nic_bench` on dom0's
//! command line: the limit here) against a domU's TCP to the host through the
//! net split driver and dom0's uplink (`netup role=send`), TCP between two
//! domUs on `xenbr0` (`tcpcheck`), and the round trip of a raw ping between
//! them (`netcheck`). The host end is a TCP sink this process runs on
//! 127.0.0.1, which QEMU's user network shows guests as 10.0.2.2. See
//! docs/bench.md and docs/net.md.

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::dom0::{LISTENING, Machine, build_dom0ctl, dom0_modules, prepare_socket};
use crate::nic::NicSpec;
use crate::{IsoSpec, QemuConfig, make_iso, target_dir};

/// MiB each throughput row moves.
pub const MIB: u64 = 32;
/// Pings of the round-trip row.
pub const PINGS: u64 = 200;
/// dom0's result line on COM1.
const DOM0: &str = "dom0: nic_bench: ";

/// What the run measured (MiB/s, µs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetBench {
    /// dom0's TCP to the host, as the host's sink saw it.
    pub dom0_to_host: f64,
    /// A domU's TCP to the host through the uplink, as the sink saw it.
    pub domu_to_host: f64,
    /// TCP between two domUs (the server's figure).
    pub domu_to_domu: f64,
    /// Mean raw-ping round trip between two domUs.
    pub domu_rtt_us: f64,
}

/// `key=value` in `line` as a number.
pub fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The host's end: accepts `conns` connections one after the other, reads
/// each to its end, and sends (bytes, MiB/s from the first byte to the end).
fn sink(listener: TcpListener, conns: usize, tx: mpsc::Sender<(u64, f64)>) {
    for _ in 0..conns {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let mut buf = vec![0u8; 256 * 1024];
        let mut bytes = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    bytes += n as u64;
                }
            }
        }
        let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let rate = if secs > 0.0 {
            bytes as f64 / secs / f64::from(1u32 << 20)
        } else {
            0.0
        };
        if tx.send((bytes, rate)).is_err() {
            return;
        }
    }
}

/// Runs the network benchmark on hypervisor `hv`.
pub fn run(hv: &Path) -> Result<NetBench> {
    let work = target_dir().join("bench").join("net");
    std::fs::create_dir_all(&work)?;
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the host's TCP sink")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || sink(listener, 2, tx));
    let wait_sink = |what: &str| -> Result<(u64, f64)> {
        rx.recv_timeout(Duration::from_secs(600))
            .with_context(|| format!("the host's sink got nothing from {what}"))
    };

    let iso = work.join("net.iso");
    let mut modules = dom0_modules()?;
    if let Some(d0) = modules.first_mut() {
        d0.cmdline.push_str(&format!(" nic_bench={port},{MIB}"));
    }
    make_iso(
        &IsoSpec {
            hypervisor: hv.to_path_buf(),
            cmdline: String::new(),
            modules,
        },
        &iso,
    )?;
    let socket = work.join("net.sock");
    prepare_socket(&socket)?;
    let fast = dom0ctl::paths::fast_socket_path(&socket);
    prepare_socket(&fast)?;
    let mut cfg = QemuConfig::new(iso);
    cfg.mem = "1G".into();
    cfg.control_socket = Some(socket.clone());
    cfg.fast_socket = Some(fast);
    cfg.nics = vec![NicSpec::parse("user")?];
    let mut machine = Machine::spawn(&cfg)?;
    machine.wait_for(LISTENING, Duration::from_secs(300))?;
    let serial = machine.serial();
    let line = serial
        .lines()
        .find_map(|l| l.split_once(DOM0).map(|(_, r)| r.to_string()))
        .with_context(|| format!("no nic_bench result on COM1:\n{serial}"))?;
    if !line.starts_with("ok") {
        bail!("dom0's nic_bench: {line}");
    }
    let (bytes, dom0_to_host) = wait_sink("dom0")?;
    if bytes != MIB << 20 {
        bail!(
            "the host's sink got {bytes} bytes from dom0, not {}",
            MIB << 20
        );
    }
    eprintln!("bench: net: dom0 to host {dom0_to_host:.2} MiB/s ({line})");

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
    let create = |name: &str, guest: &str, cmdline: &str| -> Result<()> {
        let kernel = crate::build_test_guest(guest)?;
        let conf = work.join(format!("{name}.toml"));
        std::fs::write(
            &conf,
            format!(
                "name = \"{name}\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"{cmdline}\"\n\
                 on_poweroff = \"preserve\"\non_crash = \"preserve\"\n\
                 vif = [\"bridge=xenbr0\"]\n",
                kernel.display()
            ),
        )?;
        let (ok, _, err) = ctl(&["--timeout", "300", "create", &conf.to_string_lossy()])?;
        if !ok {
            bail!("creating {name}: {err}");
        }
        Ok(())
    };
    let result = |name: &str, guest: &str| -> Result<String> {
        let start = Instant::now();
        let (ok, fail) = (format!("{guest}: ok"), format!("{guest}: FAIL"));
        loop {
            let (_, out, _) = ctl(&["console", name, "--no-follow"])?;
            if let Some(l) = out.lines().find(|l| l.contains(&ok)) {
                let l = l.to_string();
                let _ = ctl(&["destroy", name]);
                return Ok(l);
            }
            if out.contains(&fail) || start.elapsed() > Duration::from_secs(600) {
                bail!("{name} ({guest}) failed or did not finish:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };

    create(
        "up",
        "netup",
        &format!("ip=dhcp role=send server=10.0.2.2:{port} mib={MIB}"),
    )?;
    result("up", "netup")?;
    let (bytes, domu_to_host) = wait_sink("the domU")?;
    if bytes != MIB << 20 {
        bail!(
            "the host's sink got {bytes} bytes from the domU, not {}",
            MIB << 20
        );
    }
    eprintln!("bench: net: domU to host {domu_to_host:.2} MiB/s");

    create(
        "srv",
        "tcpcheck",
        &format!("ip=10.0.9.1 role=server mib={MIB} timeout=600"),
    )?;
    create(
        "cli",
        "tcpcheck",
        &format!("ip=10.0.9.2 role=client peer=10.0.9.1 mib={MIB} timeout=600"),
    )?;
    let srv = result("srv", "tcpcheck")?;
    let _ = result("cli", "tcpcheck");
    let domu_to_domu = field(&srv, "mib_s").with_context(|| format!("no mib_s in {srv:?}"))?;
    eprintln!("bench: net: domU to domU {domu_to_domu:.2} MiB/s");

    create(
        "pa",
        "netcheck",
        &format!("ip=10.0.9.3 peer=10.0.9.4 count={PINGS}"),
    )?;
    create(
        "pb",
        "netcheck",
        &format!("ip=10.0.9.4 peer=10.0.9.3 count={PINGS}"),
    )?;
    let pa = result("pa", "netcheck")?;
    let _ = result("pb", "netcheck");
    let domu_rtt_us = field(&pa, "rtt_us").with_context(|| format!("no rtt_us in {pa:?}"))?;

    let _ = ctl(&["shutdown-host"]);
    let _ = machine.wait_exit(Duration::from_secs(60));
    Ok(NetBench {
        dom0_to_host,
        domu_to_host,
        domu_to_domu,
        domu_rtt_us,
    })
}

/// The Markdown section (appended to `bench/control-plane.md`).
pub fn markdown(r: &NetBench) -> String {
    let ratio = |x: f64| {
        if r.dom0_to_host > 0.0 {
            format!("{:.3}", x / r.dom0_to_host)
        } else {
            "-".into()
        }
    };
    format!(
        "\n## Network (xen-like-hv only)\n\nOne QEMU (TCG, `-m 1G`) whose dom0 has a \
         virtio-net NIC on QEMU's user network, the uplink of `xenbr0`. Each throughput row \
         moves {MIB} MiB over TCP (`smoltcp` at both guest ends, 64 KiB windows); the host's \
         end is a sink on 127.0.0.1 (10.0.2.2 to the guests). dom0's own TCP over the NIC \
         (`nic_bench`) is the limit here. Target: domU to domU at 0.8× dom0 to host or \
         better.\n\n\
         | path | MiB/s | / dom0 to host |\n|---|---|---|\n\
         | dom0 to host (its NIC, no split driver) | {:.2} | 1 |\n\
         | domU to host (netfront, netback, the uplink) | {:.2} | {} |\n\
         | domU to domU on xenbr0 (two split drivers) | {:.2} | {} |\n\n\
         Round trip of a raw ping between two domUs on xenbr0 (`netcheck`, {PINGS} pings, \
         mean): {:.0} µs.\n",
        r.dom0_to_host,
        r.domu_to_host,
        ratio(r.domu_to_host),
        r.domu_to_domu,
        ratio(r.domu_to_domu),
        r.domu_rtt_us,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_markdown() {
        let l = "tcpcheck: ok role=server bytes=4194304 fnv=0x5 mib_s=2.90";
        assert_eq!(field(l, "mib_s"), Some(2.9));
        assert_eq!(field(l, "rtt_us"), None);
        let md = markdown(&NetBench {
            dom0_to_host: 10.0,
            domu_to_host: 4.0,
            domu_to_domu: 8.5,
            domu_rtt_us: 420.0,
        });
        assert!(md.contains("| domU to domU on xenbr0 (two split drivers) | 8.50 | 0.850 |"));
        assert!(md.contains("| domU to host (netfront, netback, the uplink) | 4.00 | 0.400 |"));
        assert!(md.contains("mean): 420 µs."));
    }

    #[test]
    fn the_sink_counts_bytes() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        let t = std::thread::spawn(move || sink(l, 1, tx));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        std::io::Write::write_all(&mut c, &[7u8; 100_000]).unwrap();
        drop(c);
        let (bytes, rate) = rx.recv().unwrap();
        assert_eq!(bytes, 100_000);
        assert!(rate > 0.0);
        t.join().unwrap();
    }
}
