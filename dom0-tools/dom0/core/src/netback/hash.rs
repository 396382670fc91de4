//! Receive-side hashing (the control ring's `XEN_NETIF_CTRL_TYPE_SET_HASH_*`,
//! netif.h's "Hash types" and "Toeplitz hash"; Linux's
//! `drivers/net/xen-netback/hash.c`): the front end picks the Toeplitz
//! algorithm, a key of up to [`MAX_KEY_SIZE`] bytes and the hash types it
//! wants, and every frame the back end then gives it carries a
//! `XEN_NETIF_EXTRA_TYPE_HASH` extra with the hash of its IP addresses (and
//! TCP ports) ([`HashState::extra`]).

use hypercall_abi::io::netif::{
    _XEN_NETIF_CTRL_HASH_TYPE_IPV4, _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    _XEN_NETIF_CTRL_HASH_TYPE_IPV6, _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, NetifExtraHash,
    XEN_NETIF_CTRL_HASH_ALGORITHM_NONE, XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
    XEN_NETIF_CTRL_HASH_TYPE_IPV4, XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
    XEN_NETIF_CTRL_HASH_TYPE_IPV6, XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
};

/// The longest key (Linux's `XEN_NETBK_MAX_HASH_KEY_SIZE`); a shorter key
/// is padded with zeros.
pub const MAX_KEY_SIZE: usize = 40;
/// The largest mapping table (Linux's `XEN_NETBK_MAX_HASH_MAPPING_SIZE`).
pub const MAX_MAPPING_SIZE: u32 = 128;
/// Every hash type the back end computes (`GET_HASH_FLAGS`' answer).
pub const ALL_TYPES: u32 = XEN_NETIF_CTRL_HASH_TYPE_IPV4
    | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP
    | XEN_NETIF_CTRL_HASH_TYPE_IPV6
    | XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;

/// The Toeplitz hash of `data` under `key` (netif.h's
/// `xen_netif_toeplitz_hash`: key bytes past its end count as zero).
pub fn toeplitz(key: &[u8], data: &[u8]) -> u32 {
    let k = |i: usize| u64::from(key.get(i).copied().unwrap_or(0));
    // A 64-bit window on the key: its top 32 bits are the key bits that
    // line up with the data bit being looked at.
    let mut window = (0..8).fold(0u64, |w, i| (w << 8) | k(i));
    let mut hash = 0u64;
    for (i, byte) in data.iter().enumerate() {
        for bit in 0..8 {
            if byte & (0x80 >> bit) != 0 {
                hash ^= window;
            }
            window <<= 1;
        }
        window |= k(i + 8);
    }
    #[allow(clippy::cast_possible_truncation)] // the top half
    let h = (hash >> 32) as u32;
    h
}

/// The hash input of a frame: netif.h's buffers (addresses, then ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuple {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*` of what was hashed.
    pub htype: u8,
    buf: [u8; 36],
    len: usize,
}

