//! Domains as the toolstack sees them: its own records (the hypervisor knows
//! ids, not names), resolving a [`DomRef`], and `getdomaininfo` turned into
//! the protocol's [`DomainInfo`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use control_proto::{DomRef, DomState, DomainInfo, ShutdownReason};
use hypercall_abi::domctl::{
    DOMINF_BLOCKED, DOMINF_DYING, DOMINF_PAUSED, DOMINF_SHUTDOWN, DOMINF_SHUTDOWN_MASK,
    DOMINF_SHUTDOWN_SHIFT, DomctlGetDomainInfo,
};
use hypercall_abi::{DomId, Errno};

use crate::hv::Hypervisor;

/// dom0's name, as `xl list` shows it.
pub const DOM0_NAME: &str = "Domain-0";
/// The name listed for a domain the toolstack did not create (a boot-time
/// domU the hypervisor built), which has no record.
pub const UNNAMED: &str = "(unnamed)";
/// The most domains [`list`] walks (the hypervisor's id space is smaller).
const MAX_LISTED: usize = DomId::FIRST_RESERVED.0 as usize;

/// What the toolstack remembers of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The domain's id.
    pub id: DomId,
    /// Its name (unique among records).
    pub name: String,
    /// When it was created (pvclock ns; 0 for domains from boot).
    pub created_ns: u64,
}

/// The toolstack's records: dom0 and the domains it created.
#[derive(Debug, Clone)]
pub struct Records {
    records: Vec<Record>,
}

impl Default for Records {
    fn default() -> Self {
        Self::new()
    }
}

impl Records {
    /// Just dom0, named [`DOM0_NAME`].
    pub fn new() -> Self {
        Records {
            records: alloc::vec![Record {
                id: DomId::DOM0,
                name: DOM0_NAME.to_string(),
                created_ns: 0,
            }],
        }
    }

    /// The record of domain `id`.
    pub fn by_id(&self, id: DomId) -> Option<&Record> {
        self.records.iter().find(|r| r.id == id)
    }

    /// The record named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Record> {
        self.records.iter().find(|r| r.name == name)
    }

    /// Adds a record (replacing one with the same id).
    pub fn insert(&mut self, record: Record) {
        self.remove(record.id);
        self.records.push(record);
    }

    /// Forgets domain `id`.
    pub fn remove(&mut self, id: DomId) {
        self.records.retain(|r| r.id != id);
    }
}

/// Why a [`DomRef`] names no domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No record has that name.
    NoName(String),
    /// The hypervisor has no domain with that id.
    NoId(u16),
    /// Asking the hypervisor failed.
    Hypervisor(Errno),
}

/// The id `dom` names: a name through the records, an id by asking the
/// hypervisor whether it exists.
pub fn resolve<H: Hypervisor>(
    hv: &mut H,
    records: &Records,
    dom: &DomRef,
) -> Result<DomId, ResolveError> {
    match dom {
        DomRef::Name(name) => records
            .by_name(name)
            .map(|r| r.id)
            .ok_or_else(|| ResolveError::NoName(name.clone())),
        DomRef::Id(id) => match hv.domain_info(DomId(*id)) {
            Ok(info) if info.domain == DomId(*id) => Ok(DomId(*id)),
            Ok(_) | Err(Errno::ESRCH) => Err(ResolveError::NoId(*id)),
            Err(e) => Err(ResolveError::Hypervisor(e)),
        },
    }
}

/// Every domain, by id: `getdomaininfo` from id 0 upward, each call asking
/// for the first domain after the last one seen, until `-ESRCH`.
pub fn list<H: Hypervisor>(hv: &mut H) -> Result<Vec<DomctlGetDomainInfo>, Errno> {
    let mut out: Vec<DomctlGetDomainInfo> = Vec::new();
    let mut next: u16 = 0;
    while out.len() < MAX_LISTED && next < DomId::FIRST_RESERVED.0 {
        let info = match hv.domain_info(DomId(next)) {
            Ok(info) => info,
            Err(Errno::ESRCH) => break,
            Err(e) => return Err(e),
        };
        // A domain below the one asked for, or a reserved id, would loop or
        // show a pseudo-domain: the hypervisor broke the contract; stop.
        if info.domain.0 < next || info.domain.0 >= DomId::FIRST_RESERVED.0 {
            break;
        }
        next = info.domain.0 + 1;
        out.push(info);
    }
    Ok(out)
}

