//! The domains the hypervisor runs, the vCPU on each CPU, and the path of every entry
//! from a guest: interrupts, hypercalls, exceptions; and what happens when a domain
//! stops.

use crate::arch::x86_64::guest::{self, HwPlatform};
use crate::arch::x86_64::{cpu, trap};
use hypercall_abi::types::DomId;
use spin::Mutex;
use xlhv_core::domain::{DomainState, PvDomain, ShutdownReason};
use xlhv_core::exit::QemuExit;
use xlhv_core::regs::{Regs, SYSCALL_VECTOR};
use xlhv_core::traps::{CrashReason, GuestCtx, Outcome};

/// Most domains at once.
pub const MAX_DOMAINS: usize = 64;

/// Every domain, by slot.
pub struct Domains {
    slots: [Option<PvDomain>; MAX_DOMAINS],
}

impl core::fmt::Debug for Domains {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Domains")
            .field("count", &self.slots.iter().flatten().count())
            .finish()
    }
}

impl Domains {
    /// The domain in `slot`.
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut PvDomain> {
        self.slots.get_mut(slot)?.as_mut()
    }

    /// The domain in `slot`, and every other slot beside it, borrowed at once.
    pub fn split(&mut self, slot: usize) -> Option<(&mut PvDomain, Others<'_>)> {
        let (left, rest) = self.slots.split_at_mut(slot);
        let (cur, right) = rest.split_first_mut()?;
        Some((cur.as_mut()?, Others { left, right }))
    }

    /// Adds a domain; returns its slot.
    pub fn insert(&mut self, d: PvDomain) -> Option<usize> {
        let (i, slot) = self
            .slots
            .iter_mut()
            .enumerate()
            .find(|(_, s)| s.is_none())?;
        *slot = Some(d);
        Some(i)
    }
}

/// Every domain but the current one (see [`Domains::split`]).
#[derive(Debug)]
pub struct Others<'a> {
    left: &'a mut [Option<PvDomain>],
    right: &'a mut [Option<PvDomain>],
}

impl Others<'_> {
    /// What the memory model needs to know about the domains that exist, with the
    /// current domain `current` (built only when a memory operation asks).
    pub fn hooks(&self, current: DomId, current_privileged: bool) -> crate::mmhw::Hooks {
        let mut existing = heapless::Vec::new();
        let _ = existing.push(current);
        let mut control = if current_privileged {
            current
        } else {
            DomId::INVALID
        };
        for d in self.left.iter().chain(self.right.iter()).flatten() {
            let _ = existing.push(d.dom.id);
            if d.dom.privileged {
                control = d.dom.id;
            }
        }
        crate::mmhw::Hooks { existing, control }
    }

    /// The domain with id `id`, if it is one of these.
    pub fn find(
        &mut self,
        id: hypercall_abi::types::DomId,
    ) -> Option<&mut xlhv_core::domain::Domain> {
        self.left
            .iter_mut()
            .chain(self.right.iter_mut())
            .flatten()
            .map(|d| &mut d.dom)
            .find(|d| d.id == id)
    }
}

static DOMAINS: Mutex<Domains> = Mutex::new(Domains {
    slots: [const { None }; MAX_DOMAINS],
});

/// (domain slot, vCPU index) running on the boot CPU.
static CURRENT: Mutex<Option<(usize, usize)>> = Mutex::new(None);

/// The hypervisor's command line, for `XENVER_commandline`.
static CMDLINE: spin::Once<&'static str> = spin::Once::new();

/// Records the hypervisor command line.
pub fn set_cmdline(s: &'static str) {
    CMDLINE.call_once(|| s);
}

/// Adds a domain to the table.
pub fn add(d: PvDomain) -> Option<usize> {
    DOMAINS.lock().insert(d)
}

