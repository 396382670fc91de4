//! The network back end (netback): dom0 serves domUs' virtual network
//! interfaces (vifs), speaking `io/netif.h` as Linux's xen-netback does, and
//! joins them on learning switches ([`switch`]), one per bridge name.
//! `docs/net.md`.
//!
//! * **Toolstack side** ([`Netback::attach`]): the nodes `xl` writes for a vif
//!   (`libxl__set_xenstore_nic`): `backend/vif/D/N` owned by dom0 and readable
//!   by the domain, `device/vif/N` owned by the domain and readable by dom0,
//!   and `/libxl/D/device/vif/N`; then the features netback's probe writes,
//!   InitWait, and `hotplug-status` = `connected` (the vif is on its bridge:
//!   what the `vif-bridge` script would report).
//! * **Handshake**: when the front end is Connected (Linux's netfront skips
//!   Initialised) or Initialised, the back end reads `tx-ring-ref`,
//!   `rx-ring-ref`, `event-channel` or `event-channel-tx`/`-rx`,
//!   `request-rx-copy` (required), `feature-rx-notify` (required) and
//!   `feature-sg`, `feature-gso-tcpv4`/`-tcpv6`, `feature-no-csum-offload`
//!   and `feature-ipv6-csum-offload` (Linux's `read_xenbus_vif_flags`),
//!   `request-multicast-control` (re-read whenever the store changes), maps
//!   both rings and the control ring if the front end gave one
//!   (`ctrl-ring-ref`, `event-channel-ctrl`: [`ctrl`], [`hash`]), binds the
//!   channels and goes to Connected.
//!   Closing, Closed and a restart (Initialising after Closed) follow blkback.
//! * **TX** (guest → switch): every published packet is checked ([`tx`]),
//!   copied into dom0 by `GNTTABOP_copy`, its checksum filled in when the
//!   front end left it blank, and switched (a GSO packet, [`gso`], whole to
//!   a receiver that takes GSO, cut into TCP segments for any other: see
//!   [`frames_for`]); each slot is answered
//!   `NETIF_RSP_OKAY`, `NETIF_RSP_ERROR` or (extra-info slots)
//!   `NETIF_RSP_NULL`.
//! * **RX** (switch → guest): frames wait in a bounded per-vif queue and are
//!   grant-copied into the buffers the front end posted; a front end that
//!   posts none loses its own frames when its queue is full, nobody else's.
//!   A front end that asked for multicast control gets only the multicast
//!   addresses it listed (`XEN_NETIF_EXTRA_TYPE_MCAST_ADD`/`_DEL`); one that
//!   set a Toeplitz hash gets a hash extra with each frame.

pub mod csum;
mod ctrl;
pub mod gso;
pub mod hash;
pub mod switch;
pub mod tx;
pub mod uplink;

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use control_proto::vif::{Mac, VifSpec};
use hypercall_abi::io::netif::{
    NETIF_RSP_ERROR, NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_CSUM_BLANK, NETRXF_DATA_VALIDATED,
    NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NETTXF_CSUM_BLANK, NETTXF_DATA_VALIDATED, NetifExtraGso,
    NetifExtraHash, NetifExtraInfo, NetifRxBackRing, NetifRxResponse, NetifTxBackRing,
    NetifTxRequest, NetifTxResponse, XEN_NETIF_CTRL_RING_SIZE, XEN_NETIF_EXTRA_FLAG_MORE,
};
use hypercall_abi::io::xenbus::XenbusState;
use hypercall_abi::{DomId, EvtchnPort, GrantRef};
use xenstored::Xenstored;
use xenstored::perms::{Access, Perm};

use crate::hv::{GrantSeg, Hypervisor, RingId};
use crate::xenstore::{Entry, dom_path, libxl_path};
use ctrl::{Ctrl, CtrlPass};
use gso::{Gso, GsoType};
use switch::{Forward, Port, Switch};
use tx::{McastOp, TxError, Verdict};
pub use uplink::{Uplink, UplinkStats};

/// `multi-queue-max-queues` (one queue per vif for now).
pub const MAX_QUEUES: u32 = 1;
/// Frames one vif's RX queue holds before its new frames are dropped.
pub const RX_QUEUE_FRAMES: usize = 256;
/// Bytes one vif's RX queue holds (Linux's `XENVIF_RX_QUEUE_BYTES` is 512 KiB).
pub const RX_QUEUE_BYTES: usize = 512 * 1024;
/// Packets taken from one TX ring per [`Netback::poll`], so one busy front
/// end cannot keep dom0 from everything else.
const TX_PACKETS_PER_POLL: usize = 64;
/// Multicast addresses one vif's filter holds (Linux's `XEN_NETBK_MCAST_MAX`).
pub const MCAST_MAX: usize = 64;
/// The MTU written for the front end (libxl's default).
pub const MTU: u32 = 1500;
const PAGE: usize = 4096;

/// Per-vif counters (the back end's view: `tx` is what the guest sent).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets taken from the guest.
    pub tx_packets: u64,
    /// Their bytes.
    pub tx_bytes: u64,
    /// Packets refused (bad slots, failed copies).
    pub tx_errors: u64,
    /// Frames delivered to the guest.
    pub rx_packets: u64,
    /// Their bytes.
    pub rx_bytes: u64,
    /// Frames dropped on the way to the guest (queue full, too big, copy failed).
    pub rx_dropped: u64,
    /// GSO packets taken from the guest (counted in `tx_packets` too).
    pub tx_gso: u64,
    /// GSO frames delivered whole to the guest (in `rx_packets` too).
    pub rx_gso: u64,
    /// Multicast frames not delivered because the front end's filter
    /// (`request-multicast-control`) does not list their address.
    pub rx_mcast_filtered: u64,
}

/// A frame on its way to a guest (or, later, the uplink).
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) data: Vec<u8>,
    /// Its checksum is known good (the back end filled it in).
    pub(crate) validated: bool,
    /// A GSO packet (up to 64 KiB of one TCP stream): its type and MSS. Its
    /// headers were checked ([`gso::check`]) and its TCP checksum field
    /// holds the pseudo-header's partial sum (`NETRXF_csum_blank`).
    pub(crate) gso: Option<Gso>,
}

