//! One blkif request, checked: what the front end asked for, turned into a
//! [`Plan`] the back end can run without looking at the ring again, or the
//! status to answer at once. Every field the front end wrote is untrusted;
//! the checks are those of Linux's xen-blkback (`dispatch_rw_block_io`,
//! `dispatch_discard_io`, `xen_vbd_translate`).

use alloc::vec::Vec;

use hypercall_abi::GrantRef;
use hypercall_abi::io::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BlkifRequest,
    BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment,
};
use zerocopy::{FromBytes, IntoBytes};

/// 512-byte sectors in a 4 KiB page.
pub const SECTORS_PER_PAGE: u8 = 8;
/// Segments in one indirect page (`PAGE_SIZE / sizeof(blkif_request_segment)`).
pub const SEGS_PER_INDIRECT_PAGE: usize = 512;

/// What a vbd offers and holds, as the checks need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Size in sectors.
    pub sectors: u64,
    /// `mode=r`: writes, flushes with data and discards are refused.
    pub readonly: bool,
    /// Whether discard is offered (`feature-discard`).
    pub discard: bool,
    /// The `feature-max-indirect-segments` offered (0: indirect refused).
    pub max_indirect: u32,
}

/// A data segment: sectors `first..=last` of a granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    /// The grant of the page.
    pub gref: GrantRef,
    /// First sector used in the page.
    pub first: u8,
    /// Last sector used, inclusive.
    pub last: u8,
}

impl Seg {
    /// Bytes of the segment.
    pub fn bytes(&self) -> usize {
        usize::from(self.last - self.first + 1) * 512
    }

    /// Byte offset in the page.
    pub fn offset(&self) -> u16 {
        u16::from(self.first) * 512
    }
}

/// Which way data moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Disk to guest.
    Read,
    /// Guest to disk.
    Write,
}

/// What to do for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Move `segs` (disk-contiguous from `sector`). `flush` first (a flush or
    /// barrier request; also after the writes before it finished).
    Rw {
        /// Read or write.
        dir: Dir,
        /// First sector in the vbd.
        sector: u64,
        /// The segments, in disk order.
        segs: Vec<Seg>,
        /// Flush before the data (`BLKIF_OP_FLUSH_DISKCACHE`, `WRITE_BARRIER`).
        flush: bool,
    },
    /// Discard `sectors` sectors from `sector`.
    Discard {
        /// First sector in the vbd.
        sector: u64,
        /// How many.
        sectors: u64,
    },
    /// An indirect request: the segment lists must first be fetched from
    /// `pages` (then [`indirect_segments`] finishes the check).
    Indirect {
        /// Read or write.
        dir: Dir,
        /// First sector in the vbd.
        sector: u64,
        /// Segments announced.
        nr_segments: usize,
        /// Grants of the pages that hold the segment lists.
        pages: Vec<GrantRef>,
    },
}

impl Plan {
    /// Data bytes the plan moves (0 for a discard, a bare flush or an indirect
    /// request not yet fetched).
    pub fn bytes(&self) -> usize {
        match self {
            Plan::Rw { segs, .. } => segs.iter().map(Seg::bytes).sum(),
            _ => 0,
        }
    }
}

/// A request taken off the ring: its id and the operation to echo in the
/// response, and what to do (or the status to answer without doing anything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The request's `id`.
    pub id: u64,
    /// The `operation` the response carries (an indirect request's real one).
    pub op: u8,
    /// The plan, or the `BLKIF_RSP_*` to answer at once.
    pub plan: Result<Plan, i16>,
}

/// Sectors from `sector` for `n` sectors inside a vbd of `size` sectors.
fn in_range(sector: u64, n: u64, size: u64) -> bool {
    sector.checked_add(n).is_some_and(|end| end <= size)
}

/// Checks the segments of a read or write and builds its plan.
fn rw_plan(
    dir: Dir,
    sector: u64,
    segs: &[BlkifRequestSegment],
    flush: bool,
    lim: &Limits,
) -> Result<Plan, i16> {
    if lim.readonly && (dir == Dir::Write || flush) {
        return Err(BLKIF_RSP_ERROR);
    }
    let mut out = Vec::with_capacity(segs.len());
    let mut sectors = 0u64;
    for s in segs {
        if s.last_sect < s.first_sect || s.last_sect >= SECTORS_PER_PAGE {
            return Err(BLKIF_RSP_ERROR);
        }
        sectors += u64::from(s.last_sect - s.first_sect) + 1;
        out.push(Seg {
            gref: s.gref,
            first: s.first_sect,
            last: s.last_sect,
        });
    }
    if !in_range(sector, sectors, lim.sectors) {
        return Err(BLKIF_RSP_ERROR);
    }
    Ok(Plan::Rw {
        dir,
        sector,
        segs: out,
        flush,
    })
}

