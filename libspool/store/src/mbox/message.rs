//! Streaming one mbox message in canonical form (CRLF, unquoted, spool headers hidden), in
//! bulk and with bounded memory.
//!
//! Before the first byte (and so before the client sees `+OK`) the message is checked to be
//! still where and what the scan found: the file still reaches its end, its `From ` line is
//! still at its offset, and the UIDL digest of its `From ` line and header block still
//! matches. Only the session lock is held during a session (the content lock is not, so that
//! mail delivery is never blocked by a slow client), so a local MUA may have rewritten the
//! mbox meanwhile; the check makes sure we never send one message under another's number.
//!
//! With the session's sink (a [`WireOut`]) the check and the send are one pass
//! (`send_wire`): the `From ` line and the message are read with large `pread`s (a typical
//! message in one), the header block runs through the canonical line machine with the UIDL
//! hasher on while the machine appends the byte-stuffed output after a staged status line,
//! and nothing is released until the header block has ended and its digest matched. A header
//! block longer than [`MAX_HELD`] falls back to the separate [`verify`] pass, so what is held
//! stays bounded.

#![forbid(unsafe_code)]

use crate::canon::{self, CanonOptions, Pooled, Wire};
use crate::error::MailboxError;
use crate::mailbox::{RetrieveError, RetrieveSink, SinkWriter, WireOut};
use crate::mbox::scan::{digest_at, MessageInfo, PreadReader};
use crate::mbox::uidl;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// Checks that `info` still describes the message whose digest is `digest_hex` in `file`.
pub fn verify(file: &File, info: &MessageInfo, digest_hex: &str) -> Result<(), MailboxError> {
    let len = file
        .metadata()
        .map_err(crate::error::io_err("stat the mailbox"))?
        .len();
    if len < info.next_start() {
        return Err(MailboxError::Changed(format!(
            "mailbox is {len} bytes, shorter than the {} bytes scanned",
            info.next_start()
        )));
    }
    let start = info.from_line_start();
    let (at, want): (u64, &[u8]) = if start == 0 {
        (0, b"From ")
    } else {
        (start - 1, b"\nFrom ")
    };
    let mut got = [0u8; 6];
    let got = &mut got[..want.len()];
    file.read_exact_at(got, at)
        .map_err(crate::error::io_err("read the mailbox"))?;
    if got != want {
        return Err(MailboxError::MessageGone);
    }
    let d = digest_at(file, info).map_err(crate::error::io_err("read the mailbox"))?;
    if !hex_is(digest_hex, &d) {
        return Err(MailboxError::MessageGone);
    }
    Ok(())
}

/// Checks that the message still ends where the scan found its end: the next message's
/// `From ` line (or the end of the file) follows the separator at `next_start`.
///
/// The `From ` line and the header digest alone do not prove that: an MDA that rewrites spool
/// headers in place (Dovecot adds `X-IMAPbase`, `X-UID`, `Status` and `X-Keywords` to
/// messages it finds without them) makes the header block longer while its digest, which
/// leaves spool headers out, stays the same; every byte after it moves. Sending the scanned
/// extent then would cut the message short after `+OK`.
pub fn check_end(file: &File, info: &MessageInfo) -> Result<(), MailboxError> {
    let next = info.next_start();
    let sep = next - info.message_end();
    let at = next.saturating_sub(sep.max(1));
    let mut buf = [0u8; 8];
    let len = (next - at) as usize + 5;
    let n =
        read_full(file, &mut buf[..len], at).map_err(crate::error::io_err("read the mailbox"))?;
    let got = &buf[..n];
    let lead = (next - at) as usize;
    if got.len() < lead {
        return Err(MailboxError::Changed(format!(
            "mailbox ends at {}, before the end of the message scanned at {}",
            at + n as u64,
            info.from_line_start()
        )));
    }
    let (sep_bytes, rest) = got.split_at(lead);
    let sep_ok = sep == 0 || sep_bytes.iter().all(|&b| b == b'\n' || b == b'\r');
    // What follows: the end of the file, or the next `From ` line (perhaps one a writer
    // appended after a blank line of its own) at the start of a line.
    let follows = rest.is_empty()
        || (sep_bytes.last() == Some(&b'\n') || next == 0)
            && (rest.starts_with(b"From ") || rest.starts_with(b"\nFrom") || rest == b"\n");
    if !sep_ok || !follows {
        return Err(MailboxError::Changed(format!(
            "the message scanned at {} no longer ends at {next}",
            info.from_line_start()
        )));
    }
    Ok(())
}

