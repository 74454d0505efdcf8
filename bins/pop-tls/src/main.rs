//! pop-tls: the TLS front of the POP3 chain, UCSPI style.
//! `pop-tls [OPTIONS] (--cert CHAIN.pem --key KEY.pem | --cert-dir DIR) PROG [ARGS...]`.
//!
//! Exit status: PROG's when it ran; 1 when the client failed the handshake or broke TLS;
//! 100 for a usage error; 111 for a system or configuration failure. See doc/pop-tls.8.

// One `unsafe`: the fork of the PROXY header child (`proxy_header`).
#![deny(unsafe_code)]

use clap::Parser;
use popspool_tls::front::{self, Config, Mode, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_USER};
use popspool_tls::keys::KeySource;
use popspool_tls::log::{self, Level, LogTarget};
use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pop-tls",
    version,
    about = "TLS front for a POP3 program: implicit TLS or UCSPI-TLS (STLS), rustls in a sandboxed process"
)]
struct Args {
    /// PEM certificate chain, end-entity certificate first.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, SEC1 or PKCS#1; ECDSA P-256/P-384, Ed25519, RSA).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,

    /// Directory of DIR/<server name>.pem files, each holding a key and its chain, chosen by
    /// SNI; without SNI or a file for the name, --cert/--key, else DIR/default.pem.
    #[arg(long)]
    cert_dir: Option<PathBuf>,

    /// Start PROG in clear text with the UCSPI-TLS descriptors; TLS begins when PROG asks.
    #[arg(long)]
    starttls: bool,

    /// Seconds the client has to complete the handshake.
    #[arg(long, default_value_t = DEFAULT_HANDSHAKE_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..=3600))]
    handshake_timeout: u64,

    /// Seconds output to the client may make no progress (a client that stops reading)
    /// before the session ends.
    #[arg(long, default_value_t = popspool_tls::session::DEFAULT_WRITE_STALL.as_secs(), value_parser = clap::value_parser!(u64).range(1..=86400))]
    write_timeout: u64,

    /// A client whose TCP connection goes silent is dropped about SECS seconds after its
    /// last sign of life (keepalive probes and TCP_USER_TIMEOUT on the client's socket);
    /// 0 leaves the socket as it is.
    #[arg(long, value_name = "SECS", default_value_t = front::DEFAULT_TCP_KEEPALIVE.as_secs(), value_parser = clap::value_parser!(u64).range(0..=86400))]
    tcp_keepalive: u64,

    /// The unprivileged user the network process runs as when started as root.
    #[arg(long, default_value = DEFAULT_USER)]
    user: String,

    /// Session-ticket key file (root-owned, mode 0600) shared by all connections, so clients
    /// can resume; made and rotated with --rotate-ticket-keys.
    #[arg(long, value_name = "FILE")]
    ticket_keys: Option<PathBuf>,

    /// Write a fresh key first into FILE, keep the previous one, and exit (run it at most
    /// every 12 hours, e.g. from a timer).
    #[arg(long, value_name = "FILE", exclusive = true)]
    rotate_ticket_keys: Option<PathBuf>,

    /// Expect a PROXY protocol header (v1 or v2, as HAProxy's send-proxy and send-proxy-v2
    /// send it) before the TLS handshake; refuse the connection without one. The client it
    /// names is the session's client: logs and the TCP* variables PROG sees.
    #[arg(long)]
    proxy_protocol: bool,

    /// Where logs go: syslog (facility mail), stderr, or none. Under inetd stderr is the
    /// client's socket: use stderr only where it is not.
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// PROG [ARGS...], passed to exec unchanged.
    #[arg(
        required_unless_present = "rotate_ticket_keys",
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PROG [ARGS]"
    )]
    program: Vec<OsString>,
}

/// Usage errors go to stderr only when it cannot be the client's socket (a terminal, or
/// `--log stderr` asked for); otherwise to syslog.
fn usage_error(msg: &str) -> ExitCode {
    use std::io::IsTerminal;
    let args: Vec<String> = std::env::args().collect();
    let asked = args.windows(2).any(|w| w[0] == "--log" && w[1] == "stderr")
        || args.iter().any(|a| a == "--log=stderr");
    if asked || std::io::stderr().is_terminal() {
        let _ = writeln!(std::io::stderr(), "{}", msg.trim_end());
    } else {
        let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or(msg);
        log::init(LogTarget::Syslog, String::new());
        log::log(Level::Err, &format!("usage: {first}"));
    }
    ExitCode::from(front::EXIT_USAGE)
}

