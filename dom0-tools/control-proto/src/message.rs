//! The messages: [`Request`] (host to dom0), [`Response`] (dom0's answer, echoing
//! the request id) and [`Event`] (unsolicited, request id 0).
//!
//! Each has `kind()`, `encode(&self, &mut Vec<u8>)` (the payload alone) and
//! `decode(kind, payload)`, plus `write_frame` / `from_frame` that wrap them in a
//! [`Frame`]. The byte layout of every payload is in `docs/control-protocol.md`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::cpus::CpuMap;
use crate::disk::DiskSpec;
use crate::error::{DecodeError, ErrorCode, ErrorReply};
use crate::frame::{Frame, FrameTooLong, write_frame};
use crate::kind::{Class, Kind};
use crate::vif::VifSpec;
use crate::wire::{Reader, Writer};

/// Declares a fieldless enum whose variants are one byte on the wire, with its
/// numbers and lower-case names written once.
macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        pub enum $ty:ident {
            $( $(#[doc = $doc:literal])* $name:ident = $num:literal, $text:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $ty {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl $ty {
            /// Every value, in wire order.
            pub const ALL: &'static [$ty] = &[$($ty::$name),*];

            /// The value with wire number `n`, if there is one.
            pub const fn from_u8(n: u8) -> Option<Self> {
                match n {
                    $( $num => Some(Self::$name), )*
                    _ => None,
                }
            }

            /// The lower-case name used in configs, output and JSON.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$name => $text, )*
                }
            }

            /// The value named `s` (as [`as_str`](Self::as_str) spells it).
            pub fn from_name(s: &str) -> Option<Self> {
                match s {
                    $( $text => Some(Self::$name), )*
                    _ => None,
                }
            }

            fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                let v = r.u8()?;
                Self::from_u8(v).ok_or(DecodeError::BadTag { what: stringify!($ty), value: v })
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

byte_enum! {
    /// What dom0 does when a domain powers off, reboots or crashes. xl's names.
    pub enum ExitAction {
        /// Tear the domain down and free its memory (xl's default for poweroff and
        /// crash).
        Destroy = 0, "destroy";
        /// Keep the dead domain, its memory and console log until `destroy`.
        Preserve = 1, "preserve";
        /// Destroy it and build it again from its config: same name and UUID, a new
        /// id (xl's default for reboot). Since version 2, additive.
        Restart = 2, "restart";
    }
}

byte_enum! {
    /// A domain's run state. The number is also the position of its letter in
    /// xl's six-column flags (`r b p s c d`).
    pub enum DomState {
        /// Running on a CPU, or runnable.
        Running = 0, "running";
        /// Waiting for an event.
        Blocked = 1, "blocked";
        /// Paused by the toolstack.
        Paused = 2, "paused";
        /// Shut down (see the reason), kept by `preserve`.
        Shutdown = 3, "shutdown";
        /// Crashed, kept by `on_crash = "preserve"`.
        Crashed = 4, "crashed";
        /// Being destroyed.
        Dying = 5, "dying";
    }
}

byte_enum! {
    /// Why a domain shut down. The numbers are Xen's `SHUTDOWN_*` values.
    pub enum ShutdownReason {
        /// `SHUTDOWN_poweroff`.
        Poweroff = 0, "poweroff";
        /// `SHUTDOWN_reboot`.
        Reboot = 1, "reboot";
        /// `SHUTDOWN_suspend`.
        Suspend = 2, "suspend";
        /// `SHUTDOWN_crash`.
        Crash = 3, "crash";
        /// `SHUTDOWN_watchdog`.
        Watchdog = 4, "watchdog";
    }
}

byte_enum! {
    /// What the first sectors of a disk hold, as the volume table sees them.
    pub enum TableState {
        /// Zeros: no volume table yet (`volume create` makes one).
        Blank = 0, "blank";
        /// A volume table.
        Volumes = 1, "volumes";
        /// Data that is not a volume table (refused unless `--force`).
        Data = 2, "data";
        /// A volume table whose copies both fail their checks.
        Damaged = 3, "damaged";
        /// The disk failed the read.
        Unreadable = 4, "unreadable";
    }
}

impl DomState {
    /// xl's state column: six places `rbpscd`, with this state's letter in its
    /// place and `-` elsewhere (`"-b----"` for blocked).
    pub const fn xl_flags(self) -> &'static str {
        match self {
            Self::Running => "r-----",
            Self::Blocked => "-b----",
            Self::Paused => "--p---",
            Self::Shutdown => "---s--",
            Self::Crashed => "----c-",
            Self::Dying => "-----d",
        }
    }
}

/// A domain named by id or by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomRef {
    /// A domain id.
    Id(u16),
    /// A domain name.
    Name(String),
}

impl DomRef {
    /// A decimal number that fits a domain id is an id; anything else is a name.
    /// (Names cannot be all digits, so this never hides a domain.)
    pub fn parse(s: &str) -> DomRef {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = s.parse::<u16>() {
                return DomRef::Id(id);
            }
        }
        DomRef::Name(String::from(s))
    }

    fn encode(&self, w: &mut Writer<'_>) {
        match self {
            DomRef::Id(id) => {
                w.u8(0);
                w.u16(*id);
            }
            DomRef::Name(name) => {
                w.u8(1);
                w.str(name);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(DomRef::Id(r.u16()?)),
            1 => Ok(DomRef::Name(r.string()?)),
            v => Err(DecodeError::BadTag {
                what: "DomRef",
                value: v,
            }),
        }
    }
}

impl fmt::Display for DomRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomRef::Id(id) => write!(f, "{id}"),
            DomRef::Name(name) => f.write_str(name),
        }
    }
}

/// Where a new domain's kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// An image dom0 already holds (a boot module), by name.
    Named(String),
    /// A finished upload, by the id from [`Response::UploadReady`].
    Uploaded(u32),
}

