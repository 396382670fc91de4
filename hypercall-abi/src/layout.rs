//! Compile-time layout checks.
//!
//! `assert_layout!(T, size, field = offset, ...)` fails the build if `T`'s
//! size or any listed field offset differs from the value given, which is the
//! value from Xen 4.17's headers (and the ABI digest). Nested fields use dots:
//! `console.mfn = 72`.

/// Assert a type's size and field offsets at compile time.
macro_rules! assert_layout {
    ($t:ty, $size:expr $(, $($field:ident).+ = $off:expr)* $(,)?) => {
        const _: () = {
            assert!(::core::mem::size_of::<$t>() == $size, "size mismatch");
            $(
                assert!(
                    ::core::mem::offset_of!($t, $($field).+) == $off,
                    "offset mismatch"
                );
            )*
        };
    };
}
