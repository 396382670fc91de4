//! Adaptive halt polling for an idle CPU (KVM's `halt_poll_ns`, per CPU): before it
//! halts, an idle CPU polls for a wake-up for a while, so a wake-up that comes soon
//! costs no IPI and no halt. Under TCG a halted CPU's wake-up is a trip through
//! QEMU's thread wake-up on the host, which dominates a cross-CPU round trip.
//!
//! The window adapts as KVM's does with its defaults: it starts at 0, grows (from
//! [`GROW_START_NS`], doubling) while wake-ups come after the window but within the
//! most the machine allows, and drops to 0 when a wait outlasts that most (polling
//! would not have caught it). A CPU whose waits are long, an idle machine, never
//! polls; one whose work comes back quickly, two vCPUs exchanging events on two
//! CPUs, polls for about as long as the round trip takes.

/// The window the first growth gives, as KVM's `halt_poll_ns_grow_start`.
pub const GROW_START_NS: u64 = 10_000;

/// The most an idle CPU polls by default (KVM's default `halt_poll_ns`).
pub const DEFAULT_MAX_NS: u64 = 200_000;

/// One CPU's polling window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HaltPoll {
    window_ns: u64,
}

impl HaltPoll {
    /// A window of `ns` (a CPU's stored window, say).
    pub const fn with_window(ns: u64) -> Self {
        HaltPoll { window_ns: ns }
    }

    /// How long to poll before halting.
    pub const fn window_ns(self) -> u64 {
        self.window_ns
    }

    /// After an idle wait that ended `waited_ns` after it began (`polled`: the
    /// wake-up came while polling), with at most `max_ns` of polling allowed (0: off).
    pub fn update(&mut self, max_ns: u64, waited_ns: u64, polled: bool) {
        if max_ns == 0 || waited_ns > max_ns {
            // Off, or polling up to the most would not have caught it.
            self.window_ns = 0;
        } else if !polled && waited_ns > self.window_ns {
            // A longer window would have caught it.
            self.window_ns = self
                .window_ns
                .saturating_mul(2)
                .max(GROW_START_NS)
                .min(max_ns);
        }
        // A wake-up caught by polling keeps the window.
        self.window_ns = self.window_ns.min(max_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_machine_never_polls() {
        let mut p = HaltPoll::default();
        for _ in 0..10 {
            p.update(DEFAULT_MAX_NS, 4_000_000, false);
            assert_eq!(p.window_ns(), 0);
        }
    }

    #[test]
    fn quick_wake_ups_grow_the_window_until_polling_catches_them() {
        let mut p = HaltPoll::default();
        let mut windows = Vec::new();
        // Wake-ups 70 µs after the CPU idled, not caught while the window is shorter.
        for _ in 0..6 {
            let caught = p.window_ns() >= 70_000;
            p.update(DEFAULT_MAX_NS, 70_000, caught);
            windows.push(p.window_ns());
        }
        assert_eq!(windows, [10_000, 20_000, 40_000, 80_000, 80_000, 80_000]);
    }

    #[test]
    fn the_window_never_passes_the_most_and_a_long_wait_resets_it() {
        let mut p = HaltPoll::with_window(160_000);
        p.update(DEFAULT_MAX_NS, 190_000, false);
        assert_eq!(p.window_ns(), DEFAULT_MAX_NS);
        p.update(DEFAULT_MAX_NS, 150_000, true);
        assert_eq!(p.window_ns(), DEFAULT_MAX_NS);
        p.update(DEFAULT_MAX_NS, 250_000, false);
        assert_eq!(p.window_ns(), 0);
    }

    #[test]
    fn a_wake_up_within_the_window_keeps_it() {
        let mut p = HaltPoll::with_window(40_000);
        p.update(DEFAULT_MAX_NS, 5_000, true);
        assert_eq!(p.window_ns(), 40_000);
        // An interrupt that ended the halt early, within the window, keeps it too.
        p.update(DEFAULT_MAX_NS, 5_000, false);
        assert_eq!(p.window_ns(), 40_000);
    }

    #[test]
    fn zero_turns_polling_off_and_a_lower_most_clamps() {
        let mut p = HaltPoll::with_window(80_000);
        p.update(0, 1_000, true);
        assert_eq!(p.window_ns(), 0);
        let mut p = HaltPoll::with_window(80_000);
        p.update(30_000, 1_000, true);
        assert_eq!(p.window_ns(), 30_000);
    }

    proptest::proptest! {
        #[test]
        fn the_window_stays_within_bounds(
            max in 0u64..1_000_000,
            waits in proptest::collection::vec((0u64..2_000_000, proptest::bool::ANY), 0..50),
        ) {
            let mut p = HaltPoll::default();
            for (w, polled) in waits {
                p.update(max, w, polled);
                proptest::prop_assert!(p.window_ns() <= max);
                if w > max {
                    proptest::prop_assert_eq!(p.window_ns(), 0);
                }
            }
        }
    }
}
