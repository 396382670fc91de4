//! The hypercall handlers: `hypercall_abi::HypercallHandler` implemented on a guest
//! entry's [`GuestCtx`]. `hypercall_abi::dispatch` decodes the registers and turns
//! [`HvError`] into errno, the one place that happens.
//!
//! Families: [`cpu`] (traps, callbacks, stacks, segments, debug registers, `iret`),
//! [`misc`] (`xen_version`, `console_io`, `sched_op`, `vm_assist`, `physdev_op`),
//! [`memory`] (`memory_op`).

pub mod cpu;
pub mod desc;
pub mod domctl;
#[cfg(test)]
mod domctl_tests;
pub mod evtchn;
pub mod gnttab;
pub mod memory;
pub mod misc;
pub mod mm;
pub mod physdev;
pub mod physdev_irq;
pub mod sched;
pub mod vcpu;
pub mod vcpuctx;

use crate::platform::{GuestFault, Platform};
use crate::traps::{GuestCtx, Outcome};
use core::fmt;
use hypercall_abi::Errno;
use hypercall_abi::hypercall::{Hypercall, HypercallHandler};
use hypercall_abi::types::GuestPtr;
use hypercall_abi::xen::TrapInfo;

/// Why a hypercall failed, with what the log wants to know. Converted to errno only by
/// `hypercall_abi::dispatch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvError {
    /// A plain errno.
    Errno(Errno),
    /// Guest memory at this address could not be accessed (EFAULT).
    Fault(u64),
    /// A non-canonical address where a guest address is required (EINVAL).
    NonCanonical(u64),
    /// Needs privileges the caller lacks (EPERM).
    NotPrivileged,
    /// An event-channel operation was refused.
    Evtchn(crate::evtchn::EvtchnError),
}

impl From<crate::evtchn::EvtchnError> for HvError {
    fn from(e: crate::evtchn::EvtchnError) -> Self {
        HvError::Evtchn(e)
    }
}

impl From<Errno> for HvError {
    fn from(e: Errno) -> Self {
        HvError::Errno(e)
    }
}

impl From<GuestFault> for HvError {
    fn from(f: GuestFault) -> Self {
        HvError::Fault(f.va)
    }
}

impl From<HvError> for Errno {
    fn from(e: HvError) -> Errno {
        match e {
            HvError::Errno(e) => e,
            HvError::Fault(_) => Errno::EFAULT,
            HvError::NonCanonical(_) => Errno::EINVAL,
            HvError::NotPrivileged => Errno::EPERM,
            HvError::Evtchn(e) => e.into(),
        }
    }
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HvError::Errno(e) => write!(f, "{}", e.name().unwrap_or("error")),
            HvError::Fault(va) => write!(f, "cannot access guest memory at {va:#x}"),
            HvError::NonCanonical(va) => write!(f, "non-canonical address {va:#x}"),
            HvError::NotPrivileged => write!(f, "not privileged"),
            HvError::Evtchn(e) => write!(f, "event channel: {e}"),
        }
    }
}

/// Result of a handler.
pub type HvResult = Result<u64, HvError>;

/// The canonical address `va`, or EINVAL.
pub fn canonical(va: u64) -> Result<u64, HvError> {
    if crate::regs::is_canonical(va) {
        Ok(va)
    } else {
        Err(HvError::NonCanonical(va))
    }
}

impl<P: Platform> GuestCtx<'_, P> {
    /// Handles the hypercall in the saved registers and stores its result in `rax`
    /// (unless the hypercall replaced the registers).
    pub fn hypercall(&mut self) {
        let (nr, args) = self.regs.hypercall_args();
        // The floor call returns 0 (entry.s answers it without coming here unless the
        // guest single-steps or returns to a non-canonical address).
        let rax = if nr == hypercall_abi::xlhv::FLOOR_HYPERCALL {
            0
        } else {
            hypercall_abi::hypercall::dispatch(self, nr, args)
        };
        if self.outcome != Outcome::RegsReplaced {
            self.regs.rax = rax;
        }
        // A guest single-stepping over the SYSCALL gets its #DB after it, as Xen's
        // SYSRET with TF in RFLAGS gives (not for `iret` or a continuation, whose
        // registers are not the SYSCALL's). TF first: one flag test on the usual path.
        if self.regs.rflags & crate::regs::rflags::TF != 0
            && matches!(
                self.outcome,
                Outcome::Resume | Outcome::Block | Outcome::Down | Outcome::Yield
            )
        {
            if let Err(reason) = self.instruction_done() {
                self.outcome = Outcome::Crash(reason);
            }
        }
    }

    /// Makes the guest re-issue hypercall `nr` with `args` (Xen's continuation): the
    /// work done so far is kept and the rest is redone from the new arguments.
    pub fn continuation(&mut self, nr: Hypercall, args: [u64; 5]) -> HvResult {
        self.regs.rip = self.regs.rip.wrapping_sub(2);
        self.regs.rax = u64::from(nr.nr());
        self.regs.set_hypercall_args(args);
        self.outcome = Outcome::RegsReplaced;
        Ok(0)
    }
}

