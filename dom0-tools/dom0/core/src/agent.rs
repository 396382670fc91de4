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

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::rc::Rc;

use control_proto::cpus::{Affinity, CpuMap};
use control_proto::images::Bundle;
use control_proto::{
    CreateRequest, DomRef, ErrorCode, ErrorReply, Event, ExitAction, HostInfo, ImageInfo, Kernel,
    MAX_DATA, PROTOCOL_VERSION, Request, Response,
};
use hypercall_abi::domctl::{DOMINF_SHUTDOWN, DOMINF_SHUTDOWN_MASK, DOMINF_SHUTDOWN_SHIFT};
use hypercall_abi::io::console::ConsoleBack;
use hypercall_abi::sched::ShutdownReason;
use hypercall_abi::{DomId, Errno, EvtchnPort};

use crate::blkback::{self, Blkback, Target};
use crate::builder::{self, BuildError, BuildRequest};
use crate::conslog::ConsoleLog;
use crate::disks::Disks;
use crate::domains::{self, DOM0_NAME, Record, Records, ResolveError};
use crate::hv::{Hypervisor, RingId};
use crate::netback::{self, Netback};
use crate::nics::Nics;
use crate::uploads::{Upload, UploadBuf, UploadStore, Uploads};
use crate::volumes::{VolumeError, Volumes};
use crate::xenstore::{self as xsl, DomainNodes, Uuid};

use hypercall_abi::io::xenstore::{XsdSockmsg, XsdSockmsgType};
use xenstored::Xenstored;

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

/// dom0's side of one domain's XenStore ring: the mapped page and dom0's end
/// of the store channel.
#[derive(Debug)]
struct StoreBack {
    ring: RingId,
    port: EvtchnPort,
    uuid: Uuid,
}

/// The token of the session's XenStore watch (`dom0ctl xenstore watch`).
pub const WATCH_TOKEN: &str = "dom0ctl";
/// How often [`Agent::tick`] serves every store ring (ns).
const STORE_SWEEP_NS: u64 = 500_000;
/// Nodes at most in one `XsList` answer.
const XS_LIST_MAX: usize = 4096;

/// What the toolstack does when a domain it created stops.
#[derive(Debug, Clone, Copy)]
struct Policy {
    on_poweroff: ExitAction,
    on_reboot: ExitAction,
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
        BuildError::Layout(_)
        | BuildError::Affinity {
            which: Affinity::Hard,
            errno: Errno::EINVAL,
            ..
        } => ErrorCode::BadConfig,
        BuildError::Affinity {
            vcpu, which, errno, ..
        } => {
            let kind = match which {
                Affinity::Hard => "",
                Affinity::Soft => "soft ",
            };
            return hv_error(
                format_args!("building {name}: setting vCPU {vcpu}'s {kind}affinity"),
                errno,
            );
        }
        BuildError::OutOfMemory { .. } => ErrorCode::OutOfMemory,
        BuildError::Hypervisor { step, errno } => {
            return hv_error(format_args!("building {name}: {step}"), errno);
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
    /// What `Devices` answers (the kernel's PCI scan and drivers fill it in).
    devices: Vec<control_proto::DeviceRow>,
    name: &'static str,
    consoles: BTreeMap<u16, Console>,
    policies: BTreeMap<u16, Policy>,
    /// The domain whose console streams to the client.
    attached: Option<DomId>,
    last_exit_check: u64,
    /// The XenStore daemon; dom0 is its domain 0 (in-process, privileged).
    xs: Xenstored,
    stores: BTreeMap<u16, StoreBack>,
    /// How each domain dom0 built was asked for, to rebuild it on reboot.
    configs: BTreeMap<u16, CreateRequest>,
    /// The uploaded kernels of live domains, kept so that a reboot can build the
    /// domain again (xl reads its kernel file again; dom0 has no other copy).
    /// Domains created from the same bytes share one copy.
    kernels: BTreeMap<u16, Rc<Upload<S::Buf>>>,
    /// Set by a reboot for the `create` it runs: the kept kernel to build from.
    reboot_kernel: Option<Rc<Upload<S::Buf>>>,
    /// The uploaded ramdisks of live domains, kept for reboots as the kernels are.
    ramdisks: BTreeMap<u16, Rc<Upload<S::Buf>>>,
    /// Set by a reboot for the `create` it runs: the kept ramdisk.
    reboot_ramdisk: Option<Rc<Upload<S::Buf>>>,
    /// Whether the session has a XenStore watch (`WATCH_TOKEN`).
    watching: Option<String>,
    uuids_made: u64,
    last_store_sweep: u64,
    /// Watch events taken off dom0's connection while waiting for a reply.
    pending_events: Vec<xenstored::Message>,
    notify_ports: Vec<EvtchnPort>,
    /// dom0's disks (the kernel's virtio-blk driver; none until set).
    disks: Option<Box<dyn Disks>>,
    /// The volumes carved from them, and which domains use which.
    volumes: Volumes,
    /// The block back end: every domain's virtual disks.
    blk: Blkback,
    /// The network back end: every domain's vifs and the bridges.
    net: Netback,
    /// dom0's NICs, the bridges' uplinks (the kernel's virtio-net driver).
    nics: Option<Box<dyn Nics>>,
}

impl<'a, H: Hypervisor, S: UploadStore> Agent<'a, H, S> {
    /// Sets what `dom0ctl devices` lists: dom0's PCI functions and what it drives.
    pub fn set_devices(&mut self, rows: Vec<control_proto::DeviceRow>) {
        self.devices = rows;
    }

    /// The volumes and their users (the block back end marks the volumes it
    /// serves: [`Volumes::set_in_use`]).
    pub fn volumes(&mut self) -> &mut Volumes {
        &mut self.volumes
    }

    /// Gives the agent dom0's disks (volumes and block back ends use them).
    pub fn set_disks(&mut self, disks: Box<dyn Disks>) {
        self.disks = Some(disks);
    }

    /// Gives the agent dom0's NICs: each joins its bridge as the uplink
    /// (`ethN` to `xenbrN`).
    pub fn set_nics(&mut self, nics: Box<dyn Nics>) {
        self.net.add_uplinks(nics.as_ref());
        self.nics = Some(nics);
    }

    /// The network back end (its vifs, bridges and uplinks).
    pub fn netback(&self) -> &Netback {
        &self.net
    }

