//! The benchmark kernel: setup, the metrics, and the result lines.

use alloc::vec;
use alloc::vec::Vec;
use core::arch::asm;
use core::fmt;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::GrantRef;
use pv_runtime::abi::evtchn::{EvtchnBindIpi, EvtchnClose, EvtchnOp, EvtchnSend};
use pv_runtime::abi::gnttab::{GntMapFlags, GnttabMapGrantRef, GnttabUnmapGrantRef};
use pv_runtime::abi::guest::HypercallPage;
use pv_runtime::abi::hypercall::{
    Hypercall, call, event_channel_op, mmu_update, mmuext_op, multicall, sched_op,
};
use pv_runtime::abi::mmu::{MmuCmd, MmuUpdate, MmuextCmd, MmuextOp, UVMF_NONE, foreigndom};
use pv_runtime::abi::sched::SchedOp;
use pv_runtime::abi::version::XenVer;
use pv_runtime::abi::xen::pte::{BUILDER_UPPER_FLAGS, PTE_ADDR_MASK, PTES_PER_PAGE};
use pv_runtime::abi::xen::{MulticallEntry, Pte, PteFlags};
use pv_runtime::abi::{DomId, Errno, EvtchnPort, GuestPtr, Invoke, MachineAddr, Mfn, Pfn, VcpuId};
use pv_runtime::mm::{self, Frame};
use pv_runtime::probe;
use pv_runtime::text::{Ascii, c_str};
use pv_runtime::traps::{self, Callback, TrapFrame, vector};
use pv_runtime::{StartInfo, evtchn, gnttab, println, shared, time, xen};

use crate::stats::{INFO_TAG, ResultLine, UnsupportedLine, summarize};

/// `foreigndom` for "my own frames, my own tables".
pub(crate) const SELF_FD: u32 = foreigndom(DomId::SELF, None);
/// Batch sizes of the PTE-update metrics.
const BATCHES: [usize; 4] = [1, 8, 64, 512];
/// Page size as a `u64`.
const PAGE: u64 = 4096;

/// The raw hypercall invoker.
pub(crate) fn hc() -> HypercallPage {
    // SAFETY: every hypercall made here passes addresses of live objects of
    // the size the hypercall reads or writes (arrays of requests, multicall
    // entries, event-channel structs), and it only edits page-table entries
    // this module created: an L2 slot outside everything the runtime maps,
    // the L1 hooked there, and frames taken from the runtime's allocator.
    unsafe { pv_runtime::hypercall::invoker() }
}

/// Read the TSC, ordered against the code around it (`lfence` both sides).
#[inline(always)]
fn rdtsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `lfence` and `rdtsc` have no memory effects and PV guest
    // kernels may execute them; no `nomem`, so the compiler does not move
    // memory accesses across the read either.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "lfence",
            out("eax") lo,
            out("edx") hi,
            options(nostack, preserves_flags),
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Cycles `op` took.
#[inline(always)]
pub(crate) fn timed(op: impl FnOnce()) -> u32 {
    let t0 = rdtsc();
    op();
    let t1 = rdtsc();
    u32::try_from(t1.wrapping_sub(t0)).unwrap_or(u32::MAX)
}

/// Runs `sample` (which returns the cycles of one timed operation) a few
/// times to warm up, then `n` times, collecting the results.
pub(crate) fn collect(n: usize, mut sample: impl FnMut() -> u32) -> Vec<u32> {
    for _ in 0..(n / 20).clamp(2, 1000) {
        sample();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(sample());
    }
    v
}

/// Why a metric could not run: the hypercall (or setup step) and the error.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fail {
    what: &'static str,
    error: Why,
}

#[derive(Clone, Copy, Debug)]
enum Why {
    Errno(Errno),
    Word(&'static str),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.what, self.error)
    }
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Errno(e) => write!(f, "{e}"),
            Why::Word(w) => f.write_str(w),
        }
    }
}

pub(crate) fn errno(what: &'static str) -> impl Fn(Errno) -> Fail {
    move |e| Fail {
        what,
        error: Why::Errno(e),
    }
}

pub(crate) fn setup_fail(what: &'static str, word: &'static str) -> Fail {
    Fail {
        what,
        error: Why::Word(word),
    }
}

/// What the run printed, for the summary.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    measured: u32,
    unsupported: u32,
}

