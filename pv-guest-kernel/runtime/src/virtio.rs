//! `virtio-drivers`' HAL for a PV domain that drives devices (dom0, or a driver
//! domain given the devices' I/O memory and interrupts): [`XenHal`].
//!
//! A device sees machine addresses (there is no IOMMU), so:
//!
//! * **DMA memory** ([`Hal::dma_alloc`]: virtqueues, request headers) is
//!   machine-contiguous, from [`dma_alloc`], mapped writable in a window of
//!   its own.
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

use crate::mm::{self, Frame};

/// Where device registers are mapped.
const MMIO_WINDOW: (u64, u64) = (0x0000_7100_0000_0000, 0x0000_7180_0000_0000);
/// Where DMA memory is mapped.
const DMA_WINDOW: (u64, u64) = (0x0000_7180_0000_0000, 0x0000_7200_0000_0000);
/// Distinct register ranges (BARs) mapped at once.
const MMIO_RANGES: usize = 32;
/// Buffers bounced at once (a virtqueue's worth of requests in flight).
const BOUNCES: usize = 256;
/// Frames one DMA allocation may have (a virtqueue of 1024 entries needs 7).
const MAX_DMA_PAGES: usize = 64;

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
/// The next free address of the DMA window (addresses are not reused: the
/// window is 512 GiB).
static DMA_NEXT: Mutex<u64> = Mutex::new(DMA_WINDOW.0);

/// DMA memory: `pages` machine-contiguous frames, zeroed and mapped writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaBuf {
    /// Where the buffer is mapped.
    pub va: u64,
    /// The machine address a device uses.
    pub bus: u64,
    /// Size in pages.
    pub pages: usize,
}

/// Allocates `pages` machine-contiguous frames, maps them writable at a fresh
/// address of the DMA window and zeroes them. `None` when the domain has no run
/// of that many contiguous frames left (or `pages` is 0 or too large).
pub fn dma_alloc(pages: usize) -> Option<DmaBuf> {
    if pages == 0 || pages > MAX_DMA_PAGES {
        return None;
    }
    let frames = contiguous_frames(pages)?;
    let mut next = DMA_NEXT.lock();
    let va = *next;
    let end = va
        .checked_add(pages as u64 * PAGE)
        .filter(|e| *e <= DMA_WINDOW.1);
    let mapped = end.is_some()
        && mm::map(
            va,
            &frames
                .iter()
                .map(|f| f.mfn)
                .collect::<heapless::Vec<Mfn, MAX_DMA_PAGES>>(),
            PteFlags::RW | PteFlags::NX | PteFlags::ACCESSED | PteFlags::DIRTY,
        )
        .is_ok();
    if !mapped {
        release(&frames);
        return None;
    }
    *next = end.unwrap_or(DMA_WINDOW.1);
    let p: *mut u8 = core::ptr::with_exposed_provenance_mut(usize::try_from(va).ok()?);
    // SAFETY: `va` starts `pages` pages of the DMA window this call just mapped
    // writable to frames nobody else uses; window addresses are never handed out
    // twice.
    unsafe { p.write_bytes(0, pages * 4096) };
    Some(DmaBuf {
        va,
        bus: frames[0].mfn.0 << 12,
        pages,
    })
}

/// Gives back DMA memory from [`dma_alloc`]: unmapped, its frames returned.
pub fn dma_free(buf: DmaBuf) {
    if mm::unmap(buf.va, buf.pages as u64).is_err() {
        // Still mapped writable: the frames cannot go back to the allocator.
        crate::println!(
            "pv-runtime: virtio: cannot unmap DMA memory at {:#x}",
            buf.va
        );
        return;
    }
    for i in 0..buf.pages as u64 {
        let mfn = Mfn((buf.bus >> 12) + i);
        if let Some(pfn) = mm::mfn_to_pfn(mfn) {
            let _ = mm::free_frame(Frame { pfn, mfn });
        }
    }
}

/// `pages` frames from the frame allocator whose MFNs follow each other.
/// Frames that do not fit are given back. (dom0's builder gives it memory in
/// large machine-contiguous runs, so consecutive allocations usually are.)
fn contiguous_frames(pages: usize) -> Option<heapless::Vec<Frame, MAX_DMA_PAGES>> {
    let mut run: heapless::Vec<Frame, MAX_DMA_PAGES> = heapless::Vec::new();
    let mut misfits: heapless::Vec<Frame, MAX_DMA_PAGES> = heapless::Vec::new();
    // Bounded: at most a few runs' worth of tries before giving up.
    for _ in 0..pages * 4 + 8 {
        let Some(f) = mm::alloc_frame() else { break };
        let follows = run
            .last()
            .is_none_or(|l| l.mfn.0.checked_add(1) == Some(f.mfn.0));
        if !follows {
            // Start again from this frame; keep the old run to give back.
            for old in run.drain(..) {
                if misfits.push(old).is_err() {
                    let _ = mm::free_frame(old);
                }
            }
        }
        if run.push(f).is_err() {
            let _ = mm::free_frame(f);
            break;
        }
        if run.len() == pages {
            release(&misfits);
            return Some(run);
        }
    }
    release(&misfits);
    release(&run);
    None
}

fn release(frames: &[Frame]) {
    for f in frames {
        let _ = mm::free_frame(*f);
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

// SAFETY: `dma_alloc` returns zeroed, page-aligned memory mapped only in the DMA
// window, whose addresses are never reused, so it aliases nothing; `share`
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
