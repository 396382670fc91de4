//! Network devices (`io/netif.h`).
//!
//! Two one-page rings per queue. On the TX ring the front end (the guest)
//! sends packets: [`NetifTxRequest`]s naming granted buffers, answered by
//! [`NetifTxResponse`]s. On the RX ring the front end posts empty granted
//! buffers ([`NetifRxRequest`]) and the back end fills them, answering with
//! [`NetifRxResponse`]s. A packet may span several slots (`more_data`) and
//! be followed by [`NetifExtraInfo`] slots (`extra_info`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::ring::{BackRing, FrontRing, entry_size, ring_size};
use crate::types::GrantRef;

/// Slots per packet a back end must accept (`XEN_NETIF_NR_SLOTS_MIN`).
pub const XEN_NETIF_NR_SLOTS_MIN: u32 = 18;
/// Largest TX packet (`XEN_NETIF_MAX_TX_SIZE`).
pub const XEN_NETIF_MAX_TX_SIZE: u32 = 0xFFFF;

/// TX flag: checksum blank, to be filled in (`NETTXF_csum_blank`).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// TX flag: data validated (`NETTXF_data_validated`).
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// TX flag: more slots follow for this packet (`NETTXF_more_data`).
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// TX flag: an extra-info slot follows (`NETTXF_extra_info`).
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// RX flag: data validated (`NETRXF_data_validated`).
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// RX flag: checksum blank (`NETRXF_csum_blank`).
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// RX flag: more slots follow (`NETRXF_more_data`).
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// RX flag: an extra-info slot follows (`NETRXF_extra_info`).
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// RX flag: GSO prefix (`NETRXF_gso_prefix`).
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// Response status: dropped (`NETIF_RSP_DROPPED`).
pub const NETIF_RSP_DROPPED: i16 = -2;
/// Response status: error (`NETIF_RSP_ERROR`).
pub const NETIF_RSP_ERROR: i16 = -1;
/// Response status: success (`NETIF_RSP_OKAY`).
pub const NETIF_RSP_OKAY: i16 = 0;
/// Response status: no response, the slot held extra info (`NETIF_RSP_NULL`).
pub const NETIF_RSP_NULL: i16 = 1;

/// Extra-info type: none (`XEN_NETIF_EXTRA_TYPE_NONE`).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// Extra-info type: GSO (`XEN_NETIF_EXTRA_TYPE_GSO`).
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// Extra-info type: add a multicast address (`XEN_NETIF_EXTRA_TYPE_MCAST_ADD`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// Extra-info type: remove a multicast address (`XEN_NETIF_EXTRA_TYPE_MCAST_DEL`).
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// Extra-info type: hash (`XEN_NETIF_EXTRA_TYPE_HASH`).
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// Extra-info flag: another extra-info slot follows (`XEN_NETIF_EXTRA_FLAG_MORE`).
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;
/// GSO type: none (`XEN_NETIF_GSO_TYPE_NONE`).
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// GSO type: TCPv4 (`XEN_NETIF_GSO_TYPE_TCPV4`).
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// GSO type: TCPv6 (`XEN_NETIF_GSO_TYPE_TCPV6`).
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// Control request type: invalid (`XEN_NETIF_CTRL_TYPE_INVALID`).
pub const XEN_NETIF_CTRL_TYPE_INVALID: u16 = 0;
/// Control request: the hash types the back end can compute
/// (`XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS: u16 = 1;
/// Control request: the hash types to compute (`XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_FLAGS: u16 = 2;
/// Control request: the hash key, from a granted page
/// (`XEN_NETIF_CTRL_TYPE_SET_HASH_KEY`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_KEY: u16 = 3;
/// Control request: the largest mapping table
/// (`XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_GET_HASH_MAPPING_SIZE: u16 = 4;
/// Control request: the mapping table's size
/// (`XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING_SIZE: u16 = 5;
/// Control request: part of the mapping table, from a granted page
/// (`XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_MAPPING: u16 = 6;
/// Control request: the hash algorithm (`XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM`).
pub const XEN_NETIF_CTRL_TYPE_SET_HASH_ALGORITHM: u16 = 7;
/// Control request: grant-mapping table size
/// (`XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE`).
pub const XEN_NETIF_CTRL_TYPE_GET_GREF_MAPPING_SIZE: u16 = 8;
/// Control request: add grant mappings (`XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_ADD_GREF_MAPPING: u16 = 9;
/// Control request: remove grant mappings (`XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING`).
pub const XEN_NETIF_CTRL_TYPE_DEL_GREF_MAPPING: u16 = 10;

