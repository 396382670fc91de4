//! The 8254 PIT, used once at boot as a reference clock for calibration.

use super::cpu::{inb, outb};

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

const CHANNEL2_DATA: u16 = 0x42;
const MODE_CMD: u16 = 0x43;
const GATE_PORT: u16 = 0x61;
const GATE_BIT: u8 = 0x01;
const SPEAKER_BIT: u8 = 0x02;
const OUT2_BIT: u8 = 0x20;

/// Counts `ticks` PIT ticks on channel 2 (gate through port 0x61, speaker off) and calls
/// `started` just after the count begins. Returns false if the PIT never finished, which
/// happens on machines without one.
pub fn wait_ticks(ticks: u16, started: impl FnOnce()) -> bool {
    let gate = inb(GATE_PORT) & !(SPEAKER_BIT | GATE_BIT);
    outb(GATE_PORT, gate);
    outb(MODE_CMD, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
    let [lo, hi] = ticks.to_le_bytes();
    outb(CHANNEL2_DATA, lo);
    outb(CHANNEL2_DATA, hi);
    outb(GATE_PORT, gate | GATE_BIT); // rising gate edge starts the count
    started();
    // Generous bound: far more iterations than any PIT needs for 65535 ticks.
    for _ in 0..200_000_000u64 {
        if inb(GATE_PORT) & OUT2_BIT != 0 {
            outb(GATE_PORT, gate);
            return true;
        }
    }
    outb(GATE_PORT, gate);
    false
}
