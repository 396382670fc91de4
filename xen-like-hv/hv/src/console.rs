//! The hypervisor console: log records on COM1 through the `log` crate.
//!
//! Lines look like Xen's: `(XEN) message`. Warnings and errors say so. The level comes
//! from `loglvl=` on the command line. Everything printed (guests' lines too) is also
//! kept in [`RING`], the last 16 KiB, for `XEN_SYSCTL_readconsole`.

use crate::arch::x86_64::serial::{COM1, Uart};
use core::fmt::Write;
use log::{LevelFilter, Metadata, Record};
use spin::Mutex;

static CONSOLE: Mutex<Uart> = Mutex::new(Uart::new(COM1));

/// The console ring: what COM1 got, for dom0 (`XEN_SYSCTL_readconsole`). Taken only
/// while [`CONSOLE`] is held, so the two see the same bytes in the same order.
pub static RING: Mutex<xlhv_core::conring::ConRing<16384>> =
    Mutex::new(xlhv_core::conring::ConRing::new());

/// COM1 and the ring together.
struct Tee<'a> {
    uart: &'a mut Uart,
}

impl Tee<'_> {
    fn write_bytes(&mut self, b: &[u8]) {
        self.uart.write_bytes(b);
        RING.lock().write(b);
    }
}

impl Write for Tee<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

struct Logger;

static LOGGER: Logger = Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let tag = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        let mut uart = CONSOLE.lock();
        let mut tee = Tee { uart: &mut uart };
        let _ = writeln!(tee, "(XEN) {tag}{}", record.args());
    }

    fn flush(&self) {}
}

/// Programs COM1 and installs the logger at `Info` until the command line is read.
pub fn init() {
    CONSOLE.lock().init();
    // set_logger fails only if called twice; the first logger stays, which is fine.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(LevelFilter::Info);
}

/// Sets the log level (from `loglvl=`).
pub fn set_level(level: LevelFilter) {
    log::set_max_level(level);
}

/// Prints one console line of a guest, prefixed with its domain id: `(d3) text`.
pub fn guest_line(dom: hypercall_abi::types::DomId, line: &[u8]) {
    let mut uart = CONSOLE.lock();
    let mut tee = Tee { uart: &mut uart };
    let _ = write!(tee, "(d{}) ", dom.0);
    tee.write_bytes(line);
    tee.write_bytes(b"\n");
}

/// Logs one line if neither the console nor its ring is locked (else drops it): for
/// handlers that may interrupt the hypervisor while it holds them.
pub fn try_log(args: core::fmt::Arguments<'_>) {
    let Some(mut uart) = CONSOLE.try_lock() else {
        return;
    };
    let Some(mut ring) = RING.try_lock() else {
        return;
    };
    struct Both<'a, 'b> {
        uart: &'a mut Uart,
        ring: &'b mut xlhv_core::conring::ConRing<16384>,
    }
    impl Write for Both<'_, '_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.uart.write_bytes(s.as_bytes());
            self.ring.write(s.as_bytes());
            Ok(())
        }
    }
    let mut both = Both {
        uart: &mut uart,
        ring: &mut ring,
    };
    let _ = writeln!(both, "(XEN) {args}");
}

/// Writes straight to COM1 without taking the console lock: for the panic and fault
/// paths, where the lock may be held by the code that failed.
pub fn emergency_write(args: core::fmt::Arguments<'_>) {
    let mut uart = Uart::new(COM1);
    let _ = uart.write_fmt(args);
}

/// `println!`-like output for the panic and fault paths.
#[macro_export]
macro_rules! emergency {
    ($($arg:tt)*) => {
        $crate::console::emergency_write(format_args!("(XEN) {}\n", format_args!($($arg)*)))
    };
}