impl Kernel {
    fn encode(&self, w: &mut Writer<'_>) {
        match self {
            Kernel::Named(name) => {
                w.u8(0);
                w.str(name);
            }
            Kernel::Uploaded(id) => {
                w.u8(1);
                w.u32(*id);
            }
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = r.u8()?;
        Self::decode_tagged(tag, r)
    }

    /// The rest of a kernel whose tag byte was `tag`.
    fn decode_tagged(tag: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match tag {
            0 => Ok(Kernel::Named(r.string()?)),
            1 => Ok(Kernel::Uploaded(r.u32()?)),
            v => Err(DecodeError::BadTag {
                what: "Kernel",
                value: v,
            }),
        }
    }
}

/// `Create`'s ramdisk tag when it has none but `cpus` follow.
const NO_RAMDISK: u8 = 2;

/// A `list<CpuMap>` (`Create`'s `cpus` and `cpus_soft`).
fn encode_maps(w: &mut Writer<'_>, maps: &[CpuMap]) {
    w.len(maps.len());
    for m in maps {
        w.bytes(&m.to_wire());
    }
}

/// Reads [`encode_maps`]'s form; each map has one encoding.
fn decode_maps(r: &mut Reader<'_>) -> Result<Vec<CpuMap>, DecodeError> {
    r.list(decode_map)
}

/// One `CpuMap` (`bytes`, [`CpuMap::to_wire`]'s one encoding).
fn decode_map(r: &mut Reader<'_>) -> Result<CpuMap, DecodeError> {
    let b = r.bytes()?;
    CpuMap::from_wire(&b).ok_or(DecodeError::BadTag {
        what: "cpumap length (past 256 CPUs, or a zero last byte)",
        value: u8::try_from(b.len()).unwrap_or(u8::MAX),
    })
}

/// The body of [`Request::Create`]: an xl.cfg in brief.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CreateRequest {
    /// The new domain's name (see [`validate_name`](crate::validate_name)).
    pub name: String,
    /// The PV kernel to boot.
    pub kernel: Kernel,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The kernel command line (`start_info.cmd_line`).
    pub cmdline: String,
    /// What to do when the domain powers off.
    pub on_poweroff: ExitAction,
    /// What to do when the domain crashes.
    pub on_crash: ExitAction,
    /// What to do when the domain reboots (xl's default: `Restart`). Since version 2,
    /// additive: sent only when not `Restart`, after the disk list (which is then sent
    /// even when empty), so an older dom0 refuses the request as malformed instead of
    /// restarting the domain.
    pub on_reboot: ExitAction,
    /// The domain's UUID (`/vm/UUID`); dom0 makes one up when absent. Since
    /// version 2.
    pub uuid: Option<[u8; 16]>,
    /// The domain's disks (`disk = [...]`). Since version 2, additive: sent only
    /// when not empty, so an older dom0 refuses a request with disks as
    /// malformed instead of ignoring them.
    pub disks: Vec<DiskSpec>,
    /// The domain's network interfaces (`vif = [...]`). Since version 2,
    /// additive: sent only when not empty, after the disk list and `on_reboot`
    /// (both then sent), so an older dom0 refuses it as malformed.
    pub vifs: Vec<VifSpec>,
    /// The initial ramdisk (`ramdisk = "PATH"`: an upload, or an image dom0 has),
    /// the start_info module. Since version 2, additive: sent only when present,
    /// after the vif list (every earlier field then sent), so an older dom0
    /// refuses it as malformed.
    pub ramdisk: Option<Kernel>,
    /// The vCPUs' hard affinity (`cpus =`): vCPU i may run only on the CPUs of
    /// `cpus[i]`; vCPUs past the list, on every CPU (their map is not set).
    /// Since version 2, additive: sent only when not empty, after the ramdisk
    /// (sent as tag 2, "none", when the domain has no ramdisk), so an older
    /// dom0 refuses it as malformed instead of ignoring the pinning.
    pub cpus: Vec<CpuMap>,
    /// The vCPUs' soft affinity (`cpus_soft =`): vCPU i prefers the CPUs of
    /// `cpus_soft[i]`; vCPUs past the list, none (their map is not set). Since
    /// version 2, additive: sent only when not empty, after `cpus` (then sent
    /// too, with count 0 when empty), so an older dom0 refuses it as malformed
    /// instead of ignoring the preference.
    pub cpus_soft: Vec<CpuMap>,
}

/// One row of [`Response::Vcpus`]: a vCPU's state and affinity, as `xl vcpu-list`
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VcpuRow {
    /// The vCPU's number.
    pub vcpu: u32,
    /// Up, blocked, running, its CPU and time (`getvcpuinfo`).
    pub state: VcpuState,
    /// The CPUs it may run on (`getvcpuaffinity`, the map as set).
    pub hard: CpuMap,
    /// The CPUs it prefers.
    pub soft: CpuMap,
}

/// A vCPU's state, as `XEN_DOMCTL_getvcpuinfo` gives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VcpuState {
    /// Up (not `VCPUOP_down`).
    pub online: bool,
    /// Waiting for an event.
    pub blocked: bool,
    /// On a CPU now.
    pub running: bool,
    /// The CPU it runs on, or last ran on.
    pub cpu: u32,
    /// Time it has run, in ns.
    pub time_ns: u64,
}

/// One node of [`Response::XsNodes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct XsNode {
    /// Absolute path.
    pub path: String,
    /// Value.
    pub value: Vec<u8>,
    /// Permissions in `xenstore-ls -p` form (`n0,r3`).
    pub perms: String,
}

/// The body of [`Response::Info`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostInfo {
    /// The Xen ABI major version the hypervisor reports (4).
    pub xen_major: u32,
    /// The Xen ABI minor version (17).
    pub xen_minor: u32,
    /// `XENVER_extraversion` (".0-xlhv", say).
    pub xen_extra: String,
    /// Machine memory the hypervisor manages, in KiB.
    pub total_kib: u64,
    /// Free machine memory, in KiB.
    pub free_kib: u64,
    /// Free machine frames (4 KiB pages).
    pub free_frames: u64,
    /// Physical CPUs.
    pub nr_cpus: u32,
    /// CPU (TSC) frequency in kHz.
    pub cpu_khz: u32,
    /// Domains that exist, dom0 included.
    pub domains: u32,
    /// Frames dom0's own frame allocator can still hand out (its free memory,
    /// upload buffers come from it).
    pub dom0_free_frames: u64,
    /// The net back end's bridges. On the wire an additive tail, sent only
    /// when there is a bridge (so an older `dom0ctl` still reads the rest).
    pub bridges: Vec<BridgeInfo>,
}

/// One bridge of dom0's net back end, as `brctl show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BridgeInfo {
    /// Its name (`xenbr0`).
    pub name: String,
    /// Its ports: `vifD.N` for vif N of domain D, the NIC's name (`eth0`) for
    /// the uplink.
    pub ports: Vec<String>,
    /// MAC addresses its switch has learned.
    pub learned: u32,
}

/// One row of [`Response::Domains`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DomainInfo {
    /// Domain id.
    pub id: u16,
    /// Domain name (dom0 is "Domain-0").
    pub name: String,
    /// Run state.
    pub state: DomState,
    /// Why it shut down, once it has.
    pub shutdown_reason: Option<ShutdownReason>,
    /// Memory it holds now, in KiB.
    pub memory_kib: u64,
    /// Memory it may hold, in KiB.
    pub max_memory_kib: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// CPU time used by all its vCPUs, in ns.
    pub cpu_time_ns: u64,
    /// Time since it was created, in ns.
    pub uptime_ns: u64,
}

/// One row of [`Response::Images`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageInfo {
    /// The name to use as `image = "..."` in a config.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// One row of [`Response::Devices`]: a PCI function dom0 found.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceRow {
    /// `bus:device.function`, as `00:04.0`.
    pub bdf: String,
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// What dom0 does with it: `virtio-blk disk data`, `control link`, or empty.
    pub driver: String,
    /// dom0's one-line description (class name, BARs, interrupt).
    pub detail: String,
}

/// One row of [`Response::Blocks`]: a virtual block device of a domain, with
/// `xl block-list`'s columns and the back end's counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockRow {
    /// The virtual-device number.
    pub devid: u32,
    /// The guest's name for it (`xvda`).
    pub vdev: String,
    /// The disk or volume behind it.
    pub target: String,
    /// `w` or `r`.
    pub mode: String,
    /// The back end's XenbusState.
    pub be_state: u32,
    /// The front end's XenbusState (0: none yet).
    pub fe_state: u32,
    /// The front end's event channel (-1: not connected).
    pub evtchn: i32,
    /// The front end's first ring reference (-1: not connected).
    pub ring_ref: i32,
    /// The back end's xenstore directory.
    pub be_path: String,
    /// Requests served: reads, writes, flushes, discards.
    pub requests: [u64; 4],
    /// Sectors read and written.
    pub sectors: [u64; 2],
    /// Requests answered with an error.
    pub errors: u64,
}

