//! The block back end (blkback): dom0 serves domUs' virtual block devices
//! (vbds) from its disks, speaking `io/blkif.h` as Linux's xen-blkback does,
//! so an unmodified Linux `xen-blkfront` connects to it. `docs/block.md`.
//!
//! * **Toolstack side** ([`Blkback::attach`]): the nodes `xl` writes for a
//!   disk (`libxl__device_disk_add`): `backend/vbd/D/N` owned by dom0 and
//!   readable by the domain, `device/vbd/N` owned by the domain and readable
//!   by dom0, and `/libxl/D/device/vbd/N`.
//! * **Handshake**: the back end publishes its limits and goes to InitWait;
//!   when the front end says Initialised (or Connected) it reads the rings
//!   (`ring-ref`, or `ring-page-order` and `ring-refN`; `multi-queue-num-queues`
//!   and `queue-N/`), maps them with `GNTTABOP_map_grant_ref`, binds the event
//!   channels, publishes the disk (`sectors`, `info`, features) and goes to
//!   Connected. A front end that closes is followed to Closed, and one that
//!   starts again (Initialising after Closed) gets InitWait again. Anything
//!   wrong in the front end's nodes is fatal for that vbd only: the reason goes
//!   to `/local/domain/0/error/backend/vbd/D/N/error` and the back end to
//!   Closing, as `xenbus_dev_fatal` does.
//! * **Data path**: requests are copied off the ring and checked
//!   ([`request`]); data moves by `GNTTABOP_copy` between the granted pages
//!   and one I/O buffer of dom0's, and the disk I/O of many requests goes to
//!   the disk as one batch ([`Disks::run`]). Flushes and barriers wait for the
//!   requests before them. A bad request gets `BLKIF_RSP_ERROR` (or
//!   `EOPNOTSUPP`) and nothing else happens; a front end that publishes an
//!   impossible ring index has its ring halted.

pub mod request;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use control_proto::disk::DiskSpec;
use hypercall_abi::io::blkif::{
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifBackRing, BlkifRequest,
    BlkifResponse, VDISK_READONLY,
};
use hypercall_abi::io::xenbus::XenbusState;
use hypercall_abi::{DomId, EvtchnPort, GrantRef};
use xenstored::Xenstored;
use xenstored::perms::{Access, Perm};

use crate::disks::{DiskOp, DiskReq, Disks};
use crate::hv::{GrantSeg, Hypervisor, RingId};
use crate::xenstore::{Entry, dom_path, libxl_path};
use request::{Checked, Dir, Limits, Plan, Seg};

/// Largest `ring-page-order` accepted (16 pages, Linux's default limit).
pub const MAX_RING_PAGE_ORDER: u32 = 4;
/// Most queues a front end may use (`multi-queue-max-queues`).
pub const MAX_QUEUES: u32 = 4;
/// `feature-max-indirect-segments` when the I/O buffer allows (Linux's).
pub const MAX_INDIRECT_SEGMENTS: u32 = 256;
/// The I/O buffer: the largest indirect request fits whole.
pub const IO_BUFFER_BYTES: usize = MAX_INDIRECT_SEGMENTS as usize * PAGE;
/// The buffer used when the hypervisor cannot give [`IO_BUFFER_BYTES`] of
/// I/O memory (indirect requests shrink to fit).
const FALLBACK_BUFFER_BYTES: usize = 64 * PAGE;
/// Rounds of (take, serve, answer) per ring per [`Blkback::poll`], so one busy
/// front end cannot keep dom0 from everything else.
const ROUNDS_PER_POLL: usize = 4;
/// The only ABI a 64-bit PV back end serves (`XEN_IO_PROTO_ABI_NATIVE`).
const PROTOCOL: &str = "x86_64-abi";
const PAGE: usize = 4096;
/// [`PAGE`] as a grant-copy length.
const PAGE_U16: u16 = 4096;

/// What backs a vbd: a range of one of dom0's disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The disk or volume name the config used.
    pub name: String,
    /// The disk's index in [`Disks::list`].
    pub disk: usize,
    /// First sector of the range on the disk.
    pub start: u64,
    /// Sectors in the range.
    pub sectors: u64,
    /// Whether the disk can discard.
    pub discard: bool,
    /// Whether the disk itself is read-only.
    pub readonly: bool,
}

/// Per-vbd counters, as Linux's blkback keeps them in sysfs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read requests.
    pub rd_req: u64,
    /// Write requests.
    pub wr_req: u64,
    /// Flush and barrier requests.
    pub f_req: u64,
    /// Discard requests.
    pub ds_req: u64,
    /// Sectors read.
    pub rd_sect: u64,
    /// Sectors written.
    pub wr_sect: u64,
    /// Requests answered with an error.
    pub errors: u64,
}

