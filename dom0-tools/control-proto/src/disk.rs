//! Disk specifications in `xl`'s syntax (`xl-disk-configuration(5)`), as a
//! domain config's `disk = [...]` lists them, and the virtual-device numbers
//! that `xl` derives from a `vdev` (`libxl__device_disk_dev_number`).
//!
//! ```
//! use control_proto::disk::DiskSpec;
//! let d = DiskSpec::parse("vdev=xvda, access=rw, target=data").unwrap();
//! assert_eq!((d.target.as_str(), d.devid, d.readonly), ("data", 51712, false));
//! assert_eq!(d.to_string(), "vdev=xvda, access=rw, target=data");
//! ```
//!
//! A `target` names one of dom0's disks (`scripts/run --disk PATH,name=NAME`)
//! or a volume carved from one. Such names hold no commas, so `target=` may
//! stand anywhere in the list (`xl` takes everything after `target=` as the
//! path, so it must come last there; both readings agree on every name this
//! toolstack accepts). Keys: `target` (required), `vdev` (required), `access` (`rw`/`w`,
//! the default, or `ro`/`r`), `format` (`raw` only), `devtype` (`disk` only),
//! `backendtype` (`phy` only) and `backend` (`0` or `Domain-0` only: dom0
//! serves every disk). The positional form `target,format,vdev,access` is
//! accepted too.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

/// Disks one domain may have (xl has no fixed limit; this bounds a request).
pub const MAX_DISKS: usize = 16;
/// Longest `target` accepted.
pub const MAX_TARGET_LEN: usize = 64;

/// One parsed disk specification.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DiskSpec {
    /// The disk or volume that backs it.
    pub target: String,
    /// The guest's name for it (`xvda`, `xvdb1`, `sda`, `d0p1`, or a number).
    pub vdev: String,
    /// The virtual-device number (`device/vbd/<devid>`).
    pub devid: u32,
    /// `access=ro`.
    pub readonly: bool,
}

/// Why a disk specification was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskSpecError {
    /// No `target=`.
    NoTarget,
    /// No `vdev=`.
    NoVdev,
    /// A `vdev` xl would not accept.
    BadVdev(String),
    /// An `access` other than rw/w/ro/r.
    BadAccess(String),
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
    /// A target that is empty, too long, or has characters outside
    /// `[A-Za-z0-9._-]`.
    BadTarget(String),
    /// More positional fields than `target,format,vdev,access`.
    TooManyFields,
}

impl fmt::Display for DiskSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSpecError::NoTarget => f.write_str("no target= (the disk or volume to use)"),
            DiskSpecError::NoVdev => f.write_str("no vdev= (the guest's name for it, e.g. xvda)"),
            DiskSpecError::BadVdev(v) => write!(
                f,
                "vdev {v:?} is not a virtual disk name (xvda, xvdb1, sda, hda, d0p1 or a number)"
            ),
            DiskSpecError::BadAccess(v) => {
                write!(f, "access {v:?}: expected rw, w, ro or r")
            }
            DiskSpecError::UnknownKey(k) => write!(
                f,
                "unknown key {k:?} (known: target, vdev, access, format, devtype, backendtype, \
                 backend)"
            ),
            DiskSpecError::Unsupported { key, value } => {
                let only = match *key {
                    "format" => "raw",
                    "devtype" => "disk",
                    "backendtype" => "phy",
                    _ => "0 (dom0 serves every disk)",
                };
                write!(f, "{key}={value} is not supported (only {only})")
            }
            DiskSpecError::Repeated(k) => write!(f, "{k} is given twice"),
            DiskSpecError::BadTarget(t) => write!(
                f,
                "target {t:?} is not a disk or volume name (1-{MAX_TARGET_LEN} of A-Z a-z 0-9 . _ -)"
            ),
            DiskSpecError::TooManyFields => {
                f.write_str("too many positional fields (target,format,vdev,access)")
            }
        }
    }
}

