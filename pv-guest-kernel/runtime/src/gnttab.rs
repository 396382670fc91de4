//! Grant tables (`grant_table_op`, ABI digest §8): share frames with other
//! domains, and map or copy frames they share.
//!
//! # Granting
//!
//! [`init`] asks the hypervisor for the domain's table (`GNTTABOP_setup_table`,
//! which for a PV guest returns the table's machine frames) and maps those
//! frames writable at [`TABLE_VA`]. [`grant_access`] then picks a free
//! reference (never one of the toolstack's entries 0..8), writes the grantee
//! and the frame, a write barrier, then the flags (`GTF_permit_access`, plus
//! `GTF_readonly`), as Linux does. [`end_access`] revokes: it
//! compare-and-swaps the flags to 0 only while the hypervisor's
//! `GTF_reading`/`GTF_writing` are clear, and answers
//! [`EndAccessError::StillInUse`] while the grantee has the frame mapped.
//! Only version 1 entries are written; [`set_version`] can switch the table
//! to version 2, after which [`grant_access`] refuses.
//!
//! # Using another domain's grant
//!
//! [`map`] maps a grant at a virtual address of the kernel's address space
//! (`GNTMAP_host_map`, read-only or writable) and returns the [`Handle`]
//! [`unmap`] needs; the hypervisor writes the page-table entry itself, so
//! the address needs an L1 table ([`map`] creates one when missing;
//! [`prepare`] does it for a whole window ahead of time, as [`map_batch`]
//! expects). [`copy`] copies bytes between grants and the caller's own
//! frames without mapping anything. Each also has a batched form taking a
//! slice of the ABI's op structs ([`map_batch`], [`unmap_batch`],
//! [`copy_batch`]), one hypercall for the lot, with a status per entry.
//!
//! Every per-operation failure is the hypervisor's [`GntSt`], inside
//! [`Error::Status`].
//!
//! # Example: two domains sharing a page
//!
//! ```ignore
//! use pv_runtime::{gnttab, mm};
//! use pv_runtime::abi::DomId;
//!
//! // Domain A (the granter) shares one of its frames with domain B.
//! gnttab::init(1)?;
//! let page = mm::alloc_frame().unwrap();
//! let gref = gnttab::grant_access(DomId(b), page.mfn, false)?;
//! // ... tell B the pair (A's domid, gref): a command line, XenStore ...
//!
//! // Domain B (the mapper) maps it, writes, unmaps.
//! const WINDOW: u64 = 0x5000_0000_0000;
//! let handle = gnttab::map(DomId(a), gref, WINDOW, false)?;
//! unsafe { (WINDOW as *mut u64).write_volatile(0x1234) };
//! gnttab::unmap(handle, WINDOW)?;
//!
//! // Back in A: the write is in A's frame; revoke once B let go.
//! assert_eq!(unsafe { (page.va() as *const u64).read_volatile() }, 0x1234);
//! gnttab::end_access(gref)?; // Err(StillInUse) while B has it mapped
//! ```
//!
//! Without mapping, B could instead copy into or out of the grant:
//! `gnttab::copy(CopyPtr::gref(DomId(a), gref, 0), CopyPtr::frame(own.mfn, 0), 4096)`.

use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicU16, Ordering, fence};

use hypercall_abi::gnttab::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GRANT_ENTRIES_V1_PER_FRAME, GntMapFlags, GntSt,
    GnttabCacheFlush, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabMapGrantRef, GnttabOp, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabSwapGrantRef, GnttabTransfer, GnttabUnmapAndReplace, GnttabUnmapGrantRef,
};
use hypercall_abi::hypercall::grant_table_op;
use hypercall_abi::xen::pte::PteFlags;
use hypercall_abi::{DomId, Errno, GrantRef, GuestPtr, Mfn};
use pv_runtime_core::gnttab::{RefAllocator, Revoke, access_flags, entries_for, revoke};
use pv_runtime_core::mapper::{MapError, Root};
use spin::Mutex;

use crate::hypercall::{handle_mut, hc};
use crate::mm;

/// Most grant-table frames the runtime maps (2048 v1 entries).
pub const MAX_FRAMES: usize = 4;
/// Where [`init`] maps the table's frames (one page each, writable).
pub const TABLE_VA: u64 = 0x0000_6000_0000_0000;

const REF_WORDS: usize = MAX_FRAMES * GRANT_ENTRIES_V1_PER_FRAME / 64;

struct State {
    frames: [Mfn; MAX_FRAMES],
    nr_frames: u32,
    version: u32,
    refs: RefAllocator<REF_WORDS>,
}

