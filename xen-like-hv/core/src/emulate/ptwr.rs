//! Writable page tables: the instructions a PV kernel uses to write a page-table
//! entry straight into one of its own in-use, read-only L1 pages, decoded and
//! executed against the entry's old value (Xen's `ptwr_emulated_*` on top of
//! `x86_emulate`). The caller validates the new entry as `mmu_update` would and
//! commits it; see `docs/mm.md`, "Writable page tables".
//!
//! Taken: `mov` (`88`, `89`, `C6 /0`, `C7 /0`), `xchg` (`86`, `87`), `cmpxchg`
//! (`0F B0`, `0F B1`), `or` and `and` (`08`/`09`, `20`/`21`, `80`/`81`/`83` with
//! `/1` or `/4`), and `bts`/`btr` (`0F AB`, `0F B3`, `0F BA /5`, `0F BA /6`), with
//! `lock`, operand-size, address-size, REX and the null segment prefixes. A memory
//! operand through `%fs` or `%gs`, a high-byte register (`%ah`..`%bh`), or anything
//! else is not taken (the fault stays a #PF for the guest).

use crate::regs::{Regs, rflags};

/// What the instruction does to the memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Store `src`.
    Mov(u64),
    /// Swap with register `reg`.
    Xchg(u8),
    /// Compare with the accumulator; if equal store register `reg`, else load the
    /// accumulator.
    Cmpxchg(u8),
    /// OR with `src` (flags as `or`).
    Or(u64),
    /// AND with `src` (flags as `and`).
    And(u64),
    /// Set bit `n` (of the operand at the decoded address); CF = its old value.
    Bts(u32),
    /// Clear bit `n`; CF = its old value.
    Btr(u32),
}

/// A decoded store to memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Length in bytes.
    pub len: u64,
    /// Operand size in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// The linear address of the operand (a `bt*` with a register bit offset
    /// already moved to the operand that holds the bit).
    pub addr: u64,
    /// The operation.
    pub op: Op,
}

const CF: u64 = rflags::CF;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const ARITH: u64 = CF | PF | AF | ZF | SF | OF;

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

/// Sign-extends the low `bytes` bytes of `v`.
#[allow(
    clippy::cast_possible_wrap,
    clippy::cast_sign_loss,
    reason = "a bit-for-bit reinterpretation for the arithmetic shift"
)]
fn sext(v: u64, bytes: u8) -> u64 {
    let shift = 64 - u32::from(bytes) * 8;
    (((v << shift) as i64) >> shift) as u64
}

