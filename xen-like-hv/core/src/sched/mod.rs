//! The scheduler: one [`RunQueue`] per physical CPU, sharing it among the runnable
//! vCPUs in proportion to their weights, in the spirit of Xen's credit scheduler.
//!
//! Each vCPU has a *virtual runtime*: the CPU time it was charged, scaled by
//! `DEFAULT_WEIGHT / weight` (a vCPU of weight 512 ages half as fast as one of 256).
//! The queue runs the runnable vCPU with the smallest virtual runtime for a timeslice
//! ([`DEFAULT_TIMESLICE_NS`], 10 ms), so over time CPU shares follow the weights, as
//! credits do in Xen. Like Xen's `BOOST` priority, a vCPU that wakes from a wait gets
//! to run promptly: its virtual runtime is raised to no less than one timeslice behind
//! the most-behind runnable vCPU (a sleeper cannot bank unbounded credit), which puts
//! it ahead of CPU hogs, and [`RunQueue::wake`] tells the caller to preempt. Xen's
//! credit scheduler uses a 30 ms slice with a 1 ms rate limit; the shorter slice here
//! keeps timer-driven guests within a tick of their period next to hogs.
//!
//! Nothing here allocates or panics; the hypervisor keeps one queue per CPU and no
//! global "current".

#[cfg(test)]
mod tests;

use core::fmt;

/// Xen credit's default weight.
pub const DEFAULT_WEIGHT: u16 = 256;
/// Default timeslice: 10 ms.
pub const DEFAULT_TIMESLICE_NS: u64 = 10_000_000;
/// vCPUs one queue can hold.
pub const CAPACITY: usize = 256;

/// A schedulable vCPU: the domain's slot in the hypervisor's table and the vCPU index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuRef {
    /// Domain slot.
    pub slot: u16,
    /// vCPU index in the domain.
    pub vcpu: u16,
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
    /// The queue is full.
    Full,
}

impl fmt::Display for SchedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchedError::ZeroWeight => write!(f, "weight must be 1 to 65535"),
            SchedError::Exists(v) => write!(f, "vCPU {}.{} is already queued", v.slot, v.vcpu),
            SchedError::Unknown(v) => write!(f, "vCPU {}.{} is not queued", v.slot, v.vcpu),
            SchedError::Full => write!(f, "run queue full ({CAPACITY} vCPUs)"),
        }
    }
}

/// What [`RunQueue::schedule`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The vCPU to run; `None` = idle.
    pub next: Option<VcpuRef>,
    /// When to call `schedule` again at the latest (end of the timeslice); `None` when
    /// no other vCPU is runnable, so nothing needs preempting.
    pub slice_end_ns: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Entity {
    v: VcpuRef,
    weight: u16,
    vruntime: u64,
    runtime_ns: u64,
    runnable: bool,
    /// Tie-break: lower runs first (the order vCPUs became runnable or yielded).
    seq: u64,
    /// Woken and not yet run: wins ties (Xen's BOOST).
    boost: bool,
}

/// One physical CPU's run queue and the vCPU it runs.
#[derive(Debug)]
pub struct RunQueue {
    entities: heapless::Vec<Entity, CAPACITY>,
    current: Option<VcpuRef>,
    picked_at: u64,
    timeslice: u64,
    seq: u64,
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
    /// An empty queue, idle.
    pub const fn new() -> Self {
        RunQueue {
            entities: heapless::Vec::new(),
            current: None,
            picked_at: 0,
            timeslice: DEFAULT_TIMESLICE_NS,
            seq: 0,
        }
    }

