//! Logging to syslog facility mail, or to stderr when told to.
//!
//! Under inetd fd 2 is the client's socket, so nothing is ever written to stderr unless the
//! admin chose `--log stderr`. When syslog cannot be reached, lines are dropped rather than
//! sent to the client.

use std::io::Write;
use std::sync::Mutex;

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
}

type SyslogLogger = syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>;

/// A program's logger: one per process.
pub struct Logger {
    program: &'static str,
    target: LogTarget,
    syslog: Option<Mutex<SyslogLogger>>,
}

impl Logger {
    pub fn new(program: &'static str, target: LogTarget) -> Logger {
        let syslog = if target == LogTarget::Syslog {
            let fmt = syslog::Formatter3164 {
                facility: syslog::Facility::LOG_MAIL,
                hostname: None,
                process: program.into(),
                pid: std::process::id(),
            };
            syslog::unix(fmt).ok().map(Mutex::new)
        } else {
            None
        };
        Logger {
            program,
            target,
            syslog,
        }
    }

    /// Logs one line. Control characters are replaced so a client-chosen string can never
    /// forge a second log line.
    pub fn log(&self, level: Level, msg: &str) {
        let clean: String = msg
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        match self.target {
            LogTarget::None => {}
            LogTarget::Stderr => {
                let tag = match level {
                    Level::Err => "error",
                    Level::Warning => "warning",
                    Level::Info => "info",
                };
                let _ = writeln!(
                    std::io::stderr(),
                    "{}[{}]: {tag}: {clean}",
                    self.program,
                    std::process::id()
                );
            }
            LogTarget::Syslog => {
                if let Some(l) = &self.syslog {
                    if let Ok(mut l) = l.lock() {
                        let _ = match level {
                            Level::Err => l.err(clean),
                            Level::Warning => l.warning(clean),
                            Level::Info => l.info(clean),
                        };
                    }
                }
            }
        }
    }
}

/// The client's address for logs: `TCPREMOTEIP` (tcpserver, s6), `REMOTE_ADDR` (systemd
/// `Accept=yes`), else `getpeername` on fd 0 (inetd), else "-".
pub fn client_address() -> String {
    for var in ["TCPREMOTEIP", "REMOTE_ADDR"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    use nix::sys::socket::{getpeername, SockaddrStorage};
    match getpeername::<SockaddrStorage>(0) {
        Ok(addr) => match addr.to_string().parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip().to_string(),
            Err(_) => "local".into(),
        },
        Err(_) => "-".into(),
    }
}
