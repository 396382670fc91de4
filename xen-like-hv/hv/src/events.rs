//! Event channels on the machine: every domain's port table (by domain slot), the
//! 2-level bitmaps of its shared_info page reached with atomic bit operations, and the
//! [`evtchn::Domains`](xlhv_core::evtchn::Domains) view the portable code runs on.

use crate::arch::x86_64::layout::DIRECTMAP_BASE;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use hypercall_abi::evtchn::port_word_bit;
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};
use hypercall_abi::xen::LEGACY_MAX_VCPUS;
use hypercall_abi::xen::shared_info::SharedInfo;
use spin::Mutex;
use xlhv_core::evtchn::{
    DomainEvtchn, Domains, EventBits, EvtchnConfig, EvtchnTable, UNLIMITED_MAX_PORT, pair_mut,
};
use xlhv_core::mm::Mfn;

/// Port tables, by domain slot: one per slot made (`registry`); a table's ports are
/// on the heap while its domain lives.
pub static TABLES: Mutex<Vec<EvtchnTable>> = Mutex::new(Vec::new());

/// Grows [`TABLES`] to `slots` tables (unused ones, no ports yet), when the domain
/// table grows.
pub fn grow(slots: usize) -> Result<(), crate::registry::NoMemory> {
    let mut t = TABLES.lock();
    let more = slots.saturating_sub(t.len());
    t.try_reserve_exact(more)
        .map_err(|_| crate::registry::NoMemory)?;
    let n = slots.max(t.len());
    t.resize_with(n, EvtchnTable::unused);
    Ok(())
}

/// Frames the tables themselves take on the heap (not their ports: those go with
/// their domains).
pub fn table_frames() -> u64 {
    let cap = TABLES.lock().capacity();
    crate::mm::heap_frames(cap * core::mem::size_of::<EvtchnTable>())
}

/// Gives back the port storage of the table of `slot`, whose domain is gone.
pub fn release(slot: usize) {
    if let Some(t) = TABLES.lock().get_mut(slot) {
        *t = EvtchnTable::unused();
    }
}

/// Resets the table of `slot` for a new domain `id` with `nr_vcpus` vCPUs: dom0 has no
/// port limit, a domU the 1023 libxl gives by default. Fails if the heap cannot hold
/// its ports.
pub fn init_domain(
    slot: usize,
    id: DomId,
    privileged: bool,
    nr_vcpus: u32,
) -> Result<(), crate::registry::NoMemory> {
    let max_port = if privileged {
        UNLIMITED_MAX_PORT
    } else {
        xlhv_core::evtchn::DEFAULT_DOMU_MAX_PORT
    };
    init_domain_with(slot, id, max_port, nr_vcpus)
}

/// Resets the table of `slot` for a new domain `id` whose highest port is `max_port`
/// (what `XEN_DOMCTL_createdomain` asked for). Fails if the heap cannot hold its
/// ports.
pub fn init_domain_with(
    slot: usize,
    id: DomId,
    max_port: u32,
    nr_vcpus: u32,
) -> Result<(), crate::registry::NoMemory> {
    set_vcpu_info_at(slot, None, None);
    TABLES
        .lock()
        .get_mut(slot)
        .ok_or(crate::registry::NoMemory)?
        .reinit(id, EvtchnConfig { max_port, nr_vcpus })
        .map_err(|_| crate::registry::NoMemory)
}

/// Records where the `vcpu_info` of `vcpu` of the domain in `slot` lives (`None`:
/// shared_info); `vcpu` `None` resets every vCPU of the slot.
pub fn set_vcpu_info_at(slot: usize, vcpu: Option<u32>, at: Option<u64>) {
    let Some(all) = crate::registry::info(slot).map(|i| &i.vcpu_info_at) else {
        return;
    };
    match vcpu {
        Some(v) => {
            if let Some(a) = all.get(v as usize) {
                a.store(at.unwrap_or(0), Ordering::SeqCst);
            }
        }
        None => all.iter().for_each(|a| a.store(0, Ordering::SeqCst)),
    }
}

/// The event bitmaps of one shared_info page, and the domain's `vcpu_info`s, in the
/// direct map.
#[derive(Clone, Copy, Debug)]
pub struct SharedBits {
    si: *mut SharedInfo,
    /// Where the domain's vCPUs registered their `vcpu_info`s (0: in shared_info).
    at: &'static [AtomicU64; LEGACY_MAX_VCPUS],
}

/// No domain's `vcpu_info` moved (for a slot out of range).
static NOWHERE: [AtomicU64; LEGACY_MAX_VCPUS] = [const { AtomicU64::new(0) }; LEGACY_MAX_VCPUS];

impl SharedBits {
    /// The bitmaps of the domain in `slot`, whose shared_info frame is `mfn` (a
    /// hypervisor-allocated frame that stays allocated while its domain exists).
    pub fn of(slot: usize, mfn: Mfn) -> Self {
        SharedBits {
            si: (DIRECTMAP_BASE + (mfn.0 << 12)) as *mut SharedInfo,
            at: crate::registry::info(slot).map_or(&NOWHERE, |i| &i.vcpu_info_at),
        }
    }

    fn word(&self, pending: bool, port: EvtchnPort) -> Option<(&AtomicU64, u64)> {
        let (w, b) = port_word_bit(port);
        if w >= hypercall_abi::xen::shared_info::EVTCHN_WORDS {
            return None;
        }
        // SAFETY: `si` points at a live shared_info page; `w` is within the bitmap
        // array; the guest accesses the same words with locked instructions, and
        // AtomicU64 has u64's layout.
        let p = unsafe {
            if pending {
                core::ptr::addr_of_mut!((*self.si).evtchn_pending[w])
            } else {
                core::ptr::addr_of_mut!((*self.si).evtchn_mask[w])
            }
        };
        // SAFETY: as above: aligned, valid for the page's lifetime, only accessed
        // atomically by the hypervisor.
        Some((unsafe { AtomicU64::from_ptr(p) }, 1u64 << (b & 63)))
    }

