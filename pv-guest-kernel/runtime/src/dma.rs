//! DMA memory without an IOMMU: machine-contiguous buffers below an address
//! limit, and pseudo-physical to machine translation.
//!
//! A device sees machine addresses, and a PV guest's pseudo-physical frames
//! are scattered over machine memory. [`alloc`] gets a buffer the way Linux's
//! `xen_create_contiguous_region` does: it takes `2^order` consecutive free
//! frames of the guest's own, unmaps them from the runtime's direct map,
//! marks them invalid in the P2M, trades them for one machine-contiguous
//! extent of order `order` below `2^address_bits` (`XENMEM_exchange`; the
//! hypervisor writes the new frames' M2P entries), then points the P2M at the
//! new frames and maps them writable at the same direct-map addresses.
//! [`free`] trades the extent back for single frames (Linux's
//! `xen_destroy_contiguous_region`), maps them read-only again and returns
//! them to the frame allocator. Both need the runtime's own page tables
//! (`mm::take_over`).
//!
//! ```ignore
//! let buf = pv_runtime::dma::alloc(4, 32)?; // 16 KiB below 4 GiB
//! device.set_ring(buf.machine_addr());      // what the device is told
//! buf.as_mut_slice().fill(0);               // what the driver touches
//! pv_runtime::dma::free(buf)?;
//! ```
//!
//! For an existing buffer (a single page is always machine-contiguous),
//! [`virt_to_machine`] and [`pfn_to_mfn`] give the address a device needs.
//! Calls are serialised by one lock; a buffer is at most
//! [`MAX_PAGES`] pages (512, 2 MiB: the largest extent an unprivileged
//! domain may exchange for on Xen).

use core::fmt;

use hypercall_abi::hypercall::memory_op;
use hypercall_abi::memory::{XenMemoryExchange, XenMemoryReservation, XenmemOp};
use hypercall_abi::xen::pte::{PTE_ADDR_MASK, PteFlags};
use hypercall_abi::{DomId, Errno, GuestPtr, Mfn, Pfn};
use pv_runtime_core::dma::{self as core_dma, MAX_ORDER};
use pv_runtime_core::mapper::MapError;
use spin::Mutex;

use crate::hypercall::{handle_mut, hc};
use crate::mm;

/// Largest buffer [`alloc`] gives, in pages.
pub const MAX_PAGES: u64 = 1 << MAX_ORDER;

/// The frame lists of one exchange (`2^MAX_ORDER` entries); the lock also
/// serialises [`alloc`] and [`free`].
static LIST: Mutex<[u64; 1 << MAX_ORDER]> = Mutex::new([0; 1 << MAX_ORDER]);

/// Why a DMA call failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaError {
    /// More than [`MAX_PAGES`] pages, or an address limit no page fits under.
    BadRequest,
    /// The runtime has not taken over its page tables yet (`mm::take_over`).
    NotReady,
    /// The guest has no run of free frames that long.
    NoFrames,
    /// The hypervisor refused the exchange (`-ENOMEM`: no contiguous extent
    /// below the limit; `-EPERM`: order too large for this domain; ...).
    /// Nothing changed.
    Exchange(Errno),
    /// The hypervisor answered success but the frames it gave are not one
    /// machine-contiguous range below the limit. The frames were traded back.
    NotContiguous,
    /// Editing the runtime's page tables failed.
    Map(MapError),
}

impl fmt::Display for DmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DmaError::BadRequest => write!(
                f,
                "dma: more than {MAX_PAGES} pages, or no page fits under the limit"
            ),
            DmaError::NotReady => write!(f, "dma: the runtime has not taken over its page tables"),
            DmaError::NoFrames => write!(f, "dma: no run of free frames that long"),
            DmaError::Exchange(e) => write!(f, "dma: XENMEM_exchange refused: {e:?}"),
            DmaError::NotContiguous => write!(
                f,
                "dma: the hypervisor's frames are not contiguous below the limit"
            ),
            DmaError::Map(e) => write!(f, "dma: page tables: {e}"),
        }
    }
}

impl From<MapError> for DmaError {
    fn from(e: MapError) -> Self {
        DmaError::Map(e)
    }
}

/// A machine-contiguous DMA buffer of `2^order` pages, mapped writable at
/// [`va`](Self::va). Give it back with [`free`]; dropping it leaks it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a DMA buffer is given back with dma::free"]
pub struct DmaBuffer {
    pfn: Pfn,
    mfn: Mfn,
    order: u32,
}

