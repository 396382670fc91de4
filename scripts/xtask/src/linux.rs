//! Debian's stock Linux as a PV guest: `linux-image-amd64`'s kernel and
//! `busybox-static`, fetched with `apt-get download` into the cache beside real Xen
//! (never installed), and a small initramfs whose `/init` prints a marker line and a
//! few facts about the machine, then powers off. `docs/linux.md`.
//!
//! The kernel is a bzImage whose payload is an XZ-compressed ELF (with the x86 BCJ
//! filter). Both of our builders take the bzImage itself (`pvboot::bzimage`); the
//! ELF is also taken out here, on the host, with `xz`, for the tests that boot the
//! ELF (real Xen's dom0, the ELF paths of our builders).

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::xen::{cache_dir, download_debs, unpack_deb};

/// The metapackage that names the current kernel package.
pub const KERNEL_METAPACKAGE: &str = "linux-image-amd64";
/// The package with a static busybox.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The line `/init` prints first, once in user space.
pub const MARKER: &str = "XLHV-LINUX-MARKER: user space reached";

/// `/init`: the marker, then one line per check (each prefixed `check `; one per
/// CPU flag, so no line is longer than a console line), then power off. Every line is the same on any hypervisor that gives Linux the same
/// machine, except `memtotal` (the domain's memory).
pub const INIT: &str = "#!/bin/busybox sh
B=/bin/busybox
$B mkdir -p /proc /sys /dev
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B echo \"XLHV-LINUX-MARKER: user space reached\"
$B echo \"check hypervisor $($B cat /sys/hypervisor/type 2>&1)\"
$B echo \"check sysfs $($B ls /sys/hypervisor | $B tr '\\n' ' ')\"
$B echo \"check cpus $($B grep -c ^processor /proc/cpuinfo)\"
for f in $($B grep -m1 ^flags /proc/cpuinfo | $B cut -d: -f2); do $B echo \"check flag $f\"; done
$B echo \"check memtotal $($B grep MemTotal /proc/meminfo | $B tr -s ' ' | $B cut -d' ' -f2)\"
$B echo \"check problems $($B dmesg | $B grep -c -E 'BUG|WARNING|Oops|Call Trace')\"
$B echo \"check done\"
$B poweroff -f
";

/// What the domU's `/sbin/poweroff` prints before it powers off: Linux runs it when
/// dom0 writes `poweroff` to the domain's `control/shutdown` (`dom0ctl shutdown`).
pub const POWEROFF_LINE: &str = "XLHV-LINUX: poweroff requested";

/// The domU's `/init`: [`INIT`]'s lines, but it mounts `/dev` (so that
/// `/sbin/poweroff`, which the kernel starts without open files, can reach the
/// console), says whether Linux refused the pvclock time area it registers for its
/// vDSO (`VCPUOP_register_vcpu_time_memory_area`), and waits for dom0's shutdown
/// request instead of powering off.
pub fn domu_init() -> String {
    INIT.replace(
        "$B mount -t sysfs sysfs /sys\n",
        "$B mount -t sysfs sysfs /sys\n$B mount -t devtmpfs devtmpfs /dev\n",
    )
    .replace(
        "$B echo \"check done\"\n",
        "$B echo \"check vclock-refused $($B dmesg | $B grep -c 'VCLOCK_PVCLOCK not supported')\"\n\
         $B echo \"check done\"\n",
    )
    .replace("$B poweroff -f\n", DOMU_DEVICES)
}

