//! The policy against what real Xen 4.17 showed: the `cpu-policy` test guest's dump
//! (`xen_fidelity::cpu_policy_dump_on_real_xen`) as dom0 on QEMU 10 TCG `-cpu max`
//! (AMD), where CPUID is not faulted, so its native `cpuid` read the host's leaves.

use super::*;
use std::collections::HashMap;

/// (leaf, subleaf, Xen's forced-emulation answer to dom0's kernel, the native answer).
const XEN_DOM0_ON_QEMU_MAX: &[(u32, u32, Leaf, Leaf)] = &[
    (
        0x0,
        0,
        [0x0000000d, 0x68747541, 0x444d4163, 0x69746e65],
        [0x0000000d, 0x68747541, 0x444d4163, 0x69746e65],
    ),
    (
        0x1,
        0,
        [0x00000663, 0x00000800, 0xfed83203, 0x0fc9d3f5],
        [0x00000663, 0x00000800, 0xfef8320b, 0x0fcbfbfd],
    ),
    (
        0x2,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x3,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x4,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x4,
        1,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x4,
        2,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x4,
        3,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x5,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000003, 0x00000000],
    ),
    (
        0x6,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000004, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x7,
        0,
        [0x00000001, 0x218c0329, 0x00400200, 0x00000010],
        [0x00000001, 0x219c43a9, 0x8041020c, 0x00000010],
    ),
    (
        0x7,
        1,
        [0x00001c00, 0x00000000, 0x00000000, 0x00000000],
        [0x00001c80, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x7,
        2,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x7,
        3,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x8,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x9,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0xa,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0xb,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000001, 0x00000100, 0x00000000],
    ),
    (
        0xb,
        1,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000001, 0x00000201, 0x00000000],
    ),
    (
        0xb,
        2,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000002, 0x00000000],
    ),
    (
        0xb,
        3,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000003, 0x00000000],
    ),
    (
        0xc,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0xd,
        0,
        [0x00000007, 0x00000240, 0x00000340, 0x00000000],
        [0x0000021f, 0x00000240, 0x00000a88, 0x00000000],
    ),
    (
        0xd,
        1,
        [0x00000005, 0x00000000, 0x00000000, 0x00000000],
        [0x00000005, 0x000003c8, 0x00000000, 0x00000000],
    ),
    (
        0xd,
        2,
        [0x00000100, 0x00000240, 0x00000000, 0x00000000],
        [0x00000100, 0x00000240, 0x00000000, 0x00000000],
    ),
    (
        0xd,
        3,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000040, 0x000003c0, 0x00000000, 0x00000000],
    ),
    (
        0x80000000,
        0,
        [0x8000000a, 0x68747541, 0x444d4163, 0x69746e65],
        [0x8000000a, 0x68747541, 0x444d4163, 0x69746e65],
    ),
    (
        0x80000001,
        0,
        [0x00000663, 0x00000000, 0x00000163, 0xe9d1dbf5],
        [0x00000663, 0x00000000, 0x00000177, 0xedd3fbfd],
    ),
    (
        0x80000002,
        0,
        [0x554d4551, 0x47435420, 0x55504320, 0x72657620],
        [0x554d4551, 0x47435420, 0x55504320, 0x72657620],
    ),
    (
        0x80000003,
        0,
        [0x6e6f6973, 0x352e3220, 0x0000002b, 0x00000000],
        [0x6e6f6973, 0x352e3220, 0x0000002b, 0x00000000],
    ),
    (
        0x80000004,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x80000005,
        0,
        [0x01ff01ff, 0x01ff01ff, 0x40020140, 0x40020140],
        [0x01ff01ff, 0x01ff01ff, 0x40020140, 0x40020140],
    ),
    (
        0x80000006,
        0,
        [0x00000000, 0x42004200, 0x02008140, 0x00808140],
        [0x00000000, 0x42004200, 0x02008140, 0x00808140],
    ),
    (
        0x80000007,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x80000008,
        0,
        [0x00003028, 0x00000004, 0x00000000, 0x00000000],
        [0x00003928, 0x00000204, 0x00000000, 0x00000000],
    ),
    (
        0x80000009,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
    ),
    (
        0x8000000a,
        0,
        [0x00000000, 0x00000000, 0x00000000, 0x00000000],
        [0x00000001, 0x00000010, 0x00000000, 0x10010001],
    ),
];

