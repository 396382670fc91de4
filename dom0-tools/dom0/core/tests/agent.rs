//! The control agent and its server against a fake hypervisor: every request
//! the agent serves today, the errors it gives, and the framing rules
//! (garbage, split frames, the quiet-link rule, power-off).

use std::collections::BTreeMap;

use control_proto::cpus::{Affinity, CpuMap};
use control_proto::images::{Bundle, BundleWriter};
use control_proto::{
    CreateRequest, DomRef, DomState, ErrorCode, ExitAction, FrameDecoder, Kernel, MAX_DATA,
    Message, PROTOCOL_VERSION, Request, Response, ShutdownReason, crc32,
};
use dom0_core::server::{BUSY_NS, QUIET_NS};
use dom0_core::uploads::VecStore;
use dom0_core::{After, Agent, ConsoleChunk, Hypervisor, RingId, Server, XenVersion};
use hypercall_abi::domctl::{
    DOMINF_BLOCKED, DOMINF_PAUSED, DOMINF_SHUTDOWN, DomctlGetDomainInfo, SysctlPhysinfo,
};
use hypercall_abi::io::console::ConsoleFront;
use hypercall_abi::xen::VcpuGuestContext;
use hypercall_abi::{DomId, Errno};
use hypercall_abi::{EvtchnPort, Mfn};
use proptest::prelude::*;
use std::sync::atomic::AtomicU32;

/// A hypervisor in memory, with Xen's semantics for the calls the agent makes.
#[derive(Debug, Default)]
struct FakeHv {
    domains: BTreeMap<u16, DomctlGetDomainInfo>,
    /// The console ring: bytes [oldest, produced) of everything written.
    console: Vec<u8>,
    /// Bytes of `console` already overwritten (the ring's consumer index).
    console_oldest: usize,
    /// Every domctl/sysctl fails with this, if set.
    refuse: Option<Errno>,
    /// `readconsole` ignores `incremental` (a hypervisor that gets it wrong).
    ignore_incremental: bool,
    calls: Vec<String>,
    now: u64,
    /// Machine frames: owner and contents.
    frames: BTreeMap<u64, (DomId, Vec<u8>)>,
    /// Frames left to populate.
    free: u64,
    next_mfn: u64,
    /// Mapped console pages: (domain, page).
    rings: BTreeMap<u32, (DomId, Vec<AtomicU32>)>,
    next_ring: u32,
    /// dom0's bound ports and the events sent on them.
    bound: Vec<EvtchnPort>,
    notified: Vec<EvtchnPort>,
    /// Hard affinity as set, by (domain, vCPU); unset: every CPU.
    hard: BTreeMap<(u16, u32), CpuMap>,
    /// Soft affinity as set, by (domain, vCPU); unset: every CPU.
    soft: BTreeMap<(u16, u32), CpuMap>,
    /// Setting a soft map fails with this, if set.
    refuse_soft: Option<Errno>,
    /// Setting either map of this vCPU fails with `-EPERM`, if set.
    refuse_vcpu: Option<u32>,
    /// Maps that may still be set before every further set fails with `-ESRCH`
    /// (the domain went away), if set.
    sets_left: Option<u32>,
}

/// The MFN of domain `id`'s shared_info page in the fake (outside the pool).
fn shared_info_of(id: u16) -> u64 {
    0xF_0000 + u64::from(id)
}

fn dom(id: u16, flags: u32, pages: u64) -> DomctlGetDomainInfo {
    DomctlGetDomainInfo {
        domain: DomId(id),
        flags,
        tot_pages: pages,
        max_pages: pages * 2,
        cpu_time: 1_000 * u64::from(id),
        nr_online_vcpus: 1,
        ..DomctlGetDomainInfo::default()
    }
}

impl FakeHv {
    fn with_domains(ids: &[u16]) -> Self {
        let mut hv = FakeHv {
            now: 10_000_000_000,
            free: 100_000,
            next_mfn: 0x1000,
            ..FakeHv::default()
        };
        for &id in ids {
            hv.domains.insert(id, dom(id, DOMINF_BLOCKED, 1024));
        }
        hv
    }

    fn check(&mut self, call: String) -> Result<(), Errno> {
        self.calls.push(call);
        self.refuse.map_or(Ok(()), Err)
    }
}

impl Hypervisor for FakeHv {
    fn xen_version(&mut self) -> Result<XenVersion, Errno> {
        Ok(XenVersion {
            major: 4,
            minor: 17,
            extra: ".7".into(),
            compile_by: "xen-like-hv".into(),
        })
    }

    fn physinfo(&mut self) -> Result<SysctlPhysinfo, Errno> {
        self.check("physinfo".into())?;
        Ok(SysctlPhysinfo {
            nr_cpus: 2,
            cpu_khz: 2_500_000,
            total_pages: 131_072,
            free_pages: 100_000,
            ..SysctlPhysinfo::default()
        })
    }

    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
        self.check(format!("readconsole {from:?}"))?;
        let from = if self.ignore_incremental { None } else { from };
        let start = from.map_or(self.console_oldest, |i| {
            usize::try_from(i).unwrap().max(self.console_oldest)
        });
        let n = buf.len().min(self.console.len().saturating_sub(start));
        buf[..n].copy_from_slice(&self.console[start..start + n]);
        Ok(ConsoleChunk {
            len: n,
            next: u32::try_from(start + n).unwrap(),
        })
    }

    fn domain_info(&mut self, from: DomId) -> Result<DomctlGetDomainInfo, Errno> {
        self.check(format!("getdomaininfo {}", from.0))?;
        self.domains
            .range(from.0..)
            .next()
            .map(|(_, d)| *d)
            .ok_or(Errno::ESRCH)
    }

    fn pause(&mut self, d: DomId) -> Result<(), Errno> {
        self.check(format!("pause {}", d.0))?;
        let info = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        info.flags |= DOMINF_PAUSED;
        Ok(())
    }

    fn unpause(&mut self, d: DomId) -> Result<(), Errno> {
        self.check(format!("unpause {}", d.0))?;
        let info = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        if info.flags & DOMINF_PAUSED == 0 {
            return Err(Errno::EINVAL);
        }
        info.flags &= !DOMINF_PAUSED;
        Ok(())
    }

    fn destroy(&mut self, d: DomId) -> Result<(), Errno> {
        self.check(format!("destroy {}", d.0))?;
        // As a real teardown would leave them referenced: dom0 must unmap first.
        assert!(
            !self.rings.values().any(|(o, _)| *o == d),
            "domain {} destroyed while dom0 still maps its console page",
            d.0
        );
        self.domains.remove(&d.0).ok_or(Errno::ESRCH)?;
        self.hard.retain(|(dom, _), _| *dom != d.0);
        self.soft.retain(|(dom, _), _| *dom != d.0);
        // The shared_info page is the hypervisor's, not from the free pool.
        self.frames.remove(&shared_info_of(d.0));
        let before = self.frames.len();
        self.frames.retain(|_, (o, _)| *o != d);
        self.free += (before - self.frames.len()) as u64;
        Ok(())
    }

    fn remote_shutdown(
        &mut self,
        d: DomId,
        reason: hypercall_abi::sched::ShutdownReason,
    ) -> Result<(), Errno> {
        self.check(format!("remote_shutdown {} {}", d.0, reason as u32))?;
        let info = self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?;
        info.flags |= DOMINF_SHUTDOWN | ((reason as u32) << 16);
        Ok(())
    }

    fn now_ns(&self) -> u64 {
        self.now
    }

    fn create_domain(&mut self, handle: [u8; 16], vcpus: u32) -> Result<DomId, Errno> {
        self.check("createdomain".into())?;
        let id = (1..).find(|i| !self.domains.contains_key(i)).unwrap();
        // The hypervisor's shared_info page of the domain, zeroed (the builder
        // masks its upcalls).
        self.frames
            .insert(shared_info_of(id), (DomId(id), vec![0; 4096]));
        self.domains.insert(
            id,
            DomctlGetDomainInfo {
                handle,
                max_vcpu_id: vcpus - 1,
                shared_info_frame: shared_info_of(id),
                ..dom(id, DOMINF_PAUSED, 0)
            },
        );
        Ok(DomId(id))
    }

    fn set_vcpu_affinity(
        &mut self,
        d: DomId,
        vcpu: u32,
        which: Affinity,
        map: &CpuMap,
    ) -> Result<CpuMap, Errno> {
        let soft = which == Affinity::Soft;
        let flag = if soft { "soft " } else { "" };
        self.check(format!("setvcpuaffinity {flag}{} {vcpu} {map}", d.0))?;
        let info = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
        if vcpu > info.max_vcpu_id {
            return Err(Errno::EINVAL);
        }
        if self.refuse_vcpu == Some(vcpu) {
            return Err(Errno::EPERM);
        }
        if let Some(n) = self.sets_left.as_mut() {
            if *n == 0 {
                return Err(Errno::ESRCH);
            }
            *n -= 1;
        }
        let machine = CpuMap::first(2);
        if soft {
            if let Some(e) = self.refuse_soft {
                return Err(e);
            }
            // As Xen: kept even with no CPU of the machine; the effective map is
            // within the hard one.
            self.soft.insert((d.0, vcpu), *map);
            let hard = self.hard.get(&(d.0, vcpu)).unwrap_or(&machine);
            return Ok(map.intersection(hard).intersection(&machine));
        }
        // As Xen: the CPUs of the map that run guests (physinfo's two), -EINVAL
        // if none, and nothing changes then.
        let effective = map.intersection(&machine);
        if effective.is_empty() {
            return Err(Errno::EINVAL);
        }
        self.hard.insert((d.0, vcpu), *map);
        Ok(effective)
    }

    fn vcpu_info(&mut self, d: DomId, vcpu: u32) -> Result<control_proto::VcpuState, Errno> {
        self.check(format!("getvcpuinfo {} {vcpu}", d.0))?;
        let info = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
        if vcpu > info.max_vcpu_id {
            return Err(Errno::EINVAL);
        }
        // vCPU n last ran on CPU n % 2, for n ms; vCPU 0 runs, the others block.
        Ok(control_proto::VcpuState {
            online: true,
            blocked: vcpu != 0,
            running: vcpu == 0,
            cpu: vcpu % 2,
            time_ns: u64::from(vcpu) * 1_000_000,
        })
    }

    fn vcpu_affinity(&mut self, d: DomId, vcpu: u32) -> Result<(CpuMap, CpuMap), Errno> {
        self.check(format!("getvcpuaffinity {} {vcpu}", d.0))?;
        let info = self.domains.get(&d.0).ok_or(Errno::ESRCH)?;
        if vcpu > info.max_vcpu_id {
            return Err(Errno::EINVAL);
        }
        // The hypervisor keeps 64-bit maps: every CPU reads back as 0-63.
        let all = CpuMap::first(64);
        let get = |m: &BTreeMap<(u16, u32), CpuMap>| m.get(&(d.0, vcpu)).copied().unwrap_or(all);
        Ok((get(&self.hard), get(&self.soft)))
    }

    fn max_mem(&mut self, d: DomId, kib: u64) -> Result<(), Errno> {
        self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?.max_pages = kib / 4;
        Ok(())
    }

    fn populate_physmap(&mut self, d: DomId, frames: &mut [u64]) -> Result<usize, Errno> {
        let mut n = 0;
        for f in frames.iter_mut() {
            if self.free == 0 {
                break;
            }
            self.free -= 1;
            self.next_mfn += 1;
            self.frames.insert(self.next_mfn, (d, vec![0; 4096]));
            *f = self.next_mfn;
            n += 1;
        }
        self.domains.get_mut(&d.0).ok_or(Errno::ESRCH)?.tot_pages += n as u64;
        Ok(n)
    }

    fn write_frame(
        &mut self,
        d: DomId,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Errno> {
        let (owner, f) = self.frames.get_mut(&mfn.0).ok_or(Errno::EINVAL)?;
        if *owner != d {
            return Err(Errno::EPERM);
        }
        f[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    fn alloc_unbound(&mut self, _d: DomId, _remote: DomId) -> Result<EvtchnPort, Errno> {
        Ok(EvtchnPort(1 + u32::try_from(self.bound.len()).unwrap()))
    }

    fn pin_l4(&mut self, d: DomId, mfn: Mfn) -> Result<(), Errno> {
        match self.frames.get(&mfn.0) {
            Some((o, _)) if *o == d => Ok(()),
            _ => Err(Errno::EINVAL),
        }
    }

    fn set_vcpu_context(&mut self, _d: DomId, _ctx: &VcpuGuestContext) -> Result<(), Errno> {
        Ok(())
    }

    fn bind_interdomain(&mut self, _d: DomId, _port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        let p = EvtchnPort(100 + u32::try_from(self.bound.len()).unwrap());
        self.bound.push(p);
        Ok(p)
    }

    fn close(&mut self, port: EvtchnPort) {
        self.bound.retain(|&p| p != port);
    }

    fn notify(&mut self, port: EvtchnPort) {
        self.notified.push(port);
    }

    fn map_ring(&mut self, d: DomId, mfn: Mfn) -> Result<RingId, Errno> {
        if self.frames.get(&mfn.0).map(|f| f.0) != Some(d) {
            return Err(Errno::EINVAL);
        }
        self.next_ring += 1;
        let page = (0..1024).map(|_| AtomicU32::new(0)).collect();
        self.rings.insert(self.next_ring, (d, page));
        Ok(RingId(self.next_ring))
    }

    fn ring(&self, id: RingId) -> Option<&[AtomicU32]> {
        self.rings.get(&id.0).map(|(_, p)| &p[..])
    }

    fn unmap_ring(&mut self, id: RingId) {
        self.rings.remove(&id.0);
    }
}

impl FakeHv {
    /// Domain `d` writes `text` to its console ring, as its front end would.
    fn guest_writes(&self, d: DomId, text: &[u8]) {
        let (_, page) = self
            .rings
            .values()
            .find(|(o, _)| *o == d)
            .expect("a mapped ring");
        let mut front = ConsoleFront::new(page).unwrap();
        assert_eq!(front.output.write(text).unwrap(), text.len());
    }

    /// What domain `d`'s console input ring holds.
    fn guest_reads(&self, d: DomId) -> Vec<u8> {
        let (_, page) = self
            .rings
            .values()
            .find(|(o, _)| *o == d)
            .expect("a mapped ring");
        let mut front = ConsoleFront::new(page).unwrap();
        let mut buf = [0u8; 64];
        let n = front.input.read(&mut buf).unwrap();
        buf[..n].to_vec()
    }
}

fn bundle_bytes() -> &'static [u8] {
    let mut w = BundleWriter::new();
    w.add("hello", b"not really an ELF").unwrap();
    w.add("small", &pvboot::testimg::Spec::small().build())
        .unwrap();
    w.add("demo", &[0u8; 4096]).unwrap();
    Vec::leak(w.finish().unwrap())
}

type TestAgent = Agent<'static, FakeHv, VecStore>;

fn agent(hv: FakeHv) -> TestAgent {
    let bundle = Bundle::parse(bundle_bytes()).unwrap();
    Agent::new(
        hv,
        VecStore { available: 8 << 20 },
        Some(bundle),
        "xlhv-dom0 test",
    )
}

fn ask(a: &mut TestAgent, req: Request) -> Response {
    a.handle(req).0
}

#[track_caller]
fn error(resp: Response, code: ErrorCode, needle: &str) -> String {
    match resp {
        Response::Error(e) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(
                e.message.contains(needle),
                "{:?} lacks {needle:?}",
                e.message
            );
            e.message
        }
        other => panic!("expected a {code} error, got {other:?}"),
    }
}

