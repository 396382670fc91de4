# The application processors' way from reset to Rust (arch::x86_64::smp).
#
# `smp` copies the bytes between ap_tramp_start and ap_tramp_end to physical
# AP_TRAMP (below 1 MiB, page aligned) and fills in the data block at the end, then
# sends INIT and STARTUP IPIs with vector AP_TRAMP >> 12. Each started CPU begins at
# AP_TRAMP in real mode, goes through 32-bit protected mode to long mode on page tables
# that map this page 1:1 and the hypervisor's own L4 slots, and jumps to
# `ap_tramp_entry` (smp::ap_entry) on its stack with its CPU index in RDI. The code runs
# at AP_TRAMP, not where it is linked, so every address below is AP_TRAMP plus an
# offset from ap_tramp_start.

.set AP_TRAMP, {ap_tramp}
.set EFER_MSR, 0xC0000080
.set CR4_PAE,  1 << 5
.set CR0_BITS, (1 << 31) | (1 << 16) | 1          # PG | WP | PE

.pushsection .rodata.ap_trampoline, "a"
.balign 16
.global ap_tramp_start
ap_tramp_start:
.code16
    cli
    cld
    movw %cs, %ax                                 # CS = AP_TRAMP >> 4
    movw %ax, %ds
    lgdtl tramp_gdt_ptr - ap_tramp_start
    movl %cr0, %eax
    orl $1, %eax                                  # PE
    movl %eax, %cr0
    ljmpl $0x08, $(AP_TRAMP + tramp_pm32 - ap_tramp_start)

.code32
tramp_pm32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl AP_TRAMP + tramp_cr3 - ap_tramp_start, %eax
    movl %eax, %cr3
    movl $EFER_MSR, %ecx
    rdmsr
    orl AP_TRAMP + tramp_efer - ap_tramp_start, %eax
    wrmsr
    movl %cr0, %eax
    orl $CR0_BITS, %eax
    movl %eax, %cr0
    ljmp $0x18, $(AP_TRAMP + tramp_lm64 - ap_tramp_start)

.code64
tramp_lm64:
    movq AP_TRAMP + tramp_stack - ap_tramp_start, %rsp
    movq AP_TRAMP + tramp_cpu - ap_tramp_start, %rdi
    movq AP_TRAMP + tramp_entry - ap_tramp_start, %rax
    pushq $0                                      # no return address: ap_entry never returns
    xorl %ebp, %ebp
    jmpq *%rax

.balign 8
tramp_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF                      # 0x08: 32-bit code
    .quad 0x00CF92000000FFFF                      # 0x10: data
    .quad 0x00AF9A000000FFFF                      # 0x18: 64-bit code
tramp_gdt_ptr:
    .short tramp_gdt_ptr - tramp_gdt - 1
    .long AP_TRAMP + tramp_gdt - ap_tramp_start

# Filled in by smp before each start (offsets in smp::TrampolineData).
.balign 8
.global ap_tramp_data
ap_tramp_data:
tramp_cr3:   .long 0, 0                           # the trampoline's L4 (below 4 GiB)
tramp_efer:  .long 0, 0                           # EFER bits to set: LME, NXE, SCE
tramp_stack: .quad 0                              # the CPU's stack top
tramp_cpu:   .quad 0                              # the CPU's index
tramp_entry: .quad 0                              # smp::ap_entry
.global ap_tramp_end
ap_tramp_end:
.popsection
