//! The instruction ledger's QEMU TCG plugin (`xtask ledger`, docs/bench.md).
//!
//! QEMU loads it with `-plugin PATH,out=FILE`. It counts, per guest virtual address,
//! how many times each instruction executes between two *markers* the guest executes,
//! and appends each such section to `FILE`. Instruction counts do not depend on how
//! busy the host is, so they show where a hypervisor's entry and exit paths spend their
//! work when timings are too noisy to.
//!
//! A marker is `nopl 0x4C44xxxx(%rax)` (bytes `0F 1F 80` and a 32-bit displacement
//! whose upper half is `0x4C44`, "LD"): a no-op on any x86 CPU and hypervisor. Bits
//! 0-14 of the displacement are the section's id; bit 15 clear starts the section
//! (every count goes back to zero), set ends it. A marker itself is never counted.
//!
//! The file gets, per ended section:
//!
//! ```text
//! section ID
//! PC COUNT DISASSEMBLY
//! ...
//! end ID
//! ```
//!
//! with PC in hex, one line per address that executed in the section, then one line
//! `page ADDR COUNT` per 4 KiB page of data the hypervisor's instructions (those at
//! `0xFFFF8...`, L4 slots 256-271) read or wrote, with the number of accesses: under
//! TCG each page also costs a software-TLB entry. `xtask ledger` attributes the
//! addresses (hypervisor or guest, which function) and sums them.
//!
//! This crate is the FFI edge to QEMU's C plugin API (`qemu-plugin.h`, API version 3,
//! which QEMU 8.2 and later accept): the few functions it calls are declared below,
//! and its `unsafe` is confined to calling them and to reading what they hand over.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// QEMU's id for this plugin.
type PluginId = u64;

/// An opaque translation block (`struct qemu_plugin_tb`).
#[repr(C)]
struct Tb {
    _opaque: [u8; 0],
}

/// An opaque translated instruction (`struct qemu_plugin_insn`).
#[repr(C)]
struct Insn {
    _opaque: [u8; 0],
}

/// `QEMU_PLUGIN_CB_NO_REGS`: the callback does not look at the CPU's registers.
const CB_NO_REGS: c_int = 0;

type TbTransCb = extern "C" fn(PluginId, *mut Tb);
type InsnExecCb = extern "C" fn(u32, *mut c_void);
type AtExitCb = extern "C" fn(PluginId, *mut c_void);
type MemCb = extern "C" fn(u32, u32, u64, *mut c_void);

/// `QEMU_PLUGIN_MEM_RW`: loads and stores.
const MEM_RW: c_int = 3;
/// The hypervisor's part of the address space (L4 slots 256-271).
const HV_RANGE: std::ops::Range<u64> = 0xFFFF_8000_0000_0000..0xFFFF_8800_0000_0000;

unsafe extern "C" {
    fn qemu_plugin_register_vcpu_tb_trans_cb(id: PluginId, cb: TbTransCb);
    fn qemu_plugin_register_atexit_cb(id: PluginId, cb: AtExitCb, userdata: *mut c_void);
    fn qemu_plugin_tb_n_insns(tb: *const Tb) -> usize;
    fn qemu_plugin_tb_get_insn(tb: *const Tb, idx: usize) -> *mut Insn;
    fn qemu_plugin_insn_vaddr(insn: *const Insn) -> u64;
    fn qemu_plugin_insn_data(insn: *const Insn, dest: *mut c_void, len: usize) -> usize;
    fn qemu_plugin_insn_disas(insn: *const Insn) -> *mut c_char;
    fn qemu_plugin_register_vcpu_insn_exec_cb(
        insn: *mut Insn,
        cb: InsnExecCb,
        flags: c_int,
        userdata: *mut c_void,
    );
    fn qemu_plugin_register_vcpu_mem_cb(
        insn: *mut Insn,
        cb: MemCb,
        flags: c_int,
        rw: c_int,
        userdata: *mut c_void,
    );
    fn g_free(mem: *mut c_void);
}

