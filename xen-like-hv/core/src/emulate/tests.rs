//! The instructions a PV64 kernel expects to be emulated (digest §6.3, §6.7), driven
//! through `guest_exception` as the hypervisor's entry path does: #UD for the
//! forced-emulation prefix, #GP(0) for privileged instructions.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::testutil::*;
use crate::traps::{GP, Outcome, UD};
use hypercall_abi::vm_assist::VmAssistType;

const PREFIX_CPUID: [u8; 7] = [0x0F, 0x0B, 0x78, 0x65, 0x6E, 0x0F, 0xA2];

/// A kernel-mode world with #UD and #GP handlers and `code` at RIP.
fn kernel_with(code: &[u8]) -> World {
    let mut w = World::kernel();
    w.set_trap(UD, 0, false);
    w.set_trap(GP, 0, false);
    w.code(code);
    w
}

/// Asserts that `vector` was delivered for the instruction at `rip` (with `error` if
/// given) and no register other than the bounce's changed.
fn assert_delivered(w: &World, vector: u8, error: Option<u64>, rip: u64) {
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(
        w.regs.rip,
        handler(u64::from(vector)),
        "expected vector {vector}"
    );
    match error {
        Some(e) => assert_eq!(w.frame(4)[2..], [e, rip]),
        None => assert_eq!(w.frame(3)[2], rip),
    }
}

fn gp(w: &mut World) -> Outcome {
    w.exception(GP, 0, 0)
}

fn ud(w: &mut World) -> Outcome {
    w.exception(UD, 0, 0)
}

// ---------------------------------------------------------------------------------------
// Forced-emulation CPUID
// ---------------------------------------------------------------------------------------

#[test]
fn forced_cpuid_leaf_0x40000000_returns_the_xen_signature_and_skips_seven_bytes() {
    let mut w = kernel_with(&PREFIX_CPUID);
    w.regs.rax = 0xFFFF_FFFF_4000_0000; // only EAX selects the leaf
    w.regs.rcx = 0xFFFF_FFFF_0000_0000;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 7);
    assert_eq!(w.regs.rax, 0x4000_0005);
    let mut sig = std::vec::Vec::new();
    for r in [w.regs.rbx, w.regs.rcx, w.regs.rdx] {
        assert_eq!(r >> 32, 0, "32-bit results are zero-extended");
        sig.extend_from_slice(&(r as u32).to_le_bytes());
    }
    assert_eq!(sig, b"XenVMMXenVMM");
}

#[test]
fn forced_cpuid_leaf_0x40000001_reports_xen_4_17() {
    let mut w = kernel_with(&PREFIX_CPUID);
    w.regs.rax = 0x4000_0001;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x0004_0011);
}

#[test]
fn forced_cpuid_leaf_1_sets_the_hypervisor_bit_and_hides_vmx_and_monitor() {
    let mut w = kernel_with(&PREFIX_CPUID);
    w.p.cpuid.insert((0, 0), [1, 0, 0, 0]);
    w.p.cpuid
        .insert((1, 0), [0x000806EC, 0x0110_0800, 0x7FFA_FBBF, 0xBFEB_FBFF]);
    w.regs.rax = 1;
    w.regs.rcx = 0;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x000806EC);
    assert_eq!(w.regs.rbx, 0x0010_0800, "APIC ID 0");
    let ecx = w.regs.rcx;
    assert_ne!(ecx & 1 << 31, 0, "hypervisor");
    for b in [3, 5, 21, 26, 27] {
        assert_eq!(
            ecx & 1 << b,
            0,
            "MONITOR, VMX, X2APIC, XSAVE, OSXSAVE: bit {b}"
        );
    }
    let edx = w.regs.rdx;
    for b in [3, 13, 17] {
        assert_eq!(edx & 1 << b, 0, "PSE, PGE, PSE36: bit {b}");
    }
    assert_ne!(edx & 1 << 11, 0, "SEP is hidden only on AMD");
}

#[test]
fn forced_cpuid_passes_other_leaves_through_with_their_subleaf() {
    let mut w = kernel_with(&PREFIX_CPUID);
    w.p.cpuid.insert((0, 0), [7, 0, 0, 0]);
    w.p.cpuid.insert((7, 0), [1, 0, 0, 0]);
    // Leaf 7.1: EAX bits 10-12 (fast short REP MOV/STOS/CMPS) are PV features.
    w.p.cpuid.insert((7, 1), [0x1c00, 2, 3, 4]);
    w.regs.rax = 7;
    w.regs.rcx = 1;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(
        [w.regs.rax, w.regs.rbx, w.regs.rcx, w.regs.rdx],
        [0x1c00, 0, 0, 0]
    );
}

#[test]
fn forced_cpuid_works_from_user_mode_too() {
    let mut w = World::user();
    w.code(&PREFIX_CPUID);
    w.regs.rax = 0x4000_0000;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, URIP + 7);
    assert!(!w.vcpu.kernel_mode);
}

#[test]
fn forced_cpuid_spanning_a_page_boundary_is_emulated() {
    let mut w = World::kernel();
    w.regs.rip = KTEXT + 0x1000 - 3;
    w.code(&PREFIX_CPUID);
    w.regs.rax = 0x4000_0000;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KTEXT + 0x1000 + 4);
}

#[test]
fn forced_cpuid_ending_exactly_at_the_last_mapped_byte_is_emulated() {
    let mut w = World::kernel();
    w.regs.rip = KTEXT + 0x4000 - 7; // KTEXT + 0x4000 is unmapped
    w.code(&PREFIX_CPUID);
    w.regs.rax = 0x4000_0000;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x4000_0005);
}

#[test]
fn emulation_prefix_cut_off_by_an_unmapped_page_delivers_ud() {
    let mut w = World::kernel();
    w.set_trap(UD, 0, false);
    w.regs.rip = KTEXT + 0x4000 - 5;
    w.code(&PREFIX_CPUID[..5]);
    let rip = w.regs.rip;
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_delivered(&w, UD, None, rip);
}

#[test]
fn emulation_prefix_before_anything_but_cpuid_delivers_ud() {
    for next in [[0x90, 0x90], [0x0F, 0x31], [0x0F, 0xA3], [0xA2, 0x0F]] {
        let mut code = PREFIX_CPUID[..5].to_vec();
        code.extend_from_slice(&next);
        let mut w = kernel_with(&code);
        w.regs.rax = 0x4000_0000;
        assert_eq!(ud(&mut w), Outcome::Resume);
        assert_delivered(&w, UD, None, KRIP);
        assert_eq!(w.regs.rax, 0x4000_0000, "no register written");
    }
}

#[test]
fn plain_ud2_delivers_ud() {
    let mut w = kernel_with(&[0x0F, 0x0B, 0x90]);
    assert_eq!(ud(&mut w), Outcome::Resume);
    assert_delivered(&w, UD, None, KRIP);
}

// ---------------------------------------------------------------------------------------
// Control registers, clts
// ---------------------------------------------------------------------------------------

