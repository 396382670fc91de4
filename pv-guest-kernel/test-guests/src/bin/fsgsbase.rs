//! `fsgsbase`: a 64-bit PV guest turns on CR4.FSGSBASE in its *virtual*
//! CR4 and then uses `rd/wr{fs,gs}base` itself (Xen's `pv_fixup_guest_cr4`,
//! `pv_make_cr4`). Checks, in order:
//!
//! 1. the CPUID policy (forced-emulation `cpuid`) shows FSGSBASE
//!    (leaf 7 EBX bit 0); without it the test fails rather than pass
//!    vacuously (QEMU `-cpu max` has it);
//! 2. the virtual CR4 at start of day: FSGSBASE clear, PAE, OSFXSR and
//!    OSXMMEXCPT set, nothing outside the guest-controllable and
//!    guest-visible masks; `rdfsbase` and `wrgsbase` raise #UD;
//! 3. `mov %cr4` with FSGSBASE (and PGE, which is not the guest's: dropped
//!    without a fault) reads back with FSGSBASE and nothing else changed;
//! 4. `wrfsbase`/`rdfsbase`, `wrgsbase`/`rdgsbase` round-trip, and an
//!    `%fs:`-relative load sees the new base;
//! 5. the hypervisor sees the bases the guest set: after `sched_op(yield)`;
//!    in `rdmsr` of FS_BASE / GS_BASE; across a trip to user mode and back
//!    (the kernel GS base must survive the mode switches); after
//!    `set_segment_base(SEGBASE_GS_USER)`, which changes only the user base
//!    (read from user mode with `rdgsbase`), and `set_segment_base(SEGBASE_FS)`;
//! 6. clearing CR4.FSGSBASE: `rdfsbase` is #UD again and the FS base the
//!    guest last set stays (`rdmsr`).
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::xen::{PteFlags, SEGBASE_FS, SEGBASE_GS_USER};
use pv_runtime::hypercall::invoker;
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::user::{self, UserEntry, UserExit, UserSpace};
use pv_runtime::{Config, StartInfo, mm, sched};
use pv_test_guests::{check, expect, fail, pass};

const NAME: &str = "fsgsbase";

const CR4_PAE: u64 = 1 << 5;
const CR4_PGE: u64 = 1 << 7;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
/// Xen's `PV_CR4_GUEST_MASK` | `PV_CR4_GUEST_VISIBLE_MASK`.
const CR4_PV_BITS: u64 = (1 << 2)
    | (1 << 3)
    | CR4_FSGSBASE
    | (1 << 18)
    | CR4_PAE
    | (1 << 6)
    | CR4_OSFXSR
    | CR4_OSXMMEXCPT;

const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_SHADOW_GS_BASE: u32 = 0xC000_0102;

const USER_CODE_VA: u64 = 0x0000_0040_0000_0000;
const USER_STACK_VA: u64 = 0x0000_0050_0000_0000;

/// What a skipped #UD leaves in `rax`.
const UD_MARK: u64 = 0x5544_5544_5544_5544;

global_asm!(
    ".pushsection .text.fsgsbase_probes, \"ax\", @progbits",
    ".globl fsgs_rdfs, fsgs_rdfs_end, fsgs_wrgs, fsgs_wrgs_end",
    ".globl fsgs_wrfs, fsgs_rdgs, fsgs_fs_load",
    ".globl fsgs_rdcr4, fsgs_wrcr4, fsgs_rdmsr, fsgs_cpuid",
    "fsgs_rdfs:",
    "    rdfsbase %rax",
    "fsgs_rdfs_end:",
    "    ret",
    "fsgs_wrgs:",
    "    mov %rdi, %rax",
    "fsgs_wrgs_insn:",
    "    wrgsbase %rdi",
    "fsgs_wrgs_end:",
    "    ret",
    "fsgs_wrfs:",
    "    wrfsbase %rdi",
    "    ret",
    "fsgs_rdgs:",
    "    rdgsbase %rax",
    "    ret",
    "fsgs_fs_load:",
    "    mov %fs:(%rdi), %rax",
    "    ret",
    "fsgs_rdcr4:",
    "    mov %cr4, %rax",
    "    ret",
    "fsgs_wrcr4:",
    "    mov %rdi, %cr4",
    "    ret",
    "fsgs_rdmsr:",
    "    mov %edi, %ecx",
    "    rdmsr",
    "    shl $32, %rdx",
    "    or %rdx, %rax",
    "    ret",
    // fsgs_cpuid(leaf, subleaf, out: *mut [u32; 4]) with the forced-emulation
    // prefix, so the hypervisor's policy answers.
    "fsgs_cpuid:",
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
    ".popsection",
    // User code: rax = user GS base, rdx = FS base, then syscall.
    ".pushsection .rodata.user_code, \"a\"",
    ".globl fsgs_user, fsgs_user_end",
    "fsgs_user:",
    "    rdgsbase %rax",
    "    rdfsbase %rdx",
    "    syscall",
    "    ud2",
    "fsgs_user_end:",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    fn fsgs_rdfs() -> u64;
    static fsgs_rdfs_end: u8;
    fn fsgs_wrgs(v: u64) -> u64;
    static fsgs_wrgs_insn: u8;
    static fsgs_wrgs_end: u8;
    fn fsgs_wrfs(v: u64);
    fn fsgs_rdgs() -> u64;
    fn fsgs_fs_load(offset: u64) -> u64;
    fn fsgs_rdcr4() -> u64;
    fn fsgs_wrcr4(v: u64);
    fn fsgs_rdmsr(msr: u32) -> u64;
    fn fsgs_cpuid(leaf: u32, subleaf: u32, out: *mut [u32; 4]);
    static fsgs_user: u8;
    static fsgs_user_end: u8;
}

