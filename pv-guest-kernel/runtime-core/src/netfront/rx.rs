//! Buffer ids and the checks on the back end's responses. A front end owns
//! `n` TX and `n` RX buffer pages, each with a fixed id (its index); an id
//! is either free or out (posted to or sent on a ring). A response must
//! name an id that is out, and an RX one must stay inside its page: a
//! back end that breaks either is hostile and the device stops.

use alloc::vec::Vec;

use hypercall_abi::io::netif::{
    NETIF_RSP_NULL, NETIF_RSP_OKAY, NETRXF_EXTRA_INFO, NETRXF_MORE_DATA, NetifRxResponse,
    NetifTxResponse,
};

const PAGE: usize = 4096;

/// What a back end did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// A response for an id that is not out.
    UnknownId(u16),
    /// An RX response past the end of its page.
    PastPage {
        /// Offset.
        offset: u16,
        /// Bytes.
        len: i16,
    },
    /// A multi-slot or extra-info RX packet (not asked for: `feature-sg` 0).
    Unrequested(u16),
    /// A producer index claiming more responses than requests.
    Ring,
}

/// Ids `0..n`, each free or out.
#[derive(Debug, Clone)]
pub struct Ids {
    out: Vec<bool>,
    free: Vec<u16>,
}

impl Ids {
    /// `n` ids, all free (at most 65536).
    pub fn new(n: usize) -> Self {
        let n = n.min(1 << 16);
        Ids {
            out: alloc::vec![false; n],
            #[allow(clippy::cast_possible_truncation)] // n ≤ 65536
            free: (0..n).rev().map(|i| i as u16).collect(),
        }
    }

    /// A free id, now out.
    pub fn take(&mut self) -> Option<u16> {
        let id = self.free.pop()?;
        self.out[usize::from(id)] = true;
        Some(id)
    }

    /// Gives `id` back; an id that was not out is the back end's lie.
    pub fn put(&mut self, id: u16) -> Result<(), Hostile> {
        match self.out.get_mut(usize::from(id)) {
            Some(o) if *o => {
                *o = false;
                self.free.push(id);
                Ok(())
            }
            _ => Err(Hostile::UnknownId(id)),
        }
    }

    /// Ids free.
    pub fn free(&self) -> usize {
        self.free.len()
    }

    /// Ids out.
    pub fn out(&self) -> usize {
        self.out.len() - self.free.len()
    }
}

/// What one RX response means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxResult {
    /// A frame: `len` bytes at `offset` of buffer `id`.
    Frame {
        /// The buffer.
        id: u16,
        /// Where the frame starts.
        offset: u16,
        /// Its length.
        len: usize,
    },
    /// The buffer came back without a frame (an error status).
    Empty(u16),
}

/// Checks an RX response and returns its buffer id to `ids`.
pub fn rx_response(rsp: &NetifRxResponse, ids: &mut Ids) -> Result<RxResult, Hostile> {
    ids.put(rsp.id)?;
    if rsp.flags & (NETRXF_MORE_DATA | NETRXF_EXTRA_INFO) != 0 {
        return Err(Hostile::Unrequested(rsp.id));
    }
    if rsp.status <= 0 {
        return Ok(RxResult::Empty(rsp.id));
    }
    let len = usize::from(rsp.status.unsigned_abs());
    if usize::from(rsp.offset) + len > PAGE {
        return Err(Hostile::PastPage {
            offset: rsp.offset,
            len: rsp.status,
        });
    }
    Ok(RxResult::Frame {
        id: rsp.id,
        offset: rsp.offset,
        len,
    })
}

/// Checks a TX response (one slot per frame: no `NETIF_RSP_NULL`) and
/// returns its buffer id to `ids`. `Ok(true)` when the frame was sent.
pub fn tx_response(rsp: &NetifTxResponse, ids: &mut Ids) -> Result<bool, Hostile> {
    if rsp.status == NETIF_RSP_NULL {
        return Err(Hostile::UnknownId(rsp.id));
    }
    ids.put(rsp.id)?;
    Ok(rsp.status == NETIF_RSP_OKAY)
}
