//! `domctl`: the control domain's interface, as a toolstack drives it.
//!
//! As dom0 (`role=dom0`, the default): `sysctl` physinfo (CPUs, free memory) and
//! readconsole (the log holds "boot complete", or real Xen's banner); `domctl` with a wrong interface
//! version (-EACCES); `count=` (default 50) rounds of createdomain → getdomaininfo
//! (paused, no memory) → max_mem → pause/unpause counting → destroydomain →
//! getdomaininfo (-ESRCH), after which free memory is back to the frame; the ids
//! never repeat at once (Xen's rover); refusals (an HVM domain, 0 or 33 vCPUs, pausing
//! itself). In the first round the new domain also gets two frames
//! (`XENMEM_populate_physmap` for its id), one filled by `hypercall_init`, the other
//! its (empty) L4 in `setvcpucontext`, read back by `getvcpucontext`. As a domU
//! (`role=domu`): every domctl and sysctl is -EPERM.
//!
//! Result line: `domctl: PASS rounds=<n> free=<pages>` (dom0) or `domctl: PASS
//! role=domu`.
#![no_std]
#![no_main]

use pv_runtime::abi::domctl::*;
use pv_runtime::abi::hypercall::{domctl as domctl_hc, memory_op, sysctl as sysctl_hc};
use pv_runtime::abi::memory::{XenMemoryReservation, XenmemOp};
use pv_runtime::abi::sched::ShutdownReason;
use pv_runtime::abi::xen::VcpuGuestContext;
use pv_runtime::abi::xen::arch::VgcfFlags;
use pv_runtime::abi::{DomId, Errno};
use pv_runtime::hypercall::{handle_mut, invoker};
use pv_runtime::{StartInfo, println};
use pv_test_guests::{arg, arg_u64, check, expect, fail, ok};
use zerocopy::FromZeros;

const NAME: &str = "domctl";

/// `setvcpuaffinity`/`getvcpuaffinity` of vCPU 0 of domain `id`: CPU 0 alone (and
/// CPU 40, which no machine here has) gives the effective map {0} back; the map as
/// set reads back; a map of absent CPUs only is -EINVAL; vCPU 1 is -EINVAL.
fn affinity(id: u16) {
    use pv_runtime::abi::domctl::{DomctlVcpuAffinity, VCPUAFFINITY_HARD, XenctlBitmap};
    // The hypervisor writes `map` behind the compiler's back: it is read through
    // `black_box` after each call.
    let mut map: [u8; 8];
    let aff = |vcpu: u32, map: &mut [u8; 8]| DomctlVcpuAffinity {
        vcpu,
        flags: VCPUAFFINITY_HARD,
        cpumap_hard: XenctlBitmap {
            bitmap: pv_runtime::abi::GuestPtr::from_ptr(map.as_mut_ptr()).addr(),
            nr_bits: 64,
            ..Default::default()
        },
        ..Default::default()
    };
    let call = |cmd, a: &DomctlVcpuAffinity| run_domctl(&mut Domctl::new(cmd, DomId(id), a));
    map = (1u64 | 1 << 40).to_le_bytes();
    let a = aff(0, &mut map);
    ok(
        NAME,
        "setvcpuaffinity",
        call(DomctlCmd::SetVcpuAffinity, &a),
    );
    let got = u64::from_le_bytes(*core::hint::black_box(&mut map));
    expect(NAME, "effective hard affinity", got, 1);
    map = [0xAA; 8];
    let a = aff(0, &mut map);
    ok(
        NAME,
        "getvcpuaffinity",
        call(DomctlCmd::GetVcpuAffinity, &a),
    );
    let got = u64::from_le_bytes(*core::hint::black_box(&mut map));
    expect(NAME, "hard affinity as set", got, 1 | 1 << 40);
    map = (1u64 << 40).to_le_bytes();
    let a = aff(0, &mut map);
    expect(
        NAME,
        "affinity without a CPU",
        call(DomctlCmd::SetVcpuAffinity, &a),
        Err(Errno::EINVAL),
    );
    let a = aff(1, &mut map);
    expect(
        NAME,
        "affinity of vCPU 1",
        call(DomctlCmd::GetVcpuAffinity, &a),
        Err(Errno::EINVAL),
    );
}