/// The plugin API version this plugin is written against (QEMU refuses a plugin
/// outside its supported range).
#[unsafe(no_mangle)]
pub static qemu_plugin_version: c_int = 3;

/// Distinct instruction addresses the ledger can tell apart; later ones share the
/// last slot (reported as address 0).
const SLOTS: usize = 1 << 20;

/// The upper half of a marker's displacement.
const MARKER_MAGIC: u32 = 0x4C44;
/// A marker's "end" bit.
const MARKER_END: u32 = 1 << 15;

/// Executions per slot in the current section.
static COUNTS: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
/// A section is open: count.
static ARMED: AtomicBool = AtomicBool::new(false);

/// What the translator learned, per slot.
#[derive(Debug, Default)]
struct Table {
    /// Slot of each address seen.
    slot_of: std::collections::HashMap<u64, usize>,
    /// Address and disassembly of each slot.
    insns: Vec<(u64, String)>,
    /// Where sections go.
    out: Option<std::fs::File>,
    /// Accesses per data page by the hypervisor's instructions in the current section.
    pages: std::collections::HashMap<u64, u64>,
}

static TABLE: Mutex<Option<Table>> = Mutex::new(None);

fn with_table<R>(f: impl FnOnce(&mut Table) -> R) -> R {
    let mut t = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    f(t.get_or_insert_with(Table::default))
}

/// The marker value of an instruction's bytes, if it is a marker.
fn marker(bytes: &[u8]) -> Option<u32> {
    match bytes {
        [0x0F, 0x1F, 0x80, d0, d1, d2, d3] => {
            let d = u32::from_le_bytes([*d0, *d1, *d2, *d3]);
            (d >> 16 == MARKER_MAGIC).then_some(d & 0xFFFF)
        }
        _ => None,
    }
}

