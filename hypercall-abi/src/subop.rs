//! The declarative pattern shared by every sub-operation table.
//!
//! Most hypercalls multiplex on a command number (`EVTCHNOP_*`,
//! `GNTTABOP_*`, `MMUEXT_*`, ...). Each family declares its commands once,
//! with [`subops!`](crate::subops): one row per command giving the number, the enum variant,
//! the argument type, Xen's name and the `__XEN_INTERFACE_VERSION__` from
//! which Xen's headers expose it. From that one table come the number enum,
//! `from_nr`, names, interface-version filtering, a [`SubOp`] implementation
//! and a [`SubOpDesc`] listing for golden tests and tools ([`FAMILIES`]
//! lists them all).
//!
//! The hypervisor's handler for, say, `event_channel_op` decodes `cmd` with
//! `EvtchnOp::from_nr` and answers `-ENOSYS` for `None`; the argument type
//! named in the row is what it copies in from the guest handle.

/// What every sub-operation enum offers, for code generic over families.
pub trait SubOp: Copy + Eq + 'static {
    /// Xen's prefix for the family's names (`"EVTCHNOP_"`).
    const PREFIX: &'static str;
    /// Every command of the family.
    const ALL: &'static [SubOpDesc];
    /// The command with number `nr`, if defined.
    fn from_nr(nr: u32) -> Option<Self>;
    /// The command number.
    fn nr(self) -> u32;
    /// Xen's name without the prefix.
    fn name(self) -> &'static str;
    /// Lowest `__XEN_INTERFACE_VERSION__` whose headers define it.
    fn since(self) -> u32;
}

/// Every sub-operation family: (prefix, rows). For tools and golden tests.
pub const FAMILIES: &[(&str, &[SubOpDesc])] = &[
    ("MMU_", crate::mmu::MmuCmd::ALL),
    ("MMUEXT_", crate::mmu::MmuextCmd::ALL),
    ("XENMEM_", crate::memory::XenmemOp::ALL),
    ("CONSOLEIO_", crate::console::ConsoleIo::ALL),
    ("XENVER_", crate::version::XenVer::ALL),
    ("VMASST_CMD_", crate::vm_assist::VmAssistCmd::ALL),
    ("EVTCHNOP_", crate::evtchn::EvtchnOp::ALL),
    ("GNTTABOP_", crate::gnttab::GnttabOp::ALL),
    ("VCPUOP_", crate::vcpu::VcpuOp::ALL),
    ("SCHEDOP_", crate::sched::SchedOp::ALL),
    ("CALLBACKOP_", crate::callback::CallbackOp::ALL),
    ("XENNMI_", crate::callback::NmiOp::ALL),
    ("PHYSDEVOP_", crate::physdev::PhysdevOp::ALL),
];

/// One row of a sub-operation table, for golden tests and tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOpDesc {
    /// The command number the guest passes.
    pub nr: u32,
    /// Xen's name without its prefix (`"bind_virq"` for `EVTCHNOP_bind_virq`).
    pub name: &'static str,
    /// The Rust argument type (`"()"` when the command takes none).
    pub arg: &'static str,
    /// `size_of` the argument type.
    pub arg_size: usize,
    /// Lowest `__XEN_INTERFACE_VERSION__` at which Xen's headers define it.
    pub since: u32,
}

/// The name of an identifier, without a raw-identifier `r#` prefix (Xen's
/// `SCHEDOP_yield` is `r#yield` in a table).
#[doc(hidden)]
pub const fn ident_name(ident: &'static str) -> &'static str {
    let bytes = ident.as_bytes();
    if bytes.len() > 2 && bytes[0] == b'r' && bytes[1] == b'#' {
        let (_, tail) = bytes.split_at(2);
        if let Ok(s) = core::str::from_utf8(tail) {
            return s;
        }
    }
    ident
}

/// Declare a sub-operation family. See the module documentation.
///
/// ```text
/// subops! {
///     /// Doc of the enum.
///     pub enum EvtchnOp: "EVTCHNOP_" {
///         /// Doc of the command.
///         4 => Send(EvtchnSend) send since 0x0000_0000;
///     }
/// }
/// ```
#[macro_export]
macro_rules! subops {
    (
        $(#[$meta:meta])*
        $vis:vis enum $Enum:ident : $prefix:literal {
            $(
                $(#[$vdoc:meta])*
                $nr:literal => $Variant:ident($arg:ty) $name:ident since $since:literal;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u32)]
        $vis enum $Enum {
            $( $(#[$vdoc])* $Variant = $nr, )*
        }

        impl $Enum {
            /// Xen's prefix for this family's names.
            pub const PREFIX: &'static str = $prefix;

            /// Every command of the family, in declaration order.
            pub const ALL: &'static [$crate::subop::SubOpDesc] = &[
                $(
                    $crate::subop::SubOpDesc {
                        nr: $nr,
                        name: $crate::subop::ident_name(stringify!($name)),
                        arg: stringify!($arg),
                        arg_size: ::core::mem::size_of::<$arg>(),
                        since: $since,
                    },
                )*
            ];

            /// The command with number `nr`, if the family defines one.
            pub const fn from_nr(nr: u32) -> Option<Self> {
                match nr {
                    $( $nr => Some(Self::$Variant), )*
                    _ => None,
                }
            }

            /// The command number.
            pub const fn nr(self) -> u32 {
                self as u32
            }

            /// Xen's name without the prefix.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$Variant => $crate::subop::ident_name(stringify!($name)), )*
                }
            }

            /// Lowest `__XEN_INTERFACE_VERSION__` whose headers define it.
            pub const fn since(self) -> u32 {
                match self {
                    $( Self::$Variant => $since, )*
                }
            }

            /// Whether a guest built against interface version `iface` sees
            /// this command.
            pub const fn available_in(self, iface: u32) -> bool {
                self.since() <= iface
            }
        }

        impl $crate::subop::SubOp for $Enum {
            const PREFIX: &'static str = $prefix;
            const ALL: &'static [$crate::subop::SubOpDesc] = <$Enum>::ALL;
            fn from_nr(nr: u32) -> Option<Self> {
                <$Enum>::from_nr(nr)
            }
            fn nr(self) -> u32 {
                <$Enum>::nr(self)
            }
            fn name(self) -> &'static str {
                <$Enum>::name(self)
            }
            fn since(self) -> u32 {
                <$Enum>::since(self)
            }
        }
    };
}
