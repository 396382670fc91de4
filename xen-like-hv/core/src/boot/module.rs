//! Multiboot2 module descriptions: the string GRUB passes with each `module2`.
//!
//! The first word names the module's role:
//!
//! * `dom0 [...]`: the dom0 kernel. dom0's command line is the module's whole string,
//!   `dom0` included, as Xen hands it over with GRUB 2 ([`dom0_cmdline`]).
//! * `domu name=NAME [mem=SIZE] [cmdline="..."]`: a domU built at boot. `SIZE` uses
//!   Xen's syntax but must carry a unit (`64M`), so it cannot be mistaken for KiB or
//!   MiB. `cmdline` may be double-quoted to hold spaces. Repeated keys: last wins.
//! * anything else: a module with that name (for example an initrd); the rest of the
//!   line is its command line, verbatim.
//!
//! When no module is named `dom0`, dom0 is the first module that is not a `domu`,
//! as on Xen, where the first module is dom0 and its whole string its command line
//! ([`find_dom0`]). So a Xen-style `module2 /boot/kernel console=hvc0 quiet` boots.
//!
//! The role word is matched ignoring ASCII case. Names are 1 to [`MAX_NAME`] characters
//! of `A-Z a-z 0-9 . _ -`. Problems become [`ModuleWarning`]s; parsing never fails.

use core::fmt;

use super::text::{Size, SizeError, Snippet, Tokens, Warnings, is_space, parse_size};

/// Longest module name, in bytes.
pub const MAX_NAME: usize = 32;
/// Most warnings kept per module; further ones are only counted.
pub const MAX_WARNINGS: usize = 8;

/// What a module is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleRole {
    /// The dom0 kernel.
    Dom0,
    /// A domU kernel built at boot.
    DomU,
    /// Anything else (named by its first word).
    Other,
}

/// One problem found in a module's string. `Display` gives the log message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModuleWarning {
    /// The string is empty, so the module has no role.
    Empty,
    /// A `domu` module without `name=`.
    MissingName,
    /// A name that is empty, too long or has characters outside `A-Z a-z 0-9 . _ -`.
    BadName(Snippet),
    /// A `domu` word that is not `name=`, `mem=` or `cmdline=`.
    UnknownKey(Snippet),
    /// `weight=` is not a number from 1 to 65535.
    BadWeight(Snippet),
    /// `mem=` is not a non-zero size.
    BadSize(Snippet),
    /// `mem=` does not fit in 64 bits.
    SizeOverflow(Snippet),
    /// `mem=` has no unit.
    SizeNeedsUnit(Snippet),
    /// A `"` was never closed; the word ran to the end of the string.
    UnbalancedQuote(Snippet),
}

impl fmt::Display for ModuleWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModuleWarning::Empty => {
                write!(
                    f,
                    "module: empty command line, so no role (dom0, domu or a name)"
                )
            }
            ModuleWarning::MissingName => {
                write!(f, "module: domu needs a name (domu name=NAME ...)")
            }
            ModuleWarning::BadName(s) => write!(
                f,
                "module: name '{s}' must be 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ -; ignored"
            ),
            ModuleWarning::UnknownKey(s) => write!(
                f,
                "module: unknown setting '{s}' ignored (domu takes name=, mem=, weight=, cmdline=)"
            ),
            ModuleWarning::BadWeight(s) => write!(
                f,
                "module: weight={s} is not a scheduling weight from 1 to 65535; ignored"
            ),
            ModuleWarning::BadSize(s) => write!(
                f,
                "module: mem={s} is not a memory size \
                 (a number with a unit B, K, M, G or T, e.g. 64M); ignored"
            ),
            ModuleWarning::SizeOverflow(s) => {
                write!(f, "module: mem={s} is too large; ignored")
            }
            ModuleWarning::SizeNeedsUnit(s) => write!(
                f,
                "module: mem={s} has no unit; write e.g. mem={s}M (units B, K, M, G, T); ignored"
            ),
            ModuleWarning::UnbalancedQuote(s) => write!(
                f,
                "module: '\"' never closed in '{s}'; read to the end of the string"
            ),
        }
    }
}