#[test]
fn hello_names_both_ends_and_checks_the_version() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    match ask(
        &mut a,
        Request::Hello {
            client_version: u32::from(PROTOCOL_VERSION),
        },
    ) {
        Response::HelloOk {
            protocol,
            agent,
            hypervisor,
        } => {
            assert_eq!(protocol, PROTOCOL_VERSION);
            assert_eq!(agent, "xlhv-dom0 test");
            assert_eq!(hypervisor, "xen-like-hv (Xen 4.17.7 ABI)");
        }
        other => panic!("{other:?}"),
    }
    error(
        ask(&mut a, Request::Hello { client_version: 1 }),
        ErrorCode::UnsupportedVersion,
        "this agent speaks 2",
    );
}

#[test]
fn info_from_physinfo_and_the_domain_count() {
    let mut a = agent(FakeHv::with_domains(&[0, 1, 5]));
    match ask(&mut a, Request::Info) {
        Response::Info(i) => {
            assert_eq!(
                (i.xen_major, i.xen_minor, i.xen_extra.as_str()),
                (4, 17, ".7")
            );
            assert_eq!(i.total_kib, 131_072 * 4);
            assert_eq!(i.free_kib, 400_000);
            assert_eq!(i.free_frames, 100_000);
            assert_eq!(
                i.dom0_free_frames,
                (8 << 20) / 4096,
                "the store's free frames"
            );
            assert_eq!((i.nr_cpus, i.cpu_khz, i.domains), (2, 2_500_000, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn hypervisor_errors_name_the_errno() {
    let mut hv = FakeHv::with_domains(&[0]);
    hv.refuse = Some(Errno::ENOSYS);
    let mut a = agent(hv);
    let m = error(
        ask(&mut a, Request::Info),
        ErrorCode::Hypervisor,
        "-ENOSYS (38)",
    );
    assert!(m.contains("physinfo") && m.contains("not implement"), "{m}");
    error(
        ask(&mut a, Request::List),
        ErrorCode::Hypervisor,
        "getdomaininfo: the hypervisor refused: -ENOSYS (38)",
    );
    error(
        ask(&mut a, Request::Dmesg),
        ErrorCode::Hypervisor,
        "readconsole",
    );
    error(
        ask(&mut a, Request::Pause(DomRef::Id(3))),
        ErrorCode::Hypervisor,
        "-ENOSYS",
    );
    // Names are the toolstack's own: an unknown one needs no hypercall.
    error(
        ask(&mut a, Request::Pause(DomRef::Name("nosuch".into()))),
        ErrorCode::UnknownDomain,
        "no such domain: nosuch",
    );
}

#[test]
fn list_walks_every_domain_with_state_and_names() {
    let mut hv = FakeHv::with_domains(&[0, 3, 7]);
    hv.domains.get_mut(&3).unwrap().flags = DOMINF_PAUSED | DOMINF_BLOCKED;
    hv.domains.get_mut(&7).unwrap().flags = DOMINF_SHUTDOWN | (3 << 16);
    let mut a = agent(hv);
    let list = match ask(&mut a, Request::List) {
        Response::Domains(d) => d,
        other => panic!("{other:?}"),
    };
    let summary: Vec<(u16, &str, DomState, Option<ShutdownReason>)> = list
        .iter()
        .map(|d| (d.id, d.name.as_str(), d.state, d.shutdown_reason))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "Domain-0", DomState::Blocked, None),
            (3, "(unnamed)", DomState::Paused, None),
            (
                7,
                "(unnamed)",
                DomState::Crashed,
                Some(ShutdownReason::Crash)
            ),
        ]
    );
    assert_eq!(list[0].memory_kib, 4096);
    assert_eq!(list[0].max_memory_kib, 8192);
    assert_eq!(list[1].cpu_time_ns, 3000);
    assert_eq!(list[0].uptime_ns, 10_000_000_000);
    let calls = &a.hv().calls;
    assert_eq!(
        calls,
        &[
            "getdomaininfo 0",
            "getdomaininfo 1",
            "getdomaininfo 4",
            "getdomaininfo 8"
        ],
        "each call asks for the first domain after the last one seen"
    );
}

#[test]
fn pause_unpause_shutdown_destroy() {
    let mut a = agent(FakeHv::with_domains(&[0, 2]));
    assert_eq!(ask(&mut a, Request::Pause(DomRef::Id(2))), Response::Ok);
    assert_ne!(a.hv().domains[&2].flags & DOMINF_PAUSED, 0);
    assert_eq!(ask(&mut a, Request::Unpause(DomRef::Id(2))), Response::Ok);
    error(
        ask(&mut a, Request::Unpause(DomRef::Id(2))),
        ErrorCode::Hypervisor,
        "unpause domain 2: the hypervisor refused: -EINVAL (22)",
    );
    assert_eq!(ask(&mut a, Request::Shutdown(DomRef::Id(2))), Response::Ok);
    assert!(a.hv().calls.contains(&"remote_shutdown 2 0".to_string()));
    assert_eq!(ask(&mut a, Request::Destroy(DomRef::Id(2))), Response::Ok);
    assert!(!a.hv().domains.contains_key(&2));
    error(
        ask(&mut a, Request::Destroy(DomRef::Id(2))),
        ErrorCode::UnknownDomain,
        "no domain has id 2",
    );
    error(
        ask(&mut a, Request::Pause(DomRef::Id(9))),
        ErrorCode::UnknownDomain,
        "no domain has id 9",
    );
}

#[test]
fn dom0_cannot_be_paused_or_destroyed() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    for req in [
        Request::Pause(DomRef::Id(0)),
        Request::Unpause(DomRef::Name("Domain-0".into())),
        Request::Destroy(DomRef::Name("Domain-0".into())),
        Request::Shutdown(DomRef::Id(0)),
    ] {
        error(ask(&mut a, req), ErrorCode::BadRequest, "shutdown-host");
    }
    assert!(
        !a.hv().calls.iter().any(|c| c.starts_with("pause")
            || c.starts_with("destroy")
            || c.starts_with("unpause")
            || c.starts_with("remote")),
        "{:?}",
        a.hv().calls
    );
}

#[test]
fn dmesg_returns_the_newest_bytes_of_the_ring() {
    let mut hv = FakeHv::with_domains(&[0]);
    hv.console = b"(XEN) boot complete\n".to_vec();
    let mut a = agent(hv);
    assert_eq!(
        ask(&mut a, Request::Dmesg),
        Response::Dmesg {
            text: b"(XEN) boot complete\n".to_vec()
        }
    );

    let mut hv = FakeHv::with_domains(&[0]);
    hv.console = (0..200_000u32)
        .map(|i| (i % 251).to_le_bytes()[0])
        .collect();
    hv.console_oldest = 30_000;
    let want = hv.console[hv.console.len() - MAX_DATA..].to_vec();
    let mut a = agent(hv);
    match ask(&mut a, Request::Dmesg) {
        Response::Dmesg { text } => assert!(text == want, "not the newest {MAX_DATA} bytes"),
        other => panic!("{other:?}"),
    }

    let mut hv = FakeHv::with_domains(&[0]);
    hv.console = vec![b'x'; 40_000];
    hv.ignore_incremental = true;
    let mut a = agent(hv);
    match ask(&mut a, Request::Dmesg) {
        Response::Dmesg { text } => assert!(text.len() <= 40_000, "read the same bytes twice"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn uploads_and_a_new_session() {
    let data: Vec<u8> = (0..150_000u32).map(|i| (i * 13).to_le_bytes()[0]).collect();
    let mut a = agent(FakeHv::with_domains(&[0]));
    let upload = upload_bytes(&mut a, &data);
    assert_eq!(a.uploads().get(upload).unwrap().bytes().unwrap(), &data[..]);
    // The kernel is checked before the (missing) build step.
    error(
        ask(&mut a, create("web", Kernel::Uploaded(upload))),
        ErrorCode::BadImage,
        "ELF",
    );
    ask(
        &mut a,
        Request::Hello {
            client_version: u32::from(PROTOCOL_VERSION),
        },
    );
    assert!(
        a.uploads().is_empty(),
        "Hello drops the last session's uploads"
    );
    error(
        ask(&mut a, Request::UploadEnd { upload }),
        ErrorCode::UploadState,
        "no upload",
    );
    let e = ask(
        &mut a,
        Request::UploadBegin {
            size: 64 << 20,
            crc32: 0,
        },
    );
    error(e, ErrorCode::OutOfMemory, "bytes free");
}

fn create(name: &str, kernel: Kernel) -> Request {
    Request::Create(CreateRequest {
        name: name.into(),
        kernel,
        memory_mib: 16,
        vcpus: 1,
        cmdline: String::new(),
        on_poweroff: ExitAction::Destroy,
        on_reboot: ExitAction::Restart,
        on_crash: ExitAction::Destroy,
        uuid: None,
        disks: Vec::new(),
        vifs: Vec::new(),
        ramdisk: None,
        cpus: Vec::new(),
        cpus_soft: Vec::new(),
    })
}

#[test]
fn create_checks_everything_the_builder_will_need() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    error(
        ask(&mut a, create("42", Kernel::Named("hello".into()))),
        ErrorCode::BadConfig,
        "name:",
    );
    error(
        ask(&mut a, create("Domain-0", Kernel::Named("hello".into()))),
        ErrorCode::NameInUse,
        "Domain-0",
    );
    error(
        ask(&mut a, create("web", Kernel::Named("nope".into()))),
        ErrorCode::UnknownImage,
        "no image named nope",
    );
    error(
        ask(&mut a, create("web", Kernel::Named("hello".into()))),
        ErrorCode::BadImage,
        "not a usable ELF",
    );
    error(
        ask(&mut a, create("web", Kernel::Uploaded(77))),
        ErrorCode::UploadState,
        "upload 77",
    );
}

#[test]
fn images_console_and_shutdown_host() {
    let mut a = agent(FakeHv::with_domains(&[0, 1]));
    match ask(&mut a, Request::Images) {
        Response::Images(list) => {
            let names: Vec<(&str, u64)> = list.iter().map(|i| (i.name.as_str(), i.size)).collect();
            assert_eq!(names[0], ("hello", 17));
            assert_eq!(names[2], ("demo", 4096));
        }
        other => panic!("{other:?}"),
    }
    error(
        ask(
            &mut a,
            Request::ConsoleRead {
                dom: DomRef::Name("nosuch".into()),
            },
        ),
        ErrorCode::UnknownDomain,
        "nosuch",
    );
    error(
        ask(&mut a, Request::ConsoleAttach { dom: DomRef::Id(1) }),
        ErrorCode::BadRequest,
        "no console dom0 serves",
    );
    assert_eq!(ask(&mut a, Request::ConsoleDetach), Response::Ok);
    assert_eq!(
        a.handle(Request::ShutdownHost),
        (Response::Ok, After::PowerOff)
    );
    let mut none = Agent::new(FakeHv::default(), VecStore::default(), None, "x");
    assert_eq!(none.handle(Request::Images).0, Response::Images(vec![]));
}

#[test]
fn volumes_through_the_agent() {
    use dom0_core::disks::MemDisks;
    let mut a = agent(FakeHv::with_domains(&[0]));
    // No disks yet: an empty list, and a create names the problem.
    assert_eq!(
        ask(&mut a, Request::VolumeList),
        Response::Volumes {
            volumes: vec![],
            disks: vec![]
        }
    );
    let create = |name: &str, size: u64, disk: Option<&str>| Request::VolumeCreate {
        name: name.into(),
        size,
        disk: disk.map(String::from),
        force: false,
    };
    error(
        ask(&mut a, create("v", 1 << 20, None)),
        ErrorCode::UnknownDisk,
        "dom0 drives no disk",
    );
    let mut disks = MemDisks::default();
    disks.add("data", 16 * 2048, false);
    a.set_disks(Box::new(disks));
    match ask(&mut a, create("v", 4 << 20, None)) {
        Response::Volumes { volumes, disks } => {
            assert_eq!(volumes.len(), 1);
            assert_eq!(
                (
                    volumes[0].disk.as_str(),
                    volumes[0].start,
                    volumes[0].sectors
                ),
                ("data", 2048, 8192)
            );
            assert_eq!(disks[0].table, control_proto::TableState::Volumes);
        }
        other => panic!("{other:?}"),
    }
    error(
        ask(&mut a, create("v", 1 << 20, None)),
        ErrorCode::VolumeExists,
        "exists already",
    );
    error(
        ask(&mut a, create("w", 1 << 20, Some("nope"))),
        ErrorCode::UnknownDisk,
        "nope",
    );
    error(
        ask(&mut a, create("w", 64 << 20, Some("data"))),
        ErrorCode::NoSpace,
        "largest free extent is 11M",
    );
    error(
        ask(&mut a, create("w", 100, None)),
        ErrorCode::BadConfig,
        "size: ",
    );
    a.volumes().set_in_use("v", 7, true).unwrap();
    let rm = Request::VolumeRm {
        name: "v".into(),
        disk: None,
    };
    error(ask(&mut a, rm.clone()), ErrorCode::VolumeInUse, "domain 7");
    a.volumes().clear_in_use(7);
    assert_eq!(ask(&mut a, rm.clone()), Response::Ok);
    error(
        ask(&mut a, rm),
        ErrorCode::UnknownVolume,
        "no volume named v",
    );
}

// ---------------------------------------------------------------------------
// The server: bytes in, frames out.
// ---------------------------------------------------------------------------

fn frames(reqs: &[(u32, Request)]) -> Vec<u8> {
    let mut wire = Vec::new();
    for (id, r) in reqs {
        r.write_frame(*id, &mut wire).unwrap();
    }
    wire
}

/// Every response frame in `out`, with its id.
fn responses(out: &[u8]) -> Vec<(u32, Response)> {
    let mut dec = FrameDecoder::new();
    let mut rest = out;
    let mut got = Vec::new();
    while !rest.is_empty() {
        let n = dec.push(rest);
        rest = &rest[n..];
        while let Some(f) = dec.next_frame() {
            let f = f.expect("the agent writes sound frames");
            match Message::from_frame(&f).expect("and valid messages") {
                Message::Response(r) => got.push((f.id, r)),
                other => panic!("not a response: {other:?}"),
            }
        }
    }
    assert_eq!(dec.buffered(), 0, "a partial frame at the end");
    got
}

#[test]
fn split_anywhere_and_after_garbage() {
    let mut wire = b"line noise XC\x01".to_vec();
    wire.extend(frames(&[
        (
            1,
            Request::Hello {
                client_version: u32::from(PROTOCOL_VERSION),
            },
        ),
        (2, Request::Images),
        (3, Request::Pause(DomRef::Name("nosuch".into()))),
    ]));
    for step in [1, 2, 3, 7, 64, wire.len()] {
        let mut a = agent(FakeHv::with_domains(&[0]));
        let mut s = Server::new();
        let mut out = Vec::new();
        for piece in wire.chunks(step) {
            assert_eq!(s.receive(piece, 0, &mut a, &mut out), After::Continue);
        }
        // The garbage's "XC" makes a damaged header whose bogus id gets an
        // error, which the client ignores (it never sent that id).
        let (ours, bogus): (Vec<_>, Vec<_>) = responses(&out)
            .into_iter()
            .partition(|(id, _)| (1..=3).contains(id));
        for (_, r) in &bogus {
            assert!(matches!(r, Response::Error(e) if e.code == ErrorCode::BadRequest));
        }
        let got = ours;
        let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [1, 2, 3], "step {step}");
        assert!(matches!(got[0].1, Response::HelloOk { .. }));
        assert!(matches!(got[2].1, Response::Error(ref e) if e.code == ErrorCode::UnknownDomain));
    }
}

#[test]
fn damaged_and_foreign_frames_are_answered_when_they_carry_an_id() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let mut s = Server::new();
    let mut out = Vec::new();
    let mut bad = frames(&[(5, Request::Info)]);
    let last = bad.len() - 1;
    bad[last] ^= 0xFF;
    s.receive(&bad, 0, &mut a, &mut out);
    let mut v2 = frames(&[(6, Request::Info)]);
    v2[2] = PROTOCOL_VERSION + 1;
    let len = v2.len();
    let crc = crc32(&v2[..len - 4]);
    v2[len - 4..].copy_from_slice(&crc.to_le_bytes());
    s.receive(&v2, 0, &mut a, &mut out);
    let mut anon = frames(&[(0, Request::Info)]);
    let last = anon.len() - 1;
    anon[last] ^= 1;
    s.receive(&anon, 0, &mut a, &mut out);
    // A response kind sent as a request.
    let mut wrong = Vec::new();
    Response::Ok.write_frame(7, &mut wrong).unwrap();
    s.receive(&wrong, 0, &mut a, &mut out);
    let got = responses(&out);
    let codes: Vec<(u32, ErrorCode)> = got
        .iter()
        .map(|(id, r)| match r {
            Response::Error(e) => (*id, e.code),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        codes,
        [
            (5, ErrorCode::BadRequest),
            (6, ErrorCode::UnsupportedVersion),
            (7, ErrorCode::BadRequest)
        ]
    );
    assert_eq!(s.stats().bad_frames, 4);
}

#[test]
fn a_stale_partial_frame_is_searched_past_once_the_link_is_quiet() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let mut s = Server::new();
    let mut out = Vec::new();
    // A dead session's header claiming 60000 bytes swallows the next request.
    let mut stale = frames(&[(
        9,
        Request::UploadChunk {
            upload: 1,
            offset: 0,
            data: vec![0; 60_000],
        },
    )]);
    stale.truncate(100);
    s.receive(&stale, 0, &mut a, &mut out);
    s.receive(&frames(&[(1, Request::Images)]), 1_000, &mut a, &mut out);
    assert!(out.is_empty(), "swallowed by the stale header");
    assert!(s.busy(QUIET_NS), "a partial frame keeps the link busy");
    assert_eq!(s.idle(QUIET_NS - 1, &mut a, &mut out), After::Continue);
    assert!(out.is_empty(), "not quiet for long enough yet");
    for t in 0..200 {
        s.idle(QUIET_NS + 1_000 + t, &mut a, &mut out);
    }
    let got = responses(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 1);
    assert!(matches!(got[0].1, Response::Images(_)));
    assert!(!s.busy(QUIET_NS + BUSY_NS + 1_000));
    assert!(s.stats().abandoned >= 1);
}

#[test]
fn power_off_stops_at_its_request() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let mut s = Server::new();
    let mut out = Vec::new();
    let wire = frames(&[(1, Request::ShutdownHost), (2, Request::Info)]);
    assert_eq!(s.receive(&wire, 0, &mut a, &mut out), After::PowerOff);
    assert_eq!(responses(&out), [(1, Response::Ok)]);
    assert!(s.busy(0));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever arrives, the server never panics and writes only sound
    /// response frames.
    #[test]
    fn any_bytes_give_only_sound_responses(
        junk in proptest::collection::vec(any::<u8>(), 0..3000),
        cut in 1usize..64,
        real in any::<bool>(),
    ) {
        let mut wire = junk;
        if real {
            wire.extend(frames(&[(3, Request::List), (4, Request::Dmesg)]));
        }
        let mut a = agent(FakeHv::with_domains(&[0, 1]));
        let mut s = Server::new();
        let mut out = Vec::new();
        for piece in wire.chunks(cut) {
            s.receive(piece, 0, &mut a, &mut out);
        }
        for t in 0..4000u64 {
            s.idle(QUIET_NS + t, &mut a, &mut out);
        }
        let got = responses(&out);
        if real {
            let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
            prop_assert!(ids.ends_with(&[3, 4]), "{:?}", ids);
        }
    }
}

