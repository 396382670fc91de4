//! TCP/IP for guests: [`smoltcp`] over the net front end ([`netfront`]).
//! [`Nic`] is a `smoltcp::phy::Device` on a connected vif; [`now`] is the
//! clock `smoltcp` wants. See `docs/net.md`.
//!
//! ```ignore
//! use pv_runtime::net::{Nic, now, smoltcp};
//! let mut nic = Nic::open(0, 20_000_000_000)?;
//! let mut iface = nic.interface();                 // its MAC, no address yet
//! iface.update_ip_addrs(|a| { let _ = a.push(smoltcp::wire::IpCidr::new(ip.into(), 24)); });
//! loop { iface.poll(now(), &mut nic, &mut sockets); /* sockets */ nic.wait(delay)?; }
//! ```

extern crate alloc;

use alloc::vec::Vec;

pub use smoltcp;
use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress};

use crate::netfront::{self, Device, Error};
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
    error: Option<Error>,
}

impl Nic {
    /// Connects to `device/vif/<n>` ([`Device::open`]).
    pub fn open(n: u32, timeout_ns: u64) -> Result<Nic, Error> {
        Ok(Nic {
            dev: Device::open(n, timeout_ns)?,
            error: None,
        })
    }

    /// An interface with the vif's MAC (add addresses and routes to it).
    pub fn interface(&mut self) -> Interface {
        let mac = EthernetAddress(self.dev.mac());
        Interface::new(Config::new(HardwareAddress::Ethernet(mac)), self, now())
    }

    /// The front end.
    pub fn device(&mut self) -> &mut Device {
        &mut self.dev
    }

    /// The first error the front end returned (the device is then unusable
    /// if it is [`Error::Broken`]).
    pub fn error(&self) -> Option<&Error> {
        self.error.as_ref()
    }

    /// Sleeps until a frame arrives or `timeout_us` passes.
    pub fn wait(&mut self, timeout_us: u64) -> Result<bool, Error> {
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
    error: &'a mut Option<Error>,
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
