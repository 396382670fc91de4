//! CPU-state hypercalls: the virtual IDT, callbacks, kernel stack, segment bases, debug
//! registers and `iret` (digest §6.1-§6.6).

use super::{HvError, HvResult, canonical};
use crate::platform::Platform;
use crate::regs::{is_canonical, rflags};
use crate::traps::{CrashReason, GuestCtx, Outcome, set_kernel_mode};
use crate::vcpu::{Callback, Vcpu};
use hypercall_abi::Errno;
use hypercall_abi::callback::{
    CALLBACKF_MASK_EVENTS, CallbackOp, CallbackRegister, CallbackType, CallbackUnregister, NmiOp,
    XenNmiCallback,
};
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::types::GuestPtr;
use hypercall_abi::vm_assist::VmAssistType;
use hypercall_abi::xen::arch::{IretContext, TI_DISABLE_EVENTS, VgcfFlags};
use hypercall_abi::xen::{
    FLAT_KERNEL_CS, FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64, SEGBASE_FS,
    SEGBASE_GS_KERNEL, SEGBASE_GS_USER, SEGBASE_GS_USER_SEL, TrapInfo,
};

/// Trap-table entries read per invocation; longer tables continue (Xen's continuation).
const TRAPS_PER_CALL: usize = 256;

/// `set_trap_table`: entries up to the first with address 0 overwrite their vectors;
/// NULL clears the table.
pub fn set_trap_table<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    traps: GuestPtr<TrapInfo>,
) -> HvResult {
    if traps.is_null() {
        ctx.vcpu.traps = [TrapInfo::default(); 256];
        return Ok(0);
    }
    let mut va = traps.addr();
    for _ in 0..TRAPS_PER_CALL {
        let mut t: TrapInfo = ctx.p.read_obj(va)?;
        if t.address == 0 {
            return Ok(0);
        }
        canonical(t.address)?;
        // 64-bit guests: the selector's RPL is forced to 3 (handlers run on
        // FLAT_KERNEL_CS whatever it says).
        t.cs |= 3;
        ctx.vcpu.traps[usize::from(t.vector)] = t;
        va = va.wrapping_add(size_of::<TrapInfo>() as u64);
    }
    ctx.continuation(Hypercall::SetTrapTable, [va, 0, 0, 0, 0])
}

/// `stack_switch`: the stack for bounces from user mode.
pub fn stack_switch<P: Platform>(ctx: &mut GuestCtx<'_, P>, ss: u64, sp: u64) -> HvResult {
    let ss = (ss & 0xFFFF) as u16;
    // As Xen's fixup_guest_stack_selector: the RPL is always 3.
    ctx.vcpu.kernel_ss = ss | 3;
    ctx.vcpu.kernel_sp = sp;
    Ok(0)
}

fn register(vcpu: &mut Vcpu, reg: &CallbackRegister) -> HvResult {
    canonical(reg.address)?;
    let cb = Callback {
        address: reg.address,
        mask_events: reg.flags & CALLBACKF_MASK_EVENTS != 0,
    };
    let cbs = &mut vcpu.callbacks;
    match CallbackType::from_raw(reg.type_) {
        Some(CallbackType::Event) => {
            cbs.event = Callback {
                mask_events: true,
                ..cb
            }
        }
        Some(CallbackType::Failsafe) => cbs.failsafe = cb,
        Some(CallbackType::Syscall) => cbs.syscall = cb,
        Some(CallbackType::Syscall32) => cbs.syscall32 = cb,
        Some(CallbackType::Sysenter) => cbs.sysenter = cb,
        Some(CallbackType::Nmi) => set_nmi(vcpu, reg.address),
        Some(CallbackType::SysenterDeprecated) | None => return Err(Errno::ENOSYS.into()),
    }
    Ok(0)
}

/// The NMI callback is trap 2 with events disabled.
fn set_nmi(vcpu: &mut Vcpu, address: u64) {
    vcpu.callbacks.nmi = Callback {
        address,
        mask_events: true,
    };
    vcpu.traps[2] = TrapInfo {
        vector: 2,
        flags: TI_DISABLE_EVENTS,
        cs: FLAT_KERNEL_CS,
        _pad: 0,
        address,
    };
}

