//! Checksums a front end left to the back end (`NETTXF_csum_blank`, Linux's
//! `CHECKSUM_PARTIAL`): the TCP or UDP checksum of an IPv4 frame, computed
//! whole (pseudo-header and segment), whatever the field held.

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// Adds `data` as big-endian 16-bit words (odd trailing byte padded).
fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits above
    let s = acc as u16;
    !s
}

/// The internet checksum of `data` (RFC 1071), for tests and IP headers.
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// Fills in the TCP or UDP checksum of the IPv4 frame `frame`. Returns
/// false (and changes nothing) for anything else: another EtherType, a
/// fragment, a truncated header, another protocol.
pub fn fill(frame: &mut [u8]) -> bool {
    let Some(et) = frame.get(12..14) else {
        return false;
    };
    if u16::from_be_bytes([et[0], et[1]]) != ETHERTYPE_IPV4 {
        return false;
    }
    let Some(ip) = frame.get_mut(ETH_HLEN..) else {
        return false;
    };
    let Some(&vihl) = ip.first() else {
        return false;
    };
    let ihl = usize::from(vihl & 0xF) * 4;
    if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return false;
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if total < ihl || total > ip.len() || frag & 0x3FFF != 0 {
        return false;
    }
    let proto = ip[9];
    let off = match proto {
        PROTO_TCP => 16,
        PROTO_UDP => 6,
        _ => return false,
    };
    let (hdr, seg) = ip[..total].split_at_mut(ihl);
    if seg.len() < off + 2 || (proto == PROTO_TCP && seg.len() < 20) {
        return false;
    }
    let Ok(seg_len) = u16::try_from(seg.len()) else {
        return false;
    };
    seg[off] = 0;
    seg[off + 1] = 0;
    let mut acc = sum(0, &hdr[12..20]);
    acc += u32::from(proto) + u32::from(seg_len);
    let mut c = fold(sum(acc, seg));
    if proto == PROTO_UDP && c == 0 {
        c = 0xFFFF;
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test frames are small
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// An Ethernet + IPv4 + UDP frame with payload `p` and a zero checksum.
    fn udp(p: &[u8]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + 8 + p.len()) as u16;
        let mut ip = alloc::vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2
        ];
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = internet_checksum(&ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&7u16.to_be_bytes());
        f.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0xAB, 0xCD]);
        f.extend_from_slice(p);
        f
    }

    /// Verifies the UDP checksum the way a receiver does: the sum over the
    /// pseudo-header and segment, checksum included, is all ones.
    fn verifies(f: &[u8]) -> bool {
        let ip = &f[14..];
        let seg = &ip[20..];
        let mut acc = sum(0, &ip[12..20]);
        acc += 17 + seg.len() as u32;
        fold(sum(acc, seg)) == 0
    }

    #[test]
    fn fills_udp_and_leaves_others() {
        for p in [&b"hello"[..], b"even", b""] {
            let mut f = udp(p);
            assert!(fill(&mut f));
            assert!(verifies(&f), "{p:?}");
        }
        // A fragment, ARP, a truncated header: untouched.
        let mut f = udp(b"x");
        f[14 + 6] = 0x20;
        let before = f.clone();
        assert!(!fill(&mut f));
        assert_eq!(f, before);
        let mut arp = alloc::vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert!(!fill(&mut arp));
        let mut short = udp(b"x");
        short.truncate(20);
        assert!(!fill(&mut short));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&d), !0xddf2);
    }
}
