//! `user-isolation`: user code runs on its own page tables only. A user
//! read of the kernel image's address takes a not-present user #PF (the
//! kernel is not mapped there), a user write to its read-only code page
//! takes a present/write/user #PF; both come back to the kernel as
//! exceptions from user mode, with CR2 set. A read of its own code works.
//! A read of the read-only M2P also faults (not present, user): Xen puts
//! the M2P slot into an L4 only when it becomes a *kernel* base pointer
//! (without `m2p_strict`), never on validation, so an L4 used only as the
//! user base has none.
#![no_std]
#![no_main]

use core::arch::global_asm;

use pv_runtime::abi::xen::PteFlags;
use pv_runtime::mm;
use pv_runtime::traps::vector;
use pv_runtime::user::{self, UserEntry, UserExit, UserSpace};
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{expect, fail, pass};

const NAME: &str = "user-isolation";
const CODE_VA: u64 = 0x0000_0040_0000_0000;
const STACK_TOP: u64 = 0x0000_0050_0000_1000;
const KERNEL_VA: u64 = 0x10_0000;
const PFEC_PRESENT: u64 = 1;
const PFEC_WRITE: u64 = 2;
const PFEC_USER: u64 = 4;

// At +0: rax = *rdi; syscall.  At +16: *rdi = rsi; syscall.
global_asm!(
    ".pushsection .rodata.user_code, \"a\"",
    ".globl iso_code, iso_code_end",
    "iso_code:",
    "    mov (%rdi), %rax",
    "    syscall",
    "    ud2",
    ".balign 16",
    "    mov %rsi, (%rdi)",
    "    syscall",
    "    ud2",
    "iso_code_end:",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    static iso_code: u8;
    static iso_code_end: u8;
}

fn run(space: &UserSpace, at: u64, rdi: u64) -> UserExit {
    let mut entry = UserEntry::new(CODE_VA + at, STACK_TOP);
    entry.rdi = rdi;
    entry.rsi = 0x5A5A;
    match user::run(space, &entry) {
        Ok(x) => x,
        Err(e) => fail(NAME, format_args!("entering user mode: {e}")),
    }
}

fn expect_pf(what: &str, exit: UserExit, cr2: u64, code: u64) {
    match exit {
        UserExit::Exception(r)
            if r.vector == u64::from(vector::PF)
                && r.cr2 == cr2
                && r.error_code & 7 == code
                && r.from_user() => {}
        other => fail(
            NAME,
            format_args!("{what}: {other}, expected #PF cr2 {cr2:#x} code {code:#x}"),
        ),
    }
}

fn main(_si: &'static StartInfo) {
    let space = match UserSpace::new() {
        Ok(s) => s,
        Err(e) => fail(NAME, format_args!("user space: {e}")),
    };
    let start = &raw const iso_code;
    let end = &raw const iso_code_end;
    // SAFETY: the symbols delimit the `.rodata` blob above.
    let bytes = unsafe { core::slice::from_raw_parts(start, end.addr() - start.addr()) };
    if let Err(e) = space.load(CODE_VA, bytes, PteFlags::empty()) {
        fail(NAME, format_args!("loading the user code: {e}"));
    }
    let Some(stack) = mm::alloc_frame() else {
        fail(NAME, format_args!("no frame for the user stack"))
    };
    if let Err(e) = space.map(STACK_TOP - 4096, &[stack.mfn], PteFlags::RW | PteFlags::NX) {
        fail(NAME, format_args!("mapping the user stack: {e}"));
    }

    // Own code: readable.
    match run(&space, 0, CODE_VA) {
        UserExit::Syscall(r) => {
            let mut first = [0u8; 8];
            first.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
            expect(
                NAME,
                "user read of its code",
                r.rax,
                u64::from_le_bytes(first),
            );
        }
        other => fail(NAME, format_args!("user read of its code: {other}")),
    }
    expect_pf(
        "user read of the kernel",
        run(&space, 0, KERNEL_VA),
        KERNEL_VA,
        PFEC_USER,
    );
    expect_pf(
        "user write to its read-only code",
        run(&space, 16, CODE_VA + 8),
        CODE_VA + 8,
        PFEC_PRESENT | PFEC_WRITE | PFEC_USER,
    );
    // The read-only M2P (the entry of the user L4's own frame): not in
    // the user's tables.
    let m2p = mm::M2P_VIRT_START + space.root().0 * 8;
    expect_pf("user read of the M2P", run(&space, 0, m2p), m2p, PFEC_USER);
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
