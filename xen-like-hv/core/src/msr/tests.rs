//! The MSR answers against what real Xen 4.17 gave dom0 on QEMU `-cpu max` (AMD,
//! `xen_fidelity::cpu_policy_dump_on_real_xen`), and Intel's variants from Xen's code.

use super::*;
use crate::cpuid::Featureset;
use std::collections::HashMap;

struct Host(HashMap<u32, u64>, std::cell::RefCell<Vec<(u32, u64)>>);

impl MsrHost for Host {
    fn rdmsr_safe(&self, msr: u32) -> Option<u64> {
        self.0.get(&msr).copied()
    }
    fn tsc(&self) -> u64 {
        0x1234_5678
    }
    fn command(&self, msr: u32, value: u64) {
        self.1.borrow_mut().push((msr, value));
    }
}

impl Host {
    fn new(msrs: HashMap<u32, u64>) -> Self {
        Host(msrs, std::cell::RefCell::default())
    }

    fn commands(&self) -> Vec<(u32, u64)> {
        self.1.take()
    }
}

/// What QEMU's `-cpu max` CPU answers for the MSRs Xen forwards.
fn qemu_host() -> Host {
    Host::new(HashMap::from([
        (0x8b, 0x0100_0065),
        (0x1a0, 1),
        (0xc001_0010, 0),
        (0x10, 0),
        (0x277, 0x0007_0406_0007_0406),
    ]))
}

/// The policy the cpuid tests compute for QEMU -cpu max: RDTSCP, no DBEXT.
fn amd_policy() -> Featureset {
    let mut fs = Featureset::default();
    fs.set(feat::RDTSCP, true);
    fs
}

fn ctx(policy: &Featureset, vendor: Vendor) -> MsrCtx<'_> {
    MsrCtx {
        policy,
        vendor,
        family: 6,
        hardware_domain: true,
        vcpu_id: 0,
        gp_handler: true,
        cpuid_faulting: false,
    }
}

/// (MSR, Xen's answer: `Some(value)` or `None` for #GP), as the dump showed.
const XEN_AMD_READS: &[(u32, Option<u64>)] = &[
    (0x17, None),
    (0x1b, Some(0xfee0_0900)),
    (0x2a, None),
    (0x34, None),
    (0x35, None),
    (0x3a, None),
    (0x48, None),
    (0x49, None),
    (0x8b, Some(0x0100_0065)),
    (0xce, Some(0)),
    (0xe7, None),
    (0xe8, None),
    (0xfe, None),
    (0x10a, None),
    (0x140, Some(0)),
    (0x174, None),
    (0x175, None),
    (0x176, None),
    (0x179, Some(2)),
    (0x17a, Some(0)),
    (0x17b, Some(0)),
    (0x186, None),
    (0x198, None),
    (0x199, None),
    (0x19a, None),
    (0x1a0, Some(0x0080_1801)),
    (0x1b0, None),
    (0x1d9, None),
    (0x200, None),
    (0x250, None),
    (0x277, Some(0x0000_0501_0007_0406)),
    (0x2ff, None),
    (0x400, Some(u64::MAX)),
    (0x401, Some(0)),
    (0x402, Some(0)),
    (0x403, Some(0)),
    (0x404, Some(u64::MAX)),
    (0x405, Some(0)),
    (0x406, Some(0)),
    (0x407, Some(0)),
    (0x408, Some(0)),
    (0x40c, Some(0)),
    (0x410, Some(0)),
    (0x414, Some(0)),
    (0x418, Some(0)),
    (0x41c, Some(0)),
    (0x420, Some(0)),
    (0x480, None),
    (0x600, None),
    (0x6e0, None),
    (0xc000_0080, Some(0xd01)),
    (0xc000_0081, None),
    (0xc000_0082, None),
    (0xc000_0083, None),
    (0xc000_0084, None),
    (0xc000_0103, Some(0)),
    (0xc001_0000, Some(0)),
    (0xc001_0001, Some(0)),
    (0xc001_0004, Some(0)),
    (0xc001_0005, Some(0)),
    (0xc001_0010, Some(0)),
    (0xc001_0015, Some(0)),
    (0xc001_001f, Some(0)),
    (0xc001_0055, None),
    (0xc001_0058, None),
    (0xc001_0061, Some(0)),
    (0xc001_0062, Some(0)),
    (0xc001_0063, Some(0)),
    (0xc001_0064, Some(0)),
    (0xc001_0114, None),
    (0xc001_0140, None),
    (0xc001_0141, None),
    (0xc001_1020, None),
    (0xc001_1021, None),
    (0xc001_1022, None),
    (0xc001_1023, None),
    (0xc001_102a, None),
    (0xc001_1029, Some(2)),
    (0xc001_10e3, None),
    (0xc000_0408, None),
];

