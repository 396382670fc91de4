//! The hypervisor command line, e.g. `loglvl=debug dom0_mem=512M hvtest=fault-pf console=com1`.
//!
//! Words are separated by ASCII whitespace; double quotes group a value with spaces.
//! Option names compare as in Xen, with `-` and `_` equal. A repeated option: the last
//! one wins. A first word starting with `/` is taken as the image path some loaders
//! prepend and skipped. Every problem becomes a [`Warning`]; parsing never fails.

use core::fmt;

use log::LevelFilter;

use super::text::{SizeError, Snippet, Tokens, Warnings, name_eq, parse_size};

/// The most `idle_poll=` takes, in microseconds (10 ms).
pub const MAX_IDLE_POLL_US: u64 = 10_000;

/// The most domains `max_domains=` allows at once: every ordinary domain id
/// (`0..DOMID_FIRST_RESERVED`), as Xen.
pub const MAX_DOMAINS_LIMIT: u32 = crate::hypercall::domctl::DOMID_FIRST_RESERVED as u32;

/// Most warnings kept by [`Options::parse`]; further ones are only counted.
pub const MAX_WARNINGS: usize = 16;

/// A deliberate failure the hypervisor provokes at boot, for its own tests (`hvtest=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestHook {
    /// `hvtest=fault-pf`: touch an unmapped address (#PF).
    FaultPageFault,
    /// `hvtest=fault-ud`: execute `ud2` (#UD).
    FaultInvalidOpcode,
    /// `hvtest=fault-gp`: load a non-canonical address (#GP).
    FaultGeneralProtection,
    /// `hvtest=fault-de`: divide by zero (#DE).
    FaultDivide,
    /// `hvtest=panic`: call `panic!`.
    Panic,
}

impl TestHook {
    /// Every hook, in the order they are listed to users.
    pub const ALL: [TestHook; 5] = [
        TestHook::FaultPageFault,
        TestHook::FaultInvalidOpcode,
        TestHook::FaultGeneralProtection,
        TestHook::FaultDivide,
        TestHook::Panic,
    ];

    /// The name used on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            TestHook::FaultPageFault => "fault-pf",
            TestHook::FaultInvalidOpcode => "fault-ud",
            TestHook::FaultGeneralProtection => "fault-gp",
            TestHook::FaultDivide => "fault-de",
            TestHook::Panic => "panic",
        }
    }

    /// The hook called `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.name() == name)
    }
}

/// The name Xen uses for a log level (`none`, `error`, `warning`, `info`, `debug`, `all`).
pub const fn level_name(level: LevelFilter) -> &'static str {
    match level {
        LevelFilter::Off => "none",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warning",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "all",
    }
}

/// Parses a log level: Xen's `none|error|warning|info|debug|all`, and also
/// `off|warn|trace`; ASCII case is ignored.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    const NAMES: [(&str, LevelFilter); 9] = [
        ("none", LevelFilter::Off),
        ("off", LevelFilter::Off),
        ("error", LevelFilter::Error),
        ("warning", LevelFilter::Warn),
        ("warn", LevelFilter::Warn),
        ("info", LevelFilter::Info),
        ("debug", LevelFilter::Debug),
        ("all", LevelFilter::Trace),
        ("trace", LevelFilter::Trace),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(s))
        .map(|&(_, l)| l)
}

/// Parses a boolean the way Xen's `parse_bool` does.
fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "yes" | "on" | "true" | "enable" => Some(true),
        "0" | "no" | "off" | "false" | "disable" => Some(false),
        _ => None,
    }
}

/// Xen options that are accepted and ignored without a warning: they configure things
/// xen-like-hv does not have, or always does one way.
const ACCEPTED: &[&str] = &[
    "console",
    "com1",
    "com2",
    "conswitch",
    "console_to_ring",
    "console_timestamps",
    "conring_size",
    "guest_loglvl",
    "dom0",
    "dom0_nodes",
    "mem",
    "maxcpus",
    "nosmp",
    "smt",
    "iommu",
    "ucode",
    "watchdog",
    "acpi",
    "noapic",
    "clocksource",
    "tsc",
    "sched",
    "cpufreq",
    "vga",
    "edd",
    "no-real-mode",
    "e820-verbose",
    "spec-ctrl",
    "bootscrub",
    "placeholder",
];

