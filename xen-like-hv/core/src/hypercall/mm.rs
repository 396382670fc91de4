//! The memory hypercalls (digest §5.3-§5.6): batched `mmu_update` and `mmuext_op`,
//! `update_va_mapping` (and `_otherdomain`), and `multicall`. The rules live in
//! `crate::mm`; this file copies requests in, loops, flushes and writes results out.

use super::{HvError, HvResult};
use crate::mm::error::MmError;
use crate::mm::mmu::{self, Flush, ForeignDomain, VcpuMm};
use crate::platform::Platform;
use crate::traps::{GuestCtx, Outcome};
use hypercall_abi::Errno;
use hypercall_abi::hypercall::{Hypercall, dispatch};
use hypercall_abi::mmu::{MMU_UPDATE_PREEMPTED, MmuUpdate, MmuextOp};
use hypercall_abi::types::{DomId, GuestPtr};
use hypercall_abi::xen::MulticallEntry;

/// Requests handled per invocation; longer batches continue (Xen's preemption).
const BATCH: u32 = 512;

impl From<MmError> for HvError {
    fn from(e: MmError) -> Self {
        HvError::Errno(e.into())
    }
}

impl<P: Platform> GuestCtx<'_, P> {
    pub(crate) fn vcpu_mm(&self) -> VcpuMm {
        VcpuMm {
            kernel_root: Some(self.vcpu.kernel_root),
            user_root: self.vcpu.user_root,
            ldt_base: self.vcpu.ldt_base,
            ldt_ents: self.vcpu.ldt_ents,
            ldt_frames: self.vcpu.ldt_frames,
        }
    }

    pub(crate) fn set_vcpu_mm(&mut self, m: VcpuMm) {
        let old_kernel = self.vcpu.kernel_root;
        let old_user = self.vcpu.user_root;
        self.vcpu.kernel_root = m.kernel_root.unwrap_or(old_kernel);
        self.vcpu.user_root = m.user_root;
        let ldt_changed = (self.vcpu.ldt_base, self.vcpu.ldt_ents, self.vcpu.ldt_frames)
            != (m.ldt_base, m.ldt_ents, m.ldt_frames);
        self.vcpu.ldt_base = m.ldt_base;
        self.vcpu.ldt_ents = m.ldt_ents;
        self.vcpu.ldt_frames = m.ldt_frames;
        if self.vcpu.kernel_root != old_kernel || self.vcpu.user_root != old_user {
            self.p.load_mode(self.vcpu);
        }
        if ldt_changed {
            self.p.load_ldt(self.vcpu);
        }
    }

    /// Performs `flush`. A vCPU bitmap that cannot be read gives `unreadable`.
    pub(crate) fn apply_flush(&mut self, flush: Flush, unreadable: Errno) -> Result<(), HvError> {
        match flush {
            Flush::None => {}
            Flush::Local(k) => self.p.flush_tlb(k, false),
            Flush::All(k) => self.p.flush_tlb(k, true),
            Flush::Multi(mask, k) => {
                let bits: u64 = self.p.read_obj(mask).map_err(|_| unreadable)?;
                let me = 1u64.checked_shl(self.vcpu.id).unwrap_or(0);
                if bits & me != 0 {
                    self.p.flush_tlb(k, false);
                }
                self.p.flush_tlb_siblings(k, bits & !me);
            }
            Flush::CacheLocal => self.p.flush_cache(false),
            Flush::CacheGlobal => self.p.flush_cache(true),
        }
        Ok(())
    }

    /// Adds `f` to the pending flush, performing the pending one first when the two
    /// cannot be merged.
    fn pend_flush(
        &mut self,
        pending: &mut Flush,
        f: Flush,
        unreadable: Errno,
    ) -> Result<(), HvError> {
        match pending.merge(f) {
            Some(m) => *pending = m,
            None => {
                self.apply_flush(*pending, unreadable)?;
                *pending = f;
            }
        }
        Ok(())
    }
}

/// `update_va_mapping(va, val, flags)` through the current page tables.
pub fn update_va_mapping<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    va: u64,
    val: u64,
    flags: u64,
) -> HvResult {
    let root = ctx.vcpu.active_root();
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let flush = ctx.p.mm(dom, privileged, |m| {
        mmu::update_va_mapping(m, root, va, val, flags)
    })?;
    ctx.apply_flush(flush, Errno::EFAULT)?;
    Ok(0)
}

/// `update_va_mapping_otherdomain`: the new entry maps a frame of `domid`.
pub fn update_va_mapping_otherdomain<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    va: u64,
    val: u64,
    flags: u64,
    domid: DomId,
) -> HvResult {
    let root = ctx.vcpu.active_root();
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let flush = ctx.p.mm(dom, privileged, |m| {
        let foreign = ForeignDomain::for_update_va_mapping(m, domid)?;
        mmu::update_va_mapping_otherdomain(m, root, va, val, flags, foreign)
    })?;
    ctx.apply_flush(flush, Errno::EFAULT)?;
    Ok(0)
}

/// Reads `*pdone` of a preempted batch, and clears the preemption bit of `count`.
fn resume_count<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    count: u32,
    pdone: GuestPtr<u32>,
) -> (u32, u32) {
    if count & MMU_UPDATE_PREEMPTED == 0 {
        return (count, 0);
    }
    let before = if pdone.is_null() {
        0
    } else {
        ctx.p.read_obj::<u32>(pdone.addr()).unwrap_or(0)
    };
    (count & !MMU_UPDATE_PREEMPTED, before)
}

