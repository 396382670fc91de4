//! CPU maps and `xl`'s CPU lists (`xl.cfg(5)`, `cpus =` and `cpus_soft =`), as a
//! domain config gives a vCPU's hard and soft affinity.
//!
//! ```
//! use control_proto::cpus::CpuMap;
//! let m = CpuMap::parse("0-3,5,^1").unwrap();
//! assert_eq!(m.to_string(), "0,2-3,5");
//! assert!(CpuMap::parse("all,^7").unwrap().contains(6));
//! assert_eq!(CpuMap::parse("3-1").unwrap_err().to_string(), "\"3-1\" is a reversed range");
//! ```
//!
//! A list is comma-separated items applied left to right to a map that starts
//! with no CPU, as xl's `parse_cpurange` does: `N` or `A-B` adds CPUs, `^N` or
//! `^A-B` takes them away, `all` adds every CPU. So `"^1"` alone leaves nothing
//! (xl builds such a domain and the hypervisor refuses the map); here it is
//! refused at once, and `"all,^1"` is every CPU but 1. CPU numbers go from 0 to
//! [`MAX_CPU`] (255, Xen's usual `NR_CPUS`); a CPU the machine lacks is the
//! hypervisor's to refuse (a map with none of its CPUs is `-EINVAL`). NUMA
//! forms (`node:N`, `nodes:A-B`) are refused: the machine has one node.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// Which of a vCPU's two maps, as Xen's `XEN_VCPUAFFINITY_*` flags name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// `cpus =`: the CPUs the vCPU may run on (`XEN_VCPUAFFINITY_HARD`).
    Hard,
    /// `cpus_soft =`: the CPUs it prefers (`XEN_VCPUAFFINITY_SOFT`).
    Soft,
}

impl Affinity {
    /// The config key that sets it (`cpus`, `cpus_soft`).
    pub const fn key(self) -> &'static str {
        match self {
            Affinity::Hard => "cpus",
            Affinity::Soft => "cpus_soft",
        }
    }

    /// `hard` or `soft`.
    pub const fn name(self) -> &'static str {
        match self {
            Affinity::Hard => "hard",
            Affinity::Soft => "soft",
        }
    }
}

/// The highest CPU number a map holds (256 CPUs, as Xen's default `NR_CPUS`).
pub const MAX_CPU: u32 = 255;
/// Bytes of a full map on the wire (`xenctl_bitmap` order: bit n of byte n / 8).
pub const MAP_BYTES: usize = (MAX_CPU as usize + 1) / 8;

/// A set of physical CPUs, 0 to [`MAX_CPU`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuMap([u64; 4]);

impl CpuMap {
    /// No CPU.
    pub const NONE: CpuMap = CpuMap([0; 4]);
    /// Every CPU number (xl's `all`).
    pub const ALL: CpuMap = CpuMap([u64::MAX; 4]);

    /// The map of CPUs `0..n` (`n` at most 256).
    pub fn first(n: u32) -> CpuMap {
        let mut m = CpuMap::NONE;
        for cpu in 0..n.min(MAX_CPU + 1) {
            m.insert(cpu);
        }
        m
    }

    /// Adds `cpu` (ignored past [`MAX_CPU`]).
    pub fn insert(&mut self, cpu: u32) {
        if cpu <= MAX_CPU {
            self.0[(cpu / 64) as usize] |= 1 << (cpu % 64);
        }
    }

    /// Takes `cpu` away.
    pub fn remove(&mut self, cpu: u32) {
        if cpu <= MAX_CPU {
            self.0[(cpu / 64) as usize] &= !(1 << (cpu % 64));
        }
    }

    /// Whether it holds `cpu`.
    pub fn contains(&self, cpu: u32) -> bool {
        cpu <= MAX_CPU && self.0[(cpu / 64) as usize] & (1 << (cpu % 64)) != 0
    }

    /// Whether it holds no CPU.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }

    /// The CPUs both maps hold.
    pub fn intersection(&self, other: &CpuMap) -> CpuMap {
        let mut m = *self;
        for (a, b) in m.0.iter_mut().zip(other.0) {
            *a &= b;
        }
        m
    }

    /// Whether it holds every CPU of `other`.
    pub fn is_superset(&self, other: &CpuMap) -> bool {
        self.0.iter().zip(other.0).all(|(a, b)| b & !a == 0)
    }

