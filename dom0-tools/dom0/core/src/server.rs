//! The link's byte stream in, responses out: framing, the quiet-link rule, and
//! one response per request (`docs/control-protocol.md`, "The agent's side").

use alloc::format;
use alloc::vec::Vec;

use control_proto::{ErrorCode, FrameDecoder, Request, Response};

use crate::agent::{After, Agent};
use crate::hv::Hypervisor;
use crate::uploads::UploadStore;

/// A partial frame on a link quiet this long is garbage (a dead session's
/// tail) and is searched past.
pub const QUIET_NS: u64 = 500_000_000;
/// After the last byte arrived, the link counts as busy this long: the
/// caller keeps polling instead of sleeping, so the next request of a
/// burst (an upload's next chunk) is taken at once.
pub const BUSY_NS: u64 = 20_000_000;

/// Something that answers requests (the [`Agent`]; tests use others).
pub trait Handler {
    /// Answers one request.
    fn handle(&mut self, req: Request) -> (Response, After);
}

impl<H: Hypervisor, S: UploadStore> Handler for Agent<'_, H, S> {
    fn handle(&mut self, req: Request) -> (Response, After) {
        Agent::handle(self, req)
    }
}

/// What went over the link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Requests decoded.
    pub requests: u64,
    /// Damaged, foreign or undecodable frames.
    pub bad_frames: u64,
    /// Partial frames given up on a quiet link.
    pub abandoned: u64,
    /// Bytes of responses produced.
    pub bytes_out: u64,
}

/// The server side of the link.
#[derive(Debug)]
pub struct Server {
    dec: FrameDecoder,
    last_rx_ns: Option<u64>,
    stats: Stats,
}

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    /// A server with an empty decoder.
    pub fn new() -> Self {
        Server {
            dec: FrameDecoder::new(),
            last_rx_ns: None,
            stats: Stats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Takes bytes read from the link at `now_ns`, answers every complete
    /// request into `out`, and says whether one asked to power off (then the
    /// bytes after that request are dropped).
    pub fn receive(
        &mut self,
        mut data: &[u8],
        now_ns: u64,
        h: &mut impl Handler,
        out: &mut Vec<u8>,
    ) -> After {
        if data.is_empty() {
            return After::Continue;
        }
        self.last_rx_ns = Some(now_ns);
        self.stats.bytes_in += data.len() as u64;
        while !data.is_empty() {
            let n = self.dec.push(data);
            data = &data[n..];
            if self.drain(h, out) == After::PowerOff {
                return After::PowerOff;
            }
        }
        After::Continue
    }

    /// Call when nothing arrived: once the link has been quiet for
    /// [`QUIET_NS`] with a partial frame buffered, drops one byte of it and
    /// searches again (once per call, so a long garbage run never holds the
    /// loop).
    pub fn idle(&mut self, now_ns: u64, h: &mut impl Handler, out: &mut Vec<u8>) -> After {
        let quiet = self
            .last_rx_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= QUIET_NS);
        if !quiet || self.dec.buffered() == 0 {
            return After::Continue;
        }
        self.dec.abandon_partial();
        self.stats.abandoned += 1;
        self.drain(h, out)
    }

    /// Whether the caller should poll again at once rather than sleep: bytes
    /// arrived within [`BUSY_NS`], or part of a frame is buffered.
    pub fn busy(&self, now_ns: u64) -> bool {
        self.dec.buffered() > 0
            || self
                .last_rx_ns
                .is_some_and(|t| now_ns.saturating_sub(t) < BUSY_NS)
    }

    fn drain(&mut self, h: &mut impl Handler, out: &mut Vec<u8>) -> After {
        while let Some(frame) = self.dec.next_frame() {
            let start = out.len();
            let (id, reply, after) = match frame {
                Ok(f) => match Request::from_frame(&f) {
                    Ok(req) => {
                        self.stats.requests += 1;
                        let (resp, after) = h.handle(req);
                        (f.id, resp, after)
                    }
                    Err(e) => {
                        self.stats.bad_frames += 1;
                        (f.id, Response::Error(e.into()), After::Continue)
                    }
                },
                Err(e) => {
                    self.stats.bad_frames += 1;
                    if e.id() == 0 {
                        // Nobody to answer: garbage, or an event echoed back.
                        continue;
                    }
                    (e.id(), Response::Error(e.reply()), After::Continue)
                }
            };
            if let Err(too_long) = reply.write_frame(id, out) {
                let err = Response::error(
                    ErrorCode::Internal,
                    format!("dom0's reply does not fit in a frame: {too_long}"),
                );
                // A short error always fits; if not, the client times out.
                let _ = err.write_frame(id, out);
            }
            self.stats.bytes_out += (out.len() - start) as u64;
            if after == After::PowerOff {
                return After::PowerOff;
            }
        }
        After::Continue
    }
}