    /// An agent called `name` ("xlhv-dom0 0.1.0") serving `images`.
    pub fn new(hv: H, store: S, images: Option<Bundle<'a>>, name: &'static str) -> Self {
        Agent {
            hv,
            store,
            uploads: Uploads::new(),
            records: Records::new(),
            images,
            devices: Vec::new(),
            name,
            consoles: BTreeMap::new(),
            policies: BTreeMap::new(),
            attached: None,
            last_exit_check: 0,
            xs: {
                let mut xs = Xenstored::new();
                let _ = xsl::apply(&mut xs, &xsl::dom0_entries());
                xs
            },
            stores: BTreeMap::new(),
            configs: BTreeMap::new(),
            kernels: BTreeMap::new(),
            reboot_kernel: None,
            ramdisks: BTreeMap::new(),
            reboot_ramdisk: None,
            watching: None,
            uuids_made: 0,
            last_store_sweep: 0,
            pending_events: Vec::new(),
            notify_ports: Vec::new(),
            disks: None,
            volumes: Volumes::new(),
            blk: Blkback::new(),
            net: Netback::new(),
            nics: None,
        }
    }

    /// The XenStore daemon (tests look inside).
    pub fn xenstored(&mut self) -> &mut Xenstored {
        &mut self.xs
    }

    /// The hypervisor (tests inspect their fake through it).
    pub fn hv(&mut self) -> &mut H {
        &mut self.hv
    }

    /// The session's uploads.
    pub fn uploads(&self) -> &Uploads<S::Buf> {
        &self.uploads
    }

    /// The uploaded kernels kept for reboots: (domains that keep one, distinct
    /// copies held).
    pub fn kept_kernels(&self) -> (usize, usize) {
        let mut copies: Vec<*const Upload<S::Buf>> =
            self.kernels.values().map(Rc::as_ptr).collect();
        copies.sort_unstable();
        copies.dedup();
        (self.kernels.len(), copies.len())
    }

    /// Domains that keep an uploaded ramdisk for reboots.
    pub fn kept_ramdisks(&self) -> usize {
        self.ramdisks.len()
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
            Request::Devices => Ok(Response::Devices(self.devices.clone())),
            Request::BlockList(d) => self.block_list(&d),
            Request::BlockAttach { dom, disk } => self.block_attach(&dom, &disk),
            Request::BlockDetach { dom, vdev } => self.block_detach(&dom, &vdev),
            Request::NetworkList(d) => self.network_list(&d),
            Request::VcpuList(d) => self.vcpu_list(&d),
            Request::VcpuPin {
                dom,
                vcpu,
                hard,
                soft,
            } => self.vcpu_pin(&dom, vcpu, hard, soft),
            Request::NetworkAttach { dom, vif } => self.network_attach(&dom, &vif),
            Request::NetworkDetach { dom, vif } => self.network_detach(&dom, &vif),
            r @ (Request::VolumeCreate { .. } | Request::VolumeList | Request::VolumeRm { .. }) => {
                self.volumes.serve(self.disks.as_deref_mut(), r)
            }
            Request::Dmesg => self.dmesg().map(|text| Response::Dmesg { text }),
            Request::ShutdownHost => Ok(Response::Ok),
            Request::AskShutdown { dom, reason } => {
                let id = self.control_target(&dom, "shut down")?;
                let word = match reason {
                    control_proto::ShutdownReason::Poweroff => "poweroff",
                    control_proto::ShutdownReason::Reboot => "reboot",
                    other => {
                        return Err(ErrorReply::new(
                            ErrorCode::BadRequest,
                            format!("a domain can be asked to power off or reboot, not {other}"),
                        ));
                    }
                };
                if !self.stores.contains_key(&id.0) {
                    return Err(ErrorReply::new(
                        ErrorCode::BadRequest,
                        format!(
                            "domain {dom} has no XenStore connection (only domains made with \
                             `dom0ctl create` have one), so it cannot be asked; use `--force`"
                        ),
                    ));
                }
                let path = format!("{}/control/shutdown", xsl::dom_path(id.0));
                self.xs
                    .write(&path, word.as_bytes())
                    .map_err(|e| xs_error(&path, e))?;
                self.service_stores();
                Ok(Response::Ok)
            }
            Request::XsRead { path } => {
                check_xs(&path, None)?;
                let value = self.xs.read(&path).map_err(|e| xs_error(&path, e))?;
                Ok(Response::XsValue { value })
            }
            Request::XsWrite { path, value } => {
                check_xs(&path, Some(&value))?;
                self.xs
                    .write(&path, &value)
                    .map_err(|e| xs_error(&path, e))?;
                self.service_stores();
                Ok(Response::Ok)
            }
            Request::XsRm { path } => {
                check_xs(&path, None)?;
                self.xs.rm(&path).map_err(|e| xs_error(&path, e))?;
                self.service_stores();
                Ok(Response::Ok)
            }
            Request::XsList { path } => {
                check_xs(&path, None)?;
                self.xs_list(&path)
            }
            Request::XsWatch { path } => {
                check_xs(&path, None)?;
                self.unwatch();
                let mut payload = Vec::new();
                payload.extend_from_slice(path.as_bytes());
                payload.push(0);
                payload.extend_from_slice(WATCH_TOKEN.as_bytes());
                payload.push(0);
                match self.dom0_request(XsdSockmsgType::Watch, &payload) {
                    Ok(_) => {
                        self.watching = Some(path);
                        Ok(Response::Ok)
                    }
                    Err(e) => Err(xs_error(&path, e)),
                }
            }
            Request::XsUnwatch => {
                self.unwatch();
                Ok(Response::Ok)
            }
        }
    }

    /// Sends one request on dom0's own connection (for watches, whose events
    /// arrive on it) and takes its reply; events queued meanwhile stay queued.
    fn dom0_request(
        &mut self,
        ty: XsdSockmsgType,
        payload: &[u8],
    ) -> Result<Vec<u8>, xenstored::Error> {
        let hdr = XsdSockmsg {
            type_: ty as u32,
            req_id: 0x6464_6374,
            tx_id: 0,
            len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
        };
        self.xs.request(0, &hdr, payload);
        let mut reply = None;
        let mut events = Vec::new();
        while let Some(m) = self.xs.pop_output(0) {
            if m.is_event() {
                events.push(m);
            } else if reply.is_none() {
                reply = Some(m);
            }
        }
        self.pending_events.extend(events);
        let m = reply.ok_or(xenstored::Error::Io)?;
        if m.hdr.type_ == XsdSockmsgType::Error as u32 {
            let name = m.payload.strip_suffix(&[0]).unwrap_or(&m.payload);
            return Err(xenstored::Error::from_name(name).unwrap_or(xenstored::Error::Io));
        }
        Ok(m.payload)
    }

