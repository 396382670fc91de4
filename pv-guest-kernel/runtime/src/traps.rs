//! Exceptions and callbacks: the virtual IDT (`set_trap_table`), the event,
//! failsafe and syscall callbacks (`callback_op`, falling back to
//! `set_callbacks`), and the path from Xen's bounce frame to a Rust handler
//! and back through the `iret` hypercall (ABI digest §6.1–6.5).
//!
//! # Entry and exit
//!
//! Xen enters a handler with `rsp` at its bounce frame: `rcx`, `r11`, the
//! error code (only for vectors that have one), `rip`, `cs` (saved upcall
//! mask in bits 39:32), `rflags`, `rsp`, `ss`. Each entry stub pops `rcx` and
//! `r11` (restoring them), pushes a zero error code where Xen pushed none, and
//! the vector; the common path saves every general register into a
//! [`TrapFrame`] and calls the handler with `&mut TrapFrame`. On return it
//! restores the registers from the frame (so a handler may change any of
//! them, or `rip` to skip an instruction), leaves `rip, cs, rflags, rsp, ss`
//! on the stack, pushes the `iret` flags word (0: return with IRET) and jumps
//! to the `iret` stub of the hypercall page. Xen then restores the upcall
//! mask from the frame's `rflags.IF`.
//!
//! All exception vectors are installed with "disable events on entry", so
//! handlers run with events masked, like an interrupt gate.
//!
//! # Handlers
//!
//! [`set_handler`] registers a Rust function per exception vector,
//! [`set_callback_handler`] for the callbacks. Without a handler, an
//! exception panics with its vector, error code and `rip` (and the domain
//! crashes), and an event upcall runs [`crate::evtchn::dispatch`] (per-port
//! handlers; ports without one are acknowledged). Handlers
//! run on the interrupted stack; they must not take locks the interrupted
//! code may hold (the heap's lock included: an allocation in a handler that
//! interrupted an allocation fails).

use core::arch::global_asm;
use core::fmt;
use core::mem::offset_of;

use hypercall_abi::Errno;
use hypercall_abi::callback::{CALLBACKF_MASK_EVENTS, CallbackOp, CallbackRegister, CallbackType};
use hypercall_abi::hypercall::{
    HYPERCALL_STUB_SIZE, Hypercall, callback_op, set_callbacks, set_trap_table,
};
use hypercall_abi::xen::arch::{
    BOUNCE_SAVED_MASK_SHIFT, BounceFrame, BounceFrameWithError, FailsafeFrame, VgcfFlags,
    exception_has_error_code,
};
use hypercall_abi::xen::{FLAT_KERNEL_CS, IretContext, TrapInfo};
use spin::RwLock;

use crate::hypercall::{HYPERCALL_PAGE, hc};

/// Architectural exception vectors (Intel SDM vol. 3 §6.3).
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint (`int3`).
    pub const BP: u8 = 3;
    /// Overflow (`into`).
    pub const OF: u8 = 4;
    /// Bound range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
    /// SIMD floating-point exception.
    pub const XM: u8 = 19;
    /// Virtualization exception.
    pub const VE: u8 = 20;
    /// Control-protection exception.
    pub const CP: u8 = 21;
    /// Number of exception vectors.
    pub const COUNT: u8 = 32;
}

/// Short names of the exception vectors, for messages.
const NAMES: [&str; vector::COUNT as usize] = [
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#09", "#TS", "#NP", "#SS",
    "#GP", "#PF", "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25",
    "#26", "#27", "#HV", "#VC", "#SX", "#31",
];

/// The callbacks a guest registers besides its exception vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// Event-channel upcall.
    Event,
    /// Xen could not reload a data segment when returning to the guest.
    Failsafe,
    /// `syscall` from guest user mode.
    Syscall,
}

/// `TrapFrame::vector` of the event upcall.
pub const EVENT_VECTOR: u64 = 256;
/// `TrapFrame::vector` of the failsafe callback.
pub const FAILSAFE_VECTOR: u64 = 257;
/// `TrapFrame::vector` of the syscall callback.
pub const SYSCALL_VECTOR: u64 = 258;