#[test]
fn mov_from_cr3_reads_the_kernel_root_shifted() {
    let mut w = kernel_with(&[0x0F, 0x20, 0xD8]); // mov %cr3,%rax
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, KROOT.0 << 12);
    assert_eq!(w.regs.rip, KRIP + 3);
}

#[test]
fn mov_from_cr3_with_rex_b_writes_r8() {
    let mut w = kernel_with(&[0x41, 0x0F, 0x20, 0xD8]); // mov %cr3,%r8
    let rax = w.regs.rax;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.r8, KROOT.0 << 12);
    assert_eq!(w.regs.rax, rax);
    assert_eq!(w.regs.rip, KRIP + 4);
}

#[test]
fn mov_from_cr3_into_each_register() {
    for n in 0..16u8 {
        let modrm = 0xD8 | (n & 7);
        let code: std::vec::Vec<u8> = if n >= 8 {
            std::vec![0x41, 0x0F, 0x20, modrm]
        } else {
            std::vec![0x0F, 0x20, modrm]
        };
        let mut w = kernel_with(&code);
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_eq!(w.regs.gpr(n), KROOT.0 << 12, "register {n}");
    }
}

#[test]
fn mov_from_cr0_shows_the_virtual_ts() {
    for (real_ts, virt_ts) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut w = kernel_with(&[0x0F, 0x20, 0xC0]); // mov %cr0,%rax
        w.p.cr0 = 0x8005_0033 | if real_ts { 8 } else { 0 };
        w.vcpu.fpu_ts = virt_ts;
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_eq!(w.regs.rax, 0x8005_0033 | if virt_ts { 8 } else { 0 });
    }
}

#[test]
fn mov_from_cr2_reads_the_virtual_cr2() {
    let mut w = kernel_with(&[0x0F, 0x20, 0xD1]); // mov %cr2,%rcx
    w.vcpu.cr2 = 0xDEAD_B000;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rcx, 0xDEAD_B000);
}

#[test]
fn mov_from_cr4_at_start_of_day_shows_only_the_visible_bits_of_the_real_cr4() {
    let mut w = kernel_with(&[0x0F, 0x20, 0xE0]); // mov %cr4,%rax
    // The real CR4: PAE, PGE, OSFXSR, OSXMMEXCPT, FSGSBASE, OSXSAVE, SMEP, and MCE.
    w.p.cr4 = 0x0015_06A0 | cr4::MCE;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(
        w.regs.rax,
        cr4::PAE | cr4::MCE | cr4::OSFXSR | cr4::OSXMMEXCPT,
        "FSGSBASE, OSXSAVE, PGE and SMEP of the real CR4 are not the guest's"
    );
    assert_eq!(w.regs.rip, KRIP + 3);
}

/// A CPUID with every feature the guest may control in its CR4: TSC, DE (leaf 1 EDX),
/// XSAVE (leaf 1 ECX), FSGSBASE (leaf 7 EBX), leaf 7 in range.
fn all_cr4_features(w: &mut World) {
    w.p.cpuid.insert((0, 0), [0xD, 0, 0, 0]);
    w.p.cpuid.insert((1, 0), [0, 0, 1 << 26, 1 << 4 | 1 << 2]);
    w.p.cpuid.insert((7, 0), [0, 1, 0, 0]);
}

#[test]
fn mov_to_cr4_takes_the_guest_controllable_bits_the_policy_allows_and_drops_the_rest() {
    let mut w = kernel_with(&[0x0F, 0x22, 0xE3]); // mov %rbx,%cr4
    all_cr4_features(&mut w);
    w.regs.rbx = u64::MAX;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 3, "never a #GP");
    let all = cr4::TSD | cr4::DE | cr4::FSGSBASE | cr4::OSXSAVE;
    assert_eq!(w.vcpu.cr4, all);

    w.regs.rip = KRIP;
    w.code(&[0x0F, 0x20, 0xE0]); // mov %cr4,%rax
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, all | (w.p.cr4 & cr4::VISIBLE_MASK));

    // Clearing them again; PAE and friends cannot be cleared (they are not the
    // guest's), and writing them does not fault either.
    w.regs.rip = KRIP;
    w.code(&[0x0F, 0x22, 0xE3]);
    w.regs.rbx = 0;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 3);
    assert_eq!(w.vcpu.cr4, 0);
}

#[test]
fn mov_to_cr4_drops_features_the_policy_lacks() {
    // No leaf 7 at all (max basic leaf 1): no FSGSBASE even if the leaf had it.
    let mut w = kernel_with(&[0x0F, 0x22, 0xE3]);
    all_cr4_features(&mut w);
    w.p.cpuid.insert((0, 0), [1, 0, 0, 0]);
    w.regs.rbx = cr4::FSGSBASE | cr4::TSD;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.vcpu.cr4, cr4::TSD);

    // Nothing in CPUID: nothing is taken.
    let mut w = kernel_with(&[0x0F, 0x22, 0xE3]);
    w.regs.rbx = cr4::GUEST_MASK | cr4::PAE;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 3);
    assert_eq!(w.vcpu.cr4, 0);
}

#[test]
fn mov_to_cr4_from_user_mode_delivers_gp() {
    let mut w = World::user();
    w.set_trap(GP, 0, false);
    all_cr4_features(&mut w);
    w.code(&[0x0F, 0x22, 0xE3]);
    w.regs.rbx = cr4::FSGSBASE;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), URIP);
    assert_eq!(w.vcpu.cr4, 0);
}

#[test]
fn fixup_guest_cr4_matches_a_bit_by_bit_reading_of_the_policy() {
    let mut w = World::kernel();
    for (leaf, reg, bit, cr4_bit) in [
        (1, 3, 1u32 << 4, cr4::TSD),
        (1, 3, 1 << 2, cr4::DE),
        (7, 1, 1, cr4::FSGSBASE),
    ] {
        w.p.cpuid.clear();
        w.p.cpuid.insert((0, 0), [7, 0, 0, 0]);
        let mut regs = [0u32; 4];
        regs[reg] = bit;
        w.p.cpuid.insert((leaf, 0), regs);
        assert_eq!(
            fixup_guest_cr4(&w.p, false, u64::MAX),
            cr4_bit,
            "leaf {leaf}"
        );
    }
}

#[test]
fn the_policy_shows_fsgsbase_when_the_host_has_it() {
    let mut w = World::kernel();
    w.p.cpuid.insert((0, 0), [7, 0, 0, 0]);
    w.p.cpuid.insert((7, 0), [0, 0xFFFF_FFFF, 0, 0]);
    let leaf7 = cpuid_policy(&w.p, &w.dom, &w.vcpu, crate::cpuid::Path::Forced, 7, 0);
    assert_ne!(leaf7[1] & CPUID7_EBX_FSGSBASE, 0);
}

// ---------------------------------------------------------------------------------------
// rdtsc / rdtscp (they fault only under the guest's CR4.TSD)
// ---------------------------------------------------------------------------------------

