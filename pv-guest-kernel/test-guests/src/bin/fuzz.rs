//! `fuzz`: a hostile guest that throws seeded random hypercalls at the
//! hypervisor and checks that it survives them (docs/reliability.md).
//!
//! Command line: `seed=S` (default 1) and `count=N` (default 1000). A
//! xorshift PRNG seeded with `S` picks `N` hypercalls: every number 0..64
//! and unassigned ones above, with arguments biased toward edge values
//! (0, -1, small and huge counts, pointers into its own scratch buffer, into
//! a read-only page of its own, into the hypervisor's range
//! 0xFFFF800000000000.., non-canonical and unmapped addresses, page-aligned
//! values, machine frames of its own scratch set, of nobody, of page tables
//! and of the M2P) and structured arguments (MMU update lists, mmuext ops,
//! multicall lists of further random calls, memory_op reservations,
//! event-channel, grant-table, sched_op, vcpu_op, domctl, sysctl,
//! platform_op and physdev structs, trap tables, GDT frame lists,
//! descriptors, ...) filled with random but plausible contents in a scratch
//! buffer of its own. All calls go through the runtime's hypercall page (the
//! raw `Invoke` path).
//!
//! # What it keeps for itself
//!
//! It must stay alive to report, so every value it generates passes one
//! filter: a virtual address mapped in its own address space is replaced by
//! a pointer into the scratch buffer (a window of its own, followed by an
//! unmapped guard page, refilled with `0xA5` bytes before each call), and a
//! machine frame of its own that is not in its scratch frame set (frames it
//! set aside for the fuzzer: some mapped writable in a window `W`, some
//! mapped nowhere) is replaced by a scratch frame. Page-table updates
//! (`mmu_update`, `update_va_mapping`) aim at the L1 table of `W` only. The
//! exclusions beyond that, each a call that would legitimately end or wedge
//! it:
//!
//! * `SCHEDOP_shutdown` and `sched_op_compat` shutdown (never issued);
//!   `SCHEDOP_shutdown_code` only with reason poweroff (another code would
//!   change how its own final poweroff is reported);
//! * `SCHEDOP_remote_shutdown` of itself (dom0: of domain 0);
//! * `SCHEDOP_block` (and the compat block) are issued as `SCHEDOP_poll`
//!   with a timeout: the fuzzer may have closed its timer port or switched
//!   its event ABI, and a block without a wakeup never ends;
//! * `SCHEDOP_watchdog` only with timeout 0 at depth (a live watchdog kills
//!   the domain); at top level one it arms is disarmed right away;
//! * `VCPUOP_down` of vCPU 0; periodic timers it starts are stopped after
//!   the call (a 20 kHz tick starves a TCG run);
//! * `domctl destroydomain` of itself; a domain `createdomain` makes is
//!   destroyed right after the call;
//! * `MMUEXT_NEW_BASEPTR` only with frames outside its scratch set (a
//!   scratch frame pinned as an empty L4 would be a valid, empty address
//!   space);
//! * `set_trap_table`, `set_callbacks`, `callback_op`: random tables and
//!   addresses are allowed, then the runtime's are reinstated (inside a
//!   multicall the table never names #DB/NMI and is never NULL, since those
//!   could be raised before it is reinstated); `nmi_op` registers only
//!   non-canonical or hypervisor addresses; DR7 and CR0.TS are reset after
//!   each call that may set them;
//! * `iret` (23): the invoker refuses it (a random frame is a jump to a
//!   random address);
//! * dom0 passes no `DOMID_IO` foreign domain (dom0 may legitimately map
//!   device memory writable);
//! * `console_io` writes from its own memory are at most 64 printable bytes.
//!
//! A multicall's list ends at the end of the scratch buffer, so a count
//! larger than the list runs into the guard page, not into other structs.
//!
//! # Faults and invariants
//!
//! Every exception vector is handled: page faults of its probes (reads and
//! writes of `W`, whose mappings the random updates change) are skipped and
//! counted, as are #DB, #NM, NMI and failsafe callbacks; any other fault
//! fails the run. After each call it checks: a sentinel page that is never
//! handed out still holds its pattern and can be written and read back
//! through its mapping; the read-only page (handed out as a pointer) is
//! unchanged; no entry of `W`'s L1 maps the M2P, one of its page-table
//! frames or frame 0 writable. Every 128 calls it tries such writable
//! mappings itself (all must fail), and maps and unmaps a page through the
//! runtime.
//!
//! Result line: `fuzz: PASS seed=S count=N calls=N errors=E faults=F` (then
//! powers off) or `fuzz: FAIL seed=S <why>` (then crashes).
#![no_std]
#![no_main]

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use pv_runtime::abi::Invoke;
use pv_runtime::abi::domctl::{DOMCTL_INTERFACE_VERSION, SYSCTL_INTERFACE_VERSION};
use pv_runtime::abi::hypercall::Hypercall;
use pv_runtime::abi::types::{Mfn, Pfn};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::xen::start_info::SifFlags;
use pv_runtime::hypercall::invoker;
use pv_runtime::mm::{self, Frame};
use pv_runtime::traps::{self, Callback, TrapFrame, vector};
use pv_runtime::{Config, StartInfo, console, evtchn, print, println, probe, sched, time};
use pv_test_guests::arg_u64;

const NAME: &str = "fuzz";

/// The fuzzer's page-table window: its L1 is the one table random updates
/// aim at; the first `W_DATA` pages start mapped to scratch frames.
const W: u64 = 0x0000_5000_0000_0000;
/// Pages of `W` the fuzzer aims at and scans (of the L1's 512).
const W_PAGES: u64 = 64;
const W_DATA: usize = 8;
/// Scratch frames mapped nowhere (free to become page tables, GDT pages...).
const TYPABLE: usize = 4;
/// The scratch buffer for structured arguments, then an unmapped guard page.
const B: u64 = 0x0000_5000_0020_0000;
const B_BYTES: u64 = 4 * 4096;
/// The sentinel page: never handed out.
const S: u64 = 0x0000_5000_0040_0000;
/// Where the sentinel is mapped again now and then.
const S2: u64 = 0x0000_5000_0041_0000;
/// The read-only pattern page (handed out as a pointer).
const R: u64 = 0x0000_5000_0060_0000;
const RO_WORD: u64 = 0xA5A5_A5A5_A5A5_A5A5;
const SENTINEL: u64 = 0x5EED_F00D_CAFE_0000;
/// The hypervisor's range.
const HV: u64 = 0xFFFF_8000_0000_0000;
const HV_END: u64 = 0xFFFF_8800_0000_0000;
/// The bootstrap region's padding below the image (see `sanitize`).
const PADDING_END: u64 = 0x10_0000;
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