/// Whether `t` can name a disk or a volume.
pub fn valid_target(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= MAX_TARGET_LEN
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl DiskSpec {
    /// Parses one `disk = [...]` entry.
    pub fn parse(text: &str) -> Result<DiskSpec, DiskSpecError> {
        let mut target: Option<String> = None;
        let mut vdev: Option<String> = None;
        let mut access: Option<String> = None;
        let mut positional = 0usize;
        let mut rest = text.trim();
        while !rest.is_empty() {
            let (field, tail) = rest.split_once(',').unwrap_or((rest, ""));
            rest = tail.trim_start();
            let field = field.trim();
            if let Some((k, v)) = field.split_once('=') {
                let (k, v) = (k.trim(), v.trim());
                match k {
                    "target" => set(&mut target, "target", v)?,
                    "vdev" => set(&mut vdev, "vdev", v)?,
                    "access" => set(&mut access, "access", v)?,
                    "format" => only("format", v, &["raw"])?,
                    "devtype" => only("devtype", v, &["disk"])?,
                    "backendtype" => only("backendtype", v, &["phy"])?,
                    "backend" => only("backend", v, &["0", "Domain-0"])?,
                    _ => return Err(DiskSpecError::UnknownKey(k.to_string())),
                }
                continue;
            }
            // Positional: target, format, vdev, access (empty fields skipped).
            match positional {
                0 if !field.is_empty() => set(&mut target, "target", field)?,
                1 if !field.is_empty() => only("format", field, &["raw"])?,
                2 if !field.is_empty() => set(&mut vdev, "vdev", field)?,
                3 if !field.is_empty() => set(&mut access, "access", field)?,
                0..=3 => {}
                _ => return Err(DiskSpecError::TooManyFields),
            }
            positional += 1;
        }
        let target = target.ok_or(DiskSpecError::NoTarget)?;
        if !valid_target(&target) {
            return Err(DiskSpecError::BadTarget(target));
        }
        let vdev = vdev.ok_or(DiskSpecError::NoVdev)?;
        let devid = vdev_number(&vdev).ok_or_else(|| DiskSpecError::BadVdev(vdev.clone()))?;
        let readonly = match access.as_deref() {
            None | Some("rw" | "w") => false,
            Some("ro" | "r") => true,
            Some(a) => return Err(DiskSpecError::BadAccess(a.to_string())),
        };
        Ok(DiskSpec {
            target,
            vdev,
            devid,
            readonly,
        })
    }

    /// `xl block-list`'s and the backend's `mode`: `w` or `r`.
    pub fn mode(&self) -> &'static str {
        if self.readonly { "r" } else { "w" }
    }
}

impl fmt::Display for DiskSpec {
    /// The canonical form, which [`DiskSpec::parse`] reads back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vdev={}, access={}, target={}",
            self.vdev,
            if self.readonly { "ro" } else { "rw" },
            self.target
        )
    }
}

fn set(slot: &mut Option<String>, key: &'static str, v: &str) -> Result<(), DiskSpecError> {
    if slot.is_some() {
        return Err(DiskSpecError::Repeated(key));
    }
    *slot = Some(v.to_string());
    Ok(())
}

fn only(key: &'static str, v: &str, allowed: &[&str]) -> Result<(), DiskSpecError> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(DiskSpecError::Unsupported {
            key,
            value: v.to_string(),
        })
    }
}

/// The drive letters of `name` after `prefix` as a base-26 index (`a` = 0,
/// `z` = 25, `aa` = 26, as xl counts) and the partition after them; `None`
/// if it does not match or exceeds `max_disk`/`max_part`.
fn disk_and_partition(
    name: &str,
    prefix: &str,
    max_disk: u32,
    max_part: u32,
) -> Option<(u32, u32)> {
    let rest = name.strip_prefix(prefix)?;
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    if letters == 0 {
        return None;
    }
    let mut disk: i64 = -1;
    for b in rest.bytes().take(letters) {
        disk = (disk + 1) * 26 + i64::from(b - b'a');
        if disk > i64::from(max_disk) {
            return None;
        }
    }
    let part = &rest[letters..];
    let partition = if part.is_empty() {
        0
    } else if part.starts_with('0') || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    } else {
        part.parse::<u32>().ok().filter(|p| *p <= max_part)?
    };
    Some((u32::try_from(disk).ok()?, partition))
}

/// The virtual-device number of `vdev`, as `xl` computes it: `xvdX[N]` and
/// `dNpM` are `(202 << 8) | disk << 4 | part` for disks 0-15 and partitions
/// 0-15, else the extended form `(1 << 28) | disk << 8 | part`; `hdX[N]` and
/// `sdX[N]` take the IDE and SCSI majors; a plain number is taken as is.
pub fn vdev_number(vdev: &str) -> Option<u32> {
    let xvd = disk_and_partition(vdev, "xvd", (1 << 20) - 1, 255).or_else(|| {
        let (d, p) = vdev.strip_prefix('d')?.split_once('p')?;
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !ok(d) || !ok(p) {
            return None;
        }
        let (d, p) = (d.parse::<u32>().ok()?, p.parse::<u32>().ok()?);
        (d < (1 << 20) && p < 256).then_some((d, p))
    });
    if let Some((disk, part)) = xvd {
        return Some(if disk <= 15 && part <= 15 {
            (202 << 8) | (disk << 4) | part
        } else {
            (1 << 28) | (disk << 8) | part
        });
    }
    if let Some(n) = parse_number(vdev) {
        return Some(n);
    }
    if let Some((disk, part)) = disk_and_partition(vdev, "hd", 3, 63) {
        let major = if disk < 2 { 3 } else { 22 };
        return Some((major << 8) | ((disk & 1) << 6) | part);
    }
    let (disk, part) = disk_and_partition(vdev, "sd", 15, 15)?;
    Some((8 << 8) | (disk << 4) | part)
}

