//! Parsing what the boot loader hands over: command line, memory map, modules.
