//! A first look at a kernel image on the host, so an obvious mistake is caught
//! before the upload. Dom0 checks the Xen ELF notes again.
//!
//! A Linux bzImage is accepted when its setup header is sound and its payload is
//! compressed in a way dom0 unpacks (XZ or gzip, `pvboot::bzimage`); dom0 unpacks
//! it and checks the ELF inside.

const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// Checks that `image` is a little-endian ELF64 executable for x86-64. The error
/// says what the file is instead, for a sentence that starts "the kernel ...".
pub fn check_kernel(image: &[u8]) -> Result<(), String> {
    if pvboot::bzimage::is_bzimage(image) {
        return pvboot::BzImage::parse(image, control_proto::MAX_UNPACKED_KERNEL_BYTES)
            .map(|_| ())
            .map_err(|e| format!("is a bzImage dom0 cannot use: {e}"));
    }
    if image.len() < 4 || image[..4] != *b"\x7fELF" {
        let what = if image.is_empty() {
            "is empty".to_string()
        } else if image.starts_with(b"\x1f\x8b") {
            "is gzip-compressed, not an ELF file or a bzImage; decompress it first".to_string()
        } else {
            "is not an ELF file (it does not start with \\x7fELF) or a bzImage".to_string()
        };
        return Err(what);
    }
    if image.len() < 64 {
        return Err(format!(
            "is {} bytes long, too short for an ELF64 header",
            image.len()
        ));
    }
    if image[4] != ELFCLASS64 {
        return Err(
            "is a 32-bit ELF; xen-like-hv runs 64-bit (x86_64) PV kernels only".to_string(),
        );
    }
    if image[5] != ELFDATA2LSB {
        return Err("is a big-endian ELF; x86-64 kernels are little-endian".to_string());
    }
    let half = |at: usize| u16::from_le_bytes([image[at], image[at + 1]]);
    let machine = half(18);
    if machine != EM_X86_64 {
        return Err(format!(
            "is an ELF for machine {machine}, not x86-64 ({EM_X86_64})"
        ));
    }
    let kind = half(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(format!(
            "is an ELF of type {kind} (an object file or core dump?), not an executable"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = data;
        h[16..18].copy_from_slice(&kind.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn accepts_bzimages_dom0_unpacks() {
        use pvboot::testimg::{bzimage, small_bzimage, small_gz};
        assert_eq!(check_kernel(&small_bzimage()), Ok(()));
        assert_eq!(check_kernel(&bzimage(&small_gz(), 40960)), Ok(()));
        let e = check_kernel(&bzimage(b"BZh91AY&SY\0\0", 4096)).unwrap_err();
        assert!(e.contains("bzImage") && e.contains("bzip2"), "{e}");
        let e = check_kernel(&bzimage(&small_gz(), u32::MAX)).unwrap_err();
        assert!(e.contains("limit"), "{e}");
        let mut cut = small_bzimage();
        cut.truncate(0x230);
        assert!(check_kernel(&cut).unwrap_err().contains("truncated"));
    }

    #[test]
    fn accepts_x86_64_executables() {
        assert_eq!(check_kernel(&header(2, 1, ET_EXEC, EM_X86_64)), Ok(()));
        assert_eq!(check_kernel(&header(2, 1, ET_DYN, EM_X86_64)), Ok(()));
    }

    #[test]
    fn says_what_is_wrong() {
        let e = |b: &[u8]| check_kernel(b).unwrap_err();
        assert_eq!(e(b""), "is empty");
        assert!(e(b"#!/bin/sh\n").contains("not an ELF file"));
        assert!(e(b"\x1f\x8b\x08\x00").contains("gzip"));
        assert!(e(b"\x7fELF\x02").contains("too short"));
        assert!(e(&header(1, 1, ET_EXEC, 3)).contains("32-bit"));
        assert!(e(&header(2, 2, ET_EXEC, EM_X86_64)).contains("big-endian"));
        assert!(e(&header(2, 1, ET_EXEC, 183)).contains("machine 183"));
        assert!(e(&header(2, 1, 1, EM_X86_64)).contains("type 1"));
    }
}
