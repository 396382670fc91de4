//! `xtask`: the driver behind scripts/run (and scripts/test's image builds).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;
use xtask::dom0::{LISTENING, run_dir, spawn_detached};
use xtask::{Accel, IsoSpec, Module, QemuConfig};

/// How long `--detach` waits for dom0 to listen (TCG boots take seconds).
const DETACH_READY: Duration = Duration::from_secs(180);
/// The hypervisor's line once boot has finished: what `--detach` waits for
/// when dom0 is not the control agent.
const BOOT_COMPLETE: &str = "boot complete";

#[derive(Parser)]
#[command(name = "xtask", about = "Build, image and run xen-like-hv")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ImageArgs {
    /// A PV kernel ELF to boot as dom0 (the first module; its string is "dom0" unless
    /// --dom0-cmdline says otherwise). Default: the dom0 kernel (control agent) with
    /// the image bundle as its initrd.
    #[arg(long, value_name = "PATH")]
    dom0: Option<PathBuf>,
    /// dom0's whole command line: the string of dom0's module, exactly what the guest
    /// finds in start_info.cmd_line (as with `module2 KERNEL STRING` on Xen with GRUB 2).
    /// Replaces the default "dom0" (and the default dom0's "dom0 autostart=demo"). Its
    /// first word need not be "dom0": the hypervisor takes the first module as dom0
    /// when none is named so. Words are split and double quotes group, as GRUB does.
    #[arg(long, value_name = "STRING")]
    dom0_cmdline: Option<String>,
    /// A further module, named NAME (default: the file name). Repeatable.
    #[arg(long = "module", value_name = "PATH[:NAME]")]
    modules: Vec<String>,
    /// A boot-time domU: PATH[,name=NAME][,mem=SIZE][,weight=N][,cmdline=TEXT].
    /// Repeatable; domain ids follow the order given, from 1.
    #[arg(long = "domu", value_name = "PATH[,mem=..,name=..]")]
    domus: Vec<String>,
    /// The hypervisor's command line.
    #[arg(long, default_value = "")]
    cmdline: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build the hypervisor (release, x86_64-unknown-none) and print its path.
    Build,
    /// Build and make a GRUB ISO.
    Iso {
        #[command(flatten)]
        image: ImageArgs,
        /// Where to write the ISO.
        #[arg(short, long, default_value = "target/xen-like-hv.iso")]
        out: PathBuf,
    },
    /// Build, make the ISO and boot it in QEMU with the hypervisor log on this terminal.
    Run {
        #[command(flatten)]
        image: ImageArgs,
        /// QEMU accelerator.
        #[arg(long, value_enum, default_value_t = Accel::Tcg)]
        accel: Accel,
        /// Number of CPUs (1-8 are started; every one runs guests: docs/smp.md).
        #[arg(long, default_value_t = 2)]
        smp: u32,
        /// Memory size (QEMU syntax: 512M, 2G).
        #[arg(long, default_value = "512M")]
        mem: String,
        /// CPU model (`max` and `Skylake-Client-v4` are tested).
        #[arg(long, default_value = "max")]
        cpu: String,
        /// Machine type: pc or q35.
        #[arg(long, default_value = "pc")]
        machine: String,
        /// No graphical window.
        #[arg(long)]
        headless: bool,
        /// Stop QEMU after this many seconds.
        #[arg(long, value_name = "S")]
        timeout: Option<u64>,
        /// A disk for dom0 (repeatable): PATH[,name=NAME][,ro] (a raw image file,
        /// a virtio-blk device), or new:PATH:SIZE[,name=NAME] to create a sparse one.
        #[arg(long, value_name = "SPEC")]
        disk: Vec<String>,
        /// A NIC for dom0 (repeatable): user[,hostfwd=tcp::HOSTPORT-:GUESTPORT] (QEMU's
        /// user network, a virtio-net device).
        #[arg(long, value_name = "SPEC")]
        nic: Vec<String>,
        /// Run QEMU in the background (COM1 to a log under target/xlhv-run/), wait
        /// until dom0 listens, print how to reach it with dom0ctl, and exit.
        #[arg(long)]
        detach: bool,
    },
    /// Benchmark the bench guest on xen-like-hv and on real Xen 4.17 (scripts/bench).
    Bench(xtask::bench::BenchArgs),
    /// Count the instructions of the hot-path metrics with a QEMU plugin: the
    /// instruction ledger (docs/bench.md).
    Ledger(xtask::bench_ledger::LedgerArgs),
    /// Only the block benchmark (dom0 direct against a domU through the split
    /// driver), printed as Markdown: what `scripts/bench` appends to
    /// bench/control-plane.md.
    BenchBlock,
    /// Only the network benchmark (dom0's TCP to the host against domUs through
    /// the net split driver), printed as Markdown: what `scripts/bench` appends
    /// to bench/control-plane.md.
    BenchNet,
    /// Only the control-plane benchmark (1000 idle domUs in a `-m 6G` QEMU, uploads,
    /// XenStore), printed as Markdown; with `--write`, it also replaces the
    /// control-plane section of bench/control-plane.md (the block and network
    /// sections stay).
    BenchCtl {
        /// Replace the section in bench/control-plane.md.
        #[arg(long)]
        write: bool,
    },
    /// Regenerate README.md's performance table from bench/results.json (`--check`:
    /// only fail if it is out of date).
    ReadmeTable {
        /// Do not write; exit non-zero if the table differs.
        #[arg(long)]
        check: bool,
    },
    /// Run hostile-hypercall fuzzer campaigns (scripts/fuzz, docs/reliability.md).
    Fuzz(xtask::fuzz::FuzzArgs),
    /// Build the default image bundle (hello, ticker, hog, pingpong, demo) and print its path.
    Images {
        /// Where to write the bundle.
        #[arg(short, long, default_value = "target/xlhv-images.bin")]
        out: PathBuf,
    },
}

