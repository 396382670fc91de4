//! Time as PV guests read it (digest §4.2): the pvclock scaling of the TSC, and the
//! calendar arithmetic that turns the RTC's date into the wall clock.

const NS_PER_S: u64 = 1_000_000_000;

/// Xen's `(tsc_to_system_mul, tsc_shift)` for a TSC of `tsc_hz`: the guest computes
/// `ns = ((ticks << shift, or >> -shift) * mul) >> 32`. `None` for a zero frequency.
pub fn pvclock_scale(tsc_hz: u64) -> Option<(u32, i8)> {
    if tsc_hz == 0 {
        return None;
    }
    let mut f = tsc_hz;
    let mut shift: i8 = 0;
    while f > 2 * NS_PER_S {
        f >>= 1;
        shift -= 1;
    }
    while f <= NS_PER_S {
        f <<= 1;
        shift += 1;
    }
    let mul = u32::try_from((u128::from(NS_PER_S) << 32) / u128::from(f)).ok()?;
    Some((mul, shift))
}

/// Nanoseconds for `ticks` TSC ticks with a pvclock scale, as a guest computes them.
pub fn pvclock_ns(ticks: u64, mul: u32, shift: i8) -> u64 {
    let t = if shift >= 0 {
        ticks << shift.unsigned_abs()
    } else {
        ticks >> shift.unsigned_abs()
    };
    u64::try_from((u128::from(t) * u128::from(mul)) >> 32).unwrap_or(u64::MAX)
}

/// The clock as Xen publishes it in `vcpu_time_info`: system time `ns` at TSC value
/// `tsc`, advancing at the pvclock scale (`mul`, `shift`). The hypervisor reads its own
/// time with the same formula, so it and its guests never disagree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    /// TSC value at the anchor (`tsc_timestamp`).
    pub tsc: u64,
    /// System time at the anchor, ns (`system_time`).
    pub ns: u64,
    /// `tsc_to_system_mul`.
    pub mul: u32,
    /// `tsc_shift`.
    pub shift: i8,
}

impl Anchor {
    /// System time 0 at TSC `tsc`, for a TSC of `hz` (`None` for 0 Hz).
    pub fn new(tsc: u64, hz: u64) -> Option<Self> {
        let (mul, shift) = pvclock_scale(hz)?;
        Some(Anchor {
            tsc,
            ns: 0,
            mul,
            shift,
        })
    }

    /// System time at TSC value `tsc` (the anchor's time for a TSC before it).
    pub fn ns_at(&self, tsc: u64) -> u64 {
        let ticks = tsc.saturating_sub(self.tsc);
        self.ns
            .saturating_add(pvclock_ns(ticks, self.mul, self.shift))
    }

    /// The same clock continued from TSC `tsc` at a new rate `hz`: the time at `tsc` is
    /// kept, so the clock never jumps, and from there it advances at the new rate.
    pub fn rerate(&self, tsc: u64, hz: u64) -> Option<Self> {
        let (mul, shift) = pvclock_scale(hz)?;
        Some(Anchor {
            tsc,
            ns: self.ns_at(tsc),
            mul,
            shift,
        })
    }
}

/// The TSC frequency the CPU states in CPUID leaf 0x15 (`[eax, ebx, ecx]`: the
/// TSC/crystal ratio as denominator and numerator, and the crystal in Hz), taking the
/// crystal from leaf 0x16's base frequency (MHz, `leaf16_eax`) when 0x15 leaves it
/// out, as Linux's `native_calibrate_tsc` does. `None` when the CPU states no
/// frequency: `max_leaf` below 0x15, a zero ratio, or no crystal.
pub fn tsc_hz_from_cpuid(max_leaf: u32, leaf15: [u32; 3], leaf16_eax: u32) -> Option<u64> {
    if max_leaf < 0x15 {
        return None;
    }
    let [denominator, numerator, crystal_hz] = leaf15.map(u64::from);
    if denominator == 0 || numerator == 0 {
        return None;
    }
    let crystal = if crystal_hz != 0 {
        crystal_hz
    } else if max_leaf >= 0x16 && leaf16_eax != 0 {
        u64::from(leaf16_eax) * 1_000_000 * denominator / numerator
    } else {
        return None;
    };
    Some(crystal * numerator / denominator).filter(|&hz| hz != 0)
}