    fn unwatch(&mut self) {
        if let Some(path) = self.watching.take() {
            let mut payload = Vec::new();
            payload.extend_from_slice(path.as_bytes());
            payload.push(0);
            payload.extend_from_slice(WATCH_TOKEN.as_bytes());
            payload.push(0);
            let _ = self.dom0_request(XsdSockmsgType::Unwatch, &payload);
        }
        self.pending_events.clear();
        while self.xs.pop_output(0).is_some() {}
    }

    /// `path` and what lies below it, depth first, as far as fits one reply.
    fn xs_list(&mut self, path: &str) -> Result<Response, ErrorReply> {
        let mut nodes = Vec::new();
        let mut bytes = 0usize;
        let mut truncated = false;
        let mut todo = alloc::vec![path.to_string()];
        while let Some(p) = todo.pop() {
            let value = match self.xs.read(&p) {
                Ok(v) => v,
                Err(xenstored::Error::NoEnt) if p != path => continue,
                Err(e) => return Err(xs_error(&p, e)),
            };
            let perms = self
                .xs
                .get_perms(&p)
                .map(|ps| perms_string(&ps))
                .unwrap_or_default();
            let size = p.len() + value.len() + perms.len() + 12;
            if nodes.len() >= XS_LIST_MAX || bytes + size > MAX_DATA - 64 {
                truncated = true;
                break;
            }
            bytes += size;
            let children = self.xs.directory(&p).unwrap_or_default();
            for c in children.iter().rev() {
                todo.push(if p == "/" {
                    format!("/{c}")
                } else {
                    format!("{p}/{c}")
                });
            }
            nodes.push(control_proto::XsNode {
                path: p,
                value,
                perms,
            });
        }
        Ok(Response::XsNodes { nodes, truncated })
    }

    /// Serves every domain's store ring once (bounded work per domain: what its
    /// ring and its quotas allow), notifying those whose ring changed.
    pub fn service_stores(&mut self) {
        // `tick`'s rate-limited sweep need not follow this one at once.
        self.last_store_sweep = self.hv.now_ns();
        // Two passes: a request from one domain can queue watch events for
        // another that was already served.
        for _ in 0..2 {
            let mut again = false;
            for (&id, sb) in &self.stores {
                let Some(page) = self.hv.ring(sb.ring) else {
                    continue;
                };
                let s = self.xs.service_ring(u32::from(id), page);
                if s.notify {
                    again = true;
                    let port = sb.port;
                    self.notify_ports.push(port);
                }
            }
            for port in core::mem::take(&mut self.notify_ports) {
                self.hv.notify(port);
            }
            if !again {
                break;
            }
        }
    }

    /// Serves the store rings for a wake-up that only store channels caused
    /// (dom0's fast path). Returns false when that changed the store: the back
    /// ends and the control link's watches must then see it in a full pass.
    pub fn serve_store_event(&mut self) -> bool {
        let generation = self.xs.generation();
        self.service_stores();
        self.xs.generation() == generation
    }

    /// Serves the block back end: the handshakes of vbds whose front end changed
    /// something in the store, then every connected ring. Returns whether a
    /// ring still has requests waiting (serve again without sleeping).
    pub fn service_backends(&mut self) -> bool {
        let generation = self.xs.generation();
        let mut more = false;
        if let Some(nics) = self.nics.as_deref_mut() {
            more |= self.net.from_wire(nics, self.hv.now_ns());
        }
        more |= self.net.poll(&mut self.xs, &mut self.hv);
        if let Some(nics) = self.nics.as_deref_mut() {
            more |= self.net.to_wire(nics);
        }
        if let Some(disks) = self.disks.as_deref_mut() {
            more |= self.blk.poll(&mut self.xs, &mut self.hv, disks);
            for (dom, target) in self.blk.take_detached() {
                self.volumes.release(&target, dom);
            }
        }
        if self.xs.generation() != generation {
            // The back end wrote nodes: front ends watching them hear now.
            self.service_stores();
        }
        more
    }

    /// Requests served with an error status by the block back end, over all vbds.
    pub fn block_errors(&self) -> u64 {
        self.blk.errors
    }

