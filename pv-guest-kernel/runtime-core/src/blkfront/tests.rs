//! Tests of the block front end: the handshake's keys against maps written
//! by hand from `blkif.h` and Linux's behaviour, segments, request layouts,
//! ids, and the data path against a fake back end that serves a disk over
//! the real shared ring (`BackRing`), with persistent and per-request
//! grants, indirect requests, several queues, errors, hostile responses.
// Test arithmetic on small, known sizes.
#![allow(clippy::cast_possible_truncation)]

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::GrantRef;
use hypercall_abi::io::PAGE_WORDS;
use hypercall_abi::io::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY, BlkifBackRing, BlkifFrontRing, BlkifRequest, BlkifRequestSegment,
    BlkifResponse, VDISK_READONLY,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

use super::check::{self, Args, Rate, Rng};
use super::datapath::{Config, Layout};
use super::handshake::{
    self, FrontendDetails, HandshakeError, RingDetails, keys, negotiate_transport, parse_int_auto,
    parse_uint, publish, read_connected, read_frontend,
};
use super::request::{self, Status};
use super::segments::{self, Segment, SegmentError};
use super::shadow::{Mismatch, Shadow};
use super::*;

// ------------------------------------------------------------------ handshake

/// A directory of keys; records the order of reads.
#[derive(Default)]
struct Dir {
    keys: BTreeMap<&'static str, &'static str>,
    reads: Vec<&'static str>,
}

impl Dir {
    fn with(pairs: &[(&'static str, &'static str)]) -> Dir {
        Dir {
            keys: pairs.iter().copied().collect(),
            reads: Vec::new(),
        }
    }

