//! The back end and its switch against front ends played by the test: rings
//! and buffers live in a fake hypervisor's memory ([`Fake`]).
#![allow(clippy::cast_possible_truncation)] // slot counts and sizes are small

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;

use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::netif::{
    NETIF_RSP_OKAY, NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, NetifRxFrontRing, NetifRxRequest,
    NetifTxFrontRing, XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_HASH,
    XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL, XEN_NETIF_GSO_TYPE_TCPV4,
    XEN_NETIF_GSO_TYPE_TCPV6, XenNetifCtrlFrontRing, XenNetifCtrlRequest, XenNetifCtrlResponse,
};
use proptest::prelude::*;
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::testhv::{Fake, fill_page, page_bytes};

const TX_RING: u32 = 10;
const RX_RING: u32 = 11;
const CTRL_RING: u32 = 12;
/// A read-only page the front end fills with keys and mapping tables.
const CTRL_PAGE: u32 = 13;
const CTRL_PORT: u32 = 23;
const TX_BUF: u32 = 100;
const RX_BUF: u32 = 200;
const BUF_PAGES: usize = 32;

fn mac_of(dom: u16) -> [u8; 6] {
    [0x00, 0x16, 0x3e, 0, 0, dom as u8]
}

fn read(xs: &mut Xenstored, path: &str) -> String {
    String::from_utf8(xs.read(path).unwrap_or_default()).unwrap()
}

/// One front end's memory: its rings and buffer pages.
struct Front {
    dom: u16,
    tx: Rc<Vec<AtomicU32>>,
    rx: Rc<Vec<AtomicU32>>,
    txbuf: Rc<Vec<AtomicU32>>,
    rxbuf: Rc<Vec<AtomicU32>>,
    /// RX buffer ids posted and not answered.
    posted: Vec<u16>,
    /// The front end's private indices: (TX req_prod_pvt, TX rsp_cons,
    /// RX req_prod_pvt, RX rsp_cons).
    idx: core::cell::Cell<[u32; 4]>,
    next_rx_id: u16,
    /// Its control ring and the page its requests point at.
    ctrl: Rc<Vec<AtomicU32>>,
    ctrl_page: Rc<Vec<AtomicU32>>,
    /// The control ring's (req_prod_pvt, rsp_cons).
    ctrl_idx: core::cell::Cell<[u32; 2]>,
}

impl Front {
    fn fe(&self, k: &str) -> String {
        format!("/local/domain/{}/device/vif/0/{k}", self.dom)
    }

    fn tx_ring(&self) -> NetifTxFrontRing<'_> {
        let i = self.idx.get();
        NetifTxFrontRing::resume(&self.tx, i[0], i[1]).unwrap()
    }

    fn save_tx(&self, r: &NetifTxFrontRing<'_>) {
        let mut i = self.idx.get();
        i[0] = r.req_prod_pvt();
        i[1] = r.rsp_cons();
        self.idx.set(i);
    }

    /// Puts raw TX slots on the ring and publishes them.
    fn send_slots(&self, slots: &[NetifTxRequest]) {
        let mut r = self.tx_ring();
        for s in slots {
            r.put_request(s).unwrap();
        }
        r.push_requests();
        self.save_tx(&r);
    }

    /// The TX responses not yet taken.
    fn tx_responses(&self) -> Vec<NetifTxResponse> {
        let mut out = Vec::new();
        let mut ring = self.tx_ring();
        while let Some(x) = ring.take_response().unwrap() {
            out.push(x);
        }
        ring.final_check_for_responses().unwrap();
        self.save_tx(&ring);
        out
    }

    /// Sends `frame` from TX buffer page `page` in one slot.
    fn send(&self, frame: &[u8], page: u32, flags: u16) {
        let mut p = vec![0u8; 4096];
        p[..frame.len()].copy_from_slice(frame);
        fill_page(&self.txbuf, page as usize, &p);
        self.send_slots(&[NetifTxRequest {
            gref: GrantRef(TX_BUF + page),
            offset: 0,
            flags,
            id: page as u16,
            size: frame.len() as u16,
        }]);
    }

    /// Posts `n` RX buffers; whether the back end asked to be notified.
    fn post(&mut self, n: usize) -> bool {
        let i = self.idx.get();
        let mut r = NetifRxFrontRing::resume(&self.rx, i[2], i[3]).unwrap();
        for _ in 0..n {
            let id = self.next_rx_id;
            self.next_rx_id = (self.next_rx_id + 1) % BUF_PAGES as u16;
            r.put_request(&NetifRxRequest {
                id,
                pad: 0,
                gref: GrantRef(RX_BUF + u32::from(id)),
            })
            .unwrap();
            self.posted.push(id);
        }
        let notify = r.push_requests();
        let mut i = self.idx.get();
        i[2] = r.req_prod_pvt();
        self.idx.set(i);
        notify
    }

    /// The frames received (with their first response's flags), reassembled.
    fn received(&mut self) -> Vec<(Vec<u8>, u16)> {
        self.received_rx()
            .into_iter()
            .map(|r| {
                assert!(
                    r.gso.is_none() && r.hash.is_none(),
                    "an extra nobody asked for"
                );
                (r.data, r.flags)
            })
            .collect()
    }

    /// The packets received, as Linux's netfront reads them: each response
    /// in the ring slot of the request it answers (its id checked against
    /// the request's, as netif.h requires), a GSO extra after the first slot
    /// of a packet flagged `NETRXF_extra_info`.
    fn received_rx(&mut self) -> Vec<Rx> {
        let i = self.idx.get();
        let mut r = NetifRxFrontRing::resume(&self.rx, i[2], i[3]).unwrap();
        let mut out: Vec<Rx> = Vec::new();
        let mut cont = false;
        let mut extra = false;
        while let Some(rsp) = r.take_response().unwrap() {
            let id = self.posted.remove(0);
            if extra {
                // An extra-info slot: the response is the extra itself.
                let x = NetifExtraInfo::read_from_bytes(rsp.as_bytes()).unwrap();
                let last = out.last_mut().unwrap();
                match x.type_ {
                    XEN_NETIF_EXTRA_TYPE_GSO => {
                        assert!(last.gso.is_none() && last.hash.is_none(), "GSO goes first");
                        last.gso = Some(NetifExtraGso::from(x));
                    }
                    XEN_NETIF_EXTRA_TYPE_HASH => {
                        assert!(last.hash.is_none(), "two hash extras");
                        last.hash = Some(NetifExtraHash::from(x));
                    }
                    t => panic!("extra of type {t}: {x:?}"),
                }
                extra = x.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0;
                continue;
            }
            assert_eq!(rsp.id, id, "a response in another request's slot");
            assert!(rsp.status >= 0, "rx error {rsp:?}");
            let page = page_bytes(&self.rxbuf, usize::from(rsp.id));
            let data = &page[usize::from(rsp.offset)..][..usize::try_from(rsp.status).unwrap()];
            if cont {
                assert_eq!(
                    rsp.flags & !NETRXF_MORE_DATA,
                    0,
                    "flags past the first slot"
                );
                out.last_mut().unwrap().data.extend_from_slice(data);
            } else {
                out.push(Rx {
                    data: data.to_vec(),
                    flags: rsp.flags,
                    gso: None,
                    hash: None,
                });
                extra = rsp.flags & NETRXF_EXTRA_INFO != 0;
            }
            cont = rsp.flags & NETRXF_MORE_DATA != 0;
        }
        assert!(!cont && !extra, "a packet without its last slot");
        r.final_check_for_responses().unwrap();
        let mut i = self.idx.get();
        i[3] = r.rsp_cons();
        self.idx.set(i);
        out
    }

    /// Puts control requests on the control ring and publishes them.
    fn ctrl_send(&self, reqs: &[XenNetifCtrlRequest]) {
        let [p, c] = self.ctrl_idx.get();
        let mut r = XenNetifCtrlFrontRing::resume(&self.ctrl, p, c).unwrap();
        for q in reqs {
            r.put_request(q).unwrap();
        }
        r.push_requests();
        self.ctrl_idx.set([r.req_prod_pvt(), r.rsp_cons()]);
    }

    /// The control responses not yet taken.
    fn ctrl_responses(&self) -> Vec<XenNetifCtrlResponse> {
        let [p, c] = self.ctrl_idx.get();
        let mut r = XenNetifCtrlFrontRing::resume(&self.ctrl, p, c).unwrap();
        let mut out = Vec::new();
        while let Some(x) = r.take_response().unwrap() {
            out.push(x);
        }
        r.final_check_for_responses().unwrap();
        self.ctrl_idx.set([r.req_prod_pvt(), r.rsp_cons()]);
        out
    }

    /// Sends a multicast filter request (an add or a delete extra on an
    /// empty request), as a front end with `request-multicast-control` does.
    fn mcast(&self, add: bool, addr: [u8; 6], id: u16) {
        let ty = if add {
            XEN_NETIF_EXTRA_TYPE_MCAST_ADD
        } else {
            XEN_NETIF_EXTRA_TYPE_MCAST_DEL
        };
        let mut x = [0u8; 12];
        x[0] = ty;
        x[2..8].copy_from_slice(&addr);
        self.send_slots(&[
            NetifTxRequest {
                gref: GrantRef(TX_BUF),
                offset: 0,
                flags: NETTXF_EXTRA_INFO,
                id,
                size: 0,
            },
            NetifTxRequest::read_from_bytes(&x).unwrap(),
        ]);
    }

    /// Sends `frame` as one packet across TX buffer pages from `page` on
    /// (4096 bytes a slot), its first slot `flags`, with a GSO extra
    /// (`size`, `gso_type`) when given. Returns the ids of its request slots.
    fn send_big(&self, frame: &[u8], page: u32, flags: u16, gso: Option<(u16, u8)>) -> Vec<u16> {
        let chunks: Vec<&[u8]> = frame.chunks(4096).collect();
        let mut slots = Vec::new();
        let mut ids = Vec::new();
        for (k, c) in chunks.iter().enumerate() {
            let p = page + k as u32;
            let mut buf = vec![0u8; 4096];
            buf[..c.len()].copy_from_slice(c);
            fill_page(&self.txbuf, p as usize, &buf);
            let mut fl = if k + 1 < chunks.len() {
                NETTXF_MORE_DATA
            } else {
                0
            };
            if k == 0 {
                fl |= flags | if gso.is_some() { NETTXF_EXTRA_INFO } else { 0 };
            }
            let id = 1000 + p as u16;
            ids.push(id);
            slots.push(NetifTxRequest {
                gref: GrantRef(TX_BUF + p),
                offset: 0,
                flags: fl,
                id,
                size: if k == 0 { frame.len() } else { c.len() } as u16,
            });
            if let (0, Some((size, t))) = (k, gso) {
                let x = NetifExtraInfo::from(NetifExtraGso::new(size, t));
                let mut b = [0u8; 12];
                b[..8].copy_from_slice(x.as_bytes());
                slots.push(NetifTxRequest::read_from_bytes(&b).unwrap());
            }
        }
        self.send_slots(&slots);
        ids
    }
}