/// What was interrupted and why: saved by the entry path, passed to the
/// handler, and restored on return (changes included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
#[allow(missing_docs)] // register names document themselves
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// For `#PF`: the faulting address (`vcpu_info.arch.cr2`), read before
    /// the handler runs. 0 otherwise. Not restored.
    pub cr2: u64,
    /// Exception vector (0..32), or [`EVENT_VECTOR`], [`FAILSAFE_VECTOR`],
    /// [`SYSCALL_VECTOR`]. Not restored.
    pub vector: u64,
    /// Error code (0 for vectors without one). Not restored.
    pub error_code: u64,
    /// Where execution resumes.
    pub rip: u64,
    /// Interrupted code selector (RPL 0 if it was guest kernel mode), with
    /// the saved upcall mask in bits 39:32.
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// The exception vector, or `None` for a callback.
    pub fn exception(&self) -> Option<u8> {
        u8::try_from(self.vector)
            .ok()
            .filter(|v| *v < vector::COUNT)
    }

    /// Whether the interrupted code was guest user mode (`cs` RPL 3).
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }

    /// The upcall mask saved when the frame was built (the interrupted
    /// virtual interrupt flag, inverted).
    pub fn saved_upcall_mask(&self) -> u8 {
        u8::try_from((self.cs >> BOUNCE_SAVED_MASK_SHIFT) & 0xFF).unwrap_or(1)
    }
}

impl fmt::Display for TrapFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.exception() {
            Some(v) => write!(f, "vector {v} ({})", NAMES[usize::from(v)])?,
            None => write!(f, "callback {}", self.vector)?,
        }
        write!(
            f,
            " error code {:#x} rip {:#x} rsp {:#x} cs {:#x} rflags {:#x}",
            self.error_code,
            self.rip,
            self.rsp,
            self.cs & 0xFFFF,
            self.rflags
        )?;
        if self.exception() == Some(vector::PF) {
            write!(f, " cr2 {:#x}", self.cr2)?;
        }
        Ok(())
    }
}

// The entry path hard-codes the bounce frames' shape (pop rcx, pop r11, then
// the error code or rip) and hands the tail of the TrapFrame to `iret`
// unchanged: check both against the ABI layouts.
const _: () = {
    assert!(offset_of!(BounceFrame, rcx) == 0 && offset_of!(BounceFrame, r11) == 8);
    assert!(offset_of!(BounceFrame, rip) == 16);
    assert!(offset_of!(BounceFrameWithError, error_code) == 16);
    assert!(offset_of!(FailsafeFrame, rcx) == 0 && offset_of!(FailsafeFrame, r11) == 8);
    assert!(
        offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, error_code)
            == offset_of!(BounceFrameWithError, rip) - offset_of!(BounceFrameWithError, error_code)
    );
    let t = offset_of!(TrapFrame, rip);
    let i = offset_of!(IretContext, rip);
    assert!(offset_of!(TrapFrame, cs) - t == offset_of!(IretContext, cs) - i);
    assert!(offset_of!(TrapFrame, rflags) - t == offset_of!(IretContext, rflags) - i);
    assert!(offset_of!(TrapFrame, rsp) - t == offset_of!(IretContext, rsp) - i);
    assert!(offset_of!(TrapFrame, ss) - t == offset_of!(IretContext, ss) - i);
    assert!(offset_of!(IretContext, flags) + 8 == i);
    assert!(offset_of!(TrapFrame, cr2) == 15 * 8);
};

/// Bits 0..32: whether Xen pushes an error code for that vector.
const fn error_code_mask() -> u32 {
    let mut mask = 0;
    let mut v = 0;
    while v < vector::COUNT {
        if exception_has_error_code(v) {
            mask |= 1 << v;
        }
        v += 1;
    }
    mask
}

/// Distance between consecutive exception stubs.
const STUB_STRIDE: usize = 16;

