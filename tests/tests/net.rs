//! The network split driver (`docs/net.md`): two `netcheck` domUs with a vif
//! each on `xenbr0` resolve each other by ARP and ping each other with raw
//! frames through dom0's netback and switch; the vifs' XenStore nodes are
//! as xl writes them, and destroying the domains takes them away. Then two
//! `tcpcheck` domUs move 100 MiB over TCP (`smoltcp` on both sides) with a
//! checksum. Last, a domain destroyed in the middle of a transfer and a
//! hostile front end (`nethostile`) leave two other domains' pings flowing
//! and nothing behind in the back end.

use std::time::{Duration, Instant};

use xlhv_tests::{ControlHost, scratch, stripped_guest};

/// Writes a config for a `netcheck` domU with `vif` and `cmdline`.
fn config(test: &str, name: &str, cmdline: &str, vif: &str) -> String {
    config_for(test, "netcheck", name, cmdline, vif)
}

/// Writes a config for a `guest` domU with `vif` and `cmdline`.
fn config_for(test: &str, guest: &str, name: &str, cmdline: &str, vif: &str) -> String {
    let p = scratch(test).join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nkernel = \"{}\"\nmemory = 32\ncmdline = \"{cmdline}\"\n\
             on_poweroff = \"preserve\"\non_crash = \"preserve\"\nvif = [\"{vif}\"]\n",
            stripped_guest(test, guest).display(),
        ),
    )
    .unwrap();
    p.to_string_lossy().into_owned()
}

/// Waits for `dom`'s `netcheck:` result line (240 s at most) and returns it.
fn result(h: &ControlHost, dom: &str) -> String {
    result_of(h, dom, "netcheck")
}

