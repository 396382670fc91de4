//! `gnttab-peer`: two domUs sharing pages through grants (tests/tests/gnttab.rs).
//!
//! `role=granter peer=M [hold=1]`: grants a shared page to domain `M`
//! writable (it is the first reference, 8), then 256 frames of pseudo-random
//! bytes read-only, and writes the 256 references and the bytes' checksum
//! into the shared page (a magic word last). It waits for the mapper's
//! answer in the shared page: a pattern in its second half, and the
//! checksum of what the mapper copied, which must be the granter's own.
//! `end_access` of the shared page must then say "still in use" (the
//! mapper keeps it mapped). Prints `gnttab-peer: granter PASS checksum=X`.
//!
//! `role=mapper peer=G [ref=8] [hold=1]`: maps grant `ref` of domain `G`
//! writable, reads the list of references, copies the 256 granted frames (1
//! MiB) in 4 KiB `GNTTABOP_copy` pieces into a frame of its own, checksums
//! them, then writes the pattern and the checksum. Prints `gnttab-peer:
//! mapper PASS checksum=X`.
//!
//! With `hold=1` both stay alive afterwards (the mapping in place), so the
//! test can destroy them in either order; otherwise they power off (the
//! mapper unmaps first, the granter waits for that and revokes everything).
#![no_std]
#![no_main]

use pv_runtime::abi::DomId;
use pv_runtime::abi::GrantRef;
use pv_runtime::gnttab::{self, CopyPtr, EndAccessError};
use pv_runtime::{Config, StartInfo, mm, println, sched, time};
use pv_test_guests::{arg, arg_u64, fail};

const NAME: &str = "gnttab-peer";
const WIN: u64 = 0x0000_5000_0000_0000;
const PAGES: usize = 256;
const MAGIC: u64 = 0x4752_414e_5452_4459; // "GRANTRDY"
const DONE: u64 = 0x0000_0000_0000_0d0e;

/// Shared page words.
const W_MAGIC: usize = 0;
const W_COUNT: usize = 1;
const W_SUM: usize = 2;
const W_REFS: usize = 8;
const W_RESULT: usize = 300;
const W_DONE: usize = 301;
const W_PATTERN: usize = 384;

fn pattern(i: usize) -> u64 {
    0xa5a5_0000_0000_0000 | (i as u64 * 0x9e37)
}

/// FNV-1a over `bytes`, continuing from `h`.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
const FNV0: u64 = 0xcbf2_9ce4_8422_2325;

fn word(base: u64, i: usize) -> u64 {
    // SAFETY: the caller names a page it has mapped readable.
    unsafe { ((base + 8 * i as u64) as *const u64).read_volatile() }
}

fn set_word(base: u64, i: usize, v: u64) {
    // SAFETY: the caller names a page it has mapped writable.
    unsafe { ((base + 8 * i as u64) as *mut u64).write_volatile(v) }
}

fn page_bytes(va: u64) -> &'static [u8] {
    // SAFETY: the caller names a page it has mapped readable; nothing
    // writes it while the slice is used.
    unsafe { core::slice::from_raw_parts(va as *const u8, 4096) }
}

fn frame() -> mm::Frame {
    mm::alloc_frame().unwrap_or_else(|| fail(NAME, format_args!("no free frame")))
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = time::system_time_ns() + 120_000_000_000;
    while !done() {
        if time::system_time_ns() > deadline {
            fail(NAME, format_args!("timed out waiting for {what}"));
        }
        let _ = time::sleep(5_000_000);
    }
}

fn hold() -> ! {
    loop {
        let _ = time::sleep(1_000_000_000);
    }
}

fn init() {
    if let Err(e) = gnttab::init(1) {
        fail(NAME, format_args!("gnttab::init: {e}"));
    }
}

