//! Physical IRQs as event channels: the machine's IRQ descriptors (one per GSI the
//! IO-APIC routes), each domain's pirq→IRQ mappings, IRQ permissions and EOI bitmap,
//! and the guest binding with Xen 4.17's acknowledgement rules (`arch/x86/irq.c`,
//! `arch/x86/physdev.c`). See `docs/devices.md`, "Interrupts".
//!
//! Portable and host-tested: the hardware is reached only through [`IrqChip`]
//! (the IO-APIC's mask bits and redirection entries, and bits of a domain's EOI
//! bitmap frame). The hypervisor keeps one [`IrqTable`] behind a lock.
//!
//! Life of a GSI interrupt: dom0 maps the GSI to a pirq (`PHYSDEVOP_map_pirq`),
//! binds an event channel to it (`EVTCHNOP_bind_pirq`: the first guest unmasks the
//! pin). When it fires, [`IrqTable::on_irq`] runs in the interrupt handler: an
//! edge interrupt (ACKTYPE_NONE) is simply forwarded; a level interrupt
//! (ACKTYPE_UNMASK) is masked at the IO-APIC and each bound guest's pirq is marked
//! in flight, and the pin is unmasked only when every guest has sent its EOI
//! (`PHYSDEVOP_eoi`), so a slow guest sees no interrupt storm. The ports to raise
//! are collected by [`IrqTable::take_deliveries`].

use crate::ioapic::{Polarity, Trigger};
use crate::mm::Mfn;
use crate::msi::{MsiError, MsiHw, MsiKind, MsiSource};
use crate::pci::Sbdf;
use hypercall_abi::Errno;
use hypercall_abi::physdev::{XENIRQSTAT_NEEDS_EOI, XENIRQSTAT_SHARED};
use hypercall_abi::types::DomId;

/// Most IRQs (descriptors) the table knows: GSIs first, then what Xen would use for
/// MSIs (never allocated here).
pub const NR_IRQS_MAX: u32 = 256;
/// First vector of the MSI IRQs: MSI IRQ `nr_irqs_gsi + i` arrives on
/// `MSI_VECTOR_BASE + i` (0x90..=0xEF, above `int $0x80`, below the timer).
pub const MSI_VECTOR_BASE: u8 = 0x90;
/// MSI vectors, hence MSI IRQs at once.
pub const MSI_VECTORS: u32 = 0x60;
/// Most guests sharing one IRQ (Xen's `IRQ_MAX_GUESTS`).
pub const IRQ_MAX_GUESTS: usize = 7;
/// Most pirq mappings at once, over all domains.
pub const MAX_MAPS: usize = 256;
/// Most domains with IRQ state (a mapping, a permission or an EOI bitmap) at once.
pub const MAX_DOMS: usize = 64;
/// Xen's `NR_DYNAMIC_VECTORS` (0x20..=0xDF): the per-CPU budget of dynamic IRQs.
pub const NR_DYNAMIC_VECTORS: u32 = 192;
/// Xen's default `extra_domU_irqs`.
pub const EXTRA_DOMU_IRQS: u32 = 32;
/// dom0's vCPUs (one so far).
const DOM0_VCPUS: u32 = 1;
/// The EOI bitmap is one page: pirqs beyond it cannot be tracked there.
const EOI_MAP_BITS: u32 = 4096 * 8;

/// How a guest-bound IRQ is acknowledged (Xen's `ACKTYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckType {
    /// Acknowledged in the interrupt handler; the guest's EOI does nothing (edge).
    None,
    /// Masked at the IO-APIC on arrival; unmasked once no guest has it in flight
    /// (level; Xen's `ioapic_ack=old` flavour, see the docs).
    Unmask,
}

/// Why a pirq operation was refused; [`PirqError::errno`] is Xen's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PirqError {
    /// A pirq or IRQ out of range, a pirq not mapped, a bad map type (EINVAL).
    Invalid,
    /// The caller or the domain may not use that IRQ (EPERM).
    NotPermitted,
    /// Bound by a guest that will not share, or in use by the hypervisor (EBUSY).
    Busy,
    /// The IRQ is mapped to another pirq, or the GSI is already set up (EEXIST).
    Exists,
    /// No free pirq (ENOSPC).
    NoSpace,
    /// The hypervisor's fixed tables are full (ENOMEM).
    NoMemory,
    /// The device was not reported by dom0 (ENODEV).
    NoDevice,
    /// The device's MSI or MSI-X could not be set up.
    Msi(MsiError),
    /// Xen 4.17 returns the caller's own negative `pirq` as the error when it asks
    /// for a new pirq for an IRQ that is already mapped (fixed in Xen 4.19).
    Raw(u16),
}

impl PirqError {
    /// Xen's errno for this refusal.
    pub fn errno(self) -> Errno {
        match self {
            PirqError::Invalid => Errno::EINVAL,
            PirqError::NotPermitted => Errno::EPERM,
            PirqError::Busy => Errno::EBUSY,
            PirqError::Exists => Errno::EEXIST,
            PirqError::NoSpace => Errno::ENOSPC,
            PirqError::NoMemory => Errno::ENOMEM,
            PirqError::NoDevice => Errno::ENODEV,
            PirqError::Msi(e) => e.errno(),
            PirqError::Raw(n) => Errno::new(n).unwrap_or(Errno::EINVAL),
        }
    }
}