#[test]
fn rdtsc_in_kernel_mode_reads_the_tsc() {
    let mut w = kernel_with(&[0x0F, 0x31]);
    w.regs.rax = u64::MAX;
    w.regs.rdx = u64::MAX;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!(w.regs.rax, w.p.tsc & 0xFFFF_FFFF);
    assert_eq!(w.regs.rdx, w.p.tsc >> 32);
}

#[test]
fn rdtscp_in_kernel_mode_needs_it_in_the_policy() {
    let mut w = kernel_with(&[0x0F, 0x01, 0xF9]);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);

    let mut w = kernel_with(&[0x0F, 0x01, 0xF9]);
    w.p.cpuid.insert((0, 0), [1, 0, 0, 0]);
    w.p.cpuid.insert((1, 0), [0, 0, 0, 1 << 4]);
    w.p.cpuid.insert((0x8000_0000, 0), [0x8000_0008, 0, 0, 0]);
    w.p.cpuid.insert((0x8000_0001, 0), [0, 0, 0, 1 << 27]);
    w.regs.rcx = u64::MAX;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 3);
    assert_eq!((w.regs.rdx << 32) | w.regs.rax, w.p.tsc);
    assert_eq!(w.regs.rcx, 0, "TSC_AUX");
}

#[test]
fn mov_to_cr0_may_change_only_ts() {
    let mut w = kernel_with(&[0x0F, 0x22, 0xC0]); // mov %rax,%cr0
    w.regs.rax = 0x8005_0033 | 8;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert!(w.vcpu.fpu_ts);
    assert_eq!(w.regs.rip, KRIP + 3);

    let mut w = kernel_with(&[0x0F, 0x22, 0xC0]);
    w.regs.rax = 0x0005_0033; // PG cleared
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert!(!w.vcpu.fpu_ts);
}

#[test]
fn clts_clears_the_virtual_ts() {
    let mut w = kernel_with(&[0x0F, 0x06]);
    w.vcpu.fpu_ts = true;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert!(!w.vcpu.fpu_ts);
    assert_eq!(w.regs.rip, KRIP + 2);
}

#[test]
fn debug_register_moves_follow_set_and_get_debugreg() {
    let mut w = kernel_with(&[0x0F, 0x21, 0xF8]); // mov %dr7,%rax
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x400);

    let mut w = kernel_with(&[0x0F, 0x23, 0xC3]); // mov %rbx,%dr0
    w.regs.rbx = KTEXT;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.vcpu.debug.addr[0], KTEXT);

    let mut w = kernel_with(&[0x0F, 0x23, 0xC3]);
    w.regs.rbx = 0xFFFF_8000_0000_0000; // the hypervisor's
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert_eq!(w.vcpu.debug.addr[0], 0);
}

#[test]
fn debug_register_moves_raise_what_xen_raises() {
    // A debug register that does not exist (REX.R: %dr8) is #UD.
    let mut w = kernel_with(&[0x44, 0x0F, 0x23, 0xC3]); // mov %rbx,%dr8
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, UD, None, KRIP);
    let mut w = kernel_with(&[0x44, 0x0F, 0x21, 0xC0]); // mov %dr8,%rax
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, UD, None, KRIP);
    // DR7.GD and bits above 31: #GP(0), nothing changes.
    for value in [1 << 13, 1 << 32] {
        let mut w = kernel_with(&[0x0F, 0x23, 0xFB]); // mov %rbx,%dr7
        w.regs.rbx = value;
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_delivered(&w, GP, Some(0), KRIP);
        assert_eq!(w.vcpu.debug.dr7, 0x400);
    }
    // DR4/DR5 alias DR6/DR7 (CR4.DE is clear).
    let mut w = kernel_with(&[0x0F, 0x23, 0xE3]); // mov %rbx,%dr4
    w.regs.rbx = 0x4001;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_4FF1);
    assert_eq!(w.regs.rip, KRIP + 3);
}

#[test]
fn an_emulated_instruction_under_tf_is_followed_by_a_single_step_trap() {
    let mut w = kernel_with(&[0x0F, 0x06]); // clts
    w.set_trap(crate::traps::DB, 0, false);
    w.regs.rflags |= crate::regs::rflags::TF;
    let flags = w.regs.rflags;
    assert_eq!(gp(&mut w), Outcome::Resume);
    // #DB after the instruction: the frame's RIP is past it, RFLAGS still has TF.
    assert_delivered(&w, crate::traps::DB, None, KRIP + 2);
    assert_eq!(w.frame(5)[4], flags);
    assert_eq!(w.regs.rflags & crate::regs::rflags::TF, 0);
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_4FF0, "DR6.BS");

    // The forced-emulation CPUID too.
    let mut w = kernel_with(&PREFIX_CPUID);
    w.set_trap(crate::traps::DB, 0, false);
    w.regs.rflags |= crate::regs::rflags::TF;
    assert_eq!(w.exception(UD, 0, 0), Outcome::Resume);
    assert_delivered(&w, crate::traps::DB, None, KRIP + 7);

    // A faulting one is not stepped over.
    let mut w = kernel_with(&[0xF4]); // hlt
    w.set_trap(crate::traps::DB, 0, false);
    w.regs.rflags |= crate::regs::rflags::TF;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_0FF0);
}

// ---------------------------------------------------------------------------------------
// cli / sti under the virtual IOPL (§6.3)
// ---------------------------------------------------------------------------------------

#[test]
fn cli_and_sti_with_virtual_iopl_0_deliver_gp() {
    for op in [0xFA, 0xFB] {
        let mut w = kernel_with(&[op]);
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_delivered(&w, GP, Some(0), KRIP);
    }
}

#[test]
fn cli_and_sti_with_virtual_iopl_1_or_more_are_no_ops() {
    for iopl in 1..=3 {
        for (op, mask) in [(0xFA, 0), (0xFB, 1)] {
            let mut w = kernel_with(&[op]);
            w.vcpu.iopl = iopl;
            w.p.masks.insert(0, mask);
            assert_eq!(gp(&mut w), Outcome::Resume);
            assert_eq!(w.regs.rip, KRIP + 1, "iopl {iopl} op {op:#x}");
            assert_eq!(w.p.mask(0), mask, "the upcall mask is not touched");
        }
    }
}

#[test]
fn cli_with_architectural_iopl_counts_the_kernel_as_cpl_0() {
    let mut w = kernel_with(&[0xFA]);
    w.dom.vm_assist |= VmAssistType::ArchitecturalIopl.bit();
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 1);
}

// ---------------------------------------------------------------------------------------
// rdmsr / wrmsr
// ---------------------------------------------------------------------------------------

const MSR_FS_BASE: u64 = 0xC000_0100;
const MSR_GS_BASE: u64 = 0xC000_0101;
const MSR_SHADOW_GS_BASE: u64 = 0xC000_0102;

