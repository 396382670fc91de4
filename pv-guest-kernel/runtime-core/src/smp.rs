//! Pure logic of the runtime's secondary vCPUs (`pv_runtime::smp`): the
//! `vcpu_guest_context` a secondary vCPU starts from, which vCPU each event
//! port is bound to, and vCPU bitmaps for `MMUEXT_*_MULTI`.
//!
//! A PV vCPU other than 0 starts from the context the guest passes to
//! `VCPUOP_initialise` (`arch_set_info_guest` in Xen): in guest kernel mode
//! (`VGCF_in_kernel`) on the kernel's L4 (`ctrlreg[3]`), with its own virtual
//! IDT (`trap_ctxt`, indexed by vector), callbacks and stacks, and no GDT
//! frames of its own (Xen's reserved descriptors hold the flat selectors).
//! Without `VGCF_online` the vCPU stays down until `VCPUOP_up`.

use core::sync::atomic::{AtomicU8, Ordering};

use hypercall_abi::Mfn;
use hypercall_abi::xen::arch::VgcfFlags;
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, TrapInfo, VcpuGuestContext};
use zerocopy::FromZeros;

use crate::events::{NR_PORTS, WORD_BITS};

/// vCPUs the runtime can run: those with a `vcpu_info` slot in shared_info
/// (`XEN_LEGACY_MAX_VCPUS`).
pub const MAX_VCPUS: usize = hypercall_abi::xen::LEGACY_MAX_VCPUS;

/// `rflags` a secondary vCPU starts with: IF (Xen forces it anyway) and the
/// always-one bit 1; IOPL 0.
pub const INITIAL_RFLAGS: u64 = 0x202;

/// What a secondary vCPU starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecondaryStart {
    /// Where it starts (a function taking one argument in `rdi`).
    pub entry: u64,
    /// `rdi` at entry.
    pub arg: u64,
    /// Top of its stack (16-byte aligned); it enters as if called, with
    /// `rsp = stack_top - 8`. Also its `kernel_sp`.
    pub stack_top: u64,
    /// The kernel's L4 (`ctrlreg[3]`).
    pub root: Mfn,
    /// Its kernel GS base (the runtime's per-vCPU block).
    pub gs_base_kernel: u64,
    /// Event upcall entry.
    pub event_callback: u64,
    /// Failsafe callback entry (masks events, `VGCF_failsafe_disables_events`).
    pub failsafe_callback: u64,
    /// Syscall callback entry (masks events, `VGCF_syscall_disables_events`).
    pub syscall_callback: u64,
}

/// Why [`secondary_context`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextError {
    /// An address Xen would refuse as non-canonical (`-EINVAL`).
    NonCanonical(u64),
    /// The stack top is not 16-byte aligned, or is 0.
    BadStack(u64),
    /// A trap entry's vector is outside the 256-entry table.
    BadVector(u8),
}

impl core::fmt::Display for ContextError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ContextError::NonCanonical(a) => write!(f, "address {a:#x} is not canonical"),
            ContextError::BadStack(s) => write!(f, "stack top {s:#x} is not 16-byte aligned"),
            ContextError::BadVector(v) => write!(f, "trap vector {v} has no slot"),
        }
    }
}

/// Whether `addr` is a canonical 48-bit address.
pub const fn is_canonical(addr: u64) -> bool {
    let top = addr >> 47;
    top == 0 || top == 0x1_FFFF
}

/// `xen_pfn_to_cr3` on x86_64.
pub const fn pfn_to_cr3(mfn: Mfn) -> u64 {
    mfn.0 << 12
}

