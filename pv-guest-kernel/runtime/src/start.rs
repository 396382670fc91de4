//! Entry and boot sequence.
//!
//! The builder starts the guest at `_start` (the `ENTRY` note) with `rsi` =
//! start_info and `rsp` = the top of its one-page boot stack (digest §3.1).
//! `_start` keeps both, zeroes `.bss`, switches to a stack inside the image
//! and calls the `__pv_guest_start` that [`entry!`](crate::entry) defines,
//! which runs [`boot`]:
//!
//! 1. check the hypercall page was filled (else print with a direct
//!    `syscall` and crash);
//! 2. check the start_info magic;
//! 3. install the trap table and callbacks (unless [`Config`] says not to);
//! 4. map shared_info;
//! 5. reconstruct the bootstrap layout and set up frames and heap (the heap
//!    only if the entry stack is where the layout says the boot stack is);
//! 6. with [`Config::OWN_PAGE_TABLES`], take over the address space
//!    ([`mm::take_over`]);
//! 7. run the guest's main, then power off.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::AtomicU64;

use hypercall_abi::guest::Syscall;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::StartInfo;
use hypercall_abi::xen::start_info::START_INFO_MAGIC;
use pv_runtime_core::layout::BootLayout;
use pv_runtime_core::text::{Ascii, c_str};
use spin::Once;

use crate::{console, hypercall, mm, notes, sched, shared, traps};

/// What the boot sequence sets up before the guest's main.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Install the trap table and callbacks. Without them any exception
    /// crashes the domain (the hypervisor has nowhere to deliver it).
    pub install_traps: bool,
    /// Take over the address space ([`mm::take_over`]) before main, so the
    /// mapping API and user mode are ready.
    pub own_page_tables: bool,
}

impl Config {
    /// Traps and callbacks; the builder's page tables.
    pub const DEFAULT: Config = Config {
        install_traps: true,
        own_page_tables: false,
    };
    /// No trap table and no callbacks.
    pub const NO_TRAPS: Config = Config {
        install_traps: false,
        own_page_tables: false,
    };
    /// Traps and callbacks, and the runtime's own page tables.
    pub const OWN_PAGE_TABLES: Config = Config {
        install_traps: true,
        own_page_tables: true,
    };
}

/// Size of the runtime's stack (in `.bss`).
pub const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct Stack(UnsafeCell<[u8; STACK_SIZE]>);

// SAFETY: only `_start` uses it, by switching `rsp` to its top.
unsafe impl Sync for Stack {}

static STACK: Stack = Stack(UnsafeCell::new([0; STACK_SIZE]));

global_asm!(
    ".pushsection .text.pv_entry, \"ax\", @progbits",
    ".globl _start",
    "_start:",
    "    cld",
    "    mov %rsi, %r12",
    "    mov %rsp, %r13",
    "    lea __pv_bss_start(%rip), %rdi",
    "    lea __pv_bss_end(%rip), %rcx",
    "    sub %rdi, %rcx",
    "    xor %eax, %eax",
    "    rep stosb",
    "    lea {stack}+{size}(%rip), %rsp",
    "    xor %ebp, %ebp",
    "    mov %r12, %rdi",
    "    mov %r13, %rsi",
    "    call __pv_guest_start",
    "    ud2",
    ".popsection",
    stack = sym STACK,
    size = const STACK_SIZE,
    options(att_syntax),
);

static START_INFO: Once<&'static StartInfo> = Once::new();
static LAYOUT: Once<BootLayout> = Once::new();

/// The start_info page the builder passed.
///
/// # Panics
///
/// Before the boot sequence stored it (never in guest code).
pub fn start_info() -> &'static StartInfo {
    START_INFO.get().expect("start_info is set at boot")
}

/// The bootstrap layout reconstructed at boot.
///
/// # Panics
///
/// Before the boot sequence computed it (never in guest code).
pub fn layout() -> &'static BootLayout {
    LAYOUT.get().expect("the layout is computed at boot")
}

