//! Permissions, watches, transactions, quotas and malformed messages.
mod common;
use common::*;
use xenstored::{Access, Error, Perm};

fn start(xs: &mut xenstored::Xenstored, dom: u32) -> u32 {
    let r = rpc(xs, dom, T::TransactionStart, 0, b"\0").0.unwrap();
    std::str::from_utf8(&r[..r.len() - 1])
        .unwrap()
        .parse()
        .unwrap()
}

fn end(xs: &mut xenstored::Xenstored, dom: u32, tx: u32, commit: bool) -> Result<Vec<u8>, Error> {
    rpc(
        xs,
        dom,
        T::TransactionEnd,
        tx,
        &z(if commit { "T" } else { "F" }),
    )
    .0
}

// ----- permissions -----------------------------------------------------------

#[test]
fn domus_are_confined_to_their_subtree() {
    let mut xs = setup();
    write(&mut xs, 1, 0, "secret", "s").unwrap();
    assert_eq!(
        read(&mut xs, 2, "/local/domain/1/secret"),
        Err(Error::Acces)
    );
    assert_eq!(
        write(&mut xs, 2, 0, "/local/domain/1/secret", "x"),
        Err(Error::Acces)
    );
    assert_eq!(
        write(&mut xs, 2, 0, "/local/domain/1/new", "x"),
        Err(Error::Acces)
    );
    assert_eq!(
        rpc(&mut xs, 2, T::Rm, 0, &z("/local/domain/1/secret")).0,
        Err(Error::Acces)
    );
    assert_eq!(
        rpc(&mut xs, 2, T::Directory, 0, &z("/local/domain/1")).0,
        Err(Error::Acces)
    );
    // A missing node under an unreadable parent does not reveal itself.
    assert_eq!(
        read(&mut xs, 2, "/local/domain/1/nothing"),
        Err(Error::Acces)
    );
    assert_eq!(read(&mut xs, 2, "/tool"), Err(Error::Acces));
    assert_eq!(write(&mut xs, 2, 0, "/evil", "x"), Err(Error::Acces));
    // dom0 sees and changes everything.
    assert_eq!(
        read(&mut xs, 0, "/local/domain/1/secret"),
        Ok(b"s".to_vec())
    );
    assert_eq!(write(&mut xs, 0, 0, "/local/domain/1/secret", "t"), ok());
    // The owner keeps full access to a node dom0 wrote.
    assert_eq!(read(&mut xs, 1, "secret"), Ok(b"t".to_vec()));
}

#[test]
fn acl_exceptions() {
    let mut xs = setup();
    write(&mut xs, 1, 0, "shared", "v").unwrap();
    let sp = zz(&["shared", "n1", "r2", "w3"]);
    assert_eq!(rpc(&mut xs, 1, T::SetPerms, 0, &sp).0, ok());
    assert_eq!(
        read(&mut xs, 2, "/local/domain/1/shared"),
        Ok(b"v".to_vec())
    );
    assert_eq!(
        write(&mut xs, 2, 0, "/local/domain/1/shared", "x"),
        Err(Error::Acces)
    );
    assert_eq!(write(&mut xs, 3, 0, "/local/domain/1/shared", "x"), ok());
    assert_eq!(
        read(&mut xs, 3, "/local/domain/1/shared"),
        Err(Error::Acces)
    );
    // A writer creating below a node it may write: the new node inherits
    // the parent's list with the creator as owner.
    assert_eq!(write(&mut xs, 3, 0, "/local/domain/1/shared/c", "x"), ok());
    assert_eq!(
        xs.get_perms("/local/domain/1/shared/c").unwrap(),
        vec![
            Perm::new(3, Access::None),
            Perm::new(2, Access::Read),
            Perm::new(3, Access::Write)
        ]
    );
    // dom0 creating keeps the parent's owner.
    xs.write("/local/domain/1/shared/d", b"").unwrap();
    assert_eq!(
        xs.get_perms("/local/domain/1/shared/d").unwrap()[0],
        Perm::new(1, Access::None)
    );
}

