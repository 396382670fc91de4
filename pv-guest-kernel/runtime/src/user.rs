//! Guest user mode: separate user page tables, entry with the `iret`
//! hypercall, and the way back through the syscall callback (ABI digest
//! §6.3–§6.5, §11 step 7).
//!
//! A 64-bit PV kernel and its user code both run in ring 3; Xen keeps a
//! virtual kernel/user mode bit and two L4s per vCPU. Every leaf entry is
//! user-accessible (Xen sets U), so the only isolation is the page tables:
//! a [`UserSpace`] is its own pinned L4 with only what is mapped into it.
//!
//! [`run`] enters user mode and returns when user code leaves it:
//!
//! 1. `stack_switch(FLAT_KERNEL_SS, top of a kernel stack)` (where Xen puts
//!    the bounce frame when user code traps or makes a system call), and
//!    `MMUEXT_NEW_USER_BASEPTR` with the space's L4;
//! 2. the kernel's callee-saved registers and stack pointer are saved, and
//!    the `iret` hypercall enters user mode (`cs` RPL 3), with CR3 switched
//!    to the user L4 by the hypervisor;
//! 3. a `syscall` in user mode bounces to the runtime's syscall callback,
//!    in kernel mode on the kernel stack with the kernel's L4 loaded again;
//!    an exception in user mode bounces to its vector the same way. The
//!    runtime records the user registers ([`UserExit`]) and returns from the
//!    bounce (`iret` with an RPL-0 `cs`, so staying in kernel mode) into the
//!    saved kernel context, and [`run`] returns.
//!
//! Event upcalls that arrive while user code runs are handled as usual and
//! return to user mode. [`run_with`] lets a caller enter user mode its own
//! way (for instance an `iret` inside a `multicall`).

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hypercall_abi::hypercall::{HYPERCALL_STUB_SIZE, Hypercall, mmuext_op, stack_switch};
use hypercall_abi::mmu::{MmuextCmd, MmuextOp};
use hypercall_abi::xen::pte::PteFlags;
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS, Pte};
use hypercall_abi::{DomId, Errno, GuestPtr, Mfn};
use pv_runtime_core::mapper::{self, MapError, Root};
use pv_runtime_core::pt::PAGE;
use spin::Mutex;

use crate::hypercall::{HYPERCALL_PAGE, handle_slice, hc};
use crate::mm::{self, Frame};
use crate::traps::{self, TrapFrame};

/// Size of the stack the hypervisor switches to when user code traps.
pub const KERNEL_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct KernelStack(UnsafeCell<[u8; KERNEL_STACK_SIZE]>);

// SAFETY: only the hypervisor (bounce frames) and the trap path running on
// it use this memory, one bounce at a time (single vCPU, user mode is
// entered only by `run_with`, which does not nest).
unsafe impl Sync for KernelStack {}

static KERNEL_STACK: KernelStack = KernelStack(UnsafeCell::new([0; KERNEL_STACK_SIZE]));

/// The kernel stack pointer `run_with` saved (callee-saved registers below
/// it).
static SAVED_RSP: AtomicU64 = AtomicU64::new(0);
/// Whether user code is running under `run_with`.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// `rflags` to resume the kernel with (its IF = the kernel's events state).
static RESUME_RFLAGS: AtomicU64 = AtomicU64::new(0);
/// How user mode ended.
static EXIT: Mutex<Option<UserExit>> = Mutex::new(None);
/// Serialises `run_with`.
static RUNNING: Mutex<()> = Mutex::new(());

/// `rflags.IF`.
const RFLAGS_IF: u64 = 1 << 9;
/// `rflags` bit 1, always set.
const RFLAGS_FIXED: u64 = 1 << 1;

