//! The ring service, with recorded byte streams written from xs_wire.h.
mod common;
use common::*;
use core::sync::atomic::{AtomicU32, Ordering};
use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::io::xenstore::XenstoreFront;
use xenstored::Xenstored;

const REQ_CONS: usize = 2048 / 4;
const REQ_PROD: usize = 2052 / 4;
const RSP_CONS: usize = 2056 / 4;
const RSP_PROD: usize = 2060 / 4;
const FEATURES: usize = 2064 / 4;
const CONNECTION: usize = 2068 / 4;
const ERROR: usize = 2072 / 4;

fn page() -> Vec<AtomicU32> {
    (0..PAGE_WORDS).map(|_| AtomicU32::new(0)).collect()
}

fn send(page: &[AtomicU32], bytes: &[u8]) -> usize {
    XenstoreFront::new(page)
        .unwrap()
        .requests
        .write(bytes)
        .unwrap()
}

fn recv(page: &[AtomicU32]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = XenstoreFront::new(page)
        .unwrap()
        .responses
        .read(&mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

fn word(page: &[AtomicU32], i: usize) -> u32 {
    page[i].load(Ordering::Relaxed)
}

#[test]
fn introduction_announces_features_and_connection() {
    let mut xs = setup();
    let p = page();
    p[CONNECTION].store(0xdead, Ordering::Relaxed);
    xs.introduce_domain(5, 1, 1).unwrap();
    let s = xs.service_ring(5, &p);
    assert!(s.notify);
    assert_eq!(word(&p, FEATURES), 3, "RECONNECTION | ERROR");
    assert_eq!(word(&p, CONNECTION), 0);
    assert_eq!(word(&p, ERROR), 0);
    assert!(!xs.service_ring(5, &p).notify, "nothing to do");
    assert!(!xs.service_ring(99, &p).notify, "unknown domain");
}

/// Requests and replies written by hand from xs_wire.h: little-endian
/// `type, req_id, tx_id, len`, then the payload.
#[test]
fn recorded_byte_streams() {
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    #[rustfmt::skip]
    let requests: &[u8] = &[
        // XS_WRITE (11) id 1: "a\0xyz"
        0x0b,0,0,0, 1,0,0,0, 0,0,0,0, 5,0,0,0, b'a',0,b'x',b'y',b'z',
        // XS_READ (2) id 2: "a\0"
        0x02,0,0,0, 2,0,0,0, 0,0,0,0, 2,0,0,0, b'a',0,
        // XS_READ id 3 of a missing node: "b\0"
        0x02,0,0,0, 3,0,0,0, 0,0,0,0, 2,0,0,0, b'b',0,
        // XS_TRANSACTION_START (6) id 4: "\0"
        0x06,0,0,0, 4,0,0,0, 0,0,0,0, 1,0,0,0, 0,
        // XS_WRITE id 5 in transaction 1: "c\0123"
        0x0b,0,0,0, 5,0,0,0, 1,0,0,0, 5,0,0,0, b'c',0,b'1',b'2',b'3',
        // XS_TRANSACTION_END (7) id 6, transaction 1: "T\0"
        0x07,0,0,0, 6,0,0,0, 1,0,0,0, 2,0,0,0, b'T',0,
        // XS_WATCH (4) id 7: "a\0tk\0"
        0x04,0,0,0, 7,0,0,0, 0,0,0,0, 5,0,0,0, b'a',0,b't',b'k',0,
        // XS_INTRODUCE (8) id 8 from a domU: "5\0" + "1\0" + "1\0"
        0x08,0,0,0, 8,0,0,0, 0,0,0,0, 6,0,0,0, b'5',0,b'1',0,b'1',0,
        // type 0x63 (unknown) id 9
        0x63,0,0,0, 9,0,0,0, 0,0,0,0, 0,0,0,0,
        // XS_DIRECTORY (1) id 10: "c\0"
        0x01,0,0,0, 10,0,0,0, 0,0,0,0, 2,0,0,0, b'c',0,
        // XS_GET_PERMS (3) id 11: "a\0"
        0x03,0,0,0, 11,0,0,0, 0,0,0,0, 2,0,0,0, b'a',0,
    ];
    #[rustfmt::skip]
    let replies: &[u8] = &[
        0x0b,0,0,0, 1,0,0,0, 0,0,0,0, 3,0,0,0, b'O',b'K',0,
        0x02,0,0,0, 2,0,0,0, 0,0,0,0, 3,0,0,0, b'x',b'y',b'z',
        0x10,0,0,0, 3,0,0,0, 0,0,0,0, 7,0,0,0, b'E',b'N',b'O',b'E',b'N',b'T',0,
        0x06,0,0,0, 4,0,0,0, 0,0,0,0, 2,0,0,0, b'1',0,
        0x0b,0,0,0, 5,0,0,0, 1,0,0,0, 3,0,0,0, b'O',b'K',0,
        0x07,0,0,0, 6,0,0,0, 1,0,0,0, 3,0,0,0, b'O',b'K',0,
        0x04,0,0,0, 7,0,0,0, 0,0,0,0, 3,0,0,0, b'O',b'K',0,
        // The initial watch event: XS_WATCH_EVENT (15), req_id and tx_id 0,
        // relative path as given.
        0x0f,0,0,0, 0,0,0,0, 0,0,0,0, 5,0,0,0, b'a',0,b't',b'k',0,
        0x10,0,0,0, 8,0,0,0, 0,0,0,0, 7,0,0,0, b'E',b'A',b'C',b'C',b'E',b'S',0,
        0x10,0,0,0, 9,0,0,0, 0,0,0,0, 7,0,0,0, b'E',b'N',b'O',b'S',b'Y',b'S',0,
        0x01,0,0,0, 10,0,0,0, 0,0,0,0, 0,0,0,0,
        0x03,0,0,0, 11,0,0,0, 0,0,0,0, 3,0,0,0, b'n',b'1',0,
    ];
    assert_eq!(send(&p, requests), requests.len());
    let s = xs.service_ring(1, &p);
    assert!(s.notify);
    assert_eq!(recv(&p), replies);
    assert_eq!(word(&p, REQ_CONS), u32::try_from(requests.len()).unwrap());
}

#[test]
fn partial_messages_are_reassembled() {
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    #[rustfmt::skip]
    let req: &[u8] = &[0x02,0,0,0, 42,0,0,0, 0,0,0,0, 16,0,0,0,
        b'/',b'l',b'o',b'c',b'a',b'l',b'/',b'd',b'o',b'm',b'a',b'i',b'n',b'/',b'1',0];
    for chunk in req.chunks(3) {
        assert!(
            recv(&p).is_empty(),
            "no reply before the message is complete"
        );
        send(&p, chunk);
        let s = xs.service_ring(1, &p);
        assert!(s.notify);
    }
    #[rustfmt::skip]
    assert_eq!(recv(&p), [0x02,0,0,0, 42,0,0,0, 0,0,0,0, 0,0,0,0]);
}

#[test]
fn full_response_ring_and_a_guest_that_never_reads() {
    let mut xs = setup();
    xs.write("/local/domain/1/v", &[b'v'; 1000]).unwrap();
    xs.write("/local/domain/2/v", b"2").unwrap();
    let p1 = page();
    let p2 = page();
    xs.service_ring(1, &p1);
    xs.service_ring(2, &p2);
    // Domain 1 sends 40 reads of a 1000-byte value and never reads replies.
    #[rustfmt::skip]
    let req: &[u8] = &[0x02,0,0,0, 1,0,0,0, 0,0,0,0, 2,0,0,0, b'v',0];
    let mut sent = 0;
    for _ in 0..200 {
        while send(&p1, req) == req.len() {
            sent += 1;
            if sent == 40 {
                break;
            }
        }
        let s = xs.service_ring(1, &p1);
        if sent == 40 {
            assert!(s.pending_output);
            break;
        }
    }
    assert_eq!(sent, 40);
    let s = xs.service_ring(1, &p1);
    assert!(s.pending_output && s.pending_input, "{s:?}");
    let info = xs.domain_info(1).unwrap();
    assert_eq!(
        info.outstanding, 20,
        "reading stopped at the outstanding-request bound"
    );
    // Domain 2 is served meanwhile.
    send(
        &p2,
        &[0x02, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'v', 0],
    );
    xs.service_ring(2, &p2);
    assert_eq!(
        recv(&p2),
        [0x02, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, b'2']
    );
    // Domain 1 finally reads: every reply arrives, in order, intact.
    let mut stream = Vec::new();
    for _ in 0..1000 {
        stream.extend(recv(&p1));
        xs.service_ring(1, &p1);
        if stream.len() >= 40 * 1016 {
            break;
        }
    }
    assert_eq!(stream.len(), 40 * 1016);
    for m in stream.chunks(1016) {
        assert_eq!(
            &m[..16],
            &[0x02, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xe8, 0x03, 0, 0]
        );
        assert!(m[16..].iter().all(|&b| b == b'v'));
    }
}

#[test]
fn watch_events_for_a_sleeping_guest_are_bounded() {
    let mut xs = setup();
    xs.quotas_mut().event_queue_bytes = 4096;
    let p = page();
    xs.service_ring(1, &p);
    send(
        &p,
        &[
            0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, b'/', 0, b't', 0,
        ],
    );
    xs.service_ring(1, &p);
    for i in 0..10_000 {
        xs.write(&format!("/local/domain/1/n{}", i % 500), b"x")
            .unwrap();
    }
    assert!(xs.domain_info(1).unwrap().queued_bytes <= 4096);
    // Identical pending events are merged.
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    send(
        &p,
        &[
            0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, b'/', 0, b't', 0,
        ],
    );
    xs.service_ring(1, &p);
    recv(&p);
    // Fill the ring so events stay queued.
    xs.write("/local/domain/1/big", &[0; 1000]).unwrap();
    let before = xs.domain_info(1).unwrap().queued_bytes;
    for _ in 0..100 {
        xs.write("/local/domain/1/same", b"x").unwrap();
    }
    assert!(xs.domain_info(1).unwrap().queued_bytes - before <= 2 * 64);
}

#[test]
fn oversize_header_stops_the_connection_and_reconnection_restarts_it() {
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    send(
        &p,
        &[
            0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, b'/', 0, b't', 0,
        ],
    );
    xs.service_ring(1, &p);
    recv(&p);
    assert_eq!(xs.domain_info(1).unwrap().watches, 1);
    // len = 4097 > XENSTORE_PAYLOAD_MAX
    send(
        &p,
        &[0x02, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x10, 0, 0],
    );
    let s = xs.service_ring(1, &p);
    assert!(s.notify);
    assert_eq!(word(&p, ERROR), 3, "XENSTORE_ERROR_PROTO");
    assert!(xs.is_ignored(1));
    assert_eq!(xs.domain_info(1).unwrap().watches, 0, "state dropped");
    send(
        &p,
        &[0x02, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', 0],
    );
    xs.service_ring(1, &p);
    assert!(recv(&p).is_empty(), "no longer served");
    // Other domains are unaffected.
    assert_eq!(read(&mut xs, 2, "/local/domain/2"), Ok(vec![]));
    // The guest reconnects.
    p[CONNECTION].store(1, Ordering::Release);
    let s = xs.service_ring(1, &p);
    assert!(s.notify);
    assert_eq!(word(&p, CONNECTION), 0);
    assert_eq!(word(&p, ERROR), 0);
    for i in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
        assert_eq!(word(&p, i), 0);
    }
    assert!(!xs.is_ignored(1));
    send(
        &p,
        &[0x02, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', 0],
    );
    xs.service_ring(1, &p);
    assert_eq!(
        recv(&p),
        [
            &[0x10, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0][..],
            b"ENOENT\0"
        ]
        .concat()
    );
}

#[test]
fn reconnect_drops_watches_transactions_and_partial_input() {
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    send(
        &p,
        &[
            0x04, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, b'/', 0, b't', 0,
        ],
    );
    send(&p, &[0x06, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
    send(&p, &[0x02, 0, 0, 0, 3, 0]); // half a header
    xs.service_ring(1, &p);
    let info = xs.domain_info(1).unwrap();
    assert_eq!((info.watches, info.transactions), (1, 1));
    p[CONNECTION].store(1, Ordering::Release);
    xs.service_ring(1, &p);
    let info = xs.domain_info(1).unwrap();
    assert_eq!(
        (info.watches, info.transactions, info.queued_bytes),
        (0, 0, 0)
    );
    send(
        &p,
        &[0x02, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, b'a', 0],
    );
    xs.service_ring(1, &p);
    assert_eq!(&recv(&p)[..8], &[0x10, 0, 0, 0, 4, 0, 0, 0]);
}

#[test]
fn hostile_indices_report_ringidx() {
    let mut xs = setup();
    let p = page();
    xs.service_ring(1, &p);
    p[REQ_PROD].store(5000, Ordering::Release);
    let s = xs.service_ring(1, &p);
    assert!(s.notify);
    assert_eq!(word(&p, ERROR), 2, "XENSTORE_ERROR_RINGIDX");
    assert!(xs.is_ignored(1));
    // Introducing the domain again resets the connection and the indices.
    xs.introduce_domain(1, 1, 1).unwrap();
    xs.service_ring(1, &p);
    assert_eq!((word(&p, REQ_PROD), word(&p, ERROR)), (0, 0));
    assert!(!xs.is_ignored(1));
}

#[test]
fn dom0_ring_is_served_too() {
    let mut xs = Xenstored::new();
    xs.introduce_domain(0, 0, 3).unwrap();
    let p = page();
    xs.service_ring(0, &p);
    send(
        &p,
        &[
            0x08, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0, b'4', 0, b'9', 0, b'2', 0,
        ],
    );
    xs.service_ring(0, &p);
    assert_eq!(
        recv(&p),
        [
            &[0x08, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0][..],
            b"OK\0"
        ]
        .concat()
    );
    assert!(xs.is_introduced(4));
}