/// Bytes asked of each `pread` while sending: a typical message, its `From ` line and the
/// separator after it in one read; large messages in few large reads.
pub const SEND_READ: usize = 128 * 1024;
/// TOP's first read: a typical message whole (so the read itself proves the file still
/// reaches the next message, with no `fstat`), while the body of a large one is not read
/// for nothing. Later reads grow fourfold up to [`SEND_READ`]. (4 KiB, enough for most
/// header blocks, measured no faster: every message over it then needs the `fstat`.)
pub const TOP_FIRST_READ: usize = 16 * 1024;
/// Most octets of a response held back while its header block is checked. A header block
/// longer than this (rare: a few KiB is typical) falls back to the separate check pass, so
/// the memory held stays bounded.
pub const MAX_HELD: usize = 1024 * 1024;

/// Sends one message (all of it, or TOP's part with `body_lines`) into `sink`.
///
/// With a [`WireOut`] sink the check and the send are one pass: see `send_wire`.
pub fn retrieve(
    file: &File,
    info: &MessageInfo,
    digest_hex: &str,
    opts: CanonOptions,
    body_lines: Option<u64>,
    sink: &mut dyn RetrieveSink,
) -> Result<(), RetrieveError> {
    if let Some(w) = sink.wire() {
        match send_wire(file, info, digest_hex, opts, body_lines, w)? {
            Wired::Sent => return Ok(()),
            Wired::HeaderTooLong => {}
        }
    }
    verify(file, info, digest_hex).map_err(RetrieveError::BeforeStart)?;
    check_end(file, info).map_err(RetrieveError::BeforeStart)?;
    sink.begin()
        .map_err(|e| RetrieveError::BeforeStart(MailboxError::Io("send the message", e)))?;
    let mut src = Tagged {
        inner: PreadReader::new(file, info.message_start(), info.message_end()),
        failed: false,
    };
    let mut out = SinkWriter(sink);
    let written = match canon::copy(&mut src, info.raw_len(), opts, body_lines, &mut out) {
        Ok(n) => n,
        Err(e) if src.failed && e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(RetrieveError::During(MailboxError::Changed(
                "message became shorter while being sent".into(),
            )))
        }
        Err(e) if src.failed => {
            return Err(RetrieveError::During(MailboxError::Io(
                "read the mailbox",
                e,
            )))
        }
        Err(e) => {
            return Err(RetrieveError::During(MailboxError::Io(
                "send the message",
                e,
            )))
        }
    };
    if body_lines.is_none() && written != info.size() {
        return Err(RetrieveError::During(MailboxError::Changed(format!(
            "sent {written} octets of a message listed as {}",
            info.size()
        ))));
    }
    Ok(())
}

/// Remembers whether an error came from reading (the mailbox) rather than writing (the client).
struct Tagged<'a> {
    inner: PreadReader<'a>,
    failed: bool,
}

impl Read for Tagged<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                // `copy` asks only for bytes that should exist: a 0 is a short file.
                self.failed = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }
}

/// How [`send_wire`] ended without an error.
#[derive(Debug, PartialEq, Eq)]
enum Wired {
    /// The whole response is in the sink.
    Sent,
    /// The header block was too long to hold back: nothing was staged, use the two passes.
    HeaderTooLong,
}

