//! The command line, declared with clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  dom0 reported an error (the operation failed)
  2  usage error
  3  bad local input (config file, kernel image)
  4  dom0 not reachable, or the link failed

Examples:
  dom0ctl create examples/hello.toml          create a domain, print its id
  dom0ctl create examples/hello.toml memory=32 name=hello2 --console
  dom0ctl list
  dom0ctl console hello                       interactive; Ctrl-] detaches
  dom0ctl console hello --no-follow           print the log so far and exit
  dom0ctl destroy hello

The control socket is QEMU's end of dom0's COM2, made by `scripts/run`. When the
fast link's socket sits beside it (dom0.fast.sock: a virtio console, which
`scripts/run` attaches), dom0ctl talks over that instead (--link com2: never).";

const SOCKET_HELP: &str = "The control socket [default: $DOM0CTL_SOCKET, \
                           else ${XDG_RUNTIME_DIR:-/tmp}/xen-like-hv/dom0.sock]";

/// Control xen-like-hv's domains through dom0's control agent.
#[derive(Debug, Parser)]
#[command(name = "dom0ctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[arg(long, global = true, value_name = "PATH", help = SOCKET_HELP)]
    pub socket: Option<PathBuf>,

    /// Seconds to wait for each answer from dom0
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub timeout: u64,

    /// Which link to dom0: `auto` (the fast virtio console when its socket is
    /// beside the control socket and dom0 greets on it, else COM2), `fast`, `com2`
    #[arg(long, global = true, value_enum, default_value_t = Link::Auto)]
    pub link: Link,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `--link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Link {
    /// The fast link if it answers, else COM2.
    Auto,
    /// Only the fast link (the virtio console's socket beside the control socket).
    Fast,
    /// Only COM2 (the control socket itself).
    Com2,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a domain from a config file and print its id
    #[command(after_help = "\
The config is TOML, like xl.cfg (see examples/README.md):
  name = \"hello\"        required
  image = \"hello\"       an image dom0 has (dom0ctl images), or
  kernel = \"k.elf\"      a PV kernel on the host, uploaded first (relative to the config)
  ramdisk = \"initrd\"    an initial ramdisk on the host, uploaded after the kernel
  memory = 32           MiB (default 32)
  vcpus = 1             (default 1, at most 32)
  cpus = \"0-3,^1\"       hard affinity as xl's: \"2\", \"0-3,5\", \"all,^1\" for every vCPU,
                        or [\"0\", \"1-2\"], entry i for vCPU i (CPUs 0 to 255;
                        default: every CPU; dom0ctl vcpu-list shows them)
  cpus_soft = \"2-3\"     soft affinity (the CPUs a vCPU prefers), as cpus (default: none)
  cmdline = \"\"          kernel command line (default empty)
  on_poweroff = \"destroy\"   or \"preserve\", \"restart\" (default destroy)
  on_reboot = \"restart\"     or \"destroy\", \"preserve\" (default restart)
  on_crash = \"destroy\"      or \"preserve\", \"restart\" (default destroy)

KEY=VALUE arguments override the file; VALUE is read as TOML, else as a string.

Examples:
  dom0ctl create examples/hello.toml
  dom0ctl create examples/ticker.toml name=ticker2 memory=16
  dom0ctl create my.toml kernel=target/x86_64-unknown-none/release/my-guest --console")]
    Create {
        /// The domain's config file
        config: PathBuf,
        /// Settings that override the file's, like memory=64
        #[arg(value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Attach to the new domain's console
        #[arg(short, long)]
        console: bool,
    },
    /// List domains, like `xl list`
    #[command(after_help = "\
State flags (one per column): r running, b blocked, p paused, s shut down,
c crashed, d dying.

Examples:
  dom0ctl list
  dom0ctl list --json")]
    List {
        /// Print a JSON array of objects instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Pause a domain
    #[command(after_help = "Example:\n  dom0ctl pause hello")]
    Pause {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Unpause a domain
    #[command(after_help = "Example:\n  dom0ctl unpause 3")]
    Unpause {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Ask a domain to power off (control/shutdown) and wait until it has
    #[command(after_help = "\
Writes `poweroff` to the domain's control/shutdown node, as `xl shutdown -w` does,
and waits (--timeout, default 30 s) for the domain to shut down. A domain that does
not is reported as unresponsive (exit code 1) and left running; --force shuts it
down through the hypervisor without its cooperation.

Examples:
  dom0ctl shutdown hello
  dom0ctl shutdown --timeout 60 hello
  dom0ctl shutdown --force hello")]
    Shutdown {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// Shut the domain down through the hypervisor (SCHEDOP_remote_shutdown)
        #[arg(long)]
        force: bool,
    },
    /// Ask a domain to reboot (control/shutdown) and wait until it runs again
    #[command(after_help = "\
Writes `reboot` to the domain's control/shutdown node; when the domain shuts down
for reboot, dom0 builds it again from its config (xl's on_reboot = \"restart\"),
with the same name and UUID and a new id, which is printed. Waits (--timeout,
default 30 s) until it runs again.

Example:
  dom0ctl reboot hello")]
    Reboot {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Read and change XenStore through dom0, with dom0's privileges
    #[command(subcommand)]
    Xenstore(XsCommand),
    /// Destroy a domain now
    #[command(after_help = "Example:\n  dom0ctl destroy hello")]
    Destroy {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Attach to a domain's console (Ctrl-] detaches)
    #[command(after_help = "\
Prints the log so far, then follows the output and sends what you type.
Ctrl-] (or end of input) detaches; the domain keeps running.

Examples:
  dom0ctl console hello
  dom0ctl console 3 --no-follow > hello.log")]
    Console {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// Print the log so far and exit
        #[arg(long)]
        no_follow: bool,
    },
    /// Hypervisor version, memory and CPUs
    Info,
    /// Print the hypervisor's log ring
    Dmesg,
    /// List the kernel images dom0 has (for `image = "..."`)
    Images,
    /// List the PCI devices dom0 found and what it drives on each
    Devices,
    /// Named volumes carved from dom0's disks (create, list, rm)
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// List a domain's virtual disks, as `xl block-list` does
    #[command(after_help = "\
Columns as xl's: Vdev (the device number), BE (the back end's domain), handle,
state (the front end's XenbusState), evt-ch, ring-ref, BE-path; then the disk's
name, target, mode and the back end's counters (reads, writes, flushes,
discards, errors).

Example:
  dom0ctl block-list hello")]
    BlockList {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Give a running domain another disk (hot-plug), as `xl block-attach`
    #[command(after_help = "\
DISK is a `disk = [...]` entry of a domain config, in xl's syntax.

Example:
  dom0ctl block-attach hello 'target=scratch, vdev=xvdb, access=rw'")]
    BlockAttach {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// The disk: target=NAME, vdev=xvdX[, access=rw|ro]
        #[arg(value_name = "DISK", value_parser = disk_spec)]
        disk: control_proto::disk::DiskSpec,
    },
    /// Take a disk away from a running domain (hot-unplug), as `xl block-detach`
    #[command(after_help = "\
The back end closes the disk; it goes once the domain's front end has let go.

Example:
  dom0ctl block-detach hello xvdb")]
    BlockDetach {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// The guest's name for the disk (xvdb) or its device number
        #[arg(value_name = "VDEV")]
        vdev: String,
    },
    /// List a domain's vifs, as `xl network-list` does
    #[command(after_help = "\
Columns as xl's: Idx (the vif number), BE (the back end's domain), Mac Addr.,
handle, state (the front end's XenbusState), evt-ch, tx-/rx-ring-ref, BE-path;
then the bridge and the back end's counters (packets the guest sent, refused,
received, dropped on the way to it).

Example:
  dom0ctl network-list hello")]
    NetworkList {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// List a domain's vCPUs and their affinity, as `xl vcpu-list DOM` does
    #[command(after_help = "\
Columns: Name, ID, VCPU, then the hard affinity (the CPUs the vCPU may run on:
`cpus =` in its config) and the soft one (the CPUs it prefers: `cpus_soft =`), as
the hypervisor holds them (`all`: every CPU of the machine).

Example:
  dom0ctl vcpu-list hello")]
    VcpuList {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
    },
    /// Set a running domain's vCPU affinity, as `xl vcpu-pin` does
    #[command(after_help = "\
Sets the hard affinity (the CPUs the vCPU may run on) and the soft one (the CPUs
it prefers) of one vCPU, or of every vCPU with `all`. The CPU lists are xl's, as
`cpus =` in a config: \"2\", \"0-3,5\", \"all,^1\". `-` leaves that map as it is;
without SOFT the soft map is left as it is too. A map with no CPU of the machine
that runs guests is refused and nothing changes; the maps last until the domain
is destroyed or rebooted (a reboot builds it with its config's maps, as in xl).
`dom0ctl vcpu-list DOM` shows them.

Examples:
  dom0ctl vcpu-pin hello 0 1              vCPU 0 runs on CPU 1 only
  dom0ctl vcpu-pin hello all 0-1 1        every vCPU on CPUs 0-1, preferring 1
  dom0ctl vcpu-pin hello 3 - 0            only the soft map of vCPU 3")]
    VcpuPin {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// The vCPU's number, or `all`
        #[arg(value_name = "VCPU", value_parser = vcpu_arg)]
        vcpu: VcpuArg,
        /// The CPUs it may run on (hard affinity), or `-` to leave them
        #[arg(value_name = "HARD", value_parser = map_arg)]
        hard: MapArg,
        /// The CPUs it prefers (soft affinity), or `-` to leave them
        #[arg(value_name = "SOFT", value_parser = map_arg)]
        soft: Option<MapArg>,
    },
    /// Give a running domain another vif (hot-plug), as `xl network-attach`
    #[command(after_help = "\
VIF is a `vif = [...]` entry of a domain config, in xl's syntax (empty: a made-up
MAC on xenbr0).

Example:
  dom0ctl network-attach hello 'mac=00:16:3e:00:00:09, bridge=xenbr0'")]
    NetworkAttach {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// The vif: [mac=00:16:3e:xx:xx:xx][, bridge=NAME]
        #[arg(value_name = "VIF", value_parser = vif_spec, default_value = "")]
        vif: control_proto::vif::VifSpec,
    },
    /// Take a vif away from a running domain (hot-unplug), as `xl network-detach`
    #[command(after_help = "\
The back end closes the vif; it goes once the domain's front end has let go.

Example:
  dom0ctl network-detach hello 1")]
    NetworkDetach {
        /// Domain id or name
        #[arg(value_name = "DOM")]
        dom: String,
        /// The vif's number or its MAC
        #[arg(value_name = "VIF")]
        vif: String,
    },
    /// Ask dom0 to stop the machine
    ShutdownHost,
}

/// `dom0ctl volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Carve a volume out of a disk dom0 drives
    #[command(after_help = "\
