//! Debug registers as a 64-bit PV guest of Xen 4.17 sees them.
//!
//! The guest never touches the real DR0-DR7: it reads and writes a virtual copy
//! through `set_debugreg`/`get_debugreg` or the emulated `mov %drN`, and the toolstack
//! through `setvcpucontext`/`getvcpucontext`. Every write passes the same checks
//! (Xen's `set_debugreg` in `pv/misc-hypercalls.c`):
//!
//! | register | rule |
//! |---|---|
//! | DR0-DR3 | a guest address: below 2^47 or at/above `HYPERVISOR_VIRT_END`, else -EPERM (only the start is checked, as Xen's `__addr_ok`) |
//! | DR4, DR5 | aliases of DR6, DR7 while the guest's CR4.DE is clear; -ENODEV when it is set |
//! | DR6 | upper 32 bits -EINVAL; bit 12 reads 0; bits 4-11 and 16-31 read 1 |
//! | DR7 | upper 32 bits -EINVAL; bits 11, 12, 14, 15 read 0, bit 10 reads 1; GD (13) -EPERM; with any L/G enable set, an R/W field of 10b (I/O) needs CR4.DE (-EPERM), and the enables of I/O breakpoints are kept aside, never loaded into the hardware |
//! | others | -ENODEV |
//!
//! The hypervisor loads DR0-DR3 and DR7 into the hardware only while the vCPU runs with
//! an enabled breakpoint (DR7 bits 0-7), as Xen's `activate_debugregs`. A `#DB` the
//! guest takes adds the hardware's DR6 status bits to the virtual DR6 the way Xen 4.17's
//! `do_debug` does ([`merge_dr6`]); the hardware DR6 goes back to its default.

use hypercall_abi::Errno;
use hypercall_abi::xen::HYPERVISOR_VIRT_END;

/// DR6 after reset, and its bits that always read as one (4-11, 16-31).
pub const DR6_DEFAULT: u64 = 0xFFFF_0FF0;
/// DR6 bit that always reads as zero (12), and everything above bit 31.
const DR6_ZEROS: u64 = !0xFFFF_EFFF;
/// DR6.B0-B3: which breakpoint matched.
pub const DR6_BP_MASK: u64 = 0xF;
/// DR6.BD: debug-register access detected.
pub const DR6_BD: u64 = 1 << 13;
/// DR6.BS: single step.
pub const DR6_BS: u64 = 1 << 14;
/// DR6.BT: task switch.
pub const DR6_BT: u64 = 1 << 15;

/// DR7 after reset (bit 10 always reads as one).
pub const DR7_DEFAULT: u64 = 0x400;
/// DR7 bits that always read as zero: 11 (RTM, not offered), 12, 14, 15, and 32-63.
const DR7_ZEROS: u64 = !0xFFFF_27FF;
/// DR7.GD: general detect, which a PV guest may not use.
pub const DR7_GD: u64 = 1 << 13;
/// DR7.L0-L3 and G0-G3: a breakpoint is enabled.
pub const DR7_ACTIVE_MASK: u64 = 0xFF;
/// R/W encoding of an I/O breakpoint.
const DR7_RW_IO: u64 = 0b10;

/// Debug register state as the guest sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebugRegs {
    /// DR0-DR3: breakpoint addresses.
    pub addr: [u64; 4],
    /// DR6.
    pub dr6: u64,
    /// DR7 as loaded into the hardware (the enables of I/O breakpoints removed).
    pub dr7: u64,
    /// The enables of I/O breakpoints (Xen's `dr7_emul`): reported in DR7, never
    /// loaded, because the hardware would watch the hypervisor's port accesses.
    pub dr7_emul: u64,
}

impl Default for DebugRegs {
    fn default() -> Self {
        DebugRegs {
            addr: [0; 4],
            dr6: DR6_DEFAULT,
            dr7: DR7_DEFAULT,
            dr7_emul: 0,
        }
    }
}

/// True if `va` may be a breakpoint address: Xen's `__addr_ok`, the lower canonical
/// half or above the hypervisor's range. Only the start counts: a breakpoint covers at
/// most 8 naturally aligned bytes, which cannot reach into the hypervisor's range.
pub fn breakpoint_addr_ok(va: u64) -> bool {
    !(1 << 47..HYPERVISOR_VIRT_END).contains(&va)
}

/// DR6 with its fixed bits forced.
pub const fn adjust_dr6(dr6: u64) -> u64 {
    (dr6 | DR6_DEFAULT) & !DR6_ZEROS
}

