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
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: hypercall_abi::domctl::grant_version(2),
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
    // PV only, 1 to 32 vCPUs, no reserved ids, no unknown flags.
    let hvm = DomctlCreateDomain {
        flags: CDF_HVM | CDF_HAP,
        ..pv(1)
    };
    assert_eq!(
        create(&mut w, 0, hvm),
        Err(Errno::EOPNOTSUPP),
        "as Xen without VT-x"
    );
    let hap = DomctlCreateDomain {
        flags: CDF_HAP,
        ..pv(1)
    };
    assert_eq!(
        create(&mut w, 0, hap),
        Err(Errno::EINVAL),
        "HAP without HVM"
    );
    let junk = DomctlCreateDomain {
        flags: 1 << 20,
        ..pv(1)
    };
    assert_eq!(create(&mut w, 0, junk), Err(Errno::EINVAL));
    assert_eq!(create(&mut w, 0, pv(0)), Err(Errno::EINVAL));
    assert_eq!(create(&mut w, 0, pv(33)), Err(Errno::EINVAL));
    assert_eq!(
        create(&mut w, DOMID_FIRST_RESERVED, pv(1)),
        Err(Errno::EINVAL)
    );
    // The grant-table version in grant_opts: 1 or 2; 0, 3, 0xf and unknown
    // bits are -EINVAL, as on Xen 4.17 (0xf too, checked on real Xen).
    for bad in [0, 3, 0xf, 0x10 | 2] {
        let c = DomctlCreateDomain {
            grant_opts: bad,
            ..pv(1)
        };
        assert_eq!(
            create(&mut w, 0, c),
            Err(Errno::EINVAL),
            "grant_opts {bad:#x}"
        );
    }
    assert_eq!(w.p.others.len(), 3);
    for good in [1, 2] {
        let c = DomctlCreateDomain {
            grant_opts: good,
            ..pv(1)
        };
        assert!(create(&mut w, 0, c).is_ok(), "grant_opts {good}");
    }
    assert!(
        create(&mut w, 0, pv(32)).is_ok(),
        "as many vCPUs as vcpu_info slots"
    );
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