/// Waits for `dom`'s `guest:` result line (600 s at most: the 100 MiB
/// transfer takes about a minute under TCG) and returns it.
fn result_of(h: &ControlHost, dom: &str, guest: &str) -> String {
    let (ok, fail) = (format!("{guest}: ok"), format!("{guest}: FAIL"));
    let pass = format!("{guest}: PASS");
    let start = Instant::now();
    loop {
        let c = h.dom0ctl(&["console", dom, "--no-follow"]);
        if let Some(l) = c
            .stdout
            .lines()
            .find(|l| l.contains(&ok) || l.contains(&pass) || l.contains(&fail))
        {
            eprintln!("{dom}:\n{}", c.stdout);
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{dom} never finished:\n{}\n{}\n{}",
            c.stdout,
            c.stderr,
            h.serial()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn two_domus_ping_each_other_on_xenbr0() {
    let test = "net";
    let h = ControlHost::boot_fast(test, "");
    let a = config(
        test,
        "a",
        "ip=10.0.0.1 peer=10.0.0.2 count=20",
        "mac=00:16:3e:00:00:01, bridge=xenbr0",
    );
    let b = config(
        test,
        "b",
        "ip=10.0.0.2 peer=10.0.0.1 count=20",
        "bridge=xenbr0",
    );
    h.dom0ctl(&["--timeout", "120", "create", &a]).code(0);
    // The back end's nodes, as xl writes them, before the second domain comes.
    let ls = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/backend/vif"]);
    ls.code(0);
    eprintln!("{}", ls.stdout);
    for key in [
        "bridge = \"xenbr0\"",
        "mac = \"00:16:3e:00:00:01\"",
        "type = \"vif\"",
        "feature-rx-copy = \"1\"",
    ] {
        assert!(ls.stdout.contains(key), "{key}:\n{}", ls.stdout);
    }
    h.dom0ctl(&["--timeout", "120", "create", &b]).code(0);
    let ra = result(&h, "a");
    let rb = result(&h, "b");
    for r in [&ra, &rb] {
        assert!(r.contains("netcheck: ok"), "{r}");
        assert!(r.contains("pings=20 answered=20"), "{r}");
    }
    assert!(ra.contains("mac=00:16:3e:00:00:01"), "{ra}");
    // b's MAC was made up in Xen's range.
    assert!(rb.contains("mac=00:16:3e:"), "{rb}");
    // network-list: connected, with the counters of the pings.
    let nl = h.dom0ctl(&["network-list", "a"]);
    nl.code(0);
    eprintln!("{}", nl.stdout);
    let row: Vec<&str> = nl
        .stdout
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(row.get(2), Some(&"00:16:3e:00:00:01"), "{}", nl.stdout);
    assert_eq!(
        row.get(4),
        Some(&"4"),
        "the front end is Connected: {}",
        nl.stdout
    );
    assert_eq!(row.get(8), Some(&"xenbr0"), "{}", nl.stdout);
    h.dom0ctl(&["destroy", "a"]).code(0);
    h.dom0ctl(&["destroy", "b"]).code(0);
    // The vifs' nodes are gone (xl too leaves the empty `backend/vif`).
    let ls = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/backend"]);
    assert!(!ls.stdout.contains("backend/vif/"), "{}", ls.stdout);

    // TCP through smoltcp on both sides: 100 MiB, every byte and the checksum
    // checked.
    let s = config_for(
        test,
        "tcpcheck",
        "srv",
        "ip=10.0.1.1 role=server mib=100 timeout=600",
        "bridge=xenbr0",
    );
    let c = config_for(
        test,
        "tcpcheck",
        "cli",
        "ip=10.0.1.2 role=client peer=10.0.1.1 mib=100 timeout=600",
        "bridge=xenbr0",
    );
    h.dom0ctl(&["--timeout", "120", "create", &s]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &c]).code(0);
    let rs = result_of(&h, "srv", "tcpcheck");
    let rc = result_of(&h, "cli", "tcpcheck");
    assert!(
        rs.contains("tcpcheck: ok role=server bytes=104857600"),
        "{rs}"
    );
    assert!(
        rc.contains("tcpcheck: ok role=client bytes=104857600"),
        "{rc}"
    );
    let fnv = |l: &str| {
        l.split_whitespace()
            .find(|w| w.starts_with("fnv="))
            .map(str::to_string)
    };
    assert_eq!(fnv(&rs), fnv(&rc));
    h.dom0ctl(&["destroy", "srv"]).code(0);
    h.dom0ctl(&["destroy", "cli"]).code(0);

    // A domain destroyed in the middle of a transfer: the others' traffic
    // goes on, and nothing of it is left in the back end.
    let s = config_for(
        test,
        "tcpcheck",
        "srv2",
        "ip=10.0.2.1 role=server mib=256",
        "bridge=xenbr0",
    );
    let c = config_for(
        test,
        "tcpcheck",
        "victim",
        "ip=10.0.2.2 role=client peer=10.0.2.1 mib=256",
        "bridge=xenbr0",
    );
    h.dom0ctl(&["--timeout", "120", "create", &s]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &c]).code(0);
    let start = Instant::now();
    loop {
        let nl = h.dom0ctl(&["network-list", "victim"]);
        let sent: u64 = nl
            .stdout
            .lines()
            .nth(1)
            .and_then(|l| l.split_whitespace().nth(9))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if sent > 300 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the transfer never started:\n{}",
            nl.stdout
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let p = config(
        test,
        "p",
        "ip=10.0.3.1 peer=10.0.3.2 count=10",
        "bridge=xenbr0",
    );
    let q = config(
        test,
        "q",
        "ip=10.0.3.2 peer=10.0.3.1 count=10",
        "bridge=xenbr0",
    );
    // And next to them a hostile front end (`nethostile`): its bad packets are
    // refused one by one, then an impossible ring index closes its vif only.
    let x = config_for(test, "nethostile", "x", "", "bridge=xenbr0");
    h.dom0ctl(&["--timeout", "120", "create", &p]).code(0);
    h.dom0ctl(&["destroy", "victim"]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &x]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &q]).code(0);
    for d in ["p", "q"] {
        let r = result(&h, d);
        assert!(
            r.contains("netcheck: ok") && r.contains("pings=10 answered=10"),
            "{r}"
        );
    }
    let rx = result_of(&h, "x", "nethostile");
    assert!(rx.contains("nethostile: PASS"), "{rx}");
    let err = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/error"]);
    assert!(
        err.stdout.contains("impossible TX ring index"),
        "{}",
        err.stdout
    );
    h.dom0ctl(&["destroy", "x"]).code(0);
    h.dom0ctl(&["destroy", "srv2"]).code(0);
    for d in ["p", "q"] {
        h.dom0ctl(&["destroy", d]).code(0);
    }
    let ls = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/backend"]);
    assert!(!ls.stdout.contains("backend/vif/"), "{}", ls.stdout);
}

