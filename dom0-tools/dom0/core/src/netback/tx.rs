//! The checks on a front end's TX slots (Linux's `xenvif_get_extras` and
//! `xenvif_count_requests`): one packet is a first request, its extra-info
//! slots (`NETTXF_extra_info`, chained by `XEN_NETIF_EXTRA_FLAG_MORE`), then
//! the requests its `NETTXF_more_data` chain names. The first request's
//! `size` is the whole packet's; every other one's is its own.

use alloc::vec::Vec;

use hypercall_abi::GrantRef;
use hypercall_abi::io::netif::{
    NETTXF_EXTRA_INFO, NETTXF_MORE_DATA, NetifExtraInfo, NetifTxRequest, XEN_NETIF_EXTRA_FLAG_MORE,
    XEN_NETIF_EXTRA_TYPE_GSO, XEN_NETIF_EXTRA_TYPE_HASH, XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    XEN_NETIF_EXTRA_TYPE_MCAST_DEL, XEN_NETIF_NR_SLOTS_MIN,
};
use zerocopy::{FromBytes, IntoBytes};

use super::gso::{Gso, GsoError};

/// Smallest packet (an Ethernet header, `ETH_HLEN`).
pub const ETH_HLEN: usize = 14;
const PAGE: usize = 4096;

/// A piece of a packet: bytes `offset..offset + len` of a granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frag {
    /// The grant.
    pub gref: GrantRef,
    /// Where the bytes start in the page.
    pub offset: u16,
    /// How many (`offset + len` ≤ 4096).
    pub len: u16,
}

/// Why a packet is dropped (each of its request slots answered
/// `NETIF_RSP_ERROR`, its extra slots `NETIF_RSP_NULL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxError {
    /// More than [`XEN_NETIF_NR_SLOTS_MIN`] data slots.
    TooManySlots,
    /// Shorter than an Ethernet header.
    TooShort,
    /// A later slot claims more bytes than the first slot's size leaves.
    SizeMismatch,
    /// A slot's `offset + size` passes the end of its page.
    CrossesPage,
    /// An extra-info slot of an unknown type.
    BadExtra,
    /// A GSO extra Linux's `xenvif_set_skb_gso` refuses (a zero size, an
    /// unknown GSO type), or a GSO packet whose headers cannot be segmented
    /// (found once it is copied in).
    BadGso(GsoError),
    /// The published slots end inside the packet.
    Unterminated,
}

/// What to do with one packet's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Copy the frags in order: a frame of `len` bytes.
    Send {
        /// The pieces.
        frags: Vec<Frag>,
        /// Their total (the first slot's `size`).
        len: usize,
        /// The first slot's `NETTXF_*`.
        flags: u16,
        /// Its GSO extra (the last one, if several).
        gso: Option<Gso>,
    },
    /// A multicast filter request (an `XEN_NETIF_EXTRA_TYPE_MCAST_ADD` or
    /// `_DEL` extra: Linux's `xenvif_mcast_add`/`del`): nothing is sent; an
    /// add is answered `NETIF_RSP_OKAY`, or `NETIF_RSP_ERROR` when the
    /// vif's list is full, a delete `NETIF_RSP_OKAY`.
    Mcast(McastOp),
    /// Answer with errors.
    Drop(TxError),
}

/// A multicast filter change. A packet with both kinds of extra is an add
/// (Linux looks at the add first); with several of one kind, the last one
/// counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum McastOp {
    /// Add this address to the vif's list.
    Add([u8; 6]),
    /// Remove it.
    Del([u8; 6]),
}

/// One packet's slots and what to do with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Per slot taken, in ring order: `Some(id)` for a request (answered
    /// with that id), `None` for an extra-info slot (answered `NETIF_RSP_NULL`).
    pub slots: Vec<Option<u16>>,
    /// The verdict.
    pub verdict: Verdict,
}

/// An extra-info slot's view of a TX slot (its first 8 bytes).
pub fn extra_info(slot: &NetifTxRequest) -> NetifExtraInfo {
    NetifExtraInfo::read_from_bytes(&slot.as_bytes()[..8]).unwrap_or_default()
}

