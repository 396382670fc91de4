//! `newpt`: the runtime takes over its address space: it builds new page
//! tables in its own frames (batched `mmu_update`, one `multicall` per
//! batch), maps them read-only, pins the new L4, switches with
//! `NEW_BASEPTR`, unpins the builder's L4 and keeps running on the new
//! tables (shared_info, the heap and the image still mapped as before).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;

use pv_runtime::abi::Errno;
use pv_runtime::abi::mmu::{MmuextCmd, UVMF_INVLPG};
use pv_runtime::abi::types::Pfn;
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::mm;
use pv_runtime::traps::{self, vector};
use pv_runtime::{StartInfo, pt, shared};
use pv_test_guests::{check, expect, ext1, fail, pass, read, record, take, uvm};

const NAME: &str = "newpt";
/// Only the new tables map this address (L4 slot 64).
const NEW_ONLY_VA: u64 = 0x0000_2000_0000_0000;
const PFEC_PRESENT_WRITE: u64 = 0b11;

fn main(si: &'static StartInfo) {
    traps::set_handler(vector::PF, record);
    let old = mm::kernel_root();
    let t = match mm::take_over() {
        Ok(t) => t,
        Err(e) => fail(NAME, format_args!("take_over: {e}")),
    };
    expect(NAME, "old root", t.old_root, old);
    check(
        NAME,
        t.new_root != old,
        format_args!("new root is the old one"),
    );
    expect(NAME, "kernel root", mm::kernel_root(), t.new_root);
    expect(NAME, "unpinning the builder's L4", t.old_unpinned, Ok(()));
    expect(NAME, "second take_over", mm::take_over().is_err(), true);
    let [l1, l2, l3] = pt::tables_for(0, si.nr_pages);
    expect(
        NAME,
        "tables built",
        t.stats.tables_created + 1,
        l1 + l2 + l3 + 1,
    );
    expect(NAME, "table frames", t.tables.len(), l1 + l2 + l3 + 1);
    check(
        NAME,
        t.stats.batches > 1 && t.stats.updates >= si.nr_pages,
        format_args!("not batched: {:?}", t.stats),
    );

    // Every new table is mapped, read-only, and a write to one faults.
    for pfn in t.tables.start..t.tables.end {
        let va = mm::direct_va(Pfn(pfn));
        let Some(e) = mm::translate(va) else {
            fail(NAME, format_args!("table frame {pfn:#x} not mapped"))
        };
        check(
            NAME,
            !e.flags().contains(PteFlags::RW),
            format_args!("table frame {pfn:#x} mapped writable: {:#x}", e.0),
        );
    }
    let root_va = mm::direct_va(Pfn(t.tables.start));
    let slot0 = read(root_va);
    // SAFETY: a store to a read-only page table; it must fault.
    unsafe { pv_runtime::probe::write_u64(root_va, 0) };
    let (caught, _) = take();
    match caught {
        Some(c) if c.vector == u64::from(vector::PF) && c.error_code & 3 == PFEC_PRESENT_WRITE => {}
        other => fail(NAME, format_args!("write to the new L4: {other:?}")),
    }
    expect(NAME, "L4 slot 0 after the write", read(root_va), slot0);
    expect(
        NAME,
        "M2P of the new L4",
        mm::mfn_to_pfn(t.new_root),
        Some(Pfn(t.tables.start)),
    );
    // Already pinned.
    expect(
        NAME,
        "pinning the new L4 again",
        ext1(MmuextCmd::PinL4Table, t.new_root),
        Err(Errno::EINVAL),
    );

    // The bootstrap region kept its mappings: shared_info, time, the heap.
    let Some(si_pte) = mm::translate(shared::va()) else {
        fail(NAME, format_args!("shared_info not mapped"))
    };
    expect(
        NAME,
        "shared_info frame",
        si_pte.mfn(),
        si.shared_info.mfn(),
    );
    // Still the live page: the upcall mask the runtime sees is the one the
    // hypervisor keeps (masked while main runs).
    expect(
        NAME,
        "upcall mask through the copied mapping",
        shared::upcall_mask(0),
        1,
    );
    let v: Vec<u64> = (0..1000).collect();
    expect(NAME, "heap", v.iter().sum::<u64>(), 499_500);

    // Every frame is in the direct map; beyond the bootstrap region
    // read-only.
    let last = mm::direct_va(Pfn(si.nr_pages - 1));
    let _ = read(last);
    let (caught, _) = take();
    expect(
        NAME,
        "reading the last frame faulted",
        caught.is_some(),
        false,
    );
    // SAFETY: the last frame is mapped read-only; the store must fault.
    unsafe { pv_runtime::probe::write_u64(last, 1) };
    let (caught, _) = take();
    check(
        NAME,
        caught.is_some_and(|c| c.error_code & 3 == PFEC_PRESENT_WRITE),
        format_args!("write to the read-only direct map: {caught:?}"),
    );

    // The hypervisor walks the new tables: a mapping only they have works
    // with update_va_mapping and for the CPU.
    let Some(f) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"))
    };
    if let Err(e) = mm::map(NEW_ONLY_VA, &[f.mfn], PteFlags::RW | PteFlags::NX) {
        fail(NAME, format_args!("map: {e}"));
    }
    // SAFETY: NEW_ONLY_VA maps `f`, our frame, writable; nothing else uses it.
    unsafe { pv_runtime::probe::write_u64(NEW_ONLY_VA + 8, 0x1234_5678) };
    expect(NAME, "read back", read(NEW_ONLY_VA + 8), 0x1234_5678);
    let ro = pt::leaf(f.mfn, PteFlags::ACCESSED);
    expect(
        NAME,
        "update_va_mapping in the new tables",
        uvm(NEW_ONLY_VA, ro, UVMF_INVLPG),
        Ok(0),
    );
    // SAFETY: now read-only: the store must fault.
    unsafe { pv_runtime::probe::write_u64(NEW_ONLY_VA + 8, 0) };
    let (caught, _) = take();
    expect(
        NAME,
        "write after the read-only remap faulted",
        caught.is_some(),
        true,
    );
    expect(NAME, "unmap", mm::unmap(NEW_ONLY_VA, 1), Ok(1));
    expect(NAME, "unmapped", mm::translate(NEW_ONLY_VA).is_none(), true);
    pass(NAME)
}

pv_runtime::entry!(main);
