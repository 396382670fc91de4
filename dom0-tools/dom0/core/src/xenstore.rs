//! The toolstack's part of XenStore: the nodes `xl` (libxl 4.17) writes for a domain
//! it creates and removes when it destroys it, with the permissions it gives them,
//! plus UUIDs. See `docs/xenstore.md` ("In dom0").
//!
//! libxl's two permission sets, for a domain `N`:
//!
//! * read-only (`roperm`): owner dom0, nobody else, `N` may read (`n0,rN`);
//! * read-write (`rwperm`): owner `N` (`nN`): the domain reads and writes it, and
//!   dom0 too (dom0 is privileged).
//!
//! A node written without its own permissions inherits its parent's, as in
//! xenstored; so `name`, `vm`, `domid`, `memory/*` and `cpu/*` end up read-only to
//! the domain, `control/shutdown`, `data`, `device/suspend/event-channel` and the
//! console's non-ring nodes are its own.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use xenstored::{Access, Error, Perm, Xenstored};

/// A domain's 128-bit UUID (`xen_domain_handle_t` in xl).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// dom0's UUID: all zeroes, as `xen-init-dom0` writes it.
    pub const NIL: Uuid = Uuid([0; 16]);

    /// A version-4 (random) UUID from a 64-bit seed (the kernel passes the pvclock
    /// mixed with a counter; dom0 has no entropy source of its own). Distinct seeds
    /// give distinct UUIDs.
    pub fn generate(seed: u64) -> Uuid {
        // The first half is a bijection of the seed, so two seeds never collide
        // (the version bits below live in the second half, the variant bits too).
        let a = splitmix(seed);
        let b = splitmix(a ^ seed.rotate_left(17));
        let mut u = [0u8; 16];
        u[..6].copy_from_slice(&a.to_be_bytes()[..6]);
        u[10..].copy_from_slice(&a.to_be_bytes()[2..]);
        u[6..10].copy_from_slice(&b.to_be_bytes()[..4]);
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        Uuid(u)
    }

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
    pub fn parse(s: &str) -> Option<Uuid> {
        let b = s.as_bytes();
        if b.len() != 36 {
            return None;
        }
        let mut u = [0u8; 16];
        let mut n = 0;
        let mut i = 0;
        while i < 36 {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b[i] != b'-' {
                    return None;
                }
                i += 1;
                continue;
            }
            let hi = hex(b[i])?;
            let lo = hex(*b.get(i + 1)?)?;
            u[n] = (hi << 4) | lo;
            n += 1;
            i += 2;
        }
        (n == 16).then_some(Uuid(u))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What the toolstack knows of a new domain when it writes its nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainNodes<'a> {
    /// Its id.
    pub domid: u16,
    /// Its name.
    pub name: &'a str,
    /// Its UUID (`/vm/UUID`).
    pub uuid: Uuid,
    /// Memory in KiB (`memory/static-max` and `memory/target`).
    pub memory_kib: u64,
    /// vCPUs (`cpu/N/availability`).
    pub vcpus: u32,
    /// Console ring frame and the domain's end of the console channel.
    pub console: (u64, u32),
    /// Store ring frame and the domain's end of the store channel.
    pub store: (u64, u32),
    /// The kernel command line (`/vm/UUID/image/cmdline`).
    pub cmdline: &'a str,
    /// The backend domain (dom0).
    pub backend: u16,
}

/// Xen's console limit (`LIBXL_XENCONSOLE_LIMIT`).
pub const CONSOLE_LIMIT: u32 = 1_048_576;

/// `/local/domain/N`.
pub fn dom_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// `/vm/UUID`.
pub fn vm_path(uuid: Uuid) -> String {
    format!("/vm/{uuid}")
}

/// `/libxl/N`: the toolstack's private nodes.
pub fn libxl_path(domid: u16) -> String {
    format!("/libxl/{domid}")
}

/// libxl's `roperm` for `domid`: dom0 owns, `domid` may read.
pub fn roperm(domid: u16) -> Vec<Perm> {
    vec![
        Perm::new(0, Access::None),
        Perm::new(u32::from(domid), Access::Read),
    ]
}

/// libxl's `rwperm` for `domid`: `domid` owns.
pub fn rwperm(domid: u16) -> Vec<Perm> {
    vec![Perm::new(u32::from(domid), Access::None)]
}