/// The hardware the table drives.
pub trait IrqChip {
    /// Writes the IO-APIC redirection entry of GSI `irq` (masked) with this mode.
    fn program(&mut self, irq: u32, trigger: Trigger, polarity: Polarity);
    /// Masks GSI `irq` at the IO-APIC.
    fn mask(&mut self, irq: u32);
    /// Unmasks GSI `irq` at the IO-APIC.
    fn unmask(&mut self, irq: u32);
    /// Sets or clears bit `pirq` of the EOI bitmap in frame `map` (the domain holds a
    /// writable type reference on it).
    fn eoi_bit(&mut self, map: Mfn, pirq: u32, set: bool);
    /// Configuration space and MMIO for MSI and MSI-X (none: MSI is refused).
    fn msi_hw(&mut self) -> Option<&mut dyn MsiHw> {
        None
    }
    /// The local APIC id MSI messages go to.
    fn apic_id(&self) -> u8 {
        0
    }
}

/// Masks or unmasks `irq`: its MSI source if it has one, else its IO-APIC pin.
fn hw_mask(chip: &mut dyn IrqChip, irq: u32, msi: Option<MsiSource>, masked: bool) {
    match msi {
        Some(src) => {
            if let Some(hw) = chip.msi_hw() {
                crate::msi::set_mask(hw, &src, masked);
            }
        }
        None if masked => chip.mask(irq),
        None => chip.unmask(irq),
    }
}

/// What `map_domain_pirq`'s checks found.
enum Checked {
    /// The pirq or the IRQ is mapped otherwise: Xen answers 0 and changes nothing.
    AlreadyMapped,
    /// Go ahead; the free mapping slot, if a new mapping is needed.
    Fresh(Option<usize>),
}

#[derive(Clone, Copy, Debug)]
struct Desc {
    /// A GSI the IO-APIC routes.
    present: bool,
    /// The hypervisor uses it itself (its console UART): guests cannot bind it.
    reserved: bool,
    trigger: Trigger,
    polarity: Polarity,
    /// `PHYSDEVOP_setup_gsi` programmed the pin (Xen's `pin_programmed`).
    programmed: bool,
    guests: [(DomId, u32); IRQ_MAX_GUESTS],
    nr_guests: u8,
    shareable: bool,
    ack: AckType,
    in_flight: u8,
    /// Fired since the last [`IrqTable::take_deliveries`].
    deliver: bool,
    /// Times it fired (for `dmesg` and tests).
    count: u64,
    /// The MSI or MSI-X vector behind an MSI IRQ.
    msi: Option<MsiSource>,
    /// Who created an MSI IRQ (`create_irq`'s caller).
    creator: DomId,
}

impl Desc {
    const EMPTY: Desc = Desc {
        present: false,
        reserved: false,
        trigger: Trigger::Edge,
        polarity: Polarity::High,
        programmed: false,
        guests: [(DomId(0), 0); IRQ_MAX_GUESTS],
        nr_guests: 0,
        shareable: false,
        ack: AckType::None,
        in_flight: 0,
        deliver: false,
        count: 0,
        msi: None,
        creator: DomId(0),
    };

    fn bound(&self) -> &[(DomId, u32)] {
        self.guests
            .get(..usize::from(self.nr_guests))
            .unwrap_or(&[])
    }
}

/// One pirq of one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Map {
    dom: DomId,
    pirq: u32,
    irq: u32,
    /// The event channel bound to it (`EVTCHNOP_bind_pirq`).
    port: Option<u32>,
    /// In flight: delivered, not yet EOIed (Xen's `pirq->masked`).
    masked: bool,
    /// Unmapped while bound (Xen's `arch.irq = -irq`): only the port is left, until
    /// it is closed.
    zombie: bool,
}

impl Map {
    fn new(dom: DomId, pirq: u32, irq: u32) -> Self {
        Map {
            dom,
            pirq,
            irq,
            port: None,
            masked: false,
            zombie: false,
        }
    }
}

/// A domain's IRQ permissions and EOI bitmap.
#[derive(Clone, Copy, Debug)]
struct DomIrq {
    dom: DomId,
    /// IRQs it may use (Xen's `irq_caps`).
    permitted: [u64; (NR_IRQS_MAX / 64) as usize],
    /// `PHYSDEVOP_pirq_eoi_gmfn_v1/v2`.
    eoi_map: Option<Mfn>,
    /// v1: `PHYSDEVOP_eoi` also unmasks the port.
    auto_unmask: bool,
}

/// Every IRQ of the machine and every domain's pirqs.
#[derive(Clone, Debug)]
pub struct IrqTable {
    nr_gsis: u32,
    nr_irqs: u32,
    nr_cpus: u32,
    descs: [Desc; NR_IRQS_MAX as usize],
    /// Interrupts taken on MSI IRQs, over their lives.
    msi_count: u64,
    maps: [Option<Map>; MAX_MAPS],
    doms: [Option<DomIrq>; MAX_DOMS],
}

impl Default for IrqTable {
    fn default() -> Self {
        Self::new()
    }
}

fn bit(set: &[u64], n: u32) -> bool {
    set.get((n / 64) as usize)
        .is_some_and(|w| w & (1u64 << (n % 64)) != 0)
}

fn set_bit(set: &mut [u64], n: u32, on: bool) {
    if let Some(w) = set.get_mut((n / 64) as usize) {
        if on {
            *w |= 1u64 << (n % 64);
        } else {
            *w &= !(1u64 << (n % 64));
        }
    }
}

impl IrqTable {
    /// An empty table: no GSIs until [`IrqTable::init`].
    pub const fn new() -> Self {
        IrqTable {
            nr_gsis: 16,
            nr_irqs: 16,
            nr_cpus: 1,
            descs: [Desc::EMPTY; NR_IRQS_MAX as usize],
            msi_count: 0,
            maps: [None; MAX_MAPS],
            doms: [None; MAX_DOMS],
        }
    }