/// What one destination gets of `f`: `f` itself when it is not a GSO
/// packet or the destination takes GSO packets of its type
/// (`dest_takes_gso`, see [`Vif::takes_gso`]; an uplink never does), else
/// its TCP segments ([`gso::segment`]), each with its checksums computed.
/// Nothing when the packet cannot be cut (it was checked when it came in).
pub(crate) fn frames_for(dest_takes_gso: bool, f: Frame) -> Vec<Frame> {
    let Some(g) = f.gso else {
        return alloc::vec![f];
    };
    if dest_takes_gso {
        return alloc::vec![f];
    }
    gso::segment(&f.data, g)
        .map(|segs| {
            segs.into_iter()
                .map(|data| Frame {
                    data,
                    validated: true,
                    gso: None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The connected rings of a vif.
#[derive(Debug)]
struct Rings {
    tx: RingId,
    rx: RingId,
    /// dom0's ports (the same one twice without split channels).
    tx_port: EvtchnPort,
    rx_port: EvtchnPort,
    /// The front end's ports and ring references (`network-list`).
    fe_tx_port: u32,
    fe_rx_port: u32,
    tx_ref: u32,
    rx_ref: u32,
    /// Private indices: every slot taken is answered in the same pass, so
    /// `req_cons == rsp_prod_pvt` on each ring between passes.
    tx_idx: u32,
    rx_idx: u32,
    /// The front end accepts multi-slot RX packets (`feature-sg`).
    sg: bool,
    /// It takes TCPv4 / TCPv6 GSO packets whole: `feature-gso-tcpv4` /
    /// `-tcpv6` with `feature-sg` and checksum offload for that IP version
    /// (Linux's `xenvif_fix_features` and the netdev rule that TSO needs SG
    /// and checksum offload).
    gso_v4: bool,
    gso_v6: bool,
    /// Halted: the front end published an impossible index.
    broken: bool,
    /// The front end filters multicast (`request-multicast-control`).
    mcast_ctrl: bool,
    /// Its multicast filter, from `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`/`_DEL`
    /// (at most [`MCAST_MAX`]; duplicates kept, as Linux's list).
    mcast: Vec<[u8; 6]>,
    /// Its control ring, if it gave one.
    ctrl: Option<Ctrl>,
}

/// One virtual network interface.
#[derive(Debug)]
pub struct Vif {
    /// The front end's domain.
    pub domid: u16,
    /// The vif number (`device/vif/N`).
    pub devid: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Its bridge.
    pub bridge: String,
    /// The back end's XenbusState.
    pub state: XenbusState,
    /// Counters.
    pub stats: Stats,
    /// Being hot-unplugged: removed once the front end has closed.
    pub detaching: bool,
    rings: Option<Rings>,
    rxq: VecDeque<Frame>,
    rxq_bytes: usize,
}

impl Vif {
    /// `/local/domain/0/backend/vif/D/N`.
    pub fn backend_path(&self) -> String {
        backend_path(self.domid, self.devid)
    }

    /// `/local/domain/D/device/vif/N`.
    pub fn frontend_path(&self) -> String {
        frontend_path(self.domid, self.devid)
    }

    /// Its switch port.
    pub fn port(&self) -> Port {
        port(self.domid, self.devid)
    }

    /// Whether its front end takes GSO packets like `gso` whole.
    pub fn takes_gso(&self, gso: Option<Gso>) -> bool {
        match (gso, self.rings.as_ref()) {
            (Some(g), Some(r)) => match g.kind {
                GsoType::TcpV4 => r.gso_v4,
                GsoType::TcpV6 => r.gso_v6,
            },
            _ => false,
        }
    }

    /// The front end's multicast filter while it asked for one
    /// (`request-multicast-control`): the addresses it added. `None`: it
    /// gets every multicast frame.
    pub fn multicast_filter(&self) -> Option<&[[u8; 6]]> {
        self.rings
            .as_ref()
            .filter(|r| r.mcast_ctrl)
            .map(|r| r.mcast.as_slice())
    }

    /// Its control ring's grant reference and the front end's channel for
    /// it (`ctrl-ring-ref`, `event-channel-ctrl`), if it connected one.
    pub fn ctrl_ring(&self) -> Option<(u32, u32)> {
        let c = self.rings.as_ref()?.ctrl.as_ref()?;
        Some((c.ring_ref, c.fe_port))
    }

    /// The hash settings its control ring made, if it connected one.
    pub fn hash(&self) -> Option<&hash::HashState> {
        self.rings.as_ref()?.ctrl.as_ref().map(|c| &c.hash)
    }

    /// Whether a frame to `dst` passes the front end's multicast filter:
    /// unicast and broadcast always do; multicast does when the front end
    /// filters none, or lists `dst` (Linux's `xenvif_start_xmit` and
    /// `xenvif_mcast_match`).
    fn wants(&self, dst: &[u8]) -> bool {
        let Some(list) = self.multicast_filter() else {
            return true;
        };
        match <[u8; 6]>::try_from(dst) {
            Ok(d) if d[0] & 1 != 0 && d != [0xFF; 6] => list.contains(&d),
            _ => true,
        }
    }

    fn enqueue(&mut self, f: Frame) {
        if f.data.is_empty()
            || self.rxq.len() >= RX_QUEUE_FRAMES
            || self.rxq_bytes + f.data.len() > RX_QUEUE_BYTES
        {
            self.stats.rx_dropped += 1;
            return;
        }
        self.rxq_bytes += f.data.len();
        self.rxq.push_back(f);
    }
}

/// The switch port of vif `devid` of `domid`.
pub fn port(domid: u16, devid: u32) -> Port {
    (u32::from(domid) << 16) | (devid & 0xFFFF)
}

/// `/local/domain/0/backend/vif/D/N`.
pub fn backend_path(domid: u16, devid: u32) -> String {
    format!("{}/backend/vif/{domid}/{devid}", dom_path(0))
}

/// `/local/domain/D/device/vif/N`.
pub fn frontend_path(domid: u16, devid: u32) -> String {
    format!("{}/device/vif/{devid}", dom_path(domid))
}

/// What `network-list` shows of one vif (`xl network-list`'s columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifInfo {
    /// The vif number.
    pub devid: u32,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Its bridge.
    pub bridge: String,
    /// The back end's state.
    pub be_state: u32,
    /// The front end's state (0 when it has none).
    pub fe_state: u32,
    /// The front end's (TX) event channel (-1 before it connected).
    pub evtchn: i64,
    /// Its RX event channel (the TX one without split channels).
    pub evtchn_rx: i64,
    /// The TX and RX ring references (-1 before it connected).
    pub tx_ring_ref: i64,
    /// The RX ring reference.
    pub rx_ring_ref: i64,
    /// The back end's directory.
    pub be_path: String,
    /// Counters.
    pub stats: Stats,
}

/// Why a vif could not be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The domain already has vif N.
    Exists(u32),
    /// Another vif on the bridge has this MAC.
    MacInUse {
        /// The MAC.
        mac: String,
        /// Who has it.
        domid: u16,
    },
    /// The store refused a node.
    Store(xenstored::Error),
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttachError::Exists(n) => write!(f, "the domain already has vif {n}"),
            AttachError::MacInUse { mac, domid } => {
                write!(f, "mac {mac} is already used by a vif of domain {domid}")
            }
            AttachError::Store(e) => write!(f, "xenstore refused the vif's nodes: {e:?}"),
        }
    }
}

/// Every vif dom0 serves, and the bridges joining them.
#[derive(Debug, Default)]
pub struct Netback {
    vifs: Vec<Vif>,
    bridges: BTreeMap<String, Switch>,
    /// dom0's NICs on their bridges ([`uplink`]).
    uplinks: Vec<Uplink>,
    /// The store's generation when the state machines last ran.
    generation: Option<u64>,
    /// Packets refused over all vifs.
    pub errors: u64,
    /// When the switches were last aged.
    last_aged: u64,
}

fn read_state(xs: &mut Xenstored, path: &str) -> Option<XenbusState> {
    XenbusState::parse(&xs.read(path).ok()?)
}

/// A decimal number a front end wrote (`None`: absent or malformed).
fn read_u32(xs: &mut Xenstored, path: &str) -> Option<u32> {
    let v = xs.read(path).ok()?;
    core::str::from_utf8(&v).ok()?.trim().parse().ok()
}

/// `xenbus_read_unsigned(dir, key, 0) != 0`.
fn flag(xs: &mut Xenstored, path: &str) -> bool {
    read_u32(xs, path).is_some_and(|v| v != 0)
}

fn entry(path: String, value: impl Into<Vec<u8>>, perms: Option<Vec<Perm>>) -> Entry {
    Entry {
        path,
        value: value.into(),
        perms,
    }
}

/// The nodes `xl` writes for vif `devid` of `domid` with `mac` on `bridge`,
/// in its order (`libxl__set_xenstore_nic` and `libxl__device_generic_add`).
/// The hot-plug `script` node is left out: dom0 runs no scripts.
pub fn entries(domid: u16, devid: u32, mac: &[u8; 6], bridge: &str) -> Vec<Entry> {
    let fe = frontend_path(domid, devid);
    let be = backend_path(domid, devid);
    let lp = format!("{}/device/vif/{devid}", libxl_path(domid));
    let d = u32::from(domid);
    let fe_perms = || {
        Some(alloc::vec![
            Perm::new(d, Access::None),
            Perm::new(0, Access::Read)
        ])
    };
    // libxl's `ro_front`: in the front end's directory, but dom0's.
    let ro_front = Some(alloc::vec![
        Perm::new(0, Access::None),
        Perm::new(d, Access::Read)
    ]);
    let be_perms = alloc::vec![Perm::new(0, Access::None), Perm::new(d, Access::Read)];
    let m = format!("{}", Mac(mac));
    alloc::vec![
        entry(format!("{lp}/frontend"), fe.as_bytes(), None),
        entry(format!("{lp}/backend"), be.as_bytes(), None),
        entry(fe.clone(), "", fe_perms()),
        entry(format!("{fe}/backend"), be.as_bytes(), fe_perms()),
        entry(format!("{fe}/backend-id"), "0", fe_perms()),
        entry(format!("{fe}/state"), "1", fe_perms()),
        entry(format!("{fe}/handle"), format!("{devid}"), fe_perms()),
        entry(format!("{fe}/mac"), m.as_bytes(), fe_perms()),
        entry(format!("{fe}/mtu"), format!("{MTU}"), ro_front),
        entry(be.clone(), "", Some(be_perms)),
        entry(format!("{be}/frontend"), fe.as_bytes(), None),
        entry(format!("{be}/frontend-id"), format!("{domid}"), None),
        entry(format!("{be}/online"), "1", None),
        entry(format!("{be}/state"), "1", None),
        entry(format!("{be}/mac"), m.as_bytes(), None),
        entry(format!("{be}/bridge"), bridge.as_bytes(), None),
        entry(format!("{be}/handle"), format!("{devid}"), None),
        entry(format!("{be}/type"), "vif", None),
    ]
}

/// The features Linux's netback probe writes, in its order, as far as this
/// back end implements them (no XDP headroom).
pub const FEATURES: &[(&str, &str)] = &[
    ("feature-sg", "1"),
    ("feature-gso-tcpv4", "1"),
    ("feature-gso-tcpv6", "1"),
    ("feature-ipv6-csum-offload", "1"),
    ("feature-rx-copy", "1"),
    ("feature-rx-flip", "0"),
    ("feature-multicast-control", "1"),
    ("feature-dynamic-multicast-control", "1"),
    ("feature-split-event-channels", "1"),
    ("multi-queue-max-queues", "1"),
    ("feature-ctrl-ring", "1"),
];

impl Netback {
    /// No vifs yet.
    pub fn new() -> Self {
        Netback::default()
    }

    /// The vifs of `domid` (all of them for `None`).
    pub fn vifs(&self, domid: Option<u16>) -> impl Iterator<Item = &Vif> {
        self.vifs
            .iter()
            .filter(move |v| domid.is_none_or(|d| v.domid == d))
    }

    /// The bridges and their ports.
    pub fn bridges(&self) -> impl Iterator<Item = (&str, &Switch)> {
        self.bridges.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The MAC vif `devid` of a domain gets when its config names none: from
    /// `uuid` and `devid`, in Xen's range (libxl takes random bytes).
    pub fn make_mac(uuid: &[u8; 16], devid: u32) -> [u8; 6] {
        let mut seed = u64::from(devid);
        for b in uuid {
            seed = seed
                .wrapping_mul(0x100_0000_01B3)
                .wrapping_add(u64::from(*b));
        }
        control_proto::vif::xen_mac(seed)
    }

    /// Gives domain `domid` vif `devid` as `spec` says (its MAC already
    /// chosen: `mac`), writes the toolstack's nodes and the back end's
    /// features, joins the bridge, and goes to InitWait, as `xl
    /// network-attach` and netback's probe do.
    pub fn attach(
        &mut self,
        xs: &mut Xenstored,
        domid: u16,
        devid: u32,
        spec: &VifSpec,
        mac: [u8; 6],
    ) -> Result<(), AttachError> {
        if self
            .vifs
            .iter()
            .any(|v| v.domid == domid && v.devid == devid)
        {
            return Err(AttachError::Exists(devid));
        }
        if let Some(o) = self
            .vifs
            .iter()
            .find(|v| v.mac == mac && v.bridge == spec.bridge)
        {
            return Err(AttachError::MacInUse {
                mac: format!("{}", Mac(&mac)),
                domid: o.domid,
            });
        }
        crate::xenstore::apply(xs, &entries(domid, devid, &mac, &spec.bridge))
            .map_err(AttachError::Store)?;
        let be = backend_path(domid, devid);
        for (k, v) in FEATURES {
            xs.write(&format!("{be}/{k}"), v.as_bytes())
                .map_err(AttachError::Store)?;
        }
        let mut vif = Vif {
            domid,
            devid,
            mac,
            bridge: spec.bridge.clone(),
            state: XenbusState::Initialising,
            stats: Stats::default(),
            detaching: false,
            rings: None,
            rxq: VecDeque::new(),
            rxq_bytes: 0,
        };
        self.bridges
            .entry(spec.bridge.clone())
            .or_default()
            .add_port(vif.port());
        switch_state(xs, &mut vif, XenbusState::InitWait);
        let _ = xs.write(&format!("{be}/hotplug-status"), b"connected");
        self.vifs.push(vif);
        self.generation = None;
        Ok(())
    }

    /// Takes every vif of `domid` down (its domain is being destroyed):
    /// rings unmapped, channels closed, ports off their bridges, the back
    /// end's directory removed.
    pub fn detach_domain<H: Hypervisor>(&mut self, xs: &mut Xenstored, hv: &mut H, domid: u16) {
        while let Some(i) = self.vifs.iter().position(|v| v.domid == domid) {
            let mut v = self.vifs.remove(i);
            self.leave_bridge(&v);
            disconnect(hv, &mut v);
            let _ = xs.rm(&v.backend_path());
        }
        let _ = xs.rm(&format!("{}/backend/vif/{domid}", dom_path(0)));
        let _ = xs.rm(&format!("{}/error/backend/vif/{domid}", dom_path(0)));
        self.generation = None;
    }

    fn leave_bridge(&mut self, v: &Vif) {
        if let Some(s) = self.bridges.get_mut(&v.bridge) {
            s.remove_port(v.port());
            if s.is_empty() {
                self.bridges.remove(&v.bridge);
            }
        }
    }

    /// Hot-unplugs vif `devid` of `domid` (`xl network-detach`): the back
    /// end goes to Closing with `online` 0, and the vif is removed once the
    /// front end has closed (at once if it never connected). Returns false
    /// when the domain has no such vif.
    pub fn detach<H: Hypervisor>(
        &mut self,
        xs: &mut Xenstored,
        hv: &mut H,
        domid: u16,
        devid: u32,
    ) -> bool {
        let Some(i) = self
            .vifs
            .iter()
            .position(|v| v.domid == domid && v.devid == devid)
        else {
            return false;
        };
        let v = &mut self.vifs[i];
        v.detaching = true;
        let _ = xs.write(&format!("{}/online", v.backend_path()), b"0");
        let fe = read_state(xs, &format!("{}/state", v.frontend_path()));
        if v.state == XenbusState::Connected {
            disconnect(hv, v);
            switch_state(xs, v, XenbusState::Closing);
        }
        if !matches!(
            fe,
            Some(XenbusState::Initialised | XenbusState::Connected | XenbusState::Closing)
        ) {
            self.remove(xs, hv, i);
        }
        self.generation = None;
        true
    }

    fn remove<H: Hypervisor>(&mut self, xs: &mut Xenstored, hv: &mut H, i: usize) {
        let mut v = self.vifs.remove(i);
        self.leave_bridge(&v);
        disconnect(hv, &mut v);
        let _ = xs.rm(&v.backend_path());
        let _ = xs.rm(&v.frontend_path());
        let _ = xs.rm(&format!("{}/device/vif/{}", libxl_path(v.domid), v.devid));
    }

    /// What `network-list` shows for `domid`.
    pub fn list(&self, xs: &mut Xenstored, domid: u16) -> Vec<VifInfo> {
        self.vifs(Some(domid))
            .map(|v| {
                let r = v.rings.as_ref();
                VifInfo {
                    devid: v.devid,
                    mac: format!("{}", Mac(&v.mac)),
                    bridge: v.bridge.clone(),
                    be_state: v.state as u32,
                    fe_state: read_state(xs, &format!("{}/state", v.frontend_path()))
                        .map_or(0, |s| s as u32),
                    evtchn: r.map_or(-1, |r| i64::from(r.fe_tx_port)),
                    evtchn_rx: r.map_or(-1, |r| i64::from(r.fe_rx_port)),
                    tx_ring_ref: r.map_or(-1, |r| i64::from(r.tx_ref)),
                    rx_ring_ref: r.map_or(-1, |r| i64::from(r.rx_ref)),
                    be_path: v.backend_path(),
                    stats: v.stats,
                }
            })
            .collect()
    }

    /// Runs the handshake of every vif whose front end changed something in
    /// the store, takes the packets every connected front end sent and
    /// switches them, then fills the RX buffers front ends posted. Returns
    /// whether work is left (poll again soon).
    pub fn poll<H: Hypervisor>(&mut self, xs: &mut Xenstored, hv: &mut H) -> bool {
        if self.vifs.is_empty() {
            return false;
        }
        if self.generation != Some(xs.generation()) {
            for v in &mut self.vifs {
                frontend_changed(xs, hv, v);
            }
            while let Some(i) = self.vifs.iter().position(|v| {
                v.detaching && matches!(v.state, XenbusState::Closed | XenbusState::InitWait)
            }) {
                self.remove(xs, hv, i);
            }
            self.generation = Some(xs.generation());
        }
        let now = hv.now_ns();
        if now.saturating_sub(self.last_aged) > switch::AGEING_NS {
            self.bridges.values_mut().for_each(|s| s.age(now));
            self.last_aged = now;
        }
        let mut more = false;
        for v in &mut self.vifs {
            if v.state != XenbusState::Connected {
                continue;
            }
            let dom = DomId(v.domid);
            let Some(c) = v.rings.as_mut().and_then(|r| r.ctrl.as_mut()) else {
                continue;
            };
            match ctrl::serve(hv, dom, MAX_QUEUES, c) {
                CtrlPass::Done => {}
                CtrlPass::More => more = true,
                CtrlPass::Broken => {
                    // Halt the whole vif, as an impossible data ring index does.
                    if let Some(r) = v.rings.as_mut() {
                        r.broken = true;
                    }
                    fatal(
                        xs,
                        v,
                        "the front end published an impossible control ring index; ring halted",
                    );
                }
            }
        }
        for i in 0..self.vifs.len() {
            if self.vifs[i].state != XenbusState::Connected {
                continue;
            }
            let (frames, left, halted) = serve_tx(hv, &mut self.vifs[i]);
            more |= left;
            if halted {
                fatal(
                    xs,
                    &mut self.vifs[i],
                    "the front end published an impossible TX ring index; ring halted",
                );
            }
            let from = self.vifs[i].port();
            let bridge = self.vifs[i].bridge.clone();
            for f in frames {
                self.switch_frame(&bridge, from, f, now);
            }
        }
        for v in &mut self.vifs {
            if v.state == XenbusState::Connected && !v.rxq.is_empty() {
                let halted = serve_rx(hv, v, &mut more);
                if halted {
                    fatal(
                        xs,
                        v,
                        "the front end published an impossible RX ring index; ring halted",
                    );
                }
            }
        }
        self.errors = self.vifs.iter().map(|v| v.stats.tx_errors).sum();
        more
    }

    /// Sends `f`, which came in on `from`, where `bridge`'s switch says.
    fn switch_frame(&mut self, bridge: &str, from: Port, f: Frame, now: u64) {
        let Some(sw) = self.bridges.get_mut(bridge) else {
            return;
        };
        match sw.forward(from, &f.data, now) {
            Forward::Drop => {}
            Forward::One(p) => {
                if let Some(v) = self.vifs.iter_mut().find(|v| v.port() == p) {
                    deliver(v, f);
                } else if let Some(u) = self.uplinks.iter_mut().find(|u| u.port() == p) {
                    u.enqueue(f);
                }
            }
            Forward::Flood(ps) => {
                for v in self.vifs.iter_mut().filter(|v| ps.contains(&v.port())) {
                    deliver(v, f.clone());
                }
                for u in self.uplinks.iter_mut().filter(|u| ps.contains(&u.port())) {
                    u.enqueue(f.clone());
                }
            }
        }
    }
}

/// Queues `f` for `v` if its front end is there to take it (cut into
/// segments unless it takes GSO: [`frames_for`]).
fn deliver(v: &mut Vif, f: Frame) {
    if !v.wants(f.data.get(..6).unwrap_or_default()) {
        v.stats.rx_mcast_filtered += 1;
        return;
    }
    if v.state == XenbusState::Connected && v.rings.as_ref().is_some_and(|r| !r.broken) {
        for f in frames_for(v.takes_gso(f.gso), f) {
            v.enqueue(f);
        }
    } else {
        v.stats.rx_dropped += 1;
    }
}

fn switch_state(xs: &mut Xenstored, v: &mut Vif, state: XenbusState) {
    v.state = state;
    let _ = xs.write(
        &format!("{}/state", v.backend_path()),
        state.as_str().as_bytes(),
    );
}

/// `xenbus_dev_fatal`: the reason under dom0's `error/`, the back end to Closing.
fn fatal(xs: &mut Xenstored, v: &mut Vif, msg: &str) {
    let path = format!(
        "{}/error/backend/vif/{}/{}/error",
        dom_path(0),
        v.domid,
        v.devid
    );
    let _ = xs.write(&path, msg.as_bytes());
    switch_state(xs, v, XenbusState::Closing);
}

/// Unmaps the rings, closes the channels and empties the RX queue of `v`.
fn disconnect<H: Hypervisor>(hv: &mut H, v: &mut Vif) {
    if let Some(r) = v.rings.take() {
        release(hv, r);
    }
    v.rxq.clear();
    v.rxq_bytes = 0;
}

/// Closes the channels and unmaps the rings of `r` (the control ring's too).
fn release<H: Hypervisor>(hv: &mut H, r: Rings) {
    if let Some(c) = r.ctrl {
        hv.close(c.port);
        hv.unmap_grant_ring(c.ring);
    }
    hv.close(r.tx_port);
    if r.rx_port != r.tx_port {
        hv.close(r.rx_port);
    }
    hv.unmap_grant_ring(r.tx);
    hv.unmap_grant_ring(r.rx);
}

/// The back end's reaction to the front end's state (Linux's `frontend_changed`).
fn frontend_changed<H: Hypervisor>(xs: &mut Xenstored, hv: &mut H, v: &mut Vif) {
    let fe = v.frontend_path();
    match read_state(xs, &format!("{fe}/state")) {
        Some(XenbusState::Initialising) if v.state == XenbusState::Closed => {
            switch_state(xs, v, XenbusState::InitWait);
        }
        Some(XenbusState::Initialised | XenbusState::Connected)
            if !matches!(
                v.state,
                XenbusState::Connected | XenbusState::Closing | XenbusState::Closed
            ) =>
        {
            disconnect(hv, v);
            match connect(xs, hv, v) {
                Ok(r) => {
                    v.rings = Some(r);
                    switch_state(xs, v, XenbusState::Connected);
                }
                Err(msg) => fatal(xs, v, &msg),
            }
        }
        Some(XenbusState::Closing) if v.state != XenbusState::Closing => {
            disconnect(hv, v);
            switch_state(xs, v, XenbusState::Closing);
        }
        Some(XenbusState::Closed) | None if v.state != XenbusState::Closed => {
            disconnect(hv, v);
            switch_state(xs, v, XenbusState::Closed);
        }
        _ => {
            // `feature-dynamic-multicast-control`: the front end may turn
            // its filter on or off at any time (Linux's
            // `xen_mcast_ctrl_changed` watch).
            if let Some(r) = v.rings.as_mut() {
                r.mcast_ctrl = flag(xs, &format!("{fe}/request-multicast-control"));
            }
        }
    }
}

/// Reads the front end's rings, channels and features and connects them
/// (Linux's `connect` and `connect_data_rings`). On failure nothing stays
/// mapped or bound.
fn connect<H: Hypervisor>(xs: &mut Xenstored, hv: &mut H, v: &Vif) -> Result<Rings, String> {
    let fe = v.frontend_path();
    if xs.read(&format!("{fe}/multi-queue-num-queues")).is_ok() {
        match read_u32(xs, &format!("{fe}/multi-queue-num-queues")) {
            Some(1) => {}
            n => {
                return Err(format!(
                    "guest requested {n:?} queues, exceeding the maximum of {MAX_QUEUES}"
                ));
            }
        }
    }
    if !flag(xs, &format!("{fe}/request-rx-copy")) {
        return Err(format!(
            "{fe}/request-rx-copy: the back end only copies (no page flipping)"
        ));
    }
    if !flag(xs, &format!("{fe}/feature-rx-notify")) {
        return Err("feature-rx-notify is mandatory".into());
    }
    let sg = flag(xs, &format!("{fe}/feature-sg"));
    let ip_csum = !flag(xs, &format!("{fe}/feature-no-csum-offload"));
    let ipv6_csum = flag(xs, &format!("{fe}/feature-ipv6-csum-offload"));
    let gso_v4 = sg && ip_csum && flag(xs, &format!("{fe}/feature-gso-tcpv4"));
    let gso_v6 = sg && ipv6_csum && flag(xs, &format!("{fe}/feature-gso-tcpv6"));
    let mcast_ctrl = flag(xs, &format!("{fe}/request-multicast-control"));
    // The control ring (Linux's `connect_ctrl_ring`): absent (or not a
    // number) is no control ring; a ring without its channel is fatal.
    let ctrl_keys = match read_u32(xs, &format!("{fe}/ctrl-ring-ref")) {
        Some(r) => Some((
            r,
            read_u32(xs, &format!("{fe}/event-channel-ctrl"))
                .ok_or_else(|| format!("reading {fe}/event-channel-ctrl"))?,
        )),
        None => None,
    };
    let tx_ref = read_u32(xs, &format!("{fe}/tx-ring-ref"))
        .ok_or_else(|| format!("reading {fe}/tx-ring-ref"))?;
    let rx_ref = read_u32(xs, &format!("{fe}/rx-ring-ref"))
        .ok_or_else(|| format!("reading {fe}/rx-ring-ref"))?;
    let (fe_tx_port, fe_rx_port) = match read_u32(xs, &format!("{fe}/event-channel-tx")) {
        Some(t) => (
            t,
            read_u32(xs, &format!("{fe}/event-channel-rx"))
                .ok_or_else(|| format!("reading {fe}/event-channel-rx"))?,
        ),
        None => {
            let p = read_u32(xs, &format!("{fe}/event-channel"))
                .ok_or_else(|| format!("reading {fe}/event-channel"))?;
            (p, p)
        }
    };
    let dom = DomId(v.domid);
    let tx = hv
        .map_grant_ring(dom, &[GrantRef(tx_ref)])
        .map_err(|e| format!("mapping the TX ring (grant {tx_ref}): {e:?}"))?;
    let rx = match hv.map_grant_ring(dom, &[GrantRef(rx_ref)]) {
        Ok(r) => r,
        Err(e) => {
            hv.unmap_grant_ring(tx);
            return Err(format!("mapping the RX ring (grant {rx_ref}): {e:?}"));
        }
    };
    let undo = |hv: &mut H, ports: &[EvtchnPort]| {
        for p in ports {
            hv.close(*p);
        }
        hv.unmap_grant_ring(tx);
        hv.unmap_grant_ring(rx);
    };
    let idx = |hv: &H, id: RingId| -> Option<u32> {
        Some(NetifTxBackRing::new(hv.ring(id)?).ok()?.req_cons())
    };
    let (Some(tx_idx), Some(rx_idx)) = (
        idx(hv, tx),
        hv.ring(rx)
            .and_then(|p| NetifRxBackRing::new(p).ok())
            .map(|r| r.req_cons()),
    ) else {
        undo(hv, &[]);
        return Err("a ring is unusable".into());
    };
    let tx_port = match hv.bind_backend(dom, EvtchnPort(fe_tx_port)) {
        Ok(p) => p,
        Err(e) => {
            undo(hv, &[]);
            return Err(format!("binding event channel {fe_tx_port}: {e:?}"));
        }
    };
    let rx_port = if fe_rx_port == fe_tx_port {
        tx_port
    } else {
        match hv.bind_backend(dom, EvtchnPort(fe_rx_port)) {
            Ok(p) => p,
            Err(e) => {
                undo(hv, &[tx_port]);
                return Err(format!("binding event channel {fe_rx_port}: {e:?}"));
            }
        }
    };
    let mut rings = Rings {
        tx,
        rx,
        tx_port,
        rx_port,
        fe_tx_port,
        fe_rx_port,
        tx_ref,
        rx_ref,
        tx_idx,
        rx_idx,
        sg,
        gso_v4,
        gso_v6,
        broken: false,
        mcast_ctrl,
        mcast: Vec::new(),
        ctrl: None,
    };
    if let Some((ring_ref, port)) = ctrl_keys {
        match connect_ctrl(hv, dom, ring_ref, port) {
            Ok(c) => rings.ctrl = Some(c),
            Err(e) => {
                release(hv, rings);
                return Err(e);
            }
        }
    }
    Ok(rings)
}

/// Maps the control ring `ring_ref` of `dom` and binds its channel `port`
/// (Linux's `xenvif_connect_ctrl`): the back end's indices start at the
/// ring's `rsp_prod`, and a ring with more requests than slots past it is
/// refused. On failure nothing stays mapped or bound.
fn connect_ctrl<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    ring_ref: u32,
    port: u32,
) -> Result<Ctrl, String> {
    let fail = || format!("mapping shared-frame {ring_ref} port {port}");
    let ring = hv
        .map_grant_ring(dom, &[GrantRef(ring_ref)])
        .map_err(|e| format!("{}: {e:?}", fail()))?;
    let idx = hv.ring(ring).and_then(|p| {
        // `req_prod` and `rsp_prod`: words 0 and 2 of the shared header
        // (`hypercall_abi::io::ring::SringHeader`).
        let req = p.first()?.load(core::sync::atomic::Ordering::Acquire);
        let rsp = p.get(2)?.load(core::sync::atomic::Ordering::Acquire);
        (req.wrapping_sub(rsp) <= XEN_NETIF_CTRL_RING_SIZE).then_some(rsp)
    });
    let Some(idx) = idx else {
        hv.unmap_grant_ring(ring);
        return Err(format!("{}: impossible ring indices", fail()));
    };
    let bound = match hv.bind_backend(dom, EvtchnPort(port)) {
        Ok(p) => p,
        Err(e) => {
            hv.unmap_grant_ring(ring);
            return Err(format!("{}: {e:?}", fail()));
        }
    };
    Ok(Ctrl {
        ring,
        port: bound,
        ring_ref,
        fe_port: port,
        idx,
        hash: hash::HashState::default(),
    })
}

/// Takes up to [`TX_PACKETS_PER_POLL`] packets from `v`'s TX ring, copies
/// the good ones in and answers every slot. Returns the frames, whether
/// packets are left, and whether the ring was halted.
fn serve_tx<H: Hypervisor>(hv: &mut H, v: &mut Vif) -> (Vec<Frame>, bool, bool) {
    let dom = DomId(v.domid);
    let Some(r) = v.rings.as_mut() else {
        return (Vec::new(), false, false);
    };
    if r.broken {
        return (Vec::new(), false, false);
    }
    // Copy the published slots out (the front end cannot change them under
    // the checks).
    let mut slots: Vec<NetifTxRequest> = Vec::new();
    {
        let Some(page) = hv.ring(r.tx) else {
            return (Vec::new(), false, false);
        };
        let Ok(mut back) = NetifTxBackRing::resume(page, r.tx_idx, r.tx_idx) else {
            return (Vec::new(), false, false);
        };
        loop {
            match back.take_request() {
                Ok(Some(s)) => slots.push(s),
                Ok(None) => break,
                Err(_) => {
                    r.broken = true;
                    return (Vec::new(), false, true);
                }
            }
        }
    }
    let mut packets = Vec::new();
    let mut at = 0usize;
    while packets.len() < TX_PACKETS_PER_POLL {
        let Some(p) = tx::parse(&slots[at..]) else {
            break;
        };
        at += p.slots.len();
        packets.push(p);
    }
    let left = at < slots.len();
    if packets.is_empty() {
        return (Vec::new(), false, false);
    }
    // Copy every good packet in with one grant copy.
    let mut total = 0usize;
    let mut segs: Vec<GrantSeg> = Vec::new();
    let mut owner: Vec<usize> = Vec::new();
    for (k, p) in packets.iter().enumerate() {
        if let Verdict::Send { frags, len, .. } = &p.verdict {
            let mut off = total;
            for f in frags {
                segs.push(GrantSeg {
                    gref: f.gref,
                    offset: f.offset,
                    len: f.len,
                    // An empty slot (its reference checked, nothing copied) points at
                    // the packet's start, inside the buffer, not past its end.
                    buf_off: if f.len == 0 { total } else { off },
                });
                owner.push(k);
                off += usize::from(f.len);
            }
            total += len;
        }
    }
    let mut buf = alloc::vec![0u8; total];
    let mut failed = alloc::vec![false; packets.len()];
    if !segs.is_empty() {
        let mut st = alloc::vec![0i16; segs.len()];
        let ok = hv.grant_copy(dom, false, &mut buf, &segs, &mut st).is_ok();
        for (k, s) in owner.iter().zip(&st) {
            if !ok || *s != 0 {
                failed[*k] = true;
            }
        }
    }
    let mut frames = Vec::new();
    let mut rsps: Vec<NetifTxResponse> = Vec::with_capacity(at);
    let mut off = 0usize;
    for (k, p) in packets.iter().enumerate() {
        let status = match &p.verdict {
            Verdict::Send {
                len, flags, gso, ..
            } => {
                let mut data = buf[off..off + len].to_vec();
                off += len;
                let checked = match gso {
                    // A GSO packet's checksum is partial whatever its flags
                    // (Linux's netback forces CHECKSUM_PARTIAL).
                    Some(g) => gso::prepare_whole(&mut data, *g).map_err(TxError::BadGso),
                    None => Ok(()),
                };
                if failed[k] || checked.is_err() {
                    NETIF_RSP_ERROR
                } else {
                    let validated = gso.is_some()
                        || flags & NETTXF_CSUM_BLANK != 0 && csum::fill(&mut data)
                        || flags & NETTXF_DATA_VALIDATED != 0;
                    v.stats.tx_packets += 1;
                    v.stats.tx_bytes += *len as u64;
                    if gso.is_some() {
                        v.stats.tx_gso += 1;
                    }
                    frames.push(Frame {
                        data,
                        validated,
                        gso: *gso,
                    });
                    NETIF_RSP_OKAY
                }
            }
            // Linux's `xenvif_mcast_add`: a full list refuses the address
            // (-ENOSPC, answered NETIF_RSP_ERROR) and keeps filtering.
            Verdict::Mcast(McastOp::Add(a)) if r.mcast.len() < MCAST_MAX => {
                r.mcast.push(*a);
                NETIF_RSP_OKAY
            }
            Verdict::Mcast(McastOp::Add(_)) => NETIF_RSP_ERROR,
            Verdict::Mcast(McastOp::Del(a)) => {
                if let Some(i) = r.mcast.iter().position(|m| m == a) {
                    r.mcast.remove(i);
                }
                NETIF_RSP_OKAY
            }
            Verdict::Drop(_) => NETIF_RSP_ERROR,
        };
        if status == NETIF_RSP_ERROR && !matches!(p.verdict, Verdict::Mcast(_)) {
            v.stats.tx_errors += 1;
        }
        for s in &p.slots {
            rsps.push(match s {
                Some(id) => NetifTxResponse { id: *id, status },
                None => NetifTxResponse {
                    id: 0,
                    status: NETIF_RSP_NULL,
                },
            });
        }
    }
    let Some(page) = hv.ring(r.tx) else {
        return (frames, false, false);
    };
    let n = u32::try_from(at).unwrap_or(u32::MAX);
    let Ok(mut back) = NetifTxBackRing::resume(page, r.tx_idx, r.tx_idx.wrapping_add(n)) else {
        return (frames, false, false);
    };
    for rsp in &rsps {
        let _ = back.put_response(rsp);
    }
    r.tx_idx = back.rsp_prod_pvt();
    let notify = back.push_responses();
    let mut halted = false;
    let more = left
        || match back.final_check_for_requests() {
            Ok(m) => m,
            Err(_) => {
                r.broken = true;
                halted = true;
                false
            }
        };
    if notify {
        hv.notify(r.tx_port);
    }
    (frames, more, halted)
}

/// Fills the RX buffers `v`'s front end posted with queued frames. Returns
/// whether the ring was halted; sets `again` when frames and buffers are
/// both left (buffers came while this pass ran).
fn serve_rx<H: Hypervisor>(hv: &mut H, v: &mut Vif, again: &mut bool) -> bool {
    let dom = DomId(v.domid);
    let Some(r) = v.rings.as_mut() else {
        return false;
    };
    if r.broken {
        return false;
    }
    let posted = {
        let Some(page) = hv.ring(r.rx) else {
            return false;
        };
        let Ok(back) = NetifRxBackRing::resume(page, r.rx_idx, r.rx_idx) else {
            return false;
        };
        match back.unconsumed_requests() {
            Ok(n) => n as usize,
            Err(_) => {
                r.broken = true;
                return true;
            }
        }
    };
    // Frames that fit the buffers posted, in order.
    // Each with its extras: a GSO frame's, then a hash (Linux's rx.c order).
    let mut batch: Vec<(Frame, Vec<NetifExtraInfo>)> = Vec::new();
    let mut need = 0usize;
    while let Some(f) = v.rxq.front() {
        let pages = f.data.len().div_ceil(PAGE);
        let mut extras: Vec<NetifExtraInfo> = Vec::new();
        if let Some(g) = f.gso {
            extras.push(NetifExtraGso::new(g.mss, g.kind.to_xen()).into());
        }
        if let Some(h) = r.ctrl.as_ref().and_then(|c| c.hash.extra(&f.data)) {
            extras.push(NetifExtraHash::into(h));
        }
        let slots = pages + extras.len();
        if pages > 1 && !r.sg {
            // Too big for one buffer and the front end takes no more.
            v.stats.rx_dropped += 1;
            v.rxq_bytes -= f.data.len();
            v.rxq.pop_front();
            continue;
        }
        if need + slots > posted {
            break;
        }
        need += slots;
        v.rxq_bytes -= f.data.len();
        if let Some(f) = v.rxq.pop_front() {
            batch.push((f, extras));
        }
    }
    let mut reqs = Vec::with_capacity(need);
    {
        let Some(page) = hv.ring(r.rx) else {
            return false;
        };
        let Ok(mut back) = NetifRxBackRing::resume(page, r.rx_idx, r.rx_idx) else {
            return false;
        };
        if batch.is_empty() {
            // Ask for a notification when buffers come (`feature-rx-notify`).
            if back.final_check_for_requests().is_err() {
                r.broken = true;
                return true;
            }
            return false;
        }
        for _ in 0..need {
            match back.take_request() {
                Ok(Some(q)) => reqs.push(q),
                _ => {
                    r.broken = true;
                    return true;
                }
            }
        }
    }
    // One grant copy for the whole batch, from one buffer. A frame's
    // extra-info slots follow its first data slot (netif.h) and get no data.
    let mut buf: Vec<u8> = Vec::new();
    let mut segs: Vec<GrantSeg> = Vec::with_capacity(need);
    let mut ri = 0usize;
    for (f, extras) in &batch {
        let extra = extras.len();
        for (k, chunk) in f.data.chunks(PAGE).enumerate() {
            let q = ri + k + if k > 0 { extra } else { 0 };
            segs.push(GrantSeg {
                gref: reqs[q].gref,
                offset: 0,
                len: u16::try_from(chunk.len()).unwrap_or(0),
                buf_off: buf.len(),
            });
            buf.extend_from_slice(chunk);
        }
        ri += f.data.len().div_ceil(PAGE) + extra;
    }
    let mut st = alloc::vec![0i16; segs.len()];
    let ok = hv.grant_copy(dom, true, &mut buf, &segs, &mut st).is_ok();
    let Some(page) = hv.ring(r.rx) else {
        return false;
    };
    let n = u32::try_from(need).unwrap_or(u32::MAX);
    let Ok(mut back) = NetifRxBackRing::resume(page, r.rx_idx, r.rx_idx.wrapping_add(n)) else {
        return false;
    };
    let mut si = 0usize;
    let mut qi = 0usize;
    for (f, extras) in &batch {
        let n = f.data.len().div_ceil(PAGE);
        let good = ok && st[si..(si + n).min(st.len())].iter().all(|s| *s == 0);
        for (k, chunk) in f.data.chunks(PAGE).enumerate() {
            let mut flags = 0;
            if k + 1 < n {
                flags |= NETRXF_MORE_DATA;
            }
            if k == 0 && f.gso.is_some() {
                // Linux's rx.c for CHECKSUM_PARTIAL.
                flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
            } else if k == 0 && f.validated {
                flags |= NETRXF_DATA_VALIDATED;
            }
            if k == 0 && !extras.is_empty() {
                flags |= NETRXF_EXTRA_INFO;
            }
            let status = if good {
                i16::try_from(chunk.len()).unwrap_or(NETIF_RSP_ERROR)
            } else {
                NETIF_RSP_ERROR
            };
            let _ = back.put_response(&NetifRxResponse {
                id: reqs[qi].id,
                offset: 0,
                flags,
                status,
            });
            qi += 1;
            if k == 0 {
                // The extra-info slots: each response is the extra itself,
                // in the slot of the request it consumed (no id), chained
                // by XEN_NETIF_EXTRA_FLAG_MORE (Linux's
                // `xenvif_rx_extra_slot`).
                for (j, x) in extras.iter().enumerate() {
                    let mut x = *x;
                    if j + 1 < extras.len() {
                        x.flags |= XEN_NETIF_EXTRA_FLAG_MORE;
                    }
                    let rsp: NetifRxResponse = zerocopy::transmute!(x);
                    let _ = back.put_response(&rsp);
                    qi += 1;
                }
            }
        }
        si += n;
        if good {
            v.stats.rx_packets += 1;
            v.stats.rx_bytes += f.data.len() as u64;
            if f.gso.is_some() {
                v.stats.rx_gso += 1;
            }
        } else {
            v.stats.rx_dropped += 1;
        }
    }
    r.rx_idx = back.rsp_prod_pvt();
    let notify = back.push_responses();
    let mut halted = false;
    if !v.rxq.is_empty() {
        // Frames left and the buffers used up: ask to hear of the next ones
        // (`feature-rx-notify`).
        match back.final_check_for_requests() {
            Ok(more) => *again |= more,
            Err(_) => {
                r.broken = true;
                halted = true;
            }
        }
    }
    if notify {
        hv.notify(r.rx_port);
    }
    halted
}

#[cfg(test)]
mod tests;