/// libxl's `noperm`: dom0 only.
pub fn noperm() -> Vec<Perm> {
    vec![Perm::new(0, Access::None)]
}

/// One step of the layout: a node with a value, and its own permissions or the
/// parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Absolute path.
    pub path: String,
    /// Value.
    pub value: Vec<u8>,
    /// Permissions set on it; `None` inherits the parent's.
    pub perms: Option<Vec<Perm>>,
}

fn e(path: String, value: impl Into<Vec<u8>>, perms: Option<Vec<Perm>>) -> Entry {
    Entry {
        path,
        value: value.into(),
        perms,
    }
}

/// The nodes `xl create` leaves for domain `d`, in the order it writes them
/// (`libxl__domain_make`, `libxl__build_post`, the console's front end).
pub fn domain_entries(d: &DomainNodes<'_>) -> Vec<Entry> {
    let dp = dom_path(d.domid);
    let vp = vm_path(d.uuid);
    let lp = libxl_path(d.domid);
    let ro = || Some(roperm(d.domid));
    let rw = || Some(rwperm(d.domid));
    let mut v = vec![
        // libxl__domain_make
        e(dp.clone(), "", ro()),
        e(vp.clone(), "", ro()),
        e(lp.clone(), "", Some(noperm())),
        e(format!("{lp}/device"), "", Some(noperm())),
        e(format!("{dp}/vm"), vp.clone(), None),
        e(format!("{dp}/name"), d.name, None),
        e(format!("{vp}/name"), d.name, None),
        e(format!("{dp}/cpu"), "", ro()),
        e(format!("{dp}/memory"), "", ro()),
        e(format!("{dp}/device"), "", ro()),
        e(format!("{dp}/control"), "", ro()),
        e(format!("{dp}/control/shutdown"), "", rw()),
        e(format!("{dp}/control/feature-poweroff"), "", rw()),
        e(format!("{dp}/control/feature-reboot"), "", rw()),
        e(format!("{dp}/control/feature-suspend"), "", rw()),
        e(format!("{dp}/control/sysrq"), "", rw()),
        e(format!("{dp}/device/suspend/event-channel"), "", rw()),
        e(format!("{dp}/data"), "", rw()),
        e(format!("{dp}/drivers"), "", rw()),
        e(format!("{dp}/feature"), "", rw()),
        e(format!("{dp}/attr"), "", rw()),
        e(format!("{dp}/error"), "", rw()),
        e(format!("{vp}/uuid"), format!("{}", d.uuid), None),
        e(
            format!("{dp}/control/platform-feature-multiprocessor-suspend"),
            "1",
            None,
        ),
        e(
            format!("{dp}/control/platform-feature-xs_reset_watches"),
            "1",
            None,
        ),
        e(format!("{lp}/type"), "pv", None),
        // libxl__build_post
        e(
            format!("{dp}/memory/static-max"),
            format!("{}", d.memory_kib),
            None,
        ),
        e(
            format!("{dp}/memory/target"),
            format!("{}", d.memory_kib),
            None,
        ),
        e(format!("{dp}/domid"), format!("{}", d.domid), None),
        e(format!("{dp}/store/port"), format!("{}", d.store.1), None),
        e(
            format!("{dp}/store/ring-ref"),
            format!("{}", d.store.0),
            None,
        ),
    ];
    for cpu in 0..d.vcpus.max(1) {
        v.push(e(format!("{dp}/cpu/{cpu}/availability"), "online", None));
    }
    v.push(e(format!("{vp}/image/ostype"), "linux", None));
    v.push(e(format!("{vp}/image/cmdline"), d.cmdline, None));
    // The console's front end (libxl__device_console_add): the domain owns the
    // directory and may read and write its settings; the ring reference and port
    // are dom0's, read-only to it. The backend may read everything.
    let fe = || {
        let mut p = rwperm(d.domid);
        if d.backend != d.domid {
            p.push(Perm::new(u32::from(d.backend), Access::Read));
        }
        Some(p)
    };
    let fe_ro = || {
        let mut p = roperm(d.domid);
        if d.backend != 0 {
            p.push(Perm::new(u32::from(d.backend), Access::Read));
        }
        Some(p)
    };
    v.extend([
        e(format!("{dp}/console"), "", fe()),
        e(
            format!("{dp}/console/backend-id"),
            format!("{}", d.backend),
            fe(),
        ),
        e(
            format!("{dp}/console/limit"),
            format!("{CONSOLE_LIMIT}"),
            fe(),
        ),
        e(format!("{dp}/console/type"), "xenconsoled", fe()),
        e(format!("{dp}/console/output"), "pty", fe()),
        e(format!("{dp}/console/tty"), "", fe()),
        e(
            format!("{dp}/console/port"),
            format!("{}", d.console.1),
            fe_ro(),
        ),
        e(
            format!("{dp}/console/ring-ref"),
            format!("{}", d.console.0),
            fe_ro(),
        ),
    ]);
    v
}