    /// Sets the machine up: `nr_gsis` GSIs routed by the IO-APIC(s) (at least 16, as
    /// Xen's `nr_irqs_gsi`), each with the mode `mode` gives; `reserved` GSIs are the
    /// hypervisor's own. `nr_irqs` follows Xen: `max(cpus * 192, 8 * nr_irqs_gsi)`.
    pub fn init(
        &mut self,
        nr_gsis: u32,
        nr_cpus: u32,
        mode: impl Fn(u32) -> (Trigger, Polarity),
        reserved: &[u32],
    ) {
        let nr_gsis = nr_gsis.clamp(16, NR_IRQS_MAX);
        let nr_cpus = nr_cpus.max(1);
        self.nr_gsis = nr_gsis;
        self.nr_cpus = nr_cpus;
        self.nr_irqs = nr_cpus
            .saturating_mul(NR_DYNAMIC_VECTORS)
            .max(nr_gsis.saturating_mul(8))
            .min(NR_IRQS_MAX);
        for (i, d) in (0u32..).zip(self.descs.iter_mut()) {
            *d = Desc::EMPTY;
            if i < nr_gsis {
                let (t, p) = mode(i);
                d.present = true;
                d.trigger = t;
                d.polarity = p;
                d.reserved = reserved.contains(&i);
            }
        }
        self.maps = [None; MAX_MAPS];
        self.doms = [None; MAX_DOMS];
    }

    /// Xen's `nr_irqs_gsi`.
    pub fn nr_gsis(&self) -> u32 {
        self.nr_gsis
    }

    /// Xen's `nr_irqs`.
    pub fn nr_irqs(&self) -> u32 {
        self.nr_irqs
    }

    /// `d->nr_pirqs` as Xen 4.17 sets it: the hardware domain gets
    /// `min(nr_irqs_gsi + min(fls(cpus), vcpus) * 192, nr_irqs)`, every other domain
    /// `nr_irqs_gsi + extra_domU_irqs` (32), at most `nr_irqs`.
    pub fn nr_pirqs(&self, hardware: bool) -> u32 {
        let n = if hardware {
            // min(fls(cpus), dom0's vCPUs): every domain has one vCPU so far, and
            // fls of at least one CPU is at least 1.
            let per = DOM0_VCPUS.min(32 - self.nr_cpus.leading_zeros());
            self.nr_gsis
                .saturating_add(per.saturating_mul(NR_DYNAMIC_VECTORS))
                .min(EOI_MAP_BITS)
        } else {
            self.nr_gsis.saturating_add(EXTRA_DOMU_IRQS)
        };
        n.min(self.nr_irqs)
    }

    /// The trigger mode and polarity GSI `irq` has now.
    pub fn mode(&self, irq: u32) -> Option<(Trigger, Polarity)> {
        let d = self.descs.get(irq as usize).filter(|d| d.present)?;
        Some((d.trigger, d.polarity))
    }

    /// Interrupts taken on MSI IRQs so far, including IRQs destroyed since.
    pub fn msi_count(&self) -> u64 {
        self.msi_count
    }

    /// Interrupts taken on `irq` so far.
    pub fn count(&self, irq: u32) -> u64 {
        self.descs.get(irq as usize).map_or(0, |d| d.count)
    }

    // ---- per-domain records -------------------------------------------------------

    fn dom_rec(&self, dom: DomId) -> Option<&DomIrq> {
        self.doms.iter().flatten().find(|r| r.dom == dom)
    }

    /// The record of `dom`, created with the defaults (`hardware`: IRQs
    /// 1..nr_irqs_gsi, as Xen's `dom0_setup_permissions`) if it has none.
    fn dom_rec_mut(&mut self, dom: DomId, hardware: bool) -> Result<&mut DomIrq, PirqError> {
        if let Some(i) = self
            .doms
            .iter()
            .position(|r| r.is_some_and(|r| r.dom == dom))
        {
            return self
                .doms
                .get_mut(i)
                .and_then(Option::as_mut)
                .ok_or(PirqError::NoMemory);
        }
        let permitted = self.default_permitted(hardware);
        let slot = self
            .doms
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(PirqError::NoMemory)?;
        Ok(slot.insert(DomIrq {
            dom,
            permitted,
            eoi_map: None,
            auto_unmask: false,
        }))
    }

    fn default_permitted(&self, hardware: bool) -> [u64; (NR_IRQS_MAX / 64) as usize] {
        let mut p = [0u64; (NR_IRQS_MAX / 64) as usize];
        if hardware {
            for irq in 1..self.nr_gsis {
                set_bit(&mut p, irq, true);
            }
        }
        p
    }

    /// Whether `dom` may use `irq` (Xen's `irq_access_permitted`).
    pub fn irq_permitted(&self, dom: DomId, hardware: bool, irq: u32) -> bool {
        match self.dom_rec(dom) {
            Some(r) => bit(&r.permitted, irq),
            None => bit(&self.default_permitted(hardware), irq),
        }
    }

    fn permit(&mut self, dom: DomId, hardware: bool, irq: u32, on: bool) -> Result<(), PirqError> {
        if !on && self.dom_rec(dom).is_none() && !hardware {
            return Ok(());
        }
        let r = self.dom_rec_mut(dom, hardware)?;
        set_bit(&mut r.permitted, irq, on);
        Ok(())
    }

    // ---- mappings -------------------------------------------------------------------