fn wrmsr(msr: u64, value: u64) -> World {
    let mut w = kernel_with(&[0x0F, 0x30]);
    w.regs.rcx = msr;
    w.regs.rax = 0xDEAD_BEEF_0000_0000 | (value & 0xFFFF_FFFF); // high half ignored
    w.regs.rdx = value >> 32;
    gp(&mut w);
    w
}

#[test]
fn wrmsr_fs_base_canonical_sets_it() {
    let w = wrmsr(MSR_FS_BASE, 0xFFFF_FFFF_8000_1000);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!(w.vcpu.fs_base, 0xFFFF_FFFF_8000_1000);
    assert_eq!(
        w.p.load_mode_calls.last().map(|c| c.2),
        Some(0xFFFF_FFFF_8000_1000)
    );
}

#[test]
fn wrmsr_gs_bases_set_the_kernel_and_user_bases() {
    let w = wrmsr(MSR_GS_BASE, 0x1000);
    assert_eq!((w.vcpu.gs_base_kernel, w.vcpu.gs_base_user), (0x1000, 0));
    let w = wrmsr(MSR_SHADOW_GS_BASE, 0x2000);
    assert_eq!((w.vcpu.gs_base_kernel, w.vcpu.gs_base_user), (0, 0x2000));
}

#[test]
fn wrmsr_of_a_non_canonical_base_delivers_gp() {
    for msr in [MSR_FS_BASE, MSR_GS_BASE, MSR_SHADOW_GS_BASE] {
        let w = wrmsr(msr, 0x0000_8000_0000_0000);
        assert_delivered(&w, GP, Some(0), KRIP);
        assert_eq!(
            (w.vcpu.fs_base, w.vcpu.gs_base_kernel, w.vcpu.gs_base_user),
            (0, 0, 0)
        );
    }
}

#[test]
fn wrmsr_of_an_unknown_msr_delivers_gp() {
    let w = wrmsr(0x1B, 0);
    assert_delivered(&w, GP, Some(0), KRIP);
}

#[test]
fn rdmsr_fs_base_splits_into_edx_eax() {
    let mut w = kernel_with(&[0x0F, 0x32]);
    w.vcpu.fs_base = 0xFFFF_FFFF_8000_1000;
    w.regs.rcx = MSR_FS_BASE;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!((w.regs.rdx, w.regs.rax), (0xFFFF_FFFF, 0x8000_1000));
    assert_eq!(w.regs.rip, KRIP + 2);
}

#[test]
fn rdmsr_gs_bases_and_efer() {
    let mut w = kernel_with(&[0x0F, 0x32]);
    w.vcpu.gs_base_user = 0x1234;
    w.regs.rcx = MSR_SHADOW_GS_BASE;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x1234);

    let mut w = kernel_with(&[0x0F, 0x32]);
    w.regs.rcx = 0xC000_0080;
    assert_eq!(gp(&mut w), Outcome::Resume);
    let lma_lme_sce = (1 << 10) | (1 << 8) | 1;
    assert_eq!(w.regs.rax & lma_lme_sce, lma_lme_sce);
}

#[test]
fn rdmsr_of_an_unknown_msr_delivers_gp() {
    let mut w = kernel_with(&[0x0F, 0x32]);
    w.regs.rcx = 0x1d9; // DEBUGCTL: no PV guest's
    let rax = w.regs.rax;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert_eq!(w.regs.rax, rax);
}

#[test]
fn rdmsr_and_wrmsr_answer_from_the_msr_policy() {
    // PAT reads Xen's and refuses every write; MCG_STATUS is the vCPU's.
    let mut w = kernel_with(&[0x0F, 0x32]);
    w.regs.rcx = 0x277;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!((w.regs.rdx << 32) | w.regs.rax, crate::msr::XEN_PAT);

    let mut w = kernel_with(&[0x0F, 0x30]);
    w.set_trap(GP, 0, false);
    w.regs.rcx = 0x277;
    w.regs.rax = 0x0007_0406;
    w.regs.rdx = 0x0000_0501;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);

    let mut w = kernel_with(&[0x0F, 0x30]);
    w.regs.rcx = 0x17a;
    w.regs.rax = 5;
    w.regs.rdx = 0;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!(w.vcpu.msrs.mcg_status, 5);
}

#[test]
fn rdmsr_without_a_gp_handler_reads_0_if_the_host_has_the_msr() {
    let mut w = World::kernel();
    w.code(&[0x0F, 0x32]);
    w.p.host_msrs.insert(0x1d9, 7);
    w.regs.rcx = 0x1d9;
    w.regs.rax = 1;
    w.regs.rdx = 1;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!((w.regs.rax, w.regs.rdx), (0, 0));
}

// ---------------------------------------------------------------------------------------
// What is not emulated
// ---------------------------------------------------------------------------------------

#[test]
fn hlt_delivers_gp() {
    let mut w = kernel_with(&[0xF4]);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
}

#[test]
fn unreadable_rip_delivers_gp() {
    let mut w = World::kernel();
    w.set_trap(GP, 0, false);
    w.regs.rip = 0x0000_0000_7000_0000;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), 0x0000_0000_7000_0000);
}

#[test]
fn instruction_cut_off_by_an_unmapped_page_delivers_gp() {
    let mut w = World::kernel();
    w.set_trap(GP, 0, false);
    w.regs.rip = KTEXT + 0x4000 - 1;
    w.code(&[0x0F]); // clts would be 0F 06
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KTEXT + 0x4000 - 1);
}

#[test]
fn privileged_instructions_from_user_mode_are_not_emulated() {
    let codes: [&[u8]; 12] = [
        &[0x0F, 0x06],       // clts
        &[0x0F, 0x20, 0xD8], // mov %cr3,%rax
        &[0x0F, 0x20, 0xE0], // mov %cr4,%rax
        &[0x0F, 0x22, 0xD8], // mov %rax,%cr3
        &[0x0F, 0x21, 0xF8], // mov %dr7,%rax
        &[0x0F, 0x23, 0xC3], // mov %rbx,%dr0
        &[0x0F, 0x32],       // rdmsr
        &[0x0F, 0x30],       // wrmsr
        &[0x0F, 0x09],       // wbinvd
        &[0xF4],             // hlt
        &[0x0F, 0x31],       // rdtsc (under CR4.TSD)
        &[0x0F, 0x01, 0xF9], // rdtscp
    ];
    for code in codes {
        let mut w = World::user();
        w.set_trap(GP, 0, false);
        w.vcpu.fpu_ts = true;
        w.vcpu.iopl = 3;
        w.code(code);
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_delivered(&w, GP, Some(0), URIP);
        assert!(w.vcpu.fpu_ts);
    }
}

#[test]
fn gp_with_a_non_zero_error_code_is_not_emulated() {
    let mut w = kernel_with(&[0x0F, 0x06]);
    w.vcpu.fpu_ts = true;
    assert_eq!(w.exception(GP, 0x18, 0), Outcome::Resume);
    assert_delivered(&w, GP, Some(0x18), KRIP);
    assert!(w.vcpu.fpu_ts);
}

