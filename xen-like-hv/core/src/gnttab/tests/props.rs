//! Random grant, map, unmap, copy, version and teardown sequences between three
//! domains. After every step no present L1 entry of any domain reaches a frame it
//! neither owns nor has pinned through a grant, and no page-table frame is mapped
//! writable; after everything is destroyed every frame is back and unreferenced.

use proptest::prelude::*;

use super::*;
use crate::mm::frame_table::PageType;

#[derive(Clone, Debug)]
enum Target {
    /// Own data frame `i`.
    Data(usize),
    /// Own L1 (a page table).
    L1,
    /// Own first grant-table frame.
    GrantFrame,
    /// Another domain's data frame 0 (not the granter's to grant).
    Foreign(u16),
}

#[derive(Clone, Debug)]
enum Op {
    Grant {
        d: u16,
        r: u32,
        to: u16,
        what: Target,
        ro: bool,
    },
    Retarget {
        d: u16,
        r: u32,
        flags: u16,
    },
    EndAccess {
        d: u16,
        r: u32,
    },
    Map {
        /// Use a grant made earlier (its grantee maps it), else the fields.
        pick: Option<usize>,
        d: u16,
        rd: u16,
        r: u32,
        flags: u32,
        slot: u64,
    },
    Unmap {
        pick: usize,
        forge: Option<u32>,
        addr: u8,
        dev: bool,
    },
    Copy {
        /// Copy as the grantee of a grant made earlier, through it on one side.
        pick: Option<(usize, bool)>,
        d: u16,
        src: Option<(u16, u32)>,
        dst: Option<(u16, u32)>,
        so: u16,
        dso: u16,
        len: u16,
    },
    SetVersion {
        d: u16,
        v: u32,
    },
    PinL1 {
        d: u16,
        i: usize,
    },
    Unpin {
        d: u16,
        i: usize,
    },
    ClearPte {
        d: u16,
        slot: u64,
    },
    Destroy {
        d: u16,
    },
}

fn dom() -> impl Strategy<Value = u16> {
    1u16..4
}

fn gref() -> impl Strategy<Value = u32> {
    prop_oneof![8 => 8u32..14, 1 => 0u32..8, 1 => Just(600u32)]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![
        8 => (0usize..3).prop_map(Target::Data),
        1 => Just(Target::L1),
        1 => Just(Target::GrantFrame),
        1 => dom().prop_map(Target::Foreign),
    ]
}

fn map_flags() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![
        HOST,
        HOST | MRO,
        DEV,
        DEV | MRO,
        HOST | DEV,
        HOST | PTE,
        HOST | MRO | APP,
        0,
    ])
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (dom(), gref(), dom(), target(), any::<bool>())
            .prop_map(|(d, r, to, what, ro)| Op::Grant { d, r, to, what, ro }),
        1 => (dom(), gref(), prop::sample::select(vec![0u16, PERMIT, PERMIT | RO, 2, 3]))
            .prop_map(|(d, r, flags)| Op::Retarget { d, r, flags }),
        2 => (dom(), gref()).prop_map(|(d, r)| Op::EndAccess { d, r }),
        12 => (prop::option::weighted(0.8, any::<usize>()), dom(), dom(), gref(), map_flags(), 1u64..6)
            .prop_map(|(pick, d, rd, r, flags, slot)| Op::Map { pick, d, rd, r, flags, slot }),
        5 => (any::<usize>(), prop::option::weighted(0.1, 0u32..4), 0u8..4, any::<bool>())
            .prop_map(|(pick, forge, addr, dev)| Op::Unmap { pick, forge, addr, dev }),
        6 => (
            prop::option::weighted(0.7, (any::<usize>(), any::<bool>())),
            dom(),
            prop::option::weighted(0.7, (dom(), gref())),
            prop::option::weighted(0.7, (dom(), gref())),
            prop::sample::select(vec![0u16, 8, 4000, 4095]),
            prop::sample::select(vec![0u16, 16, 4090]),
            prop::sample::select(vec![0u16, 1, 6, 96, 4096]),
        )
            .prop_map(|(pick, d, src, dst, so, dso, len)| Op::Copy { pick, d, src, dst, so, dso, len }),
        1 => (dom(), 1u32..3).prop_map(|(d, v)| Op::SetVersion { d, v }),
        1 => (dom(), 0usize..3).prop_map(|(d, i)| Op::PinL1 { d, i }),
        1 => (dom(), 0usize..3).prop_map(|(d, i)| Op::Unpin { d, i }),
        1 => (dom(), 1u64..6).prop_map(|(d, slot)| Op::ClearPte { d, slot }),
        1 => dom().prop_map(|d| Op::Destroy { d }),
    ]
}

