//! `hostile-batch`: one `mmu_update` call with 1 000 000 requests, request
//! 500 000 bad (an update of L4 slot 256, the hypervisor's). The call must
//! return the bad request's errno (`-EINVAL`) with `*pdone` = 500 000, and
//! everything before it applied, nothing after it.
//!
//! The 16 MB request array is one virtual range made of two frames mapped
//! over and over (through the runtime's mapping API): every page holds the
//! same 256 good requests, except the page with request 500 000, where that
//! slot holds the bad one. Good request `i` sets the M2P entry of a scratch
//! frame to `BASE + i % 256` (`MMU_MACHPHYS_UPDATE`), so the entry's final
//! value tells the last request applied: 499 999 gives `BASE + 31`; running
//! past the bad one would give `BASE + 63` (999 999 % 256).
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::MmuUpdate;
use pv_runtime::abi::types::GuestPtr;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::hypercall::{handle_mut, invoker};
use pv_runtime::mm::{self, Frame};
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{expect, fail, pass, self_dom};

const NAME: &str = "hostile-batch";
const COUNT: u32 = 1_000_000;
const BAD: u64 = 500_000;
const PER_PAGE: u64 = 4096 / 16;
const PAGES: u64 = (COUNT as u64 * 16).div_ceil(4096);
const WINDOW: u64 = 0x0000_3000_0000_0000;
const BASE: u64 = 0x00AB_C000;

fn frame() -> Frame {
    match mm::alloc_frame() {
        Some(f) => f,
        None => fail(NAME, format_args!("no free frame")),
    }
}

fn fill(f: Frame, scratch: Frame, bad_slot: Option<u64>, bad: MmuUpdate) {
    let r = mm::with_writable(f, |page| {
        for (i, chunk) in page.chunks_exact_mut(16).enumerate() {
            let req = if bad_slot == Some(i as u64) {
                bad
            } else {
                MmuUpdate {
                    ptr: (scratch.mfn.0 << 12) | 1,
                    val: BASE + i as u64,
                }
            };
            chunk[..8].copy_from_slice(&req.ptr.to_le_bytes());
            chunk[8..].copy_from_slice(&req.val.to_le_bytes());
        }
    });
    if let Err(e) = r {
        fail(NAME, format_args!("filling a request page: {e}"));
    }
}

fn main(_si: &'static StartInfo) {
    let scratch = frame();
    let good = frame();
    let bad_page = frame();
    let l4 = mm::kernel_root();
    let bad = MmuUpdate {
        ptr: (l4.0 << 12) + 256 * 8,
        val: 0,
    };
    fill(good, scratch, None, bad);
    fill(bad_page, scratch, Some(BAD % PER_PAGE), bad);
    let bad_index = BAD / PER_PAGE;
    if let Err(e) = mm::map_frames(WINDOW, PAGES, PteFlags::NX, |p| {
        Some(if p == bad_index {
            bad_page.mfn
        } else {
            good.mfn
        })
    }) {
        fail(NAME, format_args!("mapping the request window: {e}"));
    }

    let mut done = 0u32;
    // SAFETY: the window holds COUNT readable requests; `done` is a live
    // local. The requests touch only the scratch frame's M2P entry.
    let mut inv = unsafe { invoker() };
    let rc = hc::mmu_update(
        &mut inv,
        GuestPtr::new(WINDOW),
        COUNT,
        handle_mut(&mut done),
        self_dom(),
    );
    expect(NAME, "result", rc, Err(Errno::EINVAL));
    expect(NAME, "*pdone", u64::from(done), BAD);
    expect(
        NAME,
        "scratch M2P entry (last request applied)",
        mm::m2p_entry(scratch.mfn),
        Some(BASE + (BAD - 1) % PER_PAGE),
    );
    if let Err(e) = mm::set_m2p(scratch.mfn, scratch.pfn) {
        fail(NAME, format_args!("restoring the M2P entry: {e}"));
    }
    expect(
        NAME,
        "unmapping the window",
        mm::unmap(WINDOW, PAGES),
        Ok(PAGES),
    );
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