#[test]
fn wbinvd_is_emulated_only_for_the_hardware_domain() {
    let mut w = World::dom0();
    w.code(&[0x0F, 0x09]);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 2);
    let mut w = kernel_with(&[0x0F, 0x09]);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
}

#[test]
fn cpuid_policy_is_consistent_with_forced_cpuid() {
    let w = World::kernel();
    let q = |l| cpuid_policy(&w.p, &w.dom, &w.vcpu, crate::cpuid::Path::Forced, l, 0);
    assert_eq!(q(0x4000_0002), [1, 0x4000_0000, 1, 0]);
    assert_eq!(q(0x4000_0010), [0; 4]);
}

// ---------------------------------------------------------------------------------------
// mov %reg, %cr3 = MMUEXT_NEW_BASEPTR
// ---------------------------------------------------------------------------------------

#[test]
fn mov_to_cr3_switches_to_a_valid_l4_like_new_baseptr() {
    use crate::mm::frame_table::{Owner, PageType};
    let mut w = kernel_with(&[0x0F, 0x22, 0xD8]); // mov %rax,%cr3
    let l4 = crate::mm::Mfn(77);
    let dom = w.dom.id;
    w.p.mm.ft.assign(l4, Owner::Domain(dom)).unwrap();
    w.regs.rax = l4.0 << 12;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 3, "emulated: RIP past the instruction");
    assert_eq!(w.vcpu.kernel_root, l4);
    let info = w.p.mm.ft.info(l4).unwrap();
    assert_eq!(info.page_type(), PageType::L4);
    assert!(
        info.type_count() >= 1,
        "the new base holds a type reference"
    );
}

#[test]
fn mov_to_cr3_with_a_frame_not_owned_gives_gp() {
    let mut w = kernel_with(&[0x0F, 0x22, 0xD8]); // mov %rax,%cr3
    w.regs.rax = 99 << 12; // never assigned to the domain
    let root = w.vcpu.kernel_root;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert_eq!(w.vcpu.kernel_root, root);
}

// ---------------------------------------------------------------------------------------
// Port I/O (crate::ioport)
// ---------------------------------------------------------------------------------------

/// dom0 (the hardware domain's ports) in kernel mode with virtual IOPL `iopl` and
/// `code` at RIP.
fn dom0_with(code: &[u8], iopl: u8) -> World {
    let mut w = World::dom0();
    w.set_trap(GP, 0, false);
    w.code(code);
    w.vcpu.iopl = iopl;
    w
}

#[test]
fn port_io_without_virtual_iopl_is_a_gp_for_the_guest() {
    let mut w = dom0_with(&[0xEC], 0); // in al, dx
    w.regs.rdx = 0x2FD;
    gp(&mut w);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert!(w.p.port_writes.is_empty());
}

#[test]
fn dom0_reaches_com2_with_iopl_1() {
    let mut w = dom0_with(&[0xEC], 1); // in al, dx
    w.regs.rdx = 0x2FD;
    w.regs.rax = 0x1111_2222_3333_4444;
    w.p.ports.insert(0x2FD, 0x60);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 1);
    assert_eq!(w.regs.rax, 0x1111_2222_3333_4460, "AL only");

    let mut w = dom0_with(&[0xEE], 1); // out dx, al
    w.regs.rdx = 0x2F8;
    w.regs.rax = 0xABCD;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.p.port_writes, vec![(0x2F8, 1, 0xCD)]);

    let mut w = dom0_with(&[0xE5, 0x80], 1); // in eax, 0x80
    w.regs.rax = u64::MAX;
    gp(&mut w);
    assert_eq!(w.regs.rax, 0x5A5A_5A5A, "a 32-bit read zero-extends");
    assert_eq!(w.regs.rip, KRIP + 2);
}

#[test]
fn the_hypervisors_ports_read_all_ones_and_drop_writes() {
    for (code, port) in [([0xEC], 0x3FD), ([0xEC], 0x21), ([0xEC], 0x70)] {
        let mut w = dom0_with(&code, 1);
        w.regs.rdx = port;
        w.regs.rax = 0;
        assert_eq!(gp(&mut w), Outcome::Resume, "port {port:#x}");
        assert_eq!(w.regs.rax, 0xFF, "port {port:#x}");
    }
    // out %al, $0xf4 would stop QEMU: dropped.
    let mut w = dom0_with(&[0xE6, 0xF4], 1);
    gp(&mut w);
    assert!(w.p.port_writes.is_empty());
    assert_eq!(w.regs.rip, KRIP + 2);
}

#[test]
fn a_domu_reaches_no_port_even_with_iopl() {
    let mut w = kernel_with(&[0x66, 0xED]); // in ax, dx
    w.vcpu.iopl = 1;
    w.regs.rdx = 0x2F8;
    w.regs.rax = 0x1234_0000;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rax, 0x1234_FFFF);
    let mut w = kernel_with(&[0xEE]);
    w.vcpu.iopl = 1;
    w.regs.rdx = 0x2F8;
    gp(&mut w);
    assert!(w.p.port_writes.is_empty());
}

// ---------------------------------------------------------------------------------------
// PCI configuration mechanism #1 (crate::pci): 0xCF8 latch, 0xCFC..0xCFF data
// ---------------------------------------------------------------------------------------

const IN_EAX_DX: [u8; 1] = [0xED];
const IN_AX_DX: [u8; 2] = [0x66, 0xED];
const IN_AL_DX: [u8; 1] = [0xEC];
const OUT_DX_EAX: [u8; 1] = [0xEF];
const OUT_DX_AX: [u8; 2] = [0x66, 0xEF];
const OUT_DX_AL: [u8; 1] = [0xEE];

/// Runs one port instruction in `w` with DX = `port` and RAX = `rax`; the new RAX.
fn port_insn(w: &mut World, code: &[u8], port: u16, rax: u64) -> u64 {
    w.regs.rip = KRIP;
    w.code(code);
    w.regs.rdx = u64::from(port);
    w.regs.rax = rax;
    assert_eq!(gp(w), Outcome::Resume);
    assert_eq!(
        w.regs.rip,
        KRIP + code.len() as u64,
        "emulated, not bounced"
    );
    w.regs.rax
}

/// The latch of 00:03.0 register `reg`.
fn nic(reg: u16) -> u32 {
    crate::pci::cf8_of(0, 3 << 3, reg)
}

