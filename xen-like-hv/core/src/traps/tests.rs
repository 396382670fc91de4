//! Bounce frames, exception delivery, `int n` / `int $0x80` and user-mode SYSCALL
//! (digest §6.1-§6.4), against the Xen behaviour the digest describes.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::regs::SYSCALL_VECTOR;
use crate::testutil::*;
use crate::vcpu::Callback;
use hypercall_abi::xen::arch::{BOUNCE_SAVED_MASK_SHIFT, exception_has_error_code};
use hypercall_abi::xen::{FLAT_USER_CS, FLAT_USER_SS, TrapInfo};
use proptest::prelude::*;

const KCS0: u64 = FLAT_KERNEL_CS as u64 & !3; // 0xE030: kernel-mode CS as the frame shows it
const UCS: u64 = FLAT_USER_CS as u64; // 0xE033
const SS: u64 = FLAT_KERNEL_SS as u64; // 0xE02B
const FRAME: u64 = 7 * 8;
const FRAME_ERR: u64 = 8 * 8;
const H: u64 = 0xFFFF_FFFF_8100_0800;

fn bounce(
    w: &mut World,
    error: Option<u64>,
    mask: bool,
    clear_df: bool,
) -> Result<(), CrashReason> {
    w.run(|c| c.bounce(H, error, mask, clear_df)).0
}

// ---------------------------------------------------------------------------------------
// The bounce frame (§6.4)
// ---------------------------------------------------------------------------------------

#[test]
fn bounce_from_kernel_without_error_code_pushes_rcx_r11_rip_cs_rflags_rsp_ss() {
    let mut w = World::kernel();
    w.regs.rsp = KSTACK_TOP - 0x200;
    let before = w.regs;
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.regs.rsp, before.rsp - FRAME);
    assert_eq!(
        w.frame(7),
        [
            before.rcx,
            before.r11,
            before.rip,
            KCS0,
            rflags::IF | rflags::FIXED,
            before.rsp,
            SS
        ]
    );
    // Nothing below the frame was touched.
    assert_eq!(w.p.peek_u64s(w.regs.rsp - 16, 2), [0, 0]);
}

#[test]
fn bounce_from_kernel_with_error_code_puts_it_between_r11_and_rip() {
    let mut w = World::kernel();
    w.regs.rsp = KSTACK_TOP - 0x200;
    let before = w.regs;
    assert_eq!(bounce(&mut w, Some(0x1234_5678), false, false), Ok(()));
    assert_eq!(w.regs.rsp, before.rsp - FRAME_ERR);
    assert_eq!(
        w.frame(8),
        [
            before.rcx,
            before.r11,
            0x1234_5678,
            before.rip,
            KCS0,
            rflags::IF | rflags::FIXED,
            before.rsp,
            SS
        ]
    );
}

#[test]
fn bounce_rounds_the_stack_down_to_16_bytes_and_saves_the_original_rsp() {
    for low in [0x0, 0x1, 0x8, 0xF] {
        let mut w = World::kernel();
        w.regs.rsp = KSTACK_TOP - 0x200 + low;
        let before = w.regs;
        assert_eq!(bounce(&mut w, None, false, false), Ok(()));
        assert_eq!(
            w.regs.rsp,
            (before.rsp & !15) - FRAME,
            "rsp low bits {low:#x}"
        );
        assert_eq!(w.frame(7)[5], before.rsp);
        let mut w = World::kernel();
        w.regs.rsp = KSTACK_TOP - 0x200 + low;
        assert_eq!(bounce(&mut w, Some(0), false, false), Ok(()));
        assert_eq!(w.regs.rsp, (before.rsp & !15) - FRAME_ERR);
        assert_eq!(w.regs.rsp % 16, 0);
    }
}

#[test]
fn bounce_enters_handler_on_flat_kernel_selectors_with_tf_nt_rf_vm_ac_cleared_and_if_set() {
    let mut w = World::kernel();
    let other = rflags::CF | rflags::DF | (1 << 6) | (1 << 7); // CF, DF, ZF, SF survive
    w.regs.rflags =
        rflags::FIXED | other | rflags::TF | rflags::NT | rflags::RF | rflags::VM | rflags::AC;
    w.regs.cs = 0xE033;
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.regs.rip, H);
    assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    assert_eq!(w.regs.ss, u64::from(FLAT_KERNEL_SS));
    assert_eq!(w.regs.rflags, rflags::FIXED | rflags::IF | other);
}

#[test]
fn bounce_clears_df_only_when_asked() {
    let mut w = World::kernel();
    w.regs.rflags |= rflags::DF;
    assert_eq!(bounce(&mut w, None, false, true), Ok(()));
    assert_eq!(w.regs.rflags & rflags::DF, 0);
    // The saved copy keeps the interrupted DF.
    assert_ne!(w.frame(7)[4] & rflags::DF, 0);
}

#[test]
fn bounce_keeps_all_other_general_registers() {
    let mut w = World::kernel();
    let b = w.regs;
    assert_eq!(bounce(&mut w, Some(3), true, true), Ok(()));
    let a = w.regs;
    let gprs = |r: &Regs| {
        [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
            r.r13, r.r14, r.r15,
        ]
    };
    assert_eq!(gprs(&a), gprs(&b));
}

#[test]
fn bounce_saved_rflags_if_is_the_inverse_of_the_saved_upcall_mask() {
    // Hardware IF is always 1 for a PV guest; the frame shows the *virtual* IF.
    let mut w = World::kernel();
    w.p.masks.insert(0, 1);
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    let f = w.frame(7);
    assert_eq!(f[4] & rflags::IF, 0);
    assert_eq!(f[3] >> BOUNCE_SAVED_MASK_SHIFT, 1);
    assert_eq!(f[3] & 0xFFFF_FFFF, KCS0);

    let mut w = World::kernel();
    w.regs.rflags &= !rflags::IF;
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    let f = w.frame(7);
    assert_ne!(f[4] & rflags::IF, 0);
    assert_eq!(f[3] >> BOUNCE_SAVED_MASK_SHIFT, 0);
}