/// One problem found on the command line. `Display` gives the log message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Warning {
    /// An option nobody knows.
    UnknownOption(Snippet),
    /// An option that needs `=value` had none (or an empty one).
    MissingValue {
        /// The option's name.
        option: &'static str,
    },
    /// `loglvl=` named no level.
    BadLogLevel {
        /// The value given.
        value: Snippet,
        /// The level kept instead.
        using: LevelFilter,
    },
    /// A size that is not `NUMBER[UNIT]`.
    BadSize {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: Snippet,
    },
    /// A size that does not fit in 64 bits.
    SizeOverflow {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: Snippet,
    },
    /// A negative (`-SIZE`, "all but") or percentage amount, which Xen knows but
    /// xen-like-hv does not implement yet.
    UnsupportedSize {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: Snippet,
    },
    /// `dom0_weight=` is not a weight (1-65535).
    BadWeight(Snippet),
    /// `dom0_max_vcpus=` is not `N`, `MIN-`, `-MAX` or `MIN-MAX`.
    BadVcpus(Snippet),
    /// `idle_poll=` is not a number of microseconds up to [`MAX_IDLE_POLL_US`].
    BadIdlePoll(Snippet),
    /// `max_domains=` is not a number from 1 to [`MAX_DOMAINS_LIMIT`].
    BadMaxDomains(Snippet),
    /// `hvtest=` named no hook.
    BadTestHook(Snippet),
    /// A boolean option with a value that is not a boolean.
    BadBool {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: Snippet,
    },
    /// A `"` was never closed; the word ran to the end of the line.
    UnbalancedQuote(Snippet),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::UnknownOption(s) => write!(f, "cmdline: unknown option '{s}' ignored"),
            Warning::MissingValue { option } => {
                write!(f, "cmdline: {option} needs a value ({option}=...); ignored")
            }
            Warning::BadLogLevel { value, using } => write!(
                f,
                "cmdline: loglvl={value} is not a log level \
                 (none, error, warning, info, debug, all); using {}",
                level_name(*using)
            ),
            Warning::BadSize { option, value } => write!(
                f,
                "cmdline: {option}={value} is not a size \
                 (a number with an optional unit B, K, M, G or T, e.g. 512M); ignored"
            ),
            Warning::SizeOverflow { option, value } => {
                write!(f, "cmdline: {option}={value} is too large; ignored")
            }
            Warning::UnsupportedSize { option, value } => write!(
                f,
                "cmdline: {option}={value}: negative and percentage amounts \
                 are not supported; ignored"
            ),
            Warning::BadWeight(s) => write!(
                f,
                "cmdline: dom0_weight={s} is not a scheduling weight (1-65535); ignored"
            ),
            Warning::BadVcpus(s) => write!(
                f,
                "cmdline: dom0_max_vcpus={s} is not N, MIN-, -MAX or MIN-MAX \
                 (numbers of vCPUs from 1); ignored"
            ),
            Warning::BadIdlePoll(s) => write!(
                f,
                "cmdline: idle_poll={s} is not a number of microseconds \
                 (0-{MAX_IDLE_POLL_US}, 0 = off); ignored"
            ),
            Warning::BadMaxDomains(s) => write!(
                f,
                "cmdline: max_domains={s} is not a number of domains \
                 (1-{MAX_DOMAINS_LIMIT}); ignored"
            ),
            Warning::BadTestHook(s) => {
                write!(f, "cmdline: hvtest={s} is not a test hook (")?;
                for (i, h) in TestHook::ALL.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{}", h.name())?;
                }
                write!(f, "); ignored")
            }
            Warning::BadBool { option, value } => write!(
                f,
                "cmdline: {option}={value} is not a boolean \
                 (yes/no, on/off, true/false, 1/0); ignored"
            ),
            Warning::UnbalancedQuote(s) => write!(
                f,
                "cmdline: '\"' never closed in '{s}'; read to the end of the line"
            ),
        }
    }
}

