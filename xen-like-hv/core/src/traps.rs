//! Delivering exceptions, software interrupts and user-mode SYSCALLs to a PV guest:
//! Xen's bounce frame on the guest kernel stack (digest §6.1-§6.4), and the outcome of
//! any guest entry.

use crate::emulate::{self, Emulation};
use crate::platform::Platform;
use crate::regs::{Regs, rflags};
use crate::vcpu::Vcpu;
use core::fmt;
use hypercall_abi::vm_assist::VmAssistType;
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

/// Exception vectors for which the CPU (and so the bounce frame) carries an error code.
pub const HAS_ERROR_CODE: [u8; 10] = [8, 10, 11, 12, 13, 14, 17, 21, 29, 30];
/// #DB.
pub const DB: u8 = 1;
/// #UD.
pub const UD: u8 = 6;
/// Non-maskable interrupt (`VCPUOP_send_nmi`).
pub const NMI: u8 = 2;
/// #GP.
pub const GP: u8 = 13;
/// #PF.
pub const PF: u8 = 14;
/// The software interrupt the hypervisor lets through its own DPL-3 gate.
pub const INT80: u8 = 0x80;
/// #PF error code: the page was present (a protection fault).
const PFEC_PRESENT: u64 = 1 << 0;
/// #PF error code: the access was a write.
const PFEC_WRITE: u64 = 1 << 1;
/// #PF error code: the access was made in user mode.
const PFEC_USER: u64 = 1 << 2;
/// #PF error code: a reserved bit was set in a paging entry.
const PFEC_RESERVED: u64 = 1 << 3;
/// #PF error code: an instruction fetch.
const PFEC_INSN: u64 = 1 << 4;
/// Selector error code bits: external event, IDT, LDT (TI).
const SEL_EXT: u64 = 1;
const SEL_IDT: u64 = 2;
const SEL_TI: u64 = 4;

/// Why the hypervisor crashed a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashReason {
    /// An exception the guest has no handler for.
    NoHandler {
        /// Vector.
        vector: u8,
        /// Where it happened.
        rip: u64,
    },
    /// The bounce frame could not be written (bad guest stack).
    BadStack {
        /// The stack pointer the frame was to go below.
        rsp: u64,
    },
    /// A bounce from user mode with no kernel stack (`stack_switch` never called).
    NoKernelStack,
    /// `iret` to user mode before `MMUEXT_NEW_USER_BASEPTR`.
    NoUserPageTables,
    /// The `iret` frame could not be read.
    BadIretFrame {
        /// Where it was to be read.
        rsp: u64,
    },
    /// The `iret` frame's code selector is neither a flat ring-3 one nor an entry of
    /// the guest's own GDT or LDT (a hypervisor selector such as `0xe008`, say).
    BadIretCs {
        /// The selector the frame held.
        cs: u16,
    },
    /// The `iret` frame's stack selector is neither the flat ring-3 one nor an entry of
    /// the guest's own GDT or LDT.
    BadIretSs {
        /// The selector the frame held.
        ss: u16,
    },
    /// The `iret` frame's return address is not canonical.
    BadIretRip {
        /// The address the frame held.
        rip: u64,
    },
    /// An exception while the guest was being entered (for example a bad segment).
    EntryFault {
        /// Vector.
        vector: u8,
    },
}

impl fmt::Display for CrashReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CrashReason::NoHandler { vector, rip } => {
                write!(
                    f,
                    "no handler for {} (vector {vector}) at rip {rip:#x}",
                    mnemonic(vector)
                )
            }
            CrashReason::BadStack { rsp } => {
                write!(f, "cannot write an exception frame below rsp {rsp:#x}")
            }
            CrashReason::NoKernelStack => {
                write!(
                    f,
                    "entry from user mode without a kernel stack (stack_switch)"
                )
            }
            CrashReason::NoUserPageTables => {
                write!(
                    f,
                    "iret to user mode without user page tables (NEW_USER_BASEPTR)"
                )
            }
            CrashReason::BadIretFrame { rsp } => write!(f, "unreadable iret frame at {rsp:#x}"),
            CrashReason::BadIretCs { cs } => {
                write!(f, "iret with an unusable code selector {cs:#x}")
            }
            CrashReason::BadIretSs { ss } => {
                write!(f, "iret with an unusable stack selector {ss:#x}")
            }
            CrashReason::BadIretRip { rip } => {
                write!(f, "iret to a non-canonical address {rip:#x}")
            }
            CrashReason::EntryFault { vector } => {
                write!(f, "{} while entering the guest", mnemonic(vector))
            }
        }
    }
}

