//! Unit tests of the generated table, dispatch and wrappers.

use super::*;
use crate::xen::MulticallEntry;

#[test]
fn arg_regs_are_xens() {
    // xen.h / the PV64 entry code: rdi, rsi, rdx, r10, r8 (never r9).
    assert_eq!(ARG_REGS, ["rdi", "rsi", "rdx", "r10", "r8"]);
}

#[test]
fn table_is_consistent() {
    let mut last = None;
    for d in HYPERCALLS {
        let hc = Hypercall::from_nr(u64::from(d.nr)).unwrap();
        assert_eq!(hc.nr(), d.nr);
        assert_eq!(hc.name(), d.name);
        assert_eq!(hc.desc(), d);
        assert_eq!(hc.arg_count(), d.args.len());
        assert_eq!(d.args.len(), d.arg_types.len());
        assert!(d.args.len() <= 5);
        assert!(u64::from(d.nr) < NR_HYPERCALLS);
        assert!(last < Some(d.nr), "rows in number order");
        last = Some(d.nr);
    }
    for nr in [11, 43, 47, 50, 63, 64, 1000, u64::MAX] {
        assert_eq!(Hypercall::from_nr(nr), None);
    }
}

#[test]
fn interface_versions() {
    let old = 0x0003_0100;
    assert_eq!(
        Hypercall::SchedOp.for_interface(old),
        Some(Hypercall::SchedOpCompat)
    );
    assert_eq!(
        Hypercall::SchedOp.for_interface(0x0003_0101),
        Some(Hypercall::SchedOp)
    );
    assert_eq!(
        Hypercall::EventChannelOp.for_interface(0x0003_0201),
        Some(Hypercall::EventChannelOpCompat)
    );
    assert_eq!(
        Hypercall::PhysdevOp.for_interface(INTERFACE_VERSION),
        Some(Hypercall::PhysdevOp)
    );
    assert_eq!(
        Hypercall::XenVersion.for_interface(0),
        Some(Hypercall::XenVersion)
    );
    assert!(Hypercall::SchedOpCompat.is_legacy());
    assert!(Hypercall::EventChannelOpCompat.is_legacy());
    assert!(Hypercall::PhysdevOpCompat.is_legacy());
    assert!(!Hypercall::SchedOp.is_legacy());
    assert_eq!(
        Hypercall::SchedOpCompat.superseded_by(),
        Some(Hypercall::SchedOp)
    );
    assert!(Hypercall::SchedOp.available_in(INTERFACE_VERSION));
    assert!(!Hypercall::SchedOp.available_in(old));
}

/// A handler that wires nothing.
struct Nothing;

impl HypercallHandler for Nothing {
    type Error = Errno;
}

#[test]
fn unknown_and_unwired_are_enosys() {
    let enosys = Errno::ENOSYS.encode();
    for nr in 0..200 {
        assert_eq!(
            dispatch(&mut Nothing, nr, [1, 2, 3, 4, 5]),
            enosys,
            "nr {nr}"
        );
    }
    assert_eq!(dispatch(&mut Nothing, u64::MAX, [0; 5]), enosys);
}

#[test]
fn call_images() {
    let c = call::update_va_mapping_otherdomain(0x1000, 0x8000_0000_0000_0067, 2, DomId(7));
    assert_eq!(
        c,
        Call {
            nr: 22,
            args: [0x1000, 0x8000_0000_0000_0067, 2, 7, 0]
        }
    );
    // `int` arguments are sign-extended, as a C caller's `(long)` cast does.
    assert_eq!(call::fpu_taskswitch(-1).args[0], u64::MAX);
    assert_eq!(
        call::iret(),
        Call {
            nr: 23,
            args: [0; 5]
        }
    );
    let e = MulticallEntry::new(call::xen_version(0, GuestPtr::NULL));
    assert_eq!(e.op, 17);
    assert_eq!(e.regs(), [0; 5]);
}