/// One packet a front end received.
#[derive(Debug)]
struct Rx {
    data: Vec<u8>,
    /// The first response's flags.
    flags: u16,
    /// Its GSO extra.
    gso: Option<NetifExtraGso>,
    /// Its hash extra.
    hash: Option<NetifExtraHash>,
}

struct Net {
    xs: Xenstored,
    hv: Fake,
    nb: Netback,
    fronts: Vec<Front>,
}

impl Net {
    fn new() -> Self {
        Net {
            xs: Xenstored::new(),
            hv: Fake::default(),
            nb: Netback::new(),
            fronts: Vec::new(),
        }
    }

    fn poll(&mut self) {
        let mut n = 0;
        while self.nb.poll(&mut self.xs, &mut self.hv) {
            n += 1;
            assert!(n < 1000, "the back end never settles");
        }
    }

    /// Attaches vif 0 of `dom` on `bridge` and grants its pages.
    fn attach(&mut self, dom: u16, bridge: &str) -> usize {
        let spec = VifSpec {
            mac: Some(mac_of(dom)),
            bridge: bridge.into(),
        };
        self.nb
            .attach(&mut self.xs, dom, 0, &spec, mac_of(dom))
            .unwrap();
        let f = Front {
            dom,
            tx: self.hv.grant(dom, TX_RING, 1, false),
            rx: self.hv.grant(dom, RX_RING, 1, false),
            txbuf: self.hv.grant(dom, TX_BUF, BUF_PAGES, true),
            rxbuf: self.hv.grant(dom, RX_BUF, BUF_PAGES, false),
            posted: Vec::new(),
            idx: core::cell::Cell::new([0; 4]),
            next_rx_id: 0,
            ctrl: self.hv.grant(dom, CTRL_RING, 1, false),
            ctrl_page: self.hv.grant(dom, CTRL_PAGE, 1, true),
            ctrl_idx: core::cell::Cell::new([0; 2]),
        };
        XenNetifCtrlFrontRing::init(&f.ctrl).unwrap();
        NetifTxFrontRing::init(&f.tx).unwrap();
        NetifRxFrontRing::init(&f.rx).unwrap();
        self.fronts.push(f);
        self.fronts.len() - 1
    }

    /// Writes what Linux's netfront writes, in its order, and goes Connected.
    fn connect(&mut self, i: usize, split: bool) {
        self.connect_with(
            i,
            split,
            &[
                "feature-sg",
                "feature-gso-tcpv4",
                "feature-gso-tcpv6",
                "feature-ipv6-csum-offload",
            ],
        );
    }

    /// As [`Net::connect`], with these feature flags set to 1 (and
    /// `feature-no-csum-offload` if named).
    fn connect_with(&mut self, i: usize, split: bool, features: &[&str]) {
        let f = &self.fronts[i];
        let mut keys: Vec<(String, String)> = vec![
            (f.fe("tx-ring-ref"), TX_RING.to_string()),
            (f.fe("rx-ring-ref"), RX_RING.to_string()),
        ];
        if split {
            keys.push((f.fe("event-channel-tx"), "21".into()));
            keys.push((f.fe("event-channel-rx"), "22".into()));
        } else {
            keys.push((f.fe("event-channel"), "21".into()));
        }
        for k in ["request-rx-copy", "feature-rx-notify"]
            .iter()
            .chain(features)
        {
            keys.push((f.fe(k), "1".into()));
        }
        keys.push((f.fe("state"), "4".into()));
        for (k, v) in keys {
            self.xs.write(&k, v.as_bytes()).unwrap();
        }
        self.poll();
    }

