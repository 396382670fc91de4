//! PV bootstrap: ELF images and their Xen notes.
#![no_std]
#![deny(missing_docs)]
