//! Test doubles for the portable PV-guest logic: a [`FakePlatform`] over plain memory and
//! a [`World`] (platform, domain, vCPU, saved registers) that hands out [`GuestCtx`]s and
//! can be driven as a guest drives the hypervisor ([`Invoke`]).
#![allow(clippy::cast_possible_truncation)] // page offsets and lengths are < 4096

use crate::domain::Domain;
use crate::mm::Mfn;
use crate::mm::frame_table::{FrameInfo, FrameTable};
use crate::mm::mmu::FlushKind;
use crate::mm::page_type::{HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks};
use crate::platform::{GuestFault, Platform, Progress};
use crate::regs::{Regs, SYSCALL_VECTOR, rflags};
use crate::traps::{GuestCtx, Outcome};
use crate::vcpu::Vcpu;
use hypercall_abi::Errno;
use hypercall_abi::Invoke;
use hypercall_abi::memory::E820Entry;
use hypercall_abi::types::DomId;
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS};
use std::collections::{BTreeMap, BTreeSet};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Where the fake CPU's LDT area starts (as the hypervisor's, in its own range).
pub(crate) const LDT_AREA: u64 = 0xFFFF_82C0_4000_0000;

/// Page size of the fake guest memory.
pub(crate) const PAGE: u64 = 4096;

/// What a guest page allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Perm {
    /// Reads succeed, writes fault.
    ReadOnly,
    /// Reads and writes succeed.
    ReadWrite,
}

/// In which virtual mode a page is mapped (the fake has one address space with per-page
/// visibility instead of two page-table trees).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Space {
    /// Mapped in both the kernel and the user page tables.
    Both,
    /// Mapped only in the kernel page tables.
    KernelOnly,
}

#[derive(Clone, Debug)]
struct Page {
    data: Vec<u8>,
    perm: Perm,
    space: Space,
}

/// The machine as the tests see it.
#[derive(Clone, Debug)]
pub(crate) struct FakePlatform {
    pages: BTreeMap<u64, Page>,
    /// The address space guest accesses go through (follows `load_mode`).
    pub kernel_space: bool,
    /// Console lines printed, with their domain.
    pub console: Vec<(DomId, Vec<u8>)>,
    /// `evtchn_upcall_mask` per vCPU (absent = 0).
    pub masks: BTreeMap<u32, u8>,
    /// `vcpu_info.arch.cr2` per vCPU.
    pub shared_cr2: BTreeMap<u32, u64>,
    /// Every `move_vcpu_info` call: (vCPU, frame, offset).
    pub vcpu_info_moves: Vec<(u32, crate::mm::Mfn, u32)>,
    /// The fake machine's I/O ports: what `port_in` reads (absent: 0x5A repeated).
    pub ports: BTreeMap<u16, u32>,
    /// Every `port_out`: (port, bytes, value).
    pub port_writes: Vec<(u16, u8, u32)>,
    /// The fake machine's PCI configuration space: dword at (latch with the enable
    /// bit and the register's low bits cleared); absent reads all ones.
    pub pci_space: BTreeMap<u32, u32>,
    /// Every `pci_conf_write`: (latch, offset, bytes, value).
    pub pci_writes: Vec<(u32, u8, u8, u32)>,
    /// The hypervisor's PCI state.
    pub pci: crate::pci::PciState,
    /// `Platform::mmio_ro` calls.
    pub mmio_ro: Vec<(u64, u64, bool)>,
    /// `Platform::mmcfg_write` calls.
    pub mmcfg_writes: Vec<(u64, u8, u32)>,
    /// Every domain's I/O-memory permissions.
    pub iomem: crate::iomem::IomemTable,
    /// The hypervisor's console ring as `read_console` sees it.
    pub console_ring: Vec<u8>,
    /// Domains destroyed with `destroy_domain`.
    pub destroyed: Vec<DomId>,
    /// How many more `destroy_domain`/`pause_domain` calls answer
    /// [`Progress::Again`] (another CPU still runs the domain).
    pub busy_elsewhere: u32,
    /// vCPU 0 of each domain in `others` made by `create_domain` (`with_vcpu`).
    pub other_vcpus: BTreeMap<u16, crate::vcpu::Vcpu>,
    /// Every `write_frame`: (frame, offset, bytes).
    pub frame_writes: Vec<(Mfn, usize, Vec<u8>)>,
    /// Every `load_mode` call: (kernel mode, active GS base, fs base) at the time.
    pub load_mode_calls: Vec<(bool, u64, u64)>,
    /// Host CPUID answers by (leaf, subleaf); absent = zeros.
    pub cpuid: BTreeMap<(u32, u32), [u32; 4]>,
    /// Real CR0.
    pub cr0: u64,
    /// Real CR4.
    pub cr4: u64,
    /// What `xfeature_mask()` returns.
    pub xfeature_mask: u64,
    /// Every `msr_command`: (MSR, value).
    pub msr_commands: core::cell::RefCell<Vec<(u32, u64)>>,
    /// The XCR0 loaded by `set_xcr0`.
    pub xcr0: u64,
    /// What `tsc()` returns.
    pub tsc: u64,
    /// The host's MSRs (`rdmsr_safe`); absent ones fault.
    pub host_msrs: BTreeMap<u32, u64>,
    /// The hardware DR6 `take_debug_status` returns (then resets).
    pub dr6: u64,
    /// Hypervisor command line.
    pub cmdline: String,
    /// Nanoseconds since boot.
    pub now: u64,
    /// The memory model's world (frame table, machine memory, M2P).
    pub mm: MmWorld,
    /// TLB flushes asked for: (kind, all CPUs).
    pub tlb_flushes: Vec<(FlushKind, bool)>,
    /// GDT frame lists loaded, in order.
    pub gdt_loads: Vec<Vec<u64>>,
    /// LDTs loaded, in order: (entries, frames mapped).
    pub ldt_loads: Vec<(u32, Vec<Option<u64>>)>,
    /// Where the fake LDT area starts (`ldt_area_offset`).
    pub ldt_area: u64,
    /// Frames the fake frame allocator may hand to domains (`alloc_frames`); empty
    /// unless a test adds some.
    pub pool: BTreeSet<u64>,
    /// Every `free_frames` call: (first, count).
    pub freed: Vec<(u64, u64)>,
    /// Xen's `max_page` (`max_page`).
    pub max_page: u64,
    /// MFNs of the M2P's 2 MiB chunks (`m2p_chunk`).
    pub m2p_chunks: Vec<u64>,
    /// The host E820 map (`host_e820`).
    pub host_map: Vec<E820Entry>,
    /// Other domains by id (`with_domain`); the memory model's hooks say they exist.
    pub others: BTreeMap<u16, Domain>,
    /// `evtchn_upcall_pending` per vCPU (absent = 0).
    pub upcall_pending: BTreeMap<u32, bool>,
    /// Event channels: the current domain's and the others' port tables and bitmaps.
    pub evtchn: FakeEvtchn,
    /// The current domain's id in [`FakePlatform::evtchn`].
    pub evtchn_self: u16,
    /// Every kick, in order.
    pub kicks: Vec<crate::evtchn::Kick>,
    /// The machine's IRQs (QEMU `pc`: 24 GSIs, GSI 4 the hypervisor's).
    pub irqs: Box<crate::pirq::IrqTable>,
    /// The IO-APIC behind them.
    pub chip: FakeIrqChip,
    /// Times `timers_changed` was called.
    pub timer_changes: u32,
    /// Siblings reported by `sibling_changed`, in order.
    pub siblings_changed: Vec<u32>,
    /// Hard affinities set (domain, vCPU, effective CPUs), in order.
    pub affinities: Vec<(DomId, u32, u64)>,
    /// Soft affinities set (domain, vCPU, CPUs as given), in order.
    pub soft_affinities: Vec<(DomId, u32, u64)>,
    /// Every `remote_shutdown`: (domain, reason).
    pub remote_shutdowns: Vec<(DomId, crate::domain::ShutdownReason)>,
    /// Every domain's grant table, by id.
    pub gnttab: FakeGnttab,
}