/// While another CPU still runs the domain, `pausedomain` and `destroydomain` are
/// continued (re-issued, as Xen continues a domctl on -ERESTART), and a re-issued
/// pause is counted once.
#[test]
fn pause_and_destroy_wait_for_another_cpu() {
    let mut w = World::dom0();
    assert_eq!(create(&mut w, 0, pv(1)), Ok(1));
    let go = |w: &mut World, cmd| domctl(w, cmd, 1, &()).0;
    assert_eq!(go(&mut w, DomctlCmd::UnpauseDomain), Ok(0));
    w.p.busy_elsewhere = 2;
    let rip = w.regs.rip;
    go(&mut w, DomctlCmd::PauseDomain).unwrap();
    assert_eq!(w.outcome, crate::traps::Outcome::RegsReplaced);
    assert_eq!(
        w.regs.rip,
        rip.wrapping_sub(2),
        "the hypercall is issued again"
    );
    assert_eq!(w.regs.rax, u64::from(hc::Hypercall::Domctl.nr()));
    assert_eq!(w.regs.rdi, KDATA, "with the same argument");
    go(&mut w, DomctlCmd::PauseDomain).unwrap();
    assert_eq!(go(&mut w, DomctlCmd::PauseDomain), Ok(0), "done");
    assert_eq!(
        w.p.others[&1].pause_count, 1,
        "one pause, however often re-issued"
    );
    w.p.busy_elsewhere = 1;
    go(&mut w, DomctlCmd::DestroyDomain).unwrap();
    assert_eq!(w.outcome, crate::traps::Outcome::RegsReplaced);
    assert!(w.p.destroyed.is_empty(), "not while another CPU runs it");
    assert_eq!(go(&mut w, DomctlCmd::DestroyDomain), Ok(0));
    assert_eq!(w.p.destroyed, vec![DomId(1)]);
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

// ---- vCPU context and the hypercall page ----------------------------------------------

use crate::mm::Mfn;
use crate::mm::frame_table::{Owner, PageType};
use hypercall_abi::xen::VcpuGuestContext;
use hypercall_abi::xen::arch::VgcfFlags;
use zerocopy::FromZeros;

/// Where the tests put a `vcpu_guest_context` in dom0's memory.
const CTXT: u64 = KDATA + 0x2000;
/// Frames of domain 1 in the tests.
const L4: Mfn = Mfn(0x400);
const L4B: Mfn = Mfn(0x401);
const DATA: Mfn = Mfn(0x402);
const THEIRS: Mfn = Mfn(0x403);

/// dom0 with domain 1 created (paused) and owning [`L4`], [`L4B`] and [`DATA`].
fn with_domu() -> World {
    let mut w = World::dom0();
    w.p.map(KDATA + 0x2000, 0x2000, Perm::ReadWrite);
    assert_eq!(create(&mut w, 0, pv(1)), Ok(1));
    for f in [L4, L4B, DATA] {
        w.p.mm.ft.assign(f, Owner::Domain(DomId(1))).unwrap();
    }
    w.p.mm.ft.assign(THEIRS, Owner::Domain(DomId(0))).unwrap();
    w
}

fn good_context() -> VcpuGuestContext {
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    c.user_regs.rip = 0xFFFF_8000_0010_0000;
    c.user_regs.rsp = 0xFFFF_8000_0020_0000;
    c.user_regs.rsi = 0xFFFF_8000_0030_0000;
    c.user_regs.cs = 0xE030;
    c.user_regs.ss = 0xE02B & !3;
    c.user_regs.rflags = 1 << 12; // IOPL 1
    c.kernel_ss = 0xE02B & !3;
    c.kernel_sp = 0xFFFF_8000_0020_0000;
    c.ctrlreg[3] = L4.0 << 12;
    c.event_callback_eip = 0xFFFF_8000_0010_1000;
    c.trap_ctxt[14].address = 0xFFFF_8000_0010_2000;
    c.trap_ctxt[14].vector = 14;
    c.trap_ctxt[14].cs = 0xE030;
    c
}

fn set_ctx(w: &mut World, dom: u16, vcpu: u32, c: Option<&VcpuGuestContext>) -> Result<u64, Errno> {
    if let Some(c) = c {
        w.p.poke_obj(CTXT, c);
    }
    let a = DomctlVcpuContext {
        vcpu,
        ctxt: c.map_or(0, |_| CTXT),
        ..Default::default()
    };
    domctl(w, DomctlCmd::SetVcpuContext, dom, &a).0
}

#[test]
fn setvcpucontext_loads_a_checked_context_and_holds_its_tables() {
    let mut w = with_domu();
    let c = good_context();
    assert_eq!(
        set_ctx(&mut w, 0, 0, Some(&c)),
        E(Errno::EINVAL),
        "not the caller"
    );
    assert_eq!(set_ctx(&mut w, 9, 0, Some(&c)), E(Errno::ESRCH));
    assert_eq!(
        set_ctx(&mut w, 1, 1, Some(&c)),
        E(Errno::EINVAL),
        "no vCPU 1"
    );
    assert_eq!(set_ctx(&mut w, 1, 0, None), E(Errno::EINVAL), "no reset");
    for bad in [
        VcpuGuestContext {
            user_regs: hypercall_abi::xen::CpuUserRegs {
                rip: 1 << 63,
                ..c.user_regs
            },
            ..c.clone()
        },
        VcpuGuestContext {
            ldt_base: 0x1001,
            ..c.clone()
        },
        VcpuGuestContext {
            gdt_ents: 100_000,
            ..c.clone()
        },
        VcpuGuestContext {
            ctrlreg: [0, 0, 0, THEIRS.0 << 12, 0, 0, 0, 0],
            ..c.clone()
        },
        VcpuGuestContext {
            ctrlreg: [0; 8],
            ..c.clone()
        },
    ] {
        assert_eq!(set_ctx(&mut w, 1, 0, Some(&bad)), E(Errno::EINVAL));
        assert!(!w.p.other_vcpus[&1].online, "a refusal changes nothing");
    }
    assert_eq!(w.p.mm.ft.info(L4).unwrap().type_count(), 0);

    let offline = VcpuGuestContext {
        flags: VgcfFlags::IN_KERNEL.bits(),
        ..c.clone()
    };
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&offline)), Ok(0));
    let v = &w.p.other_vcpus[&1];
    assert!(
        v.initialised && !v.online,
        "up only with VGCF_online, as Xen"
    );
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    let v = &w.p.other_vcpus[&1];
    assert!(v.initialised && v.online && v.kernel_mode);
    assert_eq!(v.kernel_root, L4);
    assert_eq!((v.regs.rip, v.regs.rsi), (c.user_regs.rip, c.user_regs.rsi));
    assert_eq!(v.regs.cs & 3, 3, "selectors get RPL 3");
    assert_eq!(v.kernel_ss & 3, 3);
    assert_ne!(v.regs.rflags & crate::regs::rflags::IF, 0, "IF forced on");
    assert_eq!(v.regs.rflags & crate::regs::rflags::IOPL, 0);
    assert_eq!(v.iopl, 1, "IOPL goes to the virtual IOPL");
    assert_eq!(v.traps[14].address, c.trap_ctxt[14].address);
    assert_eq!(v.callbacks.event.address, c.event_callback_eip);
    let f = w.p.mm.ft.info(L4).unwrap();
    assert_eq!((f.page_type(), f.type_count()), (PageType::L4, 1));

    // A new context with another L4 drops the old one's reference.
    let c2 = VcpuGuestContext {
        ctrlreg: [0, 0, 0, L4B.0 << 12, 0, 0, 0, 0],
        ..c.clone()
    };
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c2)), Ok(0));
    assert_eq!(w.p.mm.ft.info(L4).unwrap().type_count(), 0);
    assert_eq!(w.p.mm.ft.info(L4B).unwrap().type_count(), 1);

    // Not while it runs.
    assert_eq!(domctl(&mut w, DomctlCmd::UnpauseDomain, 1, &()).0, Ok(0));
    if let Some(d) = w.p.others.get_mut(&1) {
        d.state = DomainState::Running;
    }
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), E(Errno::EBUSY));
}

