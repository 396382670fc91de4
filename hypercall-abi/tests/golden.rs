//! Golden tests: every number, size and offset against the values written in
//! the ABI digest (`shared/xen-pv-abi.md`), typed in here independently of
//! the crate's own declarations. (Every field offset is also asserted at
//! compile time next to its struct, and `c_layout.rs` checks all of them
//! against Xen's headers.)

use std::mem::{offset_of, size_of};

use hypercall_abi::callback::{CallbackOp, CallbackRegister, CallbackType};
use hypercall_abi::console::ConsoleIo;
use hypercall_abi::elfnote::XenElfNote;
use hypercall_abi::evtchn::*;
use hypercall_abi::gnttab::*;
use hypercall_abi::hypercall::{HYPERCALLS, INTERFACE_VERSION, hypercall_page_image};
use hypercall_abi::io::blkif::*;
use hypercall_abi::io::console::XenconsInterface;
use hypercall_abi::io::netif::*;
use hypercall_abi::io::xenbus::XenbusState;
use hypercall_abi::io::xenstore::{XenstoreDomainInterface, XsdSockmsg, XsdSockmsgType};
use hypercall_abi::memory::*;
use hypercall_abi::mmu::{MMU_UPDATE_PREEMPTED, MmuCmd, MmuUpdate, MmuextCmd, MmuextOp};
use hypercall_abi::sched::*;
use hypercall_abi::subop::SubOpDesc;
use hypercall_abi::vcpu::*;
use hypercall_abi::version::*;
use hypercall_abi::vm_assist::VmAssistType;
use hypercall_abi::xen::arch::{CpuUserRegs, IretContext, TrapInfo, VcpuGuestContext, VgcfFlags};
use hypercall_abi::xen::*;
use hypercall_abi::{ABI_VERSION, DomId, Errno};

/// Digest §1.1.
const DIGEST_HYPERCALLS: &[(u32, &str)] = &[
    (0, "set_trap_table"),
    (1, "mmu_update"),
    (2, "set_gdt"),
    (3, "stack_switch"),
    (4, "set_callbacks"),
    (5, "fpu_taskswitch"),
    (6, "sched_op_compat"),
    (7, "platform_op"),
    (8, "set_debugreg"),
    (9, "get_debugreg"),
    (10, "update_descriptor"),
    (12, "memory_op"),
    (13, "multicall"),
    (14, "update_va_mapping"),
    (15, "set_timer_op"),
    (16, "event_channel_op_compat"),
    (17, "xen_version"),
    (18, "console_io"),
    (19, "physdev_op_compat"),
    (20, "grant_table_op"),
    (21, "vm_assist"),
    (22, "update_va_mapping_otherdomain"),
    (23, "iret"),
    (24, "vcpu_op"),
    (25, "set_segment_base"),
    (26, "mmuext_op"),
    (27, "xsm_op"),
    (28, "nmi_op"),
    (29, "sched_op"),
    (30, "callback_op"),
    (31, "xenoprof_op"),
    (32, "event_channel_op"),
    (33, "physdev_op"),
    (34, "hvm_op"),
    (35, "sysctl"),
    (36, "domctl"),
    (37, "kexec_op"),
    (38, "tmem_op"),
    (39, "argo_op"),
    (40, "xenpmu_op"),
    (41, "dm_op"),
    (42, "hypfs_op"),
    (48, "mca"),
    (49, "paging_domctl_cont"),
];

#[test]
fn hypercall_numbers() {
    let table: Vec<_> = HYPERCALLS.iter().map(|d| (d.nr, d.name)).collect();
    assert_eq!(table, DIGEST_HYPERCALLS);
    let argc = |n: &str| HYPERCALLS.iter().find(|d| d.name == n).unwrap().args.len();
    // Digest §1.1/§5/§6 argument lists.
    assert_eq!(argc("mmu_update"), 4);
    assert_eq!(argc("mmuext_op"), 4);
    assert_eq!(argc("update_va_mapping"), 3);
    assert_eq!(argc("update_va_mapping_otherdomain"), 4);
    assert_eq!(argc("console_io"), 3);
    assert_eq!(argc("grant_table_op"), 3);
    assert_eq!(argc("vcpu_op"), 3);
    assert_eq!(argc("iret"), 0);
    assert_eq!(argc("argo_op"), 5);
    assert_eq!(INTERFACE_VERSION, 0x0004_0E00);
    assert_eq!(ABI_VERSION, "1.1.0");
}

