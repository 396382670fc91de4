//! The PV domain builder: an ELF image and a configuration in, a running domU out.
//!
//! Every hypercall goes through [`Hypervisor`] (the builder's part of it), which dom0
//! implements with the real hypercalls (foreign writes through a mapping window) and
//! the tests with a fake.
//! The contents of the new domain's start-of-day memory (kernel, page tables,
//! start_info, P2M list, hypercall page) come from [`pvboot`], the code the
//! hypervisor builds dom0 with, in its `DomU` flavour.

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use hypercall_abi::xen::arch::VgcfFlags;
use hypercall_abi::xen::start_info::SifFlags;
use hypercall_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS, VcpuGuestContext};
use hypercall_abi::{DomId, Errno, EvtchnPort, MachineAddr, Mfn, Pfn};
use pvboot::elf::Elf;
use pvboot::{BuildParams, DomainMemory, Flavour, Layout, MemError, XenImageInfo};
use zerocopy::FromZeros;

use crate::hv::Hypervisor;
use control_proto::cpus::{Affinity, CpuMap};

/// What to build.
#[derive(Clone, Copy, Debug)]
pub struct BuildRequest<'a> {
    /// The domain's name (for messages).
    pub name: &'a str,
    /// Its handle (`xen_domain_handle_t`): the domain's UUID, as xl passes it.
    pub handle: [u8; 16],
    /// The PV ELF image.
    pub image: &'a [u8],
    /// The initial ramdisk (`start_info.mod_start`/`mod_len`), placed as
    /// libxenguest places it: unmapped after the bootstrap region with
    /// `SIF_MOD_START_PFN` when the kernel's notes allow, else mapped after it.
    pub ramdisk: Option<&'a [u8]>,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs (`max_vcpus`): vCPU 0 starts; the kernel brings the others up.
    pub vcpus: u32,
    /// Hard affinity (`cpus =`): vCPU i runs only on `cpus[i]`, set right after
    /// `createdomain` as libxl does; vCPUs past the list keep every CPU.
    pub cpus: &'a [CpuMap],
    /// Soft affinity (`cpus_soft =`): vCPU i prefers `cpus_soft[i]`, set after
    /// the hard maps; vCPUs past the list have no preference.
    pub cpus_soft: &'a [CpuMap],
    /// The kernel command line.
    pub cmdline: &'a [u8],
    /// The domain serving its console and xenstore (dom0).
    pub backend: DomId,
    /// Unpause the domain at the end (step 11). The agent says no and unpauses it
    /// itself once its xenstore entries are written and the store introduced, as xl
    /// does.
    pub unpause: bool,
}

/// A built, running domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Built {
    /// Its id.
    pub domid: DomId,
    /// Pages it got.
    pub nr_pages: u64,
    /// The console ring's machine frame and the domU's end of its event channel.
    pub console: (Mfn, EvtchnPort),
    /// The xenstore ring's machine frame and the domU's end of its event channel.
    pub xenstore: (Mfn, EvtchnPort),
    /// Its entry point.
    pub entry: u64,
}