// ---------------------------------------------------------------------------
// Building domains and serving their consoles.
// ---------------------------------------------------------------------------

fn created(resp: Response) -> DomId {
    match resp {
        Response::Created { domid } => DomId(domid),
        other => panic!("expected Created, got {other:?}"),
    }
}

fn console(resp: Response) -> Vec<u8> {
    match resp {
        Response::Console { data } => data,
        other => panic!("expected Console, got {other:?}"),
    }
}

#[test]
fn create_builds_serves_the_console_and_destroy_cleans_up() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let id = created(ask(&mut a, create("web", Kernel::Named("small".into()))));
    assert_eq!(id, DomId(1));
    assert_eq!(a.hv().domains[&1].tot_pages, 16 * 256);
    match ask(&mut a, Request::List) {
        Response::Domains(l) => assert_eq!(l[1].name, "web"),
        other => panic!("{other:?}"),
    }
    error(
        ask(&mut a, create("web", Kernel::Named("small".into()))),
        ErrorCode::NameInUse,
        "web",
    );

    // What the guest writes is in its log; dom0 tells it there is room again.
    a.hv().guest_writes(id, b"hello from web\n");
    let web = || DomRef::Name("web".into());
    assert_eq!(
        console(ask(&mut a, Request::ConsoleRead { dom: web() })),
        b"hello from web\n"
    );
    assert!(!a.hv().notified.is_empty());

    // Attached: the log so far, then new output as events from tick.
    assert_eq!(
        console(ask(&mut a, Request::ConsoleAttach { dom: web() })),
        b"hello from web\n"
    );
    a.hv().guest_writes(id, b"tick 1\n");
    let mut out = Vec::new();
    a.tick(20_000_000_000, &mut out);
    let mut dec = FrameDecoder::new();
    dec.push(&out);
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(
        Message::from_frame(&f).unwrap(),
        Message::Event(control_proto::Event::ConsoleOutput {
            domid: 1,
            data: b"tick 1\n".to_vec()
        })
    );
    // Input goes into the guest's ring.
    assert_eq!(
        ask(
            &mut a,
            Request::ConsoleInput {
                dom: web(),
                data: b"ls\n".to_vec()
            }
        ),
        Response::Ok
    );
    assert_eq!(a.hv().guest_reads(id), b"ls\n");
    assert_eq!(ask(&mut a, Request::ConsoleDetach), Response::Ok);

    // Destroy unmaps the console page first (the fake checks), then every frame
    // goes back.
    assert_eq!(ask(&mut a, Request::Destroy(web())), Response::Ok);
    assert!(a.hv().frames.is_empty());
    assert_eq!(a.hv().free, 100_000);
    assert!(a.hv().bound.is_empty(), "dom0's end of the channel closed");
    error(
        ask(&mut a, Request::ConsoleRead { dom: web() }),
        ErrorCode::UnknownDomain,
        "web",
    );
}

