//! The hypercalls of `cpu.rs` and `misc.rs`, driven as a guest kernel drives them: the
//! typed wrappers of `hypercall_abi::hypercall` load the register images, the test
//! [`World`] runs [`GuestCtx::hypercall`] on them (or `Loopback` runs `dispatch`), and
//! the guest sees `rax`. Expected behaviour: digest §1.2-§1.4, §5.8, §6.1-§6.12.
#![allow(clippy::cast_possible_truncation)]

use super::*;
use crate::domain::ShutdownReason;
use crate::regs::{Regs, rflags};
use crate::testutil::*;
use crate::traps::{CrashReason, GP, Outcome};
use crate::vcpu::Callback;
use hypercall_abi::Invoke;
use hypercall_abi::callback::{
    CALLBACKF_MASK_EVENTS, CallbackRegister, CallbackType, CallbackUnregister, XenNmiCallback,
};
use hypercall_abi::hypercall::{self as hc, Loopback};
use hypercall_abi::physdev::{PhysdevOpCompat, PhysdevSetIopl};
use hypercall_abi::sched::SchedShutdown;
use hypercall_abi::types::DomId;
use hypercall_abi::version::{
    PV_DOMU_FEATURES, PV_HWDOM_FEATURES, XenCompileInfo, XenFeatureInfo, XenPlatformParameters,
};
use hypercall_abi::vm_assist::VmAssistType;
use hypercall_abi::xen::arch::{IretContext, TI_DISABLE_EVENTS, VgcfFlags};
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, HYPERVISOR_VIRT_START};
use proptest::prelude::*;

const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn trap(vector: u8, flags: u8, cs: u16, address: u64) -> TrapInfo {
    TrapInfo {
        vector,
        flags,
        cs,
        _pad: 0,
        address,
    }
}

/// Writes a trap table (without adding a sentinel) at `va`.
fn put_table(w: &mut World, va: u64, entries: &[TrapInfo]) {
    for (i, t) in entries.iter().enumerate() {
        w.p.poke_obj(va + 16 * i as u64, t);
    }
}

// ---------------------------------------------------------------------------------------
// Dispatch and the register convention (§1.2)
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_and_unwired_hypercalls_are_enosys() {
    let mut w = World::kernel();
    for nr in [11, 31, 43, 49, 63, 64, 0x100, u64::MAX] {
        assert_eq!(
            Errno::decode(w.invoke(nr, [1, 2, 3, 4, 5])),
            E(Errno::ENOSYS),
            "nr {nr}"
        );
        assert_eq!(w.outcome, Outcome::Resume);
    }
}

#[test]
fn hypercall_preserves_every_register_but_rax() {
    let mut w = World::kernel();
    w.regs.rax = 17; // xen_version(XENVER_version)
    w.regs.rdi = 0;
    w.regs.vector = crate::regs::SYSCALL_VECTOR;
    let before = w.regs;
    w.run(|c| c.hypercall());
    assert_eq!(
        w.regs,
        Regs {
            rax: 0x0004_0011,
            ..before
        }
    );
}

#[test]
fn loopback_dispatch_drives_the_handler_like_the_guest_wrappers() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    let mut lb = Loopback { handler: w.ctx() };
    assert_eq!(hc::xen_version(&mut lb, 0, GuestPtr::NULL), Ok(0x0004_0011));
    assert_eq!(hc::xen_version(&mut lb, 6, ptr(KDATA)), Ok(0));
    assert_eq!(hc::vm_assist(&mut lb, 0, 99), E(Errno::EINVAL));
    assert_eq!(hc::fpu_taskswitch(&mut lb, 1), Ok(0));
    assert_eq!(Errno::decode(lb.invoke(64, [0; 5])), E(Errno::ENOSYS));
    assert!(w.vcpu.fpu_ts);
    assert_eq!(
        w.p.peek_obj::<XenFeatureInfo>(KDATA).submap,
        PV_DOMU_FEATURES
    );
}

// ---------------------------------------------------------------------------------------
// set_trap_table (§6.1)
// ---------------------------------------------------------------------------------------

