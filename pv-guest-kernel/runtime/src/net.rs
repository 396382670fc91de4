//! TCP/IP for guests: [`smoltcp`] over the net front end ([`netfront`]).
//!
//! Two levels:
//!
//! * [`Stack`]: a vif with an address (DHCP or static), and blocking TCP
//!   and UDP sockets with timeouts ([`TcpStream`], [`TcpListener`],
//!   [`UdpSocket`]); errors are [`Error`]. Every blocking call polls the
//!   interface and sleeps on the vif's event channel until `smoltcp` has
//!   something to do ([`Stack::wait`]), so the DHCP lease is renewed and
//!   other sockets move while a guest waits on one.
//! * [`Nic`]: the `smoltcp::phy::Device` under it, for guests that drive
//!   `smoltcp` themselves ([`now`] is its clock).
//!
//! ```ignore
//! use pv_runtime::net::Stack;
//! let stack = Stack::open(0, 20_000_000_000)?;        // device/vif/0
//! let lease = stack.dhcp(30_000_000_000)?;            // or set_static
//! let mut s = stack.connect(server, 80, 10_000_000_000)?;
//! s.write_all(b"GET / HTTP/1.0\r\n\r\n", 10_000_000_000)?;
//! let mut buf = [0u8; 4096];
//! while s.read(&mut buf, 10_000_000_000)? > 0 { /* ... */ }
//! s.close(10_000_000_000)?;
//! ```
//!
//! Timeouts are nanoseconds from the call. The stack is single-threaded
//! (its sockets share it through an `Rc`). See `docs/net.md`.

extern crate alloc;

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

pub use pv_runtime_core::net::{LeasePhase, LeaseTimes, parse_cidr, parse_endpoint};
pub use smoltcp;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::{dhcpv4, icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{DhcpRepr, EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpCidr};
pub use smoltcp::wire::{Ipv4Address, Ipv4Cidr};

use crate::netfront::{self, Device};
use crate::time;

/// `smoltcp`'s time: the system time (ns since boot) in microseconds.
pub fn now() -> Instant {
    Instant::from_micros(i64::try_from(time::system_time_ns() / 1000).unwrap_or(i64::MAX))
}

/// A vif as `smoltcp` sees it.
#[derive(Debug)]
pub struct Nic {
    dev: Device,
    /// The first error the front end returned while `smoltcp` used it.
    error: Option<netfront::Error>,
}

impl Nic {
    /// Connects to `device/vif/<n>` ([`Device::open`]).
    pub fn open(n: u32, timeout_ns: u64) -> Result<Nic, netfront::Error> {
        Ok(Nic {
            dev: Device::open(n, timeout_ns)?,
            error: None,
        })
    }

    /// An interface with the vif's MAC (add addresses and routes to it),
    /// its random seed (TCP sequence numbers, DHCP transactions) from the
    /// clock and the MAC.
    pub fn interface(&mut self) -> Interface {
        let mac = self.dev.mac();
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        let m = mac
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b))
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        config.random_seed = time::system_time_ns() ^ m;
        Interface::new(config, self, now())
    }

    /// The front end.
    pub fn device(&mut self) -> &mut Device {
        &mut self.dev
    }

    /// The first error the front end returned (the device is then unusable
    /// if it is [`netfront::Error::Broken`] or
    /// [`netfront::Error::BackendClosed`]).
    pub fn error(&self) -> Option<&netfront::Error> {
        self.error.as_ref()
    }

    /// Takes the first error the front end returned (the next one is kept
    /// from then on).
    pub fn take_error(&mut self) -> Option<netfront::Error> {
        self.error.take()
    }

    /// Sleeps until a frame arrives or `timeout_us` passes.
    pub fn wait(&mut self, timeout_us: u64) -> Result<bool, netfront::Error> {
        self.dev.wait(Some(timeout_us.saturating_mul(1000)))
    }
}

/// A received frame.
#[derive(Debug)]
pub struct RxToken(Vec<u8>);

/// Room for a frame to send.
#[derive(Debug)]
pub struct TxToken<'a> {
    dev: &'a mut Device,
    error: &'a mut Option<netfront::Error>,
}

impl phy::RxToken for RxToken {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let mut buf = alloc::vec![0u8; len];
        let r = f(&mut buf);
        if let Err(e) = self.dev.send(&buf) {
            self.error.get_or_insert(e);
        }
        r
    }
}

