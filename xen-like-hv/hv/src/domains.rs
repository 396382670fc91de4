//! The domains the hypervisor runs, the vCPU on each CPU, and the path of every entry
//! from a guest: interrupts, hypercalls, exceptions; scheduling, timers and event
//! delivery on the way back; and what happens when a domain stops.

use crate::arch::x86_64::guest::{self, HwPlatform};
use crate::arch::x86_64::{cpu, trap};
use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};
use hypercall_abi::Errno;
use hypercall_abi::types::DomId;
use hypercall_abi::vcpu::{RUNSTATE_BLOCKED, RUNSTATE_RUNNABLE, RUNSTATE_RUNNING};
use spin::Mutex;
use xlhv_core::domain::{DomainState, PvDomain, ShutdownReason};
use xlhv_core::evtchn::Kick;
use xlhv_core::exit::QemuExit;
use xlhv_core::platform::Progress;
use xlhv_core::regs::{Regs, SYSCALL_VECTOR};
use xlhv_core::sched::timerq::TimerQueue;
use xlhv_core::sched::{RunQueue, VcpuRef};
use xlhv_core::traps::{CrashReason, GuestCtx, Outcome, Siblings};

/// Slots made at boot: one chunk (the table grows a chunk at a time).
const BOOT_SLOTS: usize = crate::registry::CHUNK;

/// The most domains at once (`max_domains=`), at most `registry::LIMIT`.
static MAX_SLOTS: AtomicUsize = AtomicUsize::new(crate::registry::LIMIT);

/// Every domain, by slot. The table has as many slots as were made
/// (`registry::made`, capped by `max_domains=`); it grows when a domain takes the
/// last free one ([`Domains::grow`]), never on an entry's hot path.
pub struct Domains {
    slots: Vec<Option<PvDomain>>,
}

impl core::fmt::Debug for Domains {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domains")
            .field("count", &self.slots.iter().flatten().count())
            .finish()
    }
}

impl Domains {
    /// The domain in `slot`.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut PvDomain> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// The domain in `slot`, and every other slot beside it, borrowed at once.
    pub fn split(&mut self, slot: usize) -> Option<(&mut PvDomain, Others<'_>)> {
        let (left, rest) = self.slots.split_at_mut(slot);
        let (cur, right) = rest.split_first_mut()?;
        Some((cur.as_mut()?, Others { left, right }))
    }

    /// Every domain with its slot.
    fn iter_slots(&mut self) -> impl Iterator<Item = (usize, &mut PvDomain)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, d)| d.as_mut().map(|d| (i, d)))
    }

    /// The slot of domain `id`.
    pub fn slot_of(&self, id: DomId) -> Option<usize> {
        crate::registry::slot_of(id).filter(|&s| {
            self.slots
                .get(s)
                .is_some_and(|d| d.as_ref().is_some_and(|d| d.dom.id == id))
        })
    }

    /// A free slot, made if there is none (`None`: `max_domains=` reached or no
    /// memory).
    fn free_slot(&mut self) -> Option<usize> {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => Some(i),
            None => {
                self.grow();
                self.slots.iter().position(Option::is_none)
            }
        }
    }

    /// Puts `d` into free slot `slot` (from [`Domains::free_slot`]).
    fn put(&mut self, slot: usize, d: PvDomain) -> Option<usize> {
        let cell = self.slots.get_mut(slot).filter(|c| c.is_none())?;
        crate::registry::fill(slot, d.dom.id, d.dom.shared_info, d.dom.privileged);
        *cell = Some(d);
        if !self.slots.iter().any(Option::is_none) {
            want_growth();
        }
        Some(slot)
    }

    /// Makes another chunk of slots (`registry::CHUNK`, fewer at `max_domains=`):
    /// their records, event-channel tables, table entries and room in the pending
    /// lists. Runs when a domain takes the last free slot, at the end of that entry
    /// (or at once at boot). False if nothing was made: the limit, or no memory
    /// (logged; the next creation finds no slot and fails with -ENOMEM).
    pub fn grow(&mut self) -> bool {
        let max = MAX_SLOTS.load(Ordering::Relaxed);
        let have = self.slots.len();
        if have >= max {
            return false;
        }
        let made = match crate::registry::made() {
            m if m > have => Ok(m),
            _ => crate::registry::grow(),
        };
        let want = made.map(|m| m.min(max));
        let grown = want.and_then(|n| {
            crate::events::grow(n)?;
            crate::gnttab::reserve(n + crate::gnttab::DYING_ROOM);
            runq()
                .lock()
                .reserve_slots(n)
                .map_err(|_| crate::registry::NoMemory)?;
            reserve_timers(n)?;
            for list in [&PENDING_DESTROY, &PENDING_TEARDOWN, &PENDING_RETRY] {
                let mut l = list.lock();
                let more = n.saturating_sub(l.len());
                l.try_reserve_exact(more)
                    .map_err(|_| crate::registry::NoMemory)?;
            }
            self.slots
                .try_reserve_exact(n.saturating_sub(have))
                .map_err(|_| crate::registry::NoMemory)?;
            self.slots.resize_with(n.max(have), || None);
            Ok(n)
        });
        match grown {
            Ok(n) if n > have => {
                log::info!(
                    "domains: {n} slots; the table holds {} frames",
                    self.slot_frames()
                );
                true
            }
            Ok(_) => false,
            Err(_) => {
                log::warn!(
                    "domains: no memory for more than {have} domain slots; creating more domains fails"
                );
                false
            }
        }
    }

    /// Frames the table and its companions (`registry`, `events`, `gnttab`, the run
    /// queue, the pending lists) hold on the heap: kept for reuse, never given back.
    fn slot_frames(&self) -> u64 {
        let pending: u64 = [&PENDING_DESTROY, &PENDING_TEARDOWN, &PENDING_RETRY]
            .iter()
            .map(|l| crate::mm::heap_frames(l.lock().capacity() * core::mem::size_of::<usize>()))
            .sum();
        let runq: u64 = runq()
            .lock()
            .allocations()
            .iter()
            .map(|&b| crate::mm::heap_frames(b))
            .sum();
        let timers: u64 = TIMERQ
            .iter()
            .flat_map(|q| q.lock().allocations())
            .map(crate::mm::heap_frames)
            .sum();
        crate::mm::heap_frames(self.slots.capacity() * core::mem::size_of::<Option<PvDomain>>())
            + runq
            + timers
            + crate::registry::frames()
            + crate::events::table_frames()
            + crate::gnttab::slot_frames()
            + pending
    }
}

/// Sets the most domains at once (`max_domains=`; before any domain is built) and
/// makes the first slots.
pub fn init_slots(max_domains: u32) {
    let max = usize::try_from(max_domains)
        .unwrap_or(usize::MAX)
        .clamp(1, crate::registry::LIMIT);
    MAX_SLOTS.store(max, Ordering::Relaxed);
    let mut doms = lock_domains();
    log::info!("domains: at most {max} at once");
    while doms.slots.len() < BOOT_SLOTS.min(max) && doms.grow() {}
}

/// Asks for [`Domains::grow`] at the end of this entry.
fn want_growth() {
    GROW.store(true, Ordering::Relaxed);
    PENDING_WORK.store(true, Ordering::Relaxed);
}

/// The last free slot was taken: grow at the end of the entry.
static GROW: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Every domain but the current one (see [`Domains::split`]).
#[derive(Debug)]
pub struct Others<'a> {
    left: &'a mut [Option<PvDomain>],
    right: &'a mut [Option<PvDomain>],
}

