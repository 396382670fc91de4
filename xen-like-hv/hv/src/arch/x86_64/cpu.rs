//! Thin wrappers over CPU instructions the rest of the hypervisor needs. The `x86_64`
//! crate provides most of them; this module adds the few it does not and keeps the
//! unsafe in one place.

use core::arch::asm;

pub use x86_64::instructions::hlt;

/// Reads an 8-bit I/O port.
pub fn inb(port: u16) -> u8 {
    // SAFETY: the hypervisor owns all I/O ports; reading one has no memory effect.
    unsafe { x86_64::instructions::port::PortReadOnly::<u8>::new(port).read() }
}

/// Writes an 8-bit I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: the hypervisor owns all I/O ports; callers name devices they drive.
    unsafe { x86_64::instructions::port::PortWriteOnly::<u8>::new(port).write(value) }
}

/// Writes a 32-bit I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe { x86_64::instructions::port::PortWriteOnly::<u32>::new(port).write(value) }
}

/// The limit field of a descriptor table (or TSS) of `size` bytes.
pub const fn table_limit(size: usize) -> u16 {
    assert!(
        size > 0 && size <= 0x1_0000,
        "descriptor tables are at most 64 KiB"
    );
    #[allow(clippy::cast_possible_truncation, reason = "checked just above")]
    let limit = (size - 1) as u16;
    limit
}

/// Reads a model-specific register.
pub fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only called with architectural MSRs that exist on every x86_64 CPU we run on
    // (checked by the caller through CPUID where needed).
    unsafe { x86_64::registers::model_specific::Msr::new(msr).read() }
}

unsafe extern "C" {
    fn rdmsr_safe(msr: u32, ok: *mut u8) -> u64;
    static rdmsr_safe_insn: u8;
    static rdmsr_safe_fixup: u8;
}

/// Reads a model-specific register that may not exist: `None` if `rdmsr` faults.
pub fn rdmsr_checked(msr: u32) -> Option<u64> {
    let mut ok = 0u8;
    // SAFETY: `rdmsr_safe` (entry.s) only reads the MSR; a #GP on it is fixed up by
    // `fixup_rdmsr_fault` and reported through `ok`, a live local.
    let v = unsafe { rdmsr_safe(msr, &raw mut ok) };
    (ok != 0).then_some(v)
}

/// If a hypervisor-context #GP hit `rdmsr_checked`'s `rdmsr`, redirects it to the
/// fixup and returns true.
pub fn fixup_rdmsr_fault(frame: &mut super::trap::TrapFrame) -> bool {
    // Only the symbols' addresses are taken.
    let (insn, fixup) = (
        &raw const rdmsr_safe_insn as u64,
        &raw const rdmsr_safe_fixup as u64,
    );
    if frame.rip == insn {
        frame.rip = fixup;
        return true;
    }
    false
}

/// Writes a model-specific register.
///
/// # Safety
/// The MSR must exist and the value must not break the hypervisor's own state.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: forwarded to the caller.
    unsafe { x86_64::registers::model_specific::Msr::new(msr).write(value) }
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is allowed at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The control and flag registers, for fault reports.
#[derive(Clone, Copy, Debug)]
pub struct ControlRegs {
    /// CR0.
    pub cr0: u64,
    /// CR2 (last page-fault address).
    pub cr2: u64,
    /// CR3 (page-table root).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
}

/// Reads CR0, CR2, CR3 and CR4.
pub fn control_regs() -> ControlRegs {
    let (cr0, cr2, cr3, cr4): (u64, u64, u64, u64);
    // SAFETY: reading control registers at CPL 0 has no side effects.
    unsafe {
        asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack, preserves_flags));
        asm!("mov {}, cr4", out(reg) cr4, options(nomem, nostack, preserves_flags));
    }
    ControlRegs { cr0, cr2, cr3, cr4 }
}

/// Disables interrupts and halts forever.
pub fn halt_forever() -> ! {
    x86_64::instructions::interrupts::disable();
    loop {
        hlt();
    }
}