    fn read(&mut self, key: &'static str) -> Result<Option<Vec<u8>>, &'static str> {
        self.reads.push(key);
        Ok(self.keys.get(key).map(|v| v.as_bytes().to_vec()))
    }
}

#[test]
fn numbers_parse_as_xenbus_reads_them() {
    assert_eq!(parse_uint(b"42"), Some(42));
    assert_eq!(parse_uint(b" 42\n\0"), Some(42));
    assert_eq!(parse_uint(b"+7"), Some(7));
    assert_eq!(parse_uint(b""), None);
    assert_eq!(parse_uint(b"-1"), None);
    assert_eq!(parse_uint(b"4x"), None);
    assert_eq!(parse_uint(b"18446744073709551616"), None);
    assert_eq!(parse_int_auto(b"51712"), Some(51712));
    assert_eq!(parse_int_auto(b"0xca00"), Some(51712));
    assert_eq!(parse_int_auto(b"0145000"), Some(51712));
    assert_eq!(parse_int_auto(b"0"), Some(0));
    assert_eq!(parse_int_auto(b"0x"), None);
    assert_eq!(parse_int_auto(b"09"), None);
}

#[test]
fn probe_reads_backend_id_backend_then_virtual_device() {
    let mut d = Dir::with(&[
        ("backend-id", "0"),
        ("backend", "/local/domain/0/backend/vbd/3/51712"),
        ("virtual-device", "51712"),
        ("state", "1"),
    ]);
    let got = read_frontend("51712", &mut |k| d.read(k)).unwrap();
    assert_eq!(
        got,
        FrontendDetails {
            backend: "/local/domain/0/backend/vbd/3/51712".to_string(),
            backend_id: 0,
            virtual_device: 51712,
            handle: 51712,
        }
    );
    assert_eq!(d.reads, ["backend-id", "backend", "virtual-device"]);

    // The extended scheme; the handle is the directory's name cut to 16 bits.
    let mut d = Dir::with(&[
        ("backend-id", "7"),
        ("backend", "/b"),
        ("virtual-device-ext", "268439552"),
    ]);
    let got = read_frontend("268439552", &mut |k| d.read(k)).unwrap();
    assert_eq!(got.backend_id, 7);
    assert_eq!(got.virtual_device, 268_439_552);
    assert_eq!(got.handle, (268_439_552u32 & 0xFFFF) as u16);
    assert_eq!(
        d.reads,
        [
            "backend-id",
            "backend",
            "virtual-device",
            "virtual-device-ext"
        ]
    );
}

#[test]
fn probe_refuses_what_it_cannot_use() {
    let mut d = Dir::with(&[("backend", "/b"), ("virtual-device", "1")]);
    assert_eq!(
        read_frontend("1", &mut |k| d.read(k)),
        Err(HandshakeError::Missing(keys::BACKEND_ID))
    );
    for bad in ["32752", "x", "70000"] {
        let mut d = Dir::with(&[
            ("backend-id", bad),
            ("backend", "/b"),
            ("virtual-device", "1"),
        ]);
        assert!(matches!(
            read_frontend("1", &mut |k| d.read(k)),
            Err(HandshakeError::Invalid {
                key: "backend-id",
                ..
            })
        ));
    }
    let mut d = Dir::with(&[("backend-id", "0"), ("backend", "  ")]);
    assert!(matches!(
        read_frontend("1", &mut |k| d.read(k)),
        Err(HandshakeError::Invalid { key: "backend", .. })
    ));
    let mut d = Dir::with(&[("backend-id", "0"), ("backend", "/b")]);
    assert_eq!(
        read_frontend("1", &mut |k| d.read(k)),
        Err(HandshakeError::Missing(keys::VIRTUAL_DEVICE))
    );
    // Store errors pass through.
    let r = read_frontend::<&str>("1", &mut |_| Err("timeout"));
    assert_eq!(r, Err(HandshakeError::Store("timeout")));
}

#[test]
fn transport_takes_the_smaller_ring_and_queue_count() {
    let limits = Limits::DEFAULT;
    let mut d = Dir::with(&[
        ("max-ring-page-order", "4"),
        ("multi-queue-max-queues", "8"),
    ]);
    let t = negotiate_transport(&limits, &mut |k| d.read(k)).unwrap();
    assert_eq!(
        t,
        Transport {
            ring_page_order: 2,
            legacy_ring_pages: false,
            queues: 1
        }
    );
    assert_eq!(d.reads, ["max-ring-page-order", "multi-queue-max-queues"]);
    assert_eq!((t.ring_pages(), t.ring_slots()), (4, 128));

    // A back end with neither key: one page, one queue, as in blkif.h.
    let mut d = Dir::default();
    let t = negotiate_transport(&limits, &mut |k| d.read(k)).unwrap();
    assert_eq!((t.ring_page_order, t.queues, t.ring_slots()), (0, 1, 32));
    assert_eq!(
        d.reads,
        [
            "max-ring-page-order",
            "max-ring-pages",
            "multi-queue-max-queues"
        ]
    );

    // The older key: ffs(pages) - 1.
    let mut d = Dir::with(&[("max-ring-pages", "8")]);
    let t = negotiate_transport(&limits, &mut |k| d.read(k)).unwrap();
    assert_eq!((t.ring_page_order, t.legacy_ring_pages), (2, true));
    let mut d = Dir::with(&[("max-ring-pages", "1")]);
    let t = negotiate_transport(&limits, &mut |k| d.read(k)).unwrap();
    assert_eq!((t.ring_page_order, t.legacy_ring_pages), (0, false));

    // Our limits win; nonsense counts as the default; 0 queues means 1.
    let wide = Limits {
        max_ring_page_order: 9,
        max_queues: 99,
        ..Limits::DEFAULT
    };
    let mut d = Dir::with(&[
        ("max-ring-page-order", "12"),
        ("multi-queue-max-queues", "0"),
    ]);
    let t = negotiate_transport(&wide, &mut |k| d.read(k)).unwrap();
    assert_eq!((t.ring_page_order, t.queues), (MAX_RING_PAGE_ORDER, 1));
    let mut d = Dir::with(&[
        ("max-ring-page-order", "two"),
        ("multi-queue-max-queues", "3"),
    ]);
    let t = negotiate_transport(&wide, &mut |k| d.read(k)).unwrap();
    assert_eq!((t.ring_page_order, t.queues), (0, 3));
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn publish_writes_what_linux_writes_then_the_state() {
    let one = Transport {
        ring_page_order: 0,
        legacy_ring_pages: false,
        queues: 1,
    };
    let ring = RingDetails {
        refs: vec![8],
        port: 5,
    };
    assert_eq!(
        publish(&one, core::slice::from_ref(&ring), true).unwrap(),
        kv(&[
            ("ring-ref", "8"),
            ("event-channel", "5"),
            ("protocol", "x86_64-abi"),
            ("feature-persistent", "1"),
            ("state", "3"),
        ])
    );
    let four = Transport {
        ring_page_order: 2,
        legacy_ring_pages: false,
        queues: 1,
    };
    let ring4 = RingDetails {
        refs: vec![8, 9, 10, 11],
        port: 6,
    };
    assert_eq!(
        publish(&four, core::slice::from_ref(&ring4), false).unwrap(),
        kv(&[
            ("ring-page-order", "2"),
            ("ring-ref0", "8"),
            ("ring-ref1", "9"),
            ("ring-ref2", "10"),
            ("ring-ref3", "11"),
            ("event-channel", "6"),
            ("protocol", "x86_64-abi"),
            ("feature-persistent", "0"),
            ("state", "3"),
        ])
    );
    // Two queues of two pages each, the header's own example; the older
    // scheme's page count when the back end spoke it.
    let two = Transport {
        ring_page_order: 1,
        legacy_ring_pages: true,
        queues: 2,
    };
    let rings = [
        RingDetails {
            refs: vec![20, 21],
            port: 3,
        },
        RingDetails {
            refs: vec![22, 23],
            port: 4,
        },
    ];
    assert_eq!(
        publish(&two, &rings, true).unwrap(),
        kv(&[
            ("ring-page-order", "1"),
            ("num-ring-pages", "2"),
            ("multi-queue-num-queues", "2"),
            ("queue-0/ring-ref0", "20"),
            ("queue-0/ring-ref1", "21"),
            ("queue-0/event-channel", "3"),
            ("queue-1/ring-ref0", "22"),
            ("queue-1/ring-ref1", "23"),
            ("queue-1/event-channel", "4"),
            ("protocol", "x86_64-abi"),
            ("feature-persistent", "1"),
            ("state", "3"),
        ])
    );
    assert!(publish(&two, core::slice::from_ref(&ring4), true).is_err());
    assert!(publish(&one, core::slice::from_ref(&ring4), true).is_err());
}

#[test]
fn connected_reads_disk_and_features_in_linux_order() {
    let mut d = Dir::with(&[
        ("sectors", "8192"),
        ("info", "0"),
        ("sector-size", "512"),
        ("physical-sector-size", "4096"),
        ("feature-barrier", "1"),
        ("feature-flush-cache", "1"),
        ("feature-discard", "1"),
        ("discard-granularity", "4096"),
        ("discard-alignment", "0"),
        ("discard-secure", "1"),
        ("feature-persistent", "1"),
        ("feature-max-indirect-segments", "256"),
    ]);
    let (disk, f) = read_connected(&Limits::DEFAULT, &mut |k| d.read(k)).unwrap();
    assert_eq!(
        disk,
        DiskInfo {
            sectors: 8192,
            sector_size: 512,
            physical_sector_size: 4096,
            info: 0
        }
    );
    assert_eq!(disk.bytes(), 4 << 20);
    assert_eq!(
        f,
        Features {
            flush: FlushMode::FlushCache,
            discard: Some(Discard {
                granularity: 4096,
                alignment: 0,
                secure: true
            }),
            persistent: true,
            max_indirect_segments: 32,
        }
    );
    assert_eq!(
        d.reads,
        [
            "sectors",
            "info",
            "sector-size",
            "physical-sector-size",
            "feature-barrier",
            "feature-flush-cache",
            "feature-discard",
            "discard-granularity",
            "discard-alignment",
            "discard-secure",
            "feature-persistent",
            "feature-max-indirect-segments",
        ]
    );
}

#[test]
fn connected_defaults_and_limits() {
    // A minimal back end: no features; physical size defaults to logical;
    // `feature-persistent` is not even read when we did not offer it.
    let mut d = Dir::with(&[("sectors", "100"), ("info", "4"), ("sector-size", "4096")]);
    let no_persist = Limits {
        persistent: false,
        ..Limits::DEFAULT
    };
    let (disk, f) = read_connected(&no_persist, &mut |k| d.read(k)).unwrap();
    assert_eq!((disk.sector_size, disk.physical_sector_size), (4096, 4096));
    assert!(disk.readonly() && !disk.cdrom() && !disk.removable());
    assert_eq!(
        f,
        Features {
            flush: FlushMode::None,
            discard: None,
            persistent: false,
            max_indirect_segments: 0
        }
    );
    assert!(!d.reads.contains(&"feature-persistent"));
    assert!(!d.reads.contains(&"discard-granularity"));

    // Barrier alone; discard with defaults; indirect at or below 11 is
    // none; a physical size below the logical one is ignored.
    let mut d = Dir::with(&[
        ("sectors", "100"),
        ("info", "3"),
        ("sector-size", "512"),
        ("physical-sector-size", "256"),
        ("feature-barrier", "1"),
        ("feature-discard", "1"),
        ("feature-persistent", "0"),
        ("feature-max-indirect-segments", "11"),
    ]);
    let (disk, f) = read_connected(&Limits::DEFAULT, &mut |k| d.read(k)).unwrap();
    assert_eq!(disk.physical_sector_size, 512);
    assert!(disk.cdrom() && disk.removable() && !disk.readonly());
    assert_eq!(f.flush, FlushMode::Barrier);
    assert_eq!(
        f.discard,
        Some(Discard {
            granularity: 512,
            alignment: 0,
            secure: false
        })
    );
    assert!(!f.persistent);
    assert_eq!(f.max_indirect_segments, 0);

    // Indirect: the smaller of ours and theirs.
    let mut d = Dir::with(&[
        ("sectors", "1"),
        ("info", "0"),
        ("sector-size", "512"),
        ("feature-max-indirect-segments", "16"),
    ]);
    let (_, f) = read_connected(&Limits::DEFAULT, &mut |k| d.read(k)).unwrap();
    assert_eq!(f.max_indirect_segments, 16);
}

#[test]
fn connected_refuses_missing_or_bad_disk_keys() {
    for missing in ["sectors", "info", "sector-size"] {
        let mut all = vec![("sectors", "1"), ("info", "0"), ("sector-size", "512")];
        all.retain(|(k, _)| *k != missing);
        let mut d = Dir::with(&all);
        let r = read_connected(&Limits::DEFAULT, &mut |k| d.read(k));
        assert!(
            matches!(r, Err(HandshakeError::Missing(k)) if k == missing),
            "{missing}: {r:?}"
        );
    }
    for bad in ["0", "1000", "256", "131072", "x"] {
        let mut d = Dir::with(&[("sectors", "1"), ("info", "0"), ("sector-size", bad)]);
        let r = read_connected(&Limits::DEFAULT, &mut |k| d.read(k));
        assert!(
            matches!(
                r,
                Err(HandshakeError::Invalid {
                    key: "sector-size",
                    ..
                })
            ),
            "{bad}: {r:?}"
        );
    }
    let mut d = Dir::with(&[("sectors", "lots"), ("info", "0"), ("sector-size", "512")]);
    assert!(matches!(
        read_connected(&Limits::DEFAULT, &mut |k| d.read(k)),
        Err(HandshakeError::Invalid { key: "sectors", .. })
    ));
}

// ------------------------------------------------------------------ segments

#[test]
fn segments_of_aligned_and_offset_buffers() {
    let segs: Vec<Segment> = segments::split(0, 8192).unwrap().collect();
    assert_eq!(
        segs,
        [
            Segment {
                page: 0,
                first_sect: 0,
                last_sect: 7,
                offset: 0,
                len: 4096
            },
            Segment {
                page: 1,
                first_sect: 0,
                last_sect: 7,
                offset: 4096,
                len: 4096
            },
        ]
    );
    let segs: Vec<Segment> = segments::split(3584, 1536).unwrap().collect();
    assert_eq!(
        segs,
        [
            Segment {
                page: 0,
                first_sect: 7,
                last_sect: 7,
                offset: 0,
                len: 512
            },
            Segment {
                page: 1,
                first_sect: 0,
                last_sect: 1,
                offset: 512,
                len: 1024
            },
        ]
    );
    assert_eq!(segments::split(0, 0).err(), Some(SegmentError::Empty));
    assert_eq!(
        segments::split(100, 512).err(),
        Some(SegmentError::Misaligned)
    );
    assert_eq!(
        segments::split(0, 700).err(),
        Some(SegmentError::Misaligned)
    );
    assert_eq!(
        segments::split(4096, 512).err(),
        Some(SegmentError::Misaligned)
    );
    let runs: Vec<_> = segments::runs(25, 11).collect();
    assert_eq!(runs, [0..11, 11..22, 22..25]);
    assert_eq!(segments::runs(0, 11).count(), 0);
}

proptest! {
    #[test]
    fn segments_cover_the_buffer_exactly(start in 0usize..8, sectors in 1usize..200) {
        let (start, len) = (start * 512, sectors * 512);
        let segs: Vec<Segment> = segments::split(start, len).unwrap().collect();
        prop_assert_eq!(segs.len(), segments::pages_for(start, len));
        let mut at = 0;
        for (i, s) in segs.iter().enumerate() {
            prop_assert_eq!(s.page, i);
            prop_assert_eq!(s.offset, at);
            prop_assert!(s.first_sect <= s.last_sect && s.last_sect <= 7);
            prop_assert_eq!(s.len, (usize::from(s.last_sect - s.first_sect) + 1) * 512);
            if i > 0 { prop_assert_eq!(s.first_sect, 0); }
            if i + 1 < segs.len() { prop_assert_eq!(s.last_sect, 7); }
            if i == 0 { prop_assert_eq!(usize::from(s.first_sect) * 512, start); }
            at += s.len;
        }
        prop_assert_eq!(at, len);
    }
}

// ------------------------------------------------------------------ requests

#[test]
fn requests_lay_out_as_blkif_h() {
    let seg = BlkifRequestSegment {
        gref: GrantRef(0x1122_3344),
        first_sect: 1,
        last_sect: 6,
        _pad: 0,
    };
    let r = request::rw(BLKIF_OP_WRITE, 0xCA00, 0x0102_0304_0506_0708, 77, &[seg; 3]).unwrap();
    let b = r.as_bytes();
    assert_eq!(b.len(), 112);
    assert_eq!(&b[..4], &[1, 3, 0x00, 0xCA]);
    assert_eq!(&b[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[16..24], &77u64.to_le_bytes());
    assert_eq!(&b[24..32], &[0x44, 0x33, 0x22, 0x11, 1, 6, 0, 0]);
    assert!(request::rw(BLKIF_OP_READ, 0, 0, 0, &[seg; 12]).is_none());

    // struct blkif_request_indirect: indirect_op at 1, nr_segments (u16)
    // at 2, id at 8, sector at 16, handle at 24, grefs from 28.
    let r = request::indirect(
        BLKIF_OP_READ,
        0xCA00,
        9,
        1000,
        600,
        &[GrantRef(50), GrantRef(51)],
    )
    .unwrap();
    let b = r.as_bytes();
    assert_eq!(&b[..4], &[BLKIF_OP_INDIRECT, BLKIF_OP_READ, 0x58, 0x02]);
    assert_eq!(&b[8..16], &9u64.to_le_bytes());
    assert_eq!(&b[16..24], &1000u64.to_le_bytes());
    assert_eq!(&b[24..26], &[0x00, 0xCA]);
    assert_eq!(&b[28..36], &[50, 0, 0, 0, 51, 0, 0, 0]);
    assert!(b[36..].iter().all(|x| *x == 0));
    assert_eq!(request::response_op(&r), BLKIF_OP_READ);
    assert_eq!(request::as_indirect(&r).nr_segments, 600);
    // The gref count must match the segment count.
    assert!(request::indirect(BLKIF_OP_READ, 0, 0, 0, 600, &[GrantRef(1)]).is_none());
    assert!(request::indirect(BLKIF_OP_READ, 0, 0, 0, 0, &[]).is_none());

    // struct blkif_request_discard: flag at 1, handle at 2, id, sector,
    // nr_sectors at 24.
    let r = request::discard(0xCA00, 3, 64, 1024, true);
    let b = r.as_bytes();
    assert_eq!(
        &b[..4],
        &[BLKIF_OP_DISCARD, BLKIF_DISCARD_SECURE, 0x00, 0xCA]
    );
    assert_eq!(&b[24..32], &1024u64.to_le_bytes());
    assert!(b[32..].iter().all(|x| *x == 0));
    assert_eq!(request::as_discard(&r).nr_sectors, 1024);

    let r = request::flush(BLKIF_OP_WRITE_BARRIER, 5, 6);
    assert_eq!((r.operation, r.nr_segments, r.handle, r.id), (2, 0, 5, 6));

    let segs: Vec<_> = (0..3u32)
        .map(|i| BlkifRequestSegment {
            gref: GrantRef(i),
            first_sect: 0,
            last_sect: 7,
            _pad: 0,
        })
        .collect();
    let page = request::indirect_page_bytes(&segs);
    assert_eq!(page.len(), 24);
    assert_eq!(&page[8..16], &[1, 0, 0, 0, 0, 7, 0, 0]);
    assert_eq!(request::parse_indirect_page(&page, 3), segs);
    assert_eq!(request::indirect_pages_for(512), 1);
    assert_eq!(request::indirect_pages_for(513), 2);
}

#[test]
fn statuses_map_as_linux_reads_them() {
    assert_eq!(Status::from_raw(BLKIF_RSP_OKAY), Status::Okay);
    assert_eq!(Status::from_raw(BLKIF_RSP_ERROR), Status::Error);
    assert_eq!(Status::from_raw(BLKIF_RSP_EOPNOTSUPP), Status::NotSupported);
    assert_eq!(Status::from_raw(7), Status::Error);
    assert_eq!(Status::from_raw(-300), Status::Error);
    assert_eq!(
        Status::Okay.worst(Status::NotSupported),
        Status::NotSupported
    );
    assert_eq!(Status::NotSupported.worst(Status::Error), Status::Error);
    assert_eq!(Status::Okay.worst(Status::Okay), Status::Okay);
}

// ------------------------------------------------------------------ shadow

#[test]
fn shadow_ids_carry_a_generation() {
    let mut s: Shadow<u32> = Shadow::new(2);
    let a = s.alloc(10).unwrap();
    let b = s.alloc(11).unwrap();
    assert_eq!(s.alloc(12), Err(12));
    assert_eq!((a & 0xFFFF_FFFF, b & 0xFFFF_FFFF), (0, 1));
    assert_eq!(s.get(a), Ok(&10));
    assert_eq!(s.take(a), Ok(10));
    // The answered id again: a duplicate.
    assert_eq!(s.take(a), Err(Mismatch::NotPending));
    let c = s.alloc(13).unwrap();
    assert_eq!(c & 0xFFFF_FFFF, 0);
    assert_ne!(c, a);
    // A stale answer to the slot's earlier use does not match its new one.
    assert_eq!(s.get(a), Err(Mismatch::NotPending));
    assert_eq!(s.get(7), Err(Mismatch::Unknown));
    assert_eq!(s.get(u64::MAX), Err(Mismatch::Unknown));
    assert_eq!(s.in_flight(), 2);
    let mut drained = s.drain();
    drained.sort();
    assert_eq!(drained, [(b, 11), (c, 13)]);
    assert_eq!((s.in_flight(), s.available()), (0, 2));
}

proptest! {
    /// Against a model: every id taken once, no id matches after its take.
    #[test]
    fn shadow_matches_a_model(actions in prop::collection::vec((any::<bool>(), any::<u8>()), 1..200)) {
        let mut s: Shadow<u64> = Shadow::new(8);
        let mut live: Vec<u64> = Vec::new();
        let mut dead: Vec<u64> = Vec::new();
        for (alloc, pick) in actions {
            if alloc {
                match s.alloc(0) {
                    Ok(id) => { prop_assert!(!live.contains(&id)); live.push(id); }
                    Err(_) => prop_assert_eq!(live.len(), 8),
                }
            } else if !live.is_empty() {
                let id = live.remove(usize::from(pick) % live.len());
                prop_assert!(s.take(id).is_ok());
                dead.push(id);
            } else if let Some(id) = dead.get(usize::from(pick) % dead.len().max(1)) {
                prop_assert!(s.take(*id).is_err());
            }
            for d in &dead { prop_assert!(s.get(*d).is_err()); }
            for l in &live { prop_assert!(s.get(*l).is_ok()); }
            prop_assert_eq!(s.in_flight(), live.len());
        }
    }
}

// ------------------------------------------------------------------ fake machine

#[derive(Clone, Copy, Debug)]
struct Grant {
    page: PageIdx,
    readonly: bool,
    mapped: bool,
}

/// The guest side: pool pages, a grant table, notifications.
struct FakeEnv {
    pages: Vec<[u8; PAGE_SIZE]>,
    grants: BTreeMap<u32, Grant>,
    next_ref: u32,
    notified: Vec<usize>,
    /// Grants to allow before refusing (None: no limit).
    grant_budget: Option<usize>,
    ended_unknown: u32,
}

impl FakeEnv {
    fn new(pages: u32) -> FakeEnv {
        FakeEnv {
            pages: vec![[0xEE; PAGE_SIZE]; pages as usize],
            grants: BTreeMap::new(),
            next_ref: 8,
            notified: Vec::new(),
            grant_budget: None,
            ended_unknown: 0,
        }
    }
}

impl Env for FakeEnv {
    fn grant(&mut self, page: PageIdx, readonly: bool) -> Result<GrantRef, GrantFailed> {
        if let Some(b) = &mut self.grant_budget {
            if *b == 0 {
                return Err(GrantFailed);
            }
            *b -= 1;
        }
        assert!((page as usize) < self.pages.len(), "grant of page {page}");
        let r = self.next_ref;
        self.next_ref += 1;
        self.grants.insert(
            r,
            Grant {
                page,
                readonly,
                mapped: false,
            },
        );
        Ok(GrantRef(r))
    }

    fn end_access(&mut self, gref: GrantRef) -> Result<(), StillInUse> {
        match self.grants.get(&gref.0) {
            Some(g) if g.mapped => Err(StillInUse),
            Some(_) => {
                self.grants.remove(&gref.0);
                Ok(())
            }
            None => {
                self.ended_unknown += 1;
                Ok(())
            }
        }
    }

    fn write_page(&mut self, page: PageIdx, offset: usize, data: &[u8]) {
        self.pages[page as usize][offset..offset + data.len()].copy_from_slice(data);
    }

    fn read_page(&mut self, page: PageIdx, offset: usize, out: &mut [u8]) {
        let n = out.len();
        out.copy_from_slice(&self.pages[page as usize][offset..offset + n]);
    }

    fn notify(&mut self, queue: usize) {
        self.notified.push(queue);
    }
}

/// A back end over the same ring words: maps grants from the fake table,
/// checks every request, serves a disk.
struct FakeBackend<'a> {
    rings: Vec<BlkifBackRing<'a>>,
    disk: Vec<u8>,
    handle: u16,
    persistent: bool,
    /// Keep per-request grants mapped after answering (hostile).
    keep_mapped: bool,
    /// Grants kept so.
    kept: u32,
    /// Requests taken, not yet answered: (queue, response).
    pending: Vec<(usize, BlkifResponse)>,
    /// Every response sent, for hostile replays.
    sent: Vec<(usize, BlkifResponse)>,
    /// Operations seen, in order, with their segment counts.
    seen: Vec<(u8, u32)>,
    /// Grants seen, with their readonly flag.
    grants_seen: Vec<(u32, bool)>,
    /// A fixed status for requests of an operation (default: serve them).
    answers: BTreeMap<u8, i16>,
}

impl<'a> FakeBackend<'a> {
    fn new(words: &'a [Vec<AtomicU32>], disk_bytes: usize, handle: u16, persistent: bool) -> Self {
        FakeBackend {
            rings: words
                .iter()
                .map(|w| BlkifBackRing::new(w).unwrap())
                .collect(),
            disk: (0..disk_bytes).map(|i| (i * 7 + i / 512) as u8).collect(),
            handle,
            persistent,
            keep_mapped: false,
            kept: 0,
            pending: Vec::new(),
            sent: Vec::new(),
            seen: Vec::new(),
            grants_seen: Vec::new(),
            answers: BTreeMap::new(),
        }
    }

    /// Map a grant (for `write` access or not); `None` if the guest did not
    /// grant it so.
    fn map(&mut self, env: &mut FakeEnv, gref: GrantRef, write: bool) -> Option<PageIdx> {
        let g = env.grants.get_mut(&gref.0)?;
        if write && g.readonly {
            return None;
        }
        if self.persistent || self.keep_mapped {
            g.mapped = true;
        }
        if self.keep_mapped && !self.persistent {
            self.kept += 1;
        }
        self.grants_seen.push((gref.0, g.readonly));
        Some(g.page)
    }

    /// Segments of a request (direct or through its indirect pages).
    fn segments(
        &mut self,
        env: &mut FakeEnv,
        req: &BlkifRequest,
    ) -> Option<(u8, Vec<BlkifRequestSegment>)> {
        if req.operation == BLKIF_OP_INDIRECT {
            let ind = request::as_indirect(req);
            let n = usize::from(ind.nr_segments);
            let pages = request::indirect_pages_for(u32::from(ind.nr_segments)) as usize;
            let mut segs = Vec::new();
            for (i, g) in ind.indirect_grefs.iter().take(pages).enumerate() {
                let page = self.map(env, *g, false)?;
                let here = (n - i * 512).min(512);
                segs.extend(request::parse_indirect_page(
                    &env.pages[page as usize],
                    here,
                ));
            }
            Some((ind.indirect_op, segs))
        } else {
            let n = usize::from(req.nr_segments);
            Some((req.operation, req.seg.get(..n)?.to_vec()))
        }
    }

    /// Do one request against the disk; its status.
    fn execute(&mut self, env: &mut FakeEnv, req: &BlkifRequest) -> (u8, i16) {
        let op = request::response_op(req);
        if let Some(s) = self.answers.get(&op) {
            return (op, *s);
        }
        match req.operation {
            BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER => {
                self.seen.push((req.operation, u32::from(req.nr_segments)));
                (
                    op,
                    if req.nr_segments == 0 {
                        BLKIF_RSP_OKAY
                    } else {
                        BLKIF_RSP_ERROR
                    },
                )
            }
            BLKIF_OP_DISCARD => {
                let d = request::as_discard(req);
                self.seen.push((BLKIF_OP_DISCARD, 0));
                let start = d.sector_number as usize * 512;
                let end = start + d.nr_sectors as usize * 512;
                if d.handle != self.handle || end > self.disk.len() {
                    return (op, BLKIF_RSP_ERROR);
                }
                self.disk[start..end].fill(0);
                (op, BLKIF_RSP_OKAY)
            }
            _ => {
                let Some((rw, segs)) = self.segments(env, req) else {
                    return (op, BLKIF_RSP_ERROR);
                };
                self.seen.push((req.operation, segs.len() as u32));
                let handle = if req.operation == BLKIF_OP_INDIRECT {
                    request::as_indirect(req).handle
                } else {
                    req.handle
                };
                if handle != self.handle || segs.is_empty() {
                    return (op, BLKIF_RSP_ERROR);
                }
                let mut at = req.sector_number as usize * 512;
                for s in segs {
                    if s.first_sect > s.last_sect || s.last_sect > 7 {
                        return (op, BLKIF_RSP_ERROR);
                    }
                    let Some(page) = self.map(env, s.gref, rw == BLKIF_OP_READ) else {
                        return (op, BLKIF_RSP_ERROR);
                    };
                    let from = usize::from(s.first_sect) * 512;
                    let n = (usize::from(s.last_sect - s.first_sect) + 1) * 512;
                    if at + n > self.disk.len() {
                        return (op, BLKIF_RSP_ERROR);
                    }
                    let p = &mut env.pages[page as usize][from..from + n];
                    if rw == BLKIF_OP_READ {
                        p.copy_from_slice(&self.disk[at..at + n]);
                    } else {
                        self.disk[at..at + n].copy_from_slice(p);
                    }
                    at += n;
                }
                (op, BLKIF_RSP_OKAY)
            }
        }
    }

    /// Take every request from every ring and execute it; the responses
    /// wait in `pending`.
    fn take_all(&mut self, env: &mut FakeEnv) -> usize {
        let mut n = 0;
        for q in 0..self.rings.len() {
            while let Some(req) = self.rings[q].take_request().unwrap() {
                let (op, status) = self.execute(env, &req);
                self.pending.push((
                    q,
                    BlkifResponse {
                        id: req.id,
                        operation: op,
                        status,
                        ..BlkifResponse::default()
                    },
                ));
                n += 1;
            }
        }
        n
    }

    /// Send pending response `i` (its queue's ring).
    fn answer(&mut self, i: usize) {
        let (q, rsp) = self.pending.remove(i);
        self.rings[q].put_response(&rsp).unwrap();
        self.rings[q].push_responses();
        self.sent.push((q, rsp));
    }

    /// Send every pending response in `order` (indices into a shuffled
    /// list).
    fn answer_all(&mut self, mut rng: Option<&mut Rng>) {
        while !self.pending.is_empty() {
            let i = match rng.as_deref_mut() {
                Some(r) => r.below(self.pending.len() as u64) as usize,
                None => 0,
            };
            self.answer(i);
        }
    }

    /// Send a response of our own making in place of pending `i`.
    fn answer_with(&mut self, i: usize, f: impl FnOnce(&mut BlkifResponse)) {
        let (q, mut rsp) = self.pending.remove(i);
        f(&mut rsp);
        self.rings[q].put_response(&rsp).unwrap();
        self.rings[q].push_responses();
    }

    /// Let go of every mapping (the back end disconnected).
    fn disconnect(&mut self, env: &mut FakeEnv) {
        for g in env.grants.values_mut() {
            g.mapped = false;
        }
    }
}

fn ring_words(order: u32) -> Vec<AtomicU32> {
    (0..PAGE_WORDS << order)
        .map(|_| AtomicU32::new(0x5A5A_5A5A))
        .collect()
}

fn disk(sectors: u64, sector_size: u32, info: u32) -> DiskInfo {
    DiskInfo {
        sectors,
        sector_size,
        physical_sector_size: sector_size,
        info,
    }
}

fn features(persistent: bool, indirect: u32) -> Features {
    Features {
        flush: FlushMode::FlushCache,
        discard: Some(Discard {
            granularity: 4096,
            alignment: 0,
            secure: false,
        }),
        persistent,
        max_indirect_segments: indirect,
    }
}

const HANDLE: u16 = 0xCA00;

fn config(disk: DiskInfo, features: Features, pool_pages: u32) -> Config {
    Config {
        handle: HANDLE,
        disk,
        features,
        pool_pages,
    }
}

fn layout_for(cfg: &Config, words: &[Vec<AtomicU32>]) -> Layout {
    let slots: u32 = words
        .iter()
        .map(|w| BlkifFrontRing::attach(w, 0).unwrap().size())
        .sum();
    cfg.layout(slots)
}

/// A front end and a back end on `queues` rings of `2^order` pages.
fn machine<'a>(
    words: &'a [Vec<AtomicU32>],
    cfg: Config,
) -> (DataPath<'a>, FakeBackend<'a>, FakeEnv) {
    let layout = layout_for(&cfg, words);
    let mut env = FakeEnv::new(layout.total());
    let fronts = words
        .iter()
        .map(|w| BlkifFrontRing::init(w).unwrap())
        .collect();
    let dp = DataPath::new(cfg, fronts, &mut env).unwrap();
    let be = FakeBackend::new(
        words,
        (cfg.disk.sectors * 512) as usize,
        HANDLE,
        cfg.features.persistent,
    );
    (dp, be, env)
}

/// Serve everything in order and collect completions.
fn run(dp: &mut DataPath<'_>, be: &mut FakeBackend<'_>, env: &mut FakeEnv) -> Vec<Completed> {
    be.take_all(env);
    be.answer_all(None);
    dp.poll(env);
    let mut out = Vec::new();
    while let Some(c) = dp.next_completion() {
        out.push(c);
    }
    out
}

fn read_data(dp: &DataPath<'_>, env: &mut FakeEnv, c: &Completed) -> Vec<u8> {
    let mut buf = vec![0u8; c.len];
    assert_eq!(dp.copy_out(env, c, 0, &mut buf), c.len);
    buf
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

// ------------------------------------------------------------------ data path

#[test]
fn write_then_read_back_persistent_and_not() {
    for persistent in [false, true] {
        for indirect in [0, 32] {
            let words = vec![ring_words(0)];
            let cfg = config(disk(2048, 512, 0), features(persistent, indirect), 64);
            let (mut dp, mut be, mut env) = machine(&words, cfg);
            let data = pattern(100 * 1024, 3);
            let w = dp.submit_write(&mut env, 16, &data).unwrap();
            assert_eq!(env.notified, [0]);
            let done = run(&mut dp, &mut be, &mut env);
            assert_eq!(done.len(), 1);
            assert_eq!((done[0].tag, done[0].result), (w, Ok(())));
            assert_eq!(&be.disk[16 * 512..16 * 512 + data.len()], &data[..]);
            // 25 pages: three direct requests of 11, 11, 3, or one indirect.
            let want: Vec<(u8, u32)> = if indirect == 0 {
                vec![
                    (BLKIF_OP_WRITE, 11),
                    (BLKIF_OP_WRITE, 11),
                    (BLKIF_OP_WRITE, 3),
                ]
            } else {
                vec![(BLKIF_OP_INDIRECT, 25)]
            };
            assert_eq!(be.seen, want);
            for c in done {
                dp.release(c);
            }
            let r = dp.submit_read(&mut env, 16, data.len()).unwrap();
            let done = run(&mut dp, &mut be, &mut env);
            assert_eq!(done[0].tag, r);
            assert_eq!(read_data(&dp, &mut env, &done[0]), data);
            for c in done {
                dp.release(c);
            }
            assert_eq!(dp.free_pages(), dp.layout().data_pages as usize);
            assert_eq!(dp.in_flight(), 0);
            if persistent {
                // Every pool page granted once, writable, and still granted.
                assert_eq!(env.grants.len(), dp.layout().total() as usize);
                assert!(env.grants.values().all(|g| !g.readonly));
                be.disconnect(&mut env);
                assert!(dp.shutdown(&mut env).is_empty());
            } else {
                // Writes were granted read-only, reads writable; all ended.
                assert!(env.grants.is_empty());
                let ro = be.grants_seen.iter().filter(|(_, ro)| *ro).count();
                assert!(ro >= 25);
                assert!(be.grants_seen.iter().any(|(_, ro)| !ro));
            }
            assert_eq!(env.ended_unknown, 0);
        }
    }
}

#[test]
fn persistent_grants_are_reused_lifo() {
    let words = vec![ring_words(0)];
    let cfg = config(disk(256, 512, 0), features(true, 0), 16);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    let before = env.grants.len();
    for round in 0..3 {
        dp.submit_write(&mut env, 0, &pattern(4096, round)).unwrap();
        for c in run(&mut dp, &mut be, &mut env) {
            dp.release(c);
        }
    }
    assert_eq!(env.grants.len(), before);
    // The same page (and grant) every time: last freed, first reused.
    let refs: Vec<u32> = be.grants_seen.iter().map(|(g, _)| *g).collect();
    assert_eq!(refs.len(), 3);
    assert!(refs.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn indirect_requests_use_enough_indirect_pages() {
    let words = vec![ring_words(0)];
    let cfg = config(disk(8192, 512, 0), features(false, 600), 600);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    assert_eq!(dp.layout().indirect_pages, 2 * 32);
    let data = pattern(600 * 4096, 9);
    dp.submit_write(&mut env, 0, &data).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done[0].result, Ok(()));
    assert_eq!(be.seen, [(BLKIF_OP_INDIRECT, 600)]);
    assert_eq!(&be.disk[..data.len()], &data[..]);
    assert_eq!(dp.free_indirect_pages(), 64);
    assert!(env.grants.is_empty());
}

#[test]
fn a_split_request_completes_once_with_the_worst_status() {
    let words = vec![ring_words(0)];
    let cfg = config(disk(2048, 512, 0), features(false, 0), 64);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    let tag = dp.submit_read(&mut env, 0, 30 * 4096).unwrap();
    assert_eq!(be.take_all(&mut env), 3);
    // Answer the last part first, the middle one with an error.
    be.answer(2);
    dp.poll(&mut env);
    assert!(!dp.has_completions());
    be.answer_with(1, |r| r.status = BLKIF_RSP_ERROR);
    dp.poll(&mut env);
    assert!(!dp.has_completions());
    be.answer(0);
    dp.poll(&mut env);
    let c = dp.take_completion(tag).unwrap();
    assert_eq!(c.result, Err(IoError::Io));
    assert!(dp.next_completion().is_none());
    dp.release(c);
    assert_eq!(dp.free_pages(), 64);
    assert!(env.grants.is_empty());
}

#[test]
fn flush_follows_the_back_ends_offer() {
    // Flush cache: an empty BLKIF_OP_FLUSH_DISKCACHE.
    let words = vec![ring_words(0)];
    let cfg = config(disk(64, 512, 0), features(false, 0), 16);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    dp.submit_flush(&mut env).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done[0].result, Ok(()));
    assert_eq!(be.seen, [(BLKIF_OP_FLUSH_DISKCACHE, 0)]);

    // Barrier only: an empty BLKIF_OP_WRITE_BARRIER.
    let mut f = features(false, 0);
    f.flush = FlushMode::Barrier;
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) = machine(&words, config(disk(64, 512, 0), f, 16));
    dp.submit_flush(&mut env).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done[0].result, Ok(()));
    assert_eq!(be.seen, [(BLKIF_OP_WRITE_BARRIER, 0)]);