#[test]
fn set_trap_table_installs_entries_up_to_the_sentinel_and_leaves_other_slots() {
    let mut w = World::kernel();
    w.set_trap(0x30, 3, false);
    put_table(
        &mut w,
        KDATA,
        &[
            trap(0, 0, 0xE033, handler(0)),
            trap(14, TI_DISABLE_EVENTS, 0xE033, handler(14)),
            trap(5, 3, 0xE033, 0), // sentinel: address 0, whatever else it says
            trap(3, 3, 0xE033, handler(3)),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.traps[0], trap(0, 0, 0xE033, handler(0)));
    assert_eq!(
        w.vcpu.traps[14],
        trap(14, TI_DISABLE_EVENTS, 0xE033, handler(14))
    );
    assert_eq!(
        w.vcpu.traps[5],
        TrapInfo::default(),
        "the sentinel is not installed"
    );
    assert_eq!(
        w.vcpu.traps[3],
        TrapInfo::default(),
        "entries after the sentinel are not read"
    );
    assert_eq!(
        w.vcpu.traps[0x30].address,
        handler(0x30),
        "unlisted slots unchanged"
    );
}

#[test]
fn set_trap_table_null_clears_every_entry() {
    let mut w = World::kernel();
    for v in 0..=255 {
        w.set_trap(v, 3, true);
    }
    assert_eq!(hc::set_trap_table(&mut w, GuestPtr::NULL), Ok(0));
    assert!(w.vcpu.traps.iter().all(|t| *t == TrapInfo::default()));
}

#[test]
fn set_trap_table_forces_the_selector_rpl_to_3() {
    let mut w = World::kernel();
    put_table(
        &mut w,
        KDATA,
        &[
            trap(1, 0, 0xE030, handler(1)),
            trap(2, 0, 0x10, handler(2)),
            trap(0, 0, 0, 0),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.traps[1].cs, 0xE033);
    assert_eq!(w.vcpu.traps[2].cs, 0x13);
}

#[test]
fn set_trap_table_later_entries_for_a_vector_win() {
    let mut w = World::kernel();
    put_table(
        &mut w,
        KDATA,
        &[
            trap(7, 0, 0xE033, handler(1)),
            trap(7, 3, 0xE033, handler(2)),
            trap(0, 0, 0, 0),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.traps[7], trap(7, 3, 0xE033, handler(2)));
}

#[test]
fn set_trap_table_non_canonical_address_is_einval_and_keeps_earlier_entries() {
    let mut w = World::kernel();
    put_table(
        &mut w,
        KDATA,
        &[
            trap(1, 0, 0xE033, handler(1)),
            trap(2, 0, 0xE033, NON_CANONICAL),
            trap(3, 0, 0xE033, handler(3)),
            trap(0, 0, 0, 0),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(KDATA)), E(Errno::EINVAL));
    assert_eq!(w.vcpu.traps[1].address, handler(1));
    assert_eq!(w.vcpu.traps[2], TrapInfo::default());
    assert_eq!(w.vcpu.traps[3], TrapInfo::default());
}

#[test]
fn set_trap_table_unreadable_entry_is_efault_and_keeps_earlier_entries() {
    let mut w = World::kernel();
    let va = KDATA + 0x4000 - 32; // two entries, then the end of the mapping
    put_table(
        &mut w,
        va,
        &[
            trap(1, 0, 0xE033, handler(1)),
            trap(2, 0, 0xE033, handler(2)),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(va)), E(Errno::EFAULT));
    assert_eq!(w.vcpu.traps[1].address, handler(1));
    assert_eq!(w.vcpu.traps[2].address, handler(2));
    assert_eq!(hc::set_trap_table(&mut w, ptr(UNMAPPED)), E(Errno::EFAULT));
    assert_eq!(
        hc::set_trap_table(&mut w, ptr(0xFFFF_8000_0000_0000)),
        E(Errno::EFAULT)
    );
}

#[test]
fn set_trap_table_longer_than_256_entries_continues_from_where_it_stopped() {
    let mut w = World::kernel();
    let n = 300u64;
    for i in 0..n {
        w.p.poke_obj(KDATA + 16 * i, &trap(i as u8, 0, 0xE033, handler(i)));
    }
    w.p.poke_obj(KDATA + 16 * n, &TrapInfo::default());
    let r = w.invoke(0, [KDATA, 11, 22, 33, 44]);
    // Xen's continuation: RIP back on the syscall, RAX the hypercall number again, the
    // argument registers rewritten to the remaining work.
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(r, 0);
    assert_eq!(w.regs.rip, KRIP);
    assert_eq!(w.regs.rax, 0);
    assert_eq!(w.regs.rdi, KDATA + 256 * 16);
    for v in 0..256 {
        assert_eq!(w.vcpu.traps[v].address, handler(v as u64), "vector {v}");
    }
    assert_eq!(reissue(&mut w), 0);
    assert_eq!(w.outcome, Outcome::Resume);
    for i in 256..n {
        assert_eq!(w.vcpu.traps[(i - 256) as usize].address, handler(i));
    }
    assert_eq!(w.vcpu.traps[200].address, handler(200));
}

// ---------------------------------------------------------------------------------------
// stack_switch, set_callbacks, callback_op, nmi_op (§6.2, §6.6)
// ---------------------------------------------------------------------------------------

#[test]
fn stack_switch_records_the_kernel_stack_with_rpl_3() {
    let mut w = World::kernel();
    assert_eq!(hc::stack_switch(&mut w, 0xE02B, KSP), Ok(0));
    assert_eq!((w.vcpu.kernel_ss, w.vcpu.kernel_sp), (0xE02B, KSP));
    assert_eq!(hc::stack_switch(&mut w, 0xE028, KSP - 0x100), Ok(0));
    assert_eq!((w.vcpu.kernel_ss, w.vcpu.kernel_sp), (0xE02B, KSP - 0x100));
}

#[test]
fn stack_switch_stack_is_used_by_the_next_bounce_from_user_mode() {
    let mut w = World::kernel();
    assert_eq!(hc::stack_switch(&mut w, 0xE02B, KSP - 0x40), Ok(0));
    w.vcpu.kernel_mode = false;
    w.vcpu.user_root = Some(UROOT);
    w.p.kernel_space = false;
    w.regs.rip = URIP;
    w.regs.cs = 0xE033;
    w.regs.rsp = USTACK_TOP - 0x100;
    w.set_trap(0, 0, false);
    assert_eq!(w.exception(0, 0, 0), Outcome::Resume);
    assert_eq!(w.regs.rsp, KSP - 0x40 - 56);
}

#[test]
fn set_callbacks_registers_event_failsafe_syscall_with_flags_0_and_returns_0() {
    let mut w = World::kernel();
    w.vcpu.callbacks.syscall = Callback {
        address: 1,
        mask_events: true,
    };
    assert_eq!(
        hc::set_callbacks(&mut w, handler(1), handler(2), handler(3)),
        Ok(0)
    );
    let cb = w.vcpu.callbacks;
    assert_eq!(
        cb.event,
        Callback {
            address: handler(1),
            mask_events: true
        }
    );
    assert_eq!(
        cb.failsafe,
        Callback {
            address: handler(2),
            mask_events: false
        }
    );
    assert_eq!(
        cb.syscall,
        Callback {
            address: handler(3),
            mask_events: false
        }
    );
}

#[test]
fn set_callbacks_returns_0_and_skips_non_canonical_addresses() {
    let mut w = World::kernel();
    assert_eq!(
        hc::set_callbacks(&mut w, handler(1), handler(2), handler(3)),
        Ok(0)
    );
    assert_eq!(
        hc::set_callbacks(&mut w, NON_CANONICAL, handler(5), NON_CANONICAL),
        Ok(0)
    );
    assert_eq!(w.vcpu.callbacks.event.address, handler(1));
    assert_eq!(w.vcpu.callbacks.failsafe.address, handler(5));
    assert_eq!(w.vcpu.callbacks.syscall.address, handler(3));
}

fn register(w: &mut World, ty: u16, flags: u16, address: u64) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &CallbackRegister {
            type_: ty,
            flags,
            _pad: 0,
            address,
        },
    );
    hc::callback_op(w, 0, ptr(KDATA))
}

fn unregister(w: &mut World, ty: u16) -> Result<u64, Errno> {
    w.p.poke_obj(
        KDATA,
        &CallbackUnregister {
            type_: ty,
            _unused: 0,
        },
    );
    hc::callback_op(w, 1, ptr(KDATA))
}

#[test]
fn callback_op_registers_each_type_with_its_masking_rule() {
    let mut w = World::kernel();
    let m = CALLBACKF_MASK_EVENTS;
    assert_eq!(
        register(&mut w, CallbackType::Event as u16, 0, handler(0)),
        Ok(0)
    );
    assert_eq!(
        register(&mut w, CallbackType::Failsafe as u16, m, handler(1)),
        Ok(0)
    );
    assert_eq!(
        register(&mut w, CallbackType::Syscall as u16, m, handler(2)),
        Ok(0)
    );
    assert_eq!(
        register(&mut w, CallbackType::Syscall32 as u16, 0, handler(7)),
        Ok(0)
    );
    assert_eq!(
        register(&mut w, CallbackType::Sysenter as u16, m, handler(5)),
        Ok(0)
    );
    assert_eq!(
        register(&mut w, CallbackType::Nmi as u16, 0, handler(4)),
        Ok(0)
    );
    let cb = w.vcpu.callbacks;
    assert_eq!(
        cb.event,
        Callback {
            address: handler(0),
            mask_events: true
        },
        "always masks"
    );
    assert_eq!(
        cb.failsafe,
        Callback {
            address: handler(1),
            mask_events: true
        }
    );
    assert_eq!(
        cb.syscall,
        Callback {
            address: handler(2),
            mask_events: true
        }
    );
    assert_eq!(
        cb.syscall32,
        Callback {
            address: handler(7),
            mask_events: false
        }
    );
    assert_eq!(
        cb.sysenter,
        Callback {
            address: handler(5),
            mask_events: true
        }
    );
    assert_eq!(
        cb.nmi,
        Callback {
            address: handler(4),
            mask_events: true
        },
        "always masks"
    );
    // The NMI callback is trap 2 with events disabled.
    assert_eq!(w.vcpu.traps[2].address, handler(4));
    assert!(w.vcpu.traps[2].disables_events());
    // Re-registering without the flag clears it.
    assert_eq!(
        register(&mut w, CallbackType::Syscall as u16, 0, handler(2)),
        Ok(0)
    );
    assert!(!w.vcpu.callbacks.syscall.mask_events);
}

#[test]
fn callback_op_register_with_a_non_canonical_address_is_einval() {
    for ty in [0u16, 1, 2, 4, 5, 7, 99] {
        let mut w = World::kernel();
        assert_eq!(
            register(&mut w, ty, 0, NON_CANONICAL),
            E(Errno::EINVAL),
            "type {ty}"
        );
        assert_eq!(w.vcpu.callbacks, Default::default());
        assert_eq!(w.vcpu.traps[2], TrapInfo::default());
    }
}

#[test]
fn callback_op_register_of_an_unknown_type_is_enosys() {
    let mut w = World::kernel();
    for ty in [3u16, 6, 8, 99, u16::MAX] {
        assert_eq!(
            register(&mut w, ty, 0, handler(1)),
            E(Errno::ENOSYS),
            "type {ty}"
        );
    }
    assert_eq!(w.vcpu.callbacks, Default::default());
}

#[test]
fn callback_op_unregisters_only_the_nmi_callback() {
    let mut w = World::kernel();
    assert_eq!(
        register(&mut w, CallbackType::Nmi as u16, 0, handler(4)),
        Ok(0)
    );
    assert_eq!(unregister(&mut w, CallbackType::Nmi as u16), Ok(0));
    assert_eq!(w.vcpu.traps[2].address, 0);
    for ty in [0u16, 1, 2, 5, 7] {
        assert_eq!(register(&mut w, ty, 0, handler(9)), Ok(0));
        assert_eq!(unregister(&mut w, ty), E(Errno::EINVAL), "type {ty}");
    }
    assert_eq!(
        w.vcpu.callbacks.event.address,
        handler(9),
        "refused unregister keeps it"
    );
}

#[test]
fn callback_op_unregister_of_an_unknown_type_is_enosys() {
    // Xen's unregister_guest_callback: the five known non-NMI types are -EINVAL, anything
    // else (including sysenter_deprecated, 3) takes the default branch, -ENOSYS.
    let mut w = World::kernel();
    for ty in [3u16, 6, 99] {
        assert_eq!(unregister(&mut w, ty), E(Errno::ENOSYS), "type {ty}");
    }
}

#[test]
fn callback_op_unknown_command_is_enosys_and_bad_argument_efault() {
    let mut w = World::kernel();
    assert_eq!(hc::callback_op(&mut w, 2, ptr(KDATA)), E(Errno::ENOSYS));
    assert_eq!(hc::callback_op(&mut w, 0, ptr(UNMAPPED)), E(Errno::EFAULT));
    assert_eq!(hc::callback_op(&mut w, 1, ptr(UNMAPPED)), E(Errno::EFAULT));
}

#[test]
fn nmi_op_registers_and_unregisters_trap_2_with_events_disabled() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenNmiCallback {
            handler_address: handler(2),
            pad: 0,
        },
    );
    assert_eq!(hc::nmi_op(&mut w, 0, ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.traps[2].address, handler(2));
    assert!(w.vcpu.traps[2].disables_events());
    assert_eq!(w.exception(2, 0, 0), Outcome::Resume);
    assert_eq!((w.regs.rip, w.p.mask(0)), (handler(2), 1));

    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenNmiCallback {
            handler_address: handler(2),
            pad: 0,
        },
    );
    assert_eq!(hc::nmi_op(&mut w, 0, ptr(KDATA)), Ok(0));
    assert_eq!(hc::nmi_op(&mut w, 1, GuestPtr::NULL), Ok(0));
    assert_eq!(w.vcpu.traps[2].address, 0);
}