/// Longest report of the header child: the four address variables and the removals, or a
/// refusal's reason.
const MAX_HEADER_REPORT: usize = 1024;

/// Reads the PROXY header on descriptor 0 in a short-lived confined child (the TLS user, no
/// capability, no_new_privs, Landlock with nothing granted; it takes exactly the header's
/// bytes) and puts the client it names in this process's environment (see
/// `spool_wire::proxy::Header::environment`), before the TLS front reads the same variables
/// for its log lines and hands them to PROG. On refusal: logs the reason with the proxy's
/// address and returns the exit status, having sent nothing.
fn proxy_header(target: LogTarget, user: &str) -> Result<(), u8> {
    let refuse = |msg: &str, code: u8| {
        log::init(target, format!("proxy={}", front::client_address()));
        log::log(Level::Warning, msg);
        Err(code)
    };
    let system = |msg: String| {
        log::init(target, format!("proxy={}", front::client_address()));
        log::log(Level::Err, &msg);
        Err(front::EXIT_SYSTEM)
    };
    // Looked up while NSS can still be reached.
    let user = match popspool_tls::sandbox::lookup_user(user) {
        Ok(u) => u,
        Err(e) => return system(e),
    };
    let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return system(format!("pipe: {e}")),
    };
    // SAFETY: single-threaded here; the child runs `header_child` and exits.
    #[allow(unsafe_code)]
    let forked = unsafe { nix::unistd::fork() };
    let child = match forked {
        Err(e) => return system(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let code = header_child(w, user.as_ref(), target);
            std::process::exit(code)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };
    drop(w);
    let mut report = Vec::new();
    let read = std::io::Read::read_to_end(
        &mut std::io::Read::take(std::fs::File::from(r), MAX_HEADER_REPORT as u64 + 1),
        &mut report,
    );
    let status = nix::sys::wait::waitpid(child, None);
    if let Err(e) = read {
        return system(format!("reading the header child's report: {e}"));
    }
    if !matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))) {
        return system(format!("the header child failed: {status:?}"));
    }
    match parse_report(&report) {
        Ok(Report::Client(changes)) => {
            for (name, value) in changes {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
            Ok(())
        }
        Ok(Report::Refused { io, reason }) => refuse(
            &format!("refused: {reason}"),
            if io {
                front::EXIT_SYSTEM
            } else {
                front::EXIT_CLIENT
            },
        ),
        Err(e) => system(format!("the header child's report: {e}")),
    }
}

/// The header child: confines itself, reads and parses the header, writes the report
/// (`client` then one `NAME=VALUE` or `NAME` (to remove) per line, or `refused 0|1 REASON`).
fn header_child(
    w: std::os::fd::OwnedFd,
    user: Option<&nix::unistd::User>,
    target: LogTarget,
) -> i32 {
    use popspool_tls::sandbox;
    use spool_wire::proxy::{read_from_fd, ProxyError};
    let confined = user
        .map_or(Ok(()), sandbox::drop_to)
        .and_then(|()| sandbox::no_dumps())
        .and_then(|()| sandbox::landlock_nothing().map(drop));
    if let Err(e) = confined {
        log::init(target, format!("proxy={}", front::client_address()));
        log::log(
            Level::Err,
            &format!("cannot confine the header reader: {e}"),
        );
        return i32::from(front::EXIT_SYSTEM);
    }
    let got = read_from_fd(0, spool_wire::limits::PROXY_HEADER_TIMEOUT);
    #[cfg(debug_assertions)]
    if std::env::var_os("POPSPOOL_TEST_SELF").is_some() {
        log::init(target, format!("proxy={}", front::client_address()));
        log::log(
            Level::Info,
            &format!(
                "test-parsed proxy-header by {}",
                spool_wire::testhooks::self_state()
            ),
        );
    }
    let report = match got {
        Ok(header) => {
            let mut s = String::from("client\n");
            for (name, value) in header.environment() {
                match value {
                    Some(v) => s.push_str(&format!("{name}={v}\n")),
                    None => s.push_str(&format!("{name}\n")),
                }
            }
            s
        }
        Err(e) => {
            let io = u8::from(matches!(e, ProxyError::Io(_)));
            format!("refused {io} {}\n", e.to_string().replace('\n', " "))
        }
    };
    let mut f = std::fs::File::from(w);
    match f.write_all(report.as_bytes()) {
        Ok(()) => 0,
        Err(_) => i32::from(front::EXIT_SYSTEM),
    }
}

