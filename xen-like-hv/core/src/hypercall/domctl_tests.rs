//! `domctl` and `sysctl` as dom0 drives them (docs/domains.md, "Domain control").

use super::domctl::DOMID_FIRST_RESERVED;
use crate::domain::{DomainState, ShutdownReason};
use crate::testutil::*;
use hypercall_abi::Errno;
use hypercall_abi::domctl::*;
use hypercall_abi::hypercall as hc;
use hypercall_abi::types::DomId;

/// Runs one domctl of `cmd` on `dom` with `arg`; the result and the structure after.
fn domctl<T: zerocopy::IntoBytes + zerocopy::Immutable>(
    w: &mut World,
    cmd: DomctlCmd,
    dom: u16,
    arg: &T,
) -> (Result<u64, Errno>, Domctl) {
    w.p.poke_obj(KDATA, &Domctl::new(cmd, DomId(dom), arg));
    let r = hc::domctl(w, ptr(KDATA));
    (r, w.p.peek_obj(KDATA))
}

fn create(w: &mut World, dom: u16, c: DomctlCreateDomain) -> Result<u16, Errno> {
    let (r, out) = domctl(w, DomctlCmd::CreateDomain, dom, &c);
    r.map(|_| out.domain.0)
}

fn pv(max_vcpus: u32) -> DomctlCreateDomain {
    DomctlCreateDomain {
        max_vcpus,
        max_evtchn_port: 1023,
        handle: [7; 16],
        ..Default::default()
    }
}

fn info(w: &mut World, at: u16) -> Result<DomctlGetDomainInfo, Errno> {
    let (r, out) = domctl(w, DomctlCmd::GetDomainInfo, at, &());
    r.map(|_| {
        let i: DomctlGetDomainInfo = out.arg();
        assert_eq!(out.domain, i.domain, "the id is echoed in the header");
        i
    })
}

#[test]
fn only_the_control_domain_with_the_right_version_may_call() {
    let mut w = World::dom0();
    let mut op = Domctl::new(DomctlCmd::GetDomainInfo, DomId(0), &());
    op.interface_version = 0x14;
    w.p.poke_obj(KDATA, &op);
    assert_eq!(hc::domctl(&mut w, ptr(KDATA)), E(Errno::EACCES));
    op.interface_version = DOMCTL_INTERFACE_VERSION;
    op.cmd = 999;
    w.p.poke_obj(KDATA, &op);
    assert_eq!(hc::domctl(&mut w, ptr(KDATA)), E(Errno::ENOSYS));
    assert_eq!(hc::domctl(&mut w, ptr(UNMAPPED)), E(Errno::EFAULT));

    let mut u = World::kernel();
    assert_eq!(
        domctl(&mut u, DomctlCmd::GetDomainInfo, 0, &()).0,
        E(Errno::EPERM)
    );
    u.p.poke_obj(KDATA, &Sysctl::new(SysctlCmd::Physinfo, &()));
    assert_eq!(hc::sysctl(&mut u, ptr(KDATA)), E(Errno::EPERM));
}

#[test]
fn createdomain_makes_a_paused_pv_domain_with_the_next_id_or_the_one_asked() {
    let mut w = World::dom0();
    assert_eq!(create(&mut w, 0, pv(1)), Ok(1));
    assert_eq!(create(&mut w, 0, pv(1)), Ok(2));
    assert_eq!(create(&mut w, 7, pv(1)), Ok(7));
    assert_eq!(create(&mut w, 7, pv(1)), Err(Errno::EEXIST));
    let d = &w.p.others[&1];
    assert_eq!(d.pause_count, 1, "paused by the controller");
    assert!(d.toolstack);
    assert_eq!(d.handle, [7; 16]);
    // PV only, one vCPU, no reserved ids, no unknown flags.
    let hvm = DomctlCreateDomain {
        flags: CDF_HVM | CDF_HAP,
        ..pv(1)
    };
    assert_eq!(create(&mut w, 0, hvm), Err(Errno::EINVAL));
    let junk = DomctlCreateDomain {
        flags: 1 << 20,
        ..pv(1)
    };
    assert_eq!(create(&mut w, 0, junk), Err(Errno::EINVAL));
    assert_eq!(create(&mut w, 0, pv(0)), Err(Errno::EINVAL));
    assert_eq!(create(&mut w, 0, pv(2)), Err(Errno::EINVAL));
    assert_eq!(
        create(&mut w, DOMID_FIRST_RESERVED, pv(1)),
        Err(Errno::EINVAL)
    );
    assert_eq!(w.p.others.len(), 3);
}