impl phy::Device for Nic {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let mut buf = alloc::vec![0u8; netfront::MAX_FRAME];
        match self.dev.recv(&mut buf) {
            Ok(Some(n)) => {
                buf.truncate(n);
                Some((
                    RxToken(buf),
                    TxToken {
                        dev: &mut self.dev,
                        error: &mut self.error,
                    },
                ))
            }
            Ok(None) => None,
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    fn transmit(&mut self, _: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            dev: &mut self.dev,
            error: &mut self.error,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(netfront::BUFFERS / 2);
        caps
    }
}

// ------------------------------------------------------------------ stack

/// What the socket API returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The front end failed for good: the back end went away
    /// ([`netfront::Error::BackendClosed`], a hot-unplug) or broke the
    /// protocol. Every later call returns it too.
    Device(netfront::Error),
    /// The call's timeout passed.
    Timeout,
    /// The interface has no IPv4 address yet (DHCP or [`Stack::set_static`]
    /// first).
    NoAddress,
    /// The peer refused the connection (or it never got established).
    Refused,
    /// The connection was reset (or timed out in `smoltcp`).
    Reset,
    /// The connection is closed for this: the peer closed its side and
    /// there is nothing to write to.
    Closed,
    /// An argument `smoltcp` refused (a port in use, port 0, an address
    /// that cannot be sent to, a datagram too large).
    Invalid(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Device(e) => write!(f, "front end: {e}"),
            Error::Timeout => f.write_str("timed out"),
            Error::NoAddress => f.write_str("no IPv4 address"),
            Error::Refused => f.write_str("connection refused"),
            Error::Reset => f.write_str("connection reset"),
            Error::Closed => f.write_str("connection closed"),
            Error::Invalid(what) => write!(f, "invalid: {what}"),
        }
    }
}

impl From<netfront::Error> for Error {
    fn from(e: netfront::Error) -> Self {
        Error::Device(e)
    }
}

/// A DHCP lease (RFC 2131), as the server's last ACK gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Our address and the subnet's prefix.
    pub address: Ipv4Cidr,
    /// The default gateway (option 3), if the server named one.
    pub router: Option<Ipv4Address>,
    /// DNS servers (option 6), at most three.
    pub dns_servers: Vec<Ipv4Address>,
    /// The DHCP server that leased it.
    pub server: Ipv4Address,
    /// When it renews, rebinds and ends (`smoltcp`'s client renews it
    /// while the stack is polled).
    pub times: LeaseTimes,
    /// ACKs after the first: how often it was renewed.
    pub renewals: u32,
}

/// Socket buffers: 64 KiB each way for TCP (the window), 8 KiB for UDP.
const TCP_BUFFER: usize = 64 * 1024;
const UDP_BUFFER: usize = 8 * 1024;
const UDP_PACKETS: usize = 16;
/// Sockets listening per [`TcpListener`]: connections that may arrive
/// before `accept` takes one.
const BACKLOG: usize = 2;
/// How long [`TcpStream::close`] waits for the peer's FIN once ours is
/// acknowledged.
pub const CLOSE_LINGER_NS: u64 = 500_000_000;
/// How long a socket closed by drop may take to finish its FIN handshake.
const LINGER_NS: u64 = 30_000_000_000;
/// Longest sleep in one wait (the loop looks at the time again after it).
const MAX_SLEEP_US: u64 = 1_000_000;
const EPHEMERAL: u16 = 49152;

struct Inner {
    nic: Nic,
    iface: Interface,
    sockets: SocketSet<'static>,
    dhcp: Option<SocketHandle>,
    lease: Option<Lease>,
    gateway: Option<Ipv4Address>,
    /// Sockets closed by their owner, finishing their close: removed once
    /// `Closed`, aborted at the deadline.
    closing: Vec<(SocketHandle, u64)>,
    next_port: u16,
    /// The next ICMP echo identifier.
    next_ident: u16,
    /// The front end's fatal error, once it happened.
    fatal: Option<netfront::Error>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("nic", &self.nic)
            .field("address", &self.iface.ipv4_addr())
            .field("gateway", &self.gateway)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Runs the interface once: frames in and out, timers, DHCP events,
    /// sockets done closing.
    fn poll(&mut self) -> Result<(), Error> {
        self.iface.poll(now(), &mut self.nic, &mut self.sockets);
        if let Some(e) = self.nic.take_error() {
            // A TX buffer that did not come back in time drops one frame
            // (TCP sends it again); anything else ends the device.
            if e != netfront::Error::Busy {
                self.fatal.get_or_insert(e);
            }
        }
        self.dhcp_events();
        self.reap();
        match &self.fatal {
            Some(e) => Err(Error::Device(e.clone())),
            None => Ok(()),
        }
    }