impl Others<'_> {
    /// Every other domain with its slot.
    pub fn iter_slots(&mut self) -> impl Iterator<Item = (usize, &mut PvDomain)> {
        let skip = self.left.len() + 1;
        let left = self.left.iter_mut().enumerate();
        let right = self
            .right
            .iter_mut()
            .enumerate()
            .map(move |(i, d)| (i + skip, d));
        left.chain(right)
            .filter_map(|(i, d)| d.as_mut().map(|d| (i, d)))
    }

    /// The domain in `slot`, if it is one of these.
    fn get(&mut self, slot: usize) -> Option<&mut PvDomain> {
        let skip = self.left.len() + 1;
        if slot < self.left.len() {
            self.left.get_mut(slot)?.as_mut()
        } else {
            self.right.get_mut(slot.checked_sub(skip)?)?.as_mut()
        }
    }

    /// Domain `id` with its slot, if it is one of these (found through the registry,
    /// not by scanning the slots).
    fn by_id(&mut self, id: DomId) -> Option<(usize, &mut PvDomain)> {
        let slot = crate::registry::slot_of(id)?;
        let pv = self.get(slot)?;
        (pv.dom.id == id).then_some((slot, pv))
    }

    /// Acts on an event-channel kick for one of these domains: wakes the vCPUs it
    /// concerns.
    pub fn kick(&mut self, kick: &Kick) {
        if let Some((slot, pv)) = self.by_id(kick.dom) {
            wake(pv, slot, kick);
        }
    }

    /// Shuts domain `id` down now (`SCHEDOP_remote_shutdown`): it stops running and
    /// is destroyed at the next scheduling point. False if there is no such domain.
    pub fn shut_down(&mut self, id: DomId, reason: ShutdownReason) -> bool {
        let Some((slot, pv)) = self.by_id(id) else {
            return false;
        };
        if pv.dom.is_running() || pv.dom.state == DomainState::Paused {
            pv.dom.shutdown_code.get_or_insert(reason);
            push_pending(&PENDING_DESTROY, slot);
        }
        true
    }

    /// A free slot among these (the table grows at the end of the entry that takes
    /// the last one, so there is one unless `max_domains=` or memory ran out).
    fn free_slot(&self) -> Option<usize> {
        let skip = self.left.len() + 1;
        self.left.iter().position(Option::is_none).or_else(|| {
            self.right
                .iter()
                .position(Option::is_none)
                .map(|i| i + skip)
        })
    }

    /// Puts `pv` into free slot `slot` (from [`Others::free_slot`]).
    fn put(&mut self, slot: usize, pv: PvDomain) -> Option<usize> {
        let skip = self.left.len() + 1;
        let cell = if slot < self.left.len() {
            self.left.get_mut(slot)
        } else {
            self.right.get_mut(slot.checked_sub(skip)?)
        }
        .filter(|c| c.is_none())?;
        crate::registry::fill(slot, pv.dom.id, pv.dom.shared_info, pv.dom.privileged);
        *cell = Some(pv);
        if self.free_slot().is_none() {
            want_growth();
        }
        Some(slot)
    }

    /// `XEN_DOMCTL_createdomain`: an empty domain, paused by the controller, with a
    /// shared_info frame, event channels and `max_vcpus` vCPUs, each down until its
    /// context is set. `current` is the caller's id (never reused here).
    pub fn create(
        &mut self,
        spec: &xlhv_core::hypercall::domctl::CreateSpec,
        current: DomId,
    ) -> Result<DomId, Errno> {
        let in_use = |o: &mut Self, id: DomId| {
            id == current
                || o.find(id).is_some()
                || crate::mmhw::is_zombie(id)
                || crate::gnttab::is_zombie(id)
        };
        let id = match spec.id {
            Some(id) if in_use(self, id) => return Err(Errno::EEXIST),
            Some(id) => id,
            None => self.next_free_id(current).ok_or(Errno::ENOSPC)?,
        };
        // The vCPUs first: nothing to undo if the heap cannot hold them.
        let mut pv = PvDomain::new(
            id,
            false,
            xlhv_core::mm::Mfn(0),
            xlhv_core::mm::Mfn(0),
            spec.max_vcpus,
        )
        .ok_or(Errno::ENOMEM)?;
        // A slot and its event channels next: the lock is held, so the slot stays
        // free until the domain goes in.
        let Some(slot) = self.free_slot() else {
            log::warn!(
                "d{}: no free domain slot (max_domains={}, or no memory for more)",
                id.0,
                MAX_SLOTS.load(Ordering::Relaxed)
            );
            return Err(Errno::ENOMEM);
        };
        let weight = pv.dom.weight;
        let now = crate::time::now_ns();
        let nr_vcpus = usize::try_from(spec.max_vcpus).unwrap_or(0);
        // Undoes the slot's event channels and run-queue entries.
        let release = |slot: usize| {
            crate::events::release(slot);
            let mut rq = runq().lock();
            for i in 0..nr_vcpus {
                rq.remove(vref(slot, i));
            }
        };
        let queued =
            crate::events::init_domain_with(slot, id, spec.max_evtchn_port, spec.max_vcpus).is_ok()
                && {
                    let mut rq = runq().lock();
                    (0..nr_vcpus).all(|i| rq.add(vref(slot, i), weight, now).is_ok())
                }
                && reserve_timers(slot + 1).is_ok();
        if !queued {
            release(slot);
            return Err(Errno::ENOMEM);
        }
        let Some(shared_info) = crate::mm::alloc_frame() else {
            release(slot);
            return Err(Errno::ENOMEM);
        };
        crate::dom0::init_shared_info(shared_info);
        pv.dom.shared_info = shared_info;
        // The domain may map its shared_info but never type it; teardown returns it.
        let mut hooks = crate::mmhw::Hooks::only(id);
        let owned = crate::mmhw::with_mm(id, false, &mut hooks, |m| {
            m.ft.assign(
                shared_info,
                xlhv_core::mm::frame_table::Owner::XenShared(id),
            )
        });
        if owned.is_err() {
            let _ = crate::mm::free_order(shared_info, 0);
            release(slot);
            return Err(Errno::ENOMEM);
        }
        if let Err(e) = crate::gnttab::create(id, false, spec.gnttab) {
            // Nothing maps the new shared_info yet: it goes straight back.
            crate::mmhw::with_mm(id, false, &mut hooks, |m| {
                let _ = m.ft.release(shared_info);
            });
            let _ = crate::mm::free_order(shared_info, 0);
            release(slot);
            return Err(e);
        }
        pv.dom.pause_count = 1;
        pv.dom.toolstack = true;
        pv.dom.handle = spec.handle;
        for v in pv.vcpus.iter_mut() {
            v.online = false;
            v.timers = xlhv_core::vcpu::Timers::start_of_day(now);
        }
        // The slot was free and the lock is held: this cannot fail.
        let _ = self.put(slot, pv);
        log::info!(
            "d{} created by the control domain (slot {slot}), paused",
            id.0
        );
        Ok(id)
    }

    /// The next free domain id after the last one handed out (Xen's rover), so that
    /// an id is not reused at once.
    fn next_free_id(&mut self, current: DomId) -> Option<DomId> {
        use core::sync::atomic::Ordering;
        let first = xlhv_core::hypercall::domctl::DOMID_FIRST_RESERVED;
        for _ in 1..first {
            let id = ROVER.load(Ordering::Relaxed);
            let next = if id + 1 >= first { 1 } else { id + 1 };
            ROVER.store(next, Ordering::Relaxed);
            let cand = DomId(id);
            if cand != current
                && self.find(cand).is_none()
                && !crate::mmhw::is_zombie(cand)
                && !crate::gnttab::is_zombie(cand)
            {
                return Some(cand);
            }
        }
        None
    }

    /// Runs `f` on vCPU `vcpu` of domain `id` and the domain.
    pub fn with_vcpu<R>(
        &mut self,
        id: DomId,
        vcpu: u32,
        f: impl FnOnce(&mut xlhv_core::domain::Domain, &mut xlhv_core::vcpu::Vcpu) -> R,
    ) -> Option<R> {
        let (_, pv) = self.by_id(id)?;
        let PvDomain { dom, vcpus } = pv;
        let v = vcpus.get_mut(usize::try_from(vcpu).ok()?)?;
        Some(f(dom, v))
    }

    /// The slot of domain `id`, if it is one of these.
    pub fn slot_by_id(&mut self, id: DomId) -> Option<usize> {
        self.by_id(id).map(|(slot, _)| slot)
    }

    /// `getdomaininfo`'s view of the first of these domains with id >= `at`: domain
    /// `at` itself if it exists (found through the registry, as a toolstack asks
    /// about each of its domains), else the next by a scan of the table.
    pub fn summary(&mut self, at: DomId) -> Option<xlhv_core::hypercall::domctl::DomainSummary> {
        let now = crate::time::now_ns();
        let slot = match self.slot_by_id(at) {
            Some(s) => s,
            None => {
                self.iter_slots()
                    .filter(|(_, d)| d.dom.id >= at)
                    .min_by_key(|(_, d)| d.dom.id)?
                    .0
            }
        };
        let pv = self.get(slot)?;
        Some(xlhv_core::hypercall::domctl::DomainSummary::of(
            &pv.dom,
            pv.vcpus.iter(),
            now,
            false,
        ))
    }

    /// `XEN_DOMCTL_destroydomain`: torn down before the caller runs again; while
    /// another CPU runs it, that CPU is asked to switch away and the caller is to
    /// issue the domctl again (`Progress::Again`).
    pub fn request_destroy(&mut self, id: DomId) -> Result<Progress, Errno> {
        let (slot, pv) = self.by_id(id).ok_or(Errno::ESRCH)?;
        if switch_out_elsewhere(slot, pv.vcpus.len()) {
            return Ok(Progress::Again);
        }
        push_pending(&PENDING_TEARDOWN, slot);
        Ok(Progress::Done)
    }

    /// `XEN_DOMCTL_pausedomain`: its vCPUs leave the run queue until unpaused; done
    /// once no other CPU runs them (Xen's `vcpu_sleep_sync`), until then the caller
    /// is to issue the domctl again, which does not count the pause twice.
    pub fn pause(&mut self, id: DomId) -> Result<Progress, Errno> {
        let (slot, pv) = self.by_id(id).ok_or(Errno::ESRCH)?;
        if !pv.dom.pausing {
            pv.dom.pause_count = pv.dom.pause_count.saturating_add(1);
        }
        pv.dom.pausing = false;
        if pv.dom.state == DomainState::Running {
            pv.dom.state = DomainState::Paused;
            let now = crate::time::now_ns();
            let mut rq = runq().lock();
            for (i, v) in pv.vcpus.iter_mut().enumerate() {
                make_unrunnable(&mut rq, slot, i, now);
                if v.online {
                    v.set_runstate(hypercall_abi::vcpu::RUNSTATE_OFFLINE, now);
                }
            }
        }
        if running_elsewhere(&runq().lock(), slot, pv.vcpus.len()).is_some() {
            pv.dom.pausing = true;
            return Ok(Progress::Again);
        }
        Ok(Progress::Done)
    }

    /// `XEN_DOMCTL_unpausedomain`: -EINVAL if not paused by the controller; at the
    /// last unpause its online vCPUs that wait for nothing become runnable.
    pub fn unpause(&mut self, id: DomId) -> Result<(), Errno> {
        let (slot, pv) = self.by_id(id).ok_or(Errno::ESRCH)?;
        pv.dom.pause_count = pv.dom.pause_count.checked_sub(1).ok_or(Errno::EINVAL)?;
        if pv.dom.pause_count == 0 && pv.dom.state == DomainState::Paused {
            pv.dom.state = DomainState::Running;
            let now = crate::time::now_ns();
            for (i, v) in pv.vcpus.iter_mut().enumerate() {
                if !v.online {
                    continue;
                }
                if v.wait == xlhv_core::vcpu::Wait::None {
                    v.set_runstate(RUNSTATE_RUNNABLE, now);
                    make_runnable(slot, i, now);
                } else {
                    v.set_runstate(RUNSTATE_BLOCKED, now);
                }
            }
            // Timers of vCPUs that wait (their queue entries went while paused).
            for i in 0..pv.vcpus.len() {
                sync_timer(pv, slot, i);
            }
        }
        Ok(())
    }

    /// What the memory model needs to know about the domains that exist, with the
    /// current domain `current` (the table's domains, through the registry).
    pub fn hooks(&self, current: DomId, current_privileged: bool) -> crate::mmhw::Hooks {
        let control = if current_privileged {
            current
        } else {
            crate::registry::control()
        };
        crate::mmhw::Hooks::table(control, Some(current))
    }

    /// The domain with id `id`, if it is one of these.
    pub fn find(
        &mut self,
        id: hypercall_abi::types::DomId,
    ) -> Option<&mut xlhv_core::domain::Domain> {
        self.by_id(id).map(|(_, d)| &mut d.dom)
    }
}

static DOMAINS: Mutex<Domains> = Mutex::new(Domains { slots: Vec::new() });

/// Takes the domain lock. While it waits (interrupts are off) it does any TLB flush
/// another CPU asked of it: that CPU may hold the lock and wait for the flush
/// (`arch::x86_64::tlb`).
#[inline(always)]
fn lock_domains() -> spin::MutexGuard<'static, Domains> {
    // Uncontended, the first try takes it.
    if let Some(g) = DOMAINS.try_lock() {
        return g;
    }
    lock_domains_contended()
}