/// Checks one request as the slot held it.
pub fn check(slot: &BlkifRequest, lim: &Limits) -> Checked {
    let bytes = slot.as_bytes();
    let op = slot.operation;
    let direct = |dir: Dir, flush: bool| {
        let n = usize::from(slot.nr_segments);
        // A read or write carries 1..=11 segments; a flush may carry none.
        if n > BLKIF_MAX_SEGMENTS_PER_REQUEST || (n == 0 && !flush) {
            return Err(BLKIF_RSP_ERROR);
        }
        rw_plan(dir, slot.sector_number, &slot.seg[..n], flush, lim)
    };
    match op {
        BLKIF_OP_READ => Checked {
            id: slot.id,
            op,
            plan: direct(Dir::Read, false),
        },
        BLKIF_OP_WRITE => Checked {
            id: slot.id,
            op,
            plan: direct(Dir::Write, false),
        },
        BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER => Checked {
            id: slot.id,
            op,
            plan: direct(Dir::Write, true),
        },
        BLKIF_OP_DISCARD => {
            let d = BlkifRequestDiscard::read_from_prefix(bytes)
                .map_or_else(|_| BlkifRequestDiscard::default(), |(d, _)| d);
            let plan = if !lim.discard || d.flag & BLKIF_DISCARD_SECURE != 0 {
                Err(BLKIF_RSP_EOPNOTSUPP)
            } else if lim.readonly || !in_range(d.sector_number, d.nr_sectors, lim.sectors) {
                Err(BLKIF_RSP_ERROR)
            } else {
                Ok(Plan::Discard {
                    sector: d.sector_number,
                    sectors: d.nr_sectors,
                })
            };
            Checked { id: d.id, op, plan }
        }
        BLKIF_OP_INDIRECT => {
            let r = BlkifRequestIndirect::read_from_prefix(bytes)
                .map_or_else(|_| BlkifRequestIndirect::default(), |(r, _)| r);
            let dir = match r.indirect_op {
                BLKIF_OP_READ => Some(Dir::Read),
                BLKIF_OP_WRITE => Some(Dir::Write),
                _ => None,
            };
            let n = usize::from(r.nr_segments);
            let pages = n.div_ceil(SEGS_PER_INDIRECT_PAGE);
            let plan = match dir {
                _ if lim.max_indirect == 0 => Err(BLKIF_RSP_EOPNOTSUPP),
                None => Err(BLKIF_RSP_ERROR),
                Some(_) if n == 0 || n > lim.max_indirect as usize => Err(BLKIF_RSP_ERROR),
                Some(_) if pages > BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST => Err(BLKIF_RSP_ERROR),
                Some(Dir::Write) if lim.readonly => Err(BLKIF_RSP_ERROR),
                Some(dir) => Ok(Plan::Indirect {
                    dir,
                    sector: r.sector_number,
                    nr_segments: n,
                    pages: r.indirect_grefs[..pages].to_vec(),
                }),
            };
            Checked {
                id: r.id,
                // The response carries the real operation (Linux answers an
                // indirect request with its `indirect_op`).
                op: if dir.is_some() { r.indirect_op } else { op },
                plan,
            }
        }
        // Anything else, `BLKIF_OP_RESERVED_1` included, is not supported.
        _ => Checked {
            id: slot.id,
            op,
            plan: Err(BLKIF_RSP_EOPNOTSUPP),
        },
    }
}

