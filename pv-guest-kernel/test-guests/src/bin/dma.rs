//! `dma`: machine-contiguous DMA buffers through `XENMEM_exchange`, as a
//! Linux PV kernel gets them (`xen_create_contiguous_region`).
//!
//! 1. `pv_runtime::dma::alloc` of 16 pages below 4 GiB and of 4 pages below
//!    16 MiB (`address_bits` 32 and 24): each buffer is machine-contiguous
//!    (the P2M and the hypervisor's M2P agree, page by page), lies below its
//!    limit, is mapped writable at its direct-map address, reads zero, and
//!    keeps a pattern written through its mapping; `virt_to_machine` of an
//!    address inside it is its machine address. Freed, the frames are the
//!    guest's again (P2M and M2P agree), mapped read-only.
//! 2. Raw exchanges that must fail, each with Xen's errno and nothing
//!    changed: sizes that do not match (`-EINVAL`), different domain ids
//!    (`-EINVAL`), `nr_exchanged` beyond the input (`-EINVAL`), an order
//!    above any domain's limit (`-EPERM`), a frame that is mapped, one that
//!    is not the guest's and one beyond RAM (`-EINVAL`), `address_bits` 13
//!    (`-ENOMEM`: Xen's allocator has no zone that low).
//! 3. Partial progress: two single-frame extents, the second still mapped:
//!    `-EINVAL` with `nr_exchanged` 1, the first traded (its new frame's M2P
//!    is the PFN the guest asked for), the second untouched.
#![no_std]
#![no_main]

use pv_runtime::abi::Errno;
use pv_runtime::abi::hypercall::memory_op;
use pv_runtime::abi::memory::{XenMemoryExchange, XenMemoryReservation, XenmemOp};
use pv_runtime::abi::types::{DomId, GuestPtr, Mfn, Pfn};
use pv_runtime::abi::xen::PteFlags;
use pv_runtime::dma::{self, DmaBuffer};
use pv_runtime::hypercall::{handle_mut, invoker};
use pv_runtime::mm::{self, Frame};
use pv_runtime::{Config, StartInfo};
use pv_test_guests::{check, expect, fail, pass, read};

const NAME: &str = "dma";

/// The pattern byte at offset `i` of a buffer.
fn pattern(i: usize) -> u8 {
    (i.to_le_bytes()[0] ^ i.to_le_bytes()[1]) ^ 0xA5
}

/// Checks a buffer from `dma::alloc(pages, bits)`.
fn check_buffer(buf: &mut DmaBuffer, pages: u64, bits: u32) {
    expect(NAME, "pages", buf.pages(), pages);
    let limit = 1u64 << bits;
    check(
        NAME,
        buf.machine_addr() + buf.len() as u64 <= limit,
        format_args!(
            "buffer at {:#x}+{:#x} is not below 2^{bits}",
            buf.machine_addr(),
            buf.len()
        ),
    );
    for i in 0..pages {
        let pfn = Pfn(buf.pfn().0 + i);
        let mfn = Mfn(buf.mfn().0 + i);
        expect(NAME, "P2M of the buffer", mm::pfn_to_mfn(pfn), Some(mfn));
        expect(NAME, "M2P of the buffer", mm::m2p_entry(mfn), Some(pfn.0));
        let va = buf.va() + i * 4096 + 8;
        expect(
            NAME,
            "virt_to_machine",
            dma::virt_to_machine(va),
            Some(buf.machine_addr() + i * 4096 + 8),
        );
        let writable = mm::translate(va).is_some_and(|p| p.flags().contains(PteFlags::RW));
        check(NAME, writable, format_args!("page {i} not mapped writable"));
    }
    let bytes = buf.as_mut_slice();
    check(
        NAME,
        bytes.iter().all(|&b| b == 0),
        format_args!("buffer not zeroed"),
    );
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = pattern(i);
    }
    for i in (0..buf.len()).step_by(520) {
        let want = u64::from_le_bytes(core::array::from_fn(|k| pattern(i + k)));
        expect(NAME, "pattern", read(buf.va() + i as u64), want);
    }
}

