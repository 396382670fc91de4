//! Host tests. Every byte stream below is written by hand from
//! `xs_wire.h`: a little-endian header `{type, req_id, tx_id, len}` and the
//! payload; none is produced by the encoder under test.

use std::boxed::Box;
use std::string::{String, ToString};
use std::vec;
use std::vec::Vec;

use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::io::xenstore::{XENSTORE_RING_SIZE, XSD_ERRORS, XenstoreBack, XsdSockmsgType};
use hypercall_abi::{DomId, Errno};
use proptest::prelude::*;

use super::*;

fn enc(req: Request<'_>, id: u32, tx: u32) -> Vec<u8> {
    let mut out = Vec::new();
    req.encode(id, TxId(tx), &mut out).unwrap();
    out
}

// ---------------------------------------------------------------- encoding

#[test]
fn encodes_path_requests() {
    assert_eq!(
        enc(Request::Read("domid"), 1, 0),
        b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x06\0\0\0domid\0"
    );
    assert_eq!(
        enc(Request::Read("device/vbd/51712/state"), 2, 5),
        b"\x02\0\0\0\x02\0\0\0\x05\0\0\0\x17\0\0\0device/vbd/51712/state\0"
    );
    assert_eq!(
        enc(Request::Directory("/local/domain/3"), 7, 0),
        b"\x01\0\0\0\x07\0\0\0\0\0\0\0\x10\0\0\0/local/domain/3\0"
    );
    assert_eq!(
        enc(Request::GetPerms("data"), 3, 0),
        b"\x03\0\0\0\x03\0\0\0\0\0\0\0\x05\0\0\0data\0"
    );
    assert_eq!(
        enc(Request::Mkdir("device"), 11, 0),
        b"\x0c\0\0\0\x0b\0\0\0\0\0\0\0\x07\0\0\0device\0"
    );
    assert_eq!(
        enc(Request::Rm("device/vif/0"), 12, 0x0102_0304),
        b"\x0d\0\0\0\x0c\0\0\0\x04\x03\x02\x01\x0d\0\0\0device/vif/0\0"
    );
}

#[test]
fn encodes_write_without_terminating_the_value() {
    assert_eq!(
        enc(
            Request::Write {
                path: "name",
                value: b"demo"
            },
            13,
            0
        ),
        b"\x0b\0\0\0\x0d\0\0\0\0\0\0\0\x09\0\0\0name\0demo"
    );
    // Linux clears control/shutdown by writing "": the path's NUL only.
    assert_eq!(
        enc(
            Request::Write {
                path: "control/shutdown",
                value: b""
            },
            10,
            0
        ),
        b"\x0b\0\0\0\x0a\0\0\0\0\0\0\0\x11\0\0\0control/shutdown\0"
    );
}

#[test]
fn encodes_watch_and_unwatch() {
    let w = Request::Watch {
        path: "control/shutdown",
        token: "shutdown",
    };
    assert_eq!(
        enc(w, 5, 0),
        b"\x04\0\0\0\x05\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0"
    );
    let u = Request::Unwatch {
        path: "control/shutdown",
        token: "shutdown",
    };
    assert_eq!(
        enc(u, 6, 0),
        b"\x05\0\0\0\x06\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0"
    );
}

#[test]
fn encodes_transactions() {
    assert_eq!(
        enc(Request::TransactionStart, 7, 0),
        b"\x06\0\0\0\x07\0\0\0\0\0\0\0\x01\0\0\0\0"
    );
    assert_eq!(
        enc(Request::TransactionEnd { commit: true }, 8, 9),
        b"\x07\0\0\0\x08\0\0\0\x09\0\0\0\x02\0\0\0T\0"
    );
    assert_eq!(
        enc(Request::TransactionEnd { commit: false }, 8, 9),
        b"\x07\0\0\0\x08\0\0\0\x09\0\0\0\x02\0\0\0F\0"
    );
}

#[test]
fn encodes_domain_requests() {
    assert_eq!(
        enc(Request::GetDomainPath(DomId(3)), 9, 0),
        b"\x0a\0\0\0\x09\0\0\0\0\0\0\0\x02\0\0\x003\0"
    );
    assert_eq!(
        enc(Request::GetDomainPath(DomId(32752)), 9, 0),
        b"\x0a\0\0\0\x09\0\0\0\0\0\0\0\x06\0\0\x0032752\0"
    );
    assert_eq!(
        enc(Request::IsDomainIntroduced(DomId(1)), 1, 0),
        b"\x11\0\0\0\x01\0\0\0\0\0\0\0\x02\0\0\x001\0"
    );
    assert_eq!(
        enc(
            Request::Introduce {
                domid: DomId(1),
                gfn: 4660,
                port: 2
            },
            2,
            0
        ),
        b"\x08\0\0\0\x02\0\0\0\0\0\0\0\x09\0\0\x001\x004660\x002\0"
    );
    assert_eq!(
        enc(Request::Release(DomId(1)), 3, 0),
        b"\x09\0\0\0\x03\0\0\0\0\0\0\0\x02\0\0\x001\0"
    );
    assert_eq!(
        enc(Request::Resume(DomId(2)), 4, 0),
        b"\x12\0\0\0\x04\0\0\0\0\0\0\0\x02\0\0\x002\0"
    );
    assert_eq!(
        enc(
            Request::SetTarget {
                domid: DomId(1),
                target: DomId(2)
            },
            5,
            0
        ),
        b"\x13\0\0\0\x05\0\0\0\0\0\0\0\x04\0\0\x001\x002\0"
    );
}

