//! `debugregs`: the debug registers as Xen 4.17 gives them to a PV kernel.
//!
//! In order: the reset values (DR0-DR3 0, DR6 0xffff0ff0, DR7 0x400); what
//! `set_debugreg` refuses (a hypervisor or non-canonical address in DR0:
//! -EPERM; DR7.GD: -EPERM; bits above 31 of DR6/DR7: -EINVAL; an I/O
//! breakpoint without CR4.DE: -EPERM; DR8: -ENODEV) and the bits it forces;
//! DR4 as an alias of DR6; `mov %dr7` emulated both ways, `mov` to DR8 #UD and
//! DR7.GD through `mov` #GP(0); DR3 at the last byte of the lower half. Then a 4-byte write breakpoint
//! on a variable in DR0/DR7: a read does not trigger it, a write does, and the
//! #DB arrives after the write (RIP past it, the value stored) with DR6.B0;
//! the hypervisor writing that variable for a hypercall (`XENVER_get_features`
//! into it) gives the guest no #DB and still works. With DR7 cleared, a write
//! no longer traps. A single step (TF set by `popf`) traps after the next
//! instruction with DR6.BS added to the B0 the guest left in DR6 (Xen 4.17
//! accumulates); a single step over a hypercall's `syscall` traps right after
//! it, with the hypercall's result in RAX, and stepping on from there runs the
//! next instruction before trapping again.
//!
//! Result line: `debugregs: PASS` or `debugregs: FAIL <why>`.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use pv_runtime::StartInfo;
use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::types::GuestPtr;
use pv_runtime::hypercall::invoker;
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_test_guests::{check, expect, fail, pass};

const NAME: &str = "debugregs";

const DR6_DEFAULT: u64 = 0xFFFF_0FF0;
const DR7_DEFAULT: u64 = 0x400;
const DR6_B0: u64 = 1 << 0;
const DR6_BS: u64 = 1 << 14;
const TF: u64 = 1 << 8;
/// DR7: L0, R/W0 = 01 (data writes), LEN0 = 11 (4 bytes).
const DR7_WRITE4_DR0: u64 = 0x000D_0001;
/// `xen_version` and its sub-ops.
const XEN_VERSION: u64 = 17;
const XENVER_VERSION: u32 = 0;
const XENVER_GET_FEATURES: u32 = 6;

global_asm!(
    ".pushsection .text.debugregs, \"ax\", @progbits",
    // One 4-byte store to (%rdi).
    ".globl dr_store, dr_store_after",
    "dr_store:",
    "    movl %esi, (%rdi)",
    "dr_store_after:",
    "    ret",
    // One 4-byte load from (%rdi).
    ".globl dr_load",
    "dr_load:",
    "    movl (%rdi), %eax",
    "    ret",
    // TF on through popf, then one instruction.
    ".globl dr_step, dr_step_after",
    "dr_step:",
    "    pushfq",
    "    orq $0x100, (%rsp)",
    "    popfq",
    "    nop",
    "dr_step_after:",
    "    nop",
    "    ret",
    // TF on, then xen_version(XENVER_version) by a direct syscall.
    ".globl dr_step_syscall, dr_step_syscall_after",
    "dr_step_syscall:",
    "    movl ${xen_version}, %eax",
    "    movl ${xenver_version}, %edi",
    "    xorl %esi, %esi",
    "    pushfq",
    "    orq $0x100, (%rsp)",
    "    popfq",
    "    syscall",
    "dr_step_syscall_after:",
    "    nop",
    "dr_step_syscall_after_nop:",
    "    ret",
    // mov %rbx,%dr8 (REX.R): no such register.
    ".globl dr_mov_dr8, dr_mov_dr8_after",
    "dr_mov_dr8:",
    "    .byte 0x44, 0x0f, 0x23, 0xc3",
    "dr_mov_dr8_after:",
    "    ret",
    // mov %rdi,%dr7.
    ".globl dr_mov_dr7, dr_mov_dr7_after",
    "dr_mov_dr7:",
    "    .byte 0x0f, 0x23, 0xff",
    "dr_mov_dr7_after:",
    "    ret",
    ".popsection",
    xen_version = const XEN_VERSION,
    xenver_version = const XENVER_VERSION,
    options(att_syntax),
);

unsafe extern "C" {
    fn dr_store(addr: u64, value: u32);
    fn dr_store_after();
    fn dr_load(addr: u64) -> u32;
    fn dr_step();
    fn dr_step_after();
    fn dr_step_syscall() -> u64;
    fn dr_step_syscall_after();
    fn dr_step_syscall_after_nop();
    fn dr_mov_dr8();
    fn dr_mov_dr8_after();
    fn dr_mov_dr7(value: u64);
    fn dr_mov_dr7_after();
}

