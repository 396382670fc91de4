//! The interrupt half of `physdev_op`: `map_pirq`, `unmap_pirq`, `eoi`,
//! `irq_status_query`, `pirq_eoi_gmfn_v1/v2`, `setup_gsi` and `alloc_irq_vector`, on the
//! platform's [`IrqTable`](crate::pirq::IrqTable), with Xen 4.17's checks in Xen's
//! order (`arch/x86/physdev.c`). See `docs/devices.md`, "Interrupts".

use super::{HvError, HvResult};
use crate::evtchn::EvtchnRequest;
use crate::mm::Mfn;
use crate::mm::frame_table::PageType;
use crate::mm::page_type::{get_page_and_type, put_page_and_type};
use crate::msi::{MsiKind, msi_layout};
use crate::pci::Sbdf;
use crate::pirq::PirqError;
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::Errno;
use hypercall_abi::evtchn::EvtchnUnmask;
use hypercall_abi::physdev::{
    MAP_PIRQ_TYPE_GSI, MAP_PIRQ_TYPE_MSI, MAP_PIRQ_TYPE_MSI_SEG, MAP_PIRQ_TYPE_MULTI_MSI,
    PhysdevEoi, PhysdevIrq, PhysdevIrqStatusQuery, PhysdevMapPirq, PhysdevOp, PhysdevPirqEoiGmfn,
    PhysdevSetupGsi, PhysdevUnmapPirq,
};
use hypercall_abi::types::{DomId, EvtchnPort, GuestPtr};

impl From<PirqError> for HvError {
    fn from(e: PirqError) -> Self {
        HvError::Errno(e.errno())
    }
}

/// The domain `domid` names for the current one (`rcu_lock_domain_by_any_id`):
/// (id, hardware domain). -ESRCH if there is none.
pub fn lookup<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    domid: DomId,
) -> Result<(DomId, bool), HvError> {
    if domid == DomId::SELF || domid == ctx.dom.id {
        return Ok((ctx.dom.id, ctx.dom.privileged));
    }
    ctx.p
        .with_domain(domid, |d| (d.id, d.privileged))
        .ok_or(HvError::Errno(Errno::ESRCH))
}

/// Runs the interrupt op `cmd`; `None` if `cmd` is not one of them.
pub fn physdev_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    arg: GuestPtr<()>,
) -> Option<HvResult> {
    let va = arg.addr();
    Some(match PhysdevOp::from_nr(cmd)? {
        PhysdevOp::MapPirq => map_pirq(ctx, va),
        PhysdevOp::UnmapPirq => unmap_pirq(ctx, va),
        PhysdevOp::Eoi => eoi(ctx, va),
        PhysdevOp::IrqStatusQuery => status_query(ctx, va),
        PhysdevOp::PirqEoiGmfnV1 => eoi_gmfn(ctx, va, true),
        PhysdevOp::PirqEoiGmfnV2 => eoi_gmfn(ctx, va, false),
        PhysdevOp::SetupGsi => setup_gsi(ctx, va),
        PhysdevOp::AllocIrqVector => alloc_irq_vector(ctx, va),
        _ => return None,
    })
}

fn map_pirq<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let mut map: PhysdevMapPirq = ctx.p.read_obj(va)?;
    // MSI_SEG carries the segment in the bus field's upper half.
    let (ty, seg) = match map.type_ {
        MAP_PIRQ_TYPE_MSI_SEG => (
            MAP_PIRQ_TYPE_MSI,
            u16::from_le_bytes([map.bus.to_le_bytes()[2], map.bus.to_le_bytes()[3]]),
        ),
        // Refused before anything else, and nothing is written back.
        MAP_PIRQ_TYPE_MULTI_MSI if map.table_base != 0 => return Err(Errno::EINVAL.into()),
        t => (t, 0),
    };
    let ret = map_inner(ctx, &mut map, ty, seg);
    ctx.p.write_obj(va, &map)?;
    ret
}

