//! `dom0ctl`: the host's control CLI for xen-like-hv.
//!
//! It talks to the control agent in dom0 over the unix socket that QEMU makes of
//! dom0's COM2, with the protocol in `control_proto`. The library holds
//! everything but `main`, so `scripts/run` can share [`default_socket_path`] and
//! tests can reach the parts.

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
mod console;
pub mod elf;
pub mod error;
pub mod output;
pub mod paths;

pub use error::{Error, exit};
pub use paths::{SOCKET_ENV, default_socket_path, socket_path_from};
