//! Memory reservation and physmap: `memory_op` (#12) (`memory.h`).
//!
//! `memory_op(cmd, arg)`: bits 5:0 of `cmd` select the `XENMEM_*` sub-op
//! ([`MEMOP_CMD_MASK`]); bits 63:6 carry the start extent of a continued
//! call ([`MEMOP_EXTENT_SHIFT`]), 0 from a guest. For a PV guest every
//! "GMFN"/"GPFN" in these structs is a machine frame number, except the
//! input of `populate_physmap`, which lists PFNs.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, GuestPtr, Mfn};

/// Bits of `memory_op`'s `cmd` that select the sub-op.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;
/// Shift of the start extent in `memory_op`'s `cmd` (`MEMOP_EXTENT_SHIFT`).
pub const MEMOP_EXTENT_SHIFT: u32 = 6;

subops! {
    /// `memory_op` sub-ops (`XENMEM_*`).
    pub enum XenmemOp: "XENMEM_" {
        /// Allocate extents; writes their MFNs to `extent_start`; returns how
        /// many were done.
        0 => IncreaseReservation(XenMemoryReservation) increase_reservation since 0x0000_0000;
        /// Free the listed frames; returns how many were done.
        1 => DecreaseReservation(XenMemoryReservation) decrease_reservation since 0x0000_0000;
        /// Highest machine frame of RAM (no argument).
        2 => MaximumRamPage(()) maximum_ram_page since 0x0000_0000;
        /// Pages the domain holds.
        3 => CurrentReservation(XenMemoryDomain) current_reservation since 0x0000_0000;
        /// The domain's page limit.
        4 => MaximumReservation(XenMemoryDomain) maximum_reservation since 0x0000_0000;
        /// MFNs of the 2 MiB chunks backing the M2P.
        5 => MachphysMfnList(XenMachphysMfnList) machphys_mfn_list since 0x0000_0000;
        /// Allocate frames for the listed PFNs, set their M2P entries, write
        /// the MFNs back; returns how many were done.
        6 => PopulatePhysmap(XenMemoryReservation) populate_physmap since 0x0000_0000;
        /// Map a special frame into a translated guest's physmap (PV:
        /// `-EACCES`).
        7 => AddToPhysmap(XenAddToPhysmap) add_to_physmap since 0x0000_0000;
        /// The guest's pseudo-physical E820 map (`-ENOSYS` if none was set).
        9 => MemoryMap(XenMemoryMap) memory_map since 0x0000_0000;
        /// The host's E820 map (privileged).
        10 => MachineMemoryMap(XenMemoryMap) machine_memory_map since 0x0000_0000;
        /// Atomically trade extents (PV only).
        11 => Exchange(XenMemoryExchange) exchange since 0x0000_0000;
        /// The M2P's virtual range and size.
        12 => MachphysMapping(XenMachphysMapping) machphys_mapping since 0x0000_0000;
        /// Set a domain's pseudo-physical E820 map (toolstack).
        13 => SetMemoryMap(XenForeignMemoryMap) set_memory_map since 0x0000_0000;
        /// Highest GPFN of a domain.
        14 => MaximumGpfn(XenMemoryDomain) maximum_gpfn since 0x0000_0000;
        /// Remove a frame from a translated guest's physmap.
        15 => RemoveFromPhysmap(()) remove_from_physmap since 0x0000_0000;
        /// Set the populate-on-demand target (HVM).
        16 => SetPodTarget(()) set_pod_target since 0x0000_0000;
        /// Query the populate-on-demand target (HVM).
        17 => GetPodTarget(()) get_pod_target since 0x0000_0000;
        /// Pages freed by sharing (tools-only header).
        18 => GetSharingFreedPages(()) get_sharing_freed_pages since 0x0000_0000;
        /// Pages shared (tools-only header).
        19 => GetSharingSharedPages(()) get_sharing_shared_pages since 0x0000_0000;
        /// Memory paging (tools-only header).
        20 => PagingOp(()) paging_op since 0x0000_0000;
        /// Memory access control (tools-only header).
        21 => AccessOp(()) access_op since 0x0000_0000;
        /// Memory sharing (tools-only header).
        22 => SharingOp(()) sharing_op since 0x0000_0000;
        /// Batched `add_to_physmap` (translated or foreign).
        23 => AddToPhysmapBatch(()) add_to_physmap_batch since 0x0000_0000;
        /// Claim pages for a domain under construction (tools-only header).
        24 => ClaimPages(XenMemoryReservation) claim_pages since 0x0000_0000;
        /// The compat M2P's frames.
        25 => MachphysCompatMfnList(XenMachphysMfnList) machphys_compat_mfn_list
            since 0x0000_0000;
        /// Virtual NUMA information.
        26 => GetVnumainfo(()) get_vnumainfo since 0x0000_0000;
        /// Reserved device memory (tools-only header).
        27 => ReservedDeviceMemoryMap(()) reserved_device_memory_map since 0x0000_0000;
        /// Map a resource's frames (grant table, ioreq server) (tools).
        28 => AcquireResource(()) acquire_resource since 0x0000_0000;
    }
}

/// The `memory_op` `cmd` for sub-op `op` starting at extent 0.
pub const fn memop_cmd(op: XenmemOp) -> u64 {
    op as u64
}

/// Split a `memory_op` `cmd` into the sub-op number and start extent.
pub const fn split_memop_cmd(cmd: u64) -> (u32, u64) {
    #[allow(clippy::cast_possible_truncation)] // masked to 6 bits
    let op = (cmd & MEMOP_CMD_MASK) as u32;
    (op, cmd >> MEMOP_EXTENT_SHIFT)
}