#[test]
fn reads_match_real_xen_on_qemu_max() {
    let p = amd_policy();
    let c = ctx(&p, Vendor::Amd);
    let msrs = VcpuMsrs::default();
    let host = qemu_host();
    for &(msr, want) in XEN_AMD_READS {
        assert_eq!(read(&c, &msrs, &host, msr).ok(), want, "rdmsr {msr:#x}");
    }
    assert_eq!(read(&c, &msrs, &host, 0x10), Ok(0x1234_5678), "TSC");
}

/// (MSR, whether writing the value read and then 0 was accepted), as the dump showed.
const XEN_AMD_WRITES: &[(u32, bool)] = &[
    (0x8b, false),
    (0x1b, false),
    (0x179, true),
    (0x17a, true),
    (0x17b, true),
    (0x1a0, true),
    (0x277, false),
    (0x400, true),
    (0x401, true),
    (0x402, true),
    (0xc000_0103, true),
    (0xc001_0000, true),
    (0xc001_0004, true),
    (0xc001_0015, true),
    (0xc001_1029, true),
    (0x48, false),
    (0x140, true),
    (0x1d9, false),
];

#[test]
fn writes_match_real_xen_on_qemu_max() {
    let p = amd_policy();
    let c = ctx(&p, Vendor::Amd);
    let host = qemu_host();
    for &(msr, ok) in XEN_AMD_WRITES {
        let mut msrs = VcpuMsrs::default();
        let v = read(&c, &msrs, &host, msr).unwrap_or(0);
        assert_eq!(
            write(&c, &mut msrs, &host, msr, v).is_ok(),
            ok,
            "wrmsr {msr:#x} same"
        );
        assert_eq!(
            write(&c, &mut msrs, &host, msr, 0).is_ok(),
            ok,
            "wrmsr {msr:#x} zero"
        );
    }
}

#[test]
fn pat_reads_xens_and_no_write_is_taken() {
    let p = amd_policy();
    let c = ctx(&p, Vendor::Intel);
    let mut msrs = VcpuMsrs::default();
    let host = qemu_host();
    assert_eq!(read(&c, &msrs, &host, nr::PAT), Ok(XEN_PAT));
    assert_eq!(write(&c, &mut msrs, &host, nr::PAT, XEN_PAT), Err(Gp));
    assert_eq!(
        write(&c, &mut msrs, &host, nr::PAT, 0x0007_0406_0007_0406),
        Err(Gp)
    );
}

#[test]
fn vmce_banks() {
    let p = amd_policy();
    let host = qemu_host();
    for vendor in [Vendor::Amd, Vendor::Intel] {
        let c = ctx(&p, vendor);
        let mut msrs = VcpuMsrs::default();
        let cap = read(&c, &msrs, &host, nr::MCG_CAP).unwrap();
        assert_eq!(cap & 0xff, 2, "two banks");
        assert_eq!(cap == 2, vendor == Vendor::Amd);
        // MCG_STATUS takes anything.
        assert_eq!(write(&c, &mut msrs, &host, nr::MCG_STATUS, 5), Ok(()));
        assert_eq!(read(&c, &msrs, &host, nr::MCG_STATUS), Ok(5));
        // STATUS/ADDR/MISC may only be cleared; CTL stays all ones.
        assert_eq!(write(&c, &mut msrs, &host, 0x401, 1), Err(Gp));
        assert_eq!(write(&c, &mut msrs, &host, 0x402, 1), Err(Gp));
        assert_eq!(write(&c, &mut msrs, &host, 0x407, 1), Err(Gp));
        assert_eq!(write(&c, &mut msrs, &host, 0x405, 0), Ok(()));
        assert_eq!(write(&c, &mut msrs, &host, 0x400, 0), Ok(()));
        assert_eq!(read(&c, &msrs, &host, 0x400), Ok(u64::MAX));
        // Past the two banks: reads 0, writes dropped.
        assert_eq!(write(&c, &mut msrs, &host, 0x409, 7), Ok(()));
        assert_eq!(read(&c, &msrs, &host, 0x409), Ok(0));
        assert_eq!(read(&c, &msrs, &host, nr::MCG_EXT_CTL), Err(Gp));
    }
}

