//! Every wire operation and its errors.
mod common;
use common::*;
use xenstored::{Access, Error, Perm, Xenstored};

#[test]
fn read_write_mkdir_rm_directory() {
    let mut xs = setup();
    assert_eq!(write(&mut xs, 1, 0, "data/a/b", "hello"), ok());
    assert_eq!(read(&mut xs, 1, "data/a/b"), Ok(b"hello".to_vec()));
    assert_eq!(
        read(&mut xs, 1, "/local/domain/1/data/a/b"),
        Ok(b"hello".to_vec())
    );
    assert_eq!(
        read(&mut xs, 1, "data/a"),
        Ok(vec![]),
        "created parents are empty"
    );
    assert_eq!(rpc(&mut xs, 1, T::Directory, 0, &z("data")).0, Ok(z("a")));
    assert_eq!(rpc(&mut xs, 1, T::Mkdir, 0, &z("data/c")).0, ok());
    assert_eq!(
        rpc(&mut xs, 1, T::Mkdir, 0, &z("data/c")).0,
        ok(),
        "mkdir of existing is fine"
    );
    assert_eq!(
        rpc(&mut xs, 1, T::Directory, 0, &z("data")).0,
        Ok(zz(&["a", "c"]))
    );
    assert_eq!(rpc(&mut xs, 1, T::Directory, 0, &z("data/c")).0, Ok(vec![]));
    // Values are binary, not NUL-terminated; NULs inside are kept.
    let mut p = z("bin");
    p.extend_from_slice(b"x\0y");
    assert_eq!(rpc(&mut xs, 1, T::Write, 0, &p).0, ok());
    assert_eq!(read(&mut xs, 1, "bin"), Ok(b"x\0y".to_vec()));
    assert_eq!(rpc(&mut xs, 1, T::Rm, 0, &z("data/a")).0, ok());
    assert_eq!(read(&mut xs, 1, "data/a/b"), Err(Error::NoEnt));
    assert_eq!(
        rpc(&mut xs, 1, T::Rm, 0, &z("data/a")).0,
        ok(),
        "rm of missing node with parent"
    );
    assert_eq!(rpc(&mut xs, 1, T::Rm, 0, &z("nope/x")).0, Err(Error::NoEnt));
    assert_eq!(rpc(&mut xs, 0, T::Rm, 0, &z("/")).0, Err(Error::Inval));
    assert_eq!(read(&mut xs, 1, "missing"), Err(Error::NoEnt));
}

#[test]
fn initial_tree() {
    let mut xs = Xenstored::new();
    assert_eq!(xs.directory("/").unwrap(), vec!["tool"]);
    assert_eq!(xs.directory("/tool").unwrap(), vec!["xenstored"]);
    assert_eq!(xs.get_perms("/").unwrap(), vec![Perm::new(0, Access::None)]);
}

#[test]
fn invalid_paths() {
    let mut xs = setup();
    for p in ["/a/", "/a//b", "/a b", "", "/a.b", "@foo", "/a\u{e9}"] {
        assert_eq!(read(&mut xs, 0, p), Err(Error::Inval), "{p:?}");
    }
    // Relative paths resolve below the caller's home.
    assert_eq!(write(&mut xs, 0, 0, "x", "0"), ok());
    assert_eq!(xs.read("/local/domain/0/x"), Ok(b"0".to_vec()));
    // 3072-byte absolute limit.
    let long = format!("/{}", "a".repeat(3071));
    assert_eq!(write(&mut xs, 0, 0, &long, ""), ok());
    let longer = format!("/{}", "a".repeat(3072));
    assert_eq!(write(&mut xs, 0, 0, &longer, ""), Err(Error::Inval));
    // 2048 below a domain's home for domUs.
    let rel = "b".repeat(2048);
    assert_eq!(
        write(&mut xs, 1, 0, &rel, ""),
        Err(Error::NoSpc),
        "fits the path quota, not the size quota"
    );
    let rel = "b".repeat(2049);
    assert_eq!(write(&mut xs, 1, 0, &rel, ""), Err(Error::Inval));
}

