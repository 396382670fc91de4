//! Domain config files: TOML in the spirit of xl.cfg, plus `KEY=VALUE` overrides.
//!
//! ```toml
//! name = "hello"          # required
//! image = "hello"         # an image dom0 has; or kernel = "path/to/pv-elf"
//! ramdisk = "initrd.cpio" # uploaded as the start_info module (default none)
//! memory = 16             # MiB (default 32)
//! vcpus = 1               # default 1, at most 32
//! cpus = "0-3,^1"         # hard affinity, xl's syntax (default: every CPU; see below)
//! cpus_soft = "2-3"       # soft affinity, the same syntax (default: no preference)
//! cmdline = ""            # default ""
//! on_poweroff = "destroy" # or "preserve", "restart" (default destroy)
//! on_reboot = "restart"   # or "destroy", "preserve" (default restart)
//! on_crash = "destroy"    # or "preserve", "restart" (default destroy)
//! uuid = "6ba7b810-9dad-41d1-80b4-00c04fd430c8"  # default: dom0 makes one up
//! disk = ["target=data, vdev=xvda, access=rw"]     # xl's disk syntax (default none)
//! vif = ["mac=00:16:3e:01:02:03, bridge=xenbr0"]   # xl's vif syntax (default none)
//! ```
//!
//! `cpus` pins vCPUs to physical CPUs as xl's `cpus =` does
//! ([`control_proto::cpus`]): one list for every vCPU (`"2"`, `"0-3,5"`, `"all"`,
//! `"all,^1"`, `"0-7,^2-3"`: items applied left to right to a map that starts
//! empty, so `"^1"` alone is refused), or a list of lists, entry i for vCPU i
//! (`["0-1", "2"]`; vCPUs past the list run on every CPU, entries past `vcpus` are
//! ignored). CPU numbers go from 0 to 255; a CPU the machine lacks is refused by
//! the hypervisor when the domain is built (a map with none of its CPUs fails
//! the create, and nothing is left behind).
//!
//! `cpus_soft` is xl's soft affinity, exactly as `cpus` (the same syntax and
//! per-vCPU rules): the CPUs a vCPU prefers among those it may run on. A soft
//! map with no CPU of the machine is not refused; it just has no effect.
//!
//! Every error names the file and line (or the override) and the key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use control_proto::cpus::{Affinity, CpuMap, CpusValue, affinity_maps};
use control_proto::disk::DiskSpec;
use control_proto::{
    ExitAction, MAX_MEMORY_MIB, MIN_MEMORY_MIB, validate_cmdline, validate_image_name,
    validate_memory_mib, validate_name, validate_vcpus,
};
use toml_edit::{Document, Value};

/// Memory when the config does not say, in MiB.
pub const DEFAULT_MEMORY_MIB: u32 = 32;

/// The keys a config may set, in the order the docs list them.
pub const KEYS: &[&str] = &[
    "name",
    "kernel",
    "image",
    "ramdisk",
    "memory",
    "vcpus",
    "cpus",
    "cpus_soft",
    "cmdline",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "uuid",
    "disk",
    "vif",
];

/// Where the kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A file on the host, uploaded before the create (already resolved against
    /// the config's directory).
    File(PathBuf),
    /// An image dom0 already has.
    Image(String),
}

/// A checked domain config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// Domain name.
    pub name: String,
    /// The kernel.
    pub kernel: KernelSource,
    /// `ramdisk = "PATH"`: a file uploaded as the initial ramdisk (resolved
    /// against the config's directory).
    pub ramdisk: Option<PathBuf>,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// `cpus = ...`: hard affinity, map i for vCPU i (vCPUs past the list run
    /// anywhere; empty: no pinning).
    pub cpus: Vec<CpuMap>,
    /// `cpus_soft = ...`: soft affinity, map i for vCPU i, as `cpus` (empty: no
    /// preference).
    pub cpus_soft: Vec<CpuMap>,
    /// Kernel command line.
    pub cmdline: String,
    /// What dom0 does when the domain powers off.
    pub on_poweroff: ExitAction,
    /// What dom0 does when the domain reboots.
    pub on_reboot: ExitAction,
    /// What dom0 does when the domain crashes.
    pub on_crash: ExitAction,
    /// `uuid = "..."`: the domain's UUID (dom0 makes one up without it).
    pub uuid: Option<[u8; 16]>,
    /// `disk = [...]`: disks in xl's syntax (`control_proto::disk`).
    pub disks: Vec<DiskSpec>,
    /// `vif = [...]`: network interfaces in xl's syntax (`control_proto::vif`).
    pub vifs: Vec<control_proto::vif::VifSpec>,
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|&c| c != '-').collect();
    let dashes_ok = s.len() == 36
        && s.char_indices()
            .all(|(i, c)| (c == '-') == matches!(i, 8 | 13 | 18 | 23));
    if !dashes_ok || hex.len() != 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut u = [0u8; 16];
    for (i, b) in u.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(u)
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the config file.
    Line(usize),
    /// A `KEY=VALUE` argument.
    Override(String),
}