#[test]
fn create_failures_leave_nothing_behind() {
    let mut hv = FakeHv::with_domains(&[0]);
    hv.free = 100;
    let mut a = agent(hv);
    error(
        ask(&mut a, create("big", Kernel::Named("small".into()))),
        ErrorCode::OutOfMemory,
        "out of memory",
    );
    assert_eq!(a.hv().domains.len(), 1, "only dom0");
    assert_eq!(a.hv().free, 100);
    assert!(a.hv().frames.is_empty());
    match ask(&mut a, Request::List) {
        Response::Domains(l) => assert_eq!(l.len(), 1),
        other => panic!("{other:?}"),
    }
}

#[test]
fn stopped_domains_follow_on_crash_and_on_poweroff() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let crash = created(ask(&mut a, create("crashy", Kernel::Named("small".into()))));
    let Request::Create(keeper) = create("keeper", Kernel::Named("small".into())) else {
        unreachable!()
    };
    let keeper = CreateRequest {
        on_poweroff: ExitAction::Preserve,
        ..keeper
    };
    let keep = created(ask(&mut a, Request::Create(keeper)));
    a.hv().guest_writes(keep, b"bye\n");
    for (id, reason) in [(crash, 3u32), (keep, 0)] {
        let d = a.hv().domains.get_mut(&id.0).unwrap();
        d.flags |= DOMINF_SHUTDOWN | (reason << 16);
    }
    let mut out = Vec::new();
    a.tick(30_000_000_000, &mut out);
    assert!(!a.hv().domains.contains_key(&crash.0), "on_crash=destroy");
    assert!(a.hv().domains.contains_key(&keep.0), "on_poweroff=preserve");
    assert_eq!(
        console(ask(
            &mut a,
            Request::ConsoleRead {
                dom: DomRef::Name("keeper".into())
            }
        )),
        b"bye\n"
    );
    match ask(&mut a, Request::List) {
        Response::Domains(l) => {
            let names: Vec<&str> = l.iter().map(|d| d.name.as_str()).collect();
            assert_eq!(names, ["Domain-0", "keeper"]);
        }
        other => panic!("{other:?}"),
    }
}