fn map_inner<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    map: &mut PhysdevMapPirq,
    ty: i32,
    seg: u16,
) -> HvResult {
    let target = lookup(ctx, map.domid)?;
    // xsm_map_domain_pirq(XSM_DM_PRIV): the control domain only.
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    let caller = (ctx.dom.id, ctx.dom.privileged);
    match ty {
        MAP_PIRQ_TYPE_GSI => {
            let (index, want) = (map.index, map.pirq);
            let pirq = ctx.p.irqs(|t, _| t.map_gsi(caller, target, index, want))?;
            map.pirq = i32::try_from(pirq).unwrap_or(i32::MAX);
            Ok(0)
        }
        MAP_PIRQ_TYPE_MSI => {
            let sbdf = Sbdf {
                seg,
                bus: map.bus.to_le_bytes()[0],
                devfn: map.devfn.to_le_bytes()[0],
            };
            // Xen decides by the table base: MSI-X entry `entry_nr` when dom0 gave
            // one (only a hint: Xen reads the BAR itself), else MSI with one vector.
            let entry = if map.table_base != 0 {
                Some(u16::try_from(map.entry_nr).map_err(|_| HvError::Errno(Errno::EINVAL))?)
            } else {
                None
            };
            let known = ctx.p.pci(|s| s.device(sbdf).is_some());
            let (index, want) = (map.index, map.pirq);
            let (pirq, src) = ctx
                .p
                .irqs(|t, chip| t.map_msi(caller, target, index, want, sbdf, known, entry, chip))?;
            if let MsiKind::Msi { pos, ctrl } = src.kind
                && let Some(m) = msi_layout(ctrl).mask
            {
                ctx.p.pci(|s| s.set_msi_bound(sbdf, Some((pos, pos + m))));
            }
            map.pirq = i32::try_from(pirq).unwrap_or(i32::MAX);
            log::debug!(
                "map_pirq: {sbdf} MSI-X entry {entry:?} -> pirq {pirq} for {:?}",
                target.0
            );
            Ok(0)
        }
        // Xen 4.17 takes MULTI_MSI (a power-of-two block of vectors); not offered.
        MAP_PIRQ_TYPE_MULTI_MSI => Err(Errno::EOPNOTSUPP.into()),
        _ => Err(Errno::EINVAL.into()),
    }
}

fn unmap_pirq<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let unmap: PhysdevUnmapPirq = ctx.p.read_obj(va)?;
    let target = lookup(ctx, unmap.domid)?;
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    let freed = ctx.p.irqs(|t, chip| t.unmap(target, unmap.pirq, chip))?;
    if let Some(src) = freed {
        ctx.p.pci(|s| s.set_msi_bound(src.sbdf, None));
    }
    Ok(0)
}

fn eoi<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let e: PhysdevEoi = ctx.p.read_obj(va)?;
    let (me, hw) = (ctx.dom.id, ctx.dom.privileged);
    let unmask = ctx.p.irqs(|t, chip| t.eoi(me, hw, e.irq, chip))?;
    if let Some(port) = unmask {
        // v1's auto_unmask: evtchn_unmask of the pirq's port.
        let caller = super::evtchn::caller(ctx);
        let req = EvtchnRequest::Unmask(EvtchnUnmask {
            port: EvtchnPort(port),
        });
        if let Ok(reply) = ctx.p.evtchn_op(&caller, req)
            && let Some(kick) = reply.kick
        {
            ctx.p.kick(kick);
        }
    }
    Ok(0)
}

fn status_query<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let mut q: PhysdevIrqStatusQuery = ctx.p.read_obj(va)?;
    let (me, hw) = (ctx.dom.id, ctx.dom.privileged);
    q.flags = ctx.p.irqs(|t, _| t.status(me, hw, q.irq))?;
    ctx.p.write_obj(va, &q)?;
    Ok(0)
}

fn eoi_gmfn<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64, v1: bool) -> HvResult {
    let info: PhysdevPirqEoiGmfn = ctx.p.read_obj(va)?;
    let (me, hw) = (ctx.dom.id, ctx.dom.privileged);
    let mfn = Mfn(info.gmfn.0);
    let got = ctx.p.mm(me, hw, |m| {
        get_page_and_type(m, mfn, me, PageType::Writable).is_ok()
    });
    if !got {
        return Err(Errno::EINVAL.into());
    }
    if let Err(e) = ctx.p.irqs(|t, _| t.set_eoi_map(me, hw, mfn, v1)) {
        ctx.p.mm(me, hw, |m| put_page_and_type(m, mfn));
        return Err(e.into());
    }
    Ok(0)
}

fn setup_gsi<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let s: PhysdevSetupGsi = ctx.p.read_obj(va)?;
    let gsis = ctx.p.irqs(|t, _| t.nr_gsis());
    let gsi = u32::try_from(s.gsi)
        .ok()
        .filter(|&g| g < gsis)
        .ok_or(HvError::Errno(Errno::EINVAL))?;
    // xsm_resource_setup_gsi(XSM_PRIV).
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    ctx.p
        .irqs(|t, chip| t.setup_gsi(gsi, s.triggering, s.polarity, chip))?;
    Ok(0)
}

fn alloc_irq_vector<P: Platform>(ctx: &mut GuestCtx<'_, P>, va: u64) -> HvResult {
    let mut op: PhysdevIrq = ctx.p.read_obj(va)?;
    // xsm_apic(XSM_PRIV); the "vector" is the IRQ: the hypervisor owns vectors.
    if !ctx.dom.privileged {
        return Err(HvError::NotPrivileged);
    }
    op.vector = op.irq;
    ctx.p.write_obj(va, &op)?;
    Ok(0)
}
