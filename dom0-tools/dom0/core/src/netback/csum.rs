//! Checksums a front end left to the back end (`NETTXF_csum_blank`, Linux's
//! `CHECKSUM_PARTIAL`): the TCP or UDP checksum of an IPv4 or IPv6 frame
//! (`feature-ipv6-csum-offload`), computed whole (pseudo-header and segment),
//! whatever the field held. Where the transport header is follows Linux's
//! `skb_checksum_setup`: IPv6 extension headers (hop-by-hop, routing,
//! destination options, authentication, an atomic fragment) are skipped, at
//! most [`MAX_IPV6_HDR_LEN`] bytes of them.

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// `IPPROTO_TCP`.
pub const PROTO_TCP: u8 = 6;
/// `IPPROTO_UDP`.
pub const PROTO_UDP: u8 = 17;
/// The IPv6 header and extension headers Linux's `skb_checksum_setup_ipv6`
/// reads before it gives up (`MAX_IPV6_HDR_LEN`).
pub const MAX_IPV6_HDR_LEN: usize = 256;

/// Adds `data` as big-endian 16-bit words (odd trailing byte padded).
pub(crate) fn sum(mut acc: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc = fold32(acc + u32::from(u16::from_be_bytes([c[0], c[1]])));
    }
    if let [b] = chunks.remainder() {
        acc = fold32(acc + (u32::from(*b) << 8));
    }
    acc
}

/// Keeps a running sum below 2^17 (so adding a word never overflows).
const fn fold32(acc: u32) -> u32 {
    if acc > 0xFFFF {
        (acc & 0xFFFF) + (acc >> 16)
    } else {
        acc
    }
}

/// Folds `acc` to 16 bits, not complemented (a partial checksum).
pub(crate) fn fold_partial(mut acc: u32) -> u16 {
    while acc > 0xFFFF {
        acc = (acc & 0xFFFF) + (acc >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits above
    let s = acc as u16;
    s
}

/// Folds and complements: the checksum field's value.
pub(crate) fn fold(acc: u32) -> u16 {
    !fold_partial(acc)
}

/// The internet checksum of `data` (RFC 1071), for tests and IP headers.
pub fn internet_checksum(data: &[u8]) -> u16 {
    fold(sum(0, data))
}

/// Where a frame's IP datagram and transport header are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4 {
    /// IPv6 (else IPv4).
    pub v6: bool,
    /// The transport protocol (the last next-header for IPv6).
    pub proto: u8,
    /// Where the IP header starts in the frame.
    pub ip: usize,
    /// Where the transport header starts.
    pub start: usize,
    /// Where the IP datagram ends (by its length field; the rest is padding).
    pub end: usize,
    /// An IPv6 fragment header (an atomic one) is on the way.
    pub frag_hdr: bool,
    /// The sum of the pseudo-header's addresses.
    addrs: u32,
}

impl L4 {
    /// The pseudo-header's sum for a transport segment of `len` bytes.
    pub fn pseudo(&self, len: usize) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // len < 2^32: a frame
        let len = len as u32;
        self.addrs + u32::from(self.proto) + (len >> 16) + (len & 0xFFFF)
    }
}

