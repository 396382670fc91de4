//! How answers are printed: tables like `xl`'s, and JSON by hand (a few flat
//! objects do not need a JSON library).

use std::fmt::Write as _;

#[cfg(test)]
use control_proto::BridgeInfo;
use control_proto::{DeviceRow, DomainInfo, HostInfo, ImageInfo, VolumeDisk, VolumeInfo};

use crate::client::Greeting;

/// `xl list`'s table: `Name ID Mem(MiB) VCPUs State Time(s)`.
pub fn domain_table(domains: &[DomainInfo]) -> String {
    let w = domains
        .iter()
        .map(|d| d.name.chars().count())
        .chain([4, 24])
        .max()
        .unwrap_or(24);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$} {:>5} {:>8} {:>5} {:>6} {:>9}",
        "Name", "ID", "Mem(MiB)", "VCPUs", "State", "Time(s)"
    );
    for d in domains {
        let _ = writeln!(
            out,
            "{:<w$} {:>5} {:>8} {:>5} {:>6} {:>9.1}",
            d.name,
            d.id,
            d.memory_kib / 1024,
            d.vcpus,
            d.state.xl_flags(),
            // Display only: f64 holds any CPU time to well under 0.1 s.
            d.cpu_time_ns as f64 / 1e9,
        );
    }
    out
}

/// The domains as a JSON array of objects, one line per domain.
pub fn domain_json(domains: &[DomainInfo]) -> String {
    let mut out = String::from("[");
    for (i, d) in domains.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        let reason = d
            .shutdown_reason
            .map_or_else(|| "null".to_string(), |r| json_str(r.as_str()));
        let _ = write!(
            out,
            "{{\"id\": {}, \"name\": {}, \"state\": {}, \"flags\": {}, \
             \"shutdown_reason\": {reason}, \"memory_kib\": {}, \"max_memory_kib\": {}, \
             \"vcpus\": {}, \"cpu_time_ns\": {}, \"uptime_ns\": {}}}",
            d.id,
            json_str(&d.name),
            json_str(d.state.as_str()),
            json_str(d.state.xl_flags()),
            d.memory_kib,
            d.max_memory_kib,
            d.vcpus,
            d.cpu_time_ns,
            d.uptime_ns,
        );
    }
    out.push_str(if domains.is_empty() { "]\n" } else { "\n]\n" });
    out
}

/// A JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `xl info` in brief.
pub fn host_info(info: &HostInfo, greeting: &Greeting) -> String {
    let mib = |kib: u64| kib / 1024;
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<18}: {v}");
    };
    line("hypervisor", greeting.hypervisor.clone());
    line(
        "xen_version",
        format!("{}.{}{}", info.xen_major, info.xen_minor, info.xen_extra),
    );
    line("dom0_agent", greeting.agent.clone());
    line("protocol", greeting.protocol.to_string());
    line("nr_cpus", info.nr_cpus.to_string());
    line(
        "cpu_mhz",
        format!("{}.{:03}", info.cpu_khz / 1000, info.cpu_khz % 1000),
    );
    line(
        "total_memory",
        format!(
            "{} MiB ({} frames)",
            mib(info.total_kib),
            info.total_kib / 4
        ),
    );
    line(
        "free_memory",
        format!("{} MiB ({} frames)", mib(info.free_kib), info.free_frames),
    );
    line(
        "dom0_free_memory",
        format!(
            "{} MiB ({} frames)",
            mib(info.dom0_free_frames.saturating_mul(4)),
            info.dom0_free_frames
        ),
    );
    line("domains", info.domains.to_string());
    for (i, b) in info.bridges.iter().enumerate() {
        let ports = if b.ports.is_empty() {
            String::from("(no ports)")
        } else {
            b.ports.join(" ")
        };
        // One bridge a line; the later ones line up under the first.
        let key = if i == 0 { "bridges           :" } else { "" };
        let _ = writeln!(
            out,
            "{key:<19} {}: {ports} ({} MACs learned)",
            b.name, b.learned
        );
    }
    out
}

/// The images dom0 has: `Name Size`.
pub fn image_table(images: &[ImageInfo]) -> String {
    let w = images
        .iter()
        .map(|i| i.name.chars().count())
        .chain([4, 16])
        .max()
        .unwrap_or(16);
    let mut out = String::new();
    let _ = writeln!(out, "{:<w$} {:>12}", "Name", "Size(bytes)");
    for i in images {
        let _ = writeln!(out, "{:<w$} {:>12}", i.name, i.size);
    }
    out
}

