//! `rdmsr`/`wrmsr` from a PV guest kernel, answered as Xen 4.17 answers them: its
//! common MSR policy (`guest_rdmsr`/`guest_wrmsr` in `msr.c`, the vMCE in
//! `vmce.c`) and then the PV emulator's own cases (`read_msr`/`write_msr` in
//! `pv/emul-priv-op.c`). Everything here is a pure function of the CPUID policy, the
//! vCPU's MSR state and what the host's own MSRs read ([`MsrHost`]); the FS/GS base
//! MSRs are the emulator's (they live in the vCPU's segment state).
//!
//! Three kinds of answer: a value (or, for a write, accepted: stored or dropped
//! without a word), and #GP. A read that would #GP while the guest has no #GP
//! handler reads 0 instead if the host has the MSR (Xen's "faking RDMSR").

use crate::cpuid::{Featureset, Vendor, feat};

/// What the guest sees of one MSR access that does not #GP.
pub type MsrResult<T> = Result<T, Gp>;

/// The access raises #GP(0) in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// The host's own MSRs, for the few Xen forwards.
pub trait MsrHost {
    /// The host's value of `msr`, or `None` if reading it faults on this CPU.
    fn rdmsr_safe(&self, msr: u32) -> Option<u64>;
    /// The time-stamp counter.
    fn tsc(&self) -> u64;
    /// Writes `msr` on the CPU now, for the running vCPU: `PRED_CMD` and
    /// `FLUSH_CMD` (commands), `SPEC_CTRL` (its new value, kept loaded while it runs).
    fn command(&self, msr: u32, value: u64);
}

/// One emulated machine-check bank (Xen's `struct vmce_bank`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McBank {
    /// `MCi_STATUS`.
    pub status: u64,
    /// `MCi_ADDR`.
    pub addr: u64,
    /// `MCi_MISC`.
    pub misc: u64,
    /// `MCi_CTL2` (Intel).
    pub ctl2: u64,
}

/// Banks a guest's vMCE has (Xen's `GUEST_MC_BANK_NUM`).
pub const GUEST_MC_BANKS: usize = 2;

/// A vCPU's MSR state (Xen's `struct vcpu_msrs` and `struct vmce`, the parts a PV
/// guest can reach).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMsrs {
    /// `MSR_TSC_AUX`: what `rdtscp`/`rdpid` return; loaded while the vCPU runs.
    pub tsc_aux: u32,
    /// `MSR_INTEL_MISC_FEATURES_ENABLES`: bit 0 makes the guest's own faulted
    /// `cpuid` a #GP for it (only with CPUID faulting on the host).
    pub misc_features_enables: u64,
    /// `MSR_IA32_MCG_STATUS`.
    pub mcg_status: u64,
    /// The vMCE banks.
    pub mc_banks: [McBank; GUEST_MC_BANKS],
    /// AMD's DR0-DR3 address masks (with the DBEXT feature).
    pub dr_mask: [u32; 4],
    /// `MSR_SPEC_CTRL` (with IBRSB or IBRS in the policy): loaded while the vCPU runs.
    pub spec_ctrl: u64,
}

/// `SPEC_CTRL` bits.
pub mod spec_ctrl {
    /// Indirect branch restricted speculation.
    pub const IBRS: u64 = 1 << 0;
    /// Single thread indirect branch predictors.
    pub const STIBP: u64 = 1 << 1;
    /// Speculative store bypass disable.
    pub const SSBD: u64 = 1 << 2;
    /// Predictive store forwarding disable.
    pub const PSFD: u64 = 1 << 7;
}

/// `PRED_CMD`'s only bit: indirect branch prediction barrier.
pub const PRED_CMD_IBPB: u64 = 1;
/// `FLUSH_CMD`'s only bit: flush the L1 data cache.
pub const FLUSH_CMD_L1D: u64 = 1;

/// The `ARCH_CAPABILITIES` bits Xen 4.17's host policy keeps (and so a PV guest with
/// ARCH_CAPS reads, of the host's): RDCL_NO, IBRS_ALL, RSBA, SKIP_L1DFL, SSB_NO,
/// MDS_NO, IF_PSCHANGE_MC_NO, TSX_CTRL, TAA_NO, SBDR_SSDP_NO, FBSDP_NO, PSDP_NO,
/// FB_CLEAR, RRSBA, BHI_NO, PBRSB_NO.
pub const ARCH_CAPS_KNOWN: u64 =
    0x1ff | (1 << 13) | (1 << 14) | (1 << 15) | (1 << 17) | (1 << 19) | (1 << 20) | (1 << 24);

