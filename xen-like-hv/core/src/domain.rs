//! A PV domain: identity, state, memory accounting, vCPUs and console.

use crate::mm::Mfn;
use crate::vcpu::Vcpu;
use alloc::vec::Vec;
use hypercall_abi::memory::E820Entry;
use hypercall_abi::types::DomId;

/// Most vCPUs per domain: one per `vcpu_info` slot of shared_info (Xen's
/// `XEN_LEGACY_MAX_VCPUS`), so every vCPU has a `vcpu_info` before it registers one
/// (Xen takes more for guests that register theirs; `docs/xen-differences.md`).
pub const MAX_VCPUS: usize = hypercall_abi::xen::LEGACY_MAX_VCPUS;

/// A domain with its vCPUs: what the hypervisor keeps per domain. The two halves are
/// separate so that a handler can hold the domain and one of its vCPUs at once.
#[derive(Clone, Debug)]
pub struct PvDomain {
    /// Domain-wide state.
    pub dom: Domain,
    /// vCPUs, by id: as many as the domain was made with (`max_vcpus`), on the
    /// hypervisor's heap, never grown afterwards.
    pub vcpus: Vec<Vcpu>,
}

impl PvDomain {
    /// A paused domain with `nr_vcpus` vCPUs (1..=[`MAX_VCPUS`]), all down and not
    /// initialised; vCPU 0 on page-table root `root`. `None` when `nr_vcpus` is out of
    /// range or the heap cannot hold the vCPUs.
    pub fn new(
        id: DomId,
        privileged: bool,
        shared_info: Mfn,
        root: Mfn,
        nr_vcpus: u32,
    ) -> Option<Self> {
        let n = usize::try_from(nr_vcpus).ok()?;
        if !(1..=MAX_VCPUS).contains(&n) {
            return None;
        }
        let mut vcpus = Vec::new();
        vcpus.try_reserve_exact(n).ok()?;
        for i in 0..nr_vcpus {
            let r = if i == 0 { root } else { Mfn(0) };
            vcpus.push(Vcpu::new(i, r));
        }
        Some(PvDomain {
            dom: Domain::new(id, privileged, shared_info),
            vcpus,
        })
    }
}

pub use hypercall_abi::sched::ShutdownReason;

/// Lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomainState {
    /// Built, not started.
    Paused,
    /// Running or runnable.
    Running,
    /// Stopped; its resources are still held until destruction.
    Shutdown(ShutdownReason),
}

/// Longest console line kept before it is flushed.
pub const CONSOLE_LINE: usize = 256;

/// A domain's partial console line (`console_io` writes are line-buffered).
#[derive(Clone, Debug, Default)]
pub struct ConsoleLine {
    buf: heapless::Vec<u8, CONSOLE_LINE>,
}

impl ConsoleLine {
    /// Adds bytes; calls `emit` with each complete line (without the newline) and with
    /// any line that fills the buffer. Non-printable bytes are dropped unless `raw`.
    pub fn push(&mut self, bytes: &[u8], raw: bool, mut emit: impl FnMut(&[u8])) {
        for &b in bytes {
            if b == b'\n' {
                emit(&self.buf);
                self.buf.clear();
                continue;
            }
            let keep = raw || b == b'\t' || (0x20..0x7F).contains(&b);
            if keep && self.buf.push(b).is_err() {
                emit(&self.buf);
                self.buf.clear();
                let _ = self.buf.push(b);
            }
        }
    }

