//! `hostile-xsa213` (XSA-213): an `iret` inside a `multicall` ends the
//! multicall. The guest issues `multicall([iret, xen_version])` with an
//! iret frame on its stack that enters user mode (RPL-3 `cs`, the user L4
//! of a [`UserSpace`]) with `rax` = 0xdead. The multicall must stop at the
//! iret: the guest arrives in user code with 0xdead in `rax` (the user code
//! makes a system call at once, which brings it back to the kernel), and
//! the `xen_version` entry never runs: its `result` stays 0.
#![no_std]
#![no_main]

use core::arch::global_asm;

use pv_runtime::abi::hypercall::{Hypercall, call};
use pv_runtime::abi::types::GuestPtr;
use pv_runtime::abi::version::XenVer;
use pv_runtime::abi::xen::{FLAT_USER_CS, FLAT_USER_SS, MulticallEntry, PteFlags};
use pv_runtime::mm;
use pv_runtime::user::{self, UserExit, UserSpace};
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{expect, fail, pass};

const NAME: &str = "hostile-xsa213";
const CODE_VA: u64 = 0x0000_0040_0000_0000;
const STACK_TOP: u64 = 0x0000_0050_0000_1000;
const IRET_RAX: u64 = 0xdead;

#[repr(C)]
struct Args {
    list: u64,
    count: u64,
    rip: u64,
    rsp: u64,
}

// xsa213_launch(args): push an iret frame (ss, rsp, rflags with IF clear,
// cs, rip, flags, rcx, r11, rax) and issue the multicall with a direct
// `syscall`, so the frame is at the guest rsp when the iret entry runs.
// If the multicall returns, drop the frame and return its rax.
global_asm!(
    ".pushsection .text.xsa213, \"ax\", @progbits",
    ".globl xsa213_launch",
    "xsa213_launch:",
    "    mov %rdi, %r8",
    "    pushq ${ss}",
    "    pushq 24(%r8)",
    "    pushq $2",
    "    pushq ${cs}",
    "    pushq 16(%r8)",
    "    pushq $0",
    "    pushq $0",
    "    pushq $0",
    "    pushq ${rax}",
    "    mov (%r8), %rdi",
    "    mov 8(%r8), %rsi",
    "    mov ${multicall}, %eax",
    "    syscall",
    "    add $72, %rsp",
    "    ret",
    ".popsection",
    ".pushsection .rodata.user_code, \"a\"",
    ".globl xsa213_user, xsa213_user_end",
    "xsa213_user:",
    "    syscall",
    "    ud2",
    "xsa213_user_end:",
    ".popsection",
    ss = const FLAT_USER_SS,
    cs = const FLAT_USER_CS,
    rax = const IRET_RAX,
    multicall = const Hypercall::Multicall as u32,
    options(att_syntax),
);

unsafe extern "C" {
    fn xsa213_launch(args: u64);
    static xsa213_user: u8;
    static xsa213_user_end: u8;
}

fn main(_si: &'static StartInfo) {
    let space = match UserSpace::new() {
        Ok(s) => s,
        Err(e) => fail(NAME, format_args!("user space: {e}")),
    };
    let start = &raw const xsa213_user;
    let end = &raw const xsa213_user_end;
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

    let mut list = [
        MulticallEntry {
            op: u64::from(Hypercall::Iret.nr()),
            ..MulticallEntry::default()
        },
        MulticallEntry::new(call::xen_version(XenVer::Version.nr(), GuestPtr::NULL)),
    ];
    let args = Args {
        list: list.as_mut_ptr().expose_provenance() as u64,
        count: 2,
        rip: CODE_VA,
        rsp: STACK_TOP,
    };
    let arg = core::ptr::from_ref(&args).expose_provenance() as u64;
    // SAFETY: `xsa213_launch` reads `args` (alive for the call), builds an
    // iret frame into user mode of `space` on the kernel stack and issues
    // the multicall on `list` (alive, writable); it either returns with
    // the multicall's result or ends up in user mode, which comes back
    // through the syscall callback.
    let exit = unsafe { user::run_with(&space, xsa213_launch, arg) };
    // SAFETY: the hypervisor may have written the results behind the
    // compiler's back; read them volatile.
    let results = unsafe {
        [
            core::ptr::read_volatile(&raw const list[0].result),
            core::ptr::read_volatile(&raw const list[1].result),
        ]
    };
    match exit {
        Ok(UserExit::Syscall(r)) => {
            expect(NAME, "rax on arrival in user mode", r.rax, IRET_RAX);
            expect(NAME, "user rip after the syscall", r.rcx, CODE_VA + 2);
        }
        Ok(other) => fail(
            NAME,
            format_args!("multicall did not stop at the iret: {other}"),
        ),
        Err(e) => fail(NAME, format_args!("setting up user mode: {e}")),
    }
    expect(
        NAME,
        "xen_version result (must not have run)",
        results[1],
        0,
    );
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