/// [`lock_domains`] when another CPU holds the lock.
#[cold]
fn lock_domains_contended() -> spin::MutexGuard<'static, Domains> {
    loop {
        crate::arch::x86_64::tlb::service();
        core::hint::spin_loop();
        if let Some(g) = DOMAINS.try_lock() {
            return g;
        }
    }
}

/// Slots of domains shut down from outside (remote shutdown): destroyed at the next
/// scheduling point, when no handler holds them.
static PENDING_DESTROY: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Slots the control domain destroyed (`XEN_DOMCTL_destroydomain`): torn down at the
/// end of its hypercall, before it runs again.
static PENDING_TEARDOWN: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Slots whose teardown waits for another CPU to switch away from them: tried again
/// at the end of every entry until it goes through.
static PENDING_RETRY: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Something waits on [`PENDING_DESTROY`], [`PENDING_TEARDOWN`] or
/// [`PENDING_RETRY`]: one flag test per entry instead of three locks.
static PENDING_WORK: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Queues `slot` on `list` (once) and flags the work for the end of the entry. Never
/// allocates: [`Domains::grow`] gave each list room for every slot.
fn push_pending(list: &Mutex<Vec<usize>>, slot: usize) {
    let mut l = list.lock();
    if !l.contains(&slot) && l.len() < l.capacity() {
        l.push(slot);
    }
    PENDING_WORK.store(true, core::sync::atomic::Ordering::Relaxed);
}

/// The next domain id `XEN_DOMCTL_createdomain` tries (Xen's rover).
static ROVER: core::sync::atomic::AtomicU16 = core::sync::atomic::AtomicU16::new(1);

use crate::arch::x86_64::percpu::{self, MAX_CPUS};

/// The run queue every CPU schedules from (`xlhv_core::sched`); it knows the vCPU each
/// CPU runs ([`RunQueue::current`]). Lock order: [`DOMAINS`], then this.
static RUNQ: Mutex<RunQueue> = Mutex::new(RunQueue::new());

/// The run queue.
fn runq() -> &'static Mutex<RunQueue> {
    &RUNQ
}

/// Lets CPUs `0..n` run guests (after the application processors came online).
pub fn set_cpus(n: usize) {
    runq().lock().set_cpus(n);
}

/// A vCPU as one word, `slot << 16 | vcpu` (`PerCpu::current`, `tlb`'s lazy tables).
fn vref_bits(v: VcpuRef) -> u32 {
    u32::from(v.slot) << 16 | u32::from(v.vcpu)
}

