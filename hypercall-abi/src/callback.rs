//! Guest entry points: `callback_op` (#30), `set_callbacks` (#4) and
//! `nmi_op` (#28) (`callback.h`, `nmi.h`).
//!
//! The guest registers where the hypervisor enters it for events, failsafe
//! segment reloads, user-mode `syscall`/`sysenter` and NMIs. The frame the
//! hypervisor pushes on entry is [`crate::xen::arch::BounceFrame`].

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

subops! {
    /// `callback_op` commands (`CALLBACKOP_*`).
    pub enum CallbackOp: "CALLBACKOP_" {
        /// Register a callback.
        0 => Register(CallbackRegister) register since 0x0000_0000;
        /// Unregister a callback (only the NMI callback may be).
        1 => Unregister(CallbackUnregister) unregister since 0x0000_0000;
    }
}

/// Callback types (`CALLBACKTYPE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CallbackType {
    /// Event upcall (always entered with events masked).
    Event = 0,
    /// The hypervisor failed to reload a guest segment on return.
    Failsafe = 1,
    /// 64-bit user-mode `syscall`.
    Syscall = 2,
    /// `sysenter` for 32-bit hypervisors (obsolete).
    SysenterDeprecated = 3,
    /// NMI (always entered with events masked).
    Nmi = 4,
    /// User-mode `sysenter`. Guests older than interface 0x00030207 mean
    /// [`CallbackType::SysenterDeprecated`] by this name.
    Sysenter = 5,
    /// 32-bit user-mode `syscall`.
    Syscall32 = 7,
}

impl CallbackType {
    /// The type numbered `n`, if defined.
    pub const fn from_raw(n: u16) -> Option<CallbackType> {
        Some(match n {
            0 => CallbackType::Event,
            1 => CallbackType::Failsafe,
            2 => CallbackType::Syscall,
            3 => CallbackType::SysenterDeprecated,
            4 => CallbackType::Nmi,
            5 => CallbackType::Sysenter,
            7 => CallbackType::Syscall32,
            _ => return None,
        })
    }

    /// What the name `CALLBACKTYPE_sysenter` means for a guest built against
    /// interface version `iface`.
    pub const fn sysenter_for(iface: u32) -> CallbackType {
        if iface < 0x0003_0207 {
            CallbackType::SysenterDeprecated
        } else {
            CallbackType::Sysenter
        }
    }
}

/// `callback_register.flags`: mask events on entry (`CALLBACKF_mask_events`).
pub const CALLBACKF_MASK_EVENTS: u16 = 1 << 0;

/// `CALLBACKOP_register` (16 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackRegister {
    /// A [`CallbackType`].
    pub type_: u16,
    /// [`CALLBACKF_MASK_EVENTS`] or 0.
    pub flags: u16,
    /// Padding (zero).
    pub _pad: u32,
    /// Entry address (`xen_callback_t`).
    pub address: u64,
}

/// `CALLBACKOP_unregister` (4 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct CallbackUnregister {
    /// A [`CallbackType`].
    pub type_: u16,
    /// Unused (zero).
    pub _unused: u16,
}

subops! {
    /// `nmi_op` commands (`XENNMI_*`).
    pub enum NmiOp: "XENNMI_" {
        /// Register the NMI callback.
        0 => RegisterCallback(XenNmiCallback) register_callback since 0x0000_0000;
        /// Unregister it.
        1 => UnregisterCallback(()) unregister_callback since 0x0000_0000;
    }
}

/// `XENNMI_register_callback` (16 bytes). Written by the guest.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenNmiCallback {
    /// Handler address.
    pub handler_address: u64,
    /// Padding (zero).
    pub pad: u64,
}

/// `arch_shared_info.nmi_reason`: I/O error (`XEN_NMIREASON_io_error`).
pub const XEN_NMIREASON_IO_ERROR: u64 = 1 << 0;
/// `arch_shared_info.nmi_reason`: PCI SERR (`XEN_NMIREASON_pci_serr`).
pub const XEN_NMIREASON_PCI_SERR: u64 = 1 << 1;
/// `arch_shared_info.nmi_reason`: unknown (`XEN_NMIREASON_unknown`).
pub const XEN_NMIREASON_UNKNOWN: u64 = 1 << 2;

assert_layout!(CallbackRegister, 16, type_ = 0, flags = 2, address = 8);
assert_layout!(CallbackUnregister, 4, type_ = 0);
assert_layout!(XenNmiCallback, 16, handler_address = 0, pad = 8);
