//! `event_channel_op` (#32) and the legacy `event_channel_op_compat` (#16): copy the
//! argument in, run it through [`crate::evtchn::dispatch`] on the platform's domains,
//! copy the result out, and act on the kick. See `docs/evtchn.md`.

use super::{HvError, HvResult};
use crate::evtchn::{
    Caller, EvtchnError, EvtchnReply, EvtchnRequest, GlobalVirqPolicy, PirqAccess, fifo,
};
use crate::mm::Mfn;
use crate::mm::frame_table::PageType;
use crate::mm::page_type::{get_page_and_type, put_page_and_type};
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::evtchn::EvtchnOpCompat;
use hypercall_abi::types::GuestPtr;

/// Largest `event_channel_op` argument (`evtchn_status`, 24 bytes), rounded up.
const MAX_ARG: usize = 32;

/// The current domain as the event-channel code sees it: Xen 4.17's rules, no
/// physical IRQs (no device pass-through yet), and the control domain's rights for
/// dom0.
pub fn caller<P: Platform>(ctx: &GuestCtx<'_, P>) -> Caller {
    Caller {
        dom: ctx.dom.id,
        privileged: ctx.dom.privileged,
        global_virqs: GlobalVirqPolicy::Any,
        pirqs: PirqAccess::NONE,
    }
}

fn finish<P: Platform>(ctx: &mut GuestCtx<'_, P>, reply: &EvtchnReply) {
    if let Some(kick) = reply.kick {
        ctx.p.kick(kick);
    }
}

/// Whether the current domain could map machine frame `gfn` as a FIFO control block,
/// as Xen's `map_guest_page` asks: a general reference (the frame exists and is the
/// domain's, or a hypervisor page shared with it) and a writable type reference.
/// Both are dropped again at once; nothing is kept.
fn fifo_frame_usable<P: Platform>(ctx: &mut GuestCtx<'_, P>, gfn: u64) -> bool {
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let mfn = Mfn(gfn);
    ctx.p.mm(dom, privileged, |m| {
        if get_page_and_type(m, mfn, dom, PageType::Writable).is_err() {
            return false;
        }
        put_page_and_type(m, mfn);
        true
    })
}

/// `event_channel_op(cmd, arg)`. Unknown commands are -ENOSYS before anything is read;
/// the result is written back only for the ops that have one, and only on success.
pub fn event_channel_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    arg: GuestPtr<()>,
) -> HvResult {
    let size = EvtchnRequest::arg_size(cmd)
        .ok_or(HvError::Evtchn(crate::evtchn::EvtchnError::UnknownOp(cmd)))?;
    let mut buf = [0u8; MAX_ARG];
    let bytes = buf
        .get_mut(..size)
        .ok_or(HvError::Evtchn(crate::evtchn::EvtchnError::ShortArgument))?;
    if size != 0 {
        ctx.p.read_guest(arg.addr(), bytes)?;
    }
    let req = EvtchnRequest::decode(cmd, bytes)?;
    let reply = match ctx.p.evtchn_op(&caller(ctx), req) {
        Err(EvtchnError::FifoFrameUnchecked(gfn)) => {
            let usable = fifo_frame_usable(ctx, gfn);
            return Err(fifo::finish_init_control(gfn, usable).into());
        }
        r => r?,
    };
    finish(ctx, &reply);
    if let Some(out) = reply.out {
        ctx.p.write_guest(arg.addr(), out.as_bytes())?;
    }
    Ok(0)
}

/// `event_channel_op_compat(op)`: the command inside the structure, the result
/// written back into its union.
pub fn event_channel_op_compat<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: GuestPtr<EvtchnOpCompat>,
) -> HvResult {
    let mut compat: EvtchnOpCompat = ctx.p.read_obj(op.addr())?;
    let req = EvtchnRequest::decode_compat(&compat)?;
    let reply = ctx.p.evtchn_op(&caller(ctx), req)?;
    finish(ctx, &reply);
    if let Some(out) = reply.out {
        out.write_compat(&mut compat);
        ctx.p.write_obj(op.addr(), &compat)?;
    }
    Ok(0)
}
