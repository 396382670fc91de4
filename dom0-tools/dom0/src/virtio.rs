//! dom0's virtio devices, driven with the `virtio-drivers` crate over the PCI
//! transport, through `pv_runtime::virtio`'s HAL (machine addresses, bounce
//! buffers, uncached BARs) and interrupt-driven: a request is queued, dom0
//! blocks until the device's GSI (a pirq bound to an event channel) fires,
//! then acknowledges the device, completes the request and sends the EOI.
//! `docs/devices.md`.

use alloc::string::String;
use alloc::vec::Vec;

use dom0_core::pci::Function;
use pv_runtime::virtio::{Cf8, XenHal};
use pv_runtime::{println, time};
use virtio_drivers::device::blk::{BlkReq, BlkResp, SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::irq::{self, DevIrq};
use crate::vcon::VirtioConsole;
use dom0_core::ether;
use virtio_drivers::device::net::VirtIONetRaw;

/// The virtio vendor id.
const VIRTIO_VENDOR: u16 = 0x1AF4;
/// The safety-net poll while a request is in flight (an interrupt normally
/// ends the wait long before; without the poll a lost interrupt would stall
/// the disk for good).
const POLL_NS: u64 = 50_000_000;

/// A virtio-blk disk dom0 drives.
pub struct Disk {
    /// Its name: the serial number QEMU gives it (`scripts/run --disk
    /// PATH,name=NAME`), else `vdN`.
    pub name: String,
    /// Where it is on the PCI bus.
    pub bdf: (u8, u8, u8),
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Whether the device refuses writes.
    pub readonly: bool,
    blk: VirtIOBlk<XenHal, PciTransport>,
    irq: Option<DevIrq>,
    /// Requests completed.
    pub requests: u64,
}

impl core::fmt::Debug for Disk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Disk")
            .field("name", &self.name)
            .field("bdf", &self.bdf)
            .field("sectors", &self.sectors)
            .field("readonly", &self.readonly)
            .finish_non_exhaustive()
    }
}

/// Why a disk request failed.
#[derive(Debug)]
pub enum DiskError {
    /// The device or the driver refused it.
    Virtio(virtio_drivers::Error),
    /// Beyond the end of the disk, or not whole sectors.
    Range,
}

impl core::fmt::Display for DiskError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DiskError::Virtio(e) => write!(f, "{e}"),
            DiskError::Range => f.write_str("outside the disk, or not whole sectors"),
        }
    }
}

impl From<virtio_drivers::Error> for DiskError {
    fn from(e: virtio_drivers::Error) -> Self {
        DiskError::Virtio(e)
    }
}

/// The virtio devices dom0 drives.
#[derive(Debug, Default)]
pub struct Devices {
    /// virtio-blk disks.
    pub disks: Vec<Disk>,
    /// The fast control link (the first virtio console).
    pub console: Option<VirtioConsole>,
    /// virtio-net NICs.
    pub nics: Vec<Nic>,
    /// Where the console is on the PCI bus.
    pub console_bdf: Option<(u8, u8, u8)>,
}

impl Devices {
    /// The rows of `dom0ctl devices`: every PCI function of the scan, with what
    /// dom0 drives.
    pub fn rows(&self, fns: &[Function]) -> Vec<control_proto::DeviceRow> {
        fns.iter()
            .map(|f| {
                let bdf = (f.bus, f.dev, f.func);
                let driver = if let Some(d) = self.disks.iter().find(|d| d.bdf == bdf) {
                    alloc::format!(
                        "virtio-blk: disk {} ({} MiB{})",
                        d.name,
                        d.sectors / 2048,
                        if d.readonly { ", read-only" } else { "" }
                    )
                } else if let Some(n) = self.nics.iter().find(|n| n.bdf == bdf) {
                    alloc::format!("virtio-net: {} {}", n.name, ether::mac_text(n.mac()))
                } else if self.console_bdf == Some(bdf) {
                    String::from("virtio-console: the fast control link")
                } else {
                    String::new()
                };
                f.row(&driver)
            })
            .collect()
    }
}

