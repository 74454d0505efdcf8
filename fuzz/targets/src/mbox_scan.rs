//! The mbox scanner and RETR/TOP's wire form, against a reference reading of the format.
//!
//! Input: a flags byte (bits 0-1 quoting: none, mboxrd, mboxo; bit 2 hide spool headers;
//! bits 3-7 a read size for a second scan and TOP's line count), then the mbox.
//!
//! Properties, by the toolkit's rule (`mbox::scan`): a message starts at every `From ` at
//! offset 0 or after an LF; the `From ` line is not part of it, nor is one empty line (LF or
//! CRLF) before the next separator or the end; the preamble, the messages and their
//! separators tile the file; each size is the length of the canonical form computed by a
//! whole-message reference (`canon`'s definition), which `canon::measure` and `canon::copy`
//! also give; RETR's wire form is that canonical form byte-stuffed (CRLF everywhere, every
//! line that starts with `.` doubled), TOP's is RETR's cut after n body lines; UIDLs are
//! valid and distinct; a scan in tiny reads finds exactly the same.

use crate::scratch;
use spool_store::canon::{self, reference_canon, CanonOptions, Quoting, WireOut};
use spool_store::mailbox::RetrieveSink;
use spool_store::mbox::{message, scan};
use std::io::{self, Write};

/// Collects a response the way the session's output buffer does.
#[derive(Default)]
struct Collect {
    out: Vec<u8>,
    began: bool,
}

impl Write for Collect {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(self.began, "bytes before begin()");
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl RetrieveSink for Collect {
    fn begin(&mut self) -> io::Result<()> {
        self.began = true;
        Ok(())
    }
    fn wire(&mut self) -> Option<&mut dyn WireOut> {
        Some(self)
    }
}

impl WireOut for Collect {
    fn start(&mut self) -> usize {
        self.out.len()
    }
    fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }
    fn spill(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn cancel(&mut self, mark: usize) {
        self.out.truncate(mark);
    }
}

/// Byte-stuffing (RFC 1939 §3) of a canonical form, which is CRLF-terminated or empty.
pub fn stuff(canonical: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(canonical.len() + 16);
    let mut at_start = true;
    for &b in canonical {
        if at_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_start = b == b'\n';
    }
    out
}

/// The separator blank line at the end of `raw` (a message's bytes up to the next `From `
/// line or the end): its last line when that is `LF` or `CRLF` alone.
fn separator_len(raw: &[u8]) -> u64 {
    if raw.ends_with(b"\n") {
        let body = &raw[..raw.len() - 1];
        let last = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => &body[i + 1..],
            None => body,
        };
        match last {
            b"" => return 1,
            b"\r" => return 2,
            _ => {}
        }
    }
    0
}

pub(crate) fn options(flags: u8) -> CanonOptions {
    CanonOptions {
        quoting: match flags & 3 {
            0 => None,
            1 => Some(Quoting::Mboxrd),
            _ => Some(Quoting::Mboxo),
        },
        hide_spool_headers: flags & 4 != 0,
    }
}

pub fn run(data: &[u8]) {
    let Some((&flags, mbox)) = data.split_first() else {
        return;
    };
    let opts = options(flags);
    let (_, file) = scratch::file("mbox", mbox);
    let len = mbox.len() as u64;
    let res = scan::scan(&file, len, opts).expect("scan");

    let starts: Vec<u64> = (0..mbox.len())
        .filter(|&p| mbox[p..].starts_with(b"From ") && (p == 0 || mbox[p - 1] == b'\n'))
        .map(|p| p as u64)
        .collect();
    assert_eq!(res.len(), starts.len(), "message count");
    assert_eq!(res.extent_end, len);
    assert_eq!(res.preamble_len, starts.first().copied().unwrap_or(len));
    assert_eq!(
        res.nul_at,
        mbox.iter().position(|&b| b == 0).map(|p| p as u64)
    );
    let mut tiled = res.preamble_len;
    let mut uidls = std::collections::HashSet::new();
    let top = u64::from(flags >> 3) % 4;
    for (i, m) in res.messages.iter().enumerate() {
        let from = starts[i];
        let next = starts.get(i + 1).copied().unwrap_or(len);
        assert_eq!(m.from_line_start(), from, "message {i}");
        assert_eq!(m.next_start(), next, "message {i}");
        let region = &mbox[from as usize..next as usize];
        let ms = region
            .iter()
            .position(|&b| b == b'\n')
            .map_or(next, |k| from + k as u64 + 1);
        assert_eq!(m.message_start(), ms, "message {i}");
        let sep = separator_len(&mbox[ms as usize..next as usize]);
        assert_eq!(m.message_end(), next - sep, "message {i}");
        tiled += m.next_start() - m.from_line_start();

        let raw = &mbox[ms as usize..m.message_end() as usize];
        let canonical = reference_canon(raw, opts, None);
        assert_eq!(m.size(), canonical.len() as u64, "size of message {i}");
        let measured = canon::measure(&mut &raw[..], raw.len() as u64, opts).expect("measure");
        assert_eq!(measured, m.size(), "measure of message {i}");
        let mut copied = Vec::new();
        let n =
            canon::copy(&mut &raw[..], raw.len() as u64, opts, None, &mut copied).expect("copy");
        assert_eq!(copied, canonical, "copy of message {i}");
        assert_eq!(n, m.size());

        let mut retr = Collect::default();
        message::retrieve(&file, m, res.digest_hex(i), opts, None, &mut retr).expect("RETR");
        assert_eq!(retr.out, stuff(&canonical), "RETR of message {i}");
        let mut topped = Collect::default();
        message::retrieve(&file, m, res.digest_hex(i), opts, Some(top), &mut topped).expect("TOP");
        assert_eq!(
            topped.out,
            stuff(&reference_canon(raw, opts, Some(top))),
            "TOP {top} of message {i}"
        );
        assert!(retr.out.starts_with(&topped.out));

        let u = res.uidl(i);
        assert!(!u.is_empty() && u.len() <= 70 && u.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert!(uidls.insert(u.to_string()), "UIDL {u} repeated");
    }
    assert_eq!(tiled, len, "preamble and messages tile the mailbox");

    let unterminated = match res.messages.last() {
        None => scan::Unterminated::No,
        Some(m) if m.message_start() == len && !mbox.ends_with(b"\n") => {
            scan::Unterminated::FromLine
        }
        Some(_) if !mbox.ends_with(b"\n") => scan::Unterminated::Message,
        Some(_) => scan::Unterminated::No,
    };
    assert_eq!(res.unterminated, unterminated);

    let read_size = usize::from(flags >> 3) + 1;
    let small = scan::scan_buf(&file, len, opts, read_size).expect("scan in small reads");
    assert_eq!(small.messages, res.messages, "read size {read_size}");
    for i in 0..res.len() {
        assert_eq!(small.uidl(i), res.uidl(i));
    }
    assert_eq!(
        (small.preamble_len, small.nul_at, small.unterminated),
        (res.preamble_len, res.nul_at, res.unterminated)
    );
}
