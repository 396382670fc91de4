//! `clock`: the pvclock never goes back and runs at the HPET's rate, also across
//! the moment the hypervisor refines its TSC rate (a second after boot on
//! xen-like-hv, which then publishes every pvclock again; Xen 4.17 publishes it
//! again at every calibration and vCPU switch). For `ms=` (default 2500)
//! milliseconds the guest reads the raw pvclock in a loop (not the runtime's
//! monotonic `system_time_ns`, which would hide a step back), sleeping 1 ms every
//! 2000 reads so that timers fire, and counts the pvclock updates it sees. It
//! maps the HPET read-only as `hpet-ro` does and compares the pvclock time of the
//! last second with the HPET's: they agree within 0.05% (the boot-time rate
//! before a refinement may be further off; the whole run is printed too).
//!
//! It also registers a secondary copy of its pvclock
//! (`VCPUOP_register_vcpu_time_memory_area`, which Linux uses for its vDSO): an
//! address in the hypervisor's range is -EFAULT, an unmapped guest address is
//! accepted (the copy just cannot be written), and a good one holds the
//! published record at once and again at the end, after the refinement (its
//! version then the primary's).
//!
//! Result line: `clock: PASS ppm_last_s=<p> ppm_all=<q> updates=<n> area=same`.
#![no_std]
#![no_main]

use core::cell::UnsafeCell;

use pv_runtime::abi::hypercall::vcpu_op;
use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::types::Mfn;
use pv_runtime::abi::vcpu::{VcpuOp, VcpuRegisterTimeMemoryArea};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::xen::shared_info::VcpuTimeInfo;
use pv_runtime::abi::{Errno, VcpuId};
use pv_runtime::events::Millis;
use pv_runtime::hypercall::{handle, invoker};
use pv_runtime::{StartInfo, println, pt, sched, time};
use pv_test_guests::{SCRATCH_VA, arg_u64, check, expect, fail, l1_value, ok, read, uvm};

const NAME: &str = "clock";
/// The HPET's registers on QEMU's `pc` and `q35`.
const HPET: Mfn = Mfn(0xF_ED00);
/// Largest disagreement between the pvclock and the HPET over the last second, ppm.
const MAX_PPM: i64 = 500;

/// The secondary `vcpu_time_info` the hypervisor writes.
#[repr(C, align(64))]
struct Area(UnsafeCell<VcpuTimeInfo>);
// SAFETY: only the hypervisor writes it; the guest reads it volatile.
unsafe impl Sync for Area {}
static AREA: Area = Area(UnsafeCell::new(VcpuTimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad1: [0; 2],
}));

fn register_area(addr: u64) -> Result<u64, Errno> {
    let arg = VcpuRegisterTimeMemoryArea { addr };
    // SAFETY: the runtime installed the hypercall page; `arg` is a live local the
    // hypervisor only reads.
    let mut inv = unsafe { invoker() };
    vcpu_op(
        &mut inv,
        VcpuOp::RegisterVcpuTimeMemoryArea.nr(),
        VcpuId(0),
        handle(&arg).cast(),
    )
}

/// A consistent read of the secondary copy.
fn area() -> VcpuTimeInfo {
    let at = AREA.0.get();
    // SAFETY: `at` is the live static; every bit pattern is a VcpuTimeInfo.
    let version = || unsafe { core::ptr::addr_of!((*at).version).read_volatile() };
    loop {
        let v = version();
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        // SAFETY: as above.
        let t = unsafe { at.read_volatile() };
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        if v & 1 == 0 && version() == v {
            return t;
        }
        core::hint::spin_loop();
    }
}

/// The primary and the secondary copy read at one moment (the primary unchanged
/// around the secondary's read).
fn both() -> (VcpuTimeInfo, VcpuTimeInfo) {
    loop {
        let (p, _) = time::snapshot();
        let s = area();
        if time::snapshot().0 == p {
            return (p, s);
        }
    }
}

/// The secondary copy holds the primary's record.
fn area_is_the_pvclock(when: &str) {
    let (p, s) = both();
    if p != s {
        fail(
            NAME,
            format_args!("{when}: the registered time area holds {s:?}, the pvclock is {p:?}"),
        );
    }
}

/// How far `pv` ns is from `hpet` ns, in parts per million.
fn ppm(pv: u64, hpet: u64) -> i64 {
    let d = (i128::from(pv) - i128::from(hpet)) * 1_000_000 / i128::from(hpet.max(1));
    i64::try_from(d).unwrap_or(i64::MAX)
}