    fn be_state(&mut self, dom: u16) -> String {
        read(
            &mut self.xs,
            &format!("/local/domain/0/backend/vif/{dom}/0/state"),
        )
    }

    fn error(&mut self, dom: u16) -> String {
        read(
            &mut self.xs,
            &format!("/local/domain/0/error/backend/vif/{dom}/0/error"),
        )
    }

    fn stats(&self, dom: u16) -> Stats {
        self.nb.vifs(Some(dom)).next().unwrap().stats
    }
}

/// An Ethernet frame `dst` ← `src` of `len` bytes, its payload a pattern.
fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
    f
}

const BCAST: [u8; 6] = [0xff; 6];

#[test]
fn nodes_match_xl() {
    let mut xs = Xenstored::new();
    crate::xenstore::apply(&mut xs, &entries(7, 1, &mac_of(7), "xenbr0")).unwrap();
    let fe = "/local/domain/7/device/vif/1";
    let be = "/local/domain/0/backend/vif/7/1";
    for (p, v) in [
        (format!("{fe}/backend"), be),
        (format!("{fe}/backend-id"), "0"),
        (format!("{fe}/state"), "1"),
        (format!("{fe}/handle"), "1"),
        (format!("{fe}/mac"), "00:16:3e:00:00:07"),
        (format!("{fe}/mtu"), "1500"),
        (format!("{be}/frontend"), fe),
        (format!("{be}/frontend-id"), "7"),
        (format!("{be}/online"), "1"),
        (format!("{be}/state"), "1"),
        (format!("{be}/mac"), "00:16:3e:00:00:07"),
        (format!("{be}/bridge"), "xenbr0"),
        (format!("{be}/handle"), "1"),
        (format!("{be}/type"), "vif"),
        ("/libxl/7/device/vif/1/frontend".to_string(), fe),
        ("/libxl/7/device/vif/1/backend".to_string(), be),
    ] {
        assert_eq!(read(&mut xs, &p), v, "{p}");
    }
    let perms = |xs: &mut Xenstored, p: &str| crate::agent::perms_string(&xs.get_perms(p).unwrap());
    assert_eq!(perms(&mut xs, fe), "n7,r0");
    assert_eq!(perms(&mut xs, &format!("{fe}/mac")), "n7,r0");
    assert_eq!(
        perms(&mut xs, &format!("{fe}/mtu")),
        "n0,r7",
        "libxl's ro_front"
    );
    assert_eq!(perms(&mut xs, be), "n0,r7");
    assert_eq!(perms(&mut xs, &format!("{be}/bridge")), "n0,r7");
}

#[test]
fn probe_publishes_features_and_initwait() {
    let mut n = Net::new();
    n.attach(3, "xenbr0");
    let be = "/local/domain/0/backend/vif/3/0";
    for (k, v) in [
        ("feature-sg", "1"),
        ("feature-gso-tcpv4", "1"),
        ("feature-gso-tcpv6", "1"),
        ("feature-ipv6-csum-offload", "1"),
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-multicast-control", "1"),
        ("feature-dynamic-multicast-control", "1"),
        ("feature-split-event-channels", "1"),
        ("multi-queue-max-queues", "1"),
        ("feature-ctrl-ring", "1"),
        ("hotplug-status", "connected"),
        ("state", "2"),
    ] {
        assert_eq!(read(&mut n.xs, &format!("{be}/{k}")), v, "{k}");
    }
    // Not offered: XDP headroom.
    assert!(n.xs.read(&format!("{be}/feature-xdp-headroom")).is_err());
    // A second vif 0, or a MAC taken on the bridge, is refused.
    let spec = VifSpec::parse("bridge=xenbr0").unwrap();
    assert_eq!(
        n.nb.attach(&mut n.xs, 3, 0, &spec, mac_of(9)),
        Err(AttachError::Exists(0))
    );
    assert!(matches!(
        n.nb.attach(&mut n.xs, 4, 0, &spec, mac_of(3)),
        Err(AttachError::MacInUse { domid: 3, .. })
    ));
}

#[test]
fn handshake_close_and_reconnect() {
    let mut n = Net::new();
    n.attach(3, "xenbr0");
    n.connect(0, false);
    assert_eq!(n.be_state(3), "4", "{}", n.error(3));
    assert_eq!(n.hv.ports.len(), 1, "one channel without split channels");
    assert_eq!(n.hv.rings.len(), 2);
    let info = n.nb.list(&mut n.xs, 3);
    assert_eq!(
        (info[0].evtchn, info[0].tx_ring_ref, info[0].rx_ring_ref),
        (21, 10, 11)
    );
    assert_eq!((info[0].fe_state, info[0].be_state), (4, 4));
    // The front end closes: Closing, then Closed, everything let go.
    n.xs.write(&n.fronts[0].fe("state"), b"5").unwrap();
    n.poll();
    assert_eq!(n.be_state(3), "5");
    assert!(n.hv.ports.is_empty() && n.hv.rings.is_empty());
    n.xs.write(&n.fronts[0].fe("state"), b"6").unwrap();
    n.poll();
    assert_eq!(n.be_state(3), "6");
    // It starts again: InitWait, then Connected on split channels.
    n.xs.write(&n.fronts[0].fe("state"), b"1").unwrap();
    n.poll();
    assert_eq!(n.be_state(3), "2");
    n.xs.rm(&n.fronts[0].fe("event-channel")).unwrap();
    n.connect(0, true);
    assert_eq!(n.be_state(3), "4", "{}", n.error(3));
    assert_eq!(n.hv.ports.len(), 2, "split channels");
    // Destroy: everything goes.
    n.nb.detach_domain(&mut n.xs, &mut n.hv, 3);
    assert!(n.hv.ports.is_empty() && n.hv.rings.is_empty());
    assert!(n.xs.read("/local/domain/0/backend/vif/3").is_err());
    assert_eq!(n.nb.bridges().count(), 0);
}

#[test]
fn bad_front_ends_are_fatal_for_their_vif_only() {
    for (key, value, why) in [
        ("request-rx-copy", "0", "request-rx-copy"),
        ("feature-rx-notify", "0", "feature-rx-notify is mandatory"),
        ("multi-queue-num-queues", "2", "exceeding the maximum of 1"),
        ("tx-ring-ref", "99", "mapping the TX ring"),
        ("rx-ring-ref", "x", "rx-ring-ref"),
        ("event-channel", "5000", "binding event channel 5000"),
    ] {
        let mut n = Net::new();
        n.attach(3, "xenbr0");
        let f = &n.fronts[0];
        n.xs.write(&f.fe(key), value.as_bytes()).unwrap();
        // `connect` writes the good keys; write the bad one again after them.
        let f0 = f.fe(key);
        n.connect(0, false);
        if n.be_state(3) == "4" {
            // The good value replaced it; put the bad one in and restart.
            n.xs.write(&n.fronts[0].fe("state"), b"6").unwrap();
            n.poll();
            n.xs.write(&n.fronts[0].fe("state"), b"1").unwrap();
            n.poll();
            n.xs.write(&f0, value.as_bytes()).unwrap();
            n.xs.write(&n.fronts[0].fe("state"), b"4").unwrap();
            n.poll();
        }
        assert_eq!(n.be_state(3), "5", "{key}={value}");
        assert!(n.error(3).contains(why), "{key}: {}", n.error(3));
        assert!(n.hv.ports.is_empty() && n.hv.rings.is_empty(), "{key}");
    }
}

