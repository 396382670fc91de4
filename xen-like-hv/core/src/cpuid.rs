//! The CPUID a 64-bit PV guest sees: Xen 4.17's default PV policy
//! (`calculate_pv_def_policy`, `recalculate_cpuid_policy`, `recalculate_misc`) and its
//! per-call adjustments (`guest_cpuid`, `cpuid_hypervisor_leaves`), computed as a pure
//! function of the host's own leaves ([`pv_cpuid`]).
//!
//! The featureset masks below are the numbers Xen's build derives from the attribute
//! markers of its public `arch-x86/cpufeatureset.h` (Xen 4.17.7, as Debian ships it):
//! a feature marked `A` is in the PV default, `S`/`H` only in HVM ones, none in no
//! guest's. This hypervisor gives every feature Xen's PV default has (XSAVE with its
//! state, the speculation-control MSRs: `crate::xstate`, `crate::msr`).

/// One CPUID answer: EAX, EBX, ECX, EDX.
pub type Leaf = [u32; 4];

/// Featureset words (Xen's `FEATURESET_*`): where each comes from.
const NR_WORDS: usize = 19;

/// Xen's `INIT_KNOWN_FEATURES`: every bit the featureset names.
const KNOWN: [u32; NR_WORDS] = [
    0xbfeb_fbff,
    0xfffe_f3ff,
    0xee50_0800,
    0x2469_bfff,
    0x0000_000f,
    0xffbf_ffff,
    0x3a40_5fdf,
    0x0000_0780,
    0x779f_d205,
    0xfc91_ef1c,
    0x0000_1c30,
    0xf800_0164,
    0x0000_0001,
    0x0000_0037,
    0x0000_0000,
    0x0004_0000,
    0x1fbe_ffff,
    0x4000_0000,
    0x0000_0006,
];

/// Xen's `INIT_PV_DEF_FEATURES`: the features a PV guest gets by default.
const PV_DEFAULT: [u32; NR_WORDS] = [
    0x1fc9_cbf5,
    0xf6d8_3203,
    0xea50_0800,
    0x0421_09e3,
    0x0000_0007,
    0xfdaf_0b29,
    0x0240_5f43,
    0x0000_0000,
    0x6400_1005,
    0xac00_441c,
    0x0000_1c30,
    0x7800_0064,
    0x0000_0000,
    0x0000_0021,
    0x0000_0000,
    0x0000_0000,
    0x1d12_e173,
    0x4000_0000,
    0x0000_0006,
];

/// A feature: featureset word and bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature(pub u8, pub u8);

/// The features the policy logic names.
#[allow(missing_docs)]
pub mod feat {
    use super::Feature as F;
    pub const DE: F = F(0, 2);
    pub const PSE: F = F(0, 3);
    pub const TSC: F = F(0, 4);
    pub const APIC: F = F(0, 9);
    pub const SEP: F = F(0, 11);
    pub const MTRR: F = F(0, 12);
    pub const HTT: F = F(0, 28);
    pub const MONITOR: F = F(1, 3);
    pub const EIST: F = F(1, 7);
    pub const X2APIC: F = F(1, 21);
    pub const FMA: F = F(1, 12);
    pub const XSAVE: F = F(1, 26);
    pub const AVX: F = F(1, 28);
    pub const OSXSAVE: F = F(1, 27);
    pub const HYPERVISOR: F = F(1, 31);
    pub const RDTSCP: F = F(2, 27);
    pub const LM: F = F(2, 29);
    pub const PAGE1GB: F = F(2, 26);
    pub const CMP_LEGACY: F = F(3, 1);
    pub const XSAVEC: F = F(4, 1);
    pub const XSAVES: F = F(4, 3);
    pub const FSGSBASE: F = F(5, 0);
    pub const MPX: F = F(5, 14);
    pub const AVX512F: F = F(5, 16);
    pub const PKU: F = F(6, 3);
    pub const FDP_EXCP_ONLY: F = F(5, 6);
    pub const NO_FPU_SEL: F = F(5, 13);
    pub const OSPKE: F = F(6, 4);
    pub const RDPID: F = F(6, 22);
    pub const ITSC: F = F(7, 8);
    pub const IBPB: F = F(8, 12);
    pub const IBRS: F = F(8, 14);
    pub const AMD_STIBP: F = F(8, 15);
    pub const IBRSB: F = F(9, 26);
    pub const STIBP: F = F(9, 27);
    pub const L1D_FLUSH: F = F(9, 28);
    pub const ARCH_CAPS: F = F(9, 29);
}

