//! `vcpu-info`: `VCPUOP_register_vcpu_info` as Xen 4.17 does it. An area
//! crossing the page or misaligned is -ENXIO; a page-table frame or a frame
//! that is not the domain's is -EINVAL; a good one copies the current
//! `vcpu_info` (mask, pvclock) into the frame and marks everything pending
//! there (`evtchn_upcall_pending` = 1, `evtchn_pending_sel` = all ones); a
//! second one is -EINVAL; and events are flagged in the new place only.
//!
//! Result line: `vcpu-info: PASS`.
#![no_std]
#![no_main]

use core::mem::{offset_of, size_of};

use pv_runtime::abi::hypercall::vcpu_op;
use pv_runtime::abi::vcpu::{VcpuOp, VcpuRegisterVcpuInfo};
use pv_runtime::abi::xen::shared_info::{VcpuInfo, VcpuTimeInfo};
use pv_runtime::abi::{Errno, Mfn, VcpuId};
use pv_runtime::hypercall::{handle, invoker};
use pv_runtime::{StartInfo, evtchn, mm, shared};
use pv_test_guests::{check, expect, fail, ok, pass};

const NAME: &str = "vcpu-info";
/// Where in the frame the new `vcpu_info` goes.
const OFFSET: u32 = 128;

fn register(mfn: Mfn, offset: u32) -> Result<u64, Errno> {
    let arg = VcpuRegisterVcpuInfo {
        mfn: mfn.0,
        offset,
        rsvd: 0,
    };
    // SAFETY: the runtime installed the hypercall page; `arg` is a live local
    // the hypervisor only reads. The runtime keeps reading shared_info's
    // vcpu_info afterwards, so this guest never enables events.
    let mut inv = unsafe { invoker() };
    vcpu_op(
        &mut inv,
        VcpuOp::RegisterVcpuInfo.nr(),
        VcpuId(0),
        handle(&arg).cast(),
    )
}

/// Reads the `vcpu_info` at [`OFFSET`] of `frame` (volatile: the hypervisor
/// writes it).
fn read_info(frame: mm::Frame) -> VcpuInfo {
    let r = mm::with_writable(frame, |page| {
        let p = page
            .as_ptr()
            .wrapping_add(OFFSET as usize)
            .cast::<VcpuInfo>();
        // SAFETY: OFFSET + size_of::<VcpuInfo>() lies within the page, and
        // OFFSET keeps it 8-byte aligned; every bit pattern is a VcpuInfo.
        unsafe { p.read_volatile() }
    });
    match r {
        Ok(v) => v,
        Err(e) => fail(NAME, format_args!("mapping the frame: {e:?}")),
    }
}

/// Clears `evtchn_upcall_pending` and `evtchn_pending_sel` at [`OFFSET`].
fn clear_flags(frame: mm::Frame) {
    let at = OFFSET as usize;
    let r = mm::with_writable(frame, |page| {
        page[at + offset_of!(VcpuInfo, evtchn_upcall_pending)] = 0;
        let sel = at + offset_of!(VcpuInfo, evtchn_pending_sel);
        page[sel..sel + 8].fill(0);
    });
    if let Err(e) = r {
        fail(NAME, format_args!("mapping the frame: {e:?}"));
    }
}

fn main(_si: &'static StartInfo) {
    evtchn::disable_events();
    if let Err(e) = mm::take_over() {
        fail(NAME, format_args!("take_over: {e}"));
    }
    let Some(frame) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let size = u32::try_from(size_of::<VcpuInfo>()).unwrap_or(u32::MAX);
    expect(
        NAME,
        "an area crossing the page",
        register(frame.mfn, 4096 - size + 8),
        Err(Errno::ENXIO),
    );
    expect(
        NAME,
        "a misaligned area",
        register(frame.mfn, 4),
        Err(Errno::ENXIO),
    );
    expect(
        NAME,
        "a page-table frame",
        register(mm::kernel_root(), 0),
        Err(Errno::EINVAL),
    );
    expect(
        NAME,
        "a frame that is not ours (MFN 0)",
        register(Mfn(0), 0),
        Err(Errno::EINVAL),
    );
    let before: VcpuTimeInfo = shared::vcpu_time(0);
    ok(NAME, "register_vcpu_info", register(frame.mfn, OFFSET));
    let moved = read_info(frame);
    expect(
        NAME,
        "upcall_pending after the move",
        moved.evtchn_upcall_pending,
        1,
    );
    expect(
        NAME,
        "pending_sel after the move",
        moved.evtchn_pending_sel,
        u64::MAX,
    );
    expect(NAME, "upcall_mask copied", moved.evtchn_upcall_mask, 1);
    expect(
        NAME,
        "pvclock tsc_to_system_mul copied",
        moved.time.tsc_to_system_mul,
        before.tsc_to_system_mul,
    );
    expect(
        NAME,
        "a second registration",
        register(frame.mfn, 0),
        Err(Errno::EINVAL),
    );

    // An event is now flagged in the new vcpu_info, not in shared_info's.
    let port = ok(NAME, "bind_ipi", evtchn::bind_ipi(VcpuId(0)));
    ok(NAME, "unmask", evtchn::unmask(port));
    evtchn::clear_pending(port);
    clear_flags(frame);
    shared::clear_upcall_pending(0);
    ok(NAME, "send", evtchn::send(port));
    let after = read_info(frame);
    expect(
        NAME,
        "upcall_pending after a send",
        after.evtchn_upcall_pending,
        1,
    );
    let word = 1u64 << (port.0 / 64);
    check(
        NAME,
        after.evtchn_pending_sel & word != 0,
        format_args!(
            "pending_sel {:#x} lacks word {} of port {}",
            after.evtchn_pending_sel,
            port.0 / 64,
            port.0
        ),
    );
    expect(
        NAME,
        "shared_info's old vcpu_info untouched",
        shared::upcall_pending(0),
        0,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
