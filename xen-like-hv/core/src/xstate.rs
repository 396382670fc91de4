//! XSAVE state of a PV vCPU: which XCR0 values a guest may set (Xen 4.17's
//! `valid_xcr0`, `handle_xsetbv`), the mask the hypervisor enables, and the
//! standard-form area sizes CPUID leaf 0xD reports, all from the host's leaves.

/// One CPUID answer: EAX, EBX, ECX, EDX.
type Leaf = [u32; 4];

/// x87 state.
pub const FP: u64 = 1 << 0;
/// SSE state (XMM registers, MXCSR).
pub const SSE: u64 = 1 << 1;
/// x87 and SSE: what XCR0 holds when a guest never set it.
pub const FP_SSE: u64 = FP | SSE;
/// Upper halves of the YMM registers (AVX).
pub const YMM: u64 = 1 << 2;
/// MPX bound registers.
pub const BNDREGS: u64 = 1 << 3;
/// MPX configuration and status.
pub const BNDCSR: u64 = 1 << 4;
/// AVX-512 opmask registers.
pub const OPMASK: u64 = 1 << 5;
/// Upper halves of ZMM0-15.
pub const ZMM: u64 = 1 << 6;
/// ZMM16-31.
pub const HI_ZMM: u64 = 1 << 7;
/// Protection-key rights.
pub const PKRU: u64 = 1 << 9;
/// AMD's lightweight profiling.
pub const LWP: u64 = 1 << 62;

/// The components Xen manages (`XCNTXT_MASK`), less PKRU, which a PV guest may
/// never enable (`handle_xsetbv`), so this hypervisor leaves it out of its own XCR0.
pub const CONTEXT_MASK: u64 = FP_SSE | YMM | BNDREGS | BNDCSR | OPMASK | ZMM | HI_ZMM | LWP;

/// Size of the legacy (FXSAVE) region plus the XSAVE header.
pub const MIN_SIZE: u32 = 512 + 64;

/// Xen's `valid_xcr0`: x87 always on; YMM needs SSE; the AVX-512 trio together and
/// with YMM; the MPX pair together.
pub fn valid_xcr0(xcr0: u64) -> bool {
    if xcr0 & FP == 0 {
        return false;
    }
    if xcr0 & YMM != 0 && xcr0 & SSE == 0 {
        return false;
    }
    let avx512 = OPMASK | ZMM | HI_ZMM;
    if xcr0 & avx512 != 0 && (xcr0 & YMM == 0 || xcr0 & avx512 != avx512) {
        return false;
    }
    (xcr0 & BNDREGS == 0) == (xcr0 & BNDCSR == 0)
}

/// Why an `xsetbv` is refused: the guest gets #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// Xen's `x86emul_write_xcr` + `handle_xsetbv` for a PV vCPU: only XCR0 (ECX 0),
/// only components the hypervisor manages (`mask`), a valid combination, no PKRU.
/// Returns the new XCR0.
pub fn xsetbv(mask: u64, index: u32, value: u64) -> Result<u64, Refused> {
    if index != 0 || value & !mask != 0 || !valid_xcr0(value) || value & PKRU != 0 {
        return Err(Refused);
    }
    Ok(value)
}

/// The standard-form (XSAVE) area size for `xcr0`: the end of the last enabled
/// component past x87/SSE (offset + size from the host's leaf 0xD subleaves), at
/// least the legacy region and header.
pub fn uncompressed_size(host: &dyn Fn(u32, u32) -> Leaf, xcr0: u64) -> u32 {
    (2..63u32)
        .filter(|&i| xcr0 & (1 << i) != 0)
        .map(|i| {
            let [size, offset, ..] = host(0xd, i);
            offset.saturating_add(size)
        })
        .fold(MIN_SIZE, u32::max)
}