/// Xen's feature dependencies (`gen-cpuid.py`'s `deps`): turning off the first turns
/// off every one listed, and what depends on those in turn.
const DEPS: &[(Feature, &[Feature])] = {
    use Feature as F;
    &[
        (F(0, 0), &[F(0, 23), F(8, 2)]),
        (F(0, 3), &[F(0, 17)]),
        (F(0, 6), &[F(2, 29), F(2, 20)]),
        (F(0, 4), &[F(1, 24), F(2, 27), F(5, 1), F(7, 8)]),
        (F(0, 9), &[F(1, 21), F(1, 24), F(3, 3)]),
        (F(0, 23), &[F(2, 22), F(2, 31)]),
        (F(0, 24), &[F(2, 25), F(0, 25)]),
        (F(0, 25), &[F(0, 26), F(3, 7)]),
        (
            F(0, 26),
            &[F(1, 0), F(2, 29), F(1, 25), F(1, 1), F(5, 29), F(6, 8)],
        ),
        (F(1, 0), &[F(1, 9), F(3, 6)]),
        (F(1, 9), &[F(1, 19)]),
        (F(1, 19), &[F(1, 20)]),
        (
            F(1, 26),
            &[
                F(4, 0),
                F(4, 1),
                F(4, 2),
                F(4, 3),
                F(1, 28),
                F(5, 14),
                F(6, 3),
                F(3, 15),
            ],
        ),
        (F(1, 28), &[F(1, 12), F(3, 16), F(1, 29), F(5, 5), F(3, 11)]),
        (F(2, 20), &[F(5, 20)]),
        (
            F(2, 29),
            &[F(1, 13), F(1, 17), F(3, 0), F(2, 26), F(6, 3), F(8, 20)],
        ),
        (F(2, 31), &[F(2, 30)]),
        (F(5, 5), &[F(5, 16), F(6, 9), F(6, 10), F(10, 4)]),
        (
            F(5, 16),
            &[
                F(5, 17),
                F(5, 21),
                F(5, 26),
                F(5, 27),
                F(5, 28),
                F(5, 30),
                F(5, 31),
                F(9, 2),
                F(9, 3),
                F(6, 11),
                F(6, 14),
                F(9, 8),
            ],
        ),
        (F(5, 30), &[F(6, 1), F(6, 6), F(6, 12), F(10, 5), F(9, 23)]),
        (F(1, 1), &[F(6, 10)]),
        (F(1, 25), &[F(6, 9)]),
        (
            F(9, 26),
            &[
                F(9, 27),
                F(9, 31),
                F(13, 0),
                F(16, 1),
                F(13, 1),
                F(13, 2),
                F(13, 4),
            ],
        ),
        (
            F(8, 14),
            &[F(8, 15), F(8, 24), F(8, 28), F(8, 16), F(8, 18), F(8, 19)],
        ),
        (F(8, 12), &[F(8, 30), F(11, 27), F(11, 28)]),
        (F(8, 15), &[F(8, 17)]),
        (F(5, 11), &[F(9, 16)]),
        (F(16, 1), &[F(16, 19)]),
    ]
};

/// A featureset: one bit per feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Featureset(pub [u32; NR_WORDS]);

impl Featureset {
    /// Whether `f` is set.
    pub fn has(&self, f: Feature) -> bool {
        self.0
            .get(usize::from(f.0))
            .is_some_and(|w| w & (1 << f.1) != 0)
    }