/// Reads the packet at the start of `slots` (the published slots not yet
/// taken); `None` when there are none. A packet whose chain runs past the
/// published slots is dropped with them ([`TxError::Unterminated`]): a front
/// end publishes a packet's slots together (Linux's back end calls this a
/// fatal error).
pub fn parse(slots: &[NetifTxRequest]) -> Option<Packet> {
    let first = *slots.first()?;
    let mut taken: Vec<Option<u16>> = alloc::vec![Some(first.id)];
    let mut err: Option<TxError> = None;
    let mut mcast_add: Option<[u8; 6]> = None;
    let mut mcast_del: Option<[u8; 6]> = None;
    let mut gso: Option<Gso> = None;
    let mut i = 1usize;
    let unterminated = |taken: Vec<Option<u16>>| -> Option<Packet> {
        Some(Packet {
            slots: taken,
            verdict: Verdict::Drop(TxError::Unterminated),
        })
    };
    if first.flags & NETTXF_EXTRA_INFO != 0 {
        loop {
            let Some(slot) = slots.get(i) else {
                return unterminated(taken);
            };
            i += 1;
            taken.push(None);
            let x = extra_info(slot);
            match x.type_ {
                XEN_NETIF_EXTRA_TYPE_MCAST_ADD => mcast_add = Some(x.mcast_addr()),
                XEN_NETIF_EXTRA_TYPE_MCAST_DEL => mcast_del = Some(x.mcast_addr()),
                XEN_NETIF_EXTRA_TYPE_HASH => {}
                XEN_NETIF_EXTRA_TYPE_GSO => {
                    let (size, gso_type, _features) = x.gso();
                    match Gso::from_extra(size, gso_type) {
                        Ok(g) => gso = Some(g),
                        Err(e) => {
                            err.get_or_insert(TxError::BadGso(e));
                        }
                    }
                }
                _ => {
                    err.get_or_insert(TxError::BadExtra);
                }
            }
            if x.flags & XEN_NETIF_EXTRA_FLAG_MORE == 0 {
                break;
            }
        }
    }
    let mut frags: Vec<Frag> = alloc::vec![Frag {
        gref: first.gref,
        offset: first.offset,
        len: 0,
    }];
    let mut more = first.flags & NETTXF_MORE_DATA != 0;
    let mut remaining = usize::from(first.size);
    while more {
        let Some(slot) = slots.get(i) else {
            return unterminated(taken);
        };
        i += 1;
        taken.push(Some(slot.id));
        more = slot.flags & NETTXF_MORE_DATA != 0;
        let len = usize::from(slot.size);
        if len > remaining {
            err.get_or_insert(TxError::SizeMismatch);
        }
        remaining = remaining.saturating_sub(len);
        if usize::from(slot.offset) + len > PAGE {
            err.get_or_insert(TxError::CrossesPage);
        }
        frags.push(Frag {
            gref: slot.gref,
            offset: slot.offset,
            len: slot.size,
        });
    }
    if frags.len() > XEN_NETIF_NR_SLOTS_MIN as usize {
        err = Some(TxError::TooManySlots);
    }
    // What is left of the first slot's size is its own part.
    frags[0].len = u16::try_from(remaining).unwrap_or(u16::MAX);
    if usize::from(first.offset) + remaining > PAGE {
        err.get_or_insert(TxError::CrossesPage);
    }
    let verdict = if let Some(e) = err {
        Verdict::Drop(e)
    } else if let Some(a) = mcast_add {
        Verdict::Mcast(McastOp::Add(a))
    } else if let Some(a) = mcast_del {
        Verdict::Mcast(McastOp::Del(a))
    } else if usize::from(first.size) < ETH_HLEN {
        Verdict::Drop(TxError::TooShort)
    } else {
        // Empty slots stay: their grant references are checked by the copy too, as
        // Linux's netback maps every slot of a packet (a bad reference fails it).
        Verdict::Send {
            frags,
            len: usize::from(first.size),
            flags: first.flags,
            gso,
        }
    };
    Some(Packet {
        slots: taken,
        verdict,
    })
}
