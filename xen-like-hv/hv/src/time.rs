//! Time: the TSC as the hypervisor's clock, and the local APIC timer as its interrupt
//! source. The TSC's rate comes from CPUID leaf 0x15/0x16 when the CPU states it
//! (checked against a short window), else from 5 ms of the HPET, else from about 18 ms
//! of PIT windows. About a second later it is measured again against the HPET over
//! that whole second, as Linux refines its early calibration, and the clock continues
//! at the refined rate from where it was: it never jumps, for us or for guests'
//! pvclocks (see [`refine`]). docs/boot.md#time.

use crate::arch::x86_64::{apic, cpu, paging, pit};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use xlhv_core::time::Anchor;

/// Timer interrupts per second while the hypervisor only idles.
pub const TICK_HZ: u64 = 100;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static APIC_TIMER_HZ: AtomicU64 = AtomicU64::new(0);
static TICKS: [AtomicU64; crate::arch::x86_64::percpu::MAX_CPUS] =
    [const { AtomicU64::new(0) }; crate::arch::x86_64::percpu::MAX_CPUS];

/// The clock's [`Anchor`], behind a sequence count (odd while it changes) so readers
/// never see half of an update.
static SEQ: AtomicU32 = AtomicU32::new(0);
static ANCHOR_TSC: AtomicU64 = AtomicU64::new(0);
static ANCHOR_NS: AtomicU64 = AtomicU64::new(0);
/// `mul` in bytes 0-3, `shift` in byte 4; 0 until calibrated, so time reads 0 until then.
static ANCHOR_SCALE: AtomicU64 = AtomicU64::new(0);

fn sat_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// TSC frequency in Hz (0 until calibrated).
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// The clock's current anchor: what `vcpu_time_info` publishes.
pub fn anchor() -> Anchor {
    loop {
        let seq = SEQ.load(Ordering::Acquire);
        let [m0, m1, m2, m3, shift, ..] = ANCHOR_SCALE.load(Ordering::Relaxed).to_le_bytes();
        let a = Anchor {
            tsc: ANCHOR_TSC.load(Ordering::Relaxed),
            ns: ANCHOR_NS.load(Ordering::Relaxed),
            mul: u32::from_le_bytes([m0, m1, m2, m3]),
            shift: i8::from_le_bytes([shift]),
        };
        fence(Ordering::Acquire);
        if seq & 1 == 0 && SEQ.load(Ordering::Relaxed) == seq {
            return a;
        }
        core::hint::spin_loop();
    }
}

/// Moves the clock to `a`. One writer at a time: boot, then [`refine`] with interrupts
/// off.
fn set_anchor(a: Anchor) {
    let seq = SEQ.load(Ordering::Relaxed);
    SEQ.store(seq.wrapping_add(1), Ordering::Relaxed);
    fence(Ordering::Release);
    ANCHOR_TSC.store(a.tsc, Ordering::Relaxed);
    ANCHOR_NS.store(a.ns, Ordering::Relaxed);
    let [m0, m1, m2, m3] = a.mul.to_le_bytes();
    let [shift] = a.shift.to_le_bytes();
    let scale = u64::from_le_bytes([m0, m1, m2, m3, shift, 0, 0, 0]);
    ANCHOR_SCALE.store(scale, Ordering::Relaxed);
    SEQ.store(seq.wrapping_add(2), Ordering::Release);
}