/// The hypervisor's options, as parsed from its command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Most verbose level logged (`loglvl=`); default `Info`.
    pub loglvl: LevelFilter,
    /// dom0's memory in bytes (`dom0_mem=AMOUNT`); `None` for the default. As in Xen,
    /// an amount of 0 means the default.
    pub dom0_mem: Option<u64>,
    /// dom0's minimum memory in bytes (`dom0_mem=min:AMOUNT`).
    pub dom0_mem_min: Option<u64>,
    /// dom0's maximum memory in bytes (`dom0_mem=max:AMOUNT`).
    pub dom0_mem_max: Option<u64>,
    /// dom0's scheduling weight (`dom0_weight=N`, 1-65535); `None` for the default
    /// ([`crate::domain::DOM0_WEIGHT`]).
    pub dom0_weight: Option<u16>,
    /// The fewest and most vCPUs dom0 gets (`dom0_max_vcpus=N`, `MIN-`, `-MAX` or
    /// `MIN-MAX`, as Xen takes it): dom0 gets one per CPU, within these bounds.
    pub dom0_vcpus: (Option<u32>, Option<u32>),
    /// A failure to provoke at boot (`hvtest=`).
    pub test: Option<TestHook>,
    /// Pin dom0's vCPU n to CPU n (`dom0_vcpus_pin`; modulo the CPUs that run
    /// guests).
    pub dom0_vcpus_pin: bool,
    /// Run the local APICs in x2APIC mode where the CPU has it (`x2apic`, on by
    /// default as in Xen; `x2apic=0` keeps xAPIC mode).
    pub x2apic: bool,
    /// The most an idle CPU polls for a wake-up before it halts, in ns
    /// (`idle_poll=MICROSECONDS`, 0 = off; `sched::haltpoll`).
    pub idle_poll_ns: u64,
    /// The most domains alive at once, dom0 included (`max_domains=N`; default and
    /// most [`MAX_DOMAINS_LIMIT`], so that memory is the limit, as in Xen).
    pub max_domains: u32,
    /// Halt instead of rebooting when the machine would restart (`noreboot`).
    pub noreboot: bool,
    /// Write the log synchronously (`sync_console`).
    pub sync_console: bool,
    /// The problems found, oldest first.
    pub warnings: Warnings<Warning, MAX_WARNINGS>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            loglvl: LevelFilter::Info,
            dom0_mem: None,
            dom0_mem_min: None,
            dom0_mem_max: None,
            dom0_weight: None,
            dom0_vcpus: (None, None),
            test: None,
            dom0_vcpus_pin: false,
            x2apic: true,
            idle_poll_ns: crate::sched::haltpoll::DEFAULT_MAX_NS,
            max_domains: MAX_DOMAINS_LIMIT,
            noreboot: false,
            sync_console: false,
            warnings: Warnings::new(),
        }
    }
}

/// Parses `cmdline`; same as [`Options::parse`].
pub fn parse(cmdline: &str) -> Options {
    Options::parse(cmdline)
}

impl Options {
    /// Parses a command line. Never fails: problems are recorded in `warnings`.
    pub fn parse(cmdline: &str) -> Self {
        let mut o = Options::default();
        for (i, tok) in Tokens::new(cmdline).enumerate() {
            if i == 0 && tok.text.starts_with('/') {
                continue;
            }
            if tok.unbalanced_quote {
                o.warnings
                    .push(Warning::UnbalancedQuote(Snippet::new(tok.text)));
            }
            let (key, value) = tok.key_value();
            o.option(tok.text, key, value);
        }
        o
    }

