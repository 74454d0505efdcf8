//! Maildir: new/ and cur/, UIDL = the unique part of the file name, sizes from `,S=`.
//! OWNER: maildir helper.

use crate::error::MailboxError;
use crate::mailbox::{Mailbox, OpenOptions};
use std::path::Path;

/// Opens a Maildir for a session: fast path when missing or empty (no lock, nothing created).
pub fn open(path: &Path, opts: &OpenOptions) -> Result<Box<dyn Mailbox>, MailboxError> {
    let _ = (path, opts);
    todo!()
}
