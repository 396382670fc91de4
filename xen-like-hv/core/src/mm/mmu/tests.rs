//! Host tests of the PV memory model: a `Vec`-backed machine, unit tests per rule,
//! regression tests after Xen's PV-MMU advisories, and a property test with a
//! reference-count oracle.
//!
//! Successful calls return a `#[must_use]` [`Flush`]; tests that only care about the
//! state `.unwrap()` and drop it.
#![allow(unused_must_use)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "host tests index small Vecs by frame number"
)]

mod advisories;
mod ldt;
mod props;
mod unit;

use std::vec;
use std::vec::Vec;

use hypercall_abi::mmu::{MmuCmd, MmuUpdate, MmuextCmd, MmuextOp, foreigndom};
use hypercall_abi::xen::{HYPERVISOR_L4_FIRST, HYPERVISOR_L4_LAST};
use hypercall_abi::{DomId, MachineAddr};

use super::{Flush, ForeignDomain, VcpuMm, mmu_update_entry, mmuext_op, update_va_mapping};
use crate::mm::Mfn;
use crate::mm::error::MmError;
use crate::mm::frame_table::{FrameInfo, FrameTable, Owner, PageType};
use crate::mm::page_type::{HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks};

/// Frames in the test machine.
pub(super) const N: u64 = 64;
/// A hypervisor frame.
pub(super) const XEN_FRAME: u64 = 0;
/// An in-table I/O frame.
pub(super) const IO_FRAME: u64 = 1;
/// dom1's shared_info.
pub(super) const SHARED1: u64 = 2;
/// dom0's shared_info.
pub(super) const SHARED0: u64 = 3;
/// First frame of dom0 (30 frames).
pub(super) const DOM0_BASE: u64 = 4;
/// First frame of dom1 (30 frames).
pub(super) const DOM1_BASE: u64 = 34;
/// An I/O frame outside the frame table.
pub(super) const FAR_IO: u64 = 100;

pub(super) const P: u64 = 1;
pub(super) const RW: u64 = 2;
pub(super) const U: u64 = 4;
pub(super) const PWT: u64 = 8;
pub(super) const PCD: u64 = 0x10;
pub(super) const A: u64 = 0x20;
pub(super) const D: u64 = 0x40;
pub(super) const PSE: u64 = 0x80;
pub(super) const G: u64 = 0x100;
pub(super) const GK: u64 = 1 << 52;
pub(super) const GNT: u64 = 1 << 62;
pub(super) const NX: u64 = 1 << 63;

/// An entry mapping `mfn` with `flags`.
pub(super) const fn pte(mfn: u64, flags: u64) -> u64 {
    (mfn << 12) | flags
}

/// The value the test hypervisor puts in L4 slot `slot`.
pub(super) fn xen_slot(slot: usize) -> u64 {
    pte(0xd_0000 + slot as u64, P | RW | A | D)
}

/// The virtual address of (l4, l3, l2, l1) indices, sign-extended.
pub(super) const fn va(l4: u64, l3: u64, l2: u64, l1: u64) -> u64 {
    let v = (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12);
    if l4 >= 256 {
        v | 0xffff_0000_0000_0000
    } else {
        v
    }
}

pub(super) struct Mem {
    pages: Vec<[u64; 512]>,
}

impl MachineMemory for Mem {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        self.pages[mfn.0 as usize][index]
    }
    fn write_entry(&mut self, mfn: Mfn, index: usize, val: u64) {
        self.pages[mfn.0 as usize][index] = val;
    }
    fn zero_page(&mut self, mfn: Mfn) {
        self.pages[mfn.0 as usize] = [0; 512];
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        self.pages[dst.0 as usize] = self.pages[src.0 as usize];
    }
}

pub(super) struct Slots;

impl HypervisorSlots for Slots {
    fn l4_entry(&self, slot: usize) -> u64 {
        assert!((HYPERVISOR_L4_FIRST..=HYPERVISOR_L4_LAST).contains(&slot));
        xen_slot(slot)
    }
}

pub(super) struct M2pTable(pub Vec<u64>);

