//! `cmdline`: prints its command line (`start_info.cmd_line` up to the first
//! NUL) between brackets, with its length, so a test can check that the guest
//! got exactly the string it was given. Bytes other than printable ASCII and
//! space show as `?`.
//!
//! Result line: `cmdline: PASS len=<bytes> [<command line>]`.
#![no_std]
#![no_main]

use pv_runtime::text::{Ascii, c_str};
use pv_runtime::{StartInfo, println};

fn main(si: &'static StartInfo) {
    let line = c_str(&si.cmd_line);
    println!("cmdline: PASS len={} [{}]", line.len(), Ascii(line));
}

pv_runtime::entry!(main);
