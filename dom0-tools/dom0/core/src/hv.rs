//! What the agent asks of the hypervisor, as a trait: the kernel implements it
//! with hypercalls (`sysctl`, `domctl`, `sched_op`, `xen_version`), tests with a
//! fake. Every method returns Xen's errno on failure, untranslated; the agent
//! turns errnos into protocol errors in one place ([`crate::agent`]).

use alloc::string::String;

use hypercall_abi::domctl::{DomctlGetDomainInfo, SysctlPhysinfo};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::{DomId, Errno};

/// What `xen_version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenVersion {
    /// `XENVER_version` major (4).
    pub major: u32,
    /// `XENVER_version` minor (17).
    pub minor: u32,
    /// `XENVER_extraversion` (".7").
    pub extra: String,
    /// `XENVER_compile_info`'s `compile_by` (xen-like-hv says "xen-like-hv").
    pub compile_by: String,
}

/// One `XEN_SYSCTL_readconsole` read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleChunk {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Where the next incremental read continues (the `index` Xen returns).
    pub next: u32,
}

/// The hypervisor, as the control agent sees it.
pub trait Hypervisor {
    /// `xen_version`: version, extraversion and compile info.
    fn xen_version(&mut self) -> Result<XenVersion, Errno>;

    /// `sysctl(XEN_SYSCTL_physinfo)`.
    fn physinfo(&mut self) -> Result<SysctlPhysinfo, Errno>;

    /// `sysctl(XEN_SYSCTL_readconsole)` into `buf`: from the oldest byte kept
    /// when `from` is `None`, else incrementally from index `from`.
    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> Result<ConsoleChunk, Errno>;

    /// `domctl(XEN_DOMCTL_getdomaininfo)`: the first domain whose id is at
    /// least `from` (`-ESRCH` when there is none).
    fn domain_info(&mut self, from: DomId) -> Result<DomctlGetDomainInfo, Errno>;

    /// `domctl(XEN_DOMCTL_pausedomain)`.
    fn pause(&mut self, dom: DomId) -> Result<(), Errno>;

    /// `domctl(XEN_DOMCTL_unpausedomain)`.
    fn unpause(&mut self, dom: DomId) -> Result<(), Errno>;

    /// `domctl(XEN_DOMCTL_destroydomain)`.
    fn destroy(&mut self, dom: DomId) -> Result<(), Errno>;

    /// `sched_op(SCHEDOP_remote_shutdown)`: the hypervisor shuts `dom` down
    /// for `reason`.
    fn remote_shutdown(&mut self, dom: DomId, reason: ShutdownReason) -> Result<(), Errno>;

    /// Nanoseconds since the hypervisor booted (the pvclock).
    fn now_ns(&self) -> u64;
}
