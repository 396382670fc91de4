//! Raw Ethernet frames for a guest without a TCP/IP stack: ARP requests and
//! replies, IPv4 ICMP echo requests and replies (RFC 826, 791, 792).

use alloc::vec::Vec;

/// An Ethernet address.
pub type Mac = [u8; 6];
/// An IPv4 address.
pub type Ipv4 = [u8; 4];
/// The broadcast address.
pub const BROADCAST: Mac = [0xFF; 6];
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_ICMP: u8 = 1;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;

/// The internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut acc: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits
    let s = acc as u16;
    !s
}

fn ether(dst: Mac, src: Mac, ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ARP packet (operation 1 request, 2 reply).
fn arp(op: u16, dst: Mac, mac: Mac, ip: Ipv4, target_mac: Mac, target: Ipv4) -> Vec<u8> {
    let mut f = ether(dst, mac, ETHERTYPE_ARP);
    f.extend_from_slice(&1u16.to_be_bytes());
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&target);
    f.resize(60, 0);
    f
}

/// "Who has `target`? Tell `ip`", broadcast.
pub fn arp_request(mac: Mac, ip: Ipv4, target: Ipv4) -> Vec<u8> {
    arp(1, BROADCAST, mac, ip, [0; 6], target)
}

/// "`ip` is at `mac`", to `to_mac`/`to_ip`.
pub fn arp_reply(mac: Mac, ip: Ipv4, to_mac: Mac, to_ip: Ipv4) -> Vec<u8> {
    arp(2, to_mac, mac, ip, to_mac, to_ip)
}

/// An ICMP echo request (`reply` false) or reply, `from` → `to`.
#[allow(clippy::too_many_arguments)]
pub fn icmp_echo(
    reply: bool,
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4,
    dst: Ipv4,
    ident: u16,
    seq: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = ether(dst_mac, src_mac, ETHERTYPE_IPV4);
    let total = u16::try_from(20 + 8 + payload.len()).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[4..6].copy_from_slice(&seq.to_be_bytes());
    ip[6] = 0x40; // don't fragment
    ip[8] = 64;
    ip[9] = PROTO_ICMP;
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut icmp = Vec::with_capacity(8 + payload.len());
    icmp.push(if reply {
        ICMP_ECHO_REPLY
    } else {
        ICMP_ECHO_REQUEST
    });
    icmp.extend_from_slice(&[0, 0, 0]);
    icmp.extend_from_slice(&ident.to_be_bytes());
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend_from_slice(payload);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&icmp);
    if f.len() < 60 {
        f.resize(60, 0);
    }
    f
}

/// A frame as a guest without a stack sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// An ARP request or reply.
    Arp {
        /// A reply (else a request).
        reply: bool,
        /// The sender's MAC and IP.
        sender_mac: Mac,
        /// The sender's IP.
        sender_ip: Ipv4,
        /// The IP asked about (request) or answered to (reply).
        target_ip: Ipv4,
    },
    /// An ICMP echo request or reply whose checksums are right.
    Echo {
        /// A reply (else a request).
        reply: bool,
        /// The sender's MAC.
        src_mac: Mac,
        /// The sender's IP.
        src: Ipv4,
        /// The receiver's IP.
        dst: Ipv4,
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// The data.
        payload: &'a [u8],
    },
    /// Anything else (or a bad checksum).
    Other,
}

fn mac_at(f: &[u8], at: usize) -> Option<Mac> {
    f.get(at..at + 6)?.try_into().ok()
}

fn ip_at(f: &[u8], at: usize) -> Option<Ipv4> {
    f.get(at..at + 4)?.try_into().ok()
}

/// Reads `f`.
pub fn parse(f: &[u8]) -> Parsed<'_> {
    parse_opt(f).unwrap_or(Parsed::Other)
}

fn parse_opt(f: &[u8]) -> Option<Parsed<'_>> {
    let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    match et {
        ETHERTYPE_ARP => {
            let a = f.get(14..42)?;
            if a[0..2] != [0, 1] || a[2..4] != [8, 0] || a[4] != 6 || a[5] != 4 {
                return None;
            }
            let op = u16::from_be_bytes([a[6], a[7]]);
            if op != 1 && op != 2 {
                return None;
            }
            Some(Parsed::Arp {
                reply: op == 2,
                sender_mac: mac_at(a, 8)?,
                sender_ip: ip_at(a, 14)?,
                target_ip: ip_at(a, 24)?,
            })
        }
        ETHERTYPE_IPV4 => {
            let ip = f.get(14..)?;
            let ihl = usize::from(*ip.first()? & 0xF) * 4;
            if ip[0] >> 4 != 4 || ihl < 20 || checksum(ip.get(..ihl)?) != 0 {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if ip[9] != PROTO_ICMP || total < ihl + 8 || total > ip.len() {
                return None;
            }
            let icmp = &ip[ihl..total];
            if checksum(icmp) != 0 || icmp[1] != 0 {
                return None;
            }
            let reply = match icmp[0] {
                ICMP_ECHO_REPLY => true,
                ICMP_ECHO_REQUEST => false,
                _ => return None,
            };
            Some(Parsed::Echo {
                reply,
                src_mac: mac_at(f, 6)?,
                src: ip_at(ip, 12)?,
                dst: ip_at(ip, 16)?,
                ident: u16::from_be_bytes([icmp[4], icmp[5]]),
                seq: u16::from_be_bytes([icmp[6], icmp[7]]),
                payload: &icmp[8..],
            })
        }
        _ => None,
    }
}

/// Parses `a.b.c.d`.
pub fn parse_ipv4(s: &str) -> Option<Ipv4> {
    let mut out = [0u8; 4];
    let mut n = 0;
    for p in s.split('.') {
        if n == 4 {
            return None;
        }
        out[n] = p.parse().ok()?;
        n += 1;
    }
    (n == 4).then_some(out)
}
