//! Interrupt and exception dispatch, and the fatal report for a fault in hypervisor
//! context.

use super::cpu;
use super::idt::{PIC_BASE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::emergency;
use xlhv_core::exit::QemuExit;

/// The stack image `isr_common` builds: general registers, then what the stub pushed,
/// then what the CPU pushed.
#[derive(Debug)]
#[repr(C)]
pub struct TrapFrame {
    /// r15
    pub r15: u64,
    /// r14
    pub r14: u64,
    /// r13
    pub r13: u64,
    /// r12
    pub r12: u64,
    /// r11
    pub r11: u64,
    /// r10
    pub r10: u64,
    /// r9
    pub r9: u64,
    /// r8
    pub r8: u64,
    /// rbp
    pub rbp: u64,
    /// rdi
    pub rdi: u64,
    /// rsi
    pub rsi: u64,
    /// rdx
    pub rdx: u64,
    /// rcx
    pub rcx: u64,
    /// rbx
    pub rbx: u64,
    /// rax
    pub rax: u64,
    /// Vector number (pushed by the stub).
    pub vector: u64,
    /// Error code (the CPU's, or 0 pushed by the stub).
    pub error_code: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted CS.
    pub cs: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

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

/// Entry from `isr_common` for every vector.
#[unsafe(no_mangle)]
extern "C" fn hv_trap(frame: &mut TrapFrame) {
    match frame.vector {
        v if v < 32 => exception(frame),
        v if v == u64::from(TIMER_VECTOR) => {
            crate::time::on_timer_interrupt();
            super::apic::eoi();
        }
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        v if (u64::from(PIC_BASE_VECTOR)..u64::from(PIC_BASE_VECTOR) + 16).contains(&v) => {
            // A spurious IRQ from the masked legacy PIC (IRQ 7 or 15): nothing to do.
        }
        v => {
            log::warn!("unexpected interrupt on vector {v:#x}; ignored");
            super::apic::eoi();
        }
    }
}

fn exception(frame: &mut TrapFrame) {
    // Guests do not exist yet: every exception is the hypervisor's own, and fatal.
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