/// One connected ring (a queue).
#[derive(Debug)]
struct Queue {
    ring: RingId,
    port: EvtchnPort,
    /// The front end's port and first ring reference (`block-list`).
    fe_port: u32,
    ring_ref: u32,
    /// Both private indices: every request taken is answered before a poll
    /// returns, so `rsp_prod_pvt == req_cons` between polls.
    idx: u32,
    /// Halted: the front end published an impossible index.
    broken: bool,
}

/// One virtual block device.
#[derive(Debug)]
pub struct Vbd {
    /// The front end's domain.
    pub domid: u16,
    /// The virtual-device number.
    pub devid: u32,
    /// The config entry.
    pub spec: DiskSpec,
    /// The disk range.
    pub target: Target,
    /// The back end's XenbusState.
    pub state: XenbusState,
    /// Counters.
    pub stats: Stats,
    /// Whether the front end asked for persistent grants.
    pub persistent: bool,
    /// Being hot-unplugged: removed once the front end has closed.
    pub detaching: bool,
    queues: Vec<Queue>,
}

impl Vbd {
    /// `/local/domain/0/backend/vbd/D/N`.
    pub fn backend_path(&self) -> String {
        backend_path(self.domid, self.devid)
    }

    /// `/local/domain/D/device/vbd/N`.
    pub fn frontend_path(&self) -> String {
        frontend_path(self.domid, self.devid)
    }

    fn limits(&self, max_indirect: u32) -> Limits {
        Limits {
            sectors: self.target.sectors,
            readonly: self.spec.readonly || self.target.readonly,
            discard: self.target.discard,
            max_indirect,
        }
    }
}

/// `/local/domain/0/backend/vbd/D/N`.
pub fn backend_path(domid: u16, devid: u32) -> String {
    format!("{}/backend/vbd/{domid}/{devid}", dom_path(0))
}

/// `/local/domain/D/device/vbd/N`.
pub fn frontend_path(domid: u16, devid: u32) -> String {
    format!("{}/device/vbd/{devid}", dom_path(domid))
}

/// What `block-list` shows of one vbd (`xl block-list`'s columns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VbdInfo {
    /// The virtual-device number.
    pub devid: u32,
    /// The guest's name for it.
    pub vdev: String,
    /// The disk or volume.
    pub target: String,
    /// `w` or `r`.
    pub mode: &'static str,
    /// The back end's state.
    pub be_state: u32,
    /// The front end's state (0 when it has none).
    pub fe_state: u32,
    /// The front end's event channel (-1 before it connected).
    pub evtchn: i64,
    /// The front end's (first) ring reference (-1 before it connected).
    pub ring_ref: i64,
    /// Queues connected.
    pub queues: usize,
    /// The back end's directory.
    pub be_path: String,
    /// Counters.
    pub stats: Stats,
}

/// Why a disk could not be attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttachError {
    /// The domain already has a disk with this virtual device.
    Exists(String),
    /// Another domain (or this one) uses the target in a way that excludes
    /// this use: a writable user excludes every other user.
    InUse {
        /// The target.
        target: String,
        /// Who has it.
        domid: u16,
        /// Whether that user writes.
        writable: bool,
    },
    /// The store refused a node.
    Store(xenstored::Error),
}

impl core::fmt::Display for AttachError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AttachError::Exists(v) => write!(f, "the domain already has a disk {v}"),
            AttachError::InUse {
                target,
                domid,
                writable,
            } => write!(
                f,
                "{target} is in use by domain {domid} ({}); a disk used read-write has \
                 exactly one user, and a read-only one only read-only users",
                if *writable { "read-write" } else { "read-only" }
            ),
            AttachError::Store(e) => write!(f, "xenstore refused the disk's nodes: {e:?}"),
        }
    }
}

/// Every vbd dom0 serves.
#[derive(Debug, Default)]
pub struct Blkback {
    vbds: Vec<Vbd>,
    buf: Option<&'static mut [u8]>,
    /// `feature-max-indirect-segments` (what the buffer holds, at most 256).
    max_indirect: u32,
    /// The store's generation when the state machines last ran.
    generation: Option<u64>,
    /// Requests with an error status, over all vbds (reported by dom0).
    pub errors: u64,
    /// Vbds removed by a hot-unplug since [`Blkback::take_detached`]: (domain,
    /// target name).
    detached: Vec<(u16, String)>,
}

/// A `XenbusState` as the store holds it (`None`: absent or not a state).
fn read_state(xs: &mut Xenstored, path: &str) -> Option<XenbusState> {
    XenbusState::parse(&xs.read(path).ok()?)
}

/// A decimal number a front end wrote.
fn read_u32(xs: &mut Xenstored, path: &str) -> Option<u32> {
    let v = xs.read(path).ok()?;
    core::str::from_utf8(&v).ok()?.trim().parse().ok()
}

fn entry(path: String, value: impl Into<Vec<u8>>, perms: Option<Vec<Perm>>) -> Entry {
    Entry {
        path,
        value: value.into(),
        perms,
    }
}

