//! `ldt`: the LDT as Xen 4.17 gives it to a 64-bit PV guest, and the hole it must
//! not have.
//!
//! 1. With no `MMUEXT_SET_LDT`, LDTR is null: a call gate to the hypervisor's code
//!    segment written at linear 0x1000 and named by an LDT selector (index 0x200) is
//!    never reached; the far call faults #GP with the selector as its error code.
//! 2. A real LDT (one page at 0x1000, mapped read-only): `lsl`/`lar` read its data
//!    descriptor, whose DPL 0 the audit raised to 3 (also in the guest's own view of
//!    the page), and DS loads it; an index past the limit is invalid.
//! 3. While the page is in use as an LDT it cannot be mapped writable; after the LDT
//!    is dropped it can.
//! 4. An LDT page holding a call gate into the hypervisor is never used: the CPU's
//!    first read of it is a #PF at its linear address (Xen audits LDT pages when the
//!    CPU first reads them, not at `SET_LDT`).
//! 5. An LDT entry whose linear address is not canonical: #GP(selector).
//! 6. `iret` onto a 64-bit code segment of a fresh LDT: the CPU first reads the LDT
//!    while returning to the guest, and the guest runs on that segment.
//! 7. `iret` onto LDT entries that do not load as code: a not-present code segment
//!    and a data segment. The hypervisor's return to the guest faults, and the fault
//!    is the guest's, as Xen reflects it: #NP(selector) and #GP(selector) at the
//!    frame's RIP, where the handler puts the flat code segment back and resumes.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextOp, UVMF_INVLPG};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::{StartInfo, mm, pt};
use pv_test_guests::{SCRATCH_VA, check, expect, ext_op, fail, pass, uvm};

const NAME: &str = "ldt";

/// A DPL-3 64-bit call gate (both halves) whose target is the hypervisor's code
/// selector 0xE008.
const GATE_TO_HV: [u64; 2] = [(1 << 47) | (0xC << 40) | (3 << 45) | (0xE008 << 16), 0];
/// A present 64-bit code segment, DPL 3.
const CODE64_DPL3: u64 = 0x00AF_FA00_0000_FFFF;
/// The same, not present.
const CODE64_ABSENT: u64 = CODE64_DPL3 & !(1 << 47);
/// FLAT_KERNEL_CS of a 64-bit PV guest.
const FLAT_KERNEL_CS: u16 = 0xE033;
/// A present, writable, byte-granular data segment with limit 0x1234 and DPL 0.
const DATA_DPL0: u64 = 0x0000_9200_0000_1234;
/// The same with the DPL the audit gives it.
const DATA_DPL3: u64 = 0x0000_F200_0000_1234;
/// Entry 0 of the LDT, RPL 3.
const SEL0: u16 = 0x0007;
/// Entry 1 of the LDT, RPL 3.
const SEL1: u16 = 0x000F;
/// Entry 2 of the LDT, RPL 3.
const SEL2: u16 = 0x0017;
/// Entry 0x200 (linear 0x1000 from an LDT at 0), RPL 3.
const SEL_0X200: u16 = 0x1007;