fn qemu_max_host() -> HashMap<(u32, u32), Leaf> {
    let mut m: HashMap<(u32, u32), Leaf> = XEN_DOM0_ON_QEMU_MAX
        .iter()
        .map(|&(l, s, _, n)| ((l, s), n))
        .collect();
    // The native leaf 1 ECX showed Xen's own CR4.OSXSAVE; the host policy never
    // takes it from there.
    if let Some(l1) = m.get_mut(&(1, 0)) {
        l1[2] &= !(1 << 27);
    }
    m
}

fn host_fn(m: &HashMap<(u32, u32), Leaf>) -> impl Fn(u32, u32) -> Leaf + '_ {
    move |l, s| m.get(&(l, s)).copied().unwrap_or([0; 4])
}

const DOM0_KERNEL_FORCED: Caller = Caller {
    hardware_domain: true,
    kernel_mode: true,
    path: Path::Forced,
    cr4: 0,
    vcpu_id: 0,
    xcr0: 0,
    host_osxsave: true,
};

#[test]
fn matches_real_xen_on_qemu_max() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    for &(leaf, sub, xen, _) in XEN_DOM0_ON_QEMU_MAX {
        let got = pv_cpuid(&host, &info, leaf, sub, &DOM0_KERNEL_FORCED);
        assert_eq!(
            got, xen,
            "leaf {leaf:#x}.{sub}: got {got:08x?}, Xen {xen:08x?}"
        );
    }
}

#[test]
fn issue_20_hidden_features_are_hidden() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    let q = |l, s| pv_cpuid(&host, &info, l, s, &DOM0_KERNEL_FORCED);
    let [_, _, c1, d1] = q(1, 0);
    // pse, sep, pge, pse36 / monitor, x2apic
    for b in [3, 11, 13, 17] {
        assert_eq!(d1 & (1 << b), 0, "leaf 1 EDX bit {b}");
    }
    for b in [3, 21] {
        assert_eq!(c1 & (1 << b), 0, "leaf 1 ECX bit {b}");
    }
    assert_ne!(c1 & (1 << 31), 0, "hypervisor bit");
    let [_, b7, c7, _] = q(7, 0);
    // smep, mpx, smap / umip, pku, ospke, la57
    for b in [7, 14, 20] {
        assert_eq!(b7 & (1 << b), 0, "leaf 7 EBX bit {b}");
    }
    for b in [2, 3, 4, 16] {
        assert_eq!(c7 & (1 << b), 0, "leaf 7 ECX bit {b}");
    }
    assert_ne!(b7 & 1, 0, "FSGSBASE is shown");
    let [_, _, ec1, ed1] = q(0x8000_0001, 0);
    for b in [2, 4] {
        assert_eq!(ec1 & (1 << b), 0, "svm / cr8_legacy");
    }
    assert_eq!(ed1 & (1 << 26), 0, "pdpe1gb");
    assert_eq!(q(0x8000_0008, 0)[1] & (1 << 9), 0, "wbnoinvd");
    assert_eq!(q(6, 0), [0; 4], "arat: leaf 6 empty");
    assert_eq!(q(0x8000_000a, 0), [0; 4], "npt, vgif: no SVM leaf");
}

#[test]
fn mtrr_eist_and_monitor_leak_only_into_dom0s_kernel() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    let domu = Caller {
        hardware_domain: false,
        ..DOM0_KERNEL_FORCED
    };
    let user = Caller {
        kernel_mode: false,
        ..DOM0_KERNEL_FORCED
    };
    for c in [domu, user] {
        assert_eq!(pv_cpuid(&host, &info, 1, 0, &c)[3] & (1 << 12), 0);
        assert_eq!(pv_cpuid(&host, &info, 0x8000_0001, 0, &c)[3] & (1 << 12), 0);
    }
    assert_ne!(
        pv_cpuid(&host, &info, 1, 0, &DOM0_KERNEL_FORCED)[3] & (1 << 12),
        0
    );
    // MONITOR (and leaf 5) only through a faulted CPUID.
    let faulted = Caller {
        path: Path::Faulted,
        ..DOM0_KERNEL_FORCED
    };
    assert_ne!(pv_cpuid(&host, &info, 1, 0, &faulted)[2] & (1 << 3), 0);
    assert_eq!(pv_cpuid(&host, &info, 5, 0, &faulted), [0, 0, 3, 0]);
    assert_eq!(pv_cpuid(&host, &info, 5, 0, &DOM0_KERNEL_FORCED), [0; 4]);
}

