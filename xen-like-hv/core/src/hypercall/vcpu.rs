//! `set_timer_op` (#15) and `vcpu_op` (#24): timers, runstate, and the vCPU's own
//! state. The timers are fields of the vCPU ([`Timers`]); the platform re-arms the
//! hardware timer when they change and raises `VIRQ_TIMER` when they expire.
//!
//! [`Timers`]: crate::vcpu::Timers

use super::{HvError, HvResult};
use crate::mm::Mfn;
use crate::mm::frame_table::Owner;
use crate::mm::frame_table::PageType;
use crate::mm::page_type::{MachineMemory, get_page_and_type};
use crate::platform::Platform;
use crate::traps::{GuestCtx, Outcome};
use crate::vcpu::{MIN_PERIOD_NS, Vcpu};
use hypercall_abi::Errno;
use hypercall_abi::types::{GuestPtr, VcpuId};
use hypercall_abi::vcpu::{
    VcpuOp, VcpuRegisterRunstateMemoryArea, VcpuRegisterTimeMemoryArea, VcpuRegisterVcpuInfo,
    VcpuSetPeriodicTimer, VcpuSetSingleshotTimer,
};
use hypercall_abi::xen::shared_info::{VcpuInfo, VcpuTimeInfo};
use zerocopy::FromBytes;

/// How far ahead a `set_timer_op` deadline may lie (2^50 ns, about 13 days); beyond
/// it, or negative, Xen takes it for a guest bug and arms the timer 100 ms ahead.
const MAX_TIMER_AHEAD_NS: u64 = 1 << 50;
/// Where Xen arms an out-of-range `set_timer_op` deadline: 100 ms from now.
const BOGUS_TIMER_NS: u64 = 100_000_000;
/// Longest period `VCPUOP_set_periodic_timer` accepts (Xen's `STIME_DELTA_MAX`,
/// 2^62 - 1 ns).
const MAX_PERIOD_NS: u64 = (1 << 62) - 1;

/// `set_timer_op(timeout)`: arms the one-shot timer at absolute system time `timeout`
/// (a past time fires at once); 0 disarms it.
pub fn set_timer_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, timeout: i64) -> HvResult {
    let now = ctx.p.now_ns();
    ctx.vcpu.timers.singleshot = match u64::try_from(timeout) {
        Ok(0) => None,
        Ok(t) if t <= now.saturating_add(MAX_TIMER_AHEAD_NS) => Some(t),
        _ => Some(now.saturating_add(BOGUS_TIMER_NS)),
    };
    ctx.p.timers_changed();
    Ok(0)
}

/// Writes the vCPU's runstate to its registered area, if any (errors are ignored,
/// as in Xen: the area is the guest's business). Its address space must be loaded.
pub fn update_runstate_area<P: Platform>(p: &mut P, vcpu: &Vcpu, now: u64) {
    if vcpu.runstate_area != 0 {
        let _ = p.write_obj(vcpu.runstate_area, &vcpu.runstate_at(now));
    }
}

/// Writes the published `t` to a registered secondary `vcpu_time_info` at `va` as
/// Xen's `update_secondary_system_time` does: the odd version of the update alone
/// first, then the whole record, then the version made even, which is then the
/// primary's (`t.version`). `write(va, bytes)` writes guest memory and says whether
/// it could (a hypercall's platform, or the hypervisor's switch path). False when the
/// first write faults (nothing written).
pub fn write_time_area(
    mut write: impl FnMut(u64, &[u8]) -> bool,
    va: u64,
    t: &VcpuTimeInfo,
) -> bool {
    use zerocopy::IntoBytes;
    let odd = t.version.wrapping_sub(1) | 1;
    if !write(va, odd.as_bytes()) {
        return false;
    }
    let rec = VcpuTimeInfo { version: odd, ..*t };
    let _ = write(va, rec.as_bytes());
    let _ = write(va, odd.wrapping_add(1).as_bytes());
    true
}