/// Starts vCPU 0 of the domain in `slot` on this CPU: never returns.
pub fn run_first(slot: usize) -> ! {
    let frame_at = crate::arch::x86_64::entry_stack_top() - size_of::<Regs>() as u64;
    {
        let mut doms = DOMAINS.lock();
        let Some(pv) = doms.get_mut(slot) else {
            panic!("run_first: no domain in slot {slot}")
        };
        pv.dom.state = DomainState::Running;
        let Some(v) = pv.vcpus.get_mut(0) else {
            panic!("run_first: domain without vCPU 0")
        };
        v.online = true;
        guest::sync(v);
        // SAFETY: `frame_at` is the top of this CPU's entry stack, which nothing uses
        // until the guest runs (this code runs on the boot stack).
        unsafe { core::ptr::write(frame_at as *mut Regs, v.regs) };
        *CURRENT.lock() = Some((slot, 0));
    }
    // SAFETY: the frame is a complete ring-3 register set for a vCPU whose page tables,
    // FS/GS bases and CR0.TS were just loaded.
    unsafe { return_to_frame(frame_at as *const Regs) }
}

unsafe extern "C" {
    fn return_to_frame(frame: *const Regs) -> !;
}

/// Every entry from a guest lands here, with interrupts off.
pub fn guest_entry(frame: &mut Regs) {
    if trap::guest_interrupt(frame.vector) {
        return;
    }
    let cr2 = cpu::control_regs().cr2;
    let Some((slot, vid)) = *CURRENT.lock() else {
        panic!(
            "entry from a guest with no current vCPU (vector {:#x})",
            frame.vector
        );
    };
    let mut doms = DOMAINS.lock();
    let Some((pv, others)) = doms.split(slot) else {
        panic!("current domain slot {slot} is empty")
    };
    let PvDomain { dom, vcpus } = pv;
    let Some(vcpu) = vcpus.get_mut(vid) else {
        panic!("current vCPU {vid} does not exist")
    };
    let mut plat = HwPlatform {
        shared_info: dom.shared_info,
        cmdline: CMDLINE.get().copied().unwrap_or(""),
        others,
    };
    let outcome = {
        let mut ctx = GuestCtx::new(&mut plat, dom, vcpu, frame);
        if ctx.regs.vector == SYSCALL_VECTOR {
            if ctx.vcpu.kernel_mode {
                ctx.hypercall();
            } else {
                ctx.user_syscall();
            }
        } else {
            ctx.guest_exception(cr2);
        }
        ctx.outcome
    };
    match outcome {
        Outcome::Shutdown(reason) => {
            stop(pv, reason, None);
            drop(doms);
            nothing_to_run()
        }
        Outcome::Crash(why) => {
            stop(pv, ShutdownReason::Crash, Some(why));
            drop(doms);
            nothing_to_run()
        }
        Outcome::Resume | Outcome::RegsReplaced | Outcome::Yield => {}
    }
    if let Some(v) = pv.vcpus.get(vid) {
        guest::sync(v);
    }
    // A hypercall's or a bounce's return clobbers RCX/R11 as SYSCALL does; `iret` and
    // continuations restore them, so they may use SYSRET only if nothing changes.
    frame.mark_sysret(outcome != Outcome::RegsReplaced);
}

/// The IRETQ back into the current guest faulted: its frame was unusable. Crashes it.
pub fn exit_fault(vector: u8) -> ! {
    let slot = CURRENT.lock().map(|(s, _)| s);
    let mut doms = DOMAINS.lock();
    match slot.and_then(|s| doms.get_mut(s)) {
        Some(pv) => stop(
            pv,
            ShutdownReason::Crash,
            Some(CrashReason::EntryFault { vector }),
        ),
        None => panic!("fault returning to a guest, with no current guest"),
    }
    drop(doms);
    nothing_to_run()
}

/// The current vCPU's domain stopped and there is no other vCPU to run (one domain at a
/// time until the scheduler arrives): idle with interrupts on, never returning to the
/// stopped guest.
fn nothing_to_run() -> ! {
    *CURRENT.lock() = None;
    log::info!("no runnable vCPU; idling");
    loop {
        x86_64::instructions::interrupts::enable_and_hlt();
    }
}

/// Free frames just before dom0 was built: what a complete teardown of dom0 returns
/// the machine to.
static FREE_BEFORE_DOM0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Records the free-frame count before building dom0.
pub fn note_free_before_dom0() {
    FREE_BEFORE_DOM0.store(
        crate::mm::free_frames(),
        core::sync::atomic::Ordering::Relaxed,
    );
}

