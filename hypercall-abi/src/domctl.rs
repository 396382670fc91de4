//! Domain control: `domctl` (#36) and `sysctl` (#35) (`domctl.h`, `sysctl.h`), the
//! privileged interface a toolstack builds and manages domains with.
//!
//! Both take one fixed-size structure: a command, the interface version (a caller
//! with another version gets `-EACCES`), and a 128-byte union of per-command
//! arguments, copied back after the command (OUT fields). Only the control domain
//! may call them; anyone else gets `-EPERM`. The commands xen-like-hv implements are
//! listed in [`DomctlCmd`] and [`SysctlCmd`]; others answer `-ENOSYS`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::DomId;
use crate::xen::VcpuGuestContext;

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const DOMCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const SYSCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// Size of the argument union in both structures.
pub const UNION_BYTES: usize = 128;

/// A command's argument read from the start of a union (zero beyond it).
fn union_arg<T: FromBytes>(u: &[u8; UNION_BYTES]) -> T {
    T::read_from_prefix(&u[..])
        .map(|(t, _)| t)
        .unwrap_or_else(|_| T::new_zeroed())
}

/// Writes a command's argument at the start of a union.
fn set_union_arg<T: IntoBytes + Immutable>(u: &mut [u8; UNION_BYTES], arg: &T) {
    let b = arg.as_bytes();
    let n = b.len().min(UNION_BYTES);
    u[..n].copy_from_slice(&b[..n]);
}

subops! {
    /// `domctl` commands (`XEN_DOMCTL_*`) xen-like-hv implements.
    pub enum DomctlCmd: "XEN_DOMCTL_" {
        /// Create an empty, paused domain (`domain` = wanted id, or 0 for the next).
        1 => CreateDomain(DomctlCreateDomain) createdomain since 0x0000_0000;
        /// Tear a domain down and give back everything it holds.
        2 => DestroyDomain(()) destroydomain since 0x0000_0000;
        /// Pause a domain (counted; not the caller).
        3 => PauseDomain(()) pausedomain since 0x0000_0000;
        /// Undo one pause (`-EINVAL` if not paused by the controller).
        4 => UnpauseDomain(()) unpausedomain since 0x0000_0000;
        /// The first domain with id >= `domain`: state, memory, CPU time.
        5 => GetDomainInfo(DomctlGetDomainInfo) getdomaininfo since 0x0000_0000;
        /// Set the CPUs a vCPU may run on (hard) or prefers (soft).
        9 => SetVcpuAffinity(DomctlVcpuAffinity) setvcpuaffinity since 0x0000_0000;
        /// Set the most memory a domain may hold (KiB).
        11 => MaxMem(DomctlMaxMem) max_mem since 0x0000_0000;
        /// Load a vCPU's state (`vcpu_guest_context`) from the caller's memory.
        12 => SetVcpuContext(DomctlVcpuContext) setvcpucontext since 0x0000_0000;
        /// Copy a vCPU's state out to the caller's memory.
        13 => GetVcpuContext(DomctlVcpuContext) getvcpucontext since 0x0000_0000;
        /// A vCPU's state: up, blocked, running, CPU time, the CPU it last ran on.
        14 => GetVcpuInfo(DomctlGetVcpuInfo) getvcpuinfo since 0x0000_0000;
        /// Set the number of vCPUs.
        15 => MaxVcpus(DomctlMaxVcpus) max_vcpus since 0x0000_0000;
        /// Grant (or take back) the IRQ behind one of the caller's pirqs.
        19 => IrqPermission(DomctlIrqPermission) irq_permission since 0x0000_0000;
        /// Grant or revoke a range of I/O memory frames.
        20 => IomemPermission(DomctlIomemPermission) iomem_permission since 0x0000_0000;
        /// Grant or revoke a range of I/O ports.
        21 => IoportPermission(DomctlIoportPermission) ioport_permission since 0x0000_0000;
        /// Fill a frame of the domain with the hypercall page.
        22 => HypercallInit(DomctlHypercallInit) hypercall_init since 0x0000_0000;
        /// Read the CPUs a vCPU may run on (hard) or prefers (soft), as set.
        25 => GetVcpuAffinity(DomctlVcpuAffinity) getvcpuaffinity since 0x0000_0000;
    }
}

