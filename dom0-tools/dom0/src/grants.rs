//! What the block back end needs of grant tables on the machine: rings that
//! front ends granted, mapped side by side (`GNTTABOP_map_grant_ref`) in a
//! window of dom0's address space; batched `GNTTABOP_copy` between granted
//! pages and dom0's buffers; and the back end's I/O buffer (machine-contiguous
//! memory from `pv_runtime::dma`, so a disk reaches it without bouncing).

use alloc::vec::Vec;

use core::sync::atomic::AtomicU32;

use dom0_core::{GrantSeg, RingId};
use pv_runtime::abi::gnttab::{GntMapFlags, GnttabCopy, GnttabUnmapGrantRef};
use pv_runtime::abi::{DomId, Errno, GrantRef, Mfn};
use pv_runtime::gnttab::{self, CopyPtr, Handle};

/// The window: 49 TiB up, above the foreign-mapping window (`foreign.rs`).
const BASE: u64 = 0x0000_3100_0000_0000;
/// Ring slots.
pub const SLOTS: usize = 64;
/// Pages per slot: the largest ring (`max-ring-page-order` 4).
const SLOT_PAGES: usize = 16;
/// Ring ids from here on are grant rings (foreign rings are `1..=foreign::MAX_RINGS`).
pub const ID_BASE: u32 = 0x10_0000;
const _: () = assert!(crate::foreign::MAX_RINGS < ID_BASE as usize);
const PAGE: u64 = 4096;

/// A mapped grant ring.
#[derive(Debug)]
struct Mapped {
    pages: usize,
    handles: Vec<Handle>,
}

/// The grant rings dom0 maps.
#[derive(Debug, Default)]
pub struct Rings {
    slots: Vec<Option<Mapped>>,
    prepared: bool,
}

fn slot_va(slot: usize) -> u64 {
    BASE + (slot * SLOT_PAGES) as u64 * PAGE
}

impl Rings {
    /// Maps `refs` of `dom` writable at a free slot.
    pub fn map(&mut self, dom: DomId, refs: &[GrantRef]) -> Result<RingId, Errno> {
        if refs.is_empty() || refs.len() > SLOT_PAGES {
            return Err(Errno::EINVAL);
        }
        if !self.prepared {
            gnttab::prepare(BASE, (SLOTS * SLOT_PAGES) as u64).map_err(|_| Errno::ENOMEM)?;
            self.slots.resize_with(SLOTS, || None);
            self.prepared = true;
        }
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(Errno::ENOSPC)?;
        let va = slot_va(slot);
        let mut ops: Vec<_> = refs
            .iter()
            .enumerate()
            .map(|(i, &r)| gnttab::map_op(dom, r, va + i as u64 * PAGE, GntMapFlags::HOST_MAP))
            .collect();
        let called = gnttab::map_batch(&mut ops);
        let ok = called.is_ok() && ops.iter().all(|o| o.status == 0);
        if !ok {
            // Undo the pieces that did map.
            let mut undo: Vec<GnttabUnmapGrantRef> = ops
                .iter()
                .filter(|o| called.is_ok() && o.status == 0)
                .map(|o| gnttab::unmap_op(Handle(o.handle), o.host_addr))
                .collect();
            if !undo.is_empty() {
                let _ = gnttab::unmap_batch(&mut undo);
            }
            // A grant the front end did not give (or not writable): EINVAL.
            return Err(called.err().unwrap_or(Errno::EINVAL));
        }
        self.slots[slot] = Some(Mapped {
            pages: refs.len(),
            handles: ops.iter().map(|o| Handle(o.handle)).collect(),
        });
        Ok(RingId(ID_BASE + u32::try_from(slot).unwrap_or(0)))
    }

    fn slot_of(id: RingId) -> Option<usize> {
        let s = usize::try_from(id.0.checked_sub(ID_BASE)?).ok()?;
        (s < SLOTS).then_some(s)
    }