/// The domU's device checks, after the common ones, then the wait for dom0's
/// shutdown. The front ends are modules in Debian's kernel, so `/init` loads them.
/// With `xlhv_disk=SECTOR` on the kernel command line (Linux hands unknown
/// `key=value` words to `/init` as environment variables) it waits for `xvda`,
/// prints its size and 24 bytes read at `SECTOR`, writes [`DOMU_WRITTEN`] at sector
/// `SECTOR + 1` with a flush and reads it back uncached; with `xlhv_net=IP/LEN,PEER`
/// it waits for `eth0`, prints its MAC, brings it up with `IP` and pings `PEER` 5
/// times; with `xlhv_tcp=IP,PORT` too it sends `/tcp-pattern` ([`tcp_pattern`],
/// what a `tcpcheck role=server mib=1` expects) there with busybox's `nc` (which
/// half-closes at the file's end and waits for the server's answer and close),
/// and prints `eth0`'s TX packet and byte counters (fewer packets than the bytes
/// make MSS-sized segments: Linux sent GSO packets).
const DOMU_DEVICES: &str = "for m in /lib/modules/*.ko; do $B insmod $m; done
if [ -n \"$xlhv_disk\" ]; then
  i=0; while [ ! -e /sys/block/xvda ] && [ $i -lt 30 ]; do $B sleep 1; i=$((i+1)); done
  $B echo \"check xvda-sectors $($B cat /sys/block/xvda/size 2>&1)\"
  $B echo \"check xvda-read $($B dd if=/dev/xvda bs=512 skip=$xlhv_disk count=1 2>/dev/null | $B head -c 24)\"
  w=$((xlhv_disk+1))
  $B echo XLHV-WRITTEN-BY-LINUX | $B dd of=/dev/xvda bs=512 seek=$w count=1 conv=sync,fsync 2>/dev/null
  $B echo 3 > /proc/sys/vm/drop_caches
  $B echo \"check xvda-written $($B dd if=/dev/xvda bs=512 skip=$w count=1 2>/dev/null | $B head -c 21)\"
fi
if [ -n \"$xlhv_net\" ]; then
  i=0; while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 30 ]; do $B sleep 1; i=$((i+1)); done
  $B echo \"check eth0-mac $($B cat /sys/class/net/eth0/address 2>&1)\"
  $B ip addr add ${xlhv_net%,*} dev eth0
  $B ip link set eth0 up
  $B echo \"check ping $($B ping -c 5 -W 5 ${xlhv_net#*,} 2>&1 | $B grep -o '[0-9]* packets received')\"
  if [ -n \"$xlhv_tcp\" ]; then
    $B timeout 120 $B nc ${xlhv_tcp%,*} ${xlhv_tcp#*,} < /tcp-pattern > /dev/null
    $B echo \"check tcp-sent $?\"
    $B echo \"check eth0-tx $($B cat /sys/class/net/eth0/statistics/tx_packets) $($B cat /sys/class/net/eth0/statistics/tx_bytes)\"
  fi
fi
$B echo \"check devices-done\"
while :; do $B sleep 10; done
";

/// The bytes of `/tcp-pattern` in the domU's initramfs: 1 MiB.
pub const TCP_PATTERN_BYTES: usize = 1 << 20;

/// `/tcp-pattern`: the stream `tcpcheck` (`pv-guest-kernel/test-guests`) sends and
/// checks, byte `off` being `(off * 7) ^ (off >> 11)` (low 8 bits).
#[allow(clippy::cast_possible_truncation)] // a byte pattern: low bits wanted
pub fn tcp_pattern() -> Vec<u8> {
    (0..TCP_PATTERN_BYTES as u64)
        .map(|off| (off.wrapping_mul(7) ^ (off >> 11)) as u8)
        .collect()
}

/// What the domU's `/init` writes to `xvda` (see [`domu_init`]).
pub const DOMU_WRITTEN: &str = "XLHV-WRITTEN-BY-LINUX";

/// The domU's initramfs: busybox, [`domu_init`], Debian's `xen-blkfront` and
/// `xen-netfront` modules, and a `/sbin/poweroff` that prints [`POWEROFF_LINE`] and
/// powers off. Written beside the dom0 one (`initrd-domu.cpio`).
pub fn domu_initrd(files: &LinuxFiles) -> Result<PathBuf> {
    let dir = files.vmlinux.parent().context("the kernel has no folder")?;
    let busybox =
        std::fs::read(dir.join("root/bin/busybox")).context("busybox-static's bin/busybox")?;
    let init = domu_init();
    let poweroff = format!(
        "#!/bin/busybox sh\n/bin/busybox echo \"{POWEROFF_LINE}\" > /dev/console\n\
         /bin/busybox poweroff -f\n"
    );
    let modules = std::fs::read_dir(dir.join("root/lib/modules"))
        .context("the kernel package's lib/modules")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .next()
        .context("the kernel package has no lib/modules/VERSION")?;
    let blkfront = std::fs::read(modules.join("kernel/drivers/block/xen-blkfront.ko"))
        .context("xen-blkfront.ko")?;
    let netfront = std::fs::read(modules.join("kernel/drivers/net/xen-netfront.ko"))
        .context("xen-netfront.ko")?;
    let pattern = tcp_pattern();
    let cpio = cpio_newc(&[
        ("bin", 0o040_755, &[]),
        ("bin/busybox", 0o100_755, &busybox),
        ("init", 0o100_755, init.as_bytes()),
        ("lib", 0o040_755, &[]),
        ("lib/modules", 0o040_755, &[]),
        ("lib/modules/xen-blkfront.ko", 0o100_644, &blkfront),
        ("lib/modules/xen-netfront.ko", 0o100_644, &netfront),
        ("sbin", 0o040_755, &[]),
        ("sbin/poweroff", 0o100_755, poweroff.as_bytes()),
        ("tcp-pattern", 0o100_644, &pattern),
    ]);
    let out = dir.join("initrd-domu.cpio");
    let tmp = dir.join(format!("initrd-domu.cpio.{}", std::process::id()));
    std::fs::write(&tmp, cpio).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &out).with_context(|| format!("moving {} into place", out.display()))?;
    Ok(out)
}

/// The kernel (the package's bzImage and the ELF taken out of it) and the initramfs.
#[derive(Clone, Debug)]
pub struct LinuxFiles {
    /// `vmlinux`: the ELF the bzImage holds.
    pub vmlinux: PathBuf,
    /// The package's `boot/vmlinuz-*`: the bzImage itself.
    pub bzimage: PathBuf,
    /// The initramfs (`newc` cpio, uncompressed).
    pub initrd: PathBuf,
    /// The kernel package file it came from.
    pub package: String,
}

/// An uncompressed `newc` cpio archive of `entries` (path, mode with file type, data),
/// ending with the trailer and padded to 512 bytes, as the kernel's initramfs unpacker
/// reads it.
pub fn cpio_newc(entries: &[(&str, u32, &[u8])]) -> Vec<u8> {
    fn pad4(out: &mut Vec<u8>) {
        while out.len() % 4 != 0 {
            out.push(0);
        }
    }
    let mut out = Vec::new();
    let trailer: (&str, u32, &[u8]) = ("TRAILER!!!", 0, &[]);
    for (ino, (name, mode, data)) in entries.iter().chain([&trailer]).enumerate() {
        let size = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let namesize = u32::try_from(name.len() + 1).unwrap_or(u32::MAX);
        let nlink = if mode & 0o170_000 == 0o040_000 { 2 } else { 1 };
        let ino = u32::try_from(ino + 1).unwrap_or(u32::MAX);
        let fields = [ino, *mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, namesize, 0];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad4(&mut out);
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    while out.len() % 512 != 0 {
        out.push(0);
    }
    out
}

/// Where the XZ stream of a bzImage starts (its magic `FD 37 7A 58 5A 00`).
pub fn xz_payload(bzimage: &[u8]) -> Option<usize> {
    const MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0];
    bzimage.windows(MAGIC.len()).position(|w| w == MAGIC)
}

/// The versioned kernel package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["depends", KERNEL_METAPACKAGE])
        .output()
        .context("running apt-cache")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .with_context(|| format!("apt-cache depends {KERNEL_METAPACKAGE} names no kernel package"))
}

/// Unpacks the bzImage's XZ payload with `xz` (it stops at the end of the stream;
/// what follows is the bzImage's trailer).
fn unpack_bzimage(bzimage: &Path, vmlinux: &Path) -> Result<()> {
    let data = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let start =
        xz_payload(&data).with_context(|| format!("{} holds no XZ stream", bzimage.display()))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running xz (package xz-utils)")?;
    let mut stdin = child.stdin.take().context("xz's stdin")?;
    let payload = data[start..].to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&payload);
    });
    let out = child.wait_with_output().context("waiting for xz")?;
    let _ = writer.join();
    if !out.stdout.starts_with(b"\x7fELF") {
        bail!(
            "xz gave no ELF from {}: {}",
            bzimage.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(vmlinux, &out.stdout).with_context(|| format!("writing {}", vmlinux.display()))
}

/// The bzImage `boot/vmlinuz-*` under the unpacked package `root`.
fn vmlinuz(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root.join("boot"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
}

fn find(dir: &Path) -> Option<LinuxFiles> {
    let vmlinux = dir.join("vmlinux");
    let initrd = dir.join("initrd.cpio");
    let package = std::fs::read_to_string(dir.join("package")).ok()?;
    let bzimage = vmlinuz(&dir.join("root"))?;
    (vmlinux.is_file() && initrd.is_file()).then(|| LinuxFiles {
        vmlinux,
        bzimage,
        initrd,
        package: package.trim().to_string(),
    })
}

fn fetch_into(dir: &Path) -> Result<()> {
    let kernel = kernel_package()?;
    download_debs(dir, &[&kernel, BUSYBOX_PACKAGE])?;
    let debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    let named = |prefix: &str| {
        debs.iter()
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .cloned()
            .with_context(|| format!("apt-get download left no {prefix}*.deb"))
    };
    let kdeb = named(&format!("{kernel}_"))?;
    let bdeb = named(&format!("{BUSYBOX_PACKAGE}_"))?;
    let root = dir.join("root");
    unpack_deb(&kdeb, &root)?;
    unpack_deb(&bdeb, &root)?;
    let bzimage = vmlinuz(&root).context("the kernel package holds no boot/vmlinuz-*")?;
    unpack_bzimage(&bzimage, &dir.join("vmlinux"))?;
    let busybox =
        std::fs::read(root.join("bin/busybox")).context("busybox-static's bin/busybox")?;
    let cpio = cpio_newc(&[
        ("bin", 0o040_755, &[]),
        ("bin/busybox", 0o100_755, &busybox),
        ("init", 0o100_755, INIT.as_bytes()),
    ]);
    std::fs::write(dir.join("initrd.cpio"), cpio)?;
    let name = kdeb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(dir.join("package"), format!("{name}\n"))?;
    Ok(())
}

fn fetch() -> Result<LinuxFiles> {
    let cache = cache_dir();
    let dir = cache.join("linux");
    if let Some(f) = find(&dir) {
        return Ok(f);
    }
    // Filled in a private folder and renamed into place, as for Xen.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = cache.join(format!("linux.tmp.{}.{nanos}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    if let Err(e) = fetch_into(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        if find(&dir).is_none() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&tmp, &dir)
                .with_context(|| format!("moving {} into place", dir.display()))?;
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
        }
    }
    find(&dir).with_context(|| format!("{} is incomplete", dir.display()))
}