    /// Emits what is left (at shutdown).
    pub fn flush(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// Most entries of a domain's pseudo-physical memory map (`XENMEM_memory_map`). Xen
/// accepts up to 1024 (`E820MAX`); libxl sets one for a PV domU, a few more with
/// `e820_host`.
pub const DOMAIN_E820_MAX: usize = 32;

/// A domain's pseudo-physical E820 map, as the toolstack set it.
pub type DomainMemoryMap = heapless::Vec<E820Entry, DOMAIN_E820_MAX>;

/// A PV domain.
#[derive(Clone, Debug)]
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// Privileged (dom0): may use domctl, console read, foreign mappings.
    pub privileged: bool,
    /// Lifecycle state.
    pub state: DomainState,
    /// Reason latched by `SCHEDOP_shutdown_code`.
    pub shutdown_code: Option<ShutdownReason>,
    /// Enabled `vm_assist` types (bit n = type n).
    pub vm_assist: u64,
    /// Its shared_info frame.
    pub shared_info: Mfn,
    /// Pages it holds.
    pub tot_pages: u64,
    /// Most pages it may hold.
    pub max_pages: u64,
    /// Partial console line.
    pub console: ConsoleLine,
    /// Pseudo-physical E820 map for `XENMEM_memory_map`, set by the toolstack
    /// (`XENMEM_set_memory_map`); `None` until then, and `XENMEM_memory_map` answers
    /// `-ENOSYS` (the guest falls back to `start_info.nr_pages`).
    pub memory_map: Option<DomainMemoryMap>,
    /// Armed watchdogs (`SCHEDOP_watchdog`): expiry in system time.
    pub watchdogs: [Option<u64>; NR_WATCHDOGS],
    /// Scheduling weight (Xen credit's `weight`, default 256).
    pub weight: u16,
    /// The I/O ports it may reach (`docs/mm.md`, I/O ports): the hardware domain's
    /// default set for dom0, none for others.
    pub ioports: crate::ioport::IoPorts,
    /// The last 32-bit value written to `CONFIG_ADDRESS` (0xCF8), Xen's
    /// `d->arch.pci_cf8` (`crate::pci`).
    pub pci_cf8: u32,
    /// Pauses by the control domain (`XEN_DOMCTL_pausedomain`) not yet undone.
    pub pause_count: u32,
    /// A pause by the control domain was counted and waits for another CPU to
    /// switch the domain out: the re-issued `pausedomain` (a continuation) does not
    /// count it again.
    pub pausing: bool,
    /// The toolstack's UUID (`xen_domain_handle_t`).
    pub handle: [u8; 16],
    /// Made by `XEN_DOMCTL_createdomain`: when it shuts down it is kept, with its
    /// memory, until the toolstack destroys it (boot-time domains are destroyed at
    /// once: no toolstack owns them).
    pub toolstack: bool,
}

/// Watchdogs per domain (Xen's `NR_DOMAIN_WATCHDOG_TIMERS`).
pub const NR_WATCHDOGS: usize = 2;

/// Default scheduling weight (Xen's credit scheduler).
pub const DEFAULT_WEIGHT: u16 = 256;

/// dom0's scheduling weight: 16 times a domU's. The control plane must be served
/// when it has work even next to a hundred domUs that each wake 100 times a second
/// (issue 22): with every vCPU at 256, dom0's fair share there was under 1 % of the
/// CPU, and `dom0ctl list` timed out. dom0 sleeps when idle, so this costs domUs
/// nothing until dom0 has work; see docs/sched.md.
pub const DOM0_WEIGHT: u16 = 16 * DEFAULT_WEIGHT;

impl Domain {
    /// A paused domain.
    pub fn new(id: DomId, privileged: bool, shared_info: Mfn) -> Self {
        Domain {
            id,
            privileged,
            state: DomainState::Paused,
            shutdown_code: None,
            vm_assist: 0,
            shared_info,
            tot_pages: 0,
            max_pages: 0,
            console: ConsoleLine::default(),
            memory_map: None,
            watchdogs: [None; NR_WATCHDOGS],
            ioports: if privileged {
                crate::ioport::IoPorts::hardware_domain()
            } else {
                crate::ioport::IoPorts::none()
            },
            pci_cf8: 0,
            weight: DEFAULT_WEIGHT,
            pause_count: 0,
            pausing: false,
            handle: [0; 16],
            toolstack: false,
        }
    }

    /// Whether `vm_assist` type `t` is on.
    pub fn assist(&self, t: u32) -> bool {
        t < 64 && self.vm_assist & (1 << t) != 0
    }

    /// Whether the domain can run.
    pub fn is_running(&self) -> bool {
        self.state == DomainState::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn console_lines_are_split_filtered_and_bounded() {
        let mut c = ConsoleLine::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        c.push(b"hel\x07lo\nwor", false, |l| out.push(l.to_vec()));
        c.push(b"ld\n", false, |l| out.push(l.to_vec()));
        assert_eq!(out, [b"hello".to_vec(), b"world".to_vec()]);
        out.clear();
        c.push(&[b'x'; CONSOLE_LINE + 10], false, |l| out.push(l.to_vec()));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), CONSOLE_LINE);
        c.flush(|l| out.push(l.to_vec()));
        assert_eq!(out[1].len(), 10);
    }
}