const DOMID_SELF: u64 = 0x7FF0;
const DOMID_IO: u64 = 0x7FF1;

static FAULTS: AtomicU64 = AtomicU64::new(0);
static SEED: AtomicU64 = AtomicU64::new(0);

fn fail(why: core::fmt::Arguments<'_>) -> ! {
    println!();
    println!("{NAME}: FAIL seed={} {why}", SEED.load(Ordering::Relaxed));
    sched::crash()
}

fn raw(nr: u64, args: [u64; 5]) -> u64 {
    // SAFETY: every address in `args` was generated by the fuzzer: its
    // scratch buffer and windows (which it owns and refills each call), its
    // read-only page, or addresses it does not map (hypervisor range,
    // non-canonical, unmapped). The filters in this file keep the calls away
    // from the mappings, frames and trap table the runtime relies on.
    let mut inv = unsafe { invoker() };
    inv.invoke(nr, args)
}

/// Whether a hypercall result is `-errno`.
fn is_err(rc: u64) -> bool {
    rc > u64::MAX - 4095
}

/// An index from a generated number (all of them are small).
fn idx(v: u64) -> usize {
    usize::try_from(v).unwrap_or(0)
}

fn on_trap(frame: &mut TrapFrame) {
    FAULTS.fetch_add(1, Ordering::Relaxed);
    let v = frame.vector;
    if v == u64::from(vector::NM) {
        raw(u64::from(Hypercall::FpuTaskswitch.nr()), [0; 5]);
    } else if v == u64::from(vector::DB) {
        raw(u64::from(Hypercall::SetDebugreg.nr()), [7, 0, 0, 0, 0]);
        raw(
            u64::from(Hypercall::SetDebugreg.nr()),
            [6, 0xFFFF_0FF0, 0, 0, 0],
        );
    } else if v == u64::from(vector::NMI) {
    } else if probe::skip(frame).is_none() {
        fail(format_args!("unexpected trap: {frame}"));
    }
}

fn on_failsafe(_frame: &mut TrapFrame) {
    FAULTS.fetch_add(1, Ordering::Relaxed);
}

/// Store `v` at `addr` in the scratch buffer (ignored outside it).
fn put(addr: u64, v: u64) {
    if !(B..B + B_BYTES - 7).contains(&addr) || addr % 8 != 0 {
        return;
    }
    let p: *mut u64 = ptr::with_exposed_provenance_mut(idx(addr));
    // SAFETY: `addr` is an 8-aligned address inside the scratch buffer
    // window, mapped writable to frames only the fuzzer uses.
    unsafe { p.write_volatile(v) }
}

/// The word at `addr` in the scratch buffer (0 outside it).
fn get(addr: u64) -> u64 {
    if !(B..B + B_BYTES - 7).contains(&addr) || addr % 8 != 0 {
        return 0;
    }
    let p: *const u64 = ptr::with_exposed_provenance(idx(addr));
    // SAFETY: an 8-aligned address inside the scratch buffer window.
    unsafe { p.read_volatile() }
}

struct Fuzz {
    rng: u64,
    dom0: bool,
    data: [u64; W_DATA],
    typable: [u64; TYPABLE],
    /// Frames that must never be mapped writable: page tables above and at
    /// `W`, the kernel's root, the M2P's first frame, frame 0.
    forbidden: [u64; 6],
    w_l1: u64,
    m2p_mfn: u64,
    sentinel: Frame,
    /// Bump allocator in the scratch buffer (bytes from `B`), and the low
    /// end of what was placed top-down.
    b_low: u64,
    b_high: u64,
    /// domctl structs of this call (to destroy domains they create).
    domctls: [u64; 8],
    n_domctls: usize,
    calls: u64,
    errors: u64,
    entries: u64,
    per_nr: [u32; 66],
    /// Of those, how many succeeded.
    ok_per_nr: [u32; 66],
    tick: u64,
    /// A watchdog may be armed (top-level `SCHEDOP_watchdog`).
    watchdog: bool,
    /// The last top-level call, for failure reports.
    last: (u64, [u64; 5]),
    /// Print each call from this one on (`trace=`).
    trace: u64,
}

impl Fuzz {
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn scratch_mfn(&mut self) -> u64 {
        let i = idx(self.below((W_DATA + TYPABLE) as u64));
        if i < W_DATA {
            self.data[i]
        } else {
            self.typable[i - W_DATA]
        }
    }

    fn allowed(&self, m: u64) -> bool {
        self.data.contains(&m) || self.typable.contains(&m)
    }

    fn own_other(&self, m: u64) -> bool {
        if self.allowed(m) {
            return false;
        }
        mm::m2p_entry(Mfn(m)).is_some_and(|p| mm::pfn_to_mfn(Pfn(p)) == Some(Mfn(m)))
    }

    fn in_windows(w: u64) -> bool {
        (W..W + 512 * 4096).contains(&w)
            || (B..B + B_BYTES).contains(&w)
            || (R..R + 4096).contains(&w)
    }

    fn b_ptr(&mut self) -> u64 {
        B + 8 * self.below(B_BYTES / 8)
    }

