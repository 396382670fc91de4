# Entry and exit paths between guests and the hypervisor.
#
# Every entry builds the same `TrapFrame` (arch::x86_64::trap) at the top of this CPU's
# hypervisor stack: the CPU's (or SYSCALL's emulated) interrupt frame, an error code, a
# vector, then the general registers. `hv_trap(&mut frame)` handles it and may rewrite
# the frame (a hypercall result, a bounce to a guest handler, another vCPU); the exit
# path restores whatever the frame then says with IRETQ.
#
# GS: while a guest runs, GS.base is the guest's and MSR_KERNEL_GS_BASE holds this CPU's
# `PerCpu` pointer; in the hypervisor it is the other way round. Entries from ring 3
# therefore SWAPGS first, and exits to ring 3 SWAPGS last.

.set PERCPU_STACK_TOP, 8        # offsets in arch::x86_64::percpu::PerCpu
.set PERCPU_SCRATCH,   16
.set PERCPU_FLOOR_OK,  32       # the running vCPU is in guest kernel mode (non-zero)
.set FLOOR_HYPERCALL,  {floor_hypercall}  # hypercall_abi::xlhv::FLOOR_HYPERCALL
.set RFLAGS_TF,        0x100
.set SYSCALL_VECTOR,   {syscall_vector}   # xlhv_core::regs::SYSCALL_VECTOR
.set SYSRET_OK,        {sysret_ok}        # xlhv_core::regs::SYSRET_OK
.set FLAT_RING3_SS,    {flat_ring3_ss}    # hypercall_abi::xen::FLAT_RING3_SS64
.set FLAT_RING3_CS64,  {flat_ring3_cs64}  # hypercall_abi::xen::FLAT_RING3_CS64

.section .text.isr, "ax"
.code64

# SYSCALL from ring 3: RCX = guest RIP, R11 = guest RFLAGS, RSP still the guest's.
# SFMASK has cleared IF, so nothing can interrupt until the stack is the hypervisor's.
.global syscall_entry
syscall_entry:
    swapgs
    cmpq $FLOOR_HYPERCALL, %rax
    je .Lfloor
.Lsyscall_frame:
    movq %rsp, %gs:PERCPU_SCRATCH
    movq %gs:PERCPU_STACK_TOP, %rsp
    pushq $FLAT_RING3_SS
    pushq %gs:PERCPU_SCRATCH
    pushq %r11
    pushq $FLAT_RING3_CS64
    pushq %rcx
    pushq $0
    pushq $SYSCALL_VECTOR
    jmp .Lsave_regs

# The floor call (docs/bench.md): from the guest kernel, not single-stepping, with a
# canonical return address (SYSRET to a non-canonical RCX would fault in ring 0), it
# returns at once with RAX = 0: no frame, no handler, no event or timer check. No
# state changes, so nothing is left for a later entry to catch up on: events and
# timers only become due in entries that take the full path. Anything else takes the
# full path, which answers the call the same way (GuestCtx::hypercall).
.Lfloor:
    cmpb $0, %gs:PERCPU_FLOOR_OK
    je .Lsyscall_frame
    testl $RFLAGS_TF, %r11d
    jnz .Lsyscall_frame
    movq %rcx, %rax
    shlq $16, %rax
    sarq $16, %rax
    cmpq %rcx, %rax
    jne .Lfloor_full
    xorl %eax, %eax
    swapgs
    sysretq
.Lfloor_full:
    movq $FLOOR_HYPERCALL, %rax
    jmp .Lsyscall_frame

# Interrupts and exceptions: the stub pushed an error code (real or 0) and the vector.
.global isr_common
isr_common:
    testb $3, 24(%rsp)              # CS of the interrupted context
    jnz 1f
    # From ring 0, only the exit path's IRETQ runs on the guest's GS base (swapped in
    # just before it): a fault on it (or an NMI there) swaps the hypervisor's back, so
    # that the handler finds this CPU's data (percpu) through GS.
    pushq %rax
    leaq exit_iretq(%rip), %rax
    cmpq %rax, 24(%rsp)             # RIP of the interrupted context, past the push
    popq %rax
    jne .Lsave_regs
1:  swapgs
.Lsave_regs:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rdi
    cld
    callq hv_trap
    # fall through: return to what the frame says

