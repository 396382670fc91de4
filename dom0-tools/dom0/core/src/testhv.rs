//! A fake hypervisor for the back ends' tests: grants and rings live in its
//! memory, and its grant table enforces read-only grants and mappings.
#![allow(clippy::cast_possible_truncation)] // page counts are small

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU32, Ordering};

use hypercall_abi::domctl::{DomctlGetDomainInfo, SysctlPhysinfo};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::xen::VcpuGuestContext;
use hypercall_abi::{DomId, Errno, EvtchnPort, GrantRef, Mfn};

use control_proto::cpus::{Affinity, CpuMap};

use crate::hv::{ConsoleChunk, GrantSeg, Hypervisor, RingId, XenVersion};

/// A granted page: memory shared with the "guest", and page `index` of it.
#[derive(Clone)]
pub struct Grant {
    pub mem: Rc<Vec<AtomicU32>>,
    pub index: usize,
    pub readonly: bool,
}

#[derive(Default)]
pub struct Fake {
    pub grants: BTreeMap<(u16, u32), Grant>,
    pub rings: BTreeMap<u32, (Rc<Vec<AtomicU32>>, usize, usize)>,
    pub next_ring: u32,
    pub ports: BTreeMap<u32, (u16, u32)>,
    pub next_port: u32,
    pub notified: Vec<u32>,
    pub copies: u64,
    /// Copy segments that named a grant `dom` never gave, or ran past a page
    /// or the buffer: a back end must never ask for either.
    pub bad_copies: u64,
}

impl core::fmt::Debug for Fake {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Fake")
    }
}

impl Fake {
    /// Grants `pages` fresh pages of `dom` as refs `first..`, as one allocation.
    pub fn grant(
        &mut self,
        dom: u16,
        first: u32,
        pages: usize,
        readonly: bool,
    ) -> Rc<Vec<AtomicU32>> {
        let mem: Rc<Vec<AtomicU32>> =
            Rc::new((0..pages * 1024).map(|_| AtomicU32::new(0)).collect());
        for i in 0..pages {
            self.grants.insert(
                (dom, first + i as u32),
                Grant {
                    mem: Rc::clone(&mem),
                    index: i,
                    readonly,
                },
            );
        }
        mem
    }
}

pub fn page_bytes(mem: &[AtomicU32], page: usize) -> Vec<u8> {
    mem[page * 1024..(page + 1) * 1024]
        .iter()
        .flat_map(|w| w.load(Ordering::Relaxed).to_le_bytes())
        .collect()
}

pub fn fill_page(mem: &[AtomicU32], page: usize, bytes: &[u8]) {
    for (w, c) in mem[page * 1024..(page + 1) * 1024]
        .iter()
        .zip(bytes.chunks_exact(4))
    {
        w.store(u32::from_le_bytes(c.try_into().unwrap()), Ordering::Relaxed);
    }
}