    /// Sets or clears `f`.
    pub fn set(&mut self, f: Feature, on: bool) {
        if let Some(w) = self.0.get_mut(usize::from(f.0)) {
            if on {
                *w |= 1 << f.1;
            } else {
                *w &= !(1 << f.1);
            }
        }
    }

    /// Xen's `sanitise_featureset`: clamps to the known features, then turns off
    /// everything that depends on a feature that is off.
    fn sanitise(&mut self) {
        for (w, k) in self.0.iter_mut().zip(KNOWN) {
            *w &= k;
        }
        // Dependencies nest (XSAVE -> AVX -> AVX2 -> AVX512F -> ...): repeat until
        // nothing changes; the table is short and acyclic.
        loop {
            let before = *self;
            for &(f, deps) in DEPS {
                if !self.has(f) {
                    for &d in deps {
                        self.set(d, false);
                    }
                }
            }
            if *self == before {
                break;
            }
        }
    }
}

/// The CPU vendor, as far as the policy cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// GenuineIntel (and anything else that is not AMD or Hygon).
    Intel,
    /// AuthenticAMD or HygonGenuine.
    Amd,
}

/// "Auth" of "AuthenticAMD", as EBX of leaf 0.
const AMD_EBX: u32 = 0x6874_7541;
/// "Hygo" of "HygonGenuine".
const HYGON_EBX: u32 = 0x6f67_7948;

/// Which instruction asked, as Xen tells them apart (by the vector it is serving).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    /// The forced-emulation prefix (`ud2; .ascii "xen"; cpuid`): a #UD.
    Forced,
    /// A plain `cpuid` that faulted (CPUID faulting): a #GP.
    Faulted,
}

/// What the per-call adjustments depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The domain is the hardware domain (dom0).
    pub hardware_domain: bool,
    /// The vCPU is in guest kernel mode.
    pub kernel_mode: bool,
    /// The instruction that asked.
    pub path: Path,
    /// The vCPU's virtual CR4 (OSXSAVE, PKE show in leaves 1 and 7).
    pub cr4: u64,
    /// The vCPU's id (the x2APIC id in leaf 0xB, when X2APIC is shown).
    pub vcpu_id: u32,
    /// The vCPU's XCR0 (0 = never set: x87 and SSE), for leaf 0xD's current size.
    pub xcr0: u64,
    /// The hypervisor's own CR4.OSXSAVE (it leaks into a kernel's forced CPUID).
    pub host_osxsave: bool,
}

/// What the hypervisor leaves at 0x40000000 report besides the policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostInfo {
    /// The TSC frequency in kHz (leaf 0x40000003, subleaf 2).
    pub tsc_khz: u32,
    /// One more than the highest machine frame (leaf 0x40000005 EBX: its width in
    /// bits plus 12).
    pub max_page: u64,
}

/// Xen's hypervisor leaves start here.
pub const XEN_CPUID_BASE: u32 = 0x4000_0000;
/// How many leaves past the base Xen 4.17 has (`XEN_CPUID_MAX_NUM_LEAVES`).
const XEN_CPUID_LEAVES: u32 = 5;
/// "XenVMMXenVMM" as EBX, ECX, EDX.
pub const XEN_SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
/// `XEN_CPUID_FEAT1_MMU_PT_UPDATE_PRESERVE_AD` (leaf 0x40000002 ECX, PV only).
const FEAT1_MMU_PT_UPDATE_PRESERVE_AD: u32 = 1;

/// Feature bits of leaf 1 EDX that AMD repeats in 0x80000001 EDX
/// (`CPUID_COMMON_1D_FEATURES`).
const COMMON_1D: u32 = 0x0183_f3ff;

/// `CPUID_GUEST_NR_*`: how far each range of the policy goes.
const NR_BASIC: u32 = 0xd + 1;
const NR_FEAT: u32 = 2 + 1;
const NR_CACHE: u32 = 5 + 1;
const NR_EXTD_INTEL: u32 = 0x8 + 1;
const NR_EXTD_AMD: u32 = 0x21 + 1;

const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;

