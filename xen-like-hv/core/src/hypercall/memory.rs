//! `memory_op` (#12) for PV domains (digest §1.4, §3.7, §5.7): reservations, the
//! physmap, what a guest learns about the M2P, and the memory maps.
//!
//! The rules are Xen 4.17's: `do_memory_op`, `increase_reservation`,
//! `populate_physmap`, `decrease_reservation`/`guest_remove_page` and `memory_exchange`
//! in `xen/common/memory.c`; `arch_memory_op` in `xen/arch/x86/mm.c` and
//! `subarch_memory_op` in `xen/arch/x86/x86_64/mm.c`. In short:
//!
//! * `cmd` bits 5:0 select the sub-op, bits 63:6 carry the start extent of a continued
//!   reservation call. The sub-ops that never continue refuse a non-zero start extent:
//!   `-EINVAL` for the common ones (`maximum_ram_page`, `current_reservation`,
//!   `maximum_reservation`, `maximum_gpfn`, `exchange`), `-EDOM` for `add_to_physmap`
//!   when it does not fit its 16-bit size, and `-ENOSYS` for the x86 ones
//!   (`machphys_mfn_list`, `memory_map`, `machine_memory_map`, `machphys_mapping`),
//!   which `arch_memory_op` matches on the whole `cmd`.
//! * The reservation sub-ops (`increase_reservation`, `decrease_reservation`,
//!   `populate_physmap`) never return an errno: they return how many extents are done,
//!   counting from the start extent. Every refusal (unreadable argument, too many
//!   extents to encode a continuation, start extent past the end, unknown or forbidden
//!   domain, bad `mem_flags`, list outside guest space, order too large) returns the
//!   start extent with nothing done, and the batch stops at the first extent that fails
//!   (`max_pages` reached, no memory, unreadable or unwritable list entry, frame not
//!   the domain's or still in use).
//! * A domain is named by `DOMID_SELF` or its own id, or by a caller privileged over it
//!   (`MmHooks::privileged_over`, Xen's `XSM_TARGET`): `-ESRCH` if no such domain,
//!   `-EPERM` if the caller may not act on it.
//!
//! Every guest array is reached one element at a time through the platform's checked
//! copies; nothing is allocated on the hypervisor heap; a reservation call does at
//! most [`WORK_PER_CALL`] frames of work (at least one extent) before it continues.

use super::{HvError, HvResult};
use crate::domain::Domain;
use crate::mm::frame_table::Owner;
use crate::mm::page_type::{M2p, MachineMemory, MmHooks};
use crate::mm::{MAX_ORDER, Mfn, PAGE_SHIFT};
use crate::platform::Platform;
use crate::regs::is_guest_range;
use crate::traps::GuestCtx;
use core::mem::offset_of;
use hypercall_abi::Errno;
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::memory::{
    E820Entry, MEMOP_EXTENT_SHIFT, XENMEMF_ADDRESS_BITS_MASK, XENMEMF_EXACT_NODE_REQUEST,
    XENMEMF_POPULATE_ON_DEMAND, XENMEMF_VNODE, XenAddToPhysmap, XenMachphysMapping,
    XenMachphysMfnList, XenMapSpace, XenMemoryDomain, XenMemoryExchange, XenMemoryMap,
    XenMemoryReservation, XenmemOp, split_memop_cmd,
};
use hypercall_abi::types::{DomId, GuestPtr};
use hypercall_abi::xen::shared_info::{ArchSharedInfo, SharedInfo};
use hypercall_abi::xen::{
    INVALID_M2P_ENTRY, MACH2PHYS_NR_ENTRIES, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START,
};

/// Frames a reservation call allocates or frees (or, for populate-on-demand, extents it
/// looks at) before it continues (Xen's `hypercall_preempt_check`). At least one extent
/// is always done, so an extent of the largest order is one call.
pub const WORK_PER_CALL: u64 = 512;

/// Largest extent order a domU may use (Xen x86 `CONFIG_DOMU_MAX_ORDER`).
pub const DOMU_MAX_ORDER: u32 = 9;

/// Largest extent order of the control domain (Xen's `ctldom_max_order`,
/// `CONFIG_PAGEALLOC_MAX_ORDER` = 18 on x86, above the hardware domain's 12), which is
/// also the allocator's largest run.
pub const CTLDOM_MAX_ORDER: u32 = MAX_ORDER;

/// `MAX_NUMNODES` of Xen x86: `XENMEMF_node(n)` with `n` at or above it is refused.
const MAX_NUMNODES: u32 = 64;

/// `NUMA_NO_NODE`: what `XENMEMF_get_node` yields when no node was asked for.
const NUMA_NO_NODE: u32 = 0xFF;

/// Most host E820 entries `XENMEM_machine_memory_map` reads from the platform (Xen's
/// `E820MAX`).
pub const HOST_E820_MAX: usize = 1024;

