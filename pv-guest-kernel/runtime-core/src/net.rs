//! The portable part of the runtime's TCP/IP (`pv_runtime::net`): command
//! line addresses (`A.B.C.D/NN`, `A.B.C.D:PORT`) and a DHCP lease's times.
//! `smoltcp` does the protocols (its DHCP client renews the lease); this
//! module keeps the bookkeeping a guest reports and tests on the host.

use crate::netfront::frames::parse_ipv4;

/// An IPv4 address.
pub type Ipv4 = [u8; 4];

/// Parses `a.b.c.d/nn` (prefix 0 to 32) into the address and the prefix.
pub fn parse_cidr(s: &str) -> Option<(Ipv4, u8)> {
    let (ip, prefix) = s.split_once('/')?;
    let prefix: u8 = decimal(prefix)?.parse().ok().filter(|p| *p <= 32)?;
    Some((parse_ipv4(ip)?, prefix))
}

/// Parses `a.b.c.d:port` (port 1 to 65535).
pub fn parse_endpoint(s: &str) -> Option<(Ipv4, u16)> {
    let (ip, port) = s.split_once(':')?;
    let port: u16 = decimal(port)?.parse().ok().filter(|p| *p != 0)?;
    Some((parse_ipv4(ip)?, port))
}

/// `s` if it is all decimal digits (`str::parse` would take a sign).
fn decimal(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// The lease `smoltcp` assumes when the server names none (seconds).
pub const DEFAULT_LEASE_S: u32 = 120;
/// A lease time that means "for ever" (RFC 2132 §9.2).
pub const INFINITE_LEASE: u32 = u32::MAX;

/// Where a lease is at a moment (RFC 2131 §4.4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeasePhase {
    /// Before T1: the address is ours, nothing to do.
    Bound,
    /// From T1: the client asks its server to extend the lease.
    Renewing,
    /// From T2: the client asks any server.
    Rebinding,
    /// At the lease's end: the address must not be used.
    Expired,
}

/// A lease's times, in system time (ns since boot), from the lease time
/// and the T1/T2 options of the server's ACK, with `smoltcp`'s rules (so
/// they say when its client renews): no lease time is
/// [`DEFAULT_LEASE_S`]; T1 defaults to half the lease, T2 to 7/8 of it;
/// only T1 given puts T2 three quarters of the way from T1 to the end;
/// only T2 given makes T1 the smaller of half the lease and T2. T1 and T2
/// are clamped so that T1 ≤ T2 ≤ the lease. [`INFINITE_LEASE`] never
/// ends (no renewal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimes {
    /// When the ACK came.
    pub obtained_ns: u64,
    /// T1 (`None`: never).
    pub renew_ns: Option<u64>,
    /// T2 (`None`: never).
    pub rebind_ns: Option<u64>,
    /// The lease's end (`None`: never).
    pub expires_ns: Option<u64>,
}

impl LeaseTimes {
    /// The times of a lease acknowledged at `obtained_ns` with these
    /// options (seconds).
    pub fn new(
        obtained_ns: u64,
        lease_s: Option<u32>,
        t1_s: Option<u32>,
        t2_s: Option<u32>,
    ) -> LeaseTimes {
        let lease = lease_s.unwrap_or(DEFAULT_LEASE_S);
        if lease == INFINITE_LEASE {
            return LeaseTimes {
                obtained_ns,
                renew_ns: None,
                rebind_ns: None,
                expires_ns: None,
            };
        }
        let l = u64::from(lease) * 1_000_000_000;
        let s = |x: u32| u64::from(x) * 1_000_000_000;
        let (t1, t2) = match (t1_s.map(s), t2_s.map(s)) {
            (Some(a), Some(b)) => (a, b),
            (None, None) => (l / 2, l / 8 * 7),
            (Some(a), None) => (a, a + l.saturating_sub(a) / 4 * 3),
            (None, Some(b)) => ((l / 2).min(b), b),
        };
        let t2 = t2.min(l);
        let t1 = t1.min(t2);
        LeaseTimes {
            obtained_ns,
            renew_ns: Some(obtained_ns.saturating_add(t1)),
            rebind_ns: Some(obtained_ns.saturating_add(t2)),
            expires_ns: Some(obtained_ns.saturating_add(l)),
        }
    }

