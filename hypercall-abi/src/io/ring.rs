//! The generic shared ring (`io/ring.h`).
//!
//! One shared page (or several, for multi-page rings) holds a 64-byte header
//! and an array of slots, each the size of `union { request; response; }`:
//!
//! | byte | field | written by |
//! |---|---|---|
//! | 0 | `req_prod` | front end, after writing requests |
//! | 4 | `req_event` | back end: "notify me when `req_prod` passes this" |
//! | 8 | `rsp_prod` | back end, after writing responses |
//! | 12 | `rsp_event` | front end: "notify me when `rsp_prod` passes this" |
//! | 16 | `pvt` (4 bytes), then 44 bytes of padding | |
//! | 64 | slots | requests by the front end, responses by the back end |
//!
//! The number of slots is the largest power of two that fits
//! ([`ring_size`]). Indices are free-running `u32`s; slot = index & (size -
//! 1). The front end initialises the header (producers 0, events 1).
//!
//! Rules, as in Xen: a producer writes its entries, issues a write barrier,
//! publishes the producer index, issues a full barrier, then notifies the
//! other end iff `(new - event) < (new - old)` in `u32` arithmetic. A
//! consumer with nothing left sets `event = cons + 1`, issues a full
//! barrier and checks again before it sleeps. Here the barriers are a
//! `Release` store of the producer index, `Acquire` loads of the other
//! end's index and `SeqCst` fences.
//!
//! The other end is untrusted: every index it publishes is checked, entries
//! are copied out before anyone looks at them, and inconsistencies are
//! reported as [`RingError`] rather than trusted or panicked on.

use core::marker::PhantomData;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU32, Ordering, fence};

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The shared header of every ring page (the start of `struct *_sring`).
/// The rings below access it through atomics at these offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SringHeader {
    /// Requests published; written by the front end.
    pub req_prod: u32,
    /// Request index at which the back end wants a notification; written by
    /// the back end.
    pub req_event: u32,
    /// Responses published; written by the back end.
    pub rsp_prod: u32,
    /// Response index at which the front end wants a notification; written
    /// by the front end.
    pub rsp_event: u32,
    /// Per-protocol private bytes (netif `smartpoll_active`); zeroed at init.
    pub pvt: [u8; 4],
    /// Padding (zeroed at init).
    pub pad: [u8; 44],
}

/// Bytes of the shared header before the first slot.
pub const RING_HEADER_BYTES: usize = size_of::<SringHeader>();

const HEADER_WORDS: usize = RING_HEADER_BYTES / 4;
const REQ_PROD: usize = offset_of!(SringHeader, req_prod) / 4;
const REQ_EVENT: usize = offset_of!(SringHeader, req_event) / 4;
const RSP_PROD: usize = offset_of!(SringHeader, rsp_prod) / 4;
const RSP_EVENT: usize = offset_of!(SringHeader, rsp_event) / 4;

assert_layout!(
    SringHeader,
    64,
    req_prod = 0,
    req_event = 4,
    rsp_prod = 8,
    rsp_event = 12,
    pvt = 16,
    pad = 20,
);

/// A type that can sit in a ring slot: plain data whose size is a multiple
/// of 4 bytes (checked at compile time when a ring is created).
pub trait RingEntry: FromBytes + IntoBytes + Immutable + Copy {}

impl<T: FromBytes + IntoBytes + Immutable + Copy> RingEntry for T {}

/// Size of `union { Req; Rsp; }`: the larger size, rounded up to the larger
/// alignment.
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };
    let align = if align_of::<Req>() > align_of::<Rsp>() {
        align_of::<Req>()
    } else {
        align_of::<Rsp>()
    };
    size.div_ceil(align) * align
}

