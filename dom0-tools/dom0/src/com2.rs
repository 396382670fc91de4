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

/// COM2's interrupt as an event channel: GSI 3 mapped to a pirq
/// (`PHYSDEVOP_map_pirq`) and bound to a port (`EVTCHNOP_bind_pirq`), whose
/// handler counts it and wakes the serve loop.
#[derive(Debug, Clone, Copy)]
pub struct Com2Irq {
    /// The pirq (GSI 3 asks for pirq 3, as Linux's `xen_register_pirq` does).
    pub pirq: u32,
    /// The port it is bound to.
    pub port: pv_runtime::abi::types::EvtchnPort,
}

/// COM2's ISA IRQ (and GSI, unless the MADT moves it; QEMU does not).
pub const COM2_GSI: u32 = 3;

/// Interrupts taken (handler runs).
static IRQS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// An interrupt arrived since the serve loop last looked.
static READY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

fn on_irq(_port: pv_runtime::abi::types::EvtchnPort) {
    use core::sync::atomic::Ordering;
    IRQS.fetch_add(1, Ordering::Relaxed);
    READY.store(true, Ordering::Release);
}

impl Com2Irq {
    /// Maps and binds COM2's IRQ; `level` first sets GSI 3 up as level-triggered,
    /// active high (`PHYSDEVOP_setup_gsi`), which QEMU's UART line supports.
    pub fn bind(level: bool) -> Result<Self, (&'static str, pv_runtime::abi::Errno)> {
        use pv_runtime::evtchn;
        if level {
            pv_runtime::physdev::setup_gsi(COM2_GSI, true, false)
                .map_err(|e| ("PHYSDEVOP_setup_gsi", e))?;
        }
        let pirq = pv_runtime::physdev::map_pirq_gsi(COM2_GSI, Some(COM2_GSI))
            .map_err(|e| ("PHYSDEVOP_map_pirq", e))?;
        let port = evtchn::bind_pirq(pirq, false).map_err(|e| ("EVTCHNOP_bind_pirq", e))?;
        evtchn::set_handler(port, evtchn::Handler::Fn(on_irq))
            .map_err(|_| ("the handler table", pv_runtime::abi::Errno::ENOSPC))?;
        evtchn::unmask(port).map_err(|e| ("EVTCHNOP_unmask", e))?;
        Ok(Com2Irq { pirq, port })
    }

    /// Takes the "interrupt arrived" flag (and the port's pending bit, should
    /// the upcall not have run yet: the serve loop runs with events masked).
    pub fn take(&self) -> bool {
        let pending = pv_runtime::evtchn::clear_pending(self.port);
        if pending {
            IRQS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        READY.swap(false, core::sync::atomic::Ordering::AcqRel) || pending
    }

    /// Whether the port is pending.
    pub fn pending(&self) -> bool {
        pv_runtime::evtchn::is_pending(self.port)
    }

    /// Whether an interrupt arrived (without taking it).
    pub fn ready(&self) -> bool {
        READY.load(core::sync::atomic::Ordering::Acquire)
    }

    /// Interrupts taken so far.
    pub fn count(&self) -> u64 {
        IRQS.load(core::sync::atomic::Ordering::Relaxed)
    }

    /// `PHYSDEVOP_eoi` (a no-op for the edge-triggered IRQ, but `irq_status_query`
    /// always says it is needed, as Xen 4.17 does).
    pub fn eoi(&self) {
        let _ = pv_runtime::physdev::eoi(self.pirq);
    }
}