#[test]
fn bounce_masks_events_iff_requested_and_saves_the_previous_mask() {
    let mut w = World::kernel();
    assert_eq!(bounce(&mut w, None, true, false), Ok(()));
    assert_eq!(w.p.mask(0), 1);
    assert_eq!(
        w.frame(7)[3] >> 32,
        0,
        "the frame holds the mask from before the bounce"
    );

    let mut w = World::kernel();
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.p.mask(0), 0);

    let mut w = World::kernel();
    w.p.masks.insert(0, 1);
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.p.mask(0), 1, "an unmasking bounce does not exist");
}

#[test]
fn bounce_from_kernel_clears_the_rpl_of_a_guest_gdt_selector() {
    // xsa-296: a guest-GDT code selector 0x4B shows as 0x48.
    let mut w = World::kernel();
    w.regs.cs = 0x4B;
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.frame(7)[3], 0x48);
}

#[test]
fn bounce_from_user_uses_kernel_sp_switches_to_kernel_mode_and_keeps_rpl_3() {
    let mut w = World::user();
    w.vcpu.gs_base_kernel = 0x1111_0000;
    w.vcpu.gs_base_user = 0x2222_0000;
    let before = w.regs;
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert!(w.vcpu.kernel_mode);
    assert_eq!(w.p.load_mode_calls, [(true, 0x1111_0000, 0)]);
    assert_eq!(w.regs.rsp, (KSP & !15) - FRAME);
    // The kernel_sp stack is mapped only in the kernel page tables: the frame can only
    // be there if the mode switched before it was written.
    assert_eq!(
        w.frame(7),
        [
            before.rcx,
            before.r11,
            URIP,
            UCS,
            rflags::IF | rflags::FIXED,
            before.rsp,
            SS
        ]
    );
    assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    assert_eq!(w.regs.ss, u64::from(FLAT_KERNEL_SS));
}

#[test]
fn bounce_from_user_aligns_kernel_sp_down_to_16() {
    let mut w = World::user();
    w.vcpu.kernel_sp = KSP - 0x13;
    assert_eq!(bounce(&mut w, Some(7), false, false), Ok(()));
    assert_eq!(w.regs.rsp, ((KSP - 0x13) & !15) - FRAME_ERR);
    assert_eq!(w.frame(8)[2], 7);
}

#[test]
fn bounce_from_user_without_kernel_stack_crashes_and_stays_in_user_mode() {
    let mut w = World::user();
    w.vcpu.kernel_sp = 0;
    let before = w.regs;
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::NoKernelStack)
    );
    assert!(!w.vcpu.kernel_mode);
    assert!(w.p.load_mode_calls.is_empty());
    assert_eq!(w.regs, before);
}

#[test]
fn bounce_onto_an_unmapped_stack_crashes_with_bad_stack() {
    let mut w = World::kernel();
    w.regs.rsp = 0x0000_1234_5678_0000;
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack {
            rsp: 0x0000_1234_5678_0000
        })
    );
    let mut w = World::kernel();
    let rsp = w.regs.rsp;
    w.p.unmap(rsp - 8);
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack { rsp })
    );
}

#[test]
fn bounce_onto_a_read_only_stack_crashes_with_bad_stack_and_writes_nothing() {
    let mut w = World::kernel();
    w.p.protect(w.regs.rsp - 8, Perm::ReadOnly);
    let rsp = w.regs.rsp;
    let below = w.p.peek(rsp - 0x100, 0x100);
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack { rsp })
    );
    assert_eq!(w.p.peek(rsp - 0x100, 0x100), below);
}

#[test]
fn bounce_with_a_frame_straddling_an_unmapped_page_crashes() {
    let mut w = World::kernel();
    // 0x20 bytes above the bottom of the mapped stack: the frame would run below it.
    w.regs.rsp = KSTACK_TOP - 0x4000 + 0x20;
    assert!(matches!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack { .. })
    ));
}

#[test]
fn bounce_onto_the_hypervisor_range_crashes_with_bad_stack() {
    let mut w = World::kernel();
    let xen = 0xFFFF_8000_0000_2000; // M2P, the hypervisor's
    w.p.map(xen - 0x1000, 0x2000, Perm::ReadWrite); // even if something were mapped there
    w.regs.rsp = xen;
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack { rsp: xen })
    );
    let mut w = World::kernel();
    w.regs.rsp = 0x20; // would wrap below 0
    assert!(matches!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack { .. })
    ));
}

#[test]
fn bounce_to_a_bad_kernel_sp_from_user_crashes_with_bad_stack() {
    let mut w = World::user();
    w.vcpu.kernel_sp = 0x0000_0000_0900_0000; // unmapped
    assert_eq!(
        bounce(&mut w, None, false, false),
        Err(CrashReason::BadStack {
            rsp: 0x0000_0000_0900_0000
        })
    );
}

#[test]
fn bounce_reports_virtual_iopl_only_with_the_architectural_iopl_assist() {
    let mut w = World::kernel();
    w.vcpu.iopl = 2;
    w.regs.rflags |= rflags::IOPL; // never the guest's to see
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.frame(7)[4] & rflags::IOPL, 0);

    let mut w = World::kernel();
    w.vcpu.iopl = 2;
    w.dom.vm_assist |= VmAssistType::ArchitecturalIopl.bit();
    assert_eq!(bounce(&mut w, None, false, false), Ok(()));
    assert_eq!(w.frame(7)[4] & rflags::IOPL, 2 << 12);
}

// ---------------------------------------------------------------------------------------
// Exception delivery (§6.1)
// ---------------------------------------------------------------------------------------

#[test]
fn exception_without_a_handler_crashes_with_no_handler() {
    let mut w = World::kernel();
    assert_eq!(
        w.exception(0, 0, 0),
        Outcome::Crash(CrashReason::NoHandler {
            vector: 0,
            rip: KRIP
        })
    );
    let mut w = World::kernel();
    assert_eq!(
        w.exception(14, 2, 0x1000),
        Outcome::Crash(CrashReason::NoHandler {
            vector: 14,
            rip: KRIP
        })
    );
}

