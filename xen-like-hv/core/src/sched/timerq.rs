//! A per-CPU timer queue: which vCPU's timer is due next, found in O(1) rather
//! than by scanning every domain on each timer interrupt (with a thousand idle
//! domains, that scan is what makes idle domains cost CPU time).
//!
//! [`TimerQueue`] is an *indexed* binary min-heap of `(deadline, vCPU)` with at
//! most one entry per vCPU: the earliest of that vCPU's timers (singleshot timer,
//! periodic timer, poll timeout, ...), which the caller works out and stores with
//! [`TimerQueue::set`]. A flat position index by domain slot and vCPU number (as
//! [`RunQueue`](super::RunQueue)'s) finds a vCPU's entry, so moving its deadline
//! either way or removing it costs O(log n) and needs no search.
//!
//! Validation is lazy: the queue does not know which timer an entry stands for.
//! When an entry fires, the caller looks at that vCPU's timers, runs the due ones
//! and [`set`](TimerQueue::set)s the entry again to the earliest left (or removes
//! it); an entry that fires early, because the timer it stood for was cancelled
//! or pushed back without the entry being moved, is simply re-set.
//!
//! **Complexity** (n entries): [`earliest`](TimerQueue::earliest) and
//! [`get`](TimerQueue::get) O(1); [`set`](TimerQueue::set) and
//! [`pop_due`](TimerQueue::pop_due) O(log n), so firing k due entries costs
//! O(k log n); [`remove_slot`](TimerQueue::remove_slot) O(log n) per vCPU of the
//! slot (32 index cells looked at).
//!
//! Only [`TimerQueue::reserve_slots`] and [`TimerQueue::reserve`] allocate by
//! design; [`TimerQueue::set`] allocates only when the room was not reserved, and
//! fails ([`TimerQueueError::OutOfMemory`], queue unchanged) rather than abort if
//! that fails. Nothing here panics.

use super::{VCPU_STRIDE, VcpuRef};
use alloc::vec::Vec;
use core::fmt;

/// No place: an absent vCPU in [`TimerQueue`]'s index.
const NONE: u32 = u32::MAX;

/// Domain slots the index can name (a slot is a `u16`): `reserve_slots` makes
/// room for no more.
const MAX_SLOTS: usize = u16::MAX as usize + 1;

/// Why the timer queue refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerQueueError {
    /// Out of memory for the heap or the index (nothing changed).
    OutOfMemory,
    /// A vCPU number past the most a domain has ([`VCPU_STRIDE`]).
    VcpuRange,
}

impl fmt::Display for TimerQueueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimerQueueError::OutOfMemory => write!(f, "out of memory for the timer queue"),
            TimerQueueError::VcpuRange => {
                write!(f, "vCPU number past the most a domain has ({VCPU_STRIDE})")
            }
        }
    }
}

/// One heap entry: a vCPU and the deadline of its earliest timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    deadline: u64,
    v: VcpuRef,
}

/// One CPU's timer deadlines, one per vCPU: an indexed binary min-heap.
#[derive(Debug)]
pub struct TimerQueue {
    /// The binary min-heap on `deadline`: `heap[i]` is no later than its children
    /// `heap[2i + 1]` and `heap[2i + 2]`.
    heap: Vec<Entry>,
    /// `index[slot * VCPU_STRIDE + vcpu]`: that vCPU's place in `heap`, or
    /// [`NONE`]. One flat vector (128 bytes a slot).
    index: Vec<u32>,
}

impl Default for TimerQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl TimerQueue {
    /// An empty queue that has allocated nothing.
    pub const fn new() -> Self {
        TimerQueue {
            heap: Vec::new(),
            index: Vec::new(),
        }
    }

    /// How many vCPUs have an entry.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no vCPU has an entry.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The bytes of the queue's two heap blocks, `[heap, index]` (capacity, not
    /// length: the hypervisor counts them as its own).
    pub fn allocations(&self) -> [usize; 2] {
        [
            self.heap.capacity() * core::mem::size_of::<Entry>(),
            self.index.capacity() * core::mem::size_of::<u32>(),
        ]
    }

