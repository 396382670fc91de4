//! The network front end (`xen/include/public/io/netif.h`), without I/O.
//!
//! A guest reaches a vif the way Linux's `xen-netfront` does: it finds it
//! under `device/vif/<n>` (its `backend`, `backend-id` and `mac`), waits for
//! the back end's InitWait, shares a TX and an RX ring and an event channel,
//! writes `tx-ring-ref`, `rx-ring-ref`, `event-channel`, `request-rx-copy`
//! and `feature-rx-notify`, and goes Connected. `pv_runtime::netfront` does
//! the XenStore, grant, event-channel and memory work around these
//! decisions:
//!
//! * [`handshake`]: the keys read and written, and what the back end's mean;
//! * [`rx`]: RX buffer ids and the checks on the back end's RX and TX
//!   responses (it is not trusted);
//! * [`backend`]: noticing a back end that goes away once connected
//!   (hot-unplug);
//! * [`frames`]: raw Ethernet, ARP, IPv4 and ICMP echo frames (the
//!   `netcheck` test guest's ping).

pub mod backend;
pub mod frames;
pub mod handshake;
pub mod rx;

#[cfg(test)]
mod tests;