/// The nodes `xl` writes for disk `spec` of domain `domid` served by dom0, in
/// its order (`libxl__device_generic_add`). The hot-plug `script` node is left
/// out: dom0 runs no scripts, and the back end needs no `physical-device`.
pub fn entries(domid: u16, spec: &DiskSpec, discard: bool) -> Vec<Entry> {
    let n = spec.devid;
    let fe = frontend_path(domid, n);
    let be = backend_path(domid, n);
    let lp = format!("{}/device/vbd/{n}", libxl_path(domid));
    let d = u32::from(domid);
    let fe_perms = || {
        Some(alloc::vec![
            Perm::new(d, Access::None),
            Perm::new(0, Access::Read)
        ])
    };
    let be_perms = alloc::vec![Perm::new(0, Access::None), Perm::new(d, Access::Read)];
    let mut v = alloc::vec![
        entry(format!("{lp}/frontend"), fe.as_bytes(), None),
        entry(format!("{lp}/backend"), be.as_bytes(), None),
        entry(fe.clone(), "", fe_perms()),
        entry(format!("{fe}/backend"), be.as_bytes(), fe_perms()),
        entry(format!("{fe}/backend-id"), "0", fe_perms()),
        entry(format!("{fe}/state"), "1", fe_perms()),
        entry(format!("{fe}/virtual-device"), format!("{n}"), fe_perms()),
        entry(format!("{fe}/device-type"), "disk", fe_perms()),
        entry(format!("{fe}/protocol"), PROTOCOL, fe_perms()),
        entry(be.clone(), "", Some(be_perms)),
        entry(format!("{be}/frontend"), fe.as_bytes(), None),
        entry(format!("{be}/params"), spec.target.as_bytes(), None),
        entry(format!("{be}/frontend-id"), format!("{domid}"), None),
        entry(format!("{be}/online"), "1", None),
        entry(format!("{be}/removable"), "0", None),
        entry(format!("{be}/bootable"), "1", None),
        entry(format!("{be}/state"), "1", None),
        entry(format!("{be}/dev"), spec.vdev.as_bytes(), None),
        entry(format!("{be}/type"), "phy", None),
        entry(format!("{be}/mode"), spec.mode(), None),
        entry(format!("{be}/device-type"), "disk", None),
    ];
    v.push(entry(
        format!("{be}/discard-enable"),
        if discard { "1" } else { "0" },
        None,
    ));
    v
}

impl Blkback {
    /// No vbds yet.
    pub fn new() -> Self {
        Blkback::default()
    }

    /// The vbds of `domid` (all of them for `None`).
    pub fn vbds(&self, domid: Option<u16>) -> impl Iterator<Item = &Vbd> {
        self.vbds
            .iter()
            .filter(move |v| domid.is_none_or(|d| v.domid == d))
    }

    /// Who uses `target` on `disk` and how: (domain, writable) pairs.
    pub fn users(&self, disk: usize, target: &str) -> Vec<(u16, bool)> {
        self.vbds
            .iter()
            .filter(|v| v.target.disk == disk && v.target.name == target)
            .map(|v| (v.domid, !v.spec.readonly))
            .collect()
    }

    /// The I/O buffer, allocated on first use.
    fn ensure_buffer<H: Hypervisor>(&mut self, hv: &mut H) {
        if self.buf.is_some() {
            return;
        }
        let buf = hv
            .io_buffer(IO_BUFFER_BYTES)
            .unwrap_or_else(|| alloc::vec![0u8; FALLBACK_BUFFER_BYTES].leak());
        let pages = u32::try_from(buf.len() / PAGE).unwrap_or(0);
        self.max_indirect = pages.min(MAX_INDIRECT_SEGMENTS);
        self.buf = Some(buf);
    }

    /// Gives domain `domid` the disk `spec` backed by `target`: checks that the
    /// target may be shared this way, writes the toolstack's nodes, and
    /// publishes the back end's limits (state InitWait), as `xl block-attach`
    /// and blkback's probe do. Works on a running domain too (hot-plug): its
    /// front end finds the new `device/vbd/N`.
    pub fn attach<H: Hypervisor>(
        &mut self,
        xs: &mut Xenstored,
        hv: &mut H,
        domid: u16,
        spec: &DiskSpec,
        target: Target,
    ) -> Result<(), AttachError> {
        if self
            .vbds
            .iter()
            .any(|v| v.domid == domid && v.devid == spec.devid)
        {
            return Err(AttachError::Exists(spec.vdev.clone()));
        }
        if let Some(&(d, w)) = self
            .users(target.disk, &target.name)
            .iter()
            .find(|&&(_, w)| w || !spec.readonly)
        {
            return Err(AttachError::InUse {
                target: target.name.clone(),
                domid: d,
                writable: w,
            });
        }
        self.ensure_buffer(hv);
        crate::xenstore::apply(xs, &entries(domid, spec, target.discard))
            .map_err(AttachError::Store)?;
        let vbd = Vbd {
            domid,
            devid: spec.devid,
            spec: spec.clone(),
            target,
            state: XenbusState::Initialising,
            stats: Stats::default(),
            persistent: false,
            detaching: false,
            queues: Vec::new(),
        };
        let be = vbd.backend_path();
        let probe = [
            (
                "feature-max-indirect-segments",
                format!("{}", self.max_indirect),
            ),
            ("multi-queue-max-queues", format!("{MAX_QUEUES}")),
            ("max-ring-page-order", format!("{MAX_RING_PAGE_ORDER}")),
        ];
        for (k, v) in probe {
            xs.write(&format!("{be}/{k}"), v.as_bytes())
                .map_err(AttachError::Store)?;
        }
        self.vbds.push(vbd);
        let i = self.vbds.len() - 1;
        switch(xs, &mut self.vbds[i], XenbusState::InitWait);
        self.generation = None;
        Ok(())
    }

