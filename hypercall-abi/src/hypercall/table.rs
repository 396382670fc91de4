//! The hypercall table: the one declaration of every hypercall.
//!
//! Row syntax:
//! `nr => Variant name(arg: Type, ...) since IFACE [, replaces Variant];`
//! `since` is the lowest `__XEN_INTERFACE_VERSION__` whose headers give
//! `name` this number; `replaces` names the legacy entry that the same name
//! meant before. Numbers Xen leaves unused (11, 43..=47, 50..=63) have no
//! row: [`dispatch`] answers `-ENOSYS` for them.
//!
//! Argument types are the C parameter types: `u32`/`i32` for `unsigned
//! int`/`int`, `u64`/`i64` for `(unsigned) long`, [`GuestPtr`] for guest
//! handles. Command arguments Xen declares as `int` are `u32` here; they are
//! only compared with non-negative sub-op numbers, so the low 32 bits select
//! the same command either way.

use super::{Call, HypercallArg, Invoke, pack};
use crate::errno::Errno;
use crate::evtchn::EvtchnOpCompat;
use crate::mmu::{MmuUpdate, MmuextOp};
use crate::physdev::PhysdevOpCompat;
use crate::types::{DomId, GuestPtr, MachineAddr, Mfn, VcpuId};
use crate::xen::{MulticallEntry, TrapInfo};

macro_rules! opt_variant {
    () => {
        None
    };
    ($v:ident) => {
        Some(Hypercall::$v)
    };
}

macro_rules! opt_nr {
    () => {
        None
    };
    ($v:ident) => {
        Some(Hypercall::$v as u32)
    };
}