/// Slots in a ring of `page_bytes` with `entry_bytes` slots: the largest
/// power of two not above `(page_bytes - 64) / entry_bytes` (`__RING_SIZE`),
/// or 0 if not even one fits.
pub const fn ring_size(page_bytes: usize, entry_bytes: usize) -> u32 {
    if entry_bytes == 0 || page_bytes <= RING_HEADER_BYTES {
        return 0;
    }
    let fit = (page_bytes - RING_HEADER_BYTES) / entry_bytes;
    if fit == 0 {
        return 0;
    }
    let pow = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    #[allow(clippy::cast_possible_truncation)] // checked against u32::MAX first
    if pow > u32::MAX as usize {
        1 << 31
    } else {
        pow as u32
    }
}

/// What can go wrong on a ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The page cannot hold the header and one slot.
    PageTooSmall,
    /// No free slot: the other end has not consumed enough.
    Full,
    /// A back end tried to respond with no request taken to answer.
    NoRequest,
    /// The other end published a producer or consumer index that is
    /// impossible (it claims more entries than the ring holds). The other
    /// end is broken or hostile; stop using the ring.
    Overflow,
}

/// The shared part of a ring: header and slots, borrowed.
struct SharedRing<'a, Req, Rsp> {
    req_prod: &'a AtomicU32,
    req_event: &'a AtomicU32,
    rsp_prod: &'a AtomicU32,
    rsp_event: &'a AtomicU32,
    header: &'a [AtomicU32],
    slots: &'a [AtomicU32],
    size: u32,
    _entries: PhantomData<fn() -> (Req, Rsp)>,
}

impl<'a, Req: RingEntry, Rsp: RingEntry> SharedRing<'a, Req, Rsp> {
    const ENTRY_WORDS: usize = {
        assert!(
            size_of::<Req>() % 4 == 0,
            "ring requests must be a multiple of 4 bytes"
        );
        assert!(
            size_of::<Rsp>() % 4 == 0,
            "ring responses must be a multiple of 4 bytes"
        );
        entry_size::<Req, Rsp>() / 4
    };

    fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        let size = ring_size(page.len().saturating_mul(4), Self::ENTRY_WORDS * 4);
        let (header, slots) = page
            .split_at_checked(HEADER_WORDS)
            .ok_or(RingError::PageTooSmall)?;
        let word = |i: usize| header.get(i).ok_or(RingError::PageTooSmall);
        let (req_prod, req_event) = (word(REQ_PROD)?, word(REQ_EVENT)?);
        let (rsp_prod, rsp_event) = (word(RSP_PROD)?, word(RSP_EVENT)?);
        if size == 0 {
            return Err(RingError::PageTooSmall);
        }
        Ok(SharedRing {
            req_prod,
            req_event,
            rsp_prod,
            rsp_event,
            header,
            slots,
            size,
            _entries: PhantomData,
        })
    }

    /// `SHARED_RING_INIT`: producers 0, events 1, private and padding zero.
    fn init(&self) {
        for w in self.header {
            w.store(0, Ordering::Relaxed);
        }
        self.req_event.store(1, Ordering::Relaxed);
        self.rsp_event.store(1, Ordering::Relaxed);
        fence(Ordering::Release);
    }

    fn slot_words(&self, idx: u32) -> impl Iterator<Item = &'a AtomicU32> {
        let slot = (idx & (self.size - 1)) as usize;
        self.slots
            .iter()
            .skip(slot * Self::ENTRY_WORDS)
            .take(Self::ENTRY_WORDS)
    }

    fn write<T: RingEntry>(&self, idx: u32, value: &T) {
        for (slot, word) in self.slot_words(idx).zip(value.as_bytes().chunks_exact(4)) {
            if let Ok(bytes) = <[u8; 4]>::try_from(word) {
                slot.store(u32::from_le_bytes(bytes), Ordering::Relaxed);
            }
        }
    }

    fn read<T: RingEntry>(&self, idx: u32) -> T {
        let mut value = T::new_zeroed();
        for (slot, word) in self
            .slot_words(idx)
            .zip(value.as_mut_bytes().chunks_exact_mut(4))
        {
            word.copy_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
        }
        value
    }
}