#[test]
fn encodes_perms_and_misc() {
    let perms = [
        Perm {
            domid: DomId(3),
            access: Access::None,
        },
        Perm {
            domid: DomId(0),
            access: Access::Read,
        },
    ];
    assert_eq!(
        enc(
            Request::SetPerms {
                path: "data/x",
                perms: &perms
            },
            4,
            0
        ),
        b"\x0e\0\0\0\x04\0\0\0\0\0\0\0\x0d\0\0\0data/x\0n3\0r0\0"
    );
    assert_eq!(
        enc(Request::ResetWatches, 14, 0),
        b"\x15\0\0\0\x0e\0\0\0\0\0\0\0\x01\0\0\0\0"
    );
    assert_eq!(
        enc(
            Request::DirectoryPart {
                path: "/local",
                offset: 0
            },
            15,
            0
        ),
        b"\x16\0\0\0\x0f\0\0\0\0\0\0\0\x09\0\0\0/local\0\x30\0"
    );
}

#[test]
fn refuses_what_cannot_be_sent() {
    let mut out = Vec::new();
    let bad = [
        Request::Read(""),
        Request::Read("a\0b"),
        Request::Watch {
            path: "a",
            token: "t\0",
        },
    ];
    for r in bad {
        assert_eq!(r.encode(1, TxId::NONE, &mut out), Err(XsError::Invalid));
    }
    let long_rel = "a".repeat(2049);
    assert_eq!(
        Request::Read(&long_rel).encode(1, TxId::NONE, &mut out),
        Err(XsError::Invalid)
    );
    let ok_rel = "a".repeat(2048);
    let long_abs = std::format!("/{}", "a".repeat(3072));
    assert_eq!(
        Request::Read(&long_abs).encode(1, TxId::NONE, &mut out),
        Err(XsError::Invalid)
    );
    assert!(out.is_empty());
    let big = vec![b'x'; 4096];
    assert_eq!(
        Request::Write {
            path: "a",
            value: &big
        }
        .encode(1, TxId::NONE, &mut out),
        Err(XsError::TooBig)
    );
    // Exactly the maximum payload is fine: "a\0" + 4094 bytes.
    assert!(
        Request::Write {
            path: "a",
            value: &big[..4094]
        }
        .encode(1, TxId::NONE, &mut out)
        .is_ok()
    );
    assert!(
        Request::Read(&ok_rel)
            .encode(1, TxId::NONE, &mut out)
            .is_ok()
    );
}

// ---------------------------------------------------------------- decoding

/// A READ reply (id 1, "3"), a watch event, an ENOENT error (id 2), a
/// directory reply (id 3, two names), an empty directory reply (id 4).
const STREAM: &[u8] = b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003\
\x0f\0\0\0\0\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0\
\x10\0\0\0\x02\0\0\0\0\0\0\0\x07\0\0\0ENOENT\0\
\x01\0\0\0\x03\0\0\0\x07\0\0\0\x0f\0\0\0backend\0device\0\
\x01\0\0\0\x04\0\0\0\0\0\0\0\0\0\0\0";

fn expected_messages() -> Vec<Message> {
    vec![
        Message {
            type_: 2,
            req_id: 1,
            tx_id: 0,
            payload: b"3".to_vec(),
        },
        Message {
            type_: 15,
            req_id: 0,
            tx_id: 0,
            payload: b"control/shutdown\0shutdown\0".to_vec(),
        },
        Message {
            type_: 16,
            req_id: 2,
            tx_id: 0,
            payload: b"ENOENT\0".to_vec(),
        },
        Message {
            type_: 1,
            req_id: 3,
            tx_id: 7,
            payload: b"backend\0device\0".to_vec(),
        },
        Message {
            type_: 1,
            req_id: 4,
            tx_id: 0,
            payload: Vec::new(),
        },
    ]
}

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<Message> {
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for mut c in chunks {
        while !c.is_empty() {
            let (used, m) = d.feed(c).unwrap();
            assert!(used > 0);
            c = &c[used..];
            got.extend(m);
        }
    }
    assert!(d.at_boundary());
    got
}

#[test]
fn decodes_whole_stream() {
    assert_eq!(decode_chunks([STREAM]), expected_messages());
}

#[test]
fn decodes_split_at_every_boundary() {
    for i in 0..=STREAM.len() {
        let (a, b) = STREAM.split_at(i);
        assert_eq!(decode_chunks([a, b]), expected_messages(), "split at {i}");
    }
    for i in 0..=STREAM.len() {
        for j in i..=STREAM.len() {
            let parts = [&STREAM[..i], &STREAM[i..j], &STREAM[j..]];
            assert_eq!(decode_chunks(parts), expected_messages(), "split {i} {j}");
        }
    }
    assert_eq!(decode_chunks(STREAM.chunks(1)), expected_messages());
}