    /// Takes every vbd of `domid` down (its domain is being destroyed): rings
    /// unmapped and channels closed, the back end's directory removed. The
    /// front end's nodes go with the domain's.
    pub fn detach_domain<H: Hypervisor>(&mut self, xs: &mut Xenstored, hv: &mut H, domid: u16) {
        let mut i = 0;
        while i < self.vbds.len() {
            if self.vbds[i].domid == domid {
                let mut v = self.vbds.remove(i);
                disconnect(hv, &mut v);
                let _ = xs.rm(&v.backend_path());
                let _ = xs.rm(&format!(
                    "{}/error/backend/vbd/{domid}/{}",
                    dom_path(0),
                    v.devid
                ));
            } else {
                i += 1;
            }
        }
        let _ = xs.rm(&format!("{}/backend/vbd/{domid}", dom_path(0)));
        let _ = xs.rm(&format!("{}/error/backend/vbd/{domid}", dom_path(0)));
        self.generation = None;
    }

    /// Hot-unplugs disk `devid` of `domid` (`xl block-detach`): the back end
    /// goes to Closing with `online` 0, and the vbd is removed once the front
    /// end has closed (at once if it never connected). Returns false when the
    /// domain has no such disk.
    pub fn detach<H: Hypervisor>(
        &mut self,
        xs: &mut Xenstored,
        hv: &mut H,
        domid: u16,
        devid: u32,
    ) -> bool {
        let Some(i) = self
            .vbds
            .iter()
            .position(|v| v.domid == domid && v.devid == devid)
        else {
            return false;
        };
        let v = &mut self.vbds[i];
        v.detaching = true;
        let _ = xs.write(&format!("{}/online", v.backend_path()), b"0");
        let fe = read_state(xs, &format!("{}/state", v.frontend_path()));
        if v.state == XenbusState::Connected {
            disconnect(hv, v);
            switch(xs, v, XenbusState::Closing);
        }
        if !matches!(
            fe,
            Some(XenbusState::Initialised | XenbusState::Connected | XenbusState::Closing)
        ) {
            self.remove(xs, hv, i);
        }
        self.generation = None;
        true
    }

    /// Removes vbd `i` and its nodes on both sides.
    fn remove<H: Hypervisor>(&mut self, xs: &mut Xenstored, hv: &mut H, i: usize) {
        let mut v = self.vbds.remove(i);
        disconnect(hv, &mut v);
        let _ = xs.rm(&v.backend_path());
        let _ = xs.rm(&v.frontend_path());
        let _ = xs.rm(&format!("{}/device/vbd/{}", libxl_path(v.domid), v.devid));
        self.detached.push((v.domid, v.target.name));
    }

    /// The vbds hot-unplugging removed since the last call: (domain, target).
    pub fn take_detached(&mut self) -> Vec<(u16, String)> {
        core::mem::take(&mut self.detached)
    }

    /// What `block-list` shows for `domid`.
    pub fn list(&self, xs: &mut Xenstored, domid: u16) -> Vec<VbdInfo> {
        self.vbds(Some(domid))
            .map(|v| {
                let fe = v.frontend_path();
                let q = v.queues.first();
                VbdInfo {
                    devid: v.devid,
                    vdev: v.spec.vdev.clone(),
                    target: v.target.name.clone(),
                    mode: v.spec.mode(),
                    be_state: v.state as u32,
                    fe_state: read_state(xs, &format!("{fe}/state")).map_or(0, |s| s as u32),
                    evtchn: q.map_or(-1, |q| i64::from(q.fe_port)),
                    ring_ref: q.map_or(-1, |q| i64::from(q.ring_ref)),
                    queues: v.queues.len(),
                    be_path: v.backend_path(),
                    stats: v.stats,
                }
            })
            .collect()
    }

