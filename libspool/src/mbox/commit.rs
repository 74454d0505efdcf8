//! The mbox UPDATE: removing deleted byte ranges in place, crash-safe through the journal.
//! OWNER: locking helper.

use crate::error::MailboxError;
use std::fs::File;
use std::ops::Range;
use std::path::Path;

/// Removes `delete` (sorted, disjoint byte ranges inside `0..extent_end`, each a whole message
/// from its `From ` line to the next one) from the mbox open as `file`, moving only what lies
/// after the first deleted byte, keeping everything past `extent_end` (mail appended during the
/// session), crash-safe through `journal`, fsynced. The caller holds the content lock.
/// On error the mailbox is unchanged (or the journal will restore it on the next open).
pub fn compact(
    file: &File,
    mailbox_path: &Path,
    journal: &Path,
    extent_end: u64,
    delete: &[Range<u64>],
) -> Result<(), MailboxError> {
    let _ = (file, mailbox_path, journal, extent_end, delete);
    todo!()
}
