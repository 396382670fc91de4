//! The local APIC (xAPIC, memory-mapped) and the legacy PICs, which are remapped and
//! masked so that only the local APIC interrupts the hypervisor.

use super::cpu::{self, outb};
use super::idt::{PIC_BASE_VECTOR, SPURIOUS_VECTOR, TIMER_VECTOR};
use core::sync::atomic::{AtomicU64, Ordering};

const IA32_APIC_BASE: u32 = 0x1B;
const APIC_BASE_ENABLE: u64 = 1 << 11;

const REG_ID: u64 = 0x20;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_ICR_LOW: u64 = 0x300;
const REG_ICR_HIGH: u64 = 0x310;
const REG_LVT_TIMER: u64 = 0x320;
const REG_TIMER_INITIAL: u64 = 0x380;
const REG_TIMER_CURRENT: u64 = 0x390;
const REG_TIMER_DIVIDE: u64 = 0x3E0;

const SVR_ENABLE: u32 = 1 << 8;
const LVT_MASKED: u32 = 1 << 16;
const LVT_PERIODIC: u32 = 1 << 17;
/// Divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// Virtual address of the mapped APIC registers (0 until `init`).
static MMIO: AtomicU64 = AtomicU64::new(0);

/// Physical address of this CPU's local APIC registers (from IA32_APIC_BASE).
pub fn phys_base() -> u64 {
    cpu::rdmsr(IA32_APIC_BASE) & 0x000F_FFFF_FFFF_F000
}

fn read(reg: u64) -> u32 {
    let base = MMIO.load(Ordering::Relaxed);
    if base == 0 {
        return 0;
    }
    // SAFETY: `base` maps the 4 KiB APIC register page uncached (set in `init`), and
    // `reg` is one of the architectural register offsets above.
    unsafe { core::ptr::read_volatile((base + reg) as *const u32) }
}

fn write(reg: u64, value: u32) {
    let base = MMIO.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    // SAFETY: as in `read`.
    unsafe { core::ptr::write_volatile((base + reg) as *mut u32, value) }
}

/// Enables the local APIC whose registers are mapped at `mmio` (virtual).
pub fn init(mmio: u64) {
    // SAFETY: setting the global-enable bit of IA32_APIC_BASE keeps its base address.
    unsafe {
        cpu::wrmsr(
            IA32_APIC_BASE,
            cpu::rdmsr(IA32_APIC_BASE) | APIC_BASE_ENABLE,
        )
    };
    MMIO.store(mmio, Ordering::Relaxed);
    write(REG_SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    write(REG_LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
    write(REG_TIMER_DIVIDE, DIVIDE_BY_16);
}

/// Enables an application processor's local APIC (the registers are at the same
/// physical address on every CPU, so `init`'s mapping serves it), timer masked.
pub fn init_ap() {
    let mmio = MMIO.load(Ordering::Relaxed);
    init(mmio);
}

/// ICR delivery modes.
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SEND_PENDING: u32 = 1 << 12;

/// Sends an inter-processor interrupt (`low` = ICR bits 0..31) to APIC `dest` and
/// waits until the local APIC has sent it. Returns false if it stays pending.
fn send_ipi(dest: u32, low: u32) -> bool {
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

/// This CPU's APIC id.
pub fn id() -> u32 {
    read(REG_ID) >> 24
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
