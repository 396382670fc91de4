//! Version and feature queries: `xen_version` (#17) (`version.h`,
//! `features.h`), and the answers this hypervisor gives, which are Xen
//! 4.17's.
//!
//! A guest cannot tell us from Xen 4.17 through `xen_version`: the
//! constants below are what a Xen 4.17 hypervisor that offers only 64-bit PV
//! guests reports. Choices where real builds differ:
//!
//! * [`XEN_EXTRAVERSION`] is `".7"`, matching the 4.17.7 release whose
//!   headers this crate follows (a distribution build may append a vendor
//!   suffix; guests do not interpret it).
//! * [`XEN_CAPABILITIES`] lists only `xen-3.0-x86_64`, with the trailing
//!   space Xen emits after every entry: there is no 32-bit PV or HVM.
//! * [`XEN_CHANGESET`] is `"unavailable"`, what Xen reports when built
//!   outside a source repository.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

subops! {
    /// `xen_version` commands (`XENVER_*`) in Xen 4.17.
    pub enum XenVer: "XENVER_" {
        /// Returns `(major << 16) | minor`; `arg` must be null.
        0 => Version(()) version since 0x0000_0000;
        /// Writes the extra version string (16 bytes).
        1 => Extraversion(XenExtraversion) extraversion since 0x0000_0000;
        /// Writes the compiler and build information.
        2 => CompileInfo(XenCompileInfo) compile_info since 0x0000_0000;
        /// Writes the capabilities string (1024 bytes).
        3 => Capabilities(XenCapabilitiesInfo) capabilities since 0x0000_0000;
        /// Writes the changeset string (64 bytes).
        4 => Changeset(XenChangesetInfo) changeset since 0x0000_0000;
        /// Writes the hypervisor's virtual start address.
        5 => PlatformParameters(XenPlatformParameters) platform_parameters since 0x0000_0000;
        /// Fills in a feature submap (`submap_idx` 0 only).
        6 => GetFeatures(XenFeatureInfo) get_features since 0x0000_0000;
        /// Returns the page size; `arg` must be null.
        7 => Pagesize(()) pagesize since 0x0000_0000;
        /// Writes the domain's UUID (16 bytes).
        8 => GuestHandle(XenDomainHandle) guest_handle since 0x0000_0000;
        /// Writes the hypervisor command line (privileged).
        9 => Commandline(XenCommandline) commandline since 0x0000_0000;
        /// Writes the build id (privileged).
        10 => BuildId(XenBuildId) build_id since 0x0000_0000;
    }
}

/// `xen_extraversion_t`.
pub type XenExtraversion = [u8; 16];
/// `xen_capabilities_info_t`.
pub type XenCapabilitiesInfo = [u8; 1024];
/// `xen_changeset_info_t`.
pub type XenChangesetInfo = [u8; 64];
/// `xen_domain_handle_t` (a UUID).
pub type XenDomainHandle = [u8; 16];
/// `xen_commandline_t`.
pub type XenCommandline = [u8; 1024];

/// `struct xen_compile_info` (144 bytes). Written by the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct XenCompileInfo {
    /// Compiler description, NUL-terminated.
    pub compiler: [u8; 64],
    /// Who built it.
    pub compile_by: [u8; 16],
    /// Build host domain.
    pub compile_domain: [u8; 32],
    /// Build date.
    pub compile_date: [u8; 32],
}

/// `struct xen_platform_parameters` (8 bytes). Written by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenPlatformParameters {
    /// [`HYPERVISOR_VIRT_START`](crate::xen::HYPERVISOR_VIRT_START) for a
    /// 64-bit PV guest.
    pub virt_start: u64,
}

/// `struct xen_feature_info` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenFeatureInfo {
    /// In (guest): which 32-bit submap (only 0 exists).
    pub submap_idx: u32,
    /// Out (hypervisor): the feature bits ([`XenFeature`]).
    pub submap: u32,
}

/// `struct xen_build_id` header (4 bytes, followed by `len` bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenBuildId {
    /// In: buffer size; out: id length.
    pub len: u32,
}