/// `on_reboot` and `restart`: a reboot with `on_reboot = "destroy"` removes the
/// domain, with `preserve` keeps it dead; `on_poweroff = "restart"` builds a domain
/// that powered off again, under its name and UUID. The UUID is the domain's handle.
#[test]
fn on_reboot_and_restart_follow_the_config() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let with = |name: &str, f: &dyn Fn(&mut CreateRequest)| {
        let Request::Create(mut c) = create(name, Kernel::Named("small".into())) else {
            unreachable!()
        };
        f(&mut c);
        Request::Create(c)
    };
    let uuid = [0x42; 16];
    let gone = created(ask(
        &mut a,
        with("gone", &|c| c.on_reboot = ExitAction::Destroy),
    ));
    let kept = created(ask(
        &mut a,
        with("kept", &|c| c.on_reboot = ExitAction::Preserve),
    ));
    let again = created(ask(
        &mut a,
        with("again", &|c| {
            c.on_poweroff = ExitAction::Restart;
            c.uuid = Some(uuid);
        }),
    ));
    assert_eq!(
        a.hv().domains[&again.0].handle,
        uuid,
        "the handle is the UUID"
    );
    let reboot = hypercall_abi::sched::ShutdownReason::Reboot as u32;
    for (id, reason) in [(gone, reboot), (kept, reboot), (again, 0)] {
        let d = a.hv().domains.get_mut(&id.0).unwrap();
        d.flags |= DOMINF_SHUTDOWN | (reason << 16);
    }
    let mut out = Vec::new();
    a.tick(30_000_000_000, &mut out);
    assert!(a.hv().domains.contains_key(&kept.0), "on_reboot=preserve");
    assert!(
        !a.hv().domains.contains_key(&again.0),
        "the old one is gone"
    );
    // (The fake hypervisor hands out the lowest free id: `again` gets `gone`'s.)
    match ask(&mut a, Request::List) {
        Response::Domains(l) => {
            let mut names: Vec<&str> = l.iter().map(|d| d.name.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, ["Domain-0", "again", "kept"], "on_reboot=destroy");
            let new = l.iter().find(|d| d.name == "again").unwrap();
            assert_ne!(new.id, again.0, "built again under a new id");
            assert_eq!(a.hv().domains[&new.id].handle, uuid, "same UUID");
        }
        other => panic!("{other:?}"),
    }
}

/// The watch events in `out`.
fn xs_events(out: &[u8]) -> Vec<String> {
    let mut dec = FrameDecoder::new();
    dec.push(out);
    let mut got = Vec::new();
    while let Some(f) = dec.next_frame() {
        if let Message::Event(control_proto::Event::XsWatchEvent { path, .. }) =
            Message::from_frame(&f.unwrap()).unwrap()
        {
            got.push(path);
        }
    }
    got
}

fn xs_read(a: &mut TestAgent, path: &str) -> Result<String, ErrorCode> {
    match ask(a, Request::XsRead { path: path.into() }) {
        Response::XsValue { value } => Ok(String::from_utf8(value).unwrap()),
        Response::Error(e) => Err(e.code),
        other => panic!("{other:?}"),
    }
}

/// Create writes xl's nodes, maps and serves the store ring before unpausing;
/// the XenStore requests work as dom0; `AskShutdown` writes `control/shutdown`;
/// a reboot rebuilds the domain with its name and UUID; destroy removes it all.
#[test]
fn xenstore_nodes_requests_reboot_and_release() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    assert_eq!(xs_read(&mut a, "/local/domain/0/name").unwrap(), "Domain-0");
    let mut c = create("web", Kernel::Named("small".into()));
    if let Request::Create(cr) = &mut c {
        cr.uuid = Some(*b"0123456789abcdef");
    }
    let id = created(ask(&mut a, c));
    assert_eq!(xs_read(&mut a, "/local/domain/1/name").unwrap(), "web");
    assert_eq!(xs_read(&mut a, "/local/domain/1/domid").unwrap(), "1");
    let vm = xs_read(&mut a, "/local/domain/1/vm").unwrap();
    assert_eq!(vm, "/vm/30313233-3435-3637-3839-616263646566");
    assert_eq!(xs_read(&mut a, &format!("{vm}/name")).unwrap(), "web");
    assert!(a.xenstored().is_introduced(1));
    // Unpaused only after the store was set up (the last call of the create).
    let calls = a.hv().calls.clone();
    assert_eq!(
        calls.last().map(String::as_str),
        Some("unpause 1"),
        "{calls:?}"
    );
    // The store ring was served: xenstored advertised its features.
    let served = a.hv().rings.values().any(|(d, p)| {
        *d == id
            && p.iter()
                .any(|w| w.load(std::sync::atomic::Ordering::Relaxed) != 0)
    });
    assert!(served);

    // dom0's requests; limits refused; a watch streams events from tick.
    assert_eq!(
        ask(
            &mut a,
            Request::XsWatch {
                path: "/local/domain/1/data".into()
            }
        ),
        Response::Ok
    );
    assert_eq!(
        ask(
            &mut a,
            Request::XsWrite {
                path: "/local/domain/1/data/x".into(),
                value: b"1".to_vec()
            }
        ),
        Response::Ok
    );
    let mut out = Vec::new();
    a.tick(1, &mut out);
    assert_eq!(
        xs_events(&out),
        ["/local/domain/1/data", "/local/domain/1/data/x"]
    );
    assert_eq!(xs_read(&mut a, "/nope"), Err(ErrorCode::Xenstore));
    assert_eq!(
        xs_read(&mut a, &format!("/{}", "a".repeat(3072))),
        Err(ErrorCode::BadRequest)
    );
    match ask(
        &mut a,
        Request::XsList {
            path: "/local/domain/1/control".into(),
        },
    ) {
        Response::XsNodes { nodes, truncated } => {
            assert!(!truncated);
            assert_eq!(nodes[0].path, "/local/domain/1/control");
            assert_eq!(nodes[0].perms, "n0,r1");
            let sd = nodes
                .iter()
                .find(|n| n.path == "/local/domain/1/control/shutdown")
                .unwrap();
            assert_eq!(sd.perms, "n1");
        }
        other => panic!("{other:?}"),
    }

    // Cooperative reboot: the request is written; the domain's reboot rebuilds it.
    assert_eq!(
        ask(
            &mut a,
            Request::AskShutdown {
                dom: DomRef::Name("web".into()),
                reason: ShutdownReason::Reboot,
            }
        ),
        Response::Ok
    );
    assert_eq!(
        xs_read(&mut a, "/local/domain/1/control/shutdown").unwrap(),
        "reboot"
    );
    a.hv().domains.get_mut(&1).unwrap().flags |=
        DOMINF_SHUTDOWN | ((hypercall_abi::sched::ShutdownReason::Reboot as u32) << 16);
    let mut out = Vec::new();
    a.tick(10_000_000_000, &mut out);
    // Built again (the fake hands out the lowest free id, so it may be 1 again),
    // running, with a fresh tree: the request is gone, the UUID kept.
    let info = a.hv().domains[&1];
    assert_eq!(info.flags & DOMINF_SHUTDOWN, 0);
    assert_eq!(xs_read(&mut a, "/local/domain/1/name").unwrap(), "web");
    assert_eq!(
        xs_read(&mut a, "/local/domain/1/control/shutdown").unwrap(),
        ""
    );
    assert_eq!(xs_read(&mut a, "/local/domain/1/vm").unwrap(), vm);
    assert!(a.hv().calls.iter().filter(|c| *c == "destroy 1").count() == 1);

    // Destroy: the ring unmapped, the domain released, its nodes gone.
    assert_eq!(ask(&mut a, Request::Destroy(DomRef::Id(1))), Response::Ok);
    assert!(!a.xenstored().is_introduced(1));
    assert_eq!(
        xs_read(&mut a, "/local/domain/1/name"),
        Err(ErrorCode::Xenstore)
    );
    assert_eq!(xs_read(&mut a, &vm), Err(ErrorCode::Xenstore));
    assert!(a.hv().rings.is_empty());
}

/// Uploads `data` and returns the upload's id.
fn upload_bytes(a: &mut TestAgent, data: &[u8]) -> u32 {
    let (upload, chunk_max) = match ask(
        a,
        Request::UploadBegin {
            size: data.len() as u64,
            crc32: crc32(data),
        },
    ) {
        Response::UploadReady { upload, chunk_max } => (upload, chunk_max),
        other => panic!("{other:?}"),
    };
    let mut offset = 0u64;
    for piece in data.chunks(chunk_max as usize) {
        let r = ask(
            a,
            Request::UploadChunk {
                upload,
                offset,
                data: piece.to_vec(),
            },
        );
        offset += piece.len() as u64;
        assert_eq!(
            r,
            Response::UploadAck {
                upload,
                received: offset
            }
        );
    }
    assert_eq!(
        ask(a, Request::UploadEnd { upload }),
        Response::Uploaded { upload }
    );
    upload
}

