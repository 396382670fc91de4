//! The 2-level delivery ABI: the guest-visible bitmaps in `shared_info` and the two
//! hypervisor-side algorithms that write them, "set pending" and "unmask".
//!
//! The bitmaps live in memory the guest writes concurrently, so the hypervisor reaches
//! them through [`EventBits`], which it implements with atomic bit operations on the
//! mapped page (in the order the methods are called: on x86 every locked bit operation
//! is a full barrier, which is what the algorithms need). [`SharedInfo`] itself also
//! implements it with plain accesses, for tests and for a page nobody else is using.

use super::{Kick, NR_PORTS};
use hypercall_abi::evtchn::port_word_bit;
use hypercall_abi::types::{DomId, EvtchnPort, VcpuId};
use hypercall_abi::xen::SharedInfo;

/// The 2-level event bitmaps of one domain: `evtchn_pending[]` and `evtchn_mask[]` of
/// its shared_info, and per vCPU `evtchn_pending_sel` and `evtchn_upcall_pending` /
/// `evtchn_upcall_mask` of its `vcpu_info`.
///
/// Ports passed in are always below [`NR_PORTS`] and vCPUs always exist in the domain;
/// an implementation still must not panic on others (ignore writes, answer "set").
/// A vCPU without a `vcpu_info` (ids from 32 up, before `VCPUOP_register_vcpu_info`)
/// may be treated the same way.
pub trait EventBits {
    /// Sets the port's pending bit; returns its previous value.
    fn test_and_set_pending(&mut self, port: EvtchnPort) -> bool;
    /// Clears the port's pending bit.
    fn clear_pending(&mut self, port: EvtchnPort);
    /// The port's pending bit.
    fn is_pending(&self, port: EvtchnPort) -> bool;
    /// The port's mask bit (guest-owned).
    fn is_masked(&self, port: EvtchnPort) -> bool;
    /// Clears the port's mask bit; returns its previous value.
    fn test_and_clear_mask(&mut self, port: EvtchnPort) -> bool;
    /// Sets bit `word` of the vCPU's `evtchn_pending_sel`; returns its previous value.
    fn test_and_set_selector(&mut self, vcpu: VcpuId, word: usize) -> bool;
    /// Sets the vCPU's `evtchn_upcall_pending`; returns whether it was already set.
    fn test_and_set_upcall_pending(&mut self, vcpu: VcpuId) -> bool;
    /// The vCPU's `evtchn_upcall_pending`.
    fn upcall_pending(&self, vcpu: VcpuId) -> bool;
    /// The vCPU's `evtchn_upcall_mask` (1 = events disabled).
    fn upcall_masked(&self, vcpu: VcpuId) -> bool;
}

impl<T: EventBits + ?Sized> EventBits for &mut T {
    fn test_and_set_pending(&mut self, port: EvtchnPort) -> bool {
        (**self).test_and_set_pending(port)
    }
    fn clear_pending(&mut self, port: EvtchnPort) {
        (**self).clear_pending(port);
    }
    fn is_pending(&self, port: EvtchnPort) -> bool {
        (**self).is_pending(port)
    }
    fn is_masked(&self, port: EvtchnPort) -> bool {
        (**self).is_masked(port)
    }
    fn test_and_clear_mask(&mut self, port: EvtchnPort) -> bool {
        (**self).test_and_clear_mask(port)
    }
    fn test_and_set_selector(&mut self, vcpu: VcpuId, word: usize) -> bool {
        (**self).test_and_set_selector(vcpu, word)
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: VcpuId) -> bool {
        (**self).test_and_set_upcall_pending(vcpu)
    }
    fn upcall_pending(&self, vcpu: VcpuId) -> bool {
        (**self).upcall_pending(vcpu)
    }
    fn upcall_masked(&self, vcpu: VcpuId) -> bool {
        (**self).upcall_masked(vcpu)
    }
}

/// Word index and bit mask of `port` in a 64-bit bitmap.
fn word_mask(port: EvtchnPort) -> (usize, u64) {
    let (word, bit) = port_word_bit(port);
    (word, 1u64 << (bit & 63))
}

