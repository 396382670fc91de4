//! Interrupt and exception dispatch, and the fatal report for a fault in hypervisor
//! context.

use super::cpu;
use super::idt::{
    EVENT_CHECK_VECTOR, INVALIDATE_TLB_VECTOR, PIC_BASE_VECTOR, SPURIOUS_VECTOR, STOP_VECTOR,
    TIMER_VECTOR,
};
use crate::emergency;
use xlhv_core::exit::QemuExit;

/// The stack image every entry builds (see entry.s): the portable saved-register
/// layout, so handlers in `xlhv-core` work on it directly.
pub use xlhv_core::regs::Regs as TrapFrame;

const _: () = assert!(size_of::<TrapFrame>() == 22 * 8);

/// Mnemonic and name of an exception vector.
pub fn exception_name(vector: u64) -> (&'static str, &'static str) {
    match vector {
        0 => ("#DE", "divide error"),
        1 => ("#DB", "debug"),
        2 => ("NMI", "non-maskable interrupt"),
        3 => ("#BP", "breakpoint"),
        4 => ("#OF", "overflow"),
        5 => ("#BR", "bound range"),
        6 => ("#UD", "invalid opcode"),
        7 => ("#NM", "device not available"),
        8 => ("#DF", "double fault"),
        10 => ("#TS", "invalid TSS"),
        11 => ("#NP", "segment not present"),
        12 => ("#SS", "stack fault"),
        13 => ("#GP", "general protection"),
        14 => ("#PF", "page fault"),
        16 => ("#MF", "x87 floating point"),
        17 => ("#AC", "alignment check"),
        18 => ("#MC", "machine check"),
        19 => ("#XM", "SIMD floating point"),
        20 => ("#VE", "virtualization"),
        21 => ("#CP", "control protection"),
        _ => ("#??", "reserved exception"),
    }
}

/// Entry from entry.s for every vector and for SYSCALL.
#[unsafe(no_mangle)]
extern "C" fn hv_trap(frame: &mut TrapFrame) {
    if frame.from_guest() {
        crate::domains::guest_entry(frame);
        return;
    }
    if frame.vector >= 32 {
        let n = &super::percpu::this().interrupts;
        n.store(
            n.load(core::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1),
            core::sync::atomic::Ordering::Relaxed,
        );
    }
    match frame.vector {
        v if v < 32 => exception(frame),
        v if v == u64::from(TIMER_VECTOR) => {
            crate::time::on_timer_interrupt();
            super::apic::eoi();
        }
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        // Work for this CPU while it idles: the idle loop looks again after the hlt.
        v if v == u64::from(EVENT_CHECK_VECTOR) => super::apic::eoi(),
        v if v == u64::from(STOP_VECTOR) => super::smp::stopped(),
        v if v == u64::from(INVALIDATE_TLB_VECTOR) => {
            super::tlb::service();
            super::apic::eoi();
        }
        // A device interrupt while the CPU idles: handled, delivered after the hlt.
        v if crate::irq::on_vector(v) => {}
        v if (u64::from(PIC_BASE_VECTOR)..u64::from(PIC_BASE_VECTOR) + 16).contains(&v) => {
            // A spurious IRQ from the masked legacy PIC (IRQ 7 or 15): nothing to do.
        }
        v => {
            log::warn!("unexpected interrupt on vector {v:#x}; ignored");
            super::apic::eoi();
        }
    }
}

/// Handles interrupts that arrive while a guest runs; returns false for exceptions.
pub fn guest_interrupt(vector: u64) -> bool {
    match vector {
        v if v == u64::from(TIMER_VECTOR) => {
            crate::time::on_timer_interrupt();
            super::apic::eoi();
            true
        }
        v if v == u64::from(SPURIOUS_VECTOR) => true,
        v if v == u64::from(INVALIDATE_TLB_VECTOR) => {
            super::tlb::service();
            super::apic::eoi();
            true
        }
        v if (u64::from(PIC_BASE_VECTOR)..u64::from(PIC_BASE_VECTOR) + 16).contains(&v) => true,
        // Software interrupts from a guest arrive as #GP (DPL-0 gates), except int3,
        // into and int $0x80 (DPL-3 gates); everything else here is a device.
        v if v >= 32 && v != 0x80 && v != xlhv_core::regs::SYSCALL_VECTOR => {
            log::warn!("unexpected interrupt on vector {v:#x}; ignored");
            super::apic::eoi();
            true
        }
        _ => false,
    }
}

/// An exception in hypervisor context: a guest-copy fault is fixed up, a `#DB` (a
/// guest's breakpoint) noted, a fault on the way back into a guest goes to that guest
/// (`domains::exit_fault`), anything else is fatal.
fn exception(frame: &mut TrapFrame) {
    if frame.vector == 14 && super::guest::fixup_copy_fault(frame) {
        return;
    }
    if frame.vector == 13 && cpu::fixup_rdmsr_fault(frame) {
        return;
    }
    if frame.vector == 14
        && let Some(offset) = super::ldt::area_offset(cpu::control_regs().cr2)
        && crate::domains::ldt_fault_in_hypervisor(offset, super::guest::is_exit_fault(frame))
    {
        return;
    }
    // A guest's data selector that does not load (switch-in, SEGBASE_GS_USER_SEL).
    if matches!(frame.vector, 11 | 13 | 14) && super::segs::fixup(frame) {
        return;
    }
    if frame.vector == 1 {
        super::guest::debug_in_hypervisor(frame);
        return;
    }
    if matches!(frame.vector, 11..=14) && super::guest::is_exit_fault(frame) {
        crate::domains::exit_fault(frame);
    }
    fatal_fault(frame)
}

/// Prints the fault report and stops the machine with a failing exit code.
fn fatal_fault(f: &TrapFrame) -> ! {
    let (mnemonic, name) = exception_name(f.vector);
    let cr = cpu::control_regs();
    emergency!(
        "----[ xen-like-hv fault: {mnemonic} {name}, vector {}, error code {:#06x} ]----",
        f.vector,
        f.error_code
    );
    emergency!(
        "RIP: {:04x}:{:016x}  RFLAGS: {:016x}  CR2: {:016x}",
        f.cs,
        f.rip,
        f.rflags,
        cr.cr2
    );
    emergency!(
        "rax: {:016x}  rbx: {:016x}  rcx: {:016x}",
        f.rax,
        f.rbx,
        f.rcx
    );
    emergency!(
        "rdx: {:016x}  rsi: {:016x}  rdi: {:016x}",
        f.rdx,
        f.rsi,
        f.rdi
    );
    emergency!(
        "rbp: {:016x}  rsp: {:016x}  r8:  {:016x}",
        f.rbp,
        f.rsp,
        f.r8
    );
    emergency!(
        "r9:  {:016x}  r10: {:016x}  r11: {:016x}",
        f.r9,
        f.r10,
        f.r11
    );
    emergency!(
        "r12: {:016x}  r13: {:016x}  r14: {:016x}",
        f.r12,
        f.r13,
        f.r14
    );
    emergency!("r15: {:016x}  ss:  {:04x}  cs: {:04x}", f.r15, f.ss, f.cs);
    emergency!(
        "cr0: {:016x}  cr3: {:016x}  cr4: {:016x}",
        cr.cr0,
        cr.cr3,
        cr.cr4
    );
    emergency!("fault in hypervisor context: stopping the machine");
    cpu::qemu_exit(QemuExit::Fault)
}