#[test]
fn nmi_op_rejects_non_canonical_handlers_unknown_commands_and_bad_pointers() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenNmiCallback {
            handler_address: NON_CANONICAL,
            pad: 0,
        },
    );
    assert_eq!(hc::nmi_op(&mut w, 0, ptr(KDATA)), E(Errno::EINVAL));
    assert_eq!(w.vcpu.traps[2], TrapInfo::default());
    assert_eq!(hc::nmi_op(&mut w, 2, ptr(KDATA)), E(Errno::ENOSYS));
    assert_eq!(hc::nmi_op(&mut w, 0, ptr(UNMAPPED)), E(Errno::EFAULT));
}

// ---------------------------------------------------------------------------------------
// fpu_taskswitch, set_segment_base, set/get_debugreg (§6.6)
// ---------------------------------------------------------------------------------------

#[test]
fn fpu_taskswitch_sets_and_clears_the_virtual_ts() {
    let mut w = World::kernel();
    for (set, ts) in [(1, true), (0, false), (-1, true), (0, false), (2, true)] {
        assert_eq!(hc::fpu_taskswitch(&mut w, set), Ok(0));
        assert_eq!(w.vcpu.fpu_ts, ts, "set {set}");
    }
}

#[test]
fn set_segment_base_sets_fs_and_both_gs_bases_and_reloads() {
    let mut w = World::kernel();
    assert_eq!(hc::set_segment_base(&mut w, 0, 0x1000), Ok(0));
    assert_eq!(hc::set_segment_base(&mut w, 1, 0x2000), Ok(0));
    assert_eq!(
        hc::set_segment_base(&mut w, 2, 0xFFFF_FFFF_8000_3000),
        Ok(0)
    );
    assert_eq!(w.vcpu.fs_base, 0x1000);
    assert_eq!(w.vcpu.gs_base_user, 0x2000);
    assert_eq!(w.vcpu.gs_base_kernel, 0xFFFF_FFFF_8000_3000);
    assert_eq!(
        w.p.load_mode_calls.last(),
        Some(&(true, 0xFFFF_FFFF_8000_3000, 0x1000))
    );
}

/// `SEGBASE_GS_USER_SEL` loads the selector (RPL 3; NULL when it does not load) and
/// takes the user GS base from it; never an error.
#[test]
fn set_segment_base_gs_user_sel_loads_the_selector() {
    let mut w = World::kernel();
    w.vcpu.gs_base_user = 0x5000;
    w.vcpu.gs_base_kernel = 0x6000;
    assert_eq!(hc::set_segment_base(&mut w, 3, 0xE028), Ok(0));
    assert_eq!((w.vcpu.gs_sel_user, w.vcpu.gs_base_user), (0xE02B, 0));
    assert_eq!(w.vcpu.gs_base_kernel, 0x6000, "the kernel's base stays");
    w.vcpu.gs_base_user = 0x5000;
    assert_eq!(hc::set_segment_base(&mut w, 3, 0x1234_0abc), Ok(0));
    assert_eq!((w.vcpu.gs_sel_user, w.vcpu.gs_base_user), (0, 0));
}

#[test]
fn set_segment_base_non_canonical_is_einval_and_changes_nothing() {
    let mut w = World::kernel();
    for which in 0..3 {
        assert_eq!(
            hc::set_segment_base(&mut w, which, NON_CANONICAL),
            E(Errno::EINVAL)
        );
    }
    assert_eq!(
        (w.vcpu.fs_base, w.vcpu.gs_base_user, w.vcpu.gs_base_kernel),
        (0, 0, 0)
    );
}

#[test]
fn set_segment_base_unknown_which_is_einval() {
    let mut w = World::kernel();
    for which in [4, 5, 0x100, u32::MAX] {
        assert_eq!(
            hc::set_segment_base(&mut w, which, 0),
            E(Errno::EINVAL),
            "which {which}"
        );
    }
}

#[test]
fn set_segment_base_gs_user_sel_loads_a_selector_and_resets_the_user_base() {
    let mut w = World::kernel();
    w.vcpu.gs_base_user = 0x5000;
    assert_eq!(hc::set_segment_base(&mut w, 3, 0xE02B), Ok(0));
    assert_eq!((w.vcpu.gs_sel_user, w.vcpu.gs_base_user), (0xE02B, 0));
    // RPL forced to 3; only bits 15:0 are the selector.
    assert_eq!(
        hc::set_segment_base(&mut w, 3, 0xFFFF_0000_0000_E028),
        Ok(0)
    );
    assert_eq!(w.vcpu.gs_sel_user, 0xE02B);
    // A selector that does not load becomes NULL, silently.
    assert_eq!(hc::set_segment_base(&mut w, 3, 0x1234), Ok(0));
    assert_eq!(w.vcpu.gs_sel_user, 0);
    assert_eq!(
        w.vcpu.gs_base_kernel, 0,
        "the kernel GS base is not touched"
    );
}

#[test]
fn set_debugreg_dr0_to_dr3_take_guest_addresses() {
    let mut w = World::kernel();
    for (reg, va) in [
        (0, KTEXT),
        (1, 0x1000),
        (2, 0x0000_7FFF_FFFF_FFF8),
        (3, 0xFFFF_8800_0000_0000),
        // Only the start is checked (Xen's __addr_ok).
        (0, 0x0000_7FFF_FFFF_FFFF),
    ] {
        assert_eq!(hc::set_debugreg(&mut w, reg, va), Ok(0), "dr{reg}");
        assert_eq!(hc::get_debugreg(&mut w, reg), Ok(va), "dr{reg}");
    }
}

#[test]
fn set_debugreg_dr0_to_dr3_refuse_hypervisor_and_non_canonical_addresses_with_eperm() {
    let mut w = World::kernel();
    for va in [
        0xFFFF_8000_0000_0000,
        0xFFFF_82D0_8000_0000,
        0xFFFF_87FF_FFFF_FFF8,
        NON_CANONICAL,
        0xFFFF_87FF_FFFF_FFFF,
    ] {
        assert_eq!(hc::set_debugreg(&mut w, 0, va), E(Errno::EPERM), "{va:#x}");
    }
    assert_eq!(w.vcpu.debug.addr, [0; 4]);
}

#[test]
fn debug_registers_start_at_their_reset_values() {
    let mut w = World::kernel();
    assert_eq!(hc::get_debugreg(&mut w, 6), Ok(0xFFFF_0FF0));
    assert_eq!(hc::get_debugreg(&mut w, 7), Ok(0x400));
    assert_eq!(hc::get_debugreg(&mut w, 0), Ok(0));
}

#[test]
fn set_debugreg_dr6_dr7_refuse_upper_32_bits_with_einval() {
    let mut w = World::kernel();
    for reg in [4, 5, 6, 7] {
        assert_eq!(
            hc::set_debugreg(&mut w, reg, 1 << 32),
            E(Errno::EINVAL),
            "dr{reg}"
        );
    }
    assert_eq!((w.vcpu.debug.dr6, w.vcpu.debug.dr7), (0xFFFF_0FF0, 0x400));
}

#[test]
fn set_debugreg_dr7_general_detect_is_eperm() {
    let mut w = World::kernel();
    assert_eq!(hc::set_debugreg(&mut w, 7, 1 << 13), E(Errno::EPERM));
    assert_eq!(hc::set_debugreg(&mut w, 7, (1 << 13) | 1), E(Errno::EPERM));
    assert_eq!(w.vcpu.debug.dr7, 0x400);
}

#[test]
fn set_debugreg_dr7_keeps_reserved_bits_and_enables_breakpoints() {
    let mut w = World::kernel();
    let v = 0x000D_0003; // L0, G0, RW0 = 01 (write), LEN0 = 11
    assert_eq!(
        hc::set_debugreg(&mut w, 7, v | (1 << 12) | (1 << 14) | (1 << 15)),
        Ok(0)
    );
    assert_eq!(hc::get_debugreg(&mut w, 7), Ok(v | 0x400));
    assert_eq!(hc::set_debugreg(&mut w, 6, 0x4001), Ok(0));
    assert_eq!(hc::get_debugreg(&mut w, 6), Ok(0xFFFF_4FF1));
}

#[test]
fn set_debugreg_dr6_bit_12_reads_as_zero() {
    // Xen (pv/misc-hypercalls.c via x86_adj_dr6_rsvd): DR6 bit 12 is forced to 0
    // (X86_DR6_ZEROS = 0x1000), bits 4-11 and 16-31 to 1.
    let mut w = World::kernel();
    assert_eq!(hc::set_debugreg(&mut w, 6, 0x1001), Ok(0));
    assert_eq!(hc::get_debugreg(&mut w, 6), Ok(0xFFFF_0FF1));
}

