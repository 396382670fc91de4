//! xen-like-hv: a small x86_64 hypervisor for Xen PV guests.
//!
//! This binary is the part that touches hardware: the multiboot2 entry, descriptor
//! tables, traps, paging and timers. Policy lives in `xlhv-core`, which is tested on the
//! host. `hv_start` only wires the two together, in boot order.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod boot;
mod console;
mod dom0;
mod domains;
mod events;
mod gnttab;
mod irq;
mod mm;
mod mmhw;
mod modules;
mod panic;
mod pci;
mod registry;
mod time;

use arch::x86_64::{apic, cpu, gdt, idt, paging};
use xlhv_core::boot::cmdline::{self, TestHook};
use xlhv_core::boot::text::Snippet;
use xlhv_core::exit::QemuExit;

/// The hypervisor's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Rust entry, called by boot.s in long mode on the boot stack, with the boot identity
/// map still active.
#[unsafe(no_mangle)]
extern "C" fn hv_start(magic: u32, mbi: u32) -> ! {
    console::init();
    log::info!("xen-like-hv {VERSION} (Xen 4.17 x86_64 PV ABI) starting");
    gdt::init(0, arch::x86_64::entry_stack_top(0));
    idt::init();
    arch::x86_64::percpu::init(0, arch::x86_64::entry_stack_top(0));
    arch::x86_64::guest::init_syscall();
    cpu::enable_sse();
    let xsave = cpu::enable_xsave();
    cpu::enable_machine_check();
    let faulting = cpu::enable_cpuid_faulting();

    let info = boot::multiboot::BOOT_INFO.call_once(|| match boot::multiboot::read(magic, mbi) {
        Ok(info) => info,
        Err(e) => {
            log::error!("boot: {e}; cannot continue");
            cpu::qemu_exit(QemuExit::Fault)
        }
    });
    let opts = cmdline::parse(&info.cmdline);
    console::set_level(opts.loglvl);
    log::info!(
        "cpuid faulting: {}",
        if faulting { "on" } else { "not available" }
    );
    log::info!("xsave: xcr0 mask {xsave:#x}");
    // The #GP fixup that guest-requested host MSR reads rely on (no CPU has MSR
    // 0xFFFFFFFF): a broken fixup stops the machine here, not in a guest's rdmsr.
    // QEMU's TCG reads unknown MSRs as 0 without a fault (so does Xen's rdmsr_safe
    // there, and both give guests the same answers).
    log::info!(
        "msr: unknown MSRs {}",
        if cpu::rdmsr_checked(0xFFFF_FFFF).is_some() {
            "read as 0 (no #GP on this CPU)"
        } else {
            "fault (#GP fixed up)"
        }
    );
    log::info!(
        "boot loader: {}",
        if info.loader.is_empty() {
            "unknown"
        } else {
            &info.loader
        }
    );
    log::info!("command line: {}", Snippet::new(&info.cmdline).as_str());
    if info.cmdline_len > info.cmdline.len() {
        log::warn!(
            "command line is {} bytes; only the first {} were read",
            info.cmdline_len,
            info.cmdline.len()
        );
    }
    for w in opts.warnings.iter() {
        log::warn!("{w}");
    }
    if opts.warnings.dropped() > 0 {
        log::warn!(
            "cmdline: {} more problems not shown",
            opts.warnings.dropped()
        );
    }

    mm::init(info);
    mm::init_m2p();
    mmhw::init_frame_table(mm::managed_frames_span());
    mmhw::mark_io_frames();
    if paging::prepare_hypervisor_slots().is_none() {
        panic!("memory: cannot prepare the hypervisor's L4 slots");
    }
    if arch::x86_64::ldt::init().is_none() {
        panic!("memory: cannot give the LDT area a page table");
    }
    modules::report(info);

    let acpi = match info.acpi {
        Some(root) => boot::acpi::read(root),
        None => {
            log::warn!("acpi: the boot loader passed no RSDP; assuming one CPU, no HPET");
            boot::acpi::AcpiInfo::default()
        }
    };
    report_cpus(&acpi);

    let Some(lapic) = paging::ioremap(apic::phys_base(), 4096) else {
        panic!("cannot map the local APIC at {:#x}", apic::phys_base());
    };
    apic::disable_legacy_pic();
    apic::init(lapic, opts.x2apic);
    arch::x86_64::smp::set_idle_poll(opts.idle_poll_ns);
    log::info!(
        "apic: local APIC id {} at {:#x}, {} mode",
        apic::id(),
        apic::phys_base(),
        if apic::x2apic() { "x2APIC" } else { "xAPIC" }
    );
    time::init(acpi.hpet.map(|(base, _)| base));
    let online = arch::x86_64::smp::start_aps(&acpi.apic_ids);
    arch::x86_64::smp::note_processor_uids(&acpi.apic_ids, &acpi.processor_uids);
    log::info!(
        "smp: {online} of {} CPUs online",
        acpi.apic_ids.len().max(1)
    );
    mmhw::setup_dom0_iomem(
        &acpi.io_apics,
        acpi.hpet
            .map(|(base, _)| (base, acpi.hpet_protected_frames)),
    );
    irq::init(&acpi);
    pci::init_mmcfg(&acpi.mcfg);

    if let Some(hook) = opts.test {
        run_test_hook(hook);
    }
    domains::set_cmdline(info.cmdline.as_str());
    domains::init_slots(opts.max_domains);
    domains::note_free_before_dom0();
    let dom0_vcpus = xlhv_core::boot::cmdline::dom0_vcpus(
        opts.dom0_vcpus,
        u32::try_from(online).unwrap_or(1),
        u32::try_from(xlhv_core::domain::MAX_VCPUS).unwrap_or(1),
    );
    let dom0 = match dom0::build(info, opts.dom0_mem, opts.dom0_weight, dom0_vcpus) {
        Ok(slot) => Some(slot),
        Err(dom0::BuildFailure::NoModule) => {
            log::info!("dom0: no boot module: no dom0");
            None
        }
        Err(e) => {
            log::error!("dom0: {e}");
            None
        }
    };
    let domus = if dom0.is_some() {
        dom0::build_domus(info)
    } else {
        0
    };
    log::info!(
        "boot complete: {} MiB free, {domus} boot-time domU(s)",
        mm::free_frames() / 256
    );
    match dom0 {
        Some(_) => {
            domains::set_cpus(arch::x86_64::smp::online());
            if let (Some(slot), true) = (dom0, opts.dom0_vcpus_pin) {
                domains::pin_vcpus(slot);
            }
            domains::unpause_all();
            arch::x86_64::smp::release_aps();
            domains::run_first()
        }
        None => {
            log::info!("no domain to run; idling");
            loop {
                cpu::hlt();
                if time::refine_due() {
                    time::refine();
                }
            }
        }
    }
}

