//! Grant tables on xen-like-hv (docs/gnttab.md): the `gnttab` guest as dom0 (the
//! same guest passes on real Xen 4.17, tests/tests/xen_fidelity.rs), two domUs
//! created with dom0ctl sharing pages and copying 1 MiB, torn down in both orders
//! with every frame back, and a hostile domU beside a neighbour.

use std::time::{Duration, Instant};

use xlhv_tests::{ControlHost, QemuExit, boot_dom0, scratch, test_guest};

/// Every answer of the `gnttab` guest is Xen 4.17's.
#[test]
fn gnttab_guest_gets_xens_answers() {
    let b = boot_dom0("gnttab", &test_guest("gnttab"));
    b.line("(d0) gnttab: PASS");
    b.no_line("gnttab: FAIL");
    b.exited(QemuExit::Poweroff);
    b.line("all of dom0's frames are back");
    b.no_line("frames leaked");
}
