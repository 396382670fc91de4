//! Request ids and the requests in flight on one ring (Linux's `shadow`).
//!
//! A ring of `n` slots has `n` shadow slots; a request's id names its
//! shadow slot in the low 32 bits and the slot's generation in the high 32
//! bits (the back end echoes the whole 64-bit id). Each use of a slot
//! bumps its generation, so a response that repeats an answered id, or
//! answers a slot's earlier use, does not match the request now in it.
//! Free slots are reused last-freed-first.

use alloc::vec::Vec;

/// Why a response's id matches nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// The slot number is beyond the ring: no request ever had this id.
    Unknown,
    /// The slot holds no request, or another use of it (a duplicate or
    /// stale response).
    NotPending,
}

/// The requests in flight on a ring, by id.
#[derive(Debug)]
pub struct Shadow<T> {
    slots: Vec<Option<T>>,
    generations: Vec<u32>,
    free: Vec<u32>,
}

fn split_id(id: u64) -> (u64, u32) {
    #[allow(clippy::cast_possible_truncation)] // the high half, by construction
    let generation = (id >> 32) as u32;
    (id & 0xFFFF_FFFF, generation)
}

impl<T> Shadow<T> {
    /// `size` empty slots.
    pub fn new(size: u32) -> Self {
        Shadow {
            slots: (0..size).map(|_| None).collect(),
            generations: (0..size).map(|_| 0).collect(),
            free: (0..size).rev().collect(),
        }
    }

    /// Slots in all.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Free slots.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Put `value` in a free slot and return its id; when every slot is
    /// in use, `value` comes back.
    pub fn alloc(&mut self, value: T) -> Result<u64, T> {
        let Some(index) = self.free.pop() else {
            return Err(value);
        };
        let i = index as usize;
        let (Some(slot), Some(generation)) = (self.slots.get_mut(i), self.generations.get_mut(i))
        else {
            return Err(value);
        };
        *generation = generation.wrapping_add(1);
        *slot = Some(value);
        Ok(u64::from(*generation) << 32 | u64::from(index))
    }

    fn index(&self, id: u64) -> Result<usize, Mismatch> {
        let (index, generation) = split_id(id);
        let i = usize::try_from(index).map_err(|_| Mismatch::Unknown)?;
        let current = self.generations.get(i).ok_or(Mismatch::Unknown)?;
        match self.slots.get(i) {
            Some(Some(_)) if *current == generation => Ok(i),
            _ => Err(Mismatch::NotPending),
        }
    }

    /// The request in flight under `id`.
    pub fn get(&self, id: u64) -> Result<&T, Mismatch> {
        let i = self.index(id)?;
        self.slots
            .get(i)
            .and_then(Option::as_ref)
            .ok_or(Mismatch::NotPending)
    }

    /// Take the request in flight under `id` out, freeing its slot.
    pub fn take(&mut self, id: u64) -> Result<T, Mismatch> {
        let i = self.index(id)?;
        let value = self
            .slots
            .get_mut(i)
            .and_then(Option::take)
            .ok_or(Mismatch::NotPending)?;
        self.free
            .push(u32::try_from(i).map_err(|_| Mismatch::Unknown)?);
        Ok(value)
    }

    /// Take every request in flight out (the ring is being given up).
    pub fn drain(&mut self) -> Vec<(u64, T)> {
        let mut out = Vec::new();
        for (i, (slot, generation)) in self.slots.iter_mut().zip(&self.generations).enumerate() {
            if let (Some(v), Ok(index)) = (slot.take(), u32::try_from(i)) {
                out.push((u64::from(*generation) << 32 | u64::from(index), v));
                self.free.push(index);
            }
        }
        out
    }
}