fn nrs(rows: &[SubOpDesc]) -> Vec<(u32, &'static str)> {
    rows.iter().map(|d| (d.nr, d.name)).collect()
}

#[test]
fn subop_numbers() {
    assert_eq!(
        nrs(MmuCmd::ALL),
        [
            (0, "NORMAL_PT_UPDATE"),
            (1, "MACHPHYS_UPDATE"),
            (2, "PT_UPDATE_PRESERVE_AD"),
            (3, "PT_UPDATE_NO_TRANSLATE")
        ]
    );
    assert_eq!(
        nrs(MmuextCmd::ALL),
        [
            (0, "PIN_L1_TABLE"),
            (1, "PIN_L2_TABLE"),
            (2, "PIN_L3_TABLE"),
            (3, "PIN_L4_TABLE"),
            (4, "UNPIN_TABLE"),
            (5, "NEW_BASEPTR"),
            (6, "TLB_FLUSH_LOCAL"),
            (7, "INVLPG_LOCAL"),
            (8, "TLB_FLUSH_MULTI"),
            (9, "INVLPG_MULTI"),
            (10, "TLB_FLUSH_ALL"),
            (11, "INVLPG_ALL"),
            (12, "FLUSH_CACHE"),
            (13, "SET_LDT"),
            (15, "NEW_USER_BASEPTR"),
            (16, "CLEAR_PAGE"),
            (17, "COPY_PAGE"),
            (18, "FLUSH_CACHE_GLOBAL"),
            (19, "MARK_SUPER"),
            (20, "UNMARK_SUPER"),
        ]
    );
    assert_eq!(
        nrs(XenmemOp::ALL)[..14],
        [
            (0, "increase_reservation"),
            (1, "decrease_reservation"),
            (2, "maximum_ram_page"),
            (3, "current_reservation"),
            (4, "maximum_reservation"),
            (5, "machphys_mfn_list"),
            (6, "populate_physmap"),
            (7, "add_to_physmap"),
            (9, "memory_map"),
            (10, "machine_memory_map"),
            (11, "exchange"),
            (12, "machphys_mapping"),
            (13, "set_memory_map"),
            (14, "maximum_gpfn"),
        ]
    );
    let mem = nrs(XenmemOp::ALL);
    for (n, name) in [
        (15, "remove_from_physmap"),
        (16, "set_pod_target"),
        (17, "get_pod_target"),
        (23, "add_to_physmap_batch"),
        (24, "claim_pages"),
        (25, "machphys_compat_mfn_list"),
        (26, "get_vnumainfo"),
        (27, "reserved_device_memory_map"),
        (28, "acquire_resource"),
    ] {
        assert!(mem.contains(&(n, name)), "{name}");
    }
    assert_eq!(
        nrs(VcpuOp::ALL),
        [
            (0, "initialise"),
            (1, "up"),
            (2, "down"),
            (3, "is_up"),
            (4, "get_runstate_info"),
            (5, "register_runstate_memory_area"),
            (6, "set_periodic_timer"),
            (7, "stop_periodic_timer"),
            (8, "set_singleshot_timer"),
            (9, "stop_singleshot_timer"),
            (10, "register_vcpu_info"),
            (11, "send_nmi"),
            (12, "get_physid"),
            (13, "register_vcpu_time_memory_area"),
        ]
    );
    assert_eq!(
        nrs(SchedOp::ALL),
        [
            (0, "yield"),
            (1, "block"),
            (2, "shutdown"),
            (3, "poll"),
            (4, "remote_shutdown"),
            (5, "shutdown_code"),
            (6, "watchdog"),
            (7, "pin_override"),
        ]
    );
    assert_eq!(nrs(ConsoleIo::ALL), [(0, "write"), (1, "read")]);
    assert_eq!(
        nrs(XenVer::ALL),
        [
            (0, "version"),
            (1, "extraversion"),
            (2, "compile_info"),
            (3, "capabilities"),
            (4, "changeset"),
            (5, "platform_parameters"),
            (6, "get_features"),
            (7, "pagesize"),
            (8, "guest_handle"),
            (9, "commandline"),
            (10, "build_id"),
        ]
    );
    assert_eq!(
        nrs(EvtchnOp::ALL)[..14],
        [
            (0, "bind_interdomain"),
            (1, "bind_virq"),
            (2, "bind_pirq"),
            (3, "close"),
            (4, "send"),
            (5, "status"),
            (6, "alloc_unbound"),
            (7, "bind_ipi"),
            (8, "bind_vcpu"),
            (9, "unmask"),
            (10, "reset"),
            (11, "init_control"),
            (12, "expand_array"),
            (13, "set_priority"),
        ]
    );
    assert_eq!(
        nrs(GnttabOp::ALL),
        [
            (0, "map_grant_ref"),
            (1, "unmap_grant_ref"),
            (2, "setup_table"),
            (3, "dump_table"),
            (4, "transfer"),
            (5, "copy"),
            (6, "query_size"),
            (7, "unmap_and_replace"),
            (8, "set_version"),
            (9, "get_status_frames"),
            (10, "get_version"),
            (11, "swap_grant_ref"),
            (12, "cache_flush"),
        ]
    );
    assert_eq!(nrs(CallbackOp::ALL), [(0, "register"), (1, "unregister")]);
    assert_eq!(hypercall_abi::physdev::PhysdevOp::SetIopl as u32, 6);
}