fn run_domctl(op: &mut Domctl) -> Result<u64, Errno> {
    // SAFETY: the runtime installed the hypercall page; `op` is a live local the
    // hypervisor reads and writes back.
    let mut inv = unsafe { invoker() };
    domctl_hc(&mut inv, handle_mut(op).cast::<()>())
}

fn run_sysctl(op: &mut Sysctl) -> Result<u64, Errno> {
    // SAFETY: as in `run_domctl`.
    let mut inv = unsafe { invoker() };
    sysctl_hc(&mut inv, handle_mut(op).cast::<()>())
}

fn simple(cmd: DomctlCmd, dom: u16) -> Result<u64, Errno> {
    run_domctl(&mut Domctl::new(cmd, DomId(dom), &()))
}

fn physinfo() -> SysctlPhysinfo {
    let mut op = Sysctl::new(SysctlCmd::Physinfo, &());
    ok(NAME, "sysctl(physinfo)", run_sysctl(&mut op));
    op.arg()
}

fn info(dom: u16) -> Result<(u16, DomctlGetDomainInfo), Errno> {
    let mut op = Domctl::new(DomctlCmd::GetDomainInfo, DomId(dom), &());
    run_domctl(&mut op).map(|_| (op.domain.0, op.arg()))
}

fn create(config: DomctlCreateDomain) -> Result<u16, Errno> {
    let mut op = Domctl::new(DomctlCmd::CreateDomain, DomId(0), &config);
    run_domctl(&mut op).map(|_| op.domain.0)
}

fn pv() -> DomctlCreateDomain {
    DomctlCreateDomain {
        max_vcpus: 1,
        max_evtchn_port: 1023,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: pv_runtime::abi::domctl::grant_version(2),
        handle: *b"xen-like-hv-test",
        ..Default::default()
    }
}

/// Gives domain `id` two frames and starts its vCPU on an empty L4: what a domain
/// builder does last.
fn start_vcpu(id: u16) {
    // As libxl's build_pre: Xen 4.17 creates the vCPUs here (setvcpucontext is
    // -EINVAL before); xen-like-hv checks the count.
    ok(
        NAME,
        "max_vcpus",
        run_domctl(&mut Domctl::new(
            DomctlCmd::MaxVcpus,
            DomId(id),
            &DomctlMaxVcpus { max: 1 },
        )),
    );
    let mut frames = [0u64, 1];
    let res = XenMemoryReservation {
        extent_start: pv_runtime::abi::GuestPtr::from_ptr(frames.as_mut_ptr()),
        nr_extents: 2,
        domid: DomId(id),
        ..Default::default()
    };
    // SAFETY: the runtime installed the hypercall page; `res` and `frames` are live
    // locals the hypervisor reads and writes.
    let mut inv = unsafe { invoker() };
    let got = memory_op(
        &mut inv,
        u64::from(XenmemOp::PopulatePhysmap.nr()),
        pv_runtime::hypercall::handle(&res).cast(),
    );
    expect(NAME, "populate_physmap for the new domain", got, Ok(2));
    let (page, l4) = (frames[0], frames[1]);
    let mut hi = Domctl::new(
        DomctlCmd::HypercallInit,
        DomId(id),
        &DomctlHypercallInit { gmfn: page },
    );
    ok(NAME, "hypercall_init", run_domctl(&mut hi));
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    c.user_regs.rip = 0xFFFF_8000_0010_0000;
    c.user_regs.cs = 0xE033;
    c.user_regs.ss = 0xE02B;
    c.ctrlreg[3] = l4 << 12;
    let arg = DomctlVcpuContext {
        vcpu: 0,
        ctxt: pv_runtime::hypercall::handle(&c).addr(),
        ..Default::default()
    };
    ok(
        NAME,
        "setvcpucontext",
        run_domctl(&mut Domctl::new(DomctlCmd::SetVcpuContext, DomId(id), &arg)),
    );
    let mut back = VcpuGuestContext::new_zeroed();
    let arg = DomctlVcpuContext {
        vcpu: 0,
        ctxt: pv_runtime::abi::GuestPtr::from_ptr(&raw mut back).addr(),
        ..Default::default()
    };
    ok(
        NAME,
        "getvcpucontext",
        run_domctl(&mut Domctl::new(DomctlCmd::GetVcpuContext, DomId(id), &arg)),
    );
    expect(NAME, "getvcpucontext cr3", back.ctrlreg[3], l4 << 12);
    expect(
        NAME,
        "getvcpucontext rip",
        back.user_regs.rip,
        c.user_regs.rip,
    );
    affinity(id);
    expect(
        NAME,
        "tot_pages after populate",
        ok(NAME, "getdomaininfo", info(id)).1.tot_pages,
        2,
    );
}