/// FNV-1a, 64 bits (what `netup` and `tcpcheck` print of a stream).
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// dom0's NIC on QEMU's user network is the uplink of `xenbr0`
/// (`docs/net.md#uplinks`). A domU on that bridge resolves QEMU's gateway
/// (10.0.2.2) by ARP and pings it; a `netup` domU gets its address from QEMU's
/// DHCP server, and the host reaches its TCP echo server through a `hostfwd`;
/// then a `netup` with the same MAC (so the same lease) fetches 1 MiB from a
/// TCP server this test runs on 127.0.0.1, reached through the gateway.
/// `dom0ctl info` lists the bridge with the uplink and the vif.
#[test]
fn domus_reach_the_host_through_the_uplink() {
    use std::io::{Read, Write};
    let test = "net-uplink";
    // A free host port for the forward (bound and let go: the race is harmless
    // here), and the page server.
    let fwd = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let page: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes()[0])
        .collect();
    let want = (page.len(), fnv(&page));
    let served = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.write_all(&page).unwrap();
    });
    let nic = xtask::nic::NicSpec::parse(&format!("user,hostfwd=tcp:127.0.0.1:{fwd}-:7")).unwrap();
    let h = ControlHost::boot_fast_with_args(test, "512M", &nic.qemu_args(0));
    let ping = config(
        test,
        "ping",
        "ip=10.0.2.30 peer=10.0.2.2 count=5 answers=0",
        "bridge=xenbr0",
    );
    h.dom0ctl(&["--timeout", "120", "create", &ping]).code(0);
    let log = h.serial();
    assert!(
        log.contains("dom0: net: eth0 (52:54:00:12:34:56) is the uplink of bridge xenbr0"),
        "{log}"
    );
    let r = result(&h, "ping");
    assert!(r.contains("netcheck: ok") && r.contains("pings=5"), "{r}");
    let info = h.dom0ctl(&["info"]);
    info.code(0);
    assert!(
        info.stdout.lines().any(|l| l.starts_with("bridges")
            && l.contains("xenbr0: eth0 vif1.0 (2 MACs learned)")),
        "{}",
        info.stdout
    );
    h.dom0ctl(&["destroy", "ping"]).code(0);

    // DHCP, and the host's connection forwarded to the domU's echo server.
    let vif = "mac=00:16:3e:00:00:42, bridge=xenbr0";
    let echo = config_for(
        test,
        "netup",
        "echo",
        "ip=dhcp role=echo port=7 conns=1 timeout=200",
        vif,
    );
    h.dom0ctl(&["--timeout", "120", "create", &echo]).code(0);
    let addr = wait_line(&h, "echo", "netup: address");
    assert!(
        addr.contains("ip=10.0.2.15/24 gw=10.0.2.2 via=dhcp server=10.0.2.2"),
        "{addr}"
    );
    wait_line(&h, "echo", "netup: listening ip=10.0.2.15 port=7");
    let mut c = std::net::TcpStream::connect(("127.0.0.1", fwd)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let msg: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
    c.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert!(back == msg, "the echo differs");
    drop(c);
    let r = result_of(&h, "echo", "netup");
    assert!(r.contains("netup: ok role=echo conns=1 bytes=65536"), "{r}");
    h.dom0ctl(&["destroy", "echo"]).code(0);

    // The same MAC gets the same lease; the host's server through the gateway.
    let fetch = config_for(
        test,
        "netup",
        "fetch",
        &format!("ip=dhcp role=fetch server=10.0.2.2:{port} bytes=1048576 timeout=200"),
        vif,
    );
    h.dom0ctl(&["--timeout", "120", "create", &fetch]).code(0);
    let r = result_of(&h, "fetch", "netup");
    assert!(
        r.contains(&format!(
            "netup: ok role=fetch ip=10.0.2.15 gw=10.0.2.2 bytes={} fnv={:016x}",
            want.0, want.1
        )),
        "{r}"
    );
    served.join().unwrap();
    h.dom0ctl(&["destroy", "fetch"]).code(0);
}

/// Waits for a line of `dom`'s console containing `needle` (240 s at most).
fn wait_line(h: &ControlHost, dom: &str, needle: &str) -> String {
    h.console_line(dom, needle, Some("netup: FAIL"), 240)
}

