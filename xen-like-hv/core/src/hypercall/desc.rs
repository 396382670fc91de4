//! Descriptor tables (digest §6.6): `set_gdt` and `update_descriptor`. GDT frames are
//! typed `SegDesc`, so the guest can change them only through `update_descriptor`,
//! which audits every descriptor ([`crate::descriptor::audit`]).

use super::{HvError, HvResult};
use crate::descriptor::audit;
use crate::mm::error::MmError;
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::mmu::get_seg_desc_page;
use crate::mm::page_type::{MachineMemory, get_page_and_type, put_page_and_type};
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::Errno;
use hypercall_abi::types::{GuestPtr, MachineAddr, Mfn};
use hypercall_abi::xen::FIRST_RESERVED_GDT_ENTRY;

const DESCS_PER_PAGE: u32 = 512;

/// `set_gdt(frames, entries)`: the guest's GDT is `entries` descriptors in
/// `ceil(entries / 512)` of its own frames. Each frame's descriptors are fixed up as the
/// audit says, then the frame takes type `SegDesc` (which audits them again, so a
/// change in between is refused, not installed). Any failure keeps the old GDT.
pub fn set_gdt<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    frames: GuestPtr<Mfn>,
    entries: u32,
) -> HvResult {
    if entries as usize > FIRST_RESERVED_GDT_ENTRY {
        return Err(Errno::EINVAL.into());
    }
    let nr = entries.div_ceil(DESCS_PER_PAGE) as usize;
    let mut list: heapless::Vec<Mfn, 14> = heapless::Vec::new();
    for i in 0..nr {
        let mfn: Mfn = ctx.p.read_obj(frames.addr().wrapping_add(8 * i as u64))?;
        list.push(mfn).map_err(|_| Errno::EINVAL)?;
    }
    let dom = ctx.dom.id;
    let privileged = ctx.dom.privileged;
    let old = core::mem::take(&mut ctx.vcpu.gdt_frames);
    let result = ctx.p.mm(dom, privileged, |m| -> Result<(), MmError> {
        take_gdt_frames(m, dom, &list)?;
        for &o in &old {
            put_page_and_type(m, o);
        }
        Ok(())
    });
    match result {
        Ok(()) => {
            ctx.vcpu.gdt_frames = list;
            ctx.vcpu.gdt_ents = entries;
            ctx.p.load_gdt(ctx.vcpu);
            Ok(0)
        }
        Err(_) => {
            ctx.vcpu.gdt_frames = old;
            Err(Errno::EINVAL.into())
        }
    }
}

/// Makes each of `list` (frames of `dom`) a descriptor page
/// ([`get_seg_desc_page`]). All or nothing.
pub fn take_gdt_frames<M, H, P, E>(
    m: &mut crate::mm::page_type::MmCtx<'_, '_, M, H, P, E>,
    dom: hypercall_abi::types::DomId,
    list: &[Mfn],
) -> Result<(), MmError>
where
    M: MachineMemory,
    H: crate::mm::page_type::HypervisorSlots,
    P: crate::mm::page_type::M2p,
    E: crate::mm::page_type::MmHooks,
{
    for (k, &mfn) in list.iter().enumerate() {
        if let Err(e) = get_seg_desc_page(m, mfn, dom) {
            for &t in list.iter().take(k) {
                put_page_and_type(m, t);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// `update_descriptor(ma, desc)`: writes one audited descriptor into a frame that is
/// a descriptor page, or could be ordinary writable memory (never a page table).
pub fn update_descriptor<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    ma: MachineAddr,
    desc: u64,
) -> HvResult {
    if ma.0 & 7 != 0 {
        return Err(Errno::EINVAL.into());
    }
    let fixed = audit(desc).ok_or(Errno::EINVAL)?;
    let mfn = ma.mfn();
    let index = (ma.page_offset() / 8) as usize;
    let dom = ctx.dom.id;
    let privileged = ctx.dom.privileged;
    ctx.p
        .mm(dom, privileged, |m| -> Result<(), MmError> {
            if m.ft.owner(mfn) != Some(Owner::Domain(dom)) {
                return Err(MmError::BadFrame(mfn));
            }
            let is_desc_page =
                m.ft.info(mfn)
                    .is_some_and(|f| f.page_type() == PageType::SegDesc && f.type_count() > 0);
            if is_desc_page {
                m.mem.write_entry(mfn, index, fixed);
                return Ok(());
            }
            get_page_and_type(m, mfn, dom, PageType::Writable)?;
            m.mem.write_entry(mfn, index, fixed);
            put_page_and_type(m, mfn);
            Ok(())
        })
        .map_err(|_| HvError::Errno(Errno::EINVAL))?;
    Ok(0)
}
