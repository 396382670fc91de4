//! A vCPU's whole state as `struct vcpu_guest_context`: loaded by
//! `XEN_DOMCTL_setvcpucontext` (the domain builder starts a new domain's vCPU with
//! it), read back by `XEN_DOMCTL_getvcpucontext`, and `XEN_DOMCTL_hypercall_init`,
//! which fills a frame of the domain with the hypercall page.
//!
//! Loading follows Xen's `arch_set_info_guest` for a 64-bit PV vCPU: every guest
//! address must be canonical; the LDT page-aligned with at most 8192 entries; the GDT
//! at most [`FIRST_RESERVED_GDT_ENTRY`] entries, its frames audited and typed as
//! descriptor pages; the kernel base pointer (`ctrlreg[3]`) and, if set, the user one
//! (`ctrlreg[1]`) frames of the domain that validate as L4 tables. Anything else is
//! -EINVAL and changes nothing. Selectors get RPL 3, IF is forced on and IOPL moves
//! to the virtual IOPL, as Xen does. The debug registers start from their reset
//! values and take each of `debugreg[0..3]`, `[6]`, `[7]` through `set_debugreg`'s
//! checks; a refused value is silently dropped, as in Xen 4.17 (later Xen refuses
//! the whole context with -EINVAL).

use super::{HvError, HvResult};
use crate::domain::{Domain, DomainState};
use crate::mm::error::MmError;
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::page_type::{HypervisorSlots, MachineMemory, get_page_and_type, put_page_and_type};
use crate::platform::Platform;
use crate::regs::{Regs, is_canonical, rflags};
use crate::traps::GuestCtx;
use crate::vcpu::{Callback, DebugRegs, FpuArea, Vcpu, Wait};
use hypercall_abi::Errno;
use hypercall_abi::domctl::DomctlVcpuContext;
use hypercall_abi::types::{DomId, Mfn};
use hypercall_abi::xen::arch::VgcfFlags;
use hypercall_abi::xen::{
    CpuUserRegs, FIRST_RESERVED_GDT_ENTRY, HYPERVISOR_L4_FIRST, TrapInfo, VcpuGuestContext,
};
use zerocopy::FromZeros;

/// Most LDT entries.
const MAX_LDT_ENTS: u64 = 8192;
/// GDT entries per frame.
const DESCS_PER_PAGE: u64 = 512;

/// The MFN in a 64-bit PV guest's CR3 value (`xen_cr3_to_pfn`).
const fn cr3_mfn(cr3: u64) -> Mfn {
    Mfn(cr3 >> 12)
}

/// Checks everything in `c` that needs no memory lookups; returns the GDT frames.
fn check(c: &VcpuGuestContext) -> Result<heapless::Vec<Mfn, 14>, Errno> {
    let addrs = [
        c.user_regs.rip,
        c.user_regs.rsp,
        c.kernel_sp,
        c.fs_base,
        c.gs_base_kernel,
        c.gs_base_user,
        c.event_callback_eip,
        c.failsafe_callback_eip,
        c.syscall_callback_eip,
    ];
    if addrs.iter().any(|&a| !is_canonical(a))
        || c.trap_ctxt.iter().any(|t| !is_canonical(t.address))
        || (c.ldt_ents != 0 && !is_canonical(c.ldt_base))
        || c.ldt_base % 4096 != 0
        || c.ldt_ents > MAX_LDT_ENTS
        || c.gdt_ents > FIRST_RESERVED_GDT_ENTRY as u64
        || cr3_mfn(c.ctrlreg[3]).0 == 0
    {
        return Err(Errno::EINVAL);
    }
    let nr = usize::try_from(c.gdt_ents.div_ceil(DESCS_PER_PAGE)).unwrap_or(0);
    let mut gdt = heapless::Vec::new();
    for &f in c.gdt_frames.iter().take(nr) {
        gdt.push(Mfn(f)).map_err(|_| Errno::EINVAL)?;
    }
    Ok(gdt)
}

/// The page references a loaded context holds: its base pointers and GDT frames (and,
/// once it runs, the LDT pages mapped on first use).
#[derive(Debug, Default)]
struct Refs {
    roots: heapless::Vec<Mfn, 2>,
    gdt: heapless::Vec<Mfn, 14>,
    ldt: heapless::Vec<Mfn, { crate::mm::mmu::LDT_PAGES }>,
}

