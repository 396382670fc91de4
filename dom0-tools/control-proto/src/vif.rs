//! Network interface specifications in `xl`'s syntax
//! (`xl-network-configuration(5)`), as a domain config's `vif = [...]` lists
//! them.
//!
//! ```
//! use control_proto::vif::VifSpec;
//! let v = VifSpec::parse("mac=00:16:3e:01:02:03, bridge=xenbr0").unwrap();
//! assert_eq!(v.mac, Some([0x00, 0x16, 0x3e, 1, 2, 3]));
//! assert_eq!(v.to_string(), "mac=00:16:3e:01:02:03, bridge=xenbr0");
//! ```
//!
//! Keys: `mac` (six hex pairs separated by `:`; absent: dom0 makes one up in
//! Xen's `00:16:3e` range, as libxl does), `bridge` (default `xenbr0`), and
//! `type` (`vif` only), `backend` (`0`/`Domain-0` only), `script` (ignored:
//! dom0 runs no hot-plug scripts; its switch joins the vif itself). A vif's
//! number (`device/vif/N`) is its place in the list, as xl numbers them.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Vifs one domain may have.
pub const MAX_VIFS: usize = 8;
/// Longest bridge name (Linux's `IFNAMSIZ` - 1).
pub const MAX_BRIDGE_LEN: usize = 15;
/// The bridge a vif joins when the config names none (xl's default).
pub const DEFAULT_BRIDGE: &str = "xenbr0";

/// One parsed vif specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VifSpec {
    /// The guest's MAC address (`None`: dom0 makes one up).
    pub mac: Option<[u8; 6]>,
    /// The bridge (switch) it joins.
    pub bridge: String,
}

/// Why a vif specification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifSpecError {
    /// A MAC that is not six hex pairs, or a multicast one.
    BadMac(String),
    /// A bridge name that is empty, too long or has odd characters.
    BadBridge(String),
    /// A key this toolstack does not know.
    UnknownKey(String),
    /// A known key with a value this toolstack cannot serve.
    Unsupported {
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
    },
    /// A key given twice.
    Repeated(&'static str),
    /// A field without `=`.
    NotKeyValue(String),
    /// More than [`MAX_VIFS`] vifs.
    TooMany,
}

impl fmt::Display for VifSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VifSpecError::BadMac(m) => write!(
                f,
                "mac {m:?} is not a unicast MAC address (six hex pairs: 00:16:3e:12:34:56)"
            ),
            VifSpecError::BadBridge(b) => write!(
                f,
                "bridge {b:?} is not a bridge name (1-{MAX_BRIDGE_LEN} of A-Z a-z 0-9 . _ -)"
            ),
            VifSpecError::UnknownKey(k) => write!(
                f,
                "unknown key {k:?} (known: mac, bridge, type, backend, script)"
            ),
            VifSpecError::Unsupported { key, value } => {
                let only = match *key {
                    "type" => "vif",
                    _ => "0 (dom0 serves every vif)",
                };
                write!(f, "{key}={value} is not supported (only {only})")
            }
            VifSpecError::Repeated(k) => write!(f, "{k} is given twice"),
            VifSpecError::NotKeyValue(s) => write!(f, "{s:?} is not KEY=VALUE"),
            VifSpecError::TooMany => write!(f, "a domain has at most {MAX_VIFS} vifs"),
        }
    }
}

/// Parses `aa:bb:cc:dd:ee:ff` (also with `-`); refuses multicast addresses.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut n = 0usize;
    for part in s.split([':', '-']) {
        if n == 6 || part.len() != 2 {
            return None;
        }
        out[n] = u8::from_str_radix(part, 16).ok()?;
        n += 1;
    }
    (n == 6 && out[0] & 1 == 0).then_some(out)
}

/// `aa:bb:cc:dd:ee:ff`, lower case, as libxl writes it (`LIBXL_MAC_FMT`).
#[derive(Debug)]
pub struct Mac<'a>(pub &'a [u8; 6]);

