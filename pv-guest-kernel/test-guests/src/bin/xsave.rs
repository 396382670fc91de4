//! `xsave`: XSAVE and AVX for a 64-bit PV guest kernel, as Xen 4.17 gives them
//! (issue #20). Checks, in order:
//!
//! 1. the forced CPUID shows XSAVE and AVX;
//! 2. `xsetbv` before CR4.OSXSAVE is set raises #UD;
//! 3. `mov %cr4` takes OSXSAVE; leaf 1 then shows OSXSAVE; `xgetbv(0)` reads
//!    x87|SSE (3), and leaf 0xD.0 EBX the size for it (576);
//! 4. `xsetbv(0, 7)` (x87|SSE|AVX) is taken: `xgetbv` reads 7 and leaf 0xD.0
//!    EBX grows to the end of the AVX component;
//! 5. values Xen refuses raise #GP(0) and leave XCR0 alone: YMM without SSE,
//!    no x87, XCR1, PKRU;
//! 6. YMM0-15 (all 256 bits) keep a per-round pattern across `rounds`
//!    `SCHEDOP_yield`s (other domains run in between when there are any).
//!
//! Command line: `seed=N` (the pattern, default 1), `rounds=N` (default 200).
//!
//! Result line: `xsave: PASS`.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::{StartInfo, sched};
use pv_test_guests::{arg_u64, check, expect, fail, pass};

const NAME: &str = "xsave";

global_asm!(
    ".pushsection .text.xsave_probes, \"ax\", @progbits",
    ".globl xs_xsetbv, xs_xsetbv_insn, xs_xsetbv_end, xs_xgetbv",
    ".globl xs_cpuid_forced, xs_rdcr4, xs_wrcr4, xs_ymm_load, xs_ymm_store",
    // xs_xsetbv(index, value)
    "xs_xsetbv:",
    "    mov %edi, %ecx",
    "    mov %rsi, %rax",
    "    mov %rsi, %rdx",
    "    shr $32, %rdx",
    "xs_xsetbv_insn:",
    "    xsetbv",
    "xs_xsetbv_end:",
    "    ret",
    // xs_xgetbv(index) -> edx:eax
    "xs_xgetbv:",
    "    mov %edi, %ecx",
    "    xgetbv",
    "    shl $32, %rdx",
    "    or %rdx, %rax",
    "    ret",
    // xs_cpuid_forced(leaf, subleaf, out: *mut [u32; 4])
    "xs_cpuid_forced:",
    "    push %rbx",
    "    mov %rdx, %r8",
    "    mov %edi, %eax",
    "    mov %esi, %ecx",
    "    ud2",
    "    .ascii \"xen\"",
    "    cpuid",
    "    mov %eax, (%r8)",
    "    mov %ebx, 4(%r8)",
    "    mov %ecx, 8(%r8)",
    "    mov %edx, 12(%r8)",
    "    pop %rbx",
    "    ret",
    "xs_rdcr4:",
    "    mov %cr4, %rax",
    "    ret",
    "xs_wrcr4:",
    "    mov %rdi, %cr4",
    "    ret",
    // xs_ymm_load(src: *const [u8; 512]): YMM0-15 from src.
    "xs_ymm_load:",
    "    vmovdqu 0(%rdi), %ymm0",
    "    vmovdqu 32(%rdi), %ymm1",
    "    vmovdqu 64(%rdi), %ymm2",
    "    vmovdqu 96(%rdi), %ymm3",
    "    vmovdqu 128(%rdi), %ymm4",
    "    vmovdqu 160(%rdi), %ymm5",
    "    vmovdqu 192(%rdi), %ymm6",
    "    vmovdqu 224(%rdi), %ymm7",
    "    vmovdqu 256(%rdi), %ymm8",
    "    vmovdqu 288(%rdi), %ymm9",
    "    vmovdqu 320(%rdi), %ymm10",
    "    vmovdqu 352(%rdi), %ymm11",
    "    vmovdqu 384(%rdi), %ymm12",
    "    vmovdqu 416(%rdi), %ymm13",
    "    vmovdqu 448(%rdi), %ymm14",
    "    vmovdqu 480(%rdi), %ymm15",
    "    ret",
    // xs_ymm_store(dst: *mut [u8; 512]): YMM0-15 to dst.
    "xs_ymm_store:",
    "    vmovdqu %ymm0, 0(%rdi)",
    "    vmovdqu %ymm1, 32(%rdi)",
    "    vmovdqu %ymm2, 64(%rdi)",
    "    vmovdqu %ymm3, 96(%rdi)",
    "    vmovdqu %ymm4, 128(%rdi)",
    "    vmovdqu %ymm5, 160(%rdi)",
    "    vmovdqu %ymm6, 192(%rdi)",
    "    vmovdqu %ymm7, 224(%rdi)",
    "    vmovdqu %ymm8, 256(%rdi)",
    "    vmovdqu %ymm9, 288(%rdi)",
    "    vmovdqu %ymm10, 320(%rdi)",
    "    vmovdqu %ymm11, 352(%rdi)",
    "    vmovdqu %ymm12, 384(%rdi)",
    "    vmovdqu %ymm13, 416(%rdi)",
    "    vmovdqu %ymm14, 448(%rdi)",
    "    vmovdqu %ymm15, 480(%rdi)",
    "    ret",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    fn xs_xsetbv(index: u32, value: u64);
    static xs_xsetbv_insn: u8;
    static xs_xsetbv_end: u8;
    fn xs_xgetbv(index: u32) -> u64;
    fn xs_cpuid_forced(leaf: u32, subleaf: u32, out: *mut [u32; 4]);
    fn xs_rdcr4() -> u64;
    fn xs_wrcr4(v: u64);
    fn xs_ymm_load(src: *const [u8; 512]);
    fn xs_ymm_store(dst: *mut [u8; 512]);
}