    /// Makes room for domain slots `0..slots` in the index (at most 65536) and for
    /// at least `slots` entries in the heap, so that as many
    /// [`set`](Self::set)s, one vCPU per slot, allocate nothing. `OutOfMemory` if
    /// memory runs out (entries unchanged).
    pub fn reserve_slots(&mut self, slots: usize) -> Result<(), TimerQueueError> {
        let slots = slots.min(MAX_SLOTS);
        self.heap
            .try_reserve(slots.saturating_sub(self.heap.len()))
            .map_err(|_| TimerQueueError::OutOfMemory)?;
        let len = slots * VCPU_STRIDE;
        if self.index.len() < len {
            self.index
                .try_reserve_exact(len - self.index.len())
                .map_err(|_| TimerQueueError::OutOfMemory)?;
            self.index.resize(len, NONE);
        }
        Ok(())
    }

    /// Makes room in the heap for `n` more entries (index cells of slots past
    /// [`reserve_slots`](Self::reserve_slots) are not included). `OutOfMemory` if
    /// memory runs out (entries unchanged).
    pub fn reserve(&mut self, n: usize) -> Result<(), TimerQueueError> {
        self.heap
            .len()
            .checked_add(n)
            .filter(|&w| w < NONE as usize)
            .ok_or(TimerQueueError::OutOfMemory)?;
        self.heap
            .try_reserve(n)
            .map_err(|_| TimerQueueError::OutOfMemory)
    }

    /// Where `v` is in the index (`VcpuRange`: a vCPU number past the stride).
    fn cell(v: VcpuRef) -> Result<usize, TimerQueueError> {
        v.cell().ok_or(TimerQueueError::VcpuRange)
    }

    /// `v`'s place in the heap, if it has an entry.
    fn pos(&self, v: VcpuRef) -> Option<usize> {
        let p = *self.index.get(Self::cell(v).ok()?)?;
        (p != NONE)
            .then_some(p as usize)
            .filter(|&p| self.heap.get(p).is_some_and(|e| e.v == v))
    }

    /// Points `v`'s index cell (which exists) at `pos`.
    fn set_index(&mut self, v: VcpuRef, pos: u32) {
        if let Some(c) = Self::cell(v).ok().and_then(|c| self.index.get_mut(c)) {
            *c = pos;
        }
    }

    /// Records in the index where the entry at `pos` is.
    fn note(&mut self, pos: usize) {
        if let (Some(&e), Ok(p)) = (self.heap.get(pos), u32::try_from(pos)) {
            self.set_index(e.v, p);
        }
    }

    /// Swaps heap entries `a` and `b` (both in the heap) and their index cells.
    fn swap(&mut self, a: usize, b: usize) {
        if a < self.heap.len() && b < self.heap.len() {
            self.heap.swap(a, b);
            self.note(a);
            self.note(b);
        }
    }

    fn deadline_at(&self, pos: usize) -> Option<u64> {
        self.heap.get(pos).map(|e| e.deadline)
    }

    /// Moves the entry at `pos` up while it is earlier than its parent; returns
    /// where it ends.
    fn sift_up(&mut self, mut pos: usize) -> usize {
        while pos > 0 {
            let parent = (pos - 1) / 2;
            match (self.deadline_at(pos), self.deadline_at(parent)) {
                (Some(c), Some(p)) if c < p => {
                    self.swap(pos, parent);
                    pos = parent;
                }
                _ => break,
            }
        }
        pos
    }