#[test]
fn get_and_set_perms() {
    let mut xs = setup();
    assert_eq!(rpc(&mut xs, 1, T::GetPerms, 0, &z("")).0, Err(Error::Inval));
    assert_eq!(
        rpc(&mut xs, 1, T::GetPerms, 0, &z("/local/domain/1")).0,
        Ok(z("n1"))
    );
    write(&mut xs, 1, 0, "x", "1").unwrap();
    assert_eq!(
        rpc(&mut xs, 1, T::GetPerms, 0, &z("x")).0,
        Ok(z("n1")),
        "inherited, owned by creator"
    );
    let sp = zz(&["x", "n1", "r2", "b3"]);
    assert_eq!(rpc(&mut xs, 1, T::SetPerms, 0, &sp).0, ok());
    assert_eq!(
        rpc(&mut xs, 1, T::GetPerms, 0, &z("x")).0,
        Ok(zz(&["n1", "r2", "b3"]))
    );
    // Errors: too few strings, bad perm, owner change by a domU.
    assert_eq!(
        rpc(&mut xs, 1, T::SetPerms, 0, &z("x")).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 1, T::SetPerms, 0, &zz(&["x", "q1"])).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 1, T::SetPerms, 0, &zz(&["x", "n2"])).0,
        Err(Error::Perm)
    );
    // dom0 may change the owner.
    assert_eq!(
        rpc(
            &mut xs,
            0,
            T::SetPerms,
            0,
            &zz(&["/local/domain/1/x", "r2"])
        )
        .0,
        ok()
    );
    // Domain 3 has "b" but is not the owner: no SET_PERMS.
    assert_eq!(
        rpc(
            &mut xs,
            3,
            T::SetPerms,
            0,
            &zz(&["/local/domain/1/x", "n3"])
        )
        .0,
        Err(Error::Acces)
    );
}

#[test]
fn directory_part() {
    let mut xs = setup();
    for i in 0..300 {
        xs.write(&format!("/big/child-with-a-longish-name-{i:04}"), b"")
            .unwrap();
    }
    // The whole list is too long for one DIRECTORY reply.
    assert_eq!(
        rpc(&mut xs, 0, T::Directory, 0, &z("/big")).0,
        Err(Error::TooBig)
    );
    let generation = xs.node("/big").unwrap().generation.to_string();
    let mut off = 0usize;
    let mut names = Vec::new();
    loop {
        let r = rpc(
            &mut xs,
            0,
            T::DirectoryPart,
            0,
            &zz(&["/big", &off.to_string()]),
        )
        .0
        .unwrap();
        assert!(r.len() <= 4096);
        let parts: Vec<&[u8]> = r.split(|&c| c == 0).collect();
        assert_eq!(parts[0], generation.as_bytes());
        let body = &r[generation.len() + 1..];
        if body.ends_with(b"\0\0") || body == b"\0" {
            let body = &body[..body.len() - 1];
            names.extend(
                body.split(|&c| c == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.to_vec()),
            );
            break;
        }
        off += body.len();
        names.extend(
            body.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| s.to_vec()),
        );
    }
    assert_eq!(names.len(), 300);
    // Past the end: generation and an empty string.
    let r = rpc(&mut xs, 0, T::DirectoryPart, 0, &zz(&["/big", "99999"]))
        .0
        .unwrap();
    assert_eq!(r, [z(&generation), vec![0]].concat());
    assert_eq!(
        rpc(&mut xs, 0, T::DirectoryPart, 0, &z("/big")).0,
        Err(Error::Inval)
    );
}

#[test]
fn domains() {
    let mut xs = setup();
    assert_eq!(
        rpc(&mut xs, 0, T::GetDomainPath, 0, &z("7")).0,
        Ok(z("/local/domain/7"))
    );
    assert_eq!(
        rpc(&mut xs, 1, T::GetDomainPath, 0, &z("1")).0,
        Ok(z("/local/domain/1"))
    );
    assert_eq!(
        rpc(&mut xs, 0, T::GetDomainPath, 0, b"7").0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 0, T::IsDomainIntroduced, 0, &z("2")).0,
        Ok(z("T"))
    );
    assert_eq!(
        rpc(&mut xs, 0, T::IsDomainIntroduced, 0, &z("9")).0,
        Ok(z("F"))
    );
    assert_eq!(
        rpc(&mut xs, 0, T::IsDomainIntroduced, 0, &z("32752")).0,
        Ok(z("T")),
        "DOMID_SELF"
    );
    assert_eq!(
        rpc(&mut xs, 0, T::Introduce, 0, &zz(&["9", "4660", "5"])).0,
        ok()
    );
    assert!(xs.is_introduced(9));
    assert_eq!(xs.domain_info(9).unwrap().mfn, 4660);
    assert_eq!(
        rpc(&mut xs, 0, T::Introduce, 0, &zz(&["9", "1", "0"])).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 0, T::Introduce, 0, &zz(&["9", "1"])).0,
        Err(Error::Inval)
    );
    assert_eq!(rpc(&mut xs, 0, T::Resume, 0, &z("9")).0, ok());
    assert_eq!(rpc(&mut xs, 0, T::Resume, 0, &z("0")).0, Err(Error::Inval));
    assert_eq!(rpc(&mut xs, 0, T::Resume, 0, &z("8")).0, Err(Error::NoEnt));
    assert_eq!(rpc(&mut xs, 0, T::SetTarget, 0, &zz(&["9", "1"])).0, ok());
    assert_eq!(
        rpc(&mut xs, 0, T::SetTarget, 0, &zz(&["9", "8"])).0,
        Err(Error::NoEnt)
    );
    // Domain 9 now acts for domain 1: it owns domain 1's nodes.
    assert_eq!(write(&mut xs, 9, 0, "/local/domain/1/dm", "x"), ok());
    assert_eq!(rpc(&mut xs, 0, T::Release, 0, &z("9")).0, ok());
    assert!(!xs.is_introduced(9));
    assert_eq!(rpc(&mut xs, 0, T::Release, 0, &z("9")).0, Err(Error::NoEnt));
    assert_eq!(rpc(&mut xs, 0, T::Release, 0, &z("0")).0, Err(Error::Inval));
}

