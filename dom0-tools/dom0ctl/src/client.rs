//! The link to dom0's control agent: a unix socket (QEMU's end of COM2).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control_proto::{
    ErrorCode, Event, FrameDecoder, FrameError, MAX_FRAME, Message, PROTOCOL_VERSION, Request,
    Response,
};

use crate::error::Error;

/// Events kept while waiting for replies; older ones are dropped.
const MAX_QUEUED_EVENTS: usize = 4096;
/// How long the link may be quiet in the middle of a frame before the partial
/// frame is taken for the tail of an old session and searched past.
const QUIET: Duration = Duration::from_millis(500);

/// What dom0 said about itself in answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// The protocol version agreed.
    pub protocol: u8,
    /// The agent's name and version.
    pub agent: String,
    /// The hypervisor's name and version.
    pub hypervisor: String,
}

/// A message from dom0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The answer to request `id`.
    Response(u32, Response),
    /// An unsolicited event.
    Event(Event),
}

/// A session with dom0: connected, greeted, ready for requests.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    path: PathBuf,
    decoder: FrameDecoder,
    next_id: u32,
    timeout: Duration,
    events: VecDeque<Event>,
    greeting: Greeting,
}

/// How long the fast link may take to greet before `dom0ctl` falls back to COM2.
const FAST_GREETING: Duration = Duration::from_secs(3);

impl Client {
    /// Connects to dom0 over the fast link (the virtio console's socket beside
    /// `path`, [`crate::paths::fast_socket_path`]) when it is there and dom0
    /// greets on it, else over the control socket at `path` (COM2).
    pub fn connect_auto(path: &Path, timeout: Duration) -> Result<Client, Error> {
        let fast = crate::paths::fast_socket_path(path);
        if fast.exists()
            && let Ok(mut c) = Client::connect(&fast, timeout.min(FAST_GREETING))
        {
            c.timeout = timeout;
            c.stream
                .set_write_timeout(Some(timeout))
                .map_err(|e| link(&fast, &format!("cannot set up the socket: {e}")))?;
            return Ok(c);
        }
        Client::connect(path, timeout)
    }