/// `set_callbacks(event, failsafe, syscall)`: registers the three with flags 0. Like
/// Xen it always returns 0 (a non-canonical address is simply not registered).
pub fn set_callbacks<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    event: u64,
    failsafe: u64,
    syscall: u64,
) -> HvResult {
    for (ty, address) in [
        (CallbackType::Event, event),
        (CallbackType::Failsafe, failsafe),
        (CallbackType::Syscall, syscall),
    ] {
        let reg = CallbackRegister {
            type_: ty as u16,
            flags: 0,
            _pad: 0,
            address,
        };
        let _ = register(ctx.vcpu, &reg);
    }
    Ok(0)
}

/// `callback_op`: register any callback; unregister only the NMI one.
pub fn callback_op<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    arg: GuestPtr<()>,
) -> HvResult {
    match CallbackOp::from_nr(cmd) {
        Some(CallbackOp::Register) => {
            let reg: CallbackRegister = ctx.p.read_obj(arg.addr())?;
            register(ctx.vcpu, &reg)
        }
        Some(CallbackOp::Unregister) => {
            let unreg: CallbackUnregister = ctx.p.read_obj(arg.addr())?;
            match CallbackType::from_raw(unreg.type_) {
                Some(CallbackType::Nmi) => {
                    set_nmi(ctx.vcpu, 0);
                    Ok(0)
                }
                // The known types cannot be unregistered; anything else is unknown.
                Some(
                    CallbackType::Event
                    | CallbackType::Failsafe
                    | CallbackType::Syscall
                    | CallbackType::Syscall32
                    | CallbackType::Sysenter,
                ) => Err(Errno::EINVAL.into()),
                Some(CallbackType::SysenterDeprecated) | None => Err(Errno::ENOSYS.into()),
            }
        }
        None => Err(Errno::ENOSYS.into()),
    }
}

/// `nmi_op`: the legacy NMI callback registration.
pub fn nmi_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, arg: GuestPtr<()>) -> HvResult {
    match NmiOp::from_nr(cmd) {
        Some(NmiOp::RegisterCallback) => {
            let cb: XenNmiCallback = ctx.p.read_obj(arg.addr())?;
            canonical(cb.handler_address)?;
            set_nmi(ctx.vcpu, cb.handler_address);
            Ok(0)
        }
        Some(NmiOp::UnregisterCallback) => {
            set_nmi(ctx.vcpu, 0);
            Ok(0)
        }
        None => Err(Errno::ENOSYS.into()),
    }
}

/// `set_segment_base` (x86_64 only).
pub fn set_segment_base<P: Platform>(ctx: &mut GuestCtx<'_, P>, which: u32, base: u64) -> HvResult {
    // What the CPU holds now, so that the write below is compared with it (Linux
    // loads a null %gs, then sets SEGBASE_GS_KERNEL to the base it had before).
    ctx.p.live_bases(ctx.vcpu);
    match which {
        SEGBASE_FS => ctx.vcpu.fs_base = canonical(base)?,
        SEGBASE_GS_USER => ctx.vcpu.gs_base_user = canonical(base)?,
        SEGBASE_GS_KERNEL => ctx.vcpu.gs_base_kernel = canonical(base)?,
        SEGBASE_GS_USER_SEL => {
            // Xen loads the selector into %gs (RPL 3 unless NULL; NULL if it does not
            // load: no error, as Linux expects) and takes the user GS base from it.
            let (sel, base) = ctx.p.load_user_gs_sel((base & 0xFFFF) as u16);
            ctx.vcpu.gs_sel_user = sel;
            ctx.vcpu.gs_base_user = base;
        }
        _ => return Err(Errno::EINVAL.into()),
    }
    ctx.p.load_mode(ctx.vcpu);
    Ok(0)
}

/// Sets debug register `reg` (digest §6.6, [`crate::debugreg`]). Also used to emulate
/// `mov %reg, %drN`. The hardware follows on the way back to the guest.
pub fn set_debugreg(vcpu: &mut Vcpu, reg: u32, value: u64) -> Result<(), HvError> {
    let de = crate::debugreg::guest_cr4_de(vcpu);
    vcpu.debug.set(reg, value, de).map_err(HvError::Errno)
}