/// `dom0ctl devices`: one line per PCI function, what dom0 drives on it, then
/// dom0's description.
pub fn device_table(rows: &[DeviceRow]) -> String {
    let w = rows
        .iter()
        .map(|r| r.driver.chars().count())
        .chain([6])
        .max()
        .unwrap_or(6);
    let mut out = String::new();
    let _ = writeln!(out, "{:<7} {:<9} {:<w$} Device", "PCI", "Id", "Driver");
    for r in rows {
        let id = format!("{:04x}:{:04x}", r.vendor, r.device);
        let driver = if r.driver.is_empty() { "-" } else { &r.driver };
        let _ = writeln!(out, "{:<7} {id:<9} {driver:<w$} {}", r.bdf, r.detail);
    }
    out
}

/// `dom0ctl network-list`: `xl network-list`'s columns, then the bridge and
/// the back end's counters.
pub fn vif_table(rows: &[control_proto::VifRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<3} {:<3} {:<17} {:<6} {:<5} {:<6} {:<15} {:<40} {:<8} {:>8} {:>6} {:>8} {:>7}",
        "Idx",
        "BE",
        "Mac Addr.",
        "handle",
        "state",
        "evt-ch",
        "tx-/rx-ring-ref",
        "BE-path",
        "Bridge",
        "tx",
        "tx-err",
        "rx",
        "rx-drop"
    );
    for v in rows {
        let _ = writeln!(
            out,
            "{:<3} {:<3} {:<17} {:<6} {:<5} {:<6} {:<15} {:<40} {:<8} {:>8} {:>6} {:>8} {:>7}",
            v.devid,
            0,
            v.mac,
            v.devid,
            v.fe_state,
            v.evtchn,
            format!("{}/{}", v.tx_ring_ref, v.rx_ring_ref),
            v.be_path,
            v.bridge,
            v.counters[0],
            v.counters[2],
            v.counters[3],
            v.counters[5]
        );
    }
    out
}

/// `dom0ctl vcpu-list`: `xl vcpu-list`'s name, id, vCPU and affinity columns.
/// Maps are shown within the machine's CPUs, as Xen cuts them to its
/// `nr_cpu_ids` (`all,^0` on two CPUs is `1`), and one that holds every CPU of
/// the machine is `all`, as xl prints it.
pub fn vcpu_table(domid: u16, name: &str, nr_cpus: u32, rows: &[control_proto::VcpuRow]) -> String {
    let every = control_proto::cpus::CpuMap::first(nr_cpus);
    let shown = |m: &control_proto::cpus::CpuMap| {
        if nr_cpus == 0 {
            m.to_string()
        } else if m.is_superset(&every) {
            "all".to_string()
        } else {
            m.intersection(&every).to_string()
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9} Affinity (Hard / Soft)",
        "Name", "ID", "VCPU", "CPU", "State", "Time(s)"
    );
    for v in rows {
        let s = &v.state;
        // As xl: no CPU for a vCPU that is down; state r(unning) b(locked) p(aused:
        // down here).
        let cpu = if s.online {
            s.cpu.to_string()
        } else {
            "-".into()
        };
        let state: String = [
            if s.online && s.running { 'r' } else { '-' },
            if s.blocked { 'b' } else { '-' },
            if s.online { '-' } else { 'p' },
        ]
        .iter()
        .collect();
        let _ = writeln!(
            out,
            "{name:<32} {domid:>5} {:>5} {cpu:>5}   {state}  {:>9.1}  {} / {}",
            v.vcpu,
            s.time_ns as f64 / 1e9,
            shown(&v.hard),
            shown(&v.soft)
        );
    }
    out
}

