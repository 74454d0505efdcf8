//! Stable UIDLs for mbox messages.
//!
//! A UIDL is the lowercase hex of the first 16 bytes of SHA-256 over the message's `From `
//! line and its header block (the lines up to, not including, the first empty line; the
//! whole message when it has none), where every line is hashed as its content without the
//! line ending (one CR before the LF is dropped) followed by one LF, and the spool headers
//! (Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords, Content-Length, with their
//! continuation lines) are left out: [`feeds_digest`] is that rule, asked for every header line
//! by the line machine in [`crate::canon`], which alone knows where lines and fields begin.
//! Why each choice:
//!
//! - A pure function of the stored bytes: a full scan, a later incremental index, and the
//!   pre-send check of RETR all compute the same value, and nothing has to be written into
//!   the mailbox (we never rewrite an mbox after a read-only session).
//! - Spool headers are *always* left out, whatever `hide_spool_headers` says, so a local MUA
//!   that changes `Status:` never changes a UIDL (a changed UIDL makes a "leave mail on
//!   server" client download the message again).
//! - CR before LF is dropped so an mbox converted between LF and CRLF storage keeps its UIDLs,
//!   and an unterminated last line hashes as if terminated, so mail appended after a
//!   truncated message does not change the truncated message's UIDL.
//! - An `X-UIDL` header is never trusted: a sender could copy another message's value and
//!   make clients skip that message.
//! - Identical messages (same `From ` line and headers: a loop, a resend) collide; the
//!   second and later ones in mailbox order get `-2`, `-3`, ... so UIDLs stay unique within
//!   the mailbox. Deleting or appending other messages never changes a UIDL, except the
//!   ordinal of a later duplicate when an earlier twin is deleted.

#![forbid(unsafe_code)]

use sha2::{Digest, Sha256};

/// Octets of the digest kept per message (128 bits: collisions between different messages
/// are negligible; equal messages are told apart by their ordinal).
pub const DIGEST_LEN: usize = 16;
/// Hex characters of a UIDL without its duplicate suffix.
pub const UIDL_HEX_LEN: usize = 2 * DIGEST_LEN;

/// The digest of one message.
pub type MessageDigest = [u8; DIGEST_LEN];

/// Whether a line of the header block feeds the digest: every header line except a spool
/// header field ([`crate::canon::SPOOL_HEADERS`]) and its continuation lines, whether or not
/// those are hidden from the client. The `From ` line is fed by the scanner before the header
/// block; body lines never are.
#[inline]
pub(crate) const fn feeds_digest(spool_field: bool) -> bool {
    !spool_field
}

/// Streams the `From ` line and the header lines of one message into SHA-256, dropping the
/// CR of each CRLF and terminating every line with a single LF.
#[derive(Clone, Default)]
pub struct UidlHasher {
    sha: Sha256,
    /// The last byte given was a CR: it is hashed only once we know no LF follows.
    pending_cr: bool,
}

impl std::fmt::Debug for UidlHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UidlHasher")
            .field("pending_cr", &self.pending_cr)
            .finish()
    }
}

impl UidlHasher {
    pub fn new() -> UidlHasher {
        UidlHasher::default()
    }

    /// Content bytes of the current line (never containing the terminating LF).
    pub fn line_bytes(&mut self, b: &[u8]) {
        let Some((&last, _)) = b.split_last() else {
            return;
        };
        if self.pending_cr {
            self.sha.update(b"\r");
        }
        if last == b'\r' {
            self.sha.update(&b[..b.len() - 1]);
            self.pending_cr = true;
        } else {
            self.sha.update(b);
            self.pending_cr = false;
        }
    }

    /// The current line ended (at its LF, or at the end of an unterminated last line).
    pub fn end_line(&mut self) {
        self.pending_cr = false;
        self.sha.update(b"\n");
    }