/// Grant tables by domain id.
#[derive(Clone, Debug, Default)]
pub(crate) struct FakeGnttab(pub BTreeMap<u16, crate::gnttab::GrantTable>);

impl crate::gnttab::GrantTables for FakeGnttab {
    fn get(&mut self, dom: DomId) -> Option<&mut crate::gnttab::GrantTable> {
        self.0.get_mut(&dom.0)
    }
    fn forget(&mut self, dom: DomId) {
        self.0.remove(&dom.0);
    }
}

/// The fake allocator's free frames, as a frame pool for grant tables.
pub(crate) struct FakePool<'a> {
    pub free: &'a mut BTreeSet<u64>,
    pub freed: &'a mut Vec<(u64, u64)>,
}

impl crate::gnttab::FramePool for FakePool<'_> {
    fn alloc_frame(&mut self) -> Option<Mfn> {
        let f = self.free.iter().next().copied()?;
        self.free.remove(&f);
        Some(Mfn(f))
    }
    fn free_frame(&mut self, mfn: Mfn) {
        self.freed.push((mfn.0, 1));
        assert!(self.free.insert(mfn.0), "frame {:#x} freed twice", mfn.0);
    }
}

/// Event-channel state of the fake machine's domains.
#[derive(Debug, Default)]
pub(crate) struct FakeEvtchn {
    /// By domain id: port table and shared_info.
    pub doms: BTreeMap<
        u16,
        (
            Box<crate::evtchn::EvtchnTable>,
            Box<hypercall_abi::xen::SharedInfo>,
        ),
    >,
}

/// Cloning gives an empty set (tables are large and tests never compare them).
impl Clone for FakeEvtchn {
    fn clone(&self) -> Self {
        FakeEvtchn::default()
    }
}

impl FakeEvtchn {
    /// Adds domain `id` with a fresh table (dom0-like limits).
    pub fn add(&mut self, id: u16) {
        let cfg = crate::evtchn::EvtchnConfig {
            max_port: crate::evtchn::UNLIMITED_MAX_PORT,
            nr_vcpus: 1,
        };
        let mut si: Box<hypercall_abi::xen::SharedInfo> =
            Box::new(zerocopy::FromZeros::new_zeroed());
        for v in si.vcpu_info.iter_mut() {
            v.evtchn_upcall_mask = 0;
        }
        self.doms.insert(
            id,
            (
                Box::new(crate::evtchn::EvtchnTable::new(DomId(id), cfg)),
                si,
            ),
        );
    }
}

impl crate::evtchn::Domains for FakeEvtchn {
    type Bits<'a> = &'a mut hypercall_abi::xen::SharedInfo;

    fn get(
        &mut self,
        dom: DomId,
    ) -> Option<crate::evtchn::DomainEvtchn<'_, &mut hypercall_abi::xen::SharedInfo>> {
        let (t, si) = self.doms.get_mut(&dom.0)?;
        Some(crate::evtchn::DomainEvtchn {
            table: t,
            bits: &mut **si,
            controller_paused: false,
        })
    }

    #[allow(clippy::type_complexity)]
    fn get_pair(
        &mut self,
        a: DomId,
        b: DomId,
    ) -> Option<(
        crate::evtchn::DomainEvtchn<'_, &mut hypercall_abi::xen::SharedInfo>,
        crate::evtchn::DomainEvtchn<'_, &mut hypercall_abi::xen::SharedInfo>,
    )> {
        if a == b {
            return None;
        }
        let mut it = self
            .doms
            .iter_mut()
            .filter(|(id, _)| **id == a.0 || **id == b.0);
        let (ida, (ta, sa)) = it.next()?;
        let (_, (tb, sb)) = it.next()?;
        let x = crate::evtchn::DomainEvtchn {
            table: ta,
            bits: &mut **sa,
            controller_paused: false,
        };
        let y = crate::evtchn::DomainEvtchn {
            table: tb,
            bits: &mut **sb,
            controller_paused: false,
        };
        Some(if *ida == a.0 { (x, y) } else { (y, x) })
    }
}

/// A small machine for the memory model: 4096 frames, all free.
pub(crate) struct MmWorld {
    pub ft: FrameTable<'static>,
    pub mem: FakeMem,
    pub m2p: FakeM2p,
}

