//! `evtchn-errors`: the error numbers of event-channel and related calls,
//! as Xen 4.17 gives them: `SCHEDOP_poll` with a port outside the port
//! space or more than 128 ports (-EINVAL), send on a free port (-EINVAL),
//! closing a port twice (-EINVAL), unmasking a port outside the port space
//! (-EINVAL), binding `VIRQ_TIMER` twice (-EEXIST), a nonexistent vCPU in
//! `bind_virq`, `bind_ipi` and `vcpu_op` (-ENOENT), and `alloc_unbound`
//! until the port space is exhausted (-ENOSPC; the count is printed and
//! must be plausible for the 2-level ABI's 4096 ports).
//!
//! FIFO ABI, each argument error in Xen 4.17's order (every other field
//! good, so only the field under test can fail): `init_control` with an
//! unreadable argument (-EFAULT), a nonexistent vCPU (-ENOENT, also with
//! every other field bad), a control block crossing the page or misaligned
//! (-EINVAL), a page-table frame, a frame that is not ours, a frame that
//! does not exist (-EINVAL); `expand_array` before FIFO is set up
//! (-EOPNOTSUPP); `set_priority` on a port outside the port space (-EINVAL)
//! and, with a 2-level domain, on a valid port with a bad priority (-ENOSYS:
//! the priority is never looked at). Last, a fully valid `init_control`:
//! Xen 4.17 carries it out (the domain switches to FIFO, the call returns
//! the link width 17), xen-like-hv, which does not offer FIFO, refuses it
//! with -EOPNOTSUPP. The result line says which happened.
//!
//! Result line: `evtchn-errors: PASS ports=<allocated before ENOSPC>
//! fifo=<EOPNOTSUPP | on link_bits=N>`.
#![no_std]
#![no_main]

use core::fmt;

use pv_runtime::abi::evtchn::{EVTCHN_2L_NR_CHANNELS, EvtchnOp, Virq};
use pv_runtime::abi::hypercall::event_channel_op;
use pv_runtime::abi::sched::SCHEDOP_POLL_MAX_PORTS;
use pv_runtime::abi::{DomId, Errno, EvtchnPort, GuestPtr, Mfn, VcpuId};
use pv_runtime::hypercall::invoker;
use pv_runtime::{StartInfo, evtchn, mm, println, sched, time, vcpu};
use pv_test_guests::{check, fail, ok};

const NAME: &str = "evtchn-errors";

/// A vCPU id no domain here has.
const NO_VCPU: VcpuId = VcpuId(100);

/// An address in the hypervisor's half (Xen's direct map), which no guest
/// may hand to a hypercall.
const HYPERVISOR_VA: u64 = 0xFFFF_8300_0000_0000;

/// A machine frame far beyond any RAM of these machines.
const NO_FRAME: Mfn = Mfn(1 << 40);