#[test]
fn getvcpucontext_reads_back_what_was_set() {
    let mut w = with_domu();
    let get = |w: &mut World| {
        let a = DomctlVcpuContext {
            vcpu: 0,
            ctxt: CTXT,
            ..Default::default()
        };
        domctl(w, DomctlCmd::GetVcpuContext, 1, &a).0
    };
    assert_eq!(get(&mut w), E(Errno::ENODATA), "never set");
    let c = good_context();
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    w.p.poke_obj(CTXT, &VcpuGuestContext::new_zeroed());
    assert_eq!(get(&mut w), Ok(0));
    let back: VcpuGuestContext = w.p.peek_obj(CTXT);
    assert_eq!(back.ctrlreg[3], L4.0 << 12);
    assert_eq!(back.user_regs.rip, c.user_regs.rip);
    assert_eq!(back.user_regs.rflags & (3 << 12), 1 << 12, "IOPL reported");
    assert_eq!(back.event_callback_eip, c.event_callback_eip);
    assert_eq!(back.trap_ctxt[14].address, c.trap_ctxt[14].address);
    assert_ne!(back.flags & VgcfFlags::IN_KERNEL.bits(), 0);
}

#[test]
fn vcpu_context_cr4_is_fixed_up_as_xen_does() {
    use crate::emulate::cr4;
    let mut w = with_domu();
    // FSGSBASE and DE in the policy, not XSAVE or the TSC.
    w.p.cpuid.insert((0, 0), [7, 0, 0, 0]);
    w.p.cpuid.insert((1, 0), [0, 0, 1 << 26, 1 << 2]);
    w.p.cpuid.insert((7, 0), [0, 1, 0, 0]);
    let mut c = good_context();
    c.ctrlreg[4] = u64::MAX;
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    let a = DomctlVcpuContext {
        vcpu: 0,
        ctxt: CTXT,
        ..Default::default()
    };
    assert_eq!(domctl(&mut w, DomctlCmd::GetVcpuContext, 1, &a).0, Ok(0));
    let back: VcpuGuestContext = w.p.peek_obj(CTXT);
    assert_eq!(
        back.ctrlreg[4],
        cr4::DE | cr4::FSGSBASE | (w.p.cr4 & cr4::VISIBLE_MASK)
    );
}