/// One row of [`Response::Networks`]: a vif of a domain, with `xl
/// network-list`'s columns and the back end's counters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VifRow {
    /// The vif number (`device/vif/N`).
    pub devid: u32,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The bridge it is on.
    pub bridge: String,
    /// The back end's XenbusState.
    pub be_state: u32,
    /// The front end's XenbusState (0: none yet).
    pub fe_state: u32,
    /// The front end's (TX) event channel (-1: not connected).
    pub evtchn: i32,
    /// The TX ring reference (-1: not connected).
    pub tx_ring_ref: i32,
    /// The RX ring reference (-1: not connected).
    pub rx_ring_ref: i32,
    /// The back end's xenstore directory.
    pub be_path: String,
    /// Packets and bytes the guest sent, packets refused; frames and bytes it
    /// got, frames dropped on the way to it.
    pub counters: [u64; 6],
}

/// One volume of [`Response::Volumes`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeInfo {
    /// Its name (the rules of domain names).
    pub name: String,
    /// The disk it is carved from.
    pub disk: String,
    /// Its first sector on the disk.
    pub start: u64,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
    /// The domains that use it.
    pub users: Vec<u16>,
}

/// One disk of [`Response::Volumes`]: a disk dom0 drives, as the volume table
/// sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeDisk {
    /// Its name.
    pub name: String,
    /// Its size in 512-byte sectors.
    pub sectors: u64,
    /// Whether it refuses writes.
    pub readonly: bool,
    /// What its first sectors hold.
    pub table: TableState,
    /// The largest volume it could take now, in sectors (0 unless `Blank` or
    /// `Volumes`).
    pub free_sectors: u64,
}

/// Host to dom0. Each is answered by exactly one [`Response`] with its request id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Request {
    /// The first request of a session: says which protocol the client speaks, and
    /// resets the agent's session state (console attachment, unfinished uploads).
    /// Answer: [`Response::HelloOk`].
    Hello {
        /// The protocol version the client speaks ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)).
        client_version: u32,
    },
    /// Host facts. Answer: [`Response::Info`].
    Info,
    /// Every domain. Answer: [`Response::Domains`].
    List,
    /// Build and start a domain. Answer: [`Response::Created`].
    Create(CreateRequest),
    /// Pause a domain. Answer: [`Response::Ok`].
    Pause(DomRef),
    /// Unpause a domain. Answer: [`Response::Ok`].
    Unpause(DomRef),
    /// Ask a domain to shut down cleanly (like `xl shutdown`). Answer:
    /// [`Response::Ok`] once asked, not once it is down.
    Shutdown(DomRef),
    /// Tear a domain down now. Answer: [`Response::Ok`].
    Destroy(DomRef),
    /// A domain's console log so far (bounded). Answer: [`Response::Console`].
    ConsoleRead {
        /// The domain.
        dom: DomRef,
    },
    /// Attach to a domain's console. Answer: [`Response::Console`] with the log
    /// so far; from then on dom0 sends [`Event::ConsoleOutput`] for new output
    /// until [`Request::ConsoleDetach`], a new `Hello`, or [`Event::ConsoleClosed`].
    ConsoleAttach {
        /// The domain.
        dom: DomRef,
    },
    /// Bytes typed at a domain's console. Answer: [`Response::Ok`].
    ConsoleInput {
        /// The domain.
        dom: DomRef,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Stop the console stream. Answer: [`Response::Ok`] (also when not attached).
    ConsoleDetach,
    /// Start an upload of `size` bytes. Answer: [`Response::UploadReady`].
    UploadBegin {
        /// Total size in bytes.
        size: u64,
        /// CRC-32 of all the bytes, checked at [`Request::UploadEnd`].
        crc32: u32,
    },
    /// The next piece of an upload; `offset` must equal the bytes received so far.
    /// Answer: [`Response::UploadAck`].
    UploadChunk {
        /// The upload id.
        upload: u32,
        /// Where `data` goes.
        offset: u64,
        /// At most the `chunk_max` of [`Response::UploadReady`] bytes.
        data: Vec<u8>,
    },
    /// All bytes sent: check size and CRC. Answer: [`Response::Uploaded`].
    UploadEnd {
        /// The upload id.
        upload: u32,
    },
    /// The named images dom0 holds. Answer: [`Response::Images`].
    Images,
    /// The PCI functions dom0 found and what it drives.
    /// Answer: [`Response::Devices`].
    Devices,
    /// A domain's virtual block devices (`xl block-list`). Answer: [`Response::Blocks`].
    BlockList(DomRef),
    /// Give a running domain another disk (`xl block-attach`). Answer: [`Response::Ok`].
    BlockAttach {
        /// The domain.
        dom: DomRef,
        /// The disk, as a config's `disk = [...]` entry.
        disk: DiskSpec,
    },
    /// Take a disk away from a running domain (`xl block-detach`). Answer: [`Response::Ok`].
    BlockDetach {
        /// The domain.
        dom: DomRef,
        /// The guest's name for the disk (`xvdb`) or its number.
        vdev: String,
    },
    /// A domain's vifs (`xl network-list`). Answer: [`Response::Networks`].
    NetworkList(DomRef),
    /// A domain's vCPUs and their affinity (`xl vcpu-list`). Answer:
    /// [`Response::Vcpus`].
    VcpuList(DomRef),
    /// Set the hard and/or soft affinity of one vCPU of a domain, or of all
    /// (`xl vcpu-pin`). Answer: [`Response::Ok`]. Since version 2, additive (an
    /// older agent answers it as an unknown kind).
    VcpuPin {
        /// The domain.
        dom: DomRef,
        /// The vCPU; `None`: every vCPU of the domain.
        vcpu: Option<u32>,
        /// The new hard map; `None`: left alone.
        hard: Option<CpuMap>,
        /// The new soft map; `None`: left alone. The agent refuses a request
        /// with neither map.
        soft: Option<CpuMap>,
    },
    /// Give a running domain another vif (`xl network-attach`). Answer: [`Response::Ok`].
    NetworkAttach {
        /// The domain.
        dom: DomRef,
        /// The vif, as a config's `vif = [...]` entry.
        vif: VifSpec,
    },
    /// Take a vif away from a running domain (`xl network-detach`). Answer: [`Response::Ok`].
    NetworkDetach {
        /// The domain.
        dom: DomRef,
        /// The vif's number or its MAC.
        vif: String,
    },
    /// The hypervisor's log ring. Answer: [`Response::Dmesg`].
    Dmesg,
    /// Stop the machine. Answer: [`Response::Ok`], then the link goes away.
    ShutdownHost,
    /// Ask a domain to shut down (`poweroff`) or reboot (`reboot`) itself:
    /// dom0 writes its `control/shutdown` node, as `xl shutdown`/`xl reboot` do.
    /// Answer: [`Response::Ok`] once written. Since version 2.
    AskShutdown {
        /// The domain.
        dom: DomRef,
        /// `Poweroff` or `Reboot`.
        reason: ShutdownReason,
    },
    /// Read a XenStore node as dom0. Answer: [`Response::XsValue`].
    XsRead {
        /// Absolute path.
        path: String,
    },
    /// Write a XenStore node as dom0. Answer: [`Response::Ok`].
    XsWrite {
        /// Absolute path.
        path: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove a XenStore node and its children as dom0. Answer: [`Response::Ok`].
    XsRm {
        /// Absolute path.
        path: String,
    },
    /// A node and everything below it (values and permissions). Answer:
    /// [`Response::XsNodes`].
    XsList {
        /// Absolute path.
        path: String,
    },
    /// Watch a path (or `@introduceDomain`/`@releaseDomain`) as dom0. Answer:
    /// [`Response::Ok`]; then [`Event::XsWatchEvent`]s until
    /// [`Request::XsUnwatch`] or a new `Hello`. One watch per session: a new one
    /// replaces it.
    XsWatch {
        /// The path.
        path: String,
    },
    /// Stop the session's watch. Answer: [`Response::Ok`].
    XsUnwatch,
    /// Carve a volume out of a disk (`dom0ctl volume create`). Answer:
    /// [`Response::Volumes`] with the new volume and its disk.
    VolumeCreate {
        /// Its name (checked as a domain name is).
        name: String,
        /// Its size in bytes: whole 512-byte sectors.
        size: u64,
        /// The disk (`--on`), else the first disk with a table and room.
        disk: Option<String>,
        /// Initialise a volume table on a disk that holds other data.
        force: bool,
    },
    /// Every volume and every disk. Answer: [`Response::Volumes`].
    VolumeList,
    /// Remove a volume (its sectors become free). Answer: [`Response::Ok`].
    VolumeRm {
        /// Its name.
        name: String,
        /// Its disk, when several disks have a volume of that name.
        disk: Option<String>,
    },
}

/// Dom0 to host: the answer to one [`Request`], or [`Response::Error`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    /// Answers `Hello`.
    HelloOk {
        /// The protocol version the agent will speak.
        protocol: u8,
        /// The agent's name and version ("xlhv-dom0 0.1.0").
        agent: String,
        /// The hypervisor's name and version ("xen-like-hv 0.1.0 (Xen 4.17 ABI)").
        hypervisor: String,
    },
    /// Done; nothing to report.
    Ok,
    /// Answers `Info`.
    Info(HostInfo),
    /// Answers `List`, in domain id order.
    Domains(Vec<DomainInfo>),
    /// Answers `Create`.
    Created {
        /// The new domain's id.
        domid: u16,
    },
    /// Answers `ConsoleRead` and `ConsoleAttach`: the log so far.
    Console {
        /// Raw console bytes.
        data: Vec<u8>,
    },
    /// Answers `UploadBegin`.
    UploadReady {
        /// The upload id for the chunks, the end, and [`Kernel::Uploaded`].
        upload: u32,
        /// The largest chunk dom0 takes, in bytes.
        chunk_max: u32,
    },
    /// Answers `UploadChunk`.
    UploadAck {
        /// The upload id.
        upload: u32,
        /// Bytes received so far.
        received: u64,
    },
    /// Answers `UploadEnd`: size and CRC-32 match; the upload can be used.
    Uploaded {
        /// The upload id.
        upload: u32,
    },
    /// Answers `Images`.
    Images(Vec<ImageInfo>),
    /// Answers `Devices`.
    Devices(Vec<DeviceRow>),
    /// Answers `BlockList`.
    Blocks(Vec<BlockRow>),
    /// Answers `NetworkList`.
    Networks(Vec<VifRow>),
    /// Answers `VcpuList`.
    Vcpus {
        /// The domain's id.
        domid: u16,
        /// Its name.
        name: String,
        /// The machine's CPUs (a map holding `0..nr_cpus` is shown as `all`).
        nr_cpus: u32,
        /// One row per vCPU, by number.
        vcpus: Vec<VcpuRow>,
    },
    /// Answers `VolumeList` (every volume, every disk) and `VolumeCreate`
    /// (the new volume and its disk).
    Volumes {
        /// Volumes, by disk, then by place on it.
        volumes: Vec<VolumeInfo>,
        /// Disks, in dom0's order.
        disks: Vec<VolumeDisk>,
    },
    /// Answers `Dmesg`.
    Dmesg {
        /// The log ring's bytes.
        text: Vec<u8>,
    },
    /// Answers `XsRead`.
    XsValue {
        /// The node's value.
        value: Vec<u8>,
    },
    /// Answers `XsList`: the node, then its descendants depth first.
    XsNodes {
        /// The nodes.
        nodes: Vec<XsNode>,
        /// Whether more did not fit in one reply.
        truncated: bool,
    },
    /// The request failed.
    Error(ErrorReply),
}

