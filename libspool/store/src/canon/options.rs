//! What the canonical form undoes (mbox quoting) and hides (spool headers).

#![forbid(unsafe_code)]

/// How `>From ` lines are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Quoting {
    /// mboxrd: writers quote every `>*From ` line with one more `>`; one is removed on read.
    /// The default: pop-deliver, Postfix local, procmail and Dovecot write mboxrd-compatible
    /// files, and reading mboxo quoting as mboxrd only changes lines that were `>From `.
    #[default]
    Mboxrd,
    /// mboxo: only `From ` is quoted to `>From `, and nothing is unquoted on read.
    Mboxo,
}

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
