//! Event and timer logic of the runtime, without the machine: the per-port
//! handler table, the order of the 2-level demultiplexer, and deadline and
//! rate arithmetic (ABI digest §7.3, §6.10).

use core::fmt;

/// Ports of the 2-level ABI for a 64-bit guest (`EVTCHN_2L_NR_CHANNELS`).
pub const NR_PORTS: usize = 4096;
/// Ports per `evtchn_pending` / `evtchn_mask` word.
pub const WORD_BITS: u32 = 64;

/// Why [`HandlerTable::set`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The port is outside the 2-level port space.
    PortOutOfRange,
    /// Every slot holds a handler already.
    Full,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableError::PortOutOfRange => "port outside the 2-level port space",
            TableError::Full => "event handler table full",
        })
    }
}

/// A map from port to handler with `SLOTS` entries and O(1) lookup, in
/// fixed storage (no heap): a 16-bit slot index per port plus the slots.
#[derive(Debug)]
pub struct HandlerTable<H: Copy, const SLOTS: usize> {
    /// 0: no handler; `n`: `slots[n - 1]`.
    index: [u16; NR_PORTS],
    slots: [Option<(u32, H)>; SLOTS],
}

impl<H: Copy, const SLOTS: usize> Default for HandlerTable<H, SLOTS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Copy, const SLOTS: usize> HandlerTable<H, SLOTS> {
    const FITS: () = assert!(SLOTS < u16::MAX as usize, "slot index must fit in u16");

    /// An empty table.
    pub const fn new() -> Self {
        let () = Self::FITS;
        HandlerTable {
            index: [0; NR_PORTS],
            slots: [const { None }; SLOTS],
        }
    }

    fn slot_of(&self, port: u32) -> Option<usize> {
        let i = *self.index.get(usize::try_from(port).ok()?)?;
        usize::from(i).checked_sub(1)
    }

    /// Handle `port` with `handler`; returns the handler it replaces.
    pub fn set(&mut self, port: u32, handler: H) -> Result<Option<H>, TableError> {
        let p = usize::try_from(port)
            .ok()
            .filter(|p| *p < NR_PORTS)
            .ok_or(TableError::PortOutOfRange)?;
        if let Some(s) = self.slot_of(port)
            && let Some(Some((_, old))) = self.slots.get_mut(s)
        {
            return Ok(Some(core::mem::replace(old, handler)));
        }
        let free = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(TableError::Full)?;
        let idx = u16::try_from(free + 1).map_err(|_| TableError::Full)?;
        if let (Some(slot), Some(ix)) = (self.slots.get_mut(free), self.index.get_mut(p)) {
            *slot = Some((port, handler));
            *ix = idx;
        }
        Ok(None)
    }

    /// Remove the handler of `port`, returning it.
    pub fn remove(&mut self, port: u32) -> Option<H> {
        let s = self.slot_of(port)?;
        let (_, h) = self.slots.get_mut(s)?.take()?;
        if let Some(ix) = usize::try_from(port)
            .ok()
            .and_then(|p| self.index.get_mut(p))
        {
            *ix = 0;
        }
        Some(h)
    }

    /// The handler of `port`.
    pub fn get(&self, port: u32) -> Option<H> {
        let s = self.slot_of(port)?;
        self.slots.get(s)?.as_ref().map(|(_, h)| *h)
    }

    /// How many ports have a handler.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Whether no port has a handler.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One pass of the 2-level demultiplexer over the selector `sel` (taken
/// with an exchange from `evtchn_pending_sel`): for each set selector bit
/// `w`, in ascending order, `active(w)` returns `evtchn_pending[w] &
/// !evtchn_mask[w]`, and `fire(port)` is called for each set bit, lowest
/// port first. `fire` clears the pending bit and runs the handler.
pub fn demux(sel: u64, mut active: impl FnMut(usize) -> u64, mut fire: impl FnMut(u32)) {
    let mut words = sel;
    while words != 0 {
        let w = words.trailing_zeros();
        words &= words - 1;
        let mut bits = active(w as usize);
        while bits != 0 {
            let b = bits.trailing_zeros();
            bits &= bits - 1;
            fire(w * WORD_BITS + b);
        }
    }
}

/// Word index and bit mask of `port` in the 2-level bitmaps, if the port is
/// inside the port space.
pub fn port_word_mask(port: u32) -> Option<(usize, u64)> {
    let p = usize::try_from(port).ok().filter(|p| *p < NR_PORTS)?;
    Some((p / WORD_BITS as usize, 1u64 << (port % WORD_BITS)))
}

/// The absolute deadline `delay_ns` after `now_ns` (saturating).
pub const fn deadline_after(now_ns: u64, delay_ns: u64) -> u64 {
    now_ns.saturating_add(delay_ns)
}

/// Whether `deadline_ns` has passed at `now_ns`.
pub const fn expired(now_ns: u64, deadline_ns: u64) -> bool {
    now_ns >= deadline_ns
}

/// The `set_timer_op` argument that arms the timer at `deadline_ns`: never
/// 0 (which would cancel it; 1 ns fires at once just the same), and at most
/// `i64::MAX` (Xen treats negative values as "100 ms from now").
pub const fn timer_op_arg(deadline_ns: u64) -> i64 {
    if deadline_ns == 0 {
        1
    } else if deadline_ns > i64::MAX as u64 {
        i64::MAX
    } else {
        deadline_ns as i64
    }
}

/// Events per second, in milli-hertz, for `events` in `elapsed_ns`.
pub fn rate_mhz(events: u64, elapsed_ns: u64) -> u64 {
    if elapsed_ns == 0 {
        return 0;
    }
    let r = u128::from(events) * 1_000_000_000_000 / u128::from(elapsed_ns);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// Whether `got` lies within `percent` % of `want` (inclusive).
pub fn within_percent(got: u64, want: u64, percent: u64) -> bool {
    let slack = u128::from(want) * u128::from(percent) / 100;
    u128::from(got).abs_diff(u128::from(want)) <= slack
}

/// Nanoseconds shown as milliseconds with three decimals (`100.123`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0 / 1000;
        write!(f, "{}.{:03}", us / 1000, us % 1000)
    }
}

