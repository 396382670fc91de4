//! `smp`: every vCPU of the domain at work at once, through `pv_runtime::smp`.
//!
//! Needs at least 2 vCPUs (the count comes from probing `VCPUOP_is_up`;
//! at most 8 take part). Before starting them: `is_up` of each secondary is
//! 0 and `up` of one never initialised is -EINVAL. vCPU 1 is started with
//! `smp::start` (`VCPUOP_initialise` + `up`); every later one is readied
//! with `smp::prepare` and then initialised by vCPUs 0 and 1 at the same
//! time (exactly one call succeeds, the other is -EEXIST) and brought up.
//! Then the phases run in lock step:
//!
//! * **ipi**: vCPU 0 and each secondary exchange events on `bind_ipi` ports
//!   (one notifying vCPU 0 per secondary, one notifying each secondary,
//!   bound by itself), strictly one in flight per pair, the waiting side
//!   blocking (`SCHEDOP_block`, events enabled), until `ipis=` (100000)
//!   were delivered in total; each handler checks it runs on the vCPU the
//!   port notifies. Then one loopback port per secondary moved there with
//!   `EVTCHNOP_bind_vcpu` must be handled on it.
//! * **timer**: each vCPU binds its own `VIRQ_TIMER`, stops its periodic
//!   timer, arms a single-shot timer and blocks until its own event came
//!   (not before the deadline); `set_singleshot_timer` for another vCPU is
//!   -EINVAL.
//! * **mmu**: each vCPU maps and unmaps its frames with `mmu_update` in its
//!   own L1 (read-write) and in one shared L1 (read-only aliases, slots of
//!   its own), pins and unpins its L1 (and, under a lock, the shared one),
//!   flushes with `MMUEXT_INVLPG_MULTI` / `TLB_FLUSH_MULTI` on masks of the
//!   other vCPUs, and checks every mapping reads the value written through
//!   the other. At the end the L1s are freed and must then map writable
//!   (no page-table type left).
//! * **race**: every vCPU issues `VCPUOP_is_up`/`up`/`down`/`initialise` on
//!   random vCPUs (itself included) for `race=` (2000) operations; a
//!   secondary may take itself down (someone else brings it up), anyone but
//!   vCPU 0 may be taken down (and is brought up by the same caller).
//!   Expected answers (Xen 4.17's `do_vcpu_op`): `is_up` 0 or 1, `up` 0,
//!   `down` 0, `initialise` of an initialised vCPU -EEXIST, every operation
//!   on a vCPU id past the last (or `u32::MAX`) -ENOENT.
//!
//! `down` is asynchronous in Xen (the vCPU is marked down at once and
//! stopped later), so `is_up` of itself may read 0 on a vCPU just taken down
//! (counted as `self_down_seen`).
//!
//! Each secondary then returns and takes itself down; vCPU 0 checks they
//! all are down. Result line: `smp: PASS vcpus=<n> ipis=<n> timers=<n>
//! mmu=<updates> race=<ops> eexist=<n> enoent=<n> self_down_seen=<n>
//! raced_init=<n>`;
//! `debug=1` adds `smp-debug:` progress lines.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pv_runtime::abi::hypercall::vcpu_op;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp};
use pv_runtime::abi::vcpu::{VcpuOp, VcpuSetSingleshotTimer};
use pv_runtime::abi::xen::{Pte, PteFlags};
use pv_runtime::abi::{DomId, Errno, EvtchnPort, Mfn, VcpuId};
use pv_runtime::evtchn::{self, Handler};
use pv_runtime::hypercall::{handle, handle_slice, invoker};
use pv_runtime::smp::{self, VcpuState};
use pv_runtime::{Config, StartInfo, mm, sched, time};
use pv_test_guests::{arg_u64, ext_op, fail, l1e, mmu1, ok, uvm};