/// Plain (non-atomic) accesses, for a page only this code touches.
impl EventBits for SharedInfo {
    fn test_and_set_pending(&mut self, port: EvtchnPort) -> bool {
        let (w, m) = word_mask(port);
        match self.evtchn_pending.get_mut(w) {
            Some(word) => {
                let old = *word & m != 0;
                *word |= m;
                old
            }
            None => true,
        }
    }
    fn clear_pending(&mut self, port: EvtchnPort) {
        let (w, m) = word_mask(port);
        if let Some(word) = self.evtchn_pending.get_mut(w) {
            *word &= !m;
        }
    }
    fn is_pending(&self, port: EvtchnPort) -> bool {
        let (w, m) = word_mask(port);
        self.evtchn_pending.get(w).is_some_and(|word| word & m != 0)
    }
    fn is_masked(&self, port: EvtchnPort) -> bool {
        let (w, m) = word_mask(port);
        self.evtchn_mask.get(w).is_none_or(|word| word & m != 0)
    }
    fn test_and_clear_mask(&mut self, port: EvtchnPort) -> bool {
        let (w, m) = word_mask(port);
        match self.evtchn_mask.get_mut(w) {
            Some(word) => {
                let old = *word & m != 0;
                *word &= !m;
                old
            }
            None => false,
        }
    }
    fn test_and_set_selector(&mut self, vcpu: VcpuId, word: usize) -> bool {
        let Some(info) = self.vcpu_info.get_mut(vcpu.0 as usize) else {
            return true;
        };
        let Some(m) = u32::try_from(word).ok().and_then(|w| 1u64.checked_shl(w)) else {
            return true;
        };
        let old = info.evtchn_pending_sel & m != 0;
        info.evtchn_pending_sel |= m;
        old
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: VcpuId) -> bool {
        let Some(info) = self.vcpu_info.get_mut(vcpu.0 as usize) else {
            return true;
        };
        let old = info.evtchn_upcall_pending != 0;
        info.evtchn_upcall_pending = 1;
        old
    }
    fn upcall_pending(&self, vcpu: VcpuId) -> bool {
        self.vcpu_info
            .get(vcpu.0 as usize)
            .is_some_and(|i| i.evtchn_upcall_pending != 0)
    }
    fn upcall_masked(&self, vcpu: VcpuId) -> bool {
        self.vcpu_info
            .get(vcpu.0 as usize)
            .is_none_or(|i| i.evtchn_upcall_mask != 0)
    }
}

/// Marks `port` of domain `dom` pending for delivery to `vcpu` (§7.3 steps 1-4):
///
/// 1. set the pending bit; if it was already set, stop (nothing to do);
/// 2. if the port is not masked and the vCPU's selector bit for the port's word was
///    clear (now set),
/// 3. set the vCPU's `evtchn_upcall_pending`; if that was clear, the vCPU must be
///    kicked ([`Kick::upcall`]);
/// 4. a newly pending port also wakes the domain's vCPUs polling it
///    ([`Kick::pollers`]).
///
/// Returns `None` when the port was already pending.
pub fn set_pending<B: EventBits + ?Sized>(
    bits: &mut B,
    dom: DomId,
    port: EvtchnPort,
    vcpu: VcpuId,
) -> Option<Kick> {
    if port.0 as usize >= NR_PORTS || bits.test_and_set_pending(port) {
        return None;
    }
    let (word, _) = port_word_bit(port);
    let mut upcall = None;
    if !bits.is_masked(port)
        && !bits.test_and_set_selector(vcpu, word)
        && !bits.test_and_set_upcall_pending(vcpu)
    {
        upcall = Some(vcpu);
    }
    Some(Kick {
        dom,
        port,
        upcall,
        pollers: true,
    })
}

/// `EVTCHNOP_unmask` on a bound port delivering to `vcpu`: clear the mask bit, and
/// only if it *was* set and the port is pending and the vCPU's selector bit was clear,
/// raise the upcall. Pollers are not woken (the port did not newly become pending).
///
/// Returns a kick only when `evtchn_upcall_pending` went from 0 to 1.
pub fn unmask<B: EventBits + ?Sized>(
    bits: &mut B,
    dom: DomId,
    port: EvtchnPort,
    vcpu: VcpuId,
) -> Option<Kick> {
    if port.0 as usize >= NR_PORTS {
        return None;
    }
    let (word, _) = port_word_bit(port);
    if bits.test_and_clear_mask(port)
        && bits.is_pending(port)
        && !bits.test_and_set_selector(vcpu, word)
        && !bits.test_and_set_upcall_pending(vcpu)
    {
        return Some(Kick {
            dom,
            port,
            upcall: Some(vcpu),
            pollers: false,
        });
    }
    None
}
