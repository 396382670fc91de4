//! Time from the pvclock in shared_info (ABI digest §4.2, §4.3).
//!
//! [`system_time_ns`] is nanoseconds since the hypervisor booted: it reads
//! `vcpu_info[0].time` with the seqlock protocol, takes the TSC inside the
//! same consistent window and scales the delta with Xen's formula. It never
//! goes backwards, even across the hypervisor's periodic recalibrations.
//! [`wallclock`] adds the `wc_*` base.

use core::arch::x86_64::_rdtsc;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::Errno;
use hypercall_abi::hypercall::set_timer_op;
use hypercall_abi::xen::VcpuTimeInfo;
use pv_runtime_core::time::{WallClock, seqlock_read};

use crate::shared;

static LAST: AtomicU64 = AtomicU64::new(0);

fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no memory effects; PV guests may execute it.
    #[allow(unused_unsafe)]
    unsafe {
        _rdtsc()
    }
}

/// A consistent snapshot of vCPU 0's `vcpu_time_info` and the TSC read
/// inside it.
pub fn snapshot() -> (VcpuTimeInfo, u64) {
    seqlock_read(
        || shared::vcpu_time_version(0),
        || (shared::vcpu_time(0), rdtsc()),
    )
}

/// Monotonic nanoseconds since the hypervisor booted (0 before shared_info
/// is mapped).
pub fn system_time_ns() -> u64 {
    if !shared::is_mapped() {
        return 0;
    }
    let (t, tsc) = snapshot();
    let now = t.system_time_at(tsc);
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// The TSC frequency implied by the pvclock scale, in Hz.
pub fn tsc_hz() -> Option<u64> {
    let (t, _) = snapshot();
    if t.tsc_to_system_mul == 0 {
        return None;
    }
    let hz = (1_000_000_000u64 << 32) / u64::from(t.tsc_to_system_mul);
    let shift = u32::from(t.tsc_shift.unsigned_abs());
    Some(if t.tsc_shift >= 0 {
        hz >> shift
    } else {
        hz << shift
    })
}

/// The wall clock now.
pub fn wallclock() -> WallClock {
    let (_, sec, sec_hi, nsec) = seqlock_read(shared::wc_version, shared::wallclock_fields);
    WallClock::from_shared_info(sec, sec_hi, nsec, system_time_ns())
}

/// Arm the one-shot timer (`set_timer_op`): `VIRQ_TIMER` fires at system
/// time `deadline_ns`; 0 cancels.
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    let deadline = i64::try_from(deadline_ns).unwrap_or(i64::MAX);
    set_timer_op(&mut crate::hypercall::hc(), deadline).map(drop)
}
