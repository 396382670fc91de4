//! A 16550 UART driver, polled while bytes flow and interrupt-driven when idle,
//! over a [`PortIo`] trait.
//!
//! In dom0 each register access is an `in`/`out` that traps to the hypervisor
//! and is emulated, so the driver keeps accesses few: one status read per
//! received byte, and one status read per 16 bytes sent (the FIFO's depth).

use core::fmt;

/// Byte-wide port I/O.
pub trait PortIo {
    /// Reads port `port`.
    fn inb(&mut self, port: u16) -> u8;
    /// Writes `value` to port `port`.
    fn outb(&mut self, port: u16, value: u8);
}

/// COM2's base port, the control link's UART.
pub const COM2: u16 = 0x2F8;
/// The 16550's input clock divided by 16: divisor 1 gives this rate.
pub const BASE_BAUD: u32 = 115_200;
/// The transmit FIFO's depth.
pub const FIFO_DEPTH: usize = 16;

/// Register offsets from the base port.
mod reg {
    /// Receive buffer (read) / transmit holding (write); divisor low with DLAB.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor high with DLAB.
    pub const IER: u16 = 1;
    /// Interrupt identification (read) / FIFO control (write).
    pub const IIR_FCR: u16 = 2;
    /// Line control.
    pub const LCR: u16 = 3;
    /// Modem control.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Scratch.
    pub const SCR: u16 = 7;
}

/// Line-status bits.
pub mod lsr {
    /// A received byte is waiting.
    pub const DATA_READY: u8 = 1 << 0;
    /// A received byte was lost (the FIFO was full).
    pub const OVERRUN: u8 = 1 << 1;
    /// The transmit holding register (or FIFO) is empty.
    pub const THR_EMPTY: u8 = 1 << 5;
    /// The transmitter is idle: everything has left.
    pub const TX_IDLE: u8 = 1 << 6;
}

const LCR_DLAB: u8 = 0x80;
const LCR_8N1: u8 = 0x03;
/// FIFOs on, both cleared, receive trigger at 14 bytes.
const FCR_ENABLE_CLEAR_14: u8 = 0xC7;
/// IIR bits 6-7 both set: the FIFOs are on (a 16550A).
const IIR_FIFO_ON: u8 = 0xC0;
/// DTR and RTS.
const MCR_DTR_RTS: u8 = 0x03;
/// MCR: OUT2, the interrupt-line enable of PC UARTs.
const MCR_OUT2: u8 = 0x08;
/// IER: received data available (and, with FIFOs, the character timeout).
const IER_RX_DATA: u8 = 0x01;

/// Why the UART could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartError {
    /// Nothing answers at the port (the scratch register does not keep a
    /// value): the machine has no such UART, or the domain may not reach it.
    Absent {
        /// The base port.
        base: u16,
        /// What the scratch register read back.
        read: u8,
    },
    /// The baud rate is not `BASE_BAUD / n` for a 16-bit `n`.
    BadBaud(u32),
}

impl fmt::Display for UartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UartError::Absent { base, read } => write!(
                f,
                "no 16550 UART at port {base:#x} (its scratch register reads {read:#04x}); \
                 QEMU needs a second serial port (scripts/run adds one as the control socket)"
            ),
            UartError::BadBaud(b) => write!(
                f,
                "{b} baud is not {BASE_BAUD} divided by a whole number up to 65535"
            ),
        }
    }
}

/// Sending stopped: the transmitter did not drain before the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stalled {
    /// Bytes handed to the UART before it stalled.
    pub sent: usize,
}

/// A 16550 in polled mode, 8N1.
#[derive(Debug)]
pub struct Uart<P> {
    io: P,
    base: u16,
    fifo: bool,
    overruns: u64,
    /// The IER value last written (outside DLAB).
    ier: u8,
}