    /// The socket this client talks over.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connects to the socket at `path` and greets dom0. `timeout` bounds each
    /// request's wait for its answer.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, Error> {
        let stream = UnixStream::connect(path).map_err(|e| connect_error(path, &e))?;
        stream
            .set_write_timeout(Some(timeout))
            .map_err(|e| link(path, &format!("cannot set up the socket: {e}")))?;
        let mut client = Client {
            stream,
            path: path.to_path_buf(),
            decoder: FrameDecoder::new(),
            next_id: 1,
            timeout,
            events: VecDeque::new(),
            greeting: Greeting {
                protocol: 0,
                agent: String::new(),
                hypervisor: String::new(),
            },
        };
        let hello = Request::Hello {
            client_version: u32::from(PROTOCOL_VERSION),
        };
        let id = client.send(&hello)?;
        match client.wait_reply(id)? {
            Some(Response::HelloOk {
                protocol,
                agent,
                hypervisor,
            }) => {
                if protocol != PROTOCOL_VERSION {
                    return Err(version_mismatch(path, protocol));
                }
                client.greeting = Greeting {
                    protocol,
                    agent,
                    hypervisor,
                };
                Ok(client)
            }
            Some(Response::Error(reply)) if reply.code == ErrorCode::UnsupportedVersion => {
                Err(link(
                    path,
                    &format!(
                        "dom0 refused protocol version {PROTOCOL_VERSION}: {}. Rebuild dom0ctl \
                         and dom0 from the same tree.",
                        reply.text()
                    ),
                ))
            }
            Some(Response::Error(reply)) => Err(Error::Dom0 {
                context: "greeting dom0".to_string(),
                reply,
            }),
            Some(other) => Err(client.unexpected(&hello, &other)),
            None => Err(link(
                path,
                &format!(
                    "dom0 did not answer the greeting within {} s. dom0 may still be booting, \
                     or another dom0ctl holds the link (one client at a time). Try again, or \
                     raise --timeout.",
                    timeout.as_secs()
                ),
            )),
        }
    }

    /// What dom0 said in answer to `Hello`.
    pub fn greeting(&self) -> &Greeting {
        &self.greeting
    }

    /// Sends `req` and waits for its answer, keeping events that arrive
    /// meanwhile (see [`next_incoming`](Self::next_incoming)). An error answer
    /// becomes [`Error::Dom0`] without context; add it with [`Error::context`].
    pub fn call(&mut self, req: &Request) -> Result<Response, Error> {
        let id = self.send(req)?;
        match self.wait_reply(id)? {
            Some(Response::Error(reply)) => Err(Error::Dom0 {
                context: String::new(),
                reply,
            }),
            Some(resp) => Ok(resp),
            None => Err(link(
                &self.path,
                &format!(
                    "dom0 did not answer `{}` within {} s; its control agent may be busy or \
                     stuck. Try again, or raise --timeout.",
                    req.kind().name(),
                    self.timeout.as_secs()
                ),
            )),
        }
    }

    /// Sends `req` without waiting and returns its request id.
    pub fn send(&mut self, req: &Request) -> Result<u32, Error> {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let mut frame = Vec::new();
        req.write_frame(id, &mut frame)
            .map_err(|e| Error::Input(format!("cannot send the request: {e}")))?;
        self.stream.write_all(&frame).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) {
                link(
                    &self.path,
                    &format!(
                        "dom0 has not read from the link for {} s; its control agent may be stuck",
                        self.timeout.as_secs()
                    ),
                )
            } else {
                closed(&self.path, &format!("cannot write to the link ({e})"))
            }
        })?;
        Ok(id)
    }

    /// The next message already read: events kept by [`call`](Self::call) first,
    /// then whatever [`fill`](Self::fill) brought. Never blocks.
    pub fn next_incoming(&mut self) -> Result<Option<Incoming>, Error> {
        if let Some(ev) = self.events.pop_front() {
            return Ok(Some(Incoming::Event(ev)));
        }
        self.decode_next(None)
    }

    /// Reads what the link has, waiting up to `wait` for the first byte.
    pub fn fill(&mut self, wait: Duration) -> Result<(), Error> {
        let mut buf = [0u8; 8192];
        self.stream
            .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
            .map_err(|e| link(&self.path, &format!("cannot set up the socket: {e}")))?;
        // Read no more than the decoder has room for (at least one byte once
        // `next_frame` has returned `None`), so every byte read is kept.
        let room = (MAX_FRAME - self.decoder.buffered()).min(buf.len());
        match self.stream.read(&mut buf[..room]) {
            Ok(0) => Err(closed(&self.path, "dom0 closed the link")),
            Ok(n) => {
                self.decoder.push(&buf[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // A frame is written in one go, so a partial one on a quiet link
                // is the tail of an old session: search past it.
                if self.decoder.buffered() > 0 && wait >= QUIET {
                    self.decoder.abandon_partial();
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(closed(
                &self.path,
                &format!("cannot read from the link ({e})"),
            )),
        }
    }

    /// Tells the client the link has been quiet for a while (500 ms or more): a
    /// partial frame still buffered is the tail of an old session, so search
    /// past it. [`fill`](Self::fill) does this itself when it waits that long.
    pub fn link_quiet(&mut self) {
        if self.decoder.buffered() > 0 {
            self.decoder.abandon_partial();
        }
    }

    /// The socket, to wait on it together with other files.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// A protocol error: dom0 answered `req` with something that does not answer it.
    pub fn unexpected(&self, req: &Request, resp: &Response) -> Error {
        link(
            &self.path,
            &format!(
                "dom0 answered `{}` with `{}`; are dom0ctl and dom0 from the same build?",
                req.kind().name(),
                resp.kind().name()
            ),
        )
    }

    /// Waits for the answer to request `id`, keeping events for later; `None` on
    /// timeout.
    fn wait_reply(&mut self, id: u32) -> Result<Option<Response>, Error> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.decode_next(Some(id))? {
                Some(Incoming::Response(rid, resp)) if rid == id => return Ok(Some(resp)),
                // A late answer to an earlier request (one that timed out, or a
                // console input): not ours.
                Some(Incoming::Response(..)) => {}
                Some(Incoming::Event(ev)) => {
                    if self.events.len() == MAX_QUEUED_EVENTS {
                        self.events.pop_front();
                    }
                    self.events.push_back(ev);
                }
                None => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    self.fill((deadline - now).min(QUIET))?;
                }
            }
        }
    }

    /// Decodes the next message from bytes already read. `pending` is the id
    /// being waited for: a damaged frame carrying it is an error; other damaged
    /// frames and stray requests are skipped as line noise.
    fn decode_next(&mut self, pending: Option<u32>) -> Result<Option<Incoming>, Error> {
        while let Some(r) = self.decoder.next_frame() {
            let frame = match r {
                Ok(frame) => frame,
                Err(e) => {
                    self.frame_error(&e, pending)?;
                    continue;
                }
            };
            match Message::from_frame(&frame) {
                Ok(Message::Response(resp)) => {
                    return Ok(Some(Incoming::Response(frame.id, resp)));
                }
                Ok(Message::Event(ev)) => return Ok(Some(Incoming::Event(ev))),
                Ok(Message::Request(_)) => {}
                Err(e) if Some(frame.id) == pending => {
                    return Err(link(
                        &self.path,
                        &format!("cannot decode dom0's answer: {e}"),
                    ));
                }
                Err(_) => {}
            }
        }
        Ok(None)
    }

    fn frame_error(&self, e: &FrameError, pending: Option<u32>) -> Result<(), Error> {
        match e {
            FrameError::UnsupportedVersion { version, .. } => {
                Err(version_mismatch(&self.path, *version))
            }
            FrameError::BadCrc { id, .. } if Some(*id) == pending => Err(link(
                &self.path,
                &format!("dom0's answer was damaged on the link: {e}"),
            )),
            _ => Ok(()),
        }
    }
}