global_asm!(
    ".pushsection .text.pv_traps, \"ax\", @progbits",
    // One stub per exception vector, STUB_STRIDE bytes apart.
    ".balign {stride}",
    ".globl pv_trap_stubs",
    "pv_trap_stubs:",
    ".set pv_vec, 0",
    ".rept {nvec}",
    "1:",
    "    pop %rcx",
    "    pop %r11",
    ".if (({ecmask} >> pv_vec) & 1) == 0",
    "    pushq $0",
    ".endif",
    "    pushq $pv_vec",
    "    jmp pv_trap_common",
    // Pads to the stride; fails to assemble if a stub is longer.
    ".org 1b + {stride}, 0xcc",
    ".set pv_vec, pv_vec + 1",
    ".endr",
    // Callbacks: frames without an error code.
    ".balign 16",
    ".globl pv_event_entry",
    "pv_event_entry:",
    "    pop %rcx",
    "    pop %r11",
    "    pushq $0",
    "    pushq ${event}",
    "    jmp pv_trap_common",
    ".balign 16",
    ".globl pv_syscall_entry",
    "pv_syscall_entry:",
    "    pop %rcx",
    "    pop %r11",
    "    pushq $0",
    "    pushq ${syscall}",
    "    jmp pv_trap_common",
    // Failsafe: drop the saved ds, es, fs, gs (null selectors are what this
    // runtime uses anyway).
    ".balign 16",
    ".globl pv_failsafe_entry",
    "pv_failsafe_entry:",
    "    pop %rcx",
    "    pop %r11",
    "    add ${segs}, %rsp",
    "    pushq $0",
    "    pushq ${failsafe}",
    "    jmp pv_trap_common",
    // Common path: build the TrapFrame, call the dispatcher, restore, iret.
    ".balign 16",
    "pv_trap_common:",
    "    pushq $0",
    "    push %rax",
    "    push %rbx",
    "    push %rcx",
    "    push %rdx",
    "    push %rsi",
    "    push %rdi",
    "    push %rbp",
    "    push %r8",
    "    push %r9",
    "    push %r10",
    "    push %r11",
    "    push %r12",
    "    push %r13",
    "    push %r14",
    "    push %r15",
    "    mov %rsp, %rdi",
    "    mov %rsp, %rbx",
    "    and $-16, %rsp",
    "    cld",
    "    call {dispatch}",
    "    mov %rbx, %rsp",
    "    pop %r15",
    "    pop %r14",
    "    pop %r13",
    "    pop %r12",
    "    pop %r11",
    "    pop %r10",
    "    pop %r9",
    "    pop %r8",
    "    pop %rbp",
    "    pop %rdi",
    "    pop %rsi",
    "    pop %rdx",
    "    pop %rcx",
    "    pop %rbx",
    "    pop %rax",
    "    add ${unsaved}, %rsp",
    "    pushq ${iret_flags}",
    "    jmp {page} + {iret_stub}",
    ".popsection",
    stride = const STUB_STRIDE,
    nvec = const vector::COUNT,
    ecmask = const error_code_mask(),
    event = const EVENT_VECTOR,
    syscall = const SYSCALL_VECTOR,
    failsafe = const FAILSAFE_VECTOR,
    segs = const offset_of!(FailsafeFrame, rip) - offset_of!(FailsafeFrame, ds),
    unsaved = const offset_of!(TrapFrame, rip) - offset_of!(TrapFrame, cr2),
    iret_flags = const VgcfFlags::empty().bits(),
    page = sym HYPERCALL_PAGE,
    iret_stub = const Hypercall::Iret as usize * HYPERCALL_STUB_SIZE,
    dispatch = sym trap_dispatch,
    options(att_syntax),
);

unsafe extern "C" {
    fn pv_trap_stubs();
    fn pv_event_entry();
    fn pv_syscall_entry();
    fn pv_failsafe_entry();
}

/// A trap or callback handler.
pub type Handler = fn(&mut TrapFrame);

const SLOTS: usize = vector::COUNT as usize + 3;

static HANDLERS: RwLock<[Option<Handler>; SLOTS]> = RwLock::new([None; SLOTS]);

fn slot(vector: u64) -> Option<usize> {
    match vector {
        EVENT_VECTOR => Some(vector::COUNT as usize),
        FAILSAFE_VECTOR => Some(vector::COUNT as usize + 1),
        SYSCALL_VECTOR => Some(vector::COUNT as usize + 2),
        v => usize::try_from(v)
            .ok()
            .filter(|v| *v < vector::COUNT as usize),
    }
}

fn swap(vector: u64, handler: Option<Handler>) -> Option<Handler> {
    let s = slot(vector)?;
    let mut table = HANDLERS.write();
    core::mem::replace(table.get_mut(s)?, handler)
}

/// Handle exception `vector` (below 32) with `handler`; returns the handler
/// it replaces.
pub fn set_handler(vector: u8, handler: Handler) -> Option<Handler> {
    swap(u64::from(vector), Some(handler))
}

/// Go back to the default for exception `vector`; returns the handler it
/// removes.
pub fn clear_handler(vector: u8) -> Option<Handler> {
    swap(u64::from(vector), None)
}

fn callback_vector(cb: Callback) -> u64 {
    match cb {
        Callback::Event => EVENT_VECTOR,
        Callback::Failsafe => FAILSAFE_VECTOR,
        Callback::Syscall => SYSCALL_VECTOR,
    }
}

