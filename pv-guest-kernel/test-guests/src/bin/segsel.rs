//! `segsel`: a 64-bit PV guest's data selectors (%ds, %es, %fs, %gs) are its own
//! across context switches, as Xen's `save_segments`/`load_segments` keep them, and
//! `SEGBASE_GS_USER_SEL` loads %gs (issue #20). Checks, in order:
//!
//! 1. `set_segment_base(SEGBASE_GS_USER_SEL, FLAT_RING3_DS32 & ~3)` leaves %gs =
//!    FLAT_RING3_DS32 (RPL forced to 3); a selector that does not load leaves %gs
//!    NULL, and the hypercall still succeeds;
//! 2. `rounds` times: loads a per-`seed` set of selectors (flat data or NULL in each
//!    of the four), yields, and reads them back unchanged. With two copies of this
//!    guest (different seeds) and another domain, every yield switches vCPUs.
//!
//! With `failsafe=1` it checks Xen's failsafe callback instead: it loads %fs from
//! an LDT of its own, drops the LDT (the CPU keeps the loaded selector) and sleeps
//! 1 ms at a time (a blocked vCPU is switched out, whatever the other CPUs do):
//! switched back in, %fs does not load, so the failsafe callback runs, with %fs
//! NULL.
//!
//! Command line: `seed=N` (default 1), `rounds=N` (default 200), `failsafe=1`.
//!
//! Result line: `segsel: PASS`.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuextOp, UVMF_INVLPG};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::xen::{FLAT_RING3_DS32, SEGBASE_GS_USER_SEL};
use pv_runtime::hypercall::invoker;
use pv_runtime::traps::{self, Callback, TrapFrame};
use pv_runtime::{StartInfo, sched};
use pv_runtime::{mm, pt};
use pv_test_guests::{SCRATCH_VA, arg_u64, check, expect, ext_op, fail, pass, uvm};

const NAME: &str = "segsel";

fn read_sels() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
    }
    [ds, es, fs, gs]
}

fn load_sels(s: [u16; 4]) {
    // SAFETY: each is NULL or Xen's flat 32-bit data selector (base 0, DPL 3), which
    // load in ring 3; the runtime uses none of these registers or their bases.
    unsafe {
        asm!("mov ds, {:x}", in(reg) s[0], options(nostack, preserves_flags));
        asm!("mov es, {:x}", in(reg) s[1], options(nostack, preserves_flags));
        asm!("mov fs, {:x}", in(reg) s[2], options(nostack, preserves_flags));
        asm!("mov gs, {:x}", in(reg) s[3], options(nostack, preserves_flags));
    }
}

fn gs_user_sel(sel: u64) {
    // SAFETY: the runtime installed the hypercall page; no guest addresses.
    let mut inv = unsafe { invoker() };
    if let Err(e) = hc::set_segment_base(&mut inv, SEGBASE_GS_USER_SEL, sel) {
        fail(
            NAME,
            format_args!("set_segment_base(GS_USER_SEL, {sel:#x}): {e}"),
        );
    }
}

/// The selectors of round `round` for `seed`: flat or NULL in each register.
fn pattern(seed: u64, round: u64) -> [u16; 4] {
    let bits = seed.wrapping_mul(7).wrapping_add(round) & 0xf;
    let mut s = [0u16; 4];
    for (i, v) in s.iter_mut().enumerate() {
        if bits & (1 << i) != 0 {
            *v = FLAT_RING3_DS32;
        }
    }
    s
}

/// A present, writable data segment with limit 0x1234 (the audit makes it DPL 3).
const DATA_DPL0: u64 = 0x0000_9200_0000_1234;
/// Entry 0 of the LDT, RPL 3.
const LDT_SEL0: u16 = 0x0007;

/// %fs seen by the failsafe callback (`u64::MAX` = not called).
static FAILSAFE_FS: AtomicU64 = AtomicU64::new(u64::MAX);

fn on_failsafe(_frame: &mut TrapFrame) {
    FAILSAFE_FS.store(u64::from(read_sels()[2]), Ordering::SeqCst);
}

fn failsafe() -> ! {
    traps::set_callback_handler(Callback::Failsafe, Some(on_failsafe));
    let Some(frame) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let map = |flags| uvm(SCRATCH_VA, pt::leaf(frame.mfn, flags), UVMF_INVLPG);
    let ro = PteFlags::PRESENT | PteFlags::ACCESSED;
    expect(
        NAME,
        "map writable",
        map(ro | PteFlags::RW | PteFlags::DIRTY),
        Ok(0),
    );
    // SAFETY: the scratch page maps a frame of ours, writable, used by nothing else.
    unsafe { (SCRATCH_VA as *mut [u64; 2]).write_volatile([DATA_DPL0, 0]) };
    expect(NAME, "map read-only", map(ro), Ok(0));
    expect(
        NAME,
        "set_ldt",
        ext_op(MmuextOp::set_ldt(SCRATCH_VA, 2)),
        Ok(0),
    );
    let mut s = read_sels();
    s[2] = LDT_SEL0;
    load_sels(s);
    expect(NAME, "%fs from the LDT", read_sels()[2], LDT_SEL0);
    expect(NAME, "drop the LDT", ext_op(MmuextOp::set_ldt(0, 0)), Ok(0));
    // The CPU keeps the loaded selector until something reloads it. A switch
    // right here (a timer, another vCPU's turn: more likely on a loaded host)
    // reloads it already, as Xen's `load_segments` does; then it must have
    // gone through the failsafe callback below, just earlier.
    let fs = read_sels()[2];
    if fs != LDT_SEL0 {
        check(
            NAME,
            fs == 0 && FAILSAFE_FS.load(Ordering::SeqCst) == 0,
            format_args!(
                "%fs kept by the CPU: got {fs}, and the failsafe callback saw {:#x}",
                FAILSAFE_FS.load(Ordering::SeqCst)
            ),
        );
    }
    // Block rather than yield: with other CPUs free a yield may come straight back
    // without a switch; a blocked vCPU is always switched out.
    for _ in 0..100 {
        if let Err(e) = pv_runtime::time::sleep(1_000_000) {
            fail(NAME, format_args!("sleep: {e}"));
        }
        if FAILSAFE_FS.load(Ordering::SeqCst) != u64::MAX {
            break;
        }
    }
    expect(
        NAME,
        "%fs in the failsafe callback",
        FAILSAFE_FS.load(Ordering::SeqCst),
        0,
    );
    expect(NAME, "%fs after the failsafe callback", read_sels()[2], 0);
    pass(NAME)
}

fn main(_si: &'static StartInfo) {
    if arg_u64(NAME, "failsafe", 0) != 0 {
        failsafe();
    }
    let seed = arg_u64(NAME, "seed", 1);
    let rounds = arg_u64(NAME, "rounds", 200);

    gs_user_sel(u64::from(FLAT_RING3_DS32 & !3));
    expect(
        NAME,
        "%gs after GS_USER_SEL(flat)",
        read_sels()[3],
        FLAT_RING3_DS32,
    );
    gs_user_sel(0x0abc);
    expect(NAME, "%gs after GS_USER_SEL(bad)", read_sels()[3], 0);

    for round in 0..rounds {
        let want = pattern(seed, round);
        load_sels(want);
        sched::yield_now();
        let got = read_sels();
        if got != want {
            fail(
                NAME,
                format_args!(
                    "round {round}: selectors {got:#06x?} after a yield, loaded {want:#06x?}"
                ),
            );
        }
    }
    load_sels([0; 4]);
    pass(NAME)
}

pv_runtime::entry!(main);
