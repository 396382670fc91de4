//! `dom0`: xen-like-hv's dom0 kernel (crate `xlhv-dom0`).
//!
//! A PV kernel on `pv-runtime` that runs the control agent: it raises its
//! virtual IOPL (`PHYSDEVOP_set_iopl`), scans PCI and starts its virtio
//! devices (disks, NICs, the virtio console of the fast link), drives COM2
//! (QEMU's second serial port, a unix socket on the host) as an
//! interrupt-driven 16550, and answers `dom0ctl`'s requests on both links
//! (`docs/control-protocol.md`). Its named images come
//! from its initrd, an image bundle (`control_proto::images`). What each
//! request does lives in `dom0_core`, tested on the host; this file wires it
//! to the machine. See `docs/dom0.md`.
#![no_std]
#![no_main]

extern crate alloc;

mod com2;
mod dom_exc;
mod foreign;
mod grants;
mod hv;
mod irq;
mod nicbench;
mod pcicfg;
mod store;
mod vcon;
mod virtio;

use alloc::string::String;
use alloc::vec::Vec;

use control_proto::images::Bundle;
use control_proto::{CreateRequest, ExitAction, Kernel, Request, Response};
use dom0_core::uart::{BASE_BAUD, COM2, Uart};
use dom0_core::{After, Agent, Server};
use pv_runtime::abi::xen::start_info::SifFlags;
use pv_runtime::{Config, StartInfo, println, sched, time};

use com2::Com2Ports;
use hv::XenHv;
use irq::DevIrq;
use store::FrameStore;

/// The agent's name in `HelloOk`.
const AGENT: &str = concat!("xlhv-dom0 ", env!("CARGO_PKG_VERSION"));
/// How long a reply may wait for the host to take more of it before the rest is
/// dropped (the host stopped reading; a slow host that keeps reading is waited for).
const SEND_TIMEOUT_NS: u64 = 2_000_000_000;
/// The sleep between polls of an idle link when COM2's interrupt is not available.
const IDLE_SLEEP_NS: u64 = 1_000_000;
/// With COM2's interrupt: the safety-net poll of an idle link (a missed edge, a
/// console ring that did not notify).
const IRQ_IDLE_POLL_NS: u64 = 20_000_000;