#[test]
fn dom0_latches_cf8_and_reads_config_space_at_every_width() {
    let mut w = dom0_with(&[], 1);
    w.p.pci_space.insert(nic(0), 0x1000_1AF4);
    w.p.pci_space.insert(nic(8), 0x0200_0000);
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(0)));
    assert_eq!(w.dom.pci_cf8, nic(0));
    assert!(w.p.port_writes.is_empty(), "the latch never reaches 0xCF8");
    assert_eq!(
        port_insn(&mut w, &IN_EAX_DX, 0xCF8, u64::MAX),
        u64::from(nic(0))
    );
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFC, u64::MAX), 0x1000_1AF4);
    assert_eq!(port_insn(&mut w, &IN_AX_DX, 0xCFC, 0), 0x1AF4);
    assert_eq!(
        port_insn(&mut w, &IN_AX_DX, 0xCFE, 0xAAAA_0000),
        0xAAAA_1000
    );
    assert_eq!(port_insn(&mut w, &IN_AL_DX, 0xCFF, 0), 0x10);
    assert_eq!(port_insn(&mut w, &IN_AL_DX, 0xCFD, 0), 0x1A);
    // A dword at 0xCFD: 2 bytes (0xCFD..0xCFE), 1 (0xCFF), then 0xD00, which is not
    // configuration space: all ones, as Xen's loop gives.
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFD, 0), 0xFF10_001A);
    // Another register.
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(8)));
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFC, 0), 0x0200_0000);
    // Nothing there: all ones.
    port_insn(
        &mut w,
        &OUT_DX_EAX,
        0xCF8,
        u64::from(crate::pci::cf8_of(0, 9 << 3, 0)),
    );
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFC, 0), 0xFFFF_FFFF);
    assert!(w.p.port_writes.is_empty());
}

#[test]
fn dom0_writes_config_space_in_pieces() {
    let mut w = dom0_with(&[], 1);
    w.p.pci_space.insert(nic(4), 0);
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(4)));
    port_insn(&mut w, &OUT_DX_AX, 0xCFC, 0xFFFF_0007);
    port_insn(&mut w, &OUT_DX_AL, 0xCFE, 0x1234_5678);
    port_insn(&mut w, &OUT_DX_EAX, 0xCFC + 3, 0xAABB_CCDD);
    assert_eq!(
        w.p.pci_writes,
        vec![
            (nic(4), 0, 2, 0x0007),
            (nic(4), 2, 1, 0x78),
            (nic(4), 3, 1, 0xDD),
        ]
    );
    assert_eq!(w.p.pci_space[&nic(4)], 0xDD78_0007);
    assert!(w.p.port_writes.is_empty(), "0xD00.. took nothing either");
}

#[test]
fn byte_and_word_accesses_to_cf8_go_to_the_hardware_as_on_xen() {
    // dom0 holds 0xCF8..0xCFB: only the 32-bit access is the latch (0xCF9 is the
    // reset control register on many chipsets).
    let mut w = dom0_with(&[], 1);
    port_insn(&mut w, &OUT_DX_AL, 0xCF9, 0x06);
    assert_eq!(w.p.port_writes, vec![(0xCF9, 1, 0x06)]);
    assert_eq!(w.dom.pci_cf8, 0);
}

#[test]
fn writes_the_hypervisor_owns_are_dropped_and_reads_still_pass() {
    let mut w = dom0_with(&[], 1);
    let sbdf = crate::pci::Sbdf::from_bdf(3 << 3);
    w.p.pci_space.insert(nic(0x50), 0x0080_7005);
    assert!(w.p.pci.protect(sbdf, 0x50, 0x5F));
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(0x50)));
    port_insn(&mut w, &OUT_DX_AX, 0xCFE, 0);
    assert!(w.p.pci_writes.is_empty());
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFC, 0), 0x0080_7005);
    // A read-only device (Xen's pci_ro_map) takes no write at all.
    let mut w = dom0_with(&[], 1);
    w.p.pci_space.insert(nic(4), 0);
    assert!(w.p.pci.set_read_only(sbdf));
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(4)));
    port_insn(&mut w, &OUT_DX_EAX, 0xCFC, 7);
    assert!(w.p.pci_writes.is_empty());
}

#[test]
fn a_domu_keeps_its_own_latch_but_reaches_no_config_space() {
    // As on Xen: with I/O privilege the latch is emulated for every domain, but only
    // the hardware domain's data accesses reach the devices.
    let mut w = kernel_with(&[]);
    w.vcpu.iopl = 1;
    w.p.pci_space.insert(nic(0), 0x1000_1AF4);
    port_insn(&mut w, &OUT_DX_EAX, 0xCF8, u64::from(nic(0)));
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCF8, 0), u64::from(nic(0)));
    assert_eq!(port_insn(&mut w, &IN_EAX_DX, 0xCFC, 0), 0xFFFF_FFFF);
    port_insn(&mut w, &OUT_DX_EAX, 0xCFC, 0);
    assert!(w.p.pci_writes.is_empty() && w.p.port_writes.is_empty());
    // Without I/O privilege it is the #GP.
    let mut w = kernel_with(&OUT_DX_EAX);
    w.regs.rdx = 0xCF8;
    gp(&mut w);
    assert_delivered(&w, GP, Some(0), KRIP);
    assert_eq!(w.dom.pci_cf8, 0);
}

// ---------------------------------------------------------------------------------------
// Guest user mode: cli, sti and port I/O under the virtual IOPL (user mode is CPL 3)
// ---------------------------------------------------------------------------------------

/// dom0 in virtual user mode with virtual IOPL `iopl` and `code` at RIP.
fn dom0_user_with(code: &[u8], iopl: u8) -> World {
    let mut w = World::user();
    w.dom = World::dom0().dom;
    w.set_trap(GP, 0, false);
    w.code(code);
    w.vcpu.iopl = iopl;
    w
}

#[test]
fn user_mode_cli_and_sti_need_virtual_iopl_3() {
    for iopl in 0..=3 {
        for arch in [false, true] {
            for op in [0xFA, 0xFB] {
                let mut w = dom0_user_with(&[op], iopl);
                if arch {
                    w.dom.vm_assist |= VmAssistType::ArchitecturalIopl.bit();
                }
                w.p.masks.insert(0, 0);
                assert_eq!(gp(&mut w), Outcome::Resume);
                if iopl == 3 {
                    assert_eq!(w.regs.rip, URIP + 1, "iopl 3 op {op:#x} arch {arch}");
                    assert!(!w.vcpu.kernel_mode, "still in user mode");
                    assert_eq!(w.p.mask(0), 0, "the upcall mask is not touched");
                } else {
                    assert_delivered(&w, GP, Some(0), URIP);
                    assert!(w.vcpu.kernel_mode, "bounced to the kernel");
                }
            }
        }
    }
}

#[test]
fn user_mode_port_io_with_virtual_iopl_3_reaches_the_domains_ports() {
    let mut w = dom0_user_with(&[0x66, 0xEF], 3); // out %ax,(%dx)
    w.regs.rdx = 0x510;
    w.regs.rax = 0x1234_0000;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, URIP + 2);
    assert_eq!(w.p.port_writes, vec![(0x510, 2, 0)]);
    assert!(!w.vcpu.kernel_mode);

    let mut w = dom0_user_with(&[0xE4, 0x80], 3); // in $0x80,%al
    w.regs.rax = 0x1111_2222_3333_4444;
    w.p.ports.insert(0x80, 0x51);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, URIP + 2);
    assert_eq!(w.regs.rax, 0x1111_2222_3333_4451);
}