/// Dom0 to host, unsolicited (request id 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// New output on the attached console.
    ConsoleOutput {
        /// The domain.
        domid: u16,
        /// Raw console bytes.
        data: Vec<u8>,
    },
    /// The attached console ended (the domain is gone); the stream stops.
    ConsoleClosed {
        /// The domain.
        domid: u16,
        /// Why, for a human ("domain destroyed").
        reason: String,
    },
    /// The session's XenStore watch fired. Since version 2.
    XsWatchEvent {
        /// The path that changed (or the `@` name).
        path: String,
        /// The watch's token.
        token: String,
    },
}

/// Any message, for a reader that takes every class (the host's client).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Host to dom0.
    Request(Request),
    /// Dom0's answer.
    Response(Response),
    /// Dom0's unsolicited news.
    Event(Event),
}

impl Request {
    /// The frame kind that carries this request.
    pub fn kind(&self) -> Kind {
        match self {
            Request::Hello { .. } => Kind::Hello,
            Request::Info => Kind::Info,
            Request::List => Kind::List,
            Request::Create(_) => Kind::Create,
            Request::Pause(_) => Kind::Pause,
            Request::Unpause(_) => Kind::Unpause,
            Request::Shutdown(_) => Kind::Shutdown,
            Request::Destroy(_) => Kind::Destroy,
            Request::ConsoleRead { .. } => Kind::ConsoleRead,
            Request::ConsoleAttach { .. } => Kind::ConsoleAttach,
            Request::ConsoleInput { .. } => Kind::ConsoleInput,
            Request::ConsoleDetach => Kind::ConsoleDetach,
            Request::UploadBegin { .. } => Kind::UploadBegin,
            Request::UploadChunk { .. } => Kind::UploadChunk,
            Request::UploadEnd { .. } => Kind::UploadEnd,
            Request::Images => Kind::Images,
            Request::Devices => Kind::Devices,
            Request::BlockList(_) => Kind::BlockList,
            Request::BlockAttach { .. } => Kind::BlockAttach,
            Request::BlockDetach { .. } => Kind::BlockDetach,
            Request::NetworkList(_) => Kind::NetworkList,
            Request::VcpuList(_) => Kind::VcpuList,
            Request::VcpuPin { .. } => Kind::VcpuPin,
            Request::NetworkAttach { .. } => Kind::NetworkAttach,
            Request::NetworkDetach { .. } => Kind::NetworkDetach,
            Request::Dmesg => Kind::Dmesg,
            Request::ShutdownHost => Kind::ShutdownHost,
            Request::AskShutdown { .. } => Kind::AskShutdown,
            Request::XsRead { .. } => Kind::XsRead,
            Request::XsWrite { .. } => Kind::XsWrite,
            Request::XsRm { .. } => Kind::XsRm,
            Request::XsList { .. } => Kind::XsList,
            Request::XsWatch { .. } => Kind::XsWatch,
            Request::XsUnwatch => Kind::XsUnwatch,
            Request::VolumeCreate { .. } => Kind::VolumeCreate,
            Request::VolumeList => Kind::VolumeList,
            Request::VolumeRm { .. } => Kind::VolumeRm,
        }
    }