/// `mmu_update(reqs, count, pdone, foreigndom)`: stops at the first failing request,
/// whose error it returns; `*pdone` says how many succeeded.
pub fn mmu_update<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    reqs: GuestPtr<MmuUpdate>,
    count: u32,
    pdone: GuestPtr<u32>,
    foreigndom: u32,
) -> HvResult {
    batch(
        ctx,
        Hypercall::MmuUpdate,
        reqs.cast(),
        count,
        pdone,
        foreigndom,
        |ctx, va, foreigndom| {
            let req: MmuUpdate = ctx.p.read_obj(va)?;
            let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
            Ok(ctx.p.mm(dom, privileged, |m| {
                let foreign = ForeignDomain::for_mmu_update(m, foreigndom)?;
                mmu::mmu_update_entry(m, req, foreign)
            })?)
        },
    )
}

/// `mmuext_op(ops, count, pdone, foreigndom)`: as `mmu_update`, one extended op at a
/// time; each op's flush happens before the next op.
pub fn mmuext_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    ops: GuestPtr<MmuextOp>,
    count: u32,
    pdone: GuestPtr<u32>,
    foreigndom: u32,
) -> HvResult {
    batch(
        ctx,
        Hypercall::MmuextOp,
        ops.cast(),
        count,
        pdone,
        foreigndom,
        |ctx, va, foreigndom| {
            let op: MmuextOp = ctx.p.read_obj(va)?;
            let mut vm = ctx.vcpu_mm();
            let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
            let flush = ctx.p.mm(dom, privileged, |m| {
                let foreign = ForeignDomain::for_mmuext_op(m, foreigndom)?;
                mmu::mmuext_op(m, &mut vm, op, foreign)
            });
            ctx.set_vcpu_mm(vm);
            let flush = flush?;
            ctx.apply_flush(flush, Errno::EINVAL)?;
            Ok(Flush::None)
        },
    )
}

/// The loop shared by `mmu_update` and `mmuext_op`.
fn batch<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    nr: Hypercall,
    list: GuestPtr<()>,
    count: u32,
    pdone: GuestPtr<u32>,
    foreigndom: u32,
    mut one: impl FnMut(&mut GuestCtx<'_, P>, u64, u32) -> Result<Flush, HvError>,
) -> HvResult {
    let size: u64 = if nr == Hypercall::MmuUpdate {
        size_of::<MmuUpdate>()
    } else {
        size_of::<MmuextOp>()
    } as u64;
    let (count, before) = resume_count(ctx, count, pdone);
    let n = count.min(BATCH);
    let mut pending = Flush::None;
    let mut done = 0u32;
    let mut result = Ok(0);
    for i in 0..n {
        let va = list.addr().wrapping_add(u64::from(i) * size);
        match one(ctx, va, foreigndom) {
            Ok(f) => {
                if let Err(e) = ctx.pend_flush(&mut pending, f, Errno::EINVAL) {
                    result = Err(e);
                    break;
                }
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        done += 1;
    }
    let flushed = ctx.apply_flush(pending, Errno::EINVAL);
    if !pdone.is_null() {
        // Like Xen, a failure to report progress is not an error of the batch.
        let _ = ctx.p.write_obj(pdone.addr(), &before.wrapping_add(done));
    }
    result?;
    flushed?;
    if n < count {
        let next = list.addr().wrapping_add(u64::from(n) * size);
        let left = u64::from((count - n) | MMU_UPDATE_PREEMPTED);
        return ctx.continuation(nr, [next, left, pdone.addr(), u64::from(foreigndom), 0]);
    }
    Ok(0)
}

/// `multicall(list, nr)`: runs each entry as a hypercall and stores its result; a
/// failing entry does not stop the batch. An `iret` entry ends it (XSA-213), a nested
/// multicall gets `-EINVAL`, and a sub-call that needs a continuation is written back
/// into its entry and the multicall restarts from there.
pub fn multicall<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    list: GuestPtr<MulticallEntry>,
    nr: u32,
) -> HvResult {
    const ENTRY: u64 = size_of::<MulticallEntry>() as u64;
    for i in 0..nr {
        let va = list.addr().wrapping_add(u64::from(i) * ENTRY);
        let mut e: MulticallEntry = ctx.p.read_obj(va)?;
        let args = [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]];
        if e.op == u64::from(Hypercall::Multicall.nr()) {
            e.result = Errno::EINVAL.encode();
        } else {
            let saved = *ctx.regs;
            let rax = dispatch(ctx, e.op, args);
            if e.op == u64::from(Hypercall::Iret.nr()) {
                // The iret replaced the registers; nothing after it runs.
                return Ok(rax);
            }
            if ctx.outcome == Outcome::RegsReplaced {
                // A continuation: keep its arguments in the entry, restart from it.
                let (cont_nr, cont_args) = ctx.regs.hypercall_args();
                e.op = cont_nr;
                e.args[..5].copy_from_slice(&cont_args);
                ctx.p.write_obj(va, &e)?;
                *ctx.regs = saved;
                ctx.outcome = Outcome::Resume;
                return ctx.continuation(Hypercall::Multicall, [va, u64::from(nr - i), 0, 0, 0]);
            }
            if !matches!(ctx.outcome, Outcome::Resume) {
                // Shutdown, crash or yield: the rest waits.
                e.result = rax;
                ctx.p.write_obj(va.wrapping_add(8), &e.result)?;
                return Ok(0);
            }
            e.result = rax;
        }
        ctx.p.write_obj(va.wrapping_add(8), &e.result)?;
    }
    Ok(0)
}