/// The run state and shutdown reason that `getdomaininfo`'s flags give, most
/// final first: dying, crashed, shut down, paused, blocked, else running.
pub fn state(flags: u32) -> (DomState, Option<ShutdownReason>) {
    let reason_raw = (flags >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK;
    let reason = if flags & DOMINF_SHUTDOWN != 0 {
        u8::try_from(reason_raw)
            .ok()
            .and_then(ShutdownReason::from_u8)
    } else {
        None
    };
    let state = if flags & DOMINF_DYING != 0 {
        DomState::Dying
    } else if reason == Some(ShutdownReason::Crash) {
        DomState::Crashed
    } else if flags & DOMINF_SHUTDOWN != 0 {
        DomState::Shutdown
    } else if flags & DOMINF_PAUSED != 0 {
        DomState::Paused
    } else if flags & DOMINF_BLOCKED != 0 {
        DomState::Blocked
    } else {
        DomState::Running
    };
    (state, reason)
}

/// One row of `List`: the hypervisor's facts, the record's name.
pub fn info(raw: &DomctlGetDomainInfo, records: &Records, now_ns: u64) -> DomainInfo {
    let (state, shutdown_reason) = state(raw.flags);
    let record = records.by_id(raw.domain);
    DomainInfo {
        id: raw.domain.0,
        name: record.map_or_else(|| UNNAMED.to_string(), |r| r.name.clone()),
        state,
        shutdown_reason,
        memory_kib: raw.tot_pages.saturating_mul(4),
        max_memory_kib: raw.max_pages.saturating_mul(4),
        vcpus: raw.nr_online_vcpus,
        cpu_time_ns: raw.cpu_time,
        uptime_ns: now_ns.saturating_sub(record.map_or(0, |r| r.created_ns)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_from_flags() {
        assert_eq!(state(0), (DomState::Running, None));
        assert_eq!(state(DOMINF_BLOCKED), (DomState::Blocked, None));
        assert_eq!(
            state(DOMINF_PAUSED | DOMINF_BLOCKED),
            (DomState::Paused, None)
        );
        assert_eq!(
            state(DOMINF_SHUTDOWN | DOMINF_PAUSED),
            (DomState::Shutdown, Some(ShutdownReason::Poweroff))
        );
        assert_eq!(
            state(DOMINF_SHUTDOWN | (3 << DOMINF_SHUTDOWN_SHIFT)),
            (DomState::Crashed, Some(ShutdownReason::Crash))
        );
        assert_eq!(
            state(DOMINF_SHUTDOWN | (1 << DOMINF_SHUTDOWN_SHIFT)),
            (DomState::Shutdown, Some(ShutdownReason::Reboot))
        );
        assert_eq!(
            state(DOMINF_SHUTDOWN | (5 << DOMINF_SHUTDOWN_SHIFT)),
            (DomState::Shutdown, None),
            "soft_reset has no protocol name"
        );
        assert_eq!(
            state(DOMINF_DYING | DOMINF_SHUTDOWN),
            (DomState::Dying, Some(ShutdownReason::Poweroff))
        );
        assert_eq!(
            state(1 << DOMINF_SHUTDOWN_SHIFT),
            (DomState::Running, None),
            "a reason without the shutdown flag means nothing"
        );
    }

    #[test]
    fn records() {
        let mut r = Records::new();
        assert_eq!(r.by_name(DOM0_NAME).unwrap().id, DomId::DOM0);
        r.insert(Record {
            id: DomId(3),
            name: "web".into(),
            created_ns: 5,
        });
        assert_eq!(r.by_name("web").unwrap().id, DomId(3));
        assert_eq!(r.by_id(DomId(3)).unwrap().name, "web");
        r.remove(DomId(3));
        assert!(r.by_name("web").is_none());
    }
}