/// The initrd, as the builder mapped it (`mod_start` is a virtual address
/// unless `SIF_MOD_START_PFN`).
fn initrd(si: &'static StartInfo) -> Option<&'static [u8]> {
    if si.mod_start == 0 || si.mod_len == 0 {
        return None;
    }
    if SifFlags::from_bits_retain(si.flags).contains(SifFlags::MOD_START_PFN) {
        println!("dom0: the initrd was passed unmapped (SIF_MOD_START_PFN); ignoring it");
        return None;
    }
    let start = usize::try_from(si.mod_start).ok()?;
    let len = usize::try_from(si.mod_len).ok()?;
    let p: *const u8 = core::ptr::with_exposed_provenance(start);
    // SAFETY: the domain builder maps the initrd (`mod_len` bytes at
    // `mod_start`) inside the bootstrap region for the domain's lifetime, the
    // runtime keeps those mappings when it takes over the page tables, and
    // nothing in dom0 writes them.
    Some(unsafe { core::slice::from_raw_parts(p, len) })
}

/// The image bundle from the initrd, reported on the console.
fn images(si: &'static StartInfo) -> Option<Bundle<'static>> {
    let Some(bytes) = initrd(si) else {
        println!("dom0: no initrd, so no images (scripts/run passes a bundle as module 'images')");
        return None;
    };
    match Bundle::parse(bytes) {
        Ok(b) => {
            println!(
                "dom0: {} images in the initrd ({} bytes):",
                b.len(),
                bytes.len()
            );
            for i in b.iter() {
                println!("dom0:   {:<16} {:>9} bytes", i.name, i.data.len());
            }
            Some(b)
        }
        Err(e) => {
            println!("dom0: the initrd is not a usable image bundle: {e}");
            None
        }
    }
}

/// Idles for good (dom0 without a control link still keeps the machine up).
fn park() -> ! {
    loop {
        if time::sleep(1_000_000_000).is_err() {
            sched::yield_now();
        }
    }
}

fn main(si: &'static StartInfo) {
    println!("{AGENT}: dom0 control agent for xen-like-hv");
    let heap = pv_runtime::mm::heap_stats();
    println!(
        "dom0: {} pages, heap {} KiB, {} free frames",
        si.nr_pages,
        (heap.free + heap.in_use) / 1024,
        pv_runtime::mm::frames_available()
    );
    let bundle = images(si);
    if let Err(e) = pv_runtime::physdev::set_iopl(1) {
        println!("dom0: PHYSDEVOP_set_iopl(1) failed ({e}): no port I/O, so no control link");
        park();
    }
    let pci = pcicfg::scan_and_report();
    let mut devices = virtio::probe(&pci, !has_word(si, "pci=nomsi"), has_word(si, "msix_check"));
    if has_word(si, "disk_selftest") {
        virtio::selftest(&mut devices.disks);
    }
    let mut disks = virtio::VirtioDisks {
        disks: core::mem::take(&mut devices.disks),
    };
    if has_word(si, "disk_bench") {
        virtio::bench(&mut disks);
    }
    if has_word(si, "nic_selftest") {
        virtio::nic_selftest(&mut devices.nics);
    }
    if let Some(v) = cmdline_value(si, "nic_bench") {
        match (nicbench::parse(v), devices.nics.first_mut()) {
            (Some((port, mib)), Some(nic)) => nicbench::run(nic, port, mib),
            (None, _) => println!("dom0: nic_bench: FAIL nic_bench= takes PORT,MIB"),
            (_, None) => println!("dom0: nic_bench: FAIL no NIC (scripts/run --nic user)"),
        }
    }
    let mut uart = match Uart::init(Com2Ports::new(), COM2, BASE_BAUD) {
        Ok(u) => u,
        Err(e) => {
            println!("dom0: {e}");
            park();
        }
    };
    println!(
        "dom0: control agent listening on COM2 (port {COM2:#x}, {BASE_BAUD} 8N1, FIFO {})",
        if uart.has_fifo() { "on" } else { "off" }
    );
    match dom_exc::bind() {
        Ok(p) => println!("dom0: VIRQ_DOM_EXC on port {}", p.0),
        Err(e) => println!(
            "dom0: binding VIRQ_DOM_EXC failed ({e}); looking for stopped domains once a second"
        ),
    }
    let irq = com2_irq(si, &mut uart);
    let mut agent = Agent::new(XenHv::default(), FrameStore::new(), bundle, AGENT);
    agent.set_devices(devices.rows(&pci, &disks.disks));
    if !devices.nics.is_empty() {
        agent.set_nics(alloc::boxed::Box::new(virtio::VirtioNics {
            nics: core::mem::take(&mut devices.nics),
        }));
        for u in agent.netback().uplinks() {
            println!(
                "dom0: net: {} ({}) is the uplink of bridge {}",
                u.name,
                dom0_core::ether::mac_text(u.mac),
                u.bridge
            );
        }
    }
    agent.set_disks(alloc::boxed::Box::new(disks));
    autostart(si, &mut agent);
    serve(uart, devices.console.take(), agent, irq)
}

/// Whether `word` stands alone on dom0's command line.
fn has_word(si: &StartInfo, word: &str) -> bool {
    pv_runtime::text::c_str(&si.cmd_line)
        .split(|b| *b == b' ')
        .any(|w| w == word.as_bytes())
}

/// The value of `key=` on dom0's command line.
fn cmdline_value<'a>(si: &'a StartInfo, key: &str) -> Option<&'a [u8]> {
    pv_runtime::text::c_str(&si.cmd_line)
        .split(|b| *b == b' ')
        .find_map(|w| w.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
}

/// COM2's interrupt: `com2irq=edge` (the default) maps GSI 3 and blocks on its event
/// channel when the link is idle; `level` sets GSI 3 up as level-triggered first (a
/// test of the EOI path); `off` polls every millisecond instead. `com2_eoi_delay=MS`
/// makes dom0 a slow driver (tests): after each interrupt it waits that long before
/// it reads the UART and sends its EOI. If mapping or binding fails, dom0 polls.
fn com2_irq(si: &StartInfo, uart: &mut Uart<Com2Ports>) -> Option<(DevIrq, u64)> {
    let mode = cmdline_value(si, "com2irq").unwrap_or(b"edge");
    let level = match mode {
        b"off" => return None,
        b"level" => true,
        _ => false,
    };
    let delay_ms = cmdline_value(si, "com2_eoi_delay")
        .and_then(|v| core::str::from_utf8(v).ok()?.parse::<u64>().ok())
        .unwrap_or(0);
    match DevIrq::bind(com2::COM2_GSI, level) {
        Ok(irq) => {
            uart.enable_rx_interrupt();
            println!(
                "dom0: COM2 interrupt: GSI {} ({}) -> pirq {} -> port {}{}",
                com2::COM2_GSI,
                if level { "level" } else { "edge" },
                irq.pirq,
                irq.port.0,
                if delay_ms > 0 { " (slow EOI)" } else { "" }
            );
            Some((irq, delay_ms.saturating_mul(1_000_000)))
        }
        Err((what, e)) => {
            println!("dom0: {what} failed ({e}): polling COM2 every millisecond");
            None
        }
    }
}

/// Creates the domains `autostart=NAME[,NAME...]` on dom0's command line names,
/// each from the image of that name (32 MiB, kept when it stops), as if `dom0ctl
/// create` asked. `scripts/run` starts the demo this way.
fn autostart(si: &StartInfo, agent: &mut Agent<'static, XenHv, FrameStore>) {
    let cmdline = pv_runtime::text::c_str(&si.cmd_line);
    let Some(list) = cmdline
        .split(|b| *b == b' ')
        .find_map(|w| w.strip_prefix(b"autostart="))
    else {
        return;
    };
    for name in list.split(|b| *b == b',').filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let req = Request::Create(CreateRequest {
            name: name.clone(),
            kernel: Kernel::Named(name.clone()),
            memory_mib: 32,
            vcpus: 1,
            cmdline: String::new(),
            on_poweroff: ExitAction::Preserve,
            on_reboot: ExitAction::Restart,
            on_crash: ExitAction::Preserve,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: Vec::new(),
            cpus_soft: Vec::new(),
        });
        match agent.handle(req).0 {
            Response::Created { domid } => println!("dom0: autostart: {name} is domain {domid}"),
            Response::Error(e) => println!("dom0: autostart: {name}: {}", e.message),
            other => println!("dom0: autostart: {name}: unexpected {other:?}"),
        }
    }
}