/// Who asks, and what the policy gives them.
#[derive(Clone, Copy, Debug)]
pub struct MsrCtx<'a> {
    /// The domain's CPUID policy.
    pub policy: &'a Featureset,
    /// The host's vendor (Xen's `boot_cpu_data.x86_vendor`; the policy's is the same).
    pub vendor: Vendor,
    /// The host's family (CPUID 1).
    pub family: u32,
    /// The domain is the hardware domain.
    pub hardware_domain: bool,
    /// The vCPU's id (APIC_BASE's BSP bit).
    pub vcpu_id: u32,
    /// The guest has registered a #GP handler.
    pub gp_handler: bool,
    /// The CPU has CPUID faulting and the hypervisor uses it (`MSR_PLATFORM_INFO`
    /// bit 31): guests are told, and may turn it on for themselves.
    pub cpuid_faulting: bool,
}

/// `MSR_PLATFORM_INFO`'s CPUID-faulting bit.
pub const PLATFORM_INFO_CPUID_FAULTING: u64 = 1 << 31;
/// `MSR_MISC_FEATURES_ENABLES`'s CPUID-faulting bit.
pub const MISC_FEATURES_CPUID_FAULTING: u64 = 1;

/// MSR numbers.
#[allow(missing_docs)]
pub mod nr {
    pub const P5_MC_ADDR: u32 = 0x0;
    pub const P5_MC_TYPE: u32 = 0x1;
    pub const TSC: u32 = 0x10;
    pub const PLATFORM_ID: u32 = 0x17;
    pub const APIC_BASE: u32 = 0x1b;
    pub const TEST_CTRL: u32 = 0x33;
    pub const CORE_THREAD_COUNT: u32 = 0x35;
    pub const FEATURE_CONTROL: u32 = 0x3a;
    pub const SPEC_CTRL: u32 = 0x48;
    pub const PRED_CMD: u32 = 0x49;
    pub const PPIN_CTL: u32 = 0x4e;
    pub const PPIN: u32 = 0x4f;
    pub const UCODE_WRITE: u32 = 0x79;
    pub const UCODE_REV: u32 = 0x8b;
    pub const P6_PERFCTR0: u32 = 0xc1;
    pub const P6_PERFCTR7: u32 = 0xc8;
    pub const PLATFORM_INFO: u32 = 0xce;
    pub const CORE_CAPABILITIES: u32 = 0xcf;
    pub const MPERF: u32 = 0xe7;
    pub const APERF: u32 = 0xe8;
    pub const ARCH_CAPABILITIES: u32 = 0x10a;
    pub const FLUSH_CMD: u32 = 0x10b;
    pub const TSX_FORCE_ABORT: u32 = 0x10f;
    pub const TSX_CTRL: u32 = 0x122;
    pub const MCU_OPT_CTRL: u32 = 0x123;
    pub const MISC_FEATURES_ENABLES: u32 = 0x140;
    pub const MCG_CAP: u32 = 0x179;
    pub const MCG_STATUS: u32 = 0x17a;
    pub const MCG_CTL: u32 = 0x17b;
    pub const P6_EVNTSEL0: u32 = 0x186;
    pub const P6_EVNTSEL3: u32 = 0x189;
    pub const PERF_STATUS: u32 = 0x198;
    pub const PERF_CTL: u32 = 0x199;
    pub const THERM_CONTROL: u32 = 0x19a;
    pub const THERM_STATUS: u32 = 0x19c;
    pub const MISC_ENABLE: u32 = 0x1a0;
    pub const ENERGY_PERF_BIAS: u32 = 0x1b0;
    pub const PAT: u32 = 0x277;
    pub const MC0_CTL2: u32 = 0x280;
    pub const MC31_CTL2: u32 = 0x29f;
    pub const CORE_PERF_FIXED_CTR0: u32 = 0x309;
    pub const CORE_PERF_FIXED_CTR2: u32 = 0x30b;
    pub const PERF_CAPABILITIES: u32 = 0x345;
    pub const CORE_PERF_FIXED_CTR_CTRL: u32 = 0x38d;
    pub const CORE_PERF_GLOBAL_OVF_CTRL: u32 = 0x390;
    pub const MC0_CTL: u32 = 0x400;
    pub const MC31_MISC: u32 = 0x47f;
    pub const MCG_EXT_CTL: u32 = 0x4d0;
    pub const RTIT_OUTPUT_BASE: u32 = 0x560;
    pub const RTIT_ADDR_B7: u32 = 0x58f;
    pub const U_CET: u32 = 0x6a0;
    pub const S_CET: u32 = 0x6a2;
    pub const PL0_SSP: u32 = 0x6a4;
    pub const INTERRUPT_SSP_TABLE: u32 = 0x6a8;
    pub const X2APIC_FIRST: u32 = 0x800;
    pub const X2APIC_LAST: u32 = 0x8ff;
    pub const XSS: u32 = 0xda0;
    pub const XEN_FIRST: u32 = 0x4000_0000;
    pub const XEN_LAST: u32 = 0x4000_02ff;
    pub const EFER: u32 = 0xc000_0080;
    pub const TSC_AUX: u32 = 0xc000_0103;
    pub const LWP_CFG: u32 = 0xc000_0105;
    pub const LWP_CBADDR: u32 = 0xc000_0106;
    pub const K7_EVNTSEL0: u32 = 0xc001_0000;
    pub const K7_PERFCTR3: u32 = 0xc001_0007;
    pub const K8_SYSCFG: u32 = 0xc001_0010;
    pub const K8_HWCR: u32 = 0xc001_0015;
    pub const K8_IORR_BASE0: u32 = 0xc001_0016;
    pub const K8_IORR_MASK1: u32 = 0xc001_0019;
    pub const K8_TOP_MEM1: u32 = 0xc001_001a;
    pub const K8_TOP_MEM2: u32 = 0xc001_001d;
    pub const AMD64_NB_CFG: u32 = 0xc001_001f;
    pub const AMD_PATCHLOADER: u32 = 0xc001_0020;
    pub const K7_FID_VID_CTL: u32 = 0xc001_0041;
    pub const K7_FID_VID_STATUS: u32 = 0xc001_0042;
    pub const FAM10H_MMIO_CONF_BASE: u32 = 0xc001_0058;
    pub const K8_PSTATE_LIMIT: u32 = 0xc001_0061;
    pub const K8_PSTATE7: u32 = 0xc001_006b;
    pub const K8_TSEG_BASE: u32 = 0xc001_0112;
    pub const K8_TSEG_MASK: u32 = 0xc001_0113;
    pub const VIRT_SPEC_CTRL: u32 = 0xc001_011f;
    pub const AMD_FAM15H_EVNTSEL0: u32 = 0xc001_0200;
    pub const AMD_FAM15H_PERFCTR5: u32 = 0xc001_020b;
    pub const AMD_PPIN_CTL: u32 = 0xc001_02f0;
    pub const AMD_PPIN: u32 = 0xc001_02f1;
    pub const AMD64_DR1_ADDRESS_MASK: u32 = 0xc001_1019;
    pub const AMD64_DR3_ADDRESS_MASK: u32 = 0xc001_101b;
    pub const AMD64_DR0_ADDRESS_MASK: u32 = 0xc001_1027;
    pub const AMD64_DE_CFG: u32 = 0xc001_1029;
}

