//! `blkhostile`: a block front end that breaks the rules (tests/tests/block.rs).
//!
//! It connects to xvda by hand (one ring page, one event channel, no
//! features) instead of through `pv_runtime::blkfront`, so it can put
//! anything on the ring. Each bad request must get `BLKIF_RSP_ERROR` (an
//! unknown operation `BLKIF_RSP_EOPNOTSUPP`) and change nothing:
//!
//! 1. a read into a grant reference it never granted;
//! 2. a write from a page granted to another domain (dom0 is 0: this one is
//!    granted to domain 7 instead);
//! 3. a read into a page granted read-only;
//! 4. a read past the disk's end, and one that starts inside and runs past;
//! 5. a segment with `first_sect` > `last_sect`, one with `last_sect` 8, a
//!    request with 0 and one with 12 segments;
//! 6. operation 200;
//! 7. an indirect request with no segments;
//!
//! and between them a good write and read of sector 8 prove the back end still
//! serves this front end (the data comes back). Then it publishes a producer
//! index 1000 ahead of the ring (more requests than the ring holds): the back
//! end must give up on this vbd: its state goes to Closing (the test reads
//! the reason in dom0's `error/backend/vbd/D/51712/error`).
//! Prints `blkhostile: PASS` or `blkhostile: FAIL <what>`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, Ordering};

use pv_runtime::abi::io::blkif::{
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifFrontRing, BlkifRequest,
    BlkifRequestSegment,
};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::{DomId, GrantRef};
use pv_runtime::{Config, StartInfo, evtchn, gnttab, mm, println, time, xenbus};
use pv_test_guests::{fail, pass};

const NAME: &str = "blkhostile";
const XVDA: u64 = 51712;
/// Where the ring page is mapped writable.
const RING_VA: u64 = 0x0000_5000_0000_0000;
/// The data page, mapped writable after it.
const DATA_VA: u64 = RING_VA + 4096;
/// Bad requests sent.
const BAD: usize = 11;

fn frame() -> mm::Frame {
    mm::alloc_frame().unwrap_or_else(|| fail(NAME, format_args!("no free frame")))
}

fn xs_read(path: &str) -> String {
    xenbus::read_string(path).unwrap_or_else(|e| fail(NAME, format_args!("read {path}: {e}")))
}

fn xs_write(path: &str, v: &str) {
    if let Err(e) = xenbus::write(path, v) {
        fail(NAME, format_args!("write {path}: {e}"));
    }
}

/// Waits (60 s at most) until `done` holds.
fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = time::system_time_ns() + 60_000_000_000;
    while !done() {
        if time::system_time_ns() > deadline {
            fail(NAME, format_args!("timed out waiting for {what}"));
        }
        let _ = time::sleep(1_000_000);
    }
}

fn seg(gref: GrantRef, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref,
        first_sect: first,
        last_sect: last,
        _pad: 0,
    }
}

/// A request (its id is set when it is sent: [`Front::call`]).
fn req(op: u8, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: u8::try_from(segs.len()).unwrap_or(u8::MAX),
        handle: 0,
        _pad: 0,
        id: 0,
        sector_number: sector,
        seg: [BlkifRequestSegment::default(); BLKIF_MAX_SEGMENTS_PER_REQUEST],
    };
    for (d, s) in r.seg.iter_mut().zip(segs) {
        *d = *s;
    }
    r
}

struct Front {
    ring: BlkifFrontRing<'static>,
    port: pv_runtime::abi::EvtchnPort,
    next_id: u64,
}

