//! `grant_table_op(cmd, uop, count)` (#20): copies each request in, runs it
//! ([`crate::gnttab::ops`]), writes the result back, batches and continues like Xen's
//! `do_grant_table_op`.
#![allow(
    clippy::cast_possible_truncation,
    reason = "grant entries, active entries and maptrack entries are 64-bit words split into their 16- and 32-bit fields"
)]

use super::{HvError, HvResult};
use crate::gnttab::{Gnt, MapReq, UnmapReq, ops::UnmapDone};
use crate::mm::mmu::FlushKind;
use crate::platform::Platform;
use crate::regs::is_guest_range;
use crate::traps::GuestCtx;
use core::mem::size_of;
use hypercall_abi::Errno;
use hypercall_abi::gnttab::{
    GntSt, GnttabCacheFlush, GnttabCopy, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabMapGrantRef, GnttabOp, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabSwapGrantRef, GnttabTransfer, GnttabUnmapAndReplace, GnttabUnmapGrantRef,
};
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::types::{DomId, GrantRef, GuestPtr};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Requests handled per invocation before a continuation (Xen checks for
/// preemption after each; the guest sees the same results either way).
const BATCH: u32 = 256;
/// Unmaps whose TLB flush is shared (`GNTTAB_UNMAP_BATCH_SIZE`).
const UNMAP_BATCH: usize = 32;
/// `GNTTABOP_CONTINUATION_ARG_SHIFT`: bits of `cmd` above it are cache_flush's
/// continuation state.
const CMD_MASK: u32 = (1 << 12) - 1;

/// `grant_table_op(cmd, uop, count)`.
pub fn grant_table_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    uop: GuestPtr<()>,
    count: u32,
) -> HvResult {
    if i32::try_from(count).is_err() {
        return Err(Errno::EINVAL.into());
    }
    let Some(op) = GnttabOp::from_nr(cmd & CMD_MASK) else {
        return Err(Errno::ENOSYS.into());
    };
    if op != GnttabOp::CacheFlush && cmd & !CMD_MASK != 0 {
        return Err(Errno::EINVAL.into());
    }
    let base = uop.addr();
    match op {
        GnttabOp::MapGrantRef => batched::<P, GnttabMapGrantRef>(ctx, cmd, base, count, map_one),
        GnttabOp::UnmapGrantRef => unmap_batch::<P, GnttabUnmapGrantRef>(ctx, cmd, base, count),
        GnttabOp::UnmapAndReplace => unmap_batch::<P, GnttabUnmapAndReplace>(ctx, cmd, base, count),
        GnttabOp::SetupTable => setup_table(ctx, base, count),
        GnttabOp::QuerySize => query_size(ctx, base, count),
        GnttabOp::SetVersion => set_version(ctx, base),
        GnttabOp::GetVersion => get_version(ctx, base),
        GnttabOp::GetStatusFrames => get_status_frames(ctx, base, count),
        GnttabOp::Copy => batched::<P, GnttabCopy>(ctx, cmd, base, count, copy_one),
        GnttabOp::SwapGrantRef => batched::<P, GnttabSwapGrantRef>(ctx, cmd, base, count, swap_one),
        GnttabOp::Transfer => batched::<P, GnttabTransfer>(ctx, cmd, base, count, transfer_one),
        GnttabOp::CacheFlush => cache_flush(ctx, base, count),
        GnttabOp::DumpTable => Err(Errno::ENOSYS.into()),
    }
}

/// Whether `count` structs of `T` at `base` are guest memory (`guest_handle_okay`).
fn range_ok<T>(base: u64, count: u32) -> bool {
    let bytes = (size_of::<T>() as u64).saturating_mul(u64::from(count));
    count == 0 || is_guest_range(base, bytes)
}