impl Tuple {
    /// The bytes to hash.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const PROTO_TCP: u8 = 6;

/// What `flags` (`XEN_NETIF_CTRL_HASH_TYPE_*`) says to hash of the Ethernet
/// frame `frame`, as Linux's `xenvif_set_skb_hash`: for IPv4 (IPv6) TCP
/// that is not a fragment, addresses and ports when `IPV4_TCP`
/// (`IPV6_TCP`) is set, else the addresses when `IPV4` (`IPV6`) is set;
/// nothing for other EtherTypes or a truncated IP header. The ports of a
/// TCP header cut short read as zero (Linux's flow dissector).
pub fn tuple(flags: u32, frame: &[u8]) -> Option<Tuple> {
    let et = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(14..)?;
    let mut t = Tuple {
        htype: 0,
        buf: [0; 36],
        len: 0,
    };
    let (l3_flag, l4_flag, l3, l4, addrs, tcp_at) = match et {
        ETHERTYPE_IPV4 => {
            if flags & (XEN_NETIF_CTRL_HASH_TYPE_IPV4 | XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP) == 0 {
                return None;
            }
            let vihl = *ip.first()?;
            let ihl = usize::from(vihl & 0xF) * 4;
            if vihl >> 4 != 4 || ihl < 20 || ip.len() < ihl {
                return None;
            }
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3FFF != 0;
            let tcp = ip[9] == PROTO_TCP && !fragment;
            (
                XEN_NETIF_CTRL_HASH_TYPE_IPV4,
                XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                _XEN_NETIF_CTRL_HASH_TYPE_IPV4,
                _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                &ip[12..20],
                tcp.then_some(ihl),
            )
        }
        ETHERTYPE_IPV6 => {
            if flags & (XEN_NETIF_CTRL_HASH_TYPE_IPV6 | XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP) == 0 {
                return None;
            }
            let h = ip.get(..40)?;
            if h[0] >> 4 != 6 {
                return None;
            }
            // Past hop-by-hop, routing and destination options headers; a
            // fragment header (any) or anything else ends the walk.
            let mut next = h[6];
            let mut off = 40usize;
            let mut walked = 0;
            while matches!(next, 0 | 43 | 60) && walked < 8 {
                let (Some(n), Some(l)) = (ip.get(off), ip.get(off + 1)) else {
                    return None;
                };
                next = *n;
                off += (usize::from(*l) + 1) * 8;
                walked += 1;
            }
            let tcp = next == PROTO_TCP;
            (
                XEN_NETIF_CTRL_HASH_TYPE_IPV6,
                XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
                _XEN_NETIF_CTRL_HASH_TYPE_IPV6,
                _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP,
                &h[8..40],
                tcp.then_some(off),
            )
        }
        _ => return None,
    };
    let n = addrs.len();
    t.buf[..n].copy_from_slice(addrs);
    match tcp_at {
        Some(at) if flags & l4_flag != 0 => {
            if let Some(ports) = ip.get(at..at + 4) {
                t.buf[n..n + 4].copy_from_slice(ports);
            }
            t.htype = l4;
            t.len = n + 4;
        }
        _ if flags & l3_flag != 0 => {
            t.htype = l3;
            t.len = n;
        }
        _ => return None,
    }
    Some(t)
}

/// A vif's hash settings (Linux's `struct xenvif_hash`), set through its
/// control ring; all off until the front end asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashState {
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub alg: u32,
    /// `XEN_NETIF_CTRL_HASH_TYPE_*` to compute.
    pub flags: u32,
    /// The key, zero-padded.
    pub key: [u8; MAX_KEY_SIZE],
    /// The mapping table's size (0: modular arithmetic).
    pub size: u32,
    /// The mapping table (hash to queue; every entry 0 with one queue).
    pub mapping: [u32; MAX_MAPPING_SIZE as usize],
}

impl Default for HashState {
    fn default() -> Self {
        HashState {
            alg: XEN_NETIF_CTRL_HASH_ALGORITHM_NONE,
            flags: 0,
            key: [0; MAX_KEY_SIZE],
            size: 0,
            mapping: [0; MAX_MAPPING_SIZE as usize],
        }
    }
}