const NAME: &str = "smp";
/// vCPUs that take part.
const MAX: usize = 8;
/// [`MAX`] as a vCPU id bound.
const MAX_ID: u32 = 8;
/// Frames each vCPU maps in the mmu phase.
const FRAMES: usize = 4;
/// Shared slots of the shared L1 per vCPU (slot 0 of each window is the
/// mapper's own entry, never touched).
const SHARED_SLOTS: u64 = 63;
/// Base of the mmu windows: the shared one, then one 2 MiB window per vCPU.
const WINDOWS: u64 = 0x6000_0000_0000;
const WINDOW: u64 = 2 << 20;

static NR: AtomicU32 = AtomicU32::new(0);
/// vCPUs the domain has (the first id past them answers -ENOENT).
static FOUND: AtomicU32 = AtomicU32::new(0);
/// Phase number everyone is allowed into.
static PHASE: AtomicU32 = AtomicU32::new(0);
/// Secondaries that finished the current phase.
static ARRIVED: AtomicU32 = AtomicU32::new(0);

/// The port that notifies vCPU 0 for secondary `k`, and the one that
/// notifies `k`.
static TO0: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];
static TOK: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];
/// Events received by vCPU 0 from `k`, and by `k`.
static GOT0: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static GOTK: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
/// Round trips secondary `k` makes.
static ROUNDS: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
/// Handlers that ran on a vCPU other than the port's.
static WRONG_VCPU: AtomicU64 = AtomicU64::new(0);
/// bind_vcpu: the moved port per secondary, and where its event was handled.
static MOVED: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];
static MOVED_ON: [AtomicU32; MAX] = [const { AtomicU32::new(u32::MAX) }; MAX];

/// Timer events each vCPU saw in the timer phase.
static TIMERS: AtomicU64 = AtomicU64::new(0);

/// mmu phase: the L1 entries' machine addresses (shared, then per vCPU).
static SHARED_L1: AtomicU64 = AtomicU64::new(0);
static PRIVATE_L1: [AtomicU64; MAX] = [const { AtomicU64::new(0) }; MAX];
static FRAME_MFNS: [[AtomicU64; FRAMES]; MAX] =
    [const { [const { AtomicU64::new(0) }; FRAMES] }; MAX];
/// Held (events masked) around a pin/unpin cycle of the shared L1: a
/// second pin of a pinned table is -EINVAL.
static SHARED_PIN: AtomicBool = AtomicBool::new(false);
static MMU_UPDATES: AtomicU64 = AtomicU64::new(0);
static MMU_ITERS: AtomicU64 = AtomicU64::new(0);

/// race phase: operations done, operations per vCPU, answers counted.
static RACE_OPS: AtomicU64 = AtomicU64::new(0);
static RACE_LEN: AtomicU64 = AtomicU64::new(0);
static EEXIST: AtomicU64 = AtomicU64::new(0);
static ENOENT: AtomicU64 = AtomicU64::new(0);
static RACE_DONE: AtomicU32 = AtomicU32::new(0);
/// Times a running vCPU read `is_up` 0 for itself (taken down, not yet
/// stopped).
static SELF_DOWN_SEEN: AtomicU64 = AtomicU64::new(0);

/// First `initialise` of vCPUs 2.. raced by vCPUs 0 and 1: go, vCPU 1
/// done, and per vCPU how many calls succeeded and how many got -EEXIST.
static INIT_GO: AtomicBool = AtomicBool::new(false);
static INIT_DONE: AtomicBool = AtomicBool::new(false);
static INIT_OK: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];
static INIT_EEXIST: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];

/// Set by the first failure, on any vCPU: only it prints a result line.
static FAILED: AtomicBool = AtomicBool::new(false);

/// `debug=1`: progress lines (`smp-debug: ...`) besides the result line.
static DEBUG: AtomicBool = AtomicBool::new(false);

/// A progress line, with `debug=1` only.
macro_rules! dbg_line {
    ($($a:tt)*) => {
        if DEBUG.load(Ordering::SeqCst) {
            pv_runtime::println!("smp-debug: {} ms vCPU {}: {}", time::system_time_ns() / 1_000_000, smp::index(), format_args!($($a)*));
        }
    };
}

fn nr() -> usize {
    nr32() as usize
}

fn nr32() -> u32 {
    NR.load(Ordering::SeqCst)
}