/// Three domains on xenbr0, one on xenbr1; all connected, buffers posted.
fn lan() -> Net {
    let mut n = Net::new();
    for (dom, br) in [(3, "xenbr0"), (4, "xenbr0"), (5, "xenbr0"), (6, "xenbr1")] {
        let i = n.attach(dom, br);
        n.connect(i, dom == 4);
        assert_eq!(n.be_state(dom), "4", "{}", n.error(dom));
        let _ = n.fronts[i].post(8);
    }
    n.poll();
    n
}

#[test]
fn frames_are_switched_between_vifs() {
    let mut n = lan();
    // A broadcast from 3 reaches 4 and 5 on its bridge, not 6.
    let b = frame(BCAST, mac_of(3), 60, 1);
    n.fronts[0].send(&b, 0, 0);
    n.poll();
    assert_eq!(
        n.fronts[0].tx_responses(),
        [NetifTxResponse {
            id: 0,
            status: NETIF_RSP_OKAY
        }]
    );
    for i in [1, 2] {
        let got = n.fronts[i].received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b);
    }
    assert!(n.fronts[3].received().is_empty());
    assert!(n.fronts[0].received().is_empty(), "not back to its sender");
    // 4 answers 3 by unicast: only 3 gets it (3's MAC was learned).
    let u = frame(mac_of(3), mac_of(4), 1514, 2);
    n.fronts[1].send(&u, 1, 0);
    n.poll();
    assert_eq!(n.fronts[0].received(), [(u.clone(), 0)]);
    assert!(n.fronts[2].received().is_empty());
    // And 3 to 4 now goes to 4 only.
    let v = frame(mac_of(4), mac_of(3), 100, 3);
    n.fronts[0].send(&v, 2, 0);
    n.poll();
    assert_eq!(n.fronts[1].received(), [(v, 0)]);
    assert!(n.fronts[2].received().is_empty());
    assert_eq!(n.stats(3).tx_packets, 2);
    assert_eq!(n.stats(4).rx_packets, 2);
    assert_eq!(n.hv.bad_copies, 0);
    // An event went to each receiver's RX port and the senders' TX ports.
    assert!(!n.hv.notified.is_empty());
}

#[test]
fn multi_slot_packets_with_extra_info() {
    let mut n = lan();
    // A 6000-byte frame in three slots (first 3000 at offset 1000, then
    // 2000 and 1000) with a hash extra between them.
    let f = frame(mac_of(4), mac_of(3), 6000, 9);
    let mut pages = vec![vec![0u8; 4096]; 3];
    pages[0][1000..4000].copy_from_slice(&f[..3000]);
    pages[1][..2000].copy_from_slice(&f[3000..5000]);
    pages[2][96..1096].copy_from_slice(&f[5000..]);
    for (k, p) in pages.iter().enumerate() {
        fill_page(&n.fronts[0].txbuf, k, p);
    }
    let extra = NetifExtraInfo {
        type_: XEN_NETIF_EXTRA_TYPE_HASH,
        flags: 0,
        u: [0; 3],
    };
    let mut xb = [0u8; 12];
    xb[..8].copy_from_slice(extra.as_bytes());
    let xslot = NetifTxRequest::read_from_bytes(&xb).unwrap();
    let req = |page: u32, offset: u16, flags: u16, id: u16, size: u16| NetifTxRequest {
        gref: GrantRef(TX_BUF + page),
        offset,
        flags,
        id,
        size,
    };
    n.fronts[0].send_slots(&[
        req(0, 1000, NETTXF_MORE_DATA | NETTXF_EXTRA_INFO, 7, 6000),
        xslot,
        req(1, 0, NETTXF_MORE_DATA, 8, 2000),
        req(2, 96, 0, 9, 1000),
    ]);
    n.poll();
    let rsp = n.fronts[0].tx_responses();
    assert_eq!(
        rsp.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            NETIF_RSP_OKAY,
            NETIF_RSP_NULL,
            NETIF_RSP_OKAY,
            NETIF_RSP_OKAY
        ]
    );
    assert_eq!((rsp[0].id, rsp[2].id, rsp[3].id), (7, 8, 9));
    // Domain 4 (feature-sg) gets it in two buffers, reassembled.
    let got = n.fronts[1].received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, f);
}

#[test]
fn bad_packets_get_errors_and_the_rest_flows() {
    let mut n = lan();
    let good = frame(mac_of(4), mac_of(3), 64, 5);
    fill_page(&n.fronts[0].txbuf, 0, &{
        let mut p = vec![0u8; 4096];
        p[..64].copy_from_slice(&good);
        p
    });
    let req = |gref: u32, offset: u16, flags: u16, id: u16, size: u16| NetifTxRequest {
        gref: GrantRef(gref),
        offset,
        flags,
        id,
        size,
    };
    let gso = {
        let x = NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags: 0,
            u: [1448, 1, 0],
        };
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(x.as_bytes());
        NetifTxRequest::read_from_bytes(&b).unwrap()
    };
    let bad_extra = {
        let mut b = [0u8; 12];
        b[0] = 9;
        b[1] = XEN_NETIF_EXTRA_FLAG_MORE;
        NetifTxRequest::read_from_bytes(&b).unwrap()
    };
    let mut slots = vec![
        req(TX_BUF, 0, 0, 1, 64),                 // good
        req(TX_BUF, 4000, 0, 2, 200),             // crosses the page
        req(TX_BUF, 0, NETTXF_MORE_DATA, 3, 100), // a later slot bigger than the rest
        req(TX_BUF + 1, 0, 0, 4, 200),            //
        req(TX_BUF, 0, 0, 5, 10),                 // shorter than a header
        req(999, 0, 0, 6, 64),                    // a grant never given
        req(TX_BUF, 0, NETTXF_EXTRA_INFO, 7, 64), // GSO on a packet that is not TCP
        gso,                                      //
        req(TX_BUF, 0, NETTXF_EXTRA_INFO, 8, 64), // an unknown extra type, chained
        bad_extra,                                //
        bad_extra,                                //
        NetifTxRequest::default(),                // (the chain's last extra)
        req(TX_BUF, 0, 0, 9, 64),                 // good
    ];
    // 19 slots of one packet: too many.
    for k in 0..19u16 {
        let more = if k < 18 { NETTXF_MORE_DATA } else { 0 };
        slots.push(req(
            TX_BUF + 2,
            0,
            more,
            100 + k,
            if k == 0 { 19 * 14 } else { 14 },
        ));
    }
    slots.push(req(TX_BUF, 0, 0, 10, 64)); // good
    // The last one runs off the published slots.
    slots.push(req(TX_BUF, 0, NETTXF_MORE_DATA, 11, 64));
    n.fronts[0].send_slots(&slots);
    n.poll();
    let rsp = n.fronts[0].tx_responses();
    assert_eq!(rsp.len(), slots.len(), "every slot answered once");
    let status = |id: u16| rsp.iter().find(|r| r.id == id).unwrap().status;
    for id in [1, 9, 10] {
        assert_eq!(status(id), NETIF_RSP_OKAY, "{id}");
    }
    for id in [2, 3, 4, 5, 6, 7, 8, 11, 100, 118] {
        assert_eq!(status(id), NETIF_RSP_ERROR, "{id}");
    }
    assert_eq!(
        rsp.iter().filter(|r| r.status == NETIF_RSP_NULL).count(),
        4,
        "extra slots"
    );
    assert_eq!(n.fronts[1].received().len(), 3, "the good ones");
    assert_eq!(n.stats(3).tx_errors, 8);
    assert_eq!(n.hv.bad_copies, 0, "no copy past a page or buffer");
    assert_eq!(n.be_state(3), "4", "bad packets are not fatal");
}