/// Ends QEMU through `isa-debug-exit` (if present), then halts.
pub fn qemu_exit(code: xlhv_core::exit::QemuExit) -> ! {
    outl(xlhv_core::exit::ISA_DEBUG_EXIT_PORT, code.code());
    halt_forever()
}

/// Reads CR2 (the last page-fault address) alone.
pub fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

const CR0_TS: u64 = 1 << 3;

/// Sets or clears CR0.TS (the guest's virtual TS is carried in the real one, so the
/// guest's next FPU instruction raises #NM when it is set). Touches CR0 only on a
/// change: only this changes TS after boot (`enable_sse` clears it), so the hot path
/// compares with the CPU's record (`percpu::Loaded::cr0_ts`) instead of reading CR0.
pub fn set_cr0_ts(ts: bool) {
    use core::sync::atomic::Ordering;
    let set = &super::percpu::this().loaded.cr0_ts;
    if set.load(Ordering::Relaxed) == ts {
        return;
    }
    set.store(ts, Ordering::Relaxed);
    let cr0: u64;
    // SAFETY: reading CR0 at CPL 0 has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags)) };
    let want = if ts { cr0 | CR0_TS } else { cr0 & !CR0_TS };
    // SAFETY: only TS changes; the hypervisor itself never uses the FPU.
    unsafe { asm!("mov cr0, {}", in(reg) want, options(nostack, preserves_flags)) }
}

const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;

/// CR4.PGE: global pages.
const CR4_PGE: u64 = 1 << 7;

/// Lets guests use SSE: CR4.OSFXSR and OSXMMEXCPT on, CR0.EM off and MP on (what Xen
/// runs PV guests with). The hypervisor itself never touches the FPU. Global pages
/// stay off: every CR3 load then drops every translation, the hypervisor's too, which
/// the CPUs rely on instead of cross-CPU flushes (docs/smp.md).
pub fn enable_sse() {
    let c = control_regs();
    // TS clear too, as `set_cr0_ts`'s record says.
    let cr0 = (c.cr0 | CR0_MP) & !(CR0_EM | CR0_TS);
    let cr4 = (c.cr4 | CR4_OSFXSR | CR4_OSXMMEXCPT) & !CR4_PGE;
    // SAFETY: these bits only change how x87/SSE instructions and their exceptions
    // behave; the hypervisor is built without SSE and never executes them.
    unsafe {
        asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags));
    }
}

const CR4_MCE: u64 = 1 << 6;

/// Turns on CR4.MCE when the CPU has machine checks (CPUID.1:EDX.MCE), as Xen runs:
/// a machine check then raises #MC (reported as fatal) instead of shutting the CPU
/// down, and PV guests see CR4.MCE set in their virtual CR4, as on Xen.
pub fn enable_machine_check() {
    if core::arch::x86_64::__cpuid(1).edx & (1 << 7) == 0 {
        return;
    }
    let cr4 = control_regs().cr4 | CR4_MCE;
    // SAFETY: CR4.MCE only decides how a machine check is delivered; the IDT has a
    // handler for vector 18.
    unsafe { asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) }
}

const MSR_PLATFORM_INFO: u32 = 0xce;
const MSR_MISC_FEATURES_ENABLES: u32 = 0x140;

/// Turns on CPUID faulting when the CPU has it (`MSR_PLATFORM_INFO` bit 31), as Xen
/// does for every PV guest: a `cpuid` outside ring 0 then raises #GP and the
/// hypervisor answers it from the PV policy (`emulate::privileged`), so a guest's
/// native `cpuid`, in its kernel or its user mode, sees the policy too. Returns
/// whether it is on. (QEMU's TCG CPUs do not have it.)
pub fn enable_cpuid_faulting() -> bool {
    let has = rdmsr_checked(MSR_PLATFORM_INFO).is_some_and(|v| v & (1 << 31) != 0);
    let Some(enables) = rdmsr_checked(MSR_MISC_FEATURES_ENABLES).filter(|_| has) else {
        return false;
    };
    // SAFETY: the CPU reports CPUID faulting and the MSR exists (read above); bit 0
    // only makes `cpuid` fault outside ring 0, where only guests run.
    unsafe { wrmsr(MSR_MISC_FEATURES_ENABLES, enables | 1) };
    true
}

