//! Core PV structures and constants (`xen.h`, `arch-x86/xen.h`,
//! `arch-x86/xen-x86_64.h`).
//!
//! * [`start_info`]: the page the builder hands a new guest in `rsi`.
//! * [`shared_info`]: the page shared between hypervisor and guest
//!   (`vcpu_info`, pvclock `vcpu_time_info`, event bitmaps, wall clock,
//!   `arch_shared_info`).
//! * [`arch`]: the virtual IDT entry (`trap_info`), the register file
//!   (`cpu_user_regs`), `vcpu_guest_context`, the `iret` context and the
//!   frames the hypervisor pushes when it bounces an exception or event.
//! * [`runstate`]: the `vcpu_runstate_info` layout.
//! * [`multicall`]: the `multicall_entry` layout.
//! * [`pte`]: page-table entry bits as a PV guest sees them.
//!
//! This module also holds the x86_64 PV address-space constants and the flat
//! segment selectors. Reserved domain ids are associated constants of
//! [`DomId`](crate::DomId) (`DomId::SELF` is `DOMID_SELF`, ...).

pub mod arch;
pub mod multicall;
pub mod pte;
pub mod runstate;
pub mod shared_info;
pub mod start_info;

pub use arch::{CpuUserRegs, IretContext, TrapInfo, VcpuGuestContext};
pub use multicall::MulticallEntry;
pub use pte::{Pte, PteFlags};
pub use runstate::VcpuRunstateInfo;
pub use shared_info::{ArchSharedInfo, ArchVcpuInfo, SharedInfo, VcpuInfo, VcpuTimeInfo};
pub use start_info::{StartInfo, StartInfoConsole};

/// Start of the hypervisor's reserved range (L4 slot 256) and of the
/// read-only M2P table (`HYPERVISOR_VIRT_START`).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the hypervisor's reserved range, L4 slots 256..=271
/// (`HYPERVISOR_VIRT_END`).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Guest-visible read-only machine-to-physical table: `u64 m2p[mfn]`
/// (`MACH2PHYS_VIRT_START`). The hypervisor writes it; guests read it.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the M2P table (`MACH2PHYS_VIRT_END`).
pub const MACH2PHYS_VIRT_END: u64 = 0xFFFF_8040_0000_0000;
/// Entries the M2P window can hold (`MACH2PHYS_NR_ENTRIES`, 2^35).
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;
/// First L4 slot the hypervisor owns.
pub const HYPERVISOR_L4_FIRST: usize = 256;
/// Last L4 slot the hypervisor owns (inclusive).
pub const HYPERVISOR_L4_LAST: usize = 271;
/// An M2P entry for a frame with no pseudo-physical mapping
/// (`INVALID_M2P_ENTRY`). Any entry with bit 63 set is invalid.
pub const INVALID_M2P_ENTRY: u64 = !0;
/// An M2P entry for a shared frame (`SHARED_M2P_ENTRY`).
pub const SHARED_M2P_ENTRY: u64 = !0 - 1;