static UD_COUNT: AtomicU64 = AtomicU64::new(0);

/// #UD at one of the two probe sites: skip the instruction, leave
/// [`UD_MARK`] in `rax`, count it. Anywhere else: fail.
fn on_ud(frame: &mut TrapFrame) {
    let rdfs = fsgs_rdfs as *const () as usize as u64;
    let wrgs = (&raw const fsgs_wrgs_insn).addr() as u64;
    if frame.rip == rdfs {
        frame.rip = (&raw const fsgs_rdfs_end).addr() as u64;
    } else if frame.rip == wrgs {
        frame.rip = (&raw const fsgs_wrgs_end).addr() as u64;
    } else {
        fail(NAME, format_args!("unexpected #UD at {:#x}", frame.rip));
    }
    frame.rax = UD_MARK;
    UD_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let mut out = [0u32; 4];
    // SAFETY: the helper writes 16 bytes to `out`, a live local, and
    // preserves rbx itself.
    unsafe { fsgs_cpuid(leaf, subleaf, &raw mut out) };
    out
}

fn rdfsbase() -> u64 {
    // SAFETY: one instruction (or the #UD handler skipping it), then `ret`.
    unsafe { fsgs_rdfs() }
}

fn rdgsbase() -> u64 {
    // SAFETY: as above; only called with CR4.FSGSBASE set.
    unsafe { fsgs_rdgs() }
}

fn wrfsbase(v: u64) {
    // SAFETY: the guest does not use FS itself; only called with
    // CR4.FSGSBASE set.
    unsafe { fsgs_wrfs(v) }
}

/// `wrgsbase`; returns [`UD_MARK`] if it raised #UD.
fn wrgsbase(v: u64) -> u64 {
    // SAFETY: the runtime does not use GS; one instruction (or the #UD
    // handler skipping it), then `ret`.
    unsafe { fsgs_wrgs(v) }
}

fn read_cr4() -> u64 {
    // SAFETY: emulated by the hypervisor; writes only rax.
    unsafe { fsgs_rdcr4() }
}