#[test]
fn exceptions_carry_an_error_code_exactly_for_df_ts_np_ss_gp_pf_ac_cp_vc_sx() {
    let with: std::vec::Vec<u8> = (0..32).filter(|&v| HAS_ERROR_CODE.contains(&v)).collect();
    assert_eq!(with, [8, 10, 11, 12, 13, 14, 17, 21, 29, 30]);
    for v in 0..32u8 {
        assert_eq!(HAS_ERROR_CODE.contains(&v), exception_has_error_code(v));
        let mut w = World::kernel();
        w.code(&[0xF4]); // hlt: neither emulated (#GP) nor the emulation prefix (#UD)
        w.set_trap(v, 0, false);
        let before = w.regs;
        assert_eq!(w.exception(v, 0x18, 0), Outcome::Resume, "vector {v}");
        assert_eq!(w.regs.rip, handler(u64::from(v)), "vector {v}");
        if HAS_ERROR_CODE.contains(&v) {
            assert_eq!(w.regs.rsp, (before.rsp & !15) - FRAME_ERR, "vector {v}");
            assert_eq!(
                w.frame(4),
                [before.rcx, before.r11, 0x18, KRIP],
                "vector {v}"
            );
        } else {
            assert_eq!(w.regs.rsp, (before.rsp & !15) - FRAME, "vector {v}");
            assert_eq!(w.frame(3), [before.rcx, before.r11, KRIP], "vector {v}");
        }
    }
}

#[test]
fn page_fault_sets_vcpu_cr2_and_shared_cr2() {
    let mut w = World::kernel();
    w.set_trap(PF, 0, false);
    assert_eq!(w.exception(PF, 0x2, 0xDEAD_B000), Outcome::Resume);
    assert_eq!(w.vcpu.cr2, 0xDEAD_B000);
    assert_eq!(w.p.shared_cr2.get(&0), Some(&0xDEAD_B000));
    assert_eq!(w.regs.rip, handler(14));
}

#[test]
fn page_fault_error_code_u_bit_follows_the_virtual_mode() {
    // The CPU saw ring 3 either way (U=1); the guest kernel must see U=0.
    let mut w = World::kernel();
    w.set_trap(PF, 0, false);
    assert_eq!(w.exception(PF, 0x7, 0x1000), Outcome::Resume);
    assert_eq!(w.frame(3)[2], 0x3);

    let mut w = World::user();
    w.set_trap(PF, 0, false);
    assert_eq!(w.exception(PF, 0x7, 0x1000), Outcome::Resume);
    assert_eq!(w.frame(3)[2], 0x7);

    let mut w = World::user();
    w.set_trap(PF, 0, false);
    assert_eq!(w.exception(PF, 0x2, 0x1000), Outcome::Resume);
    assert_eq!(
        w.frame(3)[2],
        0x6,
        "user mode: U set even if the CPU did not"
    );
}

#[test]
fn trap_with_disable_events_masks_events_and_without_it_does_not() {
    let mut w = World::kernel();
    w.set_trap(0, 0, true);
    assert_eq!(w.exception(0, 0, 0), Outcome::Resume);
    assert_eq!(w.p.mask(0), 1);
    assert_eq!(w.frame(7)[3] >> 32, 0);
    assert_ne!(w.frame(7)[4] & rflags::IF, 0);

    let mut w = World::kernel();
    w.set_trap(0, 0, false);
    assert_eq!(w.exception(0, 0, 0), Outcome::Resume);
    assert_eq!(w.p.mask(0), 0);
}

#[test]
fn exception_from_user_mode_bounces_on_the_kernel_stack() {
    let mut w = World::user();
    w.set_trap(0, 0, false);
    let before = w.regs;
    assert_eq!(w.exception(0, 0, 0), Outcome::Resume);
    assert!(w.vcpu.kernel_mode);
    assert_eq!(w.regs.rsp, (KSP & !15) - FRAME);
    assert_eq!(
        w.frame(7)[2..],
        [URIP, UCS, rflags::IF | rflags::FIXED, before.rsp, SS]
    );
}

#[test]
fn int3_and_into_are_delivered_whatever_the_guest_dpl() {
    for v in [3u8, 4] {
        let mut w = World::user();
        w.set_trap(v, 0, false);
        w.regs.rip = URIP + 1; // a trap: RIP already past `int3`/`into`
        assert_eq!(w.exception(v, 0, 0), Outcome::Resume, "vector {v}");
        assert_eq!(w.regs.rip, handler(u64::from(v)));
        assert_eq!(w.frame(3)[2], URIP + 1);
    }
}

#[test]
fn exception_with_no_kernel_stack_from_user_crashes() {
    let mut w = World::user();
    w.vcpu.kernel_sp = 0;
    w.set_trap(0, 0, false);
    assert_eq!(
        w.exception(0, 0, 0),
        Outcome::Crash(CrashReason::NoKernelStack)
    );
}

// ---------------------------------------------------------------------------------------
// `int n` (#GP with error (n << 3) | 2) and `int $0x80`
// ---------------------------------------------------------------------------------------

const fn idt_err(n: u8) -> u64 {
    (n as u64) << 3 | 2
}

#[test]
fn int_n_from_kernel_with_dpl_1_advances_rip_and_bounces_vector_n_without_error_code() {
    for dpl in [1, 2, 3] {
        let mut w = World::kernel();
        w.code(&[0xCD, 0x20]);
        w.set_trap(0x20, dpl, false);
        w.set_trap(GP, 0, false);
        let before = w.regs;
        assert_eq!(
            w.exception(GP, idt_err(0x20), 0),
            Outcome::Resume,
            "dpl {dpl}"
        );
        assert_eq!(w.regs.rip, handler(0x20), "dpl {dpl}");
        assert_eq!(w.regs.rsp, (before.rsp & !15) - FRAME, "no error code");
        assert_eq!(w.frame(3), [before.rcx, before.r11, KRIP + 2]);
        assert_eq!(w.p.mask(0), 0);
    }
}

#[test]
fn int_n_from_kernel_with_dpl_0_is_refused_with_gp_and_the_idt_error_code() {
    let mut w = World::kernel();
    w.code(&[0xCD, 0x20]);
    w.set_trap(0x20, 0, false);
    w.set_trap(GP, 0, false);
    let before = w.regs;
    assert_eq!(w.exception(GP, idt_err(0x20), 0), Outcome::Resume);
    assert_eq!(w.regs.rip, handler(13));
    assert_eq!(w.regs.rsp, (before.rsp & !15) - FRAME_ERR);
    assert_eq!(
        w.frame(4),
        [before.rcx, before.r11, 0x102, KRIP],
        "RIP left on the int"
    );
}