/// Why a build failed. The half-built domain is destroyed first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The image is not a 64-bit x86 ELF.
    NotElf(String),
    /// The ELF lacks what a Xen PV kernel must have (its notes).
    NotPv(String),
    /// The memory layout does not work out (too little memory for the image).
    Layout(String),
    /// The hypervisor has not enough free memory.
    OutOfMemory {
        /// Pages wanted.
        wanted: u64,
        /// Pages the hypervisor gave.
        got: u64,
    },
    /// A hypercall failed.
    Hypervisor {
        /// Which step.
        step: &'static str,
        /// What it answered.
        errno: Errno,
    },
    /// `XEN_DOMCTL_setvcpuaffinity` refused a vCPU's hard (`cpus =`) or soft
    /// (`cpus_soft =`) affinity.
    Affinity {
        /// The vCPU.
        vcpu: u32,
        /// Which map.
        which: Affinity,
        /// Its map, as the config gave it.
        map: CpuMap,
        /// What the hypervisor answered (`-EINVAL` for a hard map: no CPU of it
        /// runs guests).
        errno: Errno,
        /// The machine's CPUs (`physinfo`), when known.
        nr_cpus: Option<u32>,
    },
    /// Writing the start-of-day memory failed.
    Build(String),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NotElf(e) => write!(f, "the image is not an x86-64 ELF executable: {e}"),
            BuildError::NotPv(e) => {
                write!(f, "the image is an ELF but not a Xen PV kernel: {e}")
            }
            BuildError::Layout(e) => write!(f, "the domain's memory layout does not fit: {e}"),
            BuildError::OutOfMemory { wanted, got } => write!(
                f,
                "out of memory: the domain needs {wanted} pages ({} MiB) and the hypervisor \
                 had {got} to give; destroy a domain or ask for less memory",
                wanted / 256
            ),
            BuildError::Hypervisor { step, errno } => {
                write!(f, "{step} failed: {errno}")
            }
            BuildError::Affinity {
                vcpu,
                which: Affinity::Hard,
                map,
                errno: Errno::EINVAL,
                nr_cpus,
            } => {
                write!(
                    f,
                    "cpus: vCPU {vcpu}'s CPUs ({map}) include none that runs guests"
                )?;
                if let Some(n) = nr_cpus {
                    write!(f, " (this machine has {n}: {})", CpuMap::first(*n))?;
                }
                f.write_str("; XEN_DOMCTL_setvcpuaffinity refused the map: -EINVAL (22)")
            }
            BuildError::Affinity {
                vcpu,
                which: Affinity::Hard,
                map,
                errno,
                ..
            } => write!(
                f,
                "XEN_DOMCTL_setvcpuaffinity of vCPU {vcpu} to CPUs {map} failed: {errno}"
            ),
            BuildError::Affinity {
                vcpu,
                which: Affinity::Soft,
                map,
                errno,
                ..
            } => write!(
                f,
                "XEN_DOMCTL_setvcpuaffinity (soft) of vCPU {vcpu} to CPUs {map} failed: {errno}"
            ),
            BuildError::Build(e) => write!(f, "building the domain's memory: {e}"),
        }
    }
}

/// PFNs populated per `populate_physmap` call.
const POPULATE_BATCH: usize = 512;

/// The new domain's memory seen through the hypervisor's foreign writes.
struct ForeignMem<'h, H: Hypervisor> {
    hv: &'h mut H,
    dom: DomId,
    p2m: &'h [u64],
}

impl<H: Hypervisor> DomainMemory for ForeignMem<'_, H> {
    fn mfn(&self, pfn: Pfn) -> Option<Mfn> {
        usize::try_from(pfn.0)
            .ok()
            .and_then(|i| self.p2m.get(i))
            .map(|&m| Mfn(m))
    }

    fn write(&mut self, pfn: Pfn, offset: usize, bytes: &[u8]) -> Result<(), MemError> {
        let mfn = self.mfn(pfn).ok_or(MemError::NotPopulated)?;
        if offset.saturating_add(bytes.len()) > 4096 {
            return Err(MemError::OutOfRange);
        }
        self.hv
            .write_frame(self.dom, mfn, offset, bytes)
            .map_err(|_| MemError::Fault)
    }

    fn zero(&mut self, pfn: Pfn) -> Result<(), MemError> {
        self.write(pfn, 0, &[0u8; 4096])
    }
}

fn hv_err(step: &'static str) -> impl Fn(Errno) -> BuildError {
    move |errno| BuildError::Hypervisor { step, errno }
}

