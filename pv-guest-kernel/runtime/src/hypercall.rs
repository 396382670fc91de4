//! The hypercall page and the invoker the runtime uses.
//!
//! The page is a page-aligned static in its own section (`.hypercall_page`,
//! outside `.bss` so that zeroing `.bss` cannot wipe it). The image carries it
//! poisoned with `ret` bytes; the builder overwrites it with the stubs before
//! the guest starts, and the runtime refuses to boot if it still sees the
//! poison.
//!
//! Guests normally call the runtime's safe wrappers. [`invoker`] hands out the
//! raw `hypercall-abi` invoker for anything else, under the invoker's own
//! safety contract.

use core::cell::UnsafeCell;
use core::ptr;

use hypercall_abi::guest::HypercallPage;
use hypercall_abi::{Errno, GuestPtr, Hypercall, Invoke, PAGE_SIZE};

/// The poison the page carries in the image (`ret`), so a call through an
/// unfilled page returns instead of running into garbage.
const POISON: u8 = 0xC3;

/// Storage for the hypercall page: one page, page aligned.
#[derive(Debug)]
#[repr(C, align(4096))]
pub struct HypercallPageStorage(UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: the builder writes the page before the guest runs; afterwards the
// guest only executes it and reads it with volatile loads.
unsafe impl Sync for HypercallPageStorage {}

/// The hypercall page nominated by the `HYPERCALL_PAGE` note.
#[doc(hidden)]
#[unsafe(link_section = ".hypercall_page")]
pub static HYPERCALL_PAGE: HypercallPageStorage =
    HypercallPageStorage(UnsafeCell::new([POISON; PAGE_SIZE]));

fn base() -> *const u8 {
    HYPERCALL_PAGE.0.get().cast_const().cast()
}

/// Whether the builder filled the page (its first byte is no longer the
/// poison).
pub(crate) fn is_initialised() -> bool {
    // SAFETY: a byte of our own static, read volatile because the builder
    // wrote it behind the compiler's back.
    unsafe { base().read_volatile() != POISON }
}

/// The invoker the runtime's wrappers use.
pub(crate) fn hc() -> HypercallPage {
    // SAFETY: `start::boot` checks the page is filled before any code can
    // reach this (only the early-failure path runs before, and it uses a
    // direct `syscall`); the runtime runs in guest kernel mode; and the
    // runtime only passes addresses of live objects whose size matches what
    // the hypercall reads or writes.
    unsafe { HypercallPage::new(base()) }
}

/// The raw invoker, for hypercalls the runtime has no wrapper for (use it
/// with `hypercall_abi::hypercall::*`).
///
/// # Safety
///
/// Every guest address passed through it must be valid for the reads and
/// writes that hypercall performs (the hypervisor writes guest memory like a
/// raw pointer write), and the hypercall must not break what the runtime
/// relies on: the mappings of the image, the bootstrap region and
/// shared_info, and the trap table.
pub unsafe fn invoker() -> HypercallPage {
    hc()
}

/// Invoke hypercall `nr` with all arguments zero, if `nr` is a number Xen
/// leaves unassigned (or out of range); `None` for assigned numbers, which
/// this function refuses to call. The answer should be `-ENOSYS`.
pub fn call_unassigned(nr: u64) -> Option<Result<u64, Errno>> {
    if Hypercall::from_nr(nr).is_some() {
        return None;
    }
    Some(Errno::decode(hc().invoke(nr, [0; 5])))
}

/// A guest handle to `obj`, which the hypervisor will read.
///
/// Unlike `GuestPtr::from_ref`, this exposes the pointer's provenance, so the
/// compiler treats the object as reachable by the hypercall's `asm!` (which
/// may access any exposed memory) and keeps its current value in memory.
pub fn handle<T>(obj: &T) -> GuestPtr<T> {
    GuestPtr::new(ptr::from_ref(obj).expose_provenance() as u64)
}

/// A guest handle to `obj`, which the hypervisor may write: the compiler
/// reloads the object after the hypercall (see [`handle`]).
pub fn handle_mut<T>(obj: &mut T) -> GuestPtr<T> {
    GuestPtr::new(ptr::from_mut(obj).expose_provenance() as u64)
}

/// A guest handle to the first element of `items` (read by the
/// hypervisor).
pub fn handle_slice<T>(items: &[T]) -> GuestPtr<T> {
    GuestPtr::new(items.as_ptr().expose_provenance() as u64)
}