impl std::fmt::Debug for MmWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MmWorld")
    }
}

/// Cloning gives a fresh machine (the frame table cannot be copied).
impl Clone for MmWorld {
    fn clone(&self) -> Self {
        MmWorld::default()
    }
}

impl Default for MmWorld {
    fn default() -> Self {
        let frames: &'static mut [FrameInfo] =
            Box::leak(vec![FrameInfo::default(); 4096].into_boxed_slice());
        MmWorld {
            ft: FrameTable::new(frames),
            mem: FakeMem::default(),
            m2p: FakeM2p::default(),
        }
    }
}

/// Machine memory as page-table entries.
#[derive(Default)]
pub(crate) struct FakeMem {
    pub frames: BTreeMap<u64, Box<[u64; 512]>>,
}

impl MachineMemory for FakeMem {
    fn read_entry(&self, mfn: Mfn, index: usize) -> u64 {
        self.frames.get(&mfn.0).map_or(0, |f| f[index % 512])
    }
    fn write_entry(&mut self, mfn: Mfn, index: usize, val: u64) {
        self.frames
            .entry(mfn.0)
            .or_insert_with(|| Box::new([0; 512]))[index % 512] = val;
    }
    fn zero_page(&mut self, mfn: Mfn) {
        self.frames.insert(mfn.0, Box::new([0; 512]));
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        let f = self
            .frames
            .get(&src.0)
            .cloned()
            .unwrap_or_else(|| Box::new([0; 512]));
        self.frames.insert(dst.0, f);
    }
}

/// The M2P as a map.
#[derive(Default)]
pub(crate) struct FakeM2p(pub BTreeMap<u64, u64>);

impl M2p for FakeM2p {
    fn get(&self, mfn: Mfn) -> u64 {
        self.0.get(&mfn.0).copied().unwrap_or(!0)
    }
    fn set(&mut self, mfn: Mfn, pfn: u64) {
        self.0.insert(mfn.0, pfn);
    }
}

/// The hypervisor's L4 slots: empty here.
pub(crate) struct NoSlots;

impl HypervisorSlots for NoSlots {
    fn l4_entry(&self, _slot: usize) -> u64 {
        0
    }
}

/// The domains of [`FakePlatform::others`] exist (none by default); a privileged
/// caller is privileged over every domain (Xen's control domain).
pub(crate) struct LoneHooks {
    /// Other domains that exist.
    pub existing: Vec<DomId>,
    /// The caller, if it is privileged.
    pub control: Option<DomId>,
}

impl MmHooks for LoneHooks {
    fn domain_exists(&self, dom: DomId) -> bool {
        self.existing.contains(&dom)
    }
    fn privileged_over(&self, caller: DomId, _target: DomId) -> bool {
        self.control == Some(caller)
    }
    fn io_caps(&self, _dom: DomId) -> bool {
        false
    }
    fn flush_for_type_change(&mut self, _owner: DomId, _mfn: Mfn) {}
    fn check_descriptor(&self, _owner: DomId, desc: u64, _next: u64) -> bool {
        crate::descriptor::is_audited(desc)
    }
}

impl Default for FakePlatform {
    fn default() -> Self {
        FakePlatform {
            pages: BTreeMap::new(),
            mm: MmWorld::default(),
            tlb_flushes: Vec::new(),
            gdt_loads: Vec::new(),
            ldt_loads: Vec::new(),
            ldt_area: LDT_AREA,
            pool: BTreeSet::new(),
            freed: Vec::new(),
            max_page: 4096,
            m2p_chunks: Vec::new(),
            host_map: Vec::new(),
            others: BTreeMap::new(),
            upcall_pending: BTreeMap::new(),
            evtchn: FakeEvtchn::default(),
            evtchn_self: 0,
            kicks: Vec::new(),
            irqs: {
                let mut t = Box::new(crate::pirq::IrqTable::new());
                t.init(24, 1, crate::testutil::qemu_gsi_mode, &[4]);
                t
            },
            chip: FakeIrqChip::default(),
            timer_changes: 0,
            siblings_changed: Vec::new(),
            affinities: Vec::new(),
            soft_affinities: Vec::new(),
            remote_shutdowns: Vec::new(),
            gnttab: FakeGnttab::default(),
            kernel_space: true,
            console: Vec::new(),
            masks: BTreeMap::new(),
            shared_cr2: BTreeMap::new(),
            vcpu_info_moves: Vec::new(),
            ports: BTreeMap::new(),
            port_writes: Vec::new(),
            pci_space: BTreeMap::new(),
            pci_writes: Vec::new(),
            pci: crate::pci::PciState::new(),
            mmio_ro: Vec::new(),
            mmcfg_writes: Vec::new(),
            iomem: crate::iomem::IomemTable::new(),
            console_ring: Vec::new(),
            destroyed: Vec::new(),
            busy_elsewhere: 0,
            other_vcpus: BTreeMap::new(),
            frame_writes: Vec::new(),
            host_msrs: BTreeMap::new(),
            load_mode_calls: Vec::new(),
            cpuid: BTreeMap::new(),
            // PE, MP, ET, NE, WP, PG
            cr0: 0x8005_0033,
            // PAE, PGE, OSFXSR, OSXMMEXCPT, FSGSBASE, OSXSAVE, SMEP
            cr4: 0x0015_06A0,
            xfeature_mask: 0x7,
            msr_commands: core::cell::RefCell::new(Vec::new()),
            xcr0: 0,
            tsc: 0x0123_4567_89AB_CDEF,
            dr6: crate::debugreg::DR6_DEFAULT,
            cmdline: String::from("console=com1 loglvl=all"),
            now: 0,
        }
    }
}

impl FakePlatform {
    /// Maps the pages covering `[va, va + len)` (zero-filled, or keeping their contents
    /// if already mapped) with `perm`, visible in both modes.
    pub fn map(&mut self, va: u64, len: u64, perm: Perm) {
        self.map_in(va, len, perm, Space::Both);
    }

