//! `xen-version`: the hypervisor reports Xen 4.17, a non-empty
//! extraversion, capabilities that include `xen-3.0-x86_64`, a 4096-byte
//! page, and zeros after the NUL of each string buffer (no stale data).
#![no_std]
#![no_main]

use pv_runtime::abi::PAGE_SIZE;
use pv_runtime::abi::version::{XEN_MAJOR, XEN_MINOR};
use pv_runtime::abi::xen::start_info::START_INFO_MAGIC;
use pv_runtime::text;
use pv_runtime::{StartInfo, xen};
use pv_test_guests::{fail, pass};

const NAME: &str = "xen-version";

/// Pre-fill for the string buffers, so unwritten bytes show.
const FILL: u8 = 0xAA;

fn main(_si: &'static StartInfo) {
    match xen::version() {
        Ok(v) if v.major == XEN_MAJOR && v.minor == XEN_MINOR => {}
        other => fail(
            NAME,
            format_args!("version {other:?}, expected {XEN_MAJOR}.{XEN_MINOR}"),
        ),
    }
    let mut extra = [FILL; 16];
    if let Err(e) = xen::extraversion_into(&mut extra) {
        fail(NAME, format_args!("extraversion: {e}"));
    }
    if text::c_str(&extra).is_empty() || !text::is_nul_padded(&extra) {
        fail(NAME, format_args!("extraversion {:02x?}", extra));
    }
    let mut caps = [FILL; 1024];
    if let Err(e) = xen::capabilities_into(&mut caps) {
        fail(NAME, format_args!("capabilities: {e}"));
    }
    if !text::contains(text::c_str(&caps), START_INFO_MAGIC) {
        fail(
            NAME,
            format_args!("capabilities \"{}\"", text::Ascii(text::c_str(&caps))),
        );
    }
    if !text::is_nul_padded(&caps) {
        fail(
            NAME,
            format_args!("capabilities: non-zero bytes after the NUL"),
        );
    }
    match xen::pagesize() {
        Ok(p) if p == PAGE_SIZE as u64 => {}
        other => fail(NAME, format_args!("pagesize {other:?}")),
    }
    pass(NAME)
}

pv_runtime::entry!(main);