/// Control response status: done (`XEN_NETIF_CTRL_STATUS_SUCCESS`).
pub const XEN_NETIF_CTRL_STATUS_SUCCESS: u32 = 0;
/// Control response status: not supported (`XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED`).
pub const XEN_NETIF_CTRL_STATUS_NOT_SUPPORTED: u32 = 1;
/// Control response status: a bad parameter (`XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER`).
pub const XEN_NETIF_CTRL_STATUS_INVALID_PARAMETER: u32 = 2;
/// Control response status: too big (`XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW`).
pub const XEN_NETIF_CTRL_STATUS_BUFFER_OVERFLOW: u32 = 3;

/// Hash type bit: IPv4 addresses (`_XEN_NETIF_CTRL_HASH_TYPE_IPV4`), the
/// `htype` of a hash extra.
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4: u8 = 0;
/// Hash type bit: IPv4 addresses and TCP ports (`_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u8 = 1;
/// Hash type bit: IPv6 addresses (`_XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6: u8 = 2;
/// Hash type bit: IPv6 addresses and TCP ports (`_XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u8 = 3;
/// Hash type flag: IPv4 (`XEN_NETIF_CTRL_HASH_TYPE_IPV4`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4;
/// Hash type flag: IPv4 + TCP (`XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP;
/// Hash type flag: IPv6 (`XEN_NETIF_CTRL_HASH_TYPE_IPV6`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6;
/// Hash type flag: IPv6 + TCP (`XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP`).
pub const XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP: u32 = 1 << _XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP;

/// Hash algorithm: none (`XEN_NETIF_CTRL_HASH_ALGORITHM_NONE`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_NONE: u32 = 0;
/// Hash algorithm: Toeplitz (`XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ`).
pub const XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ: u32 = 1;

/// `struct netif_tx_request` (12 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Granted buffer.
    pub gref: GrantRef,
    /// Offset of the data in the frame.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// Packet size in the first slot, else this slot's length.
    pub size: u16,
}

/// `struct netif_tx_response` (4 bytes). Written by the back end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The request's `id`.
    pub id: u16,
    /// A `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request` (8 bytes). Written by the front end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding (zero).
    pub pad: u16,
    /// Granted empty buffer.
    pub gref: GrantRef,
}

/// `struct netif_rx_response` (8 bytes). Written by the back end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Offset of the data in the buffer.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Bytes received, or a negative `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_extra_info` (8 bytes), in a TX or RX slot.
///
/// The 6-byte union `u` is `gso { u16 size; u8 type; u8 pad; u16 features }`,
/// `mcast { u8 addr[6] }` or `hash { u8 type; u8 algorithm; u8 value[4] }`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The union, as three little-endian `u16`s.
    pub u: [u16; 3],
}

impl NetifExtraInfo {
    /// `u.gso`: `(size, type, features)`.
    pub const fn gso(&self) -> (u16, u8, u16) {
        #[allow(clippy::cast_possible_truncation)] // the low byte is `type`
        (self.u[0], self.u[1] as u8, self.u[2])
    }

    /// `u.mcast.addr`.
    pub const fn mcast_addr(&self) -> [u8; 6] {
        let [a, b] = self.u[0].to_le_bytes();
        let [c, d] = self.u[1].to_le_bytes();
        let [e, f] = self.u[2].to_le_bytes();
        [a, b, c, d, e, f]
    }
}

/// `struct netif_extra_info` seen through its `u.gso` member (8 bytes): a
/// GSO extra-info slot (`XEN_NETIF_EXTRA_TYPE_GSO`), after a TX packet's
/// first request or an RX packet's first response.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraGso {
    /// [`XEN_NETIF_EXTRA_TYPE_GSO`].
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// `u.gso.size`: the largest payload of one segment (for TCP, the MSS).
    pub size: u16,
    /// `u.gso.type`: `XEN_NETIF_GSO_TYPE_*`.
    pub gso_type: u8,
    /// `u.gso.pad` (zero).
    pub pad: u8,
    /// `u.gso.features`: `XEN_NETIF_GSO_FEAT_*` (none are defined; zero).
    pub features: u16,
}

impl NetifExtraGso {
    /// A GSO extra of `gso_type` with segments of `size` bytes, flags 0.
    pub const fn new(size: u16, gso_type: u8) -> Self {
        NetifExtraGso {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags: 0,
            size,
            gso_type,
            pad: 0,
            features: 0,
        }
    }
}

impl From<NetifExtraGso> for NetifExtraInfo {
    fn from(g: NetifExtraGso) -> Self {
        zerocopy::transmute!(g)
    }
}

impl From<NetifExtraInfo> for NetifExtraGso {
    fn from(x: NetifExtraInfo) -> Self {
        zerocopy::transmute!(x)
    }
}