    /// The `vcpu_info` of `vcpu`: where it was registered, else in shared_info.
    pub fn vcpu(&self, vcpu: VcpuId) -> Option<*mut hypercall_abi::xen::shared_info::VcpuInfo> {
        let i = vcpu.0 as usize;
        let at = self.at.get(i)?.load(Ordering::SeqCst);
        if at != 0 {
            return Some((DIRECTMAP_BASE + at) as *mut _);
        }
        // SAFETY: in bounds of the vcpu_info array of a live shared_info page.
        Some(unsafe { core::ptr::addr_of_mut!((*self.si).vcpu_info[i]) })
    }

    fn upcall_flag(&self, vcpu: VcpuId, mask: bool) -> Option<&AtomicU8> {
        let vi = self.vcpu(vcpu)?;
        // SAFETY: `vi` is a live vcpu_info; the byte is accessed atomically.
        unsafe {
            let p = if mask {
                core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask)
            } else {
                core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending)
            };
            Some(AtomicU8::from_ptr(p))
        }
    }

    /// `evtchn_upcall_pending` of `vcpu`.
    pub fn upcall_pending_of(&self, vcpu: VcpuId) -> bool {
        self.upcall_flag(vcpu, false)
            .is_some_and(|a| a.load(Ordering::SeqCst) != 0)
    }
}

impl EventBits for SharedBits {
    fn test_and_set_pending(&mut self, port: EvtchnPort) -> bool {
        self.word(true, port)
            .is_none_or(|(w, m)| w.fetch_or(m, Ordering::SeqCst) & m != 0)
    }
    fn clear_pending(&mut self, port: EvtchnPort) {
        if let Some((w, m)) = self.word(true, port) {
            w.fetch_and(!m, Ordering::SeqCst);
        }
    }
    fn is_pending(&self, port: EvtchnPort) -> bool {
        self.word(true, port)
            .is_some_and(|(w, m)| w.load(Ordering::SeqCst) & m != 0)
    }
    fn is_masked(&self, port: EvtchnPort) -> bool {
        self.word(false, port)
            .is_none_or(|(w, m)| w.load(Ordering::SeqCst) & m != 0)
    }
    fn test_and_clear_mask(&mut self, port: EvtchnPort) -> bool {
        self.word(false, port)
            .is_some_and(|(w, m)| w.fetch_and(!m, Ordering::SeqCst) & m != 0)
    }
    fn test_and_set_selector(&mut self, vcpu: VcpuId, word: usize) -> bool {
        let Some(vi) = self.vcpu(vcpu) else {
            return true;
        };
        let Some(m) = u32::try_from(word).ok().and_then(|w| 1u64.checked_shl(w)) else {
            return true;
        };
        // SAFETY: `vi` is a live vcpu_info; the selector is accessed atomically.
        let sel = unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_pending_sel)) };
        sel.fetch_or(m, Ordering::SeqCst) & m != 0
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: VcpuId) -> bool {
        self.upcall_flag(vcpu, false)
            .is_none_or(|a| a.swap(1, Ordering::SeqCst) != 0)
    }
    fn upcall_pending(&self, vcpu: VcpuId) -> bool {
        self.upcall_pending_of(vcpu)
    }
    fn upcall_masked(&self, vcpu: VcpuId) -> bool {
        self.upcall_flag(vcpu, true)
            .is_none_or(|a| a.load(Ordering::SeqCst) != 0)
    }
}

/// Every domain's ports and bitmaps, while [`TABLES`] is locked; which slot holds
/// which domain, and its shared_info frame, come from [`crate::registry`].
pub struct HwEvtchn<'a> {
    /// The port tables, by slot.
    pub tables: &'a mut [EvtchnTable],
}

impl HwEvtchn<'_> {
    /// The slot of domain `dom`.
    pub fn slot_of(&self, dom: DomId) -> Option<usize> {
        crate::registry::slot_of(dom)
            .filter(|&s| self.tables.get(s).is_some_and(|t| t.domid() == dom))
    }

    /// The bitmaps of the domain in `slot`.
    pub fn bits(&self, slot: usize) -> Option<SharedBits> {
        Some(SharedBits::of(slot, crate::registry::shared_info(slot)?))
    }
}

impl Domains for HwEvtchn<'_> {
    type Bits<'b>
        = SharedBits
    where
        Self: 'b;

    fn get(&mut self, dom: DomId) -> Option<DomainEvtchn<'_, SharedBits>> {
        let slot = self.slot_of(dom)?;
        let bits = self.bits(slot)?;
        Some(DomainEvtchn {
            table: self.tables.get_mut(slot)?,
            bits,
            controller_paused: false,
        })
    }

    fn get_pair(
        &mut self,
        a: DomId,
        b: DomId,
    ) -> Option<(DomainEvtchn<'_, SharedBits>, DomainEvtchn<'_, SharedBits>)> {
        let (sa, sb) = (self.slot_of(a)?, self.slot_of(b)?);
        let (ba, bb) = (self.bits(sa)?, self.bits(sb)?);
        let (ta, tb) = pair_mut(&mut self.tables[..], sa, sb)?;
        Some((
            DomainEvtchn {
                table: ta,
                bits: ba,
                controller_paused: false,
            },
            DomainEvtchn {
                table: tb,
                bits: bb,
                controller_paused: false,
            },
        ))
    }
}
