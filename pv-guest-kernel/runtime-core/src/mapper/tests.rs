use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::vec;
use std::vec::Vec;

const GARBAGE: u64 = 0xDEAD_BEEF_0000_0001;

/// Machine frames as the mapper's backend sees them, with the checks that
/// matter: a frame must be cleared (or be a known table) before anything
/// reads it or links it in, and batches apply in order.
#[derive(Default)]
struct Fake {
    frames: BTreeMap<u64, Vec<u64>>,
    /// Frames whose contents are defined (cleared, or set up by the test).
    defined: BTreeSet<u64>,
    free: Vec<u64>,
    freed: Vec<u64>,
    batches: Vec<(usize, usize, bool)>,
    /// Refuse the update with this global number.
    fail_at: Option<u64>,
    updates_seen: u64,
    reads: u64,
}

impl Fake {
    fn new(free_tables: u64) -> Self {
        let mut f = Fake::default();
        for m in 0..free_tables {
            let mfn = 0x1000 + m;
            f.frames.insert(mfn, vec![GARBAGE; ENTRIES]);
            f.free.push(mfn);
        }
        f.free.reverse();
        f
    }

    /// A live, empty root.
    fn root(&mut self) -> Mfn {
        let mfn = 0x10;
        self.frames.insert(mfn, vec![0; ENTRIES]);
        self.defined.insert(mfn);
        Mfn(mfn)
    }

    fn entry(&self, table: u64, idx: usize) -> u64 {
        assert!(
            self.defined.contains(&table),
            "read of undefined frame {table:#x}"
        );
        self.frames[&table][idx]
    }
}

impl Backend for Fake {
    fn read_entry(&mut self, table: Mfn, index: usize) -> u64 {
        self.reads += 1;
        self.entry(table.0, index)
    }

    fn alloc_table(&mut self) -> Option<Mfn> {
        self.free.pop().map(Mfn)
    }

    fn free_table(&mut self, table: Mfn) {
        self.freed.push(table.0);
        self.defined.remove(&table.0);
        self.frames.insert(table.0, vec![GARBAGE; ENTRIES]);
        self.free.push(table.0);
    }

    fn submit(&mut self, batch: Batch<'_>) -> Result<(), Rejected> {
        self.batches
            .push((batch.clears.len(), batch.updates.len(), batch.flush_tlb));
        for c in batch.clears {
            self.frames.insert(c.0, vec![0; ENTRIES]);
            self.defined.insert(c.0);
        }
        for (i, u) in batch.updates.iter().enumerate() {
            if self.fail_at == Some(self.updates_seen) {
                self.updates_seen += 1;
                return Err(Rejected {
                    stage: Stage::Update,
                    index: i,
                    errno: Errno::EINVAL,
                });
            }
            self.updates_seen += 1;
            assert_eq!(u.cmd(), Some(MmuCmd::NormalPtUpdate));
            let table = u.entry().mfn().0;
            assert!(
                self.defined.contains(&table),
                "update into undefined frame {table:#x}"
            );
            if is_present(u.val) && u.val & PteFlags::USER.bits() != 0 {
                // A link to a table: the table must be defined by now.
                let child = entry_mfn(u.val).0;
                if child >= 0x1000 {
                    assert!(
                        self.defined.contains(&child),
                        "linked undefined table {child:#x}"
                    );
                }
            }
            let idx = usize::try_from(u.entry().page_offset() / 8).unwrap();
            self.frames.get_mut(&table).unwrap()[idx] = u.val;
        }
        Ok(())
    }
}

type M = Mapper<Fake, 16, 4>;

fn data(i: u64) -> Mfn {
    Mfn(0x80_0000 + i)
}