/// The ISO's contents, and whether dom0 is the default dom0 kernel (which
/// serves the control socket).
fn iso_spec(image: &ImageArgs) -> Result<(IsoSpec, bool)> {
    let hypervisor = xtask::build_hypervisor()?;
    let mut modules = Vec::new();
    let dom0_cmdline = image.dom0_cmdline.as_deref();
    if let Some(d) = &image.dom0 {
        modules.push(Module::dom0(d.clone(), dom0_cmdline)?);
    }
    for m in &image.modules {
        modules.push(Module::parse(m)?);
    }
    let named_dom0 = |m: &Module| m.cmdline.split_whitespace().next() == Some("dom0");
    let has_dom0 = modules
        .iter()
        .skip(usize::from(image.dom0.is_some()))
        .any(named_dom0);
    if has_dom0 && (image.dom0.is_some() || dom0_cmdline.is_some()) {
        bail!(
            "a --module is named dom0: give dom0 either that way or with --dom0 PATH \
             [--dom0-cmdline STRING], not both"
        );
    }
    let default_dom0 = !has_dom0 && image.dom0.is_none();
    if default_dom0 {
        // The dom0 kernel, then its image bundle: the first data module is
        // dom0's initrd, so the bundle goes before any --module.
        let mut front = xtask::dom0_modules()?;
        if let Some(d0) = front.first_mut() {
            *d0 = match dom0_cmdline {
                Some(line) => Module::dom0(d0.path.clone(), Some(line))?,
                // dom0 starts the demo kernel as a domU named "demo" (`autostart=`).
                None => Module::dom0(d0.path.clone(), Some("dom0 autostart=demo"))?,
            };
        }
        front.append(&mut modules);
        modules = front;
    }
    for d in &image.domus {
        modules.push(Module::domu(d)?);
    }
    for m in &modules {
        if !m.path.is_file() {
            bail!("module '{}': no such file: {}", m.cmdline, m.path.display());
        }
    }
    Ok((
        IsoSpec {
            hypervisor,
            cmdline: image.cmdline.clone(),
            modules,
        },
        default_dom0,
    ))
}

/// Relative to the current folder when that is shorter.
fn short(p: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    p.strip_prefix(&cwd).unwrap_or(p).display().to_string()
}

