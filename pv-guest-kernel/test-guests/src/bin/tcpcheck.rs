//! `tcpcheck`: TCP between two domUs through the net front end and
//! `smoltcp` (`pv_runtime::net`), checked end to end and timed.
//!
//! Command line: `ip=A.B.C.D` (required, a /24), `role=server` or
//! `role=client peer=A.B.C.D`, `mib=N` (default 4), `port=N` (default
//! 5001), `timeout=S` (default 240). The client connects to the server,
//! sends `mib` MiB of a pattern that depends on the byte's offset, and
//! closes its side; the server checks every byte against the pattern,
//! keeps a 64-bit FNV-1a checksum of the stream, and answers with the byte
//! count and the checksum (16 bytes, little-endian) before it closes; the
//! client compares both with its own.
//!
//! Exactly one result line, then poweroff: `tcpcheck: ok role=R bytes=N
//! fnv=X mib_s=Y` (the rate from the connection's start to the answer), or
//! `tcpcheck: FAIL <reason>` and the domain crashes.
#![no_std]
#![no_main]

extern crate alloc;

use pv_runtime::net::smoltcp::iface::{SocketSet, SocketStorage};
use pv_runtime::net::smoltcp::socket::tcp;
use pv_runtime::net::smoltcp::wire::{IpAddress, IpCidr, Ipv4Address};
use pv_runtime::net::{Nic, now};
use pv_runtime::netfront::frames;
use pv_runtime::text::{cmdline_value, parse_u64};
use pv_runtime::{Config, StartInfo, println, sched, start_info, time};
use pv_test_guests::fail;

const NAME: &str = "tcpcheck";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn arg(key: &str) -> Option<&'static [u8]> {
    cmdline_value(&start_info().cmd_line, key)
}

fn num_arg(key: &str, default: u64) -> u64 {
    arg(key).map_or(default, |v| {
        parse_u64(v).unwrap_or_else(|| fail(NAME, format_args!("{key}= is not a number")))
    })
}

fn ip_arg(key: &str) -> [u8; 4] {
    arg(key)
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(frames::parse_ipv4)
        .unwrap_or_else(|| {
            fail(
                NAME,
                format_args!("{key}= is missing or not an IPv4 address"),
            )
        })
}

/// The byte at `off` of the stream.
#[allow(clippy::cast_possible_truncation)] // a byte pattern: low bits wanted
fn pattern(off: u64) -> u8 {
    (off.wrapping_mul(7) ^ (off >> 11)) as u8
}

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// `whole.frac` MiB/s of `bytes` in `ns`.
fn rate(bytes: u64, ns: u64) -> (u64, u64) {
    let centi = u128::from(bytes) * 100 * 1_000_000_000 / (u128::from(ns.max(1)) << 20);
    let c = u64::try_from(centi).unwrap_or(u64::MAX);
    (c / 100, c % 100)
}