/// A config that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file as the user named it.
    pub file: String,
    /// Where in it (or on the command line); `None` for the file as a whole.
    pub origin: Option<Origin>,
    /// The key at fault, if one is.
    pub key: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            None => write!(f, "{}: ", self.file)?,
            Some(Origin::Line(n)) => write!(f, "{}:{n}: ", self.file)?,
            Some(Origin::Override(arg)) => write!(f, "command line `{arg}`: ")?,
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// One setting before conversion.
struct Setting {
    key: String,
    value: Value,
    origin: Origin,
}

/// Reads and checks the config at `path`, then applies `overrides` (`KEY=VALUE`).
pub fn load(path: &Path, overrides: &[String]) -> Result<DomainConfig, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file.clone(),
        origin: None,
        key: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    let dir = path.parent().unwrap_or(Path::new(""));
    parse(&text, &file, dir, overrides)
}

/// Checks config `text` (from `file`, for messages), resolving a file `kernel`
/// against `dir`, and applies `overrides`. An override's `kernel` is relative to
/// the current directory; an override of `kernel` drops the file's `image` and
/// the other way round.
pub fn parse(
    text: &str,
    file: &str,
    dir: &Path,
    overrides: &[String],
) -> Result<DomainConfig, ConfigError> {
    let err = |origin: Option<Origin>, key: Option<&str>, message: String| ConfigError {
        file: file.to_string(),
        origin,
        key: key.map(String::from),
        message,
    };
    let doc = Document::parse(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        err(
            line.map(Origin::Line),
            None,
            format!("not valid TOML: {}", e.message().trim_end()),
        )
    })?;

    let mut settings: Vec<Setting> = Vec::new();
    for (key, item) in doc.iter() {
        let origin = Origin::Line(
            doc.key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span())
                .map_or(1, |s| line_of(text, s.start)),
        );
        let Some(value) = item.as_value() else {
            return Err(err(
                Some(origin),
                Some(key),
                format!(
                    "is a table; a domain config is flat `key = value` lines ({})",
                    KEYS.join(", ")
                ),
            ));
        };
        check_known(key).map_err(|m| err(Some(origin.clone()), None, m))?;
        settings.push(Setting {
            key: key.to_string(),
            value: value.clone(),
            origin,
        });
    }
    for arg in overrides {
        let origin = Origin::Override(arg.clone());
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(err(
                Some(origin),
                None,
                "an override is KEY=VALUE, like memory=64".to_string(),
            ));
        };
        let key = key.trim();
        check_known(key).map_err(|m| err(Some(origin.clone()), None, m))?;
        let value = Value::from_str(raw.trim()).unwrap_or_else(|_| Value::from(raw));
        let replaces: &[&str] = match key {
            "kernel" | "image" => &["kernel", "image"],
            _ => &[],
        };
        settings.retain(|s| s.key != key && !replaces.contains(&s.key.as_str()));
        settings.push(Setting {
            key: key.to_string(),
            value,
            origin,
        });
    }

    let mut name = None;
    let mut kernel: Option<(KernelSource, Origin, &str)> = None;
    let mut cfg = DomainConfig {
        name: String::new(),
        kernel: KernelSource::Image(String::new()),
        ramdisk: None,
        memory_mib: DEFAULT_MEMORY_MIB,
        vcpus: 1,
        cpus: Vec::new(),
        cpus_soft: Vec::new(),
        cmdline: String::new(),
        on_poweroff: ExitAction::Destroy,
        on_reboot: ExitAction::Restart,
        on_crash: ExitAction::Destroy,
        uuid: None,
        disks: Vec::new(),
        vifs: Vec::new(),
    };
    // `cpus` and `cpus_soft` are read once `vcpus` is known, wherever it is set.
    let mut cpus: Option<(CpusSpec, &Setting)> = None;
    let mut cpus_soft: Option<(CpusSpec, &Setting)> = None;
    for s in &settings {
        let key = s.key.as_str();
        let fail = |m: String| err(Some(s.origin.clone()), Some(key), m);
        match key {
            "name" => {
                let v = string(&s.value).map_err(fail)?;
                validate_name(v).map_err(|e| fail(e.to_string()))?;
                name = Some(v.to_string());
            }
            "kernel" | "image" => {
                let v = string(&s.value).map_err(fail)?;
                if let Some((_, origin, other)) = &kernel {
                    let at = match origin {
                        Origin::Line(n) => format!("line {n}"),
                        Origin::Override(a) => format!("`{a}`"),
                    };
                    return Err(fail(format!(
                        "`{other}` is already set ({at}); keep one: `kernel` uploads a PV \
                         kernel from the host, `image` boots one dom0 already has"
                    )));
                }
                let source = if key == "kernel" {
                    if v.is_empty() {
                        return Err(fail("is empty; give the path of a PV kernel".to_string()));
                    }
                    let base = match s.origin {
                        Origin::Line(_) => dir,
                        Origin::Override(_) => Path::new(""),
                    };
                    KernelSource::File(base.join(v))
                } else {
                    validate_image_name(v).map_err(|e| fail(e.to_string()))?;
                    KernelSource::Image(v.to_string())
                };
                kernel = Some((source, s.origin.clone(), key));
            }
            "ramdisk" => {
                let v = string(&s.value).map_err(fail)?;
                if v.is_empty() {
                    return Err(fail(
                        "is empty; give the path of an initial ramdisk (a cpio archive)"
                            .to_string(),
                    ));
                }
                let base = match s.origin {
                    Origin::Line(_) => dir,
                    Origin::Override(_) => Path::new(""),
                };
                cfg.ramdisk = Some(base.join(v));
            }
            "memory" => {
                let n = integer(&s.value, "an integer number of MiB").map_err(fail)?;
                cfg.memory_mib = match u32::try_from(n) {
                    Ok(m) => {
                        validate_memory_mib(m).map_err(|e| fail(e.to_string()))?;
                        m
                    }
                    Err(_) if n < 0 => {
                        return Err(fail(format!(
                            "{n} MiB is too little; a domain needs at least {MIN_MEMORY_MIB} MiB"
                        )));
                    }
                    Err(_) => {
                        return Err(fail(format!(
                            "{n} MiB is too much; at most {MAX_MEMORY_MIB} MiB is allowed"
                        )));
                    }
                };
            }
            "vcpus" => {
                let n = integer(&s.value, "an integer number of vCPUs").map_err(fail)?;
                let n = u32::try_from(n).unwrap_or(if n < 0 { 0 } else { u32::MAX });
                validate_vcpus(n).map_err(|e| fail(e.to_string()))?;
                cfg.vcpus = n;
            }
            "cpus" => cpus = Some((cpus_spec(&s.value).map_err(fail)?, s)),
            "cpus_soft" => cpus_soft = Some((cpus_spec(&s.value).map_err(fail)?, s)),
            "cmdline" => {
                let v = string(&s.value).map_err(fail)?;
                validate_cmdline(v).map_err(|e| fail(e.to_string()))?;
                cfg.cmdline = v.to_string();
            }
            "on_poweroff" | "on_reboot" | "on_crash" => {
                let v = string(&s.value).map_err(fail)?;
                let action = ExitAction::from_name(v).ok_or_else(|| {
                    fail(format!(
                        "expected \"destroy\", \"restart\" or \"preserve\", got {v:?} \
                         (xl's rename-restart, coredump-* and soft-reset are not offered)"
                    ))
                })?;
                match key {
                    "on_crash" => cfg.on_crash = action,
                    "on_reboot" => cfg.on_reboot = action,
                    _ => cfg.on_poweroff = action,
                }
            }
            "uuid" => {
                let v = string(&s.value).map_err(fail)?;
                cfg.uuid = Some(parse_uuid(v).ok_or_else(|| {
                    fail(format!(
                        "expected a UUID like \"6ba7b810-9dad-41d1-80b4-00c04fd430c8\", got {v:?}"
                    ))
                })?);
            }
            "disk" => {
                let items = disk_list(&s.value).map_err(fail)?;
                cfg.disks = control_proto::disk::parse_list(&items)
                    .map_err(|(i, e)| fail(format!("entry {}: {e}", i + 1)))?;
            }
            "vif" => {
                let items = disk_list(&s.value).map_err(fail)?;
                cfg.vifs = control_proto::vif::parse_list(&items)
                    .map_err(|(i, e)| fail(format!("entry {}: {e}", i + 1)))?;
            }
            _ => unreachable!("keys are checked against KEYS above"),
        }
    }
    for (which, set) in [(Affinity::Hard, cpus), (Affinity::Soft, cpus_soft)] {
        let Some((spec, s)) = set else { continue };
        let value = match &spec {
            CpusSpec::Single(one) => CpusValue::Single(one),
            CpusSpec::PerVcpu(list) => {
                CpusValue::PerVcpu(list.iter().map(String::as_str).collect())
            }
        };
        let maps = affinity_maps(&value, cfg.vcpus).map_err(|(entry, e)| {
            let at = entry.map_or_else(String::new, |i| format!("entry {}: ", i + 1));
            err(
                Some(s.origin.clone()),
                Some(which.key()),
                format!("{at}{e}"),
            )
        })?;
        match which {
            Affinity::Hard => cfg.cpus = maps,
            Affinity::Soft => cfg.cpus_soft = maps,
        }
    }
    cfg.name = name.ok_or_else(|| {
        err(
            None,
            Some("name"),
            "missing; every domain needs one, e.g. name = \"hello\"".to_string(),
        )
    })?;
    cfg.kernel = kernel.map(|(k, _, _)| k).ok_or_else(|| {
        err(
            None,
            None,
            "no kernel: set kernel = \"path/to/pv-kernel\" (a file to upload) or \
             image = \"name\" (an image dom0 has; see `dom0ctl images`)"
                .to_string(),
        )
    })?;
    Ok(cfg)
}