    /// Appends the payload (not the frame) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match self {
            Request::Hello { client_version } => w.u32(*client_version),
            Request::Info
            | Request::List
            | Request::ConsoleDetach
            | Request::Images
            | Request::Devices
            | Request::Dmesg
            | Request::ShutdownHost
            | Request::XsUnwatch
            | Request::VolumeList => {}
            Request::VolumeCreate {
                name,
                size,
                disk,
                force,
            } => {
                w.str(name);
                w.u64(*size);
                opt_str(&mut w, disk.as_deref());
                w.u8(u8::from(*force));
            }
            Request::VolumeRm { name, disk } => {
                w.str(name);
                opt_str(&mut w, disk.as_deref());
            }
            Request::AskShutdown { dom, reason } => {
                dom.encode(&mut w);
                w.u8(*reason as u8);
            }
            Request::BlockList(dom) | Request::NetworkList(dom) | Request::VcpuList(dom) => {
                dom.encode(&mut w)
            }
            Request::VcpuPin {
                dom,
                vcpu,
                hard,
                soft,
            } => {
                dom.encode(&mut w);
                match vcpu {
                    None => w.u8(0),
                    Some(n) => {
                        w.u8(1);
                        w.u32(*n);
                    }
                }
                for map in [hard, soft] {
                    match map {
                        None => w.u8(0),
                        Some(m) => {
                            w.u8(1);
                            w.bytes(&m.to_wire());
                        }
                    }
                }
            }
            Request::NetworkAttach { dom, vif } => {
                dom.encode(&mut w);
                w.str(&vif.to_string());
            }
            Request::NetworkDetach { dom, vif } => {
                dom.encode(&mut w);
                w.str(vif);
            }
            Request::BlockAttach { dom, disk } => {
                dom.encode(&mut w);
                w.str(&disk.to_string());
            }
            Request::BlockDetach { dom, vdev } => {
                dom.encode(&mut w);
                w.str(vdev);
            }
            Request::XsRead { path }
            | Request::XsRm { path }
            | Request::XsList { path }
            | Request::XsWatch { path } => w.str(path),
            Request::XsWrite { path, value } => {
                w.str(path);
                w.bytes(value);
            }
            Request::Create(c) => {
                w.str(&c.name);
                c.kernel.encode(&mut w);
                w.u32(c.memory_mib);
                w.u32(c.vcpus);
                w.str(&c.cmdline);
                w.u8(c.on_poweroff as u8);
                w.u8(c.on_crash as u8);
                match &c.uuid {
                    None => w.u8(0),
                    Some(u) => {
                        w.u8(1);
                        w.bytes(u);
                    }
                }
                let soft = !c.cpus_soft.is_empty();
                let cpus = !c.cpus.is_empty() || soft;
                let ramdisk = c.ramdisk.is_some() || cpus;
                let vifs = !c.vifs.is_empty() || ramdisk;
                let reboot = c.on_reboot != ExitAction::Restart || vifs;
                if !c.disks.is_empty() || reboot {
                    w.u32(u32::try_from(c.disks.len()).unwrap_or(u32::MAX));
                    for d in &c.disks {
                        w.str(&d.to_string());
                    }
                }
                if reboot {
                    w.u8(c.on_reboot as u8);
                }
                if vifs {
                    w.u32(u32::try_from(c.vifs.len()).unwrap_or(u32::MAX));
                    for v in &c.vifs {
                        w.str(&v.to_string());
                    }
                }
                match &c.ramdisk {
                    Some(rd) => rd.encode(&mut w),
                    None if cpus => w.u8(NO_RAMDISK),
                    None => {}
                }
                if cpus {
                    encode_maps(&mut w, &c.cpus);
                }
                if soft {
                    encode_maps(&mut w, &c.cpus_soft);
                }
            }
            Request::Pause(d)
            | Request::Unpause(d)
            | Request::Shutdown(d)
            | Request::Destroy(d)
            | Request::ConsoleRead { dom: d }
            | Request::ConsoleAttach { dom: d } => d.encode(&mut w),
            Request::ConsoleInput { dom, data } => {
                dom.encode(&mut w);
                w.bytes(data);
            }
            Request::UploadBegin { size, crc32 } => {
                w.u64(*size);
                w.u32(*crc32);
            }
            Request::UploadChunk {
                upload,
                offset,
                data,
            } => {
                w.u32(*upload);
                w.u64(*offset);
                w.bytes(data);
            }
            Request::UploadEnd { upload } => w.u32(*upload),
        }
    }

    /// Decodes the payload of a frame of kind `kind`. Every byte must be used.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let kind = expect_class(kind, Class::Request)?;
        let mut r = Reader::new(payload);
        let req = match kind {
            Kind::Hello => Request::Hello {
                client_version: r.u32()?,
            },
            Kind::Info => Request::Info,
            Kind::List => Request::List,
            Kind::Create => {
                let name = r.string()?;
                let kernel = Kernel::decode(&mut r)?;
                Request::Create(CreateRequest {
                    name,
                    kernel,
                    memory_mib: r.u32()?,
                    vcpus: r.u32()?,
                    cmdline: r.string()?,
                    on_poweroff: ExitAction::decode(&mut r)?,
                    on_crash: ExitAction::decode(&mut r)?,
                    uuid: r.option(|r| {
                        let b = r.bytes()?;
                        <[u8; 16]>::try_from(b.as_slice()).map_err(|_| DecodeError::BadTag {
                            what: "uuid length",
                            value: u8::try_from(b.len()).unwrap_or(u8::MAX),
                        })
                    })?,
                    disks: if r.is_at_end() {
                        Vec::new()
                    } else {
                        r.list(|r| {
                            DiskSpec::parse(&r.string()?).map_err(|_| DecodeError::BadTag {
                                what: "disk specification (unparsable)",
                                value: 0,
                            })
                        })?
                    },
                    on_reboot: if r.is_at_end() {
                        ExitAction::Restart
                    } else {
                        ExitAction::decode(&mut r)?
                    },
                    vifs: if r.is_at_end() {
                        Vec::new()
                    } else {
                        r.list(|r| {
                            VifSpec::parse(&r.string()?).map_err(|_| DecodeError::BadTag {
                                what: "vif specification (unparsable)",
                                value: 0,
                            })
                        })?
                    },
                    ramdisk: if r.is_at_end() {
                        None
                    } else {
                        match r.u8()? {
                            NO_RAMDISK if !r.is_at_end() => None,
                            tag => Some(Kernel::decode_tagged(tag, &mut r)?),
                        }
                    },
                    cpus: if r.is_at_end() {
                        Vec::new()
                    } else {
                        let maps = decode_maps(&mut r)?;
                        if maps.is_empty() && r.is_at_end() {
                            // An empty list is sent as nothing, unless soft maps follow.
                            return Err(DecodeError::BadTag {
                                what: "cpus count",
                                value: 0,
                            });
                        }
                        maps
                    },
                    cpus_soft: if r.is_at_end() {
                        Vec::new()
                    } else {
                        let maps = decode_maps(&mut r)?;
                        if maps.is_empty() {
                            // An empty list is sent as nothing.
                            return Err(DecodeError::BadTag {
                                what: "cpus_soft count",
                                value: 0,
                            });
                        }
                        maps
                    },
                })
            }
            Kind::Pause => Request::Pause(DomRef::decode(&mut r)?),
            Kind::Unpause => Request::Unpause(DomRef::decode(&mut r)?),
            Kind::Shutdown => Request::Shutdown(DomRef::decode(&mut r)?),
            Kind::Destroy => Request::Destroy(DomRef::decode(&mut r)?),
            Kind::ConsoleRead => Request::ConsoleRead {
                dom: DomRef::decode(&mut r)?,
            },
            Kind::ConsoleAttach => Request::ConsoleAttach {
                dom: DomRef::decode(&mut r)?,
            },
            Kind::ConsoleInput => Request::ConsoleInput {
                dom: DomRef::decode(&mut r)?,
                data: r.bytes()?,
            },
            Kind::ConsoleDetach => Request::ConsoleDetach,
            Kind::UploadBegin => Request::UploadBegin {
                size: r.u64()?,
                crc32: r.u32()?,
            },
            Kind::UploadChunk => Request::UploadChunk {
                upload: r.u32()?,
                offset: r.u64()?,
                data: r.bytes()?,
            },
            Kind::UploadEnd => Request::UploadEnd { upload: r.u32()? },
            Kind::Images => Request::Images,
            Kind::Devices => Request::Devices,
            Kind::BlockList => Request::BlockList(DomRef::decode(&mut r)?),
            Kind::BlockAttach => Request::BlockAttach {
                dom: DomRef::decode(&mut r)?,
                disk: DiskSpec::parse(&r.string()?).map_err(|_| DecodeError::BadTag {
                    what: "disk specification (unparsable)",
                    value: 0,
                })?,
            },
            Kind::BlockDetach => Request::BlockDetach {
                dom: DomRef::decode(&mut r)?,
                vdev: r.string()?,
            },
            Kind::NetworkList => Request::NetworkList(DomRef::decode(&mut r)?),
            Kind::VcpuList => Request::VcpuList(DomRef::decode(&mut r)?),
            Kind::VcpuPin => Request::VcpuPin {
                dom: DomRef::decode(&mut r)?,
                vcpu: r.option(Reader::u32)?,
                hard: r.option(decode_map)?,
                soft: r.option(decode_map)?,
            },
            Kind::NetworkAttach => Request::NetworkAttach {
                dom: DomRef::decode(&mut r)?,
                vif: VifSpec::parse(&r.string()?).map_err(|_| DecodeError::BadTag {
                    what: "vif specification (unparsable)",
                    value: 0,
                })?,
            },
            Kind::NetworkDetach => Request::NetworkDetach {
                dom: DomRef::decode(&mut r)?,
                vif: r.string()?,
            },
            Kind::Dmesg => Request::Dmesg,
            Kind::ShutdownHost => Request::ShutdownHost,
            Kind::AskShutdown => Request::AskShutdown {
                dom: DomRef::decode(&mut r)?,
                reason: ShutdownReason::decode(&mut r)?,
            },
            Kind::XsRead => Request::XsRead { path: r.string()? },
            Kind::XsWrite => Request::XsWrite {
                path: r.string()?,
                value: r.bytes()?,
            },
            Kind::XsRm => Request::XsRm { path: r.string()? },
            Kind::XsList => Request::XsList { path: r.string()? },
            Kind::XsWatch => Request::XsWatch { path: r.string()? },
            Kind::XsUnwatch => Request::XsUnwatch,
            Kind::VolumeCreate => Request::VolumeCreate {
                name: r.string()?,
                size: r.u64()?,
                disk: r.option(Reader::string)?,
                force: flag(&mut r, "force")?,
            },
            Kind::VolumeList => Request::VolumeList,
            Kind::VolumeRm => Request::VolumeRm {
                name: r.string()?,
                disk: r.option(Reader::string)?,
            },
            other => return Err(unexpected(other, Class::Request)),
        };
        r.finish()?;
        Ok(req)
    }
}