    /// The filter every generated value passes (module docs).
    fn sanitize(&mut self, mut w: u64) -> u64 {
        let canonical = !(0x0000_8000_0000_0000..0xFFFF_8000_0000_0000).contains(&w);
        let hv = (HV..HV_END).contains(&w);
        // Below the image (1 MiB) the bootstrap region is padding nothing
        // uses: fair game.
        if canonical
            && !hv
            && w >= PADDING_END
            && !Self::in_windows(w)
            && mm::translate(w & !0xFFF).is_some()
        {
            w = self.b_ptr();
        }
        if w < (1 << 40) && self.own_other(w) {
            w = self.scratch_mfn();
        }
        let m = (w & ADDR_MASK) >> 12;
        if m != 0 && self.own_other(m) {
            w = (w & !ADDR_MASK) | (self.scratch_mfn() << 12);
        }
        w
    }

    /// A value biased toward edges.
    fn edge(&mut self) -> u64 {
        match self.below(26) {
            0 => 0,
            1 => u64::MAX,
            2 => self.below(4),
            3 => self.below(17),
            4 => u64::from(u32::MAX),
            5 => 1 << 31,
            6 => 1 << 63,
            7 => (1 << 20) | self.below(1 << 40),
            8 => self.next(),
            9 => self.next() & 0x0000_7FFF_FFFF_F000,
            10 => HV + (self.next() & 0x7F_FFFF_FFF8),
            11 => 0x0000_8000_0000_0000 | (self.next() & 0x7FFF_FFFF_FFF8),
            12 | 13 => self.b_ptr(),
            14 => R + 8 * self.below(512),
            15 => W + 4096 * self.below(W_PAGES) + 8 * self.below(512),
            16 => self.scratch_mfn(),
            17 => (self.scratch_mfn() << 12) | self.below(8),
            18 => self.below(0x2_0000),
            19 => B + B_BYTES - 8,
            20 => u64::MAX - self.below(4096),
            21 => [0, 1, 2, DOMID_SELF, 0x7FF2, 0x7FF4, 0x7FFF][idx(self.below(7))],
            22 => 4096 * self.below(16),
            23 => 0x7FFF_FFFF,
            24 => self.m2p_mfn,
            _ => 0x0000_7FFF_FFFF_F000,
        }
    }

    fn word(&mut self) -> u64 {
        let e = self.edge();
        self.sanitize(e)
    }

    /// An address that must not be written: unmapped, hypervisor,
    /// non-canonical, NULL (its page is padding) or the read-only page.
    fn bad_ptr(&mut self) -> u64 {
        match self.below(6) {
            0 => 8 * self.below(4),
            _ => self.list_bad_ptr(),
        }
    }

    /// A bad address for a list of operations, which a huge count would
    /// otherwise read from the padding on into the image: never low.
    fn list_bad_ptr(&mut self) -> u64 {
        match self.below(5) {
            0 => HV + (self.next() & 0xFFF_FFF8),
            1 => 0x8000_0000_0000_0000 | (self.next() & 0xFFFF_FFF8),
            2 => 0x0000_6000_0000_0000 + (self.next() & 0xFF_FFF8),
            3 => B + B_BYTES,
            _ => R + 8 * self.below(512),
        }
    }

    /// A pointer argument: mostly a fresh struct, sometimes a bad one (never
    /// a low one: the padding holds what earlier calls wrote there, and a
    /// zeroed `sched_watchdog` or `sched_remote_shutdown` read from it would
    /// end the fuzzer).
    fn ptr_or_bad(&mut self, good: u64) -> u64 {
        if self.chance(6) {
            self.list_bad_ptr()
        } else {
            good
        }
    }

    /// An output-only pointer: may also be low (NULL and the padding).
    fn out_or_bad(&mut self, good: u64) -> u64 {
        if self.chance(6) { self.bad_ptr() } else { good }
    }

    /// A list pointer: mostly the list, sometimes a bad one, never low.
    fn list_or_bad(&mut self, list: u64) -> u64 {
        if self.chance(6) {
            self.list_bad_ptr()
        } else {
            list
        }
    }

    /// `words` words of scratch space, bottom-up (the read-only page if
    /// the buffer is full).
    fn alloc(&mut self, words: u64) -> u64 {
        let bytes = words * 8;
        if self.b_low + bytes > self.b_high {
            return R;
        }
        let a = B + self.b_low;
        self.b_low += bytes;
        a
    }

    /// `words` random words in a fresh struct.
    fn block(&mut self, words: u64) -> u64 {
        let a = self.alloc(words);
        for i in 0..words {
            let w = self.word();
            put(a + 8 * i, w);
        }
        a
    }

