//! Multicast control and the control ring (hashing) against front ends
//! played by the test.

use hypercall_abi::io::netif::{
    _XEN_NETIF_CTRL_HASH_TYPE_IPV4, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, NETIF_RSP_ERROR, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_HASH_TYPE_IPV4, XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW,
    XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER, XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED,
    XEN_NETIF_CTRL_STATUS_SUCCESS, XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING,
    XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING, XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE,
    XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE,
    XEN_NETIF_CTRL_TYPE_INVALID, XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
    XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
    XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE,
};

use super::*;
use crate::netback::hash::tests::{MS_KEY, V4, ip4, ip6, v6_vectors};
use crate::netback::hash::{ALL_TYPES, HashState};

const GROUP: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01];
const GROUP2: [u8; 6] = [0x33, 0x33, 0x00, 0x00, 0x00, 0x01];

/// 3 sends multicast, broadcast and unicast on `lan()`; which of 4 and 5
/// get each (`(got by 4, got by 5)`, counted).
fn flood(n: &mut Net, dst: [u8; 6], seed: u8) -> (usize, usize) {
    let f = frame(dst, mac_of(3), 60, seed);
    n.fronts[0].send(&f, 0, 0);
    n.poll();
    let _ = n.fronts[0].tx_responses();
    let a = n.fronts[1].received().len();
    let b = n.fronts[2].received().len();
    let _ = n.fronts[1].post(a);
    let _ = n.fronts[2].post(b);
    n.poll();
    (a, b)
}

fn set_mcast_ctrl(n: &mut Net, i: usize, on: bool) {
    let k = n.fronts[i].fe("request-multicast-control");
    n.xs.write(&k, if on { b"1" } else { b"0" }).unwrap();
    n.poll();
}

/// Sends a multicast add or delete from front end `i`; its status.
fn mcast(n: &mut Net, i: usize, add: bool, addr: [u8; 6]) -> i16 {
    n.fronts[i].mcast(add, addr, 7);
    n.poll();
    let r = n.fronts[i].tx_responses();
    assert_eq!(r.len(), 2, "a request and its extra, answered once each");
    assert_eq!((r[0].id, r[1].status), (7, NETIF_RSP_NULL));
    r[0].status
}

#[test]
fn multicast_filter_on_off_add_del_and_broadcast() {
    let mut n = lan();
    // Off: every multicast frame, as before.
    assert_eq!(flood(&mut n, GROUP, 1), (1, 1));
    assert!(
        n.nb.vifs(Some(4))
            .next()
            .unwrap()
            .multicast_filter()
            .is_none()
    );
    // 4 turns filtering on (dynamic): its list is empty, 5 still gets all.
    set_mcast_ctrl(&mut n, 1, true);
    assert_eq!(
        n.nb.vifs(Some(4)).next().unwrap().multicast_filter(),
        Some(&[][..])
    );
    assert_eq!(flood(&mut n, GROUP, 2), (0, 1));
    assert_eq!(n.stats(4).rx_mcast_filtered, 1);
    // Broadcast and unicast are never filtered.
    assert_eq!(flood(&mut n, BCAST, 3), (1, 1));
    assert_eq!(flood(&mut n, mac_of(4), 4).0, 1);
    // 4 adds GROUP: it gets GROUP, not GROUP2.
    assert_eq!(mcast(&mut n, 1, true, GROUP), NETIF_RSP_OKAY);
    assert_eq!(flood(&mut n, GROUP, 5), (1, 1));
    assert_eq!(flood(&mut n, GROUP2, 6), (0, 1));
    // A control request is not a packet: nothing was switched from 4.
    assert_eq!(n.stats(4).tx_packets, 0);
    // Deleted: filtered again (deleting what is not there is OKAY too).
    assert_eq!(mcast(&mut n, 1, false, GROUP), NETIF_RSP_OKAY);
    assert_eq!(mcast(&mut n, 1, false, GROUP), NETIF_RSP_OKAY);
    assert_eq!(flood(&mut n, GROUP, 7), (0, 1));
    // Added while filtering is off (netif.h: the list may be amended at any
    // time), applied when it is turned on.
    set_mcast_ctrl(&mut n, 1, false);
    assert_eq!(flood(&mut n, GROUP2, 8), (1, 1));
    assert_eq!(mcast(&mut n, 1, true, GROUP2), NETIF_RSP_OKAY);
    set_mcast_ctrl(&mut n, 1, true);
    assert_eq!(flood(&mut n, GROUP2, 9), (1, 1));
    assert_eq!(flood(&mut n, GROUP, 10), (0, 1));
    assert_eq!(n.stats(4).tx_errors, 0);
}

