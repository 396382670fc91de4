//! The shared_info page (ABI digest §4).
//!
//! The boot sequence maps the page the builder named in
//! `start_info.shared_info` (a machine address) over a page-aligned slot in
//! the image's `.bss` with `update_va_mapping(slot, MA | P|RW|A|D,
//! UVMF_INVLPG)`. The slot lies in the bootstrap region, so the L1 entry
//! that maps it exists. From then on the hypervisor writes parts of the page
//! at any time, so every access here is volatile (or atomic), at the offsets
//! `hypercall-abi`'s layouts define. Before the mapping the slot reads as
//! zeros.

use core::cell::UnsafeCell;
use core::mem::{align_of, offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::hypercall::update_va_mapping;
use hypercall_abi::mmu::{UVMF_INVLPG, UVMF_LOCAL};
use hypercall_abi::xen::{
    LEGACY_MAX_VCPUS, PteFlags, SharedInfo, StartInfo, VcpuInfo, VcpuTimeInfo,
};
use hypercall_abi::xen::{Pte, shared_info::EVTCHN_WORDS};
use hypercall_abi::{Errno, PAGE_SIZE};

use crate::hypercall::hc;

#[repr(C, align(4096))]
struct Slot(UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: after mapping, the page is shared with the hypervisor and only
// accessed through volatile and atomic operations below.
unsafe impl Sync for Slot {}

static SLOT: Slot = Slot(UnsafeCell::new([0; PAGE_SIZE]));
static MAPPED: AtomicBool = AtomicBool::new(false);

const _: () = assert!(size_of::<SharedInfo>() <= PAGE_SIZE);

/// Guest virtual address where shared_info is mapped.
pub fn va() -> u64 {
    SLOT.0.get().addr() as u64
}

/// Whether the boot sequence has mapped the page.
pub fn is_mapped() -> bool {
    MAPPED.load(Ordering::Acquire)
}

/// Map shared_info over the slot.
pub(crate) fn map(si: &StartInfo) -> Result<(), Errno> {
    let flags = PteFlags::PRESENT | PteFlags::RW | PteFlags::ACCESSED | PteFlags::DIRTY;
    let pte = Pte::new(si.shared_info.mfn(), flags);
    update_va_mapping(&mut hc(), va(), pte.0, UVMF_INVLPG | UVMF_LOCAL)?;
    MAPPED.store(true, Ordering::Release);
    Ok(())
}

fn ptr_at<T>(offset: usize) -> *mut T {
    assert!(offset + size_of::<T>() <= size_of::<SharedInfo>() && offset % align_of::<T>() == 0);
    SLOT.0.get().cast::<u8>().wrapping_add(offset).cast()
}

fn read<T: Copy>(offset: usize) -> T {
    // SAFETY: `ptr_at` checked the field lies inside the page-aligned slot
    // and is aligned; the slot is either our zeroed page or shared_info,
    // which the hypervisor may write at any time, hence volatile.
    unsafe { ptr_at::<T>(offset).read_volatile() }
}

fn write<T: Copy>(offset: usize, value: T) {
    // SAFETY: as in `read`; the guest owns the fields it writes here.
    unsafe { ptr_at::<T>(offset).write_volatile(value) }
}

fn atomic(offset: usize) -> &'static AtomicU64 {
    // SAFETY: `ptr_at` checked bounds and 8-byte alignment; the slot lives
    // forever, and every access to these words goes through atomics here
    // (the hypervisor uses locked instructions on its side).
    unsafe { AtomicU64::from_ptr(ptr_at::<u64>(offset)) }
}

fn vcpu_field(vcpu: usize, field: usize) -> usize {
    assert!(
        vcpu < LEGACY_MAX_VCPUS,
        "vCPU {vcpu} has no slot in shared_info"
    );
    offset_of!(SharedInfo, vcpu_info) + vcpu * size_of::<VcpuInfo>() + field
}

/// `vcpu_info[n].arch.cr2` of the current vCPU `n`: the address of the
/// last page fault Xen bounced to it.
pub fn cr2() -> u64 {
    read(vcpu_field(
        crate::smp::index(),
        offset_of!(VcpuInfo, arch.cr2),
    ))
}

/// `vcpu_info[vcpu].time`, copied once (not checked for consistency; see
/// [`crate::time`] for the seqlock reader).
pub fn vcpu_time(vcpu: usize) -> VcpuTimeInfo {
    read(vcpu_field(vcpu, offset_of!(VcpuInfo, time)))
}

/// `vcpu_info[vcpu].time.version`.
pub fn vcpu_time_version(vcpu: usize) -> u32 {
    read(vcpu_field(
        vcpu,
        offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, version),
    ))
}

/// `vcpu_info[vcpu].evtchn_upcall_mask` (1 = events masked).
pub fn upcall_mask(vcpu: usize) -> u8 {
    read(vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask)))
}

/// Set `vcpu_info[vcpu].evtchn_upcall_mask`.
pub fn set_upcall_mask(vcpu: usize, mask: u8) {
    write(
        vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask)),
        mask,
    );
}

/// `vcpu_info[vcpu].evtchn_upcall_pending`.
pub fn upcall_pending(vcpu: usize) -> u8 {
    read(vcpu_field(
        vcpu,
        offset_of!(VcpuInfo, evtchn_upcall_pending),
    ))
}

/// Clear `vcpu_info[vcpu].evtchn_upcall_pending`.
pub fn clear_upcall_pending(vcpu: usize) {
    write(
        vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_pending)),
        0u8,
    );
}

/// `vcpu_info[vcpu].evtchn_pending_sel`, for atomic exchange.
pub fn pending_sel(vcpu: usize) -> &'static AtomicU64 {
    atomic(vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_pending_sel)))
}

/// Word `word` of `evtchn_pending`.
pub fn evtchn_pending(word: usize) -> &'static AtomicU64 {
    assert!(word < EVTCHN_WORDS);
    atomic(offset_of!(SharedInfo, evtchn_pending) + word * size_of::<u64>())
}

/// Word `word` of `evtchn_mask`.
pub fn evtchn_mask(word: usize) -> &'static AtomicU64 {
    assert!(word < EVTCHN_WORDS);
    atomic(offset_of!(SharedInfo, evtchn_mask) + word * size_of::<u64>())
}

/// The wall-clock fields: `(wc_version, wc_sec, wc_sec_hi, wc_nsec)`, each
/// read once.
pub fn wallclock_fields() -> (u32, u32, u32, u32) {
    (
        read(offset_of!(SharedInfo, wc_version)),
        read(offset_of!(SharedInfo, wc_sec)),
        read(offset_of!(SharedInfo, wc_sec_hi)),
        read(offset_of!(SharedInfo, wc_nsec)),
    )
}

/// `wc_version` alone.
pub fn wc_version() -> u32 {
    read(offset_of!(SharedInfo, wc_version))
}