#[test]
fn map_translate_unmap_reclaim() {
    let mut m = M::new(Fake::new(64));
    let root = m.backend().root();
    let va = (1 << 30) - (8 << 20); // 8 MiB below a 1 GiB boundary
    let pages = 4096; // 16 MiB: crosses it
    m.map(Root::live(root), va, pages, PteFlags::RW, |i| Some(data(i)))
        .unwrap();
    // 8 L1s, 2 L2s, 1 L3.
    assert_eq!(m.stats().tables_created, 11);
    for i in [0, 1, 511, 512, 2047, 2048, 4095] {
        let e = m.translate(root, va + i * PAGE).unwrap();
        assert_eq!(e, leaf(data(i), PteFlags::RW));
    }
    assert_eq!(m.translate(root, va - PAGE), None);
    assert_eq!(m.translate(root, va + pages * PAGE), None);
    // No flush for mapping over nothing; batches never exceed the queues.
    assert!(
        m.backend()
            .batches
            .iter()
            .all(|b| !b.2 && b.1 <= 16 && b.0 <= 4)
    );
    let s = m.stats();
    assert_eq!(s.updates, pages + 11);

    // Unmap the middle 2 MiB-aligned 8 MiB: 4 L1s become empty and go.
    let mid = 1 << 30;
    let before = m.backend().free.len();
    assert_eq!(m.unmap(root, mid - (4 << 20), 2048, true).unwrap(), 2048);
    assert_eq!(m.backend().freed.len(), 4);
    assert_eq!(m.backend().free.len(), before + 4);
    assert_eq!(m.translate(root, mid), None);
    assert_eq!(m.translate(root, mid - (4 << 20)), None);
    assert!(m.translate(root, mid - (4 << 20) - PAGE).is_some());
    assert!(m.translate(root, mid + (4 << 20)).is_some());
    assert!(m.backend().batches.last().is_some());

    // Unmapping everything frees every table but the root.
    assert_eq!(m.unmap(root, va, pages, true).unwrap(), 2048);
    assert_eq!(m.backend().freed.len(), 11);
    assert!(m.backend().frames[&root.0].iter().all(|e| *e == 0));
    assert_eq!(m.stats().tables_freed, 11);
}

#[test]
fn unmap_flushes_and_skips_missing_tables_cheaply() {
    let mut m = M::new(Fake::new(8));
    let root = m.backend().root();
    m.map(Root::live(root), 0x40_0000, 1, PteFlags::empty(), |_| {
        Some(data(7))
    })
    .unwrap();
    let reads = m.backend().reads;
    // 512 GiB of nothing but one page: a handful of reads, not millions.
    assert_eq!(m.unmap(root, 0, 1 << 27, false).unwrap(), 1);
    assert!(
        m.backend().reads - reads < 2000,
        "{} reads",
        m.backend().reads - reads
    );
    assert!(m.backend().batches.last().unwrap().2, "unmap must flush");
    // Without reclaim the tables stay.
    assert!(m.backend().freed.is_empty());
}

#[test]
fn replacing_a_mapping_flushes() {
    let mut m = M::new(Fake::new(8));
    let root = m.backend().root();
    m.map(Root::live(root), 0, 4, PteFlags::RW, |i| Some(data(i)))
        .unwrap();
    assert!(!m.backend().batches.last().unwrap().2);
    m.map(Root::live(root), PAGE, 1, PteFlags::empty(), |_| {
        Some(data(9))
    })
    .unwrap();
    assert!(m.backend().batches.last().unwrap().2);
    assert_eq!(
        m.translate(root, PAGE),
        Some(leaf(data(9), PteFlags::empty()))
    );
}

#[test]
fn fresh_root_is_never_read() {
    let mut fake = Fake::new(8);
    let root = fake.alloc_table().unwrap(); // garbage until cleared
    let mut m = M::new(fake);
    m.queue_clear(root).unwrap();
    m.map_with(Root::fresh(root), 0, 1024, |_, i| {
        Ok(Some(leaf(data(i), PteFlags::RW)))
    })
    .unwrap();
    assert_eq!(m.backend().reads, 0);
    assert_eq!(m.stats().tables_created, 4); // 2 L1 + L2 + L3
    assert_eq!(
        m.translate(root, 1023 * PAGE),
        Some(leaf(data(1023), PteFlags::RW))
    );
}

#[test]
fn entry_callback_can_skip_and_fail() {
    let mut m = M::new(Fake::new(8));
    let root = m.backend().root();
    let r = m.map_with(Root::live(root), 0, 100, |_, i| match i {
        5 => Ok(None),
        40 => Err(MapError::NoFrame { page: i }),
        _ => Ok(Some(leaf(data(i), PteFlags::RW))),
    });
    assert_eq!(r, Err(MapError::NoFrame { page: 40 }));
    // What came before the failure was submitted.
    assert!(m.translate(root, 39 * PAGE).is_some());
    assert_eq!(m.translate(root, 5 * PAGE), None);
    assert_eq!(m.translate(root, 40 * PAGE), None);
}