#[test]
fn errno_values() {
    let digest: &[(&str, u16)] = &[
        ("EPERM", 1),
        ("ENOENT", 2),
        ("ESRCH", 3),
        ("EINTR", 4),
        ("EIO", 5),
        ("ENXIO", 6),
        ("E2BIG", 7),
        ("ENOEXEC", 8),
        ("EBADF", 9),
        ("ECHILD", 10),
        ("EAGAIN", 11),
        ("ENOMEM", 12),
        ("EACCES", 13),
        ("EFAULT", 14),
        ("EBUSY", 16),
        ("EEXIST", 17),
        ("EXDEV", 18),
        ("ENODEV", 19),
        ("ENOTDIR", 20),
        ("EISDIR", 21),
        ("EINVAL", 22),
        ("ENFILE", 23),
        ("EMFILE", 24),
        ("ENOSPC", 28),
        ("EROFS", 30),
        ("EMLINK", 31),
        ("EDOM", 33),
        ("ERANGE", 34),
        ("EDEADLK", 35),
        ("ENAMETOOLONG", 36),
        ("ENOLCK", 37),
        ("ENOSYS", 38),
        ("ENOTEMPTY", 39),
        ("ENODATA", 61),
        ("ETIME", 62),
        ("EBADMSG", 74),
        ("EOVERFLOW", 75),
        ("EILSEQ", 84),
        ("ERESTART", 85),
        ("ENOTSOCK", 88),
        ("EMSGSIZE", 90),
        ("EOPNOTSUPP", 95),
        ("EADDRINUSE", 98),
        ("EADDRNOTAVAIL", 99),
        ("ENOBUFS", 105),
        ("EISCONN", 106),
        ("ENOTCONN", 107),
        ("ETIMEDOUT", 110),
        ("ECONNREFUSED", 111),
    ];
    let ours: Vec<_> = Errno::ALL.iter().map(|(n, e)| (*n, e.get())).collect();
    assert_eq!(ours, digest);
    assert_eq!(Errno::EWOULDBLOCK, Errno::EAGAIN);
    assert_eq!(Errno::ENOSYS.encode(), 0u64.wrapping_sub(38));
}

