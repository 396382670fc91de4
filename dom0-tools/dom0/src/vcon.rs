//! The fast control link: port 0 of a virtio-console device (QEMU's
//! `virtio-serial-pci` with a `virtconsole` on a unix socket), driven with
//! `virtio-drivers`' PCI transport and virtqueues.
//!
//! The crate's own console driver keeps one 4 KiB receive buffer and waits
//! for each transmission in a spin loop; this one keeps [`RX_SLOTS`] receive
//! buffers posted and [`TX_SLOTS`] transmissions in flight, in DMA memory that
//! lives as long as the device, and wakes on the device's interrupt. Bytes are
//! the same protocol as COM2's (`docs/control-protocol.md`).

use alloc::collections::VecDeque;

use pv_runtime::virtio::{DmaBuf, XenHal, dma_alloc};
use pv_runtime::{sched, time};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, Transport};

use crate::irq::{self, DevIrq};

/// Bytes per buffer.
const SLOT: usize = 4096;
/// Receive buffers posted at once.
const RX_SLOTS: usize = 32;
/// Transmissions in flight at once.
const TX_SLOTS: usize = 8;
/// Descriptors per queue (a power of two, at least the slots).
const QUEUE: usize = 32;
/// The safety-net poll while waiting for transmit space.
const POLL_NS: u64 = 20_000_000;

const RECEIVEQ: u16 = 0;
const TRANSMITQ: u16 = 1;

bitflags::bitflags! {
    /// The features this driver asks for: the modern interface only (no
    /// multiport, no size, no emergency write).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Features: u64 {
        /// `VIRTIO_F_VERSION_1`.
        const VERSION_1 = 1 << 32;
    }
}

/// Why the console could not start.
#[derive(Debug)]
pub struct StartError(pub virtio_drivers::Error);

/// The link's transmit side stopped (the host does not read).
#[derive(Debug, Clone, Copy)]
pub struct Stalled {
    /// Bytes that went out before it stopped.
    pub sent: usize,
}

/// A virtio console's port 0.
pub struct VirtioConsole {
    transport: PciTransport,
    rxq: VirtQueue<XenHal, QUEUE>,
    txq: VirtQueue<XenHal, QUEUE>,
    rx_mem: DmaBuf,
    tx_mem: DmaBuf,
    /// Posted receive buffers in the order the device will complete them.
    rx_posted: VecDeque<(u16, usize)>,
    /// Transmissions in flight, in order: (token, slot, length).
    tx_flight: VecDeque<(u16, usize, usize)>,
    /// Received bytes not yet read: (slot, start, end).
    rx_ready: VecDeque<(usize, usize, usize)>,
    irq: Option<DevIrq>,
    /// Bytes received and sent.
    pub bytes: (u64, u64),
}

impl core::fmt::Debug for VirtioConsole {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VirtioConsole")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl VirtioConsole {
    /// Starts the device behind `transport` with `irq` (if dom0 could bind it)
    /// and posts every receive buffer.
    pub fn new(mut transport: PciTransport, irq: Option<DevIrq>) -> Result<Self, StartError> {
        let fail = |t: &mut PciTransport, e| {
            t.set_status(DeviceStatus::FAILED);
            StartError(e)
        };
        transport.begin_init(Features::VERSION_1);
        let rxq = VirtQueue::new(&mut transport, RECEIVEQ, false, false)
            .map_err(|e| fail(&mut transport, e))?;
        let txq = VirtQueue::new(&mut transport, TRANSMITQ, false, false)
            .map_err(|e| fail(&mut transport, e))?;
        let (Some(rx_mem), Some(tx_mem)) = (dma_alloc(RX_SLOTS), dma_alloc(TX_SLOTS)) else {
            return Err(fail(&mut transport, virtio_drivers::Error::DmaError));
        };
        transport.finish_init();
        let mut c = VirtioConsole {
            transport,
            rxq,
            txq,
            rx_mem,
            tx_mem,
            rx_posted: VecDeque::new(),
            tx_flight: VecDeque::new(),
            rx_ready: VecDeque::new(),
            irq,
            bytes: (0, 0),
        };
        for slot in 0..RX_SLOTS {
            c.post_rx(slot).map_err(StartError)?;
        }
        Ok(c)
    }

    /// The device's interrupt, if bound.
    pub fn irq(&self) -> Option<DevIrq> {
        self.irq
    }

