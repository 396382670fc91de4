//! The XenBus handshake of a net front end, as Linux's `xen-netfront`
//! (`talk_to_netback`) does it with one queue.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::blkfront::handshake::{HandshakeError, Read, parse_int_auto};

/// Keys.
pub mod keys {
    /// Front end: the back end's directory.
    pub const BACKEND: &str = "backend";
    /// Front end: the back end's domain.
    pub const BACKEND_ID: &str = "backend-id";
    /// Front end: the MAC address (`aa:bb:cc:dd:ee:ff`).
    pub const MAC: &str = "mac";
    /// Both: the XenBus state.
    pub const STATE: &str = "state";
    /// Back end: it fills RX buffers by copying (required).
    pub const FEATURE_RX_COPY: &str = "feature-rx-copy";
    /// Back end: it takes multi-slot TX packets.
    pub const FEATURE_SG: &str = "feature-sg";
    /// Back end: separate TX and RX channels are possible.
    pub const FEATURE_SPLIT: &str = "feature-split-event-channels";
    /// Back end: most queues.
    pub const MAX_QUEUES: &str = "multi-queue-max-queues";
}

/// What the front end's directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendDetails {
    /// The back end's directory.
    pub backend: String,
    /// The back end's domain.
    pub backend_id: u16,
    /// Our MAC address.
    pub mac: [u8; 6],
}

/// What the back end offers (read at InitWait).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BackendFeatures {
    /// `feature-sg`: TX packets may span slots.
    pub sg: bool,
    /// `feature-split-event-channels`.
    pub split: bool,
    /// `multi-queue-max-queues` (1 when absent).
    pub max_queues: u32,
}

/// Parses `aa:bb:cc:dd:ee:ff` (as libxl writes it; `-` also taken).
pub fn parse_mac(v: &[u8]) -> Option<[u8; 6]> {
    let s = core::str::from_utf8(v)
        .ok()?
        .trim_matches(|c: char| c.is_whitespace() || c == '\0');
    let mut out = [0u8; 6];
    let mut n = 0usize;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6).then_some(out)
}

fn get<E>(read: &mut Read<'_, E>, key: &'static str) -> Result<Option<Vec<u8>>, HandshakeError<E>> {
    read(key).map_err(HandshakeError::Store)
}

fn lossy(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Reads the vif's directory: `backend-id`, `backend`, `mac`.
pub fn read_frontend<E>(read: &mut Read<'_, E>) -> Result<FrontendDetails, HandshakeError<E>> {
    let id = get(read, keys::BACKEND_ID)?.ok_or(HandshakeError::Missing(keys::BACKEND_ID))?;
    let backend_id = parse_int_auto(&id)
        .filter(|d| *d < u64::from(hypercall_abi::DomId::FIRST_RESERVED.0))
        .and_then(|d| u16::try_from(d).ok())
        .ok_or_else(|| HandshakeError::Invalid {
            key: keys::BACKEND_ID,
            value: lossy(&id),
        })?;
    let path = get(read, keys::BACKEND)?.ok_or(HandshakeError::Missing(keys::BACKEND))?;
    let backend = lossy(&path)
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_string();
    if backend.is_empty() {
        return Err(HandshakeError::Invalid {
            key: keys::BACKEND,
            value: backend,
        });
    }
    let m = get(read, keys::MAC)?.ok_or(HandshakeError::Missing(keys::MAC))?;
    let mac = parse_mac(&m).ok_or_else(|| HandshakeError::Invalid {
        key: keys::MAC,
        value: lossy(&m),
    })?;
    Ok(FrontendDetails {
        backend,
        backend_id,
        mac,
    })
}

/// Reads the back end's features (`xenbus_read_unsigned`: a missing or
/// malformed key is its default). A back end that cannot copy into RX
/// buffers is refused, as Linux's netfront refuses it.
pub fn read_backend<E>(read: &mut Read<'_, E>) -> Result<BackendFeatures, HandshakeError<E>> {
    let mut flag = |k: &'static str| -> Result<u64, HandshakeError<E>> {
        Ok(get(read, k)?.and_then(|v| parse_int_auto(&v)).unwrap_or(0))
    };
    if flag(keys::FEATURE_RX_COPY)? == 0 {
        return Err(HandshakeError::Invalid {
            key: keys::FEATURE_RX_COPY,
            value: "0 (the back end cannot copy into RX buffers)".into(),
        });
    }
    let sg = flag(keys::FEATURE_SG)? != 0;
    let split = flag(keys::FEATURE_SPLIT)? != 0;
    let q = flag(keys::MAX_QUEUES)?;
    Ok(BackendFeatures {
        sg,
        split,
        max_queues: u32::try_from(q).unwrap_or(1).max(1),
    })
}

/// What the front end writes, in Linux's order, for one queue with one
/// channel (`feature-sg` 0: this front end sends and takes one slot per
/// frame, and cannot take frames with a blank checksum), before `state` =
/// Connected.
pub fn publish(
    tx_ring_ref: u32,
    rx_ring_ref: u32,
    port: u32,
    backend: &BackendFeatures,
) -> Vec<(&'static str, String)> {
    let mut w: Vec<(&'static str, String)> = Vec::new();
    if backend.max_queues > 1 {
        w.push(("multi-queue-num-queues", "1".into()));
    }
    w.push(("tx-ring-ref", format!("{tx_ring_ref}")));
    w.push(("rx-ring-ref", format!("{rx_ring_ref}")));
    w.push(("event-channel", format!("{port}")));
    w.push(("request-rx-copy", "1".into()));
    w.push(("feature-rx-notify", "1".into()));
    w.push(("feature-sg", "0".into()));
    w.push(("feature-gso-tcpv4", "0".into()));
    w.push(("feature-gso-tcpv6", "0".into()));
    w.push(("feature-ipv6-csum-offload", "0".into()));
    // It cannot finish a checksum the back end left blank on RX.
    w.push(("feature-no-csum-offload", "1".into()));
    w
}