#[test]
fn constants() {
    assert_eq!(
        [
            DomId::SELF.0,
            DomId::IO.0,
            DomId::XEN.0,
            DomId::COW.0,
            DomId::INVALID.0,
            DomId::IDLE.0
        ],
        [0x7FF0, 0x7FF1, 0x7FF2, 0x7FF3, 0x7FF4, 0x7FFF]
    );
    assert_eq!(DomId::MASK, 0x7FFF);
    assert_eq!(
        (FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_KERNEL_DS),
        (0xE033, 0xE02B, 0)
    );
    assert_eq!(
        (FLAT_USER_CS, FLAT_USER_SS, FLAT_USER_CS32),
        (0xE033, 0xE02B, 0xE023)
    );
    assert_eq!(FLAT_RING3_DS32, 0xE02B);
    assert_eq!(
        (
            FLAT_KERNEL_CS >> 3,
            FLAT_KERNEL_SS >> 3,
            FLAT_USER_CS32 >> 3
        ),
        (7174, 7173, 7172)
    );
    assert_eq!(FIRST_RESERVED_GDT_ENTRY, 7168);
    assert_eq!(HYPERVISOR_VIRT_START, 0xFFFF_8000_0000_0000);
    assert_eq!(HYPERVISOR_VIRT_END, 0xFFFF_8800_0000_0000);
    assert_eq!(MACH2PHYS_VIRT_END, 0xFFFF_8040_0000_0000);
    assert_eq!(MACH2PHYS_NR_ENTRIES, 1 << 35);
    assert_eq!((INVALID_M2P_ENTRY, SHARED_M2P_ENTRY), (!0, !0 - 1));
    assert_eq!(MMU_UPDATE_PREEMPTED, 0x8000_0000);
    assert_eq!(MEMOP_EXTENT_SHIFT, 6);
    assert_eq!(VgcfFlags::IN_SYSCALL.bits(), 0x100);
    assert_eq!(
        [
            VgcfFlags::I387_VALID,
            VgcfFlags::IN_KERNEL,
            VgcfFlags::FAILSAFE_DISABLES_EVENTS,
            VgcfFlags::SYSCALL_DISABLES_EVENTS,
            VgcfFlags::ONLINE
        ]
        .map(|f| f.bits()),
        [1, 4, 8, 16, 32]
    );
    assert_eq!(start_info::SifFlags::PM_MASK.bits(), 0xFF00);
    assert_eq!(start_info::START_INFO_MAGIC, b"xen-3.0-x86_64");
    assert_eq!(pte::PteFlags::GUEST_KERNEL.bits(), 1 << 52);
    assert_eq!(pte::PteFlags::GNTTAB.bits(), 1 << 62);
    assert_eq!(pte::PteFlags::NX.bits(), 1 << 63);
    assert_eq!(
        [
            hypercall_abi::mmu::UVMF_NONE,
            hypercall_abi::mmu::UVMF_TLB_FLUSH,
            hypercall_abi::mmu::UVMF_INVLPG,
            hypercall_abi::mmu::UVMF_ALL
        ],
        [0, 1, 2, 4]
    );
}

#[test]
fn xen_4_17_version_answers() {
    assert_eq!(XEN_VERSION, (4 << 16) | 17);
    assert_eq!(XEN_CAPABILITIES, "xen-3.0-x86_64 ");
    assert_eq!(XEN_PAGESIZE, 4096);
    // 4.17 for a PV64 domU: 5, 6, 7, 13, 17; +11 for the hardware domain.
    assert_eq!(
        PV_DOMU_FEATURES,
        1 << 5 | 1 << 6 | 1 << 7 | 1 << 13 | 1 << 17
    );
    assert_eq!(PV_HWDOM_FEATURES, PV_DOMU_FEATURES | 1 << 11);
    assert_eq!(XenFeature::DirectMapped as u32, 17);
    assert_eq!(XenFeature::MemoryOpVnodeSupported as u32, 13);
}

#[test]
fn event_and_callback_numbers() {
    assert_eq!(
        [
            Virq::Timer as u32,
            Virq::Debug as u32,
            Virq::Console as u32,
            Virq::DomExc as u32
        ],
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            Virq::Xenpmu as u32,
            Virq::Arch0 as u32,
            Virq::Arch7 as u32,
            NR_VIRQS
        ],
        [13, 16, 23, 24]
    );
    assert_eq!(EvtchnStat::Ipi as u32, 5);
    assert_eq!(EVTCHN_2L_NR_CHANNELS, 4096);
    assert_eq!(
        [
            CallbackType::Event,
            CallbackType::Failsafe,
            CallbackType::Syscall,
            CallbackType::Nmi,
            CallbackType::Sysenter,
            CallbackType::Syscall32
        ]
        .map(|t| t as u16),
        [0, 1, 2, 4, 5, 7]
    );
    assert_eq!(VmAssistType::M2pStrict as u32, 32);
    assert_eq!(ShutdownReason::SoftReset as u32, 5);
    assert_eq!(GntSt::NoSpace as i16, -13);
    assert_eq!(GtfFlags::SUB_PAGE.bits(), 1 << 8);
    assert_eq!(GntMapFlags::CONTAINS_PTE.bits(), 1 << 4);
    assert_eq!(GNTTAB_NR_RESERVED_ENTRIES, 8);
    assert_eq!(XenElfNote::HypercallPage as u32, 2);
    assert_eq!(XenElfNote::SupportedFeatures as u32, 17);
    assert_eq!(XenElfNote::CrashInfo as u32, 0x100_0001);
    assert_eq!(XsdSockmsgType::DirectoryPart as u32, 22);
    assert_eq!(XsdSockmsgType::ResetWatches as u32, 21);
    assert_eq!(XsdSockmsgType::Invalid as u32, 0xFFFF);
    assert_eq!(XenbusState::Reconfigured as u32, 8);
    assert_eq!(
        (
            BLKIF_OP_DISCARD,
            BLKIF_OP_INDIRECT,
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        ),
        (5, 6, 11)
    );
    assert_eq!(
        (NETIF_RSP_DROPPED, NETIF_RSP_NULL, XEN_NETIF_NR_SLOTS_MIN),
        (-2, 1, 18)
    );
}

