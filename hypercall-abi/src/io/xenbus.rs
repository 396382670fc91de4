//! XenBus device states (`io/xenbus.h`).
//!
//! Each end of a split device writes its own state, as a decimal string,
//! to the `state` key of its XenStore directory and watches the other's.

/// `enum xenbus_state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u32)]
pub enum XenbusState {
    /// Not yet known.
    Unknown = 0,
    /// Setting up.
    Initialising = 1,
    /// Back end: waiting for the front end's details (features published).
    InitWait = 2,
    /// Front end: ring and event channel published.
    Initialised = 3,
    /// Connected.
    Connected = 4,
    /// Shutting down.
    Closing = 5,
    /// Closed.
    Closed = 6,
    /// Reconfiguring.
    Reconfiguring = 7,
    /// Reconfigured.
    Reconfigured = 8,
}

impl XenbusState {
    /// The state numbered `n`, if defined.
    pub const fn from_raw(n: u32) -> Option<XenbusState> {
        use XenbusState::*;
        Some(match n {
            0 => Unknown,
            1 => Initialising,
            2 => InitWait,
            3 => Initialised,
            4 => Connected,
            5 => Closing,
            6 => Closed,
            7 => Reconfiguring,
            8 => Reconfigured,
            _ => return None,
        })
    }

    /// Parse the value of a `state` key (a decimal number).
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        let s = core::str::from_utf8(value).ok()?;
        Self::from_raw(s.trim_end_matches('\0').parse().ok()?)
    }

    /// The value to write to a `state` key.
    pub const fn as_str(self) -> &'static str {
        use XenbusState::*;
        match self {
            Unknown => "0",
            Initialising => "1",
            InitWait => "2",
            Initialised => "3",
            Connected => "4",
            Closing => "5",
            Closed => "6",
            Reconfiguring => "7",
            Reconfigured => "8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip() {
        for n in 0..=8 {
            let s = XenbusState::from_raw(n).unwrap();
            assert_eq!(XenbusState::parse(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(XenbusState::parse(b"9"), None);
        assert_eq!(XenbusState::parse(b"x"), None);
    }
}
