//! `netup`: a domU on the runtime's socket API (`pv_runtime::net::Stack`)
//! and nothing else: an address by DHCP or a static one, then one TCP job.
//!
//! Command line (space-separated `key=value`):
//!
//! * Address: `ip=dhcp` (the default) or `ip=A.B.C.D/NN` with an optional
//!   `gw=A.B.C.D`; `timeout=S` for everything (default 60). Once it has
//!   its address it prints `netup: address ip=A/NN gw=G via=dhcp|static`
//!   (with DHCP also `dns=` and `lease_s=`). `ping=A.B.C.D` (any role)
//!   then pings that address once: `netup: ping ip=A rtt_us=N`.
//! * `role=fetch server=IP:PORT [bytes=N]`: connects, reads until the server
//!   closes; `netup: ok role=fetch ip=A gw=G bytes=N fnv=X mib_s=Y` (a
//!   64-bit FNV-1a of the stream; fails if `bytes=` differs).
//! * `role=echo port=P [conns=N]` (default 1): prints `netup: listening ip=A
//!   port=P`, then echoes every byte of N connections, one after the other,
//!   each until the peer closes; `netup: ok role=echo conns=N bytes=T`.
//! * `role=send server=IP:PORT mib=N`: sends N MiB of `tcpcheck`'s pattern
//!   and closes; `netup: ok role=send bytes=N mib_s=Y`.
//! * `role=serve port=P bytes=N [conns=N]` (default 1): prints `netup:
//!   listening ip=A port=P`, then on each of N connections sends N bytes of
//!   the pattern and closes (what `role=fetch` reads); `netup: ok role=serve
//!   conns=N bytes=T`.
//! * `role=echo-client server=IP:PORT bytes=N`: sends N bytes of the
//!   pattern to an echo server while reading the echo (at most 32 KiB
//!   ahead), checks every byte, closes; `netup: ok role=echo-client
//!   bytes=N fnv=X`.
//!
//! Exactly one result line, then poweroff: the `ok` line, or `netup: FAIL
//! <reason>` and the domain crashes.
#![no_std]
#![no_main]

extern crate alloc;

use pv_runtime::net::{Ipv4Address, Ipv4Cidr, Stack, TcpStream, parse_cidr, parse_endpoint};
use pv_runtime::netfront::frames;
use pv_runtime::text::{cmdline_value, parse_u64};
use pv_runtime::{Config, StartInfo, println, sched, start_info, time};
use pv_test_guests::fail;

const NAME: &str = "netup";
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
/// Bytes an echo client sends ahead of what came back.
const AHEAD: u64 = 32 * 1024;

fn arg(key: &str) -> Option<&'static str> {
    cmdline_value(&start_info().cmd_line, key).and_then(|v| core::str::from_utf8(v).ok())
}

fn num_arg(key: &str) -> Option<u64> {
    arg(key).map(|v| {
        parse_u64(v.as_bytes())
            .unwrap_or_else(|| fail(NAME, format_args!("{key}= is not a number")))
    })
}

fn server_arg() -> (Ipv4Address, u16) {
    let (ip, port) = arg("server")
        .and_then(parse_endpoint)
        .unwrap_or_else(|| fail(NAME, format_args!("server=IP:PORT is missing or bad")));
    (Ipv4Address::from(ip), port)
}

/// The byte at `off` of a stream (`tcpcheck`'s pattern).
#[allow(clippy::cast_possible_truncation)] // a byte pattern: low bits wanted
fn pattern(off: u64) -> u8 {
    (off.wrapping_mul(7) ^ (off >> 11)) as u8
}

fn fill(buf: &mut [u8], off: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = pattern(off + i as u64);
    }
}

