//! How the hypervisor ends QEMU: codes written to the `isa-debug-exit` device.
//!
//! QEMU turns a value `v` written to the device into the process exit status
//! `(v << 1) | 1`, so no code here can produce status 0. The test harness and
//! `scripts/run` decode the status with [`QemuExit::from_status`].

/// I/O port of QEMU's `isa-debug-exit` device (`-device isa-debug-exit,iobase=0xf4,iosize=4`).
pub const ISA_DEBUG_EXIT_PORT: u16 = 0xf4;

/// Why the hypervisor stopped the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum QemuExit {
    /// dom0 powered off (or the hypervisor was asked to halt cleanly).
    Poweroff = 0x10,
    /// dom0 asked for a reboot.
    Reboot = 0x11,
    /// dom0 crashed.
    Dom0Crash = 0x12,
    /// A test hook finished successfully (tests only).
    TestPass = 0x13,
    /// The hypervisor panicked.
    Panic = 0x20,
    /// The hypervisor took an exception in its own context.
    Fault = 0x21,
}

impl QemuExit {
    const ALL: [QemuExit; 6] = [
        QemuExit::Poweroff,
        QemuExit::Reboot,
        QemuExit::Dom0Crash,
        QemuExit::TestPass,
        QemuExit::Panic,
        QemuExit::Fault,
    ];

    /// The value to write to [`ISA_DEBUG_EXIT_PORT`].
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The exit status QEMU reports for this code.
    pub const fn status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// Decodes a QEMU exit status; `None` if the hypervisor did not produce it
    /// (for example QEMU killed by a deadline, or a triple-fault with `-no-reboot`).
    pub fn from_status(status: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.status() == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_and_is_never_zero() {
        for e in QemuExit::ALL {
            assert_ne!(e.status(), 0);
            assert_eq!(QemuExit::from_status(e.status()), Some(e));
        }
        assert_eq!(QemuExit::from_status(0), None);
        assert_eq!(QemuExit::Poweroff.status(), 33);
    }
}
