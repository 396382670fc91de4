//! What the portable handlers need from the machine. The hypervisor binary implements
//! it on hardware; tests implement it over plain memory.

use crate::domain::Domain;
use crate::mm::Mfn;
use crate::mm::mmu::FlushKind;
use crate::mm::page_type::{HypervisorSlots, M2p, MachineMemory, MmCtx, MmHooks};
use crate::regs::is_guest_range;
use hypercall_abi::memory::E820Entry;
use hypercall_abi::types::DomId;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Whether a control operation on another domain finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Done.
    Done,
    /// Another CPU still runs the domain (it has been asked to switch away): the
    /// caller issues the hypercall again, as Xen continues a domctl that returned
    /// -ERESTART.
    Again,
}

/// A guest address that could not be read or written (unmapped, read-only, or not
/// the guest's to name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFault {
    /// The guest virtual address of the access.
    pub va: u64,
}

/// The machine, as the portable hypervisor code sees it. All guest addresses are
/// virtual addresses in the current vCPU's address space.
pub trait Platform {
    /// Machine memory as the memory model sees it.
    type Mem: MachineMemory;
    /// The hypervisor's L4 slots.
    type Slots: HypervisorSlots;
    /// The M2P table.
    type M2pTable: M2p;
    /// Domain lookup, TLB shoot-down, descriptor audit.
    type Hooks: MmHooks;

