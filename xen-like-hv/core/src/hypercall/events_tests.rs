//! `event_channel_op`, `sched_op` block/poll/watchdog/remote_shutdown, `set_timer_op`,
//! `vcpu_op` and event delivery, driven as a guest drives them (digest §6.8-§6.10, §7).
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::domain::ShutdownReason;
use crate::evtchn::EvtchnTable;
use crate::mm::Mfn;
use crate::testutil::*;
use crate::traps::Outcome;
use crate::vcpu::{DEFAULT_PERIOD_NS, Timers, Wait};
use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnOpCompat, EvtchnSend, EvtchnStatus,
};
use hypercall_abi::hypercall as hc;
use hypercall_abi::sched::{SchedPoll, SchedRemoteShutdown, SchedWatchdog};
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};
use hypercall_abi::vcpu::{
    VcpuRegisterVcpuInfo, VcpuRunstateInfo, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer,
};
use hypercall_abi::xen::shared_info::VcpuTimeInfo;
use zerocopy::IntoBytes;

const ALLOC_UNBOUND: u32 = 6;
const BIND_INTERDOMAIN: u32 = 0;
const SEND: u32 = 4;
const STATUS: u32 = 5;
const RESET: u32 = 10;

/// dom1 (current) and dom2, both with event channels.
fn two_domains() -> World {
    let mut w = World::kernel();
    w.p.evtchn.add(1);
    w.p.evtchn.add(2);
    w.p.evtchn_self = 1;
    w.p.others
        .insert(2, crate::domain::Domain::new(DomId(2), false, Mfn(0x98)));
    w
}

fn table(w: &World, id: u16) -> &EvtchnTable {
    &w.p.evtchn.doms[&id].0
}

fn alloc_unbound(w: &mut World, remote: u16) -> Result<EvtchnPort, Errno> {
    w.p.poke_obj(
        KDATA,
        &EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: DomId(remote),
            port: EvtchnPort(0),
        },
    );
    hc::event_channel_op(w, ALLOC_UNBOUND, ptr(KDATA))?;
    Ok(w.p.peek_obj::<EvtchnAllocUnbound>(KDATA).port)
}

