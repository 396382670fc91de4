//! The back end against a front end played by the test: grants and rings live
//! in a fake hypervisor's memory, the disk in [`MemDisks`].
#![allow(clippy::cast_possible_truncation)] // page and segment counts are small

use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;

use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::io::blkif::{
    BLKIF_OP_DISCARD, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_RSP_EOPNOTSUPP,
    BlkifFrontRing, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

use super::*;
use crate::disks::MemDisks;

use crate::testhv::{Fake, fill_page, page_bytes};

const DOM: u16 = 3;
const RING_REF: u32 = 8;

struct Setup {
    xs: Xenstored,
    hv: Fake,
    disks: MemDisks,
    blk: Blkback,
    ring: Rc<Vec<AtomicU32>>,
}

fn spec(s: &str) -> DiskSpec {
    DiskSpec::parse(s).unwrap()
}

/// A vbd of 1000 sectors at sector 100 of a 2000-sector disk.
fn target() -> Target {
    Target {
        name: "vol".into(),
        disk: 0,
        start: 100,
        sectors: 1000,
        discard: true,
        readonly: false,
    }
}

fn fe(path: &str) -> String {
    format!("/local/domain/{DOM}/device/vbd/51712/{path}")
}

fn be(path: &str) -> String {
    format!("/local/domain/0/backend/vbd/{DOM}/51712/{path}")
}

fn read(xs: &mut Xenstored, path: &str) -> String {
    String::from_utf8(xs.read(path).unwrap_or_default()).unwrap()
}

/// Attaches xvda, and connects a one-page ring as blkfront would.
fn connected(order: Option<u32>) -> Setup {
    let mut s = Setup {
        xs: Xenstored::new(),
        hv: Fake::default(),
        disks: MemDisks::default(),
        blk: Blkback::new(),
        ring: Rc::new(Vec::new()),
    };
    s.disks.add("d", 2000, false);
    s.blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            DOM,
            &spec("target=vol, vdev=xvda"),
            target(),
        )
        .unwrap();
    assert_eq!(read(&mut s.xs, &be("state")), "2");
    assert_eq!(read(&mut s.xs, &be("feature-max-indirect-segments")), "256");
    let pages = 1usize << order.unwrap_or(0);
    s.ring = s.hv.grant(DOM, RING_REF, pages, false);
    BlkifFrontRing::init(&s.ring).unwrap();
    match order {
        None => {
            s.xs.write(&fe("ring-ref"), RING_REF.to_string().as_bytes())
                .unwrap()
        }
        Some(o) => {
            s.xs.write(&fe("ring-page-order"), o.to_string().as_bytes())
                .unwrap();
            for i in 0..pages {
                let r = RING_REF + i as u32;
                s.xs.write(&fe(&format!("ring-ref{i}")), r.to_string().as_bytes())
                    .unwrap();
            }
        }
    }
    s.xs.write(&fe("event-channel"), b"17").unwrap();
    s.xs.write(&fe("protocol"), b"x86_64-abi").unwrap();
    s.xs.write(&fe("state"), b"3").unwrap();
    s.poll();
    assert_eq!(
        read(&mut s.xs, &be("state")),
        "4",
        "{:?}",
        s.xs.read("/local/domain/0/error/backend/vbd/3/51712/error")
    );
    assert_eq!(read(&mut s.xs, &be("sectors")), "1000");
    assert_eq!(read(&mut s.xs, &be("feature-discard")), "1");
    s
}

impl Setup {
    fn poll(&mut self) -> bool {
        self.blk.poll(&mut self.xs, &mut self.hv, &mut self.disks)
    }

    /// Puts `reqs` on the ring, polls, and returns the responses.
    fn submit(&mut self, reqs: &[BlkifRequest]) -> Vec<BlkifResponse> {
        let ring = Rc::clone(&self.ring);
        let idx = ring[0].load(Ordering::Relaxed);
        let mut front = BlkifFrontRing::attach(&ring, idx).unwrap();
        for r in reqs {
            front.put_request(r).unwrap();
        }
        front.push_requests();
        while self.poll() {}
        let mut out = Vec::new();
        while let Some(r) = front.take_response().unwrap() {
            out.push(r);
        }
        out
    }