#[test]
fn user_mode_port_io_below_virtual_iopl_3_delivers_gp() {
    for iopl in 0..=2 {
        for arch in [false, true] {
            let mut w = dom0_user_with(&[0xEE], iopl); // out %al,(%dx)
            if arch {
                w.dom.vm_assist |= VmAssistType::ArchitecturalIopl.bit();
            }
            w.regs.rdx = 0x80;
            assert_eq!(gp(&mut w), Outcome::Resume);
            assert_delivered(&w, GP, Some(0), URIP);
            assert!(w.p.port_writes.is_empty(), "iopl {iopl}");
        }
    }
}

#[test]
fn user_mode_port_io_still_respects_the_domains_ports() {
    // A domU has no ports: with IOPL 3 the read is emulated as all ones, the write
    // dropped.
    let mut w = World::user();
    w.set_trap(GP, 0, false);
    w.vcpu.iopl = 3;
    w.code(&[0xEC]); // in (%dx),%al
    w.regs.rdx = 0x80;
    w.regs.rax = 0;
    w.p.ports.insert(0x80, 0x51);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_eq!(w.regs.rip, URIP + 1);
    assert_eq!(w.regs.rax, 0xFF);
    // dom0 user mode cannot reach the hypervisor's COM1 either.
    let mut w = dom0_user_with(&[0xEE], 3);
    w.regs.rdx = 0x3F8;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert!(w.p.port_writes.is_empty());
    assert_eq!(w.regs.rip, URIP + 1);
}

#[test]
fn privileged_instructions_from_dom0_user_mode_with_iopl_3_are_not_emulated() {
    // wbinvd is a no-op for dom0's kernel, and IOPL 3 changes nothing for it.
    for code in [&[0x0F, 0x09][..], &[0x0F, 0x20, 0xE0], &[0xF4]] {
        let mut w = dom0_user_with(code, 3);
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_delivered(&w, GP, Some(0), URIP);
    }
}

#[test]
fn iopl_ok_follows_xen_for_every_mode_and_level() {
    let mut w = World::kernel();
    for iopl in 0..=3u8 {
        for arch in [false, true] {
            for kernel in [false, true] {
                w.vcpu.iopl = iopl;
                w.vcpu.kernel_mode = kernel;
                w.dom.vm_assist = if arch {
                    VmAssistType::ArchitecturalIopl.bit()
                } else {
                    0
                };
                let cpl = match (kernel, arch) {
                    (false, _) => 3,
                    (true, true) => 0,
                    (true, false) => 1,
                };
                assert_eq!(iopl_ok(&w.dom, &w.vcpu), iopl >= cpl);
            }
        }
    }
}

/// Under CPUID faulting a plain `cpuid` #GPs in kernel and user mode alike and is
/// answered from the policy (Xen's faulted path: dom0's kernel also sees MONITOR);
/// a guest that turned faulting on for itself gets the #GP.
#[test]
fn faulted_cpuid_is_answered_from_the_policy_in_both_modes() {
    for user in [false, true] {
        let mut w = if user { World::user() } else { World::dom0() };
        w.set_trap(GP, 0, false);
        w.p.cpuid.insert((0, 0), [1, 0, 0, 0]);
        w.p.cpuid.insert((1, 0), [0, 0, 1 << 3, 0]);
        w.code(&[0x0F, 0xA2]);
        let rip = w.regs.rip;
        w.regs.rax = 1;
        w.regs.rcx = 0;
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_eq!(w.regs.rip, rip + 2);
        assert_ne!(w.regs.rcx & 1 << 31, 0, "hypervisor bit");
        assert_eq!(
            w.regs.rcx & 1 << 3 != 0,
            !user,
            "MONITOR for dom0's kernel only"
        );
    }
    let mut w = World::kernel();
    w.set_trap(GP, 0, false);
    w.vcpu.msrs.misc_features_enables = 1;
    w.code(&[0x0F, 0xA2]);
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), KRIP);
}

#[test]
fn mov_store_lengths() {
    // mov %rsi,(%rdi); mov %eax,0x10(%rbx); mov %al,(%rcx); movl $1,(%rax);
    // movw $1,0x12345678(%rax,%rbx,4); movq $0,%fs:0x10(%rip); mov %ax,(%rsp)
    for (code, want) in [
        (&[0x48u8, 0x89, 0x37][..], Some((3, 8))),
        (&[0x89, 0x43, 0x10][..], Some((3, 4))),
        (&[0x88, 0x01][..], Some((2, 1))),
        (&[0xC7, 0x00, 1, 0, 0, 0][..], Some((6, 4))),
        (
            &[0x66, 0xC7, 0x84, 0x98, 0x78, 0x56, 0x34, 0x12, 1, 0][..],
            Some((10, 2)),
        ),
        (
            &[0x64, 0x48, 0xC7, 0x05, 0x10, 0, 0, 0, 0, 0, 0, 0][..],
            Some((12, 8)),
        ),
        (&[0x66, 0x89, 0x04, 0x24][..], Some((4, 2))),
        (&[0xC6, 0x04, 0x25, 0, 0x10, 0, 0, 7][..], Some((8, 1))),
        // Not plain stores: a load, an add to memory, a register move, C7 /1,
        // rep stos, and a truncated instruction.
        (&[0x48, 0x8B, 0x37][..], None),
        (&[0x01, 0x37][..], None),
        (&[0x89, 0xC0][..], None),
        (&[0xC7, 0x08, 1, 0, 0, 0][..], None),
        (&[0xF3, 0xAB][..], None),
        (&[0xC7, 0x00, 1, 0][..], None),
    ] {
        assert_eq!(mov_store(code), want, "{code:02x?}");
    }
}

// ---------------------------------------------------------------------------------------
// xsetbv
// ---------------------------------------------------------------------------------------

const XSETBV: [u8; 3] = [0x0F, 0x01, 0xD1];

/// A kernel with XSAVE in its policy and CR4.OSXSAVE set, about to `xsetbv` `value`
/// to XCR `index`.
fn xsetbv_world(index: u64, value: u64) -> World {
    let mut w = kernel_with(&XSETBV);
    all_cr4_features(&mut w);
    w.vcpu.cr4 = cr4::OSXSAVE;
    w.regs.rcx = index | 0xdead_0000_0000;
    w.regs.rax = (value & 0xFFFF_FFFF) | 0xFFFF_FFFF_0000_0000;
    w.regs.rdx = value >> 32;
    w
}

#[test]
fn xsetbv_of_a_valid_xcr0_is_loaded_and_kept_per_vcpu() {
    for value in [0x3, 0x7, 0x1] {
        let mut w = xsetbv_world(0, value);
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_eq!(w.regs.rip, KRIP + 3);
        assert_eq!((w.vcpu.xcr0, w.p.xcr0), (value, value));
    }
}

