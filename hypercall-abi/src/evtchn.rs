//! Event channels: `event_channel_op` (#32) and its legacy form (#16)
//! (`event_channel.h`, VIRQs from `xen.h`).
//!
//! Every op takes one argument struct, which the guest fills with the `in`
//! fields; the hypervisor copies it in, acts, and copies back the `out`
//! fields. Delivery uses the 2-level bitmaps in
//! [`SharedInfo`](crate::xen::SharedInfo): see [`port_word_bit`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{DomId, EvtchnPort, VcpuId};

subops! {
    /// `event_channel_op` commands (`EVTCHNOP_*`).
    pub enum EvtchnOp: "EVTCHNOP_" {
        /// Connect to an unbound port of another domain.
        0 => BindInterdomain(EvtchnBindInterdomain) bind_interdomain since 0x0000_0000;
        /// Bind a virtual IRQ on a vCPU.
        1 => BindVirq(EvtchnBindVirq) bind_virq since 0x0000_0000;
        /// Bind a physical IRQ (privileged).
        2 => BindPirq(EvtchnBindPirq) bind_pirq since 0x0000_0000;
        /// Close a port.
        3 => Close(EvtchnClose) close since 0x0000_0000;
        /// Notify the other end of a port.
        4 => Send(EvtchnSend) send since 0x0000_0000;
        /// Query a port.
        5 => Status(EvtchnStatus) status since 0x0000_0000;
        /// Allocate a port for a remote domain to bind to.
        6 => AllocUnbound(EvtchnAllocUnbound) alloc_unbound since 0x0000_0000;
        /// Allocate an inter-vCPU port.
        7 => BindIpi(EvtchnBindIpi) bind_ipi since 0x0000_0000;
        /// Move a port's delivery to another vCPU.
        8 => BindVcpu(EvtchnBindVcpu) bind_vcpu since 0x0000_0000;
        /// Unmask a port (and deliver it if pending).
        9 => Unmask(EvtchnUnmask) unmask since 0x0000_0000;
        /// Close every port of a domain.
        10 => Reset(EvtchnReset) reset since 0x0000_0000;
        /// FIFO ABI: register a control block.
        11 => InitControl(EvtchnInitControl) init_control since 0x0000_0000;
        /// FIFO ABI: add an event-array page.
        12 => ExpandArray(EvtchnExpandArray) expand_array since 0x0000_0000;
        /// FIFO ABI: set a port's priority.
        13 => SetPriority(EvtchnSetPriority) set_priority since 0x0000_0000;
        /// Continuation of `reset`; hypervisor-internal (the headers define
        /// it only for `__XEN__`).
        14 => ResetCont(EvtchnReset) reset_cont since 0x0000_0000;
    }
}

/// `EVTCHNOP_alloc_unbound` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// In: the domain to allocate in (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// In: the domain allowed to bind (may be `DOMID_SELF`).
    pub remote_dom: DomId,
    /// Out: the new port.
    pub port: EvtchnPort,
}

/// `EVTCHNOP_bind_interdomain` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// In: the remote domain.
    pub remote_dom: DomId,
    /// Padding (zero).
    pub _pad: u16,
    /// In: its unbound port.
    pub remote_port: EvtchnPort,
    /// Out: the local port (set pending on bind).
    pub local_port: EvtchnPort,
}

/// `EVTCHNOP_bind_virq` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// In: the VIRQ ([`Virq`]).
    pub virq: u32,
    /// In: the vCPU (0 for global VIRQs).
    pub vcpu: VcpuId,
    /// Out: the port.
    pub port: EvtchnPort,
}

/// `bind_pirq` flag: the IRQ may be shared (`BIND_PIRQ__WILL_SHARE`).
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// `EVTCHNOP_bind_pirq` (12 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindPirq {
    /// In: the physical IRQ.
    pub pirq: u32,
    /// In: [`BIND_PIRQ_WILL_SHARE`] or 0.
    pub flags: u32,
    /// Out: the port.
    pub port: EvtchnPort,
}

/// `EVTCHNOP_bind_ipi` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// In: the vCPU to notify.
    pub vcpu: VcpuId,
    /// Out: the port.
    pub port: EvtchnPort,
}

/// `EVTCHNOP_close` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnClose {
    /// In: the port.
    pub port: EvtchnPort,
}

/// `EVTCHNOP_send` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnSend {
    /// In: the port.
    pub port: EvtchnPort,
}

/// `evtchn_status.status` values (`EVTCHNSTAT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum EvtchnStat {
    /// Closed or reserved (port 0).
    Closed = 0,
    /// Allocated, waiting for a remote bind.
    Unbound = 1,
    /// Connected to another domain's port.
    Interdomain = 2,
    /// Bound to a physical IRQ.
    Pirq = 3,
    /// Bound to a virtual IRQ.
    Virq = 4,
    /// Inter-vCPU.
    Ipi = 5,
}

