//! A guest's general registers as the hypervisor's entry path saves them.
//!
//! The layout is the stack image that `entry.s` builds on every entry (interrupt,
//! exception or SYSCALL): the general registers, a vector and an error code, then the
//! interrupt frame. The hypervisor binary uses this very struct as its trap frame, so
//! handlers here read and rewrite what the exit path restores.

/// Pseudo-vector for entries through SYSCALL (not a hardware vector).
pub const SYSCALL_VECTOR: u64 = 0x100;
/// Written into the vector slot on the way out: the exit path may use SYSRET (see
/// `Regs::mark_sysret`).
pub const SYSRET_OK: u64 = 0x101;

/// RFLAGS bits the PV model cares about.
pub mod rflags {
    /// Carry (bit 0).
    pub const CF: u64 = 1 << 0;
    /// Reserved, always 1.
    pub const FIXED: u64 = 1 << 1;
    /// Trap flag.
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// I/O privilege level (bits 12-13).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// The architecturally defined bits (everything else is reserved).
    pub const DEFINED: u64 = 0x3F_7FD5;
}

/// Saved registers; see the module docs for where they come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct Regs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector (exception, interrupt, or [`SYSCALL_VECTOR`]).
    pub vector: u64,
    /// Error code (0 where the CPU pushes none).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(size_of::<Regs>() == 22 * 8);

impl Regs {
    /// The hypercall number and five arguments (rax; rdi, rsi, rdx, r10, r8).
    pub fn hypercall_args(&self) -> (u64, [u64; 5]) {
        (self.rax, [self.rdi, self.rsi, self.rdx, self.r10, self.r8])
    }

    /// Rewrites the five argument registers (for continuations).
    pub fn set_hypercall_args(&mut self, args: [u64; 5]) {
        [self.rdi, self.rsi, self.rdx, self.r10, self.r8] = args;
    }

