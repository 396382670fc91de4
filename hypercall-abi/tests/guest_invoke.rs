//! Runs the real `guest` invoke path on the host and pins the register
//! order: a fake hypercall page (128 stubs of 32 bytes, assembled below)
//! records the registers each stub receives, poisons the argument registers
//! as a debug Xen does, and returns a chosen value. The direct-`syscall`
//! invoker is checked against Linux, whose syscall convention uses the same
//! first registers.
#![cfg(all(feature = "guest", target_arch = "x86_64", target_os = "linux"))]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::ptr::{addr_of, addr_of_mut};

use hypercall_abi::guest::{HypercallPage, Syscall};
use hypercall_abi::hypercall::{self, ARG_REGS, Invoke};
use hypercall_abi::{Errno, GuestPtr};

// Stub `n`: push rcx; push r11; push $n; jmp common. `common` stores the
// stub number, rax, rdi, rsi, rdx, r10, r8 and r9 in FAKE_RECORD, loads
// FAKE_RESULT into rax, poisons the argument registers, restores r11/rcx and
// returns, like Xen's stub plus a debug hypervisor.
core::arch::global_asm!(
    ".pushsection .text.fake_hypercall_page, \"ax\"",
    ".balign 4096",
    ".globl fake_hypercall_page",
    "fake_hypercall_page:",
    ".set fake_hc_n, 0",
    ".rept 128",
    ".balign 32",
    "push %rcx",
    "push %r11",
    "pushq $fake_hc_n",
    "jmp fake_hypercall_common",
    ".set fake_hc_n, fake_hc_n + 1",
    ".endr",
    "fake_hypercall_common:",
    "pop %r11",
    "mov %r11, fake_record+0(%rip)",
    "mov %rax, fake_record+8(%rip)",
    "mov %rdi, fake_record+16(%rip)",
    "mov %rsi, fake_record+24(%rip)",
    "mov %rdx, fake_record+32(%rip)",
    "mov %r10, fake_record+40(%rip)",
    "mov %r8, fake_record+48(%rip)",
    "mov %r9, fake_record+56(%rip)",
    "mov fake_result(%rip), %rax",
    "movabs $0xDEADBEEFDEADF00D, %rdi",
    "mov %rdi, %rsi",
    "mov %rdi, %rdx",
    "mov %rdi, %r10",
    "mov %rdi, %r8",
    "pop %r11",
    "pop %rcx",
    "ret",
    ".popsection",
    ".pushsection .data.fake_hypercall_record, \"aw\"",
    ".balign 8",
    ".globl fake_record",
    "fake_record: .zero 64",
    ".globl fake_result",
    "fake_result: .quad 0",
    ".popsection",
    options(att_syntax)
);

unsafe extern "C" {
    static fake_hypercall_page: u8;
    static mut fake_record: [u64; 8];
    static mut fake_result: u64;
}

/// The registers the fake stub saw: [stub, rax, rdi, rsi, rdx, r10, r8, r9].
fn record() -> [u64; 8] {
    // SAFETY: the test thread is the only writer, through the stub it just
    // called; reading the static's bytes is a plain copy.
    unsafe { addr_of!(fake_record).read_volatile() }
}

fn set_result(v: u64) {
    // SAFETY: as for `record`.
    unsafe { addr_of_mut!(fake_result).write_volatile(v) }
}

fn page() -> HypercallPage {
    // SAFETY: the fake page is executable, every stub returns normally, and
    // no argument below is dereferenced by it.
    unsafe { HypercallPage::new(addr_of!(fake_hypercall_page)) }
}

// One test only, because the fake page's record is a single global.
#[test]
fn hypercall_page_register_order() {
    let mut p = page();

    set_result(0x1234);
    let r = p.invoke(17, [0x11, 0x22, 0x33, 0x44, 0x55]);
    assert_eq!(r, 0x1234);
    let rec = record();
    assert_eq!(rec[0], 17, "called stub 17");
    assert_eq!(rec[1], 17, "rax = number");
    assert_eq!(
        &rec[2..7],
        &[0x11, 0x22, 0x33, 0x44, 0x55],
        "rdi, rsi, rdx, r10, r8"
    );

    // A typed wrapper, and errno decoding on the way back.
    set_result(Errno::EINVAL.encode());
    let r = hypercall::mmu_update(
        &mut p,
        GuestPtr::new(0xA000),
        7,
        GuestPtr::new(0xB000),
        0x7FF0,
    );
    assert_eq!(r, Err(Errno::EINVAL));
    assert_eq!(&record()[..7], &[1, 1, 0xA000, 7, 0xB000, 0x7FF0, 0]);

    // The last stub, and values that survive the poisoning only if the
    // compiler reloads them (the arguments are declared clobbered).
    set_result(0);
    let args = [u64::MAX, 1 << 63, 3, 4, 5];
    for _ in 0..3 {
        assert_eq!(p.invoke(127, args), 0);
        assert_eq!(&record()[..7], &[127, 127, u64::MAX, 1 << 63, 3, 4, 5]);
    }

    // iret is never `call`ed.
    let before = record();
    assert_eq!(p.invoke(23, [0; 5]), Errno::EINVAL.encode());
    assert_eq!(record(), before);
    assert_eq!(
        p.stub(23),
        Some(addr_of!(fake_hypercall_page) as usize + 23 * 32)
    );
    assert_eq!(p.stub(128), None);

    // The declared order the asm was generated from.
    assert_eq!(ARG_REGS, ["rdi", "rsi", "rdx", "r10", "r8"]);
}

#[test]
fn direct_syscall_register_order() {
    // Linux's syscall convention starts with the same registers: rax = nr,
    // rdi, rsi, rdx. write(2) on a socket proves the first three.
    let (a, mut b) = UnixStream::pair().unwrap();
    // SAFETY: on the host, `syscall` is a Linux system call; write(2) only
    // reads `msg`, which is valid for its length.
    let mut s = unsafe { Syscall::new() };
    let msg = b"via syscall";
    let fd = u64::try_from(a.as_raw_fd()).unwrap();
    let n = s.invoke(1, [fd, msg.as_ptr() as u64, msg.len() as u64, 0, 0]);
    assert_eq!(Errno::decode(n), Ok(msg.len() as u64));
    let mut buf = [0u8; 11];
    b.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, msg);
    // A bad descriptor comes back as -EBADF, decoded by the one decoder.
    assert_eq!(
        Errno::decode(s.invoke(1, [u64::MAX, 0, 0, 0, 0])),
        Err(Errno::EBADF)
    );
}
