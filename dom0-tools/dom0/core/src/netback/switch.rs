//! A learning Ethernet switch (one per bridge name, as Linux's bridge joins
//! `vifD.N` ports under `xenbr0`): a frame's source MAC is learned on the
//! port it came in on; a frame to a learned unicast MAC goes to that port
//! only; broadcast, multicast and unknown unicast go to every other port.
//! Entries age out after [`AGEING_NS`] (Linux's default `ageing_time`), and
//! a port that goes takes its entries with it. The table is bounded, per
//! port and in all, so a port sending from random MACs cannot grow it.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// A switch port (the net back end numbers them).
pub type Port = u32;

/// How long a learned entry lives without traffic from it (300 s).
pub const AGEING_NS: u64 = 300_000_000_000;
/// Entries one port may hold.
pub const MAX_PER_PORT: usize = 256;
/// Entries in all.
pub const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Learned {
    port: Port,
    seen: u64,
}

/// Where a frame goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forward {
    /// Nowhere (to its own port, or a bad frame).
    Drop,
    /// One port.
    One(Port),
    /// These ports (every port but the one it came from).
    Flood(Vec<Port>),
}

/// One bridge.
#[derive(Debug, Default)]
pub struct Switch {
    ports: Vec<Port>,
    table: BTreeMap<[u8; 6], Learned>,
}

fn mac(b: &[u8]) -> Option<[u8; 6]> {
    b.get(..6)?.try_into().ok()
}

impl Switch {
    /// No ports.
    pub fn new() -> Self {
        Switch::default()
    }

    /// Joins `port` (no effect if it is a member).
    pub fn add_port(&mut self, port: Port) {
        if !self.ports.contains(&port) {
            self.ports.push(port);
        }
    }

    /// Removes `port` and everything learned on it.
    pub fn remove_port(&mut self, port: Port) {
        self.ports.retain(|p| *p != port);
        self.table.retain(|_, l| l.port != port);
    }

    /// The member ports.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Whether no port is left.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// The port `mac` was learned on, if that has not aged out at `now`.
    pub fn lookup(&self, mac: &[u8; 6], now: u64) -> Option<Port> {
        self.table
            .get(mac)
            .filter(|l| now.saturating_sub(l.seen) < AGEING_NS)
            .map(|l| l.port)
    }

    /// Entries learned (aged ones included until they are swept).
    pub fn entries(&self) -> usize {
        self.table.len()
    }

    /// Forgets entries older than [`AGEING_NS`] at `now`.
    pub fn age(&mut self, now: u64) {
        self.table
            .retain(|_, l| now.saturating_sub(l.seen) < AGEING_NS);
    }

    fn learn(&mut self, src: [u8; 6], port: Port, now: u64) {
        if src[0] & 1 != 0 || src == [0; 6] {
            return;
        }
        if let Some(l) = self.table.get_mut(&src) {
            *l = Learned { port, seen: now };
            return;
        }
        if self.table.len() >= MAX_ENTRIES {
            self.age(now);
        }
        let mine = self.table.values().filter(|l| l.port == port).count();
        if self.table.len() >= MAX_ENTRIES || mine >= MAX_PER_PORT {
            return;
        }
        self.table.insert(src, Learned { port, seen: now });
    }