/// Finds the virtio devices among `fns` (from the PCI scan), starts the ones
/// dom0 has a driver for and prints one line for each.
pub fn probe(fns: &[Function]) -> Devices {
    // SAFETY: dom0 raised its virtual IOPL before the scan, and configuration
    // space is used by one caller at a time (the scan is over; drivers do not
    // run concurrently on dom0's single vCPU).
    let mut root = PciRoot::new(unsafe { Cf8::new() });
    let mut irqs: Vec<DevIrq> = Vec::new();
    let mut disks = Vec::new();
    let mut console = None;
    let mut nics = Vec::new();
    let mut console_bdf = None;
    for f in fns.iter().filter(|f| f.vendor == VIRTIO_VENDOR) {
        let df = DeviceFunction {
            bus: f.bus,
            device: f.dev,
            function: f.func,
        };
        let where_ = alloc::format!("{:02x}:{:02x}.{}", f.bus, f.dev, f.func);
        // Memory decoding for the BARs, bus mastering for DMA.
        let (_, cmd) = root.get_status_command(df);
        root.set_command(df, cmd | Command::MEMORY_SPACE | Command::BUS_MASTER);
        let transport = match PciTransport::new::<XenHal, _>(&mut root, df) {
            Ok(t) => t,
            Err(e) => {
                println!("dom0: virtio {where_}: {e}");
                continue;
            }
        };
        match transport.device_type() {
            DeviceType::Block => match start_disk(f, fns, transport, &mut irqs, disks.len()) {
                Ok(d) => {
                    println!(
                        "dom0: disk {}: virtio-blk {where_}, {} sectors ({} MiB){}, {}",
                        d.name,
                        d.sectors,
                        d.sectors / 2048,
                        if d.readonly { ", read-only" } else { "" },
                        irq_text(d.irq)
                    );
                    disks.push(d);
                }
                Err(e) => println!("dom0: virtio-blk {where_}: {e}"),
            },
            DeviceType::Console if console.is_none() => {
                let irq = device_irq(f, fns, &mut irqs);
                match VirtioConsole::new(transport, irq) {
                    Ok(c) => {
                        println!(
                            "dom0: control link: virtio-console {where_}, {}",
                            irq_text(c.irq())
                        );
                        console = Some(c);
                        console_bdf = Some((f.bus, f.dev, f.func));
                    }
                    Err(e) => println!("dom0: virtio-console {where_}: {:?}", e.0),
                }
            }
            DeviceType::Network => {
                let irq = device_irq(f, fns, &mut irqs);
                let name = alloc::format!("eth{}", nics.len());
                match VirtIONetRaw::<XenHal, _, NET_QUEUE>::new(transport) {
                    Ok(mut net) => {
                        net.enable_interrupts();
                        println!(
                            "dom0: nic {name}: virtio-net {where_}, mac {}, {}",
                            ether::mac_text(net.mac_address()),
                            irq_text(irq)
                        );
                        nics.push(Nic {
                            bdf: (f.bus, f.dev, f.func),
                            name,
                            net,
                            irq,
                            rx: None,
                        });
                    }
                    Err(e) => println!("dom0: virtio-net {where_}: {e}"),
                }
            }
            other => println!("dom0: virtio {where_}: {other:?}: no driver in dom0 yet"),
        }
    }
    Devices {
        disks,
        console,
        nics,
        console_bdf,
    }
}

fn irq_text(irq: Option<DevIrq>) -> String {
    irq.map_or(String::from("irq none (polled)"), |i| {
        alloc::format!("irq GSI {} -> pirq {} -> port {}", i.gsi, i.pirq, i.port.0)
    })
}

fn start_disk(
    f: &Function,
    fns: &[Function],
    transport: PciTransport,
    irqs: &mut Vec<DevIrq>,
    index: usize,
) -> Result<Disk, DiskError> {
    let mut blk = VirtIOBlk::<XenHal, _>::new(transport)?;
    let mut id = [0u8; 20];
    let name = match blk.device_id(&mut id) {
        Ok(n) if n > 0 => String::from_utf8_lossy(&id[..n]).into_owned(),
        _ => alloc::format!(
            "vd{}",
            char::from(b'a' + u8::try_from(index % 26).unwrap_or(0))
        ),
    };
    let irq = device_irq(f, fns, irqs);
    blk.enable_interrupts();
    Ok(Disk {
        name,
        bdf: (f.bus, f.dev, f.func),
        sectors: blk.capacity(),
        readonly: blk.readonly(),
        blk,
        irq,
        requests: 0,
    })
}