    fn map_of(&self, dom: DomId, pirq: u32) -> Option<&Map> {
        self.maps
            .iter()
            .flatten()
            .find(|m| m.dom == dom && m.pirq == pirq)
    }

    fn map_idx(&self, dom: DomId, pirq: u32) -> Option<usize> {
        self.maps
            .iter()
            .position(|m| m.is_some_and(|m| m.dom == dom && m.pirq == pirq))
    }

    /// Xen's `domain_pirq_to_irq`: the IRQ of a live mapping (a zombie counts as
    /// none).
    pub fn pirq_to_irq(&self, dom: DomId, pirq: u32) -> Option<u32> {
        self.map_of(dom, pirq).filter(|m| !m.zombie).map(|m| m.irq)
    }

    /// Xen's `domain_irq_to_pirq`: `Some(Ok(pirq))` for a live mapping,
    /// `Some(Err(pirq))` for a zombie (Xen's negative value), `None` for none.
    fn irq_to_pirq(&self, dom: DomId, irq: u32) -> Option<Result<u32, u32>> {
        self.maps
            .iter()
            .flatten()
            .find(|m| m.dom == dom && m.irq == irq)
            .map(|m| if m.zombie { Err(m.pirq) } else { Ok(m.pirq) })
    }

    /// The event channel bound to `pirq` of `dom`.
    pub fn port_of(&self, dom: DomId, pirq: u32) -> Option<u32> {
        self.map_of(dom, pirq)
            .filter(|m| !m.zombie)
            .and_then(|m| m.port)
    }

    /// Xen's `pirq_access_permitted`: `pirq` is mapped to an IRQ `dom` may use.
    pub fn pirq_permitted(&self, dom: DomId, hardware: bool, pirq: u32) -> bool {
        self.pirq_to_irq(dom, pirq)
            .is_some_and(|irq| self.irq_permitted(dom, hardware, irq))
    }

    fn is_free_pirq(&self, dom: DomId, pirq: u32) -> bool {
        self.map_of(dom, pirq).is_none()
    }

    /// Xen's `get_free_pirq` for a GSI: 16 up to `nr_irqs_gsi`, then from the top
    /// down to `nr_irqs_gsi`.
    fn free_pirq(&self, dom: DomId, hardware: bool) -> Result<u32, PirqError> {
        (16..self.nr_gsis)
            .chain((self.nr_gsis..self.nr_pirqs(hardware)).rev())
            .find(|&p| self.is_free_pirq(dom, p))
            .ok_or(PirqError::NoSpace)
    }

    /// `PHYSDEVOP_map_pirq` with `MAP_PIRQ_TYPE_GSI`, after the domain lookup and the
    /// control-domain check (`xsm_map_domain_pirq`), which the hypercall layer does:
    /// `caller` maps GSI `index` into `target` as pirq `want` (negative: any free
    /// pirq). Returns the pirq. Xen's `allocate_and_map_gsi_pirq`, `allocate_pirq`
    /// and `map_domain_pirq`, step by step.
    pub fn map_gsi(
        &mut self,
        caller: (DomId, bool),
        target: (DomId, bool),
        index: i32,
        want: i32,
    ) -> Result<u32, PirqError> {
        let (cdom, chw) = caller;
        let (dom, hw) = target;
        let index = u32::try_from(index)
            .ok()
            .filter(|&i| i < self.nr_gsis)
            .ok_or(PirqError::Invalid)?;
        // The caller's own pirq `index`, or (hardware domain) the GSI itself.
        let irq = match self.pirq_to_irq(cdom, index) {
            Some(irq) => irq,
            None if chw => index,
            None => return Err(PirqError::Invalid),
        };
        let pirq = self.allocate_pirq(target, irq, want, true)?;
        match self.check_map(caller, target, pirq, irq)? {
            Checked::AlreadyMapped => Ok(pirq),
            Checked::Fresh(slot) => {
                self.permit(dom, hw, irq, true)?;
                if let Some(slot) = slot.and_then(|i| self.maps.get_mut(i)) {
                    *slot = Some(Map::new(dom, pirq, irq));
                }
                Ok(pirq)
            }
        }
    }

    /// Xen's `allocate_pirq`: the pirq of `target` for `irq`, `want` if not negative.
    fn allocate_pirq(
        &self,
        target: (DomId, bool),
        irq: u32,
        want: i32,
        gsi: bool,
    ) -> Result<u32, PirqError> {
        let (dom, hw) = target;
        let current = self.irq_to_pirq(dom, irq);
        if want < 0 {
            match current {
                Some(Err(_)) => Err(PirqError::Busy),
                // 4.17 hands the caller's negative pirq back as the result.
                Some(Ok(_)) => Err(PirqError::Raw(
                    u16::try_from(want.unsigned_abs()).unwrap_or(u16::MAX),
                )),
                None if gsi => self.free_pirq(dom, hw),
                None => self.free_msi_pirq(dom, hw),
            }
        } else {
            let want = want.unsigned_abs();
            match current {
                Some(Ok(p) | Err(p)) if p != want => Err(PirqError::Exists),
                _ => Ok(want),
            }
        }
    }