/// Fail from any vCPU: one line, then crash the domain.
fn die(why: core::fmt::Arguments<'_>) -> ! {
    if FAILED.swap(true, Ordering::SeqCst) {
        loop {
            sched::yield_now();
        }
    }
    fail(NAME, format_args!("vCPU {}: {why}", smp::index()))
}

fn want<T: PartialEq + core::fmt::Debug>(what: &str, got: T, expected: T) {
    if got != expected {
        die(format_args!("{what}: got {got:?}, expected {expected:?}"));
    }
}

/// Secondaries: wait until phase `p` is open. Blocks (the timer wakes it
/// every 10 ms) rather than spinning, so a waiting vCPU leaves its CPU to
/// those still at work.
fn enter(p: u32) {
    wait_for(|| PHASE.load(Ordering::SeqCst) >= p);
}

/// Secondaries: report the phase done.
fn leave() {
    ARRIVED.fetch_add(1, Ordering::SeqCst);
}

/// vCPU 0: run phase `p` (open it, do `own`, wait for every secondary).
fn phase(p: u32, own: impl FnOnce()) {
    ARRIVED.store(0, Ordering::SeqCst);
    PHASE.store(p, Ordering::SeqCst);
    own();
    let want = nr32() - 1;
    wait_for(|| ARRIVED.load(Ordering::SeqCst) >= want);
}

/// Block until `cond` holds (the timer wakes the check every 10 ms).
fn wait_for(cond: impl Fn() -> bool) {
    while !cond() {
        let deadline = time::system_time_ns() + 10_000_000;
        if let Err(e) = sched::wait_until(&cond, Some(deadline)) {
            die(format_args!("wait_until: {e}"));
        }
    }
}

// ----- first initialise, raced -----------------------------------------------

/// vCPUs 0 and 1 at once: `VCPUOP_initialise` of every vCPU from 2 on, with
/// the context `smp::prepare` made. Exactly one of the two calls per vCPU
/// must succeed; the other must get -EEXIST.
fn init_race() {
    for k in 2..nr32() {
        let ctx = match smp::context(VcpuId(k)) {
            Ok(c) => c,
            Err(e) => die(format_args!("context({k}): {e}")),
        };
        match smp::initialise(VcpuId(k), &ctx) {
            Ok(()) => INIT_OK[k as usize].fetch_add(1, Ordering::SeqCst),
            Err(Errno::EEXIST) => INIT_EEXIST[k as usize].fetch_add(1, Ordering::SeqCst),
            Err(e) => die(format_args!("initialise({k}) raced: {e}")),
        };
    }
}

// ----- ipi -----------------------------------------------------------------

fn secondary_of_to0(port: EvtchnPort) -> Option<usize> {
    (1..nr()).find(|&k| TO0[k].load(Ordering::SeqCst) == port.0)
}