global_asm!(
    ".pushsection .text.ldt_probes, \"ax\", @progbits",
    // fn ldt_far_call(ptr: *const [u8; 10]): far call through an m16:64 pointer.
    ".globl ldt_far_call, ldt_far_call_resume",
    "ldt_far_call:",
    "    rex64 lcall *(%rdi)",
    "ldt_far_call_resume:",
    "    ret",
    // fn ldt_lar(sel: u16) -> u64: access rights, or u64::MAX if ZF is clear.
    ".globl ldt_lar, ldt_lar_resume",
    "ldt_lar:",
    "    mov $-1, %rax",
    "    lar %di, %rcx",
    "    cmovz %rcx, %rax",
    "ldt_lar_resume:",
    "    ret",
    // fn ldt_lsl(sel: u16) -> u64: segment limit, or u64::MAX if ZF is clear.
    ".globl ldt_lsl",
    "ldt_lsl:",
    "    mov $-1, %rax",
    "    lsl %di, %rcx",
    "    cmovz %rcx, %rax",
    "    ret",
    // fn ldt_load_ds(sel: u16) -> u64: DS after loading `sel`; DS is null after.
    ".globl ldt_load_ds",
    "ldt_load_ds:",
    "    mov %di, %ds",
    "    xor %eax, %eax",
    "    mov %ds, %ax",
    "    xor %ecx, %ecx",
    "    mov %cx, %ds",
    "    ret",
    // fn ldt_iret_cs(cs: u64) -> u64: the `iret` hypercall onto the next
    // instruction with code selector `cs`; there, read CS and far-return to
    // FLAT_KERNEL_CS; returns the CS read.
    ".globl ldt_iret_cs",
    "ldt_iret_cs:",
    "    push %rbx",
    "    mov %rsp, %rbx",
    "    lea ldt_iret_land(%rip), %rax",
    "    pushq $0xe02b",
    "    pushq %rbx",
    "    pushfq",
    "    pushq %rdi",
    "    pushq %rax",
    "    pushq $0",
    "    jmp {page} + {iret_stub}",
    ".globl ldt_iret_land",
    "ldt_iret_land:",
    "    xor %eax, %eax",
    "    mov %cs, %ax",
    "    lea 2f(%rip), %rcx",
    "    pushq $0xe033",
    "    pushq %rcx",
    "    lretq",
    "2:",
    "    pop %rbx",
    "    ret",
    ".popsection",
    page = sym pv_runtime::hypercall::HYPERCALL_PAGE,
    iret_stub = const pv_runtime::abi::hypercall::Hypercall::Iret as usize * 32,
    options(att_syntax),
);

unsafe extern "C" {
    fn ldt_far_call(ptr: *const [u8; 10]);
    fn ldt_far_call_resume();
    fn ldt_lar(sel: u16) -> u64;
    fn ldt_lar_resume();
    fn ldt_lsl(sel: u16) -> u64;
    fn ldt_load_ds(sel: u16) -> u64;
    fn ldt_iret_cs(cs: u64) -> u64;
    fn ldt_iret_land();
}

/// The last fault the handler skipped: (vector, error code, cr2); u64::MAX = none.
static VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static ERROR: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);

/// #GP, #NP and #PF at one of the probes: recorded, and the probe returns (after an
/// `iret` that did not load its code segment: on the flat one, where it landed).
fn handler(frame: &mut TrapFrame) {
    let far_call = ldt_far_call as *const () as u64;
    let lar = ldt_lar as *const () as u64;
    let land = ldt_iret_land as *const () as u64;
    let resume = if frame.rip == land {
        frame.cs = (frame.cs & !0xFFFF) | u64::from(FLAT_KERNEL_CS & !3);
        land
    } else if frame.rip == far_call {
        ldt_far_call_resume as *const () as u64
    } else if (lar..lar + 16).contains(&frame.rip) {
        frame.rax = u64::MAX;
        ldt_lar_resume as *const () as u64
    } else {
        fail(NAME, format_args!("unexpected trap: {frame}"))
    };
    VECTOR.store(frame.vector, Ordering::SeqCst);
    ERROR.store(frame.error_code, Ordering::SeqCst);
    CR2.store(frame.cr2, Ordering::SeqCst);
    frame.rip = resume;
}

/// The fault recorded since the last call, if any.
fn caught() -> Option<(u64, u64, u64)> {
    let v = VECTOR.swap(u64::MAX, Ordering::SeqCst);
    (v != u64::MAX).then(|| (v, ERROR.load(Ordering::SeqCst), CR2.load(Ordering::SeqCst)))
}

fn far_call(sel: u16) {
    let mut ptr = [0u8; 10];
    ptr[8..].copy_from_slice(&sel.to_le_bytes());
    // SAFETY: a far call through `sel`, which must fault (#GP or #PF); the handler
    // resumes after it. Were it to go through, the test has failed anyway.
    unsafe { ldt_far_call(&ptr) }
}