    /// The CPUs it holds, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..=MAX_CPU).filter(|&c| self.contains(c))
    }

    /// The map as `xenctl_bitmap` bytes, all [`MAP_BYTES`] of them.
    pub fn to_bitmap(&self) -> [u8; MAP_BYTES] {
        let mut out = [0u8; MAP_BYTES];
        for (chunk, word) in out.chunks_exact_mut(8).zip(self.0) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        out
    }

    /// The map from `xenctl_bitmap` bytes; bits past [`MAX_CPU`] are dropped.
    pub fn from_bitmap(bytes: &[u8]) -> CpuMap {
        let mut m = CpuMap::NONE;
        for (i, &b) in bytes.iter().take(MAP_BYTES).enumerate() {
            m.0[i / 8] |= u64::from(b) << ((i % 8) * 8);
        }
        m
    }

    /// The wire form: the bitmap bytes up to the last non-zero one (none for an
    /// empty map), so each map has exactly one encoding.
    pub fn to_wire(&self) -> Vec<u8> {
        let b = self.to_bitmap();
        let n = b.iter().rposition(|&x| x != 0).map_or(0, |i| i + 1);
        b[..n].to_vec()
    }

    /// Reads [`to_wire`](Self::to_wire)'s form: `None` for more than
    /// [`MAP_BYTES`] bytes or a zero last byte (not the one encoding).
    pub fn from_wire(bytes: &[u8]) -> Option<CpuMap> {
        if bytes.len() > MAP_BYTES || bytes.last() == Some(&0) {
            return None;
        }
        Some(CpuMap::from_bitmap(bytes))
    }

    /// Parses a CPU list in xl's syntax (see the module docs). The result holds
    /// at least one CPU.
    pub fn parse(spec: &str) -> Result<CpuMap, CpusError> {
        let mut m = CpuMap::NONE;
        let mut items = 0;
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            items += 1;
            let (not, body) = match item.strip_prefix('^') {
                Some(rest) => (true, rest.trim_start()),
                None => (false, item),
            };
            if ["node:", "nodes:"].iter().any(|p| body.starts_with(p)) {
                return Err(CpusError::Nodes(item.into()));
            }
            if body == "all" {
                if not {
                    return Err(CpusError::NotAll(item.into()));
                }
                m = CpuMap::ALL;
                continue;
            }
            let (a, b) = parse_range(body).map_err(|e| e.with(item))?;
            for cpu in a..=b {
                if not {
                    m.remove(cpu);
                } else {
                    m.insert(cpu);
                }
            }
        }
        if items == 0 {
            return Err(CpusError::Empty);
        }
        if m.is_empty() {
            return Err(CpusError::NoCpu(spec.into()));
        }
        Ok(m)
    }
}

/// `N` or `A-B`, each at most [`MAX_CPU`], `A <= B`.
fn parse_range(s: &str) -> Result<(u32, u32), CpusError> {
    let num = |t: &str| -> Result<u32, CpusError> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CpusError::NotARange(String::new()));
        }
        match t.parse::<u32>() {
            Ok(n) if n <= MAX_CPU => Ok(n),
            _ => Err(CpusError::TooHigh(String::new())),
        }
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if b < a {
        return Err(CpusError::Reversed(String::new()));
    }
    Ok((a, b))
}

impl fmt::Display for CpuMap {
    /// Ranges, as xl prints a cpumap: `0,2-3,5`; `all` for every CPU number,
    /// `none` for no CPU.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == CpuMap::ALL {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        let mut cpu = 0;
        while cpu <= MAX_CPU {
            if !self.contains(cpu) {
                cpu += 1;
                continue;
            }
            let start = cpu;
            while cpu < MAX_CPU && self.contains(cpu + 1) {
                cpu += 1;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == cpu {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{cpu}")?;
            }
            cpu += 1;
        }
        Ok(())
    }
}

/// Why a CPU list was refused. Each names the item at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpusError {
    /// No item at all (`""`, `","`).
    Empty,
    /// An item that is neither a CPU, a range nor `all`.
    NotARange(String),
    /// `A-B` with `B < A`.
    Reversed(String),
    /// A CPU number past [`MAX_CPU`].
    TooHigh(String),
    /// `^all`.
    NotAll(String),
    /// `node:N` / `nodes:A-B`.
    Nodes(String),
    /// The list leaves no CPU (`"^1"`: xl starts from none).
    NoCpu(String),
}