    /// As [`map`](Self::map), choosing the address space.
    pub fn map_in(&mut self, va: u64, len: u64, perm: Perm, space: Space) {
        if len == 0 {
            return;
        }
        let first = va & !(PAGE - 1);
        let last = va.saturating_add(len - 1) & !(PAGE - 1);
        let mut pg = first;
        loop {
            let page = self.pages.entry(pg).or_insert_with(|| Page {
                data: vec![0; PAGE as usize],
                perm,
                space,
            });
            page.perm = perm;
            page.space = space;
            if pg >= last {
                break;
            }
            pg += PAGE;
        }
    }

    /// Removes the page containing `va`.
    pub fn unmap(&mut self, va: u64) {
        self.pages.remove(&(va & !(PAGE - 1)));
    }

    /// Changes the permission of the page containing `va` (which must be mapped).
    pub fn protect(&mut self, va: u64, perm: Perm) {
        self.pages
            .get_mut(&(va & !(PAGE - 1)))
            .expect("protect: unmapped page")
            .perm = perm;
    }

    fn byte(&self, va: u64, write: bool) -> Option<(u64, usize)> {
        let pg = va & !(PAGE - 1);
        let page = self.pages.get(&pg)?;
        if write && page.perm != Perm::ReadWrite {
            return None;
        }
        if !self.kernel_space && page.space == Space::KernelOnly {
            return None;
        }
        Some((pg, (va - pg) as usize))
    }

    /// Test-side write that ignores permissions and modes (the page must be mapped).
    pub fn poke(&mut self, va: u64, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            let a = va.wrapping_add(i as u64);
            let pg = a & !(PAGE - 1);
            let page = self
                .pages
                .get_mut(&pg)
                .unwrap_or_else(|| panic!("poke: {a:#x} unmapped"));
            page.data[(a - pg) as usize] = b;
        }
    }

    /// Test-side read that ignores permissions and modes (the page must be mapped).
    pub fn peek(&self, va: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let a = va.wrapping_add(i);
                let pg = a & !(PAGE - 1);
                let page = self
                    .pages
                    .get(&pg)
                    .unwrap_or_else(|| panic!("peek: {a:#x} unmapped"));
                page.data[(a - pg) as usize]
            })
            .collect()
    }

    /// Writes an object (test side).
    pub fn poke_obj<T: IntoBytes + Immutable>(&mut self, va: u64, t: &T) {
        self.poke(va, t.as_bytes());
    }

    /// Reads an object (test side).
    pub fn peek_obj<T: FromBytes>(&self, va: u64) -> T {
        T::read_from_bytes(&self.peek(va, size_of::<T>())).expect("size")
    }

    /// Reads `n` little-endian qwords (test side).
    pub fn peek_u64s(&self, va: u64, n: usize) -> Vec<u64> {
        (0..n)
            .map(|i| self.peek_obj::<u64>(va + 8 * i as u64))
            .collect()
    }

    /// The upcall mask of `vcpu`.
    pub fn set_upcall_mask_for_test(&mut self, vcpu: u32, mask: u8) {
        self.masks.insert(vcpu, mask);
    }

    pub fn mask(&self, vcpu: u32) -> u8 {
        self.masks.get(&vcpu).copied().unwrap_or(0)
    }

    /// Console lines of all domains, as strings (lossy).
    pub fn console_text(&self) -> Vec<String> {
        self.console
            .iter()
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
}

impl Platform for FakePlatform {
    type Mem = FakeMem;
    type Slots = NoSlots;
    type M2pTable = FakeM2p;
    type Hooks = LoneHooks;