#[test]
fn a_front_end_without_buffers_loses_only_its_own_frames() {
    let mut n = lan();
    // 4 stops posting (its 8 buffers fill up); 5 keeps posting.
    let total = 300usize;
    let mut got5 = 0usize;
    for k in 0..total {
        let f = frame(BCAST, mac_of(3), 60, k as u8);
        n.fronts[0].send(&f, (k % BUF_PAGES) as u32, 0);
        n.poll();
        let _ = n.fronts[0].tx_responses();
        got5 += n.fronts[2].received().len();
        let _ = n.fronts[2].post(1);
        n.poll();
    }
    assert_eq!(got5, total, "5 gets every frame");
    let s4 = n.stats(4);
    assert_eq!(s4.rx_packets, 8);
    assert_eq!(
        s4.rx_dropped as usize,
        total - 8 - RX_QUEUE_FRAMES,
        "4's queue is bounded"
    );
    // When 4 posts again it gets what was queued, oldest first.
    let _ = n.fronts[1].post(BUF_PAGES - 8);
    n.poll();
    assert_eq!(n.fronts[1].received().len(), 8 + BUF_PAGES - 8);
}

#[test]
fn frames_waiting_for_buffers_ask_for_a_notification() {
    let mut n = lan();
    // 4 has 8 buffers: 12 broadcasts in one pass leave 4 frames queued.
    for k in 0..12u32 {
        n.fronts[0].send(&frame(BCAST, mac_of(3), 60, k as u8), k, 0);
    }
    n.poll();
    assert_eq!(n.fronts[1].received().len(), 8);
    // Its next post must notify dom0 (`req_event` armed), and the 4 come.
    assert!(n.fronts[1].post(4), "req_event was not armed");
    n.poll();
    assert_eq!(n.fronts[1].received().len(), 4);
    assert_eq!(n.stats(4).rx_dropped, 0);
}

#[test]
fn blank_checksums_are_filled() {
    let mut n = lan();
    // A UDP datagram with a garbage checksum and NETTXF_csum_blank.
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&mac_of(4));
    f[6..12].copy_from_slice(&mac_of(3));
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = vec![
        0x45, 0, 0, 33, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 3, 10, 0, 0, 4,
    ];
    let c = csum::internet_checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[
        0x04, 0xd2, 0, 7, 0, 13, 0x12, 0x34, b'h', b'e', b'l', b'l', b'o',
    ]);
    n.fronts[0].send(&f, 0, NETTXF_CSUM_BLANK);
    n.poll();
    let got = n.fronts[1].received();
    assert_eq!(got.len(), 1);
    let (g, flags) = &got[0];
    assert_eq!(*flags, NETRXF_DATA_VALIDATED);
    let mut check = g.clone();
    assert!(csum::fill(&mut check));
    assert_eq!(&check, g, "the checksum was right");
    assert_ne!(&g[40..42], &[0x12, 0x34]);
}

/// 3 sends; 4 is Linux's netfront (SG, GSO both ways, IPv6 checksum
/// offload), 5 is the runtime's (no SG, no GSO, no checksum offload), 6 takes
/// TCPv4 GSO only. All on xenbr0, 32 buffers posted each.
fn gso_lan() -> Net {
    let mut n = Net::new();
    for dom in 3..=6u16 {
        n.attach(dom, "xenbr0");
    }
    n.connect(0, false);
    n.connect(1, true);
    n.connect_with(2, false, &["feature-no-csum-offload"]);
    n.connect_with(3, false, &["feature-sg", "feature-gso-tcpv4"]);
    for i in 0..4 {
        assert_eq!(n.be_state(3 + i as u16), "4");
        let _ = n.fronts[i].post(BUF_PAGES);
    }
    n.poll();
    n
}

/// Everything front end `i` receives until `want` packets came, posting its
/// buffers again as they are used.
fn drain(n: &mut Net, i: usize, want: usize) -> Vec<Rx> {
    let mut got = Vec::new();
    for _ in 0..100 {
        let mut r = n.fronts[i].received_rx();
        let used = BUF_PAGES - n.fronts[i].posted.len();
        got.append(&mut r);
        if got.len() >= want {
            break;
        }
        let _ = n.fronts[i].post(used);
        n.poll();
    }
    got
}

