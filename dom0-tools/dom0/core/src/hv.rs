//! What the agent asks of the hypervisor, as a trait: the kernel implements it
//! with hypercalls (`sysctl`, `domctl`, `sched_op`, `xen_version`), tests with a
//! fake. Every method returns Xen's errno on failure, untranslated; the agent
//! turns errnos into protocol errors in one place ([`crate::agent`]).

use alloc::string::String;

use control_proto::cpus::{Affinity, CpuMap};

use core::sync::atomic::AtomicU32;

use hypercall_abi::domctl::{
    DomctlGetDomainInfo, DomctlVcpuAffinity, SysctlPhysinfo, VCPUAFFINITY_HARD, VCPUAFFINITY_SOFT,
    XenctlBitmap,
};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::VcpuGuestContext;
use hypercall_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn};

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

/// A console page dom0 has mapped (the kernel's mapping slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingId(pub u32);

/// The `XEN_DOMCTL_setvcpuaffinity` argument that sets `vcpu`'s `which` map to
/// `map` ([`Hypervisor::set_vcpu_affinity`]): flag `XEN_VCPUAFFINITY_HARD` with
/// `cpumap_hard`, or `XEN_VCPUAFFINITY_SOFT` with `cpumap_soft`; the other map
/// is left alone.
pub fn set_affinity_arg(vcpu: u32, which: Affinity, map: XenctlBitmap) -> DomctlVcpuAffinity {
    let none = DomctlVcpuAffinity {
        vcpu,
        ..DomctlVcpuAffinity::default()
    };
    match which {
        Affinity::Hard => DomctlVcpuAffinity {
            flags: VCPUAFFINITY_HARD,
            cpumap_hard: map,
            ..none
        },
        Affinity::Soft => DomctlVcpuAffinity {
            flags: VCPUAFFINITY_SOFT,
            cpumap_soft: map,
            ..none
        },
    }
}