#[test]
fn int_n_from_user_needs_dpl_3() {
    for dpl in [0, 1, 2] {
        let mut w = World::user();
        w.code(&[0xCD, 0x21]);
        w.set_trap(0x21, dpl, false);
        w.set_trap(GP, 0, false);
        assert_eq!(
            w.exception(GP, idt_err(0x21), 0),
            Outcome::Resume,
            "dpl {dpl}"
        );
        assert_eq!(w.regs.rip, handler(13), "dpl {dpl}");
        assert_eq!(w.frame(4)[2..], [idt_err(0x21), URIP], "dpl {dpl}");
    }
    let mut w = World::user();
    w.code(&[0xCD, 0x21]);
    w.set_trap(0x21, 3, false);
    w.set_trap(GP, 0, false);
    assert_eq!(w.exception(GP, idt_err(0x21), 0), Outcome::Resume);
    assert_eq!(w.regs.rip, handler(0x21));
    assert_eq!(w.regs.rsp, (KSP & !15) - FRAME);
    assert_eq!(w.frame(4)[2..], [URIP + 2, UCS]);
}

#[test]
fn int_n_with_prefixes_advances_rip_past_the_whole_instruction() {
    for (code, len) in [
        (&[0x66, 0xCD, 0x20][..], 3),
        (&[0x48, 0xCD, 0x20][..], 3),
        (&[0xF3, 0x41, 0xCD, 0x20][..], 4),
        (&[0x2E, 0x3E, 0x26, 0xCD, 0x20][..], 5),
    ] {
        let mut w = World::kernel();
        w.code(code);
        w.set_trap(0x20, 3, false);
        assert_eq!(
            w.exception(GP, idt_err(0x20), 0),
            Outcome::Resume,
            "{code:x?}"
        );
        assert_eq!(w.frame(3)[2], KRIP + len, "{code:x?}");
    }
}

#[test]
fn int_n_with_disable_events_masks_events() {
    let mut w = World::kernel();
    w.code(&[0xCD, 0x20]);
    w.set_trap(0x20, 3, true);
    assert_eq!(w.exception(GP, idt_err(0x20), 0), Outcome::Resume);
    assert_eq!(w.p.mask(0), 1);
}

#[test]
fn int_n_refused_without_a_gp_handler_crashes() {
    let mut w = World::kernel();
    w.code(&[0xCD, 0x20]);
    assert_eq!(
        w.exception(GP, idt_err(0x20), 0),
        Outcome::Crash(CrashReason::NoHandler {
            vector: GP,
            rip: KRIP
        })
    );
}

#[test]
fn int_0x80_with_a_handler_is_bounced_directly_without_checking_dpl() {
    for (mut w, rip) in [(World::user(), URIP), (World::kernel(), KRIP)] {
        w.set_trap(INT80, 0, false);
        w.regs.rip = rip + 2; // through the DPL-3 gate: already past `int $0x80`
        let before = w.regs;
        assert_eq!(w.exception(INT80, 0, 0), Outcome::Resume);
        assert_eq!(w.regs.rip, handler(0x80));
        assert_eq!(
            w.frame(3),
            [before.rcx, before.r11, rip + 2],
            "no error code"
        );
        assert_eq!(w.p.mask(0), 0);
        assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    }
}

#[test]
fn int_0x80_with_disable_events_masks_events() {
    let mut w = World::user();
    w.set_trap(INT80, 3, true);
    w.regs.rip = URIP + 2;
    assert_eq!(w.exception(INT80, 0, 0), Outcome::Resume);
    assert_eq!(w.p.mask(0), 1);
}

#[test]
fn int_0x80_without_a_handler_is_gp_0x402_at_the_instruction() {
    let mut w = World::user();
    w.set_trap(GP, 0, false);
    w.regs.rip = URIP + 2;
    assert_eq!(w.exception(INT80, 0, 0), Outcome::Resume);
    assert_eq!(w.regs.rip, handler(13));
    assert_eq!(w.frame(4)[2..], [(0x80 << 3) | 2, URIP]);
}

// ---------------------------------------------------------------------------------------
// SYSCALL from guest user mode (§6.2, §6.4)
// ---------------------------------------------------------------------------------------

#[test]
fn user_syscall_bounces_to_the_callback_with_the_syscall_rcx_r11_and_df_cleared() {
    let mut w = World::user();
    w.vcpu.callbacks.syscall = Callback {
        address: handler(0x100),
        mask_events: false,
    };
    w.regs.rflags = rflags::FIXED | rflags::IF | rflags::DF | rflags::TF | rflags::AC | rflags::CF;
    let user_rsp = w.regs.rsp;
    assert_eq!(w.syscall_from_user(), Outcome::Resume);
    assert!(w.vcpu.kernel_mode);
    assert_eq!(w.regs.rip, handler(0x100));
    assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    assert_eq!(w.regs.ss, u64::from(FLAT_KERNEL_SS));
    assert_eq!(w.regs.rflags, rflags::FIXED | rflags::IF | rflags::CF);
    assert_eq!(w.regs.rsp, (KSP & !15) - FRAME);
    let user_flags = rflags::FIXED | rflags::IF | rflags::DF | rflags::TF | rflags::AC | rflags::CF;
    assert_eq!(
        w.frame(7),
        [URIP, user_flags, URIP, UCS, user_flags, user_rsp, SS]
    );
    assert_eq!(w.p.mask(0), 0);
}

