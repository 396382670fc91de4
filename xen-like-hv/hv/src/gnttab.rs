//! Every domain's grant table (`xlhv_core::gnttab`), kept apart from the domain
//! records because a dying domain's table outlives its slot while other domains
//! still have its grants pinned. Lock order: `DOMAINS`, then [`GNTTAB`], then the
//! frame table, then the frame allocator.

use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::gnttab::{FramePool, Gnt, GrantTable, GrantTables, Limits};
use xlhv_core::hypercall::domctl::DOMID_FIRST_RESERVED;
use xlhv_core::mm::Mfn;

use crate::domains::MAX_DOMAINS;

/// Tables at once: one per domain slot, and room for dying domains' tables.
const SLOTS: usize = MAX_DOMAINS + 64;

/// The tables and, per domain id, which slot holds its table (0: none).
pub struct Tables {
    slots: [GrantTable; SLOTS],
    index: [u16; DOMID_FIRST_RESERVED as usize],
}

/// Every grant table.
pub static GNTTAB: Mutex<Tables> = Mutex::new(Tables {
    slots: [const { GrantTable::EMPTY }; SLOTS],
    index: [0; DOMID_FIRST_RESERVED as usize],
});

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
    let used: [bool; SLOTS] = core::array::from_fn(|_| false);
    let mut used = used;
    for &i in g.index.iter().filter(|&&i| i != 0) {
        if let Some(u) = used.get_mut(usize::from(i - 1)) {
            *u = true;
        }
    }
    let slot = used.iter().position(|u| !u).ok_or(Errno::ENOMEM)?;
    let mut hooks = crate::mmhw::Hooks::only(dom);
    let Tables { slots, index } = &mut *g;
    let t = &mut slots[slot];
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
    index[id] = u16::try_from(slot + 1).unwrap_or(0);
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