/// The FIFO ops' argument errors, in Xen 4.17's order. `good` is a frame
/// of ours that can be writable memory.
fn fifo_errors(good: Mfn, bound: EvtchnPort) {
    let ic = evtchn::init_control;
    // SAFETY: the runtime installed the hypercall page; the argument
    // address is one the hypervisor must refuse to read.
    let mut inv = unsafe { invoker() };
    want(
        "init_control with its argument in the hypervisor's half",
        event_channel_op(
            &mut inv,
            EvtchnOp::InitControl.nr(),
            GuestPtr::new(HYPERVISOR_VA),
        ),
        Errno::EFAULT,
    );
    want(
        "init_control(vcpu 100)",
        ic(good, 0, NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "init_control(vcpu 100, offset 4095, no such frame)",
        ic(NO_FRAME, 4095, NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "init_control(offset 4032: crosses the page)",
        ic(good, 4032, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "init_control(offset 4: misaligned)",
        ic(good, 4, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "init_control(offset 4020: misaligned, fits)",
        ic(good, 4020, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "init_control(a page-table frame)",
        ic(mm::kernel_root(), 0, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "init_control(MFN 0: not ours)",
        ic(Mfn(0), 0, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "init_control(no such frame)",
        ic(NO_FRAME, 0, VcpuId(0)),
        Errno::EINVAL,
    );
    want(
        "expand_array before init_control",
        evtchn::expand_array(good),
        Errno::EOPNOTSUPP,
    );
    want(
        "set_priority(port 4096)",
        evtchn::set_priority(EvtchnPort(EVTCHN_2L_NR_CHANNELS), 7),
        Errno::EINVAL,
    );
    want(
        "set_priority(bound port, priority 16) under 2-level",
        evtchn::set_priority(bound, 16),
        Errno::ENOSYS,
    );
}

fn want<T: fmt::Debug>(what: &str, got: Result<T, Errno>, errno: Errno) {
    match got {
        Err(e) if e == errno => {}
        other => fail(
            NAME,
            format_args!("{what}: got {other:?}, expected {errno:?}"),
        ),
    }
}

fn main(_si: &'static StartInfo) {
    evtchn::disable_events();
    let soon = || time::system_time_ns() + 50_000_000;

    // SCHEDOP_poll: ports outside the port space, and too many ports. (A
    // short timeout keeps a wrong "success" from hanging.)
    want(
        "SCHEDOP_poll on port 4096",
        sched::poll(&[EvtchnPort(EVTCHN_2L_NR_CHANNELS)], soon()),
        Errno::EINVAL,
    );
    want(
        "SCHEDOP_poll on port 0xffffffff",
        sched::poll(&[EvtchnPort(u32::MAX)], soon()),
        Errno::EINVAL,
    );
    let many = [EvtchnPort(u32::MAX); SCHEDOP_POLL_MAX_PORTS as usize + 1];
    want(
        "SCHEDOP_poll on 129 ports",
        sched::poll(&many, soon()),
        Errno::EINVAL,
    );

    // Free ports: send and a second close fail.
    let p = ok(NAME, "alloc_unbound", evtchn::alloc_unbound(DomId::SELF));
    ok(NAME, "close(unbound)", evtchn::close(p));
    want("close of a closed port", evtchn::close(p), Errno::EINVAL);
    want("send on a free port", evtchn::send(p), Errno::EINVAL);
    want(
        "EVTCHNOP_unmask on port 4096",
        evtchn::unmask(EvtchnPort(EVTCHN_2L_NR_CHANNELS)),
        Errno::EINVAL,
    );

    // VIRQ_TIMER twice.
    let tp = ok(NAME, "bind_virq(VIRQ_TIMER)", time::timer_port());
    want(
        "second bind_virq(VIRQ_TIMER)",
        evtchn::bind_virq(Virq::Timer, VcpuId(0)),
        Errno::EEXIST,
    );

    // Nonexistent vCPU.
    want(
        "bind_virq(VIRQ_DEBUG, vcpu 100)",
        evtchn::bind_virq(Virq::Debug, NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "bind_ipi(vcpu 100)",
        evtchn::bind_ipi(NO_VCPU),
        Errno::ENOENT,
    );
    want(
        "VCPUOP_get_runstate_info(vcpu 100)",
        vcpu::runstate(NO_VCPU),
        Errno::ENOENT,
    );

    let Some(control) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    fifo_errors(control.mfn, tp);

    // Exhaust the port space.
    let mut mine = [0u64; (EVTCHN_2L_NR_CHANNELS / 64) as usize];
    let mut count = 0u32;
    let err = loop {
        match evtchn::alloc_unbound(DomId::SELF) {
            Ok(port) => {
                count += 1;
                match mine.get_mut((port.0 / 64) as usize) {
                    Some(w) => *w |= 1 << (port.0 % 64),
                    None => fail(NAME, format_args!("alloc_unbound gave port {}", port.0)),
                }
                if count > EVTCHN_2L_NR_CHANNELS {
                    fail(NAME, format_args!("more than {count} ports allocated"));
                }
            }
            Err(e) => break e,
        }
    };
    if err != Errno::ENOSPC {
        fail(
            NAME,
            format_args!("alloc_unbound after {count} ports: {err:?}, expected ENOSPC"),
        );
    }
    // Port 0 is reserved; the timer port and the runtime's own are taken.
    check(
        NAME,
        (1000..EVTCHN_2L_NR_CHANNELS - 1).contains(&count),
        format_args!("ENOSPC after {count} ports"),
    );
    for (w, bits) in (0u32..).zip(mine.iter()) {
        for b in (0..64u32).filter(|b| bits & (1 << b) != 0) {
            ok(NAME, "close", evtchn::close(EvtchnPort(w * 64 + b)));
        }
    }
    ok(
        NAME,
        "alloc_unbound after closing all",
        evtchn::alloc_unbound(DomId::SELF),
    );
    // Last, since on Xen it switches this domain to FIFO delivery (which
    // this runtime does not speak; events stay disabled from here on).
    match evtchn::init_control(control.mfn, 0, VcpuId(0)) {
        Err(Errno::EOPNOTSUPP) => println!("{NAME}: PASS ports={count} fifo=EOPNOTSUPP"),
        Ok(bits) => println!("{NAME}: PASS ports={count} fifo=on link_bits={bits}"),
        Err(e) => fail(
            NAME,
            format_args!("a valid init_control: {e:?}, expected success or EOPNOTSUPP"),
        ),
    }
    sched::poweroff()
}

pv_runtime::entry!(main);
