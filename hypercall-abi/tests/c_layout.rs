//! The C probe: compile a program against Xen 4.17's public headers
//! (`/usr/include/xen`, from Debian's `libxen-dev`) that prints sizes,
//! alignments, offsets and constants, and compare every value with this
//! crate's. The programs are compiled for several interface versions, to
//! check the interface-version redirections as well.
//!
//! Fails (does not skip) when the headers are missing: run `scripts/setup`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::mem::{align_of, offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

use hypercall_abi::callback::{self, CallbackOp, CallbackType, NmiOp};
use hypercall_abi::console::ConsoleIo;
use hypercall_abi::elfnote::{self, XenElfNote};
use hypercall_abi::errno::Errno;
use hypercall_abi::evtchn::{self, EvtchnOp, EvtchnStat, Virq};
use hypercall_abi::gnttab::{self, GntMapFlags, GntSt, GnttabOp, GtfFlags};
use hypercall_abi::hypercall::{HYPERCALLS, Hypercall, INTERFACE_VERSION};
use hypercall_abi::io::{blkif, console, netif, ring, xenbus::XenbusState, xenstore};
use hypercall_abi::memory::{self, XenMapSpace, XenmemOp};
use hypercall_abi::mmu::{self, MmuCmd, MmuextCmd};
use hypercall_abi::physdev::{self, PhysdevOp};
use hypercall_abi::sched::{self, SchedOp, ShutdownReason};
use hypercall_abi::subop::SubOpDesc;
use hypercall_abi::vcpu::{self, VcpuOp};
use hypercall_abi::version::{self, XenFeature, XenVer};
use hypercall_abi::vm_assist::{VmAssistCmd, VmAssistType};
use hypercall_abi::xen::{self, arch, pte, runstate, shared_info, start_info};
use hypercall_abi::{DomId, types};

const HEADERS: &[&str] = &[
    "xen.h",
    "event_channel.h",
    "grant_table.h",
    "memory.h",
    "sched.h",
    "vcpu.h",
    "callback.h",
    "physdev.h",
    "version.h",
    "features.h",
    "nmi.h",
    "elfnote.h",
    "errno.h",
    "io/ring.h",
    "io/console.h",
    "io/xs_wire.h",
    "io/xenbus.h",
    "io/blkif.h",
    "io/netif.h",
];

/// One value to compare: a C expression and what this crate says.
struct Check {
    c: String,
    rust: i128,
    /// Only defined by the headers for `__XEN_TOOLS__`.
    tools: bool,
    /// A macro that may be undefined: print -1 then.
    optional: bool,
}

#[derive(Default)]
struct Checks(Vec<Check>);

impl Checks {
    fn val(&mut self, c: impl Into<String>, rust: impl TryInto<i128>) {
        let rust = rust
            .try_into()
            .unwrap_or_else(|_| panic!("value out of range"));
        self.0.push(Check {
            c: c.into(),
            rust,
            tools: false,
            optional: false,
        });
    }

    fn tools(&mut self, c: impl Into<String>, rust: i128) {
        self.0.push(Check {
            c: c.into(),
            rust,
            tools: true,
            optional: false,
        });
    }

    fn maybe(&mut self, c: impl Into<String>, rust: Option<i128>) {
        self.0.push(Check {
            c: c.into(),
            rust: rust.unwrap_or(-1),
            tools: false,
            optional: true,
        });
    }
}

/// Size, alignment and field offsets of a Rust layout against a C type.
macro_rules! layout {
    ($c:ident, $t:ty, $cty:literal $(, $($f:ident).+ => $cf:literal)* $(,)?) => {{
        $c.val(format!("sizeof({})", $cty), size_of::<$t>());
        $c.val(format!("_Alignof({})", $cty), align_of::<$t>());
        $( $c.val(format!("offsetof({}, {})", $cty, $cf), offset_of!($t, $($f).+)); )*
    }};
}

/// Sub-ops the headers define only for the hypervisor itself (`__XEN__`).
const HYPERVISOR_INTERNAL: &[(&str, &str)] = &[("EVTCHNOP_", "reset_cont")];

/// Sub-op numbers: `PREFIX name` for every row available at INTERFACE_VERSION.
fn subops(c: &mut Checks, prefix: &str, rows: &[SubOpDesc], tools_only: &[&str]) {
    for d in rows {
        if HYPERVISOR_INTERNAL.contains(&(prefix, d.name)) {
            continue;
        }
        let name = format!("{prefix}{}", d.name);
        if tools_only.contains(&d.name) {
            c.tools(name, d.nr.into());
        } else {
            c.val(name, d.nr);
        }
    }
}

fn hypercall_c_name(name: &str) -> String {
    match name {
        "mca" => "__HYPERVISOR_arch_0".into(),
        "paging_domctl_cont" => "__HYPERVISOR_arch_1".into(),
        n => format!("__HYPERVISOR_{n}"),
    }
}