/// The PAT Xen runs with, which a PV guest reads and must live with (WB, WT, UC-,
/// UC, WC, WP, UC, UC).
pub const XEN_PAT: u64 = 0x0000_0501_0007_0406;
/// EFER as a 64-bit PV guest sees it: SCE, LME, LMA, NXE.
pub const GUEST_EFER: u64 = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);

const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_BSP: u64 = 1 << 8;
const FEATURE_CONTROL_LOCK: u64 = 1;
const AMD64_DE_CFG_LFENCE_SERIALISE: u64 = 1 << 1;
/// `MCG_SER_P | MCG_TES_P | MCG_CMCI_P | 2 banks`.
const INTEL_GUEST_MCG_CAP: u64 = (1 << 24) | (1 << 11) | (1 << 10) | GUEST_MC_BANKS as u64;
/// 2 banks.
const AMD_GUEST_MCG_CAP: u64 = GUEST_MC_BANKS as u64;
/// SYSCFG bits dom0 sees: TOM2_FORCE_WB, MTRR_TOM2_EN, MTRR_VAR_DRAM_EN,
/// MTRR_FIX_DRAM_EN.
const SYSCFG_VISIBLE: u64 = (1 << 22) | (1 << 21) | (1 << 20) | (1 << 18);

/// Xen's `guest_misc_enable`: the host's MISC_ENABLE less PERF_AVAIL and
/// MONITOR_ENABLE, with BTS and PEBS unavailable and xTPR messages disabled.
pub fn guest_misc_enable(host: u64) -> u64 {
    (host & !((1 << 7) | (1 << 18))) | (1 << 11) | (1 << 12) | (1 << 23)
}

