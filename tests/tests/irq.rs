//! Device interrupts as event channels: dom0's control link runs on COM2's
//! interrupt (GSI 3 -> pirq 3 -> an event channel) while `dom0ctl` talks to it; a
//! level-triggered GSI whose driver is slow to EOI does not storm; a domU reaches
//! no interrupt and gets Xen's errno.

use std::time::Duration;

use xlhv_tests::{ControlHost, Module, QemuExit, test_guest};

/// The number in `prefix<N><rest>` on a line of `log`.
fn number_after(log: &str, prefix: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in:\n{log}"));
    let tail = &line[line.find(prefix).unwrap() + prefix.len()..];
    tail.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {prefix:?} in {line:?}"))
}

/// Runs `rounds` pairs of requests, `gap` apart (a gap longer than dom0's 20 ms
/// busy-polling window lets dom0 go idle, so each request must wake it), shuts
/// the host down and returns COM1.
fn talk_and_stop(h: &mut ControlHost, rounds: usize, gap: Duration) -> String {
    for _ in 0..rounds {
        std::thread::sleep(gap);
        h.dom0ctl(&["info"]).code(0);
        std::thread::sleep(gap);
        h.dom0ctl(&["list"]).code(0);
    }
    h.dom0ctl(&["shutdown-host"]).code(0);
    let status = h.machine.wait_exit(Duration::from_secs(60));
    assert!(status.is_some(), "QEMU still runs\n{}", h.serial());
    assert_eq!(h.machine.exit(), Some(QemuExit::Poweroff), "{}", h.serial());
    h.serial()
}

#[test]
fn a_domu_gets_no_interrupt() {
    let guest = test_guest("pirq-domu");
    let spec = format!("{},name=pirq,mem=16M", guest.display());
    let mut h = ControlHost::boot_with("irq-domu", vec![Module::domu(&spec).unwrap()]);
    // The boot-time domU runs beside dom0 (weight 256 to dom0's 4096): wait for its
    // result line before the host is shut down, or a slow host stops it first.
    let start = std::time::Instant::now();
    while !h.serial().contains("(d1) pirq-domu: ") {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the pirq domU printed no result within 60 s:\n{}",
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = talk_and_stop(&mut h, 1, Duration::ZERO);
    assert!(log.contains("(d1) pirq-domu: PASS"), "{log}");
    assert!(!log.contains("pirq-domu: FAIL"), "{log}");
    assert!(log.contains("all of dom0's frames are back"), "{log}");
}

/// What dom0's last line about COM2 says: (interrupts its upcall or serve loop took,
/// idle wake-ups, wake-ups that found COM2's interrupt).
fn com2_counts(log: &str) -> (u64, u64, u64) {
    let irqs = number_after(log, "(d0) dom0: COM2: ");
    let wakeups = number_after(log, " interrupts, ");
    let by_irq = number_after(log, " idle wake-ups (");
    (irqs, wakeups, by_irq)
}

#[test]
fn com2_interrupts_drive_the_link() {
    // Ten requests, each after dom0 has gone idle: each must wake dom0 through
    // GSI 3 -> pirq 3 -> its event channel, not through the 20 ms safety-net poll.
    let mut h = ControlHost::boot_full("irq-edge", "com2irq=edge", Vec::new());
    let log = talk_and_stop(&mut h, 5, Duration::from_millis(60));
    assert!(
        log.contains("(d0) dom0: COM2 interrupt: GSI 3 (edge) -> pirq 3 -> port"),
        "{log}"
    );
    let (dom0_irqs, wakeups, by_irq) = com2_counts(&log);
    let hv_irqs = number_after(&log, "irq: GSI 3: ");
    eprintln!(
        "COM2: dom0 took {dom0_irqs} interrupts, woke {wakeups} times, {by_irq} by the \
         interrupt; the hypervisor took {hv_irqs}"
    );
    assert!(
        by_irq >= 10,
        "one interrupt wake-up per request at least\n{log}"
    );
    assert!(dom0_irqs >= by_irq && hv_irqs >= dom0_irqs, "{log}");
    assert!(log.contains("all of dom0's frames are back"), "{log}");
}

#[test]
fn level_gsi_with_a_slow_eoi_does_not_storm() {
    // GSI 3 set up as level-triggered (QEMU's UART holds its line while data
    // waits); dom0 waits 200 ms after each interrupt before it drains the UART
    // and EOIs. Unmasked, the asserted line would interrupt the CPU continuously.
    let mut h = ControlHost::boot_full("irq-level", "com2irq=level com2_eoi_delay=200", Vec::new());
    let log = talk_and_stop(&mut h, 3, Duration::from_millis(60));
    assert!(
        log.contains("(d0) dom0: COM2 interrupt: GSI 3 (level) -> pirq 3 -> port"),
        "{log}"
    );
    let (dom0_irqs, _, by_irq) = com2_counts(&log);
    let hv_irqs = number_after(&log, "irq: GSI 3: ");
    eprintln!("level COM2, slow EOI: dom0 took {dom0_irqs} interrupts, the hypervisor {hv_irqs}");
    assert!(by_irq >= 6, "{log}");
    // One hypervisor interrupt per delivery, and a few that arrive in flight
    // (coalesced); a storm would be thousands.
    assert!(
        hv_irqs <= 2 * dom0_irqs + 10,
        "interrupt storm: {hv_irqs}\n{log}"
    );
    assert!(log.contains("all of dom0's frames are back"), "{log}");
}