fn write_cr4(v: u64) {
    // SAFETY: emulated by the hypervisor, which keeps only the bits a PV
    // guest controls.
    unsafe { fsgs_wrcr4(v) }
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: emulated by the hypervisor for these MSRs.
    unsafe { fsgs_rdmsr(msr) }
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

/// Something for `%fs:` to point at.
static FS_TARGET: [AtomicU64; 4] = [
    AtomicU64::new(0x1111_0000_0000_1111),
    AtomicU64::new(0xF5F5_1234_5678_F5F5),
    AtomicU64::new(0x3333_0000_0000_3333),
    AtomicU64::new(0x4444_0000_0000_4444),
];

/// Runs the user code; returns (user `rdgsbase`, user `rdfsbase`).
fn user_bases(space: &UserSpace, what: &str) -> (u64, u64) {
    let entry = UserEntry::new(USER_CODE_VA, USER_STACK_VA + 4096);
    match user::run(space, &entry) {
        Ok(UserExit::Syscall(r)) => (r.rax, r.rdx),
        Ok(other) => fail(NAME, format_args!("{what}: user mode ended with {other}")),
        Err(e) => fail(NAME, format_args!("{what}: entering user mode: {e}")),
    }
}

fn user_space() -> UserSpace {
    let space = match UserSpace::new() {
        Ok(s) => s,
        Err(e) => fail(NAME, format_args!("user space: {e}")),
    };
    let start = &raw const fsgs_user;
    let len = (&raw const fsgs_user_end).addr() - start.addr();
    // SAFETY: the two symbols delimit the bytes of the `.rodata` blob above.
    let bytes = unsafe { core::slice::from_raw_parts(start, len) };
    if let Err(e) = space.load(USER_CODE_VA, bytes, PteFlags::empty()) {
        fail(NAME, format_args!("loading the user code: {e}"));
    }
    let Some(stack) = mm::alloc_frame() else {
        fail(NAME, format_args!("no frame for the user stack"))
    };
    if let Err(e) = space.map(USER_STACK_VA, &[stack.mfn], PteFlags::RW | PteFlags::NX) {
        fail(NAME, format_args!("mapping the user stack: {e}"));
    }
    space
}

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::UD, on_ud);

    // 1. The policy.
    let [max_leaf, ..] = cpuid(0, 0);
    check(
        NAME,
        max_leaf >= 7,
        format_args!("CPUID max basic leaf {max_leaf:#x}: no leaf 7"),
    );
    let [_, ebx7, _, _] = cpuid(7, 0);
    check(
        NAME,
        ebx7 & 1 != 0,
        format_args!("CPUID.7.EBX {ebx7:#x}: FSGSBASE not in the PV policy"),
    );

    // 2. Start of day.
    let cr4 = read_cr4();
    check(
        NAME,
        cr4 & CR4_FSGSBASE == 0,
        format_args!("CR4 {cr4:#x}: FSGSBASE set at start of day"),
    );
    let want = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    check(
        NAME,
        cr4 & want == want && cr4 & !CR4_PV_BITS == 0,
        format_args!("CR4 {cr4:#x}: expected PAE, OSFXSR, OSXMMEXCPT and only PV bits"),
    );
    expect(NAME, "rdfsbase without CR4.FSGSBASE", rdfsbase(), UD_MARK);
    expect(
        NAME,
        "wrgsbase without CR4.FSGSBASE",
        wrgsbase(0x1234),
        UD_MARK,
    );
    expect(NAME, "#UDs so far", UD_COUNT.load(Ordering::SeqCst), 2);

    // 3. Turn it on (PGE is not the guest's: dropped without a fault).
    write_cr4(cr4 | CR4_FSGSBASE | CR4_PGE);
    expect(
        NAME,
        "CR4 after setting FSGSBASE",
        read_cr4(),
        cr4 | CR4_FSGSBASE,
    );

    // 4. Round trips.
    let fs = FS_TARGET.as_ptr().addr() as u64;
    let gs = 0x0000_7654_3210_0000u64;
    wrfsbase(fs);
    expect(NAME, "rdfsbase after wrfsbase", rdfsbase(), fs);
    expect(NAME, "wrgsbase", wrgsbase(gs), gs);
    expect(NAME, "rdgsbase after wrgsbase", rdgsbase(), gs);
    // SAFETY: FS now points at FS_TARGET; offset 8 is its second word.
    let seen = unsafe { fsgs_fs_load(8) };
    expect(
        NAME,
        "%fs:8 after wrfsbase",
        seen,
        FS_TARGET[1].load(Ordering::SeqCst),
    );

    // 5. The hypervisor keeps what the guest set.
    sched::yield_now();
    expect(NAME, "rdfsbase after sched_op(yield)", rdfsbase(), fs);
    expect(NAME, "rdgsbase after sched_op(yield)", rdgsbase(), gs);
    expect(NAME, "rdmsr(FS_BASE)", rdmsr(MSR_FS_BASE), fs);
    expect(NAME, "rdmsr(GS_BASE)", rdmsr(MSR_GS_BASE), gs);
    let space = user_space();
    let (ugs, ufs) = user_bases(&space, "first trip");
    expect(NAME, "user rdfsbase", ufs, fs);
    expect(NAME, "user rdgsbase (user GS base)", ugs, 0);
    expect(NAME, "kernel rdgsbase after user mode", rdgsbase(), gs);
    expect(NAME, "rdfsbase after user mode", rdfsbase(), fs);
    let user_gs = 0x0000_1357_9BDF_0000u64;
    set_segment_base(SEGBASE_GS_USER, user_gs);
    expect(
        NAME,
        "kernel rdgsbase after set_segment_base(GS_USER)",
        rdgsbase(),
        gs,
    );
    expect(
        NAME,
        "rdmsr(SHADOW_GS_BASE)",
        rdmsr(MSR_SHADOW_GS_BASE),
        user_gs,
    );
    let (ugs, _) = user_bases(&space, "second trip");
    expect(
        NAME,
        "user rdgsbase after set_segment_base(GS_USER)",
        ugs,
        user_gs,
    );
    expect(
        NAME,
        "kernel rdgsbase after the second trip",
        rdgsbase(),
        gs,
    );
    let fs2 = fs + 16;
    set_segment_base(SEGBASE_FS, fs2);
    expect(NAME, "rdfsbase after set_segment_base(FS)", rdfsbase(), fs2);
    if let Err(e) = space.destroy() {
        fail(NAME, format_args!("destroying the user space: {e}"));
    }
    wrfsbase(fs);

    // 6. Off again.
    write_cr4(cr4);
    expect(NAME, "CR4 after clearing FSGSBASE", read_cr4(), cr4);
    expect(NAME, "rdfsbase after clearing", rdfsbase(), UD_MARK);
    expect(
        NAME,
        "rdmsr(FS_BASE) after clearing",
        rdmsr(MSR_FS_BASE),
        fs,
    );
    expect(
        NAME,
        "rdmsr(GS_BASE) after clearing",
        rdmsr(MSR_GS_BASE),
        gs,
    );
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