#[test]
fn user_syscall_masks_events_only_with_callbackf_mask_events() {
    let mut w = World::user();
    w.vcpu.callbacks.syscall = Callback {
        address: handler(0x100),
        mask_events: true,
    };
    assert_eq!(w.syscall_from_user(), Outcome::Resume);
    assert_eq!(w.p.mask(0), 1);
    assert_eq!(w.frame(7)[3] >> 32, 0);

    let mut w = World::user();
    w.vcpu.callbacks.syscall = Callback {
        address: handler(0x100),
        mask_events: false,
    };
    w.p.masks.insert(0, 1);
    assert_eq!(w.syscall_from_user(), Outcome::Resume);
    assert_eq!(w.p.mask(0), 1);
    assert_eq!(w.frame(7)[3] >> 32, 1);
    assert_eq!(w.frame(7)[4] & rflags::IF, 0);
}

#[test]
fn user_syscall_saves_the_flat_user_selectors() {
    let mut w = World::user();
    w.vcpu.callbacks.syscall = Callback {
        address: handler(0x100),
        mask_events: false,
    };
    assert_eq!(w.syscall_from_user(), Outcome::Resume);
    let f = w.frame(7);
    assert_eq!(
        (f[3] & 0xFFFF, f[6]),
        (u64::from(FLAT_USER_CS), u64::from(FLAT_USER_SS))
    );
}

#[test]
fn user_syscall_without_a_callback_delivers_ud_at_the_syscall_instruction() {
    let mut w = World::user();
    w.set_trap(UD, 0, false);
    let user_rsp = w.regs.rsp;
    assert_eq!(w.syscall_from_user(), Outcome::Resume);
    assert_eq!(w.regs.rip, handler(6));
    assert_eq!(w.regs.rsp, (KSP & !15) - FRAME, "#UD has no error code");
    let f = w.frame(7);
    assert_eq!(f[2], URIP - 2, "RIP rewound onto the SYSCALL");
    assert_eq!(f[3], UCS);
    assert_eq!(f[5], user_rsp);
}

#[test]
fn user_syscall_without_a_callback_or_ud_handler_crashes() {
    let mut w = World::user();
    assert_eq!(
        w.syscall_from_user(),
        Outcome::Crash(CrashReason::NoHandler {
            vector: UD,
            rip: URIP - 2
        })
    );
}

#[test]
fn user_syscall_without_a_kernel_stack_crashes() {
    let mut w = World::user();
    w.vcpu.kernel_sp = 0;
    w.vcpu.callbacks.syscall = Callback {
        address: handler(0x100),
        mask_events: false,
    };
    assert_eq!(
        w.syscall_from_user(),
        Outcome::Crash(CrashReason::NoKernelStack)
    );
}

#[test]
fn crash_reasons_print() {
    use std::string::ToString;
    let s = CrashReason::NoHandler {
        vector: 14,
        rip: 0x1000,
    }
    .to_string();
    assert!(s.contains("#PF") && s.contains("0x1000"), "{s}");
    assert_eq!(mnemonic(0x80), "int");
    assert_eq!(SYSCALL_VECTOR, 0x100);
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

/// Addresses the generated states use: mostly near mapped memory, sometimes anywhere.
fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        (0..0x5000u64).prop_map(|o| KSTACK_TOP - o),
        (0..0x5000u64).prop_map(|o| KSP - o),
        (0..0x4100u64).prop_map(|o| KTEXT + o),
        (0..0x2100u64).prop_map(|o| UTEXT + o),
        (0..0x2100u64).prop_map(|o| USTACK_TOP - o),
        (0..0x100u64).prop_map(|o| 0xFFFF_8000_0000_0000 + o),
        (0..0x100u64).prop_map(|o| 0x0000_8000_0000_0000 - o),
        Just(0u64),
        any::<u64>(),
    ]
}

/// Instruction pointers: mostly on mapped text.
fn rip() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0..0x4000u64).prop_map(|o| KTEXT + o),
        1 => (0..0x2000u64).prop_map(|o| UTEXT + o),
        1 => addr(),
    ]
}

/// Stack pointers: mostly on the mapped stacks.
fn stack() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (0..0x4000u64).prop_map(|o| KSTACK_TOP - o),
        1 => (0..0x2000u64).prop_map(|o| USTACK_TOP - o),
        1 => addr(),
    ]
}

/// Instruction bytes: the interesting ones, followed by noise.
fn code() -> impl Strategy<Value = std::vec::Vec<u8>> {
    let heads = prop_oneof![
        Just(std::vec![]),
        any::<u8>().prop_map(|n| std::vec![0xCD, n]),
        any::<u8>().prop_map(|n| std::vec![0x66, 0xCD, n]),
        Just(std::vec![0x0F, 0x0B, 0x78, 0x65, 0x6E, 0x0F, 0xA2]),
        Just(std::vec![0x0F, 0x0B, 0x78, 0x65, 0x6E]),
        (0x20u8..0x24, any::<u8>()).prop_map(|(o, m)| std::vec![0x0F, o, m]),
        (0x40u8..0x50, 0x20u8..0x24, any::<u8>()).prop_map(|(r, o, m)| std::vec![r, 0x0F, o, m]),
        Just(std::vec![0xFA]),
        Just(std::vec![0xFB]),
        Just(std::vec![0x0F, 0x06]),
        Just(std::vec![0x0F, 0x30]),
        Just(std::vec![0x0F, 0x32]),
        Just(std::vec![0x0F, 0x09]),
        Just(std::vec![0xF4]),
    ];
    (heads, proptest::collection::vec(any::<u8>(), 0..16)).prop_map(|(mut h, t)| {
        h.extend(t);
        h
    })
}