// ----- watches ---------------------------------------------------------------

#[test]
fn watch_fires_initially_then_for_node_and_children() {
    let mut xs = setup();
    let Rpc(r, ev0) = rpc(
        &mut xs,
        1,
        T::Watch,
        0,
        &zz(&["/local/domain/1/dev", "tok"]),
    );
    assert_eq!(r, ok());
    assert_eq!(
        ev0,
        vec![ev("/local/domain/1/dev", "tok")],
        "initial event after the ack"
    );
    write(&mut xs, 0, 0, "/local/domain/1/dev/vbd/0/state", "1").unwrap();
    assert_eq!(
        events(&mut xs, 1),
        vec![ev("/local/domain/1/dev/vbd/0/state", "tok")]
    );
    write(&mut xs, 0, 0, "/local/domain/1/dev", "").unwrap();
    assert_eq!(events(&mut xs, 1), vec![ev("/local/domain/1/dev", "tok")]);
    write(&mut xs, 0, 0, "/local/domain/1/device", "").unwrap();
    assert_eq!(
        events(&mut xs, 1),
        vec![],
        "a sibling with a common prefix is not a child"
    );
    // Removal: an event per removed descendant (exact) and the root.
    xs.write("/local/domain/1/dev/vbd/1", b"").unwrap();
    events(&mut xs, 1);
    rpc(
        &mut xs,
        1,
        T::Watch,
        0,
        &zz(&["/local/domain/1/dev/vbd/0/state", "deep"]),
    );
    events(&mut xs, 1);
    xs.rm("/local/domain/1/dev/vbd").unwrap();
    let mut got = events(&mut xs, 1);
    got.sort();
    assert_eq!(
        got,
        vec![
            ev("/local/domain/1/dev/vbd", "tok"),
            ev("/local/domain/1/dev/vbd/0/state", "deep"),
        ]
    );
}

#[test]
fn watch_on_parent_fires_for_created_child_and_watcher_gets_own_events_first() {
    let mut xs = setup();
    rpc(&mut xs, 1, T::Watch, 0, &zz(&["/local/domain/1", "home"]));
    let Rpc(r, evs) = rpc(
        &mut xs,
        1,
        T::Write,
        0,
        &[z("a/b/c"), b"v".to_vec()].concat(),
    );
    assert_eq!(r, ok());
    assert_eq!(evs, vec![ev("/local/domain/1/a/b/c", "home")]);
    // The C daemon queues the event before the reply.
    let hdr = hypercall_abi::io::xenstore::XsdSockmsg {
        type_: T::Mkdir as u32,
        req_id: 5,
        tx_id: 0,
        len: 2,
    };
    xs.request(1, &hdr, &z("q"));
    let out = drain(&mut xs, 1);
    assert!(out[0].is_event() && !out[1].is_event());
}

#[test]
fn relative_watches_report_relative_paths() {
    let mut xs = setup();
    let Rpc(_, e) = rpc(&mut xs, 2, T::Watch, 0, &zz(&["device", "rel"]));
    assert_eq!(e, vec![ev("device", "rel")]);
    xs.write("/local/domain/2/device/vif/0", b"").unwrap();
    assert_eq!(events(&mut xs, 2), vec![ev("device/vif/0", "rel")]);
    assert_eq!(
        rpc(&mut xs, 2, T::Unwatch, 0, &zz(&["device", "rel"])).0,
        ok()
    );
    assert_eq!(
        rpc(&mut xs, 2, T::Unwatch, 0, &zz(&["device", "rel"])).0,
        Err(Error::NoEnt)
    );
    xs.write("/local/domain/2/device/vif/1", b"").unwrap();
    assert_eq!(events(&mut xs, 2), vec![]);
}