/// Byte offset of `arch.max_pfn` in the shared_info page, read as entry
/// `MAX_PFN_OFFSET / 8` of the frame.
const MAX_PFN_OFFSET: usize = offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, max_pfn);
const _: () = assert!(MAX_PFN_OFFSET % 8 == 0 && MAX_PFN_OFFSET / 8 < 512);

/// Xen's `max_order(current->domain)`: the largest extent order the caller may use.
/// (Xen also grants the hardware-domain order, 12, to domUs with passthrough devices;
/// there are none here.)
pub const fn max_order(privileged: bool) -> u32 {
    if privileged {
        CTLDOM_MAX_ORDER
    } else {
        DOMU_MAX_ORDER
    }
}

/// The domain a request names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// The caller (`DOMID_SELF` or its own id).
    Current,
    /// Another existing domain.
    Foreign(DomId),
}

impl Target {
    fn id(self, current: DomId) -> DomId {
        match self {
            Target::Current => current,
            Target::Foreign(d) => d,
        }
    }
}

/// Xen's `rcu_lock_domain_by_any_id` plus the `XSM_TARGET` question: the domain
/// `domid` names, and whether the caller may act on it. `-ESRCH` if it names no
/// existing domain.
fn memop_domain<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    domid: DomId,
) -> Result<(Target, bool), HvError> {
    if domid == DomId::SELF || domid == ctx.dom.id {
        return Ok((Target::Current, true));
    }
    let (me, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let (exists, permitted) = ctx.p.mm(me, privileged, |m| {
        let exists = domid.is_ordinary() && m.hooks.domain_exists(domid);
        (exists, exists && m.hooks.privileged_over(me, domid))
    });
    if !exists || ctx.p.with_domain(domid, |_| ()).is_none() {
        return Err(Errno::ESRCH.into());
    }
    Ok((Target::Foreign(domid), permitted))
}

/// Runs `f` on the named domain's record; `None` if it has gone.
fn with_target<P: Platform, R>(
    ctx: &mut GuestCtx<'_, P>,
    t: Target,
    f: impl FnOnce(&mut Domain) -> R,
) -> Option<R> {
    match t {
        Target::Current => Some(f(ctx.dom)),
        Target::Foreign(id) => ctx.p.with_domain(id, f),
    }
}

/// Adds `n` pages to the target's `tot_pages` if that stays within `max_pages`
/// (Xen's `assign_pages`: "Over-allocation").
fn charge<P: Platform>(ctx: &mut GuestCtx<'_, P>, t: Target, n: u64) -> bool {
    with_target(ctx, t, |d| match d.tot_pages.checked_add(n) {
        Some(tot) if tot <= d.max_pages => {
            d.tot_pages = tot;
            true
        }
        _ => false,
    })
    .unwrap_or(false)
}

/// Takes `n` pages off the target's `tot_pages`.
fn uncharge<P: Platform>(ctx: &mut GuestCtx<'_, P>, t: Target, n: u64) {
    let _ = with_target(ctx, t, |d| d.tot_pages = d.tot_pages.saturating_sub(n));
}

/// Takes the frames `first..first + n` back from domain `owner`, all or none: each
/// must be owned by it and hold no reference, type reference or pin (a frame still
/// mapped, used as a page table or descriptor page, pinned or granted stays, and
/// so do all the others). Released frames are `Owner::Free` with an invalid M2P
/// entry; the caller gives them to the allocator and fixes `tot_pages`.
fn take_back<P: Platform>(ctx: &mut GuestCtx<'_, P>, owner: DomId, first: Mfn, n: u64) -> bool {
    let Some(end) = first.0.checked_add(n) else {
        return false;
    };
    let (me, privileged) = (ctx.dom.id, ctx.dom.privileged);
    ctx.p.mm(me, privileged, |m| {
        let ours = (first.0..end).all(|f| {
            m.ft.info(Mfn(f))
                .is_some_and(|fi| fi.owner() == Owner::Domain(owner) && fi.is_unreferenced())
        });
        if !ours {
            return false;
        }
        for f in (first.0..end).map(Mfn) {
            if m.ft.release(f).is_err() {
                // Checked above under the same lock: cannot happen.
                return false;
            }
            m.m2p.set(f, INVALID_M2P_ENTRY);
        }
        true
    })
}

/// One extent of `increase_reservation`/`populate_physmap`: charges `2^order`
/// pages to the target, takes a run from the allocator, assigns it to the target,
/// zeroes it, records `pfn + j` (or `INVALID_M2P_ENTRY` without `pfn`) in the M2P
/// and writes the first MFN to `out`. `false` stops the batch, with nothing of the
/// extent left behind, except when the MFN cannot be written back and the guest
/// already uses a frame of the run: the run then stays the target's, accounted (as
/// in Xen, which keeps the pages whenever the write-back fails).
fn grow<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    t: Target,
    order: u32,
    below: Option<Mfn>,
    pfn: Option<u64>,
    out: Option<GuestPtr<u64>>,
) -> bool {
    let n = 1u64 << order;
    let owner = t.id(ctx.dom.id);
    if !charge(ctx, t, n) {
        return false;
    }
    let run = ctx.p.alloc_frames(order, below);
    let Some(first) = run.filter(|m| m.0.checked_add(n).is_some()) else {
        uncharge(ctx, t, n);
        return false;
    };
    if below.is_some_and(|b| first.0 + n > b.0) {
        // Outside the address width asked for (the platform should not do this).
        ctx.p.free_frames(first, n);
        uncharge(ctx, t, n);
        return false;
    }
    let (me, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let assigned = ctx.p.mm(me, privileged, |m| {
        let mut j = 0;
        while j < n && m.ft.assign(Mfn(first.0 + j), Owner::Domain(owner)).is_ok() {
            j += 1;
        }
        if j < n {
            for f in (first.0..first.0 + j).map(Mfn) {
                let _ = m.ft.release(f);
            }
            return Err(j);
        }
        for j in 0..n {
            let f = Mfn(first.0 + j);
            m.mem.zero_page(f);
            m.m2p
                .set(f, pfn.map_or(INVALID_M2P_ENTRY, |p| p.wrapping_add(j)));
        }
        Ok(())
    });
    if let Err(j) = assigned {
        // The allocator handed out a frame the frame table does not call free: give
        // back only the frames known to be free and leave the rest alone.
        log::warn!("memory_op: allocator run {first} of order {order} is not free at +{j}");
        if j > 0 {
            ctx.p.free_frames(first, j);
        }
        uncharge(ctx, t, n);
        return false;
    }
    if let Some(out) = out {
        if ctx.p.write_obj(out.addr(), &first.0).is_err() {
            if take_back(ctx, owner, first, n) {
                ctx.p.free_frames(first, n);
                uncharge(ctx, t, n);
            }
            return false;
        }
    }
    true
}

/// One extent of `decrease_reservation`: frees the frames `gmfn..gmfn + 2^order`
/// of the target, all or none (see [`take_back`]).
fn shrink<P: Platform>(ctx: &mut GuestCtx<'_, P>, t: Target, order: u32, gmfn: u64) -> bool {
    let n = 1u64 << order;
    let owner = t.id(ctx.dom.id);
    if !take_back(ctx, owner, Mfn(gmfn), n) {
        return false;
    }
    ctx.p.free_frames(Mfn(gmfn), n);
    uncharge(ctx, t, n);
    true
}

/// Xen's `get_order_from_pages`: the smallest order with `2^order >= n`.
const fn order_from_pages(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

/// Whether elements `first..=last` of the guest array at `base` lie in guest space
/// (Xen's `guest_handle_subrange_okay`, with checked arithmetic; Xen checks only the
/// start address and lets the element copies fault). As in Xen, a range of no
/// elements (`last + 1 == first`, wrapping) checks only its start address.
fn subrange_ok<T>(base: GuestPtr<T>, first: u64, last: u64) -> bool {
    let Some(start) = base.element(first) else {
        return false;
    };
    let count = last.wrapping_sub(first).wrapping_add(1);
    if count == 0 {
        return is_guest_range(start.addr(), 0);
    }
    if last < first {
        return false;
    }
    let Some(len) = count.checked_mul(size_of::<T>() as u64) else {
        return false;
    };
    is_guest_range(start.addr(), len)
}

/// Xen's `construct_memop_from_reservation` for a PV target: the allocation limit the
/// `mem_flags` ask for (`Some(None)` = any frame), or `None` to refuse the request.
/// `address_bits` at or above the width of RAM impose nothing, at or below 12 are
/// refused. NUMA: one node (0) here; without `XENMEMF_vnode` a node is ignored unless
/// the request is exact, which an unprivileged caller may not make
/// (`propagate_node`); a privileged caller's exact request for a node other than 0 is
/// refused up front (Xen's allocation would fail on the first extent; the result is
/// the same). With `XENMEMF_vnode` the node is ignored (no vNUMA).
fn alloc_limit(mem_flags: u32, max_page: u64, privileged: bool) -> Option<Option<Mfn>> {
    let bits = mem_flags & XENMEMF_ADDRESS_BITS_MASK;
    let mut below = None;
    if bits != 0 && bits < order_from_pages(max_page) + PAGE_SHIFT {
        if bits <= PAGE_SHIFT {
            return None;
        }
        below = 1u64.checked_shl(bits - PAGE_SHIFT).map(Mfn);
    }
    let node = ((mem_flags >> 8) & 0xFF).wrapping_sub(1) & 0xFF;
    let exact = mem_flags & XENMEMF_EXACT_NODE_REQUEST != 0;
    if mem_flags & XENMEMF_VNODE == 0 && node != NUMA_NO_NODE {
        if privileged {
            if node >= MAX_NUMNODES || (exact && node != 0) {
                return None;
            }
        } else if exact {
            return None;
        }
    }
    Some(below)
}

/// `memory_op(cmd, arg)`.
pub fn memory_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u64, arg: GuestPtr<()>) -> HvResult {
    let (nr, start) = split_memop_cmd(cmd);
    let Some(op) = XenmemOp::from_nr(nr) else {
        return Err(Errno::ENOSYS.into());
    };
    match op {
        XenmemOp::IncreaseReservation
        | XenmemOp::DecreaseReservation
        | XenmemOp::PopulatePhysmap => reservation(ctx, op, start, arg),
        XenmemOp::Exchange
        | XenmemOp::MaximumRamPage
        | XenmemOp::CurrentReservation
        | XenmemOp::MaximumReservation
        | XenmemOp::MaximumGpfn
            if start != 0 =>
        {
            Err(Errno::EINVAL.into())
        }
        XenmemOp::Exchange => exchange(ctx, arg.cast()),
        XenmemOp::MaximumRamPage => Ok(ctx.p.max_page()),
        XenmemOp::CurrentReservation | XenmemOp::MaximumReservation | XenmemOp::MaximumGpfn => {
            domain_info(ctx, op, arg.cast())
        }
        XenmemOp::AddToPhysmap => add_to_physmap(ctx, start, arg.cast()),
        // `arch_memory_op` switches on the whole `cmd`: a start extent makes these
        // unknown.
        XenmemOp::MachphysMfnList
        | XenmemOp::MemoryMap
        | XenmemOp::MachineMemoryMap
        | XenmemOp::MachphysMapping
            if start != 0 =>
        {
            Err(Errno::ENOSYS.into())
        }
        XenmemOp::MachphysMfnList => machphys_mfn_list(ctx, arg.cast()),
        XenmemOp::MachphysMapping => machphys_mapping(ctx, arg.cast()),
        XenmemOp::MemoryMap => memory_map(ctx, arg.cast()),
        XenmemOp::MachineMemoryMap => machine_memory_map(ctx, arg.cast()),
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// `increase_reservation`, `decrease_reservation`, `populate_physmap`: the number of
/// extents done (counting from `start`), or a continuation.
fn reservation<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: XenmemOp,
    start: u64,
    arg: GuestPtr<()>,
) -> HvResult {
    let Ok(r) = ctx.p.read_obj::<XenMemoryReservation>(arg.addr()) else {
        return Ok(start);
    };
    // Too large to encode a continuation, or nothing left.
    if r.nr_extents > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= r.nr_extents {
        return Ok(start);
    }
    let Ok((target, permitted)) = memop_domain(ctx, r.domid) else {
        return Ok(start);
    };
    let privileged = ctx.dom.privileged;
    let Some(below) = alloc_limit(r.mem_flags, ctx.p.max_page(), privileged) else {
        return Ok(start);
    };
    if !permitted {
        return Ok(start);
    }
    let pod = op == XenmemOp::PopulatePhysmap && r.mem_flags & XENMEMF_POPULATE_ON_DEMAND != 0;
    let list = r.extent_start;
    let order = r.extent_order;
    let list_ok = (op == XenmemOp::IncreaseReservation && list.is_null())
        || subrange_ok(list, start, r.nr_extents - 1);
    let order_ok = order
        <= if pod {
            MAX_ORDER
        } else {
            max_order(privileged)
        };
    if !list_ok || !order_ok {
        return Ok(start);
    }
    let frames = 1u64 << order;
    let mut i = start;
    let mut work = 0u64;
    while i < r.nr_extents {
        if i != start && work >= WORK_PER_CALL {
            let next = u64::from(op.nr()) | (i << MEMOP_EXTENT_SHIFT);
            return ctx.continuation(Hypercall::MemoryOp, [next, arg.addr(), 0, 0, 0]);
        }
        let Some(entry) = list.element(i) else {
            break;
        };
        let done = match op {
            XenmemOp::IncreaseReservation => {
                let out = (!list.is_null()).then_some(entry);
                grow(ctx, target, order, below, None, out)
            }
            _ => {
                let Ok(frame) = ctx.p.read_obj::<u64>(entry.addr()) else {
                    break;
                };
                if op == XenmemOp::DecreaseReservation {
                    shrink(ctx, target, order, frame)
                } else if pod {
                    // Xen refuses populate-on-demand on oneself, and for a PV target
                    // marks nothing but counts the extent.
                    target != Target::Current
                } else {
                    grow(ctx, target, order, below, Some(frame), Some(entry))
                }
            }
        };
        if !done {
            break;
        }
        work += if pod { 1 } else { frames };
        i += 1;
    }
    Ok(i)
}

/// `XENMEM_exchange` (Xen's `memory_exchange`): trades the caller's (or, for a
/// privileged caller, another domain's) extents `in` for freshly allocated extents
/// `out` of the same total size, possibly of another order and below an address
/// width (`out.mem_flags`' `address_bits`). The work goes in chunks of
/// `2^max(in_order, out_order)` frames, each all or nothing:
///
/// 1. every frame of the chunk's input extents must be the domain's and hold no
///    reference beyond its allocation (not mapped, typed, pinned or granted): it is
///    stolen (frame-table [`hold`](crate::mm::frame_table::FrameTable::hold) list,
///    M2P untouched) — `-EFAULT` for an unreadable input entry, `-EINVAL` for a frame
///    outside RAM or not stealable;
/// 2. the output extents are allocated below the limit (`-ENOMEM`);
///
/// and on any failure the stolen frames go back to the domain and the allocated ones
/// to the allocator, untouched. Then the input frames are freed (M2P invalidated) and
/// each output extent is assigned, zeroed, its M2P set to the GPFN the guest put in
/// its output entry, and its first MFN written there (the guest fixes its own P2M and
/// page tables, as Linux's `xen_create_contiguous_region` does). A failed read or
/// write of an output entry makes the call `-EFAULT` after the chunk (its frames stay
/// traded, as in Xen). `tot_pages` does not change.
///
/// `nr_exchanged` counts input extents done and is written back on every exit after
/// the argument was read (`-EFAULT` if that write fails): on failure it covers the
/// chunks completed before the failing one. After [`WORK_PER_CALL`] frames the call
/// continues (`nr_exchanged` saved, the same call reissued), so a long exchange is
/// preemptible. The validation is Xen's, in Xen's order (XSA-212 included: a crafted
/// `nr_exchanged` is `-EINVAL` beyond `in.nr_extents`, `-EFAULT` when the lists from
/// it on are not guest memory).
fn exchange<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<XenMemoryExchange>) -> HvResult {
    let x: XenMemoryExchange = ctx.p.read_obj(arg.addr())?;
    let (done, rc) = match exchange_chunks(ctx, arg, &x) {
        Exchanged::All => (x.in_.nr_extents, Ok(0)),
        Exchanged::Failed { done, err } => (done, Err(err)),
        Exchanged::Preempted { done } => {
            write_nr_exchanged(ctx, arg, done)?;
            let cmd = u64::from(XenmemOp::Exchange.nr());
            return ctx.continuation(Hypercall::MemoryOp, [cmd, arg.addr(), 0, 0, 0]);
        }
    };
    write_nr_exchanged(ctx, arg, done)?;
    rc
}

/// Writes `nr_exchanged` back into the guest's argument (Xen's
/// `__copy_field_to_guest(arg, &exch, nr_exchanged)`).
fn write_nr_exchanged<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    arg: GuestPtr<XenMemoryExchange>,
    done: u64,
) -> Result<(), HvError> {
    let at = arg
        .addr()
        .checked_add(offset_of!(XenMemoryExchange, nr_exchanged) as u64)
        .ok_or(HvError::Fault(arg.addr()))?;
    ctx.p.write_obj(at, &done)?;
    Ok(())
}

