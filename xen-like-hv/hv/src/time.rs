//! Time: the TSC as the hypervisor's clock, calibrated at boot against the PIT (or the
//! HPET when there is no PIT), and the local APIC timer as its interrupt source.

use crate::arch::x86_64::{apic, cpu, paging, pit};
use core::sync::atomic::{AtomicU64, Ordering};

/// Timer interrupts per second while the hypervisor only idles.
pub const TICK_HZ: u64 = 100;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: AtomicU64 = AtomicU64::new(0);

fn sat_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// TSC frequency in Hz (0 until calibrated).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Nanoseconds since the TSC was calibrated (0 before).
pub fn now_ns() -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    let delta = cpu::rdtsc().wrapping_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    sat_u64(u128::from(delta) * 1_000_000_000 / u128::from(hz))
}

/// The TSC value at which [`now_ns`] was 0.
pub fn tsc_at_boot() -> u64 {
    TSC_AT_BOOT.load(Ordering::Relaxed)
}

/// Wall-clock nanoseconds since the epoch at system time 0 (from the RTC at boot).
static WALL_AT_BOOT_NS: AtomicU64 = AtomicU64::new(0);

/// Reads the CMOS real-time clock (UTC) as seconds since the epoch.
fn read_rtc() -> Option<u64> {
    use crate::arch::x86_64::cpu::{inb, outb};
    let reg = |r: u8| {
        outb(0x70, r);
        inb(0x71)
    };
    // Wait (bounded) until no update is in progress, then read twice until stable.
    let mut last = None;
    for _ in 0..1000 {
        for _ in 0..100_000 {
            if reg(0x0A) & 0x80 == 0 {
                break;
            }
        }
        let t = [
            reg(0x00),
            reg(0x02),
            reg(0x04),
            reg(0x07),
            reg(0x08),
            reg(0x09),
            reg(0x32),
        ];
        if last == Some(t) {
            break;
        }
        last = Some(t);
    }
    let [s, mi, h, d, mo, y, c] = last?;
    let status_b = reg(0x0B);
    let binary = status_b & 0x04 != 0;
    let v = |b: u8| {
        if binary {
            Some(b)
        } else {
            xlhv_core::time::from_bcd(b)
        }
    };
    let h24 = status_b & 0x02 != 0;
    let pm = !h24 && h & 0x80 != 0;
    let mut hour = v(h & 0x7F)?;
    if pm {
        hour = (hour % 12) + 12;
    } else if !h24 && hour == 12 {
        hour = 0;
    }
    let century = v(c).filter(|&c| (19..=30).contains(&c)).unwrap_or(20);
    let year = i64::from(century) * 100 + i64::from(v(y)?);
    xlhv_core::time::unix_seconds(
        year,
        u32::from(v(mo)?),
        u32::from(v(d)?),
        u32::from(hour),
        u32::from(v(mi)?),
        u32::from(v(s)?),
    )
}

/// Wall-clock time at system time 0, as (seconds, nanoseconds).
pub fn wall_at_boot() -> (u64, u32) {
    let ns = WALL_AT_BOOT_NS.load(Ordering::Relaxed);
    (
        ns / 1_000_000_000,
        u32::try_from(ns % 1_000_000_000).unwrap_or(0),
    )
}

/// Timer interrupts taken so far.
pub fn ticks() -> u64 {
    TICKS.load(Ordering::Relaxed)
}

/// Called on every local APIC timer interrupt.
pub fn on_timer_interrupt() {
    TICKS.fetch_add(1, Ordering::Relaxed);
}

/// Longest the APIC timer is left unarmed-for: the hypervisor looks at its timers at
/// least this often even with none due.
const MAX_SLEEP_NS: u64 = 1_000_000_000;

/// Arms the local APIC timer to interrupt at system time `deadline` (or after
/// [`MAX_SLEEP_NS`] if that is sooner, or `None`); a past deadline interrupts at once.
pub fn arm(deadline: Option<u64>) {
    let now = now_ns();
    let delta = deadline
        .map_or(MAX_SLEEP_NS, |d| d.saturating_sub(now))
        .min(MAX_SLEEP_NS);
    let hz = APIC_TIMER_HZ.load(Ordering::Relaxed);
    let count = sat_u64(u128::from(delta) * u128::from(hz) / 1_000_000_000);
    apic::timer_oneshot(u32::try_from(count).unwrap_or(u32::MAX).max(1));
}

/// Which reference clock calibrated the TSC.
#[derive(Clone, Copy, Debug)]
enum Reference {
    Pit,
    Hpet,
}

