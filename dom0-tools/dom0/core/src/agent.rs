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

use alloc::collections::BTreeMap;

use control_proto::images::Bundle;
use control_proto::{
    CreateRequest, DomRef, ErrorCode, ErrorReply, Event, ExitAction, HostInfo, ImageInfo, Kernel,
    MAX_DATA, PROTOCOL_VERSION, Request, Response,
};
use hypercall_abi::domctl::{DOMINF_SHUTDOWN, DOMINF_SHUTDOWN_MASK, DOMINF_SHUTDOWN_SHIFT};
use hypercall_abi::io::console::ConsoleBack;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::{DomId, Errno, EvtchnPort};

use crate::builder::{self, BuildError, BuildRequest};
use crate::conslog::ConsoleLog;
use crate::domains::{self, DOM0_NAME, Record, Records, ResolveError};
use crate::hv::{Hypervisor, RingId};
use crate::uploads::{UploadStore, Uploads};

/// Console bytes kept per domain.
pub const CONSOLE_LOG_BYTES: usize = 64 * 1024;
/// How often [`Agent::tick`] looks for domains that shut down without a
/// `VIRQ_DOM_EXC` (a fallback: the event is what normally says so) (ns).
const EXIT_CHECK_NS: u64 = 1_000_000_000;

/// The back end of one domain's console: its mapped page, dom0's end of the event
/// channel, and the log.
#[derive(Debug)]
struct Console {
    ring: RingId,
    port: EvtchnPort,
    log: ConsoleLog,
}

/// What the toolstack does when a domain it created stops.
#[derive(Debug, Clone, Copy)]
struct Policy {
    on_poweroff: ExitAction,
    on_crash: ExitAction,
    /// The stop was seen and handled (a preserved domain is not handled twice).
    handled: bool,
}

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

