//! The shared_info page (`xen.h`, `arch-x86/xen*.h`).
//!
//! One page per domain, owned by the hypervisor and mapped by the guest
//! (`update_va_mapping(va, start_info.shared_info | P | RW, ...)`). Both sides
//! write parts of it concurrently, so real code accesses it with atomics at
//! the offsets these layouts define; the structs here fix those offsets.
//!
//! Time: [`VcpuTimeInfo`] is a seqlock. The hypervisor makes `version` odd,
//! updates the fields, then makes it even again. A reader loops: read
//! `version`, read barrier, copy the fields, read barrier, retry if the
//! version was odd or changed. [`pvclock_scale`] converts a TSC delta to
//! nanoseconds exactly as Xen does; [`tsc_to_system_scale`] derives the
//! `(mul, shift)` pair from a TSC frequency with Xen's algorithm.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::LEGACY_MAX_VCPUS;

/// `vcpu_time_info.flags`: the TSC is stable across vCPUs
/// (`XEN_PVCLOCK_TSC_STABLE_BIT`).
pub const PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the vCPU was stopped (`XEN_PVCLOCK_GUEST_STOPPED`).
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (32 bytes): the pvclock of one vCPU.
///
/// Written by the hypervisor (on every reschedule of the vCPU and at least
/// about once a second), read by the guest with the seqlock protocol.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Seqlock counter: odd while an update is in progress.
    pub version: u32,
    /// Padding (zero).
    pub pad0: u32,
    /// TSC value at the last update.
    pub tsc_timestamp: u64,
    /// Nanoseconds since hypervisor boot at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point TSC-to-nanoseconds multiplier.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying (signed).
    pub tsc_shift: i8,
    /// `PVCLOCK_*` bits.
    pub flags: u8,
    /// Padding (zero).
    pub pad1: [u8; 2],
}

impl VcpuTimeInfo {
    /// System time (ns) at TSC value `tsc`, from a consistent snapshot.
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(pvclock_scale(delta, self.tsc_to_system_mul, self.tsc_shift))
    }
}

/// Scale a TSC delta to nanoseconds: shift by `shift` (left if positive),
/// multiply by `mul` and keep bits 32..96 of the product (truncated to 64
/// bits), as Xen does.
pub const fn pvclock_scale(delta: u64, mul: u32, shift: i8) -> u64 {
    let amount = shift.unsigned_abs() as u32 & 63;
    let d = if shift >= 0 {
        delta << amount
    } else {
        delta >> amount
    };
    let product = (d as u128 * mul as u128) >> 32;
    #[allow(clippy::cast_possible_truncation)] // Xen keeps the low 64 bits too
    let ns = product as u64;
    ns
}

/// Xen's derivation of `(tsc_to_system_mul, tsc_shift)` from a TSC frequency
/// in Hz. `None` for a frequency of 0.
pub const fn tsc_to_system_scale(tsc_hz: u64) -> Option<(u32, i8)> {
    const NS_PER_SEC: u64 = 1_000_000_000;
    if tsc_hz == 0 {
        return None;
    }
    let mut f = tsc_hz;
    let mut shift: i8 = 0;
    while f > 2 * NS_PER_SEC {
        f >>= 1;
        shift -= 1;
    }
    while f <= NS_PER_SEC {
        f <<= 1;
        shift += 1;
    }
    // Now 10^9 < f <= 2 * 10^9, so the quotient is below 2^32.
    #[allow(clippy::cast_possible_truncation)]
    let mul = ((NS_PER_SEC << 32) / f) as u32;
    Some((mul, shift))
}

/// `struct arch_vcpu_info` (x86_64, 16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault bounced to the guest. Written
    /// by the hypervisor before it delivers #PF.
    pub cr2: u64,
    /// Padding (zero).
    pub pad: u64,
}

/// `struct vcpu_info` (64 bytes): per-vCPU event and time state.
///
/// Slot `i` of [`SharedInfo::vcpu_info`] belongs to vCPU `i` for `i < 32`;
/// other vCPUs register an area with `VCPUOP_register_vcpu_info`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set to 1 by the hypervisor when an event is flagged for this vCPU;
    /// cleared by the guest before it scans the selector.
    pub evtchn_upcall_pending: u8,
    /// The guest's virtual interrupt flag, inverted: 1 = no upcall. Written
    /// by the guest; the hypervisor sets it on interrupt-style delivery and
    /// clears it on `SCHEDOP_block`. The builder starts it at 1.
    pub evtchn_upcall_mask: u8,
    /// Padding (zero).
    pub pad0: [u8; 6],
    /// Bit `w` set: word `w` of `evtchn_pending` may hold pending unmasked
    /// ports. Set by the hypervisor, cleared (exchanged) by the guest.
    pub evtchn_pending_sel: u64,
    /// Architecture part (`cr2`).
    pub arch: ArchVcpuInfo,
    /// This vCPU's pvclock.
    pub time: VcpuTimeInfo,
}