fn on_to0(port: EvtchnPort) {
    if smp::index() != 0 {
        WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(k) = secondary_of_to0(port) {
        GOT0[k].fetch_add(1, Ordering::SeqCst);
        let _ = evtchn::send(EvtchnPort(TOK[k].load(Ordering::SeqCst)));
    }
}

fn on_tok(port: EvtchnPort) {
    let me = smp::index();
    if TOK.get(me).map(|p| p.load(Ordering::SeqCst)) != Some(port.0) {
        WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
        return;
    }
    GOTK[me].fetch_add(1, Ordering::SeqCst);
}

fn on_moved(port: EvtchnPort) {
    if let Some(k) = (1..nr()).find(|&k| MOVED[k].load(Ordering::SeqCst) == port.0) {
        MOVED_ON[k].store(smp::current().0, Ordering::SeqCst);
    }
}

fn ipi_secondary(k: usize) {
    let port = ok(NAME, "bind_ipi(self)", evtchn::bind_ipi(smp::current()));
    if evtchn::set_handler(port, Handler::Fn(on_tok)).is_err() {
        die(format_args!("no handler slot"));
    }
    TOK[k].store(port.0, Ordering::SeqCst);
    let to0 = EvtchnPort(TO0[k].load(Ordering::SeqCst));
    for i in 0..ROUNDS[k].load(Ordering::SeqCst) {
        if i % 5000 == 0 {
            dbg_line!("ipi: round {i}");
        }
        let before = GOTK[k].load(Ordering::SeqCst);
        if let Err(e) = evtchn::send(to0) {
            die(format_args!("send: {e}"));
        }
        loop {
            let dl = time::system_time_ns() + 1_000_000_000;
            let r = sched::wait_until(|| GOTK[k].load(Ordering::SeqCst) > before, Some(dl));
            match r {
                Ok(true) => break,
                // A watchdog re-check every second; the reply wakes it.
                Ok(false) => {}
                Err(e) => die(format_args!("wait_until: {e}")),
            }
        }
    }
}

// ----- timer ---------------------------------------------------------------

fn timer_phase() {
    let me = smp::current();
    ok(NAME, "timer_port", time::timer_port());
    ok(NAME, "stop_periodic_timer", time::stop_periodic_timer());
    let before = time::timer_events();
    let deadline = time::system_time_ns() + 5_000_000 * (u64::from(me.0) + 1);
    ok(
        NAME,
        "set_singleshot_timer",
        time::set_singleshot_timer(deadline),
    );
    let r = sched::wait_until(|| time::timer_events() > before, None);
    want("wait for VIRQ_TIMER", r, Ok(true));
    let now = time::system_time_ns();
    if now < deadline {
        die(format_args!("timer event {} ns early", deadline - now));
    }
    TIMERS.fetch_add(1, Ordering::SeqCst);
    // Another vCPU's single-shot timer is not ours to arm.
    let other = VcpuId(if me.0 == 0 { 1 } else { 0 });
    let arg = VcpuSetSingleshotTimer {
        timeout_abs_ns: deadline,
        flags: 0,
        _pad: 0,
    };
    // SAFETY: `arg` is a live local the hypervisor only reads.
    let mut inv = unsafe { invoker() };
    let r = vcpu_op(
        &mut inv,
        VcpuOp::SetSingleshotTimer.nr(),
        other,
        handle(&arg).cast(),
    );
    want("set_singleshot_timer(other vCPU)", r, Err(Errno::EINVAL));
}

// ----- mmu -----------------------------------------------------------------

fn pte(mfn: u64, rw: bool) -> u64 {
    let mut f = PteFlags::PRESENT | PteFlags::ACCESSED;
    if rw {
        f |= PteFlags::RW | PteFlags::DIRTY;
    }
    Pte::new(Mfn(mfn), f).0
}

fn invlpg_multi(va: u64, mask: u64) -> Result<u64, Errno> {
    let m = [mask];
    ext_op(MmuextOp::new(
        MmuextCmd::InvlpgMulti,
        va,
        handle_slice(&m).addr(),
    ))
}

fn tlb_flush_multi(mask: u64) -> Result<u64, Errno> {
    let m = [mask];
    ext_op(MmuextOp::new(
        MmuextCmd::TlbFlushMulti,
        0,
        handle_slice(&m).addr(),
    ))
}

fn write_u64(va: u64, value: u64) {
    let Ok(addr) = usize::try_from(va) else {
        die(format_args!("address {va:#x}"));
    };
    let p: *mut u64 = core::ptr::with_exposed_provenance_mut(addr);
    // SAFETY: `va` lies in this vCPU's private window, mapped read-write
    // (just now, and flushed) to a frame this vCPU alone writes; no Rust
    // object lives there.
    unsafe { p.write_volatile(value) }
}

fn mmu_phase(me: usize) {
    let n = nr();
    let all = smp::others_mask(n, usize::MAX);
    let others = smp::others_mask(n, me);
    let private = PRIVATE_L1[me].load(Ordering::SeqCst);
    let shared = SHARED_L1.load(Ordering::SeqCst);
    let private_l1 = Mfn(private >> 12);
    let shared_l1 = Mfn(shared >> 12);
    let private_va = WINDOWS + WINDOW * (me as u64 + 1);
    let iters = MMU_ITERS.load(Ordering::SeqCst);
    let mut updates = 0u64;
    for (it, j) in (0..iters).zip((0..FRAMES).cycle()) {
        let mfn = FRAME_MFNS[me][j].load(Ordering::SeqCst);
        let p = 1 + it % 511;
        let s = 1 + me as u64 * 64 + it % SHARED_SLOTS;
        let (pva, sva) = (private_va + p * 4096, WINDOWS + s * 4096);
        want(
            "mmu_update(private)",
            mmu1(private + p * 8, pte(mfn, true)).0,
            Ok(0),
        );
        want(
            "mmu_update(shared)",
            mmu1(shared + s * 8, pte(mfn, false)).0,
            Ok(0),
        );
        want("invlpg_multi(private, all)", invlpg_multi(pva, all), Ok(0));
        want(
            "invlpg_multi(shared, others)",
            invlpg_multi(sva, others),
            Ok(0),
        );
        want(
            "invlpg_local(shared)",
            ext_op(MmuextOp::new(MmuextCmd::InvlpgLocal, sva, 0)),
            Ok(0),
        );
        let value = (me as u64) << 56 | it << 8 | j as u64;
        write_u64(pva + (it % 512) * 8, value);
        let seen = pv_test_guests::read(sva + (it % 512) * 8);
        if seen != value {
            die(format_args!(
                "iteration {it}: shared alias reads {seen:#x}, wrote {value:#x}"
            ));
        }
        want("unmap(private)", mmu1(private + p * 8, 0).0, Ok(0));
        want("unmap(shared)", mmu1(shared + s * 8, 0).0, Ok(0));
        updates += 4;
        if it % 8 == 0 {
            let pin = MmuextOp::on_frame(MmuextCmd::PinL1Table, private_l1);
            want("pin(private L1)", ext_op(pin), Ok(0));
            let unpin = MmuextOp::on_frame(MmuextCmd::UnpinTable, private_l1);
            want("unpin(private L1)", ext_op(unpin), Ok(0));
        }
        if it % 16 == 0 {
            evtchn::without_events(|| {
                while SHARED_PIN
                    .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    core::hint::spin_loop();
                }
                let pin = MmuextOp::on_frame(MmuextCmd::PinL1Table, shared_l1);
                want("pin(shared L1)", ext_op(pin), Ok(0));
                let unpin = MmuextOp::on_frame(MmuextCmd::UnpinTable, shared_l1);
                want("unpin(shared L1)", ext_op(unpin), Ok(0));
                SHARED_PIN.store(false, Ordering::Release);
            });
            want("tlb_flush_multi(others)", tlb_flush_multi(others), Ok(0));
        }
        if it % 64 == 0 {
            sched::yield_now();
        }
    }
    MMU_UPDATES.fetch_add(updates, Ordering::SeqCst);
}