/// How an exchange call ended.
enum Exchanged {
    /// Every extent traded.
    All,
    /// Stopped with an error; `done` input extents are traded.
    Failed { done: u64, err: HvError },
    /// `done` input extents are traded; the rest in a continuation.
    Preempted { done: u64 },
}

/// Xen's `domain_clamp_alloc_bitsize` + `alloc_domheap_pages` limit for the output
/// extents: `Ok(None)` = any frame, `Ok(Some(b))` = frames below `b`, `Err(())` = no
/// frame can satisfy it (`address_bits` 1..=13: Xen's zone limit is then 0).
fn exchange_limit(mem_flags: u32) -> Result<Option<Mfn>, ()> {
    let bits = mem_flags & XENMEMF_ADDRESS_BITS_MASK;
    match bits {
        0 => Ok(None),
        1..=13 => Err(()),
        _ => Ok(1u64.checked_shl(bits - PAGE_SHIFT).map(Mfn)),
    }
}

/// The validation and the chunk loop of [`exchange`].
fn exchange_chunks<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    arg: GuestPtr<XenMemoryExchange>,
    x: &XenMemoryExchange,
) -> Exchanged {
    let early = |err: HvError| Exchanged::Failed {
        done: x.nr_exchanged,
        err,
    };
    let (io, oo) = (x.in_.extent_order, x.out.extent_order);
    if io.max(oo) > max_order(ctx.dom.privileged) {
        return early(Errno::EPERM.into());
    }
    let pages = |nr: u64, order: u32| (u64::MAX >> order >= nr).then(|| nr << order);
    let in_pages = pages(x.in_.nr_extents, io);
    let out_pages = pages(x.out.nr_extents, oo);
    if x.nr_exchanged > x.in_.nr_extents
        || x.in_.domid != x.out.domid
        || in_pages.is_none()
        || out_pages.is_none()
        || in_pages != out_pages
    {
        return early(Errno::EINVAL.into());
    }
    let fault = HvError::Fault(arg.addr());
    if !subrange_ok(
        x.in_.extent_start,
        x.nr_exchanged,
        x.in_.nr_extents.wrapping_sub(1),
    ) {
        return early(fault);
    }
    // Chunk orders: a chunk is `2^in_chunk` input extents and `2^out_chunk` output
    // extents (one of the two orders is 0).
    let (in_chunk, out_chunk) = if io <= oo { (oo - io, 0) } else { (0, io - oo) };
    let out_first = if io <= oo {
        Some(x.nr_exchanged >> in_chunk)
    } else {
        x.nr_exchanged
            .checked_shl(out_chunk)
            .filter(|v| v >> out_chunk == x.nr_exchanged)
    };
    let out_ok = out_first.is_some_and(|first| {
        subrange_ok(x.out.extent_start, first, x.out.nr_extents.wrapping_sub(1))
    });
    if !out_ok {
        return early(fault);
    }
    let (target, permitted) = match memop_domain(ctx, x.in_.domid) {
        Ok(t) => t,
        Err(e) => return early(e),
    };
    if !permitted {
        return early(HvError::NotPrivileged);
    }
    let owner = target.id(ctx.dom.id);
    let below = exchange_limit(x.out.mem_flags);
    let chunks = x.in_.nr_extents >> in_chunk;
    let first = x.nr_exchanged >> in_chunk;
    let chunk_frames = 1u64 << io.max(oo);
    let mut work = 0u64;
    for i in first..chunks {
        if i != first && work >= WORK_PER_CALL {
            return Exchanged::Preempted {
                done: i << in_chunk,
            };
        }
        if let Err(err) = exchange_chunk(ctx, x, owner, below, i, (in_chunk, out_chunk)) {
            return Exchanged::Failed {
                done: i << in_chunk,
                err,
            };
        }
        work = work.saturating_add(chunk_frames);
    }
    Exchanged::All
}