    fn mm<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(&mut MmCtx<'_, '_, FakeMem, NoSlots, FakeM2p, LoneHooks>) -> R,
    ) -> R {
        let w = &mut self.mm;
        let mut hooks = LoneHooks {
            // The domain acted on exists, and so do the others.
            existing: self
                .others
                .keys()
                .map(|&d| DomId(d))
                .chain(core::iter::once(dom))
                .collect(),
            control: privileged.then_some(dom),
        };
        let mut ctx = MmCtx {
            ft: &mut w.ft,
            mem: &mut w.mem,
            slots: &NoSlots,
            m2p: &mut w.m2p,
            hooks: &mut hooks,
            dom,
            privileged,
            io_caps: false,
            linear_pt: true,
        };
        f(&mut ctx)
    }

    fn flush_tlb(&mut self, kind: FlushKind, all_cpus: bool) {
        self.tlb_flushes.push((kind, all_cpus));
    }

    fn flush_cache(&mut self, _all_cpus: bool) {}

    fn load_gdt(&mut self, vcpu: &crate::vcpu::Vcpu) {
        self.gdt_loads
            .push(vcpu.gdt_frames.iter().map(|m| m.0).collect());
    }

    fn load_ldt(&mut self, vcpu: &crate::vcpu::Vcpu) {
        let frames = vcpu.ldt_frames.iter().map(|f| f.map(|m| m.0)).collect();
        self.ldt_loads.push((vcpu.ldt_ents, frames));
    }

    fn ldt_area_offset(&self, va: u64) -> Option<u64> {
        let off = va.checked_sub(self.ldt_area)?;
        (off < 1 << 16).then_some(off)
    }

    fn read_guest_raw(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = va.wrapping_add(i as u64);
            let (pg, off) = self.byte(a, false).ok_or(GuestFault { va: a })?;
            *b = self.pages[&pg].data[off];
        }
        Ok(())
    }

    fn write_guest_raw(&mut self, va: u64, buf: &[u8]) -> Result<(), GuestFault> {
        // Check the whole range first, so a refused write changes nothing.
        for i in 0..buf.len() as u64 {
            let a = va.wrapping_add(i);
            self.byte(a, true).ok_or(GuestFault { va: a })?;
        }
        for (i, &b) in buf.iter().enumerate() {
            let a = va.wrapping_add(i as u64);
            let (pg, off) = self.byte(a, true).ok_or(GuestFault { va: a })?;
            self.pages.get_mut(&pg).expect("checked").data[off] = b;
        }
        Ok(())
    }

    fn console_line(&mut self, dom: DomId, line: &[u8]) {
        self.console.push((dom, line.to_vec()));
    }

    fn upcall_mask(&self, vcpu: u32) -> u8 {
        self.mask(vcpu)
    }

    fn set_upcall_mask(&mut self, vcpu: u32, mask: u8) {
        self.masks.insert(vcpu, mask);
    }

    fn create_domain(
        &mut self,
        spec: &crate::hypercall::domctl::CreateSpec,
    ) -> Result<DomId, crate::hypercall::HvError> {
        let id = match spec.id {
            Some(id) if self.others.contains_key(&id.0) => return Err(Errno::EEXIST.into()),
            Some(id) => id,
            None => (1..crate::hypercall::domctl::DOMID_FIRST_RESERVED)
                .map(DomId)
                .find(|d| !self.others.contains_key(&d.0))
                .ok_or(Errno::ENOMEM)?,
        };
        let mut d = crate::domain::Domain::new(id, false, Mfn(0x900 + u64::from(id.0)));
        d.pause_count = 1;
        d.toolstack = true;
        d.handle = spec.handle;
        self.others.insert(id.0, d);
        self.other_vcpus
            .insert(id.0, crate::vcpu::Vcpu::new(0, Mfn(0)));
        Ok(id)
    }

    fn domain_summary(&mut self, at: DomId) -> Option<crate::hypercall::domctl::DomainSummary> {
        let now = self.now;
        let (_, d) = self.others.range(at.0..).next()?;
        let mut s = crate::hypercall::domctl::DomainSummary::of(d, [].iter(), now, false);
        s.nr_vcpus = 1;
        Some(s)
    }

    fn destroy_domain(&mut self, id: DomId) -> Result<Progress, crate::hypercall::HvError> {
        if !self.others.contains_key(&id.0) {
            return Err(Errno::ESRCH.into());
        }
        if self.busy_elsewhere > 0 {
            self.busy_elsewhere -= 1;
            return Ok(Progress::Again);
        }
        self.others.remove(&id.0);
        self.destroyed.push(id);
        Ok(Progress::Done)
    }

    fn pause_domain(&mut self, id: DomId) -> Result<Progress, crate::hypercall::HvError> {
        let d = self.others.get_mut(&id.0).ok_or(Errno::ESRCH)?;
        if !d.pausing {
            d.pause_count += 1;
        }
        d.pausing = self.busy_elsewhere > 0;
        if d.pausing {
            self.busy_elsewhere -= 1;
            return Ok(Progress::Again);
        }
        Ok(Progress::Done)
    }

    fn unpause_domain(&mut self, id: DomId) -> Result<(), crate::hypercall::HvError> {
        let d = self.others.get_mut(&id.0).ok_or(Errno::ESRCH)?;
        d.pause_count = d.pause_count.checked_sub(1).ok_or(Errno::EINVAL)?;
        Ok(())
    }

    fn set_max_pages(&mut self, id: DomId, pages: u64) -> Result<(), crate::hypercall::HvError> {
        self.others.get_mut(&id.0).ok_or(Errno::ESRCH)?.max_pages = pages;
        Ok(())
    }

    fn with_vcpu<R>(
        &mut self,
        id: DomId,
        vcpu: u32,
        f: impl FnOnce(&mut Domain, &mut crate::vcpu::Vcpu) -> R,
    ) -> Option<R> {
        let d = self.others.get_mut(&id.0)?;
        let v = self.other_vcpus.get_mut(&id.0).filter(|v| v.id == vcpu)?;
        Some(f(d, v))
    }

    fn write_frame(&mut self, mfn: Mfn, offset: usize, bytes: &[u8]) {
        self.frame_writes.push((mfn, offset, bytes.to_vec()));
    }

    fn cpu_physid(&self, cpu: u32) -> u64 {
        // APIC ids from 0x10 up, ACPI ids from 0.
        u64::from(cpu + 0x10) | (u64::from(cpu) << 32)
    }

    fn physinfo(&self) -> hypercall_abi::domctl::SysctlPhysinfo {
        hypercall_abi::domctl::SysctlPhysinfo {
            nr_cpus: 1,
            cpu_khz: 2_000_000,
            total_pages: 4096,
            free_pages: 1000,
            max_mfn: 4095,
            ..Default::default()
        }
    }

    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> (usize, u32) {
        let start = from.map_or(0, |i| i as usize).min(self.console_ring.len());
        let n = buf.len().min(self.console_ring.len() - start);
        buf[..n].copy_from_slice(&self.console_ring[start..start + n]);
        (n, (start + n) as u32)
    }

    fn clear_console(&mut self) {
        self.console_ring.clear();
    }

    fn port_in(&mut self, port: u16, bytes: u8) -> u32 {
        let v = self.ports.get(&port).copied().unwrap_or(0x5A5A_5A5A);
        v & crate::ioport::all_ones(bytes)
    }

    fn port_out(&mut self, port: u16, bytes: u8, value: u32) {
        self.port_writes.push((port, bytes, value));
    }

    fn pci_conf_read(&mut self, cf8: u32, offset: u8, bytes: u8) -> u32 {
        assert!(u32::from(offset) + u32::from(bytes) <= 4);
        let dword = if crate::pci::cf8_enabled(cf8) {
            self.pci_space.get(&(cf8 & !3)).copied().unwrap_or(u32::MAX)
        } else {
            u32::MAX
        };
        (dword >> (8 * u32::from(offset))) & crate::ioport::all_ones(bytes)
    }

    fn pci_conf_write(&mut self, cf8: u32, offset: u8, bytes: u8, data: u32) {
        assert!(u32::from(offset) + u32::from(bytes) <= 4);
        self.pci_writes.push((cf8, offset, bytes, data));
        if let Some(d) = self.pci_space.get_mut(&(cf8 & !3)) {
            let shift = 8 * u32::from(offset);
            let mask = crate::ioport::all_ones(bytes) << shift;
            *d = (*d & !mask) | ((data << shift) & mask);
        }
    }

    fn pci<R>(&mut self, f: impl FnOnce(&mut crate::pci::PciState) -> R) -> R {
        f(&mut self.pci)
    }

    fn mmio_ro(&mut self, first: u64, last: u64, ro: bool) {
        self.mmio_ro.push((first, last, ro));
    }

    fn mmcfg_write(&mut self, pa: u64, size: u8, value: u32) {
        self.mmcfg_writes.push((pa, size, value));
    }

    fn iomem_permitted(&mut self, dom: DomId, first: u64, last: u64) -> bool {
        self.iomem.permits(dom, first, last)
    }

    fn iomem_permission(
        &mut self,
        dom: DomId,
        first: u64,
        last: u64,
        allow: bool,
    ) -> Result<(), crate::ioport::TooManyRanges> {
        self.iomem.change(dom, first, last, allow)
    }

    fn move_vcpu_info(&mut self, vcpu: u32, mfn: crate::mm::Mfn, offset: u32) {
        self.vcpu_info_moves.push((vcpu, mfn, offset));
        self.upcall_pending.insert(vcpu, true);
    }

    fn set_shared_cr2(&mut self, vcpu: u32, cr2: u64) {
        self.shared_cr2.insert(vcpu, cr2);
    }

    fn upcall_pending(&self, vcpu: u32) -> bool {
        self.upcall_pending.get(&vcpu).copied().unwrap_or(false)
    }

    fn evtchn_op(
        &mut self,
        caller: &crate::evtchn::Caller,
        req: crate::evtchn::EvtchnRequest,
    ) -> Result<crate::evtchn::EvtchnReply, crate::evtchn::EvtchnError> {
        crate::evtchn::dispatch(&mut self.evtchn, caller, req)
    }

    fn evtchn_poll(
        &mut self,
        vcpu: hypercall_abi::types::VcpuId,
        ports: &[hypercall_abi::types::EvtchnPort],
    ) -> Result<bool, crate::evtchn::EvtchnError> {
        let id = self.evtchn_self;
        let Some((t, si)) = self.evtchn.doms.get(&id) else {
            return Err(crate::evtchn::EvtchnError::NoSuchDomain(DomId(id)));
        };
        t.poll(&**si, vcpu, ports)
    }

    fn kick(&mut self, kick: crate::evtchn::Kick) {
        self.kicks.push(kick);
    }

    fn irqs<R>(
        &mut self,
        f: impl FnOnce(&mut crate::pirq::IrqTable, &mut dyn crate::pirq::IrqChip) -> R,
    ) -> R {
        f(&mut self.irqs, &mut self.chip)
    }

    fn timers_changed(&mut self) {
        self.timer_changes += 1;
    }

    fn set_hard_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<u64, hypercall_abi::Errno> {
        // Two CPUs run guests here.
        let eff = cpus & 0b11;
        if eff == 0 {
            return Err(hypercall_abi::Errno::EINVAL);
        }
        self.affinities.push((dom, vcpu, eff));
        Ok(eff)
    }

    fn set_soft_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<(), hypercall_abi::Errno> {
        self.soft_affinities.push((dom, vcpu, cpus));
        Ok(())
    }

    fn sibling_changed(&mut self, vcpu: u32) {
        self.siblings_changed.push(vcpu);
    }

    fn remote_shutdown(&mut self, id: DomId, reason: crate::domain::ShutdownReason) -> bool {
        if self.others.contains_key(&id.0) {
            self.remote_shutdowns.push((id, reason));
            true
        } else {
            false
        }
    }

    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.get(&(leaf, subleaf)).copied().unwrap_or([0; 4])
    }

    fn control_regs(&self) -> (u64, u64) {
        (self.cr0, self.cr4)
    }

    fn xfeature_mask(&self) -> u64 {
        self.xfeature_mask
    }

    fn load_user_gs_sel(&mut self, sel: u16) -> (u16, u64) {
        // Only Xen's flat selectors load here (all with base 0).
        use hypercall_abi::xen::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_SS64};
        let sel = if sel & !3 == 0 { 0 } else { sel | 3 };
        if [FLAT_RING3_SS64, FLAT_RING3_CS64, FLAT_RING3_CS32].contains(&sel) {
            (sel, 0)
        } else {
            (0, 0)
        }
    }

    fn msr_command(&self, msr: u32, value: u64) {
        self.msr_commands.borrow_mut().push((msr, value));
    }

    fn set_xcr0(&mut self, xcr0: u64) {
        self.xcr0 = xcr0;
    }

    fn take_debug_status(&mut self) -> u64 {
        core::mem::replace(&mut self.dr6, crate::debugreg::DR6_DEFAULT)
    }

    fn now_ns(&self) -> u64 {
        self.now
    }

    fn tsc(&self) -> u64 {
        self.tsc
    }

    fn rdmsr_safe(&self, msr: u32) -> Option<u64> {
        self.host_msrs.get(&msr).copied()
    }

    fn hv_cmdline(&self) -> &str {
        &self.cmdline
    }

    fn gnttab<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(
            &mut MmCtx<'_, '_, FakeMem, NoSlots, FakeM2p, LoneHooks>,
            &mut dyn crate::gnttab::GrantTables,
            &mut dyn crate::gnttab::FramePool,
        ) -> R,
    ) -> R {
        let FakePlatform {
            mm: w,
            gnttab,
            pool,
            freed,
            others,
            ..
        } = self;
        let mut hooks = LoneHooks {
            existing: others
                .keys()
                .map(|&d| DomId(d))
                .chain(gnttab.0.keys().map(|&d| DomId(d)))
                .chain(core::iter::once(dom))
                .collect(),
            control: privileged.then_some(dom),
        };
        let mut ctx = MmCtx {
            ft: &mut w.ft,
            mem: &mut w.mem,
            slots: &NoSlots,
            m2p: &mut w.m2p,
            hooks: &mut hooks,
            dom,
            privileged,
            io_caps: false,
            linear_pt: true,
        };
        let mut fp = FakePool { free: pool, freed };
        f(&mut ctx, gnttab, &mut fp)
    }

    fn load_mode(&mut self, vcpu: &Vcpu) {
        self.kernel_space = vcpu.kernel_mode;
        self.load_mode_calls
            .push((vcpu.kernel_mode, vcpu.active_gs_base(), vcpu.fs_base));
    }

    fn alloc_frames(&mut self, order: u32, below: Option<Mfn>) -> Option<Mfn> {
        let n = 1u64 << order;
        let first = self.pool.iter().copied().find(|&f| {
            f % n == 0
                && below.is_none_or(|b| f + n <= b.0)
                && (f..f + n).all(|g| self.pool.contains(&g))
        })?;
        for g in first..first + n {
            self.pool.remove(&g);
        }
        Some(Mfn(first))
    }

    fn free_frames(&mut self, first: Mfn, count: u64) {
        self.freed.push((first.0, count));
        for g in first.0..first.0 + count {
            assert!(self.pool.insert(g), "frame {g:#x} freed twice");
        }
    }

    fn max_page(&self) -> u64 {
        self.max_page
    }

    fn m2p_chunk(&self, index: u64) -> Option<Mfn> {
        self.m2p_chunks.get(index as usize).copied().map(Mfn)
    }

    fn host_e820(&self, index: usize) -> Option<E820Entry> {
        self.host_map.get(index).copied()
    }

    fn with_domain<R>(&mut self, id: DomId, f: impl FnOnce(&mut Domain) -> R) -> Option<R> {
        self.others.get_mut(&id.0).map(f)
    }
}

