//! `domctl` (#36) and `sysctl` (#35): the control domain's interface for building and
//! managing domains (`docs/domains.md`, "Domain control").
//!
//! Both copy one fixed-size structure in, check the interface version (`-EACCES`) and
//! the caller's privilege (`-EPERM`), run the command, and copy the structure back
//! for the commands with OUT fields, as Xen's `do_domctl` does. The portable part here
//! validates arguments and fills the replies; the domain table itself (creating,
//! pausing, destroying, listing other domains) is the platform's
//! ([`Platform::create_domain`] and friends), because it owns every domain but the
//! caller's.

use super::{HvError, HvResult};
use crate::domain::{Domain, DomainState, ShutdownReason};
use crate::platform::{Platform, Progress};
use crate::traps::GuestCtx;
use crate::vcpu::Vcpu;
use hypercall_abi::Errno;
use hypercall_abi::domctl::{
    CDF_ALL, CDF_HAP, CDF_HVM, DOMCTL_INTERFACE_VERSION, DOMINF_BLOCKED, DOMINF_DYING,
    DOMINF_PAUSED, DOMINF_RUNNING, DOMINF_SHUTDOWN, DOMINF_SHUTDOWN_SHIFT, Domctl, DomctlCmd,
    DomctlCreateDomain, DomctlGetDomainInfo, DomctlIomemPermission, DomctlIoportPermission,
    DomctlMaxMem, DomctlMaxVcpus, GRANT_VERSION_MASK, PHYSCAP_PV, SYSCTL_INTERFACE_VERSION, Sysctl,
    SysctlCmd, SysctlPhysinfo, SysctlReadConsole,
};
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::types::{DomId, GuestPtr};

/// Lowest reserved domain id (`DOMID_FIRST_RESERVED`): ids from here are special.
pub const DOMID_FIRST_RESERVED: u16 = 0x7FF0;

/// What `XEN_DOMCTL_createdomain` asks the platform for (validated).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreateSpec {
    /// The id wanted; `None` = the next free one.
    pub id: Option<DomId>,
    /// The toolstack's UUID.
    pub handle: [u8; 16],
    /// vCPUs.
    pub max_vcpus: u32,
    /// Highest event-channel port.
    pub max_evtchn_port: u32,
    /// Grant-table limits.
    pub gnttab: crate::gnttab::Limits,
}

/// What `getdomaininfo` reports about one domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomainSummary {
    /// Its id.
    pub id: DomId,
    /// `Some(reason)` once it shut down.
    pub shutdown: Option<ShutdownReason>,
    /// Paused by the controller.
    pub paused: bool,
    /// Being torn down (frames still referenced elsewhere).
    pub dying: bool,
    /// Every online vCPU waits for an event.
    pub blocked: bool,
    /// A vCPU of it is on a CPU now.
    pub running: bool,
    /// Frames it holds.
    pub tot_pages: u64,
    /// Most frames it may hold.
    pub max_pages: u64,
    /// Its shared_info frame.
    pub shared_info: u64,
    /// CPU time of its vCPUs (ns).
    pub cpu_time_ns: u64,
    /// vCPUs online.
    pub online_vcpus: u32,
    /// vCPUs it has.
    pub nr_vcpus: u32,
    /// The toolstack's UUID.
    pub handle: [u8; 16],
}