The volume table sits in the disk's first sectors and survives reboots; volumes
start on 1 MiB boundaries, first fit. Without --on, the first writable disk with
a volume table and room takes it, else the first blank (all-zero) one. A disk
that holds other data is refused unless --on names it and --force is given.

Examples:
  dom0ctl volume create web 64M
  dom0ctl volume create db 1G --on data")]
    Create {
        /// Its name (the rules of domain names: letters, digits, '_', '.', '-')
        #[arg(value_parser = volume_name)]
        name: String,
        /// Its size: bytes, or a number with K, M, G or T (64M, 1G)
        #[arg(value_parser = volume_size)]
        size: u64,
        /// The disk to carve it from (`dom0ctl volume list` shows them)
        #[arg(long, value_name = "DISK")]
        on: Option<String>,
        /// Put a new volume table on the disk even though it holds other data
        /// or a damaged table (what it held is lost)
        #[arg(long, requires = "on")]
        force: bool,
        /// Print the new volume as a JSON object
        #[arg(long)]
        json: bool,
    },
    /// List the volumes and dom0's disks
    #[command(after_help = "Examples:\n  dom0ctl volume list\n  dom0ctl volume list --json")]
    List {
        /// Print a JSON object (`volumes`, `disks`) instead of tables
        #[arg(long)]
        json: bool,
    },
    /// Remove a volume (refused while a domain uses it)
    #[command(after_help = "Example:\n  dom0ctl volume rm web")]
    Rm {
        /// The volume
        name: String,
        /// Its disk, when volumes of that name are on several
        #[arg(long, value_name = "DISK")]
        on: Option<String>,
    },
}

