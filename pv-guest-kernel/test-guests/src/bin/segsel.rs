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
//! Command line: `seed=N` (default 1), `rounds=N` (default 200).
//!
//! Result line: `segsel: PASS`.
#![no_std]
#![no_main]

use core::arch::asm;

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::xen::{FLAT_RING3_DS32, SEGBASE_GS_USER_SEL};
use pv_runtime::hypercall::invoker;
use pv_runtime::{StartInfo, sched};
use pv_test_guests::{arg_u64, expect, fail, pass};

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

fn main(_si: &'static StartInfo) {
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
