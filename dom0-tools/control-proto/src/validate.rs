//! Checks on a create request (and on a volume's name and size) that both
//! sides run: `dom0ctl` to point at the config line or argument at fault, dom0
//! because it trusts nothing from the link.

use alloc::string::String;
use core::fmt;

use crate::cpus::{Affinity, CpuMap};
use crate::error::{ErrorCode, ErrorReply};
use crate::message::{CreateRequest, Kernel};

/// Longest domain or image name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Smallest domain, in MiB: the least the domain builder (`pvboot`) can honour
/// for some image. A PV domain needs its image, P2M, start info, xenstore and
/// console pages, page tables, a boot stack and 512 KiB of slack after it; an
/// image linked at `VIRT_BASE` fits that in 1 MiB. Whether a given image fits
/// its domain is the builder's check, which names both sizes (the runtime's
/// guests, linked at 1 MiB, need 2 MiB).
pub const MIN_MEMORY_MIB: u32 = 1;
/// Largest domain, in MiB (64 GiB): a sanity bound, far above any machine we run on.
pub const MAX_MEMORY_MIB: u32 = 64 * 1024;
/// Most vCPUs per domain: one per `vcpu_info` slot of shared_info, as the
/// hypervisor allows (Xen's `XEN_LEGACY_MAX_VCPUS`).
pub const MAX_VCPUS: u32 = 32;
/// Longest kernel command line, in bytes: Xen's `MAX_GUEST_CMDLINE` (1024) less the NUL.
pub const MAX_CMDLINE_LEN: usize = 1023;
/// The largest kernel upload dom0 accepts, in bytes (a PV kernel is a few MiB at
/// most). dom0ctl refuses a larger file before reading it.
pub const MAX_UPLOAD_BYTES: u64 = 256 << 20;
/// The largest kernel a bzImage may unpack to: dom0 refuses a bzImage whose
/// trailer announces more (and dom0ctl before uploading it).
pub const MAX_UNPACKED_KERNEL_BYTES: u64 = 256 << 20;

/// The largest volume, in bytes (1 PiB): a sanity bound far above any disk.
pub const MAX_VOLUME_BYTES: u64 = 1 << 50;

/// A create request that must not be built (or a volume that must not be made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValidationError {
    /// The name is empty.
    NameEmpty,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong(usize),
    /// The name holds a character outside `A-Z a-z 0-9 _ . -`.
    NameBadChar(char),
    /// The name starts with `_`, `.` or `-`.
    NameBadStart(char),
    /// The name is all digits, so it would read as a domain id.
    NameAllDigits,
    /// The image name is empty, too long or holds a control character.
    BadImageName,
    /// Less memory than [`MIN_MEMORY_MIB`].
    MemoryTooSmall(u32),
    /// More memory than [`MAX_MEMORY_MIB`].
    MemoryTooLarge(u32),
    /// Zero vCPUs.
    NoVcpus,
    /// More vCPUs than [`MAX_VCPUS`].
    TooManyVcpus(u32),
    /// A command line longer than [`MAX_CMDLINE_LEN`] bytes.
    CmdlineTooLong(usize),
    /// A command line with a NUL byte.
    CmdlineNul,
    /// More disks than [`MAX_DISKS`](crate::disk::MAX_DISKS).
    TooManyDisks(usize),
    /// Two disks with the same virtual device.
    DiskVdevTwice(String),
    /// More vifs than [`MAX_VIFS`](crate::vif::MAX_VIFS).
    TooManyVifs(usize),
    /// Two vifs with the same MAC address.
    VifMacTwice(String),
    /// More affinity maps than vCPUs (dom0ctl drops the extra ones, as xl does).
    TooManyCpuMaps {
        /// Hard (`cpus`) or soft (`cpus_soft`).
        which: Affinity,
        /// Maps sent.
        maps: usize,
        /// The domain's vCPUs.
        vcpus: u32,
    },
    /// A vCPU's affinity map with no CPU in it.
    CpuMapEmpty {
        /// Hard (`cpus`) or soft (`cpus_soft`).
        which: Affinity,
        /// The vCPU.
        vcpu: usize,
    },
    /// A volume size that does not read as one (`64M`, `1G`, `1048576`).
    SizeSyntax,
    /// A volume of no bytes.
    SizeZero,
    /// A volume size that is not a whole number of 512-byte sectors.
    SizeNotSectors(u64),
    /// A volume larger than [`MAX_VOLUME_BYTES`].
    SizeTooLarge,
}

