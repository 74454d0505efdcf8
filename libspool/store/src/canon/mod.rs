//! The canonical form of a message: exactly what RETR sends before byte-stuffing. CRLF line
//! endings (a lone LF becomes CRLF, an existing CRLF is kept, a lone CR is content), mboxrd
//! unquoting when asked, spool headers hidden when asked, and a final CRLF when the stored
//! message lacks one (an empty message stays empty). Used by mbox and Maildir alike.
//! `measure` and `copy` must agree on every input: `copy` writes exactly
//! `measure` octets when `body_lines` is None.
//!
//! The definition, line by line (a line is the bytes up to and including an LF; an
//! unterminated last line is treated exactly as if an LF followed it):
//!
//! - Line endings: a line ending in CRLF is kept; a line ending in a bare LF gets a CR
//!   inserted. Any other CR is content and passes through unchanged.
//! - Header block: the lines before the first empty line (`LF` or `CRLF` alone); the whole
//!   message when there is none. With `hide_spool_headers`, a header line whose field name
//!   is one of Status, X-Status, X-UID, X-IMAP, X-IMAPbase, X-Keywords, Content-Length
//!   (ASCII case-insensitive), followed by at most [`MAX_WSP_BEFORE_COLON`] spaces or tabs
//!   and a colon, is dropped with its line ending, and so are the continuation lines (those
//!   starting with a space or tab) that follow it. Nothing outside the header block is
//!   hidden. The whitespace bound keeps the look-ahead, and so memory, bounded.
//! - Quoting: with mboxrd, a line matching `^>+From ` (in the header block or the body)
//!   loses its first `>`. The run of `>` may be of any length.
//! - TOP n: the header block, the empty line, and the first n body lines; when the message
//!   has no empty line, the whole header block (the whole message). This is a prefix of the
//!   RETR output by construction: the same machine simply stops at a line boundary.
//!
//! One streaming line machine implements all of it and is shared by `measure`, `copy`, the
//! mbox scanner (which also feeds header lines to the UIDL hasher), and the pre-send digest
//! check, so the sizes in STAT/LIST cannot drift from what RETR sends. Bodies are handled in
//! bulk: `copy` moves whole lines with one `memchr` each; `Wire` (RETR/TOP's path) also
//! byte-stuffs as it goes, since the machine knows every line start, and copies body lines
//! found 64 bytes at a time by a vector compare; and counting (`measure`, the scan) uses SIMD
//! counts of LFs and CRLFs over whole buffers, only visiting lines that start with `>`.

mod bulk;
mod headers;
mod machine;
mod options;
mod pool;
mod sink;
mod wire;

pub use headers::{MAX_WSP_BEFORE_COLON, SPOOL_HEADERS};
pub(crate) use machine::Canon;
pub use options::{CanonOptions, Quoting};
pub(crate) use pool::{Pooled, Slot};
use sink::WriteSink;
pub use sink::COPY_BUF;
pub(crate) use sink::{Counter, Sink};
pub(crate) use wire::{send_wire, Wire, WireError};
pub use wire::{WireOut, WIRE_READ};

use std::io::{self, Read, Write};

/// Size of the canonical form of the `len` raw bytes read from `src`.
pub fn measure(src: &mut dyn Read, len: u64, opts: CanonOptions) -> io::Result<u64> {
    let mut canon = Canon::new(opts, None, None);
    let mut count = Counter(0);
    pump(src, len, &mut canon, &mut count)?;
    Ok(count.0)
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
    let mut canon = Canon::new(opts, body_lines, None);
    let mut pooled = Pooled::take(Slot::Write, 0);
    pooled.v.clear();
    pooled.v.reserve(COPY_BUF);
    let mut sink = WriteSink {
        out,
        buf: std::mem::take(&mut pooled.v),
        written: 0,
    };
    let result = pump(src, len, &mut canon, &mut sink).and_then(|()| sink.flush());
    pooled.v = std::mem::take(&mut sink.buf);
    result?;
    Ok(sink.written)
}

