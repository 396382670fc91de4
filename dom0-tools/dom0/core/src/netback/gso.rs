//! Generic segmentation offload: a front end that was offered
//! `feature-gso-tcpv4`/`-tcpv6` may send one TCP packet of up to 64 KiB with a
//! GSO extra (`XEN_NETIF_EXTRA_TYPE_GSO`: its type and the MSS). A receiver
//! that asked for GSO gets it whole; every other one gets it cut here into
//! MSS-sized TCP segments, as Linux's `tcp_gso_segment` (under
//! `inet_gso_segment` / `ipv6_gso_segment`) cuts it: each segment has the
//! original headers with the IPv4 total length, a fresh IPv4 id (the
//! original's plus the segment's number) and header checksum (or the IPv6
//! payload length), its TCP sequence number, FIN and PSH only on the last
//! segment, CWR only on the first, and its TCP checksum computed whole.
//!
//! Everything here is pure and bounded: hostile headers give a [`GsoError`],
//! never a panic, and a packet never makes more than [`MAX_SEGMENTS`]
//! segments.

use alloc::vec::Vec;

use hypercall_abi::io::netif::{XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6};

use super::csum::{self, L4, PROTO_TCP};

/// Most segments one packet may make. Linux's TCP never uses an MSS below 88
/// bytes (`TCP_MIN_MSS`), which cuts 64 KiB into 745; an MSS that would
/// make more is refused rather than flooding dom0 with tiny frames.
pub const MAX_SEGMENTS: usize = 1024;
/// The longest TCP header (data offset 15).
const MAX_TCP_HDR: usize = 60;

/// The protocol a GSO packet is (`XEN_NETIF_GSO_TYPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoType {
    /// TCP over IPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`).
    TcpV4,
    /// TCP over IPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`).
    TcpV6,
}

impl GsoType {
    /// From `u.gso.type`; `None` for `XEN_NETIF_GSO_TYPE_NONE` or an unknown one.
    pub const fn from_xen(t: u8) -> Option<Self> {
        match t {
            XEN_NETIF_GSO_TYPE_TCPV4 => Some(GsoType::TcpV4),
            XEN_NETIF_GSO_TYPE_TCPV6 => Some(GsoType::TcpV6),
            _ => None,
        }
    }

    /// Its `XEN_NETIF_GSO_TYPE_*`.
    pub const fn to_xen(self) -> u8 {
        match self {
            GsoType::TcpV4 => XEN_NETIF_GSO_TYPE_TCPV4,
            GsoType::TcpV6 => XEN_NETIF_GSO_TYPE_TCPV6,
        }
    }
}

/// A packet's GSO metadata (its GSO extra).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    /// TCPv4 or TCPv6.
    pub kind: GsoType,
    /// The most payload bytes per segment (`u.gso.size`, the MSS); not zero.
    pub mss: u16,
}

impl Gso {
    /// From a GSO extra's `size` and `type`, refused as Linux's
    /// `xenvif_set_skb_gso` refuses them: a zero size, an unknown type.
    pub const fn from_extra(size: u16, gso_type: u8) -> Result<Self, GsoError> {
        if size == 0 {
            return Err(GsoError::ZeroMss);
        }
        match GsoType::from_xen(gso_type) {
            Some(kind) => Ok(Gso { kind, mss: size }),
            None => Err(GsoError::UnknownType(gso_type)),
        }
    }
}

/// Why a GSO packet cannot be segmented (it is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoError {
    /// The extra's size (the MSS) is zero.
    ZeroMss,
    /// The extra's type is not TCPv4 or TCPv6.
    UnknownType(u8),
    /// Not an IP packet of the extra's version (IPv4 for TCPv4, IPv6 for
    /// TCPv6), or a truncated, inconsistent or fragmented IP header.
    BadIp,
    /// The IP packet does not carry TCP.
    NotTcp,
    /// The TCP header is truncated or its data offset is impossible.
    BadTcp,
    /// The MSS would cut the payload into more than [`MAX_SEGMENTS`].
    TooManySegments,
}

/// Where a GSO packet's headers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    l4: L4,
    /// The TCP header's length.
    tcp_len: usize,
}

impl Headers {
    /// The bytes every segment repeats: Ethernet, IP (with IPv6 extension
    /// headers) and TCP headers.
    pub const fn len(&self) -> usize {
        self.l4.start + self.tcp_len
    }