impl DomainSummary {
    /// The summary of `dom` with its vCPUs at system time `now`; `running` says
    /// whether one of them is on a CPU.
    pub fn of<'v>(
        dom: &Domain,
        vcpus: impl Iterator<Item = &'v Vcpu> + Clone,
        now: u64,
        running: bool,
    ) -> Self {
        let online = u32::try_from(vcpus.clone().filter(|v| v.online).count()).unwrap_or(0);
        DomainSummary {
            id: dom.id,
            shutdown: match dom.state {
                DomainState::Shutdown(r) => Some(r),
                _ => None,
            },
            paused: dom.pause_count > 0,
            dying: false,
            blocked: online > 0
                && !running
                && vcpus
                    .clone()
                    .filter(|v| v.online)
                    .all(|v| v.wait != crate::vcpu::Wait::None),
            running,
            tot_pages: dom.tot_pages,
            max_pages: dom.max_pages,
            shared_info: dom.shared_info.0,
            cpu_time_ns: vcpus.clone().map(|v| v.runstate_at(now).time[0]).sum(),
            online_vcpus: online,
            nr_vcpus: u32::try_from(vcpus.count()).unwrap_or(u32::MAX),
            handle: dom.handle,
        }
    }

    /// Xen's `getdomaininfo` reply for it.
    pub fn to_xen(&self) -> DomctlGetDomainInfo {
        let mut flags = 0;
        if self.dying {
            flags |= DOMINF_DYING;
        }
        if let Some(r) = self.shutdown {
            flags |= DOMINF_SHUTDOWN | ((r as u32) << DOMINF_SHUTDOWN_SHIFT);
        }
        if self.paused {
            flags |= DOMINF_PAUSED;
        }
        if self.blocked {
            flags |= DOMINF_BLOCKED;
        }
        if self.running {
            flags |= DOMINF_RUNNING;
        }
        DomctlGetDomainInfo {
            domain: self.id,
            flags,
            tot_pages: self.tot_pages,
            max_pages: self.max_pages,
            shared_info_frame: self.shared_info,
            cpu_time: self.cpu_time_ns,
            nr_online_vcpus: self.online_vcpus,
            max_vcpu_id: self.nr_vcpus.checked_sub(1).unwrap_or(u32::MAX),
            handle: self.handle,
            gpaddr_bits: 52,
            ..DomctlGetDomainInfo::default()
        }
    }
}

/// `domctl(op)`.
pub fn domctl<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<()>) -> HvResult {
    let mut op: Domctl = ctx.p.read_obj(arg.addr())?;
    if op.interface_version != DOMCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES.into());
    }
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    let Some(cmd) = DomctlCmd::from_nr(op.cmd) else {
        return Err(Errno::ENOSYS.into());
    };
    let me = ctx.dom.id;
    let target = op.domain;
    let copy_back = match cmd {
        DomctlCmd::CreateDomain => {
            let c: DomctlCreateDomain = op.arg();
            let spec = create_spec(target, &c)?;
            op.domain = ctx.p.create_domain(&spec)?;
            true
        }
        DomctlCmd::GetDomainInfo => {
            let info = domain_info_at_or_after(ctx, target).ok_or(Errno::ESRCH)?;
            op.domain = info.id;
            op.set_arg(&info.to_xen());
            true
        }
        DomctlCmd::DestroyDomain | DomctlCmd::PauseDomain | DomctlCmd::UnpauseDomain
            if target == me =>
        {
            return Err(Errno::EINVAL.into());
        }
        DomctlCmd::DestroyDomain => {
            if ctx.p.destroy_domain(target)? == Progress::Again {
                return ctx.continuation(Hypercall::Domctl, [arg.addr(), 0, 0, 0, 0]);
            }
            false
        }
        DomctlCmd::PauseDomain => {
            if ctx.p.pause_domain(target)? == Progress::Again {
                return ctx.continuation(Hypercall::Domctl, [arg.addr(), 0, 0, 0, 0]);
            }
            false
        }
        DomctlCmd::UnpauseDomain => {
            ctx.p.unpause_domain(target)?;
            false
        }
        DomctlCmd::MaxMem => {
            let m: DomctlMaxMem = op.arg();
            // KiB to pages, capped as Xen caps it (an unsigned int).
            let pages = (m.max_memkb >> 2).min(u64::from(u32::MAX));
            if target == me {
                ctx.dom.max_pages = pages;
            } else {
                ctx.p.set_max_pages(target, pages)?;
            }
            false
        }
        DomctlCmd::MaxVcpus => {
            let m: DomctlMaxVcpus = op.arg();
            let have = if target == me {
                u32::try_from(1 + ctx.siblings.iter().count()).unwrap_or(u32::MAX)
            } else {
                ctx.p
                    .domain_summary(target)
                    .filter(|s| s.id == target)
                    .ok_or(Errno::ESRCH)?
                    .nr_vcpus
            };
            // vCPUs are made at createdomain (as since Xen 4.12): only the number the
            // domain has is accepted.
            if m.max != have {
                return Err(Errno::EINVAL.into());
            }
            false
        }
        DomctlCmd::GetVcpuInfo => {
            let a: hypercall_abi::domctl::DomctlGetVcpuInfo = op.arg();
            op.set_arg(&vcpu_info(ctx, target, a.vcpu)?);
            true
        }
        DomctlCmd::SetVcpuAffinity | DomctlCmd::GetVcpuAffinity => {
            let a: hypercall_abi::domctl::DomctlVcpuAffinity = op.arg();
            vcpu_affinity(ctx, target, &a, cmd == DomctlCmd::SetVcpuAffinity)?;
            false
        }
        DomctlCmd::SetVcpuContext => {
            super::vcpuctx::set_vcpu_context(ctx, target, op.arg())?;
            false
        }
        DomctlCmd::GetVcpuContext => {
            super::vcpuctx::get_vcpu_context(ctx, target, op.arg())?;
            false
        }
        DomctlCmd::IomemPermission => {
            let m: DomctlIomemPermission = op.arg();
            iomem_permission(ctx, target, &m)?;
            false
        }
        DomctlCmd::IoportPermission => {
            let m: DomctlIoportPermission = op.arg();
            ioport_permission(ctx, target, &m)?;
            false
        }
        DomctlCmd::IrqPermission => {
            let a: hypercall_abi::domctl::DomctlIrqPermission = op.arg();
            let dom = super::physdev_irq::lookup(ctx, target)?;
            let caller = (me, ctx.dom.privileged);
            ctx.p
                .irqs(|t, _| t.irq_permission(caller, dom, a.pirq, a.allow_access != 0))?;
            false
        }
        DomctlCmd::HypercallInit => {
            let h: hypercall_abi::domctl::DomctlHypercallInit = op.arg();
            super::vcpuctx::hypercall_init(ctx, target, h.gmfn)?;
            false
        }
    };
    if copy_back {
        ctx.p.write_obj(arg.addr(), &op)?;
    }
    Ok(0)
}

