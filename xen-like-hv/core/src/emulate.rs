//! The few instructions a 64-bit PV guest expects the hypervisor to emulate when they
//! fault in ring 3 (digest §6.7): the forced-emulation `cpuid`, control- and
//! debug-register moves (CR4 is a per-vCPU virtual one, as Xen's `pv_fixup_guest_cr4`
//! makes it), the FS/GS base MSRs, `rdtsc`/`rdtscp` under the guest's CR4.TSD, `clts`,
//! and, from kernel *and* user mode, `cli`/`sti` and port I/O under the virtual IOPL.
//! Anything else is reflected to the guest as the fault it was.

use crate::platform::Platform;
use crate::regs::is_canonical;
use crate::traps::GuestCtx;
use hypercall_abi::xen::XEN_EMULATE_PREFIX;

/// Whether an instruction was emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulation {
    /// Emulated; RIP is past it.
    Done,
    /// Not emulated: deliver the original fault.
    NotEmulated,
    /// The instruction is invalid as the guest used it: deliver #UD instead (a debug
    /// register that does not exist, as Xen's `-ENODEV` from `set_debugreg`).
    InvalidOpcode,
}

/// Longest x86 instruction.
const MAX_INSN: usize = 15;

/// Reads up to 15 instruction bytes at RIP (fewer if the code ends at an unmapped page).
fn fetch<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> ([u8; MAX_INSN], usize) {
    let mut buf = [0u8; MAX_INSN];
    let rip = ctx.regs.rip;
    if ctx.p.read_guest(rip, &mut buf).is_ok() {
        return (buf, MAX_INSN);
    }
    let mut n = 0;
    for (i, b) in buf.iter_mut().enumerate() {
        let mut one = [0u8; 1];
        if ctx
            .p
            .read_guest(rip.wrapping_add(i as u64), &mut one)
            .is_err()
        {
            break;
        }
        *b = one[0];
        n = i + 1;
    }
    (buf, n)
}

const CR0_TS: u64 = 1 << 3;

/// CR4 bits.
pub mod cr4 {
    /// Time-stamp disable: `rdtsc`/`rdtscp` fault outside CPL 0.
    pub const TSD: u64 = 1 << 2;
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Machine-check enable.
    pub const MCE: u64 = 1 << 6;
    /// FXSAVE/FXRSTOR and SSE.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD floating-point exceptions.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// `rd/wr{fs,gs}base` usable.
    pub const FSGSBASE: u64 = 1 << 16;
    /// XSAVE and the XCRs.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Bits a 64-bit PV guest controls in its virtual CR4 (Xen's `PV_CR4_GUEST_MASK`),
    /// each only if its feature is in the CPUID policy.
    pub const GUEST_MASK: u64 = TSD | DE | FSGSBASE | OSXSAVE;
    /// Bits of the real CR4 a PV guest sees in its virtual one (Xen's
    /// `PV_CR4_GUEST_VISIBLE_MASK`).
    pub const VISIBLE_MASK: u64 = PAE | MCE | OSFXSR | OSXMMEXCPT;
}

/// CPUID.7.0 EBX.FSGSBASE.
pub const CPUID7_EBX_FSGSBASE: u32 = 1 << 0;

/// Xen's `pv_fixup_guest_cr4`, for the part the guest controls: of the bits in `cr4`,
/// the guest-controllable ones whose feature the CPUID policy has (TSC, DE, FSGSBASE,
/// XSAVE). Everything else the guest writes is dropped without a fault.
pub fn fixup_guest_cr4<P: Platform>(p: &P, hardware_domain: bool, cr4: u64) -> u64 {
    use crate::cpuid::feat;
    let fs = crate::cpuid::pv_featureset(&|l, s| p.cpuid(l, s), hardware_domain);
    [
        (feat::TSC, cr4::TSD),
        (feat::DE, cr4::DE),
        (feat::FSGSBASE, cr4::FSGSBASE),
        (feat::XSAVE, cr4::OSXSAVE),
    ]
    .iter()
    .filter(|(f, _)| fs.has(*f))
    .fold(0, |m, (_, bit)| m | bit)
        & cr4
        & cr4::GUEST_MASK
}