impl Response {
    /// An error reply with its own message.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error(ErrorReply::new(code, message))
    }

    /// The frame kind that carries this response.
    pub fn kind(&self) -> Kind {
        match self {
            Response::HelloOk { .. } => Kind::HelloOk,
            Response::Ok => Kind::Ok,
            Response::Info(_) => Kind::InfoReply,
            Response::Domains(_) => Kind::Domains,
            Response::Created { .. } => Kind::Created,
            Response::Console { .. } => Kind::Console,
            Response::UploadReady { .. } => Kind::UploadReady,
            Response::UploadAck { .. } => Kind::UploadAck,
            Response::Uploaded { .. } => Kind::Uploaded,
            Response::Images(_) => Kind::ImagesReply,
            Response::Devices(_) => Kind::DevicesReply,
            Response::Blocks(_) => Kind::BlocksReply,
            Response::Networks(_) => Kind::NetworksReply,
            Response::Vcpus { .. } => Kind::VcpusReply,
            Response::Volumes { .. } => Kind::Volumes,
            Response::Dmesg { .. } => Kind::DmesgReply,
            Response::XsValue { .. } => Kind::XsValue,
            Response::XsNodes { .. } => Kind::XsNodes,
            Response::Error(_) => Kind::Error,
        }
    }

    /// Appends the payload (not the frame) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match self {
            Response::HelloOk {
                protocol,
                agent,
                hypervisor,
            } => {
                w.u8(*protocol);
                w.str(agent);
                w.str(hypervisor);
            }
            Response::Ok => {}
            Response::Info(h) => {
                w.u32(h.xen_major);
                w.u32(h.xen_minor);
                w.str(&h.xen_extra);
                w.u64(h.total_kib);
                w.u64(h.free_kib);
                w.u64(h.free_frames);
                w.u32(h.nr_cpus);
                w.u32(h.cpu_khz);
                w.u32(h.domains);
                w.u64(h.dom0_free_frames);
                if !h.bridges.is_empty() {
                    w.len(h.bridges.len());
                    for b in &h.bridges {
                        w.str(&b.name);
                        w.len(b.ports.len());
                        for p in &b.ports {
                            w.str(p);
                        }
                        w.u32(b.learned);
                    }
                }
            }
            Response::Domains(list) => {
                w.len(list.len());
                for d in list {
                    w.u16(d.id);
                    w.str(&d.name);
                    w.u8(d.state as u8);
                    match d.shutdown_reason {
                        None => w.u8(0),
                        Some(reason) => {
                            w.u8(1);
                            w.u8(reason as u8);
                        }
                    }
                    w.u64(d.memory_kib);
                    w.u64(d.max_memory_kib);
                    w.u32(d.vcpus);
                    w.u64(d.cpu_time_ns);
                    w.u64(d.uptime_ns);
                }
            }
            Response::Created { domid } => w.u16(*domid),
            Response::Console { data } => w.bytes(data),
            Response::UploadReady { upload, chunk_max } => {
                w.u32(*upload);
                w.u32(*chunk_max);
            }
            Response::UploadAck { upload, received } => {
                w.u32(*upload);
                w.u64(*received);
            }
            Response::Uploaded { upload } => w.u32(*upload),
            Response::Images(list) => {
                w.len(list.len());
                for i in list {
                    w.str(&i.name);
                    w.u64(i.size);
                }
            }
            Response::Devices(list) => {
                w.len(list.len());
                for d in list {
                    w.str(&d.bdf);
                    w.u16(d.vendor);
                    w.u16(d.device);
                    w.u32(d.class);
                    w.str(&d.driver);
                    w.str(&d.detail);
                }
            }
            Response::Blocks(list) => {
                w.len(list.len());
                for b in list {
                    w.u32(b.devid);
                    w.str(&b.vdev);
                    w.str(&b.target);
                    w.str(&b.mode);
                    w.u32(b.be_state);
                    w.u32(b.fe_state);
                    w.u32(u32::from_le_bytes(b.evtchn.to_le_bytes()));
                    w.u32(u32::from_le_bytes(b.ring_ref.to_le_bytes()));
                    w.str(&b.be_path);
                    for n in b.requests.iter().chain(&b.sectors) {
                        w.u64(*n);
                    }
                    w.u64(b.errors);
                }
            }
            Response::Networks(list) => {
                w.len(list.len());
                for v in list {
                    w.u32(v.devid);
                    w.str(&v.mac);
                    w.str(&v.bridge);
                    w.u32(v.be_state);
                    w.u32(v.fe_state);
                    for n in [v.evtchn, v.tx_ring_ref, v.rx_ring_ref] {
                        w.u32(u32::from_le_bytes(n.to_le_bytes()));
                    }
                    w.str(&v.be_path);
                    for n in v.counters {
                        w.u64(n);
                    }
                }
            }
            Response::Vcpus {
                domid,
                name,
                nr_cpus,
                vcpus,
            } => {
                w.u16(*domid);
                w.str(name);
                w.u32(*nr_cpus);
                w.len(vcpus.len());
                for v in vcpus {
                    w.u32(v.vcpu);
                    let s = &v.state;
                    w.u8(u8::from(s.online) | u8::from(s.blocked) << 1 | u8::from(s.running) << 2);
                    w.u32(s.cpu);
                    w.u64(s.time_ns);
                    w.bytes(&v.hard.to_wire());
                    w.bytes(&v.soft.to_wire());
                }
            }
            Response::Volumes { volumes, disks } => {
                w.len(volumes.len());
                for v in volumes {
                    w.str(&v.name);
                    w.str(&v.disk);
                    w.u64(v.start);
                    w.u64(v.sectors);
                    w.len(v.users.len());
                    for u in &v.users {
                        w.u16(*u);
                    }
                }
                w.len(disks.len());
                for d in disks {
                    w.str(&d.name);
                    w.u64(d.sectors);
                    w.u8(u8::from(d.readonly));
                    w.u8(d.table as u8);
                    w.u64(d.free_sectors);
                }
            }
            Response::Dmesg { text } => w.bytes(text),
            Response::XsValue { value } => w.bytes(value),
            Response::XsNodes { nodes, truncated } => {
                w.len(nodes.len());
                for n in nodes {
                    w.str(&n.path);
                    w.bytes(&n.value);
                    w.str(&n.perms);
                }
                w.u8(u8::from(*truncated));
            }
            Response::Error(e) => {
                w.u16(e.code.as_u16());
                w.str(&e.message);
            }
        }
    }

    /// Decodes the payload of a frame of kind `kind`. Every byte must be used.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let kind = expect_class(kind, Class::Response)?;
        let mut r = Reader::new(payload);
        let resp = match kind {
            Kind::HelloOk => Response::HelloOk {
                protocol: r.u8()?,
                agent: r.string()?,
                hypervisor: r.string()?,
            },
            Kind::Ok => Response::Ok,
            Kind::InfoReply => Response::Info(HostInfo {
                xen_major: r.u32()?,
                xen_minor: r.u32()?,
                xen_extra: r.string()?,
                total_kib: r.u64()?,
                free_kib: r.u64()?,
                free_frames: r.u64()?,
                nr_cpus: r.u32()?,
                cpu_khz: r.u32()?,
                domains: r.u32()?,
                dom0_free_frames: r.u64()?,
                bridges: if r.is_at_end() {
                    Vec::new()
                } else {
                    r.list(|r| {
                        Ok(BridgeInfo {
                            name: r.string()?,
                            ports: r.list(Reader::string)?,
                            learned: r.u32()?,
                        })
                    })?
                },
            }),
            Kind::Domains => Response::Domains(r.list(|r| {
                Ok(DomainInfo {
                    id: r.u16()?,
                    name: r.string()?,
                    state: DomState::decode(r)?,
                    shutdown_reason: r.option(ShutdownReason::decode)?,
                    memory_kib: r.u64()?,
                    max_memory_kib: r.u64()?,
                    vcpus: r.u32()?,
                    cpu_time_ns: r.u64()?,
                    uptime_ns: r.u64()?,
                })
            })?),
            Kind::Created => Response::Created { domid: r.u16()? },
            Kind::Console => Response::Console { data: r.bytes()? },
            Kind::UploadReady => Response::UploadReady {
                upload: r.u32()?,
                chunk_max: r.u32()?,
            },
            Kind::UploadAck => Response::UploadAck {
                upload: r.u32()?,
                received: r.u64()?,
            },
            Kind::Uploaded => Response::Uploaded { upload: r.u32()? },
            Kind::ImagesReply => Response::Images(r.list(|r| {
                Ok(ImageInfo {
                    name: r.string()?,
                    size: r.u64()?,
                })
            })?),
            Kind::DevicesReply => Response::Devices(r.list(|r| {
                Ok(DeviceRow {
                    bdf: r.string()?,
                    vendor: r.u16()?,
                    device: r.u16()?,
                    class: r.u32()?,
                    driver: r.string()?,
                    detail: r.string()?,
                })
            })?),
            Kind::BlocksReply => Response::Blocks(r.list(|r| {
                Ok(BlockRow {
                    devid: r.u32()?,
                    vdev: r.string()?,
                    target: r.string()?,
                    mode: r.string()?,
                    be_state: r.u32()?,
                    fe_state: r.u32()?,
                    evtchn: i32::from_le_bytes(r.u32()?.to_le_bytes()),
                    ring_ref: i32::from_le_bytes(r.u32()?.to_le_bytes()),
                    be_path: r.string()?,
                    requests: [r.u64()?, r.u64()?, r.u64()?, r.u64()?],
                    sectors: [r.u64()?, r.u64()?],
                    errors: r.u64()?,
                })
            })?),
            Kind::NetworksReply => Response::Networks(r.list(|r| {
                Ok(VifRow {
                    devid: r.u32()?,
                    mac: r.string()?,
                    bridge: r.string()?,
                    be_state: r.u32()?,
                    fe_state: r.u32()?,
                    evtchn: i32::from_le_bytes(r.u32()?.to_le_bytes()),
                    tx_ring_ref: i32::from_le_bytes(r.u32()?.to_le_bytes()),
                    rx_ring_ref: i32::from_le_bytes(r.u32()?.to_le_bytes()),
                    be_path: r.string()?,
                    counters: [r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.u64()?],
                })
            })?),
            Kind::VcpusReply => Response::Vcpus {
                domid: r.u16()?,
                name: r.string()?,
                nr_cpus: r.u32()?,
                vcpus: r.list(|r| {
                    let vcpu = r.u32()?;
                    let flags = r.u8()?;
                    if flags > 7 {
                        return Err(DecodeError::BadTag {
                            what: "vCPU state flags",
                            value: flags,
                        });
                    }
                    Ok(VcpuRow {
                        vcpu,
                        state: VcpuState {
                            online: flags & 1 != 0,
                            blocked: flags & 2 != 0,
                            running: flags & 4 != 0,
                            cpu: r.u32()?,
                            time_ns: r.u64()?,
                        },
                        hard: decode_map(r)?,
                        soft: decode_map(r)?,
                    })
                })?,
            },
            Kind::Volumes => Response::Volumes {
                volumes: r.list(|r| {
                    Ok(VolumeInfo {
                        name: r.string()?,
                        disk: r.string()?,
                        start: r.u64()?,
                        sectors: r.u64()?,
                        users: r.list(Reader::u16)?,
                    })
                })?,
                disks: r.list(|r| {
                    Ok(VolumeDisk {
                        name: r.string()?,
                        sectors: r.u64()?,
                        readonly: flag(r, "readonly")?,
                        table: TableState::decode(r)?,
                        free_sectors: r.u64()?,
                    })
                })?,
            },
            Kind::DmesgReply => Response::Dmesg { text: r.bytes()? },
            Kind::XsValue => Response::XsValue { value: r.bytes()? },
            Kind::XsNodes => Response::XsNodes {
                nodes: r.list(|r| {
                    Ok(XsNode {
                        path: r.string()?,
                        value: r.bytes()?,
                        perms: r.string()?,
                    })
                })?,
                truncated: match r.u8()? {
                    0 => false,
                    1 => true,
                    v => {
                        return Err(DecodeError::BadTag {
                            what: "truncated",
                            value: v,
                        });
                    }
                },
            },
            Kind::Error => {
                let n = r.u16()?;
                let code = ErrorCode::from_u16(n).ok_or(DecodeError::UnknownErrorCode(n))?;
                Response::Error(ErrorReply::new(code, r.string()?))
            }
            other => return Err(unexpected(other, Class::Response)),
        };
        r.finish()?;
        Ok(resp)
    }
}

