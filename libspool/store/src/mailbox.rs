//! The one interface a POP3 session sees, whatever the mailbox format.
//!
//! A message is presented in *canonical form*: exactly the octets RETR sends before
//! byte-stuffing and the terminating `.` line: CRLF line endings, mbox quoting undone, spool
//! headers hidden, and a final CRLF when the stored message lacks one. `size(i)` is the length
//! of that form, so STAT/LIST always agree with RETR.

#![forbid(unsafe_code)]

use crate::canon::Quoting;
pub use crate::canon::WireOut;
use crate::error::MailboxError;
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
            session_lock_wait: spool_wire::limits::SESSION_LOCK_WAIT,
            content_lock_wait: spool_wire::limits::CONTENT_LOCK_WAIT,
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

/// `&mut dyn RetrieveSink` as a plain `Write`, for `canon::copy` (no trait upcasting at the
/// MSRV, 1.80).
pub(crate) struct SinkWriter<'a>(pub(crate) &'a mut dyn RetrieveSink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
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