/// Takes `refs` in domain `dom`'s memory (all or nothing): the roots as validated L4
/// tables of the domain, the GDT frames as descriptor pages.
fn take<P: Platform>(p: &mut P, dom: DomId, refs: &Refs) -> Result<(), MmError> {
    p.mm(dom, false, |m| {
        for (k, &root) in refs.roots.iter().enumerate() {
            let r = if m.ft.owner(root) == Some(Owner::Domain(dom)) {
                get_page_and_type(m, root, dom, PageType::L4)
            } else {
                Err(MmError::BadFrame(root))
            };
            if let Err(e) = r {
                for &t in refs.roots.iter().take(k) {
                    put_page_and_type(m, t);
                }
                return Err(e);
            }
        }
        if let Err(e) = super::desc::take_gdt_frames(m, dom, &refs.gdt) {
            for &t in &refs.roots {
                put_page_and_type(m, t);
            }
            return Err(e);
        }
        // The kernel base shows the read-only M2P, as after MMUEXT_NEW_BASEPTR.
        if let Some(&kernel) = refs.roots.first() {
            let ro_mpt = m.slots.l4_entry(HYPERVISOR_L4_FIRST);
            m.mem.write_entry(kernel, HYPERVISOR_L4_FIRST, ro_mpt);
        }
        Ok(())
    })
}

/// Drops `refs` in domain `dom`'s memory.
fn put<P: Platform>(p: &mut P, dom: DomId, refs: &Refs) {
    p.mm(dom, false, |m| {
        for &f in refs.roots.iter().chain(&refs.gdt).chain(&refs.ldt) {
            put_page_and_type(m, f);
        }
    });
}

/// Loads checked context `c` into `v` (of `dom`); returns the references the vCPU
/// held before (to drop). `c.ctrlreg[4]` has been fixed up already.
fn load(dom: &mut Domain, v: &mut Vcpu, c: &VcpuGuestContext, gdt: &[Mfn]) -> Refs {
    let mut old = Refs::default();
    if v.kernel_root.0 != 0 {
        let _ = old.roots.push(v.kernel_root);
    }
    if let Some(u) = v.user_root.take() {
        let _ = old.roots.push(u);
    }
    old.gdt = core::mem::take(&mut v.gdt_frames);
    // The new LDT's pages are looked up on first use, as after MMUEXT_SET_LDT.
    old.ldt = v.ldt_frames.iter_mut().filter_map(Option::take).collect();

    let r = &c.user_regs;
    v.sels = [r.ds, r.es, r.fs, r.gs];
    v.failsafe_due = false;
    let flags = r.rflags | rflags::IF | rflags::FIXED;
    v.iopl = u8::try_from((flags & rflags::IOPL) >> 12).unwrap_or(0);
    v.regs = Regs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        vector: 0,
        error_code: 0,
        rip: r.rip,
        cs: u64::from(r.cs | 3),
        rflags: flags & !rflags::IOPL,
        rsp: r.rsp,
        ss: u64::from(r.ss | 3),
    };
    for (mine, t) in v.traps.iter_mut().zip(c.trap_ctxt.iter()) {
        *mine = TrapInfo { cs: t.cs | 3, ..*t };
    }
    v.callbacks.event = Callback {
        address: c.event_callback_eip,
        mask_events: true,
    };
    v.callbacks.failsafe = Callback {
        address: c.failsafe_callback_eip,
        mask_events: v.callbacks.failsafe.mask_events,
    };
    v.callbacks.syscall = Callback {
        address: c.syscall_callback_eip,
        mask_events: v.callbacks.syscall.mask_events,
    };
    v.kernel_ss = u16::try_from(c.kernel_ss & 0xFFFF).unwrap_or(0) | 3;
    v.kernel_sp = c.kernel_sp;
    v.ldt_base = c.ldt_base;
    v.ldt_ents = u32::try_from(c.ldt_ents).unwrap_or(0);
    v.gdt_frames = gdt.iter().copied().collect();
    v.gdt_ents = u32::try_from(c.gdt_ents).unwrap_or(0);
    v.kernel_root = cr3_mfn(c.ctrlreg[3]);
    v.user_root = (c.ctrlreg[1] != 0).then(|| cr3_mfn(c.ctrlreg[1]));
    v.cr4 = c.ctrlreg[4];
    // Reset, then each register through set_debugreg's checks; refused values stay
    // at their reset values (Xen 4.17 reports nothing for them).
    v.debug = DebugRegs::from_context(&c.debugreg, crate::debugreg::guest_cr4_de(v));
    v.fs_base = c.fs_base;
    v.gs_base_kernel = c.gs_base_kernel;
    v.gs_base_user = c.gs_base_user;
    let vgcf = VgcfFlags::from_bits_retain(c.flags);
    v.fpu = if vgcf.contains(VgcfFlags::I387_VALID) {
        FpuArea::from_legacy(c.fpu_ctxt)
    } else {
        FpuArea::default()
    };
    v.kernel_mode = vgcf.contains(VgcfFlags::IN_KERNEL);
    v.wait = Wait::None;
    // Xen's `arch_set_info_guest`: the vCPU has a context now, and is up iff the
    // context says so (the domain builder sets `VGCF_online` for vCPU 0).
    v.initialised = true;
    v.online = vgcf.contains(VgcfFlags::ONLINE);
    if v.id == 0 {
        dom.vm_assist = c.vm_assist;
    }
    old
}