/// A domain built from an uploaded kernel keeps it, so a reboot builds it again
/// (xl would read the kernel file again); two domains from the same bytes share
/// one copy; destroying them frees it.
#[test]
fn uploaded_kernels_are_kept_for_reboots_and_shared() {
    let small = pvboot::testimg::Spec::small().build();
    let mut a = agent(FakeHv::with_domains(&[0]));
    let u1 = upload_bytes(&mut a, &small);
    let id = created(ask(&mut a, create("up1", Kernel::Uploaded(u1))));
    assert!(a.uploads().is_empty(), "the upload left the session");
    assert_eq!(a.kept_kernels(), (1, 1));
    let u2 = upload_bytes(&mut a, &small);
    created(ask(&mut a, create("up2", Kernel::Uploaded(u2))));
    assert_eq!(a.kept_kernels(), (2, 1), "the same bytes are kept once");

    // up1 reboots: built again from the kept kernel, under its name.
    let builds = |a: &mut TestAgent| {
        a.hv()
            .calls
            .iter()
            .filter(|c| c.starts_with("create"))
            .count()
    };
    let before = builds(&mut a);
    a.hv().domains.get_mut(&id.0).unwrap().flags |=
        DOMINF_SHUTDOWN | ((hypercall_abi::sched::ShutdownReason::Reboot as u32) << 16);
    let mut out = Vec::new();
    a.tick(10_000_000_000, &mut out);
    assert_eq!(builds(&mut a), before + 1, "{:?}", a.hv().calls);
    match ask(&mut a, Request::List) {
        Response::Domains(list) => assert!(list.iter().any(|d| d.name == "up1"), "{list:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(a.kept_kernels(), (2, 1));

    assert_eq!(
        ask(&mut a, Request::Destroy(DomRef::Name("up1".into()))),
        Response::Ok
    );
    assert_eq!(
        ask(&mut a, Request::Destroy(DomRef::Name("up2".into()))),
        Response::Ok
    );
    assert_eq!(a.kept_kernels(), (0, 0));
}

/// `ramdisk = "PATH"`: the upload is placed in the domain's memory, leaves the
/// session, is kept for a reboot (built again with it) and freed at destroy; a
/// missing upload or one too large for the domain creates nothing.
#[test]
fn an_uploaded_ramdisk_is_placed_kept_for_reboots_and_freed() {
    let small = pvboot::testimg::Spec::small().build();
    let rd: Vec<u8> = (0..9000u32).map(|i| (i % 253) as u8 + 1).collect();
    let holds_ramdisk = |a: &mut TestAgent, id: DomId| {
        a.hv()
            .frames
            .values()
            .any(|(o, f)| *o == id && f[..] == rd[..4096])
    };
    let mut a = agent(FakeHv::with_domains(&[0]));
    let k = upload_bytes(&mut a, &small);
    let r = upload_bytes(&mut a, &rd);
    let with_rd = |name: &str, k: u32, r: Kernel| match create(name, Kernel::Uploaded(k)) {
        Request::Create(c) => Request::Create(CreateRequest {
            ramdisk: Some(r),
            ..c
        }),
        _ => unreachable!(),
    };
    error(
        ask(&mut a, with_rd("rd", k, Kernel::Uploaded(99))),
        ErrorCode::UploadState,
        "the ramdisk",
    );
    error(
        ask(&mut a, with_rd("rd", k, Kernel::Named("nope".into()))),
        ErrorCode::UnknownImage,
        "(the ramdisk)",
    );
    assert_eq!(a.hv().domains.len(), 1, "nothing created");
    let id = created(ask(&mut a, with_rd("rd", k, Kernel::Uploaded(r))));
    assert!(
        holds_ramdisk(&mut a, id),
        "the ramdisk is in the domain's memory"
    );
    assert!(a.uploads().is_empty(), "both uploads left the session");
    assert_eq!(a.kept_ramdisks(), 1);

    a.hv().domains.get_mut(&id.0).unwrap().flags |=
        DOMINF_SHUTDOWN | ((hypercall_abi::sched::ShutdownReason::Reboot as u32) << 16);
    let builds = |a: &mut TestAgent| {
        a.hv()
            .calls
            .iter()
            .filter(|c| c.starts_with("create"))
            .count()
    };
    let before = builds(&mut a);
    let mut out = Vec::new();
    a.tick(10_000_000_000, &mut out);
    assert_eq!(builds(&mut a), before + 1, "rebuilt");
    let again = match ask(&mut a, Request::List) {
        Response::Domains(list) => list.iter().find(|d| d.name == "rd").map(|d| DomId(d.id)),
        other => panic!("{other:?}"),
    }
    .expect("rebuilt");
    assert!(holds_ramdisk(&mut a, again), "rebuilt with the ramdisk");
    assert_eq!(a.kept_ramdisks(), 1);
    assert_eq!(
        ask(&mut a, Request::Destroy(DomRef::Name("rd".into()))),
        Response::Ok
    );
    assert_eq!(a.kept_ramdisks(), 0);

    // Too large for a 4 MiB domain: refused as a config error, nothing created.
    let big = vec![7u8; 5 << 20];
    let k = upload_bytes(&mut a, &small);
    let r = upload_bytes(&mut a, &big);
    let Request::Create(c) = with_rd("big", k, Kernel::Uploaded(r)) else {
        unreachable!()
    };
    error(
        ask(
            &mut a,
            Request::Create(CreateRequest { memory_mib: 4, ..c }),
        ),
        ErrorCode::BadConfig,
        "layout",
    );
    assert_eq!(a.hv().domains.len(), 1, "nothing created");
    assert_eq!(a.kept_ramdisks(), 0);
}

/// A store-only wake-up (dom0's fast path): a read is answered with the store
/// rings alone; a write is answered too but asks for the full pass (back ends
/// and the control link's watches must see it).
#[test]
fn a_store_event_answers_reads_alone_and_sends_writes_to_the_full_pass() {
    use hypercall_abi::io::xenstore::XenstoreFront;
    let mut a = agent(FakeHv::with_domains(&[0]));
    let id = created(ask(&mut a, create("web", Kernel::Named("small".into()))));
    // The store page is the domain's last mapped ring (after its console).
    let ring = *a
        .hv()
        .rings
        .iter()
        .filter(|(_, (d, _))| *d == id)
        .map(|(r, _)| r)
        .max()
        .unwrap();
    let ask_ring = |a: &mut TestAgent, ty: u32, payload: &[u8]| {
        let mut msg = Vec::new();
        for w in [ty, 7, 0, u32::try_from(payload.len()).unwrap()] {
            msg.extend_from_slice(&w.to_le_bytes());
        }
        msg.extend_from_slice(payload);
        {
            let page = &a.hv().rings[&ring].1;
            let mut front = XenstoreFront::new(page).unwrap();
            assert_eq!(front.requests.write(&msg).unwrap(), msg.len());
        }
        let quiet = a.serve_store_event();
        let page = &a.hv().rings[&ring].1;
        let mut front = XenstoreFront::new(page).unwrap();
        let mut buf = [0u8; 1024];
        let n = front.responses.read(&mut buf).unwrap();
        (quiet, buf[..n].to_vec())
    };
    let (quiet, reply) = ask_ring(&mut a, 2, b"/local/domain/1/name\0");
    assert!(quiet, "a read changes nothing");
    assert_eq!(&reply[..4], &2u32.to_le_bytes());
    assert_eq!(&reply[16..], b"web");
    let (quiet, reply) = ask_ring(&mut a, 11, b"/local/domain/1/data/x\0v");
    assert_eq!(&reply[..4], &11u32.to_le_bytes(), "{reply:?}");
    assert!(!quiet, "a write needs the full pass");
    assert_eq!(xs_read(&mut a, "/local/domain/1/data/x").unwrap(), "v");
}

#[test]
fn vifs_are_attached_at_create_and_go_at_destroy() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let mut c = create("web", Kernel::Named("small".into()));
    if let Request::Create(cr) = &mut c {
        cr.uuid = Some(*b"0123456789abcdef");
        cr.vifs = vec![
            control_proto::vif::VifSpec::parse("mac=00:16:3e:0a:0b:0c").unwrap(),
            control_proto::vif::VifSpec::parse("bridge=xenbr1").unwrap(),
        ];
    }
    let id = created(ask(&mut a, c));
    let be = format!("/local/domain/0/backend/vif/{}", id.0);
    let fe = format!("/local/domain/{}/device/vif", id.0);
    assert_eq!(
        xs_read(&mut a, &format!("{fe}/0/mac")).unwrap(),
        "00:16:3e:0a:0b:0c"
    );
    assert_eq!(
        xs_read(&mut a, &format!("{be}/0/bridge")).unwrap(),
        "xenbr0"
    );
    assert_eq!(
        xs_read(&mut a, &format!("{be}/1/bridge")).unwrap(),
        "xenbr1"
    );
    assert_eq!(xs_read(&mut a, &format!("{be}/1/state")).unwrap(), "2");
    // No MAC given: one in Xen's range, made from the UUID (the same on a rebuild).
    let mac = xs_read(&mut a, &format!("{fe}/1/mac")).unwrap();
    assert!(mac.starts_with("00:16:3e:"), "{mac}");
    let again = dom0_core::netback::Netback::make_mac(b"0123456789abcdef", 1);
    assert_eq!(mac, control_proto::vif::Mac(&again).to_string());
    assert_eq!(
        ask(&mut a, Request::Destroy(DomRef::Id(id.0))),
        Response::Ok
    );
    assert_eq!(
        xs_read(&mut a, &format!("{be}/0/state")),
        Err(ErrorCode::Xenstore)
    );
    // Two vifs with one MAC on a bridge: the create is refused, nothing is left.
    let mut c = create("two", Kernel::Named("small".into()));
    if let Request::Create(cr) = &mut c {
        cr.vifs = vec![
            control_proto::vif::VifSpec::parse("mac=00:16:3e:0a:0b:0c").unwrap(),
            control_proto::vif::VifSpec::parse("mac=00:16:3e:0a:0b:0c").unwrap(),
        ];
    }
    error(ask(&mut a, c), ErrorCode::BadConfig, "vif:");
}

#[test]
fn network_list_attach_and_detach() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let mut c = create("web", Kernel::Named("small".into()));
    if let Request::Create(cr) = &mut c {
        cr.vifs = vec![control_proto::vif::VifSpec::parse("mac=00:16:3e:00:00:05").unwrap()];
    }
    let id = created(ask(&mut a, c));
    let web = || DomRef::Name("web".into());
    let rows = |a: &mut _| match ask(a, Request::NetworkList(web())) {
        Response::Networks(r) => r,
        other => panic!("{other:?}"),
    };
    let r = rows(&mut a);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].devid, r[0].mac.as_str(), r[0].bridge.as_str()),
        (0, "00:16:3e:00:00:05", "xenbr0")
    );
    assert_eq!(
        (r[0].be_state, r[0].evtchn),
        (2, -1),
        "InitWait, not connected"
    );
    // Hot-plug: the next number, a made-up MAC.
    let spec = control_proto::vif::VifSpec::parse("bridge=xenbr1").unwrap();
    assert_eq!(
        ask(
            &mut a,
            Request::NetworkAttach {
                dom: web(),
                vif: spec
            }
        ),
        Response::Ok
    );
    let r = rows(&mut a);
    assert_eq!(r.len(), 2);
    assert_eq!((r[1].devid, r[1].bridge.as_str()), (1, "xenbr1"));
    assert!(r[1].mac.starts_with("00:16:3e:"), "{}", r[1].mac);
    // The same MAC twice on a bridge is refused.
    let dup = control_proto::vif::VifSpec::parse("mac=00:16:3e:00:00:05").unwrap();
    error(
        ask(
            &mut a,
            Request::NetworkAttach {
                dom: web(),
                vif: dup,
            },
        ),
        ErrorCode::BadConfig,
        "already used",
    );
    // Detach by MAC and by number (the front ends never connected: gone at once).
    assert_eq!(
        ask(
            &mut a,
            Request::NetworkDetach {
                dom: web(),
                vif: "00:16:3e:00:00:05".into()
            }
        ),
        Response::Ok
    );
    assert_eq!(
        ask(
            &mut a,
            Request::NetworkDetach {
                dom: web(),
                vif: "1".into()
            }
        ),
        Response::Ok
    );
    assert!(rows(&mut a).is_empty());
    assert_eq!(
        xs_read(&mut a, &format!("/local/domain/{}/device/vif/0/mac", id.0)),
        Err(ErrorCode::Xenstore)
    );
    error(
        ask(
            &mut a,
            Request::NetworkDetach {
                dom: web(),
                vif: "3".into(),
            },
        ),
        ErrorCode::BadRequest,
        "no vif 3",
    );
    error(
        ask(&mut a, Request::NetworkList(DomRef::Name("nope".into()))),
        ErrorCode::UnknownDomain,
        "nope",
    );
}