/// The reply for a build that failed.
fn build_error(name: &str, e: BuildError) -> ErrorReply {
    let code = match e {
        BuildError::NotElf(_) | BuildError::NotPv(_) => ErrorCode::BadImage,
        BuildError::Layout(_) => ErrorCode::BadConfig,
        BuildError::OutOfMemory { .. } => ErrorCode::OutOfMemory,
        BuildError::Hypervisor { errno, .. } => {
            return hv_error(format_args!("building {name}"), errno);
        }
        BuildError::Build(_) => ErrorCode::Internal,
    };
    ErrorReply::new(code, format!("building {name}: {e}"))
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
    consoles: BTreeMap<u16, Console>,
    policies: BTreeMap<u16, Policy>,
    /// The domain whose console streams to the client.
    attached: Option<DomId>,
    last_exit_check: u64,
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
            consoles: BTreeMap::new(),
            policies: BTreeMap::new(),
            attached: None,
            last_exit_check: 0,
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
                self.destroy_domain(id)
                    .map_err(|e| hv_error(format_args!("destroy domain {d}"), e))?;
                Ok(Response::Ok)
            }
            Request::Shutdown(d) => {
                let id = self.control_target(&d, "shut down")?;
                self.hv
                    .remote_shutdown(id, ShutdownReason::Poweroff)
                    .map_err(|e| hv_error(format_args!("shut down domain {d}"), e))?;
                Ok(Response::Ok)
            }
            Request::ConsoleRead { dom } => {
                let id = self.console_of(&dom)?;
                self.drain_console(id, None);
                Ok(Response::Console {
                    data: self.log_tail(id),
                })
            }
            Request::ConsoleAttach { dom } => {
                let id = self.console_of(&dom)?;
                self.drain_console(id, None);
                self.attached = Some(id);
                Ok(Response::Console {
                    data: self.log_tail(id),
                })
            }
            Request::ConsoleInput { dom, data } => {
                let id = self.console_of(&dom)?;
                self.console_input(id, &data)?;
                Ok(Response::Ok)
            }
            Request::ConsoleDetach => {
                self.attached = None;
                Ok(Response::Ok)
            }
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
        // A new session: unfinished and unused uploads of the last one go, and no
        // console streams any more.
        self.uploads.clear();
        self.attached = None;
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
            dom0_free_frames: self.store.free_frames(),
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
        let req = BuildRequest {
            name: &c.name,
            image,
            memory_mib: c.memory_mib,
            cmdline: c.cmdline.as_bytes(),
            backend: DomId::DOM0,
        };
        let built = builder::build(&mut self.hv, &req).map_err(|e| build_error(&c.name, e))?;
        let id = built.domid;
        if let Kernel::Uploaded(u) = c.kernel {
            drop(self.uploads.take(u));
        }
        // The console back end: map the page, bind dom0's end of the channel.
        let ring = match self.hv.map_ring(id, built.console.0) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.hv.destroy(id);
                return Err(hv_error(
                    format_args!("mapping {}'s console page", c.name),
                    e,
                ));
            }
        };
        let port = match self.hv.bind_interdomain(id, built.console.1) {
            Ok(p) => p,
            Err(e) => {
                self.hv.unmap_ring(ring);
                let _ = self.hv.destroy(id);
                return Err(hv_error(
                    format_args!("binding {}'s console channel", c.name),
                    e,
                ));
            }
        };
        self.consoles.insert(
            id.0,
            Console {
                ring,
                port,
                log: ConsoleLog::new(CONSOLE_LOG_BYTES),
            },
        );
        self.policies.insert(
            id.0,
            Policy {
                on_poweroff: c.on_poweroff,
                on_crash: c.on_crash,
                handled: false,
            },
        );
        self.records.insert(Record {
            id,
            name: c.name.clone(),
            created_ns: self.hv.now_ns(),
        });
        Ok(Response::Created { domid: id.0 })
    }

    /// The domain `dom` names, if dom0 serves its console.
    fn console_of(&mut self, dom: &DomRef) -> Result<DomId, ErrorReply> {
        let id = self.resolve(dom)?;
        if self.consoles.contains_key(&id.0) {
            Ok(id)
        } else {
            Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!(
                    "domain {dom} has no console dom0 serves: only domains made with `dom0ctl \
                     create` do (dom0's and boot-time domains' output is in `dom0ctl dmesg`)"
                ),
            ))
        }
    }

    /// The newest [`MAX_DATA`] bytes of `id`'s console log.
    fn log_tail(&self, id: DomId) -> Vec<u8> {
        let all = self
            .consoles
            .get(&id.0)
            .map(|c| c.log.contents())
            .unwrap_or_default();
        all[all.len().saturating_sub(MAX_DATA)..].to_vec()
    }

    /// Moves what `id` wrote into its console ring into its log (and, when a client
    /// is attached to it, onto `out` as events). Tells the guest there is room again.
    fn drain_console(&mut self, id: DomId, mut out: Option<&mut Vec<u8>>) {
        let Some(c) = self.consoles.get_mut(&id.0) else {
            return;
        };
        let Some(page) = self.hv.ring(c.ring) else {
            return;
        };
        let Ok(mut back) = ConsoleBack::new(page) else {
            return;
        };
        let mut buf = [0u8; 2048];
        let mut moved = false;
        // At most a few rounds: a guest that keeps writing cannot hold the agent.
        for _ in 0..8 {
            let n = back.output.read(&mut buf).unwrap_or(0);
            if n == 0 {
                break;
            }
            moved = true;
            c.log.push(&buf[..n]);
            if let Some(out) = out.as_deref_mut() {
                let ev = Event::ConsoleOutput {
                    domid: id.0,
                    data: buf[..n].to_vec(),
                };
                let _ = ev.write_frame(out);
            }
        }
        if moved {
            let port = c.port;
            self.hv.notify(port);
        }
    }

    fn console_input(&mut self, id: DomId, data: &[u8]) -> Result<(), ErrorReply> {
        let Some(c) = self.consoles.get(&id.0) else {
            return Ok(());
        };
        let port = c.port;
        let page = self.hv.ring(c.ring).ok_or_else(|| {
            ErrorReply::new(ErrorCode::Internal, "the console page is not mapped")
        })?;
        let mut back = ConsoleBack::new(page).map_err(|e| {
            ErrorReply::new(
                ErrorCode::Internal,
                format!("the console page is damaged: {e:?}"),
            )
        })?;
        let n = back.input.write(data).unwrap_or(0);
        self.hv.notify(port);
        if n < data.len() {
            return Err(ErrorReply::new(
                ErrorCode::Busy,
                format!(
                    "the domain's console input is full: {} of {} bytes went in",
                    n,
                    data.len()
                ),
            ));
        }
        Ok(())
    }

    /// Takes the console back end of `id` down (before its domain is destroyed, so
    /// dom0 holds none of its frames).
    fn close_console(&mut self, id: DomId) {
        if let Some(c) = self.consoles.remove(&id.0) {
            self.hv.unmap_ring(c.ring);
            self.hv.close(c.port);
        }
    }

    /// Destroys `id`: its console back end first, then the domain, then the records.
    fn destroy_domain(&mut self, id: DomId) -> Result<(), Errno> {
        self.drain_console(id, None);
        self.close_console(id);
        let r = self.hv.destroy(id);
        if r.is_ok() || r == Err(Errno::ESRCH) {
            self.records.remove(id);
            self.policies.remove(&id.0);
            if self.attached == Some(id) {
                self.attached = None;
            }
        }
        r
    }

    /// Background work between requests: console output of every domain dom0 serves
    /// (streamed onto `out` for the attached one), and, when `VIRQ_DOM_EXC` fired (or
    /// once a second regardless), the domains that stopped, handled by their
    /// `on_poweroff`/`on_crash` (xl's `destroy` or `preserve`).
    pub fn tick(&mut self, now: u64, out: &mut Vec<u8>) {
        let ids: Vec<u16> = self.consoles.keys().copied().collect();
        for id in ids {
            let to = (self.attached == Some(DomId(id))).then_some(&mut *out);
            self.drain_console(DomId(id), to);
        }
        let exc = self.hv.take_dom_exc();
        if !exc && now.saturating_sub(self.last_exit_check) < EXIT_CHECK_NS {
            return;
        }
        self.last_exit_check = now;
        let ids: Vec<u16> = self.policies.keys().copied().collect();
        for id in ids {
            let dom = DomId(id);
            let stopped = match self.hv.domain_info(dom) {
                Ok(i) if i.domain == dom && i.flags & DOMINF_SHUTDOWN != 0 => {
                    Some((i.flags >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK)
                }
                Ok(i) if i.domain == dom => None,
                // Gone behind the toolstack's back.
                _ => {
                    self.close_console(dom);
                    self.records.remove(dom);
                    self.policies.remove(&id);
                    continue;
                }
            };
            let Some(reason) = stopped else { continue };
            let Some(p) = self.policies.get_mut(&id) else {
                continue;
            };
            if p.handled {
                continue;
            }
            p.handled = true;
            let crashed = reason == ShutdownReason::Crash as u32;
            let action = if crashed { p.on_crash } else { p.on_poweroff };
            let why = if crashed { "crashed" } else { "shut down" };
            if action == ExitAction::Destroy {
                let was_attached = self.attached == Some(dom);
                let _ = self.destroy_domain(dom);
                if was_attached {
                    let ev = Event::ConsoleClosed {
                        domid: id,
                        reason: format!(
                            "the domain {why} and was destroyed (on_{})",
                            if crashed { "crash" } else { "poweroff" }
                        ),
                    };
                    let _ = ev.write_frame(out);
                }
            }
        }
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