fn fnv(mut h: u64, data: &[u8]) -> u64 {
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// `whole.tenth` MiB/s of `bytes` in `ns`.
fn rate(bytes: u64, ns: u64) -> (u64, u64) {
    let tenths = u128::from(bytes) * 10 * 1_000_000_000 / (u128::from(ns.max(1)) << 20);
    let t = u64::try_from(tenths).unwrap_or(u64::MAX);
    (t / 10, t % 10)
}

/// The overall deadline.
struct Clock {
    end: u64,
}

impl Clock {
    /// Nanoseconds left (at least 1, so a call still polls once).
    fn left(&self) -> u64 {
        self.end.saturating_sub(time::system_time_ns()).max(1)
    }
}

fn check<T>(what: &str, r: Result<T, pv_runtime::net::Error>) -> T {
    r.unwrap_or_else(|e| fail(NAME, format_args!("{what}: {e}")))
}

/// Sets the address; returns it and the gateway.
fn address(stack: &Stack, clock: &Clock) -> (Ipv4Cidr, Option<Ipv4Address>) {
    match arg("ip") {
        None | Some("dhcp") => {
            let lease = check("dhcp", stack.dhcp(clock.left()));
            let lease_s = lease
                .times
                .expires_ns
                .map_or(u64::MAX, |e| (e - lease.times.obtained_ns) / 1_000_000_000);
            println!(
                "{NAME}: address ip={} gw={} via=dhcp server={} dns={:?} lease_s={lease_s}",
                lease.address,
                Gw(lease.router),
                lease.server,
                lease.dns_servers,
            );
            (lease.address, lease.router)
        }
        Some(s) => {
            let (ip, prefix) = parse_cidr(s)
                .unwrap_or_else(|| fail(NAME, format_args!("ip=A.B.C.D/NN or ip=dhcp")));
            let gw = arg("gw").map(|g| {
                Ipv4Address::from(
                    frames::parse_ipv4(g)
                        .unwrap_or_else(|| fail(NAME, format_args!("gw= is not an address"))),
                )
            });
            let cidr = Ipv4Cidr::new(Ipv4Address::from(ip), prefix);
            check("static address", stack.set_static(cidr, gw));
            println!("{NAME}: address ip={cidr} gw={} via=static", Gw(gw));
            (cidr, gw)
        }
    }
}

/// A gateway, or `none`.
struct Gw(Option<Ipv4Address>);

impl core::fmt::Display for Gw {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("none"),
        }
    }
}

fn fetch(stack: &Stack, clock: &Clock, cidr: Ipv4Cidr, gw: Option<Ipv4Address>) {
    let (ip, port) = server_arg();
    let want = num_arg("bytes");
    let t0 = time::system_time_ns();
    let mut s = check("connect", stack.connect(ip, port, clock.left()));
    let mut buf = alloc::vec![0u8; 16 * 1024];
    let (mut n, mut hash) = (0u64, FNV_OFFSET);
    loop {
        let got = check("read", s.read(&mut buf, clock.left()));
        if got == 0 {
            break;
        }
        hash = fnv(hash, &buf[..got]);
        n += got as u64;
    }
    let t = time::system_time_ns() - t0;
    check("close", s.close(clock.left()));
    if let Some(w) = want.filter(|w| *w != n) {
        fail(NAME, format_args!("read {n} bytes, expected {w}"));
    }
    let (w, d) = rate(n, t);
    println!(
        "{NAME}: ok role=fetch ip={} gw={} bytes={n} fnv={hash:016x} mib_s={w}.{d}",
        cidr.address(),
        Gw(gw)
    );
}

fn echo_one(s: &mut TcpStream, clock: &Clock, buf: &mut [u8]) -> u64 {
    let mut n = 0u64;
    loop {
        let got = check("read", s.read(buf, clock.left()));
        if got == 0 {
            return n;
        }
        check("write", s.write_all(&buf[..got], clock.left()));
        n += got as u64;
    }
}

fn echo(stack: &Stack, clock: &Clock, cidr: Ipv4Cidr) {
    let port = num_arg("port")
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| fail(NAME, format_args!("port=P is missing or bad")));
    let conns = num_arg("conns").unwrap_or(1);
    let mut l = check("listen", stack.listen(port));
    println!("{NAME}: listening ip={} port={port}", cidr.address());
    let mut buf = alloc::vec![0u8; 16 * 1024];
    let mut total = 0u64;
    for _ in 0..conns {
        let mut s = check("accept", l.accept(clock.left()));
        total += echo_one(&mut s, clock, &mut buf);
        check("close", s.close(clock.left()));
    }
    println!("{NAME}: ok role=echo conns={conns} bytes={total}");
}