/// After `dma::free`: pages `pfn..pfn + pages` are the guest's single frames
/// again, mapped read-only.
fn check_freed(pfn: Pfn, pages: u64) {
    for i in 0..pages {
        let p = Pfn(pfn.0 + i);
        let Some(mfn) = mm::pfn_to_mfn(p) else {
            fail(NAME, format_args!("freed pfn {:#x} has no frame", p.0));
        };
        expect(NAME, "M2P after free", mm::m2p_entry(mfn), Some(p.0));
        let ro = mm::translate(mm::direct_va(p))
            .is_some_and(|e| e.mfn() == mfn && !e.flags().contains(PteFlags::RW));
        check(
            NAME,
            ro,
            format_args!("freed pfn {:#x} not mapped read-only", p.0),
        );
    }
}

/// One raw `XENMEM_exchange` of the guest's: the result and `nr_exchanged`.
fn exchange(
    input: &mut [u64],
    in_order: u32,
    output: &mut [u64],
    out_order: u32,
    tweak: impl FnOnce(&mut XenMemoryExchange),
) -> (Result<u64, Errno>, u64) {
    let res = |list: &mut [u64], order| XenMemoryReservation {
        extent_start: GuestPtr::new(list.as_mut_ptr().expose_provenance() as u64),
        nr_extents: list.len() as u64,
        extent_order: order,
        domid: DomId::SELF,
        ..XenMemoryReservation::default()
    };
    let mut x = XenMemoryExchange {
        in_: res(input, in_order),
        out: res(output, out_order),
        nr_exchanged: 0,
    };
    tweak(&mut x);
    let nr = u64::from(XenmemOp::Exchange.nr());
    // SAFETY: the argument and both lists are live for the call and as large
    // as the counts say (a tweak only makes them smaller or invalid, which the
    // hypervisor refuses before touching a list).
    let rc = memory_op(&mut unsafe { invoker() }, nr, handle_mut(&mut x).cast());
    (rc, x.nr_exchanged)
}

/// A free frame of the guest's, unmapped from the direct map (ready to be
/// traded).
fn unmapped_frame() -> Frame {
    let Some(f) = mm::alloc_frame() else {
        fail(NAME, format_args!("no free frame"));
    };
    expect(NAME, "unmap a frame", mm::unmap(f.va(), 1), Ok(1));
    f
}

/// Maps `f` read-only at its direct-map address again and frees it.
fn put_back(f: Frame) {
    if mm::map(f.va(), &[f.mfn], PteFlags::ACCESSED).is_err() {
        fail(NAME, format_args!("remap of pfn {:#x}", f.pfn.0));
    }
    let _ = mm::free_frame(f);
}

