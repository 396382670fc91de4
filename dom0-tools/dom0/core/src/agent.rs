//! The control agent: one [`Request`] in, one [`Response`] out (see
//! `docs/control-protocol.md`).
//!
//! The agent holds the session (uploads), the toolstack's domain records and
//! the image bundle, and reaches the hypervisor only through [`Hypervisor`].
//! Xen errnos become [`ErrorCode::Hypervisor`] replies in one function,
//! [`hv_error`].

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use control_proto::images::Bundle;
use control_proto::{
    CreateRequest, DomRef, ErrorCode, ErrorReply, HostInfo, ImageInfo, Kernel, MAX_DATA,
    PROTOCOL_VERSION, Request, Response,
};
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::{DomId, Errno};

use crate::domains::{self, DOM0_NAME, Records, ResolveError};
use crate::hv::Hypervisor;
use crate::uploads::{UploadStore, Uploads};

/// What the caller must do once the response is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Nothing.
    Continue,
    /// Flush the link, then power the machine off (`ShutdownHost`).
    PowerOff,
}

/// Bytes per `readconsole` call.
const CONSOLE_CHUNK: usize = 16 * 1024;
/// `readconsole` calls per `Dmesg` at most (a ring that keeps growing while
/// it is read cannot hold the agent forever).
const CONSOLE_ROUNDS: usize = 256;

/// The reply for a hypercall that failed: the operation, then Xen's errno
/// (`-ENOSYS (38)`).
pub fn hv_error(what: fmt::Arguments<'_>, e: Errno) -> ErrorReply {
    let name = e
        .name()
        .map_or_else(|| format!("{}", e.get()), String::from);
    let hint = match e {
        Errno::ENOSYS => "; this hypervisor does not implement it yet",
        Errno::EPERM => "; dom0 lacks the privilege",
        _ => "",
    };
    ErrorReply::new(
        ErrorCode::Hypervisor,
        format!(
            "{what}: the hypervisor refused: -{name} ({}){hint}",
            e.get()
        ),
    )
}

fn not_yet(what: &str) -> ErrorReply {
    ErrorReply::new(
        ErrorCode::Internal,
        format!("{what} is not supported yet: the domain builder and console back-end land next"),
    )
}

/// dom0ctl follows some codes' messages with what to do next (for
/// `unknown-domain`: "List domains with `dom0ctl list`."), so these messages
/// say only what is wrong.
fn resolve_error(dom: &DomRef, e: ResolveError) -> ErrorReply {
    match e {
        ResolveError::NoName(name) => {
            ErrorReply::new(ErrorCode::UnknownDomain, format!("no such domain: {name}"))
        }
        ResolveError::NoId(id) => {
            ErrorReply::new(ErrorCode::UnknownDomain, format!("no domain has id {id}"))
        }
        ResolveError::Hypervisor(e) => hv_error(format_args!("looking up domain {dom}"), e),
    }
}

/// The control agent.
#[derive(Debug)]
pub struct Agent<'a, H, S: UploadStore> {
    hv: H,
    store: S,
    uploads: Uploads<S::Buf>,
    records: Records,
    images: Option<Bundle<'a>>,
    name: &'static str,
}

impl<'a, H: Hypervisor, S: UploadStore> Agent<'a, H, S> {
    /// An agent called `name` ("xlhv-dom0 0.1.0") serving `images`.
    pub fn new(hv: H, store: S, images: Option<Bundle<'a>>, name: &'static str) -> Self {
        Agent {
            hv,
            store,
            uploads: Uploads::new(),
            records: Records::new(),
            images,
            name,
        }
    }

    /// The hypervisor (tests inspect their fake through it).
    pub fn hv(&mut self) -> &mut H {
        &mut self.hv
    }

    /// The session's uploads.
    pub fn uploads(&self) -> &Uploads<S::Buf> {
        &self.uploads
    }

    /// Answers one request.
    pub fn handle(&mut self, req: Request) -> (Response, After) {
        let after = if matches!(req, Request::ShutdownHost) {
            After::PowerOff
        } else {
            After::Continue
        };
        let resp = match self.dispatch(req) {
            Ok(r) => r,
            Err(e) => Response::Error(e),
        };
        let after = if matches!(resp, Response::Error(_)) {
            After::Continue
        } else {
            after
        };
        (resp, after)
    }