/// A `cpus` or `cpus_soft` value as written.
enum CpusSpec {
    Single(String),
    PerVcpu(Vec<String>),
}

/// `cpus = "0-3"` (a number is taken as its text, so `cpus=2` on the command
/// line works) or `cpus = ["0", "1-2"]`; `cpus_soft` alike.
fn cpus_spec(v: &Value) -> Result<CpusSpec, String> {
    let one = |v: &Value| match v {
        Value::String(s) => Some(s.value().clone()),
        Value::Integer(i) => Some(i.value().to_string()),
        _ => None,
    };
    if let Some(s) = one(v) {
        return Ok(CpusSpec::Single(s));
    }
    let arr = v.as_array().ok_or_else(|| {
        format!(
            "expected a CPU list like \"0-3,5\" or one per vCPU like [\"0\", \"1\"], got {}",
            shown(v)
        )
    })?;
    arr.iter()
        .enumerate()
        .map(|(i, item)| {
            one(item).ok_or_else(|| {
                format!(
                    "entry {}: expected a CPU list like \"0-3,5\", got {}",
                    i + 1,
                    shown(item)
                )
            })
        })
        .collect::<Result<_, _>>()
        .map(CpusSpec::PerVcpu)
}

/// The strings of a `disk = [...]` value (a single string counts as one disk).
fn disk_list(v: &Value) -> Result<Vec<String>, String> {
    if let Some(s) = v.as_str() {
        return Ok(vec![s.to_string()]);
    }
    let arr = v.as_array().ok_or_else(|| {
        format!(
            "expected a list of disk specifications like [\"target=data, vdev=xvda\"], got {}",
            shown(v)
        )
    })?;
    arr.iter()
        .map(|item| {
            item.as_str().map(str::to_string).ok_or_else(|| {
                format!(
                    "expected each disk as a string like \"target=data, vdev=xvda\", got {}",
                    shown(item)
                )
            })
        })
        .collect()
}

