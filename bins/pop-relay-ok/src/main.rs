//! pop-relay-ok: the link after the password check (`pop-checkpassword pop-relay-ok
//! pop-serve ...`) that tells pop-relay-record's recorder the login succeeded: one byte on
//! the pipe `POPRELAYFD` names (only if that descriptor is a pipe open for writing), then
//! execs the rest of its command line. See doc/pop-relay-ok.8.
// Started by spool_wire::start (see `main` below); a test build keeps the harness's main.
#![cfg_attr(not(test), no_main)]
#![cfg_attr(test, allow(dead_code))]

use clap::Parser;
use spool_relay as relay;
use spool_wire::cli;
use spool_wire::log::{Level, LogTarget, Logger};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;

#[derive(Parser, Debug)]
#[command(
    name = "pop-relay-ok",
    version,
    about = "POP-before-SMTP: tell the recorder the login succeeded, exec PROG"
)]
struct Args {
    /// Where log lines go (facility mail for syslog).
    #[arg(long, default_value = "syslog")]
    log: LogTarget,

    /// The rest of the chain (pop-serve ...).
    #[arg(required = true, trailing_var_arg = true, value_name = "PROG")]
    prog: Vec<OsString>,
}

spool_wire::lean_main!(real_main);

fn real_main() -> u8 {
    let fd = relay::inherited_fd();
    spool_wire::fds::close_inherited_except(spool_wire::fds::FIRST_INHERITED, fd.as_slice());
    std::env::remove_var(relay::RELAY_FD_ENV);
    let usage = cli::Usage {
        program: "pop-relay-ok",
        report: cli::Report::Log,
        status: 111,
    };
    let args: Args = match cli::parse(&usage) {
        Ok(a) => a,
        Err(status) => return status,
    };
    let log = Logger::new("pop-relay-ok", args.log);
    let client = spool_wire::log::client_address();
    match fd {
        Some(fd) => {
            if let Err(e) = relay::signal_login(fd) {
                log.log(Level::Err, &format!("client={client} {e}"));
            }
        }
        None => log.log(
            Level::Warning,
            &format!(
                "client={client} no login pipe ({}): is pop-relay-record before pop-checkpassword?",
                relay::RELAY_FD_ENV
            ),
        ),
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