/// The last #UD or #GP: (vector, error code, rip).
static FAULT: [AtomicU64; 3] = [const { AtomicU64::new(u64::MAX) }; 3];

/// Records a #UD or #GP raised by one of the `mov %drN` above and resumes after it.
fn on_fault(frame: &mut TrapFrame) {
    FAULT[0].store(frame.vector, Ordering::SeqCst);
    FAULT[1].store(frame.error_code, Ordering::SeqCst);
    FAULT[2].store(frame.rip, Ordering::SeqCst);
    frame.rip = if frame.rip == addr(dr_mov_dr8) {
        addr(dr_mov_dr8_after)
    } else if frame.rip == dr_mov_dr7 as *const () as usize as u64 {
        addr(dr_mov_dr7_after)
    } else {
        panic!("unexpected fault: {frame}")
    };
}

/// (vector, error code, rip) of the last fault, then forgets it.
fn take_fault() -> (u64, u64, u64) {
    (
        FAULT[0].swap(u64::MAX, Ordering::SeqCst),
        FAULT[1].swap(u64::MAX, Ordering::SeqCst),
        FAULT[2].swap(u64::MAX, Ordering::SeqCst),
    )
}

/// What the breakpoints watch: two 4-byte words, 8-byte aligned (also a
/// `xen_feature_info` for `XENVER_get_features`: `submap_idx`, `submap`).
#[repr(C, align(8))]
struct Watched([AtomicU32; 2]);

static WATCHED: Watched = Watched([AtomicU32::new(0), AtomicU32::new(0)]);

fn watched(i: usize) -> u64 {
    WATCHED.0[i].as_ptr() as usize as u64
}

/// What the #DB handler saw.
static DB_COUNT: AtomicU64 = AtomicU64::new(0);
static DB_RIP: AtomicU64 = AtomicU64::new(0);
static DB_RFLAGS: AtomicU64 = AtomicU64::new(0);
static DB_RAX: AtomicU64 = AtomicU64::new(0);
/// The first #DB's RIP since the last `take_db`.
static DB_FIRST_RIP: AtomicU64 = AtomicU64::new(0);
/// How many more #DBs keep TF (go on single-stepping).
static KEEP_STEPPING: AtomicU64 = AtomicU64::new(0);

/// Records the #DB and stops single-stepping (clears TF in the frame `iret`
/// restores), unless asked to keep going.
fn on_debug(frame: &mut TrapFrame) {
    if DB_COUNT.fetch_add(1, Ordering::SeqCst) == 0 {
        DB_FIRST_RIP.store(frame.rip, Ordering::SeqCst);
    }
    DB_RIP.store(frame.rip, Ordering::SeqCst);
    DB_RFLAGS.store(frame.rflags, Ordering::SeqCst);
    DB_RAX.store(frame.rax, Ordering::SeqCst);
    let keep = KEEP_STEPPING.load(Ordering::SeqCst);
    if keep > 0 {
        KEEP_STEPPING.store(keep - 1, Ordering::SeqCst);
    } else {
        frame.rflags &= !TF;
    }
}

/// (count, rip, rflags, rax) of the #DBs since the last call.
fn take_db() -> (u64, u64, u64, u64) {
    DB_FIRST_RIP.store(0, Ordering::SeqCst);
    (
        DB_COUNT.swap(0, Ordering::SeqCst),
        DB_RIP.swap(0, Ordering::SeqCst),
        DB_RFLAGS.swap(0, Ordering::SeqCst),
        DB_RAX.swap(0, Ordering::SeqCst),
    )
}

fn set(reg: i32, value: u64) -> Result<u64, Errno> {
    // SAFETY: the runtime installed the hypercall page; the call passes no
    // guest addresses.
    let mut inv = unsafe { invoker() };
    hc::set_debugreg(&mut inv, reg, value)
}

fn get(reg: i32) -> Result<u64, Errno> {
    // SAFETY: as in `set`.
    let mut inv = unsafe { invoker() };
    hc::get_debugreg(&mut inv, reg)
}

fn set_ok(reg: i32, value: u64) {
    if let Err(e) = set(reg, value) {
        fail(NAME, format_args!("set_debugreg({reg}, {value:#x}): {e:?}"));
    }
}

