//! pop-relay-record: the root link of POP-before-SMTP, run in a checkpassword front end's
//! CHECKPROG position before pop-checkpassword. Reads the client's address from the
//! launcher's environment, starts a detached recorder that records it in the relay directory
//! once the rest of the chain says the login succeeded (pop-relay-ok), and execs the rest of
//! its command line with the pipe's descriptor named in `POPRELAYFD`. See
//! doc/pop-relay-record.8.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::Parser;
use spool_relay as relay;
use spool_wire::cli;
use spool_wire::log::{Level, LogTarget, Logger};
use std::ffi::OsString;
use std::os::fd::IntoRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "pop-relay-record",
    version,
    about = "POP-before-SMTP: record the client's address after a successful login, exec PROG"
)]
struct Args {
    /// The relay directory: absolute, owned by root, not writable by group or others.
    #[arg(long)]
    dir: PathBuf,

    /// Seconds the recorder waits for the login's outcome (1 to 3600).
    #[arg(long, default_value_t = relay::DEFAULT_LOGIN_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=relay::MAX_LOGIN_TIMEOUT_SECS))]
    login_timeout: u64,

    /// Where log lines go (facility mail for syslog).
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// Record nothing (the login goes on) unless the kernel fully enforces the recorder's
    /// Landlock sandbox (see CONFINEMENT in pop-relay-record(8)).
    #[arg(long)]
    require_sandbox: bool,

    /// The rest of the chain (pop-checkpassword ... pop-relay-ok ...).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
    prog: Vec<OsString>,
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    // fd 3 carries the credentials for the next program: kept.
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED_CHECKPASSWORD);
    // A descriptor number from before us names nothing of ours.
    std::env::remove_var(relay::RELAY_FD_ENV);
    let usage = cli::Usage {
        program: "pop-relay-record",
        report: cli::Report::Log,
        status: 2,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    let log = Logger::new("pop-relay-record", args.log);
    let target = args.log;
    // The launcher's variables, else the peer of fd 0 (inetd).
    let client =
        relay::client_from_env().or_else(|| relay::address(&spool_wire::log::client_address()));
    match (client, relay::open_dir(&args.dir)) {
        (None, _) => log.log(
            Level::Warning,
            "no client address (TCPREMOTEIP, REMOTE_ADDR, fd 0): nothing will be recorded",
        ),
        (_, Err(e)) => log.log(Level::Err, &format!("relay directory refused: {e}")),
        (Some(addr), Ok(dir)) => {
            let client = addr.clone();
            let limit = Duration::from_secs(args.login_timeout);
            let keep_stderr = target == LogTarget::Stderr;
            let require = args.require_sandbox;
            let confined = move |st: std::io::Result<spool_wire::sandbox::Status>| {
                let log = Logger::new("pop-relay-record", target);
                let go_on = match st {
                    Ok(st) if require && st.landlock != spool_wire::sandbox::Enforced::Full => {
                        log.log(
                            Level::Err,
                            &format!("--require-sandbox: {st}: nothing will be recorded"),
                        );
                        false
                    }
                    Ok(st) => {
                        log.log(Level::Debug, &format!("recorder confined: {st}"));
                        true
                    }
                    Err(e) => {
                        log.log(Level::Err, &format!("recorder not confined: {e}"));
                        !require
                    }
                };
                #[cfg(debug_assertions)]
                spool_wire::testhooks::run(&log);
                go_on
            };
            let started =
                relay::start_recorder(dir, addr, keep_stderr, limit, confined, move |r| {
                    let log = Logger::new("pop-relay-record", target);
                    match r {
                        Ok(true) => log.log(Level::Info, &format!("client={client} recorded")),
                        Ok(false) => log.log(
                            Level::Debug,
                            &format!("client={client} no login: nothing recorded"),
                        ),
                        Err(e) => {
                            log.log(Level::Err, &format!("client={client} not recorded: {e}"))
                        }
                    }
                });
            match started {
                Ok(w) => std::env::set_var(relay::RELAY_FD_ENV, w.into_raw_fd().to_string()),
                Err(e) => log.log(Level::Err, &format!("cannot start the recorder: {e}")),
            }
        }
    }
    let e = std::process::Command::new(&args.prog[0])
        .args(&args.prog[1..])
        .exec();
    log.log(
        Level::Err,
        &format!("cannot exec {}: {e}", args.prog[0].to_string_lossy()),
    );
    111
}
