//! Logging to syslog facility mail, or to stderr when told to.
//!
//! Under inetd fd 2 is the client's socket, so nothing is ever written to stderr unless the
//! admin chose `--log stderr`. When syslog cannot be reached, lines are dropped rather than
//! sent to the client.

#![forbid(unsafe_code)]

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
    /// Details an admin looks at only when something is odd.
    Debug,
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
                    Level::Debug => "debug",
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
                            Level::Debug => l.debug(clean),
                        };
                    }
                }
            }
        }
    }
}

/// Reports a usage error of a program in the login chain. Under inetd fd 2 is the client's
/// socket, so the message goes to stderr only when stderr is a terminal or `--log stderr` was
/// asked for; otherwise its first line goes to syslog (facility mail). The caller chooses the
/// exit code (100 for pop-popup and pop-serve, the checkpassword interface's 2 for
/// pop-checkpassword).
pub fn report_usage_error(program: &'static str, msg: &str) {
    use std::io::IsTerminal;
    let args: Vec<String> = std::env::args().collect();
    let asked = args.windows(2).any(|w| w[0] == "--log" && w[1] == "stderr")
        || args.iter().any(|a| a == "--log=stderr");
    if asked || std::io::stderr().is_terminal() {
        let _ = writeln!(std::io::stderr(), "{}", msg.trim_end());
    } else {
        let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg);
        Logger::new(program, LogTarget::Syslog).log(Level::Err, &format!("usage: {first}"));
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
    peer_of(0).unwrap_or_else(|| "-".into())
}

/// The IP address of the peer of socket `fd`, "local" for a Unix socket, None when `fd` is
/// not a socket (a pipe, a terminal).
fn peer_of(fd: i32) -> Option<String> {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    let ss: SockaddrStorage = getpeername(fd).ok()?;
    if let Some(sin) = ss.as_sockaddr_in() {
        Some(sin.ip().to_string())
    } else if let Some(sin6) = ss.as_sockaddr_in6() {
        let ip = sin6.ip();
        Some(
            ip.to_ipv4_mapped()
                .map(|v4| v4.to_string())
                .unwrap_or_else(|| ip.to_string()),
        )
    } else {
        // A Unix socket, or any other family.
        Some("local".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn peer_address_of_a_tcp_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        assert_eq!(peer_of(c.as_raw_fd()).as_deref(), Some("127.0.0.1"));
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(peer_of(a.as_raw_fd()).as_deref(), Some("local"));
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert_eq!(peer_of(r.as_raw_fd()), None);
    }
}
