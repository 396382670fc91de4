//! `virtio-drivers`' HAL for a PV domain that drives devices (dom0, or a driver
//! domain given the devices' I/O memory and interrupts): [`XenHal`].
//!
//! A device sees machine addresses (there is no IOMMU), so:
//!
//! * **DMA memory** ([`Hal::dma_alloc`]: virtqueues, request headers) is
//!   machine-contiguous: [`crate::dma`] trades the pages' frames for one
//!   machine extent (`XENMEM_exchange`), as Linux's
//!   `xen_create_contiguous_region` does.
//! * **Buffers the driver passes** ([`Hal::share`]: a block read's
//!   destination, a packet) go straight through when their pages are
//!   machine-contiguous (always, for one page or less within a page), and
//!   are bounced through DMA memory otherwise, as Linux's swiotlb-xen does
//!   ([`pv_runtime_core::devmem`]).
//! * **Device registers** ([`Hal::mmio_phys_to_virt`]: a BAR) are mapped
//!   uncached into a window, each range once, with `mmu_update`; the
//!   hypervisor allows it only for frames in the domain's I/O-memory set.
//!
//! The PCI transport reaches configuration space through [`Cf8`]
//! (mechanism #1, which the hypervisor emulates for dom0).

use core::ptr::NonNull;

use hypercall_abi::Mfn;
use hypercall_abi::xen::pte::PteFlags;
use pv_runtime_core::devmem::{
    self, Bounce, BounceTable, MmioMapping, MmioWindow, NotDirect, PAGE, Placement,
};
use spin::Mutex;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction};
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::mm;

/// Where device registers are mapped.
const MMIO_WINDOW: (u64, u64) = (0x0000_7100_0000_0000, 0x0000_7180_0000_0000);
/// Distinct register ranges (BARs) mapped at once.
const MMIO_RANGES: usize = 64;
/// Buffers bounced at once (a virtqueue's worth of requests in flight).
const BOUNCES: usize = 256;
/// DMA buffers alive at once (virtqueues, the drivers' own buffers, bounces).
const MAX_LIVE: usize = 512;

static MMIO: Mutex<MmioWindow<MMIO_RANGES>> =
    Mutex::new(MmioWindow::new(MMIO_WINDOW.0, MMIO_WINDOW.1));
static BOUNCED: Mutex<BounceTable<BOUNCES>> = Mutex::new(BounceTable::new());
/// Buffers shared as they were, and bounced, since boot.
static SHARED: [core::sync::atomic::AtomicU64; 2] =
    [const { core::sync::atomic::AtomicU64::new(0) }; 2];

/// How many buffers [`XenHal`] handed to devices as they were, and how many it
/// bounced, since boot.
pub fn share_counts() -> (u64, u64) {
    use core::sync::atomic::Ordering::Relaxed;
    (SHARED[0].load(Relaxed), SHARED[1].load(Relaxed))
}

/// DMA memory: machine-contiguous frames, zeroed and mapped writable (a
/// [`crate::dma`] buffer, kept by this module until [`dma_free`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaBuf {
    /// Where the buffer is mapped.
    pub va: u64,
    /// The machine address a device uses.
    pub bus: u64,
    /// Size in pages (what was asked for; the buffer may be larger).
    pub pages: usize,
}

/// The [`crate::dma`] buffers behind the live [`DmaBuf`]s.
static LIVE: Mutex<heapless::Vec<crate::dma::DmaBuffer, MAX_LIVE>> =
    Mutex::new(heapless::Vec::new());

/// Allocates `pages` machine-contiguous pages ([`crate::dma::alloc`], anywhere
/// in machine memory: virtio devices take 64-bit addresses), zeroed and mapped
/// writable. `None` when the hypervisor has no such run for the domain, or
/// `pages` is 0 or more than [`crate::dma::MAX_PAGES`].
pub fn dma_alloc(pages: usize) -> Option<DmaBuf> {
    let buf = crate::dma::alloc(u64::try_from(pages).ok()?, 0).ok()?;
    let handle = DmaBuf {
        va: buf.va(),
        bus: buf.machine_addr(),
        pages,
    };
    if let Err(buf) = LIVE.lock().push(buf) {
        if let Err((_, e)) = crate::dma::free(buf) {
            crate::println!("pv-runtime: virtio: cannot give DMA memory back: {e:?}");
        }
        return None;
    }
    Some(handle)
}

/// Gives back DMA memory from [`dma_alloc`].
pub fn dma_free(buf: DmaBuf) {
    let taken = {
        let mut live = LIVE.lock();
        live.iter()
            .position(|b| b.machine_addr() == buf.bus)
            .map(|i| live.swap_remove(i))
    };
    match taken.map(crate::dma::free) {
        Some(Ok(())) => {}
        Some(Err((b, e))) => {
            crate::println!("pv-runtime: virtio: cannot give DMA memory back: {e:?}");
            let _ = LIVE.lock().push(b);
        }
        None => crate::println!(
            "pv-runtime: virtio: freeing unknown DMA memory {:#x}",
            buf.bus
        ),
    }
}

/// The machine frame mapped at `va` in the kernel's address space.
fn mfn_at(va: u64) -> Option<Mfn> {
    let pte = mm::translate(va)?;
    Some(Mfn((pte.0 & hypercall_abi::xen::pte::PTE_ADDR_MASK) >> 12))
}

