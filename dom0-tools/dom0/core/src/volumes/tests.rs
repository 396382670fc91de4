//! Host tests of the volume table: the format, allocation, every error, and
//! crash consistency (a disk that fails or tears a write at any point).

use super::*;
use crate::disks::MemDisks;
use alloc::collections::BTreeMap;
use proptest::collection::vec as pvec;
use proptest::prelude::*;

const MIB: u64 = 1 << 20;
/// The probed bytes: [`PROBE_SECTORS`] sectors.
const PROBE_BYTES: usize = 128 * SECTOR;
const _: () = assert!(PROBE_BYTES as u64 == PROBE_SECTORS * SECTOR as u64);

/// One writable disk "data" of `mib` MiB.
fn one_disk(mib: u64) -> MemDisks {
    let mut d = MemDisks::default();
    d.add("data", mib * 2048, false);
    d
}

/// (name, disk, start, sectors) of every volume.
fn rows<D: Disks + ?Sized>(v: &Volumes, d: &mut D) -> Vec<(String, String, u64, u64)> {
    v.list(d)
        .0
        .into_iter()
        .map(|x| (x.name, x.disk, x.start, x.sectors))
        .collect()
}

fn row(name: &str, disk: &str, start: u64, sectors: u64) -> (String, String, u64, u64) {
    (name.into(), disk.into(), start, sectors)
}

/// The bytes of disk `i`.
fn bytes(d: &mut MemDisks, i: usize) -> &mut Vec<u8> {
    &mut d.disks[i].1
}

fn generation_of(copy: &[u8]) -> u64 {
    le64(copy, 16)
}

#[test]
fn create_list_remove_and_reboot() {
    let mut d = one_disk(64);
    let mut v = Volumes::new();
    let a = v.create(&mut d, "a", 8 * MIB, None, false).unwrap();
    assert_eq!(
        (a.disk, a.start, a.sectors, a.readonly),
        (0, 2048, 16384, false)
    );
    let b = v
        .create(&mut d, "b", 16 * MIB, Some("data"), false)
        .unwrap();
    assert_eq!(b.start, 2048 + 16384);
    assert_eq!(
        rows(&v, &mut d),
        [
            row("a", "data", 2048, 16384),
            row("b", "data", 18432, 32768)
        ]
    );
    v.remove(&mut d, "a", None).unwrap();
    // A reboot: a new agent reads the table from the disk.
    let mut v = Volumes::new();
    assert_eq!(rows(&v, &mut d), [row("b", "data", 18432, 32768)]);
    // First fit: the hole "a" left takes a smaller volume.
    let c = v.create(&mut d, "c", 4 * MIB, None, false).unwrap();
    assert_eq!(c.start, 2048);
    assert_eq!(Volumes::find(&mut d, "b").unwrap().start, 18432);
    let (_, disks) = v.list(&mut d);
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].table, TableState::Volumes);
    // The largest free extent: after b (ends at 51200) to the end of the disk.
    assert_eq!(disks[0].free_sectors, 64 * 2048 - 51200);
    assert_eq!(d.flushes, 4, "every update is flushed");
}

