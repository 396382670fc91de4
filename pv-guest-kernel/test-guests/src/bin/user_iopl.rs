//! `user-iopl`: guest *user* code and the virtual IOPL. Xen's #GP path
//! emulates from either guest mode; `iopl_ok()` puts user mode at CPL 3, so
//! `cli`, `sti`, `in` and `out` from user code work only with virtual IOPL 3
//! (and `in`/`out` then still only on the domain's ports), while privileged
//! instructions (`hlt`, CR moves) stay #GP(0) from user mode whatever the
//! IOPL. (`wbinvd` would be one too, but QEMU's TCG runs it at CPL 3 without
//! a fault, so it cannot be checked here; the host tests cover it.) The IOPL is set both ways Xen offers:
//!
//! 1. `PHYSDEVOP_set_iopl` 0, 1, 3;
//! 2. `VMASST_TYPE_architectural_iopl` with the IOPL in the `rflags` of the
//!    `iret` that enters user mode (0, then 3).
//!
//! The port I/O that must work reads QEMU's fw_cfg signature ("QEMU" from
//! selector 0 at ports 0x510/0x511, reachable by dom0 on both hypervisors),
//! so an emulation that did not reach the device cannot pass; the write-only
//! case uses port 0x80.
#![no_std]
#![no_main]

use core::arch::global_asm;

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::vm_assist::{VmAssistCmd, VmAssistType};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::hypercall::invoker;
use pv_runtime::mm;
use pv_runtime::physdev::set_iopl;
use pv_runtime::user::{self, UserEntry, UserExit, UserSpace};
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{check, expect, fail, pass};

const NAME: &str = "user-iopl";
const CODE_VA: u64 = 0x0000_0040_0000_0000;
const STACK_VA: u64 = 0x0000_0050_0000_0000;
const STACK_PAGES: usize = 1;
const STACK_TOP: u64 = STACK_VA + STACK_PAGES as u64 * 4096;
/// fw_cfg selector and data ports (QEMU `pc`).
const FW_CFG_SEL: u64 = 0x510;
const FW_CFG_DATA: u64 = 0x511;
/// "QEMU", the fw_cfg signature, as four bytes read in order.
const SIGNATURE: u64 = u32::from_le_bytes(*b"QEMU") as u64;
const RFLAGS_IOPL: u64 = 3 << 12;

// User code. Each entry point starts with the instruction under test (so a
// #GP there reports the entry's address) and ends with `syscall`.
global_asm!(
    ".pushsection .rodata.user_code, \"a\"",
    ".globl uiopl_code, uiopl_code_end",
    ".globl uiopl_cli, uiopl_sti, uiopl_in, uiopl_out, uiopl_fwcfg",
    ".globl uiopl_hlt, uiopl_rdcr0, uiopl_wrcr4",
    "uiopl_code:",
    "uiopl_cli:",
    "    cli",
    "    syscall",
    "uiopl_sti:",
    "    sti",
    "    syscall",
    // in (%dx),%al with rdx = the fw_cfg data port
    "uiopl_in:",
    "    in (%dx), %al",
    "    syscall",
    // out %al,(%dx) with rdx = 0x80
    "uiopl_out:",
    "    out %al, (%dx)",
    "    syscall",
    // cli; sti; fw_cfg selector 0 (rdx = 0x510), then four data bytes into
    // eax, first byte lowest.
    "uiopl_fwcfg:",
    "    cli",
    "    sti",
    "    xor %eax, %eax",
    "    out %ax, (%dx)",
    "    inc %edx",
    "    xor %ebx, %ebx",
    "    mov $4, %ecx",
    "1:  in (%dx), %al",
    "    shrd $8, %eax, %ebx",
    "    dec %ecx",
    "    jnz 1b",
    "    mov %ebx, %eax",
    "    syscall",
    "uiopl_hlt:",
    "    hlt",
    "    syscall",
    "uiopl_rdcr0:",
    "    mov %cr0, %rax",
    "    syscall",
    // rax = 0: a CR4 write a guest kernel may make (nothing is taken).
    "uiopl_wrcr4:",
    "    mov %rax, %cr4",
    "    syscall",
    "uiopl_code_end:",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    static uiopl_code: u8;
    static uiopl_code_end: u8;
    static uiopl_cli: u8;
    static uiopl_sti: u8;
    static uiopl_in: u8;
    static uiopl_out: u8;
    static uiopl_fwcfg: u8;
    static uiopl_hlt: u8;
    static uiopl_rdcr0: u8;
    static uiopl_wrcr4: u8;
}

/// An entry point of the user code.
#[derive(Clone, Copy, Debug)]
enum Op {
    Cli,
    Sti,
    In,
    Out,
    FwCfg,
    Hlt,
    RdCr0,
    WrCr4,
}

impl Op {
    /// Its offset in the user code.
    fn offset(self) -> u64 {
        let at = match self {
            Op::Cli => &raw const uiopl_cli,
            Op::Sti => &raw const uiopl_sti,
            Op::In => &raw const uiopl_in,
            Op::Out => &raw const uiopl_out,
            Op::FwCfg => &raw const uiopl_fwcfg,
            Op::Hlt => &raw const uiopl_hlt,
            Op::RdCr0 => &raw const uiopl_rdcr0,
            Op::WrCr4 => &raw const uiopl_wrcr4,
        };
        (at.addr() - (&raw const uiopl_code).addr()) as u64
    }

