//! The console: `console_io(CONSOLEIO_write)` (ABI digest §6.11), or a domU's
//! console ring (`xencons_interface`) when it has one.
//!
//! Each [`print!`](crate::print) call formats into a line buffer on the stack
//! and writes it in one go, so output from trap handlers never interleaves
//! mid-line with the code they interrupted; one vCPU writes at a time, so
//! lines of several vCPUs do not interleave either.
//!
//! * dom0, and a domU with no console event channel in start_info (a
//!   boot-time domU: nobody serves its ring), write with `console_io`: Xen
//!   lets the hardware domain write, ordinary domains only on debug builds.
//! * A domU built by a toolstack gets a console page and an event channel to
//!   the back end (dom0): output goes into the page's `out` ring, then an
//!   event tells the back end. When the ring is full the writer yields until
//!   the back end made room, for at most [`RING_PATIENCE_NS`]; after that
//!   the rest of the line is dropped (a dead back end must not hang the
//!   guest).

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hypercall_abi::Invoke;
use hypercall_abi::console::ConsoleIo;
use hypercall_abi::hypercall::console_io;
use pv_runtime_core::text::LineWriter;

/// Bytes buffered per hypercall.
const LINE: usize = 256;

/// How long a write waits for room in a full console ring.
pub const RING_PATIENCE_NS: u64 = 2_000_000_000;

/// The console ring: its page's address in the direct map (0 = none) and the
/// event channel to the back end.
static RING_VA: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);

/// Switches to the console ring start_info offers, if it offers one (a domU
/// with a console event channel whose page is one of its frames).
pub(crate) fn init(si: &hypercall_abi::xen::start_info::StartInfo) {
    use hypercall_abi::xen::start_info::SifFlags;
    let initial = SifFlags::from_bits_retain(si.flags).contains(SifFlags::INITDOMAIN);
    let port = si.console.evtchn.0;
    if initial || port == 0 || si.console.mfn.0 == 0 {
        return;
    }
    if let Some(pfn) = crate::mm::mfn_to_pfn(si.console.mfn) {
        RING_PORT.store(port, Ordering::Relaxed);
        RING_VA.store(crate::mm::direct_va(pfn), Ordering::Release);
    }
}

/// Whether output goes to a console ring.
pub fn uses_ring() -> bool {
    RING_VA.load(Ordering::Acquire) != 0
}

/// Writes `bytes` into the console ring at `va`, notifying the back end on
/// `port` after each piece; waits (yielding) while the ring is full.
fn ring_write<I: Invoke>(inv: &mut I, va: u64, port: u32, bytes: &[u8]) {
    use hypercall_abi::evtchn::{EvtchnOp, EvtchnSend};
    use hypercall_abi::io::console::ConsoleFront;
    let Ok(addr) = usize::try_from(va) else {
        return;
    };
    let words: *const AtomicU32 = core::ptr::with_exposed_provenance(addr);
    // SAFETY: `va` is the console page's address in the direct map, which the
    // builder maps for the domain's lifetime; the back end shares it, so it is
    // only ever accessed through atomics.
    let page = unsafe { core::slice::from_raw_parts(words, hypercall_abi::io::PAGE_WORDS) };
    let Ok(mut front) = ConsoleFront::new(page) else {
        return;
    };
    let send = EvtchnSend {
        port: hypercall_abi::EvtchnPort(port),
    };
    let mut rest = bytes;
    let mut deadline = None;
    while !rest.is_empty() {
        let n = front.output.write(rest).unwrap_or(0);
        rest = rest.get(n..).unwrap_or(&[]);
        if n > 0 {
            let _ = hypercall_abi::hypercall::event_channel_op(
                inv,
                EvtchnOp::Send.nr(),
                crate::hypercall::handle(&send).cast(),
            );
            deadline = None;
            continue;
        }
        let now = crate::time::system_time_ns();
        match deadline {
            None => deadline = Some(now + RING_PATIENCE_NS),
            Some(d) if now >= d => return,
            Some(_) => {}
        }
        let _ = hypercall_abi::hypercall::sched_op(
            inv,
            hypercall_abi::sched::SchedOp::Yield.nr(),
            hypercall_abi::GuestPtr::NULL,
        );
    }
}

/// Write `bytes` through `inv`, ignoring errors (there is nowhere to report
/// them).
pub(crate) fn write_with<I: Invoke>(inv: &mut I, bytes: &[u8]) {
    let va = RING_VA.load(Ordering::Acquire);
    if va != 0 {
        ring_write(inv, va, RING_PORT.load(Ordering::Relaxed), bytes);
        return;
    }
    for chunk in bytes.chunks(LINE) {
        let len = u32::try_from(chunk.len()).unwrap_or(0);
        let _ = console_io(
            inv,
            ConsoleIo::Write.nr(),
            len,
            crate::hypercall::handle_slice(chunk),
        );
    }
}

/// The vCPU writing to the console, plus one (0: nobody).
static WRITER: AtomicU32 = AtomicU32::new(0);

/// Write raw bytes to the console. One writer at a time across vCPUs (with
/// events masked, so an upcall on the same vCPU cannot wait for itself); a
/// write from inside a write on the same vCPU (a panic in the console
/// path) goes through unlocked.
pub fn write_bytes(bytes: &[u8]) {
    let me = crate::smp::current().0 + 1;
    let was = crate::evtchn::disable_events();
    let mut owned = false;
    loop {
        match WRITER.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => {
                owned = true;
                break;
            }
            Err(w) if w == me => break,
            Err(_) => core::hint::spin_loop(),
        }
    }
    write_with(&mut crate::hypercall::hc(), bytes);
    if owned {
        WRITER.store(0, Ordering::Release);
    }
    crate::evtchn::restore_events(was);
}

/// Write a string to the console.
pub fn write_str(s: &str) {
    write_bytes(s.as_bytes());
}

/// Format `args` to the console (what [`print!`](crate::print) calls).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut w = LineWriter::<LINE, _>::new(write_bytes);
    let _ = w.write_fmt(args);
    let _ = w.finish();
}