/// Checks a GSO frame delivered whole against what was sent: the same bytes
/// but for the TCP checksum, which holds the pseudo-header's partial sum
/// (completing it as a receiver of NETRXF_csum_blank does gives a valid one).
fn check_whole(got: &[u8], sent: &[u8]) {
    assert_eq!(got.len(), sent.len());
    let t = if sent[12] == 0x86 { 14 + 48 } else { 14 + 20 };
    assert_eq!(got[..t + 16], sent[..t + 16]);
    assert_eq!(got[t + 18..], sent[t + 18..]);
    let mut done = got.to_vec();
    let c = gso::tests::ones(&[&done[t..]]);
    done[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    let seg = &done[t..];
    let mut ph = Vec::new();
    if sent[12] == 0x86 {
        ph.extend_from_slice(&done[22..54]);
        ph.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
    } else {
        ph.extend_from_slice(&done[26..34]);
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    }
    assert_eq!(gso::tests::ones(&[&ph, seg]), 0, "completed TCP checksum");
}

/// A 64 KiB GSO packet of `v6`'s kind from 3, flooded (its destination is
/// unknown) and then unicast: whole to the front ends that take it, cut into
/// MSS-sized segments for the others.
fn gso_packet_goes_whole_or_in_segments(v6: bool) {
    let mut n = gso_lan();
    let mss = 1448usize;
    let unknown = [0x00, 0x16, 0x3e, 0, 0, 0x99];
    let hdrs = if v6 { 14 + 48 + 32 } else { 14 + 20 + 32 };
    let p = gso::tests::pattern(65535 - hdrs, 0x5A);
    let (f, t) = if v6 {
        (
            gso::tests::tcp6(unknown, mac_of(3), 0xFFFF_FF00, 0x99, &p),
            XEN_NETIF_GSO_TYPE_TCPV6,
        )
    } else {
        (
            gso::tests::tcp4(unknown, mac_of(3), 0xFFFF_FF00, 0x99, &p),
            XEN_NETIF_GSO_TYPE_TCPV4,
        )
    };
    assert_eq!(f.len(), 65535);
    // Linux's netfront: NETTXF_csum_blank | NETTXF_data_validated, the
    // checksum field left as it was (zero here).
    let ids = n.fronts[0].send_big(
        &f,
        0,
        NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
        Some((mss as u16, t)),
    );
    assert_eq!(ids.len(), 16);
    n.poll();
    let rsp = n.fronts[0].tx_responses();
    assert_eq!(rsp.len(), 17);
    assert_eq!(rsp[1].status, NETIF_RSP_NULL);
    for r in rsp.iter().filter(|r| r.status != NETIF_RSP_NULL) {
        assert_eq!(r.status, NETIF_RSP_OKAY, "{r:?}");
    }
    let nsegs = p.len().div_ceil(mss);
    let takes = |dom: u16| dom == 4 || dom == 6 && !v6;
    for dom in 4..=6u16 {
        let i = usize::from(dom - 3);
        let got = drain(&mut n, i, if takes(dom) { 1 } else { nsegs });
        if takes(dom) {
            assert_eq!(got.len(), 1, "dom {dom}");
            let r = &got[0];
            assert_eq!(
                r.flags,
                NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED | NETRXF_EXTRA_INFO | NETRXF_MORE_DATA
            );
            assert_eq!(r.gso, Some(NetifExtraGso::new(mss as u16, t)));
            check_whole(&r.data, &f);
            assert_eq!(n.stats(dom).rx_gso, 1);
        } else {
            assert_eq!(got.len(), nsegs, "dom {dom}");
            assert!(
                got.iter()
                    .all(|r| r.flags == NETRXF_DATA_VALIDATED && r.gso.is_none())
            );
            let segs: Vec<Vec<u8>> = got.into_iter().map(|r| r.data).collect();
            assert_eq!(gso::tests::verify(&f, &segs, mss), p, "dom {dom}");
            assert_eq!(n.stats(dom).rx_gso, 0);
            assert_eq!(n.stats(dom).rx_packets, nsegs as u64);
        }
        assert_eq!(n.stats(dom).rx_dropped, 0, "dom {dom}");
    }
    let s = n.stats(3);
    assert_eq!((s.tx_packets, s.tx_gso, s.tx_errors), (1, 1, 0));
    // Unicast to 5 once its MAC is learned: segments again, and only there.
    let back = frame(mac_of(3), mac_of(5), 60, 1);
    n.fronts[2].send(&back, 0, 0);
    n.poll();
    let _ = n.fronts[2].tx_responses();
    assert_eq!(n.fronts[0].received().len(), 1);
    let mut f2 = f.clone();
    f2[..6].copy_from_slice(&mac_of(5));
    n.fronts[0].send_big(&f2, 0, NETTXF_CSUM_BLANK, Some((mss as u16, t)));
    n.poll();
    let got = drain(&mut n, 2, nsegs);
    let segs: Vec<Vec<u8>> = got.into_iter().map(|r| r.data).collect();
    assert_eq!(gso::tests::verify(&f2, &segs, mss), p);
    for i in [1, 3] {
        assert!(n.fronts[i].received_rx().is_empty());
    }
    assert_eq!(n.hv.bad_copies, 0);
}

#[test]
fn gso_tcpv4_64k_whole_or_segmented() {
    gso_packet_goes_whole_or_in_segments(false);
}

#[test]
fn gso_tcpv6_64k_whole_or_segmented() {
    gso_packet_goes_whole_or_in_segments(true);
}

#[test]
fn bad_gso_packets_get_errors_and_the_rest_flows() {
    let mut n = gso_lan();
    let p = gso::tests::pattern(3000, 1);
    let good = gso::tests::tcp4(mac_of(5), mac_of(3), 1, 0x18, &p);
    let v4 = XEN_NETIF_GSO_TYPE_TCPV4;
    let mut udp = good.clone();
    udp[23] = 17;
    let mut cut_tcp = gso::tests::tcp4(mac_of(5), mac_of(3), 1, 0x18, &[]);
    cut_tcp[34 + 12] = 15 << 4; // a 60-byte header in 32 bytes
    let mut cut_ip = good[..30].to_vec();
    cut_ip[16..18].copy_from_slice(&16u16.to_be_bytes());
    let cases: [(&str, &[u8], u16, u8, bool); 8] = [
        ("good", &good, 1000, v4, true),
        ("size 0", &good, 0, v4, false),
        ("unknown GSO type", &good, 1000, 3, false),
        ("GSO on UDP", &udp, 1000, v4, false),
        ("truncated TCP header", &cut_tcp, 1000, v4, false),
        ("truncated IP header", &cut_ip, 1000, v4, false),
        (
            "TCPv6 on IPv4",
            &good,
            1000,
            XEN_NETIF_GSO_TYPE_TCPV6,
            false,
        ),
        ("good again", &good, 1400, v4, true),
    ];
    for (what, f, size, t, ok) in cases {
        let ids = n.fronts[0].send_big(f, 0, NETTXF_CSUM_BLANK, Some((size, t)));
        n.poll();
        let rsp = n.fronts[0].tx_responses();
        assert_eq!(rsp.len(), ids.len() + 1, "{what}");
        assert_eq!(rsp[1].status, NETIF_RSP_NULL, "{what}");
        let want = if ok { NETIF_RSP_OKAY } else { NETIF_RSP_ERROR };
        for r in rsp.iter().filter(|r| r.status != NETIF_RSP_NULL) {
            assert_eq!(r.status, want, "{what}");
        }
        let got = n.fronts[2].received();
        if ok {
            let segs: Vec<Vec<u8>> = got.into_iter().map(|r| r.0).collect();
            assert_eq!(gso::tests::verify(f, &segs, usize::from(size)), p, "{what}");
        } else {
            assert!(got.is_empty(), "{what}");
        }
        let used = BUF_PAGES - n.fronts[2].posted.len();
        let _ = n.fronts[2].post(used);
    }
    let s = n.stats(3);
    assert_eq!((s.tx_packets, s.tx_gso, s.tx_errors), (2, 2, 6));
    assert_eq!(n.be_state(3), "4", "bad GSO packets are not fatal");
}

#[test]
fn ipv6_blank_checksums_are_filled() {
    let mut n = lan();
    // An IPv6 UDP datagram with a garbage checksum and NETTXF_csum_blank.
    let mut f = vec![0u8; 14];
    f[..6].copy_from_slice(&mac_of(4));
    f[6..12].copy_from_slice(&mac_of(3));
    f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 13, 17, 64]);
    f.extend((0..32u8).map(|i| i ^ 0x20));
    f.extend_from_slice(&[
        0x04, 0xd2, 0, 7, 0, 13, 0x12, 0x34, b'h', b'e', b'l', b'l', b'o',
    ]);
    n.fronts[0].send(&f, 0, NETTXF_CSUM_BLANK);
    n.poll();
    let got = n.fronts[1].received();
    assert_eq!(got.len(), 1);
    let (g, flags) = &got[0];
    assert_eq!(*flags, NETRXF_DATA_VALIDATED);
    let mut ph = Vec::new();
    ph.extend_from_slice(&g[22..54]);
    ph.extend_from_slice(&[0, 0, 0, 13, 0, 0, 0, 17]);
    assert_eq!(gso::tests::ones(&[&ph, &g[54..]]), 0, "a valid checksum");
}

#[test]
fn hot_unplug_and_destroy_leave_others_flowing() {
    let mut n = lan();
    assert!(n.nb.detach(&mut n.xs, &mut n.hv, 5, 0));
    assert_eq!(n.be_state(5), "5");
    n.xs.write(&n.fronts[2].fe("state"), b"6").unwrap();
    n.poll();
    assert_eq!(
        n.nb.vifs(Some(5)).count(),
        0,
        "removed once the front end closed"
    );
    assert!(n.xs.read("/local/domain/5/device/vif/0").is_err());
    assert!(!n.nb.detach(&mut n.xs, &mut n.hv, 5, 0));
    n.nb.detach_domain(&mut n.xs, &mut n.hv, 4);
    let b = frame(BCAST, mac_of(3), 60, 1);
    n.fronts[0].send(&b, 0, 0);
    n.poll();
    assert_eq!(n.fronts[0].tx_responses()[0].status, NETIF_RSP_OKAY);
    assert_eq!(
        n.nb.bridges()
            .map(|(b, s)| (b.to_string(), s.ports().len()))
            .collect::<Vec<_>>(),
        [("xenbr0".to_string(), 1), ("xenbr1".to_string(), 1)]
    );
}

