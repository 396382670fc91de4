//! The scheduler: one [`RunQueue`] that every physical CPU schedules from (as Xen's
//! credit2 shares one run queue among the CPUs of a socket; these machines have one),
//! sharing the CPUs among the runnable vCPUs in proportion to their weights, in the
//! spirit of Xen's credit scheduler.
//!
//! Each vCPU has a *virtual runtime*: the CPU time it was charged, scaled by
//! `DEFAULT_WEIGHT / weight` (a vCPU of weight 512 ages half as fast as one of 256).
//! A CPU that schedules runs the runnable vCPU with the smallest virtual runtime that
//! no other CPU runs, for a timeslice ([`DEFAULT_TIMESLICE_NS`], 10 ms), so over time
//! CPU shares follow the weights, as credits do in Xen. Like Xen's `BOOST` priority, a
//! vCPU that wakes from a wait gets to run promptly: its virtual runtime is raised to
//! no less than one timeslice behind the most-behind runnable vCPU (a sleeper cannot
//! bank unbounded credit), which puts it ahead of CPU hogs, and [`RunQueue::wake`]
//! names the CPU that should reschedule: an idle one if there is one (idle CPUs pull
//! work), else the one running the vCPU furthest ahead. Xen's credit scheduler uses a
//! 30 ms slice with a 1 ms rate limit; the shorter slice here keeps timer-driven
//! guests within a tick of their period next to hogs.
//!
//! **Soft affinity** (Xen's `cpus_soft`) is a preference, as in credit2: a waking
//! vCPU goes to an idle CPU of its soft affinity before any other idle CPU, and
//! when it must preempt, to a CPU in its soft affinity whose vCPU is not in its own
//! ([`RunQueue::wake`]); a vCPU running outside its soft affinity leaves the CPU
//! at its next schedule when a CPU of its soft affinity idles, and meanwhile gets
//! a slice end so that this schedule comes ([`RunQueue::schedule`]). An idle CPU,
//! or one it prefers, that was asked to reschedule for a vCPU (*tickled*) gets it:
//! other CPUs leave it to that CPU until it schedules, as credit2's `tickled_cpu`
//! does (a vCPU sent to preempt a busy CPU it does not prefer is not held back).
//!
//! **Scale**: the queue holds every vCPU of every domain, mostly blocked ones, so
//! the operations run per hypercall, interrupt or context switch look up a vCPU
//! through an index (by domain slot, then vCPU) and scan only the runnable vCPUs:
//! their cost does not grow with the blocked ones.
//!
//! Only [`RunQueue::add`] and [`RunQueue::reserve`] allocate, when a domain is
//! created, and they fail ([`SchedError::Full`]) rather than abort when memory runs
//! out. Nothing here panics; there is no global "current": each CPU's is
//! [`RunQueue::current`] of its index.

#[cfg(test)]
mod scale_tests;
#[cfg(test)]
mod tests;

pub mod haltpoll;
pub mod timerq;

use alloc::vec::Vec;
use core::fmt;

/// Xen credit's default weight.
pub const DEFAULT_WEIGHT: u16 = 256;
/// Default timeslice: 10 ms.
pub const DEFAULT_TIMESLICE_NS: u64 = 10_000_000;
/// Physical CPUs one queue serves at most.
pub const MAX_CPUS: usize = 8;

/// vCPU numbers per domain slot in the index: the most vCPUs a domain has.
pub const VCPU_STRIDE: usize = crate::domain::MAX_VCPUS;

/// A schedulable vCPU: the domain's slot in the hypervisor's table and the vCPU index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRef {
    /// Domain slot.
    pub slot: u16,
    /// vCPU index in the domain.
    pub vcpu: u16,
}

impl VcpuRef {
    /// Its cell in a flat per-vCPU index (`slot * VCPU_STRIDE + vcpu`, as the run
    /// queue and the timer queues keep); `None` for a vCPU number past the stride.
    pub fn cell(self) -> Option<usize> {
        let k = usize::from(self.vcpu);
        (k < VCPU_STRIDE).then(|| usize::from(self.slot) * VCPU_STRIDE + k)
    }
}