fn get_is(what: &str, reg: i32, want: u64) {
    expect(NAME, what, get(reg), Ok(want));
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as usize as u64
}

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::DB, on_debug);

    // Reset values.
    for reg in 0..4 {
        get_is("DR0-3 after boot", reg, 0);
    }
    get_is("DR6 after boot", 6, DR6_DEFAULT);
    get_is("DR7 after boot", 7, DR7_DEFAULT);

    // Refusals, each leaving the register as it was.
    let refused: [(i32, u64, Errno, &str); 8] = [
        (
            0,
            0xFFFF_8000_0000_0000,
            Errno::EPERM,
            "DR0 = the M2P (hypervisor)",
        ),
        (
            1,
            0xFFFF_82D0_8000_0000,
            Errno::EPERM,
            "DR1 = hypervisor text",
        ),
        (2, 0x0000_8000_0000_0000, Errno::EPERM, "DR2 non-canonical"),
        (7, 1 << 13, Errno::EPERM, "DR7.GD"),
        (
            7,
            (2 << 16) | 1,
            Errno::EPERM,
            "DR7 I/O breakpoint without CR4.DE",
        ),
        (7, 1 << 32, Errno::EINVAL, "DR7 bit 32"),
        (6, 1 << 40, Errno::EINVAL, "DR6 bit 40"),
        (8, 0, Errno::ENODEV, "DR8"),
    ];
    for (reg, value, want, what) in refused {
        expect(NAME, what, set(reg, value), Err(want));
    }
    expect(NAME, "get_debugreg(8)", get(8), Err(Errno::ENODEV));
    for reg in 0..4 {
        get_is("DR0-3 after refusals", reg, 0);
    }
    get_is("DR6 after refusals", 6, DR6_DEFAULT);
    get_is("DR7 after refusals", 7, DR7_DEFAULT);

    // Forced bits, and DR4 as DR6 (CR4.DE is clear).
    set_ok(7, 0xD800); // bits 11, 12, 14, 15 read as zero
    get_is("DR7 reserved bits", 7, DR7_DEFAULT);
    set_ok(6, 0x1001); // bit 12 reads as zero, 4-11 and 16-31 as one
    get_is("DR6 reserved bits", 6, 0xFFFF_0FF1);
    set_ok(4, 0x2);
    get_is("DR6 through DR4", 6, 0xFFFF_0FF2);
    get_is("DR4", 4, 0xFFFF_0FF2);
    set_ok(6, DR6_DEFAULT);
    let dr7: u64;
    // SAFETY: `mov %dr7` is emulated for a PV kernel (or #GPs, which the
    // runtime reports); it changes only RAX.
    unsafe { core::arch::asm!("mov {}, dr7", out(reg) dr7, options(nomem, nostack)) };
    expect(NAME, "mov %dr7 (emulated)", dr7, DR7_DEFAULT);
    traps::set_handler(vector::UD, on_fault);
    traps::set_handler(vector::GP, on_fault);
    // SAFETY: faults (#UD), and the handler resumes at the `ret` after it.
    unsafe { dr_mov_dr8() };
    expect(
        NAME,
        "mov %rbx,%dr8: (vector, error code, rip)",
        take_fault(),
        (u64::from(vector::UD), 0, addr(dr_mov_dr8)),
    );
    // SAFETY: faults (#GP(0): DR7.GD), and the handler resumes after it.
    unsafe { dr_mov_dr7(1 << 13) };
    expect(
        NAME,
        "mov %rdi,%dr7 with GD: (vector, error code, rip)",
        take_fault(),
        (
            u64::from(vector::GP),
            0,
            dr_mov_dr7 as *const () as usize as u64,
        ),
    );
    // SAFETY: an emulated write of DR7 (nothing enabled), then `ret`.
    unsafe { dr_mov_dr7(0xD800) };
    expect(NAME, "mov %rdi,%dr7 emulated", take_fault().0, u64::MAX);
    get_is("DR7 after mov %rdi,%dr7", 7, DR7_DEFAULT);
    traps::clear_handler(vector::UD);
    traps::clear_handler(vector::GP);
    // Only the start of a breakpoint address is checked (Xen's __addr_ok).
    set_ok(3, 0x0000_7FFF_FFFF_FFFF);
    get_is("DR3 at the top of the lower half", 3, 0x0000_7FFF_FFFF_FFFF);
    set_ok(3, 0);

    // A 4-byte write breakpoint on WATCHED[0].
    set_ok(0, watched(0));
    set_ok(7, DR7_WRITE4_DR0);
    get_is("DR0 read back", 0, watched(0));
    get_is("DR7 read back", 7, DR7_WRITE4_DR0 | DR7_DEFAULT);
    take_db();
    // SAFETY: a 4-byte load from a static.
    let v = unsafe { dr_load(watched(0)) };
    expect(
        NAME,
        "#DBs on a read of a write breakpoint",
        (take_db().0, v),
        (0, 0),
    );
    // SAFETY: a 4-byte store into WATCHED[0], an atomic the compiler does not
    // assume anything about.
    unsafe { dr_store(watched(0), 0x1234_5678) };
    let (n, rip, _, _) = take_db();
    check(
        NAME,
        n == 1 && rip == addr(dr_store_after),
        format_args!(
            "write breakpoint: {n} #DB(s), rip {rip:#x}, expected 1 at {:#x} (after the store)",
            addr(dr_store_after)
        ),
    );
    expect(
        NAME,
        "the store happened",
        WATCHED.0[0].load(Ordering::SeqCst),
        0x1234_5678,
    );
    get_is("DR6 after the write breakpoint", 6, DR6_DEFAULT | DR6_B0);

    // The hypervisor writes watched memory for a hypercall: no #DB for the guest.
    set_ok(6, DR6_DEFAULT);
    WATCHED.0[1].store(0, Ordering::SeqCst);
    set_ok(0, watched(1));
    // SAFETY: as above (`submap_idx` 0; not watched now).
    unsafe { dr_store(watched(0), 0) };
    expect(NAME, "#DBs on an unwatched word", take_db().0, 0);
    {
        // SAFETY: as in `set`; the hypervisor writes `WATCHED` (a static of
        // atomics) as a `xen_feature_info`.
        let mut inv = unsafe { invoker() };
        let arg = GuestPtr::<()>::new(watched(0));
        let r = hc::xen_version(&mut inv, XENVER_GET_FEATURES, arg);
        expect(NAME, "get_features into watched memory", r, Ok(0));
    }
    check(
        NAME,
        WATCHED.0[1].load(Ordering::SeqCst) != 0,
        format_args!("get_features wrote no feature bits"),
    );
    expect(NAME, "#DBs from the hypervisor's write", take_db().0, 0);
    get_is("DR6 after the hypervisor's write", 6, DR6_DEFAULT);

    // Disabled: no trap.
    set_ok(0, watched(0));
    set_ok(7, DR7_DEFAULT);
    // SAFETY: as above.
    unsafe { dr_store(watched(0), 1) };
    expect(NAME, "#DBs with DR7 cleared", take_db().0, 0);

    // Single step, DR6 not reset since a B0 left there.
    set_ok(6, DR6_DEFAULT | DR6_B0);
    // SAFETY: sets TF, executes a nop, and returns; the #DB handler clears TF.
    unsafe { dr_step() };
    let (n, rip, rflags, _) = take_db();
    check(
        NAME,
        n == 1 && rip == addr(dr_step_after) && rflags & TF != 0,
        format_args!(
            "single step: {n} #DB(s), rip {rip:#x} rflags {rflags:#x}, expected 1 at {:#x} with TF",
            addr(dr_step_after)
        ),
    );
    get_is("DR6 after a single step", 6, DR6_DEFAULT | DR6_B0 | DR6_BS);

    // Single step over a hypercall, then one more instruction: the `iret` back
    // from the first #DB (whose RCX and R11 are the SYSCALL's RIP and RFLAGS)
    // must let the `nop` run before the next trap.
    set_ok(6, DR6_DEFAULT);
    KEEP_STEPPING.store(1, Ordering::SeqCst);
    // SAFETY: sets TF and issues xen_version(XENVER_version) by `syscall`
    // (RCX and R11 clobbered, as the C ABI allows); the second #DB clears TF.
    let version = unsafe { dr_step_syscall() };
    let first = DB_FIRST_RIP.swap(0, Ordering::SeqCst);
    let (n, rip, _, rax) = take_db();
    check(
        NAME,
        n == 2
            && first == addr(dr_step_syscall_after)
            && rip == addr(dr_step_syscall_after_nop)
            && rax == version,
        format_args!(
            "step over syscall: {n} #DB(s) at {first:#x} .. {rip:#x}, rax {rax:#x}; expected 2 at {:#x} and {:#x} with rax {version:#x}",
            addr(dr_step_syscall_after),
            addr(dr_step_syscall_after_nop)
        ),
    );
    check(
        NAME,
        version >> 16 == 4,
        format_args!("xen_version returned {version:#x}"),
    );
    get_is(
        "DR6 after stepping over a hypercall",
        6,
        DR6_DEFAULT | DR6_BS,
    );
    set_ok(6, DR6_DEFAULT);
    pass(NAME)
}

pv_runtime::entry!(main);