/// The function's INTx as a bound device interrupt (shared with an earlier
/// device on the same GSI): the GSI the platform wires it to
/// (`dom0_core::pci::intx_gsi`), in the mode the hypervisor took from the MADT
/// (level for PCI).
fn device_irq(f: &Function, fns: &[Function], irqs: &mut Vec<DevIrq>) -> Option<DevIrq> {
    let gsi = dom0_core::pci::intx_gsi(f, fns)?;
    if let Some(i) = irqs.iter().find(|i| i.gsi == gsi) {
        return Some(*i);
    }
    match DevIrq::bind(gsi, false) {
        Ok(i) => {
            irqs.push(i);
            Some(i)
        }
        Err((what, e)) => {
            println!("dom0: GSI {gsi}: {what} failed ({e}); polling the device");
            None
        }
    }
}

impl Disk {
    /// Reads whole sectors from `sector` into `buf`.
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let block = self.check(sector, buf.len())?;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: `req`, `buf` and `resp` stay borrowed by this function until
        // the request completes (`wait` has no timeout), and nothing else touches
        // them meanwhile.
        let token = unsafe { self.blk.read_blocks_nb(block, &mut req, buf, &mut resp)? };
        self.wait(token)?;
        // SAFETY: the same buffers as `read_blocks_nb` was given.
        unsafe {
            self.blk.complete_read_blocks(token, &req, buf, &mut resp)?;
        }
        self.requests += 1;
        Ok(())
    }

    /// Writes whole sectors from `buf` at `sector`.
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        let block = self.check(sector, buf.len())?;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        // SAFETY: as in `read`.
        let token = unsafe { self.blk.write_blocks_nb(block, &mut req, buf, &mut resp)? };
        self.wait(token)?;
        // SAFETY: as in `read`.
        unsafe {
            self.blk
                .complete_write_blocks(token, &req, buf, &mut resp)?;
        }
        self.requests += 1;
        Ok(())
    }

    /// Interrupts taken for this disk's GSI.
    pub fn interrupts(&self) -> u64 {
        self.irq.map_or(0, |i| i.count())
    }

    /// The block number of `sector` if `len` bytes from it are whole sectors
    /// inside the disk.
    fn check(&self, sector: u64, len: usize) -> Result<usize, DiskError> {
        let n = (len / SECTOR_SIZE) as u64;
        let fits = sector.checked_add(n).is_some_and(|end| end <= self.sectors);
        if len == 0 || len % SECTOR_SIZE != 0 || !fits {
            return Err(DiskError::Range);
        }
        usize::try_from(sector).map_err(|_| DiskError::Range)
    }

    /// Blocks until request `token` is in the used ring: woken by the device's
    /// interrupt, which is then acknowledged at the device (reading its ISR
    /// lowers the line) and EOIed.
    fn wait(&mut self, token: u16) -> Result<(), DiskError> {
        loop {
            let blk = &mut self.blk;
            irq::service(self.irq, || {
                blk.ack_interrupt();
            });
            if self.blk.peek_used() == Some(token) {
                return Ok(());
            }
            irq::wait(self.irq, time::system_time_ns().saturating_add(POLL_NS));
        }
    }
}

/// Where the self-test maps its scattered buffer.
const SELFTEST_VA: u64 = 0x0000_7800_0000_0000;
/// The same, as a pointer's address.
const SELFTEST_ADDR: usize = 0x0000_7800_0000_0000;

