//! COM1, the hypervisor's console: a 16550 UART driven by polling.

use super::cpu::{inb, outb};

/// I/O base of COM1. The hypervisor keeps it; dom0 never gets access to it.
pub const COM1: u16 = 0x3f8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// A 16550 UART at an I/O base.
#[derive(Debug)]
pub struct Uart {
    base: u16,
}

impl Uart {
    /// A UART at `base`, not yet programmed.
    pub const fn new(base: u16) -> Self {
        Self { base }
    }

    /// Programs 115200 baud, 8N1, FIFOs on, interrupts off.
    pub fn init(&self) {
        outb(self.base + INT_ENABLE, 0x00);
        outb(self.base + LINE_CTRL, 0x80); // DLAB: divisor follows
        outb(self.base + DATA, 0x01); // divisor 1 = 115200 baud
        outb(self.base + INT_ENABLE, 0x00);
        outb(self.base + LINE_CTRL, 0x03); // 8 data bits, no parity, 1 stop bit
        outb(self.base + FIFO_CTRL, 0xC7); // enable and clear FIFOs, 14-byte threshold
        outb(self.base + MODEM_CTRL, 0x03); // DTR, RTS
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn put(&self, byte: u8) {
        // Bounded wait: a missing or wedged UART must not hang the hypervisor.
        for _ in 0..100_000 {
            if inb(self.base + LINE_STATUS) & LSR_THR_EMPTY != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        outb(self.base + DATA, byte);
    }

    /// Sends bytes, turning `\n` into `\r\n`.
    pub fn write_bytes(&self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
    }
}

impl core::fmt::Write for Uart {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}