/// Builds and starts a domU from `req` (see the module docs for the sequence). On
/// failure the half-built domain is destroyed, so nothing is left behind.
pub fn build<H: Hypervisor>(hv: &mut H, req: &BuildRequest<'_>) -> Result<Built, BuildError> {
    // Check the image before asking the hypervisor for anything.
    let elf = Elf::parse(req.image).map_err(|e| BuildError::NotElf(e.to_string()))?;
    let info = XenImageInfo::parse(&elf).map_err(|e| BuildError::NotPv(e.to_string()))?;
    let nr_pages = u64::from(req.memory_mib) * 256;
    let module_len = req.ramdisk.map_or(0, |r| r.len() as u64);
    let layout = Layout::compute(&info, nr_pages, Flavour::DomU, module_len)
        .map_err(|e| BuildError::Layout(e.to_string()))?;

    // As xl does: refuse before creating anything when the machine has too little
    // free memory (a hypervisor that cannot say is asked anyway).
    let physinfo = hv.physinfo().ok();
    if let Some(p) = &physinfo
        && p.free_pages < nr_pages
    {
        return Err(BuildError::OutOfMemory {
            wanted: nr_pages,
            got: p.free_pages,
        });
    }
    let nr_cpus = physinfo.map(|p| p.nr_cpus).filter(|&n| n > 0);
    let dom = hv
        .create_domain(req.handle, req.vcpus)
        .map_err(hv_err("XEN_DOMCTL_createdomain"))?;
    let result = hv
        .max_vcpus(dom, req.vcpus)
        .map_err(hv_err("XEN_DOMCTL_max_vcpus"))
        .and_then(|()| set_affinity(hv, dom, Affinity::Hard, req.cpus, nr_cpus))
        .and_then(|()| set_affinity(hv, dom, Affinity::Soft, req.cpus_soft, nr_cpus))
        .and_then(|()| fill_and_start(hv, dom, req, &elf, &info, &layout));
    match result {
        Ok(b) => Ok(b),
        Err(e) => {
            let _ = hv.destroy(dom);
            Err(e)
        }
    }
}

/// Each listed vCPU's hard or soft affinity, as libxl sets them before
/// `max_mem` (the hard maps first). A soft map the hypervisor takes but finds
/// no effective CPU in is kept: it only fails on an error.
fn set_affinity<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    which: Affinity,
    maps: &[CpuMap],
    nr_cpus: Option<u32>,
) -> Result<(), BuildError> {
    for (vcpu, map) in (0u32..).zip(maps) {
        hv.set_vcpu_affinity(dom, vcpu, which, map)
            .map_err(|errno| BuildError::Affinity {
                vcpu,
                which,
                map: *map,
                errno,
                nr_cpus,
            })?;
    }
    Ok(())
}

/// Everything after `createdomain` and the affinity.
fn fill_and_start<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    req: &BuildRequest<'_>,
    elf: &Elf<'_>,
    info: &XenImageInfo<'_>,
    layout: &Layout,
) -> Result<Built, BuildError> {
    let nr_pages = layout.nr_pages();
    hv.max_mem(dom, nr_pages * 4)
        .map_err(hv_err("XEN_DOMCTL_max_mem"))?;
    let p2m = populate(hv, dom, nr_pages)?;
    let dinfo = hv
        .domain_info(dom)
        .map_err(hv_err("XEN_DOMCTL_getdomaininfo"))?;
    if dinfo.domain != dom {
        return Err(hv_err("XEN_DOMCTL_getdomaininfo")(Errno::ESRCH));
    }
    let shared_info = Mfn(dinfo.shared_info_frame);
    mask_upcalls(hv, dom, shared_info)?;
    let console_port = hv
        .alloc_unbound(dom, req.backend)
        .map_err(hv_err("EVTCHNOP_alloc_unbound (console)"))?;
    let store_port = hv
        .alloc_unbound(dom, req.backend)
        .map_err(hv_err("EVTCHNOP_alloc_unbound (xenstore)"))?;
    let params = BuildParams {
        shared_info: MachineAddr(shared_info.0 << 12),
        module: req.ramdisk.filter(|r| !r.is_empty()),
        cmdline: req.cmdline,
        store_evtchn: store_port,
        console_evtchn: console_port,
        extra_flags: SifFlags::empty(),
    };
    let built = {
        let mut mem = ForeignMem { hv, dom, p2m: &p2m };
        pvboot::build(elf, info, layout, &mut mem, &params)
            .map_err(|e| BuildError::Build(e.to_string()))?
    };
    hv.pin_l4(dom, built.cr3_mfn)
        .map_err(hv_err("MMUEXT_PIN_L4_TABLE"))?;
    let ctx = initial_context(&built);
    hv.set_vcpu_context(dom, &ctx)
        .map_err(hv_err("XEN_DOMCTL_setvcpucontext"))?;
    if req.unpause {
        hv.unpause(dom)
            .map_err(hv_err("XEN_DOMCTL_unpausedomain"))?;
    }
    let (console_mfn, store_mfn) = match (built.console, built.xenstore) {
        (Some((_, c)), Some((_, s))) => (c, s),
        _ => return Err(BuildError::Build("the layout has no console page".into())),
    };
    Ok(Built {
        domid: dom,
        nr_pages,
        console: (console_mfn, console_port),
        xenstore: (store_mfn, store_port),
        entry: built.rip,
    })
}