#[test]
fn multicast_control_at_connect_and_a_fresh_list_on_reconnect() {
    let mut n = Net::new();
    for dom in [3, 4] {
        let i = n.attach(dom, "xenbr0");
        if dom == 4 {
            let k = n.fronts[i].fe("request-multicast-control");
            n.xs.write(&k, b"1").unwrap();
        }
        n.connect(i, false);
        let _ = n.fronts[i].post(8);
    }
    let got = |n: &mut Net, seed| {
        n.fronts[0].send(&frame(GROUP, mac_of(3), 60, seed), 0, 0);
        n.poll();
        let _ = n.fronts[0].tx_responses();
        let k = n.fronts[1].received().len();
        let _ = n.fronts[1].post(k);
        n.poll();
        k
    };
    assert_eq!(got(&mut n, 1), 0, "filtering from the start");
    assert_eq!(mcast(&mut n, 1, true, GROUP), NETIF_RSP_OKAY);
    assert_eq!(got(&mut n, 2), 1);
    // The front end reconnects: the list starts empty (Linux frees it with
    // the data rings).
    for st in [b"5", b"6", b"1"] {
        n.xs.write(&n.fronts[1].fe("state"), st).unwrap();
        n.poll();
    }
    n.fronts[1].idx.set([0; 4]);
    n.fronts[1].posted.clear();
    NetifTxFrontRing::init(&n.fronts[1].tx).unwrap();
    NetifRxFrontRing::init(&n.fronts[1].rx).unwrap();
    n.connect(1, false);
    let _ = n.fronts[1].post(8);
    assert_eq!(
        n.nb.vifs(Some(4)).next().unwrap().multicast_filter(),
        Some(&[][..])
    );
    assert_eq!(got(&mut n, 3), 0);
}

#[test]
fn multicast_list_holds_64_and_refuses_more_as_linux() {
    let mut n = lan();
    set_mcast_ctrl(&mut n, 1, true);
    for k in 0..MCAST_MAX as u8 {
        let a = [0x01, 0x00, 0x5e, 0, 1, k];
        assert_eq!(mcast(&mut n, 1, true, a), NETIF_RSP_OKAY, "{k}");
    }
    // The 65th: NETIF_RSP_ERROR (Linux's -ENOSPC), not a TX error, and the
    // filter stays as it was (Linux has no overflow mode).
    assert_eq!(mcast(&mut n, 1, true, GROUP), NETIF_RSP_ERROR);
    assert_eq!(n.stats(4).tx_errors, 0);
    assert_eq!(
        n.nb.vifs(Some(4))
            .next()
            .unwrap()
            .multicast_filter()
            .map(<[_]>::len),
        Some(MCAST_MAX)
    );
    assert_eq!(flood(&mut n, GROUP, 1), (0, 1));
    assert_eq!(flood(&mut n, [0x01, 0x00, 0x5e, 0, 1, 63], 2), (1, 1));
    // One deleted makes room.
    assert_eq!(
        mcast(&mut n, 1, false, [0x01, 0x00, 0x5e, 0, 1, 0]),
        NETIF_RSP_OKAY
    );
    assert_eq!(mcast(&mut n, 1, true, GROUP), NETIF_RSP_OKAY);
    assert_eq!(flood(&mut n, GROUP, 3), (1, 1));
}