/// Whether domain `target` exists (the caller or another): Xen's `do_domctl` looks
/// it up before anything else (`-ESRCH`).
fn exists<P: Platform>(ctx: &mut GuestCtx<'_, P>, target: DomId) -> bool {
    target == ctx.dom.id || ctx.p.with_domain(target, |_| ()).is_some()
}

/// `XEN_DOMCTL_iomem_permission` (Xen's `common/domctl.c`): a range that wraps is
/// `-EINVAL`; the caller must hold every frame of it itself (`-EPERM`); then the
/// range is granted to or revoked from `target` (`-ENOMEM` if its set is full).
fn iomem_permission<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    m: &DomctlIomemPermission,
) -> Result<(), HvError> {
    if !exists(ctx, target) {
        return Err(Errno::ESRCH.into());
    }
    let first = m.first_mfn;
    let last = first.wrapping_add(m.nr_mfns).wrapping_sub(1);
    if last < first {
        return Err(Errno::EINVAL.into());
    }
    if !ctx.p.iomem_permitted(ctx.dom.id, first, last) {
        return Err(Errno::EPERM.into());
    }
    ctx.p
        .iomem_permission(target, first, last, m.allow_access != 0)
        .map_err(|_| Errno::ENOMEM.into())
}

/// Ports in the x86 I/O space (Xen's `MAX_IOPORTS`).
const MAX_IOPORTS: u32 = 0x1_0000;

