//! The session lock: one POP3 session per mailbox, an fcntl lock on a file in the state
//! directory that dies with the process.

#![forbid(unsafe_code)]

use super::wait::{deadline_after, fcntl_until};
use crate::error::{io_err, MailboxError};
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// Mode of the state directory and of the session lock file: private to the user.
pub const STATE_DIR_MODE: u32 = 0o700;

pub const SESSION_LOCK_MODE: u32 = 0o600;

/// Held for a whole session: an fcntl write lock on a small file in the state directory.
#[derive(Debug)]
pub struct SessionLock {
    _file: File,
}

impl SessionLock {
    /// Creates the state directory (0700) and the lock file if needed, then retries a
    /// non-blocking fcntl lock until `wait` has passed: `MailboxError::InUse` after that.
    /// The lock vanishes with the process, so it can never be stale.
    pub fn acquire(path: &Path, wait: Duration) -> Result<SessionLock, MailboxError> {
        let deadline = deadline_after(wait);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(STATE_DIR_MODE)
                .create(dir)
                .map_err(io_err("create the state directory"))?;
        }
        // No truncation before we hold the lock: the pid in it belongs to the holder.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(SESSION_LOCK_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(io_err("open the session lock"))?;
        if !fcntl_until(&file, libc::F_WRLCK, deadline, "lock the session lock")? {
            return Err(MailboxError::InUse);
        }
        // The pid is only a hint for admins: failing to write it must not fail the session.
        let _ = file.set_len(0);
        let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
        Ok(SessionLock { _file: file })
    }
}