/// Compat (32-bit) code selector, DPL 3 (`FLAT_RING3_CS32`, GDT entry 7172).
pub const FLAT_RING3_CS32: u16 = 0xE023;
/// 64-bit code selector, DPL 3 (`FLAT_RING3_CS64`, GDT entry 7174).
pub const FLAT_RING3_CS64: u16 = 0xE033;
/// 32-bit data selector, DPL 3 (`FLAT_RING3_DS32`, GDT entry 7173).
pub const FLAT_RING3_DS32: u16 = 0xE02B;
/// 64-bit data selector: the null selector (`FLAT_RING3_DS64`).
pub const FLAT_RING3_DS64: u16 = 0x0000;
/// 32-bit stack selector (`FLAT_RING3_SS32`).
pub const FLAT_RING3_SS32: u16 = 0xE02B;
/// 64-bit stack selector (`FLAT_RING3_SS64`).
pub const FLAT_RING3_SS64: u16 = 0xE02B;
/// Guest kernel code selector (`FLAT_KERNEL_CS`); the guest kernel runs in
/// ring 3.
pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
/// Guest kernel compat code selector (`FLAT_KERNEL_CS32`).
pub const FLAT_KERNEL_CS32: u16 = FLAT_RING3_CS32;
/// Guest kernel data selector (`FLAT_KERNEL_DS`): null in 64-bit PV.
pub const FLAT_KERNEL_DS: u16 = FLAT_RING3_DS64;
/// Guest kernel compat data selector (`FLAT_KERNEL_DS32`).
pub const FLAT_KERNEL_DS32: u16 = FLAT_RING3_DS32;
/// Guest kernel stack selector (`FLAT_KERNEL_SS`).
pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_SS64;
/// Guest kernel compat stack selector (`FLAT_KERNEL_SS32`).
pub const FLAT_KERNEL_SS32: u16 = FLAT_RING3_SS32;
/// Guest user code selector (`FLAT_USER_CS`), same as the kernel's.
pub const FLAT_USER_CS: u16 = FLAT_RING3_CS64;
/// Guest user compat code selector (`FLAT_USER_CS32`).
pub const FLAT_USER_CS32: u16 = FLAT_RING3_CS32;
/// Guest user data selector (`FLAT_USER_DS`).
pub const FLAT_USER_DS: u16 = FLAT_RING3_DS64;
/// Guest user compat data selector (`FLAT_USER_DS32`).
pub const FLAT_USER_DS32: u16 = FLAT_RING3_DS32;
/// Guest user stack selector (`FLAT_USER_SS`).
pub const FLAT_USER_SS: u16 = FLAT_RING3_SS64;
/// Guest user compat stack selector (`FLAT_USER_SS32`).
pub const FLAT_USER_SS32: u16 = FLAT_RING3_SS32;

/// First GDT page reserved to the hypervisor (`FIRST_RESERVED_GDT_PAGE`).
pub const FIRST_RESERVED_GDT_PAGE: usize = 14;
/// Byte offset of the reserved GDT area (`FIRST_RESERVED_GDT_BYTE`).
pub const FIRST_RESERVED_GDT_BYTE: usize = FIRST_RESERVED_GDT_PAGE * 4096;
/// First reserved GDT entry (`FIRST_RESERVED_GDT_ENTRY`); `set_gdt` accepts
/// at most this many guest entries.
pub const FIRST_RESERVED_GDT_ENTRY: usize = FIRST_RESERVED_GDT_BYTE / 8;

/// vCPUs with a `vcpu_info` slot in `shared_info` (`XEN_LEGACY_MAX_VCPUS`).
pub const LEGACY_MAX_VCPUS: usize = 32;

/// `set_segment_base`: set the FS base (`SEGBASE_FS`).
pub const SEGBASE_FS: u32 = 0;
/// `set_segment_base`: set the user GS base, inactive while in kernel mode
/// (`SEGBASE_GS_USER`).
pub const SEGBASE_GS_USER: u32 = 1;
/// `set_segment_base`: set the active kernel GS base (`SEGBASE_GS_KERNEL`).
pub const SEGBASE_GS_KERNEL: u32 = 2;
/// `set_segment_base`: load user %gs with the selector in `base[15:0]`
/// (`SEGBASE_GS_USER_SEL`).
pub const SEGBASE_GS_USER_SEL: u32 = 3;

/// Forced-emulation prefix (`ud2; .ascii "xen"`), placed before `cpuid` to
/// get the policy CPUID (`XEN_EMULATE_PREFIX`).
pub const XEN_EMULATE_PREFIX: [u8; 5] = [0x0F, 0x0B, 0x78, 0x65, 0x6E];

/// The CR3 image of an L4 frame (`xen_pfn_to_cr3`).
pub const fn pfn_to_cr3(mfn: crate::Mfn) -> u64 {
    mfn.0 << 12
}

/// The frame named by a CR3 image (`xen_cr3_to_pfn`).
pub const fn cr3_to_pfn(cr3: u64) -> crate::Mfn {
    crate::Mfn(cr3 >> 12)
}