/// Feature bit numbers (`XENFEAT_*`) in Xen 4.17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenFeature {
    /// The guest may write its page tables directly.
    WritablePageTables = 0,
    /// The guest may write its descriptor tables directly.
    WritableDescriptorTables = 1,
    /// The hypervisor translates pseudo-physical addresses.
    AutoTranslatedPhysmap = 2,
    /// The guest kernel runs in ring 0.
    SupervisorModeKernel = 3,
    /// Page directories may lie above 4 GiB.
    PaePgdirAbove4gb = 4,
    /// `MMU_PT_UPDATE_PRESERVE_AD` is supported.
    MmuPtUpdatePreserveAd = 5,
    /// `MMUEXT_CLEAR_PAGE`/`COPY_PAGE` are supported.
    HighmemAssist = 6,
    /// Grant maps honour the guest-available PTE bits.
    GnttabMapAvailBits = 7,
    /// HVM callback vector.
    HvmCallbackVector = 8,
    /// pvclock is safe on HVM.
    HvmSafePvclock = 9,
    /// HVM PIRQs.
    HvmPirqs = 10,
    /// Operation as dom0 is supported.
    Dom0 = 11,
    /// Retired (grant mappings at pfn = mfn); not defined by 4.17's headers.
    GrantMapIdentity = 12,
    /// `XENMEMF_vnode` is supported.
    MemoryOpVnodeSupported = 13,
    /// Arm SMCCC.
    ArmSmcccSupported = 14,
    /// The ACPI RSDP may be anywhere (PVH Linux).
    LinuxRsdpUnrestricted = 15,
    /// The domain's frames are not 1:1 with machine frames.
    NotDirectMapped = 16,
    /// The domain's frames are 1:1 with machine frames (every PV domain).
    DirectMapped = 17,
}

impl XenFeature {
    /// Every feature, in bit order.
    pub const ALL: [XenFeature; 18] = [
        XenFeature::WritablePageTables,
        XenFeature::WritableDescriptorTables,
        XenFeature::AutoTranslatedPhysmap,
        XenFeature::SupervisorModeKernel,
        XenFeature::PaePgdirAbove4gb,
        XenFeature::MmuPtUpdatePreserveAd,
        XenFeature::HighmemAssist,
        XenFeature::GnttabMapAvailBits,
        XenFeature::HvmCallbackVector,
        XenFeature::HvmSafePvclock,
        XenFeature::HvmPirqs,
        XenFeature::Dom0,
        XenFeature::GrantMapIdentity,
        XenFeature::MemoryOpVnodeSupported,
        XenFeature::ArmSmcccSupported,
        XenFeature::LinuxRsdpUnrestricted,
        XenFeature::NotDirectMapped,
        XenFeature::DirectMapped,
    ];

    /// The bit in a submap.
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Xen's name without the prefix, as used in the `FEATURES` ELF note.
    pub const fn name(self) -> &'static str {
        match self {
            XenFeature::WritablePageTables => "writable_page_tables",
            XenFeature::WritableDescriptorTables => "writable_descriptor_tables",
            XenFeature::AutoTranslatedPhysmap => "auto_translated_physmap",
            XenFeature::SupervisorModeKernel => "supervisor_mode_kernel",
            XenFeature::PaePgdirAbove4gb => "pae_pgdir_above_4gb",
            XenFeature::MmuPtUpdatePreserveAd => "mmu_pt_update_preserve_ad",
            XenFeature::HighmemAssist => "highmem_assist",
            XenFeature::GnttabMapAvailBits => "gnttab_map_avail_bits",
            XenFeature::HvmCallbackVector => "hvm_callback_vector",
            XenFeature::HvmSafePvclock => "hvm_safe_pvclock",
            XenFeature::HvmPirqs => "hvm_pirqs",
            XenFeature::Dom0 => "dom0",
            XenFeature::GrantMapIdentity => "grant_map_identity",
            XenFeature::MemoryOpVnodeSupported => "memory_op_vnode_supported",
            XenFeature::ArmSmcccSupported => "ARM_SMCCC_supported",
            XenFeature::LinuxRsdpUnrestricted => "linux_rsdp_unrestricted",
            XenFeature::NotDirectMapped => "not_direct_mapped",
            XenFeature::DirectMapped => "direct_mapped",
        }
    }

    /// The feature with Xen name `name`.
    pub fn from_name(name: &str) -> Option<XenFeature> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// Feature submaps (`XENFEAT_NR_SUBMAPS`).