/// The hypervisor, as the control agent and the domain builder see it.
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

    /// Whether `VIRQ_DOM_EXC` (a domain shut down or crashed) fired since the last
    /// call; clears it. A hypervisor that cannot tell answers true.
    fn take_dom_exc(&mut self) -> bool {
        true
    }

    // ---- the domain builder (crate::builder) ----

    /// `XEN_DOMCTL_createdomain` with `vcpus` vCPUs (`max_evtchn_port` 1023): the
    /// new id.
    fn create_domain(&mut self, handle: [u8; 16], vcpus: u32) -> Result<DomId, Errno>;
    /// `XEN_DOMCTL_setvcpuaffinity` of `dom`'s `vcpu`, one map: `which` says
    /// `XEN_VCPUAFFINITY_HARD` (`cpumap_hard`) or `_SOFT` (`cpumap_soft`). Returns
    /// the effective map the hypervisor writes back: for the hard map, its CPUs
    /// that run guests (`-EINVAL` when none does); for the soft map, its CPUs
    /// within the effective hard one (perhaps none: Xen does not refuse it).
    fn set_vcpu_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        which: Affinity,
        map: &CpuMap,
    ) -> Result<CpuMap, Errno>;
    /// `XEN_DOMCTL_getvcpuaffinity` of `dom`'s `vcpu`: its hard and soft maps, as
    /// set. `-EINVAL` for a vCPU the domain does not have.
    fn vcpu_affinity(&mut self, dom: DomId, vcpu: u32) -> Result<(CpuMap, CpuMap), Errno>;
    /// `XEN_DOMCTL_getvcpuinfo` of `dom`'s `vcpu`: up, blocked, running, its CPU and
    /// time. `-EINVAL` for a vCPU the domain does not have.
    fn vcpu_info(&mut self, dom: DomId, vcpu: u32) -> Result<control_proto::VcpuState, Errno>;
    /// `XEN_DOMCTL_max_mem`.
    fn max_mem(&mut self, dom: DomId, kib: u64) -> Result<(), Errno>;
    /// `XEN_DOMCTL_max_vcpus` with the count `createdomain` was given: on Xen
    /// 4.17 this creates the vCPUs (without it `setvcpucontext` is `-EINVAL`),
    /// as `libxl__build_pre` calls it; xen-like-hv made them at createdomain
    /// and only checks the count. Fakes that model neither keep the default.
    fn max_vcpus(&mut self, dom: DomId, vcpus: u32) -> Result<(), Errno> {
        let _ = (dom, vcpus);
        Ok(())
    }
    /// `XENMEM_populate_physmap` for `dom`: `frames` holds PFNs in and MFNs out;
    /// returns how many were populated.
    fn populate_physmap(&mut self, dom: DomId, frames: &mut [u64]) -> Result<usize, Errno>;
    /// Writes `bytes` at `offset` of `dom`'s frame `mfn` through a foreign mapping
    /// that is gone again when the call returns.
    fn write_frame(
        &mut self,
        dom: DomId,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Errno>;
    /// `EVTCHNOP_alloc_unbound` in `dom` for `remote`.
    fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno>;
    /// `MMUEXT_PIN_L4_TABLE` of `dom`'s frame `mfn` (foreign `mmuext_op`).
    fn pin_l4(&mut self, dom: DomId, mfn: Mfn) -> Result<(), Errno>;
    /// `XEN_DOMCTL_setvcpucontext` of vCPU 0.
    fn set_vcpu_context(&mut self, dom: DomId, ctx: &VcpuGuestContext) -> Result<(), Errno>;

    // ---- the console back end ----

    /// `EVTCHNOP_bind_interdomain` to `dom`'s `port`: dom0's end.
    fn bind_interdomain(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno>;
    /// [`Hypervisor::bind_interdomain`] for `dom`'s XenStore channel: dom0 may
    /// tell its events from the others' (its serve loop answers a store-only
    /// wake-up without a full pass over its back ends).
    fn bind_store(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        self.bind_interdomain(dom, port)
    }
    /// [`Hypervisor::bind_interdomain`] for a block or net back end's ring
    /// channel: dom0's serve loop answers a wake-up by back-end (and store)
    /// channels alone by serving the back ends, without a full pass.
    fn bind_backend(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        self.bind_interdomain(dom, port)
    }
    /// `EVTCHNOP_close` of dom0's `port`.
    fn close(&mut self, port: EvtchnPort);
    /// `EVTCHNOP_send` on dom0's `port`.
    fn notify(&mut self, port: EvtchnPort);
    /// Maps `dom`'s console page `mfn` into dom0 until [`Hypervisor::unmap_ring`].
    fn map_ring(&mut self, dom: DomId, mfn: Mfn) -> Result<RingId, Errno>;
    /// A mapped console page as words (shared with the guest: atomics only).
    fn ring(&self, id: RingId) -> Option<&[AtomicU32]>;
    /// Unmaps a console page (before its domain is destroyed, so no frame of it stays
    /// referenced).
    fn unmap_ring(&mut self, id: RingId);

    // ---- the block back end (crate::blkback) ----

    /// `GNTTABOP_map_grant_ref` of the pages `dom` granted as `refs`
    /// (writable, host mapping), side by side in dom0 as one ring that
    /// [`Hypervisor::ring`] returns whole. On failure nothing stays mapped.
    fn map_grant_ring(&mut self, dom: DomId, refs: &[GrantRef]) -> Result<RingId, Errno> {
        let _ = (dom, refs);
        Err(Errno::ENOSYS)
    }
    /// `GNTTABOP_unmap_grant_ref` of a ring [`Hypervisor::map_grant_ring`] mapped.
    fn unmap_grant_ring(&mut self, id: RingId) {
        let _ = id;
    }
    /// `GNTTABOP_copy` between grants of `dom` and dom0's `buf`: each segment
    /// copies `len` bytes at `offset` in the granted page from (`to_guest`) or
    /// to `buf[buf_off..]`. `status` gets one `GNTST_*` per segment. `Err` only
    /// when the hypercall itself failed (then every status is unset).
    fn grant_copy(
        &mut self,
        dom: DomId,
        to_guest: bool,
        buf: &mut [u8],
        segs: &[GrantSeg],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        let _ = (dom, to_guest, buf, segs, status);
        Err(Errno::ENOSYS)
    }
    /// A buffer of `bytes` for back-end I/O, kept for good (on the machine,
    /// machine-contiguous memory, so a disk reaches it without bouncing).
    fn io_buffer(&mut self, bytes: usize) -> Option<&'static mut [u8]> {
        let _ = bytes;
        None
    }
}

/// One piece of a grant copy ([`Hypervisor::grant_copy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantSeg {
    /// The grant.
    pub gref: GrantRef,
    /// Byte offset in the granted page.
    pub offset: u16,
    /// Bytes (the piece stays inside the page).
    pub len: u16,
    /// Byte offset in dom0's buffer.
    pub buf_off: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_affinity_arg_names_one_map_by_its_flag() {
        let map = XenctlBitmap {
            bitmap: 0x1000,
            nr_bits: 256,
            _pad: 0,
        };
        let hard = set_affinity_arg(3, Affinity::Hard, map);
        assert_eq!((hard.vcpu, hard.flags), (3, VCPUAFFINITY_HARD));
        assert_eq!(
            (hard.cpumap_hard, hard.cpumap_soft),
            (map, XenctlBitmap::default())
        );
        let soft = set_affinity_arg(1, Affinity::Soft, map);
        assert_eq!((soft.vcpu, soft.flags), (1, VCPUAFFINITY_SOFT));
        assert_eq!(
            (soft.cpumap_hard, soft.cpumap_soft),
            (XenctlBitmap::default(), map)
        );
    }
}