/// What the header child reported.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// Variables to set (Some) or remove (None).
    Client(Vec<(&'static str, Option<String>)>),
    Refused {
        io: bool,
        reason: String,
    },
}

/// The only parser of the header child's report: at most [`MAX_HEADER_REPORT`] bytes, only
/// the names `Header::environment` gives, values of address and port characters alone.
fn parse_report(report: &[u8]) -> Result<Report, String> {
    use spool_wire::proxy::{ADDRESS_VARS, PROXY_ONLY_VARS};
    if report.len() > MAX_HEADER_REPORT {
        return Err("too long".into());
    }
    let text = std::str::from_utf8(report).map_err(|_| "not UTF-8")?;
    let body = text.strip_suffix('\n').ok_or("no final newline")?;
    let mut lines = body.split('\n');
    match lines.next() {
        Some("client") => {}
        Some(l) => {
            let rest = l.strip_prefix("refused ").ok_or("unknown report")?;
            let (io, reason) = rest.split_once(' ').ok_or("malformed refusal")?;
            let io = match io {
                "0" => false,
                "1" => true,
                _ => return Err("malformed refusal".into()),
            };
            if lines.next().is_some() {
                return Err("trailing lines".into());
            }
            return Ok(Report::Refused {
                io,
                reason: reason.to_string(),
            });
        }
        None => return Err("empty".into()),
    }
    let mut changes = Vec::new();
    for l in lines {
        let (name, value) = match l.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (l, None),
        };
        let known = if value.is_some() {
            ADDRESS_VARS.iter().find(|&&n| n == name)
        } else {
            PROXY_ONLY_VARS.iter().find(|&&n| n == name)
        };
        let Some(name) = known else {
            return Err(format!("unexpected line {l:?}"));
        };
        if let Some(v) = value {
            if v.is_empty()
                || v.len() > 45
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
            {
                return Err(format!("unexpected value in {l:?}"));
            }
        }
        changes.push((*name, value.map(str::to_string)));
    }
    Ok(Report::Client(changes))
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            return usage_error(&e.render().to_string());
        }
    };
    if let Some(p) = &args.rotate_ticket_keys {
        return match popspool_tls::tickets::rotate(p) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "pop-tls: {e}");
                ExitCode::from(front::EXIT_SYSTEM)
            }
        };
    }
    if args.cert.is_none() && args.cert_dir.is_none() {
        return usage_error("pop-tls: give --cert and --key, or --cert-dir");
    }
    if args.proxy_protocol {
        if let Err(code) = proxy_header(args.log, &args.user) {
            return ExitCode::from(code);
        }
    }
    let cfg = Config {
        mode: if args.starttls {
            Mode::StartTls
        } else {
            Mode::Implicit
        },
        keys: KeySource {
            files: args.cert.zip(args.key),
            dir: args.cert_dir,
        },
        handshake_timeout: Duration::from_secs(args.handshake_timeout),
        write_timeout: Duration::from_secs(args.write_timeout),
        tcp_keepalive: Duration::from_secs(args.tcp_keepalive),
        user: args.user,
        log: args.log,
        ticket_keys: args.ticket_keys,
        program: args.program,
    };
    ExitCode::from(front::run(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_parse_and_anything_else_is_refused() {
        let r =
            parse_report(b"client\nTCPREMOTEIP=192.0.2.1\nTCPREMOTEPORT=40000\nTCPREMOTEHOST\n");
        assert_eq!(
            r.unwrap(),
            Report::Client(vec![
                ("TCPREMOTEIP", Some("192.0.2.1".into())),
                ("TCPREMOTEPORT", Some("40000".into())),
                ("TCPREMOTEHOST", None),
            ])
        );
        assert_eq!(parse_report(b"client\n").unwrap(), Report::Client(vec![]));
        assert_eq!(
            parse_report(b"refused 0 no PROXY header\n").unwrap(),
            Report::Refused {
                io: false,
                reason: "no PROXY header".into()
            }
        );
        for bad in [
            &b""[..],
            b"client",
            b"client\nPATH=/tmp\n",
            b"client\nTCPREMOTEIP=1.2.3.4;rm\n",
            b"client\nTCPREMOTEIP\n",
            b"client\nTCPREMOTEHOST=x\n",
            b"client\nTCPREMOTEIP=\n",
            b"refused 2 x\n",
            b"refused 0 x\nclient\n",
            b"other\n",
        ] {
            assert!(parse_report(bad).is_err(), "{bad:?}");
        }
        assert!(parse_report(&vec![b'a'; MAX_HEADER_REPORT + 1]).is_err());
    }
}
