//! `XEN_DOMCTL_iomem_permission` and `XEN_DOMCTL_ioport_permission`, with Xen
//! 4.17's checks and errnos (`common/domctl.c`, `arch/x86/domctl.c`).

use crate::domain::Domain;
use crate::iomem::{FrameRange, IoMem};
use crate::ioport::IoPorts;
use crate::testutil::*;
use hypercall_abi::Errno;
use hypercall_abi::domctl::*;
use hypercall_abi::hypercall as hc;
use hypercall_abi::types::{DomId, Mfn};

fn domctl<T: zerocopy::IntoBytes + zerocopy::Immutable>(
    w: &mut World,
    cmd: DomctlCmd,
    dom: u16,
    arg: &T,
) -> Result<u64, Errno> {
    w.p.poke_obj(KDATA, &Domctl::new(cmd, DomId(dom), arg));
    hc::domctl(w, ptr(KDATA))
}

fn iomem(first_mfn: u64, nr_mfns: u64, allow: bool) -> DomctlIomemPermission {
    DomctlIomemPermission {
        first_mfn,
        nr_mfns,
        allow_access: u8::from(allow),
        ..Default::default()
    }
}

fn ioport(first_port: u32, nr_ports: u32, allow: bool) -> DomctlIoportPermission {
    DomctlIoportPermission {
        first_port,
        nr_ports,
        allow_access: u8::from(allow),
        ..Default::default()
    }
}

/// dom0 with Xen's hardware-domain I/O memory (36-bit machine, local APIC at
/// 0xFEE00000, IO-APIC at 0xFEC00000) and a domU 1.
fn world() -> World {
    let mut w = World::dom0();
    let lapic = FrameRange {
        first: 0xFEE00,
        last: 0xFEE00,
    };
    let ioapic = FrameRange {
        first: 0xFEC00,
        last: 0xFEC00,
    };
    w.p.iomem
        .set(DomId(0), IoMem::hardware_domain(1 << 24, &[lapic, ioapic]))
        .unwrap();
    w.p.others
        .insert(1, Domain::new(DomId(1), false, Mfn(0x999)));
    w
}

#[test]
fn dom0_grants_and_revokes_io_memory() {
    let mut w = world();
    let bar = (0xFEBD0, 4);
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IomemPermission,
            1,
            &iomem(bar.0, bar.1, true)
        ),
        Ok(0)
    );
    assert!(w.p.iomem.permits(DomId(1), bar.0, bar.0 + 3));
    assert!(!w.p.iomem.permits(DomId(1), bar.0, bar.0 + 4));
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IomemPermission,
            1,
            &iomem(bar.0 + 1, 1, false)
        ),
        Ok(0)
    );
    assert!(!w.p.iomem.permits(DomId(1), bar.0 + 1, bar.0 + 1));
    assert!(w.p.iomem.permits(DomId(1), bar.0 + 2, bar.0 + 3));
    // Revoking from itself is allowed too.
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IomemPermission,
            0,
            &iomem(0xC0000, 1, false)
        ),
        Ok(0)
    );
    assert!(!w.p.iomem.permits(DomId(0), 0xC0000, 0xC0000));
}

#[test]
fn io_memory_checks_come_in_xens_order() {
    let mut w = world();
    // No such domain first.
    assert_eq!(
        domctl(&mut w, DomctlCmd::IomemPermission, 7, &iomem(0, 0, true)),
        Err(Errno::ESRCH)
    );
    // A wrapping range (nr_mfns 0 past frame 0 wraps backwards).
    assert_eq!(
        domctl(&mut w, DomctlCmd::IomemPermission, 1, &iomem(5, 0, true)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IomemPermission,
            1,
            &iomem(u64::MAX, 2, true)
        ),
        Err(Errno::EINVAL)
    );
    // nr_mfns 0 at frame 0 is 0..=u64::MAX: not the caller's.
    assert_eq!(
        domctl(&mut w, DomctlCmd::IomemPermission, 1, &iomem(0, 0, true)),
        Err(Errno::EPERM)
    );
    // The caller must hold it: not the local APIC, the IO-APIC, the MSI window.
    for mfn in [0xFEE00, 0xFEC00, 0xFEE80, 1 << 24] {
        assert_eq!(
            domctl(&mut w, DomctlCmd::IomemPermission, 1, &iomem(mfn, 1, true)),
            Err(Errno::EPERM),
            "{mfn:#x}"
        );
    }
    assert!(!w.p.iomem.has_any(DomId(1)));
}

#[test]
fn a_domu_cannot_grant_itself_anything() {
    let mut w = World::kernel();
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IomemPermission,
            1,
            &iomem(0xFEBD0, 1, true)
        ),
        Err(Errno::EPERM)
    );
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            1,
            &ioport(0x2F8, 8, true)
        ),
        Err(Errno::EPERM)
    );
    assert!(w.dom.ioports.ranges().is_empty());
}

#[test]
fn dom0_grants_and_revokes_ports() {
    let mut w = world();
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            1,
            &ioport(0x2F8, 8, true)
        ),
        Ok(0)
    );
    let d1 = &w.p.others[&1].ioports;
    assert!(d1.permits(0x2F8, 4) && d1.permits(0x2FF, 1) && !d1.permits(0x300, 1));
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            1,
            &ioport(0x2FC, 4, false)
        ),
        Ok(0)
    );
    let d1 = &w.p.others[&1].ioports;
    assert!(d1.permits(0x2F8, 4) && !d1.permits(0x2FC, 1));
    // dom0 on itself.
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            0,
            &ioport(0x2F8, 8, false)
        ),
        Ok(0)
    );
    assert!(!w.dom.ioports.permits(0x2F8, 1));
}

#[test]
fn port_checks_come_in_xens_order() {
    let mut w = world();
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            9,
            &ioport(0x2F8, 8, true)
        ),
        Err(Errno::ESRCH)
    );
    for (fp, np) in [(0x2F8, 0), (0xFFFF, 2), (0x1_0000, 1), (u32::MAX, 2)] {
        assert_eq!(
            domctl(
                &mut w,
                DomctlCmd::IoportPermission,
                1,
                &ioport(fp, np, true)
            ),
            Err(Errno::EINVAL),
            "{fp:#x}+{np}"
        );
    }
    // Ports dom0 does not hold itself: the PIC, COM1, configuration data.
    for (fp, np) in [(0x20, 2), (0x3F8, 8), (0xCFC, 4), (0x3F0, 16)] {
        assert_eq!(
            domctl(
                &mut w,
                DomctlCmd::IoportPermission,
                1,
                &ioport(fp, np, true)
            ),
            Err(Errno::EPERM),
            "{fp:#x}+{np}"
        );
    }
    assert_eq!(w.p.others[&1].ioports, IoPorts::none());
    assert_eq!(
        domctl(
            &mut w,
            DomctlCmd::IoportPermission,
            1,
            &ioport(0xFFFF, 1, true)
        ),
        Ok(0),
        "the last port"
    );
}