/// Populates PFNs `0..nr_pages` of `dom`; the P2M (MFN per PFN).
fn populate<H: Hypervisor>(hv: &mut H, dom: DomId, nr_pages: u64) -> Result<Vec<u64>, BuildError> {
    let n = usize::try_from(nr_pages).map_err(|_| BuildError::OutOfMemory {
        wanted: nr_pages,
        got: 0,
    })?;
    // The P2M lives on dom0's heap: a failed allocation is an error, not a panic.
    let mut p2m = Vec::new();
    if p2m.try_reserve_exact(n).is_err() {
        return Err(BuildError::Build(alloc::format!(
            "dom0's heap cannot hold the P2M of {nr_pages} pages ({} KiB); ask for less memory",
            nr_pages * 8 / 1024
        )));
    }
    p2m.resize(n, 0u64);
    let mut done = 0usize;
    while done < n {
        let end = (done + POPULATE_BATCH).min(n);
        let batch = &mut p2m[done..end];
        for (k, f) in batch.iter_mut().enumerate() {
            *f = (done + k) as u64;
        }
        let want = batch.len();
        let got = match hv.populate_physmap(dom, batch) {
            Ok(g) => g,
            Err(Errno::ENOMEM) => 0,
            Err(e) => return Err(hv_err("XENMEM_populate_physmap")(e)),
        };
        done += got.min(want);
        if got < want {
            return Err(BuildError::OutOfMemory {
                wanted: nr_pages,
                got: done as u64,
            });
        }
    }
    Ok(p2m)
}

/// vCPU 0's first context, as libxenguest sets it for a 64-bit PV domU: kernel mode
/// at the entry point, events on, `rsi` = start_info, the kernel stack for bounces.
/// Sets `evtchn_upcall_mask` in every `vcpu_info` of the new domain's
/// shared_info, as libxc's `shared_info_x86_64` does: Xen leaves the page as
/// it cleared it (masks 0), so an event pending before the kernel registered
/// its callback (the console or store channel's first notification) would be
/// bounced to address 0 and crash it. Only the mask bytes are written.
fn mask_upcalls<H: Hypervisor>(hv: &mut H, dom: DomId, shared_info: Mfn) -> Result<(), BuildError> {
    let vcpu_info = core::mem::size_of::<hypercall_abi::xen::shared_info::VcpuInfo>();
    let mask = core::mem::offset_of!(
        hypercall_abi::xen::shared_info::VcpuInfo,
        evtchn_upcall_mask
    );
    for i in 0..hypercall_abi::xen::LEGACY_MAX_VCPUS {
        hv.write_frame(dom, shared_info, i * vcpu_info + mask, &[1])
            .map_err(hv_err("masking upcalls in shared_info"))?;
    }
    Ok(())
}

fn initial_context(b: &pvboot::BuiltDomain) -> Box<VcpuGuestContext> {
    let mut c = Box::new(VcpuGuestContext::new_zeroed());
    c.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    c.user_regs.rip = b.rip;
    c.user_regs.rsp = b.rsp;
    c.user_regs.rsi = b.rsi;
    c.user_regs.cs = FLAT_KERNEL_CS;
    c.user_regs.ss = FLAT_KERNEL_SS;
    c.user_regs.ds = FLAT_KERNEL_SS;
    c.user_regs.es = FLAT_KERNEL_SS;
    c.user_regs.fs = FLAT_KERNEL_SS;
    c.user_regs.gs = FLAT_KERNEL_SS;
    c.user_regs.rflags = 1 << 9;
    c.kernel_ss = u64::from(b.kernel_ss);
    c.kernel_sp = b.kernel_sp;
    c.ctrlreg[3] = b.cr3_mfn.0 << 12;
    c
}

#[cfg(test)]
mod tests;