static STATE: Mutex<State> = Mutex::new(State {
    frames: [Mfn(0); MAX_FRAMES],
    nr_frames: 0,
    version: 1,
    refs: RefAllocator::new(),
});

/// Why a grant operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The hypervisor refused the operation: its `GNTST_*` status.
    Status(GntSt),
    /// The hypercall itself failed (bad count, unreadable argument, ...).
    Hypercall(Errno),
    /// A status value outside `GNTST_*`.
    UnknownStatus(i16),
    /// [`init`] has not mapped the table yet.
    NotReady,
    /// Every grant reference is in use.
    NoRefs,
    /// Entries are written only in version 1; the table is in this version.
    Version(u32),
    /// More frames than [`MAX_FRAMES`] were asked for.
    TooManyFrames(u32),
    /// Mapping the table frames, or creating an L1 table, failed.
    Map(MapError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Status(s) => write!(f, "{s:?} ({})", *s as i16),
            Error::Hypercall(e) => write!(f, "grant_table_op: {e:?}"),
            Error::UnknownStatus(s) => write!(f, "unknown grant status {s}"),
            Error::NotReady => f.write_str("the grant table is not set up (gnttab::init)"),
            Error::NoRefs => f.write_str("no free grant reference"),
            Error::Version(v) => write!(f, "the grant table is in version {v}"),
            Error::TooManyFrames(n) => write!(f, "{n} grant frames (at most {MAX_FRAMES})"),
            Error::Map(e) => write!(f, "mapping: {e}"),
        }
    }
}

impl From<Errno> for Error {
    fn from(e: Errno) -> Self {
        Error::Hypercall(e)
    }
}

impl From<MapError> for Error {
    fn from(e: MapError) -> Self {
        Error::Map(e)
    }
}

/// The status an op struct came back with, as a result.
pub fn status(raw: i16) -> Result<(), Error> {
    match GntSt::from_raw(raw) {
        Some(GntSt::Okay) => Ok(()),
        Some(s) => Err(Error::Status(s)),
        None => Err(Error::UnknownStatus(raw)),
    }
}

/// A mapping's handle (`grant_handle_t`), for [`unmap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Handle(pub u32);

/// The op structs that carry no guest pointers, so a batch of them can be
/// handed to the hypervisor safely.
pub trait BatchOp: sealed::Sealed {
    /// The `GNTTABOP_*` command.
    const OP: GnttabOp;
}

mod sealed {
    pub trait Sealed {}
}

macro_rules! batch_ops {
    ($($t:ty => $op:ident),* $(,)?) => {$(
        impl sealed::Sealed for $t {}
        impl BatchOp for $t {
            const OP: GnttabOp = GnttabOp::$op;
        }
    )*};
}

batch_ops! {
    GnttabMapGrantRef => MapGrantRef,
    GnttabUnmapGrantRef => UnmapGrantRef,
    GnttabUnmapAndReplace => UnmapAndReplace,
    GnttabCopy => Copy,
    GnttabTransfer => Transfer,
    GnttabQuerySize => QuerySize,
    GnttabSetVersion => SetVersion,
    GnttabGetVersion => GetVersion,
    GnttabSwapGrantRef => SwapGrantRef,
    GnttabCacheFlush => CacheFlush,
}

/// One `grant_table_op` over `ops` (count = `ops.len()`): the hypercall's
/// own result; each op's status is in its struct.
pub fn batch<T: BatchOp>(ops: &mut [T]) -> Result<u64, Errno> {
    let count = u32::try_from(ops.len()).map_err(|_| Errno::EINVAL)?;
    let uop = GuestPtr::new(ops.as_mut_ptr().expose_provenance() as u64);
    grant_table_op(&mut hc(), T::OP.nr(), uop, count)
}

/// `GNTTABOP_setup_table` for the calling domain: grow the table to
/// `frames.len()` frames and learn their machine frame numbers. The
/// hypercall's result (`Err` for a refused argument) and the op's status.
pub fn setup_table(frames: &mut [Mfn]) -> Result<(), Error> {
    let nr_frames = u32::try_from(frames.len()).map_err(|_| Error::TooManyFrames(u32::MAX))?;
    let mut op = GnttabSetupTable {
        dom: DomId::SELF,
        nr_frames,
        frame_list: GuestPtr::new(frames.as_mut_ptr().expose_provenance() as u64),
        ..Default::default()
    };
    grant_table_op(
        &mut hc(),
        GnttabOp::SetupTable.nr(),
        handle_mut(&mut op).cast(),
        1,
    )?;
    status(op.status)
}

