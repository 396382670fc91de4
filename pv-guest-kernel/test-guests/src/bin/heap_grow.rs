//! `heap-grow`: the runtime's heap outgrows the bootstrap slack.
//!
//! 1. Fills the slack with 64 KiB blocks, then allocates 8 MiB more in
//!    blocks of 4 KiB to 1 MiB: the heap grows at `mm::HEAP_EXTENSION`,
//!    every block is writable and keeps its own pattern.
//! 2. One 2 MiB block (larger than a growth step) is contiguous.
//! 3. Everything freed, the same bytes can be allocated again without the
//!    heap growing further.
//! 4. Allocating until the heap refuses: `try_reserve` fails (no panic), and
//!    at least `mm::HEAP_FRAME_RESERVE` frames are still free.
#![no_std]
#![no_main]
#![allow(clippy::cast_possible_truncation)] // patterns take the low byte on purpose

extern crate alloc;

use alloc::vec::Vec;

use pv_runtime::mm;
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{check, expect, pass};

const NAME: &str = "heap-grow";

/// A block of `len` bytes filled with a pattern of `tag`, or `None` when the
/// heap refuses.
fn block(len: usize, tag: u8) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).ok()?;
    v.extend((0..len).map(|i| tag ^ (i as u8)));
    Some(v)
}

fn intact(v: &[u8], tag: u8) -> bool {
    v.iter().enumerate().all(|(i, b)| *b == tag ^ (i as u8))
}

fn main(_si: &'static StartInfo) {
    let start = mm::heap_stats();
    let slack = start.region.len();
    expect(
        NAME,
        "extension before any growth",
        start.extension.len(),
        0,
    );

    // 1. Past the slack and 8 MiB beyond.
    let mut blocks: Vec<(Vec<u8>, u8)> = Vec::with_capacity(4096);
    let mut total = 0u64;
    let sizes = [4096usize, 65536, 1 << 20, 12288, 200_000];
    let mut n = 0usize;
    while total < slack + (8 << 20) {
        let len = if total < slack {
            65536
        } else {
            sizes[n % sizes.len()]
        };
        let tag = n as u8;
        match block(len, tag) {
            Some(v) => blocks.push((v, tag)),
            None => pv_test_guests::fail(
                NAME,
                format_args!("allocation of {len} bytes failed after {total} bytes"),
            ),
        }
        total += len as u64;
        n += 1;
    }
    let grown = mm::heap_stats();
    check(
        NAME,
        grown.extension.start == mm::HEAP_EXTENSION && grown.extension.len() >= 8 << 20,
        format_args!("extension {:?} after {total} bytes", grown.extension),
    );
    check(
        NAME,
        blocks.iter().all(|(v, tag)| intact(v, *tag)),
        format_args!("a block lost its pattern"),
    );

    // 2. A block larger than one growth step.
    let big = block(2 << 20, 0x5A);
    check(
        NAME,
        big.as_deref().is_some_and(|v| intact(v, 0x5A)),
        format_args!("2 MiB block"),
    );
    drop(big);

    // 3. Freed bytes come back.
    drop(blocks);
    let after_free = mm::heap_stats();
    let again: Vec<Vec<u8>> = (0..8).filter_map(|i| block(1 << 20, i)).collect();
    expect(NAME, "8 MiB again", again.len(), 8);
    expect(
        NAME,
        "extension after reuse",
        mm::heap_stats().extension,
        after_free.extension,
    );
    drop(again);

    // 4. Until the heap says no.
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    if hoard.try_reserve_exact(65536).is_err() {
        pv_test_guests::fail(NAME, format_args!("no room for the hoard's list"));
    }
    while hoard.len() < hoard.capacity() {
        let mut v = Vec::new();
        if v.try_reserve_exact(1 << 20).is_err() {
            break;
        }
        hoard.push(v);
    }
    let left = mm::frames_available();
    check(
        NAME,
        left >= mm::HEAP_FRAME_RESERVE,
        format_args!("only {left} frames left after the heap stopped growing"),
    );
    check(
        NAME,
        hoard.len() < hoard.capacity(),
        format_args!("the heap never refused"),
    );
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
