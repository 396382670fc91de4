//! Virtual CPUs: `vcpu_op` (ABI digest §6.8), runstate for now (timers are
//! in [`crate::time`]).

use hypercall_abi::hypercall::vcpu_op;
use hypercall_abi::vcpu::{
    RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, RUNSTATE_RUNNING, VcpuOp,
    VcpuRunstateInfo,
};
use hypercall_abi::{Errno, VcpuId};

use crate::hypercall::{handle_mut, hc};

/// Where a vCPU's time went (`VCPUOP_get_runstate_info`), in ns of system
/// time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runstate {
    /// Current state (`RUNSTATE_*`: 0 running, 1 runnable, 2 blocked, 3
    /// offline).
    pub state: i32,
    /// System time the current state was entered.
    pub state_entry_time: u64,
    /// Time running on a physical CPU.
    pub running_ns: u64,
    /// Time runnable but waiting for a CPU.
    pub runnable_ns: u64,
    /// Time blocked (`SCHEDOP_block`, poll).
    pub blocked_ns: u64,
    /// Time offline or paused.
    pub offline_ns: u64,
}

/// The runstate of `vcpu` of this domain (`-ENOENT` if it does not exist).
pub fn runstate(vcpu: VcpuId) -> Result<Runstate, Errno> {
    let mut info = VcpuRunstateInfo::default();
    vcpu_op(
        &mut hc(),
        VcpuOp::GetRunstateInfo.nr(),
        vcpu,
        handle_mut(&mut info).cast(),
    )?;
    let t = |i: i32| {
        usize::try_from(i)
            .ok()
            .and_then(|i| info.time.get(i).copied())
            .unwrap_or(0)
    };
    Ok(Runstate {
        state: info.state,
        state_entry_time: info.state_entry_time,
        running_ns: t(RUNSTATE_RUNNING),
        runnable_ns: t(RUNSTATE_RUNNABLE),
        blocked_ns: t(RUNSTATE_BLOCKED),
        offline_ns: t(RUNSTATE_OFFLINE),
    })
}