fn lar(sel: u16) -> u64 {
    // SAFETY: `lar` reads a descriptor and sets ZF; a fault is skipped by the handler.
    unsafe { ldt_lar(sel) }
}

fn lsl(sel: u16) -> u64 {
    // SAFETY: `lsl` reads a descriptor and sets ZF; it never writes memory.
    unsafe { ldt_lsl(sel) }
}

fn set_ldt(base: u64, ents: u32) {
    expect(
        NAME,
        "set_ldt",
        ext_op(MmuextOp::set_ldt(base, ents)),
        Ok(0),
    );
}

/// Maps `mfn` at the scratch page, writable or not.
fn map_scratch(mfn: pv_runtime::abi::types::Mfn, writable: bool) -> Result<u64, Errno> {
    let mut flags = PteFlags::PRESENT | PteFlags::ACCESSED;
    if writable {
        flags |= PteFlags::RW | PteFlags::DIRTY;
    }
    uvm(SCRATCH_VA, pt::leaf(mfn, flags), UVMF_INVLPG)
}

/// Writes `words` at the start of the scratch page (mapped writable).
fn write_scratch(words: &[u64]) {
    let p = SCRATCH_VA as *mut u64;
    for (i, &w) in words.iter().enumerate() {
        // SAFETY: the scratch page is mapped writable to a frame this guest owns and
        // nothing else uses; `i` < 4 stays inside it.
        unsafe { p.add(i).write_volatile(w) };
    }
}

