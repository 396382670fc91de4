//! The IO-APIC as policy: which trigger mode and polarity each GSI gets (the MADT's
//! interrupt source overrides over the ISA and PCI defaults), which vector it is
//! delivered on, and how a redirection-table entry is encoded. The hypervisor binary
//! does the MMIO (`hv/src/arch/x86_64/ioapic.rs`).

/// Trigger mode of a GSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered: acknowledged at once, forwarded, never masked for the guest.
    Edge,
    /// Level-triggered: masked until every guest bound to it has sent its EOI.
    Level,
}

/// Polarity of a GSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Polarity {
    /// Active high.
    High,
    /// Active low.
    Low,
}

/// An interrupt source override from the MADT (ISA bus only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceOverride {
    /// The ISA IRQ.
    pub irq: u8,
    /// The GSI it arrives on.
    pub gsi: u32,
    /// MPS INTI flags: bits 0-1 polarity (0 bus default, 1 high, 3 low), bits 2-3
    /// trigger (0 bus default, 1 edge, 3 level).
    pub flags: u16,
}

/// First vector the hypervisor gives to GSIs: GSI `g` arrives on `GSI_VECTOR_BASE + g`.
pub const GSI_VECTOR_BASE: u8 = 0x30;
/// GSIs the hypervisor routes: vectors 0x30..0x7F (below the `int $0x80` gate).
pub const MAX_GSIS: u32 = 0x50;

#[inline]
/// The vector GSI `gsi` is delivered on, if it is one the hypervisor routes.
pub fn gsi_vector(gsi: u32) -> Option<u8> {
    if gsi < MAX_GSIS {
        u8::try_from(gsi).ok().map(|g| GSI_VECTOR_BASE + g)
    } else {
        None
    }
}

/// The GSI that vector `vector` belongs to, if any.
#[inline]
pub fn vector_gsi(vector: u64) -> Option<u32> {
    let base = u64::from(GSI_VECTOR_BASE);
    if (base..base + u64::from(MAX_GSIS)).contains(&vector) {
        u32::try_from(vector - base).ok()
    } else {
        None
    }
}

/// The trigger mode and polarity of `gsi`: an override naming it decides (its flags
/// field by field, "bus default" meaning ISA's edge/high); else GSIs below 16 are ISA
/// (edge, active high) and the others PCI (level, active low). An ISA IRQ moved
/// elsewhere by an override does not change the GSI it left.
pub fn gsi_mode(gsi: u32, overrides: &[SourceOverride]) -> (Trigger, Polarity) {
    if let Some(o) = overrides.iter().find(|o| o.gsi == gsi) {
        let polarity = if o.flags & 3 == 3 {
            Polarity::Low
        } else {
            Polarity::High
        };
        let trigger = if (o.flags >> 2) & 3 == 3 {
            Trigger::Level
        } else {
            Trigger::Edge
        };
        return (trigger, polarity);
    }
    if gsi < 16 {
        (Trigger::Edge, Polarity::High)
    } else {
        (Trigger::Level, Polarity::Low)
    }
}

/// The GSI an ISA IRQ arrives on (an override, else the identity).
pub fn isa_irq_gsi(irq: u8, overrides: &[SourceOverride]) -> u32 {
    overrides
        .iter()
        .find(|o| o.irq == irq)
        .map_or(u32::from(irq), |o| o.gsi)
}

/// Redirection entry bit: masked.
pub const RTE_MASKED: u64 = 1 << 16;
/// Redirection entry bit: level-triggered.
pub const RTE_LEVEL: u64 = 1 << 15;
/// Redirection entry bit: active low.
pub const RTE_ACTIVE_LOW: u64 = 1 << 13;

/// A redirection-table entry: fixed delivery, physical destination `apic_id`,
/// `vector`, the trigger mode and polarity, masked or not.
pub fn redirection_entry(
    vector: u8,
    apic_id: u8,
    trigger: Trigger,
    polarity: Polarity,
    masked: bool,
) -> u64 {
    let mut e = u64::from(vector); // delivery mode 000 (fixed), dest mode 0 (physical)
    if polarity == Polarity::Low {
        e |= RTE_ACTIVE_LOW;
    }
    if trigger == Trigger::Level {
        e |= RTE_LEVEL;
    }
    if masked {
        e |= RTE_MASKED;
    }
    e | (u64::from(apic_id) << 56)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU: [SourceOverride; 5] = [
        SourceOverride {
            irq: 0,
            gsi: 2,
            flags: 0,
        },
        SourceOverride {
            irq: 5,
            gsi: 5,
            flags: 0xD,
        },
        SourceOverride {
            irq: 9,
            gsi: 9,
            flags: 0xD,
        },
        SourceOverride {
            irq: 10,
            gsi: 10,
            flags: 0xD,
        },
        SourceOverride {
            irq: 11,
            gsi: 11,
            flags: 0xD,
        },
    ];

    #[test]
    fn isa_defaults_and_overrides() {
        assert_eq!(gsi_mode(3, &QEMU), (Trigger::Edge, Polarity::High));
        assert_eq!(gsi_mode(4, &QEMU), (Trigger::Edge, Polarity::High));
        // QEMU's PCI link IRQs: level, active high.
        assert_eq!(gsi_mode(10, &QEMU), (Trigger::Level, Polarity::High));
        assert_eq!(gsi_mode(2, &QEMU), (Trigger::Edge, Polarity::High));
        assert_eq!(gsi_mode(16, &QEMU), (Trigger::Level, Polarity::Low));
        assert_eq!(gsi_mode(23, &[]), (Trigger::Level, Polarity::Low));
        let low_level = [SourceOverride {
            irq: 9,
            gsi: 20,
            flags: 0xF,
        }];
        assert_eq!(gsi_mode(20, &low_level), (Trigger::Level, Polarity::Low));
        assert_eq!(isa_irq_gsi(0, &QEMU), 2);
        assert_eq!(isa_irq_gsi(3, &QEMU), 3);
    }

    #[test]
    fn entry_encoding() {
        assert_eq!(
            redirection_entry(0x33, 0, Trigger::Edge, Polarity::High, false),
            0x33
        );
        assert_eq!(
            redirection_entry(0x40, 1, Trigger::Level, Polarity::Low, true),
            0x0100_0000_0001_A040
        );
        assert_eq!(
            redirection_entry(0x30, 0xFF, Trigger::Edge, Polarity::Low, true),
            0xFF00_0000_0001_2030
        );
    }

    #[test]
    fn vectors() {
        assert_eq!(gsi_vector(0), Some(0x30));
        assert_eq!(gsi_vector(MAX_GSIS - 1), Some(0x7F));
        assert_eq!(gsi_vector(MAX_GSIS), None);
        assert_eq!(vector_gsi(0x33), Some(3));
        assert_eq!(vector_gsi(0x80), None);
        assert_eq!(vector_gsi(0x2F), None);
        assert_eq!(vector_gsi(crate::regs::SYSCALL_VECTOR), None);
    }
}
