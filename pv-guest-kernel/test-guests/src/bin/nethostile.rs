//! `nethostile`: a net front end that breaks the rules (tests/tests/net.rs).
//!
//! It connects to vif 0 by hand (a TX and an RX ring page, one event
//! channel) instead of through `pv_runtime::netfront`, so it can put anything
//! on the TX ring. Every slot of each bad packet must be answered
//! `NETIF_RSP_ERROR` (extra-info slots `NETIF_RSP_NULL`), and a good packet
//! between them `NETIF_RSP_OKAY`:
//!
//! 1. a grant reference it never granted;
//! 2. a page granted to another domain (7);
//! 3. a slot that runs past its page;
//! 4. a packet shorter than an Ethernet header;
//! 5. a later slot bigger than the packet's rest;
//! 6. 19 slots;
//! 7. an extra-info slot of unknown type;
//! 8. a GSO extra on a packet that is not TCP (not IP at all);
//! 9. a packet whose last published slot says more follows.
//!
//! Then it publishes a TX producer index 1000 ahead of the ring: the back
//! end must give up on this vif (its state goes to Closing; the test reads
//! the reason in dom0's `error/backend/vif/D/0/error`).
//! Prints `nethostile: PASS` or `nethostile: FAIL <what>`.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use pv_runtime::abi::io::netif::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA,
    NetifRxFrontRing, NetifTxFrontRing, NetifTxRequest, XEN_NETIF_EXTRA_TYPE_GSO,
};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::{DomId, EvtchnPort, GrantRef};
use pv_runtime::{Config, StartInfo, evtchn, gnttab, mm, println, time, xenbus};
use pv_test_guests::{fail, pass};

const NAME: &str = "nethostile";
/// Where the TX ring, the RX ring and the data page are mapped writable.
const TX_VA: u64 = 0x0000_5000_0000_0000;
const RX_VA: u64 = TX_VA + 4096;
const DATA_VA: u64 = TX_VA + 8192;

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

fn slot(gref: GrantRef, offset: u16, flags: u16, size: u16) -> NetifTxRequest {
    NetifTxRequest {
        gref,
        offset,
        flags,
        id: 0,
        size,
    }
}

/// An extra-info slot of `type_`.
fn extra(type_: u8) -> NetifTxRequest {
    // `struct netif_extra_info` over the slot: `type` and `flags` are the low
    // half of `gref`, `u.gso.size` its high half, `u.gso.type` the low byte of
    // `offset`.
    let gso = type_ == XEN_NETIF_EXTRA_TYPE_GSO;
    NetifTxRequest {
        gref: GrantRef(u32::from(type_) | if gso { 1448 << 16 } else { 0 }),
        offset: u16::from(gso), // XEN_NETIF_GSO_TYPE_TCPV4
        ..NetifTxRequest::default()
    }
}

struct Front {
    ring: NetifTxFrontRing<'static>,
    port: EvtchnPort,
    next_id: u16,
}

impl Front {
    /// Sends `slots` (request slots get fresh ids; extra slots are those
    /// `want` answers `NETIF_RSP_NULL`) and checks every answer.
    fn expect(&mut self, what: &str, slots: &[NetifTxRequest], want: &[i16]) {
        let mut ids = Vec::new();
        for (s, w) in slots.iter().zip(want) {
            let mut s = *s;
            if *w != NETIF_RSP_NULL {
                self.next_id = self.next_id.wrapping_add(1);
                s.id = self.next_id;
                ids.push(Some(s.id));
            } else {
                ids.push(None);
            }
            if self.ring.put_request(&s).is_err() {
                fail(NAME, format_args!("{what}: ring full"));
            }
        }
        if self.ring.push_requests() {
            let _ = evtchn::send(self.port);
        }
        let mut got = Vec::new();
        let ring = &mut self.ring;
        wait(what, || {
            loop {
                match ring.take_response() {
                    Ok(Some(r)) => got.push(r),
                    Ok(None) => break,
                    Err(e) => fail(NAME, format_args!("{what}: bad response ring: {e:?}")),
                }
            }
            got.len() >= slots.len()
        });
        for (k, (r, w)) in got.iter().zip(want).enumerate() {
            if r.status != *w || ids[k].is_some_and(|id| id != r.id) {
                fail(
                    NAME,
                    format_args!(
                        "{what}: slot {k} answered id {} status {}, expected {:?} status {w}",
                        r.id, r.status, ids[k]
                    ),
                );
            }
        }
    }
}