impl CpusError {
    fn with(self, item: &str) -> CpusError {
        let item = String::from(item);
        match self {
            CpusError::NotARange(_) => CpusError::NotARange(item),
            CpusError::Reversed(_) => CpusError::Reversed(item),
            CpusError::TooHigh(_) => CpusError::TooHigh(item),
            e => e,
        }
    }
}

impl fmt::Display for CpusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CpusError::Empty => {
                f.write_str("is empty; give CPUs like \"0-3,5\", \"all\" or \"all,^1\"")
            }
            CpusError::NotARange(i) => write!(
                f,
                "{i:?} is not a CPU, a range or \"all\" (like \"3\", \"0-3\", \"^2\")"
            ),
            CpusError::Reversed(i) => write!(f, "{i:?} is a reversed range"),
            CpusError::TooHigh(i) => write!(
                f,
                "{i:?} names a CPU past {MAX_CPU}, the highest CPU number"
            ),
            CpusError::NotAll(i) => write!(f, "{i:?}: \"^\" cannot be combined with \"all\""),
            CpusError::Nodes(i) => write!(
                f,
                "{i:?}: NUMA nodes are not supported (the machine has one); list CPUs"
            ),
            CpusError::NoCpu(s) if s.trim_start().starts_with('^') => write!(
                f,
                "{s:?} leaves no CPU: as in xl, a list starts from none, so write \"all,{s}\" \
                 for every CPU but those"
            ),
            CpusError::NoCpu(s) => write!(f, "{s:?} leaves no CPU"),
        }
    }
}

/// The affinity maps of a domain's vCPUs from a config's `cpus` (hard) or
/// `cpus_soft` (soft) value, as xl's `parse_vcpu_affinity` makes either: one
/// list (`Single`) for every one of the `vcpus`; a list of lists (`PerVcpu`),
/// entry i for vCPU i, entries past the last vCPU ignored, vCPUs past the last
/// entry on every CPU (their map is not set). Errors carry the entry's index.
pub fn affinity_maps(
    value: &CpusValue<'_>,
    vcpus: u32,
) -> Result<Vec<CpuMap>, (Option<usize>, CpusError)> {
    let n = usize::try_from(vcpus).unwrap_or(usize::MAX);
    match value {
        CpusValue::Single(spec) => {
            let m = CpuMap::parse(spec).map_err(|e| (None, e))?;
            Ok(alloc::vec![m; n])
        }
        CpusValue::PerVcpu(specs) => specs
            .iter()
            .take(n)
            .enumerate()
            .map(|(i, s)| CpuMap::parse(s).map_err(|e| (Some(i), e)))
            .collect(),
    }
}