    /// A general register by its x86 encoding (0 = rax ... 15 = r15).
    pub fn gpr(&self, n: u8) -> u64 {
        match n & 15 {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => self.rsp,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    /// Sets a general register by its x86 encoding.
    pub fn set_gpr(&mut self, n: u8, v: u64) {
        let r = match n & 15 {
            0 => &mut self.rax,
            1 => &mut self.rcx,
            2 => &mut self.rdx,
            3 => &mut self.rbx,
            4 => &mut self.rsp,
            5 => &mut self.rbp,
            6 => &mut self.rsi,
            7 => &mut self.rdi,
            8 => &mut self.r8,
            9 => &mut self.r9,
            10 => &mut self.r10,
            11 => &mut self.r11,
            12 => &mut self.r12,
            13 => &mut self.r13,
            14 => &mut self.r14,
            _ => &mut self.r15,
        };
        *r = v;
    }

    /// Marks a frame entered through SYSCALL for return with SYSRET, when that gives
    /// exactly what IRETQ would: flat 64-bit ring-3 selectors, a canonical RIP, RCX
    /// and R11 equal to RIP and RFLAGS or free to be clobbered (`clobber_ok`: the guest
    /// expects SYSCALL semantics, as after a hypercall or a bounce to a handler), and
    /// neither TF (SYSRET would trap before the first instruction, IRETQ after it) nor
    /// RF (which SYSRET cannot restore).
    pub fn mark_sysret(&mut self, clobber_ok: bool) {
        use hypercall_abi::xen::{FLAT_RING3_CS64, FLAT_RING3_SS64};
        let flat = self.cs == u64::from(FLAT_RING3_CS64) && self.ss == u64::from(FLAT_RING3_SS64);
        let regs_ok = clobber_ok || (self.rcx == self.rip && self.r11 == self.rflags);
        let flags_ok = self.rflags & (rflags::TF | rflags::RF) == 0;
        if self.vector == SYSCALL_VECTOR && flat && is_canonical(self.rip) && regs_ok && flags_ok {
            self.vector = SYSRET_OK;
        }
    }

    /// True if the interrupted context ran in ring 3 (a guest).
    pub fn from_guest(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// True for a canonical 48-bit virtual address.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_FFFF
}

/// True if `[va, va + len)` lies in the part of the address space that belongs to guests:
/// canonical, and outside the hypervisor's L4 slots 256-271.
pub fn is_guest_range(va: u64, len: u64) -> bool {
    use hypercall_abi::xen::HYPERVISOR_VIRT_END;
    let Some(last) = va.checked_add(len.saturating_sub(1)) else {
        return false;
    };
    // Guests own [0, 2^47) and [HYPERVISOR_VIRT_END, 2^64); the range must lie in one.
    last < 1 << 47 || va >= HYPERVISOR_VIRT_END
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical() {
        assert!(is_canonical(0));
        assert!(is_canonical(0x0000_7FFF_FFFF_FFFF));
        assert!(!is_canonical(0x0000_8000_0000_0000));
        assert!(is_canonical(0xFFFF_8000_0000_0000));
        assert!(!is_canonical(1 << 63));
    }

    #[test]
    fn guest_ranges() {
        assert!(is_guest_range(0x1000, 16));
        assert!(is_guest_range(0x0000_7FFF_FFFF_FFF0, 16));
        assert!(!is_guest_range(0x0000_7FFF_FFFF_FFF0, 17));
        assert!(!is_guest_range(0xFFFF_8000_0000_0000, 8)); // M2P: the hypervisor's
        assert!(!is_guest_range(0xFFFF_82D0_8000_0000, 8)); // the hypervisor image
        assert!(!is_guest_range(0xFFFF_87FF_FFFF_FFF8, 16));
        assert!(is_guest_range(0xFFFF_8800_0000_0000, 4096));
        assert!(is_guest_range(0xFFFF_FFFF_FFFF_F000, 4096));
        assert!(!is_guest_range(0xFFFF_FFFF_FFFF_F000, 4097));
        assert!(!is_guest_range(u64::MAX, 2));
    }

    #[test]
    fn sysret_only_when_it_equals_iret() {
        let base = Regs {
            vector: SYSCALL_VECTOR,
            cs: 0xE033,
            ss: 0xE02B,
            rip: 0x1000,
            rflags: 0x202,
            ..Regs::default()
        };
        let mut r = base;
        r.mark_sysret(true);
        assert_eq!(r.vector, SYSRET_OK);
        let mut r = base;
        r.mark_sysret(false); // rcx/r11 must survive and do not match
        assert_eq!(r.vector, SYSCALL_VECTOR);
        let mut r = Regs {
            rcx: 0x1000,
            r11: 0x202,
            ..base
        };
        r.mark_sysret(false);
        assert_eq!(r.vector, SYSRET_OK);
        for flag in [rflags::TF, rflags::RF] {
            let mut r = Regs {
                rflags: base.rflags | flag,
                rcx: base.rip,
                r11: base.rflags | flag,
                ..base
            };
            r.mark_sysret(false);
            assert_eq!(r.vector, SYSCALL_VECTOR, "rflags {:#x}", r.rflags);
        }
        let mut r = Regs {
            rip: 1 << 47,
            ..base
        };
        r.mark_sysret(true);
        assert_eq!(
            r.vector, SYSCALL_VECTOR,
            "non-canonical RIP: SYSRET would fault in ring 0"
        );
        let mut r = Regs { cs: 0xE023, ..base };
        r.mark_sysret(true);
        assert_eq!(r.vector, SYSCALL_VECTOR, "compat code segment");
        let mut r = Regs { vector: 14, ..base };
        r.mark_sysret(true);
        assert_eq!(r.vector, 14, "only SYSCALL entries");
    }

    #[test]
    fn gpr_round_trip() {
        let mut r = Regs::default();
        for n in 0..16u8 {
            r.set_gpr(n, u64::from(n) * 3 + 1);
        }
        for n in 0..16u8 {
            assert_eq!(r.gpr(n), u64::from(n) * 3 + 1);
        }
        assert_eq!(r.rsp, 4 * 3 + 1);
        assert_eq!(r.r15, 15 * 3 + 1);
    }
}