    fn disk(&self, sector: u64, len: usize) -> &[u8] {
        let at = usize::try_from(sector).unwrap() * 512;
        &self.disks.disks[0].1[at..at + len]
    }
}

fn seg(gref: u32, first: u8, last: u8) -> BlkifRequestSegment {
    BlkifRequestSegment {
        gref: GrantRef(gref),
        first_sect: first,
        last_sect: last,
        _pad: 0,
    }
}

fn rw(op: u8, id: u64, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
    let mut r = BlkifRequest {
        operation: op,
        nr_segments: segs.len() as u8,
        handle: 0,
        id,
        sector_number: sector,
        ..Default::default()
    };
    r.seg[..segs.len()].copy_from_slice(segs);
    r
}

fn pattern(seed: u8) -> Vec<u8> {
    (0..4096u32)
        .map(|i| (i as u8).wrapping_mul(7) ^ seed)
        .collect()
}

#[test]
fn writes_reach_the_disk_and_reads_come_back() {
    let mut s = connected(None);
    let data = s.hv.grant(DOM, 20, 2, false);
    fill_page(&data, 0, &pattern(1));
    fill_page(&data, 1, &pattern(2));
    let rsp = s.submit(&[rw(BLKIF_OP_WRITE, 41, 10, &[seg(20, 0, 7), seg(21, 4, 5)])]);
    assert_eq!(rsp.len(), 1);
    assert_eq!(
        (rsp[0].id, rsp[0].operation, rsp[0].status),
        (41, BLKIF_OP_WRITE, 0)
    );
    // Sector 10 of the vbd is sector 110 of the disk.
    assert_eq!(s.disk(110, 4096), &pattern(1)[..]);
    assert_eq!(s.disk(118, 1024), &pattern(2)[2048..3072]);
    assert!(s.disk(100, 512).iter().all(|b| *b == 0));
    // Read it back into other pages.
    let back = s.hv.grant(DOM, 30, 2, false);
    let rsp = s.submit(&[rw(BLKIF_OP_READ, 42, 10, &[seg(30, 0, 7), seg(31, 0, 1)])]);
    assert_eq!(rsp[0].status, 0);
    assert_eq!(page_bytes(&back, 0), pattern(1));
    assert_eq!(&page_bytes(&back, 1)[..1024], &pattern(2)[2048..3072]);
    let v = s.blk.vbds(Some(DOM)).next().unwrap();
    assert_eq!(
        (v.stats.wr_req, v.stats.rd_req, v.stats.wr_sect),
        (1, 1, 10)
    );
    assert!(!s.hv.notified.is_empty());
}

#[test]
fn bad_requests_fail_alone() {
    let mut s = connected(None);
    let data = s.hv.grant(DOM, 20, 1, false);
    fill_page(&data, 0, &pattern(9));
    let ro = s.hv.grant(DOM, 21, 1, true);
    let reqs = [
        rw(BLKIF_OP_WRITE, 1, 0, &[seg(20, 0, 7)]),
        rw(BLKIF_OP_WRITE, 2, 8, &[seg(99, 0, 7)]), // not granted
        rw(BLKIF_OP_WRITE, 3, 996, &[seg(20, 0, 7)]), // past the end
        rw(BLKIF_OP_READ, 4, 0, &[seg(21, 0, 7)]),  // into a read-only grant
        rw(9, 5, 0, &[seg(20, 0, 0)]),              // unknown operation
        rw(BLKIF_OP_WRITE, 6, 16, &[seg(20, 0, 7)]),
    ];
    let rsp = s.submit(&reqs);
    let got: Vec<(u64, i16)> = rsp.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        got,
        [
            (1, 0),
            (2, BLKIF_RSP_ERROR),
            (3, BLKIF_RSP_ERROR),
            (4, BLKIF_RSP_ERROR),
            (5, BLKIF_RSP_EOPNOTSUPP),
            (6, 0)
        ]
    );
    assert_eq!(s.disk(100, 4096), &pattern(9)[..]);
    assert!(
        s.disk(108, 4096).iter().all(|b| *b == 0),
        "the ungranted write left nothing"
    );
    assert_eq!(s.disk(116, 4096), &pattern(9)[..]);
    assert!(page_bytes(&ro, 0).iter().all(|b| *b == 0));
    assert_eq!(s.blk.errors, 4);
}

