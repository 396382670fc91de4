//! The local APIC, in x2APIC mode (registers as MSRs) where the CPU has it, as Xen
//! uses it, else in xAPIC mode (memory-mapped); and the legacy PICs, which are
//! remapped and masked so that only the local APIC interrupts the hypervisor.

use super::cpu::{self, outb};
use super::idt::{PIC_BASE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;
/// IA32_APIC_BASE.EXTD: x2APIC mode.
const APIC_BASE_EXTD: u64 = 1 << 10;
/// The first x2APIC register MSR: register offset `reg` is MSR `0x800 + reg / 16`.
const X2APIC_MSR_BASE: u32 = 0x800;
/// CPUID.1:ECX.x2APIC.
const CPUID_X2APIC: u32 = 1 << 21;

const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_ICR_LOW: u32 = 0x300;
const REG_ICR_HIGH: u32 = 0x310;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INITIAL: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// Virtual address of the mapped APIC registers (0 until `init`).
static MMIO: AtomicU64 = AtomicU64::new(0);
/// The APICs run in x2APIC mode (chosen once, on the boot CPU, by `init`).
static X2APIC: AtomicBool = AtomicBool::new(false);

/// Whether the local APICs run in x2APIC mode.
pub fn x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

/// Physical address of this CPU's local APIC registers (from IA32_APIC_BASE).
pub fn phys_base() -> u64 {
    cpu::rdmsr(IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000
}

fn read(reg: u32) -> u32 {
    if x2apic() {
        // The registers read here are 32 bits wide (the high half of the MSR is 0).
        let v = cpu::rdmsr(X2APIC_MSR_BASE + (reg >> 4));
        return u32::try_from(v & 0xFFFF_FFFF).unwrap_or(0);
    }
    let base = MMIO.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    // SAFETY: `base` maps the 4 KiB APIC register page uncached (set in `init`), and
    // `reg` is one of the architectural register offsets above.
    unsafe { core::ptr::read_volatile((base + u64::from(reg)) as *const u32) }
}

fn write(reg: u32, value: u32) {
    if x2apic() {
        // SAFETY: an architectural x2APIC register MSR, in x2APIC mode (`enable`).
        unsafe { cpu::wrmsr(X2APIC_MSR_BASE + (reg >> 4), u64::from(value)) };
        return;
    }
    let base = MMIO.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((base + u64::from(reg)) as *mut u32, value) }
}

/// Enables the boot CPU's local APIC: in x2APIC mode if the CPU has it and `x2apic`
/// allows it (Xen's `x2apic=` option), else in xAPIC mode through the registers
/// mapped at `mmio` (virtual); timer masked.
pub fn init(mmio: u64, x2apic: bool) {
    let has = core::arch::x86_64::__cpuid(1).ecx & CPUID_X2APIC != 0;
    X2APIC.store(has && x2apic, Ordering::Relaxed);
    MMIO.store(mmio, Ordering::Relaxed);
    enable();
}

/// Enables an application processor's local APIC in the mode `init` chose (in xAPIC
/// mode the registers are at the same physical address on every CPU, so `init`'s
/// mapping serves it), timer masked.
pub fn init_ap() {
    enable();
}

/// This CPU's APIC on, in the chosen mode, spurious vector set and timer masked.
fn enable() {
    let mode = if x2apic() {
        // xAPIC enabled, then x2APIC: the architectural way up (both bits at once is
        // allowed from the enabled state; EXTD alone is not).
        APIC_BASE_ENABLE | APIC_BASE_EXTD
    } else {
        APIC_BASE_ENABLE
    };
    // SAFETY: setting the enable (and x2APIC) bits of IA32_APIC_BASE keeps its base
    // address; x2APIC is set only if CPUID offers it.
    unsafe {
        let base = cpu::rdmsr(IA32_APIC_BASE);
        cpu::wrmsr(IA32_APIC_BASE, base | APIC_BASE_ENABLE);
        cpu::wrmsr(IA32_APIC_BASE, base | mode);
    }
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
}

/// ICR delivery modes.
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SEND_PENDING: u32 = 1 << 12;

/// Sends an inter-processor interrupt (`low` = ICR bits 0..31) to APIC `dest` and
/// waits until the local APIC has sent it. Returns false if it stays pending.
fn send_ipi(dest: u32, low: u32) -> bool {
    if x2apic() {
        // One 64-bit write, the destination in the high half; there is no
        // delivery-status bit to wait on.
        let icr = (u64::from(dest) << 32) | u64::from(low);
        // SAFETY: the x2APIC ICR MSR, in x2APIC mode.
        unsafe { cpu::wrmsr(X2APIC_MSR_BASE + (REG_ICR_LOW >> 4), icr) };
        return true;
    }
    write(REG_ICR_HIGH, dest << 24);
    write(REG_ICR_LOW, low);
    for _ in 0..1_000_000 {
        if read(REG_ICR_LOW) & ICR_SEND_PENDING == 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// A fixed interrupt on `vector` to APIC `dest` (an IPI between the hypervisor's CPUs).
pub fn send_fixed(dest: u32, vector: u8) -> bool {
    send_ipi(dest, ICR_LEVEL_ASSERT | u32::from(vector))
}

/// INIT to APIC `dest`: the CPU resets and waits for a STARTUP IPI.
pub fn send_init(dest: u32) -> bool {
    send_ipi(dest, ICR_INIT | ICR_LEVEL_ASSERT)
}

/// STARTUP to APIC `dest`: it starts in real mode at `page` << 12.
pub fn send_startup(dest: u32, page: u8) -> bool {
    send_ipi(dest, ICR_STARTUP | ICR_LEVEL_ASSERT | u32::from(page))
}

/// This CPU's APIC id (all 32 bits of it in x2APIC mode).
pub fn id() -> u32 {
    if x2apic() {
        read(REG_ID)
    } else {
        read(REG_ID) >> 24
    }
}

/// Signals end of interrupt.
pub fn eoi() {
    write(REG_EOI, 0);
}

/// Starts the timer counting down from `count` (divided by 16), masked: for calibration.
pub fn timer_start_masked(count: u32) {
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// The timer's current count.
pub fn timer_current() -> u32 {
    read(REG_TIMER_CURRENT)
}

/// Runs the timer periodically, interrupting every `count` (divided-by-16) ticks.
pub fn timer_periodic(count: u32) {
    write(REG_LVT_TIMER, LVT_PERIODIC | u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// Arms the timer once: one interrupt after `count` (divided-by-16) ticks; 0 stops it.
pub fn timer_oneshot(count: u32) {
    write(REG_LVT_TIMER, u32::from(TIMER_VECTOR));
    write(REG_TIMER_INITIAL, count);
}

/// Remaps the two 8259 PICs above the exception vectors and masks every line.
pub fn disable_legacy_pic() {
    const PIC1_CMD: u16 = 0x20;
    const PIC1_DATA: u16 = 0x21;
    const PIC2_CMD: u16 = 0xA0;
    const PIC2_DATA: u16 = 0xA1;
    outb(PIC1_CMD, 0x11); // ICW1: init, expect ICW4
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, PIC_BASE_VECTOR); // ICW2: vector offsets
    outb(PIC2_DATA, PIC_BASE_VECTOR + 8);
    outb(PIC1_DATA, 0x04); // ICW3: slave on IRQ2
    outb(PIC2_DATA, 0x02);
    outb(PIC1_DATA, 0x01); // ICW4: 8086 mode
    outb(PIC2_DATA, 0x01);
    outb(PIC1_DATA, 0xFF); // mask everything
    outb(PIC2_DATA, 0xFF);
}