pub const XENFEAT_NR_SUBMAPS: u32 = 1;

/// Major version reported.
pub const XEN_MAJOR: u32 = 4;
/// Minor version reported.
pub const XEN_MINOR: u32 = 17;
/// `XENVER_version`'s result: `(4 << 16) | 17`.
pub const XEN_VERSION: u64 = ((XEN_MAJOR as u64) << 16) | XEN_MINOR as u64;
/// `XENVER_extraversion`'s string (see the module documentation).
pub const XEN_EXTRAVERSION: &str = ".7";
/// `XENVER_capabilities`'s string: 64-bit PV only, trailing space as Xen
/// writes it.
pub const XEN_CAPABILITIES: &str = "xen-3.0-x86_64 ";
/// `XENVER_changeset`'s string.
pub const XEN_CHANGESET: &str = "unavailable";
/// `XENVER_pagesize`'s result.
pub const XEN_PAGESIZE: u64 = 4096;

/// Submap 0 as Xen 4.17 reports it to a 64-bit PV domain:
/// `mmu_pt_update_preserve_ad`, `highmem_assist`, `gnttab_map_avail_bits`,
/// `memory_op_vnode_supported` and `direct_mapped`, plus `dom0` for the
/// hardware domain and `pae_pgdir_above_4gb` while the `pae_extended_cr3`
/// assist is on. (Bits 18..=20 belong to later Xen versions.)
pub const fn pv_features(hardware_domain: bool, pae_extended_cr3: bool) -> u32 {
    let mut f = XenFeature::MmuPtUpdatePreserveAd.bit()
        | XenFeature::HighmemAssist.bit()
        | XenFeature::GnttabMapAvailBits.bit()
        | XenFeature::MemoryOpVnodeSupported.bit()
        | XenFeature::DirectMapped.bit();
    if hardware_domain {
        f |= XenFeature::Dom0.bit();
    }
    if pae_extended_cr3 {
        f |= XenFeature::PaePgdirAbove4gb.bit();
    }
    f
}

/// Submap 0 for an ordinary 64-bit PV domU.
pub const PV_DOMU_FEATURES: u32 = pv_features(false, false);
/// Submap 0 for the hardware domain (dom0).
pub const PV_HWDOM_FEATURES: u32 = pv_features(true, false);

/// Copy `s` into a fixed, NUL-padded buffer as the hypervisor writes version
/// strings (always NUL-terminated; bytes after the string are zero).
pub fn fill_string<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    if let (Some(dst), Some(src)) = (out.get_mut(..n), s.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    out
}

assert_layout!(
    XenCompileInfo,
    144,
    compiler = 0,
    compile_by = 64,
    compile_domain = 80,
    compile_date = 112,
);
assert_layout!(XenPlatformParameters, 8, virt_start = 0);
assert_layout!(XenFeatureInfo, 8, submap_idx = 0, submap = 4);
assert_layout!(XenBuildId, 4, len = 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_4_17_answers() {
        assert_eq!(XEN_VERSION, 0x0004_0011);
        assert_eq!(
            PV_DOMU_FEATURES,
            (1 << 5) | (1 << 6) | (1 << 7) | (1 << 13) | (1 << 17)
        );
        assert_eq!(PV_HWDOM_FEATURES, PV_DOMU_FEATURES | (1 << 11));
        assert_eq!(pv_features(false, true), PV_DOMU_FEATURES | (1 << 4));
    }

    #[test]
    fn strings_are_nul_padded() {
        let e: XenExtraversion = fill_string(XEN_EXTRAVERSION);
        assert_eq!(&e[..3], b".7\0");
        assert!(e[2..].iter().all(|&b| b == 0));
        let long: [u8; 4] = fill_string("abcdef");
        assert_eq!(&long, b"abc\0");
    }

    #[test]
    fn feature_names() {
        for f in XenFeature::ALL {
            assert_eq!(XenFeature::from_name(f.name()), Some(f));
            assert_eq!(f as u32, f.bit().trailing_zeros());
        }
    }
}
