//! The GDT and TSS.
//!
//! The hypervisor's GDT has Xen's shape: 14 pages that will hold a guest's own
//! descriptors (entries 0..7167), then Xen's reserved page (entries 7168..7679) with the
//! hypervisor's ring-0 segments, the flat ring-3 segments every 64-bit PV guest runs on,
//! and the TSS. The selector values are therefore Xen's: 0xE008 hypervisor code,
//! 0xE010 hypervisor data, 0xE023/0xE02B/0xE033 flat guest segments, 0xE040 TSS.

use super::percpu::MAX_CPUS;
use core::arch::asm;
use spin::Mutex;
use x86_64::structures::tss::TaskStateSegment;

/// Entries in the whole GDT: 14 guest pages and the reserved page.
const ENTRIES: usize = 15 * 512;

/// Hypervisor code segment (64-bit, DPL 0).
pub const HV_CS: u16 = 0xE008;
/// Hypervisor data/stack segment (DPL 0).
pub const HV_DS: u16 = 0xE010;
/// Flat 32-bit code, DPL 3.
pub const RING3_CS32: u16 = hypercall_abi::xen::FLAT_RING3_CS32;
/// Flat data, DPL 3 (FLAT_KERNEL_SS for 64-bit PV).
pub const RING3_DS: u16 = hypercall_abi::xen::FLAT_RING3_DS32;
/// Flat 64-bit code, DPL 3 (FLAT_KERNEL_CS for 64-bit PV).
pub const RING3_CS64: u16 = hypercall_abi::xen::FLAT_RING3_CS64;
/// The TSS (two entries).
pub const TSS_SEL: u16 = 0xE040;
/// The LDT descriptor (two entries), Xen's `LDT_SELECTOR`: rewritten for each vCPU
/// with an LDT (`load_ldt`).
pub const LDT_SEL: u16 = 0xE050;

/// IST slots (1-based, as the IDT encodes them).
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot for NMI.
pub const IST_NMI: u8 = 2;
/// IST slot for machine checks.
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Gdt([u64; ENTRIES]);

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; 3]);

// Every CPU's tables, in .bss (mapped before and after the switch to the final page
// tables): the boot CPU's at index 0, the others' as `smp` brings them up.
static GDTS: [Mutex<Gdt>; MAX_CPUS] = [const { Mutex::new(Gdt([0; ENTRIES])) }; MAX_CPUS];
static TSSES: [Mutex<TaskStateSegment>; MAX_CPUS] =
    [const { Mutex::new(TaskStateSegment::new()) }; MAX_CPUS];
static ISTS: [Mutex<IstStacks>; MAX_CPUS] =
    [const { Mutex::new(IstStacks([[0; IST_STACK_SIZE]; 3])) }; MAX_CPUS];