/// One chunk `i` of an exchange for domain `owner`; see [`exchange`]. An error leaves
/// the chunk's input frames the domain's and nothing allocated, except the `-EFAULT`
/// of an output entry, which comes after the trade.
fn exchange_chunk<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    x: &XenMemoryExchange,
    owner: DomId,
    below: Result<Option<Mfn>, ()>,
    i: u64,
    (in_chunk, out_chunk): (u32, u32),
) -> Result<(), HvError> {
    let (io, oo) = (x.in_.extent_order, x.out.extent_order);
    let (me, privileged) = (ctx.dom.id, ctx.dom.privileged);
    // 1. Steal the input frames onto a held list.
    let mut stolen: Option<Mfn> = None;
    let mut result = Ok(());
    'steal: for j in 0..1u64 << in_chunk {
        let entry = x.in_.extent_start.element((i << in_chunk) + j);
        let gmfn = entry.and_then(|e| ctx.p.read_obj::<u64>(e.addr()).ok());
        let Some(gmfn) = gmfn else {
            result = Err(HvError::Fault(x.in_.extent_start.addr()));
            break;
        };
        for k in 0..1u64 << io {
            let mfn = Mfn(gmfn.wrapping_add(k));
            let ok = ctx
                .p
                .mm(me, privileged, |m| m.ft.steal(mfn, owner, stolen).is_ok());
            if !ok {
                result = Err(Errno::EINVAL.into());
                break 'steal;
            }
            stolen = Some(mfn);
        }
    }
    // 2. Allocate the output extents onto another held list.
    let mut allocated: Option<Mfn> = None;
    if result.is_ok() {
        for _ in 0..1u64 << out_chunk {
            let run = match below {
                Ok(b) => ctx.p.alloc_frames(oo, b),
                Err(()) => None,
            };
            let Some(r) = run else {
                result = Err(Errno::ENOMEM.into());
                break;
            };
            let n = 1u64 << oo;
            let limit = below.ok().flatten();
            let in_limit =
                r.0.checked_add(n)
                    .is_some_and(|end| limit.is_none_or(|b| end <= b.0));
            // Every frame of the run must be free in the frame table (the allocator
            // and the table agree), and the run is held by its first frame.
            let (free, held) = ctx.p.mm(me, privileged, |m| {
                let free = (r.0..r.0.saturating_add(n))
                    .all(|f| m.ft.owner(Mfn(f)) == Some(Owner::Free) && !m.ft.is_held(Mfn(f)));
                (free, free && in_limit && m.ft.hold(r, allocated).is_ok())
            });
            if held {
                allocated = Some(r);
                continue;
            }
            if free {
                // Outside the limit asked for (the platform should not do this).
                ctx.p.free_frames(r, n);
            } else {
                log::warn!("memory_op: allocator run {r} of order {oo} is not free");
            }
            result = Err(Errno::ENOMEM.into());
            break;
        }
    }
    if let Err(e) = result {
        // Undo: the stolen frames go back to the domain exactly as they were (type
        // and M2P untouched), the allocated runs back to the allocator.
        let mut next = stolen;
        while let Some(mfn) = next {
            next = ctx
                .p
                .mm(me, privileged, |m| m.ft.restore(mfn, owner).flatten());
        }
        let mut next = allocated;
        while let Some(run) = next {
            next = ctx.p.mm(me, privileged, |m| m.ft.unhold(run).flatten());
            ctx.p.free_frames(run, 1 << oo);
        }
        return Err(e);
    }
    // 3. Commit (cannot fail): free the input frames, in runs of neighbours.
    let mut run: Option<(Mfn, u64)> = None;
    let mut next = stolen;
    while let Some(mfn) = next {
        next = ctx.p.mm(me, privileged, |m| {
            m.m2p.set(mfn, INVALID_M2P_ENTRY);
            m.ft.unhold(mfn).flatten()
        });
        run = match run {
            Some((s, n)) if mfn.0.checked_add(1) == Some(s.0) => Some((mfn, n + 1)),
            Some((s, n)) if s.0.checked_add(n) == Some(mfn.0) => Some((s, n + 1)),
            Some((s, n)) => {
                ctx.p.free_frames(s, n);
                Some((mfn, 1))
            }
            None => Some((mfn, 1)),
        };
    }
    if let Some((s, n)) = run {
        ctx.p.free_frames(s, n);
    }
    // 4. Assign each output extent and tell the guest where it is.
    let mut rc = Ok(());
    let mut j = 0u64;
    let mut next = allocated;
    while let Some(first) = next {
        next = ctx.p.mm(me, privileged, |m| {
            let n = m.ft.unhold(first).flatten();
            for f in (first.0..first.0 + (1 << oo)).map(Mfn) {
                // Held or free and below `first + 2^oo`, checked when allocated.
                let _ = m.ft.assign(f, Owner::Domain(owner));
                m.mem.zero_page(f);
                m.m2p.set(f, INVALID_M2P_ENTRY);
            }
            n
        });
        let entry = x.out.extent_start.element((i << out_chunk) + j);
        j += 1;
        let gpfn = entry.and_then(|e| ctx.p.read_obj::<u64>(e.addr()).ok().map(|g| (e, g)));
        let Some((entry, gpfn)) = gpfn else {
            rc = Err(HvError::Fault(x.out.extent_start.addr()));
            continue;
        };
        ctx.p.mm(me, privileged, |m| {
            for k in 0..1u64 << oo {
                m.m2p.set(Mfn(first.0 + k), gpfn.wrapping_add(k));
            }
        });
        if ctx.p.write_obj(entry.addr(), &first.0).is_err() {
            rc = Err(HvError::Fault(x.out.extent_start.addr()));
        }
    }
    rc
}

