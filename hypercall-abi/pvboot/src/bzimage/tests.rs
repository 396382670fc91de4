//! Tests of the bzImage parser and decompressors against small synthetic bzImages.

extern crate std;

use super::*;
use crate::testimg::{
    GZIP_ARGS, Spec, XZ_ARGS, bzimage, compress_with, shown, small_bzimage, small_gz, small_xz,
};
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

const LIMIT: u64 = 256 << 20;

fn unpack(img: &[u8]) -> Result<Vec<u8>, BzError> {
    let bz = BzImage::parse(img, LIMIT)?;
    let mut out = vec![0u8; bz.decompressed_len()];
    let mut scratch = vec![0u8; bz.scratch_len()];
    bz.decompress(&mut out, &mut scratch).map(<[u8]>::to_vec)
}

fn elf_len() -> u32 {
    u32::try_from(Spec::small().build().len()).unwrap()
}

#[test]
fn what_the_tools_make_unpacks() {
    let elf = Spec::small().build();
    for (packed, c) in [
        (small_xz(), Compression::Xz),
        (small_gz(), Compression::Gzip),
    ] {
        let img = bzimage(&packed, elf_len());
        let bz = BzImage::parse(&img, LIMIT).unwrap();
        assert_eq!(bz.compression(), c);
        assert_eq!(unpack(&img).unwrap(), elf, "{c}");
    }
}

#[test]
fn xz_bzimage_unpacks_to_the_elf() {
    let elf = Spec::small().build();
    let img = small_bzimage();
    assert!(is_bzimage(&img));
    assert!(!is_bzimage(&elf));
    let bz = BzImage::parse(&img, LIMIT).unwrap();
    assert_eq!(bz.compression(), Compression::Xz);
    assert_eq!(bz.version(), 0x020F);
    assert_eq!(bz.setup_sects(), 1);
    assert_eq!(bz.payload_start(), 1024 + 0x40);
    assert_eq!(bz.decompressed_len(), elf.len());
    assert_eq!(bz.scratch_len(), 1 << 20);
    let mut out = vec![0u8; elf.len() + 100];
    let mut scratch = vec![0u8; bz.scratch_len()];
    let got = bz.decompress(&mut out, &mut scratch).unwrap();
    assert_eq!(got, &elf[..]);
    crate::elf::Elf::parse(got).unwrap();
    // The heap-boxed decoder gives the same, and checks the dictionary's size.
    let mut out2 = vec![0u8; elf.len()];
    let got = bz
        .decompress_boxed(&mut out2, vec![0u8; bz.scratch_len()])
        .unwrap();
    assert_eq!(got, &elf[..]);
    assert_eq!(
        bz.decompress_boxed(&mut out2, vec![0u8; 4096]),
        Err(BzError::BufferTooSmall)
    );
    let gz = bzimage(&small_gz(), elf_len());
    let bz = BzImage::parse(&gz, LIMIT).unwrap();
    assert_eq!(
        bz.decompress_boxed(&mut out2, Vec::new()).unwrap(),
        &elf[..]
    );
}

#[test]
fn gzip_bzimage_unpacks_to_the_elf() {
    let elf = Spec::small().build();
    let img = bzimage(&small_gz(), elf_len());
    let bz = BzImage::parse(&img, LIMIT).unwrap();
    assert_eq!(bz.compression(), Compression::Gzip);
    assert_eq!(bz.scratch_len(), 0);
    assert_eq!(unpack(&img).unwrap(), elf);
    // gzip with a file name in its header (no -n).
    if let Some(named) = compress_with(
        "sh",
        &[
            "-c",
            "cat > /tmp/.pvboot-gz-$$ && gzip -c /tmp/.pvboot-gz-$$; rm -f /tmp/.pvboot-gz-$$",
        ],
        &elf,
    ) {
        assert_eq!(unpack(&bzimage(&named, elf_len())).unwrap(), elf);
    }
}

#[test]
fn setup_sects_zero_means_four() {
    let elf = Spec::small().build();
    let mut img = small_bzimage();
    // Move the payload: with setup_sects 0 (4) the protected-mode part is at 2560.
    img[0x1F1] = 0;
    let payload_at = 1024 + 0x40;
    let stream = img[payload_at..].to_vec();
    img.truncate(payload_at);
    img.resize(2560, 0);
    img[0x248..0x24C].copy_from_slice(&0u32.to_le_bytes());
    img.extend_from_slice(&stream);
    let bz = BzImage::parse(&img, LIMIT).unwrap();
    assert_eq!(bz.setup_sects(), 4);
    assert_eq!(bz.payload_start(), 2560);
    assert_eq!(unpack(&img).unwrap(), elf);
}