/// The raw pvclock: system time and the (tsc_timestamp, system_time) it came from.
fn pvclock() -> (u64, (u64, u64)) {
    let (t, tsc) = time::snapshot();
    (t.system_time_at(tsc), (t.tsc_timestamp, t.system_time))
}

fn main(_si: &'static StartInfo) {
    let ms = arg_u64(NAME, "ms", 2500);
    ok(NAME, "bind VIRQ_TIMER", time::timer_port());
    expect(
        NAME,
        "a time area in the hypervisor's range",
        register_area(0xFFFF_8000_0000_0000),
        Err(Errno::EFAULT),
    );
    expect(NAME, "an unmapped time area", register_area(0x1000), Ok(0));
    expect(
        NAME,
        "register_vcpu_time_memory_area",
        register_area(AREA.0.get() as u64),
        Ok(0),
    );
    area_is_the_pvclock("at registration");
    let before = l1_value(SCRATCH_VA);
    expect(
        NAME,
        "map the HPET read-only",
        uvm(SCRATCH_VA, pt::leaf(HPET, PteFlags::empty()), UVMF_INVLPG),
        Ok(0),
    );
    let period_fs = read(SCRATCH_VA) >> 32;
    check(
        NAME,
        period_fs > 0 && period_fs <= 100_000_000,
        format_args!("HPET period {period_fs} fs"),
    );
    let wide = read(SCRATCH_VA) & (1 << 13) != 0;
    let counter = || read(SCRATCH_VA + 0xF0);
    let hpet_ns = |from: u64, to: u64| {
        let ticks = if wide {
            to.wrapping_sub(from)
        } else {
            to.wrapping_sub(from) & 0xFFFF_FFFF
        };
        u64::try_from(u128::from(ticks) * u128::from(period_fs) / 1_000_000).unwrap_or(0)
    };

    // A pvclock reading and the HPET's at the same moment: the HPET read on both
    // sides, retried until they are close (a host may take the CPU away between).
    let pair = || {
        let mut best = (u64::MAX, 0, 0, (0, 0));
        for _ in 0..100 {
            let before = counter();
            let (pv, a) = pvclock();
            let after = counter();
            let gap = hpet_ns(before, after);
            if gap < best.0 {
                best = (gap, pv, before + (after.wrapping_sub(before)) / 2, a);
            }
            if gap < 20_000 {
                break;
            }
        }
        (best.1, best.2, best.3)
    };
    let (p0, h0, mut anchor) = pair();
    let end = p0 + ms * 1_000_000;
    let last_second = end.saturating_sub(1_000_000_000).max(p0);
    let mut mark = None;
    let mut last = p0;
    let mut updates = 0u32;
    let mut reads = 0u64;
    loop {
        let (now, a) = pvclock();
        if now < last {
            fail(
                NAME,
                format_args!("the pvclock went back {} ns (update {updates})", last - now),
            );
        }
        if a != anchor {
            updates += 1;
            anchor = a;
        }
        last = now;
        reads += 1;
        if mark.is_none() && now >= last_second {
            let (p, h, _) = pair();
            mark = Some((p, h));
        }
        if now >= end {
            break;
        }
        if reads % 2000 == 0 {
            ok(NAME, "sleep", time::sleep(1_000_000));
        }
    }
    let (p1, h1, _) = pair();
    // Once more off the CPU and back, then the copy must be the current record.
    ok(NAME, "sleep", time::sleep(1_000_000));
    area_is_the_pvclock("at the end");
    check(
        NAME,
        hpet_ns(h0, h1) > 0,
        format_args!("the HPET's counter does not run ({h0:#x} then {h1:#x})"),
    );
    let (pm, hm) = mark.unwrap_or((p0, h0));
    let last_s = ppm(p1 - pm, hpet_ns(hm, h1));
    let all = ppm(p1 - p0, hpet_ns(h0, h1));
    expect(
        NAME,
        "restoring the scratch entry",
        uvm(SCRATCH_VA, before, UVMF_INVLPG),
        Ok(0),
    );
    if last_s.abs() > MAX_PPM {
        fail(
            NAME,
            format_args!(
                "ppm_last_s={last_s} ppm_all={all} ({} ms of pvclock against {} ms of HPET)",
                Millis(p1 - pm),
                Millis(hpet_ns(hm, h1))
            ),
        );
    }
    println!("{NAME}: PASS ppm_last_s={last_s} ppm_all={all} updates={updates} area=same");
    sched::poweroff()
}

pv_runtime::entry!(main);