#[test]
fn watches_never_cross_permission_boundaries() {
    let mut xs = setup();
    // Domain 2 watches the whole tree and domain 1's home.
    rpc(&mut xs, 2, T::Watch, 0, &zz(&["/", "all"]));
    rpc(&mut xs, 2, T::Watch, 0, &zz(&["/local/domain/1", "other"]));
    events(&mut xs, 2);
    write(&mut xs, 1, 0, "private", "x").unwrap();
    xs.write("/tool/secret", b"").unwrap();
    rpc(&mut xs, 1, T::Rm, 0, &z("private"));
    assert_eq!(events(&mut xs, 2), vec![], "no events for unreadable nodes");
    // Readable node: both watches fire.
    write(&mut xs, 1, 0, "public", "x").unwrap();
    rpc(&mut xs, 1, T::SetPerms, 0, &zz(&["public", "n1", "r2"]));
    let mut e = events(&mut xs, 2);
    e.sort();
    assert_eq!(
        e,
        vec![
            ev("/local/domain/1/public", "all"),
            ev("/local/domain/1/public", "other")
        ]
    );
    // Losing access by SET_PERMS still notifies (old permissions count).
    rpc(&mut xs, 1, T::SetPerms, 0, &zz(&["public", "n1"]));
    assert_eq!(events(&mut xs, 2).len(), 2);
    write(&mut xs, 1, 0, "public", "y").unwrap();
    assert_eq!(events(&mut xs, 2), vec![]);
}

#[test]
fn special_watches() {
    let mut xs = setup();
    let Rpc(_, e) = rpc(&mut xs, 0, T::Watch, 0, &zz(&["@introduceDomain", "i"]));
    assert_eq!(e, vec![ev("@introduceDomain", "i")]);
    rpc(&mut xs, 0, T::Watch, 0, &zz(&["@releaseDomain", "r"]));
    rpc(&mut xs, 1, T::Watch, 0, &zz(&["@releaseDomain", "r1"]));
    rpc(&mut xs, 2, T::Watch, 0, &zz(&["@releaseDomain", "r2"]));
    events(&mut xs, 0);
    events(&mut xs, 1);
    events(&mut xs, 2);
    xs.introduce_domain(7, 1, 1).unwrap();
    assert_eq!(events(&mut xs, 0), vec![ev("@introduceDomain", "i")]);
    // Only readers of the special node see it: dom0 grants domain 2.
    xs.set_perms(
        "@releaseDomain",
        &[Perm::new(0, Access::None), Perm::new(2, Access::Read)],
    )
    .unwrap();
    xs.release_domain(7).unwrap();
    assert_eq!(events(&mut xs, 0), vec![ev("@releaseDomain", "r")]);
    assert_eq!(events(&mut xs, 1), vec![]);
    assert_eq!(events(&mut xs, 2), vec![ev("@releaseDomain", "r2")]);
    // A domU may not change the special node's permissions; @-paths are
    // only for watches otherwise.
    assert_eq!(
        rpc(&mut xs, 2, T::SetPerms, 0, &zz(&["@releaseDomain", "r2"])).0,
        Err(Error::Acces)
    );
    assert_eq!(
        rpc(&mut xs, 0, T::SetPerms, 0, &zz(&["@other", "r2"])).0,
        Err(Error::NoEnt)
    );
    assert_eq!(read(&mut xs, 0, "@releaseDomain"), Err(Error::Inval));
}

#[test]
fn watch_errors() {
    let mut xs = setup();
    assert_eq!(rpc(&mut xs, 1, T::Watch, 0, &z("a")).0, Err(Error::Inval));
    assert_eq!(
        rpc(&mut xs, 1, T::Watch, 0, &zz(&["a", "t", "x"])).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 1, T::Watch, 0, &zz(&["/a/", "t"])).0,
        Err(Error::Inval)
    );
    assert_eq!(rpc(&mut xs, 1, T::Watch, 0, &zz(&["a", "t"])).0, ok());
    assert_eq!(
        rpc(&mut xs, 1, T::Watch, 0, &zz(&["a", "t"])).0,
        Err(Error::Exist)
    );
    assert_eq!(rpc(&mut xs, 1, T::Watch, 0, &zz(&["a", "u"])).0, ok());
    // A watch's tx_id is ignored (XS_FLAG_NOTID).
    assert_eq!(rpc(&mut xs, 1, T::Watch, 999, &zz(&["b", "u"])).0, ok());
}

