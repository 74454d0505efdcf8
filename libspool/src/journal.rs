//! The update journal that makes in-place mbox compaction survive SIGKILL and power loss. Any
//! toolkit program replays it, under the content lock, before touching the mailbox.
//! OWNER: locking helper.

use crate::error::MailboxError;
use std::fs::File;
use std::path::Path;

/// Finishes an interrupted compaction recorded in `journal`, if any; removes a journal that
/// was never completed (the mailbox was not touched yet). The caller holds the content lock.
/// Returns true when a journal was replayed.
pub fn recover(journal: &Path, mailbox_path: &Path, file: &File) -> Result<bool, MailboxError> {
    let _ = (journal, mailbox_path, file);
    todo!()
}