impl<P: PortIo> Uart<P> {
    /// Checks the UART at `base` is there and programs it: `baud`, 8N1, FIFOs
    /// on, interrupts off.
    pub fn init(mut io: P, base: u16, baud: u32) -> Result<Self, UartError> {
        let divisor = match BASE_BAUD.checked_div(baud) {
            Some(d) if d * baud == BASE_BAUD => {
                u16::try_from(d).map_err(|_| UartError::BadBaud(baud))?
            }
            _ => return Err(UartError::BadBaud(baud)),
        };
        for probe in [0x5A, 0xA5] {
            io.outb(base + reg::SCR, probe);
            let read = io.inb(base + reg::SCR);
            if read != probe {
                return Err(UartError::Absent { base, read });
            }
        }
        io.outb(base + reg::IER, 0);
        io.outb(base + reg::LCR, LCR_DLAB);
        let [lo, hi] = divisor.to_le_bytes();
        io.outb(base + reg::DATA, lo);
        io.outb(base + reg::IER, hi);
        io.outb(base + reg::LCR, LCR_8N1);
        io.outb(base + reg::IIR_FCR, FCR_ENABLE_CLEAR_14);
        io.outb(base + reg::MCR, MCR_DTR_RTS);
        let fifo = io.inb(base + reg::IIR_FCR) & IIR_FIFO_ON == IIR_FIFO_ON;
        Ok(Uart {
            io,
            base,
            fifo,
            overruns: 0,
            ier: 0,
        })
    }

    /// Turns the receive interrupts on (IER: data available, which with the FIFO
    /// on means "trigger level reached or a character timeout"), and OUT2, which
    /// gates the UART's IRQ line on PC hardware. Reading until empty ([`Uart::read`])
    /// drops the line again.
    pub fn enable_rx_interrupt(&mut self) {
        self.set_ier(IER_RX_DATA);
        self.io.outb(self.base + reg::MCR, MCR_DTR_RTS | MCR_OUT2);
    }

    /// Receive interrupts off (`false`) or on again (`true`), for a driver that
    /// polls while bytes flow: with them on, every byte that lands in a FIFO the
    /// poller just emptied raises a new edge, thousands of interrupts a second that
    /// nobody waits for. A UART that has data when they come back on raises its line
    /// at once. Writes IER only when the value changes.
    pub fn set_rx_interrupt(&mut self, on: bool) {
        self.set_ier(if on { IER_RX_DATA } else { 0 });
    }

    fn set_ier(&mut self, ier: u8) {
        if self.ier != ier {
            self.io.outb(self.base + reg::IER, ier);
            self.ier = ier;
        }
    }

    /// Whether the FIFOs are on (16 bytes are sent per status check).
    pub fn has_fifo(&self) -> bool {
        self.fifo
    }

    /// Times the line status showed a lost received byte.
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    fn status(&mut self) -> u8 {
        let s = self.io.inb(self.base + reg::LSR);
        if s & lsr::OVERRUN != 0 {
            self.overruns += 1;
        }
        s
    }

    /// Reads the bytes waiting, up to `buf.len()`; returns how many.
    pub fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() && self.status() & lsr::DATA_READY != 0 {
            buf[n] = self.io.inb(self.base + reg::DATA);
            n += 1;
        }
        n
    }

    /// Waits until the line status has `bit`, or `now()` passes `deadline`.
    fn wait(&mut self, bit: u8, now: &mut impl FnMut() -> u64, deadline: u64) -> bool {
        loop {
            if self.status() & bit != 0 {
                return true;
            }
            if now() >= deadline {
                return false;
            }
        }
    }

    /// Sends `data`, a FIFO-full at a time; gives up (the peer stopped
    /// reading) when the transmitter makes no progress for `stall_ns` by
    /// `now()`. A peer that reads slowly (a loaded host) is waited for as long
    /// as it keeps reading.
    pub fn write(
        &mut self,
        data: &[u8],
        now: &mut impl FnMut() -> u64,
        stall_ns: u64,
    ) -> Result<(), Stalled> {
        let step = if self.fifo { FIFO_DEPTH } else { 1 };
        let mut sent = 0;
        for chunk in data.chunks(step) {
            let deadline = now().saturating_add(stall_ns);
            if !self.wait(lsr::THR_EMPTY, now, deadline) {
                return Err(Stalled { sent });
            }
            for &b in chunk {
                self.io.outb(self.base + reg::DATA, b);
            }
            sent += chunk.len();
        }
        Ok(())
    }

    /// Waits until every byte has left the transmitter, or `deadline`.
    pub fn flush(&mut self, now: &mut impl FnMut() -> u64, deadline: u64) -> Result<(), Stalled> {
        if self.wait(lsr::TX_IDLE, now, deadline) {
            Ok(())
        } else {
            Err(Stalled { sent: 0 })
        }
    }
}

