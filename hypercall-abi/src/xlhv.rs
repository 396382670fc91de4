//! What xen-like-hv offers beyond Xen's ABI. Nothing here changes what a Xen PV
//! guest sees through Xen's own numbers; a guest that never uses these items cannot
//! tell them apart from Xen's behaviour.

/// The *floor* call: a `syscall` from the guest kernel with RAX = this value returns
/// at once with RAX = 0, from the hypervisor's SYSCALL entry before any bookkeeping
/// (no frame, no dispatch, no event or timer check). It is the cheapest trip from
/// ring 3 into the hypervisor and back, which the bench guest measures so that the
/// null hypercall can be read against it (docs/bench.md). Xen 4.17 has no such path:
/// the value is out of its hypercall range and answers `-ENOSYS` there, which tells a
/// guest which of the two it runs on. It fits a sign-extended 32-bit immediate, so
/// the entry compares it in one instruction; it is far above Xen's hypercall numbers
/// (and the hypercall page's 128 stubs), so it never shadows one.
pub const FLOOR_HYPERCALL: u64 = 0x4C48_5646;