const CR4_OSXSAVE: u64 = 1 << 18;

/// The XCR0 components the hypervisor enabled at boot (`enable_xsave`): what every
/// vCPU's state is saved and restored with and what a guest's `xsetbv` may choose
/// from. 0 = no XSAVE (FXSAVE only).
static XFEATURE_MASK: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// XCR0 as this CPU has it now, so that `set_xcr0` writes only a change.
static LOADED_XCR0: [core::sync::atomic::AtomicU64; super::percpu::MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; super::percpu::MAX_CPUS];

/// Turns on CR4.OSXSAVE and sets XCR0 to every component the CPU has that Xen
/// manages and a vCPU's area can hold (`xstate::hypervisor_mask`), as Xen's
/// `xstate_init`. CR4.OSXSAVE stays on while guests run (Xen's does), so their
/// `xgetbv`, `xsave` and AVX work without traps once they set XCR0. Returns the mask
/// (0 if the CPU has no XSAVE).
pub fn enable_xsave() -> u64 {
    use xlhv_core::vcpu::FPU_AREA_SIZE;
    let host = |l: u32, s: u32| {
        let r = core::arch::x86_64::__cpuid_count(l, s);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let Some(mask) = xlhv_core::xstate::hypervisor_mask(&host, FPU_AREA_SIZE) else {
        return 0;
    };
    let cr4 = control_regs().cr4 | CR4_OSXSAVE;
    // SAFETY: the CPU has XSAVE (checked by `hypervisor_mask`); OSXSAVE only enables
    // the XSAVE instructions and XCR0.
    unsafe { asm!("mov cr4, {}", in(reg) cr4, options(nostack, preserves_flags)) };
    write_xcr0(mask);
    XFEATURE_MASK.store(mask, core::sync::atomic::Ordering::Relaxed);
    mask
}

/// The components `enable_xsave` turned on (0 = none).
pub fn xfeature_mask() -> u64 {
    XFEATURE_MASK.load(core::sync::atomic::Ordering::Relaxed)
}

fn write_xcr0(xcr0: u64) {
    super::percpu::mine(&LOADED_XCR0).store(xcr0, core::sync::atomic::Ordering::Relaxed);
    let (lo, hi) = ((xcr0 & 0xFFFF_FFFF) as u32, (xcr0 >> 32) as u32);
    // SAFETY: callers pass the boot mask or a subset that `xstate::xsetbv` accepted
    // (x87 set, valid combinations, all supported), with CR4.OSXSAVE on, so XSETBV
    // cannot fault; the hypervisor itself uses no x87/SSE/AVX state.
    unsafe {
        asm!("xsetbv", in("ecx") 0u32, in("eax") lo, in("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
}

/// Loads XCR0 (only on a change). A vCPU that never set one runs with x87 and SSE.
pub fn set_xcr0(xcr0: u64) {
    let want = if xcr0 == 0 {
        xlhv_core::xstate::FP_SSE
    } else {
        xcr0
    };
    if xfeature_mask() == 0 || want & !xfeature_mask() != 0 {
        return;
    }
    if super::percpu::mine(&LOADED_XCR0).load(core::sync::atomic::Ordering::Relaxed) != want {
        write_xcr0(want);
    }
}

/// Saves the FPU/SSE/AVX registers into `area`, with CR0.TS cleared first: `XSAVE64`
/// of every component the hypervisor manages (XCR0 raised to that mask first, so a
/// component the guest turned off keeps its values), or `FXSAVE64` without XSAVE.
pub fn fpu_save(area: &mut xlhv_core::vcpu::FpuArea) {
    set_cr0_ts(false);
    let mask = xfeature_mask();
    if mask == 0 {
        // SAFETY: `area` is at least 512 bytes, 64-byte aligned (FpuArea's repr),
        // and writable.
        unsafe {
            asm!("fxsave64 [{}]", in(reg) area.0.as_mut_ptr(), options(nostack, preserves_flags));
        }
        return;
    }
    if super::percpu::mine(&LOADED_XCR0).load(core::sync::atomic::Ordering::Relaxed) != mask {
        write_xcr0(mask);
    }
    // SAFETY: `area` is FPU_AREA_SIZE bytes, 64-byte aligned and writable, and the
    // boot code enabled only components whose standard-form layout fits in it.
    unsafe {
        asm!("xsave64 [{}]", in(reg) area.0.as_mut_ptr(), in("eax") u32::MAX, in("edx") u32::MAX,
             options(nostack, preserves_flags));
    }
}

/// Loads the FPU/SSE/AVX registers from `area` (`XRSTOR64` of every managed
/// component, so one the image does not hold starts initial, never another vCPU's;
/// `FXRSTOR64` without XSAVE), with CR0.TS cleared first, then the vCPU's own XCR0.
/// A reserved MXCSR bit would fault: those bits are cleared before loading.
pub fn fpu_restore(area: &mut xlhv_core::vcpu::FpuArea, xcr0: u64) {
    set_cr0_ts(false);
    // MXCSR (bytes 24..28) must not have bits outside MXCSR_MASK; keep the
    // architectural ones only.
    if let Some(m) = area.0.get_mut(24..28) {
        let v = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) & 0xFFFF;
        m.copy_from_slice(&v.to_le_bytes());
    }
    let mask = xfeature_mask();
    if mask == 0 {
        // SAFETY: as in `fpu_save`; the legacy image came from FXSAVE or from
        // FpuArea's default, with MXCSR's reserved bits cleared.
        unsafe {
            asm!("fxrstor64 [{}]", in(reg) area.0.as_ptr(), options(nostack, preserves_flags));
        }
        return;
    }
    if super::percpu::mine(&LOADED_XCR0).load(core::sync::atomic::Ordering::Relaxed) != mask {
        write_xcr0(mask);
    }
    // SAFETY: the image came from XSAVE under this mask, or from FpuArea's default or
    // `from_legacy` (XSTATE_BV 0 or x87|SSE, the rest of the header zero), so its
    // header is valid for XRSTOR with XCR0 = mask; MXCSR's reserved bits are clear.
    unsafe {
        asm!("xrstor64 [{}]", in(reg) area.0.as_ptr(), in("eax") u32::MAX, in("edx") u32::MAX,
             options(nostack, preserves_flags));
    }
    set_xcr0(xcr0);
}

/// Reads DR6 (the status of the last `#DB`).
pub fn read_dr6() -> u64 {
    let v: u64;
    // SAFETY: reading a debug register at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Writes DR6 (only its architectural bits: the upper half must be zero).
pub fn write_dr6(value: u64) {
    let value = value & 0xFFFF_FFFF;
    // SAFETY: DR6 only records debug status; the upper half is cleared above, so the
    // write cannot fault.
    unsafe { asm!("mov dr6, {}", in(reg) value, options(nomem, nostack, preserves_flags)) }
}

/// Reads DR7.
pub fn read_dr7() -> u64 {
    let v: u64;
    // SAFETY: reading a debug register at CPL 0 has no side effects.
    unsafe { asm!("mov {}, dr7", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Writes DR7. The value must have passed `xlhv_core::debugreg` (upper half zero, GD
/// clear, no I/O breakpoints), or be the reset value.
pub fn write_dr7(value: u64) {
    let value = value & 0xFFFF_FFFF & !xlhv_core::debugreg::DR7_GD;
    // SAFETY: the upper half and GD are cleared above, so the write cannot fault or
    // make later debug-register accesses fault; breakpoints it enables are on guest
    // addresses, and a #DB they raise in the hypervisor is handled (trap.rs).
    unsafe { asm!("mov dr7, {}", in(reg) value, options(nomem, nostack, preserves_flags)) }
}

/// Writes breakpoint address register DR`n` (0-3; other values are ignored).
pub fn write_dr_addr(n: usize, value: u64) {
    // SAFETY: DR0-DR3 hold any address; they only matter once DR7 enables them.
    unsafe {
        match n {
            0 => asm!("mov dr0, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            1 => asm!("mov dr1, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            2 => asm!("mov dr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            3 => asm!("mov dr3, {}", in(reg) value, options(nomem, nostack, preserves_flags)),
            _ => {}
        }
    }
}