    /// Runs the handshake of every vbd whose front end changed something in
    /// the store, then serves every connected ring. Returns whether a ring
    /// still has requests waiting (poll again soon) .
    pub fn poll<H: Hypervisor>(
        &mut self,
        xs: &mut Xenstored,
        hv: &mut H,
        disks: &mut dyn Disks,
    ) -> bool {
        if self.vbds.is_empty() {
            return false;
        }
        if self.generation != Some(xs.generation()) {
            for v in &mut self.vbds {
                frontend_changed(xs, hv, v);
            }
            // Hot-unplugged vbds whose front end has let go.
            while let Some(i) = self.vbds.iter().position(|v| {
                v.detaching && matches!(v.state, XenbusState::Closed | XenbusState::InitWait)
            }) {
                self.remove(xs, hv, i);
            }
            self.generation = Some(xs.generation());
        }
        let mut more = false;
        let max_indirect = self.max_indirect;
        let Some(buf) = self.buf.as_deref_mut() else {
            return false;
        };
        for v in &mut self.vbds {
            if v.state != XenbusState::Connected {
                continue;
            }
            let lim = v.limits(max_indirect);
            for qi in 0..v.queues.len() {
                let dom = DomId(v.domid);
                let mut s = Served::default();
                more |= serve_queue(
                    hv,
                    disks,
                    buf,
                    dom,
                    &v.target,
                    &lim,
                    &mut v.queues[qi],
                    &mut s,
                );
                v.stats.rd_req += s.stats.rd_req;
                v.stats.wr_req += s.stats.wr_req;
                v.stats.f_req += s.stats.f_req;
                v.stats.ds_req += s.stats.ds_req;
                v.stats.rd_sect += s.stats.rd_sect;
                v.stats.wr_sect += s.stats.wr_sect;
                v.stats.errors += s.stats.errors;
                self.errors += s.stats.errors;
                if s.halted {
                    let msg = format!(
                        "the front end published an impossible ring index on queue {qi}; ring halted"
                    );
                    fatal(xs, v, &msg);
                }
            }
        }
        more
    }
}

/// Writes the back end's state.
fn switch(xs: &mut Xenstored, v: &mut Vbd, state: XenbusState) {
    v.state = state;
    let _ = xs.write(
        &format!("{}/state", v.backend_path()),
        state.as_str().as_bytes(),
    );
}

/// `xenbus_dev_fatal`: the reason under dom0's `error/`, the back end to Closing.
fn fatal(xs: &mut Xenstored, v: &mut Vbd, msg: &str) {
    let path = format!(
        "{}/error/backend/vbd/{}/{}/error",
        dom_path(0),
        v.domid,
        v.devid
    );
    let _ = xs.write(&path, msg.as_bytes());
    switch(xs, v, XenbusState::Closing);
}

/// Unmaps the rings and closes the channels of `v`.
fn disconnect<H: Hypervisor>(hv: &mut H, v: &mut Vbd) {
    for q in v.queues.drain(..) {
        hv.close(q.port);
        hv.unmap_grant_ring(q.ring);
    }
}

/// The back end's reaction to the front end's state (Linux's
/// `frontend_changed`).
fn frontend_changed<H: Hypervisor>(xs: &mut Xenstored, hv: &mut H, v: &mut Vbd) {
    let fe = v.frontend_path();
    match read_state(xs, &format!("{fe}/state")) {
        Some(XenbusState::Initialising) if v.state == XenbusState::Closed => {
            // The front end starts again (its driver was reloaded).
            switch(xs, v, XenbusState::InitWait);
        }
        Some(XenbusState::Initialised | XenbusState::Connected)
            if v.state != XenbusState::Connected
                && v.state != XenbusState::Closing
                && v.state != XenbusState::Closed =>
        {
            disconnect(hv, v);
            match connect_rings(xs, hv, v) {
                Ok(()) => {
                    publish_disk(xs, v);
                    switch(xs, v, XenbusState::Connected);
                }
                Err(msg) => {
                    disconnect(hv, v);
                    fatal(xs, v, &msg);
                }
            }
        }
        Some(XenbusState::Closing) if v.state != XenbusState::Closing => {
            disconnect(hv, v);
            switch(xs, v, XenbusState::Closing);
        }
        Some(XenbusState::Closed) | None if v.state != XenbusState::Closed => {
            disconnect(hv, v);
            switch(xs, v, XenbusState::Closed);
        }
        _ => {}
    }
}