/// The vector of the last fault at `xsetbv` (`u64::MAX` = none).
static FAULT: AtomicU64 = AtomicU64::new(u64::MAX);

/// #GP or #UD at the `xsetbv` probe: skip it and record it. Anywhere else: fail.
fn on_fault(frame: &mut TrapFrame) {
    if frame.rip != (&raw const xs_xsetbv_insn).addr() as u64 {
        fail(
            NAME,
            format_args!(
                "unexpected vector {} ({:#x}) at {:#x}",
                frame.vector, frame.error_code, frame.rip
            ),
        );
    }
    if frame.vector == u64::from(vector::GP) && frame.error_code != 0 {
        fail(NAME, format_args!("#GP({:#x}) at xsetbv", frame.error_code));
    }
    frame.rip = (&raw const xs_xsetbv_end).addr() as u64;
    FAULT.store(frame.vector, Ordering::SeqCst);
}

/// `xsetbv`: `None` if taken, else the vector it raised.
fn xsetbv(index: u32, value: u64) -> Option<u64> {
    FAULT.store(u64::MAX, Ordering::SeqCst);
    // SAFETY: emulated by the hypervisor, or a fault that `on_fault` skips.
    unsafe { xs_xsetbv(index, value) };
    let v = FAULT.load(Ordering::SeqCst);
    (v != u64::MAX).then_some(v)
}

fn xgetbv() -> u64 {
    // SAFETY: CR4.OSXSAVE is on in the hardware while PV guests run (both
    // hypervisors); XCR0 always exists.
    unsafe { xs_xgetbv(0) }
}

fn forced(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    // SAFETY: the helper writes 16 bytes to `out`, a live local, and saves rbx.
    unsafe { xs_cpuid_forced(leaf, subleaf, &raw mut out) };
    out
}

const CR4_OSXSAVE: u64 = 1 << 18;
const B1C_XSAVE: u32 = 1 << 26;
const B1C_OSXSAVE: u32 = 1 << 27;
const B1C_AVX: u32 = 1 << 28;