// ----- transactions ----------------------------------------------------------

#[test]
fn transaction_isolation_and_commit() {
    let mut xs = setup();
    rpc(&mut xs, 0, T::Watch, 0, &zz(&["/local/domain/1", "w"]));
    events(&mut xs, 0);
    let tx = start(&mut xs, 1);
    assert_eq!(tx, 1, "ids start at 1");
    assert_eq!(write(&mut xs, 1, tx, "a", "in-tx"), ok());
    assert_eq!(
        rpc(&mut xs, 1, T::Read, tx, &z("a")).0,
        Ok(b"in-tx".to_vec())
    );
    assert_eq!(
        read(&mut xs, 1, "a"),
        Err(Error::NoEnt),
        "invisible outside"
    );
    assert_eq!(events(&mut xs, 0), vec![], "no events before commit");
    assert_eq!(end(&mut xs, 1, tx, true), ok());
    assert_eq!(read(&mut xs, 1, "a"), Ok(b"in-tx".to_vec()));
    assert_eq!(events(&mut xs, 0), vec![ev("/local/domain/1/a", "w")]);
    assert_eq!(end(&mut xs, 1, tx, true), Err(Error::NoEnt), "ended");
}

#[test]
fn transaction_abort() {
    let mut xs = setup();
    let tx = start(&mut xs, 1);
    write(&mut xs, 1, tx, "a", "x").unwrap();
    rpc(&mut xs, 1, T::Rm, tx, &z("/local/domain/1"));
    assert_eq!(end(&mut xs, 1, tx, false), ok());
    assert_eq!(read(&mut xs, 1, "a"), Err(Error::NoEnt));
    assert_eq!(read(&mut xs, 1, "/local/domain/1"), Ok(vec![]));
}

#[test]
fn conflicts_answer_eagain() {
    let mut xs = setup();
    write(&mut xs, 1, 0, "a", "0").unwrap();
    // Read in tx, concurrent write outside: conflict.
    let tx = start(&mut xs, 1);
    rpc(&mut xs, 1, T::Read, tx, &z("a")).0.unwrap();
    write(&mut xs, 1, tx, "b", "1").unwrap();
    xs.write("/local/domain/1/a", b"changed").unwrap();
    assert_eq!(end(&mut xs, 1, tx, true), Err(Error::Again));
    assert_eq!(read(&mut xs, 1, "b"), Err(Error::NoEnt), "nothing applied");
    // Read of a missing node that appears meanwhile: conflict.
    let tx = start(&mut xs, 1);
    assert_eq!(rpc(&mut xs, 1, T::Read, tx, &z("c")).0, Err(Error::NoEnt));
    xs.write("/local/domain/1/c", b"").unwrap();
    assert_eq!(end(&mut xs, 1, tx, true), Err(Error::Again));
    // Untouched nodes changing does not conflict.
    let tx = start(&mut xs, 1);
    rpc(&mut xs, 1, T::Read, tx, &z("a")).0.unwrap();
    xs.write("/unrelated", b"").unwrap();
    assert_eq!(end(&mut xs, 1, tx, true), ok());
    // Two transactions: the second to commit loses.
    let t1 = start(&mut xs, 1);
    let t2 = start(&mut xs, 1);
    write(&mut xs, 1, t1, "a", "1").unwrap();
    write(&mut xs, 1, t2, "a", "2").unwrap();
    assert_eq!(end(&mut xs, 1, t1, true), ok());
    assert_eq!(end(&mut xs, 1, t2, true), Err(Error::Again));
    assert_eq!(read(&mut xs, 1, "a"), Ok(b"1".to_vec()));
}