/// Yields until domain `id`, started on an empty L4, has run and crashed: without
/// the wait, whether it runs before dom0 destroys it is up to the scheduler.
fn wait_for_crash(id: u16) {
    let crashed = |f: u32| {
        f & DOMINF_SHUTDOWN != 0
            && (f >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK == ShutdownReason::Crash as u32
    };
    for _ in 0..10_000 {
        let flags = ok(NAME, "getdomaininfo", info(id)).1.flags;
        if crashed(flags) {
            return;
        }
        pv_runtime::sched::yield_now();
    }
    fail(NAME, format_args!("domain {id} never ran into its fault"));
}

/// Where dom0 maps another domain's frame.
const FOREIGN_VA: u64 = 0x0000_2000_0000_0000;

/// A frame dom0 still maps when its domain is destroyed stays (and the domain's id
/// stays taken) until dom0 unmaps it; then it comes back, as in Xen.
fn frame_outlives_its_domain() {
    use pv_runtime::abi::hypercall::{update_va_mapping, update_va_mapping_otherdomain};
    use pv_runtime::abi::mmu::UVMF_INVLPG;
    use pv_runtime::abi::xen::pte::PteFlags;
    if let Err(e) = pv_runtime::mm::take_over() {
        fail(NAME, format_args!("take_over: {e}"));
    }
    let Some(own) = pv_runtime::mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let flags = PteFlags::PRESENT | PteFlags::RW | PteFlags::ACCESSED | PteFlags::DIRTY;
    ok(
        NAME,
        "map a scratch page",
        pv_runtime::mm::map(FOREIGN_VA, &[own.mfn], flags).map_err(|_| Errno::EINVAL),
    );
    let start = physinfo().free_pages;
    let id = ok(NAME, "createdomain", create(pv()));
    let mut mm = Domctl::new(
        DomctlCmd::MaxMem,
        DomId(id),
        &DomctlMaxMem { max_memkb: 64 },
    );
    ok(NAME, "max_mem", run_domctl(&mut mm));
    let mut frames = [0u64];
    let res = XenMemoryReservation {
        extent_start: pv_runtime::abi::GuestPtr::from_ptr(frames.as_mut_ptr()),
        nr_extents: 1,
        domid: DomId(id),
        ..Default::default()
    };
    // SAFETY: the runtime installed the hypercall page; the arguments are live locals;
    // the mappings changed are this guest's scratch page only.
    let mut inv = unsafe { invoker() };
    let got = memory_op(
        &mut inv,
        u64::from(XenmemOp::PopulatePhysmap.nr()),
        pv_runtime::hypercall::handle(&res).cast(),
    );
    expect(NAME, "populate one frame", got, Ok(1));
    let theirs = (frames[0] << 12) | flags.bits();
    ok(
        NAME,
        "map their frame",
        update_va_mapping_otherdomain(&mut inv, FOREIGN_VA, theirs, UVMF_INVLPG, DomId(id)),
    );
    ok(NAME, "destroydomain", simple(DomctlCmd::DestroyDomain, id));
    expect(
        NAME,
        "free pages while dom0 maps the frame",
        physinfo().free_pages,
        start - 1,
    );
    let again = DomctlCreateDomain { ..pv() };
    let mut op = Domctl::new(DomctlCmd::CreateDomain, DomId(id), &again);
    expect(
        NAME,
        "its id while a frame is out",
        run_domctl(&mut op).map(drop),
        Err(Errno::EEXIST),
    );
    let mine = (own.mfn.0 << 12) | flags.bits();
    ok(
        NAME,
        "unmap their frame",
        update_va_mapping(&mut inv, FOREIGN_VA, mine, UVMF_INVLPG),
    );
    expect(
        NAME,
        "free pages after the unmap",
        physinfo().free_pages,
        start,
    );
    let mut op = Domctl::new(DomctlCmd::CreateDomain, DomId(id), &again);
    ok(NAME, "its id again", run_domctl(&mut op));
    ok(NAME, "destroydomain", simple(DomctlCmd::DestroyDomain, id));
}

fn as_domu() {
    expect(
        NAME,
        "domctl as a domU",
        simple(DomctlCmd::GetDomainInfo, 0),
        Err(Errno::EPERM),
    );
    let mut op = Sysctl::new(SysctlCmd::Physinfo, &());
    expect(
        NAME,
        "sysctl as a domU",
        run_sysctl(&mut op),
        Err(Errno::EPERM),
    );
    println!("{NAME}: PASS role=domu");
}

fn as_dom0() {
    let p = physinfo();
    check(NAME, p.nr_cpus >= 1, format_args!("nr_cpus {}", p.nr_cpus));
    check(
        NAME,
        p.free_pages > 0 && p.free_pages < p.total_pages,
        format_args!("free {} of {}", p.free_pages, p.total_pages),
    );
    check(
        NAME,
        p.capabilities & PHYSCAP_PV != 0,
        format_args!("no PV capability"),
    );

    let mut log = [0u8; 4096];
    let rc = SysctlReadConsole {
        buffer: pv_runtime::abi::GuestPtr::from_ptr(log.as_mut_ptr()).addr(),
        count: 4096,
        ..Default::default()
    };
    let mut op = Sysctl::new(SysctlCmd::ReadConsole, &rc);
    ok(NAME, "sysctl(readconsole)", run_sysctl(&mut op));
    let got: SysctlReadConsole = op.arg();
    let text = log.get(..got.count as usize).unwrap_or(&[]);
    check(
        NAME,
        // Ours logs "boot complete"; real Xen's ring starts with its banner.
        text.windows(13).any(|w| w == b"boot complete")
            || text.windows(12).any(|w| w == b"Xen version "),
        format_args!(
            "the console ring ({} bytes) lacks \"boot complete\" and Xen's banner",
            got.count
        ),
    );

    let mut bad = Domctl::new(DomctlCmd::GetDomainInfo, DomId(0), &());
    bad.interface_version = 0x14;
    expect(
        NAME,
        "an old interface version",
        run_domctl(&mut bad),
        Err(Errno::EACCES),
    );
    expect(
        NAME,
        "pausing itself",
        simple(DomctlCmd::PauseDomain, 0),
        Err(Errno::EINVAL),
    );
    let hvm = DomctlCreateDomain {
        flags: CDF_HVM,
        ..pv()
    };
    // Neither hypervisor can run HVM guests here (no VT-x under TCG): real
    // Xen 4.17 answers -EOPNOTSUPP.
    expect(NAME, "an HVM domain", create(hvm), Err(Errno::EOPNOTSUPP));
    let none = DomctlCreateDomain {
        max_vcpus: 0,
        ..pv()
    };
    expect(NAME, "no vCPU", create(none), Err(Errno::EINVAL));
    // xen-like-hv's limit (docs/xen-differences.md 3); real Xen takes more.
    if arg("hv") != Some(b"xen".as_slice()) {
        let many = DomctlCreateDomain {
            max_vcpus: 33,
            ..pv()
        };
        expect(NAME, "33 vCPUs", create(many), Err(Errno::EINVAL));
    }
    let v0 = DomctlCreateDomain {
        grant_opts: 0,
        ..pv()
    };
    expect(
        NAME,
        "grant-table version 0",
        create(v0),
        Err(Errno::EINVAL),
    );

    let (first, me) = ok(NAME, "getdomaininfo(0)", info(0));
    expect(NAME, "the first domain", first, 0);
    check(
        NAME,
        me.flags & DOMINF_RUNNING != 0,
        format_args!("dom0 flags {:#x}", me.flags),
    );

    let free_before = physinfo().free_pages;
    let rounds = arg_u64(NAME, "count", 50);
    let mut last = 0;
    for round in 0..rounds {
        let id = ok(NAME, "createdomain", create(pv()));
        check(
            NAME,
            id > last,
            format_args!("round {round}: id {id} after {last}"),
        );
        last = id;
        let (got, d) = ok(NAME, "getdomaininfo(new)", info(id));
        expect(NAME, "getdomaininfo id", got, id);
        check(
            NAME,
            d.flags & DOMINF_PAUSED != 0 && d.tot_pages == 0 && d.handle == *b"xen-like-hv-test",
            format_args!("new domain: flags {:#x}, {} pages", d.flags, d.tot_pages),
        );
        let mut mm = Domctl::new(
            DomctlCmd::MaxMem,
            DomId(id),
            &DomctlMaxMem { max_memkb: 16384 },
        );
        ok(NAME, "max_mem", run_domctl(&mut mm));
        expect(
            NAME,
            "max_pages",
            ok(NAME, "getdomaininfo", info(id)).1.max_pages,
            4096,
        );
        if round == 0 {
            start_vcpu(id);
        }
        ok(NAME, "pausedomain", simple(DomctlCmd::PauseDomain, id));
        ok(NAME, "unpausedomain", simple(DomctlCmd::UnpauseDomain, id));
        ok(NAME, "unpausedomain", simple(DomctlCmd::UnpauseDomain, id));
        expect(
            NAME,
            "unpausing an unpaused domain",
            simple(DomctlCmd::UnpauseDomain, id),
            Err(Errno::EINVAL),
        );
        if round == 0 {
            wait_for_crash(id);
        }
        ok(NAME, "destroydomain", simple(DomctlCmd::DestroyDomain, id));
        if let Ok((next, _)) = info(id) {
            check(
                NAME,
                next != id,
                format_args!("domain {id} still listed after destroy"),
            );
        }
        expect(
            NAME,
            "destroying it again",
            simple(DomctlCmd::DestroyDomain, id),
            Err(Errno::ESRCH),
        );
    }
    let free_after = physinfo().free_pages;
    expect(NAME, "free pages after the rounds", free_after, free_before);
    frame_outlives_its_domain();
    if arg("leave") == Some(b"1") {
        // One created domain left behind: dom0's stop must tear it down too.
        ok(NAME, "createdomain", create(pv()));
    }
    println!("{NAME}: PASS rounds={rounds} free={free_after}");
}

fn main(_si: &'static StartInfo) {
    match arg("role") {
        None | Some(b"dom0") => as_dom0(),
        Some(b"domu") => as_domu(),
        Some(_) => fail(NAME, format_args!("role=dom0|domu")),
    }
    pv_runtime::sched::poweroff()
}

pv_runtime::entry!(main);
