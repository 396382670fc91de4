//! `lazy-tlb`: a vCPU that moves between CPUs never runs on translations that an
//! idle CPU kept from its earlier run there (the hypervisor's lazy idle: an idle
//! CPU keeps the tables of the vCPU it ran last, docs/smp.md).
//!
//! Two frames hold different words. The vCPU maps `SCRATCH_VA` to one, then the
//! other, each time with `update_va_mapping(.., UVMF_INVLPG)`: a flush of this CPU
//! only, which is all a guest whose address space no other vCPU uses needs. It
//! reads the word through that address after each remap, sleeps `sleep_us=`
//! (default 300) so that its CPU idles, and reads it again when it wakes, before
//! the next remap. The host moves the vCPU between CPUs meanwhile (`dom0ctl
//! vcpu-pin`). A CPU that went on with the translations it kept from the vCPU's
//! earlier run there would give that read the frame mapped then (half the time
//! the other frame). Runs for `secs=` (default 10).
//!
//! Result line: `lazy-tlb: PASS remaps=<n>`.
#![no_std]
#![no_main]

use pv_runtime::abi::mmu::UVMF_INVLPG;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::{StartInfo, mm, println, pt, sched, time};
use pv_test_guests::{SCRATCH_VA, arg_u64, fail, read, uvm};

const NAME: &str = "lazy-tlb";

/// The word frame `i` holds.
fn word(i: usize) -> u64 {
    0x1A2B_0000_0000_0000 | i as u64
}

/// Fails unless `SCRATCH_VA` reads frame `i`'s word (`when`: after what).
fn check(remaps: u64, i: usize, when: &str) {
    let got = read(SCRATCH_VA);
    if got != word(i) {
        fail(
            NAME,
            format_args!(
                "remap {remaps}: read {got:#x} through {SCRATCH_VA:#x} {when}, expected {:#x}: \
                 a translation from before the remap survived",
                word(i)
            ),
        );
    }
}

fn main(_si: &'static StartInfo) {
    let secs = arg_u64(NAME, "secs", 10);
    let sleep_ns = arg_u64(NAME, "sleep_us", 300).saturating_mul(1000);
    if let Err(e) = mm::take_over() {
        fail(NAME, format_args!("take_over: {e:?}"));
    }
    let frames: [mm::Frame; 2] = core::array::from_fn(|i| {
        let Some(f) = mm::alloc_frame() else {
            fail(NAME, format_args!("no free frame"))
        };
        if mm::with_writable(f, |p| p[..8].copy_from_slice(&word(i).to_le_bytes())).is_err() {
            fail(NAME, format_args!("cannot fill frame {i}"));
        }
        f
    });
    let end = time::system_time_ns().saturating_add(secs.saturating_mul(1_000_000_000));
    let mut remaps = 0u64;
    while time::system_time_ns() < end {
        let i = (remaps % 2) as usize;
        let pte = pt::leaf(frames[i].mfn, PteFlags::NX);
        if let Err(e) = uvm(SCRATCH_VA, pte, UVMF_INVLPG) {
            fail(
                NAME,
                format_args!("remap {remaps}: update_va_mapping: {e:?}"),
            );
        }
        check(remaps, i, "after the remap");
        if let Err(e) = time::sleep(sleep_ns) {
            fail(NAME, format_args!("sleep: {e:?}"));
        }
        check(remaps, i, "after a sleep");
        remaps += 1;
    }
    if uvm(SCRATCH_VA, 0, UVMF_INVLPG).is_err() {
        fail(NAME, format_args!("unmapping {SCRATCH_VA:#x}"));
    }
    println!("{NAME}: PASS remaps={remaps}");
    sched::poweroff()
}

pv_runtime::entry!(main);
