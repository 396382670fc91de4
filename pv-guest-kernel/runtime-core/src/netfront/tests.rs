//! The net front end's decisions against key maps written from `netif.h`
//! and Linux's netfront, and against hostile responses.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::io::netif::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_MORE_DATA, NetifRxResponse,
    NetifTxResponse,
};
use proptest::prelude::*;

use super::frames::{self, Parsed};
use super::handshake::{self, BackendFeatures};
use super::rx::{self, Hostile, Ids, RxResult};
use crate::blkfront::handshake::HandshakeError;

fn reader<'m>(
    map: &'m BTreeMap<&'static str, &'static str>,
) -> impl FnMut(&'static str) -> Result<Option<Vec<u8>>, ()> + 'm {
    move |k| Ok(map.get(k).map(|v| v.as_bytes().to_vec()))
}

#[test]
fn frontend_details_as_libxl_writes_them() {
    let map = BTreeMap::from([
        ("backend", "/local/domain/0/backend/vif/3/0"),
        ("backend-id", "0"),
        ("mac", "00:16:3e:0a:0B:0c"),
        ("state", "1"),
        ("handle", "0"),
    ]);
    let d = handshake::read_frontend(&mut reader(&map)).unwrap();
    assert_eq!(d.backend, "/local/domain/0/backend/vif/3/0");
    assert_eq!(
        (d.backend_id, d.mac),
        (0, [0, 0x16, 0x3e, 0x0a, 0x0b, 0x0c])
    );
    let mut bad = map.clone();
    bad.insert("mac", "00:16:3e:0a:0b");
    assert!(matches!(
        handshake::read_frontend(&mut reader(&bad)),
        Err(HandshakeError::Invalid { key: "mac", .. })
    ));
    bad.remove("mac");
    assert!(matches!(
        handshake::read_frontend(&mut reader(&bad)),
        Err(HandshakeError::Missing("mac"))
    ));
    let mut reserved = map.clone();
    reserved.insert("backend-id", "32752");
    assert!(handshake::read_frontend(&mut reader(&reserved)).is_err());
}

#[test]
fn backend_features_and_what_is_written() {
    let map = BTreeMap::from([
        ("feature-sg", "1"),
        ("feature-rx-copy", "1"),
        ("feature-rx-flip", "0"),
        ("feature-split-event-channels", "1"),
        ("multi-queue-max-queues", "1"),
    ]);
    let f = handshake::read_backend(&mut reader(&map)).unwrap();
    assert_eq!(
        f,
        BackendFeatures {
            sg: true,
            split: true,
            max_queues: 1
        }
    );
    let w = handshake::publish(10, 11, 5, &f);
    let keys: Vec<(&str, &str)> = w.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        keys,
        [
            ("tx-ring-ref", "10"),
            ("rx-ring-ref", "11"),
            ("event-channel", "5"),
            ("request-rx-copy", "1"),
            ("feature-rx-notify", "1"),
            ("feature-sg", "0"),
            ("feature-gso-tcpv4", "0"),
            ("feature-gso-tcpv6", "0"),
            ("feature-ipv6-csum-offload", "0"),
            ("feature-no-csum-offload", "1"),
        ]
    );
    // A back end offering queues hears that we use one.
    let q = BackendFeatures { max_queues: 8, ..f };
    assert_eq!(
        handshake::publish(1, 2, 3, &q)[0],
        ("multi-queue-num-queues", String::from("1"))
    );
    // No copying back end: refused, as Linux's netfront does.
    let mut flip = map.clone();
    flip.remove("feature-rx-copy");
    assert!(matches!(
        handshake::read_backend(&mut reader(&flip)),
        Err(HandshakeError::Invalid {
            key: "feature-rx-copy",
            ..
        })
    ));
}

#[test]
fn responses_are_checked() {
    let mut ids = Ids::new(4);
    let a = ids.take().unwrap();
    let b = ids.take().unwrap();
    assert_eq!((a, b, ids.free(), ids.out()), (0, 1, 2, 2));
    let ok = NetifRxResponse {
        id: a,
        offset: 0,
        flags: 0,
        status: 60,
    };
    assert_eq!(
        rx::rx_response(&ok, &mut ids),
        Ok(RxResult::Frame {
            id: 0,
            offset: 0,
            len: 60
        })
    );
    // The same id again: it is not out any more.
    assert_eq!(rx::rx_response(&ok, &mut ids), Err(Hostile::UnknownId(0)));
    let past = NetifRxResponse {
        id: b,
        offset: 4000,
        flags: 0,
        status: 200,
    };
    assert!(matches!(
        rx::rx_response(&past, &mut ids),
        Err(Hostile::PastPage { .. })
    ));
    let b = ids.take().unwrap();
    let multi = NetifRxResponse {
        id: b,
        offset: 0,
        flags: NETRXF_MORE_DATA,
        status: 10,
    };
    assert_eq!(
        rx::rx_response(&multi, &mut ids),
        Err(Hostile::Unrequested(b))
    );
    let c = ids.take().unwrap();
    let err = NetifRxResponse {
        id: c,
        offset: 0,
        flags: 0,
        status: NETIF_RSP_ERROR,
    };
    assert_eq!(rx::rx_response(&err, &mut ids), Ok(RxResult::Empty(c)));
    assert_eq!(
        rx::rx_response(&NetifRxResponse { id: 99, ..ok }, &mut ids),
        Err(Hostile::UnknownId(99))
    );
    let t = ids.take().unwrap();
    assert_eq!(
        rx::tx_response(
            &NetifTxResponse {
                id: t,
                status: NETIF_RSP_OKAY
            },
            &mut ids
        ),
        Ok(true)
    );
    let t = ids.take().unwrap();
    assert_eq!(
        rx::tx_response(
            &NetifTxResponse {
                id: t,
                status: NETIF_RSP_ERROR
            },
            &mut ids
        ),
        Ok(false)
    );
    assert!(
        rx::tx_response(
            &NetifTxResponse {
                id: t,
                status: NETIF_RSP_NULL
            },
            &mut ids
        )
        .is_err()
    );
}

