//! The hypervisor's virtual address space, inside the L4 slots Xen reserves for itself
//! (256-271, 0xFFFF800000000000-0xFFFF87FFFFFFFFFF). The lower half and slots 272-511
//! belong to guests; nothing of the hypervisor is mapped there once boot is done.

/// Where the image is linked (Xen's XEN_VIRT_START, slot 261). Must match linker.ld.
pub const HV_VIRT_BASE: u64 = 0xFFFF_82D0_8000_0000;
/// Where GRUB loads the image. Must match linker.ld.
pub const HV_PHYS_BASE: u64 = 0x20_0000;
/// Virtual minus physical address of the image.
pub const HV_OFFSET: u64 = HV_VIRT_BASE - HV_PHYS_BASE;

/// The hypervisor's read-write view of the M2P table (slot 261); guests read the same
/// frames at `MACH2PHYS_VIRT_START` (slot 256), mapped user-readable.
pub const RDWR_M2P_BASE: u64 = 0xFFFF_8280_0000_0000;
/// Size of the read-write M2P window (the guest-visible one is as large).
pub const M2P_WINDOW: u64 = 256 << 30;

/// Mappings of device registers (uncached, 4 KiB pages), slot 261 below the image.
pub const IOREMAP_BASE: u64 = 0xFFFF_82C0_0000_0000;
/// Size of the ioremap window.
pub const IOREMAP_SIZE: u64 = 1 << 30;

/// The CPUs' LDT areas (slot 261, after the ioremap window): 64 KiB per CPU, room for
/// the 8192 descriptors of the largest LDT. The pages of the running vCPU's LDT are
/// mapped here as the CPU first reads them (`arch::x86_64::ldt`).
pub const LDT_AREA_BASE: u64 = IOREMAP_BASE + IOREMAP_SIZE;
/// Bytes of LDT area each CPU has.
pub const LDT_AREA_SIZE: u64 = 16 * 4096;

/// The direct map of machine memory (Xen's DIRECTMAP_VIRT_START, slots 262-271).
pub const DIRECTMAP_BASE: u64 = 0xFFFF_8300_0000_0000;
/// Size of the direct map: 5 TiB.
pub const DIRECTMAP_SIZE: u64 = 10 << 39;

const fn l4_slot(va: u64) -> usize {
    ((va >> 39) & 511) as usize
}

const _: () = assert!(l4_slot(HV_VIRT_BASE) == 261);
const _: () = assert!(l4_slot(IOREMAP_BASE) == 261);
const _: () = assert!(l4_slot(DIRECTMAP_BASE) == 262);
const _: () = assert!(l4_slot(DIRECTMAP_BASE + DIRECTMAP_SIZE - 1) == 271);
const _: () = assert!((IOREMAP_BASE + IOREMAP_SIZE) <= HV_VIRT_BASE);
const _: () = assert!(RDWR_M2P_BASE + M2P_WINDOW <= IOREMAP_BASE);
// One L1 table covers the LDT areas of the first 32 CPUs.
const _: () = assert!(LDT_AREA_BASE % (2 << 20) == 0);
const _: () = assert!(LDT_AREA_BASE + 32 * LDT_AREA_SIZE <= HV_VIRT_BASE);
const _: () = assert!(l4_slot(RDWR_M2P_BASE) == 261);