/// What a module's string says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec<'a> {
    /// The module's role.
    pub role: ModuleRole,
    /// `dom0` for dom0, `name=` for a domU, the first word otherwise; empty if missing
    /// or invalid (a warning says why).
    pub name: heapless::String<MAX_NAME>,
    /// Memory for a domU (`mem=`), in bytes.
    pub mem: Option<u64>,
    /// Scheduling weight for a domU (`weight=`, 1-65535; Xen's credit default is 256).
    pub weight: Option<u16>,
    /// The kernel's command line, borrowed from the module's string.
    pub cmdline: &'a str,
    /// The problems found, oldest first.
    pub warnings: Warnings<ModuleWarning, MAX_WARNINGS>,
}

/// A valid module name, or `None`.
fn valid_name(s: &str) -> Option<heapless::String<MAX_NAME>> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if s.is_empty() || !s.chars().all(ok) {
        return None;
    }
    heapless::String::try_from(s).ok()
}

/// Parses the string GRUB passed with a module. Never fails; see the module docs.
pub fn parse_module_cmdline(s: &str) -> ModuleSpec<'_> {
    let mut spec = ModuleSpec {
        role: ModuleRole::Other,
        name: heapless::String::new(),
        mem: None,
        weight: None,
        cmdline: "",
        warnings: Warnings::new(),
    };
    let mut tokens = Tokens::new(s);
    let Some(first) = tokens.next() else {
        spec.warnings.push(ModuleWarning::Empty);
        return spec;
    };
    if first.text.eq_ignore_ascii_case("dom0") {
        return dom0_spec(s);
    } else if first.text.eq_ignore_ascii_case("domu") {
        spec.role = ModuleRole::DomU;
        domu_settings(&mut spec, tokens);
    } else {
        match valid_name(first.text) {
            Some(n) => spec.name = n,
            None => spec
                .warnings
                .push(ModuleWarning::BadName(Snippet::new(first.text))),
        }
        spec.cmdline = tokens.remainder().trim_end_matches(is_space);
    }
    spec
}

/// dom0's command line from its module's string: the whole string, first word
/// included, without leading spaces (Xen's `cmdline_cook` for GRUB 2, which does not
/// put the image name first).
pub fn dom0_cmdline(s: &str) -> &str {
    s.trim_start_matches(' ')
}

/// The module with string `s` read as dom0's kernel, whatever its first word: named
/// `dom0`, with the whole string as its command line and no warnings.
pub fn dom0_spec(s: &str) -> ModuleSpec<'_> {
    ModuleSpec {
        role: ModuleRole::Dom0,
        name: heapless::String::try_from("dom0").unwrap_or_default(),
        mem: None,
        weight: None,
        cmdline: dom0_cmdline(s),
        warnings: Warnings::new(),
    }
}

/// Which modules dom0 is built from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dom0Modules {
    /// Its kernel: the first module named `dom0`; if none is, the first module that
    /// is not a `domu` (Xen takes the first module).
    pub kernel: Option<usize>,
    /// Its initrd: the first other module that is neither named `dom0` nor `domu`.
    pub initrd: Option<usize>,
}

/// Picks dom0's kernel and initrd from the modules' strings, in module order.
pub fn find_dom0<'a, I>(cmdlines: I) -> Dom0Modules
where
    I: IntoIterator<Item = &'a str>,
    I::IntoIter: Clone,
{
    let all = cmdlines.into_iter();
    let roles = all.map(|s| parse_module_cmdline(s).role).enumerate();
    let kernel = roles
        .clone()
        .find(|(_, r)| *r == ModuleRole::Dom0)
        .or_else(|| roles.clone().find(|(_, r)| *r != ModuleRole::DomU))
        .map(|(i, _)| i);
    let initrd = roles
        .filter(|(i, r)| *r == ModuleRole::Other && Some(*i) != kernel)
        .map(|(i, _)| i)
        .next();
    Dom0Modules { kernel, initrd }
}

