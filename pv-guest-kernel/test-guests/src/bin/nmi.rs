//! `nmi`: `VCPUOP_send_nmi` as Xen 4.17 delivers it to a 64-bit PV guest
//! (issue #17). Runs as a two-vCPU dom0. Checks, in order:
//!
//! 1. `send_nmi` with a non-NULL argument is -EINVAL; to a vCPU id past the
//!    last, -ENOENT.
//! 2. **self**: an NMI sent to the caller runs its vector-2 handler before
//!    the call returns to the next instruction. A second NMI sent from
//!    inside the handler is not delivered there (no nesting) but right after
//!    the handler's `iret`. With the NMI callback unregistered
//!    (`CALLBACKOP_unregister`, `CALLBACKTYPE_nmi`) an NMI is dropped and the
//!    domain goes on; registered again as the callback, NMIs arrive there.
//! 3. **blocked**: vCPU 1 sleeps in `SCHEDOP_block`; each NMI from vCPU 0,
//!    sent once vCPU 1's runstate says blocked, wakes it and its handler
//!    runs on vCPU 1 (`rounds`, default 500). (An NMI sent while the target
//!    is on its way into `SCHEDOP_block` stays pending there, on Xen too.)
//! 4. **spinning**: vCPU 1 spins with events masked; each NMI still reaches
//!    it (`rounds`).
//! 5. **to0**: the same from vCPU 1 to a blocked vCPU 0 (`rounds`).
//! 6. **down**: an NMI sent to vCPU 1 while it is down waits, and runs once
//!    it is brought up again.
//! 7. `VCPUOP_get_physid`: -EINVAL unless the vCPU is pinned (`pinned=1`:
//!    the hypervisor runs with `dom0_vcpus_pin`); pinned, vCPU n reads
//!    CPU n's APIC id with its ACPI processor id in the high half (QEMU
//!    numbers both from 0).
//!
//! Result line: `nmi: PASS self=<n> blocked=<n> spinning=<n> to0=<n>
//! down=1 physid=<einval|apic ids>`.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use pv_runtime::abi::Errno;
use pv_runtime::abi::VcpuId;
use pv_runtime::abi::callback::{CallbackOp, CallbackRegister, CallbackType, CallbackUnregister};
use pv_runtime::abi::hypercall::{callback_op, vcpu_op};
use pv_runtime::abi::types::GuestPtr;
use pv_runtime::abi::vcpu::{RUNSTATE_BLOCKED, VcpuGetPhysid, VcpuOp};
use pv_runtime::hypercall::{handle, handle_mut, invoker};
use pv_runtime::traps::{self, TrapFrame, vector};
use pv_runtime::{StartInfo, evtchn, sched, smp, time};
use pv_test_guests::{arg_u64, fail, ok};

const NAME: &str = "nmi";

/// NMIs handled per vCPU.
static COUNT: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
/// Handlers running per vCPU now (more than 1: an NMI nested).
static DEPTH: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
static NESTED: AtomicBool = AtomicBool::new(false);
/// The self test's handler sends one more NMI from inside, once.
static SEND_INSIDE: AtomicBool = AtomicBool::new(false);
/// The count the inner NMI saw while the handler still ran.
static INSIDE_SAW: AtomicU64 = AtomicU64::new(0);
/// The phase vCPU 1 is asked to be in, and the one it reached.
static PHASE: AtomicU32 = AtomicU32::new(0);
static AT: AtomicU32 = AtomicU32::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Set by the first failure, on either vCPU.
static FAILED: AtomicBool = AtomicBool::new(false);

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

fn send_nmi(to: u32, arg: u64) -> Result<u64, Errno> {
    // SAFETY: send_nmi reads no guest memory (a non-NULL argument is refused).
    let mut inv = unsafe { invoker() };
    vcpu_op(
        &mut inv,
        VcpuOp::SendNmi.nr(),
        VcpuId(to),
        GuestPtr::new(arg),
    )
}

fn get_physid(of: u32) -> Result<u64, Errno> {
    let mut id = VcpuGetPhysid { phys_id: 0 };
    // SAFETY: `id` is a live local the hypervisor writes.
    let mut inv = unsafe { invoker() };
    vcpu_op(
        &mut inv,
        VcpuOp::GetPhysid.nr(),
        VcpuId(of),
        handle_mut(&mut id).cast(),
    )
    .map(|_| id.phys_id)
}