impl Front {
    /// Sends `r` (its id replaced by a fresh one) and waits for its answer.
    fn call(&mut self, what: &str, mut r: BlkifRequest) -> i16 {
        self.next_id += 1;
        r.id = self.next_id;
        if self.ring.put_request(&r).is_err() {
            fail(NAME, format_args!("{what}: ring full"));
        }
        if self.ring.push_requests() {
            let _ = evtchn::send(self.port);
        }
        let mut got = None;
        let ring = &mut self.ring;
        wait(what, || {
            match ring.take_response() {
                Ok(Some(rsp)) => got = Some(rsp),
                Ok(None) => {}
                Err(e) => fail(NAME, format_args!("{what}: bad response ring: {e:?}")),
            }
            got.is_some()
        });
        let rsp = got.unwrap_or_default();
        // An indirect request is answered with its `indirect_op` (as Linux's
        // blkback does), the byte that overlays `nr_segments` here.
        let op = if r.operation == BLKIF_OP_INDIRECT {
            r.nr_segments
        } else {
            r.operation
        };
        if rsp.id != self.next_id || rsp.operation != op {
            fail(
                NAME,
                format_args!(
                    "{what}: answer for id {} op {}, expected id {} op {}",
                    rsp.id, rsp.operation, self.next_id, op
                ),
            );
        }
        rsp.status
    }

    fn expect(&mut self, what: &str, r: BlkifRequest, want: i16) {
        let got = self.call(what, r);
        if got != want {
            fail(NAME, format_args!("{what}: status {got}, expected {want}"));
        }
    }
}

fn data(byte: Option<u8>) -> u8 {
    // SAFETY: DATA_VA maps the data frame writable for the guest's life.
    let p = DATA_VA as *mut u8;
    match byte {
        Some(b) => {
            // SAFETY: as above; 4096 bytes.
            unsafe { p.write_bytes(b, 4096) };
            b
        }
        // SAFETY: as above.
        None => unsafe { p.read_volatile() },
    }
}