/// The mnemonic of an exception vector (`#PF`), or `int` for others.
pub fn mnemonic(vector: u8) -> &'static str {
    const NAMES: [&str; 22] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF?", "#TS", "#NP", "#SS",
        "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP",
    ];
    NAMES.get(usize::from(vector)).copied().unwrap_or("int")
}

/// What the hypervisor must do after handling an entry from a guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Return to the guest with the (possibly rewritten) registers.
    Resume,
    /// A hypercall replaced the registers wholesale (`iret`, continuations): do not
    /// store a return value in `rax`.
    RegsReplaced,
    /// The domain asked to stop.
    Shutdown(crate::domain::ShutdownReason),
    /// The hypervisor crashes the domain.
    Crash(CrashReason),
    /// The vCPU yields the CPU.
    Yield,
    /// The vCPU waits (`SCHEDOP_block`, `SCHEDOP_poll`; see [`Vcpu::wait`]): run
    /// something else until it is woken.
    Block,
    /// The vCPU went down (`VCPUOP_down` of itself): run something else until
    /// another vCPU brings it up.
    Down,
}

/// The state a guest entry is handled against.
pub struct GuestCtx<'a, P: Platform> {
    /// The machine.
    pub p: &'a mut P,
    /// The domain.
    pub dom: &'a mut crate::domain::Domain,
    /// The running vCPU.
    pub vcpu: &'a mut Vcpu,
    /// Its registers, as saved on entry and restored on exit.
    pub regs: &'a mut Regs,
    /// The domain's other vCPUs.
    pub siblings: Siblings<'a>,
    /// Set by handlers that do more than return a value.
    pub outcome: Outcome,
}

/// The vCPUs of a domain other than the running one, borrowed beside it (for the
/// `vcpu_op`s that name another vCPU and for domain-wide counts).
#[derive(Debug, Default)]
pub struct Siblings<'a> {
    left: &'a mut [Vcpu],
    right: &'a mut [Vcpu],
}

impl<'a> Siblings<'a> {
    /// vCPU `i` of `vcpus`, and the others beside it.
    #[inline]
    pub fn split(vcpus: &'a mut [Vcpu], i: usize) -> Option<(&'a mut Vcpu, Siblings<'a>)> {
        let (left, rest) = vcpus.split_at_mut(i);
        let (me, right) = rest.split_first_mut()?;
        Some((me, Siblings { left, right }))
    }

    /// Siblings kept apart from the running vCPU (tests).
    pub fn of(others: &'a mut [Vcpu]) -> Self {
        Siblings {
            left: others,
            right: &mut [],
        }
    }

    /// The sibling with id `id`.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Vcpu> {
        self.left
            .iter_mut()
            .chain(self.right.iter_mut())
            .find(|v| v.id == id)
    }

    /// Every sibling.
    pub fn iter(&self) -> impl Iterator<Item = &Vcpu> + Clone {
        self.left.iter().chain(self.right.iter())
    }
}

impl<P: Platform> fmt::Debug for GuestCtx<'_, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuestCtx")
            .field("dom", &self.dom.id)
            .field("vcpu", &self.vcpu.id)
            .finish()
    }
}

/// Switches the vCPU's virtual mode and has the platform load the matching page
/// tables and GS base, so that later guest accesses see the new address space.
pub fn set_kernel_mode<P: Platform>(p: &mut P, vcpu: &mut Vcpu, kernel: bool) {
    if vcpu.kernel_mode != kernel {
        // The GS base of the mode being left is kept as the CPU has it.
        p.live_bases(vcpu);
        vcpu.kernel_mode = kernel;
        p.load_mode(vcpu);
    }
}