/// The host's leaves, read once per question.
struct Host<'a> {
    cpuid: &'a dyn Fn(u32, u32) -> Leaf,
    vendor: Vendor,
    max_basic: u32,
    max_extd: u32,
}

impl Host<'_> {
    fn leaf(&self, leaf: u32, sub: u32) -> Leaf {
        let present = if leaf >= 0x8000_0000 {
            leaf <= self.max_extd
        } else {
            leaf <= self.max_basic
        };
        if present {
            (self.cpuid)(leaf, sub)
        } else {
            [0; 4]
        }
    }

    /// The host's featureset as Xen holds it (`boot_cpu_data.x86_capability`): the
    /// raw words, less SEP on AMD (Xen runs in long mode there, where SYSENTER does
    /// not exist, and `init_amd` clears it).
    fn featureset(&self) -> Featureset {
        let l1 = self.leaf(1, 0);
        let l7 = self.leaf(7, 0);
        let l7_1 = if l7[0] >= 1 { self.leaf(7, 1) } else { [0; 4] };
        let l7_2 = if l7[0] >= 2 { self.leaf(7, 2) } else { [0; 4] };
        let ld1 = self.leaf(0xd, 1);
        let e1 = self.leaf(0x8000_0001, 0);
        let e7 = self.leaf(0x8000_0007, 0);
        let e8 = self.leaf(0x8000_0008, 0);
        let e21 = self.leaf(0x8000_0021, 0);
        let mut fs = Featureset([
            l1[3], l1[2], e1[3], e1[2], ld1[0], l7[1], l7[2], e7[3], e8[1], l7[3], l7_1[0], e21[0],
            l7_1[1], l7_2[3], l7_1[2], l7_1[3], 0, 0, e21[2],
        ]);
        for (w, k) in fs.0.iter_mut().zip(KNOWN) {
            *w &= k;
        }
        // OSXSAVE and OSPKE reflect the host's CR4, not a feature.
        fs.set(feat::OSXSAVE, false);
        fs.set(feat::OSPKE, false);
        if self.vendor == Vendor::Amd {
            fs.set(feat::SEP, false);
        }
        fs
    }
}

/// The PV default policy's featureset for this host (`calculate_pv_def_policy`,
/// then `recalculate_cpuid_policy` and, for dom0, `init_dom0_cpuid_policy`).
pub fn pv_featureset(host: &dyn Fn(u32, u32) -> Leaf, hardware_domain: bool) -> Featureset {
    let h = host_of(host);
    policy_featureset(&h, &h.featureset(), hardware_domain)
}

fn host_of(cpuid: &dyn Fn(u32, u32) -> Leaf) -> Host<'_> {
    let l0 = cpuid(0, 0);
    let vendor = if l0[1] == AMD_EBX || l0[1] == HYGON_EBX {
        Vendor::Amd
    } else {
        Vendor::Intel
    };
    let e0 = cpuid(0x8000_0000, 0)[0];
    let max_extd = if e0 & 0xffff_0000 == 0x8000_0000 {
        e0
    } else {
        0
    };
    Host {
        cpuid,
        vendor,
        max_basic: l0[0],
        max_extd,
    }
}

fn policy_featureset(h: &Host<'_>, host: &Featureset, hardware_domain: bool) -> Featureset {
    let mut fs = *host;
    for (w, m) in fs.0.iter_mut().zip(PV_DEFAULT) {
        *w &= m;
    }
    // guest_common_feature_adjustments
    fs.set(feat::HYPERVISOR, true);
    if fs.has(feat::IBRSB) {
        fs.set(feat::STIBP, true);
    }
    if fs.has(feat::IBRS) {
        fs.set(feat::AMD_STIBP, true);
    }
    if host.has(feat::IBRSB) {
        fs.set(feat::IBPB, true);
    }
    // guest_common_default_feature_adjustments: topology bits as the host has them.
    fs.set(feat::HTT, host.has(feat::HTT));
    fs.set(feat::CMP_LEGACY, host.has(feat::CMP_LEGACY));
    fs.sanitise();
    // recalculate_cpuid_policy: leaf 0xD must exist for XSAVE; FDP_EXCP_ONLY and
    // NO_FPU_SEL are the host's.
    if h.max_basic.min(NR_BASIC - 1) < 0xd {
        fs.set(feat::XSAVE, false);
    }
    fs.sanitise();
    fs.set(feat::FDP_EXCP_ONLY, host.has(feat::FDP_EXCP_ONLY));
    fs.set(feat::NO_FPU_SEL, host.has(feat::NO_FPU_SEL));
    // init_dom0_cpuid_policy: dom0 does not migrate, so it may see ITSC.
    if hardware_domain && host.has(feat::ITSC) {
        fs.set(feat::ITSC, true);
    }
    fs
}