/// A mapping made: (mapper, handle, slot, flags, frame).
type Made = (u16, u32, u64, u32, Mfn);

/// What the test has seen so far: mappings made, grants written (granter, ref,
/// grantee).
#[derive(Default)]
struct Seen {
    made: Vec<Made>,
    grants: Vec<(u16, u32, u16)>,
}

fn apply(s: &mut Sys, seen: &mut Seen, op: &Op) {
    let Seen { made, grants } = seen;
    let alive = |s: &Sys, d: u16| s.doms.contains_key(&d);
    match *op {
        Op::Grant {
            d,
            r,
            to,
            ref what,
            ro,
        } => {
            if !alive(s, d) || r >= s.table(d).nr_entries() {
                return;
            }
            let frame = match *what {
                Target::Data(i) => s.data(d, i),
                Target::L1 => s.dom(d).l1,
                Target::GrantFrame => s.table(d).guest_frames().next().unwrap(),
                Target::Foreign(o) => match s.doms.get(&o) {
                    Some(x) => x.data[0],
                    None => return,
                },
            };
            // The guest only rewrites an entry the hypervisor does not use.
            if s.busy_flags(d, r) == 0 {
                s.grant(d, r, to, frame, if ro { PERMIT | RO } else { PERMIT });
                grants.push((d, r, to));
            }
        }
        Op::Retarget { d, r, flags } => {
            // A hostile granter rewrites the flags of an entry, in use or not
            // (keeping the hypervisor's bits in v1).
            if !alive(s, d) || r >= s.table(d).nr_entries() {
                return;
            }
            let keep = if s.table(d).version() == 1 {
                s.flags(d, r) & (READING | WRITING)
            } else {
                0
            };
            s.set_flags(d, r, flags | keep);
        }
        Op::EndAccess { d, r } => {
            if alive(s, d) && r < s.table(d).nr_entries() {
                s.end_access(d, r);
            }
        }
        Op::Map {
            pick,
            d,
            rd,
            r,
            flags,
            slot,
        } => {
            let (d, rd, r) = match pick {
                Some(p) if !grants.is_empty() => {
                    let (g, gr, to) = grants[p % grants.len()];
                    (to, g, gr)
                }
                _ => (d, rd, r),
            };
            if !alive(s, d) {
                return;
            }
            let addr = if flags & PTE != 0 {
                s.l1e_ma(d, slot as usize)
            } else {
                va(slot)
            };
            let m = s.map(d, rd, r, flags, addr);
            if m.status == GntSt::Okay {
                made.push((d, m.handle, slot, flags, Mfn(m.dev_bus_addr >> 12)));
            }
        }
        Op::Unmap {
            pick,
            forge,
            addr,
            dev,
        } => {
            if made.is_empty() {
                return;
            }
            let i = pick % made.len();
            let (d, h, slot, flags, frame) = made[i];
            if !alive(s, d) {
                made.remove(i);
                return;
            }
            let handle = forge.unwrap_or(h);
            let host = match addr {
                0 => 0,
                1 => va(slot + 1),
                _ if flags & PTE != 0 => s.l1e_ma(d, slot as usize),
                _ => va(slot),
            };
            let bus = if dev { frame.0 << 12 } else { 0 };
            s.unmap(d, handle, host, bus);
        }
        Op::Copy {
            pick,
            d,
            src,
            dst,
            so,
            dso,
            len,
        } => {
            let (d, src, dst) = match pick {
                Some((p, into)) if !grants.is_empty() => {
                    let (g, gr, to) = grants[p % grants.len()];
                    if into {
                        (to, src, Some((g, gr)))
                    } else {
                        (to, Some((g, gr)), dst)
                    }
                }
                _ => (d, src, dst),
            };
            if !alive(s, d) {
                return;
            }
            let end = |s: &Sys, e: Option<(u16, u32)>, off: u16, i: usize| match e {
                Some((rd, r)) => CopyEnd::gref(rd, r, off),
                None => CopyEnd::frame(s.data(d, i), off),
            };
            let a = end(s, src, so, 0);
            let b = end(s, dst, dso, 1);
            s.copy(d, a, b, len);
        }
        Op::SetVersion { d, v } => {
            if alive(s, d) {
                let _ = s.gnt(d, |g| g.set_version(v));
            }
        }
        Op::PinL1 { d, i } => {
            if alive(s, d) {
                let f = s.data(d, i);
                let _ = s.ext(d, MmuextCmd::PinL1Table, f);
            }
        }
        Op::Unpin { d, i } => {
            if alive(s, d) {
                let f = s.data(d, i);
                let _ = s.ext(d, MmuextCmd::UnpinTable, f);
            }
        }
        Op::ClearPte { d, slot } => {
            if alive(s, d) {
                let l1 = s.dom(d).l1;
                let _ = s.mmu(d, l1, slot as usize, 0);
            }
        }
        Op::Destroy { d } => {
            if alive(s, d) {
                s.destroy(d);
                made.retain(|m| m.0 != d);
            }
        }
    }
}