/// Publish `new` in `prod` and decide whether the consumer must be notified
/// (`RING_PUSH_*_AND_CHECK_NOTIFY`).
fn publish(prod: &AtomicU32, event: &AtomicU32, new: u32) -> bool {
    let old = prod.load(Ordering::Relaxed);
    prod.store(new, Ordering::Release);
    fence(Ordering::SeqCst);
    let event = event.load(Ordering::Relaxed);
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

/// The front end of a ring: produces requests, consumes responses.
pub struct FrontRing<'a, Req, Rsp> {
    ring: SharedRing<'a, Req, Rsp>,
    req_prod_pvt: u32,
    rsp_cons: u32,
}

impl<'a, Req: RingEntry, Rsp: RingEntry> FrontRing<'a, Req, Rsp> {
    /// Initialise the shared header (`SHARED_RING_INIT`) and attach at
    /// index 0 (`FRONT_RING_INIT`). The front end does this once, before it
    /// grants the page to the back end.
    pub fn init(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        let ring = SharedRing::new(page)?;
        ring.init();
        Ok(FrontRing {
            ring,
            req_prod_pvt: 0,
            rsp_cons: 0,
        })
    }

    /// Attach to an already initialised ring whose indices are at `idx`
    /// (`FRONT_RING_ATTACH`), e.g. after resume.
    pub fn attach(page: &'a [AtomicU32], idx: u32) -> Result<Self, RingError> {
        Ok(FrontRing {
            ring: SharedRing::new(page)?,
            req_prod_pvt: idx,
            rsp_cons: idx,
        })
    }

    /// Attach with the private indices a front end kept from an earlier
    /// attachment (a front end that lets go of the page between calls).
    pub fn resume(
        page: &'a [AtomicU32],
        req_prod_pvt: u32,
        rsp_cons: u32,
    ) -> Result<Self, RingError> {
        Ok(FrontRing {
            ring: SharedRing::new(page)?,
            req_prod_pvt,
            rsp_cons,
        })
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.ring.size
    }

    /// Requests queued but not yet published, plus published ones not yet
    /// answered, subtracted from the size (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.ring
            .size
            .wrapping_sub(self.req_prod_pvt.wrapping_sub(self.rsp_cons))
    }

    /// No free slot (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// The private producer index (next request slot).
    pub fn req_prod_pvt(&self) -> u32 {
        self.req_prod_pvt
    }

    /// The private response consumer index.
    pub fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }

    /// Queue a request in the next slot; it becomes visible at the next
    /// [`push_requests`](Self::push_requests).
    pub fn put_request(&mut self, req: &Req) -> Result<(), RingError> {
        if self.is_full() {
            return Err(RingError::Full);
        }
        self.ring.write(self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish queued requests; returns whether the back end must be
    /// notified (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push_requests(&mut self) -> bool {
        publish(self.ring.req_prod, self.ring.req_event, self.req_prod_pvt)
    }

    /// Responses published and not yet taken (`RING_HAS_UNCONSUMED_RESPONSES`).
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        let prod = self.ring.rsp_prod.load(Ordering::Acquire);
        let available = prod.wrapping_sub(self.rsp_cons);
        let outstanding = self.req_prod_pvt.wrapping_sub(self.rsp_cons);
        if available > outstanding {
            return Err(RingError::Overflow);
        }
        Ok(available)
    }

    /// Copy out the next response, if one is published.
    pub fn take_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed_responses()? == 0 {
            return Ok(None);
        }
        let rsp = self.ring.read(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(Some(rsp))
    }

    /// Whether responses are waiting; if none, ask to be notified of the
    /// next one and check again (`RING_FINAL_CHECK_FOR_RESPONSES`). Sleep
    /// only after this returns `false`.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_responses()? > 0 {
            return Ok(true);
        }
        self.ring
            .rsp_event
            .store(self.rsp_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_responses()? > 0)
    }
}

/// The back end of a ring: consumes requests, produces responses.
pub struct BackRing<'a, Req, Rsp> {
    ring: SharedRing<'a, Req, Rsp>,
    rsp_prod_pvt: u32,
    req_cons: u32,
}