fn serve(stack: &Stack, clock: &Clock, cidr: Ipv4Cidr) {
    let port = num_arg("port")
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| fail(NAME, format_args!("port=P is missing or bad")));
    let bytes = num_arg("bytes").unwrap_or_else(|| fail(NAME, format_args!("bytes=N is missing")));
    let conns = num_arg("conns").unwrap_or(1);
    let mut l = check("listen", stack.listen(port));
    println!("{NAME}: listening ip={} port={port}", cidr.address());
    let mut chunk = alloc::vec![0u8; 16 * 1024];
    for _ in 0..conns {
        let mut s = check("accept", l.accept(clock.left()));
        let mut off = 0u64;
        while off < bytes {
            let n = usize::try_from((bytes - off).min(chunk.len() as u64)).unwrap_or(0);
            fill(&mut chunk[..n], off);
            off += check("write", s.write(&chunk[..n], clock.left())) as u64;
        }
        check("close", s.close(clock.left()));
    }
    println!(
        "{NAME}: ok role=serve conns={conns} bytes={}",
        bytes.saturating_mul(conns)
    );
}

fn send(stack: &Stack, clock: &Clock) {
    let (ip, port) = server_arg();
    let total = num_arg("mib")
        .unwrap_or_else(|| fail(NAME, format_args!("mib=N is missing")))
        .clamp(1, 1024)
        << 20;
    let t0 = time::system_time_ns();
    let mut s = check("connect", stack.connect(ip, port, clock.left()));
    let mut chunk = alloc::vec![0u8; 16 * 1024];
    let mut off = 0u64;
    while off < total {
        let n = usize::try_from((total - off).min(chunk.len() as u64)).unwrap_or(0);
        fill(&mut chunk[..n], off);
        let sent = check("write", s.write(&chunk[..n], clock.left()));
        off += sent as u64;
    }
    // Done once the server acknowledged every byte and the FIN.
    check("close", s.close(clock.left()));
    let (w, d) = rate(total, time::system_time_ns() - t0);
    println!("{NAME}: ok role=send bytes={total} mib_s={w}.{d}");
}

fn echo_client(stack: &Stack, clock: &Clock) {
    let (ip, port) = server_arg();
    let total = num_arg("bytes").unwrap_or_else(|| fail(NAME, format_args!("bytes=N is missing")));
    let mut s = check("connect", stack.connect(ip, port, clock.left()));
    let mut out = alloc::vec![0u8; 4096];
    let mut inb = alloc::vec![0u8; 16 * 1024];
    let (mut sent, mut got, mut hash) = (0u64, 0u64, FNV_OFFSET);
    while got < total {
        if sent < total && sent - got < AHEAD {
            let n = usize::try_from((total - sent).min(out.len() as u64)).unwrap_or(0);
            fill(&mut out[..n], sent);
            sent += check("write", s.write(&out[..n], clock.left())) as u64;
            continue;
        }
        let n = check("read", s.read(&mut inb, clock.left()));
        if n == 0 {
            fail(
                NAME,
                format_args!("the server closed after {got} of {total} bytes"),
            );
        }
        for (i, b) in inb[..n].iter().enumerate() {
            if *b != pattern(got + i as u64) {
                fail(NAME, format_args!("echoed byte {} differs", got + i as u64));
            }
        }
        hash = fnv(hash, &inb[..n]);
        got += n as u64;
    }
    check("close", s.close(clock.left()));
    println!("{NAME}: ok role=echo-client bytes={total} fnv={hash:016x}");
}

fn main(_si: &'static StartInfo) {
    let timeout_ns = num_arg("timeout")
        .unwrap_or(60)
        .saturating_mul(1_000_000_000);
    let clock = Clock {
        end: time::system_time_ns().saturating_add(timeout_ns),
    };
    let role = arg("role").unwrap_or("");
    if !matches!(role, "fetch" | "echo" | "serve" | "send" | "echo-client") {
        fail(NAME, format_args!("role=fetch|echo|serve|send|echo-client"));
    }
    let stack = check("opening device/vif/0", Stack::open(0, clock.left()));
    let (cidr, gw) = address(&stack, &clock);
    if let Some(p) = arg("ping") {
        let ip = frames::parse_ipv4(p)
            .unwrap_or_else(|| fail(NAME, format_args!("ping= is not an address")));
        let rtt = check("ping", stack.ping(Ipv4Address::from(ip), clock.left()));
        println!("{NAME}: ping ip={p} rtt_us={}", rtt / 1000);
    }
    match role {
        "fetch" => fetch(&stack, &clock, cidr, gw),
        "echo" => echo(&stack, &clock, cidr),
        "serve" => serve(&stack, &clock, cidr),
        "send" => send(&stack, &clock),
        _ => echo_client(&stack, &clock),
    }
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