#[test]
fn transaction_misuse() {
    let mut xs = setup();
    let tx = start(&mut xs, 1);
    assert_eq!(
        rpc(&mut xs, 1, T::TransactionStart, tx, b"\0").0,
        Err(Error::Busy),
        "no nesting"
    );
    assert_eq!(
        rpc(&mut xs, 1, T::TransactionEnd, tx, &z("X")).0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 1, T::TransactionEnd, tx, b"T").0,
        Err(Error::Inval)
    );
    assert_eq!(
        rpc(&mut xs, 1, T::TransactionEnd, 0, &z("T")).0,
        Err(Error::NoEnt)
    );
    assert_eq!(read(&mut xs, 1, "x").map(|_| ()), Err(Error::NoEnt));
    assert_eq!(
        rpc(&mut xs, 1, T::Read, 4242, &z("x")).0,
        Err(Error::NoEnt),
        "unknown tx id"
    );
    // Another domain cannot use domain 1's transaction id.
    assert_eq!(rpc(&mut xs, 2, T::Read, tx, &z("x")).0, Err(Error::NoEnt));
    // Several transactions in flight, interleaved with plain requests (on
    // existing nodes: creating a child changes the parent, a conflict).
    for p in ["p", "q", "r"] {
        write(&mut xs, 1, 0, p, "0").unwrap();
    }
    let t2 = start(&mut xs, 1);
    write(&mut xs, 1, tx, "p", "1").unwrap();
    write(&mut xs, 1, t2, "q", "2").unwrap();
    write(&mut xs, 1, 0, "r", "3").unwrap();
    assert_eq!(end(&mut xs, 1, t2, true), ok());
    assert_eq!(end(&mut xs, 1, tx, true), ok());
    for (p, v) in [("p", "1"), ("q", "2"), ("r", "3")] {
        assert_eq!(read(&mut xs, 1, p), Ok(v.as_bytes().to_vec()));
    }
}

// ----- quotas ----------------------------------------------------------------

#[test]
fn node_quota() {
    let mut xs = setup();
    // Domain 1 owns its home; 999 more fit (spread over directories: a
    // child list counts towards its parent's size quota).
    for i in 0..999 {
        assert_eq!(
            write(&mut xs, 1, 0, &format!("d{}/n{i}", i / 40), ""),
            ok(),
            "{i}"
        );
        if xs.domain_info(1).unwrap().nodes == 1000 {
            break;
        }
    }
    assert_eq!(xs.domain_info(1).unwrap().nodes, 1000);
    assert_eq!(write(&mut xs, 1, 0, "one-more", ""), Err(Error::NoSpc));
    assert_eq!(write(&mut xs, 1, 0, "d0/n1", "updates still work"), ok());
    // Others keep working; dom0 is exempt.
    assert_eq!(write(&mut xs, 2, 0, "fine", ""), ok());
    for i in 0..1100 {
        xs.write(&format!("/dom0/n{i}"), b"").unwrap();
    }
    // Creating inside a transaction is checked on commit too.
    rpc(&mut xs, 1, T::Rm, 0, &z("d0/n0"));
    let tx = start(&mut xs, 1);
    write(&mut xs, 1, tx, "t1", "").unwrap();
    xs.set_perms("/local/domain/1/d0/n1", &[Perm::new(1, Access::None)])
        .unwrap();
    xs.write("/dom0/x", b"").unwrap();
    assert_eq!(end(&mut xs, 1, tx, true), ok());
    assert_eq!(xs.domain_info(1).unwrap().nodes, 1000);
}