    fn slot(mem: &DmaBuf, slot: usize) -> &'static mut [u8] {
        let p: *mut u8 = core::ptr::with_exposed_provenance_mut(
            usize::try_from(mem.va).unwrap_or(0) + slot * SLOT,
        );
        // SAFETY: `mem` is DMA memory of at least `slot + 1` pages, mapped
        // writable for as long as the console lives (it is never freed); each
        // slot is handed to the device or read by the driver, never both at
        // once (the queues' order says whose it is).
        unsafe { core::slice::from_raw_parts_mut(p, SLOT) }
    }

    fn post_rx(&mut self, slot: usize) -> Result<(), virtio_drivers::Error> {
        let buf = Self::slot(&self.rx_mem, slot);
        // SAFETY: the slot belongs to this console's DMA memory, which outlives
        // the queue, and nothing reads it until the device hands it back.
        let token = unsafe { self.rxq.add(&[], &mut [buf])? };
        self.rx_posted.push_back((token, slot));
        if self.rxq.should_notify() {
            self.transport.notify(RECEIVEQ);
        }
        Ok(())
    }

    /// Acknowledges the device after an interrupt, and collects what it
    /// completed.
    fn service(&mut self) {
        let transport = &mut self.transport;
        irq::service(self.irq, || {
            transport.ack_interrupt();
        });
        while let Some(&(token, slot)) = self.rx_posted.front() {
            if self.rxq.peek_used() != Some(token) {
                break;
            }
            self.rx_posted.pop_front();
            let buf = Self::slot(&self.rx_mem, slot);
            // SAFETY: the same buffer `post_rx` added with this token.
            match unsafe { self.rxq.pop_used(token, &[], &mut [buf]) } {
                Ok(len) => {
                    let len = usize::try_from(len).unwrap_or(0).min(SLOT);
                    self.rx_ready.push_back((slot, 0, len));
                }
                Err(_) => {
                    let _ = self.post_rx(slot);
                }
            }
        }
        while let Some(&(token, slot, len)) = self.tx_flight.front() {
            if self.txq.peek_used() != Some(token) {
                break;
            }
            self.tx_flight.pop_front();
            let buf = &Self::slot(&self.tx_mem, slot)[..len];
            // SAFETY: the same buffer `write` added with this token.
            let _ = unsafe { self.txq.pop_used(token, &[buf], &mut []) };
        }
    }

    /// Reads what has arrived into `out` (at most its length); 0 when nothing.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        self.service();
        let mut n = 0;
        while n < out.len() {
            let Some((slot, start, end)) = self.rx_ready.front_mut() else {
                break;
            };
            let take = (*end - *start).min(out.len() - n);
            let buf = Self::slot(&self.rx_mem, *slot);
            out[n..n + take].copy_from_slice(&buf[*start..*start + take]);
            *start += take;
            n += take;
            if *start == *end {
                let slot = *slot;
                self.rx_ready.pop_front();
                let _ = self.post_rx(slot);
            }
        }
        self.bytes.0 += n as u64;
        n
    }

    /// Whether the device has something for the driver (an interrupt arrived,
    /// or received bytes wait).
    pub fn arrived(&self) -> bool {
        !self.rx_ready.is_empty() || self.irq.is_some_and(|i| i.arrived())
    }

    /// Queues `data` for the host, waiting for transmit space (blocked on the
    /// interrupt); gives up when the host takes nothing for `stall_ns`.
    pub fn write(&mut self, data: &[u8], stall_ns: u64) -> Result<(), Stalled> {
        let mut sent = 0;
        for chunk in data.chunks(SLOT) {
            let deadline = time::system_time_ns().saturating_add(stall_ns);
            loop {
                self.service();
                if self.tx_flight.len() < TX_SLOTS {
                    break;
                }
                let now = time::system_time_ns();
                if now >= deadline {
                    return Err(Stalled { sent });
                }
                irq::wait(self.irq, now.saturating_add(POLL_NS).min(deadline));
            }
            let slot = (0..TX_SLOTS)
                .find(|s| !self.tx_flight.iter().any(|(_, t, _)| t == s))
                .unwrap_or(0);
            let buf = &mut Self::slot(&self.tx_mem, slot)[..chunk.len()];
            buf.copy_from_slice(chunk);
            // SAFETY: the slot is free (no transmission in flight uses it) and
            // lives as long as the queue; nothing writes it until it is popped.
            let token = match unsafe { self.txq.add(&[buf], &mut []) } {
                Ok(t) => t,
                Err(_) => return Err(Stalled { sent }),
            };
            self.tx_flight.push_back((token, slot, chunk.len()));
            if self.txq.should_notify() {
                self.transport.notify(TRANSMITQ);
            }
            sent += chunk.len();
            self.bytes.1 += chunk.len() as u64;
        }
        Ok(())
    }

    /// Waits until every queued byte has left, or `deadline`.
    pub fn flush(&mut self, deadline: u64) -> Result<(), Stalled> {
        loop {
            self.service();
            if self.tx_flight.is_empty() {
                return Ok(());
            }
            if time::system_time_ns() >= deadline {
                return Err(Stalled { sent: 0 });
            }
            sched::yield_now();
        }
    }
}