    fn option(&mut self, word: &str, key: &str, value: Option<&str>) {
        if name_eq(key, "loglvl") {
            if let Some(v) = self.value_of("loglvl", value) {
                // Xen's `loglvl=LEVEL/RATE_LIMITED_LEVEL`: the second level is ignored.
                let level = v.split_once('/').map_or(v, |(l, _)| l);
                match parse_level(level) {
                    Some(l) => self.loglvl = l,
                    None => self.warnings.push(Warning::BadLogLevel {
                        value: Snippet::new(v),
                        using: self.loglvl,
                    }),
                }
            }
        } else if name_eq(key, "dom0_mem") {
            if let Some(v) = self.value_of("dom0_mem", value) {
                self.dom0_mem(v);
            }
        } else if name_eq(key, "dom0_weight") {
            if let Some(v) = self.value_of("dom0_weight", value) {
                match v.parse::<u16>() {
                    Ok(w) if w != 0 => self.dom0_weight = Some(w),
                    _ => self.warnings.push(Warning::BadWeight(Snippet::new(v))),
                }
            }
        } else if name_eq(key, "dom0_max_vcpus") {
            if let Some(v) = self.value_of("dom0_max_vcpus", value) {
                match parse_vcpu_range(v) {
                    Some(r) => self.dom0_vcpus = r,
                    None => self.warnings.push(Warning::BadVcpus(Snippet::new(v))),
                }
            }
        } else if name_eq(key, "idle_poll") {
            if let Some(v) = self.value_of("idle_poll", value) {
                match v.parse::<u64>() {
                    Ok(us) if us <= MAX_IDLE_POLL_US => self.idle_poll_ns = us * 1000,
                    _ => self.warnings.push(Warning::BadIdlePoll(Snippet::new(v))),
                }
            }
        } else if name_eq(key, "max_domains") {
            if let Some(v) = self.value_of("max_domains", value) {
                match v.parse::<u32>() {
                    Ok(n) if (1..=MAX_DOMAINS_LIMIT).contains(&n) => self.max_domains = n,
                    _ => self.warnings.push(Warning::BadMaxDomains(Snippet::new(v))),
                }
            }
        } else if name_eq(key, "hvtest") {
            if let Some(v) = self.value_of("hvtest", value) {
                match TestHook::from_name(v) {
                    Some(h) => self.test = Some(h),
                    None => self.warnings.push(Warning::BadTestHook(Snippet::new(v))),
                }
            }
        } else if let Some(negated) = boolean_name(key, "dom0_vcpus_pin") {
            if let Some(b) = self.boolean("dom0_vcpus_pin", negated, value) {
                self.dom0_vcpus_pin = b;
            }
        } else if let Some(negated) = boolean_name(key, "x2apic") {
            if let Some(b) = self.boolean("x2apic", negated, value) {
                self.x2apic = b;
            }
        } else if let Some(negated) = boolean_name(key, "noreboot") {
            if let Some(b) = self.boolean("noreboot", negated, value) {
                self.noreboot = b;
            }
        } else if let Some(negated) = boolean_name(key, "sync_console") {
            if let Some(b) = self.boolean("sync_console", negated, value) {
                self.sync_console = b;
            }
        } else if !is_accepted(key) {
            self.warnings
                .push(Warning::UnknownOption(Snippet::new(word)));
        }
    }

    /// The value of an option that needs one, or a warning.
    fn value_of<'v>(&mut self, option: &'static str, value: Option<&'v str>) -> Option<&'v str> {
        match value {
            Some(v) if !v.is_empty() => Some(v),
            _ => {
                self.warnings.push(Warning::MissingValue { option });
                None
            }
        }
    }

    /// The value of boolean option `name`, written `name[=BOOL]` or (if `negated`)
    /// `no-name[=BOOL]`; `None` and a warning if the value is not a boolean.
    fn boolean(&mut self, name: &'static str, negated: bool, value: Option<&str>) -> Option<bool> {
        let v = match value {
            None => true,
            Some(v) => match parse_bool(v) {
                Some(b) => b,
                None => {
                    self.warnings.push(Warning::BadBool {
                        option: name,
                        value: Snippet::new(v),
                    });
                    return None;
                }
            },
        };
        Some(v != negated)
    }

    /// `dom0_mem=[min:AMT,][max:AMT,][AMT]` (Xen's syntax), each part independent.
    fn dom0_mem(&mut self, value: &str) {
        const OPTION: &str = "dom0_mem";
        for item in value.split(',') {
            let (slot, amount) = if let Some(a) = item.strip_prefix("min:") {
                (&mut self.dom0_mem_min, a)
            } else if let Some(a) = item.strip_prefix("max:") {
                (&mut self.dom0_mem_max, a)
            } else {
                (&mut self.dom0_mem, item)
            };
            if amount.starts_with('-') || amount.ends_with('%') {
                self.warnings.push(Warning::UnsupportedSize {
                    option: OPTION,
                    value: Snippet::new(item),
                });
                continue;
            }
            match parse_size(amount) {
                Ok(s) => *slot = (s.bytes != 0).then_some(s.bytes),
                Err(SizeError::Syntax) => self.warnings.push(Warning::BadSize {
                    option: OPTION,
                    value: Snippet::new(item),
                }),
                Err(SizeError::Overflow) => self.warnings.push(Warning::SizeOverflow {
                    option: OPTION,
                    value: Snippet::new(item),
                }),
            }
        }
    }
}