fn pinned(name: &str, vcpus: u32, cpus: &[&str]) -> Request {
    let Request::Create(c) = create(name, Kernel::Named("small".into())) else {
        unreachable!()
    };
    Request::Create(CreateRequest {
        vcpus,
        cpus: cpus.iter().map(|s| CpuMap::parse(s).unwrap()).collect(),
        ..c
    })
}

fn vcpu_rows(resp: Response) -> (u32, Vec<(u32, String, String)>) {
    match resp {
        Response::Vcpus { nr_cpus, vcpus, .. } => (
            nr_cpus,
            vcpus
                .into_iter()
                .map(|v| (v.vcpu, v.hard.to_string(), v.soft.to_string()))
                .collect(),
        ),
        other => panic!("expected Vcpus, got {other:?}"),
    }
}

#[test]
fn cpus_pin_each_vcpu_and_vcpu_list_reads_them_back() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let id = created(ask(&mut a, pinned("pinned", 3, &["1", "0-1"])));
    let calls: Vec<&String> = a
        .hv()
        .calls
        .iter()
        .filter(|c| c.starts_with("setvcpuaffinity"))
        .collect();
    assert_eq!(
        calls,
        [
            &format!("setvcpuaffinity {} 0 1", id.0),
            &format!("setvcpuaffinity {} 1 0-1", id.0)
        ]
    );
    let (nr_cpus, rows) = vcpu_rows(ask(
        &mut a,
        Request::VcpuList(DomRef::Name("pinned".into())),
    ));
    assert_eq!(nr_cpus, 2);
    let all = "0-63".to_string();
    assert_eq!(
        rows,
        [
            (0, "1".into(), all.clone()),
            (1, "0-1".into(), all.clone()),
            (2, all.clone(), all.clone()),
        ]
    );
    // Each row has its vCPU's state from getvcpuinfo.
    match ask(&mut a, Request::VcpuList(DomRef::Name("pinned".into()))) {
        Response::Vcpus { vcpus, .. } => {
            let s: Vec<(bool, bool, u32, u64)> = vcpus
                .iter()
                .map(|v| {
                    (
                        v.state.running,
                        v.state.blocked,
                        v.state.cpu,
                        v.state.time_ns,
                    )
                })
                .collect();
            assert_eq!(
                s,
                [
                    (true, false, 0, 0),
                    (false, true, 1, 1_000_000),
                    (false, true, 0, 2_000_000)
                ]
            );
        }
        other => panic!("expected Vcpus, got {other:?}"),
    }
    // dom0 too, and an unknown domain is the usual error.
    let (_, rows) = vcpu_rows(ask(&mut a, Request::VcpuList(DomRef::Id(0))));
    assert_eq!(rows.len(), 1);
    error(
        ask(&mut a, Request::VcpuList(DomRef::Name("nope".into()))),
        ErrorCode::UnknownDomain,
        "nope",
    );
    // A reboot builds it again with the same pinning.
    let reboot = hypercall_abi::sched::ShutdownReason::Reboot as u32;
    a.hv().domains.get_mut(&id.0).unwrap().flags |= DOMINF_SHUTDOWN | (reboot << 16);
    let mut out = Vec::new();
    a.tick(30_000_000_000, &mut out);
    let (_, rows) = vcpu_rows(ask(
        &mut a,
        Request::VcpuList(DomRef::Name("pinned".into())),
    ));
    assert_eq!(rows[0].1, "1", "kept across the restart");
}

#[test]
fn cpus_soft_sets_soft_maps_after_the_hard_ones_and_vcpu_list_reads_them_back() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let Request::Create(c) = pinned("soft", 3, &["0-1"]) else {
        unreachable!()
    };
    let soft: Vec<CpuMap> = ["1", "5"]
        .iter()
        .map(|s| CpuMap::parse(s).unwrap())
        .collect();
    let req = Request::Create(CreateRequest {
        cpus_soft: soft.clone(),
        ..c
    });
    let id = created(ask(&mut a, req.clone()));
    let calls: Vec<&String> = a
        .hv()
        .calls
        .iter()
        .filter(|c| c.starts_with("setvcpuaffinity"))
        .collect();
    assert_eq!(
        calls,
        [
            &format!("setvcpuaffinity {} 0 0-1", id.0),
            &format!("setvcpuaffinity soft {} 0 1", id.0),
            &format!("setvcpuaffinity soft {} 1 5", id.0),
        ],
        "the hard map first; a soft map with no CPU of the machine is still set"
    );
    let (_, rows) = vcpu_rows(ask(&mut a, Request::VcpuList(DomRef::Name("soft".into()))));
    let all = "0-63".to_string();
    assert_eq!(
        rows,
        [
            (0, "0-1".into(), "1".into()),
            (1, all.clone(), "5".into()),
            (2, all.clone(), all.clone()),
        ]
    );
    // A reboot builds it again with the same preferences.
    let reboot = hypercall_abi::sched::ShutdownReason::Reboot as u32;
    a.hv().domains.get_mut(&id.0).unwrap().flags |= DOMINF_SHUTDOWN | (reboot << 16);
    let mut out = Vec::new();
    a.tick(30_000_000_000, &mut out);
    let (_, rows) = vcpu_rows(ask(&mut a, Request::VcpuList(DomRef::Name("soft".into()))));
    assert_eq!(rows[0].2, "1", "kept across the restart");

    // Malformed soft maps never reach the hypervisor and are named by their key.
    let before = a.hv().calls.len();
    let Request::Create(c) = pinned("many", 1, &[]) else {
        unreachable!()
    };
    error(
        ask(
            &mut a,
            Request::Create(CreateRequest {
                cpus_soft: soft.clone(),
                ..c.clone()
            }),
        ),
        ErrorCode::BadConfig,
        "cpus_soft: 2 affinity maps for 1 vCPUs",
    );
    error(
        ask(
            &mut a,
            Request::Create(CreateRequest {
                cpus_soft: vec![CpuMap::NONE],
                ..c.clone()
            }),
        ),
        ErrorCode::BadConfig,
        "cpus_soft: vCPU 0's map holds no CPU",
    );
    assert!(
        !a.hv().calls[before..]
            .iter()
            .any(|c| c.starts_with("createdomain")),
        "{:?}",
        &a.hv().calls[before..]
    );

    // A hypervisor that refuses a soft map: the hypercall's error, nothing left behind.
    a.hv().refuse_soft = Some(Errno::EPERM);
    let msg = error(
        ask(
            &mut a,
            Request::Create(CreateRequest {
                name: "refused".into(),
                cpus_soft: soft[..1].to_vec(),
                ..c
            }),
        ),
        ErrorCode::Hypervisor,
        "building refused: setting vCPU 0's soft affinity: the hypervisor refused: -EPERM",
    );
    assert!(msg.contains("dom0 lacks the privilege"), "{msg}");
    assert!(
        a.hv().calls.last().unwrap().starts_with("destroy "),
        "{:?}",
        a.hv().calls
    );
    match ask(&mut a, Request::List) {
        Response::Domains(l) => assert_eq!(l.len(), 2, "dom0 and `soft`"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn cpus_the_machine_lacks_fail_the_create_and_leave_nothing_behind() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let msg = error(
        ask(&mut a, pinned("far", 2, &["0", "5"])),
        ErrorCode::BadConfig,
        "cpus: vCPU 1's CPUs (5) include none that runs guests (this machine has 2: 0-1)",
    );
    assert!(msg.starts_with("building far: "), "{msg}");
    assert_eq!(a.hv().domains.len(), 1, "only dom0");
    assert!(a.hv().frames.is_empty());
    assert_eq!(a.hv().free, 100_000);
    assert!(a.hv().hard.is_empty());
    assert!(a.hv().bound.is_empty() && a.hv().rings.is_empty());
    match ask(&mut a, Request::List) {
        Response::Domains(l) => assert_eq!(l.len(), 1),
        other => panic!("{other:?}"),
    }
    // The name is free again and the same config without the bad map builds.
    created(ask(&mut a, pinned("far", 2, &["0"])));
    // Malformed maps never reach the hypervisor: more maps than vCPUs, an empty map.
    let before = a.hv().calls.len();
    error(
        ask(&mut a, pinned("many", 1, &["0", "1"])),
        ErrorCode::BadConfig,
        "cpus: 2 affinity maps for 1 vCPUs",
    );
    let Request::Create(mut c) = pinned("empty", 2, &["0"]) else {
        unreachable!()
    };
    c.cpus.push(CpuMap::NONE);
    error(
        ask(&mut a, Request::Create(c)),
        ErrorCode::BadConfig,
        "cpus: vCPU 1's map holds no CPU",
    );
    assert!(
        !a.hv().calls[before..]
            .iter()
            .any(|c| c.starts_with("createdomain")),
        "{:?}",
        &a.hv().calls[before..]
    );
}

fn pin(dom: &str, vcpu: Option<u32>, hard: Option<&str>, soft: Option<&str>) -> Request {
    let map = |s: Option<&str>| s.map(|s| CpuMap::parse(s).unwrap());
    Request::VcpuPin {
        dom: DomRef::parse(dom),
        vcpu,
        hard: map(hard),
        soft: map(soft),
    }
}

/// The `setvcpuaffinity` calls since call number `from`.
fn set_calls(a: &mut TestAgent, from: usize) -> Vec<String> {
    a.hv().calls[from..]
        .iter()
        .filter(|c| c.starts_with("setvcpuaffinity"))
        .cloned()
        .collect()
}

#[test]
fn vcpu_pin_sets_one_vcpu_or_all_and_leaves_the_other_map_alone() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let id = created(ask(&mut a, pinned("pin", 3, &["0-1", "0"])));
    let all = "0-63".to_string();
    let rows = |a: &mut TestAgent| vcpu_rows(ask(a, Request::VcpuList(DomRef::parse("pin")))).1;

    // One vCPU's hard map; its soft map and the other vCPUs stay as they were.
    let before = a.hv().calls.len();
    assert_eq!(
        ask(&mut a, pin("pin", Some(0), Some("1"), None)),
        Response::Ok
    );
    assert_eq!(
        set_calls(&mut a, before),
        [format!("setvcpuaffinity {} 0 1", id.0)]
    );
    assert_eq!(
        rows(&mut a),
        [
            (0, "1".into(), all.clone()),
            (1, "0".into(), all.clone()),
            (2, all.clone(), all.clone()),
        ]
    );

    // `all` with the hard map left alone (`-`): every vCPU's soft map, by id.
    let before = a.hv().calls.len();
    let req = pin(&id.0.to_string(), None, None, Some("0"));
    assert_eq!(ask(&mut a, req), Response::Ok);
    assert_eq!(
        set_calls(&mut a, before),
        (0..3)
            .map(|v| format!("setvcpuaffinity soft {} {v} 0", id.0))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        rows(&mut a),
        [
            (0, "1".into(), "0".into()),
            (1, "0".into(), "0".into()),
            (2, all.clone(), "0".into()),
        ]
    );

    // Both maps: the hard one first, vCPU by vCPU, as the builder sets them.
    let before = a.hv().calls.len();
    assert_eq!(
        ask(&mut a, pin("pin", None, Some("0-1"), Some("1"))),
        Response::Ok
    );
    let want: Vec<String> = (0..3)
        .flat_map(|v| {
            [
                format!("setvcpuaffinity {} {v} 0-1", id.0),
                format!("setvcpuaffinity soft {} {v} 1", id.0),
            ]
        })
        .collect();
    assert_eq!(set_calls(&mut a, before), want);
    assert!(
        rows(&mut a)
            .iter()
            .all(|r| (r.1.as_str(), r.2.as_str()) == ("0-1", "1"))
    );

    // dom0 may be pinned, as in xl: pinning does not stop it.
    assert_eq!(
        ask(&mut a, pin("0", Some(0), Some("1"), None)),
        Response::Ok
    );
    let (_, dom0) = vcpu_rows(ask(&mut a, Request::VcpuList(DomRef::Id(0))));
    assert_eq!(dom0, [(0, "1".into(), all.clone())]);

    // As in xl, the config is not changed: a reboot builds the domain with its
    // own `cpus =` maps.
    let reboot = hypercall_abi::sched::ShutdownReason::Reboot as u32;
    a.hv().domains.get_mut(&id.0).unwrap().flags |= DOMINF_SHUTDOWN | (reboot << 16);
    let mut out = Vec::new();
    a.tick(30_000_000_000, &mut out);
    assert_eq!(
        rows(&mut a),
        [
            (0, "0-1".into(), all.clone()),
            (1, "0".into(), all.clone()),
            (2, all.clone(), all.clone()),
        ]
    );
}