/// The CR4 the guest reads: its own choice of the guest-controllable bits
/// ([`Vcpu::cr4`](crate::vcpu::Vcpu::cr4)) and the real CR4's visible bits.
pub fn guest_cr4<P: Platform>(p: &P, vcpu: &crate::vcpu::Vcpu) -> u64 {
    (vcpu.cr4 & cr4::GUEST_MASK) | (p.control_regs().1 & cr4::VISIBLE_MASK)
}

/// The CPUID a PV vCPU is shown for `leaf`/`subleaf`: Xen 4.17's default PV policy
/// for this host ([`crate::cpuid::pv_cpuid`]), asked by `path`.
pub fn cpuid_policy<P: Platform>(
    p: &P,
    dom: &crate::domain::Domain,
    vcpu: &crate::vcpu::Vcpu,
    path: crate::cpuid::Path,
    leaf: u32,
    subleaf: u32,
) -> [u32; 4] {
    use crate::cpuid::{Caller, HostInfo, XEN_CPUID_BASE};
    let caller = Caller {
        hardware_domain: dom.privileged,
        kernel_mode: vcpu.kernel_mode,
        path,
        cr4: vcpu.cr4,
        vcpu_id: vcpu.id,
        xcr0: vcpu.xcr0,
        host_osxsave: p.control_regs().1 & cr4::OSXSAVE != 0,
    };
    // The time and machine-address leaves need more than the host's CPUID.
    let info = if (XEN_CPUID_BASE..XEN_CPUID_BASE + 0x200).contains(&leaf) {
        HostInfo {
            tsc_khz: p.physinfo().cpu_khz,
            max_page: p.max_page(),
        }
    } else {
        HostInfo::default()
    };
    crate::cpuid::pv_cpuid(&|l, s| p.cpuid(l, s), &info, leaf, subleaf, &caller)
}

/// Puts the policy's answer for the guest's EAX/ECX into its registers.
fn answer_cpuid<P: Platform>(ctx: &mut GuestCtx<'_, P>, path: crate::cpuid::Path) {
    let leaf = (ctx.regs.rax & 0xFFFF_FFFF) as u32;
    let sub = (ctx.regs.rcx & 0xFFFF_FFFF) as u32;
    let [a, bx, c, d] = cpuid_policy(ctx.p, ctx.dom, ctx.vcpu, path, leaf, sub);
    ctx.regs.rax = u64::from(a);
    ctx.regs.rbx = u64::from(bx);
    ctx.regs.rcx = u64::from(c);
    ctx.regs.rdx = u64::from(d);
}

/// `ud2; .ascii "xen"; cpuid`: the forced-emulation CPUID (digest §6.7). The prefix
/// before anything else stays a #UD.
pub fn forced_cpuid<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> Emulation {
    let (b, n) = fetch(ctx);
    let plen = XEN_EMULATE_PREFIX.len();
    if n < plen + 2 || b[..plen] != XEN_EMULATE_PREFIX || b[plen..plen + 2] != [0x0F, 0xA2] {
        return Emulation::NotEmulated;
    }
    answer_cpuid(ctx, crate::cpuid::Path::Forced);
    ctx.regs.rip = ctx.regs.rip.wrapping_add((plen + 2) as u64);
    Emulation::Done
}

const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_SHADOW_GS_BASE: u32 = 0xC000_0102;

