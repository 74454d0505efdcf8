//! Typed errors of the transaction side, and the one place they become POP3 responses.

#![forbid(unsafe_code)]

use spool_wire::pop3::response::RespCode;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// What can go wrong opening, reading or committing a mailbox.
#[derive(Debug)]
#[non_exhaustive]
pub enum MailboxError {
    /// Another POP3 session holds the session lock on this mailbox.
    InUse,
    /// The content lock (dotlock + fcntl) could not be taken within the bounded wait.
    LockTimeout(PathBuf),
    /// The mailbox path could not be worked out (bad user name, no `$USER`, ...).
    BadPath(String),
    /// The mailbox exists but is not a regular file or a Maildir.
    NotAMailbox(PathBuf),
    /// A Maildir, or its `new/` or `cur/`, is a symbolic link: refused, never followed.
    SymlinkedFolder(PathBuf),
    /// A message vanished or changed under us (another program removed or rewrote it).
    MessageGone,
    /// The mailbox was changed behind our back in a way that makes the session's view unsafe
    /// to commit (for example truncated below the extent the session saw).
    Changed(String),
    /// An interrupted update was found and could not be finished.
    Journal(String),
    /// An interrupted update's journal must not be replayed (damaged where no crash can
    /// damage it, or of a format this release does not replay): it and the mailbox are left
    /// untouched for the administrator, and every open refuses until then.
    JournalRefused(String),
    /// Any other I/O failure, with what we were doing.
    Io(&'static str, io::Error),
    /// A signal asked the program to stop while it waited for a lock (`lock::request_stop`).
    Interrupted,
}

impl MailboxError {
    /// The one mapping from an error to the `-ERR` a client sees: its RFC 2449/3206 response
    /// code and text. Texts never carry message content.
    pub fn response(&self) -> (Option<RespCode>, String) {
        match self {
            MailboxError::InUse => (
                Some(RespCode::InUse),
                "mailbox is locked by another POP3 session".into(),
            ),
            MailboxError::LockTimeout(_) => (
                Some(RespCode::SysTemp),
                "mailbox is busy, try again later".into(),
            ),
            MailboxError::BadPath(why) => {
                (Some(RespCode::SysPerm), format!("no usable mailbox: {why}"))
            }
            MailboxError::NotAMailbox(_) => (
                Some(RespCode::SysPerm),
                "mailbox is not a file or Maildir".into(),
            ),
            MailboxError::SymlinkedFolder(_) => (
                Some(RespCode::SysPerm),
                "Maildir folder is a symbolic link".into(),
            ),
            MailboxError::MessageGone => (None, "message was removed by another client".into()),
            MailboxError::Changed(_) => (
                Some(RespCode::SysTemp),
                "mailbox was changed by another program, try again".into(),
            ),
            MailboxError::Journal(_) => (
                Some(RespCode::SysTemp),
                "mailbox needs recovery, try again later".into(),
            ),
            MailboxError::JournalRefused(_) => (
                Some(RespCode::SysTemp),
                "mailbox needs repair by the administrator, try again later".into(),
            ),
            MailboxError::Io(what, _) => (Some(RespCode::SysTemp), format!("unable to {what}")),
            MailboxError::Interrupted => (Some(RespCode::SysTemp), "interrupted, try again".into()),
        }
    }
}

impl fmt::Display for MailboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MailboxError::InUse => write!(f, "mailbox in use by another session"),
            MailboxError::LockTimeout(p) => write!(f, "timed out locking {}", p.display()),
            MailboxError::BadPath(why) => write!(f, "bad mailbox path: {why}"),
            MailboxError::NotAMailbox(p) => write!(f, "{} is not a mailbox", p.display()),
            MailboxError::SymlinkedFolder(p) => {
                write!(
                    f,
                    "{} is a symbolic link: refused, not followed",
                    p.display()
                )
            }
            MailboxError::MessageGone => write!(f, "message vanished"),
            MailboxError::Changed(why) => write!(f, "mailbox changed: {why}"),
            MailboxError::Journal(why) => write!(f, "update journal: {why}"),
            MailboxError::JournalRefused(why) => write!(f, "update journal refused: {why}"),
            MailboxError::Io(what, e) => write!(f, "unable to {what}: {e}"),
            MailboxError::Interrupted => write!(f, "interrupted by a signal"),
        }
    }
}

impl std::error::Error for MailboxError {}

/// Shorthand for wrapping an I/O error with what we were doing.
pub fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> MailboxError {
    move |e| MailboxError::Io(what, e)
}

/// Why an index (the mbox index or the Maildir index in the state directory) was not used.
/// Never a failed session: the mailbox is scanned and the index rebuilt, with this in the log.
#[derive(Debug)]
pub enum IndexProblem {
    /// No index yet: silent.
    Missing,
    /// The format of an earlier version: replaced without a warning.
    OldFormat,
    /// The index could not be read.
    Unreadable(io::Error),
    /// The index is damaged, of another version, or not an index.
    Corrupt(&'static str),
    /// The index describes another file, or the mailbox changed in a way only a scan sorts out.
    Stale(&'static str),
}

impl fmt::Display for IndexProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IndexProblem::Missing => f.write_str("none yet"),
            IndexProblem::OldFormat => f.write_str("earlier format"),
            IndexProblem::Unreadable(e) => write!(f, "unreadable ({e})"),
            IndexProblem::Corrupt(why) => write!(f, "corrupt ({why})"),
            IndexProblem::Stale(why) => write!(f, "stale ({why})"),
        }
    }
}