/// Why the scheduler refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedError {
    /// Weight 0 (Xen: -EINVAL).
    ZeroWeight,
    /// The vCPU is already on the queue.
    Exists(VcpuRef),
    /// No such vCPU on the queue.
    Unknown(VcpuRef),
    /// Out of memory for the run queue.
    Full,
    /// An affinity with none of the queue's CPUs (Xen: -EINVAL).
    NoCpu,
    /// A vCPU number past the most a domain has ([`VCPU_STRIDE`]).
    VcpuRange(VcpuRef),
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::ZeroWeight => write!(f, "weight must be 1 to 65535"),
            SchedError::Exists(v) => write!(f, "vCPU {}.{} is already queued", v.slot, v.vcpu),
            SchedError::Unknown(v) => write!(f, "vCPU {}.{} is not queued", v.slot, v.vcpu),
            SchedError::Full => write!(f, "out of memory for the run queue"),
            SchedError::NoCpu => write!(f, "the affinity names no CPU that runs guests"),
            SchedError::VcpuRange(v) => write!(
                f,
                "vCPU {}.{} is past the most a domain has ({VCPU_STRIDE})",
                v.slot, v.vcpu
            ),
        }
    }
}

/// What [`RunQueue::schedule`] decided for one CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run; `None` = idle.
    pub next: Option<VcpuRef>,
    /// When to call `schedule` again at the latest (end of the timeslice); `None` when
    /// no other vCPU waits to run, so nothing needs preempting.
    pub slice_end_ns: Option<u64>,
    /// Another CPU that must reschedule now: an idle CPU of the soft affinity of the
    /// vCPU this one ran, which goes there.
    pub kick: Option<usize>,
}

#[derive(Clone, Copy, Debug)]
struct Entity {
    v: VcpuRef,
    weight: u16,
    vruntime: u64,
    runtime_ns: u64,
    /// Its place in [`RunQueue::run`] while runnable; [`NONE`] while not.
    run_pos: u32,
    /// Tie-break: lower runs first (the order vCPUs became runnable or yielded).
    seq: u64,
    /// Woken and not yet run: wins ties (Xen's BOOST).
    boost: bool,
    /// The CPUs it may run on (bit n: CPU n; Xen's hard affinity).
    affinity: u64,
    /// The CPUs it prefers (Xen's soft affinity), as set.
    soft: u64,
}

impl Entity {
    /// Whether it may run.
    fn runnable(&self) -> bool {
        self.run_pos != NONE
    }
}

/// No place: an absent vCPU in [`RunQueue::index`], a blocked one's `run_pos`.
const NONE: u32 = u32::MAX;

/// Every CPU: the affinity a vCPU starts with.
pub const ALL_CPUS: u64 = u64::MAX;

/// What one physical CPU runs.
#[derive(Clone, Copy, Debug)]
struct Cpu {
    current: Option<VcpuRef>,
    picked_at: u64,
    /// The vCPU this CPU was asked to reschedule for (*tickled*), until it
    /// schedules.
    tickled_for: Option<VcpuRef>,
}

/// The run queue of the machine's CPUs and the vCPU each runs.
#[derive(Debug)]
pub struct RunQueue {
    /// Every vCPU, in no order.
    entities: Vec<Entity>,
    /// `index[slot * VCPU_STRIDE + vcpu]`: that vCPU's place in `entities`, or
    /// [`NONE`]. One flat vector (128 bytes a slot), grown in `add` only.
    index: Vec<u32>,
    /// The places in `entities` of the runnable vCPUs, in no order: what the hot
    /// paths scan. Its capacity is kept at least `entities.len()`, so making a vCPU
    /// runnable never allocates.
    run: Vec<u32>,
    cpus: [Cpu; MAX_CPUS],
    nr_cpus: usize,
    timeslice: u64,
    seq: u64,
    /// The least virtual runtime of the runnable vCPUs, as last seen, and never
    /// lowered (CFS's `min_vruntime`): where a vCPU that is added, or wakes when
    /// nothing else is runnable, is placed, so that neither it nor those that ran
    /// before it gain from the time the queue was empty. Sampled when a vCPU
    /// leaves the runnable set (`sleep`, `remove`) and at `wake` and `add`: the
    /// runnable vCPUs' virtual runtimes only grow in between.
    min_vr: u64,
    /// vCPUs with a soft map other than every CPU: with none, scheduling skips
    /// the soft-affinity work.
    soft_maps: usize,
    /// The CPUs with a `tickled_for` (bit n: CPU n).
    tickled: u64,
}