/// The 512 bytes YMM0-15 hold in round `round`.
fn pattern(seed: u64, round: u64) -> [u8; 512] {
    let mut p = [0u8; 512];
    let mut x = seed
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(round.wrapping_mul(0xbf58_476d_1ce4_e5b9))
        | 1;
    for chunk in p.chunks_mut(8) {
        // xorshift64
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    p
}

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::GP, on_fault);
    traps::set_handler(vector::UD, on_fault);
    let seed = arg_u64(NAME, "seed", 1);
    let rounds = arg_u64(NAME, "rounds", 200);

    let l1 = forced(1, 0);
    check(
        NAME,
        l1[2] & (B1C_XSAVE | B1C_AVX) == B1C_XSAVE | B1C_AVX,
        format_args!("leaf 1 ECX {:#x}: no XSAVE or AVX", l1[2]),
    );

    expect(
        NAME,
        "xsetbv before CR4.OSXSAVE",
        xsetbv(0, 3),
        Some(u64::from(vector::UD)),
    );

    // SAFETY: emulated by the hypervisor.
    let cr4 = unsafe { xs_rdcr4() };
    // SAFETY: as above; OSXSAVE is a bit a PV kernel controls.
    unsafe { xs_wrcr4(cr4 | CR4_OSXSAVE) };
    // SAFETY: as above.
    let cr4 = unsafe { xs_rdcr4() };
    check(
        NAME,
        cr4 & CR4_OSXSAVE != 0,
        format_args!("CR4 {cr4:#x} without OSXSAVE after setting it"),
    );
    check(
        NAME,
        forced(1, 0)[2] & B1C_OSXSAVE != 0,
        format_args!("leaf 1 without OSXSAVE after CR4.OSXSAVE"),
    );
    expect(NAME, "xgetbv before xsetbv", xgetbv(), 3);
    let d0 = forced(0xd, 0);
    expect(NAME, "leaf 0xD.0 EAX & 7", d0[0] & 7, 7);
    expect(NAME, "leaf 0xD.0 EBX for x87|SSE", d0[1], 576);

    expect(NAME, "xsetbv(0, 7)", xsetbv(0, 7), None);
    expect(NAME, "xgetbv after xsetbv(0, 7)", xgetbv(), 7);
    let [ymm_size, ymm_offset, ..] = forced(0xd, 2);
    expect(
        NAME,
        "leaf 0xD.0 EBX for x87|SSE|AVX",
        forced(0xd, 0)[1],
        ymm_offset + ymm_size,
    );

    for (what, index, value) in [
        ("YMM without SSE", 0, 5),
        ("no x87", 0, 2),
        ("XCR1", 1, 3),
        ("PKRU", 0, 7 | 1 << 9),
    ] {
        expect(
            NAME,
            what,
            xsetbv(index, value),
            Some(u64::from(vector::GP)),
        );
        expect(NAME, "xgetbv after a refused xsetbv", xgetbv(), 7);
    }

    let mut got = [0u8; 512];
    for round in 0..rounds {
        let want = pattern(seed, round);
        // SAFETY: AVX is enabled (XCR0 = 7, CR4.OSXSAVE); 512 readable bytes; the
        // runtime never uses vector registers, so nothing else owns YMM0-15.
        unsafe { xs_ymm_load(&raw const want) };
        sched::yield_now();
        // SAFETY: as above; 512 writable bytes.
        unsafe { xs_ymm_store(&raw mut got) };
        if got != want {
            let at = got.iter().zip(want).position(|(g, w)| *g != w).unwrap_or(0);
            fail(
                NAME,
                format_args!(
                    "round {round}: YMM{} byte {} changed across a yield",
                    at / 32,
                    at % 32
                ),
            );
        }
    }
    pass(NAME)
}

pv_runtime::entry!(main);