/// Records the queue's current vCPU of every CPU in its `PerCpu::current` (after
/// anything that may change them: `schedule`, `remove`), which every entry and exit
/// reads without taking the queue's lock.
fn note_current(rq: &RunQueue) {
    for cpu in 0..rq.cpus() {
        let v = rq.current(cpu).map_or(u32::MAX, vref_bits);
        if let Some(p) = percpu::of(cpu) {
            p.current.store(v, core::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Lets vCPU `vcpu` of the domain in `slot` run only on the guest-running CPUs in
/// `cpus`; returns those, or -EINVAL if none. A CPU running it elsewhere reschedules.
pub fn set_hard_affinity(slot: usize, vcpu: u32, cpus: u64) -> Result<u64, Errno> {
    let mut rq = runq().lock();
    let effective = cpus & rq.online_mask();
    let v = vref(slot, usize::try_from(vcpu).unwrap_or(usize::MAX));
    match rq.set_affinity(v, effective) {
        Ok(Some(cpu)) => {
            drop(rq);
            resched(cpu);
            Ok(effective)
        }
        Ok(None) => Ok(effective),
        Err(_) => Err(Errno::EINVAL),
    }
}

/// Lets vCPU `vcpu` of the domain in `slot` prefer the CPUs in `cpus` (soft
/// affinity); it moves at its CPU's next schedule.
pub fn set_soft_affinity(slot: usize, vcpu: u32, cpus: u64) -> Result<(), Errno> {
    let v = vref(slot, usize::try_from(vcpu).unwrap_or(usize::MAX));
    let running = {
        let mut rq = runq().lock();
        rq.set_soft_affinity(v, cpus).map_err(|_| Errno::EINVAL)?;
        rq.running_on(v)
    };
    // Its CPU reschedules, which moves it if a CPU it prefers idles.
    if let Some(cpu) = running {
        resched(cpu);
    }
    Ok(())
}

/// `dom0_vcpus_pin`: vCPU n of the domain in `slot` runs on CPU n only (counting
/// round the CPUs that run guests, as Xen's `dom0_setup_vcpu` does).
pub fn pin_vcpus(slot: usize) {
    let cpus = runq().lock().cpus().max(1);
    let mut doms = lock_domains();
    let Some(pv) = doms.get_mut(slot) else { return };
    for (i, v) in pv.vcpus.iter_mut().enumerate() {
        let want = 1u64 << (i % cpus.min(64));
        if let Ok(effective) = set_hard_affinity(slot, v.id, want) {
            v.affinity_hard = effective;
        }
    }
}

/// The CPUs (bit n: CPU n) that run a vCPU of the domain in `slot` whose bit is set
/// in `vcpus`, as the run queue last said.
pub fn cpus_running(slot: usize, vcpus: u64) -> u64 {
    let mut mask = 0;
    for cpu in 0..crate::arch::x86_64::smp::online().min(MAX_CPUS) {
        let Some(p) = percpu::of(cpu) else { continue };
        let v = p.current.load(core::sync::atomic::Ordering::Relaxed);
        if v != u32::MAX && (v >> 16) as usize == slot && vcpus & (1u64 << (v & 0x3F)) != 0 {
            mask |= 1 << cpu;
        }
    }
    mask
}

/// The vCPU this CPU runs.
fn current() -> Option<VcpuRef> {
    let v = percpu::this()
        .current
        .load(core::sync::atomic::Ordering::Relaxed);
    let [s1, s0, v1, v0] = v.to_be_bytes();
    (v != u32::MAX).then_some(VcpuRef {
        slot: u16::from_be_bytes([s1, s0]),
        vcpu: u16::from_be_bytes([v1, v0]),
    })
}

/// When each CPU's current timeslice ends (system time; `u64::MAX` = never).
static SLICE_END: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(u64::MAX) }; MAX_CPUS];
/// Asks CPU `cpu` to reschedule at its next exit to a guest: this CPU's flag, or
/// that CPU's and an event-check IPI to interrupt it.
fn resched(cpu: usize) {
    let Some(p) = percpu::of(cpu) else { return };
    p.preempt.store(true, core::sync::atomic::Ordering::SeqCst);
    // A CPU that idles polling sees the flag (`smp::idle_wait`).
    if cpu != percpu::index() && !p.polling.load(core::sync::atomic::Ordering::SeqCst) {
        crate::arch::x86_64::smp::kick(cpu);
    }
}

/// Makes vCPU `i` of the domain in `slot` runnable; the CPU that should run it
/// reschedules.
fn make_runnable(slot: usize, i: usize, now: u64) {
    if let Some(cpu) = runq().lock().wake(vref(slot, i), now, percpu::index()) {
        resched(cpu);
    }
}

/// vCPU `i` of the domain in `slot` may no longer run: a CPU that runs it now
/// reschedules.
fn make_unrunnable(rq: &mut RunQueue, slot: usize, i: usize, now: u64) {
    let v = vref(slot, i);
    rq.sleep(v, now);
    if let Some(cpu) = rq.running_on(v) {
        resched(cpu);
    }
}

/// The CPU other than this one that runs a vCPU of the domain in `slot`, if any.
fn running_elsewhere(rq: &RunQueue, slot: usize, nr_vcpus: usize) -> Option<usize> {
    let me = percpu::index();
    (0..nr_vcpus)
        .filter_map(|i| rq.running_on(vref(slot, i)))
        .find(|&c| c != me)
}

/// If another CPU runs a vCPU of the domain in `slot` (with `nr_vcpus` vCPUs): makes
/// its vCPUs unrunnable, asks that CPU to switch away, and says so.
fn switch_out_elsewhere(slot: usize, nr_vcpus: usize) -> bool {
    let mut rq = runq().lock();
    if running_elsewhere(&rq, slot, nr_vcpus).is_none() {
        return false;
    }
    let now = crate::time::now_ns();
    for i in 0..nr_vcpus {
        make_unrunnable(&mut rq, slot, i, now);
    }
    true
}

/// The machine is stopping with dom0: the other CPUs are parked, and no domain has
/// to wait for one of them to let go of it.
static STOPPING: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The hypervisor's command line, for `XENVER_commandline`.
static CMDLINE: spin::Once<&'static str> = spin::Once::new();

/// Records the hypervisor command line.
pub fn set_cmdline(s: &'static str) {
    CMDLINE.call_once(|| s);
}

/// The hypervisor command line (looked up only by `XENVER_commandline`, not on every
/// entry).
pub fn cmdline() -> &'static str {
    CMDLINE.get().copied().unwrap_or("")
}

/// Adds a built domain to the table, gives it event channels and puts its vCPUs on this
/// CPU's run queue (runnable iff the domain is `Running`).
pub fn add(mut d: PvDomain) -> Option<usize> {
    let now = crate::time::now_ns();
    for v in d.vcpus.iter_mut() {
        v.timers = xlhv_core::vcpu::Timers::start_of_day(now);
    }
    let (id, privileged, weight) = (d.dom.id, d.dom.privileged, d.dom.weight);
    let nr_vcpus = u32::try_from(d.vcpus.len()).unwrap_or(1);
    // Domains the hypervisor builds get Xen's boot-time grant-table limits.
    if let Err(e) = crate::gnttab::create(id, privileged, xlhv_core::gnttab::Limits::DOM0) {
        log::error!("domain {}: no grant table ({e:?})", id.0);
        return None;
    }
    let mut doms = lock_domains();
    let slot = doms.free_slot()?;
    if crate::events::init_domain(slot, id, privileged, nr_vcpus).is_err() {
        log::error!("domain {}: no memory for its event channels", id.0);
        crate::events::release(slot);
        return None;
    }
    doms.put(slot, d)?;
    let mut rq = runq().lock();
    for v in 0..nr_vcpus {
        let r = VcpuRef {
            slot: u16::try_from(slot).ok()?,
            vcpu: u16::try_from(v).ok()?,
        };
        if rq.add(r, weight, now).is_err() {
            log::error!("domain {}: no memory for its vCPUs on the run queue", id.0);
        }
    }
    drop(rq);
    if reserve_timers(slot + 1).is_err() {
        log::error!("domain {}: no memory for its timers", id.0);
    }
    Some(slot)
}

/// Unpauses every built domain: its vCPU 0 comes online and becomes runnable.
pub fn unpause_all() {
    let now = crate::time::now_ns();
    let mut doms = lock_domains();
    let mut rq = runq().lock();
    for (slot, pv) in doms.slots.iter_mut().enumerate() {
        let Some(pv) = pv else { continue };
        if pv.dom.state != DomainState::Paused {
            continue;
        }
        pv.dom.state = DomainState::Running;
        if let Some(v) = pv.vcpus.get_mut(0) {
            v.online = true;
            v.set_runstate(RUNSTATE_RUNNABLE, now);
            if let Some(cpu) = rq.wake(vref(slot, 0), now, percpu::index()) {
                resched(cpu);
            }
        }
    }
}

fn vref(slot: usize, vcpu: usize) -> VcpuRef {
    VcpuRef {
        slot: u16::try_from(slot).unwrap_or(u16::MAX),
        vcpu: u16::try_from(vcpu).unwrap_or(u16::MAX),
    }
}

/// Starts running guests on this CPU: never returns. The first vCPU the scheduler
/// picks is entered through the same exit path as every later one.
pub fn run_first() -> ! {
    // Boot ran with interrupts on (the calibration tick). From here the hypervisor runs
    // with them off, as on every guest entry: a one-shot timer armed below must
    // interrupt the guest, not be taken and lost here before the first IRETQ.
    x86_64::instructions::interrupts::disable();
    let frame_at = crate::arch::x86_64::entry_stack_top(crate::arch::x86_64::percpu::index())
        - size_of::<Regs>() as u64;
    // SAFETY: `frame_at` is the top of this CPU's entry stack, which nothing uses
    // until a guest runs (this code runs on the boot stack); the frame is then filled
    // from the first vCPU's registers before anything reads it.
    let frame = unsafe { &mut *(frame_at as *mut Regs) };
    *frame = Regs::default();
    let doms = lock_domains();
    let doms = dispatch(doms, None, frame);
    deliver_and_exit(doms, frame, false);
    // SAFETY: the frame is a complete ring-3 register set for the vCPU just loaded,
    // whose page tables, FS/GS bases, GDT and FPU state are in place.
    unsafe { return_to_frame(frame_at as *const Regs) }
}

unsafe extern "C" {
    fn return_to_frame(frame: *const Regs) -> !;
}

/// What a guest entry's handlers asked of the hypervisor beyond their result (a few
/// words, made on every entry).
#[derive(Clone, Copy, Debug, Default)]
pub struct EntryEffects {
    /// A timer of the current vCPU changed: re-arm.
    pub timers_changed: bool,
    /// A port of the current domain became pending: its other vCPUs that poll are
    /// woken to look (a spurious return, which `SCHEDOP_poll` allows, for one that
    /// polls other ports).
    pub poll_kick: bool,
    /// Other vCPUs of the current domain that changed (bit n: vCPU n;
    /// `Platform::sibling_changed`).
    pub siblings: u32,
    /// Other vCPUs of the current domain whose upcall became pending (bit n: vCPU n).
    pub upcalls: u32,
}

impl EntryEffects {
    /// Nothing beyond the entry's results: the exit may take the short path.
    pub fn is_empty(&self) -> bool {
        !self.timers_changed && !self.poll_kick && (self.siblings | self.upcalls) == 0
    }
}

/// Acts on what an entry of vCPU `vid` of the domain in `slot` asked for its
/// siblings: kicks (wake-ups), and vCPUs that came up, went down, got a context or
/// new timers. A sibling runs iff the domain runs, it is up and it waits for
/// nothing; one that may no longer run is switched away from its CPU; the CPU that
/// keeps a sibling's timers re-arms.
fn apply_sibling_effects(doms: &mut Domains, slot: usize, vid: usize, fx: &EntryEffects) {
    use xlhv_core::vcpu::Wait;
    let Some(pv) = doms.get_mut(slot) else { return };
    for i in (0..pv.vcpus.len().min(32)).filter(|&i| fx.upcalls & (1 << i) != 0) {
        let kick = Kick {
            dom: pv.dom.id,
            port: hypercall_abi::types::EvtchnPort(0),
            upcall: Some(hypercall_abi::types::VcpuId(u32::try_from(i).unwrap_or(0))),
            pollers: false,
        };
        wake(pv, slot, &kick);
    }
    let now = crate::time::now_ns();
    if fx.poll_kick {
        for (i, v) in pv.vcpus.iter_mut().enumerate().filter(|(i, _)| *i != vid) {
            if matches!(v.wait, Wait::Poll(_)) {
                v.wait = Wait::None;
                v.timers.poll_timeout = None;
                if pv.dom.is_running() && v.online {
                    v.set_runstate(RUNSTATE_RUNNABLE, now);
                    make_runnable(slot, i, now);
                }
            }
        }
    }
    if fx.siblings == 0 {
        return;
    }
    let running = pv.dom.is_running();
    for (i, v) in pv.vcpus.iter_mut().enumerate() {
        if i == vid || i >= 32 || fx.siblings & (1 << i) == 0 {
            continue;
        }
        if running && v.online && v.wait == Wait::None {
            if v.runstate.state != RUNSTATE_RUNNING {
                v.set_runstate(RUNSTATE_RUNNABLE, now);
            }
            make_runnable(slot, i, now);
        } else {
            if !v.online {
                v.set_runstate(hypercall_abi::vcpu::RUNSTATE_OFFLINE, now);
            }
            make_unrunnable(&mut runq().lock(), slot, i, now);
        }
        // Its timers are armed where it last ran.
        let cpu = usize::from(v.processor);
        if cpu != percpu::index() {
            resched(cpu);
        }
    }
}

/// Every entry from a guest lands here, with interrupts off. The common path (a
/// hypercall or exception that neither blocks, yields nor touches timers) takes one
/// lock (the domain table), reads no MSR, control register or clock beyond what its
/// handler needs, and pays for pending teardowns, timers and rescheduling only when
/// they are flagged.
pub fn guest_entry(frame: &mut Regs) {
    use core::sync::atomic::Ordering;
    guest::guest_ran();
    use crate::arch::x86_64::idt::{EVENT_CHECK_VECTOR, STOP_VECTOR, TIMER_VECTOR};
    let timer = frame.vector == u64::from(TIMER_VECTOR);
    let mut device = false;
    let mut kicked = false;
    if frame.vector == SYSCALL_VECTOR {
        // The usual entry: none of the interrupt checks below apply.
    } else if frame.vector == u64::from(EVENT_CHECK_VECTOR) {
        // Another CPU made work for this one: a reschedule (its flag is set) or an
        // event for the running vCPU, which the exit path delivers.
        crate::arch::x86_64::apic::eoi();
        kicked = true;
    } else if frame.vector == u64::from(STOP_VECTOR) {
        crate::arch::x86_64::smp::stopped();
    } else if timer {
        crate::time::on_timer_interrupt();
        crate::arch::x86_64::apic::eoi();
    } else if crate::irq::on_vector(frame.vector) {
        device = true;
    } else if trap::guest_interrupt(frame.vector) {
        return;
    }
    // Only a page fault needs CR2.
    let cr2 = if frame.vector == 14 {
        cpu::read_cr2()
    } else {
        0
    };
    let Some(cur) = current() else {
        panic!(
            "entry from a guest with no current vCPU (vector {:#x})",
            frame.vector
        );
    };
    let (slot, vid) = (usize::from(cur.slot), usize::from(cur.vcpu));
    let mut doms = lock_domains();
    if timer && crate::time::refine_due() {
        refine_clock(&mut doms);
    }
    let mut resched = timer;
    let mut check_timers = timer;
    let mut sibling_fx = false;
    let mut clobber_ok = true;
    if device {
        deliver_irqs(&mut doms);
    } else if !timer && !kicked {
        let (outcome, fx, left) = handle_entry(&mut doms, slot, vid, frame, cr2);
        if left {
            return;
        }
        check_timers |= fx.timers_changed;
        if !fx.is_empty() {
            apply_sibling_effects(&mut doms, slot, vid, &fx);
            check_timers = true;
            sibling_fx = true;
        }
        clobber_ok = outcome != Outcome::RegsReplaced;
        match outcome {
            Outcome::Shutdown(reason) => {
                destroy(&mut doms, slot, reason, None);
                resched = true;
            }
            Outcome::Crash(why) => {
                destroy(&mut doms, slot, ShutdownReason::Crash, Some(why));
                resched = true;
            }
            Outcome::Block | Outcome::Down => {
                let now = crate::time::now_ns();
                let state = if outcome == Outcome::Down {
                    hypercall_abi::vcpu::RUNSTATE_OFFLINE
                } else {
                    RUNSTATE_BLOCKED
                };
                if let Some(v) = doms.get_mut(slot).and_then(|pv| pv.vcpus.get_mut(vid)) {
                    v.set_runstate(state, now);
                }
                runq().lock().sleep(cur, now);
                check_timers = true;
                resched = true;
            }
            Outcome::Yield => {
                runq().lock().yield_now(cur, crate::time::now_ns());
                resched = true;
            }
            Outcome::Resume | Outcome::RegsReplaced => {}
        }
    }
    if PENDING_WORK.load(Ordering::Relaxed) {
        PENDING_WORK.store(false, Ordering::Relaxed);
        while let Some(slot) = pop_pending(&PENDING_TEARDOWN) {
            if let Some(pv) = doms.get_mut(slot) {
                log::info!("domain {}: destroyed by the control domain", pv.dom.id.0);
                teardown_domain(&mut doms, slot);
                resched = true;
            }
        }
        // Those queued now; a teardown that must wait again queues itself anew.
        let retries = PENDING_RETRY.lock().len();
        for _ in 0..retries {
            let Some(slot) = take_first(&PENDING_RETRY) else {
                break;
            };
            if doms.get_mut(slot).is_some() {
                teardown_domain(&mut doms, slot);
                resched = true;
            }
        }
        if GROW.swap(false, Ordering::Relaxed) {
            doms.grow();
        }
        while let Some(slot) = pop_pending(&PENDING_DESTROY) {
            let reason = doms
                .get_mut(slot)
                .and_then(|pv| pv.dom.shutdown_code)
                .unwrap_or(ShutdownReason::Poweroff);
            destroy(&mut doms, slot, reason, None);
            resched = true;
        }
    }
    if check_timers {
        // This vCPU's timers, its domain's watchdogs (on vCPU 0) and, after sibling
        // effects, every vCPU of the domain may have changed.
        if let Some(pv) = doms.get_mut(slot) {
            let all = if sibling_fx { pv.vcpus.len() } else { 0 };
            for i in [vid, 0].into_iter().chain(0..all) {
                sync_timer(pv, slot, i);
            }
        }
        fire_timers(&mut doms, crate::time::now_ns());
    }
    // The end of the timeslice needs no check here: the timer is armed for it
    // (`arm_timer`), and its interrupt reschedules.
    let flag = &percpu::this().preempt;
    let preempt = flag.load(Ordering::Relaxed) && flag.swap(false, Ordering::Relaxed);
    let switched = if resched || preempt {
        doms = dispatch(doms, Some(cur), frame);
        current() != Some(cur)
    } else {
        if check_timers {
            arm_timer(&doms);
        }
        false
    };
    deliver_and_exit(doms, frame, clobber_ok && !switched);
}

/// The next slot waiting on `list` for the end of the entry (one at a time).
fn pop_pending(list: &Mutex<Vec<usize>>) -> Option<usize> {
    list.lock().pop()
}

/// The oldest slot waiting on `list`.
fn take_first(list: &Mutex<Vec<usize>>) -> Option<usize> {
    let mut l = list.lock();
    (!l.is_empty()).then(|| l.remove(0))
}

/// The platform the portable handlers run against for the domain in `slot`.
#[inline(always)]
fn platform<'a>(
    dom: &xlhv_core::domain::Domain,
    others: Others<'a>,
    slot: usize,
    vcpu: usize,
    lone: bool,
) -> HwPlatform<'a> {
    HwPlatform {
        shared_info: dom.shared_info,
        others,
        slot,
        id: dom.id,
        vcpu: u32::try_from(vcpu).unwrap_or(u32::MAX),
        lone,
        effects: EntryEffects::default(),
    }
}

