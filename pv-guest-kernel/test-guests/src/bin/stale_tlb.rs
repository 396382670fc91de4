//! `stale-tlb`: a writable translation that another vCPU may still hold dies before
//! its frame becomes a page table (Xen flushes every CPU that may cache the frame
//! before `_get_page_type` changes its type).
//!
//! vCPU 1 keeps storing through a writable mapping of a fresh frame while vCPU 0
//! removes that mapping with `mmu_update` (no flush asked, as a guest may) and pins
//! the frame as an L1 table. The stores write non-present entries, so the pin
//! validates. From the moment the pin returns the frame must not change (a store that
//! lands there went through a stale translation into a validated page table), and
//! vCPU 1's next store must fault. `rounds=` rounds (default 20), each on a fresh
//! frame. Needs two vCPUs (dom0 with `dom0_max_vcpus=2` or more, or `vcpus = 2`).
//!
//! Result line: `stale-tlb: PASS rounds=<n> concurrent=<rounds where vCPU 1 stored
//! between the unmap and the pin> stores=<total>`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use pv_runtime::abi::VcpuId;
use pv_runtime::abi::mmu::MmuextCmd;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::{StartInfo, mm, println, probe, sched, smp, time};
use pv_test_guests::{SCRATCH_VA, arg_u64, expect, ext1, fail, l1e, mmu1};

const NAME: &str = "stale-tlb";
/// Where vCPU 1 stores.
const W: u64 = SCRATCH_VA;

/// vCPU 1 stores while this is set.
static GO: AtomicBool = AtomicBool::new(false);
/// vCPU 1 returns once this is set.
static STOP: AtomicBool = AtomicBool::new(false);
/// Stores that did not fault, in all.
static STORES: AtomicU64 = AtomicU64::new(0);
/// Stores at `W` that faulted (and were skipped).
static FAULTS: AtomicU64 = AtomicU64::new(0);

/// #PF: a store of vCPU 1 at `W` is counted and skipped; anything else is a bug.
fn on_pf(frame: &mut TrapFrame) {
    if frame.cr2 & !0xFFF == W && probe::skip(frame).is_some() {
        FAULTS.fetch_add(1, Ordering::SeqCst);
        GO.store(false, Ordering::SeqCst);
        return;
    }
    panic!("unexpected #PF: {frame}");
}

/// vCPU 1: stores non-present L1 entries (bit 0 clear) at `W` while `GO` is set.
fn storer(_v: VcpuId) {
    while !STOP.load(Ordering::SeqCst) {
        if !GO.load(Ordering::SeqCst) {
            core::hint::spin_loop();
            continue;
        }
        let n = STORES.load(Ordering::Relaxed).wrapping_add(1);
        // SAFETY: `W` maps a frame of this guest that holds no Rust object (or
        // nothing, and the store faults).
        unsafe { probe::write_u64(W + 8 * (n % 512), n << 1) };
        if GO.load(Ordering::SeqCst) {
            STORES.store(n, Ordering::Relaxed);
        }
    }
}

/// Spins until `cond` holds or `ms` milliseconds passed; whether it held.
fn wait_for(ms: u64, cond: impl Fn() -> bool) -> bool {
    let until = time::system_time_ns() + ms * 1_000_000;
    while !cond() {
        if time::system_time_ns() > until {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

fn main(_si: &'static StartInfo) {
    let rounds = arg_u64(NAME, "rounds", 20);
    if smp::nr_vcpus() < 2 {
        fail(
            NAME,
            format_args!("needs 2 vCPUs, found {}", smp::nr_vcpus()),
        );
    }
    if let Err(e) = mm::take_over() {
        fail(NAME, format_args!("take_over: {e:?}"));
    }
    traps::set_handler(vector::PF, on_pf);
    if let Err(e) = smp::start(VcpuId(1), &storer) {
        fail(NAME, format_args!("starting vCPU 1: {e:?}"));
    }
    let mut concurrent = 0;
    for round in 0..rounds {
        let Some(f) = mm::alloc_frame() else {
            fail(NAME, format_args!("no free frame"))
        };
        if mm::with_writable(f, |p| p.fill(0)).is_err() {
            fail(NAME, format_args!("cannot clear the frame"));
        }
        if let Err(e) = mm::map(W, &[f.mfn], PteFlags::RW) {
            fail(NAME, format_args!("map: {e:?}"));
        }
        let faults = FAULTS.load(Ordering::SeqCst);
        let start = STORES.load(Ordering::Relaxed);
        GO.store(true, Ordering::SeqCst);
        // vCPU 1 stores through its translation for a while.
        if !wait_for(2000, || STORES.load(Ordering::Relaxed) > start + 200) {
            fail(NAME, format_args!("round {round}: vCPU 1 does not store"));
        }
        // The mapping goes, with no flush asked; the frame becomes an L1 table.
        let before = STORES.load(Ordering::Relaxed);
        expect(NAME, "unmap", mmu1(l1e(NAME, W).0, 0), (Ok(0), 1));
        expect(NAME, "pin as L1", ext1(MmuextCmd::PinL1Table, f.mfn), Ok(0));
        if STORES.load(Ordering::Relaxed) > before {
            concurrent += 1;
        }
        // From here the table must not change; vCPU 1's next store faults.
        let snap: [u64; 512] =
            core::array::from_fn(|i| pv_test_guests::read(f.va() + 8 * i as u64));
        let faulted = wait_for(3000, || FAULTS.load(Ordering::SeqCst) > faults);
        for (i, &s) in snap.iter().enumerate() {
            let now = pv_test_guests::read(f.va() + 8 * i as u64);
            if now != s {
                fail(
                    NAME,
                    format_args!(
                        "round {round}: entry {i} of the pinned L1 changed from {s:#x} to \
                         {now:#x}: a stale writable translation reached a page table"
                    ),
                );
            }
        }
        if !faulted {
            fail(
                NAME,
                format_args!("round {round}: vCPU 1's stores never faulted"),
            );
        }
        GO.store(false, Ordering::SeqCst);
        expect(NAME, "unpin", ext1(MmuextCmd::UnpinTable, f.mfn), Ok(0));
        if mm::free_frame(f).is_err() {
            fail(NAME, format_args!("frame refused back"));
        }
    }
    STOP.store(true, Ordering::SeqCst);
    println!(
        "{NAME}: PASS rounds={rounds} concurrent={concurrent} stores={}",
        STORES.load(Ordering::Relaxed)
    );
    sched::poweroff()
}

pv_runtime::entry!(main);
