//! The read lock: what a session takes to read a mailbox's extent when it has nothing to
//! write (no journal to replay): an fcntl read lock and no dotlock.
//!
//! Why: an MDA that finds the dotlock taken sleeps before it looks again (procmail's
//! `LOCKSLEEP` is 8 s), so a session that took the dotlock only to read the extent made a
//! busy mailbox's deliveries wait many seconds. The MDAs that write mboxes (procmail, Postfix
//! local, Exim appendfile, Dovecot, mail.local, pop-deliver) also take an fcntl write lock
//! while they append; a read lock excludes them for the length of the scan, and they wait for
//! it in the kernel (`F_SETLKW`), not in a sleep.
//!
//! An MDA that takes only the dotlock is still never read mid-append: the extent is read only
//! if no dotlock existed when the read lock was held, and accepted only if, after the scan,
//! the file has the size it had when the extent was read. Otherwise the session tries again, and after [`READ_LOCK_ATTEMPTS`] attempts (or when the dotlock stays for
//! [`READ_LOCK_DOTLOCK_WAIT`]) it takes the full content lock, as every writer does.

#![forbid(unsafe_code)]

use super::file::dotlock_path;
use super::wait::{fcntl_until, pause, set_fcntl};
use crate::error::{io_err, MailboxError};
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a reader waits for somebody's dotlock to go before it takes the full content lock
/// instead (which also breaks a stale one).
pub const READ_LOCK_DOTLOCK_WAIT: Duration = Duration::from_secs(2);

/// How many times a reader retries when the mailbox changed under its read lock (only an MDA
/// that ignores fcntl locks can do that) before it takes the full content lock.
pub const READ_LOCK_ATTEMPTS: u32 = 3;

/// How often a reader looks for the dotlock to be gone: short, since MDAs hold it for
/// milliseconds.
const DOTLOCK_POLL: Duration = Duration::from_millis(5);

/// An fcntl read lock on a mailbox taken while no dotlock existed.
#[derive(Debug)]
pub struct ReadLock {
    /// A duplicate of the caller's descriptor, through which the lock is taken and dropped.
    fcntl: Option<File>,
    dotlock: PathBuf,
    size: u64,
}

impl ReadLock {
    /// Waits (up to [`READ_LOCK_DOTLOCK_WAIT`], bounded by `deadline`) for no dotlock to
    /// exist, then takes an fcntl read lock on `file` and records its size. `Ok(None)`: the
    /// dotlock stayed, or the read lock could not be had by `deadline`; the caller takes the
    /// full content lock.
    pub fn acquire(
        mailbox_path: &Path,
        file: &File,
        deadline: Instant,
    ) -> Result<Option<ReadLock>, MailboxError> {
        let dotlock = dotlock_path(mailbox_path);
        let give_up = deadline.min(Instant::now() + READ_LOCK_DOTLOCK_WAIT);
        while dotlock_exists(&dotlock)? {
            let now = Instant::now();
            if now >= give_up {
                return Ok(None);
            }
            pause(DOTLOCK_POLL.min(give_up - now))?;
        }
        let dup = file
            .try_clone()
            .map_err(io_err("duplicate the mailbox descriptor"))?;
        // A writer holding its fcntl lock finishes its append in milliseconds.
        let until = deadline.min(Instant::now() + READ_LOCK_DOTLOCK_WAIT);
        if !fcntl_until(&dup, libc::F_RDLCK, until, "read-lock the mailbox")? {
            return Ok(None);
        }
        let size = dup.metadata().map_err(io_err("stat the mailbox"))?.len();
        let lock = ReadLock {
            fcntl: Some(dup),
            dotlock,
            size,
        };
        // A dotlock-only writer may have begun between the look and the lock.
        if dotlock_exists(&lock.dotlock)? {
            return Ok(None);
        }
        Ok(Some(lock))
    }

    /// The mailbox's size when the lock was taken: the extent to read.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when what was read under the lock can be trusted: the file's size did not change.
    /// A dotlock taken since is no reason to doubt it: a writer that also takes fcntl locks
    /// waits for ours before it writes, and one that does not can only append, which changes
    /// the size.
    pub fn still_consistent(&self) -> Result<bool, MailboxError> {
        let Some(f) = &self.fcntl else {
            return Ok(false);
        };
        let size = f.metadata().map_err(io_err("stat the mailbox"))?.len();
        Ok(size == self.size)
    }

    pub fn release(mut self) -> Result<(), MailboxError> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<(), MailboxError> {
        match self.fcntl.take() {
            Some(f) => set_fcntl(&f, libc::F_UNLCK)
                .map_err(|e| MailboxError::Io("unlock the mailbox", e.into())),
            None => Ok(()),
        }
    }
}

impl Drop for ReadLock {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

/// Whether anything stands at the dotlock's name (never followed: a symlink counts).
fn dotlock_exists(path: &Path) -> Result<bool, MailboxError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(MailboxError::Io("look for the dotlock", e)),
    }
}
