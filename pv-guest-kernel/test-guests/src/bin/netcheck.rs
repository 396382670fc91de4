//! `netcheck`: a domU's vif through the Xen net front end
//! (`pv_runtime::netfront`), with raw frames: ARP and ICMP echo against a
//! peer on the same bridge.
//!
//! Command line: `ip=A.B.C.D peer=A.B.C.D` (required), `count=N` (pings,
//! default 10), `size=N` (echo payload bytes, default 56, at most 1472),
//! `timeout=S` (default 120), `vif=N` (default 0), `answers=N` (default
//! `count`; 0 for a peer that never pings, such as a gateway outside the
//! machine, reached through dom0's uplink). It answers ARP requests
//! for its address and echo requests sent to it; it resolves the peer by
//! ARP (asking every 200 ms), then pings it `count` times one after the
//! other (resending after 500 ms), checking every reply's payload. It is
//! done when it has its `count` replies and has answered `answers` distinct
//! echo requests of the peer (so two `netcheck`s pinging each other both
//! finish).
//!
//! A frame that finds no TX buffer for a second (a back end that answers
//! nothing meanwhile) is dropped and counted, and retried like any lost frame.
//!
//! Exactly one result line, then poweroff: `netcheck: ok mac=M ip=A
//! peer=B pings=N answered=N rtt_us=X` (the mean round trip), or
//! `netcheck: FAIL <reason>` and the domain crashes.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeSet;
use alloc::vec::Vec;

use pv_runtime::netfront::frames::{self, Ipv4, Mac, Parsed};
use pv_runtime::netfront::{self, Device};
use pv_runtime::text::{cmdline_value, parse_u64};
use pv_runtime::{Config, StartInfo, println, sched, start_info, time};
use pv_test_guests::fail;

const NAME: &str = "netcheck";
const IDENT: u16 = 0x4e43;

fn ip_arg(key: &str) -> Ipv4 {
    let v = cmdline_value(&start_info().cmd_line, key)
        .unwrap_or_else(|| fail(NAME, format_args!("no {key}= on the command line")));
    core::str::from_utf8(v)
        .ok()
        .and_then(frames::parse_ipv4)
        .unwrap_or_else(|| fail(NAME, format_args!("{key}= is not an IPv4 address")))
}

fn num_arg(key: &str, default: u64) -> u64 {
    match cmdline_value(&start_info().cmd_line, key) {
        None => default,
        Some(v) => {
            parse_u64(v).unwrap_or_else(|| fail(NAME, format_args!("{key}= is not a number")))
        }
    }
}

#[allow(clippy::cast_possible_truncation)] // a byte pattern: low bytes wanted
fn payload(seq: u16, size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i as u8) ^ (seq as u8).wrapping_mul(13))
        .collect()
}

struct Ip4(Ipv4);

impl core::fmt::Display for Ip4 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let a = self.0;
        write!(f, "{}.{}.{}.{}", a[0], a[1], a[2], a[3])
    }
}

struct MacFmt(Mac);

impl core::fmt::Display for MacFmt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