    /// Sleeps until a frame comes, `smoltcp` has a timer due, or
    /// `deadline` (system time).
    fn sleep(&mut self, deadline: u64) -> Result<(), Error> {
        let now_ns = time::system_time_ns();
        if now_ns >= deadline {
            return Ok(());
        }
        let left = ((deadline - now_ns) / 1000).clamp(1, MAX_SLEEP_US);
        let us = self
            .iface
            .poll_delay(now(), &self.sockets)
            .map_or(left, |d| d.total_micros().min(left));
        if us > 0 {
            if let Err(e) = self.nic.wait(us) {
                self.fatal.get_or_insert(e.clone());
                return Err(Error::Device(e));
            }
        }
        Ok(())
    }

    fn dhcp_events(&mut self) {
        let Some(h) = self.dhcp else {
            return;
        };
        let now_ns = time::system_time_ns();
        let event = self.sockets.get_mut::<dhcpv4::Socket>(h).poll();
        match event {
            None => {}
            Some(dhcpv4::Event::Configured(c)) => {
                let repr = c
                    .packet
                    .as_ref()
                    .and_then(|p| DhcpRepr::parse(p).ok())
                    .map(|r| (r.lease_duration, r.renew_duration, r.rebind_duration));
                let (l, t1, t2) = repr.unwrap_or((None, None, None));
                let renewals = match &self.lease {
                    Some(old) if old.address == c.address => old.renewals.saturating_add(1),
                    _ => 0,
                };
                let lease = Lease {
                    address: c.address,
                    router: c.router,
                    dns_servers: c.dns_servers.iter().copied().collect(),
                    server: c.server.address,
                    times: LeaseTimes::new(now_ns, l, t1, t2),
                    renewals,
                };
                let _ = self.configure(lease.address, lease.router);
                self.lease = Some(lease);
            }
            Some(dhcpv4::Event::Deconfigured) => {
                self.iface.update_ip_addrs(|a| a.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
                self.gateway = None;
                self.lease = None;
            }
        }
    }

    fn configure(&mut self, cidr: Ipv4Cidr, gw: Option<Ipv4Address>) -> Result<(), Error> {
        self.iface.update_ip_addrs(|a| {
            a.clear();
            let _ = a.push(IpCidr::Ipv4(cidr));
        });
        let routes = self.iface.routes_mut();
        match gw {
            Some(g) => {
                routes
                    .add_default_ipv4_route(g)
                    .map_err(|_| Error::Invalid("the route table is full"))?;
            }
            None => {
                routes.remove_default_ipv4_route();
            }
        }
        self.gateway = gw;
        Ok(())
    }

    fn reap(&mut self) {
        let now_ns = time::system_time_ns();
        let sockets = &mut self.sockets;
        self.closing.retain(|&(h, deadline)| {
            let s = sockets.get_mut::<tcp::Socket>(h);
            if s.state() == tcp::State::Closed {
                sockets.remove(h);
                return false;
            }
            if now_ns >= deadline {
                s.abort();
            }
            true
        });
    }

    fn new_tcp(&mut self) -> SocketHandle {
        let s = tcp::Socket::new(
            tcp::SocketBuffer::new(alloc::vec![0u8; TCP_BUFFER]),
            tcp::SocketBuffer::new(alloc::vec![0u8; TCP_BUFFER]),
        );
        self.sockets.add(s)
    }

    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// The next local port for a connection (49152 to 65535, skipping
    /// ports a socket uses).
    fn ephemeral(&mut self) -> u16 {
        loop {
            let p = self.next_port;
            self.next_port = if p == u16::MAX { EPHEMERAL } else { p + 1 };
            let used = self.sockets.iter().any(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => t.local_endpoint().is_some_and(|e| e.port == p),
                _ => false,
            });
            if !used {
                return p;
            }
        }
    }
}

