//! The guest's data selectors (%ds, %es, %fs, %gs): read on switch-out, loaded on
//! switch-in with fault fixup (Xen's `save_segments`/`load_segments`), and the %gs
//! load of `SEGBASE_GS_USER_SEL`. The hypervisor itself never uses these registers
//! (its per-CPU data is reached through statics; only entry.s uses %gs, and only
//! across SWAPGS), so loading a guest's selector here changes nothing of its own but
//! the GS base, which the %gs load puts back at once.

use core::arch::asm;

unsafe extern "C" {
    fn load_ds_safe(sel: u16) -> u32;
    fn load_es_safe(sel: u16) -> u32;
    fn load_fs_safe(sel: u16) -> u32;
    fn load_gs_safe(sel: u16) -> u32;
    static load_ds_insn: u8;
    static load_ds_fixup: u8;
    static load_es_insn: u8;
    static load_es_fixup: u8;
    static load_fs_insn: u8;
    static load_fs_fixup: u8;
    static load_gs_insn: u8;
    static load_gs_fixup: u8;
}

const IA32_GS_BASE: u32 = 0xC000_0101;

/// %ds, %es, %fs, %gs as the CPU has them.
pub fn read() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reading segment selectors has no side effects.
    unsafe {
        asm!("mov {:x}, ds", out(reg) ds, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, es", out(reg) es, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, fs", out(reg) fs, options(nomem, nostack, preserves_flags));
        asm!("mov {:x}, gs", out(reg) gs, options(nomem, nostack, preserves_flags));
    }
    [ds, es, fs, gs]
}

/// Loads data selector `i` (0 %ds, 1 %es, 2 %fs, 3 %gs) with `sel`; false (NULL
/// loaded instead) if it faults. The FS/GS bases change with %fs/%gs: the caller
/// writes the vCPU's afterwards. The hypervisor's GS base is put back after %gs.
pub fn load(i: usize, sel: u16) -> bool {
    // SAFETY: each stub only loads its segment register; a fault on the load is
    // fixed up (`fixup`) to load NULL and report it. Nothing in the hypervisor uses
    // %ds/%es/%fs; %gs's base is restored below before anything can use it (entry.s
    // only, on the way out).
    let ok = unsafe {
        match i {
            0 => load_ds_safe(sel),
            1 => load_es_safe(sel),
            2 => load_fs_safe(sel),
            _ => {
                let hv = super::cpu::rdmsr(IA32_GS_BASE);
                let ok = load_gs_safe(sel);
                super::cpu::wrmsr(IA32_GS_BASE, hv);
                ok
            }
        }
    };
    ok != 0
}

/// `SEGBASE_GS_USER_SEL` (Xen's `do_set_segment_base`): loads `sel` into %gs, RPL 3
/// unless NULL (NULL after loading the flat data selector, so that AMD CPUs clear the
/// base too), NULL if it faults; returns the selector loaded and the base it gave.
pub fn load_user_gs(sel: u16) -> (u16, u64) {
    let sel = if sel & !3 == 0 { 0 } else { sel | 3 };
    // SAFETY: as in `load`; the hypervisor's GS base is read first and put back
    // before returning, and the guest's kernel GS base (in KERNEL_GS_BASE while the
    // hypervisor runs) is not touched.
    unsafe {
        let hv = super::cpu::rdmsr(IA32_GS_BASE);
        if sel == 0 {
            load_gs_safe(hypercall_abi::xen::FLAT_RING3_DS32);
        }
        let ok = load_gs_safe(sel) != 0;
        let base = super::cpu::rdmsr(IA32_GS_BASE);
        super::cpu::wrmsr(IA32_GS_BASE, hv);
        if ok { (sel, base) } else { (0, 0) }
    }
}

/// If a hypervisor-context fault hit one of the selector loads, resumes at its fixup
/// (which loads NULL and reports the failure) and returns true.
pub fn fixup(frame: &mut super::trap::TrapFrame) -> bool {
    let pairs = [
        (&raw const load_ds_insn, &raw const load_ds_fixup),
        (&raw const load_es_insn, &raw const load_es_fixup),
        (&raw const load_fs_insn, &raw const load_fs_fixup),
        (&raw const load_gs_insn, &raw const load_gs_fixup),
    ];
    for (insn, fix) in pairs {
        if frame.rip == insn as u64 {
            frame.rip = fix as u64;
            return true;
        }
    }
    false
}
