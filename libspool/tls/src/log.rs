//! Log lines to syslog (facility mail) or stderr. Under inetd fd 2 is the client's socket, so
//! nothing goes to stderr unless the admin asked for it. The syslog socket is connected before
//! the sandbox closes the door on new descriptors, shared by the forked processes, and its
//! number is known ([`syslog_fd`]) so the sandbox keeps it.

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::OnceLock;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Syslog,
    Stderr,
    None,
}

impl std::str::FromStr for LogTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "syslog" => Ok(LogTarget::Syslog),
            "stderr" => Ok(LogTarget::Stderr),
            "none" => Ok(LogTarget::None),
            _ => Err(format!("unknown log target {s:?} (syslog, stderr, none)")),
        }
    }
}

/// Severity, mapped to syslog levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Err,
    Warning,
    Info,
    /// Details an admin looks at only when something is odd.
    Debug,
}

struct State {
    target: LogTarget,
    prefix: String,
    syslog: Option<UnixDatagram>,
}

/// The syslog socket's descriptor, if one is open.
pub fn syslog_fd() -> Option<RawFd> {
    STATE.get()?.syslog.as_ref().map(|s| s.as_raw_fd())
}

static STATE: OnceLock<State> = OnceLock::new();

/// Sets the target once per process; `prefix` (e.g. `addr=192.0.2.1`) starts every line.
/// Without a reachable /dev/log, syslog lines are dropped (never sent to the client).
pub fn init(target: LogTarget, prefix: String) {
    let syslog = (target == LogTarget::Syslog)
        .then(|| {
            let s = UnixDatagram::unbound().ok()?;
            s.connect("/dev/log").ok()?;
            Some(s)
        })
        .flatten();
    let _ = STATE.set(State {
        target,
        prefix,
        syslog,
    });
}

/// Logs one line (control characters replaced, so a client-chosen name cannot forge lines).
pub fn log(level: Level, msg: &str) {
    let Some(st) = STATE.get() else { return };
    let clean: String = msg
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match st.target {
        LogTarget::None => {}
        LogTarget::Stderr => {
            let _ = writeln!(std::io::stderr(), "pop-tls: {} {clean}", st.prefix);
        }
        LogTarget::Syslog => {
            let sev = match level {
                Level::Err => 3,
                Level::Warning => 4,
                Level::Info => 6,
                Level::Debug => 7,
            };
            // RFC 3164 as syslog(3) writes it to /dev/log: facility mail (2).
            let line = format!(
                "<{}>pop-tls[{}]: {} {clean}",
                2 * 8 + sev,
                std::process::id(),
                st.prefix
            );
            if let Some(s) = &st.syslog {
                let _ = s.send(line.as_bytes());
            }
        }
    }
}