/// What may a present L1 entry of `d` map: its own frames, or a frame that some
/// table has pinned for `d`.
fn reachable(s: &Sys, d: u16, f: Mfn) -> bool {
    if matches!(s.ft.owner(f), Some(Owner::Domain(o) | Owner::XenShared(o)) if o.0 == d) {
        return true;
    }
    s.tables.0.values().any(|t| {
        (0..t.nr_entries()).any(|r| {
            let a = t.act(&s.mem, GrantRef(r));
            a.pin != 0 && a.domid == DomId(d) && a.mfn == f
        })
    })
}

fn check(s: &Sys) -> Result<(), TestCaseError> {
    for (m, fi) in s.ft.frames().iter().enumerate() {
        if fi.page_type() != PageType::L1 || fi.type_count() == 0 || !fi.validated() {
            continue;
        }
        let Owner::Domain(d) = fi.owner() else {
            continue;
        };
        for i in 0..512 {
            let e = s.mem.read_entry(Mfn(m as u64), i);
            if e & P == 0 {
                continue;
            }
            let f = Mfn((e >> 12) & 0xF_FFFF_FFFF);
            let target = s.info(f);
            prop_assert_ne!(
                target.owner(),
                Owner::Free,
                "L1 {:#x}[{}] maps a free frame",
                m,
                i
            );
            prop_assert!(
                reachable(s, d.0, f),
                "d{} reaches {} it was not granted (L1 {:#x}[{}])",
                d.0,
                f,
                m,
                i
            );
            if e & RW != 0 {
                prop_assert!(
                    !target.page_type().is_page_table() || target.type_count() == 0,
                    "page table {} mapped writable",
                    f
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_grant_traffic_never_leaks_or_exposes_a_frame(
        ops in prop::collection::vec(op(), 1..48),
        order in prop::sample::select(vec![[1u16, 2, 3], [3, 2, 1], [2, 1, 3]]),
    ) {
        let mut s = Sys::with(&[1, 2, 3]);
        let mut seen = Seen::default();
        for op in &ops {
            apply(&mut s, &mut seen, op);
            check(&s)?;
        }
        for d in order {
            if s.doms.contains_key(&d) {
                s.destroy(d);
                check(&s)?;
            }
        }
        s.assert_all_free();
    }
}