/// Reads the front end's rings and channels and connects them.
fn connect_rings<H: Hypervisor>(xs: &mut Xenstored, hv: &mut H, v: &mut Vbd) -> Result<(), String> {
    let fe = v.frontend_path();
    if let Ok(p) = xs.read(&format!("{fe}/protocol"))
        && p.as_slice() != PROTOCOL.as_bytes()
    {
        return Err(format!(
            "unsupported protocol {:?} (a 64-bit PV back end serves {PROTOCOL})",
            String::from_utf8_lossy(&p)
        ));
    }
    v.persistent = read_u32(xs, &format!("{fe}/feature-persistent")) == Some(1);
    let queues = match xs.read(&format!("{fe}/multi-queue-num-queues")) {
        Err(_) => 1,
        Ok(_) => match read_u32(xs, &format!("{fe}/multi-queue-num-queues")) {
            Some(n @ 1..=MAX_QUEUES) => n,
            _ => {
                return Err(format!("multi-queue-num-queues must be 1 to {MAX_QUEUES}"));
            }
        },
    };
    let order = match xs.read(&format!("{fe}/ring-page-order")) {
        Err(_) => None,
        Ok(_) => match read_u32(xs, &format!("{fe}/ring-page-order")) {
            Some(o) if o <= MAX_RING_PAGE_ORDER => Some(o),
            _ => {
                return Err(format!(
                    "ring-page-order must be at most {MAX_RING_PAGE_ORDER}"
                ));
            }
        },
    };
    for q in 0..queues {
        let dir = if queues == 1 {
            fe.clone()
        } else {
            format!("{fe}/queue-{q}")
        };
        let refs: Vec<u32> = match order {
            None => alloc::vec![
                read_u32(xs, &format!("{dir}/ring-ref"))
                    .ok_or_else(|| format!("{dir}/ring-ref is missing or not a number"))?
            ],
            Some(o) => (0..1u32 << o)
                .map(|i| {
                    read_u32(xs, &format!("{dir}/ring-ref{i}"))
                        .ok_or_else(|| format!("{dir}/ring-ref{i} is missing or not a number"))
                })
                .collect::<Result<_, _>>()?,
        };
        let port = read_u32(xs, &format!("{dir}/event-channel"))
            .ok_or_else(|| format!("{dir}/event-channel is missing or not a number"))?;
        let grefs: Vec<GrantRef> = refs.iter().map(|&r| GrantRef(r)).collect();
        let dom = DomId(v.domid);
        let ring = hv
            .map_grant_ring(dom, &grefs)
            .map_err(|e| format!("mapping the ring of queue {q} (grant {}): {e:?}", refs[0]))?;
        let idx = match hv.ring(ring).map(BlkifBackRing::new) {
            Some(Ok(r)) => r.req_cons(),
            _ => {
                hv.unmap_grant_ring(ring);
                return Err(format!("the ring of queue {q} is unusable"));
            }
        };
        let local = match hv.bind_backend(dom, hypercall_abi::EvtchnPort(port)) {
            Ok(p) => p,
            Err(e) => {
                hv.unmap_grant_ring(ring);
                return Err(format!("binding event channel {port} of queue {q}: {e:?}"));
            }
        };
        v.queues.push(Queue {
            ring,
            port: local,
            fe_port: port,
            ring_ref: refs[0],
            idx,
            broken: false,
        });
    }
    Ok(())
}

/// What the back end tells a connecting front end about the disk (Linux's
/// `connect`).
fn publish_disk(xs: &mut Xenstored, v: &Vbd) {
    let be = v.backend_path();
    let readonly = v.spec.readonly || v.target.readonly;
    let mut keys: Vec<(&str, String)> = alloc::vec![
        ("feature-flush-cache", "1".into()),
        ("feature-barrier", "1".into()),
        ("feature-persistent", "1".into()),
        ("sectors", format!("{}", v.target.sectors)),
        (
            "info",
            format!("{}", if readonly { VDISK_READONLY } else { 0 })
        ),
        ("sector-size", "512".into()),
        ("physical-sector-size", "512".into()),
    ];
    if v.target.discard && !readonly {
        keys.extend([
            ("discard-granularity", "4096".into()),
            ("discard-alignment", "0".into()),
            ("discard-secure", "0".into()),
            ("feature-discard", "1".into()),
        ]);
    }
    for (k, val) in keys {
        let _ = xs.write(&format!("{be}/{k}"), val.as_bytes());
    }
}

/// What one queue's service did.
#[derive(Debug, Default)]
struct Served {
    stats: Stats,
    halted: bool,
}

