//! Per-CPU data, reached through GS while the hypervisor runs (see entry.s for the
//! SWAPGS discipline).

use super::cpu;
use core::sync::atomic::{AtomicU64, Ordering};

const IA32_GS_BASE: u32 = 0xC000_0101;
const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// The part of a CPU's data that entry.s reads. Field offsets are fixed: entry.s uses
/// them (`PERCPU_STACK_TOP`, `PERCPU_SCRATCH`, `PERCPU_FLOOR_OK`).
#[derive(Debug)]
#[repr(C)]
pub struct PerCpu {
    /// Points at itself.
    pub self_ptr: AtomicU64,
    /// Top of this CPU's hypervisor stack: where SYSCALL entries build their frame
    /// (also the TSS's RSP0).
    pub stack_top: AtomicU64,
    /// The guest's RSP during a SYSCALL entry.
    pub scratch: AtomicU64,
    /// Index of this CPU (0 = boot CPU).
    pub index: AtomicU64,
    /// Non-zero while the vCPU this CPU runs is in guest kernel mode: the floor call
    /// (entry.s) may return at once.
    pub floor_ok: AtomicU64,
}

const _: () = assert!(core::mem::offset_of!(PerCpu, stack_top) == 8);
const _: () = assert!(core::mem::offset_of!(PerCpu, scratch) == 16);
const _: () = assert!(core::mem::offset_of!(PerCpu, floor_ok) == 32);

static BSP: PerCpu = PerCpu {
    self_ptr: AtomicU64::new(0),
    stack_top: AtomicU64::new(0),
    scratch: AtomicU64::new(0),
    index: AtomicU64::new(0),
    floor_ok: AtomicU64::new(0),
};

/// Records whether the vCPU about to run on this CPU is in guest kernel mode (for
/// the floor call's fast path in entry.s).
pub fn set_floor_ok(kernel_mode: bool) {
    BSP.floor_ok
        .store(u64::from(kernel_mode), Ordering::Relaxed);
}

/// Sets up the boot CPU's data: GS.base points at it while in the hypervisor.
pub fn init_bsp(stack_top: u64) {
    let ptr = &BSP as *const PerCpu as u64;
    BSP.self_ptr.store(ptr, Ordering::Relaxed);
    BSP.stack_top.store(stack_top, Ordering::Relaxed);
    // SAFETY: GS.base is not used by anything else in the hypervisor; the guest's GS
    // base starts at 0 (MSR_KERNEL_GS_BASE) until a guest sets it.
    unsafe {
        cpu::wrmsr(IA32_GS_BASE, ptr);
        cpu::wrmsr(IA32_KERNEL_GS_BASE, 0);
    }
}
