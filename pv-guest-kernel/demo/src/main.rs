//! `pv-demo`: a demo PV kernel on pv-runtime.
//!
//! Boots (as dom0 or a domU), prints a banner with its domain id, memory,
//! start_info flags, the hypervisor's version and feature bits, time and
//! memory facts, counts timer upcalls, shows its uptime once a second for
//! a few seconds (sleeping on the timer in between), then runs a
//! self-check: a deliberate #PF (CR2 checked), a #UD, a #GP from a
//! privileged instruction, an unassigned hypercall (-ENOSYS) and an LDT of its own. One line per check and a summary; powers off if every check
//! passed, crashes the domain otherwise.
//!
//! A domU with a XenStore page also serves `control/shutdown` (`xl
//! shutdown`/`reboot`) while it runs: the watch is registered without
//! waiting for xenstored, and its callbacks run between the uptime lines.
//! `linger=<s>` on the command line keeps it serving that long after the
//! self-check before it powers off (0 by default). Without a store (dom0,
//! a boot-time domU) or without an answering xenstored, nothing changes.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::evtchn::Virq;
use pv_runtime::abi::xen::start_info::SifFlags;
use pv_runtime::abi::{Errno, PAGE_SIZE, VcpuId};
use pv_runtime::probe::{self, Probe};
use pv_runtime::text::{Ascii, FeatureList, c_str};
use pv_runtime::traps::{self, Callback, TrapFrame, vector};
use pv_runtime::{StartInfo, evtchn, hypercall, mm, println, sched, shared, time, xen, xenbus};

/// Canonical and unmapped in every PV guest's initial address space.
const UNMAPPED: u64 = 0x0000_4000_0000_0000 + 0x5A8;
/// The unassigned hypercall number the self-check calls.
const UNASSIGNED_HYPERCALL: u64 = 60;

static SEEN_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static SEEN_RIP: AtomicU64 = AtomicU64::new(0);
static SEEN_ERROR: AtomicU64 = AtomicU64::new(0);
static SEEN_CR2: AtomicU64 = AtomicU64::new(0);

/// The demo's own handler for #PF, #UD and #GP: note what happened and
/// step over the probe instruction.
fn on_fault(frame: &mut TrapFrame) {
    SEEN_VECTOR.store(frame.vector, Ordering::SeqCst);
    SEEN_RIP.store(frame.rip, Ordering::SeqCst);
    SEEN_ERROR.store(frame.error_code, Ordering::SeqCst);
    SEEN_CR2.store(frame.cr2, Ordering::SeqCst);
    if probe::skip(frame).is_none() {
        panic!("pv-demo: unexpected {frame}");
    }
}

struct Seen {
    vector: u64,
    rip: u64,
    error: u64,
    cr2: u64,
}

fn take_seen() -> Seen {
    Seen {
        vector: SEEN_VECTOR.swap(u64::MAX, Ordering::SeqCst),
        rip: SEEN_RIP.load(Ordering::SeqCst),
        error: SEEN_ERROR.load(Ordering::SeqCst),
        cr2: SEEN_CR2.load(Ordering::SeqCst),
    }
}

fn check(name: &str, ok: bool, detail: core::fmt::Arguments<'_>) -> bool {
    println!(
        "pv-demo: check {name:<10} {} ({detail})",
        if ok { "ok" } else { "FAILED" }
    );
    ok
}

fn banner(si: &StartInfo) {
    println!(
        "pv-demo: pv-runtime demo kernel {}",
        env!("CARGO_PKG_VERSION")
    );
    let flags = si.sif_flags();
    match xen::domid() {
        Some(d) if flags.contains(SifFlags::INITDOMAIN) => {
            let probe = xen::domid_from_evtchn();
            match probe {
                Some(p) => println!(
                    "pv-demo: domid {} (initial domain; event-channel probe says {})",
                    d.0, p.0
                ),
                None => println!(
                    "pv-demo: domid {} (initial domain; event-channel probe failed)",
                    d.0
                ),
            }
        }
        Some(d) => println!("pv-demo: domid {}", d.0),
        None => println!("pv-demo: domid unknown"),
    }
    println!(
        "pv-demo: memory {} pages ({} MiB); start_info flags {:#x} {:?}",
        si.nr_pages,
        (si.nr_pages * PAGE_SIZE as u64) >> 20,
        si.flags,
        flags
    );
    let cmdline = c_str(&si.cmd_line);
    if !cmdline.is_empty() {
        println!("pv-demo: command line \"{}\"", Ascii(cmdline));
    }
    match (xen::version(), xen::extraversion()) {
        (Ok(v), Ok(extra)) => println!("pv-demo: hypervisor Xen {v}{}", Ascii(c_str(&extra))),
        (v, e) => println!("pv-demo: hypervisor version unavailable ({v:?}, {e:?})"),
    }
    let mut caps = [0; 1024];
    match xen::capabilities_into(&mut caps) {
        Ok(()) => println!("pv-demo: capabilities \"{}\"", Ascii(c_str(&caps))),
        Err(e) => println!("pv-demo: capabilities unavailable ({e})"),
    }
    match xen::virt_start() {
        Ok(v) => println!("pv-demo: hypervisor virt_start {v:#x}"),
        Err(e) => println!("pv-demo: hypervisor virt_start unavailable ({e})"),
    }
    match xen::features(0) {
        Ok(f) => println!("pv-demo: XENFEAT {f:#010x} {}", FeatureList(f)),
        Err(e) => println!("pv-demo: XENFEAT unavailable ({e})"),
    }
}

