//! `xen_version`, `console_io`, `sched_op` (and its compat form), `vm_assist` and
//! `physdev_op`.

use super::{HvError, HvResult};
use crate::platform::Platform;
use crate::traps::GuestCtx;
use hypercall_abi::Errno;
use hypercall_abi::console::ConsoleIo;
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::physdev::{PhysdevOp, PhysdevOpCompat, PhysdevSetIopl};
use hypercall_abi::types::GuestPtr;
use hypercall_abi::version::{
    XEN_CAPABILITIES, XEN_CHANGESET, XEN_EXTRAVERSION, XEN_PAGESIZE, XEN_VERSION, XenCompileInfo,
    XenFeatureInfo, XenPlatformParameters, XenVer, pv_features,
};
use hypercall_abi::vm_assist::{VmAssistCmd, VmAssistType};
use hypercall_abi::xen::HYPERVISOR_VIRT_START;

/// A fixed-size, NUL-padded copy of `s` (cut to leave at least one NUL).
fn cstr<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    let n = s.len().min(N.saturating_sub(1));
    if let (Some(dst), Some(src)) = (out.get_mut(..n), s.as_bytes().get(..n)) {
        dst.copy_from_slice(src);
    }
    out
}

/// `xen_version`: answers as Xen 4.17 does (digest §6.12).
pub fn xen_version<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    arg: GuestPtr<()>,
) -> HvResult {
    let va = arg.addr();
    let p = &mut *ctx.p;
    match XenVer::from_nr(cmd) {
        Some(XenVer::Version) => return Ok(XEN_VERSION),
        Some(XenVer::Pagesize) => {
            return if arg.is_null() {
                Ok(XEN_PAGESIZE)
            } else {
                Err(Errno::EINVAL.into())
            };
        }
        Some(XenVer::Extraversion) => p.write_obj(va, &cstr::<16>(XEN_EXTRAVERSION))?,
        Some(XenVer::Capabilities) => p.write_obj(va, &cstr::<1024>(XEN_CAPABILITIES))?,
        Some(XenVer::Changeset) => p.write_obj(va, &cstr::<64>(XEN_CHANGESET))?,
        Some(XenVer::CompileInfo) => {
            let info = XenCompileInfo {
                compiler: cstr("rustc (stable)"),
                compile_by: cstr("xen-like-hv"),
                compile_domain: cstr(""),
                compile_date: cstr(""),
            };
            p.write_obj(va, &info)?;
        }
        Some(XenVer::PlatformParameters) => {
            p.write_obj(
                va,
                &XenPlatformParameters {
                    virt_start: HYPERVISOR_VIRT_START,
                },
            )?;
        }
        Some(XenVer::GetFeatures) => {
            let mut fi: XenFeatureInfo = p.read_obj(va)?;
            if fi.submap_idx != 0 {
                return Err(Errno::EINVAL.into());
            }
            let pae = ctx.dom.assist(VmAssistType::PaeExtendedCr3 as u32);
            fi.submap = pv_features(ctx.dom.privileged, pae);
            ctx.p.write_obj(va, &fi)?;
        }
        Some(XenVer::GuestHandle) => p.write_obj(va, &[0u8; 16])?,
        Some(XenVer::Commandline) => {
            // Xen 4.17's default policy answers "<denied>" to unprivileged domains.
            let text = if ctx.dom.privileged {
                p.hv_cmdline()
            } else {
                "<denied>"
            };
            let line = cstr::<1024>(text);
            p.write_obj(va, &line)?;
        }
        Some(XenVer::BuildId) => {
            if !ctx.dom.privileged {
                return Err(HvError::NotPrivileged);
            }
            return Err(Errno::ENODATA.into());
        }
        None => return Err(Errno::ENOSYS.into()),
    }
    Ok(0)
}

/// Bytes of console output taken per invocation; longer writes continue.
const CONSOLE_CHUNK: u32 = 4096;