/// Maps `[paddr, paddr + size)` (device registers) uncached into the MMIO
/// window, once per range; returns the address of `paddr`.
pub fn map_mmio(paddr: u64, size: u64) -> Option<u64> {
    let mut w = MMIO.lock();
    let m: MmioMapping = match w.place(paddr, size).ok()? {
        Placement::Mapped(va) => return Some(va),
        Placement::New(m) => m,
    };
    let flags = PteFlags::RW | PteFlags::NX | PteFlags::PCD | PteFlags::PWT;
    if let Err(e) = mm::map_frames(m.va, m.frames, flags, |i| Some(Mfn(m.mfn + i))) {
        crate::println!(
            "pv-runtime: virtio: mapping frames {:#x}+{}: {e:?}",
            m.mfn,
            m.frames
        );
        return None;
    }
    w.commit(m).ok()?;
    Some(m.va + (paddr & (PAGE - 1)))
}

/// `virtio-drivers`' HAL for a PV domain: machine addresses for DMA, bounce
/// buffers for scattered buffers, uncached BAR mappings.
#[derive(Debug)]
pub struct XenHal;

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory that `crate::dma`
// took out of the frame allocator for this buffer alone, so it aliases nothing; `share`
// returns a machine address covering exactly the buffer (or a bounce buffer of
// at least its size); `mmio_phys_to_virt` maps the device's own frames in a
// window nothing else uses.
unsafe impl Hal for XenHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        match dma_alloc(pages).and_then(|b| Some((b.bus, nonnull(b.va)?))) {
            Some(r) => r,
            // virtio-drivers turns a zero address into `Error::DmaError`.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        dma_free(DmaBuf {
            va: vaddr.as_ptr().expose_provenance() as u64,
            bus: paddr,
            pages,
        });
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, size: usize) -> NonNull<u8> {
        match map_mmio(paddr, size as u64).and_then(nonnull) {
            Some(p) => p,
            None => panic!("virtio: cannot map device registers {paddr:#x}+{size:#x}"),
        }
    }

    unsafe fn share(buffer: NonNull<[u8]>, direction: BufferDirection) -> PhysAddr {
        let va = buffer.as_ptr().cast::<u8>().expose_provenance() as u64;
        let len = buffer.len() as u64;
        match devmem::bus_address(va, len, mfn_at) {
            Ok(bus) => {
                SHARED[0].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                return bus;
            }
            Err(NotDirect::Scattered) => {}
            Err(e) => panic!("virtio: buffer {va:#x}+{len:#x} cannot be shared: {e:?}"),
        }
        let pages = usize::try_from(devmem::pages_for(len)).unwrap_or(usize::MAX);
        let Some(b) = dma_alloc(pages) else {
            panic!("virtio: no DMA memory to bounce {len} bytes");
        };
        let Some(bounce) = nonnull(b.va) else {
            panic!("virtio: bounce buffer at {:#x}", b.va);
        };
        if direction != BufferDirection::DeviceToDriver {
            // SAFETY: the caller guarantees `buffer` is valid and unshared for
            // this call; the bounce buffer is `pages` fresh pages, at least `len`
            // bytes; the two do not overlap.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    buffer.as_ptr().cast::<u8>(),
                    bounce.as_ptr(),
                    buffer.len(),
                );
            }
        }
        let record = Bounce {
            bus: b.bus,
            va: b.va,
            pages: b.pages as u64,
        };
        if BOUNCED.lock().insert(record).is_err() {
            panic!("virtio: more than {BOUNCES} buffers bounced at once");
        }
        SHARED[1].fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        b.bus
    }

    unsafe fn unshare(paddr: PhysAddr, buffer: NonNull<[u8]>, direction: BufferDirection) {
        let Some(b) = BOUNCED.lock().take(paddr) else {
            return; // passed straight through
        };
        let (Some(bounce), Ok(pages)) = (nonnull(b.va), usize::try_from(b.pages)) else {
            return;
        };
        if direction != BufferDirection::DriverToDevice {
            // SAFETY: as in `share`: the bounce buffer holds at least
            // `buffer.len()` bytes the device wrote; `buffer` is valid and
            // unshared for this call.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    bounce.as_ptr().cast_const(),
                    buffer.as_ptr().cast::<u8>(),
                    buffer.len(),
                );
            }
        }
        dma_free(DmaBuf {
            va: b.va,
            bus: b.bus,
            pages,
        });
    }
}

fn nonnull(va: u64) -> Option<NonNull<u8>> {
    NonNull::new(core::ptr::with_exposed_provenance_mut(
        usize::try_from(va).ok()?,
    ))
}

/// PCI configuration space through mechanism #1 (ports 0xCF8/0xCFC), for
/// `virtio-drivers`' PCI transport. Needs the virtual IOPL (dom0 raises it with
/// `physdev::set_iopl(1)`) and the hypervisor's permission for the ports.
#[derive(Debug)]
pub struct Cf8 {
    _private: (),
}

impl Cf8 {
    /// The mechanism.
    ///
    /// # Safety
    ///
    /// The virtual IOPL must allow port I/O, and the caller must be the only
    /// user of 0xCF8/0xCFC on this vCPU while the value lives (an access is a
    /// pair of port writes and reads that must not interleave with another).
    pub unsafe fn new() -> Self {
        Cf8 { _private: () }
    }
}

impl ConfigurationAccess for Cf8 {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        // SAFETY: `new`'s caller made port I/O possible and owns the pair.
        unsafe { crate::physdev::pci_conf_read32(df.bus, df.device, df.function, reg) }
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        // SAFETY: as in `read_word`.
        unsafe { crate::physdev::pci_conf_write32(df.bus, df.device, df.function, reg, data) }
    }

    unsafe fn unsafe_clone(&self) -> Self {
        Cf8 { _private: () }
    }
}
