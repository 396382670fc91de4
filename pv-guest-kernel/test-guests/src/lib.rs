//! Helpers shared by the test guests: the result line and a trap recorder.
//!
//! Every test guest prints exactly one result line, `<name>: PASS` (then
//! powers off) or `<name>: FAIL <why>` (then crashes the domain). Guests
//! whose verdict is the hypervisor's report (`no-handler`, `shutdown-*`)
//! print `<name>: START` instead and never print PASS themselves.
#![no_std]

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuUpdate, MmuextCmd, MmuextOp};
use pv_runtime::abi::types::{DomId, GuestPtr, MachineAddr, Mfn};
use pv_runtime::hypercall::{handle, handle_mut, handle_slice, invoker};
use pv_runtime::probe;
use pv_runtime::traps::TrapFrame;
use pv_runtime::{mm, println, sched, shared, start_info, text};

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

/// Fail `name` unless `got == want`.
pub fn expect<T: PartialEq + fmt::Debug>(name: &str, what: &str, got: T, want: T) {
    if got != want {
        fail(name, format_args!("{what}: got {got:?}, expected {want:?}"));
    }
}

/// Fail `name` with `why` unless `ok`.
pub fn check(name: &str, ok: bool, why: fmt::Arguments<'_>) {
    if !ok {
        fail(name, why);
    }
}

/// A scratch address whose L1 entry exists from boot on: the second page of
/// the bootstrap region (pseudo-physical frame 1, padding below the image).
pub const SCRATCH_VA: u64 = 0x1000;

/// `DOMID_SELF` as the `foreigndom` argument.
pub fn self_dom() -> u32 {
    u32::from(DomId::SELF.0)
}

/// `update_va_mapping(va, val, flags)`.
pub fn uvm(va: u64, val: u64, flags: u64) -> Result<u64, Errno> {
    // SAFETY: the runtime installed the hypercall page; the call passes no
    // guest addresses.
    let mut inv = unsafe { invoker() };
    hc::update_va_mapping(&mut inv, va, val, flags)
}

/// One `mmu_update` request `(ptr, val)`: the result and `*pdone`.
pub fn mmu1(ptr: u64, val: u64) -> (Result<u64, Errno>, u32) {
    let req = [MmuUpdate { ptr, val }];
    let mut done = u32::MAX;
    // SAFETY: the request and `done` are live locals the hypervisor reads
    // and writes.
    let mut inv = unsafe { invoker() };
    let r = hc::mmu_update(
        &mut inv,
        handle_slice(&req),
        1,
        handle_mut(&mut done),
        self_dom(),
    );
    (r, done)
}

/// One `mmuext_op` `cmd` on frame `mfn`.
pub fn ext1(cmd: MmuextCmd, mfn: Mfn) -> Result<u64, Errno> {
    ext_op(MmuextOp::on_frame(cmd, mfn))
}

/// One `mmuext_op`.
pub fn ext_op(op: MmuextOp) -> Result<u64, Errno> {
    // SAFETY: the operation is a live local the hypervisor reads; the
    // caller chose what it does to the domain's own state.
    let mut inv = unsafe { invoker() };
    hc::mmuext_op(&mut inv, handle(&op), 1, GuestPtr::NULL, self_dom())
}

/// The machine address of the L1 entry that maps `va` (fails `name` if
/// there is none).
pub fn l1e(name: &str, va: u64) -> MachineAddr {
    match mm::entry_address(va, 1) {
        Some(ma) => ma,
        None => fail(name, format_args!("no L1 table for {va:#x}")),
    }
}

/// Read the 8 bytes at `va`, recording a fault instead (see [`record`]).
pub fn read(va: u64) -> u64 {
    probe::read_u64(va)
}

/// The current value of the L1 entry for `va` (through the page tables).
pub fn l1_value(va: u64) -> u64 {
    mm::translate(va).map_or(0, |p| p.0)
}

/// The value of `key=value` on the guest's command line
/// (`start_info.cmd_line`).
pub fn arg(key: &str) -> Option<&'static [u8]> {
    text::cmdline_value(&start_info().cmd_line, key)
}

/// The decimal value of `key=` on the command line, or `default` if it is
/// absent; fails `name` if it is not a number.
pub fn arg_u64(name: &str, key: &str, default: u64) -> u64 {
    match arg(key) {
        None => default,
        Some(v) => match text::parse_u64(v) {
            Some(n) => n,
            None => fail(
                name,
                format_args!("command line {key}=\"{}\" is not a number", text::Ascii(v)),
            ),
        },
    }
}

/// Fail `name` with `what: <error>` if `r` is an error, else unwrap it.
pub fn ok<T>(name: &str, what: &str, r: Result<T, Errno>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => fail(name, format_args!("{what}: {e:?}")),
    }
}

/// Handle `port` with `handler`, failing `name` if the table refuses.
pub fn on_port(
    name: &str,
    port: pv_runtime::abi::EvtchnPort,
    handler: pv_runtime::evtchn::Handler,
) {
    if let Err(e) = pv_runtime::evtchn::set_handler(port, handler) {
        fail(name, format_args!("set_handler({}): {e}", port.0));
    }
}