/// `struct arch_shared_info` (x86_64, 48 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Guest-written: number of valid P2M entries.
    pub max_pfn: u64,
    /// Guest-written: MFN of the root of the 3-level P2M frame list (0 =
    /// unset, `!0` = too big, use `p2m_vaddr`). Read by save/restore tools.
    pub pfn_to_mfn_frame_list_list: u64,
    /// Hypervisor-written NMI reason bits (`XEN_NMIREASON_*`).
    pub nmi_reason: u64,
    /// Guest-written CR3 of the address space that maps the linear P2M.
    pub p2m_cr3: u64,
    /// Guest-written virtual address of the linear P2M.
    pub p2m_vaddr: u64,
    /// Guest-written generation count, odd while the P2M mapping changes.
    pub p2m_generation: u64,
}

/// Words in each event-channel bitmap of [`SharedInfo`] (2-level ABI).
pub const EVTCHN_WORDS: usize = 64;

/// `struct shared_info` (3136 bytes used of its page).
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU state for vCPUs 0..32.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// Pending bit per port (port `p` is bit `p % 64` of word `p / 64`). Set
    /// by the hypervisor, cleared by the guest.
    pub evtchn_pending: [u64; EVTCHN_WORDS],
    /// Mask bit per port. Written by the guest; the hypervisor reads it and
    /// clears a bit only in `EVTCHNOP_unmask` (test-and-clear).
    pub evtchn_mask: [u64; EVTCHN_WORDS],
    /// Wall-clock seqlock counter (same protocol as `vcpu_time_info`).
    /// Written by the hypervisor.
    pub wc_version: u32,
    /// Wall-clock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// Wall-clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

assert_layout!(
    VcpuTimeInfo,
    32,
    version = 0,
    pad0 = 4,
    tsc_timestamp = 8,
    system_time = 16,
    tsc_to_system_mul = 24,
    tsc_shift = 28,
    flags = 29,
    pad1 = 30,
);
assert_layout!(ArchVcpuInfo, 16, cr2 = 0, pad = 8);
assert_layout!(
    VcpuInfo,
    64,
    evtchn_upcall_pending = 0,
    evtchn_upcall_mask = 1,
    evtchn_pending_sel = 8,
    arch.cr2 = 16,
    arch.pad = 24,
    time = 32,
);
assert_layout!(
    ArchSharedInfo,
    48,
    max_pfn = 0,
    pfn_to_mfn_frame_list_list = 8,
    nmi_reason = 16,
    p2m_cr3 = 24,
    p2m_vaddr = 32,
    p2m_generation = 40,
);
assert_layout!(
    SharedInfo,
    3136,
    vcpu_info = 0,
    evtchn_pending = 2048,
    evtchn_mask = 2560,
    wc_version = 3072,
    wc_sec = 3076,
    wc_nsec = 3080,
    wc_sec_hi = 3084,
    arch.max_pfn = 3088,
    arch.pfn_to_mfn_frame_list_list = 3096,
    arch.nmi_reason = 3104,
    arch.p2m_cr3 = 3112,
    arch.p2m_vaddr = 3120,
    arch.p2m_generation = 3128,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_round_trips_frequencies() {
        for hz in [
            1_000_000u64,
            999_999_999,
            1_000_000_000,
            2_000_000_000,
            3_000_000_000,
            4_123_456_789,
        ] {
            let (mul, shift) = tsc_to_system_scale(hz).unwrap();
            // One second of ticks is one second of nanoseconds, within rounding.
            let ns = pvclock_scale(hz, mul, shift);
            assert!(ns.abs_diff(1_000_000_000) <= 2, "{hz} Hz gave {ns} ns");
        }
        assert_eq!(tsc_to_system_scale(0), None);
    }

    #[test]
    fn xen_example_scale() {
        // 3 GHz: one right shift leaves 1.5 GHz; mul = 2^32 * 2 / 3.
        assert_eq!(
            tsc_to_system_scale(3_000_000_000),
            Some((2_863_311_530, -1))
        );
    }

    #[test]
    fn system_time_at() {
        let t = VcpuTimeInfo {
            tsc_timestamp: 1000,
            system_time: 5,
            tsc_to_system_mul: 1 << 31, // 0.5 ns per tick
            tsc_shift: 1,
            ..Default::default()
        };
        assert_eq!(t.system_time_at(1010), 5 + 10);
    }
}