#[test]
fn xen_leaves() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo {
        tsc_khz: 2_000_000,
        max_page: 0x1_0000,
    };
    let q = |l, s| pv_cpuid(&host, &info, l, s, &DOM0_KERNEL_FORCED);
    assert_eq!(
        q(0x4000_0000, 0),
        [0x4000_0005, 0x566e_6558, 0x6558_4d4d, 0x4d4d_566e]
    );
    assert_eq!(q(0x4000_0001, 0), [0x0004_0011, 0, 0, 0]);
    assert_eq!(q(0x4000_0002, 0), [1, 0x4000_0000, 1, 0]);
    assert_eq!(q(0x4000_0003, 0), [4, 0, 0, 0]);
    assert_eq!(q(0x4000_0003, 2), [2_000_000, 0, 0, 0]);
    assert_eq!(q(0x4000_0004, 0), [0; 4]);
    assert_eq!(q(0x4000_0005, 0), [0, 28, 0, 0]);
    assert_eq!(q(0x4000_0006, 0), [0; 4]);
}

#[test]
fn osxsave_and_ospke_follow_the_virtual_cr4() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    let c = Caller {
        cr4: (1 << 18) | (1 << 22),
        ..DOM0_KERNEL_FORCED
    };
    assert_ne!(pv_cpuid(&host, &info, 1, 0, &c)[2] & (1 << 27), 0);
    assert_ne!(pv_cpuid(&host, &info, 7, 0, &c)[2] & (1 << 4), 0);
}