    /// Moves the entry at `pos` down while a child is earlier.
    fn sift_down(&mut self, mut pos: usize) {
        while let Some(mut best_d) = self.deadline_at(pos) {
            let mut best = pos;
            let left = pos.saturating_mul(2).saturating_add(1);
            for child in [left, left.saturating_add(1)] {
                if let Some(d) = self.deadline_at(child)
                    && d < best_d
                {
                    best = child;
                    best_d = d;
                }
            }
            if best == pos {
                break;
            }
            self.swap(pos, best);
            pos = best;
        }
    }

    /// Restores the heap order around `pos` after its deadline changed.
    fn fix(&mut self, pos: usize) {
        if self.sift_up(pos) == pos {
            self.sift_down(pos);
        }
    }

    /// Takes the entry at `pos` out of the heap.
    fn remove_at(&mut self, pos: usize) -> Option<Entry> {
        if pos >= self.heap.len() {
            return None;
        }
        let e = self.heap.swap_remove(pos);
        self.set_index(e.v, NONE);
        // The last entry moved to `pos`.
        if pos < self.heap.len() {
            self.note(pos);
            self.fix(pos);
        }
        Some(e)
    }

    /// Sets `v`'s deadline: inserts its entry, moves it (earlier or later), or,
    /// with `None`, removes it. Allocates only when the room was not reserved
    /// (`OutOfMemory` and nothing changed if that fails); `VcpuRange` for a vCPU
    /// number past [`VCPU_STRIDE`].
    pub fn set(&mut self, v: VcpuRef, deadline: Option<u64>) -> Result<(), TimerQueueError> {
        let cell = Self::cell(v)?;
        match (self.pos(v), deadline) {
            (Some(pos), Some(d)) => {
                if let Some(e) = self.heap.get_mut(pos) {
                    e.deadline = d;
                }
                self.fix(pos);
            }
            (Some(pos), None) => {
                self.remove_at(pos);
            }
            (None, None) => {}
            (None, Some(d)) => {
                let at = u32::try_from(self.heap.len())
                    .ok()
                    .filter(|&at| at != NONE)
                    .ok_or(TimerQueueError::OutOfMemory)?;
                if self.heap.len() == self.heap.capacity() {
                    self.heap
                        .try_reserve(1)
                        .map_err(|_| TimerQueueError::OutOfMemory)?;
                }
                if self.index.len() <= cell {
                    let len = (usize::from(v.slot) + 1) * VCPU_STRIDE;
                    self.index
                        .try_reserve(len - self.index.len())
                        .map_err(|_| TimerQueueError::OutOfMemory)?;
                    self.index.resize(len, NONE);
                }
                // Within the room reserved above: no allocation.
                self.heap.push(Entry { deadline: d, v });
                self.set_index(v, at);
                self.sift_up(at as usize);
            }
        }
        Ok(())
    }

    /// `v`'s deadline, if it has an entry.
    pub fn get(&self, v: VcpuRef) -> Option<u64> {
        self.pos(v).and_then(|p| self.deadline_at(p))
    }

    /// The earliest deadline and its vCPU (one of them, on a tie).
    pub fn earliest(&self) -> Option<(u64, VcpuRef)> {
        self.heap.first().map(|e| (e.deadline, e.v))
    }

    /// Removes and returns the vCPU of the earliest entry if its deadline is no
    /// later than `now`; `None` when nothing is due. Call it until `None` to fire
    /// every due entry, earliest first, each once.
    pub fn pop_due(&mut self, now: u64) -> Option<VcpuRef> {
        if self.deadline_at(0)? > now {
            return None;
        }
        self.remove_at(0).map(|e| e.v)
    }

    /// Removes the entries of every vCPU of domain slot `slot` (the domain is
    /// gone).
    pub fn remove_slot(&mut self, slot: u16) {
        for vcpu in 0..VCPU_STRIDE {
            let Ok(vcpu) = u16::try_from(vcpu) else {
                break;
            };
            if let Some(pos) = self.pos(VcpuRef { slot, vcpu }) {
                self.remove_at(pos);
            }
        }
    }
}

#[cfg(test)]
#[path = "timerq_tests.rs"]
mod tests;
