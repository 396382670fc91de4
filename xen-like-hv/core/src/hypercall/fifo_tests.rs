//! The FIFO event-channel ops through `event_channel_op`, as a guest issues them:
//! every argument error in Xen 4.17's order and with its errno, then -EOPNOTSUPP for
//! a request Xen would have carried out (`docs/evtchn.md`).

use super::*;
use crate::mm::Mfn;
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::page_type::get_page_and_type;
use crate::testutil::*;
use hypercall_abi::evtchn::{
    EvtchnAllocUnbound, EvtchnExpandArray, EvtchnInitControl, EvtchnSetPriority,
};
use hypercall_abi::hypercall as hc;
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};

const INIT_CONTROL: u32 = 11;
const EXPAND_ARRAY: u32 = 12;
const SET_PRIORITY: u32 = 13;

/// Frames of the test world: one of dom1's, one of dom2's, one of dom1's that is an
/// L1 page table, one shared with dom1 by the hypervisor, one of the hypervisor's.
const MINE: Mfn = Mfn(0x300);
const THEIRS: Mfn = Mfn(0x301);
const TABLE: Mfn = Mfn(0x302);
const SHARED: Mfn = Mfn(0x303);
const XENS: Mfn = Mfn(0x304);

/// dom1 (current, one vCPU, event channels) with the frames above.
fn world() -> World {
    let mut w = World::kernel();
    w.p.evtchn.add(1);
    w.p.evtchn_self = 1;
    w.p.mm.ft.assign(MINE, Owner::Domain(DomId(1))).unwrap();
    w.p.mm.ft.assign(THEIRS, Owner::Domain(DomId(2))).unwrap();
    w.p.mm.ft.assign(TABLE, Owner::Domain(DomId(1))).unwrap();
    w.p.mm
        .ft
        .assign(SHARED, Owner::XenShared(DomId(1)))
        .unwrap();
    w.p.mm.ft.assign(XENS, Owner::Xen).unwrap();
    w.p.mm(DomId(1), false, |m| {
        get_page_and_type(m, TABLE, DomId(1), PageType::L1).unwrap()
    });
    w
}

fn init_control(w: &mut World, gfn: u64, offset: u32, vcpu: u32) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &EvtchnInitControl {
            control_gfn: gfn,
            offset,
            vcpu: VcpuId(vcpu),
            link_bits: 0xEE,
            _pad: [0xEE; 7],
        },
    );
    hc::event_channel_op(w, INIT_CONTROL, ptr(KDATA))
}

/// The frame's (page type, type count, general count).
fn counts(w: &World, mfn: Mfn) -> (PageType, u64, u64) {
    let f = w.p.mm.ft.info(mfn).unwrap();
    (
        f.page_type(),
        u64::from(f.type_count()),
        u64::from(f.count()),
    )
}

#[test]
fn init_control_checks_vcpu_then_offset_then_alignment_then_frame() {
    let mut w = world();
    // Each error wins over every later one: a bad vCPU with every other field bad
    // too, an offset past the page with a misaligned value and a bad frame, ...
    assert_eq!(init_control(&mut w, 0xF_FFFF, 4095, 1), E(Errno::ENOENT));
    assert_eq!(init_control(&mut w, MINE.0, 0, 1), E(Errno::ENOENT));
    assert_eq!(init_control(&mut w, MINE.0, 0, u32::MAX), E(Errno::ENOENT));
    assert_eq!(init_control(&mut w, 0xF_FFFF, 4095, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, 4032, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, u32::MAX, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, 4, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, 4020, 0), E(Errno::EINVAL));
    for bad in [THEIRS.0, TABLE.0, XENS.0, 0xF_FFFF, u64::MAX] {
        assert_eq!(
            init_control(&mut w, bad, 0, 0),
            E(Errno::EINVAL),
            "frame {bad:#x}"
        );
    }
    // Every argument good: refused as a Xen without FIFO refuses, nothing written
    // back (Xen copies `link_bits` out only on success).
    for offset in [0, 8, 4024] {
        assert_eq!(
            init_control(&mut w, MINE.0, offset, 0),
            E(Errno::EOPNOTSUPP)
        );
    }
    let back = w.p.peek_obj::<EvtchnInitControl>(KDATA);
    assert_eq!((back.link_bits, back._pad), (0xEE, [0xEE; 7]));
    // A page the hypervisor shares with the domain can be writable memory, as
    // shared_info can on Xen.
    assert_eq!(init_control(&mut w, SHARED.0, 0, 0), E(Errno::EOPNOTSUPP));
}