/// The runtime's socket API (`pv_runtime::net::Stack`) in `netup` domUs with
/// static addresses on `xenbr0`: a ping, an echo server takes two clients at once
/// (the second waits in the backlog), a server's stream is fetched whole,
/// a sender's stream is checked byte by byte by a `tcpcheck` server, and a
/// hot-unplugged vif ends a waiting `netup` with the back end's closing.
#[test]
fn netup_tcp_between_domus() {
    let test = "netup";
    let h = ControlHost::boot_fast(test, "");
    let vif = "bridge=xenbr0";
    let cfg = |name: &str, cmdline: &str| config_for(test, "netup", name, cmdline, vif);
    let echo = cfg(
        "echo",
        "ip=10.0.4.1/24 role=echo port=7 conns=2 timeout=220",
    );
    let serve = cfg(
        "serve",
        "ip=10.0.4.4/24 role=serve port=80 bytes=1048576 timeout=220",
    );
    h.dom0ctl(&["--timeout", "120", "create", &echo]).code(0);
    h.dom0ctl(&["--timeout", "120", "create", &serve]).code(0);
    let l = wait_line(&h, "echo", "netup: listening");
    assert!(l.contains("ip=10.0.4.1 port=7"), "{l}");
    wait_line(&h, "serve", "netup: listening");
    for (name, cmdline) in [
        (
            "c1",
            "ip=10.0.4.2/24 gw=10.0.4.1 ping=10.0.4.1 role=echo-client server=10.0.4.1:7 bytes=300000 timeout=220",
        ),
        (
            "c2",
            "ip=10.0.4.3/24 role=echo-client server=10.0.4.1:7 bytes=200000 timeout=220",
        ),
        (
            "fetch",
            "ip=10.0.4.5/24 gw=10.0.4.1 role=fetch server=10.0.4.4:80 bytes=1048576 timeout=220",
        ),
    ] {
        let c = cfg(name, cmdline);
        h.dom0ctl(&["--timeout", "120", "create", &c]).code(0);
    }
    let r1 = result_of(&h, "c1", "netup");
    let r2 = result_of(&h, "c2", "netup");
    assert!(
        r1.contains("netup: ok role=echo-client bytes=300000"),
        "{r1}"
    );
    // c1 pinged the echo server first (smoltcp there answers).
    wait_line(&h, "c1", "netup: ping ip=10.0.4.1 rtt_us=");
    assert!(
        r2.contains("netup: ok role=echo-client bytes=200000"),
        "{r2}"
    );
    let re = result_of(&h, "echo", "netup");
    assert!(
        re.contains("netup: ok role=echo conns=2 bytes=500000"),
        "{re}"
    );
    let rf = result_of(&h, "fetch", "netup");
    assert!(
        rf.contains("netup: ok role=fetch ip=10.0.4.5 gw=10.0.4.1 bytes=1048576 fnv="),
        "{rf}"
    );
    let rs = result_of(&h, "serve", "netup");
    assert!(
        rs.contains("netup: ok role=serve conns=1 bytes=1048576"),
        "{rs}"
    );
    for d in ["echo", "serve", "c1", "c2", "fetch"] {
        h.dom0ctl(&["destroy", d]).code(0);
    }

    // netup's sender against tcpcheck's server: the same pattern, every
    // byte checked there, and the same FNV-1a.
    let srv = config_for(
        test,
        "tcpcheck",
        "srv",
        "ip=10.0.5.1 role=server mib=2",
        vif,
    );
    h.dom0ctl(&["--timeout", "120", "create", &srv]).code(0);
    let snd = cfg(
        "snd",
        "ip=10.0.5.2/24 role=send server=10.0.5.1:5001 mib=2 timeout=220",
    );
    h.dom0ctl(&["--timeout", "120", "create", &snd]).code(0);
    let rn = result_of(&h, "snd", "netup");
    assert!(
        rn.contains("netup: ok role=send bytes=2097152 mib_s="),
        "{rn}"
    );
    let rt = result_of(&h, "srv", "tcpcheck");
    assert!(
        rt.contains("tcpcheck: ok role=server bytes=2097152"),
        "{rt}"
    );

    // Hot-unplug under a waiting netup: the front end sees its back end
    // close and says so (netfront's BackendClosed), and the vif goes.
    let u = cfg("u", "ip=10.0.6.1/24 role=echo port=7 timeout=220");
    h.dom0ctl(&["--timeout", "120", "create", &u]).code(0);
    wait_line(&h, "u", "netup: listening");
    h.dom0ctl(&["network-detach", "u", "0"]).code(0);
    let ru = result_of(&h, "u", "netup");
    assert!(
        ru.contains("netup: FAIL accept: front end: the back end is Clos"),
        "{ru}"
    );
    let start = Instant::now();
    loop {
        let nl = h.dom0ctl(&["network-list", "u"]);
        if nl.stdout.lines().nth(1).is_none_or(|l| l.trim().is_empty()) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the vif stayed:\n{}",
            nl.stdout
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for d in ["srv", "snd", "u"] {
        h.dom0ctl(&["destroy", d]).code(0);
    }
    let ls = h.dom0ctl(&["xenstore", "ls", "/local/domain/0/backend"]);
    assert!(!ls.stdout.contains("backend/vif/"), "{}", ls.stdout);
}