impl<'a, P: Platform> GuestCtx<'a, P> {
    /// A context for handling one entry.
    pub fn new(
        p: &'a mut P,
        dom: &'a mut crate::domain::Domain,
        vcpu: &'a mut Vcpu,
        regs: &'a mut Regs,
    ) -> Self {
        GuestCtx {
            p,
            dom,
            vcpu,
            regs,
            siblings: Siblings::default(),
            outcome: Outcome::Resume,
        }
    }

    /// The context with the domain's other vCPUs at hand.
    #[inline]
    pub fn with_siblings(mut self, siblings: Siblings<'a>) -> Self {
        self.siblings = siblings;
        self
    }

    /// Builds Xen's bounce frame on the guest kernel stack and points the vCPU at
    /// `handler` (digest §6.4). From user mode this switches to kernel mode and the
    /// `stack_switch` stack first.
    pub fn bounce(
        &mut self,
        handler: u64,
        error: Option<u64>,
        mask_events: bool,
        clear_df: bool,
    ) -> Result<(), CrashReason> {
        let extra = error.map(|e| [e]);
        self.bounce_with(
            handler,
            extra.as_ref().map_or(&[], |e| e),
            mask_events,
            clear_df,
        )
    }

    /// Xen's failsafe callback (`load_segments`), due when a data selector of the vCPU
    /// did not load as it was switched in: a bounce frame with its four intended
    /// selectors (%ds, %es, %fs, %gs) between R11 and RIP, to the failsafe address,
    /// masking events if it was registered so.
    pub fn failsafe_callback(&mut self) -> Result<(), CrashReason> {
        let sels = self.vcpu.sels.map(u64::from);
        let cb = self.vcpu.callbacks.failsafe;
        self.bounce_with(cb.address, &sels, cb.mask_events, false)
    }

    /// [`Self::bounce`] with `extra` words (an error code, or the failsafe selectors)
    /// between R11 and RIP.
    fn bounce_with(
        &mut self,
        handler: u64,
        extra: &[u64],
        mask_events: bool,
        clear_df: bool,
    ) -> Result<(), CrashReason> {
        let vid = self.vcpu.id;
        let saved_mask = self.p.upcall_mask(vid);
        let from_kernel = self.vcpu.kernel_mode;
        let (stack, ss) = if from_kernel {
            (self.regs.rsp, self.regs.ss)
        } else {
            if self.vcpu.kernel_sp == 0 {
                return Err(CrashReason::NoKernelStack);
            }
            set_kernel_mode(self.p, self.vcpu, true);
            (self.vcpu.kernel_sp, self.regs.ss)
        };
        let cs = if from_kernel {
            self.regs.cs & !3
        } else {
            self.regs.cs
        };
        let mut guest_flags = self.regs.rflags & !(rflags::IF | rflags::IOPL);
        if saved_mask == 0 {
            guest_flags |= rflags::IF;
        }
        if self.dom.assist(VmAssistType::ArchitecturalIopl as u32) {
            guest_flags |= u64::from(self.vcpu.iopl & 3) << 12;
        }
        let mut words = [0u64; 12];
        let mut n = 0;
        let mut push = |w: u64| {
            if let Some(slot) = words.get_mut(n) {
                *slot = w;
                n += 1;
            }
        };
        push(self.regs.rcx);
        push(self.regs.r11);
        for &e in extra {
            push(e);
        }
        push(self.regs.rip);
        push(cs | (u64::from(saved_mask) << hypercall_abi::xen::arch::BOUNCE_SAVED_MASK_SHIFT));
        push(guest_flags);
        push(self.regs.rsp);
        push(ss);
        let frame = words.get(..n).unwrap_or(&words);
        let len = (frame.len() * 8) as u64;
        let Some(new_rsp) = (stack & !15).checked_sub(len) else {
            return Err(CrashReason::BadStack { rsp: stack });
        };
        let bytes = zerocopy::IntoBytes::as_bytes(frame);
        if self.p.write_guest(new_rsp, bytes).is_err() {
            return Err(CrashReason::BadStack { rsp: stack });
        }
        if mask_events {
            self.p.set_upcall_mask(vid, 1);
        }
        self.regs.rip = handler;
        self.regs.cs = u64::from(FLAT_KERNEL_CS);
        self.regs.ss = u64::from(FLAT_KERNEL_SS);
        self.regs.rsp = new_rsp;
        let mut clear = rflags::TF | rflags::NT | rflags::RF | rflags::VM | rflags::AC;
        if clear_df {
            clear |= rflags::DF;
        }
        self.regs.rflags = (self.regs.rflags & !clear) | rflags::IF | rflags::FIXED;
        Ok(())
    }