/// `Some(negated)` if `key` names the boolean option `name`, either as `name` or as
/// `no-name` (Xen's negation; `no_name` is the same by the `-`/`_` rule).
fn boolean_name(key: &str, name: &str) -> Option<bool> {
    if name_eq(key, name) {
        Some(false)
    } else if key.get(..3).is_some_and(|p| name_eq(p, "no-"))
        && key.get(3..).is_some_and(|k| name_eq(k, name))
    {
        Some(true)
    } else {
        None
    }
}

/// `N`, `MIN-`, `-MAX` or `MIN-MAX` (Xen's `dom0_max_vcpus`), every number at least 1
/// and MIN <= MAX.
fn parse_vcpu_range(v: &str) -> Option<(Option<u32>, Option<u32>)> {
    let n = |s: &str| s.parse::<u32>().ok().filter(|&n| n >= 1);
    let (lo, hi) = match v.split_once('-') {
        None => (Some(n(v)?), Some(n(v)?)),
        Some((a, b)) => {
            let lo = if a.is_empty() { None } else { Some(n(a)?) };
            let hi = if b.is_empty() { None } else { Some(n(b)?) };
            (lo, hi)
        }
    };
    match (lo, hi) {
        (None, None) => None,
        (Some(a), Some(b)) if a > b => None,
        r => Some(r),
    }
}

/// The vCPUs dom0 gets on a machine with `cpus` CPUs (Xen's `dom0_max_vcpus()`):
/// one per CPU, raised to the minimum and cut to the maximum of `bounds`, and to
/// `limit`.
pub fn dom0_vcpus(bounds: (Option<u32>, Option<u32>), cpus: u32, limit: u32) -> u32 {
    let n = bounds.0.map_or(cpus, |lo| cpus.max(lo));
    bounds.1.map_or(n, |hi| n.min(hi)).clamp(1, limit.max(1))
}