/// A config's `cpus` or `cpus_soft` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpusValue<'a> {
    /// `cpus = "0-3"`: every vCPU.
    Single(&'a str),
    /// `cpus = ["0", "1"]`: vCPU by vCPU.
    PerVcpu(Vec<&'a str>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    fn cpus(spec: &str) -> Vec<u32> {
        CpuMap::parse(spec).unwrap().iter().collect()
    }

    #[test]
    fn xl_forms() {
        assert_eq!(cpus("2"), [2]);
        assert_eq!(cpus("0-3,5"), [0, 1, 2, 3, 5]);
        assert_eq!(cpus("0-3,5,^1"), [0, 2, 3, 5]);
        assert_eq!(cpus("0-7,^2-3"), [0, 1, 4, 5, 6, 7]);
        assert_eq!(cpus(" 1 , 3 "), [1, 3]);
        assert_eq!(
            cpus("1,,3,"),
            [1, 3],
            "empty items are skipped, as strtok does"
        );
        assert_eq!(cpus("255"), [255]);
        assert_eq!(CpuMap::parse("all").unwrap(), CpuMap::ALL);
        let m = CpuMap::parse("all,^7").unwrap();
        assert!(!m.contains(7) && m.contains(6) && m.contains(8) && m.contains(255));
        // Left to right: a later item undoes an earlier one.
        assert_eq!(cpus("^1,1"), [1]);
        assert_eq!(cpus("0-3,^0-3,2"), [2]);
    }

    #[test]
    fn refusals_name_the_item() {
        let e = |s: &str| CpuMap::parse(s).unwrap_err().to_string();
        assert_eq!(e("3-1"), "\"3-1\" is a reversed range");
        assert_eq!(e("0,5-2"), "\"5-2\" is a reversed range");
        assert!(e("").starts_with("is empty"));
        assert!(e(" , ").starts_with("is empty"));
        assert!(e("x").starts_with("\"x\" is not a CPU"));
        assert!(e("1-").starts_with("\"1-\" is not a CPU"));
        assert!(e("-1").starts_with("\"-1\" is not a CPU"));
        assert!(e("1-2-3").starts_with("\"1-2-3\" is not a CPU"));
        assert!(e("+1").starts_with("\"+1\" is not a CPU"));
        assert!(e("0x3").starts_with("\"0x3\" is not a CPU"));
        assert_eq!(
            e("256"),
            "\"256\" names a CPU past 255, the highest CPU number"
        );
        assert!(e("0-99999999999999").starts_with("\"0-99999999999999\" names a CPU past"));
        assert!(e("^all").contains("cannot be combined"));
        assert!(e("node:0").contains("NUMA nodes are not supported"));
        assert!(e("^nodes:0-1").contains("NUMA"));
        assert_eq!(
            e("^1"),
            "\"^1\" leaves no CPU: as in xl, a list starts from none, so write \"all,^1\" \
             for every CPU but those"
        );
        assert_eq!(e("1,^1"), "\"1,^1\" leaves no CPU");
    }

    #[test]
    fn display_and_wire() {
        let m = CpuMap::parse("0-3,5,7-8,63-64,255").unwrap();
        assert_eq!(m.to_string(), "0-3,5,7-8,63-64,255");
        assert_eq!(CpuMap::ALL.to_string(), "all");
        assert_eq!(CpuMap::NONE.to_string(), "none");
        assert_eq!(CpuMap::first(2).to_string(), "0-1");
        let one = CpuMap::parse("1").unwrap();
        assert_eq!(one.to_wire(), [2]);
        assert_eq!(CpuMap::parse("8").unwrap().to_wire(), [0, 1]);
        assert_eq!(CpuMap::ALL.to_wire().len(), MAP_BYTES);
        assert_eq!(CpuMap::NONE.to_wire(), [0u8; 0]);
        assert_eq!(CpuMap::from_wire(&[2]), Some(one));
        assert_eq!(CpuMap::from_wire(&[2, 0]), None, "one encoding per map");
        assert_eq!(CpuMap::from_wire(&[1; MAP_BYTES + 1]), None);
        assert_eq!(CpuMap::from_bitmap(&one.to_bitmap()), one);
        assert_eq!(CpuMap::from_bitmap(&[0xff; 40]), CpuMap::ALL);
        assert!(CpuMap::ALL.is_superset(&CpuMap::first(8)));
        assert!(!one.is_superset(&CpuMap::first(2)));
        assert!(one.is_superset(&CpuMap::NONE));
        assert_eq!(CpuMap::ALL.intersection(&one), one);
        assert!(one.intersection(&CpuMap::parse("0,2").unwrap()).is_empty());
    }

    #[test]
    fn maps_per_vcpu_as_xl_makes_them() {
        let one = CpuMap::parse("1").unwrap();
        assert_eq!(
            affinity_maps(&CpusValue::Single("1"), 3).unwrap(),
            vec![one; 3]
        );
        let list = CpusValue::PerVcpu(vec!["0", "1", "2"]);
        // Entries past the last vCPU are ignored; vCPUs past the list get none.
        assert_eq!(affinity_maps(&list, 2).unwrap().len(), 2);
        assert_eq!(affinity_maps(&list, 5).unwrap().len(), 3);
        assert_eq!(affinity_maps(&list, 5).unwrap()[2].to_string(), "2");
        let bad = CpusValue::PerVcpu(vec!["0", "3-1"]);
        assert_eq!(
            affinity_maps(&bad, 2).unwrap_err(),
            (Some(1), CpusError::Reversed("3-1".into()))
        );
        // A bad entry past the last vCPU is ignored with it, as xl does.
        assert!(affinity_maps(&bad, 1).is_ok());
        assert_eq!(
            affinity_maps(&CpusValue::Single("x"), 2).unwrap_err().0,
            None
        );
    }

    #[test]
    fn affinity_names_its_key() {
        assert_eq!(
            (Affinity::Hard.key(), Affinity::Hard.name()),
            ("cpus", "hard")
        );
        assert_eq!(
            (Affinity::Soft.key(), Affinity::Soft.name()),
            ("cpus_soft", "soft")
        );
    }
}
