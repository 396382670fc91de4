//! `dom0ctl console`: the interactive console.

use std::io::{self, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use control_proto::{DomRef, Event, MAX_DATA, Request, Response};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::termios::{OptionalActions, OutputModes, Termios, tcgetattr, tcsetattr};

use crate::client::{Client, Incoming};
use crate::error::Error;

/// Ctrl-], as in telnet and `xl console`.
const DETACH: u8 = 0x1d;

/// Puts the terminal in raw mode (keys go straight to the guest; Ctrl-C too),
/// keeping `\n` to `\r\n` on output, and restores it when dropped.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        raw.output_modes |= OutputModes::OPOST | OutputModes::ONLCR;
        tcsetattr(&stdin, OptionalActions::Now, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Attaches to `dom`'s console: prints the log so far, then the output as it
/// comes, and sends what is typed, until Ctrl-], end of input, or the domain goes.
pub fn follow(c: &mut Client, dom: DomRef) -> Result<(), Error> {
    let attach = Request::ConsoleAttach { dom: dom.clone() };
    let log = match c
        .call(&attach)
        .map_err(|e| e.context(format_args!("console {dom}")))?
    {
        Response::Console { data } => data,
        other => return Err(c.unexpected(&attach, &other)),
    };
    let mut out = io::stdout().lock();
    write_out(&mut out, &log);

    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    let _raw = if tty {
        let raw = RawMode::enter()
            .map_err(|e| Error::Input(format!("cannot put the terminal in raw mode: {e}")))?;
        eprint!("[dom0ctl: attached to {dom}; Ctrl-] detaches]\r\n");
        Some(raw)
    } else {
        None
    };

    let mut buf = vec![0u8; MAX_DATA.min(4096)];
    loop {
        while let Some(inc) = c.next_incoming()? {
            match inc {
                Incoming::Event(Event::ConsoleOutput { data, .. }) => write_out(&mut out, &data),
                Incoming::Event(Event::ConsoleClosed { domid, reason }) => {
                    eprint!("\r\n[dom0ctl: console of domain {domid} closed: {reason}]\r\n");
                    return Ok(());
                }
                // Answers to console input: only errors matter.
                Incoming::Response(_, Response::Error(e)) => {
                    eprint!("\r\n[dom0ctl: input not delivered: {}]\r\n", e.text());
                }
                Incoming::Response(..) | Incoming::Event(Event::XsWatchEvent { .. }) => {}
            }
        }

        let (stdin_ready, link_ready) = {
            let mut fds = [
                PollFd::new(&stdin, PollFlags::IN),
                PollFd::from_borrowed_fd(c.stream().as_fd(), PollFlags::IN),
            ];
            let wait = Timespec {
                tv_sec: 1,
                tv_nsec: 0,
            };
            match poll(&mut fds, Some(&wait)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(Error::Input(format!("cannot wait for input: {e}"))),
            }
            let ready = |f: &PollFd<'_>| {
                f.revents()
                    .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
            };
            (ready(&fds[0]), ready(&fds[1]))
        };

        if link_ready {
            c.fill(Duration::from_millis(1))?;
        } else if !stdin_ready {
            c.link_quiet();
        }
        if stdin_ready {
            let n = match rustix::io::read(&stdin, &mut buf[..]) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => continue,
                Err(e) => return Err(Error::Input(format!("cannot read the terminal: {e}"))),
            };
            let typed = &buf[..n];
            let (keep, detach) = match typed.iter().position(|&b| b == DETACH) {
                Some(i) => (&typed[..i], true),
                None => (typed, n == 0),
            };
            if !keep.is_empty() {
                c.send(&Request::ConsoleInput {
                    dom: dom.clone(),
                    data: keep.to_vec(),
                })?;
            }
            if detach {
                // Best effort: the domain keeps running whatever dom0 says.
                let _ = c.call(&Request::ConsoleDetach);
                if tty {
                    eprint!("\r\n[dom0ctl: detached from {dom}]\r\n");
                }
                return Ok(());
            }
        }
    }
}

fn write_out(out: &mut impl Write, data: &[u8]) {
    let _ = out.write_all(data).and_then(|()| out.flush());
}
