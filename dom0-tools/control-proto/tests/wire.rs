//! Host tests of the wire format: every message round-trips, the decoder finds
//! frames in any byte stream, and nothing panics on hostile input.

use control_proto::cpus::CpuMap;
use control_proto::{
    BlockRow, BridgeInfo, Class, CreateRequest, DecodeError, DeviceRow, DomRef, DomState,
    DomainInfo, ErrorCode, ErrorReply, Event, ExitAction, Frame, FrameDecoder, FrameError,
    HEADER_LEN, HostInfo, ImageInfo, Kernel, Kind, MAX_DATA, MAX_FRAME, MAX_PAYLOAD, Message,
    PROTOCOL_VERSION, Request, Response, ShutdownReason, TableState, VcpuRow, VolumeDisk,
    VolumeInfo, crc32,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// One message of every kind.
fn samples() -> Vec<Message> {
    let dom = DomRef::Name("hello".into());
    let reqs = vec![
        Request::Hello { client_version: 1 },
        Request::Info,
        Request::List,
        Request::Create(CreateRequest {
            name: "hello".into(),
            kernel: Kernel::Named("hello".into()),
            memory_mib: 16,
            vcpus: 1,
            cmdline: "console=hvc0 loglevel=3".into(),
            on_poweroff: ExitAction::Preserve,
            on_crash: ExitAction::Destroy,
            on_reboot: ExitAction::Restart,
            uuid: Some([7; 16]),
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: Vec::new(),
            cpus_soft: Vec::new(),
        }),
        Request::Create(CreateRequest {
            name: "linux".into(),
            kernel: Kernel::Uploaded(3),
            memory_mib: 256,
            vcpus: 1,
            cmdline: "console=hvc0".into(),
            on_poweroff: ExitAction::Destroy,
            on_crash: ExitAction::Destroy,
            on_reboot: ExitAction::Restart,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: Some(Kernel::Uploaded(4)),
            cpus: vec![CpuMap::parse("1").unwrap(), CpuMap::ALL],
            cpus_soft: vec![CpuMap::parse("0").unwrap()],
        }),
        Request::Create(CreateRequest {
            name: "pinned".into(),
            kernel: Kernel::Named("hello".into()),
            memory_mib: 16,
            vcpus: 2,
            cmdline: String::new(),
            on_poweroff: ExitAction::Destroy,
            on_crash: ExitAction::Destroy,
            on_reboot: ExitAction::Restart,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: vec![CpuMap::parse("0-3,200").unwrap()],
            cpus_soft: Vec::new(),
        }),
        Request::Create(CreateRequest {
            name: "soft".into(),
            kernel: Kernel::Named("hello".into()),
            memory_mib: 16,
            vcpus: 2,
            cmdline: String::new(),
            on_poweroff: ExitAction::Destroy,
            on_crash: ExitAction::Destroy,
            on_reboot: ExitAction::Restart,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: Vec::new(),
            cpus_soft: vec![CpuMap::parse("1").unwrap(), CpuMap::parse("0-1").unwrap()],
        }),
        Request::Pause(DomRef::Id(3)),
        Request::Unpause(dom.clone()),
        Request::Shutdown(DomRef::Id(0)),
        Request::Destroy(dom.clone()),
        Request::ConsoleRead { dom: dom.clone() },
        Request::ConsoleAttach { dom: DomRef::Id(1) },
        Request::ConsoleInput {
            dom: dom.clone(),
            data: b"ls\r".to_vec(),
        },
        Request::ConsoleDetach,
        Request::UploadBegin {
            size: 123_456,
            crc32: 0xDEAD_BEEF,
        },
        Request::UploadChunk {
            upload: 9,
            offset: 65_536,
            data: vec![0, 1, 2, 0xff],
        },
        Request::UploadEnd { upload: 9 },
        Request::Images,
        Request::Devices,
        Request::BlockList(dom.clone()),
        Request::BlockAttach {
            dom: dom.clone(),
            disk: control_proto::disk::DiskSpec::parse("target=data, vdev=xvdb, access=ro")
                .unwrap(),
        },
        Request::BlockDetach {
            dom: dom.clone(),
            vdev: "xvdb".into(),
        },
        Request::NetworkList(dom.clone()),
        Request::VcpuList(dom.clone()),
        Request::VcpuPin {
            dom: dom.clone(),
            vcpu: Some(3),
            hard: Some(CpuMap::parse("1").unwrap()),
            soft: None,
        },
        Request::VcpuPin {
            dom: DomRef::Id(2),
            vcpu: None,
            hard: None,
            soft: Some(CpuMap::parse("0-3,200").unwrap()),
        },
        Request::VcpuPin {
            dom: DomRef::Id(2),
            vcpu: None,
            hard: Some(CpuMap::ALL),
            soft: Some(CpuMap::NONE),
        },
        Request::NetworkAttach {
            dom: dom.clone(),
            vif: control_proto::vif::VifSpec::parse("mac=00:16:3e:00:00:09, bridge=xenbr1")
                .unwrap(),
        },
        Request::NetworkDetach {
            dom: dom.clone(),
            vif: "1".into(),
        },
        Request::Dmesg,
        Request::ShutdownHost,
        Request::AskShutdown {
            dom: dom.clone(),
            reason: ShutdownReason::Reboot,
        },
        Request::XsRead {
            path: "/local/domain/1/name".into(),
        },
        Request::XsWrite {
            path: "/local/domain/1/data/x".into(),
            value: b"v\0w".to_vec(),
        },
        Request::XsRm { path: "/a".into() },
        Request::XsList { path: "/".into() },
        Request::XsWatch {
            path: "@releaseDomain".into(),
        },
        Request::VolumeCreate {
            name: "vol1".into(),
            size: 64 << 20,
            disk: Some("data".into()),
            force: true,
        },
        Request::VolumeList,
        Request::VolumeRm {
            name: "vol1".into(),
            disk: None,
        },
        Request::XsUnwatch,
    ];
    let resps = vec![
        Response::XsValue {
            value: b"demo".to_vec(),
        },
        Response::XsNodes {
            nodes: vec![control_proto::XsNode {
                path: "/local".into(),
                value: Vec::new(),
                perms: "n0".into(),
            }],
            truncated: true,
        },
        Response::HelloOk {
            protocol: PROTOCOL_VERSION,
            agent: "xlhv-dom0 0.1.0".into(),
            hypervisor: "xen-like-hv 0.1.0".into(),
        },
        Response::Ok,
        Response::Info(HostInfo {
            xen_major: 4,
            xen_minor: 17,
            xen_extra: ".0-xlhv".into(),
            total_kib: 512 * 1024,
            free_kib: 300 * 1024,
            free_frames: 300 * 256,
            nr_cpus: 1,
            cpu_khz: 2_400_000,
            domains: 2,
            dom0_free_frames: 7000,
            bridges: Vec::new(),
        }),
        Response::Info(HostInfo {
            xen_major: 4,
            xen_minor: 17,
            xen_extra: ".0-xlhv".into(),
            total_kib: 512 * 1024,
            free_kib: 300 * 1024,
            free_frames: 300 * 256,
            nr_cpus: 2,
            cpu_khz: 2_400_000,
            domains: 3,
            dom0_free_frames: 7000,
            bridges: vec![BridgeInfo {
                name: "xenbr0".into(),
                ports: vec!["eth0".into(), "vif1.0".into()],
                learned: 3,
            }],
        }),
        Response::Domains(vec![
            DomainInfo {
                id: 0,
                name: "Domain-0".into(),
                state: DomState::Running,
                shutdown_reason: None,
                memory_kib: 65536,
                max_memory_kib: 65536,
                vcpus: 1,
                cpu_time_ns: 1_500_000_000,
                uptime_ns: 9_000_000_000,
            },
            DomainInfo {
                id: 1,
                name: "hello".into(),
                state: DomState::Shutdown,
                shutdown_reason: Some(ShutdownReason::Poweroff),
                memory_kib: 16384,
                max_memory_kib: 16384,
                vcpus: 1,
                cpu_time_ns: 7,
                uptime_ns: 8,
            },
        ]),
        Response::Created { domid: 7 },
        Response::Console {
            data: b"Hello, world!\n".to_vec(),
        },
        Response::UploadReady {
            upload: 9,
            chunk_max: 32768,
        },
        Response::UploadAck {
            upload: 9,
            received: 32768,
        },
        Response::Uploaded { upload: 9 },
        Response::Images(vec![ImageInfo {
            name: "hello".into(),
            size: 40960,
        }]),
        Response::Devices(vec![DeviceRow {
            bdf: "00:04.0".into(),
            vendor: 0x1af4,
            device: 0x1001,
            class: 0x010000,
            driver: "virtio-blk disk data".into(),
            detail: "storage bar0=io:0xc000+128".into(),
        }]),
        Response::Blocks(vec![BlockRow {
            devid: 51712,
            vdev: "xvda".into(),
            target: "data".into(),
            mode: "w".into(),
            be_state: 4,
            fe_state: 4,
            evtchn: -1,
            ring_ref: 8,
            be_path: "/local/domain/0/backend/vbd/1/51712".into(),
            requests: [1, 2, 3, 4],
            sectors: [8, 16],
            errors: 1,
        }]),
        Response::Networks(vec![control_proto::VifRow {
            devid: 0,
            mac: "00:16:3e:00:00:01".into(),
            bridge: "xenbr0".into(),
            be_state: 4,
            fe_state: 4,
            evtchn: 5,
            tx_ring_ref: 8,
            rx_ring_ref: -1,
            be_path: "/local/domain/0/backend/vif/1/0".into(),
            counters: [1, 2, 3, 4, 5, 6],
        }]),
        Response::Vcpus {
            domid: 3,
            name: "pinned".into(),
            nr_cpus: 2,
            vcpus: vec![
                VcpuRow {
                    vcpu: 0,
                    state: control_proto::VcpuState {
                        online: true,
                        blocked: false,
                        running: true,
                        cpu: 1,
                        time_ns: 123_456_789,
                    },
                    hard: CpuMap::parse("1").unwrap(),
                    soft: CpuMap::ALL,
                },
                VcpuRow {
                    vcpu: 1,
                    state: control_proto::VcpuState::default(),
                    hard: CpuMap::NONE,
                    soft: CpuMap::first(64),
                },
            ],
        },
        Response::Volumes {
            volumes: vec![VolumeInfo {
                name: "vol1".into(),
                disk: "data".into(),
                start: 2048,
                sectors: 131_072,
                users: vec![3, 4],
            }],
            disks: vec![VolumeDisk {
                name: "data".into(),
                sectors: 1 << 21,
                readonly: false,
                table: TableState::Volumes,
                free_sectors: 1_000_000,
            }],
        },
        Response::Dmesg {
            text: b"(XEN) boot\n".to_vec(),
        },
        Response::error(ErrorCode::UnknownDomain, "no domain named \"nope\""),
    ];
    let events = vec![
        Event::ConsoleOutput {
            domid: 1,
            data: b"tick\n".to_vec(),
        },
        Event::ConsoleClosed {
            domid: 1,
            reason: "domain destroyed".into(),
        },
        Event::XsWatchEvent {
            path: "/local/domain/1/data".into(),
            token: "dom0ctl".into(),
        },
    ];
    reqs.into_iter()
        .map(Message::from)
        .chain(resps.into_iter().map(Message::from))
        .chain(events.into_iter().map(Message::from))
        .collect()
}

fn id_for(m: &Message, i: u32) -> u32 {
    if matches!(m, Message::Event(_)) {
        0
    } else {
        i + 1
    }
}

/// Every sample, framed, back to back.
fn sample_stream() -> (Vec<u8>, Vec<(u32, Message)>) {
    let mut wire = Vec::new();
    let mut want = Vec::new();
    for (i, m) in (0u32..).zip(samples()) {
        let id = id_for(&m, i);
        m.write_frame(id, &mut wire).unwrap();
        want.push((id, m));
    }
    (wire, want)
}

/// Feeds `chunks` in order and returns every decoded frame as a message.
fn decode_all<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Vec<(u32, Message)> {
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for mut rest in chunks {
        loop {
            let n = dec.push(rest);
            rest = &rest[n..];
            while let Some(f) = dec.next_frame() {
                let f = f.expect("sound frame");
                got.push((f.id, Message::from_frame(&f).expect("decodes")));
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    assert_eq!(dec.buffered(), 0);
    got
}

#[test]
fn samples_cover_every_kind() {
    let kinds: Vec<Kind> = samples().iter().map(Message::kind).collect();
    for k in Kind::ALL {
        assert!(kinds.contains(k), "no sample of {k}");
    }
}

#[test]
fn every_message_round_trips() {
    for m in samples() {
        let mut payload = Vec::new();
        m.encode(&mut payload);
        assert_eq!(Message::decode(m.kind() as u8, &payload), Ok(m.clone()));
        match &m {
            Message::Request(r) => {
                assert_eq!(Request::decode(r.kind() as u8, &payload), Ok(r.clone()))
            }
            Message::Response(r) => {
                assert_eq!(Response::decode(r.kind() as u8, &payload), Ok(r.clone()))
            }
            Message::Event(e) => assert_eq!(Event::decode(e.kind() as u8, &payload), Ok(e.clone())),
        }
    }
    let (wire, want) = sample_stream();
    assert_eq!(decode_all([&wire[..]]), want);
}

#[test]
fn frame_layout_is_as_documented() {
    let mut wire = Vec::new();
    Request::Hello { client_version: 1 }
        .write_frame(0x0102_0304, &mut wire)
        .unwrap();
    assert_eq!(
        wire[..HEADER_LEN],
        [
            b'X',
            b'C',
            PROTOCOL_VERSION,
            0x01,
            0x04,
            0x03,
            0x02,
            0x01,
            4,
            0,
            0,
            0
        ]
    );
    assert_eq!(wire[HEADER_LEN..HEADER_LEN + 4], [1, 0, 0, 0]);
    let crc = crc32(&wire[..HEADER_LEN + 4]);
    assert_eq!(wire[HEADER_LEN + 4..], crc.to_le_bytes());
    assert_eq!(wire.len(), HEADER_LEN + 4 + 4);

    let mut ev = Vec::new();
    Event::ConsoleOutput {
        domid: 0x0201,
        data: b"hi".to_vec(),
    }
    .write_frame(&mut ev)
    .unwrap();
    assert_eq!(ev[3], 0x80);
    assert_eq!(ev[4..8], [0, 0, 0, 0]);
    assert_eq!(
        ev[HEADER_LEN..HEADER_LEN + 8],
        [1, 2, 2, 0, 0, 0, b'h', b'i']
    );
}

#[test]
fn the_documented_hello_frame() {
    // The example in docs/control-protocol.md, byte for byte.
    let mut wire = Vec::new();
    Request::Hello { client_version: 2 }
        .write_frame(1, &mut wire)
        .unwrap();
    assert_eq!(
        wire,
        [
            0x58, 0x43, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x4c, 0x9a, 0x69, 0x05
        ]
    );
    let mut ok = Vec::new();
    Response::Ok.write_frame(1, &mut ok).unwrap();
    assert_eq!(
        ok,
        [
            0x58, 0x43, 0x02, 0x41, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x94, 0x52,
            0xbe, 0x0f
        ]
    );
}

#[test]
fn split_at_every_byte_decodes_identically() {
    let (wire, want) = sample_stream();
    for at in 0..=wire.len() {
        let (a, b) = wire.split_at(at);
        assert_eq!(decode_all([a, b]), want, "split at {at}");
    }
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(decode_all(bytes), want);
}

#[test]
fn bad_crc_is_reported_and_the_next_frame_found() {
    let mut wire = Vec::new();
    Request::List.write_frame(5, &mut wire).unwrap();
    let last = wire.len() - 1;
    wire[last] ^= 0x40;
    Request::Info.write_frame(6, &mut wire).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&wire);
    let e = dec.next_frame().unwrap().unwrap_err();
    assert_eq!(
        e,
        FrameError::BadCrc {
            kind: Kind::List as u8,
            id: 5
        }
    );
    assert_eq!(e.id(), 5);
    assert_eq!(e.reply().code, ErrorCode::BadRequest);
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!((f.id, Request::from_frame(&f)), (6, Ok(Request::Info)));
    assert_eq!(dec.next_frame(), None);
}

#[test]
fn too_long_is_reported_without_waiting() {
    let mut wire = vec![b'X', b'C', 1, Kind::List as u8, 9, 0, 0, 0];
    wire.extend_from_slice(&u32::try_from(MAX_PAYLOAD + 1).unwrap().to_le_bytes());
    Request::List.write_frame(10, &mut wire).unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&wire);
    assert!(matches!(
        dec.next_frame(),
        Some(Err(FrameError::TooLong { id: 9, .. }))
    ));
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(f.id, 10);
}

#[test]
fn other_versions_are_skipped_whole_and_answerable() {
    // A sound frame of version 3 whose payload holds a current frame: the inner
    // frame must not be delivered, as it is only payload.
    let mut inner = Vec::new();
    Request::ShutdownHost.write_frame(1, &mut inner).unwrap();
    let mut wire = vec![b'X', b'C', 3, 0x01, 42, 0, 0, 0];
    wire.extend_from_slice(&u32::try_from(inner.len()).unwrap().to_le_bytes());
    wire.extend_from_slice(&inner);
    let crc = crc32(&wire);
    wire.extend_from_slice(&crc.to_le_bytes());
    Request::List.write_frame(43, &mut wire).unwrap();

    let mut dec = FrameDecoder::new();
    dec.push(&wire);
    let e = dec.next_frame().unwrap().unwrap_err();
    assert_eq!(
        e,
        FrameError::UnsupportedVersion {
            version: 3,
            kind: 1,
            id: 42
        }
    );
    assert_eq!(e.reply().code, ErrorCode::UnsupportedVersion);
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!((f.id, Request::from_frame(&f)), (43, Ok(Request::List)));
}

#[test]
fn abandon_partial_recovers_a_frame_swallowed_by_a_stale_header() {
    // The tail of a dead connection: a header promising 1000 bytes, then a real frame.
    let mut wire = vec![
        b'X',
        b'C',
        1,
        Kind::ConsoleInput as u8,
        3,
        0,
        0,
        0,
        0xe8,
        3,
        0,
        0,
    ];
    wire.extend_from_slice(b"partial");
    Request::Hello { client_version: 1 }
        .write_frame(1, &mut wire)
        .unwrap();
    let mut dec = FrameDecoder::new();
    dec.push(&wire);
    assert_eq!(dec.next_frame(), None, "waits for the promised bytes");
    assert!(dec.buffered() > 0);
    dec.abandon_partial();
    let f = dec.next_frame().unwrap().unwrap();
    assert_eq!(
        Request::from_frame(&f),
        Ok(Request::Hello { client_version: 1 })
    );
    assert_eq!(dec.buffered(), 0);
    assert_eq!(dec.skipped(), 12 + 7);
}

#[test]
fn payload_decode_errors() {
    let mut p = Vec::new();
    Request::Hello { client_version: 1 }.encode(&mut p);
    assert_eq!(
        Request::decode(Kind::Hello as u8, &p[..3]),
        Err(DecodeError::Truncated)
    );
    p.push(0);
    assert_eq!(
        Request::decode(Kind::Hello as u8, &p),
        Err(DecodeError::TrailingBytes(1))
    );
    assert_eq!(
        Request::decode(0x3e, &[]),
        Err(DecodeError::UnknownKind(0x3e))
    );
    assert_eq!(
        Request::decode(Kind::Ok as u8, &[]),
        Err(DecodeError::UnexpectedKind {
            kind: Kind::Ok,
            expected: Class::Request
        })
    );
    // A name that is not UTF-8.
    assert_eq!(
        Request::decode(Kind::Destroy as u8, &[1, 2, 0, 0, 0, 0xff, 0xfe]),
        Err(DecodeError::BadUtf8)
    );
    // A length that runs past the end must not allocate.
    assert_eq!(
        Request::decode(Kind::Destroy as u8, &[1, 0xff, 0xff, 0xff, 0xff]),
        Err(DecodeError::Truncated)
    );
    assert_eq!(
        Request::decode(Kind::Destroy as u8, &[2]),
        Err(DecodeError::BadTag {
            what: "DomRef",
            value: 2
        })
    );
    assert_eq!(
        Response::decode(Kind::Error as u8, &[0xee, 0, 0, 0, 0, 0]),
        Err(DecodeError::UnknownErrorCode(0xee))
    );
    // A list count larger than the bytes left.
    assert_eq!(
        Response::decode(Kind::Domains as u8, &[0xff, 0xff, 0, 0]),
        Err(DecodeError::Truncated)
    );
    let reply = ErrorReply::from(DecodeError::UnknownKind(0x3e));
    assert_eq!(reply.code, ErrorCode::BadRequest);
    // Volume requests: flags are 0 or 1, options 0 or 1.
    let mut p = Vec::new();
    Request::VolumeCreate {
        name: "v".into(),
        size: 512,
        disk: None,
        force: false,
    }
    .encode(&mut p);
    assert_eq!(p, [1, 0, 0, 0, b'v', 0, 2, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut bad = p.clone();
    bad[14] = 2;
    assert_eq!(
        Request::decode(Kind::VolumeCreate as u8, &bad),
        Err(DecodeError::BadTag {
            what: "force",
            value: 2
        })
    );
    bad[13] = 7;
    assert_eq!(
        Request::decode(Kind::VolumeCreate as u8, &bad),
        Err(DecodeError::BadTag {
            what: "option",
            value: 7
        })
    );
    assert_eq!(
        Request::decode(Kind::VolumeRm as u8, &[1, 0, 0, 0, b'v']),
        Err(DecodeError::Truncated)
    );
    // A disk row with a table state that does not exist.
    let mut p = Vec::new();
    Response::Volumes {
        volumes: vec![],
        disks: vec![VolumeDisk {
            name: String::new(),
            sectors: 1,
            readonly: true,
            table: TableState::Blank,
            free_sectors: 0,
        }],
    }
    .encode(&mut p);
    let at = p.len() - 9;
    assert_eq!(p[at - 1], 1);
    p[at] = 9;
    assert_eq!(
        Response::decode(Kind::Volumes as u8, &p),
        Err(DecodeError::BadTag {
            what: "TableState",
            value: 9
        })
    );
}

/// `Create`'s `cpus` is additive within version 2, as the ramdisk was: a request
/// without it is byte for byte what it was, and an older agent (one that stops
/// after the ramdisk) refuses a request with it as malformed.
#[test]
fn create_cpus_is_a_trailing_part() {
    let base = CreateRequest {
        name: "p".into(),
        kernel: Kernel::Named("hello".into()),
        memory_mib: 16,
        vcpus: 2,
        cmdline: String::new(),
        on_poweroff: ExitAction::Destroy,
        on_crash: ExitAction::Destroy,
        on_reboot: ExitAction::Restart,
        uuid: None,
        disks: Vec::new(),
        vifs: Vec::new(),
        ramdisk: None,
        cpus: Vec::new(),
        cpus_soft: Vec::new(),
    };
    let enc = |c: &CreateRequest| {
        let mut p = Vec::new();
        Request::Create(c.clone()).encode(&mut p);
        p
    };
    let plain = enc(&base);
    // name, kernel, memory, vcpus, cmdline, actions, uuid: nothing after.
    assert_eq!(plain.len(), 5 + 1 + 9 + 4 + 4 + 4 + 2 + 1);
    let pinned = CreateRequest {
        cpus: vec![CpuMap::parse("1").unwrap(), CpuMap::parse("0,9").unwrap()],
        ..base.clone()
    };
    let p = enc(&pinned);
    // Then the empty disk list, on_reboot, the empty vif list, "no ramdisk" (2),
    // and the maps: 2 of them, {1} as one byte, {0, 9} as two.
    let tail = [
        &[0, 0, 0, 0][..],
        &[2],
        &[0, 0, 0, 0],
        &[2],
        &[2, 0, 0, 0],
        &[1, 0, 0, 0, 0b10],
        &[2, 0, 0, 0, 1, 2],
    ]
    .concat();
    assert_eq!(&p[..plain.len()], &plain[..]);
    assert_eq!(&p[plain.len()..], &tail[..]);
    assert_eq!(
        Request::decode(Kind::Create as u8, &p),
        Ok(Request::Create(pinned.clone()))
    );
    // With a ramdisk the ramdisk goes as before and the maps follow it.
    let with_rd = CreateRequest {
        ramdisk: Some(Kernel::Uploaded(5)),
        ..pinned.clone()
    };
    let p2 = enc(&with_rd);
    assert_eq!(
        Request::decode(Kind::Create as u8, &p2),
        Ok(Request::Create(with_rd.clone()))
    );
    // What an agent that stops after the ramdisk sees: a bad ramdisk tag (2), or
    // bytes left over after it. Either way the request is refused, not built unpinned.
    let at = plain.len() + 4 + 1 + 4;
    assert_eq!(p[at], 2, "the ramdisk tag an older agent reads");
    let without_maps = CreateRequest {
        cpus: Vec::new(),
        ..with_rd.clone()
    };
    assert!(p2.len() > enc(&without_maps).len());
    assert_eq!(&p2[..enc(&without_maps).len()], &enc(&without_maps)[..]);
    // One encoding per request: "no ramdisk" with nothing after it, an empty map
    // list, or a map with a zero last byte are refused.
    let mut bad = p[..at + 1].to_vec();
    assert!(Request::decode(Kind::Create as u8, &bad).is_err());
    bad.extend_from_slice(&[0, 0, 0, 0]);
    assert!(Request::decode(Kind::Create as u8, &bad).is_err());
    let mut bad = p.clone();
    bad.truncate(p.len() - 2);
    bad.extend_from_slice(&[1, 0]);
    let n = bad.len();
    bad[n - 6] = 2;
    assert!(Request::decode(Kind::Create as u8, &bad).is_err());
    let too_long = [&p[..at + 1], &[1, 0, 0, 0, 33, 0, 0, 0], &[1; 33]].concat();
    assert!(Request::decode(Kind::Create as u8, &too_long).is_err());
}

/// `Create`'s `cpus_soft` is additive after `cpus`, as `cpus` was after the
/// ramdisk: a request without it is byte for byte what it was; with it, `cpus`
/// is sent too (count 0 when empty), so an agent that stops after `cpus` finds an
/// empty `cpus` list or bytes left over and refuses the request as malformed.
#[test]
fn create_cpus_soft_is_a_trailing_part_after_cpus() {
    let base = CreateRequest {
        name: "s".into(),
        kernel: Kernel::Named("hello".into()),
        memory_mib: 16,
        vcpus: 2,
        cmdline: String::new(),
        on_poweroff: ExitAction::Destroy,
        on_crash: ExitAction::Destroy,
        on_reboot: ExitAction::Restart,
        uuid: None,
        disks: Vec::new(),
        vifs: Vec::new(),
        ramdisk: None,
        cpus: Vec::new(),
        cpus_soft: Vec::new(),
    };
    let enc = |c: &CreateRequest| {
        let mut p = Vec::new();
        Request::Create(c.clone()).encode(&mut p);
        p
    };
    let dec = |p: &[u8]| Request::decode(Kind::Create as u8, p);
    let plain = enc(&base);
    // Neither: exactly the bytes of a request from before `cpus_soft` (and `cpus`).
    assert_eq!(plain.len(), 5 + 1 + 9 + 4 + 4 + 4 + 2 + 1);
    assert_eq!(dec(&plain), Ok(Request::Create(base.clone())));
    let hard_only = CreateRequest {
        cpus: vec![CpuMap::parse("1").unwrap()],
        ..base.clone()
    };
    let hard_bytes = enc(&hard_only);
    assert_eq!(
        &hard_bytes[plain.len()..],
        &[0, 0, 0, 0, 2, 0, 0, 0, 0, 2, 1, 0, 0, 0, 1, 0, 0, 0, 0b10][..],
        "cpus alone: as before, nothing after the maps"
    );

    // Soft only: the empty disk list, on_reboot, the empty vif list, "no ramdisk" (2),
    // an empty `cpus` list, then the soft maps: {1} as one byte, {0, 9} as two.
    let soft_only = CreateRequest {
        cpus_soft: vec![CpuMap::parse("1").unwrap(), CpuMap::parse("0,9").unwrap()],
        ..base.clone()
    };
    let p = enc(&soft_only);
    let tail = [
        &[0, 0, 0, 0][..],
        &[2],
        &[0, 0, 0, 0],
        &[2],
        &[0, 0, 0, 0],
        &[2, 0, 0, 0],
        &[1, 0, 0, 0, 0b10],
        &[2, 0, 0, 0, 1, 2],
    ]
    .concat();
    assert_eq!(&p[..plain.len()], &plain[..]);
    assert_eq!(&p[plain.len()..], &tail[..]);
    assert_eq!(dec(&p), Ok(Request::Create(soft_only.clone())));

    // Both: the hard maps as before, the soft ones right after them.
    let both = CreateRequest {
        cpus: vec![CpuMap::parse("0-1").unwrap()],
        cpus_soft: vec![CpuMap::parse("1").unwrap()],
        ramdisk: Some(Kernel::Uploaded(5)),
        ..base.clone()
    };
    let p2 = enc(&both);
    let hard_part = enc(&CreateRequest {
        cpus_soft: Vec::new(),
        ..both.clone()
    });
    assert_eq!(&p2[..hard_part.len()], &hard_part[..]);
    assert_eq!(&p2[hard_part.len()..], &[1, 0, 0, 0, 1, 0, 0, 0, 0b10][..]);
    assert_eq!(dec(&p2), Ok(Request::Create(both.clone())));

    // What an agent that stops after `cpus` sees: bytes left over after the hard
    // maps, or (soft only) a `cpus` list of count 0, which it refuses as it always did.
    let at = plain.len() + 4 + 1 + 4 + 1;
    assert_eq!(&p[at..at + 4], &[0, 0, 0, 0], "the empty cpus list");
    assert_eq!(
        dec(&p[..at + 4]),
        Err(DecodeError::BadTag {
            what: "cpus count",
            value: 0
        }),
        "an empty cpus list with nothing after it"
    );

    // One encoding per request, every byte used: a present but empty soft list,
    // a truncated soft list, a soft map with a zero last byte, bytes after it.
    let empty_soft = [&hard_bytes[..], &[0, 0, 0, 0]].concat();
    assert_eq!(
        dec(&empty_soft),
        Err(DecodeError::BadTag {
            what: "cpus_soft count",
            value: 0
        })
    );
    let empty_both = [&p[..at + 4], &[0, 0, 0, 0]].concat();
    assert!(dec(&empty_both).is_err(), "both lists empty");
    for cut in 1..p.len() - at {
        assert!(dec(&p[..p.len() - cut]).is_err(), "cut {cut} bytes");
    }
    let mut zero_last = p.clone();
    zero_last.truncate(p.len() - 2);
    zero_last.extend_from_slice(&[1, 0]);
    assert!(matches!(
        dec(&zero_last),
        Err(DecodeError::BadTag {
            what: "cpumap length (past 256 CPUs, or a zero last byte)",
            ..
        })
    ));
    let too_long = [&p[..at + 4], &[1, 0, 0, 0, 33, 0, 0, 0], &[1; 33]].concat();
    assert!(dec(&too_long).is_err(), "a map past 256 CPUs");
    let extra = [&p[..], &[0]].concat();
    assert!(dec(&extra).is_err(), "a byte after the soft maps");
}

/// `VcpuPin`'s payload as `docs/control-protocol.md` lays it out: `DomRef`,
/// `option<u32> vcpu`, `option<CpuMap> hard`, `option<CpuMap> soft`, every byte
/// used, each map in its one encoding.
#[test]
fn vcpu_pin_layout_and_strict_decoding() {
    let dec = |p: &[u8]| Request::decode(Kind::VcpuPin as u8, p);
    assert_eq!(Kind::VcpuPin as u8, 0x37);
    assert_eq!(Kind::VcpuPin.class(), Class::Request);
    let req = Request::VcpuPin {
        dom: DomRef::Id(5),
        vcpu: Some(1),
        hard: Some(CpuMap::parse("1").unwrap()),
        soft: Some(CpuMap::parse("8").unwrap()),
    };
    let mut p = Vec::new();
    req.encode(&mut p);
    assert_eq!(
        p,
        [
            0, 5, 0, // DomRef::Id(5)
            1, 1, 0, 0, 0, // Some(vCPU 1)
            1, 1, 0, 0, 0, 2, // Some(hard: CPU 1), one byte
            1, 2, 0, 0, 0, 0, 1, // Some(soft: CPU 8), two bytes
        ]
    );
    assert_eq!(dec(&p), Ok(req));
    // All vCPUs, the hard map left alone, soft on CPU 0.
    let all = Request::VcpuPin {
        dom: DomRef::Name("t".into()),
        vcpu: None,
        hard: None,
        soft: Some(CpuMap::parse("0").unwrap()),
    };
    let mut q = Vec::new();
    all.encode(&mut q);
    assert_eq!(q, [1, 1, 0, 0, 0, b't', 0, 0, 1, 1, 0, 0, 0, 1]);
    assert_eq!(dec(&q), Ok(all));
    // Neither map decodes (the agent refuses it with a message of its own).
    assert!(dec(&[0, 5, 0, 0, 0, 0]).is_ok());
    // Strict: tags 0 or 1, maps in their one encoding, nothing missing or extra.
    for (at, what) in [(3, "option"), (8, "option"), (14, "option")] {
        let mut bad = p.clone();
        bad[at] = 2;
        assert_eq!(
            dec(&bad),
            Err(DecodeError::BadTag { what, value: 2 }),
            "tag at {at}"
        );
    }
    let zero_last = [&p[..9], &[2, 0, 0, 0, 2, 0], &p[14..]].concat();
    assert!(matches!(
        dec(&zero_last),
        Err(DecodeError::BadTag {
            what: "cpumap length (past 256 CPUs, or a zero last byte)",
            ..
        })
    ));
    let too_long = [&p[..9], &[33, 0, 0, 0], &[1; 33], &p[14..]].concat();
    assert!(dec(&too_long).is_err(), "a map past 256 CPUs");
    for cut in 1..=p.len() {
        assert!(dec(&p[..p.len() - cut]).is_err(), "cut {cut} bytes");
    }
    assert_eq!(
        dec(&[&p[..], &[0]].concat()),
        Err(DecodeError::TrailingBytes(1))
    );
}

#[test]
fn oversized_messages_are_refused_and_max_data_fits() {
    let mut out = vec![1, 2, 3];
    let big = Response::Console {
        data: vec![0; MAX_PAYLOAD],
    };
    let e = big.write_frame(1, &mut out).unwrap_err();
    assert_eq!(e.kind, Kind::Console);
    assert_eq!(out, [1, 2, 3], "left as it was");

    let data = vec![7u8; MAX_DATA];
    let fits: Vec<Message> = vec![
        Response::Console { data: data.clone() }.into(),
        Response::Dmesg { text: data.clone() }.into(),
        Event::ConsoleOutput {
            domid: 1,
            data: data.clone(),
        }
        .into(),
        Request::UploadChunk {
            upload: 1,
            offset: 0,
            data: data.clone(),
        }
        .into(),
        Request::ConsoleInput {
            dom: DomRef::Name("x".repeat(32)),
            data,
        }
        .into(),
    ];
    for m in fits {
        let mut wire = Vec::new();
        m.write_frame(1, &mut wire).unwrap();
        assert!(wire.len() <= MAX_FRAME);
        assert_eq!(decode_all([&wire[..]]), vec![(1, m)]);
    }
}

#[test]
fn domref_parse() {
    assert_eq!(DomRef::parse("0"), DomRef::Id(0));
    assert_eq!(DomRef::parse("65535"), DomRef::Id(65535));
    assert_eq!(DomRef::parse("65536"), DomRef::Name("65536".into()));
    assert_eq!(DomRef::parse("hello"), DomRef::Name("hello".into()));
    assert_eq!(DomRef::parse("+1"), DomRef::Name("+1".into()));
    assert_eq!(DomRef::parse(""), DomRef::Name(String::new()));
    assert_eq!(DomRef::Id(4).to_string(), "4");
}

#[test]
fn state_flags_and_names() {
    for (i, s) in DomState::ALL.iter().enumerate() {
        let flags = s.xl_flags().as_bytes();
        assert_eq!(flags.len(), 6);
        assert_eq!(flags[i], b"rbpscd"[i]);
        assert_eq!(flags.iter().filter(|&&b| b == b'-').count(), 5);
        assert_eq!(DomState::from_name(s.as_str()), Some(*s));
    }
    assert_eq!(
        ExitAction::from_name("preserve"),
        Some(ExitAction::Preserve)
    );
    assert_eq!(ExitAction::from_name("restart"), Some(ExitAction::Restart));
    assert_eq!(ExitAction::from_name("rename-restart"), None);
    assert_eq!(ShutdownReason::Crash as u8, 3, "Xen's SHUTDOWN_crash");
}

// ---- property tests ----

fn arb_string() -> impl Strategy<Value = String> {
    prop_oneof![".{0,20}", "[a-z0-9_.-]{1,12}"]
}

fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..64)
}

fn arb_domref() -> impl Strategy<Value = DomRef> {
    prop_oneof![
        any::<u16>().prop_map(DomRef::Id),
        arb_string().prop_map(DomRef::Name)
    ]
}

fn arb_cpumap() -> impl Strategy<Value = CpuMap> {
    // Any bitmap, the empty one included (the wire carries it; validation refuses it).
    vec(any::<u8>(), 0..=control_proto::cpus::MAP_BYTES).prop_map(|b| CpuMap::from_bitmap(&b))
}

fn arb_action() -> impl Strategy<Value = ExitAction> {
    prop::sample::select(ExitAction::ALL)
}

fn arb_request() -> impl Strategy<Value = Request> {
    let create = (
        arb_string(),
        prop_oneof![
            arb_string().prop_map(Kernel::Named),
            any::<u32>().prop_map(Kernel::Uploaded)
        ],
        any::<u32>(),
        any::<u32>(),
        arb_string(),
        arb_action(),
        arb_action(),
        prop::option::of(any::<[u8; 16]>()),
        prop::collection::vec(("[a-z][a-z0-9._-]{0,15}", 0u32..40, any::<bool>()), 0..4),
        arb_action(),
        prop::collection::vec(
            (prop::option::of(any::<[u8; 5]>()), "[a-z][a-z0-9]{0,14}"),
            0..3,
        ),
        (
            prop::option::of(prop_oneof![
                arb_string().prop_map(Kernel::Named),
                any::<u32>().prop_map(Kernel::Uploaded)
            ]),
            vec(arb_cpumap(), 0..4),
            vec(arb_cpumap(), 0..4),
        ),
    )
        .prop_map(
            |(
                name,
                kernel,
                memory_mib,
                vcpus,
                cmdline,
                on_poweroff,
                on_crash,
                uuid,
                disks,
                on_reboot,
                vifs,
                (ramdisk, cpus, cpus_soft),
            )| {
                let vifs = vifs
                    .into_iter()
                    .map(|(mac, bridge)| control_proto::vif::VifSpec {
                        mac: mac.map(|m| [m[0] & 0xfe, m[1], m[2], m[3], m[4], 0]),
                        bridge,
                    })
                    .collect();
                let disks = disks
                    .into_iter()
                    .map(|(target, n, ro)| {
                        let spec = format!(
                            "target={target}, vdev={n}, access={}",
                            if ro { "r" } else { "w" }
                        );
                        control_proto::disk::DiskSpec::parse(&spec).unwrap()
                    })
                    .collect();
                Request::Create(CreateRequest {
                    name,
                    kernel,
                    memory_mib,
                    vcpus,
                    cmdline,
                    on_poweroff,
                    on_crash,
                    on_reboot,
                    uuid,
                    disks,
                    vifs,
                    ramdisk,
                    cpus,
                    cpus_soft,
                })
            },
        );
    prop_oneof![
        any::<u32>().prop_map(|client_version| Request::Hello { client_version }),
        Just(Request::Info),
        Just(Request::List),
        create,
        arb_domref().prop_map(Request::Pause),
        arb_domref().prop_map(Request::Unpause),
        arb_domref().prop_map(Request::Shutdown),
        arb_domref().prop_map(Request::Destroy),
        arb_domref().prop_map(|dom| Request::ConsoleRead { dom }),
        arb_domref().prop_map(|dom| Request::ConsoleAttach { dom }),
        (arb_domref(), arb_bytes()).prop_map(|(dom, data)| Request::ConsoleInput { dom, data }),
        Just(Request::ConsoleDetach),
        (any::<u64>(), any::<u32>()).prop_map(|(size, crc32)| Request::UploadBegin { size, crc32 }),
        (any::<u32>(), any::<u64>(), arb_bytes()).prop_map(|(upload, offset, data)| {
            Request::UploadChunk {
                upload,
                offset,
                data,
            }
        }),
        any::<u32>().prop_map(|upload| Request::UploadEnd { upload }),
        Just(Request::Images),
        Just(Request::Devices),
        arb_domref().prop_map(Request::BlockList),
        (arb_domref(), arb_string()).prop_map(|(dom, vdev)| Request::BlockDetach { dom, vdev }),
        arb_domref().prop_map(Request::NetworkList),
        arb_domref().prop_map(Request::VcpuList),
        (
            arb_domref(),
            prop::option::of(any::<u32>()),
            prop::option::of(arb_cpumap()),
            prop::option::of(arb_cpumap())
        )
            .prop_map(|(dom, vcpu, hard, soft)| Request::VcpuPin {
                dom,
                vcpu,
                hard,
                soft
            }),
        (arb_domref(), arb_string()).prop_map(|(dom, vif)| Request::NetworkDetach { dom, vif }),
        Just(Request::Dmesg),
        Just(Request::ShutdownHost),
        (arb_domref(), prop::sample::select(ShutdownReason::ALL))
            .prop_map(|(dom, reason)| Request::AskShutdown { dom, reason }),
        arb_string().prop_map(|path| Request::XsRead { path }),
        (arb_string(), arb_bytes()).prop_map(|(path, value)| Request::XsWrite { path, value }),
        arb_string().prop_map(|path| Request::XsRm { path }),
        arb_string().prop_map(|path| Request::XsList { path }),
        arb_string().prop_map(|path| Request::XsWatch { path }),
        Just(Request::XsUnwatch),
        (
            arb_string(),
            any::<u64>(),
            prop::option::of(arb_string()),
            any::<bool>()
        )
            .prop_map(|(name, size, disk, force)| Request::VolumeCreate {
                name,
                size,
                disk,
                force
            }),
        Just(Request::VolumeList),
        (arb_string(), prop::option::of(arb_string()))
            .prop_map(|(name, disk)| Request::VolumeRm { name, disk }),
    ]
}

fn arb_domain() -> impl Strategy<Value = DomainInfo> {
    (
        any::<u16>(),
        arb_string(),
        prop::sample::select(DomState::ALL),
        prop::option::of(prop::sample::select(ShutdownReason::ALL)),
        any::<[u64; 4]>(),
        any::<u32>(),
    )
        .prop_map(|(id, name, state, shutdown_reason, n, vcpus)| DomainInfo {
            id,
            name,
            state,
            shutdown_reason,
            memory_kib: n[0],
            max_memory_kib: n[1],
            vcpus,
            cpu_time_ns: n[2],
            uptime_ns: n[3],
        })
}

fn arb_response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u8>(), arb_string(), arb_string()).prop_map(|(protocol, agent, hypervisor)| {
            Response::HelloOk {
                protocol,
                agent,
                hypervisor,
            }
        }),
        Just(Response::Ok),
        (
            any::<[u32; 5]>(),
            arb_string(),
            any::<[u64; 4]>(),
            vec((arb_string(), vec(arb_string(), 0..4), any::<u32>()), 0..3)
        )
            .prop_map(|(a, xen_extra, b, bridges)| {
                Response::Info(HostInfo {
                    xen_major: a[0],
                    xen_minor: a[1],
                    xen_extra,
                    total_kib: b[0],
                    free_kib: b[1],
                    free_frames: b[2],
                    nr_cpus: a[2],
                    cpu_khz: a[3],
                    domains: a[4],
                    dom0_free_frames: b[3],
                    bridges: bridges
                        .into_iter()
                        .map(|(name, ports, learned)| BridgeInfo {
                            name,
                            ports,
                            learned,
                        })
                        .collect(),
                })
            }),
        vec(arb_domain(), 0..5).prop_map(Response::Domains),
        any::<u16>().prop_map(|domid| Response::Created { domid }),
        arb_bytes().prop_map(|data| Response::Console { data }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(upload, chunk_max)| Response::UploadReady { upload, chunk_max }),
        (any::<u32>(), any::<u64>())
            .prop_map(|(upload, received)| Response::UploadAck { upload, received }),
        any::<u32>().prop_map(|upload| Response::Uploaded { upload }),
        vec(
            (arb_string(), any::<u64>()).prop_map(|(name, size)| ImageInfo { name, size }),
            0..5
        )
        .prop_map(Response::Images),
        vec(
            (
                arb_string(),
                any::<u16>(),
                any::<u16>(),
                any::<u32>(),
                arb_string(),
                arb_string()
            )
                .prop_map(|(bdf, vendor, device, class, driver, detail)| DeviceRow {
                    bdf,
                    vendor,
                    device,
                    class,
                    driver,
                    detail
                }),
            0..4
        )
        .prop_map(Response::Devices),
        vec(
            (
                any::<u32>(),
                arb_string(),
                any::<i32>(),
                any::<[u64; 4]>(),
                any::<u64>()
            ),
            0..3
        )
        .prop_map(|rows| Response::Blocks(
            rows.into_iter()
                .map(|(devid, s, evtchn, requests, errors)| BlockRow {
                    devid,
                    vdev: s.clone(),
                    target: s.clone(),
                    mode: "r".into(),
                    be_state: devid % 9,
                    fe_state: 1,
                    evtchn,
                    ring_ref: -evtchn.saturating_abs(),
                    be_path: s,
                    requests,
                    sectors: [errors, 1],
                    errors,
                })
                .collect()
        )),
        (
            any::<u16>(),
            arb_string(),
            any::<u32>(),
            vec(
                (
                    any::<u32>(),
                    (any::<[bool; 3]>(), any::<u32>(), any::<u64>()),
                    arb_cpumap(),
                    arb_cpumap()
                ),
                0..4
            )
        )
            .prop_map(|(domid, name, nr_cpus, rows)| Response::Vcpus {
                domid,
                name,
                nr_cpus,
                vcpus: rows
                    .into_iter()
                    .map(
                        |(vcpu, ([online, blocked, running], cpu, time_ns), hard, soft)| {
                            VcpuRow {
                                vcpu,
                                state: control_proto::VcpuState {
                                    online,
                                    blocked,
                                    running,
                                    cpu,
                                    time_ns,
                                },
                                hard,
                                soft,
                            }
                        }
                    )
                    .collect(),
            }),
        (
            vec(
                (
                    arb_string(),
                    arb_string(),
                    any::<u64>(),
                    any::<u64>(),
                    vec(any::<u16>(), 0..4)
                )
                    .prop_map(|(name, disk, start, sectors, users)| VolumeInfo {
                        name,
                        disk,
                        start,
                        sectors,
                        users
                    }),
                0..4
            ),
            vec(
                (
                    arb_string(),
                    any::<u64>(),
                    any::<bool>(),
                    prop::sample::select(TableState::ALL),
                    any::<u64>()
                )
                    .prop_map(|(name, sectors, readonly, table, free_sectors)| {
                        VolumeDisk {
                            name,
                            sectors,
                            readonly,
                            table,
                            free_sectors,
                        }
                    }),
                0..3
            )
        )
            .prop_map(|(volumes, disks)| Response::Volumes { volumes, disks }),
        arb_bytes().prop_map(|text| Response::Dmesg { text }),
        (prop::sample::select(ErrorCode::ALL), arb_string())
            .prop_map(|(code, message)| Response::error(code, message)),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (any::<u16>(), arb_bytes()).prop_map(|(domid, data)| Event::ConsoleOutput { domid, data }),
        (any::<u16>(), arb_string())
            .prop_map(|(domid, reason)| Event::ConsoleClosed { domid, reason }),
        (arb_string(), arb_string()).prop_map(|(path, token)| Event::XsWatchEvent { path, token }),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        arb_request().prop_map(Message::Request),
        arb_response().prop_map(Message::Response),
        arb_event().prop_map(Message::Event),
    ]
}