/// Runs `f` with the grant-table context of the caller.
fn with_gnt<P: Platform, R>(
    ctx: &mut GuestCtx<'_, P>,
    f: impl FnOnce(&mut Gnt<'_, '_, '_, P::Mem, P::Slots, P::M2pTable, P::Hooks>) -> R,
) -> R {
    let root = ctx.vcpu.kernel_root;
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    ctx.p.gnttab(dom, privileged, |mm, tables, pool| {
        let mut g = Gnt {
            mm,
            tables,
            pool,
            root,
        };
        f(&mut g)
    })
}

/// The loop of the ops that take an array and answer in each element: read element
/// `i`, run `f` on it, write it back; a continuation after [`BATCH`] elements.
fn batched<P: Platform, T: FromBytes + IntoBytes + Immutable>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    base: u64,
    count: u32,
    f: fn(&mut GuestCtx<'_, P>, &mut T) -> Result<(), HvError>,
) -> HvResult {
    if !range_ok::<T>(base, count) {
        return Err(Errno::EFAULT.into());
    }
    let size = size_of::<T>() as u64;
    for i in 0..count {
        if i == BATCH {
            let next = base + u64::from(i) * size;
            return ctx.continuation(
                Hypercall::GrantTableOp,
                [u64::from(cmd), next, u64::from(count - i), 0, 0],
            );
        }
        let at = base + u64::from(i) * size;
        let mut op: T = ctx.p.read_obj(at).map_err(|_| Errno::EFAULT)?;
        f(ctx, &mut op)?;
        ctx.p.write_obj(at, &op).map_err(|_| Errno::EFAULT)?;
    }
    Ok(0)
}

fn map_one<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: &mut GnttabMapGrantRef,
) -> Result<(), HvError> {
    let req = MapReq {
        host_addr: op.host_addr,
        flags: op.flags,
        gref: op.ref_,
        dom: op.dom,
    };
    let r = with_gnt(ctx, |g| g.map(&req));
    op.status = r.status as i16;
    if r.status == GntSt::Okay {
        op.handle = r.handle;
        op.dev_bus_addr = r.dev_bus_addr;
    }
    Ok(())
}

fn copy_one<P: Platform>(ctx: &mut GuestCtx<'_, P>, op: &mut GnttabCopy) -> Result<(), HvError> {
    let c = *op;
    op.status = with_gnt(ctx, |g| g.copy(&c)) as i16;
    Ok(())
}

fn swap_one<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: &mut GnttabSwapGrantRef,
) -> Result<(), HvError> {
    let (a, b) = (op.ref_a, op.ref_b);
    op.status = with_gnt(ctx, |g| g.swap(a, b)) as i16;
    Ok(())
}

fn transfer_one<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: &mut GnttabTransfer,
) -> Result<(), HvError> {
    op.status = transfer(ctx, op.mfn.0, op.domid, op.ref_) as i16;
    Ok(())
}

/// `GNTTABOP_transfer`, one request (`gnttab_transfer`): the caller's frame `mfn`,
/// which nothing may reference, leaves it (and its reservation) and becomes `domid`'s
/// in entry `gref` of its table, which must accept a transfer from the caller. After
/// the frame left the caller every failure frees it, as in Xen.
fn transfer<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    mfn: u64,
    domid: DomId,
    gref: GrantRef,
) -> GntSt {
    let mfn = crate::mm::Mfn(mfn);
    if let Err(s) = with_gnt(ctx, |g| g.steal(mfn)) {
        return s;
    }
    ctx.dom.tot_pages = ctx.dom.tot_pages.saturating_sub(1);
    ctx.p.flush_tlb(FlushKind::Tlb, true);
    let me = ctx.dom.id;
    // The receiver's reservation: one more frame, if it has room.
    let room = |d: &mut crate::domain::Domain| {
        if d.tot_pages >= d.max_pages {
            false
        } else {
            d.tot_pages += 1;
            true
        }
    };
    let reserved = if domid == me {
        Some(room(ctx.dom))
    } else if domid.is_ordinary() {
        ctx.p.with_domain(domid, room)
    } else {
        None
    };
    let status = match reserved {
        None => GntSt::BadDomain,
        Some(false) => GntSt::GeneralError,
        Some(true) => match with_gnt(ctx, |g| g.accept_transfer(domid, gref, mfn)) {
            Ok(()) => return GntSt::Okay,
            Err(s) => {
                let undo =
                    |d: &mut crate::domain::Domain| d.tot_pages = d.tot_pages.saturating_sub(1);
                if domid == me {
                    undo(ctx.dom);
                } else {
                    let _ = ctx.p.with_domain(domid, undo);
                }
                s
            }
        },
    };
    ctx.p.free_frames(mfn, 1);
    status
}