#[test]
fn flush_discard_and_indirect() {
    let mut s = connected(Some(2));
    let data = s.hv.grant(DOM, 40, 20, false);
    for p in 0..20 {
        fill_page(&data, p, &pattern(p as u8));
    }
    // An indirect write of 20 pages; its segment list in granted page 100.
    let list = s.hv.grant(DOM, 100, 1, false);
    let mut l = vec![0u8; 4096];
    for p in 0..20 {
        l[p * 8..p * 8 + 8].copy_from_slice(seg(40 + p as u32, 0, 7).as_bytes());
    }
    fill_page(&list, 0, &l);
    let mut ind = BlkifRequestIndirect {
        operation: BLKIF_OP_INDIRECT,
        indirect_op: BLKIF_OP_WRITE,
        nr_segments: 20,
        id: 7,
        sector_number: 800,
        ..Default::default()
    };
    ind.indirect_grefs[0] = GrantRef(100);
    let mut r = BlkifRequest::default();
    r.as_mut_bytes()[..64].copy_from_slice(ind.as_bytes());
    let flush = rw(BLKIF_OP_FLUSH_DISKCACHE, 8, 0, &[]);
    let disc = BlkifRequestDiscard {
        operation: BLKIF_OP_DISCARD,
        id: 9,
        sector_number: 800,
        nr_sectors: 8,
        ..Default::default()
    };
    let mut d = BlkifRequest::default();
    d.as_mut_bytes()[..32].copy_from_slice(disc.as_bytes());
    let rsp = s.submit(&[r, flush, d]);
    let got: Vec<(u64, u8, i16)> = rsp.iter().map(|r| (r.id, r.operation, r.status)).collect();
    assert_eq!(
        got,
        [
            (7, BLKIF_OP_WRITE, 0),
            (8, BLKIF_OP_FLUSH_DISKCACHE, 0),
            (9, BLKIF_OP_DISCARD, 0)
        ]
    );
    assert_eq!(s.disks.flushes, 1);
    assert!(s.disk(900, 4096).iter().all(|b| *b == 0), "discarded");
    for p in 1..20u64 {
        assert_eq!(s.disk(900 + p * 8, 4096), &pattern(p as u8)[..]);
    }
}

#[test]
fn close_reconnect_and_detach() {
    let mut s = connected(None);
    assert_eq!(s.hv.rings.len(), 1);
    s.xs.write(&fe("state"), b"5").unwrap();
    s.poll();
    assert_eq!(read(&mut s.xs, &be("state")), "5");
    assert!(s.hv.rings.is_empty() && s.hv.ports.is_empty());
    s.xs.write(&fe("state"), b"6").unwrap();
    s.poll();
    assert_eq!(read(&mut s.xs, &be("state")), "6");
    // The driver comes back.
    s.xs.write(&fe("state"), b"1").unwrap();
    s.poll();
    assert_eq!(read(&mut s.xs, &be("state")), "2");
    s.xs.write(&fe("state"), b"3").unwrap();
    s.poll();
    assert_eq!(read(&mut s.xs, &be("state")), "4");
    assert_eq!(s.hv.rings.len(), 1);
    let info = s.blk.list(&mut s.xs, DOM);
    assert_eq!(
        (info[0].evtchn, info[0].ring_ref, info[0].be_state),
        (17, 8, 4)
    );
    s.blk.detach_domain(&mut s.xs, &mut s.hv, DOM);
    assert!(s.hv.rings.is_empty() && s.hv.ports.is_empty());
    assert!(s.xs.read("/local/domain/0/backend/vbd/3").is_err());
    assert_eq!(s.blk.vbds(None).count(), 0);
}