/// `struct xen_domctl` (144 bytes): the header and the argument union.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Domctl {
    /// `XEN_DOMCTL_*`.
    pub cmd: u32,
    /// Must be [`DOMCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The domain the command acts on (OUT for createdomain, getdomaininfo).
    pub domain: DomId,
    /// Padding.
    pub _pad: [u16; 3],
    /// The command's arguments (one of the `Domctl*` structures, zero-padded).
    pub u: [u8; UNION_BYTES],
}

impl Default for Domctl {
    fn default() -> Self {
        Domctl {
            cmd: 0,
            interface_version: DOMCTL_INTERFACE_VERSION,
            domain: DomId(0),
            _pad: [0; 3],
            u: [0; UNION_BYTES],
        }
    }
}

impl Domctl {
    /// A request for `cmd` on `domain` with `arg` in the union.
    pub fn new<T: IntoBytes + Immutable>(cmd: DomctlCmd, domain: DomId, arg: &T) -> Self {
        let mut d = Domctl {
            cmd: cmd.nr(),
            domain,
            ..Domctl::default()
        };
        d.set_arg(arg);
        d
    }

    /// The union read as `T`.
    pub fn arg<T: FromBytes>(&self) -> T {
        union_arg(&self.u)
    }

    /// Writes `arg` at the start of the union.
    pub fn set_arg<T: IntoBytes + Immutable>(&mut self, arg: &T) {
        set_union_arg(&mut self.u, arg);
    }
}

/// `struct xen_arch_domainconfig` (x86, 8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ArchDomainConfig {
    /// `XEN_X86_EMU_*`: emulated devices (0 for a PV guest).
    pub emulation_flags: u32,
    /// `XEN_X86_*` miscellaneous flags.
    pub misc_flags: u32,
}

/// `XEN_DOMCTL_CDF_hvm`: an HVM guest (refused: PV only).
pub const CDF_HVM: u32 = 1 << 0;
/// `XEN_DOMCTL_CDF_hap`: hardware-assisted paging (HVM only).
pub const CDF_HAP: u32 = 1 << 1;
/// Every `XEN_DOMCTL_CDF_*` flag Xen 4.17 defines (up to `vpmu`, bit 7).
pub const CDF_ALL: u32 = (1 << 8) - 1;

/// `XEN_DOMCTL_GRANT_version_mask`: the grant-table version in `grant_opts`.
pub const GRANT_VERSION_MASK: u32 = 0xf;

/// `XEN_DOMCTL_GRANT_version(v)`: `grant_opts` for a domain whose grant table
/// may go up to version `v`. Xen 4.17 takes 1 or 2 (`gnttab=max-ver:2`, its
/// default) and refuses 0 and anything higher with `-EINVAL`; `libxl` passes
/// the highest the host reports (`XEN_SYSCTL_PHYSCAP_gnttab_v*`).
pub const fn grant_version(v: u32) -> u32 {
    v & GRANT_VERSION_MASK
}

/// `struct xen_domctl_createdomain` (64 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlCreateDomain {
    /// XSM label (ignored).
    pub ssidref: u32,
    /// The toolstack's UUID for the domain.
    pub handle: [u8; 16],
    /// `XEN_DOMCTL_CDF_*`.
    pub flags: u32,
    /// `XEN_DOMCTL_IOMMU_*`.
    pub iommu_opts: u32,
    /// vCPUs (at least 1).
    pub max_vcpus: u32,
    /// Highest event-channel port.
    pub max_evtchn_port: u32,
    /// Grant-table frames (< 0: the default).
    pub max_grant_frames: i32,
    /// Maptrack frames (< 0: the default).
    pub max_maptrack_frames: i32,
    /// Grant-table version in the low 4 bits ([`grant_version`]): 1 or 2.
    pub grant_opts: u32,
    /// Per-vCPU trace buffer bytes (0: none).
    pub vmtrace_size: u32,
    /// CPU pool (0: the default).
    pub cpupool_id: u32,
    /// Architecture part.
    pub arch: ArchDomainConfig,
}