impl<P: PortIo + ?Sized> PortIo for &mut P {
    fn inb(&mut self, port: u16) -> u8 {
        (**self).inb(port)
    }

    fn outb(&mut self, port: u16, value: u8) {
        (**self).outb(port, value);
    }
}

/// A software 16550 for tests: the registers the driver uses, a receive
/// queue, a transmit FIFO that drains only when told, and an access count.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct FakeUart {
    /// Bytes waiting to be received.
    pub rx: alloc::collections::VecDeque<u8>,
    /// Bytes sent on the line.
    pub tx: alloc::vec::Vec<u8>,
    /// Bytes in the transmit FIFO, not yet on the line.
    pub tx_fifo: alloc::vec::Vec<u8>,
    /// Whether the transmitter drains its FIFO to `tx` when status is read.
    pub draining: bool,
    /// Whether the device exists (else reads are all ones, writes dropped).
    pub absent: bool,
    /// Whether the FIFO is enabled (FCR bit 0).
    pub fifo_on: bool,
    /// Line control register.
    pub lcr: u8,
    /// Divisor latch.
    pub divisor: u16,
    /// Scratch register.
    pub scr: u8,
    /// Set one overrun on the next status read.
    pub overrun: bool,
    /// Interrupt enable register.
    pub ier: u8,
    /// Port accesses (each traps to the hypervisor in dom0).
    pub accesses: u64,
}

#[cfg(test)]
impl FakeUart {
    /// A present UART whose transmitter drains at once.
    pub fn new() -> Self {
        FakeUart {
            draining: true,
            ..FakeUart::default()
        }
    }
}

#[cfg(test)]
impl PortIo for FakeUart {
    fn inb(&mut self, port: u16) -> u8 {
        self.accesses += 1;
        if self.absent {
            return 0xFF;
        }
        match port.wrapping_sub(COM2) {
            reg::DATA if self.lcr & LCR_DLAB == 0 => self.rx.pop_front().unwrap_or(0),
            reg::IIR_FCR => {
                if self.fifo_on {
                    0xC1
                } else {
                    0x01
                }
            }
            reg::LSR => {
                if self.draining {
                    self.tx.append(&mut self.tx_fifo);
                }
                let mut s = 0;
                if !self.rx.is_empty() {
                    s |= lsr::DATA_READY;
                }
                if core::mem::take(&mut self.overrun) {
                    s |= lsr::OVERRUN;
                }
                if self.tx_fifo.is_empty() {
                    s |= lsr::THR_EMPTY | lsr::TX_IDLE;
                }
                s
            }
            reg::SCR => self.scr,
            reg::LCR => self.lcr,
            _ => 0,
        }
    }