impl Hypervisor for Fake {
    fn xen_version(&mut self) -> Result<XenVersion, Errno> {
        Err(Errno::ENOSYS)
    }
    fn physinfo(&mut self) -> Result<SysctlPhysinfo, Errno> {
        Err(Errno::ENOSYS)
    }
    fn read_console(&mut self, _: Option<u32>, _: &mut [u8]) -> Result<ConsoleChunk, Errno> {
        Err(Errno::ENOSYS)
    }
    fn domain_info(&mut self, _: DomId) -> Result<DomctlGetDomainInfo, Errno> {
        Err(Errno::ENOSYS)
    }
    fn pause(&mut self, _: DomId) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn unpause(&mut self, _: DomId) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn destroy(&mut self, _: DomId) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn remote_shutdown(&mut self, _: DomId, _: ShutdownReason) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn set_vcpu_affinity(
        &mut self,
        _: DomId,
        _: u32,
        _: Affinity,
        _: &CpuMap,
    ) -> Result<CpuMap, Errno> {
        Err(Errno::ENOSYS)
    }
    fn vcpu_affinity(&mut self, _: DomId, _: u32) -> Result<(CpuMap, CpuMap), Errno> {
        Err(Errno::ENOSYS)
    }
    fn vcpu_info(&mut self, _: DomId, _: u32) -> Result<control_proto::VcpuState, Errno> {
        Err(Errno::ENOSYS)
    }
    fn create_domain(&mut self, _: [u8; 16], _: u32) -> Result<DomId, Errno> {
        Err(Errno::ENOSYS)
    }
    fn max_mem(&mut self, _: DomId, _: u64) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn populate_physmap(&mut self, _: DomId, _: &mut [u64]) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }
    fn write_frame(&mut self, _: DomId, _: Mfn, _: usize, _: &[u8]) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn alloc_unbound(&mut self, _: DomId, _: DomId) -> Result<EvtchnPort, Errno> {
        Err(Errno::ENOSYS)
    }
    fn pin_l4(&mut self, _: DomId, _: Mfn) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn set_vcpu_context(&mut self, _: DomId, _: &VcpuGuestContext) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn bind_interdomain(&mut self, dom: DomId, port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        if port.0 == 0 || port.0 > 1023 {
            return Err(Errno::EINVAL);
        }
        self.next_port += 1;
        self.ports.insert(self.next_port, (dom.0, port.0));
        Ok(EvtchnPort(self.next_port))
    }
    fn close(&mut self, port: EvtchnPort) {
        assert!(
            self.ports.remove(&port.0).is_some(),
            "closing an unbound port"
        );
    }
    fn notify(&mut self, port: EvtchnPort) {
        assert!(self.ports.contains_key(&port.0));
        self.notified.push(port.0);
    }
    fn map_ring(&mut self, _: DomId, _: Mfn) -> Result<RingId, Errno> {
        Err(Errno::ENOSYS)
    }
    fn ring(&self, id: RingId) -> Option<&[AtomicU32]> {
        let (mem, first, pages) = self.rings.get(&id.0)?;
        Some(&mem[first * 1024..(first + pages) * 1024])
    }
    fn unmap_ring(&mut self, _: RingId) {}
    fn map_grant_ring(&mut self, dom: DomId, refs: &[GrantRef]) -> Result<RingId, Errno> {
        let first = self
            .grants
            .get(&(dom.0, refs[0].0))
            .ok_or(Errno::EINVAL)?
            .clone();
        for (i, r) in refs.iter().enumerate() {
            let g = self.grants.get(&(dom.0, r.0)).ok_or(Errno::EINVAL)?;
            if g.readonly || !Rc::ptr_eq(&g.mem, &first.mem) || g.index != first.index + i {
                return Err(Errno::EINVAL);
            }
        }
        self.next_ring += 1;
        self.rings
            .insert(self.next_ring, (first.mem, first.index, refs.len()));
        Ok(RingId(self.next_ring))
    }
    fn unmap_grant_ring(&mut self, id: RingId) {
        assert!(self.rings.remove(&id.0).is_some(), "unmapping a ring twice");
    }
    fn grant_copy(
        &mut self,
        dom: DomId,
        to_guest: bool,
        buf: &mut [u8],
        segs: &[GrantSeg],
        status: &mut [i16],
    ) -> Result<(), Errno> {
        for (s, st) in segs.iter().zip(status.iter_mut()) {
            self.copies += 1;
            let (off, len) = (usize::from(s.offset), usize::from(s.len));
            if off + len > 4096 || s.buf_off + len > buf.len() {
                self.bad_copies += 1;
                *st = -1;
                continue;
            }
            let Some(g) = self.grants.get(&(dom.0, s.gref.0)) else {
                *st = -4; // GNTST_bad_gntref
                continue;
            };
            if to_guest && g.readonly {
                *st = -6; // GNTST_permission_denied
                continue;
            }
            let mut page = page_bytes(&g.mem, g.index);
            if to_guest {
                page[off..off + len].copy_from_slice(&buf[s.buf_off..s.buf_off + len]);
                fill_page(&g.mem, g.index, &page);
            } else {
                buf[s.buf_off..s.buf_off + len].copy_from_slice(&page[off..off + len]);
            }
            *st = 0;
        }
        Ok(())
    }
    fn io_buffer(&mut self, bytes: usize) -> Option<&'static mut [u8]> {
        Some(vec![0u8; bytes].leak())
    }
}
