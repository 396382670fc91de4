//! Early console: `console_io(CONSOLEIO_write)` (ABI digest §6.11).
//!
//! Output goes to the hypervisor's console. Each [`print!`](crate::print)
//! call formats into a line buffer on the stack and issues one hypercall per
//! line, so output from trap handlers never interleaves mid-line with the
//! code they interrupted, and no lock is needed. Xen lets the hardware
//! domain write; ordinary domains only on debug builds of Xen.

use core::fmt::{self, Write as _};

use hypercall_abi::Invoke;
use hypercall_abi::console::ConsoleIo;
use hypercall_abi::hypercall::console_io;
use pv_runtime_core::text::LineWriter;

/// Bytes buffered per hypercall.
const LINE: usize = 256;

/// Write `bytes` through `inv`, ignoring errors (there is nowhere to report
/// them).
pub(crate) fn write_with<I: Invoke>(inv: &mut I, bytes: &[u8]) {
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

/// Write raw bytes to the console.
pub fn write_bytes(bytes: &[u8]) {
    write_with(&mut crate::hypercall::hc(), bytes);
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