    /// The words of a mapped ring.
    pub fn ring(&self, id: RingId) -> Option<&[AtomicU32]> {
        let slot = Self::slot_of(id)?;
        let m = self.slots.get(slot)?.as_ref()?;
        let p: *const AtomicU32 =
            core::ptr::with_exposed_provenance(usize::try_from(slot_va(slot)).ok()?);
        // SAFETY: the slot maps `m.pages` granted pages (4 KiB each, side by
        // side) until `unmap`, which needs `&mut self` and so cannot run while
        // this borrow of `self` lives; the pages are shared with their front
        // end, so they are only ever accessed through atomics.
        Some(unsafe { core::slice::from_raw_parts(p, m.pages * 1024) })
    }

    /// Unmaps a ring.
    pub fn unmap(&mut self, id: RingId) {
        let Some(slot) = Self::slot_of(id) else {
            return;
        };
        let Some(m) = self.slots.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let va = slot_va(slot);
        let mut ops: Vec<GnttabUnmapGrantRef> = m
            .handles
            .iter()
            .enumerate()
            .map(|(i, &h)| gnttab::unmap_op(h, va + i as u64 * PAGE))
            .collect();
        let _ = gnttab::unmap_batch(&mut ops);
    }
}

/// `GNTTABOP_copy` of `segs` between `dom`'s grants and `buf`, in one
/// hypercall; a segment whose part of `buf` crosses a page of dom0's is two
/// copies.
#[allow(clippy::cast_possible_truncation)] // offsets and lengths inside a page fit u16
pub fn copy(
    dom: DomId,
    to_guest: bool,
    buf: &mut [u8],
    segs: &[GrantSeg],
    status: &mut [i16],
) -> Result<(), Errno> {
    let base = buf.as_mut_ptr().expose_provenance() as u64;
    let mut ops: Vec<GnttabCopy> = Vec::with_capacity(segs.len() + segs.len() / 2);
    let mut owner: Vec<usize> = Vec::with_capacity(ops.capacity());
    for (k, s) in segs.iter().enumerate() {
        let len = usize::from(s.len);
        if s.buf_off.checked_add(len).is_none_or(|end| end > buf.len()) {
            return Err(Errno::EINVAL);
        }
        let mut done = 0usize;
        while done < len {
            let va = base + (s.buf_off + done) as u64;
            let in_page = (va & 0xFFF) as usize;
            let n = (len - done).min(4096 - in_page);
            let ma = pv_runtime::dma::virt_to_machine(va).ok_or(Errno::EFAULT)?;
            let local = CopyPtr::frame(Mfn(ma >> 12), (ma & 0xFFF) as u16);
            let guest = CopyPtr::gref(dom, s.gref, s.offset + done as u16);
            let (src, dst) = if to_guest {
                (local, guest)
            } else {
                (guest, local)
            };
            ops.push(gnttab::copy_op(src, dst, n as u16));
            owner.push(k);
            done += n;
        }
    }
    status.iter_mut().for_each(|s| *s = 0);
    gnttab::copy_batch(&mut ops)?;
    for (op, &k) in ops.iter().zip(&owner) {
        if op.status != 0 && status[k] == 0 {
            status[k] = op.status;
        }
    }
    Ok(())
}

/// A machine-contiguous buffer of `bytes`, kept for good.
pub fn io_buffer(bytes: usize) -> Option<&'static mut [u8]> {
    let pages = u64::try_from(bytes.div_ceil(4096)).ok()?;
    let mut b = pv_runtime::dma::alloc(pages, 64).ok()?;
    let slice = b.as_mut_slice();
    let (ptr, len) = (slice.as_mut_ptr(), slice.len().min(bytes));
    // The buffer is never given back (`dma::free` is the only way to), so its
    // frames stay dom0's and mapped.
    // SAFETY: `alloc` mapped `len` bytes at `ptr` writable to frames that are
    // dom0's alone; nothing calls `dma::free` on it, so nothing ever unmaps or
    // frees them, and no other reference to them exists, so handing out one
    // `'static` exclusive slice is sound.
    Some(unsafe { core::slice::from_raw_parts_mut(ptr, len) })
}