impl Tally {
    pub(crate) fn result(&mut self, metric: &str, samples: &mut [u32], per_sample: u64) {
        if let Some(summary) = summarize(samples, per_sample) {
            println!(
                "{}",
                ResultLine {
                    metric,
                    summary,
                    unit: "cycles",
                }
            );
            self.measured += 1;
        }
    }

    pub(crate) fn unsupported(&mut self, metric: &str, fail: Fail) {
        println!(
            "{}",
            UnsupportedLine {
                metric,
                hypercall: fail.what,
                error: fail.error,
            }
        );
        self.unsupported += 1;
    }

    fn outcome(&mut self, metric: &str, r: Result<(), Fail>) {
        if let Err(f) = r {
            self.unsupported(metric, f);
        }
    }
}

/// Iteration counts (divided by ten in quick mode).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Iters {
    quick: bool,
    /// `boot-only`: print the banner and the final line, measure nothing (the harness
    /// times extra boots this way).
    boot_only: bool,
    /// `ledger`: run the instruction ledger's sections instead ([`crate::ledger`]).
    ledger: bool,
    /// `scaling`: run the scaling metrics instead ([`crate::scaling`]).
    scaling: bool,
}

impl Iters {
    pub(crate) fn n(self, full: usize) -> usize {
        if self.quick {
            (full / 10).max(10)
        } else {
            full
        }
    }
}

// ---------------------------------------------------------------------------
// Guest-only control and the simple round trips.

/// Words in the control loop's buffer: 256 KiB, 64 pages, so that QEMU's softmmu TLB
/// and the host's caches are exercised the way hypervisor code exercises them.
const CONTROL_WORDS: usize = 64 * 1024;

/// 1024 rounds of xorshift, each with a read-modify-write at a pseudo-random place in
/// `buf`: pure guest work that the hypervisor cannot influence, but that slows down
/// like everything else when the host's CPU, caches or memory are contended.
fn control_work(seed: u64, buf: &mut [u32]) -> u64 {
    let mask = (buf.len() as u64).saturating_sub(1);
    let mut x = seed | 1;
    for _ in 0..1024 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if let Some(w) = usize::try_from(x & mask).ok().and_then(|i| buf.get_mut(i)) {
            *w = w.wrapping_add(u32::try_from(x >> 32).unwrap_or(0));
        }
    }
    x
}

fn control(t: &mut Tally, it: Iters, metric: &str, seed: u64) {
    let mut buf = vec![0u32; CONTROL_WORDS];
    let mut seed = seed;
    let mut s = collect(it.n(5_000), || {
        timed(|| {
            seed = black_box(control_work(black_box(seed), &mut buf));
        })
    });
    black_box(&buf);
    t.result(metric, &mut s, 1);
}

/// The floor every per-entry cost is read against: one write to a local variable
/// (the sample is mostly the timer's own overhead).
fn local_write(t: &mut Tally, it: Iters) {
    let mut x = 0u64;
    let mut s = collect(it.n(100_000), || {
        timed(|| {
            let v = black_box(&mut x);
            *v = v.wrapping_add(1);
        })
    });
    black_box(x);
    t.result("local_write", &mut s, 1);
}

fn null_hypercall(t: &mut Tally, it: Iters) -> Result<(), Fail> {
    const WHAT: &str = "xen_version(XENVER_version)";
    let mut h = hc();
    let nr = u64::from(Hypercall::XenVersion.nr());
    let cmd = u64::from(XenVer::Version.nr());
    Errno::decode(h.invoke(nr, [cmd, 0, 0, 0, 0])).map_err(errno(WHAT))?;
    let mut s = collect(it.n(100_000), || {
        timed(|| {
            black_box(h.invoke(nr, [cmd, 0, 0, 0, 0]));
        })
    });
    t.result("null_hypercall", &mut s, 1);
    Ok(())
}

/// The floor: xen-like-hv's floor call (`hypercall_abi::xlhv::FLOOR_HYPERCALL`), a
/// `syscall` that its entry answers at once with `sysret`, the cheapest trip into the
/// hypervisor and back. Xen has no such call (`-ENOSYS`): the line says unsupported.
fn floor(t: &mut Tally, it: Iters) -> Result<(), Fail> {
    const WHAT: &str = "floor_call(xen-like-hv-only)";
    let mut h = hc();
    let nr = pv_runtime::abi::xlhv::FLOOR_HYPERCALL;
    Errno::decode(h.invoke(nr, [0; 5])).map_err(errno(WHAT))?;
    let mut s = collect(it.n(100_000), || {
        timed(|| {
            black_box(h.invoke(nr, [0; 5]));
        })
    });
    t.result("floor", &mut s, 1);
    Ok(())
}