/// The vCPU's primary `vcpu_time_info` as the hypervisor last published it (in
/// shared_info, or where `VCPUOP_register_vcpu_info` moved it).
fn published_time<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> VcpuTimeInfo {
    const TIME_OFFSET: u64 = core::mem::offset_of!(VcpuInfo, time) as u64;
    const VCPU_INFO_BYTES: u64 = core::mem::size_of::<VcpuInfo>() as u64;
    let (mfn, at) = match ctx.vcpu.vcpu_info_at {
        Some((mfn, off)) => (mfn, u64::from(off) + TIME_OFFSET),
        None => (
            ctx.dom.shared_info,
            u64::from(ctx.vcpu.id) * VCPU_INFO_BYTES + TIME_OFFSET,
        ),
    };
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let mut bytes = [0u8; 32];
    // vcpu_info is 8-byte aligned and never crosses its page (checked where it is
    // registered), so the record is four whole words of one frame.
    let first = usize::try_from(at / 8).unwrap_or(usize::MAX);
    if first.saturating_add(4) <= 512 {
        ctx.p.mm(dom, privileged, |m| {
            for (i, w) in bytes.chunks_exact_mut(8).enumerate() {
                w.copy_from_slice(&m.mem.read_entry(mfn, first + i).to_le_bytes());
            }
        });
    }
    VcpuTimeInfo::read_from_bytes(&bytes).unwrap_or_default()
}

/// `vcpu_op(cmd, vcpuid, arg)`, as Xen 4.17's `do_vcpu_op`: a vCPU id the domain
/// does not have is -ENOENT before anything else. Most commands act on any vCPU of
/// the caller's domain ([`sibling_op`] for the others); the one-shot timer only on
/// the caller's own (-EINVAL otherwise).
pub fn vcpu_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    vcpuid: VcpuId,
    arg: GuestPtr<()>,
) -> HvResult {
    if vcpuid.0 != ctx.vcpu.id && ctx.siblings.get_mut(vcpuid.0).is_none() {
        return Err(Errno::ENOENT.into());
    }
    let Some(op) = VcpuOp::from_nr(cmd) else {
        return Err(Errno::ENOSYS.into());
    };
    if vcpuid.0 != ctx.vcpu.id {
        return sibling_op(ctx, op, vcpuid.0, arg);
    }
    let now = ctx.p.now_ns();
    match op {
        // The caller has a context, and is up.
        VcpuOp::Initialise => Err(Errno::EEXIST.into()),
        VcpuOp::Up => Ok(0),
        VcpuOp::Down => {
            if ctx.siblings.iter().any(|v| v.online) {
                ctx.vcpu.online = false;
                ctx.outcome = Outcome::Down;
            } else {
                // The last vCPU up going down: the domain powers off (Xen's
                // `domain_shutdown(d, SHUTDOWN_poweroff)`), and the call returns 0.
                ctx.outcome = Outcome::Shutdown(crate::domain::ShutdownReason::Poweroff);
            }
            Ok(0)
        }
        VcpuOp::IsUp => Ok(u64::from(ctx.vcpu.online)),
        VcpuOp::GetRunstateInfo => {
            let r = ctx.vcpu.runstate_at(now);
            ctx.p.write_obj(arg.addr(), &r)?;
            Ok(0)
        }
        VcpuOp::RegisterRunstateMemoryArea => {
            let a: VcpuRegisterRunstateMemoryArea = ctx.p.read_obj(arg.addr())?;
            ctx.vcpu.runstate_area = a.addr;
            update_runstate_area(ctx.p, ctx.vcpu, now);
            Ok(0)
        }
        VcpuOp::SetPeriodicTimer => {
            set_periodic(ctx.p, ctx.vcpu, arg, now)?;
            ctx.p.timers_changed();
            Ok(0)
        }
        VcpuOp::StopPeriodicTimer => {
            ctx.vcpu.timers.period = 0;
            ctx.p.timers_changed();
            Ok(0)
        }
        VcpuOp::SetSingleshotTimer => {
            let t: VcpuSetSingleshotTimer = ctx.p.read_obj(arg.addr())?;
            // VCPU_SSHOTTMR_future is ignored, as in current Xen: a past deadline
            // fires at once.
            ctx.vcpu.timers.singleshot = Some(t.timeout_abs_ns);
            ctx.p.timers_changed();
            Ok(0)
        }
        VcpuOp::StopSingleshotTimer => {
            ctx.vcpu.timers.singleshot = None;
            ctx.p.timers_changed();
            Ok(0)
        }
        VcpuOp::RegisterVcpuInfo => {
            let info: VcpuRegisterVcpuInfo = ctx.p.read_obj(arg.addr())?;
            register_vcpu_info(ctx.p, ctx.dom, ctx.vcpu, info)
        }
        VcpuOp::RegisterVcpuTimeMemoryArea => {
            let addr = time_area_addr(ctx.p, arg)?;
            ctx.vcpu.time_area = addr;
            ctx.vcpu.time_area_pending = false;
            if addr != 0 {
                // Written at once (`force_update_vcpu_system_time`), a fault ignored.
                let t = published_time(ctx);
                write_time_area(|va, b| ctx.p.write_guest(va, b).is_ok(), addr, &t);
            }
            Ok(0)
        }
        VcpuOp::SendNmi => {
            // Delivered on the way out (`GuestCtx::deliver_events`).
            nmi_arg(arg)?;
            ctx.vcpu.nmi_pending = true;
            Ok(0)
        }
        VcpuOp::GetPhysid => get_physid(ctx.p, ctx.dom, ctx.vcpu, arg),
    }
}