/// A plain `mov` to memory (`88`, `89`, `C6 /0`, `C7 /0`, with operand-size,
/// address-size, segment and REX prefixes): its length and how many bytes it stores.
/// Anything else (a read-modify-write, a string store, a lock or rep prefix) is
/// `None`.
pub fn mov_store(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut i = 0;
    let mut opsize16 = false;
    loop {
        match *bytes.get(i)? {
            0x66 => opsize16 = true,
            0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67 => {}
            _ => break,
        }
        i += 1;
    }
    let mut rex_w = false;
    if let b @ 0x40..=0x4F = *bytes.get(i)? {
        rex_w = b & 8 != 0;
        i += 1;
    }
    let wide = if rex_w {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let op = *bytes.get(i)?;
    let modrm = *bytes.get(i + 1)?;
    i += 2;
    let (size, imm) = match op {
        0x88 => (1, 0),
        0x89 => (wide, 0),
        0xC6 if modrm & 0x38 == 0 => (1, 1),
        0xC7 if modrm & 0x38 == 0 => (wide, if opsize16 { 2 } else { 4 }),
        _ => return None,
    };
    let (md, rm) = (modrm >> 6, modrm & 7);
    if md == 3 {
        return None;
    }
    let mut disp = match md {
        1 => 1,
        2 => 4,
        _ if rm == 5 => 4,
        _ => 0,
    };
    if rm == 4 {
        let sib = *bytes.get(i)?;
        i += 1;
        if md == 0 && sib & 7 == 5 {
            disp = 4;
        }
    }
    let len = i + disp + imm;
    (len <= bytes.len()).then_some((len as u64, size))
}

/// The value a plain `mov` store (as [`mov_store`] takes it) writes: its register
/// (REX.R, and AH..BH for a byte store without REX) or its immediate (sign-extended
/// for a 64-bit store), cut to `size` bytes.
pub fn mov_store_value(bytes: &[u8], regs: &crate::regs::Regs) -> Option<u64> {
    let (len, size) = mov_store(bytes)?;
    let mut i = 0;
    while matches!(
        bytes.get(i)?,
        0x66 | 0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x67
    ) {
        i += 1;
    }
    let rex = match *bytes.get(i)? {
        b @ 0x40..=0x4F => {
            i += 1;
            Some(b)
        }
        _ => None,
    };
    let op = *bytes.get(i)?;
    let modrm = *bytes.get(i + 1)?;
    let v = match op {
        0x88 | 0x89 => {
            let r = (modrm >> 3) & 7 | rex.map_or(0, |x| (x & 4) << 1);
            if op == 0x88 && rex.is_none() && r >= 4 {
                regs.gpr(r - 4) >> 8
            } else {
                regs.gpr(r)
            }
        }
        _ => {
            let n = usize::try_from(size.min(4)).ok()?;
            let at = usize::try_from(len).ok()?.checked_sub(n)?;
            let mut b = [0u8; 4];
            b.get_mut(..n)?.copy_from_slice(bytes.get(at..at + n)?);
            let imm = u32::from_le_bytes(b);
            if size == 8 {
                // imm32, sign-extended
                u64::from_le_bytes(i64::from(i32::from_le_bytes(b)).to_le_bytes())
            } else {
                u64::from(imm)
            }
        }
    };
    Some(if size == 8 {
        v
    } else {
        v & ((1u64 << (size * 8)) - 1)
    })
}

/// A store by the hardware domain's kernel to a read-only MMIO mapping faulted
/// (`frame` is what it maps): Xen's `mmio_ro_do_page_fault`. Only a plain `mov` is
/// taken, and only naturally aligned (Xen also wants the store at CR2 and nothing
/// else); anything else stays the #PF it was. A store into an MMCONFIG region in
/// use is Xen's `mmcfg_intercept_write`: at most 4 bytes, through the configuration
/// write filter, then made through the hypervisor's own mapping. Any other store
/// (the HPET, an MSI-X table) is dropped.
pub fn mmio_ro_store<P: Platform>(ctx: &mut GuestCtx<'_, P>, cr2: u64, frame: u64) -> Emulation {
    let (b, n) = fetch(ctx);
    let code = b.get(..n).unwrap_or(&[]);
    let Some((len, size)) = mov_store(code) else {
        return Emulation::NotEmulated;
    };
    if cr2 % size != 0 {
        return Emulation::NotEmulated;
    }
    let off = u16::try_from(cr2 & 0xFFF).unwrap_or(0);
    if let Some((pa, sbdf)) = ctx.p.pci(|s| s.mcfg_locate(frame)) {
        let Some(value) = mov_store_value(code, ctx.regs).filter(|_| size <= 4) else {
            return Emulation::NotEmulated;
        };
        let mut data = u32::try_from(value).unwrap_or(u32::MAX);
        let size8 = u8::try_from(size).unwrap_or(4);
        if ctx
            .p
            .pci(|s| s.write_intercept(sbdf, off, size8, &mut data))
        {
            ctx.p.mmcfg_write(pa + u64::from(off), size8, data);
        }
    }
    ctx.regs.rip = ctx.regs.rip.wrapping_add(len);
    Emulation::Done
}

/// A store by the guest's kernel to one of its own in-use L1 tables, through its
/// read-only mapping, faulted (Xen's `ptwr_do_page_fault`): decode it
/// ([`ptwr::decode`]), run it against the entry's old value, validate and commit the
/// new entry as `mmu_update` would, and move RIP past it. The store must be naturally
/// aligned and inside CR2's page. Anything not taken, or a new entry the checks
/// refuse, leaves everything as it was and stays the #PF it was.
pub fn ptwr_store<P: Platform>(ctx: &mut GuestCtx<'_, P>, cr2: u64) -> Emulation {
    let (b, n) = fetch(ctx);
    let Some(insn) = ptwr::decode(b.get(..n).unwrap_or(&[]), ctx.regs) else {
        return Emulation::NotEmulated;
    };
    let Some((idx, shift)) = ptwr::placement(insn.addr, insn.size, cr2) else {
        return Emulation::NotEmulated;
    };
    let root = ctx.vcpu.kernel_root;
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let mut regs = *ctx.regs;
    let done = ctx.p.mm(dom, privileged, |m| {
        let Some(l1) = crate::mm::mmu::ptwr_target(m, root, cr2) else {
            return false;
        };
        let full = crate::mm::mmu::ptwr_read(m, l1, idx);
        match ptwr::execute(&insn, full >> shift, &mut regs) {
            None => true,
            Some(v) => {
                let new = ptwr::merge(full, v, insn.size, shift);
                crate::mm::mmu::ptwr_write(m, l1, idx, new).is_ok()
            }
        }
    });
    if !done {
        return Emulation::NotEmulated;
    }
    *ctx.regs = regs;
    ctx.regs.rip = ctx.regs.rip.wrapping_add(insn.len);
    Emulation::Done
}

/// Length of the `int n` instruction at RIP (prefixes included), if that is what it is.
pub fn int_n_length<P: Platform>(ctx: &mut GuestCtx<'_, P>, n: u8) -> Option<u64> {
    let (b, len) = fetch(ctx);
    let bytes = b.get(..len)?;
    let i = bytes
        .iter()
        .position(|&x| !is_legacy_prefix(x) && !(0x40..=0x4F).contains(&x))?;
    (bytes.get(i) == Some(&0xCD) && bytes.get(i + 1) == Some(&n)).then_some(i as u64 + 2)
}

fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2E | 0x36 | 0x3E | 0x64 | 0x65 | 0x66 | 0x67 | 0xF2 | 0xF3
    )
}

