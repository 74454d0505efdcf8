//! The two locks: a session lock (one POP3 session per mailbox, dies with the process) and the
//! content lock (dotlock then fcntl, the MTAs' order), held only while reading the extent and
//! while committing. OWNER: locking helper.

use crate::error::MailboxError;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Held for a whole session: an fcntl write lock on a small file in the state directory.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
}

impl SessionLock {
    /// Creates the state directory (0700) and the lock file if needed, then retries a
    /// non-blocking fcntl lock until `wait` has passed: `MailboxError::InUse` after that.
    pub fn acquire(path: &Path, wait: Duration) -> Result<SessionLock, MailboxError> {
        let _ = (path, wait);
        todo!()
    }
}

/// How the content lock is taken.
#[derive(Debug, Clone)]
pub struct LockOptions {
    /// The setgid helper (`pop-dotlock`) used when we may not create `PATH.lock` ourselves.
    pub helper: Option<PathBuf>,
    /// Bounded wait for both the dotlock and the fcntl lock.
    pub wait: Duration,
    /// Dotlocks older than this, with the mailbox unchanged as long, are broken and logged.
    pub stale_age: Duration,
}

/// The content lock: `PATH.lock` created atomically, then an fcntl write lock on `file`.
/// Released by `release` or on drop, on every path.
#[derive(Debug)]
pub struct ContentLock {
    _todo: (),
}

impl ContentLock {
    /// `file` must be the caller's only open descriptor of the mailbox, opened read-write
    /// (fcntl locks vanish when any descriptor of the file is closed by the process).
    pub fn acquire(
        mailbox_path: &Path,
        file: &File,
        opts: &LockOptions,
    ) -> Result<ContentLock, MailboxError> {
        let _ = (mailbox_path, file, opts);
        todo!()
    }
    pub fn release(self) -> Result<(), MailboxError> {
        todo!()
    }
}