    fn find(&self, v: VcpuRef) -> Option<usize> {
        self.entities.iter().position(|e| e.v == v)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sets the timeslice (at least 100 µs).
    pub fn set_timeslice(&mut self, ns: u64) {
        self.timeslice = ns.max(100_000);
    }

    /// Adds vCPU `v` with `weight`, not runnable.
    pub fn add(&mut self, v: VcpuRef, weight: u16, _now: u64) -> Result<(), SchedError> {
        if weight == 0 {
            return Err(SchedError::ZeroWeight);
        }
        if self.find(v).is_some() {
            return Err(SchedError::Exists(v));
        }
        let vruntime = self.min_vruntime().unwrap_or(0);
        let seq = self.next_seq();
        self.entities
            .push(Entity {
                v,
                weight,
                vruntime,
                runtime_ns: 0,
                runnable: false,
                seq,
                boost: false,
            })
            .map_err(|_| SchedError::Full)
    }

    /// Removes `v` (its domain is gone); if it was current, nothing is current now.
    pub fn remove(&mut self, v: VcpuRef) {
        if let Some(i) = self.find(v) {
            self.entities.swap_remove(i);
        }
        if self.current == Some(v) {
            self.current = None;
        }
    }

    /// The vCPU on the CPU.
    pub fn current(&self) -> Option<VcpuRef> {
        self.current
    }

    /// Whether `v` may run.
    pub fn is_runnable(&self, v: VcpuRef) -> bool {
        self.find(v)
            .and_then(|i| self.entities.get(i))
            .is_some_and(|e| e.runnable)
    }

    /// CPU time charged to `v` so far (ns).
    pub fn runtime_ns(&self, v: VcpuRef) -> u64 {
        self.find(v)
            .and_then(|i| self.entities.get(i))
            .map_or(0, |e| e.runtime_ns)
    }

    /// The weight of `v`.
    pub fn weight(&self, v: VcpuRef) -> Option<u16> {
        self.find(v)
            .and_then(|i| self.entities.get(i))
            .map(|e| e.weight)
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

    /// Charges the current vCPU for the time since it was picked (or last charged).
    fn charge(&mut self, now: u64) {
        let ran = now.saturating_sub(self.picked_at);
        self.picked_at = now.max(self.picked_at);
        let Some(i) = self.current.and_then(|c| self.find(c)) else {
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
        self.entities
            .iter()
            .filter(|e| e.runnable)
            .map(|e| e.vruntime)
            .min()
    }

    /// Makes `v` runnable. Returns true if it should preempt the current vCPU now.
    pub fn wake(&mut self, v: VcpuRef, now: u64) -> bool {
        let Some(i) = self.find(v) else { return false };
        if self.entities.get(i).is_none_or(|e| e.runnable) {
            return false;
        }
        self.charge(now);
        let floor = self
            .min_vruntime()
            .map(|m| m.saturating_sub(self.timeslice));
        let seq = self.next_seq();
        let Some(e) = self.entities.get_mut(i) else {
            return false;
        };
        if let Some(f) = floor {
            e.vruntime = e.vruntime.max(f);
        }
        e.runnable = true;
        e.seq = seq;
        e.boost = true;
        let mine = e.vruntime;
        match self.current {
            None => true,
            Some(c) if c == v => false,
            Some(c) => self
                .find(c)
                .and_then(|j| self.entities.get(j))
                .is_none_or(|cur| !cur.runnable || mine < cur.vruntime),
        }
    }

    /// `v` cannot run (blocked, paused, down). If it is current it stays so until the
    /// next [`schedule`](Self::schedule), which picks another.
    pub fn sleep(&mut self, v: VcpuRef, now: u64) {
        if self.current == Some(v) {
            self.charge(now);
        }
        if let Some(e) = self.find(v).and_then(|i| self.entities.get_mut(i)) {
            e.runnable = false;
        }
    }

    /// `v` gives up the rest of its slice: it goes behind every other runnable vCPU.
    pub fn yield_now(&mut self, v: VcpuRef, now: u64) {
        if self.current == Some(v) {
            self.charge(now);
        }
        let others_max = self
            .entities
            .iter()
            .filter(|e| e.runnable && e.v != v)
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

    /// Charges the current vCPU and picks the next (the runnable vCPU with the least
    /// virtual runtime), or idle.
    pub fn schedule(&mut self, now: u64) -> Decision {
        self.charge(now);
        let next = self
            .entities
            .iter()
            .filter(|e| e.runnable)
            .min_by_key(|e| (e.vruntime, !e.boost, e.seq))
            .map(|e| e.v);
        self.current = next;
        self.picked_at = now;
        let others = self.entities.iter().filter(|e| e.runnable).count() > 1;
        Decision {
            next,
            slice_end_ns: others.then(|| now.saturating_add(self.timeslice)),
        }
    }
}