proptest! {
    #[test]
    fn decodes_any_chunking(cuts in proptest::collection::vec(0..STREAM.len(), 0..20)) {
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut parts = Vec::new();
        let mut at = 0;
        for c in cuts {
            parts.push(&STREAM[at..c]);
            at = c;
        }
        parts.push(&STREAM[at..]);
        prop_assert_eq!(decode_chunks(parts), expected_messages());
    }

    #[test]
    fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut c = Client::new();
        let _ = c.receive(&bytes);
    }
}

#[test]
fn oversized_message_is_a_protocol_error() {
    // len 4097 > XENSTORE_PAYLOAD_MAX
    let mut d = Decoder::new();
    assert_eq!(
        d.feed(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\x10\0\0"),
        Err(XsError::Protocol)
    );
    // len 4096 is accepted
    let mut d = Decoder::new();
    assert_eq!(
        d.feed(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x00\x10\0\0"),
        Ok((16, None))
    );
}

#[test]
fn error_names_become_errnos() {
    for name in XSD_ERRORS {
        let mut payload = name.as_bytes().to_vec();
        payload.push(0);
        let e = wire::parse_error(&payload);
        assert_eq!(e.name(), Some(name), "{name}");
    }
    assert_eq!(wire::parse_error(b"EAGAIN\0"), Errno::EAGAIN);
    assert_eq!(wire::parse_error(b"EACCES\0"), Errno::EACCES);
    assert_eq!(wire::parse_error(b"EQUOTA\0"), Errno::EINVAL);
    assert_eq!(wire::parse_error(b""), Errno::EINVAL);
    let m = Message {
        type_: 16,
        req_id: 1,
        tx_id: 0,
        payload: b"EAGAIN\0".to_vec(),
    };
    assert_eq!(
        m.into_reply(XsdSockmsgType::TransactionEnd),
        Err(XsError::Errno(Errno::EAGAIN))
    );
    let wrong = Message {
        type_: 2,
        req_id: 1,
        tx_id: 0,
        payload: Vec::new(),
    };
    assert_eq!(
        wrong.into_reply(XsdSockmsgType::Write),
        Err(XsError::Protocol)
    );
}

#[test]
fn payload_parsers() {
    assert_eq!(wire::string_list(b"a\0bc\0"), ["a", "bc"]);
    assert_eq!(wire::string_list(b""), Vec::<String>::new());
    assert_eq!(wire::string_list(b"\0"), [""]);
    assert_eq!(wire::string_list(b"a\0tail"), ["a"]);
    assert_eq!(wire::parse_tx_id(b"17\0"), Ok(TxId(17)));
    assert_eq!(wire::parse_tx_id(b"0\0"), Err(XsError::Protocol));
    assert_eq!(wire::parse_tx_id(b"x\0"), Err(XsError::Protocol));
    assert_eq!(wire::parse_tx_id(b"4294967296\0"), Err(XsError::Protocol));
    assert_eq!(
        wire::parse_perms(b"n3\0r0\0b7\0w65535\0"),
        Ok(vec![
            Perm {
                domid: DomId(3),
                access: Access::None
            },
            Perm {
                domid: DomId(0),
                access: Access::Read
            },
            Perm {
                domid: DomId(7),
                access: Access::Both
            },
            Perm {
                domid: DomId(65535),
                access: Access::Write
            },
        ])
    );
    assert_eq!(wire::parse_perms(b"x3\0"), Err(XsError::Protocol));
    assert_eq!(wire::parse_perms(b"r65536\0"), Err(XsError::Protocol));
    assert_eq!(
        WatchEvent::parse(b"a/b\0tok\0"),
        Ok(WatchEvent {
            path: "a/b".to_string(),
            token: "tok".to_string()
        })
    );
    assert_eq!(WatchEvent::parse(b"a/b\0"), Err(XsError::Protocol));
}

// ---------------------------------------------------------------- client

#[test]
fn replies_match_requests_with_events_interleaved() {
    let mut c = Client::new();
    c.add_watch("control/shutdown", "shutdown").unwrap();
    let r1 = c.submit(&Request::Read("domid"), TxId::NONE).unwrap();
    let r2 = c.submit(&Request::Read("nope"), TxId::NONE).unwrap();
    let r3 = c.submit(&Request::Directory("/"), TxId(7)).unwrap();
    let r4 = c.submit(&Request::Directory("/x"), TxId::NONE).unwrap();
    assert_eq!((r1, r2, r3, r4), (ReqId(1), ReqId(2), ReqId(3), ReqId(4)));
    assert_eq!(c.in_flight(), 4);
    // Output is the four requests, back to back.
    let (a, b) = c.output();
    assert_eq!(a.len() + b.len(), 22 + 21 + 18 + 19);
    c.consume_output(1000);
    assert!(!c.has_output());

    // Replies arrive in pieces, the event between them.
    for piece in STREAM.chunks(5) {
        c.receive(piece).unwrap();
    }
    assert_eq!(c.take_reply(r4), Some(Ok(Vec::new())));
    assert_eq!(c.take_reply(r1), Some(Ok(b"3".to_vec())));
    assert_eq!(c.take_reply(r1), None);
    assert_eq!(c.take_reply(r2), Some(Err(XsError::Errno(Errno::ENOENT))));
    assert_eq!(c.take_reply(r3), Some(Ok(b"backend\0device\0".to_vec())));
    assert_eq!(
        c.next_event(),
        Some(WatchEvent {
            path: "control/shutdown".to_string(),
            token: "shutdown".to_string()
        })
    );
    assert_eq!(c.next_event(), None);
    assert_eq!(c.in_flight(), 0);
    assert_eq!(c.stats(), client::Stats::default());
}

#[test]
fn strays_and_unknown_tokens_are_counted() {
    let mut c = Client::new();
    // No request 1 outstanding, no watch "shutdown".
    c.receive(&STREAM[..STREAM.len() - 16]).unwrap();
    let s = c.stats();
    assert_eq!((s.stray_replies, s.stray_events), (3, 1));
    assert_eq!(c.next_event(), None);
}

#[test]
fn abandoned_request_drops_its_late_reply() {
    let mut c = Client::new();
    let id = c.submit(&Request::Read("domid"), TxId::NONE).unwrap();
    c.abandon(id);
    assert!(c.is_pending(id));
    c.receive(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003")
        .unwrap();
    assert!(!c.is_pending(id));
    assert_eq!(c.take_reply(id), None);
    assert_eq!(c.stats().stray_replies, 0);
}

#[test]
fn detached_watch_error_removes_the_watch() {
    let mut c = Client::new();
    c.add_watch("a", "t").unwrap();
    let id = c
        .submit_detached(
            &Request::Watch {
                path: "a",
                token: "t",
            },
            TxId::NONE,
        )
        .unwrap();
    assert_eq!(id, ReqId(1));
    assert_eq!(c.add_watch("b", "t"), Err(XsError::Errno(Errno::EEXIST)));
    c.receive(b"\x10\0\0\0\x01\0\0\0\0\0\0\0\x07\0\0\0EACCES\0")
        .unwrap();
    assert_eq!(c.watch_path("t"), None);
    let e = c.take_detached_error().unwrap();
    assert_eq!(e.error, XsError::Errno(Errno::EACCES));
    assert_eq!(e.token.as_deref(), Some("t"));
    // A successful detached reply leaves nothing behind.
    c.add_watch("a", "u").unwrap();
    c.submit_detached(
        &Request::Watch {
            path: "a",
            token: "u",
        },
        TxId::NONE,
    )
    .unwrap();
    c.receive(b"\x04\0\0\0\x02\0\0\0\0\0\0\0\x03\0\0\0OK\0")
        .unwrap();
    assert_eq!(c.watch_path("u"), Some("a"));
    assert_eq!(c.take_detached_error(), None);
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn protocol_error_fails_waiters_until_reset() {
    let mut c = Client::new();
    let id = c.submit(&Request::Read("domid"), TxId::NONE).unwrap();
    assert_eq!(
        c.receive(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\xff\xff\0\0"),
        Err(XsError::Protocol)
    );
    assert_eq!(c.take_reply(id), Some(Err(XsError::Protocol)));
    assert_eq!(
        c.submit(&Request::Read("domid"), TxId::NONE),
        Err(XsError::Protocol)
    );
    c.reset();
    let id = c.submit(&Request::Read("domid"), TxId::NONE).unwrap();
    c.receive(b"\x02\0\0\0\x02\0\0\0\0\0\0\0\x01\0\0\x003")
        .unwrap();
    assert_eq!(c.take_reply(id), Some(Ok(b"3".to_vec())));
}

#[test]
fn request_ids_increase_from_one() {
    let mut c = Client::new();
    for want in 1..=4 {
        let id = c.submit(&Request::Read("a"), TxId::NONE).unwrap();
        assert_eq!(id, ReqId(want));
    }
    assert!(c.is_pending(ReqId(4)));
}

// ---------------------------------------------------------------- transactions

struct FakeTx {
    next: u32,
    ends: Vec<Result<(), XsError>>,
    log: Vec<(u32, bool)>,
}

impl Transact for FakeTx {
    fn transaction_start(&mut self) -> Result<TxId, XsError> {
        self.next += 1;
        Ok(TxId(self.next))
    }
    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError> {
        self.log.push((tx.0, commit));
        if commit && !self.ends.is_empty() {
            return self.ends.remove(0);
        }
        Ok(())
    }
}

const AGAIN: XsError = XsError::Errno(Errno::EAGAIN);

#[test]
fn transaction_retries_on_eagain() {
    let mut s = FakeTx {
        next: 10,
        ends: vec![Err(AGAIN), Err(AGAIN), Ok(())],
        log: Vec::new(),
    };
    let mut runs = Vec::new();
    let r = transaction(&mut s, |_, tx| {
        runs.push(tx);
        Ok(tx.0 * 2)
    });
    assert_eq!(r, Ok(26));
    assert_eq!(runs, [TxId(11), TxId(12), TxId(13)]);
    assert_eq!(s.log, [(11, true), (12, true), (13, true)]);
}

#[test]
fn transaction_aborts_on_body_error() {
    let mut s = FakeTx {
        next: 0,
        ends: Vec::new(),
        log: Vec::new(),
    };
    let r: Result<(), _> = transaction(&mut s, |_, _| Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(r, Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(s.log, [(1, false)]);
    // EAGAIN from inside the body retries too.
    let mut n = 0;
    let r = transaction(&mut s, |_, _| {
        n += 1;
        if n < 3 { Err(AGAIN) } else { Ok(n) }
    });
    assert_eq!(r, Ok(3));
    assert_eq!(s.log, [(1, false), (2, false), (3, false), (4, true)]);
}

#[test]
fn transaction_gives_up_eventually_and_passes_other_errors() {
    let mut s = FakeTx {
        next: 0,
        ends: vec![Err(AGAIN); 1000],
        log: Vec::new(),
    };
    let r = transaction(&mut s, |_, _| Ok(()));
    assert_eq!(r, Err(AGAIN));
    assert_eq!(s.log.len(), MAX_TRANSACTION_ATTEMPTS as usize);
    let mut s = FakeTx {
        next: 0,
        ends: vec![Err(XsError::Errno(Errno::EINVAL))],
        log: Vec::new(),
    };
    assert_eq!(
        transaction(&mut s, |_, _| Ok(())),
        Err(XsError::Errno(Errno::EINVAL))
    );
    assert_eq!(s.log.len(), 1);
}

// ---------------------------------------------------------------- state machine

#[test]
fn frontend_transitions() {
    use XenbusState::*;
    let all = [
        Unknown,
        Initialising,
        InitWait,
        Initialised,
        Connected,
        Closing,
        Closed,
        Reconfiguring,
        Reconfigured,
    ];
    let legal = [
        (Unknown, Initialising),
        (Unknown, Closing),
        (Initialising, Initialised),
        (Initialising, Connected),
        (Initialising, Closing),
        (Initialising, Closed),
        (Initialised, Connected),
        (Initialised, Closing),
        (Initialised, Closed),
        (Connected, Closing),
        (Connected, Closed),
        (Connected, Reconfiguring),
        (Closing, Closed),
        (Closed, Initialising),
        (Closed, Initialised),
        (Reconfiguring, Reconfigured),
        (Reconfiguring, Closing),
        (Reconfigured, Connected),
        (Reconfigured, Closing),
    ];
    for from in all {
        for to in all {
            let want = from == to || legal.contains(&(from, to));
            assert_eq!(state::frontend_may(from, to), want, "{from:?} -> {to:?}");
        }
    }
    // A front end never claims the back end's InitWait.
    for from in all {
        if from != InitWait {
            assert!(!state::frontend_may(from, InitWait));
        }
    }
}

#[test]
fn frontend_handshake_and_teardown() {
    use XenbusState::*;
    let mut f = Frontend::new();
    assert_eq!(f.state(), Initialising);
    assert_eq!(f.on_backend(Initialising), FrontendAction::None);
    assert_eq!(f.on_backend(InitWait), FrontendAction::Publish);
    assert_eq!(f.switch(Initialised), Ok(true));
    assert_eq!(f.on_backend(InitWait), FrontendAction::None);
    assert_eq!(f.on_backend(Connected), FrontendAction::Connect);
    assert_eq!(f.switch(Connected), Ok(true));
    assert_eq!(f.switch(Connected), Ok(false));
    assert_eq!(f.on_backend(Connected), FrontendAction::None);
    assert_eq!(
        f.switch(Initialised),
        Err(IllegalTransition {
            from: Connected,
            to: Initialised
        })
    );
    assert_eq!(f.on_backend(Closing), FrontendAction::Close);
    assert_eq!(f.switch(Closing), Ok(true));
    assert_eq!(f.on_backend(Closing), FrontendAction::None);
    assert_eq!(f.switch(Closed), Ok(true));
    assert_eq!(f.on_backend(Closed), FrontendAction::None);
    // The back end comes back: reconnect.
    assert_eq!(f.on_backend(InitWait), FrontendAction::Publish);
    assert_eq!(f.switch(Initialised), Ok(true));
    // A back end that closes under a connected front end.
    let mut g = Frontend::new();
    g.switch(Initialised).unwrap();
    g.switch(Connected).unwrap();
    assert_eq!(g.on_backend(Closed), FrontendAction::Closed);
    assert_eq!(g.switch(Closed), Ok(true));
    assert_eq!(
        XenbusState::parse(Connected.as_str().as_bytes()),
        Some(Connected)
    );
}

// ---------------------------------------------------------------- end to end

fn page() -> Vec<AtomicU32> {
    (0..PAGE_WORDS).map(|_| AtomicU32::new(0)).collect()
}

/// Plays xenstored: checks each request against the next expected bytes
/// and answers with the scripted bytes, a few bytes per wakeup.
struct Daemon<'a> {
    page: &'a [AtomicU32],
    back: XenstoreBack<'a>,
    script: Vec<(&'static [u8], &'static [u8])>,
    got: Vec<u8>,
    reply: Vec<u8>,
    chunk: usize,
    notifies: u32,
    waits: u32,
    /// Answer nothing (no xenstored).
    silent: bool,
}

impl<'a> Daemon<'a> {
    fn new(
        page: &'a [AtomicU32],
        chunk: usize,
        script: Vec<(&'static [u8], &'static [u8])>,
    ) -> Self {
        Daemon {
            page,
            back: XenstoreBack::new(page).unwrap(),
            script,
            got: Vec::new(),
            reply: Vec::new(),
            chunk,
            notifies: 0,
            waits: 0,
            silent: false,
        }
    }

    fn step(&mut self) -> bool {
        let mut moved = false;
        // Ring reset requested?
        if self.page[2068 / 4].load(Ordering::SeqCst) == 1 {
            let rp = self.page[2052 / 4].load(Ordering::SeqCst);
            self.page[2048 / 4].store(rp, Ordering::SeqCst);
            let rc = self.page[2056 / 4].load(Ordering::SeqCst);
            self.page[2060 / 4].store(rc, Ordering::SeqCst);
            self.got.clear();
            self.reply.clear();
            self.page[2068 / 4].store(0, Ordering::SeqCst);
            return true;
        }
        let mut buf = [0u8; 1024];
        let n = self.back.requests.read(&mut buf).unwrap();
        moved |= n > 0;
        self.got.extend_from_slice(&buf[..n]);
        while let Some(&(want, answer)) = self.script.first() {
            if self.got.len() < want.len() {
                break;
            }
            assert_eq!(&self.got[..want.len()], want, "request bytes");
            self.got.drain(..want.len());
            self.reply.extend_from_slice(answer);
            self.script.remove(0);
        }
        let k = self.chunk.min(self.reply.len());
        let w = self.back.responses.write(&self.reply[..k]).unwrap();
        self.reply.drain(..w);
        moved | (w > 0)
    }
}

impl Channel for Daemon<'_> {
    fn notify(&mut self) {
        self.notifies += 1;
    }
    fn wait(&mut self, ready: &mut dyn FnMut() -> bool) -> Result<bool, XsError> {
        self.waits += 1;
        loop {
            if ready() {
                return Ok(true);
            }
            if self.silent || !self.step() {
                return Ok(ready());
            }
        }
    }
}

struct Session<'c, 'a> {
    conn: &'c mut Connection<'a>,
    ch: &'c mut Daemon<'a>,
}

impl Transact for Session<'_, '_> {
    fn transaction_start(&mut self) -> Result<TxId, XsError> {
        self.conn.transaction_start(self.ch)
    }
    fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError> {
        self.conn.transaction_end(self.ch, tx, commit)
    }
}

#[test]
fn end_to_end_read_in_every_chunk_size() {
    for chunk in 1..=40 {
        let p = page();
        // Indices need not start at 0.
        for off in [2048, 2052, 2056, 2060] {
            p[off / 4].store(0xFFFF_FFF0, Ordering::SeqCst);
        }
        let mut d = Daemon::new(
            &p,
            chunk,
            vec![(
                b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x06\0\0\0domid\0",
                b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003",
            )],
        );
        let mut c = Connection::new(&p).unwrap();
        assert_eq!(c.read(&mut d, TxId::NONE, "domid"), Ok(b"3".to_vec()));
        assert!(d.script.is_empty());
        assert!(d.notifies >= 1);
    }
}

#[test]
fn end_to_end_watch_and_shutdown_transaction() {
    let p = page();
    let mut d = Daemon::new(
        &p,
        7,
        vec![
            // watch control/shutdown: OK, then the initial event
            (
                b"\x04\0\0\0\x01\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0",
                b"\x04\0\0\0\x01\0\0\0\0\0\0\0\x03\0\0\0OK\0\
\x0f\0\0\0\0\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0",
            ),
            // transaction 17
            (
                b"\x06\0\0\0\x02\0\0\0\0\0\0\0\x01\0\0\0\0",
                b"\x06\0\0\0\x02\0\0\0\0\0\0\0\x03\0\0\x0017\0",
            ),
            (
                b"\x02\0\0\0\x03\0\0\0\x11\0\0\0\x11\0\0\0control/shutdown\0",
                b"\x02\0\0\0\x03\0\0\0\x11\0\0\0\x08\0\0\0poweroff",
            ),
            (
                b"\x0b\0\0\0\x04\0\0\0\x11\0\0\0\x11\0\0\0control/shutdown\0",
                b"\x0b\0\0\0\x04\0\0\0\x11\0\0\0\x03\0\0\0OK\0",
            ),
            // commit: EAGAIN (with an event for our write in between)
            (
                b"\x07\0\0\0\x05\0\0\0\x11\0\0\0\x02\0\0\0T\0",
                b"\x0f\0\0\0\0\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0\
\x10\0\0\0\x05\0\0\0\x11\0\0\0\x07\0\0\0EAGAIN\0",
            ),
            // transaction 18: same again, commit OK
            (
                b"\x06\0\0\0\x06\0\0\0\0\0\0\0\x01\0\0\0\0",
                b"\x06\0\0\0\x06\0\0\0\0\0\0\0\x03\0\0\x0018\0",
            ),
            (
                b"\x02\0\0\0\x07\0\0\0\x12\0\0\0\x11\0\0\0control/shutdown\0",
                b"\x02\0\0\0\x07\0\0\0\x12\0\0\0\x06\0\0\0reboot",
            ),
            (
                b"\x0b\0\0\0\x08\0\0\0\x12\0\0\0\x11\0\0\0control/shutdown\0",
                b"\x0b\0\0\0\x08\0\0\0\x12\0\0\0\x03\0\0\0OK\0",
            ),
            (
                b"\x07\0\0\0\x09\0\0\0\x12\0\0\0\x02\0\0\0T\0",
                b"\x07\0\0\0\x09\0\0\0\x12\0\0\0\x03\0\0\0OK\0",
            ),
            // unwatch
            (
                b"\x05\0\0\0\x0a\0\0\0\0\0\0\0\x1a\0\0\0control/shutdown\0shutdown\0",
                b"\x05\0\0\0\x0a\0\0\0\0\0\0\0\x03\0\0\0OK\0",
            ),
        ],
    );
    let mut c = Connection::new(&p).unwrap();
    c.watch(&mut d, "control/shutdown", "shutdown").unwrap();
    // The initial event may still be in the ring: poll it in.
    while !c.client().has_events() {
        assert!(d.step() || c.ready());
        c.poll(&mut d).unwrap();
    }
    let ev = c.client().next_event().unwrap();
    assert_eq!(
        (ev.path.as_str(), ev.token.as_str()),
        ("control/shutdown", "shutdown")
    );

    let mut s = Session {
        conn: &mut c,
        ch: &mut d,
    };
    let mut seen = Vec::new();
    let r = transaction(&mut s, |s, tx| {
        let v = s.conn.read(s.ch, tx, "control/shutdown")?;
        seen.push(v.clone());
        s.conn.write(s.ch, tx, "control/shutdown", b"")?;
        Ok(v)
    });
    assert_eq!(r, Ok(b"reboot".to_vec()));
    assert_eq!(seen, [b"poweroff".to_vec(), b"reboot".to_vec()]);
    // The event that came between replies was queued for the watch.
    assert!(c.client().next_event().is_some());
    c.unwatch(&mut d, "shutdown").unwrap();
    assert!(d.script.is_empty());
    assert_eq!(c.client().in_flight(), 0);
}

#[test]
fn end_to_end_silent_store_times_out_cleanly() {
    let p = page();
    let mut d = Daemon::new(&p, 64, Vec::new());
    d.silent = true;
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(c.read(&mut d, TxId::NONE, "domid"), Err(XsError::Timeout));
    assert_eq!(d.waits, 1);
    // The request went out; its late reply is dropped, the next works.
    d.silent = false;
    d.script = vec![
        (
            b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x06\0\0\0domid\0",
            b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003",
        ),
        (
            b"\x0a\0\0\0\x02\0\0\0\0\0\0\0\x02\0\0\x003\0",
            b"\x0a\0\0\0\x02\0\0\0\0\0\0\0\x10\0\0\0/local/domain/3\0",
        ),
    ];
    assert_eq!(
        c.get_domain_path(&mut d, DomId(3)).as_deref(),
        Ok("/local/domain/3")
    );
    assert_eq!(c.client().stats().stray_replies, 0);
    assert!(d.script.is_empty());
}

#[test]
fn end_to_end_request_larger_than_the_ring() {
    let p = page();
    // "big\0" + 2000 bytes of value: more than the 1024-byte stream.
    static REQ: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let req = REQ.get_or_init(|| {
        let mut v = b"\x0b\0\0\0\x01\0\0\0\0\0\0\0\xd4\x07\0\0big\0".to_vec();
        v.extend(std::iter::repeat_n(b'v', 2000));
        v
    });
    let mut d = Daemon::new(
        &p,
        1024,
        vec![(
            req.as_slice(),
            b"\x0b\0\0\0\x01\0\0\0\0\0\0\0\x03\0\0\0OK\0",
        )],
    );
    let mut c = Connection::new(&p).unwrap();
    let value = vec![b'v'; 2000];
    assert_eq!(c.write(&mut d, TxId::NONE, "big", &value), Ok(()));
    assert!(d.script.is_empty());
}

#[test]
fn end_to_end_directory_perms_and_errors() {
    let p = page();
    let mut d = Daemon::new(
        &p,
        3,
        vec![
            (
                b"\x01\0\0\0\x01\0\0\0\0\0\0\0\x07\0\0\0device\0",
                b"\x01\0\0\0\x01\0\0\0\0\0\0\0\x08\0\0\0vbd\0vif\0",
            ),
            (
                b"\x03\0\0\0\x02\0\0\0\0\0\0\0\x07\0\0\0device\0",
                b"\x03\0\0\0\x02\0\0\0\0\0\0\0\x06\0\0\0n3\0r0\0",
            ),
            (
                b"\x0d\0\0\0\x03\0\0\0\0\0\0\0\x07\0\0\0device\0",
                b"\x10\0\0\0\x03\0\0\0\0\0\0\0\x07\0\0\0EACCES\0",
            ),
            (
                b"\x0c\0\0\0\x04\0\0\0\0\0\0\0\x05\0\0\0data\0",
                b"\x0c\0\0\0\x04\0\0\0\0\0\0\0\x03\0\0\0OK\0",
            ),
            (
                b"\x0e\0\0\0\x05\0\0\0\0\0\0\0\x0b\0\0\0data\0b3\0r0\0",
                b"\x0e\0\0\0\x05\0\0\0\0\0\0\0\x03\0\0\0OK\0",
            ),
        ],
    );
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(
        c.directory(&mut d, TxId::NONE, "device"),
        Ok(vec!["vbd".to_string(), "vif".to_string()])
    );
    let perms = c.get_perms(&mut d, TxId::NONE, "device").unwrap();
    assert_eq!(perms[0].to_string(), "n3");
    assert_eq!(perms[1].to_string(), "r0");
    assert_eq!(
        c.rm(&mut d, TxId::NONE, "device"),
        Err(XsError::Errno(Errno::EACCES))
    );
    c.mkdir(&mut d, TxId::NONE, "data").unwrap();
    let perms = [
        Perm {
            domid: DomId(3),
            access: Access::Both,
        },
        Perm {
            domid: DomId(0),
            access: Access::Read,
        },
    ];
    c.set_perms(&mut d, TxId::NONE, "data", &perms).unwrap();
    assert!(d.script.is_empty());
}

#[test]
fn end_to_end_reset_and_hostile_indices() {
    let p = page();
    let mut d = Daemon::new(&p, 64, Vec::new());
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(c.request_reset(&mut d), Err(XsError::Unsupported));
    p[2064 / 4].store(1, Ordering::SeqCst); // XENSTORE_SERVER_FEATURE_RECONNECTION
    c.client().add_watch("a", "t").unwrap();
    let id = c.client().submit(&Request::Read("x"), TxId::NONE).unwrap();
    c.pump().unwrap();
    c.request_reset(&mut d).unwrap();
    assert_eq!(p[2068 / 4].load(Ordering::SeqCst), 0);
    assert_eq!(c.client().take_reply(id), Some(Err(XsError::Reset)));
    // Watches are kept for re-registration.
    assert_eq!(c.client().watches().count(), 1);

    // A response producer index 2000 bytes ahead is impossible.
    let cons = p[2056 / 4].load(Ordering::SeqCst);
    p[2060 / 4].store(cons.wrapping_add(2000), Ordering::SeqCst);
    assert_eq!(c.pump(), Err(XsError::Ring));
    assert_eq!(c.read(&mut d, TxId::NONE, "x"), Err(XsError::Ring));
}

#[test]
fn stale_replies_are_discarded_on_attach() {
    let p = page();
    let mut back = XenstoreBack::new(&p).unwrap();
    back.responses
        .write(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003")
        .unwrap();
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(c.discard_stale(), Ok(17));
    assert!(!c.ready());
}

#[test]
fn shutdown_requests() {
    use control::ShutdownRequest as R;
    use hypercall_abi::sched::ShutdownReason;
    assert_eq!(R::parse(b"poweroff"), Some(R::Poweroff));
    assert_eq!(R::parse(b"halt"), Some(R::Poweroff));
    assert_eq!(R::parse(b"reboot\0"), Some(R::Reboot));
    assert_eq!(R::parse(b"suspend"), Some(R::Suspend));
    assert_eq!(R::parse(b""), None);
    assert_eq!(R::parse(b"sysrq"), None);
    assert_eq!(R::parse(b"Poweroff"), None);
    assert_eq!(R::Poweroff.reason(), ShutdownReason::Poweroff);
    assert_eq!(R::Reboot.reason(), ShutdownReason::Reboot);
    assert_eq!(R::Suspend.reason(), ShutdownReason::Suspend);
}

#[test]
fn reading_a_reply_from_a_ring_that_was_not_full_notifies_nobody() {
    // Linux's xb_read: only a read that frees a full ring tells xenstored.
    let p = page();
    let mut d = Daemon::new(
        &p,
        64,
        vec![(
            b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x06\0\0\0domid\0",
            b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\x003",
        )],
    );
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(c.read(&mut d, TxId::NONE, "domid"), Ok(b"3".to_vec()));
    assert_eq!(d.notifies, 1, "only the request is notified");
}

#[test]
fn reading_from_a_full_ring_notifies_xenstored() {
    // A 3000-byte reply, written a ring-full at a time: each read that empties
    // a full ring must notify, or a real xenstored would wait for room forever.
    let value = vec![b'v'; 3000];
    let mut reply = vec![2u8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0];
    reply.extend_from_slice(&u32::try_from(value.len()).unwrap().to_le_bytes());
    reply.extend_from_slice(&value);
    let reply: &'static [u8] = Box::leak(reply.into_boxed_slice());
    let p = page();
    let mut d = Daemon::new(
        &p,
        XENSTORE_RING_SIZE,
        vec![(b"\x02\0\0\0\x01\0\0\0\0\0\0\0\x06\0\0\0domid\0", reply)],
    );
    let mut c = Connection::new(&p).unwrap();
    assert_eq!(c.read(&mut d, TxId::NONE, "domid"), Ok(value));
    // The request, then the two reads that found the ring full.
    assert_eq!(d.notifies, 3);
}
