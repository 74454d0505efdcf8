//! The one interface a POP3 session sees, whatever the mailbox format.
//!
//! A message is presented in *canonical form*: exactly the octets RETR sends before
//! byte-stuffing and the terminating `.` line: CRLF line endings, mbox quoting undone, spool
//! headers hidden, and a final CRLF when the stored message lacks one. `size(i)` is the length
//! of that form, so STAT/LIST always agree with RETR.

use crate::error::MailboxError;
use crate::mbox::Quoting;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which mailbox a session serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MailboxSpec {
    Mbox(PathBuf),
    Maildir(PathBuf),
}

impl MailboxSpec {
    /// `mbox:PATH`, `maildir:PATH`, or a bare path: a directory with `cur/`, `new/` and `tmp/`
    /// (or any directory, or a path ending in `/` as qmail-pop3d's `./Maildir/`) is a Maildir,
    /// anything else an mbox.
    pub fn parse(arg: &str) -> MailboxSpec {
        if let Some(p) = arg.strip_prefix("mbox:") {
            return MailboxSpec::Mbox(PathBuf::from(p));
        }
        if let Some(p) = arg.strip_prefix("maildir:") {
            return MailboxSpec::Maildir(PathBuf::from(p));
        }
        let path = PathBuf::from(arg);
        if arg.ends_with('/') || path.is_dir() {
            MailboxSpec::Maildir(path)
        } else {
            MailboxSpec::Mbox(path)
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            MailboxSpec::Mbox(p) | MailboxSpec::Maildir(p) => p,
        }
    }
}

/// How a session opens its mailbox. Built by `pop-serve` from its options.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// How `>From ` lines in an mbox are read (default mboxrd).
    pub quoting: Quoting,
    /// Hide spool-internal headers (Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords,
    /// Content-Length) from clients. Default true.
    pub hide_spool_headers: bool,
    /// Where the session lock, the update journal and (later) the index live. The mail user
    /// must be able to write here. Default `$HOME/.popspool`.
    pub state_dir: PathBuf,
    /// The setgid-mail helper that creates a dotlock where the user cannot (Debian's root:mail
    /// 2775 spool). `None`: only try to create the dotlock directly.
    pub dotlock_helper: Option<PathBuf>,
    /// Wait for the session lock before `[IN-USE]`.
    pub session_lock_wait: Duration,
    /// Wait for the content lock before `[SYS/TEMP]`.
    pub content_lock_wait: Duration,
    /// Present only the oldest N messages (a server policy for draining huge boxes).
    pub max_messages: Option<usize>,
    /// Maildir: move retrieved messages from new/ to cur/ with the S flag at QUIT.
    pub maildir_mark_seen: bool,
}

impl OpenOptions {
    /// Defaults for a user whose home is `home`.
    pub fn with_state_dir(state_dir: PathBuf) -> OpenOptions {
        OpenOptions {
            quoting: Quoting::Mboxrd,
            hide_spool_headers: true,
            state_dir,
            dotlock_helper: None,
            session_lock_wait: crate::limits::SESSION_LOCK_WAIT,
            content_lock_wait: crate::limits::CONTENT_LOCK_WAIT,
            max_messages: None,
            maildir_mark_seen: true,
        }
    }
}

/// Files a session keeps for one mailbox in the state directory.
#[derive(Debug, Clone)]
pub struct StatePaths {
    pub session_lock: PathBuf,
    pub journal: PathBuf,
    pub index: PathBuf,
}

/// The state files of `mailbox` under `state_dir`: named after the mailbox's file name plus a
/// stable 64-bit FNV-1a digest of its absolute path, so two mailboxes never share them.
pub fn state_paths(state_dir: &Path, mailbox: &Path) -> StatePaths {
    let abs = if mailbox.is_absolute() {
        mailbox.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(mailbox))
            .unwrap_or_else(|_| mailbox.to_path_buf())
    };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in abs.as_os_str().as_encoded_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let name: String = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let stem = format!("{name}-{h:016x}");
    StatePaths {
        session_lock: state_dir.join(format!("{stem}.lock")),
        journal: state_dir.join(format!("{stem}.journal")),
        index: state_dir.join(format!("{stem}.index")),
    }
}

/// Where RETR/TOP output goes. `begin` is called once the message has been checked and just
/// before its first byte, so the session can send `+OK` only when it can deliver.
pub trait RetrieveSink: Write {
    fn begin(&mut self) -> io::Result<()>;
    /// The fast path, for sinks that can take the final wire form straight into their output
    /// buffer (the session's; see [`WireOut`]). `None` (the default): use `begin` and `Write`
    /// with canonical bytes, which the sink byte-stuffs.
    fn wire(&mut self) -> Option<&mut dyn WireOut> {
        None
    }
}

