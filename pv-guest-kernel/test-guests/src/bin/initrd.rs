//! `initrd`: the initrd, as a builder hands it over (`start_info.mod_start`, a
//! virtual address inside the bootstrap region, and `mod_len`). The test gives a
//! module of `len=` bytes that are all `0x5A`. With `domu=1` (a domU's ramdisk,
//! `dom0ctl`'s `ramdisk =`) `mod_len` is whole pages, as libxenguest reports its
//! segment, and the bytes past `len` are zero.
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
    let data = arg_u64(NAME, "len", 0);
    let domu = arg_u64(NAME, "domu", 0) != 0;
    let want = if domu {
        data.div_ceil(4096).saturating_mul(4096)
    } else {
        data
    };
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
    let data = usize::try_from(data).unwrap_or(usize::MAX).min(len);
    if let Some(i) = bytes[..data].iter().position(|&b| b != 0x5A) {
        fail(NAME, format_args!("byte {i} is {:#x}, not 0x5a", bytes[i]));
    }
    if let Some(i) = bytes[data..].iter().position(|&b| b != 0) {
        let i = data + i;
        fail(
            NAME,
            format_args!("byte {i} is {:#x}, not 0 (padding)", bytes[i]),
        );
    }
    println!("{NAME}: PASS len={len}");
    pv_runtime::sched::poweroff()
}

pv_runtime::entry!(main);
