//! dom0's NICs as the net back end sees them, as a trait: the kernel
//! implements it with its virtio-net driver (`dom0-tools/dom0/src/virtio.rs`),
//! host tests with NICs in memory ([`MemNics`]). Each NIC is the uplink of one
//! bridge (`eth0` of `xenbr0`, as Xen's `network-bridge` script paired them),
//! so domains reach the network outside the machine through dom0's switch.
//!
//! Both directions are non-blocking: [`Nics::send`] queues a frame (a driver
//! keeps several in flight) and [`Nics::receive`] hands over what arrived.

use alloc::string::String;
use alloc::vec::Vec;

use core::fmt;

/// The largest frame a NIC sends or receives: a 1500-byte payload, the
/// Ethernet header and one VLAN tag (no jumbo frames, no offloads).
pub const MAX_FRAME: usize = 1518;

/// What one NIC is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicInfo {
    /// Its name (`eth0`, `eth1`, ... in PCI order).
    pub name: String,
    /// Its MAC address.
    pub mac: [u8; 6],
}

/// dom0's NICs. A NIC's index in [`Nics::list`] names it in the other calls.
pub trait Nics: fmt::Debug {
    /// The NICs, in the order the PCI scan found them.
    fn list(&self) -> Vec<NicInfo>;

    /// Queues `frame` (an Ethernet frame, at most [`MAX_FRAME`] bytes) for
    /// sending on NIC `nic`. Returns false when it was dropped: no such NIC, a
    /// frame too long or too short, or the NIC's queue is full.
    fn send(&mut self, nic: usize, frame: &[u8]) -> bool;

    /// Moves the frames NIC `nic` received since the last call (at most `max`)
    /// to `out`, oldest first.
    fn receive(&mut self, nic: usize, out: &mut Vec<Vec<u8>>, max: usize);

    /// Hands frames still queued in the driver to the device, as far as it
    /// takes them. Returns whether some are still waiting (the caller should
    /// come back soon, without sleeping).
    fn flush(&mut self) -> bool;
}

/// NICs in memory, for host tests: what is sent is kept per NIC, what a test
/// injects is received.
#[derive(Debug, Default, Clone)]
pub struct MemNics {
    /// The NICs.
    pub nics: Vec<NicInfo>,
    /// Frames sent, per NIC.
    pub sent: Vec<Vec<Vec<u8>>>,
    /// Frames waiting to be received, per NIC.
    pub incoming: Vec<Vec<Vec<u8>>>,
    /// Frames each NIC's queue takes before it refuses more (`None`: no limit).
    pub queue_limit: Option<usize>,
}

impl MemNics {
    /// Adds a NIC with `mac` and returns its index.
    pub fn add(&mut self, mac: [u8; 6]) -> usize {
        let i = self.nics.len();
        self.nics.push(NicInfo {
            name: alloc::format!("eth{i}"),
            mac,
        });
        self.sent.push(Vec::new());
        self.incoming.push(Vec::new());
        i
    }
}

impl Nics for MemNics {
    fn list(&self) -> Vec<NicInfo> {
        self.nics.clone()
    }

    fn send(&mut self, nic: usize, frame: &[u8]) -> bool {
        let full = |q: &Vec<Vec<u8>>| self.queue_limit.is_some_and(|l| q.len() >= l);
        match self.sent.get(nic) {
            Some(q) if frame_fits(frame) && !full(q) => {
                self.sent[nic].push(frame.to_vec());
                true
            }
            _ => false,
        }
    }

    fn receive(&mut self, nic: usize, out: &mut Vec<Vec<u8>>, max: usize) {
        if let Some(q) = self.incoming.get_mut(nic) {
            let n = q.len().min(max);
            out.extend(q.drain(..n));
        }
    }

    fn flush(&mut self) -> bool {
        false
    }
}

/// Whether `frame` can go on a wire: an Ethernet header and at most
/// [`MAX_FRAME`] bytes.
pub fn frame_fits(frame: &[u8]) -> bool {
    (14..=MAX_FRAME).contains(&frame.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_nics_send_receive_and_refuse() {
        let mut n = MemNics::default();
        let i = n.add([2, 0, 0, 0, 0, 1]);
        assert_eq!(n.list()[0].name, "eth0");
        assert!(n.send(i, &[0u8; 60]));
        assert!(!n.send(i, &[0u8; 10]), "a runt");
        assert!(!n.send(i, &[0u8; MAX_FRAME + 1]), "too long");
        assert!(!n.send(7, &[0u8; 60]), "no such NIC");
        n.queue_limit = Some(1);
        assert!(!n.send(i, &[0u8; 60]), "queue full");
        n.incoming[i].push(alloc::vec![1; 64]);
        n.incoming[i].push(alloc::vec![2; 64]);
        let mut out = Vec::new();
        n.receive(i, &mut out, 1);
        assert_eq!(out, [alloc::vec![1; 64]]);
        n.receive(i, &mut out, 8);
        assert_eq!(out.len(), 2);
    }
}