fn on_nmi(_frame: &mut TrapFrame) {
    let me = smp::index().min(1);
    if DEPTH[me].fetch_add(1, Ordering::SeqCst) != 0 {
        NESTED.store(true, Ordering::SeqCst);
    }
    let n = COUNT[me].fetch_add(1, Ordering::SeqCst) + 1;
    if SEND_INSIDE.swap(false, Ordering::SeqCst) {
        if send_nmi(smp::current().0, 0).is_err() {
            die(format_args!("send_nmi from the handler failed"));
        }
        // Not delivered while this handler runs.
        INSIDE_SAW.store(COUNT[me].load(Ordering::SeqCst) - n, Ordering::SeqCst);
    }
    DEPTH[me].fetch_sub(1, Ordering::SeqCst);
}

fn count(v: usize) -> u64 {
    COUNT[v].load(Ordering::SeqCst)
}

/// Waits (yielding, events as they are) until `cond` holds, for up to 60 s.
fn spin_until(what: &str, cond: impl Fn() -> bool) {
    let end = time::system_time_ns() + 60_000_000_000;
    while !cond() {
        if time::system_time_ns() > end {
            die(format_args!("timed out waiting for {what}"));
        }
        sched::yield_now();
    }
}

/// Waits until vCPU `v` sleeps in `SCHEDOP_block`. An NMI only wakes a vCPU
/// that is blocked when it is sent: one sent while the target is on its way
/// into `SCHEDOP_block` is left pending (Xen's `vcpu_block` looks at events
/// only), so a sender that means to wake a sleeper waits for it to sleep.
fn wait_blocked(v: u32) {
    spin_until("the vCPU to block", || {
        pv_runtime::vcpu::runstate(VcpuId(v)).is_ok_and(|r| r.state == RUNSTATE_BLOCKED)
    });
}

/// Blocks until `cond` holds: only an event or an NMI wakes the vCPU (no
/// timer is armed), so each NMI must wake it.
fn block_until(cond: impl Fn() -> bool) {
    let was = evtchn::disable_events();
    while !cond() {
        sched::block();
        evtchn::disable_events();
    }
    evtchn::restore_events(was);
}

fn self_checks() -> u64 {
    want(
        "send_nmi(arg not NULL)",
        send_nmi(0, 0x1000),
        Err(Errno::EINVAL),
    );
    want("send_nmi(vCPU 99)", send_nmi(99, 0), Err(Errno::ENOENT));
    want("no NMI yet", count(0), 0);

    ok(NAME, "send_nmi(self)", send_nmi(0, 0));
    want("handled when the call returned", count(0), 1);

    SEND_INSIDE.store(true, Ordering::SeqCst);
    ok(NAME, "send_nmi(self)", send_nmi(0, 0));
    want("handled, with the inner one after iret", count(0), 3);
    want(
        "the inner NMI ran inside the handler",
        INSIDE_SAW.load(Ordering::SeqCst),
        0,
    );

    // No handler: dropped. Then the callback form registers one again.
    let unreg = CallbackUnregister {
        type_: CallbackType::Nmi as u16,
        _unused: 0,
    };
    // SAFETY: `unreg` is a live local the hypervisor only reads.
    let mut inv = unsafe { invoker() };
    ok(
        NAME,
        "unregister the NMI callback",
        callback_op(&mut inv, CallbackOp::Unregister.nr(), handle(&unreg).cast()),
    );
    ok(NAME, "send_nmi(self, no handler)", send_nmi(0, 0));
    want("dropped without a handler", count(0), 3);
    let stub = traps::vector_stub(vector::NMI);
    let reg = CallbackRegister {
        type_: CallbackType::Nmi as u16,
        flags: 0,
        _pad: 0,
        address: stub,
    };
    ok(
        NAME,
        "register the NMI callback",
        callback_op(&mut inv, CallbackOp::Register.nr(), handle(&reg).cast()),
    );
    want("the dropped NMI stays dropped", count(0), 3);
    ok(NAME, "send_nmi(self)", send_nmi(0, 0));
    want("delivered to the callback", count(0), 4);
    count(0)
}