impl ValidationError {
    /// The configuration key at fault (`name`, `image`, `memory`, `vcpus`, `cmdline`).
    pub const fn key(&self) -> &'static str {
        match self {
            Self::NameEmpty
            | Self::NameTooLong(_)
            | Self::NameBadChar(_)
            | Self::NameBadStart(_)
            | Self::NameAllDigits => "name",
            Self::BadImageName => "image",
            Self::MemoryTooSmall(_) | Self::MemoryTooLarge(_) => "memory",
            Self::NoVcpus | Self::TooManyVcpus(_) => "vcpus",
            Self::CmdlineTooLong(_) | Self::CmdlineNul => "cmdline",
            Self::TooManyDisks(_) | Self::DiskVdevTwice(_) => "disk",
            Self::TooManyVifs(_) | Self::VifMacTwice(_) => "vif",
            Self::TooManyCpuMaps { which, .. } | Self::CpuMapEmpty { which, .. } => which.key(),
            Self::SizeSyntax | Self::SizeZero | Self::SizeNotSectors(_) | Self::SizeTooLarge => {
                "size"
            }
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameEmpty => f.write_str("the name is empty; give the domain a name"),
            Self::NameTooLong(n) => {
                write!(
                    f,
                    "the name is {n} bytes long; at most {MAX_NAME_LEN} are allowed"
                )
            }
            Self::NameBadChar(c) => write!(
                f,
                "the name holds {c:?}; use only letters, digits, '_', '.' and '-'"
            ),
            Self::NameBadStart(c) => {
                write!(
                    f,
                    "the name starts with {c:?}; start it with a letter or digit"
                )
            }
            Self::NameAllDigits => {
                f.write_str("the name is all digits, which reads as a domain id; add a letter")
            }
            Self::BadImageName => write!(
                f,
                "the image name must be 1 to {MAX_NAME_LEN} bytes without control characters"
            ),
            Self::MemoryTooSmall(m) => {
                write!(
                    f,
                    "{m} MiB is too little; a domain needs at least {MIN_MEMORY_MIB} MiB"
                )
            }
            Self::MemoryTooLarge(m) => {
                write!(
                    f,
                    "{m} MiB is too much; at most {MAX_MEMORY_MIB} MiB is allowed"
                )
            }
            Self::NoVcpus => f.write_str("a domain needs at least 1 vCPU"),
            Self::TooManyVcpus(n) => write!(
                f,
                "{n} vCPUs asked, but the hypervisor runs at most {MAX_VCPUS} per domain"
            ),
            Self::CmdlineTooLong(n) => write!(
                f,
                "the command line is {n} bytes; Xen guests take at most {MAX_CMDLINE_LEN}"
            ),
            Self::CmdlineNul => f.write_str("the command line holds a NUL byte"),
            Self::TooManyDisks(n) => write!(
                f,
                "{n} disks; a domain has at most {}",
                crate::disk::MAX_DISKS
            ),
            Self::DiskVdevTwice(v) => write!(f, "two disks are both {v}"),
            Self::TooManyVifs(n) => {
                write!(f, "{n} vifs; a domain has at most {}", crate::vif::MAX_VIFS)
            }
            Self::VifMacTwice(m) => write!(f, "two vifs both have mac {m}"),
            Self::TooManyCpuMaps { maps, vcpus, .. } => write!(
                f,
                "{maps} affinity maps for {vcpus} vCPUs; give at most one per vCPU"
            ),
            Self::CpuMapEmpty { vcpu, .. } => write!(f, "vCPU {vcpu}'s map holds no CPU"),
            Self::SizeSyntax => f.write_str(
                "not a size; give bytes, or a number with K, M, G or T (binary: 64M, 1G)",
            ),
            Self::SizeZero => f.write_str("a volume needs at least one 512-byte sector"),
            Self::SizeNotSectors(b) => {
                write!(f, "{b} bytes is not a whole number of 512-byte sectors")
            }
            Self::SizeTooLarge => write!(
                f,
                "too large; a volume holds at most {} TiB",
                MAX_VOLUME_BYTES >> 40
            ),
        }
    }
}