/// Handles one entry of vCPU `vid` of the domain in `slot` (a hypercall, an exception,
/// a SYSCALL from user mode) and returns what it asked for, and whether it also left
/// for the guest already: when the entry asks for nothing more (it resumes, changed
/// no timer, no teardown or reschedule is pending), pending events are delivered and
/// the hardware state loaded here, with the context at hand, as `deliver_and_exit`
/// would.
fn handle_entry(
    doms: &mut Domains,
    slot: usize,
    vid: usize,
    frame: &mut Regs,
    cr2: u64,
) -> (Outcome, EntryEffects, bool) {
    use core::sync::atomic::Ordering;
    let ((outcome, left), effects) = with_ctx(doms, slot, vid, frame, |ctx| {
        if ctx.regs.vector == SYSCALL_VECTOR {
            if ctx.vcpu.kernel_mode {
                ctx.hypercall();
            } else {
                ctx.user_syscall();
            }
        } else {
            ctx.guest_exception(cr2);
        }
        let mut left = false;
        if matches!(ctx.outcome, Outcome::Resume | Outcome::RegsReplaced)
            && ctx.p.effects.is_empty()
            && !PENDING_WORK.load(Ordering::Relaxed)
            && !percpu::this().preempt.load(Ordering::Relaxed)
        {
            let clobber_ok = ctx.outcome == Outcome::Resume;
            ctx.deliver_events();
            // A bad event-callback stack crashes the domain: the full path does that.
            if !matches!(ctx.outcome, Outcome::Crash(_)) {
                guest::sync(ctx.vcpu);
                ctx.regs.mark_sysret(clobber_ok);
                left = true;
            }
        }
        (ctx.outcome, left)
    });
    (outcome, effects, left)
}

/// Runs `f` on the guest context of vCPU `vid` of the domain in `slot` (the vCPU
/// this CPU runs: both exist), with its siblings beside it; returns what `f` gave
/// and the effects the entry asked for.
#[inline(always)]
fn with_ctx<R>(
    doms: &mut Domains,
    slot: usize,
    vid: usize,
    frame: &mut Regs,
    f: impl FnOnce(&mut GuestCtx<'_, HwPlatform<'_>>) -> R,
) -> (R, EntryEffects) {
    let Some((pv, others)) = doms.split(slot) else {
        panic!("current domain slot {slot} is empty")
    };
    let PvDomain { dom, vcpus } = pv;
    let lone = vcpus.len() == 1;
    let Some((vcpu, siblings)) = Siblings::split(vcpus, vid) else {
        panic!("current vCPU {vid} does not exist")
    };
    let mut plat = platform(dom, others, slot, vid, lone);
    let r = f(&mut GuestCtx::new(&mut plat, dom, vcpu, frame).with_siblings(siblings));
    (r, plat.effects)
}

/// Picks the next vCPU for this CPU and loads it into `frame`, saving the registers of
/// `from` (the vCPU whose state `frame` holds, if any) first. With nothing runnable the
/// CPU idles here, interrupts on, until a timer makes something runnable.
fn dispatch<'a>(
    mut doms: spin::MutexGuard<'a, Domains>,
    from: Option<VcpuRef>,
    frame: &mut Regs,
) -> spin::MutexGuard<'a, Domains> {
    use core::sync::atomic::Ordering;
    let mut saved = false;
    loop {
        let now = crate::time::now_ns();
        // Scheduling now answers any reschedule asked of this CPU so far.
        percpu::this().preempt.store(false, Ordering::Relaxed);
        let decision = {
            let mut rq = runq().lock();
            let d = rq.schedule(percpu::index(), now);
            note_current(&rq);
            d
        };
        percpu::mine(&SLICE_END)
            .store(decision.slice_end_ns.unwrap_or(u64::MAX), Ordering::Relaxed);
        if let Some(cpu) = decision.kick {
            resched(cpu);
        }
        if let Some(next) = decision.next {
            if from == Some(next) && !saved {
                if let Some(v) = vcpu_mut(&mut doms, next) {
                    v.set_runstate(RUNSTATE_RUNNING, now);
                }
                arm_timer(&doms);
                return doms;
            }
            if !saved {
                save(&mut doms, from, frame, now);
            }
            load(&mut doms, next, frame, now);
            // Xen restarts a switched-in vCPU's periodic timer, firing it if due.
            let due = vcpu_mut(&mut doms, next).is_some_and(|v| v.timers.catch_up_periodic(now));
            if due {
                let vcpu = u32::from(next.vcpu);
                let timer = hypercall_abi::evtchn::Virq::Timer as u32;
                raise_virq(&mut doms, usize::from(next.slot), timer, vcpu);
            }
            if let Some(pv) = doms.get_mut(usize::from(next.slot)) {
                sync_timer(pv, usize::from(next.slot), usize::from(next.vcpu));
            }
            arm_timer(&doms);
            return doms;
        }
        if !saved {
            save(&mut doms, from, frame, now);
            saved = true;
            // Idle keeping the tables of the vCPU that ran (Xen's lazy context
            // switch): if it is the next to run here, it goes on without a CR3 load.
            // A flush asked of this CPU moves it to the hypervisor's own tables
            // (`tlb::service`), so a domain torn down elsewhere can have its frames
            // reused. With no vCPU that ran (it crashed), go there now.
            match from {
                Some(v) => crate::arch::x86_64::tlb::idle_keeping(vref_bits(v)),
                None => guest::enter_idle_tables(),
            }
        }
        // Idle: nothing runnable. Sleep until the next timer or IPI, then look again.
        arm_timer(&doms);
        drop(doms);
        crate::arch::x86_64::smp::idle_wait();
        doms = lock_domains();
        if crate::time::refine_due() {
            refine_clock(&mut doms);
        }
        fire_timers(&mut doms, crate::time::now_ns());
        deliver_irqs(&mut doms);
    }
}

/// Refines the clock's rate (`time::refine`) and publishes the new anchor in every
/// domain's pvclock, so guests' time continues without a jump.
fn refine_clock(doms: &mut Domains) {
    if crate::time::refine().is_none() {
        return;
    }
    for (slot, pv) in doms.iter_slots() {
        let bits = crate::events::SharedBits::of(slot, pv.dom.shared_info);
        for v in pv.vcpus.iter() {
            if let Some(vi) = bits.vcpu(hypercall_abi::types::VcpuId(v.id)) {
                // SAFETY: `vi` is the live domain's vcpu_info in the direct map.
                crate::dom0::publish_pvclock(unsafe { core::ptr::addr_of_mut!((*vi).time) });
            }
        }
        // Secondary copies (`VCPUOP_register_vcpu_time_memory_area`) are written when
        // each vCPU is next loaded in kernel mode (`load`).
        for v in pv.vcpus.iter_mut().filter(|v| v.time_area != 0) {
            v.time_area_pending = true;
        }
    }
}

/// Raises the ports of the device interrupts taken since the last call and wakes
/// the vCPUs they concern.
fn deliver_irqs(doms: &mut Domains) {
    crate::irq::take_deliveries(|dom, port| {
        let Some(slot) = doms.slot_of(dom) else {
            return;
        };
        let Some(pv) = doms.get_mut(slot) else {
            return;
        };
        let mut bits = crate::events::SharedBits::of(slot, pv.dom.shared_info);
        let kick = {
            let tables = crate::events::TABLES.lock();
            tables
                .get(slot)
                .and_then(|t| t.set_pending(&mut bits, hypercall_abi::types::EvtchnPort(port)))
        };
        if let Some(k) = kick {
            wake(pv, slot, &k);
        }
    });
}

fn vcpu_mut(doms: &mut Domains, r: VcpuRef) -> Option<&mut xlhv_core::vcpu::Vcpu> {
    doms.get_mut(usize::from(r.slot))?
        .vcpus
        .get_mut(usize::from(r.vcpu))
}

/// Saves the running vCPU's registers and FPU state from the CPU (if its domain still
/// exists) and charges its runstate.
fn save(doms: &mut Domains, from: Option<VcpuRef>, frame: &Regs, now: u64) {
    let Some(v) = from.and_then(|r| vcpu_mut(doms, r)) else {
        return;
    };
    // What the CPU holds now, not the copies of the last entry that needed them.
    guest::read_back_bases(v);
    v.regs = *frame;
    v.sels = crate::arch::x86_64::segs::read();
    cpu::fpu_save(&mut v.fpu);
    let state = if v.wait == xlhv_core::vcpu::Wait::None {
        RUNSTATE_RUNNABLE
    } else {
        RUNSTATE_BLOCKED
    };
    v.set_runstate(state, now);
}

