//! `blkcheck`: a domU's disk through the Xen block front end
//! (`pv_runtime::blkfront`), checked end to end and timed.
//!
//! It connects to `device/vbd/51712` (xvda), or the first vbd present
//! (`vdev=N` picks one), and prints the disk's size and the features both
//! ends agreed. Then, over the whole disk (or its first `limit=MiB`):
//!
//! 1. writes a pattern derived from (sector number, `seed=N`, default 1)
//!    in 1 MiB sequential writes, then flushes (timed together:
//!    `write_mib_s`);
//! 2. reads it back in 1 MiB sequential reads (timed: `read_mib_s`) and
//!    verifies every byte;
//! 3. reads `ops=N` (default 2048) random 4 KiB blocks with `qd=N`
//!    (default 32) requests in flight (timed: `rand4k_iops`), checking the
//!    first word of each sector;
//!
//! and closes the device. With the word `verify-only` it skips step 1
//! (`write_mib_s=0.00`): a second boot reads what the first wrote.
//! `order=N`, `queues=N`, `indirect=N`, `persistent=0|1` and `pool=N` set
//! what the front end offers (ring page order, queues, indirect segments,
//! persistent grants, pool pages; the runtime's defaults otherwise).
//! `wait=S` waits up to S seconds for the vbd to appear (hot-plug), and
//! `repeat=N` runs steps 1 and 2 N times, printing `blkcheck: pass K done`
//! after each (the rates are the last pass's).
//!
//! Exactly one result line, then poweroff: `blkcheck: ok sectors=N
//! write_mib_s=X read_mib_s=Y rand4k_iops=Z`; or `blkcheck: FAIL <reason>`
//! and the domain crashes.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use pv_runtime::blkfront::check::{self, Args, Rate, Rng};
use pv_runtime::blkfront::{self, Device, Error, Options, PageBuf};
use pv_runtime::{Config, StartInfo, println, sched, start_info, time, xenbus};
use pv_test_guests::fail;

const NAME: &str = "blkcheck";
const MIB: usize = 1 << 20;

fn or_fail<T>(what: &str, r: Result<T, Error>) -> T {
    r.unwrap_or_else(|e| fail(NAME, format_args!("{what}: {e}")))
}

/// The vbd to check: `vdev=N`, else xvda, else the first; waiting up to
/// `wait=S` seconds for it to appear.
fn pick_vdev(args: &Args) -> u64 {
    let deadline = time::system_time_ns() + u64::from(args.wait_s) * 1_000_000_000;
    loop {
        let all = or_fail("listing device/vbd", blkfront::devices());
        let pick = match args.vdev {
            Some(v) => all.contains(&v).then_some(v),
            None if all.contains(&check::XVDA) => Some(check::XVDA),
            None => all.first().copied(),
        };
        if let Some(v) = pick {
            return v;
        }
        if time::system_time_ns() >= deadline {
            match args.vdev {
                Some(v) => fail(NAME, format_args!("no vbd {v} in device/vbd")),
                None => fail(NAME, format_args!("no vbd in device/vbd")),
            }
        }
        let _ = time::sleep(100_000_000);
    }
}

fn describe(dev: &Device) -> String {
    let info = dev.info();
    let t = dev.transport();
    let f = dev.features();
    let mut flags = String::new();
    for (on, name) in [
        (info.readonly(), " read-only"),
        (info.removable(), " removable"),
        (info.cdrom(), " cdrom"),
    ] {
        if on {
            flags.push_str(name);
        }
    }
    let (flush, discard, persistent, indirect) = match f {
        Some(f) => (
            match f.flush {
                blkfront::FlushMode::FlushCache => "flush-cache",
                blkfront::FlushMode::Barrier => "barrier",
                blkfront::FlushMode::None => "none",
            },
            match f.discard {
                Some(d) => format!(
                    "granularity {} alignment {}{}",
                    d.granularity,
                    d.alignment,
                    if d.secure { " secure" } else { "" }
                ),
                None => String::from("no"),
            },
            f.persistent,
            f.max_indirect_segments,
        ),
        None => ("none", String::from("no"), false, 0),
    };
    format!(
        "vbd {} (backend {} in domain {}): {} sectors ({} MiB), sector size {}, physical {},{} info {:#x}; ring {} page(s) x {} queue(s), persistent grants {}, indirect segments {}, flush {}, discard {}",
        dev.vdev(),
        dev.backend(),
        dev.backend_id().0,
        info.sectors,
        info.bytes() >> 20,
        info.sector_size,
        info.physical_sector_size,
        flags,
        info.info,
        t.ring_pages(),
        t.queues,
        if persistent { "yes" } else { "no" },
        indirect,
        flush,
        discard,
    )
}

/// Write the pattern over `span` bytes in 1 MiB writes, then flush;
/// the nanoseconds it took.
fn write_pass(dev: &mut Device, buf: &mut PageBuf, seed: u64, span: u64) -> u64 {
    let mut ns = 0;
    let mut at = 0u64;
    while at < span {
        let n = usize::try_from(span - at).map_or(MIB, |left| left.min(MIB));
        let b = &mut buf.as_mut_slice()[..n];
        check::fill(seed, at / 512, b);
        let t0 = time::system_time_ns();
        if let Err(e) = dev.write(at / 512, b) {
            fail(NAME, format_args!("write at sector {}: {e}", at / 512));
        }
        ns += time::system_time_ns() - t0;
        at += n as u64;
    }
    let t0 = time::system_time_ns();
    or_fail("flush", dev.flush());
    ns + (time::system_time_ns() - t0)
}