/// The guest's view of CR0: the real one, with its virtual TS.
fn guest_cr0<P: Platform>(ctx: &GuestCtx<'_, P>) -> u64 {
    let (cr0, _) = ctx.p.control_regs();
    (cr0 & !CR0_TS) | if ctx.vcpu.fpu_ts { CR0_TS } else { 0 }
}

/// Xen's `iopl_ok`: whether the virtual IOPL lets the vCPU's virtual CPL run `cli`,
/// `sti` and port I/O. Guest user mode is CPL 3; the kernel counts as CPL 1, or CPL 0
/// with the `architectural_iopl` assist.
pub fn iopl_ok(dom: &crate::domain::Domain, vcpu: &crate::vcpu::Vcpu) -> bool {
    let cpl = if !vcpu.kernel_mode {
        3
    } else if dom.assist(hypercall_abi::vm_assist::VmAssistType::ArchitecturalIopl as u32) {
        0
    } else {
        1
    };
    vcpu.iopl >= cpl
}

/// Emulates an instruction that raised #GP(0) in the guest, kernel or user mode (Xen's
/// `pv_emulate_privileged_op`). The IOPL-sensitive ones (`cli`, `sti`, `in`, `out`)
/// are emulated in either mode when [`iopl_ok`] allows; everything else needs CPL 0,
/// which only the guest kernel has, so from user mode it stays the #GP(0) it was (what
/// Xen's emulator raises there too).
pub fn privileged<P: Platform>(ctx: &mut GuestCtx<'_, P>) -> Emulation {
    let (b, n) = fetch(ctx);
    let bytes = b.get(..n).unwrap_or(&[]);
    let (rex, op) = match bytes.first() {
        Some(&r) if (0x40..=0x4F).contains(&r) => (r, bytes.get(1..).unwrap_or(&[])),
        _ => (0, bytes),
    };
    let rex_len = u64::from(rex != 0);
    let iopl_ok = iopl_ok(ctx.dom, ctx.vcpu);
    let done = |ctx: &mut GuestCtx<'_, P>, len: u64| {
        ctx.regs.rip = ctx.regs.rip.wrapping_add(rex_len + len);
        Emulation::Done
    };
    match op {
        // cli / sti: no-ops under sufficient virtual IOPL (Xen does not map them onto
        // the upcall mask); a #GP otherwise.
        [0xFA, ..] | [0xFB, ..] => {
            if iopl_ok {
                done(ctx, 1)
            } else {
                Emulation::NotEmulated
            }
        }
        // From user mode, only port I/O is left.
        // cpuid: it #GPs only under CPUID faulting (the hypervisor turns it on when
        // the CPU has it), from kernel and user mode alike: the policy answers
        // (Xen's "faulted" path), unless the guest asked for faulting itself
        // (MISC_FEATURES_ENABLES), when the #GP is its own.
        [0x0F, 0xA2, ..] => {
            if ctx.vcpu.msrs.misc_features_enables & crate::msr::MISC_FEATURES_CPUID_FAULTING != 0 {
                return Emulation::NotEmulated;
            }
            answer_cpuid(ctx, crate::cpuid::Path::Faulted);
            done(ctx, 2)
        }
        // xsetbv (Xen's emulator and `x86emul_write_xcr`): #UD unless the guest's
        // CR4 has OSXSAVE, then #GP(0) from user mode or for a value Xen refuses.
        [0x0F, 0x01, 0xD1, ..] => {
            if guest_cr4(ctx.p, ctx.vcpu) & cr4::OSXSAVE == 0 {
                return Emulation::InvalidOpcode;
            }
            if !ctx.vcpu.kernel_mode {
                return Emulation::NotEmulated;
            }
            let value = (ctx.regs.rdx << 32) | (ctx.regs.rax & 0xFFFF_FFFF);
            let index = (ctx.regs.rcx & 0xFFFF_FFFF) as u32;
            match crate::xstate::xsetbv(ctx.p.xfeature_mask(), index, value) {
                Ok(xcr0) => {
                    ctx.vcpu.xcr0 = xcr0;
                    ctx.p.set_xcr0(xcr0);
                    done(ctx, 3)
                }
                Err(crate::xstate::Refused) => Emulation::NotEmulated,
            }
        }
        _ if !ctx.vcpu.kernel_mode => port_io(ctx, bytes, iopl_ok),
        // clts
        [0x0F, 0x06, ..] => {
            ctx.vcpu.fpu_ts = false;
            done(ctx, 2)
        }
        // mov %crN, %reg / mov %reg, %crN / mov %drN, %reg / mov %reg, %drN
        [0x0F, opc @ (0x20..=0x23), modrm, ..] if modrm >> 6 == 3 => {
            let reg = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
            let gpr = (modrm & 7) | if rex & 1 != 0 { 8 } else { 0 };
            // Debug registers: a register that does not exist is #UD, a value
            // set_debugreg refuses #GP(0) (Xen's write_dr/read_dr).
            let dr = |r: Result<u64, crate::hypercall::HvError>| match r {
                Ok(v) => Ok(v),
                Err(crate::hypercall::HvError::Errno(hypercall_abi::Errno::ENODEV)) => {
                    Err(Emulation::InvalidOpcode)
                }
                Err(_) => Err(Emulation::NotEmulated),
            };
            let ok = match opc {
                0x20 => read_cr(ctx, reg)
                    .map(|v| ctx.regs.set_gpr(gpr, v))
                    .is_some(),
                0x22 => write_cr(ctx, reg, ctx.regs.gpr(gpr)),
                0x21 => match dr(crate::hypercall::cpu::get_debugreg(
                    ctx.vcpu,
                    u32::from(reg),
                )) {
                    Ok(v) => {
                        ctx.regs.set_gpr(gpr, v);
                        true
                    }
                    Err(e) => return e,
                },
                _ => {
                    let v = ctx.regs.gpr(gpr);
                    let r = crate::hypercall::cpu::set_debugreg(ctx.vcpu, u32::from(reg), v);
                    if let Err(e) = dr(r.map(|()| 0)) {
                        return e;
                    }
                    true
                }
            };
            if ok {
                done(ctx, 3)
            } else {
                Emulation::NotEmulated
            }
        }
        // rdmsr
        [0x0F, 0x32, ..] => {
            let msr = (ctx.regs.rcx & 0xFFFF_FFFF) as u32;
            if matches!(msr, MSR_FS_BASE | MSR_GS_BASE | MSR_SHADOW_GS_BASE) {
                ctx.p.live_bases(ctx.vcpu);
            }
            let v = match msr {
                MSR_FS_BASE => ctx.vcpu.fs_base,
                MSR_GS_BASE => ctx.vcpu.gs_base_kernel,
                MSR_SHADOW_GS_BASE => ctx.vcpu.gs_base_user,
                _ => {
                    let fs = policy_of(ctx.p, ctx.dom);
                    let mctx = msr_ctx(ctx, &fs);
                    let host = HostMsrs(&*ctx.p);
                    match crate::msr::read(&mctx, &ctx.vcpu.msrs, &host, msr) {
                        Ok(v) => v,
                        Err(crate::msr::Gp) => return Emulation::NotEmulated,
                    }
                }
            };
            ctx.regs.rax = v & 0xFFFF_FFFF;
            ctx.regs.rdx = v >> 32;
            done(ctx, 2)
        }
        // wrmsr
        [0x0F, 0x30, ..] => {
            let msr = (ctx.regs.rcx & 0xFFFF_FFFF) as u32;
            let v = (ctx.regs.rdx << 32) | (ctx.regs.rax & 0xFFFF_FFFF);
            if matches!(msr, MSR_FS_BASE | MSR_GS_BASE | MSR_SHADOW_GS_BASE) {
                ctx.p.live_bases(ctx.vcpu);
            }
            let slot = match msr {
                MSR_FS_BASE => &mut ctx.vcpu.fs_base,
                MSR_GS_BASE => &mut ctx.vcpu.gs_base_kernel,
                MSR_SHADOW_GS_BASE => &mut ctx.vcpu.gs_base_user,
                _ => {
                    let fs = policy_of(ctx.p, ctx.dom);
                    let mctx = msr_ctx(ctx, &fs);
                    let mut msrs = ctx.vcpu.msrs;
                    let host = HostMsrs(&*ctx.p);
                    if crate::msr::write(&mctx, &mut msrs, &host, msr, v).is_err() {
                        return Emulation::NotEmulated;
                    }
                    ctx.vcpu.msrs = msrs;
                    // TSC_AUX is loaded on the way back into the guest.
                    ctx.p.load_mode(ctx.vcpu);
                    return done(ctx, 2);
                }
            };
            // A non-canonical base is a #GP, never a hypervisor fault (XSA-193).
            if !is_canonical(v) {
                return Emulation::NotEmulated;
            }
            *slot = v;
            ctx.p.load_mode(ctx.vcpu);
            done(ctx, 2)
        }
        // wbinvd: harmless for the hardware domain, refused otherwise.
        [0x0F, 0x09, ..] if ctx.dom.privileged => done(ctx, 2),
        // rdtsc / rdtscp: they fault only while the guest has set CR4.TSD; its kernel
        // then reads the TSC here (TSC_AUX reads as 0: the guest cannot set it).
        [0x0F, 0x31, ..] => {
            let t = ctx.p.tsc();
            ctx.regs.rax = t & 0xFFFF_FFFF;
            ctx.regs.rdx = t >> 32;
            done(ctx, 2)
        }
        [0x0F, 0x01, 0xF9, ..] if has_rdtscp(ctx.p, ctx.dom) => {
            let t = ctx.p.tsc();
            ctx.regs.rax = t & 0xFFFF_FFFF;
            ctx.regs.rdx = t >> 32;
            ctx.regs.rcx = u64::from(ctx.vcpu.msrs.tsc_aux);
            done(ctx, 3)
        }
        _ => port_io(ctx, bytes, iopl_ok),
    }
}