#[test]
fn set_debugreg_dr7_io_breakpoint_without_cr4_de_is_eperm() {
    let mut w = World::kernel();
    // L0 enabled, RW0 = 10b (I/O).
    assert_eq!(hc::set_debugreg(&mut w, 7, (2 << 16) | 1), E(Errno::EPERM));
    assert_eq!(w.vcpu.debug.dr7, 0x400);
}

#[test]
fn set_debugreg_dr7_active_with_any_io_rw_field_is_eperm() {
    // Xen (pv/misc-hypercalls.c set_debugreg): once any enable bit is set, *every* R/W
    // field is checked for 10b (I/O), not only those of enabled breakpoints.
    let mut w = World::kernel();
    assert_eq!(hc::set_debugreg(&mut w, 7, (2 << 20) | 1), E(Errno::EPERM)); // L0, RW1 = I/O
    assert_eq!(w.vcpu.debug.dr7, 0x400);
}

#[test]
fn set_debugreg_dr4_dr5_alias_dr6_dr7() {
    let mut w = World::kernel();
    assert_eq!(hc::set_debugreg(&mut w, 4, 0x1), Ok(0));
    assert_eq!(hc::get_debugreg(&mut w, 6), Ok(0xFFFF_0FF1));
    assert_eq!(hc::set_debugreg(&mut w, 5, 0x2), Ok(0));
    assert_eq!(hc::get_debugreg(&mut w, 7), Ok(0x402));
    assert_eq!(hc::get_debugreg(&mut w, 4), Ok(0xFFFF_0FF1));
    assert_eq!(hc::get_debugreg(&mut w, 5), Ok(0x402));
}

#[test]
fn a_hypercall_stepped_over_traps_after_its_syscall_with_its_result() {
    let mut w = World::kernel();
    w.set_trap(crate::traps::DB, 0, true);
    w.regs.rflags |= rflags::TF;
    let flags = w.regs.rflags;
    let r = hc::xen_version(&mut w, 0, GuestPtr::NULL);
    assert_eq!(
        r,
        Ok(0x0004_0011),
        "rax holds the result in the #DB handler"
    );
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(w.regs.rip, handler(1));
    // rcx, r11, rip (after the syscall), cs, rflags (with TF).
    let f = w.frame(5);
    assert_eq!((f[2], f[4]), (KRIP + 2, flags));
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_4FF0, "DR6.BS");

    // Without TF nothing happens.
    let mut w = World::kernel();
    w.set_trap(crate::traps::DB, 0, true);
    assert_eq!(hc::xen_version(&mut w, 0, GuestPtr::NULL), Ok(0x0004_0011));
    assert_eq!(w.regs.rip, KRIP + 2);
    assert_eq!(w.vcpu.debug.dr6, 0xFFFF_0FF0);
}

#[test]
fn debugreg_bad_register_is_enodev() {
    let mut w = World::kernel();
    for reg in [8, 15, 100, -1, i32::MIN] {
        assert_eq!(
            hc::set_debugreg(&mut w, reg, 0),
            E(Errno::ENODEV),
            "set {reg}"
        );
        assert_eq!(hc::get_debugreg(&mut w, reg), E(Errno::ENODEV), "get {reg}");
    }
}

// ---------------------------------------------------------------------------------------
// iret (§6.5)
// ---------------------------------------------------------------------------------------

fn iret_frame(rip: u64, cs: u64, rflags: u64, rsp: u64) -> IretContext {
    IretContext {
        rax: 0x0123_4567,
        r11: 0x1111_2222,
        rcx: 0x3333_4444,
        flags: 0,
        rip,
        cs,
        rflags,
        rsp,
        ss: 0xE02B,
    }
}

/// Runs `iret` with `frame` at the kernel's RSP.
fn iret(w: &mut World, frame: &IretContext) -> u64 {
    let at = KSTACK_TOP - 0x400;
    w.p.poke_obj(at, frame);
    w.regs.rsp = at;
    w.invoke(23, [0xA, 0xB, 0xC, 0xD, 0xE])
}

#[test]
fn iret_to_kernel_restores_the_frame_and_stays_in_kernel_mode() {
    let mut w = World::kernel();
    let f = iret_frame(KTEXT + 0x500, 0xE030, 0x246, KSTACK_TOP - 0x300);
    let before = w.regs;
    let rax = iret(&mut w, &f);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(rax, 0x0123_4567, "RAX is the frame's, not a return value");
    assert_eq!(w.regs.rip, KTEXT + 0x500);
    assert_eq!(w.regs.cs, 0xE033);
    assert_eq!(w.regs.rflags, 0x246);
    assert_eq!(w.regs.rsp, KSTACK_TOP - 0x300);
    assert_eq!(w.regs.ss, 0xE02B);
    assert_eq!((w.regs.rcx, w.regs.r11), (0x3333_4444, 0x1111_2222));
    assert!(w.vcpu.kernel_mode);
    assert!(w.p.load_mode_calls.is_empty());
    assert_eq!(w.p.mask(0), 0);
    // Other GPRs untouched (including the argument registers).
    assert_eq!(
        [
            w.regs.rbx, w.regs.rbp, w.regs.r12, w.regs.r13, w.regs.r14, w.regs.r15, w.regs.r9
        ],
        [
            before.rbx, before.rbp, before.r12, before.r13, before.r14, before.r15, before.r9
        ]
    );
    assert_eq!(
        [w.regs.rdi, w.regs.rsi, w.regs.rdx, w.regs.r10, w.regs.r8],
        [0xA, 0xB, 0xC, 0xD, 0xE]
    );
}

#[test]
fn iret_sets_the_upcall_mask_to_the_inverse_of_the_frame_if_and_forces_hardware_if() {
    let mut w = World::kernel();
    iret(
        &mut w,
        &iret_frame(KTEXT, 0xE030, 0x002, KSTACK_TOP - 0x300),
    );
    assert_eq!(w.p.mask(0), 1);
    assert_eq!(w.regs.rflags, 0x202);

    let mut w = World::kernel();
    w.p.masks.insert(0, 1);
    iret(
        &mut w,
        &iret_frame(KTEXT, 0xE030, 0x202, KSTACK_TOP - 0x300),
    );
    assert_eq!(w.p.mask(0), 0);
}

#[test]
fn iret_strips_iopl_and_vm() {
    let mut w = World::kernel();
    let fl = rflags::IOPL | rflags::VM | rflags::IF | rflags::CF | rflags::FIXED;
    iret(&mut w, &iret_frame(KTEXT, 0xE030, fl, KSTACK_TOP - 0x300));
    assert_eq!(w.regs.rflags, rflags::IF | rflags::CF | rflags::FIXED);
    assert_eq!(
        w.vcpu.iopl, 0,
        "without architectural_iopl the virtual IOPL is kept"
    );
}

#[test]
fn iret_with_architectural_iopl_loads_the_virtual_iopl() {
    let mut w = World::kernel();
    w.dom.vm_assist |= VmAssistType::ArchitecturalIopl.bit();
    iret(
        &mut w,
        &iret_frame(KTEXT, 0xE030, (2 << 12) | 0x202, KSTACK_TOP - 0x300),
    );
    assert_eq!(w.vcpu.iopl, 2);
    assert_eq!(w.regs.rflags & rflags::IOPL, 0);
}

#[test]
fn iret_to_user_switches_to_user_mode() {
    let mut w = World::kernel();
    w.vcpu.user_root = Some(UROOT);
    iret(&mut w, &iret_frame(URIP, 0xE033, 0x202, USTACK_TOP - 0x80));
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert!(!w.vcpu.kernel_mode);
    assert_eq!(w.p.load_mode_calls, [(false, 0, 0)]);
    assert!(!w.p.kernel_space);
    assert_eq!((w.regs.rip, w.regs.cs, w.regs.ss), (URIP, 0xE033, 0xE02B));
    assert_eq!(w.regs.rsp, USTACK_TOP - 0x80);
}

#[test]
fn iret_to_user_without_user_page_tables_crashes() {
    let mut w = World::kernel();
    iret(&mut w, &iret_frame(URIP, 0xE033, 0x202, USTACK_TOP - 0x80));
    assert_eq!(w.outcome, Outcome::Crash(CrashReason::NoUserPageTables));
    assert!(w.vcpu.kernel_mode);
}

#[test]
fn iret_in_syscall_returns_with_rcx_rip_and_r11_rflags() {
    let mut w = World::kernel();
    w.vcpu.user_root = Some(UROOT);
    let mut f = iret_frame(URIP, 0xE033, 0x247 | rflags::IOPL, USTACK_TOP - 0x80);
    f.flags = VgcfFlags::IN_SYSCALL.bits();
    iret(&mut w, &f);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(w.regs.rcx, URIP);
    assert_eq!(w.regs.r11, 0x247);
    assert_eq!(w.regs.rflags, 0x247);
    assert_eq!((w.regs.cs, w.regs.ss), (0xE033, 0xE02B));
    assert_eq!(w.regs.rax, 0x0123_4567);
}