/// What [`init`] set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    /// Frames mapped at [`TABLE_VA`].
    pub frames: u32,
    /// v1 entries they hold.
    pub entries: u32,
}

/// Set up and map the domain's grant table with `frames` frames (1..=
/// [`MAX_FRAMES`]): `setup_table`, then each frame mapped writable at
/// [`TABLE_VA`]. Calling it again with more frames grows the table. Needs
/// the runtime's own page tables ([`mm::take_over`]).
pub fn init(frames: u32) -> Result<Table, Error> {
    if frames == 0 || frames as usize > MAX_FRAMES {
        return Err(Error::TooManyFrames(frames));
    }
    if !mm::taken_over() {
        return Err(Error::NotReady);
    }
    let mut list = [Mfn(0); MAX_FRAMES];
    let list = list.get_mut(..frames as usize).unwrap_or(&mut []);
    setup_table(list)?;
    let mut st = STATE.lock();
    mm::map(TABLE_VA, list, PteFlags::RW | PteFlags::NX)?;
    for (slot, mfn) in st.frames.iter_mut().zip(list.iter()) {
        *slot = *mfn;
    }
    st.nr_frames = st.nr_frames.max(frames);
    let entries = entries_for(st.nr_frames);
    st.refs.grow(entries);
    Ok(Table {
        frames: st.nr_frames,
        entries,
    })
}

/// The machine frames of the mapped table (empty before [`init`]).
pub fn table_frames() -> ([Mfn; MAX_FRAMES], u32) {
    let st = STATE.lock();
    (st.frames, st.nr_frames)
}

/// `GNTTABOP_query_size`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    /// Frames the table has.
    pub nr_frames: u32,
    /// Frames it may grow to.
    pub max_nr_frames: u32,
}

/// The size of `dom`'s grant table (`DomId::SELF` for one's own).
pub fn query_size(dom: DomId) -> Result<Size, Error> {
    let mut op = [GnttabQuerySize {
        dom,
        ..Default::default()
    }];
    batch(&mut op)?;
    status(op[0].status)?;
    Ok(Size {
        nr_frames: op[0].nr_frames,
        max_nr_frames: op[0].max_nr_frames,
    })
}

/// The version of `dom`'s table (`GNTTABOP_get_version`).
pub fn get_version(dom: DomId) -> Result<u32, Errno> {
    let mut op = [GnttabGetVersion {
        dom,
        ..Default::default()
    }];
    batch(&mut op)?;
    Ok(op[0].version)
}

/// Switch the calling domain's table to `version` (1 or 2); Xen refuses
/// (`EBUSY`) while any entry beyond the reserved ones is in use, and
/// clears the table (but the reserved entries) when the version changes.
/// On success, the version now in force.
pub fn set_version(version: u32) -> Result<u32, Errno> {
    let mut op = [GnttabSetVersion { version }];
    let r = batch(&mut op);
    STATE.lock().version = op[0].version;
    r.map(|_| op[0].version)
}

/// `GNTTABOP_get_status_frames`: the machine frames of the first
/// `frames.len()` v2 status frames of the calling domain.
pub fn get_status_frames(frames: &mut [u64]) -> Result<(), Error> {
    let nr_frames = u32::try_from(frames.len()).map_err(|_| Error::TooManyFrames(u32::MAX))?;
    let mut op = GnttabGetStatusFrames {
        nr_frames,
        dom: DomId::SELF,
        status: 0,
        frame_list: GuestPtr::new(frames.as_mut_ptr().expose_provenance() as u64),
    };
    grant_table_op(
        &mut hc(),
        GnttabOp::GetStatusFrames.nr(),
        handle_mut(&mut op).cast(),
        1,
    )?;
    status(op.status)
}

// ---------------------------------------------------------------------------
// Entries
// ---------------------------------------------------------------------------

/// The address of v1 entry `r` in the mapped table, if the table has it.
fn entry_va(st: &State, r: GrantRef) -> Option<usize> {
    if r.0 >= entries_for(st.nr_frames) {
        return None;
    }
    usize::try_from(TABLE_VA + u64::from(r.0) * 8).ok()
}

fn flags_atomic(va: usize) -> &'static AtomicU16 {
    let p: *mut u16 = ptr::with_exposed_provenance_mut(va);
    // SAFETY: `va` is the flags word of an entry of the grant table, which
    // `init` mapped writable for good (it is never unmapped); it is 2-byte
    // aligned (entries are 8 bytes from a page boundary). The hypervisor
    // updates it with atomic operations only, as this reference does.
    unsafe { AtomicU16::from_ptr(p) }
}