fn link(path: &Path, message: &str) -> Error {
    Error::Link(format!("dom0 at {}: {message}", path.display()))
}

fn closed(path: &Path, what: &str) -> Error {
    Error::Closed(format!(
        "dom0 at {}: {what}; xen-like-hv has probably exited, or dom0 stopped the machine",
        path.display()
    ))
}

fn version_mismatch(path: &Path, theirs: u8) -> Error {
    link(
        path,
        &format!(
            "dom0 speaks protocol version {theirs}, this dom0ctl speaks {PROTOCOL_VERSION}. \
             Rebuild dom0ctl and dom0 from the same tree."
        ),
    )
}

fn connect_error(path: &Path, e: &io::Error) -> Error {
    let p = path.display();
    let how_to_start = "Start it with `scripts/run` (or `scripts/run --detach`), or point \
                        --socket / DOM0CTL_SOCKET at its control socket.";
    Error::Link(match e.kind() {
        io::ErrorKind::NotFound => format!(
            "cannot reach dom0 at {p}: no such socket. Is xen-like-hv running? {how_to_start}"
        ),
        io::ErrorKind::ConnectionRefused => format!(
            "cannot reach dom0 at {p}: connection refused; the socket is left over from a \
             xen-like-hv that has exited. {how_to_start}"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "cannot reach dom0 at {p}: permission denied; the socket belongs to someone else. \
             Point --socket / DOM0CTL_SOCKET at your own."
        ),
        _ => format!("cannot reach dom0 at {p}: {e}. {how_to_start}"),
    })
}
