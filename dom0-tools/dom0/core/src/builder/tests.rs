//! The builder against a fake hypervisor that keeps frames, owners and the calls.

extern crate std;

use super::*;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec;
use hypercall_abi::elfnote::XenElfNote;
use hypercall_abi::xen::start_info::StartInfo;
use pvboot::testimg::Spec;
use std::string::String;
use zerocopy::FromBytes;

/// One fake domain.
#[derive(Default)]
struct Dom {
    handle: [u8; 16],
    paused: bool,
    max_kib: u64,
    pinned: Option<Mfn>,
    ctx: Option<Box<VcpuGuestContext>>,
    ports: Vec<(EvtchnPort, DomId)>,
    vcpus: u32,
    /// Hard affinity by vCPU, as set (`None`: every CPU).
    hard: BTreeMap<u32, CpuMap>,
    /// Soft affinity by vCPU, as set (`None`: no preference).
    soft: BTreeMap<u32, CpuMap>,
}

/// The fake machine's CPUs.
const NR_CPUS: u32 = 2;

/// The MFN of domain `id`'s shared_info page in the fake (outside the pool).
fn shared_info_of(id: u16) -> u64 {
    0x70 + u64::from(id)
}

/// A fake machine: frames by MFN with their owner, a pool of free frames, the
/// domains, and every call in order. `fail` makes the named step fail.
struct Fake {
    frames: BTreeMap<u64, (DomId, Vec<u8>)>,
    free: u64,
    next_mfn: u64,
    doms: BTreeMap<u16, Dom>,
    calls: Vec<String>,
    /// Every `setvcpuaffinity`, in order: vCPU, which map, the map.
    affinity: Vec<(u32, Affinity, CpuMap)>,
    fail: Option<&'static str>,
    /// What `physinfo` says is free (`None`: it fails).
    physinfo_free: Option<u64>,
}

impl Fake {
    fn new(free: u64) -> Fake {
        Fake {
            frames: BTreeMap::new(),
            free,
            next_mfn: 0x1000,
            doms: BTreeMap::new(),
            calls: Vec::new(),
            affinity: Vec::new(),
            fail: None,
            physinfo_free: None,
        }
    }