    /// A whole line with or without its ending, in one call.
    pub fn line(&mut self, line: &[u8]) {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        self.line_bytes(content);
        self.end_line();
    }

    pub fn finish(self) -> MessageDigest {
        let full = self.sha.finalize();
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&full[..DIGEST_LEN]);
        d
    }
}

/// Writes the 32 lowercase hex characters of `d` into `out`.
pub fn push_hex(out: &mut String, d: &MessageDigest) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in d {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
}

/// The UIDL of a message with digest `d` that is the `ordinal`-th (0-based) message with that
/// digest in mailbox order: `hex`, `hex-2`, `hex-3`, ... At most 32 + 1 + 10 characters, well
/// inside RFC 1939's 70, all in 0x21-0x7E.
pub fn format_uidl(d: &MessageDigest, ordinal: u32) -> String {
    let mut s = String::with_capacity(UIDL_HEX_LEN + 11);
    push_hex(&mut s, d);
    if ordinal > 0 {
        s.push('-');
        s.push_str(&(u64::from(ordinal) + 1).to_string());
    }
    s
}

/// For digests in mailbox order, each one's ordinal among equal digests before it. Sorting
/// indices keeps the extra memory at one `u32` per message during the scan only.
pub fn dup_ordinals(hex: &str, count: usize) -> Vec<(usize, u32)> {
    let key = |i: usize| &hex.as_bytes()[i * UIDL_HEX_LEN..(i + 1) * UIDL_HEX_LEN];
    let mut idx: Vec<u32> = (0..count).map(|i| i as u32).collect();
    // The index tie-break keeps mailbox order inside a group of equal digests.
    idx.sort_unstable_by(|&a, &b| key(a as usize).cmp(key(b as usize)).then(a.cmp(&b)));
    let mut out = Vec::new();
    let mut ord = 0u32;
    for w in 0..idx.len() {
        if w > 0 && key(idx[w] as usize) == key(idx[w - 1] as usize) {
            ord = ord.saturating_add(1);
            out.push((idx[w] as usize, ord));
        } else {
            ord = 0;
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(lines: &[&[u8]]) -> MessageDigest {
        let mut h = UidlHasher::new();
        for l in lines {
            h.line(l);
        }
        h.finish()
    }

    #[test]
    fn crlf_and_lf_hash_alike() {
        assert_eq!(
            digest_of(&[b"From a\n", b"Subject: x\n"]),
            digest_of(&[b"From a\r\n", b"Subject: x\r\n"])
        );
        // An unterminated last line hashes as if terminated.
        assert_eq!(
            digest_of(&[b"From a\n", b"Subject: x"]),
            digest_of(&[b"From a\n", b"Subject: x\n"])
        );
        // A lone CR inside a line is content.
        assert_ne!(
            digest_of(&[b"From a\n", b"Sub\rject: x\n"]),
            digest_of(&[b"From a\n", b"Subject: x\n"])
        );
    }

    #[test]
    fn split_cr_is_handled() {
        let mut h = UidlHasher::new();
        h.line_bytes(b"ab\r");
        h.line_bytes(b"\rc\r");
        h.end_line();
        let mut g = UidlHasher::new();
        g.line(b"ab\r\rc\n");
        assert_eq!(h.finish(), g.finish());
    }

    #[test]
    fn formats() {
        let d = [0xabu8; 16];
        assert_eq!(format_uidl(&d, 0), "ab".repeat(16));
        assert_eq!(format_uidl(&d, 1), format!("{}-2", "ab".repeat(16)));
        let u = format_uidl(&d, u32::MAX);
        assert!(u.len() <= spool_wire::limits::MAX_UIDL_LEN);
        assert!(u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
    }

    #[test]
    fn ordinals() {
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let hex = format!("{a}{b}{a}{a}{b}");
        assert_eq!(dup_ordinals(&hex, 5), vec![(2, 1), (3, 2), (4, 1)]);
        assert!(dup_ordinals("", 0).is_empty());
    }
}