/// An output buffer a mailbox appends a whole RETR/TOP response to: the status line, then
/// the message canonical and byte-stuffed; the sink adds the terminating `.` line when the
/// retrieve returns `Ok` (the wire form always ends with CRLF or is empty).
///
/// The protocol keeps the `+OK`-only-when-checked promise of `begin` while letting the check
/// run in the same pass as the output: `start` stages the status line, the mailbox appends
/// and checks, and nothing from the mark on may leave until the mailbox calls `spill`. A
/// failed check calls `cancel(mark)` and returns [`RetrieveError::BeforeStart`]; a mailbox
/// that changes its mind may `cancel` and then use `begin`/`Write` instead.
pub trait WireOut {
    /// Appends the status line; returns the buffer's length before it (the mark).
    fn start(&mut self) -> usize;
    /// The output buffer: append only, and never touch bytes before the mark.
    fn buf(&mut self) -> &mut Vec<u8>;
    /// The message has been checked: staged bytes may leave. Sends them once there are
    /// enough for a large write; call it after every append of a bounded amount, so memory
    /// stays bounded however large the message.
    fn spill(&mut self) -> io::Result<()>;
    /// The check failed or the mailbox falls back to `begin`: drops everything from `mark`.
    fn cancel(&mut self, mark: usize);
}

/// A RETR/TOP failure, split by whether the client has already seen `+OK`.
#[derive(Debug)]
pub enum RetrieveError {
    /// Nothing was sent: answer `-ERR`.
    BeforeStart(MailboxError),
    /// Part of the message was sent: the session must end without committing.
    During(MailboxError),
}

/// What QUIT's commit did, for the session summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CommitSummary {
    pub deleted: usize,
    pub deleted_bytes: u64,
}

/// A mailbox opened for one POP3 session. Messages are numbered 0..count() here; the session
/// adds 1 for the client. The view is fixed at open: mail arriving later is not shown.
pub trait Mailbox {
    fn count(&self) -> usize;
    /// Octets of message `i` in canonical form.
    fn size(&self, i: usize) -> u64;
    /// The message's UIDL: 1-70 octets of 0x21-0x7E, stable across sessions.
    fn uidl(&self, i: usize) -> &str;
    /// Sends message `i` in canonical form into `sink` (headers, the blank line, and with
    /// `body_lines = Some(n)` only the first n body lines, as TOP). Calls `sink.begin()` first.
    fn retrieve(
        &mut self,
        i: usize,
        body_lines: Option<u64>,
        sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError>;
    /// The UPDATE state: removes `deleted` messages (and marks `retrieved` ones seen where the
    /// format does that), all or nothing. On error the mailbox is as it was.
    fn commit(
        &mut self,
        deleted: &[bool],
        retrieved: &[bool],
    ) -> Result<CommitSummary, MailboxError>;
    /// Problems found while opening (data before the first `From `, a truncated last message,
    /// a broken stale lock...), for the session's log. Never shown to the client.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A mailbox that does not exist or is empty: the fast path, no lock taken, no file created.
#[derive(Debug, Default)]
pub struct EmptyMailbox;

impl Mailbox for EmptyMailbox {
    fn count(&self) -> usize {
        0
    }
    fn size(&self, _i: usize) -> u64 {
        0
    }
    fn uidl(&self, _i: usize) -> &str {
        ""
    }
    fn retrieve(
        &mut self,
        _i: usize,
        _body_lines: Option<u64>,
        _sink: &mut dyn RetrieveSink,
    ) -> Result<(), RetrieveError> {
        Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
    }
    fn commit(&mut self, _d: &[bool], _r: &[bool]) -> Result<CommitSummary, MailboxError> {
        Ok(CommitSummary::default())
    }
}

/// Opens the mailbox a session serves, taking the fast path for a missing or empty one.
pub fn open(spec: &MailboxSpec, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    match spec {
        MailboxSpec::Mbox(p) => crate::mbox::open(p, opts),
        MailboxSpec::Maildir(p) => crate::maildir::open(p, opts),
    }
}

/// A [`RetrieveSink`] that collects into memory, for the formats' unit tests; it fails the test
/// if a byte arrives before `begin`.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct VecSink {
    pub(crate) began: bool,
    pub(crate) out: Vec<u8>,
}

#[cfg(test)]
impl Write for VecSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(self.began, "bytes before begin()");
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
impl RetrieveSink for VecSink {
    fn begin(&mut self) -> io::Result<()> {
        self.began = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        assert_eq!(
            MailboxSpec::parse("mbox:/x/y"),
            MailboxSpec::Mbox("/x/y".into())
        );
        assert_eq!(
            MailboxSpec::parse("maildir:/x/y"),
            MailboxSpec::Maildir("/x/y".into())
        );
        assert_eq!(
            MailboxSpec::parse("./Maildir/"),
            MailboxSpec::Maildir("./Maildir/".into())
        );
        assert_eq!(
            MailboxSpec::parse("/nonexistent/file"),
            MailboxSpec::Mbox("/nonexistent/file".into())
        );
    }

    #[test]
    fn state_paths_differ_per_mailbox() {
        let a = state_paths(Path::new("/s"), Path::new("/var/mail/a/alice"));
        let b = state_paths(Path::new("/s"), Path::new("/var/spool/mail/a/alice"));
        assert_ne!(a.session_lock, b.session_lock);
        assert!(a.session_lock.starts_with("/s"));
        assert!(a.journal.to_string_lossy().contains("alice-"));
    }
}