/// `current_reservation`, `maximum_reservation`, `maximum_gpfn` of a domain.
fn domain_info<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: XenmemOp,
    arg: GuestPtr<XenMemoryDomain>,
) -> HvResult {
    let md: XenMemoryDomain = ctx.p.read_obj(arg.addr())?;
    let (t, permitted) = memop_domain(ctx, md.domid)?;
    if !permitted {
        return Err(HvError::NotPrivileged);
    }
    let (tot, max, shared_info) =
        with_target(ctx, t, |d| (d.tot_pages, d.max_pages, d.shared_info)).ok_or(Errno::ESRCH)?;
    match op {
        XenmemOp::CurrentReservation => Ok(tot),
        XenmemOp::MaximumReservation => Ok(max),
        _ => {
            // PV (`domain_get_maximum_gpfn`): the guest-written `arch.max_pfn` of its
            // shared_info counts P2M entries, so the highest GPFN is one less (0 when
            // unset).
            let (me, privileged) = (ctx.dom.id, ctx.dom.privileged);
            let max_pfn = ctx.p.mm(me, privileged, |m| {
                m.mem.read_entry(shared_info, MAX_PFN_OFFSET / 8)
            });
            Ok(max_pfn.max(1) - 1)
        }
    }
}

/// `add_to_physmap`: for translated guests only; a PV domain gets `-EACCES`
/// (`xatp_permission_check`), after Xen's earlier checks.
fn add_to_physmap<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    start: u64,
    arg: GuestPtr<XenAddToPhysmap>,
) -> HvResult {
    if u16::try_from(start).is_err() {
        return Err(Errno::EDOM.into());
    }
    let x: XenAddToPhysmap = ctx.p.read_obj(arg.addr())?;
    if x.space == XenMapSpace::GmfnForeign as u32 {
        // Foreign mappings only through add_to_physmap_batch.
        return Err(Errno::ENOSYS.into());
    }
    memop_domain(ctx, x.domid)?;
    Err(Errno::EACCES.into())
}

