//! Scaling (issue #17): the same hypercalls on one vCPU and on two at once, and the
//! event round trip between two vCPUs on two CPUs. Runs with the command-line word
//! `scaling`, as a two-vCPU dom0 on a two-CPU machine, on both hypervisors
//! (`scripts/bench` boots it with `dom0_max_vcpus=2` and `-smp 2`).
//!
//! | metric | one sample |
//! |---|---|
//! | `scale_null_hypercall_1vcpu` | `xen_version(XENVER_version)` on vCPU 0 while vCPU 1 sleeps |
//! | `scale_null_hypercall_2vcpus` | the same on both vCPUs at once (the samples of both) |
//! | `scale_mmu_update_b64_1vcpu` | `mmu_update` of 64 L1 entries of vCPU 0's own L1, per entry, vCPU 1 asleep |
//! | `scale_mmu_update_b64_2vcpus` | the same on both vCPUs at once, each on its own L1 |
//! | `cross_cpu_evtchn_rtt` | vCPU 0 sends on a port bound to vCPU 1, asleep in `SCHEDOP_block`; vCPU 1's upcall handler sends back on a port bound to vCPU 0, which spins (events on) until its handler has seen the reply |
//!
//! Per-vCPU throughput at two vCPUs against one is the `_1vcpu` median over the
//! `_2vcpus` one (the report computes it; the target is at least 0.8).

use alloc::vec::Vec;
use core::hint::black_box;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pv_runtime::abi::hypercall::Hypercall;
use pv_runtime::abi::version::XenVer;
use pv_runtime::abi::{Errno, EvtchnPort, Invoke, VcpuId};
use pv_runtime::evtchn::{self, Handler};
use pv_runtime::{println, sched, smp, time};

use crate::guest::{
    Fail, Iters, Scratch, Tally, collect, errno, hc, mmu_update_batch, setup_fail, timed,
};

/// The metrics, in the order they are printed.
pub const METRICS: [&str; 5] = [
    "scale_null_hypercall_1vcpu",
    "scale_null_hypercall_2vcpus",
    "scale_mmu_update_b64_1vcpu",
    "scale_mmu_update_b64_2vcpus",
    "cross_cpu_evtchn_rtt",
];

/// Entries per `mmu_update` batch.
const BATCH: usize = 64;
/// How long vCPU 0 waits for vCPU 1 before giving up on a metric.
const PATIENCE_NS: u64 = 60_000_000_000;

/// What vCPU 1 is asked to do next.
const JOB_NULL: u32 = 1;
const JOB_MMU: u32 = 2;
/// The job, and its sequence number (vCPU 1 starts a job when it sees a new one).
static JOB: AtomicU32 = AtomicU32::new(0);
static JOB_SEQ: AtomicU32 = AtomicU32::new(0);
/// Samples each side takes in the current job.
static JOB_N: AtomicU64 = AtomicU64::new(0);
/// vCPU 1 is at the start line; both go.
static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
/// vCPU 1's samples of the last job, and the job's sequence number once they are in.
static SAMPLES: spin::Mutex<Vec<u32>> = spin::Mutex::new(Vec::new());
static DONE_SEQ: AtomicU32 = AtomicU32::new(0);
/// vCPU 1's L1 for the mmu job.
static SCRATCH: spin::Mutex<Option<Scratch>> = spin::Mutex::new(None);
/// vCPU 1's job failed (the error is printed by vCPU 0 as `unsupported`).
static JOB_ERR: spin::Mutex<Option<Fail>> = spin::Mutex::new(None);

/// The ports: one that wakes vCPU 1, the round trip's two.
static KICK1: AtomicU32 = AtomicU32::new(0);
static TO1: AtomicU32 = AtomicU32::new(0);
static TO0: AtomicU32 = AtomicU32::new(0);
static REPLIES: AtomicU64 = AtomicU64::new(0);

fn nothing(_: EvtchnPort) {}

/// vCPU 1's handler of the round trip: send straight back.
fn echo(_: EvtchnPort) {
    let _ = evtchn::send(EvtchnPort(TO0.load(Ordering::Relaxed)));
}

/// vCPU 0's handler of the reply.
fn reply(_: EvtchnPort) {
    REPLIES.fetch_add(1, Ordering::Release);
}

/// `n` timed `xen_version` calls.
fn null_samples(n: usize) -> Vec<u32> {
    let mut h = hc();
    let nr = u64::from(Hypercall::XenVersion.nr());
    let cmd = u64::from(XenVer::Version.nr());
    collect(n, || {
        timed(|| {
            black_box(h.invoke(nr, [cmd, 0, 0, 0, 0]));
        })
    })
}

/// vCPU 1: sleeps until a job comes, runs it in step with vCPU 0, hands its samples
/// over, and sleeps again. Round-trip events are answered from its upcall handler
/// while it sleeps.
fn worker(_: VcpuId) {
    evtchn::enable_events();
    let mut seen = 0;
    loop {
        let _ = sched::wait_until(|| JOB_SEQ.load(Ordering::Acquire) != seen, None);
        seen = JOB_SEQ.load(Ordering::Acquire);
        let n = usize::try_from(JOB_N.load(Ordering::Acquire)).unwrap_or(0);
        READY.store(true, Ordering::Release);
        while !GO.load(Ordering::Acquire) {
            core::hint::spin_loop();
        }
        let samples = match JOB.load(Ordering::Acquire) {
            JOB_NULL => Ok(null_samples(n)),
            JOB_MMU => match SCRATCH.lock().as_ref() {
                Some(sc) => mmu_update_batch(&mut hc(), sc, BATCH, n),
                None => Err(setup_fail("page-walk", "no-scratch-L1")),
            },
            _ => Ok(Vec::new()),
        };
        match samples {
            Ok(s) => *SAMPLES.lock() = s,
            Err(f) => *JOB_ERR.lock() = Some(f),
        }
        DONE_SEQ.store(seen, Ordering::Release);
    }
}