impl MsrCtx<'_> {
    fn amd(&self) -> bool {
        self.vendor == Vendor::Amd
    }

    fn intel(&self) -> bool {
        self.vendor == Vendor::Intel
    }

    fn mcg_cap(&self) -> u64 {
        if self.intel() {
            INTEL_GUEST_MCG_CAP
        } else {
            AMD_GUEST_MCG_CAP
        }
    }

    fn has_tsc_aux(&self) -> bool {
        self.policy.has(feat::RDTSCP) || self.policy.has(feat::RDPID)
    }

    fn has_dbext(&self) -> bool {
        self.policy.has(crate::cpuid::Feature(3, 26))
    }

    /// `MSR_SPEC_CTRL` exists (Intel's IBRSB or AMD's IBRS).
    fn has_spec_ctrl(&self) -> bool {
        self.policy.has(feat::IBRSB) || self.policy.has(feat::IBRS)
    }

    /// Xen's `msr_spec_ctrl_valid_bits`: IBRS and STIBP (STIBP is ignored where
    /// the CPU lacks it), SSBD and PSFD with their features.
    fn spec_ctrl_valid(&self) -> u64 {
        use crate::cpuid::Feature;
        let p = self.policy;
        let ssbd = p.has(Feature(9, 31)) || p.has(Feature(8, 24));
        let psfd = p.has(Feature(13, 0)) || p.has(Feature(8, 28));
        spec_ctrl::IBRS
            | spec_ctrl::STIBP
            | if ssbd { spec_ctrl::SSBD } else { 0 }
            | if psfd { spec_ctrl::PSFD } else { 0 }
    }
}

/// A vMCE bank MSR of the guest's 2 banks: (bank, register 0-3: CTL, STATUS, ADDR,
/// MISC).
fn mc_bank(msr: u32) -> Option<(usize, u32)> {
    let off = msr.checked_sub(nr::MC0_CTL)?;
    let bank = usize::try_from(off / 4).ok()?;
    (bank < GUEST_MC_BANKS).then_some((bank, off % 4))
}

/// The Intel/AMD performance-counter MSRs that go to the (disabled) vPMU: they read
/// 0 and drop writes.
fn vpmu_msr(ctx: &MsrCtx<'_>, msr: u32) -> bool {
    use nr::*;
    let intel = matches!(msr,
        P6_PERFCTR0..=P6_PERFCTR7
        | P6_EVNTSEL0..=P6_EVNTSEL3
        | CORE_PERF_FIXED_CTR0..=CORE_PERF_FIXED_CTR2
        | CORE_PERF_FIXED_CTR_CTRL..=CORE_PERF_GLOBAL_OVF_CTRL);
    let amd = matches!(msr,
        AMD_FAM15H_EVNTSEL0..=AMD_FAM15H_PERFCTR5 | K7_EVNTSEL0..=K7_PERFCTR3);
    (intel && ctx.intel()) || (amd && ctx.amd())
}

/// MSRs no PV guest may touch at all (write-only, or not offered), for reads.
fn never_readable(msr: u32) -> bool {
    use nr::*;
    matches!(
        msr,
        AMD_PATCHLOADER
            | UCODE_WRITE
            | PRED_CMD
            | FLUSH_CMD
            | TEST_CTRL
            | CORE_CAPABILITIES
            | TSX_FORCE_ABORT
            | TSX_CTRL
            | MCU_OPT_CTRL
            | RTIT_OUTPUT_BASE..=RTIT_ADDR_B7
            | U_CET
            | S_CET
            | PL0_SSP..=INTERRUPT_SSP_TABLE
            | LWP_CFG
            | LWP_CBADDR
            | PPIN_CTL
            | PPIN
            | AMD_PPIN_CTL
            | AMD_PPIN
    )
}