/// Writes the control ring's keys for front end `i` and connects it as
/// Linux's netfront does.
fn connect_ctrl(n: &mut Net, i: usize) {
    let f = &n.fronts[i];
    let (a, b) = (f.fe("ctrl-ring-ref"), f.fe("event-channel-ctrl"));
    n.xs.write(&a, CTRL_RING.to_string().as_bytes()).unwrap();
    n.xs.write(&b, CTRL_PORT.to_string().as_bytes()).unwrap();
    n.connect(i, false);
}

fn req(id: u16, type_: u16, data: [u32; 3]) -> XenNetifCtrlRequest {
    XenNetifCtrlRequest { id, type_, data }
}

/// Sends `reqs` on front end `i`'s control ring; their (status, data).
fn ctrl(n: &mut Net, i: usize, reqs: &[XenNetifCtrlRequest]) -> Vec<(u32, u32)> {
    n.fronts[i].ctrl_send(reqs);
    n.poll();
    let r = n.fronts[i].ctrl_responses();
    assert_eq!(r.len(), reqs.len(), "each request answered once");
    r.iter()
        .zip(reqs)
        .map(|(r, q)| {
            assert_eq!((r.id, r.type_), (q.id, q.type_), "id and type echoed");
            (r.status, r.data)
        })
        .collect()
}

const OK: u32 = XEN_NETIF_CTRL_STATUS_SUCCESS;
const BAD: u32 = XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER;
const NOSUP: u32 = XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED;