#[test]
fn intel_only_and_amd_only_msrs() {
    let p = amd_policy();
    let host = Host::new(HashMap::from([(0x17, 0x42), (0x8b, 0x99), (0x1a0, 0x40)]));
    let intel = ctx(&p, Vendor::Intel);
    let amd = ctx(&p, Vendor::Amd);
    let mut msrs = VcpuMsrs::default();
    assert_eq!(read(&intel, &msrs, &host, nr::FEATURE_CONTROL), Ok(1));
    assert_eq!(read(&amd, &msrs, &host, nr::FEATURE_CONTROL), Err(Gp));
    assert_eq!(read(&intel, &msrs, &host, nr::PLATFORM_ID), Ok(0x42));
    assert_eq!(read(&intel, &msrs, &host, nr::PERF_STATUS), Ok(0));
    assert_eq!(read(&intel, &msrs, &host, nr::K8_HWCR), Err(Gp));
    assert_eq!(read(&intel, &msrs, &host, nr::AMD64_DE_CFG), Err(Gp));
    // Intel's "write 0, CPUID, read" for the microcode revision.
    assert_eq!(write(&intel, &mut msrs, &host, nr::UCODE_REV, 0), Ok(()));
    assert_eq!(write(&intel, &mut msrs, &host, nr::UCODE_REV, 1), Err(Gp));
    assert_eq!(write(&amd, &mut msrs, &host, nr::UCODE_REV, 0), Err(Gp));
    // MISC_ENABLE: Xen's view of the host's; a changing write is dropped.
    assert_eq!(
        read(&intel, &msrs, &host, nr::MISC_ENABLE),
        Ok(0x40 | (1 << 11) | (1 << 12) | (1 << 23))
    );
    assert_eq!(write(&intel, &mut msrs, &host, nr::MISC_ENABLE, 0), Ok(()));
    // Intel's PMU: reads 0, writes dropped; AMD's counters are #GP there.
    assert_eq!(read(&intel, &msrs, &host, nr::P6_EVNTSEL0), Ok(0));
    assert_eq!(write(&intel, &mut msrs, &host, nr::P6_EVNTSEL0, 1), Ok(()));
    assert_eq!(read(&intel, &msrs, &host, nr::K7_EVNTSEL0), Err(Gp));
    assert_eq!(read(&amd, &msrs, &host, nr::P6_EVNTSEL0), Err(Gp));
}

#[test]
fn tsc_aux_needs_rdtscp_and_32_bits() {
    let host = qemu_host();
    let none = Featureset::default();
    let c = ctx(&none, Vendor::Amd);
    let mut msrs = VcpuMsrs::default();
    assert_eq!(read(&c, &msrs, &host, nr::TSC_AUX), Err(Gp));
    assert_eq!(write(&c, &mut msrs, &host, nr::TSC_AUX, 1), Err(Gp));
    let p = amd_policy();
    let c = ctx(&p, Vendor::Amd);
    assert_eq!(
        write(&c, &mut msrs, &host, nr::TSC_AUX, 0x1_0000_0000),
        Err(Gp)
    );
    assert_eq!(write(&c, &mut msrs, &host, nr::TSC_AUX, 0xabcd), Ok(()));
    assert_eq!(msrs.tsc_aux, 0xabcd);
    assert_eq!(read(&c, &msrs, &host, nr::TSC_AUX), Ok(0xabcd));
}

#[test]
fn efer_takes_only_its_own_value_and_apic_base_has_bsp_on_vcpu_0_only() {
    let p = amd_policy();
    let host = qemu_host();
    let mut c = ctx(&p, Vendor::Amd);
    let mut msrs = VcpuMsrs::default();
    assert_eq!(write(&c, &mut msrs, &host, nr::EFER, GUEST_EFER), Ok(()));
    assert_eq!(
        write(&c, &mut msrs, &host, nr::EFER, GUEST_EFER & !1),
        Err(Gp)
    );
    c.vcpu_id = 1;
    assert_eq!(read(&c, &msrs, &host, nr::APIC_BASE), Ok(0xfee0_0800));
}