fn sched_yield(t: &mut Tally, it: Iters) -> Result<(), Fail> {
    const WHAT: &str = "sched_op(SCHEDOP_yield)";
    let mut h = hc();
    let mut err = None;
    let mut s = collect(it.n(20_000), || {
        timed(|| {
            if let Err(e) = sched_op(&mut h, SchedOp::Yield.nr(), GuestPtr::NULL) {
                err = Some(e);
            }
        })
    });
    if let Some(e) = err {
        return Err(errno(WHAT)(e));
    }
    t.result("sched_yield", &mut s, 1);
    Ok(())
}

// ---------------------------------------------------------------------------
// Exception bounce.

pub(crate) fn on_ud(frame: &mut TrapFrame) {
    if probe::skip(frame).is_none() {
        panic!("bench: unexpected {frame}");
    }
}

fn exception_bounce(t: &mut Tally, it: Iters) {
    let old = traps::set_handler(vector::UD, on_ud);
    let mut s = collect(it.n(20_000), || timed(probe::ud2));
    match old {
        Some(h) => {
            traps::set_handler(vector::UD, h);
        }
        None => {
            traps::clear_handler(vector::UD);
        }
    }
    t.result("exception_bounce", &mut s, 1);
}

// ---------------------------------------------------------------------------
// Event channel notify to self.

static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn on_event(_frame: &mut TrapFrame) {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    evtchn::acknowledge_all();
}

/// An IPI port bound to vCPU 0 and unmasked, with events enabled and the runtime's
/// event callback counting upcalls: `EVTCHNOP_send` on it comes straight back as an
/// upcall.
pub(crate) struct SelfIpi {
    h: HypercallPage,
    port: EvtchnPort,
}

impl SelfIpi {
    /// Binds the port, installs the handler, enables events and checks that a first
    /// send is delivered.
    pub(crate) fn bind() -> Result<SelfIpi, Fail> {
        let mut h = hc();
        let mut bind = EvtchnBindIpi {
            vcpu: VcpuId(0),
            port: EvtchnPort(0),
        };
        event_channel_op(
            &mut h,
            EvtchnOp::BindIpi.nr(),
            pv_runtime::hypercall::handle_mut(&mut bind).cast(),
        )
        .map_err(errno("event_channel_op(EVTCHNOP_bind_ipi)"))?;
        let port = bind.port;
        let word = usize::try_from(port.0 / 64).unwrap_or(usize::MAX);
        let bit = 1u64 << (port.0 % 64);
        let ipi = SelfIpi { h, port };
        if word >= 64 {
            ipi.close();
            return Err(setup_fail(
                "event_channel_op(EVTCHNOP_bind_ipi)",
                "port-out-of-range",
            ));
        }
        shared::evtchn_mask(word).fetch_and(!bit, Ordering::SeqCst);
        traps::set_callback_handler(Callback::Event, Some(on_event));
        // One send first, with events enabled: it must come back as an upcall.
        shared::set_upcall_mask(0, 0);
        let before = UPCALLS.load(Ordering::SeqCst);
        let mut ipi = ipi;
        let first = ipi.send();
        let mut delivered = UPCALLS.load(Ordering::SeqCst) != before;
        for _ in 0..1_000_000 {
            if delivered {
                break;
            }
            core::hint::spin_loop();
            delivered = UPCALLS.load(Ordering::SeqCst) != before;
        }
        let fail = match (first, delivered) {
            (Err(e), _) => errno("event_channel_op(EVTCHNOP_send)")(e),
            (Ok(()), false) => setup_fail("event_channel_op(EVTCHNOP_send)", "no-upcall-delivered"),
            (Ok(()), true) => return Ok(ipi),
        };
        ipi.close();
        Err(fail)
    }

    fn send(&mut self) -> Result<(), Errno> {
        let send = EvtchnSend { port: self.port };
        let arg = pv_runtime::hypercall::handle(&send).cast();
        event_channel_op(&mut self.h, EvtchnOp::Send.nr(), arg).map(drop)
    }

    /// One send, and the wait until its upcall has run.
    pub(crate) fn round_trip(&mut self) -> Result<(), Errno> {
        let before = UPCALLS.load(Ordering::SeqCst);
        self.send()?;
        while UPCALLS.load(Ordering::SeqCst) == before {
            core::hint::spin_loop();
        }
        Ok(())
    }