fn read_scratch(i: usize) -> u64 {
    // SAFETY: the scratch page is mapped (read-only at least); `i` < 512.
    unsafe { (SCRATCH_VA as *const u64).add(i).read_volatile() }
}

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::GP, handler);
    traps::set_handler(vector::NP, handler);
    traps::set_handler(vector::PF, handler);
    let Some(frame) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let mfn = frame.mfn;

    // 1. No LDT: the gate at linear 0x1000 is not an LDT entry.
    expect(NAME, "map 0x1000 writable", map_scratch(mfn, true), Ok(0));
    write_scratch(&GATE_TO_HV);
    far_call(SEL_0X200);
    expect(
        NAME,
        "far call through an LDT selector with no LDT",
        caught(),
        Some((13, u64::from(SEL_0X200 & !3), 0)),
    );
    expect(NAME, "lar with no LDT", lar(SEL_0X200), u64::MAX);

    // 2. A real LDT: one data descriptor, the page read-only.
    write_scratch(&[DATA_DPL0, 0]);
    expect(NAME, "map 0x1000 read-only", map_scratch(mfn, false), Ok(0));
    set_ldt(SCRATCH_VA, 2);
    expect(NAME, "lsl of LDT entry 0", lsl(SEL0), 0x1234);
    let ar = lar(SEL0);
    check(
        NAME,
        ar != u64::MAX && (ar >> 13) & 3 == 3 && (ar >> 8) & 0xFF == 0xF2,
        format_args!("lar of LDT entry 0: {ar:#x}, expected a present DPL-3 data segment"),
    );
    expect(
        NAME,
        "the descriptor as the guest sees it",
        read_scratch(0),
        DATA_DPL3,
    );
    // SAFETY: loads DS with a present DPL-3 data segment, then the null selector.
    expect(
        NAME,
        "DS loaded from the LDT",
        unsafe { ldt_load_ds(SEL0) },
        u64::from(SEL0),
    );
    expect(NAME, "lsl past the LDT limit", lsl(SEL2), u64::MAX);
    expect(NAME, "no fault so far", caught(), None);

    // 3. A live LDT page cannot be mapped writable; once dropped it can.
    expect(
        NAME,
        "writable mapping of a live LDT page",
        map_scratch(mfn, true),
        Err(Errno::EBUSY),
    );
    set_ldt(0, 0);
    expect(NAME, "lsl with the LDT gone", lsl(SEL0), u64::MAX);
    expect(
        NAME,
        "writable mapping after SET_LDT(0)",
        map_scratch(mfn, true),
        Ok(0),
    );

    // 4. A gate into the hypervisor in the LDT: the page never becomes an LDT page.
    write_scratch(&GATE_TO_HV);
    expect(NAME, "map 0x1000 read-only", map_scratch(mfn, false), Ok(0));
    set_ldt(SCRATCH_VA, 2);
    expect(NAME, "lar of the hypervisor gate", lar(SEL0), u64::MAX);
    let fault = caught();
    check(
        NAME,
        matches!(fault, Some((14, _, SCRATCH_VA))),
        format_args!(
            "lar of an LDT page with a hypervisor gate: {fault:?}, expected #PF at 0x1000"
        ),
    );
    far_call(SEL0);
    let fault = caught();
    check(
        NAME,
        matches!(fault, Some((14, _, SCRATCH_VA))),
        format_args!("far call through the hypervisor gate: {fault:?}, expected #PF at 0x1000"),
    );
    expect(
        NAME,
        "the refused page is unchanged",
        read_scratch(0),
        GATE_TO_HV[0],
    );
    set_ldt(0, 0);
    expect(
        NAME,
        "writable mapping after the refusal",
        map_scratch(mfn, true),
        Ok(0),
    );

    // 5. An entry whose linear address is past the canonical lower half.
    set_ldt((1 << 47) - 0x1000, 8192);
    expect(
        NAME,
        "lar of a non-canonical LDT entry",
        lar(SEL_0X200),
        u64::MAX,
    );
    expect(
        NAME,
        "fault of a non-canonical LDT entry",
        caught(),
        Some((13, u64::from(SEL_0X200 & !3), 0)),
    );
    set_ldt(0, 0);

    // 6. Into the guest on an LDT code segment: the hypervisor's return to the guest
    //    is the CPU's first read of the fresh LDT.
    expect(NAME, "map 0x1000 writable", map_scratch(mfn, true), Ok(0));
    write_scratch(&[CODE64_DPL3, 0]);
    expect(NAME, "map 0x1000 read-only", map_scratch(mfn, false), Ok(0));
    set_ldt(SCRATCH_VA, 2);
    // SAFETY: returns to the next instruction on an LDT code segment equivalent to
    // FLAT_KERNEL_CS (64-bit, DPL 3, flat), same stack, then far-returns to it. The
    // frame's RPL is 0: RPL 3 would mean a return to user mode.
    let cs = unsafe { ldt_iret_cs(u64::from(SEL0 & !3)) };
    expect(NAME, "CS after iret onto LDT entry 0", cs, u64::from(SEL0));
    expect(NAME, "no fault in the iret", caught(), None);
    set_ldt(0, 0);

    // 7. Returns onto LDT entries that are no code segment the CPU can load.
    expect(NAME, "map 0x1000 writable", map_scratch(mfn, true), Ok(0));
    write_scratch(&[CODE64_ABSENT, DATA_DPL3]);
    expect(NAME, "map 0x1000 read-only", map_scratch(mfn, false), Ok(0));
    set_ldt(SCRATCH_VA, 2);
    // SAFETY: as in 6; the return faults and the handler resumes on FLAT_KERNEL_CS.
    let cs = unsafe { ldt_iret_cs(u64::from(SEL0 & !3)) };
    expect(
        NAME,
        "fault of an iret onto a not-present LDT code segment",
        caught(),
        Some((11, u64::from(SEL0 & !3), 0)),
    );
    expect(
        NAME,
        "CS after the handler's fix",
        cs,
        u64::from(FLAT_KERNEL_CS),
    );
    // SAFETY: as above.
    let cs = unsafe { ldt_iret_cs(u64::from(SEL1 & !3)) };
    expect(
        NAME,
        "fault of an iret onto an LDT data segment",
        caught(),
        Some((13, u64::from(SEL1 & !3), 0)),
    );
    expect(
        NAME,
        "CS after the handler's fix",
        cs,
        u64::from(FLAT_KERNEL_CS),
    );
    set_ldt(0, 0);
    pass(NAME)
}

pv_runtime::entry!(main);
