//! Uplinks: dom0's NICs as ports of the switches, so that domains reach the
//! network outside the machine (in Xen, dom0's `eth0` is enslaved to `xenbr0`
//! next to the `vifD.N` back-end interfaces). NIC `ethN` joins bridge
//! `xenbrN`. A frame the switch sends to an uplink waits in a bounded queue
//! until [`Netback::to_wire`] hands it to the NIC; a frame the NIC received
//! enters the switch in [`Netback::from_wire`], learned on the uplink's port
//! like any other. Frames that cannot go on a wire (over
//! [`MAX_FRAME`](crate::nics::MAX_FRAME), runts) are dropped and counted.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use control_proto::BridgeInfo;

use super::switch::Port;
use super::{Frame, Netback, frames_for, port};
use crate::nics::{Nics, frame_fits};

/// The domain id an uplink's port is numbered under: the first id Xen
/// reserves (`DOMID_FIRST_RESERVED`), which no vif's domain can have.
pub const UPLINK_DOMID: u16 = 0x7FF0;
/// Frames one uplink holds for its NIC before new ones are dropped.
pub const QUEUE_FRAMES: usize = 256;
/// Frames taken from one NIC per [`Netback::from_wire`].
const RX_PER_POLL: usize = 64;

/// Counters of one uplink (the wire's view: `sent` went out of the NIC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UplinkStats {
    /// Frames handed to the NIC.
    pub sent: u64,
    /// Their bytes.
    pub sent_bytes: u64,
    /// Frames the NIC received (and the switch was given).
    pub received: u64,
    /// Their bytes.
    pub received_bytes: u64,
    /// Frames dropped on the way out (queue full, too long, the NIC refused).
    pub dropped: u64,
}

/// One NIC on its bridge.
#[derive(Debug)]
pub struct Uplink {
    /// The NIC's index in [`Nics::list`].
    pub nic: usize,
    /// Its name (`eth0`).
    pub name: String,
    /// The bridge it joins.
    pub bridge: String,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Counters.
    pub stats: UplinkStats,
    out: VecDeque<Vec<u8>>,
}

/// The switch port of NIC `nic`.
pub fn uplink_port(nic: usize) -> Port {
    port(UPLINK_DOMID, u32::try_from(nic).unwrap_or(u32::MAX))
}

/// The bridge NIC `nic` joins (`xenbrN` for `ethN`).
pub fn bridge_of(nic: usize) -> String {
    alloc::format!("xenbr{nic}")
}

/// A port's name as Linux's bridge shows it: `vifD.N` for a vif, the NIC's
/// name for an uplink.
pub fn port_name(net: &Netback, p: Port) -> String {
    match net.uplinks.iter().find(|u| u.port() == p) {
        Some(u) => u.name.clone(),
        None => alloc::format!("vif{}.{}", p >> 16, p & 0xFFFF),
    }
}

impl Uplink {
    /// Its switch port.
    pub fn port(&self) -> Port {
        uplink_port(self.nic)
    }

    /// Frames waiting for the NIC.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Queues `f` for the NIC, cut into segments first if it is a GSO frame
    /// (the NIC takes no offloads), or drops it (too long for a wire, a GSO
    /// frame that cannot be cut, queue full).
    pub(super) fn enqueue(&mut self, f: Frame) {
        let frames = frames_for(false, f);
        if frames.is_empty() {
            self.stats.dropped += 1;
        }
        for f in frames {
            if !frame_fits(&f.data) || self.out.len() >= QUEUE_FRAMES {
                self.stats.dropped += 1;
                continue;
            }
            self.out.push_back(f.data);
        }
    }
}

impl Netback {
    /// Joins every NIC of `nics` to its bridge (`ethN` to `xenbrN`), creating
    /// the bridge. A NIC already joined is left as it is.
    pub fn add_uplinks(&mut self, nics: &dyn Nics) {
        for (i, n) in nics.list().into_iter().enumerate() {
            if self.uplinks.iter().any(|u| u.nic == i) {
                continue;
            }
            let u = Uplink {
                nic: i,
                name: n.name,
                bridge: bridge_of(i),
                mac: n.mac,
                stats: UplinkStats::default(),
                out: VecDeque::new(),
            };
            self.bridges
                .entry(u.bridge.clone())
                .or_default()
                .add_port(u.port());
            self.uplinks.push(u);
        }
    }

    /// The uplinks.
    pub fn uplinks(&self) -> &[Uplink] {
        &self.uplinks
    }

    /// The bridges with their ports' names (uplinks first), for `dom0ctl info`.
    pub fn bridge_info(&self) -> Vec<BridgeInfo> {
        self.bridges
            .iter()
            .map(|(name, sw)| {
                let mut ports: Vec<Port> = sw.ports().to_vec();
                ports.sort_by_key(|p| (p >> 16 != u32::from(UPLINK_DOMID), *p));
                BridgeInfo {
                    name: name.clone(),
                    ports: ports.into_iter().map(|p| port_name(self, p)).collect(),
                    learned: u32::try_from(sw.entries()).unwrap_or(u32::MAX),
                }
            })
            .collect()
    }

    /// Switches what each NIC received since the last call (at most 64 frames
    /// per NIC, so a flooded wire cannot keep dom0 from its other work).
    /// Returns whether a NIC may have more.
    pub fn from_wire(&mut self, nics: &mut dyn Nics, now: u64) -> bool {
        let mut more = false;
        let mut frames = Vec::new();
        for i in 0..self.uplinks.len() {
            frames.clear();
            nics.receive(self.uplinks[i].nic, &mut frames, RX_PER_POLL);
            more |= frames.len() == RX_PER_POLL;
            let (from, bridge) = (self.uplinks[i].port(), self.uplinks[i].bridge.clone());
            for data in frames.drain(..) {
                let u = &mut self.uplinks[i];
                u.stats.received += 1;
                u.stats.received_bytes += data.len() as u64;
                let f = Frame {
                    data,
                    validated: false,
                    gso: None,
                };
                self.switch_frame(&bridge, from, f, now);
            }
        }
        more
    }

    /// Hands every queued frame to its NIC. Returns whether frames are still
    /// waiting (the NIC's driver has some it could not give the device yet).
    pub fn to_wire(&mut self, nics: &mut dyn Nics) -> bool {
        for u in &mut self.uplinks {
            while let Some(f) = u.out.pop_front() {
                if nics.send(u.nic, &f) {
                    u.stats.sent += 1;
                    u.stats.sent_bytes += f.len() as u64;
                } else {
                    u.stats.dropped += 1;
                }
            }
        }
        nics.flush()
    }
}