/// `XEN_DOMCTL_ioport_permission` (Xen's `arch/x86/domctl.c`): an empty, wrapping or
/// too large range is `-EINVAL`; the caller must reach every port of it itself
/// (`-EPERM`); then the range is granted to or revoked from `target` (`-ENOMEM` if
/// its set is full).
fn ioport_permission<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    m: &DomctlIoportPermission,
) -> Result<(), HvError> {
    if !exists(ctx, target) {
        return Err(Errno::ESRCH.into());
    }
    let (fp, np) = (m.first_port, m.nr_ports);
    let end = fp.checked_add(np).ok_or(Errno::EINVAL)?;
    if end <= fp || end > MAX_IOPORTS {
        return Err(Errno::EINVAL.into());
    }
    let (Ok(first), Ok(last)) = (u16::try_from(fp), u16::try_from(end - 1)) else {
        return Err(Errno::EINVAL.into());
    };
    if !ctx.dom.ioports.permits_range(first, last) {
        return Err(Errno::EPERM.into());
    }
    let r = crate::ioport::PortRange { first, last };
    let allow = m.allow_access != 0;
    let change = |ports: &mut crate::ioport::IoPorts| {
        if allow {
            ports.permit(r)
        } else {
            ports.try_deny(r)
        }
    };
    let done = if target == ctx.dom.id {
        change(&mut ctx.dom.ioports)
    } else {
        ctx.p
            .with_domain(target, |d| change(&mut d.ioports))
            .ok_or(Errno::ESRCH)?
    };
    done.map_err(|_| Errno::ENOMEM.into())
}

/// Checks a createdomain request as Xen does for a PV domain.
fn create_spec(target: DomId, c: &DomctlCreateDomain) -> Result<CreateSpec, HvError> {
    if c.flags & !CDF_ALL != 0 {
        return Err(Errno::EINVAL.into());
    }
    // As Xen's `domain_create`: at least one vCPU, at most the domain limit
    // ([`MAX_VCPUS`](crate::domain::MAX_VCPUS) here; docs/xen-differences.md).
    let vcpus = usize::try_from(c.max_vcpus).unwrap_or(usize::MAX);
    if !(1..=crate::domain::MAX_VCPUS).contains(&vcpus) {
        return Err(Errno::EINVAL.into());
    }
    // HAP without HVM is a malformed request; HVM itself is what this
    // hypervisor (like Xen on a CPU without VT-x/SVM, as under QEMU's TCG)
    // cannot do: -EOPNOTSUPP, as real Xen 4.17 answers there.
    if c.flags & CDF_HAP != 0 && c.flags & CDF_HVM == 0 {
        return Err(Errno::EINVAL.into());
    }
    if c.flags & CDF_HVM != 0 {
        return Err(Errno::EOPNOTSUPP.into());
    }
    let id = match target.0 {
        0 => None,
        n if n < DOMID_FIRST_RESERVED => Some(target),
        _ => return Err(Errno::EINVAL.into()),
    };
    if c.grant_opts & !GRANT_VERSION_MASK != 0 {
        return Err(Errno::EINVAL.into());
    }
    let gnttab = crate::gnttab::Limits::from_createdomain(
        c.max_grant_frames,
        c.max_maptrack_frames,
        c.grant_opts & GRANT_VERSION_MASK,
    )
    .ok_or(Errno::EINVAL)?;
    Ok(CreateSpec {
        id,
        handle: c.handle,
        max_vcpus: c.max_vcpus,
        max_evtchn_port: c.max_evtchn_port,
        gnttab,
    })
}

/// The first domain with id >= `at`: the caller itself or one the platform knows.
fn domain_info_at_or_after<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    at: DomId,
) -> Option<DomainSummary> {
    let now = ctx.p.now_ns();
    let mine = (ctx.dom.id >= at).then(|| {
        let vcpus = core::iter::once(&*ctx.vcpu).chain(ctx.siblings.iter());
        DomainSummary::of(ctx.dom, vcpus, now, true)
    });
    let other = ctx.p.domain_summary(at);
    match (mine, other) {
        (Some(m), Some(o)) => Some(if m.id <= o.id { m } else { o }),
        (m, o) => m.or(o),
    }
}

