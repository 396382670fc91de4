//! `pirq-domu`: an unprivileged domain reaches no device interrupt, and is told so
//! with Xen 4.17's errno: `map_pirq` and `setup_gsi` need the control domain
//! (-EPERM), a pirq it was not given cannot be bound (-EPERM, -EINVAL beyond its 56
//! pirqs on QEMU's 24 GSIs), there is nothing to EOI (-EINVAL), and
//! `irq_status_query` answers `needs_eoi` for any pirq in range, as on Xen. An MSI or
//! MSI-X `map_pirq` and `unmap_pirq` need the control domain too (-EPERM).
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::abi::Errno;
use pv_runtime::abi::physdev::XENIRQSTAT_NEEDS_EOI;
use pv_runtime::{evtchn, physdev};
use pv_test_guests::{fail, pass};

const NAME: &str = "pirq-domu";

fn expect<T: core::fmt::Debug>(what: &str, got: Result<T, Errno>, want: Errno) {
    match got {
        Err(e) if e == want => {}
        other => fail(NAME, format_args!("{what}: {other:?}, want {want:?}")),
    }
}

fn main(_si: &'static StartInfo) {
    expect(
        "map_pirq(GSI 3, pirq 3)",
        physdev::map_pirq_gsi(3, Some(3)),
        Errno::EPERM,
    );
    expect(
        "map_pirq(GSI 3, any)",
        physdev::map_pirq_gsi(3, None),
        Errno::EPERM,
    );
    expect(
        "map_pirq(MSI-X entry 0 of 00:04.0)",
        physdev::map_pirq_msi(0, 4 << 3, 0, 0xFEBF_1000),
        Errno::EPERM,
    );
    expect(
        "map_pirq(MSI of 00:04.0)",
        physdev::map_pirq_msi(0, 4 << 3, 0, 0),
        Errno::EPERM,
    );
    expect("unmap_pirq(3)", physdev::unmap_pirq(3), Errno::EPERM);
    expect(
        "setup_gsi(3)",
        physdev::setup_gsi(3, true, false),
        Errno::EPERM,
    );
    expect("bind_pirq(3)", evtchn::bind_pirq(3, false), Errno::EPERM);
    expect(
        "bind_pirq(3, share)",
        evtchn::bind_pirq(3, true),
        Errno::EPERM,
    );
    expect("bind_pirq(56)", evtchn::bind_pirq(56, false), Errno::EINVAL);
    expect("eoi(3)", physdev::eoi(3), Errno::EINVAL);
    expect("eoi(56)", physdev::eoi(56), Errno::EINVAL);
    match physdev::irq_status_query(3) {
        Ok(XENIRQSTAT_NEEDS_EOI) => {}
        other => fail(NAME, format_args!("irq_status_query(3): {other:?}")),
    }
    expect(
        "irq_status_query(56)",
        physdev::irq_status_query(56),
        Errno::EINVAL,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