/// `VCPUOP_send_nmi` takes no argument: a non-NULL one is -EINVAL.
fn nmi_arg(arg: GuestPtr<()>) -> Result<(), HvError> {
    if arg.addr() == 0 {
        Ok(())
    } else {
        Err(Errno::EINVAL.into())
    }
}

/// `VCPUOP_get_physid` as Xen 4.17's `arch_do_vcpu_op`: only for a vCPU of the
/// privileged domain pinned to one CPU (`dom0_vcpus_pin`), else -EINVAL; the answer
/// is the APIC id of the CPU numbered like the vCPU, with its ACPI processor id in the
/// high half ([`Platform::cpu_physid`]).
fn get_physid<P: Platform>(
    p: &mut P,
    dom: &crate::domain::Domain,
    v: &Vcpu,
    arg: GuestPtr<()>,
) -> HvResult {
    if !dom.privileged || v.affinity_hard.count_ones() != 1 {
        return Err(Errno::EINVAL.into());
    }
    let id = hypercall_abi::vcpu::VcpuGetPhysid {
        phys_id: p.cpu_physid(v.id),
    };
    p.write_obj(arg.addr(), &id)?;
    Ok(0)
}

/// `vcpu_op` on vCPU `id` of the caller's domain, not the caller, with Xen 4.17's
/// rules: `initialise` loads a context into a vCPU that has none (-EEXIST if it has
/// one) and brings it up if the context says `VGCF_online`; `up` needs a context
/// (-EINVAL); `down` takes it off its CPU (the caller is up, so the domain goes on);
/// the one-shot timer is the caller's own only (-EINVAL). Changes take effect when
/// the entry ends ([`Platform::sibling_changed`]).
fn sibling_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: VcpuOp,
    id: u32,
    arg: GuestPtr<()>,
) -> HvResult {
    let now = ctx.p.now_ns();
    let Some(v) = ctx.siblings.get_mut(id) else {
        return Err(Errno::ENOENT.into());
    };
    let changed = match op {
        VcpuOp::Initialise => {
            super::vcpuctx::initialise(ctx.p, ctx.dom, v, arg.addr())?;
            true
        }
        VcpuOp::Up if !v.initialised => return Err(Errno::EINVAL.into()),
        VcpuOp::Up => !core::mem::replace(&mut v.online, true),
        VcpuOp::Down => core::mem::replace(&mut v.online, false),
        VcpuOp::IsUp => return Ok(u64::from(v.online)),
        VcpuOp::GetRunstateInfo => {
            let r = v.runstate_at(now);
            ctx.p.write_obj(arg.addr(), &r)?;
            false
        }
        VcpuOp::RegisterRunstateMemoryArea => {
            let a: VcpuRegisterRunstateMemoryArea = ctx.p.read_obj(arg.addr())?;
            v.runstate_area = a.addr;
            update_runstate_area(ctx.p, v, now);
            false
        }
        VcpuOp::SetPeriodicTimer => {
            set_periodic(ctx.p, v, arg, now)?;
            true
        }
        VcpuOp::StopPeriodicTimer => {
            v.timers.period = 0;
            true
        }
        VcpuOp::SetSingleshotTimer | VcpuOp::StopSingleshotTimer => {
            return Err(Errno::EINVAL.into());
        }
        VcpuOp::RegisterVcpuInfo => {
            let info: VcpuRegisterVcpuInfo = ctx.p.read_obj(arg.addr())?;
            return register_vcpu_info(ctx.p, ctx.dom, v, info);
        }
        VcpuOp::RegisterVcpuTimeMemoryArea => {
            // Written when that vCPU next runs (its own time record).
            v.time_area = time_area_addr(ctx.p, arg)?;
            v.time_area_pending = v.time_area != 0;
            false
        }
        VcpuOp::SendNmi => {
            nmi_arg(arg)?;
            if !core::mem::replace(&mut v.nmi_pending, true) {
                // Xen's `vcpu_kick`: a blocked or polling vCPU wakes, one running on
                // another CPU is interrupted to take it.
                ctx.p.kick(crate::evtchn::Kick {
                    dom: ctx.dom.id,
                    port: hypercall_abi::types::EvtchnPort(0),
                    upcall: Some(VcpuId(id)),
                    pollers: false,
                });
            }
            false
        }
        VcpuOp::GetPhysid => return get_physid(ctx.p, ctx.dom, v, arg),
    };
    if changed {
        ctx.p.sibling_changed(id);
    }
    Ok(0)
}