fn numbers(c: &mut Checks) {
    c.val("__XEN_LATEST_INTERFACE_VERSION__", INTERFACE_VERSION);
    for d in HYPERCALLS {
        c.val(hypercall_c_name(d.name), d.nr);
    }
    subops(c, "MMU_", MmuCmd::ALL, &[]);
    subops(c, "MMUEXT_", MmuextCmd::ALL, &[]);
    subops(c, "EVTCHNOP_", EvtchnOp::ALL, &[]);
    subops(c, "GNTTABOP_", GnttabOp::ALL, &[]);
    subops(
        c,
        "XENMEM_",
        XenmemOp::ALL,
        &[
            "get_sharing_freed_pages",
            "get_sharing_shared_pages",
            "paging_op",
            "access_op",
            "sharing_op",
            "claim_pages",
            "reserved_device_memory_map",
        ],
    );
    subops(c, "SCHEDOP_", SchedOp::ALL, &[]);
    subops(c, "VCPUOP_", VcpuOp::ALL, &[]);
    subops(c, "CONSOLEIO_", ConsoleIo::ALL, &[]);
    subops(c, "XENVER_", XenVer::ALL, &[]);
    subops(c, "CALLBACKOP_", CallbackOp::ALL, &[]);
    subops(c, "XENNMI_", NmiOp::ALL, &[]);
    subops(c, "PHYSDEVOP_", PhysdevOp::ALL, &[]);
    subops(c, "VMASST_CMD_", VmAssistCmd::ALL, &[]);

    for (name, e) in Errno::ALL {
        if !matches!(*name, "EINTR" | "ERESTART") {
            c.val(format!("XEN_{name}"), e.get());
        }
    }
    c.val("XEN_EWOULDBLOCK", Errno::EWOULDBLOCK.get());
    c.val("XEN_EDEADLOCK", Errno::EDEADLOCK.get());

    for (n, d) in [
        ("SELF", DomId::SELF),
        ("IO", DomId::IO),
        ("XEN", DomId::XEN),
        ("COW", DomId::COW),
        ("INVALID", DomId::INVALID),
        ("IDLE", DomId::IDLE),
        ("FIRST_RESERVED", DomId::FIRST_RESERVED),
    ] {
        c.val(format!("DOMID_{n}"), d.0);
    }
    c.val("DOMID_MASK", DomId::MASK);

    for (n, v) in [
        ("FLAT_RING3_CS32", xen::FLAT_RING3_CS32),
        ("FLAT_RING3_CS64", xen::FLAT_RING3_CS64),
        ("FLAT_RING3_DS32", xen::FLAT_RING3_DS32),
        ("FLAT_RING3_DS64", xen::FLAT_RING3_DS64),
        ("FLAT_RING3_SS32", xen::FLAT_RING3_SS32),
        ("FLAT_RING3_SS64", xen::FLAT_RING3_SS64),
        ("FLAT_KERNEL_CS", xen::FLAT_KERNEL_CS),
        ("FLAT_KERNEL_CS32", xen::FLAT_KERNEL_CS32),
        ("FLAT_KERNEL_DS", xen::FLAT_KERNEL_DS),
        ("FLAT_KERNEL_DS32", xen::FLAT_KERNEL_DS32),
        ("FLAT_KERNEL_SS", xen::FLAT_KERNEL_SS),
        ("FLAT_KERNEL_SS32", xen::FLAT_KERNEL_SS32),
        ("FLAT_USER_CS", xen::FLAT_USER_CS),
        ("FLAT_USER_CS32", xen::FLAT_USER_CS32),
        ("FLAT_USER_DS", xen::FLAT_USER_DS),
        ("FLAT_USER_DS32", xen::FLAT_USER_DS32),
        ("FLAT_USER_SS", xen::FLAT_USER_SS),
        ("FLAT_USER_SS32", xen::FLAT_USER_SS32),
    ] {
        c.val(n, v);
    }
    c.val("HYPERVISOR_VIRT_START", xen::HYPERVISOR_VIRT_START);
    c.val("HYPERVISOR_VIRT_END", xen::HYPERVISOR_VIRT_END);
    c.val("MACH2PHYS_VIRT_START", xen::MACH2PHYS_VIRT_START);
    c.val("MACH2PHYS_VIRT_END", xen::MACH2PHYS_VIRT_END);
    c.val("MACH2PHYS_NR_ENTRIES", xen::MACH2PHYS_NR_ENTRIES);
    c.val("FIRST_RESERVED_GDT_PAGE", xen::FIRST_RESERVED_GDT_PAGE);
    c.val("FIRST_RESERVED_GDT_BYTE", xen::FIRST_RESERVED_GDT_BYTE);
    c.val("FIRST_RESERVED_GDT_ENTRY", xen::FIRST_RESERVED_GDT_ENTRY);
    c.val("XEN_LEGACY_MAX_VCPUS", xen::LEGACY_MAX_VCPUS);
    c.val("SEGBASE_FS", xen::SEGBASE_FS);
    c.val("SEGBASE_GS_USER", xen::SEGBASE_GS_USER);
    c.val("SEGBASE_GS_KERNEL", xen::SEGBASE_GS_KERNEL);
    c.val("SEGBASE_GS_USER_SEL", xen::SEGBASE_GS_USER_SEL);
    c.val(
        "xen_pfn_to_cr3(0x1234)",
        xen::pfn_to_cr3(types::Mfn(0x1234)),
    );

    use arch::VgcfFlags as V;
    c.val("VGCF_i387_valid", V::I387_VALID.bits());
    c.val("VGCF_in_kernel", V::IN_KERNEL.bits());
    c.val(
        "VGCF_failsafe_disables_events",
        V::FAILSAFE_DISABLES_EVENTS.bits(),
    );
    c.val(
        "VGCF_syscall_disables_events",
        V::SYSCALL_DISABLES_EVENTS.bits(),
    );
    c.val("VGCF_online", V::ONLINE.bits());
    c.val("VGCF_in_syscall", V::IN_SYSCALL.bits());

    use start_info::SifFlags as S;
    c.val("SIF_PRIVILEGED", S::PRIVILEGED.bits());
    c.val("SIF_INITDOMAIN", S::INITDOMAIN.bits());
    c.val("SIF_MULTIBOOT_MOD", S::MULTIBOOT_MOD.bits());
    c.val("SIF_MOD_START_PFN", S::MOD_START_PFN.bits());
    c.val("SIF_VIRT_P2M_4TOOLS", S::VIRT_P2M_4TOOLS.bits());
    c.val("SIF_PM_MASK", S::PM_MASK.bits());
    c.val("MAX_GUEST_CMDLINE", start_info::MAX_GUEST_CMDLINE);
    c.val(
        "XEN_PVCLOCK_TSC_STABLE_BIT",
        shared_info::PVCLOCK_TSC_STABLE_BIT,
    );
    c.val(
        "XEN_PVCLOCK_GUEST_STOPPED",
        shared_info::PVCLOCK_GUEST_STOPPED,
    );

    c.val("UVMF_NONE", mmu::UVMF_NONE);
    c.val("UVMF_TLB_FLUSH", mmu::UVMF_TLB_FLUSH);
    c.val("UVMF_INVLPG", mmu::UVMF_INVLPG);
    c.val("UVMF_FLUSHTYPE_MASK", mmu::UVMF_FLUSHTYPE_MASK);
    c.val("UVMF_MULTI", mmu::UVMF_MULTI);
    c.val("UVMF_LOCAL", mmu::UVMF_LOCAL);
    c.val("UVMF_ALL", mmu::UVMF_ALL);

    for n in 0..32 {
        if let Some(v) = Virq::from_nr(n) {
            let name = match v {
                Virq::Timer => "TIMER",
                Virq::Debug => "DEBUG",
                Virq::Console => "CONSOLE",
                Virq::DomExc => "DOM_EXC",
                Virq::Tbuf => "TBUF",
                Virq::Debugger => "DEBUGGER",
                Virq::Xenoprof => "XENOPROF",
                Virq::ConRing => "CON_RING",
                Virq::PcpuState => "PCPU_STATE",
                Virq::MemEvent => "MEM_EVENT",
                Virq::Argo => "ARGO",
                Virq::Enomem => "ENOMEM",
                Virq::Xenpmu => "XENPMU",
                _ => "",
            };
            let name = if name.is_empty() {
                format!("ARCH_{}", n - 16)
            } else {
                name.into()
            };
            c.val(format!("VIRQ_{name}"), v as u32);
        }
    }
    c.val("NR_VIRQS", evtchn::NR_VIRQS);
    for (n, s) in [
        ("closed", EvtchnStat::Closed),
        ("unbound", EvtchnStat::Unbound),
        ("interdomain", EvtchnStat::Interdomain),
        ("pirq", EvtchnStat::Pirq),
        ("virq", EvtchnStat::Virq),
        ("ipi", EvtchnStat::Ipi),
    ] {
        c.val(format!("EVTCHNSTAT_{n}"), s as u32);
    }
    c.val("EVTCHN_2L_NR_CHANNELS", evtchn::EVTCHN_2L_NR_CHANNELS);
    c.val("BIND_PIRQ__WILL_SHARE", evtchn::BIND_PIRQ_WILL_SHARE);
    c.val("EVTCHN_FIFO_PRIORITY_MAX", evtchn::EVTCHN_FIFO_PRIORITY_MAX);
    c.val(
        "EVTCHN_FIFO_PRIORITY_DEFAULT",
        evtchn::EVTCHN_FIFO_PRIORITY_DEFAULT,
    );
    c.val("EVTCHN_FIFO_PRIORITY_MIN", evtchn::EVTCHN_FIFO_PRIORITY_MIN);
    c.val("EVTCHN_FIFO_MAX_QUEUES", evtchn::EVTCHN_FIFO_MAX_QUEUES);
    c.val("EVTCHN_FIFO_PENDING", evtchn::EVTCHN_FIFO_PENDING);
    c.val("EVTCHN_FIFO_MASKED", evtchn::EVTCHN_FIFO_MASKED);
    c.val("EVTCHN_FIFO_LINKED", evtchn::EVTCHN_FIFO_LINKED);
    c.val("EVTCHN_FIFO_BUSY", evtchn::EVTCHN_FIFO_BUSY);
    c.val("EVTCHN_FIFO_LINK_BITS", evtchn::EVTCHN_FIFO_LINK_BITS);
    c.val("EVTCHN_FIFO_LINK_MASK", evtchn::EVTCHN_FIFO_LINK_MASK);
    c.val("EVTCHN_FIFO_NR_CHANNELS", evtchn::EVTCHN_FIFO_NR_CHANNELS);

    c.val("GTF_invalid", GtfFlags::INVALID.bits());
    c.val("GTF_permit_access", GtfFlags::PERMIT_ACCESS.bits());
    c.val("GTF_accept_transfer", GtfFlags::ACCEPT_TRANSFER.bits());
    c.val("GTF_transitive", GtfFlags::TRANSITIVE.bits());
    c.val("GTF_type_mask", GtfFlags::TYPE_MASK.bits());
    c.val("GTF_readonly", GtfFlags::READONLY.bits());
    c.val("GTF_reading", GtfFlags::READING.bits());
    c.val("GTF_writing", GtfFlags::WRITING.bits());
    c.val("GTF_PWT", GtfFlags::PWT.bits());
    c.val("GTF_PCD", GtfFlags::PCD.bits());
    c.val("GTF_PAT", GtfFlags::PAT.bits());
    c.val("GTF_sub_page", GtfFlags::SUB_PAGE.bits());
    c.val(
        "GTF_transfer_committed",
        GtfFlags::TRANSFER_COMMITTED.bits(),
    );
    c.val(
        "GTF_transfer_completed",
        GtfFlags::TRANSFER_COMPLETED.bits(),
    );
    c.val("GNTMAP_device_map", GntMapFlags::DEVICE_MAP.bits());
    c.val("GNTMAP_host_map", GntMapFlags::HOST_MAP.bits());
    c.val("GNTMAP_readonly", GntMapFlags::READONLY.bits());
    c.val(
        "GNTMAP_application_map",
        GntMapFlags::APPLICATION_MAP.bits(),
    );
    c.val("GNTMAP_contains_pte", GntMapFlags::CONTAINS_PTE.bits());
    c.val(
        "GNTMAP_guest_avail_mask",
        GntMapFlags::GUEST_AVAIL_MASK.bits(),
    );
    let gntst = [
        "okay",
        "general_error",
        "bad_domain",
        "bad_gntref",
        "bad_handle",
        "bad_virt_addr",
        "bad_dev_addr",
        "no_device_space",
        "permission_denied",
        "bad_page",
        "bad_copy_arg",
        "address_too_big",
        "eagain",
        "no_space",
    ];
    for (v, n) in (0i16..).zip(gntst) {
        let s = GntSt::from_raw(-v).unwrap();
        c.val(format!("GNTST_{n}"), s as i16);
    }
    c.val("GNTCOPY_source_gref", gnttab::GNTCOPY_SOURCE_GREF);
    c.val("GNTCOPY_dest_gref", gnttab::GNTCOPY_DEST_GREF);
    c.val("GNTTAB_CACHE_CLEAN", gnttab::GNTTAB_CACHE_CLEAN);
    c.val("GNTTAB_CACHE_INVAL", gnttab::GNTTAB_CACHE_INVAL);
    c.val("GNTTAB_CACHE_SOURCE_GREF", gnttab::GNTTAB_CACHE_SOURCE_GREF);
    c.val(
        "GNTTAB_NR_RESERVED_ENTRIES",
        gnttab::GNTTAB_NR_RESERVED_ENTRIES,
    );
    c.val("GNTTAB_RESERVED_CONSOLE", gnttab::GNTTAB_RESERVED_CONSOLE.0);
    c.val(
        "GNTTAB_RESERVED_XENSTORE",
        gnttab::GNTTAB_RESERVED_XENSTORE.0,
    );

    c.val(
        "XENMEMF_address_bits(0xFF)",
        memory::XENMEMF_ADDRESS_BITS_MASK,
    );
    c.val("XENMEMF_node(3)", memory::xenmemf_node(3));
    c.val(
        "XENMEMF_populate_on_demand",
        memory::XENMEMF_POPULATE_ON_DEMAND,
    );
    c.val(
        "XENMEMF_exact_node_request",
        memory::XENMEMF_EXACT_NODE_REQUEST,
    );
    c.val("XENMEMF_vnode", memory::XENMEMF_VNODE);
    for (n, s) in [
        ("shared_info", XenMapSpace::SharedInfo),
        ("grant_table", XenMapSpace::GrantTable),
        ("gmfn", XenMapSpace::Gmfn),
        ("gmfn_range", XenMapSpace::GmfnRange),
        ("gmfn_foreign", XenMapSpace::GmfnForeign),
        ("dev_mmio", XenMapSpace::DevMmio),
    ] {
        c.val(format!("XENMAPSPACE_{n}"), s as u32);
    }
    c.val(
        "XENMAPIDX_grant_table_status",
        memory::XENMAPIDX_GRANT_TABLE_STATUS,
    );

    for n in 0..=5 {
        let r = ShutdownReason::from_raw(n).unwrap();
        let name = [
            "poweroff",
            "reboot",
            "suspend",
            "crash",
            "watchdog",
            "soft_reset",
        ][n as usize];
        c.val(format!("SHUTDOWN_{name}"), r as u32);
    }
    c.val("SHUTDOWN_MAX", sched::SHUTDOWN_MAX);
    c.val("RUNSTATE_running", runstate::RUNSTATE_RUNNING);
    c.val("RUNSTATE_runnable", runstate::RUNSTATE_RUNNABLE);
    c.val("RUNSTATE_blocked", runstate::RUNSTATE_BLOCKED);
    c.val("RUNSTATE_offline", runstate::RUNSTATE_OFFLINE);
    c.val("XEN_RUNSTATE_UPDATE", runstate::XEN_RUNSTATE_UPDATE);
    c.val("VCPU_SSHOTTMR_future", vcpu::VCPU_SSHOTTMR_FUTURE);

    for (n, t) in [
        ("event", CallbackType::Event),
        ("failsafe", CallbackType::Failsafe),
        ("syscall", CallbackType::Syscall),
        ("sysenter_deprecated", CallbackType::SysenterDeprecated),
        ("nmi", CallbackType::Nmi),
        ("sysenter", CallbackType::Sysenter),
        ("syscall32", CallbackType::Syscall32),
    ] {
        c.val(format!("CALLBACKTYPE_{n}"), t as u16);
    }
    c.val("CALLBACKF_mask_events", callback::CALLBACKF_MASK_EVENTS);
    c.val("XEN_NMIREASON_io_error", callback::XEN_NMIREASON_IO_ERROR);
    c.val("XEN_NMIREASON_pci_serr", callback::XEN_NMIREASON_PCI_SERR);
    c.val("XEN_NMIREASON_unknown", callback::XEN_NMIREASON_UNKNOWN);
    c.val("XENIRQSTAT_needs_eoi", physdev::XENIRQSTAT_NEEDS_EOI);
    c.val("XENIRQSTAT_shared", physdev::XENIRQSTAT_SHARED);
    c.val("MAP_PIRQ_TYPE_MSI", physdev::MAP_PIRQ_TYPE_MSI);
    c.val("MAP_PIRQ_TYPE_GSI", physdev::MAP_PIRQ_TYPE_GSI);
    c.val("MAP_PIRQ_TYPE_UNKNOWN", physdev::MAP_PIRQ_TYPE_UNKNOWN);
    c.val("MAP_PIRQ_TYPE_MSI_SEG", physdev::MAP_PIRQ_TYPE_MSI_SEG);
    c.val("MAP_PIRQ_TYPE_MULTI_MSI", physdev::MAP_PIRQ_TYPE_MULTI_MSI);

    for (n, t) in [
        ("4gb_segments", VmAssistType::FourGbSegments),
        ("4gb_segments_notify", VmAssistType::FourGbSegmentsNotify),
        ("writable_pagetables", VmAssistType::WritablePagetables),
        ("pae_extended_cr3", VmAssistType::PaeExtendedCr3),
        ("architectural_iopl", VmAssistType::ArchitecturalIopl),
        ("runstate_update_flag", VmAssistType::RunstateUpdateFlag),
        ("m2p_strict", VmAssistType::M2pStrict),
    ] {
        c.val(format!("VMASST_TYPE_{n}"), t as u32);
    }

    for f in XenFeature::ALL {
        // grant_map_identity (12) is commented out in 4.17's features.h.
        c.maybe(
            format!("XENFEAT_{}", f.name()),
            (f != XenFeature::GrantMapIdentity).then_some(f as i128),
        );
    }
    c.val("XENFEAT_NR_SUBMAPS", version::XENFEAT_NR_SUBMAPS);

    for n in (0..=18)
        .chain(0x100_0001..=0x100_0002)
        .chain(0x200_0000..=0x200_0003)
    {
        let note = XenElfNote::from_raw(n).unwrap();
        let name = match note {
            XenElfNote::Info => "INFO",
            XenElfNote::Entry => "ENTRY",
            XenElfNote::HypercallPage => "HYPERCALL_PAGE",
            XenElfNote::VirtBase => "VIRT_BASE",
            XenElfNote::PaddrOffset => "PADDR_OFFSET",
            XenElfNote::XenVersion => "XEN_VERSION",
            XenElfNote::GuestOs => "GUEST_OS",
            XenElfNote::GuestVersion => "GUEST_VERSION",
            XenElfNote::Loader => "LOADER",
            XenElfNote::PaeMode => "PAE_MODE",
            XenElfNote::Features => "FEATURES",
            XenElfNote::BsdSymtab => "BSD_SYMTAB",
            XenElfNote::HvStartLow => "HV_START_LOW",
            XenElfNote::L1MfnValid => "L1_MFN_VALID",
            XenElfNote::SuspendCancel => "SUSPEND_CANCEL",
            XenElfNote::InitP2m => "INIT_P2M",
            XenElfNote::ModStartPfn => "MOD_START_PFN",
            XenElfNote::SupportedFeatures => "SUPPORTED_FEATURES",
            XenElfNote::Phys32Entry => "PHYS32_ENTRY",
            XenElfNote::CrashInfo => "CRASH_INFO",
            XenElfNote::CrashRegs => "CRASH_REGS",
            XenElfNote::DumpcoreNone => "DUMPCORE_NONE",
            XenElfNote::DumpcoreHeader => "DUMPCORE_HEADER",
            XenElfNote::DumpcoreXenVersion => "DUMPCORE_XEN_VERSION",
            XenElfNote::DumpcoreFormatVersion => "DUMPCORE_FORMAT_VERSION",
        };
        c.val(format!("XEN_ELFNOTE_{name}"), n);
    }
    c.val("XEN_ELFNOTE_MAX", elfnote::XEN_ELFNOTE_MAX);

    use xenstore::XsdSockmsgType as X;
    for (n, t) in [
        ("CONTROL", X::Control),
        ("DEBUG", X::Control),
        ("DIRECTORY", X::Directory),
        ("READ", X::Read),
        ("GET_PERMS", X::GetPerms),
        ("WATCH", X::Watch),
        ("UNWATCH", X::Unwatch),
        ("TRANSACTION_START", X::TransactionStart),
        ("TRANSACTION_END", X::TransactionEnd),
        ("INTRODUCE", X::Introduce),
        ("RELEASE", X::Release),
        ("GET_DOMAIN_PATH", X::GetDomainPath),
        ("WRITE", X::Write),
        ("MKDIR", X::Mkdir),
        ("RM", X::Rm),
        ("SET_PERMS", X::SetPerms),
        ("WATCH_EVENT", X::WatchEvent),
        ("ERROR", X::Error),
        ("IS_DOMAIN_INTRODUCED", X::IsDomainIntroduced),
        ("RESUME", X::Resume),
        ("SET_TARGET", X::SetTarget),
        ("RESET_WATCHES", X::ResetWatches),
        ("DIRECTORY_PART", X::DirectoryPart),
        ("INVALID", X::Invalid),
    ] {
        c.val(format!("XS_{n}"), t as u32);
    }
    c.val("XS_TYPE_COUNT", xenstore::XS_TYPE_COUNT);
    c.val("XS_WATCH_PATH", xenstore::XS_WATCH_PATH);
    c.val("XS_WATCH_TOKEN", xenstore::XS_WATCH_TOKEN);
    c.val("XENSTORE_RING_SIZE", xenstore::XENSTORE_RING_SIZE);
    c.val("XENSTORE_PAYLOAD_MAX", xenstore::XENSTORE_PAYLOAD_MAX);
    c.val("XENSTORE_ABS_PATH_MAX", xenstore::XENSTORE_ABS_PATH_MAX);
    c.val("XENSTORE_REL_PATH_MAX", xenstore::XENSTORE_REL_PATH_MAX);
    c.val(
        "XENSTORE_SERVER_FEATURE_RECONNECTION",
        xenstore::XENSTORE_SERVER_FEATURE_RECONNECTION,
    );
    c.val(
        "XENSTORE_SERVER_FEATURE_ERROR",
        xenstore::XENSTORE_SERVER_FEATURE_ERROR,
    );
    c.val("XENSTORE_CONNECTED", xenstore::XENSTORE_CONNECTED);
    c.val("XENSTORE_RECONNECT", xenstore::XENSTORE_RECONNECT);
    c.val("XENSTORE_ERROR_NONE", xenstore::XENSTORE_ERROR_NONE);
    c.val("XENSTORE_ERROR_COMM", xenstore::XENSTORE_ERROR_COMM);
    c.val("XENSTORE_ERROR_RINGIDX", xenstore::XENSTORE_ERROR_RINGIDX);
    c.val("XENSTORE_ERROR_PROTO", xenstore::XENSTORE_ERROR_PROTO);

    for n in 0..=8 {
        let s = XenbusState::from_raw(n).unwrap();
        let name = [
            "Unknown",
            "Initialising",
            "InitWait",
            "Initialised",
            "Connected",
            "Closing",
            "Closed",
            "Reconfiguring",
            "Reconfigured",
        ][n as usize];
        c.val(format!("XenbusState{name}"), s as u32);
    }

    c.val("BLKIF_OP_READ", blkif::BLKIF_OP_READ);
    c.val("BLKIF_OP_WRITE", blkif::BLKIF_OP_WRITE);
    c.val("BLKIF_OP_WRITE_BARRIER", blkif::BLKIF_OP_WRITE_BARRIER);
    c.val("BLKIF_OP_FLUSH_DISKCACHE", blkif::BLKIF_OP_FLUSH_DISKCACHE);
    c.val("BLKIF_OP_RESERVED_1", blkif::BLKIF_OP_RESERVED_1);
    c.val("BLKIF_OP_DISCARD", blkif::BLKIF_OP_DISCARD);
    c.val("BLKIF_OP_INDIRECT", blkif::BLKIF_OP_INDIRECT);
    c.val(
        "BLKIF_MAX_SEGMENTS_PER_REQUEST",
        blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST,
    );
    c.val(
        "BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST",
        blkif::BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST,
    );
    c.val("BLKIF_DISCARD_SECURE", blkif::BLKIF_DISCARD_SECURE);
    c.val("BLKIF_RSP_OKAY", blkif::BLKIF_RSP_OKAY);
    c.val("BLKIF_RSP_ERROR", blkif::BLKIF_RSP_ERROR);
    c.val("BLKIF_RSP_EOPNOTSUPP", blkif::BLKIF_RSP_EOPNOTSUPP);
    c.val("VDISK_CDROM", blkif::VDISK_CDROM);
    c.val("VDISK_REMOVABLE", blkif::VDISK_REMOVABLE);
    c.val("VDISK_READONLY", blkif::VDISK_READONLY);
    c.val("__CONST_RING_SIZE(blkif, 4096)", blkif::BLKIF_RING_SIZE);
    c.val("sizeof(union blkif_sring_entry)", blkif::BLKIF_ENTRY_SIZE);

    c.val("XEN_NETIF_NR_SLOTS_MIN", netif::XEN_NETIF_NR_SLOTS_MIN);
    c.val("XEN_NETIF_MAX_TX_SIZE", netif::XEN_NETIF_MAX_TX_SIZE);
    c.val("NETTXF_csum_blank", netif::NETTXF_CSUM_BLANK);
    c.val("NETTXF_data_validated", netif::NETTXF_DATA_VALIDATED);
    c.val("NETTXF_more_data", netif::NETTXF_MORE_DATA);
    c.val("NETTXF_extra_info", netif::NETTXF_EXTRA_INFO);
    c.val("NETRXF_data_validated", netif::NETRXF_DATA_VALIDATED);
    c.val("NETRXF_csum_blank", netif::NETRXF_CSUM_BLANK);
    c.val("NETRXF_more_data", netif::NETRXF_MORE_DATA);
    c.val("NETRXF_extra_info", netif::NETRXF_EXTRA_INFO);
    c.val("NETRXF_gso_prefix", netif::NETRXF_GSO_PREFIX);
    c.val("NETIF_RSP_DROPPED", netif::NETIF_RSP_DROPPED);
    c.val("NETIF_RSP_ERROR", netif::NETIF_RSP_ERROR);
    c.val("NETIF_RSP_OKAY", netif::NETIF_RSP_OKAY);
    c.val("NETIF_RSP_NULL", netif::NETIF_RSP_NULL);
    c.val(
        "XEN_NETIF_EXTRA_TYPE_NONE",
        netif::XEN_NETIF_EXTRA_TYPE_NONE,
    );
    c.val("XEN_NETIF_EXTRA_TYPE_GSO", netif::XEN_NETIF_EXTRA_TYPE_GSO);
    c.val(
        "XEN_NETIF_EXTRA_TYPE_MCAST_ADD",
        netif::XEN_NETIF_EXTRA_TYPE_MCAST_ADD,
    );
    c.val(
        "XEN_NETIF_EXTRA_TYPE_MCAST_DEL",
        netif::XEN_NETIF_EXTRA_TYPE_MCAST_DEL,
    );
    c.val(
        "XEN_NETIF_EXTRA_TYPE_HASH",
        netif::XEN_NETIF_EXTRA_TYPE_HASH,
    );
    c.val(
        "XEN_NETIF_EXTRA_FLAG_MORE",
        netif::XEN_NETIF_EXTRA_FLAG_MORE,
    );
    c.val("XEN_NETIF_GSO_TYPE_NONE", netif::XEN_NETIF_GSO_TYPE_NONE);
    c.val("XEN_NETIF_GSO_TYPE_TCPV4", netif::XEN_NETIF_GSO_TYPE_TCPV4);
    c.val("XEN_NETIF_GSO_TYPE_TCPV6", netif::XEN_NETIF_GSO_TYPE_TCPV6);
    c.val(
        "__CONST_RING_SIZE(netif_tx, 4096)",
        netif::NETIF_TX_RING_SIZE,
    );
    c.val(
        "__CONST_RING_SIZE(netif_rx, 4096)",
        netif::NETIF_RX_RING_SIZE,
    );
    c.val(
        "sizeof(union netif_tx_sring_entry)",
        ring::entry_size::<netif::NetifTxRequest, netif::NetifTxResponse>(),
    );
    c.val(
        "sizeof(union netif_rx_sring_entry)",
        ring::entry_size::<netif::NetifRxRequest, netif::NetifRxResponse>(),
    );
    c.val(
        "offsetof(struct blkif_sring, ring)",
        ring::RING_HEADER_BYTES,
    );
    c.val(
        "sizeof(xen_extraversion_t)",
        size_of::<version::XenExtraversion>(),
    );
    c.val(
        "sizeof(xen_capabilities_info_t)",
        size_of::<version::XenCapabilitiesInfo>(),
    );
    c.val(
        "sizeof(xen_changeset_info_t)",
        size_of::<version::XenChangesetInfo>(),
    );
    c.val(
        "sizeof(xen_domain_handle_t)",
        size_of::<version::XenDomainHandle>(),
    );
    c.val(
        "sizeof(xen_commandline_t)",
        size_of::<version::XenCommandline>(),
    );
    c.val("sizeof(XENCONS_RING_IDX)", size_of::<u32>());
    c.val("sizeof(XENSTORE_RING_IDX)", size_of::<u32>());
    c.val("sizeof(RING_IDX)", size_of::<u32>());
    c.val("sizeof(domid_t)", size_of::<DomId>());
    c.val("sizeof(evtchn_port_t)", size_of::<types::EvtchnPort>());
    c.val("sizeof(grant_ref_t)", size_of::<types::GrantRef>());
    c.val("sizeof(xen_pfn_t)", size_of::<types::Mfn>());
}