/// What unmap and unmap_and_replace have in common.
trait UnmapOp: FromBytes + IntoBytes + Immutable {
    fn req(&self) -> UnmapReq;
    fn set_status(&mut self, s: GntSt);
}

impl UnmapOp for GnttabUnmapGrantRef {
    fn req(&self) -> UnmapReq {
        UnmapReq {
            host_addr: self.host_addr,
            dev_bus_addr: self.dev_bus_addr,
            new_addr: 0,
            handle: self.handle,
        }
    }
    fn set_status(&mut self, s: GntSt) {
        self.status = s as i16;
    }
}

impl UnmapOp for GnttabUnmapAndReplace {
    fn req(&self) -> UnmapReq {
        UnmapReq {
            host_addr: self.host_addr,
            dev_bus_addr: 0,
            new_addr: self.new_addr,
            handle: self.handle,
        }
    }
    fn set_status(&mut self, s: GntSt) {
        self.status = s as i16;
    }
}

/// `gnttab_unmap_grant_ref` / `gnttab_unmap_and_replace`: up to 32 unmaps, one TLB
/// flush, then their references go.
fn unmap_batch<P: Platform, T: UnmapOp>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    base: u64,
    count: u32,
) -> HvResult {
    if !range_ok::<T>(base, count) {
        return Err(Errno::EFAULT.into());
    }
    let size = size_of::<T>() as u64;
    let mut i = 0u32;
    while i < count {
        if i >= BATCH {
            let next = base + u64::from(i) * size;
            return ctx.continuation(
                Hypercall::GrantTableOp,
                [u64::from(cmd), next, u64::from(count - i), 0, 0],
            );
        }
        let mut pending: heapless::Vec<UnmapDone, UNMAP_BATCH> = heapless::Vec::new();
        let mut fault = false;
        while i < count && !pending.is_full() {
            let at = base + u64::from(i) * size;
            let Ok(mut op) = ctx.p.read_obj::<T>(at) else {
                fault = true;
                break;
            };
            let req = op.req();
            let (status, done) = with_gnt(ctx, |g| g.unmap(&req));
            op.set_status(status);
            if let Some(d) = done {
                let _ = pending.push(d);
            }
            i += 1;
            if ctx.p.write_obj(at, &op).is_err() {
                fault = true;
                break;
            }
        }
        if !pending.is_empty() {
            ctx.p.flush_tlb(FlushKind::Tlb, true);
            with_gnt(ctx, |g| {
                for d in &pending {
                    g.unmap_complete(d);
                }
            });
        }
        if fault {
            return Err(Errno::EFAULT.into());
        }
    }
    Ok(0)
}

/// `GNTTABOP_setup_table` (count must be 1).
fn setup_table<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64, count: u32) -> HvResult {
    if count != 1 {
        return Err(Errno::EINVAL.into());
    }
    let mut op: GnttabSetupTable = ctx.p.read_obj(base).map_err(|_| Errno::EFAULT)?;
    let list = op.frame_list.addr();
    if !range_ok::<u64>(list, op.nr_frames) {
        return Err(Errno::EFAULT.into());
    }
    let (dom, nr) = (op.dom, op.nr_frames);
    match with_gnt(ctx, |g| g.setup_table(dom, nr)) {
        Ok(frames) => {
            op.status = GntSt::Okay as i16;
            for (i, f) in frames.iter().enumerate() {
                if ctx.p.write_obj(list + 8 * i as u64, &f.0).is_err() {
                    op.status = GntSt::BadVirtAddr as i16;
                }
            }
        }
        Err(s) => op.status = s as i16,
    }
    write_status(
        ctx,
        base,
        &op,
        core::mem::offset_of!(GnttabSetupTable, status),
    )
}