/// `VCPUOP_set_periodic_timer` on `v`: a period of 1 ms to [`MAX_PERIOD_NS`]
/// (-EINVAL otherwise), first due one period from now.
fn set_periodic<P: Platform>(p: &mut P, v: &mut Vcpu, arg: GuestPtr<()>, now: u64) -> HvResult {
    let t: VcpuSetPeriodicTimer = p.read_obj(arg.addr())?;
    if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&t.period_ns) {
        return Err(Errno::EINVAL.into());
    }
    v.timers.period = t.period_ns;
    v.timers.periodic_next = now.saturating_add(t.period_ns);
    Ok(0)
}

/// The address of a `VCPUOP_register_vcpu_time_memory_area` request. As Xen 4.17's
/// `arch_do_vcpu_op`: the handle must be guest memory (`guest_handle_okay`), else
/// -EFAULT; 0 unregisters.
fn time_area_addr<P: Platform>(p: &mut P, arg: GuestPtr<()>) -> Result<u64, HvError> {
    let a: VcpuRegisterTimeMemoryArea = p.read_obj(arg.addr())?;
    let size = core::mem::size_of::<VcpuTimeInfo>() as u64;
    if !crate::regs::is_guest_range(a.addr, size) {
        return Err(Errno::EFAULT.into());
    }
    Ok(a.addr)
}

/// `VCPUOP_register_vcpu_info`: moves the caller's `vcpu_info` out of shared_info into
/// one of its own frames, once. As in Xen 4.17 (`map_vcpu_info`): an area that would
/// cross the page or is not 8-byte aligned is -ENXIO; a second registration, or a
/// frame that is not the domain's or cannot be writable memory (a page table, a
/// descriptor page), is -EINVAL. The frame keeps a writable type reference until the
/// domain is destroyed.
fn register_vcpu_info<P: Platform>(
    p: &mut P,
    d: &crate::domain::Domain,
    v: &mut Vcpu,
    info: VcpuRegisterVcpuInfo,
) -> HvResult {
    let size = core::mem::size_of::<VcpuInfo>() as u64;
    let align = core::mem::align_of::<VcpuInfo>() as u64;
    let offset = u64::from(info.offset);
    if offset > crate::mm::PAGE_SIZE - size || offset % align != 0 {
        return Err(Errno::ENXIO.into());
    }
    if v.vcpu_info_at.is_some() {
        return Err(Errno::EINVAL.into());
    }
    let (dom, privileged) = (d.id, d.privileged);
    let mfn = Mfn(info.mfn);
    let taken = p.mm(dom, privileged, |m| {
        if m.ft.owner(mfn) != Some(Owner::Domain(dom)) {
            return false;
        }
        get_page_and_type(m, mfn, dom, PageType::Writable).is_ok()
    });
    if !taken {
        return Err(Errno::EINVAL.into());
    }
    v.vcpu_info_at = Some((mfn, info.offset));
    p.move_vcpu_info(v.id, mfn, info.offset);
    Ok(0)
}