#[test]
fn the_error_tests_tell_each_check_apart() {
    // Guards against the test above passing because everything is EINVAL: the same
    // good frame and offset differ only in the one field under test.
    let mut w = world();
    assert_eq!(init_control(&mut w, MINE.0, 8, 0), E(Errno::EOPNOTSUPP));
    assert_eq!(init_control(&mut w, MINE.0, 12, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, 4024 + 8, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, TABLE.0, 8, 0), E(Errno::EINVAL));
    assert_eq!(init_control(&mut w, MINE.0, 8, 1), E(Errno::ENOENT));
}

#[test]
fn init_control_keeps_no_reference_on_the_frame() {
    let mut w = world();
    let before = counts(&w, MINE);
    assert_eq!(before, (PageType::None, 0, 0));
    assert_eq!(init_control(&mut w, MINE.0, 0, 0), E(Errno::EOPNOTSUPP));
    let (_, tc, c) = counts(&w, MINE);
    assert_eq!((tc, c), (0, 0), "references dropped again");
    // The page table is untouched by the refused attempt.
    let table = counts(&w, TABLE);
    assert_eq!(init_control(&mut w, TABLE.0, 0, 0), E(Errno::EINVAL));
    assert_eq!(counts(&w, TABLE), table);
    assert_eq!(table.0, PageType::L1);
    // Once the domain holds a writable reference of its own, the check adds and
    // drops one more and leaves the domain's alone.
    w.p.mm(DomId(1), false, |m| {
        get_page_and_type(m, MINE, DomId(1), PageType::Writable).unwrap()
    });
    let held = counts(&w, MINE);
    assert_eq!(held, (PageType::Writable, 1, 1));
    assert_eq!(init_control(&mut w, MINE.0, 0, 0), E(Errno::EOPNOTSUPP));
    assert_eq!(counts(&w, MINE), held);
}

#[test]
fn init_control_argument_must_be_readable() {
    let mut w = world();
    assert_eq!(
        hc::event_channel_op(&mut w, INIT_CONTROL, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

#[test]
fn expand_array_is_refused_after_the_copy_whatever_the_frame() {
    let mut w = world();
    assert_eq!(
        hc::event_channel_op(&mut w, EXPAND_ARRAY, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
    for gfn in [MINE.0, TABLE.0, u64::MAX] {
        w.p.poke_obj(KDATA, &EvtchnExpandArray { array_gfn: gfn });
        assert_eq!(
            hc::event_channel_op(&mut w, EXPAND_ARRAY, ptr(KDATA)),
            E(Errno::EOPNOTSUPP)
        );
    }
    // Also once init_control was attempted with good arguments.
    assert_eq!(init_control(&mut w, MINE.0, 0, 0), E(Errno::EOPNOTSUPP));
    w.p.poke_obj(KDATA, &EvtchnExpandArray { array_gfn: MINE.0 });
    assert_eq!(
        hc::event_channel_op(&mut w, EXPAND_ARRAY, ptr(KDATA)),
        E(Errno::EOPNOTSUPP)
    );
}

fn set_priority(w: &mut World, port: u32, priority: u32) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &EvtchnSetPriority {
            port: EvtchnPort(port),
            priority,
        },
    );
    hc::event_channel_op(w, SET_PRIORITY, ptr(KDATA))
}

#[test]
fn set_priority_checks_the_port_but_not_the_priority() {
    let mut w = world();
    assert_eq!(
        hc::event_channel_op(&mut w, SET_PRIORITY, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
    // Ports 0-63 are valid from the start (one bucket); 64 is not.
    assert_eq!(set_priority(&mut w, 64, 7), E(Errno::EINVAL));
    assert_eq!(set_priority(&mut w, u32::MAX, 99), E(Errno::EINVAL));
    // A valid port, bound or not, reaches the port op a 2-level domain lacks: the
    // priority is never looked at.
    for (port, prio) in [(0, 7), (5, 0), (5, 15), (5, 16), (5, u32::MAX)] {
        assert_eq!(
            set_priority(&mut w, port, prio),
            E(Errno::ENOSYS),
            "port {port} priority {prio}"
        );
    }
    w.p.poke_obj(
        KDATA,
        &EvtchnAllocUnbound {
            dom: DomId::SELF,
            remote_dom: DomId::SELF,
            port: EvtchnPort(0),
        },
    );
    assert_eq!(hc::event_channel_op(&mut w, 6, ptr(KDATA)), Ok(0));
    let port = w.p.peek_obj::<EvtchnAllocUnbound>(KDATA).port;
    assert_eq!(set_priority(&mut w, port.0, 99), E(Errno::ENOSYS));
}