/// Sizes from the digest, one per struct it gives.
#[test]
fn struct_sizes() {
    let sizes: &[(&str, usize, usize)] = &[
        ("start_info", size_of::<StartInfo>(), 1168),
        ("vcpu_info", size_of::<VcpuInfo>(), 64),
        ("vcpu_time_info", size_of::<VcpuTimeInfo>(), 32),
        ("shared_info", size_of::<SharedInfo>(), 3136),
        ("vcpu_runstate_info", size_of::<VcpuRunstateInfo>(), 48),
        ("mmu_update", size_of::<MmuUpdate>(), 16),
        ("mmuext_op", size_of::<MmuextOp>(), 24),
        ("multicall_entry", size_of::<MulticallEntry>(), 64),
        (
            "xen_memory_reservation",
            size_of::<XenMemoryReservation>(),
            32,
        ),
        ("xen_memory_exchange", size_of::<XenMemoryExchange>(), 72),
        ("xen_memory_domain", size_of::<XenMemoryDomain>(), 2),
        ("xen_machphys_mfn_list", size_of::<XenMachphysMfnList>(), 24),
        ("xen_machphys_mapping", size_of::<XenMachphysMapping>(), 24),
        ("xen_add_to_physmap", size_of::<XenAddToPhysmap>(), 24),
        ("xen_memory_map", size_of::<XenMemoryMap>(), 16),
        ("e820 entry", size_of::<E820Entry>(), 20),
        ("trap_info", size_of::<TrapInfo>(), 16),
        ("callback_register", size_of::<CallbackRegister>(), 16),
        ("iret_context", size_of::<IretContext>(), 72),
        (
            "vcpu_set_singleshot_timer",
            size_of::<VcpuSetSingleshotTimer>(),
            16,
        ),
        (
            "vcpu_register_vcpu_info",
            size_of::<VcpuRegisterVcpuInfo>(),
            16,
        ),
        ("sched_poll", size_of::<SchedPoll>(), 24),
        ("xen_compile_info", size_of::<XenCompileInfo>(), 144),
        ("cpu_user_regs", size_of::<CpuUserRegs>(), 200),
        ("vcpu_guest_context", size_of::<VcpuGuestContext>(), 5168),
        (
            "evtchn_bind_interdomain",
            size_of::<EvtchnBindInterdomain>(),
            12,
        ),
        ("evtchn_bind_virq", size_of::<EvtchnBindVirq>(), 12),
        ("evtchn_bind_pirq", size_of::<EvtchnBindPirq>(), 12),
        ("evtchn_close", size_of::<EvtchnClose>(), 4),
        ("evtchn_send", size_of::<EvtchnSend>(), 4),
        ("evtchn_status", size_of::<EvtchnStatus>(), 24),
        ("evtchn_alloc_unbound", size_of::<EvtchnAllocUnbound>(), 8),
        ("evtchn_bind_ipi", size_of::<EvtchnBindIpi>(), 8),
        ("evtchn_bind_vcpu", size_of::<EvtchnBindVcpu>(), 8),
        ("evtchn_unmask", size_of::<EvtchnUnmask>(), 4),
        ("evtchn_reset", size_of::<EvtchnReset>(), 2),
        ("evtchn_init_control", size_of::<EvtchnInitControl>(), 24),
        ("evtchn_expand_array", size_of::<EvtchnExpandArray>(), 8),
        ("evtchn_set_priority", size_of::<EvtchnSetPriority>(), 8),
        ("evtchn_op", size_of::<EvtchnOpCompat>(), 28),
        ("gnttab_map_grant_ref", size_of::<GnttabMapGrantRef>(), 32),
        (
            "gnttab_unmap_grant_ref",
            size_of::<GnttabUnmapGrantRef>(),
            24,
        ),
        ("gnttab_setup_table", size_of::<GnttabSetupTable>(), 24),
        ("gnttab_dump_table", size_of::<GnttabDumpTable>(), 4),
        ("gnttab_transfer", size_of::<GnttabTransfer>(), 24),
        ("gnttab_copy", size_of::<GnttabCopy>(), 40),
        ("gnttab_query_size", size_of::<GnttabQuerySize>(), 16),
        (
            "gnttab_unmap_and_replace",
            size_of::<GnttabUnmapAndReplace>(),
            24,
        ),
        ("gnttab_set_version", size_of::<GnttabSetVersion>(), 4),
        (
            "gnttab_get_status_frames",
            size_of::<GnttabGetStatusFrames>(),
            16,
        ),
        ("gnttab_get_version", size_of::<GnttabGetVersion>(), 8),
        ("gnttab_swap_grant_ref", size_of::<GnttabSwapGrantRef>(), 12),
        ("gnttab_cache_flush", size_of::<GnttabCacheFlush>(), 16),
        ("grant_entry_v1", size_of::<GrantEntryV1>(), 8),
        ("grant_entry_v2", size_of::<GrantEntryV2>(), 16),
        ("xencons_interface", size_of::<XenconsInterface>(), 3088),
        (
            "xenstore_domain_interface",
            size_of::<XenstoreDomainInterface>(),
            2076,
        ),
        ("xsd_sockmsg", size_of::<XsdSockmsg>(), 16),
        ("blkif_request_segment", size_of::<BlkifRequestSegment>(), 8),
        ("blkif_request", size_of::<BlkifRequest>(), 112),
        (
            "blkif_request_discard",
            size_of::<BlkifRequestDiscard>(),
            32,
        ),
        (
            "blkif_request_indirect",
            size_of::<BlkifRequestIndirect>(),
            64,
        ),
        ("blkif_response", size_of::<BlkifResponse>(), 16),
        ("netif_tx_request", size_of::<NetifTxRequest>(), 12),
        ("netif_tx_response", size_of::<NetifTxResponse>(), 4),
        ("netif_rx_request", size_of::<NetifRxRequest>(), 8),
        ("netif_rx_response", size_of::<NetifRxResponse>(), 8),
        ("netif_extra_info", size_of::<NetifExtraInfo>(), 8),
    ];
    let bad: Vec<_> = sizes.iter().filter(|(_, got, want)| got != want).collect();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(
        (BLKIF_RING_SIZE, NETIF_TX_RING_SIZE, NETIF_RX_RING_SIZE),
        (32, 256, 256)
    );
}

