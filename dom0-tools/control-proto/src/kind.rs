//! Frame kinds: the one table of kind numbers.
//!
//! The number says both what a frame carries and its class: `0x01..=0x3f` are
//! requests (host to dom0), `0x40..=0x7f` responses (dom0 to host, echoing the
//! request id) and `0x80..=0xbf` events (dom0 to host, request id 0).

/// Declares [`Kind`] from one list of names and numbers.
macro_rules! kinds {
    ($( $(#[doc = $doc:literal])* $name:ident = $num:literal, )*) => {
        /// What a frame carries. The byte at offset 3 of every frame.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Kind {
            $( $(#[doc = $doc])* $name = $num, )*
        }

        impl Kind {
            /// Every kind, in table order.
            pub const ALL: &'static [Kind] = &[$(Kind::$name),*];

            /// The kind with wire number `n`, if there is one.
            pub const fn from_u8(n: u8) -> Option<Kind> {
                match n {
                    $( $num => Some(Kind::$name), )*
                    _ => None,
                }
            }

            /// The kind's name, as the docs spell it.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Kind::$name => stringify!($name), )*
                }
            }
        }
    };
}

kinds! {
    /// [`Request::Hello`](crate::Request::Hello)
    Hello = 0x01,
    /// [`Request::Info`](crate::Request::Info)
    Info = 0x02,
    /// [`Request::List`](crate::Request::List)
    List = 0x03,
    /// [`Request::Create`](crate::Request::Create)
    Create = 0x04,
    /// [`Request::Pause`](crate::Request::Pause)
    Pause = 0x05,
    /// [`Request::Unpause`](crate::Request::Unpause)
    Unpause = 0x06,
    /// [`Request::Shutdown`](crate::Request::Shutdown)
    Shutdown = 0x07,
    /// [`Request::Destroy`](crate::Request::Destroy)
    Destroy = 0x08,
    /// [`Request::ConsoleRead`](crate::Request::ConsoleRead)
    ConsoleRead = 0x09,
    /// [`Request::ConsoleAttach`](crate::Request::ConsoleAttach)
    ConsoleAttach = 0x0a,
    /// [`Request::ConsoleInput`](crate::Request::ConsoleInput)
    ConsoleInput = 0x0b,
    /// [`Request::ConsoleDetach`](crate::Request::ConsoleDetach)
    ConsoleDetach = 0x0c,
    /// [`Request::UploadBegin`](crate::Request::UploadBegin)
    UploadBegin = 0x0d,
    /// [`Request::UploadChunk`](crate::Request::UploadChunk)
    UploadChunk = 0x0e,
    /// [`Request::UploadEnd`](crate::Request::UploadEnd)
    UploadEnd = 0x0f,
    /// [`Request::Images`](crate::Request::Images)
    Images = 0x10,
    /// [`Request::Dmesg`](crate::Request::Dmesg)
    Dmesg = 0x11,
    /// [`Request::ShutdownHost`](crate::Request::ShutdownHost)
    ShutdownHost = 0x12,
    /// Since version 2.
    AskShutdown = 0x13,
    /// Since version 2.
    XsRead = 0x14,
    /// Since version 2.
    XsWrite = 0x15,
    /// Since version 2.
    XsRm = 0x16,
    /// Since version 2.
    XsList = 0x17,
    /// Since version 2.
    XsWatch = 0x18,
    /// Since version 2.
    XsUnwatch = 0x19,
    /// Version 2, added with the fast link (an older agent answers it as an
    /// unknown kind): [`Request::Devices`](crate::Request::Devices)
    Devices = 0x1a,
    /// Version 2, added with the block back end: [`Request::BlockList`](crate::Request::BlockList)
    BlockList = 0x30,
    /// Version 2: [`Request::BlockAttach`](crate::Request::BlockAttach)
    BlockAttach = 0x31,
    /// Version 2: [`Request::BlockDetach`](crate::Request::BlockDetach)
    BlockDetach = 0x32,
    /// Version 2, added with the net back end: [`Request::NetworkList`](crate::Request::NetworkList)
    NetworkList = 0x33,
    /// Version 2: [`Request::NetworkAttach`](crate::Request::NetworkAttach)
    NetworkAttach = 0x34,
    /// Version 2: [`Request::NetworkDetach`](crate::Request::NetworkDetach)
    NetworkDetach = 0x35,
    /// Version 2, added with `cpus =`: [`Request::VcpuList`](crate::Request::VcpuList)
    VcpuList = 0x36,
    /// Version 2, added with `vcpu-pin` (an older agent answers it as an unknown
    /// kind): [`Request::VcpuPin`](crate::Request::VcpuPin)
    VcpuPin = 0x37,
    /// Version 2, added with volumes (an older agent answers it as an unknown
    /// kind): [`Request::VolumeCreate`](crate::Request::VolumeCreate)
    VolumeCreate = 0x1b,
    /// Version 2, added with volumes: [`Request::VolumeList`](crate::Request::VolumeList)
    VolumeList = 0x1c,
    /// Version 2, added with volumes: [`Request::VolumeRm`](crate::Request::VolumeRm)
    VolumeRm = 0x1d,

    /// [`Response::HelloOk`](crate::Response::HelloOk)
    HelloOk = 0x40,
    /// [`Response::Ok`](crate::Response::Ok)
    Ok = 0x41,
    /// [`Response::Info`](crate::Response::Info)
    InfoReply = 0x42,
    /// [`Response::Domains`](crate::Response::Domains)
    Domains = 0x43,
    /// [`Response::Created`](crate::Response::Created)
    Created = 0x44,
    /// [`Response::Console`](crate::Response::Console)
    Console = 0x45,
    /// [`Response::UploadReady`](crate::Response::UploadReady)
    UploadReady = 0x46,
    /// [`Response::UploadAck`](crate::Response::UploadAck)
    UploadAck = 0x47,
    /// [`Response::Uploaded`](crate::Response::Uploaded)
    Uploaded = 0x48,
    /// [`Response::Images`](crate::Response::Images)
    ImagesReply = 0x49,
    /// [`Response::Dmesg`](crate::Response::Dmesg)
    DmesgReply = 0x4a,
    /// Since version 2.
    XsValue = 0x4b,
    /// Since version 2.
    XsNodes = 0x4c,
    /// Version 2, added with the fast link: [`Response::Devices`](crate::Response::Devices)
    DevicesReply = 0x4d,
    /// Version 2, added with the block back end: [`Response::Blocks`](crate::Response::Blocks)
    BlocksReply = 0x70,
    /// Version 2, added with the net back end: [`Response::Networks`](crate::Response::Networks)
    NetworksReply = 0x71,
    /// Version 2, added with `cpus =`: [`Response::Vcpus`](crate::Response::Vcpus)
    VcpusReply = 0x72,
    /// Version 2, added with volumes: [`Response::Volumes`](crate::Response::Volumes)
    Volumes = 0x4e,
    /// [`Response::Error`](crate::Response::Error)
    Error = 0x7f,

    /// [`Event::ConsoleOutput`](crate::Event::ConsoleOutput)
    ConsoleOutput = 0x80,
    /// [`Event::ConsoleClosed`](crate::Event::ConsoleClosed)
    ConsoleClosed = 0x81,
    /// Since version 2.
    XsWatchEvent = 0x82,
}

/// Who sends a kind of frame, and whether it answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Host to dom0; carries a fresh request id.
    Request,
    /// Dom0 to host; echoes the id of the request it answers.
    Response,
    /// Dom0 to host, unsolicited; request id 0.
    Event,
}

impl Kind {
    /// The kind's class, from its number range.
    pub const fn class(self) -> Class {
        match self as u8 {
            0x00..=0x3f => Class::Request,
            0x40..=0x7f => Class::Response,
            _ => Class::Event,
        }
    }
}

impl core::fmt::Display for Kind {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (0x{:02x})", self.name(), *self as u8)
    }
}

impl core::fmt::Display for Class {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Class::Request => "request",
            Class::Response => "response",
            Class::Event => "event",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_are_unique() {
        for &k in Kind::ALL {
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        for n in 0..=u8::MAX {
            if let Some(k) = Kind::from_u8(n) {
                assert_eq!(k as u8, n);
            }
        }
        assert_eq!(Kind::from_u8(0), None);
    }

    #[test]
    fn classes_follow_ranges() {
        assert_eq!(Kind::Hello.class(), Class::Request);
        assert_eq!(Kind::ShutdownHost.class(), Class::Request);
        assert_eq!(Kind::HelloOk.class(), Class::Response);
        assert_eq!(Kind::Error.class(), Class::Response);
        assert_eq!(Kind::ConsoleOutput.class(), Class::Event);
        assert!(Kind::ALL.iter().all(|&k| (k as u8) < 0xc0));
    }
}
