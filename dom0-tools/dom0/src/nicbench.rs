//! `nic_bench=PORT,MIB` on dom0's command line (`scripts/bench`): before the
//! agent starts, dom0 sends MIB MiB over TCP from its first NIC to QEMU's
//! gateway (10.0.2.2, the host's 127.0.0.1 through QEMU's user network) on
//! PORT, with `smoltcp` straight on its virtio-net driver. That is dom0's own
//! TCP to the host over the NIC its uplink uses: the limit the net split
//! driver's throughput is compared with (docs/bench.md). One result line:
//! `dom0: nic_bench: ok bytes=N mib_s=X` or `dom0: nic_bench: FAIL <why>`.

use alloc::vec::Vec;

use pv_runtime::{println, time};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Address};

use crate::virtio::Nic;

/// dom0's address for the run: outside the range QEMU's DHCP server hands
/// out from (10.0.2.15 up), so a domU's lease later does not collide.
const ME: Ipv4Address = Ipv4Address::new(10, 0, 2, 200);
/// QEMU's gateway (the host).
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// How long the whole run may take.
const TIMEOUT_NS: u64 = 120_000_000_000;

fn now() -> Instant {
    Instant::from_micros(i64::try_from(time::system_time_ns() / 1000).unwrap_or(i64::MAX))
}

/// The NIC as `smoltcp` sees it.
struct Dev<'a>(&'a mut Nic);

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Nic);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = alloc::vec![0u8; len];
        let r = f(&mut buf);
        // A full backlog drops the frame; TCP sends it again.
        let _ = self.0.queue(&buf);
        r
    }
}

impl phy::Device for Dev<'_> {
    type RxToken<'b>
        = Rx
    where
        Self: 'b;
    type TxToken<'b>
        = Tx<'b>
    where
        Self: 'b;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let mut buf = alloc::vec![0u8; 2048];
        let n = self.0.poll_frame(&mut buf)?;
        buf.truncate(n);
        Some((Rx(buf), Tx(self.0)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(16);
        caps
    }
}

/// Parses `PORT,MIB`.
pub fn parse(v: &[u8]) -> Option<(u16, u64)> {
    let s = core::str::from_utf8(v).ok()?;
    let (p, m) = s.split_once(',')?;
    Some((p.parse().ok()?, m.parse().ok()?))
}

/// Runs the benchmark on `nic` and prints the result line.
pub fn run(nic: &mut Nic, port: u16, mib: u64) {
    match send(nic, port, mib) {
        Ok((bytes, ns)) => {
            // MiB/s with two decimals, in integers.
            let centi = u128::from(bytes) * 100 * 1_000_000_000 / (u128::from(ns.max(1)) << 20);
            println!(
                "dom0: nic_bench: ok bytes={bytes} mib_s={}.{:02}",
                centi / 100,
                centi % 100
            );
        }
        Err(why) => println!("dom0: nic_bench: FAIL {why}"),
    }
}

fn send(nic: &mut Nic, port: u16, mib: u64) -> Result<(u64, u64), &'static str> {
    let total = mib.saturating_mul(1 << 20);
    let mac = EthernetAddress(nic.mac());
    let mut dev = Dev(nic);
    let mut iface = Interface::new(Config::new(HardwareAddress::Ethernet(mac)), &mut dev, now());
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(ME.into(), 24));
    });
    iface
        .routes_mut()
        .add_default_ipv4_route(GATEWAY)
        .map_err(|_| "no route")?;
    let mut sockets = SocketSet::new(Vec::new());
    let sock = tcp::Socket::new(
        tcp::SocketBuffer::new(alloc::vec![0u8; 64 * 1024]),
        tcp::SocketBuffer::new(alloc::vec![0u8; 64 * 1024]),
    );
    let h = sockets.add(sock);
    sockets
        .get_mut::<tcp::Socket>(h)
        .connect(iface.context(), (GATEWAY, port), 49152)
        .map_err(|_| "connect")?;
    let chunk = alloc::vec![0x5au8; 16 * 1024];
    let start = time::system_time_ns();
    let end = start.saturating_add(TIMEOUT_NS);
    let mut t0 = None;
    let mut sent = 0u64;
    let mut closed = false;
    loop {
        let t = time::system_time_ns();
        if t >= end {
            return Err("timed out");
        }
        iface.poll(now(), &mut dev, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(h);
        if t0.is_none() && s.may_send() {
            t0 = Some(t);
        }
        while sent < total && s.can_send() {
            let n = usize::try_from((total - sent).min(chunk.len() as u64)).unwrap_or(0);
            match s.send_slice(&chunk[..n]) {
                Ok(0) | Err(_) => break,
                Ok(k) => sent += k as u64,
            }
        }
        if sent == total && !closed {
            s.close();
            closed = true;
        }
        // Done when everything sent is acknowledged (the host read it all).
        if closed && s.send_queue() == 0 {
            let ns = t.saturating_sub(t0.unwrap_or(start));
            return Ok((total, ns));
        }
        if !s.is_open() && sent < total {
            return Err("the host closed the connection");
        }
        dev.0.flush_now();
        match iface.poll_delay(now(), &sockets) {
            Some(d) if d.total_micros() > 0 => dev.0.idle(d.total_micros().min(10_000) * 1000),
            _ => {}
        }
    }
}
