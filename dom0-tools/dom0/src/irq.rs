//! Device interrupts as event channels, as a Xen PV dom0 gets them: a GSI or an
//! MSI-X entry mapped to a pirq (`PHYSDEVOP_map_pirq`), bound to a port
//! (`EVTCHNOP_bind_pirq`),
//! whose handler counts the interrupt and flags it for the driver's loop, which
//! then serves the device and sends `PHYSDEVOP_eoi` (for a level-triggered GSI
//! the hypervisor keeps the pin masked until then). `docs/devices.md`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pv_runtime::abi::Errno;
use pv_runtime::abi::types::EvtchnPort;
use pv_runtime::{evtchn, physdev};

/// Device interrupts dom0 can bind.
const SLOTS: usize = 16;

/// The port of each slot (0: free).
static PORTS: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
/// Interrupts taken per slot.
static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// An interrupt arrived since the driver last looked.
static READY: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];

fn on_irq(port: EvtchnPort) {
    if let Some(i) = PORTS
        .iter()
        .position(|p| p.load(Ordering::Acquire) == port.0)
    {
        COUNTS[i].fetch_add(1, Ordering::Relaxed);
        READY[i].store(true, Ordering::Release);
    }
}

/// Where a device interrupt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A GSI (the function's INTx through the IO-APIC).
    Gsi(u32),
    /// An MSI-X table entry (the hypervisor programs it).
    Msix(u16),
}

/// One bound device interrupt.
#[derive(Debug, Clone, Copy)]
pub struct DevIrq {
    /// What it is.
    pub source: Source,
    /// The pirq it is mapped to (for a GSI the GSI's number, as Linux's
    /// `xen_register_pirq` asks for ISA and PCI GSIs; for MSI-X any free one).
    pub pirq: u32,
    /// The port it is bound to.
    pub port: EvtchnPort,
    slot: usize,
}

impl DevIrq {
    /// Maps `gsi` to a pirq and binds it. With `level`, the GSI is first set up
    /// as level-triggered, active high (`PHYSDEVOP_setup_gsi`); otherwise it keeps
    /// the mode the hypervisor gave it from the MADT.
    pub fn bind(gsi: u32, level: bool) -> Result<Self, (&'static str, Errno)> {
        let slot = PORTS
            .iter()
            .position(|p| p.load(Ordering::Acquire) == 0)
            .ok_or(("dom0's device-interrupt table", Errno::ENOSPC))?;
        if level {
            physdev::setup_gsi(gsi, true, false).map_err(|e| ("PHYSDEVOP_setup_gsi", e))?;
        }
        let pirq = physdev::map_pirq_gsi(gsi, Some(gsi)).map_err(|e| ("PHYSDEVOP_map_pirq", e))?;
        Self::bind_pirq(Source::Gsi(gsi), pirq, slot)
    }

    /// Maps MSI-X entry `entry` of `bus:devfn` (table at machine address `table`)
    /// to a pirq and binds it, as Linux's `xen_initdom_setup_msi_irqs` does. The
    /// hypervisor programs the entry and unmasks it when the port is bound.
    pub fn bind_msix(
        bus: u8,
        devfn: u8,
        entry: u16,
        table: u64,
    ) -> Result<Self, (&'static str, Errno)> {
        let slot = PORTS
            .iter()
            .position(|p| p.load(Ordering::Acquire) == 0)
            .ok_or(("dom0's device-interrupt table", Errno::ENOSPC))?;
        let pirq = physdev::map_pirq_msi(bus, devfn, entry, table)
            .map_err(|e| ("PHYSDEVOP_map_pirq (MSI-X)", e))?;
        Self::bind_pirq(Source::Msix(entry), pirq, slot).inspect_err(|_| {
            let _ = physdev::unmap_pirq(pirq);
        })
    }

    fn bind_pirq(source: Source, pirq: u32, slot: usize) -> Result<Self, (&'static str, Errno)> {
        let port = evtchn::bind_pirq(pirq, false).map_err(|e| ("EVTCHNOP_bind_pirq", e))?;
        PORTS[slot].store(port.0, Ordering::Release);
        evtchn::set_handler(port, evtchn::Handler::Fn(on_irq))
            .map_err(|_| ("the handler table", Errno::ENOSPC))?;
        evtchn::unmask(port).map_err(|e| ("EVTCHNOP_unmask", e))?;
        Ok(DevIrq {
            source,
            pirq,
            port,
            slot,
        })
    }

    /// Gives the interrupt back: the port is closed and the pirq unmapped (an
    /// MSI's vector goes back to the hypervisor).
    pub fn release(self) {
        let _ = evtchn::close(self.port);
        PORTS[self.slot].store(0, Ordering::Release);
        READY[self.slot].store(false, Ordering::Release);
        let _ = physdev::unmap_pirq(self.pirq);
    }

    /// "GSI 11 -> pirq 11 -> port 1" or "MSI-X 1 -> pirq 215 -> port 3".
    pub fn describe(&self) -> alloc::string::String {
        match self.source {
            Source::Gsi(g) => {
                alloc::format!("GSI {g} -> pirq {} -> port {}", self.pirq, self.port.0)
            }
            Source::Msix(e) => {
                alloc::format!("MSI-X {e} -> pirq {} -> port {}", self.pirq, self.port.0)
            }
        }
    }

    /// Takes the "interrupt arrived" flag (and the port's pending bit, should
    /// the upcall not have run yet: driver loops run with events masked).
    pub fn take(&self) -> bool {
        let pending = evtchn::clear_pending(self.port);
        if pending {
            COUNTS[self.slot].fetch_add(1, Ordering::Relaxed);
        }
        READY[self.slot].swap(false, Ordering::AcqRel) || pending
    }

    /// Whether an interrupt arrived or is pending (without taking it).
    pub fn arrived(&self) -> bool {
        READY[self.slot].load(Ordering::Acquire) || evtchn::is_pending(self.port)
    }

    /// Interrupts taken so far.
    pub fn count(&self) -> u64 {
        COUNTS[self.slot].load(Ordering::Relaxed)
    }

    /// `PHYSDEVOP_eoi`: the device has been served (a no-op for an edge GSI,
    /// but `irq_status_query` always says it is needed, as Xen 4.17 does).
    pub fn eoi(&self) {
        let _ = physdev::eoi(self.pirq);
    }
}

/// If `irq` arrived, lets the driver acknowledge its device (`ack`: reading
/// the device's interrupt status lowers its line), then sends the EOI.
pub fn service(irq: Option<DevIrq>, ack: impl FnOnce()) {
    if let Some(i) = irq
        && i.take()
    {
        ack();
        i.eoi();
    }
}

/// Blocks until `irq` arrives, at most until `until` (system time; callers
/// pass a short safety-net poll, so a lost interrupt costs latency, not a
/// hang). A device without an interrupt just yields once.
pub fn wait(irq: Option<DevIrq>, until: u64) {
    match irq {
        Some(i) => {
            let _ = pv_runtime::sched::wait_until(|| i.arrived(), Some(until));
        }
        None => pv_runtime::sched::yield_now(),
    }
}