fn layouts(c: &mut Checks) {
    use hypercall_abi::{gnttab as g, memory as m, physdev as p, sched as s, vcpu as v};
    layout!(c, start_info::StartInfo, "struct start_info",
        magic => "magic", nr_pages => "nr_pages", shared_info => "shared_info", flags => "flags",
        store_mfn => "store_mfn", store_evtchn => "store_evtchn", console => "console",
        console.mfn => "console.domU.mfn", console.evtchn => "console.domU.evtchn",
        pt_base => "pt_base", nr_pt_frames => "nr_pt_frames", mfn_list => "mfn_list",
        mod_start => "mod_start", mod_len => "mod_len", cmd_line => "cmd_line",
        first_p2m_pfn => "first_p2m_pfn", nr_p2m_frames => "nr_p2m_frames");
    c.val("offsetof(struct start_info, console.dom0.info_off)", 72);
    c.val("offsetof(struct start_info, console.dom0.info_size)", 76);
    layout!(c, start_info::MultibootModList, "struct xen_multiboot_mod_list",
        mod_start => "mod_start", mod_end => "mod_end", cmdline => "cmdline", pad => "pad");
    layout!(c, shared_info::VcpuTimeInfo, "struct vcpu_time_info",
        version => "version", pad0 => "pad0", tsc_timestamp => "tsc_timestamp",
        system_time => "system_time", tsc_to_system_mul => "tsc_to_system_mul",
        tsc_shift => "tsc_shift", flags => "flags", pad1 => "pad1");
    layout!(c, shared_info::ArchVcpuInfo, "struct arch_vcpu_info", cr2 => "cr2", pad => "pad");
    layout!(c, shared_info::VcpuInfo, "struct vcpu_info",
        evtchn_upcall_pending => "evtchn_upcall_pending",
        evtchn_upcall_mask => "evtchn_upcall_mask", evtchn_pending_sel => "evtchn_pending_sel",
        arch => "arch", time => "time");
    layout!(c, shared_info::ArchSharedInfo, "struct arch_shared_info",
        max_pfn => "max_pfn", pfn_to_mfn_frame_list_list => "pfn_to_mfn_frame_list_list",
        nmi_reason => "nmi_reason", p2m_cr3 => "p2m_cr3", p2m_vaddr => "p2m_vaddr",
        p2m_generation => "p2m_generation");
    layout!(c, shared_info::SharedInfo, "struct shared_info",
        vcpu_info => "vcpu_info", evtchn_pending => "evtchn_pending",
        evtchn_mask => "evtchn_mask", wc_version => "wc_version", wc_sec => "wc_sec",
        wc_nsec => "wc_nsec", wc_sec_hi => "wc_sec_hi", arch => "arch");
    layout!(c, arch::TrapInfo, "struct trap_info",
        vector => "vector", flags => "flags", cs => "cs", address => "address");
    layout!(c, arch::CpuUserRegs, "struct cpu_user_regs",
        r15 => "r15", r14 => "r14", r13 => "r13", r12 => "r12", rbp => "rbp", rbx => "rbx",
        r11 => "r11", r10 => "r10", r9 => "r9", r8 => "r8", rax => "rax", rcx => "rcx",
        rdx => "rdx", rsi => "rsi", rdi => "rdi", error_code => "error_code",
        entry_vector => "entry_vector", rip => "rip", cs => "cs",
        saved_upcall_mask => "saved_upcall_mask", rflags => "rflags", rsp => "rsp",
        ss => "ss", es => "es", ds => "ds", fs => "fs", gs => "gs");
    layout!(c, arch::VcpuGuestContext, "struct vcpu_guest_context",
        fpu_ctxt => "fpu_ctxt", flags => "flags", user_regs => "user_regs",
        trap_ctxt => "trap_ctxt", ldt_base => "ldt_base", ldt_ents => "ldt_ents",
        gdt_frames => "gdt_frames", gdt_ents => "gdt_ents", kernel_ss => "kernel_ss",
        kernel_sp => "kernel_sp", ctrlreg => "ctrlreg", debugreg => "debugreg",
        event_callback_eip => "event_callback_eip",
        failsafe_callback_eip => "failsafe_callback_eip",
        syscall_callback_eip => "syscall_callback_eip", vm_assist => "vm_assist",
        fs_base => "fs_base", gs_base_kernel => "gs_base_kernel",
        gs_base_user => "gs_base_user");
    layout!(c, arch::IretContext, "struct iret_context",
        rax => "rax", r11 => "r11", rcx => "rcx", flags => "flags", rip => "rip", cs => "cs",
        rflags => "rflags", rsp => "rsp", ss => "ss");
    layout!(c, runstate::VcpuRunstateInfo, "struct vcpu_runstate_info",
        state => "state", state_entry_time => "state_entry_time", time => "time");
    layout!(c, xen::MulticallEntry, "struct multicall_entry",
        op => "op", result => "result", args => "args");
    layout!(c, mmu::MmuUpdate, "struct mmu_update", ptr => "ptr", val => "val");
    layout!(c, mmu::MmuextOp, "struct mmuext_op",
        cmd => "cmd", arg1 => "arg1.mfn", arg2 => "arg2.src_mfn");
    c.val("offsetof(struct mmuext_op, arg1.linear_addr)", 8);
    c.val("offsetof(struct mmuext_op, arg2.nr_ents)", 16);
    c.val("offsetof(struct mmuext_op, arg2.vcpumask)", 16);

    layout!(c, v::VcpuRegisterRunstateMemoryArea, "struct vcpu_register_runstate_memory_area",
        addr => "addr.p");
    layout!(c, v::VcpuSetPeriodicTimer, "struct vcpu_set_periodic_timer", period_ns => "period_ns");
    layout!(c, v::VcpuSetSingleshotTimer, "struct vcpu_set_singleshot_timer",
        timeout_abs_ns => "timeout_abs_ns", flags => "flags");
    layout!(c, v::VcpuRegisterVcpuInfo, "struct vcpu_register_vcpu_info",
        mfn => "mfn", offset => "offset", rsvd => "rsvd");
    layout!(c, v::VcpuGetPhysid, "struct vcpu_get_physid", phys_id => "phys_id");
    layout!(c, v::VcpuRegisterTimeMemoryArea, "struct vcpu_register_time_memory_area",
        addr => "addr.p");

    use evtchn::*;
    layout!(c, EvtchnAllocUnbound, "struct evtchn_alloc_unbound",
        dom => "dom", remote_dom => "remote_dom", port => "port");
    layout!(c, EvtchnBindInterdomain, "struct evtchn_bind_interdomain",
        remote_dom => "remote_dom", remote_port => "remote_port", local_port => "local_port");
    layout!(c, EvtchnBindVirq, "struct evtchn_bind_virq", virq => "virq", vcpu => "vcpu", port => "port");
    layout!(c, EvtchnBindPirq, "struct evtchn_bind_pirq", pirq => "pirq", flags => "flags", port => "port");
    layout!(c, EvtchnBindIpi, "struct evtchn_bind_ipi", vcpu => "vcpu", port => "port");
    layout!(c, EvtchnClose, "struct evtchn_close", port => "port");
    layout!(c, EvtchnSend, "struct evtchn_send", port => "port");
    layout!(c, EvtchnStatus, "struct evtchn_status",
        dom => "dom", port => "port", status => "status", vcpu => "vcpu", u => "u");
    c.val("offsetof(struct evtchn_status, u.unbound.dom)", 16);
    c.val("offsetof(struct evtchn_status, u.interdomain.dom)", 16);
    c.val("offsetof(struct evtchn_status, u.interdomain.port)", 20);
    c.val("offsetof(struct evtchn_status, u.virq)", 16);
    layout!(c, EvtchnBindVcpu, "struct evtchn_bind_vcpu", port => "port", vcpu => "vcpu");
    layout!(c, EvtchnUnmask, "struct evtchn_unmask", port => "port");
    layout!(c, EvtchnReset, "struct evtchn_reset", dom => "dom");
    layout!(c, EvtchnInitControl, "struct evtchn_init_control",
        control_gfn => "control_gfn", offset => "offset", vcpu => "vcpu", link_bits => "link_bits");
    layout!(c, EvtchnExpandArray, "struct evtchn_expand_array", array_gfn => "array_gfn");
    layout!(c, EvtchnSetPriority, "struct evtchn_set_priority", port => "port", priority => "priority");
    layout!(c, EvtchnOpCompat, "struct evtchn_op", cmd => "cmd", u => "u");
    layout!(c, EvtchnFifoControlBlock, "struct evtchn_fifo_control_block",
        ready => "ready", head => "head");

    layout!(c, g::GrantEntryV1, "struct grant_entry_v1", flags => "flags", domid => "domid", frame => "frame");
    layout!(c, g::GrantEntryHeader, "struct grant_entry_header", flags => "flags", domid => "domid");
    layout!(c, g::GrantEntryV2, "union grant_entry_v2",
        hdr => "hdr", word1 => "sub_page.page_off", frame => "full_page.frame");
    c.val("offsetof(union grant_entry_v2, sub_page.length)", 6);
    c.val("offsetof(union grant_entry_v2, transitive.trans_domid)", 4);
    c.val("offsetof(union grant_entry_v2, transitive.gref)", 8);
    layout!(c, g::GnttabMapGrantRef, "struct gnttab_map_grant_ref",
        host_addr => "host_addr", flags => "flags", ref_ => "ref", dom => "dom",
        status => "status", handle => "handle", dev_bus_addr => "dev_bus_addr");
    layout!(c, g::GnttabUnmapGrantRef, "struct gnttab_unmap_grant_ref",
        host_addr => "host_addr", dev_bus_addr => "dev_bus_addr", handle => "handle", status => "status");
    layout!(c, g::GnttabSetupTable, "struct gnttab_setup_table",
        dom => "dom", nr_frames => "nr_frames", status => "status", frame_list => "frame_list");
    layout!(c, g::GnttabDumpTable, "struct gnttab_dump_table", dom => "dom", status => "status");
    layout!(c, g::GnttabTransfer, "struct gnttab_transfer",
        mfn => "mfn", domid => "domid", ref_ => "ref", status => "status");
    layout!(c, g::GnttabCopyPtr, "struct gnttab_copy_ptr", u => "u", domid => "domid", offset => "offset");
    layout!(c, g::GnttabCopy, "struct gnttab_copy",
        source => "source", dest => "dest", dest.domid => "dest.domid", len => "len",
        flags => "flags", status => "status");
    layout!(c, g::GnttabQuerySize, "struct gnttab_query_size",
        dom => "dom", nr_frames => "nr_frames", max_nr_frames => "max_nr_frames", status => "status");
    layout!(c, g::GnttabUnmapAndReplace, "struct gnttab_unmap_and_replace",
        host_addr => "host_addr", new_addr => "new_addr", handle => "handle", status => "status");
    layout!(c, g::GnttabSetVersion, "struct gnttab_set_version", version => "version");
    layout!(c, g::GnttabGetStatusFrames, "struct gnttab_get_status_frames",
        nr_frames => "nr_frames", dom => "dom", status => "status", frame_list => "frame_list");
    layout!(c, g::GnttabGetVersion, "struct gnttab_get_version", dom => "dom", pad => "pad", version => "version");
    layout!(c, g::GnttabSwapGrantRef, "struct gnttab_swap_grant_ref",
        ref_a => "ref_a", ref_b => "ref_b", status => "status");
    layout!(c, g::GnttabCacheFlush, "struct gnttab_cache_flush",
        a => "a", offset => "offset", length => "length", op => "op");

    layout!(c, m::XenMemoryReservation, "struct xen_memory_reservation",
        extent_start => "extent_start", nr_extents => "nr_extents",
        extent_order => "extent_order", mem_flags => "mem_flags", domid => "domid");
    layout!(c, m::XenMemoryExchange, "struct xen_memory_exchange",
        in_ => "in", out => "out", nr_exchanged => "nr_exchanged");
    layout!(c, m::XenMemoryDomain, "struct xen_memory_domain", domid => "domid");
    layout!(c, m::XenMachphysMfnList, "struct xen_machphys_mfn_list",
        max_extents => "max_extents", extent_start => "extent_start", nr_extents => "nr_extents");
    layout!(c, m::XenMachphysMapping, "struct xen_machphys_mapping",
        v_start => "v_start", v_end => "v_end", max_mfn => "max_mfn");
    layout!(c, m::XenAddToPhysmap, "struct xen_add_to_physmap",
        domid => "domid", size => "size", space => "space", idx => "idx", gpfn => "gpfn");
    layout!(c, m::XenMemoryMap, "struct xen_memory_map", nr_entries => "nr_entries", buffer => "buffer");
    layout!(c, m::XenForeignMemoryMap, "struct xen_foreign_memory_map", domid => "domid", map => "map");

    layout!(c, s::SchedShutdown, "struct sched_shutdown", reason => "reason");
    layout!(c, s::SchedPoll, "struct sched_poll", ports => "ports", nr_ports => "nr_ports", timeout => "timeout");
    layout!(c, s::SchedRemoteShutdown, "struct sched_remote_shutdown", domain_id => "domain_id", reason => "reason");
    layout!(c, s::SchedWatchdog, "struct sched_watchdog", id => "id", timeout => "timeout");
    layout!(c, s::SchedPinOverride, "struct sched_pin_override", pcpu => "pcpu");

    layout!(c, callback::CallbackRegister, "struct callback_register",
        type_ => "type", flags => "flags", address => "address");
    layout!(c, callback::CallbackUnregister, "struct callback_unregister", type_ => "type", _unused => "_unused");
    layout!(c, callback::XenNmiCallback, "struct xennmi_callback", handler_address => "handler_address", pad => "pad");

    layout!(c, p::PhysdevEoi, "struct physdev_eoi", irq => "irq");
    layout!(c, p::PhysdevPirqEoiGmfn, "struct physdev_pirq_eoi_gmfn", gmfn => "gmfn");
    layout!(c, p::PhysdevIrqStatusQuery, "struct physdev_irq_status_query", irq => "irq", flags => "flags");
    layout!(c, p::PhysdevSetIopl, "struct physdev_set_iopl", iopl => "iopl");
    layout!(c, p::PhysdevSetIobitmap, "struct physdev_set_iobitmap", bitmap => "bitmap", nr_ports => "nr_ports");
    layout!(c, p::PhysdevApic, "struct physdev_apic", apic_physbase => "apic_physbase", reg => "reg", value => "value");
    layout!(c, p::PhysdevIrq, "struct physdev_irq", irq => "irq", vector => "vector");
    layout!(c, p::PhysdevMapPirq, "struct physdev_map_pirq",
        domid => "domid", type_ => "type", index => "index", pirq => "pirq", bus => "bus",
        devfn => "devfn", entry_nr => "entry_nr", table_base => "table_base");
    layout!(c, p::PhysdevUnmapPirq, "struct physdev_unmap_pirq", domid => "domid", pirq => "pirq");
    layout!(c, p::PhysdevManagePci, "struct physdev_manage_pci", bus => "bus", devfn => "devfn");
    layout!(c, p::PhysdevRestoreMsi, "struct physdev_restore_msi", bus => "bus", devfn => "devfn");
    layout!(c, p::PhysdevManagePciExt, "struct physdev_manage_pci_ext",
        bus => "bus", devfn => "devfn", is_extfn => "is_extfn", is_virtfn => "is_virtfn",
        physfn_bus => "physfn.bus", physfn_devfn => "physfn.devfn");
    layout!(c, p::PhysdevSetupGsi, "struct physdev_setup_gsi",
        gsi => "gsi", triggering => "triggering", polarity => "polarity");
    layout!(c, p::PhysdevGetFreePirq, "struct physdev_get_free_pirq", type_ => "type", pirq => "pirq");
    layout!(c, p::PhysdevPciMmcfgReserved, "struct physdev_pci_mmcfg_reserved",
        address => "address", segment => "segment", start_bus => "start_bus",
        end_bus => "end_bus", flags => "flags");
    layout!(c, p::PhysdevPciDeviceAdd, "struct physdev_pci_device_add",
        seg => "seg", bus => "bus", devfn => "devfn", flags => "flags",
        physfn_bus => "physfn.bus", physfn_devfn => "physfn.devfn");
    c.val(
        "offsetof(struct physdev_pci_device_add, optarr)",
        size_of::<p::PhysdevPciDeviceAdd>(),
    );
    layout!(c, p::PhysdevPciDevice, "struct physdev_pci_device", seg => "seg", bus => "bus", devfn => "devfn");
    layout!(c, p::PhysdevDbgpOp, "struct physdev_dbgp_op", op => "op", bus => "bus", pci => "u.pci");
    layout!(c, p::PhysdevOpCompat, "struct physdev_op", cmd => "cmd", u => "u");

    layout!(c, version::XenCompileInfo, "struct xen_compile_info",
        compiler => "compiler", compile_by => "compile_by",
        compile_domain => "compile_domain", compile_date => "compile_date");
    layout!(c, version::XenPlatformParameters, "struct xen_platform_parameters", virt_start => "virt_start");
    layout!(c, version::XenFeatureInfo, "struct xen_feature_info", submap_idx => "submap_idx", submap => "submap");
    layout!(c, version::XenBuildId, "struct xen_build_id", len => "len");

    layout!(c, ring::SringHeader, "struct blkif_sring",
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad");
    // (sizeof(struct blkif_sring) includes its one-slot array; compare the header only.)
    c.0.retain(|k| k.c != "sizeof(struct blkif_sring)" && k.c != "_Alignof(struct blkif_sring)");
    layout!(c, console::XenconsInterface, "struct xencons_interface",
        in_ => "in", out => "out", in_cons => "in_cons", in_prod => "in_prod",
        out_cons => "out_cons", out_prod => "out_prod");
    layout!(c, xenstore::XenstoreDomainInterface, "struct xenstore_domain_interface",
        req => "req", rsp => "rsp", req_cons => "req_cons", req_prod => "req_prod",
        rsp_cons => "rsp_cons", rsp_prod => "rsp_prod", server_features => "server_features",
        connection => "connection", error => "error");
    layout!(c, xenstore::XsdSockmsg, "struct xsd_sockmsg",
        type_ => "type", req_id => "req_id", tx_id => "tx_id", len => "len");
    layout!(c, blkif::BlkifRequestSegment, "struct blkif_request_segment",
        gref => "gref", first_sect => "first_sect", last_sect => "last_sect");
    layout!(c, blkif::BlkifRequest, "struct blkif_request",
        operation => "operation", nr_segments => "nr_segments", handle => "handle", id => "id",
        sector_number => "sector_number", seg => "seg");
    layout!(c, blkif::BlkifRequestDiscard, "struct blkif_request_discard",
        operation => "operation", flag => "flag", handle => "handle", id => "id",
        sector_number => "sector_number", nr_sectors => "nr_sectors");
    layout!(c, blkif::BlkifRequestIndirect, "struct blkif_request_indirect",
        operation => "operation", indirect_op => "indirect_op", nr_segments => "nr_segments",
        id => "id", sector_number => "sector_number", handle => "handle",
        indirect_grefs => "indirect_grefs");
    layout!(c, blkif::BlkifResponse, "struct blkif_response",
        id => "id", operation => "operation", status => "status");
    layout!(c, netif::NetifTxRequest, "struct netif_tx_request",
        gref => "gref", offset => "offset", flags => "flags", id => "id", size => "size");
    layout!(c, netif::NetifTxResponse, "struct netif_tx_response", id => "id", status => "status");
    layout!(c, netif::NetifRxRequest, "struct netif_rx_request", id => "id", pad => "pad", gref => "gref");
    layout!(c, netif::NetifRxResponse, "struct netif_rx_response",
        id => "id", offset => "offset", flags => "flags", status => "status");
    layout!(c, netif::NetifExtraInfo, "struct netif_extra_info", type_ => "type", flags => "flags", u => "u");
    c.val("offsetof(struct netif_extra_info, u.gso.size)", 2);
    c.val("offsetof(struct netif_extra_info, u.gso.type)", 4);
    c.val("offsetof(struct netif_extra_info, u.gso.features)", 6);
    let _ = pte::PTE_ADDR_MASK;
}

/// Interface-version behaviour: what a guest compiled at `iface` sees.
fn versioned(c: &mut Checks, iface: u32) {
    for name in [
        "sched_op",
        "event_channel_op",
        "physdev_op",
        "sched_op_compat",
        "xen_version",
    ] {
        let hc = HYPERCALLS.iter().find(|d| d.name == name).unwrap();
        let hc = Hypercall::from_nr(hc.nr.into()).unwrap();
        c.maybe(
            hypercall_c_name(name),
            hc.for_interface(iface).map(|h| h.nr().into()),
        );
    }
    for d in GnttabOp::ALL {
        let op = GnttabOp::from_nr(d.nr).unwrap();
        c.maybe(
            format!("GNTTABOP_{}", d.name),
            op.available_in(iface).then_some(d.nr.into()),
        );
    }
    c.val(
        "CALLBACKTYPE_sysenter",
        CallbackType::sysenter_for(iface) as u16,
    );
    c.val(
        "PHYSDEVOP_pirq_eoi_gmfn",
        PhysdevOp::pirq_eoi_gmfn_for(iface) as u32,
    );
}

const PRELUDE: &str = "#include <stdint.h>\n#include <stddef.h>\n#include <stdio.h>\n";

fn program(defines: &str, checks: &[&Check]) -> String {
    let mut s = String::new();
    s.push_str(defines);
    s.push_str(PRELUDE);
    for h in HEADERS {
        writeln!(s, "#include <xen/{h}>").unwrap();
    }
    s.push_str("int main(void) {\n");
    for (i, k) in checks.iter().enumerate() {
        if k.optional {
            writeln!(
                s,
                "#ifdef {c}\n  printf(\"{i} %lld\\n\", (long long)({c}));\n#else\n  printf(\"{i} -1\\n\");\n#endif",
                c = k.c
            )
            .unwrap();
        } else {
            writeln!(s, "  printf(\"{i} %lld\\n\", (long long)({}));", k.c).unwrap();
        }
    }
    s.push_str("  return 0;\n}\n");
    s
}

fn run(dir: &Path, name: &str, source: &str) -> Vec<i128> {
    let c_file = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c_file, source).unwrap();
    let out = Command::new("cc")
        .args(["-std=gnu11", "-O0", "-w", "-o"])
        .arg(&exe)
        .arg(&c_file)
        .output()
        .expect("run cc (a C compiler is required for this test)");
    assert!(
        out.status.success(),
        "compiling {} failed:\n{}",
        c_file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let (idx, v) = l.split_once(' ').unwrap();
            assert_eq!(idx.parse::<usize>().unwrap(), i);
            v.parse().unwrap()
        })
        .collect()
}

