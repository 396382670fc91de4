//! Helpers shared by the test guests: the result line and a trap recorder.
//!
//! Every test guest prints exactly one result line, `<name>: PASS` (then
//! powers off) or `<name>: FAIL <why>` (then crashes the domain). Guests
//! whose verdict is the hypervisor's report (`no-handler`, `shutdown-*`)
//! print `<name>: START` instead and never print PASS themselves.
#![no_std]

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::probe;
use pv_runtime::traps::TrapFrame;
use pv_runtime::{println, sched, shared};

/// Print `<name>: PASS` and power off.
pub fn pass(name: &str) -> ! {
    println!("{name}: PASS");
    sched::poweroff()
}

/// Print `<name>: FAIL <why>` and crash the domain.
pub fn fail(name: &str, why: fmt::Arguments<'_>) -> ! {
    println!("{name}: FAIL {why}");
    sched::crash()
}

/// Print `<name>: START`.
pub fn start(name: &str) {
    println!("{name}: START");
}

/// What [`record`] saw of the last trap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caught {
    /// `TrapFrame::vector`.
    pub vector: u64,
    /// `TrapFrame::error_code`.
    pub error_code: u64,
    /// `TrapFrame::rip` at the trap.
    pub rip: u64,
    /// `TrapFrame::cr2`.
    pub cr2: u64,
    /// `evtchn_upcall_mask` while the handler ran.
    pub mask_in_handler: u64,
    /// Whether the trap stopped at a probe that was skipped.
    pub skipped: bool,
}

const NONE: u64 = u64::MAX;
static VECTOR: AtomicU64 = AtomicU64::new(NONE);
static ERROR: AtomicU64 = AtomicU64::new(0);
static RIP: AtomicU64 = AtomicU64::new(0);
static CR2: AtomicU64 = AtomicU64::new(0);
static MASK: AtomicU64 = AtomicU64::new(0);
static SKIPPED: AtomicU64 = AtomicU64::new(0);
static COUNT: AtomicU64 = AtomicU64::new(0);

/// A trap handler that records the trap and skips a probe instruction (a
/// trap elsewhere is recorded and then panics, since it cannot be skipped).
pub fn record(frame: &mut TrapFrame) {
    VECTOR.store(frame.vector, Ordering::SeqCst);
    ERROR.store(frame.error_code, Ordering::SeqCst);
    RIP.store(frame.rip, Ordering::SeqCst);
    CR2.store(frame.cr2, Ordering::SeqCst);
    MASK.store(u64::from(shared::upcall_mask(0)), Ordering::SeqCst);
    COUNT.fetch_add(1, Ordering::SeqCst);
    let skipped = probe::skip(frame).is_some();
    SKIPPED.store(u64::from(skipped), Ordering::SeqCst);
    if !skipped {
        panic!("unexpected trap: {frame}");
    }
}

/// The trap [`record`] saw last, and how many it saw in total; clears the
/// record.
pub fn take() -> (Option<Caught>, u64) {
    let count = COUNT.swap(0, Ordering::SeqCst);
    let vector = VECTOR.swap(NONE, Ordering::SeqCst);
    if vector == NONE {
        return (None, count);
    }
    let caught = Caught {
        vector,
        error_code: ERROR.load(Ordering::SeqCst),
        rip: RIP.load(Ordering::SeqCst),
        cr2: CR2.load(Ordering::SeqCst),
        mask_in_handler: MASK.load(Ordering::SeqCst),
        skipped: SKIPPED.load(Ordering::SeqCst) != 0,
    };
    (Some(caught), count)
}
