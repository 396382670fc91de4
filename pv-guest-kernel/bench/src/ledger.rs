//! `ledger` mode: the hot-path metrics as sections for the instruction ledger
//! (`xtask ledger`, docs/bench.md).
//!
//! Each section runs one operation [`OPS`] times between two markers, the no-op
//! instructions the ledger's QEMU plugin (`scripts/ledger-plugin`) watches for: it
//! counts every instruction executed in between, per address. Each section runs
//! [`REPEATS`] times; the harness keeps the smallest count, since an interrupt that
//! lands in a section (the hypervisor's timer) only ever adds. Nothing is timed and
//! nothing is printed inside a section; the section list is printed afterwards, one
//! `ledger-section` line each.

use core::arch::asm;
use core::hint::black_box;
use core::sync::atomic::{AtomicU32, Ordering};

use pv_runtime::abi::hypercall::{Hypercall, call, mmu_update, multicall, sched_op};
use pv_runtime::abi::mmu::{MmuCmd, MmuUpdate, UVMF_NONE};
use pv_runtime::abi::sched::SchedOp;
use pv_runtime::abi::version::XenVer;
use pv_runtime::abi::xen::MulticallEntry;
use pv_runtime::abi::xlhv::FLOOR_HYPERCALL;
use pv_runtime::abi::{GuestPtr, Invoke};
use pv_runtime::traps::{self, vector};
use pv_runtime::{println, probe, time};

use crate::guest::{SELF_FD, Scratch, SelfIpi, data_pte, hc, on_ud};

/// Operations per section.
pub const OPS: usize = 200;
/// Runs of each section.
pub const REPEATS: usize = 5;
/// Tag of the lines that name the sections.
pub const SECTION_TAG: &str = "ledger-section";

/// Operations that failed (a section with failures is not what it claims to be).
static FAILED: AtomicU32 = AtomicU32::new(0);

/// Runs `$body` (true when the operation succeeded) [`OPS`] times between the start
/// and end markers of section `$id` (`nopl 0x4C44xxxx(%rax)`: bits 0-14 the id, bit
/// 15 the end). The markers are `asm!` blocks that may touch memory, so the compiler
/// keeps the loop between them.
macro_rules! section {
    ($id:expr, $body:expr) => {{
        // SAFETY: a multi-byte `nop`: no effect on registers, flags or memory.
        unsafe { asm!("nop dword ptr [rax + {m}]", m = const 0x4C44_0000u32 | $id, options(nostack, preserves_flags)) };
        for _ in 0..OPS {
            if !$body {
                FAILED.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: as above.
        unsafe { asm!("nop dword ptr [rax + {m}]", m = const 0x4C44_8000u32 | $id, options(nostack, preserves_flags)) };
    }};
}

/// Prints the line that names section `id`.
fn name(id: u32, metric: &str) {
    println!("{SECTION_TAG} id={id} metric={metric} ops={OPS} repeats={REPEATS}");
}

/// Runs every section, then names them. A section whose setup fails is left out
/// (its line says why).
pub fn run() {
    // The periodic tick would only add interrupts to the sections.
    let _ = time::stop_periodic_timer();
    let mut h = hc();
    let nr = u64::from(Hypercall::XenVersion.nr());
    let cmd = u64::from(XenVer::Version.nr());
    let floor_ok = h.invoke(FLOOR_HYPERCALL, [0; 5]) == 0;
    let old_ud = traps::set_handler(vector::UD, on_ud);
    for _ in 0..REPEATS {
        section!(1, black_box(true));
        if floor_ok {
            section!(2, black_box(h.invoke(FLOOR_HYPERCALL, [0; 5])) == 0);
        }
        section!(3, black_box(h.invoke(nr, [cmd, 0, 0, 0, 0])) >> 63 == 0);
        section!(4, {
            probe::ud2();
            true
        });
        section!(
            5,
            black_box(sched_op(&mut h, SchedOp::Yield.nr(), GuestPtr::NULL)).is_ok()
        );
    }
    match old_ud {
        Some(f) => {
            traps::set_handler(vector::UD, f);
        }
        None => {
            traps::clear_handler(vector::UD);
        }
    }
    let page_tables = page_tables(&mut h);
    let events = SelfIpi::bind().map(|mut ipi| {
        for _ in 0..REPEATS {
            section!(8, black_box(ipi.round_trip()).is_ok());
        }
        ipi.close();
    });
    name(1, "loop");
    if floor_ok {
        name(2, "floor");
    } else {
        println!("{SECTION_TAG} metric=floor unsupported (no floor call)");
    }
    name(3, "null_hypercall");
    name(4, "exception_bounce");
    name(5, "sched_yield");
    match page_tables {
        Ok(()) => {
            name(6, "mmu_update_pte_b1");
            name(7, "multicall_uvm_pte_b1");
        }
        Err(why) => println!("{SECTION_TAG} metric=mmu_update_pte_b1 unsupported ({why})"),
    }
    match events {
        Ok(()) => name(8, "evtchn_notify_self"),
        Err(f) => println!("{SECTION_TAG} metric=evtchn_notify_self unsupported ({f:?})"),
    }
    println!("ledger-done failed={}", FAILED.load(Ordering::Relaxed));
}

/// The batch-1 page-table sections, as `mmu_update_pte_b1` and `multicall_uvm_pte_b1`
/// measure them: each update swaps one L1 entry to the other data frame.
fn page_tables(h: &mut pv_runtime::abi::guest::HypercallPage) -> Result<(), &'static str> {
    let sc = Scratch::new(h).map_err(|_| "page-table setup")?;
    let vals = [data_pte(sc.data[0]), data_pte(sc.data[1])];
    sc.set_all(h, 1, vals[0]).map_err(|_| "mmu_update")?;
    let reqs = [0, 1].map(|k| {
        [MmuUpdate::new(
            MmuCmd::NormalPtUpdate,
            sc.l1_entry(0),
            vals[k],
        )]
    });
    let mut next = 1;
    for _ in 0..REPEATS {
        section!(6, {
            let batch = pv_runtime::hypercall::handle_slice(&reqs[next]);
            next ^= 1;
            black_box(mmu_update(h, batch, 1, GuestPtr::NULL, SELF_FD)).is_ok()
        });
    }
    let mut entries = [[MulticallEntry::default()]; 2];
    for (k, e) in entries.iter_mut().enumerate() {
        e[0] = MulticallEntry::new(call::update_va_mapping(sc.va, vals[k], UVMF_NONE));
    }
    for _ in 0..REPEATS {
        section!(7, {
            let list = GuestPtr::new(entries[next].as_mut_ptr().expose_provenance() as u64);
            next ^= 1;
            black_box(multicall(h, list, 1)).is_ok()
        });
    }
    sc.teardown(h).map_err(|_| "page-table teardown")
}