/// How to reach dom0's control agent through `sock` with the `dom0ctl` binary.
fn dom0ctl_hint(dom0ctl: &Path, sock: &Path) -> String {
    let bin = short(dom0ctl);
    let mut s = format!(
        "dom0's control socket is {}; from another terminal:\n",
        sock.display()
    );
    for (args, what) in [
        ("info", "the hypervisor, CPUs, memory"),
        ("list", "the domains"),
        ("images", "the kernels dom0 holds"),
        ("devices", "the PCI devices dom0 drives (--disk, --nic)"),
        ("dmesg", "the hypervisor's log"),
        ("shutdown-host", "stop the machine"),
    ] {
        s.push_str(&format!("  {bin} {args:<14} {what}\n"));
    }
    s.push_str(&format!(
        "({bin} is what `cargo run -q --release -p dom0ctl --` runs; `{bin} --help` lists \
         every command.)"
    ));
    s
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench(args) => xtask::bench::main(args)?,
        Cmd::Ledger(args) => xtask::bench_ledger::main(args)?,
        Cmd::BenchBlock => {
            let hv = xtask::build_hypervisor()?;
            println!(
                "{}",
                xtask::bench_block::markdown(&xtask::bench_block::run(&hv)?)
            );
        }
        Cmd::BenchCtl { write } => {
            let hv = xtask::build_hypervisor()?;
            let md = xtask::bench_ctl::markdown(&xtask::bench_ctl::run(&hv)?);
            println!("{md}");
            if write {
                xtask::bench_ctl::replace_section(&xtask::workspace_root(), &md)?;
            }
        }
        Cmd::BenchNet => {
            let hv = xtask::build_hypervisor()?;
            println!(
                "{}",
                xtask::bench_net::markdown(&xtask::bench_net::run(&hv)?)
            );
        }
        Cmd::ReadmeTable { check } => {
            let changed = xtask::bench_history::readme_sync(&xtask::workspace_root(), check)?;
            eprintln!(
                "README.md's performance table {}",
                if changed {
                    "regenerated from bench/results.json"
                } else {
                    "matches bench/results.json"
                }
            );
        }
        Cmd::Fuzz(args) => xtask::fuzz::main(args)?,
        Cmd::Build => println!("{}", xtask::build_hypervisor()?.display()),
        Cmd::Images { out } => {
            println!("{}", xtask::build_image_bundle(&out)?.display());
        }
        Cmd::Iso { image, out } => {
            xtask::make_iso(&iso_spec(&image)?.0, &out)?;
            println!("{}", out.display());
        }
        Cmd::Run {
            image,
            accel,
            smp,
            mem,
            cpu,
            machine,
            headless,
            timeout,
            disk,
            nic,
            detach,
        } => {
            if accel == Accel::Kvm && !std::path::Path::new("/dev/kvm").exists() {
                bail!("--accel kvm: this machine has no /dev/kvm; use --accel tcg");
            }
            if smp == 0 {
                bail!("--smp must be at least 1");
            }
            if detach && timeout.is_some() {
                bail!(
                    "--timeout does not apply with --detach; stop it with `dom0ctl shutdown-host`"
                );
            }
            let disks = disk
                .iter()
                .enumerate()
                .map(|(i, d)| xtask::disk::DiskSpec::parse(d, i))
                .collect::<Result<Vec<_>>>()?;
            for d in &disks {
                d.prepare()?;
            }
            let nics = nic
                .iter()
                .map(|n| xtask::nic::NicSpec::parse(n))
                .collect::<Result<Vec<_>>>()?;
            let iso = xtask::target_dir().join("xen-like-hv.iso");
            let (spec, default_dom0) = iso_spec(&image)?;
            xtask::make_iso(&spec, &iso)?;
            let dom0ctl = xtask::build_dom0ctl()?;
            let sock = dom0ctl::default_socket_path();
            xtask::prepare_socket(&sock)?;
            let mut cfg = QemuConfig::new(iso);
            cfg.accel = accel;
            cfg.smp = smp;
            cfg.mem = mem;
            cfg.cpu = cpu;
            cfg.machine = machine;
            cfg.headless = headless || detach;
            cfg.control_socket = Some(sock.clone());
            let fast = dom0ctl::paths::fast_socket_path(&sock);
            xtask::prepare_socket(&fast)?;
            cfg.fast_socket = Some(fast);
            cfg.disks = disks;
            cfg.nics = nics;
            let hint = dom0ctl_hint(&dom0ctl, &sock);
            if detach {
                let ready = if default_dom0 {
                    LISTENING
                } else {
                    BOOT_COMPLETE
                };
                eprintln!(
                    "xtask: booting {} in QEMU ({accel:?}) in the background; waiting for {ready:?}",
                    cfg.iso.display()
                );
                let d = spawn_detached(&cfg, &run_dir(), ready, DETACH_READY)?;
                println!(
                    "QEMU runs in the background: pid {} (in {}), COM1 log {}.",
                    d.pid,
                    short(&d.pid_file),
                    short(&d.com1_log)
                );
                if default_dom0 {
                    println!("dom0 is listening: {hint}");
                } else {
                    println!(
                        "dom0 is your --dom0 kernel; the control socket is {}.",
                        sock.display()
                    );
                }
                return Ok(());
            }
            eprintln!(
                "xtask: booting {} in QEMU ({accel:?}); Ctrl-A X quits",
                cfg.iso.display()
            );
            if default_dom0 {
                eprintln!("xtask: once COM1 shows {LISTENING:?}, {hint}");
            }
            let mut cmd = cfg.command();
            let mut child = cmd
                .spawn()
                .context("starting qemu-system-x86_64 (scripts/setup installs it)")?;
            let status = match timeout {
                None => child.wait()?,
                Some(s) => {
                    let end = std::time::Instant::now() + std::time::Duration::from_secs(s);
                    loop {
                        if let Some(st) = child.try_wait()? {
                            break st;
                        }
                        if std::time::Instant::now() >= end {
                            eprintln!("xtask: --timeout {s}s reached; stopping QEMU");
                            let _ = child.kill();
                            break child.wait()?;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            };
            match status
                .code()
                .and_then(xlhv_core::exit::QemuExit::from_status)
            {
                Some(e) => eprintln!("xtask: the hypervisor stopped the machine: {e:?}"),
                None => eprintln!("xtask: QEMU ended ({status})"),
            }
        }
    }
    Ok(())
}