/// The XCR0 the hypervisor runs with and lets guests choose from (Xen's
/// `xfeature_mask`): what the CPU supports (leaf 0xD.0 EDX:EAX) of [`CONTEXT_MASK`],
/// less whole groups (LWP, AVX-512, MPX, AVX) from the top while the area would not
/// fit in `capacity` bytes. `None` if the CPU has no XSAVE or x87/SSE alone do not
/// fit.
pub fn hypervisor_mask(host: &dyn Fn(u32, u32) -> Leaf, capacity: usize) -> Option<u64> {
    if host(0, 0)[0] < 0xd || host(1, 0)[2] & (1 << 26) == 0 {
        return None;
    }
    let [a, _, _, d] = host(0xd, 0);
    let mut mask = ((u64::from(d) << 32) | u64::from(a)) & CONTEXT_MASK;
    if mask & FP_SSE != FP_SSE {
        return None;
    }
    let fits = |m: u64| usize::try_from(uncompressed_size(host, m)).is_ok_and(|s| s <= capacity);
    for group in [LWP, OPMASK | ZMM | HI_ZMM, BNDREGS | BNDCSR, YMM] {
        if fits(mask) {
            break;
        }
        mask &= !group;
    }
    // A group the CPU has only in part is no use (valid_xcr0 would refuse it).
    for group in [OPMASK | ZMM | HI_ZMM, BNDREGS | BNDCSR] {
        if mask & group != group {
            mask &= !group;
        }
    }
    if mask & YMM == 0 {
        mask &= !(OPMASK | ZMM | HI_ZMM);
    }
    (fits(mask) && valid_xcr0(mask)).then_some(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU `-cpu max` (AMD, TCG): x87, SSE, AVX, MPX, PKRU.
    fn qemu_max(l: u32, s: u32) -> Leaf {
        match (l, s) {
            (0, 0) => [0xd, 0, 0, 0],
            (1, 0) => [0, 0, 1 << 26, 0],
            (0xd, 0) => [0x21f, 0x240, 0xa88, 0],
            (0xd, 2) => [0x100, 0x240, 0, 0],
            (0xd, 3) => [0x40, 0x3c0, 0, 0],
            (0xd, 4) => [0x40, 0x400, 0, 0],
            (0xd, 9) => [0x8, 0xa80, 0, 0],
            _ => [0; 4],
        }
    }

    #[test]
    fn xcr0_validity_is_xens() {
        for ok in [FP, FP_SSE, FP_SSE | YMM, FP | BNDREGS | BNDCSR, 0xe7, 0xff] {
            assert!(valid_xcr0(ok), "{ok:#x}");
        }
        for bad in [
            0,
            SSE,
            FP | YMM,
            FP_SSE | YMM | OPMASK,
            FP_SSE | OPMASK | ZMM | HI_ZMM,
            FP | BNDREGS,
            FP | BNDCSR,
        ] {
            assert!(!valid_xcr0(bad), "{bad:#x}");
        }
    }

    #[test]
    fn sizes_follow_the_host_leaves() {
        assert_eq!(uncompressed_size(&qemu_max, FP_SSE), 0x240);
        assert_eq!(uncompressed_size(&qemu_max, 0), 0x240);
        assert_eq!(uncompressed_size(&qemu_max, FP_SSE | YMM), 0x340);
        assert_eq!(uncompressed_size(&qemu_max, 0x1f), 0x440);
        assert_eq!(uncompressed_size(&qemu_max, 0x21f), 0xa88);
    }

    #[test]
    fn the_hypervisor_mask_leaves_out_pkru_and_what_does_not_fit() {
        assert_eq!(hypervisor_mask(&qemu_max, 3072), Some(0x1f));
        // Too small for MPX: MPX goes, AVX stays.
        assert_eq!(hypervisor_mask(&qemu_max, 0x400), Some(0x7));
        assert_eq!(hypervisor_mask(&qemu_max, 0x240), Some(0x3));
        assert_eq!(hypervisor_mask(&qemu_max, 0x100), None);
        let no_xsave = |l, s| {
            let mut r = qemu_max(l, s);
            if l == 1 {
                r[2] = 0;
            }
            r
        };
        assert_eq!(hypervisor_mask(&no_xsave, 3072), None);
    }

    #[test]
    fn xsetbv_takes_what_xen_takes() {
        let mask = 0x1f;
        assert_eq!(xsetbv(mask, 0, 0x7), Ok(0x7));
        assert_eq!(xsetbv(mask, 0, 0x3), Ok(0x3));
        assert_eq!(xsetbv(mask, 0, 0x1b), Ok(0x1b));
        assert_eq!(xsetbv(mask, 1, 0x3), Err(Refused), "only XCR0");
        assert_eq!(xsetbv(mask, 0, 0x5), Err(Refused), "YMM without SSE");
        assert_eq!(xsetbv(mask, 0, 0x2), Err(Refused), "no x87");
        assert_eq!(
            xsetbv(mask, 0, 0xe7),
            Err(Refused),
            "AVX-512 not on the CPU"
        );
        assert_eq!(xsetbv(0x21f, 0, 0x203), Err(Refused), "PKRU, never for PV");
        assert_eq!(xsetbv(mask, 0, 0x0b), Err(Refused), "half of MPX");
    }
}