/// Report a failure before hypercalls through the page are possible, with
/// direct `syscall`s, and crash.
fn early_fail(msg: &str) -> ! {
    // SAFETY: we run in guest kernel mode, and the only addresses passed
    // are the message and a live shutdown argument.
    let mut inv = unsafe { Syscall::new() };
    console::write_with(&mut inv, msg.as_bytes());
    loop {
        let _ = sched::request_with(&mut inv, ShutdownReason::Crash);
    }
}

/// The boot sequence (see the module documentation); runs `main` and powers
/// off when it returns.
///
/// # Safety
///
/// Called once, by the `__pv_guest_start` that `entry!` emits, with the
/// `rsi` (`start_info`) and `rsp` (`entry_rsp`) the builder passed to
/// `_start`: `start_info` points at the builder's start_info page, which
/// stays mapped and unchanged while the guest runs.
pub unsafe fn boot(
    start_info: *const StartInfo,
    entry_rsp: u64,
    config: &Config,
    main: impl FnOnce(&'static StartInfo),
) -> ! {
    if !hypercall::is_initialised() {
        early_fail("pv-runtime: the hypercall page was not filled by the builder\n");
    }
    assert!(
        !start_info.is_null() && start_info.is_aligned(),
        "pv-runtime: bad start_info pointer {start_info:p}"
    );
    // SAFETY: the caller passes the builder's start_info page (contract
    // above); it is a mapped, aligned, initialised `StartInfo` for the
    // guest's lifetime and nothing writes it behind our back.
    let si: &'static StartInfo = unsafe { &*start_info };
    assert!(
        si.magic.starts_with(START_INFO_MAGIC),
        "pv-runtime: start_info magic is \"{}\"",
        Ascii(c_str(&si.magic))
    );
    START_INFO.call_once(|| si);

    if config.install_traps
        && let Err(e) = traps::install()
    {
        panic!("pv-runtime: installing the trap table failed: {e}");
    }
    if let Err(e) = shared::map(si) {
        panic!("pv-runtime: mapping shared_info failed: {e}");
    }

    let layout = match BootLayout::new(si, notes::VIRT_BASE) {
        Ok(l) => LAYOUT.call_once(|| l),
        Err(e) => panic!("pv-runtime: bootstrap layout: {e}"),
    };
    let entries = usize::try_from(si.nr_pages).expect("nr_pages fits in usize");
    let p2m_ptr: *const AtomicU64 = ptr::with_exposed_provenance(
        usize::try_from(si.mfn_list.addr()).expect("an address fits in usize"),
    );
    assert!(
        !p2m_ptr.is_null() && p2m_ptr.is_aligned(),
        "pv-runtime: bad mfn_list {p2m_ptr:p}"
    );
    // SAFETY: the builder maps the P2M array (`nr_pages` 8-byte entries,
    // 8-byte aligned as checked above) writable inside the bootstrap region and
    // hands it to the guest, which owns it for its lifetime; `AtomicU64` has the
    // layout of `u64`, and the runtime writes entries only through these atomics
    // (`mm::set_p2m`), so a shared slice for the guest's lifetime is sound.
    let p2m: &'static [AtomicU64] = unsafe { core::slice::from_raw_parts(p2m_ptr, entries) };
    let heap = entry_rsp == layout.boot_stack.end;
    mm::init(layout, p2m, heap, si.pt_base);
    crate::console::init(si);
    let dropped = mm::frames_dropped();
    if dropped != 0 {
        crate::println!(
            "pv-runtime: warning: no bitmap for the whole free range (heap too small); \
             {dropped} frames at its end are not used"
        );
    }
    if !heap {
        crate::println!(
            "pv-runtime: warning: entry stack {entry_rsp:#x} is not the boot stack start_info \
             implies ({:#x}); heap disabled",
            layout.boot_stack.end
        );
    }

    if config.own_page_tables
        && let Err(e) = mm::take_over()
    {
        panic!("pv-runtime: taking over the address space failed: {e}");
    }

    main(si);
    sched::poweroff()
}