/// Polls and sleeps until `f` has an answer or `timeout_ns` passes; after
/// an answer, polls once more so what `f` queued goes out.
fn block<T>(
    inner: &RefCell<Inner>,
    timeout_ns: u64,
    mut f: impl FnMut(&mut Inner) -> Option<Result<T, Error>>,
) -> Result<T, Error> {
    let deadline = time::system_time_ns().saturating_add(timeout_ns);
    let mut g = inner.borrow_mut();
    loop {
        g.poll()?;
        if let Some(r) = f(&mut g) {
            if r.is_ok() {
                g.poll()?;
            }
            return r;
        }
        if time::system_time_ns() >= deadline {
            return Err(Error::Timeout);
        }
        g.sleep(deadline)?;
    }
}

/// A vif with TCP/IP: the [`Nic`], its `smoltcp` interface and sockets.
/// Sockets made from it share it (an `Rc`), so it lives while they do.
#[derive(Debug)]
pub struct Stack {
    inner: Rc<RefCell<Inner>>,
}

impl Stack {
    /// A stack on a connected vif, without an address yet.
    pub fn new(mut nic: Nic) -> Stack {
        let iface = nic.interface();
        let seed = time::system_time_ns();
        #[allow(clippy::cast_possible_truncation)] // a port in 49152..65535
        let next_port = EPHEMERAL + (seed % u64::from(u16::MAX - EPHEMERAL)) as u16;
        Stack {
            inner: Rc::new(RefCell::new(Inner {
                nic,
                iface,
                sockets: SocketSet::new(Vec::new()),
                dhcp: None,
                lease: None,
                gateway: None,
                closing: Vec::new(),
                next_port,
                next_ident: next_port,
                fatal: None,
            })),
        }
    }

    /// Connects to `device/vif/<n>` ([`Nic::open`]) and makes a stack on it.
    pub fn open(n: u32, timeout_ns: u64) -> Result<Stack, Error> {
        Ok(Stack::new(Nic::open(n, timeout_ns)?))
    }