#[test]
fn getdomaininfo_walks_the_domains_in_id_order() {
    let mut w = World::dom0();
    w.dom.tot_pages = 100;
    w.dom.max_pages = 200;
    for id in [1, 5] {
        assert_eq!(create(&mut w, id, pv(1)), Ok(id));
    }
    let me = info(&mut w, 0).unwrap();
    assert_eq!(me.domain, DomId(0));
    assert_ne!(me.flags & DOMINF_RUNNING, 0, "the caller is on the CPU");
    assert_eq!((me.tot_pages, me.max_pages), (100, 200));
    assert_eq!(me.nr_online_vcpus, 1);
    assert_eq!(me.max_vcpu_id, 0);
    let one = info(&mut w, 1).unwrap();
    assert_eq!(one.domain, DomId(1));
    assert_eq!(one.flags & (DOMINF_PAUSED | DOMINF_RUNNING), DOMINF_PAUSED);
    assert_eq!(one.handle, [7; 16]);
    assert_eq!(
        info(&mut w, 2).unwrap().domain,
        DomId(5),
        "the next id that exists"
    );
    assert_eq!(info(&mut w, 6), Err(Errno::ESRCH));

    // A shut-down domain reports the reason in bits 16..24.
    if let Some(d) = w.p.others.get_mut(&5) {
        d.state = DomainState::Shutdown(ShutdownReason::Crash);
    }
    let five = info(&mut w, 5).unwrap();
    assert_ne!(five.flags & DOMINF_SHUTDOWN, 0);
    assert_eq!(
        (five.flags >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK,
        ShutdownReason::Crash as u32
    );
}

#[test]
fn pause_unpause_and_destroy_follow_xens_rules() {
    let mut w = World::dom0();
    assert_eq!(create(&mut w, 0, pv(1)), Ok(1));
    let go = |w: &mut World, cmd, dom| domctl(w, cmd, dom, &()).0;
    assert_eq!(
        go(&mut w, DomctlCmd::PauseDomain, 0),
        E(Errno::EINVAL),
        "not itself"
    );
    assert_eq!(go(&mut w, DomctlCmd::DestroyDomain, 0), E(Errno::EINVAL));
    assert_eq!(go(&mut w, DomctlCmd::UnpauseDomain, 0), E(Errno::EINVAL));
    assert_eq!(go(&mut w, DomctlCmd::PauseDomain, 9), E(Errno::ESRCH));
    assert_eq!(
        go(&mut w, DomctlCmd::UnpauseDomain, 1),
        Ok(0),
        "created paused"
    );
    assert_eq!(
        go(&mut w, DomctlCmd::UnpauseDomain, 1),
        E(Errno::EINVAL),
        "not paused"
    );
    assert_eq!(go(&mut w, DomctlCmd::PauseDomain, 1), Ok(0));
    assert_eq!(go(&mut w, DomctlCmd::PauseDomain, 1), Ok(0));
    assert_eq!(w.p.others[&1].pause_count, 2, "pauses are counted");
    assert_eq!(go(&mut w, DomctlCmd::DestroyDomain, 1), Ok(0));
    assert_eq!(w.p.destroyed, vec![DomId(1)]);
    assert_eq!(go(&mut w, DomctlCmd::DestroyDomain, 1), E(Errno::ESRCH));
}

#[test]
fn max_mem_and_max_vcpus() {
    let mut w = World::dom0();
    assert_eq!(create(&mut w, 0, pv(1)), Ok(1));
    let mm = |w: &mut World, dom, kb| {
        domctl(w, DomctlCmd::MaxMem, dom, &DomctlMaxMem { max_memkb: kb }).0
    };
    assert_eq!(mm(&mut w, 1, 16 * 1024), Ok(0));
    assert_eq!(w.p.others[&1].max_pages, 4096);
    assert_eq!(mm(&mut w, 0, 1 << 50), Ok(0));
    assert_eq!(w.dom.max_pages, u64::from(u32::MAX), "capped");
    assert_eq!(mm(&mut w, 3, 4), E(Errno::ESRCH));
    let mv =
        |w: &mut World, dom, max| domctl(w, DomctlCmd::MaxVcpus, dom, &DomctlMaxVcpus { max }).0;
    assert_eq!(mv(&mut w, 1, 1), Ok(0));
    assert_eq!(mv(&mut w, 1, 2), E(Errno::EINVAL));
    assert_eq!(mv(&mut w, 4, 1), E(Errno::ESRCH));
}

#[test]
fn sysctl_physinfo_and_readconsole() {
    let mut w = World::dom0();
    w.p.poke_obj(KDATA, &Sysctl::new(SysctlCmd::Physinfo, &()));
    assert_eq!(hc::sysctl(&mut w, ptr(KDATA)), Ok(0));
    let p: SysctlPhysinfo = w.p.peek_obj::<Sysctl>(KDATA).arg();
    assert_eq!((p.nr_cpus, p.free_pages, p.total_pages), (1, 1000, 4096));
    assert_ne!(p.capabilities & PHYSCAP_PV, 0);

    w.p.console_ring = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let buf = KDATA + 0x1000;
    let read = |w: &mut World, incremental, index, count, clear| {
        let r = SysctlReadConsole {
            clear,
            incremental,
            index,
            buffer: buf,
            count,
            ..Default::default()
        };
        w.p.poke_obj(KDATA, &Sysctl::new(SysctlCmd::ReadConsole, &r));
        assert_eq!(hc::sysctl(w, ptr(KDATA)), Ok(0));
        w.p.peek_obj::<Sysctl>(KDATA).arg::<SysctlReadConsole>()
    };
    let r = read(&mut w, 0, 0, 1500, 0);
    assert_eq!((r.count, r.index), (1500, 1500), "in 512-byte chunks");
    assert_eq!(w.p.peek(buf, 1500), w.p.console_ring[..1500].to_vec());
    let r = read(&mut w, 1, 1500, 1500, 0);
    assert_eq!((r.count, r.index), (500, 2000), "the rest");
    assert_eq!(w.p.peek(buf, 500), w.p.console_ring[1500..].to_vec());
    let r = read(&mut w, 1, 2000, 100, 1);
    assert_eq!(r.count, 0);
    assert!(w.p.console_ring.is_empty(), "cleared");
}