# Restores the TrapFrame at RSP and returns to it. `return_to_frame(frame)` (below)
# jumps here to enter a guest for the first time or to switch to another vCPU.
# A frame whose vector slot says SYSRET_OK (set by domains::guest_entry only when it is
# safe: a SYSCALL entry going back to flat 64-bit ring 3 at a canonical RIP, where the
# guest expects RCX/R11 to be clobbered) returns with SYSRET, loading RIP and RFLAGS
# from the frame; every other frame returns with IRETQ.
.Lrestore_regs:
    cmpq $SYSRET_OK, 120(%rsp)      # vector slot, after the 15 general registers
    je .Lsysret
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp                  # vector, error code
    testb $3, 8(%rsp)               # CS we return to
    jnz 1f
    # Back to the exit path's IRETQ (a fault on it was handled): the guest's GS base
    # again, as isr_common found it.
    pushq %rax
    leaq exit_iretq(%rip), %rax
    cmpq %rax, 8(%rsp)              # RIP we return to, past the push
    popq %rax
    jne 2f
1:  swapgs
2:
.global exit_iretq
exit_iretq:
    iretq

.Lsysret:
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    addq $8, %rsp                   # r11: becomes RFLAGS
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    addq $8, %rsp                   # rcx: becomes RIP
    popq %rbx
    popq %rax
    movq 16(%rsp), %rcx             # rip
    movq 32(%rsp), %r11             # rflags
    movq 40(%rsp), %rsp             # the guest's stack
    swapgs
    sysretq

# fn return_to_frame(frame: *const TrapFrame) -> !
# RDI points at a complete TrapFrame at the top of this CPU's stack.
.global return_to_frame
return_to_frame:
    movq %rdi, %rsp
    jmp .Lrestore_regs

# usize copy_guest(dst: *mut u8, src: *const u8, len: usize): copies with the current
# (guest) page tables and returns how many bytes were NOT copied. A page fault on the
# `rep movsb` is fixed up by the trap handler: it resumes at copy_guest_fixup with RCX
# holding what was left.
.global copy_guest
copy_guest:
    movq %rdx, %rcx
.global copy_guest_insn
copy_guest_insn:
    rep movsb
.global copy_guest_fixup
copy_guest_fixup:
    movq %rcx, %rax
    retq

# u32 load_ds_safe(sel: u16): loads %ds (for a vCPU switched in, or
# SEGBASE_GS_USER_SEL); returns 1, or 0 if the load faulted (#GP, #NP, #PF), which
# the trap handler fixes up to resume at load_ds_fixup: NULL is loaded instead.
.global load_ds_safe
load_ds_safe:
    movl $1, %eax
.global load_ds_insn
load_ds_insn:
    movw %di, %ds
    retq
.global load_ds_fixup
load_ds_fixup:
    xorl %eax, %eax
    movw %ax, %ds
    retq

# u32 load_es_safe(sel: u16): loads %es (for a vCPU switched in, or
# SEGBASE_GS_USER_SEL); returns 1, or 0 if the load faulted (#GP, #NP, #PF), which
# the trap handler fixes up to resume at load_es_fixup: NULL is loaded instead.
.global load_es_safe
load_es_safe:
    movl $1, %eax
.global load_es_insn
load_es_insn:
    movw %di, %es
    retq
.global load_es_fixup
load_es_fixup:
    xorl %eax, %eax
    movw %ax, %es
    retq

# u32 load_fs_safe(sel: u16): loads %fs (for a vCPU switched in, or
# SEGBASE_GS_USER_SEL); returns 1, or 0 if the load faulted (#GP, #NP, #PF), which
# the trap handler fixes up to resume at load_fs_fixup: NULL is loaded instead.
.global load_fs_safe
load_fs_safe:
    movl $1, %eax
.global load_fs_insn
load_fs_insn:
    movw %di, %fs
    retq
.global load_fs_fixup
load_fs_fixup:
    xorl %eax, %eax
    movw %ax, %fs
    retq

# u32 load_gs_safe(sel: u16): loads %gs (for a vCPU switched in, or
# SEGBASE_GS_USER_SEL); returns 1, or 0 if the load faulted (#GP, #NP, #PF), which
# the trap handler fixes up to resume at load_gs_fixup: NULL is loaded instead.
.global load_gs_safe
load_gs_safe:
    movl $1, %eax
.global load_gs_insn
load_gs_insn:
    movw %di, %gs
    retq
.global load_gs_fixup
load_gs_fixup:
    xorl %eax, %eax
    movw %ax, %gs
    retq

# u64 rdmsr_safe(msr: u32, ok: *mut u8): reads an MSR that may not exist. A #GP on the
# `rdmsr` is fixed up by the trap handler: it resumes at rdmsr_safe_fixup, which
# reports the failure through `ok` (left 1 on success).
.global rdmsr_safe
rdmsr_safe:
    movl %edi, %ecx
    movb $1, (%rsi)
.global rdmsr_safe_insn
rdmsr_safe_insn:
    rdmsr
    shlq $32, %rdx
    orq %rdx, %rax
    retq
.global rdmsr_safe_fixup
rdmsr_safe_fixup:
    movb $0, (%rsi)
    xorl %eax, %eax
    retq