    // Neither: completes at once, nothing on the ring.
    f.flush = FlushMode::None;
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) = machine(&words, config(disk(64, 512, 0), f, 16));
    let t = dp.submit_flush(&mut env).unwrap();
    assert_eq!(
        dp.next_completion().map(|c| (c.tag, c.result)),
        Some((t, Ok(())))
    );
    assert!(env.notified.is_empty());
    assert_eq!(be.take_all(&mut env), 0);
}

#[test]
fn a_refused_flush_turns_flushing_off() {
    for status in [BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR] {
        let words = vec![ring_words(0)];
        let (mut dp, mut be, mut env) =
            machine(&words, config(disk(64, 512, 0), features(false, 0), 16));
        be.answers.insert(BLKIF_OP_FLUSH_DISKCACHE, status);
        dp.submit_flush(&mut env).unwrap();
        let done = run(&mut dp, &mut be, &mut env);
        assert_eq!(done[0].result, Err(IoError::NotSupported));
        assert_eq!(dp.features().flush, FlushMode::None);
        dp.submit_flush(&mut env).unwrap();
        assert_eq!(dp.next_completion().map(|c| c.result), Some(Ok(())));
        assert!(dp.broken().is_none());
    }
}

#[test]
fn discard_zeroes_and_a_refusal_turns_it_off() {
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) =
        machine(&words, config(disk(64, 512, 0), features(false, 0), 16));
    assert_eq!(
        dp.submit_discard(&mut env, 0, 8, true),
        Err(SubmitError::NotSupported)
    );
    dp.submit_discard(&mut env, 8, 16, false).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(
        (done[0].result, done[0].len, done[0].sector),
        (Ok(()), 0, 8)
    );
    assert!(be.disk[8 * 512..24 * 512].iter().all(|b| *b == 0));
    assert_ne!(be.disk[24 * 512], 0);
    be.answers.insert(BLKIF_OP_DISCARD, BLKIF_RSP_EOPNOTSUPP);
    dp.submit_discard(&mut env, 0, 8, false).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done[0].result, Err(IoError::NotSupported));
    assert_eq!(
        dp.submit_discard(&mut env, 0, 8, false),
        Err(SubmitError::NotSupported)
    );
}

