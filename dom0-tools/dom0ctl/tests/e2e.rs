//! End-to-end: the real `dom0ctl` binary against a fake control agent built on
//! `control_proto`, listening on a unix socket in a temporary directory.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use control_proto::{
    CreateRequest, DomRef, DomState, DomainInfo, ErrorCode, Event, ExitAction, FrameDecoder,
    HostInfo, ImageInfo, Kernel, PROTOCOL_VERSION, Request, Response, crc32,
};

/// How the fake agent misbehaves, if at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Answers everything (with line noise before each answer).
    Normal,
    /// Accepts the connection and never answers.
    Silent,
    /// Answers `Hello` with another protocol version.
    FutureVersion,
    /// Sends the header of a frame that never finishes before each answer, as
    /// a dead session leaves behind; its length swallows the answer.
    StaleHeader,
}

struct Dom {
    id: u16,
    name: String,
    state: DomState,
    memory_mib: u32,
    log: Vec<u8>,
}

struct Upload {
    size: u64,
    crc: u32,
    data: Vec<u8>,
    chunks: Vec<usize>,
    done: bool,
}

#[derive(Default)]
struct State {
    domains: Vec<Dom>,
    uploads: Vec<Upload>,
    requests: Vec<Request>,
    created: Vec<(CreateRequest, Option<Vec<u8>>)>,
    input: Vec<u8>,
    volumes: Vec<control_proto::VolumeInfo>,
}

const CHUNK_MAX: u32 = 1000;

struct Agent {
    socket: PathBuf,
    state: Arc<Mutex<State>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    fn start(mode: Mode) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("dom0.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State {
            domains: vec![Dom {
                id: 0,
                name: "Domain-0".into(),
                state: DomState::Running,
                memory_mib: 64,
                log: Vec::new(),
            }],
            ..State::default()
        }));
        let st = state.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                serve(conn, &st, mode);
            }
        });
        Agent {
            socket,
            state,
            _dir: dir,
        }
    }

    fn add_domain(&self, name: &str, log: &[u8]) -> u16 {
        let mut st = self.state.lock().unwrap();
        let id = st.domains.iter().map(|d| d.id).max().unwrap_or(0) + 1;
        st.domains.push(Dom {
            id,
            name: name.into(),
            state: DomState::Blocked,
            memory_mib: 16,
            log: log.to_vec(),
        });
        id
    }

    fn run(&self, args: &[&str]) -> Output {
        dom0ctl(
            &["--socket", self.socket.to_str().unwrap()],
            args,
            None,
            None,
        )
    }
}

fn dom0ctl(pre: &[&str], args: &[&str], stdin: Option<&[u8]>, cwd: Option<&Path>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dom0ctl"));
    cmd.args(pre)
        .args(args)
        .env_remove("DOM0CTL_SOCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(bytes) = stdin {
        pipe.write_all(bytes).unwrap();
    }
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Line noise, and a damaged frame, as a real serial link may deliver.
fn noise(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\0\x01 boot noise\r\n");
    let mut decoy = Vec::new();
    Response::Ok.write_frame(0xFFFF_FFF0, &mut decoy).unwrap();
    let last = decoy.len() - 1;
    decoy[last] ^= 1;
    out.extend_from_slice(&decoy);
}

fn serve(mut conn: UnixStream, st: &Mutex<State>, mode: Mode) {
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        assert_eq!(dec.push(&buf[..n]), n);
        while let Some(frame) = dec.next_frame() {
            let frame = frame.expect("dom0ctl sends sound frames");
            let req = Request::from_frame(&frame).expect("dom0ctl sends known requests");
            st.lock().unwrap().requests.push(req.clone());
            if mode == Mode::Silent {
                continue;
            }
            if req == Request::ShutdownHost {
                return; // The machine stops before the answer gets out.
            }
            let mut out = Vec::new();
            noise(&mut out);
            if mode == Mode::StaleHeader {
                out.extend_from_slice(b"XC\x01\x45\x09\x00\x00\x00\x00\x80\x00\x00");
            }
            let resp = answer(&req, &mut st.lock().unwrap(), mode);
            if matches!(req, Request::ConsoleAttach { .. }) {
                // Output that arrives while the attach is answered: dom0ctl must
                // keep it and print it after the log.
                Event::ConsoleOutput {
                    domid: 1,
                    data: b"live output\n".to_vec(),
                }
                .write_frame(&mut out)
                .unwrap();
            }
            resp.write_frame(frame.id, &mut out).unwrap();
            if conn.write_all(&out).is_err() {
                return;
            }
        }
    }
}

fn find<'a>(st: &'a mut State, d: &DomRef) -> Result<&'a mut Dom, Response> {
    st.domains
        .iter_mut()
        .find(|x| match d {
            DomRef::Id(id) => x.id == *id,
            DomRef::Name(n) => x.name == *n,
        })
        .ok_or_else(|| Response::error(ErrorCode::UnknownDomain, format!("no such domain: {d}")))
}