#[test]
fn iret_forces_selector_rpl_3() {
    let mut w = World::kernel();
    let mut f = iret_frame(KTEXT, 0xE030, 0x202, KSTACK_TOP - 0x300);
    f.ss = 0xE028;
    iret(&mut w, &f);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!((w.regs.cs, w.regs.ss), (0xE033, 0xE02B));
}

#[test]
fn iret_with_an_unreadable_frame_crashes() {
    let mut w = World::kernel();
    w.regs.rsp = UNMAPPED;
    w.invoke(23, [0; 5]);
    assert_eq!(
        w.outcome,
        Outcome::Crash(CrashReason::BadIretFrame { rsp: UNMAPPED })
    );
    let mut w = World::kernel();
    w.regs.rsp = KSTACK_TOP - 0x40; // the 72-byte frame runs off the stack mapping
    w.invoke(23, [0; 5]);
    assert!(matches!(
        w.outcome,
        Outcome::Crash(CrashReason::BadIretFrame { .. })
    ));
}

#[test]
fn iret_with_a_hypervisor_code_selector_crashes_for_a_bad_cs() {
    let mut w = World::kernel();
    iret(
        &mut w,
        &iret_frame(KTEXT, 0xE008, 0x202, KSTACK_TOP - 0x300),
    );
    assert_eq!(
        w.outcome,
        Outcome::Crash(CrashReason::BadIretCs { cs: 0xE008 })
    );
    assert!(w.vcpu.kernel_mode);
    assert_eq!(
        CrashReason::BadIretCs { cs: 0xE008 }.to_string(),
        "iret with an unusable code selector 0xe008"
    );
}

#[test]
fn iret_with_a_hypervisor_stack_selector_crashes_for_a_bad_ss() {
    let mut w = World::kernel();
    let mut f = iret_frame(KTEXT, 0xE030, 0x202, KSTACK_TOP - 0x300);
    f.ss = 0xE010;
    iret(&mut w, &f);
    assert_eq!(
        w.outcome,
        Outcome::Crash(CrashReason::BadIretSs { ss: 0xE010 })
    );
    assert_eq!(
        CrashReason::BadIretSs { ss: 0xE010 }.to_string(),
        "iret with an unusable stack selector 0xe010"
    );
}

#[test]
fn iret_to_a_non_canonical_rip_crashes_for_a_bad_rip() {
    let mut w = World::kernel();
    let rip = 0x0000_8000_0000_0000;
    iret(&mut w, &iret_frame(rip, 0xE030, 0x202, KSTACK_TOP - 0x300));
    assert_eq!(w.outcome, Outcome::Crash(CrashReason::BadIretRip { rip }));
    assert_eq!(
        CrashReason::BadIretRip { rip }.to_string(),
        "iret to a non-canonical address 0x800000000000"
    );
}

#[test]
fn iret_unreadable_frame_reason_names_the_stack() {
    assert_eq!(
        CrashReason::BadIretFrame { rsp: 0x1000 }.to_string(),
        "unreadable iret frame at 0x1000"
    );
}

#[test]
fn bounce_then_iret_restores_the_interrupted_user_context() {
    let mut w = World::user();
    w.set_trap(GP, 0, false);
    w.code(&[0xF4]); // hlt: #GP(0), not emulated
    w.p.masks.insert(0, 0);
    w.regs.rflags = 0x2C7 | rflags::IF; // some arithmetic flags
    let user = w.regs;
    assert_eq!(w.exception(GP, 0, 0), Outcome::Resume);
    assert!(w.vcpu.kernel_mode);
    // The guest handler: pop rcx, r11, the error code; then return with HYPERVISOR_iret:
    // push flags (0), jmp to the stub which pushes rcx, r11, rax.
    let frame = w.frame(8);
    let base = w.regs.rsp + 24; // past rcx, r11, error code: RIP, CS, RFLAGS, RSP, SS
    let ctx_at = base - 32;
    w.p.poke_obj(
        ctx_at,
        &IretContext {
            rax: user.rax,
            r11: frame[1],
            rcx: frame[0],
            flags: 0,
            rip: frame[3],
            cs: frame[4],
            rflags: frame[5],
            rsp: frame[6],
            ss: frame[7],
        },
    );
    w.regs.rsp = ctx_at;
    w.invoke(23, [user.rdi, user.rsi, user.rdx, user.r10, user.r8]);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert!(!w.vcpu.kernel_mode);
    assert_eq!(w.p.mask(0), 0);
    let mut expect = user;
    expect.vector = w.regs.vector;
    expect.error_code = w.regs.error_code;
    assert_eq!(w.regs, expect);
}

// ---------------------------------------------------------------------------------------
// xen_version (§6.12)
// ---------------------------------------------------------------------------------------

/// Fills `len + 16` bytes at KDATA with 0xEE, so writes past the buffer show.
fn dirty(w: &mut World, len: usize) {
    w.p.poke(KDATA, &std::vec![0xEE; len + 16]);
}

/// A NUL-terminated string at the start of `buf` whose padding is all zero.
fn c_string(buf: &[u8]) -> &[u8] {
    let nul = buf.iter().position(|&b| b == 0).expect("NUL-terminated");
    assert!(
        buf[nul..].iter().all(|&b| b == 0),
        "bytes after the NUL must be zero"
    );
    &buf[..nul]
}

#[test]
fn xen_version_version_is_4_17() {
    let mut w = World::kernel();
    assert_eq!(hc::xen_version(&mut w, 0, GuestPtr::NULL), Ok(0x0004_0011));
    assert_eq!(
        hc::xen_version(&mut w, 0, ptr(UNMAPPED)),
        Ok(0x0004_0011),
        "arg ignored"
    );
}

#[test]
fn xen_version_extraversion_is_dot_7_nul_padded_in_16_bytes() {
    let mut w = World::kernel();
    dirty(&mut w, 16);
    assert_eq!(hc::xen_version(&mut w, 1, ptr(KDATA)), Ok(0));
    let b = w.p.peek(KDATA, 17);
    assert_eq!(c_string(&b[..16]), b".7");
    assert_eq!(b[16], 0xEE, "exactly 16 bytes written");
}

#[test]
fn xen_version_compile_info_strings_are_nul_padded() {
    let mut w = World::kernel();
    dirty(&mut w, 144);
    assert_eq!(hc::xen_version(&mut w, 2, ptr(KDATA)), Ok(0));
    let info: XenCompileInfo = w.p.peek_obj(KDATA);
    c_string(&info.compiler);
    c_string(&info.compile_by);
    c_string(&info.compile_domain);
    c_string(&info.compile_date);
    assert_eq!(w.p.peek(KDATA + 144, 1), [0xEE]);
}

#[test]
fn xen_version_capabilities_is_xen_3_0_x86_64() {
    let mut w = World::kernel();
    dirty(&mut w, 1024);
    assert_eq!(hc::xen_version(&mut w, 3, ptr(KDATA)), Ok(0));
    let b = w.p.peek(KDATA, 1025);
    let caps = std::str::from_utf8(c_string(&b[..1024])).expect("ascii");
    assert_eq!(
        caps.split_whitespace().collect::<std::vec::Vec<_>>(),
        ["xen-3.0-x86_64"]
    );
    assert_eq!(b[1024], 0xEE);
}

#[test]
fn xen_version_changeset_and_guest_handle() {
    let mut w = World::kernel();
    dirty(&mut w, 64);
    assert_eq!(hc::xen_version(&mut w, 4, ptr(KDATA)), Ok(0));
    assert!(!c_string(&w.p.peek(KDATA, 64)).is_empty());
    assert_eq!(w.p.peek(KDATA + 64, 1), [0xEE]);
    dirty(&mut w, 16);
    assert_eq!(hc::xen_version(&mut w, 8, ptr(KDATA)), Ok(0));
    assert_eq!(w.p.peek(KDATA, 17), [&[0u8; 16][..], &[0xEE]].concat());
}

#[test]
fn xen_version_platform_parameters_is_hypervisor_virt_start() {
    let mut w = World::kernel();
    assert_eq!(hc::xen_version(&mut w, 5, ptr(KDATA)), Ok(0));
    let pp: XenPlatformParameters = w.p.peek_obj(KDATA);
    assert_eq!(pp.virt_start, HYPERVISOR_VIRT_START);
}

#[test]
fn xen_version_pagesize_is_4096() {
    let mut w = World::kernel();
    assert_eq!(hc::xen_version(&mut w, 7, GuestPtr::NULL), Ok(4096));
}

#[test]
fn xen_version_pagesize_with_a_non_null_argument_is_einval() {
    // Xen common/kernel.c: `return (!guest_handle_is_null(arg) ? -EINVAL : PAGE_SIZE);`
    // (the ABI crate documents "arg must be null").
    let mut w = World::kernel();
    assert_eq!(hc::xen_version(&mut w, 7, ptr(KDATA)), E(Errno::EINVAL));
}