    /// What `target=NAME` names: a volume, else a whole disk without a volume
    /// table.
    fn resolve_target(&mut self, name: &str) -> Result<(Target, bool), ErrorReply> {
        let Some(disks) = self.disks.as_deref_mut() else {
            return Err(ErrorReply::new(
                ErrorCode::UnknownDisk,
                format!("no disk or volume named {name}: dom0 drives no disk (scripts/run --disk)"),
            ));
        };
        let list = disks.list();
        match Volumes::find(disks, name) {
            Ok(v) => {
                let discard = list.get(v.disk).is_some_and(|d| d.discard);
                return Ok((
                    Target {
                        name: v.name,
                        disk: v.disk,
                        start: v.start,
                        sectors: v.sectors,
                        discard,
                        readonly: v.readonly,
                    },
                    true,
                ));
            }
            Err(VolumeError::UnknownVolume { .. } | VolumeError::NoDisks) => {}
            Err(e) => return Err(e.into()),
        }
        let Some((i, info)) = list.iter().enumerate().find(|(_, d)| d.name == name) else {
            let known: Vec<&str> = list.iter().map(|d| d.name.as_str()).collect();
            return Err(ErrorReply::new(
                ErrorCode::UnknownDisk,
                format!(
                    "no disk or volume named {name} (disks: {}; see `dom0ctl volume list`)",
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        if let Ok(crate::volumes::DiskState::Table(_)) = Volumes::state(disks, i, info) {
            return Err(ErrorReply::new(
                ErrorCode::BadConfig,
                format!(
                    "disk {name} holds volumes; give a domain one of its volumes, not the \
                     whole disk"
                ),
            ));
        }
        Ok((
            Target {
                name: info.name.clone(),
                disk: i,
                start: 0,
                sectors: info.sectors,
                discard: info.discard,
                readonly: info.readonly,
            },
            false,
        ))
    }

    /// Gives domain `id` the disks `specs` (creation or hot-plug).
    fn attach_disks(
        &mut self,
        id: DomId,
        specs: &[control_proto::disk::DiskSpec],
    ) -> Result<(), ErrorReply> {
        for spec in specs {
            let (target, volume) = self.resolve_target(&spec.target)?;
            if target.readonly && !spec.readonly {
                return Err(ErrorReply::new(
                    ErrorCode::DiskReadOnly,
                    format!(
                        "{} is on a read-only disk; give it with access=ro",
                        spec.target
                    ),
                ));
            }
            if volume {
                self.volumes
                    .set_in_use(&spec.target, id.0, !spec.readonly)
                    .map_err(ErrorReply::from)?;
            }
            if let Err(e) = self
                .blk
                .attach(&mut self.xs, &mut self.hv, id.0, spec, target)
            {
                if volume {
                    self.volumes.release(&spec.target, id.0);
                }
                let code = match e {
                    blkback::AttachError::InUse { .. } => ErrorCode::VolumeInUse,
                    blkback::AttachError::Exists(_) => ErrorCode::BadConfig,
                    blkback::AttachError::Store(_) => ErrorCode::Xenstore,
                };
                return Err(ErrorReply::new(
                    code,
                    format!("disk {} ({}): {e}", spec.vdev, spec.target),
                ));
            }
        }
        self.service_stores();
        Ok(())
    }

    /// Takes domain `id`'s disks and vifs down (before the domain goes).
    fn close_disks(&mut self, id: DomId) {
        self.blk.detach_domain(&mut self.xs, &mut self.hv, id.0);
        self.volumes.clear_in_use(id.0);
        self.net.detach_domain(&mut self.xs, &mut self.hv, id.0);
    }

    /// Gives domain `id` the vifs `specs`, numbered by their place (as xl
    /// numbers them); a vif without a MAC gets one made from `uuid`. Returns
    /// the specs with their MACs, so that a reboot keeps them.
    fn attach_vifs(
        &mut self,
        id: DomId,
        uuid: &[u8; 16],
        specs: &[control_proto::vif::VifSpec],
    ) -> Result<Vec<control_proto::vif::VifSpec>, ErrorReply> {
        let mut out = Vec::with_capacity(specs.len());
        for (n, spec) in specs.iter().enumerate() {
            let devid = u32::try_from(n).unwrap_or(u32::MAX);
            let mac = spec.mac.unwrap_or_else(|| Netback::make_mac(uuid, devid));
            if let Err(e) = self.net.attach(&mut self.xs, id.0, devid, spec, mac) {
                let code = match e {
                    netback::AttachError::Store(_) => ErrorCode::Xenstore,
                    _ => ErrorCode::BadConfig,
                };
                return Err(ErrorReply::new(code, format!("vif {n} ({spec}): {e}")));
            }
            out.push(control_proto::vif::VifSpec {
                mac: Some(mac),
                bridge: spec.bridge.clone(),
            });
        }
        self.service_stores();
        Ok(out)
    }

    fn block_list(&mut self, dom: &DomRef) -> Result<Response, ErrorReply> {
        let id = self.resolve(dom)?;
        let rows = self
            .blk
            .list(&mut self.xs, id.0)
            .into_iter()
            .map(|v| control_proto::BlockRow {
                devid: v.devid,
                vdev: v.vdev,
                target: v.target,
                mode: v.mode.into(),
                be_state: v.be_state,
                fe_state: v.fe_state,
                evtchn: i32::try_from(v.evtchn).unwrap_or(-1),
                ring_ref: i32::try_from(v.ring_ref).unwrap_or(-1),
                be_path: v.be_path,
                requests: [
                    v.stats.rd_req,
                    v.stats.wr_req,
                    v.stats.f_req,
                    v.stats.ds_req,
                ],
                sectors: [v.stats.rd_sect, v.stats.wr_sect],
                errors: v.stats.errors,
            })
            .collect();
        Ok(Response::Blocks(rows))
    }

    fn network_list(&mut self, dom: &DomRef) -> Result<Response, ErrorReply> {
        let id = self.resolve(dom)?;
        let rows = self
            .net
            .list(&mut self.xs, id.0)
            .into_iter()
            .map(|v| control_proto::VifRow {
                devid: v.devid,
                mac: v.mac,
                bridge: v.bridge,
                be_state: v.be_state,
                fe_state: v.fe_state,
                evtchn: i32::try_from(v.evtchn).unwrap_or(-1),
                tx_ring_ref: i32::try_from(v.tx_ring_ref).unwrap_or(-1),
                rx_ring_ref: i32::try_from(v.rx_ring_ref).unwrap_or(-1),
                be_path: v.be_path,
                counters: [
                    v.stats.tx_packets,
                    v.stats.tx_bytes,
                    v.stats.tx_errors,
                    v.stats.rx_packets,
                    v.stats.rx_bytes,
                    v.stats.rx_dropped,
                ],
            })
            .collect();
        Ok(Response::Networks(rows))
    }

    /// `xl vcpu-list DOM`: each vCPU's state (`getvcpuinfo`) and its hard and soft
    /// affinity (`getvcpuaffinity`), vCPUs 0 to `getdomaininfo`'s `max_vcpu_id`.
    fn vcpu_list(&mut self, dom: &DomRef) -> Result<Response, ErrorReply> {
        let id = self.resolve(dom)?;
        let info = self
            .hv
            .domain_info(id)
            .map_err(|e| hv_error(format_args!("reading {dom}'s vCPUs"), e))?;
        if info.domain != id {
            return Err(resolve_error(dom, ResolveError::NoId(id.0)));
        }
        let nr_cpus = self.hv.physinfo().map_or(0, |p| p.nr_cpus);
        let mut vcpus = Vec::new();
        for vcpu in 0..=info.max_vcpu_id {
            let state = self
                .hv
                .vcpu_info(id, vcpu)
                .map_err(|e| hv_error(format_args!("reading vCPU {vcpu}'s state of {dom}"), e))?;
            let (hard, soft) = self.hv.vcpu_affinity(id, vcpu).map_err(|e| {
                hv_error(format_args!("reading vCPU {vcpu}'s affinity of {dom}"), e)
            })?;
            vcpus.push(control_proto::VcpuRow {
                vcpu,
                state,
                hard,
                soft,
            });
        }
        Ok(Response::Vcpus {
            domid: id.0,
            name: domains::info(&info, &self.records, 0).name,
            nr_cpus,
            vcpus,
        })
    }

    /// `xl vcpu-pin DOM VCPU|all HARD SOFT`: sets the given maps (`None`: left
    /// alone) of vCPU `vcpu`, or of every vCPU (0 to `getdomaininfo`'s
    /// `max_vcpu_id`), the hard map before the soft one, as the builder does.
    /// All or nothing: the maps are read first, and when the hypervisor refuses
    /// one, those already changed get their old maps back before the error is
    /// answered (it says whether that worked). dom0 may be pinned, as in xl.
    /// Like xl, the domain's config is left as it was: a reboot builds it with
    /// its `cpus =` and `cpus_soft =` maps.
    fn vcpu_pin(
        &mut self,
        dom: &DomRef,
        vcpu: Option<u32>,
        hard: Option<CpuMap>,
        soft: Option<CpuMap>,
    ) -> Result<Response, ErrorReply> {
        let bad = |m: String| ErrorReply::new(ErrorCode::BadRequest, m);
        if hard.is_none() && soft.is_none() {
            return Err(bad(
                "neither a hard nor a soft map: nothing to change (`-` leaves one alone, \
                 not both)"
                    .into(),
            ));
        }
        for (which, map) in [(Affinity::Hard, &hard), (Affinity::Soft, &soft)] {
            if map.is_some_and(|m| m.is_empty()) {
                return Err(bad(format!("the {} map holds no CPU", which.name())));
            }
        }
        let id = self.resolve(dom)?;
        let info = self
            .hv
            .domain_info(id)
            .map_err(|e| hv_error(format_args!("reading {dom}'s vCPUs"), e))?;
        if info.domain != id {
            return Err(resolve_error(dom, ResolveError::NoId(id.0)));
        }
        let last = info.max_vcpu_id;
        let vcpus = match vcpu {
            Some(n) if n > last => {
                let count = u64::from(last) + 1;
                let s = if count == 1 { "" } else { "s" };
                return Err(bad(format!(
                    "domain {dom} has no vCPU {n}: it has {count} vCPU{s} ({})",
                    if last == 0 {
                        "vCPU 0".to_string()
                    } else {
                        format!("0 to {last}")
                    }
                )));
            }
            Some(n) => n..=n,
            None => 0..=last,
        };
        // The maps as they are, to put back should the hypervisor refuse one.
        let mut old = Vec::new();
        for v in vcpus {
            let maps = self
                .hv
                .vcpu_affinity(id, v)
                .map_err(|e| hv_error(format_args!("reading vCPU {v}'s affinity of {dom}"), e))?;
            old.push((v, maps));
        }
        let mut done: Vec<(u32, Affinity, CpuMap)> = Vec::new();
        for &(v, (old_hard, old_soft)) in &old {
            for (which, map, before) in [
                (Affinity::Hard, hard, old_hard),
                (Affinity::Soft, soft, old_soft),
            ] {
                let Some(map) = map else { continue };
                if let Err(errno) = self.hv.set_vcpu_affinity(id, v, which, &map) {
                    let mut e = self.pin_error(dom, v, which, &map, errno);
                    e.message.push_str(&self.undo_pin(id, &done));
                    return Err(e);
                }
                done.push((v, which, before));
            }
        }
        Ok(Response::Ok)
    }

    /// The reply for vCPU `vcpu`'s `which` map `map` refused with `errno`: a
    /// hard map with no CPU that runs guests (`-EINVAL`) is said as the builder
    /// says it.
    fn pin_error(
        &mut self,
        dom: &DomRef,
        vcpu: u32,
        which: Affinity,
        map: &CpuMap,
        errno: Errno,
    ) -> ErrorReply {
        if which == Affinity::Hard && errno == Errno::EINVAL {
            let mut m = format!("vCPU {vcpu}'s CPUs ({map}) include none that runs guests");
            if let Some(n) = self
                .hv
                .physinfo()
                .ok()
                .map(|p| p.nr_cpus)
                .filter(|&n| n > 0)
            {
                m.push_str(&format!(" (this machine has {n}: {})", CpuMap::first(n)));
            }
            m.push_str("; XEN_DOMCTL_setvcpuaffinity refused the map: -EINVAL (22)");
            return ErrorReply::new(ErrorCode::BadRequest, m);
        }
        hv_error(
            format_args!(
                "setting vCPU {vcpu}'s {} affinity of {dom} to CPUs {map}",
                which.name()
            ),
            errno,
        )
    }

    /// Puts back the maps `done` changed (newest first); says what became of
    /// them, for the end of an error message.
    fn undo_pin(&mut self, id: DomId, done: &[(u32, Affinity, CpuMap)]) -> String {
        if done.is_empty() {
            return "; nothing was changed".into();
        }
        let mut failed: Vec<u32> = Vec::new();
        let mut errno = None;
        for &(v, which, before) in done.iter().rev() {
            if let Err(e) = self.hv.set_vcpu_affinity(id, v, which, &before) {
                failed.push(v);
                errno.get_or_insert(e);
            }
        }
        let list = |vs: &mut Vec<u32>| {
            vs.sort_unstable();
            vs.dedup();
            let s = if vs.len() == 1 { "" } else { "s" };
            let names: Vec<String> = vs.iter().map(u32::to_string).collect();
            format!("vCPU{s} {}", names.join(", "))
        };
        let mut changed: Vec<u32> = done.iter().map(|d| d.0).collect();
        match errno {
            None => format!(
                "; {} got the old maps back, so nothing was changed",
                list(&mut changed)
            ),
            Some(e) => format!(
                "; putting the old maps back failed too (-{e} ({})): {} keep the new ones \
                 (see `dom0ctl vcpu-list`)",
                e.get(),
                list(&mut failed)
            ),
        }
    }

    /// `xl network-attach`: the next vif number (one above the highest, as
    /// libxl's `libxl__device_nextid`), a MAC made from the UUID when the
    /// spec has none.
    fn network_attach(
        &mut self,
        dom: &DomRef,
        vif: &control_proto::vif::VifSpec,
    ) -> Result<Response, ErrorReply> {
        let id = self.control_target(dom, "given a vif")?;
        let devid = self
            .net
            .vifs(Some(id.0))
            .map(|v| v.devid + 1)
            .max()
            .unwrap_or(0);
        let uuid = self
            .configs
            .get(&id.0)
            .and_then(|c| c.uuid)
            .unwrap_or([0; 16]);
        let mut seed = uuid;
        seed[0] ^= id.0.to_le_bytes()[0];
        let mac = vif.mac.unwrap_or_else(|| Netback::make_mac(&seed, devid));
        if let Err(e) = self.net.attach(&mut self.xs, id.0, devid, vif, mac) {
            let code = match e {
                netback::AttachError::Store(_) => ErrorCode::Xenstore,
                _ => ErrorCode::BadConfig,
            };
            return Err(ErrorReply::new(code, format!("vif ({vif}): {e}")));
        }
        self.service_stores();
        if let Some(c) = self.configs.get_mut(&id.0) {
            c.vifs.push(control_proto::vif::VifSpec {
                mac: Some(mac),
                bridge: vif.bridge.clone(),
            });
        }
        Ok(Response::Ok)
    }

    /// `xl network-detach`: by number or MAC.
    fn network_detach(&mut self, dom: &DomRef, which: &str) -> Result<Response, ErrorReply> {
        let id = self.control_target(dom, "detached from a vif")?;
        let mac = control_proto::vif::parse_mac(which);
        let found = self
            .net
            .vifs(Some(id.0))
            .find(|v| which.parse::<u32>().ok() == Some(v.devid) || Some(v.mac) == mac)
            .map(|v| (v.devid, v.mac));
        let Some((devid, m)) = found else {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("domain {dom} has no vif {which} (see `dom0ctl network-list {dom}`)"),
            ));
        };
        self.net.detach(&mut self.xs, &mut self.hv, id.0, devid);
        if let Some(c) = self.configs.get_mut(&id.0) {
            c.vifs.retain(|v| v.mac != Some(m));
        }
        self.service_stores();
        Ok(Response::Ok)
    }

    fn block_attach(
        &mut self,
        dom: &DomRef,
        disk: &control_proto::disk::DiskSpec,
    ) -> Result<Response, ErrorReply> {
        let id = self.control_target(dom, "given a disk")?;
        self.attach_disks(id, core::slice::from_ref(disk))?;
        if let Some(c) = self.configs.get_mut(&id.0) {
            c.disks.push(disk.clone());
        }
        Ok(Response::Ok)
    }

    fn block_detach(&mut self, dom: &DomRef, vdev: &str) -> Result<Response, ErrorReply> {
        let id = self.control_target(dom, "detached from a disk")?;
        let devid = control_proto::disk::vdev_number(vdev).ok_or_else(|| {
            ErrorReply::new(
                ErrorCode::BadRequest,
                format!("{vdev} is not a virtual disk name (xvda, xvdb1, sda, 51712)"),
            )
        })?;
        if !self.blk.detach(&mut self.xs, &mut self.hv, id.0, devid) {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("domain {dom} has no disk {vdev} (see `dom0ctl block-list {dom}`)"),
            ));
        }
        for (d, target) in self.blk.take_detached() {
            self.volumes.release(&target, d);
        }
        if let Some(c) = self.configs.get_mut(&id.0) {
            c.disks.retain(|d| d.devid != devid);
        }
        self.service_stores();
        Ok(Response::Ok)
    }