/// `XEN_DOMINF_dying`.
pub const DOMINF_DYING: u32 = 1 << 0;
/// `XEN_DOMINF_hvm_guest`.
pub const DOMINF_HVM_GUEST: u32 = 1 << 1;
/// `XEN_DOMINF_shutdown`: the guest shut down; the reason is in
/// `flags >> DOMINF_SHUTDOWN_SHIFT & DOMINF_SHUTDOWN_MASK`.
pub const DOMINF_SHUTDOWN: u32 = 1 << 2;
/// `XEN_DOMINF_paused`: paused by the controller.
pub const DOMINF_PAUSED: u32 = 1 << 3;
/// `XEN_DOMINF_blocked`: every vCPU waits for an event.
pub const DOMINF_BLOCKED: u32 = 1 << 4;
/// `XEN_DOMINF_running`: a vCPU is on a CPU now.
pub const DOMINF_RUNNING: u32 = 1 << 5;
/// Shift of the shutdown reason in `flags`.
pub const DOMINF_SHUTDOWN_SHIFT: u32 = 16;
/// Mask of the shutdown reason (after the shift).
pub const DOMINF_SHUTDOWN_MASK: u32 = 255;

/// `struct xen_domctl_getdomaininfo` (112 bytes). All OUT.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlGetDomainInfo {
    /// The domain described (also echoed in the header).
    pub domain: DomId,
    /// Padding.
    pub pad1: u16,
    /// `XEN_DOMINF_*`, and the shutdown reason.
    pub flags: u32,
    /// Frames it holds.
    pub tot_pages: u64,
    /// Most frames it may hold.
    pub max_pages: u64,
    /// Claimed, not yet allocated.
    pub outstanding_pages: u64,
    /// Shared (memory sharing).
    pub shr_pages: u64,
    /// Paged out.
    pub paged_pages: u64,
    /// Its shared_info frame.
    pub shared_info_frame: u64,
    /// CPU time of all its vCPUs (ns).
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id.
    pub max_vcpu_id: u32,
    /// XSM label.
    pub ssidref: u32,
    /// The toolstack's UUID.
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address bits.
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// Architecture part.
    pub arch_config: ArchDomainConfig,
}

/// `struct xen_domctl_max_mem` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlMaxMem {
    /// Most memory, in KiB.
    pub max_memkb: u64,
}

/// `struct xen_domctl_irq_permission` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlIrqPermission {
    /// A pirq of the caller; the IRQ it is mapped to is granted.
    pub pirq: u32,
    /// 1 grants, 0 takes back.
    pub allow_access: u8,
    /// Padding.
    pub pad: [u8; 3],
}

/// `struct xen_domctl_vcpucontext` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlVcpuContext {
    /// The vCPU.
    pub vcpu: u32,
    /// Padding.
    pub _pad: u32,
    /// Caller's address of a [`VcpuGuestContext`].
    pub ctxt: u64,
}

/// `struct xen_domctl_max_vcpus` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlMaxVcpus {
    /// vCPUs.
    pub max: u32,
}

/// `struct xenctl_bitmap` (16 bytes): a bitmap in the caller's memory.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenctlBitmap {
    /// Caller's address of the bitmap (bit n of byte n / 8: CPU n).
    pub bitmap: u64,
    /// Bits it holds.
    pub nr_bits: u32,
    /// Padding.
    pub _pad: u32,
}

/// `XEN_VCPUAFFINITY_HARD`: the CPUs the vCPU may run on.
pub const VCPUAFFINITY_HARD: u32 = 1 << 0;
/// `XEN_VCPUAFFINITY_SOFT`: the CPUs it prefers.
pub const VCPUAFFINITY_SOFT: u32 = 1 << 1;
/// `XEN_VCPUAFFINITY_FORCE`: undo `SCHEDOP_pin_override`.
pub const VCPUAFFINITY_FORCE: u32 = 1 << 2;

/// `struct xen_domctl_vcpuaffinity` (40 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlVcpuAffinity {
    /// The vCPU.
    pub vcpu: u32,
    /// `VCPUAFFINITY_*`: which maps to set or read.
    pub flags: u32,
    /// The hard affinity (in and out for set: the effective one comes back).
    pub cpumap_hard: XenctlBitmap,
    /// The soft affinity.
    pub cpumap_soft: XenctlBitmap,
}