fn facts() {
    let now = time::system_time_ns();
    let wall = time::wallclock();
    println!(
        "pv-demo: time {}.{:09} s since hypervisor boot; wall clock {}; TSC {} MHz",
        now / 1_000_000_000,
        now % 1_000_000_000,
        wall.civil(),
        time::tsc_hz().unwrap_or(0) / 1_000_000
    );
    let layout = pv_runtime::layout();
    let heap = mm::heap_stats();
    println!(
        "pv-demo: bootstrap region {}, heap {} ({} KiB), {} free frames",
        layout.region,
        heap.region,
        heap.region.len() / 1024,
        mm::frames_available()
    );
    println!(
        "pv-demo: page tables: {} (L4 at mfn {:#x})",
        if mm::taken_over() {
            "its own, built at start, pinned and loaded with NEW_BASEPTR"
        } else {
            "the builder's"
        },
        mm::kernel_root().0
    );
    // The heap and the frame allocator, briefly.
    let squares: Vec<u64> = (0..1000u64).map(|i| i * i).collect();
    let sum: u64 = squares.iter().sum();
    let frame = mm::alloc_frame();
    println!(
        "pv-demo: heap Vec of {} u64 (sum {sum}), in use {} bytes; frame {:?}",
        squares.len(),
        mm::heap_stats().in_use,
        frame
    );
    if let Some(f) = frame {
        let _ = mm::free_frame(f);
    }
}

static UPCALLS: AtomicU64 = AtomicU64::new(0);

fn on_event(_frame: &mut TrapFrame) {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    evtchn::acknowledge_all();
}

/// Bind VIRQ_TIMER, arm a 10 ms one-shot, and count event upcalls during
/// 50 ms with events enabled (the default 100 Hz periodic tick also fires).
fn events() {
    let port = match evtchn::bind_virq(Virq::Timer, VcpuId(0)) {
        Ok(p) => p,
        Err(e) => return println!("pv-demo: events: bind_virq(TIMER) failed: {e}"),
    };
    traps::set_callback_handler(Callback::Event, Some(on_event));
    let start = time::system_time_ns();
    let _ = time::set_timer(start + 10_000_000);
    shared::set_upcall_mask(0, 0);
    while time::system_time_ns() < start + 50_000_000 {
        core::hint::spin_loop();
    }
    shared::set_upcall_mask(0, 1);
    let _ = evtchn::close(port);
    traps::set_callback_handler(Callback::Event, None);
    println!(
        "pv-demo: events: {} timer upcalls in 50 ms on port {}",
        UPCALLS.load(Ordering::SeqCst),
        port.0
    );
}

/// Attach to XenStore, if this domain has a store page, and serve
/// `control/shutdown`; neither step waits for xenstored. Returns whether
/// the watch is in place.
fn xenstore(si: &StartInfo) -> bool {
    match xenbus::connect().and_then(|()| xenbus::watch_control_shutdown()) {
        Ok(()) => {
            println!(
                "pv-demo: xenstore: store page mfn {:#x}, port {}; serving control/shutdown",
                si.store_mfn.0, si.store_evtchn.0
            );
            true
        }
        Err(e) => {
            println!("pv-demo: xenstore: not used ({e})");
            false
        }
    }
}

/// Serve XenStore watches (a shutdown request does not return).
fn serve_store(store: bool) {
    if store && let Err(e) = xenbus::poll() {
        println!("pv-demo: xenstore: {e}");
    }
}

/// Seconds of uptime the demo shows before its self-check.
const UPTIME_SECS: u64 = 3;

/// A line each second for a few seconds, sleeping in between with the
/// runtime's timer (`set_timer_op` + `SCHEDOP_block` on `VIRQ_TIMER`).
fn uptime(store: bool) {
    let start = time::system_time_ns();
    for s in 1..=UPTIME_SECS {
        if let Err(e) = time::sleep_until(start + s * 1_000_000_000) {
            println!("pv-demo: uptime: timer unavailable ({e}); not sleeping");
            return;
        }
        let now = time::system_time_ns();
        println!(
            "pv-demo: uptime {}.{:03} s, {} timer ticks",
            now / 1_000_000_000,
            now % 1_000_000_000 / 1_000_000,
            time::timer_events()
        );
        serve_store(store);
    }
    let _ = time::release_timer_port();
}