#[test]
fn every_control_request_gets_linuxs_status() {
    let mut n = Net::new();
    n.attach(3, "xenbr0");
    connect_ctrl(&mut n, 0);
    assert_eq!(n.be_state(3), "4", "{}", n.error(3));
    assert_eq!((n.hv.rings.len(), n.hv.ports.len()), (3, 2));
    assert_eq!(
        n.nb.vifs(Some(3)).next().unwrap().ctrl_ring(),
        Some((CTRL_RING, CTRL_PORT))
    );
    let mut page = vec![0u8; 4096];
    page[..40].copy_from_slice(&MS_KEY);
    fill_page(&n.fronts[0].ctrl_page, 0, &page);
    use XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM as ALG;
    let got = ctrl(
        &mut n,
        0,
        &[
            // No algorithm yet: no flags to get or set.
            req(1, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3]),
            req(2, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [1, 0, 0]),
            req(3, ALG, [2, 0, 0]),
            req(4, ALG, [XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, 0, 0]),
            req(5, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3]),
            req(6, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [0x10, 0, 0]),
            req(7, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [ALL_TYPES, 0, 0]),
            // Keys: too long, a grant never given, a good one.
            req(8, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [CTRL_PAGE, 41, 0]),
            req(9, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [999, 40, 0]),
            req(10, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [CTRL_PAGE, 40, 0]),
            // Mapping sizes.
            req(11, XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE, [0; 3]),
            req(12, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [129, 0, 0]),
            req(13, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE, [16, 0, 0]),
            // Mappings: the key page's first entries are not queue 0.
            req(14, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [CTRL_PAGE, 4, 0]),
            // Past the size, wrapping, a bad grant, more than a page.
            req(15, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [CTRL_RING, 4, 14]),
            req(
                16,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [CTRL_RING, 2, u32::MAX],
            ),
            req(17, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [999, 4, 0]),
            req(
                18,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [CTRL_RING, 2000, 0],
            ),
            // Unknown types (Linux 6.1 has no GREF_MAPPING).
            req(19, XEN_NETIF_CTRL_TYPE_INVALID, [0; 3]),
            req(20, XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE, [0; 3]),
            req(21, XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING, [0; 3]),
            req(22, XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING, [0; 3]),
            req(23, 0xFFFF, [1, 2, 3]),
            req(24, XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING, [CTRL_PAGE, 0, 16]),
        ],
    );
    assert_eq!(
        got,
        [
            (NOSUP, 0),
            (BAD, 0),
            (BAD, 0),
            (OK, 0),
            (OK, ALL_TYPES),
            (BAD, 0),
            (OK, 0),
            (BAD, 0),
            (BAD, 0),
            (OK, 0),
            (OK, 128),
            (BAD, 0),
            (OK, 0),
            (BAD, 0),
            (BAD, 0),
            (BAD, 0),
            (BAD, 0),
            (BAD, 0),
            (NOSUP, 0),
            (NOSUP, 0),
            (NOSUP, 0),
            (NOSUP, 0),
            (NOSUP, 0),
            (OK, 0),
        ]
    );
    // BUFFER_OVERFLOW is named by netif.h but never sent (Linux neither).
    assert!(
        !got.iter()
            .any(|(s, _)| *s == XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW)
    );
    // Queue-0 entries (a zeroed page) are taken.
    fill_page(&n.fronts[0].ctrl_page, 0, &[0u8; 4096]);
    assert_eq!(
        ctrl(
            &mut n,
            0,
            &[req(
                25,
                XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING,
                [CTRL_PAGE, 16, 0]
            )]
        ),
        [(OK, 0)]
    );
    let h = n.nb.vifs(Some(3)).next().unwrap().hash().unwrap().clone();
    let mut want = HashState {
        alg: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
        flags: ALL_TYPES,
        key: MS_KEY,
        size: 16,
        ..HashState::default()
    };
    want.mapping = h.mapping;
    assert_eq!(h, want);
    assert!(h.mapping.iter().all(|q| *q == 0));
    // A short key is zero-padded; a zero-length one clears it.
    let mut page = vec![0u8; 4096];
    page[..4].copy_from_slice(&[9, 9, 9, 9]);
    fill_page(&n.fronts[0].ctrl_page, 0, &page);
    assert_eq!(
        ctrl(
            &mut n,
            0,
            &[req(26, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [CTRL_PAGE, 2, 0])]
        ),
        [(OK, 0)]
    );
    let key = n.nb.vifs(Some(3)).next().unwrap().hash().unwrap().key;
    assert_eq!(
        (&key[..3], key[2..].iter().all(|b| *b == 0)),
        (&[9, 9, 0][..], true)
    );
    assert_eq!(
        ctrl(
            &mut n,
            0,
            &[req(27, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [999, 0, 0])]
        ),
        [(OK, 0)],
        "length 0: no copy, the key cleared"
    );
    assert_eq!(
        n.nb.vifs(Some(3)).next().unwrap().hash().unwrap().key,
        [0; 40]
    );
    assert_eq!(n.hv.bad_copies, 0);
    // The algorithm NONE again: flags cannot be read.
    assert_eq!(
        ctrl(
            &mut n,
            0,
            &[
                req(28, ALG, [0, 0, 0]),
                req(29, XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS, [0; 3])
            ]
        ),
        [(OK, 0), (NOSUP, 0)]
    );
    assert!(!n.hv.notified.is_empty(), "the front end is told");
}

/// 3 sends; 4 (Linux-like, SG and GSO) and 5 (no SG) have control rings,
/// 6 has none. All on xenbr0.
fn hash_lan() -> Net {
    let mut n = Net::new();
    for dom in 3..=6u16 {
        n.attach(dom, "xenbr0");
    }
    n.connect(0, false);
    connect_ctrl(&mut n, 1);
    let f = &n.fronts[2];
    let (a, b) = (f.fe("ctrl-ring-ref"), f.fe("event-channel-ctrl"));
    n.xs.write(&a, CTRL_RING.to_string().as_bytes()).unwrap();
    n.xs.write(&b, CTRL_PORT.to_string().as_bytes()).unwrap();
    n.connect_with(2, false, &["feature-no-csum-offload"]);
    n.connect(3, false);
    for i in 0..4 {
        assert_eq!(n.be_state(3 + i as u16), "4", "{}", n.error(3 + i as u16));
        let _ = n.fronts[i].post(BUF_PAGES);
    }
    n.poll();
    n
}

