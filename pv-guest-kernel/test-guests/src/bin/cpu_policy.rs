//! `cpu-policy`: the CPU a 64-bit PV guest kernel is shown, as Xen 4.17 shows
//! it to dom0 (issue #20: what Debian's Linux relies on). Checks, in order:
//!
//! 1. CPUID through the forced-emulation prefix (`ud2; .ascii "xen"; cpuid`):
//!    the hypervisor bit and Xen's leaves; the features Xen's default PV
//!    policy hides (PSE, PGE, PSE36, PDPE1GB, MONITOR, X2APIC, SVM,
//!    CR8_LEGACY, SMEP, MPX, SMAP, UMIP, PKU, OSPKE, LA57, WBNOINVD, and
//!    SEP on AMD); leaves 5, 6, 8, 0xB and 0xC empty; on AMD leaves 2-4, 9,
//!    0xA and 0x8000000A empty; APIC ID 0 in leaf 1; FSGSBASE shown;
//! 2. a native `cpuid` (not trapped unless the hypervisor uses CPUID
//!    faulting) agrees with the forced one on the bits a guest can rely on
//!    either way: the vendor and the maximum leaves;
//! 3. CR4: every write is accepted; only TSD, DE, FSGSBASE and OSXSAVE stick
//!    (OSXSAVE with XSAVE; PGE, PSE, SMEP, ... are dropped); PAE, OSFXSR and
//!    OSXMMEXCPT read as the real CR4 has them;
//! 4. MSRs, as Xen's PV `read_msr`/`write_msr` answer them: PAT reads
//!    0x0000050100070406 and takes only that value; MCG_CAP/MCG_STATUS and
//!    the MCi banks per vMCE; APIC_BASE, MISC_ENABLE, PLATFORM_INFO,
//!    MISC_FEATURES_ENABLES, EFER, the AMD HWCR/DE_CFG/perf MSRs; writes to
//!    0x8b, TSC_AUX and MCG_STATUS dropped; unknown MSRs #GP; SPEC_CTRL,
//!    PRED_CMD, FLUSH_CMD and ARCH_CAPABILITIES as the policy's speculation bits
//!    say;
//! 5. FS/GS bases: after loading a null `%gs` (which clears the hardware
//!    base on this CPU), `set_segment_base(SEGBASE_GS_KERNEL, old)` makes
//!    `%gs:` reach `old` again; likewise `wrmsr(GS_BASE)` and `%fs`.
//!
//! With `dump` on the command line it first prints every value it reads, for
//! comparing hypervisors by eye.
//!
//! Result line: `cpu-policy: PASS`.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::xen::{SEGBASE_FS, SEGBASE_GS_KERNEL};
use pv_runtime::hypercall::invoker;
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::{StartInfo, println};
use pv_test_guests::{check, expect, fail, pass};

const NAME: &str = "cpu-policy";

global_asm!(
    ".pushsection .text.cpu_policy_probes, \"ax\", @progbits",
    ".globl cp_rdmsr, cp_rdmsr_insn, cp_rdmsr_end",
    ".globl cp_wrmsr, cp_wrmsr_insn, cp_wrmsr_end",
    ".globl cp_cpuid_forced, cp_cpuid_native, cp_rdcr4, cp_wrcr4",
    ".globl cp_null_gs, cp_null_fs, cp_gs_load, cp_fs_load",
    // cp_rdmsr(msr) -> edx:eax
    "cp_rdmsr:",
    "    mov %edi, %ecx",
    "    xor %eax, %eax",
    "    xor %edx, %edx",
    "cp_rdmsr_insn:",
    "    rdmsr",
    "cp_rdmsr_end:",
    "    shl $32, %rdx",
    "    or %rdx, %rax",
    "    ret",
    // cp_wrmsr(msr, value)
    "cp_wrmsr:",
    "    mov %edi, %ecx",
    "    mov %rsi, %rax",
    "    mov %rsi, %rdx",
    "    shr $32, %rdx",
    "cp_wrmsr_insn:",
    "    wrmsr",
    "cp_wrmsr_end:",
    "    ret",
    // cp_cpuid_forced(leaf, subleaf, out: *mut [u32; 4])
    "cp_cpuid_forced:",
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
    // cp_cpuid_native(leaf, subleaf, out: *mut [u32; 4])
    "cp_cpuid_native:",
    "    push %rbx",
    "    mov %rdx, %r8",
    "    mov %edi, %eax",
    "    mov %esi, %ecx",
    "    cpuid",
    "    mov %eax, (%r8)",
    "    mov %ebx, 4(%r8)",
    "    mov %ecx, 8(%r8)",
    "    mov %edx, 12(%r8)",
    "    pop %rbx",
    "    ret",
    "cp_rdcr4:",
    "    mov %cr4, %rax",
    "    ret",
    "cp_wrcr4:",
    "    mov %rdi, %cr4",
    "    ret",
    "cp_null_gs:",
    "    xor %eax, %eax",
    "    mov %eax, %gs",
    "    ret",
    "cp_null_fs:",
    "    xor %eax, %eax",
    "    mov %eax, %fs",
    "    ret",
    "cp_gs_load:",
    "    mov %gs:(%rdi), %rax",
    "    ret",
    "cp_fs_load:",
    "    mov %fs:(%rdi), %rax",
    "    ret",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    fn cp_rdmsr(msr: u32) -> u64;
    static cp_rdmsr_insn: u8;
    static cp_rdmsr_end: u8;
    fn cp_wrmsr(msr: u32, value: u64);
    static cp_wrmsr_insn: u8;
    static cp_wrmsr_end: u8;
    fn cp_cpuid_forced(leaf: u32, subleaf: u32, out: *mut [u32; 4]);
    fn cp_cpuid_native(leaf: u32, subleaf: u32, out: *mut [u32; 4]);
    fn cp_rdcr4() -> u64;
    fn cp_wrcr4(v: u64);
    fn cp_null_gs();
    fn cp_null_fs();
    fn cp_gs_load(offset: u64) -> u64;
    fn cp_fs_load(offset: u64) -> u64;
}

