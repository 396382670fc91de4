//! The hypervisor console: `console_io` (#18) (`xen.h`).
//!
//! `console_io(cmd, count, buffer)`. Not to be confused with the guest
//! console *ring* between a guest and its console back end
//! ([`crate::io::console`]).

subops! {
    /// `console_io` commands (`CONSOLEIO_*`).
    pub enum ConsoleIo: "CONSOLEIO_" {
        /// Write `count` bytes of `buffer` to the hypervisor console;
        /// returns 0.
        0 => Write(u8) write since 0x0000_0000;
        /// Read up to `count` bytes into `buffer`; returns the number read.
        1 => Read(u8) read since 0x0000_0000;
    }
}