/// Finishes an indirect request once its segment pages are fetched (`lists`
/// holds them back to back): checks the `nr_segments` segments as a direct
/// request's.
pub fn indirect_segments(
    dir: Dir,
    sector: u64,
    nr_segments: usize,
    lists: &[u8],
    lim: &Limits,
) -> Result<Plan, i16> {
    let segs = <[BlkifRequestSegment]>::ref_from_prefix_with_elems(lists, nr_segments)
        .map_err(|_| BLKIF_RSP_ERROR)?
        .0;
    rw_plan(dir, sector, segs, false, lim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    const LIM: Limits = Limits {
        sectors: 1000,
        readonly: false,
        discard: true,
        max_indirect: 256,
    };

    fn seg(gref: u32, first: u8, last: u8) -> BlkifRequestSegment {
        BlkifRequestSegment {
            gref: GrantRef(gref),
            first_sect: first,
            last_sect: last,
            _pad: 0,
        }
    }

    fn rw(op: u8, sector: u64, segs: &[BlkifRequestSegment]) -> BlkifRequest {
        let mut r = BlkifRequest {
            operation: op,
            nr_segments: u8::try_from(segs.len()).unwrap(),
            id: 77,
            sector_number: sector,
            ..Default::default()
        };
        r.seg[..segs.len()].copy_from_slice(segs);
        r
    }

    #[test]
    fn reads_and_writes() {
        let c = check(&rw(BLKIF_OP_READ, 10, &[seg(5, 0, 7), seg(6, 2, 3)]), &LIM);
        assert_eq!((c.id, c.op), (77, BLKIF_OP_READ));
        let p = c.plan.unwrap();
        assert_eq!(p.bytes(), 4096 + 1024);
        assert!(matches!(
            p,
            Plan::Rw {
                dir: Dir::Read,
                sector: 10,
                flush: false,
                ..
            }
        ));
        // Exactly to the end of the vbd, and one past it.
        assert!(
            check(&rw(BLKIF_OP_WRITE, 992, &[seg(1, 0, 7)]), &LIM)
                .plan
                .is_ok()
        );
        assert_eq!(
            check(&rw(BLKIF_OP_WRITE, 993, &[seg(1, 0, 7)]), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            check(&rw(BLKIF_OP_WRITE, u64::MAX, &[seg(1, 0, 0)]), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        // Bad segments.
        for s in [seg(1, 3, 2), seg(1, 0, 8), seg(1, 8, 8)] {
            assert_eq!(
                check(&rw(BLKIF_OP_READ, 0, &[s]), &LIM).plan,
                Err(BLKIF_RSP_ERROR)
            );
        }
        // No segments, too many.
        assert_eq!(
            check(&rw(BLKIF_OP_READ, 0, &[]), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        let mut r = rw(BLKIF_OP_READ, 0, &[seg(1, 0, 0)]);
        r.nr_segments = 12;
        assert_eq!(check(&r, &LIM).plan, Err(BLKIF_RSP_ERROR));
        // Read-only.
        let ro = Limits {
            readonly: true,
            ..LIM
        };
        assert!(
            check(&rw(BLKIF_OP_READ, 0, &[seg(1, 0, 0)]), &ro)
                .plan
                .is_ok()
        );
        assert_eq!(
            check(&rw(BLKIF_OP_WRITE, 0, &[seg(1, 0, 0)]), &ro).plan,
            Err(BLKIF_RSP_ERROR)
        );
    }

    #[test]
    fn flushes_barriers_and_unknown_ops() {
        let p = check(&rw(BLKIF_OP_FLUSH_DISKCACHE, 0, &[]), &LIM)
            .plan
            .unwrap();
        assert!(matches!(p, Plan::Rw { flush: true, ref segs, .. } if segs.is_empty()));
        let p = check(&rw(BLKIF_OP_WRITE_BARRIER, 4, &[seg(2, 0, 7)]), &LIM)
            .plan
            .unwrap();
        assert!(matches!(
            p,
            Plan::Rw {
                dir: Dir::Write,
                flush: true,
                sector: 4,
                ..
            }
        ));
        for op in [4u8, 7, 200] {
            let c = check(&rw(op, 0, &[seg(1, 0, 0)]), &LIM);
            assert_eq!((c.op, c.plan), (op, Err(BLKIF_RSP_EOPNOTSUPP)));
        }
    }

    fn discard(sector: u64, n: u64, flag: u8) -> BlkifRequest {
        let d = BlkifRequestDiscard {
            operation: BLKIF_OP_DISCARD,
            flag,
            id: 9,
            sector_number: sector,
            nr_sectors: n,
            ..Default::default()
        };
        let mut r = BlkifRequest::default();
        r.as_mut_bytes()[..32].copy_from_slice(d.as_bytes());
        r
    }

    #[test]
    fn discards() {
        let c = check(&discard(100, 900, 0), &LIM);
        assert_eq!(c.id, 9);
        assert_eq!(
            c.plan,
            Ok(Plan::Discard {
                sector: 100,
                sectors: 900
            })
        );
        assert_eq!(
            check(&discard(100, 901, 0), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            check(&discard(0, 1, BLKIF_DISCARD_SECURE), &LIM).plan,
            Err(BLKIF_RSP_EOPNOTSUPP)
        );
        let nod = Limits {
            discard: false,
            ..LIM
        };
        assert_eq!(
            check(&discard(0, 1, 0), &nod).plan,
            Err(BLKIF_RSP_EOPNOTSUPP)
        );
    }

    fn indirect(op: u8, n: u16, sector: u64) -> BlkifRequest {
        let mut i = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: op,
            nr_segments: n,
            id: 5,
            sector_number: sector,
            ..Default::default()
        };
        i.indirect_grefs = [11, 12, 13, 14, 15, 16, 17, 18].map(GrantRef);
        let mut r = BlkifRequest::default();
        r.as_mut_bytes()[..64].copy_from_slice(i.as_bytes());
        r
    }

    #[test]
    fn indirect_requests() {
        let c = check(&indirect(BLKIF_OP_WRITE, 256, 0), &LIM);
        assert_eq!((c.id, c.op), (5, BLKIF_OP_WRITE));
        assert_eq!(
            c.plan,
            Ok(Plan::Indirect {
                dir: Dir::Write,
                sector: 0,
                nr_segments: 256,
                pages: vec![GrantRef(11)]
            })
        );
        assert_eq!(
            check(&indirect(BLKIF_OP_READ, 257, 0), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        assert_eq!(
            check(&indirect(BLKIF_OP_READ, 0, 0), &LIM).plan,
            Err(BLKIF_RSP_ERROR)
        );
        let c = check(&indirect(BLKIF_OP_DISCARD, 4, 0), &LIM);
        assert_eq!((c.op, c.plan), (BLKIF_OP_INDIRECT, Err(BLKIF_RSP_ERROR)));
        let none = Limits {
            max_indirect: 0,
            ..LIM
        };
        assert_eq!(
            check(&indirect(BLKIF_OP_READ, 4, 0), &none).plan,
            Err(BLKIF_RSP_EOPNOTSUPP)
        );
        // The fetched lists: two segments, one past the end of the vbd.
        let mut lists = vec![0u8; 4096];
        lists[..8].copy_from_slice(seg(3, 0, 7).as_bytes());
        lists[8..16].copy_from_slice(seg(4, 0, 3).as_bytes());
        let p = indirect_segments(Dir::Read, 0, 2, &lists, &LIM).unwrap();
        assert_eq!(p.bytes(), 4096 + 2048);
        assert!(indirect_segments(Dir::Read, 989, 2, &lists, &LIM).is_err());
        assert!(indirect_segments(Dir::Read, 0, 513, &lists, &LIM).is_err());
        lists[8..16].copy_from_slice(seg(4, 5, 3).as_bytes());
        assert!(indirect_segments(Dir::Read, 0, 2, &lists, &LIM).is_err());
    }

    proptest! {
        /// Whatever bytes a hostile front end puts in a slot, an accepted plan
        /// stays inside the vbd, inside each page, and never writes a
        /// read-only vbd.
        #[test]
        fn plans_stay_inside(bytes in proptest::collection::vec(any::<u8>(), 112),
                             readonly in any::<bool>(), size in 0u64..5000) {
            let slot = BlkifRequest::read_from_bytes(&bytes).unwrap();
            let lim = Limits { sectors: size, readonly, discard: true, max_indirect: 256 };
            let c = check(&slot, &lim);
            match c.plan {
                Ok(Plan::Rw { dir, sector, segs, flush }) => {
                    let n: u64 = segs.iter().map(|s| s.bytes() as u64 / 512).sum();
                    prop_assert!(sector + n <= size);
                    prop_assert!(!readonly || (dir == Dir::Read && !flush));
                    for s in segs {
                        prop_assert!(s.first <= s.last && s.last < 8);
                    }
                }
                Ok(Plan::Discard { sector, sectors }) => {
                    prop_assert!(!readonly && sector + sectors <= size);
                }
                Ok(Plan::Indirect { nr_segments, pages, dir, .. }) => {
                    prop_assert!((1..=256).contains(&nr_segments) && pages.len() == 1);
                    prop_assert!(!readonly || dir == Dir::Read);
                }
                Err(s) => prop_assert!(s == BLKIF_RSP_ERROR || s == BLKIF_RSP_EOPNOTSUPP),
            }
        }
    }
}