/// The rate (Hz) of a counter that advanced `count` in `ns` nanoseconds.
pub fn rate_hz(count: u64, ns: u64) -> Option<u64> {
    if ns == 0 {
        return None;
    }
    u64::try_from(u128::from(count) * u128::from(NS_PER_S) / u128::from(ns)).ok()
}

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian); `None` for a
/// month or day out of range.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// Seconds since the epoch for a UTC date and time.
pub fn unix_seconds(y: i64, mon: u32, d: u32, h: u32, min: u32, s: u32) -> Option<u64> {
    if h > 23 || min > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mon, d)?;
    let secs = days.checked_mul(86_400)? + i64::from(h * 3600 + min * 60 + s);
    u64::try_from(secs).ok()
}

/// A BCD byte's value (`0x59` → 59); `None` if a nibble is not a decimal digit.
pub fn from_bcd(b: u8) -> Option<u8> {
    let (hi, lo) = (b >> 4, b & 0xF);
    (hi < 10 && lo < 10).then_some(hi * 10 + lo)
}

/// The one-shot timer armed last: the deadline it was armed for (its interrupt
/// comes no later) and the count of timer interrupts taken when it was armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArmedTimer {
    /// Deadline (ns of system time); `u64::MAX` for "none" (armed the longest way).
    pub deadline: u64,
    /// Timer interrupts taken before arming.
    pub ticks: u64,
}

impl ArmedTimer {
    /// Whether the armed interrupt will do for the earliest deadline `next` at `now`,
    /// with `ticks` timer interrupts taken so far: it is not taken yet, not late, and
    /// comes no later than `next`. Its entry looks at the timers and arms again, so
    /// reprogramming the timer (a trip through QEMU's device model under TCG) can wait.
    pub fn covers(&self, next: u64, ticks: u64, now: u64) -> bool {
        self.ticks == ticks && self.deadline <= next && self.deadline > now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_converts_one_second_of_ticks_to_a_second() {
        for hz in [
            1_000_000u64,
            999_999_999,
            1_000_000_000,
            2_596_494_000,
            3_700_000_000,
            10_000_000_000,
        ] {
            let (mul, shift) = pvclock_scale(hz).unwrap();
            let ns = pvclock_ns(hz, mul, shift);
            assert!(ns.abs_diff(NS_PER_S) <= 2, "{hz} Hz: {ns} ns for a second");
        }
        assert_eq!(pvclock_scale(0), None);
    }

    #[test]
    fn scale_matches_xens_ranges() {
        // Xen keeps the scaled frequency in (1 GHz, 2 GHz].
        let (_, shift) = pvclock_scale(2_600_000_000).unwrap();
        assert_eq!(shift, -1);
        let (_, shift) = pvclock_scale(1_500_000_000).unwrap();
        assert_eq!(shift, 0);
        let (_, shift) = pvclock_scale(400_000_000).unwrap();
        assert_eq!(shift, 2);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Some(0));
        assert_eq!(days_from_civil(2000, 3, 1), Some(11_017));
        assert_eq!(unix_seconds(2026, 11, 24, 6, 15, 41), Some(1_795_500_941)); // date -u +%s
        assert_eq!(unix_seconds(2026, 13, 1, 0, 0, 0), None);
        assert_eq!(unix_seconds(2026, 1, 1, 24, 0, 0), None);
    }