#[test]
fn without_a_gp_handler_an_msr_the_host_has_reads_0() {
    let p = amd_policy();
    let host = qemu_host();
    let mut c = ctx(&p, Vendor::Amd);
    c.gp_handler = false;
    let msrs = VcpuMsrs::default();
    // 0x10 is the host's; 0x1d9 is not in the fake host: still #GP.
    assert_eq!(read(&c, &msrs, &host, 0x10), Ok(0x1234_5678));
    assert_eq!(read(&c, &msrs, &host, 0x1d9), Err(Gp));
    assert_eq!(read(&c, &msrs, &host, 0x277), Ok(XEN_PAT));
    let host = Host::new(HashMap::from([(0x1d9, 5)]));
    assert_eq!(read(&c, &msrs, &host, 0x1d9), Ok(0));
}

#[test]
fn domu_gets_no_amd_northbridge_registers() {
    let p = amd_policy();
    let host = qemu_host();
    let mut c = ctx(&p, Vendor::Amd);
    c.hardware_domain = false;
    let msrs = VcpuMsrs::default();
    assert_eq!(read(&c, &msrs, &host, nr::K8_SYSCFG), Err(Gp));
    assert_eq!(read(&c, &msrs, &host, nr::AMD64_NB_CFG), Ok(0));
}

#[test]
fn cpuid_faulting_is_offered_only_when_the_host_has_it() {
    let p = amd_policy();
    let host = qemu_host();
    let mut c = ctx(&p, Vendor::Intel);
    let mut msrs = VcpuMsrs::default();
    assert_eq!(read(&c, &msrs, &host, nr::PLATFORM_INFO), Ok(0));
    assert_eq!(
        write(&c, &mut msrs, &host, nr::MISC_FEATURES_ENABLES, 1),
        Err(Gp)
    );
    c.cpuid_faulting = true;
    assert_eq!(read(&c, &msrs, &host, nr::PLATFORM_INFO), Ok(1 << 31));
    assert_eq!(
        write(&c, &mut msrs, &host, nr::MISC_FEATURES_ENABLES, 1),
        Ok(())
    );
    assert_eq!(read(&c, &msrs, &host, nr::MISC_FEATURES_ENABLES), Ok(1));
    assert_eq!(
        write(&c, &mut msrs, &host, nr::MISC_FEATURES_ENABLES, 2),
        Err(Gp)
    );
}

/// An Intel host with the speculation controls: IBRSB (so STIBP and IBPB), SSBD,
/// L1D_FLUSH and ARCH_CAPS in the policy.
fn intel_spec_policy() -> Featureset {
    let mut fs = Featureset::default();
    for f in [
        feat::IBRSB,
        feat::STIBP,
        feat::IBPB,
        feat::L1D_FLUSH,
        feat::ARCH_CAPS,
        crate::cpuid::Feature(9, 31),
    ] {
        fs.set(f, true);
    }
    fs
}

#[test]
fn spec_ctrl_is_per_vcpu_and_loaded_on_write() {
    let p = intel_spec_policy();
    let c = ctx(&p, Vendor::Intel);
    let host = Host::new(HashMap::new());
    let (mut a, b) = (VcpuMsrs::default(), VcpuMsrs::default());
    assert_eq!(read(&c, &a, &host, nr::SPEC_CTRL), Ok(0));
    let v = spec_ctrl::IBRS | spec_ctrl::STIBP | spec_ctrl::SSBD;
    assert_eq!(write(&c, &mut a, &host, nr::SPEC_CTRL, v), Ok(()));
    assert_eq!(read(&c, &a, &host, nr::SPEC_CTRL), Ok(v));
    assert_eq!(read(&c, &b, &host, nr::SPEC_CTRL), Ok(0), "another vCPU's");
    assert_eq!(host.commands(), [(nr::SPEC_CTRL, v)]);
    // PSFD without its feature, and reserved bits: #GP, value unchanged.
    for bad in [spec_ctrl::PSFD, 1 << 3, 1 << 63] {
        assert_eq!(write(&c, &mut a, &host, nr::SPEC_CTRL, bad), Err(Gp));
    }
    assert_eq!(read(&c, &a, &host, nr::SPEC_CTRL), Ok(v));
    assert!(host.commands().is_empty());
    // SSBD needs its feature; STIBP is always allowed with the MSR.
    let mut no_ssbd = p;
    no_ssbd.set(crate::cpuid::Feature(9, 31), false);
    let c2 = ctx(&no_ssbd, Vendor::Intel);
    assert_eq!(
        write(&c2, &mut a, &host, nr::SPEC_CTRL, spec_ctrl::SSBD),
        Err(Gp)
    );
    assert_eq!(
        write(&c2, &mut a, &host, nr::SPEC_CTRL, spec_ctrl::STIBP),
        Ok(())
    );
}

