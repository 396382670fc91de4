//! Xen's audit of guest segment descriptors (`check_descriptor`) for 64-bit PV guests:
//! what a guest may put in its GDT or LDT (`set_gdt`, `update_descriptor`). The
//! hypervisor's own GDT entries live in the reserved page, above every guest entry.

use hypercall_abi::xen::{FIRST_RESERVED_GDT_ENTRY, FLAT_KERNEL_CS};

const P: u64 = 1 << 47;
const S: u64 = 1 << 44;
const DPL_SHIFT: u32 = 45;
const TYPE_SHIFT: u32 = 40;
/// System type 0xC: a 64-bit call gate.
const CALL_GATE: u64 = 0xC;

/// The descriptor a guest may install for `desc`, or `None` if it must be refused
/// (Xen 4.17's `check_descriptor` for a 64-bit guest, whose kernel RPL is 3).
///
/// * not present: kept as it is (any use faults);
/// * code and data: DPL raised to 3 (64-bit guests get no base or limit checks);
/// * system type 0: kept as it is (the upper half of a 16-byte descriptor, inert);
/// * a 64-bit call gate: its target must be a guest GDT selector (below the
///   hypervisor's reserved page), `FLAT_KERNEL_CS` exactly, or any LDT selector; the
///   gate's DPL becomes 0 and the target selector's RPL 3 (the raised DPL), so ring 3
///   can never pass through it (64-bit PV guests get no call-gate emulation); bits
///   32-39 (reserved in a 64-bit gate) must be zero;
/// * every other system descriptor (TSS, LDT, interrupt or trap gate): refused.
pub fn audit(desc: u64) -> Option<u64> {
    if desc & P == 0 {
        return Some(desc);
    }
    if desc & S != 0 {
        return Some(desc | (3 << DPL_SHIFT));
    }
    match (desc >> TYPE_SHIFT) & 0xF {
        0 => Some(desc),
        CALL_GATE => {
            let target = (desc >> 16) & 0xFFFF;
            if !gate_target_ok(target) || desc & GATE_RESERVED != 0 {
                return None;
            }
            let target = target | 3;
            Some((desc & !(3 << DPL_SHIFT) & !(0xFFFF << 16)) | (target << 16))
        }
        _ => None,
    }
}

/// Bits 32-39 of a 64-bit call gate (the parameter count of a 32-bit one): reserved.
const GATE_RESERVED: u64 = 0xFF << 32;

/// Xen's `guest_gate_selector_okay` for a 64-bit guest: a selector a call gate may
/// name. Never one of the hypervisor's own segments.
fn gate_target_ok(sel: u64) -> bool {
    (sel >> 3) < FIRST_RESERVED_GDT_ENTRY as u64 || sel == u64::from(FLAT_KERNEL_CS) || sel & 4 != 0
}

/// Whether `desc` is already in the form [`audit`] would install (what a typed
/// descriptor page may hold).
pub fn is_audited(desc: u64) -> bool {
    audit(desc) == Some(desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE64_DPL0: u64 = 0x00AF_9A00_0000_FFFF;
    const CODE64_DPL3: u64 = 0x00AF_FA00_0000_FFFF;
    const DATA_DPL0: u64 = 0x00CF_9200_0000_FFFF;

    #[test]
    fn not_present_is_kept() {
        assert_eq!(audit(0), Some(0));
        assert_eq!(audit(CODE64_DPL0 & !P), Some(CODE64_DPL0 & !P));
    }

    #[test]
    fn code_and_data_get_dpl_3() {
        assert_eq!(audit(CODE64_DPL0), Some(CODE64_DPL3));
        assert_eq!(audit(DATA_DPL0), Some(DATA_DPL0 | 3 << 45));
        assert!(is_audited(CODE64_DPL3));
        assert!(!is_audited(CODE64_DPL0));
    }

    #[test]
    fn system_descriptors_are_refused() {
        let tss = 0x0000_8900_0000_0067u64;
        let intr_gate = 0x0000_8E00_0000_0000u64;
        let ldt = 0x0000_8200_0000_0000u64;
        assert_eq!(audit(tss), None);
        assert_eq!(audit(intr_gate), None);
        assert_eq!(audit(ldt), None);
    }

    #[test]
    fn call_gates_cannot_reach_the_hypervisor_and_lose_their_dpl() {
        // DPL-3 gate to the hypervisor's code selector 0xE008: a ring-0 escape; refused.
        let to_hv = P | (CALL_GATE << 40) | (3 << 45) | (0xE008 << 16);
        assert_eq!(audit(to_hv), None);
        // ... with any RPL, and to the hypervisor's data or TSS selectors.
        for sel in [0xE00B_u64, 0xE010, 0xE040, 0xE030, 0xE032] {
            let g = P | (CALL_GATE << 40) | (3 << 45) | (sel << 16);
            assert_eq!(audit(g), None, "target {sel:#x}");
        }
        // DPL-3 gate to a guest selector 0x10: kept, but DPL 0 (RPL 3 records it).
        let to_guest = P | (CALL_GATE << 40) | (3 << 45) | (0x10 << 16);
        let fixed = audit(to_guest).unwrap();
        assert_eq!((fixed >> 45) & 3, 0);
        assert_eq!((fixed >> 16) & 0xFFFF, 0x13);
        assert!(is_audited(fixed));
    }

    #[test]
    fn call_gate_targets_follow_xen() {
        let gate = |sel: u64, dpl: u64| P | (CALL_GATE << 40) | (dpl << 45) | (sel << 16);
        // FLAT_KERNEL_CS exactly, and any LDT selector, are allowed; the RPL becomes 3.
        assert_eq!(audit(gate(0xE033, 3)), Some(gate(0xE033, 0)));
        assert_eq!(audit(gate(0xE00C, 3)), Some(gate(0xE00F, 0)));
        // A DPL-0 gate also gets RPL 3 (the DPL is raised before it moves).
        assert_eq!(audit(gate(0x10, 0)), Some(gate(0x13, 0)));
        // The last guest GDT entry is allowed, the first reserved one is not.
        assert!(audit(gate(7167 << 3, 3)).is_some());
        assert_eq!(audit(gate(7168 << 3, 3)), None);
    }

    #[test]
    fn call_gate_reserved_bits_must_be_zero() {
        let gate = P | (CALL_GATE << 40) | (3 << 45) | (0x10 << 16);
        for bit in 32..40 {
            assert_eq!(audit(gate | 1 << bit), None, "bit {bit}");
        }
    }

    #[test]
    fn audit_is_idempotent() {
        let samples = [
            0u64,
            CODE64_DPL0,
            DATA_DPL0,
            P | (CALL_GATE << 40) | (3 << 45) | (0x10 << 16),
            P | (CALL_GATE << 40) | (0xE033 << 16),
            0x0000_0000_FFFF_FFFF,
        ];
        for d in samples {
            let once = audit(d).unwrap();
            assert_eq!(audit(once), Some(once), "{d:#x}");
        }
    }
}