impl<'a, Req: RingEntry, Rsp: RingEntry> BackRing<'a, Req, Rsp> {
    /// Attach to a ring the front end initialised (`BACK_RING_INIT`).
    pub fn new(page: &'a [AtomicU32]) -> Result<Self, RingError> {
        Self::attach(page, 0)
    }

    /// Attach with indices at `idx` (`BACK_RING_ATTACH`).
    pub fn attach(page: &'a [AtomicU32], idx: u32) -> Result<Self, RingError> {
        Ok(BackRing {
            ring: SharedRing::new(page)?,
            rsp_prod_pvt: idx,
            req_cons: idx,
        })
    }

    /// Attach with the private indices a back end kept from an earlier
    /// attachment: responses produced up to `rsp_prod_pvt`, requests taken up
    /// to `req_cons` (a back end that takes requests, lets go of the page while
    /// it serves them, and attaches again to answer).
    pub fn resume(
        page: &'a [AtomicU32],
        rsp_prod_pvt: u32,
        req_cons: u32,
    ) -> Result<Self, RingError> {
        Ok(BackRing {
            ring: SharedRing::new(page)?,
            rsp_prod_pvt,
            req_cons,
        })
    }

    /// Slots in the ring.
    pub fn size(&self) -> u32 {
        self.ring.size
    }

    /// The private response producer index.
    pub fn rsp_prod_pvt(&self) -> u32 {
        self.rsp_prod_pvt
    }

    /// The private request consumer index.
    pub fn req_cons(&self) -> u32 {
        self.req_cons
    }

    /// Requests published and not yet taken, bounded by the slots free for
    /// their responses (`RING_HAS_UNCONSUMED_REQUESTS`).
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        let prod = self.ring.req_prod.load(Ordering::Acquire);
        if prod.wrapping_sub(self.rsp_prod_pvt) > self.ring.size {
            return Err(RingError::Overflow);
        }
        let requests = prod.wrapping_sub(self.req_cons);
        let room = self
            .ring
            .size
            .wrapping_sub(self.req_cons.wrapping_sub(self.rsp_prod_pvt));
        Ok(requests.min(room))
    }

    /// Copy out the next request, if one is published.
    pub fn take_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.unconsumed_requests()? == 0 {
            return Ok(None);
        }
        let req = self.ring.read(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(Some(req))
    }

    /// Queue the response to the oldest unanswered request; it becomes
    /// visible at the next [`push_responses`](Self::push_responses).
    pub fn put_response(&mut self, rsp: &Rsp) -> Result<(), RingError> {
        if self.rsp_prod_pvt == self.req_cons {
            return Err(RingError::NoRequest);
        }
        self.ring.write(self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        Ok(())
    }

    /// Publish queued responses; returns whether the front end must be
    /// notified (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses(&mut self) -> bool {
        publish(self.ring.rsp_prod, self.ring.rsp_event, self.rsp_prod_pvt)
    }

    /// Whether requests are waiting; if none, ask to be notified of the next
    /// one and check again (`RING_FINAL_CHECK_FOR_REQUESTS`). Sleep only
    /// after this returns `false`.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed_requests()? > 0 {
            return Ok(true);
        }
        self.ring
            .req_event
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Ok(self.unconsumed_requests()? > 0)
    }
}

impl<Req, Rsp> core::fmt::Debug for FrontRing<'_, Req, Rsp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FrontRing")
            .field("size", &self.ring.size)
            .field("req_prod_pvt", &self.req_prod_pvt)
            .field("rsp_cons", &self.rsp_cons)
            .finish()
    }
}

impl<Req, Rsp> core::fmt::Debug for BackRing<'_, Req, Rsp> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BackRing")
            .field("size", &self.ring.size)
            .field("rsp_prod_pvt", &self.rsp_prod_pvt)
            .field("req_cons", &self.req_cons)
            .finish()
    }
}

#[cfg(test)]
mod tests;