#[test]
fn arp_and_echo_round_trip() {
    let (ma, mb) = ([0, 0x16, 0x3e, 0, 0, 1], [0, 0x16, 0x3e, 0, 0, 2]);
    let (ia, ib) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let q = frames::arp_request(ma, ia, ib);
    assert_eq!(q.len(), 60);
    assert_eq!(&q[..6], &frames::BROADCAST);
    assert_eq!(
        frames::parse(&q),
        Parsed::Arp {
            reply: false,
            sender_mac: ma,
            sender_ip: ia,
            target_ip: ib
        }
    );
    let r = frames::arp_reply(mb, ib, ma, ia);
    assert_eq!(&r[..6], &ma);
    assert_eq!(
        frames::parse(&r),
        Parsed::Arp {
            reply: true,
            sender_mac: mb,
            sender_ip: ib,
            target_ip: ia
        }
    );
    let e = frames::icmp_echo(false, ma, mb, ia, ib, 7, 3, b"hello, world");
    match frames::parse(&e) {
        Parsed::Echo {
            reply: false,
            src_mac,
            src,
            dst,
            ident: 7,
            seq: 3,
            payload,
        } => {
            assert_eq!(
                (src_mac, src, dst, payload),
                (ma, ia, ib, &b"hello, world"[..])
            );
        }
        p => panic!("{p:?}"),
    }
    // A flipped bit anywhere in the ICMP part is caught by its checksum.
    let mut bad = e.clone();
    bad[14 + 20 + 9] ^= 1;
    assert_eq!(frames::parse(&bad), Parsed::Other);
    assert_eq!(frames::parse_ipv4("10.0.0.2"), Some(ib));
    assert_eq!(frames::parse_ipv4("10.0.0"), None);
    assert_eq!(frames::parse_ipv4("10.0.0.256"), None);
}

proptest! {
    /// Ids: random takes and puts against a model; a put of an id that is
    /// not out always fails and changes nothing.
    #[test]
    fn ids_match_a_model(ops in prop::collection::vec((any::<bool>(), 0u16..10), 0..200)) {
        let mut ids = Ids::new(8);
        let mut out: Vec<u16> = Vec::new();
        for (take, id) in ops {
            if take {
                match ids.take() {
                    Some(i) => { prop_assert!(!out.contains(&i)); out.push(i); }
                    None => prop_assert_eq!(out.len(), 8),
                }
            } else {
                let was = out.contains(&id);
                prop_assert_eq!(ids.put(id).is_ok(), was);
                out.retain(|i| *i != id);
            }
            prop_assert_eq!(ids.out(), out.len());
        }
    }

    /// Any bytes parse without a panic; an echo built from any payload reads back.
    #[test]
    fn parse_never_panics(f in prop::collection::vec(any::<u8>(), 0..200), p in prop::collection::vec(any::<u8>(), 0..100)) {
        let _ = frames::parse(&f);
        let e = frames::icmp_echo(true, [2; 6], [4; 6], [1; 4], [2; 4], 1, 2, &p);
        let ok = matches!(frames::parse(&e), Parsed::Echo { reply: true, payload, .. } if payload == p.as_slice());
        prop_assert!(ok);
    }
}

#[test]
fn a_back_end_is_gone_when_closing_closed_or_removed() {
    use super::backend::{Monitor, is_gone};
    use crate::xenbus::XenbusState::{self, *};
    for s in [Closing, Closed, Unknown] {
        assert!(is_gone(s), "{s:?}");
    }
    for s in [Initialising, InitWait, Initialised, Connected] {
        assert!(!is_gone(s), "{s:?}");
    }
    // The registration's event is counted as seen: no read.
    let mut m = Monitor::new(1);
    let mut reads = 0;
    let mut read = |s: XenbusState| {
        reads += 1;
        Ok::<_, ()>(s)
    };
    assert_eq!(m.check(1, || read(Closed)), Ok(None));
    // A change to a live state: read once, still there.
    assert_eq!(m.check(2, || read(Connected)), Ok(None));
    assert_eq!(m.check(2, || read(Closed)), Ok(None));
    // A failed read is looked at again at the next check.
    assert_eq!(m.check(3, || Err(())), Err(()));
    assert_eq!(m.check(3, || read(Closing)), Ok(Some(Closing)));
    // Gone for good: no more reads, even if the state comes back.
    assert_eq!(m.check(4, || read(Connected)), Ok(Some(Closing)));
    assert_eq!(m.gone(), Some(Closing));
    assert_eq!(reads, 2);
}
