//! Page-table updates: `mmu_update` (#1), `mmuext_op` (#26) and the
//! `update_va_mapping` flags (`xen.h`).
//!
//! A PV guest never writes a live page table itself. It sends batches:
//! [`MmuUpdate`] requests (the command is in the low 3 bits of `ptr`, see
//! [`MmuCmd`]) and [`MmuextOp`] operations ([`MmuextCmd`]: pin, unpin, base
//! pointers, flushes, LDT, page copy/clear). The hypervisor validates every
//! request, stops at the first failure and reports through `pdone` how many
//! completed.
//!
//! `foreigndom` names the owner of the frames new L1 entries map (FD, bits
//! 15:0) and, plus one, the owner of the tables being edited (PFD, bits
//! 31:16; 0 = self); see [`foreigndom`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, GuestPtr, MachineAddr, Mfn};

/// Bit 31 of a batch `count`: marks a hypervisor continuation. Guests must
/// never set it (`MMU_UPDATE_PREEMPTED`).
pub const MMU_UPDATE_PREEMPTED: u32 = 0x8000_0000;

/// Mask of the command bits in [`MmuUpdate::ptr`].
pub const MMU_CMD_MASK: u64 = 7;

subops! {
    /// `mmu_update` commands, in the low 3 bits of `ptr` (`MMU_*`).
    pub enum MmuCmd: "MMU_" {
        /// Checked `*ptr = val`; `ptr` is the machine address of the entry.
        0 => NormalPtUpdate(MmuUpdate) NORMAL_PT_UPDATE since 0x0000_0000;
        /// `m2p[ptr >> 12] = val` (val is the PFN).
        1 => MachphysUpdate(MmuUpdate) MACHPHYS_UPDATE since 0x0000_0000;
        /// As `NormalPtUpdate`, keeping the entry's accessed/dirty bits.
        2 => PtUpdatePreserveAd(MmuUpdate) PT_UPDATE_PRESERVE_AD since 0x0000_0000;
        /// As `NormalPtUpdate`; `val` is never translated through FD's P2M.
        3 => PtUpdateNoTranslate(MmuUpdate) PT_UPDATE_NO_TRANSLATE since 0x0000_0000;
    }
}

/// `struct mmu_update` (16 bytes): one request of an `mmu_update` batch.
/// Written by the guest, read by the hypervisor.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the 8-byte entry, OR-ed with an [`MmuCmd`].
    pub ptr: u64,
    /// New contents of the entry (or the PFN for `MachphysUpdate`).
    pub val: u64,
}

impl MmuUpdate {
    /// A request `cmd` on the entry at machine address `entry` (8-aligned).
    pub const fn new(cmd: MmuCmd, entry: MachineAddr, val: u64) -> Self {
        MmuUpdate {
            ptr: (entry.0 & !MMU_CMD_MASK) | cmd as u64,
            val,
        }
    }

    /// The command bits, if they name a defined command.
    pub const fn cmd(&self) -> Option<MmuCmd> {
        #[allow(clippy::cast_possible_truncation)] // masked to 3 bits
        MmuCmd::from_nr((self.ptr & MMU_CMD_MASK) as u32)
    }

    /// The entry's machine address (command bits cleared).
    pub const fn entry(&self) -> MachineAddr {
        MachineAddr(self.ptr & !MMU_CMD_MASK)
    }
}

/// The `foreigndom` argument of `mmu_update`/`mmuext_op`: frames owned by
/// `fd`, tables owned by `pfd` (`None` = the caller).
pub const fn foreigndom(fd: DomId, pfd: Option<DomId>) -> u32 {
    let p = match pfd {
        Some(d) => d.0 as u32 + 1,
        None => 0,
    };
    (p << 16) | fd.0 as u32
}