    fn dispatch(&mut self, req: Request) -> Result<Response, ErrorReply> {
        match req {
            Request::Hello { client_version } => self.hello(client_version),
            Request::Info => self.info().map(Response::Info),
            Request::List => self.list().map(Response::Domains),
            Request::Create(c) => self.create(&c),
            Request::Pause(d) => self.control(&d, "pause", H::pause),
            Request::Unpause(d) => self.control(&d, "unpause", H::unpause),
            Request::Destroy(d) => {
                let id = self.control_target(&d, "destroy")?;
                self.hv
                    .destroy(id)
                    .map_err(|e| hv_error(format_args!("destroy domain {d}"), e))?;
                self.records.remove(id);
                Ok(Response::Ok)
            }
            Request::Shutdown(d) => {
                let id = self.control_target(&d, "shut down")?;
                self.hv
                    .remote_shutdown(id, ShutdownReason::Poweroff)
                    .map_err(|e| hv_error(format_args!("shut down domain {d}"), e))?;
                Ok(Response::Ok)
            }
            Request::ConsoleRead { dom } | Request::ConsoleAttach { dom } => {
                self.resolve(&dom)?;
                Err(not_yet("a domain's console"))
            }
            Request::ConsoleInput { dom, .. } => {
                self.resolve(&dom)?;
                Err(not_yet("console input"))
            }
            // Nothing can be attached yet, so there is nothing to detach.
            Request::ConsoleDetach => Ok(Response::Ok),
            Request::UploadBegin { size, crc32 } => {
                let (upload, chunk_max) = self.uploads.begin(&mut self.store, size, crc32)?;
                Ok(Response::UploadReady { upload, chunk_max })
            }
            Request::UploadChunk {
                upload,
                offset,
                data,
            } => {
                let received = self.uploads.chunk(upload, offset, &data)?;
                Ok(Response::UploadAck { upload, received })
            }
            Request::UploadEnd { upload } => {
                self.uploads.end(upload)?;
                Ok(Response::Uploaded { upload })
            }
            Request::Images => Ok(Response::Images(self.image_list())),
            Request::Dmesg => self.dmesg().map(|text| Response::Dmesg { text }),
            Request::ShutdownHost => Ok(Response::Ok),
        }
    }