#[test]
fn requests_are_checked_before_anything_moves() {
    let words = vec![ring_words(0)];
    let (mut dp, _be, mut env) = machine(&words, config(disk(64, 4096, 0), features(false, 0), 16));
    let s = |r: Result<Tag, SubmitError>| r.err();
    assert_eq!(s(dp.submit_read(&mut env, 0, 0)), Some(SubmitError::Empty));
    assert_eq!(
        s(dp.submit_read(&mut env, 1, 4096)),
        Some(SubmitError::Misaligned)
    );
    assert_eq!(
        s(dp.submit_read(&mut env, 0, 512)),
        Some(SubmitError::Misaligned)
    );
    assert_eq!(
        s(dp.submit_read(&mut env, 64, 4096)),
        Some(SubmitError::OutOfRange)
    );
    assert_eq!(
        s(dp.submit_read(&mut env, 56, 8192)),
        Some(SubmitError::OutOfRange)
    );
    assert_eq!(
        s(dp.submit_read(&mut env, u64::MAX / 2, 4096)),
        Some(SubmitError::OutOfRange)
    );
    assert_eq!(
        s(dp.submit_discard(&mut env, 0, u64::MAX, false)),
        Some(SubmitError::OutOfRange)
    );
    assert_eq!(s(dp.submit_read(&mut env, 0, 32768)), None);
    assert!(env.grants.len() == 8 && env.notified.len() == 1);

    let words = vec![ring_words(0)];
    let (mut dp, _be, mut env) = machine(
        &words,
        config(disk(4096, 512, VDISK_READONLY), features(false, 0), 16),
    );
    assert_eq!(
        s(dp.submit_write(&mut env, 0, &[0; 512])),
        Some(SubmitError::ReadOnly)
    );
    assert_eq!(
        s(dp.submit_discard(&mut env, 0, 8, false)),
        Some(SubmitError::ReadOnly)
    );
    assert_eq!(
        s(dp.submit_read(&mut env, 0, 17 * 4096)),
        Some(SubmitError::TooBig)
    );
    assert!(dp.submit_read(&mut env, 0, 512).is_ok());
    assert!(dp.submit_flush(&mut env).is_ok());
}