/// vCPU 0, before the phase: the windows' L1s and everyone's frames.
fn mmu_setup() {
    let anchor = match mm::alloc_frame() {
        Some(f) => f,
        None => fail(NAME, format_args!("no frame")),
    };
    for w in 0..=nr() {
        let va = WINDOWS + w as u64 * WINDOW;
        ok(
            NAME,
            "map window",
            mm::map(va, &[anchor.mfn], PteFlags::empty()).map_err(|_| Errno::ENOMEM),
        );
        let ma = l1e(NAME, va).0;
        if w == 0 {
            SHARED_L1.store(ma, Ordering::SeqCst);
        } else {
            PRIVATE_L1[w - 1].store(ma, Ordering::SeqCst);
        }
    }
    for frames in FRAME_MFNS.iter().take(nr()) {
        for f in frames {
            match mm::alloc_frame() {
                Some(fr) => f.store(fr.mfn.0, Ordering::SeqCst),
                None => fail(NAME, format_args!("no frame")),
            }
        }
    }
}

/// vCPU 0, after the phase: free the windows; each L1 must then map
/// writable (its page-table type count back at 0).
fn mmu_teardown() {
    for w in 0..=nr() {
        let va = WINDOWS + w as u64 * WINDOW;
        let l1 = if w == 0 {
            SHARED_L1.load(Ordering::SeqCst)
        } else {
            PRIVATE_L1[w - 1].load(Ordering::SeqCst)
        } >> 12;
        let mapped = ok(
            NAME,
            "unmap window",
            mm::unmap(va, 512).map_err(|_| Errno::EINVAL),
        );
        want("pages left in a window", mapped, 1);
        // The scratch page's L1 entry exists from boot.
        let scratch = pv_test_guests::SCRATCH_VA;
        want(
            "map a freed L1 writable",
            uvm(scratch, pte(l1, true), 2),
            Ok(0),
        );
        want("unmap it", uvm(scratch, 0, 2), Ok(0));
    }
}