    /// Always false: a packet has headers.
    pub const fn is_empty(&self) -> bool {
        false
    }

    /// The TCP payload's length.
    pub const fn payload(&self) -> usize {
        self.l4.end - self.len()
    }
}

/// Checks that `frame` can be segmented as `gso` says and finds its headers.
pub fn check(frame: &[u8], gso: Gso) -> Result<Headers, GsoError> {
    if gso.mss == 0 {
        return Err(GsoError::ZeroMss);
    }
    let l4 = csum::locate(frame).ok_or(GsoError::BadIp)?;
    if l4.v6 != (gso.kind == GsoType::TcpV6) || l4.frag_hdr {
        return Err(GsoError::BadIp);
    }
    if l4.proto != PROTO_TCP {
        return Err(GsoError::NotTcp);
    }
    let tcp = frame.get(l4.start..l4.end).ok_or(GsoError::BadIp)?;
    let doff = usize::from(*tcp.get(12).ok_or(GsoError::BadTcp)? >> 4) * 4;
    if !(20..=MAX_TCP_HDR).contains(&doff) || tcp.len() < doff {
        return Err(GsoError::BadTcp);
    }
    let h = Headers { l4, tcp_len: doff };
    if h.payload().div_ceil(usize::from(gso.mss)) > MAX_SEGMENTS {
        return Err(GsoError::TooManySegments);
    }
    Ok(h)
}

/// TCP flags.
const FIN: u8 = 0x01;
const PSH: u8 = 0x08;
const CWR: u8 = 0x80;