#[test]
fn xsetbv_of_what_xen_refuses_is_a_gp() {
    // YMM without SSE, no x87, MPX (not in this host's mask), XCR1, PKRU.
    for (index, value) in [(0, 0x5), (0, 0x2), (0, 0x1b), (1, 0x3), (0, 0x203)] {
        let mut w = xsetbv_world(index, value);
        w.p.xfeature_mask = 0x207;
        assert_eq!(gp(&mut w), Outcome::Resume);
        assert_delivered(&w, GP, Some(0), KRIP);
        assert_eq!((w.vcpu.xcr0, w.p.xcr0), (0, 0), "{index} {value:#x}");
    }
}

#[test]
fn xsetbv_without_cr4_osxsave_is_a_ud_and_from_user_mode_a_gp() {
    let mut w = xsetbv_world(0, 0x7);
    w.vcpu.cr4 = 0;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, UD, None, KRIP);
    assert_eq!(w.vcpu.xcr0, 0);

    let mut w = World::user();
    w.set_trap(GP, 0, false);
    all_cr4_features(&mut w);
    w.vcpu.cr4 = cr4::OSXSAVE;
    w.code(&XSETBV);
    w.regs.rax = 0x7;
    assert_eq!(gp(&mut w), Outcome::Resume);
    assert_delivered(&w, GP, Some(0), URIP);
    assert_eq!(w.vcpu.xcr0, 0);
}

// ---------------------------------------------------------------------------------------
// Stores to read-only MMIO: MMCONFIG (Xen's `mmcfg_intercept_write`)
// ---------------------------------------------------------------------------------------

#[test]
fn mov_store_values() {
    let r = crate::regs::Regs {
        rsi: 0x1122_3344_5566_7788,
        rax: 0xAABB_CCDD,
        rcx: 0x1234,
        r9: 0xFEDC_BA98_7654_3210,
        ..Default::default()
    };
    for (code, want) in [
        (&[0x48u8, 0x89, 0x37][..], 0x1122_3344_5566_7788u64), // mov %rsi,(%rdi)
        (&[0x89, 0x30][..], 0x5566_7788),                      // mov %esi,(%rax)
        (&[0x66, 0x89, 0x08][..], 0x1234),                     // mov %cx,(%rax)
        (&[0x88, 0x08][..], 0x34),                             // mov %cl,(%rax)
        (&[0x88, 0x28][..], 0x12),                             // mov %ch,(%rax)
        (&[0x40, 0x88, 0x30][..], 0x88),                       // mov %sil,(%rax)
        (&[0x44, 0x89, 0x08][..], 0x7654_3210),                // mov %r9d,(%rax)
        (&[0xC7, 0x00, 0x78, 0x56, 0x34, 0x12][..], 0x1234_5678), // movl $..,(%rax)
        (&[0x66, 0xC7, 0x00, 0x34, 0x12][..], 0x1234),         // movw $..,(%rax)
        (&[0xC6, 0x40, 0x10, 0x5A][..], 0x5A),                 // movb $..,0x10(%rax)
        (&[0x48, 0xC7, 0x00, 0xFF, 0xFF, 0xFF, 0xFF][..], u64::MAX), // movq $-1
    ] {
        assert_eq!(mov_store_value(code, &r), Some(want), "{code:02x?}");
    }
    assert_eq!(mov_store_value(&[0x01, 0x37], &r), None);
}

/// dom0 with an MMCONFIG region at 0xB0000000 (buses 0-255) in use, and the
/// function 00:03.0 reported with its MSI-X capability at 0x98.
fn dom0_with_ecam(code: &[u8]) -> World {
    let mut w = World::dom0();
    w.set_trap(14, 0, false);
    w.code(code);
    assert!(w.p.pci.add_mcfg(crate::mcfg::McfgRegion {
        base: 0xB000_0000,
        segment: 0,
        start_bus: 0,
        end_bus: 0xFF,
    }));
    w.p.pci
        .add_device(crate::pci::PciDevice {
            sbdf: crate::pci::Sbdf {
                seg: 0,
                bus: 0,
                devfn: 3 << 3,
            },
            is_extfn: false,
            physfn: None,
            msi: crate::msi::DevMsi {
                msix_pos: Some(0x98),
                msi_masked: None,
            },
        })
        .unwrap();
    w
}

/// 00:03.0's ECAM frame.
const ECAM_FN3: u64 = (0xB000_0000 + (3 << 15)) >> 12;

#[test]
fn an_ecam_store_goes_through_the_filter_and_the_hypervisor() {
    // mov %eax,(%rdi): the command register (0x04) of 00:03.0 through ECAM
    let mut w = dom0_with_ecam(&[0x89, 0x07]);
    w.regs.rax = 0x0000_0107;
    let va = 0x4000_0004;
    let r = w.run(|c| mmio_ro_store(c, va, ECAM_FN3)).0;
    assert_eq!(r, Emulation::Done);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!(w.p.mmcfg_writes, [(0xB001_8004, 4, 0x107)]);
    // an extended register (0x104), 2 bytes: through as well
    let mut w = dom0_with_ecam(&[0x66, 0x89, 0x07]);
    w.regs.rax = 0xBEEF;
    let r = w.run(|c| mmio_ro_store(c, 0x4000_0104, ECAM_FN3)).0;
    assert_eq!(r, Emulation::Done);
    assert_eq!(w.p.mmcfg_writes, [(0xB001_8104, 2, 0xBEEF)]);
}

#[test]
fn an_ecam_store_the_filter_refuses_is_dropped() {
    // a dword over the MSI-X capability's header: dropped, RIP moves on
    let mut w = dom0_with_ecam(&[0x89, 0x07]);
    let r = w.run(|c| mmio_ro_store(c, 0x4000_0098, ECAM_FN3)).0;
    assert_eq!(r, Emulation::Done);
    assert_eq!(w.regs.rip, KRIP + 2);
    assert!(w.p.mmcfg_writes.is_empty());
    // an 8-byte store: not taken (Xen: at most 4 bytes), the #PF stays
    let mut w = dom0_with_ecam(&[0x48, 0x89, 0x07]);
    let r = w.run(|c| mmio_ro_store(c, 0x4000_0008, ECAM_FN3)).0;
    assert_eq!(r, Emulation::NotEmulated);
    // a frame outside every MMCONFIG region (the HPET): dropped, as before
    let mut w = dom0_with_ecam(&[0x89, 0x07]);
    let r = w.run(|c| mmio_ro_store(c, 0x4000_0000, 0xFED00)).0;
    assert_eq!(r, Emulation::Done);
    assert!(w.p.mmcfg_writes.is_empty());
    // a region dom0 said is not reserved: the hypervisor does not write there
    let mut w = dom0_with_ecam(&[0x89, 0x07]);
    w.p.pci.mmcfg_reserved(0xB000_0000, 0, 0, 0xFF, 0).unwrap();
    let r = w.run(|c| mmio_ro_store(c, 0x4000_0004, ECAM_FN3)).0;
    assert_eq!(r, Emulation::Done);
    assert!(w.p.mmcfg_writes.is_empty());
}