/// Write v1 entry `r` as the granter does: `domid`, `frame`, a write
/// barrier, then `flags`. Low level: the entry need not be allocated, the
/// flags are taken as given (tests use it to break the protocol on
/// purpose); [`grant_access`] is the normal way.
pub fn write_entry(r: GrantRef, domid: DomId, frame: u32, flags: u16) -> Result<(), Error> {
    let st = STATE.lock();
    if st.version != 1 {
        return Err(Error::Version(st.version));
    }
    let va = entry_va(&st, r).ok_or(Error::Status(GntSt::BadGntref))?;
    let domid_p: *mut u16 = ptr::with_exposed_provenance_mut(va + 2);
    let frame_p: *mut u32 = ptr::with_exposed_provenance_mut(va + 4);
    // SAFETY: both fields lie in the entry `entry_va` located inside the
    // table mapped writable by `init`, naturally aligned; volatile because
    // the hypervisor reads them behind the compiler's back.
    unsafe {
        domid_p.write_volatile(domid.0);
        frame_p.write_volatile(frame);
    }
    fence(Ordering::Release);
    flags_atomic(va).store(flags, Ordering::Release);
    Ok(())
}

/// The current flags word of v1 entry `r` (with the hypervisor's
/// `GTF_reading`/`GTF_writing`).
pub fn entry_flags(r: GrantRef) -> Result<u16, Error> {
    let st = STATE.lock();
    let va = entry_va(&st, r).ok_or(Error::Status(GntSt::BadGntref))?;
    Ok(flags_atomic(va).load(Ordering::Acquire))
}

/// Grant `domid` access to the frame `frame` (one of the caller's, by
/// machine frame number), read-only or writable. Returns the reference to
/// hand to the grantee.
pub fn grant_access(domid: DomId, frame: Mfn, readonly: bool) -> Result<GrantRef, Error> {
    let frame32 = u32::try_from(frame.0).map_err(|_| Error::Status(GntSt::AddressTooBig))?;
    let r = {
        let mut st = STATE.lock();
        if st.nr_frames == 0 {
            return Err(Error::NotReady);
        }
        if st.version != 1 {
            return Err(Error::Version(st.version));
        }
        GrantRef(st.refs.alloc().ok_or(Error::NoRefs)?)
    };
    write_entry(r, domid, frame32, access_flags(readonly))?;
    Ok(r)
}

/// Why [`end_access`] did not revoke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndAccessError {
    /// The grantee still has the frame mapped (or a copy is running): the
    /// entry stays as it is; try again after the peer unmapped.
    StillInUse,
    /// `r` is not a reference [`grant_access`] handed out.
    NotGranted,
}

/// Revoke grant `r` and free the reference: the flags go to 0 by
/// compare-and-swap, only while the hypervisor's `GTF_reading` and
/// `GTF_writing` are clear.
pub fn end_access(r: GrantRef) -> Result<(), EndAccessError> {
    let mut st = STATE.lock();
    if !st.refs.is_allocated(r.0) {
        return Err(EndAccessError::NotGranted);
    }
    let va = entry_va(&st, r).ok_or(EndAccessError::NotGranted)?;
    let flags = flags_atomic(va);
    let mut cur = flags.load(Ordering::Acquire);
    loop {
        match revoke(cur) {
            Revoke::Busy => return Err(EndAccessError::StillInUse),
            Revoke::Clear => {
                match flags.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => break,
                    Err(now) => cur = now,
                }
            }
        }
    }
    let _ = st.refs.free(r.0);
    Ok(())
}

/// References [`grant_access`] can still hand out.
pub fn refs_available() -> u32 {
    STATE.lock().refs.available()
}

// ---------------------------------------------------------------------------
// Mapping and copying
// ---------------------------------------------------------------------------

/// Make sure the kernel's page tables have L1 tables for `pages` pages from
/// `va`, as host mappings need (nothing is mapped).
pub fn prepare(va: u64, pages: u64) -> Result<(), Error> {
    if !mm::taken_over() {
        return Err(Error::NotReady);
    }
    let root = mm::kernel_root();
    mm::with_mapper(|m| m.map_with(Root::live(root), va, pages, |_, _| Ok(None)))?;
    Ok(())
}

/// The op struct that maps `domid`'s grant `r` with `flags`
/// (`GNTMAP_host_map` at `host_addr`, `GNTMAP_device_map`, ...).
pub fn map_op(domid: DomId, r: GrantRef, host_addr: u64, flags: GntMapFlags) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr,
        flags: flags.bits(),
        ref_: r,
        dom: domid,
        ..Default::default()
    }
}

