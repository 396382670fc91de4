//! Instructions that fault on purpose, for self-checks and test guests.
//!
//! Each probe is a tiny assembly function whose faulting instruction sits at
//! a known address ([`Probe::site`]) followed by a known resume point
//! ([`Probe::resume`]). A trap handler that recognises a probe calls
//! [`skip`], which moves the frame's `rip` to the resume point; the probe
//! function then returns normally. Without a handler, the runtime's default
//! panics (or, if the guest installed no trap table, the hypervisor crashes
//! the domain).
//!
//! A handler that returns without skipping re-executes the instruction, so
//! it faults again.

use core::arch::global_asm;

use crate::traps::TrapFrame;

global_asm!(
    ".pushsection .text.pv_probe, \"ax\", @progbits",
    ".globl pv_probe_ud2, pv_probe_ud2_resume",
    "pv_probe_ud2:",
    "    ud2",
    "pv_probe_ud2_resume:",
    "    ret",
    ".globl pv_probe_hlt, pv_probe_hlt_resume",
    "pv_probe_hlt:",
    "    hlt",
    "pv_probe_hlt_resume:",
    "    ret",
    ".globl pv_probe_read, pv_probe_read_resume",
    "pv_probe_read:",
    "    mov (%rdi), %rax",
    "pv_probe_read_resume:",
    "    ret",
    ".globl pv_probe_write, pv_probe_write_resume",
    "pv_probe_write:",
    "    mov %rsi, (%rdi)",
    "pv_probe_write_resume:",
    "    ret",
    ".popsection",
    options(att_syntax),
);

unsafe extern "C" {
    fn pv_probe_ud2();
    fn pv_probe_ud2_resume();
    fn pv_probe_hlt();
    fn pv_probe_hlt_resume();
    fn pv_probe_read(addr: u64) -> u64;
    fn pv_probe_read_resume();
    fn pv_probe_write(addr: u64, value: u64);
    fn pv_probe_write_resume();
}

/// The probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// `ud2`: raises `#UD`.
    Ud2,
    /// `hlt`: privileged, so `#GP(0)` in a PV kernel (Xen's instruction
    /// emulation for PV guests does not handle it).
    Hlt,
    /// A 64-bit load from a chosen address: `#PF` if it is not mapped.
    Read,
    /// A 64-bit store to a chosen address: `#PF` if it is not mapped or
    /// mapped read-only.
    Write,
}

impl Probe {
    const ALL: [Probe; 4] = [Probe::Ud2, Probe::Hlt, Probe::Read, Probe::Write];

    /// Address of the faulting instruction.
    pub fn site(self) -> u64 {
        let f: unsafe extern "C" fn() = match self {
            Probe::Ud2 => pv_probe_ud2,
            Probe::Hlt => pv_probe_hlt,
            Probe::Read => return pv_probe_read as *const () as usize as u64,
            Probe::Write => return pv_probe_write as *const () as usize as u64,
        };
        f as *const () as usize as u64
    }

    /// Address execution resumes at after [`skip`].
    pub fn resume(self) -> u64 {
        let f: unsafe extern "C" fn() = match self {
            Probe::Ud2 => pv_probe_ud2_resume,
            Probe::Hlt => pv_probe_hlt_resume,
            Probe::Read => pv_probe_read_resume,
            Probe::Write => pv_probe_write_resume,
        };
        f as *const () as usize as u64
    }

    /// The probe whose faulting instruction is at `rip`.
    pub fn at(rip: u64) -> Option<Probe> {
        Probe::ALL.into_iter().find(|p| p.site() == rip)
    }
}

/// If `frame` stopped at a probe, resume after it (a skipped read returns
/// 0) and return the probe.
pub fn skip(frame: &mut TrapFrame) -> Option<Probe> {
    let probe = Probe::at(frame.rip)?;
    if probe == Probe::Read {
        frame.rax = 0;
    }
    frame.rip = probe.resume();
    Some(probe)
}

/// Execute `ud2`.
pub fn ud2() {
    // SAFETY: the probe executes `ud2` and returns; it touches no memory
    // and no register beyond the C calling convention. If the trap is not
    // skipped it never returns, which is not unsafe.
    unsafe { pv_probe_ud2() }
}

/// Execute `hlt`.
pub fn hlt() {
    // SAFETY: as for `ud2`: one instruction, then `ret`.
    unsafe { pv_probe_hlt() }
}

/// Load 8 bytes from `addr` (0 if the load faulted and a handler skipped
/// it). Meant for addresses that are not mapped; the load is invisible to
/// the compiler, so it cannot break Rust's assumptions about memory it
/// owns, but reading device memory could have side effects.
pub fn read_u64(addr: u64) -> u64 {
    // SAFETY: the probe performs one load from `addr` and returns the
    // value; a fault there is handled (or crashes the domain) and never
    // corrupts Rust state.
    unsafe { pv_probe_read(addr) }
}

/// Store the 8 bytes `value` at `addr` (nothing is stored if the store
/// faulted and a handler skipped it). Meant for addresses that are not
/// mapped or mapped read-only, where the store must fault.
///
/// # Safety
///
/// If the store succeeds it writes 8 bytes at `addr` behind the compiler's
/// back: `addr` must not hold any Rust object (or must be memory the caller
/// may overwrite).
pub unsafe fn write_u64(addr: u64, value: u64) {
    // SAFETY: the probe performs one store to `addr` and returns; a fault
    // there is handled (or crashes the domain); the caller guarantees a
    // successful store harms nothing.
    unsafe { pv_probe_write(addr, value) }
}