/// System time in nanoseconds (0 before calibration), computed exactly as a guest
/// computes it from its pvclock.
pub fn now_ns() -> u64 {
    anchor().ns_at(cpu::rdtsc())
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

/// Timer interrupts this CPU took so far.
pub fn ticks() -> u64 {
    crate::arch::x86_64::percpu::mine(&TICKS).load(Ordering::Relaxed)
}

/// Called on every local APIC timer interrupt.
pub fn on_timer_interrupt() {
    let t = crate::arch::x86_64::percpu::mine(&TICKS);
    t.store(t.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
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

/// Where the boot-time TSC rate came from.
#[derive(Clone, Copy, Debug)]
enum Reference {
    Cpuid,
    Hpet,
    Pit,
}

/// PIT ticks of the boot-time windows without an HPET: 5 ms (2 ms to check a CPUID
/// figure); see [`measure_pit`].
const PIT_WINDOW: u16 = 5_966;
const PIT_CHECK_WINDOW: u16 = 2_386;
/// A CPUID frequency further than 1/50 from the measured one is not believed.
const CPUID_TOLERANCE: u64 = 50;

/// The HPET's main counter, mapped uncached and running.
#[derive(Clone, Copy)]
struct Hpet {
    base: u64,
    period_fs: u64,
    /// The counter is 64 bits wide (else 32, and wraps in ~43 s at QEMU's 100 MHz).
    wide: bool,
}

impl Hpet {
    /// Maps the HPET at `phys` and starts its main counter.
    fn start(phys: u64) -> Option<Hpet> {
        let base = paging::ioremap(phys, 1024)?;
        // SAFETY: `base` maps the HPET's 1 KiB register block uncached.
        let caps = unsafe { core::ptr::read_volatile(base as *const u64) };
        let period_fs = caps >> 32;
        if period_fs == 0 || period_fs > 100_000_000 {
            return None;
        }
        // SAFETY: as above; ENABLE_CNF (bit 0 of the configuration register) starts the
        // main counter (no comparator is enabled, so nothing interrupts), and the other
        // bits stay as they were.
        unsafe {
            let cfg = (base + 0x10) as *mut u64;
            core::ptr::write_volatile(cfg, core::ptr::read_volatile(cfg) | 1);
        }
        Some(Hpet {
            base,
            period_fs,
            wide: caps & (1 << 13) != 0,
        })
    }

    fn counter(&self) -> u64 {
        // SAFETY: `base` maps the HPET's registers (see `start`).
        unsafe { core::ptr::read_volatile((self.base + 0xF0) as *const u64) }
    }

    /// Nanoseconds between two counter values.
    fn ns_between(&self, from: u64, to: u64) -> u64 {
        let mut ticks = to.wrapping_sub(from);
        if !self.wide {
            ticks &= 0xFFFF_FFFF;
        }
        sat_u64(u128::from(ticks) * u128::from(self.period_fs) / 1_000_000)
    }
}

/// TSC and APIC-timer counts over `ticks` of the PIT (`None`: no PIT).
fn count_pit(ticks: u16) -> Option<(u64, u64)> {
    let (mut t0, mut a0) = (0, 0);
    apic::timer_start_masked(u32::MAX);
    let done = pit::wait_ticks(ticks, || {
        a0 = apic::timer_current();
        t0 = cpu::rdtsc();
    });
    let (t1, a1) = (cpu::rdtsc(), apic::timer_current());
    done.then(|| (t1.wrapping_sub(t0), u64::from(a0.wrapping_sub(a1))))
}

/// TSC and APIC-timer rates over windows of `ticks` of the PIT (`None`: no PIT),
/// robust against a slow start and against the CPU being taken away (a host that
/// deschedules a virtual CPU): three windows of `ticks` and three of `ticks / 5`,
/// alternating, the shortest count of each kind kept (a delay only ever lengthens a
/// window), and the short one subtracted from the long one, so that the fixed cost of
/// starting and stopping a count drops out.
fn measure_pit(ticks: u16) -> Option<(u64, u64)> {
    let short = ticks / 5;
    let (mut long_min, mut short_min) = ((u64::MAX, u64::MAX), (u64::MAX, u64::MAX));
    for _ in 0..3 {
        let (t, a) = count_pit(ticks)?;
        long_min = (long_min.0.min(t), long_min.1.min(a));
        let (t, a) = count_pit(short)?;
        short_min = (short_min.0.min(t), short_min.1.min(a));
    }
    let ns = u64::from(ticks - short) * 1_000_000_000 / pit::PIT_HZ;
    let tsc = xlhv_core::time::rate_hz(long_min.0.checked_sub(short_min.0)?, ns)?;
    let apic = xlhv_core::time::rate_hz(long_min.1.checked_sub(short_min.1)?, ns)?;
    Some((tsc, apic))
}

/// TSC and APIC-timer rates measured over `ms` milliseconds of the HPET.
fn measure_hpet(h: &Hpet, ms: u64) -> Option<(u64, u64)> {
    apic::timer_start_masked(u32::MAX);
    let (h0, t0, a0) = (h.counter(), cpu::rdtsc(), apic::timer_current());
    while h.ns_between(h0, h.counter()) < ms * 1_000_000 {
        core::hint::spin_loop();
    }
    let (h1, t1, a1) = (h.counter(), cpu::rdtsc(), apic::timer_current());
    let ns = h.ns_between(h0, h1);
    let tsc = xlhv_core::time::rate_hz(t1.wrapping_sub(t0), ns)?;
    let apic = xlhv_core::time::rate_hz(u64::from(a0.wrapping_sub(a1)), ns)?;
    Some((tsc, apic))
}

/// TSC and APIC-timer rates over a short window: `hpet_ms` of the HPET when there is
/// one (a memory-mapped free-running counter, read with no port I/O: within about
/// 50 ppm in 2 ms under TCG), else the PIT's windows of `pit_ticks`.
fn measure(hpet: Option<&Hpet>, hpet_ms: u64, pit_ticks: u16) -> Option<(u64, u64, Reference)> {
    if let Some(h) = hpet {
        // A first run of the code is slow under TCG (it is translated then), which
        // would stretch the window between reading the TSC and the APIC timer.
        let _ = measure_hpet(h, 0);
        if let Some((tsc, apic)) = measure_hpet(h, hpet_ms) {
            return Some((tsc, apic, Reference::Hpet));
        }
    }
    let (tsc, apic) = measure_pit(pit_ticks)?;
    Some((tsc, apic, Reference::Pit))
}

/// The TSC frequency CPUID states (leaves 0x15 and 0x16), if any.
fn cpuid_tsc_hz() -> Option<u64> {
    use core::arch::x86_64::__cpuid;
    let max_leaf = __cpuid(0).eax;
    if max_leaf < 0x15 {
        return None;
    }
    let l15 = __cpuid(0x15);
    let l16 = if max_leaf >= 0x16 {
        __cpuid(0x16).eax
    } else {
        0
    };
    xlhv_core::time::tsc_hz_from_cpuid(max_leaf, [l15.eax, l15.ebx, l15.ecx], l16)
}

/// The boot-time TSC and APIC-timer rates, and where the TSC's came from.
fn calibrate(hpet: Option<&Hpet>) -> Option<(u64, u64, Reference)> {
    if let Some(stated) = cpuid_tsc_hz() {
        // A virtual CPU may state a rate its TSC does not run at: check it.
        if let Some((tsc, apic, _)) = measure(hpet, 1, PIT_CHECK_WINDOW) {
            if stated.abs_diff(tsc) <= stated / CPUID_TOLERANCE {
                let apic = sat_u64(u128::from(apic) * u128::from(stated) / u128::from(tsc));
                return Some((stated, apic, Reference::Cpuid));
            }
            log::warn!(
                "time: CPUID states a {stated} Hz TSC, but it runs at about {tsc} Hz; measuring"
            );
        }
    }
    measure(hpet, 5, PIT_WINDOW)
}

/// The refinement to come: the HPET, and its counter and the TSC at boot.
static REFINE_FROM: spin::Mutex<Option<(Hpet, u64, u64)>> = spin::Mutex::new(None);
/// TSC value from which [`refine`] is due (0: nothing to do).
static REFINE_AT: AtomicU64 = AtomicU64::new(0);
/// Refine after this long.
const REFINE_AFTER_NS: u64 = 1_000_000_000;
/// A refined rate further than 1/10 from the boot-time one is not believed.
const REFINE_TOLERANCE: u64 = 10;

/// Whether [`refine`] is due: one TSC read, and only on timer interrupts.
pub fn refine_due() -> bool {
    let at = REFINE_AT.load(Ordering::Relaxed);
    at != 0 && cpu::rdtsc() >= at
}

/// Measures the TSC against the HPET over the whole time since boot and continues the
/// clock from now at that rate (and the APIC timer's in proportion). Returns the new
/// anchor for the caller to publish to every guest's pvclock, or `None` when nothing
/// changed. Call with interrupts off, once [`refine_due`] says so.
pub fn refine() -> Option<Anchor> {
    REFINE_AT.store(0, Ordering::Relaxed);
    let (hpet, h0, t0) = REFINE_FROM.lock().take()?;
    let (h1, t1) = (hpet.counter(), cpu::rdtsc());
    let ns = hpet.ns_between(h0, h1);
    let old = tsc_hz();
    let hz = xlhv_core::time::rate_hz(t1.wrapping_sub(t0), ns)?;
    if hz.abs_diff(old) > old / REFINE_TOLERANCE {
        log::warn!(
            "time: the HPET says the TSC runs at {hz} Hz, the boot measurement {old} Hz; keeping {old}"
        );
        return None;
    }
    let next = anchor().rerate(t1, hz)?;
    set_anchor(next);
    TSC_HZ.store(hz, Ordering::Relaxed);
    let apic = APIC_TIMER_HZ.load(Ordering::Relaxed);
    let apic = sat_u64(u128::from(apic) * u128::from(hz) / u128::from(old.max(1)));
    APIC_TIMER_HZ.store(apic, Ordering::Relaxed);
    let ppm = i128::from(hz) * 1_000_000 / i128::from(old.max(1)) - 1_000_000;
    log::info!(
        "time: refined against the HPET over {} ms: TSC {}.{:03} MHz ({ppm:+} ppm), {} timer interrupts so far",
        ns / 1_000_000,
        hz / 1_000_000,
        hz / 1_000 % 1_000,
        ticks()
    );
    Some(next)
}

/// Calibrates the TSC and the APIC timer and starts the periodic tick; with an HPET,
/// schedules the refinement. Takes about 5 ms (18 ms without an HPET; 1 ms when CPUID
/// states the rate).
pub fn init(hpet: Option<u64>) {
    let hpet = hpet.and_then(Hpet::start);
    let Some((tsc, apic_hz, reference)) = calibrate(hpet.as_ref()) else {
        panic!("time: no PIT and no usable HPET to calibrate the TSC against");
    };
    if apic_hz == 0 {
        panic!("time: the local APIC timer does not count");
    }
    let now = cpu::rdtsc();
    let Some(a) = Anchor::new(now, tsc) else {
        panic!("time: the TSC does not count");
    };
    set_anchor(a);
    TSC_HZ.store(tsc, Ordering::Relaxed);
    APIC_TIMER_HZ.store(apic_hz, Ordering::Relaxed);
    log::info!(
        "time: TSC {}.{:03} MHz, APIC timer {}.{:03} MHz (after divide by 16), from {}",
        tsc / 1_000_000,
        tsc / 1_000 % 1_000,
        apic_hz / 1_000_000,
        apic_hz / 1_000 % 1_000,
        match reference {
            Reference::Cpuid => "CPUID (checked against the HPET or the PIT)",
            Reference::Hpet => "5 ms of the HPET",
            Reference::Pit => "the PIT (3 windows of 5 ms and 1 ms)",
        }
    );
    match hpet {
        Some(h) => {
            *REFINE_FROM.lock() = Some((h, h.counter(), cpu::rdtsc()));
            let after = sat_u64(u128::from(REFINE_AFTER_NS) * u128::from(tsc) / 1_000_000_000);
            REFINE_AT.store(now.saturating_add(after).max(1), Ordering::Relaxed);
        }
        None => log::info!("time: no HPET: the boot-time rate stays"),
    }
    let count = u32::try_from(apic_hz / TICK_HZ).unwrap_or(u32::MAX).max(1);
    apic::timer_periodic(count);
    x86_64::instructions::interrupts::enable();

    match read_rtc() {
        Some(secs) => {
            let wall = u128::from(secs) * 1_000_000_000 - u128::from(now_ns());
            WALL_AT_BOOT_NS.store(u64::try_from(wall).unwrap_or(0), Ordering::Relaxed);
            log::info!("time: RTC says {secs} s since the epoch");
        }
        None => log::warn!("time: the RTC gave no valid date; guests' wall clock starts at 1970"),
    }
}