/// CPU `cpu`'s entry of one of the per-CPU tables above.
fn of<T>(tables: &'static [Mutex<T>; MAX_CPUS], cpu: usize) -> &'static Mutex<T> {
    match tables.get(cpu) {
        Some(t) => t,
        None => panic!("gdt: CPU index {cpu} beyond {MAX_CPUS}"),
    }
}

const fn index(sel: u16) -> usize {
    (sel >> 3) as usize
}

/// A code or data descriptor: flat, 4 GiB limit, granularity bit set.
const fn seg(access: u64, flags: u64) -> u64 {
    0xFFFF | (access << 40) | (0xF << 48) | (flags << 52)
}

/// Loads CPU `cpu`'s GDT and TSS, on that CPU, and reloads every segment register.
/// `rsp0` is the stack the CPU switches to on entry from ring 3.
pub fn init(cpu: usize, rsp0: u64) {
    let ist_tops = {
        let ist = of(&ISTS, cpu).lock();
        let base = ist.0.as_ptr() as u64;
        [1u64, 2, 3].map(|n| base + n * IST_STACK_SIZE as u64)
    };
    let tss_addr = {
        let mut tss = of(&TSSES, cpu).lock();
        tss.privilege_stack_table[0] = x86_64::VirtAddr::new(rsp0);
        for (slot, top) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK]
            .into_iter()
            .zip(ist_tops)
        {
            tss.interrupt_stack_table[usize::from(slot - 1)] = x86_64::VirtAddr::new(top);
        }
        // I/O bitmap offset past the limit: no I/O bitmap.
        tss.iomap_base = super::cpu::table_limit(size_of::<TaskStateSegment>()) + 1;
        &*tss as *const TaskStateSegment as u64
    };

    let mut gdt = of(&GDTS, cpu).lock();
    let e = &mut gdt.0;
    e[index(HV_CS)] = seg(0x9B, 0xA); // present, DPL0, code, L=1
    e[index(HV_DS)] = seg(0x93, 0xC); // present, DPL0, data, D/B=1
    e[index(RING3_CS32)] = seg(0xFB, 0xC); // present, DPL3, code, 32-bit
    e[index(RING3_DS)] = seg(0xF3, 0xC); // present, DPL3, data
    e[index(RING3_CS64)] = seg(0xFB, 0xA); // present, DPL3, code, L=1
    let limit = (size_of::<TaskStateSegment>() - 1) as u64;
    e[index(TSS_SEL)] = (limit & 0xFFFF)
        | ((tss_addr & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit available TSS
        | (((limit >> 16) & 0xF) << 48)
        | (((tss_addr >> 24) & 0xFF) << 56);
    e[index(TSS_SEL) + 1] = tss_addr >> 32;

    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: super::cpu::table_limit(ENTRIES * 8),
        base: x86_64::VirtAddr::new(e.as_ptr() as u64),
    };
    // SAFETY: the GDT is static and holds valid descriptors for every selector loaded
    // below; the far return reloads CS with the 64-bit hypervisor code segment.
    unsafe {
        x86_64::instructions::tables::lgdt(&ptr);
        asm!(
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {ds:x}",
            "mov ds, {zero:x}",
            "mov es, {zero:x}",
            "mov fs, {zero:x}",
            "mov gs, {zero:x}",
            "ltr {tss:x}",
            // No LDT until a vCPU has one: a selector with TI set faults (#GP) instead
            // of reading descriptors from whatever the reset LDTR (base 0) points at.
            "lldt {zero:x}",
            cs = in(reg) u64::from(HV_CS),
            ds = in(reg) HV_DS,
            zero = in(reg) 0u16,
            tss = in(reg) TSS_SEL,
            tmp = out(reg) _,
        );
    }
}

/// What each guest page of each CPU's GDT maps: a guest frame's address, or
/// [`IMAGE_FRAME`] (the zeroed image page); [`UNKNOWN`] until first mapped.
static GDT_MAPPED: [Mutex<[u64; hypercall_abi::xen::FIRST_RESERVED_GDT_PAGE]>; MAX_CPUS] =
    [const { Mutex::new([UNKNOWN; hypercall_abi::xen::FIRST_RESERVED_GDT_PAGE]) }; MAX_CPUS];
/// A GDT page mapping its own image frame (no guest descriptors).
const IMAGE_FRAME: u64 = u64::MAX - 1;
/// Not mapped by [`load_guest_frames`] yet.
const UNKNOWN: u64 = u64::MAX;

/// Maps the guest's descriptor frames as the first pages of this CPU's GDT (the
/// rest of the guest part goes back to zeroed image memory, i.e. null descriptors).
/// Only pages whose frame changes are remapped (and flushed): switching between
/// vCPUs with the same or no descriptor frames costs no page-table write or
/// `invlpg`, each of which empties QEMU's whole software TLB under TCG.
pub fn load_guest_frames(frames: &[xlhv_core::mm::Mfn]) {
    let cpu = super::percpu::index();
    let base = of(&GDTS, cpu).lock().0.as_ptr() as u64;
    let mut mapped = of(&GDT_MAPPED, cpu).lock();
    for (page, cur) in mapped.iter_mut().enumerate() {
        let pa = frames.get(page).map(|m| m.0 << 12);
        let want = pa.unwrap_or(IMAGE_FRAME);
        if *cur == want {
            continue;
        }
        let va = base + (page as u64) * 4096;
        if super::paging::remap_image_page(va, pa).is_none() {
            panic!("gdt: cannot remap GDT page {page}");
        }
        *cur = want;
    }
}

/// Loads the CPU's LDTR: null when `ents` is 0 (every LDT selector faults), else an
/// LDT of `ents` descriptors at `base` (the CPU's LDT area).
pub fn load_ldt(base: u64, ents: u32) {
    if ents == 0 {
        // SAFETY: a null LDT selector is always valid to load.
        unsafe { asm!("lldt {0:x}", in(reg) 0u16, options(nostack, preserves_flags)) };
        return;
    }
    let limit = u64::from(ents) * 8 - 1;
    {
        let mut gdt = of(&GDTS, super::percpu::index()).lock();
        let e = &mut gdt.0;
        e[index(LDT_SEL)] = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x82 << 40) // present, DPL 0, LDT
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        e[index(LDT_SEL) + 1] = base >> 32;
    }
    // SAFETY: LDT_SEL names the LDT descriptor just written in the hypervisor's
    // reserved GDT page; its base is this CPU's LDT area, which maps only descriptor
    // pages the guest cannot write (type SegDesc) and faults elsewhere.
    unsafe { asm!("lldt {0:x}", in(reg) LDT_SEL, options(nostack, preserves_flags)) };
}