/// Reads debug register `reg`.
pub fn get_debugreg(vcpu: &Vcpu, reg: u32) -> HvResult {
    let de = crate::debugreg::guest_cr4_de(vcpu);
    vcpu.debug.get(reg, de).map_err(HvError::Errno)
}

/// `iret`: return from a bounce to user or kernel mode, restoring the upcall mask from
/// the frame's IF (digest §6.5). A bad frame crashes the domain.
pub fn iret<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> HvResult {
    ctx.outcome = Outcome::RegsReplaced;
    let rsp = ctx.regs.rsp;
    let frame: IretContext = match ctx.p.read_obj(rsp) {
        Ok(f) => f,
        Err(_) => {
            ctx.outcome = Outcome::Crash(CrashReason::BadIretFrame { rsp });
            return Ok(0);
        }
    };
    let to_user = frame.cs & 3 == 3;
    if to_user && ctx.vcpu.user_root.is_none() {
        ctx.outcome = Outcome::Crash(CrashReason::NoUserPageTables);
        return Ok(0);
    }
    let cs = (frame.cs & 0xFFFF) | 3;
    let ss = (frame.ss & 0xFFFF) | 3;
    // The flat selectors, or an entry within the guest's own GDT or LDT (a bad
    // descriptor there makes the return fault, which crashes the domain); any other
    // selector would fault on the way out, which is a bad frame too.
    let gdt_ents = u64::from(ctx.vcpu.gdt_ents);
    let ldt_ents = u64::from(ctx.vcpu.ldt_ents);
    let usable = |sel: u64, flat: &[u16]| {
        flat.iter().any(|&f| u64::from(f) == sel)
            || (sel & 4 == 0 && sel >> 3 != 0 && sel >> 3 < gdt_ents)
            || (sel & 4 != 0 && sel >> 3 < ldt_ents)
    };
    // Each refusal names its own reason: the frame was readable, so "unreadable
    // frame" would send whoever reads the log the wrong way. The reported selector is
    // the one the frame held (its low 16 bits), before the RPL is forced to 3.
    let refusal = if !usable(cs, &[FLAT_RING3_CS64, FLAT_RING3_CS32]) {
        Some(CrashReason::BadIretCs {
            cs: u16::try_from(frame.cs & 0xFFFF).unwrap_or_default(),
        })
    } else if !usable(ss, &[FLAT_RING3_SS64]) {
        Some(CrashReason::BadIretSs {
            ss: u16::try_from(frame.ss & 0xFFFF).unwrap_or_default(),
        })
    } else if !is_canonical(frame.rip) {
        Some(CrashReason::BadIretRip { rip: frame.rip })
    } else {
        None
    };
    if let Some(reason) = refusal {
        ctx.outcome = Outcome::Crash(reason);
        return Ok(0);
    }
    set_kernel_mode(ctx.p, ctx.vcpu, !to_user);
    // The NMI is over (Xen's `async_exception_cleanup`): the next one may come.
    ctx.vcpu.nmi_masked = false;
    let flags = (frame.rflags & rflags::DEFINED & !(rflags::IOPL | rflags::VM))
        | rflags::IF
        | rflags::FIXED;
    ctx.p
        .set_upcall_mask(ctx.vcpu.id, u8::from(frame.rflags & rflags::IF == 0));
    if ctx.dom.assist(VmAssistType::ArchitecturalIopl as u32) {
        ctx.vcpu.iopl = ((frame.rflags >> 12) & 3) as u8;
    }
    let r = &mut *ctx.regs;
    r.rax = frame.rax;
    r.rip = frame.rip;
    r.cs = cs;
    r.rflags = flags;
    r.rsp = frame.rsp;
    r.ss = ss;
    if frame.flags & VgcfFlags::IN_SYSCALL.bits() != 0 {
        // Xen returns with SYSRET: RCX and R11 hold RIP and RFLAGS, and the selectors
        // are the flat ones SYSRET loads (32-bit form for a compat CS).
        r.rcx = r.rip;
        r.r11 = flags;
        r.cs = if cs == u64::from(FLAT_RING3_CS32) {
            cs
        } else {
            u64::from(FLAT_RING3_CS64)
        };
        r.ss = u64::from(FLAT_RING3_SS64);
    } else {
        r.rcx = frame.rcx;
        r.r11 = frame.r11;
    }
    Ok(0)
}
