//! Where the control socket lives.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that names the control socket.
pub const SOCKET_ENV: &str = "DOM0CTL_SOCKET";

/// The control socket `dom0ctl` talks to and `scripts/run` makes QEMU listen on:
/// `$DOM0CTL_SOCKET` if set, else `${XDG_RUNTIME_DIR:-/tmp}/xen-like-hv/dom0.sock`.
/// The directory may not exist yet; whoever starts QEMU creates it.
pub fn default_socket_path() -> PathBuf {
    socket_path_from(|k| std::env::var_os(k))
}

/// The fast link's socket beside the control socket `control` (`dom0.sock` ->
/// `dom0.fast.sock`): QEMU's virtio console, which dom0 serves next to COM2.
/// `dom0ctl` tries it first when it exists.
pub fn fast_socket_path(control: &Path) -> PathBuf {
    control.with_extension("fast.sock")
}

/// [`default_socket_path`] with the environment given as a lookup, for tests.
pub fn socket_path_from(env: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = set(SOCKET_ENV) {
        return PathBuf::from(p);
    }
    let base = set("XDG_RUNTIME_DIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    base.join("xen-like-hv").join("dom0.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_socket_sits_beside_the_control_socket() {
        assert_eq!(
            fast_socket_path(Path::new("/run/x/dom0.sock")),
            PathBuf::from("/run/x/dom0.fast.sock")
        );
        assert_eq!(
            fast_socket_path(Path::new("ctl")),
            PathBuf::from("ctl.fast.sock")
        );
    }

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn precedence() {
        assert_eq!(
            socket_path_from(env(&[])),
            PathBuf::from("/tmp/xen-like-hv/dom0.sock")
        );
        assert_eq!(
            socket_path_from(env(&[("XDG_RUNTIME_DIR", "/run/user/1000")])),
            PathBuf::from("/run/user/1000/xen-like-hv/dom0.sock")
        );
        assert_eq!(
            socket_path_from(env(&[
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
                (SOCKET_ENV, "/x/y.sock")
            ])),
            PathBuf::from("/x/y.sock")
        );
        assert_eq!(
            socket_path_from(env(&[(SOCKET_ENV, ""), ("XDG_RUNTIME_DIR", "")])),
            PathBuf::from("/tmp/xen-like-hv/dom0.sock"),
            "empty variables count as unset"
        );
    }
}
