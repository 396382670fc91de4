//! Parsing what the boot loader hands over: command line, memory map, modules.
//!
//! Everything here takes untrusted input (a boot loader's tables, a command line typed
//! by a user, a module's string) and never panics on it: bad input is clipped and
//! ignored, and the parsers report each problem as a bounded warning value that the
//! caller logs.

pub mod cmdline;
pub mod memmap;
pub mod module;
pub mod text;