    fn hello(&mut self, client_version: u32) -> Result<Response, ErrorReply> {
        // A new session: unfinished and unused uploads of the last one go, and no
        // console streams any more.
        self.uploads.clear();
        self.attached = None;
        self.unwatch();
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
            bridges: self.net.bridge_info(),
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

    /// A kept kernel for `up`: the copy another domain already keeps when the
    /// bytes are the same (`up` is then freed), else `up` itself.
    fn share_kernel(&self, up: Upload<S::Buf>) -> Rc<Upload<S::Buf>> {
        let same = self.kernels.values().find(|k| {
            k.crc32 == up.crc32
                && k.size == up.size
                && k.bytes().is_some()
                && k.bytes() == up.bytes()
        });
        match same {
            Some(k) => Rc::clone(k),
            None => Rc::new(up),
        }
    }

    fn create(&mut self, c: &CreateRequest) -> Result<Response, ErrorReply> {
        c.validate().map_err(ErrorReply::from)?;
        if self.records.by_name(&c.name).is_some() {
            return Err(ErrorReply::new(
                ErrorCode::NameInUse,
                format!("a domain named {} exists", c.name),
            ));
        }
        // The UUID first: it is the domain's handle from `createdomain` on, as in xl.
        let uuid = c.uuid.map_or_else(|| self.new_uuid(), Uuid);
        let rebooting = self.reboot_kernel.take();
        let image: &[u8] = match (&c.kernel, &rebooting) {
            (Kernel::Uploaded(_), Some(kept)) => kept.bytes().ok_or_else(|| {
                ErrorReply::new(ErrorCode::UploadState, "the kept kernel is incomplete")
            })?,
            (Kernel::Named(name), _) => {
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
            (Kernel::Uploaded(id), None) => self
                .uploads
                .get(*id)
                .and_then(|u| u.bytes())
                .ok_or_else(|| {
                    ErrorReply::new(
                        ErrorCode::UploadState,
                        format!("upload {id} is unknown or unfinished in this session"),
                    )
                })?,
        };
        // A bzImage is unpacked into a buffer of the store, kept until the build is
        // done; the upload (or kept copy) stays the bzImage, so a reboot unpacks it
        // again.
        let unpacked = unpack_kernel(&mut self.store, image)?;
        let image = match &unpacked {
            Some((buf, len)) => buf.bytes(*len),
            None => image,
        };
        check_kernel(image)?;
        let rebooting_rd = self.reboot_ramdisk.take();
        let ramdisk: Option<&[u8]> = match (&c.ramdisk, &rebooting_rd) {
            (None, _) => None,
            (Some(Kernel::Uploaded(_)), Some(kept)) => Some(kept.bytes().ok_or_else(|| {
                ErrorReply::new(ErrorCode::UploadState, "the kept ramdisk is incomplete")
            })?),
            (Some(Kernel::Named(name)), _) => Some(
                self.images
                    .as_ref()
                    .and_then(|b| b.get(name))
                    .ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::UnknownImage,
                            format!("dom0 has no image named {name} (the ramdisk)"),
                        )
                    })?
                    .data,
            ),
            (Some(Kernel::Uploaded(id)), None) => Some(
                self.uploads
                    .get(*id)
                    .and_then(|u| u.bytes())
                    .ok_or_else(|| {
                        ErrorReply::new(
                            ErrorCode::UploadState,
                            format!(
                                "upload {id} (the ramdisk) is unknown or unfinished in this \
                                 session"
                            ),
                        )
                    })?,
            ),
        };
        if let (Kernel::Uploaded(k), Some(Kernel::Uploaded(r))) = (&c.kernel, &c.ramdisk)
            && k == r
            && rebooting.is_none()
        {
            return Err(ErrorReply::new(
                ErrorCode::BadRequest,
                format!("upload {k} is named as both the kernel and the ramdisk"),
            ));
        }
        let req = BuildRequest {
            name: &c.name,
            handle: uuid.0,
            image,
            ramdisk,
            memory_mib: c.memory_mib,
            vcpus: c.vcpus,
            cpus: &c.cpus,
            cpus_soft: &c.cpus_soft,
            cmdline: c.cmdline.as_bytes(),
            backend: DomId::DOM0,
            unpause: false,
        };
        let built = builder::build(&mut self.hv, &req).map_err(|e| build_error(&c.name, e));
        drop(unpacked);
        let built = built?;
        let id = built.domid;
        // An uploaded kernel leaves the session's uploads; it is kept for the
        // domain's reboots once the domain is up (a failure below frees it).
        let kernel = match (c.kernel.clone(), rebooting) {
            (Kernel::Uploaded(_), Some(k)) => Some(k),
            (Kernel::Uploaded(u), None) => self.uploads.take(u).map(|up| self.share_kernel(up)),
            (Kernel::Named(_), _) => None,
        };
        let kept_ramdisk = match (&c.ramdisk, rebooting_rd) {
            (Some(Kernel::Uploaded(_)), Some(k)) => Some(k),
            (Some(Kernel::Uploaded(u)), None) => self.uploads.take(*u).map(Rc::new),
            _ => None,
        };
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
        // XenStore, as xl does before it unpauses: the domain's nodes, dom0's side
        // of its ring (mapped page, bound channel), `XS_INTRODUCE`.
        if let Err(e) = self.open_store(id, c, uuid, &built) {
            let _ = self.destroy_domain(id);
            return Err(e);
        }
        if let Err(e) = self.attach_disks(id, &c.disks) {
            let _ = self.destroy_domain(id);
            return Err(e);
        }
        let vifs = match self.attach_vifs(id, &uuid.0, &c.vifs) {
            Ok(v) => v,
            Err(e) => {
                let _ = self.destroy_domain(id);
                return Err(e);
            }
        };
        if let Err(e) = self.hv.unpause(id) {
            let _ = self.destroy_domain(id);
            return Err(hv_error(format_args!("unpausing {}", c.name), e));
        }
        let mut kept = c.clone();
        kept.uuid = Some(uuid.0);
        kept.vifs = vifs;
        self.configs.insert(id.0, kept);
        self.policies.insert(
            id.0,
            Policy {
                on_poweroff: c.on_poweroff,
                on_reboot: c.on_reboot,
                on_crash: c.on_crash,
                handled: false,
            },
        );
        self.records.insert(Record {
            id,
            name: c.name.clone(),
            created_ns: self.hv.now_ns(),
        });
        if let Some(k) = kernel {
            self.kernels.insert(id.0, k);
        }
        if let Some(r) = kept_ramdisk {
            self.ramdisks.insert(id.0, r);
        }
        Ok(Response::Created { domid: id.0 })
    }

    /// A fresh UUID (the pvclock and a counter as the seed).
    fn new_uuid(&mut self) -> Uuid {
        self.uuids_made += 1;
        let seed = self.hv.now_ns() ^ self.uuids_made.rotate_left(32);
        let u = Uuid::generate(seed);
        if self.configs.values().any(|c| c.uuid == Some(u.0)) {
            return Uuid::generate(seed ^ 0xdead_beef);
        }
        u
    }

    /// Sets up `id`'s XenStore: writes the nodes `xl` writes, maps the store page,
    /// binds dom0's end of the store channel, introduces the domain (firing
    /// `@introduceDomain`) and serves the ring once (it says "connected").
    fn open_store(
        &mut self,
        id: DomId,
        c: &CreateRequest,
        uuid: Uuid,
        built: &builder::Built,
    ) -> Result<(), ErrorReply> {
        let nodes = DomainNodes {
            domid: id.0,
            name: &c.name,
            uuid,
            memory_kib: u64::from(c.memory_mib) * 1024,
            vcpus: c.vcpus,
            console: (built.console.0.0, built.console.1.0),
            store: (built.xenstore.0.0, built.xenstore.1.0),
            cmdline: &c.cmdline,
            backend: 0,
        };
        xsl::apply(&mut self.xs, &xsl::domain_entries(&nodes))
            .map_err(|e| xs_error(&xsl::dom_path(id.0), e))?;
        let ring = self
            .hv
            .map_ring(id, built.xenstore.0)
            .map_err(|e| hv_error(format_args!("mapping {}'s xenstore page", c.name), e))?;
        let port = match self.hv.bind_store(id, built.xenstore.1) {
            Ok(p) => p,
            Err(e) => {
                self.hv.unmap_ring(ring);
                return Err(hv_error(
                    format_args!("binding {}'s xenstore channel", c.name),
                    e,
                ));
            }
        };
        self.stores.insert(id.0, StoreBack { ring, port, uuid });
        self.xs
            .introduce_domain(u32::from(id.0), built.xenstore.0.0, built.xenstore.1.0)
            .map_err(|e| xs_error("introduce", e))?;
        self.service_stores();
        Ok(())
    }

    /// Takes `id`'s XenStore down: its ring unmapped and channel closed, then
    /// `XS_RELEASE` (its nodes go, `@releaseDomain` fires) and the nodes the
    /// toolstack wrote for it removed.
    fn close_store(&mut self, id: DomId) {
        if let Some(sb) = self.stores.remove(&id.0) {
            self.hv.unmap_ring(sb.ring);
            self.hv.close(sb.port);
            let _ = self.xs.release_domain(u32::from(id.0));
            xsl::remove_domain(&mut self.xs, id.0, sb.uuid);
            self.service_stores();
        }
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
        self.close_disks(id);
        self.close_store(id);
        let r = self.hv.destroy(id);
        if r.is_ok() || r == Err(Errno::ESRCH) {
            self.records.remove(id);
            self.policies.remove(&id.0);
            if self.attached == Some(id) {
                self.attached = None;
            }
            self.configs.remove(&id.0);
            self.kernels.remove(&id.0);
            self.ramdisks.remove(&id.0);
        }
        r
    }

    /// Background work between requests: console output of every domain dom0 serves
    /// (streamed onto `out` for the attached one), and, when `VIRQ_DOM_EXC` fired (or
    /// once a second regardless), the domains that stopped, handled by their
    /// `on_poweroff`/`on_reboot`/`on_crash` (xl's `destroy`, `restart` or `preserve`).
    pub fn tick(&mut self, now: u64, out: &mut Vec<u8>) {
        // The store rings: at most once per STORE_SWEEP_NS (dom0's loop spins
        // while a request arrives; sweeping every ring on each spin would slow
        // the control link next to many domains). Requests from the control
        // link serve the rings at once themselves.
        if now.saturating_sub(self.last_store_sweep) >= STORE_SWEEP_NS
            || now < self.last_store_sweep
        {
            self.last_store_sweep = now;
            self.service_stores();
        }
        self.forward_watch_events(out);
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
                    self.close_disks(dom);
                    self.close_store(dom);
                    self.configs.remove(&id);
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
            let p = *p;
            // xl's mapping: reboot, crash, and every other reason (poweroff, suspend,
            // watchdog, soft reset) as poweroff.
            let (action, why, key) = match reason {
                r if r == ShutdownReason::Reboot as u32 => (p.on_reboot, "rebooted", "reboot"),
                r if r == ShutdownReason::Crash as u32 => (p.on_crash, "crashed", "crash"),
                _ => (p.on_poweroff, "shut down", "poweroff"),
            };
            if action == ExitAction::Restart && self.restart(dom, out) {
                continue;
            }
            // A restart that cannot be done (an uploaded kernel no longer kept)
            // leaves the domain dead: destroyed, as xl would after a failed rebuild.
            if action != ExitAction::Preserve {
                let was_attached = self.attached == Some(dom);
                let _ = self.destroy_domain(dom);
                if was_attached {
                    let ev = Event::ConsoleClosed {
                        domid: id,
                        reason: format!("the domain {why} and was destroyed (on_{key})"),
                    };
                    let _ = ev.write_frame(out);
                }
            }
        }
    }

    /// Queues the session watch's events as `XsWatchEvent`s.
    fn forward_watch_events(&mut self, out: &mut Vec<u8>) {
        let mut events = core::mem::take(&mut self.pending_events);
        while let Some(m) = self.xs.pop_output(0) {
            if m.is_event() {
                events.push(m);
            }
        }
        if self.watching.is_none() {
            return;
        }
        for m in events {
            let mut parts = m.payload.split(|&b| b == 0);
            let path = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let token = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let _ = Event::XsWatchEvent { path, token }.write_frame(out);
        }
    }

    /// `restart` (xl's default `on_reboot`): the domain stopped, so it is destroyed
    /// and built again from its config, with the same name and UUID (and a new id). Only domains built from one of dom0's images can be: an upload is
    /// gone once used. Returns whether it was restarted.
    fn restart(&mut self, dom: DomId, out: &mut Vec<u8>) -> bool {
        let Some(c) = self.configs.get(&dom.0).cloned() else {
            return false;
        };
        let kept = match c.kernel {
            Kernel::Named(_) => None,
            Kernel::Uploaded(_) => match self.kernels.get(&dom.0) {
                Some(k) => Some(Rc::clone(k)),
                None => return false,
            },
        };
        let kept_ramdisk = match c.ramdisk {
            Some(Kernel::Uploaded(_)) => match self.ramdisks.get(&dom.0) {
                Some(r) => Some(Rc::clone(r)),
                None => return false,
            },
            _ => None,
        };
        let was_attached = self.attached == Some(dom);
        let _ = self.destroy_domain(dom);
        self.reboot_kernel = kept;
        self.reboot_ramdisk = kept_ramdisk;
        if was_attached {
            let _ = Event::ConsoleClosed {
                domid: dom.0,
                reason: "the domain rebooted; it runs again under a new id".into(),
            }
            .write_frame(out);
        }
        // A rebuild that fails leaves the domain gone, as xl's would.
        let _ = self.create(&c);
        true
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

/// The largest kernel a bzImage may unpack to (its XZ dictionary is bounded by
/// `pvboot`'s own limit, 64 MiB).
pub use control_proto::MAX_UNPACKED_KERNEL_BYTES as MAX_UNPACKED_KERNEL;

/// Unpacks `image` if it is a bzImage (`pvboot::bzimage`): the kernel ELF goes into
/// a buffer of `store` (dom0's free frames); the XZ dictionary is taken from dom0's
/// heap (fallibly) and freed on return, and the decoder's state lives on the heap
/// too (dom0's stack is 64 KiB). `None`: not a bzImage, use `image` as it is.
pub fn unpack_kernel<S: UploadStore>(
    store: &mut S,
    image: &[u8],
) -> Result<Option<(S::Buf, usize)>, ErrorReply> {
    use pvboot::bzimage::{BzImage, is_bzimage};
    if !is_bzimage(image) {
        return Ok(None);
    }
    let bad = |e: pvboot::BzError| ErrorReply::new(ErrorCode::BadImage, format!("{e}"));
    let bz = BzImage::parse(image, MAX_UNPACKED_KERNEL).map_err(bad)?;
    let len = bz.decompressed_len();
    let mut out = store.alloc(len as u64).map_err(|e| {
        ErrorReply::new(
            ErrorCode::OutOfMemory,
            format!("cannot unpack the bzImage: its kernel of {len} bytes: {e}"),
        )
    })?;
    let scratch_len = bz.scratch_len();
    let mut dict = Vec::new();
    if dict.try_reserve_exact(scratch_len).is_err() {
        return Err(ErrorReply::new(
            ErrorCode::OutOfMemory,
            format!(
                "cannot unpack the bzImage: dom0's heap cannot hold its {scratch_len}-byte XZ \
                 dictionary"
            ),
        ));
    }
    dict.resize(scratch_len, 0);
    bz.decompress_boxed(out.bytes_mut(len), dict).map_err(bad)?;
    Ok(Some((out, len)))
}

/// Checks that `image` is a 64-bit Xen PV kernel (its ELF headers and notes).
fn check_kernel(image: &[u8]) -> Result<(), ErrorReply> {
    let bad = |what: String| ErrorReply::new(ErrorCode::BadImage, what);
    let elf = pvboot::elf::Elf::parse(image).map_err(|e| bad(format!("not a usable ELF: {e}")))?;
    pvboot::XenImageInfo::parse(&elf).map_err(|e| bad(format!("bad Xen notes: {e}")))?;
    Ok(())
}

/// The reply for a XenStore operation that failed: Xen's error name first.
fn xs_error(path: &str, e: xenstored::Error) -> ErrorReply {
    ErrorReply::new(ErrorCode::Xenstore, format!("{}: {path}", e.name()))
}

/// Xen's limits, checked before the store sees the request.
fn check_xs(path: &str, value: Option<&[u8]>) -> Result<(), ErrorReply> {
    xsl::check_limits(path, value).map_err(|m| ErrorReply::new(ErrorCode::BadRequest, m))
}

/// Permissions as `xenstore-ls -p` prints them: `n0,r3`.
pub(crate) fn perms_string(ps: &[xenstored::Perm]) -> String {
    let mut s = String::new();
    for (i, p) in ps.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let c = match p.access {
            xenstored::Access::None => 'n',
            xenstored::Access::Read => 'r',
            xenstored::Access::Write => 'w',
            xenstored::Access::Both => 'b',
        };
        s.push(c);
        s.push_str(&format!("{}", p.domid));
    }
    s
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