/// The digest's offset tables for the structures a guest touches first.
#[test]
fn key_offsets() {
    assert_eq!(offset_of!(StartInfo, shared_info), 40);
    assert_eq!(offset_of!(StartInfo, store_mfn), 56);
    assert_eq!(offset_of!(StartInfo, console.mfn), 72);
    assert_eq!(offset_of!(StartInfo, console.evtchn), 80);
    assert_eq!(offset_of!(StartInfo, pt_base), 88);
    assert_eq!(offset_of!(StartInfo, mfn_list), 104);
    assert_eq!(offset_of!(StartInfo, cmd_line), 128);
    assert_eq!(offset_of!(StartInfo, first_p2m_pfn), 1152);
    assert_eq!(offset_of!(VcpuInfo, evtchn_upcall_mask), 1);
    assert_eq!(offset_of!(VcpuInfo, evtchn_pending_sel), 8);
    assert_eq!(offset_of!(VcpuInfo, arch.cr2), 16);
    assert_eq!(offset_of!(VcpuInfo, time), 32);
    assert_eq!(offset_of!(VcpuTimeInfo, tsc_to_system_mul), 24);
    assert_eq!(offset_of!(VcpuTimeInfo, tsc_shift), 28);
    assert_eq!(offset_of!(VcpuTimeInfo, flags), 29);
    assert_eq!(offset_of!(SharedInfo, evtchn_pending), 0x800);
    assert_eq!(offset_of!(SharedInfo, evtchn_mask), 0xA00);
    assert_eq!(offset_of!(SharedInfo, wc_version), 0xC00);
    assert_eq!(offset_of!(SharedInfo, wc_sec_hi), 0xC0C);
    assert_eq!(offset_of!(SharedInfo, arch.max_pfn), 0xC10);
    assert_eq!(offset_of!(SharedInfo, arch.p2m_generation), 0xC38);
    assert_eq!(offset_of!(IretContext, flags), 24);
    assert_eq!(offset_of!(IretContext, ss), 64);
    assert_eq!(offset_of!(CpuUserRegs, saved_upcall_mask), 140);
    assert_eq!(offset_of!(VcpuGuestContext, user_regs), 520);
    assert_eq!(offset_of!(VcpuGuestContext, trap_ctxt), 720);
    assert_eq!(offset_of!(VcpuGuestContext, ctrlreg), 4984);
    assert_eq!(offset_of!(VcpuGuestContext, gs_base_user), 5160);
    assert_eq!(offset_of!(MmuextOp, arg1), 8);
    assert_eq!(offset_of!(MmuextOp, arg2), 16);
    assert_eq!(offset_of!(MulticallEntry, args), 16);
    assert_eq!(offset_of!(GnttabMapGrantRef, status), 18);
    assert_eq!(offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);
    assert_eq!(offset_of!(GnttabCopy, len), 32);
    assert_eq!(offset_of!(GnttabCopy, status), 36);
    assert_eq!(offset_of!(EvtchnStatus, u), 16);
    assert_eq!(offset_of!(XenMemoryReservation, domid), 24);
    assert_eq!(offset_of!(XenMachphysMfnList, nr_extents), 16);
    assert_eq!(offset_of!(XenconsInterface, in_cons), 3072);
    assert_eq!(offset_of!(XenconsInterface, out_prod), 3084);
    assert_eq!(offset_of!(XenstoreDomainInterface, req_cons), 2048);
    assert_eq!(offset_of!(XenstoreDomainInterface, error), 2072);
    assert_eq!(offset_of!(BlkifRequest, seg), 24);
    assert_eq!(offset_of!(BlkifRequestIndirect, indirect_grefs), 28);
    assert_eq!(offset_of!(BlkifResponse, status), 10);
    assert_eq!(offset_of!(NetifRxRequest, gref), 4);
    assert_eq!(offset_of!(NetifRxResponse, status), 6);
    assert_eq!(offset_of!(SchedPoll, timeout), 16);
    assert_eq!(offset_of!(SchedRemoteShutdown, reason), 4);
    assert_eq!(offset_of!(VcpuRunstateInfo, time), 16);
    assert_eq!(offset_of!(CallbackRegister, address), 8);
}