/// `struct xen_domctl_getvcpuinfo` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlGetVcpuInfo {
    /// The vCPU (in).
    pub vcpu: u32,
    /// 1 if it is up (not `VCPUOP_down`).
    pub online: u8,
    /// 1 if it waits for an event (`SCHEDOP_block`, `SCHEDOP_poll`).
    pub blocked: u8,
    /// 1 if it is on a CPU now.
    pub running: u8,
    /// Padding.
    pub _pad0: u8,
    /// Time it ran, in ns (its runstate's running time).
    pub cpu_time: u64,
    /// The CPU it runs on, or last ran on.
    pub cpu: u32,
    /// Padding.
    pub _pad1: u32,
}

/// `struct xen_domctl_iomem_permission` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlIomemPermission {
    /// First machine frame of the range.
    pub first_mfn: u64,
    /// Frames in the range.
    pub nr_mfns: u64,
    /// 1 = grant, 0 = revoke.
    pub allow_access: u8,
    /// Padding.
    pub _pad: [u8; 7],
}

/// `struct xen_domctl_ioport_permission` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlIoportPermission {
    /// First port of the range.
    pub first_port: u32,
    /// Ports in the range.
    pub nr_ports: u32,
    /// 1 = grant, 0 = revoke.
    pub allow_access: u8,
    /// Padding.
    pub _pad: [u8; 3],
}

/// `struct xen_domctl_hypercall_init` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct DomctlHypercallInit {
    /// The domain's frame to fill.
    pub gmfn: u64,
}

subops! {
    /// `sysctl` commands (`XEN_SYSCTL_*`) xen-like-hv implements.
    pub enum SysctlCmd: "XEN_SYSCTL_" {
        /// Read (and optionally clear) the hypervisor's console ring.
        1 => ReadConsole(SysctlReadConsole) readconsole since 0x0000_0000;
        /// CPUs and memory of the machine.
        3 => Physinfo(SysctlPhysinfo) physinfo since 0x0000_0000;
    }
}

/// `struct xen_sysctl` (136 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Sysctl {
    /// `XEN_SYSCTL_*`.
    pub cmd: u32,
    /// Must be [`SYSCTL_INTERFACE_VERSION`].
    pub interface_version: u32,
    /// The command's arguments.
    pub u: [u8; UNION_BYTES],
}

impl Default for Sysctl {
    fn default() -> Self {
        Sysctl {
            cmd: 0,
            interface_version: SYSCTL_INTERFACE_VERSION,
            u: [0; UNION_BYTES],
        }
    }
}

impl Sysctl {
    /// A request for `cmd` with `arg` in the union.
    pub fn new<T: IntoBytes + Immutable>(cmd: SysctlCmd, arg: &T) -> Self {
        let mut s = Sysctl {
            cmd: cmd.nr(),
            ..Sysctl::default()
        };
        s.set_arg(arg);
        s
    }

    /// The union read as `T`.
    pub fn arg<T: FromBytes>(&self) -> T {
        union_arg(&self.u)
    }

    /// Writes `arg` at the start of the union.
    pub fn set_arg<T: IntoBytes + Immutable>(&mut self, arg: &T) {
        set_union_arg(&mut self.u, arg);
    }
}

/// `struct xen_sysctl_readconsole` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SysctlReadConsole {
    /// Non-zero: clear the ring after reading.
    pub clear: u8,
    /// Non-zero: start at `index` (else at the oldest byte kept).
    pub incremental: u8,
    /// Padding.
    pub pad0: u8,
    /// Padding.
    pub pad1: u8,
    /// IN: where to start (incremental); OUT: where the next read continues.
    pub index: u32,
    /// Caller's buffer address.
    pub buffer: u64,
    /// IN: buffer size; OUT: bytes written.
    pub count: u32,
    /// Padding (alignment).
    pub _pad: u32,
}

