//! The IDT: 256 gates, all into the stubs that build.rs generates.

use super::gdt::{HV_CS, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use spin::Mutex;

/// Vector of the local APIC timer.
pub const TIMER_VECTOR: u8 = 0xF0;
/// The event-check IPI (Xen's `EVENT_CHECK_VECTOR`): another CPU made work for this
/// one (a vCPU to run or preempt for, an event to deliver to the running vCPU).
pub const EVENT_CHECK_VECTOR: u8 = 0xF1;
/// The stop IPI: the machine is stopping; the CPU parks for good.
pub const STOP_VECTOR: u8 = 0xF2;
/// The TLB shoot-down IPI (Xen's `INVALIDATE_TLB_VECTOR`): flush, then go on
/// (`tlb::service`).
pub const INVALIDATE_TLB_VECTOR: u8 = 0xF3;
/// Vector the local APIC uses for spurious interrupts.
pub const SPURIOUS_VECTOR: u8 = 0xFF;
/// First vector of the (remapped, masked) legacy PICs.
pub const PIC_BASE_VECTOR: u8 = 0x20;

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(size_of::<Gate>() == 16);

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// An interrupt gate (IF cleared on entry); `user` makes it DPL 3, so ring 3 may
    /// raise it with `int n`.
    fn interrupt(handler: u64, ist: u8, user: bool) -> Gate {
        let b = handler.to_le_bytes();
        Gate {
            offset_low: u16::from_le_bytes([b[0], b[1]]),
            selector: HV_CS,
            ist,
            type_attr: if user { 0xEE } else { 0x8E },
            offset_mid: u16::from_le_bytes([b[2], b[3]]),
            offset_high: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Mutex<Idt> = Mutex::new(Idt([Gate::EMPTY; 256]));

unsafe extern "C" {
    /// Addresses of the 256 entry stubs (generated `isr.s`).
    static isr_table: [u64; 256];
}

/// Fills and loads the IDT. Exceptions that must not run on a possibly broken stack
/// (#DF, NMI, #MC) use their own IST stacks.
pub fn init() {
    let mut idt = IDT.lock();
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        // SAFETY: `isr_table` is an immutable table emitted by build.rs.
        let handler = unsafe { isr_table[vector] };
        let ist = match vector {
            8 => IST_DOUBLE_FAULT,
            2 => IST_NMI,
            18 => IST_MACHINE_CHECK,
            _ => 0,
        };
        // int3, into and int $0x80 reach the hypervisor directly from guests (as in
        // Xen); every other `int n` from ring 3 faults with #GP and is checked against
        // the guest's own trap table.
        let user = matches!(vector, 3 | 4 | 0x80);
        *gate = Gate::interrupt(handler, ist, user);
    }
    drop(idt);
    load();
}

/// Loads the IDT (every CPU shares the one `init` filled).
pub fn load() {
    let base = IDT.lock().0.as_ptr() as u64;
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: super::cpu::table_limit(size_of::<Idt>()),
        base: x86_64::VirtAddr::new(base),
    };
    // SAFETY: the IDT is static, every gate points at a valid entry stub in HV_CS.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}
