//! pop-tls: the TLS front of the POP3 chain, UCSPI style.
//! `pop-tls [OPTIONS] (--cert CHAIN.pem --key KEY.pem | --cert-dir DIR) PROG [ARGS...]`.
//!
//! Exit status: PROG's when it ran; 1 when the client failed the handshake or broke TLS;
//! 100 for a usage error; 111 for a system or configuration failure. See doc/pop-tls.8.

#![forbid(unsafe_code)]

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

/// Reads the PROXY header on descriptor 0 and puts the client it names in the environment
/// (see `spool_wire::proxy::Header::environment`), before the TLS front reads the same
/// variables for its log lines and hands them to PROG. On refusal: logs the reason with the
/// proxy's address and returns the exit status, having sent nothing.
fn proxy_header(target: LogTarget) -> Result<(), u8> {
    use spool_wire::limits::PROXY_HEADER_TIMEOUT;
    use spool_wire::proxy::{read_from_fd, ProxyError};
    match read_from_fd(0, PROXY_HEADER_TIMEOUT) {
        Ok(header) => {
            for (name, value) in header.environment() {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
            Ok(())
        }
        Err(e) => {
            log::init(target, format!("proxy={}", front::client_address()));
            log::log(Level::Warning, &format!("refused: {e}"));
            Err(match e {
                ProxyError::Io(_) => front::EXIT_SYSTEM,
                _ => front::EXIT_CLIENT,
            })
        }
    }
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
        if let Err(code) = proxy_header(args.log) {
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