/// Runs `job` with `n` samples on both vCPUs at once (`own` is vCPU 0's part);
/// returns the samples of both.
fn together(
    job: u32,
    n: usize,
    own: impl FnOnce() -> Result<Vec<u32>, Fail>,
) -> Result<Vec<u32>, Fail> {
    READY.store(false, Ordering::Release);
    GO.store(false, Ordering::Release);
    JOB.store(job, Ordering::Release);
    JOB_N.store(n as u64, Ordering::Release);
    let seq = JOB_SEQ.fetch_add(1, Ordering::AcqRel) + 1;
    evtchn::send(EvtchnPort(KICK1.load(Ordering::Relaxed))).map_err(errno("EVTCHNOP_send"))?;
    wait("vCPU 1 at the start line", || READY.load(Ordering::Acquire))?;
    GO.store(true, Ordering::Release);
    let mut mine = own()?;
    wait("vCPU 1's samples", || {
        DONE_SEQ.load(Ordering::Acquire) == seq
    })?;
    if let Some(f) = JOB_ERR.lock().take() {
        return Err(f);
    }
    mine.append(&mut SAMPLES.lock());
    Ok(mine)
}

/// Spins (yielding) until `cond`, for at most [`PATIENCE_NS`].
fn wait(what: &'static str, cond: impl Fn() -> bool) -> Result<(), Fail> {
    let end = time::system_time_ns() + PATIENCE_NS;
    while !cond() {
        if time::system_time_ns() > end {
            return Err(setup_fail(what, "timed-out"));
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// The round trip: `n` samples.
fn round_trips(n: usize) -> Result<Vec<u32>, Fail> {
    let to1 = EvtchnPort(TO1.load(Ordering::Relaxed));
    let mut err = None;
    let end = time::system_time_ns() + PATIENCE_NS;
    let s = collect(n, || {
        let before = REPLIES.load(Ordering::Acquire);
        timed(|| {
            if let Err(e) = evtchn::send(to1) {
                err = Some(e);
                return;
            }
            while REPLIES.load(Ordering::Acquire) == before {
                if time::system_time_ns() > end {
                    err = Some(Errno::ETIMEDOUT);
                    return;
                }
                core::hint::spin_loop();
            }
        })
    });
    match err {
        Some(e) => Err(errno("EVTCHNOP_send(cross-CPU)")(e)),
        None => Ok(s),
    }
}

/// Binds the three ports and starts vCPU 1.
fn setup() -> Result<(), Fail> {
    if smp::nr_vcpus() < 2 {
        return Err(setup_fail("VCPUOP_up", "one-vcpu"));
    }
    let bind = |to: u32, h: fn(EvtchnPort)| -> Result<u32, Fail> {
        let p = evtchn::bind_ipi(VcpuId(to)).map_err(errno("EVTCHNOP_bind_ipi"))?;
        evtchn::set_handler(p, Handler::Fn(h))
            .map_err(|_| setup_fail("EVTCHNOP_bind_ipi", "no-handler-slot"))?;
        Ok(p.0)
    };
    KICK1.store(bind(1, nothing)?, Ordering::Relaxed);
    TO1.store(bind(1, echo)?, Ordering::Relaxed);
    TO0.store(bind(0, reply)?, Ordering::Relaxed);
    evtchn::enable_events();
    smp::start(VcpuId(1), &worker).map_err(|_| setup_fail("VCPUOP_initialise", "start-failed"))
}

/// The scaling metrics, as [`METRICS`] lists them.
pub fn run(t: &mut Tally, it: Iters) {
    if let Err(f) = setup() {
        for m in METRICS {
            t.unsupported(m, f);
        }
        return;
    }
    // 20,000 per vCPU: both vCPUs' samples must fit the guest's heap at once.
    let n = it.n(20_000);
    let mut s = null_samples(n);
    t.result(METRICS[0], &mut s, 1);
    match together(JOB_NULL, n, || Ok(null_samples(n))) {
        Ok(mut s) => t.result(METRICS[1], &mut s, 1),
        Err(f) => t.unsupported(METRICS[1], f),
    }

    let mut h = hc();
    let scratches = Scratch::new(&mut h).and_then(|a| Ok((a, Scratch::new(&mut h)?)));
    match scratches {
        Ok((mine, theirs)) => {
            let n = it.n(1_000);
            match mmu_update_batch(&mut h, &mine, BATCH, n) {
                Ok(mut s) => t.result(METRICS[2], &mut s, BATCH as u64),
                Err(f) => t.unsupported(METRICS[2], f),
            }
            *SCRATCH.lock() = Some(theirs);
            match together(JOB_MMU, n, || mmu_update_batch(&mut hc(), &mine, BATCH, n)) {
                Ok(mut s) => t.result(METRICS[3], &mut s, BATCH as u64),
                Err(f) => t.unsupported(METRICS[3], f),
            }
            for sc in [Some(mine), SCRATCH.lock().take()].into_iter().flatten() {
                if let Err(f) = sc.teardown(&mut h) {
                    println!("bench: page-table teardown failed: {f}");
                }
            }
        }
        Err(f) => {
            t.unsupported(METRICS[2], f);
            t.unsupported(METRICS[3], f);
        }
    }

    match round_trips(it.n(20_000)) {
        Ok(mut s) => t.result(METRICS[4], &mut s, 1),
        Err(f) => t.unsupported(METRICS[4], f),
    }
}
