//! Random operation sequences against a BTreeMap model; random bytes never
//! panic the daemon.
mod common;
use common::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use xenstored::{Error, Xenstored};

#[derive(Clone, Debug)]
enum Op {
    Write(String, Vec<u8>),
    Mkdir(String),
    Rm(String),
    Read(String),
    Dir(String),
    TxWrite(String, Vec<u8>, bool),
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
        .prop_map(|segs| format!("/m/{}", segs.join("/")))
}

fn op() -> impl Strategy<Value = Op> {
    let val = prop::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        (path(), val.clone()).prop_map(|(p, v)| Op::Write(p, v)),
        path().prop_map(Op::Mkdir),
        path().prop_map(Op::Rm),
        path().prop_map(Op::Read),
        path().prop_map(Op::Dir),
        (path(), val, any::<bool>()).prop_map(|(p, v, c)| Op::TxWrite(p, v, c)),
    ]
}

#[derive(Default)]
struct Model(BTreeMap<String, Vec<u8>>);

impl Model {
    fn parent(p: &str) -> String {
        let i = p.rfind('/').unwrap();
        if i == 0 { "/".into() } else { p[..i].into() }
    }
    fn exists(&self, p: &str) -> bool {
        p == "/" || self.0.contains_key(p)
    }
    fn create(&mut self, p: &str) {
        let mut q = p.to_string();
        while q != "/" {
            self.0.entry(q.clone()).or_default();
            q = Self::parent(&q);
        }
    }
    fn write(&mut self, p: &str, v: &[u8]) {
        self.create(p);
        self.0.insert(p.into(), v.to_vec());
    }
    fn rm(&mut self, p: &str) -> Result<(), Error> {
        if !self.exists(p) {
            return if self.exists(&Self::parent(p)) {
                Ok(())
            } else {
                Err(Error::NoEnt)
            };
        }
        let prefix = format!("{p}/");
        self.0.retain(|k, _| k != p && !k.starts_with(&prefix));
        Ok(())
    }
    fn children(&self, p: &str) -> BTreeSet<String> {
        let prefix = format!("{p}/");
        self.0
            .keys()
            .filter_map(|k| k.strip_prefix(&prefix))
            .filter(|rest| !rest.contains('/'))
            .map(String::from)
            .collect()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn matches_a_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut xs = Xenstored::new();
        let mut m = Model::default();
        for o in ops {
            match o {
                Op::Write(p, v) => {
                    prop_assert_eq!(xs.write(&p, &v), Ok(()));
                    m.write(&p, &v);
                }
                Op::Mkdir(p) => {
                    prop_assert_eq!(xs.mkdir(&p), Ok(()));
                    if !m.exists(&p) { m.write(&p, &[]); }
                }
                Op::Rm(p) => prop_assert_eq!(xs.rm(&p), m.rm(&p)),
                Op::Read(p) => {
                    let want = m.0.get(&p).cloned().ok_or(Error::NoEnt);
                    prop_assert_eq!(xs.read(&p), want);
                }
                Op::Dir(p) => {
                    let got = xs.directory(&p).map(|v| v.into_iter().collect::<BTreeSet<_>>());
                    let want = if m.exists(&p) { Ok(m.children(&p)) } else { Err(Error::NoEnt) };
                    prop_assert_eq!(got, want);
                }
                Op::TxWrite(p, v, commit) => {
                    let r = rpc(&mut xs, 0, T::TransactionStart, 0, b"\0").0.unwrap();
                    let tx: u32 = std::str::from_utf8(&r[..r.len() - 1]).unwrap().parse().unwrap();
                    prop_assert_eq!(write_bytes(&mut xs, tx, &p, &v), ok());
                    let end = rpc(&mut xs, 0, T::TransactionEnd, tx, &z(if commit { "T" } else { "F" })).0;
                    prop_assert_eq!(end, ok());
                    if commit { m.write(&p, &v); }
                }
            }
        }
        // The whole tree agrees.
        let got: BTreeSet<String> = xs.paths().filter(|p| p.starts_with("/m/")).map(String::from).collect();
        let want: BTreeSet<String> = m.0.keys().filter(|p| p.starts_with("/m/")).cloned().collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_requests_never_panic(reqs in prop::collection::vec(
        (0u32..3, 0u32..25, 0u32..4, prop::collection::vec(
            prop_oneof![Just(0u8), Just(b'/'), Just(b'a'), Just(b'@'), Just(b'1'), Just(b'T'), any::<u8>()], 0..40)),
        1..80))
    {
        let mut xs = setup();
        for (dom, ty, tx, payload) in reqs {
            let hdr = hypercall_abi::io::xenstore::XsdSockmsg {
                type_: ty, req_id: 1, tx_id: tx, len: u32::try_from(payload.len()).unwrap(),
            };
            xs.request(dom, &hdr, &payload);
            let replies = drain(&mut xs, dom).iter().filter(|m| !m.is_event()).count();
            // One reply (RELEASE of the sender itself leaves none to read).
            prop_assert!(replies == 1 || !xs.is_introduced(dom));
        }
    }

    #[test]
    fn random_ring_bytes_never_panic(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 1..40)) {
        let mut xs = setup();
        let page: Vec<core::sync::atomic::AtomicU32> =
            (0..hypercall_abi::io::PAGE_WORDS).map(|_| Default::default()).collect();
        for c in chunks {
            let _ = hypercall_abi::io::xenstore::XenstoreFront::new(&page).unwrap().requests.write(&c);
            xs.service_ring(1, &page);
            let mut buf = [0u8; 1024];
            let _ = hypercall_abi::io::xenstore::XenstoreFront::new(&page).unwrap().responses.read(&mut buf);
        }
    }
}

fn write_bytes(xs: &mut Xenstored, tx: u32, p: &str, v: &[u8]) -> Result<Vec<u8>, Error> {
    let mut payload = z(p);
    payload.extend_from_slice(v);
    rpc(xs, 0, T::Write, tx, &payload).0
}