/// The `VCPUOP_initialise` context for a secondary vCPU (see the module
/// documentation): `traps` is the virtual IDT (entries with address 0 are
/// skipped, as the end marker of a `set_trap_table` list).
pub fn secondary_context(
    start: &SecondaryStart,
    traps: &[TrapInfo],
) -> Result<VcpuGuestContext, ContextError> {
    for a in [
        start.entry,
        start.stack_top,
        start.gs_base_kernel,
        start.event_callback,
        start.failsafe_callback,
        start.syscall_callback,
    ] {
        if !is_canonical(a) {
            return Err(ContextError::NonCanonical(a));
        }
    }
    if start.stack_top == 0 || start.stack_top % 16 != 0 {
        return Err(ContextError::BadStack(start.stack_top));
    }
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = (VgcfFlags::IN_KERNEL
        | VgcfFlags::FAILSAFE_DISABLES_EVENTS
        | VgcfFlags::SYSCALL_DISABLES_EVENTS)
        .bits();
    c.user_regs.rip = start.entry;
    c.user_regs.rsp = start.stack_top - 8;
    c.user_regs.rdi = start.arg;
    c.user_regs.cs = FLAT_KERNEL_CS;
    c.user_regs.ss = FLAT_KERNEL_SS;
    c.user_regs.rflags = INITIAL_RFLAGS;
    c.user_regs.saved_upcall_mask = 1;
    for t in traps.iter().filter(|t| t.address != 0) {
        if !is_canonical(t.address) {
            return Err(ContextError::NonCanonical(t.address));
        }
        let slot = c
            .trap_ctxt
            .get_mut(usize::from(t.vector))
            .ok_or(ContextError::BadVector(t.vector))?;
        *slot = *t;
    }
    c.kernel_ss = u64::from(FLAT_KERNEL_SS);
    c.kernel_sp = start.stack_top;
    c.ctrlreg[3] = pfn_to_cr3(start.root);
    c.event_callback_eip = start.event_callback;
    c.failsafe_callback_eip = start.failsafe_callback;
    c.syscall_callback_eip = start.syscall_callback;
    c.gs_base_kernel = start.gs_base_kernel;
    Ok(c)
}

/// A bitmap of vCPUs for `MMUEXT_TLB_FLUSH_MULTI` / `INVLPG_MULTI` (bit `n`
/// = vCPU `n`): every vCPU below `nr` except `except`.
pub const fn others_mask(nr: usize, except: usize) -> u64 {
    let all = if nr >= 64 { u64::MAX } else { (1u64 << nr) - 1 };
    if except < 64 {
        all & !(1u64 << except)
    } else {
        all
    }
}

/// Which vCPU each event port notifies, as the guest bound it (`bind_ipi`,
/// `bind_virq`, `bind_vcpu`; every other port notifies vCPU 0). The upcall
/// on a vCPU handles only its own ports: Xen sets the selector bit on the
/// port's vCPU, but the pending bitmap is shared, so another vCPU's upcall
/// would otherwise steal the event (Linux keeps `cpu_evtchn_mask` for the
/// same reason).
pub struct PortVcpus {
    owner: [AtomicU8; NR_PORTS],
}

impl core::fmt::Debug for PortVcpus {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("PortVcpus").finish_non_exhaustive()
    }
}

impl Default for PortVcpus {
    fn default() -> Self {
        Self::new()
    }
}

impl PortVcpus {
    /// Every port on vCPU 0.
    pub const fn new() -> Self {
        PortVcpus {
            owner: [const { AtomicU8::new(0) }; NR_PORTS],
        }
    }