#[derive(Clone, Debug)]
struct Scenario {
    regs: [u64; 22],
    rip: u64,
    rsp: u64,
    cs: u64,
    ss: u64,
    kernel_mode: bool,
    kernel_sp: u64,
    user_root: bool,
    traps: std::vec::Vec<(u8, u8, bool)>,
    code: std::vec::Vec<u8>,
    mask: u8,
    iopl: u8,
    assists: u64,
    syscall_cb: Option<bool>,
    vector: u8,
    error_code: u64,
    stack_ro: bool,
    privileged: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let sel = prop_oneof![
        Just(0xE033u64),
        Just(0xE023),
        Just(0xE02B),
        Just(0x4B),
        Just(0),
        any::<u16>().prop_map(u64::from)
    ];
    let vector = prop_oneof![
        2 => 0u8..32,
        3 => Just(GP),
        1 => Just(UD),
        1 => Just(PF),
        1 => Just(INT80),
        1 => any::<u8>(),
    ];
    let error = prop_oneof![
        3 => Just(0u64),
        2 => any::<u8>().prop_map(|n| u64::from(n) << 3 | 2),
        1 => 0u64..0x20,
        1 => any::<u64>(),
    ];
    (
        (
            proptest::array::uniform::<_, 22>(any::<u64>()),
            rip(),
            stack(),
            sel.clone(),
            sel,
        ),
        (
            any::<bool>(),
            prop_oneof![1 => Just(0u64), 3 => stack(), 1 => addr()],
            any::<bool>(),
        ),
        prop_oneof![
            // A sparse table...
            1 => proptest::collection::vec((any::<u8>(), any::<u8>(), any::<bool>()), 0..24),
            // ...or a full one (every vector, random DPL and event masking).
            3 => proptest::collection::vec(any::<u8>(), 256).prop_map(|flags| {
                flags.into_iter().enumerate().map(|(v, f)| (v as u8, f, true)).collect()
            }),
        ],
        (
            code(),
            0u8..3,
            0u8..4,
            any::<u64>(),
            proptest::option::of(any::<bool>()),
        ),
        (vector, error, any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (regs, rip, rsp, cs, ss),
                (kernel_mode, kernel_sp, user_root),
                traps,
                (code, mask, iopl, assists, syscall_cb),
                (vector, error_code, stack_ro, privileged),
            )| Scenario {
                regs,
                rip,
                rsp,
                cs,
                ss,
                kernel_mode,
                kernel_sp,
                user_root,
                traps,
                code,
                mask: mask.min(1),
                iopl,
                assists,
                syscall_cb,
                vector,
                error_code,
                stack_ro,
                privileged,
            },
        )
}

/// Handlers of the generated trap tables and callbacks are all in this range (unmapped,
/// so no generated RIP lands in it by accident).
fn is_handler(rip: u64) -> bool {
    (HANDLERS..HANDLERS + 0x100 * 0x40 + 0x1000).contains(&rip)
}

fn build(s: &Scenario) -> World {
    let mut w = World::new(1, s.privileged);
    let r = s.regs;
    w.regs = Regs {
        r15: r[0],
        r14: r[1],
        r13: r[2],
        r12: r[3],
        r11: r[4],
        r10: r[5],
        r9: r[6],
        r8: r[7],
        rbp: r[8],
        rdi: r[9],
        rsi: r[10],
        rdx: r[11],
        rcx: r[12],
        rbx: r[13],
        rax: r[14],
        vector: u64::from(s.vector),
        error_code: s.error_code,
        rip: s.rip,
        cs: s.cs,
        // Without TF: a single step after an emulated instruction bounces again, which
        // `check_entry` does not model (the single-step tests cover it).
        rflags: (r[19] | rflags::IF | rflags::FIXED) & !rflags::TF,
        rsp: s.rsp,
        ss: s.ss,
    };
    w.vcpu.kernel_mode = s.kernel_mode;
    w.p.kernel_space = s.kernel_mode;
    w.vcpu.kernel_sp = s.kernel_sp;
    w.vcpu.user_root = s.user_root.then_some(UROOT);
    for &(v, flags, present) in &s.traps {
        if present {
            w.vcpu.traps[usize::from(v)] = TrapInfo {
                vector: v,
                flags,
                cs: 0xE033,
                _pad: 0,
                address: handler(u64::from(v)),
            };
        }
    }
    if let Some(mask_events) = s.syscall_cb {
        w.vcpu.callbacks.syscall = Callback {
            address: handler(0x100),
            mask_events,
        };
    }
    w.p.masks.insert(0, s.mask);
    w.vcpu.iopl = s.iopl;
    w.dom.vm_assist = s.assists;
    if s.stack_ro {
        w.p.protect(KSTACK_TOP - 0x1000, Perm::ReadOnly);
        w.p.protect(KSP - 0x1000, Perm::ReadOnly);
    }
    // Place the code wherever it is mapped, whatever the page's visibility.
    let mode = w.p.kernel_space;
    w.p.kernel_space = true;
    for (i, &b) in s.code.iter().enumerate() {
        let a = s.rip.wrapping_add(i as u64);
        let mut one = [0u8];
        if w.p.read_guest_raw(a, &mut one).is_ok() {
            w.p.poke(a, &[b]);
        }
    }
    w.p.kernel_space = mode;
    w
}