/// Puts vCPU `to` on the CPU: registers into `frame` (to leave by IRETQ), page tables,
/// segment bases, GDT frames, FPU state; updates its runstate and runstate area.
fn load(doms: &mut Domains, to: VcpuRef, frame: &mut Regs, now: u64) {
    let Some(pv) = doms.get_mut(usize::from(to.slot)) else {
        panic!("scheduler picked a vCPU of an empty slot {}", to.slot);
    };
    let Some(v) = pv.vcpus.get_mut(usize::from(to.vcpu)) else {
        panic!("scheduler picked a missing vCPU {:?}", to);
    };
    *frame = v.regs;
    frame.vector = 0;
    let here = u16::try_from(percpu::index()).unwrap_or(0);
    if v.processor != here {
        // Its timers move with it (`dispatch` queues them here after the switch).
        if let Some(q) = TIMERQ.get(usize::from(v.processor)) {
            let _ = q.lock().set(to, None);
        }
        v.processor = here;
    }
    if !crate::arch::x86_64::tlb::take_lazy(vref_bits(to)) {
        guest::forget_loaded_cr3();
    }
    cpu::fpu_restore(&mut v.fpu, v.xcr0);
    guest::load_spec_ctrl(v.msrs.spec_ctrl);
    // If the vCPU that ran was not saved (it crashed), the bases `sync` compares with
    // must be the CPU's.
    guest::refresh_loaded_bases();
    guest::sync(v);
    crate::arch::x86_64::gdt::load_guest_frames(&v.gdt_frames);
    crate::arch::x86_64::ldt::load(v);
    v.set_runstate(RUNSTATE_RUNNING, now);
    if v.runstate_area != 0 {
        let r = v.runstate_at(now);
        let _ = guest::write_current(v.runstate_area, zerocopy::IntoBytes::as_bytes(&r));
    }
    if v.time_area_pending && v.kernel_mode {
        v.time_area_pending = false;
        let bits = crate::events::SharedBits::of(usize::from(to.slot), pv.dom.shared_info);
        if let Some(vi) = bits.vcpu(hypercall_abi::types::VcpuId(v.id)) {
            // SAFETY: `vi` is the live domain's vcpu_info in the direct map; the
            // hypervisor alone writes its time while the vCPU is off the CPU.
            let t = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*vi).time)) };
            xlhv_core::hypercall::vcpu::write_time_area(guest::write_current, v.time_area, &t);
        }
    }
    load_segments(doms, to);
}

/// Delivers a pending event to the vCPU now on the CPU (bouncing to its event
/// callback), loads its hardware state, and chooses SYSRET when that is exact. A bad
/// event-callback stack crashes that domain and another vCPU is picked.
fn deliver_and_exit(mut doms: spin::MutexGuard<'_, Domains>, frame: &mut Regs, mut sysret: bool) {
    loop {
        let Some(cur) = current() else {
            panic!("leaving for a guest with no current vCPU");
        };
        let (slot, vid) = (usize::from(cur.slot), usize::from(cur.vcpu));
        let (outcome, _) = with_ctx(&mut doms, slot, vid, frame, |ctx| {
            // A data selector did not load at switch-in (`load_segments`).
            if ctx.vcpu.failsafe_due {
                ctx.vcpu.failsafe_due = false;
                if let Err(why) = ctx.failsafe_callback() {
                    ctx.outcome = Outcome::Crash(why);
                }
            }
            if ctx.outcome == Outcome::Resume {
                ctx.deliver_events();
            }
            ctx.outcome
        });
        if let Outcome::Crash(why) = outcome {
            destroy(&mut doms, slot, ShutdownReason::Crash, Some(why));
            doms = dispatch(doms, None, frame);
            sysret = false;
            continue;
        }
        if let Some(v) = doms.get_mut(slot).and_then(|pv| pv.vcpus.get(vid)) {
            guest::sync(v);
        }
        // A hypercall's or a bounce's return clobbers RCX/R11 as SYSCALL does; `iret`
        // and continuations restore them, so they may use SYSRET only if nothing
        // changes.
        frame.mark_sysret(sysret);
        return;
    }
}

/// The IRETQ back into the current guest faulted (`fault`: that exception, in
/// hypervisor context): a selector of the frame did not load (#NP, #SS or #GP with the
/// selector as error code). As Xen's fix-up of its own exit `iretq`
/// (`exception_with_ints_disabled`), the fault is the guest's: it is bounced to the
/// guest's handler for that vector as if the guest had raised it at the frame's RIP,
/// with the frame's registers (the guest's handler sees the selector that did not
/// load, and may fix the frame it returns with). A #PF here (not an LDT page, which
/// `ldt_fault_in_hypervisor` maps), or a guest without a handler, crashes the domain.
pub fn exit_fault(fault: &Regs) -> ! {
    let vector = u8::try_from(fault.vector).unwrap_or(0xFF);
    // The general registers are the guest's (popped just before the IRETQ); its
    // return frame (RIP, CS, RFLAGS, RSP, SS) is still where the IRETQ read it.
    // SAFETY: `fault.rsp` is the IRETQ's stack pointer at the fault: the five words of
    // the guest's return frame at the top of this CPU's entry stack, intact (the CPU
    // pushed the fault's frame below them).
    let ret = unsafe { core::ptr::read(fault.rsp as *const [u64; 5]) };
    let mut guest = Regs {
        vector: u64::from(vector),
        error_code: fault.error_code,
        rip: ret[0],
        cs: ret[1],
        rflags: ret[2],
        rsp: ret[3],
        ss: ret[4],
        ..*fault
    };
    let cur = current();
    let mut doms = lock_domains();
    let Some(c) = cur else {
        panic!("fault returning to a guest, with no current guest");
    };
    let (slot, vid) = (usize::from(c.slot), usize::from(c.vcpu));
    let bounced = if vector == 14 {
        Err(CrashReason::EntryFault { vector })
    } else {
        bounce_exit_fault(&mut doms, slot, vid, &mut guest, vector)
    };
    let frame_at = crate::arch::x86_64::entry_stack_top(crate::arch::x86_64::percpu::index())
        - size_of::<Regs>() as u64;
    // SAFETY: the faulting IRETQ consumed the old frame at the top of the entry stack,
    // and `fault` (below it) has been copied; nothing else uses that memory now (this
    // handler's own stack lies below both).
    let frame = unsafe { &mut *(frame_at as *mut Regs) };
    *frame = guest;
    let doms = match bounced {
        Ok(()) => doms,
        Err(why) => {
            destroy(&mut doms, slot, ShutdownReason::Crash, Some(why));
            dispatch(doms, None, frame)
        }
    };
    deliver_and_exit(doms, frame, false);
    // SAFETY: as in `run_first`: a complete frame for the vCPU now current.
    unsafe { return_to_frame(frame_at as *const Regs) }
}

/// [`exit_fault`]'s bounce of exception `vector` (its error code in `regs`) to vCPU
/// `vid` of the domain in `slot`, whose registers `regs` are.
fn bounce_exit_fault(
    doms: &mut Domains,
    slot: usize,
    vid: usize,
    regs: &mut Regs,
    vector: u8,
) -> Result<(), CrashReason> {
    with_ctx(doms, slot, vid, regs, |ctx| {
        let error = ctx.regs.error_code;
        ctx.deliver_exception(vector, Some(error), 0)
    })
    .0
}

/// A #PF in hypervisor context at `offset` of this CPU's LDT area: the CPU read the
/// running vCPU's LDT on the way back into the guest (IRETQ loading an LDT selector).
/// Maps that page as a guest-context fault would; true if the access can be retried.
/// False (the fault stays fatal to the guest, or to the machine if it is not on the
/// exit path) if the page cannot be an LDT page, or if the fault came from code that
/// holds the domain lock. `on_exit`: the fault is the exit path's IRETQ, which never
/// runs with the lock held, so this waits for the lock (another CPU may hold it);
/// anywhere else a held lock is this CPU's.
pub fn ldt_fault_in_hypervisor(offset: u64, on_exit: bool) -> bool {
    let Some(cur) = current() else {
        return false;
    };
    let doms = if on_exit {
        Some(lock_domains())
    } else {
        DOMAINS.try_lock()
    };
    let Some(mut doms) = doms else {
        return false;
    };
    map_ldt_page(&mut doms, cur, offset)
}

/// Maps the page at `offset` of vCPU `r`'s LDT for the CPU (as its first read would)
/// and reloads its LDT; false if that page cannot be an LDT page.
fn map_ldt_page(doms: &mut Domains, r: VcpuRef, offset: u64) -> bool {
    let (slot, vid) = (usize::from(r.slot), usize::from(r.vcpu));
    let Some((pv, others)) = doms.split(slot) else {
        return false;
    };
    let PvDomain { dom, vcpus } = pv;
    let Some(vcpu) = vcpus.get_mut(vid) else {
        return false;
    };
    let mut plat = platform(dom, others, slot, vid, true);
    let mut vm = xlhv_core::mm::mmu::VcpuMm {
        kernel_root: Some(vcpu.kernel_root),
        user_root: vcpu.user_root,
        ldt_base: vcpu.ldt_base,
        ldt_ents: vcpu.ldt_ents,
        ldt_frames: vcpu.ldt_frames,
    };
    use xlhv_core::platform::Platform;
    let mapped = plat.mm(dom.id, dom.privileged, |m| {
        xlhv_core::mm::mmu::map_ldt_page(m, &mut vm, offset)
    });
    if mapped.is_err() {
        return false;
    }
    vcpu.ldt_frames = vm.ldt_frames;
    crate::arch::x86_64::ldt::load(vcpu);
    true
}

/// Xen's `load_segments` for the data selectors of vCPU `to`, just switched in: each
/// one that the CPU or the vCPU has non-NULL is loaded (an LDT selector's page mapped
/// first: the #PF path cannot while the domain lock is held). One that does not load
/// is NULL and the failsafe callback is due (`Vcpu::failsafe_due`). Loading %fs or
/// %gs sets their bases from the descriptors, so the vCPU's are written again.
fn load_segments(doms: &mut Domains, to: VcpuRef) {
    use crate::arch::x86_64::segs;
    let Some(want) = vcpu_mut(doms, to).map(|v| v.sels) else {
        return;
    };
    let cur = segs::read();
    let mut ok = true;
    let mut bases = false;
    for (i, (&c, &w)) in cur.iter().zip(want.iter()).enumerate() {
        if c == 0 && w == 0 {
            continue;
        }
        if w & 4 != 0 {
            map_ldt_page(doms, to, u64::from(w & !7));
        }
        ok &= segs::load(i, w);
        bases |= i >= 2;
    }
    if let Some(v) = vcpu_mut(doms, to) {
        v.failsafe_due = !ok;
        if bases {
            guest::forget_loaded_bases();
            guest::sync(v);
        }
    }
}