/// Split a `foreigndom` argument into FD and PFD (`None` = self).
pub const fn split_foreigndom(arg: u32) -> (DomId, Option<DomId>) {
    #[allow(clippy::cast_possible_truncation)] // each half is 16 bits
    let fd = DomId(arg as u16);
    #[allow(clippy::cast_possible_truncation)]
    let p = (arg >> 16) as u16;
    let pfd = if p == 0 { None } else { Some(DomId(p - 1)) };
    (fd, pfd)
}

subops! {
    /// `mmuext_op` commands (`MMUEXT_*`, `enum mmuext_cmd`). The argument
    /// column names what `arg1`/`arg2` carry.
    pub enum MmuextCmd: "MMUEXT_" {
        /// Validate as L1 and pin (`arg1` = MFN).
        0 => PinL1Table(Mfn) PIN_L1_TABLE since 0x0000_0000;
        /// Validate as L2 and pin.
        1 => PinL2Table(Mfn) PIN_L2_TABLE since 0x0000_0000;
        /// Validate as L3 and pin.
        2 => PinL3Table(Mfn) PIN_L3_TABLE since 0x0000_0000;
        /// Validate as L4 and pin.
        3 => PinL4Table(Mfn) PIN_L4_TABLE since 0x0000_0000;
        /// Unpin a table.
        4 => UnpinTable(Mfn) UNPIN_TABLE since 0x0000_0000;
        /// Switch the kernel page-table base to this L4.
        5 => NewBaseptr(Mfn) NEW_BASEPTR since 0x0000_0000;
        /// Flush this vCPU's TLB.
        6 => TlbFlushLocal(()) TLB_FLUSH_LOCAL since 0x0000_0000;
        /// Invalidate one address on this vCPU (`arg1` = linear address).
        7 => InvlpgLocal(u64) INVLPG_LOCAL since 0x0000_0000;
        /// Flush the TLBs of the vCPUs in the bitmap at `arg2`.
        8 => TlbFlushMulti(GuestPtr<u64>) TLB_FLUSH_MULTI since 0x0000_0000;
        /// Invalidate `arg1` on the vCPUs in the bitmap at `arg2`.
        9 => InvlpgMulti((u64, GuestPtr<u64>)) INVLPG_MULTI since 0x0000_0000;
        /// Flush every vCPU's TLB.
        10 => TlbFlushAll(()) TLB_FLUSH_ALL since 0x0000_0000;
        /// Invalidate `arg1` on every vCPU.
        11 => InvlpgAll(u64) INVLPG_ALL since 0x0000_0000;
        /// Write back and invalidate caches (needs permission).
        12 => FlushCache(()) FLUSH_CACHE since 0x0000_0000;
        /// Set the LDT: `arg1` = linear address, `arg2` = entries (<= 8192).
        13 => SetLdt((u64, u32)) SET_LDT since 0x0000_0000;
        /// Set the page-table base used in user mode (`arg1` = MFN, 0 = none).
        15 => NewUserBaseptr(Mfn) NEW_USER_BASEPTR since 0x0000_0000;
        /// Zero a page (`arg1` = MFN).
        16 => ClearPage(Mfn) CLEAR_PAGE since 0x0000_0000;
        /// Copy page `arg2` (source MFN) to `arg1` (destination MFN).
        17 => CopyPage((Mfn, Mfn)) COPY_PAGE since 0x0000_0000;
        /// Write back and invalidate caches on every CPU.
        18 => FlushCacheGlobal(()) FLUSH_CACHE_GLOBAL since 0x0000_0000;
        /// Mark a superpage (refused with `-EOPNOTSUPP`).
        19 => MarkSuper(Mfn) MARK_SUPER since 0x0000_0000;
        /// Unmark a superpage (refused with `-EOPNOTSUPP`).
        20 => UnmarkSuper(Mfn) UNMARK_SUPER since 0x0000_0000;
    }
}

