//! Property test: random (often hostile) sequences of memory operations from two
//! domains, checked after every step against an oracle that recomputes every
//! reference count from the page tables, pins, roots and held references.

use std::collections::BTreeSet;
use std::vec;
use std::vec::Vec;

use hypercall_abi::DomId;
use hypercall_abi::mmu::{MmuextCmd, MmuextOp, foreigndom};
use proptest::prelude::*;

use super::*;
use crate::mm::mmu::relinquish_domain;
use crate::mm::page_type::{get_page_and_type, put_page_and_type};

#[derive(Clone, Debug)]
enum Op {
    Pin {
        dom: u16,
        level: u8,
        frame: u64,
    },
    Unpin {
        dom: u16,
        frame: u64,
    },
    Mmu {
        dom: u16,
        fdom: u32,
        cmd: u64,
        table: u64,
        idx: usize,
        val: u64,
    },
    Uvm {
        dom: u16,
        vcpu: usize,
        va: u64,
        val: u64,
        flags: u64,
    },
    Base {
        dom: u16,
        vcpu: usize,
        user: bool,
        frame: u64,
    },
    Hold {
        dom: u16,
        frame: u64,
        ty: PageType,
    },
    Drop {
        pick: usize,
    },
    Clear {
        dom: u16,
        frame: u64,
    },
}

fn frame() -> impl Strategy<Value = u64> {
    prop_oneof![
        10 => (0u64..8).prop_map(|i| DOM1_BASE + i),
        10 => (0u64..8).prop_map(|i| DOM0_BASE + i),
        3 => 0..N,
        1 => Just(FAR_IO),
        1 => Just(1u64 << 38),
    ]
}

fn index() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![0usize, 1, 2, 255, 256, 271, 272, 511])
}

fn entry() -> impl Strategy<Value = u64> {
    let bits = P | RW | U | PWT | PCD | A | D | PSE | G | (1 << 9) | GK | GNT | NX;
    prop_oneof![
        12 => (prop::bool::weighted(0.85), frame(), any::<u64>()).prop_map(move |(p, f, r)| {
            // Mostly tame flags, sometimes anything.
            let fl = if r % 4 == 0 { r & bits } else { r & (RW | U | A | D) };
            pte(f, fl | if p { P } else { 0 })
        }),
        1 => any::<u64>(),
        1 => Just(0u64),
    ]
}

fn fdom() -> impl Strategy<Value = u32> {
    prop_oneof![
        10 => Just(fd(DomId::SELF)),
        1 => Just(fd(DomId(0))),
        1 => Just(fd(DomId(1))),
        1 => Just(fd(DomId::IO)),
        1 => Just(fd(DomId::XEN)),
        1 => Just(fd(DomId(5))),
        1 => Just(foreigndom(DomId::SELF, Some(DomId(1)))),
        1 => Just(foreigndom(DomId::SELF, Some(DomId(0)))),
        1 => Just(foreigndom(DomId(1), Some(DomId(1)))),
        1 => Just(foreigndom(DomId(0), Some(DomId(0)))),
    ]
}