/// Front end `i` picks Toeplitz with the RSS suite's key and `flags`.
fn enable_hash(n: &mut Net, i: usize, flags: u32) {
    let mut page = vec![0u8; 4096];
    page[..40].copy_from_slice(&MS_KEY);
    fill_page(&n.fronts[i].ctrl_page, 0, &page);
    let got = ctrl(
        n,
        i,
        &[
            req(
                1,
                XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM,
                [XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ, 0, 0],
            ),
            req(2, XEN_NETIF_CTRL_TYPE_SET_HASH_KEY, [CTRL_PAGE, 40, 0]),
            req(3, XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS, [flags, 0, 0]),
        ],
    );
    assert_eq!(got, [(OK, 0); 3]);
}

/// Sends `f` from 3 to everyone (broadcast destination) and returns what
/// fronts 1..=3 received.
fn bcast(n: &mut Net, mut f: Vec<u8>) -> Vec<Vec<Rx>> {
    f[..6].copy_from_slice(&BCAST);
    f[6..12].copy_from_slice(&mac_of(3));
    n.fronts[0].send(&f, 0, 0);
    n.poll();
    assert_eq!(n.fronts[0].tx_responses()[0].status, NETIF_RSP_OKAY);
    (1..=3).map(|i| drain(n, i, 1)).collect()
}

#[test]
fn rx_frames_carry_the_toeplitz_hash_the_front_end_asked_for() {
    let mut n = hash_lan();
    // Before any hash settings: no extras.
    let (s, d, sp, dp, h2, h4) = V4[0];
    let tcp = ip4(s, d, 6, 0, sp, dp);
    for got in bcast(&mut n, tcp.clone()) {
        assert!(got[0].hash.is_none() && got[0].flags & NETRXF_EXTRA_INFO == 0);
    }
    // The key alone (flags 0) gives none either.
    enable_hash(&mut n, 1, 0);
    assert!(bcast(&mut n, tcp.clone())[0][0].hash.is_none());
    enable_hash(&mut n, 1, ALL_TYPES);
    enable_hash(&mut n, 2, XEN_NETIF_CTRL_HASH_TYPE_IPV4);
    let got = bcast(&mut n, tcp.clone());
    // 4: IPv4 + TCP, the extra after the first slot, flagged on it.
    let r = &got[0][0];
    assert_eq!(r.data[12..], tcp[12..]);
    assert_ne!(r.flags & NETRXF_EXTRA_INFO, 0);
    let x = r.hash.unwrap();
    assert_eq!(
        (x.type_, x.flags, x.htype, u32::from(x.algorithm), x.value()),
        (
            XEN_NETIF_EXTRA_TYPE_HASH,
            0,
            _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
            XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
            h4
        )
    );
    assert_eq!(&x.as_bytes()[4..], &h4.to_le_bytes(), "value LSB first");
    // 5 (no SG: the frame in one slot and its extra in the next) asked for
    // IPv4 only; 6 has no control ring.
    assert_eq!(
        got[1][0].hash.map(|x| (x.htype, x.value())),
        Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4, h2))
    );
    assert!(got[2][0].hash.is_none());
    // Every RSS vector, IPv4 and IPv6, as TCP and as UDP.
    for (s, d, sp, dp, h2, h4) in V4 {
        let got = bcast(&mut n, ip4(s, d, 6, 0, sp, dp));
        assert_eq!(got[0][0].hash.unwrap().value(), h4);
        assert_eq!(got[1][0].hash.unwrap().value(), h2);
        let got = bcast(&mut n, ip4(s, d, 17, 0, sp, dp));
        assert_eq!(
            got[0][0].hash.map(|x| (x.htype, x.value())),
            Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4, h2))
        );
    }
    for (s, d, sp, dp, _h2, h4) in v6_vectors() {
        let got = bcast(&mut n, ip6(s, d, &[0], 6, sp, dp));
        assert_eq!(
            got[0][0].hash.map(|x| (x.htype, x.value())),
            Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, h4))
        );
        assert!(got[1][0].hash.is_none(), "5 did not ask for IPv6");
    }
    // Not IP: no hash.
    let got = bcast(&mut n, frame(BCAST, mac_of(3), 60, 1));
    assert!(got.iter().all(|r| r[0].hash.is_none()));
}