/// `dom0ctl block-list`: `xl block-list`'s columns, then the disk's names and
/// the back end's counters.
pub fn block_table(rows: &[control_proto::BlockRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<3} {:<6} {:<5} {:<6} {:<8} {:<40} {:<6} {:<12} {:<4} {:>8} {:>8} {:>5} {:>5} {:>6}",
        "Vdev",
        "BE",
        "handle",
        "state",
        "evt-ch",
        "ring-ref",
        "BE-path",
        "Name",
        "Target",
        "Mode",
        "reads",
        "writes",
        "flush",
        "disc",
        "errors"
    );
    for b in rows {
        let _ = writeln!(
            out,
            "{:<10} {:<3} {:<6} {:<5} {:<6} {:<8} {:<40} {:<6} {:<12} {:<4} {:>8} {:>8} {:>5} {:>5} {:>6}",
            b.devid,
            0,
            b.devid,
            b.fe_state,
            b.evtchn,
            b.ring_ref,
            b.be_path,
            b.vdev,
            b.target,
            b.mode,
            b.requests[0],
            b.requests[1],
            b.requests[2],
            b.requests[3],
            b.errors
        );
    }
    out
}

/// A size as people write it: exact when it is a whole number of T, G, M or
/// K (`64M`), else with one decimal (`3.9G`); bytes below 1 KiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    for (shift, unit) in UNITS {
        let one = 1u64 << shift;
        if bytes >= one {
            if bytes % one == 0 {
                return format!("{}{unit}", bytes >> shift);
            }
            // Display only: f64 is exact enough for one decimal.
            return format!("{:.1}{unit}", bytes as f64 / one as f64);
        }
    }
    format!("{bytes}")
}

/// Sectors as [`size`] writes bytes.
fn sectors(n: u64) -> String {
    size(n.saturating_mul(512))
}

/// Who uses a volume: `-`, or domain ids.
fn users(ids: &[u16]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

/// `dom0ctl volume list`: the volumes (`Name Disk Offset Size Users`), then
/// the disks (`Disk Size Table Free`, free being the largest volume that
/// fits).
pub fn volume_table(volumes: &[VolumeInfo], disks: &[VolumeDisk]) -> String {
    let w = volumes
        .iter()
        .map(|v| v.name.chars().count())
        .chain([4, 16])
        .max()
        .unwrap_or(16);
    let dw = volumes
        .iter()
        .map(|v| v.disk.chars().count())
        .chain(disks.iter().map(|d| d.name.chars().count()))
        .chain([4, 8])
        .max()
        .unwrap_or(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$} {:<dw$} {:>8} {:>8} Users",
        "Name", "Disk", "Offset", "Size"
    );
    for v in volumes {
        let _ = writeln!(
            out,
            "{:<w$} {:<dw$} {:>8} {:>8} {}",
            v.name,
            v.disk,
            sectors(v.start),
            sectors(v.sectors),
            users(&v.users)
        );
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "{:<dw$} {:>8} {:<10} {:>8}",
        "Disk", "Size", "Table", "Free"
    );
    for d in disks {
        let _ = writeln!(
            out,
            "{:<dw$} {:>8} {:<10} {:>8}{}",
            d.name,
            sectors(d.sectors),
            d.table.as_str(),
            sectors(d.free_sectors),
            if d.readonly { "  read-only" } else { "" }
        );
    }
    out
}