#[test]
fn the_on_disk_format() {
    let mut d = one_disk(16);
    let mut v = Volumes::new();
    v.create(&mut d, "first", 3 * MIB, None, false).unwrap();
    let disk = bytes(&mut d, 0).clone();
    let a = &disk[..COPY_BYTES];
    assert_eq!(&a[..8], b"XLHVVOLS");
    assert_eq!(le32(a, 8), 1);
    assert_eq!(le32(a, 12), 16);
    assert_eq!(generation_of(a), 1);
    assert_eq!(le32(a, 24), 0, "copy A");
    assert_eq!((le32(a, 28), le32(a, 32)), (64, 96));
    assert_eq!(le32(a, 36), copy_crc(a));
    assert_eq!(
        (le64(a, 40), le64(a, 48), le64(a, 56)),
        (2048, 2048, 16 * 2048)
    );
    assert_eq!(&a[512..517], b"first");
    assert!(a[517..576].iter().all(|b| *b == 0));
    assert_eq!((le64(a, 576), le64(a, 584), le32(a, 592)), (2048, 6144, 1));
    assert!(a[596..].iter().all(|b| *b == 0));
    // Copy B is still zero; the next update goes there, then back to A.
    assert!(disk[COPY_BYTES..2 * COPY_BYTES].iter().all(|b| *b == 0));
    v.create(&mut d, "second", MIB, None, false).unwrap();
    let disk = bytes(&mut d, 0).clone();
    assert_eq!(generation_of(&disk[..COPY_BYTES]), 1);
    assert_eq!(generation_of(&disk[COPY_BYTES..2 * COPY_BYTES]), 2);
    assert_eq!(le32(&disk[COPY_BYTES..], 24), 1, "copy B");
    v.remove(&mut d, "first", None).unwrap();
    let disk = bytes(&mut d, 0).clone();
    assert_eq!(generation_of(&disk[..COPY_BYTES]), 3);
    assert_eq!(&disk[512..518], b"second");
    // Nothing beyond the two copies was written but the table.
    assert!(disk[2 * COPY_BYTES..].iter().all(|b| *b == 0));
    // encode and decode agree.
    let t = Table {
        generation: 9,
        copy: 1,
        entries: vec![Entry {
            name: "x".into(),
            start: 4096,
            sectors: 1,
        }],
    };
    assert_eq!(
        decode(&encode(&t.entries, 9, 1, 8192), 1, 8192),
        Copy::Valid(t)
    );
    // A copy found at the other copy's place is not taken.
    assert!(matches!(
        decode(&encode(&[], 9, 1, 8192), 0, 8192),
        Copy::Bad { .. }
    ));
}

#[test]
fn sizes_are_exact_and_volumes_aligned() {
    let mut d = one_disk(8);
    let mut v = Volumes::new();
    // 1000 sectors; the next volume still starts on a MiB boundary.
    let a = v.create(&mut d, "odd", 512_000, None, false).unwrap();
    assert_eq!((a.start, a.sectors), (2048, 1000));
    let b = v.create(&mut d, "next", 512, None, false).unwrap();
    assert_eq!((b.start, b.sectors), (4096, 1));
    // The rest of the disk, exactly: 8 MiB less the first three.
    let c = v.create(&mut d, "rest", 5 * MIB, None, false).unwrap();
    assert_eq!((c.start, c.start + c.sectors), (6144, 8 * 2048));
    let e = v.create(&mut d, "more", 512, None, false).unwrap_err();
    assert_eq!(
        e,
        VolumeError::NoSpace {
            disk: None,
            want: 1,
            largest: 0
        }
    );
    assert_eq!(size_text(5 * MIB), "5M");
    assert_eq!(size_text(3 << 30), "3G");
    assert_eq!(size_text(1536 << 10), "1536K");
    assert_eq!(size_text(512), "512 bytes");
    assert_eq!(size_text(2 << 40), "2T");
}

#[test]
fn a_create_without_a_disk_takes_a_table_with_room_then_a_blank_disk() {
    let mut d = MemDisks::default();
    d.add("ro", 8 * 2048, true);
    d.add("small", 4 * 2048, false);
    d.add("big", 64 * 2048, false);
    let mut v = Volumes::new();
    // No table anywhere: the first writable blank disk with room.
    assert_eq!(v.create(&mut d, "a", MIB, None, false).unwrap().disk, 1);
    // "small" has a table and room: it comes first.
    assert_eq!(v.create(&mut d, "b", MIB, None, false).unwrap().disk, 1);
    // No room on "small" (4 MiB: table, a, b, 1 left): a blank disk with room.
    assert_eq!(v.create(&mut d, "c", 2 * MIB, None, false).unwrap().disk, 2);
    assert_eq!(v.create(&mut d, "d", MIB, None, false).unwrap().disk, 1);
    let (vols, disks) = v.list(&mut d);
    let on: Vec<(&str, &str)> = vols
        .iter()
        .map(|x| (x.name.as_str(), x.disk.as_str()))
        .collect();
    assert_eq!(
        on,
        [("a", "small"), ("b", "small"), ("d", "small"), ("c", "big")]
    );
    let states: Vec<TableState> = disks.iter().map(|x| x.table).collect();
    assert_eq!(
        states,
        [TableState::Blank, TableState::Volumes, TableState::Volumes]
    );
    assert!(disks[0].readonly);
    assert_eq!(disks[1].free_sectors, 0);
}