global_asm!(
    ".pushsection .text.pv_user, \"ax\", @progbits",
    // pv_user_call(saved_rsp: *mut u64, launch: fn(u64), arg: u64) -> u64
    ".balign 16",
    ".globl pv_user_call",
    "pv_user_call:",
    "    push %rbp",
    "    push %rbx",
    "    push %r12",
    "    push %r13",
    "    push %r14",
    "    push %r15",
    "    sub $8, %rsp",
    "    mov %rsp, (%rdi)",
    "    mov %rdx, %rdi",
    "    call *%rsi",
    // A launch that returns lands here with rsp == saved; so does the
    // resume path, by the frame the exit handler builds.
    ".globl pv_user_return",
    "pv_user_return:",
    "    add $8, %rsp",
    "    pop %r15",
    "    pop %r14",
    "    pop %r13",
    "    pop %r12",
    "    pop %rbx",
    "    pop %rbp",
    "    ret",
    // pv_user_iret(launch: *const Launch) -> !: the iret frame, then the
    // iret hypercall (the stub pushes rcx, r11, rax).
    ".balign 16",
    ".globl pv_user_iret",
    "pv_user_iret:",
    "    pushq {ss}(%rdi)",
    "    pushq {rsp}(%rdi)",
    "    pushq {rflags}(%rdi)",
    "    pushq {cs}(%rdi)",
    "    pushq {rip}(%rdi)",
    "    pushq $0",
    "    mov {rax}(%rdi), %rax",
    "    mov {rsi}(%rdi), %rsi",
    "    mov {rdx}(%rdi), %rdx",
    "    mov {rdi}(%rdi), %rdi",
    "    xor %ebx, %ebx",
    "    xor %ecx, %ecx",
    "    xor %ebp, %ebp",
    "    xor %r8d, %r8d",
    "    xor %r9d, %r9d",
    "    xor %r10d, %r10d",
    "    xor %r11d, %r11d",
    "    xor %r12d, %r12d",
    "    xor %r13d, %r13d",
    "    xor %r14d, %r14d",
    "    xor %r15d, %r15d",
    "    jmp {page} + {iret_stub}",
    ".popsection",
    ss = const offset_of!(Launch, ss),
    rsp = const offset_of!(Launch, rsp),
    rflags = const offset_of!(Launch, rflags),
    cs = const offset_of!(Launch, cs),
    rip = const offset_of!(Launch, rip),
    rax = const offset_of!(Launch, rax),
    rdi = const offset_of!(Launch, rdi),
    rsi = const offset_of!(Launch, rsi),
    rdx = const offset_of!(Launch, rdx),
    page = sym HYPERCALL_PAGE,
    iret_stub = const Hypercall::Iret as usize * HYPERCALL_STUB_SIZE,
    options(att_syntax),
);

unsafe extern "C" {
    fn pv_user_call(saved_rsp: *mut u64, launch: unsafe extern "C" fn(u64), arg: u64) -> u64;
    fn pv_user_return();
    fn pv_user_iret(launch: u64);
}

/// What `pv_user_iret` loads.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct Launch {
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
    rax: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
}

/// Where and how user code starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserEntry {
    /// First instruction.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Whether events stay enabled while user code runs (`rflags.IF`).
    pub events: bool,
    /// Initial `rax`.
    pub rax: u64,
    /// Initial `rdi` (first argument).
    pub rdi: u64,
    /// Initial `rsi`.
    pub rsi: u64,
    /// Initial `rdx`. Every other register starts at zero.
    pub rdx: u64,
    /// `rflags.IOPL` (0-3) in the `iret` frame. It only matters with the
    /// `architectural_iopl` assist, where `iret` sets the virtual IOPL from it.
    pub iopl: u8,
}

impl UserEntry {
    /// Start at `rip` with stack `rsp`, events enabled, registers zero.
    pub const fn new(rip: u64, rsp: u64) -> Self {
        UserEntry {
            rip,
            rsp,
            events: true,
            rax: 0,
            rdi: 0,
            rsi: 0,
            rdx: 0,
            iopl: 0,
        }
    }
}

/// User registers when user mode ended.
pub type UserRegs = TrapFrame;

/// How user mode ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserExit {
    /// `syscall` in user mode: the registers then (`rcx` = `rip` = the
    /// return address, `r11` = `rflags`, as SYSCALL left them).
    Syscall(UserRegs),
    /// An exception in user mode (`vector`, `error_code`, `cr2` in the
    /// frame).
    Exception(UserRegs),
    /// The launch function of [`run_with`] returned this (`rax`) without
    /// user mode ending through a bounce.
    Returned(u64),
}

impl fmt::Display for UserExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserExit::Syscall(r) => write!(f, "syscall rax {:#x} at {:#x}", r.rax, r.rcx),
            UserExit::Exception(r) => write!(f, "exception: {r}"),
            UserExit::Returned(rax) => write!(f, "launch returned {rax:#x}"),
        }
    }
}