#[test]
fn xen_version_get_features_fills_submap_0_only() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenFeatureInfo {
            submap_idx: 0,
            submap: 0xFFFF_FFFF,
        },
    );
    assert_eq!(hc::xen_version(&mut w, 6, ptr(KDATA)), Ok(0));
    assert_eq!(
        w.p.peek_obj::<XenFeatureInfo>(KDATA),
        XenFeatureInfo {
            submap_idx: 0,
            submap: PV_DOMU_FEATURES
        }
    );

    let mut w = World::dom0();
    w.p.poke_obj(
        KDATA,
        &XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    assert_eq!(hc::xen_version(&mut w, 6, ptr(KDATA)), Ok(0));
    assert_eq!(
        w.p.peek_obj::<XenFeatureInfo>(KDATA).submap,
        PV_HWDOM_FEATURES
    );

    let mut w = World::kernel();
    w.dom.vm_assist |= VmAssistType::PaeExtendedCr3.bit();
    w.p.poke_obj(
        KDATA,
        &XenFeatureInfo {
            submap_idx: 0,
            submap: 0,
        },
    );
    assert_eq!(hc::xen_version(&mut w, 6, ptr(KDATA)), Ok(0));
    assert_eq!(
        w.p.peek_obj::<XenFeatureInfo>(KDATA).submap,
        PV_DOMU_FEATURES | 1 << 4
    );

    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &XenFeatureInfo {
            submap_idx: 1,
            submap: 0x77,
        },
    );
    assert_eq!(hc::xen_version(&mut w, 6, ptr(KDATA)), E(Errno::EINVAL));
    assert_eq!(
        w.p.peek_obj::<XenFeatureInfo>(KDATA),
        XenFeatureInfo {
            submap_idx: 1,
            submap: 0x77
        }
    );
}

#[test]
fn xen_version_commandline_is_denied_to_domus() {
    let mut w = World::dom0();
    dirty(&mut w, 1024);
    assert_eq!(hc::xen_version(&mut w, 9, ptr(KDATA)), Ok(0));
    let b = w.p.peek(KDATA, 1025);
    assert_eq!(c_string(&b[..1024]), w.p.cmdline.as_bytes());
    assert_eq!(b[1024], 0xEE);

    // Xen 4.17's default XSM policy answers "<denied>" (and 0) to an unprivileged
    // domain, with the rest of the buffer zero.
    let mut w = World::kernel();
    dirty(&mut w, 1024);
    assert_eq!(hc::xen_version(&mut w, 9, ptr(KDATA)), Ok(0));
    let b = w.p.peek(KDATA, 1024);
    assert_eq!(c_string(&b), b"<denied>");
    assert!(b[8..].iter().all(|&x| x == 0));
}

#[test]
fn xen_version_build_id_is_eperm_for_domu() {
    let mut w = World::kernel();
    assert_eq!(hc::xen_version(&mut w, 10, ptr(KDATA)), E(Errno::EPERM));
    let mut w = World::dom0();
    assert_eq!(hc::xen_version(&mut w, 10, ptr(KDATA)), E(Errno::ENODATA));
}

#[test]
fn xen_version_unknown_command_is_enosys() {
    let mut w = World::dom0();
    for cmd in [11, 12, 13, 14, 99, u32::MAX] {
        assert_eq!(
            hc::xen_version(&mut w, cmd, ptr(KDATA)),
            E(Errno::ENOSYS),
            "cmd {cmd}"
        );
    }
}