    /// A count for a list of `n` entries at `list`: `n`, less, 0, or (only
    /// for lists that end at the guard page) huge.
    fn count(&mut self, n: u64, at_end: bool) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => self.below(n + 1),
            2 if at_end => [u64::from(u32::MAX), 0x8000_0001, 1 << 20, n + 1][idx(self.below(4))],
            _ => n,
        }
    }

    fn domid(&mut self) -> u64 {
        let d = match self.below(8) {
            0 => 0,
            1 => 1,
            2 => self.below(0x8000),
            3 => DOMID_IO,
            4 => 0x7FF2,
            5 => 0xFFFF,
            _ => DOMID_SELF,
        };
        if self.dom0 && d == DOMID_IO {
            DOMID_SELF
        } else {
            d
        }
    }

    /// A machine frame for a page-table entry: scratch, page tables of its
    /// own, the M2P, nobody's, random.
    fn pte_mfn(&mut self) -> u64 {
        match self.below(8) {
            0..=2 => self.scratch_mfn(),
            3 => self.forbidden[idx(self.below(6))],
            4 => self.m2p_mfn + self.below(4),
            5 => self.below(0x4_0000),
            6 => (1 << 40) - 1,
            _ => {
                let m = self.below(0x2_0000);
                self.sanitize(m)
            }
        }
    }

    fn pte(&mut self) -> u64 {
        if self.chance(10) {
            return self.word();
        }
        let flags = match self.below(6) {
            0 => 0,
            1 => 0x1,
            2 => 0x3,
            3 => 0x7,
            4 => 0x67 | (1 << 63),
            _ => self.next() & 0x8000_0000_0000_0FFF,
        };
        (self.pte_mfn() << 12) | flags
    }

    fn va(&mut self) -> u64 {
        match self.below(8) {
            0..=4 => W + 4096 * self.below(W_PAGES),
            // Bad addresses, but not the read-only page or the guard page,
            // which must stay as they are.
            5 => match self.list_bad_ptr() {
                r if (R..R + 4096).contains(&r) => 0,
                g if g == B + B_BYTES => HV + 0x1000,
                p => p,
            },
            6 => W + 4096 * self.below(512) + self.below(4096),
            _ => {
                let w = self.edge();
                let w = self.sanitize(w);
                // Never the buffer's or the read-only page's mapping.
                if (B..B + B_BYTES).contains(&w) || (R..R + 4096).contains(&w) {
                    W
                } else {
                    w
                }
            }
        }
    }

    fn foreigndom(&mut self) -> u64 {
        let d = self.domid();
        if self.chance(8) {
            d | (self.domid() + 1) << 16
        } else {
            d
        }
    }

    /// `mmu_update` requests: entries of `W`'s L1, M2P updates of scratch
    /// frames, and junk.
    fn mmu_reqs(&mut self, n: u64, list: u64) {
        for i in 0..n {
            let (p, v) = match self.below(6) {
                0..=2 => {
                    let entries = if self.chance(4) { 512 } else { W_PAGES };
                    let entry = (self.w_l1 << 12) + 8 * self.below(entries);
                    (entry | [0, 0, 2][idx(self.below(3))], self.pte())
                }
                3 => ((self.scratch_mfn() << 12) | 1, self.below(0x1_0000)),
                4 => ((self.pte_mfn() << 12) | self.below(4), self.pte()),
                _ => (self.word(), self.word()),
            };
            // Only W's L1 is aimed at unfiltered (never its M2P entry).
            let p = if p & 3 != 1 && p >> 12 == self.w_l1 {
                p
            } else {
                self.sanitize(p)
            };
            put(list + 16 * i, p);
            put(list + 16 * i + 8, v);
        }
    }

    fn mmuext_ops(&mut self, n: u64, list: u64) {
        for i in 0..n {
            let cmd = if self.chance(16) {
                self.word() & 0xFFFF_FFFF
            } else {
                self.below(22)
            };
            let mut arg1 = match cmd {
                7 | 9 | 11 | 13 => self.va(),
                _ => {
                    if self.chance(3) {
                        self.pte_mfn()
                    } else {
                        self.scratch_mfn()
                    }
                }
            };
            arg1 = if self.own_other(arg1) {
                self.scratch_mfn()
            } else {
                arg1
            };
            if cmd == 5 && (self.allowed(arg1) || self.own_other(arg1)) {
                // NEW_BASEPTR: never to a table of its own but the current root.
                arg1 = if self.chance(2) {
                    mm::kernel_root().0
                } else {
                    self.m2p_mfn
                };
            }
            let arg2 = match cmd {
                8 | 9 => self.ptr_or_bad(B),
                13 => [0, 1, 8192, 8193, u64::MAX][idx(self.below(5))],
                17 => self.scratch_mfn(),
                _ => self.word(),
            };
            put(list + 24 * i, cmd);
            put(list + 24 * i + 8, arg1);
            put(list + 24 * i + 16, arg2);
        }
    }

    fn trap_table(&mut self, depth: u32) -> u64 {
        if depth == 0 && self.chance(8) {
            return 0;
        }
        let n = self.below(6);
        let a = self.alloc(2 * n + 2);
        for i in 0..n {
            let mut v = self.below(40);
            if depth > 0 && (v == 1 || v == 2) {
                v = 3;
            }
            let flags = self.below(8);
            let cs = [0xE033, 0xE02B, 0, 0x10, self.below(0x1_0000)][idx(self.below(5))];
            put(a + 16 * i, v | flags << 8 | cs << 16);
            let addr = self.word();
            put(a + 16 * i + 8, addr);
        }
        a
    }

    fn console(&mut self, a: &mut [u64; 5]) {
        a[0] = self.below(3);
        if a[0] == 0 && self.chance(2) {
            // Printable noise, ending in a newline so it does not run into
            // the next line of the log.
            let n = 1 + self.below(64);
            let buf = self.alloc(8);
            let mut bytes = [0u8; 64];
            for b in &mut bytes {
                *b = 0x20 + self.below(0x5F).to_le_bytes()[0];
            }
            bytes[idx(n - 1)] = b'\n';
            for (i, c) in bytes.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                put(buf + 8 * i as u64, u64::from_le_bytes(w));
            }
            a[1] = n;
            a[2] = buf;
        } else if a[0] == 0 {
            // From a bad address (the padding and the read-only page are
            // readable: a short count there).
            a[2] = self.bad_ptr();
            a[1] = if a[2] < PADDING_END || (R..R + 4096).contains(&a[2]) {
                self.below(65)
            } else {
                self.word()
            };
        } else {
            // A read: into a buffer of its own, or a bad address.
            let out = self.alloc(64);
            a[2] = self.out_or_bad(out);
            a[1] = if a[2] == out {
                self.below(513)
            } else {
                self.word() & 0xFFFF
            };
        }
    }

    fn sched(&mut self, depth: u32, a: &mut [u64; 5]) {
        let cmd = match self.below(10) {
            0 | 1 => 0,
            2 | 3 => 3,
            4 => 4,
            5 => 5,
            6 => 6,
            7 => 7,
            8 => 1,
            _ => 8 + self.below(8),
        };
        let s = self.block(4);
        match cmd {
            1 | 3 => {
                // block is issued as poll: ports, nr_ports, timeout.
                let ports = self.block(2);
                put(s, self.ptr_or_bad(ports));
                put(
                    s + 8,
                    [0, 1, 2, 128, u64::from(u32::MAX)][idx(self.below(5))],
                );
                let now = time::system_time_ns();
                put(s + 16, now + self.below(200_000) + 1);
                a[0] = 3;
            }
            4 => {
                let mut d = self.domid();
                if d == DOMID_SELF || (self.dom0 && d == 0) {
                    d = 0x7FF4;
                }
                put(s, d | self.below(6) << 32);
                a[0] = 4;
            }
            5 => {
                put(s, 0);
                a[0] = 5;
            }
            6 => {
                // Id 0 makes a watchdog (with timeout 0 one that fires at
                // once): only at top level and with a timeout, disarmed
                // after the call; in a multicall only ids 1..3, timeout 0.
                let (id, timeout) = if depth == 0 && self.chance(2) {
                    (0, 1 + self.below(2))
                } else {
                    (1 + self.below(3), 0)
                };
                self.watchdog = true;
                put(s, id | timeout << 32);
                a[0] = 6;
            }
            c => a[0] = c,
        }
        a[1] = if cmd == 0 {
            self.word()
        } else if depth > 0 && matches!(cmd, 4..=6) {
            // In a multicall an earlier entry may write into this struct
            // (through a random pointer into the buffer): a zeroed
            // watchdog or remote_shutdown request would end the fuzzer.
            self.list_bad_ptr()
        } else {
            self.ptr_or_bad(s)
        };
    }

    fn vcpu(&mut self, a: &mut [u64; 5]) {
        a[0] = if self.chance(10) {
            self.word()
        } else {
            self.below(15)
        };
        a[1] = [0, 0, 0, 1, 2, u64::from(u32::MAX), self.word()][idx(self.below(7))];
        if a[0] & 0xFFFF_FFFF == 2 && a[1] & 0xFFFF_FFFF == 0 {
            a[1] = 1;
        }
        let s = self.block(8);
        if a[0] == 6 {
            // set_periodic_timer: a period around the 50 us minimum.
            put(
                s,
                [0, 1, 49_999, 50_000, 1_000_000, u64::MAX][idx(self.below(6))],
            );
        }
        a[2] = self.ptr_or_bad(s);
    }

    fn memory(&mut self, a: &mut [u64; 5]) {
        let cmd = if self.chance(10) {
            self.word()
        } else {
            self.below(32)
        };
        let cmd = if self.chance(16) {
            cmd | self.below(8) << 6
        } else {
            cmd
        };
        let n = self.below(5);
        let extents = self.block(n.max(1));
        let r = self.block(8);
        put(r, self.ptr_or_bad(extents));
        put(r + 8, self.count(n, false));
        put(
            r + 16,
            [0, 0, 1, 9, 18, 63, self.below(1 << 32)][idx(self.below(7))],
        );
        put(r + 24, self.domid());
        a[0] = cmd;
        a[1] = self.ptr_or_bad(r);
    }

    fn gnttab(&mut self, a: &mut [u64; 5]) {
        a[0] = if self.chance(10) {
            self.word() & 0xFFFF_FFFF
        } else {
            self.below(14)
        };
        let n = self.below(4);
        let s = self.block(8 * n.max(1));
        for i in 0..n {
            // Host addresses (map/unmap/replace) aim at W.
            if self.chance(2) {
                let va = W + 4096 * self.below(W_PAGES);
                put(s + 64 * i, va);
            }
            put(s + 64 * i + 16, self.domid());
        }
        // Commands whose struct starts with a domain (setup_table,
        // query_size, get_version) or a version (set_version): mostly
        // plausible, so the calls get past the first check.
        if matches!(a[0], 2 | 6 | 8 | 10) && !self.chance(4) {
            for i in 0..n.max(1) {
                let e = s + 24 * i;
                let first = match a[0] {
                    8 => [1, 2, 3, 0][idx(self.below(4))],
                    _ => DOMID_SELF | ([1, 4, 32, 0][idx(self.below(4))] << 32),
                };
                put(e, first);
                let frames = self.alloc(32);
                put(e + 16, self.ptr_or_bad(frames));
            }
        }
        a[1] = self.ptr_or_bad(s);
        a[2] = self.count(n, false);
    }

    fn evtchn(&mut self, compat: bool) -> (u64, u64) {
        let mut cmd = if self.chance(10) {
            self.word() & 0xFFFF_FFFF
        } else {
            self.below(16)
        };
        if console::uses_ring() && matches!(cmd, 3 | 8 | 10 | 11) {
            cmd = 5;
        }
        let s = self.block(8);
        let port = [
            0,
            1,
            2,
            3,
            self.below(64),
            1023,
            4095,
            4096,
            1 << 17,
            u64::from(u32::MAX),
        ][idx(self.below(10))];
        let dom = self.domid();
        let (w0, w1) = if compat { (s + 8, s + 16) } else { (s, s + 8) };
        match cmd {
            0 | 6 | 10 => put(w0, dom | self.domid() << 16 | port << 32),
            1 | 2 | 7 => put(w0, self.below(24) | self.below(3) << 32),
            3 | 4 | 5 | 8 | 9 | 13 => put(w0, port | self.below(3) << 32),
            11 => {
                let f = self.scratch_mfn();
                put(w0, if self.chance(3) { self.word() } else { f });
                put(w1, self.below(4096) | self.below(2) << 32);
            }
            _ => {}
        }
        if compat {
            put(s, cmd);
            (0, self.ptr_or_bad(s))
        } else {
            (cmd, self.ptr_or_bad(s))
        }
    }

    fn domctl(&mut self, a: &mut [u64; 5]) {
        let cmd = match self.below(4) {
            0 => self.below(90),
            _ => [1, 2, 3, 4, 5, 11, 12, 13, 15, 22][idx(self.below(10))],
        };
        let version = if self.chance(6) {
            self.word() & 0xFFFF_FFFF
        } else {
            u64::from(DOMCTL_INTERFACE_VERSION)
        };
        let mut dom = match self.below(5) {
            0 => self.domid(),
            1 => 0,
            _ => 1 + self.below(4),
        };
        if cmd == 2 && ((dom == 0 && self.dom0) || dom == DOMID_SELF) {
            dom = 0x7FF4;
        }
        let s = self.block(20);
        put(s, cmd | version << 32);
        put(s + 8, dom);
        if cmd == 1 && self.chance(2) {
            // A plausible createdomain: ssidref, handle, flags 0, max_vcpus 1.
            for i in 0..8 {
                put(s + 16 + 8 * i, 0);
            }
            put(s + 16 + 24, 1 << 32);
        }
        if cmd == 12 || cmd == 13 {
            let ctx = self.block(64);
            put(s + 16, self.below(3));
            put(s + 24, self.ptr_or_bad(ctx));
        }
        if self.n_domctls < self.domctls.len() {
            self.domctls[self.n_domctls] = s;
            self.n_domctls += 1;
        }
        a[0] = self.ptr_or_bad(s);
    }

    /// Arguments for hypercall `nr` (module docs for the exclusions).
    fn args_for(&mut self, nr: u64, depth: u32) -> [u64; 5] {
        let mut a = [0; 5];
        for x in &mut a {
            *x = self.word();
        }
        match nr {
            // In a multicall, an earlier entry may write into a struct
            // of a later one: mostly no trap table there (see `sched`).
            0 if depth > 0 && !self.chance(4) => a[0] = self.list_bad_ptr(),
            0 => a[0] = self.trap_table(depth),
            1 => {
                let n = self.below(9);
                let list = self.alloc(2 * n.max(1));
                self.mmu_reqs(n, list);
                a[0] = self.list_or_bad(list);
                a[1] = self.count(n, false);
                let out = self.alloc(1);
                a[2] = self.out_or_bad(out);
                a[3] = self.foreigndom();
            }
            2 => {
                let n = self.below(4);
                let list = self.alloc(n.max(1));
                for i in 0..n {
                    let m = if self.chance(2) {
                        self.scratch_mfn()
                    } else {
                        self.pte_mfn()
                    };
                    let m = self.sanitize(m);
                    put(list + 8 * i, m);
                }
                a[0] = self.ptr_or_bad(list);
                a[1] = [0, 1, 511, 512, 513, 512 * n, 14 * 512, u64::MAX][idx(self.below(8))];
            }
            6 => a[0] = [0, 3, 4, 0xFFFF_FFFF][idx(self.below(4))],
            7 => {
                let s = self.block(16);
                let cmd = self.below(70);
                let cmd = if cmd == 51 { 52 } else { cmd };
                let v = if self.chance(4) {
                    self.word()
                } else {
                    0x0300_0001
                };
                put(s, cmd | v << 32);
                a[0] = self.ptr_or_bad(s);
            }
            8 | 9 => a[0] = self.below(9),
            10 => {
                let m = self.pte_mfn();
                let m = self.sanitize(m);
                a[0] = (m << 12) | (8 * self.below(512));
                a[1] = [
                    0,
                    0x00CF_FA00_0000_FFFF,
                    0x00AF_9A00_0000_FFFF,
                    0x0000_EC00_0008_1000,
                    self.next(),
                ][idx(self.below(5))];
            }
            12 => self.memory(&mut a),
            13 => {
                if depth > 0 {
                    a[0] = self.list_bad_ptr();
                } else {
                    let n = self.below(9);
                    // The list ends at the guard page (module docs).
                    self.b_high = B_BYTES - 64 * n;
                    let list = B + self.b_high;
                    for i in 0..n {
                        let (sub, sa) = self.gen_call(depth + 1);
                        if self.tick >= self.trace {
                            println!("{NAME}:   entry {i} nr {sub} args {sa:x?}");
                        }
                        put(list + 64 * i, sub);
                        put(list + 64 * i + 8, 0);
                        for (j, v) in sa.iter().enumerate() {
                            put(list + 64 * i + 16 + 8 * j as u64, *v);
                        }
                        put(list + 64 * i + 56, 0);
                        self.entries += 1;
                    }
                    a[0] = if self.chance(8) {
                        self.list_bad_ptr()
                    } else {
                        list
                    };
                    a[1] = self.count(n, true);
                }
            }
            14 | 22 => {
                a[0] = self.va();
                a[1] = self.pte();
                a[2] = if self.chance(4) {
                    self.word()
                } else {
                    self.below(8)
                };
                a[3] = self.domid();
            }
            15 => {
                let now = time::system_time_ns();
                a[0] = [
                    0,
                    now + self.below(1_000_000),
                    u64::MAX,
                    now.saturating_sub(1),
                ][idx(self.below(4))];
            }
            16 => a[0] = self.evtchn(true).1,
            17 => {
                a[0] = if self.chance(8) {
                    self.word()
                } else {
                    self.below(12)
                };
                let s = self.alloc(128);
                a[1] = self.out_or_bad(s);
            }
            18 => self.console(&mut a),
            19 => {
                let s = self.block(4);
                put(s, self.below(32));
                a[0] = self.ptr_or_bad(s);
            }
            20 => self.gnttab(&mut a),
            23 => {}
            24 => self.vcpu(&mut a),
            25 => a[0] = self.below(5),
            26 => {
                let n = self.below(6);
                let list = self.alloc(3 * n.max(1));
                self.mmuext_ops(n, list);
                a[0] = self.list_or_bad(list);
                a[1] = self.count(n, false);
                let out = self.alloc(1);
                a[2] = self.out_or_bad(out);
                a[3] = self.foreigndom();
            }
            28 => {
                a[0] = self.below(3);
                let s = self.block(2);
                let h = if self.chance(2) {
                    HV + 0x1000
                } else {
                    0x8000_0000_0000_1000
                };
                put(s, h);
                // (In a multicall the struct could be overwritten: see `sched`.)
                a[1] = if depth > 0 {
                    self.list_bad_ptr()
                } else {
                    self.ptr_or_bad(s)
                };
            }
            29 => self.sched(depth, &mut a),
            30 => {
                a[0] = self.below(4);
                let s = self.block(2);
                put(s, self.below(8) | self.below(4) << 16);
                a[1] = self.ptr_or_bad(s);
            }
            32 => {
                let (cmd, p) = self.evtchn(false);
                a[0] = cmd;
                a[1] = p;
            }
            33 => {
                a[0] = if self.chance(8) {
                    self.word()
                } else {
                    self.below(32)
                };
                let s = self.block(8);
                a[1] = self.ptr_or_bad(s);
            }
            35 => {
                let s = self.block(20);
                let v = if self.chance(6) {
                    self.word()
                } else {
                    u64::from(SYSCTL_INTERFACE_VERSION)
                };
                let cmd = self.below(32);
                put(s, cmd | v << 32);
                a[0] = self.ptr_or_bad(s);
            }
            36 => self.domctl(&mut a),
            _ => {}
        }
        a
    }

    /// A hypercall number: every number 0..64, sometimes unassigned ones.
    fn pick_nr(&mut self) -> u64 {
        match self.below(20) {
            0 => [64, 65, 127, 128, 0x8000_0000, u64::MAX][idx(self.below(6))],
            1..=3 => [1, 13, 14, 26][idx(self.below(4))],
            _ => self.below(64),
        }
    }

    fn gen_call(&mut self, depth: u32) -> (u64, [u64; 5]) {
        loop {
            let nr = self.pick_nr();
            if nr == 23 {
                continue;
            }
            return (nr, self.args_for(nr, depth));
        }
    }

    fn refill(&mut self) {
        let p: *mut u8 = ptr::with_exposed_provenance_mut(idx(B));
        // SAFETY: the scratch buffer window is `B_BYTES` writable bytes of
        // frames only the fuzzer uses.
        unsafe { ptr::write_bytes(p, 0xA5, idx(B_BYTES)) }
        self.b_low = 0;
        self.b_high = B_BYTES;
        self.n_domctls = 0;
    }

    /// Undo what the call may have changed that the fuzzer relies on.
    fn restore(&mut self, nr: u64) {
        let mc = nr == 13;
        if mc || nr == 8 {
            raw(u64::from(Hypercall::SetDebugreg.nr()), [7, 0, 0, 0, 0]);
        }
        if mc || matches!(nr, 0 | 4 | 30) {
            if let Err(e) = traps::reinstall() {
                fail(format_args!("reinstating the trap table: {e:?}"));
            }
        }
        if mc || nr == 5 {
            raw(u64::from(Hypercall::FpuTaskswitch.nr()), [0; 5]);
        }
        if mc || nr == 24 {
            let _ = time::stop_periodic_timer();
        }
        if mc || nr == 28 {
            raw(u64::from(Hypercall::NmiOp.nr()), [1, 0, 0, 0, 0]);
        }
        if self.watchdog {
            // A watchdog it may have armed at top level: disarm ids 1..4.
            self.watchdog = false;
            for id in 1..5 {
                let s = B + B_BYTES - 8;
                put(s, id);
                raw(u64::from(Hypercall::SchedOp.nr()), [6, s, 0, 0, 0]);
            }
        }
        for i in 0..self.n_domctls {
            let s = self.domctls[i];
            if (B..B + B_BYTES).contains(&s) && get(s) & 0xFFFF_FFFF == 1 {
                let dom = get(s + 8) & 0xFFFF;
                if dom != 0 && dom < 0x7FF0 {
                    let d = B + B_BYTES - 24 * 8;
                    put(d, 2 | u64::from(DOMCTL_INTERFACE_VERSION) << 32);
                    put(d + 8, dom);
                    raw(u64::from(Hypercall::Domctl.nr()), [d, 0, 0, 0, 0]);
                }
            }
        }
    }

    fn check(&mut self, full: bool) {
        let i = self.tick % 512;
        let got = probe::read_u64(S + 8 * i);
        let want = SENTINEL ^ i ^ (self.tick / 512);
        if got != want {
            fail(format_args!(
                "sentinel word {i} is {got:#x}, expected {want:#x}"
            ));
        }
        let next = SENTINEL ^ i ^ (self.tick / 512 + 1);
        // SAFETY: the sentinel page is mapped writable at `S` and used only here.
        unsafe { probe::write_u64(S + 8 * i, next) };
        if probe::read_u64(S + 8 * i) != next {
            fail(format_args!("sentinel word {i} did not take a write"));
        }
        let before = FAULTS.load(Ordering::Relaxed);
        let r = probe::read_u64(R + 8 * i);
        if r != RO_WORD {
            let faulted = FAULTS.load(Ordering::Relaxed) != before;
            fail(format_args!(
                "read-only page word {i} is {r:#x} (faulted {faulted}, pte {:x?}) after call {} nr {} args {:x?}",
                mm::translate(R).map(|p| p.0),
                self.tick,
                self.last.0,
                self.last.1
            ));
        }
        if let Some(pte) = mm::translate(B + B_BYTES) {
            fail(format_args!(
                "the guard page after the buffer is mapped ({:#x}) after call {} nr {} args {:x?}",
                pte.0, self.tick, self.last.0, self.last.1
            ));
        }
        let pages = if full { 512 } else { W_PAGES };
        for p in 0..pages {
            let Some(pte) = mm::translate(W + 4096 * p) else {
                continue;
            };
            if pte.flags().contains(PteFlags::RW) && self.forbidden.contains(&pte.mfn().0) {
                fail(format_args!(
                    "W page {p} maps forbidden frame {:#x} writable: {:#x}",
                    pte.mfn().0,
                    pte.0
                ));
            }
        }
        // Touch a page of W: a fault is counted; a scratch frame is written.
        let p = W + 4096 * (self.tick % W_PAGES);
        let v = probe::read_u64(p);
        if let Some(pte) = mm::translate(p)
            && pte.flags().contains(PteFlags::RW)
            && self.data.contains(&pte.mfn().0)
        {
            // SAFETY: `p` maps one of the fuzzer's scratch frames writable.
            unsafe { probe::write_u64(p, v ^ 1) };
        }
    }

    fn hostile_checks(&mut self) {
        let va = W + 4096 * (W_PAGES - 1);
        let rw = (PteFlags::PRESENT | PteFlags::RW).bits();
        for m in self.forbidden {
            let rc = raw(
                u64::from(Hypercall::UpdateVaMapping.nr()),
                [va, (m << 12) | rw, 2, 0, 0],
            );
            if !is_err(rc) {
                fail(format_args!("mapping frame {m:#x} writable succeeded"));
            }
        }
        if let Err(e) = mm::map(S2, &[self.sentinel.mfn], PteFlags::NX) {
            fail(format_args!("mapping the sentinel read-only again: {e:?}"));
        }
        let i = self.tick % 512;
        let (a, b) = (probe::read_u64(S2 + 8 * i), probe::read_u64(S + 8 * i));
        if a != b {
            fail(format_args!("sentinel differs through its second mapping"));
        }
        if mm::unmap(S2, 1) != Ok(1) {
            fail(format_args!("unmapping the sentinel's second mapping"));
        }
    }

    fn one(&mut self) {
        self.refill();
        let (nr, args) = self.gen_call(0);
        self.last = (nr, args);
        if self.tick >= self.trace {
            println!("{NAME}: call {} nr {nr} args {args:x?}", self.tick);
        }
        let rc = raw(nr, args);
        self.calls += 1;
        if is_err(rc) {
            self.errors += 1;
        }
        self.per_nr[idx(nr.min(64))] += 1;
        if !is_err(rc) {
            self.ok_per_nr[idx(nr.min(64))] += 1;
        }
        self.restore(nr);
        let full = self.tick % 64 == 0;
        self.check(full);
        if self.tick % 128 == 0 {
            self.hostile_checks();
        }
        self.tick += 1;
    }
}