#[test]
fn a_bad_front_end_is_fatal_for_its_vbd_only() {
    let mut s = connected(None);
    // A second domain whose front end names a grant that does not exist.
    s.blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            4,
            &spec("target=other, vdev=xvdb"),
            Target {
                name: "other".into(),
                ..target()
            },
        )
        .unwrap();
    let f = |p: &str| format!("/local/domain/4/device/vbd/51728/{p}");
    s.xs.write(&f("ring-ref"), b"555").unwrap();
    s.xs.write(&f("event-channel"), b"3").unwrap();
    s.xs.write(&f("state"), b"3").unwrap();
    s.poll();
    assert_eq!(
        read(&mut s.xs, "/local/domain/0/backend/vbd/4/51728/state"),
        "5"
    );
    let err = read(&mut s.xs, "/local/domain/0/error/backend/vbd/4/51728/error");
    assert!(err.contains("mapping the ring"), "{err}");
    // Domain 3 still works, and an impossible index halts only its ring.
    let data = s.hv.grant(DOM, 20, 1, false);
    fill_page(&data, 0, &pattern(3));
    assert_eq!(
        s.submit(&[rw(BLKIF_OP_WRITE, 1, 0, &[seg(20, 0, 7)])])[0].status,
        0
    );
    s.ring[0].fetch_add(1000, Ordering::Relaxed);
    s.poll();
    assert_eq!(read(&mut s.xs, &be("state")), "5");
    // Bad protocol and queue counts are refused too.
    s.blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            5,
            &spec("target=x5, vdev=xvda"),
            Target {
                name: "x5".into(),
                ..target()
            },
        )
        .unwrap();
    let g = |p: &str| format!("/local/domain/5/device/vbd/51712/{p}");
    s.xs.write(&g("protocol"), b"x86_32-abi").unwrap();
    s.xs.write(&g("state"), b"3").unwrap();
    s.poll();
    let err = read(&mut s.xs, "/local/domain/0/error/backend/vbd/5/51712/error");
    assert!(err.contains("unsupported protocol"), "{err}");
}

#[test]
fn sharing_rules() {
    let mut s = connected(None);
    let t = target();
    // xvda of domain 3 uses "vol" read-write: nobody else may use it.
    let e = s
        .blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            4,
            &spec("target=vol, vdev=xvda, access=ro"),
            t.clone(),
        )
        .unwrap_err();
    assert!(matches!(
        e,
        AttachError::InUse {
            domid: 3,
            writable: true,
            ..
        }
    ));
    let e = s
        .blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            DOM,
            &spec("target=x, vdev=xvda"),
            t.clone(),
        )
        .unwrap_err();
    assert_eq!(e, AttachError::Exists("xvda".into()));
    // Read-only users share.
    let ro = Target {
        name: "shared".into(),
        ..t
    };
    for d in [4, 5] {
        s.blk
            .attach(
                &mut s.xs,
                &mut s.hv,
                d,
                &spec("target=shared, vdev=xvda, access=ro"),
                ro.clone(),
            )
            .unwrap();
    }
    let e = s
        .blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            6,
            &spec("target=shared, vdev=xvda"),
            ro,
        )
        .unwrap_err();
    assert!(matches!(
        e,
        AttachError::InUse {
            writable: false,
            ..
        }
    ));
    assert_eq!(
        read(&mut s.xs, "/local/domain/0/backend/vbd/4/51712/mode"),
        "r"
    );
}

