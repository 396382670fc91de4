//! `usermode`: runs code in guest user mode and comes back through the
//! syscall callback. The runtime builds a separate user L4 (pinned) holding
//! only the user code (read-only) and a user stack, then
//! `stack_switch` + `NEW_USER_BASEPTR` + `iret` (CS RPL 3) enter user mode;
//! the user code uses its stack, then executes `syscall`, which the
//! hypervisor bounces to the runtime's syscall callback in kernel mode.
//! Checks the user registers the callback saw, that the kernel's state
//! survived, and that user mode can be entered again.
#![no_std]
#![no_main]

use core::arch::global_asm;

use pv_runtime::abi::xen::{FLAT_USER_CS, PteFlags};
use pv_runtime::mm;
use pv_runtime::user::{self, UserEntry, UserExit, UserSpace};
use pv_runtime::{Config, StartInfo, shared};
use pv_test_guests::{check, expect, fail, pass};

const NAME: &str = "usermode";
const CODE_VA: u64 = 0x0000_0040_0000_0000;
const STACK_VA: u64 = 0x0000_0050_0000_0000;
const STACK_PAGES: usize = 2;
const STACK_TOP: u64 = STACK_VA + STACK_PAGES as u64 * 4096;
const RFLAGS_IF: u64 = 1 << 9;

// User code (position independent): rax = rdi * 3 through the stack,
// rdx = marker, rsi = rsp, then syscall.
global_asm!(
    ".pushsection .rodata.user_code, \"a\"",
    ".globl usermode_code, usermode_code_end, usermode_after_syscall",
    "usermode_code:",
    "    push %rdi",
    "    push %rdi",
    "    push %rdi",
    "    pop %rax",
    "    pop %rbx",
    "    add %rbx, %rax",
    "    pop %rbx",
    "    add %rbx, %rax",
    "    mov $0x5553455253504143, %rdx",
    "    mov %rsp, %rsi",
    "    syscall",
    "usermode_after_syscall:",
    "    ud2",
    "usermode_code_end:",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    static usermode_code: u8;
    static usermode_code_end: u8;
    static usermode_after_syscall: u8;
}

fn code() -> (&'static [u8], u64) {
    let start = &raw const usermode_code;
    let end = &raw const usermode_code_end;
    let after = &raw const usermode_after_syscall;
    let len = end.addr() - start.addr();
    // SAFETY: the two symbols delimit the bytes of the `.rodata` blob above,
    // which live as long as the image.
    let bytes = unsafe { core::slice::from_raw_parts(start, len) };
    (bytes, (after.addr() - start.addr()) as u64)
}

fn main(_si: &'static StartInfo) {
    let space = match UserSpace::new() {
        Ok(s) => s,
        Err(e) => fail(NAME, format_args!("user space: {e}")),
    };
    check(
        NAME,
        space.root() != mm::kernel_root(),
        format_args!("user L4 is the kernel's"),
    );
    let (bytes, after) = code();
    if let Err(e) = space.load(CODE_VA, bytes, PteFlags::empty()) {
        fail(NAME, format_args!("loading the user code: {e}"));
    }
    let mut stack = [pv_runtime::abi::types::Mfn(0); STACK_PAGES];
    for s in &mut stack {
        match mm::alloc_frame() {
            Some(f) => *s = f.mfn,
            None => fail(NAME, format_args!("no frame for the user stack")),
        }
    }
    if let Err(e) = space.map(STACK_VA, &stack, PteFlags::RW | PteFlags::NX) {
        fail(NAME, format_args!("mapping the user stack: {e}"));
    }
    // The kernel does not see the user mappings, and vice versa.
    expect(
        NAME,
        "user code in the kernel's tables",
        mm::translate(CODE_VA),
        None,
    );
    expect(
        NAME,
        "kernel image in the user tables",
        space.translate(0x10_0000),
        None,
    );

    let canary: u64 = 0xC0FF_EE00_D15E_A5E5;
    let mask_before = shared::upcall_mask(0);
    for (round, arg) in [(0u64, 7u64), (1, 0x1111_1111)] {
        let mut entry = UserEntry::new(CODE_VA, STACK_TOP);
        entry.rdi = arg;
        let exit = match user::run(&space, &entry) {
            Ok(x) => x,
            Err(e) => fail(NAME, format_args!("round {round}: entering user mode: {e}")),
        };
        let UserExit::Syscall(r) = exit else {
            fail(
                NAME,
                format_args!("round {round}: user mode ended with {exit}"),
            )
        };
        expect(NAME, "rax = 3 * rdi", r.rax, 3 * arg);
        expect(NAME, "rdx marker", r.rdx, 0x5553_4552_5350_4143);
        expect(NAME, "user rsp (in rsi)", r.rsi, STACK_TOP);
        expect(NAME, "rsp in the frame", r.rsp, STACK_TOP);
        expect(NAME, "rcx = return address", r.rcx, CODE_VA + after);
        expect(NAME, "rip = return address", r.rip, CODE_VA + after);
        expect(NAME, "cs", r.cs & 0xFFFF, u64::from(FLAT_USER_CS));
        check(
            NAME,
            r.from_user(),
            format_args!("frame not from user mode: {r}"),
        );
        check(
            NAME,
            r.r11 & RFLAGS_IF != 0,
            format_args!("user rflags (r11) {:#x} without IF", r.r11),
        );
    }
    // SAFETY: reading our own local through a volatile load, so the check
    // is not folded away.
    let canary_after = unsafe { core::ptr::read_volatile(&raw const canary) };
    expect(
        NAME,
        "kernel stack canary",
        canary_after,
        0xC0FF_EE00_D15E_A5E5,
    );
    expect(
        NAME,
        "kernel upcall mask",
        shared::upcall_mask(0),
        mask_before,
    );
    expect(
        NAME,
        "back on the kernel's tables",
        mm::translate(CODE_VA),
        None,
    );
    if let Err(e) = space.destroy() {
        fail(NAME, format_args!("destroying the user space: {e}"));
    }
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