/// Measures TSC and APIC-timer rates over a reference interval. Returns (tsc Hz, apic Hz).
fn calibrate(hpet: Option<u64>) -> Option<(u64, u64, Reference)> {
    // 50 ms of PIT ticks: long enough for <0.1% error, short enough for TCG boots.
    const PIT_TICKS: u16 = 59_659;
    let mut t0 = 0;
    apic::timer_start_masked(u32::MAX);
    let mut a0 = 0;
    if pit::wait_ticks(PIT_TICKS, || {
        a0 = apic::timer_current();
        t0 = cpu::rdtsc();
    }) {
        let t1 = cpu::rdtsc();
        let a1 = apic::timer_current();
        let ns = u64::from(PIT_TICKS) * 1_000_000_000 / pit::PIT_HZ;
        let tsc = (t1 - t0) * 1_000_000_000 / ns;
        let apic = u64::from(a0.wrapping_sub(a1)) * 1_000_000_000 / ns;
        return Some((tsc, apic, Reference::Pit));
    }
    // No PIT: use the HPET main counter.
    let base = paging::ioremap(hpet?, 1024)?;
    let reg = |off: u64| base + off;
    // SAFETY: `base` maps the HPET's 1 KiB register block uncached.
    let period_fs = unsafe { core::ptr::read_volatile(reg(0) as *const u64) } >> 32;
    if period_fs == 0 || period_fs > 100_000_000 {
        return None;
    }
    // SAFETY: as above; setting ENABLE_CNF starts the main counter.
    unsafe { core::ptr::write_volatile(reg(0x10) as *mut u64, 1) };
    // SAFETY: as above.
    let counter = || unsafe { core::ptr::read_volatile(reg(0xF0) as *const u64) };
    let target = 50_000_000_000_000 / period_fs; // 50 ms in HPET ticks
    apic::timer_start_masked(u32::MAX);
    let (h0, t0, a0) = (counter(), cpu::rdtsc(), apic::timer_current());
    while counter().wrapping_sub(h0) < target {
        core::hint::spin_loop();
    }
    let (h1, t1, a1) = (counter(), cpu::rdtsc(), apic::timer_current());
    let ns = sat_u64(u128::from(h1 - h0) * u128::from(period_fs) / 1_000_000);
    if ns == 0 {
        return None;
    }
    let tsc = (t1 - t0) * 1_000_000_000 / ns;
    let apic = u64::from(a0.wrapping_sub(a1)) * 1_000_000_000 / ns;
    Some((tsc, apic, Reference::Hpet))
}

/// Calibrates the TSC and the APIC timer, starts the periodic tick and checks that it
/// ticks at the rate the TSC says.
pub fn init(hpet: Option<u64>) {
    let Some((tsc, apic_hz, reference)) = calibrate(hpet) else {
        panic!("time: no PIT and no usable HPET to calibrate the TSC against");
    };
    TSC_AT_BOOT.store(cpu::rdtsc(), Ordering::Relaxed);
    TSC_HZ.store(tsc, Ordering::Relaxed);
    APIC_TIMER_HZ.store(apic_hz, Ordering::Relaxed);
    log::info!(
        "time: TSC {}.{:03} MHz, APIC timer {}.{:03} MHz (after divide by 16), calibrated against the {:?}",
        tsc / 1_000_000,
        tsc / 1_000 % 1_000,
        apic_hz / 1_000_000,
        apic_hz / 1_000 % 1_000,
        reference
    );
    let count = u32::try_from(apic_hz / TICK_HZ).unwrap_or(u32::MAX).max(1);
    apic::timer_periodic(count);
    x86_64::instructions::interrupts::enable();

    // Check the tick: 10 interrupts should take 100 ms of TSC time.
    let start_ticks = ticks();
    let start = now_ns();
    while ticks() < start_ticks + 10 {
        cpu::hlt();
    }
    let ms = (now_ns() - start) / 1_000_000;
    log::info!("time: APIC timer ticking at {TICK_HZ} Hz: 10 ticks in {ms} ms");

    match read_rtc() {
        Some(secs) => {
            let wall = u128::from(secs) * 1_000_000_000 - u128::from(now_ns());
            WALL_AT_BOOT_NS.store(u64::try_from(wall).unwrap_or(0), Ordering::Relaxed);
            log::info!("time: RTC says {secs} s since the epoch");
        }
        None => log::warn!("time: the RTC gave no valid date; guests' wall clock starts at 1970"),
    }
}
