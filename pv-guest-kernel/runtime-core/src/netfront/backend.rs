//! Watching the back end once connected: a hot-unplug (`Netback::detach`,
//! Linux's `xenbus_unregister_driver`) takes the back end to Closing, then
//! Closed, and removes its directory. The front end counts changes of the
//! back end's `state` (a XenStore watch), reads the state only when the
//! count moved, and from then on refuses to send or receive.

use crate::xenbus::XenbusState;

/// Whether a back end in `state` is going away: Closing, Closed, or
/// Unknown (its `state` node gone with its directory). Every other state,
/// Reconfiguring ones included, keeps the device.
pub fn is_gone(state: XenbusState) -> bool {
    matches!(
        state,
        XenbusState::Closing | XenbusState::Closed | XenbusState::Unknown
    )
}

/// What the front end knows of a connected back end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monitor {
    seen: u64,
    gone: Option<XenbusState>,
}

impl Monitor {
    /// A monitor that has looked at the back end after `changes` watch
    /// events (0 before any: the event a watch fires at registration then
    /// costs one read).
    pub fn new(changes: u64) -> Monitor {
        Monitor {
            seen: changes,
            gone: None,
        }
    }

    /// The state the back end went away in, once it has.
    pub fn gone(&self) -> Option<XenbusState> {
        self.gone
    }

    /// Looks at the back end if the watch counted `changes` events since
    /// the last look, reading its state with `read`; returns the state it
    /// went away in (kept for good: a back end that closed does not come
    /// back to this connection). `read` is not called when nothing changed
    /// or the back end is already gone; a `read` that fails leaves the
    /// change to be looked at again.
    pub fn check<E>(
        &mut self,
        changes: u64,
        read: impl FnOnce() -> Result<XenbusState, E>,
    ) -> Result<Option<XenbusState>, E> {
        if self.gone.is_some() || changes == self.seen {
            return Ok(self.gone);
        }
        let st = read()?;
        self.seen = changes;
        if is_gone(st) {
            self.gone = Some(st);
        }
        Ok(self.gone)
    }
}