/// The one-pass RETR/TOP: reads the `From ` line and the message with large `pread`s, runs
/// them through the canonical line machine with the UIDL hasher on, and appends the wire form
/// (after the staged status line) to the sink's buffer. Nothing leaves until the header block
/// has ended and its digest matched the scan's; so the check costs neither a second read nor
/// a second pass over the header, and a changed message still gets a clean `-ERR`.
///
/// The checks are those of [`verify`]: the `From ` line is still at its offset (the LF before
/// it too), the digest matches, and the file still reaches the next message (proved by the
/// first read itself when it covers the whole message, else by `fstat`).
fn send_wire(
    file: &File,
    info: &MessageInfo,
    digest_hex: &str,
    opts: CanonOptions,
    body_lines: Option<u64>,
    w: &mut dyn WireOut,
) -> Result<Wired, RetrieveError> {
    let from = info.from_line_start();
    let at = from.saturating_sub(1);
    let msg_start = info.message_start();
    let msg_end = info.message_end();
    let first = if body_lines.is_some() {
        TOP_FIRST_READ
    } else {
        SEND_READ
    };
    let mut pooled = Pooled::take(canon::Slot::Read, SEND_READ);
    let mut wire = Wire::new(opts, body_lines, Some(uidl::UidlHasher::new()));
    let mark = w.start();
    let mut checked = false;
    // The file still reaches the next message's `From ` line.
    let mut len_proved = false;
    let mut pos = at;
    let mut want = first;
    // The first read also takes the separator, so a full read proves the file's length.
    let mut end = info.next_start();
    let gone = |w: &mut dyn WireOut, e: MailboxError| {
        w.cancel(mark);
        Err(RetrieveError::BeforeStart(e))
    };
    loop {
        let len = usize::try_from(end - pos).unwrap_or(usize::MAX).min(want);
        if len == 0 {
            break;
        }
        let buf = &mut pooled.v[..len];
        let n = match read_full(file, buf, pos) {
            Ok(n) => n,
            Err(e) if !checked => return gone(w, MailboxError::Io("read the mailbox", e)),
            Err(e) => {
                return Err(RetrieveError::During(MailboxError::Io(
                    "read the mailbox",
                    e,
                )))
            }
        };
        if n < len {
            let e = MailboxError::Changed(format!(
                "mailbox ends at {}, before the end of the message scanned at {from}",
                pos + n as u64
            ));
            return if checked {
                Err(RetrieveError::During(e))
            } else {
                gone(w, e)
            };
        }
        let chunk = &buf[..n];
        if pos == at {
            let head: &[u8] = if from == 0 { b"From " } else { b"\nFrom " };
            if !chunk.starts_with(head) {
                return gone(w, MailboxError::MessageGone);
            }
        }
        // The `From ` line, without its LF, goes to the hasher only.
        let c_from = pos.max(from);
        let c_msg = (pos + n as u64).min(msg_start);
        if c_from < c_msg {
            let mut seg = &chunk[(c_from - pos) as usize..(c_msg - pos) as usize];
            if c_msg == msg_start {
                seg = seg.strip_suffix(b"\n").unwrap_or(seg);
            }
            if let Some(h) = wire.hasher_mut() {
                h.line_bytes(seg);
                if c_msg == msg_start {
                    h.end_line();
                }
            }
        }
        let m_from = pos.max(msg_start);
        let m_to = (pos + n as u64).min(msg_end);
        let mut done = false;
        if m_from < m_to {
            let seg = &chunk[(m_from - pos) as usize..(m_to - pos) as usize];
            done = wire
                .feed(seg, w.buf())
                .map_err(|e| RetrieveError::During(MailboxError::Io("stage the message", e)))?;
        }
        pos += n as u64;
        len_proved |= pos >= info.next_start();
        if pos >= msg_end && !done {
            wire.finish(w.buf())
                .map_err(|e| RetrieveError::During(MailboxError::Io("stage the message", e)))?;
            done = true;
        }
        if !checked {
            if wire.in_header() && !done {
                if w.buf().len() - mark > MAX_HELD {
                    w.cancel(mark);
                    return Ok(Wired::HeaderTooLong);
                }
            } else {
                let d = wire.take_hasher().unwrap_or_default().finish();
                if !hex_is(digest_hex, &d) {
                    return gone(w, MailboxError::MessageGone);
                }
                // The message still ends where it did (an in-place rewrite of its spool
                // headers moves the end), checked before anything is released.
                if done && body_lines.is_none() && wire.written() != info.size() {
                    return gone(
                        w,
                        MailboxError::Changed(format!(
                            "message is {} octets now, listed as {}",
                            wire.written(),
                            info.size()
                        )),
                    );
                }
                if let Err(e) = check_end(file, info) {
                    return gone(w, e);
                }
                if !len_proved {
                    // Not proved by the first read: the message and its separator must
                    // still be in the file.
                    let len = match file.metadata() {
                        Ok(m) => m.len(),
                        Err(e) => return gone(w, MailboxError::Io("stat the mailbox", e)),
                    };
                    if len < info.next_start() {
                        return gone(
                            w,
                            MailboxError::Changed(format!(
                                "mailbox is {len} bytes, shorter than the {} bytes scanned",
                                info.next_start()
                            )),
                        );
                    }
                }
                checked = true;
            }
        }
        if checked {
            w.spill()
                .map_err(|e| RetrieveError::During(MailboxError::Io("send the message", e)))?;
        }
        if done {
            break;
        }
        end = msg_end;
        want = want.saturating_mul(4).min(SEND_READ);
    }
    if !checked {
        // Only when the message ended inside a read that was never processed: impossible,
        // but never send unchecked.
        return gone(w, MailboxError::MessageGone);
    }
    if body_lines.is_none() && wire.written() != info.size() {
        return Err(RetrieveError::During(MailboxError::Changed(format!(
            "sent {} octets of a message listed as {}",
            wire.written(),
            info.size()
        ))));
    }
    debug_assert!(wire.at_line_start());
    Ok(Wired::Sent)
}