    fn outb(&mut self, port: u16, value: u8) {
        self.accesses += 1;
        if self.absent {
            return;
        }
        let dlab = self.lcr & LCR_DLAB != 0;
        match port.wrapping_sub(COM2) {
            reg::DATA if dlab => self.divisor = (self.divisor & 0xFF00) | u16::from(value),
            reg::IER if dlab => {
                self.divisor = (self.divisor & 0x00FF) | (u16::from(value) << 8);
            }
            reg::IER => self.ier = value,
            reg::DATA => {
                let depth = if self.fifo_on { FIFO_DEPTH } else { 1 };
                assert!(self.tx_fifo.len() < depth, "transmit FIFO overflow");
                self.tx_fifo.push(value);
            }
            reg::IIR_FCR => self.fifo_on = value & 1 != 0,
            reg::LCR => self.lcr = value,
            reg::SCR => self.scr = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> impl FnMut() -> u64 {
        let mut t = 0;
        move || {
            t += 1;
            t
        }
    }

    #[test]
    fn init_programs_115200_8n1_with_fifo() {
        let mut f = FakeUart::new();
        let u = Uart::init(&mut f, COM2, 115_200).unwrap();
        assert!(u.has_fifo());
        assert_eq!(f.divisor, 1);
        assert_eq!(f.lcr, LCR_8N1, "DLAB off again");
        assert!(f.fifo_on);
        let mut f = FakeUart::new();
        Uart::init(&mut f, COM2, 9600).unwrap();
        assert_eq!(f.divisor, 12);
    }

    #[test]
    fn absent_and_bad_baud() {
        let mut f = FakeUart {
            absent: true,
            ..FakeUart::new()
        };
        let e = Uart::init(&mut f, COM2, 115_200).unwrap_err();
        assert_eq!(
            e,
            UartError::Absent {
                base: COM2,
                read: 0xFF
            }
        );
        assert!(alloc::format!("{e}").contains("0x2f8"));
        let mut f = FakeUart::new();
        assert_eq!(
            Uart::init(&mut f, COM2, 100_000).unwrap_err(),
            UartError::BadBaud(100_000)
        );
        assert_eq!(
            Uart::init(&mut f, COM2, 0).unwrap_err(),
            UartError::BadBaud(0)
        );
    }

    #[test]
    fn read_takes_what_waits_and_counts_overruns() {
        let mut u = Uart::init(FakeUart::new(), COM2, 115_200).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(u.read(&mut buf), 0);
        u.io.rx.extend(b"hello");
        u.io.overrun = true;
        assert_eq!(u.read(&mut buf), 4);
        assert_eq!(&buf, b"hell");
        assert_eq!(u.read(&mut buf), 1);
        assert_eq!(buf[0], b'o');
        assert_eq!(u.overruns(), 1);
    }

    #[test]
    fn write_fills_the_fifo_per_status_check() {
        let mut u = Uart::init(FakeUart::new(), COM2, 115_200).unwrap();
        let data: alloc::vec::Vec<u8> = (0..100u8).collect();
        let before = u.io.accesses;
        u.write(&data, &mut clock(), u64::MAX).unwrap();
        assert_eq!(
            u.io.accesses - before,
            100 + 7,
            "100 data writes and one status read per 16 bytes"
        );
        u.flush(&mut clock(), u64::MAX).unwrap();
        assert_eq!(u.io.tx, data);
    }

    #[test]
    fn rx_interrupts_toggle_with_one_write_per_change() {
        let mut u = Uart::init(FakeUart::new(), COM2, 115_200).unwrap();
        assert_eq!(u.io.ier, 0, "init leaves interrupts off");
        u.enable_rx_interrupt();
        assert_eq!(u.io.ier, IER_RX_DATA);
        let before = u.io.accesses;
        u.set_rx_interrupt(true);
        assert_eq!(u.io.accesses, before, "no write when nothing changes");
        u.set_rx_interrupt(false);
        u.set_rx_interrupt(false);
        assert_eq!((u.io.ier, u.io.accesses - before), (0, 1));
        u.set_rx_interrupt(true);
        assert_eq!((u.io.ier, u.io.accesses - before), (IER_RX_DATA, 2));
    }

    #[test]
    fn a_stuck_transmitter_stalls_by_the_deadline() {
        let mut u = Uart::init(FakeUart::new(), COM2, 115_200).unwrap();
        u.io.draining = false;
        let r = u.write(&[0u8; 40], &mut clock(), 1000);
        assert_eq!(r, Err(Stalled { sent: 16 }));
        assert_eq!(u.flush(&mut clock(), 10), Err(Stalled { sent: 0 }));
    }
}