fn bit(f: Feature) -> u32 {
    1 << f.1
}

/// The CPUID answer for `leaf`/`subleaf` that Xen 4.17 gives a 64-bit PV guest with
/// the default policy on a host whose own answers are `host`, asked as `caller` says.
/// Leaves outside the policy's ranges read as zeros (Xen follows AMD's model).
pub fn pv_cpuid(
    host: &dyn Fn(u32, u32) -> Leaf,
    info: &HostInfo,
    leaf: u32,
    subleaf: u32,
    caller: &Caller,
) -> Leaf {
    let h = host_of(host);
    // The host's featureset is read once per question (each is several CPUIDs,
    // which cost an exit when the hypervisor itself runs in a VM).
    let host_fs = h.featureset();
    let fs = policy_featureset(&h, &host_fs, caller.hardware_domain);
    let w = |i: usize| fs.0.get(i).copied().unwrap_or(0);
    let amd = h.vendor == Vendor::Amd;
    let max_basic = h.max_basic.min(NR_BASIC - 1);
    let nr_extd = if amd { NR_EXTD_AMD } else { NR_EXTD_INTEL };
    let max_extd = if h.max_extd == 0 {
        0
    } else {
        0x8000_0000 | (h.max_extd & 0xffff).min(nr_extd - 1)
    };
    // The hardware domain's kernel keeps what older dom0 kernels relied on.
    let dom0_kernel = caller.hardware_domain && caller.kernel_mode;
    // MTRR leaks into dom0's kernel (XENPF_*_memtype), in leaf 1 and 0x80000001.
    let mtrr_leak = if dom0_kernel && host_fs.has(feat::MTRR) {
        bit(feat::MTRR)
    } else {
        0
    };
    let raw1 = h.leaf(1, 0);
    // Leaf 1 EDX as the policy has it (AMD repeats its common bits in 0x80000001).
    let d1 = w(0);
    match leaf {
        0..=0xffff if leaf > max_basic => [0; 4],
        0 => {
            let [_, b, c, d] = h.leaf(0, 0);
            [max_basic, b, c, d]
        }
        1 => {
            // Family/model/stepping without Intel's processor type; APIC ID 0 (and
            // for a PV guest nothing dynamic put back); CLFLUSH size and logical
            // processor count as the host's.
            let a = raw1[0] & 0x0fff_0fff;
            let b = raw1[1] & 0x00ff_ffff;
            let mut c = w(1);
            // OSXSAVE is the guest's CR4's, and also, as Xen's de facto PV ABI
            // (Linux relied on it), shown to a kernel's forced CPUID while the
            // hypervisor's own CR4 has it and the policy has XSAVE.
            let leak = fs.has(feat::XSAVE)
                && caller.path == Path::Forced
                && caller.kernel_mode
                && caller.host_osxsave;
            if caller.cr4 & CR4_OSXSAVE != 0 || leak {
                c |= bit(feat::OSXSAVE);
            }
            if dom0_kernel {
                let host = &host_fs;
                if host.has(feat::MONITOR) && caller.path == Path::Faulted {
                    c |= bit(feat::MONITOR);
                }
                if host.has(feat::EIST) {
                    c |= bit(feat::EIST);
                }
            }
            [a, b, c, d1 | mtrr_leak]
        }
        2 if !amd => {
            // The number of queries is fixed to 1.
            let [a, b, c, d] = h.leaf(2, 0);
            [(a & !0xff) | 1, b, c, d]
        }
        4 if !amd => cache_leaf(&h, subleaf),
        5 => {
            let monitor = host_fs.has(feat::MONITOR);
            if dom0_kernel && monitor && caller.path == Path::Faulted {
                h.leaf(5, 0)
            } else {
                [0; 4]
            }
        }
        7 => {
            let max_sub = h.leaf(7, 0)[0].min(NR_FEAT - 1);
            match subleaf {
                s if s > max_sub => [0; 4],
                0 => {
                    let mut c = w(6);
                    if caller.cr4 & CR4_PKE != 0 {
                        c |= bit(feat::OSPKE);
                    }
                    [max_sub, w(5), c, w(9)]
                }
                1 => [w(10), w(12), w(14), w(15)],
                _ => [0, 0, 0, w(13)],
            }
        }
        0xd => xstate_leaf(&h, &fs, subleaf, caller.xcr0),
        // The PSN, MONITOR, power, DCA, vPMU (off), topology (0xB: X2APIC is never
        // shown to PV), and on AMD the Intel cache leaves.
        2..=0xc => [0; 4],
        l if (XEN_CPUID_BASE..=XEN_CPUID_BASE + 0x1ff).contains(&l) => {
            hypervisor_leaf(&h, &host_fs, info, l - XEN_CPUID_BASE, subleaf)
        }
        0x8000_0000..=0x8000_ffff if max_extd == 0 || leaf > max_extd => [0; 4],
        0x8000_0000 => {
            if amd {
                let [_, b, c, d] = h.leaf(0, 0);
                [max_extd, b, c, d]
            } else {
                [max_extd, 0, 0, 0]
            }
        }
        0x8000_0001 => {
            let [a, b, ..] = h.leaf(0x8000_0001, 0);
            let mut d = w(2) & !COMMON_1D;
            let (a, b) = if amd {
                d |= d1 & COMMON_1D;
                (raw1[0] & 0x0fff_0fff, b & 0xff00_ffff)
            } else {
                let _ = a;
                (0, 0)
            };
            [a, b, w(3), d | mtrr_leak]
        }
        0x8000_0002..=0x8000_0004 => h.leaf(leaf, 0),
        0x8000_0005 if amd => h.leaf(leaf, 0),
        0x8000_0006 => {
            let r = h.leaf(leaf, 0);
            if amd { r } else { [0, 0, r[2], 0] }
        }
        0x8000_0007 => [0, 0, 0, w(7)],
        0x8000_0008 => {
            let [a, _, c, _] = h.leaf(leaf, 0);
            // Physical address width: the host's, at least 36 (PAE), at most 52
            // (what PV page tables can name); linear: 48 with long mode.
            let phys = (a & 0xff).clamp(36, 52);
            let lin = if fs.has(feat::LM) { 48 } else { 32 };
            // (The guest's own physical width, bits 16-23, is hidden.)
            let a = (lin << 8) | phys;
            let c = if amd { c & 0x0003_f0ff } else { 0 };
            [a, w(8), c, 0]
        }
        0x8000_0019 if amd && fs.has(feat::PAGE1GB) => h.leaf(leaf, 0),
        0x8000_001a if amd => h.leaf(leaf, 0),
        0x8000_0021 if amd => [w(11), 0, w(18), 0],
        _ => [0; 4],
    }
}

