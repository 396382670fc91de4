//! COM2's ports, through the hypervisor's `in`/`out` emulation.

use dom0_core::uart::{COM2, PortIo};

/// The eight ports of the UART at [`COM2`].
#[derive(Debug)]
pub struct Com2Ports {
    _private: (),
}

impl Com2Ports {
    /// The ports, once the virtual IOPL allows port I/O
    /// (`physdev::set_iopl(1)` succeeded).
    pub fn new() -> Self {
        Com2Ports { _private: () }
    }
}

impl PortIo for Com2Ports {
    fn inb(&mut self, port: u16) -> u8 {
        debug_assert!((COM2..COM2 + 8).contains(&port));
        // SAFETY: dom0 owns COM2 (the control link: no other driver in this
        // kernel touches it), the UART does no DMA, and `new`'s caller raised
        // the virtual IOPL, so the access is emulated rather than a #GP.
        unsafe { pv_runtime::physdev::inb(port) }
    }

    fn outb(&mut self, port: u16, value: u8) {
        debug_assert!((COM2..COM2 + 8).contains(&port));
        // SAFETY: as for `inb`.
        unsafe { pv_runtime::physdev::outb(port, value) }
    }
}

/// COM2's ISA IRQ (and GSI, unless the MADT moves it; QEMU does not).
pub const COM2_GSI: u32 = 3;