fn granter(peer: DomId) {
    init();
    let shared = frame();
    let gref = gnttab::grant_access(peer, shared.mfn, false)
        .unwrap_or_else(|e| fail(NAME, format_args!("grant_access(shared): {e}")));
    let mut refs = [0u32; PAGES];
    let mut frames = [shared; PAGES];
    let mut sum = FNV0;
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for (r, f) in refs.iter_mut().zip(frames.iter_mut()) {
        *f = frame();
        let filled = mm::with_writable(*f, |b| {
            for chunk in b.chunks_exact_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
        });
        if let Err(e) = filled {
            fail(NAME, format_args!("filling a frame: {e}"));
        }
        sum = fnv(sum, page_bytes(f.va()));
        *r = gnttab::grant_access(peer, f.mfn, true)
            .unwrap_or_else(|e| fail(NAME, format_args!("grant_access: {e}")))
            .0;
    }
    let written = mm::with_writable(shared, |b| {
        let mut put = |i: usize, v: u64| {
            if let Some(w) = b.get_mut(i * 8..i * 8 + 8) {
                w.copy_from_slice(&v.to_le_bytes());
            }
        };
        put(W_COUNT, PAGES as u64);
        put(W_SUM, sum);
        for (i, r) in refs.iter().enumerate() {
            put(W_REFS + i, u64::from(*r));
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        put(W_MAGIC, MAGIC);
    });
    if let Err(e) = written {
        fail(NAME, format_args!("writing the shared page: {e}"));
    }
    println!("{NAME}: granter ready ref={} peer={}", gref.0, peer.0);
    let page = shared.va();
    wait("the mapper", || word(page, W_DONE) == DONE);
    for i in W_PATTERN..512 {
        if word(page, i) != pattern(i) {
            fail(
                NAME,
                format_args!("word {i} of the shared page: {:#x}", word(page, i)),
            );
        }
    }
    if word(page, W_RESULT) != sum {
        fail(
            NAME,
            format_args!(
                "the mapper's checksum {:#x} is not the granter's {sum:#x}",
                word(page, W_RESULT)
            ),
        );
    }
    if arg_u64(NAME, "hold", 0) == 1 {
        match gnttab::end_access(gref) {
            Err(EndAccessError::StillInUse) => {}
            other => fail(
                NAME,
                format_args!("end_access while the mapper holds it: {other:?}"),
            ),
        }
        println!("{NAME}: granter PASS checksum={sum:#x} busy=1");
        hold();
    }
    // The mapper unmaps after its DONE: end_access succeeds from then on.
    wait("the mapper's unmap", || gnttab::end_access(gref).is_ok());
    for r in refs {
        if let Err(e) = gnttab::end_access(GrantRef(r)) {
            fail(NAME, format_args!("end_access({r}): {e:?}"));
        }
    }
    println!("{NAME}: granter PASS checksum={sum:#x} busy=0");
}

fn mapper(peer: DomId) {
    init();
    let gref = GrantRef(u32::try_from(arg_u64(NAME, "ref", 8)).unwrap_or(8));
    let mut handle = None;
    wait("the grant", || {
        handle = gnttab::map(peer, gref, WIN, false).ok();
        handle.is_some()
    });
    let Some(handle) = handle else {
        fail(NAME, format_args!("no mapping"))
    };
    wait("the granter's magic", || word(WIN, W_MAGIC) == MAGIC);
    let count = usize::try_from(word(WIN, W_COUNT)).unwrap_or(0).min(PAGES);
    let own = frame();
    let mut sum = FNV0;
    for i in 0..count {
        let r = GrantRef(u32::try_from(word(WIN, W_REFS + i)).unwrap_or(0));
        if let Err(e) = gnttab::copy(CopyPtr::gref(peer, r, 0), CopyPtr::frame(own.mfn, 0), 4096) {
            fail(NAME, format_args!("copy of ref {}: {e}", r.0));
        }
        sum = fnv(sum, page_bytes(own.va()));
    }
    for i in W_PATTERN..512 {
        set_word(WIN, i, pattern(i));
    }
    set_word(WIN, W_RESULT, sum);
    core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    set_word(WIN, W_DONE, DONE);
    println!("{NAME}: mapper PASS checksum={sum:#x} pages={count}");
    if arg_u64(NAME, "hold", 0) == 1 {
        hold();
    }
    if let Err(e) = gnttab::unmap(handle, WIN) {
        fail(NAME, format_args!("unmap: {e}"));
    }
}

fn main(_si: &'static StartInfo) {
    let peer = DomId(u16::try_from(arg_u64(NAME, "peer", 0)).unwrap_or(0));
    match arg("role") {
        Some(b"granter") => granter(peer),
        Some(b"mapper") => mapper(peer),
        _ => fail(NAME, format_args!("role=granter|mapper missing")),
    }
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