/// #GPs taken at the MSR probes.
static GP_COUNT: AtomicU64 = AtomicU64::new(0);

/// #GP(0) at `rdmsr` or `wrmsr`: skip it and count it. Anywhere else: fail.
fn on_gp(frame: &mut TrapFrame) {
    let rd = (&raw const cp_rdmsr_insn).addr() as u64;
    let wr = (&raw const cp_wrmsr_insn).addr() as u64;
    if frame.rip == rd {
        frame.rip = (&raw const cp_rdmsr_end).addr() as u64;
    } else if frame.rip == wr {
        frame.rip = (&raw const cp_wrmsr_end).addr() as u64;
    } else {
        fail(
            NAME,
            format_args!(
                "unexpected #GP({:#x}) at {:#x}",
                frame.error_code, frame.rip
            ),
        );
    }
    GP_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn forced(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    // SAFETY: the helper writes 16 bytes to `out`, a live local, and saves rbx.
    unsafe { cp_cpuid_forced(leaf, subleaf, &raw mut out) };
    out
}

fn native(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    // SAFETY: as above.
    unsafe { cp_cpuid_native(leaf, subleaf, &raw mut out) };
    out
}

/// `rdmsr`: `Some(value)`, or `None` if it raised #GP.
fn rdmsr(msr: u32) -> Option<u64> {
    let before = GP_COUNT.load(Ordering::SeqCst);
    // SAFETY: emulated by the hypervisor, or a #GP that `on_gp` skips.
    let v = unsafe { cp_rdmsr(msr) };
    (GP_COUNT.load(Ordering::SeqCst) == before).then_some(v)
}

/// `wrmsr`: whether it was accepted (no #GP).
fn wrmsr(msr: u32, value: u64) -> bool {
    let before = GP_COUNT.load(Ordering::SeqCst);
    // SAFETY: emulated by the hypervisor, or a #GP that `on_gp` skips; the
    // values written are ones a PV kernel may write.
    unsafe { cp_wrmsr(msr, value) };
    GP_COUNT.load(Ordering::SeqCst) == before
}

fn read_cr4() -> u64 {
    // SAFETY: emulated by the hypervisor; writes only rax.
    unsafe { cp_rdcr4() }
}

fn write_cr4(v: u64) {
    // SAFETY: emulated by the hypervisor, which keeps only the bits a PV guest
    // controls.
    unsafe { cp_wrcr4(v) }
}

fn set_segment_base(which: u32, base: u64) {
    // SAFETY: the runtime installed the hypercall page; no guest addresses.
    let mut inv = unsafe { invoker() };
    if let Err(e) = hc::set_segment_base(&mut inv, which, base) {
        fail(
            NAME,
            format_args!("set_segment_base({which}, {base:#x}): {e}"),
        );
    }
}

// CPUID bits.
const B1D_PSE: u32 = 1 << 3;
const B1D_MTRR: u32 = 1 << 12;
const B1D_SEP: u32 = 1 << 11;
const B1D_PGE: u32 = 1 << 13;
const B1D_PSE36: u32 = 1 << 17;
const B1C_MONITOR: u32 = 1 << 3;
const B1C_VMX: u32 = 1 << 5;
const B1C_X2APIC: u32 = 1 << 21;
const B1C_HYPERVISOR: u32 = 1 << 31;
const B7B_FSGSBASE: u32 = 1 << 0;
const B7B_SMEP: u32 = 1 << 7;
const B7B_MPX: u32 = 1 << 14;
const B7B_SMAP: u32 = 1 << 20;
const B7C_UMIP: u32 = 1 << 2;
const B7C_PKU: u32 = 1 << 3;
const B7C_OSPKE: u32 = 1 << 4;
const B7C_LA57: u32 = 1 << 16;
const E1C_SVM: u32 = 1 << 2;
const E1C_CR8_LEGACY: u32 = 1 << 4;
const E1D_PAGE1GB: u32 = 1 << 26;
const E8B_WBNOINVD: u32 = 1 << 9;

// CR4 bits.
const CR4_TSD: u64 = 1 << 2;
const CR4_DE: u64 = 1 << 3;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_MCE: u64 = 1 << 6;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_UMIP: u64 = 1 << 11;
const CR4_FSGSBASE: u64 = 1 << 16;
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;

// MSRs.
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_UCODE_REV: u32 = 0x8b;
const MSR_SPEC_CTRL: u32 = 0x48;
const MSR_PRED_CMD: u32 = 0x49;
const MSR_ARCH_CAPABILITIES: u32 = 0x10a;
const MSR_FLUSH_CMD: u32 = 0x10b;
const MSR_PLATFORM_INFO: u32 = 0xce;
const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;
const MSR_MCG_CAP: u32 = 0x179;
const MSR_MCG_STATUS: u32 = 0x17a;
const MSR_MCG_CTL: u32 = 0x17b;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_MC0_CTL: u32 = 0x400;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_TSC_AUX: u32 = 0xc000_0103;
const MSR_K7_EVNTSEL0: u32 = 0xc001_0000;
const MSR_K7_PERFCTR0: u32 = 0xc001_0004;
const MSR_K8_HWCR: u32 = 0xc001_0015;
const MSR_AMD64_DE_CFG: u32 = 0xc001_1029;
const MSR_DEBUGCTL: u32 = 0x1d9;

/// Xen's PAT for PV guests.
const XEN_PAT: u64 = 0x0000_0501_0007_0406;

/// MSRs whose answers `dump` prints.
const DUMP_MSRS: &[u32] = &[
    0x10, 0x17, 0x1b, 0x2a, 0x34, 0x35, 0x3a, 0x48, 0x49, 0x8b, 0xce, 0xe7, 0xe8, 0xfe, 0x10a,
    0x140, 0x174, 0x175, 0x176, 0x179, 0x17a, 0x17b, 0x186, 0x198, 0x199, 0x19a, 0x1a0, 0x1b0,
    0x1d9, 0x200, 0x250, 0x277, 0x2ff, 0x400, 0x401, 0x402, 0x403, 0x404, 0x405, 0x406, 0x407,
    0x408, 0x40c, 0x410, 0x414, 0x418, 0x41c, 0x420, 0x480, 0x600, 0x6e0, 0xc0000080, 0xc0000081,
    0xc0000082, 0xc0000083, 0xc0000084, 0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103, 0xc0010000,
    0xc0010001, 0xc0010004, 0xc0010005, 0xc0010010, 0xc0010015, 0xc001001f, 0xc0010055, 0xc0010058,
    0xc0010061, 0xc0010062, 0xc0010063, 0xc0010064, 0xc0010114, 0xc0010140, 0xc0010141, 0xc0011020,
    0xc0011021, 0xc0011022, 0xc0011023, 0xc001102a, 0xc0011029, 0xc00110e3, 0xc0000408,
];

/// The speculation-control MSRs, as the policy's bits say (Xen's `guest_rdmsr`/
/// `guest_wrmsr`): SPEC_CTRL with IBRSB or IBRS (reads back what was written, #GP for
/// a reserved bit), PRED_CMD with IBRSB or IBPB and FLUSH_CMD with L1D_FLUSH (write-only
/// commands of their one bit), ARCH_CAPABILITIES with ARCH_CAPS (read-only); #GP for
/// each without its feature.
fn spec_msrs() {
    let gp = |what: &str, got: Option<u64>| expect(NAME, what, got, None);
    let d7 = forced(7, 0)[3];
    let e8b = forced(0x8000_0008, 0)[1];
    let ibrsb = d7 & (1 << 26) != 0;
    let spec_ctrl = ibrsb || e8b & (1 << 14) != 0;
    let ibpb = ibrsb || e8b & (1 << 12) != 0;
    let l1d_flush = d7 & (1 << 28) != 0;
    let arch_caps = d7 & (1 << 29) != 0;
    if spec_ctrl {
        expect(NAME, "rdmsr(SPEC_CTRL)", rdmsr(MSR_SPEC_CTRL), Some(0));
        expect(
            NAME,
            "wrmsr(SPEC_CTRL, IBRS)",
            wrmsr(MSR_SPEC_CTRL, 1),
            true,
        );
        expect(
            NAME,
            "SPEC_CTRL after a write",
            rdmsr(MSR_SPEC_CTRL),
            Some(1),
        );
        expect(
            NAME,
            "wrmsr(SPEC_CTRL, bit 3)",
            wrmsr(MSR_SPEC_CTRL, 8),
            false,
        );
        expect(NAME, "wrmsr(SPEC_CTRL, 0)", wrmsr(MSR_SPEC_CTRL, 0), true);
    } else {
        gp("rdmsr(SPEC_CTRL) without IBRS", rdmsr(MSR_SPEC_CTRL));
        expect(
            NAME,
            "wrmsr(SPEC_CTRL) without IBRS",
            wrmsr(MSR_SPEC_CTRL, 0),
            false,
        );
    }
    gp("rdmsr(PRED_CMD)", rdmsr(MSR_PRED_CMD));
    expect(NAME, "wrmsr(PRED_CMD, IBPB)", wrmsr(MSR_PRED_CMD, 1), ibpb);
    expect(
        NAME,
        "wrmsr(PRED_CMD, bit 1)",
        wrmsr(MSR_PRED_CMD, 2),
        false,
    );
    gp("rdmsr(FLUSH_CMD)", rdmsr(MSR_FLUSH_CMD));
    expect(
        NAME,
        "wrmsr(FLUSH_CMD, L1D)",
        wrmsr(MSR_FLUSH_CMD, 1),
        l1d_flush,
    );
    expect(
        NAME,
        "rdmsr(ARCH_CAPABILITIES) succeeds",
        rdmsr(MSR_ARCH_CAPABILITIES).is_some(),
        arch_caps,
    );
    expect(
        NAME,
        "wrmsr(ARCH_CAPABILITIES)",
        wrmsr(MSR_ARCH_CAPABILITIES, 0),
        false,
    );
}

fn dump() {
    let [max, ..] = forced(0, 0);
    for leaf in 0..=max.min(0x20) {
        let subs = match leaf {
            4 | 7 | 0xb | 0xd | 0xf | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 => 4,
            _ => 1,
        };
        for sub in 0..subs {
            let f = forced(leaf, sub);
            let n = native(leaf, sub);
            println!(
                "cpu-policy: cpuid {leaf:#x}.{sub}: {:08x} {:08x} {:08x} {:08x} native {:08x} {:08x} {:08x} {:08x}",
                f[0], f[1], f[2], f[3], n[0], n[1], n[2], n[3]
            );
        }
    }
    for leaf in 0x4000_0000..0x4000_0006 {
        let f = forced(leaf, 0);
        println!(
            "cpu-policy: cpuid {leaf:#x}: {:08x} {:08x} {:08x} {:08x}",
            f[0], f[1], f[2], f[3]
        );
    }
    let [emax, ..] = forced(0x8000_0000, 0);
    for leaf in 0x8000_0000..=emax.min(0x8000_0028) {
        let f = forced(leaf, 0);
        let n = native(leaf, 0);
        println!(
            "cpu-policy: cpuid {leaf:#x}: {:08x} {:08x} {:08x} {:08x} native {:08x} {:08x} {:08x} {:08x}",
            f[0], f[1], f[2], f[3], n[0], n[1], n[2], n[3]
        );
    }
    let cr4 = read_cr4();
    println!("cpu-policy: cr4 {cr4:#x}");
    for bit in 0..32 {
        write_cr4(cr4 | (1 << bit));
        let got = read_cr4();
        write_cr4(cr4);
        if got != cr4 {
            println!("cpu-policy: cr4 bit {bit} set -> {got:#x}");
        }
    }
    for &msr in DUMP_MSRS {
        match rdmsr(msr) {
            Some(v) => println!("cpu-policy: rdmsr {msr:#x} = {v:#x}"),
            None => println!("cpu-policy: rdmsr {msr:#x} #GP"),
        }
    }
    // Writes of what was read (or 0), then a read back.
    for &msr in &[
        0x8bu32, 0x1b, 0x179, 0x17a, 0x17b, 0x1a0, 0x277, 0x400, 0x401, 0x402, 0xc0000103,
        0xc0010000, 0xc0010004, 0xc0010015, 0xc0011029, 0x48, 0x140, 0x1d9,
    ] {
        let v = rdmsr(msr).unwrap_or(0);
        let ok = wrmsr(msr, v);
        let ok0 = wrmsr(msr, 0);
        let back = rdmsr(msr);
        let _ = wrmsr(msr, v);
        println!("cpu-policy: wrmsr {msr:#x} same {ok} zero {ok0} -> {back:x?}");
    }
}

/// Whether the host is AMD (or Hygon), from the policy's vendor.
fn is_amd() -> bool {
    let [_, b, ..] = forced(0, 0);
    // "Auth" of "AuthenticAMD", "Hygo" of "HygonGenuine".
    b == 0x6874_7541 || b == 0x6f67_7948
}

fn check_cpuid() {
    let [max, vb, vc, vd] = forced(0, 0);
    check(NAME, max >= 7, format_args!("max basic leaf {max:#x}"));
    let [_, b1, c1, d1] = forced(1, 0);
    check(
        NAME,
        c1 & B1C_HYPERVISOR != 0,
        format_args!("leaf 1 ECX {c1:#x}: no hypervisor bit"),
    );
    check(
        NAME,
        b1 >> 24 == 0,
        format_args!("leaf 1 EBX {b1:#x}: APIC ID not 0"),
    );
    for (what, bit) in [
        ("MONITOR", B1C_MONITOR),
        ("VMX", B1C_VMX),
        ("X2APIC", B1C_X2APIC),
    ] {
        check(
            NAME,
            c1 & bit == 0,
            format_args!("leaf 1 ECX {c1:#x}: {what} shown"),
        );
    }
    for (what, bit) in [("PSE", B1D_PSE), ("PGE", B1D_PGE), ("PSE36", B1D_PSE36)] {
        check(
            NAME,
            d1 & bit == 0,
            format_args!("leaf 1 EDX {d1:#x}: {what} shown"),
        );
    }
    if is_amd() {
        check(
            NAME,
            d1 & B1D_SEP == 0,
            format_args!("leaf 1 EDX {d1:#x}: SEP shown on AMD"),
        );
    }
    // MTRR shows to dom0's kernel exactly when the CPU has it (Xen's leak for the
    // XENPF_*_memtype hypercalls); the native leaf is the CPU's here.
    let [_, _, _, nd1] = native(1, 0);
    expect(NAME, "MTRR in dom0's kernel", d1 & B1D_MTRR, nd1 & B1D_MTRR);
    let [_, b7, c7, _] = forced(7, 0);
    check(
        NAME,
        b7 & B7B_FSGSBASE != 0,
        format_args!("leaf 7 EBX {b7:#x}: no FSGSBASE"),
    );
    for (what, bit) in [("SMEP", B7B_SMEP), ("MPX", B7B_MPX), ("SMAP", B7B_SMAP)] {
        check(
            NAME,
            b7 & bit == 0,
            format_args!("leaf 7 EBX {b7:#x}: {what} shown"),
        );
    }
    for (what, bit) in [
        ("UMIP", B7C_UMIP),
        ("PKU", B7C_PKU),
        ("OSPKE", B7C_OSPKE),
        ("LA57", B7C_LA57),
    ] {
        check(
            NAME,
            c7 & bit == 0,
            format_args!("leaf 7 ECX {c7:#x}: {what} shown"),
        );
    }
    for leaf in [5u32, 6, 8, 0xb, 0xc] {
        expect(
            NAME,
            "an empty basic leaf",
            (leaf, forced(leaf, 0)),
            (leaf, [0; 4]),
        );
    }
    if is_amd() {
        for leaf in [2u32, 3, 4, 9, 0xa, 0x8000_000a] {
            expect(
                NAME,
                "an empty leaf on AMD",
                (leaf, forced(leaf, 0)),
                (leaf, [0; 4]),
            );
        }
    }
    let [x0, xb, xc, xd] = forced(0x4000_0000, 0);
    expect(
        NAME,
        "Xen's signature",
        [xb, xc, xd],
        [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e],
    );
    expect(NAME, "Xen's leaf count", x0, 0x4000_0005);
    expect(
        NAME,
        "Xen's version leaf",
        forced(0x4000_0001, 0)[0],
        0x0004_0011,
    );
    expect(
        NAME,
        "Xen's hypercall-page leaf",
        forced(0x4000_0002, 0),
        [1, 0x4000_0000, 1, 0],
    );
    let [e0, ..] = forced(0x8000_0000, 0);
    check(
        NAME,
        e0 >= 0x8000_0008,
        format_args!("max extended leaf {e0:#x}"),
    );
    let [_, _, ec1, ed1] = forced(0x8000_0001, 0);
    for (what, bit) in [("SVM", E1C_SVM), ("CR8_LEGACY", E1C_CR8_LEGACY)] {
        check(
            NAME,
            ec1 & bit == 0,
            format_args!("leaf 0x80000001 ECX {ec1:#x}: {what} shown"),
        );
    }
    check(
        NAME,
        ed1 & E1D_PAGE1GB == 0,
        format_args!("leaf 0x80000001 EDX {ed1:#x}: PDPE1GB shown"),
    );
    let [ea8, eb8, _, _] = forced(0x8000_0008, 0);
    check(
        NAME,
        eb8 & E8B_WBNOINVD == 0,
        format_args!("leaf 0x80000008 EBX {eb8:#x}: WBNOINVD shown"),
    );
    expect(NAME, "linear address bits", (ea8 >> 8) & 0xff, 48);
    // A native `cpuid` is the CPU's own (unless CPUID faulting is on); the vendor is
    // the same either way.
    let [_, nb, nc, nd] = native(0, 0);
    expect(NAME, "native vendor", [nb, nc, nd], [vb, vc, vd]);
}

fn check_cr4() {
    let cr4 = read_cr4();
    let visible = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    // MCE as the hypervisor runs the CPU: Xen turns it on when the CPU has it.
    let mce = if native(1, 0)[3] & (1 << 7) != 0 {
        CR4_MCE
    } else {
        0
    };
    expect(NAME, "CR4 at start of day", cr4, visible | mce);
    // The guest's own bits stick (OSXSAVE only with XSAVE in the policy) ...
    let xsave = forced(1, 0)[2] & (1 << 26) != 0;
    for (what, bit, sticks) in [
        ("TSD", CR4_TSD, true),
        ("DE", CR4_DE, true),
        ("FSGSBASE", CR4_FSGSBASE, true),
        ("OSXSAVE", CR4_OSXSAVE, xsave),
    ] {
        write_cr4(cr4 | bit);
        let got = read_cr4();
        write_cr4(cr4);
        let want = if sticks { cr4 | bit } else { cr4 };
        expect(NAME, what, got, want);
    }
    // ... everything else is dropped without a fault.
    for (what, bit) in [
        ("PSE", CR4_PSE),
        ("PGE", CR4_PGE),
        ("UMIP", CR4_UMIP),
        ("SMEP", CR4_SMEP),
        ("SMAP", CR4_SMAP),
        ("PAE cleared", 0),
    ] {
        let v = if bit == 0 { cr4 & !CR4_PAE } else { cr4 | bit };
        write_cr4(v);
        expect(NAME, what, read_cr4(), cr4);
    }
    expect(NAME, "CR4 after the writes", read_cr4(), cr4);
}

fn check_msrs() {
    let amd = is_amd();
    let gp = |what: &str, got: Option<u64>| expect(NAME, what, got, None);
    expect(NAME, "rdmsr(PAT)", rdmsr(MSR_PAT), Some(XEN_PAT));
    expect(
        NAME,
        "wrmsr(PAT, Xen's PAT)",
        wrmsr(MSR_PAT, XEN_PAT),
        false,
    );
    expect(
        NAME,
        "rdmsr(APIC_BASE)",
        rdmsr(MSR_APIC_BASE),
        Some(0xfee0_0900),
    );
    expect(
        NAME,
        "wrmsr(APIC_BASE)",
        wrmsr(MSR_APIC_BASE, 0xfee0_0900),
        false,
    );
    check(
        NAME,
        rdmsr(MSR_UCODE_REV).is_some(),
        format_args!("rdmsr(0x8b) #GP"),
    );
    expect(NAME, "wrmsr(0x8b, 0)", wrmsr(MSR_UCODE_REV, 0), !amd);
    expect(NAME, "rdmsr(EFER)", rdmsr(MSR_EFER), Some(0xd01));
    expect(NAME, "wrmsr(EFER, itself)", wrmsr(MSR_EFER, 0xd01), true);
    expect(
        NAME,
        "wrmsr(EFER, without NXE)",
        wrmsr(MSR_EFER, 0x501),
        false,
    );
    expect(
        NAME,
        "rdmsr(PLATFORM_INFO)",
        rdmsr(MSR_PLATFORM_INFO),
        Some(0),
    );
    expect(
        NAME,
        "rdmsr(MISC_FEATURES_ENABLES)",
        rdmsr(MSR_MISC_FEATURES_ENABLES),
        Some(0),
    );
    expect(
        NAME,
        "wrmsr(MISC_FEATURES_ENABLES, faulting)",
        wrmsr(MSR_MISC_FEATURES_ENABLES, 1),
        false,
    );
    expect(
        NAME,
        "wrmsr(MISC_FEATURES_ENABLES, 0)",
        wrmsr(MSR_MISC_FEATURES_ENABLES, 0),
        true,
    );
    if let Some(misc) = rdmsr(MSR_MISC_ENABLE) {
        let forced_on = (1 << 11) | (1 << 12) | (1 << 23);
        expect(
            NAME,
            "MISC_ENABLE's forced bits",
            misc & forced_on,
            forced_on,
        );
        expect(
            NAME,
            "MISC_ENABLE's hidden bits",
            misc & ((1 << 7) | (1 << 18)),
            0,
        );
        expect(
            NAME,
            "wrmsr(MISC_ENABLE, 0) (dropped)",
            wrmsr(MSR_MISC_ENABLE, 0),
            true,
        );
        expect(
            NAME,
            "MISC_ENABLE after a write",
            rdmsr(MSR_MISC_ENABLE),
            Some(misc),
        );
    }
    // The vMCE: two banks, MCi_CTL all ones, STATUS only cleared.
    let cap = rdmsr(MSR_MCG_CAP).unwrap_or(0);
    expect(NAME, "MCG_CAP banks", cap & 0xff, 2);
    expect(NAME, "MCG_CAP on AMD", cap == 2, amd);
    expect(NAME, "rdmsr(MCG_STATUS)", rdmsr(MSR_MCG_STATUS), Some(0));
    expect(NAME, "wrmsr(MCG_STATUS, 0)", wrmsr(MSR_MCG_STATUS, 0), true);
    expect(NAME, "rdmsr(MCG_CTL)", rdmsr(MSR_MCG_CTL), Some(0));
    expect(NAME, "rdmsr(MC0_CTL)", rdmsr(MSR_MC0_CTL), Some(u64::MAX));
    expect(
        NAME,
        "wrmsr(MC0_CTL, 0) (dropped)",
        wrmsr(MSR_MC0_CTL, 0),
        true,
    );
    expect(
        NAME,
        "MC0_CTL after a write",
        rdmsr(MSR_MC0_CTL),
        Some(u64::MAX),
    );
    expect(
        NAME,
        "wrmsr(MC0_STATUS, 1)",
        wrmsr(MSR_MC0_CTL + 1, 1),
        false,
    );
    expect(
        NAME,
        "wrmsr(MC0_STATUS, 0)",
        wrmsr(MSR_MC0_CTL + 1, 0),
        true,
    );
    expect(
        NAME,
        "rdmsr(MC2_CTL), past the banks",
        rdmsr(MSR_MC0_CTL + 8),
        Some(0),
    );
    // TSC_AUX: what rdtscp returns in ECX, when the policy has RDTSCP.
    let rdtscp = forced(0x8000_0001, 0)[3] & (1 << 27) != 0;
    if rdtscp {
        expect(NAME, "wrmsr(TSC_AUX)", wrmsr(MSR_TSC_AUX, 0x42), true);
        expect(NAME, "rdmsr(TSC_AUX)", rdmsr(MSR_TSC_AUX), Some(0x42));
        expect(NAME, "rdtscp's ECX", rdtscp_aux(), 0x42);
        expect(
            NAME,
            "wrmsr(TSC_AUX, 33 bits)",
            wrmsr(MSR_TSC_AUX, 1 << 32),
            false,
        );
        expect(NAME, "wrmsr(TSC_AUX, 0)", wrmsr(MSR_TSC_AUX, 0), true);
    } else {
        gp("rdmsr(TSC_AUX) without RDTSCP", rdmsr(MSR_TSC_AUX));
    }
    if amd {
        expect(NAME, "rdmsr(DE_CFG)", rdmsr(MSR_AMD64_DE_CFG), Some(2));
        expect(
            NAME,
            "wrmsr(DE_CFG) (dropped)",
            wrmsr(MSR_AMD64_DE_CFG, 0),
            true,
        );
        expect(NAME, "rdmsr(HWCR)", rdmsr(MSR_K8_HWCR), Some(0));
        expect(NAME, "rdmsr(EVNTSEL0)", rdmsr(MSR_K7_EVNTSEL0), Some(0));
        expect(
            NAME,
            "wrmsr(EVNTSEL0) (dropped)",
            wrmsr(MSR_K7_EVNTSEL0, 0x43_0076),
            true,
        );
        expect(NAME, "rdmsr(PERFCTR0)", rdmsr(MSR_K7_PERFCTR0), Some(0));
    } else {
        gp("rdmsr(DE_CFG) on Intel", rdmsr(MSR_AMD64_DE_CFG));
    }
    spec_msrs();
    gp("rdmsr(DEBUGCTL)", rdmsr(MSR_DEBUGCTL));
    gp("rdmsr(SYSENTER_CS)", rdmsr(0x174));
    gp("rdmsr(LSTAR)", rdmsr(0xc000_0082));
    gp("rdmsr(MTRRcap)", rdmsr(0xfe));
}

/// Something for `%fs:`/`%gs:` to point at.
static TARGET: [AtomicU64; 2] = [
    AtomicU64::new(0x1111_2222_3333_4444),
    AtomicU64::new(0x5555_6666_7777_8888),
];

fn check_segment_bases() {
    let base = TARGET.as_ptr().addr() as u64;
    let want = TARGET[1].load(Ordering::SeqCst);
    let gs8 = || {
        // SAFETY: only called with the GS base at TARGET; offset 8 is its second word.
        unsafe { cp_gs_load(8) }
    };
    let fs8 = || {
        // SAFETY: as above, for FS.
        unsafe { cp_fs_load(8) }
    };
    set_segment_base(SEGBASE_GS_KERNEL, base);
    expect(NAME, "%gs:8 after set_segment_base", gs8(), want);
    expect(NAME, "rdmsr(GS_BASE)", rdmsr(MSR_GS_BASE), Some(base));
    // Linux's load_percpu_segment: a null %gs (the base goes to 0 on this CPU), then
    // the same base again, which the hypervisor must write even though it "has" it.
    // SAFETY: loads the null selector into %gs; nothing uses GS until it is set again.
    unsafe { cp_null_gs() };
    set_segment_base(SEGBASE_GS_KERNEL, base);
    expect(
        NAME,
        "%gs:8 after a null %gs and set_segment_base",
        gs8(),
        want,
    );
    // SAFETY: as above.
    unsafe { cp_null_gs() };
    expect(NAME, "wrmsr(GS_BASE)", wrmsr(MSR_GS_BASE, base), true);
    expect(
        NAME,
        "%gs:8 after a null %gs and wrmsr(GS_BASE)",
        gs8(),
        want,
    );
    set_segment_base(SEGBASE_FS, base);
    // SAFETY: loads the null selector into %fs; nothing uses FS until it is set again.
    unsafe { cp_null_fs() };
    set_segment_base(SEGBASE_FS, base);
    expect(
        NAME,
        "%fs:8 after a null %fs and set_segment_base",
        fs8(),
        want,
    );
    // SAFETY: as above.
    unsafe { cp_null_fs() };
    expect(NAME, "wrmsr(FS_BASE)", wrmsr(MSR_FS_BASE, base), true);
    expect(
        NAME,
        "%fs:8 after a null %fs and wrmsr(FS_BASE)",
        fs8(),
        want,
    );
    expect(NAME, "rdmsr(FS_BASE)", rdmsr(MSR_FS_BASE), Some(base));
}

fn rdtscp_aux() -> u64 {
    // SAFETY: `rdtscp` is unprivileged (the guest never set CR4.TSD here) and only
    // writes the three registers named.
    unsafe {
        let aux: u32;
        core::arch::asm!("rdtscp", out("eax") _, out("edx") _, out("ecx") aux, options(nomem, nostack));
        u64::from(aux)
    }
}

fn main(si: &'static StartInfo) {
    traps::set_handler(vector::GP, on_gp);
    let cmdline = &si.cmd_line;
    let end = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    if cmdline[..end].windows(4).any(|w| w == b"dump") {
        dump();
    }
    check_cpuid();
    check_cr4();
    check_msrs();
    check_segment_bases();
    expect(
        NAME,
        "#GPs outside the MSR probes",
        GP_COUNT.load(Ordering::SeqCst) > 0,
        true,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