/// `EVTCHNOP_status` (24 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// In: the domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding (zero).
    pub _pad: u16,
    /// In: the port.
    pub port: EvtchnPort,
    /// Out: an [`EvtchnStat`].
    pub status: u32,
    /// Out: the vCPU the port delivers to.
    pub vcpu: VcpuId,
    /// Out: the union `u` (see the accessors).
    pub u: [u32; 2],
}

impl EvtchnStatus {
    /// `u.unbound.dom`: the domain allowed to bind.
    pub const fn unbound_dom(&self) -> DomId {
        #[allow(clippy::cast_possible_truncation)] // a u16 member
        DomId(self.u[0] as u16)
    }

    /// `u.interdomain`: the remote domain and port.
    pub const fn interdomain(&self) -> (DomId, EvtchnPort) {
        #[allow(clippy::cast_possible_truncation)] // a u16 member
        (DomId(self.u[0] as u16), EvtchnPort(self.u[1]))
    }

    /// `u.pirq` or `u.virq`.
    pub const fn irq(&self) -> u32 {
        self.u[0]
    }
}

/// `EVTCHNOP_bind_vcpu` (8 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// In: the port.
    pub port: EvtchnPort,
    /// In: the new vCPU.
    pub vcpu: VcpuId,
}

/// `EVTCHNOP_unmask` (4 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnUnmask {
    /// In: the port.
    pub port: EvtchnPort,
}

/// `EVTCHNOP_reset` (2 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnReset {
    /// In: the domain.
    pub dom: DomId,
}

/// `EVTCHNOP_init_control` (24 bytes, FIFO ABI).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// In: frame of the control block.
    pub control_gfn: u64,
    /// In: offset of the control block in that frame.
    pub offset: u32,
    /// In: the vCPU.
    pub vcpu: VcpuId,
    /// Out: bits in an event link.
    pub link_bits: u8,
    /// Padding (zero).
    pub _pad: [u8; 7],
}

/// `EVTCHNOP_expand_array` (8 bytes, FIFO ABI).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// In: frame of the new event-array page.
    pub array_gfn: u64,
}

/// `EVTCHNOP_set_priority` (8 bytes, FIFO ABI).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// In: the port.
    pub port: EvtchnPort,
    /// In: 0 (highest) ..= 15 (lowest).
    pub priority: u32,
}

/// `struct evtchn_op` (28 bytes): the legacy `event_channel_op_compat` (#16)
/// argument, a command plus the op struct in a union.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnOpCompat {
    /// An [`EvtchnOp`] number.
    pub cmd: u32,
    /// The op struct's bytes (the largest member, `evtchn_status`, is 24).
    pub u: [u32; 6],
}

/// Ports in the 2-level ABI for a 64-bit guest (`EVTCHN_2L_NR_CHANNELS`).
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;

/// Word and bit of port `port` in `evtchn_pending`/`evtchn_mask`, and the
/// selector bit (the word index) in `evtchn_pending_sel`.
pub const fn port_word_bit(port: EvtchnPort) -> (usize, u32) {
    ((port.0 / 64) as usize, port.0 % 64)
}

/// FIFO ABI: highest priority (`EVTCHN_FIFO_PRIORITY_MAX`).
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// FIFO ABI: default priority (`EVTCHN_FIFO_PRIORITY_DEFAULT`).
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// FIFO ABI: lowest priority (`EVTCHN_FIFO_PRIORITY_MIN`).
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// FIFO ABI: queues per vCPU (`EVTCHN_FIFO_MAX_QUEUES`).
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// FIFO event word: pending bit (`EVTCHN_FIFO_PENDING`).
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// FIFO event word: masked bit (`EVTCHN_FIFO_MASKED`).
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// FIFO event word: linked bit (`EVTCHN_FIFO_LINKED`).
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// FIFO event word: busy bit (`EVTCHN_FIFO_BUSY`).
pub const EVTCHN_FIFO_BUSY: u32 = 28;
/// FIFO event word: bits of the link field (`EVTCHN_FIFO_LINK_BITS`).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// FIFO event word: link mask (`EVTCHN_FIFO_LINK_MASK`).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// FIFO ABI: ports (`EVTCHN_FIFO_NR_CHANNELS`).
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;

/// `struct evtchn_fifo_control_block` (72 bytes, FIFO ABI).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct EvtchnFifoControlBlock {
    /// Bitmap of ready queues.
    pub ready: u32,
    /// Reserved.
    pub _rsvd: u32,
    /// Head port of each queue.
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}