fn report_cpus(acpi: &boot::acpi::AcpiInfo) {
    let n = acpi.apic_ids.len().max(1);
    let mut ids: heapless::String<512> = heapless::String::new();
    for (i, id) in acpi.apic_ids.iter().enumerate() {
        use core::fmt::Write;
        let _ = write!(ids, "{}{id}", if i == 0 { "" } else { " " });
    }
    log::info!(
        "cpus: {n} (APIC ids: {})",
        if ids.is_empty() { "unknown" } else { &ids }
    );
    match acpi.hpet {
        Some((base, timers)) => log::info!("hpet: at {base:#x}, {timers} comparators"),
        None => log::info!("hpet: none"),
    }
}

/// Deliberate failures for the integration tests (`hvtest=` on the command line).
fn run_test_hook(hook: TestHook) {
    log::info!("test hook: {hook:?}");
    match hook {
        // SAFETY: faulting is the point; the fault handler reports and stops the machine.
        TestHook::FaultPageFault => unsafe {
            core::arch::asm!("mov rax, [0x1000]", out("rax") _, options(nostack));
        },
        // SAFETY: as above.
        TestHook::FaultInvalidOpcode => unsafe { core::arch::asm!("ud2", options(nostack)) },
        // SAFETY: as above.
        TestHook::FaultGeneralProtection => unsafe {
            core::arch::asm!("mov rax, [{}]", in(reg) 0xDEAD_BEEF_0000_0000u64, out("rax") _, options(nostack));
        },
        // SAFETY: as above.
        TestHook::FaultDivide => unsafe {
            core::arch::asm!("xor edx, edx", "xor ecx, ecx", "mov eax, 1", "div ecx", out("rax") _, out("rdx") _, out("rcx") _, options(nostack));
        },
        TestHook::Panic => panic!("test hook: deliberate panic"),
    }
}