/// Leaf 0xD as Xen's `recalculate_xstate` derives it from the policy (x87, SSE, and
/// the components of AVX, MPX, AVX-512 and PKU when the policy has them), with the
/// current size (subleaf 0 EBX) for the vCPU's XCR0 (`guest_cpuid`). Empty without
/// XSAVE.
fn xstate_leaf(h: &Host<'_>, fs: &Featureset, subleaf: u32, xcr0: u64) -> Leaf {
    use crate::xstate;
    if !fs.has(feat::XSAVE) {
        return [0; 4];
    }
    let mut comps = xstate::FP_SSE;
    for (f, c) in [
        (feat::AVX, xstate::YMM),
        (feat::MPX, xstate::BNDREGS | xstate::BNDCSR),
        (feat::AVX512F, xstate::OPMASK | xstate::ZMM | xstate::HI_ZMM),
        (feat::PKU, xstate::PKRU),
    ] {
        if fs.has(f) {
            comps |= c;
        }
    }
    let host = |l, s| h.leaf(l, s);
    match subleaf {
        0 => {
            let current = if xcr0 == 0 { xstate::FP_SSE } else { xcr0 };
            [
                (comps & 0xffff_ffff) as u32,
                xstate::uncompressed_size(&host, current),
                xstate::uncompressed_size(&host, comps),
                (comps >> 32) as u32,
            ]
        }
        // XSAVEOPT, XSAVEC, XGETBV1 as the policy has them (XSAVES is never PV);
        // with XSAVEC the compacted size is the hardware's for the loaded XCR0,
        // which is the vCPU's while it asks.
        1 => {
            let b = if fs.has(feat::XSAVEC) || fs.has(feat::XSAVES) {
                h.leaf(0xd, 1)[1]
            } else {
                0
            };
            [fs.0.get(4).copied().unwrap_or(0), b, 0, 0]
        }
        i if i < 63 && comps & (1 << i) != 0 => {
            let [size, offset, c, _] = h.leaf(0xd, i);
            // Not supervisor state (bit 0); the 64-byte alignment (bit 1) as the
            // host's.
            [size, offset, c & 2, 0]
        }
        _ => [0; 4],
    }
}