    #[test]
    fn an_armed_timer_covers_later_deadlines_until_it_fires() {
        let a = ArmedTimer {
            deadline: 1_000,
            ticks: 7,
        };
        assert!(a.covers(1_000, 7, 10));
        assert!(a.covers(u64::MAX, 7, 999));
        // An earlier deadline needs the timer reprogrammed.
        assert!(!a.covers(999, 7, 10));
        // Taken (an interrupt since), or due: arm again.
        assert!(!a.covers(2_000, 8, 10));
        assert!(!a.covers(2_000, 7, 1_000));
        // Armed for nothing in particular: any real deadline rearms it.
        let none = ArmedTimer {
            deadline: u64::MAX,
            ticks: 7,
        };
        assert!(none.covers(u64::MAX, 7, 10));
        assert!(!none.covers(5_000, 7, 10));
    }

    #[test]
    fn bcd() {
        assert_eq!(from_bcd(0x59), Some(59));
        assert_eq!(from_bcd(0x00), Some(0));
        assert_eq!(from_bcd(0x5A), None);
    }
    #[test]
    fn rerating_keeps_the_time_and_changes_the_rate() {
        let a = Anchor::new(1_000, 2_000_000_000).unwrap();
        assert_eq!(a.ns_at(1_000), 0);
        assert_eq!(
            a.ns_at(500),
            0,
            "a TSC before the anchor reads the anchor's time"
        );
        let t = 1_000 + 2_000_000_000; // one second later
        let before = a.ns_at(t);
        assert!(before.abs_diff(NS_PER_S) <= 2);
        let b = a.rerate(t, 2_002_000_000).unwrap();
        assert_eq!(b.ns_at(t), before, "no jump at the switch");
        // One more second of the faster TSC is one second of time.
        let later = b.ns_at(t + 2_002_000_000);
        assert!((later - before).abs_diff(NS_PER_S) <= 2);
        assert_eq!(a.rerate(t, 0), None);
    }

    #[test]
    fn rerating_is_monotonic_across_random_switches() {
        // A crude LCG keeps the test deterministic without a dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        let mut a = Anchor::new(0, 3_000_000_000).unwrap();
        let mut tsc = 0u64;
        let mut last = 0u64;
        for _ in 0..10_000 {
            tsc += next() % 10_000_000;
            let now = a.ns_at(tsc);
            assert!(now >= last);
            last = now;
            if next() % 8 == 0 {
                let hz = 2_900_000_000 + next() % 200_000_000;
                a = a.rerate(tsc, hz).unwrap();
                assert_eq!(a.ns_at(tsc), now);
            }
        }
    }

    #[test]
    fn tsc_frequency_from_cpuid_as_linux_reads_it() {
        // Crystal stated: 24 MHz * 188 / 2.
        assert_eq!(
            tsc_hz_from_cpuid(0x16, [2, 188, 24_000_000], 0),
            Some(2_256_000_000)
        );
        // No crystal in 0x15: from 0x16's base frequency (2256 MHz) and the ratio.
        assert_eq!(
            tsc_hz_from_cpuid(0x16, [2, 188, 0], 2256),
            Some(2_256_000_000)
        );
        // No crystal and no 0x16: unknown.
        assert_eq!(tsc_hz_from_cpuid(0x15, [2, 188, 0], 2256), None);
        // Leaf absent or a zero ratio: unknown.
        assert_eq!(tsc_hz_from_cpuid(0x14, [2, 188, 24_000_000], 0), None);
        assert_eq!(tsc_hz_from_cpuid(0x16, [0, 188, 24_000_000], 0), None);
        assert_eq!(tsc_hz_from_cpuid(0x16, [2, 0, 24_000_000], 0), None);
    }

    #[test]
    fn counter_rates() {
        assert_eq!(rate_hz(1_000, 1_000_000), Some(1_000_000));
        assert_eq!(rate_hz(1, 0), None);
        assert_eq!(rate_hz(u64::MAX, 1), None);
    }
}
