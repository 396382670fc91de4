//! The one place that executes a hypercall (feature `guest`).
//!
//! Two [`Invoke`] implementations:
//!
//! * [`HypercallPage`] calls stub `nr` of the hypercall page the hypervisor
//!   filled (`call page + nr * 32`), the normal way.
//! * [`Syscall`] executes `syscall` directly with `rax` = `nr`, which Xen
//!   also accepts from guest kernel mode.
//!
//! Both load `rax` = number and the arguments into `rdi`, `rsi`, `rdx`,
//! `r10`, `r8`, generated from the same declaration as
//! [`ARG_REGS`](crate::hypercall::ARG_REGS); they treat `rcx`, `r11` and all
//! argument registers as clobbered, and memory as read and written.
//!
//! `iret` (#23) is not a call: a guest pushes an
//! [`IretContext`](crate::xen::IretContext) frame and *jumps* to
//! [`HypercallPage::stub`]`(23)`. [`HypercallPage`] refuses to `call` it.

use core::arch::asm;

use crate::errno::Errno;
use crate::hypercall::{HYPERCALL_PAGE_STUBS, HYPERCALL_STUB_SIZE, Hypercall, Invoke};

/// Invoke hypercalls through the hypercall page.
#[derive(Clone, Copy, Debug)]
pub struct HypercallPage {
    base: usize,
}

impl HypercallPage {
    /// Use the hypercall page at guest virtual address `base`.
    ///
    /// # Safety
    ///
    /// * `base` is the page the guest nominated with
    ///   `XEN_ELFNOTE_HYPERCALL_PAGE`, mapped executable, and the hypervisor
    ///   has filled it (its first byte is `0x51`, not poison).
    /// * The code runs in guest kernel mode of a PV guest, so that `syscall`
    ///   enters the hypervisor.
    /// * Every guest address passed in a hypercall made through this invoker
    ///   is valid for the reads and writes that hypercall performs: the
    ///   hypervisor writes guest memory on the caller's behalf, like a raw
    ///   pointer write.
    pub unsafe fn new(base: *const u8) -> Self {
        HypercallPage { base: base.addr() }
    }

    /// Address of stub `nr`, if the page has one.
    pub fn stub(&self, nr: u64) -> Option<usize> {
        let nr = usize::try_from(nr)
            .ok()
            .filter(|&n| n < HYPERCALL_PAGE_STUBS)?;
        self.base.checked_add(nr * HYPERCALL_STUB_SIZE)
    }
}

impl Invoke for HypercallPage {
    /// Call stub `nr`. Numbers without a stub (128 and up) go through a
    /// direct `syscall`, so the hypervisor answers them (`-ENOSYS`). `iret`
    /// is refused with `-EINVAL` without entering the hypervisor.
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64 {
        if nr == u64::from(Hypercall::Iret.nr()) {
            return Errno::EINVAL.encode();
        }
        let Some(target) = self.stub(nr) else {
            return Syscall(()).invoke(nr, args);
        };
        let [a0, a1, a2, a3, a4] = args;
        let ret: u64;
        macro_rules! call_stub {
            ($r0:tt, $r1:tt, $r2:tt, $r3:tt, $r4:tt) => {
                // SAFETY: `target` is stub `nr` of the hypercall page, which
                // `new`'s contract says the hypervisor filled; the stub saves
                // rcx/r11, enters the hypervisor and returns with `ret`. The
                // registers it may change are declared clobbered, it uses two
                // stack slots below the return address (no red-zone use),
                // and the memory the hypervisor touches is covered by `new`'s
                // contract.
                unsafe {
                    asm!(
                        "call {target}",
                        target = in(reg) target,
                        inlateout("rax") nr => ret,
                        inout($r0) a0 => _,
                        inout($r1) a1 => _,
                        inout($r2) a2 => _,
                        inout($r3) a3 => _,
                        inout($r4) a4 => _,
                        out("rcx") _,
                        out("r11") _,
                    );
                }
            };
        }
        arg_regs!(call_stub);
        ret
    }
}

/// Invoke hypercalls with a direct `syscall` (no hypercall page).
#[derive(Clone, Copy, Debug)]
pub struct Syscall(());

impl Syscall {
    /// A direct-`syscall` invoker.
    ///
    /// # Safety
    ///
    /// The code runs in guest kernel mode of a PV guest (so `syscall`
    /// enters the hypervisor), and every guest address passed in a
    /// hypercall made through this invoker is valid for the reads and
    /// writes that hypercall performs.
    pub const unsafe fn new() -> Self {
        Syscall(())
    }
}

impl Invoke for Syscall {
    fn invoke(&mut self, nr: u64, args: [u64; 5]) -> u64 {
        let [a0, a1, a2, a3, a4] = args;
        let ret: u64;
        macro_rules! do_syscall {
            ($r0:tt, $r1:tt, $r2:tt, $r3:tt, $r4:tt) => {
                // SAFETY: a `Syscall` value exists only through `new`, whose
                // contract makes `syscall` a hypercall and covers the memory
                // it touches. `syscall` destroys rcx and r11, the hypervisor
                // may change the argument registers, and rax holds the
                // result; all are declared.
                unsafe {
                    asm!(
                        "syscall",
                        inlateout("rax") nr => ret,
                        inout($r0) a0 => _,
                        inout($r1) a1 => _,
                        inout($r2) a2 => _,
                        inout($r3) a3 => _,
                        inout($r4) a4 => _,
                        out("rcx") _,
                        out("r11") _,
                    );
                }
            };
        }
        arg_regs!(do_syscall);
        ret
    }
}