impl M2p for M2pTable {
    fn get(&self, mfn: Mfn) -> u64 {
        self.0[mfn.0 as usize]
    }
    fn set(&mut self, mfn: Mfn, pfn: u64) {
        self.0[mfn.0 as usize] = pfn;
    }
}

/// dom0 is privileged over everyone and has I/O capability; dom1 has neither.
pub(super) struct Hooks {
    pub flushes: Vec<(DomId, Mfn)>,
    /// Frames of destroyed domains freed on their last reference.
    pub orphans: Vec<(DomId, Mfn)>,
}

/// A descriptor the test audit refuses: present, code/data (S=1), DPL 0.
pub(super) const BAD_DESC: u64 = (1 << 47) | (1 << 44);

impl MmHooks for Hooks {
    fn domain_exists(&self, dom: DomId) -> bool {
        dom.0 <= 1
    }
    fn privileged_over(&self, caller: DomId, _target: DomId) -> bool {
        caller == DomId(0)
    }
    fn io_caps(&self, dom: DomId) -> bool {
        dom == DomId(0)
    }
    /// FAR_IO plays the HPET: read-only for everyone (Xen's `mmio_ro_ranges`).
    fn mmio_read_only(&self, mfn: Mfn) -> bool {
        mfn == Mfn(FAR_IO)
    }
    fn flush_for_type_change(&mut self, owner: DomId, mfn: Mfn) {
        self.flushes.push((owner, mfn));
    }
    fn check_descriptor(&self, _owner: DomId, desc: u64, _next: u64) -> bool {
        desc & (BAD_DESC | (3 << 45)) != BAD_DESC
    }
    fn frame_orphan_freed(&mut self, dom: DomId, mfn: Mfn) {
        self.orphans.push((dom, mfn));
    }
}

pub(super) type Ctx<'x> = MmCtx<'x, 'static, Mem, Slots, M2pTable, Hooks>;

pub(super) struct World {
    pub ft: FrameTable<'static>,
    pub mem: Mem,
    pub slots: Slots,
    pub m2p: M2pTable,
    pub hooks: Hooks,
    pub linear_pt: bool,
}

impl World {
    pub fn new() -> World {
        let store: &'static mut [FrameInfo] = Vec::leak(vec![FrameInfo::default(); N as usize]);
        let mut ft = FrameTable::new(store);
        ft.assign(Mfn(XEN_FRAME), Owner::Xen).unwrap();
        ft.assign(Mfn(IO_FRAME), Owner::Io).unwrap();
        ft.assign(Mfn(SHARED1), Owner::XenShared(DomId(1))).unwrap();
        ft.assign(Mfn(SHARED0), Owner::XenShared(DomId(0))).unwrap();
        for m in DOM0_BASE..DOM1_BASE {
            ft.assign(Mfn(m), Owner::Domain(DomId(0))).unwrap();
        }
        for m in DOM1_BASE..N {
            ft.assign(Mfn(m), Owner::Domain(DomId(1))).unwrap();
        }
        World {
            ft,
            mem: Mem {
                pages: vec![[0; 512]; N as usize],
            },
            slots: Slots,
            m2p: M2pTable(vec![!0; N as usize]),
            hooks: Hooks {
                flushes: Vec::new(),
                orphans: Vec::new(),
            },
            linear_pt: true,
        }
    }