/// `mem_flags` bits 7:0: maximum address width of the frames, 0 = any
/// (`XENMEMF_address_bits`).
pub const XENMEMF_ADDRESS_BITS_MASK: u32 = 0xFF;
/// `mem_flags`: allocate on NUMA node `n` (`XENMEMF_node(n)`).
pub const fn xenmemf_node(n: u32) -> u32 {
    (n + 1) << 8
}
/// `mem_flags`: populate on demand (`XENMEMF_populate_on_demand`).
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `mem_flags`: the node request is strict (`XENMEMF_exact_node_request`).
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `mem_flags`: the node is virtual (`XENMEMF_vnode`).
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `struct xen_memory_reservation` (32 bytes). Written by the guest; the
/// hypervisor writes the frame numbers back through `extent_start`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryReservation {
    /// In/out: array of frame numbers (PFNs in and MFNs out for
    /// `populate_physmap`; MFNs otherwise); null for `claim_pages`.
    pub extent_start: GuestPtr<u64>,
    /// In: number of extents.
    pub nr_extents: u64,
    /// In: log2 of pages per extent.
    pub extent_order: u32,
    /// In: `XENMEMF_*` flags (`address_bits` before interface 0x00030209).
    pub mem_flags: u32,
    /// In: the domain (`DOMID_SELF` unless privileged).
    pub domid: DomId,
    /// Padding (zero).
    pub _pad: [u16; 3],
}

/// `struct xen_memory_exchange` (72 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryExchange {
    /// In: extents to give up.
    pub in_: XenMemoryReservation,
    /// In/out: extents to receive.
    pub out: XenMemoryReservation,
    /// In: must be 0; out: extents exchanged.
    pub nr_exchanged: u64,
}

/// `struct xen_memory_domain` (2 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryDomain {
    /// In: the domain.
    pub domid: DomId,
}

/// `struct xen_machphys_mfn_list` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMachphysMfnList {
    /// In: capacity of `extent_start`.
    pub max_extents: u32,
    /// Padding (zero).
    pub _pad0: u32,
    /// In: where the hypervisor writes the MFNs.
    pub extent_start: GuestPtr<Mfn>,
    /// Out: MFNs written.
    pub nr_extents: u32,
    /// Padding (zero).
    pub _pad1: u32,
}

/// `struct xen_machphys_mapping` (24 bytes). Written by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMachphysMapping {
    /// Start of the M2P's virtual range.
    pub v_start: u64,
    /// End of the M2P's virtual range.
    pub v_end: u64,
    /// Highest MFN the M2P covers.
    pub max_mfn: u64,
}

/// `xen_add_to_physmap.space` values (`XENMAPSPACE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum XenMapSpace {
    /// The shared_info page.
    SharedInfo = 0,
    /// A grant-table frame (`idx | XENMAPIDX_GRANT_TABLE_STATUS` for status).
    GrantTable = 1,
    /// A guest frame.
    Gmfn = 2,
    /// A range of guest frames.
    GmfnRange = 3,
    /// A foreign domain's frame.
    GmfnForeign = 4,
    /// Device MMIO.
    DevMmio = 5,
}

/// `idx` flag selecting a grant status frame (`XENMAPIDX_grant_table_status`).
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// `struct xen_add_to_physmap` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// In: the domain.
    pub domid: DomId,
    /// In: number of pages for `GmfnRange`.
    pub size: u16,
    /// In: a [`XenMapSpace`].
    pub space: u32,
    /// In: index within the space.
    pub idx: u64,
    /// In: where to map it.
    pub gpfn: u64,
}

/// `struct xen_memory_map` (16 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryMap {
    /// In: capacity of `buffer` in entries; out: entries written.
    pub nr_entries: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// In: array of [`E820Entry`].
    pub buffer: GuestPtr<E820Entry>,
}

/// `struct xen_foreign_memory_map` (24 bytes): `XENMEM_set_memory_map`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenForeignMemoryMap {
    /// In: the domain.
    pub domid: DomId,
    /// Padding (zero).
    pub _pad: [u16; 3],
    /// In: the map.
    pub map: XenMemoryMap,
}

/// E820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type: reserved.
pub const E820_RESERVED: u32 = 2;

/// One E820 entry (20 bytes, packed), as `XENMEM_memory_map` returns it.
/// Written by the hypervisor (from the toolstack's `set_memory_map`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// [`E820_RAM`], [`E820_RESERVED`], ...
    pub type_: u32,
}

assert_layout!(
    XenMemoryReservation,
    32,
    extent_start = 0,
    nr_extents = 8,
    extent_order = 16,
    mem_flags = 20,
    domid = 24,
);
assert_layout!(XenMemoryExchange, 72, in_ = 0, out = 32, nr_exchanged = 64);
assert_layout!(XenMemoryDomain, 2, domid = 0);
assert_layout!(
    XenMachphysMfnList,
    24,
    max_extents = 0,
    extent_start = 8,
    nr_extents = 16
);
assert_layout!(XenMachphysMapping, 24, v_start = 0, v_end = 8, max_mfn = 16);
assert_layout!(
    XenAddToPhysmap,
    24,
    domid = 0,
    size = 2,
    space = 4,
    idx = 8,
    gpfn = 16
);
assert_layout!(XenMemoryMap, 16, nr_entries = 0, buffer = 8);
assert_layout!(XenForeignMemoryMap, 24, domid = 0, map = 8);
assert_layout!(E820Entry, 20, addr = 0, size = 8, type_ = 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memop_cmd_split() {
        assert_eq!(split_memop_cmd((5 << MEMOP_EXTENT_SHIFT) | 6), (6, 5));
        assert_eq!(memop_cmd(XenmemOp::PopulatePhysmap), 6);
        assert_eq!(xenmemf_node(0), 1 << 8);
    }
}