#[test]
fn header_errors() {
    let img = small_bzimage();
    assert_eq!(BzImage::parse(&[], LIMIT), Err(BzError::NotBzImage));
    assert_eq!(
        BzImage::parse(&Spec::small().build(), LIMIT),
        Err(BzError::NotBzImage)
    );
    assert_eq!(
        BzImage::parse(&img[..0x240], LIMIT),
        Err(BzError::TruncatedHeader { len: 0x240 })
    );
    let mut old = img.clone();
    old[0x206..0x208].copy_from_slice(&0x0207u16.to_le_bytes());
    assert_eq!(
        BzImage::parse(&old, LIMIT),
        Err(BzError::OldProtocol { version: 0x0207 })
    );
    assert!(shown(BzImage::parse(&old, LIMIT).unwrap_err()).contains("2.07"));
    let mut no_flag = img.clone();
    no_flag[0x1FE] = 0;
    assert_eq!(BzImage::parse(&no_flag, LIMIT), Err(BzError::NotBzImage));
    let mut far = img.clone();
    far[0x248..0x24C].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        BzImage::parse(&far, LIMIT),
        Err(BzError::PayloadOutside { .. })
    ));
    let mut long = img.clone();
    long[0x24C..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = BzImage::parse(&long, LIMIT).unwrap_err();
    assert!(matches!(e, BzError::PayloadOutside { .. }), "{e:?}");
    assert!(shown(e).contains("outside"));
    // The payload cut off in the file.
    let cut = &img[..img.len() - 40];
    assert!(matches!(
        BzImage::parse(cut, LIMIT),
        Err(BzError::PayloadOutside { .. })
    ));
    let mut empty = img.clone();
    empty[0x24C..0x250].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        BzImage::parse(&empty, LIMIT),
        Err(BzError::UnknownCompression { .. })
    ));
}

#[test]
fn compressions_are_named() {
    for (magic, c) in [
        (&b"BZh91AY&SY"[..], Compression::Bzip2),
        (&[0x5D, 0, 0, 0x80, 0][..], Compression::Lzma),
        (&[0x89, b'L', b'Z', b'O', 0, 0][..], Compression::Lzo),
        (&[0x02, 0x21, 0x4C, 0x18, 0, 0][..], Compression::Lz4),
        (&[0x28, 0xB5, 0x2F, 0xFD, 0, 0][..], Compression::Zstd),
    ] {
        let mut stream = magic.to_vec();
        stream.resize(64, 0);
        let img = bzimage(&stream, 4096);
        let e = BzImage::parse(&img, LIMIT).unwrap_err();
        assert_eq!(e, BzError::Unsupported(c));
        let text = shown(&e);
        assert!(
            text.contains(c.name()) && text.contains("XZ and gzip"),
            "{text}"
        );
    }
    let img = bzimage(&[0x42; 64], 4096);
    let e = BzImage::parse(&img, LIMIT).unwrap_err();
    assert_eq!(e, BzError::UnknownCompression { magic: [0x42; 6] });
    assert!(shown(e).contains("42 42 42"));
}

#[test]
fn sizes_are_checked() {
    let xz = small_xz();
    // Absurd, over the caller's limit, too small for an ELF.
    let e = BzImage::parse(&bzimage(&xz, u32::MAX), LIMIT).unwrap_err();
    assert!(
        matches!(e, BzError::TooLarge { what: "kernel", .. }),
        "{e:?}"
    );
    assert!(shown(e).contains("limit"));
    let e = BzImage::parse(&bzimage(&xz, elf_len()), 1000).unwrap_err();
    assert!(matches!(e, BzError::TooLarge { .. }), "{e:?}");
    assert_eq!(
        BzImage::parse(&bzimage(&xz, 10), LIMIT),
        Err(BzError::TooSmall { len: 10 })
    );
    // The dictionary is bounded by the limit too.
    let e = BzImage::parse(&bzimage(&xz, elf_len()), u64::from(elf_len())).unwrap_err();
    assert!(
        matches!(
            e,
            BzError::TooLarge {
                what: "XZ dictionary",
                ..
            }
        ),
        "{e:?}"
    );
    // Announced sizes that are wrong either way.
    for (len, c) in [(elf_len() - 1, "more"), (elf_len() + 1, "fewer")] {
        for stream in [&xz, &small_gz()] {
            let e = unpack(&bzimage(stream, len)).unwrap_err();
            assert!(matches!(e, BzError::SizeMismatch { .. }), "{e:?}");
            assert!(shown(e).contains(c));
        }
    }
    // Buffers smaller than asked.
    let img = small_bzimage();
    let bz = BzImage::parse(&img, LIMIT).unwrap();
    let mut out = vec![0u8; bz.decompressed_len() - 1];
    let mut scratch = vec![0u8; bz.scratch_len()];
    assert_eq!(
        bz.decompress(&mut out, &mut scratch),
        Err(BzError::BufferTooSmall)
    );
    let mut out = vec![0u8; bz.decompressed_len()];
    let mut scratch = vec![0u8; bz.scratch_len() - 1];
    assert_eq!(
        bz.decompress(&mut out, &mut scratch),
        Err(BzError::BufferTooSmall)
    );
}