/// `disk_selftest` on dom0's command line (tests): on each writable disk,
/// writes a pattern over its last 8 sectors from a buffer whose two pages are
/// machine frames that do not follow each other (so the HAL must bounce it),
/// reads it back into an ordinary heap buffer that straddles a page, compares,
/// and prints one result line per disk. The host then finds the pattern in the
/// image file.
pub fn selftest(disks: &mut [Disk]) {
    const SECTORS: usize = 8;
    let Some(out) = ScatteredBuf::new() else {
        println!("dom0: disk self-test: no frames for the scattered buffer");
        return;
    };
    for d in disks.iter_mut() {
        if d.readonly || d.sectors < SECTORS as u64 {
            println!(
                "dom0: disk {}: self-test skipped (read-only or too small)",
                d.name
            );
            continue;
        }
        let first = d.sectors - SECTORS as u64;
        let data = out.bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = pattern(first, i);
        }
        let mut back = alloc::vec![0u8; SECTORS * SECTOR_SIZE + 3];
        let (shared0, bounced0) = pv_runtime::virtio::share_counts();
        let result = d
            .write(first, data)
            .and_then(|()| d.read(first, &mut back[3..]));
        let (shared, bounced) = pv_runtime::virtio::share_counts();
        match result {
            Ok(()) if back[3..] == *data => println!(
                "dom0: disk {}: self-test PASS: wrote and read back sectors {first}..{} \
                 ({} requests, {} interrupts, {} buffers bounced, {} shared as they were)",
                d.name,
                d.sectors,
                d.requests,
                d.interrupts(),
                bounced - bounced0,
                shared - shared0
            ),
            Ok(()) => {
                let at = back[3..].iter().zip(data.iter()).position(|(a, b)| a != b);
                println!(
                    "dom0: disk {}: self-test FAIL: read back differs at byte {at:?}",
                    d.name
                );
            }
            Err(e) => println!("dom0: disk {}: self-test FAIL: {e}", d.name),
        }
    }
    out.release();
}

/// Two pages mapped side by side whose machine frames are not neighbours.
struct ScatteredBuf {
    frames: [pv_runtime::mm::Frame; 3],
}

impl ScatteredBuf {
    fn new() -> Option<Self> {
        use pv_runtime::mm;
        let frames = [mm::alloc_frame()?, mm::alloc_frame()?, mm::alloc_frame()?];
        // The first and the third: at least one frame apart, whatever the order.
        let (a, b) = (frames[0].mfn, frames[2].mfn);
        let flags =
            pv_runtime::abi::xen::pte::PteFlags::RW | pv_runtime::abi::xen::pte::PteFlags::NX;
        if a.0.abs_diff(b.0) == 1 || mm::map(SELFTEST_VA, &[a, b], flags).is_err() {
            for f in frames {
                let _ = mm::free_frame(f);
            }
            return None;
        }
        Some(ScatteredBuf { frames })
    }

    /// 8 sectors across the two pages (half in each).
    #[allow(clippy::mut_from_ref)]
    fn bytes(&self) -> &mut [u8] {
        let p: *mut u8 = core::ptr::with_exposed_provenance_mut(SELFTEST_ADDR + 2048);
        // SAFETY: `new` mapped two pages writable at SELFTEST_VA, used by nothing
        // else; the self-test holds one slice at a time, and `release` unmaps
        // them only after the last use.
        unsafe { core::slice::from_raw_parts_mut(p, 8 * SECTOR_SIZE) }
    }

    fn release(self) {
        if pv_runtime::mm::unmap(SELFTEST_VA, 2).is_ok() {
            for f in self.frames {
                let _ = pv_runtime::mm::free_frame(f);
            }
        }
    }
}

/// The self-test's byte `i` of the run that starts at sector `first` (the host
/// test computes the same).
fn pattern(first: u64, i: usize) -> u8 {
    let i = i as u64;
    let x = first.wrapping_mul(31).wrapping_add(i.wrapping_mul(7));
    (x ^ (i >> 9)).to_le_bytes()[0]
}

/// Descriptors per virtio-net queue.
const NET_QUEUE: usize = 16;
/// The receive buffer: the largest Ethernet frame with its virtio header.
const NET_BUF: usize = 4096;

/// A virtio-net NIC dom0 drives (the uplink of the net back end's switch).
pub struct Nic {
    /// `eth0`, `eth1`, ... in PCI order.
    pub name: String,
    /// Where it is on the PCI bus.
    pub bdf: (u8, u8, u8),
    net: VirtIONetRaw<XenHal, PciTransport, NET_QUEUE>,
    irq: Option<DevIrq>,
    /// The receive buffer (DMA memory the NIC keeps for good) and the token of
    /// its posted request.
    rx: Option<(pv_runtime::virtio::DmaBuf, Option<u16>)>,
}

impl core::fmt::Debug for Nic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Nic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Nic {
    /// The NIC's MAC address.
    pub fn mac(&self) -> ether::Mac {
        self.net.mac_address()
    }

