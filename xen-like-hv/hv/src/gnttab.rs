//! Every domain's grant table (`xlhv_core::gnttab`), kept apart from the domain
//! records because a dying domain's table outlives its slot while other domains
//! still have its grants pinned. Lock order: `DOMAINS`, then [`GNTTAB`], then the
//! frame table, then the frame allocator.

use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::gnttab::{FramePool, Gnt, GrantTable, GrantTables, Limits};
use xlhv_core::hypercall::domctl::DOMID_FIRST_RESERVED;
use xlhv_core::mm::Mfn;

use alloc::vec::Vec;

/// Tables kept beyond the domain slots for dying domains whose grants others still
/// map.
pub const DYING_ROOM: usize = 64;
/// Tables at most: one per domain slot, and room for dying domains' tables.
const MOST: usize = crate::registry::LIMIT + DYING_ROOM;

/// The tables (as many as were ever needed at once: grown when a domain is created,
/// reused afterwards) and, per domain id, which one holds its table (0: none).
pub struct Tables {
    slots: Vec<GrantTable>,
    index: [u16; DOMID_FIRST_RESERVED as usize],
}

/// Every grant table.
pub static GNTTAB: Mutex<Tables> = Mutex::new(Tables {
    slots: Vec::new(),
    index: [0; DOMID_FIRST_RESERVED as usize],
});

impl Tables {
    /// A slot that holds no domain's table, made if every one is taken (at most
    /// [`MOST`]); `None` if there is none and the heap cannot hold another.
    fn free_slot(&mut self) -> Option<usize> {
        let mut used: Vec<u64> = Vec::new();
        used.try_reserve_exact(self.slots.len().div_ceil(64)).ok()?;
        used.resize(self.slots.len().div_ceil(64), 0);
        for &i in self.index.iter().filter(|&&i| i != 0) {
            let i = usize::from(i - 1);
            if let Some(w) = used.get_mut(i / 64) {
                *w |= 1 << (i % 64);
            }
        }
        let free = (0..self.slots.len())
            .find(|&i| used.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) == 0));
        if free.is_some() || self.slots.len() >= MOST {
            return free;
        }
        self.slots.try_reserve(1).ok()?;
        self.slots.push(GrantTable::EMPTY);
        Some(self.slots.len() - 1)
    }
}

/// Makes room for `n` tables (when the domain table grows).
pub fn reserve(n: usize) {
    let mut g = GNTTAB.lock();
    let want = n.min(MOST).max(g.slots.len());
    let more = want - g.slots.len();
    if g.slots.try_reserve_exact(more).is_ok() {
        g.slots.resize_with(want, || GrantTable::EMPTY);
    }
}

/// Frames the table slots take on the heap (kept for reuse; the tables' own frames
/// come from the frame allocator and go with their domains).
pub fn slot_frames() -> u64 {
    let cap = GNTTAB.lock().slots.capacity();
    crate::mm::heap_frames(cap * core::mem::size_of::<GrantTable>())
}

impl GrantTables for Tables {
    fn get(&mut self, dom: DomId) -> Option<&mut GrantTable> {
        let i = *self.index.get(usize::from(dom.0))?;
        self.slots.get_mut(usize::from(i).checked_sub(1)?)
    }
    fn forget(&mut self, dom: DomId) {
        if let Some(i) = self.index.get_mut(usize::from(dom.0)) {
            *i = 0;
        }
        log::info!("gnttab: the table of destroyed domain {} is gone", dom.0);
    }
}

/// Grant-table storage comes from the frame allocator.
#[derive(Debug)]
pub struct Pool;

impl FramePool for Pool {
    fn alloc_frame(&mut self) -> Option<Mfn> {
        crate::mm::alloc_frame()
    }
    fn free_frame(&mut self, mfn: Mfn) {
        let _ = crate::mm::free_order(mfn, 0);
    }
}

/// Makes `dom`'s table with `limits`, at its initial size. -ENOMEM if there is no
/// slot or no frame for it; -EEXIST if `dom` still has one (a dying domain's).
pub fn create(dom: DomId, privileged: bool, limits: Limits) -> Result<(), hypercall_abi::Errno> {
    use hypercall_abi::Errno;
    let mut g = GNTTAB.lock();
    let id = usize::from(dom.0);
    if *g.index.get(id).ok_or(Errno::EINVAL)? != 0 {
        return Err(Errno::EEXIST);
    }
    let slot = g.free_slot().ok_or(Errno::ENOMEM)?;
    let mut hooks = crate::mmhw::Hooks::only(dom);
    let Tables { slots, index } = &mut *g;
    let t = slots.get_mut(slot).ok_or(Errno::ENOMEM)?;
    *t = GrantTable::new(dom, limits);
    let ok = crate::mmhw::with_mm(dom, privileged, &mut hooks, |m| {
        t.init(m.mem, m.ft, &mut Pool)
    });
    if !ok {
        crate::mmhw::with_mm(dom, privileged, &mut hooks, |m| {
            t.destroy_private(m.mem, m.ft, &mut Pool);
        });
        return Err(Errno::ENOMEM);
    }
    if let Some(i) = index.get_mut(id) {
        *i = u16::try_from(slot + 1).unwrap_or(0);
    }
    Ok(())
}

/// Guest-visible frames of `dom`'s table (part of what the domain holds).
pub fn guest_frames(dom: DomId) -> u64 {
    GNTTAB
        .lock()
        .get(dom)
        .map_or(0, |t| u64::from(t.nr_guest_frames()))
}

/// Whether a dying `dom`'s table is still kept (its id must not be reused yet).
pub fn is_zombie(dom: DomId) -> bool {
    GNTTAB.lock().get(dom).is_some_and(|t| t.dying)
}

/// `dom` is being destroyed: it releases the grants it mapped, and its own table
/// goes now or, if others still pin its grants, when the last of them lets go.
/// Runs before its memory is relinquished.
pub fn domain_dying(dom: DomId, hooks: &mut crate::mmhw::Hooks) {
    let mut g = GNTTAB.lock();
    let kept = crate::mmhw::with_mm(dom, false, hooks, |m| {
        let mut gnt = Gnt {
            mm: m,
            tables: &mut *g,
            pool: &mut Pool,
            root: Mfn(0),
        };
        !gnt.domain_dying()
    });
    if kept {
        log::info!(
            "gnttab: domain {}'s table stays while other domains still use its grants",
            dom.0
        );
    }
}