#[test]
fn a_gso_frame_carries_its_gso_extra_then_the_hash() {
    let mut n = hash_lan();
    enable_hash(&mut n, 1, ALL_TYPES);
    let p = gso::tests::pattern(20000, 3);
    let f = gso::tests::tcp4(mac_of(4), mac_of(3), 1, 0x18, &p);
    n.fronts[0].send_big(&f, 0, 0, Some((1448, XEN_NETIF_GSO_TYPE_TCPV4)));
    n.poll();
    let got = drain(&mut n, 1, 1);
    assert_eq!(got.len(), 1);
    let g = got[0].gso.expect("the GSO extra");
    assert_eq!(
        g.flags & XEN_NETIF_EXTRA_FLAG_MORE,
        XEN_NETIF_EXTRA_FLAG_MORE
    );
    let h = got[0].hash.expect("the hash extra");
    assert_eq!(h.flags, 0, "the last extra");
    let t = hash::tuple(ALL_TYPES, &f).unwrap();
    assert_eq!(h.value(), hash::toeplitz(&MS_KEY, t.bytes()));
    assert_eq!(h.htype, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP);
    check_whole(&got[0].data, &f);
}

#[test]
fn hostile_control_rings_are_fatal_for_their_vif_only() {
    for (key, value, why) in [
        ("ctrl-ring-ref", "99", "mapping shared-frame 99"),
        ("ctrl-ring-ref", "13", "mapping shared-frame 13"), // read-only
        ("event-channel-ctrl", "", "event-channel-ctrl"),
        ("event-channel-ctrl", "5000", "port 5000"),
        ("req_prod", "", "impossible ring indices"),
    ] {
        let mut n = Net::new();
        n.attach(3, "xenbr0");
        n.attach(4, "xenbr0");
        n.connect(1, false);
        let f = &n.fronts[0];
        let (a, b) = (f.fe("ctrl-ring-ref"), f.fe("event-channel-ctrl"));
        n.xs.write(&a, CTRL_RING.to_string().as_bytes()).unwrap();
        n.xs.write(&b, CTRL_PORT.to_string().as_bytes()).unwrap();
        match key {
            "req_prod" => n.fronts[0].ctrl[0].store(129, Ordering::Release),
            _ if value.is_empty() => n.xs.rm(&f.fe(key)).unwrap(),
            _ => n.xs.write(&f.fe(key), value.as_bytes()).unwrap(),
        }
        n.connect(0, false);
        assert_eq!(n.be_state(3), "5", "{key}={value}");
        assert!(n.error(3).contains(why), "{key}: {}", n.error(3));
        // Only 4's rings and channel are left.
        assert_eq!((n.hv.rings.len(), n.hv.ports.len()), (2, 1), "{key}");
    }
    // A ring that goes wrong once connected halts that vif alone.
    let mut n = hash_lan();
    n.fronts[1].ctrl[0].store(1000, Ordering::Release);
    n.poll();
    assert_eq!(n.be_state(4), "5");
    assert!(n.error(4).contains("impossible control ring index"));
    let got = bcast(&mut n, frame(BCAST, mac_of(3), 60, 2));
    assert_eq!((got[1].len(), got[2].len()), (1, 1));
    // It closes: every ring and channel of it goes, the others' stay.
    n.xs.write(&n.fronts[1].fe("state"), b"6").unwrap();
    n.poll();
    assert_eq!((n.hv.rings.len(), n.hv.ports.len()), (7, 4));
    // Destroy them all: nothing left.
    for dom in 3..=6 {
        n.nb.detach_domain(&mut n.xs, &mut n.hv, dom);
    }
    assert!(n.hv.rings.is_empty() && n.hv.ports.is_empty());
}