impl Event {
    /// The frame kind that carries this event.
    pub fn kind(&self) -> Kind {
        match self {
            Event::ConsoleOutput { .. } => Kind::ConsoleOutput,
            Event::ConsoleClosed { .. } => Kind::ConsoleClosed,
            Event::XsWatchEvent { .. } => Kind::XsWatchEvent,
        }
    }

    /// Appends the payload (not the frame) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        match self {
            Event::ConsoleOutput { domid, data } => {
                w.u16(*domid);
                w.bytes(data);
            }
            Event::ConsoleClosed { domid, reason } => {
                w.u16(*domid);
                w.str(reason);
            }
            Event::XsWatchEvent { path, token } => {
                w.str(path);
                w.str(token);
            }
        }
    }

    /// Decodes the payload of a frame of kind `kind`. Every byte must be used.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        let kind = expect_class(kind, Class::Event)?;
        let mut r = Reader::new(payload);
        let ev = match kind {
            Kind::ConsoleOutput => Event::ConsoleOutput {
                domid: r.u16()?,
                data: r.bytes()?,
            },
            Kind::ConsoleClosed => Event::ConsoleClosed {
                domid: r.u16()?,
                reason: r.string()?,
            },
            Kind::XsWatchEvent => Event::XsWatchEvent {
                path: r.string()?,
                token: r.string()?,
            },
            other => return Err(unexpected(other, Class::Event)),
        };
        r.finish()?;
        Ok(ev)
    }

    /// Appends a complete frame carrying this event (request id 0) to `out`.
    /// Fails, leaving `out` as it was, if the payload exceeds
    /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    pub fn write_frame(&self, out: &mut Vec<u8>) -> Result<(), FrameTooLong> {
        write_frame(self.kind(), 0, out, |o| self.encode(o))
    }
}