    fn hello(&mut self, client_version: u32) -> Result<Response, ErrorReply> {
        // A new session: unfinished and unused uploads of the last one go.
        self.uploads.clear();
        if client_version != u32::from(PROTOCOL_VERSION) {
            return Err(ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "the client speaks protocol version {client_version}; this agent speaks \
                     {PROTOCOL_VERSION}"
                ),
            ));
        }
        let hypervisor = match self.hv.xen_version() {
            Ok(v) if v.compile_by.is_empty() => format!("Xen {}.{}{}", v.major, v.minor, v.extra),
            Ok(v) => format!(
                "{} (Xen {}.{}{} ABI)",
                v.compile_by, v.major, v.minor, v.extra
            ),
            Err(e) => format!("unknown (xen_version failed: {e})"),
        };
        Ok(Response::HelloOk {
            protocol: PROTOCOL_VERSION,
            agent: self.name.to_string(),
            hypervisor,
        })
    }

    fn info(&mut self) -> Result<HostInfo, ErrorReply> {
        let v = self
            .hv
            .xen_version()
            .map_err(|e| hv_error(format_args!("xen_version"), e))?;
        let p = self
            .hv
            .physinfo()
            .map_err(|e| hv_error(format_args!("sysctl physinfo"), e))?;
        let domains = domains::list(&mut self.hv)
            .map_err(|e| hv_error(format_args!("domctl getdomaininfo"), e))?;
        Ok(HostInfo {
            xen_major: v.major,
            xen_minor: v.minor,
            xen_extra: v.extra,
            total_kib: p.total_pages.saturating_mul(4),
            free_kib: p.free_pages.saturating_mul(4),
            free_frames: p.free_pages,
            nr_cpus: p.nr_cpus,
            cpu_khz: p.cpu_khz,
            domains: u32::try_from(domains.len()).unwrap_or(u32::MAX),
        })
    }

    fn list(&mut self) -> Result<Vec<control_proto::DomainInfo>, ErrorReply> {
        let raw = domains::list(&mut self.hv)
            .map_err(|e| hv_error(format_args!("domctl getdomaininfo"), e))?;
        let now = self.hv.now_ns();
        Ok(raw
            .iter()
            .map(|d| domains::info(d, &self.records, now))
            .collect())
    }

    fn resolve(&mut self, dom: &DomRef) -> Result<DomId, ErrorReply> {
        domains::resolve(&mut self.hv, &self.records, dom).map_err(|e| resolve_error(dom, e))
    }

    /// The domain a pause/unpause/shutdown/destroy acts on: any but dom0.
    fn control_target(&mut self, dom: &DomRef, verb: &str) -> Result<DomId, ErrorReply> {
        let id = self.resolve(dom)?;
        if id == DomId::DOM0 {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "{DOM0_NAME} (id 0) cannot be {}: it runs this control agent. To stop \
                     the machine use `dom0ctl shutdown-host`.",
                    past(verb)
                ),
            ));
        }
        Ok(id)
    }

    fn control(
        &mut self,
        dom: &DomRef,
        verb: &str,
        op: fn(&mut H, DomId) -> Result<(), Errno>,
    ) -> Result<Response, ErrorReply> {
        let id = self.control_target(dom, verb)?;
        op(&mut self.hv, id).map_err(|e| match e {
            Errno::ESRCH => resolve_error(dom, ResolveError::NoId(id.0)),
            e => hv_error(format_args!("{verb} domain {dom}"), e),
        })?;
        Ok(Response::Ok)
    }

    fn create(&mut self, c: &CreateRequest) -> Result<Response, ErrorReply> {
        c.validate().map_err(ErrorReply::from)?;
        if self.records.by_name(&c.name).is_some() {
            return Err(ErrorReply::new(
                ErrorCode::NameInUse,
                format!("a domain named {} exists", c.name),
            ));
        }
        let image: &[u8] = match &c.kernel {
            Kernel::Named(name) => {
                self.images
                    .as_ref()
                    .and_then(|b| b.get(name))
                    .ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::UnknownImage,
                            format!("dom0 has no image named {name}"),
                        )
                    })?
                    .data
            }
            Kernel::Uploaded(id) => {
                self.uploads
                    .get(*id)
                    .and_then(|u| u.bytes())
                    .ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::UploadState,
                            format!("upload {id} is unknown or unfinished in this session"),
                        )
                    })?
            }
        };
        check_kernel(image)?;
        Err(not_yet("creating a domain"))
    }

    fn image_list(&self) -> Vec<ImageInfo> {
        self.images
            .iter()
            .flat_map(|b| b.iter())
            .map(|i| ImageInfo {
                name: i.name.to_string(),
                size: i.data.len() as u64,
            })
            .collect()
    }

    /// The hypervisor's console ring, newest [`MAX_DATA`] bytes.
    fn dmesg(&mut self) -> Result<Vec<u8>, ErrorReply> {
        let mut text: Vec<u8> = Vec::new();
        let mut buf = alloc::vec![0u8; CONSOLE_CHUNK];
        let mut from = None;
        for _ in 0..CONSOLE_ROUNDS {
            let got = self
                .hv
                .read_console(from, &mut buf)
                .map_err(|e| hv_error(format_args!("sysctl readconsole"), e))?;
            if from.is_some() && from == Some(got.next) {
                // No progress: the ring is drained (or the hypervisor ignores
                // `incremental`, and this would repeat the first read).
                break;
            }
            let len = got.len.min(buf.len());
            text.extend_from_slice(&buf[..len]);
            if text.len() > MAX_DATA {
                text.drain(..text.len() - MAX_DATA);
            }
            if len < buf.len() {
                break;
            }
            from = Some(got.next);
        }
        Ok(text)
    }
}

/// Checks that `image` is a 64-bit Xen PV kernel (its ELF headers and notes).
fn check_kernel(image: &[u8]) -> Result<(), ErrorReply> {
    let bad = |what: String| ErrorReply::new(ErrorCode::BadImage, what);
    let elf = pvboot::elf::Elf::parse(image).map_err(|e| bad(format!("not a usable ELF: {e}")))?;
    pvboot::XenImageInfo::parse(&elf).map_err(|e| bad(format!("bad Xen notes: {e}")))?;
    Ok(())
}

fn past(verb: &str) -> &str {
    match verb {
        "pause" => "paused",
        "unpause" => "unpaused",
        "destroy" => "destroyed",
        "shut down" => "shut down",
        other => other,
    }
}
