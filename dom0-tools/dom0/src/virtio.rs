//! dom0's virtio devices, driven with the `virtio-drivers` crate over the PCI
//! transport, through `pv_runtime::virtio`'s HAL (machine addresses, bounce
//! buffers, uncached BARs) and interrupt-driven: a request is queued, dom0
//! blocks until the device's MSI-X vector (or, without MSI-X or with
//! `pci=nomsi`, its GSI), a pirq bound to an event channel, fires, then
//! acknowledges the device, completes the request and sends the EOI.
//! A disk takes its requests in batches ([`VirtioDisks`], dom0's
//! [`Disks`]), with as many in flight as the virtqueue holds.
//! `docs/devices.md`.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use dom0_core::disks::{DiskError, DiskInfo, DiskOp, DiskReq, Disks};
use dom0_core::nics::{NicInfo, Nics};
use dom0_core::pci::Function;
use pv_runtime::dma::DmaBuffer;
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

/// Requests one disk has in flight at most: the crate's virtqueue has 16
/// descriptors, and a read or write takes three of them (header, data,
/// status), since indirect descriptors need the crate's `alloc` feature.
const IN_FLIGHT: usize = 5;
/// A buffer whose pages are not machine-contiguous goes to the device through
/// the disk's own DMA memory, in pieces of at most this many bytes (one
/// staging buffer per request slot, allocated on first need).
const STAGE_BYTES: usize = 256 * 1024;
/// The largest piece of a machine-contiguous buffer sent as one request.
const DIRECT_MAX: usize = 4 << 20;

/// A request's header and status, where the device reads and writes them:
/// 32-byte aligned, so they never straddle a page and are shared as they are
/// (the HAL would bounce them otherwise).
#[repr(C, align(32))]
#[derive(Default)]
struct Header {
    req: BlkReq,
    resp: BlkResp,
}

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
    /// One header per request slot (heap memory that never moves).
    headers: Box<[Header; IN_FLIGHT]>,
    /// One staging buffer per request slot, once needed.
    stage: [Option<DmaBuffer>; IN_FLIGHT],
    /// Device requests completed.
    pub requests: u64,
    /// Pieces that went through a staging buffer.
    pub staged: u64,
}

impl core::fmt::Debug for Disk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Disk")
            .field("name", &self.name)
            .field("bdf", &self.bdf)
            .field("sectors", &self.sectors)
            .field("readonly", &self.readonly)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

/// dom0's virtio-blk disks as [`Disks`], the agent's view: the volume table
/// and the block back end do their I/O through it.
#[derive(Debug, Default)]
pub struct VirtioDisks {
    /// The disks, in PCI order.
    pub disks: Vec<Disk>,
}

impl Disks for VirtioDisks {
    fn list(&self) -> Vec<DiskInfo> {
        self.disks.iter().map(Disk::info).collect()
    }

    fn run(&mut self, disk: usize, reqs: &mut [DiskReq<'_>]) {
        match self.disks.get_mut(disk) {
            Some(d) => d.run(reqs),
            None => reqs
                .iter_mut()
                .for_each(|r| r.result = Err(DiskError::NoDisk)),
        }
    }
}

/// A request's buffer, or a piece of it.
enum Data<'a> {
    /// The device writes it (a read).
    In(&'a mut [u8]),
    /// The device reads it (a write).
    Out(&'a [u8]),
}

impl Data<'_> {
    fn len(&self) -> usize {
        match self {
            Data::In(b) => b.len(),
            Data::Out(b) => b.len(),
        }
    }
}

/// One device request: a piece of a batch's request.
struct Piece<'a> {
    /// The batch request it belongs to.
    req: usize,
    sector: u64,
    data: Data<'a>,
    /// Through the slot's staging buffer (the data's pages are scattered).
    staged: bool,
}

/// Whether the pages of `buf` are machine-contiguous, so that the device can
/// use it as it is.
fn contiguous(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    let va = buf.as_ptr().addr() as u64;
    let Some(last) = va.checked_add(buf.len() as u64 - 1) else {
        return false;
    };
    let Some(first) = pv_runtime::dma::virt_to_machine(va & !0xFFF) else {
        return false;
    };
    let pages = (last >> 12) - (va >> 12);
    (1..=pages).all(|i| {
        pv_runtime::dma::virt_to_machine((va & !0xFFF) + i * 4096) == Some(first + i * 4096)
    })
}