/// Pushes everything, taking frames as they come; returns frames and errors.
fn drain(dec: &mut FrameDecoder, data: &[u8]) -> Vec<Result<Frame, FrameError>> {
    let mut out = Vec::new();
    let mut rest = data;
    loop {
        let n = dec.push(rest);
        rest = &rest[n..];
        while let Some(r) = dec.next_frame() {
            out.push(r);
        }
        assert!(dec.buffered() < MAX_FRAME, "room after draining");
        if rest.is_empty() {
            return out;
        }
    }
}

proptest! {
    #[test]
    fn random_messages_round_trip(msgs in vec(arb_message(), 1..6), id in 1u32..) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for m in msgs {
            let id = if matches!(m, Message::Event(_)) { 0 } else { id };
            m.write_frame(id, &mut wire).unwrap();
            want.push((id, m));
        }
        prop_assert_eq!(decode_all([&wire[..]]), want);
    }

    #[test]
    fn random_splits_decode_identically(
        msgs in vec(arb_message(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut wire = Vec::new();
        let mut want = Vec::new();
        for m in msgs {
            m.write_frame(3, &mut wire).unwrap();
            want.push((3, m));
        }
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(wire.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut prev = 0;
        for a in at {
            pieces.push(&wire[prev..a]);
            prev = a;
        }
        pieces.push(&wire[prev..]);
        prop_assert_eq!(decode_all(pieces), want);
    }

    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..4096), magic_at in vec(any::<prop::sample::Index>(), 0..8)) {
        // Plant magics so the header and CRC paths are reached, not only the scan.
        let mut bytes = bytes;
        if !bytes.is_empty() {
            for m in magic_at {
                let i = m.index(bytes.len());
                bytes[i] = b'X';
                if i + 1 < bytes.len() { bytes[i + 1] = b'C'; }
                if i + 2 < bytes.len() { bytes[i + 2] = PROTOCOL_VERSION; }
            }
        }
        let mut dec = FrameDecoder::new();
        for f in drain(&mut dec, &bytes).into_iter().flatten() {
                // A frame found in garbage is possible only in theory; decoding it must not panic.
                let _ = Message::from_frame(&f);
        }
        dec.abandon_partial();
        let _ = drain(&mut dec, &[]);
    }

    #[test]
    fn random_payloads_never_panic(kind in any::<u8>(), payload in vec(any::<u8>(), 0..256)) {
        let _ = Request::decode(kind, &payload);
        let _ = Response::decode(kind, &payload);
        let _ = Event::decode(kind, &payload);
        if let Ok(m) = Message::decode(kind, &payload) {
            // Whatever decodes re-encodes to the same bytes.
            let mut again = Vec::new();
            m.encode(&mut again);
            prop_assert_eq!(again, payload);
        }
    }

    #[test]
    fn frames_after_garbage_are_recovered(
        garbage in vec(any::<u8>().prop_filter("no magic start", |b| *b != b'X'), 0..2048),
        m in arb_message(),
    ) {
        let mut wire = garbage.clone();
        m.write_frame(77, &mut wire).unwrap();
        let mut dec = FrameDecoder::new();
        let got = drain(&mut dec, &wire);
        prop_assert_eq!(got.len(), 1);
        let f = got.into_iter().next().unwrap().unwrap();
        prop_assert_eq!(f.id, 77);
        prop_assert_eq!(Message::from_frame(&f), Ok(m));
        prop_assert_eq!(dec.skipped(), garbage.len() as u64);
    }

    #[test]
    fn frames_after_any_garbage_are_recovered_with_abandon(
        garbage in vec(any::<u8>(), 0..512),
        stale_header in any::<bool>(),
        m in arb_message(),
    ) {
        let mut wire = garbage;
        if stale_header {
            // A header whose length swallows the frame that follows.
            wire.extend_from_slice(&[b'X', b'C', 1, 0x0b, 1, 0, 0, 0, 0x00, 0x80, 0, 0]);
        }
        m.write_frame(77, &mut wire).unwrap();
        let mut dec = FrameDecoder::new();
        let mut found = Vec::new();
        found.extend(drain(&mut dec, &wire).into_iter().flatten());
        // The caller's idle rule: a partial frame on a quiet link is garbage.
        let mut rounds = 0;
        while found.is_empty() && dec.buffered() > 0 {
            dec.abandon_partial();
            found.extend(drain(&mut dec, &[]).into_iter().flatten());
            rounds += 1;
            prop_assert!(rounds <= wire.len());
        }
        let f = found.pop().expect("frame recovered");
        prop_assert_eq!(f.id, 77);
        prop_assert_eq!(Message::from_frame(&f), Ok(m));
    }
}