/// A volume name, checked as dom0 checks it.
fn volume_name(s: &str) -> Result<String, String> {
    control_proto::validate_name(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

/// A volume size (`64M`), checked as dom0 checks it.
fn volume_size(s: &str) -> Result<u64, String> {
    control_proto::parse_size(s).map_err(|e| e.to_string())
}

/// `dom0ctl xenstore ...`.
#[derive(Debug, Subcommand)]
pub enum XsCommand {
    /// A node and everything below it, with values (like `xenstore-ls -f`);
    /// `--perms` adds permissions.
    #[command(
        after_help = "Examples:\n  dom0ctl xenstore ls /local/domain/1\n  dom0ctl xenstore ls --json"
    )]
    Ls {
        #[arg(default_value = "/")]
        path: String,
        #[arg(short, long)]
        perms: bool,
        #[arg(long)]
        json: bool,
    },
    /// A node's value.
    #[command(after_help = "Example:\n  dom0ctl xenstore read /local/domain/1/name")]
    Read {
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Write a node (creating it and its parents).
    #[command(
        after_help = "Example:\n  dom0ctl xenstore write /local/domain/1/data/greeting hello"
    )]
    Write {
        path: String,
        value: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove a node and everything below it.
    #[command(after_help = "Example:\n  dom0ctl xenstore rm /local/domain/1/data/greeting")]
    Rm {
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Print each event of a watch on PATH (or @introduceDomain, @releaseDomain)
    /// until Ctrl-C. The first event comes at once, as with every XenStore watch.
    #[command(after_help = "Example:\n  dom0ctl xenstore watch /local/domain")]
    Watch {
        path: String,
        #[arg(long)]
        json: bool,
    },
}

/// `vcpu-pin`'s VCPU: one vCPU, or all of the domain's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuArg {
    /// vCPU N.
    One(u32),
    /// Every vCPU (`all`).
    All,
}

