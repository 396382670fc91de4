//! Memory management and isolation, from a PV guest's side: the runtime takes over
//! its address space, maps and unmaps 64 MiB, runs user code on its own page tables,
//! and hostile guests try what Xen must refuse (each once per behaviour, with the
//! errno real Xen 4.17 gives). Every guest must pass and the hypervisor must stay up.
//!
//! Each guest was first run as dom0 on real Xen 4.17 (Debian 4.17.7, release build)
//! and passes there; a test that fails here is a difference from Xen.

use xlhv_tests::{Boot0, ControlHost, Module, QemuExit, boot_dom0, test_guest};

/// Boots test guest `name` as dom0: it prints `name: PASS` and powers off, and the
/// hypervisor reports no fault of its own.
fn passes(name: &str) -> Boot0 {
    let b = boot_dom0(name, &test_guest(name));
    b.no_line("xen-like-hv fault");
    b.no_line("PANIC");
    b.no_line(&format!("{name}: FAIL"));
    b.line(&format!("(d0) {name}: PASS"));
    b.exited(QemuExit::Poweroff);
    b
}

#[test]
fn runtime_takes_over_its_address_space() {
    passes("newpt");
}

#[test]
fn maps_uses_and_unmaps_64_mib() {
    passes("map64");
}

#[test]
fn runs_user_code_and_returns_through_the_syscall_callback() {
    passes("usermode");
}

/// Xen puts the read-only M2P into an L4 only when it becomes a kernel base pointer,
/// so user code on a user-only L4 faults reading it.
#[test]
fn user_code_sees_only_its_own_page_tables() {
    passes("user-isolation");
}

#[test]
fn page_tables_cannot_be_mapped_writable() {
    passes("hostile-pt-writable");
}

#[test]
fn frames_outside_the_p2m_cannot_be_mapped() {
    passes("hostile-foreign-frame");
}

#[test]
fn hypervisor_frames_cannot_be_mapped_or_edited() {
    passes("hostile-xen-frame");
}

#[test]
fn dom0_maps_io_memory_like_xen() {
    passes("hostile-mfn0");
}

/// The HPET: a writable mapping by dom0 becomes read-only (and uncached), reads work
/// (Xen's `ro-hpet`; the same guest passes on real Xen 4.17).
#[test]
fn dom0_maps_the_hpet_read_only() {
    passes("hpet-ro");
}

/// Writable page tables: stores into the kernel's own in-use L1 through a read-only
/// mapping are validated and committed (Xen's `ptwr_emulated_update`; the same guest
/// passes on real Xen 4.17).
#[test]
fn writable_page_tables_emulate_stores_to_l1s() {
    passes("ptwr");
}

/// The same guest as a domU: there the assist gates the emulation.
#[test]
fn a_domus_page_table_stores_need_the_assist() {
    let spec = format!("{},name=ptwr,mem=16M", test_guest("ptwr").display());
    let h = ControlHost::boot_with("ptwr-domu", vec![Module::domu(&spec).unwrap()]);
    let start = std::time::Instant::now();
    while !h.serial().contains("(d1) ptwr: ") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the ptwr domU printed no result within 60 s:\n{}",
            h.serial()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let log = h.serial();
    assert!(log.contains("(d1) ptwr: PASS"), "{log}");
}

#[test]
fn out_of_range_frames_are_refused() {
    passes("hostile-mfn-range");
}

#[test]
fn hypervisor_address_range_is_not_mappable() {
    passes("hostile-xen-va");
}

#[test]
fn m2p_is_readable_and_read_only() {
    passes("hostile-m2p-write");
}

#[test]
fn writable_linear_page_tables_are_refused_xsa_182() {
    passes("hostile-linear-pt");
}

#[test]
fn unpinning_a_table_in_use_keeps_it_valid() {
    passes("hostile-unpin");
}

#[test]
fn tables_in_use_cannot_change_type() {
    passes("hostile-retype");
}

#[test]
fn non_canonical_addresses_are_refused_xsa_279() {
    passes("hostile-noncanonical");
}

#[test]
fn million_entry_batch_stops_at_the_bad_entry() {
    passes("hostile-batch");
}

#[test]
fn superpage_marking_is_not_supported() {
    passes("hostile-mark-super");
}

#[test]
fn iret_ends_a_multicall_xsa_213() {
    passes("hostile-xsa213");
}

/// DMA without an IOMMU: `XENMEM_exchange` gives machine-contiguous buffers below
/// 4 GiB and 16 MiB (`pv_runtime::dma`), refuses bad requests with Xen's errno and
/// reports partial progress as Xen does.
#[test]
fn dma_buffers_are_machine_contiguous_below_their_limit() {
    passes("dma");
}

/// The runtime's heap outgrows the bootstrap slack (whose size depends on where
/// the image ends) by mapping free frames, keeps its blocks intact, reuses freed
/// bytes, and refuses (without a panic) before it takes the last frames.
#[test]
fn the_heap_grows_past_the_bootstrap_slack() {
    passes("heap-grow");
}
