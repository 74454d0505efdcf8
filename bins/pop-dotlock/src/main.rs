//! pop-dotlock: the setgid-mail helper that creates or removes the dotlock of the caller's own
//! mailbox where the caller may not create files (Debian's root:mail 2775 spool), like
//! Debian's dotlockfile or mutt_dotlock.
//!
//! `pop-dotlock lock|unlock MAILBOX`: exit 0 done, 1 busy (lock only), 100 refused or misuse,
//! 111 system error. Nothing on stdout; at most one line on stderr. Install it setgid mail,
//! never setuid. All logic is in `spool_store::lock`.

use clap::{Parser, ValueEnum};
use spool_store::lock::{self, HelperAction, HELPER_EXIT_REFUSED};
use spool_wire::cli;
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Verb {
    Lock,
    Unlock,
}

/// Create or remove MAILBOX.lock for the caller's own mailbox.
#[derive(Parser, Debug)]
#[command(name = "pop-dotlock", version)]
struct Cli {
    /// lock: one attempt to create the dotlock; unlock: remove it.
    verb: Verb,
    /// Absolute path of a regular file the caller owns.
    mailbox: PathBuf,
}

fn main() {
    spool_wire::start::no_core_files();
    spool_wire::fds::close_inherited(spool_wire::fds::FIRST_INHERITED);
    // Before anything else: this runs setgid, with the caller's descriptors and environment.
    lock::harden_setgid_process();
    let usage = cli::Usage {
        program: "pop-dotlock",
        report: cli::Report::Line("usage: pop-dotlock lock|unlock MAILBOX"),
        status: HELPER_EXIT_REFUSED as u8,
    };
    let cli: Cli = match cli::parse(&usage) {
        Ok(c) => c,
        Err(status) => std::process::exit(status.into()),
    };
    let action = match cli.verb {
        Verb::Lock => HelperAction::Lock,
        Verb::Unlock => HelperAction::Unlock,
    };
    std::process::exit(lock::dotlock_helper_main(action, &cli.mailbox));
}