#[test]
fn unknown_event_channel_op_is_enosys_and_reads_nothing() {
    let mut w = two_domains();
    assert_eq!(
        hc::event_channel_op(&mut w, 99, ptr(UNMAPPED)),
        E(Errno::ENOSYS)
    );
    assert_eq!(
        hc::event_channel_op(&mut w, ALLOC_UNBOUND, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

#[test]
fn alloc_unbound_writes_the_port_back() {
    let mut w = two_domains();
    let p = alloc_unbound(&mut w, 2).unwrap();
    assert_eq!(p, EvtchnPort(1));
    assert_eq!(
        table(&w, 1).state(p),
        Some(crate::evtchn::PortState::Unbound { remote: DomId(2) })
    );
    assert_eq!(alloc_unbound(&mut w, 2), Ok(EvtchnPort(2)));
}

#[test]
fn a_domain_without_a_table_gets_esrch() {
    let mut w = two_domains();
    assert_eq!(
        alloc_unbound(&mut w, 7).map(|_| ()),
        Ok(()),
        "remote need not exist yet"
    );
    w.p.evtchn_self = 9;
    w.p.evtchn.doms.remove(&1);
    assert_eq!(alloc_unbound(&mut w, 2), Err(Errno::ESRCH));
}

#[test]
fn interdomain_send_kicks_the_peer() {
    let mut w = two_domains();
    // dom2 offers a port to dom1 (done directly on its table, as dom2 would).
    let offered = {
        let mut doms = std::mem::take(&mut w.p.evtchn);
        let req = EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: DomId(1),
            port: EvtchnPort(0),
        };
        let r =
            crate::evtchn::alloc_unbound(&mut doms, &crate::evtchn::Caller::domu(DomId(2)), req)
                .unwrap();
        w.p.evtchn = doms;
        r.port
    };
    w.p.poke_obj(
        KDATA,
        &EvtchnBindInterdomain {
            remote_dom: DomId(2),
            remote_port: offered,
            local_port: EvtchnPort(0),
            ..Default::default()
        },
    );
    assert_eq!(
        hc::event_channel_op(&mut w, BIND_INTERDOMAIN, ptr(KDATA)),
        Ok(0)
    );
    let local = w.p.peek_obj::<EvtchnBindInterdomain>(KDATA).local_port;
    w.p.poke_obj(KDATA, &EvtchnSend { port: local });
    assert_eq!(hc::event_channel_op(&mut w, SEND, ptr(KDATA)), Ok(0));
    let kick = *w.p.kicks.last().unwrap();
    assert_eq!(kick.dom, DomId(2));
    assert_eq!(kick.port, offered);
    assert_eq!(kick.upcall, Some(VcpuId(0)));
    // A second send while pending changes nothing and kicks nobody.
    let n = w.p.kicks.len();
    assert_eq!(hc::event_channel_op(&mut w, SEND, ptr(KDATA)), Ok(0));
    assert_eq!(w.p.kicks.len(), n);
    // A free port cannot be sent on.
    w.p.poke_obj(
        KDATA,
        &EvtchnSend {
            port: EvtchnPort(9),
        },
    );
    assert_eq!(
        hc::event_channel_op(&mut w, SEND, ptr(KDATA)),
        E(Errno::EINVAL)
    );
}

#[test]
fn status_of_an_unbound_port_names_the_remote() {
    let mut w = two_domains();
    let p = alloc_unbound(&mut w, 2).unwrap();
    w.p.poke_obj(
        KDATA,
        &EvtchnStatus {
            dom: DomId::SELF,
            port: p,
            ..EvtchnStatus::default()
        },
    );
    assert_eq!(hc::event_channel_op(&mut w, STATUS, ptr(KDATA)), Ok(0));
    let s: EvtchnStatus = w.p.peek_obj(KDATA);
    assert_eq!(s.status, 1, "EVTCHNSTAT_unbound");
    assert_eq!(s.u[0] & 0xFFFF, 2);
}

#[test]
fn compat_op_16_runs_the_original_ten_and_writes_back_into_the_union() {
    let mut w = two_domains();
    let mut op = EvtchnOpCompat {
        cmd: ALLOC_UNBOUND,
        u: [0; 6],
    };
    let arg = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: DomId(2),
        port: EvtchnPort(0),
    };
    op.u.as_mut_bytes()[..8].copy_from_slice(arg.as_bytes());
    w.p.poke_obj(KDATA, &op);
    assert_eq!(hc::event_channel_op_compat(&mut w, ptr(KDATA)), Ok(0));
    let back: EvtchnOpCompat = w.p.peek_obj(KDATA);
    assert_eq!(back.u[1], 1, "port 1 written at offset 4 of the union");
    op.cmd = RESET;
    w.p.poke_obj(KDATA, &op);
    assert_eq!(
        hc::event_channel_op_compat(&mut w, ptr(KDATA)),
        E(Errno::ENOSYS)
    );
    assert_eq!(
        hc::event_channel_op_compat(&mut w, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

// ---- sched_op: block and poll ----------------------------------------------------------

#[test]
fn block_enables_events_and_waits() {
    let mut w = two_domains();
    w.p.set_upcall_mask_for_test(0, 1);
    assert_eq!(hc::sched_op(&mut w, 1, GuestPtr::NULL), Ok(0));
    assert_eq!(w.p.mask(0), 0, "block clears evtchn_upcall_mask");
    assert_eq!(w.outcome, Outcome::Block);
    assert_eq!(w.vcpu.wait, Wait::Block);
}

#[test]
fn block_with_an_event_already_pending_returns_at_once() {
    let mut w = two_domains();
    w.p.upcall_pending.insert(0, true);
    assert_eq!(hc::sched_op(&mut w, 1, GuestPtr::NULL), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(w.vcpu.wait, Wait::None);
    // The same through sched_op_compat.
    assert_eq!(hc::sched_op_compat(&mut w, 1, 0), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume);
}

fn poll(w: &mut World, ports: &[u32], nr: u32, timeout: u64) -> Result<u64, Errno> {
    let list = KDATA + 0x100;
    for (i, p) in ports.iter().enumerate() {
        w.p.poke_obj(list + 4 * i as u64, p);
    }
    w.p.poke_obj(
        KDATA,
        &SchedPoll {
            ports: GuestPtr::new(list),
            nr_ports: nr,
            _pad: 0,
            timeout,
        },
    );
    hc::sched_op(w, 3, ptr(KDATA))
}

#[test]
fn poll_checks_its_ports() {
    let mut w = two_domains();
    assert_eq!(
        poll(&mut w, &[], 129, 0),
        E(Errno::EINVAL),
        "more than 128 ports"
    );
    assert_eq!(poll(&mut w, &[5], 1, 0), E(Errno::EINVAL), "a free port");
    assert_eq!(
        poll(&mut w, &[100_000], 1, 0),
        E(Errno::EINVAL),
        "beyond the table"
    );
    assert_eq!(w.outcome, Outcome::Resume);
    w.p.poke_obj(
        KDATA,
        &SchedPoll {
            ports: GuestPtr::new(UNMAPPED),
            nr_ports: 1,
            _pad: 0,
            timeout: 0,
        },
    );
    assert_eq!(hc::sched_op(&mut w, 3, ptr(KDATA)), E(Errno::EFAULT));
}

#[test]
fn poll_waits_for_one_port_with_its_timeout() {
    let mut w = two_domains();
    let p = alloc_unbound(&mut w, 2).unwrap();
    w.p.now = 1_000;
    assert_eq!(poll(&mut w, &[p.0], 1, 5_000), Ok(0));
    assert_eq!(w.outcome, Outcome::Block);
    assert_eq!(w.vcpu.wait, Wait::Poll(Some(p)));
    assert_eq!(w.vcpu.timers.poll_timeout, Some(5_000));
}

#[test]
fn poll_returns_at_once_when_a_port_is_pending_or_the_timeout_passed() {
    let mut w = two_domains();
    let p = alloc_unbound(&mut w, 2).unwrap();
    w.p.now = 10_000;
    assert_eq!(poll(&mut w, &[p.0], 1, 5_000), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume, "timeout already passed");
    w.p.evtchn.doms.get_mut(&1).unwrap().1.evtchn_pending[0] |= 1 << p.0;
    assert_eq!(poll(&mut w, &[p.0], 1, 0), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume, "port pending");
}

// ---- watchdog and remote shutdown --------------------------------------------------------

fn watchdog(w: &mut World, id: u32, timeout: u32) -> Result<u64, Errno> {
    w.p.poke_obj(KDATA, &SchedWatchdog { id, timeout });
    hc::sched_op(w, 6, ptr(KDATA))
}

#[test]
fn watchdogs_are_created_rearmed_and_destroyed() {
    let mut w = World::kernel();
    w.p.now = 7;
    assert_eq!(watchdog(&mut w, 0, 10), Ok(1));
    assert_eq!(w.dom.watchdogs[0], Some(10_000_000_007));
    assert_eq!(watchdog(&mut w, 0, 10), Ok(2));
    assert_eq!(watchdog(&mut w, 0, 10), E(Errno::ENOSPC));
    assert_eq!(watchdog(&mut w, 1, 20), Ok(0));
    assert_eq!(w.dom.watchdogs[0], Some(20_000_000_007));
    assert_eq!(watchdog(&mut w, 1, 0), Ok(0));
    assert_eq!(w.dom.watchdogs[0], None);
    assert_eq!(watchdog(&mut w, 1, 5), E(Errno::EINVAL), "destroyed");
    assert_eq!(watchdog(&mut w, 3, 5), E(Errno::EINVAL), "no such id");
}

fn remote_shutdown(w: &mut World, dom: u16, reason: u32) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &SchedRemoteShutdown {
            domain_id: DomId(dom),
            reason,
            ..Default::default()
        },
    );
    hc::sched_op(w, 4, ptr(KDATA))
}

#[test]
fn remote_shutdown_is_for_the_control_domain() {
    let mut w = two_domains();
    assert_eq!(remote_shutdown(&mut w, 2, 0), E(Errno::EPERM));
    let mut w = World::dom0();
    w.p.others
        .insert(2, crate::domain::Domain::new(DomId(2), false, Mfn(0x98)));
    assert_eq!(remote_shutdown(&mut w, 2, 1), Ok(0));
    assert_eq!(
        w.p.remote_shutdowns,
        vec![(DomId(2), ShutdownReason::Reboot)]
    );
    assert_eq!(remote_shutdown(&mut w, 3, 1), E(Errno::ESRCH));
    assert_eq!(remote_shutdown(&mut w, 2, 9), E(Errno::EINVAL));
    assert_eq!(remote_shutdown(&mut w, 0, 0), Ok(0));
    assert_eq!(w.outcome, Outcome::Shutdown(ShutdownReason::Poweroff));
}

// ---- timers and vcpu_op ---------------------------------------------------------------

#[test]
fn set_timer_op_arms_disarms_and_clamps() {
    let mut w = World::kernel();
    w.p.now = 1_000_000;
    assert_eq!(hc::set_timer_op(&mut w, 5_000_000), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, Some(5_000_000));
    assert_eq!(hc::set_timer_op(&mut w, 10), Ok(0));
    assert_eq!(
        w.vcpu.timers.singleshot,
        Some(10),
        "a past deadline fires at once"
    );
    assert_eq!(hc::set_timer_op(&mut w, 0), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, None);
    assert_eq!(hc::set_timer_op(&mut w, -1), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, Some(101_000_000));
    assert_eq!(hc::set_timer_op(&mut w, i64::MAX), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, Some(101_000_000));
    assert_eq!(w.p.timer_changes, 5);
}

#[test]
fn vcpu_op_checks_the_vcpu_first() {
    let mut w = World::kernel();
    assert_eq!(
        hc::vcpu_op(&mut w, 3, VcpuId(1), GuestPtr::NULL),
        E(Errno::ENOENT)
    );
    assert_eq!(
        hc::vcpu_op(&mut w, 99, VcpuId(1), GuestPtr::NULL),
        E(Errno::ENOENT)
    );
    assert_eq!(
        hc::vcpu_op(&mut w, 99, VcpuId(0), GuestPtr::NULL),
        E(Errno::ENOSYS)
    );
    assert_eq!(
        hc::vcpu_op(&mut w, 3, VcpuId(0), GuestPtr::NULL),
        Ok(1),
        "is_up"
    );
    assert_eq!(
        hc::vcpu_op(&mut w, 0, VcpuId(0), ptr(KDATA)),
        E(Errno::EEXIST)
    );
}

#[test]
fn periodic_timer_needs_at_least_a_millisecond() {
    let mut w = World::kernel();
    w.p.now = 100;
    let set = |w: &mut World, period_ns| {
        w.p.poke_obj(KDATA, &VcpuSetPeriodicTimer { period_ns });
        hc::vcpu_op(w, 6, VcpuId(0), ptr(KDATA))
    };
    assert_eq!(set(&mut w, 999_999), E(Errno::EINVAL));
    assert_eq!(set(&mut w, 2_000_000), Ok(0));
    assert_eq!(w.vcpu.timers.period, 2_000_000);
    assert_eq!(w.vcpu.timers.periodic_next, 2_000_100);
    assert_eq!(hc::vcpu_op(&mut w, 7, VcpuId(0), GuestPtr::NULL), Ok(0));
    assert_eq!(w.vcpu.timers.period, 0);
}

#[test]
fn singleshot_timer_is_set_and_stopped() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &VcpuSetSingleshotTimer {
            timeout_abs_ns: 77,
            flags: 1,
            _pad: 0,
        },
    );
    assert_eq!(hc::vcpu_op(&mut w, 8, VcpuId(0), ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, Some(77));
    assert_eq!(hc::vcpu_op(&mut w, 9, VcpuId(0), GuestPtr::NULL), Ok(0));
    assert_eq!(w.vcpu.timers.singleshot, None);
    assert_eq!(
        hc::vcpu_op(&mut w, 8, VcpuId(0), ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

#[test]
fn runstate_info_counts_time_in_each_state() {
    let mut w = World::kernel();
    w.vcpu
        .set_runstate(hypercall_abi::vcpu::RUNSTATE_RUNNABLE, 0);
    w.vcpu
        .set_runstate(hypercall_abi::vcpu::RUNSTATE_RUNNING, 30);
    w.p.now = 100;
    assert_eq!(hc::vcpu_op(&mut w, 4, VcpuId(0), ptr(KDATA)), Ok(0));
    let r: VcpuRunstateInfo = w.p.peek_obj(KDATA);
    assert_eq!(r.state, 0);
    assert_eq!(r.state_entry_time, 30);
    assert_eq!(r.time, [70, 30, 0, 0]);
    // A registered area gets the same at once.
    w.p.poke_obj(KDATA + 0x200, &(KDATA + 0x400));
    assert_eq!(hc::vcpu_op(&mut w, 5, VcpuId(0), ptr(KDATA + 0x200)), Ok(0));
    assert_eq!(w.p.peek_obj::<VcpuRunstateInfo>(KDATA + 0x400), r);
}

#[test]
fn timers_expire_as_xen_does() {
    let mut t = Timers::start_of_day(0);
    assert_eq!(t.next_deadline(true), Some(DEFAULT_PERIOD_NS));
    assert_eq!(t.next_deadline(false), None, "stopped while descheduled");
    assert_eq!(t.expire(DEFAULT_PERIOD_NS - 1, true), (false, false));
    assert_eq!(t.expire(DEFAULT_PERIOD_NS * 2, false), (false, false));
    // Three and a half periods late: one VIRQ, and the next expiry is in the future.
    assert_eq!(t.expire(DEFAULT_PERIOD_NS * 9 / 2, true), (true, false));
    assert_eq!(t.periodic_next, DEFAULT_PERIOD_NS * 5);
    assert!(!t.catch_up_periodic(DEFAULT_PERIOD_NS * 5 - 1));
    assert!(t.catch_up_periodic(DEFAULT_PERIOD_NS * 5));
    assert_eq!(t.periodic_next, DEFAULT_PERIOD_NS * 6);
    t.singleshot = Some(3);
    t.poll_timeout = Some(4);
    assert_eq!(t.next_deadline(true), Some(3));
    assert_eq!(t.expire(4, false), (true, true));
    assert_eq!((t.singleshot, t.poll_timeout), (None, None));
    t.period = 0;
    assert_eq!(t.next_deadline(true), None);
}

// ---- event delivery on the way out --------------------------------------------------------

#[test]
fn a_pending_unmasked_event_bounces_to_the_event_callback_and_masks() {
    let mut w = World::kernel();
    w.vcpu.callbacks.event.address = handler(7);
    w.p.upcall_pending.insert(0, true);
    let rsp = w.regs.rsp;
    let (delivered, _) = w.run(|c| c.deliver_events());
    assert!(delivered);
    assert_eq!(w.regs.rip, handler(7));
    assert_eq!(w.p.mask(0), 1);
    // rcx, r11, rip, cs (saved mask 0), rflags (IF), rsp, ss: no error code.
    let f = w.frame(7);
    assert_eq!(f[2], KRIP);
    assert_eq!(f[5], rsp);
    // Now masked: nothing more.
    let (again, _) = w.run(|c| c.deliver_events());
    assert!(!again);
}

#[test]
fn no_delivery_when_masked_or_without_a_callback() {
    let mut w = World::kernel();
    w.p.upcall_pending.insert(0, true);
    assert!(!w.run(|c| c.deliver_events()).0, "no callback");
    w.vcpu.callbacks.event.address = handler(7);
    w.p.set_upcall_mask_for_test(0, 1);
    assert!(!w.run(|c| c.deliver_events()).0, "masked");
    assert_eq!(w.regs.rip, KRIP);
}

// ---- register_vcpu_info ---------------------------------------------------------------

/// `VCPUOP_register_vcpu_info` for vCPU 0 with frame `mfn` at `offset`.
fn register_vcpu_info(w: &mut World, mfn: u64, offset: u32) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &VcpuRegisterVcpuInfo {
            mfn,
            offset,
            rsvd: 0,
        },
    );
    hc::vcpu_op(w, 10, VcpuId(0), ptr(KDATA))
}

#[test]
fn register_vcpu_info_moves_it_once_into_a_writable_frame_of_the_domain() {
    use crate::mm::frame_table::{Owner, PageType};
    let mut w = World::kernel();
    let (mine, theirs, table) = (Mfn(0x300), Mfn(0x301), Mfn(0x302));
    w.p.mm.ft.assign(mine, Owner::Domain(DomId(1))).unwrap();
    w.p.mm.ft.assign(theirs, Owner::Domain(DomId(2))).unwrap();
    w.p.mm.ft.assign(table, Owner::Domain(DomId(1))).unwrap();
    w.p.mm(DomId(1), false, |m| {
        crate::mm::page_type::get_page_and_type(m, table, DomId(1), PageType::L1).unwrap()
    });
    // 64 bytes must fit in the page, 8-byte aligned.
    assert_eq!(
        register_vcpu_info(&mut w, mine.0, 4096 - 56),
        Err(Errno::ENXIO)
    );
    assert_eq!(register_vcpu_info(&mut w, mine.0, 4), Err(Errno::ENXIO));
    assert_eq!(
        register_vcpu_info(&mut w, theirs.0, 0),
        Err(Errno::EINVAL),
        "not ours"
    );
    assert_eq!(
        register_vcpu_info(&mut w, table.0, 0),
        Err(Errno::EINVAL),
        "a page table"
    );
    assert_eq!(
        register_vcpu_info(&mut w, 0xF_FFFF, 0),
        Err(Errno::EINVAL),
        "no frame"
    );
    assert!(w.p.vcpu_info_moves.is_empty());
    assert_eq!(register_vcpu_info(&mut w, mine.0, 4096 - 64), Ok(0));
    assert_eq!(w.vcpu.vcpu_info_at, Some((mine, 4096 - 64)));
    assert_eq!(w.p.vcpu_info_moves, vec![(0, mine, 4096 - 64)]);
    assert!(
        w.p.upcall_pending(0),
        "everything is marked pending after the move"
    );
    let f = w.p.mm.ft.info(mine).unwrap();
    assert_eq!(f.page_type(), PageType::Writable);
    assert_eq!(f.type_count(), 1, "held until the domain is destroyed");
    // Once only.
    assert_eq!(register_vcpu_info(&mut w, mine.0, 0), Err(Errno::EINVAL));
    assert_eq!(w.p.vcpu_info_moves.len(), 1);
    // An unreadable argument.
    assert_eq!(
        hc::vcpu_op(&mut w, 10, VcpuId(0), ptr(UNMAPPED)),
        Err(Errno::EFAULT)
    );
}

// ---- register_vcpu_time_memory_area -----------------------------------------------------

/// `VCPUOP_register_vcpu_time_memory_area` for vCPU 0 at `addr`.
fn register_time_area(w: &mut World, addr: u64) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &hypercall_abi::vcpu::VcpuRegisterTimeMemoryArea { addr },
    );
    hc::vcpu_op(w, 13, VcpuId(0), ptr(KDATA))
}

/// Publishes `t` as vCPU 0's pvclock in frame `mfn` at byte `at` (its vcpu_info's
/// time field), as the hypervisor does.
fn publish(w: &mut World, mfn: Mfn, at: usize, t: &VcpuTimeInfo) {
    use crate::mm::page_type::MachineMemory;
    for (i, word) in t.as_bytes().chunks_exact(8).enumerate() {
        let v = u64::from_le_bytes(word.try_into().unwrap());
        w.p.mm.mem.write_entry(mfn, at / 8 + i, v);
    }
}

#[test]
fn register_vcpu_time_memory_area_copies_the_published_pvclock() {
    let mut w = World::kernel();
    let t = VcpuTimeInfo {
        version: 6,
        pad0: 0,
        tsc_timestamp: 0x1234_5678_9abc,
        system_time: 987_654_321,
        tsc_to_system_mul: 0x8000_0000,
        tsc_shift: -1,
        flags: 1,
        pad1: [0; 2],
    };
    // vCPU 0's vcpu_info is the first 64 bytes of shared_info; time at byte 32.
    let si = w.dom.shared_info;
    publish(&mut w, si, 32, &t);
    let area = KDATA + 0x800;
    w.p.poke_obj(area, &VcpuTimeInfo::default());
    assert_eq!(register_time_area(&mut w, area), Ok(0));
    assert_eq!(w.vcpu.time_area, area);
    assert_eq!(
        w.p.peek_obj::<VcpuTimeInfo>(area),
        t,
        "the same record and version"
    );

    // Where register_vcpu_info moved it, that copy is the one read.
    let moved = Mfn(0x310);
    w.vcpu.vcpu_info_at = Some((moved, 128));
    let t2 = VcpuTimeInfo {
        version: 10,
        system_time: 5,
        ..t
    };
    publish(&mut w, moved, 128 + 32, &t2);
    assert_eq!(register_time_area(&mut w, area), Ok(0));
    assert_eq!(w.p.peek_obj::<VcpuTimeInfo>(area), t2);
}

#[test]
fn register_vcpu_time_memory_area_bad_addresses_are_safe() {
    let mut w = World::kernel();
    // Not guest memory (the hypervisor's range, or wrapping): -EFAULT, nothing kept.
    for bad in [0xFFFF_8000_0000_0000, 0xFFFF_8010_0000_0000, u64::MAX - 8] {
        assert_eq!(
            register_time_area(&mut w, bad),
            E(Errno::EFAULT),
            "{bad:#x}"
        );
        assert_eq!(w.vcpu.time_area, 0);
    }
    // Guest memory that is not mapped: accepted as Xen does, the write just faults.
    assert_eq!(register_time_area(&mut w, UNMAPPED), Ok(0));
    assert_eq!(w.vcpu.time_area, UNMAPPED);
    // 0 unregisters.
    assert_eq!(register_time_area(&mut w, 0), Ok(0));
    assert_eq!(w.vcpu.time_area, 0);
    // An unreadable argument.
    assert_eq!(
        hc::vcpu_op(&mut w, 13, VcpuId(0), ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

#[test]
fn the_time_area_goes_odd_then_even_as_in_xen() {
    // write_time_area's three steps on a fake: the version alone (odd), then the
    // record, then the version again (even, the primary's).
    let mut w = World::kernel();
    let area = KDATA + 0x900;
    let t = VcpuTimeInfo {
        version: 4,
        system_time: 77,
        ..VcpuTimeInfo::default()
    };
    let mut write = |va, b: &[u8]| w.p.write_guest(va, b).is_ok();
    assert!(super::vcpu::write_time_area(&mut write, area, &t));
    assert!(!super::vcpu::write_time_area(&mut write, UNMAPPED, &t));
    assert_eq!(w.p.peek_obj::<VcpuTimeInfo>(area), t);
}

// ---- NMIs (VCPUOP_send_nmi) -------------------------------------------------------------

const SEND_NMI: u32 = 11;
const GET_PHYSID: u32 = 12;

fn vcpu_op(w: &mut World, cmd: u32, vcpu: u32, arg: u64) -> Result<u64, Errno> {
    hc::vcpu_op(w, cmd, VcpuId(vcpu), ptr(arg))
}

/// dom1 on vCPU 0 with an NMI handler at vector 2 (events masked on entry).
fn with_nmi_handler() -> World {
    let mut w = World::kernel();
    w.vcpu.traps[2] = hypercall_abi::xen::TrapInfo {
        vector: 2,
        flags: hypercall_abi::xen::arch::TI_DISABLE_EVENTS,
        cs: 0xE033,
        _pad: 0,
        address: handler(2),
    };
    w
}

#[test]
fn send_nmi_bounces_to_vector_2_and_the_next_waits_for_iret() {
    let mut w = with_nmi_handler();
    assert_eq!(
        vcpu_op(&mut w, SEND_NMI, 0, KDATA),
        E(Errno::EINVAL),
        "the argument must be NULL"
    );
    assert!(!w.vcpu.nmi_pending);
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 0, 0), Ok(0));
    assert!(w.vcpu.nmi_pending);
    let rsp = w.regs.rsp;
    assert!(
        !w.run(|c| c.deliver_events()).0,
        "no event, but the NMI went"
    );
    assert_eq!(w.regs.rip, handler(2));
    assert_eq!(w.p.mask(0), 1, "TI_DISABLE_EVENTS masks events");
    let f = w.frame(7);
    assert_eq!(
        (f[2], f[5]),
        (KRIP + 2, rsp),
        "rip and rsp of the interrupted code"
    );
    assert!(w.vcpu.nmi_masked && !w.vcpu.nmi_pending);

    // A second NMI waits while the first is handled, whatever else is delivered.
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 0, 0), Ok(0));
    let after_call = w.regs.rip;
    w.run(|c| c.deliver_events());
    assert!(w.vcpu.nmi_pending);
    assert_eq!(w.regs.rip, after_call, "no nested bounce");

    // `iret` ends the NMI: the pending one goes on the way out.
    let at = KSTACK_TOP - 0x400;
    let frame = hypercall_abi::xen::arch::IretContext {
        rip: KRIP,
        cs: 0xE030,
        rflags: 0x246,
        rsp,
        ss: 0xE02B,
        ..Default::default()
    };
    w.p.poke_obj(at, &frame);
    w.regs.rsp = at;
    let _ = hc::iret(&mut w);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert!(!w.vcpu.nmi_masked);
    w.run(|c| c.deliver_events());
    assert_eq!(w.regs.rip, handler(2));
    assert!(w.vcpu.nmi_masked && !w.vcpu.nmi_pending);
}

