//! Xen 4.17's x86_64 PV ABI.
#![no_std]
#![deny(missing_docs)]