// The guest's address-space layout in the tests.

/// Guest kernel text (mapped RW so tests can place instructions).
pub(crate) const KTEXT: u64 = 0xFFFF_FFFF_8000_0000;
/// Where kernel-mode instructions under test sit.
pub(crate) const KRIP: u64 = KTEXT + 0x1000;
/// Top of the stack the guest kernel runs on when interrupted in kernel mode.
pub(crate) const KSTACK_TOP: u64 = 0xFFFF_FFFF_8010_0000;
/// Top of the `stack_switch` stack (kernel-only mapping).
pub(crate) const KSP: u64 = 0xFFFF_FFFF_8020_0000;
/// Not mapped anywhere in the test guest.
pub(crate) const UNMAPPED: u64 = 0x0000_0000_6000_0000;

/// A guest pointer to `va`.
pub(crate) const fn ptr<T>(va: u64) -> hypercall_abi::types::GuestPtr<T> {
    hypercall_abi::types::GuestPtr::new(va)
}

/// The error result of a hypercall, as the typed wrappers return it.
pub(crate) const E: fn(hypercall_abi::Errno) -> Result<u64, hypercall_abi::Errno> = Err;

/// Kernel data page (hypercall arguments).
pub(crate) const KDATA: u64 = 0xFFFF_FFFF_8030_0000;
/// Handlers live here: `handler(v)` for vector/callback `v`.
pub(crate) const HANDLERS: u64 = 0xFFFF_FFFF_8100_0000;
/// Guest user text.
pub(crate) const UTEXT: u64 = 0x0000_0000_0040_0000;
/// Where user-mode instructions under test sit.
pub(crate) const URIP: u64 = UTEXT + 0x100;
/// Top of the user stack.
pub(crate) const USTACK_TOP: u64 = 0x0000_7FFF_FFFF_0000;
/// Kernel page-table root of the test vCPU.
pub(crate) const KROOT: Mfn = Mfn(0x1234);
/// User page-table root of the test vCPU.
pub(crate) const UROOT: Mfn = Mfn(0x5678);