#[test]
fn spec_ctrl_needs_ibrsb_or_ibrs() {
    let host = Host::new(HashMap::new());
    let mut msrs = VcpuMsrs::default();
    let none = Featureset::default();
    let c = ctx(&none, Vendor::Intel);
    assert_eq!(read(&c, &msrs, &host, nr::SPEC_CTRL), Err(Gp));
    assert_eq!(write(&c, &mut msrs, &host, nr::SPEC_CTRL, 0), Err(Gp));
    // AMD's IBRS, with AMD's SSBD and PSFD.
    let mut amd = Featureset::default();
    for f in [
        feat::IBRS,
        crate::cpuid::Feature(8, 24),
        crate::cpuid::Feature(8, 28),
    ] {
        amd.set(f, true);
    }
    let c = ctx(&amd, Vendor::Amd);
    let v = spec_ctrl::IBRS | spec_ctrl::SSBD | spec_ctrl::PSFD;
    assert_eq!(write(&c, &mut msrs, &host, nr::SPEC_CTRL, v), Ok(()));
    assert_eq!(read(&c, &msrs, &host, nr::SPEC_CTRL), Ok(v));
}

#[test]
fn pred_cmd_and_flush_cmd_are_write_only_commands() {
    let p = intel_spec_policy();
    let c = ctx(&p, Vendor::Intel);
    let host = Host::new(HashMap::new());
    let mut msrs = VcpuMsrs::default();
    assert_eq!(
        write(&c, &mut msrs, &host, nr::PRED_CMD, PRED_CMD_IBPB),
        Ok(())
    );
    assert_eq!(
        write(&c, &mut msrs, &host, nr::FLUSH_CMD, FLUSH_CMD_L1D),
        Ok(())
    );
    assert_eq!(
        host.commands(),
        [
            (nr::PRED_CMD, PRED_CMD_IBPB),
            (nr::FLUSH_CMD, FLUSH_CMD_L1D)
        ]
    );
    assert_eq!(write(&c, &mut msrs, &host, nr::PRED_CMD, 2), Err(Gp));
    assert_eq!(write(&c, &mut msrs, &host, nr::FLUSH_CMD, 2), Err(Gp));
    assert_eq!(read(&c, &msrs, &host, nr::PRED_CMD), Err(Gp));
    assert_eq!(read(&c, &msrs, &host, nr::FLUSH_CMD), Err(Gp));
    assert!(host.commands().is_empty());
    // AMD's IBPB alone gives PRED_CMD; without L1D_FLUSH, FLUSH_CMD #GPs.
    let mut amd = Featureset::default();
    amd.set(feat::IBPB, true);
    let c = ctx(&amd, Vendor::Amd);
    assert_eq!(
        write(&c, &mut msrs, &host, nr::PRED_CMD, PRED_CMD_IBPB),
        Ok(())
    );
    assert_eq!(
        write(&c, &mut msrs, &host, nr::FLUSH_CMD, FLUSH_CMD_L1D),
        Err(Gp)
    );
    assert_eq!(host.commands(), [(nr::PRED_CMD, PRED_CMD_IBPB)]);
}

#[test]
fn arch_caps_reads_the_hosts_known_bits_with_the_feature() {
    let p = intel_spec_policy();
    let c = ctx(&p, Vendor::Intel);
    // RDCL_NO, IBRS_ALL, MDS_NO, PBRSB_NO, and bits Xen does not pass (9, 23, 25).
    let raw = 1 | 2 | (1 << 5) | (1 << 24) | (1 << 9) | (1 << 23) | (1 << 25);
    let host = Host::new(HashMap::from([(nr::ARCH_CAPABILITIES, raw)]));
    let mut msrs = VcpuMsrs::default();
    assert_eq!(
        read(&c, &msrs, &host, nr::ARCH_CAPABILITIES),
        Ok(1 | 2 | (1 << 5) | (1 << 24))
    );
    assert_eq!(
        write(&c, &mut msrs, &host, nr::ARCH_CAPABILITIES, 0),
        Err(Gp)
    );
    let none = Featureset::default();
    let c = ctx(&none, Vendor::Intel);
    assert_eq!(read(&c, &msrs, &host, nr::ARCH_CAPABILITIES), Err(Gp));
}