    /// Learns from `frame`, which came in on `from` at `now`, and says where
    /// it goes. A frame from a port that is not a member goes nowhere.
    pub fn forward(&mut self, from: Port, frame: &[u8], now: u64) -> Forward {
        let (Some(dst), Some(src)) = (mac(frame), frame.get(6..).and_then(mac)) else {
            return Forward::Drop;
        };
        if !self.ports.contains(&from) {
            return Forward::Drop;
        }
        self.learn(src, from, now);
        if dst[0] & 1 == 0
            && let Some(p) = self.lookup(&dst, now)
        {
            return if p == from || !self.ports.contains(&p) {
                Forward::Drop
            } else {
                Forward::One(p)
            };
        }
        Forward::Flood(self.ports.iter().copied().filter(|p| *p != from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 60];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f
    }

    const A: [u8; 6] = [0, 0x16, 0x3e, 0, 0, 1];
    const B: [u8; 6] = [0, 0x16, 0x3e, 0, 0, 2];
    const C: [u8; 6] = [0, 0x16, 0x3e, 0, 0, 3];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn learns_floods_and_ages() {
        let mut s = Switch::new();
        for p in 1..=3 {
            s.add_port(p);
        }
        // Unknown: flooded to the others.
        assert_eq!(
            s.forward(1, &frame(B, A), 0),
            Forward::Flood(alloc::vec![2, 3])
        );
        // A is now known on 1: B's answer goes to 1 only.
        assert_eq!(s.forward(2, &frame(A, B), 10), Forward::One(1));
        assert_eq!(s.forward(1, &frame(B, A), 20), Forward::One(2));
        // Broadcast and multicast always flood.
        assert_eq!(
            s.forward(3, &frame(BCAST, C), 30),
            Forward::Flood(alloc::vec![1, 2])
        );
        let mcast = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            s.forward(1, &frame(mcast, A), 30),
            Forward::Flood(alloc::vec![2, 3])
        );
        // To its own port: dropped.
        assert_eq!(s.forward(1, &frame(A, C), 40), Forward::Drop);
        // C moved to port 1 with that frame; a frame to C goes there now.
        assert_eq!(s.lookup(&C, 40), Some(1));
        // Aged: flooded again.
        assert_eq!(
            s.forward(2, &frame(A, B), 40 + AGEING_NS),
            Forward::Flood(alloc::vec![1, 3])
        );
        s.age(40 + AGEING_NS);
        assert_eq!(s.entries(), 1, "only B, just learned");
        // A port that goes takes its entries.
        s.remove_port(2);
        assert_eq!(s.lookup(&B, 50 + AGEING_NS), None);
        assert_eq!(s.forward(2, &frame(A, B), 0), Forward::Drop, "not a member");
        assert_eq!(s.forward(1, &[0u8; 8], 0), Forward::Drop, "runt");
    }

    #[test]
    fn table_is_bounded_per_port() {
        let mut s = Switch::new();
        s.add_port(1);
        s.add_port(2);
        for i in 0..1000u32 {
            let b = i.to_le_bytes();
            s.forward(1, &frame(BCAST, [0, 0x16, 0x3e, b[0], b[1], 9]), 0);
        }
        assert_eq!(s.entries(), MAX_PER_PORT);
        // Port 2 still learns.
        s.forward(2, &frame(BCAST, B), 0);
        assert_eq!(s.lookup(&B, 0), Some(2));
    }

    proptest! {
        /// Random traffic: a unicast frame to a MAC goes only to the port that
        /// last sent from it (within the ageing time), never back to its own
        /// port; a flood reaches every other member.
        #[test]
        fn unicast_only_to_the_owner(
            ops in prop::collection::vec((1u32..5, 0u8..6, 0u8..6, 0u64..1000), 1..200),
        ) {
            let mut s = Switch::new();
            for p in 1..5 {
                s.add_port(p);
            }
            let mut owner: BTreeMap<u8, (Port, u64)> = BTreeMap::new();
            let mut now = 0u64;
            for (port, d, src, dt) in ops {
                now += dt * 1_000_000_000;
                let dm = if d == 5 { BCAST } else { [0, 0x16, 0x3e, 0, 0, d] };
                let out = s.forward(port, &frame(dm, [0, 0x16, 0x3e, 0, 0, src]), now);
                owner.insert(src, (port, now));
                match out {
                    Forward::One(p) => {
                        prop_assert!(d != 5);
                        prop_assert_ne!(p, port);
                        let (o, t) = owner[&d];
                        prop_assert_eq!(p, o);
                        prop_assert!(now - t < AGEING_NS);
                    }
                    Forward::Flood(ps) => {
                        prop_assert!(!ps.contains(&port));
                        prop_assert_eq!(ps.len(), 3);
                        if d != 5 {
                            let fresh = owner.get(&d).is_some_and(|(_, t)| now - t < AGEING_NS);
                            prop_assert!(!fresh || d == src);
                        }
                    }
                    Forward::Drop => {
                        prop_assert!(d != 5);
                        prop_assert_eq!(owner[&d].0, port);
                    }
                }
            }
        }
    }
}