/// The domain's CPUID policy (Xen 4.17's PV default for this host).
fn policy_of<P: Platform>(p: &P, dom: &crate::domain::Domain) -> crate::cpuid::Featureset {
    crate::cpuid::pv_featureset(&|l, s| p.cpuid(l, s), dom.privileged)
}

/// What the MSR policy needs to know about the caller.
fn msr_ctx<'a, P: Platform>(
    ctx: &GuestCtx<'_, P>,
    policy: &'a crate::cpuid::Featureset,
) -> crate::msr::MsrCtx<'a> {
    let l0 = ctx.p.cpuid(0, 0);
    let vendor = if l0[1] == 0x6874_7541 || l0[1] == 0x6f67_7948 {
        crate::cpuid::Vendor::Amd
    } else {
        crate::cpuid::Vendor::Intel
    };
    let eax1 = ctx.p.cpuid(1, 0)[0];
    let family = (eax1 >> 8) & 0xf;
    let family = if family == 0xf {
        family + ((eax1 >> 20) & 0xff)
    } else {
        family
    };
    crate::msr::MsrCtx {
        policy,
        vendor,
        family,
        hardware_domain: ctx.dom.privileged,
        vcpu_id: ctx.vcpu.id,
        gp_handler: ctx.vcpu.traps[13].address != 0,
        cpuid_faulting: cpuid_faulting(ctx.p),
    }
}