impl VcpuArg {
    /// The vCPU, `None` for all (as `Request::VcpuPin` carries it).
    pub fn number(self) -> Option<u32> {
        match self {
            VcpuArg::One(n) => Some(n),
            VcpuArg::All => None,
        }
    }
}

impl std::fmt::Display for VcpuArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VcpuArg::One(n) => write!(f, "{n}"),
            VcpuArg::All => f.write_str("all"),
        }
    }
}

/// A vCPU number or `all`.
fn vcpu_arg(s: &str) -> Result<VcpuArg, String> {
    if s == "all" {
        return Ok(VcpuArg::All);
    }
    match s.parse::<u32>() {
        Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) => Ok(VcpuArg::One(n)),
        _ => Err(format!("{s:?} is not a vCPU number (0, 1, ...) or \"all\"")),
    }
}

/// `vcpu-pin`'s HARD or SOFT: a CPU map, or `None` for `-` (leave it alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapArg(pub Option<control_proto::cpus::CpuMap>);

/// A CPU list in xl's syntax, or `-`, checked before anything is sent.
fn map_arg(s: &str) -> Result<MapArg, String> {
    if s == "-" {
        return Ok(MapArg(None));
    }
    control_proto::cpus::CpuMap::parse(s)
        .map(|m| MapArg(Some(m)))
        .map_err(|e| e.to_string())
}

/// A vif specification in xl's syntax, checked before anything is sent.
fn vif_spec(s: &str) -> Result<control_proto::vif::VifSpec, String> {
    control_proto::vif::VifSpec::parse(s).map_err(|e| e.to_string())
}

