//! Questions to the hypervisor: `xen_version` (ABI digest §6.12) and the
//! domain's own id.

use core::fmt;

use hypercall_abi::hypercall::xen_version;
use hypercall_abi::version::{
    XenCapabilitiesInfo, XenChangesetInfo, XenExtraversion, XenFeatureInfo, XenPlatformParameters,
    XenVer,
};
use hypercall_abi::xen::start_info::SifFlags;
use hypercall_abi::{DomId, Errno, GuestPtr};

use crate::hypercall::{handle_mut, hc};

/// `XENVER_version` packs the major version above this bit.
const MAJOR_SHIFT: u32 = 16;

/// A hypervisor version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `XENVER_version`.
pub fn version() -> Result<Version, Errno> {
    let v = xen_version(&mut hc(), XenVer::Version.nr(), GuestPtr::NULL)?;
    Ok(Version {
        major: u32::try_from(v >> MAJOR_SHIFT).unwrap_or(u32::MAX),
        minor: u32::try_from(v & ((1 << MAJOR_SHIFT) - 1)).unwrap_or(u32::MAX),
    })
}

fn query<T>(cmd: XenVer, buf: &mut T) -> Result<u64, Errno> {
    xen_version(&mut hc(), cmd.nr(), handle_mut(buf).cast())
}

/// `XENVER_extraversion` into `buf` (which the caller may pre-fill, to see
/// what the hypervisor writes).
pub fn extraversion_into(buf: &mut XenExtraversion) -> Result<(), Errno> {
    query(XenVer::Extraversion, buf).map(drop)
}

/// `XENVER_capabilities` into `buf`.
pub fn capabilities_into(buf: &mut XenCapabilitiesInfo) -> Result<(), Errno> {
    query(XenVer::Capabilities, buf).map(drop)
}

/// `XENVER_changeset` into `buf`.
pub fn changeset_into(buf: &mut XenChangesetInfo) -> Result<(), Errno> {
    query(XenVer::Changeset, buf).map(drop)
}

/// `XENVER_extraversion`.
pub fn extraversion() -> Result<XenExtraversion, Errno> {
    let mut buf = [0; 16];
    extraversion_into(&mut buf)?;
    Ok(buf)
}

/// `XENVER_get_features`: feature submap `index` (`XENFEAT_*` bits).
pub fn features(index: u32) -> Result<u32, Errno> {
    let mut info = XenFeatureInfo {
        submap_idx: index,
        submap: 0,
    };
    query(XenVer::GetFeatures, &mut info)?;
    Ok(info.submap)
}

/// `XENVER_pagesize`.
pub fn pagesize() -> Result<u64, Errno> {
    xen_version(&mut hc(), XenVer::Pagesize.nr(), GuestPtr::NULL)
}

/// `XENVER_platform_parameters`: the hypervisor's virtual start address.
pub fn virt_start() -> Result<u64, Errno> {
    let mut p = XenPlatformParameters::default();
    query(XenVer::PlatformParameters, &mut p)?;
    Ok(p.virt_start)
}

/// This domain's id: 0 for the initial domain (`SIF_INITDOMAIN`),
/// otherwise learnt by allocating an unbound port for `DOMID_SELF` and
/// reading its status, which names the real id (digest §7.1). `None` if
/// that fails.
pub fn domid() -> Option<DomId> {
    if crate::start_info()
        .sif_flags()
        .contains(SifFlags::INITDOMAIN)
    {
        return Some(DomId::DOM0);
    }
    domid_from_evtchn()
}

/// This domain's id as the event-channel trick reports it: allocate an
/// unbound port for `DOMID_SELF`, read its status (which names the real
/// id), close it. Works in any domain; `None` if a step fails.
pub fn domid_from_evtchn() -> Option<DomId> {
    let port = crate::evtchn::alloc_unbound(DomId::SELF).ok()?;
    let status = crate::evtchn::status(port);
    let _ = crate::evtchn::close(port);
    Some(status.ok()?.unbound_dom())
}
