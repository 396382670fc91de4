//! `map64`: maps 64 MiB (16384 pages) through the runtime's mapping API in
//! one call (batched: 512 `mmu_update` requests per `multicall`), writes a
//! pattern into every page, reads it back, unmaps the range (the 32 L1s,
//! the L2 and the L3 it needed are freed) and checks the range faults.
//!
//! Frames: up to 16384 distinct free frames. A domain with fewer (real
//! Xen's `dom0_mem=64M` leaves about 15000) maps the frames it has
//! round-robin, so some pages share a frame; the check then expects the
//! pattern of the last page written to each frame. xen-like-hv's default
//! dom0 (128 MiB of a 256 MiB machine) has enough for 16384 distinct ones.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use pv_runtime::abi::xen::PteFlags;
use pv_runtime::mm::{self, Frame};
use pv_runtime::traps::{self, vector};
use pv_runtime::{Config, StartInfo, probe};
use pv_test_guests::{check, expect, fail, pass, read, record, take};

const NAME: &str = "map64";
/// L4 slot 64, 1 GiB aligned.
const BASE: u64 = 0x0000_2000_0000_0000;
const PAGES: u64 = (64 << 20) / 4096;
/// Frames left for page tables and the runtime.
const SPARE: u64 = 256;

fn pattern(page: u64, word: u64) -> u64 {
    (page << 32) ^ (word << 16) ^ 0x6D61_7036_3400_0000
}

fn main(_si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let avail = mm::frames_available();
    let distinct = PAGES.min(avail.saturating_sub(SPARE));
    check(
        NAME,
        distinct >= 1024,
        format_args!("only {avail} free frames"),
    );
    let mut frames: Vec<Frame> = Vec::new();
    if frames
        .try_reserve_exact(usize::try_from(distinct).unwrap_or(usize::MAX))
        .is_err()
    {
        fail(NAME, format_args!("no heap for {distinct} frame records"));
    }
    for _ in 0..distinct {
        match mm::alloc_frame() {
            Some(f) => frames.push(f),
            None => fail(NAME, format_args!("frame allocator ran dry")),
        }
    }
    let frame_of = |page: u64| {
        let i = usize::try_from(page % distinct).unwrap_or(0);
        frames[i]
    };

    let before = mm::map_stats();
    if let Err(e) = mm::map_frames(BASE, PAGES, PteFlags::RW | PteFlags::NX, |i| {
        Some(frame_of(i).mfn)
    }) {
        fail(NAME, format_args!("map: {e}"));
    }
    let mapped = mm::map_stats();
    expect(
        NAME,
        "tables created",
        mapped.tables_created - before.tables_created,
        34,
    );
    let batches = mapped.batches - before.batches;
    check(
        NAME,
        (PAGES / 512..=PAGES / 512 + 2).contains(&batches),
        format_args!("{batches} batches for {PAGES} pages"),
    );
    for page in [0, 1, 511, 512, PAGES - 1] {
        match mm::translate(BASE + page * 4096) {
            Some(e) if e.mfn() == frame_of(page).mfn && e.flags().contains(PteFlags::RW) => {}
            other => fail(NAME, format_args!("page {page}: entry {other:?}")),
        }
    }

    let words = [0u64, 1, 255, 511];
    for page in 0..PAGES {
        let va = BASE + page * 4096;
        for w in words {
            // SAFETY: `va` maps one of our own frames writable; no Rust
            // object lives there.
            unsafe { probe::write_u64(va + w * 8, pattern(page, w)) };
        }
    }
    for page in 0..PAGES {
        let va = BASE + page * 4096;
        // The last page written to this page's frame.
        let last = page + (PAGES - 1 - page) / distinct * distinct;
        for w in words {
            let got = read(va + w * 8);
            if got != pattern(last, w) {
                fail(
                    NAME,
                    format_args!(
                        "page {page} word {w}: {got:#x}, expected {:#x}",
                        pattern(last, w)
                    ),
                );
            }
        }
    }
    let (caught, _) = take();
    expect(
        NAME,
        "faults while using the range",
        caught.map(|c| c.cr2),
        None,
    );

    expect(NAME, "unmap", mm::unmap(BASE, PAGES), Ok(PAGES));
    let after = mm::map_stats();
    expect(
        NAME,
        "tables freed",
        after.tables_freed - mapped.tables_freed,
        34,
    );
    for page in [0, PAGES / 2, PAGES - 1] {
        let va = BASE + page * 4096;
        expect(NAME, "entry after unmap", mm::translate(va), None);
        let _ = read(va);
        let (caught, _) = take();
        check(
            NAME,
            caught.is_some_and(|c| c.cr2 == va),
            format_args!("read of unmapped {va:#x}: {caught:?}"),
        );
    }
    for f in frames {
        // Frames past the recycle list's capacity are leaked; fine here.
        let _ = mm::free_frame(f);
    }
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