/// `XEN_DOMCTL_setvcpucontext` of vCPU `a.vcpu` of domain `target` (never the
/// caller). The domain must be paused (-EBUSY otherwise); a NULL context (Xen's
/// reset) is not offered (-EINVAL).
pub fn set_vcpu_context<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    a: DomctlVcpuContext,
) -> HvResult {
    if target == ctx.dom.id || a.ctxt == 0 {
        return Err(Errno::EINVAL.into());
    }
    let state = ctx.p.with_domain(target, |d| d.state).ok_or(Errno::ESRCH)?;
    if state == DomainState::Running {
        return Err(Errno::EBUSY.into());
    }
    if ctx.p.with_vcpu(target, a.vcpu, |_, _| ()).is_none() {
        return Err(Errno::EINVAL.into());
    }
    let (c, gdt) = read_and_take(ctx.p, target, ctx.dom.privileged, a.ctxt)?;
    let old = ctx
        .p
        .with_vcpu(target, a.vcpu, |d, v| load(d, v, &c, &gdt))
        .unwrap_or_default();
    put(ctx.p, target, &old);
    Ok(0)
}

/// `VCPUOP_initialise` of `v`, a vCPU of the caller's domain `dom` that is not the
/// caller, from the context at guest address `at` (Xen's `default_initialise_vcpu`):
/// -EFAULT if it cannot be read, -EEXIST if `v` has a context already, -EINVAL if
/// the context does not pass `arch_set_info_guest`'s checks (nothing changes then).
pub fn initialise<P: Platform>(p: &mut P, dom: &mut Domain, v: &mut Vcpu, at: u64) -> HvResult {
    let mut c = VcpuGuestContext::new_zeroed();
    p.read_guest(at, zerocopy::IntoBytes::as_mut_bytes(&mut c))?;
    if v.initialised {
        return Err(Errno::EEXIST.into());
    }
    let (c, gdt) = check_and_take(p, dom.id, dom.privileged, c)?;
    let old = load(dom, v, &c, &gdt);
    put(p, dom.id, &old);
    Ok(0)
}

/// Reads a `vcpu_guest_context` at guest address `at` and [`check_and_take`]s it.
fn read_and_take<P: Platform>(
    p: &mut P,
    target: DomId,
    caller_privileged: bool,
    at: u64,
) -> Result<(VcpuGuestContext, heapless::Vec<Mfn, 14>), HvError> {
    let mut c = VcpuGuestContext::new_zeroed();
    p.read_guest(at, zerocopy::IntoBytes::as_mut_bytes(&mut c))?;
    check_and_take(p, target, caller_privileged, c)
}

/// Checks context `c` for a vCPU of `target` and takes the references it needs
/// there (its base pointers, its GDT frames); fixes up its CR4 as Xen's
/// `pv_fixup_guest_cr4` does. -EINVAL, with nothing taken, if it does not pass.
fn check_and_take<P: Platform>(
    p: &mut P,
    target: DomId,
    caller_privileged: bool,
    mut c: VcpuGuestContext,
) -> Result<(VcpuGuestContext, heapless::Vec<Mfn, 14>), HvError> {
    let gdt = check(&c)?;
    let mut refs = Refs {
        gdt: gdt.clone(),
        ..Refs::default()
    };
    let _ = refs.roots.push(cr3_mfn(c.ctrlreg[3]));
    if c.ctrlreg[1] != 0 {
        let _ = refs.roots.push(cr3_mfn(c.ctrlreg[1]));
    }
    take(p, target, &refs).map_err(|_| Errno::EINVAL)?;
    // The guest-controllable bits the policy allows.
    c.ctrlreg[4] = crate::emulate::fixup_guest_cr4(&*p, caller_privileged, c.ctrlreg[4]);
    Ok((c, gdt))
}