/// `hex` is the lowercase hex of `d` (what `uidl::push_hex` writes), compared without
/// building a string for every message sent.
pub(crate) fn hex_is(hex: &str, d: &uidl::MessageDigest) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let h = hex.as_bytes();
    h.len() == 2 * d.len()
        && d.iter().zip(h.chunks_exact(2)).all(|(&b, pair)| {
            pair[0] == HEX[usize::from(b >> 4)] && pair[1] == HEX[usize::from(b & 15)]
        })
}

/// `pread`s until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &File, buf: &mut [u8], mut pos: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], pos) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbox::scan::{scan, ScanResult};
    use crate::mbox::Quoting;
    use proptest::prelude::*;
    use spool_wire::pop3::response::DotStuffer;
    use std::io::Write;

    const RD: CanonOptions = CanonOptions {
        quoting: Some(Quoting::Mboxrd),
        hide_spool_headers: true,
    };
    const STATUS: &[u8] = b"+OK status\r\n";
    /// What the test sink lets pile up before it "sends".
    const TEST_SPILL: usize = 64 * 1024;

    /// A sink like the session's: a shared output buffer with earlier responses in it, a
    /// `WireOut` fast path, and a classic `begin`/`Write` path for the fallback.
    #[derive(Default)]
    struct TestSink {
        /// Bytes "sent" (spilled).
        sent: Vec<u8>,
        buf: Vec<u8>,
        marks: Vec<usize>,
        began: bool,
        /// Canonical bytes of the classic path (stuffed by the test).
        classic: Vec<u8>,
        fail_spill: bool,
        max_buf: usize,
        /// Called at the first spill (to change the file under a send).
        on_spill: Option<Box<dyn FnMut()>>,
    }

    impl Write for TestSink {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            assert!(self.began, "bytes before begin()");
            self.classic.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl RetrieveSink for TestSink {
        fn begin(&mut self) -> io::Result<()> {
            self.began = true;
            Ok(())
        }
        fn wire(&mut self) -> Option<&mut dyn WireOut> {
            Some(self)
        }
    }

    impl WireOut for TestSink {
        fn start(&mut self) -> usize {
            let m = self.buf.len();
            self.buf.extend_from_slice(STATUS);
            self.marks.push(m);
            m
        }
        fn buf(&mut self) -> &mut Vec<u8> {
            &mut self.buf
        }
        fn spill(&mut self) -> io::Result<()> {
            self.max_buf = self.max_buf.max(self.buf.len());
            if let Some(mut f) = self.on_spill.take() {
                f();
            }
            if self.fail_spill {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, "gone"));
            }
            if self.buf.len() >= TEST_SPILL {
                self.sent.append(&mut self.buf);
            }
            Ok(())
        }
        fn cancel(&mut self, mark: usize) {
            assert!(self.sent.is_empty(), "cancel after bytes left");
            self.buf.truncate(mark);
        }
    }

    impl TestSink {
        /// The whole response as the client would see it (with the session's terminator).
        fn response(mut self) -> Vec<u8> {
            if self.began {
                let mut s = DotStuffer::new(STATUS.to_vec());
                s.write_all(&self.classic).unwrap();
                return s.finish().unwrap();
            }
            self.sent.append(&mut self.buf);
            self.sent.extend_from_slice(b".\r\n");
            self.sent
        }
    }

    fn file_with(data: &[u8]) -> File {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        f
    }

    fn scanned(f: &File, opts: CanonOptions) -> ScanResult {
        scan(f, f.metadata().unwrap().len(), opts).unwrap()
    }

    /// The response through the classic path: the separate check, canonical bytes, stuffed.
    fn classic(
        f: &File,
        s: &ScanResult,
        i: usize,
        opts: CanonOptions,
        top: Option<u64>,
    ) -> Result<Vec<u8>, RetrieveError> {
        let mut v = crate::mailbox::VecSink::default();
        retrieve(f, &s.messages[i], s.digest_hex(i), opts, top, &mut v)?;
        let mut st = DotStuffer::new(STATUS.to_vec());
        st.write_all(&v.out).unwrap();
        Ok(st.finish().unwrap())
    }

    fn wired(
        f: &File,
        s: &ScanResult,
        i: usize,
        opts: CanonOptions,
        top: Option<u64>,
    ) -> (Result<(), RetrieveError>, TestSink) {
        let mut t = TestSink {
            buf: b"+OK earlier response\r\n".to_vec(),
            ..TestSink::default()
        };
        let r = retrieve(f, &s.messages[i], s.digest_hex(i), opts, top, &mut t);
        (r, t)
    }

    fn wired_ok(
        f: &File,
        s: &ScanResult,
        i: usize,
        opts: CanonOptions,
        top: Option<u64>,
    ) -> Vec<u8> {
        let (r, t) = wired(f, s, i, opts, top);
        r.unwrap();
        assert!(!t.began, "the wire path was used");
        let out = t.response();
        out.strip_prefix(&b"+OK earlier response\r\n"[..])
            .unwrap()
            .to_vec()
    }

    #[test]
    fn hex_is_push_hex() {
        let d: uidl::MessageDigest = std::array::from_fn(|i| (i * 37 + 5) as u8);
        let mut hex = String::new();
        uidl::push_hex(&mut hex, &d);
        assert!(hex_is(&hex, &d));
        assert!(!hex_is(&hex[1..], &d));
        assert!(!hex_is(&format!("{hex}-2"), &d));
        assert!(!hex_is(&hex.to_uppercase(), &d));
        let mut other = d;
        other[15] ^= 1;
        assert!(!hex_is(&hex, &other));
    }

    #[test]
    fn wire_path_matches_the_classic_path() {
        let data = b"From a\nStatus: RO\nSubject: one\n\n.l1\n>From x\n..\n\nFrom b\n.Subject: two\n\nb\nFrom c\n\n\nFrom d\nX: only headers";
        let f = file_with(data);
        for opts in [RD, CanonOptions::PLAIN] {
            let s = scanned(&f, opts);
            assert_eq!(s.len(), 4);
            for i in 0..s.len() {
                for top in [None, Some(0), Some(1), Some(5)] {
                    let want = classic(&f, &s, i, opts, top).unwrap();
                    assert_eq!(
                        wired_ok(&f, &s, i, opts, top),
                        want,
                        "message {i} top {top:?}"
                    );
                }
            }
        }
        let s = scanned(&f, RD);
        assert_eq!(
            wired_ok(&f, &s, 0, RD, None),
            b"+OK status\r\nSubject: one\r\n\r\n..l1\r\nFrom x\r\n...\r\n.\r\n"
        );
    }

    #[test]
    fn changed_message_is_refused_before_anything_is_sent() {
        let data = b"From a\nSubject: one\n\nbody\n\nFrom b\nSubject: two\n\nb\n".to_vec();
        let f = file_with(&data);
        let s = scanned(&f, RD);
        // Same length, different header: the digest no longer matches.
        let mut changed = data.clone();
        changed[10] = b'X';
        f.write_all_at(&changed, 0).unwrap();
        let (r, t) = wired(&f, &s, 0, RD, None);
        assert!(matches!(
            r,
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
        assert!(t.sent.is_empty() && !t.began);
        assert_eq!(t.buf, b"+OK earlier response\r\n");
        // The second message moved by one byte: its From line is gone from its offset.
        let mut moved = data.clone();
        moved.insert(0, b'x');
        f.write_all_at(&moved, 0).unwrap();
        let (r, t) = wired(&f, &s, 1, RD, None);
        assert!(matches!(
            r,
            Err(RetrieveError::BeforeStart(MailboxError::MessageGone))
        ));
        assert_eq!(t.buf, b"+OK earlier response\r\n");
        // Truncated inside the message.
        f.write_all_at(&data, 0).unwrap();
        f.set_len(data.len() as u64 - 3).unwrap();
        let (r, t) = wired(&f, &s, 1, RD, None);
        assert!(
            matches!(r, Err(RetrieveError::BeforeStart(MailboxError::Changed(_)))),
            "{r:?}"
        );
        assert_eq!(t.buf, b"+OK earlier response\r\n");
        // The first message is still fine: it ends before the cut.
        assert!(wired(&f, &s, 0, RD, None).0.is_ok());
    }

    /// What Dovecot's LDA does to a message it finds without its spool headers: adds them in
    /// place, the header digest (spool headers left out) unchanged, everything after moved.
    fn dovecot_rewrite(data: &[u8], header_end: &[u8]) -> Vec<u8> {
        let at = data
            .windows(header_end.len())
            .position(|w| w == header_end)
            .unwrap()
            + header_end.len();
        let mut v = data[..at].to_vec();
        v.extend_from_slice(b"X-IMAPbase: 1796339407 0000000002\nX-UID: 1               \n");
        v.extend_from_slice(&data[at..]);
        v
    }

    #[test]
    fn spool_headers_added_in_place_are_refused_before_anything_is_sent() {
        let data = b"From a\nSubject: one\n\nbody line one\nbody line two, long enough to reach past the inserted headers\n\nFrom b\nSubject: two\n\nb\n".to_vec();
        let f = file_with(&data);
        let s = scanned(&f, RD);
        f.write_all_at(&dovecot_rewrite(&data, b"Subject: one\n"), 0)
            .unwrap();
        for top in [None, Some(0), Some(5)] {
            let (r, t) = wired(&f, &s, 0, RD, top);
            assert!(
                matches!(r, Err(RetrieveError::BeforeStart(_))),
                "{top:?}: {r:?}"
            );
            assert!(t.sent.is_empty() && !t.began);
            assert_eq!(t.buf, b"+OK earlier response\r\n");
            assert!(matches!(
                classic(&f, &s, 0, RD, top),
                Err(RetrieveError::BeforeStart(_))
            ));
        }
        // Unchanged, the last message (no separator after it) and a message followed by one
        // appended since are served.
        let data2 = [&data[..], b"\nFrom c\nSubject: three\n\nc\n"].concat();
        let f = file_with(&data);
        let s = scanned(&f, RD);
        assert!(wired(&f, &s, 1, RD, None).0.is_ok());
        f.write_all_at(&data2, 0).unwrap();
        assert!(wired(&f, &s, 1, RD, None).0.is_ok());
        assert!(wired(&f, &s, 0, RD, None).0.is_ok());
        assert!(classic(&f, &s, 1, RD, None).is_ok());
        // A large message (not staged whole): refused before its first byte leaves.
        let big = big_message(200_000);
        let f = file_with(&big);
        let s = scanned(&f, RD);
        f.write_all_at(&dovecot_rewrite(&big, b"Subject: big\n"), 0)
            .unwrap();
        let (r, t) = wired(&f, &s, 0, RD, None);
        assert!(matches!(r, Err(RetrieveError::BeforeStart(_))), "{r:?}");
        assert!(t.sent.is_empty());
    }

    fn big_message(body_lines: usize) -> Vec<u8> {
        let mut d = b"From big\nSubject: big\n\n".to_vec();
        for i in 0..body_lines {
            d.extend_from_slice(format!(".line {i} of a long body\n").as_bytes());
        }
        d.extend_from_slice(b"\nFrom next\nSubject: n\n\nx\n");
        d
    }

    #[test]
    fn large_message_streams_with_bounded_buffer() {
        let data = big_message(200_000);
        let f = file_with(&data);
        let s = scanned(&f, RD);
        let want = classic(&f, &s, 0, RD, None).unwrap();
        let (r, t) = wired(&f, &s, 0, RD, None);
        r.unwrap();
        assert!(
            t.max_buf <= TEST_SPILL + 2 * SEND_READ + 64,
            "{}",
            t.max_buf
        );
        let got = t.response();
        assert_eq!(&got[b"+OK earlier response\r\n".len()..], &want[..]);
    }

    #[test]
    fn large_message_truncated_before_the_check_is_refused() {
        let data = big_message(200_000);
        let f = file_with(&data);
        let s = scanned(&f, RD);
        f.set_len(data.len() as u64 - 30).unwrap();
        let (r, t) = wired(&f, &s, 0, RD, None);
        assert!(
            matches!(r, Err(RetrieveError::BeforeStart(MailboxError::Changed(_)))),
            "{r:?}"
        );
        assert!(t.sent.is_empty());
    }

    #[test]
    fn changes_during_the_send_end_it() {
        let data = big_message(200_000);
        let f = file_with(&data);
        let s = scanned(&f, RD);
        let g = f.try_clone().unwrap();
        let mut t = TestSink {
            on_spill: Some(Box::new(move || g.set_len(1000).unwrap())),
            ..TestSink::default()
        };
        let r = retrieve(&f, &s.messages[0], s.digest_hex(0), RD, None, &mut t);
        assert!(
            matches!(r, Err(RetrieveError::During(MailboxError::Changed(_)))),
            "{r:?}"
        );
    }

    #[test]
    fn write_error_stops_the_body() {
        let data = big_message(200_000);
        let f = file_with(&data);
        let s = scanned(&f, RD);
        let mut t = TestSink {
            fail_spill: true,
            ..TestSink::default()
        };
        let r = retrieve(&f, &s.messages[0], s.digest_hex(0), RD, None, &mut t);
        assert!(
            matches!(r, Err(RetrieveError::During(MailboxError::Io(..)))),
            "{r:?}"
        );
        assert!(
            t.buf.len() <= 2 * SEND_READ + 64,
            "stopped at the first failed spill"
        );
    }

    #[test]
    fn header_too_long_to_hold_falls_back() {
        let mut data = b"From h\n".to_vec();
        while data.len() < MAX_HELD + 100_000 {
            data.extend_from_slice(b"X-Long: a header line that repeats and repeats\n");
        }
        data.extend_from_slice(b"\n.body\n");
        let f = file_with(&data);
        let s = scanned(&f, RD);
        let want = classic(&f, &s, 0, RD, None).unwrap();
        let (r, t) = wired(&f, &s, 0, RD, None);
        r.unwrap();
        assert!(t.began, "fell back to the classic path");
        assert_eq!(
            t.buf, b"+OK earlier response\r\n",
            "nothing staged was left"
        );
        assert_eq!(t.response(), want);
    }

    fn mbox_strategy() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"\nFrom x y\n".to_vec()),
            Just(b"From ".to_vec()),
            Just(b">From ".to_vec()),
            Just(b">>From x".to_vec()),
            Just(b">".to_vec()),
            Just(b"Status: RO".to_vec()),
            Just(b"Subject: y".to_vec()),
            Just(b" cont".to_vec()),
            Just(b".".to_vec()),
            Just(b"..".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..20),
        ];
        proptest::collection::vec(piece, 0..60).prop_map(|v| {
            let mut m = b"From first\n".to_vec();
            m.extend(v.concat());
            m
        })
    }

    proptest! {
        #[test]
        fn wire_equals_classic_on_any_mbox(data in mbox_strategy(), top in 0u64..4, rd in any::<bool>()) {
            let opts = if rd { RD } else { CanonOptions { quoting: Some(Quoting::Mboxo), hide_spool_headers: false } };
            let f = file_with(&data);
            let s = scanned(&f, opts);
            for i in 0..s.len() {
                for t in [None, Some(top)] {
                    let want = classic(&f, &s, i, opts, t).unwrap();
                    prop_assert_eq!(wired_ok(&f, &s, i, opts, t), want);
                }
            }
        }
    }
}