/// Reads exactly `len` bytes (fewer when TOP is satisfied early) through `canon`.
fn pump<S: Sink>(src: &mut dyn Read, len: u64, canon: &mut Canon, sink: &mut S) -> io::Result<()> {
    let cap = usize::try_from(len).unwrap_or(usize::MAX).min(COPY_BUF);
    let mut pooled = Pooled::take(Slot::Read, cap);
    let buf = &mut pooled.v[..cap];
    let mut left = len;
    while left > 0 {
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "message ended early (changed while being read?)",
                ))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        left -= n as u64;
        if canon.feed(&buf[..n], sink)? {
            return Ok(());
        }
    }
    canon.finish(sink)
}

/// An obviously-correct (slow, whole-message) implementation of the definition above, to
/// test the streaming machine against (the unit tests here and the `mbox_scan` fuzz target).
#[doc(hidden)]
pub fn reference_canon(raw: &[u8], opts: CanonOptions, top: Option<u64>) -> Vec<u8> {
    use headers::FROM_;
    let mut lines: Vec<&[u8]> = raw.split(|&b| b == b'\n').collect();
    if raw.is_empty() || raw.ends_with(b"\n") {
        lines.pop();
    }
    let is_spool_field = |l: &[u8]| {
        let k = l
            .iter()
            .position(|&c| c == b':' || c == b' ' || c == b'\t')
            .unwrap_or(l.len());
        let wsp = l[k..]
            .iter()
            .take_while(|&&c| c == b' ' || c == b'\t')
            .count();
        SPOOL_HEADERS
            .iter()
            .any(|n| n.eq_ignore_ascii_case(&l[..k]))
            && wsp <= MAX_WSP_BEFORE_COLON
            && l.get(k + wsp) == Some(&b':')
    };
    let (mut out, mut in_header, mut hidden, mut body) = (Vec::new(), true, false, 0u64);
    for line in lines {
        let content = line.strip_suffix(b"\r").unwrap_or(line);
        if in_header && content.is_empty() {
            out.extend_from_slice(b"\r\n");
            in_header = false;
            continue;
        }
        if in_header {
            if !(line.starts_with(b" ") || line.starts_with(b"\t")) {
                hidden = is_spool_field(line);
            }
            if hidden && opts.hide_spool_headers {
                continue;
            }
        } else {
            if top.is_some_and(|n| body >= n) {
                break;
            }
            body += 1;
        }
        let gts = content.iter().take_while(|&&c| c == b'>').count();
        let c = if opts.quoting == Some(Quoting::Mboxrd)
            && gts > 0
            && content[gts..].starts_with(FROM_)
        {
            &content[1..]
        } else {
            content
        };
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::bulk::Lfs;
    use super::*;
    use crate::mbox::uidl::UidlHasher;
    use memchr::memmem;
    use proptest::prelude::*;

    const RD: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    };
    const O: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxo),
        hide_spool_headers: false,
    };

    /// A reader that returns at most `chunks[i % len]` bytes per call.
    struct Chunky<'a> {
        data: &'a [u8],
        chunks: Vec<usize>,
        i: usize,
    }

    impl Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let c = self
                .chunks
                .get(self.i % self.chunks.len().max(1))
                .copied()
                .unwrap_or(usize::MAX)
                .max(1);
            self.i += 1;
            let n = c.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn canon(raw: &[u8], opts: CanonOptions, top: Option<u64>) -> Vec<u8> {
        let mut out = Vec::new();
        let n = copy(&mut &raw[..], raw.len() as u64, opts, top, &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        out
    }

    fn size(raw: &[u8], opts: CanonOptions) -> u64 {
        measure(&mut &raw[..], raw.len() as u64, opts).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], CanonOptions, &[u8])] = &[
            (b"", RD, b""),
            (b"a", RD, b"a\r\n"),
            (b"a\n", RD, b"a\r\n"),
            (b"a\r\n", RD, b"a\r\n"),
            (b"a\r", RD, b"a\r\n"),
            (b"a\rb\n", RD, b"a\rb\r\n"),
            (b"a\r\r\n", RD, b"a\r\r\n"),
            (b"S: x\n\n>From a\n>>From b\n> From c\n>Fromage\n", RD, b"S: x\r\n\r\nFrom a\r\n>From b\r\n> From c\r\n>Fromage\r\n"),
            (b"S: x\n\n>From a\n>>From b\n", O, b"S: x\r\n\r\n>From a\r\n>>From b\r\n"),
            (b">From hdr\n\nb\n", RD, b"From hdr\r\n\r\nb\r\n"),
            (
                b"Status: RO\nX-Keywords: a\n b\nSubject: s\nstatus :x\nContent-Length: 5\n\nStatus: body\n",
                RD,
                b"Subject: s\r\n\r\nStatus: body\r\n",
            ),
            (
                b"Status: RO\nX-Keywords: a\n b\nSubject: s\n\n",
                O,
                b"Status: RO\r\nX-Keywords: a\r\n b\r\nSubject: s\r\n\r\n",
            ),
            (b"X-IMAPbase: 1 2\nX-IMAPx: 3\nStatus\n", RD, b"X-IMAPx: 3\r\nStatus\r\n"),
            (b"Status: R", RD, b""),
            (b"\r\nbody", RD, b"\r\nbody\r\n"),
            (b"\rX: y\n", RD, b"\rX: y\r\n"),
            (b"A: b\n\r", RD, b"A: b\r\n\r\n"),
            (b"A: \0b\n\n\0", RD, b"A: \0b\r\n\r\n\0\r\n"),
            (b".\n..\n", RD, b".\r\n..\r\n"),
        ];
        for (i, (raw, opts, want)) in cases.iter().enumerate() {
            let got = canon(raw, *opts, None);
            assert_eq!(got, *want, "case {i}: {:?}", String::from_utf8_lossy(raw));
            assert_eq!(size(raw, *opts), want.len() as u64, "case {i}");
            assert_eq!(
                reference_canon(raw, *opts, None),
                *want,
                "reference, case {i}"
            );
        }
    }

    #[test]
    fn top() {
        let raw = b"Status: O\nA: b\n\nl1\nl2\nl3";
        assert_eq!(canon(raw, RD, Some(0)), b"A: b\r\n\r\n");
        assert_eq!(canon(raw, RD, Some(2)), b"A: b\r\n\r\nl1\r\nl2\r\n");
        assert_eq!(canon(raw, RD, Some(9)), b"A: b\r\n\r\nl1\r\nl2\r\nl3\r\n");
        assert_eq!(canon(b"A: b\nC: d", RD, Some(0)), b"A: b\r\nC: d\r\n");
    }

    #[test]
    fn long_gt_run_and_long_lines() {
        let mut raw = b"H: x\n\n".to_vec();
        raw.extend(std::iter::repeat_n(b'>', 3 * COPY_BUF));
        raw.extend_from_slice(b"From x\n");
        raw.extend(std::iter::repeat_n(b'y', 3 * COPY_BUF));
        let out = canon(&raw, RD, None);
        // Three LFs gain a CR, the last line gains CRLF, one `>` goes.
        assert_eq!(out.len(), raw.len() + 3 + 2 - 1);
        assert_eq!(size(&raw, RD), out.len() as u64);
    }

    #[test]
    fn short_source_is_an_error() {
        let e = measure(&mut &b"abc"[..], 10, RD).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"From ".to_vec()),
            Just(b">From ".to_vec()),
            Just(b">>From x".to_vec()),
            Just(b"Status: RO".to_vec()),
            Just(b"x-keywords :".to_vec()),
            Just(b"Content-Length: 3".to_vec()),
            Just(b"Subject: y".to_vec()),
            Just(b" cont".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\0".to_vec()),
            Just(b".".to_vec()),
            Just(b">".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    fn opts_strategy() -> impl Strategy<Value = CanonOptions> {
        (
            prop_oneof![
                Just(None),
                Just(Some(Quoting::Mboxrd)),
                Just(Some(Quoting::Mboxo))
            ],
            any::<bool>(),
        )
            .prop_map(|(quoting, hide_spool_headers)| CanonOptions {
                quoting,
                hide_spool_headers,
            })
    }

    /// The wire form the old two-stage path produced: canonical bytes through the stuffer.
    fn stuffed(canonical: &[u8]) -> Vec<u8> {
        let mut s = spool_wire::pop3::response::DotStuffer::new(Vec::new());
        s.write_all(canonical).unwrap();
        let mut v = s.finish().unwrap();
        v.truncate(v.len() - 3);
        v
    }

    /// Feeds `raw` to a `Wire` in pieces cut at `cuts`; returns the output, the canonical
    /// octet count and the header digest.
    fn wire(
        raw: &[u8],
        opts: CanonOptions,
        top: Option<u64>,
        cuts: &[usize],
    ) -> (Vec<u8>, u64, crate::mbox::uidl::MessageDigest) {
        let mut w = Wire::new(opts, top, Some(UidlHasher::new()));
        let mut out = b"+OK\r\n".to_vec();
        let mut prev = 0;
        let mut done = false;
        for &c in cuts.iter().chain(std::iter::once(&raw.len())) {
            let c = c.clamp(prev, raw.len());
            if w.feed(&raw[prev..c], &mut out).unwrap() {
                done = true;
                break;
            }
            prev = c;
        }
        if !done {
            w.finish(&mut out).unwrap();
        }
        assert!(w.at_line_start());
        let d = w.take_hasher().unwrap().finish();
        (out[5..].to_vec(), w.written(), d)
    }

    #[test]
    fn wire_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b".", b"..\r\n"),
            (
                b"A: b\n\n.\n..\n.x\r\n",
                b"A: b\r\n\r\n..\r\n...\r\n..x\r\n",
            ),
            (
                b".A: b\n\n>From a\n>>From b\n",
                b"..A: b\r\n\r\nFrom a\r\n>From b\r\n",
            ),
            (b"A: b\n\n>.x\n>Fro\n>", b"A: b\r\n\r\n>.x\r\n>Fro\r\n>\r\n"),
        ];
        for (raw, want) in cases {
            for cut in 0..raw.len() {
                let (got, n, _) = wire(raw, RD, None, &[cut]);
                assert_eq!(
                    got,
                    *want,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(raw)
                );
                assert_eq!(n, size(raw, RD));
            }
        }
    }

    /// A `WireOut` like the session's: staged bytes leave at every spill.
    #[derive(Default)]
    struct Spilling {
        sent: Vec<u8>,
        buf: Vec<u8>,
        spills: usize,
    }

    impl crate::mailbox::WireOut for Spilling {
        fn start(&mut self) -> usize {
            let m = self.buf.len();
            self.buf.extend_from_slice(b"+OK\r\n");
            m
        }
        fn buf(&mut self) -> &mut Vec<u8> {
            &mut self.buf
        }
        fn spill(&mut self) -> io::Result<()> {
            self.spills += 1;
            self.sent.append(&mut self.buf);
            Ok(())
        }
        fn cancel(&mut self, mark: usize) {
            assert!(self.sent.is_empty(), "cancel after bytes left");
            self.buf.truncate(mark);
        }
    }

    /// Serves `data` in pieces of at most `piece` bytes, then EOF.
    struct Pieces<'a> {
        data: &'a [u8],
        piece: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(buf.len()).min(self.piece);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn send_wire_refuses_cleanly_before_anything_left_and_ends_after() {
        // The source is empty though 5 bytes were promised: nothing was spilled, so the
        // staged status line is dropped and the error is BeforeStart.
        let mut w = Spilling::default();
        let mut src = Pieces {
            data: b"",
            piece: 9,
        };
        let e = send_wire(&mut src, 5, CanonOptions::PLAIN, None, &mut w).unwrap_err();
        assert!(matches!(e, WireError::BeforeStart(_)));
        assert!(w.sent.is_empty() && w.buf.is_empty());
        // Short after the first read: part of the message may have left.
        let mut w = Spilling::default();
        let mut src = Pieces {
            data: b"abc\n",
            piece: 2,
        };
        let e = send_wire(&mut src, 9, CanonOptions::PLAIN, None, &mut w).unwrap_err();
        assert!(matches!(e, WireError::During(_)));
    }

    proptest! {
        #[test]
        fn lfs_finds_every_lf(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..400),
            from in 0usize..400,
        ) {
            let from = from.min(data.len());
            let want: Vec<usize> = memchr::memchr_iter(b'\n', &data[from..]).map(|i| i + from).collect();
            prop_assert_eq!(Lfs::new(&data, from).collect::<Vec<_>>(), want);
        }

        #[test]
        fn wire_is_the_stuffed_canonical_form(
            raw in line_strategy(),
            opts in opts_strategy(),
            cuts in proptest::collection::vec(0usize..300, 0..10),
            top in proptest::option::of(0u64..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let (out, n, digest) = wire(&raw, opts, top, &cuts);
            let canonical = reference_canon(&raw, opts, top);
            prop_assert_eq!(&out, &stuffed(&canonical));
            prop_assert_eq!(n, canonical.len() as u64);
            // Byte at a time too.
            let ones: Vec<usize> = (1..raw.len()).collect();
            prop_assert_eq!(&wire(&raw, opts, top, &ones).0, &out);
            // The header digest is the one the scan's machine computes, whatever the options.
            let (_, _, plain) = wire(&raw, CanonOptions::PLAIN, None, &[]);
            prop_assert_eq!(digest, plain);
        }

        #[test]
        fn send_wire_is_the_stuffed_canonical_form(
            raw in line_strategy(),
            opts in opts_strategy(),
            piece in 1usize..64,
            top in proptest::option::of(0u64..6),
        ) {
            let mut w = Spilling::default();
            let mut src = Pieces { data: &raw, piece };
            let n = send_wire(&mut src, raw.len() as u64, opts, top, &mut w).unwrap();
            let canonical = reference_canon(&raw, opts, top);
            let mut want = b"+OK\r\n".to_vec();
            want.extend_from_slice(&stuffed(&canonical));
            w.sent.append(&mut w.buf);
            prop_assert_eq!(w.sent, want);
            prop_assert_eq!(n, canonical.len() as u64);
        }

        #[test]
        fn copy_writes_measure_octets(
            raw in line_strategy(),
            opts in opts_strategy(),
            chunks in proptest::collection::vec(prop_oneof![1usize..9, Just(usize::MAX)], 1..5),
            chunks2 in proptest::collection::vec(prop_oneof![1usize..9, Just(usize::MAX)], 1..5),
            top in 0u64..6,
        ) {
            let want = size(&raw, opts);
            prop_assert_eq!(&canon(&raw, opts, None), &reference_canon(&raw, opts, None));
            prop_assert_eq!(&canon(&raw, opts, Some(top)), &reference_canon(&raw, opts, Some(top)));
            let mut src = Chunky { data: &raw, chunks: chunks.clone(), i: 0 };
            prop_assert_eq!(measure(&mut src, raw.len() as u64, opts).unwrap(), want);
            let mut out = Vec::new();
            let mut src = Chunky { data: &raw, chunks: chunks2, i: 0 };
            let n = copy(&mut src, raw.len() as u64, opts, None, &mut out).unwrap();
            prop_assert_eq!(n, want);
            prop_assert_eq!(out.len() as u64, want);
            // Every line ends in CRLF, and it ends with one unless empty.
            prop_assert!(out.is_empty() || out.ends_with(b"\r\n"));
            prop_assert_eq!(memchr::memchr_iter(b'\n', &out).count(), memmem::find_iter(&out, b"\r\n").count());
            let mut topped = Vec::new();
            let mut src = Chunky { data: &raw, chunks, i: 0 };
            copy(&mut src, raw.len() as u64, opts, Some(top), &mut topped).unwrap();
            prop_assert!(out.starts_with(&topped));
        }
    }
}