#[test]
fn vcpu_pin_refusals_change_nothing() {
    let mut a = agent(FakeHv::with_domains(&[0]));
    let id = created(ask(&mut a, pinned("pin", 3, &["0", "1"])));
    let rows = |a: &mut TestAgent| vcpu_rows(ask(a, Request::VcpuList(DomRef::parse("pin")))).1;
    let start = rows(&mut a);
    let before = a.hv().calls.len();

    // Checked before the hypervisor is asked to change anything.
    error(
        ask(&mut a, pin("pin", Some(5), Some("1"), None)),
        ErrorCode::BadRequest,
        "domain pin has no vCPU 5: it has 3 vCPUs (0 to 2)",
    );
    error(
        ask(&mut a, pin("pin", Some(0), None, None)),
        ErrorCode::BadRequest,
        "nothing to change",
    );
    let empty = Request::VcpuPin {
        dom: DomRef::parse("pin"),
        vcpu: Some(0),
        hard: None,
        soft: Some(CpuMap::NONE),
    };
    error(
        ask(&mut a, empty),
        ErrorCode::BadRequest,
        "the soft map holds no CPU",
    );
    error(
        ask(&mut a, pin("nope", Some(0), Some("1"), None)),
        ErrorCode::UnknownDomain,
        "nope",
    );
    let msg = error(
        ask(&mut a, pin("0", Some(1), Some("1"), None)),
        ErrorCode::BadRequest,
        "has no vCPU 1: it has 1 vCPU (vCPU 0)",
    );
    assert!(msg.starts_with("domain 0 "), "{msg}");
    assert!(set_calls(&mut a, before).is_empty());

    // A hard map without a CPU of the machine: the hypervisor's -EINVAL, said as
    // the builder says it; with `all`, vCPU 0 is refused and nothing changed.
    for vcpu in [Some(1), None] {
        let msg = error(
            ask(&mut a, pin("pin", vcpu, Some("7"), Some("0"))),
            ErrorCode::BadRequest,
            "CPUs (7) include none that runs guests (this machine has 2: 0-1); \
             XEN_DOMCTL_setvcpuaffinity refused the map: -EINVAL (22); nothing was changed",
        );
        let v = vcpu.unwrap_or(0);
        assert!(msg.starts_with(&format!("vCPU {v}'s CPUs (7)")), "{msg}");
        assert_eq!(rows(&mut a), start);
    }
    assert!(
        !set_calls(&mut a, before).iter().any(|c| c.contains("soft")),
        "the soft map is not set once the hard one is refused"
    );

    // A refusal at vCPU 2: vCPUs 0 and 1 get their old maps back.
    a.hv().refuse_vcpu = Some(2);
    let before = a.hv().calls.len();
    let msg = error(
        ask(&mut a, pin("pin", None, Some("1"), Some("1"))),
        ErrorCode::Hypervisor,
        "setting vCPU 2's hard affinity of pin to CPUs 1: the hypervisor refused: -EPERM",
    );
    assert!(
        msg.ends_with("; vCPUs 0, 1 got the old maps back, so nothing was changed"),
        "{msg}"
    );
    let d = id.0;
    assert_eq!(
        set_calls(&mut a, before),
        [
            format!("setvcpuaffinity {d} 0 1"),
            format!("setvcpuaffinity soft {d} 0 1"),
            format!("setvcpuaffinity {d} 1 1"),
            format!("setvcpuaffinity soft {d} 1 1"),
            format!("setvcpuaffinity {d} 2 1"),
            // Undone newest first, each map to what it was.
            format!("setvcpuaffinity soft {d} 1 0-63"),
            format!("setvcpuaffinity {d} 1 1"),
            format!("setvcpuaffinity soft {d} 0 0-63"),
            format!("setvcpuaffinity {d} 0 0"),
        ]
    );
    assert_eq!(rows(&mut a), start);
    a.hv().refuse_vcpu = None;

    // When putting them back fails too, the message says which keep the new maps.
    a.hv().sets_left = Some(2);
    let msg = error(
        ask(&mut a, pin("pin", None, Some("0-1"), None)),
        ErrorCode::Hypervisor,
        "setting vCPU 2's hard affinity of pin to CPUs 0-1: the hypervisor refused: -ESRCH",
    );
    assert!(
        msg.ends_with(
            "; putting the old maps back failed too (-ESRCH (3)): vCPUs 0, 1 keep the new \
             ones (see `dom0ctl vcpu-list`)"
        ),
        "{msg}"
    );
}

/// A bzImage (XZ or gzip payload) uploaded as the kernel is unpacked in dom0 and
/// built like its ELF; the upload kept for reboots is the bzImage, unpacked again
/// on a reboot. A corrupt or unsupported one is refused with the reason, and
/// nothing is created.
#[test]
fn an_uploaded_bzimage_is_unpacked_and_built() {
    use pvboot::testimg::{Spec, bzimage, small_bzimage, small_gz};
    let elf_len = u32::try_from(Spec::small().build().len()).unwrap();
    let mut a = agent(FakeHv::with_domains(&[0]));
    let bz = small_bzimage();
    let u = upload_bytes(&mut a, &bz);
    let id = created(ask(&mut a, create("bz", Kernel::Uploaded(u))));
    assert_eq!(a.kept_kernels(), (1, 1));
    let builds = |a: &mut TestAgent| {
        a.hv()
            .calls
            .iter()
            .filter(|c| c.starts_with("create"))
            .count()
    };
    let before = builds(&mut a);
    a.hv().domains.get_mut(&id.0).unwrap().flags |=
        DOMINF_SHUTDOWN | ((hypercall_abi::sched::ShutdownReason::Reboot as u32) << 16);
    let mut out = Vec::new();
    a.tick(10_000_000_000, &mut out);
    assert_eq!(builds(&mut a), before + 1, "{:?}", a.hv().calls);

    let u = upload_bytes(&mut a, &bzimage(&small_gz(), elf_len));
    created(ask(&mut a, create("gz", Kernel::Uploaded(u))));

    let refused = |a: &mut TestAgent, img: &[u8], name: &str| {
        let u = upload_bytes(a, img);
        match ask(a, create(name, Kernel::Uploaded(u))) {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::BadImage, "{e:?}");
                e.message
            }
            other => panic!("expected an error, got {other:?}"),
        }
    };
    let mut corrupt = bz.clone();
    let mid = 1024 + 0x40 + 200;
    corrupt[mid] ^= 0x5A;
    let m = refused(&mut a, &corrupt, "bad");
    assert!(m.contains("bzImage"), "{m}");
    let m = refused(
        &mut a,
        &bzimage(&[0x28, 0xB5, 0x2F, 0xFD, 0, 0, 0, 0, 0, 0], 4096),
        "zstd",
    );
    assert!(m.contains("zstd"), "{m}");
    let m = refused(&mut a, &bzimage(&small_gz(), u32::MAX), "huge");
    assert!(m.contains("limit"), "{m}");
    match ask(&mut a, Request::List) {
        Response::Domains(list) => {
            assert!(
                !list
                    .iter()
                    .any(|d| ["bad", "zstd", "huge"].contains(&d.name.as_str()))
            )
        }
        other => panic!("{other:?}"),
    }
}