impl<P: Platform> HypercallHandler for GuestCtx<'_, P> {
    type Error = HvError;

    fn set_trap_table(&mut self, traps: GuestPtr<TrapInfo>) -> HvResult {
        cpu::set_trap_table(self, traps)
    }
    fn stack_switch(&mut self, ss: u64, sp: u64) -> HvResult {
        cpu::stack_switch(self, ss, sp)
    }
    fn set_callbacks(&mut self, event: u64, failsafe: u64, syscall: u64) -> HvResult {
        cpu::set_callbacks(self, event, failsafe, syscall)
    }
    fn callback_op(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        cpu::callback_op(self, cmd, arg)
    }
    fn nmi_op(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        cpu::nmi_op(self, cmd, arg)
    }
    fn fpu_taskswitch(&mut self, set: i32) -> HvResult {
        self.vcpu.fpu_ts = set != 0;
        Ok(0)
    }
    fn set_segment_base(&mut self, which: u32, base: u64) -> HvResult {
        cpu::set_segment_base(self, which, base)
    }
    fn set_debugreg(&mut self, reg: i32, value: u64) -> HvResult {
        let reg = u32::try_from(reg).map_err(|_| Errno::ENODEV)?;
        cpu::set_debugreg(self.vcpu, reg, value).map(|()| 0)
    }
    fn get_debugreg(&mut self, reg: i32) -> HvResult {
        let reg = u32::try_from(reg).map_err(|_| Errno::ENODEV)?;
        cpu::get_debugreg(self.vcpu, reg)
    }
    fn iret(&mut self) -> HvResult {
        cpu::iret(self)
    }
    fn xen_version(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        misc::xen_version(self, cmd, arg)
    }
    fn console_io(&mut self, cmd: u32, count: u32, buffer: GuestPtr<u8>) -> HvResult {
        misc::console_io(self, cmd, count, buffer)
    }
    fn sched_op(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        sched::sched_op(self, cmd, arg)
    }
    fn sched_op_compat(&mut self, cmd: u32, arg: u64) -> HvResult {
        sched::sched_op_compat(self, cmd, arg)
    }
    fn vm_assist(&mut self, cmd: u32, vmasst_type: u32) -> HvResult {
        misc::vm_assist(self, cmd, vmasst_type)
    }
    fn physdev_op(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        misc::physdev_op(self, cmd, arg)
    }
    fn update_va_mapping(&mut self, va: u64, val: u64, flags: u64) -> HvResult {
        mm::update_va_mapping(self, va, val, flags)
    }
    fn update_va_mapping_otherdomain(
        &mut self,
        va: u64,
        val: u64,
        flags: u64,
        domid: hypercall_abi::types::DomId,
    ) -> HvResult {
        mm::update_va_mapping_otherdomain(self, va, val, flags, domid)
    }
    fn mmu_update(
        &mut self,
        reqs: GuestPtr<hypercall_abi::mmu::MmuUpdate>,
        count: u32,
        pdone: GuestPtr<u32>,
        foreigndom: u32,
    ) -> HvResult {
        mm::mmu_update(self, reqs, count, pdone, foreigndom)
    }
    fn mmuext_op(
        &mut self,
        ops: GuestPtr<hypercall_abi::mmu::MmuextOp>,
        count: u32,
        pdone: GuestPtr<u32>,
        foreigndom: u32,
    ) -> HvResult {
        mm::mmuext_op(self, ops, count, pdone, foreigndom)
    }
    fn multicall(
        &mut self,
        list: GuestPtr<hypercall_abi::xen::MulticallEntry>,
        nr: u32,
    ) -> HvResult {
        mm::multicall(self, list, nr)
    }
    fn set_gdt(
        &mut self,
        frame_list: GuestPtr<hypercall_abi::types::Mfn>,
        entries: u32,
    ) -> HvResult {
        desc::set_gdt(self, frame_list, entries)
    }
    fn update_descriptor(&mut self, ma: hypercall_abi::types::MachineAddr, desc: u64) -> HvResult {
        desc::update_descriptor(self, ma, desc)
    }
    fn physdev_op_compat(
        &mut self,
        op: GuestPtr<hypercall_abi::physdev::PhysdevOpCompat>,
    ) -> HvResult {
        misc::physdev_op_compat(self, op)
    }
    fn grant_table_op(&mut self, cmd: u32, uop: GuestPtr<()>, count: u32) -> HvResult {
        gnttab::grant_table_op(self, cmd, uop, count)
    }
    fn memory_op(&mut self, cmd: u64, arg: GuestPtr<()>) -> HvResult {
        memory::memory_op(self, cmd, arg)
    }
    fn domctl(&mut self, op: GuestPtr<()>) -> HvResult {
        domctl::domctl(self, op)
    }
    fn sysctl(&mut self, op: GuestPtr<()>) -> HvResult {
        domctl::sysctl(self, op)
    }
    fn event_channel_op(&mut self, cmd: u32, arg: GuestPtr<()>) -> HvResult {
        evtchn::event_channel_op(self, cmd, arg)
    }
    fn event_channel_op_compat(
        &mut self,
        op: GuestPtr<hypercall_abi::evtchn::EvtchnOpCompat>,
    ) -> HvResult {
        evtchn::event_channel_op_compat(self, op)
    }
    fn set_timer_op(&mut self, timeout: i64) -> HvResult {
        vcpu::set_timer_op(self, timeout)
    }
    fn vcpu_op(
        &mut self,
        cmd: u32,
        vcpuid: hypercall_abi::types::VcpuId,
        arg: GuestPtr<()>,
    ) -> HvResult {
        vcpu::vcpu_op(self, cmd, vcpuid, arg)
    }
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod fifo_tests;
#[cfg(test)]
mod gnttab_tests;
#[cfg(test)]
mod iocaps_tests;
#[cfg(test)]
mod physdev_tests;
#[cfg(test)]
mod tests;