fn domu_settings<'a>(spec: &mut ModuleSpec<'a>, tokens: Tokens<'a>) {
    let mut named = false;
    for tok in tokens {
        if tok.unbalanced_quote {
            spec.warnings
                .push(ModuleWarning::UnbalancedQuote(Snippet::new(tok.text)));
        }
        match tok.key_value() {
            ("name", Some(v)) => {
                named = true;
                match valid_name(v) {
                    Some(n) => spec.name = n,
                    None => {
                        spec.name.clear();
                        spec.warnings.push(ModuleWarning::BadName(Snippet::new(v)));
                    }
                }
            }
            ("mem", Some(v)) => match parse_size(v) {
                Ok(Size {
                    bytes,
                    unit_given: true,
                }) if bytes != 0 => spec.mem = Some(bytes),
                Ok(Size {
                    unit_given: false, ..
                }) => spec
                    .warnings
                    .push(ModuleWarning::SizeNeedsUnit(Snippet::new(v))),
                Ok(_) | Err(SizeError::Syntax) => {
                    spec.warnings.push(ModuleWarning::BadSize(Snippet::new(v)));
                }
                Err(SizeError::Overflow) => spec
                    .warnings
                    .push(ModuleWarning::SizeOverflow(Snippet::new(v))),
            },
            ("cmdline", Some(v)) => spec.cmdline = v,
            ("weight", Some(v)) => match v.parse::<u16>() {
                Ok(w) if w != 0 => spec.weight = Some(w),
                _ => spec
                    .warnings
                    .push(ModuleWarning::BadWeight(Snippet::new(v))),
            },
            _ => spec
                .warnings
                .push(ModuleWarning::UnknownKey(Snippet::new(tok.text))),
        }
    }
    if !named {
        spec.warnings.push(ModuleWarning::MissingName);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    fn messages(m: &ModuleSpec<'_>) -> Vec<String> {
        m.warnings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn dom0_gets_the_whole_string() {
        let m = parse_module_cmdline("  dom0  console=hvc0 earlyprintk=xen  \"a b\"  ");
        assert_eq!(m.role, ModuleRole::Dom0);
        assert_eq!(m.name, "dom0");
        assert_eq!(m.cmdline, "dom0  console=hvc0 earlyprintk=xen  \"a b\"  ");
        assert!(m.warnings.is_empty());
        let m = parse_module_cmdline("DOM0");
        assert_eq!((m.role, m.cmdline), (ModuleRole::Dom0, "DOM0"));
        // Read as dom0 by position: any string, kept whole, no name warnings.
        let m = dom0_spec(" console=hvc0 root=/dev/xvda1 \"x y\"");
        assert_eq!((m.role, m.name.as_str()), (ModuleRole::Dom0, "dom0"));
        assert_eq!(m.cmdline, "console=hvc0 root=/dev/xvda1 \"x y\"");
        assert!(m.warnings.is_empty());
        assert_eq!(dom0_spec("").cmdline, "");
        assert_eq!(dom0_cmdline("\tx "), "\tx ", "Xen strips spaces only");
    }

    fn pick(mods: &[&str]) -> (Option<usize>, Option<usize>) {
        let d = find_dom0(mods.iter().copied());
        (d.kernel, d.initrd)
    }

    #[test]
    fn dom0_is_the_named_module_else_the_first_that_is_not_a_domu() {
        // Named: wherever it is, and its initrd is the first plain module.
        assert_eq!(pick(&["images", "dom0 x=1"]), (Some(1), Some(0)));
        assert_eq!(
            pick(&["domu name=a", "dom0", "domu name=b", "initrd"]),
            (Some(1), Some(3))
        );
        assert_eq!(pick(&["Dom0 quiet", "dom0 second"]), (Some(0), None));
        // Unnamed, as on Xen: the first module, whatever its string; the next plain
        // module is its initrd.
        assert_eq!(pick(&["console=hvc0 quiet", "images"]), (Some(0), Some(1)));
        assert_eq!(pick(&["", "images"]), (Some(0), Some(1)));
        assert_eq!(pick(&["pv-kernel"]), (Some(0), None));
        // A domu module is never dom0.
        assert_eq!(
            pick(&["domu name=web", "kernel a=b", "initrd"]),
            (Some(1), Some(2))
        );
        assert_eq!(pick(&["domu name=web", "DOMU name=x"]), (None, None));
        assert_eq!(pick(&[]), (None, None));
    }

    #[test]
    fn domu_settings_as_grub_passes_them() {
        // GRUB rebuilds a module's command line Linux-style: a word with spaces is
        // wrapped in double quotes as a whole.
        let m = parse_module_cmdline("domu name=web mem=64M \"cmdline=console=hvc0 x\"");
        assert_eq!(m.name, "web");
        assert_eq!(m.cmdline, "console=hvc0 x");
        assert!(m.warnings.is_empty(), "{:?}", messages(&m));
    }

    #[test]
    fn domu_settings_parse() {
        let m = parse_module_cmdline("domu name=web mem=64M cmdline=\"console=hvc0 x\"");
        assert_eq!(m.role, ModuleRole::DomU);
        assert_eq!(m.name, "web");
        assert_eq!(m.mem, Some(64 << 20));
        assert_eq!(m.cmdline, "console=hvc0 x");
        assert!(m.warnings.is_empty(), "{:?}", messages(&m));
        let m = parse_module_cmdline("domu name=w weight=512");
        assert_eq!(m.weight, Some(512));
        for bad in ["0", "65536", "x", ""] {
            let line = std::format!("domu name=w weight={bad}");
            let m = parse_module_cmdline(&line);
            assert_eq!(m.weight, None);
            assert!(matches!(
                m.warnings.as_slice(),
                [ModuleWarning::BadWeight(_)]
            ));
        }
        let m = parse_module_cmdline("domu name=a name=b mem=1G mem=0x10M cmdline=x");
        assert_eq!(
            (m.name.as_str(), m.mem, m.cmdline),
            ("b", Some(16 << 20), "x")
        );
    }

    #[test]
    fn domu_problems() {
        let m = parse_module_cmdline("domu mem=64 size=3 loose cmdline=\"console=hvc0 x");
        assert_eq!(m.mem, None);
        assert_eq!(m.cmdline, "console=hvc0 x");
        assert_eq!(
            messages(&m),
            [
                "module: mem=64 has no unit; write e.g. mem=64M (units B, K, M, G, T); ignored",
                "module: unknown setting 'size=3' ignored (domu takes name=, mem=, weight=, cmdline=)",
                "module: unknown setting 'loose' ignored (domu takes name=, mem=, weight=, cmdline=)",
                "module: '\"' never closed in 'cmdline=\"console=hvc0 x'; \
                 read to the end of the string",
                "module: domu needs a name (domu name=NAME ...)",
            ]
        );
        let m = parse_module_cmdline("domu name=we/b mem=0M mem=1Q mem=99999999T");
        assert_eq!(m.name, "");
        assert!(matches!(
            m.warnings.as_slice(),
            [
                ModuleWarning::BadName(_),
                ModuleWarning::BadSize(_),
                ModuleWarning::BadSize(_),
                ModuleWarning::SizeOverflow(_),
            ]
        ));
        let long = std::format!("domu name={}", "n".repeat(33));
        assert!(matches!(
            parse_module_cmdline(&long).warnings.as_slice(),
            [ModuleWarning::BadName(_)]
        ));
        let ok = std::format!("domu name={}", "n".repeat(32));
        assert_eq!(parse_module_cmdline(&ok).name.len(), 32);
    }

    #[test]
    fn other_modules_and_empty() {
        let m = parse_module_cmdline("initrd.img root=/dev/xvda");
        assert_eq!(
            (m.role, m.name.as_str(), m.cmdline),
            (ModuleRole::Other, "initrd.img", "root=/dev/xvda")
        );
        let m = parse_module_cmdline(" \t ");
        assert_eq!(m.role, ModuleRole::Other);
        assert_eq!(
            messages(&m),
            ["module: empty command line, so no role (dom0, domu or a name)"]
        );
        let m = parse_module_cmdline("/boot/ü.elf");
        assert_eq!(m.name, "");
        assert!(matches!(m.warnings.as_slice(), [ModuleWarning::BadName(_)]));
    }

    #[test]
    fn many_problems_are_bounded() {
        let s = std::format!("domu {}", "junk ".repeat(3000));
        let m = parse_module_cmdline(&s);
        assert_eq!(m.warnings.len(), MAX_WARNINGS);
        assert_eq!(m.warnings.dropped(), 3001 - 8);
    }

    proptest! {
        #[test]
        fn any_string_parses(s in ".{0,300}") {
            let m = parse_module_cmdline(&s);
            prop_assert!(s.contains(m.cmdline) || m.cmdline.is_empty());
        }

        #[test]
        fn domu_like_strings_parse(
            words in proptest::collection::vec("(name|mem|cmdline|x)=[a-zA-Z0-9\" =]{0,10}", 0..10)
        ) {
            let s = std::format!("domu {}", words.join(" "));
            let m = parse_module_cmdline(&s);
            prop_assert_eq!(m.role, ModuleRole::DomU);
            prop_assert!(m.name.len() <= MAX_NAME);
        }
    }
}