/// MSRs a PV guest may never write: read-only ones and the ones not offered.
fn never_writable(msr: u32) -> bool {
    use nr::*;
    matches!(
        msr,
        PLATFORM_ID
            | CORE_CAPABILITIES
            | CORE_THREAD_COUNT
            | PLATFORM_INFO
            | ARCH_CAPABILITIES
            | TEST_CTRL
            | TSX_FORCE_ABORT
            | TSX_CTRL
            | MCU_OPT_CTRL
            | RTIT_OUTPUT_BASE..=RTIT_ADDR_B7
            | U_CET
            | S_CET
            | PL0_SSP..=INTERRUPT_SSP_TABLE
            | LWP_CFG
            | LWP_CBADDR
            | PPIN_CTL
            | PPIN
            | AMD_PPIN_CTL
            | AMD_PPIN
            // This hypervisor offers no microcode loading, AMD's VIRT_SPEC_CTRL (its
            // VIRT_SSBD is never in a PV policy) or XSAVES.
            | AMD_PATCHLOADER
            | UCODE_WRITE
            | VIRT_SPEC_CTRL
            | XSS
            | X2APIC_FIRST..=X2APIC_LAST
    )
}

/// `rdmsr` of `msr` (not FS_BASE, GS_BASE or SHADOW_GS_BASE: the caller's).
pub fn read(ctx: &MsrCtx<'_>, msrs: &VcpuMsrs, host: &dyn MsrHost, msr: u32) -> MsrResult<u64> {
    let r = read_inner(ctx, msrs, host, msr);
    // A guest without a #GP handler would die of the fault: Xen reads 0 instead if
    // the host has the MSR (outside its own range).
    if r.is_err() && !ctx.gp_handler && msr >> 16 != 0x4000 && host.rdmsr_safe(msr).is_some() {
        return Ok(0);
    }
    r
}