/// Map `domid`'s grant `r` at `va` (page aligned) in the kernel's address
/// space, read-only or writable. `domid` is the granter's real id (Xen
/// refuses `DOMID_SELF` here).
pub fn map(domid: DomId, r: GrantRef, va: u64, readonly: bool) -> Result<Handle, Error> {
    if mm::entry_address(va, 1).is_none() {
        prepare(va, 1)?;
    }
    let mut flags = GntMapFlags::HOST_MAP;
    if readonly {
        flags |= GntMapFlags::READONLY;
    }
    let mut op = [map_op(domid, r, va, flags)];
    batch(&mut op)?;
    status(op[0].status)?;
    Ok(Handle(op[0].handle))
}

/// Map a batch in one hypercall (the L1 tables must exist: [`prepare`]).
/// Each op's `status`, `handle` and `dev_bus_addr` come back in place.
pub fn map_batch(ops: &mut [GnttabMapGrantRef]) -> Result<(), Errno> {
    batch(ops).map(drop)
}

/// The op struct that unmaps `handle`'s host mapping at `host_addr`.
pub fn unmap_op(handle: Handle, host_addr: u64) -> GnttabUnmapGrantRef {
    GnttabUnmapGrantRef {
        host_addr,
        dev_bus_addr: 0,
        handle: handle.0,
        ..Default::default()
    }
}

/// Remove the host mapping `handle` made at `va`.
pub fn unmap(handle: Handle, va: u64) -> Result<(), Error> {
    let mut op = [unmap_op(handle, va)];
    batch(&mut op)?;
    status(op[0].status)
}

/// Unmap a batch in one hypercall; each op's `status` comes back in place.
pub fn unmap_batch(ops: &mut [GnttabUnmapGrantRef]) -> Result<(), Errno> {
    batch(ops).map(drop)
}

/// One side of a copy: a grant of some domain, or a frame of the caller's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyPtr {
    /// Grant `r` of domain `domid` (`DomId::SELF` allowed), from `offset`.
    Gref {
        /// The granter.
        domid: DomId,
        /// The grant.
        r: GrantRef,
        /// Byte offset in the granted frame.
        offset: u16,
    },
    /// The caller's own frame `mfn`, from `offset`.
    Frame {
        /// The frame.
        mfn: Mfn,
        /// Byte offset in it.
        offset: u16,
    },
}

impl CopyPtr {
    /// Grant `r` of `domid`, from `offset`.
    pub const fn gref(domid: DomId, r: GrantRef, offset: u16) -> CopyPtr {
        CopyPtr::Gref { domid, r, offset }
    }

    /// The caller's frame `mfn`, from `offset`.
    pub const fn frame(mfn: Mfn, offset: u16) -> CopyPtr {
        CopyPtr::Frame { mfn, offset }
    }

    fn raw(self) -> (GnttabCopyPtr, bool) {
        match self {
            CopyPtr::Gref { domid, r, offset } => (
                GnttabCopyPtr {
                    u: u64::from(r.0),
                    domid,
                    offset,
                    _pad: 0,
                },
                true,
            ),
            CopyPtr::Frame { mfn, offset } => (
                GnttabCopyPtr {
                    u: mfn.0,
                    domid: DomId::SELF,
                    offset,
                    _pad: 0,
                },
                false,
            ),
        }
    }
}

/// The op struct that copies `len` bytes from `source` to `dest` (neither
/// side may cross its page's end).
pub fn copy_op(source: CopyPtr, dest: CopyPtr, len: u16) -> GnttabCopy {
    let (s, s_gref) = source.raw();
    let (d, d_gref) = dest.raw();
    let mut flags = 0;
    if s_gref {
        flags |= GNTCOPY_SOURCE_GREF;
    }
    if d_gref {
        flags |= GNTCOPY_DEST_GREF;
    }
    GnttabCopy {
        source: s,
        dest: d,
        len,
        flags,
        ..Default::default()
    }
}

/// Copy `len` bytes from `source` to `dest` (`GNTTABOP_copy`).
pub fn copy(source: CopyPtr, dest: CopyPtr, len: u16) -> Result<(), Error> {
    let mut op = [copy_op(source, dest, len)];
    batch(&mut op)?;
    status(op[0].status)
}

/// Copy a batch in one hypercall; each op's `status` comes back in place.
pub fn copy_batch(ops: &mut [GnttabCopy]) -> Result<(), Errno> {
    batch(ops).map(drop)
}