#[test]
fn the_control_ring_goes_with_close_reconnect_and_destroy() {
    let mut n = Net::new();
    n.attach(3, "xenbr0");
    connect_ctrl(&mut n, 0);
    enable_hash(&mut n, 0, ALL_TYPES);
    assert_eq!((n.hv.rings.len(), n.hv.ports.len()), (3, 2));
    n.xs.write(&n.fronts[0].fe("state"), b"5").unwrap();
    n.poll();
    assert!(n.hv.rings.is_empty() && n.hv.ports.is_empty());
    for st in [b"6", b"1"] {
        n.xs.write(&n.fronts[0].fe("state"), st).unwrap();
        n.poll();
    }
    // Again without a control ring: none is mapped, no hash state.
    n.xs.rm(&n.fronts[0].fe("ctrl-ring-ref")).unwrap();
    n.fronts[0].idx.set([0; 4]);
    NetifTxFrontRing::init(&n.fronts[0].tx).unwrap();
    NetifRxFrontRing::init(&n.fronts[0].rx).unwrap();
    n.connect(0, false);
    assert_eq!(n.be_state(3), "4", "{}", n.error(3));
    assert_eq!((n.hv.rings.len(), n.hv.ports.len()), (2, 1));
    assert!(n.nb.vifs(Some(3)).next().unwrap().hash().is_none());
    // And once more with one: a fresh ring, the settings back to none.
    for st in [b"6", b"1"] {
        n.xs.write(&n.fronts[0].fe("state"), st).unwrap();
        n.poll();
    }
    XenNetifCtrlFrontRing::init(&n.fronts[0].ctrl).unwrap();
    n.fronts[0].ctrl_idx.set([0; 2]);
    connect_ctrl(&mut n, 0);
    assert_eq!(
        n.nb.vifs(Some(3)).next().unwrap().hash(),
        Some(&HashState::default())
    );
    // Hot unplug and destroy: nothing left.
    assert!(n.nb.detach(&mut n.xs, &mut n.hv, 3, 0));
    n.nb.detach_domain(&mut n.xs, &mut n.hv, 3);
    assert!(n.hv.rings.is_empty() && n.hv.ports.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A hostile front end's control requests: random types and data
    /// (often naming real grants). Each is answered exactly once, with its
    /// id and type and a netif.h status; the back end never copies past a
    /// page and the vif stays connected.
    #[test]
    fn random_control_requests_are_each_answered_once(
        reqs in prop::collection::vec(
            (0u16..12, 0u32..8, any::<u32>(), 0u32..200, any::<u32>()),
            1..300,
        ),
        page in prop::collection::vec(0u32..3, 1024),
    ) {
        let mut n = Net::new();
        n.attach(3, "xenbr0");
        connect_ctrl(&mut n, 0);
        let bytes: Vec<u8> = page.iter().flat_map(|w| w.to_le_bytes()).collect();
        fill_page(&n.fronts[0].ctrl_page, 0, &bytes);
        let reqs: Vec<XenNetifCtrlRequest> = reqs
            .into_iter()
            .enumerate()
            .map(|(k, (t, g, d0, d1, d2))| {
                let data0 = match (t, g) {
                    (3 | 6, 0..=3) => CTRL_PAGE,
                    (3 | 6, 4) => CTRL_RING,
                    (7, 0..=4) => g % 3,
                    (2, 0..=4) => d0 & 0x1F,
                    _ => d0,
                };
                let data2 = if g < 5 { d2 % 200 } else { d2 };
                req(k as u16, t, [data0, d1, data2])
            })
            .collect();
        for chunk in reqs.chunks(100) {
            n.fronts[0].ctrl_send(chunk);
            n.poll();
            let rsp = n.fronts[0].ctrl_responses();
            prop_assert_eq!(rsp.len(), chunk.len());
            for (r, q) in rsp.iter().zip(chunk) {
                prop_assert_eq!((r.id, r.type_), (q.id, q.type_));
                prop_assert!(r.status <= XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER);
            }
        }
        prop_assert_eq!(n.hv.bad_copies, 0);
        prop_assert_eq!(n.be_state(3), "4");
        let h = n.nb.vifs(Some(3)).next().unwrap().hash().unwrap();
        prop_assert!(h.size <= 128 && h.mapping.iter().all(|q| *q == 0));
    }
}
