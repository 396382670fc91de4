//! A front end's XenBus state machine (`io/xenbus.h`), as Linux's block and
//! network front ends drive it.
//!
//! Each end writes its state to its own `state` node and watches the
//! other's. The front end's path through a connection is
//!
//! ```text
//! Initialising --(back end InitWait: ring granted, port allocated, details written)--> Initialised
//! Initialised  --(back end Connected)--> Connected
//! Connected    --(back end Closing, or the guest detaches)--> Closing --> Closed
//! Closed       --(back end in InitWait again: reconnect)--> Initialised
//! ```
//!
//! plus `Reconfiguring -> Reconfigured -> Connected` for the (rare) online
//! reconfiguration, and `Closing` from anywhere on a fatal error
//! (`xenbus_dev_fatal`). Switching to the state one is already in is a
//! no-op, as in `xenbus_switch_state`.

pub use hypercall_abi::io::xenbus::XenbusState;

/// A transition the front end may not make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IllegalTransition {
    /// Where it was.
    pub from: XenbusState,
    /// Where it was asked to go.
    pub to: XenbusState,
}

impl core::fmt::Display for IllegalTransition {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "illegal xenbus transition {:?} -> {:?}",
            self.from, self.to
        )
    }
}

/// Whether a front end may go from `from` to `to`.
pub fn frontend_may(from: XenbusState, to: XenbusState) -> bool {
    use XenbusState::*;
    if from == to {
        return true;
    }
    match (from, to) {
        // Fatal errors and orderly shutdown: Closing from anywhere live.
        (
            Unknown | Initialising | Initialised | Connected | Reconfiguring | Reconfigured,
            Closing,
        ) => true,
        (Unknown | Closed, Initialising) => true,
        // blkfront reconnects straight from Closed when the back end is in
        // InitWait again.
        (Closed, Initialised) => true,
        (Initialising, Initialised | Connected | Closed) => true,
        (Initialised, Connected | Closed) => true,
        (Connected, Reconfiguring | Closed) => true,
        (Reconfiguring, Reconfigured) => true,
        (Reconfigured, Connected) => true,
        (Closing, Closed) => true,
        _ => false,
    }
}

/// What a front end should do when the back end's `state` changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendAction {
    /// Nothing now.
    None,
    /// The back end waits for us: allocate and grant the ring, allocate the
    /// event channel, write `ring-ref`, `event-channel`, `protocol`, then
    /// switch to `Initialised`.
    Publish,
    /// The back end is connected: read its details (sectors, features),
    /// then switch to `Connected`.
    Connect,
    /// The back end is going away: stop issuing requests, switch to
    /// `Closing`, then `Closed` once quiesced.
    Close,
    /// The back end closed: release the ring and the port; switch to
    /// `Closed`.
    Closed,
}

/// A front end's state and the rules for changing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frontend {
    state: XenbusState,
}

impl Default for Frontend {
    fn default() -> Self {
        Self::new()
    }
}

impl Frontend {
    /// A new device: `Initialising`.
    pub const fn new() -> Self {
        Frontend {
            state: XenbusState::Initialising,
        }
    }

    /// The current state.
    pub const fn state(&self) -> XenbusState {
        self.state
    }

    /// Move to `to` if a front end may; the caller then writes
    /// `to.as_str()` to its `state` node. Returns whether the state
    /// changed (`false` for a switch to the current state).
    pub fn switch(&mut self, to: XenbusState) -> Result<bool, IllegalTransition> {
        if !frontend_may(self.state, to) {
            return Err(IllegalTransition {
                from: self.state,
                to,
            });
        }
        let changed = self.state != to;
        self.state = to;
        Ok(changed)
    }

    /// What to do now that the back end is in `backend` (the
    /// `otherend_changed` logic of Linux's block and net front ends).
    pub fn on_backend(&self, backend: XenbusState) -> FrontendAction {
        use XenbusState::*;
        match (backend, self.state) {
            (InitWait, Initialising | Closed) => FrontendAction::Publish,
            (Connected, Initialised) => FrontendAction::Connect,
            // netfront publishes and connects in one go when it first sees
            // a connected back end.
            (Connected, Initialising) => FrontendAction::Publish,
            (Closing, Closing | Closed) => FrontendAction::None,
            (Closing, _) => FrontendAction::Close,
            (Closed, Closed) => FrontendAction::None,
            (Closed, _) => FrontendAction::Closed,
            _ => FrontendAction::None,
        }
    }
}