impl From<ValidationError> for ErrorReply {
    /// What dom0 answers to a create request that fails validation.
    fn from(e: ValidationError) -> Self {
        ErrorReply::new(ErrorCode::BadConfig, alloc::format!("{}: {e}", e.key()))
    }
}

/// Checks a domain name: 1 to [`MAX_NAME_LEN`] bytes of `A-Z a-z 0-9 _ . -`,
/// starting with a letter or digit, and not all digits.
pub fn validate_name(name: &str) -> Result<(), ValidationError> {
    let first = name.chars().next().ok_or(ValidationError::NameEmpty)?;
    if name.len() > MAX_NAME_LEN {
        return Err(ValidationError::NameTooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(ValidationError::NameBadChar(c));
    }
    if !first.is_ascii_alphanumeric() {
        return Err(ValidationError::NameBadStart(first));
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::NameAllDigits);
    }
    Ok(())
}

/// Checks the name of an image dom0 holds: 1 to [`MAX_NAME_LEN`] bytes, no
/// control characters.
pub fn validate_image_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN || name.chars().any(char::is_control) {
        return Err(ValidationError::BadImageName);
    }
    Ok(())
}

/// Checks a memory size: [`MIN_MEMORY_MIB`] to [`MAX_MEMORY_MIB`] MiB.
pub fn validate_memory_mib(mib: u32) -> Result<(), ValidationError> {
    if mib < MIN_MEMORY_MIB {
        Err(ValidationError::MemoryTooSmall(mib))
    } else if mib > MAX_MEMORY_MIB {
        Err(ValidationError::MemoryTooLarge(mib))
    } else {
        Ok(())
    }
}

/// Checks a vCPU count: 1 to [`MAX_VCPUS`].
pub fn validate_vcpus(n: u32) -> Result<(), ValidationError> {
    match n {
        0 => Err(ValidationError::NoVcpus),
        n if n > MAX_VCPUS => Err(ValidationError::TooManyVcpus(n)),
        _ => Ok(()),
    }
}

/// Checks a kernel command line: at most [`MAX_CMDLINE_LEN`] bytes, no NUL.
pub fn validate_cmdline(cmdline: &str) -> Result<(), ValidationError> {
    if cmdline.len() > MAX_CMDLINE_LEN {
        Err(ValidationError::CmdlineTooLong(cmdline.len()))
    } else if cmdline.contains('\0') {
        Err(ValidationError::CmdlineNul)
    } else {
        Ok(())
    }
}

/// Reads a size as QEMU and `scripts/run --disk` write it: bytes, or a number
/// with a binary suffix `K`, `M`, `G` or `T` (either case): `64M`, `1G`.
/// Checked with [`validate_volume_size`].
pub fn parse_size(text: &str) -> Result<u64, ValidationError> {
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        Some((i, 't' | 'T')) => (&text[..i], 40),
        _ => (text, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValidationError::SizeSyntax);
    }
    let n: u64 = digits.parse().map_err(|_| ValidationError::SizeTooLarge)?;
    let bytes = n
        .checked_mul(1 << shift)
        .ok_or(ValidationError::SizeTooLarge)?;
    validate_volume_size(bytes)?;
    Ok(bytes)
}

/// Checks a volume's size: whole 512-byte sectors, at least one, at most
/// [`MAX_VOLUME_BYTES`].
pub fn validate_volume_size(bytes: u64) -> Result<(), ValidationError> {
    if bytes == 0 {
        Err(ValidationError::SizeZero)
    } else if bytes > MAX_VOLUME_BYTES {
        Err(ValidationError::SizeTooLarge)
    } else if bytes % 512 != 0 {
        Err(ValidationError::SizeNotSectors(bytes))
    } else {
        Ok(())
    }
}

