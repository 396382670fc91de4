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
}