/// Decodes the instruction at `bytes` (fetched at `regs.rip`) if it is a store this
/// module takes; `None` otherwise.
pub fn decode(bytes: &[u8], regs: &Regs) -> Option<Insn> {
    let mut i = 0;
    let mut opsize16 = false;
    let mut addr32 = false;
    loop {
        match *bytes.get(i)? {
            0x66 => opsize16 = true,
            0x67 => addr32 = true,
            // lock, and the segment overrides that are null in 64-bit mode.
            0xF0 | 0x26 | 0x2E | 0x36 | 0x3E => {}
            _ => break,
        }
        i += 1;
    }
    let mut rex = 0u8;
    if let b @ 0x40..=0x4F = *bytes.get(i)? {
        rex = b;
        i += 1;
    }
    let rex_w = rex & 8 != 0;
    let wide: u8 = if rex_w {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let two_byte = *bytes.get(i)? == 0x0F;
    if two_byte {
        i += 1;
    }
    let op = *bytes.get(i)?;
    i += 1;
    let modrm = *bytes.get(i)?;
    i += 1;
    let md = modrm >> 6;
    if md == 3 {
        return None;
    }
    let reg = ((modrm >> 3) & 7) | if rex & 4 != 0 { 8 } else { 0 };
    let rm = modrm & 7;
    // The effective address.
    let mut ea: u64 = 0;
    let mut rip_relative = false;
    if rm == 4 {
        let sib = *bytes.get(i)?;
        i += 1;
        let scale = sib >> 6;
        let index = ((sib >> 3) & 7) | if rex & 2 != 0 { 8 } else { 0 };
        let base = (sib & 7) | if rex & 1 != 0 { 8 } else { 0 };
        if index != 4 {
            ea = ea.wrapping_add(regs.gpr(index) << scale);
        }
        if md == 0 && sib & 7 == 5 {
            ea = ea.wrapping_add(sext(u64::from(le32(bytes, i)?), 4));
            i += 4;
        } else {
            ea = ea.wrapping_add(regs.gpr(base));
        }
    } else if md == 0 && rm == 5 {
        rip_relative = true;
        ea = sext(u64::from(le32(bytes, i)?), 4);
        i += 4;
    } else {
        ea = regs.gpr(rm | if rex & 1 != 0 { 8 } else { 0 });
    }
    match md {
        1 => {
            ea = ea.wrapping_add(sext(u64::from(*bytes.get(i)?), 1));
            i += 1;
        }
        2 => {
            ea = ea.wrapping_add(sext(u64::from(le32(bytes, i)?), 4));
            i += 4;
        }
        _ => {}
    }
    // A byte register: without REX, 4-7 are %ah..%bh, which are not taken.
    let byte_reg = |r: u8| -> Option<u64> {
        if rex == 0 && (4..8).contains(&r) {
            None
        } else {
            Some(regs.gpr(r) & 0xFF)
        }
    };
    let reg_val = |size: u8| -> Option<u64> {
        if size == 1 {
            byte_reg(reg)
        } else {
            Some(regs.gpr(reg) & mask(size))
        }
    };
    let mut imm = |n: u8| -> Option<u64> {
        let v = match n {
            1 => u64::from(*bytes.get(i)?),
            2 => u64::from(u16::from_le_bytes([*bytes.get(i)?, *bytes.get(i + 1)?])),
            _ => u64::from(le32(bytes, i)?),
        };
        i += usize::from(n);
        Some(v)
    };
    let ext = (modrm >> 3) & 7;
    let imm_z = if opsize16 { 2 } else { 4 };
    let (size, op) = if two_byte {
        match op {
            0xB0 => (1, Op::Cmpxchg(reg)),
            0xB1 => (wide, Op::Cmpxchg(reg)),
            0xAB | 0xB3 => {
                // The register bit offset is signed and may reach other operands.
                let off = i64::from_ne_bytes(sext(regs.gpr(reg) & mask(wide), wide).to_ne_bytes());
                let bits = i64::from(wide) * 8;
                ea = ea.wrapping_add(u64::from_ne_bytes(
                    (off.div_euclid(bits) * i64::from(wide)).to_ne_bytes(),
                ));
                let bit = u32::try_from(off.rem_euclid(bits)).ok()?;
                (
                    wide,
                    if op == 0xAB {
                        Op::Bts(bit)
                    } else {
                        Op::Btr(bit)
                    },
                )
            }
            0xBA if ext == 5 || ext == 6 => {
                let bit = u32::try_from(imm(1)?).ok()? & (u32::from(wide) * 8 - 1);
                (wide, if ext == 5 { Op::Bts(bit) } else { Op::Btr(bit) })
            }
            _ => return None,
        }
    } else {
        match op {
            0x88 => (1, Op::Mov(byte_reg(reg)?)),
            0x89 => (wide, Op::Mov(reg_val(wide)?)),
            0xC6 if ext == 0 => (1, Op::Mov(imm(1)?)),
            0xC7 if ext == 0 => (wide, Op::Mov(sext(imm(imm_z)?, imm_z) & mask(wide))),
            0x86 => (1, Op::Xchg(reg)),
            0x87 => (wide, Op::Xchg(reg)),
            0x08 => (1, Op::Or(byte_reg(reg)?)),
            0x09 => (wide, Op::Or(reg_val(wide)?)),
            0x20 => (1, Op::And(byte_reg(reg)?)),
            0x21 => (wide, Op::And(reg_val(wide)?)),
            0x80 | 0x81 | 0x83 if ext == 1 || ext == 4 => {
                let (size, v) = match op {
                    0x80 => (1, imm(1)?),
                    0x81 => (wide, sext(imm(imm_z)?, imm_z) & mask(wide)),
                    _ => (wide, sext(imm(1)?, 1) & mask(wide)),
                };
                (size, if ext == 1 { Op::Or(v) } else { Op::And(v) })
            }
            _ => return None,
        }
    };
    if let Op::Xchg(r) | Op::Cmpxchg(r) = op
        && size == 1
        && rex == 0
        && (4..8).contains(&r)
    {
        return None;
    }
    if rip_relative {
        ea = ea.wrapping_add(regs.rip.wrapping_add(i as u64));
    }
    if addr32 {
        ea &= 0xFFFF_FFFF;
    }
    Some(Insn {
        len: i as u64,
        size,
        addr: ea,
        op,
    })
}

fn le32(bytes: &[u8], i: usize) -> Option<u32> {
    let b = bytes.get(i..i + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes `v` (of `size` bytes) into register `r` as the CPU would: a 4-byte write
/// zero-extends, a 1- or 2-byte one keeps the rest.
fn write_reg(regs: &mut Regs, r: u8, size: u8, v: u64) {
    let full = match size {
        8 => v,
        4 => v & 0xFFFF_FFFF,
        _ => (regs.gpr(r) & !mask(size)) | (v & mask(size)),
    };
    regs.set_gpr(r, full);
}

/// The parity flag of the low byte of `v`.
fn parity(v: u64) -> u64 {
    if (v & 0xFF).count_ones() % 2 == 0 {
        PF
    } else {
        0
    }
}

/// SF, ZF and PF of a `size`-byte result.
fn szp(v: u64, size: u8) -> u64 {
    let v = v & mask(size);
    let sign = 1u64 << (u32::from(size) * 8 - 1);
    (if v & sign != 0 { SF } else { 0 }) | (if v == 0 { ZF } else { 0 }) | parity(v)
}

/// Runs `insn` against the operand's old value `old` (`insn.size` bytes), updating
/// `regs` (flags, and the register of `xchg`/`cmpxchg`) but not RIP. Returns the value
/// to store, or `None` when nothing is stored (a `cmpxchg` whose comparison failed).
pub fn execute(insn: &Insn, old: u64, regs: &mut Regs) -> Option<u64> {
    let size = insn.size;
    let m = mask(size);
    let old = old & m;
    let set_flags = |regs: &mut Regs, f: u64, which: u64| {
        regs.rflags = (regs.rflags & !which) | (f & which);
    };
    match insn.op {
        Op::Mov(v) => Some(v & m),
        Op::Xchg(r) => {
            let v = regs.gpr(r) & m;
            write_reg(regs, r, size, old);
            Some(v)
        }
        Op::Cmpxchg(r) => {
            let acc = regs.rax & m;
            let diff = acc.wrapping_sub(old) & m;
            let sign = 1u64 << (u32::from(size) * 8 - 1);
            let mut f = szp(diff, size);
            if acc < old {
                f |= CF;
            }
            if (acc ^ old) & (acc ^ diff) & sign != 0 {
                f |= OF;
            }
            if (acc ^ old ^ diff) & 0x10 != 0 {
                f |= AF;
            }
            set_flags(regs, f, ARITH);
            if acc == old {
                Some(regs.gpr(r) & m)
            } else {
                write_reg(regs, 0, size, old);
                None
            }
        }
        Op::Or(v) | Op::And(v) => {
            let r = if matches!(insn.op, Op::Or(_)) {
                old | v
            } else {
                old & v
            } & m;
            set_flags(regs, szp(r, size), ARITH);
            Some(r)
        }
        Op::Bts(bit) | Op::Btr(bit) => {
            let b = 1u64 << bit;
            set_flags(regs, if old & b != 0 { CF } else { 0 }, CF);
            Some(if matches!(insn.op, Op::Bts(_)) {
                old | b
            } else {
                old & !b
            })
        }
    }
}

/// Where a `size`-byte store at `addr` lands in the 8-byte entry that holds it, and
/// whether Xen's `ptwr_emulated_update` takes it: naturally aligned and inside the
/// page of `cr2`. Returns (entry index in the page, bit offset in the entry).
pub fn placement(addr: u64, size: u8, cr2: u64) -> Option<(usize, u32)> {
    let size64 = u64::from(size);
    if (addr ^ cr2) & !0xFFF != 0 || addr % size64 != 0 {
        return None;
    }
    Some((
        usize::try_from((addr & 0xFFF) / 8).ok()?,
        u32::try_from((addr % 8) * 8).ok()?,
    ))
}

/// The whole entry after a `size`-byte store of `v` at bit `shift` of `full`.
pub fn merge(full: u64, v: u64, size: u8, shift: u32) -> u64 {
    let m = mask(size) << shift;
    (full & !m) | ((v << shift) & m)
}

#[cfg(test)]
mod tests;
