//! Descriptor tables: the guest's LDT (`MMUEXT_SET_LDT`) and the unprivileged
//! instructions that look descriptors up (`lsl`, `lar`).
//!
//! An LDT is up to 8192 descriptors in pages of the guest's own, mapped read-only at a
//! page-aligned address. The hypervisor looks each page up when the CPU first reads
//! it and makes it a descriptor page (its descriptors audited, DPLs raised to 3): from
//! then until the LDT changes, the page cannot be mapped writable, and descriptors are
//! changed with `update_descriptor`. A page that cannot be an LDT page (not mapped, a
//! descriptor the audit refuses) turns the CPU's read into a #PF at its address.

use crate::abi::Errno;
use crate::abi::mmu::MmuextOp;
use crate::abi::types::{DomId, GuestPtr};
use crate::hypercall::{handle, invoker};

/// Makes the `ents` descriptors at `va` (page aligned, read-only) this vCPU's LDT;
/// `ents` 0 removes it. -EINVAL for an unaligned or hypervisor address or more than
/// 8192 entries.
pub fn set_ldt(va: u64, ents: u32) -> Result<(), Errno> {
    let op = MmuextOp::set_ldt(va, ents);
    // SAFETY: the runtime installed the hypercall page; the operation is a live local
    // the hypervisor only reads, and it changes nothing but this vCPU's LDT.
    let mut inv = unsafe { invoker() };
    crate::abi::hypercall::mmuext_op(
        &mut inv,
        handle(&op),
        1,
        GuestPtr::NULL,
        u32::from(DomId::SELF.0),
    )
    .map(drop)
}

/// The limit of the segment `sel` names (`lsl`), or `None` if it names none this
/// code may see.
pub fn segment_limit(sel: u16) -> Option<u32> {
    let limit: u64;
    let ok: u8;
    // SAFETY: `lsl` only reads a descriptor (GDT or LDT) and sets ZF; it writes no
    // memory. A fault on an LDT page that cannot be one goes to the #PF handler.
    unsafe {
        core::arch::asm!(
            "lsl {l}, {s:r}",
            "setz {ok}",
            s = in(reg) u64::from(sel),
            l = out(reg) limit,
            ok = out(reg_byte) ok,
            options(nostack, nomem),
        );
    }
    (ok != 0).then(|| u32::try_from(limit & 0xFFFF_FFFF).unwrap_or(u32::MAX))
}

/// The access rights of the descriptor `sel` names (`lar`: type, S, DPL, P in bits
/// 8-15, the flags in 20-23), or `None` if it names none this code may see.
pub fn access_rights(sel: u16) -> Option<u32> {
    let rights: u64;
    let ok: u8;
    // SAFETY: as for `segment_limit`.
    unsafe {
        core::arch::asm!(
            "lar {r}, {s:r}",
            "setz {ok}",
            s = in(reg) u64::from(sel),
            r = out(reg) rights,
            ok = out(reg_byte) ok,
            options(nostack, nomem),
        );
    }
    (ok != 0).then(|| u32::try_from(rights & 0xFFFF_FFFF).unwrap_or(u32::MAX))
}