/// dom0's own nodes (`xen-init-dom0`): `/local/domain/0/{name,domid,vm}` and its
/// `/vm` entry, all dom0's.
pub fn dom0_entries() -> Vec<Entry> {
    let vp = vm_path(Uuid::NIL);
    vec![
        e(dom_path(0), "", Some(noperm())),
        e(format!("{}/name", dom_path(0)), "Domain-0", None),
        e(format!("{}/domid", dom_path(0)), "0", None),
        e(format!("{}/vm", dom_path(0)), vp.clone(), None),
        e(vp.clone(), "", Some(noperm())),
        e(format!("{vp}/name"), "Domain-0", None),
        e(format!("{vp}/uuid"), format!("{}", Uuid::NIL), None),
    ]
}

/// Writes `entries` into the store as dom0 (firing watches as it goes).
pub fn apply(xs: &mut Xenstored, entries: &[Entry]) -> Result<(), Error> {
    for en in entries {
        xs.write(&en.path, &en.value)?;
        if let Some(p) = &en.perms {
            xs.set_perms(&en.path, p)?;
        }
    }
    Ok(())
}

/// Removes what [`domain_entries`] wrote for `domid` (run after `release_domain`,
/// which already dropped the nodes the domain owned). Missing nodes are fine.
pub fn remove_domain(xs: &mut Xenstored, domid: u16, uuid: Uuid) {
    for p in [dom_path(domid), vm_path(uuid), libxl_path(domid)] {
        let _ = xs.rm(&p);
    }
}

/// Checks a path and value against Xen's limits before they go anywhere:
/// absolute paths up to 3072 bytes, values up to 4096.
pub fn check_limits(path: &str, value: Option<&[u8]>) -> Result<(), String> {
    if path.len() > PATH_MAX {
        return Err(format!(
            "the path is {} bytes; XenStore takes at most {PATH_MAX}",
            path.len()
        ));
    }
    if let Some(v) = value
        && v.len() > VALUE_MAX
    {
        return Err(format!(
            "the value is {} bytes; XenStore takes at most {VALUE_MAX}",
            v.len()
        ));
    }
    Ok(())
}

