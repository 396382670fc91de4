//! `pv-runtime`: write a Xen x86_64 PV guest kernel in Rust.
//!
//! A guest is a `#![no_std]`, `#![no_main]` binary for `x86_64-unknown-none`
//! that names its main function with [`entry!`] and links with this crate's
//! linker script (see the crate README). The runtime provides:
//!
//! * **entry** ([`start`]): `_start` keeps `rsi` (start_info), zeroes `.bss`,
//!   switches to a stack inside the image and runs the boot sequence, then the
//!   guest's main; when main returns the domain powers off. The Xen ELF notes
//!   and the hypercall page are emitted for the guest ([`notes`]).
//! * **console** ([`console`]): [`print!`]/[`println!`] over
//!   `console_io(CONSOLEIO_write)`.
//! * **traps** ([`traps`]): a virtual IDT for all 32 exception vectors plus
//!   the event, failsafe and syscall callbacks, Rust handlers per vector with
//!   a mutable [`traps::TrapFrame`], return through the `iret` hypercall; and
//!   [`probe`] instructions that fault on purpose.
//! * **shared_info and time** ([`shared`], [`time`]): the mapped shared_info
//!   page, pvclock system time, wall clock.
//! * **memory** ([`mm`]): the guest's free frames, P2M and M2P lookups,
//!   taking over the address space (its own page tables, pinned and loaded
//!   with `NEW_BASEPTR`), a batched mapping API, and a heap in the bootstrap
//!   region's slack (the `#[global_allocator]` with feature
//!   `global-allocator`, on by default).
//! * **user mode** ([`user`]): user page tables, entering user code with
//!   `iret` and coming back through the syscall callback.
//! * **events** ([`evtchn`]): event-channel operations, per-port handlers
//!   run by the event upcall's 2-level demultiplexer, and the virtual
//!   interrupt flag; **timers** ([`time`]): one-shot, single-shot and
//!   periodic `VIRQ_TIMER`, `sleep`; **scheduling** ([`sched`]): block,
//!   idle, wait, poll, yield, shutdown; **vCPU** ([`vcpu`]): runstate;
//!   **SMP** ([`smp`]): secondary vCPUs started with a closure, per-vCPU
//!   events and timers. See `docs/runtime-events.md`.
//! * **grants** ([`gnttab`]): the domain's grant table mapped, granting
//!   and revoking access to its frames, mapping, unmapping and copying
//!   other domains' grants.
//! * **devices** ([`physdev`]): the virtual IOPL, port I/O, PCI configuration
//!   space, pirqs; `virtio` (feature `virtio`): `virtio-drivers`' HAL.
//!   **DMA** ([`dma`]): machine-contiguous buffers below an address limit
//!   (`XENMEM_exchange`) and virtual/pseudo-physical to machine translation.
//! * **XenStore** ([`xenbus`], feature `xenbus`, on by default; needs a
//!   global allocator): read, write, watch, transactions over the store
//!   page, and serving `control/shutdown`. See `docs/xenbus.md`.
//! * **block devices** ([`blkfront`], feature `blkfront`, on by default):
//!   the Xen block front end (`io/blkif.h`, as Linux's `xen-blkfront`):
//!   connect to a vbd, read, write, flush, discard, many requests in
//!   flight. See `docs/block.md`.
//! * **network devices** ([`netfront`], feature `netfront`, on by default):
//!   the Xen net front end (`io/netif.h`, as Linux's `xen-netfront`):
//!   connect to a vif, send and receive Ethernet frames, notice a back end
//!   that goes away; with feature `smoltcp`, [`net`]: `smoltcp` (TCP/IP)
//!   over it, and a socket API (`net::Stack`: DHCP or a static address,
//!   blocking TCP and UDP, ping). See `docs/net.md`.
//! * **hypervisor queries** ([`xen`]); a panic prints its message and
//!   location and crashes the domain.
//!
//! Every ABI number and layout comes from `hypercall-abi`, re-exported as
//! [`abi`].
#![no_std]
#![deny(missing_docs)]

#[cfg(feature = "blkfront")]
pub mod blkfront;
pub mod console;
pub mod desc;
pub mod dma;
pub mod evtchn;
pub mod gnttab;
pub mod hypercall;
pub mod mm;
#[cfg(feature = "smoltcp")]
pub mod net;
#[cfg(feature = "netfront")]
pub mod netfront;
pub mod notes;
mod panic;
pub mod physdev;
pub mod probe;
pub mod sched;
pub mod shared;
pub mod smp;
pub mod start;
pub mod time;
pub mod traps;
pub mod user;
pub mod vcpu;
#[cfg(feature = "virtio")]
pub mod virtio;
pub mod xen;
#[cfg(feature = "xenbus")]
pub mod xenbus;

pub use hypercall_abi as abi;
pub use hypercall_abi::xen::StartInfo;
pub use pv_runtime_core::layout::{BootLayout, Span};
pub use pv_runtime_core::time::{CivilTime, WallClock};
pub use pv_runtime_core::{events, mapper, pt, text};
pub use start::{Config, layout, start_info};

/// Print to the hypervisor console (`console_io`), like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print_fmt(::core::format_args!($($arg)*))
    };
}

/// Print a line to the hypervisor console (`console_io`), like
/// `std::println!`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_fmt(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print_fmt(::core::format_args!(
            "{}\n",
            ::core::format_args!($($arg)*)
        ))
    };
}

/// Declare the guest's main function: `entry!(main)` or
/// `entry!(main, config = CONFIG_EXPR)`.
///
/// `main` takes `&'static StartInfo` and returns `()` (the domain then
/// powers off) or `!`. The macro also emits the Xen ELF notes (guest name =
/// the binary's name) and the entry symbol the runtime's `_start` calls, so a
/// guest writes no assembly and no notes of its own.
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        $crate::entry!($main, config = $crate::Config::DEFAULT);
    };
    ($main:path, config = $config:expr) => {
        #[used]
        #[unsafe(link_section = ".note.Xen")]
        static __PV_RUNTIME_XEN_NOTES: $crate::notes::XenNotes = $crate::notes::XenNotes::new(
            match ::core::option_env!("CARGO_BIN_NAME") {
                Some(name) => name,
                None => ::core::env!("CARGO_PKG_NAME"),
            },
            ::core::env!("CARGO_PKG_VERSION"),
        );

        #[unsafe(no_mangle)]
        extern "C" fn __pv_guest_start(start_info: *const $crate::StartInfo, entry_rsp: u64) -> ! {
            const CONFIG: $crate::Config = $config;
            // SAFETY: only the runtime's `_start` calls this, once, with the
            // start_info pointer (`rsi`) and stack pointer the builder passed.
            unsafe {
                $crate::start::boot(start_info, entry_rsp, &CONFIG, |si| {
                    $main(si);
                })
            }
        }
    };
}