/// `struct netif_extra_info` seen through its `u.hash` member (8 bytes): a
/// hash extra-info slot (`XEN_NETIF_EXTRA_TYPE_HASH`), after an RX packet's
/// first response (or a TX packet's first request).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct NetifExtraHash {
    /// [`XEN_NETIF_EXTRA_TYPE_HASH`].
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// `u.hash.type`: one `_XEN_NETIF_CTRL_HASH_TYPE_*` (a bit number).
    pub htype: u8,
    /// `u.hash.algorithm`: `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// `u.hash.value`: the hash, least significant byte first.
    pub value: [u8; 4],
}

impl NetifExtraHash {
    /// A Toeplitz hash extra of type `htype` (`_XEN_NETIF_CTRL_HASH_TYPE_*`)
    /// with value `value`, flags 0.
    pub const fn toeplitz(htype: u8, value: u32) -> Self {
        NetifExtraHash {
            type_: XEN_NETIF_EXTRA_TYPE_HASH,
            flags: 0,
            htype,
            #[allow(clippy::cast_possible_truncation)] // 1
            algorithm: XEN_NETIF_CTRL_HASH_ALGORITHM_TOEPLITZ as u8,
            value: value.to_le_bytes(),
        }
    }

    /// The hash value.
    pub const fn value(&self) -> u32 {
        u32::from_le_bytes(self.value)
    }
}

impl From<NetifExtraHash> for NetifExtraInfo {
    fn from(h: NetifExtraHash) -> Self {
        zerocopy::transmute!(h)
    }
}

impl From<NetifExtraInfo> for NetifExtraHash {
    fn from(x: NetifExtraInfo) -> Self {
        zerocopy::transmute!(x)
    }
}

/// `struct xen_netif_ctrl_request` (16 bytes). Written by the front end on
/// the control ring (`ctrl-ring-ref`, `event-channel-ctrl`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenNetifCtrlRequest {
    /// Echoed in the response.
    pub id: u16,
    /// `XEN_NETIF_CTRL_TYPE_*`.
    pub type_: u16,
    /// The type's arguments.
    pub data: [u32; 3],
}

/// `struct xen_netif_ctrl_response` (12 bytes). Written by the back end.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenNetifCtrlResponse {
    /// The request's `id`.
    pub id: u16,
    /// The request's `type`.
    pub type_: u16,
    /// `XEN_NETIF_CTRL_STATUS_*`.
    pub status: u32,
    /// The answer's value (by type and status), else 0.
    pub data: u32,
}

/// Slots in the one-page control ring (128: 16-byte slots).
pub const XEN_NETIF_CTRL_RING_SIZE: u32 = ring_size(
    crate::PAGE_SIZE,
    entry_size::<XenNetifCtrlRequest, XenNetifCtrlResponse>(),
);
/// The front end's control ring.
pub type XenNetifCtrlFrontRing<'a> = FrontRing<'a, XenNetifCtrlRequest, XenNetifCtrlResponse>;
/// The back end's control ring.
pub type XenNetifCtrlBackRing<'a> = BackRing<'a, XenNetifCtrlRequest, XenNetifCtrlResponse>;

/// Slots in a one-page TX ring (256).
pub const NETIF_TX_RING_SIZE: u32 = ring_size(
    crate::PAGE_SIZE,
    entry_size::<NetifTxRequest, NetifTxResponse>(),
);
/// Slots in a one-page RX ring (256).
pub const NETIF_RX_RING_SIZE: u32 = ring_size(
    crate::PAGE_SIZE,
    entry_size::<NetifRxRequest, NetifRxResponse>(),
);

/// The front end's TX ring.
pub type NetifTxFrontRing<'a> = FrontRing<'a, NetifTxRequest, NetifTxResponse>;
/// The back end's TX ring.
pub type NetifTxBackRing<'a> = BackRing<'a, NetifTxRequest, NetifTxResponse>;
/// The front end's RX ring.
pub type NetifRxFrontRing<'a> = FrontRing<'a, NetifRxRequest, NetifRxResponse>;
/// The back end's RX ring.
pub type NetifRxBackRing<'a> = BackRing<'a, NetifRxRequest, NetifRxResponse>;