impl Default for RunQueue {
    fn default() -> Self {
        Self::new()
    }
}

/// `ns` of CPU time in virtual time for `weight`.
fn scaled(ns: u64, weight: u16) -> u64 {
    let v = u128::from(ns) * u128::from(DEFAULT_WEIGHT) / u128::from(weight.max(1));
    u64::try_from(v).unwrap_or(u64::MAX)
}

impl RunQueue {
    /// An empty queue for one CPU, idle.
    pub const fn new() -> Self {
        RunQueue {
            entities: Vec::new(),
            index: Vec::new(),
            run: Vec::new(),
            cpus: [Cpu {
                current: None,
                picked_at: 0,
                tickled_for: None,
            }; MAX_CPUS],
            nr_cpus: 1,
            timeslice: DEFAULT_TIMESLICE_NS,
            seq: 0,
            min_vr: 0,
            soft_maps: 0,
            tickled: 0,
        }
    }

    /// Lets CPUs `0..n` (at most [`MAX_CPUS`]) schedule from this queue.
    pub fn set_cpus(&mut self, n: usize) {
        self.nr_cpus = n.clamp(1, MAX_CPUS);
    }

    /// How many CPUs schedule from this queue.
    pub fn cpus(&self) -> usize {
        self.nr_cpus
    }

    fn find(&self, v: VcpuRef) -> Option<usize> {
        let i = *self.index.get(v.cell()?)?;
        (i != NONE).then_some(i as usize)
    }

    /// Points the index entry of `v` (which exists) at `i`.
    fn set_index(&mut self, v: VcpuRef, i: u32) {
        if let Some(p) = v.cell().and_then(|at| self.index.get_mut(at)) {
            *p = i;
        }
    }

