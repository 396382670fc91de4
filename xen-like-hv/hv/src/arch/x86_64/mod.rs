//! x86_64: boot entry, descriptor tables, traps, paging, timers, serial.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod guest;
pub mod idt;
pub mod ioapic;
pub mod layout;
pub mod ldt;
pub mod paging;
pub mod percpu;
pub mod pit;
pub mod segs;
pub mod serial;
pub mod trap;

core::arch::global_asm!(include_str!("boot.s"), options(att_syntax));
core::arch::global_asm!(
    include_str!("entry.s"),
    syscall_vector = const xlhv_core::regs::SYSCALL_VECTOR,
    sysret_ok = const xlhv_core::regs::SYSRET_OK,
    flat_ring3_ss = const hypercall_abi::xen::FLAT_RING3_SS64,
    flat_ring3_cs64 = const hypercall_abi::xen::FLAT_RING3_CS64,
    floor_hypercall = const hypercall_abi::xlhv::FLOOR_HYPERCALL,
    options(att_syntax)
);
core::arch::global_asm!(
    include_str!(concat!(env!("OUT_DIR"), "/isr.s")),
    options(att_syntax)
);

unsafe extern "C" {
    static hv_cpu0_stack_top: u8;
}

/// Top of the boot CPU's entry stack, where every entry from a guest builds its frame.
pub fn entry_stack_top() -> u64 {
    // SAFETY: only the symbol's address is taken.
    unsafe { &hv_cpu0_stack_top as *const u8 as u64 }
}