/// Why user mode could not be entered or set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserError {
    /// The runtime does not own its address space yet
    /// ([`mm::take_over`]).
    NotReady,
    /// No free frame.
    NoFrame,
    /// A hypercall was refused.
    Hypercall(&'static str, Errno),
    /// Mapping into the user space failed.
    Map(MapError),
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NotReady => f.write_str("the address space has not been taken over"),
            UserError::NoFrame => f.write_str("no free frame"),
            UserError::Hypercall(what, e) => write!(f, "{what}: {e}"),
            UserError::Map(e) => write!(f, "{e}"),
        }
    }
}

impl From<MapError> for UserError {
    fn from(e: MapError) -> Self {
        UserError::Map(e)
    }
}

fn ext(what: &'static str, ops: &[MmuextOp]) -> Result<(), UserError> {
    let n = u32::try_from(ops.len()).unwrap_or(u32::MAX);
    mmuext_op(
        &mut hc(),
        handle_slice(ops),
        n,
        GuestPtr::NULL,
        u32::from(DomId::SELF.0),
    )
    .map(drop)
    .map_err(|e| UserError::Hypercall(what, e))
}

/// A user address space: its own pinned L4 and the tables below it.
#[derive(Debug)]
pub struct UserSpace {
    root: Frame,
}

impl UserSpace {
    /// An empty user address space (a cleared, pinned L4; the hypervisor
    /// fills in its own slots). Needs the runtime to own its address space,
    /// so that the new tables can be read.
    pub fn new() -> Result<UserSpace, UserError> {
        if !mm::taken_over() {
            return Err(UserError::NotReady);
        }
        let root = mm::alloc_frame().ok_or(UserError::NoFrame)?;
        let ops = [
            MmuextOp::on_frame(MmuextCmd::ClearPage, root.mfn),
            MmuextOp::on_frame(MmuextCmd::PinL4Table, root.mfn),
        ];
        if let Err(e) = ext("clearing and pinning the user L4", &ops) {
            let _ = mm::free_frame(root);
            return Err(e);
        }
        Ok(UserSpace { root })
    }

    /// The L4.
    pub fn root(&self) -> Mfn {
        self.root.mfn
    }

    /// Map `frames` at `va` with `flags` (PRESENT implied).
    pub fn map(&self, va: u64, frames: &[Mfn], flags: PteFlags) -> Result<(), MapError> {
        mm::with_mapper(|m| {
            m.map(
                Root::live(self.root.mfn),
                va,
                frames.len() as u64,
                flags,
                |i| usize::try_from(i).ok().and_then(|i| frames.get(i)).copied(),
            )
        })
    }

    /// Unmap `pages` pages from `va` (empty tables are freed); returns how
    /// many were mapped.
    pub fn unmap(&self, va: u64, pages: u64) -> Result<u64, MapError> {
        mm::with_mapper(|m| m.unmap(self.root.mfn, va, pages, true))
    }

    /// The present leaf entry for `va`.
    pub fn translate(&self, va: u64) -> Option<Pte> {
        mm::with_mapper(|m| mapper::translate(m.backend(), self.root.mfn, va)).map(Pte)
    }

    /// Copy `bytes` into fresh frames and map them at `va` with `flags` (the
    /// frames stay allocated: the space does not free them).
    pub fn load(&self, va: u64, bytes: &[u8], flags: PteFlags) -> Result<(), UserError> {
        for (i, chunk) in bytes.chunks(4096).enumerate() {
            let frame = mm::alloc_frame().ok_or(UserError::NoFrame)?;
            mm::with_writable(frame, |page| {
                page.fill(0);
                if let Some(dst) = page.get_mut(..chunk.len()) {
                    dst.copy_from_slice(chunk);
                }
            })?;
            self.map(va + i as u64 * PAGE, &[frame.mfn], flags)?;
        }
        Ok(())
    }

    /// Unmap everything in the lower half, stop using the space as the user
    /// base, unpin and free the L4.
    pub fn destroy(self) -> Result<(), UserError> {
        self.unmap(0, 1 << 35)?;
        ext(
            "dropping the user L4",
            &[
                MmuextOp::on_frame(MmuextCmd::NewUserBaseptr, Mfn(0)),
                MmuextOp::on_frame(MmuextCmd::UnpinTable, self.root.mfn),
            ],
        )?;
        let _ = mm::free_frame(self.root);
        Ok(())
    }
}