impl CreateRequest {
    /// Runs every check, in key order: name, image, memory, vcpus, cmdline, disk,
    /// vif, cpus, cpus_soft.
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_name(&self.name)?;
        if let Kernel::Named(image) = &self.kernel {
            validate_image_name(image)?;
        }
        if let Some(Kernel::Named(image)) = &self.ramdisk {
            validate_image_name(image)?;
        }
        validate_memory_mib(self.memory_mib)?;
        validate_vcpus(self.vcpus)?;
        validate_cmdline(&self.cmdline)?;
        if self.disks.len() > crate::disk::MAX_DISKS {
            return Err(ValidationError::TooManyDisks(self.disks.len()));
        }
        for (i, d) in self.disks.iter().enumerate() {
            if self.disks[..i].iter().any(|o| o.devid == d.devid) {
                return Err(ValidationError::DiskVdevTwice(d.vdev.clone()));
            }
        }
        if self.vifs.len() > crate::vif::MAX_VIFS {
            return Err(ValidationError::TooManyVifs(self.vifs.len()));
        }
        for (i, v) in self.vifs.iter().enumerate() {
            if let Some(m) = &v.mac
                && self.vifs[..i].iter().any(|o| o.mac.as_ref() == Some(m))
            {
                return Err(ValidationError::VifMacTwice(
                    alloc::string::ToString::to_string(&crate::vif::Mac(m)),
                ));
            }
        }
        validate_cpus(Affinity::Hard, &self.cpus, self.vcpus)?;
        validate_cpus(Affinity::Soft, &self.cpus_soft, self.vcpus)
    }
}