/// `sysctl(op)`.
pub fn sysctl<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<()>) -> HvResult {
    let mut op: Sysctl = ctx.p.read_obj(arg.addr())?;
    if op.interface_version != SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES.into());
    }
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    match SysctlCmd::from_nr(op.cmd) {
        Some(SysctlCmd::Physinfo) => {
            let mut p: SysctlPhysinfo = ctx.p.physinfo();
            p.capabilities |= PHYSCAP_PV;
            op.set_arg(&p);
        }
        Some(SysctlCmd::ReadConsole) => {
            let mut r: SysctlReadConsole = op.arg();
            let mut buf = [0u8; 512];
            let mut written: usize = 0;
            let total = usize::try_from(r.count).unwrap_or(usize::MAX);
            let mut index = (r.incremental != 0).then_some(r.index);
            // Copy out in chunks so the hypervisor needs no buffer of the guest's size.
            while written < total {
                let want = (total - written).min(buf.len());
                let (n, next) = ctx.p.read_console(index, &mut buf[..want]);
                index = Some(next);
                if n == 0 {
                    break;
                }
                let dst = r.buffer.wrapping_add(written as u64);
                ctx.p.write_guest(dst, &buf[..n])?;
                written += n;
            }
            if r.clear != 0 {
                ctx.p.clear_console();
            }
            r.count = u32::try_from(written).unwrap_or(u32::MAX);
            r.index = index.unwrap_or(0);
            op.set_arg(&r);
        }
        None => return Err(Errno::ENOSYS.into()),
    }
    ctx.p.write_obj(arg.addr(), &op)?;
    Ok(0)
}

/// Most bytes of a `xenctl_bitmap` written back (4096 CPUs); Xen clears a caller's
/// longer bitmap to its end.
const MAX_BITMAP_BYTES: u32 = 512;

/// Reads `b` as a CPU mask (CPUs past 63 are not in this machine: dropped, as Xen
/// drops bits past `nr_cpu_ids`). -EFAULT if it cannot be read.
fn read_cpumap<P: Platform>(
    p: &mut P,
    b: &hypercall_abi::domctl::XenctlBitmap,
) -> Result<u64, HvError> {
    let bits = b.nr_bits.min(64);
    let mut bytes = [0u8; 8];
    let n = usize::try_from(bits.div_ceil(8)).unwrap_or(0);
    if let Some(buf) = bytes.get_mut(..n) {
        p.read_guest(b.bitmap, buf)?;
    }
    let mask = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    Ok(u64::from_le_bytes(bytes) & mask)
}

/// Writes CPU mask `cpus` into `b` (its `nr_bits` bits; the bytes past the mask
/// cleared). -EFAULT if it cannot be written.
fn write_cpumap<P: Platform>(
    p: &mut P,
    b: &hypercall_abi::domctl::XenctlBitmap,
    cpus: u64,
) -> Result<(), HvError> {
    let len = b.nr_bits.div_ceil(8).min(MAX_BITMAP_BYTES);
    let mut bytes = [0u8; MAX_BITMAP_BYTES as usize];
    for (i, byte) in cpus.to_le_bytes().into_iter().enumerate() {
        if let Some(slot) = bytes.get_mut(i) {
            *slot = byte;
        }
    }
    // The last byte keeps only the bits `nr_bits` covers.
    let tail = b.nr_bits % 8;
    let n = usize::try_from(len).unwrap_or(0);
    if tail != 0 && n > 0 {
        if let Some(last) = bytes.get_mut(n - 1) {
            *last &= (1u8 << tail) - 1;
        }
    }
    p.write_guest(b.bitmap, bytes.get(..n).unwrap_or(&[]))?;
    Ok(())
}

/// `XEN_DOMCTL_getvcpuinfo` for vCPU `vcpu` of `target`, as Xen 4.17 answers it: an
/// unknown domain is -ESRCH, a vCPU it does not have -EINVAL.
fn vcpu_info<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    vcpu: u32,
) -> Result<hypercall_abi::domctl::DomctlGetVcpuInfo, HvError> {
    use crate::vcpu::Wait;
    use hypercall_abi::vcpu::RUNSTATE_RUNNING;
    let now = ctx.p.now_ns();
    let info = |v: &crate::vcpu::Vcpu| {
        let r = v.runstate_at(now);
        hypercall_abi::domctl::DomctlGetVcpuInfo {
            vcpu,
            online: u8::from(v.online),
            blocked: u8::from(matches!(v.wait, Wait::Block | Wait::Poll(_))),
            running: u8::from(r.state == RUNSTATE_RUNNING),
            cpu_time: r.time[RUNSTATE_RUNNING as usize],
            cpu: u32::from(v.processor),
            ..Default::default()
        }
    };
    if target != ctx.dom.id {
        ctx.p.with_domain(target, |_| ()).ok_or(Errno::ESRCH)?;
        return ctx
            .p
            .with_vcpu(target, vcpu, |_, v| info(v))
            .ok_or(Errno::EINVAL.into());
    }
    if vcpu == ctx.vcpu.id {
        return Ok(info(ctx.vcpu));
    }
    ctx.siblings
        .get_mut(vcpu)
        .map(|v| info(v))
        .ok_or(Errno::EINVAL.into())
}