/// Writes back only the `status` field of a request at `base` (at `offset`).
fn write_status<P: Platform, T: IntoBytes + Immutable>(
    ctx: &mut GuestCtx<'_, P>,
    base: u64,
    op: &T,
    offset: usize,
) -> HvResult {
    let bytes = op.as_bytes();
    let field = bytes.get(offset..offset + 2).ok_or(Errno::EFAULT)?;
    ctx.p
        .write_guest(base + offset as u64, field)
        .map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `GNTTABOP_query_size` (count must be 1).
fn query_size<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64, count: u32) -> HvResult {
    if count != 1 {
        return Err(Errno::EINVAL.into());
    }
    let mut op: GnttabQuerySize = ctx.p.read_obj(base).map_err(|_| Errno::EFAULT)?;
    let dom = op.dom;
    match with_gnt(ctx, |g| g.query_size(dom)) {
        Ok((nr, max)) => {
            op.nr_frames = nr;
            op.max_nr_frames = max;
            op.status = GntSt::Okay as i16;
        }
        Err(s) => op.status = s as i16,
    }
    ctx.p.write_obj(base, &op).map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `GNTTABOP_set_version`.
fn set_version<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64) -> HvResult {
    let mut op: GnttabSetVersion = ctx.p.read_obj(base).map_err(|_| Errno::EFAULT)?;
    let want = op.version;
    let (res, now) = with_gnt(ctx, |g| g.set_version(want));
    op.version = now;
    ctx.p.write_obj(base, &op).map_err(|_| Errno::EFAULT)?;
    res.map(|()| 0).map_err(HvError::from)
}

/// `GNTTABOP_get_version`.
fn get_version<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64) -> HvResult {
    let mut op: GnttabGetVersion = ctx.p.read_obj(base).map_err(|_| Errno::EFAULT)?;
    let dom = op.dom;
    op.version = with_gnt(ctx, |g| g.get_version(dom))?;
    write_status_u32(ctx, base, op.version)
}

fn write_status_u32<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64, v: u32) -> HvResult {
    let at = base + core::mem::offset_of!(GnttabGetVersion, version) as u64;
    ctx.p.write_obj(at, &v).map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `GNTTABOP_get_status_frames` (count must be 1).
fn get_status_frames<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64, count: u32) -> HvResult {
    if count != 1 {
        return Err(Errno::EINVAL.into());
    }
    let mut op: GnttabGetStatusFrames = ctx.p.read_obj(base).map_err(|_| Errno::EFAULT)?;
    let (dom, nr) = (op.dom, op.nr_frames);
    let list = op.frame_list.addr();
    match with_gnt(ctx, |g| g.get_status_frames(dom, nr)) {
        Ok(frames) => {
            op.status = GntSt::Okay as i16;
            for (i, f) in frames.iter().enumerate() {
                if ctx.p.write_obj(list + 8 * i as u64, &f.0).is_err() {
                    op.status = GntSt::BadVirtAddr as i16;
                }
            }
        }
        Err(s) => op.status = s as i16,
    }
    write_status(
        ctx,
        base,
        &op,
        core::mem::offset_of!(GnttabGetStatusFrames, status),
    )
}

/// `GNTTABOP_cache_flush`: each request checked as Xen checks it.
fn cache_flush<P: Platform>(ctx: &mut GuestCtx<'_, P>, base: u64, count: u32) -> HvResult {
    if !range_ok::<GnttabCacheFlush>(base, count) {
        return Err(Errno::EFAULT.into());
    }
    let size = size_of::<GnttabCacheFlush>() as u64;
    for i in 0..count {
        let op: GnttabCacheFlush = ctx
            .p
            .read_obj(base + u64::from(i) * size)
            .map_err(|_| Errno::EFAULT)?;
        with_gnt(ctx, |g| g.cache_flush(&op))?;
    }
    Ok(0)
}