/// DR7 with its fixed bits forced.
pub const fn adjust_dr7(dr7: u64) -> u64 {
    (dr7 & !DR7_ZEROS) | DR7_DEFAULT
}

/// Xen 4.17's `do_debug` update of the guest's DR6 from the hardware's `hw` after a
/// `#DB`: every status bit the hardware reports (set where the default is clear, clear
/// where the default is set) is added to what the guest has not cleared yet. Nothing
/// is overwritten, so B0-B3 of an earlier `#DB` stay until the guest resets DR6.
pub const fn merge_dr6(dr6: u64, hw: u64) -> u64 {
    let hw = hw & 0xFFFF_FFFF;
    (dr6 | (hw & !DR6_DEFAULT)) & (hw | !DR6_DEFAULT)
}

/// The guest's virtual CR4.DE, which decides whether DR4/DR5 alias DR6/DR7 and
/// whether I/O breakpoints are allowed (the guest may set it when the CPU policy has
/// DE).
pub fn guest_cr4_de(vcpu: &crate::vcpu::Vcpu) -> bool {
    vcpu.cr4 & crate::emulate::cr4::DE != 0
}

impl DebugRegs {
    /// True if DR7 enables a breakpoint: only then are DR0-DR3 and DR7 loaded.
    #[inline]
    pub const fn active(&self) -> bool {
        self.dr7 & DR7_ACTIVE_MASK != 0
    }

    /// Writes register `reg` with Xen's checks; `cr4_de` is the guest's virtual
    /// CR4.DE. On error nothing changes.
    pub fn set(&mut self, reg: u32, value: u64, cr4_de: bool) -> Result<(), Errno> {
        match reg {
            0..=3 => {
                if !breakpoint_addr_ok(value) {
                    return Err(Errno::EPERM);
                }
                if let Some(slot) = self.addr.get_mut(reg as usize) {
                    *slot = value;
                }
            }
            4 | 5 if cr4_de => return Err(Errno::ENODEV),
            4 | 6 => {
                if value >> 32 != 0 {
                    return Err(Errno::EINVAL);
                }
                self.dr6 = adjust_dr6(value);
            }
            5 | 7 => {
                if value >> 32 != 0 {
                    return Err(Errno::EINVAL);
                }
                let value = adjust_dr7(value);
                if value & DR7_GD != 0 {
                    return Err(Errno::EPERM);
                }
                let mut io_enable = 0;
                if value & DR7_ACTIVE_MASK != 0 {
                    // Once anything is enabled, every R/W field is looked at, enabled
                    // or not, as Xen does.
                    for i in 0..4 {
                        if (value >> (16 + 4 * i)) & 3 == DR7_RW_IO {
                            if !cr4_de {
                                return Err(Errno::EPERM);
                            }
                            io_enable |= value & (3 << (2 * i));
                        }
                    }
                }
                self.dr7_emul = io_enable;
                self.dr7 = value & !io_enable;
            }
            _ => return Err(Errno::ENODEV),
        }
        Ok(())
    }

    /// Reads register `reg` (DR7 with the I/O breakpoint enables put back).
    pub fn get(&self, reg: u32, cr4_de: bool) -> Result<u64, Errno> {
        match reg {
            0..=3 => Ok(self.addr.get(reg as usize).copied().unwrap_or(0)),
            4 | 5 if cr4_de => Err(Errno::ENODEV),
            4 | 6 => Ok(self.dr6),
            5 | 7 => Ok(self.dr7 | self.dr7_emul),
            _ => Err(Errno::ENODEV),
        }
    }

    /// The debug registers a `vcpu_guest_context` loads (Xen 4.17's
    /// `arch_set_info_guest`): the reset values, then DR0-DR3, DR6 and DR7 of
    /// `debugreg` each through [`DebugRegs::set`]. A value the checks refuse is
    /// silently left at its reset value; DR4 and DR5 are ignored.
    pub fn from_context(debugreg: &[u64; 8], cr4_de: bool) -> DebugRegs {
        let mut d = DebugRegs::default();
        for (reg, &value) in (0u32..).zip(debugreg.iter()) {
            if matches!(reg, 0..=3 | 6 | 7) {
                let _ = d.set(reg, value, cr4_de);
            }
        }
        d
    }

