//! Upload buffers in free frames, mapped writable in a window of the
//! address space of their own (the runtime's heap holds well under a
//! kernel image).

use core::ptr;

use dom0_core::{StoreError, UploadBuf, UploadStore};
use pv_runtime::abi::xen::pte::PteFlags;
use pv_runtime::abi::{Mfn, PAGE_SIZE};
use pv_runtime::mm::{self, Frame};

/// Where upload buffers are mapped: 64 TiB up, far above the direct map.
const WINDOW_START: u64 = 0x0000_4000_0000_0000;
/// The window's end.
const WINDOW_END: u64 = 0x0000_7000_0000_0000;
/// Frames kept back for page tables and the rest of dom0.
const RESERVE_FRAMES: u64 = 1024;
/// Pages unmapped per step when a buffer is freed.
const FREE_BATCH: usize = 64;
const PAGE: u64 = PAGE_SIZE as u64;

/// Hands out frame-backed buffers.
#[derive(Debug)]
pub struct FrameStore {
    next_va: u64,
}

impl FrameStore {
    /// A store whose first buffer goes at the window's start.
    pub const fn new() -> Self {
        FrameStore {
            next_va: WINDOW_START,
        }
    }
}

/// `pages` frames mapped read-write at `va`.
#[derive(Debug)]
pub struct FrameBuf {
    va: u64,
    pages: u64,
}

impl UploadStore for FrameStore {
    type Buf = FrameBuf;

    fn alloc(&mut self, size: u64) -> Result<FrameBuf, StoreError> {
        let pages = size.div_ceil(PAGE);
        let free = mm::frames_available().saturating_sub(RESERVE_FRAMES);
        if pages > free {
            return Err(StoreError::OutOfMemory {
                available: free * PAGE,
            });
        }
        let va = self.next_va;
        // Each buffer starts on a 2 MiB boundary, with a guard gap after it.
        let next = pages
            .checked_mul(PAGE)
            .and_then(|len| va.checked_add(len))
            .and_then(|end| end.checked_next_multiple_of(2 << 20))
            .and_then(|end| end.checked_add(2 << 20))
            .filter(|&end| end <= WINDOW_END)
            .ok_or(StoreError::Exhausted)?;
        self.next_va = next;
        let buf = FrameBuf { va, pages };
        let flags = PteFlags::RW | PteFlags::NX;
        if mm::map_frames(va, pages, flags, |_| mm::alloc_frame().map(|f| f.mfn)).is_err() {
            // Dropping the buffer gives back whatever got mapped.
            drop(buf);
            return Err(StoreError::OutOfMemory {
                available: mm::frames_available().saturating_sub(RESERVE_FRAMES) * PAGE,
            });
        }
        Ok(buf)
    }

    fn free_frames(&self) -> u64 {
        mm::frames_available()
    }
}

impl FrameBuf {
    fn len(&self) -> usize {
        usize::try_from(self.pages * PAGE).unwrap_or(0)
    }
}

impl UploadBuf for FrameBuf {
    fn write(&mut self, offset: usize, data: &[u8]) {
        let Some(end) = offset.checked_add(data.len()) else {
            return;
        };
        if end > self.len() {
            return;
        }
        let Ok(base) = usize::try_from(self.va) else {
            return;
        };
        let dst: *mut u8 = ptr::with_exposed_provenance_mut(base + offset);
        // SAFETY: `[va, va + len)` is mapped read-write for this buffer alone
        // (`alloc` mapped fresh frames there and nothing else maps the
        // window), and `offset..end` lies inside it; `data` is ordinary
        // memory elsewhere, so the two do not overlap.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    }

    fn bytes(&self, len: usize) -> &[u8] {
        let Ok(base) = usize::try_from(self.va) else {
            return &[];
        };
        let p: *const u8 = ptr::with_exposed_provenance(base);
        // SAFETY: the window is mapped for as long as `self` lives, only
        // `write` (which needs `&mut self`) changes it, and `len` is clamped
        // to the mapped length.
        unsafe { core::slice::from_raw_parts(p, len.min(self.len())) }
    }

    fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        let Ok(base) = usize::try_from(self.va) else {
            return &mut [];
        };
        let p: *mut u8 = ptr::with_exposed_provenance_mut(base);
        // SAFETY: as in `bytes`: the window is mapped read-write for this buffer
        // alone while `self` lives, `len` is clamped to the mapped length, and the
        // `&mut self` borrow keeps every other view of it away for the slice's life.
        unsafe { core::slice::from_raw_parts_mut(p, len.min(self.len())) }
    }
}

impl Drop for FrameBuf {
    fn drop(&mut self) {
        let mut page = 0;
        let mut lost = 0u64;
        while page < self.pages {
            let n = (self.pages - page).min(FREE_BATCH as u64);
            let va = self.va + page * PAGE;
            let mut mfns = [Mfn(0); FREE_BATCH];
            let mut found = 0;
            for i in 0..n {
                if let Some(pte) = mm::translate(va + i * PAGE).filter(|p| p.is_present()) {
                    mfns[found] = pte.mfn();
                    found += 1;
                }
            }
            if mm::unmap(va, n).is_err() {
                // Frames still mapped must not be reused: leak them.
                pv_runtime::println!(
                    "dom0: cannot unmap an upload buffer at {va:#x}; its frames leak"
                );
                return;
            }
            for &mfn in &mfns[..found] {
                // Every frame of the buffer came from `alloc_frame`, so each goes
                // back; a refusal (logged by `free_frame`) or an MFN that is not
                // ours is a bug, said out loud rather than leaked in silence.
                match mm::mfn_to_pfn(mfn) {
                    Some(pfn) => {
                        if mm::free_frame(Frame { pfn, mfn }).is_err() {
                            lost += 1;
                        }
                    }
                    None => {
                        pv_runtime::println!(
                            "dom0: BUG: upload buffer frame mfn {:#x} is not dom0's",
                            mfn.0
                        );
                        lost += 1;
                    }
                }
            }
            page += n;
        }
        if lost != 0 {
            pv_runtime::println!(
                "dom0: BUG: {lost} frames of the upload buffer at {:#x} did not go back",
                self.va
            );
        }
    }
}
