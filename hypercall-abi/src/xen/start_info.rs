//! `start_info`: what the builder tells a new PV guest (`xen.h`).
//!
//! The builder (the hypervisor for dom0, dom0's toolstack for a domU) fills
//! one page of the guest's bootstrap region with [`StartInfo`] and starts
//! vCPU 0 with `rsi` = the page's guest virtual address. The guest only reads
//! it. Fields up to and including `console` are refilled on resume; the rest
//! are written only at first boot.

use bitflags::bitflags;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::types::{EvtchnPort, GuestPtr, MachineAddr, Mfn};

/// `start_info.magic` for a 64-bit PV guest, NUL-padded to 32 bytes.
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";

/// Capacity of `start_info.cmd_line` (`MAX_GUEST_CMDLINE`).
pub const MAX_GUEST_CMDLINE: usize = 1024;

bitflags! {
    /// `start_info.flags` (`SIF_*`). Written by the builder.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SifFlags: u32 {
        /// The domain is privileged (`SIF_PRIVILEGED`).
        const PRIVILEGED = 1 << 0;
        /// The domain is the initial control domain (`SIF_INITDOMAIN`).
        const INITDOMAIN = 1 << 1;
        /// `mod_start` is a multiboot module list (`SIF_MULTIBOOT_MOD`).
        const MULTIBOOT_MOD = 1 << 2;
        /// `mod_start` is a PFN, not a virtual address (`SIF_MOD_START_PFN`).
        const MOD_START_PFN = 1 << 3;
        /// Tools understand a virtually mapped P2M (`SIF_VIRT_P2M_4TOOLS`).
        const VIRT_P2M_4TOOLS = 1 << 4;
        /// Reserved for dom0 power-management options (`SIF_PM_MASK`).
        const PM_MASK = 0xFF << 8;
    }
}

/// The `console` union of [`StartInfo`] (16 bytes at offset 72).
///
/// A domU sees `domU { mfn, evtchn }`: the console ring frame and its event
/// channel. The initial domain sees `dom0 { info_off, info_size }`, the
/// offset and size of a `dom0_vga_console_info` within the start_info page;
/// those two `u32`s overlay the low and high halves of `mfn`. Written by the
/// builder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfoConsole {
    /// domU: machine frame of the console ring page (`console.domU.mfn`).
    pub mfn: Mfn,
    /// domU: event channel of the console (`console.domU.evtchn`).
    pub evtchn: EvtchnPort,
    /// Padding (zero).
    pub _pad: u32,
}

impl StartInfoConsole {
    /// The domU view.
    pub const fn domu(mfn: Mfn, evtchn: EvtchnPort) -> Self {
        StartInfoConsole {
            mfn,
            evtchn,
            _pad: 0,
        }
    }

    /// The dom0 view: `info_off` and `info_size` of the VGA console info.
    pub const fn dom0(info_off: u32, info_size: u32) -> Self {
        StartInfoConsole {
            mfn: Mfn(((info_size as u64) << 32) | info_off as u64),
            evtchn: EvtchnPort(0),
            _pad: 0,
        }
    }

    /// dom0: `console.dom0.info_off`.
    pub const fn dom0_info_off(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the low half, by definition
        let v = self.mfn.0 as u32;
        v
    }

    /// dom0: `console.dom0.info_size`.
    pub const fn dom0_info_size(&self) -> u32 {
        #[allow(clippy::cast_possible_truncation)] // the high half, by definition
        let v = (self.mfn.0 >> 32) as u32;
        v
    }
}

/// `struct start_info` (1168 bytes). Written by the builder, read by the
/// guest.
#[derive(Clone, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfo {
    /// [`START_INFO_MAGIC`], NUL-padded.
    pub magic: [u8; 32],
    /// Total pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: MachineAddr,
    /// [`SifFlags`] bits.
    pub flags: u32,
    /// Padding (zero).
    pub _pad0: u32,
    /// Machine frame of the XenStore ring page (domU; 0 for dom0).
    pub store_mfn: Mfn,
    /// Event channel for XenStore.
    pub store_evtchn: EvtchnPort,
    /// Padding (zero).
    pub _pad1: u32,
    /// Console information (domU ring or dom0 VGA info).
    pub console: StartInfoConsole,
    /// Guest virtual address of the L4 bootstrap page table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames, contiguous from `pt_base`.
    pub nr_pt_frames: u64,
    /// Guest virtual address of the P2M list (`u64 mfn[nr_pages]`).
    pub mfn_list: GuestPtr<Mfn>,
    /// Guest virtual address of the initrd (a PFN with
    /// [`SifFlags::MOD_START_PFN`]); 0 if none.
    pub mod_start: u64,
    /// Initrd length in bytes.
    pub mod_len: u64,
    /// Kernel command line, NUL-terminated.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// With `XEN_ELFNOTE_INIT_P2M`: first PFN of the P2M and its page tables.
    pub first_p2m_pfn: u64,
    /// With `XEN_ELFNOTE_INIT_P2M`: number of those frames.
    pub nr_p2m_frames: u64,
}

impl StartInfo {
    /// [`StartInfo::flags`] as typed flags (unknown bits kept).
    pub const fn sif_flags(&self) -> SifFlags {
        SifFlags::from_bits_retain(self.flags)
    }
}

/// One entry of a multiboot module list (`struct xen_multiboot_mod_list`),
/// used when [`SifFlags::MULTIBOOT_MOD`] is set. Written by the builder; the
/// list ends with an entry whose `mod_start` is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct MultibootModList {
    /// Address of the module's first byte, relative to the package.
    pub mod_start: u32,
    /// Address of the module's last byte (inclusive).
    pub mod_end: u32,
    /// Address of the NUL-terminated command line.
    pub cmdline: u32,
    /// Must be zero.
    pub pad: u32,
}

assert_layout!(StartInfoConsole, 16, mfn = 0, evtchn = 8);
assert_layout!(
    StartInfo,
    1168,
    magic = 0,
    nr_pages = 32,
    shared_info = 40,
    flags = 48,
    store_mfn = 56,
    store_evtchn = 64,
    console.mfn = 72,
    console.evtchn = 80,
    pt_base = 88,
    nr_pt_frames = 96,
    mfn_list = 104,
    mod_start = 112,
    mod_len = 120,
    cmd_line = 128,
    first_p2m_pfn = 1152,
    nr_p2m_frames = 1160,
);
assert_layout!(
    MultibootModList,
    16,
    mod_start = 0,
    mod_end = 4,
    cmdline = 8,
    pad = 12
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dom0_console_overlay() {
        let c = StartInfoConsole::dom0(0x4a0, 0x24);
        assert_eq!(c.dom0_info_off(), 0x4a0);
        assert_eq!(c.dom0_info_size(), 0x24);
        // info_off at byte 72, info_size at byte 76 of start_info.
        assert_eq!(&c.as_bytes()[0..4], &0x4a0u32.to_le_bytes());
        assert_eq!(&c.as_bytes()[4..8], &0x24u32.to_le_bytes());
    }
}