#[test]
fn busy_when_the_pool_or_the_ring_is_full() {
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) =
        machine(&words, config(disk(4096, 512, 0), features(false, 0), 16));
    dp.submit_read(&mut env, 0, 12 * 4096).unwrap();
    assert_eq!(
        dp.submit_read(&mut env, 0, 5 * 4096),
        Err(SubmitError::Busy)
    );
    dp.submit_read(&mut env, 0, 4 * 4096).unwrap();
    for c in run(&mut dp, &mut be, &mut env) {
        dp.release(c);
    }
    // 32 ring slots: 16 one-page reads fit the pool, flushes fill the rest.
    for _ in 0..16 {
        dp.submit_read(&mut env, 0, 4096).unwrap();
    }
    assert_eq!(dp.submit_read(&mut env, 0, 4096), Err(SubmitError::Busy));
    for _ in 0..16 {
        dp.submit_flush(&mut env).unwrap();
    }
    assert_eq!(dp.submit_flush(&mut env), Err(SubmitError::Busy));
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done.len(), 32);
    assert!(done.iter().all(|c| c.result.is_ok()));
}

#[test]
fn a_failed_grant_undoes_the_whole_request() {
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) =
        machine(&words, config(disk(4096, 512, 0), features(false, 0), 64));
    env.grant_budget = Some(15);
    assert_eq!(
        dp.submit_write(&mut env, 0, &pattern(20 * 4096, 1)),
        Err(SubmitError::Grant)
    );
    assert!(env.grants.is_empty());
    assert_eq!(dp.free_pages(), 64);
    assert_eq!(dp.in_flight(), 0);
    assert_eq!(be.take_all(&mut env), 0);
    env.grant_budget = None;
    dp.submit_write(&mut env, 0, &pattern(20 * 4096, 1))
        .unwrap();
    assert_eq!(run(&mut dp, &mut be, &mut env)[0].result, Ok(()));
}