// ----- race ----------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn race_phase(me: usize) {
    let n = u64::from(nr32());
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((me as u64 + 1) * 0x1234_5678_9ABC));
    let ops = RACE_LEN.load(Ordering::SeqCst);
    let mut count = 0u64;
    for _ in 0..ops {
        let t = u32::try_from(rng.next() % n).unwrap_or(0);
        let target = VcpuId(t);
        match rng.next() % 6 {
            0 => {
                // 0 or 1, even for the caller: `down` marks a vCPU down at
                // once and stops it only later, so a vCPU another one just
                // took down may still run and read 0 for itself.
                let r = smp::is_up(target);
                if r.is_err() {
                    want("is_up", r, Ok(true));
                }
                if t as usize == me && r == Ok(false) {
                    SELF_DOWN_SEEN.fetch_add(1, Ordering::SeqCst);
                }
            }
            1 => want("up(initialised)", smp::up(target), Ok(())),
            2 => {
                // vCPU 0 has no runtime stack to name: any valid context
                // does, the answer comes first.
                let ctx = match smp::context(target).or_else(|_| smp::context(VcpuId(1))) {
                    Ok(c) => c,
                    Err(e) => die(format_args!("context: {e}")),
                };
                want(
                    "initialise(initialised)",
                    smp::initialise(target, &ctx),
                    Err(Errno::EEXIST),
                );
                EEXIST.fetch_add(1, Ordering::SeqCst);
            }
            3 if t != 0 && t as usize != me => {
                want("down(other)", smp::down(target), Ok(()));
                let r = smp::is_up(target);
                if r.is_err() {
                    want("is_up(downed)", r, Ok(false));
                }
                want("up(downed)", smp::up(target), Ok(()));
            }
            4 if me != 0 => {
                // Returns when another vCPU brings this one up.
                want("down(self)", smp::down(smp::current()), Ok(()));
            }
            _ => {
                let bad = VcpuId(if rng.next() % 2 == 0 {
                    FOUND.load(Ordering::SeqCst)
                } else {
                    u32::MAX
                });
                want("is_up(bad id)", smp::is_up(bad), Err(Errno::ENOENT));
                want("up(bad id)", smp::up(bad), Err(Errno::ENOENT));
                want("down(bad id)", smp::down(bad), Err(Errno::ENOENT));
                let ctx = match smp::context(VcpuId(1)) {
                    Ok(c) => c,
                    Err(e) => die(format_args!("context: {e}")),
                };
                want(
                    "initialise(bad id)",
                    smp::initialise(bad, &ctx),
                    Err(Errno::ENOENT),
                );
                ENOENT.fetch_add(4, Ordering::SeqCst);
            }
        }
        count += 1;
    }
    RACE_OPS.fetch_add(count, Ordering::SeqCst);
}

/// vCPU 0 after its own race loop: bring up whoever is down until every
/// secondary finished its loop.
fn race_sweep() {
    while RACE_DONE.load(Ordering::SeqCst) < nr32() - 1 {
        for t in 1..nr32() {
            want("up(sweep)", smp::up(VcpuId(t)), Ok(()));
        }
        sched::yield_now();
    }
}

// ----- the vCPUs -------------------------------------------------------------

fn secondary(v: VcpuId) {
    let k = v.0 as usize;
    // The runtime enters with events masked; handlers run from here on.
    evtchn::enable_events();
    dbg_line!("entered");
    if k == 1 {
        wait_for(|| INIT_GO.load(Ordering::SeqCst));
        init_race();
        INIT_DONE.store(true, Ordering::SeqCst);
    }
    enter(1);
    ipi_secondary(k);
    leave();
    enter(2);
    timer_phase();
    leave();
    enter(3);
    mmu_phase(k);
    leave();
    enter(4);
    race_phase(k);
    RACE_DONE.fetch_add(1, Ordering::SeqCst);
    leave();
}