/// Serves one queue: up to [`ROUNDS_PER_POLL`] rounds of taking every
/// published request, running them, and answering. Returns whether requests
/// are still waiting.
#[allow(clippy::too_many_arguments)]
fn serve_queue<H: Hypervisor>(
    hv: &mut H,
    disks: &mut dyn Disks,
    buf: &mut [u8],
    dom: DomId,
    target: &Target,
    lim: &Limits,
    q: &mut Queue,
    s: &mut Served,
) -> bool {
    if q.broken {
        return false;
    }
    for _ in 0..ROUNDS_PER_POLL {
        // Copy the requests out, so the page is not borrowed during the I/O.
        let mut taken: Vec<BlkifRequest> = Vec::new();
        {
            let Some(page) = hv.ring(q.ring) else {
                return false;
            };
            let Ok(mut back) = BlkifBackRing::resume(page, q.idx, q.idx) else {
                return false;
            };
            loop {
                match back.take_request() {
                    Ok(Some(r)) => taken.push(r),
                    Ok(None) => break,
                    Err(_) => {
                        q.broken = true;
                        s.halted = true;
                        return false;
                    }
                }
            }
        }
        let checked: Vec<Checked> = taken.iter().map(|r| request::check(r, lim)).collect();
        let status = run(hv, disks, buf, dom, target, lim, &checked, &mut s.stats);
        let Some(page) = hv.ring(q.ring) else {
            return false;
        };
        let n = u32::try_from(checked.len()).unwrap_or(u32::MAX);
        let Ok(mut back) = BlkifBackRing::resume(page, q.idx, q.idx.wrapping_add(n)) else {
            return false;
        };
        for (c, st) in checked.iter().zip(&status) {
            if *st != BLKIF_RSP_OKAY {
                s.stats.errors += 1;
            }
            let rsp = BlkifResponse {
                id: c.id,
                operation: c.op,
                status: *st,
                ..BlkifResponse::default()
            };
            let _ = back.put_response(&rsp);
        }
        q.idx = back.rsp_prod_pvt();
        let notify = back.push_responses();
        let more = match back.final_check_for_requests() {
            Ok(m) => m,
            Err(_) => {
                q.broken = true;
                s.halted = true;
                false
            }
        };
        if notify {
            hv.notify(q.port);
        }
        if !more {
            return false;
        }
    }
    true
}

/// Runs `reqs` in order and returns each one's status. Reads, writes and
/// discards between two flushes go to the disk as batches that fit the
/// buffer; a flush (or barrier) waits for what came before it.
#[allow(clippy::too_many_arguments)]
fn run<H: Hypervisor>(
    hv: &mut H,
    disks: &mut dyn Disks,
    buf: &mut [u8],
    dom: DomId,
    target: &Target,
    lim: &Limits,
    reqs: &[Checked],
    stats: &mut Stats,
) -> Vec<i16> {
    let mut status: Vec<i16> = alloc::vec![BLKIF_RSP_ERROR; reqs.len()];
    // The plans to run, after fetching indirect segment lists.
    let mut plans: Vec<(usize, Plan)> = Vec::new();
    for (i, c) in reqs.iter().enumerate() {
        match &c.plan {
            Err(st) => status[i] = *st,
            Ok(Plan::Indirect {
                dir,
                sector,
                nr_segments,
                pages,
            }) => match fetch_indirect(hv, dom, buf, *dir, *sector, *nr_segments, pages, lim) {
                Ok(p) => plans.push((i, p)),
                Err(st) => status[i] = st,
            },
            Ok(p) => plans.push((i, p.clone())),
        }
        match c.op {
            BLKIF_OP_READ => stats.rd_req += 1,
            BLKIF_OP_WRITE => stats.wr_req += 1,
            BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER => stats.f_req += 1,
            BLKIF_OP_DISCARD => stats.ds_req += 1,
            _ => {}
        }
    }
    let mut batch: Vec<(usize, Plan)> = Vec::new();
    let mut bytes = 0usize;
    for (i, p) in plans {
        let flush = matches!(p, Plan::Rw { flush: true, .. });
        let b = p.bytes();
        if flush || bytes + b > buf.len() {
            run_batch(hv, disks, buf, dom, target, &batch, &mut status, stats);
            batch.clear();
            bytes = 0;
        }
        if flush {
            let mut f = [DiskReq::new(0, DiskOp::Flush)];
            disks.run(target.disk, &mut f);
            if f[0].result.is_err() {
                status[i] = BLKIF_RSP_ERROR;
                continue;
            }
            if b == 0 {
                status[i] = BLKIF_RSP_OKAY;
                continue;
            }
        }
        bytes += b;
        batch.push((i, p));
    }
    run_batch(hv, disks, buf, dom, target, &batch, &mut status, stats);
    status
}

/// Fetches an indirect request's segment lists (by grant copy into the end of
/// the buffer, which no batch is using yet) and checks them.
#[allow(clippy::too_many_arguments)]
fn fetch_indirect<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    buf: &mut [u8],
    dir: Dir,
    sector: u64,
    nr_segments: usize,
    pages: &[GrantRef],
    lim: &Limits,
) -> Result<Plan, i16> {
    let len = pages.len() * PAGE;
    let at = buf.len().checked_sub(len).ok_or(BLKIF_RSP_ERROR)?;
    let segs: Vec<GrantSeg> = pages
        .iter()
        .enumerate()
        .map(|(k, &gref)| GrantSeg {
            gref,
            offset: 0,
            len: PAGE_U16,
            buf_off: at + k * PAGE,
        })
        .collect();
    let mut st = alloc::vec![0i16; segs.len()];
    if hv.grant_copy(dom, false, buf, &segs, &mut st).is_err() || st.iter().any(|s| *s != 0) {
        return Err(BLKIF_RSP_ERROR);
    }
    request::indirect_segments(dir, sector, nr_segments, &buf[at..], lim)
}