macro_rules! hypercalls {
    ($(
        $(#[$doc:meta])*
        $nr:literal => $Variant:ident $name:ident($($arg:ident: $ty:ty),* $(,)?)
            since $since:literal $(, replaces $old:ident)?;
    )*) => {
        /// Hypercall numbers (`__HYPERVISOR_*`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        pub enum Hypercall {
            $( $(#[$doc])* $Variant = $nr, )*
        }

        impl Hypercall {
            /// The hypercall with number `nr`, if the table has one.
            pub const fn from_nr(nr: u64) -> Option<Self> {
                match nr {
                    $( $nr => Some(Self::$Variant), )*
                    _ => None,
                }
            }

            /// The number.
            pub const fn nr(self) -> u32 {
                self as u32
            }

            /// Xen's name without `__HYPERVISOR_`.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$Variant => stringify!($name), )*
                }
            }

            /// How many register arguments it takes.
            pub const fn arg_count(self) -> usize {
                match self {
                    $( Self::$Variant => <[&str]>::len(&[$(stringify!($arg)),*]), )*
                }
            }

            /// Lowest `__XEN_INTERFACE_VERSION__` whose headers give this
            /// name this number.
            pub const fn since(self) -> u32 {
                match self {
                    $( Self::$Variant => $since, )*
                }
            }

            /// The legacy entry this name meant before [`since`](Self::since).
            pub const fn replaces(self) -> Option<Hypercall> {
                match self {
                    $( Self::$Variant => opt_variant!($($old)?), )*
                }
            }

            /// The newer entry that took over this one's name, for legacy
            /// (`_compat`) entries.
            pub const fn superseded_by(self) -> Option<Hypercall> {
                $( $( if matches!(self, Self::$old) { return Some(Self::$Variant); } )? )*
                None
            }

            /// The row describing it.
            pub const fn desc(self) -> &'static HypercallDesc {
                let mut i = 0;
                while i < HYPERCALLS.len() {
                    if HYPERCALLS[i].nr == self as u32 {
                        return &HYPERCALLS[i];
                    }
                    i += 1;
                }
                unreachable!()
            }
        }

        /// The hypercall table as data: one [`HypercallDesc`] per row, in
        /// number order.
        pub const HYPERCALLS: &[HypercallDesc] = &[
            $(
                HypercallDesc {
                    nr: $nr,
                    name: stringify!($name),
                    args: &[$(stringify!($arg)),*],
                    arg_types: &[$(stringify!($ty)),*],
                    since: $since,
                    replaces: opt_nr!($($old)?),
                },
            )*
        ];

        /// The hypervisor's side of the table: one method per hypercall.
        ///
        /// Every method defaults to `-ENOSYS`, so an implementation wires
        /// only what it supports. A method returns the `rax` value on
        /// success, or a rich error that [`dispatch`] turns into errno
        /// through `Into<Errno>`: the only place the hypervisor encodes an
        /// error. Arguments arrive already decoded from the registers
        /// ([`HypercallArg::from_reg`]); guest handles are plain addresses
        /// to copy through the hypervisor's checked guest-memory path.
        pub trait HypercallHandler {
            /// The handler's error type.
            type Error: From<Errno> + Into<Errno>;

            $(
                $(#[$doc])*
                fn $name(&mut self $(, $arg: $ty)*) -> Result<u64, Self::Error> {
                    let _ = ($($arg,)*);
                    Err(Errno::ENOSYS.into())
                }
            )*
        }

        /// Decode hypercall `nr` with argument registers `args`, run it on
        /// `h`, and return the `rax` image.
        ///
        /// Unknown numbers answer `-ENOSYS`, as do unwired ones (the trait's
        /// defaults). Register `i` feeds argument `i` in [`ARG_REGS`](super::ARG_REGS)
        /// order; extra registers are ignored.
        pub fn dispatch<H: HypercallHandler + ?Sized>(h: &mut H, nr: u64, args: [u64; 5]) -> u64 {
            let Some(hc) = Hypercall::from_nr(nr) else {
                return Errno::ENOSYS.encode();
            };
            #[allow(unused_mut, unused_variables)]
            let mut regs = args.into_iter();
            let result = match hc {
                $(
                    Hypercall::$Variant => h.$name(
                        $( <$ty as HypercallArg>::from_reg(regs.next().unwrap_or(0)) ),*
                    ),
                )*
            };
            match result {
                Ok(value) => value,
                Err(e) => {
                    let e: Errno = e.into();
                    e.encode()
                }
            }
        }

        $(
            $(#[$doc])*
            ///
            /// Typed guest wrapper: loads the registers, invokes, decodes
            /// `rax`.
            pub fn $name<I: Invoke + ?Sized>(inv: &mut I $(, $arg: $ty)*) -> Result<u64, Errno> {
                call::$name($($arg),*).invoke(inv)
            }
        )*

        /// Each hypercall as a [`Call`] value (number plus register images),
        /// for `multicall` batches or deferred invocation.
        pub mod call {
            use super::*;

            $(
                $(#[$doc])*
                pub fn $name($($arg: $ty),*) -> Call {
                    Call { nr: $nr, args: pack([$(HypercallArg::to_reg($arg)),*]) }
                }
            )*
        }
    };
}

use super::HypercallDesc;

hypercalls! {
    /// Install entries of the virtual IDT. `traps` is an array ended by an
    /// entry with `address == 0`; null clears the whole table.
    0 => SetTrapTable set_trap_table(traps: GuestPtr<TrapInfo>) since 0x0000_0000;
    /// Apply `count` page-table or M2P updates; `pdone` (optional) receives
    /// how many completed; `foreigndom` = FD | (PFD + 1) << 16 (see
    /// [`crate::mmu`]).
    1 => MmuUpdate mmu_update(
        reqs: GuestPtr<MmuUpdate>, count: u32, pdone: GuestPtr<u32>, foreigndom: u32,
    ) since 0x0000_0000;
    /// Load the guest GDT from `frame_list` (MFNs), `entries` descriptors
    /// (at most 7168).
    2 => SetGdt set_gdt(frame_list: GuestPtr<Mfn>, entries: u32) since 0x0000_0000;
    /// Record the kernel stack (`ss`, `sp`) used for user-to-kernel bounces.
    3 => StackSwitch stack_switch(ss: u64, sp: u64) since 0x0000_0000;
    /// Register the event, failsafe and syscall callbacks (flags 0).
    4 => SetCallbacks set_callbacks(
        event_address: u64, failsafe_address: u64, syscall_address: u64,
    ) since 0x0000_0000;
    /// Set (non-zero) or clear the virtual CR0.TS.
    5 => FpuTaskswitch fpu_taskswitch(set: i32) since 0x0000_0000;
    /// Legacy scheduler call: `cmd` 0 yield, 1 block, 2 shutdown with
    /// `arg` = reason. Kept for guests older than interface 0x00030101.
    6 => SchedOpCompat sched_op_compat(cmd: u32, arg: u64) since 0x0000_0000;
    /// Platform management (privileged; `dom0_op` before 0x00030204).
    7 => PlatformOp platform_op(op: GuestPtr<()>) since 0x0000_0000;
    /// Set debug register `reg` to `value`.
    8 => SetDebugreg set_debugreg(reg: i32, value: u64) since 0x0000_0000;
    /// Read debug register `reg`.
    9 => GetDebugreg get_debugreg(reg: i32) since 0x0000_0000;
    /// Write the 8-byte descriptor `desc` at machine address `ma` (GDT/LDT
    /// frame), after auditing it.
    10 => UpdateDescriptor update_descriptor(ma: MachineAddr, desc: u64) since 0x0000_0000;
    /// Memory reservation and physmap operations: `cmd` bits 5:0 are the
    /// `XENMEM_*` sub-op, the rest the start extent (see [`crate::memory`]).
    12 => MemoryOp memory_op(cmd: u64, arg: GuestPtr<()>) since 0x0000_0000;
    /// Run `nr_calls` entries of `call_list` in order, each result into its
    /// entry.
    13 => Multicall multicall(call_list: GuestPtr<MulticallEntry>, nr_calls: u32)
        since 0x0000_0000;
    /// Write the L1 entry mapping `va` with `val`, then flush per `flags`
    /// (`UVMF_*`).
    14 => UpdateVaMapping update_va_mapping(va: u64, val: u64, flags: u64) since 0x0000_0000;
    /// Arm the one-shot timer at absolute system time `timeout` (ns); 0
    /// cancels.
    15 => SetTimerOp set_timer_op(timeout: i64) since 0x0000_0000;
    /// Legacy event-channel call with a single `struct evtchn_op`. Kept for
    /// guests older than interface 0x00030202.
    16 => EventChannelOpCompat event_channel_op_compat(op: GuestPtr<EvtchnOpCompat>)
        since 0x0000_0000;
    /// Version and feature queries (`XENVER_*`, see [`crate::version`]).
    17 => XenVersion xen_version(cmd: u32, arg: GuestPtr<()>) since 0x0000_0000;
    /// Hypervisor console: `CONSOLEIO_write` `count` bytes of `buffer`, or
    /// read into it.
    18 => ConsoleIo console_io(cmd: u32, count: u32, buffer: GuestPtr<u8>) since 0x0000_0000;
    /// Legacy physdev call with a single `struct physdev_op`. Kept for guests
    /// older than interface 0x00030202.
    19 => PhysdevOpCompat physdev_op_compat(op: GuestPtr<PhysdevOpCompat>) since 0x0000_0000;
    /// Grant-table operations (`GNTTABOP_*`) on an array of `count` structs.
    20 => GrantTableOp grant_table_op(cmd: u32, uop: GuestPtr<()>, count: u32)
        since 0x0000_0000;
    /// Enable (`cmd` 0) or disable (1) assist `vmasst_type`.
    21 => VmAssist vm_assist(cmd: u32, vmasst_type: u32) since 0x0000_0000;
    /// As `update_va_mapping`, with frames owned by `domid`.
    22 => UpdateVaMappingOtherdomain update_va_mapping_otherdomain(
        va: u64, val: u64, flags: u64, domid: DomId,
    ) since 0x0000_0000;
    /// Return from a bounce: consumes an [`IretContext`](crate::xen::IretContext)
    /// on the guest stack; no register arguments. A real guest *jumps* to
    /// this stub; it never returns on success.
    23 => Iret iret() since 0x0000_0000;
    /// vCPU operations (`VCPUOP_*`) on vCPU `vcpuid`.
    24 => VcpuOp vcpu_op(cmd: u32, vcpuid: VcpuId, arg: GuestPtr<()>) since 0x0000_0000;
    /// Set a segment base (`SEGBASE_*` in `which`).
    25 => SetSegmentBase set_segment_base(which: u32, base: u64) since 0x0000_0000;
    /// Extended MMU operations (`MMUEXT_*`): `count` entries of `ops`.
    26 => MmuextOp mmuext_op(
        ops: GuestPtr<MmuextOp>, count: u32, pdone: GuestPtr<u32>, foreigndom: u32,
    ) since 0x0000_0000;
    /// XSM/FLASK security operations.
    27 => XsmOp xsm_op(op: GuestPtr<()>) since 0x0000_0000;
    /// NMI callback registration (`XENNMI_*`).
    28 => NmiOp nmi_op(cmd: u32, arg: GuestPtr<()>) since 0x0000_0000;
    /// Scheduler operations (`SCHEDOP_*`).
    29 => SchedOp sched_op(cmd: u32, arg: GuestPtr<()>) since 0x0003_0101,
        replaces SchedOpCompat;
    /// Callback registration (`CALLBACKOP_*`).
    30 => CallbackOp callback_op(cmd: u32, arg: GuestPtr<()>) since 0x0000_0000;
    /// Xenoprof profiling (still listed in 4.17's headers).
    31 => XenoprofOp xenoprof_op(op: u32, arg: GuestPtr<()>) since 0x0000_0000;
    /// Event-channel operations (`EVTCHNOP_*`).
    32 => EventChannelOp event_channel_op(cmd: u32, arg: GuestPtr<()>) since 0x0003_0202,
        replaces EventChannelOpCompat;
    /// Physical-device operations (`PHYSDEVOP_*`).
    33 => PhysdevOp physdev_op(cmd: u32, arg: GuestPtr<()>) since 0x0003_0202,
        replaces PhysdevOpCompat;
    /// HVM operations (rarely used by PV guests).
    34 => HvmOp hvm_op(op: u64, arg: GuestPtr<()>) since 0x0000_0000;
    /// System control (privileged).
    35 => Sysctl sysctl(op: GuestPtr<()>) since 0x0000_0000;
    /// Domain control (privileged; not a stable ABI).
    36 => Domctl domctl(op: GuestPtr<()>) since 0x0000_0000;
    /// Kexec (privileged).
    37 => KexecOp kexec_op(op: u64, arg: GuestPtr<()>) since 0x0000_0000;
    /// Transcendent memory: removed, always `-ENOSYS` in Xen 4.17.
    38 => TmemOp tmem_op(op: GuestPtr<()>) since 0x0000_0000;
    /// Argo inter-domain messaging.
    39 => ArgoOp argo_op(
        cmd: u32, arg1: GuestPtr<()>, arg2: GuestPtr<()>, arg3: u64, arg4: u64,
    ) since 0x0000_0000;
    /// Performance-monitoring unit.
    40 => XenpmuOp xenpmu_op(op: u32, arg: GuestPtr<()>) since 0x0000_0000;
    /// Device-model operations on `domid`.
    41 => DmOp dm_op(domid: DomId, nr_bufs: u32, bufs: GuestPtr<()>) since 0x0000_0000;
    /// Hypervisor file system.
    42 => HypfsOp hypfs_op(
        cmd: u32, arg1: GuestPtr<u8>, arg2: u64, arg3: GuestPtr<()>, arg4: u64,
    ) since 0x0000_0000;
    /// x86 machine-check interface (`__HYPERVISOR_arch_0`).
    48 => Mca mca(op: GuestPtr<()>) since 0x0000_0000;
    /// Continuation of paging domctls, internal (`__HYPERVISOR_arch_1`).
    49 => PagingDomctlCont paging_domctl_cont(op: GuestPtr<()>) since 0x0000_0000;
}

impl Hypercall {
    /// Whether a guest built against interface version `iface` can name
    /// this entry.
    pub const fn available_in(self, iface: u32) -> bool {
        self.since() <= iface
    }

    /// The entry a guest built against `iface` reaches when it uses this
    /// entry's name, following the headers' redirections; `None` if the
    /// name does not exist at that version.
    pub const fn for_interface(self, iface: u32) -> Option<Hypercall> {
        if self.available_in(iface) {
            return Some(self);
        }
        match self.replaces() {
            Some(old) if old.available_in(iface) => Some(old),
            _ => None,
        }
    }

    /// True for a legacy entry kept for old guests (`*_compat`).
    pub const fn is_legacy(self) -> bool {
        self.superseded_by().is_some()
    }
}
