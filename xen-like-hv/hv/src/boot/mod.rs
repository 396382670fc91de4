//! What the boot loader hands over, read once at boot: multiboot2 information and ACPI.

pub mod acpi;
pub mod multiboot;