/// Finds the transport header of an IPv4 or IPv6 frame that is not a
/// fragment; `None` for anything else or a truncated or inconsistent header.
pub fn locate(frame: &[u8]) -> Option<L4> {
    let et = frame.get(12..14)?;
    let ip = frame.get(ETH_HLEN..)?;
    match u16::from_be_bytes([et[0], et[1]]) {
        ETHERTYPE_IPV4 => {
            let vihl = *ip.first()?;
            let ihl = usize::from(vihl & 0xF) * 4;
            if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if total < ihl || total > ip.len() || frag & 0x3FFF != 0 {
                return None;
            }
            Some(L4 {
                v6: false,
                proto: ip[9],
                ip: ETH_HLEN,
                start: ETH_HLEN + ihl,
                end: ETH_HLEN + total,
                frag_hdr: false,
                addrs: sum(0, &ip[12..20]),
            })
        }
        ETHERTYPE_IPV6 => {
            let h = ip.get(..40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            let end = 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
            if end > ip.len() {
                return None;
            }
            let mut next = h[6];
            let mut off = 40usize;
            let mut frag_hdr = false;
            loop {
                let len = match next {
                    // Hop-by-hop, routing, destination options: (len + 1) * 8.
                    0 | 43 | 60 => (usize::from(*ip.get(off + 1)?) + 1) * 8,
                    // Authentication: (len + 2) * 4.
                    51 => (usize::from(*ip.get(off + 1)?) + 2) * 4,
                    // Fragment: only an atomic one (offset 0, no more fragments).
                    44 => {
                        let f = ip.get(off..off + 8)?;
                        if u16::from_be_bytes([f[2], f[3]]) & 0xFFF9 != 0 {
                            return None;
                        }
                        frag_hdr = true;
                        8
                    }
                    _ => break,
                };
                if off + len > end || off + len > MAX_IPV6_HDR_LEN {
                    return None;
                }
                next = ip[off];
                off += len;
            }
            Some(L4 {
                v6: true,
                proto: next,
                ip: ETH_HLEN,
                start: ETH_HLEN + off,
                end: ETH_HLEN + end,
                frag_hdr,
                addrs: sum(0, &h[8..40]),
            })
        }
        _ => None,
    }
}

/// The checksum field's offset in a TCP or UDP header, and the smallest header.
fn field(proto: u8) -> Option<(usize, usize)> {
    match proto {
        PROTO_TCP => Some((16, 20)),
        PROTO_UDP => Some((6, 8)),
        _ => None,
    }
}

/// Fills in the TCP or UDP checksum of the IPv4 or IPv6 frame `frame`.
/// Returns false (and changes nothing) for anything else: another
/// EtherType, a fragment, a truncated header, another protocol.
pub fn fill(frame: &mut [u8]) -> bool {
    let Some(l4) = locate(frame) else {
        return false;
    };
    let Some((off, min)) = field(l4.proto) else {
        return false;
    };
    let seg = &mut frame[l4.start..l4.end];
    if seg.len() < min {
        return false;
    }
    seg[off] = 0;
    seg[off + 1] = 0;
    let mut c = fold(sum(l4.pseudo(seg.len()), seg));
    if l4.proto == PROTO_UDP && c == 0 {
        c = 0xFFFF;
    }
    seg[off..off + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Puts the pseudo-header's partial checksum in the TCP or UDP checksum
/// field (what Linux keeps there for `CHECKSUM_PARTIAL`, and what a
/// receiver told `NETRXF_csum_blank` completes by summing the segment from
/// the transport header on). False (nothing changed) as [`fill`].
pub fn set_partial(frame: &mut [u8]) -> bool {
    let Some(l4) = locate(frame) else {
        return false;
    };
    let Some((off, min)) = field(l4.proto) else {
        return false;
    };
    let seg = &mut frame[l4.start..l4.end];
    if seg.len() < min {
        return false;
    }
    let p = fold_partial(l4.pseudo(seg.len()));
    seg[off..off + 2].copy_from_slice(&p.to_be_bytes());
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

    /// An Ethernet + IPv6 frame: `ext` (hop-by-hop options, 8 bytes each,
    /// as many as given) then a `proto` segment `seg`.
    fn v6(ext: usize, proto: u8, seg: &[u8]) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14];
        f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
        let plen = (ext * 8 + seg.len()) as u16;
        let mut ip = alloc::vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&plen.to_be_bytes());
        ip.push(if ext > 0 { 0 } else { proto });
        ip.push(64);
        for i in 0..32u8 {
            ip.push(0xF0 ^ i);
        }
        f.extend_from_slice(&ip);
        for k in 0..ext {
            let next = if k + 1 == ext { proto } else { 0 };
            f.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        f.extend_from_slice(seg);
        f
    }

    /// The receiver's check, written out from RFC 8200 section 8.1: the
    /// pseudo-header (addresses, 32-bit upper-layer length, three zero bytes,
    /// next header) and the segment sum to all ones.
    fn verifies_v6(f: &[u8], ext: usize, proto: u8) -> bool {
        let seg = &f[14 + 40 + ext * 8..];
        let mut ph = Vec::new();
        ph.extend_from_slice(&f[14 + 8..14 + 40]);
        ph.extend_from_slice(&(seg.len() as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, proto]);
        ph.extend_from_slice(seg);
        internet_checksum(&ph) == 0
    }

    #[test]
    fn fills_ipv6_tcp_and_udp_past_extension_headers() {
        let mut tcp = alloc::vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp.extend_from_slice(b"payload!!");
        let mut udp = alloc::vec![0x12, 0x34, 0, 7, 0, 13, 0xAA, 0xBB];
        udp.extend_from_slice(b"hello");
        for ext in [0, 1, 3] {
            for (proto, seg) in [(PROTO_TCP, &tcp), (PROTO_UDP, &udp)] {
                let mut f = v6(ext, proto, seg);
                assert!(fill(&mut f), "ext {ext} proto {proto}");
                assert!(verifies_v6(&f, ext, proto), "ext {ext} proto {proto}");
            }
        }
        // Extension headers past MAX_IPV6_HDR_LEN, a fragment, a truncated
        // extension header, a payload length past the frame: untouched.
        let mut long = v6(28, PROTO_TCP, &tcp);
        assert!(!fill(&mut long));
        let mut frag = v6(0, 44, &[PROTO_TCP, 0, 0, 8, 0, 0, 0, 1]);
        frag.extend_from_slice(&tcp);
        frag[14 + 5] += 20 + 9;
        let before = frag.clone();
        assert!(!fill(&mut frag));
        assert_eq!(frag, before);
        // An atomic fragment (offset 0, no more) is fine, as in Linux.
        frag[14 + 40 + 3] = 0;
        assert!(fill(&mut frag));
        let mut cut = v6(1, PROTO_TCP, &tcp);
        cut.truncate(14 + 40 + 1);
        cut[14 + 4..14 + 6].copy_from_slice(&1u16.to_be_bytes());
        assert!(!fill(&mut cut));
        let mut over = v6(0, PROTO_UDP, &udp);
        over[14 + 5] += 1;
        assert!(!fill(&mut over));
    }

    #[test]
    fn partial_checksums_complete_to_full_ones() {
        // A receiver of NETRXF_csum_blank sums the segment (the field holding
        // the pseudo-header's partial sum) and stores the complement.
        let mut f = udp(b"partial");
        assert!(set_partial(&mut f));
        let c = internet_checksum(&f[14 + 20..]);
        f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&c.to_be_bytes());
        assert!(verifies(&f));
        let mut tcp = alloc::vec![0u8; 20];
        tcp[12] = 5 << 4;
        tcp.extend_from_slice(b"odd");
        let mut f = v6(1, PROTO_TCP, &tcp);
        assert!(set_partial(&mut f));
        let c = internet_checksum(&f[14 + 48..]);
        f[14 + 48 + 16..14 + 48 + 18].copy_from_slice(&c.to_be_bytes());
        assert!(verifies_v6(&f, 1, PROTO_TCP));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&d), !0xddf2);
    }
}
