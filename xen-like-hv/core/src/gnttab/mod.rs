//! Grant tables (`grant_table_op` #20), after Xen 4.17's `common/grant_table.c` and
//! `arch/x86/pv/grant_table.c`. See `docs/gnttab.md`.
//!
//! * [`GrantTable`] is one domain's table: its version, its limits, and the machine
//!   frames that hold the guest-visible shared entries (v1 or v2), the v2 status
//!   words, and the hypervisor-private active entries and maptrack. Like Xen, which
//!   keeps them in xenheap pages, everything of variable size lives in frames taken
//!   from the frame allocator when the table grows (`setup_table`, or a map that needs
//!   a new maptrack frame), bounded by the domain's `max_grant_frames` and
//!   `max_maptrack_frames`; the hypervisor has no heap for a guest to exhaust.
//! * [`GrantTables`] finds any domain's table (a dying domain's table stays while
//!   other domains still have its grants pinned) and hands out frames.
//! * [`ops`] has the operations; `crate::hypercall::gnttab` copies requests in and
//!   results out, batches and continues.

pub mod ops;
mod table;

#[cfg(test)]
mod tests;

pub use ops::{Gnt, MapReq, MapResult, UnmapDone, UnmapReq};
pub use table::{Active, GrantTable, MaptrackEntry};

use crate::mm::Mfn;
use hypercall_abi::types::DomId;

/// Grant-table frames a new table starts with (`INITIAL_NR_GRANT_FRAMES`).
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;
/// Most grant-table frames of any domain, and dom0's limit (`gnttab_max_frames`).
pub const MAX_GRANT_FRAMES: u32 = 64;
/// Most maptrack frames of any domain, and dom0's limit
/// (`gnttab_max_maptrack_frames`).
pub const MAX_MAPTRACK_FRAMES: u32 = 1024;
/// Highest grant-table version (`GNTTAB_MAX_VERSION`).
pub const MAX_VERSION: u8 = 2;

/// The limits a domain's table is created with (`XEN_DOMCTL_createdomain`'s
/// `max_grant_frames`, `max_maptrack_frames`, and the version in `grant_opts`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Grant-table frames.
    pub max_grant_frames: u32,
    /// Maptrack frames (0: the domain can map no grant).
    pub max_maptrack_frames: u32,
    /// Highest version `set_version` accepts (1 or 2).
    pub max_version: u8,
}

impl Limits {
    /// dom0's limits: Xen's boot defaults.
    pub const DOM0: Limits = Limits {
        max_grant_frames: MAX_GRANT_FRAMES,
        max_maptrack_frames: MAX_MAPTRACK_FRAMES,
        max_version: MAX_VERSION,
    };

    /// Xen's `grant_table_init` checks on a createdomain request: negative values mean
    /// the default; fewer than [`INITIAL_NR_GRANT_FRAMES`] or more than the maxima is
    /// `None` (-EINVAL). `version` is `grant_opts & XEN_DOMCTL_GRANT_version_mask`:
    /// 1 or 2; 0 and anything above 2 are -EINVAL, as in Xen 4.17 (checked on
    /// real Xen: 0 and 0xf are refused, 2 is taken).
    pub fn from_createdomain(
        grant_frames: i32,
        maptrack_frames: i32,
        version: u32,
    ) -> Option<Self> {
        let g = u32::try_from(grant_frames).unwrap_or(MAX_GRANT_FRAMES);
        let m = u32::try_from(maptrack_frames).unwrap_or(MAX_MAPTRACK_FRAMES);
        if !(INITIAL_NR_GRANT_FRAMES..=MAX_GRANT_FRAMES).contains(&g) || m > MAX_MAPTRACK_FRAMES {
            return None;
        }
        let max_version = match version {
            1 | 2 => u8::try_from(version).ok()?,
            _ => return None,
        };
        Some(Limits {
            max_grant_frames: g,
            max_maptrack_frames: m,
            max_version,
        })
    }
}

/// Every domain's grant table.
pub trait GrantTables {
    /// The table of domain `dom` (also while it dies, as long as it exists).
    fn get(&mut self, dom: DomId) -> Option<&mut GrantTable>;
    /// The table of `dom`, a dying domain's whose last pin went, was destroyed
    /// ([`GrantTable::destroy_private`]): its slot is free.
    fn forget(&mut self, dom: DomId);
}

/// Where grant-table storage comes from: the hypervisor's frame allocator.
pub trait FramePool {
    /// A free machine frame (not yet in the frame table's hands: the caller assigns
    /// it), or `None`.
    fn alloc_frame(&mut self) -> Option<Mfn>;
    /// Gives back a frame from [`FramePool::alloc_frame`], already released in the
    /// frame table.
    fn free_frame(&mut self, mfn: Mfn);
}