fn self_check() -> (u32, u32) {
    traps::set_handler(vector::PF, on_fault);
    traps::set_handler(vector::UD, on_fault);
    traps::set_handler(vector::GP, on_fault);
    let mut passed = 0;
    let mut total = 0;
    let mut tally = |ok: bool| {
        total += 1;
        passed += u32::from(ok);
    };

    let value = probe::read_u64(UNMAPPED);
    let s = take_seen();
    tally(check(
        "#PF",
        s.vector == u64::from(vector::PF) && s.cr2 == UNMAPPED && s.rip == Probe::Read.site(),
        format_args!(
            "read {UNMAPPED:#x} -> {value:#x}; vector {} cr2 {:#x} error {:#x} rip {:#x}",
            s.vector as i64, s.cr2, s.error, s.rip
        ),
    ));

    probe::ud2();
    let s = take_seen();
    tally(check(
        "#UD",
        s.vector == u64::from(vector::UD) && s.rip == Probe::Ud2.site(),
        format_args!("ud2; vector {} rip {:#x}, skipped", s.vector as i64, s.rip),
    ));

    probe::hlt();
    let s = take_seen();
    tally(check(
        "#GP",
        s.vector == u64::from(vector::GP) && s.error == 0 && s.rip == Probe::Hlt.site(),
        format_args!(
            "hlt; vector {} error {:#x} rip {:#x}, skipped",
            s.vector as i64, s.error, s.rip
        ),
    ));

    let r = hypercall::call_unassigned(UNASSIGNED_HYPERCALL);
    tally(check(
        "ENOSYS",
        r == Some(Err(Errno::ENOSYS)),
        format_args!("hypercall {UNASSIGNED_HYPERCALL} -> {r:?}"),
    ));

    tally(ldt_check());

    (passed, total)
}

/// The demo runs with an LDT: one page of its own holding a DPL-0 data descriptor,
/// mapped read-only. The hypervisor audits the page when the CPU first reads it, so
/// the descriptor is seen with DPL 3.
fn ldt_check() -> bool {
    use pv_runtime::abi::xen::PteFlags;
    use pv_runtime::desc;
    const DATA_DPL0: u64 = 0x0000_9200_0000_0FFF;
    const SEL0: u16 = 0x0007;
    let Some(frame) = mm::alloc_frame() else {
        return check("LDT", false, format_args!("no free frame"));
    };
    let filled = mm::with_writable(frame, |page| {
        page.fill(0);
        page[..8].copy_from_slice(&DATA_DPL0.to_le_bytes());
    });
    let ro = mm::map(frame.va(), &[frame.mfn], PteFlags::NX);
    let set = desc::set_ldt(frame.va(), 1);
    let (limit, rights) = (desc::segment_limit(SEL0), desc::access_rights(SEL0));
    let dropped = desc::set_ldt(0, 0);
    let after = desc::segment_limit(SEL0);
    check(
        "LDT",
        filled.is_ok()
            && ro.is_ok()
            && set.is_ok()
            && limit == Some(0xFFF)
            && rights.is_some_and(|r| (r >> 8) & 0xFF == 0xF2)
            && dropped.is_ok()
            && after.is_none(),
        format_args!(
            "set_ldt {set:?}; lsl {SEL0:#x} -> {limit:#x?}, lar -> {rights:#x?}; \
             after set_ldt(0) -> {after:?}"
        ),
    )
}

fn main(si: &'static StartInfo) {
    banner(si);
    facts();
    events();
    let store = xenstore(si);
    uptime(store);
    let (passed, total) = self_check();
    let linger = pv_runtime::text::cmdline_value(&si.cmd_line, "linger")
        .and_then(|v| core::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    if store && linger > 0 {
        println!("pv-demo: serving control/shutdown for {linger} s");
        let end = time::system_time_ns() + linger * 1_000_000_000;
        while let Some(left) = end.checked_sub(time::system_time_ns()).filter(|&l| l > 0) {
            if let Err(e) = xenbus::wait_for_events(left) {
                println!("pv-demo: xenstore: {e}");
                break;
            }
        }
    }
    if passed == total {
        println!("pv-demo: self-check passed ({passed}/{total}); powering off");
        sched::poweroff()
    }
    println!("pv-demo: self-check FAILED ({passed}/{total} passed); crashing");
    sched::crash()
}

pv_runtime::entry!(main, config = pv_runtime::Config::OWN_PAGE_TABLES);
