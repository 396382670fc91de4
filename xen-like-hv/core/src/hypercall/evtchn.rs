//! `event_channel_op` (#32) and the legacy `event_channel_op_compat` (#16): copy the
//! argument in, run it through [`crate::evtchn::dispatch`] on the platform's domains,
//! copy the result out, and act on the kick. See `docs/evtchn.md`.

use super::{HvError, HvResult};
use crate::evtchn::EvtchnOut;
use crate::evtchn::{
    Caller, EvtchnError, EvtchnReply, EvtchnRequest, GlobalVirqPolicy, PirqAccess, fifo,
};
use crate::mm::Mfn;
use crate::mm::frame_table::PageType;
use crate::mm::page_type::{get_page_and_type, put_page_and_type};
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::evtchn::{BIND_PIRQ_WILL_SHARE, EvtchnClose, EvtchnOpCompat};
use hypercall_abi::types::DomId;
use hypercall_abi::types::GuestPtr;

/// Largest `event_channel_op` argument (`evtchn_status`, 24 bytes), rounded up.
const MAX_ARG: usize = 32;

/// The current domain as the event-channel code sees it: Xen 4.17's rules and the
/// control domain's rights for dom0 (pirq access is filled in for `bind_pirq` only,
/// see [`run`]).
pub fn caller<P: Platform>(ctx: &GuestCtx<'_, P>) -> Caller {
    Caller {
        dom: ctx.dom.id,
        privileged: ctx.dom.privileged,
        global_virqs: GlobalVirqPolicy::Any,
        pirqs: PirqAccess::NONE,
    }
}

/// Runs `req` for the current domain, with the physical-IRQ half of Xen's
/// `evtchn_bind_pirq` (`pirq_guest_bind` once the port exists; the port is freed
/// again if that fails) and `evtchn_close` (a closed or reset pirq port unbinds its
/// pirq).
fn run<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    req: EvtchnRequest,
) -> Result<EvtchnReply, EvtchnError> {
    let mut who = caller(ctx);
    let (me, hw) = (ctx.dom.id, ctx.dom.privileged);
    match req {
        EvtchnRequest::BindPirq(b) => {
            who.pirqs = ctx.p.irqs(|t, _| PirqAccess {
                nr_pirqs: t.nr_pirqs(hw),
                permitted: t.pirq_permitted(me, hw, b.pirq),
            });
            let reply = ctx.p.evtchn_op(&who, req)?;
            let Some(EvtchnOut::BindPirq(out)) = reply.out else {
                return Ok(reply);
            };
            let share = b.flags & BIND_PIRQ_WILL_SHARE != 0;
            let port = out.port;
            if let Err(e) = ctx
                .p
                .irqs(|t, chip| t.bind(me, b.pirq, port.0, share, chip))
            {
                let close = EvtchnRequest::Close(EvtchnClose { port });
                let _ = ctx.p.evtchn_op(&who, close);
                return Err(EvtchnError::Pirq(e));
            }
            Ok(reply)
        }
        EvtchnRequest::Close(c) => {
            let reply = ctx.p.evtchn_op(&who, req)?;
            ctx.p.irqs(|t, chip| t.port_closed(me, c.port.0, chip));
            Ok(reply)
        }
        EvtchnRequest::Reset(r) => {
            let reply = ctx.p.evtchn_op(&who, req)?;
            let dom = if r.dom == DomId::SELF { me } else { r.dom };
            ctx.p.irqs(|t, chip| {
                let mut ports = [0u32; crate::pirq::MAX_MAPS];
                let mut n = 0;
                for ((p, _), slot) in t.bound_ports(dom).zip(ports.iter_mut()) {
                    *slot = p;
                    n += 1;
                }
                for &p in ports.get(..n).unwrap_or(&[]) {
                    t.port_closed(dom, p, chip);
                }
            });
            Ok(reply)
        }
        req => ctx.p.evtchn_op(&who, req),
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
    let reply = match run(ctx, req) {
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
    let reply = run(ctx, req)?;
    finish(ctx, &reply);
    if let Some(out) = reply.out {
        out.write_compat(&mut compat);
        ctx.p.write_obj(op.addr(), &compat)?;
    }
    Ok(0)
}