/// Whether the hypervisor runs guests with CPUID faulting: the CPU has it
/// (`MSR_PLATFORM_INFO` bit 31) and it is on (`MSR_MISC_FEATURES_ENABLES` bit 0),
/// which the hypervisor sets at boot when it can, as Xen does for PV guests.
fn cpuid_faulting<P: Platform>(p: &P) -> bool {
    use crate::msr::{MISC_FEATURES_CPUID_FAULTING, PLATFORM_INFO_CPUID_FAULTING, nr};
    p.rdmsr_safe(nr::PLATFORM_INFO)
        .is_some_and(|v| v & PLATFORM_INFO_CPUID_FAULTING != 0)
        && p.rdmsr_safe(nr::MISC_FEATURES_ENABLES)
            .is_some_and(|v| v & MISC_FEATURES_CPUID_FAULTING != 0)
}

/// The host's MSRs through the platform.
struct HostMsrs<'a, P: Platform>(&'a P);

impl<P: Platform> crate::msr::MsrHost for HostMsrs<'_, P> {
    fn rdmsr_safe(&self, msr: u32) -> Option<u64> {
        self.0.rdmsr_safe(msr)
    }
    fn tsc(&self) -> u64 {
        self.0.tsc()
    }
    fn command(&self, msr: u32, value: u64) {
        self.0.msr_command(msr, value);
    }
}