/// One volume as a JSON object.
fn volume_obj(v: &VolumeInfo) -> String {
    format!(
        "{{\"name\": {}, \"disk\": {}, \"start_sector\": {}, \"sectors\": {}, \
         \"bytes\": {}, \"users\": [{}]}}",
        json_str(&v.name),
        json_str(&v.disk),
        v.start,
        v.sectors,
        v.sectors.saturating_mul(512),
        v.users
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `dom0ctl volume list --json`: `{"volumes": [...], "disks": [...]}`, one
/// line per object.
pub fn volume_json(volumes: &[VolumeInfo], disks: &[VolumeDisk]) -> String {
    let mut out = String::from("{\"volumes\": [");
    for (i, v) in volumes.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        out.push_str(&volume_obj(v));
    }
    out.push_str(if volumes.is_empty() { "],\n" } else { "\n],\n" });
    out.push_str("\"disks\": [");
    for (i, d) in disks.iter().enumerate() {
        out.push_str(if i == 0 { "\n  " } else { ",\n  " });
        let _ = write!(
            out,
            "{{\"name\": {}, \"sectors\": {}, \"readonly\": {}, \"table\": {}, \
             \"free_sectors\": {}}}",
            json_str(&d.name),
            d.sectors,
            d.readonly,
            json_str(d.table.as_str()),
            d.free_sectors
        );
    }
    out.push_str(if disks.is_empty() { "]}\n" } else { "\n]}\n" });
    out
}

/// `dom0ctl volume create`: what was made.
pub fn volume_created(v: &VolumeInfo, json: bool) -> String {
    if json {
        return format!("{}\n", volume_obj(v));
    }
    format!(
        "volume {}: {} on disk {} at {} (sectors {}..{})\n",
        v.name,
        sectors(v.sectors),
        v.disk,
        sectors(v.start),
        v.start,
        v.start.saturating_add(v.sectors)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpu_table_shows_all_as_xl_does() {
        use control_proto::cpus::CpuMap;
        use control_proto::{VcpuRow, VcpuState};
        let up = |running, blocked, cpu, time_ns| VcpuState {
            online: true,
            blocked,
            running,
            cpu,
            time_ns,
        };
        let rows = [
            VcpuRow {
                vcpu: 0,
                state: up(true, false, 1, 12_345_000_000),
                hard: CpuMap::parse("1").unwrap(),
                soft: CpuMap::first(64),
            },
            VcpuRow {
                vcpu: 1,
                state: up(false, true, 0, 50_000_000),
                hard: CpuMap::parse("0-1,5").unwrap(),
                soft: CpuMap::ALL,
            },
            VcpuRow {
                vcpu: 2,
                state: VcpuState::default(),
                hard: CpuMap::parse("1-63").unwrap(),
                soft: CpuMap::parse("0,5").unwrap(),
            },
        ];
        let t = vcpu_table(3, "pinned", 2, &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "Name                                ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)"
        );
        assert_eq!(
            lines[1],
            "pinned                               3     0     1   r--       12.3  1 / all"
        );
        assert!(
            lines[2].ends_with("    1     0   -b-        0.1  all / all"),
            "{}",
            lines[2]
        );
        assert!(
            lines[3].ends_with("    2     -   --p        0.0  1 / 0"),
            "{}",
            lines[3]
        );
        // Without the machine's CPU count the maps are shown as they are.
        assert!(vcpu_table(3, "p", 0, &rows).contains("  1 / 0-63"));
    }

    #[test]
    fn volume_tables_and_json() {
        use control_proto::TableState;
        let vols = [
            VolumeInfo {
                name: "web".into(),
                disk: "data".into(),
                start: 2048,
                sectors: 131_072,
                users: vec![],
            },
            VolumeInfo {
                name: "db".into(),
                disk: "data".into(),
                start: 133_120,
                sectors: 1000,
                users: vec![3, 4],
            },
        ];
        let disks = [
            VolumeDisk {
                name: "data".into(),
                sectors: 8 << 21,
                readonly: false,
                table: TableState::Volumes,
                free_sectors: (8 << 21) - 135_168,
            },
            VolumeDisk {
                name: "golden".into(),
                sectors: 2048,
                readonly: true,
                table: TableState::Data,
                free_sectors: 0,
            },
        ];
        assert_eq!(
            volume_table(&vols, &disks),
            "\
Name             Disk       Offset     Size Users
web              data           1M      64M -
db               data          65M     500K 3,4

Disk         Size Table          Free
data           8G volumes        7.9G
golden         1M data              0  read-only
"
        );
        assert_eq!(
            volume_json(&vols[1..], &[]),
            "{\"volumes\": [\n  {\"name\": \"db\", \"disk\": \"data\", \"start_sector\": 133120, \
             \"sectors\": 1000, \"bytes\": 512000, \"users\": [3, 4]}\n],\n\"disks\": []}\n"
        );
        assert_eq!(volume_json(&[], &[]), "{\"volumes\": [],\n\"disks\": []}\n");
        assert_eq!(
            volume_created(&vols[0], false),
            "volume web: 64M on disk data at 1M (sectors 2048..133120)\n"
        );
        assert!(volume_created(&vols[0], true).starts_with("{\"name\": \"web\""));
        assert_eq!(size(0), "0");
        assert_eq!(size(512), "512");
        assert_eq!(size(3 << 30), "3G");
        assert_eq!(size(1536 << 10), "1.5M");
    }

    #[test]
    fn the_device_table() {
        let rows = [
            DeviceRow {
                bdf: "00:00.0".into(),
                vendor: 0x8086,
                device: 0x1237,
                class: 0x060000,
                driver: String::new(),
                detail: "host-bridge class 060000".into(),
            },
            DeviceRow {
                bdf: "00:04.0".into(),
                vendor: 0x1af4,
                device: 0x1001,
                class: 0x010000,
                driver: "virtio-blk: disk data (4 MiB)".into(),
                detail: "storage class 010000 irq=11/A".into(),
            },
        ];
        assert_eq!(
            device_table(&rows),
            "PCI     Id        Driver                        Device\n\
             00:00.0 8086:1237 -                             host-bridge class 060000\n\
             00:04.0 1af4:1001 virtio-blk: disk data (4 MiB) storage class 010000 irq=11/A\n"
        );
    }
    use control_proto::{DomState, ShutdownReason};

    fn doms() -> Vec<DomainInfo> {
        vec![
            DomainInfo {
                id: 0,
                name: "Domain-0".into(),
                state: DomState::Running,
                shutdown_reason: None,
                memory_kib: 64 * 1024,
                max_memory_kib: 64 * 1024,
                vcpus: 1,
                cpu_time_ns: 12_345_000_000,
                uptime_ns: 20_000_000_000,
            },
            DomainInfo {
                id: 3,
                name: "hello \"q\"".into(),
                state: DomState::Shutdown,
                shutdown_reason: Some(ShutdownReason::Poweroff),
                memory_kib: 16 * 1024,
                max_memory_kib: 16 * 1024,
                vcpus: 1,
                cpu_time_ns: 50_000_000,
                uptime_ns: 1,
            },
        ]
    }

    #[test]
    fn table_like_xl_list() {
        let t = domain_table(&doms());
        let want = "\
Name                        ID Mem(MiB) VCPUs  State   Time(s)
Domain-0                     0       64     1 r-----      12.3
hello \"q\"                    3       16     1 ---s--       0.1
";
        assert_eq!(t, want);
        assert_eq!(domain_table(&[]).lines().count(), 1);
    }

    #[test]
    fn long_names_widen_the_column() {
        let mut d = doms();
        d[1].name = "a-very-long-domain-name-indeed-yes".into();
        let t = domain_table(&d);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines.iter().all(|l| l.len() == lines[0].len()));
    }

    #[test]
    fn json() {
        let j = domain_json(&doms());
        assert!(j.starts_with("[\n  {\"id\": 0, \"name\": \"Domain-0\", \"state\": \"running\", \"flags\": \"r-----\", \"shutdown_reason\": null,"));
        assert!(j.contains("\"name\": \"hello \\\"q\\\"\""));
        assert!(j.contains("\"shutdown_reason\": \"poweroff\""));
        assert!(j.ends_with("}\n]\n"));
        assert_eq!(domain_json(&[]), "[]\n");
        assert_eq!(json_str("a\u{1}\tb"), "\"a\\u0001\\tb\"");
    }

    #[test]
    fn info_and_images() {
        let info = HostInfo {
            xen_major: 4,
            xen_minor: 17,
            xen_extra: ".0-xlhv".into(),
            total_kib: 512 * 1024,
            free_kib: 256 * 1024,
            free_frames: 65536,
            nr_cpus: 1,
            cpu_khz: 2_400_123,
            domains: 2,
            dom0_free_frames: 2560,
            bridges: vec![
                BridgeInfo {
                    name: "xenbr0".into(),
                    ports: vec!["eth0".into(), "vif1.0".into()],
                    learned: 2,
                },
                BridgeInfo {
                    name: "xenbr1".into(),
                    ports: vec!["vif2.1".into()],
                    learned: 0,
                },
            ],
        };
        let g = Greeting {
            protocol: 1,
            agent: "xlhv-dom0 0.1.0".into(),
            hypervisor: "xen-like-hv 0.1.0".into(),
        };
        let s = host_info(&info, &g);
        assert!(s.contains("xen_version       : 4.17.0-xlhv\n"));
        assert!(s.contains("cpu_mhz           : 2400.123\n"));
        assert!(s.contains("total_memory      : 512 MiB (131072 frames)\n"));
        assert!(s.contains("free_memory       : 256 MiB (65536 frames)\n"));
        assert!(s.contains("dom0_free_memory  : 10 MiB (2560 frames)\n"));
        assert!(s.contains("bridges           : xenbr0: eth0 vif1.0 (2 MACs learned)\n"));
        assert!(s.contains("\n                    xenbr1: vif2.1 (0 MACs learned)\n"));
        let t = image_table(&[ImageInfo {
            name: "hello".into(),
            size: 4096,
        }]);
        assert_eq!(
            t,
            "Name              Size(bytes)\nhello                    4096\n"
        );
    }
}