    /// Runs `f` on the memory model (frame table, machine memory, M2P) for domain
    /// `dom`, under the hypervisor's memory lock.
    fn mm<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(&mut MmCtx<'_, '_, Self::Mem, Self::Slots, Self::M2pTable, Self::Hooks>) -> R,
    ) -> R;
    /// Runs `f` on the memory model for domain `dom` (as [`Platform::mm`]) together
    /// with every domain's grant table and the frame pool, under the grant-table lock
    /// and then the memory lock.
    fn gnttab<R>(
        &mut self,
        dom: DomId,
        privileged: bool,
        f: impl FnOnce(
            &mut MmCtx<'_, '_, Self::Mem, Self::Slots, Self::M2pTable, Self::Hooks>,
            &mut dyn crate::gnttab::GrantTables,
            &mut dyn crate::gnttab::FramePool,
        ) -> R,
    ) -> R;
    /// Flushes this domain's TLB entries: on this CPU, or on every CPU it ran on.
    fn flush_tlb(&mut self, kind: FlushKind, all_cpus: bool);
    /// Flushes the TLBs of the current domain's other vCPUs whose bits are set in
    /// `vcpus` (bit n: vCPU n; `MMUEXT_TLB_FLUSH_MULTI`, `MMUEXT_INVLPG_MULTI`,
    /// `UVMF_MULTI`), before it returns. By default nothing: a platform that runs
    /// one vCPU per domain.
    fn flush_tlb_siblings(&mut self, kind: FlushKind, vcpus: u64) {
        let _ = (kind, vcpus);
    }
    /// `WBINVD` on this CPU, or on every CPU.
    fn flush_cache(&mut self, all_cpus: bool);
    /// Makes the vCPU's GDT frames (`vcpu.gdt_frames`) the first pages of the GDT the
    /// CPU uses, read-only, with the hypervisor's reserved page after them.
    fn load_gdt(&mut self, vcpu: &crate::vcpu::Vcpu);
    /// Makes the CPU's LDT the vCPU's: LDTR null when `vcpu.ldt_ents` is 0, else the
    /// hypervisor's LDT area with limit `ldt_ents * 8 - 1`, whose pages map exactly
    /// `vcpu.ldt_frames` (read-write for the CPU, never for the guest) and are absent
    /// elsewhere, so that the CPU's first read of another page faults
    /// ([`Platform::ldt_area_offset`]).
    fn load_ldt(&mut self, vcpu: &crate::vcpu::Vcpu);
    /// The byte offset into the running vCPU's LDT of `va`, if `va` lies in this
    /// CPU's LDT area (a #PF there is the CPU reading a descriptor not mapped yet).
    fn ldt_area_offset(&self, va: u64) -> Option<u64>;

    /// Copies guest memory into `buf`. Implementations may assume the range was checked
    /// with [`is_guest_range`] (the wrappers below do it).
    fn read_guest_raw(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault>;
    /// Copies `buf` into guest memory, through the guest's own mappings (so read-only
    /// guest mappings refuse the write).
    fn write_guest_raw(&mut self, va: u64, buf: &[u8]) -> Result<(), GuestFault>;
    /// Prints one console line of domain `dom` (without newline).
    fn console_line(&mut self, dom: DomId, line: &[u8]);
    /// `vcpu_info[vcpu].evtchn_upcall_mask` of the current domain's shared_info.
    fn upcall_mask(&self, vcpu: u32) -> u8;
    /// Sets `vcpu_info[vcpu].evtchn_upcall_mask`.
    fn set_upcall_mask(&mut self, vcpu: u32, mask: u8);
    /// `vcpu_info[vcpu].evtchn_upcall_pending` of the current domain's shared_info.
    fn upcall_pending(&self, vcpu: u32) -> bool;
    /// Runs one event-channel operation for `caller` (the current domain) against
    /// every domain's port table and shared_info (`evtchn::dispatch`).
    fn evtchn_op(
        &mut self,
        caller: &crate::evtchn::Caller,
        req: crate::evtchn::EvtchnRequest,
    ) -> Result<crate::evtchn::EvtchnReply, crate::evtchn::EvtchnError>;
    /// The port test of `SCHEDOP_poll` for the current domain's `vcpu`
    /// (`EvtchnTable::poll`): `Ok(true)` = return at once.
    fn evtchn_poll(
        &mut self,
        vcpu: hypercall_abi::types::VcpuId,
        ports: &[hypercall_abi::types::EvtchnPort],
    ) -> Result<bool, crate::evtchn::EvtchnError>;
    /// Runs `f` on the machine's IRQ table and interrupt controller
    /// ([`crate::pirq`]), under the IRQ lock.
    fn irqs<R>(
        &mut self,
        f: impl FnOnce(&mut crate::pirq::IrqTable, &mut dyn crate::pirq::IrqChip) -> R,
    ) -> R;
    /// Acts on a [`Kick`](crate::evtchn::Kick): wakes the vCPU it names if it waits,
    /// and the domain's pollers of the port. A kick of the current vCPU needs nothing
    /// (the event is delivered on the way back to the guest).
    fn kick(&mut self, kick: crate::evtchn::Kick);
    /// The current vCPU's timers changed: the platform re-arms its timer interrupt.
    fn timers_changed(&mut self);
    /// Lets vCPU `vcpu` of domain `dom` (the current one included) run only on the
    /// CPUs in `cpus` (bit n: CPU n) that run guests; returns those (the effective
    /// hard affinity), or -EINVAL if there are none (nothing changes then). A CPU
    /// that runs the vCPU outside them switches it away.
    fn set_hard_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<u64, hypercall_abi::Errno>;
    /// Lets vCPU `vcpu` of domain `dom` (the current one included) prefer the CPUs in
    /// `cpus` (Xen's soft affinity; any map is taken, one with no CPU it may run on
    /// is no preference). It moves at its CPU's next schedule.
    fn set_soft_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        cpus: u64,
    ) -> Result<(), hypercall_abi::Errno>;
    /// vCPU `vcpu` of the current domain (not the current vCPU) changed: it came up,
    /// went down, was initialised, or its timers changed. After the entry the
    /// platform puts it on or off the run queue (it runs iff its domain runs, it is
    /// up and waits for nothing), makes a CPU that runs it switch away if it may no
    /// longer run, and has the CPU that keeps its timers re-arm.
    fn sibling_changed(&mut self, vcpu: u32);
    /// Shuts down domain `id` (not the current one) for `reason`
    /// (`SCHEDOP_remote_shutdown`); false if there is no such domain.
    fn remote_shutdown(&mut self, id: DomId, reason: crate::domain::ShutdownReason) -> bool;
    /// `VCPUOP_register_vcpu_info` took frame `mfn` for `vcpu`: copy its `vcpu_info`
    /// from where it is now to byte `offset` of `mfn`, use that copy from now on, and
    /// mark every event word pending there (`evtchn_upcall_pending` = 1,
    /// `evtchn_pending_sel` = all ones), as Xen does so that nothing is lost.
    fn move_vcpu_info(&mut self, vcpu: u32, mfn: crate::mm::Mfn, offset: u32);
    /// `XEN_DOMCTL_createdomain`: a new, empty domain, paused by the controller (pause
    /// count 1), with a shared_info frame and event channels; its id.
    fn create_domain(
        &mut self,
        spec: &crate::hypercall::domctl::CreateSpec,
    ) -> Result<DomId, crate::hypercall::HvError>;
    /// The first domain other than the current one with id >= `at`.
    fn domain_summary(&mut self, at: DomId) -> Option<crate::hypercall::domctl::DomainSummary>;
    /// `XEN_DOMCTL_destroydomain` of another domain: everything it holds is given
    /// back before the caller runs again; [`Progress::Again`] while another CPU
    /// still runs it. -ESRCH if there is no such domain.
    fn destroy_domain(&mut self, id: DomId) -> Result<Progress, crate::hypercall::HvError>;
    /// `XEN_DOMCTL_pausedomain` of another domain (-ESRCH if none): counted once,
    /// and done when none of its vCPUs runs any more ([`Progress::Again`] until then).
    fn pause_domain(&mut self, id: DomId) -> Result<Progress, crate::hypercall::HvError>;
    /// `XEN_DOMCTL_unpausedomain`: -EINVAL if it is not paused by the controller.
    fn unpause_domain(&mut self, id: DomId) -> Result<(), crate::hypercall::HvError>;
    /// `XEN_DOMCTL_max_mem` of another domain.
    fn set_max_pages(&mut self, id: DomId, pages: u64) -> Result<(), crate::hypercall::HvError>;
    /// Runs `f` on vCPU `vcpu` of another domain `id` and that domain; `None` if
    /// either does not exist.
    fn with_vcpu<R>(
        &mut self,
        id: DomId,
        vcpu: u32,
        f: impl FnOnce(&mut crate::domain::Domain, &mut crate::vcpu::Vcpu) -> R,
    ) -> Option<R>;
    /// Writes `bytes` at byte `offset` of machine frame `mfn` (the caller holds a
    /// writable type reference on it).
    fn write_frame(&mut self, mfn: crate::mm::Mfn, offset: usize, bytes: &[u8]);
    /// `XEN_SYSCTL_physinfo` as the machine has it.
    fn physinfo(&self) -> hypercall_abi::domctl::SysctlPhysinfo;
    /// CPU `cpu`'s APIC id, with its ACPI processor id in the high half (each all
    /// ones if there is no such CPU), as `VCPUOP_get_physid` reports it.
    fn cpu_physid(&self, _cpu: u32) -> u64 {
        u64::MAX
    }
    /// Copies the hypervisor's console ring into `buf` from index `from` (`None`:
    /// the oldest byte kept); returns (bytes copied, index after them).
    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> (usize, u32);
    /// Empties the console ring.
    fn clear_console(&mut self);
    /// Reads `bytes` (1, 2, 4) from I/O port `port` of the machine. Only called for
    /// ports the domain may reach (`crate::ioport`).
    fn port_in(&mut self, port: u16, bytes: u8) -> u32;
    /// Writes `bytes` of `value` to I/O port `port` (same rule).
    fn port_out(&mut self, port: u16, bytes: u8, value: u32);
    /// Xen's `pci_conf_read`: writes `cf8` to `CONFIG_ADDRESS`, then reads `bytes`
    /// (1, 2, 4) at `CONFIG_DATA + offset` (`offset + bytes <= 4`), with no other
    /// configuration access in between on any CPU (`crate::pci`).
    fn pci_conf_read(&mut self, cf8: u32, offset: u8, bytes: u8) -> u32;
    /// Xen's `pci_conf_write`: the same for a write of `data`.
    fn pci_conf_write(&mut self, cf8: u32, offset: u8, bytes: u8, data: u32);
    /// Runs `f` on the hypervisor's PCI state (devices reported by dom0, read-only
    /// devices, registers the hypervisor owns), under its lock.
    fn pci<R>(&mut self, f: impl FnOnce(&mut crate::pci::PciState) -> R) -> R;
    /// I/O frames `first..=last` become read-only for every guest mapping made from
    /// now on (Xen's `mmio_ro_ranges`), or one user fewer keeps them so.
    fn mmio_ro(&mut self, first: u64, last: u64, ro: bool);
    /// Writes `size` (1, 2, 4) bytes of configuration space at ECAM machine address
    /// `pa` (in an MMCONFIG region in use; Xen's `pci_mmcfg_write`).
    fn mmcfg_write(&mut self, pa: u64, size: u8, value: u32);
    /// Whether domain `dom` may map every I/O frame of `first..=last`
    /// (`crate::iomem`, Xen's `iomem_access_permitted`).
    fn iomem_permitted(&mut self, dom: DomId, first: u64, last: u64) -> bool;
    /// Grants (`allow`) or revokes `first..=last` of I/O memory for `dom`.
    fn iomem_permission(
        &mut self,
        dom: DomId,
        first: u64,
        last: u64,
        allow: bool,
    ) -> Result<(), crate::ioport::TooManyRanges>;
    /// Sets `vcpu_info[vcpu].arch.cr2`.
    fn set_shared_cr2(&mut self, vcpu: u32, cr2: u64);
    /// The host's CPUID leaf (the policy is applied by the caller).
    fn cpuid(&self, leaf: u32, subleaf: u32) -> [u32; 4];
    /// The real CR0 and CR4.
    fn control_regs(&self) -> (u64, u64);
    /// The XCR0 components a guest may enable (`xstate::hypervisor_mask`); 0 when the
    /// hypervisor does not use XSAVE.
    fn xfeature_mask(&self) -> u64;
    /// `SEGBASE_GS_USER_SEL`: loads `sel` (RPL forced to 3 unless NULL) into %gs for
    /// the running vCPU, NULL if it does not load; returns the selector loaded and the
    /// base it gave (the new user GS base). The kernel's GS base is untouched.
    fn load_user_gs_sel(&mut self, sel: u16) -> (u16, u64);
    /// Loads XCR0 for the running vCPU (after an emulated `xsetbv`).
    fn set_xcr0(&mut self, xcr0: u64);
    /// Reads the hardware DR6 after a `#DB` from the guest and puts it back to its
    /// default (`debugreg::DR6_DEFAULT`), so the next `#DB` reports only itself.
    fn take_debug_status(&mut self) -> u64;
    /// Nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// The CPU's time-stamp counter (what `rdtsc` in the guest would read).
    fn tsc(&self) -> u64;
    /// The host's value of `msr`, or `None` if reading it faults on this CPU (the
    /// few MSRs Xen forwards to a PV guest: `crate::msr`).
    fn rdmsr_safe(&self, msr: u32) -> Option<u64>;
    /// Writes `msr` on the CPU for the running vCPU, as `crate::msr::write` asks:
    /// `PRED_CMD`/`FLUSH_CMD` commands and the vCPU's new `SPEC_CTRL`.
    fn msr_command(&self, msr: u32, value: u64);
    /// The hypervisor's command line (for `XENVER_commandline`).
    fn hv_cmdline(&self) -> &str;
    /// Loads the page tables and GS base of the vCPU's current virtual mode (called
    /// when the mode changes, so that later guest accesses use the new address space).
    fn load_mode(&mut self, vcpu: &crate::vcpu::Vcpu);
    /// Brings the running vCPU's FS base and current-mode GS base up to date with the
    /// CPU's: the guest changes them without the hypervisor (a load of `%fs` or `%gs`,
    /// `wr{fs,gs}base`), so this is called before anything reads or changes them or
    /// switches its mode. Only the first call of an entry reads the CPU. The default
    /// does nothing (a platform whose guests cannot change them behind its back).
    fn live_bases(&mut self, _vcpu: &mut crate::vcpu::Vcpu) {}

    /// Reads guest memory after checking the range belongs to the guest.
    fn read_guest(&mut self, va: u64, buf: &mut [u8]) -> Result<(), GuestFault> {
        if !is_guest_range(va, buf.len() as u64) {
            return Err(GuestFault { va });
        }
        self.read_guest_raw(va, buf)
    }

    /// Writes guest memory after checking the range belongs to the guest.
    fn write_guest(&mut self, va: u64, buf: &[u8]) -> Result<(), GuestFault> {
        if !is_guest_range(va, buf.len() as u64) {
            return Err(GuestFault { va });
        }
        self.write_guest_raw(va, buf)
    }

    /// Reads a `T` from guest memory.
    fn read_obj<T: FromBytes + IntoBytes>(&mut self, va: u64) -> Result<T, GuestFault> {
        let mut t = T::new_zeroed();
        self.read_guest(va, t.as_mut_bytes())?;
        Ok(t)
    }

    /// Writes a `T` to guest memory.
    fn write_obj<T: IntoBytes + Immutable>(&mut self, va: u64, t: &T) -> Result<(), GuestFault> {
        self.write_guest(va, t.as_bytes())
    }

    // ---- memory_op (`hypercall::memory`) ---------------------------------------------

    /// Takes a free run of `2^order` machine frames (`order <= mm::MAX_ORDER`) out of
    /// the frame allocator, for `increase_reservation`/`populate_physmap` and the
    /// output extents of `XENMEM_exchange`. The first
    /// frame is a multiple of `2^order`; if `below` is given, every frame of the run is
    /// below it (a `mem_flags` address-width limit). Every frame must be
    /// `Owner::Free` in the frame table; the caller assigns, zeroes and accounts them.
    /// `None` if no such run is free (the caller's batch stops there, like Xen's failed
    /// `alloc_domheap_pages`); returning `None` is always allowed.
    fn alloc_frames(&mut self, order: u32, below: Option<Mfn>) -> Option<Mfn>;

    /// Gives the `count` frames `first..first + count` back to the frame allocator
    /// (not necessarily an aligned run: free them frame by frame). The caller has
    /// already released them in the frame table (`Owner::Free`, no reference left) and
    /// invalidated their M2P entries. Their old owner may still hold stale TLB entries
    /// (a guest may unmap a page without flushing), so no CPU may use any of them again
    /// before every CPU's TLB has been flushed after this call began: flush all CPUs
    /// once per call before (or while) freeing (Xen's TLB-flush timestamp check).
    fn free_frames(&mut self, first: Mfn, count: u64);

    /// Xen's `max_page`: one more than the highest machine frame number of RAM. It is
    /// `XENMEM_maximum_ram_page`'s answer, `max_mfn + 1` of `XENMEM_machphys_mapping`
    /// for the hardware domain, and the reference for `mem_flags` address widths.
    fn max_page(&self) -> u64;

    /// For `XENMEM_machphys_mfn_list`: the MFN of the first frame of the `index`th
    /// 2 MiB chunk backing the M2P table, i.e. of the chunk that holds the entries of
    /// MFNs `index << 18 .. (index + 1) << 18`; `None` past the last chunk (the chunks
    /// cover `max_page()` entries).
    fn m2p_chunk(&self, index: u64) -> Option<Mfn>;

    /// For `XENMEM_machine_memory_map`: entry `index` of the host's E820 map, sorted by
    /// address, as the firmware reported it (Xen's sanitised `e820`); `None` past the
    /// last entry.
    fn host_e820(&self, index: usize) -> Option<E820Entry>;

    /// Runs `f` on the record of domain `id` and returns its result; `None` if no such
    /// domain exists. `id` is never the current domain (the caller already holds that
    /// one). `memory_op` uses it when a caller privileged over `id` names it (a
    /// toolstack populating a new domain): it reads `max_pages`, `shared_info` and
    /// `memory_map` and adjusts `tot_pages`; `f` never calls back into the platform.
    fn with_domain<R>(&mut self, id: DomId, f: impl FnOnce(&mut Domain) -> R) -> Option<R>;
}
