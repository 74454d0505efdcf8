//! The mail store, the transaction side of the chain: `mailbox` (the interface a session
//! serves), `canon` (the canonical message form), `mbox` (scanner, UIDLs, index, `From ` line
//! dates, crash-safe commit with its journal), `maildir` (names, listing, directory reader,
//! index), `lock` (session and content locks, the `pop-dotlock` helper), `spoolpath`,
//! `userfs` (how root-run pop-deliver and pop-spool work in a directory a user controls),
//! `error` (typed errors mapped to `-ERR` in one function), `session` (the
//! TRANSACTION/UPDATE state machine), `broker` (the lock broker a confined session runs the
//! dotlock helper through) and `confine` (what a session may reach: no_new_privs, rlimits,
//! Landlock). This crate cannot name password code: it does not
//! depend on the login crate.
pub mod broker;
pub mod canon;
pub mod confine;
pub mod error;
pub mod lock;
pub mod mailbox;
pub mod maildir;
pub mod mbox;
pub mod session;
pub mod spoolpath;
pub mod userfs;

use error::MailboxError;
use mailbox::{Mailbox, MailboxSpec, OpenOptions};

/// Opens the mailbox a session serves, taking the fast path for a missing or empty one.
pub fn open(spec: &MailboxSpec, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    match spec {
        MailboxSpec::Mbox(p) => mbox::open(p, opts),
        MailboxSpec::Maildir(p) => maildir::open(p, opts),
    }
}