    /// Its user virtual address.
    fn va(self) -> u64 {
        CODE_VA + self.offset()
    }

    /// `rdx` it needs.
    fn rdx(self) -> u64 {
        match self {
            Op::In => FW_CFG_DATA,
            Op::FwCfg => FW_CFG_SEL,
            _ => 0x80,
        }
    }
}

fn code() -> &'static [u8] {
    let start = &raw const uiopl_code;
    let end = &raw const uiopl_code_end;
    let len = end.addr() - start.addr();
    // SAFETY: the two symbols delimit the bytes of the `.rodata` blob above,
    // which live as long as the image.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// Runs `op` in user mode with `iopl` in the `iret` frame.
fn run(space: &UserSpace, op: Op, iopl: u8, what: &str) -> UserExit {
    let mut entry = UserEntry::new(op.va(), STACK_TOP);
    entry.rdx = op.rdx();
    entry.iopl = iopl;
    match user::run(space, &entry) {
        Ok(x) => x,
        Err(e) => fail(NAME, format_args!("{what}: entering user mode: {e}")),
    }
}

/// `op` must come back as #GP(0) at its first instruction.
fn expect_gp(space: &UserSpace, op: Op, iopl: u8, what: &str) {
    match run(space, op, iopl, what) {
        UserExit::Exception(r) => {
            check(
                NAME,
                r.vector == 13 && r.error_code == 0 && r.rip == op.va(),
                format_args!(
                    "{what}: {op:?} expected #GP(0) at {:#x}, got vector {} error {:#x} at {:#x}",
                    op.va(),
                    r.vector,
                    r.error_code,
                    r.rip
                ),
            );
        }
        other => fail(
            NAME,
            format_args!("{what}: {op:?} expected #GP(0), user mode ended with {other}"),
        ),
    }
}

/// `op` must run to its `syscall`; returns `rax` then and the `rflags` of
/// the bounce frame.
fn expect_emulated(space: &UserSpace, op: Op, iopl: u8, what: &str) -> (u64, u64) {
    match run(space, op, iopl, what) {
        UserExit::Syscall(r) => (r.rax, r.rflags),
        other => fail(
            NAME,
            format_args!("{what}: {op:?} expected to be emulated, user mode ended with {other}"),
        ),
    }
}

fn iopl(level: u32) {
    if let Err(e) = set_iopl(level) {
        fail(NAME, format_args!("PHYSDEVOP_set_iopl({level}): {e}"));
    }
}

fn architectural_iopl(cmd: VmAssistCmd) {
    // SAFETY: the runtime installed the hypercall page; the call passes no
    // guest addresses.
    let mut inv = unsafe { invoker() };
    let r = hc::vm_assist(&mut inv, cmd.nr(), VmAssistType::ArchitecturalIopl as u32);
    if let Err(e) = r {
        fail(
            NAME,
            format_args!("vm_assist({cmd:?}, architectural_iopl): {e}"),
        );
    }
}

const PORT_OPS: [Op; 4] = [Op::Cli, Op::Sti, Op::In, Op::Out];
const PRIVILEGED_OPS: [Op; 3] = [Op::Hlt, Op::RdCr0, Op::WrCr4];

fn main(_si: &'static StartInfo) {
    let space = match UserSpace::new() {
        Ok(s) => s,
        Err(e) => fail(NAME, format_args!("user space: {e}")),
    };
    if let Err(e) = space.load(CODE_VA, code(), PteFlags::empty()) {
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

    // 1. PHYSDEVOP_set_iopl. IOPL 0 and 1 are below user mode's CPL 3.
    for level in [0, 1] {
        iopl(level);
        for op in PORT_OPS {
            expect_gp(&space, op, 0, "set_iopl below 3");
        }
    }
    iopl(3);
    for op in [Op::Cli, Op::Sti, Op::Out] {
        expect_emulated(&space, op, 0, "set_iopl(3)");
    }
    let (sig, _) = expect_emulated(&space, Op::FwCfg, 0, "set_iopl(3)");
    expect(NAME, "fw_cfg signature read by user code", sig, SIGNATURE);
    for op in PRIVILEGED_OPS {
        expect_gp(&space, op, 0, "set_iopl(3), privileged");
    }

    // 2. architectural_iopl: the IOPL comes from the iret into user mode.
    iopl(0);
    architectural_iopl(VmAssistCmd::Enable);
    for op in PORT_OPS {
        expect_gp(&space, op, 0, "architectural_iopl, iret IOPL 0");
    }
    for op in PORT_OPS {
        expect_gp(&space, op, 2, "architectural_iopl, iret IOPL 2");
    }
    for op in [Op::Cli, Op::Sti, Op::Out] {
        expect_emulated(&space, op, 3, "architectural_iopl, iret IOPL 3");
    }
    let (sig, rflags) = expect_emulated(&space, Op::FwCfg, 3, "architectural_iopl, iret IOPL 3");
    expect(NAME, "fw_cfg signature read by user code", sig, SIGNATURE);
    expect(
        NAME,
        "IOPL in the bounce frame's rflags (architectural_iopl)",
        rflags & RFLAGS_IOPL,
        RFLAGS_IOPL,
    );
    for op in PRIVILEGED_OPS {
        expect_gp(&space, op, 3, "architectural_iopl, iret IOPL 3, privileged");
    }
    architectural_iopl(VmAssistCmd::Disable);
    iopl(0);

    if let Err(e) = space.destroy() {
        fail(NAME, format_args!("destroying the user space: {e}"));
    }
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