    /// Sends one Ethernet frame (waits for the device to take it).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), virtio_drivers::Error> {
        self.net.send(frame)
    }

    fn rx_buf(buf: &pv_runtime::virtio::DmaBuf) -> &'static mut [u8] {
        let p: *mut u8 =
            core::ptr::with_exposed_provenance_mut(usize::try_from(buf.va).unwrap_or(0));
        // SAFETY: `buf` is one page of DMA memory mapped writable for as long as
        // the NIC lives (never freed); the driver touches it only while no
        // receive request holds it.
        unsafe { core::slice::from_raw_parts_mut(p, NET_BUF) }
    }

    /// Receives one frame into `out`, blocking on the NIC's interrupt until one
    /// arrives or `deadline` (system time) passes; returns the frame's length
    /// (`None` at the deadline). A frame longer than `out` is cut.
    pub fn receive(
        &mut self,
        out: &mut [u8],
        deadline: u64,
    ) -> Result<Option<usize>, virtio_drivers::Error> {
        if self.rx.is_none() {
            let buf = pv_runtime::virtio::dma_alloc(1).ok_or(virtio_drivers::Error::DmaError)?;
            self.rx = Some((buf, None));
        }
        let Some((buf, posted)) = self.rx.as_mut() else {
            return Err(virtio_drivers::Error::DmaError);
        };
        let token = match *posted {
            Some(t) => t,
            None => {
                // SAFETY: the buffer is the NIC's own DMA memory, untouched until
                // the request completes (`posted` records that it is out).
                let t = unsafe { self.net.receive_begin(Self::rx_buf(buf))? };
                *posted = Some(t);
                t
            }
        };
        loop {
            let net = &mut self.net;
            irq::service(self.irq, || {
                net.ack_interrupt();
            });
            if self.net.poll_receive() == Some(token) {
                *posted = None;
                let rx = Self::rx_buf(buf);
                // SAFETY: the same buffer `receive_begin` was given.
                let (hdr, len) = unsafe { self.net.receive_complete(token, rx)? };
                // The lengths are the device's word: keep them inside the buffer.
                let start = hdr.min(rx.len());
                let n = len.min(out.len()).min(rx.len() - start);
                out[..n].copy_from_slice(&rx[start..start + n]);
                return Ok(Some(n));
            }
            let now = time::system_time_ns();
            if now >= deadline {
                return Ok(None);
            }
            irq::wait(self.irq, now.saturating_add(POLL_NS).min(deadline));
        }
    }
}

/// `nic_selftest` on dom0's command line (tests): each NIC asks QEMU's user
/// network who has 10.0.2.2 (the gateway; dom0 claims 10.0.2.15, as a DHCP
/// client there would get) and waits for the ARP reply, retrying each second
/// for five; one result line per NIC.
pub fn nic_selftest(nics: &mut [Nic]) {
    const ME: ether::Ipv4 = [10, 0, 2, 15];
    const GATEWAY: ether::Ipv4 = [10, 0, 2, 2];
    for nic in nics.iter_mut() {
        let mac = nic.mac();
        let req = ether::arp_request(mac, ME, GATEWAY);
        let end = time::system_time_ns().saturating_add(5_000_000_000);
        let mut frames = 0u32;
        let mut found = None;
        let mut frame = [0u8; 1600];
        'tries: while found.is_none() && time::system_time_ns() < end {
            if let Err(e) = nic.send(&req) {
                println!("dom0: nic {}: self-test FAIL: sending: {e}", nic.name);
                break;
            }
            let retry = time::system_time_ns()
                .saturating_add(1_000_000_000)
                .min(end);
            loop {
                match nic.receive(&mut frame, retry) {
                    Ok(Some(n)) => {
                        frames += 1;
                        if let Some(gw) = ether::arp_reply(&frame[..n], mac, GATEWAY) {
                            found = Some(gw);
                            break 'tries;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        println!("dom0: nic {}: self-test FAIL: receiving: {e}", nic.name);
                        break 'tries;
                    }
                }
            }
        }
        match found {
            Some(gw) => println!(
                "dom0: nic {}: self-test PASS: 10.0.2.2 is at {} ({} frames received, {} interrupts)",
                nic.name,
                ether::mac_text(gw),
                frames,
                nic.irq.map_or(0, |i| i.count())
            ),
            None => println!(
                "dom0: nic {}: self-test FAIL: no ARP reply from 10.0.2.2 ({frames} frames)",
                nic.name
            ),
        }
    }
}