#[test]
fn several_queues_share_the_work() {
    let words = vec![ring_words(1), ring_words(1)];
    let (mut dp, mut be, mut env) =
        machine(&words, config(disk(8192, 512, 0), features(true, 32), 256));
    let mut tags = Vec::new();
    for i in 0..100u64 {
        tags.push(dp.submit_read(&mut env, i * 8, 4096).unwrap());
    }
    assert!(env.notified.contains(&0) && env.notified.contains(&1));
    let mut rng = Rng::new(5);
    be.take_all(&mut env);
    be.answer_all(Some(&mut rng));
    dp.poll(&mut env);
    let mut done = Vec::new();
    while let Some(c) = dp.next_completion() {
        assert_eq!(c.result, Ok(()));
        let expect = be.disk[c.sector as usize * 512..c.sector as usize * 512 + 4096].to_vec();
        assert_eq!(read_data(&dp, &mut env, &c), expect);
        done.push(c.tag);
        dp.release(c);
    }
    done.sort();
    assert_eq!(done, tags);
}

// ------------------------------------------------------------------ hostile back ends

fn hostile_setup(persistent: bool) -> (Vec<Vec<AtomicU32>>, Config) {
    (
        vec![ring_words(0)],
        config(disk(2048, 512, 0), features(persistent, 32), 64),
    )
}

/// After the data path stopped: every request completed once, with a
/// protocol error if it was in flight; no page lost.
fn check_stopped(dp: &mut DataPath<'_>, env: &mut FakeEnv, submitted: &[Tag]) {
    assert!(dp.broken().is_some());
    let mut seen = Vec::new();
    while let Some(c) = dp.next_completion() {
        assert!(!seen.contains(&c.tag));
        seen.push(c.tag);
        dp.release(c);
    }
    seen.sort();
    assert_eq!(seen, submitted);
    assert_eq!(dp.in_flight(), 0);
    let layout = dp.layout();
    assert_eq!(
        dp.free_pages() + dp.free_indirect_pages() + dp.quarantined(),
        layout.total() as usize
    );
    assert!(matches!(
        dp.submit_read(env, 0, 512),
        Err(SubmitError::Broken(_))
    ));
}

#[test]
fn responses_with_bad_ids_or_operations_stop_the_device() {
    type Bend = fn(&mut BlkifResponse);
    type Expect = fn(&Hostile) -> bool;
    let cases: [(Bend, Expect); 4] = [
        (
            |r| r.id = 999,
            |h| matches!(h, Hostile::UnknownId { id: 999, .. }),
        ),
        (
            |r| r.id = r.id.wrapping_add(1 << 32),
            |h| matches!(h, Hostile::NotPending { .. }),
        ),
        (
            |r| r.operation = BLKIF_OP_WRITE,
            |h| {
                matches!(
                    h,
                    Hostile::WrongOp {
                        got: 1,
                        want: 0,
                        ..
                    }
                )
            },
        ),
        (
            |r| r.id = u64::MAX,
            |h| matches!(h, Hostile::UnknownId { .. }),
        ),
    ];
    for (bend, want) in cases {
        let (words, cfg) = hostile_setup(false);
        let (mut dp, mut be, mut env) = machine(&words, cfg);
        let tags = [
            dp.submit_read(&mut env, 0, 4096).unwrap(),
            dp.submit_read(&mut env, 8, 4096).unwrap(),
        ];
        be.take_all(&mut env);
        be.answer_with(0, bend);
        dp.poll(&mut env);
        let h = dp.broken().unwrap();
        assert!(want(&h), "{h:?}");
        // Nothing completed normally: both fail.
        let mut results = Vec::new();
        while let Some(c) = dp.next_completion() {
            results.push(c.result);
            dp.release(c);
        }
        assert_eq!(results, [Err(IoError::Protocol), Err(IoError::Protocol)]);
        // The back end's late answer changes nothing.
        be.answer_all(None);
        assert_eq!(dp.poll(&mut env), 0);
        assert!(env.grants.is_empty());
        let _ = tags;
        check_stopped(&mut dp, &mut env, &[]);
    }
}

#[test]
fn a_duplicated_response_stops_the_device() {
    let (words, cfg) = hostile_setup(true);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    let a = dp.submit_read(&mut env, 0, 4096).unwrap();
    let b = dp.submit_read(&mut env, 8, 4096).unwrap();
    be.take_all(&mut env);
    be.answer(0);
    let first = be.sent[0].1;
    be.answer_with(0, |r| *r = first);
    dp.poll(&mut env);
    assert!(matches!(dp.broken(), Some(Hostile::NotPending { .. })));
    let c = dp.take_completion(a).unwrap();
    assert_eq!(c.result, Ok(()));
    dp.release(c);
    let c = dp.take_completion(b).unwrap();
    assert_eq!(c.result, Err(IoError::Protocol));
    dp.release(c);
    check_stopped(&mut dp, &mut env, &[]);
}

#[test]
fn a_producer_index_past_the_requests_stops_the_device() {
    let (words, cfg) = hostile_setup(false);
    let (mut dp, _be, mut env) = machine(&words, cfg);
    let t = dp.submit_read(&mut env, 0, 4096).unwrap();
    // rsp_prod is the third word of the header.
    words[0][2].store(1000, Ordering::SeqCst);
    assert!(dp.responses_waiting());
    dp.poll(&mut env);
    assert_eq!(dp.broken(), Some(Hostile::Overflow { queue: 0 }));
    assert!(!dp.responses_waiting());
    check_stopped(&mut dp, &mut env, &[t]);
}