    /// Record that `port` notifies `vcpu`; false if either is out of range.
    pub fn set(&self, port: u32, vcpu: u32) -> bool {
        let (Ok(p), Ok(v)) = (usize::try_from(port), u8::try_from(vcpu)) else {
            return false;
        };
        if usize::from(v) >= MAX_VCPUS {
            return false;
        }
        match self.owner.get(p) {
            Some(o) => {
                o.store(v, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// The vCPU `port` notifies (0 for ports outside the space).
    pub fn get(&self, port: u32) -> u32 {
        usize::try_from(port)
            .ok()
            .and_then(|p| self.owner.get(p))
            .map_or(0, |o| u32::from(o.load(Ordering::Acquire)))
    }

    /// The bits of word `word` of the port bitmaps whose ports notify `vcpu`.
    pub fn word_bits(&self, word: usize, vcpu: u32) -> u64 {
        let base = word * WORD_BITS as usize;
        let mut bits = 0u64;
        for b in 0..WORD_BITS as usize {
            let owner = self
                .owner
                .get(base + b)
                .map(|o| u32::from(o.load(Ordering::Acquire)));
            if owner == Some(vcpu) {
                bits |= 1 << b;
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::xen::arch::VgcfFlags;

    fn start() -> SecondaryStart {
        SecondaryStart {
            entry: 0x10_1000,
            arg: 3,
            stack_top: 0x40_0000,
            root: Mfn(0x1234),
            gs_base_kernel: 0x20_0040,
            event_callback: 0x10_2000,
            failsafe_callback: 0x10_2010,
            syscall_callback: 0x10_2020,
        }
    }

    #[test]
    fn context_starts_in_kernel_mode_on_the_kernel_tables() {
        let traps = [
            TrapInfo::new(14, 0, true, FLAT_KERNEL_CS, 0x10_3000),
            TrapInfo::new(3, 3, true, FLAT_KERNEL_CS, 0x10_3010),
            TrapInfo::default(),
        ];
        let c = secondary_context(&start(), &traps).unwrap();
        let flags = VgcfFlags::from_bits_retain(c.flags);
        assert!(flags.contains(VgcfFlags::IN_KERNEL));
        assert!(!flags.contains(VgcfFlags::ONLINE), "up is a separate call");
        assert!(flags.contains(VgcfFlags::FAILSAFE_DISABLES_EVENTS));
        assert_eq!(c.user_regs.rip, 0x10_1000);
        assert_eq!(c.user_regs.rdi, 3);
        // As if called: the return-address slot below a 16-byte boundary.
        assert_eq!(c.user_regs.rsp, 0x40_0000 - 8);
        assert_eq!(c.user_regs.rsp % 16, 8);
        assert_eq!(c.kernel_sp, 0x40_0000);
        assert_eq!(c.user_regs.cs, FLAT_KERNEL_CS);
        assert_eq!(c.user_regs.ss, FLAT_KERNEL_SS);
        assert_eq!(c.kernel_ss, u64::from(FLAT_KERNEL_SS));
        assert_eq!(c.ctrlreg[3], 0x1234 << 12);
        assert_eq!(c.ctrlreg[1], 0, "no user tables");
        assert_eq!(c.gdt_ents, 0, "Xen's reserved descriptors only");
        assert_eq!(c.gs_base_kernel, 0x20_0040);
        assert_eq!(c.event_callback_eip, 0x10_2000);
        assert_eq!(c.failsafe_callback_eip, 0x10_2010);
        assert_eq!(c.syscall_callback_eip, 0x10_2020);
        // The IDT is indexed by vector.
        assert_eq!(c.trap_ctxt[14].address, 0x10_3000);
        assert_eq!(c.trap_ctxt[3].address, 0x10_3010);
        assert_eq!(c.trap_ctxt[3].dpl(), 3);
        assert_eq!(c.trap_ctxt[0].address, 0);
        assert_ne!(c.user_regs.rflags & 0x200, 0, "IF");
    }

    #[test]
    fn context_refuses_what_xen_would() {
        let mut s = start();
        s.entry = 0x0000_8000_0000_0000;
        assert_eq!(
            secondary_context(&s, &[]).unwrap_err(),
            ContextError::NonCanonical(0x0000_8000_0000_0000)
        );
        let mut s = start();
        s.stack_top = 0x40_0008;
        assert_eq!(
            secondary_context(&s, &[]).unwrap_err(),
            ContextError::BadStack(0x40_0008)
        );
        let bad = [TrapInfo::new(6, 0, true, FLAT_KERNEL_CS, 1 << 60)];
        assert_eq!(
            secondary_context(&start(), &bad).unwrap_err(),
            ContextError::NonCanonical(1 << 60)
        );
        assert!(is_canonical(0xFFFF_8000_0000_0000));
        assert!(!is_canonical(0xFFFF_0000_0000_0000));
    }

    #[test]
    fn others_mask_leaves_out_one_vcpu() {
        assert_eq!(others_mask(4, 0), 0b1110);
        assert_eq!(others_mask(4, 2), 0b1011);
        assert_eq!(others_mask(1, 0), 0);
        assert_eq!(others_mask(64, 63), u64::MAX >> 1);
        assert_eq!(others_mask(3, 70), 0b111);
    }

    #[test]
    fn ports_default_to_vcpu_0_and_split_by_owner() {
        let t = PortVcpus::new();
        assert_eq!(t.word_bits(0, 0), u64::MAX);
        assert_eq!(t.word_bits(0, 1), 0);
        assert!(t.set(5, 1));
        assert!(t.set(64 + 7, 2));
        assert!(!t.set(4096, 1));
        assert!(!t.set(5, 32));
        assert_eq!(t.get(5), 1);
        assert_eq!(t.get(9999), 0);
        assert_eq!(t.word_bits(0, 1), 1 << 5);
        assert_eq!(t.word_bits(0, 0), !(1 << 5));
        assert_eq!(t.word_bits(1, 2), 1 << 7);
        assert_eq!(t.word_bits(64, 0), 0, "past the port space");
        assert!(t.set(5, 0));
        assert_eq!(t.word_bits(0, 1), 0);
    }
}