#[test]
fn every_error() {
    let mut v = Volumes::new();
    // No disks at all.
    let mut none = MemDisks::default();
    assert_eq!(
        v.create(&mut none, "a", MIB, None, false),
        Err(VolumeError::NoDisks)
    );
    assert_eq!(Volumes::find(&mut none, "a"), Err(VolumeError::NoDisks));
    assert_eq!(v.list(&mut none), (vec![], vec![]));

    let mut d = one_disk(16);
    v.create(&mut d, "a", MIB, None, false).unwrap();
    // Names and sizes.
    for bad in ["", "42", "a b", "-x", &"n".repeat(65)] {
        assert!(
            matches!(
                v.create(&mut d, bad, MIB, None, false),
                Err(VolumeError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        v.create(&mut d, "z", 0, None, false),
        Err(VolumeError::Invalid(ValidationError::SizeZero))
    );
    assert_eq!(
        v.create(&mut d, "z", 1000, None, false),
        Err(VolumeError::Invalid(ValidationError::SizeNotSectors(1000)))
    );
    assert_eq!(
        v.create(&mut d, "z", u64::MAX - 511, None, false),
        Err(VolumeError::Invalid(ValidationError::SizeTooLarge))
    );
    // Unknown disk, unknown volume.
    assert_eq!(
        v.create(&mut d, "z", MIB, Some("nope"), false),
        Err(VolumeError::UnknownDisk("nope".into()))
    );
    assert_eq!(
        v.remove(&mut d, "a", Some("nope")),
        Err(VolumeError::UnknownDisk("nope".into()))
    );
    assert_eq!(
        v.remove(&mut d, "zz", None),
        Err(VolumeError::UnknownVolume {
            name: "zz".into(),
            disk: None
        })
    );
    assert_eq!(
        Volumes::find(&mut d, "zz"),
        Err(VolumeError::UnknownVolume {
            name: "zz".into(),
            disk: None
        })
    );
    // Name taken.
    assert_eq!(
        v.create(&mut d, "a", MIB, None, false),
        Err(VolumeError::Exists {
            name: "a".into(),
            disk: "data".into()
        })
    );
    // A disk's name.
    assert_eq!(
        v.create(&mut d, "data", MIB, None, false),
        Err(VolumeError::DiskName("data".into()))
    );
    // Too big, on a named disk and on any.
    assert_eq!(
        v.create(&mut d, "big", 15 * MIB, Some("data"), false),
        Err(VolumeError::NoSpace {
            disk: Some("data".into()),
            want: 15 * 2048,
            largest: 14 * 2048
        })
    );
    assert!(matches!(
        v.create(&mut d, "big", 1 << 40, None, false),
        Err(VolumeError::NoSpace { disk: None, .. })
    ));
    // --force without --on.
    assert_eq!(
        v.create(&mut d, "f", MIB, None, true),
        Err(VolumeError::ForceNeedsDisk)
    );
    // In use.
    v.set_in_use("a", 3, true).unwrap();
    assert_eq!(
        v.remove(&mut d, "a", None),
        Err(VolumeError::InUse {
            name: "a".into(),
            users: vec![3]
        })
    );
    v.clear_in_use(3);
    v.remove(&mut d, "a", None).unwrap();
    // The device fails.
    d.fail = Some(DiskError::Io);
    assert_eq!(
        v.create(&mut d, "b", MIB, Some("data"), false),
        Err(VolumeError::Io {
            disk: "data".into(),
            error: DiskError::Io
        })
    );
    let (_, disks) = v.list(&mut d);
    assert_eq!(disks[0].table, TableState::Unreadable);
}

#[test]
fn a_full_table_is_refused() {
    let mut d = one_disk(80);
    let mut v = Volumes::new();
    for i in 0..MAX_VOLUMES {
        v.create(&mut d, &format!("v{i}"), 512, None, false)
            .unwrap();
    }
    assert_eq!(
        v.create(&mut d, "one-more", 512, Some("data"), false),
        Err(VolumeError::TableFull("data".into()))
    );
    // Without --on: no disk has room (the only one's table is full).
    assert!(matches!(
        v.create(&mut d, "one-more", 512, None, false),
        Err(VolumeError::NoSpace { disk: None, .. })
    ));
    let mut v = Volumes::new();
    assert_eq!(v.list(&mut d).0.len(), MAX_VOLUMES);
    v.remove(&mut d, "v7", None).unwrap();
    assert_eq!(
        v.create(&mut d, "one-more", 512, None, false)
            .unwrap()
            .start,
        8 * 2048
    );
}

#[test]
fn read_only_disks() {
    let mut d = MemDisks::default();
    d.add("rw", 16 * 2048, false);
    d.add("ro", 16 * 2048, true);
    let mut v = Volumes::new();
    v.create(&mut d, "a", MIB, Some("rw"), false).unwrap();
    // The read-only disk carries a copy of rw's table (another's image).
    let copy = d.disks[0].1.clone();
    d.disks[1].1 = copy;
    assert_eq!(
        v.create(&mut d, "b", MIB, Some("ro"), false),
        Err(VolumeError::ReadOnly("ro".into()))
    );
    assert_eq!(
        v.remove(&mut d, "a", Some("ro")),
        Err(VolumeError::ReadOnly("ro".into()))
    );
    // Two volumes named a: ambiguous until a disk is named.
    assert_eq!(
        Volumes::find(&mut d, "a"),
        Err(VolumeError::Ambiguous {
            name: "a".into(),
            disks: vec!["rw".into(), "ro".into()]
        })
    );
    assert!(matches!(
        v.remove(&mut d, "a", None),
        Err(VolumeError::Ambiguous { .. })
    ));
    v.remove(&mut d, "a", Some("rw")).unwrap();
    let found = Volumes::find(&mut d, "a").unwrap();
    assert_eq!((found.disk_name.as_str(), found.readonly), ("ro", true));
    // Only read-only disks: refused as such.
    let mut ro = MemDisks::default();
    ro.add("golden", 16 * 2048, true);
    assert_eq!(
        v.create(&mut ro, "x", MIB, None, false),
        Err(VolumeError::ReadOnly("golden".into()))
    );
}

#[test]
fn a_disk_with_data_is_not_formatted_without_force() {
    let mut d = one_disk(16);
    // Something in sector 100 (a file system's superblock, say).
    bytes(&mut d, 0)[100 * 512 + 7] = 0x53;
    let mut v = Volumes::new();
    assert_eq!(
        v.create(&mut d, "a", MIB, Some("data"), false),
        Err(VolumeError::HasData("data".into()))
    );
    assert_eq!(
        v.create(&mut d, "a", MIB, None, false),
        Err(VolumeError::HasData("data".into()))
    );
    assert_eq!(v.list(&mut d).1[0].table, TableState::Data);
    let before = bytes(&mut d, 0).clone();
    assert_eq!(d.flushes, 0);
    assert_eq!(*bytes(&mut d, 0), before, "nothing written");
    v.create(&mut d, "a", MIB, Some("data"), true).unwrap();
    assert_eq!(rows(&v, &mut d), [row("a", "data", 2048, 2048)]);
    // Data past the probed sectors does not count.
    let mut d = one_disk(16);
    bytes(&mut d, 0)[PROBE_BYTES] = 1;
    v.create(&mut d, "b", MIB, None, false).unwrap();
}

#[test]
fn a_damaged_table_is_refused_and_force_starts_a_new_one() {
    let mut d = one_disk(16);
    let mut v = Volumes::new();
    v.create(&mut d, "a", MIB, None, false).unwrap();
    v.create(&mut d, "b", MIB, None, false).unwrap();
    // Both copies lose a bit.
    bytes(&mut d, 0)[600] ^= 1;
    bytes(&mut d, 0)[COPY_BYTES + 600] ^= 1;
    let mut v = Volumes::new();
    assert!(v.list(&mut d).0.is_empty());
    assert_eq!(v.list(&mut d).1[0].table, TableState::Damaged);
    let e = v.create(&mut d, "c", MIB, Some("data"), false).unwrap_err();
    assert_eq!(
        e,
        VolumeError::Damaged {
            disk: "data".into(),
            why: "checksum mismatch".into()
        }
    );
    assert_eq!(ErrorReply::from(e).code, ErrorCode::DiskHasData);
    v.create(&mut d, "c", MIB, Some("data"), true).unwrap();
    assert_eq!(rows(&v, &mut d), [row("c", "data", 2048, 2048)]);
    // The next update goes to the other copy; should the first one then be
    // damaged, the newer is read all the same.
    v.create(&mut d, "d", MIB, None, false).unwrap();
    bytes(&mut d, 0)[600] ^= 0xff;
    assert_eq!(
        rows(&v, &mut d),
        [row("c", "data", 2048, 2048), row("d", "data", 4096, 2048)]
    );
}

#[test]
fn force_outranks_a_stale_copy_that_comes_back() {
    // A table made on a 64 MiB disk, then the image cut to 8 MiB: both copies
    // have good checksums but volumes beyond the end.
    let mut big = one_disk(64);
    let mut v = Volumes::new();
    v.create(&mut big, "far", 32 * MIB, None, false).unwrap();
    v.create(&mut big, "a", MIB, None, false).unwrap();
    let mut small = one_disk(8);
    let head = big.disks[0].1[..2 * COPY_BYTES].to_vec();
    small.disks[0].1[..2 * COPY_BYTES].copy_from_slice(&head);
    let info = small.list()[0].clone();
    assert!(matches!(
        Volumes::state(&mut small, 0, &info),
        Ok(DiskState::Damaged(_))
    ));
    v.create(&mut small, "new", MIB, Some("data"), true)
        .unwrap();
    // The image grows back: the forced table is newer than both old copies.
    let head = small.disks[0].1[..2 * COPY_BYTES].to_vec();
    big.disks[0].1[..2 * COPY_BYTES].copy_from_slice(&head);
    assert_eq!(rows(&v, &mut big), [row("new", "data", 2048, 2048)]);
}

#[test]
fn users_and_sharing() {
    let mut v = Volumes::new();
    v.set_in_use("ro-vol", 1, false).unwrap();
    v.set_in_use("ro-vol", 2, false).unwrap();
    assert_eq!(
        v.set_in_use("ro-vol", 3, true),
        Err(VolumeError::InUse {
            name: "ro-vol".into(),
            users: vec![1, 2]
        })
    );
    v.set_in_use("rw-vol", 1, true).unwrap();
    assert!(v.set_in_use("rw-vol", 2, false).is_err());
    assert!(v.set_in_use("rw-vol", 1, true).is_err(), "not twice either");
    assert_eq!(
        v.users("rw-vol"),
        [User {
            domid: 1,
            writable: true
        }]
    );
    v.release("ro-vol", 1);
    assert_eq!(
        v.users("ro-vol"),
        [User {
            domid: 2,
            writable: false
        }]
    );
    v.clear_in_use(1);
    assert!(v.users("rw-vol").is_empty());
    v.set_in_use("rw-vol", 5, true).unwrap();
    v.clear_in_use(2);
    assert!(v.users("ro-vol").is_empty());
    assert_eq!(v.users("nothing"), []);
    v.release("nothing", 1);
    // The list shows who uses what.
    let mut d = one_disk(8);
    v.create(&mut d, "rw-vol", MIB, None, false).unwrap();
    assert_eq!(v.list(&mut d).0[0].users, [5]);
    let e = v.remove(&mut d, "rw-vol", None).unwrap_err();
    assert_eq!(e.to_string(), "volume rw-vol is in use by domain 5");
    assert_eq!(ErrorReply::from(e).code, ErrorCode::VolumeInUse);
}

#[test]
fn a_disk_too_small_for_any_volume() {
    let mut d = one_disk(1);
    let mut v = Volumes::new();
    assert_eq!(
        v.create(&mut d, "a", 512, Some("data"), false),
        Err(VolumeError::NoSpace {
            disk: Some("data".into()),
            want: 1,
            largest: 0
        })
    );
    let mut tiny = MemDisks::default();
    tiny.add("tiny", 3, false);
    assert_eq!(v.list(&mut tiny).1[0].table, TableState::Blank);
    assert!(v.create(&mut tiny, "a", 512, None, false).is_err());
}

#[test]
fn errors_become_codes_and_messages() {
    let cases: Vec<(VolumeError, ErrorCode, &str)> = vec![
        (
            VolumeError::NoDisks,
            ErrorCode::UnknownDisk,
            "dom0 drives no disk",
        ),
        (
            VolumeError::UnknownDisk("x".into()),
            ErrorCode::UnknownDisk,
            "dom0 has no disk named x",
        ),
        (
            VolumeError::UnknownVolume {
                name: "v".into(),
                disk: Some("d".into()),
            },
            ErrorCode::UnknownVolume,
            "no volume named v on disk d",
        ),
        (
            VolumeError::Invalid(ValidationError::SizeZero),
            ErrorCode::BadConfig,
            "size: ",
        ),
        (VolumeError::ForceNeedsDisk, ErrorCode::BadConfig, "--force"),
        (
            VolumeError::Exists {
                name: "v".into(),
                disk: "d".into(),
            },
            ErrorCode::VolumeExists,
            "a volume named v exists already (on disk d)",
        ),
        (
            VolumeError::DiskName("d".into()),
            ErrorCode::VolumeExists,
            "d is a disk's name; a volume needs another",
        ),
        (
            VolumeError::Ambiguous {
                name: "v".into(),
                disks: vec!["a".into(), "b".into()],
            },
            ErrorCode::VolumeExists,
            "volumes named v are on several disks (a, b)",
        ),
        (
            VolumeError::ReadOnly("d".into()),
            ErrorCode::DiskReadOnly,
            "disk d is read-only",
        ),
        (
            VolumeError::NoSpace {
                disk: Some("d".into()),
                want: 2048,
                largest: 1024,
            },
            ErrorCode::NoSpace,
            "no room for 1M on disk d: its largest free extent is 512K",
        ),
        (
            VolumeError::TableFull("d".into()),
            ErrorCode::NoSpace,
            "the volume table of disk d is full (64 volumes)",
        ),
        (
            VolumeError::InUse {
                name: "v".into(),
                users: vec![1, 2],
            },
            ErrorCode::VolumeInUse,
            "volume v is in use by domains 1, 2",
        ),
        (
            VolumeError::HasData("d".into()),
            ErrorCode::DiskHasData,
            "disk d holds data and no volume table",
        ),
        (
            VolumeError::Io {
                disk: "d".into(),
                error: DiskError::Io,
            },
            ErrorCode::DiskIo,
            "disk d: the device failed the request",
        ),
    ];
    for (e, code, text) in cases {
        let r = ErrorReply::from(e);
        assert_eq!(r.code, code, "{}", r.message);
        assert!(r.message.starts_with(text), "{} / {text}", r.message);
    }
}

#[test]
fn serving_the_requests() {
    let mut v = Volumes::new();
    let none: Option<&mut MemDisks> = None;
    assert_eq!(
        v.serve(none, Request::VolumeList),
        Ok(Response::Volumes {
            volumes: vec![],
            disks: vec![]
        })
    );
    let none: Option<&mut MemDisks> = None;
    let e = v.serve(
        none,
        Request::VolumeRm {
            name: "a".into(),
            disk: None,
        },
    );
    assert_eq!(e.unwrap_err().code, ErrorCode::UnknownDisk);
    let mut d = one_disk(8);
    d.add("other", 8 * 2048, false);
    let create = Request::VolumeCreate {
        name: "a".into(),
        size: 2 * MIB,
        disk: Some("other".into()),
        force: false,
    };
    let Ok(Response::Volumes { volumes, disks }) = v.serve(Some(&mut d), create.clone()) else {
        panic!("no volumes answer");
    };
    assert_eq!(
        volumes,
        [VolumeInfo {
            name: "a".into(),
            disk: "other".into(),
            start: 2048,
            sectors: 4096,
            users: vec![]
        }]
    );
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].name, "other");
    assert_eq!(disks[0].free_sectors, 8 * 2048 - 6144);
    assert_eq!(
        v.serve(Some(&mut d), create).unwrap_err().code,
        ErrorCode::VolumeExists
    );
    let Ok(Response::Volumes { volumes, disks }) = v.serve(Some(&mut d), Request::VolumeList)
    else {
        panic!("no list");
    };
    assert_eq!((volumes.len(), disks.len()), (1, 2));
    assert_eq!(disks[0].table, TableState::Blank);
    assert_eq!(
        v.serve(
            Some(&mut d),
            Request::VolumeRm {
                name: "a".into(),
                disk: None
            }
        ),
        Ok(Response::Ok)
    );
    assert_eq!(
        v.serve(Some(&mut d), Request::List).unwrap_err().code,
        ErrorCode::BadRequest
    );
}

/// A disk that dies at its `crash_at`-th write: of that write, only the first
/// `tear` bytes land (none: a failed write; all: a write whose flush never
/// came), and every request from then on fails, until the "reboot" revives it.
#[derive(Debug)]
struct Crashy {
    inner: MemDisks,
    crash_at: usize,
    tear: usize,
    writes: usize,
    crashed: bool,
}

impl Disks for Crashy {
    fn list(&self) -> Vec<DiskInfo> {
        self.inner.list()
    }

    fn run(&mut self, disk: usize, reqs: &mut [DiskReq<'_>]) {
        for r in reqs.iter_mut() {
            if self.crashed {
                r.result = Err(DiskError::Io);
                continue;
            }
            if let DiskOp::Write(b) = &r.op {
                if self.writes == self.crash_at {
                    self.crashed = true;
                    r.result = Err(DiskError::Io);
                    if let Some((info, bytes)) = self.inner.disks.get_mut(disk)
                        && r.check(info).is_ok()
                    {
                        let at = usize::try_from(r.sector).unwrap() * SECTOR;
                        let n = self.tear.min(b.len());
                        bytes[at..at + n].copy_from_slice(&b[..n]);
                    }
                    continue;
                }
                self.writes += 1;
            }
            self.inner.run(disk, core::slice::from_mut(r));
        }
    }
}

/// Volumes by name (sectors), checked sound: aligned, inside the disk, no
/// overlaps.
fn sound(v: &Volumes, d: &mut Crashy) -> BTreeMap<String, u64> {
    let sectors = d.list()[0].sectors;
    let mut vols: Vec<VolumeInfo> = v.list(d).0;
    vols.sort_by_key(|x| x.start);
    for w in vols.windows(2) {
        assert!(w[0].start + w[0].sectors <= w[1].start, "{vols:?}");
    }
    for x in &vols {
        assert!(x.start >= ALIGN && x.start % ALIGN == 0 && x.start + x.sectors <= sectors);
    }
    vols.into_iter().map(|x| (x.name, x.sectors)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Random creates and removes with the disk dying at any write, torn
    /// anywhere: after a reboot the table is the last committed one, or the
    /// one being committed if its write landed whole; never anything else, and
    /// never overlapping volumes. And the disk takes updates again.
    #[test]
    fn a_crash_at_any_write_never_loses_a_committed_table(
        ops in pvec((0u8..6, 1u64..7, any::<bool>()), 1..24),
        crash_at in 0usize..24,
        tear in prop_oneof![Just(0usize), Just(COPY_BYTES), 0usize..COPY_BYTES],
    ) {
        let mut d = Crashy {
            inner: one_disk(24),
            crash_at,
            tear,
            writes: 0,
            crashed: false,
        };
        let mut v = Volumes::new();
        let mut committed: BTreeMap<String, u64> = BTreeMap::new();
        let mut attempted = None;
        for (n, mib, create) in ops {
            let name = format!("v{n}");
            let r = if create {
                v.create(&mut d, &name, mib * MIB, None, false).map(|_| ())
            } else {
                v.remove(&mut d, &name, None).map(|_| ())
            };
            let mut after = committed.clone();
            if create {
                after.insert(name.clone(), mib * 2048);
            } else {
                after.remove(&name);
            }
            match r {
                Ok(()) => {
                    committed = after;
                    prop_assert_eq!(&sound(&v, &mut d), &committed);
                }
                Err(VolumeError::Io { .. }) => {
                    attempted = Some(after);
                    break;
                }
                Err(e) => prop_assert!(
                    matches!(
                        e,
                        VolumeError::Exists { .. }
                            | VolumeError::UnknownVolume { .. }
                            | VolumeError::NoSpace { .. }
                    ),
                    "{:?}",
                    e
                ),
            }
        }
        // The reboot.
        d.crashed = false;
        d.crash_at = usize::MAX;
        let mut v = Volumes::new();
        let got = sound(&v, &mut d);
        match &attempted {
            Some(after) => prop_assert!(got == committed || got == *after, "{:?}", got),
            None => prop_assert_eq!(&got, &committed),
        }
        // Still usable: force restarts a table the crash left damaged before
        // any was committed, and keeps a valid one.
        let made = v.create(&mut d, "after", 512, Some("data"), true);
        if let Err(e) = &made {
            prop_assert!(matches!(e, VolumeError::NoSpace { .. } | VolumeError::TableFull(_)), "{:?}", e);
        }
        let mut want = got.clone();
        if made.is_ok() {
            want.insert("after".into(), 1);
        }
        prop_assert_eq!(sound(&Volumes::new(), &mut d), want);
    }

    /// Whatever a copy's bytes are, with the right magic and checksum, decoding
    /// never panics, and a table it accepts is sound.
    #[test]
    fn any_table_bytes_are_read_safely(
        raw in pvec((pvec(any::<u8>(), 0..8), any::<u64>(), any::<u64>(), 0u32..3), 0..6),
        small in any::<bool>(),
        generation in any::<u64>(),
        disk_mib in 1u64..64,
    ) {
        let disk_sectors = disk_mib * 2048;
        let mut b = encode(&[], generation, 0, disk_sectors);
        for (i, (name, start, sectors, flags)) in raw.iter().enumerate() {
            let at = HEADER_BYTES + i * ENTRY_BYTES;
            b[at..at + name.len()].copy_from_slice(name);
            // Small numbers, so that some entries are plausible.
            let (start, sectors) = if small {
                (start % 16 * 1024, sectors % 4096)
            } else {
                (*start, *sectors)
            };
            put64(&mut b, at + NAME_BYTES, start);
            put64(&mut b, at + NAME_BYTES + 8, sectors);
            put32(&mut b, at + NAME_BYTES + 16, *flags);
        }
        let crc = copy_crc(&b);
        put32(&mut b, CHECKSUM_AT, crc);
        if let Copy::Valid(t) = decode(&b, 0, disk_sectors) {
            for w in t.entries.windows(2) {
                prop_assert!(w[0].end() <= w[1].start);
                prop_assert!(w[0].name != w[1].name);
            }
            for e in &t.entries {
                prop_assert!(e.start >= ALIGN && e.start % ALIGN == 0 && e.end() <= disk_sectors);
                prop_assert!(validate_name(&e.name).is_ok());
            }
        }
    }

    /// Garbage at the start of a disk is never taken for a table, and
    /// nothing panics on it.
    #[test]
    fn garbage_disks_are_refused(
        junk in pvec(any::<u8>(), 1..4096),
        at in 0usize..(PROBE_BYTES - 4096),
    ) {
        let mut d = one_disk(4);
        bytes(&mut d, 0)[at..at + junk.len()].copy_from_slice(&junk);
        let blank = junk.iter().all(|b| *b == 0);
        let mut v = Volumes::new();
        let r = v.create(&mut d, "a", 512, Some("data"), false);
        if blank {
            prop_assert!(r.is_ok());
        } else {
            prop_assert!(matches!(r, Err(VolumeError::HasData(_) | VolumeError::Damaged { .. })), "{:?}", r);
        }
    }
}