fn compare(dir: &Path, name: &str, defines: &str, checks: &[&Check]) -> Vec<String> {
    let got = run(dir, name, &program(defines, checks));
    assert_eq!(got.len(), checks.len());
    checks
        .iter()
        .zip(got)
        // C prints 64-bit values signed; compare the 64-bit images.
        .filter(|(k, c)| k.rust.rem_euclid(1 << 64) != c.rem_euclid(1 << 64))
        .map(|(k, c)| format!("[{name}] {}: C {c}, Rust {}", k.c, k.rust))
        .collect()
}

fn require_headers() {
    let root = Path::new("/usr/include/xen");
    let missing: Vec<_> = HEADERS.iter().filter(|h| !root.join(h).exists()).collect();
    assert!(
        missing.is_empty(),
        "Xen 4.17 public headers missing under {} ({missing:?}): run scripts/setup \
         (it installs Debian's libxen-dev)",
        root.display()
    );
}

fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn layouts_and_numbers_match_xen_headers() {
    require_headers();
    let dir = work_dir();
    let mut c = Checks::default();
    numbers(&mut c);
    layouts(&mut c);
    let names: BTreeSet<_> = c.0.iter().map(|k| &k.c).collect();
    assert_eq!(names.len(), c.0.len(), "duplicate checks");

    let guest: Vec<_> = c.0.iter().filter(|k| !k.tools).collect();
    let tools: Vec<_> = c.0.iter().filter(|k| k.tools).collect();
    let mut bad = compare(
        &dir,
        "guest",
        "#define __XEN_INTERFACE_VERSION__ 0x00040e00\n",
        &guest,
    );
    bad.extend(compare(&dir, "tools", "#define __XEN_TOOLS__ 1\n", &tools));
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
    eprintln!("{} values checked against /usr/include/xen", c.0.len());
}

#[test]
fn interface_version_redirections_match_xen_headers() {
    require_headers();
    let dir = work_dir();
    let mut bad = Vec::new();
    for iface in [
        0x0003_0100,
        0x0003_0101,
        0x0003_0201,
        0x0003_0202,
        0x0003_0206,
        0x0003_0207,
        0x0003_0209,
        0x0003_020A,
        0x0004_0100,
        0x0004_0200,
        INTERFACE_VERSION,
    ] {
        let mut c = Checks::default();
        versioned(&mut c, iface);
        let checks: Vec<_> = c.0.iter().collect();
        let defines = format!("#define __XEN_INTERFACE_VERSION__ {iface:#010x}\n");
        bad.extend(compare(
            &dir,
            &format!("iface_{iface:08x}"),
            &defines,
            &checks,
        ));
    }
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