fn vaddr() -> impl Strategy<Value = u64> {
    let s = |v: Vec<u64>| prop::sample::select(v);
    prop_oneof![
        4 => s(vec![0u64, 1, 2, 511]).prop_map(|l1| va(0, 0, 0, l1)),
        8 => (s(vec![0, 1, 300, 511]), s(vec![0, 1, 511]), s(vec![0, 1, 511]), s(vec![0, 1, 2, 511]))
            .prop_map(|(a, b, c, d)| va(a, b, c, d)),
        1 => s(vec![1 << 63, 1 << 47, 0xffff_8000_0000_0000, 0xffff_8400_0000_0000, u64::MAX]),
        1 => any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let dom = 0u16..2;
    prop_oneof![
        4 => (dom.clone(), 1u8..5, frame()).prop_map(|(dom, level, frame)| Op::Pin { dom, level, frame }),
        2 => (dom.clone(), frame()).prop_map(|(dom, frame)| Op::Unpin { dom, frame }),
        12 => (
            dom.clone(),
            fdom(),
            prop_oneof![8 => Just(0u64), 2 => Just(2u64), 1 => Just(1u64), 1 => Just(3u64), 1 => 4u64..8],
            frame(),
            index(),
            entry()
        )
            .prop_map(|(dom, fdom, cmd, table, idx, val)| Op::Mmu { dom, fdom, cmd, table, idx, val }),
        // Entries between the pinned tables of one domain: linear-table attempts.
        4 => (
            dom.clone(),
            prop::sample::select(vec![0u64, 4, 6, 2, 5]),
            prop::sample::select(vec![0u64, 4, 6, 2, 5, 1, 3]),
            index(),
            any::<bool>()
        )
            .prop_map(|(dom, a, b, idx, rw)| {
                let base = if dom == 0 { DOM0_BASE } else { DOM1_BASE };
                let val = pte(base + b, P | A | if rw { RW } else { 0 });
                Op::Mmu { dom, fdom: fd(DomId::SELF), cmd: 0, table: base + a, idx, val }
            }),
        4 => (
            dom.clone(),
            0usize..2,
            vaddr(),
            entry(),
            prop::sample::select(vec![0u64, 1, 2, 3, 5, 6, 0x1002])
        )
            .prop_map(|(dom, vcpu, va, val, flags)| Op::Uvm { dom, vcpu, va, val, flags }),
        3 => (dom.clone(), 0usize..2, any::<bool>(), prop_oneof![4 => frame(), 1 => Just(0u64)])
            .prop_map(|(dom, vcpu, user, frame)| Op::Base { dom, vcpu, user, frame }),
        2 => (
            dom.clone(),
            frame(),
            prop::sample::select(vec![
                PageType::Writable,
                PageType::L1,
                PageType::L2,
                PageType::L3,
                PageType::L4,
                PageType::SegDesc,
            ])
        )
            .prop_map(|(dom, frame, ty)| Op::Hold { dom, frame, ty }),
        2 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
        1 => (dom, frame()).prop_map(|(dom, frame)| Op::Clear { dom, frame }),
    ]
}

/// L1 entries (table, index, frame) that map another domain's frame.
type Cross = BTreeSet<(u64, usize, u64)>;

struct Model {
    w: World,
    vcpus: [[VcpuMm; 2]; 2],
    held: Vec<Mfn>,
    cross: Cross,
}

impl Model {
    fn dom0_pages(&self) -> Vec<[u64; 512]> {
        self.w.mem.pages[DOM0_BASE as usize..DOM1_BASE as usize].to_vec()
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let before = self.w.counts();
        let vcpus_before = self.vcpus;
        let issuer = match *op {
            Op::Pin { dom, .. }
            | Op::Unpin { dom, .. }
            | Op::Mmu { dom, .. }
            | Op::Uvm { dom, .. }
            | Op::Base { dom, .. }
            | Op::Hold { dom, .. }
            | Op::Clear { dom, .. } => Some(dom),
            Op::Drop { .. } => None,
        };
        let dom0_pages = if issuer == Some(1) {
            self.dom0_pages()
        } else {
            Vec::new()
        };
        let r: Result<(), MmError> = match *op {
            Op::Pin { dom, level, frame } => self.w.pin(dom, level, frame).map(drop),
            Op::Unpin { dom, frame } => self.w.unpin(dom, frame).map(drop),
            Op::Mmu {
                dom,
                fdom,
                cmd,
                table,
                idx,
                val,
            } => self.w.mmu_cmd(dom, fdom, cmd, table, idx, val).map(drop),
            Op::Uvm {
                dom,
                vcpu,
                va,
                val,
                flags,
            } => {
                let root = self.vcpus[usize::from(dom)][vcpu]
                    .kernel_root
                    .map_or(DOM1_BASE, |m| m.0);
                self.w.uvm(dom, root, va, val, flags).map(drop)
            }
            Op::Base {
                dom,
                vcpu,
                user,
                frame,
            } => {
                let cmd = if user {
                    MmuextCmd::NewUserBaseptr
                } else {
                    MmuextCmd::NewBaseptr
                };
                let v = &mut self.vcpus[usize::from(dom)][vcpu];
                self.w
                    .ext(dom, v, MmuextOp::on_frame(cmd, Mfn(frame)))
                    .map(drop)
            }
            Op::Hold { dom, frame, ty } => {
                let mut c = self.w.ctx(dom);
                let r = get_page_and_type(&mut c, Mfn(frame), DomId(dom), ty);
                if r.is_ok() {
                    self.held.push(Mfn(frame));
                }
                r
            }
            Op::Drop { pick } => {
                if !self.held.is_empty() {
                    let m = self.held.swap_remove(pick % self.held.len());
                    let mut c = self.w.ctx(0);
                    put_page_and_type(&mut c, m);
                }
                Ok(())
            }
            Op::Clear { dom, frame } => {
                let mut v = VcpuMm::default();
                let op = MmuextOp::on_frame(MmuextCmd::ClearPage, Mfn(frame));
                self.w.ext(dom, &mut v, op).map(drop)
            }
        };
        if r.is_err() {
            // Decode, then apply: a refusal changed no count, pin, validation or root.
            prop_assert_eq!(&self.w.counts(), &before, "{:?} -> {:?}", op, r);
            prop_assert_eq!(self.vcpus, vcpus_before);
        }
        let cross = check(&self.w, &self.vcpus, &self.held)?;
        if issuer == Some(1) {
            // Nor does it touch the privileged domain: no entry of its frames changes,
            // and no reference on them appears (it may drop one dom0 gave it).
            prop_assert!(
                self.dom0_pages() == dom0_pages,
                "{:?} changed dom0 memory",
                op
            );
            let now = self.w.counts();
            for t in DOM0_BASE as usize..DOM1_BASE as usize {
                let (b, a) = (before[t], now[t]);
                prop_assert!(
                    a.0 <= b.0 && a.1 <= b.1 && a.2 == b.2,
                    "{:?}: frame {}",
                    op,
                    t
                );
            }
            // The unprivileged domain never gains a mapping of another domain's frame
            // (only the privileged one, naming FD/PFD, can create those).
            prop_assert!(
                cross.is_subset(&self.cross),
                "{:?} created {:?}",
                op,
                cross.difference(&self.cross).collect::<Vec<_>>()
            );
        }
        self.cross = cross;
        Ok(())
    }
}

/// Recompute every count from scratch and check the safety properties. Returns the
/// cross-domain L1 mappings.
fn check(w: &World, vcpus: &[[VcpuMm; 2]; 2], held: &[Mfn]) -> Result<Cross, TestCaseError> {
    let n = N as usize;
    let mut cross = Cross::new();
    let mut general = vec![0u64; n];
    let mut typ = vec![0u64; n];
    let mut lin_entries = vec![0i64; n];
    let mut lin_uses = vec![0i64; n];
    for t in 0..N {
        let fi = w.info(t);
        if fi.type_count() > 0 {
            prop_assert!(fi.page_type() != PageType::None);
            if fi.page_type().is_page_table() || fi.page_type() == PageType::SegDesc {
                prop_assert!(fi.validated(), "frame {} in use but not validated", t);
            }
        }
        if !(fi.page_type().is_page_table() && fi.validated()) {
            continue;
        }
        let Owner::Domain(d) = fi.owner() else {
            return Err(TestCaseError::fail(format!(
                "page table {t} owned by {:?}",
                fi.owner()
            )));
        };
        let level = fi.page_type().level().unwrap_or(0);
        for i in 0..512 {
            let e = w.read(t, i);
            if level == 4 && i == HYPERVISOR_L4_FIRST {
                // The read-only M2P: present only once the table was a kernel base.
                prop_assert!(e == 0 || e == xen_slot(i), "M2P slot of L4 {}: {:#x}", t, e);
                continue;
            }
            if level == 4 && (HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST).contains(&i) {
                prop_assert_eq!(e, xen_slot(i), "hypervisor slot {} of L4 {}", i, t);
                continue;
            }
            if e & P == 0 {
                continue;
            }
            let x = (e & 0x000f_ffff_ffff_f000) >> 12;
            let xo = w.ft.owner(Mfn(x));
            if level == 1 {
                prop_assert_eq!(e & GNT, 0);
                prop_assert!(e & U != 0, "unadjusted L1 entry {:#x}", e);
                if matches!(xo, None | Some(Owner::Io)) {
                    prop_assert_eq!(d, DomId(0), "I/O mapping by dom{}", d.0);
                    continue;
                }
                match xo {
                    Some(Owner::Domain(o) | Owner::XenShared(o)) if o == d => {}
                    Some(Owner::Domain(_) | Owner::XenShared(_)) => {
                        cross.insert((t, i, x));
                    }
                    _ => {
                        return Err(TestCaseError::fail(format!(
                            "dom{} L1 {t} maps frame {x} of {xo:?}",
                            d.0
                        )));
                    }
                }
                if d != DomId(0) {
                    prop_assert_eq!(e & (PWT | PCD | PSE), 0);
                }
                general[x as usize] += 1;
                if e & RW != 0 {
                    typ[x as usize] += 1;
                    prop_assert_eq!(
                        w.info(x).page_type(),
                        PageType::Writable,
                        "frame {} mapped RW by {} but typed {:?}",
                        x,
                        t,
                        w.info(x).page_type()
                    );
                }
            } else {
                prop_assert_eq!(xo, Some(Owner::Domain(d)));
                prop_assert_eq!(e & (PSE | G | PWT | PCD), 0);
                prop_assert!(e & U != 0);
                if x == t {
                    prop_assert_eq!(e & RW, 0, "writable self-map in {}", t);
                    continue;
                }
                general[x as usize] += 1;
                typ[x as usize] += 1;
                let xt = w.info(x).page_type();
                if xt == fi.page_type() {
                    prop_assert_eq!(e & RW, 0, "writable linear entry in {}", t);
                    lin_entries[t as usize] += 1;
                    lin_uses[x as usize] += 1;
                } else {
                    prop_assert_eq!(Some(xt), PageType::table(level - 1));
                }
            }
        }
    }
    for t in 0..n {
        if w.info(t as u64).pinned() {
            general[t] += 1;
            typ[t] += 1;
        }
    }
    let roots = vcpus
        .iter()
        .flatten()
        .flat_map(|v| [v.kernel_root, v.user_root])
        .flatten();
    for m in roots.chain(held.iter().copied()) {
        general[m.0 as usize] += 1;
        typ[m.0 as usize] += 1;
    }
    for t in 0..n {
        let fi = w.info(t as u64);
        prop_assert_eq!(
            u64::from(fi.count()),
            general[t],
            "general count of {}: {:?}",
            t,
            fi
        );
        prop_assert_eq!(
            u64::from(fi.type_count()),
            typ[t],
            "type count of {}: {:?}",
            t,
            fi
        );
        // Linear page tables never nest: a table holding linear entries is not itself
        // the target of one.
        prop_assert!(
            lin_entries[t] == 0 || lin_uses[t] == 0,
            "nested linear use of {}",
            t
        );
        prop_assert_eq!(
            i64::from(fi.linear_count()),
            lin_entries[t] - lin_uses[t],
            "linear count of {}",
            t
        );
    }
    Ok(cross)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_mm_operations_keep_the_model_sound(ops in proptest::collection::vec(op(), 1..150)) {
        let mut m = Model {
            w: World::new(),
            vcpus: [[VcpuMm::default(); 2]; 2],
            held: Vec::new(),
            cross: Cross::new(),
        };
        // Each domain starts with a booted address space (L4 -> L3 -> L2 -> L1 at index
        // 0, the L4 pinned and vCPU 0's kernel root) and three more pinned tables, so
        // walks, deep updates and linear entries happen.
        for (dom, base) in [(0u16, DOM0_BASE), (1, DOM1_BASE)] {
            m.w.chain(base, base + 1, base + 2, base + 3, (0, 0, 0));
            m.w.pin(dom, 4, base).unwrap();
            // Spare pinned tables, targets for linear entries.
            m.w.pin(dom, 4, base + 4).unwrap();
            m.w.pin(dom, 2, base + 5).unwrap();
            m.w.pin(dom, 4, base + 6).unwrap();
            let op = MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(base));
            m.w.ext(dom, &mut m.vcpus[usize::from(dom)][0], op).unwrap();
        }
        check(&m.w, &m.vcpus, &m.held)?;
        for op in &ops {
            m.step(op)?;
        }
        // Teardown: the caller drops what it holds, then both domains go.
        for f in core::mem::take(&mut m.held) {
            let mut c = m.w.ctx(0);
            put_page_and_type(&mut c, f);
        }
        let [mut v0, mut v1] = m.vcpus;
        {
            let mut c = m.w.ctx(1);
            let _ = relinquish_domain(&mut c, &mut v1);
        }
        m.vcpus = [v0, v1];
        check(&m.w, &m.vcpus, &m.held)?;
        let mut c = m.w.ctx(0);
        let out = relinquish_domain(&mut c, &mut v0);
        prop_assert_eq!(out.busy_frames, 0);
        let mut c = m.w.ctx(1);
        prop_assert_eq!(relinquish_domain(&mut c, &mut []).busy_frames, 0);
        for t in 0..N {
            let fi = m.w.info(t);
            prop_assert!(fi.is_unreferenced() && fi.linear_count() == 0, "frame {}: {:?}", t, fi);
            prop_assert!(m.w.ft.release(Mfn(t)).is_ok());
        }
    }
}