#[test]
fn hypercall_page_layout() {
    let page = hypercall_page_image();
    assert_eq!(
        &page[17 * 32..17 * 32 + 14],
        &[
            0x51, 0x41, 0x53, 0xB8, 17, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3
        ]
    );
    assert_eq!(
        &page[0x2E0..0x2E0 + 11],
        &[0x51, 0x41, 0x53, 0x50, 0xB8, 0x17, 0, 0, 0, 0x0F, 0x05]
    );
    assert!(page[0x2E0 + 11..0x300].iter().all(|&b| b == 0xCC));
}

#[test]
fn families_are_listed_once_with_unique_numbers() {
    use hypercall_abi::subop::FAMILIES;
    let prefixes: Vec<_> = FAMILIES.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        prefixes,
        [
            "MMU_",
            "MMUEXT_",
            "XENMEM_",
            "CONSOLEIO_",
            "XENVER_",
            "VMASST_CMD_",
            "EVTCHNOP_",
            "GNTTABOP_",
            "VCPUOP_",
            "SCHEDOP_",
            "CALLBACKOP_",
            "XENNMI_",
            "PHYSDEVOP_",
        ]
    );
    for (prefix, rows) in FAMILIES {
        let mut nrs: Vec<_> = rows.iter().map(|d| d.nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), rows.len(), "{prefix}");
    }
}
