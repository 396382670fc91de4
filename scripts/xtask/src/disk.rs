//! `--disk` for `scripts/run`: a host raw image file becomes a virtio-blk disk of
//! dom0, named by its serial number (which dom0 reads with `VIRTIO_BLK_T_GET_ID`).
//!
//! `PATH[,name=NAME][,ro]`, or `new:PATH:SIZE[,name=NAME]` to create a sparse
//! image of SIZE (QEMU's syntax: `64M`, `2G`) first, refusing to overwrite a
//! file that exists.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Longest name: virtio-blk's id string is 20 bytes.
pub const MAX_NAME: usize = 20;

/// One disk for dom0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The image file.
    pub path: PathBuf,
    /// dom0's name for it.
    pub name: String,
    /// Read-only for the guest.
    pub readonly: bool,
    /// Create a sparse image of this many bytes first.
    pub create: Option<u64>,
}

impl DiskSpec {
    /// Parses a `--disk` value; `index` names a disk without `name=` (`vda`, ...).
    pub fn parse(spec: &str, index: usize) -> Result<DiskSpec> {
        let mut parts = spec.split(',');
        let first = parts.next().unwrap_or_default();
        let (path, create) = match first.strip_prefix("new:") {
            Some(rest) => {
                let Some((path, size)) = rest.rsplit_once(':') else {
                    bail!("--disk {spec:?}: new: needs PATH:SIZE (new:disk.img:64M)");
                };
                (
                    path,
                    Some(parse_size(size).with_context(|| format!("--disk {spec:?}"))?),
                )
            }
            None => (first, None),
        };
        if path.is_empty() {
            bail!("--disk {spec:?}: no image file");
        }
        let mut d = DiskSpec {
            path: PathBuf::from(path),
            name: format!(
                "vd{}",
                char::from(b'a' + u8::try_from(index % 26).unwrap_or(0))
            ),
            readonly: false,
            create,
        };
        for p in parts {
            match p.split_once('=') {
                Some(("name", n)) => d.name = n.to_string(),
                None if p == "ro" => d.readonly = true,
                _ => bail!("--disk {spec:?}: unknown option {p:?} (name=NAME, ro)"),
            }
        }
        let name_ok = d
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if d.name.is_empty() || d.name.len() > MAX_NAME || !name_ok {
            bail!(
                "--disk {spec:?}: name {:?} must be 1..{MAX_NAME} letters, digits, '-' or '_'",
                d.name
            );
        }
        if d.readonly && d.create.is_some() {
            bail!("--disk {spec:?}: a new image cannot be read-only");
        }
        Ok(d)
    }

    /// Creates the image if asked to; checks that it exists and is a whole
    /// number of sectors.
    pub fn prepare(&self) -> Result<()> {
        if let Some(size) = self.create {
            if self.path.exists() {
                bail!(
                    "--disk new:{}: the file exists; give its path without new: to use it",
                    self.path.display()
                );
            }
            let f = std::fs::File::create_new(&self.path)
                .with_context(|| format!("creating {}", self.path.display()))?;
            f.set_len(size)
                .with_context(|| format!("sizing {}", self.path.display()))?;
        }
        let meta = std::fs::metadata(&self.path)
            .with_context(|| format!("--disk {}: cannot use the image", self.path.display()))?;
        if !meta.is_file() {
            bail!("--disk {}: not a regular file", self.path.display());
        }
        if meta.len() == 0 || meta.len() % 512 != 0 {
            bail!(
                "--disk {}: {} bytes is not a whole number of 512-byte sectors",
                self.path.display(),
                meta.len()
            );
        }
        Ok(())
    }

    /// QEMU's arguments for disk number `index`.
    pub fn qemu_args(&self, index: usize) -> Vec<String> {
        let path = quote(&self.path);
        let ro = if self.readonly { ",readonly=on" } else { "" };
        vec![
            "-drive".into(),
            format!("file={path},format=raw,if=none,id=disk{index},cache=writeback{ro}"),
            "-device".into(),
            format!("virtio-blk-pci,drive=disk{index},serial={}", self.name),
        ]
    }
}

/// QEMU doubles a comma inside an option value.
fn quote(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

/// `64M`, `2G`, `512K`, `1048576`: bytes, a positive multiple of 512.
pub fn parse_size(s: &str) -> Result<u64> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("size {s:?}: not a number (64M, 2G)"))?;
    let bytes = n
        .checked_mul(mult)
        .with_context(|| format!("size {s:?} is too large"))?;
    if bytes == 0 || bytes % 512 != 0 {
        bail!("size {s:?}: must be a positive multiple of 512 bytes");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let d = DiskSpec::parse("/tmp/a.img,name=data,ro", 0).unwrap();
        assert_eq!(d.path, PathBuf::from("/tmp/a.img"));
        assert_eq!(
            (d.name.as_str(), d.readonly, d.create),
            ("data", true, None)
        );
        let d = DiskSpec::parse("new:/tmp/b.img:64M", 1).unwrap();
        assert_eq!((d.name.as_str(), d.create), ("vdb", Some(64 << 20)));
        assert_eq!(
            d.qemu_args(3),
            [
                "-drive",
                "file=/tmp/b.img,format=raw,if=none,id=disk3,cache=writeback",
                "-device",
                "virtio-blk-pci,drive=disk3,serial=vdb"
            ]
        );
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, want) in [
            ("", "no image file"),
            ("a.img,name=", "must be 1..20"),
            ("a.img,name=has space", "must be 1..20"),
            ("a.img,name=abcdefghijklmnopqrstu", "must be 1..20"),
            ("a.img,fast", "unknown option"),
            ("new:a.img", "needs PATH:SIZE"),
            ("new:a.img:0", "positive multiple"),
            ("new:a.img:100", "positive multiple"),
            ("new:a.img:lots", "not a number"),
            ("new:a.img:64M,ro", "cannot be read-only"),
        ] {
            let e = format!("{:#}", DiskSpec::parse(spec, 0).unwrap_err());
            assert!(e.contains(want), "{spec:?}: {e}");
        }
    }

    #[test]
    fn prepare_creates_sparse_images_and_checks_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.img");
        let spec = format!("new:{}:1M", p.display());
        let d = DiskSpec::parse(&spec, 0).unwrap();
        d.prepare().unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 1 << 20);
        let again = format!("{:#}", d.prepare().unwrap_err());
        assert!(again.contains("the file exists"), "{again}");
        std::fs::write(&p, [0u8; 100]).unwrap();
        let odd = DiskSpec::parse(&p.to_string_lossy(), 0).unwrap();
        assert!(format!("{:#}", odd.prepare().unwrap_err()).contains("512-byte sectors"));
        let missing = DiskSpec::parse("/nonexistent/x.img", 0).unwrap();
        assert!(format!("{:#}", missing.prepare().unwrap_err()).contains("cannot use the image"));
    }
}