impl fmt::Display for Mac<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Whether `b` can name a bridge.
pub fn valid_bridge(b: &str) -> bool {
    !b.is_empty()
        && b.len() <= MAX_BRIDGE_LEN
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// A MAC in Xen's range (`00:16:3e`, the fourth byte below 0x80, as libxl's
/// `libxl__device_nic_setdefault`) made from `seed` (dom0 hashes the domain's
/// UUID and the vif number into it).
pub fn xen_mac(seed: u64) -> [u8; 6] {
    // A 64-bit mix (splitmix64's finaliser), so near seeds give far MACs.
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let b = z.to_le_bytes();
    [0x00, 0x16, 0x3e, b[0] & 0x7f, b[1], b[2]]
}

impl VifSpec {
    /// Parses one `vif = [...]` entry.
    pub fn parse(text: &str) -> Result<VifSpec, VifSpecError> {
        let mut mac: Option<[u8; 6]> = None;
        let mut bridge: Option<String> = None;
        let mut seen_type = false;
        let mut seen_backend = false;
        for field in text.split(',') {
            let field = field.trim();
            if field.is_empty() {
                continue;
            }
            let (k, v) = field
                .split_once('=')
                .ok_or_else(|| VifSpecError::NotKeyValue(field.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            match k {
                "mac" => {
                    if mac.is_some() {
                        return Err(VifSpecError::Repeated("mac"));
                    }
                    mac = Some(parse_mac(v).ok_or_else(|| VifSpecError::BadMac(v.to_string()))?);
                }
                "bridge" => {
                    if bridge.is_some() {
                        return Err(VifSpecError::Repeated("bridge"));
                    }
                    if !valid_bridge(v) {
                        return Err(VifSpecError::BadBridge(v.to_string()));
                    }
                    bridge = Some(v.to_string());
                }
                "type" => {
                    once(&mut seen_type, "type")?;
                    if v != "vif" {
                        return Err(VifSpecError::Unsupported {
                            key: "type",
                            value: v.to_string(),
                        });
                    }
                }
                "backend" => {
                    once(&mut seen_backend, "backend")?;
                    if v != "0" && v != "Domain-0" {
                        return Err(VifSpecError::Unsupported {
                            key: "backend",
                            value: v.to_string(),
                        });
                    }
                }
                "script" => {}
                _ => return Err(VifSpecError::UnknownKey(k.to_string())),
            }
        }
        Ok(VifSpec {
            mac,
            bridge: bridge.unwrap_or_else(|| DEFAULT_BRIDGE.to_string()),
        })
    }
}

fn once(seen: &mut bool, key: &'static str) -> Result<(), VifSpecError> {
    if *seen {
        return Err(VifSpecError::Repeated(key));
    }
    *seen = true;
    Ok(())
}

impl fmt::Display for VifSpec {
    /// The canonical form, which [`VifSpec::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(m) = &self.mac {
            write!(f, "mac={}, ", Mac(m))?;
        }
        write!(f, "bridge={}", self.bridge)
    }
}

/// Parses a whole `vif = [...]` list.
pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<VifSpec>, (usize, VifSpecError)> {
    if items.len() > MAX_VIFS {
        return Err((MAX_VIFS, VifSpecError::TooMany));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, s)| VifSpec::parse(s.as_ref()).map_err(|e| (i, e)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_xl_forms() {
        let v = VifSpec::parse("bridge=xenbr1,mac=00:16:3E:aa:bb:cc").unwrap();
        assert_eq!(v.mac, Some([0, 0x16, 0x3e, 0xaa, 0xbb, 0xcc]));
        assert_eq!(v.bridge, "xenbr1");
        let d = VifSpec::parse("").unwrap();
        assert_eq!((d.mac, d.bridge.as_str()), (None, "xenbr0"));
        assert_eq!(d.to_string(), "bridge=xenbr0");
        let t = VifSpec::parse("type=vif, backend=0, script=vif-bridge").unwrap();
        assert_eq!(t.bridge, "xenbr0");
    }

    #[test]
    fn refuses_bad_entries() {
        use VifSpecError as E;
        let err = |s: &str| VifSpec::parse(s).unwrap_err();
        assert_eq!(
            err("mac=01:16:3e:00:00:01"),
            E::BadMac("01:16:3e:00:00:01".into())
        );
        assert_eq!(
            err("mac=00:16:3e:00:00"),
            E::BadMac("00:16:3e:00:00".into())
        );
        assert_eq!(
            err("mac=00:16:3e:00:00:01:02"),
            E::BadMac("00:16:3e:00:00:01:02".into())
        );
        assert_eq!(
            err("mac=00:16:3e:0g:00:01"),
            E::BadMac("00:16:3e:0g:00:01".into())
        );
        assert!(matches!(err("bridge=a/b"), E::BadBridge(_)));
        assert!(matches!(err("bridge=0123456789abcdef"), E::BadBridge(_)));
        assert_eq!(err("model=e1000"), E::UnknownKey("model".into()));
        assert!(matches!(
            err("type=ioemu"),
            E::Unsupported { key: "type", .. }
        ));
        assert!(matches!(
            err("backend=1"),
            E::Unsupported { key: "backend", .. }
        ));
        assert_eq!(err("bridge=a, bridge=b"), E::Repeated("bridge"));
        assert_eq!(err("xenbr0"), E::NotKeyValue("xenbr0".into()));
        let many: Vec<&str> = (0..=MAX_VIFS).map(|_| "").collect();
        assert_eq!(parse_list(&many).unwrap_err().1, E::TooMany);
        for e in [err("mac=1"), err("bridge="), err("x=1")] {
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn xen_macs_are_in_range_and_spread() {
        let a = xen_mac(1);
        let b = xen_mac(2);
        assert_eq!(&a[..3], &[0, 0x16, 0x3e]);
        assert!(a[3] < 0x80 && b[3] < 0x80);
        assert_ne!(a, b);
        let s = VifSpec {
            mac: Some(a),
            bridge: "xenbr0".into(),
        };
        assert_eq!(VifSpec::parse(&s.to_string()).unwrap(), s);
    }
}
