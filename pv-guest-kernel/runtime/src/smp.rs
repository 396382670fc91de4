//! Secondary vCPUs: find them, start them with a closure, and know which
//! one the code runs on (`vcpu_op`, ABI digest §6.8).
//!
//! ```ignore
//! fn work(vcpu: VcpuId) { println!("hello from vCPU {}", vcpu.0); }
//! for v in 1..smp::nr_vcpus() {
//!     smp::start(VcpuId(v), &work)?;
//! }
//! ```
//!
//! * [`nr_vcpus`] probes `VCPUOP_is_up` on ids 0, 1, ... until Xen answers
//!   `-ENOENT` (as Linux's `xen_fill_possible_map`); at most [`MAX_VCPUS`]
//!   (the vCPUs with a `vcpu_info` slot in shared_info).
//! * [`start`] gives the vCPU a 64 KiB stack from the heap and a
//!   `vcpu_guest_context` (`pv_runtime_core::smp::secondary_context`: kernel
//!   mode on the kernel's current L4, the runtime's virtual IDT and
//!   callbacks, its per-vCPU block as kernel GS base), then calls
//!   `VCPUOP_initialise` and `VCPUOP_up`. The vCPU enters the runtime with
//!   events masked and runs the closure; when the closure returns it marks
//!   itself [`VcpuState::Finished`] and goes down (`VCPUOP_down` on
//!   itself; Xen powers the domain off if it was the last vCPU up).
//! * [`current`]: the vCPU the caller runs on. Each vCPU's kernel GS base
//!   points at its per-vCPU block (its id first); the first [`start`] sets
//!   vCPU 0's with `set_segment_base(SEGBASE_GS_KERNEL)`. Before that every
//!   caller is vCPU 0 and no GS load happens, so single-vCPU guests (and
//!   guests that change their own GS base) are unaffected.
//!
//! What the rest of the runtime keeps per vCPU once several run: the
//! virtual interrupt flag and the upcall ([`crate::evtchn`]: each vCPU's
//! `vcpu_info` slot, its selector, and only the ports bound to it), the
//! `VIRQ_TIMER` port, armed deadline and counts ([`crate::time`]), the
//! pvclock read, CR2. Shared state is locked: the port handler table,
//! the heap, the mapper, the console (a line is written whole). Not yet
//! per vCPU: user mode ([`crate::user`] runs on one vCPU at a time), and a
//! replacement of the trap table or callbacks (`traps::reinstall`) acts on
//! the calling vCPU only, as in Xen.
//!
//! [`initialise`], [`up`], [`down`] and [`is_up`] are the raw `vcpu_op`
//! calls, for tests of the hypervisor's answers; [`prepare`] readies a vCPU
//! for a test's own `initialise` and `up`.

extern crate alloc;

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use hypercall_abi::hypercall::{set_segment_base, vcpu_op};
use hypercall_abi::vcpu::VcpuOp;
use hypercall_abi::xen::{SEGBASE_GS_KERNEL, VcpuGuestContext};
use hypercall_abi::{Errno, GuestPtr, VcpuId};
use pv_runtime_core::smp::{ContextError, SecondaryStart, secondary_context};
use spin::{Mutex, Once};

pub use pv_runtime_core::smp::{MAX_VCPUS, others_mask};

use crate::hypercall::{handle, hc};

/// Stack size of a secondary vCPU.
pub const STACK_SIZE: usize = 64 * 1024;

/// One vCPU's block; its kernel GS base points here.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct PerCpu {
    /// The vCPU id (read as `gs:0`).
    id: u32,
}

const fn percpu_table() -> [PerCpu; MAX_VCPUS] {
    let mut t = [PerCpu { id: 0 }; MAX_VCPUS];
    let mut i = 0;
    let mut id = 0u32;
    while i < MAX_VCPUS {
        t[i].id = id;
        i += 1;
        id += 1;
    }
    t
}

/// The highest vCPU id the runtime runs.
#[allow(clippy::cast_possible_truncation)] // 32 fits
const LAST_ID: u32 = MAX_VCPUS as u32 - 1;

static PERCPU: [PerCpu; MAX_VCPUS] = percpu_table();

/// Set once vCPU 0's GS base points at its block: from then on [`current`]
/// reads `gs:0`.
static ACTIVE: AtomicBool = AtomicBool::new(false);
static ACTIVATE: Once<Result<(), Errno>> = Once::new();
static NR_VCPUS: AtomicU32 = AtomicU32::new(0);

/// What a secondary vCPU runs.
pub type Entry = &'static (dyn Fn(VcpuId) + Sync);