/// The grant-copy pieces of `segs`, their data starting at `off` in the buffer.
fn pieces(segs: &[Seg], off: usize, out: &mut Vec<(usize, GrantSeg)>, owner: usize) {
    let mut at = off;
    for s in segs {
        let len = s.bytes();
        // A segment is at most a page (checked when the request was).
        let len16 = u16::try_from(len).unwrap_or(PAGE_U16);
        out.push((
            owner,
            GrantSeg {
                gref: s.gref,
                offset: s.offset(),
                len: len16,
                buf_off: at,
            },
        ));
        at += len;
    }
}

/// Grant-copies `pieces` one way and marks the owners of failed pieces.
fn copy<H: Hypervisor>(
    hv: &mut H,
    dom: DomId,
    to_guest: bool,
    buf: &mut [u8],
    pieces: &[(usize, GrantSeg)],
    failed: &mut [bool],
) {
    if pieces.is_empty() {
        return;
    }
    let segs: Vec<GrantSeg> = pieces.iter().map(|(_, g)| *g).collect();
    let mut st = alloc::vec![0i16; segs.len()];
    let ok = hv.grant_copy(dom, to_guest, buf, &segs, &mut st).is_ok();
    for ((owner, _), s) in pieces.iter().zip(&st) {
        if !ok || *s != 0 {
            failed[*owner] = true;
        }
    }
}

/// Runs one batch of plans without flushes: the guest's data in, one disk
/// batch, the data out, and each request's status.
#[allow(clippy::too_many_arguments)]
fn run_batch<H: Hypervisor>(
    hv: &mut H,
    disks: &mut dyn Disks,
    buf: &mut [u8],
    dom: DomId,
    target: &Target,
    batch: &[(usize, Plan)],
    status: &mut [i16],
    stats: &mut Stats,
) {
    if batch.is_empty() {
        return;
    }
    // Lay the data out in the buffer, in batch order.
    let mut offs = Vec::with_capacity(batch.len());
    let mut at = 0usize;
    for (_, p) in batch {
        offs.push(at);
        at += p.bytes();
    }
    let mut failed = alloc::vec![false; batch.len()];
    let mut ins = Vec::new();
    let mut outs = Vec::new();
    for (k, (_, p)) in batch.iter().enumerate() {
        if let Plan::Rw { dir, segs, .. } = p {
            match dir {
                Dir::Write => pieces(segs, offs[k], &mut ins, k),
                Dir::Read => pieces(segs, offs[k], &mut outs, k),
            }
        }
    }
    copy(hv, dom, false, buf, &ins, &mut failed);
    // One disk request per plan, each on its own part of the buffer.
    let mut done = alloc::vec![false; batch.len()];
    {
        let mut reqs: Vec<DiskReq<'_>> = Vec::with_capacity(batch.len());
        let mut owners: Vec<usize> = Vec::with_capacity(batch.len());
        let mut rest: &mut [u8] = &mut buf[..at];
        for (k, (_, p)) in batch.iter().enumerate() {
            let (mine, tail) = core::mem::take(&mut rest).split_at_mut(p.bytes());
            rest = tail;
            if failed[k] {
                continue;
            }
            let req = match p {
                Plan::Rw {
                    dir: Dir::Read,
                    sector,
                    ..
                } => DiskReq::new(target.start + sector, DiskOp::Read(mine)),
                Plan::Rw {
                    dir: Dir::Write,
                    sector,
                    ..
                } => DiskReq::new(target.start + sector, DiskOp::Write(mine)),
                Plan::Discard { sector, sectors } => {
                    DiskReq::new(target.start + sector, DiskOp::Discard { sectors: *sectors })
                }
                Plan::Indirect { .. } => continue,
            };
            reqs.push(req);
            owners.push(k);
        }
        disks.run(target.disk, &mut reqs);
        for (r, &k) in reqs.iter().zip(&owners) {
            done[k] = r.result.is_ok();
        }
    }
    // Only reads whose disk I/O succeeded go back to the guest.
    outs.retain(|(k, _)| done[*k]);
    copy(hv, dom, true, buf, &outs, &mut failed);
    for (k, (i, p)) in batch.iter().enumerate() {
        let ok = done[k] && !failed[k];
        status[*i] = if ok { BLKIF_RSP_OKAY } else { BLKIF_RSP_ERROR };
        if let (true, Plan::Rw { dir, .. }) = (ok, p) {
            let sect = (p.bytes() / 512) as u64;
            match dir {
                Dir::Read => stats.rd_sect += sect,
                Dir::Write => stats.wr_sect += sect,
            }
        }
    }
}

#[cfg(test)]
mod tests;