#[test]
fn a_grant_kept_mapped_without_persistence_is_quarantined() {
    let (words, cfg) = hostile_setup(false);
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    be.keep_mapped = true;
    let t = dp.submit_write(&mut env, 0, &pattern(3 * 4096, 2)).unwrap();
    let done = run(&mut dp, &mut be, &mut env);
    assert_eq!(done[0].result, Err(IoError::Protocol));
    assert!(matches!(dp.broken(), Some(Hostile::StillMapped { .. })));
    assert_eq!(done[0].pages().len(), 0);
    assert_eq!(dp.quarantined(), 3);
    for c in done {
        dp.release(c);
    }
    check_stopped(&mut dp, &mut env, &[]);
    let _ = t;
    // Still mapped at shutdown: those pages must never be reused.
    assert_eq!(dp.shutdown(&mut env).len(), 3);
    be.disconnect(&mut env);
}

#[test]
fn shutdown_aborts_what_is_in_flight_and_reports_kept_pages() {
    let words = vec![ring_words(0)];
    let (mut dp, mut be, mut env) =
        machine(&words, config(disk(2048, 512, 0), features(true, 0), 16));
    // One request answered (the back end now maps that page persistently),
    // one never answered.
    dp.submit_read(&mut env, 0, 4096).unwrap();
    for c in run(&mut dp, &mut be, &mut env) {
        dp.release(c);
    }
    let t = dp.submit_read(&mut env, 8, 4096).unwrap();
    let leaked = dp.shutdown(&mut env);
    assert_eq!(leaked.len(), 1);
    let c = dp.take_completion(t).unwrap();
    assert_eq!(c.result, Err(IoError::Aborted));
    assert_eq!(dp.submit_read(&mut env, 0, 512), Err(SubmitError::Closed));
    // Every other grant was ended.
    assert_eq!(env.grants.len(), 1);
}

// ------------------------------------------------------------------ property tests

#[derive(Clone, Debug)]
enum Step {
    Read {
        block: u16,
        blocks: u8,
    },
    Write {
        block: u16,
        blocks: u8,
        seed: u8,
    },
    Flush,
    Discard {
        block: u16,
        blocks: u8,
    },
    /// The back end takes what is queued and answers some, in some order.
    Serve {
        answer: u8,
        order: u64,
    },
    /// One response gets a status of the back end's choosing.
    Fail {
        status: i16,
    },
    Poll,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (any::<u16>(), 1u8..40).prop_map(|(block, blocks)| Step::Read { block, blocks }),
        4 => (any::<u16>(), 1u8..40, any::<u8>())
            .prop_map(|(block, blocks, seed)| Step::Write { block, blocks, seed }),
        1 => Just(Step::Flush),
        1 => (any::<u16>(), 1u8..8).prop_map(|(block, blocks)| Step::Discard { block, blocks }),
        4 => (any::<u8>(), any::<u64>()).prop_map(|(answer, order)| Step::Serve { answer, order }),
        1 => prop_oneof![Just(BLKIF_RSP_ERROR), Just(BLKIF_RSP_EOPNOTSUPP), Just(5i16)]
            .prop_map(|status| Step::Fail { status }),
        2 => Just(Step::Poll),
    ]
}

#[derive(Clone, Copy, Debug)]
struct Setup {
    persistent: bool,
    indirect: u32,
    order: u32,
    queues: usize,
    sector_size: u32,
    pool: u32,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        any::<bool>(),
        prop_oneof![Just(0u32), Just(16), Just(32), Just(600)],
        0u32..2,
        1usize..3,
        prop_oneof![Just(512u32), Just(4096)],
        prop_oneof![Just(11u32), Just(24), Just(64)],
    )
        .prop_map(
            |(persistent, indirect, order, queues, sector_size, pool)| Setup {
                persistent,
                indirect,
                order,
                queues,
                sector_size,
                pool,
            },
        )
}

/// What a request in flight touches, for the model.
#[derive(Clone, Debug)]
struct Flight {
    start: usize,
    end: usize,
    writes: bool,
    data: Option<Vec<u8>>,
}

const DISK_SECTORS: u64 = 1024;

/// Run `steps`; with `hostile`, at step `at` the back end answers with a
/// broken response of kind `kind`. Checks, throughout: every tag completes
/// exactly once; a read that succeeded returns what the disk held (no write
/// to its range was in flight); a write that succeeded is on the disk;
/// grants and pages all come back.
fn simulate(s: Setup, steps: &[Step], hostile: Option<(usize, u8)>) -> Result<(), TestCaseError> {
    let words: Vec<_> = (0..s.queues).map(|_| ring_words(s.order)).collect();
    let cfg = config(
        disk(DISK_SECTORS, s.sector_size, 0),
        features(s.persistent, s.indirect),
        s.pool,
    );
    let (mut dp, mut be, mut env) = machine(&words, cfg);
    let block = s.sector_size as usize;
    let blocks_on_disk = DISK_SECTORS as usize * 512 / block;
    let mut model = be.disk.clone();
    let mut flights: BTreeMap<Tag, Flight> = BTreeMap::new();
    let mut completed: Vec<Tag> = Vec::new();
    let mut fail_next: Option<i16> = None;
    let mut stopped = false;

    let mut finish = |dp: &mut DataPath<'_>,
                      env: &mut FakeEnv,
                      be: &FakeBackend<'_>,
                      model: &mut Vec<u8>,
                      flights: &mut BTreeMap<Tag, Flight>|
     -> Result<(), TestCaseError> {
        while let Some(c) = dp.next_completion() {
            prop_assert!(!completed.contains(&c.tag), "{:?} completed twice", c.tag);
            completed.push(c.tag);
            let f = flights.remove(&c.tag);
            prop_assert!(f.is_some(), "completion for unknown {:?}", c.tag);
            let f = f.unwrap_or(Flight {
                start: 0,
                end: 0,
                writes: false,
                data: None,
            });
            match (c.op, c.result) {
                (Op::Read, Ok(())) => {
                    prop_assert_eq!(&read_data(dp, env, &c)[..], &model[f.start..f.end]);
                }
                (Op::Write, Ok(())) => {
                    prop_assert_eq!(&be.disk[f.start..f.end], &f.data.unwrap_or_default()[..]);
                    model[f.start..f.end].copy_from_slice(&be.disk[f.start..f.end]);
                }
                (Op::Discard { .. }, Ok(())) => {
                    prop_assert!(be.disk[f.start..f.end].iter().all(|b| *b == 0));
                    model[f.start..f.end].fill(0);
                }
                (_, Err(_)) if f.writes && f.end > f.start => {
                    // Parts may have landed: the disk is the truth now.
                    model[f.start..f.end].copy_from_slice(&be.disk[f.start..f.end]);
                }
                _ => {}
            }
            dp.release(c);
        }
        Ok(())
    };

    for (i, st) in steps.iter().enumerate() {
        if let Some((at, kind)) = hostile
            && i == at
            && !stopped
            && kind >= 0x80
        {
            // From now on the back end keeps per-request grants mapped:
            // the next answered request stops the device.
            be.keep_mapped = true;
        } else if let Some((at, kind)) = hostile
            && i == at
            && !stopped
        {
            be.take_all(&mut env);
            if be.pending.is_empty() {
                // Nothing in flight to answer wrongly: an impossible
                // producer index instead.
                words[0][2].store(
                    words[0][2].load(Ordering::SeqCst).wrapping_add(500),
                    Ordering::SeqCst,
                );
            } else {
                let n = be.pending.len();
                let i = usize::from(kind) % n;
                // A replay of an earlier answer on the same ring (ids are
                // per ring: another ring's answer may name a request of
                // this one, which is then simply its answer).
                let q = be.pending[i].0;
                let last = be.sent.iter().rev().find(|(sq, _)| *sq == q).copied();
                be.answer_with(i, |r| match kind % 4 {
                    0 => r.id = r.id.wrapping_add(1 << 32),
                    1 => r.id |= 0xFFFF,
                    2 => r.operation ^= 1,
                    _ => match last {
                        Some((_, l)) => *r = l,
                        None => r.id ^= 1 << 40,
                    },
                });
            }
            dp.poll(&mut env);
            prop_assert!(dp.broken().is_some());
            stopped = true;
            finish(&mut dp, &mut env, &be, &mut model, &mut flights)?;
            prop_assert!(
                flights.is_empty(),
                "{} requests never completed",
                flights.len()
            );
            continue;
        }
        let overlaps = |flights: &BTreeMap<Tag, Flight>, start: usize, end: usize, writes: bool| {
            flights
                .values()
                .any(|f| (f.writes || writes) && f.start < end && start < f.end)
        };
        match st {
            Step::Read { block: b, blocks }
            | Step::Write {
                block: b, blocks, ..
            }
            | Step::Discard { block: b, blocks } => {
                let first = usize::from(*b) % blocks_on_disk;
                let n = usize::from(*blocks).min(blocks_on_disk - first);
                let (start, end) = (first * block, (first + n) * block);
                let writes = !matches!(st, Step::Read { .. });
                if overlaps(&flights, start, end, writes) {
                    continue;
                }
                let sector = (start / 512) as u64;
                let (r, data) = match st {
                    Step::Read { .. } => (dp.submit_read(&mut env, sector, end - start), None),
                    Step::Write { seed, .. } => {
                        let data = pattern(end - start, *seed);
                        (dp.submit_write(&mut env, sector, &data), Some(data))
                    }
                    _ => (
                        dp.submit_discard(&mut env, sector, ((end - start) / 512) as u64, false),
                        None,
                    ),
                };
                match r {
                    Ok(tag) => {
                        flights.insert(
                            tag,
                            Flight {
                                start,
                                end,
                                writes,
                                data,
                            },
                        );
                    }
                    Err(SubmitError::Busy) | Err(SubmitError::TooBig) => {}
                    Err(SubmitError::Broken(_)) => prop_assert!(dp.broken().is_some()),
                    Err(SubmitError::NotSupported) => {
                        prop_assert!(dp.features().discard.is_none());
                    }
                    Err(e) => prop_assert!(false, "submit failed: {e:?}"),
                }
            }
            Step::Flush => match dp.submit_flush(&mut env) {
                Ok(tag) => {
                    flights.insert(
                        tag,
                        Flight {
                            start: 0,
                            end: 0,
                            writes: false,
                            data: None,
                        },
                    );
                }
                Err(SubmitError::Busy) => {}
                Err(SubmitError::Broken(_)) => prop_assert!(dp.broken().is_some()),
                Err(e) => prop_assert!(false, "flush failed: {e:?}"),
            },
            Step::Serve { answer, order } => {
                be.take_all(&mut env);
                let mut rng = Rng::new(*order);
                for _ in 0..usize::from(*answer) % 8 + 1 {
                    if be.pending.is_empty() {
                        break;
                    }
                    let i = rng.below(be.pending.len() as u64) as usize;
                    match fail_next.take() {
                        Some(status) => be.answer_with(i, |r| r.status = status),
                        None => be.answer(i),
                    }
                }
            }
            Step::Fail { status } => fail_next = Some(*status),
            Step::Poll => {
                dp.poll(&mut env);
            }
        }
        finish(&mut dp, &mut env, &be, &mut model, &mut flights)?;
    }
    // Drain: everything answered, everything completes.
    for _ in 0..4 {
        be.take_all(&mut env);
        be.answer_all(None);
        dp.poll(&mut env);
        finish(&mut dp, &mut env, &be, &mut model, &mut flights)?;
    }
    prop_assert!(
        flights.is_empty(),
        "{} requests never completed",
        flights.len()
    );
    let stopped = dp.broken().is_some();
    if be.kept > 0 {
        prop_assert!(stopped);
    }
    prop_assert_eq!(dp.in_flight(), 0);
    prop_assert_eq!(env.ended_unknown, 0);
    let layout = dp.layout();
    prop_assert_eq!(
        dp.free_pages() + dp.free_indirect_pages() + dp.quarantined(),
        layout.total() as usize
    );
    if !stopped && !be.keep_mapped {
        prop_assert_eq!(dp.quarantined(), 0);
        prop_assert_eq!(&be.disk, &model);
        let live = if s.persistent {
            layout.total() as usize
        } else {
            0
        };
        prop_assert_eq!(env.grants.len(), live);
        // A full read through the front end returns the disk.
        let mut at = 0;
        while at < model.len() {
            let n = (model.len() - at).min(dp.pool_bytes());
            let tag = dp.submit_read(&mut env, (at / 512) as u64, n);
            prop_assert!(tag.is_ok(), "{:?}", tag);
            be.take_all(&mut env);
            be.answer_all(None);
            dp.poll(&mut env);
            let c = dp.next_completion();
            prop_assert!(c.is_some());
            let c = c.unwrap();
            prop_assert_eq!(&read_data(&dp, &mut env, &c)[..], &model[at..at + n]);
            dp.release(c);
            at += n;
        }
    }
    be.disconnect(&mut env);
    prop_assert!(dp.shutdown(&mut env).is_empty());
    prop_assert!(env.grants.is_empty(), "{} grants left", env.grants.len());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random requests, answered in random order with random failures,
    /// against a model of the disk.
    #[test]
    fn data_path_matches_a_model(s in setup(), steps in prop::collection::vec(step(), 1..80)) {
        simulate(s, &steps, None)?;
    }

    /// The same with one broken response somewhere: the device stops, and
    /// nothing is lost, completed twice, or left granted.
    #[test]
    fn hostile_responses_never_corrupt_state(
        s in setup(),
        steps in prop::collection::vec(step(), 1..60),
        at in 0usize..60,
        kind in any::<u8>(),
    ) {
        let at = at % steps.len();
        simulate(s, &steps, Some((at, kind)))?;
    }
}