assert_layout!(
    NetifTxRequest,
    12,
    gref = 0,
    offset = 4,
    flags = 6,
    id = 8,
    size = 10
);
assert_layout!(NetifTxResponse, 4, id = 0, status = 2);
assert_layout!(NetifRxRequest, 8, id = 0, pad = 2, gref = 4);
assert_layout!(
    NetifRxResponse,
    8,
    id = 0,
    offset = 2,
    flags = 4,
    status = 6
);
assert_layout!(NetifExtraInfo, 8, type_ = 0, flags = 1, u = 2);
assert_layout!(
    NetifExtraGso,
    8,
    type_ = 0,
    flags = 1,
    size = 2,
    gso_type = 4,
    pad = 5,
    features = 6
);
const _: () = assert!(NETIF_TX_RING_SIZE == 256 && NETIF_RX_RING_SIZE == 256);
assert_layout!(
    NetifExtraHash,
    8,
    type_ = 0,
    flags = 1,
    htype = 2,
    algorithm = 3,
    value = 4
);
assert_layout!(XenNetifCtrlRequest, 16, id = 0, type_ = 2, data = 4);
assert_layout!(
    XenNetifCtrlResponse,
    12,
    id = 0,
    type_ = 2,
    status = 4,
    data = 8
);
const _: () = assert!(XEN_NETIF_CTRL_RING_SIZE == 128);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gso_extra_bytes_are_netif_h_s() {
        // type 1, flags 0, size 1448 (LE), type TCPv6, pad 0, features 0.
        let g = NetifExtraGso::new(1448, XEN_NETIF_GSO_TYPE_TCPV6);
        assert_eq!(g.as_bytes(), &[1, 0, 0xA8, 0x05, 2, 0, 0, 0]);
        let x = NetifExtraInfo::from(g);
        assert_eq!(x.type_, XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(x.gso(), (1448, XEN_NETIF_GSO_TYPE_TCPV6, 0));
        assert_eq!(NetifExtraGso::from(x), g);
        // An extra fits an RX response slot (netif.h: it overlays one).
        let rsp = NetifRxResponse::read_from_bytes(x.as_bytes()).unwrap();
        assert_eq!(rsp.as_bytes(), g.as_bytes());
    }

    #[test]
    fn hash_extra_bytes_are_netif_h_s() {
        // type 4, flags 0, htype IPV4_TCP (bit 1), algorithm Toeplitz, value LSB first.
        let h = NetifExtraHash::toeplitz(_XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP, 0x51cc_c178);
        assert_eq!(h.as_bytes(), &[4, 0, 1, 1, 0x78, 0xc1, 0xcc, 0x51]);
        assert_eq!(h.value(), 0x51cc_c178);
        let x = NetifExtraInfo::from(h);
        assert_eq!(x.type_, XEN_NETIF_EXTRA_TYPE_HASH);
        assert_eq!(NetifExtraHash::from(x), h);
        let rsp = NetifRxResponse::read_from_bytes(h.as_bytes()).unwrap();
        assert_eq!(rsp.as_bytes(), h.as_bytes());
    }

    #[test]
    fn ctrl_ring_is_netif_h_s() {
        // `union { request; response; }` is 16 bytes: (4096 - 64) / 16 = 252 -> 128.
        assert_eq!(
            entry_size::<XenNetifCtrlRequest, XenNetifCtrlResponse>(),
            16
        );
        assert_eq!(XEN_NETIF_CTRL_RING_SIZE, 128);
        let q = XenNetifCtrlRequest {
            id: 0x0102,
            type_: XEN_NETIF_CTRL_TYPE_SET_HASH_KEY,
            data: [7, 40, 0],
        };
        assert_eq!(
            q.as_bytes(),
            &[2, 1, 3, 0, 7, 0, 0, 0, 40, 0, 0, 0, 0, 0, 0, 0]
        );
        let r = XenNetifCtrlResponse {
            id: 0x0102,
            type_: XEN_NETIF_CTRL_TYPE_GET_HASH_FLAGS,
            status: XEN_NETIF_CTRL_STATUS_SUCCESS,
            data: 0xF,
        };
        assert_eq!(r.as_bytes(), &[2, 1, 1, 0, 0, 0, 0, 0, 0xF, 0, 0, 0]);
        assert_eq!(
            (
                XEN_NETIF_CTRL_HASH_TYPE_IPV4,
                XEN_NETIF_CTRL_HASH_TYPE_IPV4_TCP,
                XEN_NETIF_CTRL_HASH_TYPE_IPV6,
                XEN_NETIF_CTRL_HASH_TYPE_IPV6_TCP
            ),
            (1, 2, 4, 8)
        );
        // A front end and a back end on one page.
        let page: std::vec::Vec<core::sync::atomic::AtomicU32> = (0..1024)
            .map(|_| core::sync::atomic::AtomicU32::new(0))
            .collect();
        let mut f = XenNetifCtrlFrontRing::init(&page).unwrap();
        f.put_request(&q).unwrap();
        f.push_requests();
        let mut b = XenNetifCtrlBackRing::new(&page).unwrap();
        assert_eq!(b.take_request().unwrap(), Some(q));
        b.put_response(&r).unwrap();
        b.push_responses();
        assert_eq!(f.take_response().unwrap(), Some(r));
    }
}
