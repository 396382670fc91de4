//! The panic handler: report, then stop QEMU with a failing code (or halt).

use crate::arch::x86_64::cpu;
use crate::emergency;
use xlhv_core::exit::QemuExit;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    x86_64::instructions::interrupts::disable();
    let (rsp, rbp): (u64, u64);
    // SAFETY: reads two registers into locals.
    unsafe {
        core::arch::asm!("mov {}, rsp", "mov {}, rbp", out(reg) rsp, out(reg) rbp, options(nomem, nostack));
    }
    let cr = cpu::control_regs();
    emergency!("----[ xen-like-hv PANIC ]----");
    match info.location() {
        Some(l) => emergency!(
            "panic at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => emergency!("panic: {}", info.message()),
    }
    emergency!(
        "rsp: {rsp:016x}  rbp: {rbp:016x}  rflags: {:016x}",
        x86_64::registers::rflags::read_raw()
    );
    emergency!(
        "cr0: {:016x}  cr2: {:016x}  cr3: {:016x}  cr4: {:016x}",
        cr.cr0,
        cr.cr2,
        cr.cr3,
        cr.cr4
    );
    emergency!("hypervisor panic: stopping the machine");
    cpu::qemu_exit(QemuExit::Panic)
}