#[test]
fn xen_version_with_a_faulting_buffer_is_efault() {
    for cmd in [1, 2, 3, 4, 5, 6, 8, 9] {
        let mut w = World::dom0();
        assert_eq!(
            hc::xen_version(&mut w, cmd, ptr(UNMAPPED)),
            E(Errno::EFAULT),
            "cmd {cmd}"
        );
        let mut w = World::dom0();
        w.p.protect(KDATA, Perm::ReadOnly);
        assert_eq!(
            hc::xen_version(&mut w, cmd, ptr(KDATA)),
            E(Errno::EFAULT),
            "ro cmd {cmd}"
        );
        let mut w = World::dom0();
        let hv = 0xFFFF_8000_0000_0000;
        assert_eq!(
            hc::xen_version(&mut w, cmd, ptr(hv)),
            E(Errno::EFAULT),
            "hv cmd {cmd}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// console_io (§6.11)
// ---------------------------------------------------------------------------------------

fn write_console(w: &mut World, bytes: &[u8]) -> Result<u64, Errno> {
    w.p.poke(KDATA, bytes);
    hc::console_io(w, 0, bytes.len() as u32, ptr(KDATA))
}

#[test]
fn console_write_is_line_buffered_per_domain_without_a_prefix() {
    let mut w = World::kernel();
    assert_eq!(write_console(&mut w, b"hello\nwor"), Ok(0));
    assert_eq!(w.p.console_text(), ["hello"]);
    assert_eq!(write_console(&mut w, b"ld\n"), Ok(0));
    assert_eq!(w.p.console_text(), ["hello", "world"]);
    assert!(w.p.console.iter().all(|(d, _)| *d == DomId(1)));
}

#[test]
fn console_write_drops_non_printable_bytes_for_domu() {
    let mut w = World::kernel();
    assert_eq!(write_console(&mut w, b"a\x07b\x1bc\td\x7f\xffe\r\n"), Ok(0));
    assert_eq!(w.p.console, [(DomId(1), b"abc\tde".to_vec())]);
}

#[test]
fn console_write_keeps_non_printable_bytes_for_dom0() {
    let mut w = World::dom0();
    assert_eq!(write_console(&mut w, b"a\x07b\x1b[0m\r\n"), Ok(0));
    assert_eq!(w.p.console, [(DomId(0), b"a\x07b\x1b[0m\r".to_vec())]);
}

#[test]
fn console_write_of_more_than_4096_bytes_continues() {
    let mut w = World::kernel();
    let text: std::vec::Vec<u8> = (0..50u8)
        .flat_map(|i| {
            let mut l = std::vec![b'a' + i % 26; 99];
            l.push(b'\n');
            l
        })
        .collect();
    assert_eq!(text.len(), 5000);
    w.p.poke(KDATA, &text);
    w.invoke(18, [0, 5000, KDATA, 0, 0]);
    assert_eq!(w.outcome, Outcome::RegsReplaced);
    assert_eq!(w.regs.rip, KRIP);
    assert_eq!(w.regs.rax, 18);
    assert_eq!(
        [w.regs.rdi, w.regs.rsi, w.regs.rdx],
        [0, 5000 - 4096, KDATA + 4096]
    );
    assert_eq!(w.p.console.len(), 40);
    assert_eq!(reissue(&mut w), 0);
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(w.p.console.len(), 50);
    for (i, (_, l)) in w.p.console.iter().enumerate() {
        assert_eq!(*l, std::vec![b'a' + (i as u8) % 26; 99], "line {i}");
    }
}

#[test]
fn console_write_of_exactly_4096_bytes_does_not_continue() {
    let mut w = World::kernel();
    w.p.poke(KDATA, &[b'x'; 4096]);
    assert_eq!(hc::console_io(&mut w, 0, 4096, ptr(KDATA)), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume);
}

#[test]
fn console_write_from_a_bad_buffer_is_efault() {
    let mut w = World::kernel();
    assert_eq!(
        hc::console_io(&mut w, 0, 10, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
    assert_eq!(
        hc::console_io(&mut w, 0, 10, ptr(0xFFFF_8000_0000_0000)),
        E(Errno::EFAULT)
    );
    assert_eq!(
        hc::console_io(&mut w, 0, 0x100, ptr(KDATA + 0x4000 - 0x80)),
        E(Errno::EFAULT)
    );
    assert_eq!(hc::console_io(&mut w, 0, 0, GuestPtr::NULL), Ok(0));
}

#[test]
fn console_read_is_eperm_for_domu_and_bounded_for_dom0() {
    let mut w = World::kernel();
    assert_eq!(hc::console_io(&mut w, 1, 16, ptr(KDATA)), E(Errno::EPERM));
    let mut w = World::dom0();
    assert_eq!(
        hc::console_io(&mut w, 1, 0x8000_0000, ptr(KDATA)),
        E(Errno::E2BIG)
    );
    assert_eq!(
        hc::console_io(&mut w, 1, u32::MAX, ptr(KDATA)),
        E(Errno::E2BIG)
    );
    assert_eq!(hc::console_io(&mut w, 1, 16, ptr(KDATA)), Ok(0));
    assert_eq!(hc::console_io(&mut w, 1, 0x7FFF_FFFF, ptr(KDATA)), Ok(0));
}

#[test]
fn console_io_from_domu_anything_but_write_is_eperm() {
    // Digest §6.11 (default XSM, xsm_console_io): an ordinary domU may only
    // CONSOLEIO_write; the permission check comes before the command is decoded.
    let mut w = World::kernel();
    assert_eq!(hc::console_io(&mut w, 2, 0, ptr(KDATA)), E(Errno::EPERM));
}

#[test]
fn console_io_unknown_command_is_enosys() {
    let mut w = World::dom0();
    assert_eq!(hc::console_io(&mut w, 2, 0, ptr(KDATA)), E(Errno::ENOSYS));
}

// ---------------------------------------------------------------------------------------
// sched_op, sched_op_compat (§6.9)
// ---------------------------------------------------------------------------------------

fn sched(w: &mut World, cmd: u32, reason: u32) -> Result<u64, Errno> {
    w.p.poke_obj(KDATA, &SchedShutdown { reason });
    hc::sched_op(w, cmd, ptr(KDATA))
}

#[test]
fn sched_op_yield_yields() {
    let mut w = World::kernel();
    assert_eq!(hc::sched_op(&mut w, 0, GuestPtr::NULL), Ok(0));
    assert_eq!(w.outcome, Outcome::Yield);
}

#[test]
fn sched_op_shutdown_stops_the_domain_with_its_reason() {
    for (reason, want) in [
        (0, ShutdownReason::Poweroff),
        (1, ShutdownReason::Reboot),
        (2, ShutdownReason::Suspend),
        (3, ShutdownReason::Crash),
        (4, ShutdownReason::Watchdog),
        (5, ShutdownReason::SoftReset),
    ] {
        let mut w = World::kernel();
        assert_eq!(sched(&mut w, 2, reason), Ok(0));
        assert_eq!(w.outcome, Outcome::Shutdown(want));
    }
}

#[test]
fn sched_op_shutdown_with_a_bad_reason_is_einval() {
    let mut w = World::kernel();
    assert_eq!(sched(&mut w, 2, 6), E(Errno::EINVAL));
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(hc::sched_op(&mut w, 2, ptr(UNMAPPED)), E(Errno::EFAULT));
}

#[test]
fn sched_op_shutdown_code_latches_the_reason_and_keeps_running() {
    let mut w = World::kernel();
    assert_eq!(sched(&mut w, 5, 3), Ok(0));
    assert_eq!(w.outcome, Outcome::Resume);
    assert_eq!(w.dom.shutdown_code, Some(ShutdownReason::Crash));
}

#[test]
fn sched_op_shutdown_code_keeps_the_first_latched_reason() {
    // Xen (common/sched/core.c): `if ( d->shutdown_code == SHUTDOWN_CODE_INVALID )
    // d->shutdown_code = reason;` -- a second SCHEDOP_shutdown_code does not overwrite.
    let mut w = World::kernel();
    assert_eq!(sched(&mut w, 5, 2), Ok(0));
    assert_eq!(sched(&mut w, 5, 0), Ok(0));
    assert_eq!(w.dom.shutdown_code, Some(ShutdownReason::Suspend));
}

#[test]
fn sched_op_unknown_command_is_enosys() {
    let mut w = World::kernel();
    for cmd in [8, 99, u32::MAX] {
        assert_eq!(
            hc::sched_op(&mut w, cmd, ptr(KDATA)),
            E(Errno::ENOSYS),
            "cmd {cmd}"
        );
    }
}

#[test]
fn sched_op_compat_yields_and_shuts_down_with_the_integer_reason() {
    let mut w = World::kernel();
    assert_eq!(hc::sched_op_compat(&mut w, 0, 0), Ok(0));
    assert_eq!(w.outcome, Outcome::Yield);
    let mut w = World::kernel();
    assert_eq!(hc::sched_op_compat(&mut w, 2, 0), Ok(0));
    assert_eq!(w.outcome, Outcome::Shutdown(ShutdownReason::Poweroff));
    let mut w = World::kernel();
    assert_eq!(hc::sched_op_compat(&mut w, 2, 3), Ok(0));
    assert_eq!(w.outcome, Outcome::Shutdown(ShutdownReason::Crash));
    let mut w = World::kernel();
    assert_eq!(hc::sched_op_compat(&mut w, 2, 6), E(Errno::EINVAL));
    assert_eq!(hc::sched_op_compat(&mut w, 2, 1 << 32), E(Errno::EINVAL));
    assert_eq!(
        hc::sched_op_compat(&mut w, 5, 0),
        E(Errno::ENOSYS),
        "no shutdown_code here"
    );
    assert_eq!(hc::sched_op_compat(&mut w, 99, 0), E(Errno::ENOSYS));
    assert_eq!(w.outcome, Outcome::Resume);
}

// ---------------------------------------------------------------------------------------
// vm_assist (§5.8)
// ---------------------------------------------------------------------------------------

#[test]
fn vm_assist_enables_and_disables_each_valid_type() {
    let mut w = World::kernel();
    for ty in [0u32, 1, 2, 3, 4, 5, 32] {
        assert_eq!(hc::vm_assist(&mut w, 0, ty), Ok(0), "type {ty}");
        assert!(w.dom.assist(ty));
    }
    assert_eq!(w.dom.vm_assist, 0x1_0000_003F);
    for ty in [0u32, 1, 2, 3, 4, 5, 32] {
        assert_eq!(hc::vm_assist(&mut w, 1, ty), Ok(0), "type {ty}");
        assert!(!w.dom.assist(ty));
    }
    assert_eq!(w.dom.vm_assist, 0);
}

#[test]
fn vm_assist_invalid_type_is_einval() {
    let mut w = World::kernel();
    for ty in [6u32, 31, 33, 63, 64, 99, u32::MAX] {
        assert_eq!(hc::vm_assist(&mut w, 0, ty), E(Errno::EINVAL), "type {ty}");
    }
    assert_eq!(w.dom.vm_assist, 0);
}

#[test]
fn vm_assist_invalid_command_is_enosys() {
    let mut w = World::kernel();
    assert_eq!(hc::vm_assist(&mut w, 2, 2), E(Errno::ENOSYS));
    assert_eq!(hc::vm_assist(&mut w, u32::MAX, 4), E(Errno::ENOSYS));
    assert_eq!(w.dom.vm_assist, 0);
}

#[test]
fn vm_assist_checks_the_type_before_the_command() {
    // Xen (common/domain.c do_vm_assist): the type is validated first (-EINVAL), the
    // command only afterwards (-ENOSYS).
    let mut w = World::kernel();
    assert_eq!(hc::vm_assist(&mut w, 2, 99), E(Errno::EINVAL));
}

// ---------------------------------------------------------------------------------------
// physdev_op, physdev_op_compat: PHYSDEVOP_set_iopl
// ---------------------------------------------------------------------------------------

#[test]
fn physdev_set_iopl_accepts_0_to_3() {
    let mut w = World::kernel();
    for iopl in 0..=3u32 {
        w.p.poke_obj(KDATA, &PhysdevSetIopl { iopl });
        assert_eq!(hc::physdev_op(&mut w, 6, ptr(KDATA)), Ok(0));
        assert_eq!(u32::from(w.vcpu.iopl), iopl);
    }
}

#[test]
fn physdev_set_iopl_above_3_is_einval() {
    let mut w = World::kernel();
    w.vcpu.iopl = 1;
    for iopl in [4, 0x100, u32::MAX] {
        w.p.poke_obj(KDATA, &PhysdevSetIopl { iopl });
        assert_eq!(
            hc::physdev_op(&mut w, 6, ptr(KDATA)),
            E(Errno::EINVAL),
            "iopl {iopl}"
        );
    }
    assert_eq!(w.vcpu.iopl, 1);
}

#[test]
fn physdev_op_bad_pointer_is_efault_and_unknown_command_enosys() {
    let mut w = World::kernel();
    assert_eq!(hc::physdev_op(&mut w, 6, ptr(UNMAPPED)), E(Errno::EFAULT));
    assert_eq!(hc::physdev_op(&mut w, 99, ptr(KDATA)), E(Errno::ENOSYS));
}

#[test]
fn physdev_op_compat_set_iopl() {
    let mut w = World::kernel();
    w.p.poke_obj(
        KDATA,
        &PhysdevOpCompat {
            cmd: 6,
            _pad: 0,
            u: [2, 0],
        },
    );
    assert_eq!(hc::physdev_op_compat(&mut w, ptr(KDATA)), Ok(0));
    assert_eq!(w.vcpu.iopl, 2);
    w.p.poke_obj(
        KDATA,
        &PhysdevOpCompat {
            cmd: 6,
            _pad: 0,
            u: [4, 0],
        },
    );
    assert_eq!(hc::physdev_op_compat(&mut w, ptr(KDATA)), E(Errno::EINVAL));
    assert_eq!(w.vcpu.iopl, 2);
    w.p.poke_obj(
        KDATA,
        &PhysdevOpCompat {
            cmd: 99,
            _pad: 0,
            u: [0, 0],
        },
    );
    assert_eq!(hc::physdev_op_compat(&mut w, ptr(KDATA)), E(Errno::ENOSYS));
    assert_eq!(
        hc::physdev_op_compat(&mut w, ptr(UNMAPPED)),
        E(Errno::EFAULT)
    );
}

#[test]
fn set_iopl_then_cli_is_emulated() {
    let mut w = World::kernel();
    w.set_trap(GP, 0, false);
    w.p.poke_obj(KDATA, &PhysdevSetIopl { iopl: 1 });
    assert_eq!(hc::physdev_op(&mut w, 6, ptr(KDATA)), Ok(0));
    w.regs.rip = KRIP;
    w.code(&[0xFA]);
    assert_eq!(w.exception(GP, 0, 0), Outcome::Resume);
    assert_eq!(w.regs.rip, KRIP + 1);
}

// ---------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------

fn arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => (0..0x4000u64).prop_map(|o| KDATA + o),
        2 => 0..16u64,
        1 => (0..0x400u64).prop_map(|o| KSTACK_TOP - o),
        1 => Just(0u64),
        1 => Just(NON_CANONICAL),
        1 => (0..0x100u64).prop_map(|o| 0xFFFF_8000_0000_0000 + o),
        2 => any::<u64>(),
    ]
}

fn nr() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => prop::sample::select(std::vec![0u64, 3, 4, 5, 6, 8, 9, 17, 18, 19, 21, 23, 25, 28, 29, 30, 33]),
        2 => 0..64u64,
        1 => any::<u64>(),
    ]
}

/// A call: number, arguments, and whether to put a plausible iret frame at RSP.
type CallSpec = (u64, [u64; 5], bool, [u64; 9]);

fn call() -> impl Strategy<Value = CallSpec> {
    let frame = (
        any::<u64>(),
        prop_oneof![Just(0u64), Just(0x100), any::<u64>()],
        prop_oneof![Just(KTEXT), Just(URIP), arg()],
        prop_oneof![Just(0xE030u64), Just(0xE033), Just(0xE023), any::<u64>()],
        any::<u64>(),
        arg(),
        prop_oneof![Just(0xE02Bu64), Just(0xE028), any::<u64>()],
    )
        .prop_map(|(r, fl, rip, cs, rf, rsp, ss)| [r, r ^ 1, r ^ 2, fl, rip, cs, rf, rsp, ss]);
    (
        nr(),
        proptest::array::uniform::<_, 5>(arg()),
        any::<bool>(),
        frame,
    )
}

/// Checks the ABI invariants of one hypercall from `before` (§1.2, §1.4, §6.5).
fn check_call(w: &World, before: &Regs, nr: u64) -> Result<(), TestCaseError> {
    match w.outcome {
        Outcome::Crash(_) => prop_assert_eq!(nr, 23, "only iret crashes the caller"),
        Outcome::RegsReplaced if nr == 23 => {
            prop_assert!(
                w.regs.cs == 0xE033 || w.regs.cs == 0xE023,
                "cs {:#x}",
                w.regs.cs
            );
            prop_assert_eq!(w.regs.ss, 0xE02B);
            prop_assert_ne!(w.regs.rflags & rflags::IF, 0);
            prop_assert_eq!(w.regs.rflags & (rflags::IOPL | rflags::VM), 0);
            prop_assert!(crate::regs::is_canonical(w.regs.rip));
            let unchanged = |r: &Regs| {
                [
                    r.rbx, r.rbp, r.rdi, r.rsi, r.rdx, r.r8, r.r9, r.r10, r.r12, r.r13, r.r14,
                    r.r15,
                ]
            };
            prop_assert_eq!(unchanged(&w.regs), unchanged(before));
        }
        Outcome::RegsReplaced => {
            // A continuation: the same hypercall re-issued from the syscall.
            prop_assert_eq!(w.regs.rip, before.rip - 2);
            prop_assert_eq!(w.regs.rax, nr);
            // The hypercalls that continue: set_trap_table, memory_op, multicall,
            // console_io, grant_table_op.
            prop_assert!(
                matches!(nr, 0 | 12 | 13 | 18 | 20),
                "continuation from nr {}",
                nr
            );
            let same = |r: &Regs| {
                [
                    r.rbx, r.rcx, r.rbp, r.r9, r.r11, r.r12, r.r13, r.r14, r.r15, r.cs, r.ss,
                    r.rsp, r.rflags,
                ]
            };
            prop_assert_eq!(same(&w.regs), same(before));
        }
        Outcome::Resume
        | Outcome::Yield
        | Outcome::Block
        | Outcome::Down
        | Outcome::Shutdown(_) => {
            // Everything but RAX as it was (§1.2: other GPRs preserved).
            prop_assert_eq!(
                w.regs,
                Regs {
                    rax: w.regs.rax,
                    ..*before
                }
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn hypercalls_never_panic_and_keep_the_abi(
        calls in proptest::collection::vec(call(), 1..8),
        data in proptest::collection::vec(any::<u8>(), 0x400),
        dom0 in any::<bool>(),
        user_root in any::<bool>(),
    ) {
        let mut w = World::new(if dom0 { 0 } else { 1 }, dom0);
        w.vcpu.user_root = user_root.then_some(UROOT);
        for i in 0..16u64 {
            w.p.poke(KDATA + i * 0x400, &data);
        }
        for (nr, args, with_frame, frame) in calls {
            if !w.vcpu.kernel_mode || matches!(w.outcome, Outcome::Crash(_)) {
                break;
            }
            w.regs.rsp = KSTACK_TOP - 0x400;
            w.regs.cs = 0xE033;
            w.regs.ss = 0xE02B;
            // An `iret` may have set TF; a step over the next SYSCALL is a #DB bounce,
            // which has its own tests.
            w.regs.rflags &= !crate::regs::rflags::TF;
            if with_frame {
                for (k, v) in frame.iter().enumerate() {
                    w.p.poke_obj(w.regs.rsp + 8 * k as u64, v);
                }
            }
            w.regs.rax = nr;
            w.regs.set_hypercall_args(args);
            w.regs.rip = KRIP + 2;
            w.regs.vector = crate::regs::SYSCALL_VECTOR;
            let before = w.regs;
            w.run(|c| c.hypercall());
            check_call(&w, &before, nr)?;
            // Whatever was installed, trap entries are canonical with RPL 3 selectors
            // (or the NMI entry the hypervisor writes itself).
            for (v, t) in w.vcpu.traps.iter().enumerate() {
                prop_assert!(crate::regs::is_canonical(t.address));
                prop_assert!(t.address == 0 || t.cs & 3 == 3, "vector {} cs {:#x}", v, t.cs);
            }
        }
    }

    #[test]
    fn set_trap_table_matches_a_model(
        entries in proptest::collection::vec(
            (any::<u8>(), any::<u8>(), any::<u16>(), prop_oneof![
                8 => (1..0x1000u64).prop_map(handler),
                1 => Just(0u64),
                1 => Just(NON_CANONICAL),
                1 => 1..u64::MAX,
            ]),
            0..40,
        ),
        start_page_offset in 0u64..0x80,
    ) {
        let mut w = World::kernel();
        // Put the table so that it may run off the end of the mapping.
        let va = KDATA + 0x4000 - 16 * start_page_offset;
        for (i, &(v, f, cs, a)) in entries.iter().enumerate() {
            let at = va + 16 * i as u64;
            if at + 16 <= KDATA + 0x4000 {
                w.p.poke_obj(at, &trap(v, f, cs, a));
            }
        }
        let mut model = [TrapInfo::default(); 256];
        let fit = start_page_offset as usize; // entries that lie inside the mapping
        let mut i = 0;
        let want = loop {
            if i >= fit {
                break E(Errno::EFAULT);
            }
            // Past the generated entries the (fresh, zeroed) page reads as a sentinel.
            let (v, f, cs, a) = entries.get(i).copied().unwrap_or((0, 0, 0, 0));
            if a == 0 {
                break Ok(0);
            }
            if !crate::regs::is_canonical(a) {
                break E(Errno::EINVAL);
            }
            model[usize::from(v)] = trap(v, f, cs | 3, a);
            i += 1;
        };
        let got = hc::set_trap_table(&mut w, ptr(va));
        prop_assert_eq!(got, want);
        prop_assert_eq!(&w.vcpu.traps[..], &model[..]);
    }
}

/// The flags the bounce gives a trap-table entry's handler match [`TrapInfo`].
#[test]
fn trap_entry_flags_reach_the_bounce() {
    let mut w = World::kernel();
    put_table(
        &mut w,
        KDATA,
        &[
            trap(0, TI_DISABLE_EVENTS, 0xE030, handler(0)),
            trap(0, 0, 0, 0),
        ],
    );
    assert_eq!(hc::set_trap_table(&mut w, ptr(KDATA)), Ok(0));
    w.regs.rip = KRIP;
    assert_eq!(w.exception(0, 0, 0), Outcome::Resume);
    assert_eq!(
        (w.regs.rip, w.regs.cs, w.regs.ss),
        (
            handler(0),
            u64::from(FLAT_KERNEL_CS),
            u64::from(FLAT_KERNEL_SS)
        )
    );
    assert_eq!(w.p.mask(0), 1);
}
