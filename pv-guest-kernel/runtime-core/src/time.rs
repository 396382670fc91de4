//! Time arithmetic: the seqlock reader both pvclock and the wall clock use,
//! wall-clock composition (ABI digest §4.3) and a civil (UTC) date for
//! printing.
//!
//! The TSC-to-nanoseconds scaling itself is
//! [`VcpuTimeInfo::system_time_at`](hypercall_abi::xen::VcpuTimeInfo::system_time_at).

use core::fmt;
use core::sync::atomic::{Ordering, fence};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Read a seqlock-protected value: `version` reads the counter, `read`
/// copies the protected fields. Retries while the counter is odd (an update
/// is in progress) or changed during the copy.
pub fn seqlock_read<T>(mut version: impl FnMut() -> u32, mut read: impl FnMut() -> T) -> T {
    loop {
        let v = version();
        fence(Ordering::Acquire);
        if v & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        let value = read();
        fence(Ordering::Acquire);
        if version() == v {
            return value;
        }
    }
}

/// A wall-clock time: seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct WallClock {
    /// Seconds.
    pub secs: u64,
    /// Nanoseconds, below 10^9.
    pub nsecs: u32,
}

impl WallClock {
    /// The wall clock at system time `system_ns`, given the `shared_info`
    /// fields `wc_sec`, `wc_sec_hi` and `wc_nsec` (the wall clock at system
    /// time 0).
    pub fn from_shared_info(wc_sec: u32, wc_sec_hi: u32, wc_nsec: u32, system_ns: u64) -> Self {
        let base = (u64::from(wc_sec_hi) << 32) | u64::from(wc_sec);
        let ns = u128::from(wc_nsec) + u128::from(system_ns);
        let extra_secs = u64::try_from(ns / u128::from(NS_PER_SEC)).unwrap_or(u64::MAX);
        let nsecs = u32::try_from(ns % u128::from(NS_PER_SEC)).unwrap_or(0);
        WallClock {
            secs: base.saturating_add(extra_secs),
            nsecs,
        }
    }

    /// The UTC calendar date and time.
    pub fn civil(&self) -> CivilTime {
        let days = self.secs / 86_400;
        let rem = self.secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        #[allow(clippy::cast_possible_truncation)] // rem < 86400
        let rem = rem as u32;
        CivilTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem / 60 % 60,
            second: rem % 60,
        }
    }
}

/// A UTC calendar time (proleptic Gregorian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    /// Year.
    pub year: u64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl fmt::Display for CivilTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Year, month and day of day number `days` since 1970-01-01.
///
/// Works in 400-year eras of 146097 days counted from 0000-03-01, so that
/// the leap day is the last day of each shifted year.
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    // Days from 0000-03-01 to 1970-01-01.
    const EPOCH_SHIFT: u64 = 719_468;
    let z = days.saturating_add(EPOCH_SHIFT);
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // 0 = March .. 11 = February
    #[allow(clippy::cast_possible_truncation)] // both are small
    let (day, month) = ((doy - (153 * mp + 2) / 5 + 1) as u32, mp as u32);
    let month = if month < 10 { month + 3 } else { month - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::format;

    #[test]
    fn wall_clock_carries_nanoseconds() {
        let w = WallClock::from_shared_info(10, 0, 900_000_000, 200_000_000);
        assert_eq!(
            w,
            WallClock {
                secs: 11,
                nsecs: 100_000_000
            }
        );
        let w = WallClock::from_shared_info(0, 1, 0, 3 * NS_PER_SEC);
        assert_eq!(w.secs, (1 << 32) + 3);
    }

    #[test]
    fn civil_dates() {
        let at = |secs| WallClock { secs, nsecs: 0 }.civil();
        assert_eq!(format!("{}", at(0)), "1970-01-01 00:00:00 UTC");
        assert_eq!(format!("{}", at(951_782_400)), "2000-02-29 00:00:00 UTC");
        assert_eq!(format!("{}", at(1_700_000_000)), "2023-11-14 22:13:20 UTC");
        assert_eq!(format!("{}", at(4_107_542_399)), "2100-02-28 23:59:59 UTC");
        assert_eq!(format!("{}", at(4_107_542_400)), "2100-03-01 00:00:00 UTC");
    }

    #[test]
    fn seqlock_retries_odd_and_changed_versions() {
        // Versions seen: 3 (odd, retry), 4 then 6 (changed, retry), 6 and 6.
        let versions = [3u32, 4, 6, 6, 6];
        let i = Cell::new(0);
        let reads = Cell::new(0);
        let v = seqlock_read(
            || {
                let v = versions[i.get()];
                i.set(i.get() + 1);
                v
            },
            || {
                reads.set(reads.get() + 1);
                reads.get()
            },
        );
        assert_eq!(v, 2);
        assert_eq!(i.get(), 5);
    }
}