#[test]
fn vcpu_context_debug_registers_go_through_set_debugreg() {
    let mut w = with_domu();
    let get = |w: &mut World| {
        let a = DomctlVcpuContext {
            vcpu: 0,
            ctxt: CTXT,
            ..Default::default()
        };
        assert_eq!(domctl(w, DomctlCmd::GetVcpuContext, 1, &a).0, Ok(0));
        w.p.peek_obj::<VcpuGuestContext>(CTXT).debugreg
    };
    let mut c = good_context();
    c.debugreg = [
        0x1000,
        0xFFFF_8000_0000_0000,
        1 << 47,
        8,
        0x55,
        0x66,
        0x4001,
        0x000D_1001,
    ];
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    // The hypervisor's and non-canonical addresses are dropped; DR4/DR5 ignored;
    // DR6/DR7 get their fixed bits.
    assert_eq!(
        get(&mut w),
        [0x1000, 0, 0, 8, 0, 0, 0xFFFF_4FF1, 0x000D_0401]
    );
    // Refused DR6/DR7 leave the reset values (Xen 4.17 reports no error); so does a
    // new context that omits them.
    c.debugreg = [0, 0, 0, 0, 0, 0, 1 << 40, (1 << 13) | 1];
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    assert_eq!(get(&mut w), [0, 0, 0, 0, 0, 0, 0xFFFF_0FF0, 0x400]);
    c.debugreg = [0, 0, 0, 0, 0, 0, 0, (2 << 16) | 1]; // I/O breakpoint, CR4.DE clear
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&c)), Ok(0));
    assert_eq!(get(&mut w)[7], 0x400);
}

#[test]
fn hypercall_init_fills_a_writable_frame_of_the_domain() {
    let mut w = with_domu();
    let init = |w: &mut World, dom, gmfn| {
        domctl(
            w,
            DomctlCmd::HypercallInit,
            dom,
            &DomctlHypercallInit { gmfn },
        )
        .0
    };
    assert_eq!(init(&mut w, 1, THEIRS.0), E(Errno::EINVAL), "not its frame");
    assert_eq!(init(&mut w, 9, DATA.0), E(Errno::ESRCH));
    assert_eq!(set_ctx(&mut w, 1, 0, Some(&good_context())), Ok(0));
    assert_eq!(init(&mut w, 1, L4.0), E(Errno::EINVAL), "a page table");
    assert!(w.p.frame_writes.is_empty());
    assert_eq!(init(&mut w, 1, DATA.0), Ok(0));
    let (mfn, off, bytes) = &w.p.frame_writes[0];
    assert_eq!((*mfn, *off), (DATA, 0));
    assert_eq!(
        bytes[..],
        hypercall_abi::hypercall::hypercall_page_image()[..]
    );
    assert_eq!(
        w.p.mm.ft.info(DATA).unwrap().type_count(),
        0,
        "reference dropped"
    );
}

// ---- vcpu_op on the other vCPUs of the caller's domain ----------------------------------