    /// The runnable vCPUs.
    fn runnables(&self) -> impl Iterator<Item = &Entity> + '_ {
        self.run
            .iter()
            .filter_map(|&i| self.entities.get(i as usize))
    }

    /// Puts entity `i` in the runnable set (if not there yet). Never allocates:
    /// `add` reserved the room.
    fn make_runnable(&mut self, i: usize) {
        let (Ok(at), Ok(idx)) = (u32::try_from(self.run.len()), u32::try_from(i)) else {
            return;
        };
        let Some(e) = self.entities.get_mut(i) else {
            return;
        };
        if e.run_pos == NONE {
            e.run_pos = at;
            self.run.push(idx);
        }
    }

    /// Takes entity `i` out of the runnable set (if there).
    fn make_unrunnable(&mut self, i: usize) {
        let Some(e) = self.entities.get_mut(i) else {
            return;
        };
        let at = core::mem::replace(&mut e.run_pos, NONE);
        let pos = at as usize;
        if pos >= self.run.len() {
            return;
        }
        self.run.swap_remove(pos);
        if let Some(&moved) = self.run.get(pos)
            && let Some(m) = self.entities.get_mut(moved as usize)
        {
            m.run_pos = at;
        }
    }

    /// Makes room for domain slots `0..slots` in the index and for at least one vCPU
    /// per slot (the hypervisor calls it as its domain table grows, so that domains
    /// of one vCPU never make the queue allocate). `Full` if memory runs out.
    pub fn reserve_slots(&mut self, slots: usize) -> Result<(), SchedError> {
        self.reserve(slots.saturating_sub(self.entities.len()))?;
        let len = slots.saturating_mul(VCPU_STRIDE);
        if self.index.len() < len {
            self.index
                .try_reserve_exact(len - self.index.len())
                .map_err(|_| SchedError::Full)?;
            self.index.resize(len, NONE);
        }
        Ok(())
    }

    /// vCPUs on the queue, runnable or not.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// Whether no vCPU is on the queue.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// The bytes of each of the queue's heap blocks (what it keeps for reuse when
    /// vCPUs go: the hypervisor counts them as its own).
    pub fn allocations(&self) -> [usize; 3] {
        [
            self.entities.capacity() * core::mem::size_of::<Entity>(),
            self.index.capacity() * core::mem::size_of::<u32>(),
            self.run.capacity() * core::mem::size_of::<u32>(),
        ]
    }

    /// Makes room for `n` more vCPUs, so that as many [`add`](Self::add)s allocate
    /// nothing but the index entries of new domain slots and vCPU numbers. `Full` if
    /// memory runs out.
    pub fn reserve(&mut self, n: usize) -> Result<(), SchedError> {
        let want = self
            .entities
            .len()
            .checked_add(n)
            .filter(|&w| w < NONE as usize)
            .ok_or(SchedError::Full)?;
        self.entities.try_reserve(n).map_err(|_| SchedError::Full)?;
        self.run
            .try_reserve(want.saturating_sub(self.run.len()))
            .map_err(|_| SchedError::Full)
    }

    /// Makes room for one more vCPU, `v`: in `entities`, `run` and the index.
    fn grow_for(&mut self, v: VcpuRef) -> Result<(), SchedError> {
        let at = v.cell().ok_or(SchedError::VcpuRange(v))?;
        self.reserve(1)?;
        let len = (usize::from(v.slot) + 1) * VCPU_STRIDE;
        if self.index.len() <= at {
            self.index
                .try_reserve(len - self.index.len())
                .map_err(|_| SchedError::Full)?;
            self.index.resize(len, NONE);
        }
        Ok(())
    }

    fn entity(&self, v: VcpuRef) -> Option<&Entity> {
        self.find(v).and_then(|i| self.entities.get(i))
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sets the timeslice (at least 100 µs).
    pub fn set_timeslice(&mut self, ns: u64) {
        self.timeslice = ns.max(100_000);
    }

    /// Adds vCPU `v` with `weight`, not runnable. The one place the queue grows:
    /// `Full` (and nothing changed) if memory runs out.
    pub fn add(&mut self, v: VcpuRef, weight: u16, _now: u64) -> Result<(), SchedError> {
        if weight == 0 {
            return Err(SchedError::ZeroWeight);
        }
        if self.find(v).is_some() {
            return Err(SchedError::Exists(v));
        }
        self.grow_for(v)?;
        let i = u32::try_from(self.entities.len()).map_err(|_| SchedError::Full)?;
        let vruntime = self.floor_base();
        let seq = self.next_seq();
        // Within the room `grow_for` reserved: no allocation.
        self.entities.push(Entity {
            v,
            weight,
            vruntime,
            runtime_ns: 0,
            run_pos: NONE,
            seq,
            boost: false,
            affinity: ALL_CPUS,
            soft: ALL_CPUS,
        });
        self.set_index(v, i);
        Ok(())
    }

    /// Removes `v` (its domain is gone). Returns the CPU it was current on, where
    /// nothing is current now.
    pub fn remove(&mut self, v: VcpuRef) -> Option<usize> {
        self.floor_base();
        if let Some(i) = self.find(v).filter(|&i| i < self.entities.len())
            && let Ok(at) = u32::try_from(i)
        {
            self.make_unrunnable(i);
            self.set_index(v, NONE);
            let e = self.entities.swap_remove(i);
            if e.soft != ALL_CPUS {
                self.soft_maps = self.soft_maps.saturating_sub(1);
            }
            // The last entity moved to `i`.
            if let Some(&Entity { v: m, run_pos, .. }) = self.entities.get(i) {
                self.set_index(m, at);
                if let Some(p) = self.run.get_mut(run_pos as usize) {
                    *p = at;
                }
            }
        }
        self.untickle(v);
        let on = self.running_on(v);
        if let Some(c) = on.and_then(|c| self.cpus.get_mut(c)) {
            c.current = None;
        }
        on
    }

    /// The vCPU on CPU `cpu`.
    pub fn current(&self, cpu: usize) -> Option<VcpuRef> {
        self.cpus.get(cpu).and_then(|c| c.current)
    }

    /// The CPU that `v` is current on, if any.
    pub fn running_on(&self, v: VcpuRef) -> Option<usize> {
        self.cpus
            .iter()
            .take(self.nr_cpus)
            .position(|c| c.current == Some(v))
    }

    /// Whether `v` may run.
    pub fn is_runnable(&self, v: VcpuRef) -> bool {
        self.entity(v).is_some_and(Entity::runnable)
    }

    /// CPU time charged to `v` so far (ns).
    pub fn runtime_ns(&self, v: VcpuRef) -> u64 {
        self.entity(v).map_or(0, |e| e.runtime_ns)
    }

    /// The weight of `v`.
    pub fn weight(&self, v: VcpuRef) -> Option<u16> {
        self.entity(v).map(|e| e.weight)
    }

    /// Changes the weight of `v`.
    pub fn set_weight(&mut self, v: VcpuRef, weight: u16) -> Result<(), SchedError> {
        if weight == 0 {
            return Err(SchedError::ZeroWeight);
        }
        let i = self.find(v).ok_or(SchedError::Unknown(v))?;
        if let Some(e) = self.entities.get_mut(i) {
            e.weight = weight;
        }
        Ok(())
    }

    /// The CPUs `v` may run on (bit n: CPU n), as set.
    pub fn affinity(&self, v: VcpuRef) -> Option<u64> {
        self.entity(v).map(|e| e.affinity)
    }

    /// Sets the CPUs `v` may run on (Xen's hard affinity; bit n: CPU n). A mask with
    /// none of the queue's CPUs is refused (`NoCpu`, Xen's -EINVAL) and changes
    /// nothing. Returns the CPU that must reschedule now: the one that runs `v`
    /// when `v` may no longer run there.
    pub fn set_affinity(&mut self, v: VcpuRef, cpus: u64) -> Result<Option<usize>, SchedError> {
        if cpus & self.online_mask() == 0 {
            return Err(SchedError::NoCpu);
        }
        let i = self.find(v).ok_or(SchedError::Unknown(v))?;
        if let Some(e) = self.entities.get_mut(i) {
            e.affinity = cpus;
        }
        self.untickle(v);
        Ok(self.running_on(v).filter(|&c| cpus & (1 << c) == 0))
    }

    /// The CPUs `v` prefers (bit n: CPU n), as set.
    pub fn soft_affinity(&self, v: VcpuRef) -> Option<u64> {
        self.entity(v).map(|e| e.soft)
    }

    /// Sets the CPUs `v` prefers (Xen's soft affinity). Any mask is taken: one with
    /// no CPU of the hard affinity, or with all of them, expresses no preference
    /// (Xen's `has_soft_affinity`). `v` moves at its CPU's next schedule.
    pub fn set_soft_affinity(&mut self, v: VcpuRef, cpus: u64) -> Result<(), SchedError> {
        let i = self.find(v).ok_or(SchedError::Unknown(v))?;
        if let Some(e) = self.entities.get_mut(i) {
            match (e.soft == ALL_CPUS, cpus == ALL_CPUS) {
                (true, false) => self.soft_maps += 1,
                (false, true) => self.soft_maps -= 1,
                _ => {}
            }
            e.soft = cpus;
        }
        Ok(())
    }

    /// No CPU is tickled for `v` any more.
    fn untickle(&mut self, v: VcpuRef) {
        if self.tickled == 0 {
            return;
        }
        for (i, c) in self.cpus.iter_mut().enumerate() {
            if c.tickled_for == Some(v) {
                c.tickled_for = None;
                self.tickled &= !(1 << i);
            }
        }
    }

    /// Tickles CPU `cpu` for `v`.
    fn tickle(&mut self, cpu: usize, v: VcpuRef) {
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.tickled_for = Some(v);
            self.tickled |= 1 << cpu;
        }
    }

    /// The CPUs `e` prefers among those it may run on, if that is a real preference:
    /// some but not all of them.
    fn preferred(&self, e: &Entity) -> Option<u64> {
        let hard = e.affinity & self.online_mask();
        let soft = e.soft & hard;
        (soft != 0 && soft != hard).then_some(soft)
    }

    /// Whether `e` would rather run on `cpu` (true without a preference).
    fn prefers(&self, e: &Entity, cpu: usize) -> bool {
        self.preferred(e)
            .is_none_or(|m| cpu < 64 && m & (1 << cpu) != 0)
    }

    /// The CPUs tickled for some vCPU and not yet rescheduled.
    fn tickled_mask(&self) -> u64 {
        self.tickled
    }

    /// An idle CPU of `mask` that nobody tickled: `here` if it is one, else the
    /// lowest.
    fn idle_in(&self, mask: u64, here: usize) -> Option<usize> {
        let tickled = self.tickled_mask();
        let ok = |c: usize| {
            c < self.nr_cpus
                && c < 64
                && mask & (1 << c) != 0
                && tickled & (1 << c) == 0
                && self.current(c).is_none()
        };
        if ok(here) {
            return Some(here);
        }
        (0..self.nr_cpus).find(|&c| ok(c))
    }

    /// The queue's CPUs as a mask.
    pub fn online_mask(&self) -> u64 {
        if self.nr_cpus >= 64 {
            u64::MAX
        } else {
            (1u64 << self.nr_cpus) - 1
        }
    }

    /// Whether `e` may run on CPU `cpu`.
    fn allowed(e: &Entity, cpu: usize) -> bool {
        cpu < 64 && e.affinity & (1 << cpu) != 0
    }

    /// Charges CPU `cpu`'s current vCPU for the time since it was picked (or last
    /// charged).
    fn charge(&mut self, cpu: usize, now: u64) {
        let Some(c) = self.cpus.get_mut(cpu) else {
            return;
        };
        let ran = now.saturating_sub(c.picked_at);
        c.picked_at = now.max(c.picked_at);
        let Some(i) = c.current.and_then(|v| self.find(v)) else {
            return;
        };
        if let Some(e) = self.entities.get_mut(i) {
            e.boost = false;
            e.runtime_ns = e.runtime_ns.saturating_add(ran);
            e.vruntime = e.vruntime.saturating_add(scaled(ran, e.weight));
        }
    }

    /// The smallest virtual runtime among runnable vCPUs.
    fn min_vruntime(&self) -> Option<u64> {
        self.runnables().map(|e| e.vruntime).min()
    }

    /// The monotonic minimum (`min_vr`), brought up to the runnable vCPUs' least
    /// virtual runtime first.
    fn floor_base(&mut self) -> u64 {
        if let Some(m) = self.min_vruntime() {
            self.min_vr = self.min_vr.max(m);
        }
        self.min_vr
    }

    /// Whether a runnable vCPU other than `but` is current on no CPU.
    fn someone_waits(&self, but: Option<VcpuRef>) -> bool {
        self.runnables()
            .any(|e| Some(e.v) != but && self.running_on(e.v).is_none())
    }

    /// Makes `v` runnable; `here` is the CPU asking. Returns the CPU that should
    /// reschedule now: an idle one (`here` if it idles: no IPI needed), else the one
    /// whose vCPU `v` should preempt; or, if `v` preempts nobody and
    /// nobody waited before it, the one running the vCPU furthest ahead, so that a
    /// timeslice end is armed for `v`. `None` if `v` was runnable already, is current
    /// somewhere, or others wait before it (a slice end is armed for them).
    pub fn wake(&mut self, v: VcpuRef, now: u64, here: usize) -> Option<usize> {
        let i = self.find(v)?;
        if self.entities.get(i).is_none_or(Entity::runnable) {
            return None;
        }
        for c in 0..self.nr_cpus {
            self.charge(c, now);
        }
        let waited = self.someone_waits(Some(v));
        let floor = self.floor_base().saturating_sub(self.timeslice);
        let seq = self.next_seq();
        let e = self.entities.get_mut(i)?;
        e.vruntime = e.vruntime.max(floor);
        e.seq = seq;
        e.boost = true;
        let mine = e.vruntime;
        let affinity = e.affinity;
        let me = *e;
        self.make_runnable(i);
        if self.running_on(v).is_some() {
            return None;
        }
        let cpu = self.pick_for_wake(&me, mine, affinity, waited, here);
        // An idle CPU, or one it prefers, keeps it from the others until it
        // schedules. A busy CPU named to be preempted does not: any CPU that
        // schedules first may run it (a vCPU that wakes its peer and then blocks
        // hands over its CPU at once, and the preempted vCPU keeps its CPU).
        if let Some(c) = cpu
            && (self.current(c).is_none()
                || self
                    .preferred(&me)
                    .is_some_and(|m| c < 64 && m & (1 << c) != 0))
        {
            self.tickle(c, v);
        }
        cpu
    }

    /// Where woken `me` (virtual runtime `mine`, hard affinity `affinity`) should
    /// go; `waited`: others waited before it. See [`RunQueue::wake`].
    fn pick_for_wake(
        &self,
        me: &Entity,
        mine: u64,
        affinity: u64,
        waited: bool,
        here: usize,
    ) -> Option<usize> {
        let may = |c: usize| c < 64 && affinity & (1 << c) != 0;
        // An idle CPU it prefers, then any idle CPU it may use.
        if let Some(c) = self
            .preferred(me)
            .and_then(|soft| self.idle_in(soft, here))
            .or_else(|| self.idle_in(affinity, here))
        {
            return Some(c);
        }
        // The CPU whose vCPU is furthest ahead (one that stopped being runnable
        // counts as infinitely far, as does a tickled idle CPU).
        let ahead = |c: usize| {
            self.current(c)
                .and_then(|cur| self.entity(cur))
                .filter(|e| e.runnable())
                .map_or(u64::MAX, |e| e.vruntime)
        };
        // Among CPUs whose vCPU it may preempt, credit2's `tickle_score` classes
        // first: one it prefers whose vCPU does not prefer it, then one both or
        // neither prefer, then one only the running vCPU prefers.
        let class = |c: usize| {
            let cur_prefers = self
                .current(c)
                .and_then(|cur| self.entity(cur))
                .is_none_or(|e| self.prefers(e, c));
            match (self.prefers(me, c), cur_prefers) {
                (true, false) => 2,
                (false, true) => 0,
                _ => 1,
            }
        };
        let cpus = || (0..self.nr_cpus).filter(|&c| may(c));
        if let Some(c) = cpus()
            .filter(|&c| mine < ahead(c))
            .max_by_key(|&c| (class(c), ahead(c), core::cmp::Reverse(c)))
        {
            return Some(c);
        }
        // Nobody to preempt: if nobody waited before it either, the CPU furthest
        // ahead arms a slice end for it.
        let victim = cpus().max_by_key(|&c| (ahead(c), core::cmp::Reverse(c)))?;
        (!waited).then_some(victim)
    }

    /// `v` cannot run (blocked, paused, down). If it is current somewhere it stays so
    /// until that CPU's next [`schedule`](Self::schedule), which picks another.
    pub fn sleep(&mut self, v: VcpuRef, now: u64) {
        if let Some(c) = self.running_on(v) {
            self.charge(c, now);
        }
        // Runnable vCPUs' virtual runtimes only grow: the minimum can only be lost
        // when one leaves the runnable set, so it is sampled here (and on `remove`).
        self.floor_base();
        if let Some(i) = self.find(v) {
            self.make_unrunnable(i);
        }
        self.untickle(v);
    }

    /// `v` gives up the rest of its slice: it goes behind every other runnable vCPU.
    pub fn yield_now(&mut self, v: VcpuRef, now: u64) {
        if let Some(c) = self.running_on(v) {
            self.charge(c, now);
        }
        let others_max = self
            .runnables()
            .filter(|e| e.v != v)
            .map(|e| e.vruntime)
            .max();
        let seq = self.next_seq();
        if let Some(e) = self.find(v).and_then(|i| self.entities.get_mut(i)) {
            if let Some(m) = others_max {
                e.vruntime = e.vruntime.max(m);
            }
            e.seq = seq;
        }
    }

    /// Charges CPU `cpu`'s current vCPU and picks its next: the runnable vCPU with the
    /// least virtual runtime that no other CPU runs and no other CPU was tickled for,
    /// or idle. The current vCPU, if it runs outside its soft affinity while a CPU
    /// of it idles, is left to that CPU (named in [`Decision::kick`]).
    pub fn schedule(&mut self, cpu: usize, now: u64) -> Decision {
        if cpu >= self.nr_cpus {
            return Decision {
                next: None,
                slice_end_ns: None,
                kick: None,
            };
        }
        self.charge(cpu, now);
        // This CPU answers the tickle it had; vCPUs other CPUs were tickled for
        // are theirs.
        if self.tickled != 0 {
            if let Some(c) = self.cpus.get_mut(cpu) {
                c.tickled_for = None;
            }
            self.tickled &= !(1 << cpu);
        }
        let held = self.tickled != 0;
        let soft = self.soft_maps != 0;
        let kick = if soft { self.soft_move(cpu) } else { None };
        let next = if soft || held {
            self.pick(cpu, kick.and(self.current(cpu)), held, soft)
        } else {
            // Nobody held for another CPU, nobody with a preference.
            self.runnables()
                .filter(|e| Self::allowed(e, cpu))
                .filter(|e| self.running_on(e.v).is_none_or(|c| c == cpu))
                .min_by_key(|e| (e.vruntime, !e.boost, e.seq))
                .map(|e| e.v)
        };
        if let Some(c) = self.cpus.get_mut(cpu) {
            c.current = next;
            c.picked_at = now;
        }
        let others_wait = self
            .runnables()
            .any(|e| Some(e.v) != next && Self::allowed(e, cpu) && self.running_on(e.v).is_none());
        // A vCPU outside its soft affinity gets a slice end: its next schedule
        // moves it if a CPU it prefers idles by then.
        let astray = soft
            && next
                .and_then(|n| self.entity(n))
                .is_some_and(|e| !self.prefers(e, cpu));
        Decision {
            next,
            slice_end_ns: (others_wait || astray).then(|| now.saturating_add(self.timeslice)),
            kick,
        }
    }

    /// [`RunQueue::schedule`]'s pick for CPU `cpu` with tickles (`held`) or soft maps
    /// (`soft`) about: not `leaving`, nor a vCPU another CPU was tickled for; one that
    /// prefers `cpu` first if it is within a timeslice of the least virtual runtime
    /// (two vCPUs preempted at once come back each to the CPU it prefers).
    fn pick(
        &self,
        cpu: usize,
        leaving: Option<VcpuRef>,
        held: bool,
        soft: bool,
    ) -> Option<VcpuRef> {
        let candidates = || {
            self.runnables()
                .filter(move |e| Self::allowed(e, cpu) && Some(e.v) != leaving)
                .filter(move |e| self.running_on(e.v).is_none_or(|c| c == cpu))
                .filter(move |e| !held || !self.cpus.iter().any(|c| c.tickled_for == Some(e.v)))
        };
        let first = candidates().min_by_key(|e| (e.vruntime, !e.boost, e.seq));
        first
            .filter(|f| soft && !self.prefers(f, cpu))
            .and_then(|f| {
                candidates()
                    .filter(|e| {
                        self.preferred(e).is_some()
                            && self.prefers(e, cpu)
                            && e.vruntime <= f.vruntime.saturating_add(self.timeslice)
                    })
                    .min_by_key(|e| (e.vruntime, !e.boost, e.seq))
            })
            .or(first)
            .map(|e| e.v)
    }

    /// If CPU `cpu`'s current vCPU may run on and runs outside its soft affinity
    /// while an untickled CPU of it idles, or runs a vCPU that is outside its own
    /// soft affinity and prefers `cpu` (the two swap: that CPU's schedule sends its
    /// vCPU here): tickles that CPU for it and names it.
    fn soft_move(&mut self, cpu: usize) -> Option<usize> {
        let i = self.current(cpu).and_then(|v| self.find(v))?;
        let e = self.entities.get(i)?;
        if !e.runnable() || self.prefers(e, cpu) {
            return None;
        }
        let soft = self.preferred(e)?;
        let tickled = self.tickled_mask();
        let swaps = |c: usize| {
            c < 64
                && soft & (1 << c) != 0
                && tickled & (1 << c) == 0
                && self
                    .current(c)
                    .and_then(|o| self.entity(o))
                    .is_some_and(|o| {
                        o.runnable()
                            && self.preferred(o).is_some()
                            && !self.prefers(o, c)
                            && self.prefers(o, cpu)
                            && Self::allowed(o, cpu)
                    })
        };
        let to = self
            .idle_in(soft, cpu)
            .or_else(|| (0..self.nr_cpus).find(|&c| swaps(c)))?;
        let v = e.v;
        self.tickle(to, v);
        Some(to)
    }
}