/// Enter user mode in `space` at `entry` with the `iret` hypercall; returns
/// when user code makes a system call or takes an exception.
pub fn run(space: &UserSpace, entry: &UserEntry) -> Result<UserExit, UserError> {
    let launch = Launch {
        rip: entry.rip,
        cs: u64::from(FLAT_USER_CS),
        rflags: RFLAGS_FIXED
            | if entry.events { RFLAGS_IF } else { 0 }
            | (u64::from(entry.iopl & 3) << 12),
        rsp: entry.rsp,
        ss: u64::from(FLAT_USER_SS),
        rax: entry.rax,
        rdi: entry.rdi,
        rsi: entry.rsi,
        rdx: entry.rdx,
    };
    let arg = core::ptr::from_ref(&launch).expose_provenance() as u64;
    // SAFETY: `pv_user_iret` reads the `Launch` at `arg` (alive for the
    // call) and enters user mode with the iret hypercall; it never returns,
    // user mode comes back through the exit path.
    unsafe { run_with(space, pv_user_iret, arg) }
}

/// Set up user mode for `space` (kernel stack, user base pointer), save the
/// kernel context and call `launch(arg)`, which is expected to enter user
/// mode; returns when user code makes a system call or takes an exception
/// (or when `launch` returns: [`UserExit::Returned`]).
///
/// # Safety
///
/// `launch` must follow the C ABI, and either return normally or enter
/// guest user mode (`cs` RPL 3) in `space` so that user mode ends with a
/// bounce; everything it does to kernel state besides the registers the C
/// ABI lets it clobber is the caller's responsibility.
pub unsafe fn run_with(
    space: &UserSpace,
    launch: unsafe extern "C" fn(u64),
    arg: u64,
) -> Result<UserExit, UserError> {
    let _running = RUNNING.try_lock().ok_or(UserError::NotReady)?;
    if !traps::installed() {
        return Err(UserError::NotReady);
    }
    let top = KERNEL_STACK.0.get().expose_provenance() as u64 + KERNEL_STACK_SIZE as u64;
    stack_switch(&mut hc(), u64::from(FLAT_KERNEL_SS), top)
        .map_err(|e| UserError::Hypercall("stack_switch", e))?;
    ext(
        "NEW_USER_BASEPTR",
        &[MmuextOp::on_frame(MmuextCmd::NewUserBaseptr, space.root())],
    )?;
    let mask = crate::shared::upcall_mask(0);
    RESUME_RFLAGS.store(
        RFLAGS_FIXED | if mask == 0 { RFLAGS_IF } else { 0 },
        Ordering::SeqCst,
    );
    *EXIT.lock() = None;
    ACTIVE.store(true, Ordering::SeqCst);
    let saved = SAVED_RSP.as_ptr();
    // SAFETY: `pv_user_call` saves the callee-saved registers and the stack
    // pointer at `saved`, then calls `launch` (contract above). It returns
    // either when `launch` returns or when the exit path resumes it at
    // `pv_user_return` with that stack pointer: in both cases with the
    // callee-saved registers restored, as a C function returns.
    let rax = unsafe { pv_user_call(saved, launch, arg) };
    ACTIVE.store(false, Ordering::SeqCst);
    let exit = EXIT.lock().take();
    Ok(exit.unwrap_or(UserExit::Returned(rax)))
}

/// Called by the trap path for every bounce: if it came from user mode
/// under [`run_with`] (and is not an event upcall), record it and turn the
/// frame into a return to the saved kernel context. Returns whether it did.
pub(crate) fn exit_from_user(frame: &mut TrapFrame) -> bool {
    if !frame.from_user() || frame.vector == traps::EVENT_VECTOR || !ACTIVE.load(Ordering::SeqCst) {
        return false;
    }
    let exit = if frame.vector == traps::SYSCALL_VECTOR {
        UserExit::Syscall(*frame)
    } else {
        UserExit::Exception(*frame)
    };
    if let Some(mut slot) = EXIT.try_lock() {
        *slot = Some(exit);
    }
    ACTIVE.store(false, Ordering::SeqCst);
    frame.rip = pv_user_return as *const () as usize as u64;
    // RPL 0: the iret stays in kernel mode.
    frame.cs = u64::from(FLAT_KERNEL_CS & !3);
    frame.ss = u64::from(FLAT_KERNEL_SS);
    frame.rsp = SAVED_RSP.load(Ordering::SeqCst);
    frame.rflags = RESUME_RFLAGS.load(Ordering::SeqCst);
    frame.rax = 0;
    true
}