static ENTRIES: Mutex<[Option<Entry>; MAX_VCPUS]> = Mutex::new([None; MAX_VCPUS]);
static STATES: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(0) }; MAX_VCPUS];
static STACK_TOPS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// Where a vCPU is in its life, as the runtime sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Not started by [`start`] (vCPU 0 always reads `Running`).
    Idle,
    /// [`start`] is initialising it, or it was brought up and has not
    /// entered the runtime yet.
    Starting,
    /// Running its closure.
    Running,
    /// Its closure returned; it went down.
    Finished,
}

const IDLE: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
const FINISHED: u8 = 3;

/// Why [`start`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// vCPU 0, or an id at or past [`nr_vcpus`].
    NoSuchVcpu(u32),
    /// [`start`] was already called for it.
    AlreadyStarted(u32),
    /// The context was refused before the call.
    Context(ContextError),
    /// `set_segment_base` for vCPU 0's per-vCPU block failed.
    SegmentBase(Errno),
    /// `VCPUOP_initialise` failed.
    Initialise(Errno),
    /// `VCPUOP_up` failed.
    Up(Errno),
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartError::NoSuchVcpu(v) => write!(f, "no vCPU {v} to start"),
            StartError::AlreadyStarted(v) => write!(f, "vCPU {v} was already started"),
            StartError::Context(e) => write!(f, "context: {e}"),
            StartError::SegmentBase(e) => write!(f, "set_segment_base: {e}"),
            StartError::Initialise(e) => write!(f, "VCPUOP_initialise: {e}"),
            StartError::Up(e) => write!(f, "VCPUOP_up: {e}"),
        }
    }
}

/// Whether per-vCPU ids are in use (a secondary vCPU was started).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// The vCPU the caller runs on (vCPU 0 before any [`start`]).
pub fn current() -> VcpuId {
    if !active() {
        return VcpuId(0);
    }
    let id: u32;
    // SAFETY: once ACTIVE is set, every vCPU that runs runtime code has its
    // kernel GS base at its `PerCpu` block (vCPU 0 by `activate`, the others
    // from their `VCPUOP_initialise` context), and guest kernel code always
    // runs with the kernel GS base; `gs:0` is the block's `id`, a `u32`
    // that is never written. The load touches no other memory.
    unsafe {
        asm!(
            "mov {id:e}, dword ptr gs:[0]",
            id = out(reg) id,
            options(nostack, readonly, preserves_flags)
        );
    }
    // Never out of range: the blocks hold 0..MAX_VCPUS.
    VcpuId(id.min(LAST_ID))
}

/// [`current`] as an index (below [`MAX_VCPUS`]).
pub fn index() -> usize {
    current().0 as usize
}

fn percpu_addr(vcpu: usize) -> u64 {
    core::ptr::from_ref(&PERCPU[vcpu]).addr() as u64
}

fn activate() -> Result<(), Errno> {
    *ACTIVATE.call_once(|| {
        set_segment_base(&mut hc(), SEGBASE_GS_KERNEL, percpu_addr(0))?;
        ACTIVE.store(true, Ordering::Release);
        Ok(())
    })
}

/// `VCPUOP_is_up`: whether `vcpu` is up (`-ENOENT` if the domain has no
/// such vCPU).
pub fn is_up(vcpu: VcpuId) -> Result<bool, Errno> {
    vcpu_op(&mut hc(), VcpuOp::IsUp.nr(), vcpu, GuestPtr::NULL).map(|r| r != 0)
}

/// `VCPUOP_up`: bring an initialised vCPU up (`-EINVAL` if it never was
/// initialised; 0 if it is up already).
pub fn up(vcpu: VcpuId) -> Result<(), Errno> {
    vcpu_op(&mut hc(), VcpuOp::Up.nr(), vcpu, GuestPtr::NULL).map(drop)
}

/// `VCPUOP_down`: take `vcpu` down (it stops until someone calls [`up`];
/// on itself, the call returns only then). Xen powers the domain off when
/// the caller takes down the last vCPU that was up.
pub fn down(vcpu: VcpuId) -> Result<(), Errno> {
    vcpu_op(&mut hc(), VcpuOp::Down.nr(), vcpu, GuestPtr::NULL).map(drop)
}

/// `VCPUOP_initialise` with `ctx` (`-EEXIST` if `vcpu` was initialised
/// before).
pub fn initialise(vcpu: VcpuId, ctx: &VcpuGuestContext) -> Result<(), Errno> {
    vcpu_op(&mut hc(), VcpuOp::Initialise.nr(), vcpu, handle(ctx).cast()).map(drop)
}

/// How many vCPUs the domain has: `VCPUOP_is_up` on 0, 1, ... until
/// `-ENOENT`, at most [`MAX_VCPUS`]. Probed once.
pub fn nr_vcpus() -> u32 {
    let cached = NR_VCPUS.load(Ordering::Acquire);
    if cached != 0 {
        return cached;
    }
    let mut n = 1;
    while (n as usize) < MAX_VCPUS && is_up(VcpuId(n)) != Err(Errno::ENOENT) {
        n += 1;
    }
    NR_VCPUS.store(n, Ordering::Release);
    n
}