/// `vcpu_op` numbers used below.
const INITIALISE: u32 = 0;
const UP: u32 = 1;
const DOWN: u32 = 2;
const IS_UP: u32 = 3;
const SET_SINGLESHOT: u32 = 8;

fn vcpu_op(w: &mut World, cmd: u32, vcpu: u32, arg: u64) -> Result<u64, Errno> {
    hc::vcpu_op(
        w,
        cmd,
        hypercall_abi::types::VcpuId(vcpu),
        hypercall_abi::types::GuestPtr::new(arg),
    )
}

/// dom1 on vCPU 0 with vCPUs 1 and 2 made (down, no context), owning [`L4`].
fn three_vcpus() -> World {
    let mut w = World::kernel();
    w.p.mm.ft.assign(L4, Owner::Domain(DomId(1))).unwrap();
    w.siblings.push(crate::vcpu::Vcpu::new(1, Mfn(0)));
    w.siblings.push(crate::vcpu::Vcpu::new(2, Mfn(0)));
    w
}

#[test]
fn vcpu_op_initialises_and_brings_up_a_sibling_as_xen_does() {
    let mut w = three_vcpus();
    assert_eq!(vcpu_op(&mut w, IS_UP, 3, 0), E(Errno::ENOENT), "no vCPU 3");
    assert_eq!(vcpu_op(&mut w, IS_UP, 1, 0), Ok(0));
    assert_eq!(
        vcpu_op(&mut w, UP, 1, 0),
        E(Errno::EINVAL),
        "no context yet"
    );
    assert_eq!(vcpu_op(&mut w, INITIALISE, 1, UNMAPPED), E(Errno::EFAULT));

    let mut bad = good_context();
    bad.ctrlreg[3] = 0;
    w.p.poke_obj(CTXT, &bad);
    assert_eq!(vcpu_op(&mut w, INITIALISE, 1, CTXT), E(Errno::EINVAL));
    assert!(!w.siblings[0].initialised, "a refusal changes nothing");

    // Linux gives no VGCF_online: the vCPU has a context and stays down until `up`.
    let c = VcpuGuestContext {
        flags: VgcfFlags::IN_KERNEL.bits(),
        ..good_context()
    };
    w.p.poke_obj(CTXT, &c);
    assert_eq!(vcpu_op(&mut w, INITIALISE, 1, CTXT), Ok(0));
    let v = &w.siblings[0];
    assert!(v.initialised && !v.online);
    assert_eq!(v.regs.rip, c.user_regs.rip);
    assert_eq!(v.kernel_root, L4);
    assert_eq!(
        w.p.mm.ft.info(L4).unwrap().type_count(),
        1,
        "its L4 is held"
    );
    assert_eq!(w.p.siblings_changed, [1]);
    assert_eq!(vcpu_op(&mut w, INITIALISE, 1, CTXT), E(Errno::EEXIST));
    assert_eq!(
        vcpu_op(&mut w, INITIALISE, 0, CTXT),
        E(Errno::EEXIST),
        "the caller"
    );

    assert_eq!(vcpu_op(&mut w, UP, 1, 0), Ok(0));
    assert!(w.siblings[0].online);
    assert_eq!(vcpu_op(&mut w, UP, 1, 0), Ok(0), "up again changes nothing");
    assert_eq!(w.p.siblings_changed, [1, 1]);
    assert_eq!(vcpu_op(&mut w, IS_UP, 1, 0), Ok(1));
    // The one-shot timer is the caller's own.
    assert_eq!(vcpu_op(&mut w, SET_SINGLESHOT, 1, KDATA), E(Errno::EINVAL));

    // VGCF_online brings vCPU 2 up with its context.
    w.p.poke_obj(CTXT, &good_context());
    assert_eq!(vcpu_op(&mut w, INITIALISE, 2, CTXT), Ok(0));
    assert!(w.siblings[1].online);
    assert_eq!(w.p.mm.ft.info(L4).unwrap().type_count(), 2);
}

