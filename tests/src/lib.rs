//! QEMU integration tests for xen-like-hv.