/// What the runtime knows of `vcpu`.
pub fn state(vcpu: VcpuId) -> VcpuState {
    if vcpu.0 == 0 {
        return VcpuState::Running;
    }
    let s = usize::try_from(vcpu.0)
        .ok()
        .and_then(|v| STATES.get(v))
        .map_or(IDLE, |s| s.load(Ordering::Acquire));
    match s {
        STARTING => VcpuState::Starting,
        RUNNING => VcpuState::Running,
        FINISHED => VcpuState::Finished,
        _ => VcpuState::Idle,
    }
}

/// The `VCPUOP_initialise` context [`start`] uses for `vcpu` (its stack,
/// if it has one yet, else a zero stack top, which is refused).
pub fn context(vcpu: VcpuId) -> Result<VcpuGuestContext, ContextError> {
    let v = usize::try_from(vcpu.0)
        .unwrap_or(MAX_VCPUS)
        .min(MAX_VCPUS - 1);
    let (event, failsafe, syscall) = crate::traps::callback_entries();
    let start = SecondaryStart {
        entry: secondary_entry as *const () as usize as u64,
        arg: u64::from(vcpu.0),
        stack_top: STACK_TOPS[v].load(Ordering::Acquire),
        root: crate::mm::kernel_root(),
        gs_base_kernel: percpu_addr(v),
        event_callback: event,
        failsafe_callback: failsafe,
        syscall_callback: syscall,
    };
    secondary_context(&start, &crate::traps::table())
}

/// Start secondary vCPU `vcpu` running `f(vcpu)` (see the module
/// documentation): [`prepare`], `VCPUOP_initialise`, `VCPUOP_up`. Returns
/// once Xen accepted `VCPUOP_up`; the vCPU may not have entered `f` yet
/// ([`state`]).
pub fn start(vcpu: VcpuId, f: Entry) -> Result<(), StartError> {
    let ctx = prepare(vcpu, f)?;
    if let Err(e) = initialise(vcpu, &ctx) {
        STATES[vcpu.0 as usize].store(IDLE, Ordering::Release);
        return Err(StartError::Initialise(e));
    }
    up(vcpu).map_err(StartError::Up)
}

/// Everything [`start`] does before the hypercalls: claim `vcpu` (state
/// [`VcpuState::Starting`]), give it a stack and `f`, and return the
/// context for `VCPUOP_initialise`. For tests that issue [`initialise`]
/// and [`up`] themselves (from several vCPUs at once, say); [`context`]
/// returns the same context afterwards.
pub fn prepare(vcpu: VcpuId, f: Entry) -> Result<VcpuGuestContext, StartError> {
    if vcpu.0 == 0 || vcpu.0 >= nr_vcpus() {
        return Err(StartError::NoSuchVcpu(vcpu.0));
    }
    let v = vcpu.0 as usize;
    activate().map_err(StartError::SegmentBase)?;
    if STATES[v]
        .compare_exchange(IDLE, STARTING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(StartError::AlreadyStarted(vcpu.0));
    }
    if STACK_TOPS[v].load(Ordering::Acquire) == 0 {
        // Leaked on purpose: the vCPU keeps its stack for the domain's life.
        let stack: &'static mut [u128] = alloc::vec![0u128; STACK_SIZE / 16].leak();
        let top = stack.as_ptr_range().end.addr() as u64;
        STACK_TOPS[v].store(top, Ordering::Release);
    }
    crate::evtchn::without_events(|| ENTRIES.lock()[v] = Some(f));
    context(vcpu).map_err(|e| {
        STATES[v].store(IDLE, Ordering::Release);
        StartError::Context(e)
    })
}

/// Where a secondary vCPU enters the runtime (its context's `rip`; `rdi` =
/// its id, `rsp` = its stack top - 8, kernel GS base = its block).
extern "C" fn secondary_entry(vcpu: u64) -> ! {
    let id = VcpuId(u32::try_from(vcpu).unwrap_or(0).min(LAST_ID));
    let v = id.0 as usize;
    // Events stay masked until the closure enables them.
    crate::shared::set_upcall_mask(v, 1);
    STATES[v].store(RUNNING, Ordering::Release);
    let f = crate::evtchn::without_events(|| ENTRIES.lock()[v]);
    if let Some(f) = f {
        f(id);
    }
    crate::evtchn::disable_events();
    STATES[v].store(FINISHED, Ordering::Release);
    loop {
        // Returns only if someone brings the vCPU up again.
        let _ = down(id);
    }
}