/// Longest absolute path (`XENSTORE_ABS_PATH_MAX`).
pub const PATH_MAX: usize = 3072;
/// Longest value (`XENSTORE_PAYLOAD_MAX`).
pub const VALUE_MAX: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn nodes() -> DomainNodes<'static> {
        DomainNodes {
            domid: 3,
            name: "web",
            uuid: Uuid::parse("6ba7b810-9dad-41d1-80b4-00c04fd430c8").unwrap(),
            memory_kib: 32768,
            vcpus: 1,
            console: (0x1234, 1),
            store: (0x1235, 2),
            cmdline: "secs=3",
            backend: 0,
        }
    }

    #[test]
    fn uuids_parse_print_and_generate() {
        let s = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
        assert_eq!(Uuid::parse(s).unwrap().to_string(), s);
        assert_eq!(
            Uuid::parse("6BA7B810-9DAD-41D1-80B4-00C04FD430C8")
                .unwrap()
                .to_string(),
            s
        );
        for bad in [
            "",
            "6ba7b810-9dad-41d1-80b4-00c04fd430c",
            "6ba7b810x9dad-41d1-80b4-00c04fd430c8",
            "gba7b810-9dad-41d1-80b4-00c04fd430c8",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
        let mut seen = alloc::collections::BTreeSet::new();
        for seed in 0..1000u64 {
            let u = Uuid::generate(seed);
            assert_eq!(u.0[6] >> 4, 4);
            assert_eq!(u.0[8] >> 6, 2);
            assert!(seen.insert(u), "duplicate for seed {seed}");
            assert_eq!(Uuid::parse(&u.to_string()), Some(u));
        }
    }

    #[test]
    fn a_domain_gets_xls_tree_and_permissions() {
        let mut xs = Xenstored::new();
        apply(&mut xs, &dom0_entries()).unwrap();
        apply(&mut xs, &domain_entries(&nodes())).unwrap();
        let r = |xs: &mut Xenstored, p: &str| String::from_utf8(xs.read(p).unwrap()).unwrap();
        assert_eq!(r(&mut xs, "/local/domain/3/name"), "web");
        assert_eq!(r(&mut xs, "/local/domain/3/domid"), "3");
        assert_eq!(
            r(&mut xs, "/local/domain/3/vm"),
            "/vm/6ba7b810-9dad-41d1-80b4-00c04fd430c8"
        );
        assert_eq!(
            r(&mut xs, "/vm/6ba7b810-9dad-41d1-80b4-00c04fd430c8/name"),
            "web"
        );
        assert_eq!(r(&mut xs, "/local/domain/3/memory/target"), "32768");
        assert_eq!(r(&mut xs, "/local/domain/3/memory/static-max"), "32768");
        assert_eq!(r(&mut xs, "/local/domain/3/cpu/0/availability"), "online");
        assert_eq!(r(&mut xs, "/local/domain/3/console/ring-ref"), "4660");
        assert_eq!(r(&mut xs, "/local/domain/3/console/port"), "1");
        assert_eq!(r(&mut xs, "/local/domain/3/console/limit"), "1048576");
        assert_eq!(r(&mut xs, "/local/domain/3/console/type"), "xenconsoled");
        assert_eq!(r(&mut xs, "/local/domain/3/store/port"), "2");
        assert_eq!(
            r(
                &mut xs,
                "/local/domain/3/control/platform-feature-xs_reset_watches"
            ),
            "1"
        );
        assert_eq!(r(&mut xs, "/local/domain/0/name"), "Domain-0");
        // Permissions as xl sets them.
        let ro = roperm(3);
        let rw = rwperm(3);
        for p in [
            "",
            "/name",
            "/domid",
            "/vm",
            "/memory/target",
            "/cpu/0/availability",
            "/control",
            "/control/platform-feature-multiprocessor-suspend",
            "/console/ring-ref",
            "/console/port",
        ] {
            assert_eq!(
                xs.get_perms(&format!("/local/domain/3{p}")).unwrap(),
                ro,
                "{p}"
            );
        }
        for p in [
            "/control/shutdown",
            "/control/feature-poweroff",
            "/data",
            "/device/suspend/event-channel",
            "/attr",
            "/error",
        ] {
            assert_eq!(
                xs.get_perms(&format!("/local/domain/3{p}")).unwrap(),
                rw,
                "{p}"
            );
        }
        // The console front end: the domain's, the backend (dom0) may read.
        let fe = vec![Perm::new(3, Access::None), Perm::new(0, Access::Read)];
        for p in ["/console", "/console/limit", "/console/type"] {
            assert_eq!(
                xs.get_perms(&format!("/local/domain/3{p}")).unwrap(),
                fe,
                "{p}"
            );
        }
        assert_eq!(xs.get_perms("/libxl/3").unwrap(), noperm());
        assert_eq!(xs.get_perms("/local/domain/0").unwrap(), noperm());
        remove_domain(&mut xs, 3, nodes().uuid);
        assert_eq!(xs.read("/local/domain/3/name"), Err(Error::NoEnt));
        assert_eq!(
            xs.read("/vm/6ba7b810-9dad-41d1-80b4-00c04fd430c8"),
            Err(Error::NoEnt)
        );
        assert_eq!(xs.read("/libxl/3"), Err(Error::NoEnt));
        assert_eq!(r(&mut xs, "/local/domain/0/name"), "Domain-0");
    }

    #[test]
    fn limits() {
        assert!(check_limits(&"/a".repeat(1536), Some(&[0; 4096])).is_ok());
        let e = check_limits(&"/a".repeat(1537), None).unwrap_err();
        assert!(e.contains("3074 bytes"), "{e}");
        let e = check_limits("/a", Some(&[0; 4097])).unwrap_err();
        assert!(e.contains("4097 bytes"), "{e}");
    }
}