    pub fn ctx(&mut self, dom: u16) -> Ctx<'_> {
        MmCtx {
            ft: &mut self.ft,
            mem: &mut self.mem,
            slots: &self.slots,
            m2p: &mut self.m2p,
            hooks: &mut self.hooks,
            dom: DomId(dom),
            privileged: dom == 0,
            io_caps: dom == 0,
            linear_pt: self.linear_pt,
        }
    }

    pub fn info(&self, mfn: u64) -> FrameInfo {
        *self.ft.info(Mfn(mfn)).unwrap()
    }

    pub fn read(&self, mfn: u64, idx: usize) -> u64 {
        self.mem.read_entry(Mfn(mfn), idx)
    }

    /// A raw write, as the guest does to a frame it maps writable.
    pub fn poke(&mut self, mfn: u64, idx: usize, val: u64) {
        self.mem.write_entry(Mfn(mfn), idx, val);
    }

    /// `mmu_update` with an explicit command and `foreigndom`.
    pub fn mmu_cmd(
        &mut self,
        dom: u16,
        fdom: u32,
        cmd: u64,
        mfn: u64,
        idx: usize,
        val: u64,
    ) -> Result<Flush, MmError> {
        let mut ctx = self.ctx(dom);
        let foreign = ForeignDomain::for_mmu_update(&ctx, fdom)?;
        let req = MmuUpdate {
            ptr: pte(mfn, 0) | ((idx as u64) << 3) | cmd,
            val,
        };
        mmu_update_entry(&mut ctx, req, foreign)
    }

    /// `MMU_NORMAL_PT_UPDATE` of entry `idx` of `mfn`, `DOMID_SELF`.
    pub fn mmu(&mut self, dom: u16, mfn: u64, idx: usize, val: u64) -> Result<Flush, MmError> {
        self.mmu_cmd(
            dom,
            u32::from(DomId::SELF.0),
            MmuCmd::NormalPtUpdate as u64,
            mfn,
            idx,
            val,
        )
    }

    pub fn ext_fd(
        &mut self,
        dom: u16,
        fdom: u32,
        vcpu: &mut VcpuMm,
        op: MmuextOp,
    ) -> Result<Flush, MmError> {
        let mut ctx = self.ctx(dom);
        let foreign = ForeignDomain::for_mmuext_op(&ctx, fdom)?;
        mmuext_op(&mut ctx, vcpu, op, foreign)
    }

    pub fn ext(&mut self, dom: u16, vcpu: &mut VcpuMm, op: MmuextOp) -> Result<Flush, MmError> {
        self.ext_fd(dom, u32::from(DomId::SELF.0), vcpu, op)
    }

    pub fn pin(&mut self, dom: u16, level: u8, mfn: u64) -> Result<Flush, MmError> {
        let cmd = match level {
            1 => MmuextCmd::PinL1Table,
            2 => MmuextCmd::PinL2Table,
            3 => MmuextCmd::PinL3Table,
            _ => MmuextCmd::PinL4Table,
        };
        self.ext(
            dom,
            &mut VcpuMm::default(),
            MmuextOp::on_frame(cmd, Mfn(mfn)),
        )
    }

    pub fn unpin(&mut self, dom: u16, mfn: u64) -> Result<Flush, MmError> {
        self.ext(
            dom,
            &mut VcpuMm::default(),
            MmuextOp::on_frame(MmuextCmd::UnpinTable, Mfn(mfn)),
        )
    }

    pub fn uvm(
        &mut self,
        dom: u16,
        root: u64,
        va: u64,
        val: u64,
        flags: u64,
    ) -> Result<Flush, MmError> {
        let mut ctx = self.ctx(dom);
        update_va_mapping(&mut ctx, Mfn(root), va, val, flags)
    }

    /// Write a 4-level chain l4[l4i] -> l3[l3i] -> l2[l2i] -> l1 with raw writes
    /// (tables not in use yet), upper entries P|RW|A|D|U as the builder writes them.
    pub fn chain(&mut self, l4: u64, l3: u64, l2: u64, l1: u64, idx: (usize, usize, usize)) {
        let up = P | RW | A | D | U;
        self.poke(l4, idx.0, pte(l3, up));
        self.poke(l3, idx.1, pte(l2, up));
        self.poke(l2, idx.2, pte(l1, up));
    }

    /// Every record, for before/after comparisons.
    pub fn counts(&self) -> Vec<(u32, u32, bool, bool)> {
        self.ft
            .frames()
            .iter()
            .map(|f| {
                (
                    f.count(),
                    f.type_count(),
                    f.pinned(),
                    f.type_count() > 0 && f.validated(),
                )
            })
            .collect()
    }
}

/// `foreigndom` with FD = `fd` and no PFD.
pub(super) fn fd(fd: DomId) -> u32 {
    foreigndom(fd, None)
}

/// A machine address inside frame `mfn`.
pub(super) fn ma(mfn: u64, idx: usize) -> MachineAddr {
    MachineAddr(pte(mfn, 0) | ((idx as u64) << 3))
}