fn main(_si: &'static StartInfo) {
    if let Err(e) = xenbus::connect() {
        fail(NAME, format_args!("xenstore: {e}"));
    }
    let fe = format!("device/vbd/{XVDA}");
    let be = xs_read(&format!("{fe}/backend"));
    let be_id = xs_read(&format!("{fe}/backend-id"));
    if be_id != "0" {
        fail(NAME, format_args!("backend-id {be_id}"));
    }
    let dom0 = DomId(0);
    if let Err(e) = gnttab::init(1) {
        fail(NAME, format_args!("grant table: {e}"));
    }
    let (ring_f, data_f, ro_f) = (frame(), frame(), frame());
    for (va, f) in [(RING_VA, ring_f), (DATA_VA, data_f)] {
        if let Err(e) = mm::map(va, &[f.mfn], PteFlags::RW | PteFlags::NX) {
            fail(NAME, format_args!("mapping a page: {e:?}"));
        }
    }
    // SAFETY: RING_VA maps the ring frame writable for the guest's life, 4 KiB
    // aligned; the back end shares it, so it is only touched through atomics.
    let words: &'static [AtomicU32] =
        unsafe { core::slice::from_raw_parts(RING_VA as *const AtomicU32, 1024) };
    let ring = BlkifFrontRing::init(words).unwrap_or_else(|e| fail(NAME, format_args!("{e:?}")));
    let grant = |f: mm::Frame, to: DomId, ro: bool| {
        gnttab::grant_access(to, f.mfn, ro)
            .unwrap_or_else(|e| fail(NAME, format_args!("grant: {e}")))
    };
    let ring_ref = grant(ring_f, dom0, false);
    let data_ref = grant(data_f, dom0, false);
    let ro_ref = grant(ro_f, dom0, true);
    let foreign_ref = grant(data_f, DomId(7), false);
    let port = evtchn::alloc_unbound(dom0)
        .unwrap_or_else(|e| fail(NAME, format_args!("alloc_unbound: {e}")));
    wait("the back end's InitWait", || {
        xs_read(&format!("{be}/state")) == "2"
    });
    xs_write(&format!("{fe}/ring-ref"), &format!("{}", ring_ref.0));
    xs_write(&format!("{fe}/event-channel"), &format!("{}", port.0));
    xs_write(&format!("{fe}/protocol"), "x86_64-abi");
    xs_write(&format!("{fe}/state"), "3");
    wait("the back end's Connected", || {
        xs_read(&format!("{be}/state")) == "4"
    });
    let sectors: u64 = xs_read(&format!("{be}/sectors"))
        .parse()
        .unwrap_or_else(|_| fail(NAME, format_args!("bad sectors")));
    xs_write(&format!("{fe}/state"), "4");
    let mut f = Front {
        ring,
        port,
        next_id: 0,
    };
    let good = |f: &mut Front, byte: u8| {
        data(Some(byte));
        f.expect(
            "good write",
            req(BLKIF_OP_WRITE, 8, &[seg(data_ref, 0, 7)]),
            BLKIF_RSP_OKAY,
        );
        data(Some(0));
        f.expect(
            "good read",
            req(BLKIF_OP_READ, 8, &[seg(data_ref, 0, 7)]),
            BLKIF_RSP_OKAY,
        );
        if data(None) != byte {
            fail(
                NAME,
                format_args!("sector 8 read back {:#x}, wrote {byte:#x}", data(None)),
            );
        }
    };
    good(&mut f, 0x11);
    let never = GrantRef(ring_ref.0 + 500);
    let bad: [(&str, BlkifRequest, i16); BAD] = [
        (
            "a grant never made",
            req(BLKIF_OP_READ, 0, &[seg(never, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a grant to domain 7",
            req(BLKIF_OP_WRITE, 0, &[seg(foreign_ref, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read into a read-only grant",
            req(BLKIF_OP_READ, 0, &[seg(ro_ref, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read past the end",
            req(BLKIF_OP_READ, sectors, &[seg(data_ref, 0, 7)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "a read across the end",
            req(
                BLKIF_OP_READ,
                sectors.saturating_sub(4),
                &[seg(data_ref, 0, 7)],
            ),
            BLKIF_RSP_ERROR,
        ),
        (
            "first_sect > last_sect",
            req(BLKIF_OP_READ, 0, &[seg(data_ref, 5, 2)]),
            BLKIF_RSP_ERROR,
        ),
        (
            "last_sect 8",
            req(BLKIF_OP_READ, 0, &[seg(data_ref, 0, 8)]),
            BLKIF_RSP_ERROR,
        ),
        ("no segments", req(BLKIF_OP_READ, 0, &[]), BLKIF_RSP_ERROR),
        (
            "12 segments",
            {
                let mut r = req(BLKIF_OP_READ, 0, &[seg(data_ref, 0, 0); 11]);
                r.nr_segments = 12;
                r
            },
            BLKIF_RSP_ERROR,
        ),
        (
            "operation 200",
            req(200, 0, &[seg(data_ref, 0, 7)]),
            BLKIF_RSP_EOPNOTSUPP,
        ),
        (
            "an indirect request with no segments",
            req(BLKIF_OP_INDIRECT, 0, &[]),
            BLKIF_RSP_ERROR,
        ),
    ];
    for (i, (what, r, want)) in bad.into_iter().enumerate() {
        data(Some(0xEE));
        f.expect(what, r, want);
        if r.operation == BLKIF_OP_READ && data(None) != 0xEE {
            fail(
                NAME,
                format_args!("{what}: the refused read wrote the page"),
            );
        }
        good(&mut f, 0x20 + u8::try_from(i).unwrap_or(0));
    }
    println!("{NAME}: {BAD} bad requests refused, the good ones served");
    // A producer index beyond anything the ring can hold.
    let prod = f.ring.req_prod_pvt().wrapping_add(1000);
    words[0].store(prod, Ordering::Release);
    let _ = evtchn::send(port);
    wait("the back end to give up (Closing)", || {
        xs_read(&format!("{be}/state")) == "5"
    });
    xs_write(&format!("{fe}/state"), "6");
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