/// Virtual IRQs (`VIRQ_*`), bound with `EVTCHNOP_bind_virq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Virq {
    /// Per-vCPU: timer expiry.
    Timer = 0,
    /// Per-vCPU: debug dump request.
    Debug = 1,
    /// Global (dom0): hypervisor console input.
    Console = 2,
    /// Global (dom0): a domain crashed or shut down.
    DomExc = 3,
    /// Global (dom0): trace buffer records.
    Tbuf = 4,
    /// Global (dom0): a domain paused for debugging.
    Debugger = 6,
    /// Per-vCPU: Xenoprof sample.
    Xenoprof = 7,
    /// Global (dom0): console ring bytes.
    ConRing = 8,
    /// Global (dom0): physical CPU state changed.
    PcpuState = 9,
    /// Global (dom0): memory event.
    MemEvent = 10,
    /// Global: Argo notification.
    Argo = 11,
    /// Global (dom0): hypervisor heap low.
    Enomem = 12,
    /// Per-vCPU: PMU interrupt.
    Xenpmu = 13,
    /// Architecture VIRQ 0 (x86: machine check, `VIRQ_MCA`).
    Arch0 = 16,
    /// Architecture VIRQ 1.
    Arch1 = 17,
    /// Architecture VIRQ 2.
    Arch2 = 18,
    /// Architecture VIRQ 3.
    Arch3 = 19,
    /// Architecture VIRQ 4.
    Arch4 = 20,
    /// Architecture VIRQ 5.
    Arch5 = 21,
    /// Architecture VIRQ 6.
    Arch6 = 22,
    /// Architecture VIRQ 7.
    Arch7 = 23,
}

/// Number of VIRQs (`NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;

impl Virq {
    /// The VIRQ numbered `n`, if defined.
    pub const fn from_nr(n: u32) -> Option<Virq> {
        Some(match n {
            0 => Virq::Timer,
            1 => Virq::Debug,
            2 => Virq::Console,
            3 => Virq::DomExc,
            4 => Virq::Tbuf,
            6 => Virq::Debugger,
            7 => Virq::Xenoprof,
            8 => Virq::ConRing,
            9 => Virq::PcpuState,
            10 => Virq::MemEvent,
            11 => Virq::Argo,
            12 => Virq::Enomem,
            13 => Virq::Xenpmu,
            16 => Virq::Arch0,
            17 => Virq::Arch1,
            18 => Virq::Arch2,
            19 => Virq::Arch3,
            20 => Virq::Arch4,
            21 => Virq::Arch5,
            22 => Virq::Arch6,
            23 => Virq::Arch7,
            _ => return None,
        })
    }

    /// Per-vCPU VIRQs bind once per vCPU and never move; the rest are
    /// global and bind on vCPU 0.
    pub const fn is_per_vcpu(self) -> bool {
        matches!(
            self,
            Virq::Timer | Virq::Debug | Virq::Xenoprof | Virq::Xenpmu
        )
    }
}

/// The x86 machine-check VIRQ (`VIRQ_MCA` = `VIRQ_ARCH_0`).
pub const VIRQ_MCA: Virq = Virq::Arch0;

assert_layout!(EvtchnAllocUnbound, 8, dom = 0, remote_dom = 2, port = 4);
assert_layout!(
    EvtchnBindInterdomain,
    12,
    remote_dom = 0,
    remote_port = 4,
    local_port = 8
);
assert_layout!(EvtchnBindVirq, 12, virq = 0, vcpu = 4, port = 8);
assert_layout!(EvtchnBindPirq, 12, pirq = 0, flags = 4, port = 8);
assert_layout!(EvtchnBindIpi, 8, vcpu = 0, port = 4);
assert_layout!(EvtchnClose, 4, port = 0);
assert_layout!(EvtchnSend, 4, port = 0);
assert_layout!(
    EvtchnStatus,
    24,
    dom = 0,
    port = 4,
    status = 8,
    vcpu = 12,
    u = 16
);
assert_layout!(EvtchnBindVcpu, 8, port = 0, vcpu = 4);
assert_layout!(EvtchnUnmask, 4, port = 0);
assert_layout!(EvtchnReset, 2, dom = 0);
assert_layout!(
    EvtchnInitControl,
    24,
    control_gfn = 0,
    offset = 8,
    vcpu = 12,
    link_bits = 16
);
assert_layout!(EvtchnExpandArray, 8, array_gfn = 0);
assert_layout!(EvtchnSetPriority, 8, port = 0, priority = 4);
assert_layout!(EvtchnOpCompat, 28, cmd = 0, u = 4);
assert_layout!(EvtchnFifoControlBlock, 72, ready = 0, head = 8);
