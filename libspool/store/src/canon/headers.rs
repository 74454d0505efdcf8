//! Which header lines are the spool's own (hidden from clients, never part of a UIDL), and
//! which lines are mboxrd-quoted `>From ` lines: the line classification the machine asks.

#![forbid(unsafe_code)]

/// Most spaces/tabs accepted between a spool header's field name and its colon (RFC 5322's
/// obsolete syntax allows some; real spool writers use none).
pub const MAX_WSP_BEFORE_COLON: usize = 16;

/// The spool-internal header fields hidden from clients and always left out of UIDL digests.
pub const SPOOL_HEADERS: [&[u8]; 7] = [
    b"status",
    b"x-status",
    b"x-uid",
    b"x-imap",
    b"x-imapbase",
    b"x-keywords",
    b"content-length",
];
const LONGEST_SPOOL_HEADER: usize = 14;
pub(super) const PEND_CAP: usize = LONGEST_SPOOL_HEADER + MAX_WSP_BEFORE_COLON + 1;
pub(super) const FROM_: &[u8; 5] = b"From ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Hidden,
    Shown,
    Undecided,
}

/// Decides whether the header line starting with `p` is a spool header, as soon as possible.
pub(super) fn field_decision(p: &[u8]) -> Field {
    let k = p.iter().position(|&c| c == b':' || c == b' ' || c == b'\t');
    let Some(k) = k else {
        let prefix_of_any = p.len() <= LONGEST_SPOOL_HEADER
            && SPOOL_HEADERS
                .iter()
                .any(|n| n.len() >= p.len() && n[..p.len()].eq_ignore_ascii_case(p));
        return if prefix_of_any {
            Field::Undecided
        } else {
            Field::Shown
        };
    };
    if !SPOOL_HEADERS
        .iter()
        .any(|n| n.eq_ignore_ascii_case(&p[..k]))
    {
        return Field::Shown;
    }
    let rest = &p[k..];
    let wsp = rest
        .iter()
        .take_while(|&&c| c == b' ' || c == b'\t')
        .count();
    if wsp > MAX_WSP_BEFORE_COLON {
        Field::Shown
    } else if wsp == rest.len() {
        Field::Undecided
    } else if rest[wsp] == b':' {
        Field::Hidden
    } else {
        Field::Shown
    }
}

/// `line` starts with `>`: is it `>+From `? `line` must contain the line's LF or all of the
/// `>` run and five more bytes.
pub(super) fn quoted_from(line: &[u8]) -> bool {
    let k = line.iter().position(|&c| c != b'>').unwrap_or(line.len());
    line[k..].starts_with(FROM_)
}