/// What `XEN_DOMCTL_getvcpucontext` reports for `v` (Xen's `arch_get_info_guest`);
/// `real_cr4` supplies the bits of the virtual CR4 the guest does not choose.
pub fn context_of(dom: &Domain, v: &Vcpu, real_cr4: u64) -> VcpuGuestContext {
    let mut c = VcpuGuestContext::new_zeroed();
    let r = &v.regs;
    c.user_regs = CpuUserRegs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        rbp: r.rbp,
        rbx: r.rbx,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rax: r.rax,
        rcx: r.rcx,
        rdx: r.rdx,
        rsi: r.rsi,
        rdi: r.rdi,
        rip: r.rip,
        cs: u16::try_from(r.cs & 0xFFFF).unwrap_or(0),
        rflags: r.rflags | (u64::from(v.iopl) << 12),
        rsp: r.rsp,
        ss: u16::try_from(r.ss & 0xFFFF).unwrap_or(0),
        ds: v.sels[0],
        es: v.sels[1],
        fs: v.sels[2],
        gs: v.sels[3],
        ..CpuUserRegs::new_zeroed()
    };
    let mut flags = VgcfFlags::I387_VALID;
    if v.kernel_mode {
        flags |= VgcfFlags::IN_KERNEL;
    }
    c.flags = flags.bits();
    c.fpu_ctxt = v.fpu.legacy();
    c.trap_ctxt = v.traps;
    c.ldt_base = v.ldt_base;
    c.ldt_ents = u64::from(v.ldt_ents);
    for (slot, f) in c.gdt_frames.iter_mut().zip(v.gdt_frames.iter()) {
        *slot = f.0;
    }
    c.gdt_ents = u64::from(v.gdt_ents);
    c.kernel_ss = u64::from(v.kernel_ss);
    c.kernel_sp = v.kernel_sp;
    c.ctrlreg[3] = v.kernel_root.0 << 12;
    c.ctrlreg[1] = v.user_root.map_or(0, |u| u.0 << 12);
    c.ctrlreg[4] =
        (v.cr4 & crate::emulate::cr4::GUEST_MASK) | (real_cr4 & crate::emulate::cr4::VISIBLE_MASK);
    c.debugreg = v.debug.to_context();
    c.event_callback_eip = v.callbacks.event.address;
    c.failsafe_callback_eip = v.callbacks.failsafe.address;
    c.syscall_callback_eip = v.callbacks.syscall.address;
    c.vm_assist = dom.vm_assist;
    c.fs_base = v.fs_base;
    c.gs_base_kernel = v.gs_base_kernel;
    c.gs_base_user = v.gs_base_user;
    c
}

/// `XEN_DOMCTL_getvcpucontext`: -ENODATA for a vCPU never given a context.
pub fn get_vcpu_context<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    a: DomctlVcpuContext,
) -> HvResult {
    if target == ctx.dom.id || a.ctxt == 0 {
        return Err(Errno::EINVAL.into());
    }
    ctx.p.with_domain(target, |_| ()).ok_or(Errno::ESRCH)?;
    let real_cr4 = ctx.p.control_regs().1;
    let c = ctx
        .p
        .with_vcpu(target, a.vcpu, |d, v| {
            (v.kernel_root.0 != 0).then(|| context_of(d, v, real_cr4))
        })
        .ok_or(Errno::EINVAL)?
        .ok_or(Errno::ENODATA)?;
    ctx.p
        .write_guest(a.ctxt, zerocopy::IntoBytes::as_bytes(&c))?;
    Ok(0)
}

/// `XEN_DOMCTL_hypercall_init`: frame `gmfn` of `target` (writable memory of the
/// domain, else -EINVAL) gets the hypercall page.
pub fn hypercall_init<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    target: DomId,
    gmfn: u64,
) -> HvResult {
    let me = ctx.dom.id;
    if target != me {
        ctx.p.with_domain(target, |_| ()).ok_or(Errno::ESRCH)?;
    }
    let mfn = Mfn(gmfn);
    let typed = ctx.p.mm(target, false, |m| {
        m.ft.owner(mfn) == Some(Owner::Domain(target))
            && get_page_and_type(m, mfn, target, PageType::Writable).is_ok()
    });
    if !typed {
        return Err(HvError::Errno(Errno::EINVAL));
    }
    ctx.p
        .write_frame(mfn, 0, &hypercall_abi::hypercall::hypercall_page_image());
    ctx.p.mm(target, false, |m| put_page_and_type(m, mfn));
    Ok(0)
}