    /// The checks of Xen's `map_domain_pirq` before it changes anything.
    fn check_map(
        &self,
        caller: (DomId, bool),
        target: (DomId, bool),
        pirq: u32,
        irq: u32,
    ) -> Result<Checked, PirqError> {
        let (dom, hw) = target;
        if !self.irq_permitted(caller.0, caller.1, irq) {
            return Err(PirqError::NotPermitted);
        }
        if pirq >= self.nr_pirqs(hw) || irq == 0 || irq >= self.nr_irqs {
            return Err(PirqError::Invalid);
        }
        let old_irq = self.pirq_to_irq(dom, pirq);
        let old_pirq = self.irq_to_pirq(dom, irq);
        if old_irq.is_some_and(|o| o != irq)
            || old_pirq.is_some_and(|o| o.unwrap_or_else(|z| z) != pirq)
        {
            // Xen only logs "already mapped" and reports success.
            return Ok(Checked::AlreadyMapped);
        }
        if old_irq.is_some() {
            return Ok(Checked::Fresh(None));
        }
        let free = self.maps.iter().position(Option::is_none);
        if free.is_none() {
            return Err(PirqError::NoMemory);
        }
        Ok(Checked::Fresh(free))
    }

    /// Xen's `get_free_pirq` for an MSI: from the top down to `nr_irqs_gsi`.
    fn free_msi_pirq(&self, dom: DomId, hardware: bool) -> Result<u32, PirqError> {
        (self.nr_gsis..self.nr_pirqs(hardware))
            .rev()
            .find(|&p| self.is_free_pirq(dom, p))
            .ok_or(PirqError::NoSpace)
    }

    /// The MSI IRQs: `nr_irqs_gsi` up, one per vector of the MSI vector range.
    fn msi_irqs(&self) -> core::ops::Range<u32> {
        self.nr_gsis..self.nr_irqs.min(self.nr_gsis + MSI_VECTORS)
    }

    /// The vector of MSI IRQ `irq`.
    pub fn msi_vector(&self, irq: u32) -> Option<u8> {
        if !self.msi_irqs().contains(&irq) {
            return None;
        }
        u8::try_from(irq - self.nr_gsis)
            .ok()
            .and_then(|i| MSI_VECTOR_BASE.checked_add(i))
    }

    /// The MSI IRQ delivered on `vector`, if that is an MSI vector.
    #[inline]
    pub fn vector_msi_irq(&self, vector: u64) -> Option<u32> {
        let i = vector.checked_sub(u64::from(MSI_VECTOR_BASE))?;
        let irq = self.nr_gsis + u32::try_from(i).ok()?;
        self.msi_irqs().contains(&irq).then_some(irq)
    }

