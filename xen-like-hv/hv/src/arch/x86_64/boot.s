# xen-like-hv entry from GRUB (multiboot2).
#
# GRUB enters `_start32` in 32-bit protected mode, paging off, with EAX = the multiboot2
# magic and EBX = the physical address of the boot information. This code checks both
# and the CPU, builds boot page tables (an identity map of the first 4 GiB, and the
# hypervisor image at its link address), enters long mode, clears .bss and calls
# `hv_start(magic, mbi)` on the boot stack. Rust then replaces these tables with the
# final ones, which keep nothing in the lower half.

.set HV_VIRT_BASE,   0xFFFF82D080000000   # must match linker.ld and arch::layout
.set HV_PHYS_BASE,   0x200000
.set MB2_MAGIC,      0xe85250d6
.set MB2_BOOT_MAGIC, 0x36d76289
.set COM1,           0x3f8
.set DEBUG_EXIT,     0xf4
.set EXIT_FAULT,     0x21                 # xlhv_core::exit::QemuExit::Fault

# ---- multiboot2 header: within the first 32 KiB of the file, 8-byte aligned ----
.section .multiboot2_header, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long 0                                       # architecture: i386 (32-bit protected mode)
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (MB2_MAGIC + (mb2_header_end - mb2_header))
    .balign 8
    .short 0                                      # end tag
    .short 0
    .long 8
mb2_header_end:

# ---- 32-bit entry ----
.section .boot.text, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    movl %eax, boot_magic
    movl %ebx, boot_mbi
    movl $boot_stack32_top, %esp

    cmpl $MB2_BOOT_MAGIC, %eax
    jne .Lnot_multiboot2

    # Long mode? (CPUID 0x80000001 EDX bit 29). Remember NX (bit 20) for EFER.NXE.
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb .Lno_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $(1 << 29), %edx
    jz .Lno_long_mode
    movl %edx, boot_ext_edx

    # Clear the top-level tables (GRUB zeroes .bss, but do not rely on it).
    xorl %eax, %eax
    movl $boot_pml4, %edi
    movl $(3 * 4096 / 4), %ecx                    # boot_pml4, boot_pdpt_low, boot_pdpt_high
    rep stosl

    # Identity map 0..4 GiB with 2 MiB pages: boot_pd_low holds 4 x 512 entries.
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                               # P | RW | PS
    movl %eax, boot_pd_low(, %ecx, 8)
    movl $0, boot_pd_low + 4(, %ecx, 8)
    incl %ecx
    cmpl $2048, %ecx
    jb 1b
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $12, %eax
    addl $(boot_pd_low + 0x3), %eax               # P | RW
    movl %eax, boot_pdpt_low(, %ecx, 8)
    incl %ecx
    cmpl $4, %ecx
    jb 2b
    movl $(boot_pdpt_low + 0x3), boot_pml4

    # The image at HV_VIRT_BASE: 1 GiB of 2 MiB pages from HV_PHYS_BASE.
    xorl %ecx, %ecx
3:  movl %ecx, %eax
    shll $21, %eax
    addl $(HV_PHYS_BASE + 0x83), %eax
    movl %eax, boot_pd_high(, %ecx, 8)
    movl $0, boot_pd_high + 4(, %ecx, 8)
    incl %ecx
    cmpl $512, %ecx
    jb 3b
    movl $(boot_pd_high + 0x3), boot_pdpt_high + 8 * ((HV_VIRT_BASE >> 30) & 511)
    movl $(boot_pdpt_high + 0x3), boot_pml4 + 8 * ((HV_VIRT_BASE >> 39) & 511)

    # PAE, then CR3, then EFER.LME (+NXE if the CPU has NX), then paging.
    movl %cr4, %eax
    orl $(1 << 5), %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $(1 << 8), %eax
    testl $(1 << 20), boot_ext_edx
    jz 4f
    orl $(1 << 11), %eax
4:  wrmsr
    movl %cr0, %eax
    orl $((1 << 31) | (1 << 16) | 1), %eax        # PG | WP | PE
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

.Lnot_multiboot2:
    movl $msg_not_mb2, %esi
    jmp .Lfail32
.Lno_long_mode:
    movl $msg_no_lm, %esi
.Lfail32:
    movw $COM1, %dx
5:  lodsb
    testb %al, %al
    jz 6f
    outb %al, %dx
    jmp 5b
6:  movw $DEBUG_EXIT, %dx
    movl $EXIT_FAULT, %eax
    outl %eax, %dx
7:  hlt
    jmp 7b

# ---- 64-bit, still at the low (identity-mapped) address ----
.code64
long_mode_entry:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs

    movabs $hv_boot_stack_top, %rsp
    movabs $__bss_start, %rdi
    movabs $__bss_end, %rcx
    subq %rdi, %rcx
    shrq $3, %rcx
    xorl %eax, %eax
    rep stosq

    movl boot_magic(%rip), %edi
    movl boot_mbi(%rip), %esi
    xorl %ebp, %ebp
    movabs $hv_start, %rax
    callq *%rax
8:  hlt
    jmp 8b

.section .boot.data, "aw"
.balign 8
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF                      # 0x08: 64-bit code, DPL0
    .quad 0x00CF92000000FFFF                      # 0x10: data, DPL0
boot_gdt_ptr:
    .short boot_gdt_ptr - boot_gdt - 1
    .long boot_gdt
boot_magic:     .long 0
boot_mbi:       .long 0
boot_ext_edx:   .long 0
msg_not_mb2:    .asciz "xen-like-hv: fatal: not started by a multiboot2 boot loader (wrong magic in EAX)\r\n"
msg_no_lm:      .asciz "xen-like-hv: fatal: this CPU has no long mode (x86_64); cannot run\r\n"

.section .boot.bss, "aw", @nobits
.balign 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd_low:    .skip 4 * 4096
boot_pd_high:   .skip 4096
boot_stack32:   .skip 1024
boot_stack32_top:

# ---- the boot CPU's stack (high half, .bss), above a guard page that the final page
# tables leave unmapped, so an overflow faults (#DF on its own IST stack) instead of
# silently overwriting the statics below.
.section .bss.hv_boot_stack, "aw", @nobits
.balign 4096
.global hv_boot_stack_guard
hv_boot_stack_guard:
    .skip 4096
.global hv_boot_stack_bottom
hv_boot_stack_bottom:
    .skip 256 * 1024
.global hv_boot_stack_top
hv_boot_stack_top:

# ---- the boot CPU's entry stack: every entry from a guest (TSS RSP0, SYSCALL) builds
# its frame at the top; also above an unmapped guard page.
.section .bss.hv_cpu0_stack, "aw", @nobits
.balign 4096
.global hv_cpu0_stack_guard
hv_cpu0_stack_guard:
    .skip 4096
    .skip 64 * 1024
.global hv_cpu0_stack_top
hv_cpu0_stack_top:

# ---- the other CPUs' entry stacks (percpu::MAX_CPUS - 1 of them, 64 KiB each), each
# above its own unmapped guard page. `smp` starts an application processor on its
# stack, and it stays that CPU's TSS RSP0 and SYSCALL stack.
.set AP_STACKS,     7
.set AP_STACK_SIZE, 64 * 1024
.section .bss.hv_ap_stacks, "aw", @nobits
.balign 4096
.global hv_ap_stacks
hv_ap_stacks:
    .skip AP_STACKS * (4096 + AP_STACK_SIZE)