fn main(_si: &'static StartInfo) {
    let before = mm::frames_available();

    // 1. Buffers below 4 GiB and below 16 MiB.
    let mut big = match dma::alloc(16, 32) {
        Ok(b) => b,
        Err(e) => fail(NAME, format_args!("alloc 16 pages below 4 GiB: {e}")),
    };
    check_buffer(&mut big, 16, 32);
    let mut isa = match dma::alloc(3, 24) {
        Ok(b) => b,
        Err(e) => fail(NAME, format_args!("alloc 3 pages below 16 MiB: {e}")),
    };
    check_buffer(&mut isa, 4, 24);
    let stack_word = 0u64;
    let va = core::ptr::from_ref(&stack_word).addr() as u64;
    let pte = mm::translate(va & !0xFFF).map(|p| p.mfn().0 << 12);
    expect(
        NAME,
        "virt_to_machine of the stack",
        dma::virt_to_machine(va),
        pte.map(|ma| ma | (va & 0xFFF)),
    );
    let (big_pfn, isa_pfn) = (big.pfn(), isa.pfn());
    if let Err((_, e)) = dma::free(big) {
        fail(NAME, format_args!("free: {e}"));
    }
    if let Err((_, e)) = dma::free(isa) {
        fail(NAME, format_args!("free: {e}"));
    }
    check_freed(big_pfn, 16);
    check_freed(isa_pfn, 4);
    expect(NAME, "frames after free", mm::frames_available(), before);
    expect(
        NAME,
        "more than 512 pages",
        dma::alloc(513, 32).err(),
        Some(dma::DmaError::BadRequest),
    );

    // 2. Refusals, each changing nothing.
    let a = unmapped_frame();
    let mapped = match mm::alloc_frame() {
        Some(f) => f,
        None => fail(NAME, format_args!("no free frame")),
    };
    let mut out = [0u64; 2];
    let sizes = exchange(&mut [a.mfn.0, mapped.mfn.0], 0, &mut out[..1], 0, |_| {});
    expect(NAME, "sizes that differ", sizes.0, Err(Errno::EINVAL));
    let ids = exchange(&mut [a.mfn.0], 0, &mut out[..1], 0, |x| {
        x.out.domid = DomId(1);
    });
    expect(NAME, "domain ids that differ", ids.0, Err(Errno::EINVAL));
    let done = exchange(&mut [a.mfn.0], 0, &mut out[..1], 0, |x| x.nr_exchanged = 2);
    expect(
        NAME,
        "nr_exchanged beyond the input",
        done,
        (Err(Errno::EINVAL), 2),
    );
    let order = exchange(&mut [a.mfn.0], 20, &mut out[..1], 20, |_| {});
    expect(NAME, "order 20", order.0, Err(Errno::EPERM));
    let in_use = exchange(&mut [mapped.mfn.0], 0, &mut out[..1], 0, |_| {});
    expect(NAME, "a mapped frame", in_use, (Err(Errno::EINVAL), 0));
    // MFN 1 is firmware memory (DOMID_IO's), never a guest's RAM.
    let not_ours = exchange(&mut [1], 0, &mut out[..1], 0, |_| {});
    expect(NAME, "a frame not ours", not_ours, (Err(Errno::EINVAL), 0));
    let beyond = exchange(&mut [1 << 40], 0, &mut out[..1], 0, |_| {});
    expect(NAME, "a frame beyond RAM", beyond, (Err(Errno::EINVAL), 0));
    out[0] = a.pfn.0;
    let low = exchange(&mut [a.mfn.0], 0, &mut out[..1], 0, |x| {
        x.out.mem_flags = 13
    });
    expect(NAME, "address_bits 13", low, (Err(Errno::ENOMEM), 0));
    expect(NAME, "M2P kept", mm::m2p_entry(a.mfn), Some(a.pfn.0));
    expect(NAME, "out entry kept", out[0], a.pfn.0);

    // 3. Partial progress: the first extent is traded, the second (mapped)
    //    is not.
    let mut out = [a.pfn.0, mapped.pfn.0];
    let partial = exchange(&mut [a.mfn.0, mapped.mfn.0], 0, &mut out, 0, |_| {});
    expect(NAME, "partial exchange", partial, (Err(Errno::EINVAL), 1));
    let new = Mfn(out[0]);
    check(
        NAME,
        new != a.mfn,
        format_args!("first extent not traded: {:#x}", new.0),
    );
    expect(
        NAME,
        "M2P of the traded frame",
        mm::m2p_entry(new),
        Some(a.pfn.0),
    );
    expect(NAME, "second out entry", out[1], mapped.pfn.0);
    expect(
        NAME,
        "M2P of the mapped frame",
        mm::m2p_entry(mapped.mfn),
        Some(mapped.pfn.0),
    );
    // The guest fixes its P2M and mapping for the traded frame, as Linux does.
    let traded = Frame {
        pfn: a.pfn,
        mfn: new,
    };
    if !mm::set_p2m(a.pfn, Some(new)) {
        fail(NAME, format_args!("set_p2m"));
    }
    put_back(traded);
    let _ = mm::free_frame(mapped);
    let _ = read(traded.va());
    pass(NAME)
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
