//! The pure logic of the PV guest runtime (`pv-runtime`), kept apart so that it
//! builds and is tested on the host.
//!
//! Nothing here touches the machine: every function takes the numbers the
//! runtime read from `start_info`, `shared_info` or the hypervisor, and returns
//! plain values. The runtime crate does the reading.
//!
//! * [`layout`]: where the builder's bootstrap region ends, which part of it is
//!   free for a heap, and which pseudo-physical frames are free.
//! * [`heap`]: a first-fit range allocator over a fixed address range.
//! * [`events`]: the event-channel handler table, the 2-level demultiplexer's
//!   order, deadline and rate arithmetic.
//! * [`devmem`]: device-visible memory for drivers: when a buffer can go to a
//!   device as it is, the buffers being bounced, the window for device registers.
//! * [`dma`]: the arithmetic of machine-contiguous DMA buffers (exchange orders,
//!   `address_bits` from a device's highest address, contiguity checks).
//! * [`frames`]: a frame allocator over the guest's free pseudo-physical frames.
//! * [`pt`]: page-table arithmetic (indices, spans, canonical and hypervisor
//!   ranges, entry machine addresses, how many tables a range needs).
//! * [`mapper`]: the mapping engine: walks and creates page tables and turns
//!   map/unmap requests into batches of `mmu_update` requests.
//! * [`gnttab`]: grant references (an allocator that skips the reserved
//!   entries) and the v1 entry flags protocol.
//! * [`time`]: wall-clock arithmetic and a seqlock reader.
//! * [`text`]: a fixed-size line buffer for console output, helpers for the
//!   NUL-terminated buffers hypercalls fill, and `key=value` command lines.
//! * [`blkfront`]: the block front end (`io/blkif.h`): the XenBus handshake's
//!   decisions, request building, in-flight tracking and response matching over
//!   a shared ring, with the I/O left to the runtime.
//! * [`netfront`]: the network front end (`io/netif.h`): the handshake's keys,
//!   buffer ids and response checks, raw ARP and ICMP frames.
//! * [`net`]: command-line addresses and DHCP lease times for the runtime's
//!   TCP/IP (`pv_runtime::net`).
//! * [`xenbus`]: the XenStore client (wire format, reply matching, watches,
//!   transactions, ring reset) and the front-end XenBus state machine. It
//!   and [`blkfront`] allocate (`alloc`); the others do not.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod blkfront;
pub mod devmem;
pub mod dma;
pub mod events;
pub mod frames;
pub mod gnttab;
pub mod heap;
pub mod layout;
pub mod mapper;
pub mod net;
pub mod netfront;
pub mod pt;
pub mod smp;
pub mod text;
pub mod time;
pub mod xenbus;