#[test]
fn refusals_and_bad_requests() {
    let mut m = M::new(Fake::new(8));
    let root = m.backend().root();
    m.backend().fail_at = Some(20);
    let r = m.map(Root::live(root), 0, 64, PteFlags::RW, |i| Some(data(i)));
    // Updates 0..16 (3 links + 13 leaves) went in the first batch; the
    // fifth update of the second batch is refused.
    assert_eq!(
        r,
        Err(MapError::Rejected(Rejected {
            stage: Stage::Update,
            index: 4,
            errno: Errno::EINVAL
        }))
    );
    assert_eq!(
        m.map(Root::live(root), 0x1001, 1, PteFlags::RW, |i| Some(data(i))),
        Err(MapError::BadRange {
            va: 0x1001,
            pages: 1
        })
    );
    assert_eq!(
        m.map(
            Root::live(root),
            0xFFFF_8000_0000_0000,
            1,
            PteFlags::RW,
            |i| Some(data(i))
        ),
        Err(MapError::BadRange {
            va: 0xFFFF_8000_0000_0000,
            pages: 1
        })
    );
    assert_eq!(
        m.map(Root::live(root), 0, 1, PteFlags::PAT | PteFlags::PCD, |i| {
            Some(data(i))
        }),
        Err(MapError::BadFlags(PteFlags::PAT.bits()))
    );
    assert_eq!(
        m.map(Root::live(root), 0, 1, PteFlags::empty(), |_| None),
        Err(MapError::NoFrame { page: 0 })
    );
}

#[test]
fn runs_out_of_tables() {
    let mut m = M::new(Fake::new(3));
    let root = m.backend().root();
    assert_eq!(
        m.map(Root::live(root), 0, 513, PteFlags::RW, |i| Some(data(i))),
        Err(MapError::NoTable)
    );
    // The first 2 MiB made it.
    assert!(m.translate(root, 511 * PAGE).is_some());
}

#[test]
fn large_pages_are_not_walked_through() {
    let mut m = M::new(Fake::new(8));
    let root = m.backend().root();
    m.map(Root::live(root), 0, 1, PteFlags::RW, |i| Some(data(i)))
        .unwrap();
    // Turn the L3 entry for 1 GiB..2 GiB into a "1 GiB page".
    let l3 = entry_mfn(m.backend().entry(root.0, 0)).0;
    m.backend().frames.get_mut(&l3).unwrap()[1] = 0x4000_0000 | 0x81;
    assert_eq!(
        m.map(Root::live(root), 1 << 30, 1, PteFlags::RW, |i| Some(data(
            i
        ))),
        Err(MapError::Superpage { va: 1 << 30 })
    );
    assert_eq!(m.translate(root, 1 << 30), None);
}

proptest! {
    #[test]
    fn matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0u64..3000, 1u64..600), 1..25)) {
        let mut m = M::new(Fake::new(200));
        let root = m.backend().root();
        let base = 0x7F_FFC0_0000u64; // straddles 1 GiB and 512 GiB boundaries
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut next = 0u64;
        for (is_map, start, len) in ops {
            let va = base + start * PAGE;
            if is_map {
                let first = next;
                m.map(Root::live(root), va, len, PteFlags::RW, |i| Some(data(first + i))).unwrap();
                for i in 0..len {
                    model.insert(va + i * PAGE, leaf(data(first + i), PteFlags::RW));
                }
                next += len;
            } else {
                let n = m.unmap(root, va, len, true).unwrap();
                let mut expect = 0;
                for i in 0..len {
                    expect += u64::from(model.remove(&(va + i * PAGE)).is_some());
                }
                prop_assert_eq!(n, expect);
            }
        }
        for k in 0..3600u64 {
            let va = base + k * PAGE;
            prop_assert_eq!(m.translate(root, va), model.get(&va).copied());
        }
        // Every table still linked holds something.
        let tables_live = m.stats().tables_created - m.stats().tables_freed;
        prop_assert!(tables_live <= 3 * 8 + 2);
        if model.is_empty() {
            prop_assert_eq!(tables_live, 0);
        }
    }
}