fn main(_si: &'static StartInfo) {
    let ip = ip_arg("ip");
    let peer = ip_arg("peer");
    let count = u16::try_from(num_arg("count", 10).clamp(1, 10_000)).unwrap_or(10);
    let size = usize::try_from(num_arg("size", 56).min(1472)).unwrap_or(56);
    let timeout_ns = num_arg("timeout", 120).saturating_mul(1_000_000_000);
    let vif = u32::try_from(num_arg("vif", 0)).unwrap_or(0);
    let answers = usize::try_from(num_arg("answers", u64::from(count))).unwrap_or(0);
    let t_end = time::system_time_ns().saturating_add(timeout_ns);
    let mut dev = Device::open(vif, timeout_ns)
        .unwrap_or_else(|e| fail(NAME, format_args!("opening device/vif/{vif}: {e}")));
    let mac = dev.mac();
    println!(
        "{NAME}: vif {vif} mac {} backend {}",
        MacFmt(mac),
        dev.backend()
    );
    // A back end that takes nothing for a second (dom0 busy unpacking another
    // domain's kernel, say) costs this frame, as a full NIC queue would: ARP and
    // pings are retried. Any other error fails.
    let mut dropped = 0u32;
    let mut send = |dev: &mut Device, f: &[u8]| match dev.send(f) {
        Ok(()) => {}
        Err(netfront::Error::Busy) => dropped += 1,
        Err(e) => fail(NAME, format_args!("send: {e}")),
    };
    let mut peer_mac: Option<Mac> = None;
    let mut last_arp = 0u64;
    let mut seq: u16 = 1;
    let mut sent_at = 0u64;
    let mut sent = false;
    let mut replies: u16 = 0;
    let mut rtt_total = 0u64;
    let mut answered: BTreeSet<u16> = BTreeSet::new();
    let mut buf = [0u8; netfront::MAX_FRAME];
    loop {
        let now = time::system_time_ns();
        if replies >= count && answered.len() >= answers {
            break;
        }
        if now >= t_end {
            fail(
                NAME,
                format_args!(
                    "timed out: peer {} ({}), {replies}/{count} replies, {}/{answers} answered",
                    Ip4(peer),
                    if peer_mac.is_some() {
                        "resolved"
                    } else {
                        "not resolved"
                    },
                    answered.len()
                ),
            );
        }
        match peer_mac {
            None if now.saturating_sub(last_arp) >= 200_000_000 => {
                send(&mut dev, &frames::arp_request(mac, ip, peer));
                last_arp = now;
            }
            Some(pm)
                if replies < count && (!sent || now.saturating_sub(sent_at) >= 500_000_000) =>
            {
                let f =
                    frames::icmp_echo(false, mac, pm, ip, peer, IDENT, seq, &payload(seq, size));
                send(&mut dev, &f);
                sent = true;
                sent_at = now;
            }
            _ => {}
        }
        let _ = dev
            .wait(Some(10_000_000))
            .unwrap_or_else(|e| fail(NAME, format_args!("wait: {e}")));
        while let Some(n) = dev
            .recv(&mut buf)
            .unwrap_or_else(|e| fail(NAME, format_args!("recv: {e}")))
        {
            let f = &buf[..n.min(buf.len())];
            match frames::parse(f) {
                Parsed::Arp {
                    reply: false,
                    sender_mac,
                    sender_ip,
                    target_ip,
                } if target_ip == ip => {
                    send(&mut dev, &frames::arp_reply(mac, ip, sender_mac, sender_ip));
                }
                Parsed::Arp {
                    reply: true,
                    sender_mac,
                    sender_ip,
                    ..
                } if sender_ip == peer => peer_mac = Some(sender_mac),
                Parsed::Echo {
                    reply: false,
                    src_mac,
                    src,
                    dst,
                    ident,
                    seq: s,
                    payload: p,
                } if dst == ip => {
                    let r = frames::icmp_echo(true, mac, src_mac, ip, src, ident, s, p);
                    send(&mut dev, &r);
                    if src == peer {
                        answered.insert(s);
                    }
                }
                Parsed::Echo {
                    reply: true,
                    src,
                    ident: IDENT,
                    seq: s,
                    payload: p,
                    ..
                } if src == peer && sent && s == seq => {
                    if p != payload(seq, size).as_slice() {
                        fail(NAME, format_args!("echo reply {seq}: the payload differs"));
                    }
                    rtt_total += time::system_time_ns().saturating_sub(sent_at);
                    replies += 1;
                    seq = seq.wrapping_add(1);
                    sent = false;
                }
                _ => {}
            }
        }
    }
    let st = dev.stats();
    println!(
        "{NAME}: {} frames sent, {} received, {} notifications, {dropped} dropped (no TX buffer)",
        st.tx, st.rx, st.notifies
    );
    println!(
        "{NAME}: ok mac={} ip={} peer={} pings={replies} answered={} rtt_us={}",
        MacFmt(mac),
        Ip4(ip),
        Ip4(peer),
        answered.len(),
        rtt_total / u64::from(count.max(1)) / 1000
    );
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