#[test]
fn vcpu_op_down_stops_a_vcpu_and_the_last_one_powers_the_domain_off() {
    let mut w = three_vcpus();
    w.p.poke_obj(CTXT, &good_context());
    assert_eq!(vcpu_op(&mut w, INITIALISE, 1, CTXT), Ok(0));
    assert_eq!(vcpu_op(&mut w, DOWN, 1, 0), Ok(0));
    assert!(!w.siblings[0].online);
    assert_eq!(
        w.outcome,
        crate::traps::Outcome::Resume,
        "the caller goes on"
    );
    assert_eq!(vcpu_op(&mut w, DOWN, 2, 0), Ok(0), "already down: nothing");

    // With vCPU 1 up, the caller may go down itself.
    assert_eq!(vcpu_op(&mut w, UP, 1, 0), Ok(0));
    assert_eq!(vcpu_op(&mut w, DOWN, 0, 0), Ok(0));
    assert_eq!(w.outcome, crate::traps::Outcome::Down);
    assert!(!w.vcpu.online);

    // The last vCPU up going down is Xen's `domain_shutdown(d, SHUTDOWN_poweroff)`.
    let mut w = three_vcpus();
    assert_eq!(vcpu_op(&mut w, DOWN, 0, 0), Ok(0));
    assert_eq!(
        w.outcome,
        crate::traps::Outcome::Shutdown(ShutdownReason::Poweroff)
    );
}

#[test]
fn getdomaininfo_counts_the_callers_vcpus() {
    let mut w = World::dom0();
    let mut up = crate::vcpu::Vcpu::new(1, Mfn(0));
    up.online = true;
    w.siblings.push(up);
    w.siblings.push(crate::vcpu::Vcpu::new(2, Mfn(0)));
    let me = info(&mut w, 0).unwrap();
    assert_eq!((me.nr_online_vcpus, me.max_vcpu_id), (2, 2));
    let max = |w: &mut World, max| domctl(w, DomctlCmd::MaxVcpus, 0, &DomctlMaxVcpus { max }).0;
    assert_eq!(max(&mut w, 3), Ok(0), "the number it has");
    assert_eq!(max(&mut w, 1), E(Errno::EINVAL));
}