/// An Intel host with every bit set: the policy is still only what PV may have, and
/// Intel's own layout (no AMD vendor leaves, leaf 2 with one query, leaf 4 cleaned).
#[test]
fn intel_host_with_everything() {
    let host = |l: u32, s: u32| -> Leaf {
        match l {
            0 => [0x1f, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            4 if s < 2 => [0xffff_ff00 | (1 + s), 0xffff_ffff, 0xffff_ffff, 0xffff_ffff],
            4 => [0; 4],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            _ => [0xffff_ffff; 4],
        }
    };
    let info = HostInfo::default();
    let q = |l, s| pv_cpuid(&host, &info, l, s, &DOM0_KERNEL_FORCED);
    assert_eq!(q(0, 0)[0], 0xd, "max basic leaf clamped");
    let fs = pv_featureset(&host, true);
    for (w, (got, def)) in fs.0.iter().zip(PV_DEFAULT).enumerate() {
        // Everything shown is in the PV default mask, but for the dom0 leaks.
        let extra = got & !def;
        let allowed = match w {
            5 => (1 << 6) | (1 << 13),
            7 => 1 << 8,
            _ => 0,
        };
        assert_eq!(extra & !allowed, 0, "word {w}: {extra:#x}");
    }
    assert!(fs.has(feat::XSAVE));
    assert_eq!(q(1, 0)[1] >> 24, 0, "APIC ID 0");
    assert_eq!(q(2, 0)[0] & 0xff, 1);
    assert_eq!(
        q(4, 0),
        [0xffff_c301, 0xffff_ffff, 0xffff_ffff, 7],
        "leaf 4: reserved bits cleared"
    );
    assert_eq!(q(4, 2), [0; 4], "leaf 4 ends at the first invalid subleaf");
    assert_eq!(q(0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
    assert_eq!(q(0x8000_0001, 0)[..2], [0, 0]);
    assert_eq!(q(0x8000_0006, 0), [0, 0, 0xffff_ffff, 0]);
    assert_eq!(
        q(0x8000_0008, 0)[0],
        0x3034,
        "phys bits at most 52, 48 linear"
    );
    assert_eq!(q(0x8000_0009, 0), [0; 4], "beyond Intel's extended range");
    assert_eq!(q(0xb, 0), [0; 4]);
    // x87, SSE, AVX, AVX-512; not MPX or PKU (not PV features).
    assert_eq!(q(0xd, 0)[0], 0xe7);
    assert_eq!(q(0xd, 0)[3], 0);
    assert_eq!(q(0xd, 1)[0], 0x7, "XSAVEOPT, XSAVEC, XGETBV1; not XSAVES");
    assert_eq!(q(0xd, 3), [0; 4]);
    assert_eq!(q(0xd, 9), [0; 4]);
    assert_eq!(q(0xd, 63), [0; 4]);
}

#[test]
fn leaf_0xd_reports_the_size_for_the_vcpus_xcr0() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    let ymm = Caller {
        xcr0: 7,
        ..DOM0_KERNEL_FORCED
    };
    assert_eq!(pv_cpuid(&host, &info, 0xd, 0, &ymm), [7, 0x340, 0x340, 0]);
    assert_eq!(
        pv_cpuid(&host, &info, 0xd, 0, &DOM0_KERNEL_FORCED),
        [7, 0x240, 0x340, 0]
    );
}

#[test]
fn osxsave_leaks_only_into_a_kernels_forced_cpuid() {
    let m = qemu_max_host();
    let host = host_fn(&m);
    let info = HostInfo::default();
    let osx = |c: &Caller| pv_cpuid(&host, &info, 1, 0, c)[2] & (1 << 27) != 0;
    assert!(osx(&DOM0_KERNEL_FORCED));
    for c in [
        Caller {
            kernel_mode: false,
            ..DOM0_KERNEL_FORCED
        },
        Caller {
            path: Path::Faulted,
            ..DOM0_KERNEL_FORCED
        },
        Caller {
            host_osxsave: false,
            ..DOM0_KERNEL_FORCED
        },
    ] {
        assert!(!osx(&c), "{c:?}");
        assert!(osx(&Caller { cr4: 1 << 18, ..c }), "{c:?} with CR4.OSXSAVE");
    }
}

#[test]
fn dependencies_follow_a_hidden_feature() {
    let mut fs = Featureset([u32::MAX; NR_WORDS]);
    fs.set(feat::XSAVE, false);
    fs.sanitise();
    // AVX (1.28), AVX2 (5.5), AVX512F (5.16), AVX512_VBMI (6.1) all go.
    for f in [Feature(1, 28), Feature(5, 5), Feature(5, 16), Feature(6, 1)] {
        assert!(!fs.has(f), "{f:?}");
    }
    assert!(fs.has(feat::FSGSBASE));
}

/// The speculation-control bits as Xen 4.17's PV default shows them: on Intel IBRSB,
/// STIBP, SSBD and ARCH_CAPS pass, L1D_FLUSH does not (not a PV default feature),
/// and IBPB is added; on AMD only IBPB (IBRS, AMD_STIBP, AMD_SSBD are HVM-only).
#[test]
fn speculation_controls_as_xens_pv_default() {
    let info = HostInfo::default();
    let spec7d = (1 << 26) | (1 << 27) | (1 << 28) | (1 << 29) | (1 << 31);
    let intel = |l: u32, _s: u32| -> Leaf {
        match l {
            0 => [0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69],
            7 => [0, 0, 0, spec7d],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            _ => [0; 4],
        }
    };
    let d7 = pv_cpuid(&intel, &info, 7, 0, &DOM0_KERNEL_FORCED)[3];
    assert_eq!(d7, spec7d & !(1 << 28));
    let e8b = pv_cpuid(&intel, &info, 0x8000_0008, 0, &DOM0_KERNEL_FORCED)[1];
    assert_eq!(e8b, 1 << 12, "IBPB implied by IBRSB");

    let amd8b = (1 << 12) | (1 << 14) | (1 << 15) | (1 << 24);
    let amd = |l: u32, _s: u32| -> Leaf {
        match l {
            0 => [0xd, AMD_EBX, 0, 0],
            0x8000_0000 => [0x8000_0008, 0, 0, 0],
            0x8000_0008 => [0x3030, amd8b, 0, 0],
            _ => [0; 4],
        }
    };
    let e8b = pv_cpuid(&amd, &info, 0x8000_0008, 0, &DOM0_KERNEL_FORCED)[1];
    assert_eq!(e8b, 1 << 12);
    assert_eq!(pv_cpuid(&amd, &info, 7, 0, &DOM0_KERNEL_FORCED), [0; 4]);
}
