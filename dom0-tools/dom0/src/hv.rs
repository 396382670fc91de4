//! [`Hypervisor`] on the real hypervisor: `xen_version`, `sysctl`, `domctl`
//! and `sched_op` hypercalls through the runtime's hypercall page.

use alloc::string::String;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use control_proto::cpus::{Affinity, CpuMap, MAP_BYTES, MAX_CPU};
use dom0_core::{ConsoleChunk, GrantSeg, Hypervisor, RingId, XenVersion};
use pv_runtime::abi::domctl::{
    Domctl, DomctlCmd, DomctlCreateDomain, DomctlGetDomainInfo, DomctlGetVcpuInfo, DomctlMaxMem,
    DomctlMaxVcpus, DomctlVcpuAffinity, DomctlVcpuContext, Sysctl, SysctlCmd, SysctlPhysinfo,
    SysctlReadConsole, VCPUAFFINITY_HARD, VCPUAFFINITY_SOFT, XenctlBitmap,
};
use pv_runtime::abi::evtchn::{EvtchnAllocUnbound, EvtchnOp};
use pv_runtime::abi::guest::HypercallPage;
use pv_runtime::abi::hypercall::{
    domctl, event_channel_op, memory_op, mmuext_op, sched_op, sysctl, xen_version,
};
use pv_runtime::abi::memory::{XenMemoryReservation, XenmemOp};
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp, foreigndom};
use pv_runtime::abi::xen::VcpuGuestContext;
use pv_runtime::abi::{EvtchnPort, GrantRef, Mfn};

use crate::{foreign, grants};
use pv_runtime::abi::sched::{SchedOp, SchedRemoteShutdown, ShutdownReason};
use pv_runtime::abi::version::{XenCompileInfo, XenVer};
use pv_runtime::abi::{DomId, Errno};
use pv_runtime::evtchn::Handler;
use pv_runtime::hypercall::{handle, handle_mut};

/// Events on domains' XenStore channels since boot (see [`store_events`]).
static STORE_EVENTS: AtomicU64 = AtomicU64::new(0);
/// Events on the block and net back ends' channels since boot.
static BACKEND_EVENTS: AtomicU64 = AtomicU64::new(0);

fn on_store_event(_: EvtchnPort) {
    STORE_EVENTS.fetch_add(1, Ordering::Relaxed);
}