/// The kernel and initramfs, fetched and built on first use (once per process).
pub fn linux_files() -> Result<LinuxFiles> {
    static FILES: OnceLock<std::result::Result<LinuxFiles, String>> = OnceLock::new();
    FILES
        .get_or_init(|| fetch().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// The `check NAME VALUE` lines of a boot's console, in order (`(d0) ` prefixes and
/// the like removed).
pub fn checks(console: &str) -> Vec<(String, String)> {
    console
        .lines()
        .map(|l| match l.strip_prefix("(d") {
            Some(rest) => rest.split_once(") ").map_or(l, |(_, text)| text),
            None => l,
        })
        .filter_map(|l| l.strip_prefix("check ").map(str::trim_end))
        .map(|rest| match rest.split_once(' ') {
            Some((k, v)) => (k.to_string(), v.trim().to_string()),
            None => (rest.to_string(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_newc_and_aligned() {
        let d = domu_init();
        assert!(d.contains("check done") && !d.contains("poweroff"), "{d}");
        assert!(d.contains("mount -t devtmpfs devtmpfs /dev\n"), "{d}");
        assert!(d.ends_with("while :; do $B sleep 10; done\n"), "{d}");
        assert!(d.contains("insmod") && d.contains(DOMU_WRITTEN), "{d}");
        let a = cpio_newc(&[("bin", 0o040_755, &[]), ("init", 0o100_755, b"#!x\n")]);
        assert_eq!(a.len() % 512, 0);
        assert!(a.starts_with(b"070701"));
        // The second header starts after "bin\0" (110 + 4 bytes), padded to 4.
        assert_eq!(&a[116..122], b"070701");
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("init\0"));
        assert!(text.contains("#!x\n"));
        assert!(text.contains("TRAILER!!!\0"));
        // filesize of init: 4.
        let init = text.find("init\0").unwrap() - 110;
        assert_eq!(&text[init + 54..init + 62], "00000004");
    }

    #[test]
    fn the_xz_payload_is_found_after_the_setup_code() {
        let mut img = vec![0u8; 100];
        img.extend_from_slice(&[0xFD, b'7', b'z', b'X', b'Z', 0, 1, 2]);
        assert_eq!(xz_payload(&img), Some(100));
        assert_eq!(xz_payload(&[0u8; 10]), None);
    }

    #[test]
    fn check_lines_are_parsed_from_either_console() {
        let log = "(d0) check hypervisor xen\n(XEN) mcheck check polling\ncheck cpus 1\n(d0) check done\n";
        assert_eq!(
            checks(log),
            vec![
                ("hypervisor".into(), "xen".into()),
                ("cpus".into(), "1".into()),
                ("done".into(), String::new())
            ]
        );
    }
}