impl DmaBuffer {
    /// Its first byte in the guest's address space (the direct map).
    pub fn va(&self) -> u64 {
        mm::direct_va(self.pfn)
    }

    /// Its first byte as the device sees it (a machine address).
    pub fn machine_addr(&self) -> u64 {
        self.mfn.0 << 12
    }

    /// Its first pseudo-physical frame.
    pub fn pfn(&self) -> Pfn {
        self.pfn
    }

    /// Its first machine frame.
    pub fn mfn(&self) -> Mfn {
        self.mfn
    }

    /// Pages (a power of two: [`alloc`] rounds up).
    pub fn pages(&self) -> u64 {
        1 << self.order
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        4096 << self.order
    }

    /// Never empty: at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The buffer's bytes. The device may write them at any time it was told
    /// to; the caller orders its accesses against the device's (x86 DMA is
    /// cache-coherent).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let p: *mut u8 =
            core::ptr::with_exposed_provenance_mut(usize::try_from(self.va()).unwrap_or(0));
        // SAFETY: `va()..va() + len()` is mapped writable to the buffer's frames
        // for as long as the buffer exists (`alloc` mapped it, only `free`
        // unmaps it and consumes the buffer); the frames are the guest's and no
        // other Rust object lives there; the borrow of `self` keeps the slice
        // unique.
        unsafe { core::slice::from_raw_parts_mut(p, self.len()) }
    }
}

/// The machine frame behind pseudo-physical frame `pfn` (the P2M), if the
/// guest has one there.
pub fn pfn_to_mfn(pfn: Pfn) -> Option<Mfn> {
    mm::pfn_to_mfn(pfn)
}

/// The machine address behind virtual address `va` in the kernel's page
/// tables (what a device must be given), or `None` if `va` is not mapped.
/// Valid for one page: the next page may be anywhere in machine memory
/// unless it belongs to a [`DmaBuffer`].
pub fn virt_to_machine(va: u64) -> Option<u64> {
    let pte = mm::translate(va & !0xFFF)?;
    Some((pte.0 & PTE_ADDR_MASK) | (va & 0xFFF))
}

/// A machine-contiguous buffer of at least `pages` pages (rounded up to a
/// power of two, at most [`MAX_PAGES`]) whose every byte lies below
/// `2^address_bits` (0 = anywhere; 32 for a device with a 32-bit DMA mask,
/// 24 for ISA DMA), zeroed and mapped writable. Nothing changes on failure.
pub fn alloc(pages: u64, address_bits: u32) -> Result<DmaBuffer, DmaError> {
    let order = core_dma::order_for_pages(pages).ok_or(DmaError::BadRequest)?;
    if (1..12).contains(&address_bits) || address_bits > 255 {
        return Err(DmaError::BadRequest);
    }
    if !mm::taken_over() {
        return Err(DmaError::NotReady);
    }
    let count = 1usize << order;
    let n = count as u64;
    let mut list = LIST.lock();
    let span = mm::alloc_pfn_span(n).ok_or(DmaError::NoFrames)?;
    let pfn = Pfn(span.start);
    let mut ok = true;
    for (i, slot) in list.iter_mut().take(count).enumerate() {
        match mm::pfn_to_mfn(Pfn(pfn.0 + i as u64)) {
            Some(m) => *slot = m.0,
            None => ok = false,
        }
    }
    if !ok {
        give_back(pfn, n);
        return Err(DmaError::NoFrames);
    }
    // Linux's xen_zap_pfn_range: the frames must hold no mapping to be traded.
    if let Err(e) = mm::unmap(mm::direct_va(pfn), n) {
        remap_old(pfn, &list[..count]);
        give_back(pfn, n);
        return Err(e.into());
    }
    for i in 0..n {
        mm::set_p2m(Pfn(pfn.0 + i), None);
    }
    let mut out = [pfn.0];
    let r = exchange(&mut list[..count], 0, &mut out, order, address_bits);
    let mfn = Mfn(out[0]);
    match r {
        Ok(()) => {}
        Err(e) => {
            remap_old(pfn, &list[..count]);
            give_back(pfn, n);
            return Err(DmaError::Exchange(e));
        }
    }
    for i in 0..n {
        mm::set_p2m(Pfn(pfn.0 + i), Some(Mfn(mfn.0 + i)));
    }
    let mut buf = DmaBuffer { pfn, mfn, order };
    let wanted = core_dma::below_address_bits(mfn.0, n, address_bits);
    let mapped = map_buffer(&buf);
    if !wanted || mapped.is_err() {
        drop(list);
        // Trade it back; the frames are the guest's either way.
        let _ = free(buf);
        return Err(match mapped {
            Err(e) => e,
            Ok(()) => DmaError::NotContiguous,
        });
    }
    buf.as_mut_slice().fill(0);
    Ok(buf)
}