fn secondary(_v: VcpuId) {
    evtchn::enable_events();
    let rounds = ROUNDS.load(Ordering::SeqCst);
    // Phase 1: blocked, woken by each NMI.
    AT.store(1, Ordering::SeqCst);
    block_until(|| count(1) >= rounds);
    // Phase 2: spinning with events masked.
    AT.store(2, Ordering::SeqCst);
    let was = evtchn::disable_events();
    let end = time::system_time_ns() + 120_000_000_000;
    while count(1) < 2 * rounds {
        if time::system_time_ns() > end {
            die(format_args!(
                "NMIs stopped reaching a spinning vCPU at {}",
                count(1)
            ));
        }
        core::hint::spin_loop();
    }
    evtchn::restore_events(was);
    // Phase 3: NMIs to vCPU 0, one in flight at a time.
    AT.store(3, Ordering::SeqCst);
    spin_until("vCPU 0 to block", || PHASE.load(Ordering::SeqCst) >= 3);
    for k in 1..=rounds {
        wait_blocked(0);
        ok(NAME, "send_nmi(0)", send_nmi(0, 0));
        spin_until("vCPU 0's handler", || {
            count(0) >= ROUND0.load(Ordering::SeqCst) + k
        });
    }
    // Phase 4: down with an NMI waiting; it runs when vCPU 0 brings us up.
    AT.store(4, Ordering::SeqCst);
    spin_until("phase 4", || PHASE.load(Ordering::SeqCst) >= 4);
    let before = count(1);
    ok(NAME, "down(self)", smp::down(VcpuId(1)));
    want("the NMI sent while down, once up", count(1), before + 1);
    AT.store(5, Ordering::SeqCst);
}

/// vCPU 0's count when phase 3 starts.
static ROUND0: AtomicU64 = AtomicU64::new(0);

fn main(_si: &'static StartInfo) {
    let rounds = arg_u64(NAME, "rounds", 500);
    let pinned = arg_u64(NAME, "pinned", 0) != 0;
    ROUNDS.store(rounds, Ordering::SeqCst);
    if smp::nr_vcpus() < 2 {
        fail(
            NAME,
            format_args!("needs 2 vCPUs, found {}", smp::nr_vcpus()),
        );
    }
    traps::set_handler(vector::NMI, on_nmi);
    let selfs = self_checks();

    evtchn::enable_events();
    if let Err(e) = smp::start(VcpuId(1), &secondary) {
        fail(NAME, format_args!("start vCPU 1: {e}"));
    }
    // Blocked: one NMI at a time, each once vCPU 1 sleeps again.
    spin_until("vCPU 1 to start", || AT.load(Ordering::SeqCst) >= 1);
    for k in 1..=rounds {
        wait_blocked(1);
        ok(NAME, "send_nmi(1)", send_nmi(1, 0));
        spin_until("vCPU 1's handler (blocked)", || count(1) >= k);
    }
    // Spinning with events masked.
    spin_until("vCPU 1 to spin", || AT.load(Ordering::SeqCst) >= 2);
    for k in 1..=rounds {
        ok(NAME, "send_nmi(1)", send_nmi(1, 0));
        spin_until("vCPU 1's handler (spinning)", || count(1) >= rounds + k);
    }
    // vCPU 1 sends to us while we block.
    spin_until("vCPU 1 to reach phase 3", || AT.load(Ordering::SeqCst) >= 3);
    ROUND0.store(count(0), Ordering::SeqCst);
    PHASE.store(3, Ordering::SeqCst);
    let start0 = count(0);
    block_until(|| count(0) >= start0 + rounds);
    let to0 = count(0) - start0;
    // An NMI for a vCPU that is down waits for it.
    spin_until("vCPU 1 to reach phase 4", || AT.load(Ordering::SeqCst) >= 4);
    PHASE.store(4, Ordering::SeqCst);
    spin_until("vCPU 1 to go down", || {
        matches!(smp::is_up(VcpuId(1)), Ok(false))
    });
    let before = count(1);
    ok(NAME, "send_nmi(down vCPU 1)", send_nmi(1, 0));
    for _ in 0..10 {
        sched::yield_now();
    }
    want("no NMI handled on a down vCPU", count(1), before);
    ok(NAME, "up(1)", smp::up(VcpuId(1)));
    spin_until("vCPU 1 to handle it", || AT.load(Ordering::SeqCst) >= 5);
    if NESTED.load(Ordering::SeqCst) {
        die(format_args!("an NMI nested in a running NMI handler"));
    }

    // get_physid.
    let physid = if pinned {
        for v in 0..2u32 {
            let want_id = u64::from(v) | (u64::from(v) << 32);
            want("get_physid(pinned)", get_physid(v), Ok(want_id));
        }
        "0,1"
    } else {
        want("get_physid(not pinned)", get_physid(0), Err(Errno::EINVAL));
        "einval"
    };
    pv_runtime::println!(
        "{NAME}: PASS self={selfs} blocked={rounds} spinning={rounds} to0={to0} down=1 physid={physid}"
    );
    sched::poweroff()
}

pv_runtime::entry!(main);