/// Handle callback `cb` with `handler` (`None`: the default); returns the
/// handler it replaces.
pub fn set_callback_handler(cb: Callback, handler: Option<Handler>) -> Option<Handler> {
    swap(callback_vector(cb), handler)
}

extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    if frame.vector == u64::from(vector::PF) {
        frame.cr2 = crate::shared::cr2();
    }
    // A system call or exception in user code under `user::run` ends it.
    if crate::user::exit_from_user(frame) {
        return;
    }
    // try_read: a trap that interrupted a registration (on this vCPU)
    // uses the default; other vCPUs' traps read concurrently.
    let handler = slot(frame.vector).and_then(|s| {
        HANDLERS
            .try_read()
            .and_then(|t| t.get(s).copied().flatten())
    });
    match handler {
        Some(h) => h(frame),
        None if frame.vector == EVENT_VECTOR => crate::evtchn::dispatch(),
        None => panic!("unhandled {frame}"),
    }
}

/// Whether the trap table and callbacks are installed.
static INSTALLED: spin::Once<()> = spin::Once::new();

/// Whether [`install`] ran (the guest's [`Config`](crate::Config) may skip it).
pub fn installed() -> bool {
    INSTALLED.is_completed()
}

/// Install the runtime's virtual IDT and callbacks again, after code that
/// replaced them on purpose (a fuzzer's random `set_trap_table`,
/// `set_callbacks` or `callback_op`). The handlers registered with
/// [`set_handler`] stay as they are.
pub fn reinstall() -> Result<(), Errno> {
    install()
}

/// The address of the runtime's entry stub for exception `vector` (below 32):
/// what its virtual IDT points at, for a guest that registers the same entry
/// another way (the NMI callback of `CALLBACKOP_register`, say).
pub fn vector_stub(vector: u8) -> u64 {
    let base = pv_trap_stubs as *const () as usize as u64;
    base + u64::from(vector.min(vector::COUNT - 1)) * STUB_STRIDE as u64
}

/// The runtime's virtual IDT: every exception vector, events masked on
/// entry; the last entry stays zero (it ends a `set_trap_table` list). A
/// secondary vCPU gets the same table in its `VCPUOP_initialise` context.
pub(crate) fn table() -> [TrapInfo; vector::COUNT as usize + 1] {
    let mut table = [TrapInfo::default(); vector::COUNT as usize + 1];
    for (v, entry) in (0..vector::COUNT).zip(table.iter_mut()) {
        // `int3` and `into` may be used from any ring; everything else is
        // reachable only as an exception.
        let dpl = if v == vector::BP || v == vector::OF {
            3
        } else {
            0
        };
        *entry = TrapInfo::new(v, dpl, true, FLAT_KERNEL_CS, vector_stub(v));
    }
    table
}

/// The event, failsafe and syscall callback entries.
pub(crate) fn callback_entries() -> (u64, u64, u64) {
    (
        pv_event_entry as *const () as usize as u64,
        pv_failsafe_entry as *const () as usize as u64,
        pv_syscall_entry as *const () as usize as u64,
    )
}

/// Install the virtual IDT for every exception vector and register the
/// callbacks. Called by the boot sequence.
pub(crate) fn install() -> Result<(), Errno> {
    let table = table();
    set_trap_table(&mut hc(), crate::hypercall::handle_slice(&table))?;

    let callbacks = [
        (
            CallbackType::Event,
            pv_event_entry as *const () as usize as u64,
            0,
        ),
        (
            CallbackType::Failsafe,
            pv_failsafe_entry as *const () as usize as u64,
            CALLBACKF_MASK_EVENTS,
        ),
        (
            CallbackType::Syscall,
            pv_syscall_entry as *const () as usize as u64,
            CALLBACKF_MASK_EVENTS,
        ),
    ];
    let mut registered = true;
    for (kind, address, flags) in callbacks {
        let reg = CallbackRegister {
            type_: kind as u16,
            flags,
            _pad: 0,
            address,
        };
        let arg = crate::hypercall::handle(&reg).cast();
        registered &= callback_op(&mut hc(), CallbackOp::Register.nr(), arg).is_ok();
    }
    if !registered {
        set_callbacks(
            &mut hc(),
            pv_event_entry as *const () as usize as u64,
            pv_failsafe_entry as *const () as usize as u64,
            pv_syscall_entry as *const () as usize as u64,
        )?;
    }
    INSTALLED.call_once(|| ());
    Ok(())
}
