//! Command-line parsing for every program's `main`, written once: `--help` and `--version`
//! are printed and end the program with status 0; any other clap error is a usage error,
//! reported the way the program must (under inetd a login program's stderr is the client's
//! socket) and ended with the program's usage status.

#![forbid(unsafe_code)]

use crate::log::report_usage_error;

/// How a program reports a usage error, and with which exit status.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub program: &'static str,
    pub report: Report,
    pub status: u8,
}

/// Where a usage error goes.
#[derive(Debug, Clone, Copy)]
pub enum Report {
    /// Through [`report_usage_error`]: on stderr only when asked (`--log stderr`) or when it
    /// is a terminal, else to syslog. For the programs a superserver runs.
    Log,
    /// clap's message on stderr.
    Stderr,
    /// This line on stderr, and `--help` on stderr too: stdout stays empty whatever happens.
    Line(&'static str),
}

/// Parses the command line into `T`; `Err(status)` when the program is to end now, with that
/// exit status: after help or version (0) or a reported usage error (`usage.status`).
pub fn parse<T: clap::Parser>(usage: &Usage) -> Result<T, u8> {
    let e = match T::try_parse() {
        Ok(args) => return Ok(args),
        Err(e) => e,
    };
    let shown = matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    );
    match (usage.report, shown) {
        (Report::Line(_), true) => eprint!("{}", e.render()),
        (_, true) | (Report::Stderr, false) => {
            let _ = e.print();
        }
        (Report::Log, false) => report_usage_error(usage.program, &e.render().to_string()),
        (Report::Line(line), false) => eprintln!("{}: {line}", usage.program),
    }
    Err(if shown { 0 } else { usage.status })
}