/// `machphys_mfn_list`: the MFNs of the 2 MiB chunks backing the M2P, at most
/// `max_extents` of them; `nr_extents` says how many were written.
fn machphys_mfn_list<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    arg: GuestPtr<XenMachphysMfnList>,
) -> HvResult {
    let mut l: XenMachphysMfnList = ctx.p.read_obj(arg.addr())?;
    let mut i = 0u32;
    while i != l.max_extents {
        let Some(mfn) = ctx.p.m2p_chunk(u64::from(i)) else {
            break;
        };
        let dst = l
            .extent_start
            .element(u64::from(i))
            .ok_or(HvError::Fault(l.extent_start.addr()))?;
        ctx.p.write_obj(dst.addr(), &mfn.0)?;
        i += 1;
    }
    l.nr_extents = i;
    ctx.p.write_obj(arg.addr(), &l)?;
    Ok(0)
}

/// `machphys_mapping`: where the read-only M2P is and the highest MFN it describes
/// (the hardware domain, without memory hotplug, learns the highest RAM MFN).
fn machphys_mapping<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    arg: GuestPtr<XenMachphysMapping>,
) -> HvResult {
    let max_page = ctx.p.max_page();
    let max_mfn = if ctx.dom.privileged && max_page > 0 {
        max_page - 1
    } else {
        MACH2PHYS_NR_ENTRIES - 1
    };
    let mapping = XenMachphysMapping {
        v_start: MACH2PHYS_VIRT_START,
        v_end: MACH2PHYS_VIRT_END,
        max_mfn,
    };
    ctx.p.write_obj(arg.addr(), &mapping)?;
    Ok(0)
}