#[test]
fn privileged_only_ops_refused_for_domus() {
    let mut xs = setup();
    for (ty, p) in [
        (T::Introduce, zz(&["9", "1", "1"])),
        (T::Release, z("2")),
        (T::SetTarget, zz(&["1", "2"])),
        (T::Resume, z("2")),
        (T::IsDomainIntroduced, z("2")),
        (T::Control, z("help")),
    ] {
        assert_eq!(rpc(&mut xs, 1, ty, 0, &p).0, Err(Error::Acces), "{ty:?}");
    }
    assert!(xs.is_introduced(2));
}

#[test]
fn release_removes_owned_nodes_and_fires() {
    let mut xs = setup();
    write(&mut xs, 1, 0, "a", "1").unwrap();
    xs.write("/shared", b"").unwrap();
    xs.set_perms(
        "/shared",
        &[Perm::new(0, Access::None), Perm::new(1, Access::Read)],
    )
    .unwrap();
    rpc(&mut xs, 0, T::Watch, 0, &zz(&["@releaseDomain", "rel"]));
    rpc(&mut xs, 0, T::Watch, 0, &zz(&["/local/domain/1", "home"]));
    xs.release_domain(1).unwrap();
    assert_eq!(xs.read("/local/domain/1"), Err(Error::NoEnt));
    assert_eq!(
        xs.get_perms("/shared").unwrap(),
        vec![Perm::new(0, Access::None)]
    );
    let ev = events(&mut xs, 0);
    assert!(ev.contains(&ev_("/local/domain/1", "home")));
    assert_eq!(ev.last(), Some(&ev_("@releaseDomain", "rel")));
}

fn ev_(p: &str, t: &str) -> (String, String) {
    ev(p, t)
}

#[test]
fn control() {
    let mut xs = setup();
    assert_eq!(rpc(&mut xs, 0, T::Control, 0, &z("check")).0, ok());
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["print", "hello"])).0,
        ok()
    );
    assert_eq!(
        xs.drain_log().collect::<Vec<_>>(),
        vec!["hello".to_string()]
    );
    assert_eq!(rpc(&mut xs, 0, T::Control, 0, &zz(&["log", "off"])).0, ok());
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["log", "maybe"])).0,
        Err(Error::Inval)
    );
    let q = rpc(&mut xs, 0, T::Control, 0, &z("quota")).0.unwrap();
    let q = String::from_utf8(q).unwrap();
    assert!(q.starts_with("Quota settings:\n"), "{q}");
    assert!(q.contains("nodes            :     1000"), "{q}");
    let d = String::from_utf8(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["quota", "1"]))
            .0
            .unwrap(),
    )
    .unwrap();
    assert!(
        d.starts_with("Domain 1:\nnodes           :        1\n"),
        "{d}"
    );
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["quota", "99"])).0,
        Err(Error::NoEnt)
    );
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["quota", "watches", "5"])).0,
        ok()
    );
    assert_eq!(xs.quotas().nb_watch_per_domain, 5);
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["quota", "watches", "0"])).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &zz(&["quota", "bogus", "3"])).0,
        Err(Error::Inval)
    );
    assert!(rpc(&mut xs, 0, T::Control, 0, &z("help")).0.is_ok());
    assert_eq!(
        rpc(&mut xs, 0, T::Control, 0, &z("live-update")).0,
        Err(Error::Inval)
    );
    assert_eq!(rpc(&mut xs, 0, T::Control, 0, b"").0, Err(Error::Inval));
}

#[test]
fn reset_watches() {
    let mut xs = setup();
    rpc(&mut xs, 1, T::Watch, 0, &zz(&["a", "t"]));
    let tx = rpc(&mut xs, 1, T::TransactionStart, 0, b"\0").0.unwrap();
    let tx: u32 = std::str::from_utf8(&tx[..tx.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(rpc(&mut xs, 1, T::ResetWatches, 0, b"\0").0, ok());
    assert_eq!(xs.domain_info(1).unwrap().watches, 0);
    assert_eq!(
        write(&mut xs, 1, tx, "a", "1"),
        Err(Error::NoEnt),
        "transactions dropped too"
    );
}
