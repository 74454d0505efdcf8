//! The hashed spool path: the one function every tool uses. OWNER: maildir helper.

use std::path::{Path, PathBuf};

/// Why a user name cannot name a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathError {
    Empty,
    /// Contains `/`, NUL, or is `.`/`..`, or starts with `.`.
    Unsafe,
    TooLong,
    BadDepth,
}

/// `spool/c/claird` (depth 1), `spool/c/cl/claird` (depth 2).
pub fn hashed_path(spool: &Path, user: &[u8], depth: u8) -> Result<PathBuf, PathError> {
    let _ = (spool, user, depth);
    todo!()
}