    /// Delivers exception `vector` through the guest's trap table; no handler crashes
    /// the domain. `cr2` is the faulting address for #PF.
    pub fn deliver_exception(
        &mut self,
        vector: u8,
        error: Option<u64>,
        cr2: u64,
    ) -> Result<(), CrashReason> {
        let trap = self.vcpu.traps[usize::from(vector)];
        if trap.address == 0 {
            return Err(CrashReason::NoHandler {
                vector,
                rip: self.regs.rip,
            });
        }
        let mut error = error;
        if vector == PF {
            self.vcpu.cr2 = cr2;
            self.p.set_shared_cr2(self.vcpu.id, cr2);
            // The U bit reports the *virtual* mode: the CPU saw ring 3 either way.
            error = error.map(|e| if self.vcpu.kernel_mode { e & !4 } else { e | 4 });
        }
        self.bounce(trap.address, error, trap.disables_events(), false)
    }

    /// Handles an exception or software interrupt taken in guest context.
    pub fn guest_exception(&mut self, cr2: u64) {
        let vector = (self.regs.vector & 0xFF) as u8;
        let result = match vector {
            DB => {
                let hw = self.p.take_debug_status();
                self.vcpu.debug.note_debug_exception(hw);
                self.deliver_exception(DB, None, 0)
            }
            UD => match emulate::forced_cpuid(self) {
                Emulation::Done => self.instruction_done(),
                Emulation::InvalidOpcode | Emulation::NotEmulated => {
                    self.deliver_exception(UD, None, 0)
                }
            },
            GP => self.general_protection(),
            PF if let Some(offset) = self.ldt_area_fault(cr2) => self.ldt_fault(offset),
            PF if self.read_only_mmio_store(cr2) => self.instruction_done(),
            PF if self.page_table_store(cr2) => self.instruction_done(),
            INT80 => {
                if self.vcpu.traps[usize::from(INT80)].address != 0 {
                    let t = self.vcpu.traps[usize::from(INT80)];
                    self.bounce(t.address, None, t.disables_events(), false)
                } else {
                    // As if the gate had refused it: #GP pointing at the instruction.
                    self.regs.rip = self.regs.rip.wrapping_sub(2);
                    self.deliver_exception(GP, Some(u64::from(INT80) << 3 | 2), 0)
                }
            }
            v if v < 32 => {
                let error = HAS_ERROR_CODE.contains(&v).then_some(self.regs.error_code);
                self.deliver_exception(v, error, cr2)
            }
            // Hardware interrupts never reach here; other software vectors fault as #GP.
            v => self.deliver_exception(GP, Some(u64::from(v) << 3 | 2), 0),
        };
        if let Err(reason) = result {
            self.outcome = Outcome::Crash(reason);
        }
    }

    /// A #PF that is the hardware domain's kernel storing to a read-only MMIO mapping
    /// (Xen's `fixup_page_fault` -> `pv_ro_page_fault` -> `mmio_ro_do_page_fault`): a
    /// write to a present page, not an instruction fetch or a reserved bit, whose
    /// kernel mapping is a read-only entry for such a frame. If the store is one
    /// [`emulate::mmio_ro_store`] takes, it is dropped and RIP moves past it.
    fn read_only_mmio_store(&mut self, cr2: u64) -> bool {
        let err = self.regs.error_code;
        if !self.dom.privileged
            || !self.vcpu.kernel_mode
            || err & (PFEC_PRESENT | PFEC_WRITE) != PFEC_PRESENT | PFEC_WRITE
            || err & (PFEC_RESERVED | PFEC_INSN) != 0
        {
            return false;
        }
        let root = self.vcpu.kernel_root;
        let (dom, privileged) = (self.dom.id, self.dom.privileged);
        let frame = self.p.mm(dom, privileged, |m| {
            crate::mm::mmu::read_only_mmio_frame(m, root, cr2)
        });
        frame.is_some_and(|f| emulate::mmio_ro_store(self, cr2, f.0) == Emulation::Done)
    }

