//! Xen's audit of guest segment descriptors (`check_descriptor`) for 64-bit PV guests:
//! what a guest may put in its GDT or LDT (`set_gdt`, `update_descriptor`). The
//! hypervisor's own GDT entries live in the reserved page, above every guest entry.

use hypercall_abi::xen::FIRST_RESERVED_GDT_ENTRY;

const P: u64 = 1 << 47;
const S: u64 = 1 << 44;
const DPL_SHIFT: u32 = 45;
const TYPE_SHIFT: u32 = 40;
/// System type 0xC: a 64-bit call gate.
const CALL_GATE: u64 = 0xC;

/// The descriptor a guest may install for `desc`, or `None` if it must be refused.
///
/// * not present: always safe (any use faults);
/// * code and data: DPL is raised to 3 (64-bit guests get no limit checks);
/// * system type 0: the upper half of a 16-byte descriptor, inert;
/// * a call gate: its target must be a guest selector (not in the hypervisor's
///   reserved page) and its DPL is forced to 0, keeping the guest's DPL in the target
///   selector's RPL, so ring 3 can never use it directly (64-bit PV guests get no
///   call-gate emulation);
/// * every other system descriptor (TSS, LDT, interrupt or trap gate): refused.
pub fn audit(desc: u64) -> Option<u64> {
    if desc & P == 0 {
        return Some(desc);
    }
    let dpl = (desc >> DPL_SHIFT) & 3;
    if desc & S != 0 {
        return Some(desc | (3 << DPL_SHIFT));
    }
    match (desc >> TYPE_SHIFT) & 0xF {
        0 => Some(desc),
        CALL_GATE => {
            let target = (desc >> 16) & 0xFFFF;
            if (target >> 3) as usize >= FIRST_RESERVED_GDT_ENTRY {
                return None;
            }
            if dpl == 0 {
                // Already fixed up (or never usable from ring 3).
                return Some(desc);
            }
            let target = (target & !3) | dpl;
            Some((desc & !(3 << DPL_SHIFT) & !(0xFFFF << 16)) | (target << 16))
        }
        _ => None,
    }
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
        // DPL-3 gate to a guest selector 0x10: kept, but DPL 0 (RPL 3 records it).
        let to_guest = P | (CALL_GATE << 40) | (3 << 45) | (0x10 << 16);
        let fixed = audit(to_guest).unwrap();
        assert_eq!((fixed >> 45) & 3, 0);
        assert_eq!((fixed >> 16) & 0xFFFF, 0x13);
        assert!(is_audited(fixed));
    }
}
