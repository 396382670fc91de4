//! The hypercall page: 128 stubs of 32 bytes that the hypervisor writes into
//! the page a guest nominates (`XEN_ELFNOTE_HYPERCALL_PAGE`).
//!
//! The builder (the hypervisor for dom0; `XEN_DOMCTL_hypercall_init` for a
//! domU) writes [`hypercall_page_image`] into that page before the guest
//! starts. The guest calls `page + nr * 32`; for `iret` it pushes its frame
//! and *jumps* to `page + 23 * 32`.
//!
//! Stub `nr` (except 23): `push %rcx; push %r11; mov $nr, %eax; syscall;
//! pop %r11; pop %rcx; ret`, then `int3` padding. The `iret` stub pushes
//! `rcx`, `r11` and `rax`, loads 23 and executes `syscall`, with no return
//! path. Unused bytes are `0xCC` (`int3`).

use super::Hypercall;

/// Bytes per stub.
pub const HYPERCALL_STUB_SIZE: usize = 32;
/// Stubs in the page.
pub const HYPERCALL_PAGE_STUBS: usize = 128;

const INT3: u8 = 0xCC;

/// The 32 bytes of stub `nr`.
pub const fn hypercall_stub(nr: u32) -> [u8; HYPERCALL_STUB_SIZE] {
    let mut s = [INT3; HYPERCALL_STUB_SIZE];
    let imm = nr.to_le_bytes();
    if nr == Hypercall::Iret as u32 {
        let code = [
            0x51, // push %rcx
            0x41, 0x53, // push %r11
            0x50, // push %rax
            0xB8, imm[0], imm[1], imm[2], imm[3], // mov $nr, %eax
            0x0F, 0x05, // syscall
        ];
        let mut i = 0;
        while i < code.len() {
            s[i] = code[i];
            i += 1;
        }
    } else {
        let code = [
            0x51, // push %rcx
            0x41, 0x53, // push %r11
            0xB8, imm[0], imm[1], imm[2], imm[3], // mov $nr, %eax
            0x0F, 0x05, // syscall
            0x41, 0x5B, // pop %r11
            0x59, // pop %rcx
            0xC3, // ret
        ];
        let mut i = 0;
        while i < code.len() {
            s[i] = code[i];
            i += 1;
        }
    }
    s
}

/// The complete 4 KiB page the hypervisor writes.
pub const fn hypercall_page_image() -> [u8; 4096] {
    let mut page = [INT3; 4096];
    let mut nr = 0;
    while nr < HYPERCALL_PAGE_STUBS {
        #[allow(clippy::cast_possible_truncation)] // nr < 128
        let stub = hypercall_stub(nr as u32);
        let mut i = 0;
        while i < HYPERCALL_STUB_SIZE {
            page[nr * HYPERCALL_STUB_SIZE + i] = stub[i];
            i += 1;
        }
        nr += 1;
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_stub_bytes() {
        let s = hypercall_stub(17);
        assert_eq!(
            &s[..14],
            &[
                0x51, 0x41, 0x53, 0xB8, 17, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3
            ]
        );
        assert!(s[14..].iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn iret_stub_bytes() {
        let page = hypercall_page_image();
        let s = &page[0x2E0..0x300];
        assert_eq!(
            &s[..11],
            &[0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0x0F, 0x05]
        );
        assert!(s[11..].iter().all(|&b| b == 0xCC));
    }

    #[test]
    fn page_starts_with_push_rcx() {
        let page = hypercall_page_image();
        assert_eq!(page[0], 0x51);
        assert_eq!(page[127 * 32 + 4], 127);
    }
}
