//! Test helpers: a wire client over `Xenstored::request` / `pop_output`.
#![allow(dead_code)]

use hypercall_abi::io::xenstore::XsdSockmsg;
use xenstored::{Error, Message, Xenstored};

pub use hypercall_abi::io::xenstore::XsdSockmsgType as T;

/// A daemon with domains 1, 2 and 3 introduced and their homes created by
/// the toolstack (owned by each domain), as `xl create` does.
pub fn setup() -> Xenstored {
    let mut xs = Xenstored::new();
    for d in 1..=3u32 {
        xs.introduce_domain(d, 0x1000 + u64::from(d), 10 + d)
            .unwrap();
        let home = format!("/local/domain/{d}");
        xs.mkdir(&home).unwrap();
        xs.set_perms(&home, &[xenstored::Perm::new(d, xenstored::Access::None)])
            .unwrap();
    }
    drain(&mut xs, 0);
    xs
}

pub fn drain(xs: &mut Xenstored, dom: u32) -> Vec<Message> {
    let mut v = Vec::new();
    while let Some(m) = xs.pop_output(dom) {
        v.push(m);
    }
    v
}

/// A reply (payload or error) and the sender's watch events.
#[derive(Debug)]
pub struct Rpc(pub Result<Vec<u8>, Error>, pub Vec<(String, String)>);

/// Send one request; return the reply (payload or error) and the watch
/// events queued for the sender, as (path, token).
pub fn rpc(xs: &mut Xenstored, dom: u32, ty: T, tx: u32, payload: &[u8]) -> Rpc {
    let hdr = XsdSockmsg {
        type_: ty as u32,
        req_id: 77,
        tx_id: tx,
        len: u32::try_from(payload.len()).unwrap(),
    };
    xs.request(dom, &hdr, payload);
    let mut reply = None;
    let mut events = Vec::new();
    for m in drain(xs, dom) {
        if m.is_event() {
            events.push(event(&m));
        } else {
            assert_eq!(m.hdr.req_id, 77, "req_id echoed");
            assert_eq!(m.hdr.tx_id, tx, "tx_id echoed");
            assert_eq!(m.hdr.len as usize, m.payload.len());
            assert!(reply.is_none(), "one reply per request");
            reply = Some(if m.hdr.type_ == T::Error as u32 {
                Err(Error::from_name(&m.payload).expect("known error name"))
            } else {
                assert_eq!(m.hdr.type_, ty as u32, "reply type is the request's");
                Ok(m.payload)
            });
        }
    }
    Rpc(reply.expect("a reply"), events)
}

pub fn event(m: &Message) -> (String, String) {
    assert_eq!((m.hdr.req_id, m.hdr.tx_id), (0, 0));
    let parts: Vec<&[u8]> = m.payload.split(|&c| c == 0).collect();
    assert_eq!(parts.len(), 3, "path\\0token\\0");
    (
        String::from_utf8(parts[0].to_vec()).unwrap(),
        String::from_utf8(parts[1].to_vec()).unwrap(),
    )
}

pub fn events(xs: &mut Xenstored, dom: u32) -> Vec<(String, String)> {
    drain(xs, dom).iter().map(event).collect()
}

pub fn z(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

pub fn zz(parts: &[&str]) -> Vec<u8> {
    parts.iter().flat_map(|p| z(p)).collect()
}

pub fn read(xs: &mut Xenstored, dom: u32, path: &str) -> Result<Vec<u8>, Error> {
    rpc(xs, dom, T::Read, 0, &z(path)).0
}

pub fn write(
    xs: &mut Xenstored,
    dom: u32,
    tx: u32,
    path: &str,
    val: &str,
) -> Result<Vec<u8>, Error> {
    let mut p = z(path);
    p.extend_from_slice(val.as_bytes());
    rpc(xs, dom, T::Write, tx, &p).0
}

pub fn ok() -> Result<Vec<u8>, Error> {
    Ok(b"OK\0".to_vec())
}

pub fn ev(p: &str, t: &str) -> (String, String) {
    (p.to_string(), t.to_string())
}