/// Wakes vCPU `r` if it waits (for an upcall, any wait but `Down`; for a newly pending
/// `port`, only a poll on that port or on several), and asks for a reschedule if it
/// should run before the current one.
fn wake(pv: &mut PvDomain, slot: usize, kick: &Kick) {
    use xlhv_core::vcpu::Wait;
    let now = crate::time::now_ns();
    for (i, v) in pv.vcpus.iter_mut().enumerate() {
        let by_upcall = kick.upcall.is_some_and(|u| u.0 as usize == i)
            && matches!(v.wait, Wait::Block | Wait::Poll(_));
        let by_port = kick.pollers
            && match v.wait {
                Wait::Poll(None) => true,
                Wait::Poll(Some(p)) => p == kick.port,
                _ => false,
            };
        if by_upcall || by_port {
            v.wait = Wait::None;
            v.timers.poll_timeout = None;
            // A paused domain's vCPU becomes runnable when it is unpaused.
            if pv.dom.is_running() && v.online {
                v.set_runstate(RUNSTATE_RUNNABLE, now);
                make_runnable(slot, i, now);
            }
        } else if kick.upcall.is_some_and(|u| u.0 as usize == i) && v.wait == Wait::None {
            // Running, or about to: an upcall for a vCPU on another CPU is delivered
            // by that CPU's exit path, which the IPI brings about now.
            if let Some(cpu) = runq().lock().running_on(vref(slot, i)) {
                if cpu != percpu::index() {
                    crate::arch::x86_64::smp::kick(cpu);
                }
            }
        }
    }
}

/// Raises `virq` on `vcpu` of the domain in `slot` and wakes whom it concerns.
fn raise_virq(doms: &mut Domains, slot: usize, virq: u32, vcpu: u32) {
    if let Some(pv) = doms.get_mut(slot) {
        raise_virq_in(pv, slot, virq, vcpu);
    }
}

/// [`raise_virq`] on a domain already at hand.
fn raise_virq_in(pv: &mut PvDomain, slot: usize, virq: u32, vcpu: u32) {
    let mut bits = crate::events::SharedBits::of(slot, pv.dom.shared_info);
    let kick = {
        let tables = crate::events::TABLES.lock();
        tables
            .get(slot)
            .and_then(|t| t.raise_virq(&mut bits, virq, hypercall_abi::types::VcpuId(vcpu)))
    };
    if let Some(k) = kick {
        wake(pv, slot, &k);
    }
}

/// Expires every due timer at `now`: `VIRQ_TIMER` for one-shot and periodic timers,
/// a timed-out poll wakes its vCPU, an expired watchdog shuts its domain down.
fn fire_timers(doms: &mut Domains, now: u64) {
    use xlhv_core::vcpu::Wait;
    let Some(q) = TIMERQ.get(percpu::index()) else {
        return;
    };
    // Each entry at most once: one that fired early goes back at its real deadline.
    // (The count is read first: a guard in the `for` header would live through the
    // loop.)
    let queued = q.lock().len();
    for _ in 0..queued {
        let Some(r) = q.lock().pop_due(now) else {
            break;
        };
        let (slot, i) = (usize::from(r.slot), usize::from(r.vcpu));
        let Some(pv) = doms.get_mut(slot) else {
            continue;
        };
        if !pv.dom.is_running() {
            continue;
        }
        if i == 0 && pv.dom.watchdogs.iter().flatten().any(|&t| t <= now) {
            log::warn!("domain in slot {slot}: watchdog expired");
            destroy(doms, slot, ShutdownReason::Watchdog, None);
            continue;
        }
        if let Some(v) = pv.vcpus.get_mut(i) {
            let live = v.wait == Wait::None;
            if v.timers.next_deadline(live).is_some_and(|t| t <= now) {
                let (virq, poll_timeout) = v.timers.expire(now, live);
                if poll_timeout && matches!(v.wait, Wait::Poll(_)) {
                    v.wait = Wait::None;
                    v.set_runstate(RUNSTATE_RUNNABLE, now);
                    make_runnable(slot, i, now);
                }
                if virq {
                    let vcpu = u32::try_from(i).unwrap_or(u32::MAX);
                    raise_virq_in(pv, slot, hypercall_abi::evtchn::Virq::Timer as u32, vcpu);
                }
            }
        }
        if let Some(pv) = doms.get_mut(slot) {
            sync_timer(pv, slot, i);
        }
    }
}

/// Each CPU's timer queue (`xlhv_core::sched::timerq`, as Xen keeps a vCPU's timers
/// on its CPU): one entry per vCPU whose `processor` it is, at the earliest of its
/// timers and, for vCPU 0, its domain's watchdogs. Taken only under [`DOMAINS`].
/// An entry may be early (a timer was cancelled, the vCPU went to wait, the domain
/// paused): [`fire_timers`] finds nothing due and puts it back where it belongs.
/// It must never be late: every change that brings a deadline forward syncs it
/// ([`sync_timer`]: after an entry that changed timers, at switch-in, at unpause,
/// after firing). So idle domains cost a timer interrupt nothing.
static TIMERQ: [Mutex<TimerQueue>; MAX_CPUS] = [const { Mutex::new(TimerQueue::new()) }; MAX_CPUS];