/// `XEN_DOMCTL_setvcpuaffinity` / `getvcpuaffinity` of vCPU `a.vcpu` of `target` (the
/// caller included), as Xen 4.17's `vcpu_affinity_domctl`: a vCPU the domain does
/// not have is -EINVAL, as are flags naming neither map. Setting the hard map keeps
/// the vCPU to those CPUs that run guests (-EINVAL if none, nothing changed) and
/// writes that effective map back; the soft map goes to the scheduler as a
/// preference and is written back as its intersection with the hard one. Reading
/// gives the maps as they were set.
fn vcpu_affinity<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    a: &hypercall_abi::domctl::DomctlVcpuAffinity,
    set: bool,
) -> HvResult {
    use hypercall_abi::domctl::{VCPUAFFINITY_HARD, VCPUAFFINITY_SOFT};
    let me = target == ctx.dom.id;
    if !me {
        ctx.p.with_domain(target, |_| ()).ok_or(Errno::ESRCH)?;
    }
    let current = |ctx: &mut GuestCtx<'_, P>| -> Option<(u64, u64)> {
        let get = |v: &crate::vcpu::Vcpu| (v.affinity_hard, v.affinity_soft);
        if !me {
            ctx.p.with_vcpu(target, a.vcpu, |_, v| get(v))
        } else if a.vcpu == ctx.vcpu.id {
            Some(get(ctx.vcpu))
        } else {
            ctx.siblings.get_mut(a.vcpu).map(|v| get(v))
        }
    };
    let (mut hard, mut soft) = current(ctx).ok_or(Errno::EINVAL)?;
    if a.flags & (VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT) == 0 {
        return Err(Errno::EINVAL.into());
    }
    if !set {
        if a.flags & VCPUAFFINITY_HARD != 0 {
            write_cpumap(ctx.p, &a.cpumap_hard, hard)?;
        }
        if a.flags & VCPUAFFINITY_SOFT != 0 {
            write_cpumap(ctx.p, &a.cpumap_soft, soft)?;
        }
        return Ok(0);
    }
    let want_hard = if a.flags & VCPUAFFINITY_HARD != 0 {
        Some(read_cpumap(ctx.p, &a.cpumap_hard)?)
    } else {
        None
    };
    let want_soft = if a.flags & VCPUAFFINITY_SOFT != 0 {
        Some(read_cpumap(ctx.p, &a.cpumap_soft)?)
    } else {
        None
    };
    let mut effective = hard;
    if let Some(h) = want_hard {
        effective = ctx.p.set_hard_affinity(target, a.vcpu, h)?;
        hard = h;
    }
    if let Some(s) = want_soft {
        ctx.p.set_soft_affinity(target, a.vcpu, s)?;
        soft = s;
    }
    let store = |v: &mut crate::vcpu::Vcpu| {
        v.affinity_hard = hard;
        v.affinity_soft = soft;
    };
    if !me {
        ctx.p.with_vcpu(target, a.vcpu, |_, v| store(v));
    } else if a.vcpu == ctx.vcpu.id {
        store(ctx.vcpu);
    } else if let Some(v) = ctx.siblings.get_mut(a.vcpu) {
        store(v);
    }
    if want_hard.is_some() {
        write_cpumap(ctx.p, &a.cpumap_hard, effective)?;
    }
    if want_soft.is_some() {
        write_cpumap(ctx.p, &a.cpumap_soft, soft & effective)?;
    }
    Ok(0)
}
