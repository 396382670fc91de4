//! `ptwr`: writable page tables. With `VMASST_TYPE_writable_pagetables` on, the
//! kernel writes entries straight into one of its own in-use L1 tables through a
//! read-only mapping of it, as Linux does (`mov`, `xchg`, `lock cmpxchg`,
//! `lock btr`/`bts`, `lock and`/`or`), and the hypervisor validates and commits
//! each write as `mmu_update` would (Xen's `ptwr_emulated_update`). Checked: the
//! new mappings work and the instructions' results (flags, registers) are the
//! CPU's; with the assist off a domU's store is a #PF (dom0's is emulated anyway,
//! as on Xen); an entry the checks refuse
//! (a page table in use mapped writable) stays a #PF and
//! changes nothing.
#![no_std]
#![no_main]

use core::arch::asm;

use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp, UVMF_INVLPG};
use pv_runtime::abi::vm_assist::{VmAssistCmd, VmAssistType};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::abi::xen::start_info::SifFlags;
use pv_runtime::hypercall::invoker;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, mm, probe, pt};
use pv_test_guests::{SCRATCH_VA, check, expect, ext_op, fail, l1e, pass, read, record, take, uvm};

const NAME: &str = "ptwr";
/// The address whose entry the test writes (low memory the guest does not use, in
/// the same L1 as [`SCRATCH_VA`]).
const TARGET_VA: u64 = 0x2000;
/// Where [`TARGET_VA`]'s entry shows through the read-only alias of its L1.
const ENTRY: u64 = SCRATCH_VA + (TARGET_VA >> 12) * 8;

/// The frame, RW and present bits of an entry (the hypervisor adds USER and its
/// guest-kernel bit to a 64-bit kernel's entries, and the CPU sets A and D).
fn frame_rw_p(e: u64) -> u64 {
    e & 0x000F_FFFF_FFFF_F003
}

fn assist(cmd: VmAssistCmd) {
    // SAFETY: the runtime installed the hypercall page; no guest addresses pass.
    let mut inv = unsafe { invoker() };
    if let Err(e) = hc::vm_assist(&mut inv, cmd.nr(), VmAssistType::WritablePagetables as u32) {
        fail(
            NAME,
            format_args!("vm_assist({cmd:?}, writable_pagetables): {e}"),
        );
    }
}

fn invlpg(va: u64) {
    expect(
        NAME,
        "invlpg",
        ext_op(MmuextOp::new(MmuextCmd::InvlpgLocal, va, 0)),
        Ok(0),
    );
}

/// A store of `value` to [`ENTRY`] that must fault and change nothing.
fn refused(what: &str, value: u64) {
    let before = read(ENTRY);
    // SAFETY: ENTRY is mapped (read-only); the store is expected to fault.
    unsafe { probe::write_u64(ENTRY, value) };
    let (caught, _) = take();
    check(
        NAME,
        caught.is_some_and(|c| {
            c.vector == u64::from(vector::PF) && c.cr2 == ENTRY && c.error_code & 3 == 3
        }),
        format_args!("{what}: the store gave {caught:?}"),
    );
    expect(NAME, what, read(ENTRY), before);
}