/// Intel's deterministic cache leaf 4: the host's subleaves with reserved fields
/// cleared, up to the first that is not a data, instruction or unified cache.
fn cache_leaf(h: &Host<'_>, subleaf: u32) -> Leaf {
    if subleaf >= NR_CACHE {
        return [0; 4];
    }
    for s in 0..=subleaf {
        let r = h.leaf(4, s);
        let kind = r[0] & 0x1f;
        if !(1..=3).contains(&kind) {
            return [0; 4];
        }
        if s == subleaf {
            return [r[0] & 0xffff_c3ff, r[1], r[2], r[3] & 7];
        }
    }
    [0; 4]
}

/// Xen's leaves (`cpuid_hypervisor_leaves`) for a PV domain: `idx` past the base.
fn hypervisor_leaf(
    h: &Host<'_>,
    host: &Featureset,
    info: &HostInfo,
    idx: u32,
    subleaf: u32,
) -> Leaf {
    let version = u32::try_from(hypercall_abi::version::XEN_VERSION).unwrap_or(0);
    match idx {
        0 => [
            XEN_CPUID_BASE + XEN_CPUID_LEAVES,
            XEN_SIGNATURE[0],
            XEN_SIGNATURE[1],
            XEN_SIGNATURE[2],
        ],
        1 => [version, 0, 0, 0],
        // One hypercall page; its MSR at the base; PV page-table updates keep the
        // accessed and dirty bits.
        2 => [1, XEN_CPUID_BASE, FEAT1_MMU_PT_UPDATE_PRESERVE_AD, 0],
        // Time: no virtual TSC (tsc_mode 0, "default"); bit 1 says the TSC is
        // invariant, bit 2 that the host has RDTSCP.
        3 => match subleaf {
            0 => {
                let invariant = h.leaf(0x8000_0007, 0)[3] & (1 << 8) != 0;
                [
                    (u32::from(invariant) << 1) | (u32::from(host.has(feat::RDTSCP)) << 2),
                    0,
                    0,
                    0,
                ]
            }
            2 => [info.tsc_khz, 0, 0, 0],
            _ => [0; 4],
        },
        // PV: the width of machine addresses.
        5 if subleaf == 0 => {
            let top = info.max_page.saturating_sub(1);
            let bits = 64 - top.leading_zeros();
            [0, bits + 12, 0, 0]
        }
        _ => [0; 4],
    }
}

#[cfg(test)]
mod tests;
