//! pop-dotlock: the setgid-mail helper that creates or removes the dotlock of the caller's own
//! mailbox where the caller may not create files (Debian's root:mail 2775 spool), like
//! Debian's dotlockfile or mutt_dotlock.
//!
//! `pop-dotlock lock|unlock MAILBOX`: exit 0 done, 1 busy (lock only), 100 refused or misuse,
//! 111 system error. Nothing on stdout; at most one line on stderr. Install it setgid mail,
//! never setuid. All logic is in `libspool::lock`.

use clap::{Parser, ValueEnum};
use libspool::lock::{self, HelperAction, HELPER_EXIT_OK, HELPER_EXIT_REFUSED};
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
    // Before anything else: this runs setgid, with the caller's descriptors and environment.
    lock::harden_setgid_process();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => HELPER_EXIT_OK,
                _ => HELPER_EXIT_REFUSED,
            };
            if code == HELPER_EXIT_OK {
                // Help goes to stderr too: stdout stays empty whatever happens.
                eprint!("{}", e.render());
            } else {
                eprintln!("pop-dotlock: usage: pop-dotlock lock|unlock MAILBOX");
            }
            std::process::exit(code);
        }
    };
    let action = match cli.verb {
        Verb::Lock => HelperAction::Lock,
        Verb::Unlock => HelperAction::Unlock,
    };
    std::process::exit(lock::dotlock_helper_main(action, &cli.mailbox));
}