#[test]
fn vcpu_affinity_is_set_read_back_and_checked() {
    use hypercall_abi::domctl::{
        DomctlVcpuAffinity, VCPUAFFINITY_HARD, VCPUAFFINITY_SOFT, XenctlBitmap,
    };
    let mut w = with_domu();
    let (hard, soft) = (KDATA + 0x2000, KDATA + 0x2100);
    let aff = |vcpu, flags| DomctlVcpuAffinity {
        vcpu,
        flags,
        cpumap_hard: XenctlBitmap {
            bitmap: hard,
            nr_bits: 12,
            ..Default::default()
        },
        cpumap_soft: XenctlBitmap {
            bitmap: soft,
            nr_bits: 12,
            ..Default::default()
        },
    };
    let set = |w: &mut World, a: &DomctlVcpuAffinity| domctl(w, DomctlCmd::SetVcpuAffinity, 1, a).0;
    let get = |w: &mut World, a: &DomctlVcpuAffinity| domctl(w, DomctlCmd::GetVcpuAffinity, 1, a).0;
    // CPU 1 and CPU 9 asked; this machine (two CPUs) runs guests on CPU 1 of them.
    w.p.poke_obj(hard, &[0b0000_0010u8, 0b0000_0010u8]);
    w.p.poke_obj(soft, &[0xFFu8, 0x0F]);
    assert_eq!(
        set(&mut w, &aff(1, VCPUAFFINITY_HARD)),
        E(Errno::EINVAL),
        "no vCPU 1"
    );
    assert_eq!(set(&mut w, &aff(0, 0)), E(Errno::EINVAL), "no map named");
    assert_eq!(
        set(&mut w, &aff(0, VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT)),
        Ok(0)
    );
    assert_eq!(w.p.affinities, [(DomId(1), 0, 0b10)]);
    assert_eq!(
        w.p.soft_affinities,
        [(DomId(1), 0, 0xFFF)],
        "the scheduler gets the soft map as given"
    );
    let v = &w.p.other_vcpus[&1];
    assert_eq!((v.affinity_hard, v.affinity_soft), (0x202, 0xFFF));
    // The effective maps come back: hard on the CPUs that run guests, soft within it.
    assert_eq!(w.p.peek_obj::<[u8; 2]>(hard), [0b10, 0]);
    assert_eq!(w.p.peek_obj::<[u8; 2]>(soft), [0b10, 0]);
    // Reading gives the maps as set.
    w.p.poke_obj(hard, &[0u8; 2]);
    assert_eq!(
        get(&mut w, &aff(0, VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT)),
        Ok(0)
    );
    assert_eq!(w.p.peek_obj::<[u8; 2]>(hard), [0x02, 0x02]);
    assert_eq!(w.p.peek_obj::<[u8; 2]>(soft), [0xFF, 0x0F]);
    // No CPU that runs guests: refused, nothing changes.
    w.p.poke_obj(hard, &[0b100u8, 0]);
    assert_eq!(set(&mut w, &aff(0, VCPUAFFINITY_HARD)), E(Errno::EINVAL));
    assert_eq!(w.p.other_vcpus[&1].affinity_hard, 0x202);
    assert_eq!(
        set(&mut w, &aff(0, VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT)),
        E(Errno::EINVAL)
    );
    assert_eq!(
        w.p.soft_affinities.len(),
        1,
        "a refused hard map sets no soft one"
    );
    let bad = DomctlVcpuAffinity {
        cpumap_hard: XenctlBitmap {
            bitmap: UNMAPPED,
            nr_bits: 8,
            ..Default::default()
        },
        ..aff(0, VCPUAFFINITY_HARD)
    };
    assert_eq!(set(&mut w, &bad), E(Errno::EFAULT));
    assert_eq!(
        set(
            &mut w,
            &DomctlVcpuAffinity {
                ..aff(0, VCPUAFFINITY_HARD)
            }
        ),
        E(Errno::EINVAL)
    );
    assert_eq!(
        domctl(&mut w, DomctlCmd::GetVcpuAffinity, 9, &aff(0, 1)).0,
        E(Errno::ESRCH)
    );
}

#[test]
fn getvcpuinfo_reports_state_time_and_cpu() {
    use hypercall_abi::domctl::DomctlGetVcpuInfo;
    let mut w = with_domu();
    {
        let v = w.p.other_vcpus.get_mut(&1).unwrap();
        v.online = true;
        v.processor = 1;
        v.wait = crate::vcpu::Wait::Block;
        v.runstate.time[0] = 5_000;
    }
    let ask = |w: &mut World, dom, vcpu| {
        let (r, out) = domctl(
            w,
            DomctlCmd::GetVcpuInfo,
            dom,
            &DomctlGetVcpuInfo {
                vcpu,
                ..Default::default()
            },
        );
        r.map(|_| out.arg::<DomctlGetVcpuInfo>())
    };
    let i = ask(&mut w, 1, 0).unwrap();
    assert_eq!(
        (i.online, i.blocked, i.running, i.cpu_time, i.cpu),
        (1, 1, 0, 5_000, 1)
    );
    assert_eq!(ask(&mut w, 1, 1), Err(Errno::EINVAL), "no vCPU 1");
    assert_eq!(ask(&mut w, 9, 0), Err(Errno::ESRCH), "no domain 9");
    // The caller's own vCPU: up, running.
    let me = ask(&mut w, 0, 0).unwrap();
    assert_eq!((me.online, me.blocked), (1, 0));
}