/// A disk specification in xl's syntax, checked before anything is sent.
fn disk_spec(s: &str) -> Result<control_proto::disk::DiskSpec, String> {
    control_proto::disk::DiskSpec::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("dom0ctl").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_with_overrides_and_console() {
        let cli = parse(&["create", "hello.toml", "memory=64", "name=x", "--console"]).unwrap();
        let Command::Create {
            config,
            overrides,
            console,
        } = cli.command
        else {
            panic!("not create");
        };
        assert_eq!(config, PathBuf::from("hello.toml"));
        assert_eq!(overrides, ["memory=64", "name=x"]);
        assert!(console);
        assert_eq!(cli.timeout, 30);
        assert_eq!(cli.socket, None);
    }

    #[test]
    fn global_options_anywhere() {
        let cli = parse(&["list", "--json", "--socket", "/x.sock", "--timeout", "5"]).unwrap();
        assert!(matches!(cli.command, Command::List { json: true }));
        assert_eq!(cli.socket, Some(PathBuf::from("/x.sock")));
        assert_eq!(cli.timeout, 5);
        let cli = parse(&["--socket=/y", "console", "hello", "--no-follow"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Console { ref dom, no_follow: true } if dom == "hello"
        ));
    }

    #[test]
    fn every_domain_command() {
        for c in ["pause", "unpause", "shutdown", "destroy"] {
            let cli = parse(&[c, "7"]).unwrap();
            let dom = match cli.command {
                Command::Pause { dom }
                | Command::Unpause { dom }
                | Command::Shutdown { dom, .. }
                | Command::Destroy { dom } => dom,
                other => panic!("{c} parsed as {other:?}"),
            };
            assert_eq!(dom, "7");
            assert_eq!(
                parse(&[c]).unwrap_err().kind(),
                ErrorKind::MissingRequiredArgument
            );
        }
        for c in ["info", "dmesg", "images", "shutdown-host"] {
            parse(&[c]).unwrap();
        }
    }

    #[test]
    fn volume_commands() {
        let cli = parse(&["volume", "create", "web", "64M", "--on", "data"]).unwrap();
        let Command::Volume(VolumeCommand::Create {
            name,
            size,
            on,
            force,
            json,
        }) = cli.command
        else {
            panic!("not volume create");
        };
        assert_eq!(
            (name.as_str(), size, on.as_deref(), force, json),
            ("web", 64 << 20, Some("data"), false, false)
        );
        let cli = parse(&["volume", "create", "x", "1G", "--on", "d", "--force"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Volume(VolumeCommand::Create { force: true, .. })
        ));
        assert!(matches!(
            parse(&["volume", "list", "--json"]).unwrap().command,
            Command::Volume(VolumeCommand::List { json: true })
        ));
        let cli = parse(&["volume", "rm", "web", "--on", "data"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Volume(VolumeCommand::Rm { ref name, on: Some(ref d) }) if name == "web" && d == "data"
        ));
        // Bad sizes and names are usage errors (exit 2), and --force needs --on.
        for bad in [
            &["volume", "create", "web", "64MB"][..],
            &["volume", "create", "web", "0"],
            &["volume", "create", "web", "1000"],
            &["volume", "create", "42", "1M"],
            &["volume", "create", "a b", "1M"],
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{bad:?}");
            assert_eq!(e.exit_code(), 2);
        }
        assert_eq!(
            parse(&["volume", "create", "web", "1M", "--force"])
                .unwrap_err()
                .kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["volume", "rm"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn vcpu_pin_arguments() {
        use control_proto::cpus::CpuMap;
        let pin = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::VcpuPin {
                dom,
                vcpu,
                hard,
                soft,
            }) => Ok((dom, vcpu, hard.0, soft.map(|s| s.0))),
            Ok(other) => panic!("{args:?} parsed as {other:?}"),
            Err(e) => Err(e),
        };
        let one = CpuMap::parse("1").unwrap();
        assert_eq!(
            pin(&["vcpu-pin", "hello", "0", "1"]).unwrap(),
            ("hello".into(), VcpuArg::One(0), Some(one), None)
        );
        assert_eq!(
            pin(&["vcpu-pin", "3", "all", "-", "0-1"]).unwrap(),
            ("3".into(), VcpuArg::All, None, Some(Some(CpuMap::first(2))))
        );
        assert_eq!(
            pin(&["vcpu-pin", "3", "2", "all,^0", "-"]).unwrap().3,
            Some(None)
        );
        // Bad vCPUs and CPU lists are usage errors with the parser's message.
        for (args, needle) in [
            (
                &["vcpu-pin", "h", "x", "1"][..],
                "\"x\" is not a vCPU number",
            ),
            (&["vcpu-pin", "h", "+1", "1"], "\"+1\" is not a vCPU number"),
            (
                &["vcpu-pin", "h", "0", "3-1"],
                "\"3-1\" is a reversed range",
            ),
            (&["vcpu-pin", "h", "0", "1", "^1"], "leaves no CPU"),
            (&["vcpu-pin", "h", "0", "256"], "names a CPU past 255"),
        ] {
            let e = pin(args).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ValueValidation, "{args:?}");
            assert!(e.to_string().contains(needle), "{args:?}: {e}");
            assert_eq!(e.exit_code(), 2);
        }
        assert_eq!(
            pin(&["vcpu-pin", "h", "0"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(VcpuArg::All.number(), None);
        assert_eq!(VcpuArg::One(4).to_string(), "4");
    }

    #[test]
    fn usage_errors() {
        assert_eq!(
            parse(&[]).unwrap_err().kind(),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
        assert_eq!(
            parse(&["frobnicate"]).unwrap_err().kind(),
            ErrorKind::InvalidSubcommand
        );
        assert_eq!(
            parse(&["create"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["list", "--timeout", "0"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["list", "--timeout", "soon"]).unwrap_err().kind(),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse(&["list", "--yaml"]).unwrap_err().kind(),
            ErrorKind::UnknownArgument
        );
        // Usage errors exit with 2, the documented code.
        assert_eq!(parse(&["frobnicate"]).unwrap_err().exit_code(), 2);
    }

    #[test]
    fn help_documents_exit_codes_and_examples() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("4  dom0 not reachable"));
        assert!(help.contains("dom0ctl create examples/hello.toml"));
    }
}