/// Whether the CPUID policy has `rdtscp` (CPUID.80000001h EDX bit 27).
fn has_rdtscp<P: Platform>(p: &P, dom: &crate::domain::Domain) -> bool {
    crate::cpuid::pv_featureset(&|l, s| p.cpuid(l, s), dom.privileged)
        .has(crate::cpuid::feat::RDTSCP)
}

fn read_cr<P: Platform>(ctx: &GuestCtx<'_, P>, cr: u8) -> Option<u64> {
    match cr {
        0 => Some(guest_cr0(ctx)),
        2 => Some(ctx.vcpu.cr2),
        3 => Some(ctx.vcpu.kernel_root.0 << 12),
        4 => Some(guest_cr4(ctx.p, ctx.vcpu)),
        _ => None,
    }
}

fn write_cr<P: Platform>(ctx: &mut GuestCtx<'_, P>, cr: u8, v: u64) -> bool {
    match cr {
        // Only TS may change.
        0 if (v ^ guest_cr0(ctx)) & !CR0_TS == 0 => {
            ctx.vcpu.fpu_ts = v & CR0_TS != 0;
            true
        }
        2 => {
            ctx.vcpu.cr2 = v;
            true
        }
        // A new kernel base, as MMUEXT_NEW_BASEPTR (refused: #GP).
        3 => new_baseptr(ctx, v),
        // The virtual CR4: the guest-controllable bits its CPUID policy allows are
        // taken, everything else is dropped, and the write never faults (Xen's
        // `pv_fixup_guest_cr4`). The hypervisor applies FSGSBASE and TSD to the real
        // CR4 whenever this vCPU runs; the FS/GS bases the guest may then change
        // itself are read back on every entry, so nothing needs refreshing here.
        4 => {
            ctx.vcpu.cr4 = fixup_guest_cr4(ctx.p, ctx.dom.privileged, v);
            true
        }
        _ => false,
    }
}