    /// The `debugreg` array of a `vcpu_guest_context` (`arch_get_info_guest`):
    /// DR4 and DR5 read as zero.
    pub fn to_context(&self) -> [u64; 8] {
        let [a0, a1, a2, a3] = self.addr;
        [a0, a1, a2, a3, 0, 0, self.dr6, self.dr7 | self.dr7_emul]
    }

    /// A `#DB` arrived from the guest with `hw` in the hardware's DR6.
    pub fn note_debug_exception(&mut self, hw: u64) {
        self.dr6 = merge_dr6(self.dr6, hw);
    }

    /// An emulated instruction finished with RFLAGS.TF set: DR6.BS, as the hardware
    /// would have reported (Xen's `pv_emul_instruction_done`).
    pub fn note_single_step(&mut self) {
        self.dr6 = adjust_dr6(self.dr6 | DR6_BS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

    #[test]
    fn reset_values() {
        let d = DebugRegs::default();
        assert_eq!(d.get(6, false), Ok(0xFFFF_0FF0));
        assert_eq!(d.get(7, false), Ok(0x400));
        assert_eq!(d.get(0, false), Ok(0));
        assert!(!d.active());
    }

    #[test]
    fn breakpoint_addresses() {
        for va in [
            0,
            0x1000,
            0x0000_7FFF_FFFF_FFF8,
            0x0000_7FFF_FFFF_FFFF, // only the start is checked, as Xen's __addr_ok
            HYPERVISOR_VIRT_END,
            u64::MAX,
        ] {
            assert!(breakpoint_addr_ok(va), "{va:#x}");
        }
        for va in [
            NON_CANONICAL,
            0xFFFF_7FFF_FFFF_FFFF,
            0xFFFF_8000_0000_0000,
            0xFFFF_82D0_8000_0000,
            HYPERVISOR_VIRT_END - 1,
        ] {
            assert!(!breakpoint_addr_ok(va), "{va:#x}");
        }
    }

    #[test]
    fn dr6_fixed_bits() {
        assert_eq!(adjust_dr6(0), 0xFFFF_0FF0);
        assert_eq!(adjust_dr6(0x1001), 0xFFFF_0FF1); // bit 12 reads 0
        assert_eq!(adjust_dr6(0xE00F), 0xFFFF_EFFF);
    }

    #[test]
    fn dr7_fixed_bits() {
        assert_eq!(adjust_dr7(0), 0x400);
        // 11 (RTM), 12, 14, 15 read 0; GD survives to be refused.
        assert_eq!(adjust_dr7(0xF800), 0x2400);
        assert_eq!(adjust_dr7(0xFFFF_03FF), 0xFFFF_07FF);
    }

    #[test]
    fn upper_halves_of_dr6_dr7_are_einval() {
        let mut d = DebugRegs::default();
        for reg in [4, 5, 6, 7] {
            assert_eq!(d.set(reg, 1 << 32, false), Err(Errno::EINVAL), "dr{reg}");
            assert_eq!(d.set(reg, 1 << 63, false), Err(Errno::EINVAL), "dr{reg}");
        }
        assert_eq!(d, DebugRegs::default());
    }

    #[test]
    fn general_detect_is_eperm_before_anything_changes() {
        let mut d = DebugRegs::default();
        assert_eq!(d.set(7, DR7_GD, false), Err(Errno::EPERM));
        assert_eq!(d.set(7, DR7_GD | 1, false), Err(Errno::EPERM));
        assert_eq!(d, DebugRegs::default());
    }

    #[test]
    fn io_breakpoints_need_cr4_de() {
        let mut d = DebugRegs::default();
        // L0 with RW0 = I/O.
        assert_eq!(d.set(7, (2 << 16) | 1, false), Err(Errno::EPERM));
        // An I/O R/W field of a disabled breakpoint counts once anything is enabled.
        assert_eq!(d.set(7, (2 << 20) | 1, false), Err(Errno::EPERM));
        // With nothing enabled the R/W fields are not looked at.
        assert_eq!(d.set(7, 2 << 16, false), Ok(()));
        assert_eq!(d.get(7, false), Ok((2 << 16) | 0x400));
        // With CR4.DE the I/O enable is kept aside: reported, not loaded.
        let v = (2 << 16) | (1 << 20) | 0b0111;
        assert_eq!(d.set(7, v, true), Ok(()));
        assert_eq!(d.dr7_emul, 0b11);
        assert_eq!(d.dr7, (v & !0b11) | 0x400);
        assert_eq!(d.get(7, false), Ok(v | 0x400));
        // Clearing every enable drops the kept-aside ones too.
        assert_eq!(d.set(7, 0, true), Ok(()));
        assert_eq!((d.dr7, d.dr7_emul), (0x400, 0));
    }

    #[test]
    fn dr4_dr5_alias_dr6_dr7_only_without_cr4_de() {
        let mut d = DebugRegs::default();
        assert_eq!(d.set(4, 0x1, false), Ok(()));
        assert_eq!(d.set(5, 0x2, false), Ok(()));
        assert_eq!(
            (d.get(6, false), d.get(7, false)),
            (Ok(0xFFFF_0FF1), Ok(0x402))
        );
        assert_eq!(
            (d.get(4, false), d.get(5, false)),
            (Ok(0xFFFF_0FF1), Ok(0x402))
        );
        assert_eq!(d.set(4, 0, true), Err(Errno::ENODEV));
        assert_eq!(d.set(5, 0, true), Err(Errno::ENODEV));
        assert_eq!(d.get(4, true), Err(Errno::ENODEV));
        assert_eq!(d.get(5, true), Err(Errno::ENODEV));
    }

    #[test]
    fn other_registers_are_enodev() {
        let mut d = DebugRegs::default();
        for reg in [8, 15, 16, u32::MAX] {
            assert_eq!(d.set(reg, 0, false), Err(Errno::ENODEV));
            assert_eq!(d.get(reg, false), Err(Errno::ENODEV));
        }
    }

    #[test]
    fn merge_adds_status_bits_and_keeps_earlier_ones() {
        // A data breakpoint on DR0.
        let d = merge_dr6(DR6_DEFAULT, DR6_DEFAULT | 1);
        assert_eq!(d, 0xFFFF_0FF1);
        // Then a single step, without the guest resetting DR6: B0 stays (4.17).
        assert_eq!(merge_dr6(d, DR6_DEFAULT | DR6_BS), 0xFFFF_4FF1);
        // A clear default-one bit (RTM, bit 16) is accumulated too.
        assert_eq!(
            merge_dr6(DR6_DEFAULT, DR6_DEFAULT & !(1 << 16)),
            0xFFFE_0FF0
        );
        // Nothing above bit 31 ever shows.
        assert_eq!(merge_dr6(DR6_DEFAULT, u64::MAX), 0xFFFF_FFFF);
        // Nothing reported: nothing changes.
        assert_eq!(merge_dr6(0xFFFF_0FF2, DR6_DEFAULT), 0xFFFF_0FF2);
    }

    #[test]
    fn context_load_resets_then_applies_each_register_through_the_checks() {
        let mut c = [0u64; 8];
        c[0] = 0x1000;
        c[1] = 0xFFFF_8000_0000_0000; // the hypervisor's: stays 0
        c[2] = NON_CANONICAL; // stays 0
        c[3] = 0x0000_7FFF_FFFF_FFF8;
        c[4] = 0x1234; // ignored
        c[5] = 0x5678; // ignored
        c[6] = 0x4001;
        c[7] = 0x000D_0001;
        let d = DebugRegs::from_context(&c, false);
        assert_eq!(d.addr, [0x1000, 0, 0, 0x0000_7FFF_FFFF_FFF8]);
        assert_eq!(d.dr6, 0xFFFF_4FF1);
        assert_eq!(d.dr7, 0x000D_0401);
        assert_eq!(
            d.to_context(),
            [
                0x1000,
                0,
                0,
                0x0000_7FFF_FFFF_FFF8,
                0,
                0,
                0xFFFF_4FF1,
                0x000D_0401
            ]
        );
        // Refused DR6/DR7 values leave the reset values.
        c[6] = 1 << 32;
        c[7] = DR7_GD | 1;
        let d = DebugRegs::from_context(&c, false);
        assert_eq!((d.dr6, d.dr7), (DR6_DEFAULT, DR7_DEFAULT));
        c[7] = (2 << 16) | 1; // I/O without CR4.DE
        assert_eq!(DebugRegs::from_context(&c, false).dr7, DR7_DEFAULT);
        // All zeros (what a builder passes) gives the reset values.
        assert_eq!(
            DebugRegs::from_context(&[0; 8], false),
            DebugRegs::default()
        );
    }

    #[test]
    fn single_step_sets_bs() {
        let mut d = DebugRegs::default();
        d.note_single_step();
        assert_eq!(d.dr6, 0xFFFF_4FF0);
        d.note_debug_exception(DR6_DEFAULT | 2);
        assert_eq!(d.dr6, 0xFFFF_4FF2);
    }
}