/// Cuts request `req` (its buffer starts at `sector`) into device requests:
/// a machine-contiguous buffer in pieces of [`DIRECT_MAX`], a scattered one in
/// pieces of [`STAGE_BYTES`] through staging buffers.
fn cut<'a>(req: usize, sector: u64, data: Data<'a>, out: &mut Vec<Piece<'a>>) {
    let staged = !match &data {
        Data::In(b) => contiguous(b),
        Data::Out(b) => contiguous(b),
    };
    let size = if staged { STAGE_BYTES } else { DIRECT_MAX };
    let step = (size / SECTOR_SIZE) as u64;
    let mut at = sector;
    match data {
        Data::In(b) => {
            for c in b.chunks_mut(size) {
                out.push(Piece {
                    req,
                    sector: at,
                    data: Data::In(c),
                    staged,
                });
                at += step;
            }
        }
        Data::Out(b) => {
            for c in b.chunks(size) {
                out.push(Piece {
                    req,
                    sector: at,
                    data: Data::Out(c),
                    staged,
                });
                at += step;
            }
        }
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
    /// dom0 drives (`disks`: the disks, which the agent holds by then).
    pub fn rows(&self, fns: &[Function], disks: &[Disk]) -> Vec<control_proto::DeviceRow> {
        fns.iter()
            .map(|f| {
                let bdf = (f.bus, f.dev, f.func);
                let driver = if let Some(d) = disks.iter().find(|d| d.bdf == bdf) {
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

/// A device's MSI-X, set up before its driver starts: the entries mapped and
/// bound, MSI-X enabled. The virtio vectors are written once the driver has
/// reset and started the device ([`msix_finish`]).
struct MsixSetup {
    msix: dom0_core::msix::Msix,
    /// The common configuration, mapped.
    common: u64,
    /// The queues' interrupt.
    queues: DevIrq,
    /// The configuration-change interrupt (when the table has a second entry).
    config: Option<DevIrq>,
}

fn write_ctrl(f: &Function, reg: u8, v: u16) {
    // SAFETY: 0xCF8/0xCFC are dom0's emulated configuration ports, used by one
    // caller at a time on dom0's single vCPU; the write is the function's MSI-X
    // control word, which only this driver uses.
    unsafe { pv_runtime::physdev::pci_conf_write16(f.bus, f.dev, f.func, reg, v) }
}

/// Linux's `msix_capability_init` and `xen_initdom_setup_msi_irqs` for a virtio
/// function: MSI-X on with the function masked, one pirq per vector (config and
/// queues, as `virtio_pci`'s shared layout), then the function unmasked. `None`
/// if the function has no MSI-X or the hypervisor refused (dom0 then uses INTx).
fn msix_begin(f: &Function, where_: &str) -> Option<MsixSetup> {
    use dom0_core::msix;
    let mut cs = crate::pcicfg::Cf8::new();
    let m = msix::find(f, &mut cs)?;
    let common = msix::virtio_common_cfg(f, &mut cs)?;
    let common = pv_runtime::virtio::map_mmio(common, 0x40)?;
    let reg = msix::ctrl_reg(&m);
    write_ctrl(f, reg, msix::ctrl_setup(m.ctrl));
    let (cv, qv) = msix::virtio_vectors(m.size);
    let queues = match DevIrq::bind_msix(f.bus, f.devfn(), qv, m.table) {
        Ok(i) => i,
        Err((what, e)) => {
            println!("dom0: virtio {where_}: {what} failed ({e}); using INTx");
            write_ctrl(f, reg, msix::ctrl_off(m.ctrl));
            return None;
        }
    };
    let config = if cv != qv {
        match DevIrq::bind_msix(f.bus, f.devfn(), cv, m.table) {
            Ok(i) => Some(i),
            Err((what, e)) => {
                println!("dom0: virtio {where_}: {what} failed ({e}); using INTx");
                queues.release();
                write_ctrl(f, reg, msix::ctrl_off(m.ctrl));
                return None;
            }
        }
    } else {
        None
    };
    write_ctrl(f, reg, msix::ctrl_running(m.ctrl));
    Some(MsixSetup {
        msix: m,
        common,
        queues,
        config,
    })
}

/// `msix_check` on dom0's command line: run [`table_check`] (tests).
static MSIX_CHECK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Once per boot, with `msix_check`: the hypervisor owns the MSI-X table, and dom0's mapping of it is
/// read-only (Xen's `mmio_ro_ranges`). dom0 reads the queues' entry (the message
/// the hypervisor wrote), stores a changed data word through its own mapping (the
/// store faults and the hypervisor drops it) and reads it back.
fn table_check(f: &Function, s: &MsixSetup, entry: u16) {
    use core::sync::atomic::{AtomicBool, Ordering};
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    let pa = s.msix.table + u64::from(entry) * 16 + 8;
    let Some(va) = pv_runtime::virtio::map_mmio(pa, 4) else {
        return;
    };
    // SAFETY: `va` maps the data word of an MSI-X table entry of this function
    // (map_mmio, uncached; the hypervisor made it read-only). The store below
    // faults and is dropped; were the mapping writable, the entry's vector would
    // change and the device's interrupts would be lost, which the self-tests show.
    let (before, after) = unsafe {
        let p = va as *mut u32;
        let before = core::ptr::read_volatile(p);
        core::ptr::write_volatile(p, before ^ 0xFF);
        (before, core::ptr::read_volatile(p))
    };
    println!(
        "dom0: virtio {:02x}:{:02x}.{}: MSI-X entry {entry} data {before:#x}, {after:#x} after dom0's store: {}",
        f.bus,
        f.dev,
        f.func,
        if before == after {
            "the table is read-only"
        } else {
            "the table is WRITABLE"
        }
    );
}

fn common_read16(base: u64, off: u64) -> u16 {
    // SAFETY: `base` maps the device's virtio common configuration uncached
    // (`map_mmio`); the offsets are registers of that structure.
    unsafe { core::ptr::read_volatile((base + off) as *const u16) }
}

fn common_write16(base: u64, off: u64, v: u16) {
    // SAFETY: as in `common_read16`; the driver's transport does not run
    // concurrently (dom0 has one vCPU and no preemption inside a driver).
    unsafe { core::ptr::write_volatile((base + off) as *mut u16, v) }
}

/// Writes the virtio vectors as Linux's `vp_find_vqs_msix` does (the config
/// vector, then each queue's), each read back: a device that answers
/// `VIRTIO_MSI_NO_VECTOR` could not take it. On failure MSI-X is turned off
/// again and its pirqs given back, and the function's INTx is used.
fn msix_finish(
    f: &Function,
    fns: &[Function],
    irqs: &mut Vec<DevIrq>,
    setup: Option<MsixSetup>,
) -> Option<DevIrq> {
    let check = MSIX_CHECK.load(core::sync::atomic::Ordering::Relaxed);
    use dom0_core::msix::{self, COMMON_MSIX_CONFIG, COMMON_NUM_QUEUES, COMMON_QUEUE_MSIX_VECTOR};
    let Some(s) = setup else {
        return device_irq(f, fns, irqs);
    };
    let (cv, qv) = msix::virtio_vectors(s.msix.size);
    common_write16(s.common, COMMON_MSIX_CONFIG, cv);
    let mut ok = common_read16(s.common, COMMON_MSIX_CONFIG) == cv;
    let n = common_read16(s.common, COMMON_NUM_QUEUES);
    for q in 0..n {
        common_write16(s.common, msix::COMMON_QUEUE_SELECT, q);
        common_write16(s.common, COMMON_QUEUE_MSIX_VECTOR, qv);
        ok &= common_read16(s.common, COMMON_QUEUE_MSIX_VECTOR) == qv;
    }
    if ok {
        if check {
            table_check(f, &s, qv);
        }
        return Some(s.queues);
    }
    println!(
        "dom0: virtio {:02x}:{:02x}.{}: the device refused its MSI-X vectors; using INTx",
        f.bus, f.dev, f.func
    );
    common_write16(s.common, COMMON_MSIX_CONFIG, msix::VIRTIO_MSI_NO_VECTOR);
    for q in 0..n {
        common_write16(s.common, msix::COMMON_QUEUE_SELECT, q);
        common_write16(
            s.common,
            COMMON_QUEUE_MSIX_VECTOR,
            msix::VIRTIO_MSI_NO_VECTOR,
        );
    }
    s.queues.release();
    if let Some(c) = s.config {
        c.release();
    }
    write_ctrl(f, msix::ctrl_reg(&s.msix), msix::ctrl_off(s.msix.ctrl));
    device_irq(f, fns, irqs)
}

/// Finds the virtio devices among `fns` (from the PCI scan), starts the ones
/// dom0 has a driver for and prints one line for each. With `msi` a device
/// with MSI-X interrupts through it, else through its INTx (`pci=nomsi`).
pub fn probe(fns: &[Function], msi: bool, msix_check: bool) -> Devices {
    MSIX_CHECK.store(msix_check, core::sync::atomic::Ordering::Relaxed);
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
        let msix = if msi { msix_begin(f, &where_) } else { None };
        match transport.device_type() {
            DeviceType::Block => {
                match start_disk(f, fns, transport, &mut irqs, disks.len(), msix) {
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
                }
            }
            DeviceType::Console if console.is_none() => {
                // The console's driver takes its interrupt when it starts; the
                // vectors are written once it has.
                let (irq, msix) = match msix {
                    Some(s) => (Some(s.queues), Some(s)),
                    None => (device_irq(f, fns, &mut irqs), None),
                };
                match VirtioConsole::new(transport, irq) {
                    Ok(c) => {
                        if let Some(s) = msix {
                            let q = s.queues;
                            if msix_finish(f, fns, &mut irqs, Some(s))
                                .is_none_or(|i| i.port != q.port)
                            {
                                println!("dom0: virtio-console {where_}: polled from now on");
                            }
                        }
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
                let name = alloc::format!("eth{}", nics.len());
                match VirtIONetRaw::<XenHal, _, NET_QUEUE>::new(transport) {
                    Ok(mut net) => {
                        let irq = msix_finish(f, fns, &mut irqs, msix);
                        net.enable_interrupts();
                        println!(
                            "dom0: nic {name}: virtio-net {where_}, mac {}, {}",
                            ether::mac_text(net.mac_address()),
                            irq_text(irq)
                        );
                        nics.push(Nic::new(name, (f.bus, f.dev, f.func), net, irq));
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
        alloc::format!("irq {}", i.describe())
    })
}

fn start_disk(
    f: &Function,
    fns: &[Function],
    transport: PciTransport,
    irqs: &mut Vec<DevIrq>,
    index: usize,
    msix: Option<MsixSetup>,
) -> Result<Disk, virtio_drivers::Error> {
    let mut blk = VirtIOBlk::<XenHal, _>::new(transport)?;
    let mut id = [0u8; 20];
    let name = match blk.device_id(&mut id) {
        Ok(n) if n > 0 => String::from_utf8_lossy(&id[..n]).into_owned(),
        _ => alloc::format!(
            "vd{}",
            char::from(b'a' + u8::try_from(index % 26).unwrap_or(0))
        ),
    };
    let irq = msix_finish(f, fns, irqs, msix);
    blk.enable_interrupts();
    Ok(Disk {
        name,
        bdf: (f.bus, f.dev, f.func),
        sectors: blk.capacity(),
        readonly: blk.readonly(),
        blk,
        irq,
        headers: Box::default(),
        stage: [const { None }; IN_FLIGHT],
        requests: 0,
        staged: 0,
    })
}

/// The function's INTx as a bound device interrupt (shared with an earlier
/// device on the same GSI): the GSI the platform wires it to
/// (`dom0_core::pci::intx_gsi`), in the mode the hypervisor took from the MADT
/// (level for PCI).
fn device_irq(f: &Function, fns: &[Function], irqs: &mut Vec<DevIrq>) -> Option<DevIrq> {
    let gsi = dom0_core::pci::intx_gsi(f, fns)?;
    if let Some(i) = irqs.iter().find(|i| i.source == irq::Source::Gsi(gsi)) {
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
    /// What the agent sees of it. virtio-drivers 0.13 neither negotiates
    /// `VIRTIO_BLK_F_DISCARD` nor can build a discard request, so no disk
    /// discards.
    pub fn info(&self) -> DiskInfo {
        DiskInfo {
            name: self.name.clone(),
            sectors: self.sectors,
            readonly: self.readonly,
            discard: false,
        }
    }

    /// Reads whole sectors from `sector` into `buf` (a batch of one).
    pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        let mut r = [DiskReq::new(sector, DiskOp::Read(buf))];
        self.run(&mut r);
        r[0].result
    }

    /// Writes whole sectors from `buf` at `sector` (a batch of one).
    pub fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DiskError> {
        let mut r = [DiskReq::new(sector, DiskOp::Write(buf))];
        self.run(&mut r);
        r[0].result
    }

    /// Runs a batch ([`Disks::run`]): every read and write is checked and cut
    /// into device requests, up to [`IN_FLIGHT`] of them are in the queue at
    /// once (the rest go in as slots free up), each completion is taken as the
    /// device's interrupt reports it. The batch's flushes run last, once its
    /// reads and writes are done, so they cover those too.
    pub fn run(&mut self, reqs: &mut [DiskReq<'_>]) {
        let info = self.info();
        let mut results: Vec<Result<(), DiskError>> = Vec::with_capacity(reqs.len());
        let mut flushes = Vec::new();
        let mut pieces = Vec::new();
        for (i, r) in reqs.iter_mut().enumerate() {
            let checked = r.check(&info);
            results.push(checked);
            if checked.is_err() {
                continue;
            }
            let sector = r.sector;
            match &mut r.op {
                DiskOp::Read(b) => cut(i, sector, Data::In(b), &mut pieces),
                DiskOp::Write(b) => cut(i, sector, Data::Out(b), &mut pieces),
                DiskOp::Flush => flushes.push(i),
                DiskOp::Discard { .. } => results[i] = Err(DiskError::Unsupported),
            }
        }
        self.drive(&mut pieces, &mut results);
        drop(pieces);
        if !flushes.is_empty() {
            let done = self.flush();
            for i in flushes {
                results[i] = done;
            }
        }
        for (r, done) in reqs.iter_mut().zip(results) {
            r.result = done;
        }
    }

    /// `VIRTIO_BLK_T_FLUSH` when the device has a volatile cache
    /// (`VIRTIO_BLK_F_FLUSH`; QEMU offers it), else nothing to do. The crate
    /// waits for it by polling, so it runs with nothing else in flight.
    fn flush(&mut self) -> Result<(), DiskError> {
        let done = self.blk.flush().map_err(|_| DiskError::Io);
        // The flush's completion raised the interrupt too.
        let blk = &mut self.blk;
        irq::service(self.irq, || {
            blk.ack_interrupt();
        });
        self.requests += 1;
        done
    }

    /// Keeps the queue full with `pieces` until every one is done; a failed
    /// piece fails its request, and the request's later pieces are not sent.
    fn drive(&mut self, pieces: &mut [Piece<'_>], results: &mut [Result<(), DiskError>]) {
        let mut slots: [Option<(usize, u16)>; IN_FLIGHT] = [None; IN_FLIGHT];
        let mut next = 0;
        let mut reported = false;
        loop {
            while next < pieces.len() {
                let Some(s) = slots.iter().position(Option::is_none) else {
                    break;
                };
                let p = &mut pieces[next];
                if results[p.req].is_err() {
                    next += 1;
                    continue;
                }
                match self.submit(s, p) {
                    Ok(token) => slots[s] = Some((next, token)),
                    Err(virtio_drivers::Error::QueueFull) if slots.iter().any(Option::is_some) => {
                        break;
                    }
                    Err(_) => results[p.req] = Err(DiskError::Io),
                }
                next += 1;
            }
            if slots.iter().all(Option::is_none) {
                return;
            }
            self.wait_used();
            while let Some(token) = self.blk.peek_used() {
                let Some(s) = slots
                    .iter()
                    .position(|x| x.is_some_and(|(_, t)| t == token))
                else {
                    // Not a request of ours: the device is broken. The
                    // requests it holds keep their buffers; wait on.
                    if !reported {
                        println!(
                            "dom0: disk {}: the device completed unknown request {token}",
                            self.name
                        );
                        reported = true;
                    }
                    break;
                };
                let Some((i, _)) = slots[s].take() else {
                    break;
                };
                let p = &mut pieces[i];
                if self.complete(s, token, p).is_err() {
                    results[p.req] = Err(DiskError::Io);
                }
            }
        }
    }

    /// Queues piece `p` in slot `s`: straight from its buffer, or through the
    /// slot's staging buffer (filled first for a write).
    fn submit(&mut self, s: usize, p: &mut Piece<'_>) -> Result<u16, virtio_drivers::Error> {
        let block = usize::try_from(p.sector).map_err(|_| virtio_drivers::Error::InvalidParam)?;
        let h = &mut self.headers[s];
        let n = p.data.len();
        if p.staged {
            if self.stage[s].is_none() {
                let pages = (STAGE_BYTES / 4096) as u64;
                let buf = pv_runtime::dma::alloc(pages, 0)
                    .map_err(|_| virtio_drivers::Error::DmaError)?;
                self.stage[s] = Some(buf);
            }
            let Some(stage) = self.stage[s].as_mut() else {
                return Err(virtio_drivers::Error::DmaError);
            };
            let stage = &mut stage.as_mut_slice()[..n];
            self.staged += 1;
            match &p.data {
                Data::Out(b) => {
                    stage.copy_from_slice(b);
                    // SAFETY: the staging buffer and the slot's header are the
                    // disk's own and untouched until `complete` takes the
                    // request back (the slot is taken until then).
                    unsafe {
                        self.blk
                            .write_blocks_nb(block, &mut h.req, stage, &mut h.resp)
                    }
                }
                // SAFETY: as above.
                Data::In(_) => unsafe {
                    self.blk
                        .read_blocks_nb(block, &mut h.req, stage, &mut h.resp)
                },
            }
        } else {
            match &mut p.data {
                // SAFETY: the buffer is borrowed from the batch, which `run`
                // holds until `drive` has taken every request back; nothing
                // touches it or the slot's header meanwhile.
                Data::Out(b) => unsafe {
                    self.blk.write_blocks_nb(block, &mut h.req, b, &mut h.resp)
                },
                // SAFETY: as above.
                Data::In(b) => unsafe {
                    self.blk.read_blocks_nb(block, &mut h.req, b, &mut h.resp)
                },
            }
        }
    }

    /// Takes request `token` of slot `s` back from the device (it is the next
    /// in the used ring) with the buffers `submit` gave; a staged read is
    /// copied out.
    fn complete(
        &mut self,
        s: usize,
        token: u16,
        p: &mut Piece<'_>,
    ) -> Result<(), virtio_drivers::Error> {
        let h = &mut self.headers[s];
        let n = p.data.len();
        self.requests += 1;
        if p.staged {
            let Some(stage) = self.stage[s].as_mut() else {
                return Err(virtio_drivers::Error::DmaError);
            };
            let stage = &mut stage.as_mut_slice()[..n];
            match &mut p.data {
                // SAFETY: the same header and staging buffer `submit` queued.
                Data::Out(_) => unsafe {
                    self.blk
                        .complete_write_blocks(token, &h.req, stage, &mut h.resp)
                },
                Data::In(b) => {
                    // SAFETY: as above.
                    unsafe {
                        self.blk
                            .complete_read_blocks(token, &h.req, stage, &mut h.resp)?;
                    }
                    b.copy_from_slice(stage);
                    Ok(())
                }
            }
        } else {
            match &mut p.data {
                // SAFETY: the same header and buffer `submit` queued.
                Data::Out(b) => unsafe {
                    self.blk
                        .complete_write_blocks(token, &h.req, b, &mut h.resp)
                },
                // SAFETY: as above.
                Data::In(b) => unsafe {
                    self.blk.complete_read_blocks(token, &h.req, b, &mut h.resp)
                },
            }
        }
    }

    /// Interrupts taken for this disk's GSI.
    pub fn interrupts(&self) -> u64 {
        self.irq.map_or(0, |i| i.count())
    }

    /// Blocks until the used ring holds a completion: woken by the device's
    /// interrupt, which is then acknowledged at the device (reading its ISR
    /// lowers the line) and EOIed.
    fn wait_used(&mut self) {
        loop {
            let blk = &mut self.blk;
            irq::service(self.irq, || {
                blk.ack_interrupt();
            });
            if self.blk.peek_used().is_some() {
                return;
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
/// machine frames that do not follow each other (so it must be bounced: the
/// driver stages it through its own DMA memory),
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
        let staged0 = d.staged;
        let result = d
            .write(first, data)
            .and_then(|()| d.read(first, &mut back[3..]));
        let (shared, bounced) = pv_runtime::virtio::share_counts();
        // Bounced by the HAL, or staged by the driver itself.
        let bounced = bounced + (d.staged - staged0);
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
        large_selftest(d);
    }
    out.release();
}

/// Where the large self-test maps its two scattered buffers.
const LARGE_VA: [u64; 2] = [0x0000_7800_1000_0000, 0x0000_7800_2000_0000];
/// Pages of each (1 MiB).
const LARGE_PAGES: usize = 256;

/// The large half of `disk_selftest`, on the 1 MiB before the last 8 sectors
/// of a disk of at least 2 MiB: writes 1 MiB from 256 scattered pages in one
/// request (staged in pieces), reads it back into another scattered buffer as
/// 32 requests of 32 KiB and a flush in one batch (more than the queue holds
/// at once), compares, and writes zeros back (the host test finds the rest
/// of the disk zero).
fn large_selftest(d: &mut Disk) {
    const BYTES: usize = LARGE_PAGES * 4096;
    let sectors = (BYTES / SECTOR_SIZE) as u64;
    if d.sectors < 2 * sectors + 8 {
        println!(
            "dom0: disk {}: large self-test skipped (under 2 MiB)",
            d.name
        );
        return;
    }
    let first = d.sectors - 8 - sectors;
    let (Some(out), Some(back)) = (
        Scattered::new(LARGE_VA[0], LARGE_PAGES),
        Scattered::new(LARGE_VA[1], LARGE_PAGES),
    ) else {
        println!("dom0: disk {}: large self-test: no frames", d.name);
        return;
    };
    let (requests0, staged0) = (d.requests, d.staged);
    let data = out.bytes();
    for (i, b) in data.iter_mut().enumerate() {
        *b = pattern(first, i);
    }
    let mut result = d.write(first, data);
    if result.is_ok() {
        let mut reqs: Vec<DiskReq<'_>> = back
            .bytes()
            .chunks_mut(BYTES / 32)
            .zip((first..).step_by(BYTES / 32 / SECTOR_SIZE))
            .map(|(b, at)| DiskReq::new(at, DiskOp::Read(b)))
            .collect();
        reqs.push(DiskReq::new(0, DiskOp::Flush));
        d.run(&mut reqs);
        result = reqs.iter().try_for_each(|r| r.result);
    }
    let same = back.bytes()[..] == data[..];
    data.fill(0);
    let zeroed = d.write(first, data);
    match (result, same, zeroed) {
        (Ok(()), true, Ok(())) => println!(
            "dom0: disk {}: large self-test PASS: 1 MiB from 256 scattered pages in one \
             request, read back in 32 and a flush in one batch ({} requests, {} pieces staged)",
            d.name,
            d.requests - requests0,
            d.staged - staged0
        ),
        (Ok(()), false, _) => println!(
            "dom0: disk {}: large self-test FAIL: read back differs",
            d.name
        ),
        (Err(e), _, _) | (_, _, Err(e)) => {
            println!("dom0: disk {}: large self-test FAIL: {e}", d.name);
        }
    }
    out.release();
    back.release();
}

/// Pages mapped side by side whose machine frames never follow each other
/// (mapped in descending machine order), so that only staging can hand them
/// to a device.
struct Scattered {
    va: u64,
    frames: Vec<pv_runtime::mm::Frame>,
}

impl Scattered {
    fn new(va: u64, pages: usize) -> Option<Self> {
        use pv_runtime::mm;
        let mut frames = Vec::with_capacity(pages);
        while frames.len() < pages {
            match mm::alloc_frame() {
                Some(f) => frames.push(f),
                None => break,
            }
        }
        frames.sort_unstable_by_key(|f| core::cmp::Reverse(f.mfn.0));
        let mfns: Vec<_> = frames.iter().map(|f| f.mfn).collect();
        let flags =
            pv_runtime::abi::xen::pte::PteFlags::RW | pv_runtime::abi::xen::pte::PteFlags::NX;
        if frames.len() < pages || mm::map(va, &mfns, flags).is_err() {
            for f in frames {
                let _ = mm::free_frame(f);
            }
            return None;
        }
        Some(Scattered { va, frames })
    }

    #[allow(clippy::mut_from_ref)]
    fn bytes(&self) -> &mut [u8] {
        let p: *mut u8 =
            core::ptr::with_exposed_provenance_mut(usize::try_from(self.va).unwrap_or(0));
        // SAFETY: `new` mapped these pages writable at `va`, a window nothing
        // else uses; the self-test holds one slice of a buffer at a time, and
        // `release` unmaps them only after the last use.
        unsafe { core::slice::from_raw_parts_mut(p, self.frames.len() * 4096) }
    }

    fn release(self) {
        if pv_runtime::mm::unmap(self.va, self.frames.len() as u64).is_ok() {
            for f in self.frames {
                let _ = pv_runtime::mm::free_frame(f);
            }
        }
    }
}

/// The region `disk_bench` works on, at most: the last 64 MiB of the disk.
const BENCH_REGION: u64 = 64 << 20;
/// Bytes per sequential request of `disk_bench`.
const BENCH_SEQ: usize = 1 << 20;
/// DMA buffers of 2 MiB `disk_bench` fills its batches from (16 sequential
/// requests per batch).
const BENCH_BUFS: usize = 8;
/// Random 4 KiB reads `disk_bench` makes at least.
const BENCH_RAND: u64 = 4096;
/// How long each of `disk_bench`'s phases runs at least (whole passes over
/// the region, at most [`BENCH_MAX_PASSES`]).
const BENCH_MIN_NS: u64 = 1_000_000_000;
/// Passes over the region per phase at most.
const BENCH_MAX_PASSES: u64 = 64;
/// Random reads per batch.
const BENCH_RAND_BATCH: usize = 64;

/// `disk_bench` on dom0's command line: dom0's own direct throughput on its
/// first writable disk, the physical limit the block back end is compared
/// with (`scripts/bench`). Over the last 64 MiB of the disk (at most half of
/// it; **its data is overwritten**): sequential 1 MiB writes, then reads (16
/// per batch through [`Disks::run`], as many in flight as the queue holds;
/// the flush after the writes is not timed), then 4 KiB reads at random
/// 4 KiB-aligned places in the region, 64 per batch; each phase repeats for
/// a second at least. The buffers are DMA memory, so nothing is staged. One
/// result line:
/// `dom0: disk_bench: seq_write_mib_s=X seq_read_mib_s=Y rand4k_iops=Z`.
pub fn bench(disks: &mut VirtioDisks) {
    const MIB: u64 = 1 << 20;
    let Some(di) = disks.disks.iter().position(|d| !d.readonly) else {
        println!("dom0: disk_bench: no writable disk");
        return;
    };
    let (name, sectors) = (disks.disks[di].name.clone(), disks.disks[di].sectors);
    let region = BENCH_REGION.min((sectors * SECTOR_SIZE as u64 / 2) & !(MIB - 1));
    if region < MIB {
        println!("dom0: disk_bench: disk {name} is too small (at least 2 MiB)");
        return;
    }
    let first = sectors - region / SECTOR_SIZE as u64;
    let mut bufs: Vec<DmaBuffer> = (0..BENCH_BUFS)
        .map_while(|_| pv_runtime::dma::alloc(512, 0).ok())
        .collect();
    if bufs.is_empty() {
        println!("dom0: disk_bench: no DMA memory for the buffers");
        return;
    }
    for (i, b) in bufs.iter_mut().enumerate() {
        for (j, x) in b.as_mut_slice().iter_mut().enumerate() {
            *x = pattern(i as u64, j);
        }
    }
    let (requests0, irqs0) = (disks.disks[di].requests, disks.disks[di].interrupts());
    let mut failed = None;
    let mut check = |reqs: &[DiskReq<'_>]| {
        if let Some(e) = reqs.iter().find_map(|r| r.result.err()) {
            failed.get_or_insert(e);
        }
    };
    let sector_of = |at: u64| first + at / SECTOR_SIZE as u64;

    // Whole passes over the region until the phase has run long enough.
    let long_enough = |t0: u64, passes: u64| {
        passes >= BENCH_MAX_PASSES || (passes > 0 && time::system_time_ns() - t0 >= BENCH_MIN_NS)
    };
    let t0 = time::system_time_ns();
    let mut writes = 0;
    while !long_enough(t0, writes) {
        let mut at = 0;
        while at < region {
            let mut reqs = Vec::new();
            for c in bufs
                .iter_mut()
                .flat_map(|b| b.as_mut_slice().chunks(BENCH_SEQ))
            {
                if at < region {
                    reqs.push(DiskReq::new(sector_of(at), DiskOp::Write(c)));
                    at += MIB;
                }
            }
            disks.run(di, &mut reqs);
            check(&reqs);
        }
        writes += 1;
    }
    let write_ns = time::system_time_ns() - t0;
    let mut flush = [DiskReq::new(0, DiskOp::Flush)];
    disks.run(di, &mut flush);
    check(&flush);

    let t0 = time::system_time_ns();
    let mut reads = 0;
    while !long_enough(t0, reads) {
        let mut at = 0;
        while at < region {
            let mut reqs = Vec::new();
            for c in bufs
                .iter_mut()
                .flat_map(|b| b.as_mut_slice().chunks_mut(BENCH_SEQ))
            {
                if at < region {
                    reqs.push(DiskReq::new(sector_of(at), DiskOp::Read(c)));
                    at += MIB;
                }
            }
            disks.run(di, &mut reqs);
            check(&reqs);
        }
        reads += 1;
    }
    let read_ns = time::system_time_ns() - t0;

    let blocks = region / 4096;
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let t0 = time::system_time_ns();
    let mut rand = 0;
    while rand < BENCH_RAND || time::system_time_ns() - t0 < BENCH_MIN_NS {
        let mut reqs = Vec::new();
        for c in bufs[0]
            .as_mut_slice()
            .chunks_mut(4096)
            .take(BENCH_RAND_BATCH)
        {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            reqs.push(DiskReq::new(
                sector_of((x >> 33) % blocks * 4096),
                DiskOp::Read(c),
            ));
        }
        rand += reqs.len() as u64;
        disks.run(di, &mut reqs);
        check(&reqs);
    }
    let rand_ns = time::system_time_ns() - t0;

    let d = &disks.disks[di];
    let (requests, irqs) = (d.requests - requests0, d.interrupts() - irqs0);
    for b in bufs {
        if let Err((_, e)) = pv_runtime::dma::free(b) {
            println!("dom0: disk_bench: cannot give a buffer back: {e:?}");
        }
    }
    if let Some(e) = failed {
        println!("dom0: disk_bench: FAIL: disk {name}: {e}");
        return;
    }
    // Tenths of MiB/s, and whole operations per second.
    let rate = |bytes: u64, ns: u64| {
        u128::from(bytes) * 10_000_000_000 / (u128::from(ns.max(1)) * u128::from(MIB))
    };
    let (w, r) = (
        rate(region * writes, write_ns),
        rate(region * reads, read_ns),
    );
    let iops = u128::from(rand) * 1_000_000_000 / u128::from(rand_ns.max(1));
    println!(
        "dom0: disk_bench: disk {name}, the last {} MiB from sector {first}: {} MiB written \
         in {} ms, {} MiB read in {} ms, {rand} random 4 KiB reads in {} ms ({requests} \
         requests, {irqs} interrupts)",
        region / MIB,
        region / MIB * writes,
        write_ns / 1_000_000,
        region / MIB * reads,
        read_ns / 1_000_000,
        rand_ns / 1_000_000
    );
    println!(
        "dom0: disk_bench: seq_write_mib_s={}.{} seq_read_mib_s={}.{} rand4k_iops={iops}",
        w / 10,
        w % 10,
        r / 10,
        r % 10
    );
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

/// Descriptors per virtio-net queue: receive buffers posted at once, and
/// transmissions in flight (each takes one descriptor: header and frame in one
/// buffer).
const NET_QUEUE: usize = 32;
/// A buffer: one page, the largest Ethernet frame with its virtio header.
const NET_BUF: usize = 4096;
/// Frames waiting for a free transmit buffer before new ones are refused.
const NET_BACKLOG: usize = 256;

/// One page of DMA memory the NIC keeps for good, and the token of the
/// request that holds it (`None`: free).
struct NetSlot {
    buf: pv_runtime::virtio::DmaBuf,
    token: Option<u16>,
    /// The length handed to the device (a transmission's header and frame).
    len: usize,
}

impl NetSlot {
    fn alloc() -> Result<Self, virtio_drivers::Error> {
        let buf = pv_runtime::virtio::dma_alloc(1).ok_or(virtio_drivers::Error::DmaError)?;
        Ok(NetSlot {
            buf,
            token: None,
            len: NET_BUF,
        })
    }

    fn bytes(&self) -> &'static mut [u8] {
        let p: *mut u8 =
            core::ptr::with_exposed_provenance_mut(usize::try_from(self.buf.va).unwrap_or(0));
        // SAFETY: `buf` is one page of DMA memory mapped writable for as long as
        // the NIC lives (never freed); the driver touches it only while no
        // request holds it (`token` is `None`), or to hand the same buffer back
        // to `*_complete`.
        unsafe { core::slice::from_raw_parts_mut(p, NET_BUF) }
    }
}

/// A virtio-net NIC dom0 drives: the uplink of the net back end's switch
/// (`dom0_core::netback::uplink`). Receive buffers stay posted; sends are
/// queued and completed without waiting.
pub struct Nic {
    /// `eth0`, `eth1`, ... in PCI order.
    pub name: String,
    /// Where it is on the PCI bus.
    pub bdf: (u8, u8, u8),
    net: VirtIONetRaw<XenHal, PciTransport, NET_QUEUE>,
    irq: Option<DevIrq>,
    /// Receive buffers, all posted once started.
    rx: Vec<NetSlot>,
    /// Transmit buffers, allocated as needed.
    tx: Vec<NetSlot>,
    /// Frames waiting for a transmit buffer.
    backlog: alloc::collections::VecDeque<Vec<u8>>,
    /// The device failed a request: the NIC is left alone from then on.
    broken: bool,
}

impl core::fmt::Debug for Nic {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Nic")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Nic {
    fn new(
        name: String,
        bdf: (u8, u8, u8),
        net: VirtIONetRaw<XenHal, PciTransport, NET_QUEUE>,
        irq: Option<DevIrq>,
    ) -> Self {
        Nic {
            name,
            bdf,
            net,
            irq,
            rx: Vec::new(),
            tx: Vec::new(),
            backlog: alloc::collections::VecDeque::new(),
            broken: false,
        }
    }

    /// The NIC's MAC address.
    pub fn mac(&self) -> ether::Mac {
        self.net.mac_address()
    }

    /// Posts every receive buffer (once).
    fn start_rx(&mut self) -> Result<(), virtio_drivers::Error> {
        while self.rx.len() < NET_QUEUE {
            let mut s = NetSlot::alloc()?;
            // SAFETY: the buffer is the NIC's own DMA memory, untouched until
            // the request completes (`token` records that it is out).
            s.token = Some(unsafe { self.net.receive_begin(s.bytes())? });
            self.rx.push(s);
        }
        Ok(())
    }

    /// Copies the next frame the device completed into `out` (cut to its
    /// length) and posts the buffer again. `Ok(None)`: nothing arrived.
    fn take_frame(&mut self, out: &mut [u8]) -> Result<Option<usize>, virtio_drivers::Error> {
        self.start_rx()?;
        let Some(token) = self.net.poll_receive() else {
            return Ok(None);
        };
        let slot = self
            .rx
            .iter_mut()
            .find(|s| s.token == Some(token))
            .ok_or(virtio_drivers::Error::WrongToken)?;
        slot.token = None;
        let rx = slot.bytes();
        // SAFETY: the same buffer `receive_begin` was given for this token.
        let (hdr, len) = unsafe { self.net.receive_complete(token, rx)? };
        // The lengths are the device's word: keep them inside the buffer.
        let start = hdr.min(rx.len());
        let n = len.min(out.len()).min(rx.len() - start);
        out[..n].copy_from_slice(&rx[start..start + n]);
        // SAFETY: as in `start_rx`; the frame was copied out first.
        slot.token = Some(unsafe { self.net.receive_begin(rx)? });
        Ok(Some(n))
    }

    /// Frees the transmit buffers the device is done with.
    fn reap_tx(&mut self) -> Result<(), virtio_drivers::Error> {
        while let Some(token) = self.net.poll_transmit() {
            let slot = self
                .tx
                .iter_mut()
                .find(|s| s.token == Some(token))
                .ok_or(virtio_drivers::Error::WrongToken)?;
            let len = slot.len;
            // SAFETY: the same buffer (and length) `transmit_begin` was given.
            unsafe { self.net.transmit_complete(token, &slot.bytes()[..len])? };
            slot.token = None;
        }
        Ok(())
    }

    /// Hands backlogged frames to the device while transmit buffers are free.
    /// Returns whether frames are still waiting.
    fn flush(&mut self) -> bool {
        if self.broken {
            self.backlog.clear();
            return false;
        }
        if let Err(e) = self.push_backlog() {
            println!(
                "dom0: nic {}: sending failed ({e}); NIC disabled",
                self.name
            );
            self.broken = true;
            self.backlog.clear();
        }
        !self.backlog.is_empty()
    }

    fn push_backlog(&mut self) -> Result<(), virtio_drivers::Error> {
        self.reap_tx()?;
        while let Some(frame) = self.backlog.front() {
            let i = match self.tx.iter().position(|s| s.token.is_none()) {
                Some(i) => i,
                None if self.tx.len() < NET_QUEUE => {
                    self.tx.push(NetSlot::alloc()?);
                    self.tx.len() - 1
                }
                None => return Ok(()),
            };
            let page = self.tx[i].bytes();
            let hdr = self.net.fill_buffer_header(page)?;
            let len = hdr + frame.len();
            page[hdr..len].copy_from_slice(frame);
            // SAFETY: the buffer is the NIC's own DMA memory, untouched until
            // `reap_tx` sees the request complete.
            let token = unsafe { self.net.transmit_begin(&page[..len])? };
            self.tx[i].token = Some(token);
            self.tx[i].len = len;
            self.backlog.pop_front();
        }
        Ok(())
    }

    /// Queues one frame for sending; false when the backlog is full.
    pub fn queue(&mut self, frame: &[u8]) -> bool {
        if self.broken || self.backlog.len() >= NET_BACKLOG {
            return false;
        }
        self.backlog.push_back(frame.to_vec());
        self.flush();
        true
    }

    /// Acknowledges the NIC's interrupt, if one arrived, and sends the EOI.
    fn service_irq(&mut self) {
        let net = &mut self.net;
        irq::service(self.irq, || {
            net.ack_interrupt();
        });
    }

    /// Receives one frame into `out`, blocking on the NIC's interrupt until one
    /// arrives or `deadline` (system time) passes; returns the frame's length
    /// (`None` at the deadline). A frame longer than `out` is cut.
    pub fn receive(
        &mut self,
        out: &mut [u8],
        deadline: u64,
    ) -> Result<Option<usize>, virtio_drivers::Error> {
        loop {
            self.service_irq();
            if let Some(n) = self.take_frame(out)? {
                return Ok(Some(n));
            }
            let now = time::system_time_ns();
            if now >= deadline {
                return Ok(None);
            }
            irq::wait(self.irq, now.saturating_add(POLL_NS).min(deadline));
        }
    }

    /// The next frame that arrived, copied into `out`, without waiting.
    pub fn poll_frame(&mut self, out: &mut [u8]) -> Option<usize> {
        self.service_irq();
        self.take_frame(out).ok().flatten()
    }

    /// Hands backlogged frames to the device (see [`Nic::queue`]).
    pub fn flush_now(&mut self) {
        self.flush();
    }

    /// Blocks until the NIC interrupts or `ns` pass.
    pub fn idle(&self, ns: u64) {
        irq::wait(self.irq, time::system_time_ns().saturating_add(ns));
    }

    /// Sends one frame and waits (up to a second) until the device took it.
    pub fn send(&mut self, frame: &[u8]) -> Result<(), virtio_drivers::Error> {
        if !self.queue(frame) {
            return Err(virtio_drivers::Error::QueueFull);
        }
        let end = time::system_time_ns().saturating_add(1_000_000_000);
        while self.flush() || self.tx.iter().any(|s| s.token.is_some()) {
            if self.broken {
                return Err(virtio_drivers::Error::IoError);
            }
            if time::system_time_ns() >= end {
                return Err(virtio_drivers::Error::QueueFull);
            }
            self.service_irq();
            irq::wait(self.irq, time::system_time_ns().saturating_add(1_000_000));
        }
        Ok(())
    }
}

/// dom0's NICs as the net back end uses them: the uplinks of its bridges.
#[derive(Debug, Default)]
pub struct VirtioNics {
    /// The NICs, in PCI order.
    pub nics: Vec<Nic>,
}

impl Nics for VirtioNics {
    fn list(&self) -> Vec<NicInfo> {
        self.nics
            .iter()
            .map(|n| NicInfo {
                name: n.name.clone(),
                mac: n.mac(),
            })
            .collect()
    }

    fn send(&mut self, nic: usize, frame: &[u8]) -> bool {
        dom0_core::nics::frame_fits(frame) && self.nics.get_mut(nic).is_some_and(|n| n.queue(frame))
    }

    fn receive(&mut self, nic: usize, out: &mut Vec<Vec<u8>>, max: usize) {
        let Some(n) = self.nics.get_mut(nic) else {
            return;
        };
        if n.broken {
            return;
        }
        n.service_irq();
        let mut buf = [0u8; NET_BUF];
        while out.len() < max {
            match n.take_frame(&mut buf) {
                Ok(Some(len)) => out.push(buf[..len].to_vec()),
                Ok(None) => break,
                Err(e) => {
                    println!("dom0: nic {}: receiving failed ({e}); NIC disabled", n.name);
                    n.broken = true;
                    break;
                }
            }
        }
    }

    fn flush(&mut self) -> bool {
        let mut waiting = false;
        for n in &mut self.nics {
            waiting |= n.flush();
        }
        waiting
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