fn main(_si: &'static StartInfo) {
    let ip = ip_arg("ip");
    let server = match arg("role") {
        Some(b"server") => true,
        Some(b"client") => false,
        _ => fail(NAME, format_args!("role=server or role=client")),
    };
    let peer = if server { [0; 4] } else { ip_arg("peer") };
    let total = num_arg("mib", 4).clamp(1, 1024) << 20;
    let port = u16::try_from(num_arg("port", 5001)).unwrap_or(5001);
    let timeout_ns = num_arg("timeout", 240).saturating_mul(1_000_000_000);
    let t_end = time::system_time_ns().saturating_add(timeout_ns);
    let mut nic = Nic::open(0, timeout_ns)
        .unwrap_or_else(|e| fail(NAME, format_args!("opening device/vif/0: {e}")));
    let mut iface = nic.interface();
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24));
    });
    let mut storage = [SocketStorage::EMPTY; 1];
    let mut sockets = SocketSet::new(&mut storage[..]);
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(alloc::vec![0u8; 64 * 1024]),
        tcp::SocketBuffer::new(alloc::vec![0u8; 64 * 1024]),
    );
    let h = sockets.add(sock);
    // Acknowledge at once: the client must not power off with the
    // acknowledgement of the answer still held back.
    sockets.get_mut::<tcp::Socket>(h).set_ack_delay(None);
    if server {
        sockets
            .get_mut::<tcp::Socket>(h)
            .listen(port)
            .unwrap_or_else(|e| fail(NAME, format_args!("listen: {e:?}")));
    } else {
        let cx = iface.context();
        sockets
            .get_mut::<tcp::Socket>(h)
            .connect(
                cx,
                (Ipv4Address::new(peer[0], peer[1], peer[2], peer[3]), port),
                49152,
            )
            .unwrap_or_else(|e| fail(NAME, format_args!("connect: {e:?}")));
    }
    let mut off: u64 = 0; // client: bytes sent; server: bytes received
    let mut hash = FNV_OFFSET;
    let mut answer = [0u8; 16];
    let mut got = 0usize; // client: answer bytes received; server: sent
    let mut t0: Option<u64> = None;
    let mut chunk = alloc::vec![0u8; 16 * 1024];
    let mut closed = false;
    let mut answered_at: Option<u64> = None;
    let mut lingered = false;
    loop {
        let now_ns = time::system_time_ns();
        if now_ns >= t_end {
            fail(
                NAME,
                format_args!(
                    "timed out: {off} of {total} bytes, state {}",
                    sockets.get_mut::<tcp::Socket>(h).state()
                ),
            );
        }
        iface.poll(now(), &mut nic, &mut sockets);
        if let Some(e) = nic.error() {
            fail(NAME, format_args!("front end: {e}"));
        }
        let s = sockets.get_mut::<tcp::Socket>(h);
        if s.is_active() && t0.is_none() && s.may_send() {
            t0 = Some(now_ns);
        }
        if server {
            while s.can_recv() {
                let n = s
                    .recv_slice(&mut chunk)
                    .unwrap_or_else(|e| fail(NAME, format_args!("recv: {e:?}")));
                if n == 0 {
                    break;
                }
                for (i, b) in chunk[..n].iter().enumerate() {
                    if *b != pattern(off + i as u64) {
                        fail(NAME, format_args!("byte {} differs", off + i as u64));
                    }
                }
                hash = fnv(hash, &chunk[..n]);
                off += n as u64;
            }
            // The client closed its side: answer, then close ours.
            if t0.is_some() && !s.may_recv() && s.may_send() && got < 16 {
                if got == 0 {
                    answer[..8].copy_from_slice(&off.to_le_bytes());
                    answer[8..].copy_from_slice(&hash.to_le_bytes());
                }
                got += s.send_slice(&answer[got..]).unwrap_or(0);
                if got == 16 {
                    s.close();
                    closed = true;
                    answered_at = Some(now_ns);
                }
            }
            // Done once the answer is acknowledged (the client may power off
            // before it acknowledges our FIN), or 5 s after it went out (the
            // client checks it; all we could add is the wait).
            let grace = answered_at.is_some_and(|a| now_ns.saturating_sub(a) > 5_000_000_000);
            if closed && (s.send_queue() == 0 || !s.is_active() || grace) {
                if off != total {
                    fail(NAME, format_args!("received {off} bytes, expected {total}"));
                }
                break;
            }
        } else {
            while off < total && s.can_send() {
                let n = usize::try_from((total - off).min(chunk.len() as u64)).unwrap_or(0);
                for (i, b) in chunk[..n].iter_mut().enumerate() {
                    *b = pattern(off + i as u64);
                }
                let sent = s
                    .send_slice(&chunk[..n])
                    .unwrap_or_else(|e| fail(NAME, format_args!("send: {e:?}")));
                if sent == 0 {
                    break;
                }
                hash = fnv(hash, &chunk[..sent]);
                off += sent as u64;
            }
            if off == total && !closed {
                s.close();
                closed = true;
            }
            while got < 16 && s.can_recv() {
                got += s.recv_slice(&mut answer[got..]).unwrap_or(0);
            }
            if got == 16 && answered_at.is_none() {
                answered_at = Some(now_ns);
            }
            // Linger until the server's FIN is in and acknowledged (one
            // more poll after TimeWait sends that), at most a second.
            if let Some(a) = answered_at {
                if lingered || now_ns.saturating_sub(a) > 1_000_000_000 {
                    break;
                }
                lingered = matches!(s.state(), tcp::State::TimeWait | tcp::State::Closed);
            }
            if closed && got < 16 && !s.is_open() {
                fail(
                    NAME,
                    format_args!("the server closed without answering ({got} bytes)"),
                );
            }
        }
        let delay = iface
            .poll_delay(now(), &sockets)
            .map_or(10_000, |d| d.total_micros().min(10_000));
        if delay > 0 {
            let _ = nic.wait(delay);
        }
    }
    let t = answered_at
        .unwrap_or_else(time::system_time_ns)
        .saturating_sub(t0.unwrap_or(0));
    if !server {
        let n = u64::from_le_bytes(answer[..8].try_into().unwrap_or([0; 8]));
        let f = u64::from_le_bytes(answer[8..].try_into().unwrap_or([0; 8]));
        if n != total || f != hash {
            fail(
                NAME,
                format_args!(
                    "the server got {n} bytes with fnv {f:#x}; sent {total} with {hash:#x}"
                ),
            );
        }
    }
    let (w, c) = rate(total, t);
    println!(
        "{NAME}: ok role={} bytes={total} fnv={hash:#018x} mib_s={w}.{c:02}",
        if server { "server" } else { "client" }
    );
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