/// `memory_map`: the caller's pseudo-physical E820 map, as the toolstack set it;
/// `-ENOSYS` if none was set (also for a PV hardware domain, which Xen gives no map:
/// it reads the host's with `machine_memory_map`). Writes at most `nr_entries`
/// entries and sets `nr_entries` to the number written.
fn memory_map<P: Platform>(ctx: &mut GuestCtx<'_, P>, arg: GuestPtr<XenMemoryMap>) -> HvResult {
    let mut map: XenMemoryMap = ctx.p.read_obj(arg.addr())?;
    let len = match &ctx.dom.memory_map {
        Some(m) if !m.is_empty() => m.len(),
        _ => return Err(Errno::ENOSYS.into()),
    };
    let n = len.min(map.nr_entries as usize);
    for i in 0..n {
        let Some(entry) = ctx.dom.memory_map.as_ref().and_then(|m| m.get(i)).copied() else {
            break;
        };
        write_e820(ctx, map.buffer, i, &entry)?;
    }
    map.nr_entries = u32::try_from(n).unwrap_or(u32::MAX);
    ctx.p.write_obj(arg.addr(), &map)?;
    Ok(0)
}

/// Writes `entry` as element `i` of the guest's E820 buffer.
fn write_e820<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    buffer: GuestPtr<E820Entry>,
    i: usize,
    entry: &E820Entry,
) -> Result<(), HvError> {
    let dst = buffer
        .element(i as u64)
        .ok_or(HvError::Fault(buffer.addr()))?;
    ctx.p.write_obj(dst.addr(), entry)?;
    Ok(())
}

