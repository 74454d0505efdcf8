//! pop-popup: the POP3 AUTHORIZATION state in front of a checkpassword program, a drop-in for
//! qmail-popup. `pop-popup [OPTIONS] HOSTNAME CHECKPROG SUBPROG [ARGS...]`.
//!
//! Exit status: 0 when the session ended normally (served, QUIT, refused login, client gone,
//! timeout); 100 for a usage error; 111 for a system failure (capabilities, random source,
//! client descriptors, or the checkpassword program failing temporarily or crashing).
//! See doc/pop-popup.8.

use clap::Parser;
use libspool::log::{client_address, Level, LogTarget, Logger};
use libspool::popup::{self, privs, ExactLineInput, ExecChecker, Expire, PopupConfig, Timestamp};
use libspool::timeio::FdOutput;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

const PROGRAM: &str = "pop-popup";

#[derive(Parser, Debug)]
#[command(
    name = "pop-popup",
    version,
    about = "POP3 AUTHORIZATION front end: reads credentials, hands them to a checkpassword program"
)]
struct Args {
    /// Refuse APOP and leave the timestamp out of the greeting.
    #[arg(long)]
    no_apop: bool,

    /// Seconds the whole AUTHORIZATION state may last.
    #[arg(long, default_value_t = popup::DEFAULT_AUTH_TIMEOUT.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,

    /// Failed logins allowed on one connection.
    #[arg(long, default_value_t = popup::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,

    /// Delay before answering the first failed login, in milliseconds; doubles per failure
    /// (at most 30 s each).
    #[arg(long, default_value_t = popup::DEFAULT_FAIL_DELAY.as_millis() as u64)]
    fail_delay_ms: u64,

    /// Bad commands allowed before the connection is closed.
    #[arg(long, default_value_t = libspool::limits::DEFAULT_MAX_BAD_COMMANDS, value_parser = clap::value_parser!(u32).range(1..))]
    max_bad_commands: u32,

    /// Advertise RFC 2449 EXPIRE in CAPA: a number of days, or `never`.
    #[arg(long)]
    expire: Option<Expire>,

    /// Advertise RFC 2449 LOGIN-DELAY in CAPA, in seconds.
    #[arg(long)]
    login_delay: Option<u64>,

    /// Where logs go: syslog (facility mail), stderr, or none. Under inetd stderr is the
    /// client's socket: use stderr only where it is not.
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// The name in the greeting's timestamp: letters, digits and . @ _ + / - only.
    hostname: String,

    /// CHECKPROG SUBPROG [ARGS...], passed to exec unchanged.
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CHECKPROG SUBPROG [ARGS]"
    )]
    program: Vec<OsString>,
}

/// A usage error: see `libspool::log::report_usage_error` (stderr may be the client's socket).
fn usage_error(msg: &str) -> ExitCode {
    libspool::log::report_usage_error(PROGRAM, msg);
    ExitCode::from(100)
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
    if let Err(e) = popup::validate_hostname(&args.hostname) {
        return usage_error(&e.to_string());
    }
    let mut checker = match ExecChecker::new(args.program) {
        Ok(c) => c,
        Err(e) => return usage_error(&e.to_string()),
    };
    let log = Logger::new(PROGRAM, args.log);
    let addr = client_address();
    let fail = |msg: &str| {
        log.log(Level::Err, &format!("addr={addr} {msg}"));
        ExitCode::from(111)
    };

    // Before the first byte from the network.
    if let Err(e) = privs::shed_capabilities() {
        return fail(&e.to_string());
    }
    if let Err(e) = privs::forbid_core_dumps() {
        return fail(&format!("cannot forbid core dumps: {e}"));
    }

    let stamp = match Timestamp::generate(&args.hostname) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    let cfg = PopupConfig {
        apop: !args.no_apop,
        timeout: Duration::from_secs(args.timeout),
        max_attempts: args.max_attempts,
        fail_delay: Duration::from_millis(args.fail_delay_ms),
        max_bad_commands: args.max_bad_commands,
        expire: args.expire,
        login_delay: args.login_delay,
    };
    let mut input = match ExactLineInput::new(0) {
        Ok(i) => i,
        Err(e) => return fail(&format!("cannot use stdin: {e}")),
    };
    let mut out = match FdOutput::new(1, popup::AUTH_WRITE_TIMEOUT) {
        Ok(o) => o,
        Err(e) => return fail(&format!("cannot use stdout: {e}")),
    };
    let end = popup::run(
        &mut input,
        &mut out,
        &mut checker,
        &cfg,
        &stamp,
        &mut |level, line| log.log(level, &format!("addr={addr} {line}")),
    );
    if !matches!(end, popup::End::Served { .. }) {
        log.log(end.level(), &format!("addr={addr} end: {end}"));
    }
    ExitCode::from(end.exit_code())
}