// ------------------------------------------------------------------ blkcheck

#[test]
fn blkcheck_arguments() {
    assert_eq!(check::parse_args(b"\0").unwrap(), Args::default());
    let a = check::parse_args(b"seed=7 limit=16 verify-only qd=4 ops=100 vdev=51728 other=x\0junk")
        .unwrap();
    assert_eq!(
        a,
        Args {
            seed: 7,
            limit_mib: Some(16),
            verify_only: true,
            vdev: Some(51728),
            queue_depth: 4,
            random_ops: 100,
            ..Args::default()
        }
    );
    let a = check::parse_args(b"wait=60 repeat=1000").unwrap();
    assert_eq!((a.wait_s, a.repeat), (60, 1000));
    let a = check::parse_args(b"order=0 queues=2 indirect=0 persistent=0 pool=64").unwrap();
    assert_eq!(
        (
            a.ring_order,
            a.queues,
            a.indirect,
            a.persistent,
            a.pool_pages
        ),
        (Some(0), Some(2), Some(0), Some(false), Some(64))
    );
    for bad in [
        "order=5",
        "queues=0",
        "persistent=2",
        "pool=0",
        "indirect=5000",
        "wait=4000",
        "repeat=0",
    ] {
        assert!(check::parse_args(bad.as_bytes()).is_err(), "{bad}");
    }
    assert!(check::parse_args(b"seed=x").is_err());
    assert!(check::parse_args(b"qd=0").is_err());
    assert!(check::parse_args(b"qd=1000").is_err());
    assert_eq!(check::parse_args(b"limit=0").unwrap().limit_mib, None);
    assert!(!check::parse_args(b"verify-only-not").unwrap().verify_only);
}

#[test]
fn blkcheck_pattern_depends_on_seed_and_sector() {
    let mut a = vec![0u8; 4096];
    check::fill(1, 100, &mut a);
    assert_eq!(check::verify(1, 100, &a), Ok(()));
    // Another seed, another place, a shifted buffer: all fail.
    assert!(check::verify(2, 100, &a).is_err());
    let m = check::verify(1, 101, &a).unwrap_err();
    assert_eq!((m.sector, m.offset), (101, 0));
    assert!(check::verify(1, 100, &a[512..]).is_err());
    assert_eq!(check::verify_sampled(1, 100, &a), Ok(()));
    assert_eq!(check::verify_sampled(1, 101, &a).unwrap_err().sector, 101);
    // One flipped byte is found where it is.
    a[3 * 512 + 17] ^= 1;
    assert_eq!(check::verify_sampled(1, 100, &a), Ok(()));
    let m = check::verify(1, 100, &a).unwrap_err();
    assert_eq!((m.sector, m.offset), (103, 16));
    assert!(m.to_string().starts_with("sector 103 byte 16:"));
    // Fill is position-independent: the second half of a fill from 100 is
    // a fill from 104.
    let mut b = vec![0u8; 2048];
    check::fill(1, 104, &mut b);
    let mut c = vec![0u8; 4096];
    check::fill(1, 100, &mut c);
    assert_eq!(&c[2048..], &b[..]);
}

#[test]
fn blkcheck_rates_and_span() {
    assert_eq!(Rate::mib_per_s(10 << 20, 2_000_000_000).to_string(), "5.00");
    assert_eq!(Rate::mib_per_s(1 << 20, 3_000_000_000).to_string(), "0.33");
    assert_eq!(Rate::mib_per_s(1, 0).to_string(), "0.00");
    assert_eq!(Rate::per_s(2048, 500_000_000).to_string(), "4096.00");
    assert_eq!(Rate::per_s(2048, 500_000_000).whole(), 4096);
    assert_eq!(check::span(100 << 20, Some(16), 512), 16 << 20);
    assert_eq!(check::span(1000, None, 512), 512);
    assert_eq!(check::span(9000, None, 4096), 8192);
    let mut r = Rng::new(0);
    let xs: Vec<u64> = (0..100).map(|_| r.below(10)).collect();
    assert!(xs.iter().all(|x| *x < 10));
    assert!(xs.iter().any(|x| *x != xs[0]));
    assert_eq!(Rng::new(3).below(0), 0);
}

#[test]
fn displays_say_what_happened() {
    assert!(
        Hostile::UnknownId { queue: 0, id: 9 }
            .to_string()
            .contains("unknown id 0x9")
    );
    assert!(SubmitError::ReadOnly.to_string().contains("read-only"));
    assert!(IoError::Io.to_string().contains("BLKIF_RSP_ERROR"));
    let e: HandshakeError<&str> = HandshakeError::Missing("sectors");
    assert_eq!(e.to_string(), "key sectors is missing");
    let _ = handshake::PROTOCOL_X86_64;
}