#[test]
fn size_perms_watch_and_transaction_quotas() {
    let mut xs = setup();
    // Node record: 24 + 8 per perm + value: 2015 bytes of value fit, 2016 not.
    assert_eq!(write(&mut xs, 1, 0, "v", &"x".repeat(2015)), ok());
    assert_eq!(
        write(&mut xs, 1, 0, "v", &"x".repeat(2016)),
        Err(Error::NoSpc)
    );
    xs.write("/local/domain/1/big", &[b'x'; 4000]).unwrap();
    // Permissions: 5 entries.
    write(&mut xs, 1, 0, "p", "").unwrap();
    let mut p = vec!["p", "n1", "r2", "r3", "r4", "r5"];
    assert_eq!(rpc(&mut xs, 1, T::SetPerms, 0, &zz(&p)).0, ok());
    p.push("r6");
    assert_eq!(
        rpc(&mut xs, 1, T::SetPerms, 0, &zz(&p)).0,
        Err(Error::NoSpc)
    );
    // Watches: as 4.17, "more than 128 already" refuses (129 fit).
    for i in 0..129 {
        assert_eq!(
            rpc(&mut xs, 1, T::Watch, 0, &zz(&["w", &i.to_string()])).0,
            ok(),
            "{i}"
        );
    }
    assert_eq!(
        rpc(&mut xs, 1, T::Watch, 0, &zz(&["w", "x"])).0,
        Err(Error::TooBig)
    );
    for i in 0..200 {
        assert_eq!(
            rpc(&mut xs, 0, T::Watch, 0, &zz(&["/w", &i.to_string()])).0,
            ok()
        );
    }
    // Transactions: as 4.17, "more than 10 open" refuses (11 fit).
    for _ in 0..11 {
        start(&mut xs, 2);
    }
    assert_eq!(
        rpc(&mut xs, 2, T::TransactionStart, 0, b"\0").0,
        Err(Error::NoSpc)
    );
    assert!(
        rpc(&mut xs, 3, T::TransactionStart, 0, b"\0").0.is_ok(),
        "others unaffected"
    );
    // Nodes touched per transaction: 1024, then ENOSPC and a failed commit.
    let tx = start(&mut xs, 3);
    let mut first_err = None;
    for i in 0..1100 {
        if let Err(e) = rpc(&mut xs, 3, T::Read, tx, &z(&format!("r{i}"))).0 {
            if e != Error::NoEnt {
                first_err = Some((i, e));
                break;
            }
        }
    }
    assert_eq!(first_err.map(|x| x.1), Some(Error::NoSpc));
    assert_eq!(end(&mut xs, 3, tx, true), Err(Error::NoMem));
}

// ----- malformed ---------------------------------------------------------------

#[test]
fn malformed_requests() {
    let mut xs = setup();
    let raw = |xs: &mut xenstored::Xenstored, ty: u32, p: &[u8]| {
        let hdr = hypercall_abi::io::xenstore::XsdSockmsg {
            type_: ty,
            req_id: 1,
            tx_id: 0,
            len: u32::try_from(p.len()).unwrap(),
        };
        xs.request(1, &hdr, p);
        let m = drain(xs, 1).pop().unwrap();
        (m.hdr.type_, m.payload)
    };
    // Unknown types, and types only xenstored sends: ENOSYS.
    for ty in [20, 23, 999, 0xFFFF, T::WatchEvent as u32, T::Error as u32] {
        assert_eq!(
            raw(&mut xs, ty, b"x\0"),
            (T::Error as u32, z("ENOSYS")),
            "{ty}"
        );
    }
    // Missing NULs, extra strings.
    assert_eq!(
        raw(&mut xs, T::Read as u32, b"a"),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::Read as u32, b"a\0b\0"),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::Read as u32, b""),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::Write as u32, b"novalue"),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::Mkdir as u32, b"\0"),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::Rm as u32, b"\xff\0"),
        (T::Error as u32, z("EINVAL"))
    );
    assert_eq!(
        raw(&mut xs, T::GetDomainPath as u32, b"1"),
        (T::Error as u32, z("EINVAL"))
    );
    // Still serving.
    assert_eq!(write(&mut xs, 1, 0, "ok", "1"), ok());
}
