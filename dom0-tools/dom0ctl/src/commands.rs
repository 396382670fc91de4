//! What each subcommand does.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use control_proto::{
    CreateRequest, DomRef, DomState, DomainInfo, Event, Kernel, MAX_DATA, MAX_UPLOAD_BYTES,
    Request, Response, ShutdownReason, crc32,
};

use crate::cli::{Cli, Command, Link, VolumeCommand, XsCommand};
use crate::client::{Client, Incoming};
use crate::config::{self, KernelSource};
use crate::console;
use crate::elf;
use crate::error::Error;
use crate::output;
use crate::paths::default_socket_path;

/// Runs the command `cli` names, printing its results on stdout.
pub fn run(cli: Cli) -> Result<(), Error> {
    let socket = cli.socket.clone().unwrap_or_else(default_socket_path);
    let timeout = Duration::from_secs(cli.timeout);
    let connect = || match cli.link {
        Link::Auto => Client::connect_auto(&socket, timeout),
        Link::Fast => Client::connect(&crate::paths::fast_socket_path(&socket), timeout),
        Link::Com2 => Client::connect(&socket, timeout),
    };
    match cli.command {
        Command::Create {
            config,
            overrides,
            console: attach,
        } => {
            let cfg = config::load(&config, &overrides).map_err(|e| Error::Input(e.to_string()))?;
            let image = match &cfg.kernel {
                KernelSource::File(path) => Some(read_kernel(&config, path)?),
                KernelSource::Image(_) => None,
            };
            let ramdisk = match &cfg.ramdisk {
                Some(path) => Some((
                    read_file(&config, path, "ramdisk", "an initial ramdisk file")?,
                    path,
                )),
                None => None,
            };
            let mut c = connect()?;
            let kernel = match (&cfg.kernel, image) {
                (KernelSource::File(path), Some(bytes)) => {
                    Kernel::Uploaded(upload(&mut c, &bytes, path)?)
                }
                (KernelSource::Image(name), _) => Kernel::Named(name.clone()),
                (KernelSource::File(_), None) => unreachable!("a file kernel was read above"),
            };
            let ramdisk = match ramdisk {
                Some((bytes, path)) => Some(Kernel::Uploaded(upload(&mut c, &bytes, path)?)),
                None => None,
            };
            let req = CreateRequest {
                name: cfg.name.clone(),
                kernel,
                memory_mib: cfg.memory_mib,
                vcpus: cfg.vcpus,
                cmdline: cfg.cmdline,
                on_poweroff: cfg.on_poweroff,
                on_reboot: cfg.on_reboot,
                on_crash: cfg.on_crash,
                uuid: cfg.uuid,
                disks: cfg.disks.clone(),
                vifs: cfg.vifs.clone(),
                ramdisk,
                cpus: cfg.cpus.clone(),
                cpus_soft: cfg.cpus_soft.clone(),
            };
            req.validate()
                .map_err(|e| Error::Input(format!("{}: {}: {e}", config.display(), e.key())))?;
            let req = Request::Create(req);
            let domid = match call(&mut c, &req, format_args!("create {}", cfg.name))? {
                Response::Created { domid } => domid,
                other => return Err(c.unexpected(&req, &other)),
            };
            print(format!("{domid}\n").as_bytes())?;
            if attach {
                console::follow(&mut c, DomRef::Id(domid))?;
            }
            Ok(())
        }
        Command::List { json } => {
            let mut c = connect()?;
            let domains = match call(&mut c, &Request::List, "list")? {
                Response::Domains(d) => d,
                other => return Err(c.unexpected(&Request::List, &other)),
            };
            let text = if json {
                output::domain_json(&domains)
            } else {
                output::domain_table(&domains)
            };
            print(text.as_bytes())
        }
        Command::Pause { dom } => simple(connect()?, Request::Pause(DomRef::parse(&dom)), "pause"),
        Command::Unpause { dom } => {
            simple(connect()?, Request::Unpause(DomRef::parse(&dom)), "unpause")
        }
        Command::Shutdown { dom, force: true } => simple(
            connect()?,
            Request::Shutdown(DomRef::parse(&dom)),
            "shutdown",
        ),
        Command::Shutdown { dom, force: false } => {
            cooperative(connect()?, &dom, ShutdownReason::Poweroff, timeout)
        }
        Command::Reboot { dom } => cooperative(connect()?, &dom, ShutdownReason::Reboot, timeout),
        Command::Xenstore(x) => xenstore(connect, x),
        Command::Destroy { dom } => {
            simple(connect()?, Request::Destroy(DomRef::parse(&dom)), "destroy")
        }
        Command::Console { dom, no_follow } => {
            let mut c = connect()?;
            let dom = DomRef::parse(&dom);
            if no_follow {
                let req = Request::ConsoleRead { dom: dom.clone() };
                match call(&mut c, &req, format_args!("console {dom}"))? {
                    Response::Console { data } => print(&data),
                    other => Err(c.unexpected(&req, &other)),
                }
            } else {
                console::follow(&mut c, dom)
            }
        }
        Command::Info => {
            let mut c = connect()?;
            match call(&mut c, &Request::Info, "info")? {
                Response::Info(info) => print(output::host_info(&info, c.greeting()).as_bytes()),
                other => Err(c.unexpected(&Request::Info, &other)),
            }
        }
        Command::Dmesg => {
            let mut c = connect()?;
            match call(&mut c, &Request::Dmesg, "dmesg")? {
                Response::Dmesg { text } => print(&text),
                other => Err(c.unexpected(&Request::Dmesg, &other)),
            }
        }
        Command::Images => {
            let mut c = connect()?;
            match call(&mut c, &Request::Images, "images")? {
                Response::Images(list) => print(output::image_table(&list).as_bytes()),
                other => Err(c.unexpected(&Request::Images, &other)),
            }
        }
        Command::Devices => {
            let mut c = connect()?;
            match call(&mut c, &Request::Devices, "devices")? {
                Response::Devices(list) => print(output::device_table(&list).as_bytes()),
                other => Err(c.unexpected(&Request::Devices, &other)),
            }
        }
        Command::Volume(v) => volume(connect, v),
        Command::BlockList { dom } => {
            let mut c = connect()?;
            let req = Request::BlockList(DomRef::parse(&dom));
            match call(&mut c, &req, format_args!("block-list {dom}"))? {
                Response::Blocks(rows) => print(output::block_table(&rows).as_bytes()),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        Command::BlockAttach { dom, disk } => simple(
            connect()?,
            Request::BlockAttach {
                dom: DomRef::parse(&dom),
                disk,
            },
            "block-attach",
        ),
        Command::BlockDetach { dom, vdev } => simple(
            connect()?,
            Request::BlockDetach {
                dom: DomRef::parse(&dom),
                vdev,
            },
            "block-detach",
        ),
        Command::NetworkList { dom } => {
            let mut c = connect()?;
            let req = Request::NetworkList(DomRef::parse(&dom));
            match call(&mut c, &req, format_args!("network-list {dom}"))? {
                Response::Networks(rows) => print(output::vif_table(&rows).as_bytes()),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        Command::VcpuList { dom } => {
            let mut c = connect()?;
            let req = Request::VcpuList(DomRef::parse(&dom));
            match call(&mut c, &req, format_args!("vcpu-list {dom}"))? {
                Response::Vcpus {
                    domid,
                    name,
                    nr_cpus,
                    vcpus,
                } => print(output::vcpu_table(domid, &name, nr_cpus, &vcpus).as_bytes()),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        Command::VcpuPin {
            dom,
            vcpu,
            hard,
            soft,
        } => {
            let (hard, soft) = (hard.0, soft.and_then(|s| s.0));
            if hard.is_none() && soft.is_none() {
                return Err(Error::Usage(format!(
                    "vcpu-pin {dom} {vcpu}: HARD is `-` and no SOFT map is given, so there is \
                     nothing to change; give the CPUs of one: `dom0ctl vcpu-pin {dom} {vcpu} 1` \
                     (hard), `dom0ctl vcpu-pin {dom} {vcpu} - 1` (soft)"
                )));
            }
            let mut c = connect()?;
            let req = Request::VcpuPin {
                dom: DomRef::parse(&dom),
                vcpu: vcpu.number(),
                hard,
                soft,
            };
            match call(&mut c, &req, format_args!("vcpu-pin {dom} {vcpu}"))? {
                Response::Ok => Ok(()),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        Command::NetworkAttach { dom, vif } => simple(
            connect()?,
            Request::NetworkAttach {
                dom: DomRef::parse(&dom),
                vif,
            },
            "network-attach",
        ),
        Command::NetworkDetach { dom, vif } => simple(
            connect()?,
            Request::NetworkDetach {
                dom: DomRef::parse(&dom),
                vif,
            },
            "network-detach",
        ),
        Command::ShutdownHost => {
            let mut c = connect()?;
            match call(&mut c, &Request::ShutdownHost, "shutdown-host") {
                // Dom0 may stop the machine before its answer gets out.
                Ok(Response::Ok) | Err(Error::Closed(_)) => Ok(()),
                Ok(other) => Err(c.unexpected(&Request::ShutdownHost, &other)),
                Err(e) => Err(e),
            }
        }
    }
}

/// The row of the domain `dom` names, if it exists.
fn find(c: &mut Client, dom: &DomRef) -> Result<Option<DomainInfo>, Error> {
    let domains = match call(c, &Request::List, "list")? {
        Response::Domains(d) => d,
        other => return Err(c.unexpected(&Request::List, &other)),
    };
    Ok(domains.into_iter().find(|d| match dom {
        DomRef::Id(id) => d.id == *id,
        DomRef::Name(n) => &d.name == n,
    }))
}

/// How long a domain that rebooted may stay shut down before `reboot` takes it as kept
/// by `on_reboot = "preserve"`: dom0 looks at stopped domains at least once a second.
const REBOOT_GRACE: Duration = Duration::from_secs(3);
/// A `list` answer this slow means dom0 was busy (see [`REBOOT_GRACE`]).
const BUSY: Duration = Duration::from_millis(500);

/// `xl shutdown -w` / `xl reboot -w`: ask through XenStore, then wait. A reboot prints
/// the new id, or says on stderr that the domain's `on_reboot` destroyed or kept it.
fn cooperative(
    mut c: Client,
    dom: &str,
    reason: ShutdownReason,
    timeout: Duration,
) -> Result<(), Error> {
    let dom = DomRef::parse(dom);
    let verb = if reason == ShutdownReason::Reboot {
        "reboot"
    } else {
        "shutdown"
    };
    let before = find(&mut c, &dom)?;
    let req = Request::AskShutdown {
        dom: dom.clone(),
        reason,
    };
    match call(&mut c, &req, format_args!("{verb} {dom}"))? {
        Response::Ok => {}
        other => return Err(c.unexpected(&req, &other)),
    }
    let old_id = before.map(|d| d.id);
    let name = match &dom {
        DomRef::Name(n) => Some(n.clone()),
        DomRef::Id(_) => None,
    };
    let start = std::time::Instant::now();
    let mut down_since = None;
    loop {
        let asked = std::time::Instant::now();
        let now = match old_id {
            Some(id) => find(&mut c, &DomRef::Id(id))?,
            None => None,
        };
        let down = match &now {
            None => true,
            Some(d) => matches!(
                d.state,
                DomState::Shutdown | DomState::Crashed | DomState::Dying
            ),
        };
        if reason == ShutdownReason::Poweroff && down {
            return Ok(());
        }
        if reason == ShutdownReason::Reboot && down {
            // Running again under a new id (found by name), or stopped for good.
            let again = match &name {
                Some(n) => find(&mut c, &DomRef::Name(n.clone()))?,
                None => None,
            };
            // A slow answer means dom0 was busy, perhaps building the domain again:
            // the grace below starts over.
            if asked.elapsed() >= BUSY {
                down_since = None;
            }
            match again {
                Some(d) if Some(d.id) != old_id => {
                    print(format!("{}\n", d.id).as_bytes())?;
                    return Ok(());
                }
                _ if name.is_none() => return Ok(()),
                // dom0 restarts a domain in one step (destroy, then build), so gone
                // with nothing new under its name means `on_reboot = "destroy"`.
                None if now.is_none() => {
                    eprintln!("{dom} rebooted and was destroyed (its on_reboot is \"destroy\")");
                    return Ok(());
                }
                // Still there, shut down, well after dom0 would have restarted it
                // (dom0 looks at stopped domains at least once a second, and was
                // idle meanwhile).
                _ if down_since
                    .get_or_insert_with(std::time::Instant::now)
                    .elapsed()
                    >= REBOOT_GRACE =>
                {
                    eprintln!(
                        "{dom} rebooted and is kept shut down (its on_reboot is \"preserve\")"
                    );
                    return Ok(());
                }
                _ => {}
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::Failed(format!(
                "{verb} {dom}: the domain did not {} within {} s: it is unresponsive (it may \
                 not watch control/shutdown). It keeps running; `dom0ctl shutdown --force {dom}` \
                 or `dom0ctl destroy {dom}` stops it.",
                if reason == ShutdownReason::Reboot {
                    "come back"
                } else {
                    "shut down"
                },
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Xen's limits, checked before anything is sent.
fn check_xs(path: &str, value: Option<&[u8]>) -> Result<(), Error> {
    const PATH_MAX: usize = 3072;
    const VALUE_MAX: usize = 4096;
    if path.len() > PATH_MAX {
        return Err(Error::Input(format!(
            "xenstore: the path is {} bytes; XenStore takes at most {PATH_MAX} (an absolute path)",
            path.len()
        )));
    }
    if let Some(v) = value
        && v.len() > VALUE_MAX
    {
        return Err(Error::Input(format!(
            "xenstore: the value is {} bytes; XenStore takes at most {VALUE_MAX}",
            v.len()
        )));
    }
    Ok(())
}

/// `dom0ctl xenstore ...`.
fn xenstore(connect: impl Fn() -> Result<Client, Error>, x: XsCommand) -> Result<(), Error> {
    use crate::output::json_str;
    let ok = |json: bool| {
        if json {
            print(b"{\"ok\": true}\n")
        } else {
            Ok(())
        }
    };
    match x {
        XsCommand::Read { path, json } => {
            check_xs(&path, None)?;
            let mut c = connect()?;
            let req = Request::XsRead { path: path.clone() };
            match call(&mut c, &req, format_args!("xenstore read {path}"))? {
                Response::XsValue { value } => {
                    let v = String::from_utf8_lossy(&value);
                    if json {
                        print(
                            format!(
                                "{{\"path\": {}, \"value\": {}}}\n",
                                json_str(&path),
                                json_str(&v)
                            )
                            .as_bytes(),
                        )
                    } else {
                        print(format!("{v}\n").as_bytes())
                    }
                }
                other => Err(c.unexpected(&req, &other)),
            }
        }
        XsCommand::Write { path, value, json } => {
            check_xs(&path, Some(value.as_bytes()))?;
            let mut c = connect()?;
            let req = Request::XsWrite {
                path: path.clone(),
                value: value.into_bytes(),
            };
            match call(&mut c, &req, format_args!("xenstore write {path}"))? {
                Response::Ok => ok(json),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        XsCommand::Rm { path, json } => {
            check_xs(&path, None)?;
            let mut c = connect()?;
            let req = Request::XsRm { path: path.clone() };
            match call(&mut c, &req, format_args!("xenstore rm {path}"))? {
                Response::Ok => ok(json),
                other => Err(c.unexpected(&req, &other)),
            }
        }
        XsCommand::Ls { path, perms, json } => {
            check_xs(&path, None)?;
            let mut c = connect()?;
            let req = Request::XsList { path: path.clone() };
            let (nodes, truncated) = match call(&mut c, &req, format_args!("xenstore ls {path}"))? {
                Response::XsNodes { nodes, truncated } => (nodes, truncated),
                other => return Err(c.unexpected(&req, &other)),
            };
            let mut out = String::new();
            if json {
                out.push('[');
                for (i, n) in nodes.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&format!(
                        "  {{\"path\": {}, \"value\": {}, \"perms\": {}}}",
                        json_str(&n.path),
                        json_str(&String::from_utf8_lossy(&n.value)),
                        json_str(&n.perms)
                    ));
                }
                out.push_str(if nodes.is_empty() { "]\n" } else { "\n]\n" });
            } else {
                for n in &nodes {
                    out.push_str(&format!(
                        "{} = {}",
                        n.path,
                        json_str(&String::from_utf8_lossy(&n.value))
                    ));
                    if perms {
                        out.push_str(&format!("  ({})", n.perms));
                    }
                    out.push('\n');
                }
            }
            print(out.as_bytes())?;
            if truncated {
                eprintln!(
                    "dom0ctl: xenstore ls {path}: more nodes than one reply holds; list a subtree"
                );
            }
            Ok(())
        }
        XsCommand::Watch { path, json } => {
            check_xs(&path, None)?;
            let mut c = connect()?;
            let req = Request::XsWatch { path: path.clone() };
            match call(&mut c, &req, format_args!("xenstore watch {path}"))? {
                Response::Ok => {}
                other => return Err(c.unexpected(&req, &other)),
            }
            loop {
                while let Some(m) = c.next_incoming()? {
                    if let Incoming::Event(Event::XsWatchEvent { path, token }) = m {
                        let line = if json {
                            format!(
                                "{{\"path\": {}, \"token\": {}}}\n",
                                json_str(&path),
                                json_str(&token)
                            )
                        } else {
                            format!("{path}\n")
                        };
                        print(line.as_bytes())?;
                    }
                }
                c.fill(Duration::from_millis(500))?;
            }
        }
    }
}

/// `dom0ctl volume ...`.
fn volume(connect: impl Fn() -> Result<Client, Error>, v: VolumeCommand) -> Result<(), Error> {
    match v {
        VolumeCommand::Create {
            name,
            size,
            on,
            force,
            json,
        } => {
            let mut c = connect()?;
            let req = Request::VolumeCreate {
                name: name.clone(),
                size,
                disk: on,
                force,
            };
            match call(&mut c, &req, format_args!("volume create {name}"))? {
                Response::Volumes { volumes, .. } if volumes.len() == 1 => {
                    print(output::volume_created(&volumes[0], json).as_bytes())
                }
                other => Err(c.unexpected(&req, &other)),
            }
        }
        VolumeCommand::List { json } => {
            let mut c = connect()?;
            let req = Request::VolumeList;
            match call(&mut c, &req, "volume list")? {
                Response::Volumes { volumes, disks } => {
                    let text = if json {
                        output::volume_json(&volumes, &disks)
                    } else {
                        output::volume_table(&volumes, &disks)
                    };
                    print(text.as_bytes())
                }
                other => Err(c.unexpected(&req, &other)),
            }
        }
        VolumeCommand::Rm { name, on } => {
            let mut c = connect()?;
            let req = Request::VolumeRm {
                name: name.clone(),
                disk: on,
            };
            match call(&mut c, &req, format_args!("volume rm {name}"))? {
                Response::Ok => Ok(()),
                other => Err(c.unexpected(&req, &other)),
            }
        }
    }
}

/// Sends `req`, naming `what` in a dom0 error.
fn call(c: &mut Client, req: &Request, what: impl std::fmt::Display) -> Result<Response, Error> {
    c.call(req).map_err(|e| e.context(what))
}

/// A request whose only answer is `Ok`.
fn simple(mut c: Client, req: Request, verb: &str) -> Result<(), Error> {
    let what = match &req {
        Request::Pause(d) | Request::Unpause(d) | Request::Shutdown(d) | Request::Destroy(d) => {
            format!("{verb} {d}")
        }
        _ => verb.to_string(),
    };
    match call(&mut c, &req, what)? {
        Response::Ok => Ok(()),
        other => Err(c.unexpected(&req, &other)),
    }
}

fn print(bytes: &[u8]) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    // A closed stdout (`dom0ctl list | head -0`) is not dom0's failure; stop quietly.
    let _ = out.write_all(bytes).and_then(|()| out.flush());
    Ok(())
}

/// Reads the kernel named by `config` and checks it looks like a PV kernel.
///
/// Only a regular file of at most [`MAX_UPLOAD_BYTES`] (dom0's upload limit) is read:
/// `/dev/zero`, a FIFO or a directory is refused before anything is read (opening a
/// FIFO would block), and the read itself stops one byte past the limit, so a file
/// that grows after the check cannot make dom0ctl allocate without bound.
fn read_kernel(config: &Path, path: &Path) -> Result<Vec<u8>, Error> {
    let bytes = read_file(config, path, "kernel", "a kernel image file")?;
    elf::check_kernel(&bytes).map_err(|what| {
        Error::Input(format!(
            "{}: kernel {}: the file {what}",
            config.display(),
            path.display()
        ))
    })?;
    Ok(bytes)
}

/// Reads the file a config's `key` names (a kernel, a ramdisk), with the checks of
/// [`read_kernel`] but the ELF's.
fn read_file(config: &Path, path: &Path, key: &str, kind: &str) -> Result<Vec<u8>, Error> {
    let bad = |what: String| {
        Error::Input(format!(
            "{}: {key} {}: {what}",
            config.display(),
            path.display()
        ))
    };
    let cannot_read = |e: std::io::Error| {
        bad(format!(
            "cannot read it ({e}); paths in a config are relative to the config's directory"
        ))
    };
    let check = |meta: &std::fs::Metadata| {
        if !meta.is_file() {
            return Err(bad(format!(
                "not a regular file (it is {}); name {kind}",
                file_kind(meta)
            )));
        }
        if meta.len() > MAX_UPLOAD_BYTES {
            return Err(bad(format!(
                "{} bytes is over dom0's upload limit of {MAX_UPLOAD_BYTES} bytes ({} MiB)",
                meta.len(),
                MAX_UPLOAD_BYTES >> 20
            )));
        }
        Ok(())
    };
    check(&std::fs::metadata(path).map_err(cannot_read)?)?;
    let file = std::fs::File::open(path).map_err(cannot_read)?;
    let meta = file.metadata().map_err(cannot_read)?;
    check(&meta)?;
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_UPLOAD_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot_read)?;
    if bytes.len() as u64 > MAX_UPLOAD_BYTES {
        return Err(bad(format!(
            "it grew past dom0's upload limit of {MAX_UPLOAD_BYTES} bytes while being read"
        )));
    }
    Ok(bytes)
}

/// What kind of file `meta` describes, for an error message.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    }
}

/// Uploads `data` in chunks and returns the upload id once dom0 has checked it.
fn upload(c: &mut Client, data: &[u8], path: &Path) -> Result<u32, Error> {
    let what = format!("upload {}", path.display());
    let begin = Request::UploadBegin {
        size: data.len() as u64,
        crc32: crc32(data),
    };
    let (upload, chunk_max) = match call(c, &begin, &what)? {
        Response::UploadReady { upload, chunk_max } => (upload, chunk_max),
        other => return Err(c.unexpected(&begin, &other)),
    };
    let chunk = usize::try_from(chunk_max).unwrap_or(MAX_DATA).min(MAX_DATA);
    if chunk == 0 {
        return Err(Error::Link(
            "dom0 offered an upload with 0-byte chunks; its control agent is broken".to_string(),
        ));
    }
    let mut offset = 0u64;
    let mut progress = Progress::new(&what, data.len() as u64);
    for piece in data.chunks(chunk) {
        progress.show(offset);
        let req = Request::UploadChunk {
            upload,
            offset,
            data: piece.to_vec(),
        };
        offset += piece.len() as u64;
        match call(c, &req, &what)? {
            Response::UploadAck {
                upload: u,
                received,
            } if u == upload && received == offset => {}
            Response::UploadAck { received, .. } => {
                return Err(Error::Link(format!(
                    "{what}: dom0 acknowledged {received} bytes where {offset} were sent; \
                     the link is losing data"
                )));
            }
            other => return Err(c.unexpected(&req, &other)),
        }
    }
    progress.done(offset);
    let end = Request::UploadEnd { upload };
    match call(c, &end, &what)? {
        Response::Uploaded { upload: u } if u == upload => Ok(upload),
        other => Err(c.unexpected(&end, &other)),
    }
}

/// A progress line on stderr for uploads that take over a second, when stderr
/// is a terminal.
struct Progress<'a> {
    what: &'a str,
    total: u64,
    start: std::time::Instant,
    shown: bool,
    tty: bool,
}

impl<'a> Progress<'a> {
    fn new(what: &'a str, total: u64) -> Self {
        use std::io::IsTerminal;
        Progress {
            what,
            total,
            start: std::time::Instant::now(),
            shown: false,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, sent: u64) {
        let secs = self.start.elapsed().as_secs_f64();
        if !self.tty || secs < 1.0 {
            return;
        }
        self.shown = true;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        eprint!(
            "\r{}: {:.1} of {:.1} MiB ({:.0}%), {:.1} MiB/s ",
            self.what,
            mib(sent),
            mib(self.total),
            100.0 * sent as f64 / self.total.max(1) as f64,
            mib(sent) / secs
        );
    }

    fn done(&mut self, sent: u64) {
        if self.shown {
            self.show(sent);
            eprintln!();
        }
    }
}
