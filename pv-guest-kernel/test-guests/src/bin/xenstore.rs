//! `xenstore`: a domU's view of XenStore, served by dom0's xenstored. The
//! command line picks what it checks (`mode=`); each mode prints exactly one
//! result line, `xenstore: PASS ...` or `xenstore: FAIL ...`:
//!
//! * `self` (default): reads its own `name` and `domid` (paths relative to
//!   its home, `/local/domain/N`) and prints them;
//! * `peer` with `peer=N`: reading `/local/domain/N/name` must fail `EACCES`,
//!   and so must writing `/local/domain/N/data/x`;
//! * `watch`: watches `data/poke` in its home and waits (`secs=`, default 60)
//!   until dom0 writes `go` there;
//! * `txn` with `count=` (default 1000): that many transactions, each reading
//!   `data/counter`, writing it plus one and two more nodes, retried on
//!   `EAGAIN`; the final value must be `count`;
//! * `flood`: writes `data/flood/N` until xenstored refuses (its node quota),
//!   then checks that a read of its own name still works.
//!
//! The domain stays up for `linger=` seconds afterwards (default 0) so that a
//! test can inspect it.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicBool, Ordering};

use pv_runtime::xenbus::{self, XsError};
use pv_runtime::{StartInfo, println, sched, time};
use pv_test_guests::{arg, arg_u64, fail};

const NAME: &str = "xenstore";

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

fn finish(line: core::fmt::Arguments<'_>) -> ! {
    println!("{NAME}: PASS {line}");
    let linger = arg_u64(NAME, "linger", 0);
    if linger > 0 {
        let _ = time::sleep(linger * 1_000_000_000);
    }
    sched::poweroff()
}

fn ok<T>(what: &str, r: Result<T, XsError>) -> T {
    r.unwrap_or_else(|e| fail(NAME, format_args!("{what}: {e:?}")))
}

static POKED: AtomicBool = AtomicBool::new(false);

fn main(_si: &'static StartInfo) {
    ok("connect", xenbus::connect());
    let mode = arg("mode").unwrap_or(b"self");
    match mode {
        b"self" => {
            let name = ok("read name", xenbus::read("name"));
            let domid = ok("read domid", xenbus::read("domid"));
            finish(format_args!("name={} domid={}", text(&name), text(&domid)));
        }
        b"peer" => {
            let peer = arg_u64(NAME, "peer", 1);
            let r = xenbus::read(&format!("/local/domain/{peer}/name"));
            let w = xenbus::write(&format!("/local/domain/{peer}/data/x"), "1");
            match (&r, &w) {
                (Err(XsError::Errno(a)), Err(XsError::Errno(b)))
                    if a.get() == 13 && b.get() == 13 =>
                {
                    finish(format_args!("peer={peer} read=EACCES write=EACCES"))
                }
                _ => fail(NAME, format_args!("peer {peer}: read {r:?}, write {w:?}")),
            }
        }
        b"watch" => {
            let cb: xenbus::WatchFn = alloc::sync::Arc::new(|_ev: &xenbus::WatchEvent| {
                if xenbus::read("data/poke").is_ok_and(|v| v == b"go") {
                    POKED.store(true, Ordering::Release);
                }
            });
            ok("watch", xenbus::watch("data/poke", "poke", cb));
            println!("{NAME}: watching data/poke");
            let deadline = time::system_time_ns() + arg_u64(NAME, "secs", 60) * 1_000_000_000;
            while !POKED.load(Ordering::Acquire) {
                let now = time::system_time_ns();
                if now >= deadline {
                    fail(NAME, format_args!("no watch event for data/poke = go"));
                }
                ok(
                    "wait",
                    xenbus::wait_for_events((deadline - now).min(100_000_000)),
                );
            }
            finish(format_args!("watch fired data/poke=go"));
        }
        b"txn" => {
            let count = arg_u64(NAME, "count", 1000);
            ok("init", xenbus::write("data/counter", "0"));
            let mut retries = 0u64;
            for i in 0..count {
                let r = xenbus::transaction(|t| {
                    let v = t.read("data/counter")?;
                    let n: u64 = text(&v).parse().unwrap_or(u64::MAX);
                    t.write("data/counter", format!("{}", n + 1))?;
                    t.write("data/a", format!("{i}"))?;
                    t.write("data/b", format!("{i}"))?;
                    Ok(())
                });
                match r {
                    Ok(()) => {}
                    Err(XsError::Errno(e)) if e.get() == 11 => retries += 1,
                    Err(e) => fail(NAME, format_args!("transaction {i}: {e:?}")),
                }
            }
            let v = text(&ok("read counter", xenbus::read("data/counter")));
            if v != format!("{count}") {
                fail(NAME, format_args!("counter={v}, expected {count}"));
            }
            finish(format_args!("txns={count} counter={v} retries={retries}"));
        }
        b"flood" => {
            let mut n = 0u64;
            let err = loop {
                match xenbus::write(&format!("data/flood/{n}"), "x") {
                    Ok(()) => n += 1,
                    Err(e) => break e,
                }
                if n > 100_000 {
                    fail(NAME, format_args!("no quota after {n} nodes"));
                }
            };
            let name = ok("read name after the quota", xenbus::read("name"));
            finish(format_args!(
                "flood quota after {n} nodes ({err:?}); name={}",
                text(&name)
            ));
        }
        other => fail(NAME, format_args!("unknown mode {}", text(other))),
    }
}

pv_runtime::entry!(main);
