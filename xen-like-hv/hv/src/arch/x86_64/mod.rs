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
pub mod smp;
pub mod tlb;
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
    static hv_ap_stacks: u8;
}

/// Bytes of each application processor's entry stack (boot.s `AP_STACK_SIZE`).
const AP_STACK_SIZE: u64 = 64 * 1024;
/// One application processor's block in boot.s: a guard page, then its stack.
const AP_STACK_BLOCK: u64 = 4096 + AP_STACK_SIZE;
const _: () = assert!(
    percpu::MAX_CPUS == 8,
    "boot.s reserves AP_STACKS = 7 stacks"
);

/// Top of CPU `cpu`'s entry stack, where every entry from a guest builds its frame:
/// boot.s's `hv_cpu0_stack` for the boot CPU, one of `hv_ap_stacks` for the others.
pub fn entry_stack_top(cpu: usize) -> u64 {
    // SAFETY: only the symbols' addresses are taken.
    let (cpu0, aps) = unsafe {
        (
            &hv_cpu0_stack_top as *const u8 as u64,
            &hv_ap_stacks as *const u8 as u64,
        )
    };
    match cpu {
        0 => cpu0,
        n => aps + n as u64 * AP_STACK_BLOCK,
    }
}

/// The guard pages below the application processors' stacks, which the final page
/// tables leave unmapped.
pub fn ap_stack_guards() -> impl Iterator<Item = u64> {
    // SAFETY: only the symbol's address is taken.
    let aps = unsafe { &hv_ap_stacks as *const u8 as u64 };
    (0..percpu::MAX_CPUS as u64 - 1).map(move |i| aps + i * AP_STACK_BLOCK)
}