/// After a guest entry that did not crash: either the vCPU was bounced to a handler (on
/// the flat kernel selectors, with a well-formed frame describing `before`), or an
/// instruction was emulated (selectors and mode untouched; RIP moved forward by
/// at most one instruction).
fn check_entry(w: &World, before: &Regs, was_kernel: bool, mask: u8) -> Result<(), TestCaseError> {
    if !is_handler(w.regs.rip) {
        prop_assert_eq!(w.regs.cs, before.cs);
        prop_assert_eq!(w.regs.ss, before.ss);
        prop_assert_eq!(w.vcpu.kernel_mode, was_kernel);
        let moved = w.regs.rip.wrapping_sub(before.rip);
        prop_assert!((1..=15).contains(&moved), "rip moved by {:#x}", moved);
        prop_assert_eq!(w.p.mask(0), mask);
        return Ok(());
    }
    prop_assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    prop_assert_eq!(w.regs.ss, u64::from(FLAT_KERNEL_SS));
    prop_assert!(w.vcpu.kernel_mode);
    prop_assert_ne!(w.regs.rflags & rflags::IF, 0);
    let bad = rflags::TF | rflags::NT | rflags::RF | rflags::VM | rflags::AC;
    prop_assert_eq!(w.regs.rflags & bad, 0);
    let words = if w.regs.rsp % 16 == 8 { 7 } else { 8 };
    prop_assert!(w.regs.rsp % 8 == 0);
    let mut p = w.p.clone();
    p.kernel_space = true;
    let mut raw = std::vec![0u8; words * 8];
    prop_assert!(
        p.read_guest(w.regs.rsp, &mut raw).is_ok(),
        "frame unreadable"
    );
    let f: std::vec::Vec<u64> = raw
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let n = f.len();
    prop_assert_eq!(f[n - 1], before.ss);
    prop_assert_eq!(f[n - 2], before.rsp);
    let want_cs = if was_kernel {
        before.cs & !3
    } else {
        before.cs
    };
    prop_assert_eq!(f[n - 4] & 0xFFFF_FFFF, want_cs & 0xFFFF_FFFF);
    prop_assert_eq!((f[n - 4] >> 32) & 0xFF, u64::from(mask));
    prop_assert_eq!(f[n - 3] & rflags::IF != 0, mask == 0);
    prop_assert_eq!(f[1], before.r11);
    prop_assert_eq!(f[0], before.rcx);
    let base = if was_kernel {
        before.rsp
    } else {
        w.vcpu.kernel_sp
    };
    prop_assert_eq!(w.regs.rsp + 8 * words as u64, base & !15);
    prop_assert!(w.p.mask(0) >= mask);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn guest_exception_never_panics_and_bounces_only_to_flat_kernel_selectors(s in scenario()) {
        let mut w = build(&s);
        let before = w.regs;
        let cr2 = before.rbx;
        let outcome = w.run(|c| c.guest_exception(cr2)).1;
        match outcome {
            Outcome::Crash(_) => {}
            Outcome::Resume => check_entry(&w, &before, s.kernel_mode, s.mask)?,
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }

    #[test]
    fn user_syscall_never_panics_and_bounces_only_to_flat_kernel_selectors(s in scenario()) {
        let mut w = build(&s);
        w.vcpu.kernel_mode = false;
        w.p.kernel_space = false;
        w.regs.vector = SYSCALL_VECTOR;
        let before = w.regs;
        let outcome = w.run(|c| c.user_syscall()).1;
        match outcome {
            Outcome::Crash(_) => {}
            Outcome::Resume => {
                prop_assert!(is_handler(w.regs.rip));
                let mut at_syscall = before;
                if s.syscall_cb.is_none() {
                    at_syscall.rip = before.rip.wrapping_sub(2);
                }
                check_entry(&w, &at_syscall, false, s.mask)?;
                let f = w.p.peek_u64s(w.regs.rsp, 3);
                prop_assert_eq!(f[2], at_syscall.rip);
                if s.syscall_cb.is_some() {
                    prop_assert_eq!(w.regs.rflags & rflags::DF, 0);
                    prop_assert_eq!(w.p.mask(0), if s.syscall_cb == Some(true) { 1 } else { s.mask });
                }
            }
            other => prop_assert!(false, "unexpected outcome {:?}", other),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The LDT area: the CPU's first read of an LDT page (Xen's handle_ldt_mapping_fault)
// ---------------------------------------------------------------------------------------

mod ldt {
    use super::*;
    use crate::mm::Mfn;
    use crate::mm::frame_table::Owner;
    use crate::mm::mmu::{ForeignDomain, LDT_PAGES, VcpuMm, mmuext_op};
    use crate::mm::page_type::MachineMemory;
    use hypercall_abi::mmu::{MmuextCmd, MmuextOp};

    const L4: u64 = 100;
    const LDT_PAGE: u64 = 104;
    /// Where the guest maps its LDT page (read-only).
    const LDT_VA: u64 = 0x1000;
    /// An implicit supervisor read of a page not present.
    const READ: u64 = 0;

    /// A domU whose kernel tables (frames 100-103) map its LDT page at [`LDT_VA`],
    /// with `ents` LDT entries set at that address.
    fn world(ents: u32) -> World {
        let mut w = World::kernel();
        let dom = w.dom.id;
        let mut vm = VcpuMm::default();
        w.p.mm(dom, false, |m| {
            for f in L4..=LDT_PAGE {
                m.ft.assign(Mfn(f), Owner::Domain(dom)).unwrap();
            }
            for (table, next) in [(L4, L4 + 1), (L4 + 1, L4 + 2), (L4 + 2, L4 + 3)] {
                m.mem.write_entry(Mfn(table), 0, (next << 12) | 0x27);
            }
            m.mem.write_entry(Mfn(L4 + 3), 1, (LDT_PAGE << 12) | 0x25);
            m.mem.write_entry(Mfn(LDT_PAGE), 0, 0x00CF_9200_0000_FFFF);
            let own = ForeignDomain::own(m);
            for op in [
                MmuextOp::on_frame(MmuextCmd::PinL4Table, Mfn(L4)),
                MmuextOp::on_frame(MmuextCmd::NewBaseptr, Mfn(L4)),
                MmuextOp::set_ldt(LDT_VA, ents),
            ] {
                let _ = mmuext_op(m, &mut vm, op, own).unwrap();
            }
        });
        w.vcpu.kernel_root = Mfn(L4);
        w.vcpu.ldt_base = vm.ldt_base;
        w.vcpu.ldt_ents = vm.ldt_ents;
        w.set_trap(PF, 0, false);
        w.set_trap(GP, 0, false);
        w
    }

    #[test]
    fn the_first_read_maps_the_page_and_runs_the_instruction_again() {
        let mut w = world(16);
        let before = w.regs;
        assert_eq!(w.exception(PF, READ, LDT_AREA + 8), Outcome::Resume);
        assert_eq!(
            w.regs,
            Regs {
                vector: u64::from(PF),
                ..before
            },
            "no bounce"
        );
        assert_eq!(w.vcpu.ldt_frames[0], Some(Mfn(LDT_PAGE)));
        assert_eq!(w.p.ldt_loads.last().unwrap().1[0], Some(LDT_PAGE));
        let info = w.p.mm.ft.info(Mfn(LDT_PAGE)).unwrap();
        assert_eq!(info.page_type(), crate::mm::frame_table::PageType::SegDesc);
        // The descriptor was fixed up in place (DPL 3).
        assert_eq!(
            w.p.mm.mem.read_entry(Mfn(LDT_PAGE), 0),
            0x00CF_F200_0000_FFFF
        );
    }

    #[test]
    fn an_unmapped_ldt_page_is_a_guest_page_fault_at_its_linear_address() {
        let mut w = world(1024);
        // Entries 512.. are on the second page, which the guest has not mapped.
        assert_eq!(w.exception(PF, READ, LDT_AREA + 0x1010), Outcome::Resume);
        assert_eq!(w.regs.rip, handler(14));
        assert_eq!(w.vcpu.cr2, LDT_VA + 0x1010);
        assert_eq!(w.frame(3)[2], 0, "kernel mode: the hardware error code");
        assert_eq!(w.vcpu.ldt_frames, [None; LDT_PAGES]);
        // From user mode the U bit says so.
        let mut w = world(1024);
        w.vcpu.kernel_mode = false;
        w.vcpu.user_root = Some(Mfn(L4));
        w.vcpu.kernel_sp = KSP;
        assert_eq!(w.exception(PF, READ, LDT_AREA + 0x1010), Outcome::Resume);
        assert_eq!(w.vcpu.cr2, LDT_VA + 0x1010);
    }

    #[test]
    fn a_non_canonical_ldt_address_is_gp_with_the_selector() {
        let mut w = world(16);
        w.vcpu.ldt_base = (1 << 47) - 0x1000;
        w.vcpu.ldt_ents = 8192;
        assert_eq!(w.exception(PF, READ, LDT_AREA + 0x1010), Outcome::Resume);
        assert_eq!(w.regs.rip, handler(13));
        assert_eq!(w.frame(3)[2], 0x1014, "index 0x202, TI set");
    }

    #[test]
    fn a_user_access_to_the_area_is_an_ordinary_page_fault() {
        let mut w = world(16);
        assert_eq!(w.exception(PF, 4, LDT_AREA + 8), Outcome::Resume);
        assert_eq!(w.regs.rip, handler(14));
        assert_eq!(w.vcpu.cr2, LDT_AREA + 8);
        assert_eq!(w.vcpu.ldt_frames, [None; LDT_PAGES]);
    }
}

// ---------------------------------------------------------------------------------------
// #DB: DR6 as Xen 4.17 reports it
// ---------------------------------------------------------------------------------------

#[test]
fn debug_exception_adds_the_hardware_status_to_the_guest_dr6() {
    let mut w = World::kernel();
    w.set_trap(DB, 0, true);
    w.regs.rflags |= rflags::TF;
    let flags = w.regs.rflags;
    // A data breakpoint on DR0 hit.
    w.p.dr6 = crate::debugreg::DR6_DEFAULT | 1;
    assert_eq!(w.exception(DB, 0, 0), Outcome::Resume);
    assert_eq!(w.regs.rip, handler(u64::from(DB)));
    assert_eq!(
        w.frame(3)[2],
        KRIP,
        "no error code: rip right after rcx, r11"
    );
    assert_eq!(w.frame(5)[4], flags, "the frame keeps TF");
    assert_eq!(w.regs.rflags & rflags::TF, 0, "the handler runs without TF");
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_0FF1);
    assert_eq!(w.p.dr6, crate::debugreg::DR6_DEFAULT, "hardware DR6 reset");
    // A single step next, the guest not having reset DR6: B0 stays (Xen 4.17).
    w.regs = Regs {
        rip: KRIP,
        rsp: w.frame(7)[5],
        cs: w.frame(7)[3] & 0xFFFF | 3,
        rflags: flags,
        ..w.regs
    };
    w.p.dr6 = crate::debugreg::DR6_DEFAULT | crate::debugreg::DR6_BS;
    assert_eq!(w.exception(DB, 0, 0), Outcome::Resume);
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_4FF1);
}

#[test]
fn debug_exception_without_a_handler_crashes_the_domain() {
    let mut w = World::kernel();
    w.p.dr6 = crate::debugreg::DR6_DEFAULT | crate::debugreg::DR6_BS;
    assert_eq!(
        w.exception(DB, 0, 0),
        Outcome::Crash(CrashReason::NoHandler {
            vector: DB,
            rip: KRIP
        })
    );
}

/// Xen's `load_segments` failsafe frame (64-bit): RCX, R11, the four intended data
/// selectors, RIP, CS with the saved upcall mask, RFLAGS, RSP, SS, on the 16-byte
/// aligned kernel stack; events masked when the callback was registered so.
#[test]
fn failsafe_callback_frame_is_xens() {
    let mut w = World::kernel();
    w.vcpu.callbacks.failsafe = crate::vcpu::Callback {
        address: handler(0x30),
        mask_events: true,
    };
    w.vcpu.sels = [0xE02B, 0, 0x1234, 0x7];
    w.regs.rsp = KSTACK_TOP - 0x208 + 8;
    let (r, outcome) = w.run(|c| c.failsafe_callback());
    assert_eq!((r, outcome), (Ok(()), Outcome::Resume));
    let top = (KSTACK_TOP - 0x208 + 8) & !15;
    assert_eq!(w.regs.rsp, top - 11 * 8);
    assert_eq!(w.regs.rip, handler(0x30));
    assert_eq!(w.regs.cs, u64::from(FLAT_KERNEL_CS));
    assert_eq!(
        w.frame(11),
        [
            0xCCCC_0000,
            0x1111_0000,
            0xE02B,
            0,
            0x1234,
            0x7,
            KRIP,
            u64::from(FLAT_KERNEL_CS) & !3,
            rflags::IF | rflags::FIXED,
            KSTACK_TOP - 0x208 + 8,
            u64::from(FLAT_KERNEL_SS),
        ]
    );
    assert_eq!(w.p.upcall_mask(0), 1, "failsafe registered to mask events");
}

#[test]
fn failsafe_callback_from_user_mode_switches_to_the_kernel_stack() {
    let mut w = World::user();
    w.vcpu.callbacks.failsafe.address = handler(0x30);
    w.vcpu.sels = [0, 0, 0, 0xE02B];
    let (r, _) = w.run(|c| c.failsafe_callback());
    assert_eq!(r, Ok(()));
    assert!(w.vcpu.kernel_mode);
    assert_eq!(w.regs.rsp, (KSP & !15) - 11 * 8);
    let f = w.frame(11);
    assert_eq!(f[2..6], [0, 0, 0, 0xE02B]);
    assert_eq!(f[6], URIP);
    assert_eq!(f[9], USTACK_TOP - 0x118);
    assert_eq!(w.p.upcall_mask(0), 0, "not registered to mask events");
}