fn answer(req: &Request, st: &mut State, mode: Mode) -> Response {
    let mut r = || -> Result<Response, Response> {
        Ok(match req {
            Request::Hello { client_version } => {
                assert_eq!(*client_version, u32::from(PROTOCOL_VERSION));
                Response::HelloOk {
                    protocol: if mode == Mode::FutureVersion {
                        PROTOCOL_VERSION + 1
                    } else {
                        PROTOCOL_VERSION
                    },
                    agent: "fake-agent 0.0".into(),
                    hypervisor: "xen-like-hv (test)".into(),
                }
            }
            Request::Info => Response::Info(HostInfo {
                xen_major: 4,
                xen_minor: 17,
                xen_extra: ".0-xlhv".into(),
                total_kib: 256 * 1024,
                free_kib: 128 * 1024,
                free_frames: 32 * 1024,
                nr_cpus: 1,
                cpu_khz: 2_000_000,
                domains: u32::try_from(st.domains.len()).unwrap(),
                dom0_free_frames: 2048,
                bridges: Vec::new(),
            }),
            Request::List => Response::Domains(
                st.domains
                    .iter()
                    .map(|d| DomainInfo {
                        id: d.id,
                        name: d.name.clone(),
                        state: d.state,
                        shutdown_reason: None,
                        memory_kib: u64::from(d.memory_mib) * 1024,
                        max_memory_kib: u64::from(d.memory_mib) * 1024,
                        vcpus: 1,
                        cpu_time_ns: 2_500_000_000,
                        uptime_ns: 10,
                    })
                    .collect(),
            ),
            Request::BlockList(_) => Response::Blocks(vec![control_proto::BlockRow {
                devid: 51712,
                vdev: "xvda".into(),
                target: "web".into(),
                mode: "w".into(),
                be_state: 4,
                fe_state: 4,
                evtchn: 5,
                ring_ref: 8,
                be_path: "/local/domain/0/backend/vbd/1/51712".into(),
                requests: [10, 20, 1, 0],
                sectors: [80, 160],
                errors: 0,
            }]),
            Request::BlockAttach { .. } | Request::BlockDetach { .. } => Response::Ok,
            Request::NetworkList(_) => Response::Networks(vec![control_proto::VifRow {
                devid: 0,
                mac: "00:16:3e:00:00:01".into(),
                bridge: "xenbr0".into(),
                be_state: 4,
                fe_state: 4,
                evtchn: 5,
                tx_ring_ref: 8,
                rx_ring_ref: 9,
                be_path: "/local/domain/0/backend/vif/1/0".into(),
                counters: [10, 1000, 1, 20, 2000, 2],
            }]),
            Request::NetworkAttach { .. } | Request::NetworkDetach { .. } => Response::Ok,
            Request::VcpuList(d) => {
                let dom = find(st, d)?;
                let (domid, name) = (dom.id, dom.name.clone());
                let one = control_proto::cpus::CpuMap::parse("1").unwrap();
                let all = control_proto::cpus::CpuMap::first(64);
                Response::Vcpus {
                    domid,
                    name,
                    nr_cpus: 2,
                    vcpus: vec![
                        control_proto::VcpuRow {
                            vcpu: 0,
                            state: control_proto::VcpuState {
                                online: true,
                                blocked: false,
                                running: true,
                                cpu: 1,
                                time_ns: 2_500_000_000,
                            },
                            hard: one,
                            soft: all,
                        },
                        control_proto::VcpuRow {
                            vcpu: 1,
                            state: control_proto::VcpuState {
                                online: true,
                                blocked: true,
                                running: false,
                                cpu: 1,
                                time_ns: 0,
                            },
                            hard: all,
                            soft: all,
                        },
                    ],
                }
            }
            Request::VcpuPin {
                dom, vcpu, hard, ..
            } => {
                // Every domain has two vCPUs on a machine of two CPUs.
                let name = find(st, dom)?.name.clone();
                if let Some(n) = vcpu.filter(|&n| n > 1) {
                    return Err(Response::error(
                        ErrorCode::BadRequest,
                        format!("domain {name} has no vCPU {n}: it has 2 vCPUs (0 to 1)"),
                    ));
                }
                let machine = control_proto::cpus::CpuMap::first(2);
                if let Some(m) = hard.filter(|m| m.intersection(&machine).is_empty()) {
                    return Err(Response::error(
                        ErrorCode::BadRequest,
                        format!(
                            "vCPU {}'s CPUs ({m}) include none that runs guests (this machine \
                             has 2: 0-1); nothing was changed",
                            vcpu.unwrap_or(0)
                        ),
                    ));
                }
                Response::Ok
            }
            Request::Devices => Response::Devices(vec![control_proto::DeviceRow {
                bdf: "00:04.0".into(),
                vendor: 0x1af4,
                device: 0x1001,
                class: 0x010000,
                driver: "virtio-blk: disk data (4 MiB)".into(),
                detail: "storage class 010000".into(),
            }]),
            Request::Images => Response::Images(vec![
                ImageInfo {
                    name: "hello".into(),
                    size: 12_288,
                },
                ImageInfo {
                    name: "ticker".into(),
                    size: 16_384,
                },
            ]),
            Request::Create(c) => {
                c.validate().map_err(|e| Response::Error(e.into()))?;
                if st.domains.iter().any(|d| d.name == c.name) {
                    return Err(Response::error(ErrorCode::NameInUse, "name in use"));
                }
                let kernel = match &c.kernel {
                    Kernel::Named(n) if n == "hello" || n == "ticker" => None,
                    Kernel::Named(n) => {
                        return Err(Response::error(
                            ErrorCode::UnknownImage,
                            format!("no image {n:?}"),
                        ));
                    }
                    Kernel::Uploaded(u) => {
                        let up = usize::try_from(*u)
                            .ok()
                            .and_then(|u| st.uploads.get(u))
                            .filter(|u| u.done)
                            .ok_or_else(|| Response::error(ErrorCode::UploadState, "no upload"))?;
                        Some(up.data.clone())
                    }
                };
                st.created.push((c.clone(), kernel));
                let id = st.domains.iter().map(|d| d.id).max().unwrap_or(0) + 1;
                st.domains.push(Dom {
                    id,
                    name: c.name.clone(),
                    state: DomState::Running,
                    memory_mib: c.memory_mib,
                    log: b"booted\n".to_vec(),
                });
                Response::Created { domid: id }
            }
            Request::Pause(d) => {
                find(st, d)?.state = DomState::Paused;
                Response::Ok
            }
            Request::Unpause(d) => {
                find(st, d)?.state = DomState::Running;
                Response::Ok
            }
            Request::Shutdown(d) => {
                find(st, d)?.state = DomState::Shutdown;
                Response::Ok
            }
            Request::Destroy(d) => {
                let id = find(st, d)?.id;
                st.domains.retain(|x| x.id != id);
                Response::Ok
            }
            Request::ConsoleRead { dom } | Request::ConsoleAttach { dom } => Response::Console {
                data: find(st, dom)?.log.clone(),
            },
            Request::ConsoleInput { dom, data } => {
                find(st, dom)?;
                st.input.extend_from_slice(data);
                Response::Ok
            }
            Request::ConsoleDetach => Response::Ok,
            Request::UploadBegin { size, crc32 } => {
                st.uploads.push(Upload {
                    size: *size,
                    crc: *crc32,
                    data: Vec::new(),
                    chunks: Vec::new(),
                    done: false,
                });
                Response::UploadReady {
                    upload: u32::try_from(st.uploads.len() - 1).unwrap(),
                    chunk_max: CHUNK_MAX,
                }
            }
            Request::UploadChunk {
                upload,
                offset,
                data,
            } => {
                let up = &mut st.uploads[usize::try_from(*upload).unwrap()];
                if *offset != up.data.len() as u64 || data.len() > CHUNK_MAX as usize {
                    return Err(Response::error(ErrorCode::UploadState, "out of order"));
                }
                up.data.extend_from_slice(data);
                up.chunks.push(data.len());
                Response::UploadAck {
                    upload: *upload,
                    received: up.data.len() as u64,
                }
            }
            Request::UploadEnd { upload } => {
                let up = &mut st.uploads[usize::try_from(*upload).unwrap()];
                if up.data.len() as u64 != up.size || crc32(&up.data) != up.crc {
                    return Err(Response::error(ErrorCode::ChecksumMismatch, "crc"));
                }
                up.done = true;
                Response::Uploaded { upload: *upload }
            }
            Request::Dmesg => Response::Dmesg {
                text: b"(XEN) hello from the log ring\n".to_vec(),
            },
            Request::ShutdownHost => Response::Ok,
            Request::AskShutdown { .. }
            | Request::XsWrite { .. }
            | Request::XsRm { .. }
            | Request::XsWatch { .. }
            | Request::XsUnwatch => Response::Ok,
            Request::XsRead { .. } => Response::XsValue {
                value: b"v".to_vec(),
            },
            Request::XsList { .. } => Response::XsNodes {
                nodes: Vec::new(),
                truncated: false,
            },
            Request::VolumeCreate {
                name,
                size,
                disk,
                force: _,
            } => {
                if disk.as_deref().is_some_and(|d| d != "data") {
                    return Err(Response::error(
                        ErrorCode::UnknownDisk,
                        "dom0 has no disk named nope",
                    ));
                }
                if st.volumes.iter().any(|v| &v.name == name) {
                    return Err(Response::error(
                        ErrorCode::VolumeExists,
                        format!("a volume named {name} exists already (on disk data)"),
                    ));
                }
                let start = st.volumes.last().map_or(2048, |v| v.start + 16384);
                if *size > 8 << 20 {
                    return Err(Response::error(
                        ErrorCode::NoSpace,
                        "no room for 1G on disk data: its largest free extent is 8M",
                    ));
                }
                let v = control_proto::VolumeInfo {
                    name: name.clone(),
                    disk: "data".into(),
                    start,
                    sectors: size / 512,
                    users: if name == "busy" { vec![2] } else { vec![] },
                };
                st.volumes.push(v.clone());
                Response::Volumes {
                    volumes: vec![v],
                    disks: vec![],
                }
            }
            Request::VolumeList => Response::Volumes {
                volumes: st.volumes.clone(),
                disks: vec![control_proto::VolumeDisk {
                    name: "data".into(),
                    sectors: 64 * 2048,
                    readonly: false,
                    table: control_proto::TableState::Volumes,
                    free_sectors: 8 * 2048,
                }],
            },
            Request::VolumeRm { name, disk: _ } => {
                let Some(i) = st.volumes.iter().position(|v| &v.name == name) else {
                    return Err(Response::error(
                        ErrorCode::UnknownVolume,
                        format!("no volume named {name}"),
                    ));
                };
                if !st.volumes[i].users.is_empty() {
                    return Err(Response::error(
                        ErrorCode::VolumeInUse,
                        format!("volume {name} is in use by domain 2"),
                    ));
                }
                st.volumes.remove(i);
                Response::Ok
            }
        })
    };
    r().unwrap_or_else(|e| e)
}