/// The deadline vCPU `i` of `pv` needs in its CPU's timer queue.
fn timer_deadline(pv: &PvDomain, i: usize) -> Option<u64> {
    if !pv.dom.is_running() {
        return None;
    }
    let v = pv.vcpus.get(i)?;
    let own = v
        .timers
        .next_deadline(v.wait == xlhv_core::vcpu::Wait::None);
    let watchdog = pv
        .dom
        .watchdogs
        .iter()
        .flatten()
        .copied()
        .min()
        .filter(|_| i == 0);
    match (own, watchdog) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Puts vCPU `i` of the domain in `slot` into its CPU's timer queue at the deadline
/// it needs now (or out of it). Never allocates: creation reserved the room.
fn sync_timer(pv: &PvDomain, slot: usize, i: usize) {
    let Some(v) = pv.vcpus.get(i) else { return };
    let cpu = usize::from(v.processor);
    let Some(q) = TIMERQ.get(cpu) else {
        return;
    };
    let mut q = q.lock();
    let before = q.earliest().map(|(t, _)| t);
    if q.set(vref(slot, i), timer_deadline(pv, i)).is_err() {
        log::error!("domain in slot {slot}: vCPU {i}'s timer is not queued");
    }
    let sooner = q
        .earliest()
        .map(|(t, _)| t)
        .is_some_and(|t| before.is_none_or(|b| t < b));
    drop(q);
    // Another CPU's queue got an earlier deadline: it arms its timer again when it
    // reschedules.
    if sooner && cpu != percpu::index() {
        resched(cpu);
    }
}

/// Makes room in every CPU's timer queue for `slots` domain slots and for every vCPU
/// on the run queue (any of them may be on any CPU).
fn reserve_timers(slots: usize) -> Result<(), crate::registry::NoMemory> {
    let vcpus = runq().lock().len();
    for q in TIMERQ
        .iter()
        .take(crate::arch::x86_64::smp::online().max(1))
    {
        let mut q = q.lock();
        let more = vcpus.saturating_sub(q.len());
        q.reserve_slots(slots)
            .and_then(|()| q.reserve(more))
            .map_err(|_| crate::registry::NoMemory)?;
    }
    Ok(())
}

/// Arms this CPU's timer for the end of the current timeslice and the earliest timer
/// of the vCPUs that last ran here (`Vcpu::processor`, as Xen keeps a vCPU's timers
/// on its CPU) and watchdog of their domains: each deadline wakes one CPU, not all.
fn arm_timer(_doms: &Domains) {
    let here = u16::try_from(percpu::index()).unwrap_or(0);
    let mut next = percpu::mine(&SLICE_END).load(core::sync::atomic::Ordering::Relaxed);
    if let Some((t, _)) = TIMERQ
        .get(usize::from(here))
        .and_then(|q| q.lock().earliest())
    {
        next = next.min(t);
    }
    // An interrupt already armed for no later than `next`, and not taken yet, will
    // come in time: its entry looks at the timers and arms again. Programming the
    // APIC is a trip through QEMU's device model under TCG, and most switches only
    // push the slice end further out.
    let ticks = crate::time::ticks();
    let armed = percpu::mine(&ARMED);
    if armed.load().covers(next, ticks, crate::time::now_ns()) {
        return;
    }
    armed.store(next, ticks);
    crate::time::arm((next != u64::MAX).then_some(next));
}

/// The deadline each CPU's APIC timer was last armed for (the interrupt comes no
/// later) and its timer-interrupt count then: a later interrupt means it may have
/// fired.
static ARMED: [ArmedSlot; MAX_CPUS] = [const {
    ArmedSlot {
        deadline: core::sync::atomic::AtomicU64::new(0),
        ticks: core::sync::atomic::AtomicU64::new(u64::MAX),
    }
}; MAX_CPUS];

/// See [`ARMED`].
struct ArmedSlot {
    deadline: core::sync::atomic::AtomicU64,
    ticks: core::sync::atomic::AtomicU64,
}

impl ArmedSlot {
    fn load(&self) -> xlhv_core::time::ArmedTimer {
        use core::sync::atomic::Ordering::Relaxed;
        xlhv_core::time::ArmedTimer {
            deadline: self.deadline.load(Relaxed),
            ticks: self.ticks.load(Relaxed),
        }
    }

    fn store(&self, deadline: u64, ticks: u64) {
        use core::sync::atomic::Ordering::Relaxed;
        self.deadline.store(deadline, Relaxed);
        self.ticks.store(ticks, Relaxed);
    }
}

/// Free frames just before dom0 was built: what a complete teardown of dom0 returns
/// the machine to.
static FREE_BEFORE_DOM0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Frames the domain table and its companions held then (`Domains::slot_frames`): what
/// they grow by afterwards stays taken after every domain is gone.
static SLOT_FRAMES_BEFORE_DOM0: core::sync::atomic::AtomicU64 =
    core::sync::atomic::AtomicU64::new(0);

/// Records the free-frame count before building dom0.
pub fn note_free_before_dom0() {
    let slots = lock_domains().slot_frames();
    SLOT_FRAMES_BEFORE_DOM0.store(slots, core::sync::atomic::Ordering::Relaxed);
    FREE_BEFORE_DOM0.store(
        crate::mm::free_frames(),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// Destroys a stopped domain's memory: drops every page-type and general reference its
/// vCPUs and tables hold, releases each of its frames (and its shared_info) in the frame
/// table and gives them back to the allocator. Returns (frames returned, frames still
/// referenced by someone else).
fn teardown(
    pv: &mut PvDomain,
    mut hooks: crate::mmhw::Hooks,
    eoi_map: Option<xlhv_core::mm::Mfn>,
) -> (u64, u64) {
    use xlhv_core::mm::frame_table::Owner;
    use xlhv_core::mm::mmu::{VcpuMm, relinquish_domain};
    use xlhv_core::mm::page_type::put_page_and_type;
    let id = pv.dom.id;
    // The grants it mapped go first; its own table goes now or when no other domain
    // pins its grants any more.
    crate::gnttab::domain_dying(id, &mut hooks);
    let mut returned = 0;
    let mut busy = 0;
    crate::mmhw::with_mm(id, pv.dom.privileged, &mut hooks, |m| {
        if let Some(f) = eoi_map {
            put_page_and_type(m, f);
        }
        let mut roots: heapless::Vec<VcpuMm, { xlhv_core::domain::MAX_VCPUS }> =
            heapless::Vec::new();
        for v in pv.vcpus.iter_mut() {
            for &g in &v.gdt_frames {
                put_page_and_type(m, g);
            }
            v.gdt_frames.clear();
            if let Some((f, _)) = v.vcpu_info_at.take() {
                put_page_and_type(m, f);
            }
            // Its LDT pages leave this CPU's LDT area before they stop being LDT
            // pages (the domain may have been the last to run here).
            let ldt: heapless::Vec<xlhv_core::mm::Mfn, { xlhv_core::mm::mmu::LDT_PAGES }> =
                v.ldt_frames.iter().flatten().copied().collect();
            crate::arch::x86_64::ldt::unmap_frames(&ldt);
            let _ = roots.push(VcpuMm {
                // A vCPU whose context was never set has no page tables (MFN 0).
                kernel_root: (v.kernel_root.0 != 0).then_some(v.kernel_root),
                user_root: v.user_root.take(),
                ldt_base: v.ldt_base,
                ldt_ents: v.ldt_ents,
                ldt_frames: core::mem::take(&mut v.ldt_frames),
            });
        }
        let _ = relinquish_domain(m, &mut roots);
        // No CPU may keep a translation of the domain's frames once they are reused
        // (another domain may have mapped them: a grant, a foreign mapping).
        crate::arch::x86_64::tlb::flush_everywhere();
        let n = m.ft.len() as u64;
        for mfn in (0..n).map(xlhv_core::mm::Mfn) {
            let mine =
                matches!(m.ft.owner(mfn), Some(Owner::Domain(d) | Owner::XenShared(d)) if d == id);
            if !mine {
                continue;
            }
            // Lock order: frame table, then allocator (as everywhere).
            if m.ft.release(mfn).is_ok() && crate::mm::free_order(mfn, 0).is_ok() {
                crate::mm::m2p_set(mfn, hypercall_abi::xen::INVALID_M2P_ENTRY);
                returned += 1;
            } else {
                busy += 1;
            }
        }
    });
    (returned, busy)
}

/// Domain `slot` stopped (shut down or crashed): its state records why and its
/// vCPUs leave the run queue. A domain the toolstack made is kept, memory and all,
/// until the toolstack destroys it, and dom0 hears of it through `VIRQ_DOM_EXC` (as
/// Xen does); any other domain is torn down at once ([`teardown`]).
fn destroy(doms: &mut Domains, slot: usize, reason: ShutdownReason, why: Option<CrashReason>) {
    let Some(pv) = doms.get_mut(slot) else { return };
    let id = pv.dom.id;
    if matches!(pv.dom.state, DomainState::Shutdown(_)) {
        return;
    }
    pv.dom
        .console
        .flush(|line| crate::console::guest_line(id, line));
    let reason = match (reason, pv.dom.shutdown_code) {
        (ShutdownReason::Crash, _) => ShutdownReason::Crash,
        (_, Some(code)) => code,
        (r, None) => r,
    };
    pv.dom.state = DomainState::Shutdown(reason);
    match why {
        Some(why) => log::error!("domain {} crashed: {why}", id.0),
        None => log::info!("domain {} shut down: {reason:?}", id.0),
    }
    if pv.dom.toolstack && !pv.dom.privileged {
        let now = crate::time::now_ns();
        let mut rq = runq().lock();
        for (i, v) in pv.vcpus.iter_mut().enumerate() {
            make_unrunnable(&mut rq, slot, i, now);
            v.set_runstate(hypercall_abi::vcpu::RUNSTATE_OFFLINE, now);
        }
        drop(rq);
        log::info!("domain {} kept until the toolstack destroys it", id.0);
        if let Some(d0) = doms.slot_of(DomId(0)) {
            raise_virq(doms, d0, hypercall_abi::evtchn::Virq::DomExc as u32, 0);
        }
        return;
    }
    teardown_domain(doms, slot);
}

/// Takes domain `slot` apart: it leaves the run queue, its event channels close
/// (peers see them unbound), every frame goes back, the slot is freed, and dom0 hears
/// of it through `VIRQ_DOM_EXC`. dom0's teardown takes every other domain with it and
/// ends the machine, with an exit code that tells poweroff from crash.
fn teardown_domain(doms: &mut Domains, slot: usize) {
    let Some(pv) = doms.get_mut(slot) else { return };
    let id = pv.dom.id;
    let reason = match pv.dom.state {
        DomainState::Shutdown(r) => r,
        _ => ShutdownReason::Poweroff,
    };
    if pv.dom.privileged && !STOPPING.swap(true, core::sync::atomic::Ordering::AcqRel) {
        // The machine stops with dom0: no other CPU may run a guest from here on.
        crate::arch::x86_64::smp::stop_others();
    }
    // Not while another CPU runs it (its CR3, its frames): that CPU is asked to switch
    // away, and the teardown runs again at the end of a later entry.
    if !STOPPING.load(core::sync::atomic::Ordering::Acquire)
        && switch_out_elsewhere(slot, pv.vcpus.len())
    {
        push_pending(&PENDING_RETRY, slot);
        return;
    }
    {
        let mut rq = runq().lock();
        for i in 0..pv.vcpus.len() {
            rq.remove(vref(slot, i));
        }
        note_current(&rq);
    }
    for q in &TIMERQ {
        q.lock()
            .remove_slot(u16::try_from(slot).unwrap_or(u16::MAX));
    }
    // Close its ports (peers revert to unbound) before its shared_info goes away.
    {
        let mut tables = crate::events::TABLES.lock();
        let mut ev = crate::events::HwEvtchn {
            tables: &mut tables,
        };
        xlhv_core::evtchn::destroy_domain(&mut ev, id);
    }
    // Its pirqs go (unbound, unmapped) now that its ports are closed.
    let eoi_map = crate::irq::domain_destroyed(id);
    if doms.get_mut(slot).is_some_and(|pv| pv.dom.privileged) {
        // The machine stops with dom0: tear the other domains down first, so that
        // the leak check below counts every frame.
        for other in (0..doms.slots.len()).filter(|&o| o != slot) {
            if let Some(o) = doms.get_mut(other) {
                // No toolstack is left to own it: it goes now.
                o.dom.toolstack = false;
                destroy(doms, other, ShutdownReason::Poweroff, None);
                teardown_domain(doms, other);
            }
        }
    }
    // Every other domain still exists for the memory model: a frame of theirs this
    // one mapped (a grant) must not be taken for an orphan when it lets go.
    let hooks = crate::mmhw::Hooks::table(id, None);
    let grant_frames = crate::gnttab::guest_frames(id);
    let Some(pv) = doms.get_mut(slot) else { return };
    let privileged = pv.dom.privileged;
    crate::events::set_vcpu_info_at(slot, None, None);
    let (returned, busy) = teardown(pv, hooks, eoi_map);
    let tot_pages = pv.dom.tot_pages;
    crate::mmhw::add_zombie(id, busy);
    crate::mmhw::forget_iomem(id);
    // The slot goes now, and with it the vCPUs on the hypervisor's heap, so that the
    // count below sees every frame back.
    if let Some(s) = doms.slots.get_mut(slot) {
        crate::registry::clear(slot, id);
        *s = None;
    }
    crate::events::release(slot);
    let free = crate::mm::free_frames();
    log::info!(
        "domain {} destroyed: {returned} frames returned, {busy} still referenced; {free} frames free",
        id.0
    );
    if !privileged {
        // Its pages, its shared_info frame and its grant-table frames.
        let held = tot_pages + 1 + grant_frames;
        if returned == held && busy == 0 {
            log::info!("memory: all {returned} frames of domain {} are back", id.0);
        } else if returned + busy == held {
            log::info!(
                "memory: {returned} frames of domain {} are back; {busy} still referenced \
                 elsewhere come back when released (its id stays taken until then)",
                id.0
            );
        } else {
            log::error!(
                "memory: domain {} held {held} frames, {returned} came back: frames leaked",
                id.0
            );
        }
    }
    if privileged {
        let before = FREE_BEFORE_DOM0.load(core::sync::atomic::Ordering::Relaxed);
        let grown = doms
            .slot_frames()
            .saturating_sub(SLOT_FRAMES_BEFORE_DOM0.load(core::sync::atomic::Ordering::Relaxed));
        if free + grown == before {
            log::info!(
                "memory: all of dom0's frames are back ({free} free, as before it was built, \
                 with {grown} kept by the domain table's growth)"
            );
        } else {
            log::error!(
                "memory: {free} frames free after dom0 ({grown} kept by the domain table's \
                 growth), {before} before it was built: frames leaked"
            );
        }
        let code = match reason {
            ShutdownReason::Poweroff | ShutdownReason::Suspend => QemuExit::Poweroff,
            ShutdownReason::Reboot | ShutdownReason::SoftReset => QemuExit::Reboot,
            ShutdownReason::Crash | ShutdownReason::Watchdog => QemuExit::Dom0Crash,
        };
        crate::irq::report();
        log::info!("dom0 stopped ({reason:?}): stopping the machine");
        cpu::qemu_exit(code);
    }
    if let Some(d0) = doms.slot_of(DomId(0)) {
        raise_virq(doms, d0, hypercall_abi::evtchn::Virq::DomExc as u32, 0);
    }
}
