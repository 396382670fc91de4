//! [`Hypervisor`] on the real hypervisor: `xen_version`, `sysctl`, `domctl`
//! and `sched_op` hypercalls through the runtime's hypercall page.

use alloc::string::String;

use dom0_core::{ConsoleChunk, Hypervisor, XenVersion};
use pv_runtime::abi::domctl::{
    Domctl, DomctlCmd, DomctlGetDomainInfo, Sysctl, SysctlCmd, SysctlPhysinfo, SysctlReadConsole,
};
use pv_runtime::abi::guest::HypercallPage;
use pv_runtime::abi::hypercall::{domctl, sched_op, sysctl, xen_version};
use pv_runtime::abi::sched::{SchedOp, SchedRemoteShutdown, ShutdownReason};
use pv_runtime::abi::version::{XenCompileInfo, XenVer};
use pv_runtime::abi::{DomId, Errno};
use pv_runtime::hypercall::{handle, handle_mut};

/// The hypervisor, reached by hypercalls.
#[derive(Debug, Default)]
pub struct XenHv;

fn inv() -> HypercallPage {
    // SAFETY: every call below passes handles to live objects of exactly the
    // type the hypercall reads or writes (`handle`/`handle_mut`), and the one
    // buffer address inside an argument (readconsole's) points at a live
    // `&mut [u8]` of the `count` it names. None of these hypercalls touches
    // the runtime's mappings or trap table.
    unsafe { pv_runtime::hypercall::invoker() }
}

/// The text of a NUL-terminated field.
fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn sysctl_op(op: &mut Sysctl) -> Result<(), Errno> {
    sysctl(&mut inv(), handle_mut(op).cast()).map(drop)
}

fn domctl_op(op: &mut Domctl) -> Result<(), Errno> {
    domctl(&mut inv(), handle_mut(op).cast()).map(drop)
}

fn domctl_simple(cmd: DomctlCmd, dom: DomId) -> Result<(), Errno> {
    let mut op = Domctl {
        cmd: cmd.nr(),
        domain: dom,
        ..Domctl::default()
    };
    domctl_op(&mut op)
}

impl Hypervisor for XenHv {
    fn xen_version(&mut self) -> Result<XenVersion, Errno> {
        let v = pv_runtime::xen::version()?;
        let extra = pv_runtime::xen::extraversion()?;
        let mut info = XenCompileInfo {
            compiler: [0; 64],
            compile_by: [0; 16],
            compile_domain: [0; 32],
            compile_date: [0; 32],
        };
        // Compile info is decoration: without it the version still stands.
        let by = match xen_version(
            &mut inv(),
            XenVer::CompileInfo.nr(),
            handle_mut(&mut info).cast(),
        ) {
            Ok(_) => cstr(&info.compile_by),
            Err(_) => String::new(),
        };
        Ok(XenVersion {
            major: v.major,
            minor: v.minor,
            extra: cstr(&extra),
            compile_by: by,
        })
    }

    fn physinfo(&mut self) -> Result<SysctlPhysinfo, Errno> {
        let mut op = Sysctl::new(SysctlCmd::Physinfo, &SysctlPhysinfo::default());
        sysctl_op(&mut op)?;
        Ok(op.arg())
    }

    fn read_console(&mut self, from: Option<u32>, buf: &mut [u8]) -> Result<ConsoleChunk, Errno> {
        let arg = SysctlReadConsole {
            clear: 0,
            incremental: u8::from(from.is_some()),
            index: from.unwrap_or(0),
            buffer: buf.as_mut_ptr().expose_provenance() as u64,
            count: u32::try_from(buf.len()).unwrap_or(u32::MAX),
            ..SysctlReadConsole::default()
        };
        let mut op = Sysctl::new(SysctlCmd::ReadConsole, &arg);
        sysctl_op(&mut op)?;
        let out: SysctlReadConsole = op.arg();
        Ok(ConsoleChunk {
            len: usize::try_from(out.count).unwrap_or(0).min(buf.len()),
            next: out.index,
        })
    }

    fn domain_info(&mut self, from: DomId) -> Result<DomctlGetDomainInfo, Errno> {
        let mut op = Domctl::new(
            DomctlCmd::GetDomainInfo,
            from,
            &DomctlGetDomainInfo::default(),
        );
        domctl_op(&mut op)?;
        let mut info: DomctlGetDomainInfo = op.arg();
        // Xen reports the domain found in the header (and in the union).
        info.domain = op.domain;
        Ok(info)
    }

    fn pause(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::PauseDomain, dom)
    }

    fn unpause(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::UnpauseDomain, dom)
    }

    fn destroy(&mut self, dom: DomId) -> Result<(), Errno> {
        domctl_simple(DomctlCmd::DestroyDomain, dom)
    }

    fn remote_shutdown(&mut self, dom: DomId, reason: ShutdownReason) -> Result<(), Errno> {
        let arg = SchedRemoteShutdown {
            domain_id: dom,
            _pad: 0,
            reason: reason as u32,
        };
        sched_op(
            &mut inv(),
            SchedOp::RemoteShutdown.nr(),
            handle(&arg).cast(),
        )
        .map(drop)
    }

    fn now_ns(&self) -> u64 {
        pv_runtime::time::system_time_ns()
    }
}