/// Whether `key` (or `key` without a `no-` prefix) is in [`ACCEPTED`].
fn is_accepted(key: &str) -> bool {
    let bare = key.strip_prefix("no-").unwrap_or(key);
    ACCEPTED.iter().any(|a| name_eq(a, key) || name_eq(a, bare))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn messages(o: &Options) -> Vec<String> {
        o.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn typical_line() {
        let o = Options::parse("loglvl=debug dom0_mem=512M hvtest=fault-pf console=com1");
        assert_eq!(o.loglvl, LevelFilter::Debug);
        assert_eq!(o.dom0_mem, Some(512 << 20));
        assert_eq!(o.test, Some(TestHook::FaultPageFault));
        assert!(o.warnings.is_empty(), "{:?}", messages(&o));
    }

    #[test]
    fn defaults() {
        let o = Options::parse("");
        assert_eq!(o, Options::default());
        assert_eq!(o.loglvl, LevelFilter::Info);
    }

    #[test]
    fn log_levels() {
        for (s, l) in [
            ("none", LevelFilter::Off),
            ("off", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("warning", LevelFilter::Warn),
            ("warn", LevelFilter::Warn),
            ("INFO", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("all", LevelFilter::Trace),
            ("trace", LevelFilter::Trace),
            ("all/warning", LevelFilter::Trace),
        ] {
            assert_eq!(Options::parse(&std::format!("loglvl={s}")).loglvl, l, "{s}");
        }
        let o = Options::parse("loglvl=error loglvl=banana");
        assert_eq!(o.loglvl, LevelFilter::Error);
        let o = Options::parse("loglvl=banana");
        assert_eq!(
            messages(&o),
            ["cmdline: loglvl=banana is not a log level \
                 (none, error, warning, info, debug, all); using info"]
        );
    }

    #[test]
    fn max_domains() {
        assert_eq!(Options::parse("").max_domains, MAX_DOMAINS_LIMIT);
        assert_eq!(Options::parse("max_domains=1").max_domains, 1);
        assert_eq!(Options::parse("max-domains=300").max_domains, 300);
        assert_eq!(Options::parse("max_domains=32752").max_domains, 32752);
        for bad in ["0", "32753", "-1", "x", "1k"] {
            let o = Options::parse(&format!("max_domains={bad}"));
            assert_eq!(o.max_domains, MAX_DOMAINS_LIMIT, "{bad}");
            assert_eq!(
                o.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                [format!(
                    "cmdline: max_domains={bad} is not a number of domains (1-32752); ignored"
                )]
            );
        }
    }

    #[test]
    fn idle_poll() {
        use crate::sched::haltpoll::DEFAULT_MAX_NS;
        assert_eq!(Options::parse("").idle_poll_ns, DEFAULT_MAX_NS);
        assert_eq!(Options::parse("idle_poll=0").idle_poll_ns, 0);
        assert_eq!(Options::parse("idle-poll=50").idle_poll_ns, 50_000);
        assert_eq!(Options::parse("idle_poll=10000").idle_poll_ns, 10_000_000);
        for bad in ["10001", "-1", "fast", "1.5"] {
            let o = Options::parse(&format!("idle_poll={bad}"));
            assert_eq!(o.idle_poll_ns, DEFAULT_MAX_NS, "{bad}");
            assert_eq!(
                o.warnings.iter().map(|w| w.to_string()).collect::<Vec<_>>(),
                [format!(
                    "cmdline: idle_poll={bad} is not a number of microseconds (0-10000, 0 = off); ignored"
                )]
            );
        }
    }

    #[test]
    fn dom0_weight() {
        assert_eq!(Options::parse("dom0_weight=256").dom0_weight, Some(256));
        assert_eq!(Options::parse("dom0-weight=65535").dom0_weight, Some(65535));
        assert_eq!(Options::parse("").dom0_weight, None);
        for bad in ["0", "65536", "-1", "heavy"] {
            let o = Options::parse(&format!("dom0_weight={bad}"));
            assert_eq!(o.dom0_weight, None, "{bad}");
            assert_eq!(
                messages(&o),
                [format!(
                    "cmdline: dom0_weight={bad} is not a scheduling weight (1-65535); ignored"
                )]
            );
        }
    }

    #[test]
    fn dom0_max_vcpus_forms() {
        assert_eq!(
            Options::parse("dom0_max_vcpus=4").dom0_vcpus,
            (Some(4), Some(4))
        );
        assert_eq!(
            Options::parse("dom0_max_vcpus=2-").dom0_vcpus,
            (Some(2), None)
        );
        assert_eq!(
            Options::parse("dom0_max_vcpus=-3").dom0_vcpus,
            (None, Some(3))
        );
        assert_eq!(
            Options::parse("dom0_max_vcpus=1-8").dom0_vcpus,
            (Some(1), Some(8))
        );
        for bad in ["0", "4-2", "-", "x", "1-y", "-0"] {
            let o = Options::parse(&std::format!("dom0_max_vcpus={bad}"));
            assert_eq!(o.dom0_vcpus, (None, None), "{bad}");
            assert_eq!(
                messages(&o),
                [std::format!(
                    "cmdline: dom0_max_vcpus={bad} is not N, MIN-, -MAX or MIN-MAX \
                     (numbers of vCPUs from 1); ignored"
                )]
            );
        }
        // One per CPU by default, within the bounds and the limit.
        assert_eq!(dom0_vcpus((None, None), 4, 32), 4);
        assert_eq!(dom0_vcpus((Some(1), Some(1)), 4, 32), 1);
        assert_eq!(dom0_vcpus((Some(6), None), 4, 32), 6);
        assert_eq!(dom0_vcpus((None, Some(2)), 4, 32), 2);
        assert_eq!(dom0_vcpus((Some(64), None), 4, 32), 32);
    }

    #[test]
    fn dom0_mem_forms() {
        let o = Options::parse("dom0_mem=min:128M,max:1G,512M");
        assert_eq!(o.dom0_mem_min, Some(128 << 20));
        assert_eq!(o.dom0_mem_max, Some(1 << 30));
        assert_eq!(o.dom0_mem, Some(512 << 20));
        // A bare number is KiB, as in Xen.
        assert_eq!(Options::parse("dom0_mem=524288").dom0_mem, Some(512 << 20));
        assert_eq!(Options::parse("dom0-mem=1g").dom0_mem, Some(1 << 30));
        assert_eq!(Options::parse("dom0_mem=0").dom0_mem, None);
        let o = Options::parse("dom0_mem=1G dom0_mem=99999999999T");
        assert_eq!(o.dom0_mem, Some(1 << 30));
        assert_eq!(
            messages(&o),
            ["cmdline: dom0_mem=99999999999T is too large; ignored"]
        );
        let o = Options::parse("dom0_mem=-256M,max:50% dom0_mem=lots dom0_mem=");
        assert_eq!(o.dom0_mem, None);
        assert!(matches!(
            o.warnings.as_slice(),
            [
                Warning::UnsupportedSize { .. },
                Warning::UnsupportedSize { .. },
                Warning::BadSize { .. },
                Warning::MissingValue { option: "dom0_mem" },
            ]
        ));
    }

    #[test]
    fn test_hooks() {
        for h in TestHook::ALL {
            let o = Options::parse(&std::format!("hvtest={}", h.name()));
            assert_eq!(o.test, Some(h));
        }
        let o = Options::parse("hvtest=fault-xx");
        assert_eq!(o.test, None);
        assert_eq!(
            messages(&o),
            ["cmdline: hvtest=fault-xx is not a test hook \
                 (fault-pf, fault-ud, fault-gp, fault-de, panic); ignored"]
        );
    }

    #[test]
    fn booleans_and_known_options() {
        let o = Options::parse(
            "noreboot sync-console console=com1 com1=115200,8n1 no-watchdog dom0_vcpus_pin",
        );
        assert!(o.noreboot && o.sync_console && o.dom0_vcpus_pin);
        assert!(!Options::parse("dom0_vcpus_pin=no").dom0_vcpus_pin);
        assert!(Options::parse("").x2apic);
        assert!(!Options::parse("x2apic=false").x2apic);
        assert!(!Options::parse("no-x2apic").x2apic);
        assert!(o.warnings.is_empty(), "{:?}", messages(&o));
        let o = Options::parse("noreboot=0 no-sync_console sync_console=maybe");
        assert!(!o.noreboot && !o.sync_console);
        assert!(matches!(
            o.warnings.as_slice(),
            [Warning::BadBool {
                option: "sync_console",
                ..
            }]
        ));
    }

    #[test]
    fn unknown_and_odd_words() {
        let o = Options::parse("/boot/xlhv foo=bar = \t\tloglvl \"quoted=x y\" tail=\"open");
        assert_eq!(
            messages(&o),
            [
                "cmdline: unknown option 'foo=bar' ignored",
                "cmdline: unknown option '=' ignored",
                "cmdline: loglvl needs a value (loglvl=...); ignored",
                "cmdline: unknown option '\"quoted=x y\"' ignored",
                "cmdline: '\"' never closed in 'tail=\"open'; read to the end of the line",
                "cmdline: unknown option 'tail=\"open' ignored",
            ]
        );
    }

    #[test]
    fn huge_lines_are_bounded() {
        let mut line = String::new();
        for i in 0..2000 {
            line.push_str(&std::format!("junk{i}=ü "));
        }
        line.push_str(&"x".repeat(10_000));
        line.push_str(" loglvl=all");
        let o = Options::parse(&line);
        assert_eq!(o.loglvl, LevelFilter::Trace);
        assert_eq!(o.warnings.len(), MAX_WARNINGS);
        assert_eq!(o.warnings.dropped(), 2001 - 16);
        let long = o
            .warnings
            .iter()
            .map(ToString::to_string)
            .max_by_key(String::len)
            .unwrap();
        assert!(long.len() < 120, "{long}");
    }

    proptest! {
        #[test]
        fn any_string_parses(s in ".{0,400}") {
            let o = Options::parse(&s);
            for w in o.warnings.iter() {
                prop_assert!(w.to_string().starts_with("cmdline: "));
            }
        }

        #[test]
        fn option_like_strings_parse(
            words in proptest::collection::vec(
                "(loglvl|dom0_mem|hvtest|noreboot|console|x)(=[-a-zA-Z0-9:,%/\"]{0,12})?",
                0..20,
            )
        ) {
            let _ = Options::parse(&words.join(" "));
        }
    }
}
