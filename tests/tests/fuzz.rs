//! The hostile-hypercall fuzzer (the `fuzz` test guest, docs/reliability.md) on a
//! short fixed set of seeds: as dom0 alone, and as a boot-time domU beside a ticking
//! dom0. The hypervisor must not panic, hang or leak; the fuzzer must make every call
//! it was asked to and find its invariants intact; the neighbour must keep ticking.
//! Longer campaigns: `scripts/fuzz`.

use xlhv_tests::{Boot, Boot0, QemuExit, test_guest};
use xtask::fuzz::{Mode, Outcome, classify, modules};

/// Boots the fuzzer with `seed` and `count` in `mode` and checks the outcome.
fn fuzz(mode: Mode, seed: u64, count: u64) -> Boot0 {
    let mut b = Boot::new(&format!(
        "fuzz-{}-{seed}",
        if mode == Mode::Dom0 { "dom0" } else { "domu" }
    ));
    b.modules = modules(
        &test_guest("fuzz"),
        &test_guest("ticker"),
        mode,
        seed,
        count,
    );
    b.stop_at = None;
    let b = b.run();
    let o = classify(
        &b.out.serial,
        b.out.exit,
        b.out.timed_out,
        mode,
        seed,
        count,
    );
    let Outcome::Pass { calls, .. } = o else {
        panic!(
            "{}: seed {seed}: {} ({o:?})\n--- COM1 ---\n{}",
            b.name,
            o.kind(),
            b.out.serial
        );
    };
    // Not vacuous: every call asked for was made, and the log says so.
    assert_eq!(calls, count, "{}", b.out.serial);
    b.line(&format!(
        "fuzz: PASS seed={seed} count={count} calls={count} "
    ));
    b.line("fuzz: calls per number");
    b.exited(QemuExit::Poweroff);
    b.no_line("xen-like-hv PANIC");
    b.no_line("frames leaked");
    b.line("memory: all of dom0's frames are back");
    b
}

#[test]
fn the_fuzzer_as_dom0_leaves_the_hypervisor_standing() {
    for seed in 1..=5 {
        fuzz(Mode::Dom0, seed, 3000);
    }
}

#[test]
fn the_fuzzer_as_a_domu_does_not_disturb_a_ticker_and_gives_every_frame_back() {
    let b = fuzz(Mode::Domu, 6, 1500);
    b.line("(d1) fuzz: PASS seed=6");
    b.line("ticker: PASS");
    let back = b.line("frames of domain 1 are back");
    assert!(back.contains("memory: all "), "{back}");
}