fn main(_si: &'static StartInfo) {
    if let Err(e) = xenbus::connect() {
        fail(NAME, format_args!("xenstore: {e}"));
    }
    let fe = "device/vif/0";
    let be = xs_read(&format!("{fe}/backend"));
    let dom0 = DomId(0);
    if let Err(e) = gnttab::init(1) {
        fail(NAME, format_args!("grant table: {e}"));
    }
    let (tx_f, rx_f, data_f) = (frame(), frame(), frame());
    for (va, f) in [(TX_VA, tx_f), (RX_VA, rx_f), (DATA_VA, data_f)] {
        if let Err(e) = mm::map(va, &[f.mfn], PteFlags::RW | PteFlags::NX) {
            fail(NAME, format_args!("mapping a page: {e:?}"));
        }
    }
    // SAFETY: TX_VA and RX_VA map the ring frames writable for the guest's
    // life, 4 KiB aligned; the back end shares them, so they are only touched
    // through atomics.
    let (tx_words, rx_words): (&'static [AtomicU32], &'static [AtomicU32]) = unsafe {
        (
            core::slice::from_raw_parts(TX_VA as *const AtomicU32, 1024),
            core::slice::from_raw_parts(RX_VA as *const AtomicU32, 1024),
        )
    };
    // SAFETY: DATA_VA maps the data frame writable, and nothing else uses it.
    let data = unsafe { core::slice::from_raw_parts_mut(DATA_VA as *mut u8, 4096) };
    // A broadcast frame of an unused EtherType.
    data[..6].fill(0xFF);
    data[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
    data[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    let ring =
        NetifTxFrontRing::init(tx_words).unwrap_or_else(|e| fail(NAME, format_args!("{e:?}")));
    NetifRxFrontRing::init(rx_words).unwrap_or_else(|e| fail(NAME, format_args!("{e:?}")));
    let grant = |f: mm::Frame, to: DomId, ro: bool| {
        gnttab::grant_access(to, f.mfn, ro)
            .unwrap_or_else(|e| fail(NAME, format_args!("grant: {e}")))
    };
    let tx_ref = grant(tx_f, dom0, false);
    let rx_ref = grant(rx_f, dom0, false);
    let data_ref = grant(data_f, dom0, true);
    let foreign_ref = grant(data_f, DomId(7), true);
    let port = evtchn::alloc_unbound(dom0)
        .unwrap_or_else(|e| fail(NAME, format_args!("alloc_unbound: {e}")));
    wait("the back end's InitWait", || {
        xs_read(&format!("{be}/state")) == "2"
    });
    xs_write(&format!("{fe}/tx-ring-ref"), &format!("{}", tx_ref.0));
    xs_write(&format!("{fe}/rx-ring-ref"), &format!("{}", rx_ref.0));
    xs_write(&format!("{fe}/event-channel"), &format!("{}", port.0));
    xs_write(&format!("{fe}/request-rx-copy"), "1");
    xs_write(&format!("{fe}/feature-rx-notify"), "1");
    xs_write(&format!("{fe}/state"), "4");
    wait("the back end's Connected", || {
        xs_read(&format!("{be}/state")) == "4"
    });
    let mut f = Front {
        ring,
        port,
        next_id: 0,
    };
    let good = |f: &mut Front| f.expect("good", &[slot(data_ref, 0, 0, 60)], &[NETIF_RSP_OKAY]);
    good(&mut f);
    let never = GrantRef(tx_ref.0 + 500);
    let (e, n) = (NETIF_RSP_ERROR, NETIF_RSP_NULL);
    let chain: Vec<NetifTxRequest> = (0..19u16)
        .map(|k| {
            slot(
                data_ref,
                0,
                if k < 18 { NETTXF_MORE_DATA } else { 0 },
                if k == 0 { 19 * 14 } else { 14 },
            )
        })
        .collect();
    let bad: [(&str, Vec<NetifTxRequest>, Vec<i16>); 9] = [
        (
            "a grant never made",
            alloc::vec![slot(never, 0, 0, 60)],
            alloc::vec![e],
        ),
        (
            "a grant to domain 7",
            alloc::vec![slot(foreign_ref, 0, 0, 60)],
            alloc::vec![e],
        ),
        (
            "a slot past its page",
            alloc::vec![slot(data_ref, 4000, 0, 200)],
            alloc::vec![e],
        ),
        (
            "shorter than a header",
            alloc::vec![slot(data_ref, 0, 0, 10)],
            alloc::vec![e],
        ),
        (
            "a later slot bigger than the rest",
            alloc::vec![
                slot(data_ref, 0, NETTXF_MORE_DATA, 100),
                slot(data_ref, 0, 0, 200)
            ],
            alloc::vec![e, e],
        ),
        ("19 slots", chain, alloc::vec![e; 19]),
        (
            "an unknown extra type",
            alloc::vec![slot(data_ref, 0, NETTXF_EXTRA_INFO, 60), extra(9)],
            alloc::vec![e, n],
        ),
        (
            "a GSO extra on a packet that is not TCP",
            alloc::vec![
                slot(data_ref, 0, NETTXF_EXTRA_INFO, 60),
                extra(XEN_NETIF_EXTRA_TYPE_GSO)
            ],
            alloc::vec![e, n],
        ),
        (
            "more data that never comes",
            alloc::vec![slot(data_ref, 0, NETTXF_MORE_DATA, 60)],
            alloc::vec![e],
        ),
    ];
    let count = bad.len();
    for (what, slots, want) in bad {
        f.expect(what, &slots, &want);
        good(&mut f);
    }
    println!("{NAME}: {count} bad packets refused, the good ones sent");
    // A producer index beyond anything the ring can hold.
    let prod = f.ring.req_prod_pvt().wrapping_add(1000);
    tx_words[0].store(prod, Ordering::Release);
    let _ = evtchn::send(port);
    wait("the back end to give up (Closing)", || {
        xs_read(&format!("{be}/state")) == "5"
    });
    xs_write(&format!("{fe}/state"), "6");
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