/// Checks a create request's hard (`cpus`) or soft (`cpus_soft`) affinity
/// maps: at most one per vCPU, each with a CPU in it. (Whether the machine has
/// those CPUs is the hypervisor's to say.)
pub fn validate_cpus(which: Affinity, maps: &[CpuMap], vcpus: u32) -> Result<(), ValidationError> {
    if u32::try_from(maps.len()).map_or(true, |n| n > vcpus) {
        return Err(ValidationError::TooManyCpuMaps {
            which,
            maps: maps.len(),
            vcpus,
        });
    }
    if let Some(vcpu) = maps.iter().position(CpuMap::is_empty) {
        return Err(ValidationError::CpuMapEmpty { which, vcpu });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ExitAction;
    use alloc::string::String;
    use alloc::vec::Vec;

    #[test]
    fn names() {
        assert_eq!(validate_name("hello"), Ok(()));
        assert_eq!(validate_name("Domain-0"), Ok(()));
        assert_eq!(validate_name("a.b_c-9"), Ok(()));
        assert_eq!(validate_name("7up"), Ok(()));
        assert_eq!(validate_name(""), Err(ValidationError::NameEmpty));
        assert_eq!(validate_name("42"), Err(ValidationError::NameAllDigits));
        assert_eq!(validate_name("a b"), Err(ValidationError::NameBadChar(' ')));
        assert_eq!(validate_name("-x"), Err(ValidationError::NameBadStart('-')));
        assert_eq!(
            validate_name("héllo"),
            Err(ValidationError::NameBadChar('é'))
        );
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(validate_name(&long), Err(ValidationError::NameTooLong(65)));
        assert_eq!(validate_name(&long[1..]), Ok(()));
    }

    #[test]
    fn numbers_and_cmdline() {
        assert_eq!(
            validate_memory_mib(0),
            Err(ValidationError::MemoryTooSmall(0))
        );
        assert!(validate_memory_mib(1).is_ok());
        assert!(validate_memory_mib(2).is_ok());
        assert!(validate_memory_mib(MAX_MEMORY_MIB).is_ok());
        assert!(validate_memory_mib(MAX_MEMORY_MIB + 1).is_err());
        assert_eq!(validate_vcpus(0), Err(ValidationError::NoVcpus));
        assert_eq!(validate_vcpus(1), Ok(()));
        assert_eq!(validate_vcpus(32), Ok(()));
        assert_eq!(validate_vcpus(33), Err(ValidationError::TooManyVcpus(33)));
        assert!(validate_cmdline(&"x".repeat(MAX_CMDLINE_LEN)).is_ok());
        assert!(validate_cmdline(&"x".repeat(MAX_CMDLINE_LEN + 1)).is_err());
        assert_eq!(validate_cmdline("a\0b"), Err(ValidationError::CmdlineNul));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("3k"), Ok(3072));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size(""), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("M"), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("-1M"), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("1.5G"), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("64MB"), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("1P"), Err(ValidationError::SizeSyntax));
        assert_eq!(parse_size("0"), Err(ValidationError::SizeZero));
        assert_eq!(parse_size("0G"), Err(ValidationError::SizeZero));
        assert_eq!(
            parse_size("1000"),
            Err(ValidationError::SizeNotSectors(1000))
        );
        assert_eq!(parse_size("1025T"), Err(ValidationError::SizeTooLarge));
        assert_eq!(
            parse_size("99999999999999999999"),
            Err(ValidationError::SizeTooLarge)
        );
        assert_eq!(
            parse_size("18446744073709551615T"),
            Err(ValidationError::SizeTooLarge)
        );
        let e = ErrorReply::from(ValidationError::SizeZero);
        assert_eq!(e.code, ErrorCode::BadConfig);
        assert!(e.message.starts_with("size: "), "{}", e.message);
    }

    /// A valid request for one `hello` vCPU with 16 MiB.
    fn hello_request() -> CreateRequest {
        CreateRequest {
            name: String::from("hello"),
            kernel: Kernel::Named(String::from("hello")),
            memory_mib: 16,
            vcpus: 1,
            cmdline: String::new(),
            on_poweroff: ExitAction::Destroy,
            on_crash: ExitAction::Destroy,
            on_reboot: ExitAction::Restart,
            uuid: None,
            disks: Vec::new(),
            vifs: Vec::new(),
            ramdisk: None,
            cpus: Vec::new(),
            cpus_soft: Vec::new(),
        }
    }

    #[test]
    fn create_request_and_reply() {
        let mut req = hello_request();
        assert_eq!(req.validate(), Ok(()));
        req.memory_mib = 1;
        assert_eq!(req.validate(), Ok(()));
        req.memory_mib = 0;
        let e = req.validate().unwrap_err();
        assert_eq!(e.key(), "memory");
        let reply = ErrorReply::from(e);
        assert_eq!(reply.code, ErrorCode::BadConfig);
        assert!(reply.message.starts_with("memory: 0 MiB is too little"));
    }

    #[test]
    fn affinity_maps() {
        let one = CpuMap::parse("1").unwrap();
        let hard = |maps: &[CpuMap], vcpus| validate_cpus(Affinity::Hard, maps, vcpus);
        assert_eq!(hard(&[], 1), Ok(()));
        assert_eq!(hard(&[one, one], 2), Ok(()));
        assert_eq!(hard(&[one], 4), Ok(()), "the rest run anywhere");
        assert_eq!(
            hard(&[one, one], 1),
            Err(ValidationError::TooManyCpuMaps {
                which: Affinity::Hard,
                maps: 2,
                vcpus: 1
            })
        );
        let e = hard(&[one, CpuMap::NONE], 2).unwrap_err();
        assert_eq!(
            e,
            ValidationError::CpuMapEmpty {
                which: Affinity::Hard,
                vcpu: 1
            }
        );
        let reply = ErrorReply::from(e);
        assert_eq!(reply.code, ErrorCode::BadConfig);
        assert_eq!(reply.message, "cpus: vCPU 1's map holds no CPU");
        let e = ErrorReply::from(ValidationError::TooManyCpuMaps {
            which: Affinity::Hard,
            maps: 3,
            vcpus: 2,
        });
        assert_eq!(
            e.message,
            "cpus: 3 affinity maps for 2 vCPUs; give at most one per vCPU"
        );
    }

    #[test]
    fn soft_affinity_maps_follow_the_same_rules_under_their_own_key() {
        let one = CpuMap::parse("1").unwrap();
        let mut req = CreateRequest {
            name: String::from("soft"),
            vcpus: 2,
            cpus_soft: alloc::vec![one],
            ..hello_request()
        };
        assert_eq!(req.validate(), Ok(()), "vCPU 1 has no preference");
        req.cpus_soft = alloc::vec![one, one, one];
        let e = req.validate().unwrap_err();
        assert_eq!(e.key(), "cpus_soft");
        assert_eq!(
            ErrorReply::from(e).message,
            "cpus_soft: 3 affinity maps for 2 vCPUs; give at most one per vCPU"
        );
        req.cpus_soft = alloc::vec![one, CpuMap::NONE];
        assert_eq!(
            ErrorReply::from(req.validate().unwrap_err()).message,
            "cpus_soft: vCPU 1's map holds no CPU"
        );
        // The hard maps are checked first, each under its own key.
        req.cpus = alloc::vec![CpuMap::NONE];
        assert_eq!(req.validate().unwrap_err().key(), "cpus");
    }
}