    /// The vif's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.inner.borrow_mut().nic.device().mac()
    }

    /// The front end's counters.
    pub fn stats(&self) -> netfront::Stats {
        self.inner.borrow_mut().nic.device().stats()
    }

    /// Gets an address by DHCP (RFC 2131, `smoltcp`'s client): waits up to
    /// `timeout_ns` for a lease, configures the address and the default
    /// route, and returns the lease. The client stays: it renews the lease
    /// (or, losing it, takes the address away) while the stack is polled,
    /// by any blocking call or [`Stack::poll`]/[`Stack::wait`]. Calling it
    /// again returns the current lease, or waits for one.
    pub fn dhcp(&self, timeout_ns: u64) -> Result<Lease, Error> {
        {
            let mut g = self.inner.borrow_mut();
            if g.dhcp.is_none() {
                let mut s = dhcpv4::Socket::new();
                // The ACK is kept for its lease times (and with a buffer
                // every renewal is reported). One per stack.
                s.set_receive_packet_buffer(Box::leak(alloc::vec![0u8; 1500].into_boxed_slice()));
                let h = g.sockets.add(s);
                g.dhcp = Some(h);
            }
        }
        block(&self.inner, timeout_ns, |g| g.lease.clone().map(Ok))
    }

    /// The current DHCP lease, if any.
    pub fn lease(&self) -> Option<Lease> {
        self.inner.borrow().lease.clone()
    }

    /// Sets a static address and default gateway (stopping the DHCP client
    /// if one runs).
    pub fn set_static(&self, cidr: Ipv4Cidr, gateway: Option<Ipv4Address>) -> Result<(), Error> {
        let mut g = self.inner.borrow_mut();
        if let Some(h) = g.dhcp.take() {
            g.sockets.remove(h);
            g.lease = None;
        }
        g.configure(cidr, gateway)
    }

    /// The interface's IPv4 address and prefix, once it has one.
    pub fn address(&self) -> Option<Ipv4Cidr> {
        let g = self.inner.borrow();
        g.iface.ip_addrs().iter().map(|IpCidr::Ipv4(c)| *c).next()
    }

    /// The default gateway, if there is one.
    pub fn gateway(&self) -> Option<Ipv4Address> {
        self.inner.borrow().gateway
    }

    /// Runs the interface once without sleeping: frames in and out,
    /// timers, the DHCP client.
    pub fn poll(&self) -> Result<(), Error> {
        self.inner.borrow_mut().poll()
    }

    /// Polls, then sleeps on the vif's event channel until a frame comes,
    /// `smoltcp` has a timer due (`poll_delay`), or `max_ns` passes; then
    /// polls again.
    pub fn wait(&self, max_ns: u64) -> Result<(), Error> {
        let deadline = time::system_time_ns().saturating_add(max_ns);
        let mut g = self.inner.borrow_mut();
        g.poll()?;
        g.sleep(deadline)?;
        g.poll()
    }

    /// Opens a TCP connection to `addr:port` from an ephemeral port,
    /// waiting up to `timeout_ns` for it to be established.
    pub fn connect(
        &self,
        addr: Ipv4Address,
        port: u16,
        timeout_ns: u64,
    ) -> Result<TcpStream, Error> {
        let h = {
            let mut g = self.inner.borrow_mut();
            if g.iface.ipv4_addr().is_none() {
                return Err(Error::NoAddress);
            }
            let local = g.ephemeral();
            let h = g.new_tcp();
            let Inner { iface, sockets, .. } = &mut *g;
            let r = sockets
                .get_mut::<tcp::Socket>(h)
                .connect(iface.context(), (addr, port), local);
            if let Err(e) = r {
                sockets.remove(h);
                return Err(Error::Invalid(match e {
                    tcp::ConnectError::InvalidState => "connect: socket in use",
                    tcp::ConnectError::Unaddressable => "connect: unaddressable",
                }));
            }
            h
        };
        let stream = TcpStream {
            stack: self.inner.clone(),
            handle: h,
        };
        block(&self.inner, timeout_ns, |g| match g.tcp(h).state() {
            tcp::State::SynSent | tcp::State::SynReceived => None,
            tcp::State::Closed => Some(Err(Error::Refused)),
            _ => Some(Ok(())),
        })?;
        Ok(stream)
    }

    /// Listens for TCP connections on `port` (any local address).
    pub fn listen(&self, port: u16) -> Result<TcpListener, Error> {
        if port == 0 {
            return Err(Error::Invalid("listen: port 0"));
        }
        let mut g = self.inner.borrow_mut();
        let mut handles = Vec::new();
        for _ in 0..BACKLOG {
            let h = g.new_tcp();
            handles.push(h);
            if g.tcp(h).listen(port).is_err() {
                for h in handles {
                    g.sockets.remove(h);
                }
                return Err(Error::Invalid("listen: port in use"));
            }
        }
        Ok(TcpListener {
            stack: self.inner.clone(),
            port,
            handles,
        })
    }

    /// Sends one ICMP echo request to `addr` and waits up to `timeout_ns`
    /// for its reply; the round trip in nanoseconds. (The stack answers
    /// other hosts' echo requests itself.)
    pub fn ping(&self, addr: Ipv4Address, timeout_ns: u64) -> Result<u64, Error> {
        const PAYLOAD: &[u8] = b"pv-runtime ping.";
        let (h, ident) = {
            let mut g = self.inner.borrow_mut();
            if g.iface.ipv4_addr().is_none() {
                return Err(Error::NoAddress);
            }
            let ident = g.next_ident;
            g.next_ident = ident.wrapping_add(1);
            let buf = || {
                icmp::PacketBuffer::new(
                    alloc::vec![icmp::PacketMetadata::EMPTY; 4],
                    alloc::vec![0u8; 512],
                )
            };
            let mut s = icmp::Socket::new(buf(), buf());
            s.bind(icmp::Endpoint::Ident(ident))
                .map_err(|_| Error::Invalid("ping: identifier in use"))?;
            (g.sockets.add(s), ident)
        };
        let caps = ChecksumCapabilities::default();
        let t0 = time::system_time_ns();
        let mut sent = false;
        let r = block(&self.inner, timeout_ns, |g| {
            let s = g.sockets.get_mut::<icmp::Socket>(h);
            if !sent {
                let req = Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: 1,
                    data: PAYLOAD,
                };
                match s.send(req.buffer_len(), addr.into()) {
                    Ok(b) => req.emit(&mut Icmpv4Packet::new_unchecked(b), &caps),
                    Err(_) => return Some(Err(Error::Invalid("ping: unaddressable"))),
                }
                sent = true;
                return None;
            }
            while let Ok((data, _)) = s.recv() {
                let reply = Icmpv4Packet::new_checked(data)
                    .ok()
                    .and_then(|p| Icmpv4Repr::parse(&p, &caps).ok());
                if let Some(Icmpv4Repr::EchoReply {
                    ident: i,
                    seq_no: 1,
                    data: d,
                }) = reply
                {
                    if i == ident && d == PAYLOAD {
                        return Some(Ok(time::system_time_ns() - t0));
                    }
                }
            }
            None
        });
        self.inner.borrow_mut().sockets.remove(h);
        r
    }

    /// A UDP socket bound to `port` (any local address).
    pub fn udp_bind(&self, port: u16) -> Result<UdpSocket, Error> {
        let mut g = self.inner.borrow_mut();
        let buf = || {
            udp::PacketBuffer::new(
                alloc::vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                alloc::vec![0u8; UDP_BUFFER],
            )
        };
        let mut s = udp::Socket::new(buf(), buf());
        s.bind(port)
            .map_err(|_| Error::Invalid("udp bind: port 0 or in use"))?;
        let handle = g.sockets.add(s);
        Ok(UdpSocket {
            stack: self.inner.clone(),
            handle,
        })
    }
}

