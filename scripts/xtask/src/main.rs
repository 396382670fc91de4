//! `xtask`: the driver behind scripts/run (and scripts/test's image builds).

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use xtask::{Accel, IsoSpec, Module, QemuConfig};

#[derive(Parser)]
#[command(name = "xtask", about = "Build, image and run xen-like-hv")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ImageArgs {
    /// A PV kernel ELF to boot as dom0 (its module is named "dom0").
    #[arg(long, value_name = "PATH")]
    dom0: Option<PathBuf>,
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
        /// Number of CPUs.
        #[arg(long, default_value_t = 1)]
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
    },
    /// Benchmark the bench guest on xen-like-hv and on real Xen 4.17 (scripts/bench).
    Bench(xtask::bench::BenchArgs),
}

fn iso_spec(image: &ImageArgs) -> Result<IsoSpec> {
    let hypervisor = xtask::build_hypervisor()?;
    let mut modules = Vec::new();
    if let Some(d) = &image.dom0 {
        modules.push(Module {
            path: d.clone(),
            cmdline: "dom0".into(),
        });
    }
    for m in &image.modules {
        modules.push(Module::parse(m)?);
    }
    for d in &image.domus {
        modules.push(Module::domu(d)?);
    }
    let has_dom0 = modules
        .iter()
        .any(|m| m.cmdline.split_whitespace().next() == Some("dom0"));
    if !has_dom0 && image.dom0.is_none() {
        // No dom0 given: the demo kernel is dom0.
        modules.insert(
            0,
            Module {
                path: xtask::build_demo()?,
                cmdline: "dom0".into(),
            },
        );
    }
    for m in &modules {
        if !m.path.is_file() {
            bail!("module '{}': no such file: {}", m.cmdline, m.path.display());
        }
    }
    Ok(IsoSpec {
        hypervisor,
        cmdline: image.cmdline.clone(),
        modules,
    })
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Bench(args) => xtask::bench::main(args)?,
        Cmd::Build => println!("{}", xtask::build_hypervisor()?.display()),
        Cmd::Iso { image, out } => {
            xtask::make_iso(&iso_spec(&image)?, &out)?;
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
        } => {
            if accel == Accel::Kvm && !std::path::Path::new("/dev/kvm").exists() {
                bail!("--accel kvm: this machine has no /dev/kvm; use --accel tcg");
            }
            if smp == 0 {
                bail!("--smp must be at least 1");
            }
            let iso = xtask::target_dir().join("xen-like-hv.iso");
            xtask::make_iso(&iso_spec(&image)?, &iso)?;
            let mut cfg = QemuConfig::new(iso);
            cfg.accel = accel;
            cfg.smp = smp;
            cfg.mem = mem;
            cfg.cpu = cpu;
            cfg.machine = machine;
            cfg.headless = headless;
            eprintln!(
                "xtask: booting {} in QEMU ({:?}); Ctrl-A X quits",
                cfg.iso.display(),
                accel
            );
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