/// Read `span` bytes back in 1 MiB reads and verify them; the nanoseconds
/// the reads took.
fn read_pass(dev: &mut Device, buf: &mut PageBuf, seed: u64, span: u64) -> u64 {
    let mut ns = 0;
    let mut at = 0u64;
    while at < span {
        let n = usize::try_from(span - at).map_or(MIB, |left| left.min(MIB));
        let b = &mut buf.as_mut_slice()[..n];
        b.fill(0);
        let t0 = time::system_time_ns();
        if let Err(e) = dev.read(at / 512, b) {
            fail(NAME, format_args!("read at sector {}: {e}", at / 512));
        }
        ns += time::system_time_ns() - t0;
        if let Err(m) = check::verify(seed, at / 512, b) {
            fail(NAME, format_args!("verify: {m}"));
        }
        at += n as u64;
    }
    ns
}

/// `ops` random reads of `unit` bytes with `qd` in flight; how many ran
/// and the nanoseconds they took.
fn random_pass(dev: &mut Device, args: &Args, span: u64, unit: usize) -> (u64, u64) {
    let blocks = span / unit as u64;
    let ops = u64::from(args.random_ops);
    if blocks == 0 || ops == 0 {
        return (0, 0);
    }
    let mut rng = Rng::new(args.seed ^ 0x7261_6e64);
    let mut block = alloc::vec![0u8; unit];
    let mut problem: Option<String> = None;
    let (mut submitted, mut done) = (0u64, 0u64);
    let timeout = Options::DEFAULT.io_timeout_ns;
    let t0 = time::system_time_ns();
    while done < ops {
        while submitted < ops && dev.in_flight() < args.queue_depth as usize {
            let sector = rng.below(blocks) * unit as u64 / 512;
            match dev.submit_read(sector, unit) {
                Ok(_) => submitted += 1,
                Err(Error::Busy) => break,
                Err(e) => fail(NAME, format_args!("random read at sector {sector}: {e}")),
            }
        }
        let n = or_fail(
            "random reads",
            dev.poll(|mut c| match &c.result {
                Ok(()) => {
                    c.read_into(&mut block);
                    if let Err(m) = check::verify_sampled(args.seed, c.sector, &block) {
                        problem.get_or_insert(format!("random read: {m}"));
                    }
                }
                Err(e) => {
                    problem.get_or_insert(format!("random read at sector {}: {e}", c.sector));
                }
            }),
        );
        if let Some(p) = &problem {
            fail(NAME, format_args!("{p}"));
        }
        done += n as u64;
        if n == 0 && !or_fail("waiting", dev.wait(timeout)) && dev.in_flight() > 0 {
            fail(
                NAME,
                format_args!("random reads: no answer ({} in flight)", dev.in_flight()),
            );
        }
    }
    (done, time::system_time_ns() - t0)
}

fn main(_si: &'static StartInfo) {
    let args = check::parse_args(&start_info().cmd_line)
        .unwrap_or_else(|e| fail(NAME, format_args!("{e}")));
    if let Err(e) = xenbus::connect() {
        fail(NAME, format_args!("xenstore: {e}"));
    }
    let vdev = pick_vdev(&args);
    let mut opts = Options::DEFAULT;
    if let Some(o) = args.ring_order {
        opts.limits.max_ring_page_order = o;
    }
    if let Some(q) = args.queues {
        opts.limits.max_queues = q;
    }
    if let Some(i) = args.indirect {
        opts.limits.max_indirect_segments = i;
    }
    if let Some(p) = args.persistent {
        opts.limits.persistent = p;
    }
    if let Some(p) = args.pool_pages {
        opts.pool_pages = p;
    }
    let mut dev = or_fail(
        &format!("opening device/vbd/{vdev}"),
        Device::open(vdev, &opts),
    );
    println!("{NAME}: {}", describe(&dev));
    let info = dev.info();
    let span = check::span(info.bytes(), args.limit_mib, info.sector_size);
    if span == 0 {
        fail(NAME, format_args!("nothing to check: the disk is empty"));
    }
    let mut buf = or_fail("buffer", PageBuf::new(MIB));
    if !args.verify_only && dev.readonly() {
        fail(
            NAME,
            format_args!("the disk is read-only (use verify-only)"),
        );
    }
    let (mut write_ns, mut read_ns) = (0, 0);
    for pass in 1..=args.repeat {
        if !args.verify_only {
            write_ns = write_pass(&mut dev, &mut buf, args.seed, span);
        }
        read_ns = read_pass(&mut dev, &mut buf, args.seed, span);
        if args.repeat > 1 {
            println!("{NAME}: pass {pass} done");
        }
    }
    let unit = (info.sector_size as usize).max(4096);
    let (random_ops, random_ns) = random_pass(&mut dev, &args, span, unit);
    let stats = dev.stats();
    let report = or_fail("closing", dev.close());
    println!(
        "{NAME}: {} requests ({} indirect), {} notifications; closed with the back end {:?}, {} pages kept by it",
        stats.requests, stats.indirect, stats.notifications, report.backend, report.leaked_pages
    );
    let write = if args.verify_only {
        Rate(0)
    } else {
        Rate::mib_per_s(span, write_ns)
    };
    println!(
        "{NAME}: ok sectors={} write_mib_s={} read_mib_s={} rand4k_iops={}",
        info.sectors,
        write,
        Rate::mib_per_s(span, read_ns),
        Rate::per_s(random_ops, random_ns).whole()
    );
    sched::poweroff()
}

pv_runtime::entry!(main, config = Config::OWN_PAGE_TABLES);
