//! Property tests of the image bundle: what the writer packs parses back
//! unchanged, and no input, however damaged, makes the parser panic or hand out
//! bytes outside the bundle.

use control_proto::crc32;
use control_proto::images::{BUNDLE_ALIGN, Bundle, BundleError, BundleWriter};
use proptest::collection::vec;
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,31}"
}

fn images() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    vec((name(), vec(any::<u8>(), 0..300)), 0..8).prop_map(|mut v| {
        let mut seen = std::collections::HashSet::new();
        v.retain(|(n, _)| seen.insert(n.clone()));
        v
    })
}

fn pack(imgs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut w = BundleWriter::new();
    for (n, d) in imgs {
        w.add(n, d).unwrap();
    }
    w.finish().unwrap()
}

/// Every image a parsed bundle hands out lies inside its bytes and matches its CRC.
fn check_inside(bytes: &[u8], b: &Bundle<'_>) {
    let range = bytes.as_ptr_range();
    for i in b.iter() {
        let r = i.data.as_ptr_range();
        assert!(range.start <= r.start && r.end <= range.end);
        assert_eq!(crc32(i.data), i.crc32);
        assert_eq!((r.start as usize - range.start as usize) % BUNDLE_ALIGN, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(imgs in images()) {
        let bytes = pack(&imgs);
        let b = Bundle::parse(&bytes).unwrap();
        prop_assert_eq!(b.len(), imgs.len());
        for ((n, d), i) in imgs.iter().zip(b.iter()) {
            prop_assert_eq!(i.name, n.as_str());
            prop_assert_eq!(i.data, d.as_slice());
            prop_assert_eq!(b.get(n).unwrap().data, d.as_slice());
        }
        check_inside(&bytes, &b);
    }

    #[test]
    fn garbage_never_panics(bytes in vec(any::<u8>(), 0..2048)) {
        if let Ok(b) = Bundle::parse(&bytes) {
            check_inside(&bytes, &b);
        }
    }

    #[test]
    fn garbage_after_a_real_header_never_panics(
        count in 0u32..20,
        tail in vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = b"XLHVIMGS".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&tail);
        if let Ok(b) = Bundle::parse(&bytes) {
            check_inside(&bytes, &b);
        }
    }

    #[test]
    fn any_damage_is_caught_or_harmless(
        imgs in images(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let mut bytes = pack(&imgs);
        prop_assume!(!bytes.is_empty());
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        match Bundle::parse(&bytes) {
            Ok(b) => {
                // Only padding, or a name changed into another valid name, can pass.
                check_inside(&bytes, &b);
                for (img, (_, d)) in b.iter().zip(&imgs) {
                    prop_assert_eq!(img.data, d.as_slice());
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn truncation_is_an_error(imgs in images(), cut in any::<prop::sample::Index>()) {
        let bytes = pack(&imgs);
        let total: usize = imgs.iter().map(|(_, d)| d.len()).sum();
        prop_assume!(total > 0);
        let last_nonempty_end = bytes.len();
        let n = cut.index(last_nonempty_end);
        let r = Bundle::parse(&bytes[..n]);
        prop_assert!(r.is_err(), "cut at {} of {} parsed", n, bytes.len());
        let e = r.unwrap_err();
        let ok_kind = matches!(
            e,
            BundleError::BadMagic | BundleError::Truncated { .. } | BundleError::OutOfBounds { .. }
        );
        prop_assert!(ok_kind, "{:?}", e);
    }
}