/// Destroys a stopped domain's memory: drops every page-type and general reference its
/// vCPUs and tables hold, releases each of its frames (and its shared_info) in the frame
/// table and gives them back to the allocator. Returns (frames returned, frames still
/// referenced by someone else).
fn teardown(pv: &mut PvDomain) -> (u64, u64) {
    use xlhv_core::mm::frame_table::Owner;
    use xlhv_core::mm::mmu::{VcpuMm, relinquish_domain};
    use xlhv_core::mm::page_type::put_page_and_type;
    let id = pv.dom.id;
    let mut hooks = crate::mmhw::Hooks {
        existing: heapless::Vec::new(),
        control: id,
    };
    let _ = hooks.existing.push(id);
    let mut returned = 0;
    let mut busy = 0;
    crate::mmhw::with_mm(id, pv.dom.privileged, &mut hooks, |m| {
        let mut roots: heapless::Vec<VcpuMm, { xlhv_core::domain::MAX_VCPUS }> =
            heapless::Vec::new();
        for v in pv.vcpus.iter_mut() {
            for &g in &v.gdt_frames {
                put_page_and_type(m, g);
            }
            v.gdt_frames.clear();
            let _ = roots.push(VcpuMm {
                kernel_root: Some(v.kernel_root),
                user_root: v.user_root.take(),
                ldt_base: v.ldt_base,
                ldt_ents: v.ldt_ents,
            });
        }
        let _ = relinquish_domain(m, &mut roots);
        // No CPU may keep a translation of the domain's frames once they are reused.
        crate::mmhw::flush_tlb(xlhv_core::mm::mmu::FlushKind::Tlb);
        let n = m.ft.len() as u64;
        for mfn in (0..n).map(xlhv_core::mm::Mfn) {
            let mine =
                matches!(m.ft.owner(mfn), Some(Owner::Domain(d) | Owner::XenShared(d)) if d == id);
            if !mine {
                continue;
            }
            // Lock order: frame table, then allocator (as everywhere).
            if m.ft.release(mfn).is_ok() && crate::mm::free_order(mfn, 0).is_ok() {
                crate::mm::m2p_set(mfn, hypercall_abi::xen::INVALID_M2P_ENTRY);
                returned += 1;
            } else {
                busy += 1;
            }
        }
    });
    (returned, busy)
}

/// A domain stopped. dom0 stopping ends the machine, with an exit code that tells
/// poweroff from crash.
fn stop(pv: &mut PvDomain, reason: ShutdownReason, why: Option<CrashReason>) {
    let id = pv.dom.id;
    pv.dom
        .console
        .flush(|line| crate::console::guest_line(id, line));
    let reason = match (reason, pv.dom.shutdown_code) {
        (ShutdownReason::Crash, _) => ShutdownReason::Crash,
        (_, Some(code)) => code,
        (r, None) => r,
    };
    pv.dom.state = DomainState::Shutdown(reason);
    match why {
        Some(why) => log::error!("domain {} crashed: {why}", id.0),
        None => log::info!("domain {} shut down: {reason:?}", id.0),
    }
    let (returned, busy) = teardown(pv);
    let free = crate::mm::free_frames();
    let before = FREE_BEFORE_DOM0.load(core::sync::atomic::Ordering::Relaxed);
    log::info!(
        "domain {} destroyed: {returned} frames returned, {busy} still referenced; {free} frames free",
        id.0
    );
    if pv.dom.privileged {
        if free == before {
            log::info!(
                "memory: all of dom0's frames are back ({free} free, as before it was built)"
            );
        } else {
            log::error!(
                "memory: {free} frames free after dom0, {before} before it was built: frames leaked"
            );
        }
        let code = match reason {
            ShutdownReason::Poweroff | ShutdownReason::Suspend => QemuExit::Poweroff,
            ShutdownReason::Reboot | ShutdownReason::SoftReset => QemuExit::Reboot,
            ShutdownReason::Crash | ShutdownReason::Watchdog => QemuExit::Dom0Crash,
        };
        log::info!("dom0 stopped ({reason:?}): stopping the machine");
        cpu::qemu_exit(code);
    }
}