/// A TCP connection. Dropping it closes it in the background (the stack
/// finishes the FIN handshake while it is polled); [`TcpStream::close`]
/// waits for that.
#[derive(Debug)]
pub struct TcpStream {
    stack: Rc<RefCell<Inner>>,
    handle: SocketHandle,
}

impl TcpStream {
    /// The peer's address and port.
    pub fn peer(&self) -> Option<(Ipv4Address, u16)> {
        let mut g = self.stack.borrow_mut();
        g.tcp(self.handle).remote_endpoint().map(|e| match e.addr {
            smoltcp::wire::IpAddress::Ipv4(a) => (a, e.port),
        })
    }

    /// Reads what has arrived into `buf`, waiting up to `timeout_ns` for
    /// something; the byte count, 0 once the peer has closed its side and
    /// everything before its FIN was read.
    pub fn read(&mut self, buf: &mut [u8], timeout_ns: u64) -> Result<usize, Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        block(&self.stack, timeout_ns, |g| {
            let s = g.tcp(h);
            if s.can_recv() {
                return Some(s.recv_slice(buf).map_err(|_| Error::Reset));
            }
            if s.state() == tcp::State::Closed {
                return Some(Err(Error::Reset));
            }
            (!s.may_recv()).then_some(Ok(0))
        })
    }

    /// Queues as much of `data` as fits in the send buffer, waiting up to
    /// `timeout_ns` for room; the byte count (at least 1 unless `data` is
    /// empty).
    pub fn write(&mut self, data: &[u8], timeout_ns: u64) -> Result<usize, Error> {
        if data.is_empty() {
            return Ok(0);
        }
        let h = self.handle;
        block(&self.stack, timeout_ns, |g| {
            let s = g.tcp(h);
            if s.state() == tcp::State::Closed {
                return Some(Err(Error::Reset));
            }
            if !s.may_send() {
                return Some(Err(Error::Closed));
            }
            match s.send_slice(data) {
                Ok(0) => None,
                Ok(n) => Some(Ok(n)),
                Err(_) => Some(Err(Error::Closed)),
            }
        })
    }

    /// Writes all of `data`, waiting up to `timeout_ns` in all.
    pub fn write_all(&mut self, mut data: &[u8], timeout_ns: u64) -> Result<(), Error> {
        let deadline = time::system_time_ns().saturating_add(timeout_ns);
        while !data.is_empty() {
            let left = deadline.saturating_sub(time::system_time_ns());
            let n = self.write(data, left)?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Closes our side: sends what is queued and a FIN, and waits up to
    /// `timeout_ns` until the peer acknowledged the data (and our FIN, if
    /// we closed first; then up to [`CLOSE_LINGER_NS`] more for the peer's
    /// FIN, so that it is acknowledged before a guest that stops next
    /// goes). The stack finishes the close in the background. At the
    /// timeout the connection is reset.
    pub fn close(self, timeout_ns: u64) -> Result<(), Error> {
        let h = self.handle;
        {
            let mut g = self.stack.borrow_mut();
            let s = g.tcp(h);
            // From here on, acknowledge at once: the guest may stop soon.
            s.set_ack_delay(None);
            s.close();
        }
        let r = block(&self.stack, timeout_ns, |g| {
            let s = g.tcp(h);
            match s.state() {
                // The peer closed first: our data is acknowledged, the
                // FIN's acknowledgement is the background's business.
                tcp::State::FinWait2
                | tcp::State::TimeWait
                | tcp::State::Closed
                | tcp::State::LastAck
                    if s.send_queue() == 0 =>
                {
                    Some(Ok(()))
                }
                _ => None,
            }
        });
        if r.is_err() {
            self.stack.borrow_mut().tcp(h).abort();
            return r;
        }
        let linger = CLOSE_LINGER_NS.min(timeout_ns);
        let peer_closed = |g: &mut Inner| {
            let st = g.tcp(h).state();
            (st != tcp::State::FinWait2).then_some(Ok(()))
        };
        match block(&self.stack, linger, peer_closed) {
            Err(Error::Timeout) => Ok(()),
            r => r,
        }
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        if let Ok(mut g) = self.stack.try_borrow_mut() {
            g.tcp(self.handle).close();
            let deadline = time::system_time_ns().saturating_add(LINGER_NS);
            g.closing.push((self.handle, deadline));
        }
    }
}

/// Sockets listening on a TCP port; [`TcpListener::accept`] hands out the
/// connections.
#[derive(Debug)]
pub struct TcpListener {
    stack: Rc<RefCell<Inner>>,
    port: u16,
    handles: Vec<SocketHandle>,
}

impl TcpListener {
    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits up to `timeout_ns` for a connection and returns it (a new
    /// socket takes its place listening).
    pub fn accept(&mut self, timeout_ns: u64) -> Result<TcpStream, Error> {
        let (port, handles) = (self.port, &mut self.handles);
        let h = block(&self.stack, timeout_ns, |g| {
            for slot in handles.iter_mut() {
                let s = g.tcp(*slot);
                match s.state() {
                    tcp::State::Listen | tcp::State::SynReceived => {}
                    // Reset or timed out before we took it: listen again.
                    tcp::State::Closed => {
                        let _ = s.listen(port);
                    }
                    _ => {
                        let fresh = g.new_tcp();
                        if g.tcp(fresh).listen(port).is_err() {
                            g.sockets.remove(fresh);
                            return Some(Err(Error::Invalid("listen again")));
                        }
                        return Some(Ok(core::mem::replace(slot, fresh)));
                    }
                }
            }
            None
        })?;
        Ok(TcpStream {
            stack: self.stack.clone(),
            handle: h,
        })
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        if let Ok(mut g) = self.stack.try_borrow_mut() {
            for h in self.handles.drain(..) {
                g.tcp(h).abort();
                g.sockets.remove(h);
            }
        }
    }
}

/// A bound UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    stack: Rc<RefCell<Inner>>,
    handle: SocketHandle,
}

impl UdpSocket {
    /// Sends `data` as one datagram to `addr:port`, waiting up to
    /// `timeout_ns` for room in the send buffer.
    pub fn send_to(
        &mut self,
        data: &[u8],
        addr: Ipv4Address,
        port: u16,
        timeout_ns: u64,
    ) -> Result<(), Error> {
        if data.len() > UDP_BUFFER {
            return Err(Error::Invalid("datagram larger than the send buffer"));
        }
        let h = self.handle;
        block(&self.stack, timeout_ns, |g| {
            if g.iface.ipv4_addr().is_none() {
                return Some(Err(Error::NoAddress));
            }
            let s = g.sockets.get_mut::<udp::Socket>(h);
            match s.send_slice(data, (addr, port)) {
                Ok(()) => Some(Ok(())),
                Err(udp::SendError::BufferFull) => None,
                Err(udp::SendError::Unaddressable) => Some(Err(Error::Invalid("unaddressable"))),
            }
        })
    }

    /// Waits up to `timeout_ns` for a datagram and copies it into `buf`
    /// (cut to `buf`'s length); the bytes copied, the sender's address and
    /// port.
    pub fn recv_from(
        &mut self,
        buf: &mut [u8],
        timeout_ns: u64,
    ) -> Result<(usize, Ipv4Address, u16), Error> {
        let h = self.handle;
        block(&self.stack, timeout_ns, |g| {
            let s = g.sockets.get_mut::<udp::Socket>(h);
            let (data, meta) = s.recv().ok()?;
            let n = data.len().min(buf.len());
            buf[..n].copy_from_slice(&data[..n]);
            let smoltcp::wire::IpAddress::Ipv4(a) = meta.endpoint.addr;
            Some(Ok((n, a, meta.endpoint.port)))
        })
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        if let Ok(mut g) = self.stack.try_borrow_mut() {
            g.sockets.remove(self.handle);
        }
    }
}