impl HashState {
    /// The hash extra a frame to this front end carries: `None` unless the
    /// algorithm is Toeplitz and `flags` name a hash type the frame has
    /// (Linux's `xenvif_select_queue` + `xenvif_set_skb_hash`, and rx.c's
    /// extra for `skb->sw_hash`).
    pub fn extra(&self, frame: &[u8]) -> Option<NetifExtraHash> {
        if self.alg != XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ || self.flags == 0 {
            return None;
        }
        let t = tuple(self.flags, frame)?;
        Some(NetifExtraHash::toeplitz(
            t.htype,
            toeplitz(&self.key, t.bytes()),
        ))
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // small test lengths
pub(crate) mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// The key of Microsoft's "Verifying the RSS Hash Calculation" (also the
    /// 82599 datasheet's RSS verification suite and DPDK's `test_thash`).
    pub(crate) const MS_KEY: [u8; 40] = [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f,
        0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30,
        0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ];

    /// One verification vector: (source, destination, source port,
    /// destination port, the addresses' hash, with the TCP ports).
    pub(crate) type Vector<const N: usize> = ([u8; N], [u8; N], u16, u16, u32, u32);

    /// The IPv4 vectors.
    pub(crate) const V4: [Vector<4>; 5] = [
        (
            [66, 9, 149, 187],
            [161, 142, 100, 80],
            2794,
            1766,
            0x323e_8fc2,
            0x51cc_c178,
        ),
        (
            [199, 92, 111, 2],
            [65, 69, 140, 83],
            14230,
            4739,
            0xd718_262a,
            0xc626_b0ea,
        ),
        (
            [24, 19, 198, 95],
            [12, 22, 207, 184],
            12898,
            38024,
            0xd2d0_a5de,
            0x5c2b_394a,
        ),
        (
            [38, 27, 205, 30],
            [209, 142, 163, 6],
            48228,
            2217,
            0x8298_9176,
            0xafc7_327f,
        ),
        (
            [153, 39, 163, 191],
            [202, 188, 127, 2],
            44251,
            1303,
            0x5d18_09c5,
            0x10e8_28a2,
        ),
    ];

    fn v6(s: &str) -> [u8; 16] {
        // Enough of RFC 4291's text form for the vectors: groups and one `::`.
        let (head, tail) = s.split_once("::").unwrap_or((s, ""));
        let groups = |p: &str| -> Vec<u16> {
            p.split(':')
                .filter(|g| !g.is_empty())
                .map(|g| u16::from_str_radix(g, 16).unwrap())
                .collect()
        };
        let (h, t) = (groups(head), groups(tail));
        let mut all = h.clone();
        all.resize(8 - t.len(), 0);
        all.extend(t);
        let mut out = [0u8; 16];
        for (i, g) in all.iter().enumerate() {
            out[2 * i..2 * i + 2].copy_from_slice(&g.to_be_bytes());
        }
        out
    }

    /// The IPv6 vectors.
    pub(crate) fn v6_vectors() -> [Vector<16>; 3] {
        [
            (
                v6("3ffe:2501:200:1fff::7"),
                v6("3ffe:2501:200:3::1"),
                2794,
                1766,
                0x2cc1_8cd5,
                0x4020_7d3d,
            ),
            (
                v6("3ffe:501:8::260:97ff:fe40:efab"),
                v6("ff02::1"),
                14230,
                4739,
                0x0f0c_461c,
                0xdde5_1bbf,
            ),
            (
                v6("3ffe:1900:4545:3:200:f8ff:fe21:67cf"),
                v6("fe80::200:f8ff:fe21:67cf"),
                44251,
                38024,
                0x4b61_e985,
                0x02d1_feef,
            ),
        ]
    }

    /// An Ethernet + IPv4 frame (protocol `proto`, fragment field `frag`)
    /// with 20 bytes of transport header carrying `sp`, `dp`.
    pub(crate) fn ip4(
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        frag: u16,
        sp: u16,
        dp: u16,
    ) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        f[14] = 0x45;
        f[16..18].copy_from_slice(&40u16.to_be_bytes());
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sp.to_be_bytes());
        f[36..38].copy_from_slice(&dp.to_be_bytes());
        f
    }

    /// An Ethernet + IPv6 frame, `ext` 8-byte extension headers of type
    /// `ext_type` first, then `proto` with `sp`, `dp`.
    pub(crate) fn ip6(
        src: [u8; 16],
        dst: [u8; 16],
        ext: &[u8],
        proto: u8,
        sp: u16,
        dp: u16,
    ) -> Vec<u8> {
        let mut f = alloc::vec![0u8; 14];
        f[12..14].copy_from_slice(&0x86DDu16.to_be_bytes());
        let plen = (ext.len() * 8 + 20) as u16;
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&plen.to_be_bytes());
        f.push(*ext.first().unwrap_or(&proto));
        f.push(64);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        for (i, _) in ext.iter().enumerate() {
            let next = *ext.get(i + 1).unwrap_or(&proto);
            f.extend_from_slice(&[next, 0, 0, 0, 0, 0, 0, 0]);
        }
        let mut t = [0u8; 20];
        t[..2].copy_from_slice(&sp.to_be_bytes());
        t[2..4].copy_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&t);
        f
    }

    #[test]
    fn toeplitz_matches_the_rss_verification_suite() {
        for (s, d, sp, dp, h2, h4) in V4 {
            let mut b = Vec::new();
            b.extend_from_slice(&s);
            b.extend_from_slice(&d);
            assert_eq!(toeplitz(&MS_KEY, &b), h2, "{s:?} {d:?}");
            b.extend_from_slice(&sp.to_be_bytes());
            b.extend_from_slice(&dp.to_be_bytes());
            assert_eq!(toeplitz(&MS_KEY, &b), h4, "{s:?} {d:?} tcp");
        }
        for (s, d, sp, dp, h2, h4) in v6_vectors() {
            let mut b = Vec::new();
            b.extend_from_slice(&s);
            b.extend_from_slice(&d);
            assert_eq!(toeplitz(&MS_KEY, &b), h2, "{s:x?}");
            b.extend_from_slice(&sp.to_be_bytes());
            b.extend_from_slice(&dp.to_be_bytes());
            assert_eq!(toeplitz(&MS_KEY, &b), h4, "{s:x?} tcp");
        }
    }

    #[test]
    fn short_keys_are_zero_padded_and_an_empty_key_hashes_to_zero() {
        let b = [1u8, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(toeplitz(&[], &b), 0);
        let mut padded = [0u8; 40];
        padded[..12].copy_from_slice(&MS_KEY[..12]);
        assert_eq!(toeplitz(&MS_KEY[..12], &b), toeplitz(&padded, &b));
    }

    #[test]
    fn frames_hash_as_linux_picks_the_type() {
        let all = ALL_TYPES;
        let (s, d, sp, dp, h2, h4) = V4[0];
        let tcp = ip4(s, d, 6, 0x4000, sp, dp);
        let st = |flags, f: &[u8]| {
            let mut h = HashState {
                alg: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ,
                flags,
                ..HashState::default()
            };
            h.key = MS_KEY;
            h.extra(f).map(|x| (x.htype, x.value()))
        };
        assert_eq!(
            st(all, &tcp),
            Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, h4))
        );
        assert_eq!(
            st(XEN_NETIF_CTRL_HASH_TYPE_IPV4, &tcp),
            Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4, h2))
        );
        assert_eq!(st(XEN_NETIF_CTRL_HASH_TYPE_IPV6, &tcp), None);
        // UDP and fragments hash their addresses only, if IPV4 is on.
        let udp = ip4(s, d, 17, 0, sp, dp);
        assert_eq!(st(all, &udp), Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4, h2)));
        assert_eq!(st(XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, &udp), None);
        let frag = ip4(s, d, 6, 0x2000, sp, dp);
        assert_eq!(st(all, &frag), Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4, h2)));
        // IPv6, past a hop-by-hop and a destination options header.
        for ext in [&[][..], &[0, 60][..]] {
            let (s, d, sp, dp, h2, h4) = v6_vectors()[1];
            let f = ip6(s, d, ext, 6, sp, dp);
            assert_eq!(st(all, &f), Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP, h4)));
            assert_eq!(
                st(XEN_NETIF_CTRL_HASH_TYPE_IPV6, &f),
                Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV6, h2))
            );
            // A fragment header: not TCP for the hash.
            let f = ip6(s, d, &[44], 6, sp, dp);
            assert_eq!(st(all, &f), Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV6, h2)));
        }
        // No hash: ARP, truncated headers, algorithm NONE, flags 0.
        let mut arp = tcp.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(st(all, &arp), None);
        assert_eq!(st(all, &tcp[..30]), None);
        assert_eq!(st(0, &tcp), None);
        assert_eq!(HashState::default().extra(&tcp), None);
        // A TCP header cut before its ports: the ports read as zero.
        let mut b = Vec::new();
        b.extend_from_slice(&s);
        b.extend_from_slice(&d);
        b.extend_from_slice(&[0; 4]);
        assert_eq!(
            st(all, &tcp[..34]),
            Some((_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, toeplitz(&MS_KEY, &b)))
        );
    }
}