fn read_inner(ctx: &MsrCtx<'_>, msrs: &VcpuMsrs, host: &dyn MsrHost, msr: u32) -> MsrResult<u64> {
    use nr::*;
    let amd = ctx.amd();
    let intel = ctx.intel();
    // guest_rdmsr
    let v = match msr {
        m if never_readable(m) => return Err(Gp),
        FEATURE_CONTROL if intel => FEATURE_CONTROL_LOCK,
        FEATURE_CONTROL => return Err(Gp),
        PLATFORM_ID if intel => host.rdmsr_safe(msr).ok_or(Gp)?,
        PLATFORM_ID => return Err(Gp),
        UCODE_REV => host.rdmsr_safe(msr).ok_or(Gp)?,
        SPEC_CTRL if ctx.has_spec_ctrl() => msrs.spec_ctrl,
        SPEC_CTRL => return Err(Gp),
        PLATFORM_INFO if ctx.cpuid_faulting => PLATFORM_INFO_CPUID_FAULTING,
        PLATFORM_INFO => 0,
        ARCH_CAPABILITIES if ctx.policy.has(feat::ARCH_CAPS) => {
            host.rdmsr_safe(msr).unwrap_or(0) & ARCH_CAPS_KNOWN
        }
        ARCH_CAPABILITIES => return Err(Gp),
        MISC_FEATURES_ENABLES => msrs.misc_features_enables,
        MCG_CAP => ctx.mcg_cap(),
        MCG_STATUS => msrs.mcg_status,
        // No MCG_CTL_P: reads 0.
        MCG_CTL => 0,
        // No LMCE.
        MCG_EXT_CTL => return Err(Gp),
        P5_MC_ADDR | P5_MC_TYPE if intel => {
            let b = msrs.mc_banks[1];
            if msr == P5_MC_ADDR { b.addr } else { b.status }
        }
        P5_MC_ADDR | P5_MC_TYPE => 0,
        MC0_CTL2..=MC31_CTL2 => match usize::try_from(msr - MC0_CTL2) {
            Ok(b) if intel && b < GUEST_MC_BANKS => msrs.mc_banks[b].ctl2,
            _ => 0,
        },
        MC0_CTL..=MC31_MISC => match mc_bank(msr) {
            Some((_, 0)) => u64::MAX,
            Some((b, 1)) => msrs.mc_banks[b].status,
            Some((b, 2)) => msrs.mc_banks[b].addr,
            Some((b, _)) => msrs.mc_banks[b].misc,
            None => 0,
        },
        PERF_STATUS | PERF_CTL if intel => 0,
        PERF_STATUS | PERF_CTL => return Err(Gp),
        THERM_STATUS if intel => 0,
        THERM_STATUS => return Err(Gp),
        X2APIC_FIRST..=X2APIC_LAST | XSS => return Err(Gp),
        // The hypercall-page MSR reads as 0; the rest of Xen's range #GPs.
        XEN_FIRST..=XEN_LAST if msr == XEN_FIRST => 0,
        XEN_FIRST..=XEN_LAST => return Err(Gp),
        TSC_AUX if ctx.has_tsc_aux() => u64::from(msrs.tsc_aux),
        TSC_AUX => return Err(Gp),
        K8_SYSCFG
        | K8_TOP_MEM1
        | K8_TOP_MEM2
        | K8_IORR_BASE0..=K8_IORR_MASK1
        | K8_TSEG_BASE
        | K8_TSEG_MASK
            if amd && ctx.hardware_domain =>
        {
            let v = host.rdmsr_safe(msr).ok_or(Gp)?;
            if msr == K8_SYSCFG {
                v & SYSCFG_VISIBLE
            } else {
                v
            }
        }
        K8_SYSCFG
        | K8_TOP_MEM1
        | K8_TOP_MEM2
        | K8_IORR_BASE0..=K8_IORR_MASK1
        | K8_TSEG_BASE
        | K8_TSEG_MASK => return Err(Gp),
        K8_HWCR if amd => 0,
        K8_HWCR => return Err(Gp),
        VIRT_SPEC_CTRL => return Err(Gp),
        AMD64_DE_CFG if amd => AMD64_DE_CFG_LFENCE_SERIALISE,
        AMD64_DE_CFG => return Err(Gp),
        AMD64_DR0_ADDRESS_MASK | AMD64_DR1_ADDRESS_MASK..=AMD64_DR3_ADDRESS_MASK => {
            if !ctx.has_dbext() {
                return Err(Gp);
            }
            u64::from(msrs.dr_mask[dr_mask_index(msr)])
        }
        // The PV emulator's read_msr.
        APIC_BASE => {
            APIC_DEFAULT_BASE | APIC_BASE_ENABLE | if ctx.vcpu_id == 0 { APIC_BASE_BSP } else { 0 }
        }
        TSC => host.tsc(),
        EFER => GUEST_EFER,
        PAT => XEN_PAT,
        K7_FID_VID_CTL | K7_FID_VID_STATUS | K8_PSTATE_LIMIT..=K8_PSTATE7 if amd => 0,
        FAM10H_MMIO_CONF_BASE if amd && (0x10..0x17).contains(&ctx.family) => 0,
        // Not a pinned hardware-domain vCPU: reads 0.
        AMD64_NB_CFG => 0,
        MISC_ENABLE => guest_misc_enable(host.rdmsr_safe(msr).ok_or(Gp)?),
        PERF_CAPABILITIES => 0,
        m if vpmu_msr(ctx, m) => 0,
        _ => return Err(Gp),
    };
    Ok(v)
}

fn dr_mask_index(msr: u32) -> usize {
    if msr == nr::AMD64_DR0_ADDRESS_MASK {
        0
    } else {
        usize::try_from(msr.saturating_sub(nr::AMD64_DR1_ADDRESS_MASK) + 1)
            .unwrap_or(0)
            .min(3)
    }
}