#[test]
fn corrupt_streams_are_refused() {
    let xz = small_xz();
    // A flipped byte in the LZMA2 data (after the headers) fails the decoder or the
    // CRC32; a cut stream is truncated.
    let mut bad = xz.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    let e = unpack(&bzimage(&bad, elf_len())).unwrap_err();
    assert!(
        matches!(
            e,
            BzError::Corrupt {
                compression: Compression::Xz,
                ..
            } | BzError::SizeMismatch { .. }
                | BzError::NotElf(_)
        ),
        "{e:?}"
    );
    let e = unpack(&bzimage(&xz[..xz.len() - 20], elf_len())).unwrap_err();
    assert!(matches!(e, BzError::Corrupt { .. }), "{e:?}");
    assert!(shown(e).contains("corrupt"));
    let mut gz = small_gz();
    let mid = gz.len() / 2;
    gz[mid] ^= 0x55;
    let e = unpack(&bzimage(&gz, elf_len())).unwrap_err();
    assert!(
        matches!(e, BzError::Corrupt { .. } | BzError::SizeMismatch { .. }),
        "{e:?}"
    );
    // A bad CRC-32 in the gzip trailer.
    let mut gz = small_gz();
    let at = gz.len() - 8;
    gz[at] ^= 1;
    let e = unpack(&bzimage(&gz, elf_len())).unwrap_err();
    assert!(shown(&e).contains("CRC-32"), "{e:?}");
    // XZ headers asking for other filters or a huge dictionary.
    let mut hdr = xz.clone();
    hdr[13] |= 0x20;
    assert!(matches!(
        BzImage::parse(&bzimage(&hdr, elf_len()), LIMIT),
        Err(BzError::BadXzHeader(_))
    ));
    let mut nodict = xz.clone();
    nodict[12] = 0;
    assert!(matches!(
        BzImage::parse(&bzimage(&nodict, elf_len()), LIMIT),
        Err(BzError::BadXzHeader(_))
    ));
}

#[test]
fn xz_without_bcj_and_big_dictionaries() {
    let elf = Spec::small().build();
    if let Some(plain) = compress_with("xz", &["--format=xz", "--check=crc32", "-c"], &elf) {
        // 8 MiB dictionary (xz's default preset): accepted with room for it.
        let img = bzimage(&plain, elf_len());
        let bz = BzImage::parse(&img, LIMIT).unwrap();
        assert_eq!(bz.scratch_len(), 8 << 20);
        assert_eq!(unpack(&img).unwrap(), elf);
    }
    if let Some(crc64) = compress_with(
        "xz",
        &["--format=xz", "--check=crc64", "--lzma2=dict=64KiB", "-c"],
        &elf,
    ) {
        let e = unpack(&bzimage(&crc64, elf_len())).unwrap_err();
        assert!(shown(&e).contains("integrity check"), "{e:?}");
    }
    if let Some(delta) = compress_with(
        "xz",
        &[
            "--format=xz",
            "--check=crc32",
            "--delta",
            "--lzma2=dict=64KiB",
            "-c",
        ],
        &elf,
    ) {
        let e = BzImage::parse(&bzimage(&delta, elf_len()), LIMIT).unwrap_err();
        assert!(matches!(e, BzError::BadXzHeader(_)), "{e:?}");
    }
    let _ = (XZ_ARGS, GZIP_ARGS);
}

#[test]
fn a_payload_that_is_not_an_elf_is_refused() {
    let data = vec![0x33u8; 4096];
    let xz = compress_with("xz", XZ_ARGS, &data);
    let gz = compress_with("gzip", GZIP_ARGS, &data);
    for stream in [xz, gz].into_iter().flatten() {
        let e = unpack(&bzimage(&stream, 4096)).unwrap_err();
        assert!(matches!(e, BzError::NotElf(_)), "{e:?}");
        assert!(shown(e).contains("not a usable ELF"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random byte changes anywhere in an XZ or gzip bzImage never panic; what
    /// decodes is the right size and an ELF.
    #[test]
    fn mutations_never_panic(
        gzip in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let stream = if gzip { small_gz() } else { small_xz() };
        let mut img = bzimage(&stream, elf_len());
        for (at, b) in edits {
            let i = at.index(img.len());
            img[i] = b;
        }
        if let Some(c) = cut {
            img.truncate(c.index(img.len()));
        }
        if let Ok(bz) = BzImage::parse(&img, 1 << 24) {
            prop_assert!(bz.decompressed_len() <= 1 << 24);
            prop_assert!(bz.scratch_len() <= 1 << 24);
            let mut out = vec![0u8; bz.decompressed_len()];
            let mut scratch = vec![0u8; bz.scratch_len()];
            if let Ok(elf) = bz.decompress(&mut out, &mut scratch) {
                prop_assert_eq!(elf.len(), bz.decompressed_len());
                prop_assert!(crate::elf::Elf::parse(elf).is_ok());
            }
        }
    }
}
