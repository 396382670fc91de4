//! PV bootstrap, shared by the hypervisor (building dom0) and dom0's toolstack
//! (building domUs): checked parsing of ELF images and their notes. The start-of-day
//! layout and the start_info fill will join it.
//!
//! Every input is an image from a boot loader or a guest's owner: possibly truncated,
//! corrupt or hostile. Nothing here panics, indexes unchecked or overflows on it.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod elf;