/// `struct mmuext_op` (24 bytes): one operation of an `mmuext_op` batch.
/// Written by the guest, read by the hypervisor.
///
/// `arg1` is the union `{ mfn, linear_addr }`; `arg2` is the union
/// `{ u32 nr_ents, vcpumask handle, src_mfn }`. A `u32` member occupies the
/// low half of its 8-byte slot; the hypervisor reads only that half.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuextOp {
    /// An [`MmuextCmd`] number.
    pub cmd: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// MFN or linear address.
    pub arg1: u64,
    /// Entry count, vCPU-bitmap address or source MFN.
    pub arg2: u64,
}

impl MmuextOp {
    /// An operation with raw arguments.
    pub const fn new(cmd: MmuextCmd, arg1: u64, arg2: u64) -> Self {
        MmuextOp {
            cmd: cmd as u32,
            _pad: 0,
            arg1,
            arg2,
        }
    }

    /// An operation whose `arg1` is a frame (pin, unpin, base pointers,
    /// clear page, superpage marks).
    pub const fn on_frame(cmd: MmuextCmd, mfn: Mfn) -> Self {
        Self::new(cmd, mfn.0, 0)
    }

    /// `MMUEXT_SET_LDT`.
    pub const fn set_ldt(linear_addr: u64, nr_ents: u32) -> Self {
        Self::new(MmuextCmd::SetLdt, linear_addr, nr_ents as u64)
    }

    /// `MMUEXT_COPY_PAGE` from `src` to `dst`.
    pub const fn copy_page(dst: Mfn, src: Mfn) -> Self {
        Self::new(MmuextCmd::CopyPage, dst.0, src.0)
    }

    /// The command, if defined.
    pub const fn command(&self) -> Option<MmuextCmd> {
        MmuextCmd::from_nr(self.cmd)
    }

    /// `arg2.nr_ents` (the low 32 bits of `arg2`).
    pub const fn nr_ents(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the u32 union member
        let n = self.arg2 as u32;
        n
    }
}

/// `update_va_mapping` flags: no flush (`UVMF_NONE`).
pub const UVMF_NONE: u64 = 0;
/// Flush the entire TLB(s) (`UVMF_TLB_FLUSH`).
pub const UVMF_TLB_FLUSH: u64 = 1;
/// Flush only the updated address (`UVMF_INVLPG`).
pub const UVMF_INVLPG: u64 = 2;
/// Mask of the flush type (`UVMF_FLUSHTYPE_MASK`).
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush on the vCPUs of a bitmap whose address is OR-ed into bits 63:2
/// (`UVMF_MULTI`).
pub const UVMF_MULTI: u64 = 0;
/// Flush on this vCPU only (`UVMF_LOCAL`: `UVMF_MULTI` with a null bitmap).
pub const UVMF_LOCAL: u64 = 0;
/// Flush on all vCPUs of the domain (`UVMF_ALL`).
pub const UVMF_ALL: u64 = 1 << 2;

assert_layout!(MmuUpdate, 16, ptr = 0, val = 8);
assert_layout!(MmuextOp, 24, cmd = 0, arg1 = 8, arg2 = 16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreigndom_round_trip() {
        assert_eq!(foreigndom(DomId::SELF, None), 0x7FF0);
        assert_eq!(foreigndom(DomId(5), Some(DomId(7))), (8 << 16) | 5);
        assert_eq!(split_foreigndom((8 << 16) | 5), (DomId(5), Some(DomId(7))));
        assert_eq!(split_foreigndom(0x7FF0), (DomId::SELF, None));
    }

    #[test]
    fn mmu_update_cmd_bits() {
        let u = MmuUpdate::new(MmuCmd::MachphysUpdate, MachineAddr(0x1234_5008), 9);
        assert_eq!(u.ptr, 0x1234_5009);
        assert_eq!(u.cmd(), Some(MmuCmd::MachphysUpdate));
        assert_eq!(u.entry(), MachineAddr(0x1234_5008));
        assert_eq!(MmuUpdate { ptr: 5, val: 0 }.cmd(), None);
    }
}