/// A number as `strtoul(.., 0)` reads it (decimal, `0x` hex, `0` octal), at
/// most `i32::MAX`.
fn parse_number(s: &str) -> Option<u32> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .filter(|n| i32::try_from(*n).is_ok())
}

/// Parses a whole `disk = [...]` list; also refuses two disks with one vdev.
pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Vec<DiskSpec>, (usize, DiskSpecError)> {
    let mut out: Vec<DiskSpec> = Vec::new();
    if items.len() > MAX_DISKS {
        return Err((MAX_DISKS, DiskSpecError::TooManyFields));
    }
    for (i, s) in items.iter().enumerate() {
        let d = DiskSpec::parse(s.as_ref()).map_err(|e| (i, e))?;
        if out.iter().any(|o| o.devid == d.devid) {
            return Err((i, DiskSpecError::Repeated("vdev")));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_numbers_match_xl() {
        assert_eq!(vdev_number("xvda"), Some(51712));
        assert_eq!(vdev_number("xvdb"), Some(51728));
        assert_eq!(vdev_number("xvda1"), Some(51713));
        assert_eq!(vdev_number("xvdp15"), Some((202 << 8) | (15 << 4) | 15));
        assert_eq!(vdev_number("xvdq"), Some((1 << 28) | (16 << 8)));
        assert_eq!(vdev_number("xvdaa"), Some((1 << 28) | (26 << 8)));
        assert_eq!(vdev_number("xvda16"), Some((1 << 28) | 16));
        assert_eq!(vdev_number("d0p1"), Some(51713));
        assert_eq!(vdev_number("hda"), Some(3 << 8));
        assert_eq!(vdev_number("hdb1"), Some((3 << 8) | (1 << 6) | 1));
        assert_eq!(vdev_number("hdc"), Some(22 << 8));
        assert_eq!(vdev_number("sda"), Some(8 << 8));
        assert_eq!(vdev_number("sdb2"), Some((8 << 8) | (1 << 4) | 2));
        assert_eq!(vdev_number("51712"), Some(51712));
        assert_eq!(vdev_number("0xca00"), Some(51712));
        for bad in [
            "", "xvd", "xvda0", "xvda01", "xvdA", "hde", "sdq", "sda16", "vda", "d0", "x",
        ] {
            assert_eq!(vdev_number(bad), None, "{bad}");
        }
    }

    #[test]
    fn specs_parse_both_forms() {
        let d = DiskSpec::parse("target=vol1, vdev=xvdb, access=ro").unwrap();
        assert_eq!(
            d,
            DiskSpec {
                target: "vol1".into(),
                vdev: "xvdb".into(),
                devid: 51728,
                readonly: true
            }
        );
        let d = DiskSpec::parse("data,raw,xvda,w").unwrap();
        assert_eq!(
            (d.target.as_str(), d.devid, d.readonly),
            ("data", 51712, false)
        );
        let d = DiskSpec::parse("data,,xvda").unwrap();
        assert!(!d.readonly);
        let d = DiskSpec::parse(" vdev = xvdc ,format=raw,backend=0, target=d-1.x ").unwrap();
        assert_eq!(DiskSpec::parse(&d.to_string()), Ok(d));
    }

    #[test]
    fn bad_specs_say_why() {
        let e = |s: &str| DiskSpec::parse(s).unwrap_err();
        assert_eq!(e("vdev=xvda"), DiskSpecError::NoTarget);
        assert_eq!(e("target=a"), DiskSpecError::NoVdev);
        assert_eq!(
            e("vdev=vda, target=a"),
            DiskSpecError::BadVdev("vda".into())
        );
        assert_eq!(
            e("vdev=xvda, access=rx, target=a"),
            DiskSpecError::BadAccess("rx".into())
        );
        assert_eq!(
            e("vdev=xvda, colo=1, target=a"),
            DiskSpecError::UnknownKey("colo".into())
        );
        assert!(matches!(
            e("vdev=xvda, format=qcow2, target=a"),
            DiskSpecError::Unsupported { key: "format", .. }
        ));
        assert!(matches!(
            e("vdev=xvda, backend=3, target=a"),
            DiskSpecError::Unsupported { key: "backend", .. }
        ));
        assert_eq!(
            e("vdev=xvda, vdev=xvdb, target=a"),
            DiskSpecError::Repeated("vdev")
        );
        assert_eq!(
            e("vdev=xvda, target=/dev/sda"),
            DiskSpecError::BadTarget("/dev/sda".into())
        );
        assert_eq!(e("a,raw,xvda,rw,extra"), DiskSpecError::TooManyFields);
        for err in [e("vdev=xvda"), e("target=a")] {
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            parse_list(&["target=a, vdev=xvda", "vdev=51712, target=b"])
                .unwrap_err()
                .0,
            1
        );
    }
}