/// `struct xen_sysctl_physinfo` (112 bytes). All OUT.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SysctlPhysinfo {
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// CPUs online.
    pub nr_cpus: u32,
    /// Highest CPU id.
    pub max_cpu_id: u32,
    /// NUMA nodes online.
    pub nr_nodes: u32,
    /// Highest node id.
    pub max_node_id: u32,
    /// CPU frequency (kHz).
    pub cpu_khz: u32,
    /// `XEN_SYSCTL_PHYSCAP_*`.
    pub capabilities: u32,
    /// Architecture capabilities.
    pub arch_capabilities: u32,
    /// Padding.
    pub pad: u32,
    /// RAM frames.
    pub total_pages: u64,
    /// Free frames.
    pub free_pages: u64,
    /// Frames waiting to be scrubbed.
    pub scrub_pages: u64,
    /// Claimed frames.
    pub outstanding_pages: u64,
    /// Highest MFN.
    pub max_mfn: u64,
    /// CPUID feature words.
    pub hw_cap: [u32; 8],
}

/// `XEN_SYSCTL_PHYSCAP_pv` (bit 1; bit 0 is `hvm`, bit 2 `directio`): PV
/// guests can run.
pub const PHYSCAP_PV: u32 = 1 << 1;

assert_layout!(
    Domctl,
    144,
    cmd = 0,
    interface_version = 4,
    domain = 8,
    u = 16
);
assert_layout!(ArchDomainConfig, 8, emulation_flags = 0, misc_flags = 4);
assert_layout!(
    DomctlCreateDomain,
    64,
    ssidref = 0,
    handle = 4,
    flags = 20,
    iommu_opts = 24,
    max_vcpus = 28,
    max_evtchn_port = 32,
    max_grant_frames = 36,
    max_maptrack_frames = 40,
    grant_opts = 44,
    vmtrace_size = 48,
    cpupool_id = 52,
    arch = 56
);
assert_layout!(
    DomctlGetDomainInfo,
    112,
    domain = 0,
    flags = 4,
    tot_pages = 8,
    max_pages = 16,
    shared_info_frame = 48,
    cpu_time = 56,
    nr_online_vcpus = 64,
    max_vcpu_id = 68,
    ssidref = 72,
    handle = 76,
    cpupool = 92,
    gpaddr_bits = 96,
    arch_config = 104
);
assert_layout!(DomctlMaxMem, 8, max_memkb = 0);
assert_layout!(DomctlIrqPermission, 8, pirq = 0, allow_access = 4);
assert_layout!(
    DomctlIomemPermission,
    24,
    first_mfn = 0,
    nr_mfns = 8,
    allow_access = 16
);
assert_layout!(
    DomctlIoportPermission,
    12,
    first_port = 0,
    nr_ports = 4,
    allow_access = 8
);
assert_layout!(DomctlVcpuContext, 16, vcpu = 0, ctxt = 8);
assert_layout!(DomctlMaxVcpus, 4, max = 0);
assert_layout!(
    DomctlGetVcpuInfo,
    24,
    vcpu = 0,
    online = 4,
    blocked = 5,
    running = 6,
    cpu_time = 8,
    cpu = 16
);
assert_layout!(XenctlBitmap, 16, bitmap = 0, nr_bits = 8);
assert_layout!(
    DomctlVcpuAffinity,
    40,
    vcpu = 0,
    flags = 4,
    cpumap_hard = 8,
    cpumap_soft = 24
);
assert_layout!(DomctlHypercallInit, 8, gmfn = 0);
assert_layout!(Sysctl, 136, cmd = 0, interface_version = 4, u = 8);
assert_layout!(
    SysctlReadConsole,
    24,
    clear = 0,
    incremental = 1,
    index = 4,
    buffer = 8,
    count = 16
);
assert_layout!(
    SysctlPhysinfo,
    112,
    nr_cpus = 8,
    cpu_khz = 24,
    capabilities = 28,
    total_pages = 40,
    free_pages = 48,
    max_mfn = 72,
    hw_cap = 80
);

/// The domctl union must hold every argument.
const _: () = {
    assert!(size_of::<DomctlGetDomainInfo>() <= UNION_BYTES);
    assert!(size_of::<DomctlCreateDomain>() <= UNION_BYTES);
    assert!(size_of::<SysctlPhysinfo>() <= UNION_BYTES);
    // Referenced so the doc link stays honest.
    let _ = size_of::<VcpuGuestContext>();
};