extern "C" fn on_insn(_vcpu: u32, slot: *mut c_void) {
    if ARMED.load(Ordering::Relaxed) {
        let i = slot as usize;
        if let Some(c) = COUNTS.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

extern "C" fn on_hv_access(_vcpu: u32, _info: u32, vaddr: u64, _udata: *mut c_void) {
    if ARMED.load(Ordering::Relaxed) {
        with_table(|t| *t.pages.entry(vaddr >> 12).or_default() += 1);
    }
}

extern "C" fn on_marker(_vcpu: u32, value: *mut c_void) {
    let value = u32::try_from(value as usize).unwrap_or(0);
    let id = value & !MARKER_END;
    if value & MARKER_END == 0 {
        let used = with_table(|t| t.insns.len()).min(SLOTS);
        for c in COUNTS.iter().take(used) {
            c.store(0, Ordering::Relaxed);
        }
        with_table(|t| t.pages.clear());
        ARMED.store(true, Ordering::Relaxed);
        return;
    }
    if !ARMED.swap(false, Ordering::Relaxed) {
        return;
    }
    with_table(|t| {
        let mut text = format!("section {id}\n");
        for (slot, (pc, disas)) in t.insns.iter().enumerate() {
            let n = COUNTS.get(slot).map_or(0, |c| c.load(Ordering::Relaxed));
            if n != 0 {
                text.push_str(&format!("{pc:x} {n} {disas}\n"));
            }
        }
        let mut pages: Vec<_> = t.pages.iter().collect();
        pages.sort();
        for (p, n) in pages {
            text.push_str(&format!("page {:x} {n}\n", p << 12));
        }
        text.push_str(&format!("end {id}\n"));
        if let Some(f) = t.out.as_mut() {
            let _ = f.write_all(text.as_bytes());
            let _ = f.flush();
        }
    });
}

extern "C" fn on_translate(_id: PluginId, tb: *mut Tb) {
    // SAFETY: QEMU passes a live translation block for the duration of this callback.
    let n = unsafe { qemu_plugin_tb_n_insns(tb) };
    for i in 0..n {
        // SAFETY: `i` is below the block's instruction count.
        let insn = unsafe { qemu_plugin_tb_get_insn(tb, i) };
        let mut bytes = [0u8; 16];
        // SAFETY: `insn` is live during this callback; QEMU copies at most `len` bytes
        // into `bytes` and returns how many it copied.
        let len = unsafe { qemu_plugin_insn_data(insn, bytes.as_mut_ptr().cast(), bytes.len()) };
        if let Some(m) = bytes.get(..len).and_then(marker) {
            // SAFETY: as above; the userdata is a plain integer, never dereferenced.
            unsafe {
                qemu_plugin_register_vcpu_insn_exec_cb(
                    insn,
                    on_marker,
                    CB_NO_REGS,
                    m as usize as *mut c_void,
                )
            };
            continue;
        }
        // SAFETY: `insn` is live during this callback.
        let pc = unsafe { qemu_plugin_insn_vaddr(insn) };
        let slot = with_table(|t| {
            if let Some(&s) = t.slot_of.get(&pc) {
                return s;
            }
            if t.insns.len() >= SLOTS - 1 {
                if t.insns.len() == SLOTS - 1 {
                    t.insns.push((0, "(other addresses)".into()));
                }
                return SLOTS - 1;
            }
            // SAFETY: `insn` is live; QEMU returns a NUL-terminated string it
            // allocated with g_malloc (or NULL), which is ours to free.
            let text = unsafe {
                let p = qemu_plugin_insn_disas(insn);
                if p.is_null() {
                    String::from("?")
                } else {
                    let s = CStr::from_ptr(p).to_string_lossy().into_owned();
                    g_free(p.cast());
                    s
                }
            };
            let s = t.insns.len();
            t.insns.push((pc, text.replace('\n', " ")));
            t.slot_of.insert(pc, s);
            s
        });
        // SAFETY: as above; the userdata is a slot index, never dereferenced.
        unsafe {
            qemu_plugin_register_vcpu_insn_exec_cb(insn, on_insn, CB_NO_REGS, slot as *mut c_void)
        };
        if HV_RANGE.contains(&pc) {
            // SAFETY: as above; no userdata.
            unsafe {
                qemu_plugin_register_vcpu_mem_cb(
                    insn,
                    on_hv_access,
                    CB_NO_REGS,
                    MEM_RW,
                    core::ptr::null_mut(),
                )
            };
        }
    }
}

extern "C" fn on_exit(_id: PluginId, _userdata: *mut c_void) {
    with_table(|t| {
        if let Some(f) = t.out.as_mut() {
            let _ = f.flush();
        }
    });
}

/// QEMU's entry point: `argv` holds `out=FILE`, where the sections go.
///
/// # Safety
/// QEMU calls it once, with `argc` NUL-terminated strings at `argv`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn qemu_plugin_install(
    id: PluginId,
    _info: *const c_void,
    argc: c_int,
    argv: *const *const c_char,
) -> c_int {
    let mut out = None;
    for i in 0..usize::try_from(argc).unwrap_or(0) {
        // SAFETY: QEMU passes `argc` valid C strings.
        let arg = unsafe { CStr::from_ptr(*argv.add(i)) }.to_string_lossy();
        if let Some(path) = arg.strip_prefix("out=") {
            out = Some(path.to_owned());
        }
    }
    let Some(path) = out else {
        eprintln!("ledger plugin: needs out=FILE");
        return 1;
    };
    let file = match std::fs::File::create(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("ledger plugin: {path}: {e}");
            return 1;
        }
    };
    with_table(|t| t.out = Some(file));
    // SAFETY: `id` is the id QEMU just gave this plugin; the callbacks are `extern "C"`
    // functions of the right types that live as long as the process.
    unsafe {
        qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
        qemu_plugin_register_atexit_cb(id, on_exit, core::ptr::null_mut());
    }
    0
}