/// `wrmsr` of `value` to `msr` (not the FS/GS base MSRs): `Ok` if accepted (stored in
/// `msrs`, or dropped), `Err(Gp)` if the guest gets #GP.
pub fn write(
    ctx: &MsrCtx<'_>,
    msrs: &mut VcpuMsrs,
    host: &dyn MsrHost,
    msr: u32,
    value: u64,
) -> MsrResult<()> {
    use nr::*;
    let amd = ctx.amd();
    let intel = ctx.intel();
    match msr {
        m if never_writable(m) => Err(Gp),
        // guest_wrmsr: the value is the vCPU's, loaded now and whenever it runs.
        SPEC_CTRL if ctx.has_spec_ctrl() && value & !ctx.spec_ctrl_valid() == 0 => {
            msrs.spec_ctrl = value;
            host.command(msr, value);
            Ok(())
        }
        SPEC_CTRL => Err(Gp),
        // IBPB comes with IBRSB (Intel) or on its own (AMD's IBPB).
        PRED_CMD
            if (ctx.policy.has(feat::IBRSB) || ctx.policy.has(feat::IBPB))
                && value & !PRED_CMD_IBPB == 0 =>
        {
            host.command(msr, value);
            Ok(())
        }
        PRED_CMD => Err(Gp),
        FLUSH_CMD if ctx.policy.has(feat::L1D_FLUSH) && value & !FLUSH_CMD_L1D == 0 => {
            host.command(msr, value);
            Ok(())
        }
        FLUSH_CMD => Err(Gp),
        // Intel asks the OS to write 0 before reading the microcode revision.
        UCODE_REV if intel && value == 0 => Ok(()),
        UCODE_REV => Err(Gp),
        // Only CPUID faulting may be set, and only if it is offered.
        MISC_FEATURES_ENABLES
            if value & !MISC_FEATURES_CPUID_FAULTING == 0 && (value == 0 || ctx.cpuid_faulting) =>
        {
            msrs.misc_features_enables = value;
            Ok(())
        }
        MISC_FEATURES_ENABLES => Err(Gp),
        // vMCE: MCG_CAP is read-only and MCG_CTL sticks at its value; both drop.
        MCG_CAP | MCG_CTL => Ok(()),
        MCG_STATUS => {
            msrs.mcg_status = value;
            Ok(())
        }
        MCG_EXT_CTL => Err(Gp),
        MC0_CTL..=MC31_MISC => match mc_bank(msr) {
            // MCi_CTL stays all ones.
            Some((_, 0)) | None => Ok(()),
            // STATUS, ADDR and MISC may only be cleared.
            Some(_) if value != 0 => Err(Gp),
            Some((b, 1)) => {
                msrs.mc_banks[b].status = 0;
                Ok(())
            }
            Some((b, 2)) => {
                msrs.mc_banks[b].addr = 0;
                Ok(())
            }
            Some((b, _)) => {
                msrs.mc_banks[b].misc = 0;
                Ok(())
            }
        },
        MC0_CTL2..=MC31_CTL2 => {
            if let Ok(b) = usize::try_from(msr - MC0_CTL2)
                && intel
                && b < GUEST_MC_BANKS
            {
                msrs.mc_banks[b].ctl2 = value;
            }
            Ok(())
        }
        PERF_CTL if intel => Ok(()),
        PERF_CTL => Err(Gp),
        // The hypercall-page MSR is not implemented (PV guests get their page from
        // the domain builder); the rest of Xen's range #GPs.
        XEN_FIRST..=XEN_LAST => Err(Gp),
        TSC_AUX if ctx.has_tsc_aux() => {
            msrs.tsc_aux = u32::try_from(value).map_err(|_| Gp)?;
            Ok(())
        }
        TSC_AUX => Err(Gp),
        // OpenBSD panics if this faults: dropped.
        AMD64_DE_CFG if amd => Ok(()),
        AMD64_DE_CFG => Err(Gp),
        AMD64_DR0_ADDRESS_MASK | AMD64_DR1_ADDRESS_MASK..=AMD64_DR3_ADDRESS_MASK => {
            if !ctx.has_dbext() {
                return Err(Gp);
            }
            msrs.dr_mask[dr_mask_index(msr)] = u32::try_from(value).map_err(|_| Gp)?;
            Ok(())
        }
        // The PV emulator's write_msr. Linux writes EFER back unchanged.
        EFER if value == GUEST_EFER => Ok(()),
        K7_FID_VID_CTL | K7_FID_VID_STATUS | K8_PSTATE_LIMIT..=K8_PSTATE7 | K8_HWCR if amd => {
            Ok(())
        }
        AMD64_NB_CFG => Ok(()),
        FAM10H_MMIO_CONF_BASE if amd && (0x10..0x17).contains(&ctx.family) => Ok(()),
        // A write that changes it is refused with only a log line: no fault.
        MISC_ENABLE => host.rdmsr_safe(msr).map(|_| ()).ok_or(Gp),
        MPERF | APERF => Ok(()),
        THERM_CONTROL | ENERGY_PERF_BIAS if intel => Ok(()),
        m if vpmu_msr(ctx, m) => Ok(()),
        // PAT, APIC_BASE, DEBUGCTL, the MTRRs, SYSENTER_*, STAR/LSTAR/..., and
        // everything unknown.
        _ => Err(Gp),
    }
}

#[cfg(test)]
mod tests;