    /// Masks events again, removes the handler, closes the port.
    pub(crate) fn close(mut self) {
        shared::set_upcall_mask(0, 1);
        traps::set_callback_handler(Callback::Event, None);
        let close = EvtchnClose { port: self.port };
        let _ = event_channel_op(
            &mut self.h,
            EvtchnOp::Close.nr(),
            pv_runtime::hypercall::handle(&close).cast(),
        );
    }
}

fn evtchn_notify_self(t: &mut Tally, it: Iters) -> Result<(), Fail> {
    let mut ipi = SelfIpi::bind()?;
    let mut err = None;
    let mut s = collect(it.n(20_000), || {
        timed(|| {
            if let Err(e) = ipi.round_trip() {
                err = Some(e);
            }
        })
    });
    ipi.close();
    match err {
        Some(e) => Err(errno("event_channel_op(EVTCHNOP_send)")(e)),
        None => {
            t.result("evtchn_notify_self", &mut s, 1);
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------
// Page-table updates.

/// Reads entry `index` of the page table mapped at `table_va`.
fn read_entry(table_va: u64, index: usize) -> u64 {
    assert!(index < PTES_PER_PAGE && table_va % PAGE == 0);
    let addr = usize::try_from(table_va).unwrap_or(usize::MAX) + index * 8;
    // SAFETY: `table_va` is one of the bootstrap page-table pages, which the
    // builder maps read-only inside the bootstrap region (checked by
    // `table_va_of`), and `index` is inside the page. Volatile: the
    // hypervisor writes these entries.
    unsafe { core::ptr::with_exposed_provenance::<u64>(addr).read_volatile() }
}

/// Where the bootstrap page-table frame `mfn` is mapped (the P2M, searched
/// over the bootstrap page tables only).
fn table_va_of(mfn: Mfn) -> Option<u64> {
    let layout = pv_runtime::layout();
    let tables = layout.page_tables;
    (tables.start..tables.end)
        .step_by(4096)
        .find(|va| mm::pfn_to_mfn(Pfn((va - layout.virt_base) / PAGE)) == Some(mfn))
}

fn present_mfn(entry: u64) -> Option<Mfn> {
    Pte(entry)
        .is_present()
        .then_some(Mfn((entry & PTE_ADDR_MASK) >> 12))
}

pub(crate) fn data_pte(frame: Frame) -> u64 {
    Pte::new(
        frame.mfn,
        PteFlags::PRESENT | PteFlags::RW | PteFlags::ACCESSED | PteFlags::DIRTY,
    )
    .0
}

fn clear_page(h: &mut HypercallPage, mfn: Mfn) -> Result<(), Fail> {
    let op = [MmuextOp::on_frame(MmuextCmd::ClearPage, mfn)];
    mmuext_op(
        h,
        pv_runtime::hypercall::handle_slice(&op),
        1,
        GuestPtr::NULL,
        SELF_FD,
    )
    .map(drop)
    .map_err(errno("mmuext_op(MMUEXT_CLEAR_PAGE)"))
}

fn alloc_frame() -> Result<Frame, Fail> {
    mm::alloc_frame().ok_or(setup_fail("alloc_frame", "no-free-frame"))
}

/// An empty L1 hooked into a free slot of the bootstrap L2 (below 1 GiB),
/// and two data frames its entries map in turn.
pub(crate) struct Scratch {
    /// Machine address of the L2 entry that points at `l1`.
    l2_entry: MachineAddr,
    /// First virtual address `l1` maps.
    pub(crate) va: u64,
    l1: Frame,
    /// The two data frames the metrics map in turn.
    pub(crate) data: [Frame; 2],
}

impl Scratch {
    pub(crate) fn new(h: &mut HypercallPage) -> Result<Scratch, Fail> {
        const WALK: &str = "page-walk";
        let si = pv_runtime::start_info();
        let l3 =
            present_mfn(read_entry(si.pt_base, 0)).ok_or(setup_fail(WALK, "L4[0]-not-present"))?;
        let l3_va = table_va_of(l3).ok_or(setup_fail(WALK, "L3-not-in-bootstrap-tables"))?;
        let l2 = present_mfn(read_entry(l3_va, 0)).ok_or(setup_fail(WALK, "L3[0]-not-present"))?;
        let l2_va = table_va_of(l2).ok_or(setup_fail(WALK, "L2-not-in-bootstrap-tables"))?;
        // A free 2 MiB slot between 512 MiB and 1 GiB.
        let slot = (256..PTES_PER_PAGE)
            .find(|&i| read_entry(l2_va, i) == 0)
            .ok_or(setup_fail(WALK, "no-free-L2-slot"))?;

        let l1 = alloc_frame()?;
        let data = [alloc_frame()?, alloc_frame()?];
        clear_page(h, l1.mfn)?;
        let l2_entry = MachineAddr(l2.addr().0 + slot as u64 * 8);
        let hook = [MmuUpdate::new(
            MmuCmd::NormalPtUpdate,
            l2_entry,
            Pte::new(l1.mfn, BUILDER_UPPER_FLAGS).0,
        )];
        mmu_update(
            h,
            pv_runtime::hypercall::handle_slice(&hook),
            1,
            GuestPtr::NULL,
            SELF_FD,
        )
        .map_err(errno("mmu_update(L2-entry->new-L1)"))?;
        Ok(Scratch {
            l2_entry,
            va: slot as u64 * 512 * PAGE,
            l1,
            data,
        })
    }

    pub(crate) fn l1_entry(&self, index: usize) -> MachineAddr {
        MachineAddr(self.l1.mfn.addr().0 + index as u64 * 8)
    }

    /// Sets the first `n` entries of the L1 to `val` with one `mmu_update`.
    pub(crate) fn set_all(&self, h: &mut HypercallPage, n: usize, val: u64) -> Result<(), Fail> {
        let reqs: Vec<MmuUpdate> = (0..n)
            .map(|i| MmuUpdate::new(MmuCmd::NormalPtUpdate, self.l1_entry(i), val))
            .collect();
        let count = u32::try_from(n).unwrap_or(0);
        mmu_update(
            h,
            pv_runtime::hypercall::handle_slice(&reqs),
            count,
            GuestPtr::NULL,
            SELF_FD,
        )
        .map(drop)
        .map_err(errno("mmu_update(L1-entries)"))
    }

    /// Unmaps everything, unhooks the L1, flushes, frees the frames.
    pub(crate) fn teardown(self, h: &mut HypercallPage) -> Result<(), Fail> {
        self.set_all(h, PTES_PER_PAGE, 0)?;
        let unhook = [MmuUpdate::new(MmuCmd::NormalPtUpdate, self.l2_entry, 0)];
        mmu_update(
            h,
            pv_runtime::hypercall::handle_slice(&unhook),
            1,
            GuestPtr::NULL,
            SELF_FD,
        )
        .map_err(errno("mmu_update(L2-entry->0)"))?;
        let flush = [MmuextOp::new(MmuextCmd::TlbFlushLocal, 0, 0)];
        mmuext_op(
            h,
            pv_runtime::hypercall::handle_slice(&flush),
            1,
            GuestPtr::NULL,
            SELF_FD,
        )
        .map_err(errno("mmuext_op(MMUEXT_TLB_FLUSH_LOCAL)"))?;
        for f in [self.l1, self.data[0], self.data[1]] {
            let _ = mm::free_frame(f);
        }
        Ok(())
    }
}

/// `mmu_update` of `n` L1 entries per sample, each sample swapping every
/// entry to the other data frame (so each update replaces a present
/// mapping: validate the new target, drop the old one).
pub(crate) fn mmu_update_batch(
    h: &mut HypercallPage,
    sc: &Scratch,
    n: usize,
    iters: usize,
) -> Result<Vec<u32>, Fail> {
    sc.set_all(h, n, data_pte(sc.data[0]))?;
    let vals = [data_pte(sc.data[0]), data_pte(sc.data[1])];
    let reqs: [Vec<MmuUpdate>; 2] = [0, 1].map(|k| {
        (0..n)
            .map(|i| MmuUpdate::new(MmuCmd::NormalPtUpdate, sc.l1_entry(i), vals[k]))
            .collect()
    });
    let count = u32::try_from(n).unwrap_or(0);
    let mut next = 1;
    let mut err = None;
    let s = collect(iters, || {
        let batch = pv_runtime::hypercall::handle_slice(&reqs[next]);
        next ^= 1;
        timed(|| {
            if let Err(e) = mmu_update(h, batch, count, GuestPtr::NULL, SELF_FD) {
                err = Some(e);
            }
        })
    });
    match err {
        Some(e) => Err(errno("mmu_update(L1-entries)")(e)),
        None => Ok(s),
    }
}

/// `multicall` of `n` `update_va_mapping(va_i, pte, UVMF_NONE)` per sample,
/// swapping data frames as [`mmu_update_batch`] does.
fn multicall_batch(
    h: &mut HypercallPage,
    sc: &Scratch,
    n: usize,
    iters: usize,
) -> Result<Vec<u32>, Fail> {
    sc.set_all(h, n, data_pte(sc.data[0]))?;
    let vals = [data_pte(sc.data[0]), data_pte(sc.data[1])];
    let mut entries = vec![MulticallEntry::default(); n];
    let count = u32::try_from(n).unwrap_or(0);
    let mut next = 1;
    let mut err: Option<Fail> = None;
    let s = collect(iters, || {
        for (i, e) in entries.iter_mut().enumerate() {
            *e = MulticallEntry::new(call::update_va_mapping(
                sc.va + i as u64 * PAGE,
                vals[next],
                UVMF_NONE,
            ));
        }
        next ^= 1;
        let list = GuestPtr::new(entries.as_mut_ptr().expose_provenance() as u64);
        let cycles = timed(|| {
            if let Err(e) = multicall(h, list, count) {
                err = Some(errno("multicall")(e));
            }
        });
        if let Some(bad) = entries.iter().find(|e| e.result != 0) {
            let e = Errno::decode(bad.result).err().unwrap_or(Errno::EINVAL);
            err = Some(errno("multicall(update_va_mapping)")(e));
        }
        cycles
    });
    match err {
        Some(f) => Err(f),
        None => Ok(s),
    }
}

/// `mmuext_op(PIN_L1_TABLE)` then `mmuext_op(UNPIN_TABLE)` of an empty,
/// unmapped frame: validation of 512 empty entries and back.
fn pin_unpin(t: &mut Tally, h: &mut HypercallPage, it: Iters) -> Result<(), Fail> {
    let frame = alloc_frame()?;
    clear_page(h, frame.mfn)?;
    let pin = [MmuextOp::on_frame(MmuextCmd::PinL1Table, frame.mfn)];
    let unpin = [MmuextOp::on_frame(MmuextCmd::UnpinTable, frame.mfn)];
    let pin = pv_runtime::hypercall::handle_slice(&pin);
    let unpin = pv_runtime::hypercall::handle_slice(&unpin);
    let mut err = None;
    let mut s = collect(it.n(10_000), || {
        timed(|| {
            if let Err(e) = mmuext_op(h, pin, 1, GuestPtr::NULL, SELF_FD) {
                err = Some(errno("mmuext_op(MMUEXT_PIN_L1_TABLE)")(e));
                return;
            }
            if let Err(e) = mmuext_op(h, unpin, 1, GuestPtr::NULL, SELF_FD) {
                err = Some(errno("mmuext_op(MMUEXT_UNPIN_TABLE)")(e));
            }
        })
    });
    let _ = mm::free_frame(frame);
    if let Some(f) = err {
        return Err(f);
    }
    t.result("mmuext_pin_unpin_l1", &mut s, 1);
    Ok(())
}

/// Names of the PTE metrics, by batch index.
const MMU_NAMES: [&str; 4] = [
    "mmu_update_pte_b1",
    "mmu_update_pte_b8",
    "mmu_update_pte_b64",
    "mmu_update_pte_b512",
];
const MULTI_NAMES: [&str; 4] = [
    "multicall_uvm_pte_b1",
    "multicall_uvm_pte_b8",
    "multicall_uvm_pte_b64",
    "multicall_uvm_pte_b512",
];

/// Samples per batch size: about the same number of updates for each.
fn batch_iters(it: Iters, n: usize) -> usize {
    it.n(match n {
        1 => 20_000,
        8 => 5_000,
        64 => 1_000,
        _ => 300,
    })
}

fn page_tables(t: &mut Tally, it: Iters) {
    let mut h = hc();
    let sc = match Scratch::new(&mut h) {
        Ok(sc) => sc,
        Err(f) => {
            for name in MMU_NAMES.iter().chain(MULTI_NAMES.iter()) {
                t.unsupported(name, f);
            }
            t.unsupported("mmuext_pin_unpin_l1", f);
            return;
        }
    };
    for (k, &n) in BATCHES.iter().enumerate() {
        match mmu_update_batch(&mut h, &sc, n, batch_iters(it, n)) {
            Ok(mut s) => t.result(MMU_NAMES[k], &mut s, n as u64),
            Err(f) => t.unsupported(MMU_NAMES[k], f),
        }
    }
    for (k, &n) in BATCHES.iter().enumerate() {
        match multicall_batch(&mut h, &sc, n, batch_iters(it, n)) {
            Ok(mut s) => t.result(MULTI_NAMES[k], &mut s, n as u64),
            Err(f) => t.unsupported(MULTI_NAMES[k], f),
        }
    }
    let r = pin_unpin(t, &mut h, it);
    t.outcome("mmuext_pin_unpin_l1", r);
    if let Err(f) = sc.teardown(&mut h) {
        println!("bench: page-table teardown failed: {} {}", f.what, f.error);
    }
}

// ---------------------------------------------------------------------------
// Grant tables.

/// Where the grant metrics map: 32 pages with their L1 prepared.
const GNT_WIN: u64 = 0x0000_5000_0000_0000;
const GNT_NAMES: [(&str, usize); 2] = [("gnttab_map_unmap_b1", 1), ("gnttab_map_unmap_b32", 32)];

fn gnt_fail(what: &'static str) -> impl Fn(gnttab::Error) -> Fail {
    move |e| match e {
        gnttab::Error::Hypercall(e) => errno(what)(e),
        gnttab::Error::Status(_) | gnttab::Error::UnknownStatus(_) => setup_fail(what, "status"),
        _ => setup_fail(what, "setup"),
    }
}

/// A self-grant of one of the guest's frames (a grant to oneself is legal on
/// Xen), after taking over the address space (the grant API maps with the
/// runtime's own tables; this runs after the page-table metrics, which walk
/// the builder's).
fn gnt_setup() -> Result<(DomId, GrantRef, Frame, Frame), Fail> {
    mm::take_over().map_err(|_| setup_fail("mm::take_over", "failed"))?;
    gnttab::init(1).map_err(gnt_fail("grant_table_op(GNTTABOP_setup_table)"))?;
    gnttab::prepare(GNT_WIN, 32).map_err(gnt_fail("page tables for the grant window"))?;
    let me = xen::domid().ok_or(setup_fail("domid", "unknown"))?;
    let page = alloc_frame()?;
    let own = alloc_frame()?;
    let r = gnttab::grant_access(me, page.mfn, false).map_err(gnt_fail("grant entry"))?;
    Ok((me, r, page, own))
}

/// `n` writable host maps of the self-grant in one `GNTTABOP_map_grant_ref`, then
/// one `GNTTABOP_unmap_grant_ref` of the `n`: the cycles of both.
fn gnt_map_unmap(me: DomId, r: GrantRef, n: usize, iters: usize) -> Result<Vec<u32>, Fail> {
    let mut maps = [GnttabMapGrantRef::default(); 32];
    let mut unmaps = [GnttabUnmapGrantRef::default(); 32];
    let (maps, unmaps) = (&mut maps[..n], &mut unmaps[..n]);
    let mut err = None;
    let s = collect(iters, || {
        for (i, m) in maps.iter_mut().enumerate() {
            *m = gnttab::map_op(me, r, GNT_WIN + 4096 * i as u64, GntMapFlags::HOST_MAP);
        }
        let cycles = timed(|| {
            if let Err(e) = gnttab::map_batch(maps) {
                err = Some(errno("grant_table_op(GNTTABOP_map_grant_ref)")(e));
                return;
            }
            for (u, m) in unmaps.iter_mut().zip(maps.iter()) {
                *u = gnttab::unmap_op(gnttab::Handle(m.handle), m.host_addr);
            }
            if let Err(e) = gnttab::unmap_batch(unmaps) {
                err = Some(errno("grant_table_op(GNTTABOP_unmap_grant_ref)")(e));
            }
        });
        if maps.iter().any(|m| m.status != 0) {
            err = Some(setup_fail(
                "grant_table_op(GNTTABOP_map_grant_ref)",
                "status",
            ));
        }
        if unmaps.iter().any(|u| u.status != 0) {
            err = Some(setup_fail(
                "grant_table_op(GNTTABOP_unmap_grant_ref)",
                "status",
            ));
        }
        cycles
    });
    match err {
        Some(f) => Err(f),
        None => Ok(s),
    }
}

/// One `GNTTABOP_copy` of a whole page from the self-grant into an own frame.
fn gnt_copy(me: DomId, r: GrantRef, own: Frame, iters: usize) -> Result<Vec<u32>, Fail> {
    let mut op = [gnttab::copy_op(
        gnttab::CopyPtr::gref(me, r, 0),
        gnttab::CopyPtr::frame(own.mfn, 0),
        4096,
    )];
    let mut err = None;
    let s = collect(iters, || {
        op[0].status = 0;
        let cycles = timed(|| {
            if let Err(e) = gnttab::copy_batch(&mut op) {
                err = Some(errno("grant_table_op(GNTTABOP_copy)")(e));
            }
        });
        if op[0].status != 0 {
            err = Some(setup_fail("grant_table_op(GNTTABOP_copy)", "status"));
        }
        cycles
    });
    match err {
        Some(f) => Err(f),
        None => Ok(s),
    }
}

fn grants(t: &mut Tally, it: Iters) {
    let (me, r, _page, own) = match gnt_setup() {
        Ok(x) => x,
        Err(f) => {
            for (name, _) in GNT_NAMES {
                t.unsupported(name, f);
            }
            t.unsupported("gnttab_copy_4k", f);
            return;
        }
    };
    for (name, n) in GNT_NAMES {
        let iters = it.n(if n == 1 { 10_000 } else { 500 });
        match gnt_map_unmap(me, r, n, iters) {
            Ok(mut s) => t.result(name, &mut s, n as u64),
            Err(f) => t.unsupported(name, f),
        }
    }
    match gnt_copy(me, r, own, it.n(10_000)) {
        Ok(mut s) => t.result("gnttab_copy_4k", &mut s, 1),
        Err(f) => t.unsupported("gnttab_copy_4k", f),
    }
}

// ---------------------------------------------------------------------------

fn banner(si: &StartInfo) -> Iters {
    println!(
        "bench: pv-bench {} benchmark guest",
        env!("CARGO_PKG_VERSION")
    );
    let cmdline = c_str(&si.cmd_line);
    let has = |word: &[u8]| cmdline.split(|b| *b == b' ').any(|w| w == word);
    let (quick, boot_only, ledger) = (has(b"quick"), has(b"boot-only"), has(b"ledger"));
    let scaling = has(b"scaling");
    match (xen::version(), xen::extraversion()) {
        (Ok(v), Ok(extra)) => println!(
            "bench: hypervisor Xen {v}{}; command line \"{}\"{}",
            Ascii(c_str(&extra)),
            Ascii(cmdline),
            if quick {
                " (quick: iterations / 10)"
            } else {
                ""
            }
        ),
        (v, e) => println!("bench: hypervisor version unavailable ({v:?}, {e:?})"),
    }
    match time::tsc_hz() {
        Some(hz) => println!("{INFO_TAG} tsc_hz={hz} source=pvclock"),
        None => println!("{INFO_TAG} tsc_hz=unknown source=none"),
    }
    Iters {
        quick,
        boot_only,
        ledger,
        scaling,
    }
}

/// The guest's main: every metric in turn, then a summary line; returning
/// powers the domain off.
pub fn main(si: &'static StartInfo) {
    let it = banner(si);
    if it.boot_only {
        println!("bench: done: boot only; powering off");
        return;
    }
    if it.ledger {
        crate::ledger::run();
        println!("bench: done: ledger sections run; powering off");
        return;
    }
    if crate::domus::role(si, it) {
        return;
    }
    let mut t = Tally::default();
    if it.scaling {
        crate::scaling::run(&mut t, it);
        println!(
            "bench: done: {} scaling metrics measured, {} unsupported; powering off",
            t.measured, t.unsupported
        );
        return;
    }
    control(&mut t, it, "control_loop", 0x9E37_79B9_7F4A_7C15);
    local_write(&mut t, it);
    let r = floor(&mut t, it);
    t.outcome("floor", r);
    let r = null_hypercall(&mut t, it);
    t.outcome("null_hypercall", r);
    page_tables(&mut t, it);
    exception_bounce(&mut t, it);
    let r = evtchn_notify_self(&mut t, it);
    t.outcome("evtchn_notify_self", r);
    let r = sched_yield(&mut t, it);
    t.outcome("sched_yield", r);
    let r = crate::domus::timer_wake(&mut t, it);
    t.outcome("timer_wake", r);
    // Last: it takes over the address space.
    grants(&mut t, it);
    // The control again at the end, so a slowdown during the run shows.
    control(&mut t, it, "control_loop_end", 0x2545_F491_4F6C_DD1D);
    println!(
        "bench: done: {} metrics measured, {} unsupported; powering off",
        t.measured, t.unsupported
    );
}