/// `console_io`: write for every domain (line-buffered, prefixed with the domain id on
/// COM1; only printable characters from non-privileged domains); read for dom0.
pub fn console_io<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    cmd: u32,
    count: u32,
    buffer: GuestPtr<u8>,
) -> HvResult {
    let op = ConsoleIo::from_nr(cmd);
    // Permission first, as Xen's XSM check: domUs may only write.
    if !ctx.dom.privileged && op != Some(ConsoleIo::Write) {
        return Err(HvError::NotPrivileged);
    }
    match op {
        Some(ConsoleIo::Write) => {
            let take = count.min(CONSOLE_CHUNK);
            let mut done = 0u32;
            const STEP: u32 = 256;
            let mut buf = [0u8; STEP as usize];
            while done < take {
                let n = (take - done).min(STEP);
                let chunk = buf.get_mut(..n as usize).unwrap_or(&mut []);
                ctx.p
                    .read_guest(buffer.addr().wrapping_add(u64::from(done)), chunk)?;
                let (dom, p) = (&mut *ctx.dom, &mut *ctx.p);
                let id = dom.id;
                dom.console
                    .push(chunk, dom.privileged, |line| p.console_line(id, line));
                done += n;
            }
            if count > take {
                let args = [
                    u64::from(cmd),
                    u64::from(count - take),
                    buffer.addr().wrapping_add(u64::from(take)),
                    0,
                    0,
                ];
                return ctx.continuation(Hypercall::ConsoleIo, args);
            }
            Ok(0)
        }
        Some(ConsoleIo::Read) => {
            if count > i32::MAX as u32 {
                return Err(Errno::E2BIG.into());
            }
            // The hypervisor console has no input source yet: nothing to read.
            Ok(0)
        }
        None => Err(Errno::ENOSYS.into()),
    }
}

/// `vm_assist(cmd, type)`: the types valid for 64-bit PV guests.
pub fn vm_assist<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, ty: u32) -> HvResult {
    // Xen checks the type before the command.
    let ty = VmAssistType::from_raw(ty).ok_or(Errno::EINVAL)?;
    let cmd = VmAssistCmd::from_nr(cmd).ok_or(Errno::ENOSYS)?;
    match cmd {
        VmAssistCmd::Enable => ctx.dom.vm_assist |= ty.bit(),
        VmAssistCmd::Disable => ctx.dom.vm_assist &= !ty.bit(),
    }
    Ok(0)
}

fn physdev<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, arg: u64) -> HvResult {
    match PhysdevOp::from_nr(cmd) {
        Some(PhysdevOp::SetIopl) => {
            let op: PhysdevSetIopl = ctx.p.read_obj(arg)?;
            ctx.vcpu.iopl = u8::try_from(op.iopl)
                .ok()
                .filter(|&l| l <= 3)
                .ok_or(Errno::EINVAL)?;
            Ok(0)
        }
        Some(
            op @ (PhysdevOp::ManagePciAdd
            | PhysdevOp::ManagePciRemove
            | PhysdevOp::ManagePciAddExt
            | PhysdevOp::PciDeviceAdd
            | PhysdevOp::PciDeviceRemove
            | PhysdevOp::PciMmcfgReserved),
        ) => super::physdev::pci_op(ctx, op, arg),
        _ => Err(Errno::ENOSYS.into()),
    }
}

/// `physdev_op`: `PHYSDEVOP_set_iopl` (the virtual IOPL that `cli`/`sti` and port I/O
/// are checked against) and the PCI device reports (`hypercall::physdev`).
pub fn physdev_op<P: Platform>(ctx: &mut GuestCtx<'_, P>, cmd: u32, arg: GuestPtr<()>) -> HvResult {
    if let Some(r) = super::physdev_irq::physdev_op(ctx, cmd, arg) {
        return r;
    }
    physdev(ctx, cmd, arg.addr())
}

/// `physdev_op_compat`: the same with the op's number inside the struct; the op's
/// argument is the struct's union, in guest memory (as Xen passes `&uop->u` on).
pub fn physdev_op_compat<P: Platform>(
    ctx: &mut GuestCtx<'_, P>,
    op: GuestPtr<PhysdevOpCompat>,
) -> HvResult {
    let compat: PhysdevOpCompat = ctx.p.read_obj(op.addr())?;
    physdev(ctx, compat.cmd, op.addr().wrapping_add(8))
}