    fn step(&mut self, name: &'static str) -> Result<(), Errno> {
        if self.calls.last().is_none_or(|c| c != name) {
            self.calls.push(name.into());
        }
        if self.fail == Some(name) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    fn frame(&self, mfn: u64) -> &[u8] {
        &self.frames[&mfn].1
    }
}

impl Hypervisor for Fake {
    fn xen_version(&mut self) -> Result<crate::hv::XenVersion, Errno> {
        Err(Errno::ENOSYS)
    }
    fn physinfo(&mut self) -> Result<hypercall_abi::domctl::SysctlPhysinfo, Errno> {
        let free = self.physinfo_free.ok_or(Errno::ENOSYS)?;
        Ok(hypercall_abi::domctl::SysctlPhysinfo {
            free_pages: free,
            ..Default::default()
        })
    }
    fn read_console(
        &mut self,
        _from: Option<u32>,
        _buf: &mut [u8],
    ) -> Result<crate::hv::ConsoleChunk, Errno> {
        Err(Errno::ENOSYS)
    }
    fn domain_info(
        &mut self,
        from: DomId,
    ) -> Result<hypercall_abi::domctl::DomctlGetDomainInfo, Errno> {
        self.step("getdomaininfo")?;
        let (&id, _) = self.doms.range(from.0..).next().ok_or(Errno::ESRCH)?;
        Ok(hypercall_abi::domctl::DomctlGetDomainInfo {
            domain: DomId(id),
            shared_info_frame: shared_info_of(id),
            ..Default::default()
        })
    }
    fn pause(&mut self, _dom: DomId) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn remote_shutdown(
        &mut self,
        _dom: DomId,
        _reason: hypercall_abi::sched::ShutdownReason,
    ) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn create_domain(&mut self, handle: [u8; 16], vcpus: u32) -> Result<DomId, Errno> {
        self.step("create")?;
        let id = (1..).find(|i| !self.doms.contains_key(i)).unwrap_or(1);
        // Xen clears the new domain's shared_info page.
        self.frames
            .insert(shared_info_of(id), (DomId(id), alloc::vec![0; 4096]));
        self.doms.insert(
            id,
            Dom {
                handle,
                paused: true,
                vcpus,
                ..Dom::default()
            },
        );
        Ok(DomId(id))
    }
    fn set_vcpu_affinity(
        &mut self,
        dom: DomId,
        vcpu: u32,
        which: Affinity,
        map: &CpuMap,
    ) -> Result<CpuMap, Errno> {
        self.step(match which {
            Affinity::Hard => "setvcpuaffinity",
            Affinity::Soft => "setvcpuaffinity soft",
        })?;
        self.affinity.push((vcpu, which, *map));
        let d = self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?;
        if vcpu >= d.vcpus {
            return Err(Errno::EINVAL);
        }
        // As Xen: the CPUs of the map that run guests; a hard map without one is
        // -EINVAL, a soft one is kept (the effective soft map is then empty).
        let machine = CpuMap::first(NR_CPUS);
        let hard = d.hard.get(&vcpu).unwrap_or(&machine).intersection(&machine);
        match which {
            Affinity::Hard => {
                let effective = map.intersection(&machine);
                if effective.is_empty() {
                    return Err(Errno::EINVAL);
                }
                d.hard.insert(vcpu, *map);
                Ok(effective)
            }
            Affinity::Soft => {
                d.soft.insert(vcpu, *map);
                Ok(map.intersection(&hard))
            }
        }
    }
    fn vcpu_affinity(&mut self, dom: DomId, vcpu: u32) -> Result<(CpuMap, CpuMap), Errno> {
        let d = self.doms.get(&dom.0).ok_or(Errno::ESRCH)?;
        let hard = d.hard.get(&vcpu).copied().unwrap_or(CpuMap::ALL);
        let soft = d.soft.get(&vcpu).copied().unwrap_or(CpuMap::ALL);
        Ok((hard, soft))
    }
    fn vcpu_info(&mut self, dom: DomId, _: u32) -> Result<control_proto::VcpuState, Errno> {
        self.doms.get(&dom.0).ok_or(Errno::ESRCH)?;
        Ok(control_proto::VcpuState::default())
    }
    fn max_vcpus(&mut self, dom: DomId, vcpus: u32) -> Result<(), Errno> {
        self.step("max_vcpus")?;
        let d = self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?;
        // As Xen: the count createdomain was given.
        if d.vcpus != vcpus {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }
    fn max_mem(&mut self, dom: DomId, kib: u64) -> Result<(), Errno> {
        self.step("max_mem")?;
        self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?.max_kib = kib;
        Ok(())
    }
    fn populate_physmap(&mut self, dom: DomId, frames: &mut [u64]) -> Result<usize, Errno> {
        self.step("populate")?;
        let mut n = 0;
        for f in frames.iter_mut() {
            if self.free == 0 {
                break;
            }
            self.free -= 1;
            let mfn = self.next_mfn;
            self.next_mfn += 7; // not contiguous, like real memory may be
            self.frames.insert(mfn, (dom, vec![0xAA; 4096]));
            *f = mfn;
            n += 1;
        }
        Ok(n)
    }
    fn write_frame(
        &mut self,
        dom: DomId,
        mfn: Mfn,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), Errno> {
        self.step("write")?;
        let (owner, f) = self.frames.get_mut(&mfn.0).ok_or(Errno::EINVAL)?;
        if *owner != dom {
            return Err(Errno::EPERM);
        }
        f[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
    fn alloc_unbound(&mut self, dom: DomId, remote: DomId) -> Result<EvtchnPort, Errno> {
        self.step("alloc_unbound")?;
        let d = self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?;
        let port = EvtchnPort(u32::try_from(d.ports.len()).unwrap() + 1);
        d.ports.push((port, remote));
        Ok(port)
    }
    fn pin_l4(&mut self, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
        self.step("pin_l4")?;
        if self.frames.get(&mfn.0).map(|f| f.0) != Some(dom) {
            return Err(Errno::EINVAL);
        }
        self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?.pinned = Some(mfn);
        Ok(())
    }
    fn set_vcpu_context(&mut self, dom: DomId, ctx: &VcpuGuestContext) -> Result<(), Errno> {
        self.step("setvcpucontext")?;
        self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?.ctx = Some(Box::new(ctx.clone()));
        Ok(())
    }
    fn unpause(&mut self, dom: DomId) -> Result<(), Errno> {
        self.step("unpause")?;
        self.doms.get_mut(&dom.0).ok_or(Errno::ESRCH)?.paused = false;
        Ok(())
    }
    fn destroy(&mut self, dom: DomId) -> Result<(), Errno> {
        self.calls.push("destroy".into());
        self.doms.remove(&dom.0).ok_or(Errno::ESRCH)?;
        // The shared_info page is the hypervisor's, not from the pool.
        self.frames.remove(&shared_info_of(dom.0));
        let before = self.frames.len() as u64;
        self.frames.retain(|_, (o, _)| *o != dom);
        self.free += before - self.frames.len() as u64;
        Ok(())
    }
    fn bind_interdomain(&mut self, _dom: DomId, _port: EvtchnPort) -> Result<EvtchnPort, Errno> {
        Err(Errno::ENOSYS)
    }
    fn close(&mut self, _port: EvtchnPort) {}
    fn notify(&mut self, _port: EvtchnPort) {}
    fn map_ring(&mut self, _dom: DomId, _mfn: Mfn) -> Result<crate::hv::RingId, Errno> {
        Err(Errno::ENOSYS)
    }
    fn ring(&self, _id: crate::hv::RingId) -> Option<&[core::sync::atomic::AtomicU32]> {
        None
    }
    fn unmap_ring(&mut self, _id: crate::hv::RingId) {}
}

fn image() -> Vec<u8> {
    Spec::small().build()
}

/// A UUID (xl passes the domain's as its handle).
const HANDLE: [u8; 16] = [
    0x4f, 0x1c, 0x2a, 0x9e, 0x6b, 0x3d, 0x4e, 0x11, 0x8a, 0x5f, 0x00, 0x16, 0x3e, 0x01, 0x02, 0x03,
];

fn req(image: &[u8], memory_mib: u32) -> BuildRequest<'_> {
    BuildRequest {
        name: "hello",
        handle: HANDLE,
        image,
        ramdisk: None,
        memory_mib,
        vcpus: 1,
        cpus: &[],
        cpus_soft: &[],
        cmdline: b"secs=3",
        backend: DomId(0),
        unpause: true,
    }
}

#[test]
fn builds_and_starts_a_domu_in_xens_order() {
    let img = image();
    let mut hv = Fake::new(10_000);
    let b = build(&mut hv, &req(&img, 16)).expect("build");
    assert_eq!(b.domid, DomId(1));
    assert_eq!(b.nr_pages, 4096);
    assert_eq!(
        hv.calls,
        [
            "create",
            "max_vcpus",
            "max_mem",
            "populate",
            "getdomaininfo",
            "write",
            "alloc_unbound",
            "write",
            "pin_l4",
            "setvcpucontext",
            "unpause"
        ]
    );
    // Every vcpu_info's evtchn_upcall_mask is set (byte 1 of each 64), and
    // nothing else of the page is touched.
    let si = hv.frame(shared_info_of(1));
    for (i, b) in si.iter().enumerate() {
        let want = u8::from(i < 32 * 64 && i % 64 == 1);
        assert_eq!(*b, want, "shared_info byte {i}");
    }
    let d = &hv.doms[&1];
    assert!(!d.paused);
    assert_eq!(d.vcpus, 1, "max_vcpus as asked");
    assert_eq!(d.max_kib, 16 * 1024);
    assert_eq!(
        d.ports,
        [(EvtchnPort(1), DomId(0)), (EvtchnPort(2), DomId(0))]
    );
    let ctx = d.ctx.as_ref().unwrap();
    assert_eq!(ctx.user_regs.rip, b.entry);
    assert_eq!(
        ctx.ctrlreg[3] >> 12,
        d.pinned.unwrap().0,
        "vCPU 0 starts on the pinned L4"
    );
    assert_eq!(ctx.user_regs.cs, FLAT_KERNEL_CS);
    assert_ne!(ctx.flags & VgcfFlags::IN_KERNEL.bits(), 0);
    assert_eq!(ctx.kernel_sp, ctx.user_regs.rsp);

    // start_info, found through rsi: the small image's VIRT_BASE is 0, so rsi / 4096
    // is its PFN; the fake hands out MFNs in PFN order.
    let si_pfn = ctx.user_regs.rsi / 4096;
    let si_frame = hv
        .frames
        .iter()
        .filter(|(m, (o, _))| *o == DomId(1) && **m != shared_info_of(1))
        .nth(usize::try_from(si_pfn).unwrap())
        .map(|(m, _)| *m)
        .unwrap();
    let si = StartInfo::read_from_prefix(hv.frame(si_frame)).unwrap().0;
    assert!(si.magic.starts_with(b"xen-3.0-x86_64"), "{:?}", si.magic);
    assert_eq!(si.nr_pages, 4096);
    assert_eq!(si.shared_info, MachineAddr(shared_info_of(1) << 12));
    assert_eq!(si.console.evtchn, EvtchnPort(1));
    assert_eq!(si.console.mfn, b.console.0);
    assert_eq!(si.store_evtchn, EvtchnPort(2));
    assert!(si.cmd_line.starts_with(b"secs=3\0"));
    assert_eq!((b.console.1, b.xenstore.1), (EvtchnPort(1), EvtchnPort(2)));
}

#[test]
fn a_bad_image_is_refused_before_any_hypercall() {
    let mut hv = Fake::new(10_000);
    let e = build(&mut hv, &req(b"\x7fELF not really", 16)).unwrap_err();
    assert!(matches!(e, BuildError::NotElf(_)), "{e}");
    assert!(format!("{e}").contains("not an x86-64 ELF"));
    let no_notes = Spec::small()
        .without_note(XenElfNote::GuestOs)
        .without_note(XenElfNote::XenVersion)
        .without_note(XenElfNote::Entry)
        .without_note(XenElfNote::HypercallPage)
        .without_note(XenElfNote::Features)
        .without_note(XenElfNote::PaeMode)
        .without_note(XenElfNote::Loader)
        .build();
    let e = build(&mut hv, &req(&no_notes, 16)).unwrap_err();
    assert!(
        matches!(e, BuildError::NotPv(_) | BuildError::Layout(_)),
        "{e}"
    );
    let img = image();
    let e = build(&mut hv, &req(&img, 0)).unwrap_err();
    assert!(matches!(e, BuildError::Layout(_)), "{e}");
    assert!(
        hv.calls.is_empty(),
        "nothing asked of the hypervisor: {:?}",
        hv.calls
    );
}

#[test]
fn out_of_memory_destroys_the_domain_and_gives_every_frame_back() {
    let img = image();
    let mut hv = Fake::new(1000);
    let e = build(&mut hv, &req(&img, 16)).unwrap_err();
    assert_eq!(
        e,
        BuildError::OutOfMemory {
            wanted: 4096,
            got: 1000
        }
    );
    assert!(format!("{e}").contains("out of memory"));
    assert_eq!(hv.calls.last().map(String::as_str), Some("destroy"));
    assert!(hv.doms.is_empty());
    assert_eq!(hv.free, 1000, "every frame back");
}

#[test]
fn any_failing_step_destroys_the_half_built_domain() {
    let img = image();
    for step in [
        "max_mem",
        "populate",
        "getdomaininfo",
        "alloc_unbound",
        "write",
        "pin_l4",
        "setvcpucontext",
        "unpause",
    ] {
        let mut hv = Fake::new(10_000);
        hv.fail = Some(step);
        let e = build(&mut hv, &req(&img, 16)).unwrap_err();
        assert_eq!(
            hv.calls.last().map(String::as_str),
            Some("destroy"),
            "{step}"
        );
        assert!(hv.doms.is_empty(), "{step}");
        assert_eq!(hv.free, 10_000, "{step}: frames back");
        if step != "write" {
            assert!(format!("{e}").contains("failed: "), "{step}: {e}");
        }
    }
    let mut hv = Fake::new(10_000);
    hv.fail = Some("create");
    let e = build(&mut hv, &req(&img, 16)).unwrap_err();
    assert_eq!(
        e,
        BuildError::Hypervisor {
            step: "XEN_DOMCTL_createdomain",
            errno: Errno::EINVAL
        }
    );
    assert_eq!(hv.calls, ["create"]);
}

#[test]
fn too_little_free_memory_is_refused_before_creating_anything() {
    let img = image();
    let mut hv = Fake::new(10_000);
    hv.physinfo_free = Some(1000);
    let e = build(&mut hv, &req(&img, 16)).unwrap_err();
    assert_eq!(
        e,
        BuildError::OutOfMemory {
            wanted: 4096,
            got: 1000
        }
    );
    assert!(hv.calls.is_empty(), "{:?}", hv.calls);
}

#[test]
fn the_handle_is_the_request_s_uuid() {
    let img = image();
    let mut hv = Fake::new(10_000);
    let b = build(&mut hv, &req(&img, 16)).unwrap();
    assert_eq!(hv.doms[&b.domid.0].handle, HANDLE);
}

/// The start_info and the PFN -> frame lookup of built domain 1.
fn start_info_of(hv: &Fake) -> (StartInfo, Vec<u64>) {
    let d = &hv.doms[&1];
    let ctx = d.ctx.as_ref().unwrap();
    let mfns: Vec<u64> = hv
        .frames
        .iter()
        .filter(|(m, (o, _))| *o == DomId(1) && **m != shared_info_of(1))
        .map(|(m, _)| *m)
        .collect();
    let si_pfn = usize::try_from(ctx.user_regs.rsi / 4096).unwrap();
    let si = StartInfo::read_from_prefix(hv.frame(mfns[si_pfn]))
        .unwrap()
        .0;
    (si, mfns)
}

fn ramdisk(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from(i % 251).unwrap() + 1)
        .collect()
}

#[test]
fn a_ramdisk_goes_unmapped_after_the_region_with_mod_start_pfn() {
    // Linux says XEN_ELFNOTE_MOD_START_PFN: libxenguest then leaves the module
    // out of the mapped region and passes its first PFN.
    let img = Spec::small()
        .with_note(pvboot::testimg::num_note(XenElfNote::ModStartPfn, 1))
        .build();
    let rd = ramdisk(3 * 4096 + 100);
    let mut hv = Fake::new(10_000);
    let mut r = req(&img, 16);
    r.ramdisk = Some(&rd);
    build(&mut hv, &r).expect("build");
    let (si, mfns) = start_info_of(&hv);
    assert_ne!(si.flags & SifFlags::MOD_START_PFN.bits(), 0);
    assert_eq!(si.mod_len, 4 * 4096, "a domU's mod_len is whole pages");
    let first = usize::try_from(si.mod_start).unwrap();
    let si_pfn = usize::try_from(hv.doms[&1].ctx.as_ref().unwrap().user_regs.rsi / 4096).unwrap();
    assert!(first > si_pfn, "after the bootstrap region");
    let mut back = Vec::new();
    for mfn in &mfns[first..first + 4] {
        back.extend_from_slice(hv.frame(*mfn));
    }
    assert_eq!(&back[..rd.len()], &rd[..]);
    assert!(back[rd.len()..].iter().all(|&b| b == 0), "the tail is zero");
}

#[test]
fn a_ramdisk_is_mapped_after_the_kernel_without_mod_start_pfn() {
    let img = image();
    let rd = ramdisk(5000);
    let mut hv = Fake::new(10_000);
    let mut r = req(&img, 16);
    r.ramdisk = Some(&rd);
    build(&mut hv, &r).expect("build");
    let (si, mfns) = start_info_of(&hv);
    assert_eq!(si.flags & SifFlags::MOD_START_PFN.bits(), 0);
    assert_eq!(si.mod_len, 2 * 4096);
    // The small image's VIRT_BASE is 0: the address is the PFN's.
    assert_eq!(si.mod_start % 4096, 0);
    let pfn = usize::try_from(si.mod_start / 4096).unwrap();
    assert_eq!(hv.frame(mfns[pfn]), &rd[..4096]);
    assert_eq!(&hv.frame(mfns[pfn + 1])[..904], &rd[4096..]);
    // Without one: no module at all.
    let mut hv = Fake::new(10_000);
    build(&mut hv, &req(&img, 16)).expect("build");
    let (si, _) = start_info_of(&hv);
    assert_eq!((si.mod_start, si.mod_len), (0, 0));
}

/// Smaller than Xen's 4 MiB-aligned region: 1 MiB holds the small image (kernel
/// at 1 MiB would not fit, so this one is linked at 0x10000), with the region
/// ending 512 KiB after the stack; an image that does not fit is refused before
/// anything is asked of the hypervisor, with both sizes in the message.
#[test]
fn small_domains_build_and_too_small_ones_are_refused_with_the_sizes() {
    let mut spec = Spec::small();
    spec.segs[0].vaddr = 0x1_0000;
    spec.segs[0].paddr = 0x1_0000;
    spec.entry = 0x1_0000;
    spec.notes = pvboot::testimg::std_notes(0x1_6000);
    let img = spec.build();
    let mut hv = Fake::new(10_000);
    let b = build(&mut hv, &req(&img, 1)).expect("build in 1 MiB");
    assert_eq!(b.nr_pages, 256);
    let (si, _) = start_info_of(&hv);
    assert_eq!(si.nr_pages, 256);
    // Kernel PFNs 0x10..0x21, P2M, start info, xenstore, console, 4 tables.
    assert_eq!((si.pt_base, si.nr_pt_frames), (0x2_5000, 4));
    assert_eq!(hv.doms[&1].max_kib, 1024);

    // The usual image (linked at 1 MiB) needs 0x19A pages: not in 1 MiB.
    let img = image();
    let mut hv = Fake::new(10_000);
    let e = build(&mut hv, &req(&img, 1)).unwrap_err();
    assert!(matches!(e, BuildError::Layout(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("the domain has 1 MiB (256 pages) but this image's bootstrap layout needs 1640 KiB (410 pages"),
        "{msg}"
    );
    assert!(msg.ends_with("give it at least 2 MiB"), "{msg}");
    assert!(hv.calls.is_empty(), "{:?}", hv.calls);
    build(&mut hv, &req(&img, 2)).expect("build in 2 MiB");
}

#[test]
fn a_ramdisk_too_large_for_the_domain_is_refused_before_creating_anything() {
    let img = image();
    let rd = ramdisk(17 << 20);
    let mut hv = Fake::new(10_000);
    let mut r = req(&img, 16);
    r.ramdisk = Some(&rd);
    let e = build(&mut hv, &r).unwrap_err();
    assert!(matches!(e, BuildError::Layout(_)), "{e}");
    assert!(hv.calls.is_empty(), "{:?}", hv.calls);
    assert!(hv.doms.is_empty());
}

fn maps(specs: &[&str]) -> Vec<CpuMap> {
    specs.iter().map(|s| CpuMap::parse(s).unwrap()).collect()
}

#[test]
fn hard_affinity_is_set_after_createdomain_as_libxl_does() {
    let img = image();
    let mut hv = Fake::new(10_000);
    let cpus = maps(&["1", "0-1"]);
    let r = BuildRequest {
        vcpus: 3,
        cpus: &cpus,
        ..req(&img, 16)
    };
    build(&mut hv, &r).expect("build");
    assert_eq!(
        &hv.calls[..4],
        ["create", "max_vcpus", "setvcpuaffinity", "max_mem"]
    );
    let d = &hv.doms[&1];
    assert_eq!(d.hard.get(&0), Some(&cpus[0]));
    assert_eq!(d.hard.get(&1), Some(&cpus[1]));
    assert_eq!(d.hard.get(&2), None, "a vCPU past the list keeps every CPU");
    // No `cpus`: no affinity call at all.
    let mut hv = Fake::new(10_000);
    build(&mut hv, &req(&img, 16)).unwrap();
    assert!(!hv.calls.iter().any(|c| c == "setvcpuaffinity"));
}

#[test]
fn a_map_without_a_cpu_of_the_machine_destroys_the_domain_with_a_clear_error() {
    let img = image();
    let mut hv = Fake::new(10_000);
    hv.physinfo_free = Some(10_000);
    let cpus = maps(&["0", "5-6"]);
    let r = BuildRequest {
        vcpus: 2,
        cpus: &cpus,
        ..req(&img, 16)
    };
    let e = build(&mut hv, &r).unwrap_err();
    assert!(
        matches!(
            e,
            BuildError::Affinity {
                vcpu: 1,
                errno: Errno::EINVAL,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "cpus: vCPU 1's CPUs (5-6) include none that runs guests; \
         XEN_DOMCTL_setvcpuaffinity refused the map: -EINVAL (22)"
    );
    assert_eq!(
        hv.calls,
        ["create", "max_vcpus", "setvcpuaffinity", "destroy"]
    );
    assert!(hv.doms.is_empty(), "the half-built domain is gone");
    assert_eq!(hv.free, 10_000, "no frame taken");
    // With the machine's CPU count known, the message names them.
    let e = BuildError::Affinity {
        vcpu: 0,
        which: Affinity::Hard,
        map: cpus[1],
        errno: Errno::EINVAL,
        nr_cpus: Some(2),
    };
    assert!(
        e.to_string().starts_with(
            "cpus: vCPU 0's CPUs (5-6) include none that runs guests (this machine has 2: 0-1); "
        ),
        "{e}"
    );
    // Another refusal is reported as the hypercall's.
    let mut hv = Fake::new(10_000);
    hv.fail = Some("setvcpuaffinity");
    let e = build(&mut hv, &r).unwrap_err();
    assert!(e.to_string().contains("-EINVAL"), "{e}");
    assert_eq!(hv.calls.last().map(String::as_str), Some("destroy"));
    assert!(hv.doms.is_empty());
    let e = BuildError::Affinity {
        vcpu: 0,
        which: Affinity::Hard,
        map: cpus[0],
        errno: Errno::EPERM,
        nr_cpus: None,
    };
    assert_eq!(
        e.to_string(),
        "XEN_DOMCTL_setvcpuaffinity of vCPU 0 to CPUs 0 failed: EPERM"
    );
}

#[test]
fn soft_affinity_is_set_after_the_hard_maps_for_listed_vcpus_only() {
    let img = image();
    let mut hv = Fake::new(10_000);
    let cpus = maps(&["0-1", "0-1", "1"]);
    let soft = maps(&["1", "0"]);
    let r = BuildRequest {
        vcpus: 3,
        cpus: &cpus,
        cpus_soft: &soft,
        ..req(&img, 16)
    };
    build(&mut hv, &r).expect("build");
    // Every hard map, then the soft ones, all before max_mem as libxl sets them.
    assert_eq!(
        &hv.calls[..5],
        [
            "create",
            "max_vcpus",
            "setvcpuaffinity",
            "setvcpuaffinity soft",
            "max_mem"
        ]
    );
    assert_eq!(
        hv.affinity,
        [
            (0, Affinity::Hard, cpus[0]),
            (1, Affinity::Hard, cpus[1]),
            (2, Affinity::Hard, cpus[2]),
            (0, Affinity::Soft, soft[0]),
            (1, Affinity::Soft, soft[1]),
        ]
    );
    let d = &hv.doms[&1];
    assert_eq!(d.soft.get(&0), Some(&soft[0]));
    assert_eq!(d.soft.get(&1), Some(&soft[1]));
    assert_eq!(
        d.soft.get(&2),
        None,
        "a vCPU past the list has no preference"
    );
    assert_eq!(d.hard.get(&0), Some(&cpus[0]), "the hard map stays");

    // Soft maps alone: only the soft calls; neither: no affinity call at all.
    let mut hv = Fake::new(10_000);
    let r = BuildRequest {
        vcpus: 2,
        cpus_soft: &soft[..1],
        ..req(&img, 16)
    };
    build(&mut hv, &r).expect("build");
    assert_eq!(
        &hv.calls[..4],
        ["create", "max_vcpus", "setvcpuaffinity soft", "max_mem"]
    );
    assert_eq!(hv.affinity, [(0, Affinity::Soft, soft[0])]);
    let mut hv = Fake::new(10_000);
    build(&mut hv, &req(&img, 16)).unwrap();
    assert!(hv.affinity.is_empty());
}

#[test]
fn a_soft_map_without_a_cpu_of_the_machine_is_kept_and_a_refusal_destroys_the_domain() {
    let img = image();
    // Xen takes a soft map with none of its CPUs (it has no effect): the build goes on.
    let mut hv = Fake::new(10_000);
    let soft = maps(&["5-6"]);
    let r = BuildRequest {
        cpus_soft: &soft,
        ..req(&img, 16)
    };
    let b = build(&mut hv, &r).expect("an ineffective soft map is not an error");
    assert_eq!(hv.doms[&b.domid.0].soft.get(&0), Some(&soft[0]));
    assert_eq!(hv.calls.last().map(String::as_str), Some("unpause"));

    // A hypervisor that does refuse it: the half-built domain is destroyed.
    let mut hv = Fake::new(10_000);
    hv.fail = Some("setvcpuaffinity soft");
    let cpus = maps(&["0"]);
    let r = BuildRequest {
        cpus: &cpus,
        cpus_soft: &soft,
        ..req(&img, 16)
    };
    let e = build(&mut hv, &r).unwrap_err();
    assert_eq!(
        e,
        BuildError::Affinity {
            vcpu: 0,
            which: Affinity::Soft,
            map: soft[0],
            errno: Errno::EINVAL,
            nr_cpus: None,
        }
    );
    assert_eq!(
        e.to_string(),
        "XEN_DOMCTL_setvcpuaffinity (soft) of vCPU 0 to CPUs 5-6 failed: EINVAL"
    );
    assert_eq!(
        hv.calls,
        [
            "create",
            "max_vcpus",
            "setvcpuaffinity",
            "setvcpuaffinity soft",
            "destroy"
        ]
    );
    assert!(hv.doms.is_empty(), "the half-built domain is gone");
    assert_eq!(hv.free, 10_000, "no frame taken");
}