#[test]
fn impossible_ring_index_halts_that_vif() {
    let mut n = lan();
    n.fronts[0].tx[0].store(1000, Ordering::Release);
    n.poll();
    assert_eq!(n.be_state(3), "5");
    assert!(n.error(3).contains("impossible TX ring index"));
    // 4 still talks to 5.
    let f = frame(mac_of(5), mac_of(4), 60, 1);
    n.fronts[1].send(&f, 0, 0);
    n.poll();
    assert_eq!(n.fronts[2].received().len(), 1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// A hostile front end: random slots. Every slot is answered exactly once
    /// with a known status, the back end never asks for a copy past a page,
    /// and only packets that pass the checks reach the other side, intact.
    #[test]
    fn hostile_tx_slots(
        slots in prop::collection::vec(
            (0u32..40, 0u16..4200, any::<u8>(), any::<u16>(), 0u16..5000),
            1..120,
        ),
    ) {
        let mut n = lan();
        let slots: Vec<NetifTxRequest> = slots
            .into_iter()
            .enumerate()
            .map(|(k, (g, offset, fl, _id, size))| NetifTxRequest {
                // Granted buffers, the rings themselves and refs never given.
                gref: GrantRef(if g < 32 { TX_BUF + g } else { g + 500 }),
                offset,
                flags: u16::from(fl & 0xF),
                id: k as u16,
                size,
            })
            .collect();
        // Fill the buffers with a pattern, so what arrives can be checked.
        for p in 0..BUF_PAGES {
            let bytes: Vec<u8> = (0..4096).map(|i| (i + p * 31) as u8).collect();
            fill_page(&n.fronts[0].txbuf, p, &bytes);
        }
        let mut sent = 0usize;
        for chunk in slots.chunks(60) {
            n.fronts[0].send_slots(chunk);
            n.poll();
            let rsp = n.fronts[0].tx_responses();
            prop_assert_eq!(rsp.len(), chunk.len());
            for r in &rsp {
                prop_assert!(matches!(r.status, NETIF_RSP_OKAY | NETIF_RSP_ERROR | NETIF_RSP_NULL));
                if r.status == NETIF_RSP_OKAY {
                    // Only a slot naming a granted buffer page can be sent.
                    let g = slots[usize::from(r.id)].gref.0;
                    prop_assert!((TX_BUF..TX_BUF + BUF_PAGES as u32).contains(&g), "{g}");
                }
            }
            sent += rsp.iter().filter(|r| r.status == NETIF_RSP_OKAY).count();
        }
        prop_assert_eq!(n.hv.bad_copies, 0);
        prop_assert_eq!(n.be_state(3), "4");
        let _ = sent;
        // What 4 and 5 received are frames of at least a header, each a
        // run of the pattern or pieces of it: at least not garbage lengths.
        for i in [1, 2] {
            for (f, _) in n.fronts[i].received() {
                prop_assert!(f.len() >= tx::ETH_HLEN);
            }
        }
    }

    /// The parser against a model: a run of well-formed packets (1 to 18
    /// slots, optional extras) is read back exactly.
    #[test]
    fn parse_reads_well_formed_packets(
        pkts in prop::collection::vec(
            (prop::collection::vec((0u16..2048, 0u16..2048), 1..18), 0usize..3),
            1..10,
        ),
    ) {
        let mut slots = Vec::new();
        let mut want = Vec::new();
        for (k, (frags, extras)) in pkts.iter().enumerate() {
            let total: usize = frags.iter().map(|(_, l)| usize::from(*l)).sum::<usize>() + 14;
            prop_assume!(total <= 0xFFFF);
            let mut fl = if frags.len() > 1 { NETTXF_MORE_DATA } else { 0 };
            if *extras > 0 {
                fl |= NETTXF_EXTRA_INFO;
            }
            let (o0, l0) = (frags[0].0 % 2000, frags[0].1 % 2000);
            let total = total - usize::from(frags[0].1) + usize::from(l0);
            let first_len = l0 + 14;
            slots.push(NetifTxRequest { gref: GrantRef(k as u32), offset: o0, flags: fl, id: 0, size: total as u16 });
            for x in 0..*extras {
                let mut b = [0u8; 12];
                b[0] = XEN_NETIF_EXTRA_TYPE_HASH;
                b[1] = if x + 1 < *extras { XEN_NETIF_EXTRA_FLAG_MORE } else { 0 };
                slots.push(NetifTxRequest::read_from_bytes(&b).unwrap());
            }
            let mut exp = vec![tx::Frag { gref: GrantRef(k as u32), offset: o0, len: first_len }];
            for (j, (o, l)) in frags.iter().enumerate().skip(1) {
                let more = if j + 1 < frags.len() { NETTXF_MORE_DATA } else { 0 };
                slots.push(NetifTxRequest { gref: GrantRef(1000 + j as u32), offset: *o, flags: more, id: 0, size: *l });
                exp.push(tx::Frag { gref: GrantRef(1000 + j as u32), offset: *o, len: *l });
            }
            // Empty slots stay (the copy checks their references).
            want.push((exp, total, 1 + extras + frags.len() - 1));
        }
        let mut at = 0;
        for (frags, len, nslots) in want {
            let p = tx::parse(&slots[at..]).unwrap();
            prop_assert_eq!(p.slots.len(), nslots);
            at += nslots;
            match p.verdict {
                Verdict::Send { frags: f, len: l, .. } => {
                    prop_assert_eq!(f, frags);
                    prop_assert_eq!(l, len);
                }
                v => prop_assert!(false, "{v:?}"),
            }
        }
        prop_assert_eq!(at, slots.len());
    }
}

/// Uplinks: dom0's NICs on the bridges (`uplink.rs`).
mod uplinks {
    use super::*;
    use crate::nics::{MAX_FRAME, MemNics};

    const WIRE: [u8; 6] = [0x52, 0x55, 0x0a, 0, 2, 2];

    /// [`lan`] with two NICs: eth0 on xenbr0, eth1 on xenbr1.
    fn lan_with_nics() -> (Net, MemNics) {
        let mut n = lan();
        let mut nics = MemNics::default();
        nics.add([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        nics.add([0x52, 0x54, 0, 0x12, 0x34, 0x57]);
        n.nb.add_uplinks(&nics);
        (n, nics)
    }

    /// One pass as the agent runs it: the wire in, the vifs, the wire out.
    fn pass(n: &mut Net, nics: &mut MemNics) {
        let now = n.hv.now_ns();
        n.nb.from_wire(nics, now);
        n.poll();
        n.nb.to_wire(nics);
    }

    #[test]
    fn each_nic_joins_its_bridge_once() {
        let (mut n, nics) = lan_with_nics();
        n.nb.add_uplinks(&nics);
        assert_eq!(n.nb.uplinks().len(), 2);
        let ports = |n: &Net, br: &str| {
            n.nb.bridges()
                .find(|(b, _)| *b == br)
                .map(|(_, s)| s.ports().to_vec())
                .unwrap()
        };
        assert_eq!(ports(&n, "xenbr0").len(), 4, "three vifs and eth0");
        assert_eq!(ports(&n, "xenbr1").len(), 2, "one vif and eth1");
        let names: Vec<String> = ports(&n, "xenbr1")
            .into_iter()
            .map(|p| uplink::port_name(&n.nb, p))
            .collect();
        assert_eq!(names, ["vif6.0", "eth1"]);
        let info = n.nb.bridge_info();
        assert_eq!(info.len(), 2);
        assert_eq!(info[0].name, "xenbr0");
        assert_eq!(info[0].ports, ["eth0", "vif3.0", "vif4.0", "vif5.0"]);
        assert_eq!(info[1].ports, ["eth1", "vif6.0"], "the uplink first");
        // A bridge keeps its uplink when its last vif goes.
        n.nb.detach_domain(&mut n.xs, &mut n.hv, 6);
        assert_eq!(ports(&n, "xenbr1").len(), 1);
    }

    #[test]
    fn frames_cross_the_uplink_both_ways() {
        let (mut n, mut nics) = lan_with_nics();
        // A broadcast from domain 3 goes out of eth0 (its bridge's), not eth1.
        let b = frame(BCAST, mac_of(3), 60, 1);
        n.fronts[0].send(&b, 0, 0);
        pass(&mut n, &mut nics);
        assert_eq!(nics.sent[0], core::slice::from_ref(&b));
        assert!(nics.sent[1].is_empty());
        for i in [1, 2] {
            assert_eq!(n.fronts[i].received(), [(b.clone(), 0)]);
        }
        // The wire answers 3: only 3 gets it, and the wire's MAC is learned.
        let a = frame(mac_of(3), WIRE, 90, 2);
        nics.incoming[0].push(a.clone());
        pass(&mut n, &mut nics);
        assert_eq!(n.fronts[0].received(), [(a, 0)]);
        assert!(n.fronts[1].received().is_empty() && n.fronts[2].received().is_empty());
        // So 4's unicast to the wire goes out of eth0 and to no vif.
        let u = frame(WIRE, mac_of(4), 1514, 3);
        n.fronts[1].send(&u, 1, 0);
        pass(&mut n, &mut nics);
        assert_eq!(nics.sent[0].last(), Some(&u));
        assert!(n.fronts[0].received().is_empty() && n.fronts[2].received().is_empty());
        // A broadcast from the wire of xenbr1 reaches domain 6 only.
        let w = frame(BCAST, WIRE, 60, 4);
        nics.incoming[1].push(w.clone());
        pass(&mut n, &mut nics);
        assert_eq!(n.fronts[3].received(), [(w, 0)]);
        for i in 0..3 {
            assert!(n.fronts[i].received().is_empty());
        }
        let s = n.nb.uplinks()[0].stats;
        assert_eq!((s.sent, s.received, s.dropped), (2, 1, 0));
        assert_eq!(s.sent_bytes, 60 + 1514);
        assert_eq!(n.nb.uplinks()[1].stats.received, 1);
    }

    #[test]
    fn frames_too_long_for_a_wire_are_dropped_at_the_uplink_only() {
        let (mut n, mut nics) = lan_with_nics();
        // A 6000-byte broadcast in two slots: domain 4 (feature-sg) gets it,
        // the wire cannot.
        let f = frame(BCAST, mac_of(3), 6000, 9);
        let mut pages = vec![vec![0u8; 4096]; 2];
        pages[0][..4000].copy_from_slice(&f[..4000]);
        pages[1][..2000].copy_from_slice(&f[4000..]);
        for (k, p) in pages.iter().enumerate() {
            fill_page(&n.fronts[0].txbuf, k, p);
        }
        let req = |page: u32, flags: u16, size: u16| NetifTxRequest {
            gref: GrantRef(TX_BUF + page),
            offset: 0,
            flags,
            id: page as u16,
            size,
        };
        n.fronts[0].send_slots(&[req(0, NETTXF_MORE_DATA, 6000), req(1, 0, 2000)]);
        pass(&mut n, &mut nics);
        assert_eq!(n.fronts[1].received().len(), 1);
        assert!(nics.sent[0].is_empty());
        assert_eq!(n.nb.uplinks()[0].stats.dropped, 1);
        assert!(f.len() > MAX_FRAME);
    }

    #[test]
    fn a_full_nic_or_queue_drops_only_the_uplinks_frames() {
        let (mut n, mut nics) = lan_with_nics();
        nics.queue_limit = Some(3);
        // 300 broadcasts from domain 3 while dom0 does not reach the NIC: the
        // uplink keeps QUEUE_FRAMES; the NIC then takes 3 and refuses the rest.
        for k in 0..300u32 {
            n.fronts[0].send(&frame(BCAST, mac_of(3), 60, k as u8), k % 16, 0);
            n.poll();
            let _ = n.fronts[0].tx_responses();
            for i in 1..3 {
                let _ = n.fronts[i].received();
                let _ = n.fronts[i].post(1);
            }
        }
        assert_eq!(n.nb.uplinks()[0].queued(), uplink::QUEUE_FRAMES);
        n.nb.to_wire(&mut nics);
        assert_eq!(nics.sent[0].len(), 3);
        let s = n.nb.uplinks()[0].stats;
        assert_eq!(s.sent, 3);
        assert_eq!(s.dropped, 300 - 3);
        // The vifs on the bridge got every frame.
        assert_eq!(n.stats(4).rx_packets, 300);
        assert_eq!(n.stats(4).rx_dropped, 0);
    }

    #[test]
    fn gso_frames_reach_the_wire_in_segments() {
        let mut n = gso_lan();
        let mut nics = MemNics::default();
        nics.add([0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        n.nb.add_uplinks(&nics);
        let mss = 1448usize;
        let p = gso::tests::pattern(20_000, 0x33);
        let f = gso::tests::tcp4(WIRE, mac_of(3), 7, 0x99, &p);
        n.fronts[0].send_big(
            &f,
            0,
            NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED,
            Some((mss as u16, XEN_NETIF_GSO_TYPE_TCPV4)),
        );
        pass(&mut n, &mut nics);
        let segs = nics.sent[0].clone();
        assert_eq!(segs.len(), p.len().div_ceil(mss));
        assert!(segs.iter().all(|s| s.len() <= MAX_FRAME));
        assert_eq!(gso::tests::verify(&f, &segs, mss), p);
        let s = n.nb.uplinks()[0].stats;
        assert_eq!((s.sent, s.dropped), (segs.len() as u64, 0));
    }

    #[test]
    fn the_wire_cannot_flood_dom0_in_one_pass() {
        let (mut n, mut nics) = lan_with_nics();
        for k in 0..100u8 {
            nics.incoming[0].push(frame(mac_of(6), WIRE, 60, k));
        }
        let now = n.hv.now_ns();
        assert!(n.nb.from_wire(&mut nics, now), "more to come");
        assert_eq!(nics.incoming[0].len(), 36);
        assert!(!n.nb.from_wire(&mut nics, now));
        // Domain 6 is on xenbr1: nothing from eth0 reaches it.
        n.poll();
        assert!(n.fronts[3].received().is_empty());
    }
}

mod netctl;
