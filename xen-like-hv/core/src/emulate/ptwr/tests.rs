use super::*;

fn regs() -> Regs {
    Regs {
        rax: 0x1111,
        rcx: 0x2000,
        rdx: 0x8000_0000_0000_0067,
        rsi: 0x0000_0000_1234_5067,
        rdi: 0xFFFF_8800_0001_0008,
        r9: 3,
        rip: 0x40_0000,
        rflags: 0x202,
        ..Regs::default()
    }
}

#[test]
fn decodes_what_linux_writes_ptes_with() {
    let r = regs();
    // mov %rsi,(%rdi)
    let i = decode(&[0x48, 0x89, 0x37], &r).unwrap();
    assert_eq!((i.len, i.size, i.addr, i.op), (3, 8, r.rdi, Op::Mov(r.rsi)));
    // xchg %rax,(%rdi)
    let i = decode(&[0x48, 0x87, 0x07], &r).unwrap();
    assert_eq!((i.len, i.size, i.op), (3, 8, Op::Xchg(0)));
    // lock cmpxchg %rdx,0x8(%rdi)
    let i = decode(&[0xF0, 0x48, 0x0F, 0xB1, 0x57, 0x08], &r).unwrap();
    assert_eq!(
        (i.len, i.size, i.addr, i.op),
        (6, 8, r.rdi + 8, Op::Cmpxchg(2))
    );
    // lock btrq $5,(%rdi)
    let i = decode(&[0xF0, 0x48, 0x0F, 0xBA, 0x37, 0x05], &r).unwrap();
    assert_eq!((i.len, i.op), (6, Op::Btr(5)));
    // lock andb $0xdf,(%rdi)  (clear_bit of a constant bit)
    let i = decode(&[0xF0, 0x80, 0x27, 0xDF], &r).unwrap();
    assert_eq!((i.len, i.size, i.op), (4, 1, Op::And(0xDF)));
    // orq $-0x80,(%rdi,%r9,8) : SIB with an index (REX.X)
    let i = decode(&[0x4A, 0x83, 0x0C, 0xCF, 0x80], &r).unwrap();
    assert_eq!(
        (i.len, i.addr, i.op),
        (5, r.rdi + 3 * 8, Op::Or(0xFFFF_FFFF_FFFF_FF80))
    );
    // movq $0x67,0x10(%rcx) : imm32 sign-extended
    let i = decode(&[0x48, 0xC7, 0x41, 0x10, 0x67, 0, 0, 0], &r).unwrap();
    assert_eq!((i.len, i.addr, i.op), (8, 0x2010, Op::Mov(0x67)));
    // mov %esi,0x100(%rip): RIP-relative from the next instruction
    let i = decode(&[0x89, 0x35, 0x00, 0x01, 0, 0], &r).unwrap();
    assert_eq!((i.size, i.addr), (4, r.rip + 6 + 0x100));
}

#[test]
fn refuses_what_it_does_not_take() {
    let r = regs();
    // A load, a register destination, %gs:, a string store, a high-byte register.
    for b in [
        &[0x48, 0x8B, 0x37][..],
        &[0x48, 0x89, 0xF7],
        &[0x65, 0x48, 0x89, 0x37],
        &[0xF3, 0x48, 0xAB],
        &[0x88, 0x27],
        &[0x48, 0x01, 0x37],
        &[0x48, 0x89],
    ] {
        assert_eq!(decode(b, &r), None, "{b:02x?}");
    }
}

#[test]
fn bit_offsets_in_a_register_reach_other_operands() {
    let mut r = regs();
    r.rcx = 64 + 3;
    // bts %rcx,(%rdi)
    let i = decode(&[0x48, 0x0F, 0xAB, 0x0F], &r).unwrap();
    assert_eq!((i.addr, i.op), (r.rdi + 8, Op::Bts(3)));
    r.rcx = u64::MAX;
    let i = decode(&[0x48, 0x0F, 0xB3, 0x0F], &r).unwrap();
    assert_eq!((i.addr, i.op), (r.rdi - 8, Op::Btr(63)));
}

#[test]
fn executes_with_the_cpus_flags_and_registers() {
    let mut r = regs();
    let insn = |op, size| Insn {
        len: 3,
        size,
        addr: 0,
        op,
    };
    // xchg: the register gets the old entry.
    r.rax = 0xAAAA;
    assert_eq!(execute(&insn(Op::Xchg(0), 8), 0x5067, &mut r), Some(0xAAAA));
    assert_eq!(r.rax, 0x5067);
    // cmpxchg that matches: store, ZF set.
    r.rax = 0x5067;
    assert_eq!(
        execute(&insn(Op::Cmpxchg(2), 8), 0x5067, &mut r),
        Some(r.rdx)
    );
    assert_ne!(r.rflags & ZF, 0);
    // cmpxchg that fails: nothing stored, accumulator loaded, ZF clear, CF as cmp.
    r.rax = 0x1000;
    assert_eq!(execute(&insn(Op::Cmpxchg(2), 8), 0x5067, &mut r), None);
    assert_eq!(r.rax, 0x5067);
    assert_eq!(r.rflags & (ZF | CF), CF);
    // A 4-byte cmpxchg failure zero-extends into RAX.
    r.rax = u64::MAX;
    assert_eq!(execute(&insn(Op::Cmpxchg(2), 4), 0x10, &mut r), None);
    assert_eq!(r.rax, 0x10);
    // and/or: CF and OF clear, ZF/SF/PF from the result.
    r.rflags |= CF | OF;
    assert_eq!(execute(&insn(Op::And(0), 8), 0x67, &mut r), Some(0));
    assert_eq!(r.rflags & ARITH, ZF | PF);
    assert_eq!(execute(&insn(Op::Or(0x80), 1), 0x01, &mut r), Some(0x81));
    assert_eq!(r.rflags & ARITH, SF | PF);
    // bts/btr: CF is the old bit, others untouched.
    let before = r.rflags & !CF;
    assert_eq!(execute(&insn(Op::Btr(5), 8), 0x67, &mut r), Some(0x47));
    assert_eq!(r.rflags, before | CF);
    assert_eq!(
        execute(&insn(Op::Bts(63), 8), 0x67, &mut r),
        Some(0x8000_0000_0000_0067)
    );
    assert_eq!(r.rflags, before);
}

#[test]
fn placement_follows_xens_rules() {
    let cr2 = 0xFFFF_8800_0001_0008;
    assert_eq!(placement(cr2, 8, cr2), Some((1, 0)));
    assert_eq!(placement(cr2 + 4, 4, cr2), Some((1, 32)));
    assert_eq!(placement(cr2 + 1, 1, cr2), Some((1, 8)));
    assert_eq!(placement(cr2 + 2, 4, cr2), None, "misaligned");
    assert_eq!(placement(cr2 + 0x1000, 8, cr2), None, "another page");
    assert_eq!(
        merge(0x1111_2222_3333_4444, 0xAB, 1, 8),
        0x1111_2222_3333_AB44
    );
    assert_eq!(
        merge(0x1111_2222_3333_4444, 0xFFFF_FFFF, 4, 32),
        0xFFFF_FFFF_3333_4444
    );
    assert_eq!(merge(5, 7, 8, 0), 7);
}

proptest::proptest! {
    /// Whatever the bytes, decoding never panics, and what it takes has a sane shape.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
        if let Some(i) = decode(&bytes, &regs()) {
            proptest::prop_assert!(usize::try_from(i.len).unwrap() <= bytes.len());
            proptest::prop_assert!(matches!(i.size, 1 | 2 | 4 | 8));
        }
    }
}