    /// The phase at `now_ns`.
    pub fn phase(&self, now_ns: u64) -> LeasePhase {
        let past = |t: Option<u64>| t.is_some_and(|t| now_ns >= t);
        if past(self.expires_ns) {
            LeasePhase::Expired
        } else if past(self.rebind_ns) {
            LeasePhase::Rebinding
        } else if past(self.renew_ns) {
            LeasePhase::Renewing
        } else {
            LeasePhase::Bound
        }
    }

    /// Nanoseconds left at `now_ns` (`None`: for ever).
    pub fn remaining_ns(&self, now_ns: u64) -> Option<u64> {
        self.expires_ns.map(|e| e.saturating_sub(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn cidrs_and_endpoints() {
        assert_eq!(parse_cidr("10.0.2.15/24"), Some(([10, 0, 2, 15], 24)));
        assert_eq!(parse_cidr("0.0.0.0/0"), Some(([0, 0, 0, 0], 0)));
        assert_eq!(parse_cidr("10.0.0.1/32"), Some(([10, 0, 0, 1], 32)));
        for bad in [
            "10.0.0.1",
            "10.0.0.1/33",
            "10.0.0.1/",
            "10.0.0/8",
            "10.0.0.1/+8",
            "/8",
            "10.0.0.256/8",
            "10.0.0.1/8/8",
        ] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        assert_eq!(parse_endpoint("10.0.2.2:8080"), Some(([10, 0, 2, 2], 8080)));
        assert_eq!(parse_endpoint("1.2.3.4:65535"), Some(([1, 2, 3, 4], 65535)));
        for bad in [
            "10.0.2.2",
            "10.0.2.2:0",
            "10.0.2.2:65536",
            "10.0.2.2:+80",
            ":80",
            "10.0.2:80",
            "10.0.2.2:80:1",
        ] {
            assert_eq!(parse_endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn default_times_are_half_and_seven_eighths() {
        let t = LeaseTimes::new(5 * S, Some(3600), None, None);
        assert_eq!(t.renew_ns, Some(5 * S + 1800 * S));
        assert_eq!(t.rebind_ns, Some(5 * S + 3150 * S));
        assert_eq!(t.expires_ns, Some(5 * S + 3600 * S));
        assert_eq!(t.phase(5 * S), LeasePhase::Bound);
        assert_eq!(t.phase(1805 * S - 1), LeasePhase::Bound);
        assert_eq!(t.phase(1805 * S), LeasePhase::Renewing);
        assert_eq!(t.phase(3155 * S), LeasePhase::Rebinding);
        assert_eq!(t.phase(3605 * S), LeasePhase::Expired);
        assert_eq!(t.remaining_ns(605 * S), Some(3000 * S));
        assert_eq!(t.remaining_ns(9999 * S), Some(0));
    }

    #[test]
    fn no_lease_time_is_smoltcps_default() {
        let t = LeaseTimes::new(0, None, None, None);
        assert_eq!(t.expires_ns, Some(u64::from(DEFAULT_LEASE_S) * S));
        assert_eq!(t.renew_ns, Some(60 * S));
    }

    #[test]
    fn one_of_t1_t2_given() {
        // Only T1: T2 three quarters of the way from T1 to the end.
        let t = LeaseTimes::new(0, Some(1000), Some(200), None);
        assert_eq!((t.renew_ns, t.rebind_ns), (Some(200 * S), Some(800 * S)));
        // Only T2: T1 is the smaller of half the lease and T2.
        let t = LeaseTimes::new(0, Some(1000), None, Some(300));
        assert_eq!((t.renew_ns, t.rebind_ns), (Some(300 * S), Some(300 * S)));
        let t = LeaseTimes::new(0, Some(1000), None, Some(900));
        assert_eq!((t.renew_ns, t.rebind_ns), (Some(500 * S), Some(900 * S)));
    }

    #[test]
    fn server_times_past_the_lease_are_clamped() {
        let t = LeaseTimes::new(0, Some(100), Some(500), Some(400));
        assert_eq!(t.rebind_ns, Some(100 * S));
        assert_eq!(t.renew_ns, Some(100 * S));
        assert_eq!(t.phase(100 * S), LeasePhase::Expired);
    }

    #[test]
    fn an_infinite_lease_never_moves() {
        let t = LeaseTimes::new(7, Some(INFINITE_LEASE), Some(10), Some(20));
        assert_eq!(t.phase(u64::MAX), LeasePhase::Bound);
        assert_eq!(t.remaining_ns(u64::MAX), None);
    }
}