    /// A #PF that is the guest's kernel writing one of its own in-use L1 tables
    /// through a read-only mapping (Xen's `fixup_page_fault` -> `pv_ro_page_fault` ->
    /// `ptwr_do_page_fault`): a write to a present page, not an instruction fetch or a
    /// reserved bit, by a domain with `VMASST_TYPE_writable_pagetables` on, or by the
    /// hardware domain whatever its assists (Xen sends every such fault of the hardware
    /// domain to `pv_ro_page_fault` for its read-only MMIO, which takes L1 stores
    /// too). If [`emulate::ptwr_store`] takes it, the entry is updated and RIP moves
    /// past it.
    fn page_table_store(&mut self, cr2: u64) -> bool {
        let err = self.regs.error_code;
        let assist = hypercall_abi::vm_assist::VmAssistType::WritablePagetables as u32;
        self.vcpu.kernel_mode
            && err & (PFEC_PRESENT | PFEC_WRITE) == PFEC_PRESENT | PFEC_WRITE
            && err & (PFEC_RESERVED | PFEC_INSN) == 0
            && (self.dom.assist(assist) || self.dom.privileged)
            && emulate::ptwr_store(self, cr2) == Emulation::Done
    }

    /// The offset into the LDT of a #PF that is the CPU reading the vCPU's LDT through
    /// the hypervisor's LDT area (an implicit supervisor read: no user or
    /// reserved-bit error), as Xen's `fixup_page_fault` tells it from other faults.
    fn ldt_area_fault(&self, cr2: u64) -> Option<u64> {
        let err = self.regs.error_code;
        if err & (PFEC_USER | PFEC_RESERVED) != 0 {
            return None;
        }
        self.p.ldt_area_offset(cr2)
    }

    /// The CPU needed the LDT page holding byte `offset` (Xen's
    /// `handle_ldt_mapping_fault`): map it ([`crate::mm::mmu::map_ldt_page`]) and run
    /// the instruction again. If the page cannot be an LDT page (not mapped, not the
    /// guest's, writable elsewhere, a descriptor the audit refuses), the guest gets a
    /// #PF at `ldt_base + offset`, or #GP(selector) if that address is not canonical.
    pub fn ldt_fault(&mut self, offset: u64) -> Result<(), CrashReason> {
        let mut vm = self.vcpu_mm();
        let (dom, privileged) = (self.dom.id, self.dom.privileged);
        let mapped = self.p.mm(dom, privileged, |m| {
            crate::mm::mmu::map_ldt_page(m, &mut vm, offset)
        });
        if mapped.is_ok() {
            // Even when the page was already recorded (mapped on another CPU, say),
            // this CPU's area must show it now.
            self.vcpu.ldt_frames = vm.ldt_frames;
            self.p.load_ldt(self.vcpu);
            return Ok(());
        }
        let linear = self.vcpu.ldt_base.wrapping_add(offset);
        if crate::regs::is_canonical(linear) {
            self.deliver_exception(PF, Some(self.regs.error_code), linear)
        } else {
            // The selector's index and TI bit, as the CPU would report it.
            let sel = (offset & !(SEL_EXT | SEL_IDT)) | SEL_TI;
            self.deliver_exception(GP, Some(sel & 0xFFFF), 0)
        }
    }