fn on_backend_event(_: EvtchnPort) {
    BACKEND_EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// Events the upcall handled on the back ends' channels since boot (read with
/// [`store_events`] and `pv_runtime::evtchn::counters`, events off).
pub fn backend_events() -> u64 {
    BACKEND_EVENTS.load(Ordering::Relaxed)
}

/// Events the upcall handled on XenStore channels since boot; with
/// `pv_runtime::evtchn::counters` (read together, events off) it tells a
/// store-only wake-up.
pub fn store_events() -> u64 {
    STORE_EVENTS.load(Ordering::Relaxed)
}

/// The hypervisor, reached by hypercalls.
#[derive(Debug, Default)]
pub struct XenHv {
    /// The grant rings the block back end mapped.
    rings: grants::Rings,
}

fn inv() -> HypercallPage {
    // SAFETY: every call below passes handles to live objects of exactly the
    // type the hypercall reads or writes (`handle`/`handle_mut`), and the
    // buffer addresses inside arguments (readconsole's, the affinity bitmaps)
    // point at live `&mut [u8]`s of the size they name (`count`, `nr_bits`).
    // None of these hypercalls touches
    // the runtime's mappings or trap table.
    unsafe { pv_runtime::hypercall::invoker() }
}

/// The text of a NUL-terminated field.
fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn sysctl_op(op: &mut Sysctl) -> Result<(), Errno> {
    sysctl(&mut inv(), handle_mut(op).cast()).map(drop)
}

fn domctl_op(op: &mut Domctl) -> Result<(), Errno> {
    domctl(&mut inv(), handle_mut(op).cast()).map(drop)
}

/// A `xenctl_bitmap` over `buf` (every CPU number a [`CpuMap`] holds).
fn bitmap(buf: &mut [u8; MAP_BYTES]) -> XenctlBitmap {
    XenctlBitmap {
        bitmap: buf.as_mut_ptr().expose_provenance() as u64,
        nr_bits: MAX_CPU + 1,
        _pad: 0,
    }
}

fn domctl_simple(cmd: DomctlCmd, dom: DomId) -> Result<(), Errno> {
    let mut op = Domctl {
        cmd: cmd.nr(),
        domain: dom,
        ..Domctl::default()
    };
    domctl_op(&mut op)
}

impl Hypervisor for XenHv {
    fn xen_version(&mut self) -> Result<XenVersion, Errno> {
        let v = pv_runtime::xen::version()?;
        let extra = pv_runtime::xen::extraversion()?;
        let mut info = XenCompileInfo {
            compiler: [0; 64],
            compile_by: [0; 16],
            compile_domain: [0; 32],
            compile_date: [0; 32],
        };
        // Compile info is decoration: without it the version still stands.
        let by = match xen_version(
            &mut inv(),
            XenVer::CompileInfo.nr(),
            handle_mut(&mut info).cast(),
        ) {
            Ok(_) => cstr(&info.compile_by),
            Err(_) => String::new(),
        };
        Ok(XenVersion {
            major: v.major,
            minor: v.minor,
            extra: cstr(&extra),
            compile_by: by,
        })
    }

    fn physinfo(&mut self) -> Result<SysctlPhysinfo, Errno> {
        let mut op = Sysctl::new(SysctlCmd::Physinfo, &SysctlPhysinfo::default());
        sysctl_op(&mut op)?;
        Ok(op.arg())
    }

    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
        let arg = SysctlReadConsole {
            clear: 0,
            incremental: u8::from(from.is_some()),
            index: from.unwrap_or(0),
            buffer: buf.as_mut_ptr().expose_provenance() as u64,
            count: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            ..SysctlReadConsole::default()
        };
        let mut op = Sysctl::new(SysctlCmd::ReadConsole, &arg);
        sysctl_op(&mut op)?;
        let out: SysctlReadConsole = op.arg();
        Ok(ConsoleChunk {
            len: usize::try_from(out.count).unwrap_or(0).min(buf.len()),
            next: out.index,
        })
    }

    fn domain_info(&mut self, from: DomId) -> Result<DomctlGetDomainInfo, Errno> {
        let mut op = Domctl::new(
            DomctlCmd::GetDomainInfo,
            from,
            &DomctlGetDomainInfo::default(),
        );
        domctl_op(&mut op)?;
        let mut info: DomctlGetDomainInfo = op.arg();
        // Xen reports the domain found in the header (and in the union).
        info.domain = op.domain;
        Ok(info)
    }

    fn pause(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::PauseDomain, dom)
    }

    fn unpause(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::UnpauseDomain, dom)
    }

    fn destroy(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::DestroyDomain, dom)
    }

    fn remote_shutdown(&mut self, dom: DomId, reason: ShutdownReason) -> Result<(), Errno> {
        let arg = SchedRemoteShutdown {
            domain_id: dom,
            _pad: 0,
            reason: reason as u32,
        };
        sched_op(
            &mut inv(),
            SchedOp::RemoteShutdown.nr(),
            handle(&arg).cast(),
        )
        .map(drop)
    }

    fn now_ns(&self) -> u64 {
        pv_runtime::time::system_time_ns()
    }

    fn take_dom_exc(&mut self) -> bool {
        crate::dom_exc::take()
    }

    fn create_domain(&mut self, handle: [u8; 16], vcpus: u32) -> Result<DomId, Errno> {
        let cfg = DomctlCreateDomain {
            handle,
            max_vcpus: vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: -1,
            max_maptrack_frames: -1,
            grant_opts: pv_runtime::abi::domctl::grant_version(2),
            ..DomctlCreateDomain::default()
        };
        let mut op = Domctl::new(DomctlCmd::CreateDomain, DomId(0), &cfg);
        domctl_op(&mut op)?;
        Ok(op.domain)
    }

    fn set_vcpu_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        which: Affinity,
        map: &CpuMap,
    ) -> Result<CpuMap, Errno> {
        // In: the map asked; out: the effective one the hypervisor writes back.
        let mut buf = map.to_bitmap();
        let arg = dom0_core::hv::set_affinity_arg(vcpu, which, bitmap(&mut buf));
        let mut op = Domctl::new(DomctlCmd::SetVcpuAffinity, dom, &arg);
        domctl_op(&mut op)?;
        Ok(CpuMap::from_bitmap(&buf))
    }

    fn vcpu_info(&mut self, dom: DomId, vcpu: u32) -> Result<control_proto::VcpuState, Errno> {
        let arg = DomctlGetVcpuInfo {
            vcpu,
            ..Default::default()
        };
        let mut op = Domctl::new(DomctlCmd::GetVcpuInfo, dom, &arg);
        domctl_op(&mut op)?;
        let i: DomctlGetVcpuInfo = op.arg();
        Ok(control_proto::VcpuState {
            online: i.online != 0,
            blocked: i.blocked != 0,
            running: i.running != 0,
            cpu: i.cpu,
            time_ns: i.cpu_time,
        })
    }

    fn vcpu_affinity(&mut self, dom: DomId, vcpu: u32) -> Result<(CpuMap, CpuMap), Errno> {
        let mut hard = [0u8; MAP_BYTES];
        let mut soft = [0u8; MAP_BYTES];
        let arg = DomctlVcpuAffinity {
            vcpu,
            flags: VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT,
            cpumap_hard: bitmap(&mut hard),
            cpumap_soft: bitmap(&mut soft),
        };
        let mut op = Domctl::new(DomctlCmd::GetVcpuAffinity, dom, &arg);
        domctl_op(&mut op)?;
        Ok((CpuMap::from_bitmap(&hard), CpuMap::from_bitmap(&soft)))
    }

    fn max_vcpus(&mut self, dom: DomId, vcpus: u32) -> Result<(), Errno> {
        let mut op = Domctl::new(DomctlCmd::MaxVcpus, dom, &DomctlMaxVcpus { max: vcpus });
        domctl_op(&mut op)
    }

    fn max_mem(&mut self, dom: DomId, kib: u64) -> Result<(), Errno> {
        let mut op = Domctl::new(DomctlCmd::MaxMem, dom, &DomctlMaxMem { max_memkb: kib });
        domctl_op(&mut op)
    }

    fn populate_physmap(&mut self, dom: DomId, frames: &mut [u64]) -> Result<usize, Errno> {
        let res = XenMemoryReservation {
            extent_start: pv_runtime::abi::GuestPtr::from_ptr(frames.as_mut_ptr()),
            nr_extents: frames.len() as u64,
            domid: dom,
            ..XenMemoryReservation::default()
        };
        let n = memory_op(
            &mut inv(),
            u64::from(XenmemOp::PopulatePhysmap.nr()),
            handle(&res).cast(),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    fn write_frame(
        &mut self,
        dom: DomId,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Errno> {
        foreign::with_frame(dom, mfn, |page| {
            if let Some(dst) = page.get_mut(offset..offset + bytes.len()) {
                dst.copy_from_slice(bytes);
            }
        })
    }

    fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno> {
        let mut arg = EvtchnAllocUnbound {
            dom,
            remote_dom: remote,
            port: EvtchnPort(0),
        };
        event_channel_op(
            &mut inv(),
            EvtchnOp::AllocUnbound.nr(),
            handle_mut(&mut arg).cast(),
        )?;
        Ok(arg.port)
    }

    fn pin_l4(&mut self, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
        let op = [MmuextOp::on_frame(MmuextCmd::PinL4Table, mfn)];
        let mut done = 0u32;
        mmuext_op(
            &mut inv(),
            pv_runtime::hypercall::handle_slice(&op),
            1,
            handle_mut(&mut done),
            foreigndom(dom, None),
        )
        .map(drop)
    }

    fn set_vcpu_context(&mut self, dom: DomId, ctx: &VcpuGuestContext) -> Result<(), Errno> {
        let arg = DomctlVcpuContext {
            vcpu: 0,
            ctxt: handle(ctx).addr(),
            ..DomctlVcpuContext::default()
        };
        domctl_op(&mut Domctl::new(DomctlCmd::SetVcpuContext, dom, &arg))
    }

    fn bind_interdomain(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        pv_runtime::evtchn::bind_interdomain(dom, port)
    }

    fn bind_store(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        let p = pv_runtime::evtchn::bind_interdomain(dom, port)?;
        let _ = pv_runtime::evtchn::set_handler(p, Handler::Fn(on_store_event));
        Ok(p)
    }

    fn bind_backend(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        let p = pv_runtime::evtchn::bind_interdomain(dom, port)?;
        let _ = pv_runtime::evtchn::set_handler(p, Handler::Fn(on_backend_event));
        Ok(p)
    }

    fn close(&mut self, port: EvtchnPort) {
        // A port number is reused: a later console's events are not the store's.
        pv_runtime::evtchn::clear_handler(port);
        let _ = pv_runtime::evtchn::close(port);
    }

    fn notify(&mut self, port: EvtchnPort) {
        let _ = pv_runtime::evtchn::send(port);
    }

    fn map_ring(&mut self, dom: DomId, mfn: Mfn) -> Result<RingId, Errno> {
        foreign::map_ring(dom, mfn)
    }

    fn ring(&self, id: RingId) -> Option<&[AtomicU32]> {
        if id.0 >= grants::ID_BASE {
            self.rings.ring(id)
        } else {
            foreign::ring(id)
        }
    }

    fn unmap_ring(&mut self, id: RingId) {
        foreign::unmap_ring(id);
    }

    fn map_grant_ring(&mut self, dom: DomId, refs: &[GrantRef]) -> Result<RingId, Errno> {
        self.rings.map(dom, refs)
    }

    fn unmap_grant_ring(&mut self, id: RingId) {
        self.rings.unmap(id);
    }

    fn grant_copy(
        &mut self,
        dom: DomId,
        to_guest: bool,
        buf: &mut [u8],
        segs: &[GrantSeg],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        grants::copy(dom, to_guest, buf, segs, status)
    }

    fn io_buffer(&mut self, bytes: usize) -> Option<&'static mut [u8]> {
        grants::io_buffer(bytes)
    }
}