/// Milli-units shown with three decimals (`99.872` for 99872 mHz).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Milli(pub u64);

impl fmt::Display for Milli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::format;
    use std::vec::Vec;

    #[test]
    fn table_set_get_replace_remove() {
        let mut t: HandlerTable<u8, 4> = HandlerTable::new();
        assert!(t.is_empty());
        assert_eq!(t.set(5, 1), Ok(None));
        assert_eq!(t.set(4095, 2), Ok(None));
        assert_eq!(t.get(5), Some(1));
        assert_eq!(t.get(6), None);
        assert_eq!(t.set(5, 3), Ok(Some(1)));
        assert_eq!(t.len(), 2);
        assert_eq!(t.remove(5), Some(3));
        assert_eq!(t.remove(5), None);
        assert_eq!(t.get(5), None);
        assert_eq!(t.set(4096, 1), Err(TableError::PortOutOfRange));
        assert_eq!(t.get(u32::MAX), None);
    }

    #[test]
    fn table_full_and_slot_reuse() {
        let mut t: HandlerTable<u32, 2> = HandlerTable::new();
        t.set(1, 1).unwrap();
        t.set(2, 2).unwrap();
        assert_eq!(t.set(3, 3), Err(TableError::Full));
        // Replacing needs no new slot.
        assert_eq!(t.set(2, 20), Ok(Some(2)));
        t.remove(1);
        assert_eq!(t.set(3, 3), Ok(None));
        assert_eq!((t.get(1), t.get(2), t.get(3)), (None, Some(20), Some(3)));
    }

    #[test]
    fn demux_order_is_word_then_bit_ascending() {
        let mut pending = [0u64; 64];
        pending[0] = (1 << 3) | (1 << 1);
        pending[2] = 1 << 63;
        pending[63] = 1;
        pending[5] = 1; // not in the selector: not scanned
        let sel = (1 << 0) | (1 << 2) | (1 << 63) | (1 << 7);
        let mut seen = Vec::new();
        demux(sel, |w| pending[w], |p| seen.push(p));
        assert_eq!(seen, [1, 3, 2 * 64 + 63, 63 * 64]);
    }

    #[test]
    fn demux_skips_masked_ports() {
        let pending = [0b1111u64; 64];
        let mask = [0b0101u64; 64];
        let mut seen = Vec::new();
        demux(1, |w| pending[w] & !mask[w], |p| seen.push(p));
        assert_eq!(seen, [1, 3]);
    }

    #[test]
    fn port_words() {
        assert_eq!(port_word_mask(0), Some((0, 1)));
        assert_eq!(port_word_mask(65), Some((1, 2)));
        assert_eq!(port_word_mask(4095), Some((63, 1 << 63)));
        assert_eq!(port_word_mask(4096), None);
    }

    #[test]
    fn deadlines() {
        assert_eq!(deadline_after(10, 5), 15);
        assert_eq!(deadline_after(u64::MAX - 1, 5), u64::MAX);
        assert!(expired(15, 15) && !expired(14, 15));
        assert_eq!(timer_op_arg(0), 1);
        assert_eq!(timer_op_arg(123), 123);
        assert_eq!(timer_op_arg(u64::MAX), i64::MAX);
    }

    #[test]
    fn rates_and_formatting() {
        assert_eq!(rate_mhz(200, 2_000_000_000), 100_000);
        assert_eq!(rate_mhz(1, 0), 0);
        assert!(within_percent(80, 100, 20) && within_percent(120, 100, 20));
        assert!(!within_percent(79, 100, 20) && !within_percent(121, 100, 20));
        assert_eq!(format!("{}", Millis(100_123_456)), "100.123");
        assert_eq!(format!("{}", Millis(5_000)), "0.005");
        assert_eq!(format!("{}", Milli(99_872)), "99.872");
    }

    proptest! {
        #[test]
        fn demux_fires_exactly_the_active_ports(words in proptest::collection::vec(any::<u64>(), 64), sel in any::<u64>()) {
            let mut seen = Vec::new();
            demux(sel, |w| words[w], |p| seen.push(p));
            let want: Vec<u32> = (0..4096u32)
                .filter(|p| sel & (1 << (p / 64)) != 0 && words[(p / 64) as usize] & (1 << (p % 64)) != 0)
                .collect();
            prop_assert_eq!(seen, want);
        }

        #[test]
        fn table_matches_a_model(ops in proptest::collection::vec((0u32..40, any::<bool>(), any::<u8>()), 0..200)) {
            let mut t: HandlerTable<u8, 8> = HandlerTable::new();
            let mut model = std::collections::BTreeMap::new();
            for (port, insert, h) in ops {
                if insert {
                    let r = t.set(port, h);
                    if model.len() < 8 || model.contains_key(&port) {
                        prop_assert_eq!(r, Ok(model.insert(port, h)));
                    } else {
                        prop_assert_eq!(r, Err(TableError::Full));
                    }
                } else {
                    prop_assert_eq!(t.remove(port), model.remove(&port));
                }
                for p in 0..40 {
                    prop_assert_eq!(t.get(p), model.get(&p).copied());
                }
            }
        }
    }
}