/// Which link the last request came from: console output of the attached
/// domain goes there.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Active {
    Com2,
    Fast,
}

/// The agent's loop over its two links, COM2 and (when QEMU has one) the
/// virtio console: read what arrived, answer complete requests on the link
/// they came on, stream console output to the link of the last request. While
/// bytes flow it polls at once; when a pass reads nothing it blocks on the
/// links' interrupts and every other event (or, without COM2's interrupt, polls
/// on for a while and then sleeps a millisecond between polls).
fn serve(
    mut uart: Uart<Com2Ports>,
    mut fast: Option<vcon::VirtioConsole>,
    mut agent: Agent<'static, XenHv, FrameStore>,
    irq: Option<(DevIrq, u64)>,
) -> ! {
    let mut com2 = Server::new();
    let mut fast_server = Server::new();
    let mut active = Active::Com2;
    let mut wakeups = 0u64;
    let mut irq_wakeups = 0u64;
    let mut eoi_due = false;
    let mut buf = [0u8; 256];
    let mut fast_buf = alloc::vec![0u8; 65536];
    let mut out = Vec::new();
    let mut fast_out = Vec::new();
    let mut clock = time::system_time_ns;
    // Event counts when the rings were last served: any event since (a store
    // ring's notification, a console's) serves them again at once.
    let mut served = Events {
        store: u64::MAX,
        backend: u64::MAX,
        all: (u64::MAX, u64::MAX),
    };
    // Whether COM2's receive interrupt is on: then the UART is read only when
    // it interrupted (an emulated port read costs a trap and a trip through
    // QEMU's UART, so a pass for another device's event leaves it alone).
    let mut com2_armed = false;
    loop {
        let com2_due = match irq {
            Some((irq, _)) => !com2_armed || eoi_due || irq.arrived(),
            None => true,
        };
        let n = if com2_due { uart.read(&mut buf) } else { 0 };
        if eoi_due && let Some((irq, _)) = irq {
            // The UART is drained (its line is down): now the EOI.
            irq.eoi();
            eoi_due = false;
        }
        let now = time::system_time_ns();
        let mut after = if n > 0 {
            // Bytes flow: this loop polls, so the UART's interrupt goes off until
            // the link is idle again (it would fire for every refilled FIFO).
            uart.set_rx_interrupt(false);
            com2_armed = false;
            active = Active::Com2;
            com2.receive(&buf[..n], now, &mut agent, &mut out)
        } else {
            com2.idle(now, &mut agent, &mut out)
        };
        let m = fast.as_mut().map_or(0, |f| f.read(&mut fast_buf));
        if fast.is_some() {
            let a = if m > 0 {
                active = Active::Fast;
                fast_server.receive(&fast_buf[..m], now, &mut agent, &mut fast_out)
            } else {
                fast_server.idle(now, &mut agent, &mut fast_out)
            };
            if a == After::PowerOff {
                after = After::PowerOff;
            }
        }
        // An event since the rings were last served may be a domain's XenStore
        // request: serve the store rings now (tick's own sweep is rate-limited
        // for the busy-polling loop). Counted before serving, so an event that
        // arrives meanwhile ends the next idle wait at once.
        let events = Events::now();
        if events != served {
            served = events;
            agent.service_stores();
        }
        // The block back end: front ends' handshakes and rings.
        let disk_busy = agent.service_backends();
        // Consoles of the domains dom0 built, and domains that stopped.
        agent.tick(
            now,
            match active {
                Active::Com2 => &mut out,
                Active::Fast => &mut fast_out,
            },
        );
        if !out.is_empty() {
            if let Err(s) = uart.write(&out, &mut clock, SEND_TIMEOUT_NS) {
                println!(
                    "dom0: the host stopped reading COM2; dropped {} of {} reply bytes",
                    out.len() - s.sent,
                    out.len()
                );
            }
            out.clear();
        }
        if let Some(f) = fast.as_mut()
            && !fast_out.is_empty()
        {
            if let Err(s) = f.write(&fast_out, SEND_TIMEOUT_NS) {
                println!(
                    "dom0: the host stopped reading the virtio console; dropped {} of {} \
                     reply bytes",
                    fast_out.len() - s.sent,
                    fast_out.len()
                );
            }
            fast_out.clear();
        }
        if after == After::PowerOff {
            let deadline = time::system_time_ns().saturating_add(SEND_TIMEOUT_NS);
            let _ = uart.flush(&mut clock, deadline);
            if let Some(f) = fast.as_mut() {
                let _ = f.flush(deadline);
                println!(
                    "dom0: virtio console: {} bytes in, {} out",
                    f.bytes.0, f.bytes.1
                );
            }
            if let Some((irq, _)) = irq {
                println!(
                    "dom0: COM2: {} interrupts, {} idle wake-ups ({} by the interrupt)",
                    irq.count(),
                    wakeups,
                    irq_wakeups
                );
            }
            println!("dom0: shutdown-host: powering the machine off");
            sched::poweroff();
        }
        // Poll again at once while bytes flow. With COM2's interrupt, a pass that
        // found COM2 empty waits for it instead (even mid-frame): the UART raises
        // it at 14 bytes or 4 characters after the last, and a spinning vCPU starves
        // the emulator thread that fills the FIFO.
        let com2_spins = com2.busy(now) && irq.is_none();
        if n != 0 || m != 0 || disk_busy || com2_spins || fast_server.busy(now) {
            continue;
        }
        let Some((irq, eoi_delay)) = irq else {
            if time::sleep(IDLE_SLEEP_NS).is_err() {
                sched::yield_now();
            }
            continue;
        };
        // Idle: block until a link interrupts, any other event arrives (a console,
        // a store ring, a back end's ring, a domain's death; also one that came
        // while this pass ran), or the safety-net poll is due. A wake-up by store
        // and back-end channels alone is answered here (the store rings and the
        // back ends served, nothing else) and the wait goes on: a XenStore round
        // trip or a network frame does not wait for a pass over every link and
        // console. The full pass still comes at the deadline.
        let deadline = now.saturating_add(IRQ_IDLE_POLL_NS);
        uart.set_rx_interrupt(true);
        com2_armed = true;
        let fast_ref = &fast;
        let mut backends_busy = false;
        let woke = loop {
            let seen = served;
            let woke = if backends_busy && time::system_time_ns() < deadline {
                Ok(true)
            } else {
                sched::wait_until(
                    || {
                        irq.arrived()
                            || fast_ref.as_ref().is_some_and(|f| f.arrived())
                            || pv_runtime::evtchn::counters() != seen.all
                    },
                    Some(deadline),
                )
            };
            if woke != Ok(true) || irq.arrived() || fast_ref.as_ref().is_some_and(|f| f.arrived()) {
                break woke;
            }
            let events = Events::now();
            if !events.only_store_or_backend_since(&seen) {
                break woke;
            }
            // Counted before serving (as in the full pass), so a request or a
            // frame that arrives meanwhile ends the next wait at once.
            served = events;
            if events.store != seen.store && !agent.serve_store_event() {
                // A write: the control link's watches look too.
                break woke;
            }
            if events.backend != seen.backend || backends_busy {
                backends_busy = agent.service_backends();
            }
        };
        wakeups += 1;
        if irq.arrived() {
            irq_wakeups += 1;
        }
        if woke.is_err() {
            sched::yield_now();
        }
        if irq.take() {
            if eoi_delay > 0 {
                // A slow driver: the UART keeps its line up and the EOI waits.
                let _ = time::sleep(eoi_delay);
            }
            eoi_due = true;
        }
    }
}

/// Event counts, read together with events off (the upcall cannot run between
/// the reads): all ports, the XenStore channels alone, the back ends' alone.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Events {
    store: u64,
    backend: u64,
    all: (u64, u64),
}

impl Events {
    fn now() -> Self {
        pv_runtime::evtchn::without_events(|| Events {
            store: hv::store_events(),
            backend: hv::backend_events(),
            all: pv_runtime::evtchn::counters(),
        })
    }

    /// Whether every event since `before` was on a XenStore or back-end channel.
    fn only_store_or_backend_since(&self, before: &Events) -> bool {
        let total = |e: &Events| e.all.0.wrapping_add(e.all.1);
        let ours = self
            .store
            .wrapping_sub(before.store)
            .wrapping_add(self.backend.wrapping_sub(before.backend));
        total(self).wrapping_sub(total(before)) == ours
    }
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