    /// `PHYSDEVOP_map_pirq` of an MSI or MSI-X vector (`MAP_PIRQ_TYPE_MSI`, after the
    /// lookup and the control-domain check): Xen's `allocate_and_map_msi_pirq` and
    /// `map_domain_pirq`. `index` -1 creates an IRQ (`create_irq`, which lets the
    /// caller use it); another index must be an MSI IRQ that exists and is not mapped.
    /// `known` says whether dom0 reported the device (else -ENODEV, Xen's
    /// `pci_get_pdev`); `msix_entry` is the MSI-X entry (MSI-X when dom0 gave a table
    /// base, as Xen decides), `None` for MSI. The chip programs the device
    /// ([`crate::msi::enable_msix`]/[`crate::msi::enable_msi`]), masked until a guest
    /// binds. Returns the pirq and the source, or undoes everything.
    #[allow(clippy::too_many_arguments)]
    pub fn map_msi(
        &mut self,
        caller: (DomId, bool),
        target: (DomId, bool),
        index: i32,
        want: i32,
        sbdf: Sbdf,
        known: bool,
        msix_entry: Option<u16>,
        chip: &mut dyn IrqChip,
    ) -> Result<(u32, MsiSource), PirqError> {
        let created = index == -1;
        let irq = if created {
            self.create_msi_irq(caller.0)?
        } else {
            u32::try_from(index)
                .ok()
                .filter(|i| self.msi_irqs().contains(i))
                .filter(|&i| {
                    self.descs
                        .get(i as usize)
                        .is_some_and(|d| d.present && d.msi.is_none())
                })
                .ok_or(PirqError::Invalid)?
        };
        let r = self.map_msi_irq(caller, target, irq, want, sbdf, known, msix_entry, chip);
        if r.is_err() && created {
            self.destroy_msi_irq(irq, caller.0);
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn map_msi_irq(
        &mut self,
        caller: (DomId, bool),
        target: (DomId, bool),
        irq: u32,
        want: i32,
        sbdf: Sbdf,
        known: bool,
        msix_entry: Option<u16>,
        chip: &mut dyn IrqChip,
    ) -> Result<(u32, MsiSource), PirqError> {
        let pirq = self.allocate_pirq(target, irq, want, false)?;
        let slot = match self.check_map(caller, target, pirq, irq)? {
            Checked::Fresh(Some(slot)) => slot,
            // A pirq that is mapped already: Xen logs it and answers 0 without
            // programming anything; nothing is left behind here.
            _ => return Err(PirqError::Exists),
        };
        if !known {
            return Err(PirqError::NoDevice);
        }
        if self.descs.iter().any(|d| {
            d.msi.is_some_and(|m| {
                m.sbdf == sbdf
                    && match (m.kind, msix_entry) {
                        (MsiKind::MsiX { entry, .. }, Some(e)) => entry == e,
                        (MsiKind::Msi { .. }, None) => true,
                        _ => false,
                    }
            })
        }) {
            return Err(PirqError::Busy);
        }
        let vector = self.msi_vector(irq).ok_or(PirqError::Invalid)?;
        let msg = crate::msi::compose(chip.apic_id(), vector);
        let hw = chip.msi_hw().ok_or(PirqError::NoDevice)?;
        let src = match msix_entry {
            Some(e) => crate::msi::enable_msix(hw, sbdf, e, msg),
            None => crate::msi::enable_msi(hw, sbdf, msg),
        }
        .map_err(PirqError::Msi)?;
        if let Err(e) = self.permit(target.0, target.1, irq, true) {
            crate::msi::disable(hw, &src);
            return Err(e);
        }
        if let Some(d) = self.descs.get_mut(irq as usize) {
            d.msi = Some(src);
        }
        if let Some(m) = self.maps.get_mut(slot) {
            *m = Some(Map::new(target.0, pirq, irq));
        }
        Ok((pirq, src))
    }

    /// Xen's `create_irq`: the first free MSI IRQ, which `creator` may then use.
    fn create_msi_irq(&mut self, creator: DomId) -> Result<u32, PirqError> {
        let irq = self
            .msi_irqs()
            .find(|&i| self.descs.get(i as usize).is_some_and(|d| !d.present))
            .ok_or(PirqError::Invalid)?;
        let hw = creator == DomId(0);
        self.permit(creator, hw, irq, true)?;
        if let Some(d) = self.descs.get_mut(irq as usize) {
            *d = Desc::EMPTY;
            d.present = true;
            d.creator = creator;
        }
        Ok(irq)
    }

    /// Xen's `destroy_irq`: the IRQ is free again and its creator loses it.
    fn destroy_msi_irq(&mut self, irq: u32, creator: DomId) {
        if let Some(d) = self.descs.get_mut(irq as usize) {
            *d = Desc::EMPTY;
        }
        let _ = self.permit(creator, creator == DomId(0), irq, false);
    }

    /// Disables the MSI behind `irq` (if any) and frees the IRQ; returns the source.
    fn release_msi(&mut self, irq: u32, chip: &mut dyn IrqChip) -> Option<MsiSource> {
        let d = self.descs.get(irq as usize)?;
        let src = d.msi?;
        let creator = d.creator;
        if let Some(hw) = chip.msi_hw() {
            crate::msi::disable(hw, &src);
        }
        self.destroy_msi_irq(irq, creator);
        Some(src)
    }

    /// The MSI or MSI-X source behind `pirq` of `dom`.
    pub fn msi_source(&self, dom: DomId, pirq: u32) -> Option<MsiSource> {
        let irq = self.pirq_to_irq(dom, pirq)?;
        self.descs.get(irq as usize)?.msi
    }

    /// `PHYSDEVOP_unmap_pirq` after the lookup and the control-domain check: removes
    /// `pirq` of `dom`. A bound pirq is unbound by force and its port stays a pirq
    /// port with nothing behind it until closed. The domain loses access to the IRQ
    /// (Xen's `irq_deny_access`). An MSI is disabled and its IRQ destroyed (the
    /// vector is free again); its source is returned.
    pub fn unmap(
        &mut self,
        target: (DomId, bool),
        pirq: i32,
        chip: &mut dyn IrqChip,
    ) -> Result<Option<MsiSource>, PirqError> {
        let (dom, hw) = target;
        let pirq = u32::try_from(pirq)
            .ok()
            .filter(|&p| p < self.nr_pirqs(hw))
            .ok_or(PirqError::Invalid)?;
        let idx = self.map_idx(dom, pirq).ok_or(PirqError::Invalid)?;
        let Some(m) = self.maps.get(idx).copied().flatten() else {
            return Err(PirqError::Invalid);
        };
        if m.zombie {
            return Err(PirqError::Invalid);
        }
        if m.port.is_some() {
            self.guest_unbind(idx, chip);
            if let Some(Some(z)) = self.maps.get_mut(idx) {
                z.zombie = true;
                z.port = m.port;
            }
        } else if let Some(slot) = self.maps.get_mut(idx) {
            *slot = None;
        }
        self.permit(dom, hw, m.irq, false)?;
        Ok(self.release_msi(m.irq, chip))
    }

    // ---- binding ----------------------------------------------------------------------

    /// `pirq_guest_bind`: the port `port` (just allocated by `EVTCHNOP_bind_pirq`,
    /// which checked range, permission and that no port is bound) now receives
    /// `pirq` of `dom`. The first guest sets the IRQ up and unmasks it.
    pub fn bind(
        &mut self,
        dom: DomId,
        pirq: u32,
        port: u32,
        will_share: bool,
        chip: &mut dyn IrqChip,
    ) -> Result<(), PirqError> {
        let idx = self
            .map_idx(dom, pirq)
            .filter(|&i| {
                self.maps
                    .get(i)
                    .is_some_and(|m| m.is_some_and(|m| !m.zombie))
            })
            .ok_or(PirqError::Invalid)?;
        let irq = self
            .maps
            .get(idx)
            .copied()
            .flatten()
            .ok_or(PirqError::Invalid)?
            .irq;
        let eoi_map = self.dom_rec(dom).and_then(|r| r.eoi_map);
        let d = self
            .descs
            .get_mut(irq as usize)
            .filter(|d| d.present)
            .ok_or(PirqError::Invalid)?;
        if d.reserved {
            return Err(PirqError::Busy);
        }
        let first = d.nr_guests == 0;
        if !first && (!will_share || !d.shareable) {
            return Err(PirqError::Busy);
        }
        if usize::from(d.nr_guests) >= IRQ_MAX_GUESTS {
            return Err(PirqError::Busy);
        }
        if first {
            d.shareable = will_share;
            d.ack = match d.trigger {
                Trigger::Edge => AckType::None,
                Trigger::Level => AckType::Unmask,
            };
            d.in_flight = 0;
            d.deliver = false;
        }
        if let Some(g) = d.guests.get_mut(usize::from(d.nr_guests)) {
            *g = (dom, pirq);
        }
        d.nr_guests += 1;
        let needs_eoi = d.ack != AckType::None;
        if first {
            hw_mask(chip, irq, d.msi, false);
        }
        if let Some(map) = eoi_map
            && pirq < EOI_MAP_BITS
        {
            chip.eoi_bit(map, pirq, needs_eoi);
        }
        if let Some(Some(m)) = self.maps.get_mut(idx) {
            m.port = Some(port);
            m.masked = false;
        }
        Ok(())
    }

    /// `__pirq_guest_unbind` of mapping `idx`: the guest leaves the IRQ; an EOI it
    /// owed is given; the last guest masks it.
    fn guest_unbind(&mut self, idx: usize, chip: &mut dyn IrqChip) {
        let Some(Some(m)) = self.maps.get_mut(idx) else {
            return;
        };
        let (dom, pirq, irq, was_masked) = (m.dom, m.pirq, m.irq, m.masked);
        m.port = None;
        m.masked = false;
        let Some(d) = self.descs.get_mut(irq as usize) else {
            return;
        };
        let n = usize::from(d.nr_guests);
        let Some(i) = d.bound().iter().position(|&g| g == (dom, pirq)) else {
            return;
        };
        if let Some(s) = d.guests.get_mut(i..n) {
            s.rotate_left(1);
        }
        d.nr_guests -= 1;
        if d.ack == AckType::Unmask && was_masked {
            d.in_flight = d.in_flight.saturating_sub(1);
            if d.in_flight == 0 {
                hw_mask(chip, irq, d.msi, false);
            }
        }
        if d.nr_guests == 0 {
            hw_mask(chip, irq, d.msi, true);
            d.in_flight = 0;
            d.deliver = false;
            d.ack = AckType::None;
            d.shareable = false;
        }
    }

    /// The event channel `port` of `dom` was closed (or the domain's ports were
    /// reset): the pirq bound to it is unbound (`pirq_guest_unbind`); a zombie
    /// mapping goes away.
    pub fn port_closed(&mut self, dom: DomId, port: u32, chip: &mut dyn IrqChip) {
        let Some(idx) = self
            .maps
            .iter()
            .position(|m| m.is_some_and(|m| m.dom == dom && m.port == Some(port)))
        else {
            return;
        };
        let zombie = self
            .maps
            .get(idx)
            .copied()
            .flatten()
            .is_some_and(|m| m.zombie);
        if zombie {
            if let Some(slot) = self.maps.get_mut(idx) {
                *slot = None;
            }
        } else {
            self.guest_unbind(idx, chip);
        }
    }

    /// Ports `dom` has bound to pirqs, with their pirqs (for reconciling with the
    /// port table after a close or reset).
    pub fn bound_ports(&self, dom: DomId) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.maps
            .iter()
            .flatten()
            .filter(move |m| m.dom == dom)
            .filter_map(|m| m.port.map(|p| (p, m.pirq)))
    }

    /// `PHYSDEVOP_eoi`: EOI of `pirq` by `dom`. Returns the port to unmask when the
    /// domain registered its EOI bitmap with v1 (`auto_unmask`).
    pub fn eoi(
        &mut self,
        dom: DomId,
        hw: bool,
        pirq: u32,
        chip: &mut dyn IrqChip,
    ) -> Result<Option<u32>, PirqError> {
        if pirq >= self.nr_pirqs(hw) {
            return Err(PirqError::Invalid);
        }
        let idx = self.map_idx(dom, pirq).ok_or(PirqError::Invalid)?;
        let auto_unmask = self.dom_rec(dom).is_some_and(|r| r.auto_unmask);
        let Some(Some(m)) = self.maps.get_mut(idx) else {
            return Err(PirqError::Invalid);
        };
        let unmask_port = if auto_unmask { m.port } else { None };
        if m.zombie || m.port.is_none() || !m.masked {
            return Ok(unmask_port);
        }
        m.masked = false;
        let irq = m.irq;
        if let Some(d) = self.descs.get_mut(irq as usize) {
            d.in_flight = d.in_flight.saturating_sub(1);
            if d.in_flight == 0 && d.ack == AckType::Unmask {
                hw_mask(chip, irq, d.msi, false);
            }
        }
        Ok(unmask_port)
    }

    /// `PHYSDEVOP_irq_status_query`: `XENIRQSTAT_needs_eoi` always (4.17), and
    /// `XENIRQSTAT_shared` when more than one guest is bound to the IRQ.
    pub fn status(&self, dom: DomId, hw: bool, pirq: u32) -> Result<u32, PirqError> {
        if pirq >= self.nr_pirqs(hw) {
            return Err(PirqError::Invalid);
        }
        let shared = self
            .pirq_to_irq(dom, pirq)
            .and_then(|irq| self.descs.get(irq as usize))
            .is_some_and(|d| d.nr_guests > 1);
        Ok(XENIRQSTAT_NEEDS_EOI | if shared { XENIRQSTAT_SHARED } else { 0 })
    }

    /// `PHYSDEVOP_setup_gsi` (`mp_register_gsi`), after the range and privilege
    /// checks: `triggering` 0 edge / else level, `polarity` 0 high / else low.
    /// -EEXIST if the GSI is bound (enabled) or was set up before.
    pub fn setup_gsi(
        &mut self,
        gsi: u32,
        triggering: u8,
        polarity: u8,
        chip: &mut dyn IrqChip,
    ) -> Result<(), PirqError> {
        let d = self
            .descs
            .get_mut(gsi as usize)
            .filter(|d| d.present)
            .ok_or(PirqError::Invalid)?;
        if d.nr_guests > 0 || d.programmed {
            return Err(PirqError::Exists);
        }
        d.programmed = true;
        d.trigger = if triggering == 0 {
            Trigger::Edge
        } else {
            Trigger::Level
        };
        d.polarity = if polarity == 0 {
            Polarity::High
        } else {
            Polarity::Low
        };
        chip.program(gsi, d.trigger, d.polarity);
        Ok(())
    }

    /// `PHYSDEVOP_pirq_eoi_gmfn_v1/v2`: `map` (on which the caller took a writable
    /// type reference) becomes `dom`'s EOI bitmap. -EBUSY if it has one.
    pub fn set_eoi_map(
        &mut self,
        dom: DomId,
        hw: bool,
        map: Mfn,
        v1: bool,
    ) -> Result<(), PirqError> {
        let r = self.dom_rec_mut(dom, hw)?;
        if r.eoi_map.is_some() {
            return Err(PirqError::Busy);
        }
        r.eoi_map = Some(map);
        if v1 {
            r.auto_unmask = true;
        }
        Ok(())
    }

    /// `XEN_DOMCTL_irq_permission`: `caller` grants (or takes back) the IRQ behind its
    /// own `pirq` to `target`. -EINVAL beyond the caller's pirqs; -EPERM if that pirq
    /// is not mapped to an IRQ the caller may use.
    pub fn irq_permission(
        &mut self,
        caller: (DomId, bool),
        target: (DomId, bool),
        pirq: u32,
        allow: bool,
    ) -> Result<(), PirqError> {
        if pirq >= self.nr_pirqs(caller.1) {
            return Err(PirqError::Invalid);
        }
        if !self.pirq_permitted(caller.0, caller.1, pirq) {
            return Err(PirqError::NotPermitted);
        }
        let irq = self
            .pirq_to_irq(caller.0, pirq)
            .ok_or(PirqError::NotPermitted)?;
        self.permit(target.0, target.1, irq, allow)
    }

    /// The domain is going away (`free_domain_pirqs`): every pirq is unbound and
    /// unmapped (its MSIs disabled, `released` told of each), its permissions
    /// forgotten. Returns its EOI bitmap frame, whose writable type reference the
    /// caller drops.
    pub fn domain_destroyed(
        &mut self,
        dom: DomId,
        chip: &mut dyn IrqChip,
        mut released: impl FnMut(MsiSource),
    ) -> Option<Mfn> {
        for idx in 0..MAX_MAPS {
            let mine = self
                .maps
                .get(idx)
                .copied()
                .flatten()
                .filter(|m| m.dom == dom);
            if let Some(m) = mine {
                if m.port.is_some() && !m.zombie {
                    self.guest_unbind(idx, chip);
                }
                if let Some(slot) = self.maps.get_mut(idx) {
                    *slot = None;
                }
                if !m.zombie
                    && let Some(src) = self.release_msi(m.irq, chip)
                {
                    released(src);
                }
            }
        }
        let slot = self
            .doms
            .iter_mut()
            .find(|r| r.is_some_and(|r| r.dom == dom))?;
        slot.take().and_then(|r| r.eoi_map)
    }

    // ---- interrupts -------------------------------------------------------------------

    /// GSI `irq` fired (`__do_IRQ_guest`), before the local APIC's EOI: each bound
    /// guest's pirq goes in flight (level), a level IRQ is masked until the guests'
    /// EOIs, and the IRQ is marked for [`IrqTable::take_deliveries`]. An IRQ nobody
    /// is bound to is masked. Returns whether anything is to be delivered.
    pub fn on_irq(&mut self, irq: u32, chip: &mut dyn IrqChip) -> bool {
        let Some(d) = self.descs.get_mut(irq as usize) else {
            return false;
        };
        d.count = d.count.wrapping_add(1);
        if d.msi.is_some() {
            self.msi_count = self.msi_count.wrapping_add(1);
        }
        let Some(d) = self.descs.get_mut(irq as usize) else {
            return false;
        };
        if d.nr_guests == 0 {
            hw_mask(chip, irq, d.msi, true);
            return false;
        }
        let guests = d.guests;
        let n = usize::from(d.nr_guests);
        let ack = d.ack;
        d.deliver = true;
        if ack == AckType::None {
            return true;
        }
        hw_mask(chip, irq, d.msi, true);
        let mut in_flight = 0u8;
        for &(dom, pirq) in guests.get(..n).unwrap_or(&[]) {
            if let Some(m) = self
                .maps
                .iter_mut()
                .flatten()
                .find(|m| m.dom == dom && m.pirq == pirq && !m.zombie)
                && !m.masked
            {
                m.masked = true;
                in_flight += 1;
            }
        }
        if let Some(d) = self.descs.get_mut(irq as usize) {
            d.in_flight = d.in_flight.saturating_add(in_flight);
            if d.in_flight == 0 {
                hw_mask(chip, irq, d.msi, false);
            }
        }
        true
    }

    /// Calls `f(domain, port)` for every port whose IRQ fired since the last call.
    pub fn take_deliveries(&mut self, mut f: impl FnMut(DomId, u32)) {
        for irq in 0..self.nr_irqs {
            let Some(d) = self.descs.get_mut(irq as usize) else {
                continue;
            };
            if !d.deliver {
                continue;
            }
            d.deliver = false;
            let n = usize::from(d.nr_guests);
            let guests = d.guests;
            for &(dom, pirq) in guests.get(..n).unwrap_or(&[]) {
                if let Some(port) = self.port_of(dom, pirq) {
                    f(dom, port);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