impl Message {
    /// The frame kind that carries this message.
    pub fn kind(&self) -> Kind {
        match self {
            Message::Request(m) => m.kind(),
            Message::Response(m) => m.kind(),
            Message::Event(m) => m.kind(),
        }
    }

    /// Appends the payload (not the frame) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Request(m) => m.encode(out),
            Message::Response(m) => m.encode(out),
            Message::Event(m) => m.encode(out),
        }
    }

    /// Decodes the payload of a frame of kind `kind`, of any class.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Self, DecodeError> {
        match Kind::from_u8(kind)
            .ok_or(DecodeError::UnknownKind(kind))?
            .class()
        {
            Class::Request => Request::decode(kind, payload).map(Message::Request),
            Class::Response => Response::decode(kind, payload).map(Message::Response),
            Class::Event => Event::decode(kind, payload).map(Message::Event),
        }
    }

    /// Decodes a frame's payload, of any class.
    pub fn from_frame(frame: &Frame) -> Result<Self, DecodeError> {
        Self::decode(frame.kind, &frame.payload)
    }

    /// Appends a complete frame with request id `id` to `out` (give events 0).
    /// Fails, leaving `out` as it was, if the payload exceeds
    /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
    pub fn write_frame(&self, id: u32, out: &mut Vec<u8>) -> Result<(), FrameTooLong> {
        write_frame(self.kind(), id, out, |o| self.encode(o))
    }
}

/// `write_frame` and `from_frame` for the request and response enums.
macro_rules! framed {
    ($ty:ident) => {
        impl $ty {
            /// Appends a complete frame with request id `id` to `out`. Fails,
            /// leaving `out` as it was, if the payload exceeds
            /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD).
            pub fn write_frame(&self, id: u32, out: &mut Vec<u8>) -> Result<(), FrameTooLong> {
                write_frame(self.kind(), id, out, |o| self.encode(o))
            }

            /// Decodes a frame's payload.
            pub fn from_frame(frame: &Frame) -> Result<Self, DecodeError> {
                Self::decode(frame.kind, &frame.payload)
            }
        }
    };
}

framed!(Request);
framed!(Response);

impl Event {
    /// Decodes a frame's payload.
    pub fn from_frame(frame: &Frame) -> Result<Self, DecodeError> {
        Self::decode(frame.kind, &frame.payload)
    }
}

impl From<Request> for Message {
    fn from(m: Request) -> Self {
        Message::Request(m)
    }
}

impl From<Response> for Message {
    fn from(m: Response) -> Self {
        Message::Response(m)
    }
}

impl From<Event> for Message {
    fn from(m: Event) -> Self {
        Message::Event(m)
    }
}

/// An `option<string>`.
fn opt_str(w: &mut Writer<'_>, s: Option<&str>) {
    match s {
        None => w.u8(0),
        Some(s) => {
            w.u8(1);
            w.str(s);
        }
    }
}

/// A `u8` that must be 0 (false) or 1 (true).
fn flag(r: &mut Reader<'_>, what: &'static str) -> Result<bool, DecodeError> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(DecodeError::BadTag { what, value }),
    }
}

fn expect_class(kind: u8, expected: Class) -> Result<Kind, DecodeError> {
    let k = Kind::from_u8(kind).ok_or(DecodeError::UnknownKind(kind))?;
    if k.class() == expected {
        Ok(k)
    } else {
        Err(unexpected(k, expected))
    }
}

fn unexpected(kind: Kind, expected: Class) -> DecodeError {
    DecodeError::UnexpectedKind { kind, expected }
}