/// A 64-byte ELF64 x86-64 executable header, then `extra` bytes of pattern.
fn fake_kernel(extra: usize) -> Vec<u8> {
    let mut k = vec![0u8; 64];
    k[..4].copy_from_slice(b"\x7fELF");
    k[4] = 2;
    k[5] = 1;
    k[6] = 1;
    k[16] = 2;
    k[18] = 62;
    k.extend((0..extra).map(|i| u8::try_from(i * 7 % 251).unwrap()));
    k
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

#[test]
fn create_uploads_the_kernel_in_chunks_then_creates() {
    let agent = Agent::start(Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("build")).unwrap();
    let kernel = fake_kernel(4500);
    std::fs::write(dir.path().join("build/k.elf"), &kernel).unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        "name = \"up\"\nkernel = \"build/k.elf\"\nmemory = 8\ncmdline = \"x=1\"\non_crash = \"preserve\"\n",
    )
    .unwrap();
    // From another directory: the kernel path is relative to the config.
    let out = dom0ctl(
        &["--socket", agent.socket.to_str().unwrap()],
        &["create", cfg.to_str().unwrap()],
        None,
        Some(Path::new("/")),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n");

    let st = agent.state.lock().unwrap();
    let up = &st.uploads[0];
    assert_eq!(up.data, kernel, "bytes arrive intact");
    assert_eq!(up.crc, crc32(&kernel));
    assert_eq!(up.chunks.len(), kernel.len().div_ceil(CHUNK_MAX as usize));
    assert!(up.chunks.iter().all(|&c| c <= CHUNK_MAX as usize));
    let (req, data) = &st.created[0];
    assert_eq!(
        *req,
        CreateRequest {
            name: "up".into(),
            kernel: Kernel::Uploaded(0),
            memory_mib: 8,
            vcpus: 1,
            cmdline: "x=1".into(),
            on_poweroff: ExitAction::Destroy,
            on_crash: ExitAction::Preserve,
            on_reboot: ExitAction::Restart,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: Vec::new(),
            cpus_soft: Vec::new(),
        }
    );
    assert_eq!(data.as_deref(), Some(&kernel[..]));
}

#[test]
fn create_sends_cpus_and_vcpu_list_shows_them() {
    let agent = Agent::start(Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pinned.toml");
    std::fs::write(
        &cfg,
        "name = \"pinned\"\nimage = \"hello\"\nvcpus = 2\ncpus = [\"1\", \"0-1,^0\", \"0\"]\n",
    )
    .unwrap();
    let out = agent.run(&["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = agent.run(&["create", cfg.to_str().unwrap(), "name=p2", "cpus=all,^0"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    {
        let st = agent.state.lock().unwrap();
        let maps = |i: usize| -> Vec<String> {
            st.created[i]
                .0
                .cpus
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        assert_eq!(maps(0), ["1", "1"], "the third entry is past vcpus = 2");
        assert_eq!(maps(1), ["1-255", "1-255"]);
    }
    let out = agent.run(&["vcpu-list", "pinned"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let t = text(&out.stdout);
    let rows: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        [
            vec![
                "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity", "(Hard", "/", "Soft)"
            ],
            vec!["pinned", "1", "0", "1", "r--", "2.5", "1", "/", "all"],
            vec!["pinned", "1", "1", "1", "-b-", "0.0", "all", "/", "all"],
        ],
        "{t}"
    );
    // A bad map is bad local input (exit 3), found before dom0 is asked.
    let before = agent.state.lock().unwrap().requests.len();
    let out = agent.run(&["create", cfg.to_str().unwrap(), "cpus=3-1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cpus: \"3-1\" is a reversed range"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);
}

#[test]
fn create_sends_cpus_soft_apart_from_cpus() {
    let agent = Agent::start(Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("soft.toml");
    std::fs::write(
        &cfg,
        "name = \"soft\"\nimage = \"hello\"\nvcpus = 2\ncpus_soft = [\"1\", \"0\", \"1\"]\n",
    )
    .unwrap();
    let out = agent.run(&["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = agent.run(&[
        "create",
        cfg.to_str().unwrap(),
        "name=s2",
        "cpus=0-1",
        "cpus_soft=all,^0",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    {
        let st = agent.state.lock().unwrap();
        let maps = |m: &[control_proto::cpus::CpuMap]| -> Vec<String> {
            m.iter().map(ToString::to_string).collect()
        };
        let (soft, both) = (&st.created[0].0, &st.created[1].0);
        assert_eq!(
            maps(&soft.cpus_soft),
            ["1", "0"],
            "the third entry is past vcpus = 2"
        );
        assert!(soft.cpus.is_empty(), "no hard maps");
        assert_eq!(maps(&both.cpus), ["0-1", "0-1"]);
        assert_eq!(maps(&both.cpus_soft), ["1-255", "1-255"]);
    }
    // A bad map is bad local input (exit 3), named by its key, before dom0 is asked.
    let before = agent.state.lock().unwrap().requests.len();
    let out = agent.run(&["create", cfg.to_str().unwrap(), "cpus_soft=3-1"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("cpus_soft: \"3-1\" is a reversed range"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);
}

#[test]
fn vcpu_pin_sends_the_maps_and_reports_refusals() {
    use control_proto::cpus::CpuMap;
    let agent = Agent::start(Mode::Normal);
    let id = agent.add_domain("pinned", b"");
    let last = |agent: &Agent| agent.state.lock().unwrap().requests.last().cloned();
    let map = |s: &str| Some(CpuMap::parse(s).unwrap());
    for (args, vcpu, hard, soft) in [
        (&["pinned", "0", "1"][..], Some(0), map("1"), None),
        (&["1", "all", "-", "0"], None, None, map("0")),
        (&["pinned", "1", "all,^0", "-"], Some(1), map("1-255"), None),
        (&["pinned", "all", "0-1", "1"], None, map("0-1"), map("1")),
    ] {
        let out = agent.run(&[&["vcpu-pin"][..], args].concat());
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(text(&out.stdout), "", "silent, as xl");
        let dom = if args[0] == "1" {
            DomRef::Id(id)
        } else {
            DomRef::Name("pinned".into())
        };
        assert_eq!(
            last(&agent),
            Some(Request::VcpuPin {
                dom,
                vcpu,
                hard,
                soft
            }),
            "{args:?}"
        );
    }

    // Usage errors (exit 2) before anything is sent: nothing to change, a bad
    // vCPU, a CPU list the parser refuses (its message).
    let before = agent.state.lock().unwrap().requests.len();
    for (args, needle) in [
        (&["pinned", "0", "-"][..], "nothing to change"),
        (&["pinned", "all", "-", "-"], "nothing to change"),
        (&["pinned", "x", "1"], "\"x\" is not a vCPU number"),
        (&["pinned", "0", "3-1"], "\"3-1\" is a reversed range"),
        (
            &["pinned", "0", "1", "node:0"],
            "NUMA nodes are not supported",
        ),
    ] {
        let out = agent.run(&[&["vcpu-pin"][..], args].concat());
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);

    // dom0's refusals: exit 1 with its message after the command's.
    for (args, needle) in [
        (
            &["pinned", "5", "1"][..],
            "dom0ctl: vcpu-pin pinned 5: domain pinned has no vCPU 5: it has 2 vCPUs",
        ),
        (
            &["pinned", "all", "7"],
            "dom0ctl: vcpu-pin pinned all: vCPU 0's CPUs (7) include none that runs guests \
             (this machine has 2: 0-1); nothing was changed",
        ),
        (
            &["nope", "0", "1"],
            "dom0ctl: vcpu-pin nope 0: no such domain: nope. List domains with `dom0ctl list`.",
        ),
    ] {
        let out = agent.run(&[&["vcpu-pin"][..], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

#[test]
fn create_uploads_the_ramdisk_after_the_kernel() {
    let agent = Agent::start(Mode::Normal);
    let dir = tempfile::tempdir().unwrap();
    let kernel = fake_kernel(300);
    let ramdisk: Vec<u8> = (0..7000u32).map(|i| (i % 241) as u8).collect();
    std::fs::write(dir.path().join("k.elf"), &kernel).unwrap();
    std::fs::write(dir.path().join("initrd.cpio"), &ramdisk).unwrap();
    let cfg = dir.path().join("t.toml");
    std::fs::write(
        &cfg,
        "name = \"rd\"\nkernel = \"k.elf\"\nramdisk = \"initrd.cpio\"\n",
    )
    .unwrap();
    let out = dom0ctl(
        &["--socket", agent.socket.to_str().unwrap()],
        &["create", cfg.to_str().unwrap()],
        None,
        Some(Path::new("/")),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let st = agent.state.lock().unwrap();
    assert_eq!(st.uploads.len(), 2);
    assert_eq!(st.uploads[0].data, kernel);
    assert_eq!(st.uploads[1].data, ramdisk, "the ramdisk arrives intact");
    let (req, _) = &st.created[0];
    assert_eq!(req.kernel, Kernel::Uploaded(0));
    assert_eq!(req.ramdisk, Some(Kernel::Uploaded(1)));
    drop(st);

    // A ramdisk that is not there: exit 3, nothing sent.
    let nowhere = dir.path().join("none.sock");
    std::fs::write(
        &cfg,
        "name = \"rd\"\nkernel = \"k.elf\"\nramdisk = \"gone.cpio\"\n",
    )
    .unwrap();
    let out = dom0ctl(
        &["--socket", nowhere.to_str().unwrap()],
        &["create", cfg.to_str().unwrap()],
        None,
        None,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("ramdisk") && err.contains("gone.cpio: cannot read it"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("d")).unwrap();
    std::fs::write(&cfg, "name = \"rd\"\nkernel = \"k.elf\"\nramdisk = \"d\"\n").unwrap();
    let out = dom0ctl(
        &["--socket", nowhere.to_str().unwrap()],
        &["create", cfg.to_str().unwrap()],
        None,
        None,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("not a regular file (it is a directory); name an initial ramdisk"),
        "{err}"
    );
}

#[test]
fn create_from_the_examples_with_overrides() {
    let agent = Agent::start(Mode::Normal);
    let hello = examples().join("hello.toml");
    let out = agent.run(&["create", hello.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "1\n");
    let ticker = examples().join("ticker.toml");
    let out = agent.run(&["create", ticker.to_str().unwrap(), "name=t2", "memory=24"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "2\n");
    let st = agent.state.lock().unwrap();
    assert_eq!(st.created[0].0.name, "hello");
    assert_eq!(st.created[0].0.kernel, Kernel::Named("hello".into()));
    assert_eq!(st.created[0].0.memory_mib, 16);
    assert_eq!(st.created[0].0.on_poweroff, ExitAction::Preserve);
    assert_eq!(st.created[1].0.cmdline, "secs=600");
    assert_eq!(st.created[1].0.name, "t2");
    assert_eq!(st.created[1].0.kernel, Kernel::Named("ticker".into()));
    assert_eq!(st.created[1].0.memory_mib, 24);
    assert!(st.uploads.is_empty());
}

#[test]
fn list_as_table_and_json() {
    let agent = Agent::start(Mode::Normal);
    agent.add_domain("hello", b"");
    let out = agent.run(&["list"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "\
Name                        ID Mem(MiB) VCPUs  State   Time(s)
Domain-0                     0       64     1 r-----       2.5
hello                        1       16     1 -b----       2.5
"
    );
    let out = agent.run(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json = text(&out.stdout);
    assert!(
        json.starts_with("[\n  {\"id\": 0, \"name\": \"Domain-0\""),
        "{json}"
    );
    assert!(json.contains(
        "{\"id\": 1, \"name\": \"hello\", \"state\": \"blocked\", \"flags\": \"-b----\""
    ));
}

#[test]
fn volumes_create_list_rm_and_their_errors() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["volume", "create", "web", "4M"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "volume web: 4M on disk data at 1M (sectors 2048..10240)\n"
    );
    let out = agent.run(&["volume", "create", "busy", "1M", "--on", "data", "--json"]);
    assert_eq!(
        text(&out.stdout),
        "{\"name\": \"busy\", \"disk\": \"data\", \"start_sector\": 18432, \"sectors\": 2048, \
         \"bytes\": 1048576, \"users\": [2]}\n"
    );
    let out = agent.run(&["volume", "list"]);
    assert_eq!(
        text(&out.stdout),
        "\
Name             Disk       Offset     Size Users
web              data           1M       4M -
busy             data           9M       1M 2

Disk         Size Table          Free
data          64M volumes          8M
"
    );
    let out = agent.run(&["volume", "list", "--json"]);
    assert!(text(&out.stdout).starts_with("{\"volumes\": [\n  {\"name\": \"web\""));
    assert!(text(&out.stdout).ends_with("\"table\": \"volumes\", \"free_sectors\": 16384}\n]}\n"));
    // dom0's errors: exit 1, its message and what to do next.
    for (args, want) in [
        (
            &["volume", "create", "web", "1M"][..],
            "dom0ctl: volume create web: a volume named web exists already (on disk data). \
             Pick another name, or see `dom0ctl volume list`.\n",
        ),
        (
            &["volume", "create", "x", "1M", "--on", "nope"],
            "dom0ctl: volume create x: dom0 has no disk named nope. List dom0's disks with \
             `dom0ctl volume list`.\n",
        ),
        (
            &["volume", "create", "x", "1G"],
            "dom0ctl: volume create x: no room for 1G on disk data: its largest free extent is \
             8M. Pick a smaller size or another disk (--on), or remove a volume (`dom0ctl volume \
             rm`).\n",
        ),
        (
            &["volume", "rm", "busy"],
            "dom0ctl: volume rm busy: volume busy is in use by domain 2. Destroy the domains \
             that use it first (`dom0ctl list`).\n",
        ),
        (
            &["volume", "rm", "nope"],
            "dom0ctl: volume rm nope: no volume named nope. List volumes with `dom0ctl volume \
             list`.\n",
        ),
    ] {
        let out = agent.run(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), want);
    }
    let out = agent.run(&["volume", "rm", "web"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    // A bad size is a usage error, found before dom0 is asked.
    let before = agent.state.lock().unwrap().requests.len();
    let out = agent.run(&["volume", "create", "x", "12Q"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a size"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);
}

#[test]
fn network_list_attach_detach() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["network-list", "hello"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let t = text(&out.stdout);
    let mut lines = t.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("Idx BE  Mac Addr.         handle state evt-ch tx-/rx-ring-ref BE-path"),
        "{t}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "0",
            "0",
            "00:16:3e:00:00:01",
            "0",
            "4",
            "5",
            "8/9",
            "/local/domain/0/backend/vif/1/0",
            "xenbr0",
            "10",
            "1",
            "20",
            "2"
        ]
    );
    for args in [
        &[
            "network-attach",
            "hello",
            "mac=00:16:3e:00:00:09, bridge=xenbr1",
        ][..],
        &["network-attach", "hello"],
        &["network-detach", "hello", "1"],
    ] {
        let out = agent.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    // A bad vif is a usage error, found before dom0 is asked.
    let before = agent.state.lock().unwrap().requests.len();
    let out = agent.run(&["network-attach", "hello", "mac=ff:ff:ff:ff:ff:ff"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a unicast MAC"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);
}

#[test]
fn block_list_attach_detach() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["block-list", "hello"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let t = text(&out.stdout);
    let mut lines = t.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("Vdev       BE  handle state evt-ch ring-ref BE-path")
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "51712",
            "0",
            "51712",
            "4",
            "5",
            "8",
            "/local/domain/0/backend/vbd/1/51712",
            "xvda",
            "web",
            "w",
            "10",
            "20",
            "1",
            "0",
            "0"
        ]
    );
    let out = agent.run(&[
        "block-attach",
        "hello",
        "target=scratch, vdev=xvdb, access=ro",
    ]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = agent.run(&["block-detach", "hello", "xvdb"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    // A bad disk specification is a usage error, found before dom0 is asked.
    let before = agent.state.lock().unwrap().requests.len();
    let out = agent.run(&["block-attach", "hello", "target=x, vdev=vda"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a virtual disk name"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(agent.state.lock().unwrap().requests.len(), before);
}

#[test]
fn socket_from_the_environment() {
    let agent = Agent::start(Mode::Normal);
    let out = Command::new(env!("CARGO_BIN_EXE_dom0ctl"))
        .arg("images")
        .env("DOM0CTL_SOCKET", &agent.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "Name              Size(bytes)\nhello                   12288\nticker                  16384\n"
    );
}

#[test]
fn console_no_follow_prints_the_log() {
    let agent = Agent::start(Mode::Normal);
    agent.add_domain("hello", b"Hello, world!\r\nbye\n");
    let out = agent.run(&["console", "hello", "--no-follow"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(out.stdout, b"Hello, world!\r\nbye\n");
    let out = agent.run(&["console", "1", "--no-follow"]);
    assert_eq!(out.stdout, b"Hello, world!\r\nbye\n");
}

#[test]
fn console_follow_forwards_input_until_ctrl_bracket() {
    let agent = Agent::start(Mode::Normal);
    agent.add_domain("hello", b"log so far\n");
    let out = dom0ctl(
        &["--socket", agent.socket.to_str().unwrap()],
        &["console", "hello"],
        Some(b"ls\r\x1dnot sent"),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "log so far\nlive output\n");
    let st = agent.state.lock().unwrap();
    assert_eq!(st.input, b"ls\r");
    assert_eq!(st.requests.last(), Some(&Request::ConsoleDetach));
}

#[test]
fn domain_commands_by_name_and_id() {
    let agent = Agent::start(Mode::Normal);
    let id = agent.add_domain("hello", b"");
    for args in [
        &["pause", "hello"][..],
        &["unpause", "1"],
        &["shutdown", "--force", "hello"],
    ] {
        let out = agent.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(out.stdout.is_empty());
    }
    let out = agent.run(&["destroy", "hello"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let st = agent.state.lock().unwrap();
    assert!(st.domains.iter().all(|d| d.id != id));
    let ops: Vec<&Request> = st
        .requests
        .iter()
        .filter(|r| !matches!(r, Request::Hello { .. }))
        .collect();
    assert_eq!(
        ops,
        [
            &Request::Pause(DomRef::Name("hello".into())),
            &Request::Unpause(DomRef::Id(1)),
            &Request::Shutdown(DomRef::Name("hello".into())),
            &Request::Destroy(DomRef::Name("hello".into())),
        ]
    );
}

#[test]
fn info_and_dmesg() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["info"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(
        s.contains("hypervisor        : xen-like-hv (test)\n"),
        "{s}"
    );
    assert!(s.contains("xen_version       : 4.17.0-xlhv\n"));
    assert!(s.contains("free_memory       : 128 MiB (32768 frames)\n"));
    assert!(s.contains("dom0_free_memory  : 8 MiB (2048 frames)\n"));
    let out = agent.run(&["dmesg"]);
    assert_eq!(text(&out.stdout), "(XEN) hello from the log ring\n");
}

#[test]
fn dom0_errors_exit_1_with_the_agents_message() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["destroy", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "dom0ctl: destroy nope: no such domain: nope. List domains with `dom0ctl list`.\n"
    );
    let out = agent.run(&[
        "create",
        examples().join("hello.toml").to_str().unwrap(),
        "image=nosuch",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .starts_with("dom0ctl: create hello: no image \"nosuch\". List the images")
    );
}

#[test]
fn no_socket_exits_4() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let out = dom0ctl(&["--socket", sock.to_str().unwrap()], &["list"], None, None);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dom0ctl: cannot reach dom0 at {}: no such socket. Is xen-like-hv running? Start it \
             with `scripts/run` (or `scripts/run --detach`), or point --socket / DOM0CTL_SOCKET \
             at its control socket.\n",
            sock.display()
        )
    );
}

#[test]
fn stale_socket_is_connection_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let out = dom0ctl(&["--socket", sock.to_str().unwrap()], &["list"], None, None);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("connection refused"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn silent_dom0_times_out_with_exit_4() {
    let agent = Agent::start(Mode::Silent);
    let out = agent.run(&["--timeout", "1", "list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        text(&out.stderr).contains("did not answer the greeting within 1 s"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_stale_partial_frame_is_searched_past() {
    let agent = Agent::start(Mode::StaleHeader);
    let started = std::time::Instant::now();
    let out = agent.run(&["--timeout", "10", "list"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Domain-0"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn version_mismatch_exits_4() {
    let agent = Agent::start(Mode::FutureVersion);
    let out = agent.run(&["list"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(text(&out.stderr).contains("dom0 speaks protocol version 3, this dom0ctl speaks 2"));
}

#[test]
fn shutdown_host_accepts_a_closed_link() {
    let agent = Agent::start(Mode::Normal);
    let out = agent.run(&["shutdown-host"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn kernels_that_are_not_regular_files_or_too_big_exit_3_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    // No agent: a refusal must come before connecting (else the exit code is 4).
    let nowhere = dir.path().join("none.sock");
    let run = |kernel: &str| {
        std::fs::write(&cfg, format!("name = \"k\"\nkernel = \"{kernel}\"\n")).unwrap();
        dom0ctl(
            &["--socket", nowhere.to_str().unwrap()],
            &["create", cfg.to_str().unwrap()],
            None,
            None,
        )
    };
    let expect = |kernel: &str, what: &str| {
        let started = std::time::Instant::now();
        let out = run(kernel);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{kernel}: {err}");
        assert!(err.starts_with("dom0ctl: "), "{err}");
        assert!(err.contains(&format!("{kernel}: ")), "{err}");
        assert!(err.contains(what), "{kernel}: {err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{kernel} was refused only after {:?}",
            started.elapsed()
        );
    };
    // /dev/zero never ends: reading it would allocate until the host runs out.
    expect("/dev/zero", "not a regular file (it is a character device)");
    std::fs::create_dir(dir.path().join("kdir")).unwrap();
    expect("kdir", "not a regular file (it is a directory)");
    // A FIFO with no writer: even opening it would block.
    let fifo = dir.path().join("kfifo");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status();
    if made.is_ok_and(|s| s.success()) {
        expect("kfifo", "not a regular file (it is a FIFO)");
    }
    // One byte over the limit (sparse: costs no disk), and a symlink to it.
    let big = dir.path().join("big.elf");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(control_proto::MAX_UPLOAD_BYTES + 1).unwrap();
    drop(f);
    let over = format!(
        "{} bytes is over dom0's upload limit of {} bytes (256 MiB)",
        control_proto::MAX_UPLOAD_BYTES + 1,
        control_proto::MAX_UPLOAD_BYTES
    );
    expect("big.elf", &over);
    std::os::unix::fs::symlink(&big, dir.path().join("link.elf")).unwrap();
    expect("link.elf", &over);
    // At the limit the size is fine: what refuses it is the ELF check, after reading.
    let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
    f.set_len(control_proto::MAX_UPLOAD_BYTES).unwrap();
    drop(f);
    expect("big.elf", "the file is not an ELF file");
}

#[test]
fn bad_local_input_exits_3_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("hello.toml");
    std::fs::write(
        &cfg,
        "name = \"hello\"\nimage = \"hello\"\nmemory = \"lots\"\n",
    )
    .unwrap();
    let nowhere = dir.path().join("none.sock");
    let run = |args: &[&str]| dom0ctl(&["--socket", nowhere.to_str().unwrap()], args, None, None);
    let out = run(&["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out.stderr),
        format!(
            "dom0ctl: {}:3: memory: expected an integer number of MiB, got \"lots\"\n",
            cfg.display()
        )
    );

    std::fs::write(dir.path().join("k"), b"#!/bin/sh\necho not a kernel\n").unwrap();
    std::fs::write(&cfg, "name = \"hello\"\nkernel = \"k\"\n").unwrap();
    let out = run(&["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        text(&out.stderr).contains("the file is not an ELF file"),
        "{}",
        text(&out.stderr)
    );

    let out = run(&["create", dir.path().join("missing.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out.stderr).contains("cannot read the config file"));

    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}