fn main(si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let l1 = l1e(NAME, TARGET_VA).mfn();
    if l1 != l1e(NAME, SCRATCH_VA).mfn() {
        fail(
            NAME,
            format_args!("{TARGET_VA:#x} and {SCRATCH_VA:#x} are in different L1s"),
        );
    }
    let Some(frame) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let data = frame.mfn;
    let pattern = 0x5054_5752_2121_2121u64;

    // The L1 table, read-only at SCRATCH_VA.
    expect(
        NAME,
        "alias of the L1",
        uvm(SCRATCH_VA, pt::leaf(l1, PteFlags::empty()), UVMF_INVLPG),
        Ok(0),
    );
    // The target's own entry (the builder maps low memory), put back at the end.
    let original = read(ENTRY);
    let rw = pt::leaf(data, PteFlags::RW);

    // With the assist off, a domU's store is the #PF it was; the hardware domain's is
    // emulated all the same (Xen hands all its write faults on present pages to the
    // read-only-page path).
    assist(VmAssistCmd::Disable);
    if !SifFlags::from_bits_retain(si.flags).contains(SifFlags::INITDOMAIN) {
        refused("a domU's store with the assist off", rw);
    } else {
        // SAFETY: ENTRY maps the L1 read-only; the hypervisor emulates the store.
        unsafe { probe::write_u64(ENTRY, original) };
        expect(
            NAME,
            "dom0's store with the assist off",
            take().0.map(|c| c.vector),
            None,
        );
    }
    assist(VmAssistCmd::Enable);

    // mov: map the frame writable.
    // SAFETY: ENTRY maps the L1 read-only; the hypervisor emulates the store.
    unsafe { probe::write_u64(ENTRY, rw) };
    expect(NAME, "no fault for mov", take().0.map(|c| c.vector), None);
    expect(NAME, "entry after mov", frame_rw_p(read(ENTRY)), rw);
    // SAFETY: TARGET_VA now maps our free frame writable.
    unsafe { probe::write_u64(TARGET_VA, pattern) };
    expect(
        NAME,
        "no fault through the new mapping",
        take().0.map(|c| c.vector),
        None,
    );
    expect(
        NAME,
        "the frame through the new mapping",
        read(TARGET_VA),
        pattern,
    );

    // lock btr $1 (RW): CF = 1, then a store through TARGET_VA faults.
    let cf: u8;
    // SAFETY: as above; the instruction is emulated.
    unsafe {
        asm!("lock btr qword ptr [{p}], 1", "setc {c}", p = in(reg) ENTRY, c = out(reg_byte) cf, options(nostack));
    }
    expect(NAME, "btr's CF", cf, 1);
    invlpg(TARGET_VA);
    // SAFETY: TARGET_VA is now read-only; the store faults and is recorded.
    unsafe { probe::write_u64(TARGET_VA, 1) };
    check(
        NAME,
        take()
            .0
            .is_some_and(|c| c.vector == u64::from(vector::PF) && c.cr2 == TARGET_VA),
        format_args!("a store through the read-only mapping did not fault"),
    );

    // lock cmpxchg: a stale expected value fails and loads the current one; the right
    // one puts RW back.
    let current = read(ENTRY);
    let (mut rax, mut zf): (u64, u8);
    // SAFETY: as above.
    unsafe {
        asm!("lock cmpxchg qword ptr [{p}], {new}", "setz {z}", p = in(reg) ENTRY,
             new = in(reg) rw, z = out(reg_byte) zf, inout("rax") 0x1234u64 => rax, options(nostack));
    }
    expect(NAME, "failed cmpxchg", (zf, rax), (0, current));
    // SAFETY: as above.
    unsafe {
        asm!("lock cmpxchg qword ptr [{p}], {new}", "setz {z}", p = in(reg) ENTRY,
             new = in(reg) rw, z = out(reg_byte) zf, inout("rax") current => rax, options(nostack));
    }
    expect(NAME, "cmpxchg", zf, 1);
    let _ = rax;
    invlpg(TARGET_VA);
    expect(
        NAME,
        "the frame kept its contents",
        read(TARGET_VA),
        pattern,
    );
    // SAFETY: TARGET_VA maps our frame writable again.
    unsafe { probe::write_u64(TARGET_VA, !pattern) };
    expect(
        NAME,
        "store through the remapped frame",
        take().0.map(|c| c.vector),
        None,
    );
    expect(
        NAME,
        "the store reached the frame",
        read(TARGET_VA),
        !pattern,
    );

    // lock andb / lock orq on the low byte and the whole entry.
    // SAFETY: as above.
    unsafe {
        asm!("lock and byte ptr [{p}], 0xfd", p = in(reg) ENTRY, options(nostack));
    }
    expect(NAME, "andb cleared RW", read(ENTRY) & 2, 0);
    // SAFETY: as above.
    unsafe {
        asm!("lock or qword ptr [{p}], 2", p = in(reg) ENTRY, options(nostack));
    }
    expect(NAME, "orq set RW", read(ENTRY) & 2, 2);

    // Refused by the checks: the L1 itself, or the L4 in use, mapped writable.
    refused("the L1 mapped writable", pt::leaf(l1, PteFlags::RW));
    refused(
        "the L4 mapped writable",
        pt::leaf(mm::kernel_root(), PteFlags::RW),
    );

    // xchg with 0 unmaps and hands back the old entry.
    let mut old = 0u64;
    // SAFETY: as above.
    unsafe {
        asm!("xchg qword ptr [{p}], {v}", p = in(reg) ENTRY, v = inout(reg) old, options(nostack));
    }
    expect(NAME, "xchg's old entry", frame_rw_p(old), rw);
    expect(NAME, "entry after xchg", read(ENTRY), 0);
    invlpg(TARGET_VA);
    let _ = read(TARGET_VA);
    check(
        NAME,
        take()
            .0
            .is_some_and(|c| c.vector == u64::from(vector::PF) && c.cr2 == TARGET_VA),
        format_args!("a read of the unmapped address did not fault"),
    );
    expect(
        NAME,
        "restoring the target",
        uvm(TARGET_VA, original, UVMF_INVLPG),
        Ok(0),
    );
    expect(
        NAME,
        "freeing the frame",
        mm::free_frame(frame).is_ok(),
        true,
    );
    pass(NAME)
}

pv_runtime::entry!(main);
