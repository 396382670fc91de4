//! `initrd`: dom0's initrd, as the builder hands it over (`start_info.mod_start`,
//! a virtual address inside the bootstrap region, and `mod_len`). The test
//! gives a module of `len=` bytes that are all `0x5A`.
//!
//! Result line: `initrd: PASS len=<mod_len>`.
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::abi::xen::start_info::SifFlags;
use pv_runtime::println;
use pv_test_guests::{arg_u64, check, expect, fail};

const NAME: &str = "initrd";

fn main(si: &'static StartInfo) {
    let want = arg_u64(NAME, "len", 0);
    expect(NAME, "mod_len", si.mod_len, want);
    check(
        NAME,
        !SifFlags::from_bits_retain(si.flags).contains(SifFlags::MOD_START_PFN),
        format_args!("mod_start is a PFN (flags {:#x})", si.flags),
    );
    check(
        NAME,
        si.mod_start != 0 && si.mod_start % 4096 == 0,
        format_args!("mod_start {:#x}", si.mod_start),
    );
    let Ok(len) = usize::try_from(si.mod_len) else {
        fail(NAME, format_args!("mod_len {}", si.mod_len))
    };
    let start: *const u8 =
        core::ptr::with_exposed_provenance(usize::try_from(si.mod_start).unwrap_or(0));
    // SAFETY: the builder maps the initrd (mod_len bytes at mod_start) inside the
    // bootstrap region for the domain's lifetime; nothing writes it.
    let bytes = unsafe { core::slice::from_raw_parts(start, len) };
    if let Some(i) = bytes.iter().position(|&b| b != 0x5A) {
        fail(NAME, format_args!("byte {i} is {:#x}, not 0x5a", bytes[i]));
    }
    println!("{NAME}: PASS len={len}");
    pv_runtime::sched::poweroff()
}

pv_runtime::entry!(main);