fn frame() -> Frame {
    match mm::alloc_frame() {
        Some(f) => f,
        None => fail(format_args!("no free frame")),
    }
}

fn fill(f: Frame, word: impl Fn(u64) -> u64) {
    let r = mm::with_writable(f, |page| {
        for (i, c) in page.chunks_exact_mut(8).enumerate() {
            c.copy_from_slice(&word(i as u64).to_le_bytes());
        }
    });
    if let Err(e) = r {
        fail(format_args!("filling a frame: {e:?}"));
    }
}

fn map(va: u64, frames: &[Mfn], flags: PteFlags) {
    if let Err(e) = mm::map(va, frames, flags) {
        fail(format_args!("mapping {va:#x}: {e:?}"));
    }
}

fn m2p_first_mfn() -> u64 {
    // XENMEM_machphys_mfn_list: max_extents, extent_start, nr_extents.
    let mut list = [0u64; 1];
    let mut arg = [1u64, 0, 0];
    arg[1] = pv_runtime::hypercall::handle_mut(&mut list).addr();
    let rc = raw(
        u64::from(Hypercall::MemoryOp.nr()),
        [
            5,
            pv_runtime::hypercall::handle_mut(&mut arg).addr(),
            0,
            0,
            0,
        ],
    );
    if is_err(rc) || arg[2] == 0 {
        return 0;
    }
    list[0]
}

