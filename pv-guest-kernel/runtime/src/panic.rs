//! The panic handler: print the message and location, then crash the
//! domain (`SHUTDOWN_crash`).

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    if PANICKING.swap(true, Ordering::SeqCst) {
        // A panic while reporting a panic: do not try to print again.
        crate::sched::crash();
    }
    match info.location() {
        Some(loc) => crate::println!(
            "pv-runtime: panic at {}:{}:{}: {}",
            loc.file(),
            loc.line(),
            loc.column(),
            info.message()
        ),
        None => crate::println!("pv-runtime: panic: {}", info.message()),
    }
    crate::sched::crash()
}