pub mod ptwr;

#[cfg(test)]
mod tests;

/// `mov %reg, %cr3`: switches the kernel page tables as `MMUEXT_NEW_BASEPTR` would.
fn new_baseptr<P: Platform>(ctx: &mut GuestCtx<'_, P>, cr3: u64) -> bool {
    use crate::mm::mmu::{self, ForeignDomain};
    use hypercall_abi::mmu::{MmuextCmd, MmuextOp};
    let mfn = crate::mm::Mfn((cr3 & 0x000F_FFFF_FFFF_F000) >> 12);
    let op = MmuextOp::on_frame(MmuextCmd::NewBaseptr, mfn);
    let mut vm = ctx.vcpu_mm();
    let (dom, privileged) = (ctx.dom.id, ctx.dom.privileged);
    let result = ctx.p.mm(dom, privileged, |m| {
        let own = ForeignDomain::own(m);
        mmu::mmuext_op(m, &mut vm, op, own)
    });
    match result {
        Ok(flush) => {
            ctx.set_vcpu_mm(vm);
            ctx.apply_flush(flush, hypercall_abi::Errno::EINVAL).is_ok()
        }
        Err(_) => false,
    }
}

/// `in`/`out` from the guest, kernel or user mode (`crate::ioport`): a #GP for the
/// guest without enough virtual IOPL ([`iopl_ok`]); otherwise Xen's `guest_io_read`/
/// `guest_io_write`: made as it is if the domain may reach every port of it, the PCI
/// configuration mechanism emulated, else a read gives all ones and a write is dropped.
fn port_io<P: Platform>(ctx: &mut GuestCtx<'_, P>, bytes: &[u8], iopl_ok: bool) -> Emulation {
    use crate::ioport::{all_ones, decode};
    let dx = u16::try_from(ctx.regs.rdx & 0xFFFF).unwrap_or(0);
    let Some(a) = decode(bytes, dx) else {
        return Emulation::NotEmulated;
    };
    if !iopl_ok {
        return Emulation::NotEmulated;
    }
    let mask = u64::from(all_ones(a.bytes));
    if a.write {
        let v = u32::try_from(ctx.regs.rax & mask).unwrap_or(u32::MAX);
        crate::ioport::guest_io_write(ctx.p, ctx.dom, a.port, a.bytes, v);
    } else {
        let v = crate::ioport::guest_io_read(ctx.p, ctx.dom, a.port, a.bytes);
        // A 32-bit read zero-extends into RAX; narrower ones keep the rest.
        ctx.regs.rax = if a.bytes == 4 {
            u64::from(v)
        } else {
            (ctx.regs.rax & !mask) | (u64::from(v) & mask)
        };
    }
    ctx.regs.rip = ctx.regs.rip.wrapping_add(a.len);
    Emulation::Done
}