/// Gives a buffer from [`alloc`] back: its extent is traded for single
/// frames, which return to the frame allocator mapped read-only as every
/// free frame is. On failure the buffer is returned unchanged with the error.
pub fn free(buf: DmaBuffer) -> Result<(), (DmaBuffer, DmaError)> {
    let n = buf.pages();
    let count = 1usize << buf.order;
    let mut list = LIST.lock();
    if let Err(e) = mm::unmap(buf.va(), n) {
        return Err((buf, e.into()));
    }
    for (i, slot) in (0..n).zip(list.iter_mut()) {
        mm::set_p2m(Pfn(buf.pfn.0 + i), None);
        *slot = buf.pfn.0 + i;
    }
    let mut extent = [buf.mfn.0];
    if let Err(e) = exchange(&mut extent, buf.order, &mut list[..count], 0, 0) {
        for i in 0..n {
            mm::set_p2m(Pfn(buf.pfn.0 + i), Some(Mfn(buf.mfn.0 + i)));
        }
        let _ = map_buffer(&buf);
        return Err((buf, DmaError::Exchange(e)));
    }
    remap_old(buf.pfn, &list[..count]);
    give_back(buf.pfn, n);
    Ok(())
}

/// One `XENMEM_exchange` for the guest itself: `input` extents of order
/// `in_order` (their first MFNs) for `output` extents of order `out_order`
/// below `address_bits`; `output` holds the PFNs on the way in and the MFNs
/// on the way out. All or nothing (one chunk when one list has one entry).
fn exchange(
    input: &mut [u64],
    in_order: u32,
    output: &mut [u64],
    out_order: u32,
    address_bits: u32,
) -> Result<(), Errno> {
    let mut x = XenMemoryExchange {
        in_: XenMemoryReservation {
            extent_start: list_handle(input),
            nr_extents: input.len() as u64,
            extent_order: in_order,
            mem_flags: 0,
            domid: DomId::SELF,
            ..XenMemoryReservation::default()
        },
        out: XenMemoryReservation {
            extent_start: list_handle(output),
            nr_extents: output.len() as u64,
            extent_order: out_order,
            mem_flags: address_bits,
            domid: DomId::SELF,
            ..XenMemoryReservation::default()
        },
        nr_exchanged: 0,
    };
    let nr = u64::from(XenmemOp::Exchange.nr());
    let arg = handle_mut(&mut x).cast();
    memory_op(&mut hc(), nr, arg)?;
    if x.nr_exchanged == input.len() as u64 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// A handle to a frame list the hypervisor reads and writes (the pointer's
/// provenance is exposed, as `hypercall::handle_mut` does, so the compiler
/// reloads the list after the call).
fn list_handle(list: &mut [u64]) -> GuestPtr<u64> {
    GuestPtr::new(list.as_mut_ptr().expose_provenance() as u64)
}

/// Maps a buffer's frames writable at its direct-map addresses.
fn map_buffer(buf: &DmaBuffer) -> Result<(), DmaError> {
    let flags = PteFlags::RW | PteFlags::ACCESSED | PteFlags::DIRTY | PteFlags::NX;
    let first = buf.mfn.0;
    mm::map_frames(buf.va(), buf.pages(), flags, |i| Some(Mfn(first + i)))?;
    Ok(())
}

/// Maps frames `mfns` read-only at the direct-map addresses of `pfn..`, as
/// the runtime maps every frame it does not use (best effort: a frame left
/// unmapped is only unreadable through the direct map).
fn remap_old(pfn: Pfn, mfns: &[u64]) {
    for (i, &m) in mfns.iter().enumerate() {
        mm::set_p2m(Pfn(pfn.0 + i as u64), Some(Mfn(m)));
    }
    let _ = mm::map_frames(
        mm::direct_va(pfn),
        mfns.len() as u64,
        PteFlags::ACCESSED,
        |i| mfns.get(usize::try_from(i).ok()?).copied().map(Mfn),
    );
}

/// Returns frames `pfn..pfn + n` to the frame allocator.
fn give_back(pfn: Pfn, n: u64) {
    for i in 0..n {
        let _ = mm::free_pfn(Pfn(pfn.0 + i));
    }
}