#[test]
fn nodes_match_xl() {
    let mut xs = Xenstored::new();
    crate::xenstore::apply(
        &mut xs,
        &entries(7, &spec("target=d, vdev=xvdb, access=ro"), false),
    )
    .unwrap();
    let fe = "/local/domain/7/device/vbd/51728";
    let be = "/local/domain/0/backend/vbd/7/51728";
    assert_eq!(read(&mut xs, &format!("{fe}/backend")), be);
    assert_eq!(read(&mut xs, &format!("{fe}/virtual-device")), "51728");
    assert_eq!(read(&mut xs, &format!("{be}/frontend")), fe);
    assert_eq!(read(&mut xs, &format!("{be}/mode")), "r");
    assert_eq!(read(&mut xs, &format!("{be}/dev")), "xvdb");
    assert_eq!(read(&mut xs, &format!("{be}/params")), "d");
    assert_eq!(read(&mut xs, "/libxl/7/device/vbd/51728/backend"), be);
    let perms = |xs: &mut Xenstored, p: &str| crate::agent::perms_string(&xs.get_perms(p).unwrap());
    assert_eq!(perms(&mut xs, fe), "n7,r0");
    assert_eq!(perms(&mut xs, &format!("{fe}/state")), "n7,r0");
    assert_eq!(perms(&mut xs, be), "n0,r7");
    assert_eq!(perms(&mut xs, &format!("{be}/mode")), "n0,r7");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A hostile front end: random slots on the ring. The back end answers
    /// every one, writes only inside the vbd, and only from pages granted.
    #[test]
    fn hostile_requests_stay_inside(slots in proptest::collection::vec(
        (0u8..8, 0u8..12, 0u64..1100, proptest::collection::vec((15u32..25, 0u8..9, 0u8..9), 0..12)),
        1..20)) {
        let mut s = connected(None);
        // Sentinels outside the vbd (sectors 0..100 and 1100..2000 of the disk).
        for b in s.disks.disks[0].1[..100 * 512].iter_mut() { *b = 0xAA; }
        for b in s.disks.disks[0].1[1100 * 512..].iter_mut() { *b = 0xBB; }
        let data = s.hv.grant(DOM, 20, 4, false);
        for p in 0..4 { fill_page(&data, p, &pattern(p as u8)); }
        let reqs: Vec<BlkifRequest> = slots.iter().enumerate().map(|(i, (op, n, sector, segs))| {
            let mut r = BlkifRequest { operation: *op, nr_segments: *n, id: i as u64, sector_number: *sector, ..Default::default() };
            for (k, (g, f, l)) in segs.iter().enumerate().take(11) {
                r.seg[k] = seg(*g, *f, *l);
            }
            r
        }).collect();
        let rsp = s.submit(&reqs);
        prop_assert_eq!(rsp.len(), reqs.len());
        for (k, r) in rsp.iter().enumerate() {
            prop_assert_eq!(r.id, k as u64);
        }
        prop_assert!(s.disks.disks[0].1[..100 * 512].iter().all(|b| *b == 0xAA));
        prop_assert!(s.disks.disks[0].1[1100 * 512..].iter().all(|b| *b == 0xBB));
        // Only grants 20..24 exist; a segment naming another never succeeded.
        for (r, (op, n, _, segs)) in rsp.iter().zip(&slots) {
            if r.status == 0 && (*op == BLKIF_OP_READ || *op == BLKIF_OP_WRITE) {
                let n = usize::from(*n);
                prop_assert!(n >= 1 && n <= segs.len());
                prop_assert!(segs[..n].iter().all(|(g, _, _)| (20..24).contains(g)));
            }
        }
    }
}

#[test]
fn hot_unplug_waits_for_the_front_end() {
    let mut s = connected(None);
    assert!(!s.blk.detach(&mut s.xs, &mut s.hv, DOM, 51728), "no xvdb");
    assert!(s.blk.detach(&mut s.xs, &mut s.hv, DOM, 51712));
    // Connected: the back end closes, the vbd stays until the front end has.
    assert_eq!(read(&mut s.xs, &be("state")), "5");
    assert_eq!(read(&mut s.xs, &be("online")), "0");
    assert!(s.hv.rings.is_empty() && s.hv.ports.is_empty());
    assert_eq!(s.blk.vbds(None).count(), 1);
    s.xs.write(&fe("state"), b"5").unwrap();
    s.poll();
    assert_eq!(s.blk.vbds(None).count(), 1);
    s.xs.write(&fe("state"), b"6").unwrap();
    s.poll();
    assert_eq!(s.blk.vbds(None).count(), 0);
    assert!(s.xs.read(&be("state")).is_err() && s.xs.read(&fe("state")).is_err());
    assert_eq!(s.blk.take_detached(), [(DOM, String::from("vol"))]);
    // A vbd whose front end never connected goes at once.
    s.blk
        .attach(
            &mut s.xs,
            &mut s.hv,
            DOM,
            &spec("target=vol, vdev=xvdb"),
            target(),
        )
        .unwrap();
    assert!(s.blk.detach(&mut s.xs, &mut s.hv, DOM, 51728));
    assert_eq!(s.blk.vbds(None).count(), 0);
}
