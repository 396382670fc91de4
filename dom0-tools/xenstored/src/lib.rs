//! The XenStore daemon's logic, speaking Xen 4.17's wire protocol
//! (`io/xs_wire.h`, `docs/misc/xenstore.txt`), host-tested; see
//! `docs/xenstore.md`.
//!
//! [`Xenstored`] holds the tree and one connection per domain, plus dom0's
//! own in-process connection (domid 0):
//!
//! * [`Xenstored::request`] handles one message and queues the reply and any
//!   watch events on the connections' bounded output queues;
//! * [`Xenstored::service_ring`] serves a domain's ring page (reassembly,
//!   buffering, bounds, errors, reconnection) and says whether to notify;
//! * [`Xenstored::pop_output`] drains a connection served without a ring;
//! * [`Xenstored::introduce_domain`], [`Xenstored::release_domain`] and the
//!   direct `read`/`write`/`mkdir`/`rm`/`directory`/`get_perms`/`set_perms`
//!   calls are the toolstack's API (as dom0, firing watches like the wire).
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

extern crate alloc;

mod daemon;
pub mod error;
pub mod limits;
pub mod path;
pub mod perms;
pub mod ring;
mod store;

pub use daemon::{
    DOMID_FIRST_RESERVED, DOMID_SELF, DomainInfo, INTRODUCE_DOMAIN, Message, RELEASE_DOMAIN,
    Xenstored,
};
pub use error::Error;
pub use limits::Quotas;
pub use perms::{Access, Perm, Who};
pub use ring::Service;
pub use store::Node;
