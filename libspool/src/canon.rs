//! The canonical form of a message: exactly what RETR sends before byte-stuffing. CRLF line
//! endings (a lone LF becomes CRLF, an existing CRLF is kept, a lone CR is content), mboxrd
//! unquoting when asked, spool headers hidden when asked, and a final CRLF when the stored
//! message lacks one (an empty message stays empty). Used by mbox and Maildir alike.
//! OWNER: mbox helper. `measure` and `copy` must agree on every input: `copy` writes exactly
//! `measure` octets when `body_lines` is None.

use crate::mbox::Quoting;
use std::io::{self, Read, Write};

/// What to undo or hide while canonicalising.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CanonOptions {
    /// `Some(Mboxrd)`: remove one `>` from `>+From ` lines. `Some(Mboxo)` or `None`: no change.
    pub quoting: Option<Quoting>,
    /// Drop Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords and Content-Length header
    /// fields (with their continuation lines) from the header block.
    pub hide_spool_headers: bool,
}

impl CanonOptions {
    /// Maildir: nothing to unquote, nothing to hide.
    pub const PLAIN: CanonOptions = CanonOptions {
        quoting: None,
        hide_spool_headers: false,
    };
}

/// Size of the canonical form of the `len` raw bytes read from `src`.
pub fn measure(src: &mut dyn Read, len: u64, opts: CanonOptions) -> io::Result<u64> {
    let _ = (src, len, opts);
    todo!()
}

/// Writes the canonical form of the `len` raw bytes read from `src` to `out`; with
/// `body_lines = Some(n)`, only the header block, the blank line and n body lines (TOP).
/// Returns the octets written. Bounded memory, bulk operations.
pub fn copy(
    src: &mut dyn Read,
    len: u64,
    opts: CanonOptions,
    body_lines: Option<u64>,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let _ = (src, len, opts, body_lines, out);
    todo!()
}
