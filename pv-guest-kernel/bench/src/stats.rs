//! Sample statistics and the result-line format. Pure `core` code: the guest
//! uses it, and the host unit-tests it.
//!
//! # Line format
//!
//! One line per metric, key=value fields separated by single spaces, after
//! the fixed tag [`RESULT_TAG`] (the hypervisor may prefix the line, e.g.
//! xen-like-hv's `(d0) `):
//!
//! ```text
//! bench-result metric=null_hypercall iters=100000 median=1234 p10=1200 p90=1302 unit=cycles
//! bench-result metric=evtchn_notify_self unsupported hypercall=event_channel_op(bind_ipi) error=ENOSYS
//! bench-info tsc_hz=2596000000 source=pvclock
//! ```
//!
//! `median`, `p10` and `p90` are nearest-rank percentiles of the samples,
//! divided by the operations per sample (a batch of 64 PTE updates gives
//! cycles per update), rounded to the nearest integer. `unit` is `cycles`
//! (TSC ticks).

use core::fmt;

/// Tag that starts every result line.
pub const RESULT_TAG: &str = "bench-result";
/// Tag of the information lines (TSC frequency).
pub const INFO_TAG: &str = "bench-info";

/// Percentiles of a sample set, already divided by the operations per
/// sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Samples taken.
    pub iters: u64,
    /// 50th percentile (nearest rank).
    pub median: u64,
    /// 10th percentile.
    pub p10: u64,
    /// 90th percentile.
    pub p90: u64,
}

/// Nearest-rank percentile `q` (0..=100) of `sorted` (ascending, non-empty):
/// the smallest sample with at least `q`% of the samples at or below it.
pub fn percentile(sorted: &[u32], q: u32) -> u32 {
    let n = sorted.len();
    if n == 0 {
        return 0;
    }
    let q = q.min(100) as usize;
    // ceil(q * n / 100), at least 1.
    let rank = (q * n).div_ceil(100).max(1);
    sorted[rank.min(n) - 1]
}

/// Sorts `samples` and summarizes them, dividing by `per_sample`
/// operations (0 is treated as 1). `None` for no samples.
pub fn summarize(samples: &mut [u32], per_sample: u64) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let div = per_sample.max(1);
    let scaled = |v: u32| (u64::from(v) + div / 2) / div;
    Some(Summary {
        iters: samples.len() as u64,
        median: scaled(percentile(samples, 50)),
        p10: scaled(percentile(samples, 10)),
        p90: scaled(percentile(samples, 90)),
    })
}

/// A measured metric's line.
#[derive(Clone, Copy, Debug)]
pub struct ResultLine<'a> {
    /// Metric name (`[a-z0-9_]+`).
    pub metric: &'a str,
    /// Its summary.
    pub summary: Summary,
    /// Unit of the values.
    pub unit: &'a str,
}

impl fmt::Display for ResultLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        write!(
            f,
            "{RESULT_TAG} metric={} iters={} median={} p10={} p90={} unit={}",
            self.metric, s.iters, s.median, s.p10, s.p90, self.unit
        )
    }
}

/// The line of a metric the hypervisor cannot run: which hypercall refused
/// and with what.
#[derive(Clone, Copy, Debug)]
pub struct UnsupportedLine<'a, E> {
    /// Metric name.
    pub metric: &'a str,
    /// The hypercall (and sub-op) that failed, without spaces.
    pub hypercall: &'a str,
    /// The error (an errno name, or a word), without spaces.
    pub error: E,
}

impl<E: fmt::Display> fmt::Display for UnsupportedLine<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{RESULT_TAG} metric={} unsupported hypercall={} error={}",
            self.metric, self.hypercall, self.error
        )
    }
}

#[cfg(all(test, not(target_os = "none")))]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: [u32; 10] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(percentile(&v, 10), 1);
        assert_eq!(percentile(&v, 50), 5);
        assert_eq!(percentile(&v, 90), 9);
        assert_eq!(percentile(&v, 100), 10);
        assert_eq!(percentile(&v, 0), 1);
        assert_eq!(percentile(&[7], 50), 7);
        assert_eq!(percentile(&[], 50), 0);
    }

    #[test]
    fn summary_sorts_and_divides() {
        let mut v = [640u32, 64, 6400, 128, 192];
        let s = summarize(&mut v, 64).unwrap();
        assert_eq!(s.iters, 5);
        assert_eq!(s.median, 3); // 192 / 64
        assert_eq!(s.p10, 1);
        assert_eq!(s.p90, 100);
        assert!(summarize(&mut [], 1).is_none());
        // Rounds to nearest.
        let s = summarize(&mut [3], 2).unwrap();
        assert_eq!(s.median, 2);
    }

    #[test]
    fn line_formats() {
        let r = ResultLine {
            metric: "null_hypercall",
            summary: Summary {
                iters: 100_000,
                median: 1234,
                p10: 1200,
                p90: 1302,
            },
            unit: "cycles",
        };
        assert_eq!(
            r.to_string(),
            "bench-result metric=null_hypercall iters=100000 median=1234 p10=1200 p90=1302 unit=cycles"
        );
        let u = UnsupportedLine {
            metric: "evtchn_notify_self",
            hypercall: "event_channel_op(bind_ipi)",
            error: "ENOSYS",
        };
        assert_eq!(
            u.to_string(),
            "bench-result metric=evtchn_notify_self unsupported hypercall=event_channel_op(bind_ipi) error=ENOSYS"
        );
    }
}