    fn general_protection(&mut self) -> Result<(), CrashReason> {
        let err = self.regs.error_code;
        if err & 2 != 0 {
            // `int n` through a DPL-0 gate: the guest's own DPL decides.
            let n = ((err >> 3) & 0xFF) as u8;
            let dpl = self.vcpu.traps[usize::from(n)].dpl();
            let allowed = if self.vcpu.kernel_mode {
                dpl >= 1
            } else {
                dpl == 3
            };
            if allowed && self.vcpu.traps[usize::from(n)].address != 0 {
                if let Some(len) = emulate::int_n_length(self, n) {
                    self.regs.rip = self.regs.rip.wrapping_add(len);
                    let t = self.vcpu.traps[usize::from(n)];
                    return self.bounce(t.address, None, t.disables_events(), false);
                }
            }
            return self.deliver_exception(GP, Some(err), 0);
        }
        // Xen emulates from either mode: the virtual IOPL decides for `cli`, `sti` and
        // port I/O in user mode; the rest stays a #GP there (`emulate::privileged`).
        if err == 0 {
            match emulate::privileged(self) {
                Emulation::Done => return self.instruction_done(),
                Emulation::InvalidOpcode => return self.deliver_exception(UD, None, 0),
                Emulation::NotEmulated => {}
            }
        }
        self.deliver_exception(GP, Some(err), 0)
    }

    /// The hypervisor completed an instruction for the guest (emulated it, or served
    /// the hypercall its SYSCALL made): if the guest ran it with RFLAGS.TF, the
    /// single-step trap the hardware would have raised after it, with DR6.BS (Xen's
    /// `pv_emul_instruction_done`, and what its SYSRET back to a stepping guest
    /// causes).
    pub fn instruction_done(&mut self) -> Result<(), CrashReason> {
        if self.regs.rflags & rflags::TF == 0 {
            return Ok(());
        }
        self.vcpu.debug.note_single_step();
        self.deliver_exception(DB, None, 0)
    }

    /// On the way back to the guest (Xen's `test_guest_events`): if an event needs
    /// delivery (`evtchn_upcall_pending` set and `evtchn_upcall_mask` clear) and the
    /// guest has an event callback, bounces to it with events masked. Returns whether
    /// it did; a bad guest stack crashes the domain.
    pub fn deliver_events(&mut self) -> bool {
        if self.vcpu.nmi_pending && !self.vcpu.nmi_masked && !self.deliver_nmi() {
            return false;
        }
        let vid = self.vcpu.id;
        let cb = self.vcpu.callbacks.event;
        if cb.address == 0 || self.p.upcall_mask(vid) != 0 || !self.p.upcall_pending(vid) {
            return false;
        }
        match self.bounce(cb.address, None, true, false) {
            Ok(()) => true,
            Err(reason) => {
                self.outcome = Outcome::Crash(reason);
                false
            }
        }
    }

    /// A pending NMI, first on the way back to the guest (Xen's `process_nmi`): it
    /// bounces to the guest's vector 2 (`set_trap_table`, or the NMI callback), with
    /// events masked if that entry says so, and further NMIs wait until the guest's
    /// next `iret`. Without a handler the NMI is dropped, as Xen drops it. Returns
    /// false if a bad guest stack crashed the domain.
    #[cold]
    fn deliver_nmi(&mut self) -> bool {
        self.vcpu.nmi_pending = false;
        let t = self.vcpu.traps[usize::from(NMI)];
        if t.address == 0 {
            return true;
        }
        self.vcpu.nmi_masked = true;
        match self.bounce(t.address, None, t.disables_events(), false) {
            Ok(()) => true,
            Err(reason) => {
                self.outcome = Outcome::Crash(reason);
                false
            }
        }
    }

    /// A SYSCALL from guest user mode: to the syscall callback, or #UD at the SYSCALL
    /// instruction when there is none (digest §6.2).
    pub fn user_syscall(&mut self) {
        let cb = self.vcpu.callbacks.syscall;
        let result = if cb.address == 0 {
            self.regs.rip = self.regs.rip.wrapping_sub(2);
            self.deliver_exception(UD, None, 0)
        } else {
            self.bounce(cb.address, None, cb.mask_events, true)
        };
        if let Err(reason) = result {
            self.outcome = Outcome::Crash(reason);
        }
    }
}

#[cfg(test)]
mod tests;