/// Cuts the GSO packet `frame` into segments of at most `gso.mss` payload
/// bytes each (one segment when the payload fits, or is empty), every
/// header and checksum filled in. Bytes past the IP datagram's length
/// (Ethernet padding) are left out.
pub fn segment(frame: &[u8], gso: Gso) -> Result<Vec<Vec<u8>>, GsoError> {
    let h = check(frame, gso)?;
    let hlen = h.len();
    let l4 = h.l4;
    let payload = &frame[hlen..l4.end];
    let seq0 = u32::from_be_bytes([
        frame[l4.start + 4],
        frame[l4.start + 5],
        frame[l4.start + 6],
        frame[l4.start + 7],
    ]);
    let flags0 = frame[l4.start + 13];
    let id0 = u16::from_be_bytes([frame[l4.ip + 4], frame[l4.ip + 5]]);
    let mss = usize::from(gso.mss);
    let n = payload.len().div_ceil(mss).max(1);
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let chunk = payload.get(i * mss..).unwrap_or(&[]);
        let chunk = &chunk[..chunk.len().min(mss)];
        let mut s = Vec::with_capacity(hlen + chunk.len());
        s.extend_from_slice(&frame[..hlen]);
        s.extend_from_slice(chunk);
        // IP lengths (and, for IPv4, the id and header checksum).
        let ip_len = s.len() - l4.ip;
        if l4.v6 {
            let plen = u16::try_from(ip_len - 40).map_err(|_| GsoError::BadIp)?;
            s[l4.ip + 4..l4.ip + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let total = u16::try_from(ip_len).map_err(|_| GsoError::BadIp)?;
            s[l4.ip + 2..l4.ip + 4].copy_from_slice(&total.to_be_bytes());
            #[allow(clippy::cast_possible_truncation)] // i < MAX_SEGMENTS; ids wrap
            let id = id0.wrapping_add(i as u16);
            s[l4.ip + 4..l4.ip + 6].copy_from_slice(&id.to_be_bytes());
            s[l4.ip + 10] = 0;
            s[l4.ip + 11] = 0;
            let c = csum::internet_checksum(&s[l4.ip..l4.start]);
            s[l4.ip + 10..l4.ip + 12].copy_from_slice(&c.to_be_bytes());
        }
        // TCP: sequence number, flags, checksum.
        let t = l4.start;
        #[allow(clippy::cast_possible_truncation)] // offsets < 64 KiB; sequence numbers wrap
        let seq = seq0.wrapping_add((i * mss) as u32);
        s[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = flags0;
        if i + 1 < n {
            flags &= !(FIN | PSH);
        }
        if i > 0 {
            flags &= !CWR;
        }
        s[t + 13] = flags;
        s[t + 16] = 0;
        s[t + 17] = 0;
        let seg_len = s.len() - t;
        let c = csum::fold(csum::sum(l4.pseudo(seg_len), &s[t..]));
        s[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        out.push(s);
    }
    Ok(out)
}

/// Readies the GSO packet `frame` for a receiver that takes it whole (with
/// `NETRXF_csum_blank`): checks it as [`segment`] would and puts the
/// pseudo-header's partial sum in the TCP checksum field, as Linux keeps it
/// for `CHECKSUM_PARTIAL`.
pub fn prepare_whole(frame: &mut [u8], gso: Gso) -> Result<(), GsoError> {
    check(frame, gso)?;
    if csum::set_partial(frame) {
        Ok(())
    } else {
        Err(GsoError::BadTcp)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Frames built and checked independently of `csum` (the checksums here
    //! are summed in 64 bits straight from RFC 1071 and RFC 8200).
    #![allow(clippy::cast_possible_truncation)] // test frames are small

    use super::*;
    use alloc::vec;
    use proptest::prelude::*;

    /// RFC 1071 over `parts`, summed in 64 bits and folded at the end.
    pub(crate) fn ones(parts: &[&[u8]]) -> u16 {
        let mut all = Vec::new();
        for p in parts {
            all.extend_from_slice(p);
        }
        if all.len() % 2 == 1 {
            all.push(0);
        }
        let mut acc: u64 = all
            .chunks(2)
            .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
            .sum();
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// A TCP segment: `seq`, `flags`, 12 bytes of options (NOP NOP
    /// timestamp), then `payload`; checksum zero.
    fn tcp(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 32];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5001u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&0xFFFFu16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        t.extend_from_slice(payload);
        t
    }

    /// The pattern payload of `len` bytes.
    pub(crate) fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8 ^ seed).collect()
    }

    /// An Ethernet + IPv4 (DF, id 0x4242) + TCP GSO frame from `src` to `dst`.
    pub(crate) fn tcp4(dst: [u8; 6], src: [u8; 6], seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let t = tcp(seq, flags, payload);
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        let total = (20 + t.len()) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0x42, 0x42, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1]);
        f.extend_from_slice(&t);
        f
    }

    /// An Ethernet + IPv6 (one 8-byte hop-by-hop header) + TCP GSO frame.
    pub(crate) fn tcp6(dst: [u8; 6], src: [u8; 6], seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let t = tcp(seq, flags, payload);
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&0x86DDu16.to_be_bytes());
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((8 + t.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 64]);
        for i in 0..32u8 {
            f.push(if i < 16 { 0xFD } else { 0xFE } ^ i);
        }
        f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&t);
        f
    }

    /// Checks `segs` against the GSO frame `orig` (cut at `mss`) with this
    /// file's own parsing and checksums; returns the payload reassembled.
    pub(crate) fn verify(orig: &[u8], segs: &[Vec<u8>], mss: usize) -> Vec<u8> {
        let v6 = orig[12] == 0x86;
        let ip_hlen = if v6 { 48 } else { 20 };
        let t = 14 + ip_hlen;
        let hlen = t + 32;
        let seq0 = u32::from_be_bytes(orig[t + 4..t + 8].try_into().unwrap());
        let flags0 = orig[t + 13];
        let mut payload = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert!(s.len() <= hlen + mss, "segment {i} is {} bytes", s.len());
            assert_eq!(s[..14], orig[..14]);
            let seg = &s[t..];
            if v6 {
                assert_eq!(
                    usize::from(u16::from_be_bytes([s[18], s[19]])),
                    s.len() - 14 - 40
                );
                assert_eq!(s[14..18], orig[14..18]);
                assert_eq!(s[20..t], orig[20..t]);
                let mut ph = Vec::new();
                ph.extend_from_slice(&s[22..54]);
                ph.extend_from_slice(&(seg.len() as u32).to_be_bytes());
                ph.extend_from_slice(&[0, 0, 0, 6]);
                assert_eq!(ones(&[&ph, seg]), 0, "TCP checksum of segment {i}");
            } else {
                let ip = &s[14..t];
                assert_eq!(ones(&[ip]), 0, "IPv4 header checksum of segment {i}");
                assert_eq!(
                    usize::from(u16::from_be_bytes([ip[2], ip[3]])),
                    s.len() - 14
                );
                assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 0x4242 + i as u16);
                assert_eq!(ip[6..10], orig[20..24]);
                assert_eq!(ip[12..20], orig[26..34]);
                let mut ph = Vec::new();
                ph.extend_from_slice(&ip[12..20]);
                ph.extend_from_slice(&[0, 6]);
                ph.extend_from_slice(&(seg.len() as u16).to_be_bytes());
                assert_eq!(ones(&[&ph, seg]), 0, "TCP checksum of segment {i}");
            }
            let seq = u32::from_be_bytes(seg[4..8].try_into().unwrap());
            assert_eq!(seq, seq0.wrapping_add(payload.len() as u32), "segment {i}");
            let last = i + 1 == segs.len();
            let mut want = flags0;
            if !last {
                want &= !(0x01 | 0x08);
            }
            if i > 0 {
                want &= !0x80;
            }
            assert_eq!(seg[13], want, "flags of segment {i}");
            assert_eq!(seg[8..13], orig[t + 8..t + 13]);
            assert_eq!(seg[14..16], orig[t + 14..t + 16]);
            assert_eq!(seg[18..32], orig[t + 18..t + 32]);
            if !last {
                assert_eq!(s.len(), hlen + mss, "only the last segment is short");
            }
            payload.extend_from_slice(&s[hlen..]);
        }
        payload
    }

    const A: [u8; 6] = [0, 0x16, 0x3e, 0, 0, 1];
    const B: [u8; 6] = [0, 0x16, 0x3e, 0, 0, 2];
    /// FIN PSH ACK CWR.
    const FLAGS: u8 = 0x01 | 0x08 | 0x10 | 0x80;

    #[test]
    fn tcp4_64k_is_cut_at_the_mss() {
        let p = pattern(65535 - 20 - 32, 3);
        let f = tcp4(B, A, 0xFFFF_F000, FLAGS, &p);
        assert_eq!(f.len(), 14 + 65535);
        let gso = Gso {
            kind: GsoType::TcpV4,
            mss: 1448,
        };
        let segs = segment(&f, gso).unwrap();
        assert_eq!(segs.len(), p.len().div_ceil(1448));
        assert_eq!(verify(&f, &segs, 1448), p);
    }

    #[test]
    fn tcp6_is_cut_with_its_extension_header() {
        let p = pattern(40000, 9);
        let f = tcp6(B, A, 7, FLAGS, &p);
        let gso = Gso {
            kind: GsoType::TcpV6,
            mss: 1400,
        };
        let segs = segment(&f, gso).unwrap();
        assert_eq!(segs.len(), 40000usize.div_ceil(1400));
        assert_eq!(verify(&f, &segs, 1400), p);
    }

    #[test]
    fn small_and_empty_payloads_make_one_segment() {
        for len in [0, 1, 1448] {
            let p = pattern(len, 1);
            let f = tcp4(B, A, 1, FLAGS, &p);
            let segs = segment(
                &f,
                Gso {
                    kind: GsoType::TcpV4,
                    mss: 1448,
                },
            )
            .unwrap();
            assert_eq!(segs.len(), 1);
            assert_eq!(verify(&f, &segs, 1448), p);
        }
        // Ethernet padding past the IP length is not payload.
        let mut f = tcp4(B, A, 1, FLAGS, b"abc");
        f.extend_from_slice(&[0xEE; 9]);
        let segs = segment(
            &f,
            Gso {
                kind: GsoType::TcpV4,
                mss: 2,
            },
        )
        .unwrap();
        assert_eq!(verify(&f[..f.len() - 9], &segs, 2), b"abc");
    }

    #[test]
    fn whole_frames_carry_a_partial_checksum() {
        let p = pattern(5000, 4);
        let mut f = tcp6(B, A, 1, FLAGS, &p);
        prepare_whole(
            &mut f,
            Gso {
                kind: GsoType::TcpV6,
                mss: 1000,
            },
        )
        .unwrap();
        // Completing it (sum from the TCP header on, complement into the
        // field) gives a valid checksum.
        let t = 14 + 48;
        let c = ones(&[&f[t..]]);
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
        let mut ph = Vec::new();
        ph.extend_from_slice(&f[22..54]);
        ph.extend_from_slice(&((f.len() - t) as u32).to_be_bytes());
        ph.extend_from_slice(&[0, 0, 0, 6]);
        assert_eq!(ones(&[&ph, &f[t..]]), 0);
    }

    #[test]
    fn bad_packets_are_refused() {
        let v4 = Gso {
            kind: GsoType::TcpV4,
            mss: 100,
        };
        let v6 = Gso {
            kind: GsoType::TcpV6,
            mss: 100,
        };
        assert_eq!(Gso::from_extra(0, 1), Err(GsoError::ZeroMss));
        assert_eq!(Gso::from_extra(100, 0), Err(GsoError::UnknownType(0)));
        assert_eq!(Gso::from_extra(100, 3), Err(GsoError::UnknownType(3)));
        assert_eq!(Gso::from_extra(100, 2), Ok(v6));
        let good = tcp4(B, A, 1, FLAGS, &pattern(1000, 0));
        assert!(segment(&good, v4).is_ok());
        assert_eq!(segment(&good, Gso { mss: 0, ..v4 }), Err(GsoError::ZeroMss));
        // The other IP version, UDP, not IP at all.
        assert_eq!(segment(&good, v6), Err(GsoError::BadIp));
        let mut udp = good.clone();
        udp[23] = 17;
        assert_eq!(segment(&udp, v4), Err(GsoError::NotTcp));
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(segment(&arp, v4), Err(GsoError::BadIp));
        // A fragment, an IP length past the frame, a short IHL.
        let mut frag = good.clone();
        frag[20] |= 0x20;
        assert_eq!(segment(&frag, v4), Err(GsoError::BadIp));
        let mut long = good.clone();
        long[16..18].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(segment(&long, v4), Err(GsoError::BadIp));
        let mut ihl = good.clone();
        ihl[14] = 0x44;
        assert_eq!(segment(&ihl, v4), Err(GsoError::BadIp));
        // TCP data offsets below 5 or past the packet; headers cut short.
        let mut doff = good.clone();
        doff[34 + 12] = 4 << 4;
        assert_eq!(segment(&doff, v4), Err(GsoError::BadTcp));
        let mut short = tcp4(B, A, 1, FLAGS, &[]);
        short[34 + 12] = 15 << 4;
        assert_eq!(segment(&short, v4), Err(GsoError::BadTcp));
        for cut in [0, 13, 14, 20, 33, 34, 40, 50] {
            let mut t = good[..cut].to_vec();
            if t.len() >= 18 {
                let total = (t.len() - 14) as u16;
                t[16..18].copy_from_slice(&total.to_be_bytes());
            }
            assert!(segment(&t, v4).is_err(), "cut at {cut}");
        }
        // Too many segments.
        let many = tcp4(B, A, 1, FLAGS, &pattern(MAX_SEGMENTS + 1, 0));
        assert_eq!(
            segment(&many, Gso { mss: 1, ..v4 }),
            Err(GsoError::TooManySegments)
        );
        assert_eq!(
            segment(&many, Gso { mss: 2, ..v4 }).map(|s| s.len()),
            Ok(MAX_SEGMENTS / 2 + 1)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random damage to good GSO frames (bytes changed, cut, lengthened)
        /// never panics, and what comes out is bounded: at most MAX_SEGMENTS
        /// segments, none longer than the headers and the MSS.
        #[test]
        fn hostile_gso_packets(
            v6 in any::<bool>(),
            len in 0usize..3000,
            mss in 0u16..2000,
            kind in 0u8..4,
            pokes in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in proptest::option::of(0usize..300),
            tail in 0usize..40,
        ) {
            let p = pattern(len, 5);
            let mut f = if v6 { tcp6(B, A, 9, FLAGS, &p) } else { tcp4(B, A, 9, FLAGS, &p) };
            for (at, b) in pokes {
                if at < f.len() {
                    f[at] = b;
                }
            }
            if let Some(c) = cut {
                f.truncate(c);
            }
            f.extend(core::iter::repeat_n(0xA5, tail));
            let Ok(gso) = Gso::from_extra(mss, kind) else {
                prop_assert!(mss == 0 || !(1..=2).contains(&kind));
                return Ok(());
            };
            match segment(&f, gso) {
                Ok(segs) => {
                    let h = check(&f, gso).unwrap();
                    prop_assert!(!segs.is_empty() && segs.len() <= MAX_SEGMENTS);
                    for s in &segs {
                        prop_assert!(s.len() <= h.len() + usize::from(mss));
                    }
                    let total: usize = segs.iter().map(|s| s.len() - h.len()).sum();
                    prop_assert_eq!(total, h.payload());
                }
                Err(e) => prop_assert!(check(&f, gso) == Err(e)),
            }
            let mut w = f.clone();
            let _ = prepare_whole(&mut w, gso);
        }
    }
}