fn main(_si: &'static StartInfo) {
    DEBUG.store(arg_u64(NAME, "debug", 0) != 0, Ordering::SeqCst);
    let total = arg_u64(NAME, "ipis", 100_000);
    RACE_LEN.store(arg_u64(NAME, "race", 2000), Ordering::SeqCst);
    MMU_ITERS.store(arg_u64(NAME, "mmu_iters", 2000), Ordering::SeqCst);
    let found = smp::nr_vcpus();
    let n32 = found.min(MAX_ID);
    let n = n32 as usize;
    if n < 2 {
        fail(NAME, format_args!("needs at least 2 vCPUs, found {found}"));
    }
    NR.store(n32, Ordering::SeqCst);
    FOUND.store(found, Ordering::SeqCst);

    // Before any start: down, and up refused (never initialised).
    for k in 1..n32 {
        if ok(NAME, "is_up", smp::is_up(VcpuId(k))) {
            fail(NAME, format_args!("vCPU {k} is up before start"));
        }
        let r = smp::up(VcpuId(k));
        if r != Err(Errno::EINVAL) {
            fail(
                NAME,
                format_args!("up(uninitialised {k}): {r:?}, expected EINVAL"),
            );
        }
    }
    let r = smp::is_up(VcpuId(found));
    if r != Err(Errno::ENOENT) {
        fail(NAME, format_args!("is_up({found}): {r:?}, expected ENOENT"));
    }

    // Ports that notify vCPU 0, one per secondary; round trips split so
    // that twice their sum is `total`.
    let pairs = n as u64 - 1;
    let rounds = total / 2;
    for k in 1..n {
        let port = ok(NAME, "bind_ipi(0)", evtchn::bind_ipi(VcpuId(0)));
        if evtchn::set_handler(port, Handler::Fn(on_to0)).is_err() {
            fail(NAME, format_args!("no handler slot"));
        }
        TO0[k].store(port.0, Ordering::SeqCst);
        let extra = u64::from(k == 1) * (rounds % pairs);
        ROUNDS[k].store(rounds / pairs + extra, Ordering::SeqCst);
    }
    dbg_line!("probed {found} vCPUs");
    mmu_setup();
    dbg_line!("mmu setup done");
    evtchn::enable_events();

    // vCPU 1 the runtime's way; the others prepared, then initialised by
    // vCPUs 0 and 1 at once, then brought up.
    if let Err(e) = smp::start(VcpuId(1), &secondary) {
        fail(NAME, format_args!("start vCPU 1: {e}"));
    }
    for k in 2..n32 {
        if let Err(e) = smp::prepare(VcpuId(k), &secondary) {
            fail(NAME, format_args!("prepare vCPU {k}: {e}"));
        }
    }
    INIT_GO.store(true, Ordering::SeqCst);
    init_race();
    wait_for(|| INIT_DONE.load(Ordering::SeqCst));
    for k in 2..n32 {
        let (oks, eexists) = (
            INIT_OK[k as usize].load(Ordering::SeqCst),
            INIT_EEXIST[k as usize].load(Ordering::SeqCst),
        );
        if (oks, eexists) != (1, 1) {
            fail(
                NAME,
                format_args!("raced initialise of vCPU {k}: {oks} succeeded, {eexists} EEXIST"),
            );
        }
        ok(NAME, "up(raced)", smp::up(VcpuId(k)));
    }
    dbg_line!("started every vCPU");
    let init = smp::context(VcpuId(1));
    let init = match init {
        Ok(c) => c,
        Err(e) => fail(NAME, format_args!("context: {e}")),
    };
    expect_eexist(smp::initialise(VcpuId(1), &init), "initialise(started 1)");
    expect_eexist(smp::initialise(VcpuId(0), &init), "initialise(0)");
    dbg_line!("initialise answers checked");

    // ipi: vCPU 0 only answers, from its handler, blocking meanwhile.
    phase(1, || {});
    // Wait for the last replies' handlers (the secondaries counted them).
    let ipis: u64 = (1..n)
        .map(|k| GOT0[k].load(Ordering::SeqCst) + GOTK[k].load(Ordering::SeqCst))
        .sum();
    if ipis != total {
        fail(
            NAME,
            format_args!("{ipis} IPIs delivered, expected {total}"),
        );
    }
    let wrong = WRONG_VCPU.load(Ordering::SeqCst);
    if wrong != 0 {
        fail(
            NAME,
            format_args!("{wrong} events handled on the wrong vCPU"),
        );
    }
    dbg_line!("ipis counted");
    bind_vcpu_check();

    dbg_line!("ipi phase done");
    phase(2, timer_phase);
    dbg_line!("timer phase done");
    phase(3, || mmu_phase(0));
    dbg_line!("mmu phase done");
    mmu_teardown();
    dbg_line!("mmu teardown done");
    phase(4, || {
        race_phase(0);
        race_sweep();
    });

    dbg_line!("race phase done");
    // Everyone returns and takes itself down.
    for k in 1..n32 {
        while smp::state(VcpuId(k)) != VcpuState::Finished {
            let _ = smp::up(VcpuId(k));
            sched::yield_now();
        }
        let mut tries = 0;
        while ok(NAME, "is_up(finished)", smp::is_up(VcpuId(k))) {
            tries += 1;
            if tries > 100_000 {
                fail(NAME, format_args!("vCPU {k} finished but stays up"));
            }
            sched::yield_now();
        }
    }
    pv_runtime::println!(
        "{NAME}: PASS vcpus={n} ipis={ipis} timers={} mmu={} race={} eexist={} enoent={} self_down_seen={} raced_init={}",
        TIMERS.load(Ordering::SeqCst),
        MMU_UPDATES.load(Ordering::SeqCst),
        RACE_OPS.load(Ordering::SeqCst),
        EEXIST.load(Ordering::SeqCst) + 2,
        ENOENT.load(Ordering::SeqCst) + 1,
        SELF_DOWN_SEEN.load(Ordering::SeqCst),
        n32 - 2,
    );
}