/// `machine_memory_map` (privileged: `-EPERM` otherwise, before the argument is
/// read): the host's E820 map. A null buffer asks only for the count. Xen demands room
/// for one entry more than it writes (`-EINVAL` otherwise) and checks the whole buffer
/// is guest memory first (`-EFAULT`).
fn machine_memory_map<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    arg: GuestPtr<XenMemoryMap>,
) -> HvResult {
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    let mut map: XenMemoryMap = ctx.p.read_obj(arg.addr())?;
    let mut count = 0usize;
    while count < HOST_E820_MAX && ctx.p.host_e820(count).is_some() {
        count += 1;
    }
    if !map.buffer.is_null() {
        if (map.nr_entries as usize) < count + 1 {
            return Err(Errno::EINVAL.into());
        }
        let room = u64::from(map.nr_entries) * size_of::<E820Entry>() as u64;
        if !is_guest_range(map.buffer.addr(), room) {
            return Err(HvError::Fault(map.buffer.addr()));
        }
        for i in 0..count {
            let Some(entry) = ctx.p.host_e820(i) else {
                break;
            };
            write_e820(ctx, map.buffer, i, &entry)?;
        }
    }
    map.nr_entries = u32::try_from(count).unwrap_or(u32::MAX);
    ctx.p.write_obj(arg.addr(), &map)?;
    Ok(0)
}

#[cfg(test)]
mod tests;