/// The handler address used for vector (or callback number) `v`.
pub(crate) const fn handler(v: u64) -> u64 {
    HANDLERS + v * 0x40
}

/// A domain, one of its vCPUs, the saved registers of an entry and the machine: what a
/// [`GuestCtx`] is made of.
#[derive(Debug)]
pub(crate) struct World {
    pub p: FakePlatform,
    pub dom: Domain,
    pub vcpu: Vcpu,
    /// The domain's other vCPUs (none unless a test adds them).
    pub siblings: Vec<Vcpu>,
    pub regs: Regs,
    /// Outcome of the last [`World::run`] / [`Invoke::invoke`].
    pub outcome: Outcome,
}

impl World {
    /// dom`id` (privileged iff `privileged`), vCPU 0 in virtual kernel mode, interrupted
    /// at [`KRIP`] on the kernel stack; kernel text, stacks and data mapped; upcalls
    /// unmasked; no trap table.
    pub fn new(id: u16, privileged: bool) -> World {
        let mut p = FakePlatform::default();
        p.map(KTEXT, 0x4000, Perm::ReadWrite);
        p.map(KSTACK_TOP - 0x4000, 0x4000, Perm::ReadWrite);
        p.map_in(KSP - 0x4000, 0x4000, Perm::ReadWrite, Space::KernelOnly);
        p.map(KDATA, 0x4000, Perm::ReadWrite);
        p.map(UTEXT, 0x2000, Perm::ReadWrite);
        p.map(USTACK_TOP - 0x2000, 0x2000, Perm::ReadWrite);
        let mut dom = Domain::new(DomId(id), privileged, Mfn(0x99));
        dom.state = crate::domain::DomainState::Running;
        let mut vcpu = Vcpu::new(0, KROOT);
        vcpu.online = true;
        vcpu.initialised = true;
        let regs = Regs {
            rax: 0xAAAA_0000,
            rbx: 0xBBBB_0000,
            rcx: 0xCCCC_0000,
            rdx: 0xDDDD_0000,
            rsi: 0x5151_0000,
            rdi: 0xD1D1_0000,
            rbp: 0xB0B0_0000,
            r8: 0x0808_0000,
            r9: 0x0909_0000,
            r10: 0x1010_0000,
            r11: 0x1111_0000,
            r12: 0x1212_0000,
            r13: 0x1313_0000,
            r14: 0x1414_0000,
            r15: 0x1515_0000,
            vector: 0,
            error_code: 0,
            rip: KRIP,
            cs: u64::from(FLAT_KERNEL_CS),
            rflags: rflags::IF | rflags::FIXED,
            rsp: KSTACK_TOP - 0x208,
            ss: u64::from(FLAT_KERNEL_SS),
        };
        World {
            p,
            dom,
            vcpu,
            siblings: Vec::new(),
            regs,
            outcome: Outcome::Resume,
        }
    }

    /// An ordinary domU (dom1) interrupted in virtual kernel mode.
    pub fn kernel() -> World {
        World::new(1, false)
    }