fn main(si: &'static StartInfo) {
    let seed = arg_u64(NAME, "seed", 1);
    let count = arg_u64(NAME, "count", 1000);
    SEED.store(seed, Ordering::Relaxed);
    evtchn::disable_events();
    for v in 0..vector::COUNT {
        traps::set_handler(v, on_trap);
    }
    traps::set_callback_handler(Callback::Failsafe, Some(on_failsafe));

    let data: [Frame; W_DATA] = core::array::from_fn(|_| frame());
    let typable: [Frame; TYPABLE] = core::array::from_fn(|_| frame());
    let buf: [Frame; 4] = core::array::from_fn(|_| frame());
    let sentinel = frame();
    let ro = frame();
    for (i, f) in data.iter().enumerate() {
        fill(*f, |w| (i as u64) << 32 | w);
    }
    for f in &typable {
        fill(*f, |_| RO_WORD);
    }
    fill(sentinel, |w| SENTINEL ^ w);
    fill(ro, |_| RO_WORD);
    let rwnx = PteFlags::RW | PteFlags::NX;
    map(W, &data.map(|f| f.mfn), rwnx);
    map(B, &buf.map(|f| f.mfn), rwnx);
    map(S, &[sentinel.mfn], rwnx);
    map(R, &[ro.mfn], PteFlags::NX);
    let level = |l: u8| match mm::entry_address(W, l) {
        Some(ma) => ma.0 >> 12,
        None => fail(format_args!("no level-{l} table for W")),
    };
    let w_l1 = level(1);
    let m2p_mfn = m2p_first_mfn();
    let dom0 = SifFlags::from_bits_retain(si.flags).contains(SifFlags::INITDOMAIN);
    let mut f = Fuzz {
        rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
        dom0,
        data: data.map(|f| f.mfn.0),
        typable: typable.map(|f| f.mfn.0),
        // Frame 0 is in the first MiB, I/O memory dom0 may map writable
        // (as on Xen); a domU may not.
        forbidden: [
            w_l1,
            level(2),
            level(3),
            mm::kernel_root().0,
            m2p_mfn,
            if dom0 { m2p_mfn + 1 } else { 0 },
        ],
        w_l1,
        m2p_mfn,
        sentinel,
        b_low: 0,
        b_high: B_BYTES,
        domctls: [0; 8],
        n_domctls: 0,
        calls: 0,
        errors: 0,
        entries: 0,
        per_nr: [0; 66],
        ok_per_nr: [0; 66],
        tick: 0,
        watchdog: false,
        last: (0, [0; 5]),
        trace: arg_u64(NAME, "trace", u64::MAX),
    };
    println!(
        "{NAME}: seed={seed} count={count} dom0={dom0} w_l1={w_l1:#x} m2p={m2p_mfn:#x} scratch={:#x?}",
        f.data[0]
    );
    for _ in 0..count {
        f.one();
    }
    // Final checks: the whole sentinel and read-only page, all of W's L1.
    for i in 0..512 {
        if probe::read_u64(R + 8 * i) != RO_WORD {
            fail(format_args!("read-only page word {i} changed"));
        }
    }
    f.check(true);
    f.hostile_checks();
    print!("{NAME}: calls per number, as number:calls/successes (64 = unassigned above 63):");
    for (nr, (n, ok)) in f.per_nr.iter().zip(f.ok_per_nr).enumerate() {
        if *n != 0 {
            print!(" {nr}:{n}/{ok}");
        }
    }
    println!();
    println!();
    println!(
        "{NAME}: PASS seed={seed} count={count} calls={} errors={} faults={} multicall_entries={}",
        f.calls,
        f.errors,
        FAULTS.load(Ordering::Relaxed),
        f.entries
    );
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