fn expect_eexist(r: Result<(), Errno>, what: &str) {
    if r != Err(Errno::EEXIST) {
        fail(NAME, format_args!("{what}: {r:?}, expected EEXIST"));
    }
}

/// A loopback pair per secondary; the bound end moved to the secondary
/// with `EVTCHNOP_bind_vcpu` must be handled there.
fn bind_vcpu_check() {
    for id in 1..nr32() {
        let k = id as usize;
        let a = ok(NAME, "alloc_unbound", evtchn::alloc_unbound(DomId::SELF));
        let b = ok(
            NAME,
            "bind_interdomain",
            evtchn::bind_interdomain(DomId::SELF, a),
        );
        // Xen sets the new end pending: drop that before moving it.
        evtchn::mask(b);
        evtchn::clear_pending(b);
        MOVED[k].store(b.0, Ordering::SeqCst);
        if evtchn::set_handler(b, Handler::Fn(on_moved)).is_err() {
            fail(NAME, format_args!("no handler slot"));
        }
        ok(NAME, "bind_vcpu", evtchn::bind_vcpu(b, VcpuId(id)));
        ok(NAME, "unmask", evtchn::unmask(b));
        ok(NAME, "send", evtchn::send(a));
        let deadline = time::system_time_ns() + 5_000_000_000;
        while MOVED_ON[k].load(Ordering::SeqCst) == u32::MAX {
            if time::system_time_ns() > deadline {
                fail(NAME, format_args!("the port moved to vCPU {k} never fired"));
            }
            sched::yield_now();
        }
        let on = MOVED_ON[k].load(Ordering::SeqCst);
        if on != id {
            fail(NAME, format_args!("port moved to vCPU {k} handled on {on}"));
        }
        // The port number comes back for the next pair.
        MOVED[k].store(0, Ordering::SeqCst);
        let _ = evtchn::close(b);
        let _ = evtchn::close(a);
    }
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