    /// dom0 interrupted in virtual kernel mode.
    pub fn dom0() -> World {
        World::new(0, true)
    }

    /// A domU interrupted in virtual user mode at [`URIP`] on the user stack, with user
    /// page tables and a `stack_switch` stack at [`KSP`].
    pub fn user() -> World {
        let mut w = World::kernel();
        w.vcpu.kernel_mode = false;
        w.vcpu.user_root = Some(UROOT);
        w.vcpu.kernel_sp = KSP;
        w.vcpu.kernel_ss = FLAT_KERNEL_SS;
        w.p.kernel_space = false;
        w.regs.rip = URIP;
        w.regs.cs = u64::from(FLAT_USER_CS);
        w.regs.ss = u64::from(FLAT_USER_SS);
        w.regs.rsp = USTACK_TOP - 0x118;
        w
    }

    /// A context for one entry.
    pub fn ctx(&mut self) -> GuestCtx<'_, FakePlatform> {
        GuestCtx::new(&mut self.p, &mut self.dom, &mut self.vcpu, &mut self.regs)
            .with_siblings(crate::traps::Siblings::of(&mut self.siblings))
    }

    /// Runs `f` on a fresh context, records and returns its outcome with `f`'s result.
    pub fn run<R>(&mut self, f: impl FnOnce(&mut GuestCtx<'_, FakePlatform>) -> R) -> (R, Outcome) {
        let mut ctx = self.ctx();
        let r = f(&mut ctx);
        let outcome = ctx.outcome;
        self.outcome = outcome;
        (r, outcome)
    }

    /// An exception or software interrupt `vector` (error code `error`) taken at the
    /// current registers; returns the outcome.
    pub fn exception(&mut self, vector: u8, error: u64, cr2: u64) -> Outcome {
        self.regs.vector = u64::from(vector);
        self.regs.error_code = error;
        self.run(|c| c.guest_exception(cr2)).1
    }

    /// A SYSCALL from virtual user mode at the current RIP: the entry path's registers
    /// (RCX = return RIP, R11 = RFLAGS, flat user selectors); returns the outcome.
    pub fn syscall_from_user(&mut self) -> Outcome {
        self.regs.rcx = self.regs.rip;
        self.regs.r11 = self.regs.rflags;
        self.regs.cs = u64::from(FLAT_USER_CS);
        self.regs.ss = u64::from(FLAT_USER_SS);
        self.regs.vector = SYSCALL_VECTOR;
        self.regs.error_code = 0;
        self.run(|c| c.user_syscall()).1
    }

    /// Installs trap-table entry `vector` directly (handler [`handler`]`(vector)`).
    pub fn set_trap(&mut self, vector: u8, dpl: u8, disable_events: bool) {
        self.vcpu.traps[usize::from(vector)] = hypercall_abi::xen::TrapInfo::new(
            vector,
            dpl,
            disable_events,
            FLAT_KERNEL_CS,
            handler(u64::from(vector)),
        );
    }

    /// Places instruction bytes at the current RIP.
    pub fn code(&mut self, bytes: &[u8]) {
        let rip = self.regs.rip;
        self.p.poke(rip, bytes);
    }

    /// The qwords of the bounce frame at the current RSP (`n` of them).
    pub fn frame(&self, n: usize) -> Vec<u64> {
        self.p.peek_u64s(self.regs.rsp, n)
    }
}

/// Hypercalls as a guest kernel issues them: the registers are loaded from the typed
/// wrapper's images, the SYSCALL entry is simulated (RIP past a `syscall` at [`KRIP`]),
/// [`GuestCtx::hypercall`] runs, and `rax` is what the guest sees.
impl Invoke for World {
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64 {
        self.regs.rax = nr;
        self.regs.set_hypercall_args(args);
        self.regs.rip = KRIP + 2;
        self.regs.rcx = self.regs.rip;
        self.regs.r11 = self.regs.rflags;
        self.regs.vector = SYSCALL_VECTOR;
        self.regs.error_code = 0;
        self.run(|c| c.hypercall());
        self.regs.rax
    }
}

/// Re-executes the `syscall` a continuation rewound RIP to (as the guest CPU would).
pub(crate) fn reissue(w: &mut World) -> u64 {
    assert_eq!(w.regs.rip, KRIP, "a continuation leaves RIP on the syscall");
    w.regs.rip += 2;
    w.regs.vector = SYSCALL_VECTOR;
    w.run(|c| c.hypercall());
    w.regs.rax
}

/// QEMU `pc`'s GSI modes: ISA edge/high, PCI level/low.
pub(crate) fn qemu_gsi_mode(g: u32) -> (crate::ioapic::Trigger, crate::ioapic::Polarity) {
    use crate::ioapic::{Polarity, Trigger};
    if g < 16 {
        (Trigger::Edge, Polarity::High)
    } else {
        (Trigger::Level, Polarity::Low)
    }
}

/// An IO-APIC as the tests see it: which GSIs are unmasked, and the EOI-bitmap
/// bits written.
#[derive(Clone, Debug, Default)]
pub struct FakeIrqChip {
    /// Unmasked GSIs.
    pub unmasked: std::collections::BTreeSet<u32>,
    /// Every EOI-bitmap write: (frame, pirq, set).
    pub eoi_bits: Vec<(u64, u32, bool)>,
    /// Every setup: (gsi, trigger, polarity).
    pub programmed: Vec<(u32, crate::ioapic::Trigger, crate::ioapic::Polarity)>,
}

impl crate::pirq::IrqChip for FakeIrqChip {
    fn program(&mut self, irq: u32, t: crate::ioapic::Trigger, p: crate::ioapic::Polarity) {
        self.programmed.push((irq, t, p));
        self.unmasked.remove(&irq);
    }
    fn mask(&mut self, irq: u32) {
        self.unmasked.remove(&irq);
    }
    fn unmask(&mut self, irq: u32) {
        self.unmasked.insert(irq);
    }
    fn eoi_bit(&mut self, map: Mfn, pirq: u32, set: bool) {
        self.eoi_bits.push((map.0, pirq, set));
    }
}