#[test]
fn an_nmi_without_a_handler_is_dropped() {
    let mut w = World::kernel();
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 0, 0), Ok(0));
    let rip = w.regs.rip;
    w.run(|c| c.deliver_events());
    assert_eq!(w.outcome, Outcome::Resume, "the domain goes on");
    assert_eq!(w.regs.rip, rip);
    assert!(!w.vcpu.nmi_pending && !w.vcpu.nmi_masked);
}

#[test]
fn send_nmi_to_a_sibling_marks_it_and_kicks_it_once() {
    let mut w = World::kernel();
    w.p.evtchn_self = 1;
    w.siblings.push(crate::vcpu::Vcpu::new(1, Mfn(0)));
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 2, 0), E(Errno::ENOENT));
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 1, 0), Ok(0));
    assert_eq!(vcpu_op(&mut w, SEND_NMI, 1, 0), Ok(0));
    assert!(w.siblings[0].nmi_pending && !w.vcpu.nmi_pending);
    let kicked: alloc::vec::Vec<_> = w.p.kicks.iter().map(|k| k.upcall).collect();
    assert_eq!(kicked, [Some(VcpuId(1))], "already pending: no second kick");
}

#[test]
fn get_physid_needs_a_pinned_vcpu_of_dom0() {
    let mut domu = World::kernel();
    domu.vcpu.affinity_hard = 1;
    assert_eq!(vcpu_op(&mut domu, GET_PHYSID, 0, KDATA), E(Errno::EINVAL));
    let mut w = World::dom0();
    assert_eq!(
        vcpu_op(&mut w, GET_PHYSID, 0, KDATA),
        E(Errno::EINVAL),
        "not pinned"
    );
    w.vcpu.affinity_hard = 0b100;
    assert_eq!(vcpu_op(&mut w, GET_PHYSID, 0, KDATA), Ok(0));
    // The test machine's CPU 0: APIC id 0x10, ACPI id 0.
    assert_eq!(w.p.peek_obj::<u64>(KDATA), 0x10);
    assert_eq!(vcpu_op(&mut w, GET_PHYSID, 0, UNMAPPED), E(Errno::EFAULT));
}
