//! `gdt`: `set_gdt` and `update_descriptor` with Xen's checks (digest §6.6): a DPL-0
//! data descriptor is raised to DPL 3 and usable from the guest; a TSS and a call gate
//! into the hypervisor are refused; more than 7168 entries is refused; once the frame
//! is a GDT page it still takes audited updates.
#![no_std]
#![no_main]

use pv_runtime::StartInfo;
use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall as hc;
use pv_runtime::abi::mmu::{MmuextCmd, MmuextOp};
use pv_runtime::abi::types::{DomId, GuestPtr, MachineAddr};
use pv_runtime::hypercall::{handle, handle_slice, invoker};
use pv_runtime::mm;
use pv_test_guests::{fail, pass};

const NAME: &str = "gdt";
const DATA_DPL0: u64 = 0x00CF_9200_0000_FFFF;
const CODE64_DPL3: u64 = 0x00AF_FA00_0000_FFFF;
const TSS: u64 = 0x0000_8900_0000_0067;
/// A DPL-3 call gate whose target is the hypervisor's code selector 0xE008.
const GATE_TO_HYPERVISOR: u64 = (1 << 47) | (0xC << 40) | (3 << 45) | (0xE008 << 16);

fn expect(what: &str, got: Result<u64, Errno>, want: Result<u64, Errno>) {
    if got != want {
        fail(NAME, format_args!("{what}: got {got:?}, expected {want:?}"));
    }
}

fn main(_si: &'static StartInfo) {
    // SAFETY: the runtime has installed the hypercall page before `main`.
    let mut inv = unsafe { invoker() };
    let Some(frame) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    let base = frame.mfn.0 << 12;
    let clear = MmuextOp::on_frame(MmuextCmd::ClearPage, frame.mfn);
    let self_id = u32::from(DomId::SELF.0);
    expect(
        "clear_page",
        hc::mmuext_op(&mut inv, handle(&clear), 1, GuestPtr::NULL, self_id),
        Ok(0),
    );

    expect(
        "data descriptor",
        hc::update_descriptor(&mut inv, MachineAddr(base + 8), DATA_DPL0),
        Ok(0),
    );
    expect(
        "TSS descriptor",
        hc::update_descriptor(&mut inv, MachineAddr(base + 16), TSS),
        Err(Errno::EINVAL),
    );
    expect(
        "call gate into the hypervisor",
        hc::update_descriptor(&mut inv, MachineAddr(base + 16), GATE_TO_HYPERVISOR),
        Err(Errno::EINVAL),
    );
    expect(
        "misaligned address",
        hc::update_descriptor(&mut inv, MachineAddr(base + 4), CODE64_DPL3),
        Err(Errno::EINVAL),
    );

    let frames = [frame.mfn];
    expect(
        "7169 entries",
        hc::set_gdt(&mut inv, handle_slice(&frames), 7169),
        Err(Errno::EINVAL),
    );
    expect(
        "set_gdt",
        hc::set_gdt(&mut inv, handle_slice(&frames), 3),
        Ok(0),
    );

    // Selector 0x0B (entry 1, RPL 3) loads: the audit made the descriptor DPL 3.
    // SAFETY: loading DS with a valid data selector, then the null selector again.
    unsafe {
        core::arch::asm!("mov ds, {0:x}", "mov ds, {1:x}", in(reg) 0x0Bu16, in(reg) 0u16, options(nostack));
    }
    expect(
        "update of a GDT page",
        hc::update_descriptor(&mut inv, MachineAddr(base + 16), CODE64_DPL3),
        Ok(0),
    );
    expect(
        "set_gdt back to none",
        hc::set_gdt(&mut inv, GuestPtr::NULL, 0),
        Ok(0),
    );
    pass(NAME)
}

pv_runtime::entry!(main);