fn check_known(key: &str) -> Result<(), String> {
    if KEYS.contains(&key) {
        Ok(())
    } else {
        Err(format!(
            "unknown key `{key}`; the keys are {}",
            KEYS.join(", ")
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A value as the user wrote it, for "got ..." in messages.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{:?}", s.value()),
        Value::Integer(i) => i.value().to_string(),
        Value::Float(x) => x.value().to_string(),
        Value::Boolean(b) => b.value().to_string(),
        Value::Datetime(d) => d.value().to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::InlineTable(_) => "a table".to_string(),
    }
}

fn string(v: &Value) -> Result<&str, String> {
    v.as_str()
        .ok_or_else(|| format!("expected a string, got {}", shown(v)))
}

fn integer(v: &Value, what: &str) -> Result<i64, String> {
    v.as_integer()
        .ok_or_else(|| format!("expected {what}, got {}", shown(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str, overrides: &[&str]) -> Result<DomainConfig, String> {
        let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        parse(text, "hello.toml", Path::new("/cfg"), &o).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let c = p("name = \"hello\"\nimage = \"hello\"\n", &[]).unwrap();
        assert_eq!(
            c,
            DomainConfig {
                name: "hello".into(),
                kernel: KernelSource::Image("hello".into()),
                ramdisk: None,
                memory_mib: DEFAULT_MEMORY_MIB,
                vcpus: 1,
                cpus: Vec::new(),
                cpus_soft: Vec::new(),
                cmdline: String::new(),
                on_poweroff: ExitAction::Destroy,
                on_reboot: ExitAction::Restart,
                on_crash: ExitAction::Destroy,
                uuid: None,
                disks: Vec::new(),
                vifs: Vec::new(),
            }
        );
    }

    #[test]
    fn every_key() {
        let c = p(
            "# a comment\nname = \"t1\"\nkernel = \"build/k.elf\"\nmemory = 64\nvcpus = 1\n\
             cmdline = \"loglevel=3\"\non_poweroff = \"preserve\"\non_crash = \"preserve\"\n\
             on_reboot = \"destroy\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.kernel,
            KernelSource::File(PathBuf::from("/cfg/build/k.elf"))
        );
        assert_eq!(c.memory_mib, 64);
        assert_eq!(c.cmdline, "loglevel=3");
        assert_eq!(c.on_poweroff, ExitAction::Preserve);
        assert_eq!(c.on_crash, ExitAction::Preserve);
        assert_eq!(c.on_reboot, ExitAction::Destroy);
        let abs = p("name = \"a\"\nkernel = \"/abs/k\"\n", &[]).unwrap();
        assert_eq!(abs.kernel, KernelSource::File(PathBuf::from("/abs/k")));
    }

    #[test]
    fn ramdisk_in_xl_syntax() {
        let base = "name = \"d\"\nkernel = \"vmlinux\"\n";
        let c = p(&format!("{base}ramdisk = \"boot/initrd.cpio\"\n"), &[]).unwrap();
        assert_eq!(c.ramdisk, Some(PathBuf::from("/cfg/boot/initrd.cpio")));
        // An override is relative to the current directory and replaces the file's.
        let o = p(&format!("{base}ramdisk = \"a\"\n"), &["ramdisk=other.cpio"]).unwrap();
        assert_eq!(o.ramdisk, Some(PathBuf::from("other.cpio")));
        let e = p(&format!("{base}ramdisk = \"\"\n"), &[]).unwrap_err();
        assert!(e.contains("hello.toml:3: ramdisk: is empty"), "{e}");
        let e = p(&format!("{base}ramdisk = 3\n"), &[]).unwrap_err();
        assert!(e.contains("ramdisk: expected a string"), "{e}");
        assert_eq!(p(base, &[]).unwrap().ramdisk, None);
    }

    #[test]
    fn vifs_in_xl_syntax() {
        let base = "name = \"d\"\nimage = \"hello\"\n";
        let c = p(
            &format!("{base}vif = [\"mac=00:16:3e:00:00:01, bridge=xenbr0\", \"\"]\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.vifs.len(), 2);
        assert_eq!(c.vifs[0].mac, Some([0, 0x16, 0x3e, 0, 0, 1]));
        assert_eq!((c.vifs[1].mac, c.vifs[1].bridge.as_str()), (None, "xenbr0"));
        let e = p(&format!("{base}vif = [\"mac=ff:ff:ff:ff:ff:ff\"]\n"), &[]).unwrap_err();
        assert!(e.to_string().contains("vif: entry 1: mac"), "{e}");
    }

    #[test]
    fn disks_in_xl_syntax() {
        let base = "name = \"d\"\nimage = \"hello\"\n";
        let c = p(
            &format!("{base}disk = [\"target=data, vdev=xvda\", \"vol2,,xvdb,ro\"]\n"),
            &[],
        )
        .unwrap();
        assert_eq!(c.disks.len(), 2);
        assert_eq!((c.disks[0].devid, c.disks[0].readonly), (51712, false));
        assert_eq!(
            (c.disks[1].target.as_str(), c.disks[1].readonly),
            ("vol2", true)
        );
        let c = p(base, &["disk=\"target=x, vdev=xvdc\""]).unwrap();
        assert_eq!(c.disks[0].vdev, "xvdc");
        let e = |d: &str| p(&format!("{base}disk = {d}\n"), &[]).unwrap_err();
        assert_eq!(
            e("[\"target=a, vdev=xvda\", \"target=b, vdev=xvda\"]"),
            "hello.toml:3: disk: entry 2: vdev is given twice"
        );
        assert!(
            e("[\"vdev=vda, target=a\"]").starts_with("hello.toml:3: disk: entry 1: vdev \"vda\"")
        );
        assert!(e("3").contains("expected a list of disk specifications"));
        assert!(e("[3]").contains("expected each disk as a string"));
    }

    #[test]
    fn cpus_in_xl_syntax() {
        let base = "name = \"d\"\nimage = \"hello\"\nvcpus = 3\n";
        let maps = |extra: &str, o: &[&str]| -> Vec<String> {
            p(&format!("{base}{extra}"), o)
                .unwrap()
                .cpus
                .iter()
                .map(ToString::to_string)
                .collect()
        };
        // One list applies to every vCPU.
        assert_eq!(maps("cpus = \"2\"\n", &[]), ["2", "2", "2"]);
        assert_eq!(maps("cpus = \"0-3,5\"\n", &[]), ["0-3,5"; 3]);
        assert_eq!(maps("cpus = \"0-7,^2-3\"\n", &[]), ["0-1,4-7"; 3]);
        assert_eq!(maps("cpus = \"all\"\n", &[]), ["all"; 3]);
        assert_eq!(maps("cpus = \"all,^1\"\n", &[])[0], "0,2-255");
        // Entry i is vCPU i; vCPUs past the list get none (every CPU).
        assert_eq!(maps("cpus = [\"0-1\", \"2\"]\n", &[]), ["0-1", "2"]);
        // Entries past `vcpus` are ignored, as xl does, wherever vcpus is set.
        assert_eq!(
            maps("cpus = [\"0\", \"1\", \"2\", \"3\"]\n", &[]),
            ["0", "1", "2"]
        );
        assert_eq!(maps("cpus = [\"0\", \"1\"]\n", &["vcpus=1"]), ["0"]);
        assert_eq!(
            p(&format!("cpus = \"1\"\n{base}"), &[]).unwrap().cpus.len(),
            3,
            "cpus before vcpus"
        );
        // Numbers are taken as their text (cpus=2 on the command line is a TOML integer).
        assert_eq!(maps("", &["cpus=2"]), ["2"; 3]);
        assert_eq!(maps("", &["cpus=0-1"]), ["0-1"; 3]);
        assert_eq!(maps("cpus = [1, \"0\"]\n", &[]), ["1", "0"]);
        assert!(p(base, &[]).unwrap().cpus.is_empty(), "no cpus: no pinning");

        let e = |extra: &str| p(&format!("{base}{extra}\n"), &[]).unwrap_err();
        assert_eq!(
            e("cpus = \"3-1\""),
            "hello.toml:4: cpus: \"3-1\" is a reversed range"
        );
        assert_eq!(
            e("cpus = [\"0\", \"3-1\"]"),
            "hello.toml:4: cpus: entry 2: \"3-1\" is a reversed range"
        );
        assert_eq!(
            e("cpus = \"256\""),
            "hello.toml:4: cpus: \"256\" names a CPU past 255, the highest CPU number"
        );
        assert!(
            e("cpus = \"^1\"").starts_with(
                "hello.toml:4: cpus: \"^1\" leaves no CPU: as in xl, a list starts from none, \
                 so write \"all,^1\""
            ),
            "{}",
            e("cpus = \"^1\"")
        );
        assert!(e("cpus = \"\"").starts_with("hello.toml:4: cpus: is empty"));
        assert!(e("cpus = \"1;2\"").starts_with("hello.toml:4: cpus: \"1;2\" is not a CPU"));
        assert!(e("cpus = \"node:0\"").contains("NUMA nodes are not supported"));
        assert!(e("cpus = true").starts_with("hello.toml:4: cpus: expected a CPU list like"));
        assert!(
            e("cpus = [\"0\", true]")
                .starts_with("hello.toml:4: cpus: entry 2: expected a CPU list")
        );
        assert!(e("cpus = -1").contains("\"-1\" is not a CPU"));
        // A bad entry past `vcpus` is ignored with it, as xl does.
        assert_eq!(
            p(&format!("{base}cpus = [\"0\", \"1\", \"2\", \"x\"]\n"), &[])
                .unwrap()
                .cpus
                .len(),
            3
        );
        assert_eq!(
            p(base, &["cpus=3-1"]).unwrap_err(),
            "command line `cpus=3-1`: cpus: \"3-1\" is a reversed range"
        );
    }

    #[test]
    fn cpus_soft_as_cpus() {
        let base = "name = \"d\"\nimage = \"hello\"\nvcpus = 3\n";
        let maps = |extra: &str, o: &[&str]| -> (Vec<String>, Vec<String>) {
            let c = p(&format!("{base}{extra}"), o).unwrap();
            let s = |m: &[CpuMap]| m.iter().map(ToString::to_string).collect();
            (s(&c.cpus), s(&c.cpus_soft))
        };
        let none: [&str; 0] = [];
        // The same forms as `cpus`, kept apart from the hard maps.
        assert_eq!(maps("cpus_soft = \"2\"\n", &[]).1, ["2"; 3]);
        assert_eq!(maps("cpus_soft = \"2\"\n", &[]).0, none, "no hard maps");
        assert_eq!(maps("cpus_soft = \"all,^1\"\n", &[]).1[0], "0,2-255");
        assert_eq!(
            maps("cpus = \"0-1\"\ncpus_soft = [\"1\", \"0\"]\n", &[]),
            (
                vec!["0-1".to_string(); 3],
                vec!["1".to_string(), "0".to_string()]
            ),
            "both; vCPU 2 has no preference"
        );
        // Entries past `vcpus` are ignored, wherever vcpus is set, and numbers are text.
        assert_eq!(
            maps("cpus_soft = [\"0\", \"1\", \"2\", \"x\"]\n", &[]).1,
            ["0", "1", "2"]
        );
        assert_eq!(maps("cpus_soft = [\"0\", 1]\n", &["vcpus=1"]).1, ["0"]);
        assert_eq!(
            p(&format!("cpus_soft = \"1\"\n{base}"), &[])
                .unwrap()
                .cpus_soft
                .len(),
            3,
            "cpus_soft before vcpus"
        );
        assert_eq!(maps("", &["cpus_soft=3"]).1, ["3"; 3]);
        assert_eq!(
            maps("cpus_soft = \"1\"\n", &["cpus_soft=0-1"]).1,
            ["0-1"; 3]
        );
        assert!(p(base, &[]).unwrap().cpus_soft.is_empty(), "no preference");

        // Errors name `cpus_soft`, not `cpus`.
        let e = |extra: &str| p(&format!("{base}{extra}\n"), &[]).unwrap_err();
        assert_eq!(
            e("cpus_soft = \"3-1\""),
            "hello.toml:4: cpus_soft: \"3-1\" is a reversed range"
        );
        assert_eq!(
            e("cpus = \"1\"\ncpus_soft = [\"0\", \"256\"]"),
            "hello.toml:5: cpus_soft: entry 2: \"256\" names a CPU past 255, the highest CPU number"
        );
        assert!(
            e("cpus_soft = \"^1\"")
                .starts_with("hello.toml:4: cpus_soft: \"^1\" leaves no CPU: as in xl")
        );
        assert!(e("cpus_soft = \"\"").starts_with("hello.toml:4: cpus_soft: is empty"));
        assert!(e("cpus_soft = \"nodes:0-1\"").contains("NUMA nodes are not supported"));
        assert!(
            e("cpus_soft = {}").starts_with("hello.toml:4: cpus_soft: expected a CPU list like")
        );
        assert!(
            e("cpus_soft = [false]")
                .starts_with("hello.toml:4: cpus_soft: entry 1: expected a CPU list")
        );
        assert_eq!(
            p(base, &["cpus_soft=3-1"]).unwrap_err(),
            "command line `cpus_soft=3-1`: cpus_soft: \"3-1\" is a reversed range"
        );
    }

    #[test]
    fn missing_name() {
        assert_eq!(
            p("image = \"hello\"\n", &[]).unwrap_err(),
            "hello.toml: name: missing; every domain needs one, e.g. name = \"hello\""
        );
    }

    #[test]
    fn neither_kernel_nor_image() {
        let e = p("name = \"a\"\n", &[]).unwrap_err();
        assert!(e.starts_with("hello.toml: no kernel: set kernel = "), "{e}");
    }

    #[test]
    fn both_kernel_and_image() {
        let e = p("name = \"a\"\nimage = \"hello\"\nkernel = \"k\"\n", &[]).unwrap_err();
        assert!(
            e.starts_with("hello.toml:3: kernel: `image` is already set (line 2); keep one"),
            "{e}"
        );
    }

    #[test]
    fn unknown_key_names_its_line() {
        let e = p("name = \"a\"\nimage = \"x\"\n\nmemmory = 3\n", &[]).unwrap_err();
        assert!(
            e.starts_with("hello.toml:4: unknown key `memmory`; the keys are name, kernel"),
            "{e}"
        );
        let e = p("name = \"a\"\n[extra]\nx = 1\n", &[]).unwrap_err();
        assert!(e.starts_with("hello.toml:2: extra: is a table"), "{e}");
    }

    #[test]
    fn wrong_types() {
        let base = "name = \"a\"\nimage = \"x\"\n";
        let cases = [
            (
                "memory = \"lots\"",
                "hello.toml:3: memory: expected an integer number of MiB, got \"lots\"",
            ),
            (
                "memory = 1.5",
                "hello.toml:3: memory: expected an integer number of MiB, got 1.5",
            ),
            (
                "vcpus = true",
                "hello.toml:3: vcpus: expected an integer number of vCPUs, got true",
            ),
            (
                "cmdline = 3",
                "hello.toml:3: cmdline: expected a string, got 3",
            ),
            (
                "on_crash = [1]",
                "hello.toml:3: on_crash: expected a string, got an array",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(p(&format!("{base}{line}\n"), &[]).unwrap_err(), want);
        }
        assert_eq!(
            p("name = 42\nimage = \"x\"\n", &[]).unwrap_err(),
            "hello.toml:1: name: expected a string, got 42"
        );
    }

    #[test]
    fn bad_values() {
        let base = "name = \"a\"\nimage = \"x\"\n";
        let e = |l: &str| p(&format!("{base}{l}\n"), &[]).unwrap_err();
        assert_eq!(
            e("on_crash = \"rename-restart\""),
            "hello.toml:3: on_crash: expected \"destroy\", \"restart\" or \"preserve\", got \
             \"rename-restart\" (xl's rename-restart, coredump-* and soft-reset are not offered)"
        );
        assert!(e("on_reboot = \"reboot\"").starts_with("hello.toml:3: on_reboot: expected"));
        // The smallest sizes pass here; whether the image fits is dom0's builder's
        // check.
        for m in [1, 2] {
            let c = p(&format!("{base}memory = {m}\n"), &[]).unwrap();
            assert_eq!(c.memory_mib, m);
        }
        assert_eq!(
            e("memory = 0"),
            "hello.toml:3: memory: 0 MiB is too little; a domain needs at least 1 MiB"
        );
        assert!(e("memory = -1").starts_with("hello.toml:3: memory: -1 MiB is too little"));
        assert!(e("memory = 99999999999").contains("is too much"));
        assert!(e("vcpus = 0").starts_with("hello.toml:3: vcpus: a domain needs at least 1"));
        assert!(e("vcpus = 33").contains("at most 32 per domain"));
        assert!(e("vcpus = -4").starts_with("hello.toml:3: vcpus: a domain needs at least 1"));
        assert!(
            p("name = \"42\"\nimage = \"x\"\n", &[])
                .unwrap_err()
                .starts_with("hello.toml:1: name: the name is all digits")
        );
        assert!(
            p("name = \"a\"\nkernel = \"\"\n", &[])
                .unwrap_err()
                .starts_with("hello.toml:2: kernel: is empty")
        );
        let long = "x".repeat(2000);
        assert!(e(&format!("cmdline = \"{long}\"")).starts_with("hello.toml:3: cmdline:"));
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let e = p("name = \"a\"\nimage = \n", &[]).unwrap_err();
        assert!(e.starts_with("hello.toml:2: not valid TOML:"), "{e}");
        let e = p("name = \"a\"\nname = \"b\"\n", &[]).unwrap_err();
        assert!(e.starts_with("hello.toml:2: not valid TOML:"), "{e}");
    }

    #[test]
    fn overrides() {
        let base = "name = \"hello\"\nimage = \"hello\"\nmemory = 16\n";
        let c = p(
            base,
            &[
                "memory=64",
                "name=other",
                "cmdline=a b c",
                "on_crash=preserve",
                "on_poweroff=restart",
            ],
        )
        .unwrap();
        assert_eq!(c.memory_mib, 64);
        assert_eq!(c.name, "other");
        assert_eq!(c.cmdline, "a b c");
        assert_eq!(c.on_crash, ExitAction::Preserve);
        assert_eq!(c.on_poweroff, ExitAction::Restart);
        let c = p(base, &["cmdline=\"quoted = yes\""]).unwrap();
        assert_eq!(c.cmdline, "quoted = yes");
        // kernel from the command line replaces the file's image, relative to the cwd.
        let c = p(base, &["kernel=out/k.elf"]).unwrap();
        assert_eq!(c.kernel, KernelSource::File(PathBuf::from("out/k.elf")));
        // Overrides can complete a config.
        let c = p("image = \"x\"\n", &["name=made"]).unwrap();
        assert_eq!(c.name, "made");

        assert_eq!(
            p(base, &["memory=lots"]).unwrap_err(),
            "command line `memory=lots`: memory: expected an integer number of MiB, got \"lots\""
        );
        assert_eq!(
            p(base, &["colour=red"]).unwrap_err(),
            "command line `colour=red`: unknown key `colour`; the keys are name, kernel, image, ramdisk, \
             memory, vcpus, cpus, cpus_soft, cmdline, on_poweroff, on_reboot, on_crash, uuid, disk, \
             vif"
        );
        assert_eq!(
            p(base, &["memory"]).unwrap_err(),
            "command line `memory`: an override is KEY=VALUE, like memory=64"
        );
    }
}
